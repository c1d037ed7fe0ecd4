//! The `MetadataStore` seam: the registry's source of truth for repositories, blob links,
//! manifests, tags, referrers and upload sessions.
//!
//! Depends only on `oci`. Each method is one transaction inside the implementation (a manifest,
//! its tags and its references are committed together), so callers never see half a change.
//! `sqlite` is the embedded default; `postgres` slots in behind the same trait and runs the
//! same conformance suite.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;

use crate::oci::manifest::ManifestInfo;
use crate::oci::{Digest, Reference, RepoName, Tag, UploadId};

pub mod sqlite;

#[cfg(test)]
pub(crate) mod conformance;

/// Seconds since the Unix epoch.
pub type Timestamp = i64;

pub fn now() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// A stored manifest: the exact bytes pushed and the media type they were pushed as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
}

/// A validated manifest ready to be committed.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub repo: RepoName,
    pub digest: Digest,
    pub info: ManifestInfo,
    pub body: Bytes,
    /// Tags to point at this manifest (the path's tag and any `?tag=` parameters).
    pub tags: Vec<Tag>,
}

/// One entry of a referrers response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A blob upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSession {
    pub id: UploadId,
    pub repo: RepoName,
    /// Bytes received and made durable so far.
    pub offset: u64,
    /// The SHA-256 state over those bytes (`oci::Hasher::save_state`), so hashing resumes
    /// where the previous request stopped.
    pub hash_state: Vec<u8>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What garbage collection removed from metadata and the blob store must now delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcPlan {
    /// Blobs no repository links and no manifest references any more.
    pub blobs: Vec<Digest>,
    /// Upload sessions abandoned before the cutoff.
    pub uploads: Vec<UploadId>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("manifest references blobs or manifests unknown to the repository: {0:?}")]
    MissingReferences(Vec<Digest>),
    /// A descriptor's `size` is not the size of the blob or manifest it names; clients
    /// would fail their own verification of what they pull.
    #[error("descriptor of {digest} says {declared} bytes, the repository holds {stored}")]
    SizeMismatch {
        digest: Digest,
        declared: u64,
        stored: u64,
    },
    #[error("metadata backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = MetadataError> = std::result::Result<T, E>;

#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Succeeds when the store answers queries (`/readyz`).
    async fn ping(&self) -> Result<()>;

    // ---- blobs ----

    /// Records a committed blob of `size` bytes and links it to `repo`, creating the
    /// repository. Idempotent; re-linking restarts the link's garbage-collection grace period.
    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()>;

    /// The blob's size when it is linked to `repo`.
    async fn linked_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>>;

    /// Removes `repo`'s link to the blob; `false` when there was none.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    /// Whether metadata still records the blob (linked anywhere, or referenced by a manifest).
    async fn blob_known(&self, digest: &Digest) -> Result<bool>;

    // ---- manifests, tags, referrers ----

    /// Stores a manifest, moves its tags to it and records what it references, in one
    /// transaction. Re-putting the same digest is idempotent (tags still move).
    ///
    /// # Errors
    /// `MissingReferences` (nothing changed) when a blob in `info.blobs` is not linked to the
    /// repository or a manifest in `info.children` is not in it; `SizeMismatch` (nothing
    /// changed) when one is there with another size than its descriptor says.
    async fn put_manifest(&self, manifest: &NewManifest) -> Result<()>;

    /// The manifest a tag points at, or the manifest with that digest in the repository.
    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<ManifestRecord>>;

    /// Deletes a manifest and every tag pointing at it. Returns the tags removed (so caches
    /// can drop exactly those), or `None` when the manifest was not there.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Vec<Tag>>>;

    /// Deletes a tag (the manifest stays, reachable by digest); `false` when absent.
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool>;

    /// Up to `limit` tags in lexical order after `last`; `None` when the repository is unknown.
    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<String>>>;

    /// Up to `limit` repository names holding at least one manifest, in lexical order after `last`.
    async fn list_repositories(&self, last: Option<&str>, limit: usize) -> Result<Vec<String>>;

    /// Manifests of `repo` whose `subject` is `subject`, optionally only those of one artifact type.
    async fn list_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>>;

    // ---- upload sessions ----

    async fn create_upload(&self, session: &UploadSession) -> Result<()>;

    /// The session when it exists and belongs to `repo`.
    async fn get_upload(&self, repo: &RepoName, id: &UploadId) -> Result<Option<UploadSession>>;

    /// Moves the session from `expected_offset` to `new_offset` with the new hash state.
    /// `false` (nothing changed) when the session is gone or another request moved it first.
    async fn advance_upload(
        &self,
        id: &UploadId,
        expected_offset: u64,
        new_offset: u64,
        hash_state: &[u8],
    ) -> Result<bool>;

    /// Ends a session; `false` when it was not there.
    async fn delete_upload(&self, id: &UploadId) -> Result<bool>;

    // ---- garbage collection ----

    /// In one transaction: removes blob links no manifest of their repository references that
    /// were made before `cutoff`; removes blob records left with no link and no reference;
    /// removes upload sessions not touched since `cutoff`. Returns what was removed, so the
    /// caller deletes the bytes.
    async fn collect_garbage(&self, cutoff: Timestamp) -> Result<GcPlan>;
}
