//! `AccountStore` on PostgreSQL: the account tables of `migrations/postgres`, the SQLite
//! store's statements with the database's clock and row locks.
//!
//! Like the rest of the store, every method is one statement or one transaction at READ
//! COMMITTED. A transaction that checks a rule before it writes locks what it checked, so the
//! rule still holds when it commits whatever other nodes do meanwhile:
//! - a membership change (`set_member`, `remove_member`) locks the organisation's row first,
//!   so changes to one organisation run one at a time, and counts its owners after its change;
//! - `set_member` locks the user's row `FOR KEY SHARE`; `delete_user` locks it `FOR UPDATE`,
//!   then every organisation the user owns (in name order), so a concurrent promotion of the
//!   user is either seen or waits for the deletion. The two lock in opposite orders; the
//!   deadlock that can follow is retried like every other (40P01);
//! - a parent checked before a child is inserted (the team and the membership of a team
//!   member, the user of a session, the namespace of a robot, the users and teams of grants)
//!   is locked `FOR KEY SHARE`, the lock its foreign key takes anyway, from the check on;
//! - `set_grants` upserts the repository's settings row first (a no-op update locks it), so
//!   two replacements of one repository's grants run one after the other;
//! - `add_signing_key` with `only_if_none_active` locks the table in SHARE ROW EXCLUSIVE mode,
//!   which conflicts with itself and with writes but not with reads: nodes starting together
//!   store one key between them; `retire_signing_keys_except` locks the key it keeps.

use async_trait::async_trait;
use sqlx::postgres::Postgres;
use sqlx::{AssertSqlSafe, PgConnection, QueryBuilder};

use super::PgStore;
use super::errors::{Failed, retrying, to_metadata_error};
use crate::accounts::{
    AccountError, AccountName, AccountStore, AuditEvent, AuditQuery, AuditRecord, Entity, Grant,
    Member, Membership, Namespace, NamespaceKind, NewRobot, NewSession, NewUser, OrgRole,
    Organization, RepositorySettings, Result, Robot, Session, StoredRobot, StoredSigningKey,
    StoredUser, Team, TeamRef, Timestamp, User, UserChange, Visibility,
};
use crate::metadata::MetadataStore;
use crate::metadata::account_rows::{
    AuditRow, GrantRows, RobotRow, SessionRow, SettingsRow, SigningKeyRow, UserRow, audit_query,
    found, last_owner, member_key, not_a_member, quota_to_db, read_member, read_membership,
    read_name, read_namespace, read_org, read_settings, read_team, read_team_ref, robot_key,
    scopes_json, team_key, team_member_key,
};
use crate::metadata::rows::limit;
use crate::oci::RepoName;

type Attempt<T> = std::result::Result<T, Failed<AccountError>>;

const USER_COLUMNS: &str = "name, password_hash, admin, disabled,
    floor(extract(epoch FROM created_at))::bigint AS created_at";
const ORG_COLUMNS: &str = "name, floor(extract(epoch FROM created_at))::bigint AS created_at";
const ROBOT_COLUMNS: &str = "namespace, name, secret_hash, scopes::text AS scopes,
    floor(extract(epoch FROM created_at))::bigint AS created_at,
    floor(extract(epoch FROM expires_at))::bigint AS expires_at,
    floor(extract(epoch FROM revoked_at))::bigint AS revoked_at";
const SESSION_COLUMNS: &str = "id, user_name, secret_hash, service,
    floor(extract(epoch FROM created_at))::bigint AS created_at,
    floor(extract(epoch FROM expires_at))::bigint AS expires_at,
    floor(extract(epoch FROM revoked_at))::bigint AS revoked_at";
const SIGNING_KEY_COLUMNS: &str = "kid, algorithm, private_pem,
    floor(extract(epoch FROM created_at))::bigint AS created_at,
    floor(extract(epoch FROM retired_at))::bigint AS retired_at";
const AUDIT_SELECT: &str = "SELECT id, floor(extract(epoch FROM at))::bigint AS at,
    actor, client, action, target, outcome, detail FROM audit_log";

/// A repository's visibility with each of its grants (none: one row without a grant).
const SETTINGS: &str = "
    SELECT s.visibility, g.kind, g.name, g.permission FROM repository_settings s
    LEFT JOIN (SELECT repo, 'user'::text AS kind, user_name AS name, permission
               FROM repository_user_grants
               UNION ALL
               SELECT repo, 'team'::text AS kind, team AS name, permission
               FROM repository_team_grants) g ON g.repo = s.repo
    WHERE s.repo = $1";

/// A user, locked against deletion until the transaction ends.
const USER_KEY_SHARE: &str = "SELECT 1 FROM users WHERE name = $1 FOR KEY SHARE";

/// An organisation the user is the only owner of.
const SOLE_OWNED_ORG: &str = "
    SELECT m.org FROM org_members m
    WHERE m.user_name = $1 AND m.role = 'owner'
      AND NOT EXISTS (SELECT 1 FROM org_members o
                      WHERE o.org = m.org AND o.role = 'owner' AND o.user_name <> m.user_name)
    ORDER BY m.org LIMIT 1";

fn failed(e: sqlx::Error) -> AccountError {
    to_metadata_error(e).into()
}

/// Whether `sql` (a `SELECT 1 … FOR <lock>` naming one row by `keys`) finds its row, which
/// then stays locked until the transaction ends.
async fn locked(conn: &mut PgConnection, sql: &'static str, keys: &[&str]) -> Attempt<bool> {
    let mut query = sqlx::query(sql);
    for key in keys {
        query = query.bind(*key);
    }
    Ok(query.fetch_optional(conn).await?.is_some())
}

/// Fails with `missing` unless `sql` finds (and locks) its row (see [`locked`]).
async fn require(
    conn: &mut PgConnection,
    sql: &'static str,
    keys: &[&str],
    missing: AccountError,
) -> Attempt<()> {
    if locked(conn, sql, keys).await? {
        Ok(())
    } else {
        Err(missing.into())
    }
}

/// Takes `name` for a new user or organisation; `false` when a user or organisation has it
/// (a concurrent claim of the same name waits for the first to commit or roll back).
async fn claim_namespace(
    conn: &mut PgConnection,
    name: &AccountName,
    kind: NamespaceKind,
) -> Attempt<bool> {
    let done = sqlx::query(
        "INSERT INTO namespaces (name, kind) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name.as_str())
    .bind(kind.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `Refused` when the organisation has no owner left. The caller holds the organisation's
/// lock, so no other membership change runs between this count and the commit.
async fn ensure_owner(conn: &mut PgConnection, org: &AccountName) -> Attempt<()> {
    let owners: i64 =
        sqlx::query_scalar("SELECT count(*) FROM org_members WHERE org = $1 AND role = 'owner'")
            .bind(org.as_str())
            .fetch_one(conn)
            .await?;
    if owners == 0 {
        return Err(last_owner(org.as_str()).into());
    }
    Ok(())
}

/// Locks the organisation's row for a membership change; `NotFound` when there is none.
async fn lock_org(conn: &mut PgConnection, org: &AccountName) -> Attempt<()> {
    let sql = "SELECT 1 FROM organizations WHERE name = $1 FOR UPDATE";
    let missing = AccountError::not_found(Entity::Organization, org);
    require(conn, sql, &[org.as_str()], missing).await
}

fn bind_time(sql: &mut QueryBuilder<Postgres>, at: Timestamp) {
    sql.push("to_timestamp(").push_bind(at).push(")");
}

impl PgStore {
    /// Runs one statement binding `keys` in order; `NotFound` (`entity` `name`) when it
    /// changed no row.
    async fn change_one(
        &self,
        sql: &'static str,
        keys: &[&str],
        entity: Entity,
        name: impl std::fmt::Display,
    ) -> Result<()> {
        let mut query = sqlx::query(sql);
        for key in keys {
            query = query.bind(*key);
        }
        let done = query.execute(&self.pool).await.map_err(failed)?;
        found(done.rows_affected(), entity, name)
    }

    async fn create_user_once(&self, user: &NewUser) -> Attempt<User> {
        let mut tx = self.pool.begin().await?;
        if !claim_namespace(&mut tx, &user.name, NamespaceKind::User).await? {
            return Err(AccountError::already_exists(Entity::User, &user.name).into());
        }
        let row: UserRow = sqlx::query_as(AssertSqlSafe(format!(
            "INSERT INTO users (name, password_hash, admin, disabled) VALUES ($1, $2, $3, false)
             RETURNING {USER_COLUMNS}"
        )))
        .bind(user.name.as_str())
        .bind(user.password_hash.as_deref())
        .bind(user.admin)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.into_user()?)
    }

    async fn delete_user_once(&self, name: &AccountName) -> Attempt<()> {
        let mut tx = self.pool.begin().await?;
        let user_sql = "SELECT 1 FROM users WHERE name = $1 FOR UPDATE";
        require(
            &mut tx,
            user_sql,
            &[name.as_str()],
            AccountError::not_found(Entity::User, name),
        )
        .await?;
        sqlx::query(
            "SELECT 1 FROM organizations o JOIN org_members m ON m.org = o.name
             WHERE m.user_name = $1 AND m.role = 'owner'
             ORDER BY o.name
             FOR UPDATE OF o",
        )
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?;
        let sole_owned: Option<String> = sqlx::query_scalar(SOLE_OWNED_ORG)
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(org) = sole_owned {
            return Err(last_owner(&org).into());
        }
        sqlx::query("DELETE FROM namespaces WHERE name = $1 AND kind = 'user'")
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_org_once(
        &self,
        name: &AccountName,
        owner: &AccountName,
    ) -> Attempt<Organization> {
        let mut tx = self.pool.begin().await?;
        require(
            &mut tx,
            USER_KEY_SHARE,
            &[owner.as_str()],
            AccountError::not_found(Entity::User, owner),
        )
        .await?;
        if !claim_namespace(&mut tx, name, NamespaceKind::Organization).await? {
            return Err(AccountError::already_exists(Entity::Organization, name).into());
        }
        let row: (String, i64) = sqlx::query_as(AssertSqlSafe(format!(
            "INSERT INTO organizations (name) VALUES ($1) RETURNING {ORG_COLUMNS}"
        )))
        .bind(name.as_str())
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO org_members (org, user_name, role) VALUES ($1, $2, 'owner')")
            .bind(name.as_str())
            .bind(owner.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(read_org(row)?)
    }

    async fn set_member_once(
        &self,
        org: &AccountName,
        user: &AccountName,
        role: OrgRole,
    ) -> Attempt<()> {
        let mut tx = self.pool.begin().await?;
        lock_org(&mut tx, org).await?;
        require(
            &mut tx,
            USER_KEY_SHARE,
            &[user.as_str()],
            AccountError::not_found(Entity::User, user),
        )
        .await?;
        sqlx::query(
            "INSERT INTO org_members (org, user_name, role) VALUES ($1, $2, $3)
             ON CONFLICT (org, user_name) DO UPDATE SET role = excluded.role",
        )
        .bind(org.as_str())
        .bind(user.as_str())
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
        ensure_owner(&mut tx, org).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_member_once(&self, org: &AccountName, user: &AccountName) -> Attempt<()> {
        let mut tx = self.pool.begin().await?;
        lock_org(&mut tx, org).await?;
        // Its team memberships go with it (ON DELETE CASCADE).
        let done = sqlx::query("DELETE FROM org_members WHERE org = $1 AND user_name = $2")
            .bind(org.as_str())
            .bind(user.as_str())
            .execute(&mut *tx)
            .await?;
        found(done.rows_affected(), Entity::Member, member_key(org, user))?;
        ensure_owner(&mut tx, org).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_team_once(
        &self,
        org: &AccountName,
        team: &AccountName,
        description: &str,
    ) -> Attempt<()> {
        let mut tx = self.pool.begin().await?;
        let org_sql = "SELECT 1 FROM organizations WHERE name = $1 FOR KEY SHARE";
        require(
            &mut tx,
            org_sql,
            &[org.as_str()],
            AccountError::not_found(Entity::Organization, org),
        )
        .await?;
        let done = sqlx::query(
            "INSERT INTO teams (org, name, description) VALUES ($1, $2, $3)
             ON CONFLICT (org, name) DO NOTHING",
        )
        .bind(org.as_str())
        .bind(team.as_str())
        .bind(description)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            let key = team_key(org.as_str(), team.as_str());
            return Err(AccountError::already_exists(Entity::Team, key).into());
        }
        tx.commit().await?;
        Ok(())
    }

    async fn add_team_member_once(
        &self,
        org: &AccountName,
        team: &AccountName,
        user: &AccountName,
    ) -> Attempt<()> {
        let mut tx = self.pool.begin().await?;
        let team_sql = "SELECT 1 FROM teams WHERE org = $1 AND name = $2 FOR KEY SHARE";
        let no_team = AccountError::not_found(Entity::Team, team_key(org.as_str(), team.as_str()));
        require(&mut tx, team_sql, &[org.as_str(), team.as_str()], no_team).await?;
        let member_sql =
            "SELECT 1 FROM org_members WHERE org = $1 AND user_name = $2 FOR KEY SHARE";
        let member_keys = [org.as_str(), user.as_str()];
        require(&mut tx, member_sql, &member_keys, not_a_member(org, user)).await?;
        sqlx::query(
            "INSERT INTO team_members (org, team, user_name) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(org.as_str())
        .bind(team.as_str())
        .bind(user.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_grants_once(&self, repo: &RepoName, rows: &GrantRows<'_>) -> Attempt<()> {
        let org = repo.namespace();
        let mut tx = self.pool.begin().await?;
        // Locks the row: replacements of one repository's grants queue here.
        sqlx::query(
            "INSERT INTO repository_settings (repo, visibility) VALUES ($1, $2)
             ON CONFLICT (repo) DO UPDATE SET visibility = repository_settings.visibility",
        )
        .bind(repo.as_str())
        .bind(Visibility::default().as_str())
        .execute(&mut *tx)
        .await?;
        let (users, user_permissions): (Vec<&str>, Vec<&str>) = rows.users.iter().copied().unzip();
        let (teams, team_permissions): (Vec<&str>, Vec<&str>) = rows.teams.iter().copied().unzip();
        let known_users: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM users WHERE name = ANY($1) ORDER BY name FOR KEY SHARE",
        )
        .bind(&users)
        .fetch_all(&mut *tx)
        .await?;
        if let Some(unknown) = users.iter().find(|u| !known_users.iter().any(|k| k == *u)) {
            return Err(AccountError::not_found(Entity::User, unknown).into());
        }
        let known_teams: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM teams WHERE org = $1 AND name = ANY($2) ORDER BY name FOR KEY SHARE",
        )
        .bind(org)
        .bind(&teams)
        .fetch_all(&mut *tx)
        .await?;
        if let Some(unknown) = teams.iter().find(|t| !known_teams.iter().any(|k| k == *t)) {
            return Err(AccountError::not_found(Entity::Team, team_key(org, unknown)).into());
        }
        for table in ["repository_user_grants", "repository_team_grants"] {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE repo = $1"
            )))
            .bind(repo.as_str())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO repository_user_grants (repo, user_name, permission)
             SELECT $1, g.name, g.permission FROM unnest($2::text[], $3::text[]) AS g(name, permission)",
        )
        .bind(repo.as_str())
        .bind(&users)
        .bind(&user_permissions)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO repository_team_grants (repo, org, team, permission)
             SELECT $1, $2, g.name, g.permission FROM unnest($3::text[], $4::text[]) AS g(name, permission)",
        )
        .bind(repo.as_str())
        .bind(org)
        .bind(&teams)
        .bind(&team_permissions)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_robot_once(&self, robot: &NewRobot, scopes: &str) -> Attempt<Robot> {
        let mut tx = self.pool.begin().await?;
        let namespace_sql = "SELECT 1 FROM namespaces WHERE name = $1 FOR KEY SHARE";
        require(
            &mut tx,
            namespace_sql,
            &[robot.namespace.as_str()],
            AccountError::not_found(Entity::Namespace, &robot.namespace),
        )
        .await?;
        let row: Option<RobotRow> = sqlx::query_as(AssertSqlSafe(format!(
            "INSERT INTO robots (namespace, name, secret_hash, scopes, expires_at)
             VALUES ($1, $2, $3, $4::jsonb, to_timestamp($5))
             ON CONFLICT (namespace, name) DO NOTHING
             RETURNING {ROBOT_COLUMNS}"
        )))
        .bind(robot.namespace.as_str())
        .bind(robot.name.as_str())
        .bind(&robot.secret_hash)
        .bind(scopes)
        .bind(robot.expires_at)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let key = robot_key(&robot.namespace, &robot.name);
            return Err(AccountError::already_exists(Entity::Robot, key).into());
        };
        tx.commit().await?;
        Ok(row.into_robot()?)
    }

    async fn create_session_once(&self, session: &NewSession) -> Attempt<Session> {
        let mut tx = self.pool.begin().await?;
        require(
            &mut tx,
            USER_KEY_SHARE,
            &[session.user.as_str()],
            AccountError::not_found(Entity::User, &session.user),
        )
        .await?;
        let row: Option<SessionRow> = sqlx::query_as(AssertSqlSafe(format!(
            "INSERT INTO sessions (id, user_name, secret_hash, service, expires_at)
             VALUES ($1, $2, $3, $4, to_timestamp($5))
             ON CONFLICT (id) DO NOTHING
             RETURNING {SESSION_COLUMNS}"
        )))
        .bind(&session.id)
        .bind(session.user.as_str())
        .bind(&session.secret_hash)
        .bind(&session.service)
        .bind(session.expires_at)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(AccountError::already_exists(Entity::Session, &session.id).into());
        };
        tx.commit().await?;
        Ok(row.into_session()?)
    }

    async fn add_signing_key_once(
        &self,
        key: &StoredSigningKey,
        only_if_none_active: bool,
    ) -> Attempt<bool> {
        let mut tx = self.pool.begin().await?;
        if only_if_none_active {
            sqlx::query("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
            let active_sql = "SELECT 1 FROM signing_keys WHERE retired_at IS NULL LIMIT 1";
            if locked(&mut tx, active_sql, &[]).await? {
                return Ok(false);
            }
        }
        let done = sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_pem, created_at, retired_at)
             VALUES ($1, $2, $3, to_timestamp($4), to_timestamp($5))
             ON CONFLICT (kid) DO NOTHING",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_pem)
        .bind(key.created_at)
        .bind(key.retired_at)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(AccountError::already_exists(Entity::SigningKey, &key.kid).into());
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn retire_signing_keys_except_once(&self, keep: &str) -> Attempt<()> {
        let mut tx = self.pool.begin().await?;
        let keep_sql =
            "SELECT 1 FROM signing_keys WHERE kid = $1 AND retired_at IS NULL FOR UPDATE";
        require(
            &mut tx,
            keep_sql,
            &[keep],
            AccountError::not_found(Entity::SigningKey, keep),
        )
        .await?;
        sqlx::query(
            "UPDATE signing_keys SET retired_at = now() WHERE retired_at IS NULL AND kid <> $1",
        )
        .bind(keep)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl AccountStore for PgStore {
    async fn has_users(&self) -> Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")
            .fetch_one(&self.pool)
            .await
            .map_err(failed)
    }

    async fn epoch(&self) -> Result<String> {
        sqlx::query_scalar("SELECT value FROM account_epoch WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(failed)
    }

    async fn create_user(&self, user: &NewUser) -> Result<User> {
        retrying(|| self.create_user_once(user)).await
    }

    async fn user(&self, name: &AccountName) -> Result<Option<StoredUser>> {
        let row: Option<UserRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE name = $1"
        )))
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(failed)?;
        row.map(UserRow::into_stored).transpose()
    }

    async fn list_users(&self, after: Option<&AccountName>, limit_to: usize) -> Result<Vec<User>> {
        let rows: Vec<UserRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE name > $1 ORDER BY name LIMIT $2"
        )))
        .bind(after.map_or("", AccountName::as_str))
        .bind(limit(limit_to))
        .fetch_all(&self.pool)
        .await
        .map_err(failed)?;
        rows.into_iter().map(UserRow::into_user).collect()
    }

    async fn update_user(&self, name: &AccountName, change: &UserChange) -> Result<User> {
        let row: Option<UserRow> = sqlx::query_as(AssertSqlSafe(format!(
            "UPDATE users SET password_hash = coalesce($2, password_hash),
                              admin = coalesce($3, admin),
                              disabled = coalesce($4, disabled)
             WHERE name = $1
             RETURNING {USER_COLUMNS}"
        )))
        .bind(name.as_str())
        .bind(change.password_hash.as_deref())
        .bind(change.admin)
        .bind(change.disabled)
        .fetch_optional(&self.pool)
        .await
        .map_err(failed)?;
        row.ok_or_else(|| AccountError::not_found(Entity::User, name))?
            .into_user()
    }

    async fn delete_user(&self, name: &AccountName) -> Result<()> {
        retrying(|| self.delete_user_once(name)).await
    }

    async fn create_org(&self, name: &AccountName, owner: &AccountName) -> Result<Organization> {
        retrying(|| self.create_org_once(name, owner)).await
    }

    async fn org(&self, name: &AccountName) -> Result<Option<Organization>> {
        let row: Option<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {ORG_COLUMNS} FROM organizations WHERE name = $1"
        )))
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(failed)?;
        row.map(read_org).transpose()
    }

    async fn list_orgs(
        &self,
        after: Option<&AccountName>,
        limit_to: usize,
    ) -> Result<Vec<Organization>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {ORG_COLUMNS} FROM organizations WHERE name > $1 ORDER BY name LIMIT $2"
        )))
        .bind(after.map_or("", AccountName::as_str))
        .bind(limit(limit_to))
        .fetch_all(&self.pool)
        .await
        .map_err(failed)?;
        rows.into_iter().map(read_org).collect()
    }

    async fn delete_org(&self, name: &AccountName) -> Result<()> {
        let sql = "DELETE FROM namespaces WHERE name = $1 AND kind = 'organization'";
        let keys = [name.as_str()];
        self.change_one(sql, &keys, Entity::Organization, name)
            .await
    }

    async fn set_member(&self, org: &AccountName, user: &AccountName, role: OrgRole) -> Result<()> {
        retrying(|| self.set_member_once(org, user, role)).await
    }

    async fn remove_member(&self, org: &AccountName, user: &AccountName) -> Result<()> {
        retrying(|| self.remove_member_once(org, user)).await
    }

    async fn members(
        &self,
        org: &AccountName,
        after: Option<&AccountName>,
        limit_to: usize,
    ) -> Result<Vec<Member>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT user_name, role FROM org_members WHERE org = $1 AND user_name > $2
             ORDER BY user_name LIMIT $3",
        )
        .bind(org.as_str())
        .bind(after.map_or("", AccountName::as_str))
        .bind(limit(limit_to))
        .fetch_all(&self.pool)
        .await
        .map_err(failed)?;
        rows.into_iter().map(read_member).collect()
    }

    async fn memberships(&self, user: &AccountName) -> Result<Vec<Membership>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT org, role FROM org_members WHERE user_name = $1 ORDER BY org")
                .bind(user.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(failed)?;
        rows.into_iter().map(read_membership).collect()
    }

    async fn create_team(
        &self,
        org: &AccountName,
        team: &AccountName,
        description: &str,
    ) -> Result<Team> {
        retrying(|| self.create_team_once(org, team, description)).await?;
        Ok(Team {
            org: org.clone(),
            name: team.clone(),
            description: description.to_owned(),
        })
    }

    async fn teams(&self, org: &AccountName) -> Result<Vec<Team>> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT org, name, description FROM teams WHERE org = $1 ORDER BY name")
                .bind(org.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(failed)?;
        rows.into_iter().map(read_team).collect()
    }

    async fn delete_team(&self, org: &AccountName, team: &AccountName) -> Result<()> {
        // Its memberships and the grants to it go with it (ON DELETE CASCADE).
        let sql = "DELETE FROM teams WHERE org = $1 AND name = $2";
        let key = team_key(org.as_str(), team.as_str());
        self.change_one(sql, &[org.as_str(), team.as_str()], Entity::Team, key)
            .await
    }

    async fn add_team_member(
        &self,
        org: &AccountName,
        team: &AccountName,
        user: &AccountName,
    ) -> Result<()> {
        retrying(|| self.add_team_member_once(org, team, user)).await
    }

    async fn remove_team_member(
        &self,
        org: &AccountName,
        team: &AccountName,
        user: &AccountName,
    ) -> Result<()> {
        let sql = "DELETE FROM team_members WHERE org = $1 AND team = $2 AND user_name = $3";
        let keys = [org.as_str(), team.as_str(), user.as_str()];
        let key = team_member_key(org, team, user);
        self.change_one(sql, &keys, Entity::TeamMember, key).await
    }

    async fn team_members(
        &self,
        org: &AccountName,
        team: &AccountName,
    ) -> Result<Vec<AccountName>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT user_name FROM team_members WHERE org = $1 AND team = $2 ORDER BY user_name",
        )
        .bind(org.as_str())
        .bind(team.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(failed)?;
        rows.into_iter().map(read_name).collect()
    }

    async fn teams_of(&self, user: &AccountName) -> Result<Vec<TeamRef>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT org, team FROM team_members WHERE user_name = $1 ORDER BY org, team",
        )
        .bind(user.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(failed)?;
        rows.into_iter().map(read_team_ref).collect()
    }

    async fn namespace(&self, name: &AccountName) -> Result<Option<Namespace>> {
        let row: Option<(String, String, Option<i64>)> =
            sqlx::query_as("SELECT name, kind, quota_bytes FROM namespaces WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(failed)?;
        row.map(read_namespace).transpose()
    }

    async fn set_quota(&self, name: &AccountName, quota_bytes: Option<u64>) -> Result<()> {
        let done = sqlx::query("UPDATE namespaces SET quota_bytes = $2 WHERE name = $1")
            .bind(name.as_str())
            .bind(quota_to_db(quota_bytes)?)
            .execute(&self.pool)
            .await
            .map_err(failed)?;
        found(done.rows_affected(), Entity::Namespace, name)
    }

    async fn repository_settings(&self, repo: &RepoName) -> Result<RepositorySettings> {
        let rows: Vec<SettingsRow> = sqlx::query_as(SETTINGS)
            .bind(repo.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(failed)?;
        read_settings(rows)
    }

    async fn set_visibility(&self, repo: &RepoName, visibility: Visibility) -> Result<()> {
        sqlx::query(
            "INSERT INTO repository_settings (repo, visibility) VALUES ($1, $2)
             ON CONFLICT (repo) DO UPDATE SET visibility = excluded.visibility",
        )
        .bind(repo.as_str())
        .bind(visibility.as_str())
        .execute(&self.pool)
        .await
        .map_err(failed)?;
        Ok(())
    }

    async fn set_grants(&self, repo: &RepoName, grants: &[Grant]) -> Result<()> {
        let rows = GrantRows::of(grants);
        retrying(|| self.set_grants_once(repo, &rows)).await
    }

    async fn delete_repository_settings(&self, repo: &RepoName) -> Result<()> {
        // The grants go with the row (ON DELETE CASCADE).
        sqlx::query("DELETE FROM repository_settings WHERE repo = $1")
            .bind(repo.as_str())
            .execute(&self.pool)
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn create_robot(&self, robot: &NewRobot) -> Result<Robot> {
        let scopes = scopes_json(&robot.scopes)?;
        retrying(|| self.create_robot_once(robot, &scopes)).await
    }

    async fn robot(
        &self,
        namespace: &AccountName,
        name: &AccountName,
    ) -> Result<Option<StoredRobot>> {
        let row: Option<RobotRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {ROBOT_COLUMNS} FROM robots WHERE namespace = $1 AND name = $2"
        )))
        .bind(namespace.as_str())
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(failed)?;
        row.map(RobotRow::into_stored).transpose()
    }

    async fn robots(&self, namespace: &AccountName) -> Result<Vec<Robot>> {
        let rows: Vec<RobotRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {ROBOT_COLUMNS} FROM robots WHERE namespace = $1 ORDER BY name"
        )))
        .bind(namespace.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(failed)?;
        rows.into_iter().map(RobotRow::into_robot).collect()
    }

    async fn revoke_robot(&self, namespace: &AccountName, name: &AccountName) -> Result<()> {
        // The first revocation's time stays.
        let sql = "UPDATE robots SET revoked_at = coalesce(revoked_at, now())
                   WHERE namespace = $1 AND name = $2";
        let keys = [namespace.as_str(), name.as_str()];
        let key = robot_key(namespace, name);
        self.change_one(sql, &keys, Entity::Robot, key).await
    }

    async fn delete_robot(&self, namespace: &AccountName, name: &AccountName) -> Result<()> {
        let sql = "DELETE FROM robots WHERE namespace = $1 AND name = $2";
        let keys = [namespace.as_str(), name.as_str()];
        let key = robot_key(namespace, name);
        self.change_one(sql, &keys, Entity::Robot, key).await
    }

    async fn create_session(&self, session: &NewSession) -> Result<Session> {
        retrying(|| self.create_session_once(session)).await
    }

    async fn session(&self, id: &str) -> Result<Option<Session>> {
        let row: Option<SessionRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(failed)?;
        row.map(SessionRow::into_session).transpose()
    }

    async fn revoke_session(&self, id: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(failed)?;
        Ok(done.rows_affected() > 0)
    }

    async fn revoke_sessions_of(&self, user: &AccountName) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = now() WHERE user_name = $1 AND revoked_at IS NULL",
        )
        .bind(user.as_str())
        .execute(&self.pool)
        .await
        .map_err(failed)?;
        Ok(done.rows_affected())
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>> {
        let rows: Vec<SigningKeyRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys ORDER BY created_at, kid"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(failed)?;
        Ok(rows.into_iter().map(StoredSigningKey::from).collect())
    }

    async fn add_signing_key(
        &self,
        key: &StoredSigningKey,
        only_if_none_active: bool,
    ) -> Result<bool> {
        retrying(|| self.add_signing_key_once(key, only_if_none_active)).await
    }

    async fn retire_signing_keys_except(&self, keep: &str) -> Result<()> {
        retrying(|| self.retire_signing_keys_except_once(keep)).await
    }

    async fn delete_signing_keys_retired_before(&self, before: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM signing_keys WHERE retired_at < to_timestamp($1)")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(failed)?;
        Ok(done.rows_affected())
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (actor, client, action, target, outcome, detail)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(event.actor.as_deref())
        .bind(event.client.as_deref())
        .bind(&event.action)
        .bind(&event.target)
        .bind(event.outcome.as_str())
        .bind(event.detail.as_deref())
        .execute(&self.pool)
        .await
        .map_err(failed)?;
        Ok(())
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = audit_query(AUDIT_SELECT, query, bind_time)
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(failed)?;
        rows.into_iter().map(AuditRow::into_record).collect()
    }

    async fn now(&self) -> Result<Timestamp> {
        Ok(MetadataStore::now(self).await?)
    }
}
