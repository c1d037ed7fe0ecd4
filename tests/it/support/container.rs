//! A `TestServer` run from the runtime image instead of in-process, so the API suites prove the
//! binary as it ships: `AERUGO_TEST_SERVER_IMAGE=aerugo:test` (`scripts/test.sh` sets it for
//! one stage, after `scripts/image.sh` built the image).
//!
//! The container shares the host's network (the server listens on the loopback port the test
//! chose, and reaches the production stack's services on loopback) and the host's temp
//! directory at the same path, so the data directory the tests inspect and every file a test's
//! configuration names are where the configuration says. It runs as the image's own user.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aerugo::config::Config;
use tempfile::TempDir;

use super::engines::{describe, run};

/// The image's user and group (`deploy/image/setup-runtime.sh`): the data directory is handed
/// to it, as a volume would be.
const IMAGE_USER: u32 = 10001;

/// The image the run asked the servers to run from, if any.
pub fn requested_image() -> Option<String> {
    std::env::var("AERUGO_TEST_SERVER_IMAGE")
        .ok()
        .filter(|image| !image.is_empty())
}

/// A registry container, removed when dropped.
pub struct ServerContainer {
    name: String,
    /// Holds the configuration file the container reads.
    _config_dir: TempDir,
}

impl ServerContainer {
    /// Runs `aerugo serve` from `image` with `config` (written as its TOML file), once
    /// `config.server.listen_address` answers.
    pub async fn start(image: &str, config: &Config) -> ServerContainer {
        hand_to_image_user(&config.server.data_dir);
        let config_dir = tempfile::tempdir().expect("temp dir");
        let config_file = config_dir.path().join("aerugo.toml");
        let toml = toml::to_string(config).expect("the configuration serializes as TOML");
        std::fs::write(&config_file, toml).expect("writing the configuration file");
        make_readable(config_dir.path(), 0o755);
        make_readable(&config_file, 0o644);
        let temp = std::env::temp_dir();
        let mount = format!("{0}:{0}", temp.display());
        let name = aerugo::testkit::unique_name("aerugo-it-server-");
        let config_arg = config_file.to_str().expect("a UTF-8 temp path");
        let args = [
            "run",
            "--detach",
            "--name",
            &name,
            "--network",
            "host",
            "--volume",
            &mount,
            image,
            "serve",
            "--config",
            config_arg,
        ];
        let out = run("docker", &args, &[], b"").await;
        assert!(out.status.success(), "docker {}", describe(&args, &out));
        let container = ServerContainer {
            name,
            _config_dir: config_dir,
        };
        container
            .wait_listening(&config.server.listen_address)
            .await;
        container
    }

    async fn wait_listening(&self, listen_address: &str) {
        let url = format!("http://{listen_address}/v2/");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if client.get(&url).send().await.is_ok() {
                return;
            }
            if !self.is_running() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the server container {} did not answer at {url}; its log:\n{}",
            self.name,
            self.logs().await
        );
    }

    fn is_running(&self) -> bool {
        Command::new("docker")
            .args(["inspect", "--format", "{{.State.Running}}", &self.name])
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "true")
    }

    async fn logs(&self) -> String {
        let args = ["logs", &self.name];
        describe(&args, &run("docker", &args, &[], b"").await)
    }
}

impl Drop for ServerContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "--force", &self.name])
            .output();
    }
}

/// Hands everything under `dir` to the image's user: files a test wrote there as root (an
/// orphan blob "left by a crash") are the server's to delete.
pub fn hand_over(dir: &Path) {
    let out = Command::new("chown")
        .args(["-R", &format!("{IMAGE_USER}:{IMAGE_USER}")])
        .arg(dir)
        .output()
        .expect("running chown");
    assert!(
        out.status.success(),
        "chown -R {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn hand_to_image_user(dir: &Path) {
    std::fs::create_dir_all(dir).expect("creating the data directory");
    std::os::unix::fs::chown(dir, Some(IMAGE_USER), Some(IMAGE_USER))
        .expect("handing the data directory to the image's user (the tests run as root)");
}

fn make_readable(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .expect("setting permissions");
}
