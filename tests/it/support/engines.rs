//! Container engines run by the tests: a runner with a timeout and a failure report, podman
//! with storage and an auth file of its own, and the machine's Docker engine driven through a
//! docker CLI with a configuration of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

use super::image::TestImage;
use super::require_tool;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `program` with `envs`, feeding `stdin`; killed if it outlives [`CLIENT_TIMEOUT`].
pub async fn run(program: &str, args: &[&str], envs: &[(&str, &Path)], stdin: &[u8]) -> Output {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).await.expect("writing stdin");
    drop(input);
    match tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out.expect("waiting for the client"),
        Err(_) => panic!("{program} {} timed out", args.join(" ")),
    }
}

pub fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "{}\nexit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    )
}

/// podman with its own storage (vfs, under a temp dir) and auth file.
pub struct Podman {
    storage: TempDir,
    runroot: TempDir,
    auth_file: PathBuf,
}

impl Podman {
    pub fn new() -> Podman {
        let storage = tempfile::tempdir().unwrap();
        let auth_file = storage.path().join("auth.json");
        std::fs::write(&auth_file, br#"{"auths":{}}"#).unwrap();
        // A short --runroot: podman puts sockets under it, and socket paths are limited.
        let runroot = tempfile::Builder::new()
            .prefix("pr")
            .tempdir_in("/tmp")
            .unwrap();
        Podman {
            storage,
            runroot,
            auth_file,
        }
    }

    pub async fn run_with(&self, args: &[&str], stdin: &[u8]) -> Output {
        let root = self.storage.path().join("root");
        let mut full = vec![
            "--root",
            root.to_str().unwrap(),
            "--runroot",
            self.runroot.path().to_str().unwrap(),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ];
        full.extend_from_slice(args);
        let envs = [("REGISTRY_AUTH_FILE", self.auth_file.as_path())];
        run("podman", &full, &envs, stdin).await
    }

    pub async fn ok(&self, args: &[&str]) -> Output {
        let out = self.run_with(args, b"").await;
        assert!(out.status.success(), "podman {}", describe(args, &out));
        out
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Best effort: vfs layers may belong to sub-uids the test cannot delete otherwise.
        let root = self.storage.path().join("root");
        let _ = std::process::Command::new("podman")
            .arg("--root")
            .arg(root)
            .arg("--runroot")
            .arg(self.runroot.path())
            .args(["--storage-driver", "vfs", "--events-backend", "none"])
            .args(["rmi", "--all", "--force"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether the Docker engine answers; like `require_tool`, a missing engine fails the test
/// when `AERUGO_REQUIRE_TOOLS` is set and skips it otherwise.
pub async fn require_docker_engine() -> bool {
    if !require_tool("docker") {
        return false;
    }
    let out = run(
        "docker",
        &["info", "--format", "{{.ServerVersion}}"],
        &[],
        b"",
    )
    .await;
    if out.status.success() {
        return true;
    }
    let why = describe(&["docker", "info"], &out);
    if std::env::var_os("AERUGO_REQUIRE_TOOLS").is_some() {
        panic!(
            "the Docker engine is required (AERUGO_REQUIRE_TOOLS is set) but does not answer: {why}"
        );
    }
    eprintln!("SKIPPED: the Docker engine does not answer: {why}");
    false
}

/// The docker CLI with a configuration directory of its own (`DOCKER_CONFIG`), so logins
/// never touch the machine's; images it made are removed when dropped.
pub struct Docker {
    config: TempDir,
    images: std::sync::Mutex<Vec<String>>,
}

impl Docker {
    pub fn new() -> Docker {
        Docker {
            config: tempfile::tempdir().unwrap(),
            images: Default::default(),
        }
    }

    pub async fn run_with(&self, args: &[&str], stdin: &[u8]) -> Output {
        let envs = [("DOCKER_CONFIG", self.config.path())];
        run("docker", args, &envs, stdin).await
    }

    /// Runs docker, which must succeed.
    pub async fn ok(&self, args: &[&str]) -> Output {
        let out = self.run_with(args, b"").await;
        assert!(out.status.success(), "docker {}", describe(args, &out));
        out
    }

    pub async fn login(&self, host: &str, user: &str, password: &str) -> Output {
        let args = ["login", "--username", user, "--password-stdin", host];
        self.run_with(&args, password.as_bytes()).await
    }

    /// What `docker login` stored for `host` in its config.json.
    pub fn stored_auth(&self, host: &str) -> Value {
        let config = std::fs::read(self.config.path().join("config.json")).expect("config.json");
        let config: Value = serde_json::from_slice(&config).unwrap();
        config["auths"][host].clone()
    }

    /// Imports the single tar layer of `image` as a local image named `reference`.
    pub async fn import(&self, image: &TestImage, reference: &str) {
        let tar = image.layers[0].bytes();
        let out = self.run_with(&["import", "-", reference], &tar).await;
        assert!(
            out.status.success(),
            "docker import: {}",
            describe(&[], &out)
        );
        self.images.lock().unwrap().push(reference.to_owned());
    }

    /// `docker build -t reference` of the context directory `context` (its Dockerfile builds
    /// on local images only: nothing can be pulled here).
    pub async fn build(&self, context: &Path, reference: &str) {
        let context = context.to_str().expect("a UTF-8 path");
        self.ok(&["build", "--tag", reference, context]).await;
        self.images.lock().unwrap().push(reference.to_owned());
    }

    /// `docker pull reference`; the image is removed with the others.
    pub async fn pull(&self, reference: &str) -> Output {
        let out = self.ok(&["pull", reference]).await;
        self.images.lock().unwrap().push(reference.to_owned());
        out
    }

    /// The digest the image has in `repository` (`host/name`), once pushed there or pulled.
    pub async fn repo_digest(&self, reference: &str, repository: &str) -> String {
        let out = self
            .ok(&[
                "image",
                "inspect",
                "--format",
                "{{json .RepoDigests}}",
                reference,
            ])
            .await;
        let digests: Vec<String> = serde_json::from_slice(&out.stdout).expect("RepoDigests");
        let prefix = format!("{repository}@");
        digests
            .iter()
            .find_map(|d| d.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no digest in {repository} among {digests:?}"))
            .to_owned()
    }

    pub async fn tag(&self, from: &str, to: &str) {
        self.ok(&["tag", from, to]).await;
        self.images.lock().unwrap().push(to.to_owned());
    }

    pub async fn image_id(&self, reference: &str) -> String {
        let out = self
            .ok(&["image", "inspect", "--format", "{{.Id}}", reference])
            .await;
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let images = std::mem::take(&mut *self.images.lock().unwrap());
        if !images.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "--force"])
                .args(&images)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// How a test runs what needs root (containerd, changes to dockerd's configuration): directly
/// when it is root, through `sudo -n` when that works (CI runners that are not root), `None`
/// otherwise.
pub fn as_root() -> Option<Vec<&'static str>> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        return Some(Vec::new());
    }
    let sudo = Command::new("sudo")
        .args(["-n", "true"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    sudo.success().then(|| vec!["sudo", "-n"])
}

/// `program` run through `prefix` (nothing, or `sudo -n`).
pub fn command_as(prefix: &[&str], program: &str) -> Command {
    match prefix.split_first() {
        None => Command::new(program),
        Some((first, rest)) => {
            let mut command = Command::new(first);
            command.args(rest).arg(program);
            command
        }
    }
}

/// Writes `bytes` to `path` as root (through `prefix`: nothing, or `sudo -n`), for files of the
/// machine's configuration that tests change (dockerd's `daemon.json`, its `certs.d`).
pub fn write_as_root(prefix: &[&str], path: &str, bytes: &[u8]) {
    use std::io::Write;
    let mut tee = command_as(prefix, "tee")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("tee");
    tee.stdin.take().unwrap().write_all(bytes).unwrap();
    assert!(tee.wait().unwrap().success(), "writing {path}");
}
