//! The machine's Docker engine as the primary registry's client: images built locally (a
//! root filesystem `docker import`ed, then a `docker build` on top, so there are several
//! layers), pushed under several tags and again, pulled back by tag and by digest with the same
//! image id; a robot's login; a public repository pulled without login and a refused push; a
//! 256 MiB layer; a multi-platform index pushed by another client, from which docker picks its
//! own platform; the same through an edge gateway over TLS, its CA trusted in
//! `/etc/docker/certs.d`. dockerd sends chunked bodies, its own `Accept` list and the OAuth2
//! refresh-token login: what skopeo and podman never exercise.

use reqwest::StatusCode;
use serde_json::Value;

use crate::auth::{ADMIN, ADMIN_PASSWORD, As, PASSWORD, Tenants, http, push};
use crate::support::edge::EdgeProcess;
use crate::support::engines::{
    Docker, as_root, command_as, describe, require_docker_engine, write_as_root,
};
use crate::support::image::{
    DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Platform, TestImage, TestIndex,
};

/// The manifest a tag names, as the admin sees it (any media type docker pushes).
async fn manifest(t: &Tenants, repo: &str, reference: &str) -> (StatusCode, Value, String) {
    let response = http()
        .get(t.url(&format!("/v2/{repo}/manifests/{reference}")))
        .basic_auth(ADMIN, Some(ADMIN_PASSWORD))
        .header(
            "accept",
            format!("{OCI_MANIFEST}, {DOCKER_MANIFEST}, {OCI_INDEX}"),
        )
        .send()
        .await
        .unwrap();
    let status = response.status();
    let digest = response
        .headers()
        .get("docker-content-digest")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, digest)
}

/// A docker CLI signed in as `user`.
async fn signed_in(host: &str, user: &str, password: &str) -> Docker {
    let docker = Docker::new();
    let out = docker.login(host, user, password).await;
    assert!(
        out.status.success(),
        "docker login as {user}: {}",
        describe(&[], &out)
    );
    docker
}

fn unique(prefix: &str) -> String {
    aerugo::testkit::unique_name(&format!("aerugo-it/{prefix}-"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_builds_pushes_and_pulls_back_by_tag_and_by_digest() {
    if !require_docker_engine().await {
        return;
    }
    let t = Tenants::start().await;
    let host = t.server.host();
    let docker = signed_in(&host, "alice", PASSWORD).await;
    let local = unique("build");
    let base = TestImage::unpackable(&local, &[64 << 10]);
    docker.import(&base, &format!("{local}-base:1")).await;
    let context = tempfile::tempdir().unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {local}-base:1\nCOPY data.bin /data.bin\nCOPY note.txt /etc/note.txt\n"),
    )
    .unwrap();
    std::fs::write(
        context.path().join("data.bin"),
        aerugo::testkit::image::bytes_for(&local, 200 << 10),
    )
    .unwrap();
    std::fs::write(
        context.path().join("note.txt"),
        format!("built by {local}\n"),
    )
    .unwrap();
    docker.build(context.path(), &format!("{local}:1")).await;

    let repository = format!("{host}/acme/built");
    for tag in ["1", "2"] {
        docker
            .tag(&format!("{local}:1"), &format!("{repository}:{tag}"))
            .await;
    }
    let first = docker.ok(&["push", &format!("{repository}:1")]).await;
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("Pushed"),
        "{}",
        describe(&[], &first)
    );
    // The second tag and the re-push send no layer again.
    for tag in ["2", "1"] {
        let out = docker.ok(&["push", &format!("{repository}:{tag}")]).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("Layer already exists") && !stdout.contains("Pushed"),
            "{}",
            describe(&[], &out)
        );
    }
    let digest = docker
        .repo_digest(&format!("{repository}:1"), &repository)
        .await;
    let (status, body, by_one) = manifest(&t, "acme/built", "1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_one, digest);
    assert_eq!(body["layers"].as_array().map(Vec::len), Some(3), "{body}");
    assert_eq!(manifest(&t, "acme/built", "2").await.2, digest);

    let id = docker.image_id(&format!("{repository}:1")).await;
    let every_tag = [
        format!("{repository}:1"),
        format!("{repository}:2"),
        format!("{local}:1"),
    ];
    let mut rmi = vec!["rmi"];
    rmi.extend(every_tag.iter().map(String::as_str));
    docker.ok(&rmi).await;
    docker.pull(&format!("{repository}:1")).await;
    assert_eq!(
        docker.image_id(&format!("{repository}:1")).await,
        id,
        "the same image by tag"
    );
    docker.ok(&["rmi", &format!("{repository}:1")]).await;
    let by_digest = format!("{repository}@{digest}");
    docker.pull(&by_digest).await;
    assert_eq!(
        docker.image_id(&by_digest).await,
        id,
        "the same image by digest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_signs_in_as_a_robot_and_pulls_public_repositories_without_login() {
    if !require_docker_engine().await {
        return;
    }
    let t = Tenants::start().await;
    let host = t.server.host();
    let robot = signed_in(&host, "acme+ci", &t.robot_secret).await;
    let local = unique("robot");
    robot
        .import(
            &TestImage::unpackable(&local, &[32 << 10]),
            &format!("{local}:1"),
        )
        .await;
    for repo in ["acme/public", "acme/private"] {
        let remote = format!("{host}/{repo}:1");
        robot.tag(&format!("{local}:1"), &remote).await;
        robot.ok(&["push", &remote]).await;
    }
    let public = http()
        .put(t.url("/api/v1/repos/acme/public/visibility"))
        .basic_auth("alice", Some(PASSWORD))
        .json(&serde_json::json!({"visibility": "public"}))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::OK);
    let id = robot.image_id(&format!("{local}:1")).await;
    robot
        .ok(&[
            "rmi",
            &format!("{host}/acme/public:1"),
            &format!("{host}/acme/private:1"),
        ])
        .await;

    let anonymous = Docker::new();
    anonymous.pull(&format!("{host}/acme/public:1")).await;
    assert_eq!(
        anonymous.image_id(&format!("{host}/acme/public:1")).await,
        id
    );
    let refused = anonymous
        .run_with(&["pull", &format!("{host}/acme/private:1")], b"")
        .await;
    assert!(
        !refused.status.success(),
        "an anonymous pull of a private repository: {}",
        describe(&[], &refused)
    );
    let out = anonymous
        .run_with(&["push", &format!("{host}/acme/public:1")], b"")
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && (stderr.contains("unauthorized") || stderr.contains("denied")),
        "an anonymous push is refused: {}",
        describe(&[], &out)
    );
    robot.ok(&["logout", &host]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pushes_and_pulls_a_256_mib_layer() {
    if !require_docker_engine().await {
        return;
    }
    let t = Tenants::start().await;
    let host = t.server.host();
    let docker = signed_in(&host, ADMIN, ADMIN_PASSWORD).await;
    let local = unique("large");
    docker
        .import(
            &TestImage::unpackable(&local, &[256 << 20]),
            &format!("{local}:1"),
        )
        .await;
    let remote = format!("{host}/acme/large:1");
    docker.tag(&format!("{local}:1"), &remote).await;
    docker.ok(&["push", &remote]).await;
    let (status, body, _) = manifest(&t, "acme/large", "1").await;
    assert_eq!(status, StatusCode::OK);
    let size = body["layers"][0]["size"].as_u64().unwrap_or(0);
    assert!(size > 256 << 20, "a layer of {size} bytes: {body}");
    let id = docker.image_id(&remote).await;
    docker.ok(&["rmi", &remote, &format!("{local}:1")]).await;
    docker.pull(&remote).await;
    assert_eq!(docker.image_id(&remote).await, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_picks_its_platform_from_an_index_another_client_pushed() {
    if !require_docker_engine().await {
        return;
    }
    let t = Tenants::start().await;
    let host = t.server.host();
    let seed = unique("index");
    let images: Vec<TestImage> = [Platform::linux_arm64(), Platform::linux_amd64()]
        .into_iter()
        .map(|platform| {
            TestImage::builder(&format!("{seed} {}", platform.architecture))
                .platform(platform)
                .tar_layer("payload.bin", 48 << 10)
                .build()
        })
        .collect();
    let index = TestIndex::new(images);
    for image in &index.images {
        let status = push(
            &t,
            As::Basic(ADMIN, ADMIN_PASSWORD),
            "acme/multi",
            &image.digest,
            image,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let put = http()
        .put(t.url("/v2/acme/multi/manifests/1"))
        .basic_auth(ADMIN, Some(ADMIN_PASSWORD))
        .header("content-type", &index.media_type)
        .body(index.manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);

    let docker = signed_in(&host, "bob", PASSWORD).await;
    let remote = format!("{host}/acme/multi:1");
    docker.pull(&remote).await;
    let native = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let ours = index
        .images
        .iter()
        .find(|image| {
            image
                .platform
                .as_ref()
                .is_some_and(|p| p.architecture == native)
        })
        .expect("an image for this machine");
    assert_eq!(
        docker.image_id(&remote).await,
        ours.config_digest(),
        "docker took linux/{native}"
    );
    let out = docker
        .ok(&[
            "image",
            "inspect",
            "--format",
            "{{.Os}}/{{.Architecture}}",
            &remote,
        ])
        .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("linux/{native}")
    );
    assert_eq!(
        docker
            .repo_digest(&remote, &format!("{host}/acme/multi"))
            .await,
        index.digest
    );
}

/// A certificate authority made for one test and a server certificate it signed for `ip`.
struct TestAuthority {
    ca_pem: String,
    cert_path: std::path::PathBuf,
    key_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TestAuthority {
    fn for_address(ip: std::net::IpAddr) -> TestAuthority {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "aerugo test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec![ip.to_string()])
            .unwrap()
            .signed_by(&server_key, &Issuer::new(ca, &ca_key))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("server.pem"), dir.path().join("server.key"));
        std::fs::write(&cert_path, server.pem()).unwrap();
        std::fs::write(&key_path, server_key.serialize_pem()).unwrap();
        TestAuthority {
            ca_pem: ca_cert.pem(),
            cert_path,
            key_path,
            _dir: dir,
        }
    }
}

/// `/etc/docker/certs.d/<host:port>/ca.crt`: dockerd trusts the CA for that registry only,
/// until dropped.
struct TrustedByDockerd {
    root: Vec<&'static str>,
    dir: String,
}

impl TrustedByDockerd {
    fn install(root: Vec<&'static str>, host: &str, ca_pem: &str) -> TrustedByDockerd {
        let dir = format!("/etc/docker/certs.d/{host}");
        let made = command_as(&root, "mkdir")
            .args(["-p", &dir])
            .status()
            .unwrap();
        assert!(made.success(), "mkdir {dir}");
        write_as_root(&root, &format!("{dir}/ca.crt"), ca_pem.as_bytes());
        TrustedByDockerd { root, dir }
    }
}

impl Drop for TrustedByDockerd {
    fn drop(&mut self) {
        let _ = command_as(&self.root, "rm")
            .args(["-rf", &self.dir])
            .status();
    }
}

/// This machine's first address that is not loopback: dockerd talks plain HTTP to loopback
/// registries (it trusts 127.0.0.0/8), so only another address makes it verify TLS.
fn outside_address() -> Option<std::net::IpAddr> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pushes_and_pulls_through_a_tls_gateway_whose_ca_it_trusts_in_certs_d() {
    if !require_docker_engine().await {
        return;
    }
    let (Some(root), Some(ip)) = (as_root(), outside_address()) else {
        assert!(
            std::env::var_os("AERUGO_REQUIRE_TOOLS").is_none(),
            "certs.d needs root (or passwordless sudo) and an address other than loopback"
        );
        eprintln!("SKIPPED: certs.d needs root (or passwordless sudo) and a non-loopback address");
        return;
    };
    let t = Tenants::start().await;
    let authority = TestAuthority::for_address(ip);
    let edge = EdgeProcess::start(|e| {
        e.gateway.cores = vec![t.server.host()];
        e.gateway.service_username = Some(ADMIN.into());
        e.gateway.service_password = Some(ADMIN_PASSWORD.into());
        e.tls_cert_path = Some(authority.cert_path.clone());
        e.tls_key_path = Some(authority.key_path.clone());
        e.tls_listen_address = Some(format!("{ip}:0"));
    })
    .await;
    let gateway = edge.tls_addr.expect("the TLS listener").to_string();
    let docker = Docker::new();
    let untrusted = docker.login(&gateway, "alice", PASSWORD).await;
    assert!(
        !untrusted.status.success()
            && String::from_utf8_lossy(&untrusted.stderr).contains("certificate"),
        "a login before the CA is trusted: {}",
        describe(&[], &untrusted)
    );
    let _trusted = TrustedByDockerd::install(root, &gateway, &authority.ca_pem);
    let out = docker.login(&gateway, "alice", PASSWORD).await;
    assert!(
        out.status.success(),
        "docker login through the gateway: {}",
        describe(&[], &out)
    );

    let local = unique("gateway");
    docker
        .import(
            &TestImage::unpackable(&local, &[300 << 10]),
            &format!("{local}:1"),
        )
        .await;
    let remote = format!("{gateway}/acme/through-tls:1");
    docker.tag(&format!("{local}:1"), &remote).await;
    docker.ok(&["push", &remote]).await;
    assert_eq!(
        manifest(&t, "acme/through-tls", "1").await.0,
        StatusCode::OK,
        "pushed to the core"
    );
    let id = docker.image_id(&remote).await;
    docker.ok(&["rmi", &remote, &format!("{local}:1")]).await;
    docker.pull(&remote).await;
    assert_eq!(docker.image_id(&remote).await, id);
    let served = edge.metric("aerugo_edge_bytes_served_total", &[]).await;
    assert!(
        served >= (300 << 10) as f64,
        "the layer came through the gateway: {served} bytes"
    );
    docker.ok(&["logout", &gateway]).await;
}
