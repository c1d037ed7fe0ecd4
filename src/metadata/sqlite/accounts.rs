//! `AccountStore` on the embedded store: the account tables of `migrations/sqlite`, in the same
//! file as the registry's.
//!
//! Every write is one statement or one `BEGIN IMMEDIATE` transaction on the one writer
//! connection, so writers never interleave: a rule checked inside a transaction (an
//! organisation keeps an owner, a team member is a member of the organisation, only one first
//! signing key) still holds when it commits. The foreign keys do the cascades.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite, SqliteConnection};

use super::SqliteStore;
use crate::accounts::{
    AccountError, AccountName, AccountStore, AuditEvent, AuditQuery, AuditRecord, Entity, Grant,
    Member, Membership, Namespace, NamespaceKind, NewRobot, NewSession, NewUser, OrgRole,
    Organization, RepositorySettings, Result, Robot, Session, StoredRobot, StoredSigningKey,
    StoredUser, Team, TeamRef, Timestamp, User, UserChange, Visibility,
};
use crate::metadata::account_rows::{
    AuditRow, GrantRows, RobotRow, SessionRow, SettingsRow, SigningKeyRow, UserRow, audit_query,
    found, last_owner, member_key, not_a_member, quota_to_db, read_member, read_membership,
    read_name, read_namespace, read_org, read_settings, read_team, read_team_ref, robot_key,
    scopes_json, team_key, team_member_key,
};
use crate::metadata::rows::{backend, limit};
use crate::metadata::system_now as now;
use crate::oci::RepoName;

const USER_COLUMNS: &str = "name, password_hash, admin, disabled, created_at";
const ROBOT_COLUMNS: &str =
    "namespace, name, secret_hash, scopes, created_at, expires_at, revoked_at";
const SESSION_COLUMNS: &str =
    "id, user_name, secret_hash, service, created_at, expires_at, revoked_at";
const SIGNING_KEY_COLUMNS: &str = "kid, algorithm, private_pem, created_at, retired_at";
const AUDIT_SELECT: &str =
    "SELECT id, at, actor, client, action, target, outcome, detail FROM audit_log";

/// A repository's visibility with each of its grants (none: one row without a grant).
const SETTINGS: &str = "
    SELECT s.visibility, g.kind, g.name, g.permission FROM repository_settings s
    LEFT JOIN (SELECT repo, 'user' AS kind, user_name AS name, permission
               FROM repository_user_grants
               UNION ALL
               SELECT repo, 'team' AS kind, team AS name, permission
               FROM repository_team_grants) g ON g.repo = s.repo
    WHERE s.repo = ?1";

const USER_EXISTS: &str = "SELECT 1 FROM users WHERE name = ?1";
const ORG_EXISTS: &str = "SELECT 1 FROM organizations WHERE name = ?1";
const TEAM_EXISTS: &str = "SELECT 1 FROM teams WHERE org = ?1 AND name = ?2";

/// An organisation the user is the only owner of.
const SOLE_OWNED_ORG: &str = "
    SELECT m.org FROM org_members m
    WHERE m.user_name = ?1 AND m.role = 'owner'
      AND NOT EXISTS (SELECT 1 FROM org_members o
                      WHERE o.org = m.org AND o.role = 'owner' AND o.user_name <> m.user_name)
    ORDER BY m.org LIMIT 1";

fn failed(e: sqlx::Error) -> AccountError {
    backend(e).into()
}

/// Whether `sql` (a `SELECT 1` naming one row by `keys`) finds its row.
async fn exists(conn: &mut SqliteConnection, sql: &'static str, keys: &[&str]) -> Result<bool> {
    let mut query = sqlx::query(sql);
    for key in keys {
        query = query.bind(*key);
    }
    let row = query.fetch_optional(conn).await.map_err(failed)?;
    Ok(row.is_some())
}

/// Fails with `missing` unless `sql` finds its row (see [`exists`]).
async fn require(
    conn: &mut SqliteConnection,
    sql: &'static str,
    keys: &[&str],
    missing: AccountError,
) -> Result<()> {
    if exists(conn, sql, keys).await? {
        Ok(())
    } else {
        Err(missing)
    }
}

/// Takes `name` for a new user or organisation; `false` when a user or organisation has it.
async fn claim_namespace(
    conn: &mut SqliteConnection,
    name: &AccountName,
    kind: NamespaceKind,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO namespaces (name, kind) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name.as_str())
    .bind(kind.as_str())
    .execute(conn)
    .await
    .map_err(failed)?;
    Ok(done.rows_affected() == 1)
}

/// `Refused` when the organisation has no owner left.
async fn ensure_owner(conn: &mut SqliteConnection, org: &AccountName) -> Result<()> {
    let owners: i64 =
        sqlx::query_scalar("SELECT count(*) FROM org_members WHERE org = ?1 AND role = 'owner'")
            .bind(org.as_str())
            .fetch_one(conn)
            .await
            .map_err(failed)?;
    if owners == 0 {
        return Err(last_owner(org.as_str()));
    }
    Ok(())
}

fn bind_time(sql: &mut QueryBuilder<Sqlite>, at: Timestamp) {
    sql.push_bind(at);
}

impl SqliteStore {
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
        let done = query.execute(&self.write).await.map_err(failed)?;
        found(done.rows_affected(), entity, name)
    }
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn has_users(&self) -> Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users)")
            .fetch_one(&self.read)
            .await
            .map_err(failed)
    }

    async fn epoch(&self) -> Result<String> {
        sqlx::query_scalar("SELECT value FROM account_epoch WHERE id = 1")
            .fetch_one(&self.read)
            .await
            .map_err(failed)
    }

    async fn create_user(&self, user: &NewUser) -> Result<User> {
        let at = now();
        let mut tx = self.begin().await?;
        if !claim_namespace(&mut tx, &user.name, NamespaceKind::User).await? {
            return Err(AccountError::already_exists(Entity::User, &user.name));
        }
        sqlx::query(
            "INSERT INTO users (name, password_hash, admin, disabled, created_at)
             VALUES (?1, ?2, ?3, 0, ?4)",
        )
        .bind(user.name.as_str())
        .bind(user.password_hash.as_deref())
        .bind(user.admin)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        Ok(User {
            name: user.name.clone(),
            admin: user.admin,
            disabled: false,
            created_at: at,
        })
    }

    async fn user(&self, name: &AccountName) -> Result<Option<StoredUser>> {
        let row: Option<UserRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE name = ?1"
        )))
        .bind(name.as_str())
        .fetch_optional(&self.read)
        .await
        .map_err(failed)?;
        row.map(UserRow::into_stored).transpose()
    }

    async fn list_users(&self, after: Option<&AccountName>, limit_to: usize) -> Result<Vec<User>> {
        let rows: Vec<UserRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE name > ?1 ORDER BY name LIMIT ?2"
        )))
        .bind(after.map_or("", AccountName::as_str))
        .bind(limit(limit_to))
        .fetch_all(&self.read)
        .await
        .map_err(failed)?;
        rows.into_iter().map(UserRow::into_user).collect()
    }

    async fn update_user(&self, name: &AccountName, change: &UserChange) -> Result<User> {
        let row: Option<UserRow> = sqlx::query_as(AssertSqlSafe(format!(
            "UPDATE users SET password_hash = coalesce(?2, password_hash),
                              admin = coalesce(?3, admin),
                              disabled = coalesce(?4, disabled)
             WHERE name = ?1
             RETURNING {USER_COLUMNS}"
        )))
        .bind(name.as_str())
        .bind(change.password_hash.as_deref())
        .bind(change.admin)
        .bind(change.disabled)
        .fetch_optional(&self.write)
        .await
        .map_err(failed)?;
        row.ok_or_else(|| AccountError::not_found(Entity::User, name))?
            .into_user()
    }

    async fn delete_user(&self, name: &AccountName) -> Result<()> {
        let mut tx = self.begin().await?;
        let sole_owned: Option<String> = sqlx::query_scalar(SOLE_OWNED_ORG)
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(failed)?;
        if let Some(org) = sole_owned {
            return Err(last_owner(&org));
        }
        let done = sqlx::query("DELETE FROM namespaces WHERE name = ?1 AND kind = 'user'")
            .bind(name.as_str())
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        found(done.rows_affected(), Entity::User, name)?;
        tx.commit().await.map_err(failed)
    }

    async fn create_org(&self, name: &AccountName, owner: &AccountName) -> Result<Organization> {
        let at = now();
        let mut tx = self.begin().await?;
        require(
            &mut tx,
            USER_EXISTS,
            &[owner.as_str()],
            AccountError::not_found(Entity::User, owner),
        )
        .await?;
        if !claim_namespace(&mut tx, name, NamespaceKind::Organization).await? {
            return Err(AccountError::already_exists(Entity::Organization, name));
        }
        sqlx::query("INSERT INTO organizations (name, created_at) VALUES (?1, ?2)")
            .bind(name.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        sqlx::query("INSERT INTO org_members (org, user_name, role) VALUES (?1, ?2, 'owner')")
            .bind(name.as_str())
            .bind(owner.as_str())
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        Ok(Organization {
            name: name.clone(),
            created_at: at,
        })
    }

    async fn org(&self, name: &AccountName) -> Result<Option<Organization>> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT name, created_at FROM organizations WHERE name = ?1")
                .bind(name.as_str())
                .fetch_optional(&self.read)
                .await
                .map_err(failed)?;
        row.map(read_org).transpose()
    }

    async fn list_orgs(
        &self,
        after: Option<&AccountName>,
        limit_to: usize,
    ) -> Result<Vec<Organization>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT name, created_at FROM organizations WHERE name > ?1 ORDER BY name LIMIT ?2",
        )
        .bind(after.map_or("", AccountName::as_str))
        .bind(limit(limit_to))
        .fetch_all(&self.read)
        .await
        .map_err(failed)?;
        rows.into_iter().map(read_org).collect()
    }

    async fn delete_org(&self, name: &AccountName) -> Result<()> {
        let sql = "DELETE FROM namespaces WHERE name = ?1 AND kind = 'organization'";
        let keys = [name.as_str()];
        self.change_one(sql, &keys, Entity::Organization, name)
            .await
    }

    async fn set_member(&self, org: &AccountName, user: &AccountName, role: OrgRole) -> Result<()> {
        let mut tx = self.begin().await?;
        require(
            &mut tx,
            ORG_EXISTS,
            &[org.as_str()],
            AccountError::not_found(Entity::Organization, org),
        )
        .await?;
        require(
            &mut tx,
            USER_EXISTS,
            &[user.as_str()],
            AccountError::not_found(Entity::User, user),
        )
        .await?;
        sqlx::query(
            "INSERT INTO org_members (org, user_name, role) VALUES (?1, ?2, ?3)
             ON CONFLICT (org, user_name) DO UPDATE SET role = excluded.role",
        )
        .bind(org.as_str())
        .bind(user.as_str())
        .bind(role.as_str())
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        ensure_owner(&mut tx, org).await?;
        tx.commit().await.map_err(failed)
    }

    async fn remove_member(&self, org: &AccountName, user: &AccountName) -> Result<()> {
        let mut tx = self.begin().await?;
        require(
            &mut tx,
            ORG_EXISTS,
            &[org.as_str()],
            AccountError::not_found(Entity::Organization, org),
        )
        .await?;
        // Its team memberships go with it (ON DELETE CASCADE).
        let done = sqlx::query("DELETE FROM org_members WHERE org = ?1 AND user_name = ?2")
            .bind(org.as_str())
            .bind(user.as_str())
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        found(done.rows_affected(), Entity::Member, member_key(org, user))?;
        ensure_owner(&mut tx, org).await?;
        tx.commit().await.map_err(failed)
    }

    async fn members(
        &self,
        org: &AccountName,
        after: Option<&AccountName>,
        limit_to: usize,
    ) -> Result<Vec<Member>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT user_name, role FROM org_members WHERE org = ?1 AND user_name > ?2
             ORDER BY user_name LIMIT ?3",
        )
        .bind(org.as_str())
        .bind(after.map_or("", AccountName::as_str))
        .bind(limit(limit_to))
        .fetch_all(&self.read)
        .await
        .map_err(failed)?;
        rows.into_iter().map(read_member).collect()
    }

    async fn memberships(&self, user: &AccountName) -> Result<Vec<Membership>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT org, role FROM org_members WHERE user_name = ?1 ORDER BY org")
                .bind(user.as_str())
                .fetch_all(&self.read)
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
        let mut tx = self.begin().await?;
        require(
            &mut tx,
            ORG_EXISTS,
            &[org.as_str()],
            AccountError::not_found(Entity::Organization, org),
        )
        .await?;
        let done = sqlx::query(
            "INSERT INTO teams (org, name, description) VALUES (?1, ?2, ?3)
             ON CONFLICT (org, name) DO NOTHING",
        )
        .bind(org.as_str())
        .bind(team.as_str())
        .bind(description)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        if done.rows_affected() == 0 {
            return Err(AccountError::already_exists(
                Entity::Team,
                team_key(org.as_str(), team.as_str()),
            ));
        }
        tx.commit().await.map_err(failed)?;
        Ok(Team {
            org: org.clone(),
            name: team.clone(),
            description: description.to_owned(),
        })
    }

    async fn teams(&self, org: &AccountName) -> Result<Vec<Team>> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT org, name, description FROM teams WHERE org = ?1 ORDER BY name")
                .bind(org.as_str())
                .fetch_all(&self.read)
                .await
                .map_err(failed)?;
        rows.into_iter().map(read_team).collect()
    }

    async fn delete_team(&self, org: &AccountName, team: &AccountName) -> Result<()> {
        // Its memberships and the grants to it go with it (ON DELETE CASCADE).
        let sql = "DELETE FROM teams WHERE org = ?1 AND name = ?2";
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
        let mut tx = self.begin().await?;
        let no_team = AccountError::not_found(Entity::Team, team_key(org.as_str(), team.as_str()));
        require(
            &mut tx,
            TEAM_EXISTS,
            &[org.as_str(), team.as_str()],
            no_team,
        )
        .await?;
        let member_sql = "SELECT 1 FROM org_members WHERE org = ?1 AND user_name = ?2";
        let member_keys = [org.as_str(), user.as_str()];
        require(&mut tx, member_sql, &member_keys, not_a_member(org, user)).await?;
        sqlx::query(
            "INSERT INTO team_members (org, team, user_name) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
        )
        .bind(org.as_str())
        .bind(team.as_str())
        .bind(user.as_str())
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)
    }

    async fn remove_team_member(
        &self,
        org: &AccountName,
        team: &AccountName,
        user: &AccountName,
    ) -> Result<()> {
        let sql = "DELETE FROM team_members WHERE org = ?1 AND team = ?2 AND user_name = ?3";
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
            "SELECT user_name FROM team_members WHERE org = ?1 AND team = ?2 ORDER BY user_name",
        )
        .bind(org.as_str())
        .bind(team.as_str())
        .fetch_all(&self.read)
        .await
        .map_err(failed)?;
        rows.into_iter().map(read_name).collect()
    }

    async fn teams_of(&self, user: &AccountName) -> Result<Vec<TeamRef>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT org, team FROM team_members WHERE user_name = ?1 ORDER BY org, team",
        )
        .bind(user.as_str())
        .fetch_all(&self.read)
        .await
        .map_err(failed)?;
        rows.into_iter().map(read_team_ref).collect()
    }

    async fn namespace(&self, name: &AccountName) -> Result<Option<Namespace>> {
        let row: Option<(String, String, Option<i64>)> =
            sqlx::query_as("SELECT name, kind, quota_bytes FROM namespaces WHERE name = ?1")
                .bind(name.as_str())
                .fetch_optional(&self.read)
                .await
                .map_err(failed)?;
        row.map(read_namespace).transpose()
    }

    async fn set_quota(&self, name: &AccountName, quota_bytes: Option<u64>) -> Result<()> {
        let done = sqlx::query("UPDATE namespaces SET quota_bytes = ?2 WHERE name = ?1")
            .bind(name.as_str())
            .bind(quota_to_db(quota_bytes)?)
            .execute(&self.write)
            .await
            .map_err(failed)?;
        found(done.rows_affected(), Entity::Namespace, name)
    }

    async fn repository_settings(&self, repo: &RepoName) -> Result<RepositorySettings> {
        let rows: Vec<SettingsRow> = sqlx::query_as(SETTINGS)
            .bind(repo.as_str())
            .fetch_all(&self.read)
            .await
            .map_err(failed)?;
        read_settings(rows)
    }

    async fn set_visibility(&self, repo: &RepoName, visibility: Visibility) -> Result<()> {
        sqlx::query(
            "INSERT INTO repository_settings (repo, visibility) VALUES (?1, ?2)
             ON CONFLICT (repo) DO UPDATE SET visibility = excluded.visibility",
        )
        .bind(repo.as_str())
        .bind(visibility.as_str())
        .execute(&self.write)
        .await
        .map_err(failed)?;
        Ok(())
    }

    async fn set_grants(&self, repo: &RepoName, grants: &[Grant]) -> Result<()> {
        let rows = GrantRows::of(grants);
        let org = repo.namespace();
        let mut tx = self.begin().await?;
        for (user, _) in &rows.users {
            require(
                &mut tx,
                USER_EXISTS,
                &[*user],
                AccountError::not_found(Entity::User, user),
            )
            .await?;
        }
        for (team, _) in &rows.teams {
            require(
                &mut tx,
                TEAM_EXISTS,
                &[org, *team],
                AccountError::not_found(Entity::Team, team_key(org, team)),
            )
            .await?;
        }
        sqlx::query(
            "INSERT INTO repository_settings (repo, visibility) VALUES (?1, ?2)
             ON CONFLICT (repo) DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(Visibility::default().as_str())
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        for table in ["repository_user_grants", "repository_team_grants"] {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE repo = ?1"
            )))
            .bind(repo.as_str())
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        }
        for (user, permission) in &rows.users {
            sqlx::query(
                "INSERT INTO repository_user_grants (repo, user_name, permission)
                 VALUES (?1, ?2, ?3)",
            )
            .bind(repo.as_str())
            .bind(*user)
            .bind(*permission)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        }
        for (team, permission) in &rows.teams {
            sqlx::query(
                "INSERT INTO repository_team_grants (repo, org, team, permission)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(repo.as_str())
            .bind(org)
            .bind(*team)
            .bind(*permission)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        }
        tx.commit().await.map_err(failed)
    }

    async fn delete_repository_settings(&self, repo: &RepoName) -> Result<()> {
        // The grants go with the row (ON DELETE CASCADE).
        sqlx::query("DELETE FROM repository_settings WHERE repo = ?1")
            .bind(repo.as_str())
            .execute(&self.write)
            .await
            .map_err(failed)?;
        Ok(())
    }

    async fn create_robot(&self, robot: &NewRobot) -> Result<Robot> {
        let scopes = scopes_json(&robot.scopes)?;
        let at = now();
        let mut tx = self.begin().await?;
        let namespace_sql = "SELECT 1 FROM namespaces WHERE name = ?1";
        require(
            &mut tx,
            namespace_sql,
            &[robot.namespace.as_str()],
            AccountError::not_found(Entity::Namespace, &robot.namespace),
        )
        .await?;
        let done = sqlx::query(
            "INSERT INTO robots (namespace, name, secret_hash, scopes, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (namespace, name) DO NOTHING",
        )
        .bind(robot.namespace.as_str())
        .bind(robot.name.as_str())
        .bind(&robot.secret_hash)
        .bind(scopes)
        .bind(at)
        .bind(robot.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        if done.rows_affected() == 0 {
            return Err(AccountError::already_exists(
                Entity::Robot,
                robot_key(&robot.namespace, &robot.name),
            ));
        }
        tx.commit().await.map_err(failed)?;
        Ok(Robot {
            namespace: robot.namespace.clone(),
            name: robot.name.clone(),
            scopes: robot.scopes.clone(),
            created_at: at,
            expires_at: robot.expires_at,
            revoked_at: None,
        })
    }

    async fn robot(
        &self,
        namespace: &AccountName,
        name: &AccountName,
    ) -> Result<Option<StoredRobot>> {
        let row: Option<RobotRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {ROBOT_COLUMNS} FROM robots WHERE namespace = ?1 AND name = ?2"
        )))
        .bind(namespace.as_str())
        .bind(name.as_str())
        .fetch_optional(&self.read)
        .await
        .map_err(failed)?;
        row.map(RobotRow::into_stored).transpose()
    }

    async fn robots(&self, namespace: &AccountName) -> Result<Vec<Robot>> {
        let rows: Vec<RobotRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {ROBOT_COLUMNS} FROM robots WHERE namespace = ?1 ORDER BY name"
        )))
        .bind(namespace.as_str())
        .fetch_all(&self.read)
        .await
        .map_err(failed)?;
        rows.into_iter().map(RobotRow::into_robot).collect()
    }

    async fn revoke_robot(&self, namespace: &AccountName, name: &AccountName) -> Result<()> {
        // The first revocation's time stays.
        let done = sqlx::query(
            "UPDATE robots SET revoked_at = coalesce(revoked_at, ?3)
             WHERE namespace = ?1 AND name = ?2",
        )
        .bind(namespace.as_str())
        .bind(name.as_str())
        .bind(now())
        .execute(&self.write)
        .await
        .map_err(failed)?;
        found(
            done.rows_affected(),
            Entity::Robot,
            robot_key(namespace, name),
        )
    }

    async fn delete_robot(&self, namespace: &AccountName, name: &AccountName) -> Result<()> {
        let sql = "DELETE FROM robots WHERE namespace = ?1 AND name = ?2";
        let keys = [namespace.as_str(), name.as_str()];
        let key = robot_key(namespace, name);
        self.change_one(sql, &keys, Entity::Robot, key).await
    }

    async fn create_session(&self, session: &NewSession) -> Result<Session> {
        let at = now();
        let mut tx = self.begin().await?;
        require(
            &mut tx,
            USER_EXISTS,
            &[session.user.as_str()],
            AccountError::not_found(Entity::User, &session.user),
        )
        .await?;
        let done = sqlx::query(
            "INSERT INTO sessions (id, user_name, secret_hash, service, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&session.id)
        .bind(session.user.as_str())
        .bind(&session.secret_hash)
        .bind(&session.service)
        .bind(at)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        if done.rows_affected() == 0 {
            return Err(AccountError::already_exists(Entity::Session, &session.id));
        }
        tx.commit().await.map_err(failed)?;
        Ok(Session {
            id: session.id.clone(),
            user: session.user.clone(),
            secret_hash: session.secret_hash.clone(),
            service: session.service.clone(),
            created_at: at,
            expires_at: session.expires_at,
            revoked_at: None,
        })
    }

    async fn session(&self, id: &str) -> Result<Option<Session>> {
        let row: Option<SessionRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await
        .map_err(failed)?;
        row.map(SessionRow::into_session).transpose()
    }

    async fn revoke_session(&self, id: &str) -> Result<bool> {
        let done =
            sqlx::query("UPDATE sessions SET revoked_at = coalesce(revoked_at, ?2) WHERE id = ?1")
                .bind(id)
                .bind(now())
                .execute(&self.write)
                .await
                .map_err(failed)?;
        Ok(done.rows_affected() > 0)
    }

    async fn revoke_sessions_of(&self, user: &AccountName) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = ?2 WHERE user_name = ?1 AND revoked_at IS NULL",
        )
        .bind(user.as_str())
        .bind(now())
        .execute(&self.write)
        .await
        .map_err(failed)?;
        Ok(done.rows_affected())
    }

    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>> {
        let rows: Vec<SigningKeyRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys ORDER BY created_at, kid"
        )))
        .fetch_all(&self.read)
        .await
        .map_err(failed)?;
        Ok(rows.into_iter().map(StoredSigningKey::from).collect())
    }

    async fn add_signing_key(
        &self,
        key: &StoredSigningKey,
        only_if_none_active: bool,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let active_sql = "SELECT 1 FROM signing_keys WHERE retired_at IS NULL";
        if only_if_none_active && exists(&mut tx, active_sql, &[]).await? {
            return Ok(false);
        }
        let done = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO signing_keys ({SIGNING_KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (kid) DO NOTHING"
        )))
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_pem)
        .bind(key.created_at)
        .bind(key.retired_at)
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        if done.rows_affected() == 0 {
            return Err(AccountError::already_exists(Entity::SigningKey, &key.kid));
        }
        tx.commit().await.map_err(failed)?;
        Ok(true)
    }

    async fn retire_signing_keys_except(&self, keep: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        let keep_sql = "SELECT 1 FROM signing_keys WHERE kid = ?1 AND retired_at IS NULL";
        require(
            &mut tx,
            keep_sql,
            &[keep],
            AccountError::not_found(Entity::SigningKey, keep),
        )
        .await?;
        sqlx::query(
            "UPDATE signing_keys SET retired_at = ?2 WHERE retired_at IS NULL AND kid <> ?1",
        )
        .bind(keep)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)
    }

    async fn delete_signing_keys_retired_before(&self, before: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM signing_keys WHERE retired_at < ?1")
            .bind(before)
            .execute(&self.write)
            .await
            .map_err(failed)?;
        Ok(done.rows_affected())
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, client, action, target, outcome, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(now())
        .bind(event.actor.as_deref())
        .bind(event.client.as_deref())
        .bind(&event.action)
        .bind(&event.target)
        .bind(event.outcome.as_str())
        .bind(event.detail.as_deref())
        .execute(&self.write)
        .await
        .map_err(failed)?;
        Ok(())
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = audit_query(AUDIT_SELECT, query, bind_time)
            .build_query_as()
            .fetch_all(&self.read)
            .await
            .map_err(failed)?;
        rows.into_iter().map(AuditRow::into_record).collect()
    }

    async fn now(&self) -> Result<Timestamp> {
        Ok(now())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    async fn memory_store() -> Option<(Arc<dyn AccountStore>, ())> {
        let store = SqliteStore::in_memory().await.expect("in-memory store");
        Some((Arc::new(store), ()))
    }

    /// On a file the reads go to their own read-only pool: a write sent there fails.
    async fn disk_store() -> Option<(Arc<dyn AccountStore>, tempfile::TempDir)> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("aerugo.db"), 4)
            .await
            .expect("file store");
        Some((Arc::new(store), dir))
    }

    mod in_memory {
        crate::accounts::conformance::account_conformance!(super::memory_store);
    }

    mod on_disk {
        crate::accounts::conformance::account_conformance!(super::disk_store);
    }
}
