//! The upstream client against [`Fake`] (`testkit::fake_registry`, shared with the edge's
//! tests), an in-process registry that can require tokens and misbehave on demand.

use std::io;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;

use super::client::{content_range, parse_http_date, retry_after};
use super::*;
use crate::oci::manifest::{DOCKER_MANIFEST, OCI_MANIFEST, SUPPORTED_MEDIA_TYPES};
use crate::oci::{Algorithm, Reference, RepoName};
use crate::storage::ByteStream;
use crate::testkit::fake_registry::{
    AuthMode, BlobFault, FakeRegistry as Fake, Knobs, SERVICE, basic,
};
use crate::testkit::image::{TestImage, bytes_for};

const NAME: &str = "library/app";

fn repo(name: &str) -> RepoName {
    name.parse().unwrap()
}

fn tag(t: &str) -> Reference {
    t.parse().unwrap()
}

fn by_digest(d: &Digest) -> Reference {
    Reference::Digest(d.clone())
}

fn manifest_body() -> Vec<u8> {
    TestImage::new("upstream client").manifest
}

fn config_for(fake: &Fake) -> UpstreamConfig {
    UpstreamConfig {
        name: "fake".into(),
        url: fake.url(),
        timeout_seconds: 5.0,
        read_idle_timeout_seconds: 2.0,
        retry_base_delay_ms: 5,
        ..UpstreamConfig::default()
    }
}

fn client(fake: &Fake) -> UpstreamClient {
    UpstreamClient::new(&config_for(fake)).unwrap()
}

/// A fake with one tagged manifest and one blob; returns (fake, manifest digest, blob digest, blob).
async fn seeded(knobs: Knobs) -> (Fake, Digest, Digest, Vec<u8>) {
    let fake = Fake::start(knobs).await;
    let manifest = fake.put_manifest(NAME, Some("1.0"), &manifest_body(), OCI_MANIFEST);
    let blob = bytes_for("upstream blob", 300_000);
    let blob_digest = fake.put_blob(&blob);
    (fake, manifest, blob_digest, blob)
}

/// Drains a blob stream: the bytes before the first error, and that error.
async fn drain(mut stream: ByteStream) -> (Vec<u8>, Option<io::Error>) {
    let mut bytes = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(e) => {
                assert!(
                    stream.next().await.is_none(),
                    "nothing may follow the error"
                );
                return (bytes, Some(e));
            }
        }
    }
    (bytes, None)
}

fn v2_requests_with_auth(fake: &Fake) -> Vec<Option<String>> {
    fake.requests()
        .into_iter()
        .map(|r| r.authorization)
        .collect()
}

#[tokio::test]
async fn anonymous_pull_round_trips_and_404_is_none() {
    let (fake, manifest, blob_digest, blob) = seeded(Knobs::default()).await;
    let client = client(&fake);

    let head = client
        .head_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.digest, manifest);
    assert_eq!(head.media_type.as_deref(), Some(OCI_MANIFEST));
    assert_eq!(head.size, Some(manifest_body().len() as u64));

    for reference in [tag("1.0"), by_digest(&manifest)] {
        let got = client
            .get_manifest(&repo(NAME), &reference)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.digest, manifest);
        assert_eq!(got.media_type, OCI_MANIFEST);
        assert_eq!(got.body, Bytes::from(manifest_body()));
    }
    // Every manifest request offered every media type we store.
    let manifest_requests: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/manifests/"))
        .collect();
    assert_eq!(manifest_requests.len(), 3);
    for r in &manifest_requests {
        let accept = r.accept.as_deref().unwrap_or_default();
        for media_type in SUPPORTED_MEDIA_TYPES {
            assert!(accept.contains(media_type), "{accept:?} lacks {media_type}");
        }
    }

    assert_eq!(
        client.head_blob(&repo(NAME), &blob_digest).await.unwrap(),
        Some(BlobHead {
            size: Some(blob.len() as u64)
        })
    );
    let fetched = client
        .get_blob(&repo(NAME), &blob_digest, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fetched.content_length, Some(blob.len() as u64));
    assert!(fetched.range.is_none());
    let (bytes, err) = drain(fetched.stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(bytes, blob);

    let missing = Digest::sha256_of(b"missing");
    assert_eq!(
        client.head_manifest(&repo(NAME), &tag("nope")).await,
        Ok(None)
    );
    assert_eq!(
        client.get_manifest(&repo("other/app"), &tag("1.0")).await,
        Ok(None)
    );
    assert_eq!(client.head_blob(&repo(NAME), &missing).await, Ok(None));
    assert!(
        client
            .get_blob(&repo(NAME), &missing, None)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        v2_requests_with_auth(&fake).iter().all(Option::is_none),
        "anonymous means no Authorization"
    );
}

#[tokio::test]
async fn bearer_dance_fetches_one_token_per_scope_and_reuses_it() {
    let (fake, manifest, blob_digest, _) = seeded(Knobs {
        auth: AuthMode::bearer(Some(300), Duration::from_secs(300)),
        ..Knobs::default()
    })
    .await;
    fake.put_manifest("other/app", Some("2.0"), &manifest_body(), OCI_MANIFEST);
    let client = client(&fake);

    let got = client
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.digest, manifest);
    let tokens = fake.token_requests();
    assert_eq!(tokens.len(), 1);
    let query = &tokens[0].query;
    assert!(query.contains(&format!("service={SERVICE}")), "{query}");
    assert!(
        query.contains("scope=repository%3Alibrary%2Fapp%3Apull"),
        "{query}"
    );
    assert_eq!(
        tokens[0].authorization, None,
        "no credentials configured: anonymous token request"
    );

    // Same repository: the cached token goes out up front, no new challenge, no new token.
    client
        .head_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap()
        .unwrap();
    let (bytes, err) = drain(
        client
            .get_blob(&repo(NAME), &blob_digest, None)
            .await
            .unwrap()
            .unwrap()
            .stream,
    )
    .await;
    assert!(err.is_none() && !bytes.is_empty());
    assert_eq!(fake.token_requests().len(), 1);
    assert_eq!(fake.answered(StatusCode::UNAUTHORIZED), 1);

    // Another repository is another scope: a new token, fetched before the request because
    // the realm is known by now (still a single 401 in total).
    client
        .get_manifest(&repo("other/app"), &tag("2.0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fake.token_requests().len(), 2);
    assert_eq!(fake.answered(StatusCode::UNAUTHORIZED), 1);
    let auths = v2_requests_with_auth(&fake);
    assert!(
        auths[1..]
            .iter()
            .all(|a| a.as_deref().is_some_and(|a| a.starts_with("Bearer "))),
        "{auths:?}"
    );
}

#[tokio::test]
async fn access_token_field_and_missing_expiry_are_accepted() {
    let auth = AuthMode::Bearer {
        advertised_expires_in: None,
        actual_ttl: Duration::from_secs(60),
        credentials: None,
        access_token_field: true,
    };
    let (fake, manifest, _, _) = seeded(Knobs {
        auth,
        ..Knobs::default()
    })
    .await;
    let got = client(&fake)
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.digest, manifest);
}

#[tokio::test]
async fn concurrent_cold_requests_share_one_token_request() {
    let (fake, _, _, _) = seeded(Knobs {
        auth: AuthMode::bearer(Some(300), Duration::from_secs(300)),
        ..Knobs::default()
    })
    .await;
    let client = client(&fake);
    let name = repo(NAME);
    let reference = tag("1.0");
    let results =
        futures_util::future::join_all((0..16).map(|_| client.get_manifest(&name, &reference)))
            .await;
    assert!(
        results.iter().all(|r| matches!(r, Ok(Some(_)))),
        "{results:?}"
    );
    assert_eq!(fake.token_requests().len(), 1);
}

#[tokio::test]
async fn short_lived_tokens_are_renewed_before_they_expire() {
    // Advertised and honoured for 2 s: the client keeps it 1.5 s.
    let (fake, _, _, _) = seeded(Knobs {
        auth: AuthMode::bearer(Some(2), Duration::from_secs(2)),
        ..Knobs::default()
    })
    .await;
    let client = client(&fake);
    client
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap()
        .unwrap();
    client
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fake.token_requests().len(), 1);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    client
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fake.token_requests().len(), 2, "renewed before use");
    assert_eq!(
        fake.answered(StatusCode::UNAUTHORIZED),
        1,
        "renewed up front, without a challenge"
    );
}

#[tokio::test]
async fn rejected_cached_token_is_dropped_and_fetched_again_once() {
    // Advertised for an hour, honoured for 500 ms ("expired early").
    let (fake, _, _, _) = seeded(Knobs {
        auth: AuthMode::bearer(Some(3600), Duration::from_millis(500)),
        ..Knobs::default()
    })
    .await;
    let client = client(&fake);
    client
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    client
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fake.token_requests().len(), 2);

    // Revoked: same story.
    fake.revoke_tokens();
    client
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fake.token_requests().len(), 3);

    // Tokens that never work: one redo, then Unauthorized (no loop).
    fake.knobs().auth = AuthMode::bearer(Some(3600), Duration::ZERO);
    fake.revoke_tokens();
    let before = fake.token_requests().len();
    let err = client
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap_err();
    assert_eq!(err, UpstreamError::Unauthorized);
    assert!(!err.is_transient());
    assert_eq!(fake.token_requests().len() - before, 1);
}

#[tokio::test]
async fn credentials_go_to_the_token_realm_as_basic_auth() {
    let auth = AuthMode::Bearer {
        advertised_expires_in: Some(300),
        actual_ttl: Duration::from_secs(300),
        credentials: Some(("ci-robot".into(), "s3cret:with colon".into())),
        access_token_field: false,
    };
    let (fake, manifest, _, _) = seeded(Knobs {
        auth,
        ..Knobs::default()
    })
    .await;
    let with = |username: &str, password: &str| {
        UpstreamClient::new(&UpstreamConfig {
            username: Some(username.into()),
            password: Some(password.into()),
            ..config_for(&fake)
        })
        .unwrap()
    };

    let got = with("ci-robot", "s3cret:with colon")
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.digest, manifest);
    let expected = basic("ci-robot", "s3cret:with colon");
    assert_eq!(
        fake.token_requests()[0].authorization.as_deref(),
        Some(expected.as_str())
    );
    // The registry itself only ever saw the bearer token, never the password.
    assert!(
        v2_requests_with_auth(&fake)
            .iter()
            .flatten()
            .all(|a| a.starts_with("Bearer "))
    );

    let wrong = with("ci-robot", "guess")
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await;
    assert_eq!(wrong, Err(UpstreamError::Unauthorized));
    let anonymous = client(&fake).get_manifest(&repo(NAME), &tag("1.0")).await;
    assert_eq!(anonymous, Err(UpstreamError::Unauthorized));
}

#[tokio::test]
async fn a_head_as_the_client_passes_its_headers_and_returns_the_refusal() {
    let (fake, _, blob_digest, _) = seeded(Knobs {
        auth: AuthMode::Basic {
            username: "u".into(),
            password: "p".into(),
        },
        ..Knobs::default()
    })
    .await;
    // The edge's own credentials are never added to a client's request.
    let config = UpstreamConfig {
        username: Some("edge".into()),
        password: Some("edge".into()),
        ..config_for(&fake)
    };
    let client = UpstreamClient::new(&config).unwrap();
    let as_client = |authorization: Option<String>| {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert("authorization", value.parse().unwrap());
        }
        headers.insert("x-forwarded-host", "gateway.example".parse().unwrap());
        headers
    };
    let (name, absent) = (repo(NAME), Digest::sha256_of(b"absent"));
    let refused = client.head_blob_as_client(&name, &blob_digest, as_client(None));
    let ClientAnswer::Refused { status, headers } = refused.await.unwrap() else {
        panic!("an anonymous client was let in");
    };
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], r#"Basic realm="fake""#);
    let allowed = client.head_blob_as_client(&name, &blob_digest, as_client(Some(basic("u", "p"))));
    assert_eq!(allowed.await, Ok(ClientAnswer::Allowed));
    assert_eq!(
        v2_requests_with_auth(&fake),
        [None, Some(basic("u", "p"))],
        "one request each, the challenge not answered"
    );
    let missing = client.head_blob_as_client(&name, &absent, as_client(Some(basic("u", "p"))));
    assert!(matches!(
        missing.await,
        Ok(ClientAnswer::Refused { status: 404, .. })
    ));
}

#[tokio::test]
async fn basic_challenge_is_answered_with_configured_credentials() {
    let auth = AuthMode::Basic {
        username: "u".into(),
        password: "p".into(),
    };
    let (fake, manifest, _, _) = seeded(Knobs {
        auth,
        ..Knobs::default()
    })
    .await;
    let config = UpstreamConfig {
        username: Some("u".into()),
        password: Some("p".into()),
        ..config_for(&fake)
    };
    let client = UpstreamClient::new(&config).unwrap();
    assert_eq!(
        client
            .get_manifest(&repo(NAME), &tag("1.0"))
            .await
            .unwrap()
            .unwrap()
            .digest,
        manifest
    );
    client
        .head_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        v2_requests_with_auth(&fake),
        [None, Some(basic("u", "p")), Some(basic("u", "p"))]
    );
    assert!(fake.token_requests().is_empty());

    let anonymous = self::client(&fake)
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await;
    assert_eq!(anonymous, Err(UpstreamError::Unauthorized));
}

#[tokio::test]
async fn malformed_or_unusable_challenges_are_errors() {
    let auth = AuthMode::bearer(Some(300), Duration::from_secs(300));
    let cases = [
        (r#"Bearer realm="http://127.0.0.1:1/token"#, "unterminated"),
        (r#"Bearer service="x""#, "without realm"),
        (r#"Bearer realm="file:///etc/passwd""#, "http(s)"),
    ];
    for (challenge, expected) in cases {
        let (fake, _, _, _) = seeded(Knobs {
            auth: auth.clone(),
            challenge_override: Some(challenge.into()),
            ..Knobs::default()
        })
        .await;
        match client(&fake).get_manifest(&repo(NAME), &tag("1.0")).await {
            Err(UpstreamError::Protocol(msg)) => {
                assert!(msg.contains(expected), "{challenge}: {msg}")
            }
            other => panic!("{challenge}: {other:?}"),
        }
    }
    let (fake, _, _, _) = seeded(Knobs {
        auth,
        challenge_override: Some(r#"Negotiate"#.into()),
        ..Knobs::default()
    })
    .await;
    assert_eq!(
        client(&fake).get_manifest(&repo(NAME), &tag("1.0")).await,
        Err(UpstreamError::Unauthorized)
    );
}

#[tokio::test]
async fn rate_limit_is_surfaced_not_retried() {
    let (fake, _, blob_digest, _) = seeded(Knobs {
        rate_limit: Some("7".into()),
        ..Knobs::default()
    })
    .await;
    let client = client(&fake);
    let err = client
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        UpstreamError::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert!(err.is_transient());
    assert_eq!(fake.requests().len(), 1, "429 is not retried");

    fake.knobs().rate_limit = Some(String::new());
    let err = client
        .get_blob(&repo(NAME), &blob_digest, None)
        .await
        .unwrap_err();
    assert_eq!(err, UpstreamError::RateLimited { retry_after: None });
}

#[test]
fn retry_after_takes_seconds_or_an_http_date() {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("retry-after", " 120 ".parse().unwrap());
    assert_eq!(retry_after(&headers), Some(Duration::from_secs(120)));
    headers.insert(
        "retry-after",
        "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
    );
    assert_eq!(
        retry_after(&headers),
        Some(Duration::ZERO),
        "a date in the past means now"
    );
    headers.insert("retry-after", "soon".parse().unwrap());
    assert_eq!(retry_after(&headers), None);

    let epoch = std::time::SystemTime::UNIX_EPOCH;
    assert_eq!(
        parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(epoch + Duration::from_secs(784_111_777))
    );
    assert_eq!(
        parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
        Some(epoch)
    );
    assert_eq!(
        parse_http_date("Tue, 29 Feb 2028 12:00:00 GMT"),
        Some(epoch + Duration::from_secs(1_835_438_400))
    );
    for bad in [
        "",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:00:00 GMT",
        "Sun, 06 Nov 1994 08:49 GMT",
        "Sun, 06 Nov 1960 08:49:37 GMT",
    ] {
        assert_eq!(parse_http_date(bad), None, "{bad:?}");
    }
}

#[test]
fn content_range_is_parsed_strictly() {
    let parse = |value: &str| {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("content-range", value.parse().unwrap());
        content_range(&headers)
    };
    assert_eq!(
        parse("bytes 0-9/100"),
        Ok(ServedRange {
            range: 0..10,
            total: Some(100)
        })
    );
    assert_eq!(
        parse("bytes 5-5/*"),
        Ok(ServedRange {
            range: 5..6,
            total: None
        })
    );
    let max = u64::MAX;
    for bad in [
        "bytes 9-0/100",
        "bytes 0-100/100",
        "items 0-1/2",
        "bytes 0-1",
        "bytes a-b/c",
        &format!("bytes 0-{max}/*"),
    ] {
        assert!(
            matches!(parse(bad), Err(UpstreamError::Protocol(_))),
            "{bad}"
        );
    }
    assert_eq!(
        parse_http_date("Sun, 06 Nov 99999999999999 08:49:37 GMT"),
        None
    );
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_then_reported() {
    let (fake, manifest, _, _) = seeded(Knobs {
        fail_500: 2,
        ..Knobs::default()
    })
    .await;
    let client = client(&fake);
    let got = client
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.digest, manifest);
    let statuses: Vec<_> = fake.requests().iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses, [500, 500, 200]);

    fake.knobs().fail_500 = 100;
    let before = fake.requests().len();
    let err = client
        .head_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap_err();
    assert_eq!(err, UpstreamError::Status(500));
    assert!(err.is_transient());
    assert_eq!(fake.requests().len() - before, 3, "1 attempt + 2 retries");
}

#[tokio::test]
async fn unreachable_upstream_is_unavailable_after_retries() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = UpstreamConfig {
        url: format!("http://{addr}"),
        retry_base_delay_ms: 5,
        connect_timeout_seconds: 1.0,
        ..UpstreamConfig::default()
    };
    let client = UpstreamClient::new(&config).unwrap();
    let started = Instant::now();
    let err = client
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Unavailable(_)), "{err:?}");
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn manifests_are_verified_against_the_digest_asked_or_claimed() {
    let (fake, manifest, _, _) = seeded(Knobs::default()).await;
    let client = client(&fake);

    // By digest: the upstream serves other bytes under that digest.
    let claimed = Digest::sha256_of(b"what we asked for");
    fake.put_manifest_at(claimed.as_str(), &manifest_body());
    match client.get_manifest(&repo(NAME), &by_digest(&claimed)).await {
        Err(UpstreamError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, claimed);
            assert_eq!(actual, manifest);
        }
        other => panic!("{other:?}"),
    }

    // By tag: the body must hash to the Docker-Content-Digest sent.
    fake.knobs().manifest_digest_header = Some(claimed.to_string());
    let err = client
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, UpstreamError::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());

    // …with the header's algorithm.
    let sha512 = Digest::of(Algorithm::Sha512, &manifest_body());
    fake.knobs().manifest_digest_header = Some(sha512.to_string());
    assert_eq!(
        client
            .get_manifest(&repo(NAME), &tag("1.0"))
            .await
            .unwrap()
            .unwrap()
            .digest,
        sha512
    );

    // No header: the digest is the body's SHA-256.
    fake.knobs().manifest_digest_header = Some(String::new());
    assert_eq!(
        client
            .get_manifest(&repo(NAME), &tag("1.0"))
            .await
            .unwrap()
            .unwrap()
            .digest,
        manifest
    );
    // …but a HEAD by tag without it cannot say anything.
    assert!(matches!(
        client.head_manifest(&repo(NAME), &tag("1.0")).await,
        Err(UpstreamError::Protocol(_))
    ));

    // A garbage header is a protocol error, not a digest.
    fake.knobs().manifest_digest_header = Some("sha256:nothex".into());
    assert!(matches!(
        client.get_manifest(&repo(NAME), &tag("1.0")).await,
        Err(UpstreamError::Protocol(_))
    ));
}

#[tokio::test]
async fn media_type_falls_back_to_the_manifest_when_content_type_is_generic() {
    let (fake, _, _, _) = seeded(Knobs {
        manifest_content_type: Some("application/octet-stream".into()),
        ..Knobs::default()
    })
    .await;
    let got = client(&fake)
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.media_type, OCI_MANIFEST);

    fake.knobs().manifest_content_type = Some(format!("{DOCKER_MANIFEST}; charset=utf-8"));
    let got = client(&fake)
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got.media_type, DOCKER_MANIFEST,
        "a specific Content-Type is taken as sent"
    );
}

#[tokio::test]
async fn oversized_manifests_are_refused() {
    let (fake, _, _, _) = seeded(Knobs::default()).await;
    let config = UpstreamConfig {
        max_manifest_bytes: 64,
        ..config_for(&fake)
    };
    let client = UpstreamClient::new(&config).unwrap();
    let err = client
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap_err();
    assert_eq!(err, UpstreamError::TooLarge { limit: 64 });
    assert_eq!(fake.requests().len(), 1, "not retried");
}

#[tokio::test]
async fn truncated_blob_body_ends_with_an_error() {
    let (fake, _, digest, blob) = seeded(Knobs {
        blob_fault: Some(BlobFault::ShortChunked),
        ..Knobs::default()
    })
    .await;
    let fetched = client(&fake)
        .get_blob(&repo(NAME), &digest, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        fetched.content_length, None,
        "chunked: only the digest can tell"
    );
    let (bytes, err) = drain(fetched.stream).await;
    assert_eq!(bytes.len(), blob.len() / 2);
    let err = err.expect("a short body must not end cleanly");
    assert!(
        matches!(
            UpstreamError::from_io(&err),
            Some(UpstreamError::DigestMismatch { .. })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn blob_connection_dying_mid_body_ends_with_an_error() {
    let (fake, _, digest, blob) = seeded(Knobs {
        blob_fault: Some(BlobFault::ShortWithLength),
        ..Knobs::default()
    })
    .await;
    let fetched = client(&fake)
        .get_blob(&repo(NAME), &digest, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fetched.content_length, Some(blob.len() as u64));
    let (bytes, err) = drain(fetched.stream).await;
    assert!(bytes.len() < blob.len());
    let err = err.expect("a broken body must not end cleanly");
    assert!(
        UpstreamError::from_io(&err).is_some_and(UpstreamError::is_transient),
        "{err:?}"
    );
}

#[tokio::test]
async fn corrupted_blob_byte_ends_with_a_digest_mismatch() {
    let (fake, _, digest, blob) = seeded(Knobs {
        blob_fault: Some(BlobFault::CorruptByte),
        ..Knobs::default()
    })
    .await;
    let fetched = client(&fake)
        .get_blob(&repo(NAME), &digest, None)
        .await
        .unwrap()
        .unwrap();
    let (bytes, err) = drain(fetched.stream).await;
    assert_eq!(
        bytes.len(),
        blob.len(),
        "every byte arrives; the verdict comes last"
    );
    let err = err.expect("a corrupted body must not end cleanly");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    match UpstreamError::from_io(&err) {
        Some(e @ UpstreamError::DigestMismatch { expected, .. }) => {
            assert_eq!(expected, &digest);
            assert!(!e.is_transient());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn ranged_blob_fetches_return_the_slice() {
    let (fake, _, digest, blob) = seeded(Knobs::default()).await;
    let client = client(&fake);
    let fetched = client
        .get_blob(&repo(NAME), &digest, Some(1000..5000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fetched.content_length, Some(4000));
    assert_eq!(
        fetched.range,
        Some(ServedRange {
            range: 1000..5000,
            total: Some(blob.len() as u64)
        })
    );
    let (bytes, err) = drain(fetched.stream).await;
    assert!(err.is_none());
    assert_eq!(bytes, &blob[1000..5000]);

    // Past the end: the upstream serves what there is.
    let len = blob.len() as u64;
    let tail = client
        .get_blob(&repo(NAME), &digest, Some(len - 10..len + 100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        tail.range.as_ref().map(|r| r.range.clone()),
        Some(len - 10..len)
    );
    assert_eq!(drain(tail.stream).await.0, &blob[blob.len() - 10..]);

    assert!(matches!(
        client.get_blob(&repo(NAME), &digest, Some(5..5)).await,
        Err(UpstreamError::Protocol(_))
    ));
    assert_eq!(
        client
            .get_blob(&repo(NAME), &digest, Some(len + 1..len + 2))
            .await
            .unwrap_err(),
        UpstreamError::Status(416)
    );
}

#[tokio::test]
async fn blob_redirects_are_followed_without_our_credentials() {
    let (origin, _, digest, blob) = seeded(Knobs {
        auth: AuthMode::bearer(Some(300), Duration::from_secs(300)),
        ..Knobs::default()
    })
    .await;
    let object_store = Fake::start(Knobs::default()).await;
    object_store.put_blob(&blob);
    origin.knobs().redirect_blobs_to = Some(object_store.url());

    let fetched = client(&origin)
        .get_blob(&repo(NAME), &digest, None)
        .await
        .unwrap()
        .unwrap();
    let (bytes, err) = drain(fetched.stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(bytes, blob);

    let at_origin = origin.requests();
    let last = at_origin.last().unwrap();
    assert_eq!(last.status, StatusCode::TEMPORARY_REDIRECT);
    assert!(
        last.authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer "))
    );
    let at_store = object_store.requests();
    assert_eq!(at_store.len(), 1);
    assert_eq!(at_store[0].method, Method::GET);
    assert_eq!(
        at_store[0].authorization, None,
        "the bearer token must not reach another host"
    );

    // An object store that is down: retried, reported as unavailable, and the error names our
    // URL, not the redirect target (a presigned URL's signature must not reach the logs).
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    origin.knobs().redirect_blobs_to = Some(format!("http://127.0.0.1:{dead_port}"));
    let before = origin.requests().len();
    match client(&origin).get_blob(&repo(NAME), &digest, None).await {
        Err(UpstreamError::Unavailable(msg)) => {
            assert!(!msg.contains(&format!(":{dead_port}")), "{msg}");
            assert!(msg.contains(&origin.url()), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    let redirects = origin.requests()[before..]
        .iter()
        .filter(|r| r.status == StatusCode::TEMPORARY_REDIRECT)
        .count();
    assert_eq!(redirects, 3, "1 attempt + 2 retries");
}

#[tokio::test]
async fn stalled_blob_body_times_out_but_a_slow_steady_one_does_not() {
    let (fake, _, digest, blob) = seeded(Knobs {
        blob_fault: Some(BlobFault::Slow),
        ..Knobs::default()
    })
    .await;
    // The slow body takes ~0.8 s, longer than the request timeout: blobs are only held to the
    // read-idle timeout.
    let config = UpstreamConfig {
        timeout_seconds: 0.3,
        read_idle_timeout_seconds: 0.5,
        ..config_for(&fake)
    };
    let client = UpstreamClient::new(&config).unwrap();
    let fetched = client
        .get_blob(&repo(NAME), &digest, None)
        .await
        .unwrap()
        .unwrap();
    let (bytes, err) = drain(fetched.stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(bytes, blob);

    fake.knobs().blob_fault = Some(BlobFault::StallAfter(blob.len() / 2));
    let started = Instant::now();
    let fetched = client
        .get_blob(&repo(NAME), &digest, None)
        .await
        .unwrap()
        .unwrap();
    let (bytes, err) = drain(fetched.stream).await;
    assert_eq!(bytes.len(), blob.len() / 2);
    let err = err.expect("a stalled body must end with an error");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn client_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let client = UpstreamClient::new(&UpstreamConfig::default()).unwrap();
    let (name, reference, digest) = (repo(NAME), tag("1"), Digest::sha256_of(b""));
    assert_send(&client.head_manifest(&name, &reference));
    assert_send(&client.get_manifest(&name, &reference));
    assert_send(&client.head_blob(&name, &digest));
    assert_send(&client.get_blob(&name, &digest, None));
}

#[test]
fn config_has_defaults_and_is_validated() {
    let config: UpstreamConfig = toml::from_str("").unwrap();
    assert_eq!(config.url, "https://registry-1.docker.io");
    assert_eq!(config.max_manifest_bytes, 4 << 20);
    let config: UpstreamConfig =
        toml::from_str("name = \"ghcr\"\nurl = \"https://ghcr.io/\"\ntimeout_seconds = 2\npassword = \"hunter2\"\nusername = \"me\"")
            .unwrap();
    assert_eq!(config.timeout_seconds, 2.0);
    assert!(!format!("{config:?}").contains("hunter2"));
    assert!(toml::from_str::<UpstreamConfig>("nmae = \"typo\"").is_err());
    let client = UpstreamClient::new(&config).unwrap();
    assert_eq!(client.name(), "ghcr");

    let bad = [
        UpstreamConfig {
            url: "ftp://example.com".into(),
            ..UpstreamConfig::default()
        },
        UpstreamConfig {
            url: "not a url".into(),
            ..UpstreamConfig::default()
        },
        UpstreamConfig {
            url: "https://example.com/?q=1".into(),
            ..UpstreamConfig::default()
        },
        UpstreamConfig {
            name: String::new(),
            ..UpstreamConfig::default()
        },
        UpstreamConfig {
            timeout_seconds: 0.0,
            ..UpstreamConfig::default()
        },
        UpstreamConfig {
            connect_timeout_seconds: -1.0,
            ..UpstreamConfig::default()
        },
        UpstreamConfig {
            read_idle_timeout_seconds: f64::NAN,
            ..UpstreamConfig::default()
        },
        UpstreamConfig {
            password: Some("x".into()),
            ..UpstreamConfig::default()
        },
    ];
    for config in bad {
        assert!(
            matches!(UpstreamClient::new(&config), Err(UpstreamError::Config(_))),
            "{config:?}"
        );
    }
}

#[tokio::test]
async fn trailing_slash_on_the_base_url_is_ignored() {
    let (fake, manifest, _, _) = seeded(Knobs::default()).await;
    // A trailing slash on the base must not produce `//v2`.
    let config = UpstreamConfig {
        url: format!("{}/", fake.url()),
        ..config_for(&fake)
    };
    let got = UpstreamClient::new(&config)
        .unwrap()
        .get_manifest(&repo(NAME), &tag("1.0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.digest, manifest);
    assert_eq!(fake.requests()[0].path, "/v2/library/app/manifests/1.0");
}
