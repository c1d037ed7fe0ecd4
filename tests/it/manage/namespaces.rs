//! `/api/v1/namespaces/{name}/quota`: admins set quotas; the namespace's people read them
//! with the usage.

use reqwest::StatusCode;
use serde_json::json;

use super::super::auth::{As, PASSWORD, image, push};
use super::{Api, Who};

#[tokio::test]
async fn admins_set_quotas_and_members_read_them_with_the_usage() {
    let api = Api::start().await;
    let shared = image("shared");
    for repo in ["acme/a", "acme/b"] {
        let status = push(&api.t, As::Basic("alice", PASSWORD), repo, "v1", &shared).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let blob_bytes: u64 = shared.blobs().iter().map(|b| b.size).sum();
    let quota = "/api/v1/namespaces/acme/quota";
    let unset = api.get(Who::User("bob"), quota).await;
    assert_eq!(
        unset.body,
        json!({"namespace": "acme", "kind": "organization", "quota_bytes": null,
            "usage_bytes": blob_bytes}),
        "a blob in two repositories counts once"
    );

    let set = api
        .put(Who::Admin, quota, json!({"quota_bytes": 1_000_000}))
        .await;
    assert_eq!(
        (set.status, &set.body["quota_bytes"]),
        (StatusCode::OK, &json!(1_000_000))
    );
    assert_eq!(
        api.get(Who::User("alice"), quota).await.body["quota_bytes"],
        1_000_000
    );

    // An owner may read, not set; strangers are told it does not exist.
    assert_eq!(
        api.put(Who::User("alice"), quota, json!({"quota_bytes": null}))
            .await
            .refusal(),
        (403, "DENIED")
    );
    assert_eq!(
        api.get(Who::User("carol"), quota).await.refusal(),
        (404, "NOT_FOUND")
    );
    assert_eq!(
        api.get(Who::User("carol"), "/api/v1/namespaces/nothere/quota")
            .await
            .refusal(),
        (404, "NOT_FOUND")
    );
    assert_eq!(api.get(Who::Robot, quota).await.refusal(), (403, "DENIED"));
    let own = api
        .get(Who::User("carol"), "/api/v1/namespaces/carol/quota")
        .await;
    assert_eq!(
        (own.status, &own.body["kind"]),
        (StatusCode::OK, &json!("user"))
    );

    for bad in [
        json!({"quota_bytes": -1}),
        json!({"quota_bytes": "lots"}),
        json!({"quota": 5}),
    ] {
        assert_eq!(
            api.put(Who::Admin, quota, bad.clone()).await.refusal(),
            (400, "INVALID"),
            "{bad}"
        );
    }
    assert_eq!(
        api.get(Who::Admin, quota).await.body["quota_bytes"],
        1_000_000,
        "unchanged"
    );

    let lifted = api
        .put(Who::Admin, quota, json!({"quota_bytes": null}))
        .await;
    assert_eq!(lifted.body["quota_bytes"], json!(null));
    assert_eq!(
        api.put(
            Who::Admin,
            "/api/v1/namespaces/nothere/quota",
            json!({"quota_bytes": 1})
        )
        .await
        .refusal(),
        (404, "NOT_FOUND")
    );
}
