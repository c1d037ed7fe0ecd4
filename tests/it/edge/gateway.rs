//! Gateway mode: the edge in front of two `aerugo serve` processes, load balancing with health
//! checks, caching blobs, passing pushes through; one core is killed with SIGKILL mid-test.

use std::time::Duration;

use super::{expect_manifest, fetch};
use crate::distribution::{expect_error, expect_status, header};
use crate::support::edge::{CoreProcess, EdgeProcess};
use crate::support::image::{TestImage, sha256};
use crate::support::seed::Seeder;

const PULLS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_over_two_cores_caches_blobs_and_survives_one_killed() {
    let (mut a, mut b) = tokio::join!(CoreProcess::start(), CoreProcess::start());
    // Each core has its own data directory, so both get the same content directly.
    let image = TestImage::with_layers("behind the gateway", &[256 << 10, 64 << 10, 1000]);
    for core in [&a, &b] {
        Seeder::new(&core.url(""))
            .push_image("team/app", "1.0", &image)
            .await;
    }
    let edge = EdgeProcess::start(|e| {
        e.gateway.cores = vec![a.addr.to_string(), b.addr.to_string()];
        e.gateway.health_check_interval_seconds = 1;
    })
    .await;
    let manifests = [("route", "manifest"), ("method", "GET")];
    let before = (
        a.requests_served(&manifests).await,
        b.requests_served(&manifests).await,
    );
    let tag = "/v2/team/app/manifests/1.0";
    for _ in 0..PULLS {
        expect_manifest(&edge, tag, &image.digest, &image.manifest).await;
    }
    let served = (
        a.requests_served(&manifests).await - before.0,
        b.requests_served(&manifests).await - before.1,
    );
    assert!(
        served.0 > 0.0 && served.1 > 0.0,
        "both cores take manifest pulls through the gateway: {served:?}"
    );
    assert_eq!(served.0 + served.1, PULLS as f64, "{served:?}");

    let layer = |i: usize| {
        (
            image.layer_digest(i),
            edge.url(&format!("/v2/team/app/blobs/{}", image.layer_digest(i))),
        )
    };
    let (digest, url) = layer(0);
    let cold = fetch(&edge.http, &url, None).await;
    cold.assert_blob(&digest, 256 << 10);
    assert_eq!(cold.cache(), "MISS");
    let blob_reads = [("route", "blob"), ("method", "GET")];
    let blob_gets = a.requests_served(&blob_reads).await + b.requests_served(&blob_reads).await;
    for _ in 0..3 {
        let warm = fetch(&edge.http, &url, None).await;
        warm.assert_blob(&digest, 256 << 10);
        assert_eq!(warm.cache(), "HIT");
    }
    assert_eq!(
        a.requests_served(&blob_reads).await + b.requests_served(&blob_reads).await,
        blob_gets,
        "cached blobs are not fetched from the cores again"
    );

    // A push passes through to a core: the upload session starts there.
    let response = edge
        .http
        .post(edge.url("/v2/team/pushed/blobs/uploads/"))
        .send()
        .await
        .expect("POST through the gateway");
    let (headers, _) = expect_status(response, 202).await;
    assert!(header(&headers, "location").contains("/v2/team/pushed/blobs/uploads/"));

    // `/api/` goes to a core too.
    let response = edge
        .http
        .post(edge.url("/api/v1/admin/gc"))
        .send()
        .await
        .expect("POST /api/ through the gateway");
    let (_, body) = expect_status(response, 200).await;
    let report: serde_json::Value = serde_json::from_slice(&body).expect("gc report");
    assert!(report["blobs_deleted"].is_u64(), "{report}");

    // No endpoint is `404`, as on a core; a method `/v2/` does not support is the core's `405`.
    expect_status(edge.get("/nowhere").await, 404).await;
    let response = edge
        .http
        .request(reqwest::Method::TRACE, edge.url("/v2/"))
        .send()
        .await
        .expect("TRACE through the gateway");
    expect_error(response, 405, "UNSUPPORTED").await;

    a.kill9();
    // The health check runs every second; give it three.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..PULLS {
        let (status, _, body) = super::get_full(&edge.http, &edge.url(tag), &[]).await;
        assert_eq!(
            status,
            200,
            "pull {i} after a core was killed: {}\nedge log:\n{}",
            String::from_utf8_lossy(&body),
            edge.log()
        );
        assert!(body == image.manifest);
    }
    expect_manifest(&edge, tag, &image.digest, &image.manifest).await;
    // Uncached blobs now come from the surviving core; cached ones from the cache.
    for i in [1, 2] {
        let (digest, url) = layer(i);
        fetch(&edge.http, &url, None)
            .await
            .assert_blob(&digest, image.layers[i].size);
    }
    fetch(&edge.http, &layer(0).1, None)
        .await
        .assert_blob(&layer(0).0, 256 << 10);

    // With one core left, a whole push through the gateway lands on it and is pullable.
    let pushed = b"pushed through the gateway".to_vec();
    let seeder = Seeder::new(&edge.url(""));
    assert_eq!(
        seeder.push_blob("team/pushed", &pushed).await,
        sha256(&pushed)
    );
    let direct = reqwest::get(b.url(&format!("/v2/team/pushed/blobs/{}", sha256(&pushed))))
        .await
        .expect("GET from the surviving core");
    assert_eq!(direct.status(), 200);
    assert!(direct.bytes().await.expect("body") == pushed);

    // With no core left, what the gateway proxies is refused as a registry that cannot serve
    // refuses: before the health check noticed (the connection fails) and after (none healthy).
    b.kill9();
    for wait in [0, 3] {
        tokio::time::sleep(Duration::from_secs(wait)).await;
        let response = edge.http.get(edge.url(tag)).send().await.expect("GET");
        expect_error(response, 503, "UNAVAILABLE").await;
    }
}
