//! Graceful restart (pingora's upgrade): `aerugo edge --upgrade` takes the listening socket
//! over from the running edge when that one gets SIGQUIT. Across the switch no connection is
//! refused, a download in flight in the old process completes, and the old process exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::{edge_on_fault_upstream_with, fetch};
use crate::support::fault_upstream::Content as _;
use crate::support::fault_upstream::Fault;
use crate::support::image::{ByteGen, Fill};

/// How long pingora's outgoing process keeps accepting after sending its sockets
/// (`CLOSE_TIMEOUT` in pingora-core's server); it then stops accepting and gives in-flight
/// requests the grace period.
const PINGORA_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// One request of the polling client: when it ended, and what went wrong if anything did.
struct Polled {
    ended: Instant,
    failure: Option<String>,
}

/// `GET url` over a fresh connection every time (a refused connection would show) until
/// `stop`, checking each body against `digest`.
async fn poll_blob(url: String, digest: String, stop: Arc<AtomicBool>) -> Vec<Polled> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let mut polls = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let failure = match client.get(&url).send().await {
            Err(e) => Some(format!("request: {e:?}")),
            Ok(response) if response.status() != 200 => {
                Some(format!("status {}", response.status()))
            }
            Ok(response) => match response.bytes().await {
                Err(e) => Some(format!("body: {e:?}")),
                Ok(body) => {
                    let got = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
                    (got != digest).then(|| format!("body hashes to {got}"))
                }
            },
        };
        polls.push(Polled {
            ended: Instant::now(),
            failure,
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    polls
}

/// The switch: a client polls a cached blob over fresh connections the whole time, and a
/// cold 16 MiB download is in flight in the old process, its upstream stalled until after the
/// old process stopped accepting. Then: no poll failed, the new process answered polls after
/// the old one exited, the download completed with the right bytes from the old process's one
/// upstream fetch, and the new process serves that blob from the shared cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_takes_over_the_listener_without_failing_a_request() {
    const SIZE: u64 = 16 << 20;
    const STALL: u64 = 4 << 20;
    const WRITE_STEP: u64 = 256 << 10;
    let (origin, mut edge) = edge_on_fault_upstream_with(
        |u| u.client.read_idle_timeout_seconds = 60.0,
        |e| e.grace_period_seconds = 5,
    )
    .await;
    let small = Bytes::from(ByteGen::new(Fill::Seeded(31), 64 << 10).collect_vec());
    let small_digest = origin.add_blob(small);
    let big_digest = origin.add_blob(Bytes::from(
        ByteGen::new(Fill::Seeded(32), SIZE).collect_vec(),
    ));
    let small_url = edge.url(&format!("/v2/team/app/blobs/{small_digest}"));
    let big_url = edge.url(&format!("/v2/team/app/blobs/{big_digest}"));
    fetch(&edge.http, &small_url, None)
        .await
        .assert_blob(&small_digest, 64 << 10);

    // The long download: the old process fetches the blob and streams what has arrived.
    origin.set_fault(Fault::StallBlobsAfter(STALL as usize));
    let mut download = edge.http.get(&big_url).send().await.expect("GET big blob");
    assert_eq!(download.status(), 200);
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    tokio::time::timeout(Duration::from_secs(30), async {
        while received < STALL - WRITE_STEP {
            let chunk = download.chunk().await.expect("body").expect("more body");
            received += chunk.len() as u64;
            hasher.update(&chunk);
        }
    })
    .await
    .expect("the first bytes of the download arrive");
    let download = tokio::spawn(async move {
        let error = super::drain(&mut download, &mut hasher, &mut received).await;
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        (received, digest, error)
    });

    let stop = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(poll_blob(
        small_url.clone(),
        small_digest.clone(),
        Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;

    edge.start_upgrade().await;
    let quit = Instant::now();
    edge.signal_outgoing("QUIT");
    // Release the upstream once the old process no longer accepts: the download then
    // finishes within its grace period.
    tokio::time::sleep(PINGORA_CLOSE_TIMEOUT + Duration::from_secs(1)).await;
    origin.set_fault(Fault::None);
    let (received, digest, error) = tokio::time::timeout(Duration::from_secs(30), download)
        .await
        .expect("the in-flight download ends")
        .expect("download task");
    let exit = tokio::task::block_in_place(|| edge.wait_outgoing(Duration::from_secs(30)));
    let exited = Instant::now();
    let status = exit.unwrap_or_else(|| {
        panic!(
            "the old edge did not exit within {:?} of SIGQUIT; its log:\n{}",
            exited - quit,
            edge.first_log()
        )
    });
    assert!(
        status.success(),
        "the old edge exited with {status}; its log:\n{}",
        edge.first_log()
    );
    // Only the new process can answer from now on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let polls = poller.await.expect("poller task");

    assert!(
        error.is_none() && received == SIZE && digest == big_digest,
        "the download in flight across the switch: {received} of {SIZE} bytes, {digest}, \
         error {error:?}; old edge's log:\n{}",
        edge.first_log()
    );
    let failures: Vec<&String> = polls.iter().filter_map(|p| p.failure.as_ref()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across the switch: {failures:?}",
        failures.len(),
        polls.len()
    );
    let before = polls.iter().filter(|p| p.ended < quit).count();
    let after = polls.iter().filter(|p| p.ended > exited).count();
    assert!(
        before > 0 && after > 0,
        "the poller should have been answered before the switch ({before}) and by the new \
         process after the old one exited ({after})"
    );
    assert!(
        edge.is_running(),
        "the new edge exited; log:\n{}",
        edge.log()
    );

    // The new process answered the polls, and serves the blob the old one fetched (committed
    // to the shared cache after the new one had built its index) without fetching it again.
    assert!(
        edge.metric("aerugo_edge_cache_hits_total", &[("kind", "blob")])
            .await
            >= 1.0,
        "the new edge served no poll"
    );
    let warm = fetch(&edge.http, &big_url, None).await;
    warm.assert_blob(&big_digest, SIZE);
    assert_eq!(warm.cache(), "HIT");
    assert_eq!(
        origin.blob_gets(&big_digest),
        1,
        "one upstream fetch in all"
    );
}
