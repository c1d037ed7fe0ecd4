//! The upload writer: bytes into part objects of exactly the part size, the remainder into the
//! tail object at the last part boundary (see `layout`).
//!
//! It holds at most one part in memory: the tail bytes carried over from the area (read when
//! the request starts) plus what arrived since. A part is stored as soon as it is full; the
//! remainder is stored by [`UploadWriter::finish`], which therefore returns only when every
//! byte written is in S3. Replacing the tail at the same key is atomic and keeps the
//! confirmed bytes as its prefix, so a request that fails at any point leaves them readable.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::bucket::Bucket;
use super::error::backend_error;
use super::layout::{AreaObject, Keys};
use super::settings::MAX_PARTS;
use crate::oci::UploadId;
use crate::storage::{Result, UploadWriter};

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

    async fn finish(mut self: Box<Self>) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let key = self.keys.object(&self.id, AreaObject::Tail(self.start));
        let tail = self.buf.split().freeze();
        Ok(self.bucket.put(&key, tail).await?)
    }
}
