//! Bearer tokens per (upstream, scope), kept until shortly before they expire.
//!
//! A concurrent map (moka) rather than a mutex: lookups never wait for each other, and a
//! miss is single-flight per key, so a hundred requests arriving at once for a cold
//! repository make one token request, not a hundred.
//!
//! Expiry is measured on our own clock from the moment the token request was *sent*, which is
//! never later than the moment the server issued the token, so a token is never kept past its
//! life even when our clock and the token server's disagree (`issued_at` would import their
//! clock skew; it is ignored). A token the upstream rejects anyway (revoked, or handed out
//! already old) is dropped with [`TokenCache::invalidate_if`] and fetched again.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::ops::compute::Op;

use super::UpstreamError;

/// Lifetime a token gets when the token response says nothing (the Docker token spec).
pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(60);

/// Tokens are dropped this long before they expire, so a request does not set out with a token
/// that dies in flight…
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// …but never more than this fraction of their life (1/4), so short-lived tokens are still
/// reused at all.
const MAX_MARGIN_FRACTION: u32 = 4;

/// Upper bound on any token's cached life, whatever the server claims.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Distinct (upstream, scope) pairs kept; each entry is a few KiB at most.
const MAX_ENTRIES: u64 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    /// The upstream's configured name: two upstreams with different credentials on the same
    /// token realm must never share tokens.
    pub upstream: Arc<str>,
    /// `repository:<name>:pull`.
    pub scope: String,
}

/// A token and the instant it stops being offered.
#[derive(Debug, Clone)]
pub struct CachedToken {
    pub token: Arc<str>,
    pub valid_until: Instant,
}

impl CachedToken {
    /// A token obtained by a request sent at `sent_at` whose response said `expires_in`
    /// seconds (`None`: the spec's default of 60 s).
    pub fn new(token: Arc<str>, sent_at: Instant, expires_in: Option<Duration>) -> Self {
        CachedToken {
            token,
            valid_until: sent_at + cache_lifetime(expires_in),
        }
    }
}

/// How long a token with the given `expires_in` is reused: its life minus the margin.
pub fn cache_lifetime(expires_in: Option<Duration>) -> Duration {
    let life = expires_in.unwrap_or(DEFAULT_EXPIRES_IN).min(MAX_LIFETIME);
    life - EXPIRY_MARGIN.min(life / MAX_MARGIN_FRACTION)
}

struct UntilValid;

impl Expiry<TokenKey, CachedToken> for UntilValid {
    fn expire_after_create(
        &self,
        _: &TokenKey,
        value: &CachedToken,
        now: Instant,
    ) -> Option<Duration> {
        Some(value.valid_until.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &TokenKey,
        value: &CachedToken,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.valid_until.saturating_duration_since(now))
    }
}

/// Cheap to clone; clones share the entries.
#[derive(Clone)]
pub struct TokenCache {
    entries: moka::future::Cache<TokenKey, CachedToken>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::new()
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl TokenCache {
    pub fn new() -> Self {
        let entries = moka::future::Cache::builder()
            .max_capacity(MAX_ENTRIES)
            .expire_after(UntilValid)
            .build();
        TokenCache { entries }
    }

    /// A still-valid token for `key`, if one is cached.
    pub async fn get(&self, key: &TokenKey) -> Option<Arc<str>> {
        let cached = self.entries.get(key).await?;
        (cached.valid_until > Instant::now()).then_some(cached.token)
    }

    /// The cached token for `key`, or the one `fetch` obtains. Concurrent callers for one key
    /// share a single `fetch`; its error is handed to all of them and not cached.
    pub async fn get_or_fetch<F>(&self, key: &TokenKey, fetch: F) -> Result<Arc<str>, UpstreamError>
    where
        F: Future<Output = Result<CachedToken, UpstreamError>>,
    {
        if let Some(token) = self.get(key).await {
            return Ok(token);
        }
        self.entries
            .try_get_with(key.clone(), fetch)
            .await
            .map(|cached| cached.token)
            .map_err(|shared| (*shared).clone())
    }

    /// Drops the token for `key` if it is still `rejected`; a fresher token another request
    /// fetched meanwhile stays.
    pub async fn invalidate_if(&self, key: &TokenKey, rejected: &str) {
        self.entries
            .entry(key.clone())
            .and_compute_with(|entry| async move {
                match entry {
                    Some(e) if &*e.value().token == rejected => Op::Remove,
                    _ => Op::Nop,
                }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn key(scope: &str) -> TokenKey {
        TokenKey {
            upstream: "hub".into(),
            scope: scope.into(),
        }
    }

    #[test]
    fn lifetime_keeps_a_margin_proportional_to_short_lives() {
        assert_eq!(cache_lifetime(None), Duration::from_secs(50));
        assert_eq!(
            cache_lifetime(Some(Duration::from_secs(300))),
            Duration::from_secs(290)
        );
        assert_eq!(
            cache_lifetime(Some(Duration::from_secs(2))),
            Duration::from_millis(1500)
        );
        assert_eq!(cache_lifetime(Some(Duration::ZERO)), Duration::ZERO);
        assert_eq!(
            cache_lifetime(Some(Duration::from_secs(u64::MAX / 4))),
            MAX_LIFETIME - EXPIRY_MARGIN
        );
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_fetch() {
        let cache = TokenCache::new();
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            fetches.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(CachedToken::new("t1".into(), Instant::now(), None))
        };
        let k = key("repository:a:pull");
        let results =
            futures_util::future::join_all((0..16).map(|_| cache.get_or_fetch(&k, fetch()))).await;
        assert!(results.iter().all(|r| r.as_deref() == Ok("t1")));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // Another scope is another entry.
        let other = cache.get_or_fetch(&key("repository:b:pull"), fetch()).await;
        assert_eq!(other.as_deref(), Ok("t1"));
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn errors_are_shared_but_not_cached_and_expired_tokens_are_not_served() {
        let cache = TokenCache::new();
        let k = key("repository:a:pull");
        let failed = cache
            .get_or_fetch(&k, async { Err(UpstreamError::Unauthorized) })
            .await;
        assert_eq!(failed, Err(UpstreamError::Unauthorized));
        let ok = cache
            .get_or_fetch(&k, async {
                Ok(CachedToken::new(
                    "t".into(),
                    Instant::now(),
                    Some(Duration::ZERO),
                ))
            })
            .await;
        assert_eq!(
            ok.as_deref(),
            Ok("t"),
            "a token is used once even when it may not be kept"
        );
        assert_eq!(cache.get(&k).await, None);
    }

    #[tokio::test]
    async fn invalidate_if_only_drops_the_rejected_token() {
        let cache = TokenCache::new();
        let k = key("repository:a:pull");
        let fresh = || async { Ok(CachedToken::new("new".into(), Instant::now(), None)) };
        cache.get_or_fetch(&k, fresh()).await.unwrap();
        cache.invalidate_if(&k, "old").await;
        assert_eq!(cache.get(&k).await.as_deref(), Some("new"));
        cache.invalidate_if(&k, "new").await;
        assert_eq!(cache.get(&k).await, None);
    }
}
