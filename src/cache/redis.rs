//! `RedisCache`: the [`Cache`] the nodes of a cluster share (docs/redis.md).
//!
//! One multiplexed connection (the `redis` crate's `ConnectionManager`), every key under a
//! configured prefix, every command bounded by a timeout. Redis failing never fails a request:
//! a failure is a miss or a no-op, and after one the cache stops asking Redis for
//! `retry_after` (a circuit breaker), then lets one request probe it on a fresh connection.
//! So a dead Redis costs a request at most one timeout per `retry_after`, not one each.
//!
//! A `delete` that cannot reach Redis is remembered and sent before this node uses Redis
//! again, so the node never reads back what it removed, and the others stop seeing it as soon
//! as this node reaches Redis.
//!
//! `rediss://` URLs speak TLS (rustls), trusting the system's roots or, with a CA file, only
//! the certificates in it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{
    Client, Cmd, ConnectionAddr, ErrorKind, FromRedisValue, RedisError, ServerErrorKind,
    TlsCertificates,
};
use async_trait::async_trait;
use bytes::Bytes;

use super::{Cache, Op, Outcome, Recorder};

/// Where the Redis cache connects and how it treats a failing server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://…` for TLS.
    pub url: String,
    /// PEM certificates to trust instead of the system's roots (a private CA), for TLS.
    pub ca_file: Option<PathBuf>,
    /// Prepended to every key, so deployments (or tests) can share one Redis.
    pub key_prefix: String,
    /// Bound on each command, connecting included.
    pub timeout: Duration,
    /// How long to stop asking Redis after it failed.
    pub retry_after: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: "redis://127.0.0.1:6379".to_owned(),
            ca_file: None,
            key_prefix: "aerugo:".to_owned(),
            timeout: Duration::from_millis(250),
            retry_after: Duration::from_secs(5),
        }
    }
}

/// Why the cache could not be set up. (An unreachable server is not a reason: the cache
/// starts failing and recovers when Redis answers.)
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(#[source] RedisError),
    #[error("a Redis CA file is for TLS, which needs a rediss:// URL")]
    CaFileWithoutTls,
    #[error("cannot read the Redis CA file {path}: {source}")]
    UnreadableCaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Redis CA file {path} holds no PEM certificate")]
    NoCertificateInCaFile { path: PathBuf },
    #[error("the Redis CA file {path} is not usable: {source}")]
    InvalidCaFile {
        path: PathBuf,
        #[source]
        source: RedisError,
    },
}

/// Why [`RedisCache::check`] got no answer.
#[derive(Debug, thiserror::Error)]
#[error("Redis at {server} does not answer: {reason}")]
pub struct RedisUnavailable {
    server: String,
    reason: String,
}

/// The longest TTL sent to Redis (about 35 years): a longer one would overflow its expiry
/// clock and be refused. Shorter than asked is within the contract ("at most `ttl`").
const MAX_TTL_MS: u64 = 1 << 40;

/// Deletes remembered while Redis is unreachable; beyond this, new ones are dropped (and the
/// entries live out their TTL) so an outage cannot grow memory without bound.
const MAX_UNSENT_DELETES: usize = 10_000;

/// Keys per DEL when the remembered deletes are sent.
const DELETE_BATCH: usize = 500;

/// INCR, then a deadline for a counter that has none (the one INCR just created): the window
/// is fixed by the first increment. One script, so the two are atomic.
const INCREMENT_SCRIPT: &str = "local n = redis.call('INCR', KEYS[1]) \
     if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end \
     return n";

/// A [`Cache`] in Redis, shared by every node pointed at the same server and prefix.
pub struct RedisCache {
    client: Client,
    config: ConnectionManagerConfig,
    /// Replaced by a fresh one for every probe, so a connection that hangs (a black-holed
    /// server) or a failed reconnect does not outlive the outage.
    connection: Mutex<ConnectionManager>,
    key_prefix: String,
    timeout: Duration,
    health: Health,
    recorder: Recorder,
    /// `host:port` of the server, for logs (the URL may carry a password).
    server: String,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("server", &self.server)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why a command produced no value.
enum Failure {
    /// Redis was not asked: it failed recently.
    Skipped,
    /// Redis could not be reached or did not answer in time.
    Unavailable,
    /// Redis answered with an error about this command (e.g. INCR of a non-number).
    Rejected,
}

impl Failure {
    fn outcome(&self) -> Outcome {
        match self {
            Failure::Skipped => Outcome::Skipped,
            Failure::Unavailable | Failure::Rejected => Outcome::Error,
        }
    }
}

enum SendError {
    Unavailable(String),
    Rejected(RedisError),
}

/// Errors in which Redis itself answered and is healthy: the command was at fault. Everything
/// else (I/O, timeouts, LOADING, MASTERDOWN, READONLY after a failover, ...) means the server
/// cannot serve us now.
fn is_rejection(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Server(
            ServerErrorKind::ResponseError
                | ServerErrorKind::ExecAbort
                | ServerErrorKind::NoScript
                | ServerErrorKind::CrossSlot
        ) | ErrorKind::Extension
            | ErrorKind::UnexpectedReturnType
    )
}

fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MS)
}

impl RedisCache {
    /// Sets the cache up and checks once whether Redis answers. It does not have to: a cache
    /// that cannot reach Redis starts as failing (every call a miss or no-op) and recovers on
    /// its own.
    pub async fn connect(settings: &RedisSettings) -> Result<RedisCache, RedisSetupError> {
        RedisCache::connect_with(settings, Recorder::global("redis")).await
    }

    async fn connect_with(
        settings: &RedisSettings,
        recorder: Recorder,
    ) -> Result<RedisCache, RedisSetupError> {
        let client = client(settings)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            // Retrying is the breaker's job, at its pace; a connection attempt is one try.
            .set_number_of_retries(0);
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(RedisSetupError::InvalidUrl)?;
        let server = client.get_connection_info().addr().to_string();
        let cache = RedisCache {
            client,
            config,
            connection: Mutex::new(connection),
            key_prefix: settings.key_prefix.clone(),
            timeout: settings.timeout,
            health: Health::new(settings.retry_after),
            recorder,
            server,
        };
        if cache
            .query::<String>(&::redis::cmd("PING"), None)
            .await
            .is_ok()
        {
            tracing::info!(server = %cache.server, "Redis cache connected");
        }
        Ok(cache)
    }

    /// Asks Redis once on a fresh connection, whatever the breaker says, and tells why it
    /// did not answer (a refused connection, a certificate it does not trust, ...): for
    /// `admin check-config`.
    ///
    /// # Errors
    /// `RedisUnavailable` with Redis's or the connection's own words.
    pub async fn check(&self) -> Result<(), RedisUnavailable> {
        let unavailable = |reason: String| RedisUnavailable {
            server: self.server.clone(),
            reason,
        };
        let mut connection =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
                .map_err(|e| unavailable(e.to_string()))?;
        match self
            .send::<String>(&mut connection, &::redis::cmd("PING"))
            .await
        {
            Ok(_) => Ok(()),
            Err(SendError::Unavailable(reason)) => Err(unavailable(reason)),
            Err(SendError::Rejected(error)) => Err(unavailable(error.to_string())),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    /// Sends `cmd` unless Redis is known to be failing. `delete_of` names the key a DEL
    /// removes, so a DEL that cannot be sent is remembered.
    async fn query<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
        delete_of: Option<&str>,
    ) -> Result<T, Failure> {
        let reply = match self.health.admit(delete_of) {
            Admission::Wait => return Err(Failure::Skipped),
            Admission::Go => {
                let mut connection = lock(&self.connection).clone();
                let reply = self.send(&mut connection, cmd).await;
                if let Err(SendError::Unavailable(reason)) = &reply
                    && self.health.failed(delete_of)
                {
                    tracing::warn!(
                        server = %self.server,
                        error = %reason,
                        retry_after = ?self.health.retry_after,
                        "Redis cache unavailable; serving misses until it answers"
                    );
                }
                reply
            }
            Admission::Probe(probe) => self.probe(probe, cmd).await,
        };
        reply.map_err(|error| match error {
            SendError::Unavailable(_) => Failure::Unavailable,
            SendError::Rejected(error) => {
                tracing::debug!(server = %self.server, %error, "Redis refused a cache command");
                Failure::Rejected
            }
        })
    }

    /// Tries Redis again on a fresh connection: first the deletes this node still owes, then
    /// `cmd`. Redis is declared up only once both went through.
    async fn probe<T: FromRedisValue>(
        &self,
        mut probe: Probe<'_>,
        cmd: &Cmd,
    ) -> Result<T, SendError> {
        let mut connection =
            match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
            {
                Ok(connection) => connection,
                Err(error) => return Err(self.probe_failed(probe, error.to_string())),
            };
        *lock(&self.connection) = connection.clone();
        let owed = probe.unsent_deletes();
        if let Err(reason) = self.send_deletes(&probe, &mut connection, &owed).await {
            return Err(self.probe_failed(probe, reason));
        }
        let reply = match self.send(&mut connection, cmd).await {
            Err(SendError::Unavailable(reason)) => return Err(self.probe_failed(probe, reason)),
            reply => reply,
        };
        // Deletes that came in while the probe ran go out before anyone else uses Redis.
        loop {
            let owed = probe.finish();
            if owed.is_empty() {
                break;
            }
            if let Err(reason) = self.send_deletes(&probe, &mut connection, &owed).await {
                return Err(self.probe_failed(probe, reason));
            }
        }
        tracing::info!(server = %self.server, "Redis cache answers again");
        reply
    }

    fn probe_failed(&self, probe: Probe<'_>, reason: String) -> SendError {
        tracing::debug!(server = %self.server, error = %reason, "Redis cache still unavailable");
        probe.fail();
        SendError::Unavailable(reason)
    }

    async fn send<T: FromRedisValue>(
        &self,
        connection: &mut ConnectionManager,
        cmd: &Cmd,
    ) -> Result<T, SendError> {
        match tokio::time::timeout(self.timeout, cmd.query_async(connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) if is_rejection(&error) => Err(SendError::Rejected(error)),
            Ok(Err(error)) => Err(SendError::Unavailable(error.to_string())),
            Err(_) => Err(SendError::Unavailable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Sends the owed deletes `keys` (already prefixed).
    async fn send_deletes(
        &self,
        probe: &Probe<'_>,
        connection: &mut ConnectionManager,
        keys: &[String],
    ) -> Result<(), String> {
        for batch in keys.chunks(DELETE_BATCH) {
            let mut del = ::redis::cmd("DEL");
            del.arg(batch);
            match self.send::<()>(connection, &del).await {
                Ok(()) => probe.sent(batch),
                Err(SendError::Unavailable(reason)) => return Err(reason),
                Err(SendError::Rejected(error)) => return Err(error.to_string()),
            }
        }
        Ok(())
    }

    /// Runs `cmd` and counts it: `Some` answered, `None` failed.
    async fn counted<T: FromRedisValue>(
        &self,
        op: Op,
        cmd: &Cmd,
        delete_of: Option<&str>,
        outcome: impl FnOnce(&T) -> Outcome,
    ) -> Option<T> {
        match self.query::<T>(cmd, delete_of).await {
            Ok(value) => {
                self.recorder.record(op, outcome(&value));
                Some(value)
            }
            Err(failure) => {
                self.recorder.record(op, failure.outcome());
                None
            }
        }
    }

    async fn remove(&self, op: Op, key: &str) {
        let key = self.key(key);
        let mut del = ::redis::cmd("DEL");
        del.arg(&key);
        self.counted::<()>(op, &del, Some(&key), |_| Outcome::Ok)
            .await;
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Option<Bytes> {
        let mut get = ::redis::cmd("GET");
        get.arg(self.key(key));
        self.counted::<Option<Vec<u8>>>(Op::Get, &get, None, Outcome::of_read)
            .await
            .flatten()
            .map(Bytes::from)
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) {
        if ttl.is_zero() {
            return self.remove(Op::Set, key).await;
        }
        let mut set = ::redis::cmd("SET");
        set.arg(self.key(key))
            .arg(value.as_ref())
            .arg("PX")
            .arg(ttl_millis(ttl));
        self.counted::<()>(Op::Set, &set, None, |_| Outcome::Ok)
            .await;
    }

    async fn delete(&self, key: &str) {
        self.remove(Op::Delete, key).await;
    }

    async fn increment(&self, key: &str, ttl: Duration) -> Option<u64> {
        let mut eval = ::redis::cmd("EVAL");
        eval.arg(INCREMENT_SCRIPT)
            .arg(1)
            .arg(self.key(key))
            .arg(ttl_millis(ttl));
        let count = self
            .counted::<i64>(Op::Increment, &eval, None, |_| Outcome::Ok)
            .await?;
        // Negative only if something other than `increment` wrote the key.
        u64::try_from(count).ok()
    }

    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Duration) -> Option<bool> {
        let mut set = ::redis::cmd("SET");
        set.arg(self.key(key))
            .arg(value.as_ref())
            .arg("NX")
            .arg("PX")
            .arg(ttl_millis(ttl));
        // OK when stored, nil when the key was there.
        self.counted::<Option<String>>(Op::SetIfAbsent, &set, None, |_| Outcome::Ok)
            .await
            .map(|stored| stored.is_some())
    }
}

/// The client for the settings' URL; for `rediss://` with the CA file's certificates as the
/// only roots when one is given (else the system's).
fn client(settings: &RedisSettings) -> Result<Client, RedisSetupError> {
    let client = Client::open(settings.url.as_str()).map_err(RedisSetupError::InvalidUrl)?;
    let tls = matches!(
        client.get_connection_info().addr(),
        ConnectionAddr::TcpTls { .. }
    );
    if tls {
        install_crypto_provider();
    }
    let Some(path) = &settings.ca_file else {
        return Ok(client);
    };
    if !tls {
        return Err(RedisSetupError::CaFileWithoutTls);
    }
    let pem = std::fs::read(path).map_err(|source| RedisSetupError::UnreadableCaFile {
        path: path.clone(),
        source,
    })?;
    // The redis crate would accept an empty file and then trust nothing.
    if !pem_has_certificate(&pem) {
        return Err(RedisSetupError::NoCertificateInCaFile { path: path.clone() });
    }
    let certificates = TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    Client::build_with_tls(client.get_connection_info().clone(), certificates).map_err(|source| {
        RedisSetupError::InvalidCaFile {
            path: path.clone(),
            source,
        }
    })
}

fn pem_has_certificate(pem: &[u8]) -> bool {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem).next().is_some()
}

/// The redis crate builds its TLS configuration with rustls's process-wide crypto provider,
/// which rustls cannot pick by itself in this build (it has both ring, for the edge, and
/// aws-lc-rs): aws-lc-rs, the one the HTTP clients and the database use, unless one is set.
fn install_crypto_provider() {
    // An error only says a provider is installed already, which is all that is needed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one still holds consistent data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The circuit breaker: whether Redis is asked, and the deletes it still owes the cluster.
struct Health {
    retry_after: Duration,
    state: Mutex<HealthState>,
}

struct HealthState {
    mode: Mode,
    /// Prefixed keys whose DEL could not be sent.
    unsent_deletes: HashSet<String>,
    /// Whether a delete was dropped in this outage (logged once).
    dropped_deletes: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    Down {
        retry_at: Instant,
    },
    /// One request is trying Redis; the others wait it out.
    Probing,
}

enum Admission<'a> {
    /// Redis is up: send.
    Go,
    /// Redis failed and its pause is over: this request tries it.
    Probe(Probe<'a>),
    /// Redis failed recently: do not send.
    Wait,
}

impl Health {
    fn new(retry_after: Duration) -> Health {
        Health {
            retry_after,
            state: Mutex::new(HealthState {
                mode: Mode::Up,
                unsent_deletes: HashSet::new(),
                dropped_deletes: false,
            }),
        }
    }

    /// Whether a request may use Redis. A delete that may not is remembered.
    fn admit(&self, delete_of: Option<&str>) -> Admission<'_> {
        let mut state = lock(&self.state);
        if state.mode == Mode::Up {
            return Admission::Go;
        }
        // Owed even when this request probes: the probe sends what is owed first.
        if let Some(key) = delete_of {
            state.owe_delete(key);
        }
        match state.mode {
            Mode::Down { retry_at } if Instant::now() >= retry_at => {
                state.mode = Mode::Probing;
                Admission::Probe(Probe {
                    health: self,
                    settled: false,
                })
            }
            _ => Admission::Wait,
        }
    }

    /// A request sent while Redis was up failed. True when this failure took Redis down (the
    /// one to log).
    fn failed(&self, delete_of: Option<&str>) -> bool {
        let mut state = lock(&self.state);
        if let Some(key) = delete_of {
            state.owe_delete(key);
        }
        if state.mode != Mode::Up {
            return false;
        }
        state.mode = Mode::Down {
            retry_at: Instant::now() + self.retry_after,
        };
        true
    }
}

impl HealthState {
    fn owe_delete(&mut self, key: &str) {
        if self.unsent_deletes.len() < MAX_UNSENT_DELETES {
            self.unsent_deletes.insert(key.to_owned());
        } else if !std::mem::replace(&mut self.dropped_deletes, true) {
            tracing::warn!(
                limit = MAX_UNSENT_DELETES,
                "too many cache deletes waiting for Redis; further entries live out their TTL"
            );
        }
    }
}

/// The one request trying a failing Redis. Dropped unsettled (the request was cancelled), it
/// lets the next request probe at once.
struct Probe<'a> {
    health: &'a Health,
    settled: bool,
}

impl Probe<'_> {
    /// The deletes owed so far. They stay owed until [`Probe::sent`], so a probe that fails or
    /// is cancelled half-way loses none.
    fn unsent_deletes(&self) -> Vec<String> {
        lock(&self.health.state)
            .unsent_deletes
            .iter()
            .cloned()
            .collect()
    }

    fn sent(&self, keys: &[String]) {
        let mut state = lock(&self.health.state);
        for key in keys {
            state.unsent_deletes.remove(key);
        }
    }

    /// Redis answered: up, unless deletes came in meanwhile (returned, to send first).
    fn finish(&mut self) -> Vec<String> {
        let mut state = lock(&self.health.state);
        if state.unsent_deletes.is_empty() {
            state.mode = Mode::Up;
            state.dropped_deletes = false;
            self.settled = true;
            return Vec::new();
        }
        state.unsent_deletes.iter().cloned().collect()
    }

    /// Redis is still failing.
    fn fail(mut self) {
        let mut state = lock(&self.health.state);
        state.mode = Mode::Down {
            retry_at: Instant::now() + self.health.retry_after,
        };
        self.settled = true;
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if !self.settled {
            lock(&self.health.state).mode = Mode::Down {
                retry_at: Instant::now(),
            };
        }
    }
}

#[cfg(test)]
mod tests;
