//! The `Cache` seam: a shared, lossy accelerator in front of the metadata store.
//!
//! Never the source of truth. Implementations turn every failure into a miss (and log it), so
//! a request never fails because the cache did. Keys and value encodings belong to the callers
//! (`registry`), which also own invalidation.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub mod memory;

#[cfg(test)]
pub(crate) mod conformance;

#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The value under `key`, or `None` on a miss, expiry or backend failure.
    async fn get(&self, key: &str) -> Option<Bytes>;

    /// Stores `value` under `key` for at most `ttl`.
    async fn set(&self, key: &str, value: Bytes, ttl: Duration);

    /// Removes `key`. After it returns, no `get` on this node sees the old value.
    async fn delete(&self, key: &str);
}
