//! Container engines run by the tests: a runner with a timeout and a failure report, and
//! podman with storage and an auth file of its own.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

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
