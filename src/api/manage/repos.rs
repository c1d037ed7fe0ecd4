//! Repositories: details (visibility, grants, tags, size), deletion, and the settings —
//! visibility and grants. A repository name may have several path components, so the routes
//! are one catch-all `/api/v1/repos/{*name}` whose `PUT` takes its target from the name's
//! end: `…/permissions` or `…/visibility` (a `GET` or `DELETE` always names the repository
//! itself). Reading needs pull on the repository; the rest needs every action (its
//! namespace's user, the organisation's owners and admins, an `admin` grant, registry admins).

use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Caller, JsonBody, Page, PageParams, Params, page_of};
use crate::accounts::{AccountError, Grant, RepositorySettings, Visibility};
use crate::api::AppState;
use crate::api::error::ManageError;
use crate::auth::manage;
use crate::oci::RepoName;
use crate::registry::RegistryError;

type ErrorBody = super::openapi::ErrorBody;

#[derive(Debug, Serialize, ToSchema)]
pub struct RepositoryView {
    pub name: String,
    pub visibility: Visibility,
    pub grants: Vec<Grant>,
    /// A page of its tags in byte order (`?limit=`, `?after=` page through them).
    pub tags: Page<String>,
    /// Bytes of the blobs it links (a layer shared with another repository counts in both).
    pub size_bytes: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsView {
    pub visibility: Visibility,
    pub grants: Vec<Grant>,
}

impl From<RepositorySettings> for SettingsView {
    fn from(settings: RepositorySettings) -> Self {
        SettingsView {
            visibility: settings.visibility,
            grants: settings.grants,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"visibility": "public"}))]
pub struct VisibilityBody {
    pub visibility: Visibility,
}

/// Grants in a `PUT …/permissions` body: every grant of the repository, replacing the old.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!([{"kind": "user", "name": "carol", "permission": "write"},
    {"kind": "team", "team": "devs", "permission": "read"}]))]
#[serde(transparent)]
pub struct GrantsBody(pub Vec<Grant>);

/// What the caller may do to the repository, after the gate: a caller who may not even
/// pull it is answered as if it did not exist.
async fn authorize(
    state: &AppState,
    caller: &Caller,
    name: &str,
    manage_it: bool,
    action: &str,
) -> Result<RepoName, ManageError> {
    let repo: RepoName = name
        .parse()
        .map_err(|e| ManageError::Invalid(format!("{name:?}: {e}")))?;
    let allowed = state.auth.allowed(&caller.principal, &repo).await?;
    if !manage::may_read_repository(&caller.principal, &allowed) {
        let missing = RegistryError::NameUnknown.into();
        return Err(caller.hidden(state, action, &repo, missing).await);
    }
    if manage_it {
        let may = manage::may_manage_repository(&caller.principal, &allowed);
        caller.require(state, may, action, &repo).await?;
    }
    Ok(repo)
}

#[utoipa::path(get, operation_id = "repos_read", path = "/api/v1/repos/{namespace}/{repo_name}", tag = "repositories",
    params(("namespace" = String, Path),
        ("repo_name" = String, Path, description = "the rest of the name: it may have more components"),
        PageParams),
    responses((status = 200, body = RepositoryView), (status = 404, body = ErrorBody)))]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Params(params): Params<PageParams>,
) -> Result<Json<RepositoryView>, ManageError> {
    let repo = authorize(&state, &caller, &name, false, "repo.read").await?;
    let settings = state.auth.store().repository_settings(&repo).await?;
    let limit = params.limit()?;
    let tags = match state
        .registry
        .list_tags(&repo, params.after.as_deref(), limit + 1)
        .await
    {
        Ok(tags) => tags,
        // Settings made before the first push show; a name nobody configured is unknown.
        Err(RegistryError::NameUnknown) if settings != RepositorySettings::default() => vec![],
        Err(e) => return Err(e.into()),
    };
    Ok(Json(RepositoryView {
        size_bytes: state.registry.repository_size(&repo).await?,
        tags: page_of(tags, limit, Clone::clone),
        name: repo.to_string(),
        visibility: settings.visibility,
        grants: settings.grants,
    }))
}

/// Deletes every manifest and tag of the repository and its settings; garbage collection
/// removes the blobs nothing else uses.
#[utoipa::path(delete, operation_id = "repos_delete", path = "/api/v1/repos/{namespace}/{repo_name}", tag = "repositories",
    params(("namespace" = String, Path), ("repo_name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ManageError> {
    const ACTION: &str = "repo.delete";
    let repo = authorize(&state, &caller, &name, true, ACTION).await?;
    let store = state.auth.store();
    let configured = store.repository_settings(&repo).await? != RepositorySettings::default();
    match state.registry.delete_repository(&repo).await {
        Ok(()) => {}
        Err(RegistryError::NameUnknown) if configured => {}
        Err(e) => return Err(e.into()),
    }
    store.delete_repository_settings(&repo).await?;
    caller.done(&state, ACTION, &repo).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/v1/repos/{*name}`: the name ends in the setting to change.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let result = if let Some(repo) = name.strip_suffix("/permissions") {
        match JsonBody::from_request(request, &state).await {
            Ok(JsonBody(GrantsBody(grants))) => {
                put_permissions(&state, &caller, repo, grants).await
            }
            Err(e) => Err(e),
        }
    } else if let Some(repo) = name.strip_suffix("/visibility") {
        match JsonBody::from_request(request, &state).await {
            Ok(JsonBody(VisibilityBody { visibility })) => {
                put_visibility(&state, &caller, repo, visibility).await
            }
            Err(e) => Err(e),
        }
    } else {
        Err(ManageError::Invalid(
            "PUT names …/permissions or …/visibility".into(),
        ))
    };
    result.map(Json).into_response()
}

/// Replaces every grant of the repository (a repository not pushed yet included).
#[utoipa::path(put, operation_id = "repos_put_permissions", path = "/api/v1/repos/{namespace}/{repo_name}/permissions",
    tag = "repositories", request_body = GrantsBody,
    params(("namespace" = String, Path), ("repo_name" = String, Path)),
    responses((status = 200, body = SettingsView), (status = 404, body = ErrorBody)))]
async fn put_permissions(
    state: &AppState,
    caller: &Caller,
    name: &str,
    grants: Vec<Grant>,
) -> Result<SettingsView, ManageError> {
    const ACTION: &str = "repo.permissions";
    let repo = authorize(state, caller, name, true, ACTION).await?;
    let store = state.auth.store();
    store
        .set_grants(&repo, &grants)
        .await
        .map_err(|e| match e {
            // A grant to a user or team that does not exist is bad input, not a missing repository.
            AccountError::NotFound { .. } => ManageError::Invalid(e.to_string()),
            other => other.into(),
        })?;
    caller.done(state, ACTION, &repo).await;
    Ok(store.repository_settings(&repo).await?.into())
}

#[utoipa::path(put, operation_id = "repos_put_visibility", path = "/api/v1/repos/{namespace}/{repo_name}/visibility",
    tag = "repositories", request_body = VisibilityBody,
    params(("namespace" = String, Path), ("repo_name" = String, Path)),
    responses((status = 200, body = SettingsView), (status = 404, body = ErrorBody)))]
async fn put_visibility(
    state: &AppState,
    caller: &Caller,
    name: &str,
    visibility: Visibility,
) -> Result<SettingsView, ManageError> {
    const ACTION: &str = "repo.visibility";
    let repo = authorize(state, caller, name, true, ACTION).await?;
    let store = state.auth.store();
    store.set_visibility(&repo, visibility).await?;
    caller.done(state, ACTION, &repo).await;
    Ok(store.repository_settings(&repo).await?.into())
}
