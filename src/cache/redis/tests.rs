//! The Redis cache against a real Redis (`crate::testkit::redis_url`), each test under its own
//! key prefix, and through a [`FaultProxy`] for the failure cases.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::cache::conformance::cache_conformance;
use crate::testkit::{FaultProxy, redis_url, unique_name};

mod tls;

/// Generous, so a loaded test machine does not trip the breaker in the behaviour tests.
const PATIENT: Duration = Duration::from_secs(2);
/// The failure tests' settings: short, so they run quickly.
const TIMEOUT: Duration = Duration::from_millis(200);
const RETRY_AFTER: Duration = Duration::from_millis(300);
/// "At once": what a call may take when Redis is not asked.
const QUICK: Duration = Duration::from_millis(100);
const LONG: Duration = Duration::from_secs(60);

fn settings(url: &str, key_prefix: &str, timeout: Duration) -> RedisSettings {
    RedisSettings {
        url: url.to_owned(),
        ca_file: None,
        key_prefix: key_prefix.to_owned(),
        timeout,
        retry_after: RETRY_AFTER,
    }
}

fn prefix() -> String {
    unique_name("aerugo-test:") + ":"
}

async fn cache(url: &str, key_prefix: &str, timeout: Duration) -> RedisCache {
    RedisCache::connect(&settings(url, key_prefix, timeout))
        .await
        .expect("valid settings")
}

async fn conformance_cache() -> Option<Box<dyn Cache>> {
    let url = redis_url()?;
    Some(Box::new(cache(&url, &prefix(), PATIENT).await))
}

cache_conformance!(conformance_cache);

fn redis_addr(url: &str) -> SocketAddr {
    let client = Client::open(url).expect("valid url");
    let addr = client.get_connection_info().addr().to_string();
    addr.parse().expect("a host:port test url")
}

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Asks `f` until it says yes or `within` passes.
async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn keys_live_under_the_prefix_with_their_ttl() {
    let Some(url) = redis_url() else { return };
    let prefix = prefix();
    let cache = cache(&url, &prefix, PATIENT).await;
    cache.set("k", Bytes::from_static(b"v"), LONG).await;
    assert_eq!(cache.increment("n", LONG).await, Some(1));

    let mut raw = Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let value: Option<Vec<u8>> = ::redis::cmd("GET")
        .arg(format!("{prefix}k"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some(&b"v"[..]));
    for key in ["k", "n"] {
        let ttl_ms: i64 = ::redis::cmd("PTTL")
            .arg(format!("{prefix}{key}"))
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(0 < ttl_ms && ttl_ms <= 60_000, "{key}: {ttl_ms}");
    }
    // Another prefix is another cache.
    let other = self::cache(&url, &self::prefix(), PATIENT).await;
    assert_eq!(other.get("k").await, None);
}

#[tokio::test]
async fn a_delete_is_seen_by_another_node_at_once() {
    let Some(url) = redis_url() else { return };
    let prefix = prefix();
    let (a, b) = (
        cache(&url, &prefix, PATIENT).await,
        cache(&url, &prefix, PATIENT).await,
    );
    a.set("tag", Bytes::from_static(b"old"), LONG).await;
    assert_eq!(b.get("tag").await, Some(Bytes::from_static(b"old")));
    a.delete("tag").await;
    assert_eq!(b.get("tag").await, None);
    // Counters and set_if_absent are shared the same way.
    assert_eq!(a.increment("n", LONG).await, Some(1));
    assert_eq!(b.increment("n", LONG).await, Some(2));
    assert_eq!(a.set_if_absent("jti", Bytes::new(), LONG).await, Some(true));
    assert_eq!(
        b.set_if_absent("jti", Bytes::new(), LONG).await,
        Some(false)
    );
}

#[tokio::test]
async fn start_up_does_not_fail_and_calls_return_at_once_when_redis_is_down() {
    let url = format!("redis://{}", closed_port());
    let recorder = Recorder::detached("redis");
    // No probe during the test, so every call below is one Redis is not asked.
    let settings = RedisSettings {
        retry_after: LONG,
        ..settings(&url, &prefix(), TIMEOUT)
    };
    let started = Instant::now();
    let cache = RedisCache::connect_with(&settings, recorder.clone())
        .await
        .expect("an unreachable Redis is not a set-up error");
    assert!(
        started.elapsed() < TIMEOUT + QUICK,
        "{:?}",
        started.elapsed()
    );

    for _ in 0..20 {
        let call = Instant::now();
        assert_eq!(cache.get("k").await, None);
        cache.set("k", Bytes::from_static(b"v"), LONG).await;
        assert_eq!(cache.increment("n", LONG).await, None);
        assert_eq!(cache.set_if_absent("s", Bytes::new(), LONG).await, None);
        assert!(call.elapsed() < QUICK, "{:?}", call.elapsed());
    }
    assert_eq!(recorder.count(Op::Get, Outcome::Skipped), 20);
    assert_eq!(recorder.count(Op::Set, Outcome::Skipped), 20);
}

#[tokio::test]
async fn a_malformed_url_is_a_set_up_error() {
    let result = RedisCache::connect(&settings("not-a-url", "p:", TIMEOUT)).await;
    assert!(matches!(result, Err(RedisSetupError::InvalidUrl(_))));
}

/// Redis behind a proxy, a value stored through it, and a recorder of its own.
struct Line {
    proxy: FaultProxy,
    cache: RedisCache,
    recorder: Recorder,
    url: String,
    prefix: String,
}

async fn line() -> Option<Line> {
    let url = redis_url()?;
    let proxy = FaultProxy::start(redis_addr(&url)).await;
    let prefix = prefix();
    let recorder = Recorder::detached("redis");
    let cache = RedisCache::connect_with(
        &settings(&proxy.url_for(&url), &prefix, TIMEOUT),
        recorder.clone(),
    )
    .await
    .unwrap();
    cache.set("k", Bytes::from_static(b"v"), LONG).await;
    assert_eq!(cache.get("k").await, Some(Bytes::from_static(b"v")));
    Some(Line {
        proxy,
        cache,
        recorder,
        url,
        prefix,
    })
}

/// Calls `get` for `period`: every call must end within `timeout` (plus slack) and all but
/// the probes (one per `retry_after`) at once. Returns how many calls were made.
async fn calls_stay_quick(cache: &RedisCache, period: Duration) -> u32 {
    let (started, mut calls, mut slow) = (Instant::now(), 0, 0);
    while started.elapsed() < period {
        let call = Instant::now();
        assert_eq!(cache.get("k").await, None);
        let took = call.elapsed();
        assert!(took < TIMEOUT + QUICK, "a call took {took:?}");
        if took >= QUICK {
            slow += 1;
        }
        calls += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let probes = (period.as_millis() / RETRY_AFTER.as_millis()) as u32 + 1;
    assert!(slow <= probes, "{slow} slow calls of {calls}");
    calls
}

async fn recovers(line: &Line) {
    line.proxy.restore();
    let answered = eventually(RETRY_AFTER + PATIENT, || async {
        line.cache.get("k").await.is_some()
    })
    .await;
    assert!(answered, "the cache did not use Redis again");
    line.cache.set("k2", Bytes::from_static(b"v2"), LONG).await;
    assert_eq!(line.cache.get("k2").await, Some(Bytes::from_static(b"v2")));
}

#[tokio::test]
async fn a_refusing_redis_costs_no_waiting_and_is_used_again_when_it_answers() {
    let Some(line) = line().await else { return };
    line.proxy.refuse();
    let first = Instant::now();
    assert_eq!(line.cache.get("k").await, None);
    assert!(first.elapsed() < TIMEOUT + QUICK);
    let calls = calls_stay_quick(&line.cache, Duration::from_secs(1)).await;
    assert!(line.recorder.count(Op::Get, Outcome::Error) >= 1);
    assert!(line.recorder.count(Op::Get, Outcome::Skipped) >= u64::from(calls) - 5);
    recovers(&line).await;
}

#[tokio::test]
async fn a_black_holed_redis_costs_one_timeout_per_pause_and_is_used_again() {
    let Some(line) = line().await else { return };
    line.proxy.blackhole();
    let first = Instant::now();
    assert_eq!(line.cache.get("k").await, None);
    let took = first.elapsed();
    assert!(
        TIMEOUT - Duration::from_millis(20) <= took && took < TIMEOUT + QUICK,
        "the first call waits for the timeout: {took:?}"
    );
    calls_stay_quick(&line.cache, Duration::from_secs(1)).await;
    recovers(&line).await;
}

#[tokio::test]
async fn a_delete_made_while_redis_is_unreachable_is_sent_before_redis_is_used_again() {
    let Some(line) = line().await else { return };
    let other_node = cache(&line.url, &line.prefix, PATIENT).await;
    other_node
        .set("marker", Bytes::from_static(b"m"), LONG)
        .await;

    line.proxy.refuse();
    line.cache.delete("k").await;
    line.cache.delete("k").await;
    assert!(line.recorder.count(Op::Delete, Outcome::Ok) == 0);
    line.proxy.restore();

    let recovered = eventually(RETRY_AFTER + PATIENT, || async {
        // This node never reads back what it deleted, even while it recovers.
        assert_eq!(line.cache.get("k").await, None);
        line.cache.get("marker").await.is_some()
    })
    .await;
    assert!(recovered, "the cache did not use Redis again");
    assert_eq!(
        other_node.get("k").await,
        None,
        "the other node sees the delete"
    );
}

#[tokio::test]
async fn a_probe_cancelled_half_way_neither_wedges_the_cache_nor_loses_a_delete() {
    let Some(line) = line().await else { return };
    let other_node = cache(&line.url, &line.prefix, PATIENT).await;
    line.proxy.blackhole();
    line.cache.delete("k").await; // times out: owed
    tokio::time::sleep(RETRY_AFTER).await;
    // The probe waits on the black hole; give up on it long before its timeout.
    let cancelled = tokio::time::timeout(Duration::from_millis(20), line.cache.get("other")).await;
    assert!(cancelled.is_err(), "the probe was cut short");
    line.proxy.restore();
    // The next request probes at once (no new pause) and sends the owed delete first.
    let answered = eventually(PATIENT, || async {
        let _ = line.cache.get("marker-less").await;
        line.cache.health.admit(None).is_go()
    })
    .await;
    assert!(answered, "the cache stayed down after a cancelled probe");
    assert_eq!(other_node.get("k").await, None);
}

impl Admission<'_> {
    fn is_go(&self) -> bool {
        matches!(self, Admission::Go)
    }
}

#[test]
fn the_breaker_waits_then_lets_one_probe_through() {
    let health = Health::new(Duration::from_millis(50));
    assert!(health.admit(None).is_go());
    assert!(health.failed(None), "the first failure takes Redis down");
    assert!(!health.failed(None), "later ones are not news");
    assert!(matches!(health.admit(None), Admission::Wait));
    std::thread::sleep(Duration::from_millis(60));
    let Admission::Probe(mut probe) = health.admit(None) else {
        panic!("the pause is over: probe");
    };
    assert!(
        matches!(health.admit(None), Admission::Wait),
        "one probe at a time"
    );
    assert!(probe.finish().is_empty());
    assert!(health.admit(None).is_go());
}

#[test]
fn a_failed_probe_pauses_again_and_owed_deletes_wait_for_the_next() {
    let health = Health::new(Duration::from_millis(50));
    health.failed(Some("a"));
    assert!(matches!(health.admit(Some("b")), Admission::Wait));
    std::thread::sleep(Duration::from_millis(60));
    let Admission::Probe(probe) = health.admit(Some("c")) else {
        panic!("probe");
    };
    let mut owed = probe.unsent_deletes();
    owed.sort();
    assert_eq!(owed, ["a", "b", "c"]);
    probe.sent(&owed[..1]);
    probe.fail();
    assert!(
        matches!(health.admit(None), Admission::Wait),
        "paused again"
    );
    std::thread::sleep(Duration::from_millis(60));
    let Admission::Probe(mut probe) = health.admit(None) else {
        panic!("probe");
    };
    let mut owed = probe.finish();
    owed.sort();
    assert_eq!(owed, ["b", "c"], "only what was sent is forgotten");
    probe.sent(&owed);
    assert!(probe.finish().is_empty());
    assert!(health.admit(None).is_go());
}
