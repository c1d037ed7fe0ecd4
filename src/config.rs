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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub database: DatabaseConfig,
    pub cache: CacheConfig,
    pub registry: RegistryConfig,
    pub gc: GcConfig,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen_address: "127.0.0.1:5000".into(),
            log_level: "info".into(),
            log_format: "pretty".into(),
            data_dir: PathBuf::from("./data"),
            shutdown_grace_seconds: 30,
        }
    }
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
        StorageConfig { kind: "fs".into(), path: None }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH`; defaults to `sqlite://<data_dir>/metadata.db`.
    pub url: Option<String>,
    /// Connection pool size for server databases.
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { url: None, max_connections: 10 }
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
        CacheConfig { kind: "memory".into(), memory_max_bytes: 64 << 20, tag_ttl_seconds: 5 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Largest manifest accepted, in bytes (the spec asks registries to take at least 4 MiB).
    pub max_manifest_bytes: u64,
    /// Page size of `_catalog` and `tags/list` when the client gives no `n`, and the largest `n` honoured.
    pub max_page_size: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig { max_manifest_bytes: 4 << 20, max_page_size: 1000 }
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
        GcConfig { interval_seconds: 0, grace_period_seconds: 3600 }
    }
}

/// Overrides from the command line; `None` leaves the configured value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
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
        let legacy = Env::raw().only(&["LISTEN_ADDRESS", "LOG_LEVEL"]).map(|key| {
            format!("server.{}", key.as_str().to_ascii_lowercase()).into()
        });
        figment = figment.merge(legacy).merge(Env::prefixed("AERUGO__").split("__"));
        let mut config: Config = figment.extract().map_err(Box::new)?;
        if let Some(listen) = &overrides.listen {
            config.server.listen_address.clone_from(listen);
        }
        if let Some(dir) = &overrides.data_dir {
            config.server.data_dir.clone_from(dir);
        }
        config.validate()?;
        Ok(config)
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
            problems.push(format!("server.log_level {:?} is not a valid log filter", self.server.log_level));
        }
        if !matches!(self.server.log_format.as_str(), "pretty" | "json") {
            problems.push(format!("server.log_format {:?} must be \"pretty\" or \"json\"", self.server.log_format));
        }
        if !matches!(self.storage.kind.as_str(), "fs" | "filesystem") {
            problems.push(format!(
                "storage.type {:?} is not supported by this build (supported: \"fs\")",
                self.storage.kind
            ));
        }
        if let Some(url) = &self.database.url
            && !url.starts_with("sqlite:")
        {
            problems.push(format!("database.url {url:?} is not supported by this build (supported: sqlite://PATH)"));
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections must be at least 1".into());
        }
        if self.cache.kind != "memory" {
            problems.push(format!("cache.type {:?} is not supported by this build (supported: \"memory\")", self.cache.kind));
        }
        if !(1024..=(64 << 20)).contains(&self.registry.max_manifest_bytes) {
            problems.push("registry.max_manifest_bytes must be between 1024 and 67108864".into());
        }
        if self.registry.max_page_size == 0 {
            problems.push("registry.max_page_size must be at least 1".into());
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems)) }
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.server.listen_address.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 5000)))
    }

    pub fn storage_root(&self) -> PathBuf {
        self.storage.path.clone().unwrap_or_else(|| self.server.data_dir.join("storage"))
    }

    /// Path of the SQLite database file.
    pub fn sqlite_path(&self) -> PathBuf {
        match &self.database.url {
            Some(url) => PathBuf::from(url.trim_start_matches("sqlite://").trim_start_matches("sqlite:")),
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
    fn file_env_and_flags_layer_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "aerugo.toml",
                "[server]\nlisten_address = \"127.0.0.1:7000\"\nlog_level = \"debug\"\n[gc]\ngrace_period_seconds = 5\n",
            )?;
            jail.set_env("LOG_LEVEL", "warn");
            jail.set_env("AERUGO__REGISTRY__MAX_MANIFEST_BYTES", "8192");
            let overrides = Overrides { listen: None, data_dir: Some("/tmp/x".into()) };
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
