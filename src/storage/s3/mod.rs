//! `S3BlobStore`: the [`BlobStore`] on an S3 bucket (AWS, or any S3-compatible server), with
//! the key layout of the `storage` module doc under an optional prefix. `docs/s3.md` has the
//! design; in short:
//!
//! - An upload's bytes live in its area `uploads/<id>/` as part objects of exactly the part
//!   size plus one tail object with the remainder (`layout`). Each `PATCH` stores whole parts
//!   as they fill and the tail on finish, so its bytes are durable in S3 before it is
//!   answered, and memory per request stays below one part whatever the client's chunks.
//! - Everything about an upload is read back from S3 (`append_upload` lists the area), so
//!   any node can continue or finish an upload another node started.
//! - Committing copies the confirmed bytes server-side into the blob key: one `CopyObject` for
//!   a blob that is a single object, otherwise a multipart upload of `UploadPartCopy` parts
//!   completed onto `blobs/…`. S3 makes a key appear only whole, so the blob appears whole or
//!   not at all, and no size limit applies (every copied piece is at most one part).
//!
//! Consistency: S3's read-after-write consistency for objects and listings (AWS since 2020;
//! MinIO, Ceph) is assumed, and one writer per session at a time (the registry's upload lock).

mod bucket;
mod error;
mod layout;
pub mod settings;
mod writer;

#[cfg(test)]
mod tests;

use std::ops::Range;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, StalledStreamProtectionConfig};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

use self::bucket::{Bucket, OpenMultipart};
use self::error::{S3Failure, backend_error};
use self::layout::{AreaListing, AreaObject, Keys, Piece, Publish, TooShort};
use self::settings::ASSEMBLY_TIMEOUT_FACTOR;
pub use self::settings::S3Settings;
use self::writer::{S3BlobWriter, S3UploadWriter};
use super::{BlobMeta, BlobStore, BlobStoreError, BlobWriter, ByteStream, Result, UploadWriter};
use crate::oci::{Digest, UploadId};

/// Connecting is quick or not at all; a slow server shows in the request timeout instead.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Part copies of one commit in flight at once.
const COPY_CONCURRENCY: usize = 8;
/// Multipart uploads per `ListMultipartUploads` page: S3's maximum.
const MULTIPART_PAGE: i32 = 1000;

/// Blobs and uploads in one bucket, under one key prefix.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    bucket: Bucket,
    keys: Keys,
    part_size: u64,
    redirect_expiry: Option<Duration>,
}

/// The area marker's content: what every node continuing the upload must agree on.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Marker {
    part_size: u64,
}

/// The multipart upload of a commit in progress, recorded in the area so whoever next
/// commits or removes the upload aborts it (a crashed commit leaks nothing).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct CommitRecord {
    key: String,
    upload_id: String,
}

/// An upload area as read back from S3.
struct Area {
    part_size: u64,
    listing: AreaListing,
}

fn too_short(short: TooShort) -> BlobStoreError {
    BlobStoreError::UploadTooShort {
        expected: short.expected,
        actual: short.actual,
    }
}

fn invalid_json(what: &str, e: serde_json::Error) -> BlobStoreError {
    backend_error(format!("unreadable {what}: {e}"))
}

impl S3BlobStore {
    /// A store on the bucket the settings name. Sends no request: an unreachable server
    /// shows in the readiness probe ([`BlobStore::check_writable`]) and in requests, as
    /// `Unavailable`, not as a failed start.
    ///
    /// # Errors
    /// `Backend` when the settings are invalid.
    pub async fn connect(settings: &S3Settings) -> Result<S3BlobStore> {
        settings
            .validate()
            .map_err(|e| BlobStoreError::Backend(Box::new(e)))?;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(settings.request_timeout.min(CONNECT_TIMEOUT))
            .operation_attempt_timeout(settings.request_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .timeout_config(timeouts);
        if let (Some(key), Some(secret)) = (&settings.access_key, &settings.secret_key) {
            loader = loader.credentials_provider(Credentials::new(
                key,
                secret,
                None,
                None,
                "aerugo storage settings",
            ));
        }
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let shared = loader.load().await;
        // Blob bytes are content-addressed: clients and the edge verify the digest of every
        // blob they read, so asking the store to checksum each read (and checking that CRC
        // again here) would only cost CPU on both sides. Uploads keep the SDK's checksums:
        // those catch corruption between the node's hash and the store.
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(settings.path_style)
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        // Server-side copies answer only when done: silence is normal there, so the SDK's
        // stalled-stream protection (which would fail them) is off and the attempt timeout
        // is longer instead.
        let assembly = config
            .to_builder()
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.request_timeout.min(CONNECT_TIMEOUT))
                    .operation_attempt_timeout(settings.request_timeout * ASSEMBLY_TIMEOUT_FACTOR)
                    .build(),
            )
            .build();
        Ok(S3BlobStore {
            bucket: Bucket {
                client: aws_sdk_s3::Client::from_conf(config),
                assembly: aws_sdk_s3::Client::from_conf(assembly),
                name: settings.bucket.clone(),
            },
            keys: Keys::new(settings.normalized_prefix()),
            part_size: settings.part_size,
            redirect_expiry: settings.redirect.then_some(settings.redirect_expiry),
        })
    }

    /// Reads an area's marker and lists its objects.
    ///
    /// # Errors
    /// `UploadNotFound` without a marker.
    async fn read_area(&self, id: &UploadId) -> Result<Area> {
        let marker_key = self.keys.object(id, AreaObject::Marker);
        let area_prefix = self.keys.area(id);
        let (marker, objects) = tokio::join!(
            self.bucket.get_bytes(&marker_key, None),
            self.bucket.list_all(&area_prefix),
        );
        let marker = marker.map_err(|f| f.missing_is(BlobStoreError::UploadNotFound))?;
        let marker: Marker =
            serde_json::from_slice(&marker).map_err(|e| invalid_json("upload marker", e))?;
        let part_size = layout::valid_part_size(marker.part_size).ok_or_else(|| {
            backend_error(format!(
                "upload {id} records part size {}, outside S3's limits",
                marker.part_size
            ))
        })?;
        let mut listing = AreaListing::default();
        for object in objects? {
            let name = object.key.strip_prefix(&area_prefix).unwrap_or_default();
            if let Some(parsed) = AreaObject::parse(name) {
                listing.add(parsed, object.size, object.modified);
            }
        }
        Ok(Area { part_size, listing })
    }

    fn key_of(&self, id: &UploadId, piece: &Piece) -> String {
        self.keys.object(id, piece.object)
    }

    /// Removes the given objects of an area (the marker last, if listed).
    async fn remove_objects(&self, id: &UploadId, objects: &[AreaObject]) -> Result<()> {
        let (marker, others): (Vec<&AreaObject>, Vec<&AreaObject>) = objects
            .iter()
            .partition(|o| matches!(o, AreaObject::Marker));
        let keys: Vec<String> = others.iter().map(|&&o| self.keys.object(id, o)).collect();
        if !keys.is_empty() {
            self.bucket.delete_many(&keys).await?;
        }
        if !marker.is_empty() {
            self.bucket
                .delete(&self.keys.object(id, AreaObject::Marker))
                .await?;
        }
        Ok(())
    }

    /// Removes a whole area, aborting the multipart upload of an interrupted commit first.
    async fn remove_area(&self, id: &UploadId, listing: &AreaListing) -> Result<()> {
        if listing.has_commit {
            self.abort_recorded_commit(id).await?;
        }
        self.remove_objects(id, &listing.objects()).await
    }

    /// After a successful publish the area is only debris, including the record of the
    /// multipart upload the commit may just have completed. Failing to remove it must not fail
    /// the commit: garbage collection finds it among the areas no session owns.
    async fn remove_committed(&self, id: &UploadId, listing: &AreaListing) {
        let mut committed = listing.clone();
        committed.has_commit = true;
        if let Err(e) = self.remove_objects(id, &committed.objects()).await {
            tracing::warn!(upload = %id, error = %e, "could not remove a committed upload's area");
        }
    }

    async fn abort_recorded_commit(&self, id: &UploadId) -> Result<()> {
        let key = self.keys.object(id, AreaObject::Commit);
        let record = match self.bucket.get_bytes(&key, None).await {
            Ok(record) => record,
            Err(S3Failure::Missing) => return Ok(()),
            Err(failed) => return Err(failed.into()),
        };
        let record: CommitRecord =
            serde_json::from_slice(&record).map_err(|e| invalid_json("commit record", e))?;
        let multipart = OpenMultipart {
            key: record.key,
            upload_id: record.upload_id,
            initiated: None,
        };
        match self.bucket.abort(&multipart).await {
            Ok(()) => Ok(()),
            // Worth retrying: keep the record.
            Err(S3Failure::Failed(BlobStoreError::Unavailable(e))) => {
                Err(BlobStoreError::Unavailable(e))
            }
            // Some servers refuse (403) an upload they no longer know, such as one a commit
            // completed before it crashed; whatever remains, collect_leftovers finds it.
            Err(failed) => {
                let e = BlobStoreError::from(failed);
                tracing::warn!(upload = %id, error = %e, "could not abort a recorded commit; dropping the record");
                Ok(())
            }
        }
    }

    /// Makes the planned bytes the object at `key`.
    async fn publish(&self, id: &UploadId, key: &str, plan: Publish) -> Result<()> {
        match plan {
            Publish::Empty => Ok(self.bucket.put(key, Bytes::new()).await?),
            Publish::Copy(object) => {
                Ok(self.bucket.copy(&self.keys.object(id, object), key).await?)
            }
            Publish::Multipart(pieces) => self.assemble(id, key, &pieces).await,
        }
    }

    /// Copies the pieces into a multipart upload at `key` and completes it. On failure the
    /// multipart upload is aborted; if even that fails, the commit record lets a later commit
    /// or removal of the upload abort it.
    async fn assemble(&self, id: &UploadId, key: &str, pieces: &[Piece]) -> Result<()> {
        let multipart = OpenMultipart {
            key: key.to_owned(),
            upload_id: self.bucket.start_multipart(key).await?,
            initiated: None,
        };
        let record = CommitRecord {
            key: multipart.key.clone(),
            upload_id: multipart.upload_id.clone(),
        };
        let copied = async {
            let record =
                serde_json::to_vec(&record).map_err(|e| invalid_json("commit record", e))?;
            self.bucket
                .put(&self.keys.object(id, AreaObject::Commit), record.into())
                .await?;
            let copies: Vec<(String, u64, i32)> = pieces
                .iter()
                .zip(1..)
                .map(|(piece, number)| (self.key_of(id, piece), piece.len, number))
                .collect();
            let parts = futures_util::stream::iter(copies)
                .map(|(source, len, number)| {
                    let bucket = self.bucket.clone();
                    let multipart = multipart.clone();
                    async move { bucket.copy_part(&multipart, number, &source, len).await }
                })
                .buffered(COPY_CONCURRENCY)
                .try_collect()
                .await?;
            Ok::<_, BlobStoreError>(self.bucket.complete(&multipart, parts).await?)
        }
        .await;
        if copied.is_err()
            && let Err(e) = self.bucket.abort(&multipart).await
        {
            let e = BlobStoreError::from(e);
            tracing::warn!(upload = %id, error = %e, "could not abort a failed commit's multipart upload");
        }
        copied
    }

    /// Aborts the multipart uploads under the store's prefix started before `cutoff`: a commit
    /// takes far less than the garbage collector's grace period, so an older one was
    /// interrupted and never aborted. Returns how many were aborted. Pages hold `page`
    /// uploads (tests make it small). A server without `ListMultipartUploads` (s3s-fs) has
    /// nothing to collect here.
    async fn abort_abandoned_multipart(&self, cutoff: SystemTime, page: i32) -> Result<u64> {
        let mut aborted = 0;
        let mut marker = None;
        loop {
            let Some((uploads, next)) = self
                .bucket
                .list_multipart(self.keys.root(), marker, page)
                .await?
            else {
                tracing::debug!("the S3 server cannot list multipart uploads; none collected");
                return Ok(0);
            };
            for upload in uploads.iter().filter(|u| self.is_abandoned(u, cutoff)) {
                self.bucket.abort(upload).await?;
                aborted += 1;
            }
            match next {
                Some(next) => marker = Some(next),
                None => return Ok(aborted),
            }
        }
    }

    fn is_abandoned(&self, upload: &OpenMultipart, cutoff: SystemTime) -> bool {
        self.keys.is_ours(&upload.key) && upload.initiated.is_some_and(|t| t < cutoff)
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<BlobMeta>> {
        Ok(self.bucket.head(&self.keys.blob(digest)).await?)
    }

    async fn open(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<ByteStream> {
        let key = self.keys.blob(digest);
        match range {
            // S3 has no empty range: answer it after checking the blob exists.
            Some(r) if r.start >= r.end => {
                if r.start > r.end {
                    return Err(backend_error(format!(
                        "inverted range {}..{}",
                        r.start, r.end
                    )));
                }
                match self.bucket.head(&key).await? {
                    Some(_) => Ok(Box::pin(futures_util::stream::empty())),
                    None => Err(BlobStoreError::NotFound),
                }
            }
            range => self
                .bucket
                .get(&key, range)
                .await
                .map_err(|f| f.missing_is(BlobStoreError::NotFound)),
        }
    }

    async fn redirect_url(&self, digest: &Digest) -> Result<Option<String>> {
        let Some(expiry) = self.redirect_expiry else {
            return Ok(None);
        };
        let url = self
            .bucket
            .presigned_get(&self.keys.blob(digest), expiry)
            .await?;
        Ok(Some(url))
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        Ok(self.bucket.delete(&self.keys.blob(digest)).await?)
    }

    async fn create_upload(&self, id: &UploadId) -> Result<()> {
        let marker = serde_json::to_vec(&Marker {
            part_size: self.part_size,
        })
        .map_err(|e| invalid_json("upload marker", e))?;
        Ok(self
            .bucket
            .put(&self.keys.object(id, AreaObject::Marker), marker.into())
            .await?)
    }

    async fn append_upload(&self, id: &UploadId, offset: u64) -> Result<Box<dyn UploadWriter>> {
        let Area { part_size, listing } = self.read_area(id).await?;
        layout::plan(&listing, part_size, offset).map_err(too_short)?;
        self.remove_objects(id, &layout::debris(&listing, part_size, offset))
            .await?;
        let boundary = offset / part_size * part_size;
        let carried = if offset > boundary {
            let tail = self.keys.object(id, AreaObject::Tail(boundary));
            self.bucket
                .get_bytes(&tail, Some(0..offset - boundary))
                .await
                .map_err(|f| f.missing_is(BlobStoreError::UploadNotFound))?
        } else {
            Bytes::new()
        };
        Ok(Box::new(S3UploadWriter::new(
            self.bucket.clone(),
            self.keys.clone(),
            id.clone(),
            part_size,
            boundary,
            carried,
        )))
    }

    async fn read_upload(&self, id: &UploadId, len: u64) -> Result<ByteStream> {
        let Area { part_size, listing } = self.read_area(id).await?;
        let pieces = layout::plan(&listing, part_size, len).map_err(too_short)?;
        let bucket = self.bucket.clone();
        let sources: Vec<(String, u64)> = pieces
            .iter()
            .map(|piece| (self.key_of(id, piece), piece.len))
            .collect();
        // One piece open at a time, each only when the previous one has been read.
        let stream = futures_util::stream::iter(sources)
            .then(move |(key, len)| {
                let bucket = bucket.clone();
                async move {
                    bucket
                        .get(&key, Some(0..len))
                        .await
                        .map_err(|f| std::io::Error::other(BlobStoreError::from(f)))
                }
            })
            .try_flatten();
        Ok(Box::pin(stream))
    }

    async fn commit_upload(&self, id: &UploadId, len: u64, digest: &Digest) -> Result<BlobMeta> {
        let Area { part_size, listing } = self.read_area(id).await?;
        let pieces = layout::plan(&listing, part_size, len).map_err(too_short)?;
        // A commit that crashed mid-assembly left a multipart upload; it goes first.
        if listing.has_commit {
            self.abort_recorded_commit(id).await?;
        }
        let key = self.keys.blob(digest);
        if let Some(existing) = self.bucket.head(&key).await? {
            self.remove_committed(id, &listing).await;
            return Ok(existing);
        }
        let plan = layout::publish_plan(&listing, pieces)
            .map_err(|e| BlobStoreError::Backend(Box::new(e)))?;
        self.publish(id, &key, plan).await?;
        self.remove_committed(id, &listing).await;
        Ok(BlobMeta {
            size: len,
            modified: SystemTime::now(),
        })
    }

    async fn receive_blob(&self, id: &UploadId) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(S3BlobWriter::new(self.clone(), id.clone())))
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<()> {
        let area_prefix = self.keys.area(id);
        let mut listing = AreaListing::default();
        for object in self.bucket.list_all(&area_prefix).await? {
            let name = object.key.strip_prefix(&area_prefix).unwrap_or_default();
            if let Some(parsed) = AreaObject::parse(name) {
                listing.add(parsed, object.size, object.modified);
            }
        }
        self.remove_area(id, &listing).await
    }

    /// Up to `limit` committed blobs after `after`, in digest order (key order is digest
    /// order: `/` and `:` both sort before every hex digit and algorithm letter).
    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<(Digest, SystemTime)>> {
        let start_after = after.map(|d| self.keys.blob(d));
        let mut found = Vec::new();
        let mut token = None;
        while found.len() < limit {
            let page = self
                .bucket
                .list(
                    &self.keys.blobs(),
                    start_after.as_deref(),
                    token,
                    Some(limit - found.len()),
                )
                .await?;
            for object in page.items {
                if let Some(digest) = self.keys.parse_blob(&object.key) {
                    // A missing time must not make a blob look old enough to collect.
                    found.push((digest, object.modified.unwrap_or_else(SystemTime::now)));
                }
            }
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        Ok(found)
    }

    /// Up to `limit` upload areas after `after`, in id order, each with its newest object's
    /// time (the last write).
    async fn list_uploads(
        &self,
        after: Option<&UploadId>,
        limit: usize,
    ) -> Result<Vec<(UploadId, SystemTime)>> {
        let start_after = after.map(|id| self.keys.after_area(id));
        let mut found: Vec<(UploadId, SystemTime)> = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .bucket
                .list(&self.keys.uploads(), start_after.as_deref(), token, None)
                .await?;
            for object in page.items {
                let Some((id, _)) = self.keys.parse_area_key(&object.key) else {
                    continue;
                };
                let modified = object.modified.unwrap_or_else(SystemTime::now);
                if let Some((last, newest)) = found.last_mut()
                    && *last == id
                {
                    *newest = (*newest).max(modified);
                    continue;
                }
                if found.len() == limit {
                    return Ok(found);
                }
                found.push((id, modified));
            }
            match page.next {
                Some(next) => token = Some(next),
                None => return Ok(found),
            }
        }
    }

    async fn collect_leftovers(&self, cutoff: SystemTime) -> Result<u64> {
        self.abort_abandoned_multipart(cutoff, MULTIPART_PAGE).await
    }

    async fn check_writable(&self) -> Result<()> {
        let probe = self.keys.probe();
        self.bucket
            .put(&probe, Bytes::from_static(b"probe"))
            .await?;
        Ok(self.bucket.delete(&probe).await?)
    }
}
