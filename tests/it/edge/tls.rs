//! TLS termination with a generated certificate, over HTTP/1.1 and HTTP/2, and the connection
//! timeouts and caps on the TLS listener.

use std::path::PathBuf;
use std::time::Duration;

use aerugo::config::EdgeConfig;
use reqwest::{Certificate, Version};
use tokio::io::AsyncWriteExt;

use super::{MANIFEST_ACCEPT, edge_on_fault_upstream_with, eventually, fetch};
use crate::distribution::header;
use crate::support::edge::{Closed, read_response, read_to_close};
use crate::support::fault_upstream::Content as _;
use crate::support::fault_upstream::Fault;
use crate::support::seed::SeedImage;

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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_tls_with_http1_and_http2() {
    let certificate = TestCertificate::generate();
    let (origin, edge) = edge_on_fault_upstream_with(|_| {}, |e| certificate.install(e)).await;
    let image = SeedImage::new("over tls", &[3 << 20]);
    origin.add_image("team/app", "1.0", &image);
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
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{client}:0").parse().expect("address"))
            .expect("bind");
        let mut stream = socket.connect(edge.addr).await.expect("connect");
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
    let https = certificate
        .client()
        .local_address(client.parse::<std::net::IpAddr>().expect("address"))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let url = format!("https://{tls}/v2/");
    assert!(
        https.get(&url).send().await.is_err(),
        "a third connection from the client is served over TLS"
    );
    held.pop();
    let served = eventually(Duration::from_secs(10), || async {
        https
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(
        served,
        "no TLS connection admitted after a plain one was closed"
    );
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
    let image = SeedImage::new("slow over tls", &[1000]);
    origin.add_image("team/app", "1.0", &image);
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
