//! The edge tests' upstream: the shared fault-injecting registry
//! (`aerugo::testkit::fake_registry`), with this suite's digests as strings and its images.

use bytes::Bytes;

pub use aerugo::testkit::fake_registry::{FakeRegistry as FaultUpstream, Fault, Knobs};

use super::seed::SeedImage;
use crate::distribution::OCI_MANIFEST;

/// Starts a well-behaved upstream.
pub async fn start() -> FaultUpstream {
    FaultUpstream::start(Knobs::default()).await
}

/// Content in the suite's terms: digests as strings, [`SeedImage`]s.
pub trait Content {
    /// Stores a blob; returns its digest.
    fn add_blob(&self, bytes: impl Into<Bytes>) -> String;
    /// Stores a manifest (by digest only); returns its digest.
    fn add_manifest(&self, media_type: &str, bytes: &[u8]) -> String;
    /// Stores every blob of `image`, its manifest, and tags it.
    fn add_image(&self, repo: &str, tag: &str, image: &SeedImage);
}

impl Content for FaultUpstream {
    fn add_blob(&self, bytes: impl Into<Bytes>) -> String {
        self.put_blob(bytes.into()).to_string()
    }

    fn add_manifest(&self, media_type: &str, bytes: &[u8]) -> String {
        self.put_manifest("", None, bytes, media_type).to_string()
    }

    fn add_image(&self, repo: &str, tag: &str, image: &SeedImage) {
        for (_, bytes) in image.blobs() {
            self.put_blob(bytes);
        }
        self.put_manifest(repo, Some(tag), &image.manifest, OCI_MANIFEST);
    }
}
