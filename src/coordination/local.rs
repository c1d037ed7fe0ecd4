//! In-process locks: enough for one node, and nothing more (two nodes on one database each
//! have their own). The cluster's counterpart is `coordination::postgres`.

use async_trait::async_trait;

use super::{Coordinator, LockGuard, Result};
use crate::locks::KeyedLocks;
use crate::oci::{Digest, UploadId};

#[derive(Default)]
pub struct LocalCoordinator {
    digests: KeyedLocks<Digest>,
    uploads: KeyedLocks<UploadId>,
    gc: KeyedLocks<()>,
}

#[async_trait]
impl Coordinator for LocalCoordinator {
    async fn lock_digest(&self, digest: &Digest) -> Result<LockGuard> {
        Ok(LockGuard::new(self.digests.lock(digest).await))
    }

    async fn try_lock_upload(&self, id: &UploadId) -> Result<Option<LockGuard>> {
        Ok(self.uploads.try_lock(id).map(LockGuard::new))
    }

    async fn try_lock_gc(&self) -> Result<Option<LockGuard>> {
        Ok(self.gc.try_lock(&()).map(LockGuard::new))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    async fn shared() -> Option<(Arc<dyn Coordinator>, Arc<dyn Coordinator>)> {
        let one: Arc<dyn Coordinator> = Arc::new(LocalCoordinator::default());
        Some((one.clone(), one))
    }

    crate::coordination::conformance::coordination_conformance!(shared);
}
