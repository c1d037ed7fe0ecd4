//! The `AccountStore` seam: who may use the registry and what they may do — users,
//! organisations with members and teams, robot accounts for CI, per-repository visibility and
//! grants, namespace quotas, refresh-token sessions, the token-signing keys and the audit log.
//!
//! A sibling of `metadata::MetadataStore`, not part of it: the registry's content rules never
//! need accounts, and accounts never need manifests. Both seams are implemented by the same
//! SQL stores (one database, one migration history per backend: `migrations/sqlite`,
//! `migrations/postgres`), so `metadata` implements this trait and `accounts` depends only on
//! `oci`. Every method is one transaction. Secrets arrive here already hashed: the store never
//! sees a password or a token.
//!
//! Rules that need several records at once and must hold across nodes (an organisation keeps
//! an owner, a team member is a member of the team's organisation, a name is either a user or an
//! organisation) are enforced inside the store's transactions. Rules about *who may ask* are
//! the `auth` module's.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use async_trait::async_trait;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::oci::RepoName;
use crate::oci::scope::{Action, Actions};

#[cfg(test)]
pub(crate) mod conformance;

/// Seconds since the Unix epoch, on the store's clock (as `metadata::Timestamp`).
pub type Timestamp = i64;

/// Longest user, organisation, team or robot name.
pub const MAX_ACCOUNT_NAME_LEN: usize = 64;

/// One repository path component, in a subset of the distribution grammar: a namespace name
/// is always a valid first component of a repository name, and `+` (robots) never is.
static ACCOUNT_NAME_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$").expect("static regex"));

/// A user, organisation, team or robot name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a name must match [a-z0-9]+([._-][a-z0-9]+)* and be at most {MAX_ACCOUNT_NAME_LEN} characters"
)]
pub struct InvalidAccountName;

impl AccountName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AccountName {
    type Err = InvalidAccountName;

    fn from_str(s: &str) -> Result<Self, InvalidAccountName> {
        if s.len() <= MAX_ACCOUNT_NAME_LEN && ACCOUNT_NAME_RE.is_match(s) {
            Ok(AccountName(s.to_owned()))
        } else {
            Err(InvalidAccountName)
        }
    }
}

impl TryFrom<String> for AccountName {
    type Error = InvalidAccountName;

    fn try_from(s: String) -> Result<Self, InvalidAccountName> {
        s.parse()
    }
}

impl From<AccountName> for String {
    fn from(name: AccountName) -> String {
        name.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// ---- users ----------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub name: AccountName,
    pub admin: bool,
    /// A disabled user cannot sign in, and its tokens and sessions stop working.
    pub disabled: bool,
    pub created_at: Timestamp,
}

/// A user with what signing in is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    pub user: User,
    /// A PHC string (argon2id); `None` for a user who cannot sign in with a password.
    pub password_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub name: AccountName,
    pub password_hash: Option<String>,
    pub admin: bool,
}

/// The fields of a user that change; `None` leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChange {
    pub password_hash: Option<String>,
    pub admin: Option<bool>,
    pub disabled: Option<bool>,
}

// ---- organisations and teams ----------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Organization {
    pub name: AccountName,
    pub created_at: Timestamp,
}

/// A member's role in an organisation. Owners and admins manage the organisation and may do
/// anything to its repositories; members get what teams and grants give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrgRole {
    Member,
    Admin,
    Owner,
}

impl OrgRole {
    pub fn as_str(self) -> &'static str {
        match self {
            OrgRole::Member => "member",
            OrgRole::Admin => "admin",
            OrgRole::Owner => "owner",
        }
    }
}

impl FromStr for OrgRole {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        match s {
            "member" => Ok(OrgRole::Member),
            "admin" => Ok(OrgRole::Admin),
            "owner" => Ok(OrgRole::Owner),
            _ => Err(UnknownValue(s.to_owned())),
        }
    }
}

/// A stored enumeration value this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {0:?}")]
pub struct UnknownValue(pub String);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub user: AccountName,
    pub role: OrgRole,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub org: AccountName,
    pub role: OrgRole,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TeamRef {
    pub org: AccountName,
    pub team: AccountName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Team {
    pub org: AccountName,
    pub name: AccountName,
    pub description: String,
}

// ---- namespaces -----------------------------------------------------------------------------

/// A repository's first path component names its namespace: a user or an organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceKind {
    User,
    Organization,
}

impl NamespaceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NamespaceKind::User => "user",
            NamespaceKind::Organization => "organization",
        }
    }
}

impl FromStr for NamespaceKind {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        match s {
            "user" => Ok(NamespaceKind::User),
            "organization" => Ok(NamespaceKind::Organization),
            _ => Err(UnknownValue(s.to_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Namespace {
    pub name: AccountName,
    pub kind: NamespaceKind,
    /// Largest number of blob bytes the namespace's repositories may hold; `None`: no limit.
    pub quota_bytes: Option<u64>,
}

// ---- repositories ---------------------------------------------------------------------------

/// Who may pull a repository without a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Anyone, signed in or not, may pull.
    Public,
    /// Only the namespace's owner, organisation owners and admins, and granted users and teams.
    #[default]
    Private,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }
}

impl FromStr for Visibility {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        match s {
            "public" => Ok(Visibility::Public),
            "private" => Ok(Visibility::Private),
            _ => Err(UnknownValue(s.to_owned())),
        }
    }
}

/// A level of access granted on one repository. Each level includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// pull
    Read,
    /// pull, push
    Write,
    /// pull, push, delete, and managing the repository's settings
    Admin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
        }
    }

    /// The registry actions this level allows.
    pub fn actions(self) -> Actions {
        match self {
            Permission::Read => Actions::from([Action::Pull]),
            Permission::Write => Actions::from([Action::Pull, Action::Push]),
            Permission::Admin => Actions::from(Action::ALL),
        }
    }
}

impl FromStr for Permission {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        match s {
            "read" => Ok(Permission::Read),
            "write" => Ok(Permission::Write),
            "admin" => Ok(Permission::Admin),
            _ => Err(UnknownValue(s.to_owned())),
        }
    }
}

/// Who a repository grant is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Grantee {
    User {
        name: AccountName,
    },
    /// A team of the repository's organisation.
    Team {
        team: AccountName,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    #[serde(flatten)]
    pub grantee: Grantee,
    pub permission: Permission,
}

/// A repository's access settings; a repository nobody configured has the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RepositorySettings {
    pub visibility: Visibility,
    pub grants: Vec<Grant>,
}

// ---- robots ---------------------------------------------------------------------------------

/// What a robot may touch: one repository, or every repository under a prefix (`acme/*`,
/// any depth), always inside the robot's own namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RobotScope {
    /// A repository name, or a name prefix followed by `/*`.
    pub repository: String,
    pub actions: Actions,
}

impl RobotScope {
    /// Whether the scope covers `repo`.
    pub fn covers(&self, repo: &RepoName) -> bool {
        match self.repository.strip_suffix("/*") {
            Some(prefix) => repo
                .as_str()
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/')),
            None => self.repository == repo.as_str(),
        }
    }
}

/// A robot account: a non-human identity of a namespace with a secret (its token) and fixed
/// scopes. It signs in as `<namespace>+<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Robot {
    pub namespace: AccountName,
    pub name: AccountName,
    pub scopes: Vec<RobotScope>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

impl Robot {
    /// The user name the robot signs in with.
    pub fn login(&self) -> String {
        format!("{}+{}", self.namespace, self.name)
    }

    /// Whether the robot may be used at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRobot {
    pub robot: Robot,
    /// SHA-256 of the secret, hex: the secret is random and long, so a slow hash adds nothing.
    pub secret_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRobot {
    pub namespace: AccountName,
    pub name: AccountName,
    pub secret_hash: String,
    pub scopes: Vec<RobotScope>,
    pub expires_at: Option<Timestamp>,
}

// ---- refresh-token sessions -----------------------------------------------------------------

/// What a refresh token stands for: a user signed in to one service until it expires or is
/// revoked (logout, password change, disabling the user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The public half of the refresh token, by which it is looked up.
    pub id: String,
    pub user: AccountName,
    /// SHA-256 of the secret half, hex.
    pub secret_hash: String,
    pub service: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub id: String,
    pub user: AccountName,
    pub secret_hash: String,
    pub service: String,
    pub expires_at: Timestamp,
}

// ---- signing keys ---------------------------------------------------------------------------

/// A token-signing key kept in the database, so that every node of a cluster signs with the
/// same key and verifies every key still in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSigningKey {
    /// The JWK `kid`.
    pub kid: String,
    /// The JWS algorithm (`EdDSA`, `ES256`).
    pub algorithm: String,
    /// The private key, PKCS#8 PEM.
    pub private_pem: String,
    pub created_at: Timestamp,
    /// Set when a newer key took over signing; the key still verifies until the tokens it
    /// signed have expired.
    pub retired_at: Option<Timestamp>,
}

// ---- audit ----------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allowed,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
        }
    }
}

impl FromStr for Outcome {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        match s {
            "allowed" => Ok(Outcome::Allowed),
            "denied" => Ok(Outcome::Denied),
            _ => Err(UnknownValue(s.to_owned())),
        }
    }
}

/// One line of the audit log: a write, or a refused request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// The account that acted (`user`, `ns+robot`), `None` for anonymous requests.
    pub actor: Option<String>,
    /// The client's address.
    pub client: Option<String>,
    /// What was done, as a dotted verb (`manifest.put`, `org.create`, `login`).
    pub action: String,
    /// What it was done to (`acme/app:1`, `acme`).
    pub target: String,
    pub outcome: Outcome,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Increasing: the log's order and its page cursor.
    pub id: i64,
    pub at: Timestamp,
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// Which audit records to return: newest first, every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Records whose target starts with this.
    pub target_prefix: Option<String>,
    pub outcome: Option<Outcome>,
    /// Records at or after this time.
    pub since: Option<Timestamp>,
    /// Records at or before this time.
    pub until: Option<Timestamp>,
    /// Only records with a smaller id (the cursor of the previous page).
    pub before: Option<i64>,
    pub limit: usize,
}

// ---- the seam -------------------------------------------------------------------------------

/// What an account operation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    User,
    Organization,
    Namespace,
    Member,
    Team,
    TeamMember,
    Robot,
    Session,
    SigningKey,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::User => "user",
            Entity::Organization => "organization",
            Entity::Namespace => "namespace",
            Entity::Member => "member",
            Entity::Team => "team",
            Entity::TeamMember => "team member",
            Entity::Robot => "robot",
            Entity::Session => "session",
            Entity::SigningKey => "signing key",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{entity} {name:?} not found")]
    NotFound { entity: Entity, name: String },
    /// The name is taken (for users and organisations: by either, since both are namespaces).
    #[error("{entity} {name:?} already exists")]
    AlreadyExists { entity: Entity, name: String },
    /// The change would break a rule the store keeps (the last owner of an organisation, a
    /// team member outside the organisation).
    #[error("{0}")]
    Refused(String),
    #[error("account store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("account transaction conflict: {0}")]
    Conflict(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("account store backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AccountError {
    pub fn not_found(entity: Entity, name: impl fmt::Display) -> Self {
        AccountError::NotFound {
            entity,
            name: name.to_string(),
        }
    }

    pub fn already_exists(entity: Entity, name: impl fmt::Display) -> Self {
        AccountError::AlreadyExists {
            entity,
            name: name.to_string(),
        }
    }
}

pub type Result<T, E = AccountError> = std::result::Result<T, E>;

/// A method that changes or deletes a named record fails with `NotFound` when the record (or
/// what it belongs to) is absent; a listing under an unknown parent is empty.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Whether any user exists: a registry without one is open to everyone.
    async fn has_users(&self) -> Result<bool>;

    /// The account epoch: a random value replaced, inside the changing transaction, by every
    /// change to namespaces, users, memberships, teams, repository settings, grants or robots.
    /// Decisions cached under one epoch are valid until it changes, whoever made the change.
    async fn epoch(&self) -> Result<String>;

    // ---- users ----

    /// `AlreadyExists` when the name is a user's or an organisation's.
    async fn create_user(&self, user: &NewUser) -> Result<User>;

    async fn user(&self, name: &AccountName) -> Result<Option<StoredUser>>;

    /// Up to `limit` users in name order after `after`.
    async fn list_users(&self, after: Option<&AccountName>, limit: usize) -> Result<Vec<User>>;

    /// `NotFound` when there is no such user.
    async fn update_user(&self, name: &AccountName, change: &UserChange) -> Result<User>;

    /// Deletes the user with its memberships, team memberships, grants and sessions.
    /// `Refused` when it is the last owner of an organisation; `NotFound` when absent.
    async fn delete_user(&self, name: &AccountName) -> Result<()>;

    // ---- organisations ----

    /// Creates the organisation with `owner` as its first owner. `AlreadyExists` when the
    /// name is taken by a user or an organisation; `NotFound` when `owner` is not a user.
    async fn create_org(&self, name: &AccountName, owner: &AccountName) -> Result<Organization>;

    async fn org(&self, name: &AccountName) -> Result<Option<Organization>>;

    async fn list_orgs(
        &self,
        after: Option<&AccountName>,
        limit: usize,
    ) -> Result<Vec<Organization>>;

    /// Deletes the organisation with its members, teams, robots and grants to its teams.
    async fn delete_org(&self, name: &AccountName) -> Result<()>;

    /// Adds a member or changes its role. `Refused` when that leaves the organisation
    /// without an owner; `NotFound` for an unknown organisation or user.
    async fn set_member(&self, org: &AccountName, user: &AccountName, role: OrgRole) -> Result<()>;

    /// Removes a member from the organisation and its teams. `Refused` for the last owner;
    /// `NotFound` when the user is not a member.
    async fn remove_member(&self, org: &AccountName, user: &AccountName) -> Result<()>;

    /// Up to `limit` members in name order after `after`.
    async fn members(
        &self,
        org: &AccountName,
        after: Option<&AccountName>,
        limit: usize,
    ) -> Result<Vec<Member>>;

    /// Every organisation the user belongs to.
    async fn memberships(&self, user: &AccountName) -> Result<Vec<Membership>>;

    // ---- teams ----

    async fn create_team(
        &self,
        org: &AccountName,
        team: &AccountName,
        description: &str,
    ) -> Result<Team>;

    async fn teams(&self, org: &AccountName) -> Result<Vec<Team>>;

    /// Deletes the team, its memberships and the grants made to it.
    async fn delete_team(&self, org: &AccountName, team: &AccountName) -> Result<()>;

    /// `Refused` when the user is not a member of the team's organisation.
    async fn add_team_member(
        &self,
        org: &AccountName,
        team: &AccountName,
        user: &AccountName,
    ) -> Result<()>;

    async fn remove_team_member(
        &self,
        org: &AccountName,
        team: &AccountName,
        user: &AccountName,
    ) -> Result<()>;

    async fn team_members(&self, org: &AccountName, team: &AccountName)
    -> Result<Vec<AccountName>>;

    /// Every team the user is in.
    async fn teams_of(&self, user: &AccountName) -> Result<Vec<TeamRef>>;

    // ---- namespaces ----

    /// The user or organisation of that name.
    async fn namespace(&self, name: &AccountName) -> Result<Option<Namespace>>;

    /// Sets or lifts (`None`) the namespace's quota. `NotFound` for an unknown namespace.
    async fn set_quota(&self, name: &AccountName, quota_bytes: Option<u64>) -> Result<()>;

    // ---- repositories ----

    /// The repository's settings; the defaults when nobody set them.
    async fn repository_settings(&self, repo: &RepoName) -> Result<RepositorySettings>;

    async fn set_visibility(&self, repo: &RepoName, visibility: Visibility) -> Result<()>;

    /// Replaces every grant of the repository. `NotFound` for an unknown user or a team the
    /// repository's organisation does not have.
    async fn set_grants(&self, repo: &RepoName, grants: &[Grant]) -> Result<()>;

    /// Forgets the repository's settings (the repository was deleted).
    async fn delete_repository_settings(&self, repo: &RepoName) -> Result<()>;

    // ---- robots ----

    /// `AlreadyExists` when the namespace has a robot of that name; `NotFound` for an
    /// unknown namespace.
    async fn create_robot(&self, robot: &NewRobot) -> Result<Robot>;

    async fn robot(
        &self,
        namespace: &AccountName,
        name: &AccountName,
    ) -> Result<Option<StoredRobot>>;

    async fn robots(&self, namespace: &AccountName) -> Result<Vec<Robot>>;

    /// Marks the robot revoked (it stays listed, unusable).
    async fn revoke_robot(&self, namespace: &AccountName, name: &AccountName) -> Result<()>;

    async fn delete_robot(&self, namespace: &AccountName, name: &AccountName) -> Result<()>;

    // ---- refresh-token sessions ----

    async fn create_session(&self, session: &NewSession) -> Result<Session>;

    async fn session(&self, id: &str) -> Result<Option<Session>>;

    /// `false` when there was no such session.
    async fn revoke_session(&self, id: &str) -> Result<bool>;

    /// Revokes every session of the user; returns how many.
    async fn revoke_sessions_of(&self, user: &AccountName) -> Result<u64>;

    // ---- signing keys ----

    /// Every key not yet deleted, oldest first.
    async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>>;

    /// Stores a key. With `only_if_none_active`, only when no key is active (not retired):
    /// the nodes of a cluster starting together generate one key between them. Returns
    /// whether it was stored.
    async fn add_signing_key(
        &self,
        key: &StoredSigningKey,
        only_if_none_active: bool,
    ) -> Result<bool>;

    /// Marks every active key but `keep` retired at the store's clock. `NotFound` when `keep`
    /// is not an active key (retiring the others would leave none to sign with).
    async fn retire_signing_keys_except(&self, keep: &str) -> Result<()>;

    /// Deletes keys retired before `before`.
    async fn delete_signing_keys_retired_before(&self, before: Timestamp) -> Result<u64>;

    // ---- audit ----

    async fn append_audit(&self, event: &AuditEvent) -> Result<()>;

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>>;

    /// The store's clock (robots' and sessions' expiry are judged by it).
    async fn now(&self) -> Result<Timestamp>;
}
