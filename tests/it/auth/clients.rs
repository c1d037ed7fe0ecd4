//! Real clients with credentials: `skopeo login` then push and pull, a robot's secret used
//! by skopeo, an anonymous pull of a public repository, and a denied push with the exact error
//! skopeo reports. (docker and podman: `engines.rs`.)

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use aerugo::accounts::Visibility;
use tempfile::TempDir;

use super::{ADMIN, ADMIN_PASSWORD, As, PASSWORD, Tenants, image, push};
use crate::support::image::TestImage;
use crate::support::require_tool;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs skopeo with its own auth file (`REGISTRY_AUTH_FILE`), never the machine's.
async fn skopeo(auth_file: &Path, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new("skopeo");
    cmd.args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .env("REGISTRY_AUTH_FILE", auth_file);
    tokio::time::timeout(CLIENT_TIMEOUT, cmd.output())
        .await
        .expect("skopeo timed out")
        .expect("skopeo runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

struct Client {
    auth_file: std::path::PathBuf,
    _dir: TempDir,
}

impl Client {
    fn new() -> Client {
        let dir = tempfile::tempdir().unwrap();
        let auth_file = dir.path().join("auth.json");
        std::fs::write(&auth_file, "{}").unwrap();
        Client {
            auth_file,
            _dir: dir,
        }
    }

    async fn login(&self, t: &Tenants, user: &str, password: &str) -> Output {
        let host = t.server.host();
        skopeo(
            &self.auth_file,
            &[
                "login",
                "--tls-verify=false",
                "--username",
                user,
                "--password",
                password,
                &host,
            ],
        )
        .await
    }

    async fn copy(&self, from: &str, to: &str) -> Output {
        skopeo(
            &self.auth_file,
            &[
                "copy",
                "--preserve-digests",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                "--retry-times=0",
                from,
                to,
            ],
        )
        .await
    }
}

fn layout_with_image(tag: &str) -> (TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    TestImage::builder("auth clients")
        .random_layer(64 << 10)
        .pattern_layer(4096, 0x33)
        .build()
        .write_layout(dir.path(), tag);
    let reference = format!("oci:{}:{tag}", dir.path().display());
    (dir, reference)
}

#[tokio::test]
async fn skopeo_login_push_and_pull() {
    if !require_tool("skopeo") {
        return;
    }
    let t = Tenants::start().await;
    let client = Client::new();
    let out = client.login(&t, "alice", PASSWORD).await;
    assert!(out.status.success(), "login: {}", stderr(&out));
    let bad = Client::new().login(&t, "alice", "wrong-password").await;
    assert!(!bad.status.success());

    let (_src, source) = layout_with_image("v1");
    let dest = format!("docker://{}/acme/app:v1", t.server.host());
    let out = client.copy(&source, &dest).await;
    assert!(out.status.success(), "push: {}", stderr(&out));
    let back = tempfile::tempdir().unwrap();
    let out = client
        .copy(&dest, &format!("oci:{}:back", back.path().display()))
        .await;
    assert!(out.status.success(), "pull: {}", stderr(&out));

    // Without login: the private repository is refused.
    let out = Client::new()
        .copy(&dest, &format!("oci:{}:anon", back.path().display()))
        .await;
    assert!(!out.status.success());
}

#[tokio::test]
async fn skopeo_with_a_robot_secret_and_anonymous_public_pulls() {
    if !require_tool("skopeo") {
        return;
    }
    let t = Tenants::start().await;
    let robot = Client::new();
    let out = robot.login(&t, "acme+ci", &t.robot_secret).await;
    assert!(out.status.success(), "robot login: {}", stderr(&out));
    let (_src, source) = layout_with_image("r1");
    let dest = format!("docker://{}/acme/ci/app:r1", t.server.host());
    let out = robot.copy(&source, &dest).await;
    assert!(out.status.success(), "robot push: {}", stderr(&out));

    t.accounts
        .set_visibility(&"acme/ci/app".parse().unwrap(), Visibility::Public)
        .await
        .unwrap();
    let back = tempfile::tempdir().unwrap();
    let out = Client::new()
        .copy(&dest, &format!("oci:{}:anon", back.path().display()))
        .await;
    assert!(
        out.status.success(),
        "anonymous pull of a public repository: {}",
        stderr(&out)
    );
}

#[tokio::test]
async fn skopeo_reports_a_denied_push() {
    if !require_tool("skopeo") {
        return;
    }
    let t = Tenants::start().await;
    // bob is a member of acme: he may pull acme/app, not push to it.
    assert_eq!(
        push(
            &t,
            As::Basic(ADMIN, ADMIN_PASSWORD),
            "acme/app",
            "1",
            &image("denied")
        )
        .await,
        201
    );
    let bob = Client::new();
    assert!(bob.login(&t, "bob", PASSWORD).await.status.success());
    let (_src, source) = layout_with_image("d1");
    let out = bob
        .copy(
            &source,
            &format!("docker://{}/acme/app:d1", t.server.host()),
        )
        .await;
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("denied") || message.contains("unauthorized"),
        "skopeo's error names the refusal: {message}"
    );
}
