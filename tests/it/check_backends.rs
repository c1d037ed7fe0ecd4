//! `aerugo admin check-config` on the shipped cluster configuration: the original product's
//! variables point it at this machine's PostgreSQL, S3 server and Redis; it prints the
//! resolved configuration without a secret, says each backend answers, and fails (exit 1)
//! when one does not.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::edge::AERUGO;
use crate::support::stack::Stack;

fn check_cluster_config(env: &[(&str, String)]) -> Output {
    Command::new(AERUGO)
        .args(["admin", "check-config", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cluster.toml"))
        .envs(env.iter().map(|(name, value)| (*name, value)))
        .output()
        .expect("running aerugo admin check-config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_says_whether_each_production_backend_answers() {
    let Some(stack) = Stack::create().await else {
        return;
    };
    let secret_url = stack
        .database_url()
        .replace("aerugo:aerugo@", "aerugo:pg-secret-aerugo@");
    let mut env = vec![
        // The real password is "aerugo"; a wrong one shows the database refusing.
        ("DATABASE_URL", stack.database_url()),
        ("REDIS_URL", stack.redis_url.clone()),
        ("S3_ENDPOINT", stack.s3.endpoint.clone()),
        ("S3_BUCKET", stack.bucket.clone()),
        ("S3_ACCESS_KEY", stack.s3.access_key.clone()),
        ("S3_SECRET_KEY", stack.s3.secret_key.clone()),
        (
            "AERUGO__SERVER__DATA_DIR",
            tempfile::tempdir()
                .expect("dir")
                .path()
                .display()
                .to_string(),
        ),
    ];
    // A fresh database: cluster.toml says migrate = false, so the schema must be migrated
    // first, which check-config says without doing it.
    let output = check_cluster_config(&env);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("run `aerugo admin migrate`"), "{stdout}");
    let migrated = Command::new(AERUGO)
        .args(["admin", "migrate", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cluster.toml"))
        .envs(env.iter().map(|(name, value)| (*name, value)))
        .output()
        .expect("running aerugo admin migrate");
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let output = check_cluster_config(&env);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for backend in ["# storage:", "# database:", "# cache:"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(backend))
            .unwrap_or_else(|| panic!("{backend} missing: {stdout}"));
        assert!(line.contains("answers"), "{line}");
    }
    assert!(
        !stdout.contains(&stack.s3.secret_key),
        "the S3 secret leaked: {stdout}"
    );
    assert!(
        !stdout.contains("aerugo:aerugo@"),
        "the database password leaked: {stdout}"
    );

    // A wrong database password and an object store that is not there: both reported, exit 1.
    env[0].1 = secret_url;
    env[2].1 = "http://127.0.0.1:9".into();
    let output = check_cluster_config(&env);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    for backend in ["# storage:", "# database:"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(backend))
            .unwrap_or_else(|| panic!("{backend} missing: {stdout}"));
        assert!(line.contains("PROBLEM"), "{line}");
    }
    assert!(
        !stdout.contains("pg-secret-aerugo"),
        "the database password leaked: {stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("# cache:") && l.contains("answers")),
        "{stdout}"
    );
}
