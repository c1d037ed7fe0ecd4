//! Container engines with credentials: `docker login` / `push` / `pull` through the machine's
//! Docker engine (the OAuth2 refresh-token flow docker uses: the login keeps an identity token,
//! never the password) and `podman login` / `pull` / `push`; each refused without login or
//! without the right to push.

use base64::Engine;
use reqwest::StatusCode;

use super::{ADMIN, ADMIN_PASSWORD, As, PASSWORD, Tenants, http, push};
use crate::support::engines::{Docker, Podman, describe, require_docker_engine};
use crate::support::image::{DOCKER_MANIFEST, OCI_MANIFEST, TestImage};
use crate::support::require_tool;

/// The status of a manifest `GET`, asked as the admin (so visibility plays no part) for any
/// of the media types engines push.
async fn manifest_status(t: &Tenants, repo: &str, tag: &str) -> StatusCode {
    http()
        .get(t.url(&format!("/v2/{repo}/manifests/{tag}")))
        .basic_auth(ADMIN, Some(ADMIN_PASSWORD))
        .header("accept", format!("{OCI_MANIFEST}, {DOCKER_MANIFEST}"))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_login_push_and_pull_with_a_refresh_token() {
    if !require_docker_engine().await {
        return;
    }
    let t = Tenants::start().await;
    let host = t.server.host();
    let docker = Docker::new();
    let local = aerugo::testkit::unique_name("aerugo-it/docker-");
    let image = TestImage::unpackable("docker login", &[256 << 10]);
    docker.import(&image, &format!("{local}:1")).await;
    let remote = format!("{host}/acme/docker:1");
    docker.tag(&format!("{local}:1"), &remote).await;

    let wrong = docker.login(&host, "alice", "wrong-password").await;
    assert!(!wrong.status.success(), "{}", describe(&[], &wrong));
    let out = docker.login(&host, "alice", PASSWORD).await;
    assert!(
        out.status.success(),
        "docker login: {}",
        describe(&[], &out)
    );
    // docker keeps the user name and the refresh token it got, never the password.
    let stored = docker.stored_auth(&host);
    let user_only = base64::engine::general_purpose::STANDARD.encode("alice:");
    assert!(
        stored["identitytoken"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
            && stored["auth"] == user_only.as_str(),
        "{stored}"
    );

    docker.ok(&["push", &remote]).await;
    assert_eq!(
        manifest_status(&t, "acme/docker", "1").await,
        StatusCode::OK
    );

    let id = docker.image_id(&remote).await;
    docker.ok(&["rmi", &remote, &format!("{local}:1")]).await;
    docker.ok(&["pull", &remote]).await;
    assert_eq!(
        docker.image_id(&remote).await,
        id,
        "the same image came back"
    );

    // A member may pull but not push; the engine reports the refusal.
    let bob = Docker::new();
    let out = bob.login(&host, "bob", PASSWORD).await;
    assert!(out.status.success(), "bob's login: {}", describe(&[], &out));
    bob.ok(&["pull", &remote]).await;
    let theirs = format!("{host}/acme/docker:bob");
    bob.tag(&remote, &theirs).await;
    let out = bob.run_with(&["push", &theirs], b"").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && (stderr.contains("denied") || stderr.contains("unauthorized")),
        "bob's push is refused: {}",
        describe(&[], &out)
    );

    // The engine signs in with the refresh token alone: revoked, it no longer gets in.
    let revoked = http()
        .post(t.url("/api/v1/auth/logout"))
        .json(&serde_json::json!({"refresh_token": stored["identitytoken"]}))
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    let out = docker.run_with(&["pull", &remote], b"").await;
    assert!(
        !out.status.success(),
        "a revoked refresh token: {}",
        describe(&[], &out)
    );

    docker.ok(&["logout", &host]).await;
    assert!(docker.stored_auth(&host).is_null(), "logged out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_login_pull_and_push() {
    if !require_tool("podman") {
        return;
    }
    let t = Tenants::start().await;
    let host = t.server.host();
    let image = TestImage::unpackable("podman login", &[128 << 10]);
    let status = push(
        &t,
        As::Basic(ADMIN, ADMIN_PASSWORD),
        "acme/pod",
        "1",
        &image,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let source = format!("{host}/acme/pod:1");

    let podman = Podman::new();
    let out = podman
        .run_with(&["pull", "--tls-verify=false", &source], b"")
        .await;
    assert!(
        !out.status.success(),
        "anonymous pull of a private repository"
    );
    let login = [
        "login",
        "--tls-verify=false",
        "--username",
        "alice",
        "--password-stdin",
        &host,
    ];
    let out = podman.run_with(&login, PASSWORD.as_bytes()).await;
    assert!(
        out.status.success(),
        "podman login: {}",
        describe(&login, &out)
    );
    podman.ok(&["pull", "--tls-verify=false", &source]).await;
    let copy = format!("docker://{host}/acme/pod-copy:1");
    podman
        .ok(&["push", "--tls-verify=false", &source, &copy])
        .await;
    assert_eq!(
        manifest_status(&t, "acme/pod-copy", "1").await,
        StatusCode::OK
    );

    podman.ok(&["logout", &host]).await;
    let elsewhere = format!("docker://{host}/acme/pod-copy:2");
    let out = podman
        .run_with(&["push", "--tls-verify=false", &source, &elsewhere], b"")
        .await;
    assert!(!out.status.success(), "a push after logout is refused");
}
