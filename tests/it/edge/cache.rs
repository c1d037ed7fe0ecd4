//! The edge's disk cache: the size cap, restarts with a warm cache, `Range` requests.

use std::time::Duration;

use bytes::Bytes;

use super::{
    FAULTY, edge_on_fault_upstream, edge_on_fault_upstream_with, eventually, expect_manifest,
    expect_upstream_error, fetch,
};
use crate::distribution::{expect_error, header};
use crate::support::fault_upstream::Content as _;
use crate::support::image::{TestImage, bytes_for, sha256};

/// A 3 MiB cap and six 1 MiB blobs: entries are evicted, the cache stays under its cap on disk
/// and in its own accounting, and every pull — first or repeated, hit or miss — returns the
/// right bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_cap_evicts_and_every_pull_still_returns_the_right_bytes() {
    const CAP: u64 = 3 << 20;
    const SIZE: usize = 1 << 20;
    let (origin, edge) = edge_on_fault_upstream_with(|_| {}, |e| e.cache_max_bytes = CAP).await;
    let digests: Vec<String> = (0..6)
        .map(|i| origin.add_blob(bytes_for(&format!("capped blob {i}"), SIZE)))
        .collect();
    // A fill answers its client before it commits to the cache and evicts: until the last one
    // is committed the disk may hold one blob more, and the gauge lag behind the disk.
    let committed = || async {
        let mut gauge = 0.0;
        for _ in 0..100 {
            gauge = edge.metric("aerugo_edge_disk_usage_bytes", &[]).await;
            if gauge as u64 == edge.disk_usage() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        gauge
    };
    for round in 0..2 {
        for digest in &digests {
            let url = edge.url(&format!("/v2/team/app/blobs/{digest}"));
            let got = fetch(&edge.http, &url, None).await;
            got.assert_blob(digest, SIZE as u64);
            let usage = edge.disk_usage();
            assert!(
                usage <= CAP,
                "round {round}: {usage} bytes on disk, above the {CAP}-byte cap"
            );
        }
        // Round two starts on the cache round one left (its first blobs evicted).
        committed().await;
    }
    let evictions = edge.metric("aerugo_edge_evictions_total", &[]).await;
    assert!(
        evictions > 0.0,
        "no eviction with 6 MiB through a 3 MiB cache"
    );
    let gauge = committed().await;
    assert!(
        gauge > 0.0 && gauge <= CAP as f64,
        "disk usage gauge: {gauge}"
    );
    assert_eq!(
        gauge as u64,
        edge.disk_usage(),
        "the gauge matches the disk once the last fill is committed"
    );
    // The first blob was evicted before its second pull, which went upstream again.
    assert_eq!(origin.blob_gets(&digests[0]), 2);
    // The last one is still cached.
    let last = fetch(
        &edge.http,
        &edge.url(&format!("/v2/team/app/blobs/{}", digests[5])),
        None,
    )
    .await;
    last.assert_blob(&digests[5], SIZE as u64);
    assert_eq!(last.cache(), "HIT");

    // A blob larger than the whole cache is served, never kept, and evicts nothing.
    let huge = origin.add_blob(bytes_for("larger than the cache", 4 << 20));
    let url = edge.url(&format!("/v2/team/app/blobs/{huge}"));
    for _ in 0..2 {
        let got = fetch(&edge.http, &url, None).await;
        got.assert_blob(&huge, 4 << 20);
        assert_eq!(got.cache(), "MISS");
        // The fill releases its clients once the bytes are verified and leaves the in-flight
        // map after its (here: refused) cache commit; a request before that would join it.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert_eq!(origin.blob_gets(&huge), 2);
    assert!(edge.disk_usage() <= CAP);
    let still = fetch(
        &edge.http,
        &edge.url(&format!("/v2/team/app/blobs/{}", digests[5])),
        None,
    )
    .await;
    assert_eq!(
        still.cache(),
        "HIT",
        "the too-large blob evicted a cached one"
    );
}

/// Pull, stop the edge (SIGTERM), stop the upstream, start the edge on the same cache: blobs,
/// the manifest by digest and the tag are served from the cache with no upstream at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_cache_survives_a_restart_without_the_upstream() {
    let (origin, mut edge) = edge_on_fault_upstream(|_| {}).await;
    let image = TestImage::with_layers("warm restart", &[2 << 20, 1000]);
    let cold = TestImage::with_layers("never pulled before the restart", &[1000]);
    origin.put_image("team/app", "1.0", &image);
    origin.put_image("team/app", "cold", &cold);
    let tag = "/v2/team/app/manifests/1.0";
    let by_digest = format!("/v2/team/app/manifests/{}", image.digest);
    expect_manifest(&edge, tag, &image.digest, &image.manifest).await;
    for blob in image.blobs() {
        let url = edge.url(&format!("/v2/team/app/blobs/{}", blob.digest));
        fetch(&edge.http, &url, None)
            .await
            .assert_blob(&blob.digest, blob.size);
    }

    // grace_period_seconds = 0, graceful_shutdown_timeout_seconds = 1 (pingora's own default
    // would wait 300 s).
    let took = edge.stop();
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    drop(origin);
    edge.restart().await;

    for blob in image.blobs() {
        let digest = &blob.digest;
        let url = edge.url(&format!("/v2/team/app/blobs/{digest}"));
        let warm = fetch(&edge.http, &url, None).await;
        warm.assert_blob(digest, blob.size);
        assert_eq!(warm.cache(), "HIT", "{digest} after the restart");
    }
    expect_manifest(&edge, &by_digest, &image.digest, &image.manifest).await;
    expect_manifest(&edge, tag, &image.digest, &image.manifest).await;
    assert_eq!(
        edge.metric("aerugo_edge_upstream_fetches_total", &[]).await,
        0.0,
        "the restarted edge asked the (gone) upstream; metrics:\n{}",
        edge.metrics().await
    );
    let blobs = image.blobs().len() as f64;
    assert_eq!(
        edge.metric("aerugo_edge_cache_hits_total", &[("kind", "blob")])
            .await,
        blobs
    );
    // What was never cached names the missing upstream.
    expect_upstream_error(
        &edge,
        "/v2/team/app/manifests/cold",
        503,
        "UNAVAILABLE",
        FAULTY,
    )
    .await;
    let cold_blob = format!("/v2/team/app/blobs/{}", cold.layer_digest(0));
    expect_upstream_error(&edge, &cold_blob, 503, "UNAVAILABLE", FAULTY).await;
}

/// `Range` requests: while the blob is still being fetched (they join the one fill), and from
/// the cache afterwards — `206` with the right bytes and `Content-Range`, `416` past the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_requests_on_in_flight_and_cached_blobs() {
    const SIZE: usize = 3 << 20;
    let (origin, edge) = edge_on_fault_upstream(|_| {}).await;
    let bytes = Bytes::from(bytes_for("ranged blob", SIZE));
    let digest = origin.add_blob(bytes.clone());
    let url = edge.url(&format!("/v2/team/app/blobs/{digest}"));
    let ranges: [(&str, std::ops::Range<usize>); 5] = [
        ("bytes=0-99", 0..100),
        ("bytes=1048576-2097151", 1 << 20..2 << 20),
        ("bytes=-10", SIZE - 10..SIZE),
        ("bytes=3000000-", 3_000_000..SIZE),
        ("bytes=0-0", 0..1),
    ];

    async fn ranged(
        client: reqwest::Client,
        url: String,
        range: String,
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let response = client
            .get(&url)
            .header("range", &range)
            .send()
            .await
            .expect("ranged GET");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (
            status,
            headers,
            response.bytes().await.expect("body").to_vec(),
        )
    }

    let check = |when: &str,
                 (status, headers, body): &(u16, reqwest::header::HeaderMap, Vec<u8>),
                 range: &str,
                 expected: &std::ops::Range<usize>,
                 cache: &str| {
        assert_eq!(*status, 206, "{when} {range}: {headers:?}");
        assert_eq!(
            header(headers, "content-range"),
            format!("bytes {}-{}/{SIZE}", expected.start, expected.end - 1),
            "{when} {range}"
        );
        assert_eq!(
            header(headers, "content-length"),
            expected.len().to_string(),
            "{when} {range}"
        );
        assert!(
            body[..] == bytes[expected.clone()],
            "{when} {range}: wrong bytes"
        );
        assert_eq!(header(headers, "x-aerugo-cache"), cache, "{when} {range}");
    };

    // In flight: every request joins the fill the first one started, held upstream until all
    // of them (and one full GET) are waiting.
    origin.hold_blobs();
    let tasks: Vec<_> = ranges
        .iter()
        .map(|(range, _)| tokio::spawn(ranged(edge.http.clone(), url.clone(), (*range).to_owned())))
        .collect();
    let full = {
        let (client, url) = (edge.http.clone(), url.clone());
        tokio::spawn(async move { fetch(&client, &url, None).await })
    };
    let waiting = eventually(Duration::from_secs(30), || async {
        edge.metric("aerugo_edge_coalesced_waiters_total", &[])
            .await
            >= ranges.len() as f64
    })
    .await;
    assert!(waiting, "the ranged requests did not join the fill");
    origin.release_blobs();
    for (task, (range, expected)) in tasks.into_iter().zip(&ranges) {
        check(
            "in flight",
            &task.await.expect("task"),
            range,
            expected,
            "MISS",
        );
    }
    full.await.expect("task").assert_blob(&digest, SIZE as u64);
    assert_eq!(origin.blob_gets(&digest), 1);

    // Cached.
    for (range, expected) in &ranges {
        let got = ranged(edge.http.clone(), url.clone(), (*range).to_owned()).await;
        check("cached", &got, range, expected, "HIT");
    }
    let response = edge
        .http
        .get(&url)
        .header("range", format!("bytes={SIZE}-"))
        .send()
        .await
        .expect("GET");
    let (headers, _) = expect_error(response, 416, "BLOB_UPLOAD_INVALID").await;
    assert_eq!(header(&headers, "content-range"), format!("bytes */{SIZE}"));
    assert_eq!(origin.blob_gets(&digest), 1);
    assert_eq!(sha256(&bytes), digest);
}

/// The same `Range` edge cases as the core, through a fill and from the cache: the empty
/// blob's `0-0` is `416 bytes */0` (it was a `206` announcing one byte and sending none), and
/// a suffix longer than the blob is the whole blob, not a `416`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_on_the_empty_blob_and_suffixes_longer_than_the_blob() {
    let (origin, edge) = edge_on_fault_upstream(|_| {}).await;
    let empty = edge.url(&format!(
        "/v2/team/app/blobs/{}",
        origin.add_blob(Bytes::new())
    ));
    let bytes = Bytes::from(bytes_for("ten bytes", 10));
    let ten = edge.url(&format!(
        "/v2/team/app/blobs/{}",
        origin.add_blob(bytes.clone())
    ));
    for when in ["first", "again"] {
        for range in ["bytes=0-0", "bytes=0-", "bytes=0-100"] {
            let got = fetch(&edge.http, &empty, Some(range)).await;
            assert_eq!(got.status, 416, "{when} {range}: {got:?}");
            assert_eq!(
                header(&got.headers, "content-range"),
                "bytes */0",
                "{when} {range}"
            );
        }
        let got = fetch(&edge.http, &ten, Some("bytes=-11")).await;
        assert_eq!(got.status, 206, "{when}: {got:?}");
        assert_eq!(header(&got.headers, "content-range"), "bytes 0-9/10");
        assert_eq!(
            (got.received, got.digest.as_str()),
            (10, sha256(&bytes).as_str())
        );
    }
}
