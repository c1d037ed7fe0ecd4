//! Robot accounts of a namespace: the CI identity. Created with fixed scopes inside the
//! namespace and a secret shown once; listed, revoked and deleted by the organisation's owners
//! and admins, or by the user whose namespace it is.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Caller, JsonBody, Page, PageParams, Params, account_name, page_in};
use crate::accounts::{AccountName, NewRobot, Robot, Timestamp};
use crate::api::AppState;
use crate::api::error::ManageError;
use crate::auth::manage::{self, OrgRight, UserRight};
use crate::auth::secret;
use crate::oci::scope::ResourceScope;

type ErrorBody = super::openapi::ErrorBody;

#[derive(Debug, Serialize, ToSchema)]
pub struct RobotView {
    pub name: AccountName,
    /// What it signs in as: `<namespace>+<name>`.
    pub login: String,
    #[schema(example = json!(["repository:acme/*:pull,push"]))]
    pub scopes: Vec<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
    /// Neither revoked nor expired.
    pub active: bool,
}

impl RobotView {
    fn new(robot: Robot, now: Timestamp) -> RobotView {
        RobotView {
            login: robot.login(),
            active: robot.is_active(now),
            scopes: robot
                .scopes
                .iter()
                .map(|s| ResourceScope::repository(s.repository.clone(), s.actions.clone()))
                .map(|s| s.to_string())
                .collect(),
            created_at: super::timestamp(robot.created_at),
            expires_at: robot.expires_at.map(super::timestamp),
            revoked_at: robot.revoked_at.map(super::timestamp),
            name: robot.name,
        }
    }
}

/// A new robot, with the one copy of its secret anyone will see.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedRobot {
    #[serde(flatten)]
    pub robot: RobotView,
    /// The password the robot signs in with. Shown only here: the registry keeps a hash.
    pub secret: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "deploy", "scopes": ["repository:acme/*:pull,push"]}))]
pub struct NewRobotBody {
    pub name: AccountName,
    /// `repository:<name>:<actions>` or `repository:<prefix>/*:<actions>`, inside the
    /// robot's namespace; actions are pull, push, delete or `*`.
    pub scopes: Vec<String>,
    /// When it stops working (RFC 3339); or give `expires_in_seconds`.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(minimum = 1)]
    pub expires_in_seconds: Option<i64>,
}

/// The expiry a request asks for, on the store's clock `now`.
fn expiry(body: &NewRobotBody, now: Timestamp) -> Result<Option<Timestamp>, ManageError> {
    let at = match (&body.expires_at, body.expires_in_seconds) {
        (Some(_), Some(_)) => {
            return Err(ManageError::Invalid(
                "give expires_at or expires_in_seconds, not both".into(),
            ));
        }
        (Some(text), None) => super::parse_time(text)?,
        (None, Some(seconds)) if seconds > 0 => now.saturating_add(seconds),
        (None, Some(_)) => {
            return Err(ManageError::Invalid(
                "expires_in_seconds must be positive".into(),
            ));
        }
        (None, None) => return Ok(None),
    };
    if at <= now {
        return Err(ManageError::Invalid("the expiry is in the past".into()));
    }
    Ok(Some(at))
}

/// Whose robots: an organisation's (its owners and admins manage them) or a user's (the user
/// itself). Each has its own routes, `/api/v1/orgs/{org_name}/robots…` and
/// `/api/v1/users/{username}/robots…`.
#[derive(Clone, Copy)]
enum Owner {
    Org,
    User,
}

/// The namespace whose robots the caller may manage.
async fn authorize(
    state: &AppState,
    caller: &Caller,
    owner: Owner,
    name: &str,
    action: &str,
) -> Result<AccountName, ManageError> {
    match owner {
        Owner::Org => {
            let (org, _) =
                super::orgs::authorize(state, caller, name, OrgRight::Manage, action).await?;
            Ok(org.name)
        }
        Owner::User => {
            super::users::authorize(state, caller, name, UserRight::ManageRobots, action).await
        }
    }
}

async fn list(
    state: &AppState,
    caller: &Caller,
    owner: Owner,
    name: &str,
    params: &PageParams,
) -> Result<Json<Page<RobotView>>, ManageError> {
    let namespace = authorize(state, caller, owner, name, "robot.list").await?;
    let store = state.auth.store();
    let mut robots = store.robots(&namespace).await?;
    robots.sort_by(|a, b| a.name.cmp(&b.name));
    let now = store.now().await?;
    let page = page_in(robots, params, |r| r.name.as_str())?;
    Ok(Json(page.map(|robot| RobotView::new(robot, now))))
}

async fn create(
    state: &AppState,
    caller: &Caller,
    owner: Owner,
    name: &str,
    body: NewRobotBody,
) -> Result<(StatusCode, Json<CreatedRobot>), ManageError> {
    const ACTION: &str = "robot.create";
    let namespace = authorize(state, caller, owner, name, ACTION).await?;
    if body.scopes.is_empty() {
        return Err(ManageError::Invalid(
            "a robot needs at least one scope".into(),
        ));
    }
    let scopes = body
        .scopes
        .iter()
        .map(|text| manage::robot_scope(text, &namespace))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ManageError::Invalid(e.to_string()))?;
    let store = state.auth.store();
    let now = store.now().await?;
    let expires_at = expiry(&body, now)?;
    let secret_text = secret::random_token();
    let robot = store
        .create_robot(&NewRobot {
            namespace,
            name: body.name,
            secret_hash: secret::digest(&secret_text),
            scopes,
            expires_at,
        })
        .await?;
    caller.done(state, ACTION, robot.login()).await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedRobot {
            robot: RobotView::new(robot, now),
            secret: secret_text,
        }),
    ))
}

enum RobotChange {
    Revoke,
    Delete,
}

async fn change(
    state: &AppState,
    caller: &Caller,
    owner: Owner,
    (name, robot): (String, String),
    change: RobotChange,
) -> Result<StatusCode, ManageError> {
    let action = match change {
        RobotChange::Revoke => "robot.revoke",
        RobotChange::Delete => "robot.delete",
    };
    let namespace = authorize(state, caller, owner, &name, action).await?;
    let robot = account_name(&robot)?;
    let store = state.auth.store();
    match change {
        RobotChange::Revoke => store.revoke_robot(&namespace, &robot).await?,
        RobotChange::Delete => store.delete_robot(&namespace, &robot).await?,
    }
    caller
        .done(state, action, format!("{namespace}+{robot}"))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- the routes: an organisation's robots, then a user's ----

#[utoipa::path(get, operation_id = "robots_list", path = "/api/v1/orgs/{org_name}/robots",
    tag = "robots", params(("org_name" = String, Path), PageParams),
    responses((status = 200, body = Page<RobotView>), (status = 404, body = ErrorBody)))]
pub async fn list_for_org(
    State(state): State<AppState>,
    caller: Caller,
    Path(org): Path<String>,
    Params(params): Params<PageParams>,
) -> Result<Json<Page<RobotView>>, ManageError> {
    list(&state, &caller, Owner::Org, &org, &params).await
}

/// Creates a robot and returns its secret, once.
#[utoipa::path(post, operation_id = "robots_create", path = "/api/v1/orgs/{org_name}/robots",
    tag = "robots", params(("org_name" = String, Path)), request_body = NewRobotBody,
    responses((status = 201, body = CreatedRobot), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "ALREADY_EXISTS")))]
pub async fn create_for_org(
    State(state): State<AppState>,
    caller: Caller,
    Path(org): Path<String>,
    JsonBody(body): JsonBody<NewRobotBody>,
) -> Result<(StatusCode, Json<CreatedRobot>), ManageError> {
    create(&state, &caller, Owner::Org, &org, body).await
}

/// Revokes a robot: it stays listed, and nothing it signs or signed works any more.
#[utoipa::path(post, operation_id = "robots_revoke",
    path = "/api/v1/orgs/{org_name}/robots/{robot}/revoke", tag = "robots",
    params(("org_name" = String, Path), ("robot" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_for_org(
    State(state): State<AppState>,
    caller: Caller,
    Path(names): Path<(String, String)>,
) -> Result<StatusCode, ManageError> {
    change(&state, &caller, Owner::Org, names, RobotChange::Revoke).await
}

#[utoipa::path(delete, operation_id = "robots_delete",
    path = "/api/v1/orgs/{org_name}/robots/{robot}", tag = "robots",
    params(("org_name" = String, Path), ("robot" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_for_org(
    State(state): State<AppState>,
    caller: Caller,
    Path(names): Path<(String, String)>,
) -> Result<StatusCode, ManageError> {
    change(&state, &caller, Owner::Org, names, RobotChange::Delete).await
}

#[utoipa::path(get, operation_id = "robots_list_for_user", path = "/api/v1/users/{username}/robots",
    tag = "robots", params(("username" = String, Path), PageParams),
    responses((status = 200, body = Page<RobotView>), (status = 404, body = ErrorBody)))]
pub async fn list_for_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
    Params(params): Params<PageParams>,
) -> Result<Json<Page<RobotView>>, ManageError> {
    list(&state, &caller, Owner::User, &user, &params).await
}

/// Creates a robot of the user's namespace and returns its secret, once.
#[utoipa::path(post, operation_id = "robots_create_for_user",
    path = "/api/v1/users/{username}/robots", tag = "robots",
    params(("username" = String, Path)),
    request_body(content = NewRobotBody,
        example = json!({"name": "laptop", "scopes": ["repository:carol/*:pull"]})),
    responses((status = 201, body = CreatedRobot), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "ALREADY_EXISTS")))]
pub async fn create_for_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
    JsonBody(body): JsonBody<NewRobotBody>,
) -> Result<(StatusCode, Json<CreatedRobot>), ManageError> {
    create(&state, &caller, Owner::User, &user, body).await
}

#[utoipa::path(post, operation_id = "robots_revoke_for_user",
    path = "/api/v1/users/{username}/robots/{robot}/revoke", tag = "robots",
    params(("username" = String, Path), ("robot" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_for_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(names): Path<(String, String)>,
) -> Result<StatusCode, ManageError> {
    change(&state, &caller, Owner::User, names, RobotChange::Revoke).await
}

#[utoipa::path(delete, operation_id = "robots_delete_for_user",
    path = "/api/v1/users/{username}/robots/{robot}", tag = "robots",
    params(("username" = String, Path), ("robot" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_for_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(names): Path<(String, String)>,
) -> Result<StatusCode, ManageError> {
    change(&state, &caller, Owner::User, names, RobotChange::Delete).await
}
