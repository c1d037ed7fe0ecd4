//! The `aerugo edge` harness (pingora owns its runtimes and the process signals, so the edge
//! cannot run inside the test process), upstream entries and metric parsing for edge tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use aerugo::config::MirrorUpstream;
use aerugo::config::{Config, EdgeConfig};
use tempfile::TempDir;

use super::process::free_port_on;
pub use super::process::{AERUGO, CoreProcess, free_addr, http_client};
use super::process::{read_log, send_signal, spawn_logged, terminate, wait_until_ready};

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
    /// The current process's log.
    log: PathBuf,
    /// The process a graceful upgrade replaces, until it exits ([`EdgeProcess::start_upgrade`]).
    outgoing: Option<Child>,
    /// Upgrades started so far (names their logs).
    upgrades: usize,
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
            log: work.path().join("edge.log"),
            work,
            launch: Launch::Config(Box::new(config)),
            child: None,
            outgoing: None,
            upgrades: 0,
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
            log: work.path().join("edge.log"),
            work,
            launch: Launch::Flags(upstreams.to_vec()),
            child: None,
            outgoing: None,
            upgrades: 0,
        };
        process.spawn().await;
        process
    }

    /// Launches the process on `self.addr` (and a fresh TLS port when TLS is configured: on
    /// loopback, or on the address the test gave as `IP:0`).
    async fn spawn(&mut self) {
        if let Launch::Config(config) = &mut self.launch {
            config.edge.listen_address = self.addr.to_string();
            if config.edge.tls_cert_path.is_some() {
                let tls = match config.edge.tls_listen_address.as_deref() {
                    Some(given) => {
                        let given: SocketAddr = given.parse().expect("tls_listen_address");
                        if given.port() == 0 {
                            free_port_on(given.ip())
                        } else {
                            given
                        }
                    }
                    None => free_addr(),
                };
                config.edge.tls_listen_address = Some(tls.to_string());
                self.tls_addr = Some(tls);
            }
            let text = toml::to_string_pretty(&**config).expect("configuration as TOML");
            std::fs::write(self.config_path(), text).expect("writing the edge configuration");
        }
        self.log = self.work.path().join("edge.log");
        let log = self.log_path();
        let mut child = spawn_logged(&mut self.command(), &log);
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

    fn config_path(&self) -> PathBuf {
        self.work.path().join("edge.toml")
    }

    /// `aerugo edge …` as launched (the configuration file already written).
    fn command(&self) -> Command {
        let mut command = Command::new(AERUGO);
        command.arg("edge");
        match &self.launch {
            Launch::Config(_) => {
                command.arg("--config").arg(self.config_path());
            }
            Launch::Flags(upstreams) => {
                command
                    .arg("--listen")
                    .arg(self.addr.to_string())
                    .arg("--cache-dir")
                    .arg(&self.cache_dir);
                for u in upstreams {
                    command.arg("--upstream").arg(u);
                }
            }
        }
        command
    }

    /// The Unix socket over which a graceful upgrade hands the listening sockets over.
    fn upgrade_socket(&self) -> PathBuf {
        match &self.launch {
            Launch::Config(config) => config.edge.upgrade_socket_path(),
            Launch::Flags(_) => self.cache_dir.join("upgrade.sock"),
        }
    }

    /// Graceful restart, first half: starts `aerugo edge --upgrade` with the same launch
    /// (configuration, addresses, cache directory) and returns once it waits on the upgrade
    /// socket. The running process becomes the outgoing one: the test sends it SIGQUIT
    /// ([`EdgeProcess::signal_outgoing`]), and from then on this handle is the new process.
    pub async fn start_upgrade(&mut self) {
        assert!(self.outgoing.is_none(), "an upgrade is already under way");
        let socket = self.upgrade_socket();
        let _ = std::fs::remove_file(&socket);
        self.upgrades += 1;
        let log = self
            .work
            .path()
            .join(format!("edge-upgrade-{}.log", self.upgrades));
        let mut command = self.command();
        command.arg("--upgrade");
        let mut child = spawn_logged(&mut command, &log);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "aerugo edge --upgrade exited before listening on {} ({status}); log:\n{}",
                    socket.display(),
                    read_log(&log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "aerugo edge --upgrade not waiting on {} after 30 s; log:\n{}",
                socket.display(),
                read_log(&log)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.outgoing = self.child.replace(child);
        self.log = log;
    }

    /// Sends `signal` (`"QUIT"`, `"TERM"`…) to the process being replaced by an upgrade.
    pub fn signal_outgoing(&self, signal: &str) {
        let child = self.outgoing.as_ref().expect("no upgrade under way");
        send_signal(child, signal);
    }

    /// Waits up to `patience` for the outgoing process to exit; its exit status, or `None`
    /// when it is still running (it stays the outgoing process, killed on drop).
    pub fn wait_outgoing(&mut self, patience: Duration) -> Option<ExitStatus> {
        let child = self.outgoing.as_mut().expect("no upgrade under way");
        let deadline = Instant::now() + patience;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.outgoing = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the current process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
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

    /// The current process's log (after an upgrade, the new process's).
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    /// What the current process has logged so far.
    pub fn log(&self) -> String {
        read_log(&self.log_path())
    }

    /// What the first process (`edge.log`: before any upgrade) logged.
    pub fn first_log(&self) -> String {
        read_log(&self.work.path().join("edge.log"))
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
        for mut child in self.child.take().into_iter().chain(self.outgoing.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One HTTP/1.1 response as read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits what a connection received into responses (each framed by `Content-Length`; these
/// tests send no `HEAD`); `Err` with the unparsed rest when it ends part-way.
pub fn parse_responses(mut bytes: &[u8]) -> Result<Vec<RawResponse>, String> {
    let mut responses = Vec::new();
    while !bytes.is_empty() {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| String::from_utf8_lossy(bytes).into_owned())?;
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| head.clone())?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let rest = &bytes[end + 4..];
        if rest.len() < length {
            return Err(head);
        }
        responses.push(RawResponse {
            status,
            headers,
            body: rest[..length].to_vec(),
        });
        bytes = &rest[length..];
    }
    Ok(responses)
}

/// How a raw connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// The edge closed it (end of stream).
    Cleanly,
    /// Reset or otherwise failed.
    Failed(String),
    /// Neither within 10 s.
    StillOpen,
}

/// Reads until the edge closes the connection, resets it or 10 s pass: what arrived, and how
/// it ended.
pub async fn read_to_close(stream: &mut tokio::net::TcpStream) -> (Vec<u8>, Closed) {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) => return (received, Closed::Cleanly),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (received, Closed::Failed(e.to_string())),
            Err(_) => return (received, Closed::StillOpen),
        }
    }
}

/// Reads one complete response (and nothing after it) within 10 s; what arrived otherwise.
pub async fn read_response(stream: &mut tokio::net::TcpStream) -> Result<RawResponse, String> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut responses) = parse_responses(&received)
            && responses.len() == 1
        {
            return Ok(responses.remove(0));
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut byte)).await {
            Ok(Ok(1)) => received.push(byte[0]),
            other => {
                return Err(format!(
                    "no complete response ({other:?}); received {:?}",
                    String::from_utf8_lossy(&received)
                ));
            }
        }
    }
}

/// Writes `request` on a new connection to `addr`, then reads until the edge closes it.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (Vec<u8>, Closed) {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connecting to the edge");
    stream
        .write_all(request)
        .await
        .expect("writing the request");
    read_to_close(&mut stream).await
}
