//! Whole repositories, for the management API: their size, a namespace's usage, and
//! deleting a repository with everything in it.

use super::{Registry, RegistryError, Result};
use crate::oci::RepoName;

impl Registry {
    /// Bytes of the blobs the repository links.
    pub async fn repository_size(&self, repo: &RepoName) -> Result<u64> {
        Ok(self.meta.repository_size(repo).await?)
    }

    /// Bytes of the distinct blobs the namespace's repositories link.
    pub async fn namespace_usage(&self, namespace: &str) -> Result<u64> {
        Ok(self.meta.namespace_usage(namespace).await?)
    }

    /// Up to `limit` repository names of the namespace, in order.
    pub async fn namespace_repositories(
        &self,
        namespace: &str,
        limit: usize,
    ) -> Result<Vec<String>> {
        Ok(self.meta.namespace_repositories(namespace, limit).await?)
    }

    /// Deletes every manifest, tag and blob link of the repository, and forgets them in the
    /// cache; garbage collection then removes the bytes nothing else uses.
    ///
    /// # Errors
    /// `NameUnknown` when there is no such repository.
    pub async fn delete_repository(&self, repo: &RepoName) -> Result<()> {
        let deleted = self
            .meta
            .delete_repository(repo)
            .await?
            .ok_or(RegistryError::NameUnknown)?;
        for tag in &deleted.tags {
            self.forget_tag(repo, tag).await;
        }
        for digest in &deleted.manifests {
            self.forget_manifest(repo, digest).await;
        }
        for digest in &deleted.blobs {
            self.forget_blob_link(repo, digest).await;
        }
        Ok(())
    }
}
