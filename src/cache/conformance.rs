//! The behaviour every [`Cache`] backend must show, written once against the trait.
//!
//! A backend's tests invoke [`cache_conformance!`] with an async constructor returning
//! `Option<Box<dyn Cache>>` (`None`: the backend's service is missing and the test skips; see
//! `crate::testkit`); the macro expands to one `#[tokio::test]` per case, each on a fresh
//! cache. Keys carry a random part, so runs may share a backend and only see their own entries.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;

use super::Cache;

/// Expands to one test per conformance case. `$make` is a path to an
/// `async fn() -> Option<Box<dyn Cache>>`.
macro_rules! cache_conformance {
    ($make:path) => {
        $crate::cache::conformance::cache_conformance!(@cases $make;
            missing_key,
            set_then_get,
            values_are_opaque_bytes,
            keys_are_independent,
            overwrite,
            delete_removes_and_allows_a_new_set,
            zero_ttl_removes_the_key,
            ttl_expiry,
            overwrite_resets_ttl,
            increment_counts_from_one,
            increment_keeps_the_first_deadline,
            increment_of_a_value_that_is_not_a_counter_fails,
            concurrent_increments_are_atomic,
            set_if_absent_stores_only_when_absent,
            set_if_absent_stores_again_after_expiry_or_delete,
            concurrent_set_if_absent_stores_once,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(cache) = $make().await {
                    $crate::cache::conformance::$case(cache.as_ref()).await;
                }
            }
        )*
    };
}
pub(crate) use cache_conformance;

const LONG: Duration = Duration::from_secs(60);
/// Short enough to expire during the test, long enough to survive the `set` call itself.
const SHORT: Duration = Duration::from_millis(50);
const PAST_SHORT: Duration = Duration::from_millis(200);
/// A counter window, and when in it the second increment comes: late enough that a restarted
/// window would outlive the first, early enough to fall inside it on a loaded machine.
const WINDOW: Duration = Duration::from_millis(1000);
const INTO_WINDOW: Duration = Duration::from_millis(400);

fn key(name: &str) -> String {
    format!("conformance:{}:{name}", uuid::Uuid::new_v4().simple())
}

fn bytes(value: &'static str) -> Bytes {
    Bytes::from_static(value.as_bytes())
}

pub(crate) async fn missing_key(cache: &dyn Cache) {
    assert_eq!(cache.get(&key("never-set")).await, None);
}

pub(crate) async fn set_then_get(cache: &dyn Cache) {
    let k = key("set");
    cache.set(&k, bytes("value"), LONG).await;
    assert_eq!(cache.get(&k).await, Some(bytes("value")));
}

pub(crate) async fn values_are_opaque_bytes(cache: &dyn Cache) {
    // Not necessarily UTF-8, possibly empty (an empty value is a hit, not a miss).
    let binary = Bytes::from_static(b"\x00\xff\xfe\x80 \r\n");
    let k = key("binary");
    cache.set(&k, binary.clone(), LONG).await;
    assert_eq!(cache.get(&k).await, Some(binary));
    let k = key("empty");
    cache.set(&k, Bytes::new(), LONG).await;
    assert_eq!(cache.get(&k).await, Some(Bytes::new()));
}

pub(crate) async fn keys_are_independent(cache: &dyn Cache) {
    let (a, b) = (key("a"), key("b"));
    cache.set(&a, bytes("A"), LONG).await;
    cache.set(&b, bytes("B"), LONG).await;
    assert_eq!(cache.get(&a).await, Some(bytes("A")));
    assert_eq!(cache.get(&b).await, Some(bytes("B")));
    cache.delete(&a).await;
    assert_eq!(cache.get(&b).await, Some(bytes("B")));
}

pub(crate) async fn overwrite(cache: &dyn Cache) {
    let k = key("overwrite");
    cache.set(&k, bytes("old"), LONG).await;
    cache.set(&k, bytes("new"), LONG).await;
    assert_eq!(cache.get(&k).await, Some(bytes("new")));
}

pub(crate) async fn delete_removes_and_allows_a_new_set(cache: &dyn Cache) {
    let k = key("delete");
    cache.set(&k, bytes("value"), LONG).await;
    cache.delete(&k).await;
    assert_eq!(cache.get(&k).await, None);
    // Deleting an absent key is harmless, and a deleted key can be set again.
    cache.delete(&k).await;
    cache.delete(&key("never-set")).await;
    cache.set(&k, bytes("again"), LONG).await;
    assert_eq!(cache.get(&k).await, Some(bytes("again")));
}

pub(crate) async fn zero_ttl_removes_the_key(cache: &dyn Cache) {
    let k = key("zero");
    cache.set(&k, bytes("old"), LONG).await;
    cache.set(&k, bytes("new"), Duration::ZERO).await;
    assert_eq!(cache.get(&k).await, None);
}

pub(crate) async fn ttl_expiry(cache: &dyn Cache) {
    let k = key("ttl");
    cache.set(&k, bytes("value"), SHORT).await;
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(cache.get(&k).await, None);
}

pub(crate) async fn overwrite_resets_ttl(cache: &dyn Cache) {
    // A short TTL replaced by a long one: the new TTL wins.
    let lengthened = key("lengthened");
    cache.set(&lengthened, bytes("v1"), SHORT).await;
    cache.set(&lengthened, bytes("v2"), LONG).await;
    // A long TTL replaced by a short one: the new TTL wins here too.
    let shortened = key("shortened");
    cache.set(&shortened, bytes("v1"), LONG).await;
    cache.set(&shortened, bytes("v2"), SHORT).await;

    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(
        cache.get(&lengthened).await,
        Some(bytes("v2")),
        "overwrite with a longer ttl"
    );
    assert_eq!(
        cache.get(&shortened).await,
        None,
        "overwrite with a shorter ttl"
    );
}

pub(crate) async fn increment_counts_from_one(cache: &dyn Cache) {
    let (a, b) = (key("counter-a"), key("counter-b"));
    assert_eq!(cache.increment(&a, LONG).await, Some(1));
    assert_eq!(cache.increment(&a, LONG).await, Some(2));
    assert_eq!(cache.increment(&a, LONG).await, Some(3));
    assert_eq!(
        cache.increment(&b, LONG).await,
        Some(1),
        "counters are per key"
    );
    cache.delete(&a).await;
    assert_eq!(
        cache.increment(&a, LONG).await,
        Some(1),
        "a deleted counter restarts"
    );
}

pub(crate) async fn increment_keeps_the_first_deadline(cache: &dyn Cache) {
    let k = key("window");
    assert_eq!(cache.increment(&k, WINDOW).await, Some(1));
    tokio::time::sleep(INTO_WINDOW).await;
    // A later increment neither restarts the window nor extends it to its own longer TTL...
    assert_eq!(cache.increment(&k, LONG).await, Some(2));
    tokio::time::sleep(WINDOW - INTO_WINDOW + PAST_SHORT).await;
    // ...so the counter is gone when the first window ends, and the next one starts at 1.
    assert_eq!(cache.increment(&k, WINDOW).await, Some(1));
}

pub(crate) async fn increment_of_a_value_that_is_not_a_counter_fails(cache: &dyn Cache) {
    let k = key("text");
    cache.set(&k, bytes("not a number"), LONG).await;
    assert_eq!(cache.increment(&k, LONG).await, None);
    assert_eq!(
        cache.get(&k).await,
        Some(bytes("not a number")),
        "unchanged"
    );
    // The failure is the value's, not the backend's: the cache keeps working.
    let counter = key("after-text");
    assert_eq!(cache.increment(&counter, LONG).await, Some(1));
}

pub(crate) async fn concurrent_increments_are_atomic(cache: &dyn Cache) {
    let k = key("concurrent-counter");
    let mut values: Vec<_> = join_all((0..50).map(|_| cache.increment(&k, LONG)))
        .await
        .into_iter()
        .map(|value| value.expect("increment answered"))
        .collect();
    values.sort_unstable();
    assert_eq!(values, (1..=50).collect::<Vec<u64>>());
}

pub(crate) async fn set_if_absent_stores_only_when_absent(cache: &dyn Cache) {
    let k = key("nx");
    assert_eq!(
        cache.set_if_absent(&k, bytes("first"), LONG).await,
        Some(true)
    );
    assert_eq!(cache.get(&k).await, Some(bytes("first")));
    assert_eq!(
        cache.set_if_absent(&k, bytes("second"), LONG).await,
        Some(false)
    );
    assert_eq!(cache.get(&k).await, Some(bytes("first")), "left unchanged");
    // Present because of a plain set counts too.
    let set = key("nx-after-set");
    cache.set(&set, bytes("set"), LONG).await;
    assert_eq!(
        cache.set_if_absent(&set, bytes("nx"), LONG).await,
        Some(false)
    );
    assert_eq!(cache.get(&set).await, Some(bytes("set")));
}

pub(crate) async fn set_if_absent_stores_again_after_expiry_or_delete(cache: &dyn Cache) {
    let k = key("nx-expiring");
    assert_eq!(
        cache.set_if_absent(&k, bytes("v1"), SHORT).await,
        Some(true)
    );
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(cache.get(&k).await, None, "set_if_absent honours its ttl");
    assert_eq!(cache.set_if_absent(&k, bytes("v2"), LONG).await, Some(true));
    cache.delete(&k).await;
    assert_eq!(cache.set_if_absent(&k, bytes("v3"), LONG).await, Some(true));
    assert_eq!(cache.get(&k).await, Some(bytes("v3")));
}

pub(crate) async fn concurrent_set_if_absent_stores_once(cache: &dyn Cache) {
    let k = key("nx-race");
    let values: Vec<Bytes> = (0..20).map(|i| Bytes::from(format!("v{i}"))).collect();
    let answers = join_all(
        values
            .iter()
            .map(|v| cache.set_if_absent(&k, v.clone(), LONG)),
    )
    .await;
    let winners: Vec<&Bytes> = answers
        .iter()
        .zip(&values)
        .filter_map(|(answer, value)| (*answer == Some(true)).then_some(value))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one stores: {answers:?}");
    assert!(answers.iter().all(Option::is_some));
    assert_eq!(cache.get(&k).await.as_ref(), Some(winners[0]));
}
