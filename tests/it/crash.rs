//! Crash safety: the real `aerugo` binary is killed with SIGKILL in the middle of a push,
//! restarted on the same data directory, and must show either the whole blob or nothing —
//! never a partial one — and accept a fresh push of the same blob.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tempfile::TempDir;

use super::support::oci_layout::{self, ByteGen, Fill};

const CHUNK: usize = 4 << 20;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const REPO: &str = "crash/test";

/// One run of `aerugo serve` on a loopback port; killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    /// Starts the binary on a free port over `data_dir` and waits until `GET /v2/` answers 200.
    async fn start(data_dir: &Path, log_dir: &Path, run: usize) -> Server {
        let port = free_port();
        let log = log_dir.join(format!("aerugo-{run}.log"));
        let log_file = File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_aerugo"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("spawning the aerugo binary");
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let client = http();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "aerugo exited during start-up ({status}):\n{}",
                    self.log_text()
                );
            }
            if let Ok(resp) = client.get(self.url("/v2/")).send().await
                && resp.status().as_u16() == 200
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "aerugo did not answer GET /v2/ within {READY_TIMEOUT:?}:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Resolves a `Location` header (a path, or an absolute URL) against this server.
    fn location(&self, resp: &reqwest::Response) -> String {
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no Location header: {resp:?}"));
        if loc.starts_with("http://") || loc.starts_with("https://") {
            loc.to_owned()
        } else {
            self.url(loc)
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9` and reap.
    fn kill9(&mut self) {
        // std's Child::kill sends SIGKILL on Unix.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("reqwest client")
}

/// Every file under `data_dir/blobs` whose path names this digest's hex.
fn blob_files(data_dir: &Path, hex: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, hex: &str, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                walk(&path, hex, out);
            } else if path.to_string_lossy().contains(hex) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&data_dir.join("blobs"), hex, &mut out);
    out
}

/// Appends `key=value` to a URL that may already have a query (a digest needs no escaping).
fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

fn hex_of(digest: &str) -> &str {
    digest.split_once(':').map_or(digest, |(_, h)| h)
}

async fn start_upload(server: &Server, client: &reqwest::Client) -> String {
    let resp = client
        .post(server.url(&format!("/v2/{REPO}/blobs/uploads/")))
        .header("Content-Length", "0")
        .send()
        .await
        .expect("POST upload");
    assert_eq!(resp.status().as_u16(), 202, "POST upload: {resp:?}");
    server.location(&resp)
}

/// Sends `data[start..start+len]` as one chunk; returns the next Location.
async fn patch_chunk(
    server: &Server,
    client: &reqwest::Client,
    location: &str,
    data: &Bytes,
    start: usize,
    len: usize,
) -> String {
    let resp = client
        .patch(location)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("{}-{}", start, start + len - 1))
        .header("Content-Length", len.to_string())
        .body(data.slice(start..start + len))
        .send()
        .await
        .expect("PATCH chunk");
    assert_eq!(
        resp.status().as_u16(),
        202,
        "PATCH {start}-{}: {resp:?}",
        start + len - 1
    );
    server.location(&resp)
}

async fn head_blob_status(server: &Server, client: &reqwest::Client, digest: &str) -> u16 {
    client
        .head(server.url(&format!("/v2/{REPO}/blobs/{digest}")))
        .send()
        .await
        .expect("HEAD blob")
        .status()
        .as_u16()
}

/// `GET` the blob and check it is exactly `data`.
async fn assert_blob_served(server: &Server, client: &reqwest::Client, digest: &str, data: &[u8]) {
    let resp = client
        .get(server.url(&format!("/v2/{REPO}/blobs/{digest}")))
        .send()
        .await
        .expect("GET blob");
    assert_eq!(resp.status().as_u16(), 200, "GET blob {digest}");
    let body = resp.bytes().await.expect("blob body");
    assert_eq!(body.len(), data.len(), "blob length");
    assert_eq!(oci_layout::sha256_digest(&body), digest, "blob content");
}

/// A monolithic push (`POST ?digest=` with the whole body) must succeed with 201.
async fn monolithic_push(server: &Server, client: &reqwest::Client, digest: &str, data: &Bytes) {
    let resp = client
        .post(server.url(&format!("/v2/{REPO}/blobs/uploads/?digest={digest}")))
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", data.len().to_string())
        .body(data.clone())
        .send()
        .await
        .expect("monolithic POST");
    assert_eq!(resp.status().as_u16(), 201, "monolithic push: {resp:?}");
    assert_eq!(
        resp.headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok()),
        Some(digest)
    );
}

/// After a restart the blob is either absent (404, no file) or whole (200, right bytes, and
/// every file that names it holds exactly its bytes). Returns whether it is present.
async fn assert_whole_or_nothing(
    server: &Server,
    client: &reqwest::Client,
    data_dir: &Path,
    digest: &str,
    data: &[u8],
) -> bool {
    let status = head_blob_status(server, client, digest).await;
    let files = blob_files(data_dir, hex_of(digest));
    match status {
        404 => {
            assert!(
                files.is_empty(),
                "blob {digest} is not served but files under blobs/ name it: {files:?}"
            );
            false
        }
        200 => {
            assert_blob_served(server, client, digest, data).await;
            for f in &files {
                let (d, size) = oci_layout::sha256_file(f).unwrap();
                assert_eq!(d, digest, "{} holds other bytes", f.display());
                assert_eq!(size, data.len() as u64, "{} is partial", f.display());
            }
            true
        }
        other => panic!("HEAD blob after restart: unexpected status {other}"),
    }
}

fn generated(size: usize) -> (Bytes, String) {
    let data = Bytes::from(ByteGen::new(Fill::Seeded(oci_layout::fresh_seed()), size as u64).collect_vec());
    let digest = oci_layout::sha256_digest(&data);
    (data, digest)
}

/// SIGKILL while a PATCH body is still streaming in, after several chunks were accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_chunked_upload_leaves_no_partial_blob() {
    let data_dir = TempDir::new().unwrap();
    let logs = TempDir::new().unwrap();
    let client = http();
    let (data, digest) = generated(10 * CHUNK);

    let mut server = Server::start(data_dir.path(), logs.path(), 1).await;
    let mut location = start_upload(&server, &client).await;
    let accepted_chunks = 3;
    for i in 0..accepted_chunks {
        location = patch_chunk(&server, &client, &location, &data, i * CHUNK, CHUNK).await;
    }

    // The next chunk arrives slowly: a quarter of it, then the server dies.
    let start = accepted_chunks * CHUNK;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body_stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let slow_patch = tokio::spawn(
        client
            .patch(&location)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{}-{}", start, start + CHUNK - 1))
            .header("Content-Length", CHUNK.to_string())
            .body(reqwest::Body::wrap_stream(body_stream))
            .send(),
    );
    let piece = 64 << 10;
    for off in (start..start + CHUNK / 4).step_by(piece) {
        if tx.send(Ok(data.slice(off..off + piece))).await.is_err() {
            break;
        }
    }
    // Let the server write what it got, then kill it mid-request.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill9();
    drop(tx);
    let outcome = tokio::time::timeout(Duration::from_secs(30), slow_patch)
        .await
        .expect("the interrupted PATCH did not end");
    if let Ok(Ok(resp)) = &outcome {
        // The server cannot have accepted a chunk it received only a quarter of.
        assert_ne!(resp.status().as_u16(), 202, "partial chunk accepted");
    }
    drop(server);

    let server = Server::start(data_dir.path(), logs.path(), 2).await;
    let resp = client.get(server.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "GET /v2/ after restart");
    assert_eq!(
        head_blob_status(&server, &client, &digest).await,
        404,
        "a partially uploaded blob is visible after the crash"
    );
    let files = blob_files(data_dir.path(), hex_of(&digest));
    assert!(
        files.is_empty(),
        "files under blobs/ name the partial blob: {files:?}"
    );

    // A fresh push of the same blob works and serves identical bytes.
    monolithic_push(&server, &client, &digest, &data).await;
    assert_eq!(head_blob_status(&server, &client, &digest).await, 200);
    assert_blob_served(&server, &client, &digest, &data).await;
    assert_whole_or_nothing(&server, &client, data_dir.path(), &digest, &data).await;
}

/// SIGKILL right after the final `PUT ?digest=` (carrying the last chunk) was sent, at several
/// moments: the blob is then either whole or absent; when the PUT was answered 201 before the
/// kill, it must be whole. A fresh push then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_final_put_leaves_whole_blob_or_nothing() {
    let data_dir = TempDir::new().unwrap();
    let logs = TempDir::new().unwrap();
    let client = http();
    let delays_ms = [0u64, 1, 3, 10, 30, 100, 500];
    let mut run = 0;
    let mut outcomes = Vec::new();
    for delay in delays_ms {
        run += 1;
        let (data, digest) = generated(6 * CHUNK);
        let mut server = Server::start(data_dir.path(), logs.path(), run).await;
        let mut location = start_upload(&server, &client).await;
        for i in 0..5 {
            location = patch_chunk(&server, &client, &location, &data, i * CHUNK, CHUNK).await;
        }
        let last = data.slice(5 * CHUNK..);
        let put = tokio::spawn(
            client
                .put(with_query(&location, "digest", &digest))
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", format!("{}-{}", 5 * CHUNK, 6 * CHUNK - 1))
                .header("Content-Length", last.len().to_string())
                .body(last)
                .send(),
        );
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill9();
        let acknowledged = match tokio::time::timeout(Duration::from_secs(30), put).await {
            Ok(Ok(Ok(resp))) => resp.status().as_u16() == 201,
            Ok(_) => false,
            Err(_) => panic!("the interrupted PUT did not end"),
        };
        drop(server);

        run += 1;
        let server = Server::start(data_dir.path(), logs.path(), run).await;
        let present =
            assert_whole_or_nothing(&server, &client, data_dir.path(), &digest, &data).await;
        if acknowledged {
            assert!(
                present,
                "PUT answered 201 before the kill (after {delay} ms) but the blob is gone"
            );
        }
        outcomes.push((delay, acknowledged, present));
        if !present {
            monolithic_push(&server, &client, &digest, &data).await;
        }
        assert_blob_served(&server, &client, &digest, &data).await;
    }
    // Not an assertion (timing decides): which moments the kills hit.
    eprintln!("(delay ms, PUT acknowledged, present after restart): {outcomes:?}");
}
