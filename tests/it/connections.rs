//! The core's connection handling, over raw TCP where reqwest would hide it: connections
//! that send nothing, half a head or nothing more are closed, slow transfers are not, the
//! connection caps close what is over them while the others keep working, and error answers
//! given before the body was read still reach a client that keeps writing, and the server
//! raises its open-file limit at start-up.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::distribution::{Api, RawResponse};
use super::support::image::{OCI_MANIFEST, bytes_for, sha256};
use super::support::process::assert_raises_open_file_limit;

/// How long a test waits for an answer (or a close) before calling the server stuck.
const PATIENCE: Duration = Duration::from_secs(30);

/// Writes `head` and then all of `body`, as a client that reads nothing before it has written
/// everything, and returns what the server answered. `Err` says where it went wrong.
async fn write_all_then_read(
    addr: SocketAddr,
    head: &str,
    body: &[u8],
) -> Result<RawResponse, String> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| format!("writing the head: {e}"))?;
    stream
        .write_all(body)
        .await
        .map_err(|e| format!("writing the body: {e}"))?;
    let mut received = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received))
        .await
        .map_err(|_| "no answer and no close".to_owned())?
        .map_err(|e| format!("reading the answer: {e}"))?;
    RawResponse::parse(&received).ok_or_else(|| "the server closed without an answer".into())
}

fn request_head(method_and_path: &str, host: &str, headers: &[(&str, String)]) -> String {
    let mut head = format!("{method_and_path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

const TRIES: usize = 5;

#[tokio::test]
async fn an_oversized_manifest_gets_its_413_even_while_the_client_keeps_writing() {
    let api = Api::start().await;
    let body = vec![b' '; 5 << 20];
    let head = request_head(
        "PUT /v2/conn/big/manifests/latest",
        &api.server.host(),
        &[
            ("Content-Type", OCI_MANIFEST.into()),
            ("Content-Length", body.len().to_string()),
        ],
    );
    for attempt in 1..=TRIES {
        let response = write_all_then_read(api.server.addr, &head, &body)
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
        response.expect_error(413, "MANIFEST_INVALID");
    }
}

#[tokio::test]
async fn an_out_of_order_chunk_gets_its_416_even_while_the_client_keeps_writing() {
    let api = Api::start().await;
    let location = api.start_upload("conn/chunks").await;
    let path = reqwest::Url::parse(&api.url(&location))
        .expect("a URL")
        .path()
        .to_owned();
    let body = vec![7u8; 8 << 20];
    let head = request_head(
        &format!("PATCH {path}"),
        &api.server.host(),
        &[
            ("Content-Type", "application/octet-stream".into()),
            ("Content-Length", body.len().to_string()),
            ("Content-Range", format!("100-{}", 100 + body.len() - 1)),
        ],
    );
    for attempt in 1..=TRIES {
        let response = write_all_then_read(api.server.addr, &head, &body)
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
        response.expect_error(416, "BLOB_UPLOAD_INVALID");
        assert_eq!(
            response.headers.get("range").map(|v| v.to_str().unwrap()),
            Some("0-0"),
            "the 416 tells the client where to resume"
        );
        // The body was refused unread, so the connection ends after this answer: it says so,
        // and a client pooling connections does not send its next request down it.
        assert_eq!(
            response
                .headers
                .get("connection")
                .map(|v| v.to_str().unwrap()),
            Some("close"),
            "a refused body closes the connection, and the answer says so"
        );
    }
}

/// A server whose connections time out after one second of waiting for a head or idling.
async fn impatient_server() -> Api {
    Api::start_with(|config| {
        config.server.header_read_timeout_seconds = 1;
        config.server.keepalive_idle_timeout_seconds = 1;
    })
    .await
}

/// Reads until the server closes the connection (or resets it); returns what came. Panics
/// when the connection is still open after [`PATIENCE`].
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    received
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let api = impatient_server().await;
    let mut stream = TcpStream::connect(api.server.addr).await.expect("connect");
    assert!(read_until_closed(&mut stream).await.is_empty());
}

#[tokio::test]
async fn a_half_sent_request_head_is_closed() {
    let api = impatient_server().await;
    let mut stream = TcpStream::connect(api.server.addr).await.expect("connect");
    let head = format!(
        "GET /v2/ HTTP/1.1\r\nHost: {}\r\nAccept: */",
        api.server.host()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let received = read_until_closed(&mut stream).await;
    assert!(
        !received.starts_with(b"HTTP/1.1 200"),
        "half a head was answered: {}",
        String::from_utf8_lossy(&received)
    );
}

/// Sends one request on a kept-alive connection and reads its answer (which must carry a
/// `Content-Length`): status and body. `None` when the server closed the connection instead.
async fn try_exchange(stream: &mut TcpStream, host: &str, path: &str) -> Option<(u16, Vec<u8>)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut received = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let response = RawResponse::parse(&received).expect("a response head");
            let length: usize = response.headers["content-length"]
                .to_str()
                .expect("text")
                .parse()
                .expect("a length");
            if received.len() >= end + 4 + length {
                return Some((
                    response.status,
                    received[end + 4..end + 4 + length].to_vec(),
                ));
            }
        }
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("an answer or a close in time")
            .ok()?;
        if n == 0 {
            return None;
        }
        received.extend_from_slice(&buf[..n]);
    }
}

async fn exchange(stream: &mut TcpStream, host: &str, path: &str) -> (u16, Vec<u8>) {
    try_exchange(stream, host, path)
        .await
        .expect("the server closed the connection instead of answering")
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let api = impatient_server().await;
    let mut stream = TcpStream::connect(api.server.addr).await.expect("connect");
    let host = api.server.host();
    assert_eq!(exchange(&mut stream, &host, "/v2/").await.0, 200);
    assert_eq!(exchange(&mut stream, &host, "/healthz").await.0, 200);
    assert!(read_until_closed(&mut stream).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_and_downloads_outlive_the_header_and_idle_timeouts() {
    let api = impatient_server().await;
    let blob = Bytes::from(bytes_for("slow", 32 << 20));
    let digest = sha256(&blob);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let upload = tokio::spawn(
        api.post(&format!("/v2/conn/slow/blobs/uploads/?digest={digest}"))
            .header("content-length", blob.len().to_string())
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    let pieces = 4;
    let piece = blob.len() / pieces;
    for i in 0..pieces {
        tokio::time::sleep(Duration::from_millis(700)).await;
        tx.send(Ok(blob.slice(i * piece..(i + 1) * piece)))
            .await
            .expect("upload running");
    }
    drop(tx);
    let response = upload.await.unwrap().expect("the slow upload was cut");
    assert_eq!(response.status(), 201);

    // A download the client stops reading for longer than both timeouts.
    let mut response = api
        .send(api.get(&format!("/v2/conn/slow/blobs/{digest}")))
        .await;
    assert_eq!(response.status(), 200);
    let mut received = response
        .chunk()
        .await
        .expect("first chunk")
        .expect("data")
        .to_vec();
    tokio::time::sleep(Duration::from_secs(3)).await;
    while let Some(chunk) = response.chunk().await.expect("the slow download was cut") {
        received.extend_from_slice(&chunk);
    }
    assert!(received == blob, "the download is the blob");
}

#[tokio::test]
async fn a_request_body_that_stalls_fails_its_request() {
    let api = Api::start_with(|config| config.server.body_idle_timeout_seconds = 1).await;
    let location = api.start_upload("conn/stalled").await;
    let path = reqwest::Url::parse(&api.url(&location))
        .expect("a URL")
        .path()
        .to_owned();
    let head = request_head(
        &format!("PATCH {path}"),
        &api.server.host(),
        &[("Content-Length", "1000".into())],
    );
    let mut stream = TcpStream::connect(api.server.addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(&[1u8; 10]).await.expect("write");
    let received = read_until_closed(&mut stream).await;
    let response = RawResponse::parse(&received).expect("an answer");
    response.expect_error(400, "BLOB_UPLOAD_INVALID");
    assert_eq!(
        response.headers.get("range").map(|v| v.to_str().unwrap()),
        Some("0-0"),
        "the stalled chunk was not taken"
    );
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served_too() {
    let api = Api::start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = h2.get(api.url("/v2/")).send().await.expect("GET over h2c");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
}

/// A connection from `source` (any 127.0.0.0/8 address is this host's) to the server.
async fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("address"))
        .expect("bind a loopback source");
    socket.connect(server).await.expect("connect")
}

/// Whether the server closes a new connection from `source` without answering on it.
async fn is_refused(source: &str, addr: SocketAddr, host: &str) -> bool {
    let mut stream = connect_from(source, addr).await;
    try_exchange(&mut stream, host, "/v2/").await.is_none()
}

/// A connection from `source` that the server serves, once it has a place for it (a closed
/// connection's place is freed when the server notices the close).
async fn served_connection(source: &str, addr: SocketAddr, host: &str) -> TcpStream {
    for _ in 0..100 {
        let mut stream = connect_from(source, addr).await;
        if let Some((status, _)) = try_exchange(&mut stream, host, "/v2/").await {
            assert_eq!(status, 200);
            return stream;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no place for a connection from {source} was ever freed");
}

/// The value of `aerugo_connections_refused_total{reason="…"}` in a `/metrics` text.
fn refused(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("aerugo_connections_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |value| value.parse().expect("a count"))
}

#[tokio::test]
async fn connections_over_the_caps_are_closed_while_the_others_keep_working() {
    let api = Api::start_with(|config| {
        config.server.max_connections = 3;
        config.server.max_connections_per_client = 2;
        // Loopback peers are trusted proxies by default, which no per-client cap holds.
        config.server.trusted_proxies = Vec::new();
    })
    .await;
    let (addr, host) = (api.server.addr, api.server.host());
    let mut a1 = served_connection("127.0.0.2", addr, &host).await;
    let mut a2 = served_connection("127.0.0.2", addr, &host).await;
    assert!(
        is_refused("127.0.0.2", addr, &host).await,
        "a third connection from one client"
    );
    // The start-up check's connection may still hold a place for a moment.
    let mut b1 = served_connection("127.0.0.3", addr, &host).await;
    assert!(
        is_refused("127.0.0.3", addr, &host).await,
        "a fourth connection in all"
    );
    // The connections already open keep working.
    for stream in [&mut a1, &mut a2, &mut b1] {
        assert_eq!(exchange(stream, &host, "/v2/").await.0, 200);
    }
    let (_, metrics) = exchange(&mut a1, &host, "/metrics").await;
    let metrics = String::from_utf8(metrics).expect("text");
    assert_eq!(
        refused(&metrics, "max_connections_per_client"),
        1,
        "{metrics}"
    );
    assert!(refused(&metrics, "max_connections") >= 1, "{metrics}");
    // A closed connection frees its place.
    drop(a2);
    served_connection("127.0.0.3", addr, &host).await;
}

#[tokio::test]
async fn the_server_raises_its_open_file_limit_to_the_hard_limit() {
    let data = tempfile::tempdir().expect("temp dir");
    let args = ["serve".into(), "--data-dir".into(), data.path().into()];
    assert_raises_open_file_limit(&args, "/v2/").await;
}
