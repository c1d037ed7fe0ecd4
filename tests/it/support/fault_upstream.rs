//! The edge tests' upstream: the shared fault-injecting registry
//! (`aerugo::testkit::fake_registry`), with this suite's digests as strings. Images go in with
//! its own `put_image`.

use bytes::Bytes;

pub use aerugo::testkit::fake_registry::{FakeRegistry as FaultUpstream, Fault, Knobs};

/// Starts a well-behaved upstream.
pub async fn start() -> FaultUpstream {
    FaultUpstream::start(Knobs::default()).await
}

/// Content in the suite's terms: digests as strings.
pub trait Content {
    /// Stores a blob; returns its digest.
    fn add_blob(&self, bytes: impl Into<Bytes>) -> String;
    /// Stores a manifest (by digest only); returns its digest.
    fn add_manifest(&self, media_type: &str, bytes: &[u8]) -> String;
}

impl Content for FaultUpstream {
    fn add_blob(&self, bytes: impl Into<Bytes>) -> String {
        self.put_blob(bytes.into()).to_string()
    }

    fn add_manifest(&self, media_type: &str, bytes: &[u8]) -> String {
        self.put_manifest("", None, bytes, media_type).to_string()
    }
}
