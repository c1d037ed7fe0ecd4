//! `GET /api/v1/audit`: the audit log, newest first, for registry admins: every management
//! write and refusal, and what the registry itself records (pushes, deletes, denials).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Caller, Page, Params, page_limit, page_of, parse_time};
use crate::accounts::{AuditQuery, AuditRecord, Outcome};
use crate::api::AppState;
use crate::api::error::ManageError;
use crate::auth::manage;

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    /// Increasing with time; the page cursor.
    pub id: i64,
    #[schema(format = DateTime)]
    pub at: String,
    /// The account that acted (`user`, `org+robot`); `null` for anonymous requests.
    pub actor: Option<String>,
    /// The client's address.
    pub client: Option<String>,
    /// What was done, a dotted verb: `org.create`, `repo.delete`, `manifest.put`.
    pub action: String,
    /// What it was done to: `acme`, `acme/app`, `acme+ci`.
    pub target: String,
    pub outcome: Outcome,
    pub detail: Option<String>,
}

impl From<AuditRecord> for AuditView {
    fn from(record: AuditRecord) -> Self {
        let event = record.event;
        AuditView {
            id: record.id,
            at: super::timestamp(record.at),
            actor: event.actor,
            client: event.client,
            action: event.action,
            target: event.target,
            outcome: event.outcome,
            detail: event.detail,
        }
    }
}

/// Filters: every one given must match.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Records whose target starts with this (`acme/` for everything in a namespace).
    pub target_prefix: Option<String>,
    pub outcome: Option<Outcome>,
    /// Records at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Records at or before this time (RFC 3339).
    pub until: Option<String>,
    /// The `next` of the previous page: records older than that one.
    pub before: Option<i64>,
    /// Records per page, 1 to 1000; 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

#[utoipa::path(get, operation_id = "audit_list", path = "/api/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, body = Page<AuditView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(params): Params<AuditParams>,
) -> Result<Json<Page<AuditView>>, ManageError> {
    let allowed = manage::may_read_audit(&caller.principal);
    caller
        .require(&state, allowed, "audit.read", "audit")
        .await?;
    let limit = page_limit(params.limit)?;
    let query = AuditQuery {
        since: params.since.as_deref().map(parse_time).transpose()?,
        until: params.until.as_deref().map(parse_time).transpose()?,
        actor: params.actor,
        action: params.action,
        target_prefix: params.target_prefix,
        outcome: params.outcome,
        before: params.before,
        limit: limit + 1,
    };
    let records = state.auth.store().audit(&query).await?;
    let page = page_of(records, limit, |r| r.id.to_string());
    Ok(Json(page.map(AuditView::from)))
}
