//! Confirmations: which cached digests the edge may serve, under which repository of which
//! origin, and to whom.
//!
//! The disk cache is keyed by digest alone, which is right for bytes and says nothing about who
//! may read them: a blob cached for one repository (one tenant, one upstream) must not be
//! served under another, nor long after the origin stopped showing it. So cached bytes go out
//! only for a [`ConfirmKey`] (origin, repository, digest, caller) the origin confirmed within
//! the fresh window (`confirm_ttl_seconds`); an older confirmation, within the stale window
//! (`confirm_stale_seconds`), counts only while the origin cannot be asked.
//!
//! The store is in memory and bounded: a lost confirmation costs one question to the origin.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use moka::Expiry;
use sha2::{Digest as _, Sha256};

use crate::oci::{Digest, RepoName};
use crate::telemetry::metrics;

/// Who asked, as far as the origin's answer may differ between askers. An opaque hash: the
/// credential itself is never kept, compared or logged. A caller is the subject of a bearer
/// token the gateway verified (so every token of one account shares its confirmations), or
/// else the `Authorization` header it sends.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Caller([u8; 32]);

impl Caller {
    /// Whoever sends no credentials. Also a mirror's only caller: its upstreams see the edge
    /// and its own credentials, never the client.
    pub const ANONYMOUS: Caller = Caller([0; 32]);

    /// The caller that sends this `Authorization` header (none: anonymous). The hash is
    /// domain-separated, so a later kind of caller key cannot collide with this one.
    pub fn from_authorization(header: Option<&HeaderValue>) -> Caller {
        match header {
            None => Caller::ANONYMOUS,
            Some(value) => {
                Caller::hashed(b"aerugo-edge caller by authorization\0", value.as_bytes())
            }
        }
    }

    /// The account a verified token names (`sub`; empty for an anonymous token).
    pub fn from_subject(subject: &str) -> Caller {
        Caller::hashed(b"aerugo-edge caller by token subject\0", subject.as_bytes())
    }

    fn hashed(domain: &[u8], value: &[u8]) -> Caller {
        let mut hasher = Sha256::new();
        hasher.update(domain);
        hasher.update(value);
        Caller(hasher.finalize().into())
    }
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Caller::ANONYMOUS {
            f.write_str("Caller(anonymous)")
        } else {
            f.write_str("Caller(credentialed)")
        }
    }
}

/// A client's credentials as a gateway passes them to a core when it asks on the client's
/// behalf: its `Authorization` header and the `X-Forwarded-*` the gateway sets. Held for one
/// request; `Debug` shows no value.
#[derive(Clone, Default)]
pub struct ClientCredentials {
    pub authorization: Option<HeaderValue>,
    pub forwarded: Vec<(HeaderName, HeaderValue)>,
}

impl ClientCredentials {
    pub fn caller(&self) -> Caller {
        Caller::from_authorization(self.authorization.as_ref())
    }

    /// The headers to send the core.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(authorization) = &self.authorization {
            headers.insert(http::header::AUTHORIZATION, authorization.clone());
        }
        for (name, value) in &self.forwarded {
            headers.insert(name.clone(), value.clone());
        }
        headers
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("caller", &self.caller())
            .finish_non_exhaustive()
    }
}

/// What one confirmation is about: `origin` showed `digest` in `repo` to `caller`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfirmKey {
    /// The upstream's name (mirror), or one name for all the cores of a gateway: they serve
    /// one registry.
    pub origin: Arc<str>,
    pub repo: RepoName,
    pub digest: Digest,
    pub caller: Caller,
}

/// What the store knows about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Confirmed at this time, within the fresh window: serve without asking.
    Fresh(SystemTime),
    /// Confirmed at this time, past the fresh window but within the stale one: serve only
    /// when the origin cannot be asked.
    Stale(SystemTime),
    /// Never confirmed, or too long ago: ask the origin, and refuse when it cannot answer.
    Unknown,
}

/// How a read's admission went, for `aerugo_edge_confirmations_total{outcome}`.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// A fresh confirmation was held; the origin was not asked.
    Hit,
    /// The origin was asked and confirmed.
    Confirmed,
    /// The origin was asked and refused (not found, not allowed).
    Refused,
    /// The origin could not be asked; a stale confirmation let the bytes go out.
    Stale,
    /// The origin could not be asked and no confirmation was recent enough.
    Unavailable,
}

impl Outcome {
    pub fn count(self) {
        let label = match self {
            Outcome::Hit => "hit",
            Outcome::Confirmed => "miss",
            Outcome::Refused => "refused",
            Outcome::Stale => "stale",
            Outcome::Unavailable => "unavailable",
        };
        metrics()
            .edge
            .confirmations
            .with_label_values(&[label])
            .inc();
    }
}

/// The confirmations the edge holds, bounded in number, each dropped when it leaves the stale
/// window.
pub struct Confirmations {
    entries: moka::sync::Cache<ConfirmKey, SystemTime>,
    fresh_for: Duration,
    stale_for: Duration,
}

impl fmt::Debug for Confirmations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Confirmations")
            .field("entries", &self.entries.entry_count())
            .field("fresh_for", &self.fresh_for)
            .field("stale_for", &self.stale_for)
            .finish()
    }
}

/// Each entry lives until its confirmation leaves the stale window.
struct UntilStale(Duration);

impl Expiry<ConfirmKey, SystemTime> for UntilStale {
    fn expire_after_create(
        &self,
        _: &ConfirmKey,
        confirmed: &SystemTime,
        _: Instant,
    ) -> Option<Duration> {
        Some(self.0.saturating_sub(age_of(*confirmed)))
    }

    fn expire_after_update(
        &self,
        _: &ConfirmKey,
        confirmed: &SystemTime,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.0.saturating_sub(age_of(*confirmed)))
    }
}

impl Confirmations {
    /// `fresh_for` is `confirm_ttl_seconds`, `stale_for` `confirm_stale_seconds` (never less
    /// than `fresh_for`), `max_entries` `confirm_max_entries`.
    pub fn new(fresh_for: Duration, stale_for: Duration, max_entries: u64) -> Confirmations {
        let stale_for = stale_for.max(fresh_for);
        Confirmations {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .expire_after(UntilStale(stale_for))
                .build(),
            fresh_for,
            stale_for,
        }
    }

    /// Records that the origin confirmed `key` at `confirmed` (now, or when a persisted tag
    /// record was validated). An older confirmation never replaces a newer one.
    pub fn record(&self, key: ConfirmKey, confirmed: SystemTime) {
        if age_of(confirmed) >= self.stale_for {
            return;
        }
        self.entries.entry(key).and_upsert_with(|held| match held {
            Some(held) if *held.value() > confirmed => *held.value(),
            _ => confirmed,
        });
    }

    /// How long a confirmation counts at all.
    pub fn stale_for(&self) -> Duration {
        self.stale_for
    }

    /// Drops what is known about `key`: the origin refused it, so no older confirmation may
    /// let it out during a later outage.
    pub fn forget(&self, key: &ConfirmKey) {
        self.entries.invalidate(key);
    }

    pub fn standing(&self, key: &ConfirmKey) -> Standing {
        let Some(confirmed) = self.entries.get(key) else {
            return Standing::Unknown;
        };
        let age = age_of(confirmed);
        if age < self.fresh_for {
            Standing::Fresh(confirmed)
        } else if age < self.stale_for {
            Standing::Stale(confirmed)
        } else {
            Standing::Unknown
        }
    }
}

/// How long ago `then` was (zero for a clock that went backwards).
pub fn age_of(then: SystemTime) -> Duration {
    SystemTime::now().duration_since(then).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(origin: &str, repo: &str, digest: &[u8], caller: Caller) -> ConfirmKey {
        ConfirmKey {
            origin: origin.into(),
            repo: repo.parse().expect("repository name"),
            digest: Digest::sha256_of(digest),
            caller,
        }
    }

    fn confirmations() -> Confirmations {
        Confirmations::new(Duration::from_secs(30), Duration::from_secs(3600), 1000)
    }

    fn ago(seconds: u64) -> SystemTime {
        SystemTime::now() - Duration::from_secs(seconds)
    }

    #[test]
    fn a_confirmation_is_fresh_then_stale_then_gone() {
        let store = confirmations();
        let (fresh, stale, expired) = (
            key("hub", "team/app", b"fresh", Caller::ANONYMOUS),
            key("hub", "team/app", b"stale", Caller::ANONYMOUS),
            key("hub", "team/app", b"expired", Caller::ANONYMOUS),
        );
        store.record(fresh.clone(), ago(10));
        store.record(stale.clone(), ago(40));
        store.record(expired.clone(), ago(3601));
        assert!(matches!(store.standing(&fresh), Standing::Fresh(_)));
        assert!(matches!(store.standing(&stale), Standing::Stale(_)));
        assert_eq!(store.standing(&expired), Standing::Unknown);
    }

    #[test]
    fn every_part_of_the_key_matters() {
        let store = confirmations();
        let alice = Caller::from_authorization(Some(&HeaderValue::from_static("Bearer alice")));
        let bob = Caller::from_authorization(Some(&HeaderValue::from_static("Bearer bob")));
        store.record(key("hub", "team/app", b"layer", alice), ago(0));
        assert!(matches!(
            store.standing(&key("hub", "team/app", b"layer", alice)),
            Standing::Fresh(_)
        ));
        for other in [
            key("ghcr", "team/app", b"layer", alice),
            key("hub", "team/other", b"layer", alice),
            key("hub", "team/app", b"other layer", alice),
            key("hub", "team/app", b"layer", bob),
            key("hub", "team/app", b"layer", Caller::ANONYMOUS),
        ] {
            assert_eq!(store.standing(&other), Standing::Unknown, "{other:?}");
        }
    }

    #[test]
    fn a_newer_confirmation_is_never_replaced_by_an_older_one() {
        let store = confirmations();
        let k = key("hub", "team/app", b"layer", Caller::ANONYMOUS);
        store.record(k.clone(), ago(5));
        store.record(k.clone(), ago(100));
        assert!(matches!(store.standing(&k), Standing::Fresh(_)));
        store.record(k.clone(), ago(0));
        let Standing::Fresh(at) = store.standing(&k) else {
            panic!("{:?}", store.standing(&k));
        };
        assert!(age_of(at) < Duration::from_secs(5));
    }

    #[test]
    fn a_refusal_forgets_the_older_confirmation() {
        let store = confirmations();
        let k = key("hub", "team/app", b"layer", Caller::ANONYMOUS);
        store.record(k.clone(), ago(40));
        store.forget(&k);
        assert_eq!(store.standing(&k), Standing::Unknown);
    }

    #[test]
    fn with_no_fresh_window_every_read_asks() {
        let store = Confirmations::new(Duration::ZERO, Duration::from_secs(60), 10);
        let k = key("cores", "team/app", b"layer", Caller::ANONYMOUS);
        store.record(k.clone(), ago(0));
        assert!(matches!(store.standing(&k), Standing::Stale(_)));
    }

    #[test]
    fn the_store_is_bounded() {
        let store = Confirmations::new(Duration::from_secs(30), Duration::from_secs(60), 100);
        for i in 0..1000u32 {
            store.record(
                key("hub", "team/app", &i.to_be_bytes(), Caller::ANONYMOUS),
                ago(0),
            );
        }
        store.entries.run_pending_tasks();
        assert!(store.entries.entry_count() <= 100, "{store:?}");
    }

    #[test]
    fn callers_are_told_apart_by_a_hash_that_shows_nothing() {
        let header = HeaderValue::from_static("Basic c2VjcmV0");
        let caller = Caller::from_authorization(Some(&header));
        assert_eq!(caller, Caller::from_authorization(Some(&header)));
        assert_ne!(caller, Caller::ANONYMOUS);
        assert_eq!(Caller::from_authorization(None), Caller::ANONYMOUS);
        let alice = Caller::from_subject("alice");
        assert_eq!(alice, Caller::from_subject("alice"));
        assert_ne!(alice, Caller::from_subject("bob"));
        assert_ne!(
            Caller::from_subject(""),
            Caller::from_authorization(Some(&HeaderValue::from_static("")))
        );
        let shown = format!("{caller:?}");
        assert!(
            !shown.contains("c2VjcmV0") && !shown.contains("Basic"),
            "{shown}"
        );
    }
}
