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
    pub auth: AuthConfig,
    pub security: SecurityConfig,
    pub edge: EdgeConfig,
}

/// `[security]`, the original product's section: the secret tokens are signed with.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Every node given the same secret signs and verifies tokens with the same Ed25519 key,
    /// derived from it (env `JWT_SECRET`); at least 32 characters. Unset: the key file or the
    /// database's key (`[auth]`).
    pub jwt_secret: Option<String>,
}

impl SecurityConfig {
    fn problems(&self, auth: &AuthConfig) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(secret) = &self.jwt_secret else {
            return problems;
        };
        let min = crate::auth::keys::MIN_SHARED_SECRET_LEN;
        if secret.chars().count() < min {
            problems.push(format!(
                "security.jwt_secret (JWT_SECRET) must be at least {min} characters: tokens are signed with a key derived from it"
            ));
        }
        if auth.signing_key_file.is_some() {
            problems.push(
                "security.jwt_secret and auth.signing_key_file both name the signing key; set one"
                    .into(),
            );
        }
        problems
    }
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
    /// Seconds a confirmation from the origin (this repository of this origin shows this digest
    /// to this caller) lets the edge serve the cached bytes without asking again; 0 asks on
    /// every read.
    pub confirm_ttl_seconds: u64,
    /// Seconds a confirmation still lets cached bytes be served while the origin cannot be
    /// asked (down, timing out, 5xx): stale-if-error for the right to read.
    pub confirm_stale_seconds: u64,
    /// Confirmations kept in memory; the least used are dropped beyond it (each costs the
    /// origin one question more, or a refusal while it is down).
    pub confirm_max_entries: u64,
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
            confirm_ttl_seconds: 30,
            confirm_stale_seconds: 3600,
            confirm_max_entries: 100_000,
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

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Core node addresses (`host:port`); empty = not a gateway.
    pub cores: Vec<String>,
    /// Seconds between TCP health checks of the cores.
    pub health_check_interval_seconds: u64,
    /// Seconds a proxied request waits to connect to a core before it tries another: a core
    /// cut off by the network answers nothing, and the system's own timeout is minutes.
    pub connect_timeout_seconds: u64,
    /// Seconds between fetches of the cores' token keys (`GET /auth/jwks`); a token naming an
    /// unknown key fetches them sooner.
    pub jwks_refresh_seconds: u64,
    /// The cores' `auth.service` and `auth.issuer`: the audience and issuer a token must
    /// name.
    pub service: String,
    pub issuer: String,
    /// The account fills are fetched as (a robot or user with pull on the repositories the
    /// edge serves); anonymous when unset. `service_password`: set
    /// `AERUGO__EDGE__GATEWAY__SERVICE_PASSWORD` rather than the file.
    pub service_username: Option<String>,
    pub service_password: Option<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            cores: Vec::new(),
            health_check_interval_seconds: 2,
            connect_timeout_seconds: 2,
            jwks_refresh_seconds: 300,
            service: "aerugo".into(),
            issuer: "aerugo".into(),
            service_username: None,
            service_password: None,
        }
    }
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("cores", &self.cores)
            .field(
                "health_check_interval_seconds",
                &self.health_check_interval_seconds,
            )
            .field("connect_timeout_seconds", &self.connect_timeout_seconds)
            .field("jwks_refresh_seconds", &self.jwks_refresh_seconds)
            .field("service", &self.service)
            .field("issuer", &self.issuer)
            .field("service_username", &self.service_username)
            .field(
                "service_password",
                &self.service_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl GatewayConfig {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for core in &self.cores {
            if !is_host_port(core) {
                problems.push(format!("edge.gateway core {core:?} is not host:port"));
            }
        }
        if self.jwks_refresh_seconds == 0 {
            problems.push("edge.gateway.jwks_refresh_seconds must be at least 1".into());
        }
        if self.connect_timeout_seconds == 0 {
            problems.push("edge.gateway.connect_timeout_seconds must be at least 1".into());
        }
        if self.service.is_empty() || self.service.contains('"') {
            problems.push("edge.gateway.service must be non-empty and hold no quote".into());
        }
        if self.service_username.is_some() != self.service_password.is_some() {
            problems.push(
                "edge.gateway.service_username and edge.gateway.service_password go together"
                    .into(),
            );
        }
        problems
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
        problems.extend(self.gateway.problems());
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
            ("confirm_max_entries", self.confirm_max_entries),
        ] {
            if value == 0 {
                problems.push(format!("edge.{key} must be at least 1"));
            }
        }
        if self.confirm_stale_seconds < self.confirm_ttl_seconds {
            problems.push(
                "edge.confirm_stale_seconds must be at least edge.confirm_ttl_seconds".into(),
            );
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

/// `[storage]`: where blob bytes live, chosen by `type`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StorageConfig {
    /// A local directory: one node, or several sharing one POSIX filesystem.
    #[serde(alias = "filesystem")]
    Fs(FsStorageConfig),
    /// Any S3-compatible object store: what a cluster of stateless nodes shares.
    S3(S3StorageConfig),
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig::Fs(FsStorageConfig::default())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FsStorageConfig {
    /// Root directory; defaults to `<data_dir>/storage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3StorageConfig {
    pub bucket: String,
    pub region: String,
    /// The object store's URL when it is not AWS (`S3_ENDPOINT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `bucket` in the path instead of the host name; default: on when `endpoint` is set
    /// (what MinIO, Ceph and most S3-compatible servers need), off for AWS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// Static credentials; without them the default provider chain is asked (environment,
    /// profile, web identity, instance metadata).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    /// Prepended to every key, so several registries can share a bucket.
    pub prefix: String,
    /// Answer blob `GET`s with `307` to a presigned URL, so bytes flow from the store to the
    /// client without passing through the node.
    pub redirect: bool,
    pub redirect_expiry_seconds: u64,
    /// Size of each multipart-upload part a node sends (S3 needs at least 5 MiB).
    pub part_size_bytes: u64,
    /// Bound on one request to the store (connect included), so a hung store fails requests
    /// with 503 instead of holding them.
    pub request_timeout_seconds: u64,
}

impl Default for S3StorageConfig {
    fn default() -> Self {
        S3StorageConfig {
            bucket: String::new(),
            region: "us-east-1".into(),
            endpoint: None,
            path_style: None,
            access_key: None,
            secret_key: None,
            prefix: String::new(),
            redirect: true,
            redirect_expiry_seconds: 600,
            part_size_bytes: 8 << 20,
            request_timeout_seconds: 60,
        }
    }
}

impl S3StorageConfig {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.bucket.is_empty() {
            problems
                .push("storage.bucket is required with storage.type = \"s3\" (S3_BUCKET)".into());
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            problems.push(format!(
                "storage.endpoint {endpoint:?} must be an http:// or https:// URL"
            ));
        }
        if self.access_key.is_some() != self.secret_key.is_some() {
            problems.push(
                "storage.access_key and storage.secret_key go together (S3_ACCESS_KEY, S3_SECRET_KEY)"
                    .into(),
            );
        }
        if !(1..=7 * 24 * 3600).contains(&self.redirect_expiry_seconds) {
            problems.push(
                "storage.redirect_expiry_seconds must be between 1 and 604800 (S3's limit)".into(),
            );
        }
        if !((5 << 20)..=(5 << 30)).contains(&self.part_size_bytes) {
            problems.push(
                "storage.part_size_bytes must be between 5 MiB and 5 GiB (S3's part limits)".into(),
            );
        }
        if self.request_timeout_seconds == 0 {
            problems.push("storage.request_timeout_seconds must be at least 1".into());
        }
        problems
    }
}

/// `[database]`: the metadata store, chosen by the scheme of `url`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DB` (`DATABASE_URL`); defaults
    /// to `sqlite://<data_dir>/metadata.db`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Most connections the metadata store keeps open (`DATABASE_MAX_CONNECTIONS`). SQLite:
    /// the read connections (WAL readers never wait for the writer); its one writer comes on
    /// top. PostgreSQL: the whole pool.
    pub max_connections: u32,
    /// PostgreSQL: how long a request waits for a pooled connection before it fails with 503.
    pub acquire_timeout_seconds: u64,
    /// PostgreSQL: the lock sessions, connections beside `max_connections` that this node's
    /// advisory locks share (every upload request in flight, every blob being published, one
    /// garbage collection), however many it holds. A few suffice: each is busy one round trip
    /// per lock taken or released.
    pub lock_connections: u32,
    /// PostgreSQL: the longest one statement may run (0: no limit).
    pub statement_timeout_seconds: u64,
    /// PostgreSQL: apply pending migrations at start-up. Off, `aerugo admin migrate` does it
    /// and a node refuses to start against a schema older or newer than it knows.
    pub migrate: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            max_connections: 8,
            acquire_timeout_seconds: 5,
            lock_connections: 4,
            statement_timeout_seconds: 30,
            migrate: true,
        }
    }
}

/// Which metadata store `[database] url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseBackend {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DatabaseConfig {
    /// The store `url` names (the default SQLite file under `data_dir` when unset).
    pub fn backend(&self, data_dir: &Path) -> Result<DatabaseBackend, String> {
        let Some(url) = &self.url else {
            return Ok(DatabaseBackend::Sqlite(data_dir.join("metadata.db")));
        };
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            return Ok(DatabaseBackend::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseBackend::Postgres(url.clone()));
        }
        Err(format!(
            "database.url {:?} is neither sqlite://PATH nor postgres://…",
            redact_url(url)
        ))
    }
}

/// `[cache]`: the shared accelerator in front of the metadata store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// `memory` (in-process, this node only) or `redis` (shared by the cluster). Default:
    /// `redis` when `redis_url` is set, else `memory`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<CacheKind>,
    /// `redis://[:PASSWORD@]HOST:PORT[/DB]`, or `rediss://…` for TLS (`REDIS_URL`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// With `rediss://`: PEM certificates to trust instead of the system's roots (a private
    /// CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_ca_file: Option<PathBuf>,
    /// Prepended to every Redis key, so several registries can share one Redis.
    pub redis_key_prefix: String,
    /// Bound on one Redis command; a slower answer counts as a miss.
    pub redis_timeout_ms: u64,
    /// After Redis fails, requests stop asking it for this long (one probe at a time
    /// then), so an outage costs no request a timeout.
    pub redis_retry_seconds: u64,
    /// Upper bound of the in-process cache, in bytes.
    pub memory_max_bytes: u64,
    /// How long tag→digest and blob-link answers may be served from cache. Writes invalidate
    /// them at once in the cache they go through (with Redis: on every node); the TTL bounds
    /// staleness in another node's in-process cache.
    pub tag_ttl_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheKind {
    Memory,
    Redis,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            kind: None,
            redis_url: None,
            redis_ca_file: None,
            redis_key_prefix: "aerugo:".into(),
            redis_timeout_ms: 250,
            redis_retry_seconds: 5,
            memory_max_bytes: 64 << 20,
            tag_ttl_seconds: 5,
        }
    }
}

impl CacheConfig {
    pub fn kind(&self) -> CacheKind {
        self.kind.unwrap_or(if self.redis_url.is_some() {
            CacheKind::Redis
        } else {
            CacheKind::Memory
        })
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match (self.kind(), &self.redis_url) {
            (CacheKind::Redis, None) => {
                problems.push("cache.type = \"redis\" needs cache.redis_url (REDIS_URL)".into());
            }
            (CacheKind::Redis, Some(url))
                if !url.starts_with("redis://") && !url.starts_with("rediss://") =>
            {
                problems.push(format!(
                    "cache.redis_url {:?} must be a redis:// or rediss:// (TLS) URL",
                    redact_url(url)
                ));
            }
            (CacheKind::Redis, Some(url))
                if self.redis_ca_file.is_some() && !url.starts_with("rediss://") =>
            {
                problems.push(
                    "cache.redis_ca_file is for TLS: it needs a rediss:// cache.redis_url".into(),
                );
            }
            _ => {}
        }
        if self.redis_timeout_ms == 0 {
            problems.push("cache.redis_timeout_ms must be at least 1".into());
        }
        problems
    }
}

/// `url` with any password replaced, for messages and `admin check-config`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') {
                ":<redacted>"
            } else {
                ""
            };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
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

/// `[auth]`: the token service and the rules of sign-in (docs/auth.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The token audience, the challenge's `service`.
    pub service: String,
    /// The tokens' `iss`.
    pub issuer: String,
    /// The absolute URL of the token endpoint challenges name. Unset: `/auth/token` on the
    /// origin the client used (the request's `Host`, or a trusted proxy's `X-Forwarded-*`).
    pub realm: Option<String>,
    /// Lifetime of access tokens (60 to 3600 s).
    pub token_lifetime_seconds: i64,
    /// Lifetime of refresh tokens (`docker login`'s identity token).
    pub refresh_lifetime_seconds: i64,
    /// An Ed25519 private key (PKCS#8 PEM) to sign tokens with. Unset: a key generated on
    /// first start and kept in the database, shared by every node.
    pub signing_key_file: Option<PathBuf>,
    /// How often a node reloads the signing keys from the database, following a rotation
    /// (`aerugo admin rotate-signing-key`) made anywhere.
    pub key_reload_seconds: u64,
    /// Failed sign-ins to one account before it is locked for `lockout_seconds`.
    pub max_failed_logins: u64,
    pub lockout_seconds: u64,
    /// Sign-in attempts one client address may make per minute.
    pub logins_per_client_per_minute: u64,
    /// Created as a registry admin at start-up when absent, with `bootstrap_admin_password`
    /// (env `AERUGO__AUTH__BOOTSTRAP_ADMIN_PASSWORD`).
    pub bootstrap_admin: Option<String>,
    pub bootstrap_admin_password: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            service: "aerugo".into(),
            issuer: "aerugo".into(),
            realm: None,
            token_lifetime_seconds: 300,
            refresh_lifetime_seconds: 14 * 24 * 3600,
            signing_key_file: None,
            key_reload_seconds: 60,
            max_failed_logins: 10,
            lockout_seconds: 900,
            logins_per_client_per_minute: 120,
            bootstrap_admin: None,
            bootstrap_admin_password: None,
        }
    }
}

impl AuthConfig {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(60..=3600).contains(&self.token_lifetime_seconds) {
            problems.push("auth.token_lifetime_seconds must be between 60 and 3600".into());
        }
        if self.key_reload_seconds == 0 {
            problems.push("auth.key_reload_seconds must be at least 1".into());
        }
        if self.refresh_lifetime_seconds < 60 {
            problems.push("auth.refresh_lifetime_seconds must be at least 60".into());
        }
        if self.max_failed_logins == 0 || self.lockout_seconds == 0 {
            problems
                .push("auth.max_failed_logins and auth.lockout_seconds must be at least 1".into());
        }
        if self.service.is_empty() || self.service.contains('"') {
            problems.push("auth.service must be non-empty and hold no quote".into());
        }
        if self.realm.as_deref().is_some_and(|r| {
            !(r.starts_with("http://") || r.starts_with("https://")) || r.contains('"')
        }) {
            problems.push("auth.realm must be an absolute http(s) URL".into());
        }
        if self.bootstrap_admin.is_some() != self.bootstrap_admin_password.is_some() {
            problems
                .push("auth.bootstrap_admin and auth.bootstrap_admin_password go together".into());
        }
        problems
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

/// The original product's environment variables, each the key it always meant. `S3_BUCKET`
/// also selects `storage.type = "s3"`: setting the S3 variables is all it takes to move a
/// node onto an object store.
fn original_product_env() -> Figment {
    const KEYS: [(&str, &str); 11] = [
        ("LISTEN_ADDRESS", "server.listen_address"),
        ("LOG_LEVEL", "server.log_level"),
        ("DATABASE_URL", "database.url"),
        ("DATABASE_MAX_CONNECTIONS", "database.max_connections"),
        ("REDIS_URL", "cache.redis_url"),
        ("JWT_SECRET", "security.jwt_secret"),
        ("S3_ENDPOINT", "storage.endpoint"),
        ("S3_BUCKET", "storage.bucket"),
        ("S3_ACCESS_KEY", "storage.access_key"),
        ("S3_SECRET_KEY", "storage.secret_key"),
        ("S3_REGION", "storage.region"),
    ];
    let names: Vec<&str> = KEYS.iter().map(|(name, _)| *name).collect();
    let env = Env::raw().only(&names).map(|name| {
        KEYS.iter()
            .find(|(known, _)| name.as_str().eq_ignore_ascii_case(known))
            .map_or_else(|| name.as_str().to_owned(), |(_, key)| (*key).to_owned())
            .into()
    });
    let mut figment = Figment::new();
    if std::env::var_os("S3_BUCKET").is_some() {
        figment = figment.merge(Serialized::default("storage.type", "s3"));
    }
    figment.merge(env)
}

/// The settings that hold secrets. Each may also be read from a file named by its variable
/// with `_FILE` appended (`JWT_SECRET_FILE`, `AERUGO__DATABASE__URL_FILE`, …): Docker and
/// Kubernetes mount secrets as read-only files, and a file keeps the value out of the
/// process environment, `docker inspect` and shell history.
struct SecretVariable {
    key: &'static str,
    /// The original product's name for it, if it had one.
    original: Option<&'static str>,
}

const SECRET_VARIABLES: [SecretVariable; 7] = [
    SecretVariable::new("database.url", Some("DATABASE_URL")),
    SecretVariable::new("cache.redis_url", Some("REDIS_URL")),
    SecretVariable::new("security.jwt_secret", Some("JWT_SECRET")),
    SecretVariable::new("storage.access_key", Some("S3_ACCESS_KEY")),
    SecretVariable::new("storage.secret_key", Some("S3_SECRET_KEY")),
    SecretVariable::new("auth.bootstrap_admin_password", None),
    SecretVariable::new("edge.gateway.service_password", None),
];

impl SecretVariable {
    const fn new(key: &'static str, original: Option<&'static str>) -> Self {
        SecretVariable { key, original }
    }

    fn original(&self) -> Option<String> {
        self.original.map(str::to_owned)
    }

    /// `AERUGO__SECTION__KEY`.
    fn prefixed(&self) -> Option<String> {
        Some(format!(
            "AERUGO__{}",
            self.key.replace('.', "__").to_ascii_uppercase()
        ))
    }

    /// Whether `key` (an `AERUGO__` variable without its prefix) names a secret's file
    /// rather than a setting.
    fn is_prefixed_file(key: &str) -> bool {
        let key = key.to_ascii_uppercase();
        SECRET_VARIABLES
            .iter()
            .filter_map(SecretVariable::prefixed)
            .any(|name| key == format!("{}_FILE", &name["AERUGO__".len()..]))
    }
}

/// The secrets read from the files that `<VARIABLE>_FILE` variables name, for the variables
/// `name` gives. A variable set both ways, or a file that cannot be read, is a problem (naming
/// the file, never its content).
fn secret_files(
    name: fn(&SecretVariable) -> Option<String>,
    problems: &mut Vec<String>,
) -> Figment {
    let mut figment = Figment::new();
    for secret in &SECRET_VARIABLES {
        let Some(variable) = name(secret) else {
            continue;
        };
        let Some(path) = std::env::var_os(format!("{variable}_FILE")) else {
            continue;
        };
        // An empty variable counts as unset: a compose override cannot remove one.
        if std::env::var_os(&variable).is_some_and(|value| !value.is_empty()) {
            problems.push(format!("set {variable} or {variable}_FILE, not both"));
            continue;
        }
        match read_secret_file(Path::new(&path)) {
            Ok(value) => figment = figment.merge(Serialized::default(secret.key, value)),
            Err(problem) => problems.push(format!("{variable}_FILE: {problem}")),
        }
    }
    figment
}

/// A secret file's content without the line ending editors and `echo` leave at its end.
fn read_secret_file(path: &Path) -> Result<String, String> {
    let content = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = content.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(value.to_owned())
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
        let mut problems = Vec::new();
        let original_files = secret_files(SecretVariable::original, &mut problems);
        let prefixed_files = secret_files(SecretVariable::prefixed, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        figment = figment
            .merge(original_product_env())
            .merge(original_files)
            .merge(
                Env::prefixed("AERUGO__")
                    .filter(|key| !SecretVariable::is_prefixed_file(key.as_str()))
                    .split("__"),
            )
            .merge(prefixed_files);
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
        problems.extend(self.auth.problems());
        problems.extend(self.security.problems(&self.auth));
        if let StorageConfig::S3(s3) = &self.storage {
            problems.extend(s3.problems());
        }
        if let Err(problem) = self.database.backend(&self.server.data_dir) {
            problems.push(problem);
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections must be at least 1".into());
        }
        if self.database.lock_connections == 0 {
            problems.push("database.lock_connections must be at least 1".into());
        }
        if self.database.acquire_timeout_seconds == 0 {
            problems.push("database.acquire_timeout_seconds must be at least 1".into());
        }
        problems.extend(self.cache.problems());
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

    /// Root of the `fs` store (`None` for other stores).
    pub fn storage_root(&self) -> Option<PathBuf> {
        match &self.storage {
            StorageConfig::Fs(fs) => Some(
                fs.path
                    .clone()
                    .unwrap_or_else(|| self.server.data_dir.join("storage")),
            ),
            StorageConfig::S3(_) => None,
        }
    }

    /// The configuration with every secret replaced, for printing.
    pub fn redacted(&self) -> Config {
        const HIDDEN: &str = "<redacted>";
        let mut config = self.clone();
        if let StorageConfig::S3(s3) = &mut config.storage
            && s3.secret_key.is_some()
        {
            s3.secret_key = Some(HIDDEN.into());
        }
        if config.auth.bootstrap_admin_password.is_some() {
            config.auth.bootstrap_admin_password = Some(HIDDEN.into());
        }
        if config.security.jwt_secret.is_some() {
            config.security.jwt_secret = Some(HIDDEN.into());
        }
        config.database.url = config.database.url.as_deref().map(redact_url);
        config.cache.redis_url = config.cache.redis_url.as_deref().map(redact_url);
        if config.edge.gateway.service_password.is_some() {
            config.edge.gateway.service_password = Some(HIDDEN.into());
        }
        for upstream in &mut config.edge.upstreams {
            if upstream.client.password.is_some() {
                upstream.client.password = Some(HIDDEN.into());
            }
        }
        config
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
        assert_eq!(config.storage_root(), Some(PathBuf::from("./data/storage")));
        assert_eq!(
            config.database.backend(&config.server.data_dir),
            Ok(DatabaseBackend::Sqlite(PathBuf::from("./data/metadata.db")))
        );
        assert_eq!(config.cache.kind(), CacheKind::Memory);
    }

    #[test]
    fn every_problem_is_listed() {
        let mut config = Config::default();
        config.server.listen_address = "nowhere".into();
        config.server.log_format = "xml".into();
        config.database.url = Some("mysql://db/aerugo".into());
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
        edge.confirm_max_entries = 0;
        let problems = edge.problems();
        for key in [
            "header_read_timeout_seconds",
            "keepalive_idle_timeout_seconds",
            "max_connections",
            "max_connections_per_client",
            "confirm_max_entries",
        ] {
            let expected = format!("edge.{key} must be at least 1");
            assert!(problems.contains(&expected), "{expected}: {problems:?}");
        }
        assert_eq!(problems.len(), 5, "{problems:?}");
    }

    #[test]
    fn edge_confirmations_stay_usable_while_stale_at_least_as_long_as_fresh() {
        let mut edge = EdgeConfig::default();
        edge.gateway.cores = vec!["core:5000".into()];
        edge.confirm_ttl_seconds = 0;
        edge.confirm_stale_seconds = 0;
        assert!(edge.problems().is_empty(), "{:?}", edge.problems());
        edge.confirm_ttl_seconds = 60;
        edge.confirm_stale_seconds = 59;
        assert_eq!(
            edge.problems(),
            ["edge.confirm_stale_seconds must be at least edge.confirm_ttl_seconds"]
        );
    }

    #[test]
    fn the_gateway_service_credential_comes_from_the_environment_and_is_never_printed() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("AERUGO__EDGE__GATEWAY__SERVICE_USERNAME", "acme+edge");
            jail.set_env("AERUGO__EDGE__GATEWAY__SERVICE_PASSWORD", "hunter3");
            let config = Config::load(None, &Overrides::default()).unwrap();
            let gateway = &config.edge.gateway;
            assert_eq!(gateway.service_username.as_deref(), Some("acme+edge"));
            assert_eq!(gateway.service_password.as_deref(), Some("hunter3"));
            let printed = toml::to_string_pretty(&config.redacted()).unwrap();
            assert!(!printed.contains("hunter3"), "{printed}");
            assert!(!format!("{config:?}").contains("hunter3"));
            Ok(())
        });
        let mut edge = EdgeConfig::default();
        edge.gateway.cores = vec!["core:5000".into()];
        edge.gateway.service_username = Some("acme+edge".into());
        edge.gateway.jwks_refresh_seconds = 0;
        assert_eq!(
            edge.problems(),
            [
                "edge.gateway.jwks_refresh_seconds must be at least 1",
                "edge.gateway.service_username and edge.gateway.service_password go together"
            ]
        );
    }

    #[test]
    fn jwt_secret_names_the_signing_key_and_is_redacted() {
        figment::Jail::expect_with(|jail| {
            let secret = "a-long-shared-secret-for-every-node-0123";
            jail.set_env("JWT_SECRET", secret);
            let config = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(config.security.jwt_secret.as_deref(), Some(secret));
            let shown = toml::to_string(&config.redacted()).unwrap();
            assert!(!shown.contains(secret), "{shown}");

            jail.create_file(
                "aerugo.toml",
                "[security]\njwt_secret = \"short\"\n[auth]\nsigning_key_file = \"/k.pem\"\n",
            )?;
            jail.clear_env();
            let err = Config::load(Some(Path::new("aerugo.toml")), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("at least 32 characters"), "{err}");
            assert!(err.contains("set one"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn every_secret_may_come_from_a_file_named_by_its_variable() {
        figment::Jail::expect_with(|jail| {
            let files = [
                ("DATABASE_URL", "postgres://aerugo:pg-secret@db/aerugo"),
                ("REDIS_URL", "redis://:redis-secret@cache:6379"),
                ("JWT_SECRET", "a-long-shared-secret-for-every-node-0123"),
                ("S3_ACCESS_KEY", "AKFILE"),
                ("S3_SECRET_KEY", "s3-secret"),
                ("AERUGO__AUTH__BOOTSTRAP_ADMIN_PASSWORD", "admin-secret"),
                ("AERUGO__EDGE__GATEWAY__SERVICE_PASSWORD", "edge-secret"),
            ];
            for (variable, value) in files {
                // A secret file written by `echo` ends with a line break: it is not the secret's.
                jail.create_file(variable, &format!("{value}\n"))?;
                jail.set_env(format!("{variable}_FILE"), variable);
            }
            jail.set_env("S3_BUCKET", "registry");
            jail.set_env("AERUGO__AUTH__BOOTSTRAP_ADMIN", "admin");
            // An empty variable is unset (a compose override cannot remove one).
            jail.set_env("REDIS_URL", "");
            let config = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(config.database.url.as_deref(), Some(files[0].1));
            assert_eq!(config.cache.redis_url.as_deref(), Some(files[1].1));
            assert_eq!(config.security.jwt_secret.as_deref(), Some(files[2].1));
            let StorageConfig::S3(s3) = &config.storage else {
                panic!("S3_BUCKET selects S3");
            };
            assert_eq!(s3.access_key.as_deref(), Some(files[3].1));
            assert_eq!(s3.secret_key.as_deref(), Some(files[4].1));
            assert_eq!(
                config.auth.bootstrap_admin_password.as_deref(),
                Some(files[5].1)
            );
            assert_eq!(
                config.edge.gateway.service_password.as_deref(),
                Some(files[6].1)
            );
            let shown = toml::to_string(&config.redacted()).unwrap();
            for secret in [
                "pg-secret",
                "redis-secret",
                files[2].1,
                "s3-secret",
                "admin-secret",
                "edge-secret",
            ] {
                assert!(!shown.contains(secret), "{secret} shown: {shown}");
            }
            Ok(())
        });
    }

    #[test]
    fn a_secret_set_twice_or_unreadable_is_refused_without_its_content() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("jwt", "a-long-shared-secret-for-every-node-0123")?;
            jail.set_env("JWT_SECRET_FILE", "jwt");
            jail.set_env("JWT_SECRET", "another-long-shared-secret-0123456789");
            jail.set_env("AERUGO__DATABASE__URL_FILE", "missing-file");
            jail.create_file("empty", "\n")?;
            jail.set_env("AERUGO__SECURITY__JWT_SECRET_FILE", "empty");
            let err = Config::load(None, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("set JWT_SECRET or JWT_SECRET_FILE, not both"),
                "{err}"
            );
            assert!(!err.contains("another-long"), "{err}");
            assert!(
                err.contains("AERUGO__DATABASE__URL_FILE: cannot read missing-file"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn the_original_variables_move_a_node_to_the_production_backends() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "postgres://aerugo:pw@db:5432/aerugo");
            jail.set_env("DATABASE_MAX_CONNECTIONS", "32");
            jail.set_env("REDIS_URL", "redis://:hunter2@cache:6379/0");
            jail.set_env("S3_ENDPOINT", "http://s3:9000");
            jail.set_env("S3_BUCKET", "registry");
            jail.set_env("S3_ACCESS_KEY", "AK");
            jail.set_env("S3_SECRET_KEY", "SK");
            jail.set_env("S3_REGION", "eu-west-1");
            let config = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(
                config.database.backend(&config.server.data_dir),
                Ok(DatabaseBackend::Postgres(
                    "postgres://aerugo:pw@db:5432/aerugo".into()
                ))
            );
            assert_eq!(config.database.max_connections, 32);
            assert_eq!(config.cache.kind(), CacheKind::Redis);
            let StorageConfig::S3(s3) = &config.storage else {
                panic!("S3_BUCKET selects the s3 store: {:?}", config.storage)
            };
            assert_eq!(
                (
                    s3.bucket.as_str(),
                    s3.region.as_str(),
                    s3.endpoint.as_deref()
                ),
                ("registry", "eu-west-1", Some("http://s3:9000"))
            );
            assert_eq!(
                (s3.access_key.as_deref(), s3.secret_key.as_deref()),
                (Some("AK"), Some("SK"))
            );

            let printed = toml::to_string_pretty(&config.redacted()).unwrap();
            for secret in ["pw@", "hunter2", "\"SK\""] {
                assert!(!printed.contains(secret), "{secret} leaked:\n{printed}");
            }
            assert!(
                printed.contains("postgres://aerugo:<redacted>@db:5432/aerugo"),
                "{printed}"
            );
            assert!(printed.contains("type = \"s3\""), "{printed}");
            // What check-config prints is a configuration file naming the same backends.
            jail.create_file("printed.toml", &printed)?;
            jail.clear_env();
            let reloaded =
                Config::load(Some(Path::new("printed.toml")), &Overrides::default()).unwrap();
            assert!(matches!(reloaded.storage, StorageConfig::S3(_)));
            assert_eq!(reloaded.cache.kind(), CacheKind::Redis);
            Ok(())
        });
    }

    #[test]
    fn backend_sections_are_checked_for_their_own_keys() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("fs.toml", "[storage]\ntype = \"fs\"\nbucket = \"b\"\n")?;
            assert!(Config::load(Some(Path::new("fs.toml")), &Overrides::default()).is_err());
            jail.create_file("tape.toml", "[storage]\ntype = \"tape\"\n")?;
            assert!(Config::load(Some(Path::new("tape.toml")), &Overrides::default()).is_err());
            jail.create_file(
                "s3.toml",
                "[storage]\ntype = \"s3\"\naccess_key = \"AK\"\npart_size_bytes = 1024\n\
                 [cache]\ntype = \"redis\"\n",
            )?;
            let err = Config::load(Some(Path::new("s3.toml")), &Overrides::default()).unwrap_err();
            let ConfigError::Invalid(problems) = err else {
                panic!("{err}")
            };
            for key in [
                "storage.bucket",
                "storage.secret_key",
                "storage.part_size_bytes",
                "cache.redis_url",
            ] {
                assert!(
                    problems.iter().any(|p| p.contains(key)),
                    "{key}: {problems:?}"
                );
            }
            assert_eq!(problems.len(), 4, "{problems:?}");
            Ok(())
        });
    }

    #[test]
    fn redis_takes_tls_urls_and_a_ca_file_only_with_them() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("REDIS_URL", "rediss://:pw@cache.example:6380");
            jail.set_env("AERUGO__CACHE__REDIS_CA_FILE", "/etc/aerugo/redis-ca.pem");
            let config = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(
                config.cache.redis_ca_file.as_deref(),
                Some(Path::new("/etc/aerugo/redis-ca.pem"))
            );
            assert_eq!(config.cache.problems(), Vec::<String>::new());

            jail.set_env("REDIS_URL", "redis://cache.example:6379");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("cache.redis_ca_file"), "{err}");
            jail.set_env("REDIS_URL", "http://cache.example:6379");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("rediss://"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn urls_lose_only_their_passwords() {
        assert_eq!(
            redact_url("postgres://u:p@h:1/db?sslmode=require"),
            "postgres://u:<redacted>@h:1/db?sslmode=require"
        );
        assert_eq!(
            redact_url("redis://:p@h:6379"),
            "redis://:<redacted>@h:6379"
        );
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
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
