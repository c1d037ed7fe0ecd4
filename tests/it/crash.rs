//! Crash safety: the real `aerugo` binary is killed with SIGKILL in the middle of a push,
//! restarted on the same data directory, and must show either the whole blob or nothing —
//! never a partial one — and accept a fresh push of the same blob.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tempfile::TempDir;

use super::support::image::{ByteGen, Fill, fresh_seed, sha256, sha256_file};
use super::support::process::{CoreProcess, http_client as http};

const CHUNK: usize = 4 << 20;
const REPO: &str = "crash/test";

/// Every file in a `blobs` directory anywhere under `data_dir` (the fs store's root is
/// configurable: `DIR/blobs/…` or `DIR/storage/blobs/…`) whose path names this digest's hex.
/// Upload sessions (`uploads/<id>/…`) are not blobs and are not listed.
fn blob_files(data_dir: &Path, hex: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, in_blobs: bool, hex: &str, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                let in_blobs = in_blobs || entry.file_name() == "blobs";
                walk(&path, in_blobs, hex, out);
            } else if in_blobs && path.to_string_lossy().contains(hex) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(data_dir, false, hex, &mut out);
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

async fn start_upload(server: &CoreProcess, client: &reqwest::Client) -> String {
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
    server: &CoreProcess,
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

async fn head_blob_status(server: &CoreProcess, client: &reqwest::Client, digest: &str) -> u16 {
    client
        .head(server.url(&format!("/v2/{REPO}/blobs/{digest}")))
        .send()
        .await
        .expect("HEAD blob")
        .status()
        .as_u16()
}

/// `GET` the blob and check it is exactly `data`.
async fn assert_blob_served(
    server: &CoreProcess,
    client: &reqwest::Client,
    digest: &str,
    data: &[u8],
) {
    let resp = client
        .get(server.url(&format!("/v2/{REPO}/blobs/{digest}")))
        .send()
        .await
        .expect("GET blob");
    assert_eq!(resp.status().as_u16(), 200, "GET blob {digest}");
    let body = resp.bytes().await.expect("blob body");
    assert_eq!(body.len(), data.len(), "blob length");
    assert_eq!(sha256(&body), digest, "blob content");
}

/// A monolithic push (`POST ?digest=` with the whole body) must succeed with 201.
async fn monolithic_push(
    server: &CoreProcess,
    client: &reqwest::Client,
    digest: &str,
    data: &Bytes,
) {
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

/// Every file that names `digest` in a blobs/ directory holds exactly its bytes.
fn assert_blob_files_whole(data_dir: &Path, digest: &str, size: usize) -> Vec<PathBuf> {
    let files = blob_files(data_dir, hex_of(digest));
    for f in &files {
        let (d, len) = sha256_file(f).unwrap();
        assert_eq!(len, size as u64, "{} is a partial blob", f.display());
        assert_eq!(
            d,
            digest,
            "{} holds other bytes than its digest",
            f.display()
        );
    }
    files
}

/// After a restart the blob is either absent from the repository (404) or whole (200 and the
/// right bytes). Either way, every file in the blob store that names it holds exactly its bytes:
/// a kill between the store's commit (rename) and the metadata link may leave a whole blob that
/// no repository links yet (garbage collection's business), never a partial one. Returns
/// whether the repository serves it.
async fn assert_whole_or_nothing(
    server: &CoreProcess,
    client: &reqwest::Client,
    data_dir: &Path,
    digest: &str,
    data: &[u8],
) -> bool {
    let status = head_blob_status(server, client, digest).await;
    assert_blob_files_whole(data_dir, digest, data.len());
    match status {
        404 => false,
        200 => {
            assert_blob_served(server, client, digest, data).await;
            true
        }
        other => panic!("HEAD blob after restart: unexpected status {other}"),
    }
}

fn generated(size: usize) -> (Bytes, String) {
    let data = Bytes::from(ByteGen::new(Fill::Seeded(fresh_seed()), size as u64).collect_vec());
    let digest = sha256(&data);
    (data, digest)
}

/// SIGKILL while a PATCH body is still streaming in, after several chunks were accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_chunked_upload_leaves_no_partial_blob() {
    let data_dir = TempDir::new().unwrap();
    let client = http();
    let (data, digest) = generated(10 * CHUNK);

    let mut server = CoreProcess::start_on(TempDir::new().unwrap(), data_dir.path()).await;
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

    let server = CoreProcess::start_on(TempDir::new().unwrap(), data_dir.path()).await;
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
        "files in blobs/ name the partial blob: {files:?}"
    );

    // A fresh push of the same blob works and serves identical bytes.
    monolithic_push(&server, &client, &digest, &data).await;
    assert_eq!(head_blob_status(&server, &client, &digest).await, 200);
    assert_blob_served(&server, &client, &digest, &data).await;
    assert_whole_or_nothing(&server, &client, data_dir.path(), &digest, &data).await;
    // The committed blob is a file whose path names its digest (blobs/sha256/ab/abcd…): the
    // "no file names the partial blob" check above looked in the right place.
    assert!(
        !blob_files(data_dir.path(), hex_of(&digest)).is_empty(),
        "no file in a blobs/ directory under {} names the committed blob {digest}",
        data_dir.path().display()
    );
}

/// Uploads `data` in 4 MiB chunks except the last one; returns the Location for the final PUT.
async fn upload_all_but_last_chunk(
    server: &CoreProcess,
    client: &reqwest::Client,
    data: &Bytes,
) -> String {
    let mut location = start_upload(server, client).await;
    let chunks = data.len().div_ceil(CHUNK);
    for i in 0..chunks - 1 {
        location = patch_chunk(server, client, &location, data, i * CHUNK, CHUNK).await;
    }
    location
}

/// The final `PUT ?digest=` carrying the last chunk, as a spawned request.
fn spawn_final_put(
    client: &reqwest::Client,
    location: &str,
    data: &Bytes,
    digest: &str,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let chunks = data.len().div_ceil(CHUNK);
    let start = (chunks - 1) * CHUNK;
    let last = data.slice(start..);
    tokio::spawn(
        client
            .put(with_query(location, "digest", digest))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{}-{}", start, data.len() - 1))
            .header("Content-Length", last.len().to_string())
            .body(last)
            .send(),
    )
}

/// SIGKILL right after the final `PUT ?digest=` (carrying the last chunk) was sent, at moments
/// spread over the time such a PUT takes (measured first): the blob is then either whole or
/// absent; when the PUT was answered 201 before the kill, it must be whole. A fresh push then
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_final_put_leaves_whole_blob_or_nothing() {
    let data_dir = TempDir::new().unwrap();
    let client = http();
    let size = 6 * CHUNK;

    // Calibration: how long does the final PUT take when nothing interrupts it?
    let mut server = CoreProcess::start_on(TempDir::new().unwrap(), data_dir.path()).await;
    let (data, digest) = generated(size);
    let location = upload_all_but_last_chunk(&server, &client, &data).await;
    let started = Instant::now();
    let resp = spawn_final_put(&client, &location, &data, &digest)
        .await
        .unwrap()
        .expect("final PUT");
    let put_time = started.elapsed();
    assert_eq!(resp.status().as_u16(), 201, "final PUT: {resp:?}");
    assert_blob_served(&server, &client, &digest, &data).await;

    // Kill at 0, 1/8, …, 8/8 of that time, and a little after.
    let mut delays: Vec<Duration> = (0..=8).map(|k| put_time * k / 8).collect();
    delays.push(put_time * 3 / 2);
    let mut outcomes = Vec::new();
    for delay in delays {
        let (data, digest) = generated(size);
        let location = upload_all_but_last_chunk(&server, &client, &data).await;
        let put = spawn_final_put(&client, &location, &data, &digest);
        tokio::time::sleep(delay).await;
        server.kill9();
        let acknowledged = match tokio::time::timeout(Duration::from_secs(30), put).await {
            Ok(Ok(Ok(resp))) => resp.status().as_u16() == 201,
            Ok(_) => false,
            Err(_) => panic!("the interrupted PUT did not end"),
        };
        drop(server);

        server = CoreProcess::start_on(TempDir::new().unwrap(), data_dir.path()).await;
        let present =
            assert_whole_or_nothing(&server, &client, data_dir.path(), &digest, &data).await;
        if acknowledged {
            assert!(
                present,
                "PUT answered 201 before the kill (after {delay:?}) but the blob is gone"
            );
        }
        let orphan_file = !present && !blob_files(data_dir.path(), hex_of(&digest)).is_empty();
        outcomes.push((delay, acknowledged, present, orphan_file));
        if !present {
            monolithic_push(&server, &client, &digest, &data).await;
        }
        assert_blob_served(&server, &client, &digest, &data).await;
    }
    // Not an assertion (timing decides): which moments the kills hit.
    eprintln!(
        "final PUT takes {put_time:?}; (kill after, PUT acknowledged, served after restart, \
         unlinked whole file left in the store): {outcomes:?}"
    );
}

/// The upload id of a `Location` (`…/blobs/uploads/<id>`, possibly with a query).
fn upload_id(location: &str) -> &str {
    let path = location.split('?').next().unwrap_or(location);
    path.rsplit('/').next().unwrap_or(path)
}

fn upload_dir(data_dir: &Path, location: &str) -> PathBuf {
    data_dir.join("storage/uploads").join(upload_id(location))
}

async fn status_of(request: reqwest::RequestBuilder) -> (u16, String) {
    let resp = request.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

async fn put_digest(client: &reqwest::Client, location: &str, digest: &str) -> (u16, String) {
    status_of(
        client
            .put(with_query(location, "digest", digest))
            .header("Content-Length", "0"),
    )
    .await
}

/// An upload whose bytes are gone (here removed while the server was down; in the field, a
/// kill -9 in the milliseconds after the final `PUT`) is ended at start-up: `GET` says
/// `404`, and `PUT`/`PATCH` answer `404 BLOB_UPLOAD_UNKNOWN` instead of `500` forever.
#[tokio::test]
async fn a_session_whose_bytes_are_gone_is_unknown_after_restart() {
    let data_dir = TempDir::new().unwrap();
    let client = http();
    let (data, digest) = generated(4096);
    let mut server = CoreProcess::start_on(TempDir::new().unwrap(), data_dir.path()).await;
    let location = start_upload(&server, &client).await;
    let location = patch_chunk(&server, &client, &location, &data, 0, data.len()).await;
    server.kill9();
    std::fs::remove_dir_all(upload_dir(data_dir.path(), &location)).expect("removing the bytes");

    let server = CoreProcess::start_on(TempDir::new().unwrap(), data_dir.path()).await;
    let location = server.url(&format!(
        "/v2/{REPO}/blobs/uploads/{}",
        upload_id(&location)
    ));
    let (status, _) = status_of(client.get(&location)).await;
    assert_eq!(
        status,
        404,
        "GET of a reconciled session; log:\n{}",
        server.log()
    );
    let (status, body) = put_digest(&client, &location, &digest).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("BLOB_UPLOAD_UNKNOWN"), "{body}");
    assert_eq!(head_blob_status(&server, &client, &digest).await, 404);
    // The client starts over and succeeds.
    monolithic_push(&server, &client, &digest, &data).await;
}

/// Bytes that vanish while the server runs: the first request that needs them ends the
/// session (`404`), and so does every later one.
#[tokio::test]
async fn a_session_losing_its_bytes_while_running_is_unknown() {
    let data_dir = TempDir::new().unwrap();
    let client = http();
    let (data, digest) = generated(8192);
    let server = CoreProcess::start_on(TempDir::new().unwrap(), data_dir.path()).await;
    let location = start_upload(&server, &client).await;
    let location = patch_chunk(&server, &client, &location, &data, 0, 4096).await;
    std::fs::remove_dir_all(upload_dir(data_dir.path(), &location)).expect("removing the bytes");
    let (status, body) = status_of(
        client
            .patch(&location)
            .header("Content-Range", "4096-8191")
            .body(data.slice(4096..)),
    )
    .await;
    assert_eq!(
        (status, body.contains("BLOB_UPLOAD_UNKNOWN")),
        (404, true),
        "{body}"
    );
    let (status, _) = put_digest(&client, &location, &digest).await;
    assert_eq!(status, 404);
    assert_eq!(status_of(client.get(&location)).await.0, 404);
}

/// A `PUT` that published the blob and died before closing the session (simulated by doing
/// the store's rename by hand while the server is down): the retried `PUT` completes it, but
/// only for the digest the session's own bytes hash to.
#[tokio::test]
async fn a_retried_put_completes_an_upload_published_before_a_crash() {
    let data_dir = TempDir::new().unwrap();
    let client = http();
    let (data, digest) = generated(4096);
    let (other, other_digest) = generated(4096);
    let mut server = CoreProcess::start_on(TempDir::new().unwrap(), data_dir.path()).await;
    // Someone else's blob, in another repository.
    let resp = client
        .post(server.url(&format!(
            "/v2/elsewhere/blobs/uploads/?digest={other_digest}"
        )))
        .body(other.clone())
        .send()
        .await
        .expect("push elsewhere");
    assert_eq!(resp.status().as_u16(), 201);
    let location = start_upload(&server, &client).await;
    let location = patch_chunk(&server, &client, &location, &data, 0, data.len()).await;
    let lost = start_upload(&server, &client).await;
    let lost = patch_chunk(&server, &client, &lost, &data, 0, 100).await;
    server.kill9();
    let hex = hex_of(&digest);
    let published = data_dir.path().join("storage/blobs/sha256").join(&hex[..2]);
    std::fs::create_dir_all(&published).unwrap();
    std::fs::rename(
        upload_dir(data_dir.path(), &location).join("data"),
        published.join(hex),
    )
    .expect("publishing by hand");
    std::fs::remove_dir_all(upload_dir(data_dir.path(), &location)).unwrap();
    std::fs::remove_dir_all(upload_dir(data_dir.path(), &lost)).unwrap();

    let server = CoreProcess::start_on(TempDir::new().unwrap(), data_dir.path()).await;
    let rebase = |l: &str| server.url(&format!("/v2/{REPO}/blobs/uploads/{}", upload_id(l)));
    let (location, lost) = (rebase(&location), rebase(&lost));
    // Claiming a stored blob the session never received links nothing.
    let (status, _) = put_digest(&client, &lost, &other_digest).await;
    assert_eq!(status, 404);
    assert_eq!(head_blob_status(&server, &client, &other_digest).await, 404);
    // The session published before the crash is still resumable, and its retry completes.
    assert_eq!(status_of(client.get(&location)).await.0, 204);
    let (status, body) = put_digest(&client, &location, &digest).await;
    assert_eq!(status, 201, "{body}; log:\n{}", server.log());
    assert_blob_served(&server, &client, &digest, &data).await;
    assert_eq!(
        status_of(client.get(&location)).await.0,
        404,
        "the session is closed"
    );
}
