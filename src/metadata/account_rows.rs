//! What both SQL stores' `AccountStore` implementations share: the account tables' rows as
//! they are read back, the stored forms of the model's values (enumerations as text, robot
//! scopes as JSON), and the rules' refusals, so both stores answer alike.

use std::collections::BTreeMap;
use std::str::FromStr;

use sqlx::{Database, Encode, QueryBuilder, Type};

use super::MetadataError;
use crate::accounts::{
    AccountError, AccountName, AuditEvent, AuditQuery, AuditRecord, Entity, Grant, Grantee, Member,
    Membership, Namespace, Organization, Permission, RepositorySettings, Robot, RobotScope,
    Session, StoredRobot, StoredSigningKey, StoredUser, Team, TeamRef, Timestamp, UnknownValue,
    User,
};

type Result<T, E = AccountError> = std::result::Result<T, E>;

impl From<MetadataError> for AccountError {
    fn from(e: MetadataError) -> AccountError {
        match e {
            MetadataError::Unavailable(source) => AccountError::Unavailable(source),
            MetadataError::Conflict(source) => AccountError::Conflict(source),
            MetadataError::Backend(source) => AccountError::Backend(source),
            other => AccountError::Backend(Box::new(other)),
        }
    }
}

/// A value the database cannot hold, or a stored one this build cannot read: the call fails
/// (and the row stays).
fn invalid<E: std::error::Error + Send + Sync + 'static>(e: E) -> AccountError {
    AccountError::Backend(Box::new(e))
}

fn parse<T>(s: &str) -> Result<T>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    s.parse().map_err(invalid)
}

pub(super) fn scopes_json(scopes: &[RobotScope]) -> Result<String> {
    serde_json::to_string(scopes).map_err(invalid)
}

pub(super) fn quota_to_db(quota_bytes: Option<u64>) -> Result<Option<i64>> {
    quota_bytes
        .map(|q| i64::try_from(q).map_err(invalid))
        .transpose()
}

/// A repository's grants as rows to store: one per grantee, users and teams apart, each in
/// name order. A grantee listed twice keeps the higher level (it includes the lower).
pub(super) struct GrantRows<'a> {
    pub(super) users: Vec<(&'a str, &'static str)>,
    pub(super) teams: Vec<(&'a str, &'static str)>,
}

impl<'a> GrantRows<'a> {
    pub(super) fn of(grants: &'a [Grant]) -> GrantRows<'a> {
        let mut users = BTreeMap::new();
        let mut teams = BTreeMap::new();
        for grant in grants {
            let (rows, name) = match &grant.grantee {
                Grantee::User { name } => (&mut users, name.as_str()),
                Grantee::Team { team } => (&mut teams, team.as_str()),
            };
            let level: &mut Permission = rows.entry(name).or_insert(grant.permission);
            *level = (*level).max(grant.permission);
        }
        let as_text = |rows: BTreeMap<&'a str, Permission>| {
            rows.into_iter()
                .map(|(name, p)| (name, p.as_str()))
                .collect()
        };
        GrantRows {
            users: as_text(users),
            teams: as_text(teams),
        }
    }
}

// ---- refusals and the names NotFound reports ----

pub(super) fn member_key(org: &AccountName, user: &AccountName) -> String {
    format!("{org}/{user}")
}

pub(super) fn team_key(org: &str, team: &str) -> String {
    format!("{org}/{team}")
}

pub(super) fn team_member_key(org: &AccountName, team: &AccountName, user: &AccountName) -> String {
    format!("{org}/{team}/{user}")
}

pub(super) fn robot_key(namespace: &AccountName, name: &AccountName) -> String {
    format!("{namespace}+{name}")
}

pub(super) fn last_owner(org: &str) -> AccountError {
    AccountError::Refused(format!("organization {org:?} must keep an owner"))
}

pub(super) fn not_a_member(org: &AccountName, user: &AccountName) -> AccountError {
    AccountError::Refused(format!(
        "user {user:?} is not a member of organization {org:?}"
    ))
}

/// `NotFound` unless a statement changed a row.
pub(super) fn found(
    rows_affected: u64,
    entity: Entity,
    name: impl std::fmt::Display,
) -> Result<()> {
    if rows_affected == 0 {
        Err(AccountError::not_found(entity, name))
    } else {
        Ok(())
    }
}

// ---- rows ----

#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    name: String,
    password_hash: Option<String>,
    admin: bool,
    disabled: bool,
    created_at: i64,
}

impl UserRow {
    pub(super) fn into_stored(self) -> Result<StoredUser> {
        Ok(StoredUser {
            user: User {
                name: parse(&self.name)?,
                admin: self.admin,
                disabled: self.disabled,
                created_at: self.created_at,
            },
            password_hash: self.password_hash,
        })
    }

    pub(super) fn into_user(self) -> Result<User> {
        Ok(self.into_stored()?.user)
    }
}

pub(super) fn read_org((name, created_at): (String, i64)) -> Result<Organization> {
    Ok(Organization {
        name: parse(&name)?,
        created_at,
    })
}

pub(super) fn read_member((user, role): (String, String)) -> Result<Member> {
    Ok(Member {
        user: parse(&user)?,
        role: parse(&role)?,
    })
}

pub(super) fn read_membership((org, role): (String, String)) -> Result<Membership> {
    Ok(Membership {
        org: parse(&org)?,
        role: parse(&role)?,
    })
}

pub(super) fn read_team((org, name, description): (String, String, String)) -> Result<Team> {
    Ok(Team {
        org: parse(&org)?,
        name: parse(&name)?,
        description,
    })
}

pub(super) fn read_team_ref((org, team): (String, String)) -> Result<TeamRef> {
    Ok(TeamRef {
        org: parse(&org)?,
        team: parse(&team)?,
    })
}

pub(super) fn read_name(name: String) -> Result<AccountName> {
    parse(&name)
}

pub(super) fn read_namespace(
    (name, kind, quota_bytes): (String, String, Option<i64>),
) -> Result<Namespace> {
    Ok(Namespace {
        name: parse(&name)?,
        kind: parse(&kind)?,
        quota_bytes: quota_bytes
            .map(|q| u64::try_from(q).map_err(invalid))
            .transpose()?,
    })
}

/// One row of the settings query: the visibility, and one grant or none (an outer join).
pub(super) type SettingsRow = (String, Option<String>, Option<String>, Option<String>);

/// A repository's settings from the settings query's rows; none: the defaults.
pub(super) fn read_settings(rows: Vec<SettingsRow>) -> Result<RepositorySettings> {
    let Some((visibility, ..)) = rows.first() else {
        return Ok(RepositorySettings::default());
    };
    let visibility = parse(visibility)?;
    let mut grants = rows
        .into_iter()
        .filter_map(|(_, kind, name, permission)| Some((kind?, name?, permission?)))
        .map(|(kind, name, permission)| {
            let name = parse(&name)?;
            let grantee = match kind.as_str() {
                "user" => Grantee::User { name },
                "team" => Grantee::Team { team: name },
                _ => return Err(invalid(UnknownValue(kind))),
            };
            Ok(Grant {
                grantee,
                permission: parse(&permission)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    grants.sort_by(|a, b| a.grantee.cmp(&b.grantee));
    Ok(RepositorySettings { visibility, grants })
}

#[derive(sqlx::FromRow)]
pub(super) struct RobotRow {
    namespace: String,
    name: String,
    secret_hash: String,
    /// A JSON array, as stored.
    scopes: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl RobotRow {
    pub(super) fn into_stored(self) -> Result<StoredRobot> {
        Ok(StoredRobot {
            robot: Robot {
                namespace: parse(&self.namespace)?,
                name: parse(&self.name)?,
                scopes: serde_json::from_str(&self.scopes).map_err(invalid)?,
                created_at: self.created_at,
                expires_at: self.expires_at,
                revoked_at: self.revoked_at,
            },
            secret_hash: self.secret_hash,
        })
    }

    pub(super) fn into_robot(self) -> Result<Robot> {
        Ok(self.into_stored()?.robot)
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SessionRow {
    id: String,
    user_name: String,
    secret_hash: String,
    service: String,
    created_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
}

impl SessionRow {
    pub(super) fn into_session(self) -> Result<Session> {
        Ok(Session {
            id: self.id,
            user: parse(&self.user_name)?,
            secret_hash: self.secret_hash,
            service: self.service,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SigningKeyRow {
    kid: String,
    algorithm: String,
    private_pem: String,
    created_at: i64,
    retired_at: Option<i64>,
}

impl From<SigningKeyRow> for StoredSigningKey {
    fn from(row: SigningKeyRow) -> StoredSigningKey {
        StoredSigningKey {
            kid: row.kid,
            algorithm: row.algorithm,
            private_pem: row.private_pem,
            created_at: row.created_at,
            retired_at: row.retired_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AuditRow {
    id: i64,
    at: i64,
    actor: Option<String>,
    client: Option<String>,
    action: String,
    target: String,
    outcome: String,
    detail: Option<String>,
}

impl AuditRow {
    pub(super) fn into_record(self) -> Result<AuditRecord> {
        Ok(AuditRecord {
            id: self.id,
            at: self.at,
            event: AuditEvent {
                actor: self.actor,
                client: self.client,
                action: self.action,
                target: self.target,
                outcome: parse(&self.outcome)?,
                detail: self.detail,
            },
        })
    }
}

// ---- the audit query ----

/// The audit query with only the filters that are set, so each can use its index: `select`
/// (the columns and table) with the conditions and the page, newest first. `at` binds a
/// [`Timestamp`](crate::accounts::Timestamp) compared with the `at` column, in the store's
/// representation of time.
pub(super) fn audit_query<DB>(
    select: &str,
    query: &AuditQuery,
    at: fn(&mut QueryBuilder<DB>, Timestamp),
) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    String: for<'t> Encode<'t, DB> + Type<DB>,
    i64: for<'t> Encode<'t, DB> + Type<DB>,
{
    let mut sql = QueryBuilder::new(select);
    sql.push(" WHERE true");
    let equal = [
        ("actor", query.actor.clone()),
        ("action", query.action.clone()),
        ("outcome", query.outcome.map(|o| o.as_str().to_owned())),
    ];
    for (column, value) in equal {
        if let Some(value) = value {
            sql.push(format_args!(" AND {column} = ")).push_bind(value);
        }
    }
    if let Some(prefix) = &query.target_prefix {
        // The lower bound lets the index on target start at the prefix.
        sql.push(" AND target >= ").push_bind(prefix.clone());
        sql.push(" AND substr(target, 1, length(")
            .push_bind(prefix.clone())
            .push(")) = ")
            .push_bind(prefix.clone());
    }
    if let Some(since) = query.since {
        sql.push(" AND at >= ");
        at(&mut sql, since);
    }
    if let Some(until) = query.until {
        // Up to the end of that second: a store may keep finer times than it reports.
        sql.push(" AND at < ");
        at(&mut sql, until.saturating_add(1));
    }
    if let Some(before) = query.before {
        sql.push(" AND id < ").push_bind(before);
    }
    sql.push(" ORDER BY id DESC LIMIT ")
        .push_bind(super::rows::limit(query.limit));
    sql
}
