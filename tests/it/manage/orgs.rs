//! `/api/v1/orgs`: organisations, members and teams, and who may touch them.

use reqwest::StatusCode;
use serde_json::json;

use super::super::auth::{As, PASSWORD, image, push};
use super::{Api, Who, assert_unauthorized, names};

#[tokio::test]
async fn any_user_creates_an_organisation_and_owns_it() {
    let api = Api::start().await;
    // What `curl -u carol:… -X POST …/api/v1/orgs -d '{"name":"widgets"}'` sends.
    let created = Api::send(
        api.request(Who::User("carol"), reqwest::Method::POST, "/api/v1/orgs")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(r#"{"name":"widgets"}"#),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(
        (&created.body["name"], &created.body["role"]),
        (&json!("widgets"), &json!("owner"))
    );
    let again = api
        .post(Who::User("bob"), "/api/v1/orgs", json!({"name": "widgets"}))
        .await;
    assert_eq!(again.refusal(), (409, "ALREADY_EXISTS"));
    let user_name = api
        .post(Who::User("bob"), "/api/v1/orgs", json!({"name": "alice"}))
        .await;
    assert_eq!(
        user_name.refusal(),
        (409, "ALREADY_EXISTS"),
        "users and orgs share names"
    );
    let bad = api
        .post(Who::User("bob"), "/api/v1/orgs", json!({"name": "-x-"}))
        .await;
    assert_eq!(bad.refusal(), (400, "INVALID"));
    assert_eq!(
        api.post(Who::Robot, "/api/v1/orgs", json!({"name": "robots"}))
            .await
            .refusal(),
        (403, "DENIED")
    );
    assert_unauthorized(
        &api.post(Who::Nobody, "/api/v1/orgs", json!({"name": "anon"}))
            .await,
    );

    // Each user lists its own organisations; the admin lists all, in pages.
    let mine = api.get(Who::User("carol"), "/api/v1/orgs").await;
    assert_eq!(
        names(mine.body["items"].as_array().unwrap(), "name"),
        ["widgets"]
    );
    let bobs = api.get(Who::User("bob"), "/api/v1/orgs").await;
    assert_eq!(bobs.body["items"][0]["role"], "member");
    for name in ["o1", "o2", "o3"] {
        api.post(Who::Admin, "/api/v1/orgs", json!({"name": name}))
            .await;
    }
    let pages = api.all_pages(Who::Admin, "/api/v1/orgs", 2).await;
    let all: Vec<String> = pages.iter().flat_map(|p| names(p, "name")).collect();
    assert_eq!(all, ["acme", "o1", "o2", "o3", "widgets"]);
}

#[tokio::test]
async fn strangers_cannot_tell_an_organisation_exists() {
    let api = Api::start().await;
    let member = api.get(Who::User("bob"), "/api/v1/orgs/acme").await;
    assert_eq!(
        (member.status, &member.body["role"]),
        (StatusCode::OK, &json!("member"))
    );
    let admin = api.get(Who::Admin, "/api/v1/orgs/acme").await;
    assert_eq!(
        (admin.status, &admin.body["role"]),
        (StatusCode::OK, &json!(null))
    );
    for path in [
        "/api/v1/orgs/{}",
        "/api/v1/orgs/{}/members",
        "/api/v1/orgs/{}/teams",
        "/api/v1/orgs/{}/robots",
    ] {
        let existing = api
            .get(Who::User("carol"), &path.replace("{}", "acme"))
            .await;
        let missing = api
            .get(Who::User("carol"), &path.replace("{}", "nothere"))
            .await;
        assert_eq!(existing.refusal(), (404, "NOT_FOUND"), "{path}");
        assert_eq!(
            existing.body["message"]
                .as_str()
                .unwrap()
                .replace("acme", "X"),
            missing.body["message"]
                .as_str()
                .unwrap()
                .replace("nothere", "X"),
            "{path}"
        );
    }
    assert_eq!(
        api.delete(Who::User("carol"), "/api/v1/orgs/acme")
            .await
            .refusal(),
        (404, "NOT_FOUND")
    );
    assert_eq!(
        api.delete(Who::User("bob"), "/api/v1/orgs/acme")
            .await
            .refusal(),
        (403, "DENIED")
    );
    assert_eq!(
        api.get(Who::Robot, "/api/v1/orgs/acme").await.refusal(),
        (403, "DENIED")
    );
    assert_unauthorized(&api.get(Who::Nobody, "/api/v1/orgs/acme").await);
    assert_eq!(
        api.get(Who::User("bob"), "/api/v1/orgs/acme").await.status,
        200,
        "still there"
    );

    assert_eq!(
        api.delete(Who::User("alice"), "/api/v1/orgs/acme")
            .await
            .status,
        204
    );
    assert_eq!(
        api.get(Who::Admin, "/api/v1/orgs/acme").await.refusal(),
        (404, "NOT_FOUND")
    );
}

#[tokio::test]
async fn owners_and_admins_manage_members_and_only_owners_touch_owners() {
    let api = Api::start().await;
    let members = "/api/v1/orgs/acme/members";
    let add = |user: &str, role: &str| json!({"user": user, "role": role});
    assert_eq!(
        api.post(Who::User("bob"), members, add("carol", "member"))
            .await
            .refusal(),
        (403, "DENIED"),
        "a member manages nobody"
    );
    let added = api
        .post(Who::User("alice"), members, add("carol", "member"))
        .await;
    assert_eq!(
        (added.status, &added.body),
        (StatusCode::OK, &add("carol", "member"))
    );
    assert_eq!(
        api.post(Who::User("alice"), members, add("bob", "admin"))
            .await
            .status,
        200
    );
    // bob is an admin now: he manages members, but not owners.
    assert_eq!(
        api.post(Who::User("bob"), members, add("carol", "owner"))
            .await
            .refusal(),
        (403, "DENIED")
    );
    assert_eq!(
        api.delete(Who::User("bob"), &format!("{members}/alice"))
            .await
            .refusal(),
        (403, "DENIED")
    );
    assert_eq!(
        api.post(Who::User("bob"), members, add("carol", "admin"))
            .await
            .status,
        200
    );
    // Bad input changes nothing.
    for body in [
        add("carol", "emperor"),
        json!({"user": "carol"}),
        add("Carol!", "member"),
    ] {
        assert_eq!(
            api.post(Who::User("alice"), members, body.clone())
                .await
                .refusal(),
            (400, "INVALID"),
            "{body}"
        );
    }
    assert_eq!(
        api.post(Who::User("alice"), members, add("nobody", "member"))
            .await
            .refusal(),
        (404, "NOT_FOUND")
    );
    // The last owner stays.
    assert_eq!(
        api.post(Who::User("alice"), members, add("alice", "member"))
            .await
            .refusal(),
        (409, "REFUSED")
    );
    assert_eq!(
        api.delete(Who::User("alice"), &format!("{members}/alice"))
            .await
            .refusal(),
        (409, "REFUSED")
    );

    let pages = api.all_pages(Who::User("bob"), members, 2).await;
    let listed: Vec<(String, String)> = pages
        .iter()
        .flatten()
        .map(|m| {
            (
                m["user"].as_str().unwrap().into(),
                m["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [("alice", "owner"), ("bob", "admin"), ("carol", "admin")];
    assert_eq!(listed, expected.map(|(u, r)| (u.to_owned(), r.to_owned())));
    assert_eq!(pages.len(), 2);

    assert_eq!(
        api.delete(Who::User("bob"), &format!("{members}/carol"))
            .await
            .status,
        204
    );
    assert_eq!(
        api.delete(Who::User("bob"), &format!("{members}/carol"))
            .await
            .refusal(),
        (404, "NOT_FOUND")
    );
    assert_eq!(
        api.get(Who::User("carol"), "/api/v1/orgs/acme")
            .await
            .refusal(),
        (404, "NOT_FOUND"),
        "carol left"
    );
}

#[tokio::test]
async fn teams_and_their_members() {
    let api = Api::start().await;
    let teams = "/api/v1/orgs/acme/teams";
    let devs = json!({"name": "devs", "description": "the developers"});
    assert_eq!(
        api.post(Who::User("bob"), teams, devs.clone())
            .await
            .refusal(),
        (403, "DENIED")
    );
    let created = api.post(Who::User("alice"), teams, devs.clone()).await;
    assert_eq!(
        (created.status, &created.body),
        (StatusCode::CREATED, &devs)
    );
    assert_eq!(
        api.post(Who::User("alice"), teams, devs.clone())
            .await
            .refusal(),
        (409, "ALREADY_EXISTS")
    );
    api.post(Who::User("alice"), teams, json!({"name": "ops"}))
        .await;
    let listed = api.get(Who::User("bob"), teams).await;
    assert_eq!(
        names(listed.body["items"].as_array().unwrap(), "name"),
        ["devs", "ops"]
    );

    let members = "/api/v1/orgs/acme/teams/devs/members";
    assert_eq!(
        api.post(Who::User("alice"), members, json!({"user": "bob"}))
            .await
            .status,
        204
    );
    assert_eq!(
        api.post(Who::User("alice"), members, json!({"user": "carol"}))
            .await
            .refusal(),
        (409, "REFUSED"),
        "carol is not in acme"
    );
    assert_eq!(
        api.post(Who::User("bob"), members, json!({"user": "alice"}))
            .await
            .refusal(),
        (403, "DENIED")
    );
    let listed = api.get(Who::User("bob"), members).await;
    assert_eq!(
        names(listed.body["items"].as_array().unwrap(), "user"),
        ["bob"]
    );
    assert_eq!(
        api.get(Who::User("bob"), "/api/v1/orgs/acme/teams/nope/members")
            .await
            .refusal(),
        (404, "NOT_FOUND")
    );
    assert_eq!(
        api.delete(Who::User("alice"), &format!("{members}/bob"))
            .await
            .status,
        204
    );
    let listed = api.get(Who::User("bob"), members).await;
    assert_eq!(listed.body["items"], json!([]));

    assert_eq!(
        api.delete(Who::User("bob"), &format!("{teams}/devs"))
            .await
            .refusal(),
        (403, "DENIED")
    );
    assert_eq!(
        api.delete(Who::User("alice"), &format!("{teams}/devs"))
            .await
            .status,
        204
    );
    assert_eq!(
        api.delete(Who::User("alice"), &format!("{teams}/devs"))
            .await
            .refusal(),
        (404, "NOT_FOUND")
    );
    let listed = api.get(Who::User("alice"), teams).await;
    assert_eq!(
        names(listed.body["items"].as_array().unwrap(), "name"),
        ["ops"]
    );
}

/// Whoever took a deleted namespace's name would own what it held: a user or organisation
/// with repositories is not deleted until they are.
#[tokio::test]
async fn a_namespace_holding_repositories_is_not_deleted() {
    let api = Api::start().await;
    for (user, repo) in [("alice", "acme/app"), ("carol", "carol/tool")] {
        let status = push(&api.t, As::Basic(user, PASSWORD), repo, "v1", &image(repo)).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let org = api.delete(Who::User("alice"), "/api/v1/orgs/acme").await;
    assert_eq!(org.refusal(), (409, "REFUSED"));
    let message = org.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("acme/app"), "{message}");
    let user = api.delete(Who::Admin, "/api/v1/users/carol").await;
    assert_eq!(user.refusal(), (409, "REFUSED"), "{:?}", user.body);
    assert_eq!(
        api.get(Who::User("bob"), "/api/v1/orgs/acme").await.status,
        200
    );
    assert_eq!(api.get(Who::Admin, "/api/v1/users/carol").await.status, 200);

    for (who, repo) in [(Who::User("alice"), "acme/app"), (Who::Admin, "carol/tool")] {
        let path = format!("/api/v1/repos/{repo}");
        assert_eq!(api.delete(who, &path).await.status, StatusCode::NO_CONTENT);
    }
    assert_eq!(
        api.delete(Who::User("alice"), "/api/v1/orgs/acme")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.delete(Who::Admin, "/api/v1/users/carol").await.status,
        StatusCode::NO_CONTENT
    );
}
