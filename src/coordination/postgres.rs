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
//! # Sessions
//! A node's locks share a few dedicated lock sessions (`lock_connections`, default 4), not a
//! connection each: a PATCH holds its upload's lock for its whole body, so a connection per
//! lock made a node's connection count grow with its uploads in flight, and a few busy
//! nodes exhausted PostgreSQL's `max_connections`. A key always uses the same session (its
//! key modulo the count), since only that session can unlock it. The sessions are separate
//! from the metadata pool, so lock holders never take the connection a publish needs.
//!
//! An advisory lock is re-entrant within its session: two requests of one node asking the
//! same session for one key would both get it. So a key is first locked in-process
//! ([`KeyedLocks`]), and only its in-process holder asks PostgreSQL. `pg_advisory_lock`
//! would park the shared session for the whole wait, so waiting (`lock_digest`) is
//! `pg_try_advisory_lock` retried with a backoff of 5 ms doubling to 100 ms, with the
//! in-process lock held (same-node waiters queue fairly behind it) and the session free
//! between tries. A session is held for one round trip at a time, bounded by the acquire
//! timeout (then `Unavailable`).
//!
//! # Release, and its ordering
//! Dropping a guard (1) queues the key on its session's pending unlocks, (2) spawns a flush of
//! that queue (on the current runtime, else on the runtime the coordinator was opened on, so
//! a guard dropped on a plain thread is released as promptly), and only then (3) releases
//! the in-process lock. Every session operation sends the queued unlocks before anything
//! else, in one round trip. So a same-node waiter, which needs the in-process lock and then
//! the session, always finds the previous holder's unlock sent before its own try: the
//! session never holds a key twice. Another node sees the release when the flush (or any
//! earlier operation on that session) runs: at once, or at worst on the next use of the
//! session when no runtime is left to run the flush.
//!
//! # Cancellation
//! The try and the guard it yields are built in a spawned task; the caller only awaits the
//! task. A caller dropped mid-try (its request gone) drops the task's handle, not the task,
//! which finishes and drops its guard, which unlocks as above: a granted lock always has a
//! guard. Cancelling the query itself would leave the shared connection in an unknown state,
//! and closing it would release every other holder's lock on it. A caller dropped between
//! tries holds only the in-process lock.
//!
//! # Failed sessions
//! A session whose connection fails (I/O error, a killed backend, a timeout mid-query) is
//! closed; PostgreSQL releases every lock it held, and the next operation connects anew
//! (each connection is a new generation; unlocks queued for an older one are dropped). A
//! connection found dead when it is next used is replaced and the operation retried once.
//! The holders of locks on a failed session are not told: they lost their locks, as a node
//! whose connection drops always does. A failed session is logged as a warning.
//!
//! # Errors
//! Connect and I/O failures, a session that does not answer in time, connection exceptions
//! (08), shutdowns (57P01..57P03), statement timeouts (57014) and too many connections
//! (53300) are `Unavailable`; the rest is `Backend`.

mod session;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::runtime::Handle;

use self::session::LockSession;
use super::{CoordinationError, Coordinator, LockGuard, Result};
use crate::locks::{KeyedGuard, KeyedLocks};
use crate::oci::{Digest, UploadId};

/// Settings of every lock session. No statement timeout: no lock statement waits, and the
/// session bounds each round trip itself (a role's timeout must not end one). Keepalives
/// every few seconds let the server notice a node that vanished without closing its
/// connection (power loss, a partition) in about half a minute instead of the operating
/// system's two hours, and drop its locks.
const SESSION_SETTINGS: [(&str, &str); 4] = [
    ("statement_timeout", "0"),
    ("tcp_keepalives_idle", "10"),
    ("tcp_keepalives_interval", "5"),
    ("tcp_keepalives_count", "3"),
];

/// The first and the longest pause between two tries of a waited-for lock.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// Advisory locks on a PostgreSQL database. Cloning shares the sessions.
#[derive(Clone)]
pub struct PgCoordinator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCoordinator")
            .field("namespace", &self.inner.namespace)
            .field("sessions", &self.inner.sessions.len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// The schema the locks belong to (see the module doc).
    namespace: String,
    sessions: Box<[Arc<LockSession>]>,
    /// This node's holders, one per key (see the module doc).
    local: KeyedLocks<i64>,
    /// The runtime the coordinator was opened on: where guards dropped outside any runtime
    /// send their unlocks.
    runtime: Option<Handle>,
}

impl PgCoordinator {
    /// Opens a coordinator of `sessions` lock sessions (at least 1). The first connects now,
    /// so an unreachable database fails here; the others on first use. `timeout` bounds
    /// connecting and each round trip of a session.
    pub async fn connect(url: &str, sessions: u32, timeout: Duration) -> Result<PgCoordinator> {
        let mut options: PgConnectOptions = url.parse().map_err(backend)?;
        if options.get_application_name().is_none() {
            options = options.application_name("aerugo-locks");
        }
        options = options.options(SESSION_SETTINGS);
        let opened = async {
            let mut connection = PgConnection::connect_with(&options).await?;
            let namespace: String = sqlx::query_scalar("SELECT coalesce(current_schema(), '')")
                .fetch_one(&mut connection)
                .await?;
            Ok::<_, sqlx::Error>((connection, namespace))
        };
        let (first, namespace) = tokio::time::timeout(timeout, opened)
            .await
            .map_err(|_| {
                CoordinationError::Unavailable(format!("no lock session within {timeout:?}").into())
            })?
            .map_err(coordination_error)?;
        let mut first = Some(first);
        let sessions = (0..sessions.max(1) as usize)
            .map(|index| {
                let connection = first.take();
                Arc::new(LockSession::new(
                    index,
                    options.clone(),
                    timeout,
                    connection,
                ))
            })
            .collect();
        Ok(PgCoordinator {
            inner: Arc::new(Inner {
                namespace,
                sessions,
                local: KeyedLocks::default(),
                runtime: Handle::try_current().ok(),
            }),
        })
    }

    fn key(&self, kind: &str, name: &str) -> i64 {
        lock_key(&self.inner.namespace, kind, name)
    }

    /// The session that locks `key`, always the same one.
    fn session(&self, key: i64) -> Arc<LockSession> {
        let sessions = &self.inner.sessions;
        let index = (key as u64 % sessions.len() as u64) as usize;
        Arc::clone(&sessions[index])
    }

    /// Waits for the lock on `key`.
    async fn lock(&self, key: i64) -> Result<LockGuard> {
        let mut local = self.inner.local.lock(&key).await;
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.try_on_session(key, local).await? {
                Ok(held) => return Ok(LockGuard::new(held)),
                Err(returned) => local = returned,
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The lock on `key` if no request on any node holds it.
    async fn try_lock(&self, key: i64) -> Result<Option<LockGuard>> {
        let Some(local) = self.inner.local.try_lock(&key) else {
            return Ok(None);
        };
        let held = self.try_on_session(key, local).await?;
        Ok(held.ok().map(LockGuard::new))
    }

    /// One `pg_try_advisory_lock` by the in-process holder of `key`: the held lock, or the
    /// in-process lock back when another node holds the key. Runs in its own task so that a
    /// caller dropped mid-try cannot lose a granted lock (see the module doc).
    async fn try_on_session(
        &self,
        key: i64,
        local: KeyedGuard<i64>,
    ) -> Result<Result<HeldLock, KeyedGuard<i64>>> {
        let session = self.session(key);
        let runtime = self.inner.runtime.clone();
        let attempt = async move {
            Ok(match session.try_lock(key).await? {
                Some(generation) => Ok(HeldLock {
                    session,
                    key,
                    generation,
                    runtime,
                    _local: local,
                }),
                None => Err(local),
            })
        };
        let spawner = Handle::try_current()
            .ok()
            .or_else(|| self.inner.runtime.clone())
            .ok_or_else(|| CoordinationError::Backend("no runtime to lock on".into()))?;
        spawner.spawn(attempt).await.map_err(backend)?
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

/// A granted advisory lock; the guard's contents.
struct HeldLock {
    session: Arc<LockSession>,
    key: i64,
    /// The session's connection the lock was taken on.
    generation: u64,
    runtime: Option<Handle>,
    /// Dropped after `drop` has queued the unlock (see the module doc's ordering).
    _local: KeyedGuard<i64>,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.session.release(self.key, self.generation);
        let session = Arc::clone(&self.session);
        let flush = async move { session.flush().await };
        // Without a live runtime the unlock waits for the session's next operation.
        if let Some(runtime) = Handle::try_current().ok().or_else(|| self.runtime.clone()) {
            runtime.spawn(flush);
        }
    }
}

fn backend<E: std::error::Error + Send + Sync + 'static>(e: E) -> CoordinationError {
    CoordinationError::Backend(Box::new(e))
}

/// `Unavailable` for what retrying later can fix (see the module doc), else `Backend`.
fn coordination_error(e: sqlx::Error) -> CoordinationError {
    let unavailable = match &e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
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
mod tests;
