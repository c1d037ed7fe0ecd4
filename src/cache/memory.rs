//! `MemoryCache`: the in-process [`Cache`], bounded by an approximate byte budget, with a TTL
//! per entry.
//!
//! Built on moka, which evicts by TinyLFU under the weight limit and expires entries on its
//! timer wheel; its per-key compute makes `increment` and `set_if_absent` atomic. Counters are
//! stored as decimal text, as Redis stores them. Nothing here can fail except an `increment`
//! of a value that is not a counter.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use moka::Expiry;
use moka::ops::compute::{CompResult, Op as Compute};

use super::{Cache, Op, Outcome, Recorder};

/// Bookkeeping moka and the map spend per entry, counted so that many tiny values cannot
/// exceed the budget unnoticed.
const ENTRY_OVERHEAD: u64 = 64;

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Duration,
    deadline: Deadline,
}

/// What a write does to the entry's expiry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// `ttl` from now (`set`, and every creation).
    Restart,
    /// Unchanged (`increment` of an existing counter: a fixed window).
    Keep,
}

/// Expires each entry `ttl` after it was last written, or keeps the deadline for counter
/// updates. moka's default keeps the old deadline on every overwrite, which would let a `set`
/// with a longer TTL expire early (or a shorter one late).
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
        remaining: Option<Duration>,
    ) -> Option<Duration> {
        match entry.deadline {
            Deadline::Restart => Some(entry.ttl),
            Deadline::Keep => remaining,
        }
    }
}

fn weight(key: &str, value: &Bytes) -> u64 {
    key.len() as u64 + value.len() as u64 + ENTRY_OVERHEAD
}

fn parse_counter(value: &Bytes) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// An in-process cache holding at most about `max_bytes` of keys and values.
pub struct MemoryCache {
    entries: moka::future::Cache<String, Entry>,
    max_bytes: u64,
    recorder: Recorder,
}

impl MemoryCache {
    pub fn new(max_bytes: u64) -> MemoryCache {
        MemoryCache::with_recorder(max_bytes, Recorder::global("memory"))
    }

    fn with_recorder(max_bytes: u64, recorder: Recorder) -> MemoryCache {
        let entries = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Entry| {
                u32::try_from(weight(key, &entry.value)).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        MemoryCache {
            entries,
            max_bytes,
            recorder,
        }
    }

    /// moka would admit an entry larger than the whole budget until its next maintenance
    /// pass; refusing it up front keeps the bound strict.
    fn fits(&self, key: &str, value: &Bytes) -> bool {
        weight(key, value) <= self.max_bytes
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
        let value = self.entries.get(key).await.map(|entry| entry.value);
        self.recorder.record(Op::Get, Outcome::of_read(&value));
        value
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) {
        self.recorder.record(Op::Set, Outcome::Ok);
        // An entry that cannot be kept must still replace the old value, since the caller
        // meant to replace it.
        if ttl.is_zero() || !self.fits(key, &value) {
            self.entries.invalidate(key).await;
            return;
        }
        let deadline = Deadline::Restart;
        self.entries
            .insert(
                key.to_owned(),
                Entry {
                    value,
                    ttl,
                    deadline,
                },
            )
            .await;
    }

    async fn delete(&self, key: &str) {
        self.recorder.record(Op::Delete, Outcome::Ok);
        self.entries.invalidate(key).await;
    }

    async fn increment(&self, key: &str, ttl: Duration) -> Option<u64> {
        let result = self
            .entries
            .entry(key.to_owned())
            .and_compute_with(|current| {
                let next = match current {
                    None => Some(Entry {
                        value: Bytes::from_static(b"1"),
                        ttl,
                        deadline: Deadline::Restart,
                    }),
                    Some(current) => {
                        let current = current.into_value();
                        parse_counter(&current.value)
                            .and_then(|n| n.checked_add(1))
                            .map(|n| Entry {
                                value: Bytes::from(n.to_string()),
                                ttl: current.ttl,
                                deadline: Deadline::Keep,
                            })
                    }
                };
                std::future::ready(next.map_or(Compute::Nop, Compute::Put))
            })
            .await;
        let count = match result {
            CompResult::Inserted(entry) | CompResult::ReplacedWith(entry) => {
                parse_counter(&entry.into_value().value)
            }
            _ => None,
        };
        let outcome = if count.is_some() {
            Outcome::Ok
        } else {
            Outcome::Error
        };
        self.recorder.record(Op::Increment, outcome);
        count
    }

    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Duration) -> Option<bool> {
        if !self.fits(key, &value) {
            self.recorder.record(Op::SetIfAbsent, Outcome::Error);
            return None;
        }
        self.recorder.record(Op::SetIfAbsent, Outcome::Ok);
        let result = self
            .entries
            .entry(key.to_owned())
            .and_compute_with(|current| {
                std::future::ready(match current {
                    Some(_) => Compute::Nop,
                    None => Compute::Put(Entry {
                        value,
                        ttl,
                        deadline: Deadline::Restart,
                    }),
                })
            })
            .await;
        Some(matches!(result, CompResult::Inserted(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::conformance::cache_conformance;

    async fn conformance_cache() -> Option<Box<dyn Cache>> {
        Some(Box::new(MemoryCache::new(64 << 20)))
    }

    cache_conformance!(conformance_cache);

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
        // set_if_absent cannot promise to keep it either.
        let big = Bytes::from(vec![0u8; 2048]);
        assert_eq!(cache.set_if_absent("k2", big, ttl).await, None);
    }

    #[tokio::test]
    async fn extreme_ttls() {
        let cache = MemoryCache::new(1 << 20);
        cache
            .set("max", Bytes::from_static(b"v"), Duration::MAX)
            .await;
        assert_eq!(cache.get("max").await, Some(Bytes::from_static(b"v")));
        assert_eq!(cache.increment("n", Duration::MAX).await, Some(1));
        assert_eq!(cache.increment("n", Duration::MAX).await, Some(2));
    }

    #[tokio::test]
    async fn a_counter_at_the_limit_fails_instead_of_wrapping() {
        let cache = MemoryCache::new(1 << 20);
        let ttl = Duration::from_secs(60);
        cache.set("n", Bytes::from(u64::MAX.to_string()), ttl).await;
        assert_eq!(cache.increment("n", ttl).await, None);
        assert_eq!(
            cache.get("n").await,
            Some(Bytes::from(u64::MAX.to_string()))
        );
    }

    #[tokio::test]
    async fn counts_every_call_by_operation_and_result() {
        let recorder = Recorder::detached("memory");
        let cache = MemoryCache::with_recorder(1 << 20, recorder.clone());
        let ttl = Duration::from_secs(60);
        assert_eq!(cache.get("k").await, None);
        cache.set("k", Bytes::from_static(b"v"), ttl).await;
        assert!(cache.get("k").await.is_some());
        assert!(cache.get("k").await.is_some());
        cache.delete("k").await;
        assert_eq!(cache.increment("n", ttl).await, Some(1));
        assert_eq!(cache.increment("k2", ttl).await, Some(1));
        cache.set("text", Bytes::from_static(b"x"), ttl).await;
        assert_eq!(cache.increment("text", ttl).await, None);
        assert_eq!(
            cache.set_if_absent("s", Bytes::new(), ttl).await,
            Some(true)
        );

        let count = |op, outcome| recorder.count(op, outcome);
        assert_eq!(count(Op::Get, Outcome::Miss), 1);
        assert_eq!(count(Op::Get, Outcome::Hit), 2);
        assert_eq!(count(Op::Set, Outcome::Ok), 2);
        assert_eq!(count(Op::Delete, Outcome::Ok), 1);
        assert_eq!(count(Op::Increment, Outcome::Ok), 2);
        assert_eq!(count(Op::Increment, Outcome::Error), 1);
        assert_eq!(count(Op::SetIfAbsent, Outcome::Ok), 1);
    }
}
