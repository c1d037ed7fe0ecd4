//! Organisations, their members and teams. Any user may create one (and owns it); members
//! read it; owners and admins manage members and teams; owners delete it and alone make or
//! unmake owners.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Caller, JsonBody, Page, PageParams, Params, account_name, page_in, page_of};
use crate::accounts::{AccountName, Entity, Member, OrgRole, Organization, Team};
use crate::api::AppState;
use crate::api::error::ManageError;
use crate::auth::manage::{self, OrgRight};

type ErrorBody = super::openapi::ErrorBody;

#[derive(Debug, Serialize, ToSchema)]
pub struct OrgView {
    pub name: AccountName,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The caller's role in it; `null` for a registry admin who is not a member.
    pub role: Option<OrgRole>,
}

impl OrgView {
    fn new(org: Organization, role: Option<OrgRole>) -> OrgView {
        OrgView {
            name: org.name,
            created_at: super::timestamp(org.created_at),
            role,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "widgets"}))]
pub struct NewOrg {
    pub name: AccountName,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user": "carol", "role": "member"}))]
pub struct MemberView {
    pub user: AccountName,
    pub role: OrgRole,
}

impl From<Member> for MemberView {
    fn from(member: Member) -> Self {
        MemberView {
            user: member.user,
            role: member.role,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "devs", "description": "the developers"}))]
pub struct TeamView {
    pub name: AccountName,
    #[serde(default)]
    pub description: String,
}

impl From<Team> for TeamView {
    fn from(team: Team) -> Self {
        TeamView {
            name: team.name,
            description: team.description,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user": "carol"}))]
pub struct TeamMemberView {
    pub user: AccountName,
}

/// The organisation and the caller's role in it, when it exists and the caller may `right`
/// it. A caller who may not even read it is answered as if it did not exist.
pub(super) async fn authorize(
    state: &AppState,
    caller: &Caller,
    org_name: &str,
    right: OrgRight,
    action: &str,
) -> Result<(Organization, Option<OrgRole>), ManageError> {
    let name = account_name(org_name)?;
    let org = state
        .auth
        .store()
        .org(&name)
        .await?
        .ok_or_else(|| super::missing(Entity::Organization, &name))?;
    let role = caller.role_in(state, &name).await?;
    if !manage::may_on_org(&caller.principal, role, OrgRight::Read) {
        let missing = super::missing(Entity::Organization, &name);
        return Err(caller.hidden(state, action, &name, missing).await);
    }
    let allowed = manage::may_on_org(&caller.principal, role, right);
    caller.require(state, allowed, action, &name).await?;
    Ok((org, role))
}

/// The organisations the caller belongs to (every organisation for a registry admin).
#[utoipa::path(get, operation_id = "orgs_list", path = "/api/v1/orgs", tag = "organizations", params(PageParams),
    responses((status = 200, body = Page<OrgView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(params): Params<PageParams>,
) -> Result<Json<Page<OrgView>>, ManageError> {
    let store = state.auth.store();
    let memberships = caller.memberships(&state).await?;
    if caller.principal.is_admin() {
        let limit = params.limit()?;
        let orgs = store
            .list_orgs(params.after_name()?.as_ref(), limit + 1)
            .await?;
        let page = page_of(orgs, limit, |o| o.name.to_string());
        return Ok(Json(page.map(|org| {
            let role = crate::auth::policy::role_in(&org.name, &memberships);
            OrgView::new(org, role)
        })));
    }
    let mut mine = memberships;
    mine.sort_by(|a, b| a.org.cmp(&b.org));
    let page = page_in(mine, &params, |m| m.org.as_str())?;
    let mut items = Vec::with_capacity(page.items.len());
    for membership in page.items {
        // An organisation deleted since the memberships were read is left out.
        if let Some(org) = store.org(&membership.org).await? {
            items.push(OrgView::new(org, Some(membership.role)));
        }
    }
    Ok(Json(Page {
        items,
        next: page.next,
    }))
}

/// Creates an organisation; the caller becomes its owner.
#[utoipa::path(post, operation_id = "orgs_create", path = "/api/v1/orgs", tag = "organizations", request_body = NewOrg,
    responses((status = 201, body = OrgView), (status = 409, body = ErrorBody,
        description = "ALREADY_EXISTS: the name is a user's or an organisation's")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<NewOrg>,
) -> Result<(StatusCode, Json<OrgView>), ManageError> {
    let owner = match caller.principal.user_name() {
        Some(user) if manage::may_create_org(&caller.principal) => user.clone(),
        _ => return Err(caller.denied(&state, "org.create", &body.name).await),
    };
    let org = state.auth.store().create_org(&body.name, &owner).await?;
    caller.done(&state, "org.create", &org.name).await;
    Ok((
        StatusCode::CREATED,
        Json(OrgView::new(org, Some(OrgRole::Owner))),
    ))
}

/// An organisation the caller belongs to (any, for registry admins).
#[utoipa::path(get, operation_id = "orgs_read", path = "/api/v1/orgs/{org_name}", tag = "organizations",
    params(("org_name" = String, Path)),
    responses((status = 200, body = OrgView), (status = 404, body = ErrorBody)))]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_name): Path<String>,
) -> Result<Json<OrgView>, ManageError> {
    let (org, role) = authorize(&state, &caller, &org_name, OrgRight::Read, "org.read").await?;
    Ok(Json(OrgView::new(org, role)))
}

/// Deletes an organisation with its members, teams, robots and team grants (owners); refused
/// while it holds repositories, which whoever took the name next would own.
#[utoipa::path(delete, operation_id = "orgs_delete", path = "/api/v1/orgs/{org_name}", tag = "organizations",
    params(("org_name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "REFUSED: the organisation still holds repositories")))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_name): Path<String>,
) -> Result<StatusCode, ManageError> {
    let (org, _) = authorize(&state, &caller, &org_name, OrgRight::Delete, "org.delete").await?;
    super::refuse_if_holding_repositories(&state, &org.name).await?;
    state.auth.store().delete_org(&org.name).await?;
    caller.done(&state, "org.delete", &org.name).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- members ----

#[utoipa::path(get, operation_id = "orgs_members", path = "/api/v1/orgs/{org_name}/members", tag = "organizations",
    params(("org_name" = String, Path), PageParams),
    responses((status = 200, body = Page<MemberView>), (status = 404, body = ErrorBody)))]
pub async fn members(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_name): Path<String>,
    Params(params): Params<PageParams>,
) -> Result<Json<Page<MemberView>>, ManageError> {
    let (org, _) = authorize(&state, &caller, &org_name, OrgRight::Read, "org.read").await?;
    let limit = params.limit()?;
    let members = state
        .auth
        .store()
        .members(&org.name, params.after_name()?.as_ref(), limit + 1)
        .await?;
    let page = page_of(members, limit, |m| m.user.to_string());
    Ok(Json(page.map(MemberView::from)))
}

/// Adds a member or changes its role (owners and admins; only owners make or unmake owners).
#[utoipa::path(post, operation_id = "orgs_set_member", path = "/api/v1/orgs/{org_name}/members", tag = "organizations",
    params(("org_name" = String, Path)), request_body = MemberView,
    responses((status = 200, body = MemberView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "REFUSED: that leaves no owner")))]
pub async fn set_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_name): Path<String>,
    JsonBody(member): JsonBody<MemberView>,
) -> Result<Json<MemberView>, ManageError> {
    const ACTION: &str = "org.member.set";
    let (org, role) = authorize(&state, &caller, &org_name, OrgRight::Manage, ACTION).await?;
    let target = format!("{}/{}", org.name, member.user);
    let current = role_of(&state, &org.name, &member.user).await?;
    let allowed = manage::may_change_member(&caller.principal, role, current, Some(member.role));
    caller.require(&state, allowed, ACTION, &target).await?;
    state
        .auth
        .store()
        .set_member(&org.name, &member.user, member.role)
        .await?;
    caller.done(&state, ACTION, &target).await;
    Ok(Json(member))
}

/// Removes a member from the organisation and its teams.
#[utoipa::path(delete, operation_id = "orgs_remove_member", path = "/api/v1/orgs/{org_name}/members/{username}", tag = "organizations",
    params(("org_name" = String, Path), ("username" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "REFUSED: the last owner")))]
pub async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((org_name, username)): Path<(String, String)>,
) -> Result<StatusCode, ManageError> {
    const ACTION: &str = "org.member.remove";
    let (org, role) = authorize(&state, &caller, &org_name, OrgRight::Manage, ACTION).await?;
    let user = account_name(&username)?;
    let target = format!("{}/{}", org.name, user);
    let current = role_of(&state, &org.name, &user).await?;
    let allowed = manage::may_change_member(&caller.principal, role, current, None);
    caller.require(&state, allowed, ACTION, &target).await?;
    state.auth.store().remove_member(&org.name, &user).await?;
    caller.done(&state, ACTION, &target).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn role_of(
    state: &AppState,
    org: &AccountName,
    user: &AccountName,
) -> Result<Option<OrgRole>, ManageError> {
    let memberships = state.auth.store().memberships(user).await?;
    Ok(crate::auth::policy::role_in(org, &memberships))
}

// ---- teams ----

#[utoipa::path(get, operation_id = "orgs_teams", path = "/api/v1/orgs/{org_name}/teams", tag = "organizations",
    params(("org_name" = String, Path), PageParams),
    responses((status = 200, body = Page<TeamView>), (status = 404, body = ErrorBody)))]
pub async fn teams(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_name): Path<String>,
    Params(params): Params<PageParams>,
) -> Result<Json<Page<TeamView>>, ManageError> {
    let (org, _) = authorize(&state, &caller, &org_name, OrgRight::Read, "org.read").await?;
    let mut teams = state.auth.store().teams(&org.name).await?;
    teams.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(
        page_in(teams, &params, |t| t.name.as_str())?.map(TeamView::from),
    ))
}

#[utoipa::path(post, operation_id = "orgs_create_team", path = "/api/v1/orgs/{org_name}/teams", tag = "organizations",
    params(("org_name" = String, Path)), request_body = TeamView,
    responses((status = 201, body = TeamView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "ALREADY_EXISTS")))]
pub async fn create_team(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_name): Path<String>,
    JsonBody(team): JsonBody<TeamView>,
) -> Result<(StatusCode, Json<TeamView>), ManageError> {
    const ACTION: &str = "team.create";
    let (org, _) = authorize(&state, &caller, &org_name, OrgRight::Manage, ACTION).await?;
    let created = state
        .auth
        .store()
        .create_team(&org.name, &team.name, &team.description)
        .await?;
    caller
        .done(&state, ACTION, format!("{}/{}", org.name, team.name))
        .await;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// Deletes a team, its memberships and the grants made to it.
#[utoipa::path(delete, operation_id = "orgs_delete_team", path = "/api/v1/orgs/{org_name}/teams/{team}", tag = "organizations",
    params(("org_name" = String, Path), ("team" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_team(
    State(state): State<AppState>,
    caller: Caller,
    Path((org_name, team)): Path<(String, String)>,
) -> Result<StatusCode, ManageError> {
    const ACTION: &str = "team.delete";
    let (org, _) = authorize(&state, &caller, &org_name, OrgRight::Manage, ACTION).await?;
    let team = account_name(&team)?;
    state.auth.store().delete_team(&org.name, &team).await?;
    caller
        .done(&state, ACTION, format!("{}/{team}", org.name))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, operation_id = "orgs_team_members", path = "/api/v1/orgs/{org_name}/teams/{team}/members", tag = "organizations",
    params(("org_name" = String, Path), ("team" = String, Path), PageParams),
    responses((status = 200, body = Page<TeamMemberView>), (status = 404, body = ErrorBody)))]
pub async fn team_members(
    State(state): State<AppState>,
    caller: Caller,
    Path((org_name, team)): Path<(String, String)>,
    Params(params): Params<PageParams>,
) -> Result<Json<Page<TeamMemberView>>, ManageError> {
    let (org, _) = authorize(&state, &caller, &org_name, OrgRight::Read, "org.read").await?;
    let team = existing_team(&state, &org.name, &team).await?;
    let mut members = state.auth.store().team_members(&org.name, &team).await?;
    members.sort();
    let page = page_in(members, &params, AccountName::as_str)?;
    Ok(Json(page.map(|user| TeamMemberView { user })))
}

/// Adds a member of the organisation to the team.
#[utoipa::path(post, operation_id = "orgs_add_team_member", path = "/api/v1/orgs/{org_name}/teams/{team}/members", tag = "organizations",
    params(("org_name" = String, Path), ("team" = String, Path)), request_body = TeamMemberView,
    responses((status = 204), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody,
            description = "REFUSED: the user is not a member of the organisation")))]
pub async fn add_team_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((org_name, team)): Path<(String, String)>,
    JsonBody(member): JsonBody<TeamMemberView>,
) -> Result<StatusCode, ManageError> {
    const ACTION: &str = "team.member.add";
    let (org, _) = authorize(&state, &caller, &org_name, OrgRight::Manage, ACTION).await?;
    let team = account_name(&team)?;
    state
        .auth
        .store()
        .add_team_member(&org.name, &team, &member.user)
        .await?;
    caller
        .done(
            &state,
            ACTION,
            format!("{}/{team}/{}", org.name, member.user),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, operation_id = "orgs_remove_team_member", path = "/api/v1/orgs/{org_name}/teams/{team}/members/{username}",
    tag = "organizations",
    params(("org_name" = String, Path), ("team" = String, Path), ("username" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove_team_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((org_name, team, username)): Path<(String, String, String)>,
) -> Result<StatusCode, ManageError> {
    const ACTION: &str = "team.member.remove";
    let (org, _) = authorize(&state, &caller, &org_name, OrgRight::Manage, ACTION).await?;
    let (team, user) = (account_name(&team)?, account_name(&username)?);
    state
        .auth
        .store()
        .remove_team_member(&org.name, &team, &user)
        .await?;
    caller
        .done(&state, ACTION, format!("{}/{team}/{user}", org.name))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The team's name when the organisation has it.
async fn existing_team(
    state: &AppState,
    org: &AccountName,
    team: &str,
) -> Result<AccountName, ManageError> {
    let team = account_name(team)?;
    let teams = state.auth.store().teams(org).await?;
    if teams.iter().any(|t| t.name == team) {
        Ok(team)
    } else {
        Err(super::missing(Entity::Team, format!("{org}/{team}")))
    }
}
