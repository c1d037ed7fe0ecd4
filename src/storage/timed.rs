//! A `BlobStore` decorator recording each operation's latency, so every backend is measured
//! the same way without knowing about metrics.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;

use super::{BlobMeta, BlobStore, BlobWriter, ByteStream, Result, UploadWriter};
use crate::oci::{Digest, UploadId};
use crate::telemetry::metrics;

pub struct TimedBlobStore {
    inner: Arc<dyn BlobStore>,
}

impl TimedBlobStore {
    pub fn new(inner: Arc<dyn BlobStore>) -> TimedBlobStore {
        TimedBlobStore { inner }
    }
}

async fn timed<T>(operation: &str, fut: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = fut.await;
    metrics()
        .storage_duration
        .with_label_values(&[operation])
        .observe(started.elapsed().as_secs_f64());
    out
}

#[async_trait]
impl BlobStore for TimedBlobStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<BlobMeta>> {
        timed("stat", self.inner.stat(digest)).await
    }
    async fn open(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<ByteStream> {
        timed("open", self.inner.open(digest, range)).await
    }
    async fn redirect_url(&self, digest: &Digest) -> Result<Option<String>> {
        timed("redirect_url", self.inner.redirect_url(digest)).await
    }
    async fn delete(&self, digest: &Digest) -> Result<()> {
        timed("delete", self.inner.delete(digest)).await
    }
    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> Result<Vec<(Digest, SystemTime)>> {
        timed("list_blobs", self.inner.list_blobs(after, limit)).await
    }
    async fn check_writable(&self) -> Result<()> {
        timed("check_writable", self.inner.check_writable()).await
    }
    async fn create_upload(&self, id: &UploadId) -> Result<()> {
        timed("create_upload", self.inner.create_upload(id)).await
    }
    async fn append_upload(&self, id: &UploadId, offset: u64) -> Result<Box<dyn UploadWriter>> {
        timed("append_upload", self.inner.append_upload(id, offset)).await
    }
    async fn read_upload(&self, id: &UploadId, len: u64) -> Result<ByteStream> {
        timed("read_upload", self.inner.read_upload(id, len)).await
    }
    async fn commit_upload(&self, id: &UploadId, len: u64, digest: &Digest) -> Result<BlobMeta> {
        timed("commit_upload", self.inner.commit_upload(id, len, digest)).await
    }
    async fn receive_blob(&self, id: &UploadId) -> Result<Box<dyn BlobWriter>> {
        let writer = timed("receive_blob", self.inner.receive_blob(id)).await?;
        Ok(Box::new(TimedBlobWriter(writer)))
    }
    async fn delete_upload(&self, id: &UploadId) -> Result<()> {
        timed("delete_upload", self.inner.delete_upload(id)).await
    }
    async fn list_uploads(
        &self,
        after: Option<&UploadId>,
        limit: usize,
    ) -> Result<Vec<(UploadId, SystemTime)>> {
        timed("list_uploads", self.inner.list_uploads(after, limit)).await
    }
    async fn collect_leftovers(&self, cutoff: SystemTime) -> Result<u64> {
        timed("collect_leftovers", self.inner.collect_leftovers(cutoff)).await
    }
}

/// Times the publish of a whole blob, the step [`BlobStore::commit_upload`] is for a session.
struct TimedBlobWriter(Box<dyn BlobWriter>);

#[async_trait]
impl UploadWriter for TimedBlobWriter {
    async fn write(&mut self, chunk: bytes::Bytes) -> Result<()> {
        self.0.write(chunk).await
    }
    async fn finish(&mut self) -> Result<()> {
        self.0.finish().await
    }
}

#[async_trait]
impl BlobWriter for TimedBlobWriter {
    async fn publish(self: Box<Self>, len: u64, digest: &Digest) -> Result<BlobMeta> {
        timed("publish_blob", self.0.publish(len, digest)).await
    }
}
