//! The S3 requests the store makes, one small method each, every failure sorted by
//! [`classify`]. Nothing here knows the key layout.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::{ByteStream as SdkByteStream, DateTime};
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, MultipartUpload, ObjectIdentifier,
};
use bytes::Bytes;

use super::error::{S3Failure, backend_error, classify, not_implemented};
use crate::storage::{BlobMeta, BlobStoreError, ByteStream};

/// Keys per `DeleteObjects` request (S3's limit).
const DELETE_BATCH: usize = 1000;

/// One bucket and the clients that reach it.
#[derive(Debug, Clone)]
pub(super) struct Bucket {
    pub(super) client: Client,
    /// The same client with a longer attempt timeout, for server-side copies and completing
    /// multipart uploads, whose duration grows with the bytes moved.
    pub(super) assembly: Client,
    pub(super) name: String,
}

/// One object of a listing.
#[derive(Debug, Clone)]
pub(super) struct Listed {
    pub(super) key: String,
    pub(super) size: u64,
    pub(super) modified: Option<SystemTime>,
}

/// One page of a listing and the token for the next, if any.
#[derive(Debug, Default)]
pub(super) struct Page<T> {
    pub(super) items: Vec<T>,
    pub(super) next: Option<String>,
}

/// A multipart upload in progress.
#[derive(Debug, Clone)]
pub(super) struct OpenMultipart {
    pub(super) key: String,
    pub(super) upload_id: String,
    pub(super) initiated: Option<SystemTime>,
}

type Result<T, E = S3Failure> = std::result::Result<T, E>;

/// Where a listing of multipart uploads goes on: after `key`'s upload `upload_id`, or after
/// every upload of `key` when the server sends no upload id (Garage does, when a page ends
/// with a key's last upload).
#[derive(Debug, Clone)]
pub(super) struct MultipartMarker {
    pub(super) key: String,
    pub(super) upload_id: Option<String>,
}

/// Multipart uploads in progress, and where the next page starts.
pub(super) type MultipartPage = (Vec<OpenMultipart>, Option<MultipartMarker>);

/// A request the SDK refused to build (a missing required field).
fn unbuildable(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> S3Failure {
    S3Failure::Failed(BlobStoreError::Backend(e.into()))
}

fn time(t: Option<&DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

fn size(len: Option<i64>) -> u64 {
    len.and_then(|l| u64::try_from(l).ok()).unwrap_or(0)
}

/// `bytes=a-b` for a non-empty half-open range.
fn http_range(range: &Range<u64>) -> String {
    format!("bytes={}-{}", range.start, range.end.saturating_sub(1))
}

/// `CopySource` is `bucket/key`, URL-encoded except for the `/` separators.
fn copy_source(bucket: &str, key: &str) -> String {
    let mut out = String::with_capacity(bucket.len() + key.len() + 1);
    for byte in bucket.bytes().chain([b'/']).chain(key.bytes()) {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl Bucket {
    pub(super) async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(SdkByteStream::from(body))
            .send()
            .await
            .map_err(|e| classify("PutObject", e))?;
        Ok(())
    }

    /// Streams an object, or the non-empty `range` of it. The stream fails, rather than
    /// ending early, when the server sends fewer bytes than it announced, and the call fails
    /// when it announces fewer than the range asks for (a range past the end).
    pub(super) async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let output = self
            .client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .set_range(range.as_ref().map(http_range))
            .send()
            .await
            .map_err(|e| classify("GetObject", e))?;
        if let Some(range) = range {
            let announced = size(output.content_length());
            if announced != range.end - range.start {
                return Err(backend_error(format!(
                    "range {}..{} of {key}: the server has only {announced} of those bytes",
                    range.start, range.end
                ))
                .into());
            }
        }
        Ok(body_stream(output.body))
    }

    /// A small object (a marker, a tail prefix), whole in memory.
    pub(super) async fn get_bytes(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let mut stream = self.get(key, range).await?;
        let mut out = Vec::new();
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            let chunk = chunk.map_err(|e| S3Failure::Failed(e.into()))?;
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }

    /// `None` when absent.
    pub(super) async fn head(&self, key: &str) -> Result<Option<BlobMeta>> {
        match self
            .client
            .head_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
        {
            Ok(output) => Ok(Some(BlobMeta {
                size: size(output.content_length()),
                modified: time(output.last_modified()).unwrap_or_else(SystemTime::now),
            })),
            Err(e) => match classify("HeadObject", e) {
                S3Failure::Missing => Ok(None),
                failed => Err(failed),
            },
        }
    }

    /// One page of the keys under `prefix`, in key order, after `start_after`: at most
    /// `max_keys`, S3's limit of 1000 when `None`.
    pub(super) async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        token: Option<String>,
        max_keys: Option<usize>,
    ) -> Result<Page<Listed>> {
        let output = self
            .client
            .list_objects_v2()
            .bucket(&self.name)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_owned))
            .set_continuation_token(token)
            .set_max_keys(max_keys.map(|n| i32::try_from(n.min(1000)).unwrap_or(1000)))
            .send()
            .await
            .map_err(|e| classify("ListObjectsV2", e))?;
        let items = output
            .contents()
            .iter()
            .filter_map(|object| {
                Some(Listed {
                    key: object.key()?.to_owned(),
                    size: size(object.size()),
                    modified: time(object.last_modified()),
                })
            })
            .collect();
        let next = if output.is_truncated() == Some(true) {
            output.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Every key under `prefix` (one upload area: a handful of objects, or one per part).
    pub(super) async fn list_all(&self, prefix: &str) -> Result<Vec<Listed>> {
        let mut all = Vec::new();
        let mut token = None;
        loop {
            let page = self.list(prefix, None, token, None).await?;
            all.extend(page.items);
            match page.next {
                Some(next) => token = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Deleting an absent key succeeds (S3 answers 204 either way).
    pub(super) async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .map_err(|e| classify("DeleteObject", e))?;
        Ok(())
    }

    /// Deletes `keys` in batches; fails if any key could not be deleted.
    pub(super) async fn delete_many(&self, keys: &[String]) -> Result<()> {
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(unbuildable)?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(unbuildable)?;
            let output = self
                .client
                .delete_objects()
                .bucket(&self.name)
                .delete(delete)
                .send()
                .await
                .map_err(|e| classify("DeleteObjects", e))?;
            if let Some(failed) = output.errors().first() {
                return Err(backend_error(format!(
                    "DeleteObjects could not delete {}: {}",
                    failed.key().unwrap_or("?"),
                    failed.message().unwrap_or("no reason given")
                ))
                .into());
            }
        }
        Ok(())
    }

    /// Server-side copy of a whole object of at most 5 GiB.
    pub(super) async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.assembly
            .copy_object()
            .bucket(&self.name)
            .key(to)
            .copy_source(copy_source(&self.name, from))
            .send()
            .await
            .map_err(|e| classify("CopyObject", e))?;
        Ok(())
    }

    pub(super) async fn start_multipart(&self, key: &str) -> Result<String> {
        let output = self
            .client
            .create_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .map_err(|e| classify("CreateMultipartUpload", e))?;
        output.upload_id().map(str::to_owned).ok_or_else(|| {
            backend_error("CreateMultipartUpload answered without an upload id").into()
        })
    }

    /// Copies the first `len` bytes of `source` as part `number` of the multipart upload.
    pub(super) async fn copy_part(
        &self,
        multipart: &OpenMultipart,
        number: i32,
        source: &str,
        len: u64,
    ) -> Result<CompletedPart> {
        let output = self
            .assembly
            .upload_part_copy()
            .bucket(&self.name)
            .key(&multipart.key)
            .upload_id(&multipart.upload_id)
            .part_number(number)
            .copy_source(copy_source(&self.name, source))
            .copy_source_range(http_range(&(0..len)))
            .send()
            .await
            .map_err(|e| classify("UploadPartCopy", e))?;
        let etag = output
            .copy_part_result()
            .and_then(|r| r.e_tag())
            .ok_or_else(|| backend_error("UploadPartCopy answered without an ETag"))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .e_tag(etag)
            .build())
    }

    /// Makes the parts the object at the multipart upload's key, atomically.
    pub(super) async fn complete(
        &self,
        multipart: &OpenMultipart,
        parts: Vec<CompletedPart>,
    ) -> Result<()> {
        self.assembly
            .complete_multipart_upload()
            .bucket(&self.name)
            .key(&multipart.key)
            .upload_id(&multipart.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify("CompleteMultipartUpload", e))?;
        Ok(())
    }

    /// Aborting an upload that is already gone (completed, aborted) succeeds.
    pub(super) async fn abort(&self, multipart: &OpenMultipart) -> Result<()> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.name)
            .key(&multipart.key)
            .upload_id(&multipart.upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match classify("AbortMultipartUpload", e) {
                S3Failure::Missing => Ok(()),
                failed => Err(failed),
            },
        }
    }

    /// One page of at most `max_uploads` multipart uploads in progress under `prefix` and
    /// the marker of the next; `None` when the server cannot list them.
    pub(super) async fn list_multipart(
        &self,
        prefix: &str,
        marker: Option<MultipartMarker>,
        max_uploads: i32,
    ) -> Result<Option<MultipartPage>> {
        let (key_marker, id_marker) = marker.map(|m| (m.key, m.upload_id)).unzip();
        let output = match self
            .client
            .list_multipart_uploads()
            .bucket(&self.name)
            .prefix(prefix)
            .set_key_marker(key_marker)
            .set_upload_id_marker(id_marker.flatten())
            .max_uploads(max_uploads)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if not_implemented(&e) => return Ok(None),
            Err(e) => return Err(classify("ListMultipartUploads", e)),
        };
        let uploads = output.uploads().iter().filter_map(open_multipart).collect();
        let next = match (output.is_truncated(), output.next_key_marker()) {
            (Some(true), Some(key)) => Some(MultipartMarker {
                key: key.to_owned(),
                upload_id: output.next_upload_id_marker().map(str::to_owned),
            }),
            _ => None,
        };
        Ok(Some((uploads, next)))
    }

    /// A URL that fetches the object without credentials until `expiry` has passed.
    pub(super) async fn presigned_get(&self, key: &str, expiry: Duration) -> Result<String> {
        let config = PresigningConfig::expires_in(expiry).map_err(unbuildable)?;
        let request = self
            .client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| classify("presign GetObject", e))?;
        Ok(request.uri().to_owned())
    }
}

fn open_multipart(upload: &MultipartUpload) -> Option<OpenMultipart> {
    Some(OpenMultipart {
        key: upload.key()?.to_owned(),
        upload_id: upload.upload_id()?.to_owned(),
        initiated: time(upload.initiated()),
    })
}

/// The SDK's body as the store's byte stream. Transport errors become stream errors, so a
/// response that breaks off aborts the client's response instead of ending it short.
fn body_stream(body: SdkByteStream) -> ByteStream {
    Box::pin(futures_util::stream::try_unfold(
        body,
        |mut body| async move {
            loop {
                match body.try_next().await {
                    Ok(Some(chunk)) if chunk.is_empty() => continue,
                    Ok(Some(chunk)) => return Ok(Some((chunk, body))),
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(std::io::Error::other(e)),
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_are_url_encoded_except_slashes() {
        assert_eq!(
            copy_source("bkt", "a b/uploads/x+y/tail-00ff"),
            "bkt/a%20b/uploads/x%2By/tail-00ff"
        );
        assert_eq!(copy_source("b", "ü"), "b/%C3%BC");
    }

    #[test]
    fn ranges_are_inclusive_on_the_wire() {
        assert_eq!(http_range(&(0..1)), "bytes=0-0");
        assert_eq!(http_range(&(5..10)), "bytes=5-9");
    }
}
