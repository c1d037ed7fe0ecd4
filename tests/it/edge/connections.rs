//! Connection timeouts and caps on the edge's listeners: an idle socket, a header sent a byte at
//! a time and an idle keep-alive connection are closed after their (here 1 s) timeouts, and
//! connections over the caps are refused while admitted ones keep working; the open-file
//! limit is raised at start-up.
//!
//! Each wait is bounded generously (10 s for a 1 s timeout): these check that the edge closes
//! the connection, not how fast.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{MANIFEST_ACCEPT, edge_on_fault_upstream_with, eventually};
use crate::support::edge::{Closed, read_response, read_to_close};
use crate::support::fault_upstream::Fault;
use crate::support::image::TestImage;
use crate::support::process::assert_raises_open_file_limit;
use aerugo::config::EdgeConfig;

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: edge\r\n\r\n";

fn quick_timeouts(edge: &mut EdgeConfig) {
    edge.header_read_timeout_seconds = 1;
    edge.keepalive_idle_timeout_seconds = 1;
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connecting")
}

/// A connection from `source` (any 127.0.0.0/8 address is this host) to `addr`.
pub(super) async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("source address"))
        .expect("binding the source address");
    socket.connect(addr).await.expect("connecting")
}

/// Whether `/healthz` on `stream` is answered (the connection stays open).
async fn answered(stream: &mut TcpStream) -> Result<(), String> {
    stream
        .write_all(HEALTHZ)
        .await
        .map_err(|e| format!("writing: {e}"))?;
    let response = read_response(stream).await?;
    if (response.status, &response.body[..]) == (200, &b"ok"[..]) {
        Ok(())
    } else {
        Err(format!("{response:?}"))
    }
}

async fn healthz(stream: &mut TcpStream) {
    answered(stream).await.expect("/healthz answered");
}

/// Whether the edge closes `stream` without answering (a request written first is ignored).
async fn refused(mut stream: TcpStream) -> bool {
    let _ = stream.write_all(HEALTHZ).await;
    let (received, closed) = read_to_close(&mut stream).await;
    received.is_empty() && closed != Closed::StillOpen
}

/// A connection from each of `sources`, each answered once, or `None` when one is refused.
async fn admitted(sources: &[&str], addr: SocketAddr) -> Option<Vec<TcpStream>> {
    let mut open = Vec::new();
    for source in sources {
        let mut stream = connect_from(source, addr).await;
        answered(&mut stream).await.ok()?;
        open.push(stream);
    }
    Some(open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let (_origin, edge) = edge_on_fault_upstream_with(|_| {}, quick_timeouts).await;
    let mut stream = connect(edge.addr).await;
    let (received, closed) = read_to_close(&mut stream).await;
    assert_ne!(
        closed,
        Closed::StillOpen,
        "an idle connection is still open"
    );
    assert!(received.is_empty(), "{received:?}");
}

/// A header trickled a byte every 200 ms (each read well within any per-read timeout) is cut
/// off once the whole header took longer than the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_sent_a_byte_at_a_time_is_cut_off_at_the_header_timeout() {
    let (_origin, edge) = edge_on_fault_upstream_with(|_| {}, quick_timeouts).await;
    let stream = connect(edge.addr).await;
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: edge\r\nx-slow: ")
        .await
        .expect("the start of the header");
    let trickle = async {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if write.write_all(b"a").await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    };
    let mut received = Vec::new();
    let ended = async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1024];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            () = trickle => {},
            () = ended => {},
        }
    })
    .await;
    assert!(closed.is_ok(), "a header trickling for 10 s is still read");
    assert!(
        received.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
}

/// The header deadline ends with the header: an answer that takes longer (a slow upstream) is
/// not cut off, first on a connection or later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_slower_than_the_header_timeout_is_not_cut_off() {
    let (origin, edge) = edge_on_fault_upstream_with(|_| {}, quick_timeouts).await;
    let image = TestImage::with_layers("slow answers", &[1000]);
    origin.put_image("team/app", "1.0", &image);
    origin.set_fault(Fault::Delay(Duration::from_millis(2500)));
    let mut stream = connect(edge.addr).await;
    for path in [
        "/v2/team/app/manifests/1.0".to_owned(),
        format!("/v2/team/app/blobs/{}", image.layer_digest(0)),
    ] {
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: edge\r\naccept: {MANIFEST_ACCEPT}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("request");
        let response = read_response(&mut stream)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(response.status, 200, "GET {path}: {response:?}");
    }
}

/// Back-to-back requests share the connection; once it idles it is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keepalive_connection_is_closed_after_the_idle_timeout() {
    let (_origin, edge) = edge_on_fault_upstream_with(
        |_| {},
        |e| {
            e.header_read_timeout_seconds = 30;
            e.keepalive_idle_timeout_seconds = 1;
        },
    )
    .await;
    let mut stream = connect(edge.addr).await;
    healthz(&mut stream).await;
    healthz(&mut stream).await;
    let (received, closed) = read_to_close(&mut stream).await;
    assert_ne!(
        closed,
        Closed::StillOpen,
        "an idle keep-alive connection is still open"
    );
    assert!(received.is_empty(), "{received:?}");
}

/// The test's clients are 127.0.0.2 and up: the harness's own HTTP client (127.0.0.1) may
/// still hold a connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_client_cap_are_refused_while_admitted_ones_work() {
    let (_origin, edge) =
        edge_on_fault_upstream_with(|_| {}, |e| e.max_connections_per_client = 2).await;
    let client = "127.0.0.2";
    let mut open = admitted(&[client, client], edge.addr)
        .await
        .expect("two connections admitted");
    assert!(
        refused(connect_from(client, edge.addr).await).await,
        "a third connection from the client is served"
    );
    for stream in &mut open {
        healthz(stream).await;
    }
    // Another client is not affected.
    healthz(&mut connect_from("127.0.0.3", edge.addr).await).await;
    let counted = edge
        .metric(
            "aerugo_connections_refused_total",
            &[("reason", "max_connections_per_client")],
        )
        .await;
    assert!(counted >= 1.0, "the refusal is counted: {counted}");

    // A closed connection frees its place.
    drop(open.pop());
    let readmitted = eventually(Duration::from_secs(10), || async {
        admitted(&[client], edge.addr).await.is_some()
    })
    .await;
    assert!(
        readmitted,
        "no connection admitted after one of two was closed"
    );
    healthz(&mut open[0]).await;
}

/// The harness's idle connection (if any) is closed after the 1 s keep-alive timeout, after
/// which the test's three clients fill the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_total_cap_are_refused_whichever_the_client() {
    let (_origin, edge) = edge_on_fault_upstream_with(
        |_| {},
        |e| {
            e.max_connections = 3;
            e.keepalive_idle_timeout_seconds = 1;
        },
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut open = loop {
        if let Some(streams) = admitted(&["127.0.0.2", "127.0.0.3", "127.0.0.4"], edge.addr).await {
            break streams;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "three clients never got a connection each"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        refused(connect_from("127.0.0.5", edge.addr).await).await,
        "a fourth connection is served"
    );
    for stream in &mut open {
        healthz(stream).await;
    }
}

#[tokio::test]
async fn the_edge_raises_its_open_file_limit_to_the_hard_limit() {
    let cache = tempfile::tempdir().expect("temp dir");
    let args = [
        "edge".into(),
        "--cache-dir".into(),
        cache.path().into(),
        "--upstream".into(),
        "http://127.0.0.1:9".into(),
    ];
    assert_raises_open_file_limit(&args, "/healthz").await;
}
