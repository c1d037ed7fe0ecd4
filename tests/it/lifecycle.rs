//! The process's life: start-up rejects bad configuration with every problem listed, SIGTERM
//! lets in-flight requests finish, `aerugo admin gc` works online (through the running
//! server) and offline, and `aerugo admin seed` leaves what clients can read.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use tempfile::TempDir;

use super::support::image::sha256;
use super::support::process::{AERUGO, CoreProcess, http_client};

#[test]
fn invalid_configuration_is_rejected_with_every_problem_listed() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nlisten_address = \"nowhere\"\nlog_format = \"xml\"\n[storage]\ntype = \"s3\"\n",
    )
    .unwrap();
    let output = Command::new(AERUGO)
        .args(["serve", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for key in [
        "server.listen_address",
        "server.log_format",
        "storage.bucket",
    ] {
        assert!(stderr.contains(key), "{key} missing from: {stderr}");
    }
    assert!(
        !dir.path().join("data").exists(),
        "a rejected start created the data directory"
    );

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[server]\nlisten_adress = \"127.0.0.1:1\"\n").unwrap();
    let output = Command::new(AERUGO)
        .args(["admin", "check-config", "--config"])
        .arg(&unknown)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("listen_adress"));

    let output = Command::new(AERUGO)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data2"))
        .env("LISTEN_ADDRESS", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not-an-address"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_upload_finish() {
    let mut core = CoreProcess::start().await;
    let blob = Bytes::from(vec![7u8; 4 << 20]);
    let digest = sha256(&blob);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let upload = tokio::spawn(
        http_client()
            .post(core.url(&format!("/v2/life/cycle/blobs/uploads/?digest={digest}")))
            .header("content-type", "application/octet-stream")
            .header("content-length", blob.len().to_string())
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    let half = blob.len() / 2;
    tx.send(Ok(blob.slice(..half))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    core.signal_terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Ok(blob.slice(half..))).await.unwrap();
    drop(tx);
    let response = upload
        .await
        .unwrap()
        .expect("the in-flight upload was cut off by SIGTERM");
    assert_eq!(response.status(), 201, "in-flight upload after SIGTERM");
    assert!(
        core.terminate(Duration::from_secs(10)),
        "the server did not exit after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_gc_runs_through_the_live_server_and_offline() {
    let work = TempDir::new().unwrap();
    let data = work.path().join("data");
    let core = CoreProcess::start_on(TempDir::new().unwrap(), &data).await;
    let client = http_client();
    let blob = Bytes::from_static(b"an unreferenced blob");
    let digest = sha256(&blob);
    let pushed = client
        .post(core.url(&format!("/v2/gc/cli/blobs/uploads/?digest={digest}")))
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201);
    // Timestamps are whole seconds; a zero grace period collects what is older than now.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let gc = |grace: &str| {
        Command::new(AERUGO)
            .args(["admin", "gc", "--grace-period", grace, "--data-dir"])
            .arg(&data)
            .env("AERUGO__SERVER__LOG_LEVEL", "warn")
            .output()
            .unwrap()
    };
    let kept = gc("3600");
    assert!(
        kept.status.success(),
        "{}",
        String::from_utf8_lossy(&kept.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&kept.stdout).unwrap();
    assert_eq!(
        report["blobs_deleted"], 0,
        "a fresh blob was collected: {report}"
    );
    let head = client
        .head(core.url(&format!("/v2/gc/cli/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);

    let online = gc("0");
    assert!(
        online.status.success(),
        "{}",
        String::from_utf8_lossy(&online.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&online.stdout).unwrap();
    assert_eq!(report["blobs_deleted"], 1, "{report}");
    let head = client
        .head(core.url(&format!("/v2/gc/cli/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404, "the collected blob is still served");

    drop(core);
    let offline = gc("0");
    assert!(
        offline.status.success(),
        "offline gc: {}",
        String::from_utf8_lossy(&offline.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&offline.stdout).unwrap();
    assert_eq!(report["blobs_deleted"], 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_user_closes_a_running_registry_and_admin_gc_still_works() {
    use std::io::Write;
    let work = TempDir::new().unwrap();
    let data = work.path().join("data");
    let core = CoreProcess::start_on(TempDir::new().unwrap(), &data).await;
    let client = http_client();
    assert_eq!(
        client.get(core.url("/v2/")).send().await.unwrap().status(),
        200
    );
    assert!(
        core.log().contains("NO USERS"),
        "the open registry says so: {}",
        core.log()
    );

    let create = |password: &str| {
        let mut child = Command::new(AERUGO)
            .args([
                "admin",
                "create-user",
                "root",
                "--admin",
                "--password-stdin",
                "--data-dir",
            ])
            .arg(&data)
            .env("AERUGO__SERVER__LOG_LEVEL", "warn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    let short = create("short");
    assert!(!short.status.success(), "a too-short password is refused");
    let created = create("root-password-1");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let again = create("root-password-1");
    assert!(!again.status.success(), "the name is taken");

    // The running server sees the first user within its one-second recheck.
    let mut closed = false;
    for _ in 0..40 {
        if client.get(core.url("/v2/")).send().await.unwrap().status() == 401 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "the registry stayed open after its first user");
    let signed_in = client
        .get(core.url("/v2/"))
        .basic_auth("root", Some("root-password-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);

    // Admin endpoints: refused without credentials, open to the local admin command.
    let anonymous_gc = client
        .post(core.url("/api/v1/admin/gc"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous_gc.status(), 401);
    let gc = Command::new(AERUGO)
        .args(["admin", "gc", "--grace-period", "3600", "--data-dir"])
        .arg(&data)
        .env("AERUGO__SERVER__LOG_LEVEL", "warn")
        .output()
        .unwrap();
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_signing_key_keeps_issued_tokens_valid() {
    let work = TempDir::new().unwrap();
    let data = work.path().join("data");
    let env = [
        ("AERUGO__AUTH__BOOTSTRAP_ADMIN", "root".to_owned()),
        (
            "AERUGO__AUTH__BOOTSTRAP_ADMIN_PASSWORD",
            "root-password-1".to_owned(),
        ),
        ("AERUGO__AUTH__KEY_RELOAD_SECONDS", "1".to_owned()),
    ];
    let core = CoreProcess::start_with_env(TempDir::new().unwrap(), &data, &env).await;
    let client = http_client();
    let token = || async {
        let body: serde_json::Value = client
            .get(core.url("/auth/token?service=aerugo"))
            .basic_auth("root", Some("root-password-1"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["token"].as_str().unwrap().to_owned()
    };
    let kid = |token: &str| {
        use base64::Engine;
        let header = token.split('.').next().unwrap();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&header).unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let before = token().await;
    let rotated = Command::new(AERUGO)
        .args(["admin", "rotate-signing-key", "--data-dir"])
        .arg(&data)
        .env("AERUGO__SERVER__LOG_LEVEL", "warn")
        .output()
        .unwrap();
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let new_kid = String::from_utf8_lossy(&rotated.stdout)
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    assert_ne!(new_kid, kid(&before));
    // The server follows within its reload interval and signs with the new key.
    let mut after = token().await;
    for _ in 0..30 {
        if kid(&after) == new_kid {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = token().await;
    }
    assert_eq!(
        kid(&after),
        new_kid,
        "the server still signs with the old key"
    );
    // Both tokens work; the JWK set lists both keys.
    for token in [&before, &after] {
        let status = client
            .get(core.url("/v2/"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    let jwks: serde_json::Value = client
        .get(core.url("/auth/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_gc_collects_unreferenced_blobs_while_serving() {
    let server = super::support::TestServer::start_with(|config| {
        config.gc.interval_seconds = 1;
        config.gc.grace_period_seconds = 0;
    })
    .await;
    let client = http_client();
    let blob = Bytes::from_static(b"collected by the periodic task");
    let digest = sha256(&blob);
    let url = server.url(&format!("/v2/gc/periodic/blobs/uploads/?digest={digest}"));
    assert_eq!(
        client.post(url).body(blob).send().await.unwrap().status(),
        201
    );
    let head = server.url(&format!("/v2/gc/periodic/blobs/{digest}"));
    for _ in 0..100 {
        if client.head(&head).send().await.unwrap().status() == 404 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the periodic garbage collection never removed the unreferenced blob");
}

fn seed(data: &std::path::Path) -> std::process::Output {
    Command::new(AERUGO)
        .args([
            "admin",
            "seed",
            "--blobs",
            "40",
            "--repositories",
            "4",
            "--tags",
            "150",
        ])
        .args(["--referrers", "12", "--concurrency", "8", "--data-dir"])
        .arg(data)
        .env("AERUGO__SERVER__LOG_LEVEL", "warn")
        .output()
        .unwrap()
}

/// The seeding tool of the scale benchmarks (src/seed.rs): its layout, as the API shows it,
/// the same after a second run, and refused while a server holds the data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_seed_fills_a_registry_clients_can_read() {
    let work = TempDir::new().unwrap();
    let data = work.path().join("data");
    for _ in 0..2 {
        let seeded = seed(&data);
        assert!(
            seeded.status.success(),
            "{}",
            String::from_utf8_lossy(&seeded.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&seeded.stdout).unwrap();
        assert_eq!(
            (&report["blobs"], &report["tags"], &report["referrers"]),
            (&40.into(), &150.into(), &12.into()),
            "{report}"
        );
    }

    let core = CoreProcess::start_on(TempDir::new().unwrap(), &data).await;
    let refused = seed(&data);
    assert!(!refused.status.success(), "seeding beside a running server");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("stop it first"));

    let client = http_client();
    let json = |path: String| {
        let request = client
            .get(core.url(&path))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json");
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "GET {path}");
            let digest = response.headers().get("docker-content-digest").cloned();
            (response.json::<serde_json::Value>().await.unwrap(), digest)
        }
    };
    let (catalog, _) = json("/v2/_catalog?n=100".into()).await;
    let expected = [
        "seed/r0000000",
        "seed/r0000001",
        "seed/r0000002",
        "seed/r0000003",
        "seed/tags",
    ];
    assert_eq!(catalog["repositories"], serde_json::json!(expected));
    let (tags, _) = json("/v2/seed/tags/tags/list?n=1000".into()).await;
    let tags = tags["tags"].as_array().unwrap();
    assert_eq!(tags.len(), 150);
    assert_eq!(
        (&tags[0], &tags[149]),
        (&"t0000000".into(), &"t0000149".into())
    );

    let (latest, _) = json("/v2/seed/r0000003/manifests/latest".into()).await;
    let layer = sha256(b"aerugo seed blob 3\n");
    assert_eq!(latest["layers"][0]["digest"], layer.to_string());
    for blob in [layer, sha256(b"aerugo seed blob 39\n")] {
        let head = client
            .head(core.url(&format!("/v2/seed/r0000003/blobs/{blob}")))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200, "HEAD {blob}");
    }
    let (_, subject) = json("/v2/seed/tags/manifests/t0000000".into()).await;
    let subject = subject.unwrap();
    let (referrers, _) = json(format!(
        "/v2/seed/tags/referrers/{}",
        subject.to_str().unwrap()
    ))
    .await;
    assert_eq!(referrers["manifests"].as_array().unwrap().len(), 12);
}
