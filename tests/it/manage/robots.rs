//! `/api/v1/orgs/{org}/robots`: robots with scopes inside their namespace, a secret shown
//! once, revocation and deletion.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::super::auth::http;
use super::{Api, Who, names};

/// The scopes a token for the robot carries when it asks for `scope`.
async fn granted(api: &Api, login: &str, secret: &str, scope: &str) -> Option<String> {
    let url = reqwest::Url::parse_with_params(
        &api.url("/auth/token"),
        &[("service", "aerugo"), ("scope", scope)],
    )
    .unwrap();
    let response = http()
        .get(url)
        .basic_auth(login, Some(secret))
        .send()
        .await
        .unwrap();
    if response.status() != StatusCode::OK {
        return None;
    }
    let body: Value = response.json().await.unwrap();
    Some(body["scope"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_robot_is_created_with_its_secret_once_and_works_until_revoked() {
    let api = Api::start().await;
    let robots = "/api/v1/orgs/acme/robots";
    // What `curl -u alice:… -X POST …/robots -d '{"name":"deploy",…}'` sends.
    let created = Api::send(
        api.request(Who::User("alice"), reqwest::Method::POST, robots)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(r#"{"name":"deploy","scopes":["repository:acme/*:pull,push"]}"#),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["login"], "acme+deploy");
    assert_eq!(
        created.body["scopes"],
        json!(["repository:acme/*:pull,push"])
    );
    assert_eq!(created.body["active"], true);
    assert_eq!(created.body["expires_at"], Value::Null);
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 43);
    assert_eq!(
        granted(
            &api,
            "acme+deploy",
            &secret,
            "repository:acme/app:pull,push,delete"
        )
        .await,
        Some("repository:acme/app:pull,push".into())
    );

    let listed = api.get(Who::User("alice"), robots).await;
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(names(items, "login"), ["acme+ci", "acme+deploy"]);
    assert!(
        items.iter().all(|r| r.get("secret").is_none()),
        "the secret is never shown again"
    );

    let again = api
        .post(
            Who::User("alice"),
            robots,
            json!({"name": "deploy", "scopes": ["repository:acme/x:pull"]}),
        )
        .await;
    assert_eq!(again.refusal(), (409, "ALREADY_EXISTS"));

    let revoke = format!("{robots}/deploy/revoke");
    assert_eq!(
        api.post(Who::User("bob"), &revoke, json!({}))
            .await
            .refusal(),
        (403, "DENIED")
    );
    assert_eq!(
        api.call(Who::User("alice"), reqwest::Method::POST, &revoke, None)
            .await
            .status,
        204
    );
    assert_eq!(
        granted(&api, "acme+deploy", &secret, "repository:acme/app:pull").await,
        None
    );
    let listed = api.get(Who::User("alice"), robots).await;
    let deploy = &listed.body["items"][1];
    assert_eq!(
        (&deploy["active"], deploy["revoked_at"].is_string()),
        (&json!(false), true)
    );

    assert_eq!(
        api.delete(Who::User("alice"), &format!("{robots}/deploy"))
            .await
            .status,
        204
    );
    assert_eq!(
        api.delete(Who::User("alice"), &format!("{robots}/deploy"))
            .await
            .refusal(),
        (404, "NOT_FOUND")
    );
    let listed = api.get(Who::User("alice"), robots).await;
    assert_eq!(
        names(listed.body["items"].as_array().unwrap(), "login"),
        ["acme+ci"]
    );
}

#[tokio::test]
async fn bad_scopes_and_expiries_create_nothing() {
    let api = Api::start().await;
    let robots = "/api/v1/orgs/acme/robots";
    let bad = [
        json!({"name": "x", "scopes": ["repository:other/*:pull"]}),
        json!({"name": "x", "scopes": ["repository:acmex/app:pull"]}),
        json!({"name": "x", "scopes": ["repository:acme/app:pull,fly"]}),
        json!({"name": "x", "scopes": ["registry:catalog:*"]}),
        json!({"name": "x", "scopes": ["acme/app"]}),
        json!({"name": "x", "scopes": []}),
        json!({"name": "x", "scopes": ["repository:acme/*:pull"], "expires_in_seconds": -5}),
        json!({"name": "x", "scopes": ["repository:acme/*:pull"], "expires_at": "yesterday"}),
        json!({"name": "x", "scopes": ["repository:acme/*:pull"], "expires_at": "2001-01-01T00:00:00Z"}),
        json!({"name": "x", "scopes": ["repository:acme/*:pull"], "expires_at": "2999-01-01T00:00:00Z", "expires_in_seconds": 60}),
        json!({"name": "Bad Name", "scopes": ["repository:acme/*:pull"]}),
    ];
    for body in bad {
        let reply = api.post(Who::User("alice"), robots, body.clone()).await;
        assert_eq!(reply.refusal(), (400, "INVALID"), "{body}");
    }
    let listed = api.get(Who::User("alice"), robots).await;
    assert_eq!(
        names(listed.body["items"].as_array().unwrap(), "login"),
        ["acme+ci"]
    );

    let expiring = api
        .post(
            Who::User("alice"),
            robots,
            json!({"name": "nightly", "scopes": ["repository:acme/app:pull"], "expires_in_seconds": 3600}),
        )
        .await;
    assert_eq!(expiring.status, StatusCode::CREATED);
    assert!(expiring.body["expires_at"].is_string());
}

#[tokio::test]
async fn only_the_organisations_managers_handle_its_robots_and_robots_manage_nothing() {
    let api = Api::start().await;
    let robots = "/api/v1/orgs/acme/robots";
    let body = json!({"name": "x", "scopes": ["repository:acme/*:pull"]});
    assert_eq!(
        api.get(Who::User("bob"), robots).await.refusal(),
        (403, "DENIED")
    );
    assert_eq!(
        api.post(Who::User("bob"), robots, body.clone())
            .await
            .refusal(),
        (403, "DENIED")
    );
    assert_eq!(
        api.get(Who::User("carol"), robots).await.refusal(),
        (404, "NOT_FOUND")
    );
    assert_eq!(
        api.post(Who::User("carol"), robots, body.clone())
            .await
            .refusal(),
        (404, "NOT_FOUND")
    );
    // A robot may not use the management API, not even on its own organisation.
    assert_eq!(api.get(Who::Robot, robots).await.refusal(), (403, "DENIED"));
    assert_eq!(
        api.post(Who::Robot, robots, body.clone()).await.refusal(),
        (403, "DENIED")
    );
    assert_eq!(api.get(Who::Admin, robots).await.status, 200);
    let listed = api.get(Who::User("alice"), robots).await;
    assert_eq!(
        listed.body["items"].as_array().unwrap().len(),
        1,
        "nothing was created"
    );
}

#[tokio::test]
async fn users_manage_the_robots_of_their_own_namespace() {
    let api = Api::start().await;
    let robots = "/api/v1/users/carol/robots";
    let outside = api
        .post(
            Who::User("carol"),
            robots,
            json!({"name": "laptop", "scopes": ["repository:acme/*:pull"]}),
        )
        .await;
    assert_eq!(outside.refusal(), (400, "INVALID"));
    let created = api
        .post(
            Who::User("carol"),
            robots,
            json!({"name": "laptop", "scopes": ["repository:carol/*:pull,push"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["login"], "carol+laptop");
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        granted(&api, "carol+laptop", &secret, "repository:carol/app:pull").await,
        Some("repository:carol/app:pull".into())
    );
    assert_eq!(
        api.get(Who::User("bob"), robots).await.refusal(),
        (404, "NOT_FOUND")
    );
    assert_eq!(
        api.delete(Who::User("bob"), &format!("{robots}/laptop"))
            .await
            .refusal(),
        (404, "NOT_FOUND")
    );
    let listed = api.get(Who::Admin, robots).await;
    assert_eq!(
        names(listed.body["items"].as_array().unwrap(), "login"),
        ["carol+laptop"]
    );
    let revoke = format!("{robots}/laptop/revoke");
    assert_eq!(
        api.call(Who::User("carol"), reqwest::Method::POST, &revoke, None)
            .await
            .status,
        204
    );
    assert_eq!(
        granted(&api, "carol+laptop", &secret, "repository:carol/app:pull").await,
        None
    );
    assert_eq!(
        api.delete(Who::User("carol"), &format!("{robots}/laptop"))
            .await
            .status,
        204
    );
    assert_eq!(
        api.get(Who::User("carol"), robots).await.body["items"],
        json!([])
    );
}
