//! Wiring: turns a [`Config`] into the seams, the registry and the running server.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::api::origin::TrustedProxies;
use crate::api::{self, AppState, ConnectionPolicy};
use crate::cache::memory::MemoryCache;
use crate::config::{Config, ServerConfig};
use crate::coordination::local::LocalCoordinator;
use crate::metadata::sqlite::SqliteStore;
use crate::registry::{Backends, Registry, RegistryError, Settings};
use crate::storage::fs::FsBlobStore;
use crate::storage::timed::TimedBlobStore;

/// Opens the configured backends and builds the registry on them.
pub async fn build_registry(config: &Config) -> anyhow::Result<Arc<Registry>> {
    let root = config.storage_root();
    let blobs = FsBlobStore::new(root.clone())
        .with_context(|| format!("opening blob storage at {}", root.display()))?;
    let db = config.sqlite_path();
    let meta = SqliteStore::open(&db, config.database.max_connections)
        .await
        .with_context(|| format!("opening metadata database {}", db.display()))?;
    let cache = MemoryCache::new(config.cache.memory_max_bytes);
    let settings = Settings {
        max_manifest_bytes: config.registry.max_manifest_bytes,
        cache_ttl: Duration::from_secs(config.cache.tag_ttl_seconds),
    };
    let backends = Backends {
        blobs: Arc::new(TimedBlobStore::new(Arc::new(blobs))),
        meta: Arc::new(meta),
        cache: Arc::new(cache),
        coordinator: Arc::new(LocalCoordinator::default()),
    };
    Ok(Arc::new(Registry::new(backends, settings)))
}

/// An exclusive lock on the data directory, held for the life of a server so a second server
/// or an offline `admin gc` cannot work on the same files at once. The file also holds the
/// address the server listens on, so `admin gc` can find it.
pub struct DataDirLock {
    file: File,
}

const LOCK_FILE: &str = "aerugo.lock";

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
    let registry = build_registry(&config).await?;
    match registry.reconcile_uploads().await {
        Ok(0) => {}
        Ok(ended) => tracing::info!(ended, "ended upload sessions whose bytes were lost"),
        Err(e) => tracing::warn!(error = %e, "could not reconcile upload sessions"),
    }
    let gc_grace = Duration::from_secs(config.gc.grace_period_seconds);
    let gc_task = spawn_periodic_gc(&registry, config.gc.interval_seconds, gc_grace);
    let trusted_proxies = TrustedProxies::new(config.server.trusted_proxy_networks());
    let limits = connection_limits(&config.server, &trusted_proxies);
    let state = AppState {
        registry,
        max_page_size: config.registry.max_page_size,
        gc_grace,
        trusted_proxies,
    };
    tracing::info!(address = %listener.local_addr()?, "aerugo registry listening");
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let result = api::serve(listener, api::router(state), limits, shutdown, grace).await;
    if let Some(task) = gc_task {
        task.abort();
    }
    result.context("serving HTTP")
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
