//! A cached digest goes out only where the origin shows it: under the repository (and, in a
//! gateway, to the client) the origin confirmed it for, recently; while the origin is down,
//! only on a confirmation within the stale window.

use std::time::Duration;

use super::{MANIFEST_ACCEPT, eventually, expect_manifest, fetch};
use crate::distribution::{expect_error, expect_status, header, header_values};
use crate::support::edge::{CoreProcess, EdgeProcess, upstream};
use crate::support::fault_upstream::{self, Content as _, Fault, Knobs};
use crate::support::image::TestImage;
use crate::support::seed::Seeder;

use aerugo::testkit::fake_registry::AuthMode;

/// A blob `GET` and `HEAD` through the edge, both expected to be the OCI error `code`.
async fn expect_blob_error(edge: &EdgeProcess, path: &str, status: u16, code: &str) {
    expect_error(edge.get(path).await, status, code).await;
    let head = edge
        .http
        .head(edge.url(path))
        .send()
        .await
        .expect("HEAD through the edge");
    assert_eq!(head.status(), status, "HEAD {path}");
}

/// A gateway in front of one core.
async fn gateway(core: &CoreProcess, confirm_ttl_seconds: u64) -> EdgeProcess {
    let core = core.addr.to_string();
    EdgeProcess::start(|e| {
        e.gateway.cores = vec![core];
        e.gateway.health_check_interval_seconds = 1;
        e.confirm_ttl_seconds = confirm_ttl_seconds;
    })
    .await
}

/// A blob pulled through the gateway for `a/x` is not served under `b/y`, which never had it,
/// and no longer for `a/x` once the core deleted it and the confirmation's TTL passed: the
/// gateway answers as the core does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_a_cached_blob_only_where_the_core_still_shows_it() {
    let core = CoreProcess::start().await;
    let image = TestImage::with_layers("confirmed by the core", &[64 << 10]);
    Seeder::new(&core.url(""))
        .push_image("a/x", "1.0", &image)
        .await;
    let edge = gateway(&core, 1).await;
    expect_manifest(
        &edge,
        "/v2/a/x/manifests/1.0",
        &image.digest,
        &image.manifest,
    )
    .await;
    let layer = image.layer_digest(0);
    let own = format!("/v2/a/x/blobs/{layer}");
    for expected in ["MISS", "HIT"] {
        let pulled = fetch(&edge.http, &edge.url(&own), None).await;
        pulled.assert_blob(&layer, 64 << 10);
        assert_eq!(pulled.cache(), expected);
    }

    let elsewhere = format!("/v2/b/y/blobs/{layer}");
    expect_error(
        reqwest::get(core.url(&elsewhere)).await.expect("core"),
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    expect_blob_error(&edge, &elsewhere, 404, "BLOB_UNKNOWN").await;

    let deleted = edge
        .http
        .delete(core.url(&own))
        .send()
        .await
        .expect("DELETE on the core");
    expect_status(deleted, 202).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    expect_blob_error(&edge, &own, 404, "BLOB_UNKNOWN").await;
    assert!(
        edge.metric("aerugo_edge_confirmations_total", &[("outcome", "refused")])
            .await
            >= 4.0,
        "{}",
        edge.metrics().await
    );
}

/// With the core down, a blob confirmed earlier (past its TTL, within the stale window) is
/// still served; the same cached digest under a repository it was never confirmed for, and an
/// uncached blob, get `503 UNAVAILABLE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_stale_confirmations_only_while_the_core_is_down() {
    let mut core = CoreProcess::start().await;
    let image = TestImage::with_layers("stale confirmation", &[32 << 10, 1000]);
    let seeder = Seeder::new(&core.url(""));
    seeder.push_image("a/x", "1.0", &image).await;
    seeder.push_image("b/y", "1.0", &image).await;
    let edge = gateway(&core, 1).await;
    let layer = image.layer_digest(0);
    let confirmed = format!("/v2/a/x/blobs/{layer}");
    let never_confirmed = format!("/v2/b/y/blobs/{layer}");
    fetch(&edge.http, &edge.url(&confirmed), None)
        .await
        .assert_blob(&layer, 32 << 10);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    core.kill9();
    for _ in 0..2 {
        let stale = fetch(&edge.http, &edge.url(&confirmed), None).await;
        stale.assert_blob(&layer, 32 << 10);
        assert_eq!(stale.cache(), "HIT");
        expect_blob_error(&edge, &never_confirmed, 503, "UNAVAILABLE").await;
        let uncached = format!("/v2/a/x/blobs/{}", image.layer_digest(1));
        expect_blob_error(&edge, &uncached, 503, "UNAVAILABLE").await;
        // Once without the health check noticing, once with no healthy core left.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    assert!(
        edge.metric("aerugo_edge_confirmations_total", &[("outcome", "stale")])
            .await
            >= 2.0
    );
}

/// A core that wants credentials (the fake registry's bearer tokens): the client's
/// `Authorization` is what the gateway asks with, the core's challenge reaches a client without
/// one, and a blob cached for one caller is refused to another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_asks_the_core_as_the_client_and_relays_its_challenge() {
    let core = fault_upstream::FaultUpstream::start(Knobs {
        auth: AuthMode::bearer(Some(300), Duration::from_secs(300)),
        ..Knobs::default()
    })
    .await;
    let digest = core.add_blob(vec![7u8; 5000]);
    let edge = EdgeProcess::start(|e| e.gateway.cores = vec![core.addr().to_string()]).await;
    let path = format!("/v2/team/private/blobs/{digest}");

    let anonymous = edge.get(&path).await;
    let (headers, _) = expect_error(anonymous, 401, "UNAUTHORIZED").await;
    let challenge = header(&headers, "www-authenticate");
    assert!(
        challenge.starts_with("Bearer realm=")
            && challenge.contains("repository:team/private:pull"),
        "{challenge}"
    );
    assert_eq!(
        header_values(&headers, "docker-distribution-api-version"),
        ["registry/2.0"]
    );

    let token: serde_json::Value = reqwest::get(format!("{}/token?scope=x", core.url()))
        .await
        .expect("token")
        .json()
        .await
        .expect("token JSON");
    let bearer = format!("Bearer {}", token["token"].as_str().expect("token"));
    for expected in ["MISS", "HIT"] {
        let response = edge
            .http
            .get(edge.url(&path))
            .header("authorization", &bearer)
            .send()
            .await
            .expect("GET with a token");
        assert_eq!(response.status(), 200);
        assert_eq!(header(response.headers(), "x-aerugo-cache"), expected);
        assert_eq!(response.bytes().await.expect("body").len(), 5000);
    }
    let asked_with_the_token = core
        .requests()
        .iter()
        .filter(|seen| seen.method == "HEAD" && seen.authorization.as_deref() == Some(&bearer))
        .count();
    assert_eq!(asked_with_the_token, 1, "{:?}", core.requests());

    // Cached now, and still nobody else's.
    expect_error(edge.get(&path).await, 401, "UNAUTHORIZED").await;
    let forged = edge
        .http
        .get(edge.url(&path))
        .header("authorization", "Bearer forged")
        .send()
        .await
        .expect("GET with a forged token");
    expect_error(forged, 401, "UNAUTHORIZED").await;
}

/// Two upstreams: a blob (and a manifest) cached from one is not served as the other's until
/// that one shows it too, and then without fetching it again; with the upstream down, what it
/// confirmed earlier is served, within the stale window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_serves_a_cached_digest_only_for_the_upstream_that_has_it() {
    let (one, two) = tokio::join!(fault_upstream::start(), fault_upstream::start());
    let image = TestImage::with_layers("only upstream one has it", &[20_000]);
    one.put_image("team/app", "1.0", &image);
    let edge = EdgeProcess::start(|e| {
        e.upstreams = vec![upstream("one", &one.url()), upstream("two", &two.url())];
        e.confirm_ttl_seconds = 1;
    })
    .await;
    let layer = image.layer_digest(0);
    expect_manifest(
        &edge,
        "/v2/one/team/app/manifests/1.0",
        &image.digest,
        &image.manifest,
    )
    .await;
    let from_one = format!("/v2/one/team/app/blobs/{layer}");
    fetch(&edge.http, &edge.url(&from_one), None)
        .await
        .assert_blob(&layer, 20_000);

    let from_two = format!("/v2/two/team/app/blobs/{layer}");
    expect_blob_error(&edge, &from_two, 404, "BLOB_UNKNOWN").await;
    let manifest_from_two = format!("/v2/two/team/app/manifests/{}", image.digest);
    let response = edge
        .http
        .get(edge.url(&manifest_from_two))
        .header("accept", MANIFEST_ACCEPT)
        .send()
        .await
        .expect("GET");
    expect_error(response, 404, "MANIFEST_UNKNOWN").await;

    two.put_image("team/app", "1.0", &image);
    let confirmed = fetch(&edge.http, &edge.url(&from_two), None).await;
    confirmed.assert_blob(&layer, 20_000);
    assert_eq!(confirmed.cache(), "HIT");
    assert_eq!(
        two.blob_gets(&layer),
        0,
        "a confirmed cached blob is not fetched again"
    );
    expect_manifest(&edge, &manifest_from_two, &image.digest, &image.manifest).await;

    tokio::time::sleep(Duration::from_millis(1100)).await;
    one.set_fault(Fault::Down);
    let stale = fetch(&edge.http, &edge.url(&from_one), None).await;
    stale.assert_blob(&layer, 20_000);
    assert!(
        edge.metric("aerugo_edge_confirmations_total", &[("outcome", "stale")])
            .await
            >= 1.0
    );
}

/// A client joining a fill started for another upstream gets no byte of it: it waits for the
/// fill like any joiner, then is refused because its own upstream does not have the blob; the
/// fill's own client gets the blob, and the origin saw one fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_fill_joiners_of_another_upstream_are_confirmed_by_their_own() {
    let (one, two) = tokio::join!(fault_upstream::start(), fault_upstream::start());
    let digest = one.add_blob(vec![3u8; 300_000]);
    let edge = EdgeProcess::start(|e| {
        e.upstreams = vec![upstream("one", &one.url()), upstream("two", &two.url())];
    })
    .await;
    one.hold_blobs();
    let get = |path: String| {
        let (client, url) = (edge.http.clone(), edge.url(&path));
        tokio::spawn(async move { fetch(&client, &url, None).await })
    };
    let starter = get(format!("/v2/one/team/app/blobs/{digest}"));
    assert!(
        eventually(Duration::from_secs(30), || async {
            one.blob_gets(&digest) == 1
        })
        .await
    );
    let joiner = get(format!("/v2/two/team/app/blobs/{digest}"));
    let joined = eventually(Duration::from_secs(30), || async {
        edge.metric("aerugo_edge_coalesced_waiters_total", &[])
            .await
            >= 1.0
    })
    .await;
    assert!(joined, "the second client never joined the fill");
    one.release_blobs();
    starter
        .await
        .expect("starter")
        .assert_blob(&digest, 300_000);
    let refused = joiner.await.expect("joiner");
    assert_eq!(refused.status, 404, "{refused:?}");
    assert_eq!(header(&refused.headers, "content-type"), "application/json");
    assert_eq!(one.blob_gets(&digest), 1);
}
