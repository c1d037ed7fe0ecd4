//! The upload writer: bytes into part objects of exactly the part size, the remainder into the
//! tail object at the last part boundary (see `layout`).
//!
//! It holds at most one part in memory: the tail bytes carried over from the area (read when
//! the request starts) plus what arrived since. A part is stored as soon as it is full; the
//! remainder is stored by [`UploadWriter::finish`], which therefore returns only when every
//! byte written is in S3. Replacing the tail at the same key is atomic and keeps the
//! confirmed bytes as its prefix, so a request that fails at any point leaves them readable.
//!
//! The whole-blob writer (`S3BlobWriter`) holds a blob that fits in one part and puts it
//! straight onto its key: two requests (HEAD, PUT) instead of an area's six or more. A bigger
//! one becomes an ordinary area when it outgrows the part.

use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::S3BlobStore;
use super::bucket::Bucket;
use super::error::backend_error;
use super::layout::{AreaObject, Keys};
use super::settings::MAX_PARTS;
use crate::oci::{Digest, UploadId};
use crate::storage::{BlobMeta, BlobStore, BlobStoreError, BlobWriter, Result, UploadWriter};

pub(super) struct S3UploadWriter {
    bucket: Bucket,
    keys: Keys,
    id: UploadId,
    part_size: u64,
    /// Offset of the first buffered byte: always a part boundary.
    start: u64,
    buf: BytesMut,
}

impl S3UploadWriter {
    /// A writer continuing at `start + carried.len()`, `start` being the part boundary at or
    /// below the session's offset and `carried` the tail's bytes from there.
    pub(super) fn new(
        bucket: Bucket,
        keys: Keys,
        id: UploadId,
        part_size: u64,
        start: u64,
        carried: Bytes,
    ) -> S3UploadWriter {
        S3UploadWriter {
            bucket,
            keys,
            id,
            part_size,
            start,
            buf: BytesMut::from(carried.as_ref()),
        }
    }

    /// Bytes still missing from the current part. The part size is ≤ 5 GiB, so it fits.
    fn room(&self) -> usize {
        usize::try_from(self.part_size)
            .unwrap_or(usize::MAX)
            .saturating_sub(self.buf.len())
    }

    /// Stores a full part at the current boundary and moves past it.
    async fn store_part(&mut self, part: Bytes) -> Result<()> {
        if self.start / self.part_size >= MAX_PARTS {
            return Err(backend_error(format!(
                "upload {} exceeds {MAX_PARTS} parts of {} bytes (raise storage.part_size_bytes)",
                self.id, self.part_size
            )));
        }
        let key = self.keys.object(&self.id, AreaObject::Part(self.start));
        self.bucket.put(&key, part).await?;
        self.start += self.part_size;
        Ok(())
    }
}

#[async_trait]
impl UploadWriter for S3UploadWriter {
    async fn write(&mut self, mut chunk: Bytes) -> Result<()> {
        while !chunk.is_empty() {
            let room = self.room();
            // A chunk holding a whole part goes out as it is, without a copy.
            if self.buf.is_empty() && chunk.len() >= room {
                let part = chunk.split_to(room);
                self.store_part(part).await?;
                continue;
            }
            let take = room.min(chunk.len());
            if self.buf.capacity() < room {
                self.buf.reserve(room);
            }
            self.buf.extend_from_slice(&chunk.split_to(take));
            if self.room() == 0 {
                let part = self.buf.split().freeze();
                self.store_part(part).await?;
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let key = self.keys.object(&self.id, AreaObject::Tail(self.start));
        let tail = self.buf.split().freeze();
        Ok(self.bucket.put(&key, tail).await?)
    }
}

/// A blob arriving whole in one request: held in memory while it fits in one part, then
/// written to an ordinary area.
pub(super) struct S3BlobWriter {
    store: S3BlobStore,
    id: UploadId,
    held: BytesMut,
    area: Option<S3UploadWriter>,
}

impl S3BlobWriter {
    pub(super) fn new(store: S3BlobStore, id: UploadId) -> S3BlobWriter {
        S3BlobWriter {
            store,
            id,
            held: BytesMut::new(),
            area: None,
        }
    }
}

#[async_trait]
impl UploadWriter for S3BlobWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if let Some(area) = self.area.as_mut() {
            return area.write(chunk).await;
        }
        if (self.held.len() + chunk.len()) as u64 <= self.store.part_size {
            self.held.extend_from_slice(&chunk);
            return Ok(());
        }
        // Outgrown: the area's marker, then the held bytes carried as its first ones.
        self.store.create_upload(&self.id).await?;
        let area = self.area.insert(S3UploadWriter::new(
            self.store.bucket.clone(),
            self.store.keys.clone(),
            self.id.clone(),
            self.store.part_size,
            0,
            self.held.split().freeze(),
        ));
        area.write(chunk).await
    }

    async fn finish(&mut self) -> Result<()> {
        match self.area.as_mut() {
            Some(area) => area.finish().await,
            None => Ok(()),
        }
    }
}

#[async_trait]
impl BlobWriter for S3BlobWriter {
    async fn publish(self: Box<Self>, len: u64, digest: &Digest) -> Result<BlobMeta> {
        if self.area.is_some() {
            return self.store.commit_upload(&self.id, len, digest).await;
        }
        let held = self.held.len() as u64;
        if held < len {
            return Err(BlobStoreError::UploadTooShort {
                expected: len,
                actual: held,
            });
        }
        let key = self.store.keys.blob(digest);
        if let Some(existing) = self.store.bucket.head(&key).await? {
            return Ok(existing);
        }
        let mut bytes = self.held.freeze();
        bytes.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        self.store.bucket.put(&key, bytes).await?;
        Ok(BlobMeta {
            size: len,
            modified: SystemTime::now(),
        })
    }
}
