//! Namespace quotas: the most blob bytes a user's or organisation's repositories may hold.
//! Registry admins set them; whoever may read the namespace sees the quota and the usage.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Caller, JsonBody, account_name};
use crate::accounts::{Entity, Namespace, NamespaceKind};
use crate::api::AppState;
use crate::api::error::ManageError;
use crate::auth::manage;

type ErrorBody = super::openapi::ErrorBody;

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaView {
    pub namespace: String,
    pub kind: NamespaceKind,
    /// `null`: no limit.
    pub quota_bytes: Option<u64>,
    /// Bytes of the distinct blobs its repositories link.
    pub usage_bytes: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"quota_bytes": 10_737_418_240_u64}))]
pub struct QuotaBody {
    /// `null` lifts the quota.
    pub quota_bytes: Option<u64>,
}

/// The namespace, when the caller may read it (others are told it does not exist) and, for
/// a change, set its quota.
async fn authorize(
    state: &AppState,
    caller: &Caller,
    name: &str,
    set: bool,
    action: &str,
) -> Result<Namespace, ManageError> {
    let name = account_name(name)?;
    let store = state.auth.store();
    let namespace = store
        .namespace(&name)
        .await?
        .ok_or_else(|| super::missing(Entity::Namespace, &name))?;
    let memberships = caller.memberships(state).await?;
    if !manage::may_read_namespace(&caller.principal, &namespace, &memberships) {
        let missing = super::missing(Entity::Namespace, &name);
        return Err(caller.hidden(state, action, &name, missing).await);
    }
    if set {
        let allowed = manage::may_set_quota(&caller.principal);
        caller.require(state, allowed, action, &name).await?;
    }
    Ok(namespace)
}

async fn view(state: &AppState, namespace: Namespace) -> Result<QuotaView, ManageError> {
    Ok(QuotaView {
        usage_bytes: state
            .registry
            .namespace_usage(namespace.name.as_str())
            .await?,
        namespace: namespace.name.to_string(),
        kind: namespace.kind,
        quota_bytes: namespace.quota_bytes,
    })
}

#[utoipa::path(get, operation_id = "namespaces_quota", path = "/api/v1/namespaces/{name}/quota", tag = "quotas",
    params(("name" = String, Path, description = "a user or an organisation")),
    responses((status = 200, body = QuotaView), (status = 404, body = ErrorBody)))]
pub async fn quota(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<QuotaView>, ManageError> {
    let namespace = authorize(&state, &caller, &name, false, "quota.read").await?;
    Ok(Json(view(&state, namespace).await?))
}

/// Sets or lifts the quota (registry admins). Pushes beyond it are refused; what is stored
/// already stays.
#[utoipa::path(put, operation_id = "namespaces_set_quota", path = "/api/v1/namespaces/{name}/quota", tag = "quotas",
    params(("name" = String, Path)), request_body = QuotaBody,
    responses((status = 200, body = QuotaView), (status = 404, body = ErrorBody)))]
pub async fn set_quota(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<QuotaBody>,
) -> Result<Json<QuotaView>, ManageError> {
    const ACTION: &str = "quota.set";
    let mut namespace = authorize(&state, &caller, &name, true, ACTION).await?;
    state
        .auth
        .store()
        .set_quota(&namespace.name, body.quota_bytes)
        .await?;
    caller.done(&state, ACTION, &namespace.name).await;
    namespace.quota_bytes = body.quota_bytes;
    Ok(Json(view(&state, namespace).await?))
}
