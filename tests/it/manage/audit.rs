//! `GET /api/v1/audit`: every management write and refusal, newest first, filterable.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Api, Who};

/// The management API's records on a page, as (action, target, outcome): what the registry
/// itself records (sign-ins, pushes) is left out.
fn actions(reply: &Value) -> Vec<(String, String, String)> {
    const MANAGEMENT: [&str; 4] = ["api.get", "org.read", "team.create", "user.create"];
    reply["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| MANAGEMENT.contains(&r["action"].as_str().unwrap_or_default()))
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["target"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn triple(action: &str, target: &str, outcome: &str) -> (String, String, String) {
    (action.into(), target.into(), outcome.into())
}

#[tokio::test]
async fn writes_and_refusals_are_logged_and_filtered() {
    let api = Api::start().await;
    api.post(
        Who::User("alice"),
        "/api/v1/orgs/acme/teams",
        json!({"name": "devs"}),
    )
    .await;
    api.post(
        Who::User("bob"),
        "/api/v1/orgs/acme/teams",
        json!({"name": "ops"}),
    )
    .await;
    api.get(Who::User("carol"), "/api/v1/orgs/acme").await;
    api.get(Who::Robot, "/api/v1/orgs/acme").await;
    let wrong = api
        .get(
            Who::Password("bob", "not-his-password"),
            "/api/v1/orgs/acme",
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    api.get(Who::Nobody, "/api/v1/orgs/acme").await;

    let log = api.get(Who::Admin, "/api/v1/audit").await;
    assert_eq!(log.status, StatusCode::OK);
    let items = log.body["items"].as_array().unwrap();
    let robot = items.iter().find(|r| r["actor"] == "acme+ci").unwrap();
    assert_eq!(robot["action"], "api.get");
    let newest = &items[0];
    assert_eq!(
        newest["actor"],
        json!(null),
        "the wrong password, not the missing one"
    );
    assert_eq!(newest["client"], "127.0.0.1");
    assert!(newest["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        actions(&log.body)[..6],
        [
            triple("api.get", "/api/v1/orgs/acme", "denied"),
            triple("api.get", "/api/v1/orgs/acme", "denied"),
            triple("org.read", "acme", "denied"),
            triple("team.create", "acme", "denied"),
            triple("team.create", "acme/devs", "allowed"),
            triple("user.create", "carol", "allowed"),
        ]
    );

    let bobs = api
        .get(Who::Admin, "/api/v1/audit?actor=bob&outcome=denied")
        .await;
    assert_eq!(
        actions(&bobs.body),
        [triple("team.create", "acme", "denied")]
    );
    let creations = api
        .get(
            Who::Admin,
            "/api/v1/audit?action=team.create&outcome=allowed",
        )
        .await;
    assert_eq!(
        actions(&creations.body),
        [triple("team.create", "acme/devs", "allowed")]
    );
    let in_acme = api
        .get(Who::Admin, "/api/v1/audit?target_prefix=acme/")
        .await;
    assert_eq!(
        actions(&in_acme.body),
        [triple("team.create", "acme/devs", "allowed")]
    );
    let future = api
        .get(Who::Admin, "/api/v1/audit?since=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(future.body["items"], json!([]));
    let past = api
        .get(Who::Admin, "/api/v1/audit?until=2001-01-01T00:00:00Z")
        .await;
    assert_eq!(past.body["items"], json!([]));
    let recent = api
        .get(
            Who::Admin,
            "/api/v1/audit?since=2001-01-01T00:00:00%2B02:00",
        )
        .await;
    assert_eq!(actions(&recent.body), actions(&log.body));

    // Pages of two, newest first, follow `next` as `before`.
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let path = match &before {
            Some(id) => format!("/api/v1/audit?limit=2&before={id}"),
            None => "/api/v1/audit?limit=2".to_owned(),
        };
        let page = api.get(Who::Admin, &path).await;
        seen.extend(actions(&page.body));
        match page.body["next"].as_str() {
            Some(next) => before = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, actions(&log.body));

    assert_eq!(
        api.get(Who::User("alice"), "/api/v1/audit").await.refusal(),
        (403, "DENIED")
    );
    for bad in ["since=yesterday", "outcome=maybe", "before=x", "limit=0"] {
        let reply = api.get(Who::Admin, &format!("/api/v1/audit?{bad}")).await;
        assert_eq!(reply.refusal(), (400, "INVALID"), "{bad}");
    }
}
