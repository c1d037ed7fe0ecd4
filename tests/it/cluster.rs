//! Two `aerugo serve` nodes on one production stack (PostgreSQL, S3, Redis): what one node
//! writes, the other serves at once; an upload moves between them; garbage collection on one
//! never undoes a push through the other; a backend that goes away is a `503` and comes back
//! without a restart.

use std::time::Duration;

use aerugo::testkit::FaultProxy;

use crate::distribution::{Api, expect_error, expect_status, header};
use crate::support::image::{OCI_LAYER_TAR, OCI_MANIFEST, TestImage, bytes_for, sha256};
use crate::support::stack::Stack;

async fn two_nodes(
    configure: impl Fn(&mut aerugo::config::Config) + Copy,
) -> Option<(Stack, Api, Api)> {
    let stack = Stack::create().await?;
    let a = Api::start_on(&stack, configure).await;
    let b = Api::start_on(&stack, configure).await;
    Some((stack, a, b))
}

fn streamed(config: &mut aerugo::config::Config) {
    if let aerugo::config::StorageConfig::S3(s3) = &mut config.storage {
        s3.redirect = false;
    }
}

fn redirected(config: &mut aerugo::config::Config) {
    if let aerugo::config::StorageConfig::S3(s3) = &mut config.storage {
        s3.redirect = true;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_through_one_node_is_pulled_through_the_other() {
    let Some((_stack, a, b)) = two_nodes(streamed).await else {
        return;
    };
    let image = TestImage::new("cluster-push");
    a.push_image("team/app", "1.0", &image).await;
    let (status, _, body) = b.get_manifest("team/app", "1.0").await;
    assert_eq!(status, 200);
    assert_eq!(body, image.manifest);
    assert_eq!(
        b.get_blob("team/app", &image.layer_digest(0)).await,
        (200, image.layers[0].bytes())
    );
    assert_eq!(
        b.get_blob("team/app", &image.config_digest()).await,
        (200, image.config.bytes())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_alternates_between_the_nodes() {
    let Some((_stack, a, b)) = two_nodes(streamed).await else {
        return;
    };
    // Chunks around S3's 5 MiB part minimum, so parts and tails cross nodes.
    let blob = bytes_for("alternating", 13 << 20);
    let chunks: Vec<&[u8]> = blob.chunks(3 << 20).collect();
    let mut location = a.start_upload("team/app").await;
    let mut offset = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        let node = if i % 2 == 0 { &b } else { &a };
        let end = offset + chunk.len() - 1;
        let response = node
            .send(
                node.patch(&location)
                    .header("content-type", "application/octet-stream")
                    .header("content-range", format!("{offset}-{end}"))
                    .body(chunk.to_vec()),
            )
            .await;
        let (headers, _) = expect_status(response, 202).await;
        assert_eq!(header(&headers, "range"), format!("0-{end}"));
        location = header(&headers, "location").to_owned();
        offset = end + 1;
    }
    let digest = sha256(&blob);
    let response = b.send(b.put(&Api::with_digest(&location, &digest))).await;
    expect_status(response, 201).await;
    assert_eq!(a.get_blob("team/app", &digest).await, (200, blob));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_moved_on_one_node_is_seen_on_the_other_at_once() {
    let Some((_stack, a, b)) = two_nodes(streamed).await else {
        return;
    };
    let first = TestImage::new("tag-first");
    a.push_image("team/app", "latest", &first).await;
    // Both nodes have the tag cached now.
    for node in [&a, &b] {
        assert_eq!(
            node.get_manifest("team/app", "latest").await.2,
            first.manifest
        );
    }
    let second = TestImage::new("tag-second");
    b.push_image("team/app", "latest", &second).await;
    let (status, headers, body) = a.get_manifest("team/app", "latest").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "docker-content-digest"), second.digest);
    assert_eq!(body, second.manifest);
    // And a delete through one node is a 404 through the other.
    let response = b
        .send(b.delete(&format!("/v2/team/app/manifests/{}", second.digest)))
        .await;
    expect_status(response, 202).await;
    let response = a.send(a.get("/v2/team/app/manifests/latest")).await;
    expect_error(response, 404, "MANIFEST_UNKNOWN").await;
}

/// How long pushed content is protected from collection in the GC race tests.
const GRACE_SECONDS: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_on_one_node_never_undoes_pushes_through_the_other() {
    let Some((_stack, a, b)) = two_nodes(streamed).await else {
        return;
    };
    // Garbage older than the grace period: blobs no manifest references.
    let garbage: Vec<Vec<u8>> = (0..6)
        .map(|i| bytes_for(&format!("garbage-{i}"), 4096))
        .collect();
    for blob in &garbage {
        a.push_blob("team/old", blob).await;
    }
    tokio::time::sleep(Duration::from_secs(GRACE_SECONDS + 1)).await;
    let collector = {
        let http = a.http.clone();
        let url = a.url(&format!(
            "/api/v1/admin/gc?grace_period_seconds={GRACE_SECONDS}"
        ));
        tokio::spawn(async move {
            for _ in 0..20 {
                let status = http.post(&url).send().await.expect("gc").status().as_u16();
                // 503: an earlier round (or the other node) is still collecting.
                assert!(status == 200 || status == 503, "gc answered {status}");
            }
        })
    };
    // Meanwhile the other node pushes images, some of whose layers are the garbage's bytes:
    // a re-push of a digest GC is deleting must end with the blob there.
    let mut pushed = Vec::new();
    for (i, layer) in garbage.iter().enumerate().take(3) {
        let image = TestImage::builder("gc race")
            .config(bytes_for(&format!("gc-race-config-{i}"), 100))
            .layer_of(OCI_LAYER_TAR, layer.clone())
            .build();
        let tag = format!("v{i}");
        b.push_image("team/app", &tag, &image).await;
        pushed.push((tag, image));
    }
    collector.await.expect("collector");
    // One more collection once the last one has let go of the GC lock.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let report = a
            .send(a.post(&format!(
                "/api/v1/admin/gc?grace_period_seconds={GRACE_SECONDS}"
            )))
            .await;
        if report.status() != 503 {
            expect_status(report, 200).await;
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the GC lock was never free"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (tag, image) in &pushed {
        assert_eq!(
            a.get_manifest("team/app", tag).await.2,
            image.manifest,
            "{tag}"
        );
        assert_eq!(
            a.get_blob("team/app", &image.layer_digest(0)).await,
            (200, image.layers[0].bytes()),
            "{tag}"
        );
        assert_eq!(
            b.get_blob("team/app", &image.config_digest()).await,
            (200, image.config.bytes()),
            "{tag}"
        );
    }
    // The garbage nobody pushed again is gone from both nodes.
    for blob in &garbage[3..] {
        assert_eq!(a.get_blob("team/old", &sha256(blob)).await.0, 404);
        assert_eq!(b.get_blob("team/app", &sha256(blob)).await.0, 404);
    }
}

/// An upload whose `PATCH` is still streaming is not abandoned, however old its session:
/// collection leaves a session alone while a request holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_leaves_a_session_that_is_being_written() {
    let Some((_stack, a, b)) = two_nodes(streamed).await else {
        return;
    };
    let location = a.start_upload("team/app").await;
    let (chunks, body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let patch = {
        let request = a
            .patch(&location)
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(tokio_stream_from(body)));
        tokio::spawn(request.send())
    };
    chunks.send(Ok(vec![1; 1000])).await.expect("first chunk");
    // The session is older than a zero grace period by now, and its PATCH is in flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let gc = b
        .send(b.post("/api/v1/admin/gc?grace_period_seconds=0"))
        .await;
    expect_status(gc, 200).await;
    chunks.send(Ok(vec![2; 1000])).await.expect("second chunk");
    drop(chunks);
    let response = patch.await.expect("task").expect("PATCH");
    let (headers, _) = expect_status(response, 202).await;
    assert_eq!(header(&headers, "range"), "0-1999");
    let mut blob = vec![1; 1000];
    blob.extend(vec![2; 1000]);
    let digest = sha256(&blob);
    let location = header(&headers, "location").to_owned();
    expect_status(
        a.send(a.put(&Api::with_digest(&location, &digest))).await,
        201,
    )
    .await;
    assert_eq!(b.get_blob("team/app", &digest).await, (200, blob));
}

/// A channel's receiving end as a body stream.
fn tokio_stream_from<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_gets_redirect_to_a_presigned_url_that_serves_the_bytes() {
    let Some((_stack, a, _b)) = two_nodes(redirected).await else {
        return;
    };
    let layer = bytes_for("redirected", 1000);
    let digest = a.push_blob("team/app", &layer).await;
    let response = a.send(a.get(&format!("/v2/team/app/blobs/{digest}"))).await;
    let (headers, _) = expect_status(response, 307).await;
    assert_eq!(header(&headers, "docker-content-digest"), digest);
    let presigned = header(&headers, "location").to_owned();
    assert!(presigned.contains("X-Amz-Signature="), "{presigned}");
    let fetched = reqwest::get(&presigned).await.expect("presigned GET");
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().await.expect("body").to_vec(), layer);
    // A range is redirected too, and the object store honours it.
    let response = a
        .send(
            a.get(&format!("/v2/team/app/blobs/{digest}"))
                .header("range", "bytes=10-19"),
        )
        .await;
    let (headers, _) = expect_status(response, 307).await;
    let ranged = reqwest::Client::new()
        .get(header(&headers, "location"))
        .header("range", "bytes=10-19")
        .send()
        .await
        .expect("presigned ranged GET");
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.expect("body").to_vec(), layer[10..20]);
    // An unsatisfiable range is the node's 416, never a redirect.
    let response = a
        .send(
            a.get(&format!("/v2/team/app/blobs/{digest}"))
                .header("range", format!("bytes={}-", layer.len() + 5)),
        )
        .await;
    assert_eq!(response.status(), 416);
    // HEAD is answered by the node: no bytes to send, so no reason to redirect.
    let response = a
        .send(a.head(&format!("/v2/team/app/blobs/{digest}")))
        .await;
    let (headers, _) = expect_status(response, 200).await;
    assert_eq!(header(&headers, "content-length"), layer.len().to_string());
}

/// Two `aerugo serve` processes configured only by the original product's variables are one
/// registry; one dies (kill -9) and the other keeps serving and taking pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_on_the_original_variables_are_one_registry() {
    use crate::support::process::CoreProcess;
    use crate::support::seed::Seeder;

    let Some(stack) = Stack::create().await else {
        return;
    };
    let env = vec![
        ("DATABASE_URL", stack.database_url()),
        ("REDIS_URL", stack.redis_url.clone()),
        ("S3_ENDPOINT", stack.s3.endpoint.clone()),
        ("S3_BUCKET", stack.bucket.clone()),
        ("S3_ACCESS_KEY", stack.s3.access_key.clone()),
        ("S3_SECRET_KEY", stack.s3.secret_key.clone()),
        ("S3_REGION", stack.s3.region.clone()),
        (
            "AERUGO__CACHE__REDIS_KEY_PREFIX",
            stack.redis_prefix.clone(),
        ),
    ];
    let start = || async {
        let work = tempfile::tempdir().expect("temp dir");
        let data = work.path().join("data");
        CoreProcess::start_with_env(work, &data, &env).await
    };
    let mut first = start().await;
    let second = start().await;
    let image = TestImage::with_layers("two processes", &[300 << 10, 1000]);
    Seeder::new(&first.url(""))
        .push_image("team/app", "1.0", &image)
        .await;
    first.kill9();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let manifest = client
        .get(second.url("/v2/team/app/manifests/1.0"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("manifest GET");
    assert_eq!(manifest.status(), 200, "{}", second.log());
    assert_eq!(manifest.bytes().await.expect("body"), image.manifest);
    // Redirects are on by default for S3: the blob comes from the bucket.
    let blob = client
        .get(second.url(&format!("/v2/team/app/blobs/{}", image.layer_digest(0))))
        .send()
        .await
        .expect("blob GET");
    assert_eq!(blob.status(), 307);
    let location = blob.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let bytes = reqwest::get(&location)
        .await
        .expect("presigned")
        .bytes()
        .await
        .expect("body");
    assert_eq!(sha256(&bytes), image.layer_digest(0));
    Seeder::new(&second.url(""))
        .push_image(
            "team/app",
            "2.0",
            &TestImage::with_layers("after the kill", &[1000]),
        )
        .await;
}

/// Waits for `/readyz` to say the node is ready again, without a restart.
async fn recovers(node: &Api) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while node.send(node.get("/readyz")).await.status() != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the node did not recover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A node whose database goes through a proxy that the test cuts and restores.
async fn node_behind_database_proxy() -> Option<(Stack, FaultProxy, Api)> {
    let stack = Stack::create().await?;
    let proxy = FaultProxy::start(postgres_addr(&stack)).await;
    let url = proxy.url_for(&stack.database_url());
    let node = Api::start_on(&stack, |config| {
        streamed(config);
        config.database.url = Some(url.clone());
        config.database.acquire_timeout_seconds = 2;
    })
    .await;
    Some((stack, proxy, node))
}

fn postgres_addr(stack: &Stack) -> std::net::SocketAddr {
    let authority = stack
        .postgres_url
        .split('@')
        .nth(1)
        .expect("host in the URL");
    let host_port = authority.split(['/', '?']).next().expect("host:port");
    std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .expect("resolving the database")
        .next()
        .expect("an address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_503_and_recovers_without_a_restart() {
    let Some((_stack, proxy, node)) = node_behind_database_proxy().await else {
        return;
    };
    let image = TestImage::new("db-fault");
    node.push_image("team/app", "1.0", &image).await;
    proxy.refuse();
    let started = std::time::Instant::now();
    let response = node
        .send(node.get(&format!("/v2/team/app/manifests/sha256:{}", "0".repeat(64))))
        .await;
    let (headers, _) = expect_error(response, 503, "UNAVAILABLE").await;
    assert_eq!(header(&headers, "retry-after"), "1");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a dead database must fail fast"
    );
    let ready = node.send(node.get("/readyz")).await;
    assert_eq!(ready.status(), 503);
    // A push while the database is away leaves nothing half-written.
    let during = TestImage::new("db-fault-during");
    let layer = during.layers[0].bytes();
    let response = node
        .send(
            node.post(&format!(
                "/v2/team/app/blobs/uploads/?digest={}",
                sha256(&layer)
            ))
            .body(layer.clone()),
        )
        .await;
    assert_eq!(response.status(), 503);

    proxy.restore();
    recovers(&node).await;
    assert_eq!(node.get_manifest("team/app", "1.0").await.2, image.manifest);
    let response = node
        .put_manifest("team/app", "2.0", OCI_MANIFEST, &during.manifest)
        .await;
    expect_error(response, 400, "MANIFEST_BLOB_UNKNOWN").await;
    node.push_image("team/app", "2.0", &during).await;
}

/// The edge in both modes in front of nodes whose blob `GET`s redirect to the object store:
/// it follows the `307` to the presigned URL, verifies the bytes and serves them from its
/// cache after the first fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_follows_presigned_redirects_in_gateway_and_mirror_mode() {
    use crate::edge::{expect_manifest, fetch};
    use crate::support::edge::{EdgeProcess, upstream};

    let Some((_stack, a, b)) = two_nodes(redirected).await else {
        return;
    };
    let image = TestImage::new("behind-the-edge");
    a.push_image("team/app", "1.0", &image).await;
    let gateway = EdgeProcess::start(|edge| {
        edge.gateway.cores = vec![a.server.host(), b.server.host()];
        edge.gateway.health_check_interval_seconds = 1;
    })
    .await;
    let mirror = EdgeProcess::start(|edge| {
        let mut node = upstream("cluster", &a.url(""));
        node.default = true;
        edge.upstreams = vec![node];
    })
    .await;
    for edge in [&gateway, &mirror] {
        expect_manifest(
            edge,
            "/v2/team/app/manifests/1.0",
            &image.digest,
            &image.manifest,
        )
        .await;
        let url = edge.url(&format!("/v2/team/app/blobs/{}", image.layer_digest(0)));
        let cold = fetch(&edge.http, &url, None).await;
        cold.assert_blob(&image.layer_digest(0), image.layers[0].size);
        assert_eq!(cold.cache(), "MISS");
        let warm = fetch(&edge.http, &url, None).await;
        warm.assert_blob(&image.layer_digest(0), image.layers[0].size);
        assert_eq!(warm.cache(), "HIT");
    }
}

/// Redis going away mid-run costs requests nothing but the cache: they keep succeeding from
/// PostgreSQL and S3, promptly, and the cache is used again once Redis answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_keep_succeeding_while_redis_is_black_holed() {
    let Some(stack) = Stack::create().await else {
        return;
    };
    let redis: std::net::SocketAddr = stack
        .redis_url
        .trim_start_matches("redis://")
        .parse()
        .expect("redis host:port");
    let proxy = FaultProxy::start(redis).await;
    let url = proxy.url_for(&stack.redis_url);
    let node = Api::start_on(&stack, |config| {
        streamed(config);
        config.cache.redis_url = Some(url.clone());
    })
    .await;
    let image = TestImage::new("redis-outage");
    node.push_image("team/app", "1.0", &image).await;
    proxy.blackhole();
    let started = std::time::Instant::now();
    for i in 0..20 {
        assert_eq!(
            node.get_manifest("team/app", "1.0").await.2,
            image.manifest,
            "pull {i}"
        );
        assert_eq!(
            node.get_blob("team/app", &image.layer_digest(0)).await.0,
            200
        );
    }
    node.push_image("team/app", "2.0", &TestImage::new("redis-outage-push"))
        .await;
    // One command timeout per retry pause at most, not one per request.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "requests waited on Redis: {:?}",
        started.elapsed()
    );
    proxy.restore();
    assert_eq!(node.get_manifest("team/app", "2.0").await.0, 200);
}

/// An object store that stops answering fails blob requests with 503 and readiness, and
/// the node serves again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_object_store_is_503_and_recovers_without_a_restart() {
    let Some(stack) = Stack::create().await else {
        return;
    };
    let s3_addr: std::net::SocketAddr = stack
        .s3
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("s3 host:port");
    let proxy = FaultProxy::start(s3_addr).await;
    let endpoint = proxy.url_for(&stack.s3.endpoint);
    let node = Api::start_on(&stack, |config| {
        if let aerugo::config::StorageConfig::S3(s3) = &mut config.storage {
            s3.redirect = false;
            s3.endpoint = Some(endpoint.clone());
            s3.request_timeout_seconds = 2;
        }
    })
    .await;
    let image = TestImage::new("s3-outage");
    node.push_image("team/app", "1.0", &image).await;
    proxy.refuse();
    let response = node
        .send(node.get(&format!("/v2/team/app/blobs/{}", image.layer_digest(0))))
        .await;
    let (headers, _) = expect_error(response, 503, "UNAVAILABLE").await;
    assert_eq!(header(&headers, "retry-after"), "1");
    assert_eq!(node.send(node.get("/readyz")).await.status(), 503);
    let blob = bytes_for("s3-outage-push", 1000);
    let response = node
        .send(
            node.post(&format!(
                "/v2/team/app/blobs/uploads/?digest={}",
                sha256(&blob)
            ))
            .body(blob.clone()),
        )
        .await;
    assert_eq!(response.status(), 503, "a push needs the object store");
    proxy.restore();
    recovers(&node).await;
    assert_eq!(
        node.get_blob("team/app", &image.layer_digest(0)).await,
        (200, image.layers[0].bytes())
    );
    // The failed push left nothing visible: the blob is unknown until pushed again.
    let digest = sha256(&blob);
    assert_eq!(node.get_blob("team/app", &digest).await.0, 404);
    node.push_blob("team/app", &blob).await;
}
