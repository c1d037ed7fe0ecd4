//! The cluster's `Coordinator`: PostgreSQL session-level advisory locks, which every node on
//! the database sees and which the server drops with the session that held them, so a node
//! that crashes or loses its connection never keeps one.
//!
//! # Keys
//! A lock's 64-bit key is the first 8 bytes of SHA-256 over (schema, kind, name): the
//! schema the connection resolves to (`current_schema()`), so registries sharing a database
//! in separate schemas never contend; the kind (`digest`, `upload`, `gc`); the digest or
//! upload id. Advisory locks are per database, so sqlx's migration lock shares the key space;
//! a collision only makes two unrelated holders wait for each other.
//!
//! # Connections
//! Each held lock owns one connection of the coordinator's own pool for as long as it is
//! held (an advisory lock belongs to its session), so the pool's size bounds the locks this
//! node holds at once: uploads in flight plus publishes plus one collection. It is separate
//! from the metadata pool so that a publish holding a digest lock never waits for a metadata
//! connection that lock holders have taken.
//!
//! # Release
//! Dropping a guard spawns the unlock on the current runtime and hands the connection back to
//! the pool. Without a runtime, or when the unlock fails, the connection is detached and
//! dropped: closing the session releases its locks server-side. A `lock_digest` abandoned
//! while it waits (its future dropped) closes its connection the same way: the server then
//! grants the lock to a dead session, which ends as soon as it tries to answer.
//!
//! # Errors
//! No pooled connection within the acquire timeout, I/O and TLS failures, connection
//! exceptions (08), shutdowns (57P01..57P03), statement timeouts (57014) and too many
//! connections (53300) are `Unavailable`; the rest is `Backend`.

use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres};

use super::{CoordinationError, Coordinator, LockGuard, Result};
use crate::oci::{Digest, UploadId};

/// Settings of every lock session. A lock may be waited for as long as the holder's publish
/// takes (the caller bounds the wait by dropping it), so no statement timeout. Keepalives
/// every few seconds let the server notice a node that vanished without closing its
/// connection (power loss, a partition) in about half a minute instead of the operating
/// system's two hours, and drop its locks.
const SESSION_SETTINGS: [(&str, &str); 4] = [
    ("statement_timeout", "0"),
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "5"),
    ("tcp_keepalives_count", "3"),
];

/// Advisory locks on a PostgreSQL database. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct PgCoordinator {
    pool: PgPool,
    /// The schema the locks belong to (see the module doc).
    namespace: String,
}

impl PgCoordinator {
    /// Opens the coordinator's own pool of at most `max_connections` (each held lock keeps
    /// one), waiting at most `acquire_timeout` for a free one.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<PgCoordinator> {
        let mut options: PgConnectOptions = url.parse().map_err(backend)?;
        if options.get_application_name().is_none() {
            options = options.application_name("aerugo-locks");
        }
        options = options.options(SESSION_SETTINGS);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(acquire_timeout)
            // Detaching a connection without a runtime (see `Drop for Session`) must not make
            // the pool spawn a replacement.
            .min_connections(0)
            .connect_with(options)
            .await
            .map_err(coordination_error)?;
        let namespace: String = sqlx::query_scalar("SELECT coalesce(current_schema(), '')")
            .fetch_one(&pool)
            .await
            .map_err(coordination_error)?;
        Ok(PgCoordinator { pool, namespace })
    }

    fn key(&self, kind: &str, name: &str) -> i64 {
        lock_key(&self.namespace, kind, name)
    }

    /// Waits for the lock on `key`.
    async fn lock(&self, key: i64) -> Result<LockGuard> {
        let mut session = Session::acquire(&self.pool, key).await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(key)
            .execute(session.connection()?)
            .await
            .map_err(coordination_error)?;
        session.state = State::Held;
        Ok(LockGuard::new(session))
    }

    /// The lock on `key` if no session holds it.
    async fn try_lock(&self, key: i64) -> Result<Option<LockGuard>> {
        let mut session = Session::acquire(&self.pool, key).await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(session.connection()?)
            .await
            .map_err(coordination_error)?;
        if locked {
            session.state = State::Held;
            Ok(Some(LockGuard::new(session)))
        } else {
            session.state = State::Free;
            Ok(None)
        }
    }
}

#[async_trait]
impl Coordinator for PgCoordinator {
    async fn lock_digest(&self, digest: &Digest) -> Result<LockGuard> {
        self.lock(self.key("digest", digest.as_str())).await
    }

    async fn try_lock_upload(&self, id: &UploadId) -> Result<Option<LockGuard>> {
        self.try_lock(self.key("upload", id.as_str())).await
    }

    async fn try_lock_gc(&self) -> Result<Option<LockGuard>> {
        self.try_lock(self.key("gc", "")).await
    }
}

/// SHA-256 over the NUL-separated parts, first 8 bytes: uniform, and stable across builds
/// and nodes (unlike `std`'s hasher), so every node computes the same key.
fn lock_key(namespace: &str, kind: &str, name: &str) -> i64 {
    let hash = Sha256::new()
        .chain_update(namespace)
        .chain_update([0])
        .chain_update(kind)
        .chain_update([0])
        .chain_update(name)
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    i64::from_be_bytes(first)
}

/// What the session's connection holds, which decides what dropping it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A lock request may be in flight: the connection cannot go back to the pool.
    Unsure,
    /// The lock is held: unlock, then return the connection.
    Held,
    /// Nothing is held: return the connection as it is.
    Free,
}

/// One pooled connection used for one lock; the guard's contents.
struct Session {
    connection: Option<PoolConnection<Postgres>>,
    key: i64,
    state: State,
}

impl Session {
    async fn acquire(pool: &PgPool, key: i64) -> Result<Session> {
        let connection = pool.acquire().await.map_err(coordination_error)?;
        Ok(Session {
            connection: Some(connection),
            key,
            state: State::Unsure,
        })
    }

    fn connection(&mut self) -> Result<&mut PgConnection> {
        self.connection
            .as_deref_mut()
            .ok_or_else(|| CoordinationError::Backend("lock session without a connection".into()))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        let runtime = tokio::runtime::Handle::try_current().ok();
        match (self.state, runtime) {
            (State::Free, Some(_)) => drop(connection),
            (State::Held, Some(runtime)) => {
                runtime.spawn(unlock(connection, self.key));
            }
            // Closing the session is what releases a lock nobody can unlock.
            _ => drop(connection.detach()),
        }
    }
}

/// Releases `key` and returns the connection to the pool, or closes it when the unlock
/// cannot be confirmed (closing releases the lock anyway).
async fn unlock(mut connection: PoolConnection<Postgres>, key: i64) {
    let unlocked: sqlx::Result<bool> = sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .fetch_one(&mut *connection)
        .await;
    match unlocked {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(
                key,
                "advisory lock was not held at release; closing its session"
            );
            drop(connection.detach());
        }
        Err(error) => {
            tracing::warn!(%error, key, "releasing an advisory lock failed; closing its session");
            drop(connection.detach());
        }
    }
}

fn backend<E: std::error::Error + Send + Sync + 'static>(e: E) -> CoordinationError {
    CoordinationError::Backend(Box::new(e))
}

/// `Unavailable` for what retrying later can fix (see the module doc), else `Backend`.
fn coordination_error(e: sqlx::Error) -> CoordinationError {
    let unavailable = match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "57014" | "53300")
        }),
        _ => false,
    };
    if unavailable {
        CoordinationError::Unavailable(Box::new(e))
    } else {
        backend(e)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const SETTLE: Duration = Duration::from_secs(1);

    async fn coordinator(url: &str, max_connections: u32) -> PgCoordinator {
        PgCoordinator::connect(url, max_connections, Duration::from_secs(2))
            .await
            .expect("connect")
    }

    /// Two nodes: two coordinators, each with its own pool, on one database.
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
        // The connection went back to a's pool unlocked: a can take the lock again.
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
    async fn a_dead_connection_releases_its_locks() {
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
        // What a crash or a network partition does to a node: its session ends.
        let key = a.key("upload", id.as_str());
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (
                 SELECT pg_terminate_backend(pid) FROM pg_locks
                 WHERE locktype = 'advisory' AND granted AND objsubid = 1
                   AND classid::bigint = $1 AND objid::bigint = $2) AS t",
        )
        .bind(i64::from((key >> 32) as u32))
        .bind(i64::from(key as u32))
        .fetch_one(&b.pool)
        .await
        .expect("terminate the holder's session");
        assert_eq!(killed, 1, "exactly one session held the lock");
        drop(free_within_settle(&b, &id).await);
        // Releasing on the dead session fails quietly; a keeps working.
        drop(held);
        assert!(
            a.try_lock_upload(&upload())
                .await
                .expect("try_lock")
                .is_some()
        );
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
        // The abandoned waiter's session is closed: it cannot sit on the lock.
        for node in [&a, &b] {
            let again = tokio::time::timeout(SETTLE * 5, node.lock_digest(&d))
                .await
                .expect("the digest is free again")
                .expect("lock");
            drop(again);
        }
    }

    #[tokio::test]
    async fn each_held_lock_takes_a_connection_and_a_full_pool_is_unavailable() {
        let Some(url) = crate::testkit::postgres_url() else {
            return;
        };
        let a = coordinator(&url, 1).await;
        let _held = a.lock_digest(&digest()).await.expect("lock");
        let err = a.try_lock_upload(&upload()).await;
        assert!(
            matches!(err, Err(CoordinationError::Unavailable(_))),
            "{err:?}"
        );
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
}
