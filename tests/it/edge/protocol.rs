//! HTTP on the edge's own listener, as the core answers it: pipelined requests answered in
//! order, `405 UNSUPPORTED` for a method an endpoint does not support, `404` for no endpoint,
//! and an early refusal that reaches a client still sending its body.

use tokio::io::AsyncWriteExt;

use super::{MANIFEST_ACCEPT, edge_on_fault_upstream};
use crate::distribution::{expect_error, expect_status};
use crate::support::edge::{parse_responses, raw_exchange, read_to_close};
use crate::support::image::TestImage;

fn get(path: &str, close: bool) -> String {
    let connection = if close { "connection: close\r\n" } else { "" };
    format!("GET {path} HTTP/1.1\r\nhost: edge\r\naccept: {MANIFEST_ACCEPT}\r\n{connection}\r\n")
}

/// Four requests in one write, the last asking to close: four answers, in request order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_all_answered_in_order() {
    let (origin, edge) = edge_on_fault_upstream(|_| {}).await;
    let image = TestImage::with_layers("pipelined", &[1000]);
    origin.put_image("team/app", "1.0", &image);
    let layer = image.layer_digest(0);
    let pipelined = [
        get("/healthz", false),
        get("/v2/team/app/manifests/1.0", false),
        get(&format!("/v2/team/app/blobs/{layer}"), false),
        get("/v2/", true),
    ]
    .concat();

    let (received, error) = raw_exchange(edge.addr, pipelined.as_bytes()).await;
    let responses = parse_responses(&received).unwrap_or_else(|rest| {
        panic!("a response ended part-way ({error:?}): {rest}");
    });
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200], "{responses:?} ({error:?})");
    assert_eq!(responses[0].body, b"ok");
    assert_eq!(
        responses[1].header("docker-content-digest"),
        Some(image.digest.as_str())
    );
    assert!(responses[1].body == image.manifest, "manifest bytes differ");
    assert!(
        responses[2].body == image.layers[0].bytes(),
        "layer bytes differ"
    );
    assert_eq!(responses[3].body, b"{}");
}

/// `/v2/` (like `/healthz` and `/metrics`) answers `GET`/`HEAD` only, the read-only mirror
/// refuses every write with `405 UNSUPPORTED`, and a path that is no endpoint is `404`, in and
/// outside `/v2/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_and_unknown_endpoints_are_answered_as_the_core_answers_them() {
    let (_origin, edge) = edge_on_fault_upstream(|_| {}).await;
    for method in ["TRACE", "PROPFIND", "POST", "PUT", "DELETE", "OPTIONS"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = edge
            .http
            .request(method.clone(), edge.url("/v2/"))
            .send()
            .await
            .expect("request");
        let (_, error) = expect_error(response, 405, "UNSUPPORTED").await;
        assert!(error["message"].is_string(), "{method} /v2/: {error}");
    }
    assert_eq!(edge.get("/v2/").await.status(), 200);
    for path in ["/healthz", "/metrics"] {
        let response = edge.http.post(edge.url(path)).send().await.expect("POST");
        expect_error(response, 405, "UNSUPPORTED").await;
    }
    for path in [
        "/v2/team/app/nothing/here",
        "/v2/team/app/blobs",
        "/v2x",
        "/nowhere",
    ] {
        expect_status(edge.get(path).await, 404).await;
    }
    let response = edge
        .http
        .delete(edge.url("/v2/team/app/nothing/here"))
        .send()
        .await
        .expect("DELETE");
    expect_status(response, 404).await;
}

/// A client that sends its whole body before it reads (as many do) still gets the mirror's
/// `405` for an upload: the edge reads and discards the body instead of resetting the
/// connection under the client's writes (which lost the answer to a broken pipe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_is_answered_to_a_client_still_sending_its_body() {
    let (_origin, edge) = edge_on_fault_upstream(|_| {}).await;
    let upload = "/v2/team/app/blobs/uploads/0b0c9a43-3c55-4a41-9d4d-9a3e0e1f2a55";
    // More than the socket buffers hold, so the client is still writing when the answer comes.
    let body_len = 16 << 20;
    let head = format!(
        "PATCH {upload} HTTP/1.1\r\nhost: edge\r\nconnection: close\r\n\
         content-type: application/octet-stream\r\n\
         content-length: {body_len}\r\n\r\n"
    );
    let mut stream = tokio::net::TcpStream::connect(edge.addr)
        .await
        .expect("connecting to the edge");
    stream.write_all(head.as_bytes()).await.expect("header");
    let chunk = vec![7u8; 64 << 10];
    let mut sent = 0;
    let mut write_error = None;
    while sent < body_len {
        if let Err(e) = stream.write_all(&chunk).await {
            write_error = Some(e);
            break;
        }
        sent += chunk.len();
    }
    let (received, read_error) = read_to_close(&mut stream).await;
    let text = String::from_utf8_lossy(&received);
    assert!(
        write_error.is_none(),
        "the edge reset the connection after {sent} of {body_len} body bytes: {write_error:?}; \
         read {text:?}"
    );
    assert!(
        text.starts_with("HTTP/1.1 405") && text.contains("UNSUPPORTED"),
        "{text:?} ({read_error:?})"
    );

    // The same through an HTTP client, which stops at a broken pipe.
    for attempt in 0..3 {
        let response = edge
            .http
            .patch(edge.url(upload))
            .body(vec![1u8; 16 << 20])
            .send()
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: {e:?}"));
        expect_error(response, 405, "UNSUPPORTED").await;
    }
}
