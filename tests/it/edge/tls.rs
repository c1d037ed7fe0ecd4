//! TLS termination with a generated certificate, over HTTP/1.1 and HTTP/2.

use reqwest::{Certificate, Version};

use super::{MANIFEST_ACCEPT, edge_on_fault_upstream_with, fetch};
use crate::distribution::header;
use crate::support::seed::SeedImage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_tls_with_http1_and_http2() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("generating a certificate");
    let cert_pem = certified.cert.pem();
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, &cert_pem).expect("writing the certificate");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("writing the key");
    let (origin, edge) = edge_on_fault_upstream_with(
        |_| {},
        |e| {
            e.tls_cert_path = Some(cert_path.clone());
            e.tls_key_path = Some(key_path.clone());
        },
    )
    .await;
    let image = SeedImage::new("over tls", &[3 << 20]);
    origin.add_image("team/app", "1.0", &image);
    let tls = edge.tls_addr.expect("a TLS listener");
    let url = |path: &str| format!("https://{tls}{path}");
    let root = || Certificate::from_pem(cert_pem.as_bytes()).expect("certificate");

    let h2 = reqwest::Client::builder()
        .tls_certs_only([root()])
        .build()
        .expect("client");
    let h2_prior = reqwest::Client::builder()
        .tls_certs_only([root()])
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let h1 = reqwest::Client::builder()
        .tls_certs_only([root()])
        .http1_only()
        .build()
        .expect("client");
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
