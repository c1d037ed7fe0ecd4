//! The management REST API under `/api/v1/` (docs/API.md): users, organisations with their
//! members, teams and robots, repository settings, namespace quotas and the audit log, as JSON,
//! with one error shape (`api::error::ManageError`) and one way to page.
//!
//! Every endpoint but the OpenAPI document wants a signed-in account: basic credentials or a
//! bearer token, whose subject stands for the account (the management API's rights are the
//! account's, not the token's repository scopes). Who may do what is `auth::manage`'s (and, for
//! repositories, `auth::policy`'s): handlers ask, record the outcome in the audit log, and
//! answer. A caller who may not even read an organisation or repository is told it does not
//! exist, like a missing one.

use std::fmt::Display;
use std::net::IpAddr;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::routing::{get, post, put};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ManageError;
use crate::accounts::{
    AccountError, AccountName, AuditEvent, Entity, Membership, OrgRole, Outcome,
};
use crate::auth::{Credentials, Principal, manage, password};

mod audit;
mod namespaces;
pub mod openapi;
mod orgs;
mod repos;
mod robots;
mod users;

/// Refuses deleting a user or organisation whose namespace still holds repositories: whoever
/// took the name next would own them.
async fn refuse_if_holding_repositories(
    state: &AppState,
    namespace: &AccountName,
) -> Result<(), ManageError> {
    const SHOWN: usize = 3;
    let mut held = state
        .registry
        .namespace_repositories(namespace.as_str(), SHOWN + 1)
        .await?;
    if held.is_empty() {
        return Ok(());
    }
    if held.len() > SHOWN {
        held[SHOWN] = "…".to_owned();
    }
    Err(AccountError::Refused(format!(
        "{namespace} still holds repositories ({}): delete them first",
        held.join(", ")
    ))
    .into())
}

/// The management routes, merged into the registry's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/users", get(users::list).post(users::create))
        .route(
            "/api/v1/users/{username}",
            get(users::read).patch(users::update).delete(users::delete),
        )
        .route(
            "/api/v1/users/{username}/password",
            put(users::change_password),
        )
        .route("/api/v1/orgs", get(orgs::list).post(orgs::create))
        .route(
            "/api/v1/orgs/{org_name}",
            get(orgs::read).delete(orgs::delete),
        )
        .route(
            "/api/v1/orgs/{org_name}/members",
            get(orgs::members).post(orgs::set_member),
        )
        .route(
            "/api/v1/orgs/{org_name}/members/{username}",
            axum::routing::delete(orgs::remove_member),
        )
        .route(
            "/api/v1/orgs/{org_name}/teams",
            get(orgs::teams).post(orgs::create_team),
        )
        .route(
            "/api/v1/orgs/{org_name}/teams/{team}",
            axum::routing::delete(orgs::delete_team),
        )
        .route(
            "/api/v1/orgs/{org_name}/teams/{team}/members",
            get(orgs::team_members).post(orgs::add_team_member),
        )
        .route(
            "/api/v1/orgs/{org_name}/teams/{team}/members/{username}",
            axum::routing::delete(orgs::remove_team_member),
        )
        .route(
            "/api/v1/orgs/{org_name}/robots",
            get(robots::list_for_org).post(robots::create_for_org),
        )
        .route(
            "/api/v1/orgs/{org_name}/robots/{robot}",
            axum::routing::delete(robots::delete_for_org),
        )
        .route(
            "/api/v1/orgs/{org_name}/robots/{robot}/revoke",
            post(robots::revoke_for_org),
        )
        .route(
            "/api/v1/users/{username}/robots",
            get(robots::list_for_user).post(robots::create_for_user),
        )
        .route(
            "/api/v1/users/{username}/robots/{robot}",
            axum::routing::delete(robots::delete_for_user),
        )
        .route(
            "/api/v1/users/{username}/robots/{robot}/revoke",
            post(robots::revoke_for_user),
        )
        .route(
            "/api/v1/repos/{*name}",
            get(repos::read).delete(repos::delete).put(repos::update),
        )
        .route(
            "/api/v1/namespaces/{name}/quota",
            get(namespaces::quota).put(namespaces::set_quota),
        )
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/openapi.json", get(openapi::serve))
}

// ---- the caller ----

/// The signed-in account a management request acts as, and where it came from.
pub struct Caller {
    pub principal: Principal,
    pub client: Option<IpAddr>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ManageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Caller, ManageError> {
        let client = super::origin::client_of(parts, &state.trusted_proxies);
        let credentials =
            super::auth::credentials(&parts.headers).map_err(|_| ManageError::Unauthorized)?;
        if credentials == Credentials::None {
            return Err(ManageError::Unauthorized);
        }
        let action = format!("api.{}", parts.method.as_str().to_ascii_lowercase());
        let identity = match state.auth.identify(&credentials, client).await {
            Ok(identity) => identity,
            Err(e) => {
                let refused = ManageError::from(e);
                // Credentials that were presented and do not check out are a refusal worth
                // recording (as `/v2` does); the caller is nobody yet.
                if matches!(refused, ManageError::Unauthorized) {
                    let nobody = Caller {
                        principal: Principal::Anonymous,
                        client,
                    };
                    let target = parts.uri.path().to_owned();
                    nobody.audit(state, &action, target, Outcome::Denied).await;
                }
                return Err(refused);
            }
        };
        let caller = Caller {
            principal: identity.principal,
            client,
        };
        if !manage::may_use_api(&caller.principal) {
            return Err(caller.denied(state, &action, parts.uri.path()).await);
        }
        Ok(caller)
    }
}

impl Caller {
    async fn audit(&self, state: &AppState, action: &str, target: String, outcome: Outcome) {
        let subject = self.principal.subject();
        let event = AuditEvent {
            actor: (!subject.is_empty()).then_some(subject),
            client: self.client.map(|ip| ip.to_string()),
            action: action.to_owned(),
            target,
            outcome,
            detail: None,
        };
        // The change is made either way; a lost audit line is logged, not the request's failure.
        if let Err(e) = state.auth.store().append_audit(&event).await {
            tracing::error!(error = %e, action, "could not append to the audit log");
        }
    }

    /// Records a change that was made, and ends this node's cached decisions.
    pub async fn done(&self, state: &AppState, action: &str, target: impl Display) {
        state.auth.account_changed();
        self.audit(state, action, target.to_string(), Outcome::Allowed)
            .await;
    }

    /// Records a refusal and returns it (`403`).
    pub async fn denied(
        &self,
        state: &AppState,
        action: &str,
        target: impl Display,
    ) -> ManageError {
        self.audit(state, action, target.to_string(), Outcome::Denied)
            .await;
        ManageError::Denied
    }

    /// Records a refusal and answers `missing`, what a missing thing gets: the caller may
    /// not learn that it exists.
    pub async fn hidden(
        &self,
        state: &AppState,
        action: &str,
        target: impl Display,
        missing: ManageError,
    ) -> ManageError {
        self.audit(state, action, target.to_string(), Outcome::Denied)
            .await;
        missing
    }

    /// `Ok` when `allowed`, else the recorded refusal.
    pub async fn require(
        &self,
        state: &AppState,
        allowed: bool,
        action: &str,
        target: impl Display,
    ) -> Result<(), ManageError> {
        if allowed {
            Ok(())
        } else {
            Err(self.denied(state, action, target).await)
        }
    }

    /// The organisations the caller belongs to.
    pub async fn memberships(&self, state: &AppState) -> Result<Vec<Membership>, ManageError> {
        match self.principal.user_name() {
            Some(user) => Ok(state.auth.store().memberships(user).await?),
            None => Ok(Vec::new()),
        }
    }

    /// The caller's role in `org`, if it is a member.
    pub async fn role_in(
        &self,
        state: &AppState,
        org: &AccountName,
    ) -> Result<Option<OrgRole>, ManageError> {
        let memberships = self.memberships(state).await?;
        Ok(crate::auth::policy::role_in(org, &memberships))
    }
}

// ---- input ----

/// A JSON request body, whatever its `Content-Type` says (`curl -d` sends
/// `application/x-www-form-urlencoded`). Anything that is not the expected JSON is `400
/// INVALID` before anything is looked at.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ManageError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ManageError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| ManageError::Invalid(e.body_text()))?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ManageError::Invalid(format!("the body is not the JSON expected: {e}")))
    }
}

/// Query parameters, refused as `400 INVALID` in the API's error shape.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ManageError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ManageError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|query| Params(query.0))
            .map_err(|e| ManageError::Invalid(e.body_text()))
    }
}

/// What a missing account of `entity` is answered with.
pub fn missing(entity: Entity, name: impl Display) -> ManageError {
    AccountError::not_found(entity, name).into()
}

/// A user, organisation, team or robot name from the path.
pub fn account_name(text: &str) -> Result<AccountName, ManageError> {
    text.parse()
        .map_err(|e| ManageError::Invalid(format!("{text:?}: {e}")))
}

/// A new password's hash, checked for length first; argon2 runs off the async threads.
pub async fn hash_password(password: String) -> Result<String, ManageError> {
    password::check_new(&password).map_err(|e| ManageError::Invalid(e.to_string()))?;
    tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|e| ManageError::Internal(e.to_string()))?
        .map_err(|e| ManageError::Internal(e.to_string()))
}

/// RFC 3339, UTC.
pub fn timestamp(seconds: i64) -> String {
    super::auth::rfc3339(seconds)
}

// ---- pagination ----

/// Largest page any listing returns.
pub const MAX_PAGE: usize = 1000;
/// The page size when `limit` is not given.
pub const DEFAULT_PAGE: usize = 100;

/// `?limit=` and `?after=`: listings come in name order, `after` is the previous page's `next`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 1000; 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    pub after: Option<String>,
}

impl PageParams {
    pub fn limit(&self) -> Result<usize, ManageError> {
        page_limit(self.limit)
    }

    /// The cursor as the name it is.
    pub fn after_name(&self) -> Result<Option<AccountName>, ManageError> {
        self.after.as_deref().map(account_name).transpose()
    }
}

/// `limit` checked: 1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] when absent.
pub fn page_limit(limit: Option<usize>) -> Result<usize, ManageError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        n @ 1..=MAX_PAGE => Ok(n),
        _ => Err(ManageError::Invalid(format!(
            "limit must be 1 to {MAX_PAGE}"
        ))),
    }
}

/// One page: `items` were fetched with `limit + 1`, so an extra item says another page
/// follows, whose cursor is the last item's.
pub fn page_of<T>(mut items: Vec<T>, limit: usize, cursor: impl Fn(&T) -> String) -> Page<T> {
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more { items.last().map(cursor) } else { None };
    Page { items, next }
}

/// A page of a listing the store returns whole, sorted by `key`.
pub fn page_in<T>(
    items: Vec<T>,
    params: &PageParams,
    key: impl Fn(&T) -> &str,
) -> Result<Page<T>, ManageError> {
    let limit = params.limit()?;
    let after = params.after.as_deref().unwrap_or_default();
    let items: Vec<T> = items
        .into_iter()
        .filter(|item| key(item) > after)
        .take(limit + 1)
        .collect();
    Ok(page_of(items, limit, |item| key(item).to_owned()))
}

/// A page of a listing: `next` is the cursor of the following page, `None` on the last.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

/// An RFC 3339 time as seconds since the Unix epoch.
pub fn parse_time(text: &str) -> Result<i64, ManageError> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| ManageError::Invalid(format!("{text:?} is not an RFC 3339 time: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(limit: Option<usize>, after: Option<&str>) -> PageParams {
        PageParams {
            limit,
            after: after.map(str::to_owned),
        }
    }

    #[test]
    fn pages_say_whether_another_follows() {
        let names = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = names(&["a", "b", "c"]);
        let first = page_in(all.clone(), &params(Some(2), None), String::as_str).unwrap();
        assert_eq!(
            (first.items, first.next),
            (names(&["a", "b"]), Some("b".into()))
        );
        let last = page_in(all.clone(), &params(Some(2), Some("b")), String::as_str).unwrap();
        assert_eq!((last.items, last.next), (names(&["c"]), None));
        // A page that happens to end the listing has no next.
        let exact = page_in(all.clone(), &params(Some(3), None), String::as_str).unwrap();
        assert_eq!(exact.next, None);
        let fetched = page_of(names(&["x", "y"]), 1, Clone::clone);
        assert_eq!(
            (fetched.items, fetched.next),
            (names(&["x"]), Some("x".into()))
        );
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(page_limit(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(page_limit(Some(MAX_PAGE)).unwrap(), MAX_PAGE);
        for bad in [0, MAX_PAGE + 1] {
            assert!(matches!(
                page_limit(Some(bad)),
                Err(ManageError::Invalid(_))
            ));
        }
    }
}
