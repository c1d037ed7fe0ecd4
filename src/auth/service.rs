//! `Auth`: the one object the HTTP layer asks who a caller is and what it may do. It checks
//! credentials (passwords, robot secrets, access and refresh tokens), evaluates the policy
//! over the account store, issues tokens, and throttles guessing.
//!
//! Decisions are cached through the `Cache` seam under the account store's *epoch*: a random
//! value the store replaces in every transaction that changes who may do what (a trigger on
//! the account tables), so a change made anywhere — another node, `aerugo admin`, a direct SQL
//! fix — ends every node's cached decisions within [`EPOCH_REFRESH`], without anyone
//! enumerating keys. With Redis the cached decisions are the cluster's; a cache that fails only
//! costs the store more reads. Each node also keeps the decisions it used, typed, in memory
//! under the same keys: a hit there costs neither decoding nor a round trip to Redis, and ends
//! with the epoch like the shared entry. In front of all of that, a node remembers whole
//! admissions of repeated requests under the same epoch (`admission`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use jsonwebtoken::jwk::JwkSet;

use super::access::Requirement;
use super::admission::{Admission, AdmissionKey, Admissions};
use super::keys::{KeyError, KeyRing, SigningKey};
use super::password;
use super::policy::{self, Facts, Principal};
use super::secret::{self, SplitToken};
use super::token::{self, Claims, TokenError, TokenParties, VerifiedTokens};
use crate::accounts::{
    AccountError, AccountName, AccountStore, AuditEvent, NewSession, StoredRobot, Timestamp,
};
use crate::cache::Cache;
use crate::oci::RepoName;
use crate::oci::scope::{AccessEntry, Action, Actions, ResourceScope};

/// How long a node trusts its copy of the epoch: the bound on how late another node's
/// change (a revoked robot, a removed grant) takes effect here.
pub const EPOCH_REFRESH: Duration = Duration::from_secs(1);

/// How long a decision stays cached when nothing changes.
const DECISION_TTL: Duration = Duration::from_secs(300);

/// How often a registry with no users checks again whether one was created.
const OPEN_RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub parties: TokenParties,
    /// Lifetime of access tokens (at least 60 s, as the token spec asks).
    pub token_lifetime_seconds: i64,
    /// Lifetime of refresh tokens (`docker login`'s identity token).
    pub refresh_lifetime_seconds: i64,
    /// Failed sign-ins to one account within `lockout_window` before it is locked for the
    /// rest of the window.
    pub max_failed_logins: u64,
    pub lockout_window: Duration,
    /// Sign-in attempts (successful or not) one client address may make per minute.
    pub logins_per_client_per_minute: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong user, wrong password, disabled user, revoked or expired robot: one error for
    /// all, so that the answer never tells which.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("invalid or expired token")]
    InvalidToken,
    #[error("too many sign-in attempts; retry in {} s", retry_after.as_secs())]
    TooManyAttempts { retry_after: Duration },
    #[error(transparent)]
    Store(#[from] AccountError),
    #[error("token signing: {0}")]
    Key(#[from] KeyError),
    #[error("token signing: {0}")]
    Signing(TokenError),
    #[error("password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What a request presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

/// A caller whose credentials were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub principal: Principal,
    /// For a bearer token: what it grants. The caller gets the intersection of this and what
    /// the policy allows now (so revocations apply to tokens already issued).
    pub token_access: Option<Vec<AccessEntry>>,
    /// For a bearer token: when it expires (Unix seconds).
    pub token_expires_at: Option<i64>,
}

/// Whether an identity may take a set of actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Granted,
    /// The policy allows it but the token presented does not carry it: the client should
    /// ask the token service again (a `401` with the scope in the challenge).
    NeedsToken,
    Denied,
}

/// An access token and what it grants.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub granted: Vec<ResourceScope>,
    pub issued_at: Timestamp,
    pub expires_in: i64,
}

pub struct Auth {
    store: Arc<dyn AccountStore>,
    cache: Arc<dyn Cache>,
    keys: RwLock<Arc<KeyRing>>,
    /// Whether the ring is the store's (and follows rotations) rather than a key file's.
    keys_from_store: bool,
    /// When the ring was last reloaded for a token naming an unknown key.
    unknown_key_reload: Mutex<Option<Instant>>,
    verified: VerifiedTokens,
    admissions: Admissions,
    /// This node's copies of cached decisions, by the shared cache's keys.
    principals: moka::sync::Cache<String, Option<Principal>>,
    permissions: moka::sync::Cache<String, Actions>,
    settings: AuthSettings,
    /// Once a user exists the registry stays closed for this process's life.
    closed: AtomicBool,
    open_checked: Mutex<Option<Instant>>,
    epoch: Mutex<Option<(Arc<str>, Instant)>>,
    /// Mixed into remembered-credential keys, so what the (possibly shared) cache holds
    /// cannot be brute-forced back into passwords without this process's memory.
    pepper: String,
}

impl Auth {
    /// `keys_from_store`: the ring was loaded from the store and is reloaded from it
    /// ([`Auth::reload_keys`]); otherwise it is a key file's and never changes.
    pub fn new(
        store: Arc<dyn AccountStore>,
        cache: Arc<dyn Cache>,
        keys: KeyRing,
        keys_from_store: bool,
        settings: AuthSettings,
    ) -> Auth {
        Auth {
            store,
            cache,
            keys: RwLock::new(Arc::new(keys)),
            keys_from_store,
            unknown_key_reload: Mutex::new(None),
            verified: VerifiedTokens::default(),
            admissions: Admissions::default(),
            principals: local_decisions(),
            permissions: local_decisions(),
            settings,
            closed: AtomicBool::new(false),
            open_checked: Mutex::new(None),
            epoch: Mutex::new(None),
            pepper: secret::random_token(),
        }
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    pub fn store(&self) -> &Arc<dyn AccountStore> {
        &self.store
    }

    fn ring(&self) -> Arc<KeyRing> {
        self.keys
            .read()
            .map_or_else(|p| p.into_inner().clone(), |k| k.clone())
    }

    /// Replaces the key ring (after a rotation).
    fn set_keys(&self, ring: KeyRing) {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        *keys = Arc::new(ring);
    }

    pub fn jwks(&self) -> JwkSet {
        self.ring().jwks()
    }

    /// Whether requests must be authorized: as soon as one user exists.
    pub async fn enforced(&self) -> Result<bool, AuthError> {
        if self.closed.load(Ordering::Relaxed) {
            return Ok(true);
        }
        {
            let checked = self.open_checked.lock().unwrap_or_else(|p| p.into_inner());
            if checked.is_some_and(|at| at.elapsed() < OPEN_RECHECK) {
                return Ok(false);
            }
        }
        let closed = self.store.has_users().await?;
        if closed {
            self.closed.store(true, Ordering::Relaxed);
        }
        *self.open_checked.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(closed)
    }

    // ---- identities ----

    /// Checks `credentials`. No credentials is the anonymous identity.
    pub async fn identify(
        &self,
        credentials: &Credentials,
        client: Option<IpAddr>,
    ) -> Result<Identity, AuthError> {
        match credentials {
            Credentials::None => Ok(Identity {
                principal: Principal::Anonymous,
                token_access: None,
                token_expires_at: None,
            }),
            Credentials::Basic { user, password } => Ok(Identity {
                principal: self.sign_in(user, password, client).await?,
                token_access: None,
                token_expires_at: None,
            }),
            Credentials::Bearer(token) => {
                let claims = match self.verify_token(token) {
                    // Another node may have rotated the keys since this one loaded them.
                    Err(TokenError::UnknownKey) if self.reload_for_unknown_key().await => {
                        self.verify_token(token)
                    }
                    verified => verified,
                }
                .map_err(|e| {
                    tracing::debug!(error = %e, "bearer token refused");
                    AuthError::InvalidToken
                })?;
                let principal = self
                    .resolve(&claims.sub)
                    .await?
                    .ok_or(AuthError::InvalidToken)?;
                Ok(Identity {
                    principal,
                    token_access: Some(claims.access),
                    token_expires_at: Some(claims.exp),
                })
            }
        }
    }

    fn verify_token(&self, token: &str) -> Result<Claims, TokenError> {
        self.verified
            .verify(&*self.ring(), &self.settings.parties, token)
    }

    /// Reloads the ring for a token naming a key this node does not know, at most every
    /// [`UNKNOWN_KEY_RELOAD`] (unknown keys are also what forged tokens name). Whether the
    /// ring was reloaded.
    async fn reload_for_unknown_key(&self) -> bool {
        {
            let mut last = self
                .unknown_key_reload
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !self.keys_from_store || last.is_some_and(|at| at.elapsed() < UNKNOWN_KEY_RELOAD) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match self.reload_keys().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload the token-signing keys");
                false
            }
        }
    }

    /// Reloads the ring from the store (a rotation made on any node); a key file's ring stays.
    pub async fn reload_keys(&self) -> Result<(), AuthError> {
        if self.keys_from_store {
            let ring = KeyRing::from_stored(&self.store.signing_keys().await?)?;
            self.set_keys(ring);
        }
        Ok(())
    }

    /// Checks a user's password or a robot's secret (`<namespace>+<robot>`), throttled per
    /// client and per account. Verified credentials are remembered under the epoch, so
    /// clients sending basic credentials on every request do not pay argon2 every time.
    pub async fn sign_in(
        &self,
        user: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        let epoch = self.epoch().await;
        let remembered = epoch
            .as_ref()
            .map(|e| format!("auth:cred:{e}:{}", self.credential_digest(user, password)));
        if let Some(key) = &remembered
            && let Some(subject) = self.cache.get(key).await
            && subject.as_ref() == user.as_bytes()
            && let Some(principal) = self.resolve(user).await?
        {
            return Ok(principal);
        }
        self.throttle(user, client).await?;
        let principal = match user.split_once('+') {
            Some((namespace, robot)) => self.check_robot(namespace, robot, password).await?,
            None => self.check_password(user, password).await?,
        };
        let Some(principal) = principal else {
            self.count_failure(user).await;
            return Err(AuthError::InvalidCredentials);
        };
        self.cache.delete(&failures_key(user)).await;
        if let Some(key) = &remembered {
            self.cache
                .set(key, Bytes::from(user.to_owned()), DECISION_TTL)
                .await;
        }
        Ok(principal)
    }

    async fn check_password(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Option<Principal>, AuthError> {
        let stored = match user.parse::<AccountName>() {
            Ok(name) => self.store.user(&name).await?,
            Err(_) => None,
        };
        let hash = stored.as_ref().and_then(|s| s.password_hash.clone());
        let password = password.to_owned();
        // Always hash, even for an unknown user: the answer takes the same time.
        let verified =
            tokio::task::spawn_blocking(move || password::verify(&password, hash.as_deref()))
                .await?;
        Ok(stored
            .filter(|s| verified && !s.user.disabled)
            .map(|s| Principal::User {
                name: s.user.name,
                admin: s.user.admin,
            }))
    }

    async fn check_robot(
        &self,
        namespace: &str,
        robot: &str,
        secret_text: &str,
    ) -> Result<Option<Principal>, AuthError> {
        let (Ok(namespace), Ok(robot)) = (namespace.parse(), robot.parse()) else {
            return Ok(None);
        };
        let Some(stored) = self.store.robot(&namespace, &robot).await? else {
            return Ok(None);
        };
        if !secret::matches(secret_text, &stored.secret_hash) {
            return Ok(None);
        }
        let now = self.store.now().await?;
        Ok(active_robot(stored, now))
    }

    /// The principal a token subject names, if it may still act: the user exists and is not
    /// disabled, the robot is not revoked or expired. Cached under the epoch.
    pub async fn resolve(&self, subject: &str) -> Result<Option<Principal>, AuthError> {
        if subject.is_empty() {
            return Ok(Some(Principal::Anonymous));
        }
        let key = self
            .epoch()
            .await
            .map(|e| format!("auth:who:{e}:{subject}"));
        self.decided(&self.principals, key, self.resolve_uncached(subject))
            .await
    }

    /// A decision cached under `key` (here, then in the shared cache), or `decide`'s, which
    /// is then cached in both. No key (the epoch is unknown): decided afresh, not cached.
    async fn decided<T>(
        &self,
        local: &moka::sync::Cache<String, T>,
        key: Option<String>,
        decide: impl Future<Output = Result<T, AuthError>>,
    ) -> Result<T, AuthError>
    where
        T: Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        let Some(key) = key else {
            return decide.await;
        };
        if let Some(hit) = local.get(&key) {
            return Ok(hit);
        }
        if let Some(cached) = self.cache.get(&key).await
            && let Ok(shared) = serde_json::from_slice::<T>(&cached)
        {
            local.insert(key, shared.clone());
            return Ok(shared);
        }
        let decision = decide.await?;
        if let Ok(value) = serde_json::to_vec(&decision) {
            self.cache.set(&key, value.into(), DECISION_TTL).await;
        }
        local.insert(key, decision.clone());
        Ok(decision)
    }

    async fn resolve_uncached(&self, subject: &str) -> Result<Option<Principal>, AuthError> {
        if let Some((namespace, robot)) = subject.split_once('+') {
            let (Ok(namespace), Ok(robot)) = (namespace.parse(), robot.parse()) else {
                return Ok(None);
            };
            let Some(stored) = self.store.robot(&namespace, &robot).await? else {
                return Ok(None);
            };
            let now = self.store.now().await?;
            return Ok(active_robot(stored, now));
        }
        let Ok(name) = subject.parse::<AccountName>() else {
            return Ok(None);
        };
        Ok(self
            .store
            .user(&name)
            .await?
            .filter(|s| !s.user.disabled)
            .map(|s| Principal::User {
                name: s.user.name,
                admin: s.user.admin,
            }))
    }

    /// What remembered credentials are keyed by: never the password itself.
    fn credential_digest(&self, user: &str, password: &str) -> String {
        secret::digest(&format!("{}\0{user}\0{password}", self.pepper))
    }

    // ---- throttling ----

    async fn throttle(&self, user: &str, client: Option<IpAddr>) -> Result<(), AuthError> {
        if let Some(client) = client {
            let attempts = self
                .cache
                .increment(&format!("auth:rate:{client}"), Duration::from_secs(60))
                .await
                .unwrap_or(0);
            if attempts > self.settings.logins_per_client_per_minute {
                return Err(AuthError::TooManyAttempts {
                    retry_after: Duration::from_secs(60),
                });
            }
        }
        let failures = self.cache.get(&failures_key(user)).await;
        let failures = failures
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        if failures >= self.settings.max_failed_logins {
            return Err(AuthError::TooManyAttempts {
                retry_after: self.settings.lockout_window,
            });
        }
        Ok(())
    }

    /// Counts a failure against the account name, whether or not it exists, so that a
    /// lockout does not reveal which names do.
    async fn count_failure(&self, user: &str) {
        self.cache
            .increment(&failures_key(user), self.settings.lockout_window)
            .await;
    }

    // ---- decisions ----

    /// Every action `principal` may take on `repo` now.
    pub async fn allowed(
        &self,
        principal: &Principal,
        repo: &RepoName,
    ) -> Result<Actions, AuthError> {
        if principal.is_admin() {
            return Ok(Actions::from(Action::ALL));
        }
        let key = self
            .epoch()
            .await
            .map(|e| format!("auth:may:{e}:{}:{repo}", principal.subject()));
        let decide = async {
            let facts = self.facts(principal, repo).await?;
            Ok(policy::allowed(principal, repo, &facts))
        };
        self.decided(&self.permissions, key, decide).await
    }

    async fn facts(&self, principal: &Principal, repo: &RepoName) -> Result<Facts, AuthError> {
        let namespace = match repo.namespace().parse::<AccountName>() {
            Ok(name) => self.store.namespace(&name).await?,
            Err(_) => None,
        };
        let settings = self.store.repository_settings(repo).await?;
        let (memberships, teams) = match principal.user_name() {
            Some(user) => (
                self.store.memberships(user).await?,
                self.store.teams_of(user).await?,
            ),
            None => (Vec::new(), Vec::new()),
        };
        Ok(Facts {
            namespace,
            settings,
            memberships,
            teams,
        })
    }

    /// Whether `identity` may take every action of `scope` (a repository scope).
    pub async fn permits(
        &self,
        identity: &Identity,
        scope: &ResourceScope,
    ) -> Result<Verdict, AuthError> {
        let Ok(repo) = scope.name.parse::<RepoName>() else {
            return Ok(Verdict::Denied);
        };
        let allowed = self.allowed(&identity.principal, &repo).await?;
        if !scope.actions.is_subset(&allowed) {
            return Ok(Verdict::Denied);
        }
        match &identity.token_access {
            Some(access)
                if !scope
                    .actions
                    .iter()
                    .all(|a| access.iter().any(|e| e.grants(&scope.name, *a))) =>
            {
                Ok(Verdict::NeedsToken)
            }
            _ => Ok(Verdict::Granted),
        }
    }

    // ---- whole admissions ----

    /// The key a request's admission is remembered under (`authorization`: its
    /// `Authorization` header, empty without one); `None` while the epoch is unknown.
    pub async fn admission_key(
        &self,
        authorization: &[u8],
        requirement: &Requirement,
    ) -> Option<AdmissionKey> {
        Some(AdmissionKey::new(
            self.epoch().await?,
            authorization,
            requirement,
        ))
    }

    /// The admission remembered under `key`, unless its token has expired since.
    pub fn recall_admission(&self, key: &AdmissionKey) -> Option<Admission> {
        self.admissions.recall(key, token::unix_now())
    }

    pub fn remember_admission(&self, key: AdmissionKey, admission: &Admission) {
        self.admissions.remember(key, admission);
    }

    // ---- tokens ----

    /// A token granting, of each requested repository scope, the actions `principal` may
    /// take (the token spec's intersection; asking for more is not an error).
    pub async fn issue(
        &self,
        principal: &Principal,
        requested: &[ResourceScope],
    ) -> Result<IssuedToken, AuthError> {
        let mut granted = Vec::new();
        for scope in requested.iter().filter(|s| s.is_repository()) {
            let Ok(repo) = scope.name.parse::<RepoName>() else {
                continue;
            };
            let allowed = self.allowed(principal, &repo).await?;
            let actions: Actions = scope.actions.intersection(&allowed).copied().collect();
            if !actions.is_empty() {
                granted.push(ResourceScope::repository(repo.as_str(), actions));
            }
        }
        let now = self.store.now().await?;
        let lifetime = self.settings.token_lifetime_seconds.max(60);
        let access = granted.iter().map(AccessEntry::from).collect();
        let token = token::issue(
            &self.ring(),
            &self.settings.parties,
            &principal.subject(),
            access,
            now,
            lifetime,
        )
        .map_err(AuthError::Signing)?;
        Ok(IssuedToken {
            token,
            granted,
            issued_at: now,
            expires_in: lifetime,
        })
    }

    /// A refresh token for a signed-in user (robots sign in with their secret every time).
    pub async fn start_session(&self, principal: &Principal) -> Result<Option<String>, AuthError> {
        let Some(user) = principal.user_name() else {
            return Ok(None);
        };
        let token = SplitToken::generate();
        let now = self.store.now().await?;
        self.store
            .create_session(&NewSession {
                id: token.id.clone(),
                user: user.clone(),
                secret_hash: secret::digest(&token.secret),
                service: self.settings.parties.service.clone(),
                expires_at: now + self.settings.refresh_lifetime_seconds,
            })
            .await?;
        Ok(Some(token.to_token()))
    }

    /// The user a refresh token stands for, if it is valid, unrevoked and unexpired.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Principal, AuthError> {
        let token = SplitToken::parse(refresh_token).ok_or(AuthError::InvalidToken)?;
        let session = self
            .store
            .session(&token.id)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        let now = self.store.now().await?;
        let valid = secret::matches(&token.secret, &session.secret_hash)
            && session.revoked_at.is_none()
            && now < session.expires_at
            && session.service == self.settings.parties.service;
        if !valid {
            return Err(AuthError::InvalidToken);
        }
        self.resolve(session.user.as_str())
            .await?
            .ok_or(AuthError::InvalidToken)
    }

    /// Revokes a refresh token (logout). Unknown tokens are ignored.
    pub async fn end_session(&self, refresh_token: &str) -> Result<(), AuthError> {
        if let Some(token) = SplitToken::parse(refresh_token)
            && let Some(session) = self.store.session(&token.id).await?
            && secret::matches(&token.secret, &session.secret_hash)
        {
            self.store.revoke_session(&token.id).await?;
        }
        Ok(())
    }

    // ---- audit ----

    /// Appends to the audit log off the request's path (a write waits for no audit insert);
    /// a failure is logged, not the request's.
    pub fn record(&self, event: AuditEvent) {
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.append_audit(&event).await {
                tracing::warn!(error = %e, action = %event.action, "audit record lost");
            }
        });
    }

    // ---- the epoch ----

    /// The account store's epoch, re-read at most every [`EPOCH_REFRESH`]; `None` when the
    /// store does not answer (then nothing is cached or reused).
    async fn epoch(&self) -> Option<Arc<str>> {
        {
            let local = self.epoch.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((epoch, at)) = local.as_ref()
                && at.elapsed() < EPOCH_REFRESH
            {
                return Some(epoch.clone());
            }
        }
        let epoch: Arc<str> = match self.store.epoch().await {
            Ok(epoch) => epoch.into(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the account epoch; not caching decisions");
                return None;
            }
        };
        *self.epoch.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((epoch.clone(), Instant::now()));
        Some(epoch)
    }

    /// After a change made through this node (the management API's), its cached decisions end
    /// at once rather than within [`EPOCH_REFRESH`]: the next one re-reads the epoch, which the
    /// change replaced.
    pub fn account_changed(&self) {
        *self.epoch.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Generates the signing key on first start and loads the ring from the store.
    pub async fn load_keys(store: &dyn AccountStore) -> Result<KeyRing, AuthError> {
        let keys = store.signing_keys().await?;
        if keys.iter().all(|k| k.retired_at.is_some()) {
            let now = store.now().await?;
            store
                .add_signing_key(&SigningKey::generate().to_stored(now), true)
                .await?;
            return Ok(KeyRing::from_stored(&store.signing_keys().await?)?);
        }
        Ok(KeyRing::from_stored(&keys)?)
    }

    /// Starts signing with a new key: the others retire (they verify until the tokens they
    /// signed have expired) and keys retired longer ago than any token lives are deleted.
    /// Every node follows within its reload interval. Returns the new key's id.
    pub async fn rotate_keys(store: &dyn AccountStore) -> Result<String, AuthError> {
        let now = store.now().await?;
        let key = SigningKey::generate();
        store.add_signing_key(&key.to_stored(now), false).await?;
        store.retire_signing_keys_except(&key.kid).await?;
        store
            .delete_signing_keys_retired_before(now - RETIRED_KEY_LIFETIME_SECONDS)
            .await?;
        Ok(key.kid)
    }
}

/// How long a retired key keeps verifying: past the longest token lifetime (3600 s) and the
/// verification leeway, with room for nodes that have not reloaded yet.
const RETIRED_KEY_LIFETIME_SECONDS: i64 = 2 * 3600;

/// A node's in-memory tier of cached decisions.
fn local_decisions<T: Clone + Send + Sync + 'static>() -> moka::sync::Cache<String, T> {
    moka::sync::Cache::builder()
        .max_capacity(LOCAL_DECISIONS)
        .time_to_live(DECISION_TTL)
        .build()
}

const LOCAL_DECISIONS: u64 = 100_000;

/// The least time between two reloads caused by unknown key ids.
const UNKNOWN_KEY_RELOAD: Duration = Duration::from_secs(5);

/// The robot as a principal, unless it is revoked or expired at `now`.
fn active_robot(stored: StoredRobot, now: Timestamp) -> Option<Principal> {
    let robot = stored.robot;
    if !robot.is_active(now) {
        return None;
    }
    Some(Principal::Robot {
        namespace: robot.namespace,
        name: robot.name,
        scopes: robot.scopes,
    })
}

fn failures_key(user: &str) -> String {
    format!("auth:fail:{}", secret::digest(user))
}
