//! The `BlobStore` seam: content-addressed blob bytes and the bytes of uploads in progress.
//!
//! Depends only on `oci`. Knows nothing of repositories: which repository may see a blob is
//! metadata (`metadata::MetadataStore`), so a cross-repository mount never copies bytes.
//!
//! Key layout, shared by every backend (a directory tree for `fs`, object keys for `s3`):
//!
//! ```text
//! blobs/<algorithm>/<first two hex chars>/<hex>   committed blob, immutable
//! uploads/<upload id>/data                        bytes received so far for one session
//! uploads/.held/<upload id>                       fs only: a small whole blob while its
//!                                                 publish writes it (a crash leaves it to GC)
//! ```
//!
//! Invariant: a key under `blobs/` appears only by an atomic publish of bytes whose digest the
//! caller has verified ([`BlobStore::commit_upload`], [`BlobWriter::publish`]), so a crash
//! leaves the whole blob or nothing.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::oci::{Digest, UploadId};

pub mod fs;
#[cfg(feature = "s3")]
pub mod s3;
pub mod timed;

#[cfg(test)]
pub(crate) mod conformance;

/// A stream of blob bytes. Errors mid-stream abort the response (never a silently short body).
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// What the store knows about a committed blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobMeta {
    pub size: u64,
    pub modified: SystemTime,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobStoreError {
    #[error("blob not found")]
    NotFound,
    #[error("upload session not found in storage")]
    UploadNotFound,
    #[error("upload holds {actual} bytes but the session expects at least {expected}")]
    UploadTooShort { expected: u64, actual: u64 },
    /// The backend cannot be reached, timed out or throttles (an object store's 503
    /// SlowDown): worth retrying, so the API answers 503 rather than 500.
    #[error("storage backend unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("storage backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<io::Error> for BlobStoreError {
    fn from(e: io::Error) -> Self {
        BlobStoreError::Backend(Box::new(e))
    }
}

pub type Result<T, E = BlobStoreError> = std::result::Result<T, E>;

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Size and modification time of a committed blob; `None` when absent.
    async fn stat(&self, digest: &Digest) -> Result<Option<BlobMeta>>;

    /// Streams a committed blob, or the half-open `range` of it. The caller has clamped the
    /// range to the size from [`BlobStore::stat`].
    ///
    /// # Errors
    /// `NotFound` when the blob is absent.
    async fn open(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<ByteStream>;

    /// A URL the client may fetch the blob from directly (a presigned object-store URL).
    /// `None` means "stream it yourself", which is what the default and `fs` do.
    async fn redirect_url(&self, _digest: &Digest) -> Result<Option<String>> {
        Ok(None)
    }

    /// Removes a committed blob. Deleting an absent blob succeeds.
    async fn delete(&self, digest: &Digest) -> Result<()>;

    /// Up to `limit` committed blobs with their modification times, those whose digest sorts
    /// after `after` (as a string), in that order: garbage collection pages through a
    /// bucket of any size.
    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<(Digest, SystemTime)>>;

    /// Creates the (empty) byte area of a new upload session.
    async fn create_upload(&self, id: &UploadId) -> Result<()>;

    /// Opens the upload for appending at `offset`, the length the session has confirmed.
    /// Bytes beyond `offset` (left by a request that failed before the session advanced) are
    /// discarded first.
    ///
    /// # Errors
    /// `UploadNotFound`; `UploadTooShort` when fewer than `offset` bytes survive.
    async fn append_upload(&self, id: &UploadId, offset: u64) -> Result<Box<dyn UploadWriter>>;

    /// Streams the first `len` bytes of an upload (to hash them with another algorithm).
    async fn read_upload(&self, id: &UploadId, len: u64) -> Result<ByteStream>;

    /// Publishes the first `len` bytes of the upload as blob `digest`, atomically, and removes
    /// the upload. The caller has verified that those bytes hash to `digest`. Publishing a
    /// digest that already exists keeps one copy.
    async fn commit_upload(&self, id: &UploadId, len: u64, digest: &Digest) -> Result<BlobMeta>;

    /// Opens the byte area of a blob that arrives whole in one request (`POST ?digest=`), which
    /// no later request resumes: the store skips what keeps a session's area across requests
    /// and crashes (`fs`: the directory fsyncs; `s3`: the marker and part objects of a blob
    /// that fits in one part) and publishes it in fewer steps. The area lives under `id` like a
    /// session's, so a writer dropped unpublished leaves what [`BlobStore::delete_upload`] and
    /// GC remove.
    async fn receive_blob(&self, id: &UploadId) -> Result<Box<dyn BlobWriter>>;

    /// Removes an upload's bytes. Removing an absent upload succeeds.
    async fn delete_upload(&self, id: &UploadId) -> Result<()>;

    /// Up to `limit` upload areas with their last modification, those whose id sorts after
    /// `after`, in id order, for garbage collection.
    async fn list_uploads(
        &self,
        after: Option<&UploadId>,
        limit: usize,
    ) -> Result<Vec<(UploadId, SystemTime)>>;

    /// Removes what the backend keeps for uploads beyond their areas and no area accounts for
    /// any more (an object store's abandoned multipart uploads), older than `cutoff`.
    /// Returns how many it removed; stores with no such thing have nothing to do.
    async fn collect_leftovers(&self, _cutoff: SystemTime) -> Result<u64> {
        Ok(0)
    }

    /// Writes, makes durable and removes a small probe where uploads are written, so
    /// readiness fails while the store cannot take new bytes (a full disk, a read-only mount).
    async fn check_writable(&self) -> Result<()>;
}

/// Appends bytes to an upload. Dropping it without [`UploadWriter::finish`] leaves bytes the
/// session never confirmed; the next [`BlobStore::append_upload`] discards them.
#[async_trait]
pub trait UploadWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<()>;

    /// Makes every written byte durable (or, for a [`BlobWriter`], ready to be published).
    /// Called once, after the last write and before the session records the new offset.
    async fn finish(&mut self) -> Result<()>;
}

/// The writer of [`BlobStore::receive_blob`]: an [`UploadWriter`] whose bytes are published
/// straight from where it wrote them.
#[async_trait]
pub trait BlobWriter: UploadWriter {
    /// Publishes the `len` bytes written (and finished) as blob `digest`, atomically and
    /// durably, and removes the area. The caller has verified the digest and holds its
    /// lock. Publishing a digest that already exists keeps one copy.
    async fn publish(self: Box<Self>, len: u64, digest: &Digest) -> Result<BlobMeta>;
}
