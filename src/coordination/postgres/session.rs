//! One dedicated lock session: a PostgreSQL connection that many advisory locks share, with
//! the unlocks its dropped guards left for it.

use std::sync::{Mutex as StdMutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::Mutex;

use super::{CoordinationError, Result, coordination_error};

/// A lock session. Every operation holds `state` for one round trip only (never while a
/// caller waits or sleeps), and first sends the session's pending unlocks.
pub(super) struct LockSession {
    index: usize,
    options: PgConnectOptions,
    /// Bound on one operation: waiting for the session, connecting, the round trip.
    timeout: Duration,
    state: Mutex<State>,
    /// Unlocks of dropped guards, not sent yet. Emptied only by a holder of `state`, so an
    /// operation that holds `state` has sent every unlock queued before it took `state`.
    pending: StdMutex<Vec<Pending>>,
}

struct State {
    /// `None` after a failure: the next operation connects afresh.
    connection: Option<PgConnection>,
    /// Counts the connections this session has opened. A lock belongs to the connection
    /// it was taken on; once that connection is gone, so is the lock.
    generation: u64,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    key: i64,
    generation: u64,
}

impl LockSession {
    /// A session that starts on `connection`, or connects on first use.
    pub(super) fn new(
        index: usize,
        options: PgConnectOptions,
        timeout: Duration,
        connection: Option<PgConnection>,
    ) -> LockSession {
        let generation = u64::from(connection.is_some());
        LockSession {
            index,
            options,
            timeout,
            state: Mutex::new(State {
                connection,
                generation,
            }),
            pending: StdMutex::new(Vec::new()),
        }
    }

    /// `pg_try_advisory_lock(key)`: the generation of the connection that got it, or `None`
    /// when another session holds it.
    ///
    /// A connection that turns out to have died while idle (a restart, a failover, a killed
    /// backend) is replaced and the attempt repeated once: its locks died with it, so a
    /// fresh session can only answer more truly.
    pub(super) async fn try_lock(&self, key: i64) -> Result<Option<u64>> {
        let attempt = async {
            let mut state = self.state.lock().await;
            let was_open = state.connection.is_some();
            match self.try_lock_on(&mut state, key).await {
                Err(e) if was_open && state.connection.is_none() => {
                    tracing::debug!(error = %e, session = self.index, "lock session was dead; retrying on a new one");
                    self.try_lock_on(&mut state, key).await
                }
                result => result,
            }
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| self.timed_out())?
            .map_err(coordination_error)
    }

    /// Queues the unlock of `key`, taken on connection `generation`; the next operation on
    /// the session (see [`LockSession::flush`]) sends it.
    pub(super) fn release(&self, key: i64, generation: u64) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Pending { key, generation });
    }

    /// Sends the queued unlocks now, if no other operation did.
    pub(super) async fn flush(&self) {
        if self.pending_is_empty() {
            return;
        }
        let flushed = async {
            let mut state = self.state.lock().await;
            let generation = state.generation;
            let Some(mut connection) = state.connection.take() else {
                // Nothing to unlock: the connection those locks were taken on is gone.
                self.take_pending(generation);
                return;
            };
            match self.send_unlocks(&mut connection, generation).await {
                Ok(()) => state.connection = Some(connection),
                Err(e) => self.lost(generation, &e),
            }
        };
        if tokio::time::timeout(self.timeout, flushed).await.is_err() {
            tracing::warn!(
                session = self.index,
                "lock session did not answer in time; its unlocks wait for its next use"
            );
        }
    }

    /// One attempt: connect if needed, send the pending unlocks, try the lock. The
    /// connection is out of `state` while in use, so an error, a timeout or a cancelled
    /// future drops (closes) it: a connection whose state is unknown is never reused, and
    /// closing it releases whatever it held.
    async fn try_lock_on(&self, state: &mut State, key: i64) -> sqlx::Result<Option<u64>> {
        let mut connection = match state.connection.take() {
            Some(connection) => connection,
            None => {
                let connection = PgConnection::connect_with(&self.options).await?;
                state.generation += 1;
                connection
            }
        };
        let generation = state.generation;
        if let Err(e) = self.send_unlocks(&mut connection, generation).await {
            self.lost(generation, &e);
            return Err(e);
        }
        let granted = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut connection)
            .await;
        match &granted {
            Err(e) if breaks_session(e) => self.lost(generation, e),
            _ => state.connection = Some(connection),
        }
        Ok(granted?.then_some(generation))
    }

    /// Unlocks, in one round trip, every pending key taken on this connection; the others
    /// were released by PostgreSQL when their connection ended. After an error the caller
    /// must drop the connection: closing it releases the keys this call took off the queue.
    async fn send_unlocks(
        &self,
        connection: &mut PgConnection,
        generation: u64,
    ) -> sqlx::Result<()> {
        let keys = self.take_pending(generation);
        if keys.is_empty() {
            return Ok(());
        }
        let not_held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM unnest($1::bigint[]) AS k WHERE NOT pg_advisory_unlock(k)",
        )
        .bind(&keys)
        .fetch_one(connection)
        .await?;
        if not_held > 0 {
            tracing::warn!(
                session = self.index,
                not_held,
                "released advisory locks this session did not hold"
            );
        }
        Ok(())
    }

    /// The pending keys of connection `generation`; the others are dropped.
    fn take_pending(&self, generation: u64) -> Vec<i64> {
        let pending =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        pending
            .into_iter()
            .filter(|p| p.generation == generation)
            .map(|p| p.key)
            .collect()
    }

    fn pending_is_empty(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    fn lost(&self, generation: u64, error: &sqlx::Error) {
        tracing::warn!(
            %error,
            session = self.index,
            generation,
            "lock session failed: PostgreSQL released every lock it held; reconnecting on next use"
        );
    }

    fn timed_out(&self) -> CoordinationError {
        CoordinationError::Unavailable(
            format!(
                "lock session {} did not answer within {:?}",
                self.index, self.timeout
            )
            .into(),
        )
    }
}

/// Whether the connection cannot be trusted after `e`: anything but an error the server
/// answered on a connection it keeps (a connection exception or shutdown ends it).
fn breaks_session(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => true,
    }
}
