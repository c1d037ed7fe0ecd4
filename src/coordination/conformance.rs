//! The behaviour every `Coordinator` must show, written once against the trait.
//!
//! A backend's tests invoke [`coordination_conformance!`] with an async constructor returning
//! two coordinators that must exclude each other: the same object twice for an in-process
//! backend, two instances on one database (two nodes) for a shared one. `None` instead skips
//! the case (a test service that is not running, see `testkit`).

use std::sync::Arc;
use std::time::Duration;

use super::Coordinator;
use crate::oci::{Digest, UploadId};

macro_rules! coordination_conformance {
    ($make:path) => {
        $crate::coordination::conformance::coordination_conformance!(@cases $make;
            digest_locks_exclude_across_instances,
            upload_locks_are_try_locks,
            one_collection_at_a_time,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some((a, b)) = $make().await else {
                    return;
                };
                $crate::coordination::conformance::$case(a, b).await;
            }
        )*
    };
}
pub(crate) use coordination_conformance;

/// How long a release may take to be seen by the other instance.
const RELEASE_WITHIN: Duration = Duration::from_secs(5);

fn digest(seed: &str) -> Digest {
    Digest::sha256_of(format!("{seed}-{}", uuid::Uuid::new_v4()).as_bytes())
}

pub(crate) async fn digest_locks_exclude_across_instances(
    a: Arc<dyn Coordinator>,
    b: Arc<dyn Coordinator>,
) {
    let (d, other) = (digest("d"), digest("other"));
    let held = a.lock_digest(&d).await.expect("lock");
    // Another digest is free.
    let free = tokio::time::timeout(RELEASE_WITHIN, b.lock_digest(&other))
        .await
        .expect("a different digest does not wait")
        .expect("lock");
    drop(free);
    let waiter = {
        let (b, d) = (b.clone(), d.clone());
        tokio::spawn(async move { b.lock_digest(&d).await.map(drop) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the second instance got a held digest lock"
    );
    drop(held);
    tokio::time::timeout(RELEASE_WITHIN, waiter)
        .await
        .expect("the waiter gets the lock once it is released")
        .expect("task")
        .expect("lock");
}

pub(crate) async fn upload_locks_are_try_locks(a: Arc<dyn Coordinator>, b: Arc<dyn Coordinator>) {
    let (id, other) = (UploadId::generate(), UploadId::generate());
    let held = a
        .try_lock_upload(&id)
        .await
        .expect("try_lock")
        .expect("free session");
    assert!(b.try_lock_upload(&id).await.expect("try_lock").is_none());
    assert!(b.try_lock_upload(&other).await.expect("try_lock").is_some());
    drop(held);
    drop(eventually_free(|| b.try_lock_upload(&id)).await);
}

pub(crate) async fn one_collection_at_a_time(a: Arc<dyn Coordinator>, b: Arc<dyn Coordinator>) {
    // Another test's collection may hold a cluster-wide lock for a moment.
    let held = eventually_free(|| a.try_lock_gc()).await;
    assert!(b.try_lock_gc().await.expect("try_lock_gc").is_none());
    drop(held);
    drop(eventually_free(|| b.try_lock_gc()).await);
}

/// Retries a try-lock until it succeeds, failing after [`RELEASE_WITHIN`].
async fn eventually_free<F, Fut>(mut try_lock: F) -> super::LockGuard
where
    F: FnMut() -> Fut,
    Fut: Future<Output = super::Result<Option<super::LockGuard>>>,
{
    let deadline = tokio::time::Instant::now() + RELEASE_WITHIN;
    loop {
        if let Some(guard) = try_lock().await.expect("try_lock") {
            return guard;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a released lock was still held {RELEASE_WITHIN:?} later"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
