//! The `Coordinator` seam: the locks that keep concurrent requests — on one node or on every
//! node of a cluster — from undoing each other's work.
//!
//! Depends only on `oci`. Garbage collection's safety rests on it: a blob's bytes are deleted
//! only under the digest's lock, which a push also holds while it publishes and links that
//! digest. `local` serves one node (in-process locks); a cluster needs locks every node
//! sees, such as `postgres` (advisory locks in the shared database).

use async_trait::async_trait;

use crate::oci::{Digest, UploadId};

pub mod local;
#[cfg(feature = "postgres")]
pub mod postgres;

/// Held while the lock is; dropping it releases the lock. A database lock is also released
/// when its connection dies, so a crashed node never keeps one.
pub struct LockGuard {
    _held: Box<dyn Send + Sync>,
}

impl LockGuard {
    pub fn new(held: impl Send + Sync + 'static) -> LockGuard {
        LockGuard {
            _held: Box::new(held),
        }
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockGuard")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CoordinationError {
    /// The lock service cannot be reached in time: worth retrying, so the API answers 503.
    #[error("coordination backend unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("coordination backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = CoordinationError> = std::result::Result<T, E>;

#[async_trait]
pub trait Coordinator: Send + Sync + 'static {
    /// Waits for the digest's lock: publishing a blob (commit and link) and garbage
    /// collection deleting the same digest exclude each other.
    async fn lock_digest(&self, digest: &Digest) -> Result<LockGuard>;

    /// The upload session's lock if no request holds it, so two requests never write one
    /// session at once.
    async fn try_lock_upload(&self, id: &UploadId) -> Result<Option<LockGuard>>;

    /// The garbage collector's lock if no collection is running.
    async fn try_lock_gc(&self) -> Result<Option<LockGuard>>;
}

#[cfg(test)]
pub(crate) mod conformance;
