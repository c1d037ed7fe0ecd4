//! The `MetadataStore` seam: the registry's source of truth for repositories, blob links,
//! manifests, tags, referrers and upload sessions.
//!
//! Depends only on `oci`, and on `accounts`, whose seam the same stores implement on the same
//! database (`sqlite/accounts.rs`, `postgres/accounts.rs`). Each method is one transaction
//! inside the implementation (a manifest, its tags and its references are committed together),
//! so callers never see half a change. `sqlite` is the embedded default; `postgres` slots in
//! behind the same trait and runs the same conformance suite.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;

use crate::oci::manifest::ManifestInfo;
use crate::oci::{Digest, Reference, RepoName, Tag, UploadId};

mod account_rows;
#[cfg(feature = "postgres")]
pub mod postgres;
mod rows;
pub mod sqlite;

#[cfg(test)]
pub(crate) mod conformance;

/// Seconds since the Unix epoch, on the store's clock ([`MetadataStore::now`]).
pub type Timestamp = i64;

/// This node's clock, for stores whose clock it is (the embedded one).
pub fn system_now() -> Timestamp {
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

/// What one garbage-collection batch removed from metadata: the blob store must now delete
/// the bytes, and caches must forget the links.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcPlan {
    /// Blob links no manifest of their repository needed, in (repository, digest) order.
    pub links: Vec<(RepoName, Digest)>,
    /// Blobs no repository links and no manifest references any more.
    pub blobs: Vec<Digest>,
}

/// What deleting a repository removed, so caches can forget exactly that.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletedRepository {
    /// Every manifest's digest, sorted.
    pub manifests: Vec<Digest>,
    /// Every tag, sorted.
    pub tags: Vec<Tag>,
    /// Every blob the repository linked, sorted; their bytes go when garbage collection finds
    /// no other repository using them.
    pub blobs: Vec<Digest>,
}

/// A stored name that no longer parses: the row is kept, the batch fails.
#[derive(Debug, thiserror::Error)]
#[error("garbage collection found an unreadable {kind} {value:?}")]
pub struct UnreadableRow {
    kind: &'static str,
    value: String,
}

impl GcPlan {
    /// A plan from the names a store's deletions returned, each list sorted, so every store
    /// reports a batch the same way.
    pub fn parsed(
        links: Vec<(String, String)>,
        blobs: Vec<String>,
    ) -> std::result::Result<GcPlan, UnreadableRow> {
        fn parse<T: std::str::FromStr>(
            kind: &'static str,
            value: String,
        ) -> std::result::Result<T, UnreadableRow> {
            value.parse().map_err(|_| UnreadableRow { kind, value })
        }
        let mut plan = GcPlan {
            links: links
                .into_iter()
                .map(|(repo, digest)| Ok((parse("repository", repo)?, parse("digest", digest)?)))
                .collect::<std::result::Result<_, _>>()?,
            blobs: blobs
                .into_iter()
                .map(|d| parse("digest", d))
                .collect::<std::result::Result<_, _>>()?,
        };
        plan.links.sort();
        plan.blobs.sort();
        Ok(plan)
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.blobs.is_empty()
    }
}

/// Where a garbage-collection pass has got to: links are examined in key order, then blob
/// records in digest order, each row once per pass, so a pass costs what the tables hold
/// rather than that times the number of batches. Meaningful only to the store that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcCursor {
    /// Examining links, after the one with this key (the store's repository id, digest).
    Links { repo_id: i64, digest: String },
    /// Links done; examining blob records after this digest.
    Blobs { digest: String },
}

impl Default for GcCursor {
    /// The start of a pass: before every link.
    fn default() -> GcCursor {
        GcCursor::Links {
            repo_id: i64::MIN,
            digest: String::new(),
        }
    }
}

/// One batch of a pass: what it removed, and where the next batch starts (`None`: the pass
/// is over).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcBatch {
    pub removed: GcPlan,
    pub next: Option<GcCursor>,
}

/// What a store removed in one page of links (as `(repository, digest)` names) or of blob
/// records, and the last key of the page (`None`: the page ran to the end of the table).
pub(crate) type GcPage<Row, Key> = (Vec<Row>, Option<Key>);

/// The two scans of a garbage-collection batch, run inside the store's transaction. Each
/// examines the `batch` rows after `after` in key order and removes those of them that
/// qualify; [`gc_batch`] walks the pass from one to the other.
pub(crate) trait GcScans {
    type Error;

    /// Links made before `cutoff` that no manifest of their repository references.
    async fn links_after(
        &mut self,
        cutoff: Timestamp,
        batch: i64,
        after: (i64, &str),
    ) -> std::result::Result<GcPage<(String, String), (i64, String)>, Self::Error>;

    /// Blob records created before `cutoff` that nothing links or references.
    async fn blobs_after(
        &mut self,
        cutoff: Timestamp,
        batch: i64,
        after: &str,
    ) -> std::result::Result<GcPage<String, String>, Self::Error>;
}

/// What the two scans return, before the names are parsed.
pub(crate) struct GcRows {
    pub links: Vec<(String, String)>,
    pub blobs: Vec<String>,
    pub next: Option<GcCursor>,
}

/// One batch from `cursor`: a page of links, and once the links have run out (in this batch
/// or an earlier one) a page of blob records, so the blobs freed by this pass's link removals
/// are examined in the same pass.
pub(crate) async fn gc_batch<S: GcScans>(
    scans: &mut S,
    cursor: &GcCursor,
    cutoff: Timestamp,
    batch: i64,
) -> std::result::Result<GcRows, S::Error> {
    let batch = batch.max(1);
    let mut rows = GcRows {
        links: Vec::new(),
        blobs: Vec::new(),
        next: Some(cursor.clone()),
    };
    if let GcCursor::Links { repo_id, digest } = cursor {
        let (removed, end) = scans.links_after(cutoff, batch, (*repo_id, digest)).await?;
        rows.links = removed;
        rows.next = Some(end.map_or(
            GcCursor::Blobs {
                digest: String::new(),
            },
            |(repo_id, digest)| GcCursor::Links { repo_id, digest },
        ));
    }
    if let Some(GcCursor::Blobs { digest }) = &rows.next {
        let (removed, end) = scans.blobs_after(cutoff, batch, digest).await?;
        rows.blobs = removed;
        rows.next = end.map(|digest| GcCursor::Blobs { digest });
    }
    Ok(rows)
}

impl GcRows {
    /// The batch, once every name parses: a row we cannot name must not vanish from
    /// metadata, so the caller commits only after this succeeds.
    pub fn parsed(self) -> std::result::Result<GcBatch, UnreadableRow> {
        Ok(GcBatch {
            removed: GcPlan::parsed(self.links, self.blobs)?,
            next: self.next,
        })
    }
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
    /// The store cannot be reached in time (no pooled connection, refused or reset, a
    /// failover, a statement timeout): worth retrying, so the API answers 503.
    #[error("metadata store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Concurrent transactions kept colliding (serialization failures, deadlocks) after the
    /// store's own retries; the client may retry.
    #[error("metadata transaction conflict: {0}")]
    Conflict(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("metadata backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl MetadataError {
    /// Whether retrying later can succeed where this failed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            MetadataError::Unavailable(_) | MetadataError::Conflict(_)
        )
    }
}

pub type Result<T, E = MetadataError> = std::result::Result<T, E>;

#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Succeeds when the store answers queries and commits a write (`/readyz`).
    async fn ping(&self) -> Result<()>;

    /// The store's clock. Every timestamp the store writes comes from it and garbage
    /// collection's cutoffs are computed from it, so the nodes of a cluster sharing one
    /// database agree on time whatever their own clocks say.
    async fn now(&self) -> Result<Timestamp>;

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

    /// Starts a session at offset 0, stamped with the store's clock.
    async fn create_upload(
        &self,
        id: &UploadId,
        repo: &RepoName,
        hash_state: &[u8],
    ) -> Result<UploadSession>;

    /// The session when it exists and belongs to `repo`.
    async fn get_upload(&self, repo: &RepoName, id: &UploadId) -> Result<Option<UploadSession>>;

    /// Moves the session from `expected_offset` to `new_offset` with the new hash state and
    /// touches it. `false` (nothing changed) when the session is gone or another request
    /// moved it first.
    async fn advance_upload(
        &self,
        id: &UploadId,
        expected_offset: u64,
        new_offset: u64,
        hash_state: &[u8],
    ) -> Result<bool>;

    /// Ends a session; `false` when it was not there.
    async fn delete_upload(&self, id: &UploadId) -> Result<bool>;

    /// Up to `limit` sessions with ids after `after`, in id order (start-up reconciliation
    /// pages through all of them).
    async fn list_uploads(
        &self,
        after: Option<&UploadId>,
        limit: usize,
    ) -> Result<Vec<UploadSession>>;

    // ---- garbage collection ----

    /// One batch of a garbage-collection pass, in one transaction, from `cursor`
    /// (`GcCursor::default()` starts a pass): examines the next `limit` blob links, removing
    /// those made before `cutoff` that no manifest of their repository references; once the
    /// links have run out, the next `limit` blob records, removing those created before
    /// `cutoff` left with no link and no reference. Returns what it removed, so the caller
    /// deletes the bytes and forgets the links, and where the next batch starts; the caller
    /// goes on until that is `None`. A row freed behind the cursor waits for the next pass.
    /// (Stale upload sessions are the caller's to end, one at a time under the session's
    /// lock, since a request may be writing one.)
    async fn collect_garbage(
        &self,
        cutoff: Timestamp,
        limit: usize,
        cursor: &GcCursor,
    ) -> Result<GcBatch>;

    // ---- repository management ----

    /// Total bytes of the blobs linked to `repo` (0 for an unknown repository).
    async fn repository_size(&self, repo: &RepoName) -> Result<u64>;

    /// Bytes of the distinct blobs linked to the repositories of `namespace` (named
    /// `namespace` or `namespace/…`): a blob linked in two of them counts once.
    async fn namespace_usage(&self, namespace: &str) -> Result<u64>;

    /// Up to `limit` repositories of `namespace` (named `namespace` or `namespace/…`), with or
    /// without manifests, in name order.
    async fn namespace_repositories(&self, namespace: &str, limit: usize) -> Result<Vec<String>>;

    /// Whether the blob is linked to a repository of `namespace` (so linking it to another
    /// one adds nothing to the namespace's usage).
    async fn namespace_holds_blob(&self, namespace: &str, digest: &Digest) -> Result<bool>;

    /// Deletes the repository with its tags, manifests and blob links in one transaction;
    /// `None` when it was unknown. A push racing it either lands before (and is deleted) or
    /// finds the repository gone (its manifest refused for missing blobs).
    async fn delete_repository(&self, repo: &RepoName) -> Result<Option<DeletedRepository>>;
}
