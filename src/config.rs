//! Typed configuration: defaults, then the TOML file, then environment variables, then CLI
//! flags. [`Config::validate`] reports every problem at once so an operator fixes them in one go.
//!
//! Environment: `AERUGO__SECTION__KEY` for any key (double underscore, so keys keep their
//! single underscores), plus the original product's `LISTEN_ADDRESS` and `LOG_LEVEL`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::upstream::UpstreamConfig;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub database: DatabaseConfig,
    pub cache: CacheConfig,
    pub registry: RegistryConfig,
    pub gc: GcConfig,
    pub edge: EdgeConfig,
}

/// `aerugo edge`: the pull-through cache / gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Plain-HTTP listener. Flag: --listen.
    pub listen_address: String,
    /// Optional TLS listener (HTTP/1.1 and HTTP/2), with the certificate chain and key in PEM.
    pub tls_listen_address: Option<String>,
    pub tls_cert_path: Option<PathBuf>,
    pub tls_key_path: Option<PathBuf>,
    /// Directory of the disk cache. Flag: --cache-dir.
    pub cache_dir: PathBuf,
    /// Size cap of the disk cache in bytes; least recently used entries are evicted beyond it.
    pub cache_max_bytes: u64,
    /// Worker threads of the proxy.
    pub threads: usize,
    /// Seconds between SIGTERM and the start of the graceful shutdown (pingora's default is 300).
    pub grace_period_seconds: u64,
    /// Seconds in-flight requests get to finish during a graceful shutdown.
    pub graceful_shutdown_timeout_seconds: u64,
    /// Unix socket over which a new process started with `aerugo edge --upgrade` takes the
    /// listening sockets from the running one (when it gets SIGQUIT). Unset: `upgrade.sock`
    /// in `cache_dir`, so the edge serving a cache directory is the one that hands over.
    pub upgrade_socket: Option<PathBuf>,
    /// Seconds a client has to send a complete request header: the first one from when the
    /// connection is accepted (on the TLS listener: to start the handshake, then again once it
    /// is done), each later one from the end of the previous answer, on top of
    /// `keepalive_idle_timeout_seconds`. The connection is closed when the time runs out.
    pub header_read_timeout_seconds: u64,
    /// Seconds an idle connection is kept for a next request (HTTP/1.1 between requests,
    /// HTTP/2 with no request in flight).
    pub keepalive_idle_timeout_seconds: u64,
    /// Connections held open at once over both listeners; more are closed as they arrive.
    pub max_connections: usize,
    /// Connections one client address (IPv6: one /64 network) may hold open at once.
    pub max_connections_per_client: usize,
    /// Upstream registries mirrored by this edge (`[[edge.upstreams]]`).
    pub upstreams: Vec<MirrorUpstream>,
    /// Gateway mode: core nodes this edge routes `/v2/`, `/auth/` and `/api/` to.
    pub gateway: GatewayConfig,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            listen_address: "127.0.0.1:5001".into(),
            tls_listen_address: None,
            tls_cert_path: None,
            tls_key_path: None,
            cache_dir: PathBuf::from("./edge-cache"),
            cache_max_bytes: 50 << 30,
            threads: 2,
            grace_period_seconds: 5,
            graceful_shutdown_timeout_seconds: 5,
            upgrade_socket: None,
            header_read_timeout_seconds: 30,
            keepalive_idle_timeout_seconds: 60,
            max_connections: 16_384,
            max_connections_per_client: 1024,
            upstreams: Vec::new(),
            gateway: GatewayConfig::default(),
        }
    }
}

/// One configured upstream as the mirror uses it (`[[edge.upstreams]]`). Unknown keys are
/// rejected by the flattened [`UpstreamConfig`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MirrorUpstream {
    #[serde(flatten)]
    pub client: UpstreamConfig,
    /// Other names that select this upstream by `?ns=` or path prefix (`docker.io`, `hub`).
    pub aliases: Vec<String>,
    /// Whether bare paths (dockerd's `registry-mirrors`) go here.
    pub default: bool,
    /// Seconds a tag's digest is trusted before it is revalidated with a `HEAD`.
    pub tag_ttl_seconds: u64,
    /// Seconds past the TTL a tag may still be served when the upstream fails.
    pub max_stale_seconds: u64,
    /// Repository patterns (`*` wildcards) that may be pulled; empty = all.
    pub allow: Vec<String>,
    /// Repository patterns that may not be pulled; checked after `allow`.
    pub deny: Vec<String>,
}

impl Default for MirrorUpstream {
    fn default() -> Self {
        MirrorUpstream {
            client: UpstreamConfig::default(),
            aliases: Vec::new(),
            default: false,
            tag_ttl_seconds: 300,
            max_stale_seconds: 86_400,
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Core node addresses (`host:port`); empty = not a gateway.
    pub cores: Vec<String>,
    /// Seconds between TCP health checks of the cores.
    pub health_check_interval_seconds: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            cores: Vec::new(),
            health_check_interval_seconds: 2,
        }
    }
}

/// The longest path a Unix socket address holds (`sun_path` is 108 bytes with its NUL).
const MAX_UNIX_SOCKET_PATH: usize = 107;

impl EdgeConfig {
    /// The upgrade socket: `upgrade_socket`, or `upgrade.sock` in the cache directory.
    pub fn upgrade_socket_path(&self) -> PathBuf {
        self.upgrade_socket
            .clone()
            .unwrap_or_else(|| self.cache_dir.join("upgrade.sock"))
    }

    /// What `aerugo edge` checks before it starts: [`EdgeConfig::problems`], and that there is
    /// something to serve.
    pub fn startup_problems(&self) -> Vec<String> {
        let mut problems = self.problems();
        if self.upstreams.is_empty() && self.gateway.cores.is_empty() {
            problems.push("the edge needs at least one [[edge.upstreams]] (or --upstream) or [edge.gateway] cores".into());
        }
        problems
    }

    /// Every problem with the edge section's values, the TLS files and the upstreams'
    /// settings included (`aerugo admin check-config` reports them for any configuration).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("listen_address", Some(&self.listen_address)),
            ("tls_listen_address", self.tls_listen_address.as_ref()),
        ] {
            if let Some(v) = value
                && v.parse::<SocketAddr>().is_err()
            {
                problems.push(format!("edge.{key} {v:?} is not an IP:port address"));
            }
        }
        if self.tls_listen_address.is_some()
            != (self.tls_cert_path.is_some() && self.tls_key_path.is_some())
        {
            problems.push(
                "edge.tls_listen_address, edge.tls_cert_path and edge.tls_key_path go together"
                    .into(),
            );
        }
        #[cfg(feature = "edge")]
        if let (Some(cert), Some(key)) = (&self.tls_cert_path, &self.tls_key_path) {
            problems.extend(tls_file_problems(cert, key));
        }
        if !self.upstreams.is_empty() && !self.gateway.cores.is_empty() {
            problems.push(
                "an edge is either a mirror of upstreams or a gateway to cores, not both".into(),
            );
        }
        if self.upstreams.iter().filter(|u| u.default).count() > 1 {
            problems.push("at most one edge upstream may be the default".into());
        }
        for u in &self.upstreams {
            let name = &u.client.name;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                || name.starts_with('.')
            {
                problems.push(format!(
                    "edge upstream name {name:?} must be letters, digits, '.', '-' or '_'"
                ));
            }
            if let Err(e) = crate::upstream::UpstreamClient::new(&u.client) {
                problems.push(format!("edge {e}"));
            }
        }
        for core in &self.gateway.cores {
            if !is_host_port(core) {
                problems.push(format!("edge.gateway core {core:?} is not host:port"));
            }
        }
        for (key, value) in [
            ("threads", self.threads as u64),
            (
                "header_read_timeout_seconds",
                self.header_read_timeout_seconds,
            ),
            (
                "keepalive_idle_timeout_seconds",
                self.keepalive_idle_timeout_seconds,
            ),
            ("max_connections", self.max_connections as u64),
            (
                "max_connections_per_client",
                self.max_connections_per_client as u64,
            ),
        ] {
            if value == 0 {
                problems.push(format!("edge.{key} must be at least 1"));
            }
        }
        let socket = self.upgrade_socket_path();
        if socket.as_os_str().len() > MAX_UNIX_SOCKET_PATH {
            problems.push(format!(
                "edge upgrade socket {} is longer than a Unix socket path may be \
                 ({MAX_UNIX_SOCKET_PATH} bytes); set edge.upgrade_socket to a shorter path",
                socket.display()
            ));
        }
        problems
    }
}

/// The TLS certificate and key as pingora will load them: PEM files that hold at least one
/// certificate and a private key (pingora loads them lazily and panics on a bad file).
#[cfg(feature = "edge")]
fn tls_file_problems(cert: &Path, key: &Path) -> Vec<String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut problems = Vec::new();
    match CertificateDer::pem_file_iter(cert).and_then(|c| c.collect::<Result<Vec<_>, _>>()) {
        Ok(certs) if certs.is_empty() => problems.push(format!(
            "edge.tls_cert_path {} holds no certificate",
            cert.display()
        )),
        Ok(_) => {}
        Err(e) => problems.push(format!("edge.tls_cert_path {}: {e}", cert.display())),
    }
    if let Err(e) = PrivateKeyDer::from_pem_file(key) {
        problems.push(format!("edge.tls_key_path {}: {e}", key.display()));
    }
    problems
}

/// `host:port` with a non-empty host and a numeric port (the host may be a name).
fn is_host_port(value: &str) -> bool {
    value
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the registry listens on.
    pub listen_address: String,
    /// A tracing filter: `info`, `debug`, or directives like `aerugo=debug,tower_http=info`.
    pub log_level: String,
    /// `pretty` for people, `json` for log pipelines.
    pub log_format: String,
    /// Where the embedded backends keep their files unless `storage.path` / `database.url` say otherwise.
    pub data_dir: PathBuf,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT before the process exits.
    pub shutdown_grace_seconds: u64,
    /// Seconds a connection may take to send a complete request head, counted from accept (so
    /// a connection that sends nothing is closed too) or from the first byte of a later request.
    pub header_read_timeout_seconds: u64,
    /// Seconds a kept-alive connection may stay idle between requests.
    pub keepalive_idle_timeout_seconds: u64,
    /// Seconds a request body may stall (no byte at all) while its handler waits for it. Slow
    /// bodies are fine; only a complete stop this long fails the request.
    pub body_idle_timeout_seconds: u64,
    /// Open connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Open connections per client address (IPv6: per /64); `trusted_proxies` are exempt.
    pub max_connections_per_client: usize,
    /// Peers (IP addresses or CIDR ranges) whose `X-Forwarded-Proto`/`X-Forwarded-Host` are
    /// believed when building absolute `Location` URLs, and which carry many clients' traffic
    /// (a gateway), so only `max_connections` caps them.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen_address: "127.0.0.1:5000".into(),
            log_level: "info".into(),
            log_format: "pretty".into(),
            data_dir: PathBuf::from("./data"),
            shutdown_grace_seconds: 30,
            header_read_timeout_seconds: 30,
            keepalive_idle_timeout_seconds: 120,
            body_idle_timeout_seconds: 300,
            max_connections: 10_000,
            max_connections_per_client: 1_000,
            trusted_proxies: vec!["127.0.0.0/8".into(), "::1".into()],
        }
    }
}

/// The longest timeout accepted, so deadlines never overflow.
const MAX_TIMEOUT_SECONDS: u64 = 86_400;

impl ServerConfig {
    /// The trusted proxies as networks; a bare address is a network of one. Entries that do not
    /// parse are left out (`validate` reports them).
    pub fn trusted_proxy_networks(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|entry| parse_network(entry))
            .collect()
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, value) in [
            (
                "header_read_timeout_seconds",
                self.header_read_timeout_seconds,
            ),
            (
                "keepalive_idle_timeout_seconds",
                self.keepalive_idle_timeout_seconds,
            ),
            ("body_idle_timeout_seconds", self.body_idle_timeout_seconds),
        ] {
            if !(1..=MAX_TIMEOUT_SECONDS).contains(&value) {
                problems.push(format!(
                    "server.{key} must be between 1 and {MAX_TIMEOUT_SECONDS}"
                ));
            }
        }
        for (key, value) in [
            ("max_connections", self.max_connections),
            (
                "max_connections_per_client",
                self.max_connections_per_client,
            ),
        ] {
            if value == 0 {
                problems.push(format!("server.{key} must be at least 1"));
            }
        }
        for entry in &self.trusted_proxies {
            if parse_network(entry).is_none() {
                problems.push(format!(
                    "server.trusted_proxies entry {entry:?} is not an IP address or CIDR range"
                ));
            }
        }
        problems
    }
}

/// `10.0.0.0/8`, `fd00::/8`, or a bare address.
fn parse_network(entry: &str) -> Option<ipnet::IpNet> {
    let entry = entry.trim();
    entry.parse::<ipnet::IpNet>().ok().or_else(|| {
        entry
            .parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `fs` (filesystem). `s3` arrives with the production backends.
    #[serde(rename = "type")]
    pub kind: String,
    /// Root directory of the `fs` store; defaults to `<data_dir>/storage`.
    pub path: Option<PathBuf>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: "fs".into(),
            path: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH`; defaults to `sqlite://<data_dir>/metadata.db`.
    pub url: Option<String>,
    /// Most connections the metadata store keeps open. SQLite: the read connections (WAL
    /// readers never wait for the writer); its one writer comes on top.
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            max_connections: 8,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// `memory` (in-process).
    #[serde(rename = "type")]
    pub kind: String,
    /// Upper bound of the in-process cache, in bytes.
    pub memory_max_bytes: u64,
    /// How long a tag→digest answer may be served from cache. Tags are invalidated on every
    /// write through this node; the TTL bounds staleness from writes through other nodes.
    pub tag_ttl_seconds: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            kind: "memory".into(),
            memory_max_bytes: 64 << 20,
            tag_ttl_seconds: 5,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Largest manifest accepted, in bytes (the spec asks registries to take at least 4 MiB).
    pub max_manifest_bytes: u64,
    /// Page size of `_catalog` when the client gives no `n`, and the largest `n` honoured;
    /// `tags/list` without `n` returns every tag, read in pages of this size.
    pub max_page_size: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_manifest_bytes: 4 << 20,
            max_page_size: 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Run garbage collection every this many seconds while serving; 0 disables it.
    pub interval_seconds: u64,
    /// Blobs linked and uploads touched more recently than this are never collected, so a
    /// push whose manifest has not arrived yet keeps its blobs.
    pub grace_period_seconds: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval_seconds: 0,
            grace_period_seconds: 3600,
        }
    }
}

/// Overrides from the command line; `None` leaves the configured value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// `aerugo edge` flags: they land in the `[edge]` section instead.
    pub edge: Option<EdgeOverrides>,
}

#[derive(Debug, Clone, Default)]
pub struct EdgeOverrides {
    pub cache_dir: Option<PathBuf>,
    /// `--upstream [NAME=]URL`; an unnamed one is the default upstream.
    pub upstreams: Vec<String>,
}

/// `[NAME=]URL` → an upstream; without a name it is named after the URL's host and becomes
/// the default (what dockerd and podman mirrors send: bare paths).
pub fn parse_upstream_flag(flag: &str) -> Result<MirrorUpstream, String> {
    let (name, url) = match flag.split_once('=') {
        Some((name, url)) if !name.contains("://") => (Some(name.to_owned()), url.to_owned()),
        _ => (None, flag.to_owned()),
    };
    let parsed = reqwest::Url::parse(&url).map_err(|e| format!("--upstream {flag:?}: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("--upstream {flag:?} has no host"))?;
    let mut upstream = MirrorUpstream {
        default: name.is_none(),
        ..Default::default()
    };
    upstream.client.name = name.unwrap_or_else(|| host.to_owned());
    upstream.client.url = url;
    Ok(upstream)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Loads defaults < `file` < environment < `overrides`, then validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(vec![format!(
                    "configuration file {} does not exist",
                    file.display()
                )]));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let legacy = Env::raw()
            .only(&["LISTEN_ADDRESS", "LOG_LEVEL"])
            .map(|key| format!("server.{}", key.as_str().to_ascii_lowercase()).into());
        figment = figment
            .merge(legacy)
            .merge(Env::prefixed("AERUGO__").split("__"));
        let mut config: Config = figment.extract().map_err(Box::new)?;
        if let Some(listen) = &overrides.listen {
            config.server.listen_address.clone_from(listen);
        }
        if let Some(dir) = &overrides.data_dir {
            config.server.data_dir.clone_from(dir);
        }
        if let Some(edge) = &overrides.edge {
            config.apply_edge_overrides(overrides.listen.as_deref(), edge)?;
            let problems = config.edge.startup_problems();
            if !problems.is_empty() {
                return Err(ConfigError::Invalid(problems));
            }
        }
        config.validate()?;
        Ok(config)
    }

    fn apply_edge_overrides(
        &mut self,
        listen: Option<&str>,
        edge: &EdgeOverrides,
    ) -> Result<(), ConfigError> {
        if let Some(listen) = listen {
            // `--listen` names the edge's listener, not the core's.
            self.edge.listen_address = listen.to_owned();
            self.server.listen_address = Config::default().server.listen_address;
        }
        if let Some(dir) = &edge.cache_dir {
            self.edge.cache_dir.clone_from(dir);
        }
        let parsed: Vec<_> = edge
            .upstreams
            .iter()
            .map(|f| parse_upstream_flag(f))
            .collect();
        let problems: Vec<String> = parsed
            .iter()
            .filter_map(|p| p.as_ref().err().cloned())
            .collect();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        self.edge.upstreams.extend(parsed.into_iter().flatten());
        Ok(())
    }

    /// Every problem with the configuration, not just the first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.server.listen_address.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "server.listen_address {:?} is not an IP:port address",
                self.server.listen_address
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.server.log_level).is_err() {
            problems.push(format!(
                "server.log_level {:?} is not a valid log filter",
                self.server.log_level
            ));
        }
        if !matches!(self.server.log_format.as_str(), "pretty" | "json") {
            problems.push(format!(
                "server.log_format {:?} must be \"pretty\" or \"json\"",
                self.server.log_format
            ));
        }
        problems.extend(self.server.problems());
        if !matches!(self.storage.kind.as_str(), "fs" | "filesystem") {
            problems.push(format!(
                "storage.type {:?} is not supported by this build (supported: \"fs\")",
                self.storage.kind
            ));
        }
        if let Some(url) = &self.database.url
            && !url.starts_with("sqlite:")
        {
            problems.push(format!(
                "database.url {url:?} is not supported by this build (supported: sqlite://PATH)"
            ));
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections must be at least 1".into());
        }
        if self.cache.kind != "memory" {
            problems.push(format!(
                "cache.type {:?} is not supported by this build (supported: \"memory\")",
                self.cache.kind
            ));
        }
        if !(1024..=(64 << 20)).contains(&self.registry.max_manifest_bytes) {
            problems.push("registry.max_manifest_bytes must be between 1024 and 67108864".into());
        }
        if self.registry.max_page_size == 0 {
            problems.push("registry.max_page_size must be at least 1".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.server
            .listen_address
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 5000)))
    }

    pub fn storage_root(&self) -> PathBuf {
        self.storage
            .path
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("storage"))
    }

    /// Path of the SQLite database file.
    pub fn sqlite_path(&self) -> PathBuf {
        match &self.database.url {
            Some(url) => PathBuf::from(
                url.trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:"),
            ),
            None => self.server.data_dir.join("metadata.db"),
        }
    }
}

#[cfg(test)]
// figment's Jail API fixes the closure's error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.listen_addr().to_string(), "127.0.0.1:5000");
        assert_eq!(config.storage_root(), PathBuf::from("./data/storage"));
    }

    #[test]
    fn every_problem_is_listed() {
        let mut config = Config::default();
        config.server.listen_address = "nowhere".into();
        config.server.log_format = "xml".into();
        config.storage.kind = "tape".into();
        let ConfigError::Invalid(problems) = config.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn connection_settings_are_validated() {
        let mut config = Config::default();
        assert_eq!(
            config.server.trusted_proxy_networks(),
            vec![
                "127.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
                "::1/128".parse().unwrap()
            ]
        );
        config.server.header_read_timeout_seconds = 0;
        config.server.keepalive_idle_timeout_seconds = u64::MAX;
        config.server.max_connections_per_client = 0;
        config.server.trusted_proxies = vec!["10.1.0.0/16".into(), "gateway".into()];
        let ConfigError::Invalid(problems) = config.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[3].contains("\"gateway\""), "{problems:?}");
        assert_eq!(
            config.server.trusted_proxy_networks(),
            vec!["10.1.0.0/16".parse::<ipnet::IpNet>().unwrap()]
        );
    }

    #[test]
    fn file_env_and_flags_layer_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "aerugo.toml",
                "[server]\nlisten_address = \"127.0.0.1:7000\"\nlog_level = \"debug\"\n[gc]\ngrace_period_seconds = 5\n",
            )?;
            jail.set_env("LOG_LEVEL", "warn");
            jail.set_env("AERUGO__REGISTRY__MAX_MANIFEST_BYTES", "8192");
            let overrides = Overrides {
                listen: None,
                data_dir: Some("/tmp/x".into()),
                edge: None,
            };
            let config = Config::load(Some(Path::new("aerugo.toml")), &overrides).unwrap();
            assert_eq!(config.server.listen_address, "127.0.0.1:7000");
            assert_eq!(config.server.log_level, "warn");
            assert_eq!(config.registry.max_manifest_bytes, 8192);
            assert_eq!(config.gc.grace_period_seconds, 5);
            assert_eq!(config.server.data_dir, PathBuf::from("/tmp/x"));
            Ok(())
        });
    }

    #[test]
    fn upgrade_socket_defaults_to_the_cache_dir_and_must_fit_a_unix_address() {
        let mut edge = EdgeConfig {
            cache_dir: "/var/cache/aerugo-edge".into(),
            ..EdgeConfig::default()
        };
        edge.gateway.cores = vec!["core:5000".into()];
        assert!(edge.problems().is_empty(), "{:?}", edge.problems());
        assert_eq!(
            edge.upgrade_socket_path(),
            PathBuf::from("/var/cache/aerugo-edge/upgrade.sock")
        );
        edge.cache_dir = PathBuf::from("/").join("c".repeat(120));
        let problems = edge.problems();
        assert!(
            problems.len() == 1 && problems[0].contains("edge.upgrade_socket"),
            "{problems:?}"
        );
        edge.upgrade_socket = Some("/run/aerugo-edge.sock".into());
        assert!(edge.problems().is_empty(), "{:?}", edge.problems());
        assert_eq!(
            edge.upgrade_socket_path(),
            PathBuf::from("/run/aerugo-edge.sock")
        );
    }

    #[test]
    fn edge_timeouts_and_connection_caps_must_be_positive() {
        let mut edge = EdgeConfig::default();
        edge.gateway.cores = vec!["core:5000".into()];
        edge.header_read_timeout_seconds = 0;
        edge.keepalive_idle_timeout_seconds = 0;
        edge.max_connections = 0;
        edge.max_connections_per_client = 0;
        let problems = edge.problems();
        for key in [
            "header_read_timeout_seconds",
            "keepalive_idle_timeout_seconds",
            "max_connections",
            "max_connections_per_client",
        ] {
            let expected = format!("edge.{key} must be at least 1");
            assert!(problems.contains(&expected), "{expected}: {problems:?}");
        }
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("a.toml", "[server]\nlisten_adress = \"x\"\n")?;
            assert!(Config::load(Some(Path::new("a.toml")), &Overrides::default()).is_err());
            jail.create_file("b.toml", "[server]\nlisten_address = \"x\"\n")?;
            let err = Config::load(Some(Path::new("b.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("listen_address"), "{err}");
            Ok(())
        });
    }
}
