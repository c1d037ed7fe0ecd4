//! `/api/v1/users`: admins manage users; users read themselves and change their password.

use reqwest::StatusCode;
use serde_json::json;

use super::super::auth::{PASSWORD, form_body, http};
use super::{Api, Who, assert_unauthorized, names};

#[tokio::test]
async fn admins_create_list_update_and_delete_users() {
    let api = Api::start().await;
    let created = api
        .post(
            Who::Admin,
            "/api/v1/users",
            json!({"name": "dave", "password": "dave-password", "admin": false}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.body["name"], "dave");
    assert_eq!(created.body["disabled"], false);
    let created_at = created.body["created_at"].as_str().unwrap();
    assert!(
        created_at.ends_with('Z') && created_at.contains('T'),
        "{created_at}"
    );

    // The name of a user or of an organisation is taken.
    for taken in ["dave", "acme"] {
        let again = api
            .post(Who::Admin, "/api/v1/users", json!({"name": taken}))
            .await;
        assert_eq!(again.refusal(), (409, "ALREADY_EXISTS"), "{taken}");
    }

    // Pages of two, in name order, until `next` is null.
    let pages = api.all_pages(Who::Admin, "/api/v1/users", 2).await;
    let all: Vec<String> = pages.iter().flat_map(|p| names(p, "name")).collect();
    assert_eq!(all, ["alice", "bob", "carol", "dave", "root"]);
    assert_eq!(pages.len(), 3);

    let read = api.get(Who::Admin, "/api/v1/users/dave").await;
    assert_eq!(read.body, created.body);

    let disabled = api
        .patch(Who::Admin, "/api/v1/users/dave", json!({"disabled": true}))
        .await;
    assert_eq!(disabled.status, StatusCode::OK);
    assert_eq!(disabled.body["disabled"], true);
    let dave = Who::Password("dave", "dave-password");
    let refused = api.get(dave, "/api/v1/users/dave").await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "a disabled user cannot sign in"
    );

    let promoted = api
        .patch(Who::Admin, "/api/v1/users/carol", json!({"admin": true}))
        .await;
    assert_eq!(promoted.body["admin"], true);
    assert_eq!(
        api.get(Who::User("carol"), "/api/v1/users").await.status,
        200
    );

    assert_eq!(
        api.delete(Who::Admin, "/api/v1/users/dave").await.status,
        204
    );
    let gone = api.get(Who::Admin, "/api/v1/users/dave").await;
    assert_eq!(gone.refusal(), (404, "NOT_FOUND"));
    assert_eq!(
        api.delete(Who::Admin, "/api/v1/users/dave").await.refusal(),
        (404, "NOT_FOUND")
    );
    // An admin does not lock itself out.
    for reply in [
        api.patch(Who::Admin, "/api/v1/users/root", json!({"admin": false}))
            .await,
        api.patch(Who::Admin, "/api/v1/users/root", json!({"disabled": true}))
            .await,
        api.delete(Who::Admin, "/api/v1/users/root").await,
    ] {
        assert_eq!(reply.refusal(), (409, "REFUSED"), "{:?}", reply.body);
    }
    assert_eq!(
        api.get(Who::Admin, "/api/v1/users/root").await.body["admin"],
        true
    );
    // The last owner of an organisation stays.
    assert_eq!(
        api.delete(Who::Admin, "/api/v1/users/alice")
            .await
            .refusal(),
        (409, "REFUSED")
    );
}

#[tokio::test]
async fn users_read_themselves_and_nothing_else() {
    let api = Api::start().await;
    let me = api.get(Who::User("alice"), "/api/v1/users/alice").await;
    assert_eq!(
        (me.status, &me.body["name"]),
        (StatusCode::OK, &json!("alice"))
    );
    let missing = api.get(Who::User("alice"), "/api/v1/users/nobody").await;
    let other = api.get(Who::User("alice"), "/api/v1/users/bob").await;
    assert_eq!(other.refusal(), (404, "NOT_FOUND"), "others are hidden");
    assert_eq!(missing.refusal(), other.refusal());

    let refusals = [
        api.get(Who::User("alice"), "/api/v1/users").await,
        api.post(Who::User("alice"), "/api/v1/users", json!({"name": "eve"}))
            .await,
        api.patch(
            Who::User("alice"),
            "/api/v1/users/alice",
            json!({"admin": true}),
        )
        .await,
        api.delete(Who::User("alice"), "/api/v1/users/alice").await,
        api.get(Who::Robot, "/api/v1/users/alice").await,
    ];
    for reply in refusals {
        assert_eq!(reply.refusal(), (403, "DENIED"), "{:?}", reply.body);
    }
    let me = api.get(Who::User("alice"), "/api/v1/users/alice").await;
    assert_eq!(me.body["admin"], false, "nothing changed");

    assert_unauthorized(&api.get(Who::Nobody, "/api/v1/users/alice").await);
    let wrong = Who::Password("alice", "wrong-password");
    assert_unauthorized(&api.get(wrong, "/api/v1/users/alice").await);

    // A bearer token stands for its subject.
    let token = api.t.token(Some(("alice", PASSWORD)), &[]).await;
    let with_token = Api::send(
        http()
            .get(api.url("/api/v1/users/alice"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(with_token.status, StatusCode::OK);
}

/// A refresh token for `user` from the OAuth2 password grant.
async fn refresh_token(api: &Api, user: &str, password: &str) -> String {
    let form = form_body(&[
        ("grant_type", "password"),
        ("service", "aerugo"),
        ("username", user),
        ("password", password),
        ("access_type", "offline"),
    ]);
    let response = http()
        .post(api.url("/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    body["refresh_token"].as_str().unwrap().to_owned()
}

async fn refresh_works(api: &Api, token: &str) -> bool {
    let form = form_body(&[
        ("grant_type", "refresh_token"),
        ("service", "aerugo"),
        ("refresh_token", token),
    ]);
    http()
        .post(api.url("/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap()
        .status()
        == StatusCode::OK
}

#[tokio::test]
async fn changing_a_password_needs_the_current_one_and_ends_sessions() {
    let api = Api::start().await;
    let session = refresh_token(&api, "alice", PASSWORD).await;
    let path = "/api/v1/users/alice/password";
    let without = api
        .put(
            Who::User("alice"),
            path,
            json!({"new_password": "new-password-1"}),
        )
        .await;
    assert_eq!(without.refusal(), (400, "INVALID"));
    let wrong = api
        .put(
            Who::User("alice"),
            path,
            json!({"current_password": "not-it-at-all", "new_password": "new-password-1"}),
        )
        .await;
    assert_eq!(wrong.refusal(), (403, "DENIED"));
    let short = api
        .put(
            Who::User("alice"),
            path,
            json!({"current_password": PASSWORD, "new_password": "short"}),
        )
        .await;
    assert_eq!(short.refusal(), (400, "INVALID"));
    assert!(refresh_works(&api, &session).await, "nothing changed yet");
    let other = api
        .put(
            Who::User("bob"),
            path,
            json!({"current_password": PASSWORD, "new_password": "new-password-1"}),
        )
        .await;
    assert_eq!(other.refusal(), (404, "NOT_FOUND"));

    let changed = api
        .put(
            Who::User("alice"),
            path,
            json!({"current_password": PASSWORD, "new_password": "new-password-1"}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT);
    assert!(!refresh_works(&api, &session).await, "sessions end");
    assert_unauthorized(&api.get(Who::User("alice"), "/api/v1/users/alice").await);
    let new = Who::Password("alice", "new-password-1");
    assert_eq!(
        api.get(new, "/api/v1/users/alice").await.status,
        StatusCode::OK
    );

    // An admin resets a password without knowing it.
    let reset = api
        .put(
            Who::Admin,
            "/api/v1/users/bob/password",
            json!({"new_password": "reset-password"}),
        )
        .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT);
    assert_unauthorized(&api.get(Who::User("bob"), "/api/v1/users/bob").await);
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let api = Api::start().await;
    let bad = [
        json!({"name": "eve", "password": "short"}),
        json!({"name": "Not_A_Name!"}),
        json!({"name": "eve", "colour": "blue"}),
        json!({"name": "eve", "admin": "yes"}),
        json!(["eve"]),
    ];
    for body in bad {
        let reply = api.post(Who::Admin, "/api/v1/users", body.clone()).await;
        assert_eq!(reply.refusal(), (400, "INVALID"), "{body}");
        assert!(!reply.body["message"].as_str().unwrap().is_empty());
    }
    let not_json = Api::send(
        api.request(Who::Admin, reqwest::Method::POST, "/api/v1/users")
            .body("name=eve"),
    )
    .await;
    assert_eq!(not_json.refusal(), (400, "INVALID"));
    for query in ["limit=0", "limit=1001", "limit=x", "after=Not_A_Name!"] {
        let reply = api.get(Who::Admin, &format!("/api/v1/users?{query}")).await;
        assert_eq!(reply.refusal(), (400, "INVALID"), "{query}");
    }
    assert_eq!(
        api.get(Who::Admin, "/api/v1/users/eve").await.refusal(),
        (404, "NOT_FOUND"),
        "nothing was created"
    );
    assert_eq!(
        api.get(Who::Admin, "/api/v1/users/Not_A_Name!")
            .await
            .refusal(),
        (400, "INVALID")
    );
}
