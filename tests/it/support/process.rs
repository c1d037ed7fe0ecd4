//! Subprocess harness shared by the tests that need a real process: `aerugo serve` cores a
//! test may `kill -9` or stop with SIGTERM, and `aerugo edge` (see `edge.rs`). Each process logs
//! to a file, shown when it fails to start, and is killed when dropped.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::edge::metric_sum;

/// The `aerugo` binary cargo built for these tests.
pub const AERUGO: &str = env!("CARGO_BIN_EXE_aerugo");

/// A loopback address with a port that was free a moment ago (bound to port 0, then released),
/// for servers that must be told their port on the command line.
pub fn free_addr() -> SocketAddr {
    free_port_on(std::net::Ipv4Addr::LOCALHOST.into())
}

/// An address on `ip` with a port that was free a moment ago.
pub fn free_port_on(ip: std::net::IpAddr) -> SocketAddr {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("binding a port")
}

/// An HTTP client for tests: no redirects followed, generous timeout.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(300))
        .build()
        .expect("http client")
}

/// Waits until `url` answers `200`, failing with `child`'s log if it exits or takes too long.
pub async fn wait_until_ready(
    client: &reqwest::Client,
    url: &str,
    child: &mut Child,
    log: &Path,
    what: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited during start-up ({status}); log:\n{}",
                read_log(log)
            );
        }
        if let Ok(r) = client.get(url).send().await
            && r.status() == 200
        {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what} not ready at {url} after 30 s; log:\n{}",
                read_log(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Starts `aerugo ARGS…` with a soft open-file limit of 256 (as a default login shell would),
/// waits until `ready_path` answers, and asserts that it raised the soft limit to the hard one.
pub async fn assert_raises_open_file_limit(args: &[std::ffi::OsString], ready_path: &str) {
    let work = tempfile::tempdir().expect("temp dir");
    let addr = free_addr();
    let log = work.path().join("process.log");
    let mut child = spawn_logged(
        Command::new("sh")
            .arg("-c")
            .arg("ulimit -Sn 256 && exec \"$0\" \"$@\"")
            .arg(AERUGO)
            .args(args)
            .arg("--listen")
            .arg(addr.to_string())
            .env("AERUGO__EDGE__GRACE_PERIOD_SECONDS", "0"),
        &log,
    );
    let url = format!("http://{addr}{ready_path}");
    wait_until_ready(&http_client(), &url, &mut child, &log, "aerugo").await;
    let (soft, hard) = open_file_limits(child.id());
    terminate(&mut child, Duration::from_secs(10));
    assert_ne!(hard, "256", "the test needs a hard limit above 256");
    assert_eq!(soft, hard, "the soft open-file limit was not raised");
}

/// Soft and hard `Max open files` of a running process, from `/proc/<pid>/limits`.
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut values = line["Max open files".len()..].split_whitespace();
    let soft = values.next().expect("soft").to_owned();
    let hard = values.next().expect("hard").to_owned();
    (soft, hard)
}

pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"))
}

/// Starts `command` with its output in `log`, logging warnings only unless the test asked for
/// another level (`AERUGO__SERVER__LOG_LEVEL` in the command's environment).
pub fn spawn_logged(command: &mut Command, log: &Path) -> Child {
    const LEVEL: &str = "AERUGO__SERVER__LOG_LEVEL";
    let out = File::create(log).expect("creating a log file");
    let err = out.try_clone().expect("cloning the log file");
    if !command.get_envs().any(|(name, _)| name == LEVEL) {
        command.env(LEVEL, "warn");
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        // The environment must not reconfigure the processes under test.
        .env_remove("AERUGO_CONFIG")
        .env_remove("LISTEN_ADDRESS")
        .env_remove("LOG_LEVEL")
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Sends `signal` (`"TERM"`, `"QUIT"`…, as `kill -SIGNAL` names it) to the process.
pub fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status();
    // Until it is waited for, the child's pid stays its own (an exited child is a zombie,
    // which `kill` still reaches), so this can neither miss nor hit another process.
    assert!(
        status.is_ok_and(|s| s.success()),
        "kill -{signal} {} failed",
        child.id()
    );
}

/// Sends SIGTERM and waits up to `patience` for the process to exit; SIGKILL after that.
/// Returns whether it exited on its own.
pub fn terminate(child: &mut Child, patience: Duration) -> bool {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// A running `aerugo serve` core, as a subprocess so a test can kill it with SIGKILL.
pub struct CoreProcess {
    pub addr: SocketAddr,
    work: TempDir,
    log: PathBuf,
    child: Option<Child>,
}

impl CoreProcess {
    /// A core on a fresh temporary data directory.
    pub async fn start() -> CoreProcess {
        let work = tempfile::tempdir().expect("temp dir");
        let data = work.path().join("data");
        Self::start_on(work, &data).await
    }

    /// A core on `data_dir`, which outlives the process (restart tests); `work` holds the log.
    pub async fn start_on(work: TempDir, data_dir: &Path) -> CoreProcess {
        Self::start_with_env(work, data_dir, &[]).await
    }

    /// A core whose environment also holds `env` (e.g. the production backends' variables).
    pub async fn start_with_env(
        work: TempDir,
        data_dir: &Path,
        env: &[(&str, String)],
    ) -> CoreProcess {
        let addr = free_addr();
        let log = work.path().join(format!("core-{}.log", addr.port()));
        let mut command = Command::new(AERUGO);
        command
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .envs(env.iter().map(|(name, value)| (*name, value)));
        let mut child = spawn_logged(&mut command, &log);
        // /healthz rather than /v2/, which answers 401 once the registry has users.
        let url = format!("http://{addr}/healthz");
        wait_until_ready(&http_client(), &url, &mut child, &log, "aerugo serve").await;
        CoreProcess {
            addr,
            work,
            log,
            child: Some(child),
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `kill -9`: no graceful anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `aerugo_http_requests_total` over all routes, methods and statuses matching `labels`.
    pub async fn requests_served(&self, labels: &[(&str, &str)]) -> f64 {
        let text = http_client()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("core /metrics")
            .text()
            .await
            .expect("metrics text");
        metric_sum(&text, "aerugo_http_requests_total", labels)
    }

    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// The temporary directory holding the log (and, for [`CoreProcess::start`], the data).
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// Sends SIGTERM and returns at once (the process keeps serving what is in flight).
    pub fn signal_terminate(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }

    /// SIGTERM, then waits up to `patience`; returns whether it exited on its own.
    pub fn terminate(&mut self, patience: Duration) -> bool {
        self.child
            .take()
            .is_some_and(|mut child| terminate(&mut child, patience))
    }

    /// Resolves a `Location` header (a path, or an absolute URL) against this core.
    pub fn location(&self, response: &reqwest::Response) -> String {
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no Location header: {response:?}"));
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            self.url(location)
        }
    }
}

impl Drop for CoreProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
