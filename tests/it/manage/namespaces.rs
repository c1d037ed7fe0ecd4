//! `/api/v1/namespaces/{name}/quota`: admins set quotas; the namespace's people read them
//! with the usage.

use aerugo::testkit::image::{Blob, TestImage};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::super::auth::{ADMIN, ADMIN_PASSWORD, As, PASSWORD, http, image, push};
use super::{Api, Reply, Who};

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

/// `/v2/` requests as alice (owner of acme) or as the registry admin.
struct Pusher<'a> {
    api: &'a Api,
    user: &'static str,
    password: &'static str,
}

impl Pusher<'_> {
    fn send(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        http()
            .request(method, self.api.url(path))
            .basic_auth(self.user, Some(self.password))
    }

    /// Monolithic `POST ?digest=` of the blob into `repo`.
    async fn push_blob(&self, repo: &str, blob: &Blob) -> Reply {
        let path = format!("/v2/{repo}/blobs/uploads/?digest={}", blob.digest);
        reply(self.send(reqwest::Method::POST, &path).body(blob.bytes())).await
    }

    async fn start_upload(&self, repo: &str) -> (StatusCode, String) {
        let path = format!("/v2/{repo}/blobs/uploads/");
        let response = self
            .send(reqwest::Method::POST, &path)
            .send()
            .await
            .unwrap();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (response.status(), location)
    }

    /// One `PATCH` of the whole blob, as a stream of unknown length (what docker sends).
    async fn patch(&self, location: &str, blob: &Blob) -> Reply {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(blob.bytes())];
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
        reply(
            http()
                .patch(location)
                .basic_auth(self.user, Some(self.password))
                .body(body),
        )
        .await
    }

    async fn finish(&self, location: &str, blob: &Blob) -> Reply {
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={}", blob.digest);
        reply(http().put(url).basic_auth(self.user, Some(self.password))).await
    }

    async fn mount(&self, repo: &str, from: &str, blob: &Blob) -> Reply {
        let path = format!(
            "/v2/{repo}/blobs/uploads/?mount={}&from={from}",
            blob.digest
        );
        reply(self.send(reqwest::Method::POST, &path)).await
    }

    async fn has_blob(&self, repo: &str, blob: &Blob) -> bool {
        let path = format!("/v2/{repo}/blobs/{}", blob.digest);
        let response = self
            .send(reqwest::Method::HEAD, &path)
            .send()
            .await
            .unwrap();
        response.status() == StatusCode::OK
    }
}

async fn reply(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

/// The `/v2/` error code and message of a refused push.
fn denial(reply: &Reply) -> (u16, String, String) {
    let error = &reply.body["errors"][0];
    (
        reply.status.as_u16(),
        error["code"].as_str().unwrap_or_default().to_owned(),
        error["message"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn usage(api: &Api, namespace: &str) -> u64 {
    let path = format!("/api/v1/namespaces/{namespace}/quota");
    api.get(Who::Admin, &path).await.body["usage_bytes"]
        .as_u64()
        .unwrap()
}

async fn set_quota(api: &Api, namespace: &str, quota: Option<u64>) {
    let path = format!("/api/v1/namespaces/{namespace}/quota");
    let set = api
        .put(Who::Admin, &path, json!({"quota_bytes": quota}))
        .await;
    assert_eq!(set.status, StatusCode::OK, "{:?}", set.body);
}

#[tokio::test]
async fn pushes_past_a_quota_are_refused_before_anything_is_linked() {
    let api = Api::start().await;
    let alice = Pusher {
        api: &api,
        user: "alice",
        password: PASSWORD,
    };
    let first = image("first");
    let status = push(&api.t, As::Basic("alice", PASSWORD), "acme/a", "v1", &first).await;
    assert_eq!(status, StatusCode::CREATED);
    let used = usage(&api, "acme").await;
    let quota = used + 1000;
    set_quota(&api, "acme", Some(quota)).await;
    let second = TestImage::with_layers("second", &[2000, quota as usize + 1]);
    let (medium, huge) = (&second.layers[0], &second.layers[1]);

    // A monolithic push names its blob up front: refused with the numbers, nothing linked.
    let refused = alice.push_blob("acme/b", medium).await;
    let (status, code, message) = denial(&refused);
    assert_eq!((status, code.as_str()), (403, "DENIED"), "{message}");
    assert!(
        message.contains("namespace acme") && message.contains(&quota.to_string()),
        "{message}"
    );
    let detail = &refused.body["errors"][0]["detail"];
    assert_eq!(
        (&detail["adding_bytes"], &detail["used_bytes"]),
        (&json!(medium.size), &json!(used))
    );
    assert!(!alice.has_blob("acme/b", medium).await);
    // A session learns its blob at the end: it may grow to the quota, its PUT is charged.
    let (status, session) = alice.start_upload("acme/b").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        alice.patch(&session, medium).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(denial(&alice.finish(&session, medium).await).1, "DENIED");
    assert!(!alice.has_blob("acme/b", medium).await);
    let (_, session) = alice.start_upload("acme/b").await;
    assert_eq!(
        denial(&alice.patch(&session, huge).await).1,
        "DENIED",
        "a session past the whole quota is refused while streaming"
    );
    assert_eq!(usage(&api, "acme").await, used, "nothing was counted");

    // Two sessions that each fit but not together: the second to finish is refused.
    let rivals = TestImage::with_layers("rivals", &[600, 600]);
    let (_, one) = alice.start_upload("acme/c").await;
    let (_, two) = alice.start_upload("acme/d").await;
    assert_eq!(
        alice.patch(&one, &rivals.layers[0]).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        alice.patch(&two, &rivals.layers[1]).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        alice.finish(&two, &rivals.layers[1]).await.status,
        StatusCode::CREATED
    );
    let late = alice.finish(&one, &rivals.layers[0]).await;
    assert_eq!(
        denial(&late).1,
        "DENIED",
        "the room went to the other session"
    );
    assert!(!alice.has_blob("acme/c", &rivals.layers[0]).await);
    let full = used + 600;
    assert_eq!(usage(&api, "acme").await, full);

    // A full namespace refuses new bytes, and a mount from another namespace even to an
    // admin; what it holds can be mounted, uploaded again or re-pushed at no cost.
    set_quota(&api, "acme", Some(full)).await;
    let fresh = TestImage::with_layers("fresh", &[1]);
    assert_eq!(
        denial(&alice.push_blob("acme/e", &fresh.layers[0]).await).1,
        "DENIED"
    );
    let theirs = image("carol's");
    let status = push(
        &api.t,
        As::Basic("carol", PASSWORD),
        "carol/x",
        "v1",
        &theirs,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "other namespaces are not limited"
    );
    let root = Pusher {
        api: &api,
        user: ADMIN,
        password: ADMIN_PASSWORD,
    };
    let foreign = &theirs.layers[0];
    assert_eq!(
        denial(&root.mount("acme/e", "carol/x", foreign).await).1,
        "DENIED"
    );
    assert!(!root.has_blob("acme/e", foreign).await);
    let own = &first.layers[0];
    assert_eq!(
        alice.mount("acme/e", "acme/a", own).await.status,
        StatusCode::CREATED
    );
    let held = &rivals.layers[1];
    assert_eq!(
        alice.push_blob("acme/f", held).await.status,
        StatusCode::CREATED
    );
    let (_, again) = alice.start_upload("acme/g").await;
    assert_eq!(alice.patch(&again, held).await.status, StatusCode::ACCEPTED);
    assert_eq!(alice.finish(&again, held).await.status, StatusCode::CREATED);
    let status = push(&api.t, As::Basic("alice", PASSWORD), "acme/a", "v2", &first).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(usage(&api, "acme").await, full);

    // Refusals are in the audit log (written in the background), as their callers'.
    let mut refusals = (0, 0);
    for _ in 0..30 {
        let log = api
            .get(Who::Admin, "/api/v1/audit?outcome=denied&action=blob.push")
            .await;
        let by = |actor: &str| {
            let items = log.body["items"].as_array().unwrap();
            items.iter().filter(|r| r["actor"] == actor).count()
        };
        refusals = (by("alice"), by(ADMIN));
        if refusals == (5, 1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(refusals, (5, 1), "alice's and the admin's refused pushes");

    // Lifted, the refused push goes through.
    set_quota(&api, "acme", None).await;
    let status = push(
        &api.t,
        As::Basic("alice", PASSWORD),
        "acme/b",
        "v1",
        &second,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}
