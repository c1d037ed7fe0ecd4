//! The edge against a misbehaving upstream ([`FaultUpstream`]): coalescing and streaming to
//! waiting clients, corrupt and truncated bodies, stale-if-error (down, 429, 500, timeouts),
//! token expiry, tag revalidation, redirects to object storage.

use std::time::Duration;

use aerugo::config::MirrorUpstream;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::{
    FAULTY, Fetched, edge_on_fault_upstream, eventually, expect_manifest, expect_upstream_error,
    fetch, get_full,
};
use crate::distribution::header;
use crate::support::edge::{EdgeProcess, metric_sum};
use crate::support::fault_upstream::Content as _;
use crate::support::fault_upstream::{self, Fault, FaultUpstream};
use crate::support::image::{ByteGen, Fill, OCI_MANIFEST, TestImage, sha256};

/// Deterministic pseudo-random blob bytes, cheap to generate even for 256 MiB.
fn blob_bytes(seed: u64, size: u64) -> Bytes {
    Bytes::from(ByteGen::new(Fill::Seeded(seed), size).collect_vec())
}

/// Starts `clients` concurrent `GET`s of a blob through the edge while the upstream holds its
/// answer, and releases the upstream once every client joined the edge's one fetch (or the
/// edge sent a second fetch upstream, or 60 s passed). Returns what each client received.
async fn concurrent_cold_gets(
    origin: &FaultUpstream,
    edge: &EdgeProcess,
    digest: &str,
    clients: usize,
) -> Vec<Fetched> {
    origin.hold_blobs();
    let url = edge.url(&format!("/v2/team/big/blobs/{digest}"));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url) = (edge.http.clone(), url.clone());
            tokio::spawn(async move { fetch(&client, &url, None).await })
        })
        .collect();
    let lined_up = eventually(Duration::from_secs(60), || async {
        let gets = origin.blob_gets(digest);
        gets > 1
            || (gets == 1
                && edge
                    .metric("aerugo_edge_coalesced_waiters_total", &[])
                    .await
                    >= (clients - 1) as f64)
    })
    .await;
    assert!(lined_up, "the {clients} clients never reached the edge");
    assert_eq!(
        origin.blob_gets(digest),
        1,
        "the edge sent more than one GET upstream for one blob"
    );
    origin.release_blobs();
    let mut fetched = Vec::new();
    for task in tasks {
        fetched.push(task.await.expect("client task"));
    }
    fetched
}

/// 32 concurrent cold pulls of a 256 MiB blob → exactly one upstream GET, and every client
/// gets all the right bytes (hashed as they stream, never held in memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesces_32_concurrent_cold_pulls_into_one_upstream_get() {
    const SIZE: u64 = 256 << 20;
    const CLIENTS: usize = 32;
    let (origin, edge) = edge_on_fault_upstream(|_| {}).await;
    let digest = origin.add_blob(blob_bytes(256, SIZE));

    let fetched = concurrent_cold_gets(&origin, &edge, &digest, CLIENTS).await;
    for (i, f) in fetched.iter().enumerate() {
        assert_eq!(f.cache(), "MISS", "client {i}");
        f.assert_blob(&digest, SIZE);
    }
    assert_eq!(origin.blob_gets(&digest), 1, "upstream GETs of the blob");
    let waiters = edge
        .metric("aerugo_edge_coalesced_waiters_total", &[])
        .await;
    assert!(
        waiters >= (CLIENTS - 1) as f64,
        "coalesced waiters: {waiters}"
    );
    assert_eq!(
        edge.metric(
            "aerugo_edge_upstream_fetches_total",
            &[("upstream", FAULTY), ("kind", "blob")]
        )
        .await,
        1.0
    );
    let warm = fetch(
        &edge.http,
        &edge.url(&format!("/v2/team/big/blobs/{digest}")),
        None,
    )
    .await;
    warm.assert_blob(&digest, SIZE);
    assert_eq!(warm.cache(), "HIT");
    assert_eq!(origin.blob_gets(&digest), 1);
}

/// Clients are streamed the bytes as they arrive: with the upstream stalled after 2 MiB of an
/// 8 MiB blob, the client that started the fetch and one that joined it both receive those
/// bytes (but for the edge's 256 KiB write buffer), and a `Range` inside them is answered in
/// full, before the upstream sends the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_clients_are_streamed_bytes_before_the_fetch_completes() {
    const SIZE: u64 = 8 << 20;
    const STALL: u64 = 2 << 20;
    /// The fill writes (and announces) the upstream's bytes in steps of 256 KiB.
    const WRITE_STEP: u64 = 256 << 10;
    let (origin, edge) =
        edge_on_fault_upstream(|u| u.client.read_idle_timeout_seconds = 120.0).await;
    let bytes = blob_bytes(8, SIZE);
    let digest = origin.add_blob(bytes.clone());
    origin.set_fault(Fault::StallBlobsAfter(STALL as usize));
    let url = edge.url(&format!("/v2/team/app/blobs/{digest}"));

    let first = edge.http.get(&url).send().await.expect("GET");
    assert_eq!(first.status(), 200);
    assert_eq!(origin.blob_gets(&digest), 1);
    let second = edge.http.get(&url).send().await.expect("GET");
    assert_eq!(second.status(), 200);
    assert_eq!(
        edge.metric("aerugo_edge_coalesced_waiters_total", &[])
            .await,
        1.0
    );
    let mut readers = Vec::new();
    for mut response in [first, second] {
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        let read = tokio::time::timeout(Duration::from_secs(30), async {
            while received < STALL - WRITE_STEP {
                let chunk = response.chunk().await.expect("body").expect("more body");
                received += chunk.len() as u64;
                hasher.update(&chunk);
            }
        })
        .await;
        assert!(
            read.is_ok(),
            "only {received} bytes reached a client while the upstream had sent {STALL}"
        );
        assert!(
            received < SIZE,
            "a client got the whole blob while the upstream was stalled"
        );
        readers.push((response, hasher, received));
    }
    // A range inside the bytes already fetched: all of it but its last byte arrives now; the
    // last byte waits until the whole blob is verified (a slice cannot be).
    let mut ranged = edge
        .http
        .get(&url)
        .header("range", "bytes=1000-999999")
        .send()
        .await
        .expect("ranged GET");
    assert_eq!(ranged.status(), 206);
    let mut range_body = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while range_body.len() < 998_999 {
            let chunk = ranged.chunk().await.expect("body").expect("more body");
            range_body.extend_from_slice(&chunk);
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the range was not streamed from the bytes in flight"
    );
    assert_eq!(range_body.len(), 998_999, "only the last byte is held back");
    assert!(
        fetch(&edge.http, &edge.url("/metrics"), None)
            .await
            .error
            .is_none()
    );

    origin.set_fault(Fault::None);
    for (mut response, mut hasher, mut received) in readers {
        while let Some(chunk) = response.chunk().await.expect("body") {
            received += chunk.len() as u64;
            hasher.update(&chunk);
        }
        assert_eq!(received, SIZE);
        assert_eq!(format!("sha256:{}", hex::encode(hasher.finalize())), digest);
    }
    while let Some(chunk) = ranged.chunk().await.expect("ranged body") {
        range_body.extend_from_slice(&chunk);
    }
    assert!(range_body == bytes[1000..1_000_000], "wrong ranged bytes");
    assert_eq!(origin.blob_gets(&digest), 1);
}

/// A client that hangs up does not cancel the fetch for the others: the one that started it
/// leaves half-way, the one that joined gets every byte, and the blob is cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_does_not_cancel_the_fetch() {
    const SIZE: u64 = 8 << 20;
    let (origin, edge) = edge_on_fault_upstream(|_| {}).await;
    let digest = origin.add_blob(blob_bytes(88, SIZE));
    origin.set_fault(Fault::StallBlobsAfter(2 << 20));
    let url = edge.url(&format!("/v2/team/app/blobs/{digest}"));
    let mut leaver = edge.http.get(&url).send().await.expect("GET");
    assert_eq!(leaver.status(), 200);
    let stayer = {
        let (client, url) = (edge.http.clone(), url.clone());
        tokio::spawn(async move { fetch(&client, &url, None).await })
    };
    let joined = eventually(Duration::from_secs(30), || async {
        edge.metric("aerugo_edge_coalesced_waiters_total", &[])
            .await
            >= 1.0
    })
    .await;
    assert!(joined, "the second client did not join the fetch");
    let first = tokio::time::timeout(Duration::from_secs(30), leaver.chunk())
        .await
        .expect("the first bytes arrive while the upstream stalls");
    assert!(first.expect("body").is_some());
    drop(leaver);
    tokio::time::sleep(Duration::from_millis(200)).await;
    origin.set_fault(Fault::None);
    let stayed = stayer.await.expect("task");
    stayed.assert_blob(&digest, SIZE);
    let warm = fetch(&edge.http, &url, None).await;
    warm.assert_blob(&digest, SIZE);
    assert_eq!(warm.cache(), "HIT");
    assert_eq!(origin.blob_gets(&digest), 1);
}

/// A broken body (`fault`) reaches no client complete — each of three coalesced clients gets
/// an aborted body — and is not cached: once the upstream behaves, the next pull goes upstream
/// again and succeeds.
async fn broken_blob_is_never_served_complete_nor_cached(fault: Fault, reasons: &[&str]) {
    const SIZE: u64 = 4 << 20;
    let (origin, edge) = edge_on_fault_upstream(|_| {}).await;
    let digest = origin.add_blob(blob_bytes(4, SIZE));
    origin.set_fault(fault.clone());

    for (i, f) in concurrent_cold_gets(&origin, &edge, &digest, 3)
        .await
        .iter()
        .enumerate()
    {
        f.assert_incomplete(SIZE);
        assert_ne!(f.digest, digest, "client {i} got the whole blob");
    }
    assert_eq!(origin.blob_gets(&digest), 1);
    let metrics = edge.metrics().await;
    let errors: f64 = reasons
        .iter()
        .map(|reason| {
            metric_sum(
                &metrics,
                "aerugo_edge_upstream_errors_total",
                &[("upstream", FAULTY), ("reason", reason)],
            )
        })
        .sum();
    assert_eq!(
        errors, 1.0,
        "{fault:?}: one upstream error with a reason in {reasons:?}; metrics:\n{metrics}"
    );

    origin.set_fault(Fault::None);
    let url = edge.url(&format!("/v2/team/big/blobs/{digest}"));
    let retried = fetch(&edge.http, &url, None).await;
    retried.assert_blob(&digest, SIZE);
    assert_eq!(
        retried.cache(),
        "MISS",
        "the broken copy must not have been cached"
    );
    assert_eq!(origin.blob_gets(&digest), 2);
    let warm = fetch(&edge.http, &url, None).await;
    warm.assert_blob(&digest, SIZE);
    assert_eq!(warm.cache(), "HIT");
    assert_eq!(origin.blob_gets(&digest), 2);
}

/// A manifest whose bytes do not match its digest is refused (by tag and by digest), never
/// cached, and served once the upstream sends the right bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_manifest_is_never_served_nor_cached() {
    let (origin, edge) = edge_on_fault_upstream(|_| {}).await;
    let image = TestImage::with_layers("corrupt manifest", &[100]);
    origin.put_image("team/app", "1.0", &image);
    origin.set_fault(Fault::CorruptManifests);
    let tag = "/v2/team/app/manifests/1.0";
    let by_digest = format!("/v2/team/app/manifests/{}", image.digest);
    for path in [tag, by_digest.as_str()] {
        let (status, _, body) = get_full(&edge.http, &edge.url(path), &[]).await;
        assert_ne!(status, 200, "{path} served from a corrupt upstream");
        assert!(body != image.manifest);
        expect_upstream_error(&edge, path, 503, "UNAVAILABLE", FAULTY).await;
    }
    assert!(
        edge.metric(
            "aerugo_edge_upstream_errors_total",
            &[("upstream", FAULTY), ("reason", "digest_mismatch")]
        )
        .await
            >= 2.0
    );
    origin.set_fault(Fault::None);
    let gets = origin.manifest_requests("GET", "team/app", &image.digest);
    expect_manifest(&edge, &by_digest, &image.digest, &image.manifest).await;
    assert_eq!(
        origin.manifest_requests("GET", "team/app", &image.digest),
        gets + 1,
        "the corrupt manifest was not cached"
    );
    expect_manifest(&edge, tag, &image.digest, &image.manifest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_blob_is_never_served_complete_nor_cached() {
    broken_blob_is_never_served_complete_nor_cached(Fault::CorruptBlobs, &["digest_mismatch"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_blob_is_never_served_complete_nor_cached() {
    // The upstream closes the connection short of Content-Length: a broken body.
    broken_blob_is_never_served_complete_nor_cached(
        Fault::TruncateBlobs,
        &["truncated", "unavailable"],
    )
    .await;
}

/// With a cached tag past its TTL and a cached blob, the upstream starts failing (`fault`):
/// the tag is served stale with the stale headers, cached content is still served, and
/// uncached content gets `status`/`code` naming the upstream. Once it recovers, the tag is
/// fresh again.
async fn serves_stale_when_the_upstream_fails(
    fault: Fault,
    status: u16,
    code: &str,
    configure: impl FnOnce(&mut MirrorUpstream),
) {
    let (origin, edge) = edge_on_fault_upstream(|u| {
        u.tag_ttl_seconds = 1;
        configure(u);
    })
    .await;
    let image = TestImage::with_layers("stale-if-error", &[64 << 10]);
    let uncached = TestImage::with_layers("never pulled", &[1000]);
    origin.put_image("team/app", "1.0", &image);
    origin.put_image("team/app", "2.0", &uncached);
    let tag = "/v2/team/app/manifests/1.0";
    let headers = expect_manifest(&edge, tag, &image.digest, &image.manifest).await;
    assert!(
        headers.get("warning").is_none(),
        "fresh content is not stale"
    );
    let layer_url = edge.url(&format!("/v2/team/app/blobs/{}", image.layer_digest(0)));
    fetch(&edge.http, &layer_url, None)
        .await
        .assert_blob(&image.layer_digest(0), 64 << 10);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    origin.set_fault(fault.clone());
    let heads_before = origin.manifest_requests("HEAD", "team/app", "1.0");

    let stale = expect_manifest(&edge, tag, &image.digest, &image.manifest).await;
    assert_eq!(header(&stale, "x-aerugo-cache"), "STALE", "{fault:?}");
    assert_eq!(header(&stale, "warning"), r#"110 - "Response is Stale""#);
    assert_eq!(header(&stale, "content-type"), OCI_MANIFEST);
    if fault != Fault::Down {
        assert!(
            origin.manifest_requests("HEAD", "team/app", "1.0") > heads_before,
            "the tag was revalidated (and that failed) before being served stale"
        );
    }
    let by_digest = format!("/v2/team/app/manifests/{}", image.digest);
    expect_manifest(&edge, &by_digest, &image.digest, &image.manifest).await;
    let blob = fetch(&edge.http, &layer_url, None).await;
    blob.assert_blob(&image.layer_digest(0), 64 << 10);
    assert_eq!(blob.cache(), "HIT");

    expect_upstream_error(&edge, "/v2/team/app/manifests/2.0", status, code, FAULTY).await;
    let uncached_digest = format!("/v2/team/app/manifests/{}", uncached.digest);
    expect_upstream_error(&edge, &uncached_digest, status, code, FAULTY).await;
    let uncached_blob = format!("/v2/team/app/blobs/{}", uncached.layer_digest(0));
    expect_upstream_error(&edge, &uncached_blob, status, code, FAULTY).await;
    assert!(edge.metric("aerugo_edge_stale_serves_total", &[]).await >= 1.0);
    assert!(
        edge.metric("aerugo_edge_upstream_errors_total", &[("upstream", FAULTY)])
            .await
            >= 1.0
    );

    origin.set_fault(Fault::None);
    let fresh = expect_manifest(&edge, tag, &image.digest, &image.manifest).await;
    assert!(fresh.get("warning").is_none(), "recovered: {fresh:?}");
    assert_ne!(
        fresh.get("x-aerugo-cache").map(|v| v.as_bytes()),
        Some(&b"STALE"[..])
    );
    expect_manifest(
        &edge,
        &uncached_digest,
        &uncached.digest,
        &uncached.manifest,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_stale_when_the_upstream_is_down() {
    serves_stale_when_the_upstream_fails(Fault::Down, 503, "UNAVAILABLE", |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_stale_when_the_upstream_rate_limits() {
    let fault = Fault::TooManyRequests {
        retry_after_seconds: 30,
    };
    serves_stale_when_the_upstream_fails(fault, 429, "TOOMANYREQUESTS", |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_stale_when_the_upstream_answers_500() {
    serves_stale_when_the_upstream_fails(Fault::ServerError, 503, "UNAVAILABLE", |_| {}).await;
}

/// An upstream slower than the edge's timeouts counts as failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_stale_when_the_upstream_times_out() {
    serves_stale_when_the_upstream_fails(
        Fault::Delay(Duration::from_secs(5)),
        503,
        "UNAVAILABLE",
        |u| {
            u.client.timeout_seconds = 1.0;
            u.client.read_idle_timeout_seconds = 1.0;
            u.client.retries = 0;
        },
    )
    .await;
}

/// Past the TTL plus the maximum staleness, a tag is no longer served when the upstream fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_tags_expire_after_the_maximum_staleness() {
    let (origin, edge) = edge_on_fault_upstream(|u| {
        u.tag_ttl_seconds = 1;
        u.max_stale_seconds = 1;
    })
    .await;
    let image = TestImage::with_layers("too stale", &[100]);
    origin.put_image("team/app", "1.0", &image);
    let tag = "/v2/team/app/manifests/1.0";
    expect_manifest(&edge, tag, &image.digest, &image.manifest).await;
    origin.set_fault(Fault::ServerError);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    expect_upstream_error(&edge, tag, 503, "UNAVAILABLE", FAULTY).await;
    // The manifest itself, by digest, is immutable and still served.
    let by_digest = format!("/v2/team/app/manifests/{}", image.digest);
    expect_manifest(&edge, &by_digest, &image.digest, &image.manifest).await;
}

/// The upstream requires bearer tokens from its own realm that live one second: pulls keep
/// working across their expiry, and across a token the upstream revoked before its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_keep_working_across_token_expiry() {
    let (origin, edge) = edge_on_fault_upstream(|u| u.tag_ttl_seconds = 1).await;
    let image = TestImage::with_layers("tokens", &[1000, 2000, 3000, 4000]);
    origin.put_image("team/app", "1.0", &image);
    origin.require_token(Duration::from_secs(1), 1);
    let tag = "/v2/team/app/manifests/1.0";
    let blob = |i: usize| edge.url(&format!("/v2/team/app/blobs/{}", image.layer_digest(i)));

    let first = expect_manifest(&edge, tag, &image.digest, &image.manifest).await;
    assert!(first.get("warning").is_none());
    fetch(&edge.http, &blob(0), None)
        .await
        .assert_blob(&image.layer_digest(0), 1000);
    let issued = origin.tokens_issued();
    assert!(issued >= 1, "no token was fetched");

    // Every token the edge holds has expired upstream.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let revalidated = expect_manifest(&edge, tag, &image.digest, &image.manifest).await;
    assert!(
        revalidated.get("warning").is_none(),
        "the tag was served stale instead of revalidated with a new token: {revalidated:?}"
    );
    fetch(&edge.http, &blob(1), None)
        .await
        .assert_blob(&image.layer_digest(1), 2000);
    assert!(origin.tokens_issued() > issued, "no new token after expiry");

    // Long-lived tokens, then the upstream forgets them before they expire: the edge's cached
    // token is refused, and it fetches another.
    origin.require_token(Duration::from_secs(300), 300);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fetch(&edge.http, &blob(2), None)
        .await
        .assert_blob(&image.layer_digest(2), 3000);
    let issued = origin.tokens_issued();
    origin.revoke_tokens();
    fetch(&edge.http, &blob(3), None)
        .await
        .assert_blob(&image.layer_digest(3), 4000);
    assert!(
        origin.tokens_issued() > issued,
        "no new token after revocation"
    );
    let unauthorized = origin.count(
        "GET",
        &format!("/v2/team/app/blobs/{}", image.layer_digest(3)),
    );
    assert_eq!(
        unauthorized, 2,
        "one refused attempt with the revoked token, one with the new"
    );
}

/// Within the TTL a tag is answered from the cache; after it, one `HEAD` revalidates it and
/// the manifest is fetched again only when the tag moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_revalidated_with_head_after_their_ttl() {
    let (origin, edge) = edge_on_fault_upstream(|u| u.tag_ttl_seconds = 1).await;
    let v1 = TestImage::with_layers("tag v1", &[100]);
    let v2 = TestImage::with_layers("tag v2", &[200]);
    origin.put_image("team/app", "latest", &v1);
    let tag = "/v2/team/app/manifests/latest";
    let counts = || {
        (
            origin.manifest_requests("HEAD", "team/app", "latest"),
            origin.manifest_requests("GET", "team/app", "latest"),
        )
    };

    expect_manifest(&edge, tag, &v1.digest, &v1.manifest).await;
    let (heads, gets) = counts();
    assert_eq!(gets, 1, "the first pull fetches the manifest");
    expect_manifest(&edge, tag, &v1.digest, &v1.manifest).await;
    assert_eq!(
        counts(),
        (heads, gets),
        "within the TTL nothing goes upstream"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    expect_manifest(&edge, tag, &v1.digest, &v1.manifest).await;
    assert_eq!(
        counts(),
        (heads + 1, gets),
        "after the TTL: one HEAD, no GET (the digest did not change)"
    );

    let moved = origin.add_manifest(OCI_MANIFEST, &v2.manifest);
    origin.set_tag("team/app", "latest", &moved);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let headers = expect_manifest(&edge, tag, &v2.digest, &v2.manifest).await;
    assert_eq!(
        header(&headers, "docker-content-digest"),
        sha256(&v2.manifest)
    );
    assert_eq!(
        counts(),
        (heads + 2, gets + 1),
        "the tag moved: one HEAD, then one GET"
    );
    let (status, _, _) = get_full(&edge.http, &edge.url(tag), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(counts(), (heads + 2, gets + 1), "fresh again for the TTL");
}

/// The origin redirects blob `GET`s to object storage (another server): the edge follows the
/// redirect itself, streams the bytes to the client (which never sees the redirect) and caches
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_blob_redirects_to_object_storage_itself() {
    const SIZE: u64 = 3 << 20;
    let (origin, edge) = edge_on_fault_upstream(|_| {}).await;
    let store = fault_upstream::start().await;
    let bytes = blob_bytes(3, SIZE);
    let digest = store.add_blob(bytes.clone());
    origin.add_blob(bytes);
    origin.set_fault(Fault::RedirectBlobs { base: store.url() });
    let url = edge.url(&format!("/v2/team/app/blobs/{digest}"));
    let cold = fetch(&edge.http, &url, None).await;
    cold.assert_blob(&digest, SIZE);
    assert_eq!(cold.cache(), "MISS");
    assert_eq!(origin.blob_gets(&digest), 1);
    assert_eq!(store.count("GET", &format!("/objects/{digest}")), 1);
    let warm = fetch(&edge.http, &url, None).await;
    warm.assert_blob(&digest, SIZE);
    assert_eq!(warm.cache(), "HIT");
    assert_eq!(store.count("GET", &format!("/objects/{digest}")), 1);
}
