//! TLS termination with a generated certificate, over HTTP/1.1 and HTTP/2, and the connection
//! timeouts and caps on the TLS listener, which count a connection from before its handshake
//! until its socket is gone, whether the handshake stalls, fails or succeeds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aerugo::config::EdgeConfig;
use reqwest::{Certificate, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::connections::connect_from;
use super::{MANIFEST_ACCEPT, edge_on_fault_upstream_with, eventually, fetch};
use crate::distribution::header;
use crate::support::edge::{Closed, read_response, read_to_close};
use crate::support::fault_upstream::Fault;
use crate::support::image::TestImage;

/// The edge's gauge of the client connections it counts against the caps.
const CONNECTIONS_OPEN: &str = "aerugo_connections_open";

/// A self-signed certificate for `localhost` and `127.0.0.1`, written to files.
struct TestCertificate {
    pem: String,
    cert_path: PathBuf,
    key_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCertificate {
    fn generate() -> TestCertificate {
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("generating a certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let pem = certified.cert.pem();
        std::fs::write(&cert_path, &pem).expect("writing the certificate");
        std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("writing the key");
        TestCertificate {
            pem,
            cert_path,
            key_path,
            _dir: dir,
        }
    }

    /// Configures the edge's TLS listener with this certificate.
    fn install(&self, edge: &mut EdgeConfig) {
        edge.tls_cert_path = Some(self.cert_path.clone());
        edge.tls_key_path = Some(self.key_path.clone());
    }

    /// A client that trusts only this certificate.
    fn client(&self) -> reqwest::ClientBuilder {
        let root = Certificate::from_pem(self.pem.as_bytes()).expect("certificate");
        reqwest::Client::builder().tls_certs_only([root])
    }

    /// A client from `source` that trusts only this certificate and opens a connection for
    /// each request.
    fn client_from(&self, source: &str) -> reqwest::Client {
        self.client()
            .local_address(source.parse::<std::net::IpAddr>().expect("address"))
            .pool_max_idle_per_host(0)
            .build()
            .expect("client")
    }
}

/// Whether `GET url` is answered `200`.
async fn served(client: &reqwest::Client, url: &str) -> bool {
    client
        .get(url)
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// The first byte of a TLS handshake record, which a ClientHello starts with.
const HANDSHAKE_RECORD: u8 = 0x16;

/// A connection from `source` that starts a TLS handshake (one byte) and stalls.
async fn stalled_handshake(source: &str, addr: SocketAddr) -> TcpStream {
    let mut stream = connect_from(source, addr).await;
    stream
        .write_all(&[HANDSHAKE_RECORD])
        .await
        .expect("the first byte of a ClientHello");
    stream
}

/// A handshake from `source` by a client that does not trust the edge's certificate (rustls
/// itself, as reqwest cannot wait for the edge's side); returns once the edge has closed the
/// connection.
async fn reject_the_certificate(source: &str, addr: SocketAddr) {
    let stream = connect_from(source, addr).await.into_std().expect("socket");
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut stream = stream;
        stream.set_nonblocking(false).expect("blocking socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = "localhost".try_into().expect("server name");
        let mut tls = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let error = tls
            .complete_io(&mut stream)
            .expect_err("a certificate from no trusted root was accepted");
        assert!(
            matches!(
                error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()),
                Some(rustls::Error::InvalidCertificate(_))
            ),
            "the handshake failed otherwise: {error}"
        );
        // The edge's answer to the client's alert is to close: EOF or a reset.
        let closed = stream.read_to_end(&mut Vec::new());
        assert!(
            !matches!(&closed, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
            "the edge kept a connection whose client rejected the certificate"
        );
    })
    .await
    .expect("the rejecting client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_tls_with_http1_and_http2() {
    let certificate = TestCertificate::generate();
    let (origin, edge) = edge_on_fault_upstream_with(|_| {}, |e| certificate.install(e)).await;
    let image = TestImage::with_layers("over tls", &[3 << 20]);
    origin.put_image("team/app", "1.0", &image);
    let tls = edge.tls_addr.expect("a TLS listener");
    let url = |path: &str| format!("https://{tls}{path}");
    let h2 = certificate.client().build().expect("client");
    let h2_prior = certificate
        .client()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let h1 = certificate.client().http1_only().build().expect("client");
    for (client, version) in [
        (&h2, Version::HTTP_2),
        (&h2_prior, Version::HTTP_2),
        (&h1, Version::HTTP_11),
    ] {
        let base = client
            .get(url("/v2/"))
            .send()
            .await
            .expect("GET /v2/ over TLS");
        assert_eq!(base.status(), 200);
        assert_eq!(base.version(), version, "negotiated protocol");

        let manifest = client
            .get(url("/v2/team/app/manifests/1.0"))
            .header("accept", MANIFEST_ACCEPT)
            .send()
            .await
            .expect("manifest over TLS");
        assert_eq!(manifest.status(), 200);
        assert_eq!(manifest.version(), version);
        assert_eq!(
            header(manifest.headers(), "docker-content-digest"),
            image.digest
        );
        assert!(manifest.bytes().await.expect("body") == image.manifest);

        let layer = image.layer_digest(0);
        let blob = fetch(client, &url(&format!("/v2/team/app/blobs/{layer}")), None).await;
        blob.assert_blob(&layer, 3 << 20);
    }
    assert_eq!(origin.blob_gets(&image.layer_digest(0)), 1);

    // Without the generated root the certificate is not trusted.
    let untrusting = reqwest::Client::new();
    assert!(untrusting.get(url("/v2/")).send().await.is_err());
    // The plain listener keeps working next to the TLS one.
    assert_eq!(edge.get("/v2/").await.status(), 200);
}

/// A connection that never starts its handshake is closed after the header timeout (not after
/// pingora's 60 s handshake timeout), and TLS connections count under the same per-client cap
/// as plain ones: a client holding its two on the plain listener is refused on the TLS one
/// until it closes one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_listener_closes_silent_connections_and_applies_the_caps() {
    let certificate = TestCertificate::generate();
    let (_origin, edge) = edge_on_fault_upstream_with(
        |_| {},
        |e| {
            certificate.install(e);
            e.header_read_timeout_seconds = 1;
            e.max_connections_per_client = 2;
        },
    )
    .await;
    let tls = edge.tls_addr.expect("a TLS listener");
    let mut silent = tokio::net::TcpStream::connect(tls).await.expect("connect");
    let (received, closed) = read_to_close(&mut silent).await;
    assert_ne!(
        closed,
        Closed::StillOpen,
        "a silent TLS connection is still open"
    );
    assert!(received.is_empty());

    let client = "127.0.0.2";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from(client, edge.addr).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: edge\r\n\r\n")
            .await
            .expect("request");
        assert_eq!(
            read_response(&mut stream).await.expect("answer").status,
            200
        );
        held.push(stream);
    }
    let https = certificate.client_from(client);
    let url = format!("https://{tls}/v2/");
    assert!(
        https.get(&url).send().await.is_err(),
        "a third connection from the client is served over TLS"
    );
    held.pop();
    assert!(
        eventually(Duration::from_secs(10), || served(&https, &url)).await,
        "no TLS connection admitted after a plain one was closed"
    );
}

/// A connection counts against the caps from before its TLS handshake (whose 60 s pingora does
/// not let be shortened): two handshakes that start and stall fill a per-client cap of 2, the
/// client's third connection is closed unanswered, and its places come back once the stalled
/// ones are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_count_against_the_caps() {
    let certificate = TestCertificate::generate();
    let (_origin, edge) = edge_on_fault_upstream_with(
        |_| {},
        |e| {
            certificate.install(e);
            e.max_connections_per_client = 2;
        },
    )
    .await;
    let tls = edge.tls_addr.expect("a TLS listener");
    let client = "127.0.0.3";
    let open_before = edge.metric(CONNECTIONS_OPEN, &[]).await;
    let stalled = [
        stalled_handshake(client, tls).await,
        stalled_handshake(client, tls).await,
    ];
    // The edge admits each connection in a task of its own: wait until both are counted.
    let counted = eventually(Duration::from_secs(10), || async {
        edge.metric(CONNECTIONS_OPEN, &[]).await >= open_before + 2.0
    })
    .await;
    assert!(
        counted,
        "two stalled TLS handshakes are not counted as open"
    );

    let mut third = connect_from(client, tls).await;
    let _ = third.write_all(&[HANDSHAKE_RECORD]).await;
    let (received, closed) = read_to_close(&mut third).await;
    assert_ne!(
        closed,
        Closed::StillOpen,
        "a third connection from the client is waiting for its handshake"
    );
    assert!(received.is_empty(), "{received:?}");

    drop(stalled);
    let https = certificate.client_from(client);
    let url = format!("https://{tls}/v2/");
    assert!(
        eventually(Duration::from_secs(10), || served(&https, &url)).await,
        "no TLS request served after the stalled handshakes were closed"
    );
}

/// A failed handshake frees its place as the edge drops the connection (pingora does not tell
/// the application): after three times the per-client cap of each kind — garbage after the
/// first byte, a client that rejects the certificate —, the client's next request is served
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_tls_handshakes_do_not_keep_their_place() {
    let certificate = TestCertificate::generate();
    let (_origin, edge) = edge_on_fault_upstream_with(
        |_| {},
        |e| {
            certificate.install(e);
            e.max_connections_per_client = 2;
        },
    )
    .await;
    let tls = edge.tls_addr.expect("a TLS listener");
    let client = "127.0.0.4";
    for _ in 0..3 * 2 {
        let mut garbage = connect_from(client, tls).await;
        garbage
            .write_all(b"\x16 is not a ClientHello\r\n\r\n")
            .await
            .expect("garbage");
        let (_, closed) = read_to_close(&mut garbage).await;
        assert_ne!(
            closed,
            Closed::StillOpen,
            "the edge kept a connection whose handshake is garbage"
        );
        reject_the_certificate(client, tls).await;
    }
    let response = certificate
        .client_from(client)
        .get(format!("https://{tls}/v2/"))
        .send()
        .await
        .expect("a TLS request right after failed handshakes");
    assert_eq!(response.status(), 200);
}

/// Over TLS too (HTTP/1.1 and HTTP/2), the header deadline ends with the header: answers
/// slower than the header timeout arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_over_tls_are_not_cut_off_by_the_header_timeout() {
    let certificate = TestCertificate::generate();
    let (origin, edge) = edge_on_fault_upstream_with(
        |_| {},
        |e| {
            certificate.install(e);
            e.header_read_timeout_seconds = 1;
            e.keepalive_idle_timeout_seconds = 1;
        },
    )
    .await;
    let image = TestImage::with_layers("slow over tls", &[1000]);
    origin.put_image("team/app", "1.0", &image);
    origin.set_fault(Fault::Delay(Duration::from_millis(2500)));
    let tls = edge.tls_addr.expect("a TLS listener");
    for (client, version) in [
        (certificate.client().build(), Version::HTTP_2),
        (certificate.client().http1_only().build(), Version::HTTP_11),
    ] {
        let client = client.expect("client");
        for _ in 0..2 {
            let response = client
                .get(format!("https://{tls}/v2/team/app/manifests/1.0"))
                .header("accept", MANIFEST_ACCEPT)
                .send()
                .await
                .expect("a slow manifest over TLS");
            assert_eq!(
                (response.status().as_u16(), response.version()),
                (200, version)
            );
            assert!(response.bytes().await.expect("body") == image.manifest);
        }
    }
}

/// A gateway that terminates TLS tells the core so (`X-Forwarded-Proto`, `X-Forwarded-Host`),
/// and the absolute upload `Location` the core answers points back through the gateway over
/// `https`; a client's own `X-Forwarded-*` are replaced, never passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_gateway_gets_locations_that_point_back_through_it() {
    let certificate = TestCertificate::generate();
    let core = crate::support::edge::CoreProcess::start().await;
    let edge = crate::support::edge::EdgeProcess::start(|e| {
        e.gateway.cores = vec![core.addr.to_string()];
        e.gateway.health_check_interval_seconds = 1;
        certificate.install(e);
    })
    .await;
    let tls = edge.tls_addr.expect("a TLS listener");
    let client = certificate.client().build().expect("client");
    for forged in [None, Some("http")] {
        let mut request = client
            .post(format!("https://{tls}/v2/team/app/blobs/uploads/"))
            .header("content-length", "0");
        if let Some(proto) = forged {
            request = request
                .header("x-forwarded-proto", proto)
                .header("x-forwarded-host", "evil.example");
        }
        let response = request.send().await.expect("POST through the gateway");
        assert_eq!(response.status(), 202);
        let location = header(response.headers(), "location");
        assert!(
            location.starts_with(&format!("https://{tls}/v2/team/app/blobs/uploads/")),
            "{location}"
        );
    }
    let plain = reqwest::Client::new()
        .post(edge.url("/v2/team/app/blobs/uploads/"))
        .header("content-length", "0")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .expect("POST over plain HTTP");
    let location = header(plain.headers(), "location");
    assert!(location.starts_with(&edge.url("/v2/")), "{location}");
}
