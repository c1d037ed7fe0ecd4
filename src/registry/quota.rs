//! Namespace quotas at push time: the most blob bytes the repositories of one namespace (a
//! repository's first path component) may hold together.
//!
//! Who sets a quota is the accounts' business; the registry only asks [`NamespaceQuotas`] and
//! counts. A push is refused with `DENIED` before anything is linked: a finished upload or a
//! mount whose blob the namespace does not hold yet and has no room for, a monolithic push
//! (whose digest is known from the start) as soon as its bytes exceed the room, and an upload
//! session as soon as it grows past the whole quota. A blob already linked somewhere in the
//! namespace costs nothing more, so re-tagging, mounting and re-pushing what a full namespace
//! holds keep working; that is why a session, whose blob is named only by its final `PUT`,
//! is held to the quota rather than to the room.
//!
//! Usage is read from metadata at each check, without a namespace-wide lock: pushes committing
//! at the same moment each see the others' bytes only once linked, so a namespace can end over
//! its quota by at most the blobs being committed concurrently. Lowering a quota below the
//! usage refuses new bytes and removes nothing.

use async_trait::async_trait;

use super::{Registry, RegistryError, Result};
use crate::oci::{Digest, RepoName};

pub type QuotaLookupError = Box<dyn std::error::Error + Send + Sync>;

/// Where quotas come from (the account store, in a core node).
#[async_trait]
pub trait NamespaceQuotas: Send + Sync {
    /// The namespace's quota in bytes; `None` when it has none (or is no account's).
    async fn quota(&self, namespace: &str) -> std::result::Result<Option<u64>, QuotaLookupError>;
}

/// No namespace has a quota: registries without accounts.
pub struct Unlimited;

#[async_trait]
impl NamespaceQuotas for Unlimited {
    async fn quota(&self, _: &str) -> std::result::Result<Option<u64>, QuotaLookupError> {
        Ok(None)
    }
}

/// A namespace's quota and what it holds, read together for one check.
#[derive(Debug, Clone)]
pub(super) struct Room {
    namespace: String,
    quota: u64,
    used: u64,
}

impl Room {
    /// Bytes the namespace may still take.
    pub(super) fn left(&self) -> u64 {
        self.quota.saturating_sub(self.used)
    }

    pub(super) fn refuse(&self, adding: u64) -> RegistryError {
        RegistryError::QuotaExceeded {
            namespace: self.namespace.clone(),
            quota: self.quota,
            used: self.used,
            adding,
        }
    }
}

/// The quota of the namespace one request writes to, read from [`NamespaceQuotas`] at most
/// once: a push asks when its body starts and again when it commits, microseconds apart, and
/// each read is a round trip to the account store.
#[derive(Debug, Default)]
pub(super) struct RequestQuota {
    read: Option<Option<u64>>,
}

/// What [`Registry::upload_cap`] allows an upload.
#[derive(Debug, Clone, Copy)]
pub(super) struct UploadCap {
    pub(super) bytes: u64,
    quota: u64,
}

impl Registry {
    async fn quota_of(&self, repo: &RepoName, known: &mut RequestQuota) -> Result<Option<u64>> {
        if let Some(quota) = known.read {
            return Ok(quota);
        }
        let quota = self
            .quotas
            .quota(repo.namespace())
            .await
            .map_err(RegistryError::QuotaLookup)?;
        known.read = Some(quota);
        Ok(quota)
    }

    async fn room(&self, repo: &RepoName, quota: u64) -> Result<Room> {
        let namespace = repo.namespace();
        Ok(Room {
            namespace: namespace.to_owned(),
            quota,
            used: self.meta.namespace_usage(namespace).await?,
        })
    }

    /// How many bytes an upload into `repo` may hold, `None` without a quota: the room left
    /// when the blob it will be (`target`) is known and new to the namespace, the whole quota
    /// when it is not known yet.
    pub(super) async fn upload_cap(
        &self,
        repo: &RepoName,
        target: Option<&Digest>,
        known: &mut RequestQuota,
    ) -> Result<Option<UploadCap>> {
        let Some(quota) = self.quota_of(repo, known).await? else {
            return Ok(None);
        };
        let bytes = match target {
            None => quota,
            Some(digest) if self.holds(repo, digest).await? => return Ok(None),
            Some(_) => self.room(repo, quota).await?.left(),
        };
        Ok(Some(UploadCap { bytes, quota }))
    }

    /// The refusal of an upload that would hold `size` bytes, past its cap.
    pub(super) async fn refuse_upload(
        &self,
        repo: &RepoName,
        cap: UploadCap,
        size: u64,
    ) -> RegistryError {
        match self.room(repo, cap.quota).await {
            Ok(room) => room.refuse(size),
            Err(e) => e,
        }
    }

    /// Refuses linking a blob of `size` bytes to `repo` when its namespace lacks the room and
    /// does not hold the blob already. Called under the digest's publishing lock, before any
    /// link is written.
    pub(super) async fn charge(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        known: &mut RequestQuota,
    ) -> Result<()> {
        let Some(quota) = self.quota_of(repo, known).await? else {
            return Ok(());
        };
        let room = self.room(repo, quota).await?;
        if size <= room.left() || self.holds(repo, digest).await? {
            return Ok(());
        }
        Err(room.refuse(size))
    }

    async fn holds(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        Ok(self
            .meta
            .namespace_holds_blob(repo.namespace(), digest)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_namespace_and_the_numbers() {
        let room = Room {
            namespace: "alice".into(),
            quota: 100,
            used: 90,
        };
        assert_eq!(room.left(), 10);
        let refused = room.refuse(25);
        assert_eq!(refused.code(), crate::oci::ErrorCode::Denied);
        let message = refused.client_message().expect("a message");
        assert!(
            message.contains("alice") && message.contains("100") && message.contains("90"),
            "{message}"
        );
        let over = Room { used: 130, ..room };
        assert_eq!(over.left(), 0);
    }
}
