//! Tenants and tokens over HTTP: the `/v2/` gate, the token service (GET with basic
//! credentials or none, the OAuth2 POST docker uses), and the refusals the token spec and the
//! tenant model promise — each refusal checked for its exact status and error code, and for
//! having changed nothing.
//!
//! Accounts are made straight through the server's own account store (the management API
//! comes later); the registry sees them at once because the first user closes it.

mod clients;
mod engines;

use aerugo::accounts::{AccountName, AccountStore, NewRobot, OrgRole, RobotScope, Visibility};
use aerugo::auth::secret;
use aerugo::oci::scope::{Action, Actions};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::Value;

use super::support::TestServer;
use super::support::image::{OCI_MANIFEST, TestImage};

pub const ADMIN: &str = "root";
pub const ADMIN_PASSWORD: &str = "root-password-1";
pub const PASSWORD: &str = "secret-password";

/// A server whose bootstrap admin closes it, with users alice and bob, organisation acme
/// (owner alice, member bob) and a robot acme+ci that may push and pull acme/*.
pub struct Tenants {
    pub server: TestServer,
    pub accounts: std::sync::Arc<dyn AccountStore>,
    pub robot_secret: String,
}

pub fn name(s: &str) -> AccountName {
    s.parse().unwrap()
}

impl Tenants {
    pub async fn start() -> Tenants {
        let server = TestServer::start_with(|c| {
            c.auth.bootstrap_admin = Some(ADMIN.into());
            c.auth.bootstrap_admin_password = Some(ADMIN_PASSWORD.into());
            // Each test runs its own brute-force check; the others must not trip it.
            c.auth.max_failed_logins = 5;
        })
        .await;
        let accounts = aerugo::app::open_accounts(&server.config)
            .await
            .expect("the server's account store");
        for user in ["alice", "bob"] {
            aerugo::app::create_user(accounts.as_ref(), &name(user), PASSWORD, false)
                .await
                .unwrap();
        }
        accounts
            .create_org(&name("acme"), &name("alice"))
            .await
            .unwrap();
        accounts
            .set_member(&name("acme"), &name("bob"), OrgRole::Member)
            .await
            .unwrap();
        let robot_secret = secret::random_token();
        accounts
            .create_robot(&NewRobot {
                namespace: name("acme"),
                name: name("ci"),
                secret_hash: secret::digest(&robot_secret),
                scopes: vec![RobotScope {
                    repository: "acme/*".into(),
                    actions: Actions::from([Action::Pull, Action::Push]),
                }],
                expires_at: None,
            })
            .await
            .unwrap();
        Tenants {
            server,
            accounts,
            robot_secret,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// A token from `GET /auth/token` for `scopes`, with basic credentials (or none).
    pub async fn token(&self, user: Option<(&str, &str)>, scopes: &[&str]) -> String {
        let response = self.token_response(user, scopes).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    pub async fn token_response(
        &self,
        user: Option<(&str, &str)>,
        scopes: &[&str],
    ) -> reqwest::Response {
        let mut query = vec![("service", "aerugo")];
        query.extend(scopes.iter().map(|s| ("scope", *s)));
        let url = reqwest::Url::parse_with_params(&self.url("/auth/token"), &query).unwrap();
        let mut request = http().get(url);
        if let Some((user, password)) = user {
            request = request.basic_auth(user, Some(password));
        }
        request.send().await.unwrap()
    }
}

/// An `application/x-www-form-urlencoded` body.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (key, value) in fields {
        form.append_pair(key, value);
    }
    form.finish()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// How a request proves who it is.
#[derive(Clone, Copy)]
pub enum As<'a> {
    Nobody,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

fn authorize(request: reqwest::RequestBuilder, who: As<'_>) -> reqwest::RequestBuilder {
    match who {
        As::Nobody => request,
        As::Basic(user, password) => request.basic_auth(user, Some(password)),
        As::Bearer(token) => request.bearer_auth(token),
    }
}

/// Pushes `image` (blobs by monolithic `POST ?digest=`, then the manifest); the status of the
/// first request that fails, or of the manifest `PUT`.
pub async fn push(
    t: &Tenants,
    who: As<'_>,
    repo: &str,
    tag: &str,
    image: &TestImage,
) -> StatusCode {
    for blob in image.blobs() {
        let digest = &blob.digest;
        let response = authorize(
            http().post(t.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"))),
            who,
        )
        .header("content-type", "application/octet-stream")
        .body(blob.bytes())
        .send()
        .await
        .unwrap();
        if response.status() != StatusCode::CREATED {
            return response.status();
        }
    }
    authorize(
        http().put(t.url(&format!("/v2/{repo}/manifests/{tag}"))),
        who,
    )
    .header("content-type", OCI_MANIFEST)
    .body(image.manifest.clone())
    .send()
    .await
    .unwrap()
    .status()
}

pub async fn get(t: &Tenants, who: As<'_>, path: &str) -> reqwest::Response {
    authorize(http().get(t.url(path)), who)
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
}

/// The status and the first error code of a response.
pub async fn refusal(response: reqwest::Response) -> (StatusCode, String, Option<String>) {
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap_or_default();
    let code = body["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code, challenge)
}

/// An image unique to `seed`.
pub fn image(seed: &str) -> TestImage {
    TestImage::with_layers(seed, &[1024, 2048])
}

/// Whether `repo` holds the tag (asked as the admin, so visibility plays no part).
async fn has_tag(t: &Tenants, repo: &str, tag: &str) -> bool {
    get(
        t,
        As::Basic(ADMIN, ADMIN_PASSWORD),
        &format!("/v2/{repo}/manifests/{tag}"),
    )
    .await
    .status()
        == StatusCode::OK
}

#[tokio::test]
async fn the_first_user_closes_the_registry_and_v2_challenges() {
    let t = Tenants::start().await;
    let (status, code, challenge) = refusal(get(&t, As::Nobody, "/v2/").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    let expected = format!(
        "Bearer realm=\"{}\",service=\"aerugo\"",
        t.url("/auth/token")
    );
    assert_eq!(challenge.as_deref(), Some(expected.as_str()));
    // Basic credentials on /v2/ directly (what curl -u sends) and a token both pass.
    assert_eq!(
        get(&t, As::Basic("alice", PASSWORD), "/v2/").await.status(),
        200
    );
    let token = t.token(Some(("alice", PASSWORD)), &[]).await;
    assert_eq!(get(&t, As::Bearer(&token), "/v2/").await.status(), 200);
    // An anonymous push is asked for credentials, with the scope it needs.
    let (status, _, challenge) = refusal(get(&t, As::Nobody, "/v2/acme/app/tags/list").await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        challenge
            .unwrap()
            .contains("scope=\"repository:acme/app:pull\"")
    );
}

#[tokio::test]
async fn tokens_grant_the_intersection_of_asked_and_allowed() {
    let t = Tenants::start().await;
    let response = t
        .token_response(
            Some(("bob", PASSWORD)),
            &[
                "repository:acme/app:pull,push,delete",
                "repository:alice/x:pull",
            ],
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    // bob is a member of acme (pull) and nothing of alice's.
    assert_eq!(body["scope"], "repository:acme/app:pull");
    assert!(body["expires_in"].as_i64().unwrap() >= 60);
    let claims = claims_of(body["token"].as_str().unwrap());
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["aud"], "aerugo");
    assert_eq!(claims["access"][0]["name"], "acme/app");
    assert_eq!(claims["access"][0]["actions"], serde_json::json!(["pull"]));
}

fn claims_of(token: &str) -> Value {
    let body = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap()
}

#[tokio::test]
async fn owners_push_members_pull_strangers_are_refused() {
    let t = Tenants::start().await;
    let img = image("owners");
    let token = t
        .token(
            Some(("alice", PASSWORD)),
            &["repository:acme/app:pull,push"],
        )
        .await;
    assert_eq!(
        push(&t, As::Bearer(&token), "acme/app", "1", &img).await,
        201
    );

    let bob = t
        .token(Some(("bob", PASSWORD)), &["repository:acme/app:pull"])
        .await;
    assert_eq!(
        get(&t, As::Bearer(&bob), "/v2/acme/app/manifests/1")
            .await
            .status(),
        200
    );
    // A member may not push: refused, and nothing changed.
    let bob_push = t
        .token(Some(("bob", PASSWORD)), &["repository:acme/app:pull,push"])
        .await;
    let other = image("bob-push");
    let status = push(&t, As::Bearer(&bob_push), "acme/app", "2", &other).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!has_tag(&t, "acme/app", "2").await);
    // Another user's namespace: refused, whatever the repository holds.
    let (status, code, _) = refusal(
        get(
            &t,
            As::Basic("bob", PASSWORD),
            "/v2/alice/private/manifests/1",
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
}

#[tokio::test]
async fn a_token_for_one_repository_or_action_does_not_open_another() {
    let t = Tenants::start().await;
    let img = image("scoped");
    let pull_a = t
        .token(Some(("alice", PASSWORD)), &["repository:acme/a:pull"])
        .await;
    // A pull token used to push: the client is sent back to the token service for the scope.
    let status = push(&t, As::Bearer(&pull_a), "acme/a", "1", &img).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = authorize(
        http().post(t.url("/v2/acme/a/blobs/uploads/")),
        As::Bearer(&pull_a),
    )
    .send()
    .await
    .unwrap();
    let (status, code, challenge) = refusal(response).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    let challenge = challenge.unwrap();
    assert!(
        challenge.contains("scope=\"repository:acme/a:pull,push\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    // A token for A used on B.
    let push_a = t
        .token(Some(("alice", PASSWORD)), &["repository:acme/a:pull,push"])
        .await;
    assert_eq!(
        push(&t, As::Bearer(&push_a), "acme/a", "1", &img).await,
        201
    );
    let (status, code, _) =
        refusal(get(&t, As::Bearer(&push_a), "/v2/acme/b/manifests/1").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    assert!(!has_tag(&t, "acme/b", "1").await);
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let t = Tenants::start().await;
    let good = t
        .token(Some(("alice", PASSWORD)), &["repository:acme/app:pull"])
        .await;
    let (header, body, signature) = {
        let mut parts = good.split('.');
        (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
        )
    };
    let header_json: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&header).unwrap()).unwrap();
    let kid = header_json["kid"].as_str().unwrap();
    let encode = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let mut widened = claims_of(&good);
    widened["access"][0]["actions"] = serde_json::json!(["pull", "push"]);
    let forged = [
        // alg: none, with and without the old signature.
        format!(
            "{}.{body}.",
            encode(serde_json::json!({"alg": "none", "kid": kid}))
        ),
        format!(
            "{}.{body}.{signature}",
            encode(serde_json::json!({"alg": "none", "kid": kid}))
        ),
        // HS256 "signed" with the public key from the JWK set.
        hs256_with_public_key(&t, kid, &body).await,
        // A tampered access claim under the original signature.
        format!("{header}.{}.{signature}", encode(widened)),
        // Signed by another key.
        {
            let other = aerugo::auth::KeyRing::single(aerugo::auth::SigningKey::generate());
            let parties = aerugo::auth::TokenParties {
                issuer: "aerugo".into(),
                service: "aerugo".into(),
            };
            let access = claims_of(&good)["access"].clone();
            aerugo::auth::token::issue(
                &other,
                &parties,
                "alice",
                serde_json::from_value(access).unwrap(),
                aerugo::metadata::system_now(),
                300,
            )
            .unwrap()
        },
    ];
    for token in forged {
        let (status, code, _) =
            refusal(get(&t, As::Bearer(&token), "/v2/acme/app/tags/list").await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            "{token}"
        );
    }
}

async fn hs256_with_public_key(t: &Tenants, kid: &str, body: &str) -> String {
    let jwks: Value = http()
        .get(t.url("/auth/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let header = URL_SAFE_NO_PAD
        .encode(serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": kid}).to_string());
    let signing_input = format!("{header}.{body}");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, x.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

#[tokio::test]
async fn public_repositories_are_pulled_anonymously_and_private_ones_leak_nothing() {
    let t = Tenants::start().await;
    let admin = As::Basic(ADMIN, ADMIN_PASSWORD);
    assert_eq!(
        push(&t, admin, "acme/public", "1", &image("pub")).await,
        201
    );
    assert_eq!(
        push(&t, admin, "acme/private", "1", &image("priv")).await,
        201
    );
    t.accounts
        .set_visibility(&"acme/public".parse().unwrap(), Visibility::Public)
        .await
        .unwrap();
    // Anonymous: with no credentials at all, and with an anonymous token.
    assert_eq!(
        get(&t, As::Nobody, "/v2/acme/public/manifests/1")
            .await
            .status(),
        200
    );
    let anonymous = t.token(None, &["repository:acme/public:pull"]).await;
    assert_eq!(
        get(&t, As::Bearer(&anonymous), "/v2/acme/public/manifests/1")
            .await
            .status(),
        200
    );
    let (status, _, _) = refusal(get(&t, As::Nobody, "/v2/acme/private/manifests/1").await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // An existing private repository and a missing one look the same to a stranger.
    for repo in ["acme/private", "acme/missing"] {
        let (status, code, _) = refusal(
            get(
                &t,
                As::Basic("bob", "wrong-password"),
                &format!("/v2/{repo}/tags/list"),
            )
            .await,
        )
        .await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
        );
    }
    // The catalog lists what the caller may see.
    let catalog: Value = get(&t, As::Basic("bob", PASSWORD), "/v2/_catalog")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["acme/private", "acme/public"])
    );
    let outsider = "carol";
    aerugo::app::create_user(t.accounts.as_ref(), &name(outsider), PASSWORD, false)
        .await
        .unwrap();
    let catalog: Value = get(&t, As::Basic(outsider, PASSWORD), "/v2/_catalog")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!(["acme/public"]));
    let (status, code, _) = refusal(
        get(
            &t,
            As::Basic(outsider, PASSWORD),
            "/v2/acme/private/tags/list",
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
}

#[tokio::test]
async fn mounts_from_a_repository_the_caller_cannot_read_copy_nothing() {
    let t = Tenants::start().await;
    let admin = As::Basic(ADMIN, ADMIN_PASSWORD);
    let secret_image = image("secret");
    assert_eq!(
        push(&t, admin, "other/secret", "1", &secret_image).await,
        201
    );
    let layer = secret_image.layer_digest(0);
    let response = authorize(
        http().post(t.url(&format!(
            "/v2/acme/app/blobs/uploads/?mount={layer}&from=other/secret"
        ))),
        As::Basic("alice", PASSWORD),
    )
    .send()
    .await
    .unwrap();
    // A plain upload session instead of a mount.
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let (status, _, _) = refusal(
        get(
            &t,
            As::Basic("alice", PASSWORD),
            &format!("/v2/acme/app/blobs/{layer}"),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn robots_act_within_their_scopes() {
    let t = Tenants::start().await;
    let robot = As::Basic("acme+ci", &t.robot_secret);
    assert_eq!(
        push(&t, robot, "acme/ci/app", "1", &image("robot")).await,
        201
    );
    let token = t
        .token(
            Some(("acme+ci", &t.robot_secret)),
            &[
                "repository:acme/ci/app:pull,push,delete",
                "repository:alice/x:pull",
            ],
        )
        .await;
    assert_eq!(
        claims_of(&token)["access"],
        serde_json::json!([{"type": "repository", "name": "acme/ci/app", "actions": ["pull", "push"]}])
    );
    let (status, code, _) = refusal(
        authorize(http().post(t.url("/v2/alice/x/blobs/uploads/")), robot)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    let (status, _, _) =
        refusal(get(&t, As::Basic("acme+ci", "not-the-secret"), "/v2/").await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn repeated_failures_lock_the_account_and_unknown_names_alike() {
    let t = Tenants::start().await;
    for user in ["alice", "no-such-user"] {
        for _ in 0..5 {
            let response = t.token_response(Some((user, "wrong")), &[]).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{user}");
        }
        let response = t.token_response(Some((user, PASSWORD)), &[]).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{user}");
        assert!(response.headers().contains_key("retry-after"));
        let (_, code, _) = refusal(response).await;
        assert_eq!(code, "TOOMANYREQUESTS");
    }
    // Others are not locked out.
    assert_eq!(
        t.token_response(Some(("bob", PASSWORD)), &[])
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn docker_login_flow_password_and_refresh_grants() {
    let t = Tenants::start().await;
    let form = [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", PASSWORD),
        ("service", "aerugo"),
        ("client_id", "docker"),
        ("access_type", "offline"),
    ];
    let body: Value = http()
        .post(t.url("/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&form))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    assert!(body["access_token"].is_string());
    let refreshed = http()
        .post(t.url("/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("service", "aerugo"),
            ("client_id", "docker"),
            ("scope", "repository:acme/app:pull,push"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200);
    let body: Value = refreshed.json().await.unwrap();
    assert_eq!(body["scope"], "repository:acme/app:pull,push");
    assert_eq!(body["refresh_token"], refresh.as_str());
    // Logout revokes the refresh token.
    let logout = http()
        .post(t.url("/api/v1/auth/logout"))
        .json(&serde_json::json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let again = http()
        .post(t.url("/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("service", "aerugo"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    // A wrong password and an unknown user get the same answer.
    for (user, password) in [("alice", "wrong"), ("nobody", PASSWORD)] {
        let response = http()
            .post(t.url("/auth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&[
                ("grant_type", "password"),
                ("username", user),
                ("password", password),
            ]))
            .send()
            .await
            .unwrap();
        let (status, code, _) = refusal(response).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
        );
    }
}

#[tokio::test]
async fn admin_endpoints_need_an_admin() {
    let t = Tenants::start().await;
    let gc = |who: As<'static>| {
        let url = t.url("/api/v1/admin/gc");
        async move {
            authorize(http().post(url), who)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(gc(As::Nobody).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        gc(As::Basic("alice", PASSWORD)).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(gc(As::Basic(ADMIN, ADMIN_PASSWORD)).await, StatusCode::OK);
}

/// Polls until `status` answers `expected` (the other nodes' bound: one epoch refresh).
async fn eventually(expected: StatusCode, mut status: impl AsyncFnMut() -> StatusCode) {
    for _ in 0..30 {
        if status().await == expected {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("still not {expected} after 3 s");
}

#[tokio::test]
async fn revocations_apply_to_tokens_already_issued() {
    let t = Tenants::start().await;
    let admin = As::Basic(ADMIN, ADMIN_PASSWORD);
    assert_eq!(
        push(&t, admin, "acme/app", "1", &image("revoke")).await,
        201
    );
    let bob = t
        .token(Some(("bob", PASSWORD)), &["repository:acme/app:pull"])
        .await;
    let manifest = "/v2/acme/app/manifests/1";
    assert_eq!(get(&t, As::Bearer(&bob), manifest).await.status(), 200);
    let robot = As::Basic("acme+ci", &t.robot_secret);
    assert_eq!(get(&t, robot, manifest).await.status(), 200);

    // Straight in the store, as another node or `aerugo admin` would: the decisions cached
    // a moment ago end with the account epoch.
    t.accounts
        .remove_member(&name("acme"), &name("bob"))
        .await
        .unwrap();
    eventually(StatusCode::FORBIDDEN, async || {
        get(&t, As::Bearer(&bob), manifest).await.status()
    })
    .await;
    t.accounts
        .revoke_robot(&name("acme"), &name("ci"))
        .await
        .unwrap();
    eventually(StatusCode::UNAUTHORIZED, async || {
        get(&t, robot, manifest).await.status()
    })
    .await;
    let change = aerugo::accounts::UserChange {
        disabled: Some(true),
        ..Default::default()
    };
    t.accounts.update_user(&name("bob"), &change).await.unwrap();
    eventually(StatusCode::UNAUTHORIZED, async || {
        get(&t, As::Bearer(&bob), "/v2/").await.status()
    })
    .await;
}

#[tokio::test]
async fn writes_and_denials_are_audited() {
    let t = Tenants::start().await;
    let alice = t
        .token(
            Some(("alice", PASSWORD)),
            &["repository:acme/app:pull,push"],
        )
        .await;
    assert_eq!(
        push(&t, As::Bearer(&alice), "acme/app", "1", &image("audit")).await,
        201
    );
    let bob = As::Basic("bob", PASSWORD);
    assert_eq!(
        push(&t, bob, "acme/app", "2", &image("audit-bob")).await,
        403
    );
    let (status, _, _) =
        refusal(get(&t, As::Basic("bob", "wrong"), "/v2/acme/app/tags/list").await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Anonymous challenges are the protocol's first step, not refusals.
    get(&t, As::Nobody, "/v2/").await;

    let mut records = Vec::new();
    for _ in 0..30 {
        records = t
            .accounts
            .audit(&aerugo::accounts::AuditQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        if records.len() >= 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let seen: Vec<(String, String, String, Option<String>)> = records
        .iter()
        .rev()
        .map(|r| {
            (
                r.event.action.clone(),
                r.event.target.clone(),
                r.event.outcome.as_str().to_owned(),
                r.event.actor.clone(),
            )
        })
        .collect();
    let alice_writes = seen
        .iter()
        .filter(|(_, _, outcome, actor)| outcome == "allowed" && actor.as_deref() == Some("alice"))
        .count();
    // Config and two layers, then the manifest.
    assert_eq!(alice_writes, 4, "{seen:?}");
    assert!(
        seen.contains(&(
            "manifest.put".into(),
            "acme/app:1".into(),
            "allowed".into(),
            Some("alice".into())
        )),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(
            "blob.push".into(),
            "acme/app".into(),
            "denied".into(),
            Some("bob".into())
        )),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(action, target, outcome, actor)| action == "access"
                && target == "acme/app"
                && outcome == "denied"
                && actor.is_none()),
        "a refused password is recorded: {seen:?}"
    );
    assert_eq!(seen.len(), 6, "nothing else is recorded: {seen:?}");
}

#[tokio::test]
async fn expired_tokens_and_path_tricks_open_nothing() {
    let t = Tenants::start().await;
    let admin = As::Basic(ADMIN, ADMIN_PASSWORD);
    assert_eq!(
        push(&t, admin, "alice/secret", "1", &image("tricks")).await,
        201
    );
    // A token signed with the registry's own key, for alice, that expired an hour ago.
    let ring = aerugo::auth::Auth::load_keys(t.accounts.as_ref())
        .await
        .unwrap();
    let parties = aerugo::auth::TokenParties {
        issuer: "aerugo".into(),
        service: "aerugo".into(),
    };
    let access = vec![aerugo::oci::scope::AccessEntry::from(
        &aerugo::oci::scope::ResourceScope::repository("alice/secret", [Action::Pull]),
    )];
    let now = aerugo::metadata::system_now();
    let expired =
        aerugo::auth::token::issue(&ring, &parties, "alice", access.clone(), now - 3600, 300)
            .unwrap();
    let (status, code, _) =
        refusal(get(&t, As::Bearer(&expired), "/v2/alice/secret/manifests/1").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    // The same token, unexpired, works: the refusal above was the expiry.
    let fresh = aerugo::auth::token::issue(&ring, &parties, "alice", access, now, 300).unwrap();
    assert_eq!(
        get(&t, As::Bearer(&fresh), "/v2/alice/secret/manifests/1")
            .await
            .status(),
        200
    );

    // bob, signed in, tries to reach alice's repository through his own namespace.
    let bob = As::Basic("bob", PASSWORD);
    for path in [
        "/v2/bob/../alice/secret/manifests/1",
        "/v2/bob/%2e%2e/alice/secret/manifests/1",
        "/v2/bob%2F..%2Falice/secret/manifests/1",
        "/v2/bob//alice/secret/manifests/1",
        "/v2/./alice/secret/manifests/1",
        "/v2/ALICE/secret/manifests/1",
    ] {
        let response = get(&t, bob, path).await;
        assert!(
            response.status().is_client_error(),
            "{path}: {}",
            response.status()
        );
    }
    // Scopes that try the same in a token request are granted nothing.
    let response = t
        .token_response(
            Some(("bob", PASSWORD)),
            &[
                "repository:bob/../alice/secret:pull",
                "repository:alice/secret/..:pull",
                "repository:bob/*:pull",
            ],
        )
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["scope"], "", "{body}");
    assert_eq!(
        claims_of(body["token"].as_str().unwrap())["access"],
        serde_json::json!([])
    );
}

/// `JWT_SECRET` (`[security] jwt_secret`, the original product's setting): every node given the
/// same secret signs with the same key, so each accepts the others' tokens; another secret
/// is another key.
#[tokio::test]
async fn nodes_given_one_jwt_secret_accept_each_others_tokens() {
    const SECRET: &str = "one secret for every node of the cluster, 48 chars";
    let node = |secret: &'static str| {
        TestServer::start_with(move |c| {
            c.auth.bootstrap_admin = Some(ADMIN.into());
            c.auth.bootstrap_admin_password = Some(ADMIN_PASSWORD.into());
            c.security.jwt_secret = Some(secret.into());
        })
    };
    let (one, two) = (node(SECRET).await, node(SECRET).await);
    let other = node("a different secret, also long enough to be taken").await;
    let query = [("service", "aerugo"), ("scope", "registry:catalog:*")];
    let url = reqwest::Url::parse_with_params(&one.url("/auth/token"), &query).unwrap();
    let issued: Value = http()
        .get(url)
        .basic_auth(ADMIN, Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = issued["token"].as_str().unwrap();
    let kid = |server: &TestServer| {
        let url = server.url("/auth/jwks");
        async move {
            let jwks: Value = http().get(url).send().await.unwrap().json().await.unwrap();
            jwks["keys"][0]["kid"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(kid(&one).await, kid(&two).await);
    assert_ne!(kid(&one).await, kid(&other).await);
    for (server, expected) in [(&one, 200), (&two, 200), (&other, 401)] {
        let status = http()
            .get(server.url("/v2/"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, expected, "{}", server.url("/v2/"));
    }
}
