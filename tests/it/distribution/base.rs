//! `/v2/` version check, headers every response carries, health endpoints, metrics, unknown
//! endpoints and unsupported methods.

use reqwest::Method;

use super::{Api, expect_error, expect_status, header};
use crate::support::image::{TestImage, sha256};

#[tokio::test]
async fn base_endpoint_answers_with_api_version() {
    let api = Api::start().await;
    for path in ["/v2/", "/v2"] {
        let response = api.send(api.get(path)).await;
        let (headers, body) = expect_status(response, 200).await;
        assert_eq!(
            header(&headers, "docker-distribution-api-version"),
            "registry/2.0"
        );
        assert!(!header(&headers, "x-request-id").is_empty());
        let value: serde_json::Value = serde_json::from_slice(&body).expect("base body is JSON");
        assert!(value.is_object(), "{value}");
    }
    let response = api.send(api.head("/v2/")).await;
    let (headers, body) = expect_status(response, 200).await;
    assert_eq!(
        header(&headers, "docker-distribution-api-version"),
        "registry/2.0"
    );
    assert!(body.is_empty());
}

#[tokio::test]
async fn every_response_has_a_request_id() {
    let api = Api::start().await;
    let digest = sha256(b"nothing");
    let requests = [
        api.get("/v2/"),
        api.get("/v2/_catalog"),
        api.get("/v2/missing/tags/list"),
        api.get(&format!("/v2/missing/blobs/{digest}")),
        api.head(&format!("/v2/missing/blobs/{digest}")),
        api.get("/v2/missing/manifests/latest"),
        api.post("/v2/repo/blobs/uploads/"),
        api.get("/v2/Invalid/tags/list"),
        api.get("/v2/a/unknown/endpoint"),
        api.request(Method::POST, "/v2/_catalog"),
        api.get("/healthz"),
        api.get("/readyz"),
        api.get("/metrics"),
        api.get("/no/such/path"),
    ];
    let mut seen = std::collections::HashSet::new();
    for request in requests {
        let response = api.send(request).await;
        let id = header(response.headers(), "x-request-id").to_owned();
        assert!(!id.is_empty());
        assert!(seen.insert(id.clone()), "request id {id} reused");
    }
    // A client-chosen id is kept and echoed.
    let response = api
        .send(api.get("/v2/").header("x-request-id", "client-chosen-42"))
        .await;
    assert_eq!(
        header(response.headers(), "x-request-id"),
        "client-chosen-42"
    );
}

#[tokio::test]
async fn v2_errors_carry_the_api_version_header() {
    let api = Api::start().await;
    let response = api.send(api.get("/v2/missing/manifests/latest")).await;
    assert_eq!(
        header(response.headers(), "docker-distribution-api-version"),
        "registry/2.0"
    );
    expect_error(response, 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn health_and_readiness() {
    let api = Api::start().await;
    let (_, body) = expect_status(api.send(api.get("/healthz")).await, 200).await;
    assert_eq!(body, b"ok");
    let (_, body) = expect_status(api.send(api.get("/readyz")).await, 200).await;
    assert_eq!(body, b"ready");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_received_bytes() {
    let api = Api::start().await;
    api.send(api.get("/v2/")).await;
    api.push_blob("metrics/repo", b"some bytes for the metrics test")
        .await;
    api.send(api.get("/v2/metrics/repo/tags/list")).await;
    let (headers, body) = expect_status(api.send(api.get("/metrics")).await, 200).await;
    assert!(
        header(&headers, "content-type").starts_with("text/plain"),
        "{headers:?}"
    );
    let text = String::from_utf8(body).expect("metrics are text");
    let request_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("aerugo_http_requests_total{"))
        .collect();
    assert!(
        !request_lines.is_empty(),
        "no aerugo_http_requests_total samples:\n{text}"
    );
    for route in ["base", "upload_start", "tags"] {
        assert!(
            request_lines
                .iter()
                .any(|l| l.contains(&format!("route=\"{route}\""))),
            "no request sample with route=\"{route}\":\n{text}"
        );
    }
    // Names never become label values (unbounded cardinality).
    assert!(
        !text.contains("metrics/repo"),
        "a repository name leaked into a label:\n{text}"
    );
    let received = text
        .lines()
        .find(|l| l.starts_with("aerugo_bytes_received_total "))
        .unwrap_or_else(|| panic!("no aerugo_bytes_received_total sample:\n{text}"));
    let value: f64 = received
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("sample value");
    assert!(
        value >= 31.0,
        "the pushed blob's bytes are counted: {received}"
    );
}

#[tokio::test]
async fn unknown_endpoints_are_404() {
    let api = Api::start().await;
    for path in [
        "/v2/a/unknown/thing",
        "/v2/a/tags/list/",
        "/v2/manifests/latest",
        "/v2/a/tags",
        "/v2/a",
    ] {
        let response = api.send(api.get(path)).await;
        let (headers, body) = expect_status(response, 404).await;
        assert!(
            header(&headers, "content-type").starts_with("application/json"),
            "{path}"
        );
        let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON error body");
        assert!(value["errors"][0]["code"].is_string(), "{path}: {value}");
    }
    for path in ["/v3/", "/v2x/a/tags/list", "/api/v1/nothing", "/"] {
        let response = api.send(api.get(path)).await;
        assert_eq!(response.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn wrong_methods_are_405_unsupported() {
    let api = Api::start().await;
    let image = TestImage::new("methods");
    api.push_image("methods/repo", "v1", &image).await;
    let blob = image.layer_digest(0);
    let upload = api.start_upload("methods/repo").await;
    let cases = [
        (Method::DELETE, "/v2/".to_owned()),
        (Method::POST, "/v2/".to_owned()),
        (Method::POST, "/v2/_catalog".to_owned()),
        (Method::DELETE, "/v2/_catalog".to_owned()),
        (Method::PUT, "/v2/methods/repo/tags/list".to_owned()),
        (Method::POST, "/v2/methods/repo/manifests/v1".to_owned()),
        (Method::PATCH, "/v2/methods/repo/manifests/v1".to_owned()),
        (Method::PUT, format!("/v2/methods/repo/blobs/{blob}")),
        (Method::POST, format!("/v2/methods/repo/blobs/{blob}")),
        (Method::PATCH, format!("/v2/methods/repo/blobs/{blob}")),
        (Method::GET, "/v2/methods/repo/blobs/uploads/".to_owned()),
        (Method::PUT, "/v2/methods/repo/blobs/uploads/".to_owned()),
        (Method::DELETE, "/v2/methods/repo/blobs/uploads/".to_owned()),
        (Method::POST, upload.clone()),
        (
            Method::DELETE,
            format!("/v2/methods/repo/referrers/{}", image.digest),
        ),
    ];
    for (method, path) in cases {
        let response = api.send(api.request(method.clone(), &path)).await;
        assert_eq!(response.status(), 405, "{method} {path}");
        expect_error(response, 405, "UNSUPPORTED").await;
    }
    // Nothing above changed anything.
    assert_eq!(
        api.get_blob("methods/repo", &blob).await,
        (200, image.layers[0].bytes())
    );
    assert_eq!(api.get_manifest("methods/repo", "v1").await.0, 200);
    let (headers, _) = expect_status(api.send(api.get(&upload)).await, 204).await;
    assert_eq!(header(&headers, "range"), "0-0");
}
