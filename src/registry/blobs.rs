//! Blob reads, deletes and cross-repository mounts.

use std::ops::Range;

use bytes::Bytes;

use super::quota::RequestQuota;
use super::{Registry, RegistryError, Result};
use crate::oci::{Digest, RepoName};
use crate::storage::ByteStream;

impl Registry {
    /// Cache key of a blob link. Whatever removes a link (a `DELETE`, garbage collection)
    /// deletes exactly this key.
    fn link_key(repo: &RepoName, digest: &Digest) -> String {
        format!("b:{repo}:{digest}")
    }

    /// Size of a blob the repository may serve.
    ///
    /// # Errors
    /// `BlobUnknown` when the blob is not linked to `repo`.
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        let key = Self::link_key(repo, digest);
        if let Some(size) = self
            .cache
            .get(&key)
            .await
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
        {
            return Ok(size);
        }
        let size = self
            .meta
            .linked_blob(repo, digest)
            .await?
            .ok_or(RegistryError::BlobUnknown)?;
        self.cache
            .set(&key, Bytes::from(size.to_string()), self.settings.cache_ttl)
            .await;
        Ok(size)
    }

    /// Streams a blob (or a range already clamped to its size) after [`Registry::blob_size`].
    pub async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<ByteStream> {
        self.blobs.open(digest, range).await.map_err(|e| match e {
            crate::storage::BlobStoreError::NotFound => RegistryError::BlobUnknown,
            other => other.into(),
        })
    }

    /// A direct URL for the blob when the store offers one.
    pub async fn blob_redirect(&self, digest: &Digest) -> Result<Option<String>> {
        Ok(self.blobs.redirect_url(digest).await?)
    }

    /// Removes the blob from the repository; the bytes go when garbage collection finds no
    /// other repository or manifest using them.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let removed = self.meta.unlink_blob(repo, digest).await?;
        self.cache.delete(&Self::link_key(repo, digest)).await;
        if removed {
            Ok(())
        } else {
            Err(RegistryError::BlobUnknown)
        }
    }

    /// Links a blob of `from` into `repo` without copying bytes. `false` when `from` does not
    /// have it (the caller then starts an ordinary upload); `QuotaExceeded` when `repo`'s
    /// namespace has no room for it.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<bool> {
        let Some(size) = self.meta.linked_blob(from, digest).await? else {
            return Ok(false);
        };
        let _guard = self.coordinator.lock_digest(digest).await?;
        if self.blobs.stat(digest).await?.is_none() {
            return Ok(false);
        }
        self.charge(repo, digest, size, &mut RequestQuota::default())
            .await?;
        self.meta.link_blob(repo, digest, size).await?;
        Ok(true)
    }

    pub(super) async fn forget_blob_link(&self, repo: &RepoName, digest: &Digest) {
        self.cache.delete(&Self::link_key(repo, digest)).await;
    }
}
