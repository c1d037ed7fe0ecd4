//! Test harness: an in-process Aerugo on a loopback port with its own temp data directory,
//! plus helpers for HTTP and for tools that must be installed.

#![allow(dead_code)]

pub mod container;
pub mod distribution;
pub mod edge;
pub mod engines;
pub mod fault_upstream;
pub mod process;
pub mod seed;
pub mod stack;

use std::net::SocketAddr;
use std::path::Path;

use aerugo::config::Config;
pub use aerugo::testkit::ServerThread;
/// The one image vocabulary (`aerugo::testkit::image`), shared with the library's unit tests.
pub use aerugo::testkit::image;
use tempfile::TempDir;

/// A running registry. Runs on its own runtime thread, so tests may block (run skopeo,
/// `std::process`) without starving it, or in a container of the runtime image when the run
/// asks for it (`container`). Stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub data_dir: TempDir,
    /// The configuration the server was started with: the tests open the server's own
    /// backends from it to look at what it stored, whichever stack it runs on.
    pub config: Config,
    running: Running,
    /// The production stack the server runs on, if the run asked for one; dropped (and
    /// cleaned up) after the server has stopped.
    _stack: Option<stack::Stack>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `configure` adjusted the default configuration: on the
    /// embedded backends, or on a fresh production stack when the run asked for it
    /// (`AERUGO_TEST_STACK=production`, see `stack`).
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> TestServer {
        let stack = stack::Stack::requested().await;
        Self::start_on(stack.as_ref(), configure)
            .await
            .with_stack(stack)
    }

    fn with_stack(mut self, stack: Option<stack::Stack>) -> TestServer {
        self._stack = stack;
        self
    }

    /// Starts a node of `stack`'s cluster (or an embedded server without one).
    pub async fn start_on(
        stack: Option<&stack::Stack>,
        configure: impl FnOnce(&mut Config),
    ) -> TestServer {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.server.data_dir = data_dir.path().to_path_buf();
        config.server.shutdown_grace_seconds = 1;
        config.server.log_level = "warn".into();
        if let Some(stack) = stack {
            stack.configure(&mut config);
        }
        configure(&mut config);
        config.validate().expect("test configuration is valid");
        if let Some(image) = container::requested_image() {
            return Self::start_in_container(&image, data_dir, config).await;
        }
        let started_with = config.clone();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local addr");
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let thread = ServerThread::spawn(move |stop| async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
            let _ = ready_tx.send(Ok(()));
            let stopped = async move {
                let _ = stop.await;
            };
            if let Err(e) = aerugo::app::run_server(config, listener, stopped).await {
                eprintln!("test server failed: {e:#}");
            }
        });
        ready_rx
            .await
            .expect("server thread")
            .expect("server start");
        let server = TestServer {
            addr,
            data_dir,
            config: started_with,
            running: Running::InProcess(thread),
            _stack: None,
        };
        server.wait_ready().await;
        server
    }

    async fn start_in_container(image: &str, data_dir: TempDir, mut config: Config) -> TestServer {
        let addr = process::free_addr();
        config.server.listen_address = addr.to_string();
        let container = container::ServerContainer::start(image, &config).await;
        let server = TestServer {
            addr,
            data_dir,
            config,
            running: Running::Container(container),
            _stack: None,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            // 401: the registry has users and asks for credentials; it is up all the same.
            if let Ok(r) = client.get(self.url("/v2/")).send().await
                && (r.status() == 200 || r.status() == 401)
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("test server did not become ready");
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn data_path(&self) -> &Path {
        self.data_dir.path()
    }

    /// After the test wrote into the server's data directory itself: a server running as the
    /// image's user must own those files as it owns its own.
    pub fn hand_over_data(&self) {
        if matches!(self.running, Running::Container(_)) {
            container::hand_over(self.data_path());
        }
    }

    /// Where the filesystem blob store keeps its files; `None` on the production stack (S3).
    pub fn storage_dir(&self) -> Option<std::path::PathBuf> {
        self.config.storage_root()
    }

    /// Whether blob `GET`s answer with a redirect to a presigned S3 URL.
    pub fn redirects_blob_gets(&self) -> bool {
        matches!(&self.config.storage, aerugo::config::StorageConfig::S3(s3) if s3.redirect)
    }
}

/// Where a `TestServer` runs; dropping it stops the server.
enum Running {
    InProcess(ServerThread),
    Container(container::ServerContainer),
}

/// Whether `tool` is on PATH. When it is missing: with `AERUGO_REQUIRE_TOOLS` set (the test
/// command and CI set it) the test fails loudly; otherwise it is skipped with a message.
pub fn require_tool(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        return true;
    }
    if std::env::var_os("AERUGO_REQUIRE_TOOLS").is_some() {
        panic!(
            "{tool} is required (AERUGO_REQUIRE_TOOLS is set) but is not installed; run ./scripts/test.sh"
        );
    }
    eprintln!("SKIPPED: {tool} is not installed (run ./scripts/test.sh to install it)");
    false
}
