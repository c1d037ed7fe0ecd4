//! Tokens at the gateway: in front of a closed core, the gateway checks a client's bearer token
//! against the core's published keys (`/auth/jwks`, fetched, kept in memory and on disk), serves
//! a cached private blob only to a token granting pull on its repository whose subject the core
//! confirmed, also while the core is down, and fills the cache with its own service account.
//!
//! The core is an `aerugo serve` process (so it can be killed); its accounts are made through
//! its own account store once the images are pushed (the first user closes the registry).

use std::sync::Arc;
use std::time::Duration;

use aerugo::accounts::{AccountName, AccountStore, AuditQuery, NewRobot, Outcome, RobotScope};
use aerugo::auth::token::{self, TokenParties};
use aerugo::auth::{KeyRing, secret};
use aerugo::config::Config;
use aerugo::oci::scope::{AccessEntry, Action, Actions, ResourceScope};
use aerugo::upstream::challenge;
use reqwest::header::HeaderMap;

use super::{eventually, get_full};
use crate::distribution::header;
use crate::support::edge::{CoreProcess, EdgeProcess};
use crate::support::image::{TestImage, sha256};
use crate::support::seed::Seeder;

const PASSWORD: &str = "secret-password";

fn name(s: &str) -> AccountName {
    s.parse().expect("account name")
}

/// A closed core: acme/app and alice/private pushed (private), users alice (owner of acme)
/// and bob (in no organisation), and the robot acme+edge that may pull acme/*.
struct ClosedCore {
    core: CoreProcess,
    accounts: Arc<dyn AccountStore>,
    app: TestImage,
    own: TestImage,
    robot_secret: String,
}

impl ClosedCore {
    async fn start() -> ClosedCore {
        let core = CoreProcess::start().await;
        let (app, own) = (
            TestImage::with_layers("acme's private app", &[40_000, 30_000]),
            TestImage::with_layers("alice's own", &[25_000]),
        );
        let seeder = Seeder::new(&core.url(""));
        seeder.push_image("acme/app", "1.0", &app).await;
        seeder.push_image("alice/private", "1.0", &own).await;
        let mut config = Config::default();
        config.server.data_dir = core.work_dir().join("data");
        let accounts = aerugo::app::open_accounts(&config)
            .await
            .expect("the core's account store");
        for user in ["alice", "bob"] {
            aerugo::app::create_user(accounts.as_ref(), &name(user), PASSWORD, false)
                .await
                .expect("user");
        }
        accounts
            .create_org(&name("acme"), &name("alice"))
            .await
            .expect("org");
        let robot_secret = secret::random_token();
        accounts
            .create_robot(&NewRobot {
                namespace: name("acme"),
                name: name("edge"),
                secret_hash: secret::digest(&robot_secret),
                scopes: vec![RobotScope {
                    repository: "acme/*".into(),
                    actions: Actions::from([Action::Pull]),
                }],
                expires_at: None,
            })
            .await
            .expect("robot");
        let closed = eventually(Duration::from_secs(10), || async {
            reqwest::get(core.url("/v2/"))
                .await
                .is_ok_and(|r| r.status() == 401)
        })
        .await;
        assert!(closed, "the core did not close after its first user");
        ClosedCore {
            core,
            accounts,
            app,
            own,
            robot_secret,
        }
    }

    /// A gateway in front of it, filling as acme+edge, confirmations fresh for one second.
    async fn gateway(&self) -> EdgeProcess {
        let (core, secret) = (self.core.addr.to_string(), self.robot_secret.clone());
        EdgeProcess::start(|e| {
            e.gateway.cores = vec![core];
            e.gateway.health_check_interval_seconds = 1;
            e.gateway.service_username = Some("acme+edge".into());
            e.gateway.service_password = Some(secret);
            e.confirm_ttl_seconds = 1;
        })
        .await
    }

    /// A token of the core's own key for alice with pull on acme/app, issued an hour ago.
    async fn expired_token(&self) -> String {
        let stored = self.accounts.signing_keys().await.expect("signing keys");
        let ring = KeyRing::from_stored(&stored).expect("the core's key ring");
        let parties = TokenParties {
            issuer: "aerugo".into(),
            service: "aerugo".into(),
        };
        let access = vec![AccessEntry::from(&ResourceScope::repository(
            "acme/app",
            [Action::Pull],
        ))];
        let issued = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64
            - 3600;
        token::issue(&ring, &parties, "alice", access, issued, 300).expect("token")
    }
}

/// `GET path` through the edge with `authorization` (or none).
async fn get_as(edge: &EdgeProcess, path: &str, authorization: Option<&str>) -> Pulled {
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| ("authorization", value))
        .into_iter()
        .collect();
    let (status, headers, body) = get_full(&edge.http, &edge.url(path), &headers).await;
    Pulled {
        status,
        headers,
        body,
    }
}

struct Pulled {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Pulled {
    fn assert_blob(&self, digest: &str, cache: &str) {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        assert_eq!(sha256(&self.body), digest);
        assert_eq!(header(&self.headers, "x-aerugo-cache"), cache);
    }

    /// Asserts an OCI error `status`/`code` (no blob bytes); its `WWW-Authenticate`, if any.
    fn assert_refused(&self, status: u16, code: &str) -> Option<String> {
        let text = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status, status, "{text}");
        let error: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("an error envelope, not {text:?}: {e}"));
        assert_eq!(error["errors"][0]["code"], code, "{text}");
        self.headers
            .get("www-authenticate")
            .map(|v| v.to_str().expect("challenge text").to_owned())
    }
}

/// Asserts a bearer challenge naming the gateway's token endpoint, the service and `scope`.
fn assert_challenge(challenge: Option<String>, edge: &EdgeProcess, scope: &str) {
    let challenge = challenge.expect("a WWW-Authenticate challenge");
    let parsed = challenge::parse(&challenge).expect("a challenge");
    let bearer = parsed
        .iter()
        .find(|c| c.is("bearer"))
        .unwrap_or_else(|| panic!("no Bearer challenge: {challenge}"));
    assert_eq!(
        bearer.param("realm"),
        Some(edge.url("/auth/token").as_str()),
        "{challenge}"
    );
    assert_eq!(bearer.param("service"), Some("aerugo"), "{challenge}");
    assert_eq!(bearer.param("scope"), Some(scope), "{challenge}");
}

/// Asserts the `401` a core sends a token without the scope the request needs.
fn assert_insufficient_scope(pulled: Pulled) {
    let challenge = pulled.assert_refused(401, "UNAUTHORIZED");
    assert!(
        challenge
            .as_deref()
            .is_some_and(|c| c.contains("error=\"insufficient_scope\"")),
        "{challenge:?}"
    );
}

/// What a registry client does: `GET path`, and on a `401` challenge a token from its realm
/// (with basic credentials) for its scope, then the `GET` again with it. The token and the
/// second answer.
async fn pull_with_token(edge: &EdgeProcess, path: &str, user: &str) -> (String, Pulled) {
    let challenged = get_as(edge, path, None).await;
    let challenge = challenged.assert_refused(401, "UNAUTHORIZED");
    let realm = edge.url("/auth/token");
    let scope = path
        .strip_prefix("/v2/")
        .and_then(|rest| rest.split_once("/blobs/"))
        .map(|(repo, _)| format!("repository:{repo}:pull"))
        .expect("a blob path");
    assert_challenge(challenge, edge, &scope);
    let url = reqwest::Url::parse_with_params(&realm, &[("service", "aerugo"), ("scope", &scope)])
        .expect("token URL");
    let answer: serde_json::Value = edge
        .http
        .get(url)
        .basic_auth(user, Some(PASSWORD))
        .send()
        .await
        .expect("token through the gateway")
        .json()
        .await
        .expect("token JSON");
    let token = answer["token"].as_str().expect("a token").to_owned();
    let pulled = get_as(edge, path, Some(&format!("Bearer {token}"))).await;
    (token, pulled)
}

/// (a) A private blob cached by alice's pull is refused to an anonymous client and to bob;
/// (b) with the core down, alice's tokens (another one too: the subject is the caller) are
/// still served, within the stale window, and bob, anonymous and an expired token are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_serves_a_private_blob_only_to_tokens_granting_pull_also_with_the_core_down() {
    let mut closed = ClosedCore::start().await;
    let edge = closed.gateway().await;
    let layer = closed.app.layer_digest(0);
    let path = format!("/v2/acme/app/blobs/{layer}");

    let (token, pulled) = pull_with_token(&edge, &path, "alice").await;
    pulled.assert_blob(&layer, "MISS");
    let alice = format!("Bearer {token}");
    get_as(&edge, &path, Some(&alice))
        .await
        .assert_blob(&layer, "HIT");

    let anonymous = get_as(&edge, &path, None).await;
    let challenge = anonymous.assert_refused(401, "UNAUTHORIZED");
    assert_challenge(challenge, &edge, "repository:acme/app:pull");
    let (bob_token, bob) = pull_with_token(&edge, &path, "bob").await;
    bob.assert_refused(403, "DENIED");
    let bob = format!("Bearer {bob_token}");

    // Another token of alice's (its own `jti`): another header, the same subject.
    let (other_token, _) = pull_with_token(
        &edge,
        &format!("/v2/acme/app/blobs/{}", closed.app.layer_digest(1)),
        "alice",
    )
    .await;
    let alice_again = format!("Bearer {other_token}");
    assert_ne!(alice, alice_again);
    let expired = format!("Bearer {}", closed.expired_token().await);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    closed.core.kill9();
    // Once before the health check noticed, once with no healthy core left.
    for _ in 0..2 {
        for token in [&alice, &alice_again] {
            get_as(&edge, &path, Some(token))
                .await
                .assert_blob(&layer, "HIT");
        }
        get_as(&edge, &path, None)
            .await
            .assert_refused(503, "UNAVAILABLE");
        assert_insufficient_scope(get_as(&edge, &path, Some(&bob)).await);
        let refused = get_as(&edge, &path, Some(&expired)).await;
        let challenge = refused.assert_refused(401, "UNAUTHORIZED");
        assert_challenge(challenge, &edge, "repository:acme/app:pull");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    assert!(
        edge.metric("aerugo_edge_confirmations_total", &[("outcome", "stale")])
            .await
            >= 4.0,
        "{}",
        edge.metrics().await
    );
}

/// (c) A gateway restarted while the core is down checks tokens with the keys it kept: an
/// expired token and one without the scope get the challenge, a valid one is merely
/// unconfirmed (a restarted gateway holds no confirmations).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_checks_tokens_with_the_kept_keys_while_the_core_is_down() {
    let mut closed = ClosedCore::start().await;
    let mut edge = closed.gateway().await;
    let path = format!("/v2/acme/app/blobs/{}", closed.app.layer_digest(0));
    let (alice, pulled) = pull_with_token(&edge, &path, "alice").await;
    pulled.assert_blob(&closed.app.layer_digest(0), "MISS");
    let (bob, _) = pull_with_token(&edge, &path, "bob").await;
    let expired = closed.expired_token().await;
    assert!(edge.cache_dir.join("jwks.json").is_file());

    closed.core.kill9();
    edge.restart().await;
    get_as(&edge, &path, Some(&format!("Bearer {alice}")))
        .await
        .assert_refused(503, "UNAVAILABLE");
    let refused = get_as(&edge, &path, Some(&format!("Bearer {expired}"))).await;
    let challenge = refused.assert_refused(401, "UNAUTHORIZED");
    assert_challenge(challenge, &edge, "repository:acme/app:pull");
    assert_insufficient_scope(get_as(&edge, &path, Some(&format!("Bearer {bob}"))).await);
}

/// (d) Fills are fetched as the gateway's service account, whoever asked: alice's pull of an
/// uncached acme/app blob succeeds through acme+edge, and her pull of her own alice/private,
/// which alice may read and acme+edge may not, fails at the fill — the core's audit log names
/// acme+edge as the one refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_fills_private_blobs_as_its_service_account() {
    let closed = ClosedCore::start().await;
    let edge = closed.gateway().await;
    let layer = closed.app.layer_digest(1);
    let (_, pulled) = pull_with_token(&edge, &format!("/v2/acme/app/blobs/{layer}"), "alice").await;
    pulled.assert_blob(&layer, "MISS");

    let own = format!("/v2/alice/private/blobs/{}", closed.own.layer_digest(0));
    let (_, refused) = pull_with_token(&edge, &own, "alice").await;
    refused.assert_refused(403, "DENIED");
    let refusals_of = |actor: &str| AuditQuery {
        actor: Some(actor.into()),
        outcome: Some(Outcome::Denied),
        target_prefix: Some("alice/private".into()),
        limit: 10,
        ..AuditQuery::default()
    };
    let audited = eventually(Duration::from_secs(10), || async {
        !closed
            .accounts
            .audit(&refusals_of("acme+edge"))
            .await
            .expect("audit")
            .is_empty()
    })
    .await;
    assert!(audited, "the core never refused acme+edge on alice/private");
    let alice_refused = closed
        .accounts
        .audit(&refusals_of("alice"))
        .await
        .expect("audit");
    assert!(alice_refused.is_empty(), "{alice_refused:?}");
}

/// The core throttles sign-ins and audits per client, not per gateway: the gateway appends
/// the client's address to `X-Forwarded-For`, and the core (which trusts loopback proxies by
/// default) takes the first untrusted address from the right. Here the test client is on
/// loopback too, so the address it claims itself is the one believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_records_the_client_behind_the_gateway() {
    let closed = ClosedCore::start().await;
    let edge = closed.gateway().await;
    let refused = edge
        .http
        .get(edge.url("/v2/acme/app/tags/list"))
        .basic_auth("bob", Some("not-his-password"))
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 401);
    let refusals = AuditQuery {
        outcome: Some(Outcome::Denied),
        limit: 10,
        ..AuditQuery::default()
    };
    let recorded = eventually(Duration::from_secs(10), || async {
        closed
            .accounts
            .audit(&refusals)
            .await
            .expect("audit")
            .iter()
            .any(|r| r.event.client.as_deref() == Some("198.51.100.7"))
    })
    .await;
    assert!(recorded, "the refusal names the client, not the gateway");
}
