//! dockerd's `registry-mirrors` pointing at an edge: the daemon asks the mirror for bare Docker
//! Hub paths (`/v2/library/<image>/…`) of what `docker pull docker.io/library/<image>` names,
//! and the edge pulls them through from its default upstream (here the Debian
//! `docker-registry`, seeded under `library/…`). Cold, warm, several pulls of a cold image at
//! once, and with the upstream stopped (the tag served stale).
//!
//! The test changes the machine's daemon configuration (`/etc/docker/daemon.json`, then
//! SIGHUP, which reloads `registry-mirrors`) and puts it back however it ends; a run killed
//! midway leaves a backup that the next run restores first.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::distribution::DistributionRegistry;
use crate::support::edge::{EdgeProcess, upstream};
use crate::support::engines::{
    Docker, as_root, command_as, describe, require_docker_engine, write_as_root,
};
use crate::support::image::TestImage;
use crate::support::require_tool;
use crate::support::seed::Seeder;

const DAEMON_JSON: &str = "/etc/docker/daemon.json";
const BACKUP: &str = "/etc/docker/daemon.json.aerugo-test-backup";

/// The daemon's mirrors set to `mirrors` for as long as it lives.
struct DaemonMirrors {
    /// `[]` as root, `["sudo", "-n"]` otherwise.
    root: Vec<&'static str>,
    /// The configuration file as it was (`None`: there was none).
    original: Option<Vec<u8>>,
}

impl DaemonMirrors {
    async fn set(root: Vec<&'static str>, mirrors: &[String]) -> DaemonMirrors {
        if Path::new(BACKUP).exists() {
            eprintln!("restoring {DAEMON_JSON} from {BACKUP}, left by an interrupted run");
            let backup = std::fs::read(BACKUP).expect("reading the backup");
            let left = DaemonMirrors {
                original: (!backup.is_empty()).then_some(backup),
                root: root.clone(),
            };
            drop(left);
        }
        let original = std::fs::read(DAEMON_JSON).ok();
        let guard = DaemonMirrors { root, original };
        guard.write(BACKUP, guard.original.as_deref().unwrap_or_default());
        guard.reload_with(mirrors);
        guard.wait_for(mirrors).await;
        guard
    }

    /// The original configuration with `registry-mirrors` replaced, written and reloaded.
    fn reload_with(&self, mirrors: &[String]) {
        let mut config: Value = match &self.original {
            Some(bytes) => serde_json::from_slice(bytes).expect("daemon.json is JSON"),
            None => serde_json::json!({}),
        };
        config["registry-mirrors"] = serde_json::json!(mirrors);
        self.write(DAEMON_JSON, &serde_json::to_vec_pretty(&config).unwrap());
        let pid = std::process::Command::new("pgrep")
            .args(["-o", "-x", "dockerd"])
            .output()
            .expect("pgrep");
        let pid = String::from_utf8_lossy(&pid.stdout).trim().to_owned();
        assert!(!pid.is_empty(), "no dockerd process to reload");
        let status = command_as(&self.root, "kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill -HUP dockerd");
        assert!(status.success(), "kill -HUP {pid}");
    }

    fn write(&self, path: &str, bytes: &[u8]) {
        write_as_root(&self.root, path, bytes);
    }

    /// Until `docker info` reports exactly these mirrors.
    async fn wait_for(&self, mirrors: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let info = std::process::Command::new("docker")
                .args(["info", "--format", "{{json .RegistryConfig.Mirrors}}"])
                .output()
                .expect("docker info");
            let shown: Vec<String> = serde_json::from_slice(&info.stdout).unwrap_or_default();
            let shown: Vec<&str> = shown.iter().map(|m| m.trim_end_matches('/')).collect();
            if shown == mirrors.iter().map(String::as_str).collect::<Vec<_>>() {
                return;
            }
            assert!(Instant::now() < deadline, "dockerd shows mirrors {shown:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for DaemonMirrors {
    /// Back to the original: a reload with the original's mirrors (a key missing from the file
    /// leaves the running value alone, so they are set explicitly), then the original bytes.
    fn drop(&mut self) {
        let mirrors: Vec<String> = self
            .original
            .as_deref()
            .and_then(|bytes| serde_json::from_slice::<Value>(bytes).ok())
            .and_then(|config| serde_json::from_value(config["registry-mirrors"].clone()).ok())
            .unwrap_or_default();
        self.reload_with(&mirrors);
        match &self.original {
            Some(bytes) => self.write(DAEMON_JSON, bytes),
            None => {
                let _ = command_as(&self.root, "rm")
                    .args(["-f", DAEMON_JSON])
                    .status();
            }
        }
        let _ = command_as(&self.root, "rm").args(["-f", BACKUP]).status();
    }
}

/// An image the engine can unpack, seeded into the upstream as `library/<name>:1`.
async fn seed(registry: &DistributionRegistry, name: &str) -> TestImage {
    let image = TestImage::unpackable(name, &[768 << 10, 96 << 10]);
    Seeder::new(&registry.base_url())
        .push_image(&format!("library/{name}"), "1", &image)
        .await;
    image
}

async fn blob_fetches(edge: &EdgeProcess) -> f64 {
    edge.metric(
        "aerugo_edge_upstream_fetches_total",
        &[("upstream", "hub"), ("kind", "blob")],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerd_pulls_docker_hub_names_through_the_edge_as_its_mirror() {
    if !require_docker_engine().await || !require_tool("docker-registry") {
        return;
    }
    let Some(root) = as_root() else {
        assert!(
            std::env::var_os("AERUGO_REQUIRE_TOOLS").is_none(),
            "changing dockerd's mirrors needs root or passwordless sudo"
        );
        eprintln!("SKIPPED: changing dockerd's mirrors needs root or passwordless sudo");
        return;
    };
    let mut registry = DistributionRegistry::start().await;
    let suffix = &aerugo::testkit::unique_name("")[..10];
    let (warm_name, cold_name) = (
        format!("aerugo-it-{suffix}-a"),
        format!("aerugo-it-{suffix}-b"),
    );
    let warm = seed(&registry, &warm_name).await;
    let cold = seed(&registry, &cold_name).await;
    let mut hub = upstream("hub", &registry.base_url());
    hub.default = true;
    // Past one second the tag is stale: the pull with the upstream stopped shows the edge
    // serving what it has rather than failing.
    hub.tag_ttl_seconds = 1;
    let edge = EdgeProcess::start(|e| e.upstreams = vec![hub]).await;
    let mirrors = DaemonMirrors::set(root, &[format!("http://{}", edge.host())]).await;
    let docker = Docker::new();
    let hub_name = |name: &str| format!("docker.io/library/{name}:1");

    docker.pull(&hub_name(&warm_name)).await;
    assert_eq!(
        docker.image_id(&hub_name(&warm_name)).await,
        warm.config_digest()
    );
    let fetched = blob_fetches(&edge).await;
    assert_eq!(
        fetched,
        warm.blobs().len() as f64,
        "each blob fetched once from the upstream"
    );

    docker.ok(&["rmi", &hub_name(&warm_name)]).await;
    docker.pull(&hub_name(&warm_name)).await;
    assert_eq!(
        blob_fetches(&edge).await,
        fetched,
        "the warm pull came from the edge's cache"
    );

    let pulls = 4;
    let outputs = futures_util::future::join_all((0..pulls).map(|_| async {
        let reference = hub_name(&cold_name);
        docker.run_with(&["pull", &reference], b"").await
    }))
    .await;
    for out in &outputs {
        assert!(
            out.status.success(),
            "a concurrent cold pull: {}",
            describe(&[], out)
        );
    }
    docker
        .ok(&["image", "inspect", &hub_name(&cold_name)])
        .await;
    docker.pull(&hub_name(&cold_name)).await; // tracked for removal
    assert_eq!(
        blob_fetches(&edge).await,
        fetched + cold.blobs().len() as f64,
        "{pulls} pulls of a cold image: one upstream GET per blob"
    );

    registry.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    docker.ok(&["rmi", &hub_name(&warm_name)]).await;
    let stale_before = edge.metric("aerugo_edge_stale_serves_total", &[]).await;
    docker.pull(&hub_name(&warm_name)).await;
    assert_eq!(
        docker.image_id(&hub_name(&warm_name)).await,
        warm.config_digest()
    );
    assert!(
        edge.metric("aerugo_edge_stale_serves_total", &[]).await > stale_before,
        "the tag was served stale with the upstream stopped"
    );
    drop(mirrors);
}
