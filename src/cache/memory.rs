//! `MemoryCache`: the in-process [`Cache`], bounded by an approximate byte budget, with a TTL
//! per entry.
//!
//! Built on moka, which evicts by TinyLFU under the weight limit and expires entries on its
//! timer wheel. Nothing here can fail, so every call is a plain hit, miss or store.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use moka::Expiry;

use super::Cache;

/// Bookkeeping moka and the map spend per entry, counted so that many tiny values cannot
/// exceed the budget unnoticed.
const ENTRY_OVERHEAD: u64 = 64;

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Duration,
}

/// Expires each entry `ttl` after it was last written. moka's default keeps the old deadline
/// on overwrite, which would let a `set` with a longer TTL expire early (or a shorter one
/// late).
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

fn weight(key: &str, value: &Bytes) -> u64 {
    key.len() as u64 + value.len() as u64 + ENTRY_OVERHEAD
}

/// An in-process cache holding at most about `max_bytes` of keys and values.
pub struct MemoryCache {
    entries: moka::future::Cache<String, Entry>,
    max_bytes: u64,
}

impl MemoryCache {
    pub fn new(max_bytes: u64) -> MemoryCache {
        let entries = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Entry| {
                u32::try_from(weight(key, &entry.value)).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        MemoryCache { entries, max_bytes }
    }
}

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("max_bytes", &self.max_bytes)
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Option<Bytes> {
        self.entries.get(key).await.map(|entry| entry.value)
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) {
        // moka would admit an entry larger than the whole budget until its next maintenance
        // pass; refusing it up front keeps the bound strict. The old value must still go,
        // since the caller meant to replace it.
        if ttl.is_zero() || weight(key, &value) > self.max_bytes {
            self.entries.invalidate(key).await;
            return;
        }
        self.entries
            .insert(key.to_owned(), Entry { value, ttl })
            .await;
    }

    async fn delete(&self, key: &str) {
        self.entries.invalidate(key).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::conformance;

    #[tokio::test]
    async fn conformance_suite() {
        conformance::run_all(&MemoryCache::new(64 << 20)).await;
    }

    #[tokio::test]
    async fn stays_within_the_byte_budget() {
        let budget = 64 * 1024;
        let cache = MemoryCache::new(budget);
        let value = Bytes::from(vec![1u8; 1024]);
        for i in 0..1000 {
            cache
                .set(&format!("key-{i}"), value.clone(), Duration::from_secs(60))
                .await;
        }
        cache.entries.run_pending_tasks().await;
        assert!(cache.entries.weighted_size() <= budget);
        assert!(cache.entries.entry_count() > 0);
    }

    #[tokio::test]
    async fn oversized_value_is_not_stored_and_replaces_the_old_one() {
        let cache = MemoryCache::new(1024);
        let ttl = Duration::from_secs(60);
        cache.set("k", Bytes::from_static(b"small"), ttl).await;
        assert!(cache.get("k").await.is_some());
        cache.set("k", Bytes::from(vec![0u8; 2048]), ttl).await;
        assert_eq!(cache.get("k").await, None);
    }

    #[tokio::test]
    async fn extreme_ttls() {
        let cache = MemoryCache::new(1 << 20);
        cache
            .set("zero", Bytes::from_static(b"v"), Duration::ZERO)
            .await;
        assert_eq!(cache.get("zero").await, None);
        cache
            .set("max", Bytes::from_static(b"v"), Duration::MAX)
            .await;
        assert_eq!(cache.get("max").await, Some(Bytes::from_static(b"v")));
    }
}
