//! Wiring: turns a [`Config`] into the seams, the registry and the running server.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::accounts::{AccountName, AccountStore, NewUser};
use crate::api::origin::TrustedProxies;
use crate::api::{self, AppState, ConnectionPolicy};
use crate::auth::{Auth, AuthSettings, KeyRing, SigningKey, TokenParties, password};
use crate::cache::Cache;
use crate::cache::memory::MemoryCache;
use crate::config::{
    CacheConfig, CacheKind, Config, DatabaseBackend, DatabaseConfig, S3StorageConfig, ServerConfig,
    StorageConfig,
};
use crate::coordination::Coordinator;
use crate::coordination::local::LocalCoordinator;
use crate::metadata::MetadataStore;
use crate::metadata::sqlite::SqliteStore;
use crate::registry::quota::QuotaLookupError;
use crate::registry::{Backends, NamespaceQuotas, Registry, RegistryError, Settings};
use crate::storage::BlobStore;
use crate::storage::fs::FsBlobStore;
use crate::storage::timed::TimedBlobStore;

/// Opens the configured backends and builds the registry on them.
pub async fn build_registry(config: &Config) -> anyhow::Result<Arc<Registry>> {
    Ok(registry_on(config, open_stores(config).await?))
}

/// The registry on the stores, enforcing the account store's namespace quotas.
fn registry_on(config: &Config, stores: Stores) -> Arc<Registry> {
    let settings = Settings {
        max_manifest_bytes: config.registry.max_manifest_bytes,
        cache_ttl: Duration::from_secs(config.cache.tag_ttl_seconds),
    };
    let quotas = Arc::new(AccountQuotas(stores.accounts));
    Arc::new(Registry::new(stores.backends, settings).with_quotas(quotas))
}

/// The registry's quota hook answered from the account store: a namespace that names no
/// user or organisation has no quota.
struct AccountQuotas(Arc<dyn AccountStore>);

#[async_trait::async_trait]
impl NamespaceQuotas for AccountQuotas {
    async fn quota(&self, namespace: &str) -> Result<Option<u64>, QuotaLookupError> {
        let Ok(name) = namespace.parse::<AccountName>() else {
            return Ok(None);
        };
        let found = self.0.namespace(&name).await?;
        Ok(found.and_then(|namespace| namespace.quota_bytes))
    }
}

/// Every seam a core node uses: the registry's four and the account store beside them.
pub struct Stores {
    pub backends: Backends,
    /// The same database as `backends.meta`.
    pub accounts: Arc<dyn AccountStore>,
}

/// The seams as the configuration names them: the one place a backend is chosen.
pub async fn open_stores(config: &Config) -> anyhow::Result<Stores> {
    let blobs = open_blob_store(config).await?;
    let (meta, accounts, coordinator) = open_metadata(config).await?;
    let cache = open_cache(&config.cache).await?;
    Ok(Stores {
        backends: Backends {
            blobs: Arc::new(TimedBlobStore::new(blobs)),
            meta,
            cache,
            coordinator,
        },
        accounts,
    })
}

/// The registry's four seams alone.
pub async fn build_backends(config: &Config) -> anyhow::Result<Backends> {
    Ok(open_stores(config).await?.backends)
}

/// The token service and policy over the account store, with the signing keys from
/// `auth.signing_key_file`, derived from `security.jwt_secret`, or from the store (generated
/// on first start), and the bootstrap admin created when configured and absent.
pub async fn build_auth(
    config: &Config,
    accounts: Arc<dyn AccountStore>,
    cache: Arc<dyn Cache>,
) -> anyhow::Result<Arc<Auth>> {
    let keys_from_store =
        config.auth.signing_key_file.is_none() && config.security.jwt_secret.is_none();
    let keys = match (&config.auth.signing_key_file, &config.security.jwt_secret) {
        (Some(path), _) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading auth.signing_key_file {}", path.display()))?;
            KeyRing::single(
                SigningKey::from_pem(&pem)
                    .with_context(|| format!("auth.signing_key_file {}", path.display()))?,
            )
        }
        (None, Some(secret)) => {
            let secret = secret.clone();
            let key = tokio::task::spawn_blocking(move || SigningKey::from_shared_secret(&secret))
                .await?
                .context("security.jwt_secret")?;
            KeyRing::single(key)
        }
        (None, None) => Auth::load_keys(accounts.as_ref())
            .await
            .context("loading the token-signing keys")?,
    };
    if let (Some(name), Some(password)) = (
        &config.auth.bootstrap_admin,
        &config.auth.bootstrap_admin_password,
    ) {
        bootstrap_admin(accounts.as_ref(), name, password).await?;
    }
    let settings = AuthSettings {
        parties: TokenParties {
            issuer: config.auth.issuer.clone(),
            service: config.auth.service.clone(),
        },
        token_lifetime_seconds: config.auth.token_lifetime_seconds,
        refresh_lifetime_seconds: config.auth.refresh_lifetime_seconds,
        max_failed_logins: config.auth.max_failed_logins,
        lockout_window: Duration::from_secs(config.auth.lockout_seconds),
        logins_per_client_per_minute: config.auth.logins_per_client_per_minute,
    };
    Ok(Arc::new(Auth::new(
        accounts,
        cache,
        keys,
        keys_from_store,
        settings,
    )))
}

async fn bootstrap_admin(
    accounts: &dyn AccountStore,
    name: &str,
    password: &str,
) -> anyhow::Result<()> {
    let name: AccountName = name
        .parse()
        .with_context(|| format!("auth.bootstrap_admin {name:?}"))?;
    if accounts.user(&name).await?.is_some() {
        return Ok(());
    }
    create_user(accounts, &name, password, true).await?;
    tracing::info!(user = %name, "created the bootstrap admin");
    Ok(())
}

/// `admin create-user` and the bootstrap admin: hashes the password (off the async threads)
/// and stores the user.
pub async fn create_user(
    accounts: &dyn AccountStore,
    name: &AccountName,
    password: &str,
    admin: bool,
) -> anyhow::Result<()> {
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || password::hash(&password)).await??;
    accounts
        .create_user(&NewUser {
            name: name.clone(),
            password_hash: Some(hash),
            admin,
        })
        .await?;
    Ok(())
}

/// The account store alone (for `admin create-user`): the same database `serve` uses.
pub async fn open_accounts(config: &Config) -> anyhow::Result<Arc<dyn AccountStore>> {
    Ok(open_metadata(config).await?.1)
}

async fn open_blob_store(config: &Config) -> anyhow::Result<Arc<dyn BlobStore>> {
    match &config.storage {
        StorageConfig::Fs(_) => {
            let root = config
                .storage_root()
                .context("the fs store has a root directory")?;
            let store = FsBlobStore::new(root.clone())
                .with_context(|| format!("opening blob storage at {}", root.display()))?;
            Ok(Arc::new(store))
        }
        StorageConfig::S3(s3) => open_s3(s3).await,
    }
}

/// The metadata store, the account store (the same database) and the coordinator that
/// matches them: in-process locks serve a node alone on its SQLite file; nodes sharing
/// PostgreSQL lock through it.
async fn open_metadata(config: &Config) -> anyhow::Result<SqlStores> {
    match config
        .database
        .backend(&config.server.data_dir)
        .map_err(anyhow::Error::msg)?
    {
        DatabaseBackend::Sqlite(path) => {
            let store = SqliteStore::open(&path, config.database.max_connections)
                .await
                .with_context(|| format!("opening metadata database {}", path.display()))?;
            let store = Arc::new(store);
            Ok((store.clone(), store, Arc::new(LocalCoordinator::default())))
        }
        DatabaseBackend::Postgres(url) => open_postgres(&config.database, &url).await,
    }
}

async fn open_cache(config: &CacheConfig) -> anyhow::Result<Arc<dyn Cache>> {
    match config.kind() {
        CacheKind::Memory => Ok(Arc::new(MemoryCache::new(config.memory_max_bytes))),
        CacheKind::Redis => open_redis(config).await,
    }
}

/// What `admin check-config` found about one backend.
pub struct BackendProbe {
    pub backend: &'static str,
    /// Where it is, secrets redacted.
    pub target: String,
    /// How it answered, or why it did not.
    pub outcome: anyhow::Result<&'static str>,
}

/// How long `admin check-config` waits for a backend before calling it unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks each external backend to answer (a metadata query, a write probe in the bucket, a
/// cache round trip). The embedded ones are only described: opening them would create them.
pub async fn probe_backends(config: &Config) -> Vec<BackendProbe> {
    let mut probes = Vec::new();
    probes.push(match &config.storage {
        StorageConfig::Fs(_) => embedded("storage", config.storage_root()),
        StorageConfig::S3(s3) => BackendProbe {
            backend: "storage",
            target: format!(
                "s3 bucket {:?} at {}",
                s3.bucket,
                s3.endpoint.as_deref().unwrap_or("AWS")
            ),
            outcome: probe(async {
                open_s3(s3).await?.check_writable().await?;
                Ok("answers and takes writes")
            })
            .await,
        },
    });
    probes.push(match config.database.backend(&config.server.data_dir) {
        Ok(DatabaseBackend::Sqlite(path)) => embedded("database", Some(path)),
        Ok(DatabaseBackend::Postgres(url)) => BackendProbe {
            backend: "database",
            target: crate::config::redact_url(&url),
            outcome: probe(probe_postgres(&config.database, &url)).await,
        },
        Err(problem) => BackendProbe {
            backend: "database",
            target: String::new(),
            outcome: Err(anyhow::anyhow!(problem)),
        },
    });
    if config.cache.kind() == CacheKind::Redis {
        probes.push(BackendProbe {
            backend: "cache",
            target: config
                .cache
                .redis_url
                .as_deref()
                .map(crate::config::redact_url)
                .unwrap_or_default(),
            outcome: probe(probe_redis(&config.cache)).await,
        });
    }
    probes
}

fn embedded(backend: &'static str, path: Option<std::path::PathBuf>) -> BackendProbe {
    let path = path.unwrap_or_default();
    let state = if path.exists() {
        "embedded, exists"
    } else {
        "embedded, created on first start"
    };
    BackendProbe {
        backend,
        target: path.display().to_string(),
        outcome: Ok(state),
    }
}

async fn probe(
    check: impl Future<Output = anyhow::Result<&'static str>>,
) -> anyhow::Result<&'static str> {
    tokio::time::timeout(PROBE_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {PROBE_TIMEOUT:?}")))
}

/// The database answers and its schema is one this build can run on — without migrating
/// it: checking changes nothing.
#[cfg(feature = "postgres")]
async fn probe_postgres(config: &DatabaseConfig, url: &str) -> anyhow::Result<&'static str> {
    use crate::metadata::postgres::SchemaError;
    match open_postgres_store(config, url, false).await {
        Ok(store) => {
            store.ping().await?;
            Ok("answers and takes writes; the schema is this build's")
        }
        Err(e) => match e.chain().find_map(|c| c.downcast_ref::<SchemaError>()) {
            Some(SchemaError::Behind { .. }) if config.migrate => {
                Ok("answers; pending migrations are applied at start-up (database.migrate)")
            }
            Some(SchemaError::Behind { .. }) => Err(e.context(
                "the database answers, but its schema is behind this build: run `aerugo admin migrate`",
            )),
            _ => Err(e),
        },
    }
}

#[cfg(not(feature = "postgres"))]
async fn probe_postgres(config: &DatabaseConfig, url: &str) -> anyhow::Result<&'static str> {
    open_postgres(config, url).await.map(|_| "")
}

/// A cache never fails a request, so answering is shown by Redis's own answer (or the
/// reason it gave none: refused, a certificate not trusted...) and a value surviving a round
/// trip.
#[cfg(feature = "redis")]
async fn probe_redis(config: &CacheConfig) -> anyhow::Result<&'static str> {
    let redis = connect_redis(config).await?;
    redis.check().await?;
    let cache: Arc<dyn Cache> = Arc::new(redis);
    let key = format!("check-config:{}", uuid::Uuid::new_v4());
    cache
        .set(
            &key,
            bytes::Bytes::from_static(b"1"),
            Duration::from_secs(10),
        )
        .await;
    let answered = cache.get(&key).await.is_some();
    cache.delete(&key).await;
    anyhow::ensure!(answered, "a value written was not read back");
    Ok("answers")
}

#[cfg(not(feature = "redis"))]
async fn probe_redis(config: &CacheConfig) -> anyhow::Result<&'static str> {
    open_redis(config).await.map(|_| "")
}

#[cfg(feature = "s3")]
async fn open_s3(config: &S3StorageConfig) -> anyhow::Result<Arc<dyn BlobStore>> {
    use crate::storage::s3::{S3BlobStore, S3Settings};
    let settings = S3Settings {
        bucket: config.bucket.clone(),
        region: config.region.clone(),
        endpoint: config.endpoint.clone(),
        path_style: config.path_style.unwrap_or(config.endpoint.is_some()),
        access_key: config.access_key.clone(),
        secret_key: config.secret_key.clone(),
        prefix: config.prefix.clone(),
        redirect: config.redirect,
        redirect_expiry: Duration::from_secs(config.redirect_expiry_seconds),
        part_size: config.part_size_bytes,
        request_timeout: Duration::from_secs(config.request_timeout_seconds),
    };
    let store = S3BlobStore::connect(&settings)
        .await
        .with_context(|| format!("setting up S3 storage in bucket {:?}", config.bucket))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "s3"))]
async fn open_s3(_config: &S3StorageConfig) -> anyhow::Result<Arc<dyn BlobStore>> {
    anyhow::bail!("storage.type = \"s3\" needs a build with the `s3` cargo feature")
}

/// One database's two seams and the coordinator beside them.
type SqlStores = (
    Arc<dyn MetadataStore>,
    Arc<dyn AccountStore>,
    Arc<dyn Coordinator>,
);

#[cfg(feature = "postgres")]
async fn open_postgres(config: &DatabaseConfig, url: &str) -> anyhow::Result<SqlStores> {
    use crate::coordination::postgres::PgCoordinator;
    let store = open_postgres_store(config, url, config.migrate).await?;
    let acquire_timeout = Duration::from_secs(config.acquire_timeout_seconds);
    let locks = PgCoordinator::connect(url, config.lock_connections, acquire_timeout)
        .await
        .context("opening the PostgreSQL lock sessions")?;
    let store = Arc::new(store);
    Ok((store.clone(), store, Arc::new(locks)))
}

#[cfg(feature = "postgres")]
async fn open_postgres_store(
    config: &DatabaseConfig,
    url: &str,
    migrate: bool,
) -> anyhow::Result<crate::metadata::postgres::PgStore> {
    use crate::metadata::postgres::{PgSettings, PgStore};
    let settings = PgSettings {
        url: url.to_owned(),
        max_connections: config.max_connections,
        acquire_timeout: Duration::from_secs(config.acquire_timeout_seconds),
        statement_timeout: (config.statement_timeout_seconds > 0)
            .then(|| Duration::from_secs(config.statement_timeout_seconds)),
        migrate,
    };
    PgStore::connect(&settings)
        .await
        .context("opening the PostgreSQL metadata store")
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_config: &DatabaseConfig, _url: &str) -> anyhow::Result<SqlStores> {
    anyhow::bail!("a postgres:// database.url needs a build with the `postgres` cargo feature")
}

/// `aerugo admin migrate`: brings the metadata schema up to this build's, touching nothing
/// else (no bucket, no cache), whatever `database.migrate` says.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    match config
        .database
        .backend(&config.server.data_dir)
        .map_err(anyhow::Error::msg)?
    {
        DatabaseBackend::Sqlite(path) => {
            SqliteStore::open(&path, 1)
                .await
                .with_context(|| format!("migrating metadata database {}", path.display()))?;
        }
        #[cfg(feature = "postgres")]
        DatabaseBackend::Postgres(url) => {
            open_postgres_store(&config.database, &url, true).await?;
        }
        #[cfg(not(feature = "postgres"))]
        DatabaseBackend::Postgres(url) => {
            open_postgres(&config.database, &url).await?;
        }
    }
    Ok(())
}

#[cfg(feature = "redis")]
async fn open_redis(config: &CacheConfig) -> anyhow::Result<Arc<dyn Cache>> {
    Ok(Arc::new(connect_redis(config).await?))
}

#[cfg(feature = "redis")]
async fn connect_redis(config: &CacheConfig) -> anyhow::Result<crate::cache::redis::RedisCache> {
    use crate::cache::redis::{RedisCache, RedisSettings};
    let settings = RedisSettings {
        url: config.redis_url.clone().unwrap_or_default(),
        ca_file: config.redis_ca_file.clone(),
        key_prefix: config.redis_key_prefix.clone(),
        timeout: Duration::from_millis(config.redis_timeout_ms),
        retry_after: Duration::from_secs(config.redis_retry_seconds),
    };
    RedisCache::connect(&settings)
        .await
        .context("setting up the Redis cache")
}

#[cfg(not(feature = "redis"))]
async fn open_redis(_config: &CacheConfig) -> anyhow::Result<Arc<dyn Cache>> {
    anyhow::bail!("cache.type = \"redis\" needs a build with the `redis` cargo feature")
}

/// An exclusive lock on the data directory, held for the life of a server so a second server
/// or an offline `admin gc` cannot work on the same files at once. The file also holds the
/// address the server listens on, so `admin gc` can find it.
pub struct DataDirLock {
    file: File,
}

const LOCK_FILE: &str = "aerugo.lock";
const ADMIN_TOKEN_FILE: &str = "admin.token";

impl DataDirLock {
    /// `Ok(None)` when another process holds the lock.
    pub fn try_acquire(data_dir: &Path) -> anyhow::Result<Option<DataDirLock>> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data directory {}", data_dir.display()))?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data_dir.join(LOCK_FILE))
            .context("opening the data directory lock")?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DataDirLock { file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e).context("locking the data directory"),
        }
    }
}

impl DataDirLock {
    /// Records the address the server holding the lock listens on.
    pub fn record_address(&mut self, addr: std::net::SocketAddr) -> anyhow::Result<()> {
        use std::io::Write;
        self.file.set_len(0)?;
        self.file.write_all(addr.to_string().as_bytes())?;
        Ok(())
    }

    /// Writes a fresh local admin token into the data directory, readable by its owner only:
    /// `aerugo admin gc` on the same host reads it to ask the running server, since whoever
    /// can read the data directory could change everything in it anyway.
    pub fn issue_admin_token(&self, data_dir: &Path) -> anyhow::Result<String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let token = crate::auth::secret::random_token();
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        let mut file = File::options()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(token.as_bytes())?;
        Ok(token)
    }

    /// The local admin token of the server that holds the data directory's lock.
    pub fn admin_token(data_dir: &Path) -> Option<String> {
        std::fs::read_to_string(data_dir.join(ADMIN_TOKEN_FILE))
            .ok()
            .map(|t| t.trim().to_owned())
    }

    /// The address recorded by the server that holds the data directory's lock.
    pub fn holder_address(data_dir: &Path) -> Option<std::net::SocketAddr> {
        std::fs::read_to_string(data_dir.join(LOCK_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// Runs `aerugo serve` on an already-bound listener until `shutdown` resolves.
pub async fn run_server(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut lock = DataDirLock::try_acquire(&config.server.data_dir)?.with_context(|| {
        format!(
            "another aerugo process is using the data directory {}",
            config.server.data_dir.display()
        )
    })?;
    lock.record_address(listener.local_addr()?)?;
    let local_admin_token = lock.issue_admin_token(&config.server.data_dir)?;
    let state = app_state(&config, local_admin_token).await?;
    if !state.auth.enforced().await? {
        tracing::warn!(
            "NO USERS: this registry is OPEN — anyone who can reach it may push, pull and \
             delete. Create an admin (`aerugo admin create-user NAME --admin --password-stdin`) \
             to require sign-in for every request."
        );
    }
    let key_reload = spawn_key_reload(&state.auth, config.auth.key_reload_seconds);
    match state.registry.reconcile_uploads().await {
        Ok(0) => {}
        Ok(ended) => tracing::info!(ended, "ended upload sessions whose bytes were lost"),
        Err(e) => tracing::warn!(error = %e, "could not reconcile upload sessions"),
    }
    let gc_task = spawn_periodic_gc(&state.registry, config.gc.interval_seconds, state.gc_grace);
    let limits = connection_limits(&config.server, &state.trusted_proxies);
    tracing::info!(address = %listener.local_addr()?, "aerugo registry listening");
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let result = api::serve(listener, api::router(state), limits, shutdown, grace).await;
    if let Some(task) = gc_task {
        task.abort();
    }
    key_reload.abort();
    result.context("serving HTTP")
}

/// What the router serves: the registry and the token service on the configured stores.
/// `run_server` serves it; the router benchmarks drive it in-process.
pub async fn app_state(config: &Config, local_admin_token: String) -> anyhow::Result<AppState> {
    let stores = open_stores(config).await?;
    let auth = build_auth(
        config,
        stores.accounts.clone(),
        stores.backends.cache.clone(),
    )
    .await?;
    Ok(AppState {
        registry: registry_on(config, stores),
        max_page_size: config.registry.max_page_size,
        gc_grace: Duration::from_secs(config.gc.grace_period_seconds),
        trusted_proxies: TrustedProxies::new(config.server.trusted_proxy_networks()),
        auth,
        token_realm: config.auth.realm.clone(),
        local_admin_token,
    })
}

/// The `[server]` connection settings; also raises the open-file limit they need.
fn connection_limits(server: &ServerConfig, trusted: &TrustedProxies) -> ConnectionPolicy {
    ConnectionPolicy {
        header_read_timeout: Duration::from_secs(server.header_read_timeout_seconds),
        keepalive_idle_timeout: Duration::from_secs(server.keepalive_idle_timeout_seconds),
        body_idle_timeout: Duration::from_secs(server.body_idle_timeout_seconds),
        max_connections: max_connections(server.max_connections),
        max_connections_per_client: server.max_connections_per_client,
        uncapped_peers: trusted.clone(),
    }
}

/// File descriptors kept for what is not a client connection: the database, blob files, logs.
const RESERVED_FILES: u64 = 256;

/// `server.max_connections`, lowered to what the open-file limit (raised first) leaves for
/// connections, so that the cap refuses a connection before `accept` runs out of descriptors.
fn max_connections(configured: usize) -> usize {
    #[cfg(target_os = "linux")]
    match crate::limits::raise_nofile_limit() {
        Ok(limit) => {
            let room = connection_room(limit, configured);
            if room < configured {
                tracing::warn!(
                    limit,
                    max_connections = room,
                    "the open file limit leaves room for fewer than server.max_connections"
                );
            }
            return room;
        }
        Err(error) => tracing::warn!(%error, "could not raise the open file limit"),
    }
    configured
}

fn connection_room(open_file_limit: u64, configured: usize) -> usize {
    let room = open_file_limit.saturating_sub(RESERVED_FILES).max(1);
    usize::try_from(room).map_or(configured, |room| room.min(configured))
}

/// Follows key rotations made on any node: reloads the signing keys every `seconds`.
fn spawn_key_reload(auth: &Arc<Auth>, seconds: u64) -> tokio::task::JoinHandle<()> {
    let auth = Arc::clone(auth);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(seconds.max(1)));
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if let Err(e) = auth.reload_keys().await {
                tracing::warn!(error = %e, "cannot reload the token-signing keys");
            }
        }
    })
}

fn spawn_periodic_gc(
    registry: &Arc<Registry>,
    interval_seconds: u64,
    grace: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    if interval_seconds == 0 {
        return None;
    }
    let registry = Arc::clone(registry);
    Some(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(interval_seconds));
        ticker.tick().await;
        loop {
            ticker.tick().await;
            match registry.collect_garbage(grace).await {
                Ok(_) => {}
                Err(RegistryError::GcRunning) => {
                    tracing::debug!(
                        "periodic garbage collection skipped: another node is collecting"
                    );
                }
                Err(e) => tracing::error!(error = %e, "periodic garbage collection failed"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_room_for_other_files() {
        assert_eq!(connection_room(1_048_576, 10_000), 10_000);
        assert_eq!(connection_room(1024, 10_000), 768);
        assert_eq!(connection_room(100, 10_000), 1);
    }
}
