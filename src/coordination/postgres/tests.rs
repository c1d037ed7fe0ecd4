use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use super::*;

const SETTLE: Duration = Duration::from_secs(1);

/// The test database with its lock sessions named `name`, so `pg_stat_activity` and
/// `pg_locks` tell this coordinator's sessions apart.
fn named(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={name}")
}

async fn coordinator(url: &str, sessions: u32) -> PgCoordinator {
    PgCoordinator::connect(url, sessions, Duration::from_secs(2))
        .await
        .expect("connect")
}

/// A coordinator whose sessions carry a name of their own.
async fn named_coordinator(url: &str, sessions: u32) -> (PgCoordinator, String) {
    let name = crate::testkit::unique_name("aerugo-locks-test-");
    (coordinator(&named(url, &name), sessions).await, name)
}

/// Two nodes: two coordinators, each with its own sessions, on one database.
async fn two_nodes() -> Option<(Arc<dyn Coordinator>, Arc<dyn Coordinator>)> {
    let url = crate::testkit::postgres_url()?;
    Some((
        Arc::new(coordinator(&url, 4).await),
        Arc::new(coordinator(&url, 4).await),
    ))
}

mod conformance {
    crate::coordination::conformance::coordination_conformance!(super::two_nodes);
}

fn upload() -> UploadId {
    UploadId::generate()
}

fn digest() -> Digest {
    Digest::sha256_of(uuid::Uuid::new_v4().as_bytes())
}

/// A connection of the test's own, to look at (and kill) the coordinators' sessions.
async fn observer(url: &str) -> PgConnection {
    PgConnection::connect(url).await.expect("observer")
}

/// Advisory locks held by the sessions named `name`.
async fn locks_held_by(observer: &mut PgConnection, name: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND s.application_name = $1",
    )
    .bind(name)
    .fetch_one(observer)
    .await
    .expect("pg_locks")
}

/// Fails unless the sessions named `name` hold no advisory lock within [`SETTLE`].
async fn until_none_held(observer: &mut PgConnection, name: &str) {
    until_held(observer, name, 0).await;
}

/// Fails unless the sessions named `name` hold `count` advisory locks within [`SETTLE`].
async fn until_held(observer: &mut PgConnection, name: &str, count: i64) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let held = locks_held_by(observer, name).await;
        if held == count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{held} advisory locks held {SETTLE:?} after the guards were gone, not {count}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `b`'s try-lock until it gets the upload's lock; fails after [`SETTLE`].
async fn free_within_settle(b: &PgCoordinator, id: &UploadId) -> LockGuard {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        if let Some(guard) = b.try_lock_upload(id).await.expect("try_lock") {
            return guard;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still held {SETTLE:?} after its release"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `future` `polls` times (yielding in between), then drops it, whatever it got.
async fn cancel_after<F: Future>(future: F, polls: usize) {
    let mut future = pin!(future);
    for _ in 0..polls {
        let ready = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_ready()));
        if ready.await {
            return;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_locks_share_the_sessions_and_exclude_another_node() {
    let Some(url) = crate::testkit::postgres_url() else {
        return;
    };
    let (a, name) = named_coordinator(&url, 4).await;
    let b = coordinator(&url, 4).await;
    let ids: Vec<UploadId> = (0..500).map(|_| upload()).collect();
    let held = futures_util::future::join_all(ids.iter().map(|id| a.try_lock_upload(id))).await;
    let held: Vec<LockGuard> = held
        .into_iter()
        .map(|g| g.expect("try_lock").expect("free"))
        .collect();
    let mut observer = observer(&url).await;
    let connections: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(&name)
            .fetch_one(&mut observer)
            .await
            .expect("pg_stat_activity");
    assert!(
        (1..=4).contains(&connections),
        "{connections} connections for 500 locks"
    );
    assert_eq!(locks_held_by(&mut observer, &name).await, 500);
    for id in &ids {
        assert!(
            b.try_lock_upload(id).await.expect("try_lock").is_none(),
            "another node got a held lock"
        );
    }
    drop(held);
    until_none_held(&mut observer, &name).await;
    drop(free_within_settle(&b, &ids[0]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_of_one_node_exclude_each_other() {
    let Some(url) = crate::testkit::postgres_url() else {
        return;
    };
    // One session: an advisory lock is re-entrant in it, so only the in-process layer can
    // keep the second request out.
    let a = coordinator(&url, 1).await;
    let id = upload();
    let held = a
        .try_lock_upload(&id)
        .await
        .expect("try_lock")
        .expect("free");
    assert!(a.try_lock_upload(&id).await.expect("try_lock").is_none());
    let d = digest();
    let publishing = a.lock_digest(&d).await.expect("lock");
    let waited = tokio::time::timeout(Duration::from_millis(300), a.lock_digest(&d)).await;
    assert!(waited.is_err(), "a second request got a held digest lock");
    drop((held, publishing));
    drop(free_within_settle(&a, &id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_guard_is_released_within_a_second() {
    let Some(url) = crate::testkit::postgres_url() else {
        return;
    };
    let (a, b) = (coordinator(&url, 2).await, coordinator(&url, 2).await);
    let id = upload();
    let held = a
        .try_lock_upload(&id)
        .await
        .expect("try_lock")
        .expect("free");
    assert!(b.try_lock_upload(&id).await.expect("try_lock").is_none());
    drop(held);
    drop(free_within_settle(&b, &id).await);
    // a's session let go of it too: a can take the lock again.
    drop(free_within_settle(&a, &id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_dropped_outside_any_runtime_is_released() {
    let Some(url) = crate::testkit::postgres_url() else {
        return;
    };
    let (a, b) = (coordinator(&url, 2).await, coordinator(&url, 2).await);
    let id = upload();
    let held = a
        .try_lock_upload(&id)
        .await
        .expect("try_lock")
        .expect("free");
    std::thread::spawn(move || drop(held))
        .join()
        .expect("drop on a plain thread");
    drop(free_within_settle(&b, &id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_session_releases_its_locks_and_the_node_recovers() {
    let Some(url) = crate::testkit::postgres_url() else {
        return;
    };
    // One session, so the new locks below need the session that was killed.
    let (a, name) = named_coordinator(&url, 1).await;
    let b = coordinator(&url, 2).await;
    let id = upload();
    let held = a
        .try_lock_upload(&id)
        .await
        .expect("try_lock")
        .expect("free");
    // What a crash or a network partition does to a node: its session ends.
    let mut observer = observer(&url).await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                               WHERE application_name = $1) AS t",
    )
    .bind(&name)
    .fetch_one(&mut observer)
    .await
    .expect("terminate the lock session");
    assert_eq!(killed, 1, "one lock session");
    drop(free_within_settle(&b, &id).await);
    // Releasing on the dead session is quiet; a reconnects and keeps working.
    drop(held);
    let fresh = a.try_lock_upload(&upload()).await.expect("try_lock");
    assert!(fresh.is_some());
    let d = digest();
    let publishing = a.lock_digest(&d).await.expect("lock");
    assert_eq!(locks_held_by(&mut observer, &name).await, 2);
    drop((fresh, publishing));
    until_none_held(&mut observer, &name).await;
    drop(free_within_settle(&a, &id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_wait_keeps_no_lock() {
    let Some(url) = crate::testkit::postgres_url() else {
        return;
    };
    let (a, b) = (coordinator(&url, 2).await, coordinator(&url, 2).await);
    let d = digest();
    let held = a.lock_digest(&d).await.expect("lock");
    let waited = tokio::time::timeout(Duration::from_millis(300), b.lock_digest(&d)).await;
    assert!(waited.is_err(), "b got a held lock");
    drop(held);
    for node in [&a, &b] {
        let again = tokio::time::timeout(SETTLE, node.lock_digest(&d))
            .await
            .expect("the digest is free again")
            .expect("lock");
        drop(again);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_cancelled_at_any_point_is_not_kept_and_spares_its_session() {
    let Some(url) = crate::testkit::postgres_url() else {
        return;
    };
    // One session, shared with a lock another request holds all along.
    let (a, name) = named_coordinator(&url, 1).await;
    let b = coordinator(&url, 2).await;
    let kept = upload();
    let keeper = a
        .try_lock_upload(&kept)
        .await
        .expect("try_lock")
        .expect("free");
    let (id, d) = (upload(), digest());
    // Dropped after the first poll, the request is on its way to the server, which grants
    // it after the caller is gone; later polls cancel it at later points.
    for polls in 1..20 {
        cancel_after(a.try_lock_upload(&id), polls).await;
        cancel_after(a.lock_digest(&d), polls).await;
    }
    let mut observer = observer(&url).await;
    until_held(&mut observer, &name, 1).await;
    // Cancelling never closed the shared session under the other request's lock.
    assert!(b.try_lock_upload(&kept).await.expect("try_lock").is_none());
    drop(free_within_settle(&b, &id).await);
    let again = tokio::time::timeout(SETTLE, b.lock_digest(&d))
        .await
        .expect("the digest is free")
        .expect("lock");
    drop((again, keeper));
    until_none_held(&mut observer, &name).await;
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable() {
    let err = PgCoordinator::connect(
        "postgres://aerugo:aerugo@127.0.0.1:1/aerugo",
        1,
        Duration::from_secs(2),
    )
    .await;
    assert!(
        matches!(err, Err(CoordinationError::Unavailable(_))),
        "{err:?}"
    );
}

#[test]
fn keys_separate_schemas_kinds_and_names() {
    let key = lock_key("public", "upload", "x");
    assert_eq!(key, lock_key("public", "upload", "x"), "stable");
    for other in [
        lock_key("tenant", "upload", "x"),
        lock_key("public", "digest", "x"),
        lock_key("public", "upload", "y"),
        lock_key("public", "uploadx", ""),
    ] {
        assert_ne!(key, other);
    }
}
