//! `/api/v1/repos/{name}`: details, settings (visibility, grants) and deletion.

use reqwest::StatusCode;
use serde_json::json;

use super::super::auth::{As, PASSWORD, get, image, push};
use super::super::support::image::TestImage;
use super::{Api, Who, assert_unauthorized};

/// Bytes of the image's blobs.
fn size(image: &TestImage) -> u64 {
    image.blobs().iter().map(|b| b.size).sum()
}

async fn pushed(api: &Api, repo: &str, tag: &str, image: &TestImage) {
    let status = push(&api.t, As::Basic("alice", PASSWORD), repo, tag, image).await;
    assert_eq!(status, StatusCode::CREATED, "push {repo}:{tag}");
}

#[tokio::test]
async fn details_show_settings_tags_and_size() {
    let api = Api::start().await;
    let app = image("app");
    pushed(&api, "acme/app", "v1", &app).await;
    pushed(&api, "acme/app", "v2", &app).await;
    pushed(&api, "acme/team/deep", "latest", &image("deep")).await;

    let details = api.get(Who::User("bob"), "/api/v1/repos/acme/app").await;
    assert_eq!(details.status, StatusCode::OK, "{:?}", details.body);
    assert_eq!(
        details.body,
        json!({
            "name": "acme/app",
            "visibility": "private",
            "grants": [],
            "tags": {"items": ["v1", "v2"], "next": null},
            "size_bytes": size(&app),
        })
    );
    let first = api
        .get(Who::User("alice"), "/api/v1/repos/acme/app?limit=1")
        .await;
    assert_eq!(first.body["tags"], json!({"items": ["v1"], "next": "v1"}));
    let second = api
        .get(
            Who::User("alice"),
            "/api/v1/repos/acme/app?limit=1&after=v1",
        )
        .await;
    assert_eq!(second.body["tags"], json!({"items": ["v2"], "next": null}));

    let nested = api
        .get(Who::User("alice"), "/api/v1/repos/acme/team/deep")
        .await;
    assert_eq!(nested.body["name"], "acme/team/deep");

    // Strangers are told it does not exist, exactly as for a missing one.
    let hidden = api.get(Who::User("carol"), "/api/v1/repos/acme/app").await;
    let missing = api
        .get(Who::User("alice"), "/api/v1/repos/acme/nothing")
        .await;
    assert_eq!(hidden.refusal(), (404, "NOT_FOUND"));
    assert_eq!(hidden.body, missing.body);
    assert_eq!(
        api.get(Who::Robot, "/api/v1/repos/acme/app")
            .await
            .refusal(),
        (403, "DENIED")
    );
    assert_unauthorized(&api.get(Who::Nobody, "/api/v1/repos/acme/app").await);
    assert_eq!(
        api.get(Who::Admin, "/api/v1/repos/acme/App")
            .await
            .refusal(),
        (400, "INVALID")
    );
}

#[tokio::test]
async fn grants_and_visibility_are_set_by_repository_managers() {
    let api = Api::start().await;
    pushed(&api, "acme/app", "v1", &image("app")).await;
    api.post(
        Who::User("alice"),
        "/api/v1/orgs/acme/teams",
        json!({"name": "devs"}),
    )
    .await;
    let permissions = "/api/v1/repos/acme/app/permissions";
    let grants = json!([
        {"kind": "user", "name": "carol", "permission": "admin"},
        {"kind": "team", "team": "devs", "permission": "read"},
    ]);
    assert_eq!(
        api.put(Who::User("bob"), permissions, grants.clone())
            .await
            .refusal(),
        (403, "DENIED"),
        "a member only pulls"
    );
    assert_eq!(
        api.put(Who::User("carol"), permissions, grants.clone())
            .await
            .refusal(),
        (404, "NOT_FOUND")
    );
    let set = api
        .put(Who::User("alice"), permissions, grants.clone())
        .await;
    assert_eq!(set.status, StatusCode::OK, "{:?}", set.body);
    assert_eq!(set.body["grants"].as_array().unwrap().len(), 2);

    // carol's admin grant lets her read and manage the repository.
    let details = api.get(Who::User("carol"), "/api/v1/repos/acme/app").await;
    assert_eq!(details.status, StatusCode::OK);
    let public = api
        .put(
            Who::User("carol"),
            "/api/v1/repos/acme/app/visibility",
            json!({"visibility": "public"}),
        )
        .await;
    assert_eq!(public.body["visibility"], "public");
    assert_eq!(
        get(&api.t, As::Nobody, "/v2/acme/app/manifests/v1")
            .await
            .status(),
        StatusCode::OK,
        "anyone pulls a public repository"
    );

    // Bad grants change nothing.
    for bad in [
        json!([{"kind": "user", "name": "nobody", "permission": "read"}]),
        json!([{"kind": "team", "team": "nope", "permission": "read"}]),
        json!([{"kind": "user", "name": "bob", "permission": "owner"}]),
        json!([{"kind": "group", "name": "bob", "permission": "read"}]),
        json!({"kind": "user"}),
    ] {
        let reply = api.put(Who::User("alice"), permissions, bad.clone()).await;
        assert_eq!(reply.refusal(), (400, "INVALID"), "{bad}");
    }
    let bad_visibility = api
        .put(
            Who::User("alice"),
            "/api/v1/repos/acme/app/visibility",
            json!({"visibility": "secret"}),
        )
        .await;
    assert_eq!(bad_visibility.refusal(), (400, "INVALID"));
    let details = api.get(Who::User("alice"), "/api/v1/repos/acme/app").await;
    assert_eq!(details.body["grants"], set.body["grants"]);
    assert_eq!(details.body["visibility"], "public");

    // Settings may be made before the first push, and show.
    let early = api
        .put(
            Who::User("alice"),
            "/api/v1/repos/acme/later/permissions",
            json!([{"kind": "user", "name": "bob", "permission": "write"}]),
        )
        .await;
    assert_eq!(early.status, StatusCode::OK);
    let later = api.get(Who::User("bob"), "/api/v1/repos/acme/later").await;
    assert_eq!(
        (later.status, &later.body["tags"]["items"]),
        (StatusCode::OK, &json!([]))
    );
    assert_eq!(
        push(
            &api.t,
            As::Basic("bob", PASSWORD),
            "acme/later",
            "v1",
            &image("later")
        )
        .await,
        StatusCode::CREATED,
        "the grant works"
    );
    assert_eq!(
        api.put(Who::User("alice"), "/api/v1/repos/acme/app/tags", json!({}))
            .await
            .refusal(),
        (400, "INVALID")
    );
}

#[tokio::test]
async fn deleting_a_repository_removes_its_content_and_settings() {
    let api = Api::start().await;
    let app = image("app");
    pushed(&api, "acme/app", "v1", &app).await;
    pushed(&api, "acme/kept", "v1", &image("kept")).await;
    api.put(
        Who::User("alice"),
        "/api/v1/repos/acme/app/visibility",
        json!({"visibility": "public"}),
    )
    .await;
    // Reads fill the caches the deletion must empty.
    assert_eq!(
        get(&api.t, As::Nobody, "/v2/acme/app/manifests/v1")
            .await
            .status(),
        200
    );

    assert_eq!(
        api.delete(Who::User("bob"), "/api/v1/repos/acme/app")
            .await
            .refusal(),
        (403, "DENIED")
    );
    // Public: carol sees it, so she is refused rather than told it does not exist.
    assert_eq!(
        api.delete(Who::User("carol"), "/api/v1/repos/acme/app")
            .await
            .refusal(),
        (403, "DENIED")
    );
    assert_eq!(
        api.delete(Who::User("carol"), "/api/v1/repos/acme/kept")
            .await
            .refusal(),
        (404, "NOT_FOUND")
    );
    assert_eq!(
        api.delete(Who::Robot, "/api/v1/repos/acme/app")
            .await
            .refusal(),
        (403, "DENIED")
    );
    assert_eq!(
        api.delete(Who::User("alice"), "/api/v1/repos/acme/app")
            .await
            .status,
        204
    );

    assert_eq!(
        api.get(Who::User("alice"), "/api/v1/repos/acme/app")
            .await
            .refusal(),
        (404, "NOT_FOUND")
    );
    let admin = As::Basic(
        super::super::auth::ADMIN,
        super::super::auth::ADMIN_PASSWORD,
    );
    assert_eq!(
        get(&api.t, admin, "/v2/acme/app/manifests/v1")
            .await
            .status(),
        404
    );
    assert_eq!(
        get(
            &api.t,
            admin,
            &format!("/v2/acme/app/manifests/{}", app.digest)
        )
        .await
        .status(),
        404
    );
    assert_eq!(
        get(&api.t, As::Nobody, "/v2/acme/app/manifests/v1")
            .await
            .status(),
        401,
        "no longer public"
    );
    let catalog: serde_json::Value = get(&api.t, admin, "/v2/_catalog")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(catalog["repositories"], json!(["acme/kept"]));
    assert_eq!(
        api.delete(Who::User("alice"), "/api/v1/repos/acme/app")
            .await
            .refusal(),
        (404, "NOT_FOUND")
    );

    // Garbage collection removes the blobs only the deleted repository had (made at least a
    // second before, as a grace period of 0 still means).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let gc = api
        .post(
            Who::Admin,
            "/api/v1/admin/gc?grace_period_seconds=0",
            json!({}),
        )
        .await;
    assert_eq!(gc.status, StatusCode::OK, "{:?}", gc.body);
    assert_eq!(gc.body["blobs_deleted"], 3, "the config and two layers");
    assert_eq!(
        get(&api.t, admin, "/v2/acme/kept/manifests/v1")
            .await
            .status(),
        200
    );

    pushed(&api, "acme/app", "again", &app).await;
    let details = api.get(Who::User("alice"), "/api/v1/repos/acme/app").await;
    assert_eq!(details.body["tags"]["items"], json!(["again"]));
    assert_eq!(
        details.body["visibility"], "private",
        "the settings went with it"
    );
}
