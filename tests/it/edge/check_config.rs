//! `aerugo admin check-config` validates the `[edge]` section as `aerugo edge` does at start-up.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::edge::AERUGO;

fn check_config(file: &Path, extra: &[&str]) -> Output {
    Command::new(AERUGO)
        .args(["admin", "check-config", "--config"])
        .arg(file)
        .args(extra)
        .output()
        .expect("running aerugo admin check-config")
}

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name)
}

#[test]
fn check_config_reports_every_problem_of_the_edge_section() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("edge.toml");
    let not_pem = dir.path().join("not-pem.crt");
    std::fs::write(&not_pem, "not a certificate").expect("writing");
    std::fs::write(
        &file,
        format!(
            r#"[edge]
listen_address = "everywhere"
tls_listen_address = "127.0.0.1:5443"
tls_cert_path = "{}"
tls_key_path = "{}"
header_read_timeout_seconds = 0
max_connections_per_client = 0

[[edge.upstreams]]
name = "hub"
url = "ftp://registry.example"

[[edge.upstreams]]
name = "quay"
url = "https://quay.io"
timeout_seconds = 0
"#,
            not_pem.display(),
            dir.path().join("missing.key").display()
        ),
    )
    .expect("writing the configuration");
    let output = check_config(&file, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for problem in [
        "edge.listen_address",
        "edge.tls_cert_path",
        "edge.tls_key_path",
        "edge.header_read_timeout_seconds",
        "edge.max_connections_per_client",
        "\"hub\": url \"ftp://registry.example\"",
        "\"quay\": timeout_seconds",
    ] {
        assert!(stderr.contains(problem), "{problem} missing from: {stderr}");
    }

    // A gateway core that is not host:port.
    std::fs::write(&file, "[edge.gateway]\ncores = [\"core-without-port\"]\n").expect("writing");
    let output = check_config(&file, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("core-without-port"), "{stderr}");
}

/// The shipped files pass; `--edge` also asks for something to serve, which a core's
/// configuration need not have.
#[test]
fn check_config_passes_the_shipped_configurations_and_edge_asks_for_upstreams() {
    let output = check_config(&shipped("edge.toml"), &["--edge"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let example = shipped("aerugo.example.toml");
    let output = check_config(&example, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = check_config(&example, &["--edge"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("[[edge.upstreams]]"), "{stderr}");
}
