//! The management REST API (`/api/v1/…`, docs/API.md) over HTTP: every endpoint, who may call
//! it (registry admin, organisation owner, member, stranger, anonymous, robot), that bad input
//! changes nothing, pagination, the audit trail, and that the OpenAPI document matches both
//! docs/openapi.json and what the server really answers. Runs on the production stack too
//! (`AERUGO_TEST_STACK=production`).
//!
//! The fixture is the auth tests' `Tenants` (admin root; alice owns acme, bob is a member;
//! robot acme+ci) plus carol, a user in no organisation, made through the API.

mod audit;
mod namespaces;
mod openapi;
mod orgs;
mod repos;
mod robots;
mod users;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::auth::{ADMIN, ADMIN_PASSWORD, PASSWORD, Tenants, http};

/// Who calls.
#[derive(Clone, Copy, Debug)]
pub enum Who {
    Admin,
    User(&'static str),
    /// acme+ci, with its secret.
    Robot,
    /// Basic credentials as given (a wrong password, a new one).
    Password(&'static str, &'static str),
    Nobody,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The error code of an error reply.
    pub fn code(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }

    /// `(status, error code)`, to compare with one `assert_eq!`.
    pub fn refusal(&self) -> (u16, &str) {
        (self.status.as_u16(), self.code())
    }
}

pub struct Api {
    pub t: Tenants,
}

impl Api {
    pub async fn start() -> Api {
        let api = Api {
            t: Tenants::start().await,
        };
        let carol = api
            .post(
                Who::Admin,
                "/api/v1/users",
                json!({"name": "carol", "password": PASSWORD}),
            )
            .await;
        assert_eq!(carol.status, StatusCode::CREATED, "{:?}", carol.body);
        api
    }

    pub fn url(&self, path: &str) -> String {
        self.t.url(path)
    }

    pub fn request(
        &self,
        who: Who,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let request = http().request(method, self.url(path));
        match who {
            Who::Admin => request.basic_auth(ADMIN, Some(ADMIN_PASSWORD)),
            Who::User(name) => request.basic_auth(name, Some(PASSWORD)),
            Who::Robot => request.basic_auth("acme+ci", Some(&self.t.robot_secret)),
            Who::Password(user, password) => request.basic_auth(user, Some(password)),
            Who::Nobody => request,
        }
    }

    pub async fn send(request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!("not JSON ({status}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn call(
        &self,
        who: Who,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.request(who, method, path);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        Self::send(request).await
    }

    pub async fn get(&self, who: Who, path: &str) -> Reply {
        self.call(who, reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, who: Who, path: &str, body: Value) -> Reply {
        self.call(who, reqwest::Method::POST, path, Some(body))
            .await
    }

    pub async fn put(&self, who: Who, path: &str, body: Value) -> Reply {
        self.call(who, reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, who: Who, path: &str, body: Value) -> Reply {
        self.call(who, reqwest::Method::PATCH, path, Some(body))
            .await
    }

    pub async fn delete(&self, who: Who, path: &str) -> Reply {
        self.call(who, reqwest::Method::DELETE, path, None).await
    }

    /// Every page of a listing, following `next` with `limit` items a page.
    pub async fn all_pages(&self, who: Who, path: &str, limit: usize) -> Vec<Vec<Value>> {
        let mut pages = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut url = format!("{path}?limit={limit}");
            if let Some(after) = &after {
                url.push_str(&format!("&after={after}"));
            }
            let reply = self.get(who, &url).await;
            assert_eq!(reply.status, StatusCode::OK, "{url}: {:?}", reply.body);
            pages.push(reply.body["items"].as_array().expect("items").clone());
            match reply.body["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return pages,
            }
        }
    }
}

/// The names in a page's items, under `field`.
pub fn names(items: &[Value], field: &str) -> Vec<String> {
    items
        .iter()
        .map(|item| item[field].as_str().expect("a name").to_owned())
        .collect()
}

/// Asserts the refusal every caller that is not signed in gets.
pub fn assert_unauthorized(reply: &Reply) {
    assert_eq!(reply.refusal(), (401, "UNAUTHORIZED"), "{:?}", reply.body);
    assert_eq!(
        reply
            .headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap()),
        Some("Basic realm=\"aerugo\"")
    );
}
