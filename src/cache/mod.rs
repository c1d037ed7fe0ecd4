//! The `Cache` seam: a shared, lossy accelerator in front of the metadata store, and the
//! counters behind rate limits and token revocations.
//!
//! Never the source of truth. Implementations turn every failure into a miss or a no-op (and
//! log it), so a request never fails because the cache did. Keys and value encodings belong to
//! the callers (`registry`), which also own invalidation.
//!
//! Backends: [`memory`] (one node) and, with the `redis` feature, [`redis`] (shared by the
//! nodes of a cluster; docs/redis.md).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use prometheus::IntCounterVec;

pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

#[cfg(test)]
pub(crate) mod conformance;

#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The value under `key`, or `None` on a miss, expiry or backend failure.
    async fn get(&self, key: &str) -> Option<Bytes>;

    /// Stores `value` under `key` for at most `ttl` (a zero `ttl` just removes the key).
    async fn set(&self, key: &str, value: Bytes, ttl: Duration);

    /// Removes `key`. After it returns, no `get` on any node sharing this cache sees the old
    /// value: the memory cache is one node's, Redis is the cluster's. (A Redis cache that
    /// cannot reach Redis keeps the key and removes it before it uses Redis again; docs/redis.md.)
    async fn delete(&self, key: &str);

    /// Adds 1 to the counter under `key`, creating it at 1 with `ttl` when absent; later
    /// increments keep the first deadline (a fixed window). The new value, or `None` on
    /// backend failure or when `key` holds something that is not a counter.
    async fn increment(&self, key: &str, ttl: Duration) -> Option<u64>;

    /// Stores `value` under `key` for at most `ttl` unless the key is present: `Some(true)`
    /// stored, `Some(false)` already present (left unchanged), `None` on failure. Atomic: of
    /// concurrent callers on one key, one stores.
    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Duration) -> Option<bool>;
}

/// An operation, as the `op` label of `aerugo_cache_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Get,
    Set,
    Delete,
    Increment,
    SetIfAbsent,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::Delete => "delete",
            Op::Increment => "increment",
            Op::SetIfAbsent => "set_if_absent",
        }
    }
}

/// What a call came to, as the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Hit,
    Miss,
    Ok,
    /// The backend failed (or refused the command).
    Error,
    /// The backend was not asked: it failed recently.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Skipped,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Skipped => "skipped",
        }
    }

    /// A read's outcome.
    fn of_read<T>(value: &Option<T>) -> Outcome {
        if value.is_some() {
            Outcome::Hit
        } else {
            Outcome::Miss
        }
    }
}

/// Counts one backend's calls into `aerugo_cache_requests_total`.
#[derive(Clone)]
pub(crate) struct Recorder {
    requests: IntCounterVec,
    backend: &'static str,
}

impl Recorder {
    /// Records into the process-wide metrics.
    pub(crate) fn global(backend: &'static str) -> Recorder {
        Recorder {
            requests: crate::telemetry::metrics().cache_requests.clone(),
            backend,
        }
    }

    pub(crate) fn record(&self, op: Op, outcome: Outcome) {
        self.requests
            .with_label_values(&[self.backend, op.label(), outcome.label()])
            .inc();
    }

    /// Records into counters of its own, so a test reads exact counts while other tests run.
    #[cfg(test)]
    pub(crate) fn detached(backend: &'static str) -> Recorder {
        let requests = IntCounterVec::new(
            prometheus::Opts::new("cache_requests_total", "test"),
            &["backend", "op", "result"],
        )
        .expect("static metric definition");
        Recorder { requests, backend }
    }

    /// How often `op` came to `outcome`.
    #[cfg(test)]
    pub(crate) fn count(&self, op: Op, outcome: Outcome) -> u64 {
        self.requests
            .with_label_values(&[self.backend, op.label(), outcome.label()])
            .get()
    }
}
