//! The `aerugo edge` harness (pingora owns its runtimes and the process signals, so the edge
//! cannot run inside the test process), upstream entries and metric parsing for edge tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use aerugo::config::{Config, EdgeConfig};
use aerugo::edge::mirror::MirrorUpstream;
use tempfile::TempDir;

pub use super::process::{AERUGO, CoreProcess, free_addr, http_client};
use super::process::{read_log, spawn_logged, terminate, wait_until_ready};

/// A `[[edge.upstreams]]` entry with test-friendly retry settings (one quick retry), so a
/// failing upstream fails fast.
pub fn upstream(name: &str, url: &str) -> MirrorUpstream {
    let mut u = MirrorUpstream::default();
    u.client.name = name.to_owned();
    u.client.url = url.to_owned();
    u.client.retries = 1;
    u.client.retry_base_delay_ms = 10;
    u.client.connect_timeout_seconds = 2.0;
    u.client.timeout_seconds = 10.0;
    u.client.read_idle_timeout_seconds = 10.0;
    u
}

/// Sum of every sample of `name` whose labels include all of `labels`, in a Prometheus text
/// exposition. 0 when there is none.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let matches = labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// How an edge is launched.
#[derive(Clone)]
enum Launch {
    /// `aerugo edge --config FILE`, the file written from this configuration.
    Config(Box<Config>),
    /// `aerugo edge --listen ADDR --cache-dir DIR --upstream …` (the quick start, no file).
    Flags(Vec<String>),
}

/// A running `aerugo edge`. Killed when dropped.
pub struct EdgeProcess {
    /// The plain-HTTP listener.
    pub addr: SocketAddr,
    /// The TLS listener, when configured.
    pub tls_addr: Option<SocketAddr>,
    pub cache_dir: PathBuf,
    pub http: reqwest::Client,
    work: TempDir,
    launch: Launch,
    child: Option<Child>,
}

impl EdgeProcess {
    /// Starts an edge from a configuration file. The harness chooses the listen address and
    /// the cache directory (a fresh temp dir), sets short shutdown grace periods, and then lets
    /// `configure` set the rest (upstreams, TTLs, cap, TLS, gateway…).
    pub async fn start(configure: impl FnOnce(&mut EdgeConfig)) -> EdgeProcess {
        let work = tempfile::tempdir().expect("temp dir");
        let cache_dir = work.path().join("cache");
        let mut config = Config::default();
        config.server.log_level = "warn".into();
        let edge = &mut config.edge;
        edge.cache_dir = cache_dir.clone();
        edge.cache_max_bytes = 4 << 30;
        edge.threads = 2;
        edge.grace_period_seconds = 0;
        edge.graceful_shutdown_timeout_seconds = 1;
        configure(edge);
        let mut process = EdgeProcess {
            addr: free_addr(),
            tls_addr: None,
            cache_dir,
            http: http_client(),
            work,
            launch: Launch::Config(Box::new(config)),
            child: None,
        };
        process.spawn().await;
        process
    }

    /// The quick start without a file: `aerugo edge --listen --cache-dir --upstream [NAME=]URL…`.
    pub async fn start_with_flags(upstreams: &[String]) -> EdgeProcess {
        let work = tempfile::tempdir().expect("temp dir");
        let cache_dir = work.path().join("cache");
        let mut process = EdgeProcess {
            addr: free_addr(),
            tls_addr: None,
            cache_dir,
            http: http_client(),
            work,
            launch: Launch::Flags(upstreams.to_vec()),
            child: None,
        };
        process.spawn().await;
        process
    }

    /// Launches the process on `self.addr` (and a fresh TLS port when TLS is configured).
    async fn spawn(&mut self) {
        let log = self.log_path();
        let mut command = Command::new(AERUGO);
        command.arg("edge");
        match &mut self.launch {
            Launch::Config(config) => {
                config.edge.listen_address = self.addr.to_string();
                if config.edge.tls_cert_path.is_some() {
                    let tls = free_addr();
                    config.edge.tls_listen_address = Some(tls.to_string());
                    self.tls_addr = Some(tls);
                }
                let file = self.work.path().join("edge.toml");
                let text = toml::to_string_pretty(&**config).expect("configuration as TOML");
                std::fs::write(&file, text).expect("writing the edge configuration");
                command.arg("--config").arg(&file);
            }
            Launch::Flags(upstreams) => {
                command
                    .arg("--listen")
                    .arg(self.addr.to_string())
                    .arg("--cache-dir")
                    .arg(&self.cache_dir);
                for u in upstreams.iter() {
                    command.arg("--upstream").arg(u);
                }
            }
        }
        let mut child = spawn_logged(&mut command, &log);
        wait_until_ready(
            &self.http,
            &self.url("/healthz"),
            &mut child,
            &log,
            "aerugo edge",
        )
        .await;
        self.child = Some(child);
    }

    /// Stops the edge with SIGTERM (graceful, with the short grace periods set by
    /// [`EdgeProcess::start`]); panics when it does not exit within 10 s. Returns how long it
    /// took (zero when it was not running).
    pub fn stop(&mut self) -> Duration {
        let started = Instant::now();
        if let Some(mut child) = self.child.take() {
            assert!(
                terminate(&mut child, Duration::from_secs(10)),
                "aerugo edge did not exit within 10 s of SIGTERM; log:\n{}",
                self.log()
            );
            return started.elapsed();
        }
        Duration::ZERO
    }

    /// Starts the (stopped) edge again with the same configuration and cache directory, on a
    /// new port.
    pub async fn restart(&mut self) {
        let _ = self.stop();
        self.addr = free_addr();
        self.spawn().await;
    }

    pub fn log_path(&self) -> PathBuf {
        self.work.path().join("edge.log")
    }

    /// What the edge has logged so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path())
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} through the edge: {e}"))
    }

    /// The edge's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), 200, "edge /metrics");
        response.text().await.expect("metrics text")
    }

    /// One edge metric, summed over the series whose labels include `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics().await, name, labels)
    }

    /// Bytes in the cache's blob and manifest files, measured on disk.
    pub fn disk_usage(&self) -> u64 {
        ["blobs", "manifests"]
            .iter()
            .flat_map(|d| crate::distribution::files_under(&self.cache_dir.join(d)))
            .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
