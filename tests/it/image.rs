//! The runtime image (`scripts/image.sh`: `deploy/Dockerfile.runtime` on a debootstrap base,
//! around the binary the test command built) run as a container: healthy by its own
//! HEALTHCHECK, running as its non-root user, serving real clients on its published port,
//! keeping its data in its volume across a restart, and stopping cleanly on SIGTERM.
//!
//! `AERUGO_TEST_IMAGE` names the image (`scripts/test.sh` builds `aerugo:test` and sets it).

use std::time::{Duration, Instant};

use crate::skopeo::skopeo;
use crate::support::engines::{Docker, describe, require_docker_engine, run};
use crate::support::image::TestImage;
use crate::support::seed::Seeder;

/// The image under test, or `None` (skipped) when the run did not build one.
fn image_under_test() -> Option<String> {
    match std::env::var("AERUGO_TEST_IMAGE") {
        Ok(image) if !image.is_empty() => Some(image),
        _ if std::env::var_os("AERUGO_REQUIRE_TOOLS").is_some() => {
            panic!(
                "AERUGO_TEST_IMAGE is not set: scripts/test.sh builds the image (scripts/image.sh) and sets it"
            )
        }
        _ => {
            eprintln!("SKIPPED: AERUGO_TEST_IMAGE is not set (scripts/image.sh builds the image)");
            None
        }
    }
}

/// A container of the image, removed (with its volume) when dropped.
struct Container {
    name: String,
}

impl Container {
    async fn start(image: &str) -> Container {
        let name = aerugo::testkit::unique_name("aerugo-it-image-");
        let container = Container { name };
        // The image's own health command, checked every second rather than every ten.
        container
            .docker(&[
                "run",
                "--detach",
                "--name",
                &container.name,
                "--publish",
                "127.0.0.1::5000",
                "--health-interval",
                "1s",
                image,
            ])
            .await;
        container
    }

    async fn docker(&self, args: &[&str]) -> String {
        let out = run("docker", args, &[], b"").await;
        assert!(out.status.success(), "docker {}", describe(args, &out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    async fn inspect(&self, format: &str) -> String {
        self.docker(&["inspect", "--format", format, &self.name])
            .await
    }

    /// `127.0.0.1:PORT` the registry is published on.
    async fn host(&self) -> String {
        self.docker(&["port", &self.name, "5000/tcp"]).await
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let health = self.inspect("{{.State.Health.Status}}").await;
            if health == "healthy" {
                return;
            }
            if Instant::now() > deadline {
                let logs = run("docker", &["logs", &self.name], &[], b"").await;
                panic!(
                    "the container is {health} after 60 s: {}",
                    describe(&[], &logs)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "--force", "--volumes", &self.name])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_image_runs_healthy_as_its_user_and_serves_real_clients() {
    let Some(image) = image_under_test() else {
        return;
    };
    if !require_docker_engine().await {
        return;
    }
    let container = Container::start(&image).await;
    container.wait_healthy().await;
    assert_eq!(container.inspect("{{.Config.User}}").await, "aerugo:aerugo");
    assert_eq!(
        container
            .docker(&["exec", &container.name, "id", "-u"])
            .await,
        "10001"
    );
    let host = container.host().await;

    let pushed = TestImage::unpackable("the runtime image", &[200 << 10, 3000]);
    Seeder::new(&format!("http://{host}"))
        .push_image("team/app", "1", &pushed)
        .await;
    let inspected = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{host}/team/app:1"),
    ])
    .await;
    assert_eq!(
        inspected.stdout, pushed.manifest,
        "skopeo reads back the pushed manifest"
    );
    let docker = Docker::new();
    let reference = format!("{host}/team/app:1");
    docker.pull(&reference).await;
    assert_eq!(docker.image_id(&reference).await, pushed.config_digest());
    let copy = format!("{host}/team/copy:1");
    docker.tag(&reference, &copy).await;
    docker.ok(&["push", &copy]).await;
    let catalog: serde_json::Value = reqwest::get(format!("http://{host}/v2/_catalog"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["team/app", "team/copy"])
    );

    // The data lives in the image's volume: a restart keeps it.
    container
        .docker(&["restart", "--time", "20", &container.name])
        .await;
    container.wait_healthy().await;
    let host = container.host().await;
    let again = reqwest::Client::new()
        .head(format!("http://{host}/v2/team/app/manifests/1"))
        .header("accept", &pushed.media_type)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200, "the manifest survived the restart");

    // SIGTERM reaches the registry through tini, which exits cleanly.
    container
        .docker(&["stop", "--time", "20", &container.name])
        .await;
    assert_eq!(container.inspect("{{.State.ExitCode}}").await, "0");
}
