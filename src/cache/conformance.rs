//! The behaviour every [`Cache`] backend must show, as one suite each backend's tests run
//! (`memory` in process, Redis against a test server).
//!
//! Keys carry a random prefix, so runs may share a backend and only see their own entries.

use std::time::Duration;

use bytes::Bytes;

use super::Cache;

const LONG: Duration = Duration::from_secs(60);
/// Short enough to expire during the test, long enough to survive the `set` call itself.
const SHORT: Duration = Duration::from_millis(50);
const PAST_SHORT: Duration = Duration::from_millis(200);

/// Runs every case in turn; a failure names the case in its message.
pub(crate) async fn run_all(cache: &dyn Cache) {
    missing_key(cache).await;
    set_then_get(cache).await;
    overwrite(cache).await;
    delete(cache).await;
    ttl_expiry(cache).await;
    overwrite_resets_ttl(cache).await;
}

fn key(name: &str) -> String {
    format!("conformance:{}:{name}", uuid::Uuid::new_v4())
}

pub(crate) async fn missing_key(cache: &dyn Cache) {
    assert_eq!(cache.get(&key("never-set")).await, None, "missing_key");
}

pub(crate) async fn set_then_get(cache: &dyn Cache) {
    let k = key("set");
    cache.set(&k, Bytes::from_static(b"value"), LONG).await;
    assert_eq!(
        cache.get(&k).await,
        Some(Bytes::from_static(b"value")),
        "set_then_get"
    );

    // Values are opaque bytes: not necessarily UTF-8, possibly empty.
    let binary = Bytes::from_static(b"\x00\xff\xfe\x80 \r\n");
    let k = key("binary");
    cache.set(&k, binary.clone(), LONG).await;
    assert_eq!(cache.get(&k).await, Some(binary), "binary value");
    let k = key("empty");
    cache.set(&k, Bytes::new(), LONG).await;
    assert_eq!(
        cache.get(&k).await,
        Some(Bytes::new()),
        "an empty value is a hit"
    );

    // Keys are independent.
    let (a, b) = (key("a"), key("b"));
    cache.set(&a, Bytes::from_static(b"A"), LONG).await;
    cache.set(&b, Bytes::from_static(b"B"), LONG).await;
    assert_eq!(cache.get(&a).await, Some(Bytes::from_static(b"A")));
    assert_eq!(cache.get(&b).await, Some(Bytes::from_static(b"B")));
}

pub(crate) async fn overwrite(cache: &dyn Cache) {
    let k = key("overwrite");
    cache.set(&k, Bytes::from_static(b"old"), LONG).await;
    cache.set(&k, Bytes::from_static(b"new"), LONG).await;
    assert_eq!(
        cache.get(&k).await,
        Some(Bytes::from_static(b"new")),
        "overwrite"
    );
}

pub(crate) async fn delete(cache: &dyn Cache) {
    let k = key("delete");
    cache.set(&k, Bytes::from_static(b"value"), LONG).await;
    cache.delete(&k).await;
    assert_eq!(cache.get(&k).await, None, "delete");
    // Deleting an absent key is harmless, and a deleted key can be set again.
    cache.delete(&k).await;
    cache.delete(&key("never-set")).await;
    cache.set(&k, Bytes::from_static(b"again"), LONG).await;
    assert_eq!(cache.get(&k).await, Some(Bytes::from_static(b"again")));
}

pub(crate) async fn ttl_expiry(cache: &dyn Cache) {
    let k = key("ttl");
    cache.set(&k, Bytes::from_static(b"value"), SHORT).await;
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(cache.get(&k).await, None, "ttl_expiry");
}

pub(crate) async fn overwrite_resets_ttl(cache: &dyn Cache) {
    // A short TTL replaced by a long one: the new TTL wins.
    let lengthened = key("lengthened");
    cache
        .set(&lengthened, Bytes::from_static(b"v1"), SHORT)
        .await;
    cache
        .set(&lengthened, Bytes::from_static(b"v2"), LONG)
        .await;
    // A long TTL replaced by a short one: the new TTL wins here too.
    let shortened = key("shortened");
    cache.set(&shortened, Bytes::from_static(b"v1"), LONG).await;
    cache
        .set(&shortened, Bytes::from_static(b"v2"), SHORT)
        .await;

    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(
        cache.get(&lengthened).await,
        Some(Bytes::from_static(b"v2")),
        "overwrite with a longer ttl"
    );
    assert_eq!(
        cache.get(&shortened).await,
        None,
        "overwrite with a shorter ttl"
    );
}
