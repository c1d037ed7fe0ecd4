//! Users: created, listed, updated and deleted by registry admins; read and given a new
//! password by themselves too.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Caller, JsonBody, Page, PageParams, Params, account_name, hash_password, page_of};
use crate::accounts::{AccountError, AccountName, Entity, NewUser, User, UserChange};
use crate::api::AppState;
use crate::api::error::ManageError;
use crate::auth::manage::{self, UserRight};

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub name: AccountName,
    pub admin: bool,
    /// A disabled user cannot sign in; its tokens and sessions stop working.
    pub disabled: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        UserView {
            name: user.name,
            admin: user.admin,
            disabled: user.disabled,
            created_at: super::timestamp(user.created_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "carol", "password": "correct-horse-battery"}))]
pub struct NewUserBody {
    pub name: AccountName,
    /// 8 to 1024 characters; without one the user cannot sign in with a password.
    pub password: Option<String>,
    #[serde(default)]
    pub admin: bool,
}

/// What changes; an absent field stays as it is.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"disabled": false}))]
pub struct UserPatch {
    pub admin: Option<bool>,
    /// Disabling a user also ends its sessions (refresh tokens).
    pub disabled: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"current_password": "correct-horse-battery", "new_password": "a-new-long-password"}))]
pub struct PasswordChange {
    /// Required unless a registry admin changes it.
    pub current_password: Option<String>,
    pub new_password: String,
}

/// The user when the caller may read it (others learn nothing of whether it exists), and
/// may take `right` on it.
pub(super) async fn authorize(
    state: &AppState,
    caller: &Caller,
    username: &str,
    right: UserRight,
    action: &str,
) -> Result<AccountName, ManageError> {
    let name = account_name(username)?;
    if !manage::may_on_user(&caller.principal, &name, UserRight::Read) {
        let missing = super::missing(Entity::User, &name);
        return Err(caller.hidden(state, action, &name, missing).await);
    }
    let allowed = manage::may_on_user(&caller.principal, &name, right);
    caller.require(state, allowed, action, &name).await?;
    Ok(name)
}

/// Lists users in name order (registry admins).
#[utoipa::path(get, operation_id = "users_list", path = "/api/v1/users", tag = "users", params(PageParams),
    responses((status = 200, body = Page<UserView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(params): Params<PageParams>,
) -> Result<Json<Page<UserView>>, ManageError> {
    let allowed = manage::may_administer_users(&caller.principal);
    caller
        .require(&state, allowed, "user.list", "users")
        .await?;
    let limit = params.limit()?;
    let users = state
        .auth
        .store()
        .list_users(params.after_name()?.as_ref(), limit + 1)
        .await?;
    let page = page_of(users, limit, |u| u.name.to_string());
    Ok(Json(page.map(UserView::from)))
}

/// Creates a user (registry admins).
#[utoipa::path(post, operation_id = "users_create", path = "/api/v1/users", tag = "users", request_body = NewUserBody,
    responses((status = 201, body = UserView), (status = 409, body = super::openapi::ErrorBody,
        description = "ALREADY_EXISTS: the name is a user's or an organisation's")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<NewUserBody>,
) -> Result<(StatusCode, Json<UserView>), ManageError> {
    let allowed = manage::may_administer_users(&caller.principal);
    caller
        .require(&state, allowed, "user.create", &body.name)
        .await?;
    let password_hash = match body.password {
        Some(password) => Some(hash_password(password).await?),
        None => None,
    };
    let user = state
        .auth
        .store()
        .create_user(&NewUser {
            name: body.name,
            password_hash,
            admin: body.admin,
        })
        .await?;
    caller.done(&state, "user.create", &user.name).await;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// A user (itself, or any for registry admins).
#[utoipa::path(get, operation_id = "users_read", path = "/api/v1/users/{username}", tag = "users",
    params(("username" = String, Path)),
    responses((status = 200, body = UserView), (status = 404, body = super::openapi::ErrorBody)))]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<Json<UserView>, ManageError> {
    let name = authorize(&state, &caller, &username, UserRight::Read, "user.read").await?;
    let user = state
        .auth
        .store()
        .user(&name)
        .await?
        .ok_or_else(|| super::missing(Entity::User, &name))?;
    Ok(Json(user.user.into()))
}

/// Makes or unmakes an admin, disables or enables (registry admins).
#[utoipa::path(patch, operation_id = "users_update", path = "/api/v1/users/{username}", tag = "users",
    params(("username" = String, Path)), request_body = UserPatch,
    responses((status = 200, body = UserView), (status = 404, body = super::openapi::ErrorBody),
        (status = 409, body = super::openapi::ErrorBody,
            description = "REFUSED: an admin demoting or disabling itself")))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    JsonBody(patch): JsonBody<UserPatch>,
) -> Result<Json<UserView>, ManageError> {
    let name = authorize(&state, &caller, &username, UserRight::Update, "user.update").await?;
    let demotes = patch.admin == Some(false) || patch.disabled == Some(true);
    refuse_self_lockout(&caller, &name, demotes)?;
    let store = state.auth.store();
    let user = store
        .update_user(
            &name,
            &UserChange {
                password_hash: None,
                admin: patch.admin,
                disabled: patch.disabled,
            },
        )
        .await?;
    if patch.disabled == Some(true) {
        store.revoke_sessions_of(&name).await?;
    }
    caller.done(&state, "user.update", &name).await;
    Ok(Json(user.into()))
}

/// Sets a new password and ends the user's sessions. A user gives its current password; a
/// registry admin need not.
#[utoipa::path(put, operation_id = "users_change_password", path = "/api/v1/users/{username}/password", tag = "users",
    params(("username" = String, Path)), request_body = PasswordChange,
    responses((status = 204, description = "changed; every refresh token of the user is revoked"),
        (status = 404, body = super::openapi::ErrorBody)))]
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    JsonBody(change): JsonBody<PasswordChange>,
) -> Result<StatusCode, ManageError> {
    const ACTION: &str = "user.password";
    let name = authorize(
        &state,
        &caller,
        &username,
        UserRight::ChangePassword,
        ACTION,
    )
    .await?;
    if manage::password_change_needs_current(&caller.principal) {
        let Some(current) = &change.current_password else {
            return Err(ManageError::Invalid("current_password is required".into()));
        };
        // Throttled like any sign-in, so this is no way around the lockout.
        match state
            .auth
            .sign_in(name.as_str(), current, caller.client)
            .await
        {
            Ok(_) => {}
            Err(crate::auth::AuthError::InvalidCredentials) => {
                return Err(caller.denied(&state, ACTION, &name).await);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let hash = hash_password(change.new_password).await?;
    let store = state.auth.store();
    store
        .update_user(
            &name,
            &UserChange {
                password_hash: Some(hash),
                ..UserChange::default()
            },
        )
        .await?;
    store.revoke_sessions_of(&name).await?;
    caller.done(&state, ACTION, &name).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a user with its memberships, grants and sessions (registry admins); refused while
/// the user's namespace holds repositories.
#[utoipa::path(delete, operation_id = "users_delete", path = "/api/v1/users/{username}", tag = "users",
    params(("username" = String, Path)),
    responses((status = 204), (status = 404, body = super::openapi::ErrorBody),
        (status = 409, body = super::openapi::ErrorBody,
            description = "REFUSED: the last owner of an organisation, the calling admin itself, or a namespace holding repositories")))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<StatusCode, ManageError> {
    let name = authorize(&state, &caller, &username, UserRight::Delete, "user.delete").await?;
    refuse_self_lockout(&caller, &name, true)?;
    super::refuse_if_holding_repositories(&state, &name).await?;
    state.auth.store().delete_user(&name).await?;
    caller.done(&state, "user.delete", &name).await;
    Ok(StatusCode::NO_CONTENT)
}

fn refuse_self_lockout(
    caller: &Caller,
    user: &AccountName,
    demotes: bool,
) -> Result<(), ManageError> {
    if manage::locks_self_out(&caller.principal, user, demotes) {
        return Err(AccountError::Refused(
            "an admin cannot demote, disable or delete itself; another admin can".into(),
        )
        .into());
    }
    Ok(())
}
