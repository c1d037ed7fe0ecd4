//! The CNCF distribution registry (`docker-registry`, the Debian package) as an upstream for
//! the edge tests: a subprocess on a loopback port with its own temp storage, killed on drop.
//! Callers check `require_tool("docker-registry")` first.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::edge::free_addr;

pub struct DistributionRegistry {
    pub addr: SocketAddr,
    dir: TempDir,
    child: Option<Child>,
}

impl DistributionRegistry {
    pub async fn start() -> DistributionRegistry {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = free_addr();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n  secret: aerugo-edge-tests\n",
            root = dir.path().join("storage").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("writing the registry configuration");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("running docker-registry");
        let client = super::edge::http_client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "docker-registry exited during start-up ({status}); log:\n{}",
                    std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
                );
            }
            if let Ok(r) = client.get(format!("http://{addr}/v2/")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry not ready after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        DistributionRegistry {
            addr,
            dir,
            child: Some(child),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Stops the registry (SIGKILL): from now on its port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for DistributionRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}
