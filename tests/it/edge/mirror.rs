//! Pull-through from real registries, upstream selection and the mirror's refusals.

use reqwest::Method;

use super::{FAULTY, MANIFEST_ACCEPT, edge_on_fault_upstream, expect_manifest, fetch, get_full};
use crate::distribution::{expect_error, header};
use crate::support::distribution::DistributionRegistry;
use crate::support::edge::{EdgeProcess, upstream};
use crate::support::image::{OCI_MANIFEST, TestImage, sha256};
use crate::support::seed::Seeder;
use crate::support::{TestServer, require_tool};

/// The quick start (`--upstream URL`, no file) in front of the distribution registry: the
/// manifest by tag and by digest and every blob come through with the upstream's bytes, and
/// the second pull is served from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_through_from_the_distribution_registry() {
    if !require_tool("docker-registry") {
        return;
    }
    let registry = DistributionRegistry::start().await;
    let image = TestImage::with_layers("edge pull-through", &[1 << 20, 300_000]);
    Seeder::new(&registry.base_url())
        .push_image("team/app", "1.0", &image)
        .await;
    let edge = EdgeProcess::start_with_flags(&[registry.base_url()]).await;

    let headers = expect_manifest(
        &edge,
        "/v2/team/app/manifests/1.0",
        &image.digest,
        &image.manifest,
    )
    .await;
    assert_eq!(header(&headers, "content-type"), OCI_MANIFEST);
    let by_digest = format!("/v2/team/app/manifests/{}", image.digest);
    expect_manifest(&edge, &by_digest, &image.digest, &image.manifest).await;
    let head = edge
        .http
        .head(edge.url("/v2/team/app/manifests/1.0"))
        .header("accept", MANIFEST_ACCEPT)
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), 200);
    assert_eq!(
        header(head.headers(), "docker-content-digest"),
        image.digest
    );

    for blob in image.blobs() {
        let digest = &blob.digest;
        let url = edge.url(&format!("/v2/team/app/blobs/{digest}"));
        let cold = fetch(&edge.http, &url, None).await;
        cold.assert_blob(digest, blob.size);
        assert_eq!(cold.cache(), "MISS", "first pull of {digest}");
        let warm = fetch(&edge.http, &url, None).await;
        warm.assert_blob(digest, blob.size);
        assert_eq!(warm.cache(), "HIT", "second pull of {digest}");
    }
    expect_manifest(&edge, &by_digest, &image.digest, &image.manifest).await;

    let metrics = edge.metrics().await;
    let upstream_name = registry.addr.ip().to_string();
    let metric = |name: &str, labels: &[(&str, &str)]| {
        crate::support::edge::metric_sum(&metrics, name, labels)
    };
    let blobs = image.blobs().len() as f64;
    assert_eq!(
        metric(
            "aerugo_edge_upstream_fetches_total",
            &[("upstream", &upstream_name), ("kind", "blob")]
        ),
        blobs,
        "one origin fetch per blob; metrics:\n{metrics}"
    );
    assert_eq!(
        metric("aerugo_edge_cache_hits_total", &[("kind", "blob")]),
        blobs,
        "metrics:\n{metrics}"
    );
    assert!(
        metric("aerugo_edge_cache_hits_total", &[("kind", "manifest")]) >= 1.0,
        "the manifest by digest is cached; metrics:\n{metrics}"
    );
    assert!(metric("aerugo_edge_bytes_served_total", &[("source", "cache")]) > 0.0);

    let (status, _, body) =
        get_full(&edge.http, &edge.url("/v2/team/app/manifests/2.0"), &[]).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let unknown = sha256(b"never pushed");
    let response = edge
        .http
        .get(edge.url(&format!("/v2/team/app/blobs/{unknown}")))
        .send()
        .await
        .expect("GET");
    expect_error(response, 404, "BLOB_UNKNOWN").await;
}

/// Two upstreams — the distribution registry (the default, alias `distribution`) and an
/// Aerugo core (`core`, with allow and deny lists) — holding different images under the same
/// name: `?ns=`, a path prefix and bare paths pick the right one, and the lists are enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selects_the_upstream_by_ns_prefix_or_default_and_applies_allow_deny() {
    if !require_tool("docker-registry") {
        return;
    }
    let registry = DistributionRegistry::start().await;
    let core = TestServer::start().await;
    let from_registry = TestImage::with_layers("served by the distribution registry", &[4096]);
    let from_core = TestImage::with_layers("served by the core", &[5000]);
    let secret = TestImage::with_layers("a denied repository", &[100]);
    let other = TestImage::with_layers("outside the allow list", &[100]);
    Seeder::new(&registry.base_url())
        .push_image("team/app", "1.0", &from_registry)
        .await;
    let core_seeder = Seeder::new(&core.url(""));
    core_seeder.push_image("team/app", "1.0", &from_core).await;
    core_seeder
        .push_image("team/secret-app", "1.0", &secret)
        .await;
    core_seeder.push_image("other/thing", "1.0", &other).await;

    let mut dist = upstream("dist", &registry.base_url());
    dist.default = true;
    dist.aliases = vec!["distribution".into()];
    let mut core_site = upstream("core", &core.url(""));
    core_site.allow = vec!["team/*".into(), "library/*".into()];
    core_site.deny = vec!["team/secret*".into()];
    let edge = EdgeProcess::start(|e| e.upstreams = vec![dist, core_site]).await;

    let tag = "team/app/manifests/1.0";
    let reg = (&from_registry.digest, &from_registry.manifest);
    let cor = (&from_core.digest, &from_core.manifest);
    let core_ns = format!("?ns={}", core.host());
    for (path, (digest, body)) in [
        (format!("/v2/{tag}"), reg),
        (format!("/v2/distribution/{tag}"), reg),
        (format!("/v2/dist/{tag}"), reg),
        (format!("/v2/{tag}?ns=dist"), reg),
        (format!("/v2/{tag}?ns=core"), cor),
        (format!("/v2/core/{tag}"), cor),
        // containerd names the upstream host (with its port) in `ns`.
        (format!("/v2/{tag}{core_ns}"), cor),
    ] {
        expect_manifest(&edge, &path, digest, body).await;
    }
    let layer = from_core.layer_digest(0);
    for path in [
        format!("/v2/core/team/app/blobs/{layer}"),
        format!("/v2/team/app/blobs/{layer}?ns=core"),
    ] {
        fetch(&edge.http, &edge.url(&path), None)
            .await
            .assert_blob(&layer, from_core.layers[0].size);
    }
    for path in [
        format!("/v2/core/team/secret-app/manifests/{}", secret.digest),
        "/v2/core/team/secret-app/manifests/1.0".to_owned(),
        "/v2/team/secret-app/manifests/1.0?ns=core".to_owned(),
        format!("/v2/core/team/secret-app/blobs/{}", secret.layer_digest(0)),
        "/v2/core/other/thing/manifests/1.0".to_owned(),
        format!("/v2/other/thing/blobs/{}?ns=core", other.layer_digest(0)),
    ] {
        let response = edge
            .http
            .get(edge.url(&path))
            .header("accept", MANIFEST_ACCEPT)
            .send()
            .await
            .expect("GET");
        expect_error(response, 403, "DENIED").await;
    }
    let response = edge
        .http
        .get(edge.url(&format!("/v2/{tag}?ns=registry.invalid")))
        .header("accept", MANIFEST_ACCEPT)
        .send()
        .await
        .expect("GET");
    expect_error(response, 404, "NAME_UNKNOWN").await;

    let metrics = edge.metrics().await;
    for name in ["dist", "core"] {
        assert!(
            crate::support::edge::metric_sum(
                &metrics,
                "aerugo_edge_upstream_fetches_total",
                &[("upstream", name)]
            ) > 0.0,
            "upstream {name} was never asked; metrics:\n{metrics}"
        );
    }
}

/// A mirror is read-only: pushes and deletes are refused with `405 UNSUPPORTED` and never
/// reach the upstream, whichever way the upstream is selected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_to_a_mirrored_namespace_are_unsupported() {
    let (origin, edge) = edge_on_fault_upstream(|_| {}).await;
    let image = TestImage::with_layers("read only", &[100]);
    origin.put_image("team/app", "1.0", &image);
    let digest = image.layer_digest(0);
    for prefix in ["/v2/team/app".to_owned(), format!("/v2/{FAULTY}/team/app")] {
        for (method, path) in [
            (Method::POST, format!("{prefix}/blobs/uploads/")),
            (
                Method::POST,
                format!("{prefix}/blobs/uploads/?digest={digest}"),
            ),
            (
                Method::PATCH,
                format!("{prefix}/blobs/uploads/0b0c9a43-3c55-4a41-9d4d-9a3e0e1f2a55"),
            ),
            (
                Method::PUT,
                format!(
                    "{prefix}/blobs/uploads/0b0c9a43-3c55-4a41-9d4d-9a3e0e1f2a55?digest={digest}"
                ),
            ),
            (Method::PUT, format!("{prefix}/manifests/1.0")),
            (
                Method::DELETE,
                format!("{prefix}/manifests/{}", image.digest),
            ),
            (Method::DELETE, format!("{prefix}/blobs/{digest}")),
        ] {
            let response = edge
                .http
                .request(method.clone(), edge.url(&path))
                .header("content-type", OCI_MANIFEST)
                .body(image.manifest.clone())
                .send()
                .await
                .expect("request");
            let (_, error) = expect_error(response, 405, "UNSUPPORTED").await;
            assert!(error["message"].is_string(), "{method} {path}: {error}");
        }
    }
    let response = edge
        .http
        .post(edge.url(&format!("/v2/team/app/blobs/uploads/?ns={FAULTY}")))
        .send()
        .await
        .expect("POST");
    expect_error(response, 405, "UNSUPPORTED").await;
    let reached: Vec<_> = origin
        .request_counts()
        .into_iter()
        .filter(|((method, _), _)| method != "GET" && method != "HEAD")
        .collect();
    assert!(
        reached.is_empty(),
        "writes reached the upstream: {reached:?}"
    );
    // Pulls still work.
    expect_manifest(
        &edge,
        "/v2/team/app/manifests/1.0",
        &image.digest,
        &image.manifest,
    )
    .await;
}
