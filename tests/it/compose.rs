//! `docker-compose.yml`'s cluster run with `docker compose` (`docker-compose.test.yml` swaps in
//! the images built here: `scripts/image.sh --services`): PostgreSQL, Redis, an S3 server, the
//! `migrate` step, two cores and an edge gateway, started in the order the health checks and
//! `depends_on` conditions give. Real clients push and pull through the gateway; then one core
//! is killed and they still do; then the edge is cut off from the cores (`docker network
//! disconnect`) and serves what it holds while refusing what it does not, clearly.
//!
//! `AERUGO_TEST_IMAGE` and `AERUGO_TEST_SERVICES_IMAGE` name the images (`scripts/test.sh`
//! builds and sets them).

use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::engines::{Docker, describe, require_docker_engine, run};
use crate::support::image::TestImage;
use crate::support::process::free_addr;
use crate::support::seed::Seeder;

/// The images under test, or `None` (skipped) when the run did not build them.
fn images_under_test() -> Option<(String, String)> {
    let image = std::env::var("AERUGO_TEST_IMAGE").unwrap_or_default();
    let services = std::env::var("AERUGO_TEST_SERVICES_IMAGE").unwrap_or_default();
    if !image.is_empty() && !services.is_empty() {
        return Some((image, services));
    }
    assert!(
        std::env::var_os("AERUGO_REQUIRE_TOOLS").is_none(),
        "AERUGO_TEST_IMAGE and AERUGO_TEST_SERVICES_IMAGE are not set: scripts/test.sh builds \
         the images (scripts/image.sh --services) and sets them"
    );
    eprintln!("SKIPPED: AERUGO_TEST_IMAGE / AERUGO_TEST_SERVICES_IMAGE are not set");
    None
}

/// One compose project of the cluster, taken down (with its volumes) when dropped.
struct Cluster {
    project: String,
    env: Vec<(String, String)>,
    /// `127.0.0.1:PORT`, the edge's published port.
    gateway: String,
}

impl Cluster {
    async fn up(image: String, services: String) -> Cluster {
        let port = free_addr().port();
        let env = vec![
            ("AERUGO_PORT".to_owned(), port.to_string()),
            (
                "MINIO_CONSOLE_PORT".to_owned(),
                free_addr().port().to_string(),
            ),
            ("AERUGO_TEST_IMAGE".to_owned(), image),
            ("AERUGO_TEST_SERVICES_IMAGE".to_owned(), services),
        ];
        let cluster = Cluster {
            project: aerugo::testkit::unique_name("aerugoit").replace(['-', '_'], ""),
            env,
            gateway: format!("127.0.0.1:{port}"),
        };
        // `up` returns once every container started in the order of the `depends_on`
        // conditions: the cores after `migrate` completed, the edge after both cores were healthy.
        cluster.compose(&["up", "--detach", "--no-build"]).await;
        cluster.wait_healthy("edge").await;
        cluster
    }

    /// The project and its files, which every `docker-compose` call names.
    fn project_args(&self) -> Vec<&str> {
        let files = ["-f", "docker-compose.yml", "-f", "docker-compose.test.yml"];
        let mut args = vec!["-p", self.project.as_str()];
        args.extend(files);
        args
    }

    async fn compose(&self, args: &[&str]) -> Output {
        let mut full = self.project_args();
        full.extend_from_slice(args);
        let mut command = tokio::process::Command::new("docker-compose");
        command
            .args(&full)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(600), command.output())
            .await
            .expect("docker-compose timed out")
            .expect("running docker-compose");
        assert!(
            out.status.success(),
            "docker-compose {}",
            describe(&full, &out)
        );
        out
    }

    /// The container of `service`.
    async fn container(&self, service: &str) -> String {
        let out = self.compose(&["ps", "-q", service]).await;
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    async fn docker(&self, args: &[&str]) -> String {
        let out = run("docker", args, &[], b"").await;
        assert!(out.status.success(), "docker {}", describe(args, &out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    async fn wait_healthy(&self, service: &str) {
        let container = self.container(service).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let health = self
                .docker(&[
                    "inspect",
                    "--format",
                    "{{.State.Health.Status}}",
                    &container,
                ])
                .await;
            if health == "healthy" {
                return;
            }
            if Instant::now() > deadline {
                let logs = self.compose(&["logs", "--tail", "50"]).await;
                panic!(
                    "{service} is {health} after 120 s: {}",
                    describe(&[], &logs)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `docker network disconnect` (`connect: false`) or `connect` of `service` and the cores'
    /// network.
    async fn attach(&self, service: &str, connect: bool) {
        let container = self.container(service).await;
        let network = format!("{}_cluster", self.project);
        let verb = if connect { "connect" } else { "disconnect" };
        self.docker(&["network", verb, &network, &container]).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker-compose")
            .args(self.project_args())
            .args(["down", "--volumes", "--remove-orphans", "--timeout", "5"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output();
    }
}

/// What real clients do through the gateway, round `round`: docker pushes an image and pulls
/// it back, a monolithic/chunked HTTP push of another, skopeo reads it. Returns the image
/// pushed over HTTP.
async fn clients_through(gateway: &str, round: &str) -> TestImage {
    let docker = Docker::new();
    let local = aerugo::testkit::unique_name(&format!("aerugo-it/compose-{round}-"));
    docker
        .import(
            &TestImage::unpackable(&local, &[400 << 10]),
            &format!("{local}:1"),
        )
        .await;
    let remote = format!("{gateway}/team/docker-{round}:1");
    docker.tag(&format!("{local}:1"), &remote).await;
    docker.ok(&["push", &remote]).await;
    let id = docker.image_id(&remote).await;
    docker.ok(&["rmi", &remote, &format!("{local}:1")]).await;
    docker.pull(&remote).await;
    assert_eq!(
        docker.image_id(&remote).await,
        id,
        "round {round}: docker pulled its image back"
    );

    let image = TestImage::with_layers(&local, &[2 << 20, 5000]);
    Seeder::new(&format!("http://{gateway}"))
        .push_image(&format!("team/http-{round}"), "1", &image)
        .await;
    let out = crate::skopeo::skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{gateway}/team/http-{round}:1"),
    ])
    .await;
    assert_eq!(
        out.stdout, image.manifest,
        "round {round}: skopeo reads the manifest back"
    );
    image
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_cluster_serves_through_a_core_loss_and_an_edge_partition() {
    let Some((image, services)) = images_under_test() else {
        return;
    };
    if !require_docker_engine().await {
        return;
    }
    let cluster = Cluster::up(image, services).await;
    let gateway = cluster.gateway.clone();
    let first = clients_through(&gateway, "one").await;
    // The layer is now in the edge's cache, its confirmation fresh.
    let layer = format!(
        "http://{gateway}/v2/team/http-one/blobs/{}",
        first.layers[0].digest
    );
    assert_eq!(get(&layer).await.status(), 200);

    let core = cluster.container("core-1").await;
    cluster.docker(&["kill", &core]).await;
    clients_through(&gateway, "two").await;

    cluster.attach("edge", false).await;
    let cached = get(&layer).await;
    assert_eq!(
        cached.status(),
        200,
        "a cached, confirmed blob is served while the cores are out of reach"
    );
    assert_eq!(
        cached.bytes().await.unwrap().to_vec(),
        first.layers[0].bytes()
    );
    let uncached = get(&format!(
        "http://{gateway}/v2/team/http-one/blobs/{}",
        first.layers[1].digest
    ))
    .await;
    assert_eq!(uncached.status(), 503, "an uncached blob");
    let body: serde_json::Value = uncached.json().await.unwrap_or_default();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
    let manifest = get(&format!("http://{gateway}/v2/team/http-one/manifests/1")).await;
    assert_eq!(
        manifest.status(),
        503,
        "a manifest, which only the cores hold"
    );

    cluster.attach("edge", true).await;
    // Docker re-attaches the network a moment after the command returns.
    let manifest = format!("http://{gateway}/v2/team/http-one/manifests/1");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = reqwest::Client::new()
            .get(&manifest)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if answer.as_ref().is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway reaches the cores again: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every compose file parses, alone or over the base, as the file headers tell to run them.
#[tokio::test]
async fn every_compose_file_is_valid_as_documented() {
    if !crate::support::require_tool("docker-compose") {
        return;
    }
    let runs: [&[&str]; 4] = [
        &["-f", "docker-compose.single.yml"],
        &["-f", "docker-compose.yml", "-f", "docker-compose.dev.yml"],
        &["-f", "docker-compose.yml", "-f", "docker-compose.prod.yml"],
        &["-f", "docker-compose.yml", "-f", "docker-compose.test.yml"],
    ];
    for files in runs {
        let out = tokio::process::Command::new("docker-compose")
            .args(files)
            .args(["config", "--quiet"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .await
            .expect("running docker-compose");
        assert!(
            out.status.success(),
            "docker-compose {}",
            describe(files, &out)
        );
    }
}
