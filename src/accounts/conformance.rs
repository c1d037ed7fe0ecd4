//! The behaviour every `AccountStore` backend must show, written once against the trait.
//!
//! A backend's tests invoke [`account_conformance!`] with an async constructor returning
//! `Some((Arc<dyn AccountStore>, guard))`, or `None` to skip (a test service that is not
//! running, see `testkit`); the macro expands to one `#[tokio::test]` per case, each on a fresh
//! store. The guard is whatever must outlive the store, such as a temporary schema.

use std::fmt::Debug;
use std::sync::Arc;

use super::{
    AccountError, AccountName, AccountStore, AuditEvent, AuditQuery, Entity, Grant, Grantee,
    Member, Membership, NamespaceKind, NewRobot, NewSession, NewUser, OrgRole, Outcome, Permission,
    RepositorySettings, Result, RobotScope, StoredSigningKey, TeamRef, Timestamp, User, UserChange,
    Visibility,
};
use crate::oci::RepoName;
use crate::oci::scope::{Action, Actions};

/// Expands to one test per conformance case. `$make` is a path to an
/// `async fn() -> Option<(Arc<dyn AccountStore>, G)>`: `None` skips the case.
macro_rules! account_conformance {
    ($make:path) => {
        $crate::accounts::conformance::account_conformance!(@cases $make;
            has_users_follows_the_users,
            the_epoch_changes_with_every_change_to_access,
            users_are_created_read_updated_and_listed,
            users_and_orgs_share_one_namespace,
            orgs_are_listed_in_pages_and_deleted,
            an_org_keeps_an_owner_through_role_changes,
            deleting_a_user_refuses_for_a_last_owner_and_takes_what_it_had,
            deleting_an_org_takes_its_members_teams_robots_and_team_grants,
            team_members_are_members_of_the_org,
            quotas_are_set_and_lifted,
            repository_settings_default_to_private_without_grants,
            set_grants_replaces_every_grant,
            robots_are_created_listed_revoked_and_deleted,
            sessions_are_created_read_and_revoked,
            signing_keys_start_once_rotate_and_expire,
            audit_records_are_filtered_and_paged_newest_first,
            concurrent_claims_of_one_name_admit_one,
            concurrent_demotions_keep_an_owner,
            concurrent_deletion_and_demotion_keep_an_owner,
            concurrent_first_keys_store_one,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            // Several worker threads, so the concurrency cases really run in parallel.
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let Some((store, _guard)) = $make().await else {
                    return;
                };
                $crate::accounts::conformance::$case(store).await;
            }
        )*
    };
}
pub(crate) use account_conformance;

// ---- fixtures ----

fn name(s: &str) -> AccountName {
    s.parse().expect("valid account name")
}

fn repo(s: &str) -> RepoName {
    s.parse().expect("valid repository name")
}

async fn user(store: &dyn AccountStore, user: &str) -> User {
    store
        .create_user(&NewUser {
            name: name(user),
            password_hash: Some(format!("$argon2id$hash-of-{user}")),
            admin: false,
        })
        .await
        .expect("create_user")
}

/// An organisation owned by `owner`, a user created with it.
async fn org(store: &dyn AccountStore, org: &str, owner: &str) {
    if store.user(&name(owner)).await.expect("user").is_none() {
        user(store, owner).await;
    }
    store
        .create_org(&name(org), &name(owner))
        .await
        .expect("create_org");
}

async fn set_member(store: &dyn AccountStore, org: &str, user: &str, role: OrgRole) {
    store
        .set_member(&name(org), &name(user), role)
        .await
        .expect("set_member");
}

async fn team(store: &dyn AccountStore, org: &str, team: &str, members: &[&str]) {
    store
        .create_team(&name(org), &name(team), "")
        .await
        .expect("create_team");
    for member in members {
        store
            .add_team_member(&name(org), &name(team), &name(member))
            .await
            .expect("add_team_member");
    }
}

/// acme, owned by alice, with bob a member in its team devs.
async fn acme_with_bob_in_devs(store: &dyn AccountStore) {
    org(store, "acme", "alice").await;
    user(store, "bob").await;
    set_member(store, "acme", "bob", OrgRole::Member).await;
    team(store, "acme", "devs", &["bob"]).await;
}

async fn members(store: &dyn AccountStore, org: &str) -> Vec<Member> {
    store
        .members(&name(org), None, 1000)
        .await
        .expect("members")
}

async fn owners(store: &dyn AccountStore, org: &str) -> Vec<AccountName> {
    let members = members(store, org).await;
    let owners = members.into_iter().filter(|m| m.role == OrgRole::Owner);
    owners.map(|m| m.user).collect()
}

fn member(user: &str, role: OrgRole) -> Member {
    Member {
        user: name(user),
        role,
    }
}

fn grant_to_user(user: &str, permission: Permission) -> Grant {
    Grant {
        grantee: Grantee::User { name: name(user) },
        permission,
    }
}

fn grant_to_team(team: &str, permission: Permission) -> Grant {
    Grant {
        grantee: Grantee::Team { team: name(team) },
        permission,
    }
}

async fn grants(store: &dyn AccountStore, repository: &str) -> Vec<Grant> {
    let settings = store.repository_settings(&repo(repository)).await;
    settings.expect("repository_settings").grants
}

async fn team_members(store: &dyn AccountStore, org: &str, team: &str) -> Vec<AccountName> {
    store
        .team_members(&name(org), &name(team))
        .await
        .expect("team_members")
}

fn names(list: &[&str]) -> Vec<AccountName> {
    list.iter().map(|n| name(n)).collect()
}

#[track_caller]
fn assert_not_found<T: Debug>(result: Result<T>, expected: Entity) {
    match result {
        Err(AccountError::NotFound { entity, .. }) if entity == expected => {}
        other => panic!("expected {expected} not found, got {other:?}"),
    }
}

#[track_caller]
fn assert_already_exists<T: Debug>(result: Result<T>, expected: Entity) {
    match result {
        Err(AccountError::AlreadyExists { entity, .. }) if entity == expected => {}
        other => panic!("expected {expected} already exists, got {other:?}"),
    }
}

#[track_caller]
fn assert_refused<T: Debug>(result: Result<T>) {
    assert!(
        matches!(result, Err(AccountError::Refused(_))),
        "expected a refusal, got {result:?}"
    );
}

/// The store's clock before and after `f`, to bound the times it stamps.
async fn now(store: &dyn AccountStore) -> Timestamp {
    store.now().await.expect("now")
}

#[track_caller]
fn assert_between(at: Timestamp, (from, to): (Timestamp, Timestamp)) {
    assert!((from..=to).contains(&at), "{at} not within {from}..={to}");
}

// ---- users, organisations, namespaces ----

pub(crate) async fn has_users_follows_the_users(store: Arc<dyn AccountStore>) {
    let store = &*store;
    assert!(!store.has_users().await.expect("has_users"));
    user(store, "alice").await;
    assert!(store.has_users().await.expect("has_users"));
    store.delete_user(&name("alice")).await.expect("delete");
    assert!(!store.has_users().await.expect("has_users"));
}

pub(crate) async fn the_epoch_changes_with_every_change_to_access(store: Arc<dyn AccountStore>) {
    let store = store.as_ref();
    let mut seen = vec![store.epoch().await.unwrap()];
    let mut expect_new = |epoch: String, what: &str| {
        assert!(
            !seen.contains(&epoch),
            "the epoch did not change after {what}"
        );
        seen.push(epoch);
    };
    user(store, "alice").await;
    expect_new(store.epoch().await.unwrap(), "create_user");
    // Reads leave it alone.
    let before = store.epoch().await.unwrap();
    store.user(&name("alice")).await.unwrap();
    store.memberships(&name("alice")).await.unwrap();
    assert_eq!(store.epoch().await.unwrap(), before);
    let change = UserChange {
        disabled: Some(true),
        ..UserChange::default()
    };
    store.update_user(&name("alice"), &change).await.unwrap();
    expect_new(store.epoch().await.unwrap(), "disabling a user");
    user(store, "bob").await;
    org(store, "acme", "bob").await;
    expect_new(store.epoch().await.unwrap(), "create_org");
    set_member(store, "acme", "alice", OrgRole::Member).await;
    expect_new(store.epoch().await.unwrap(), "set_member");
    let repo = repo("acme/app");
    store
        .set_visibility(&repo, Visibility::Public)
        .await
        .unwrap();
    expect_new(store.epoch().await.unwrap(), "set_visibility");
    let grant = Grant {
        grantee: Grantee::User {
            name: name("alice"),
        },
        permission: Permission::Write,
    };
    store.set_grants(&repo, &[grant]).await.unwrap();
    expect_new(store.epoch().await.unwrap(), "set_grants");
    store
        .create_robot(&NewRobot {
            namespace: name("acme"),
            name: name("ci"),
            secret_hash: "00".repeat(32),
            scopes: Vec::new(),
            expires_at: None,
        })
        .await
        .unwrap();
    expect_new(store.epoch().await.unwrap(), "create_robot");
    store
        .revoke_robot(&name("acme"), &name("ci"))
        .await
        .unwrap();
    expect_new(store.epoch().await.unwrap(), "revoke_robot");
    store
        .remove_member(&name("acme"), &name("alice"))
        .await
        .unwrap();
    expect_new(store.epoch().await.unwrap(), "remove_member");
}

pub(crate) async fn users_are_created_read_updated_and_listed(store: Arc<dyn AccountStore>) {
    let store = &*store;
    let before = now(store).await;
    let alice = user(store, "alice").await;
    let window = (before, now(store).await);
    assert_eq!(alice.name, name("alice"));
    assert!(!alice.admin && !alice.disabled);
    assert_between(alice.created_at, window);

    let stored = store
        .user(&name("alice"))
        .await
        .expect("user")
        .expect("alice");
    assert_eq!(stored.user, alice);
    assert_eq!(
        stored.password_hash.as_deref(),
        Some("$argon2id$hash-of-alice")
    );
    assert_eq!(store.user(&name("nobody")).await.expect("user"), None);
    let again = NewUser {
        name: name("alice"),
        password_hash: None,
        admin: true,
    };
    assert_already_exists(store.create_user(&again).await, Entity::User);

    let promoted = store
        .update_user(
            &name("alice"),
            &UserChange {
                admin: Some(true),
                ..UserChange::default()
            },
        )
        .await
        .expect("update");
    assert!(promoted.admin && !promoted.disabled);
    let changed = UserChange {
        password_hash: Some("new".into()),
        admin: None,
        disabled: Some(true),
    };
    let disabled = store
        .update_user(&name("alice"), &changed)
        .await
        .expect("update");
    assert!(disabled.admin && disabled.disabled);
    assert_eq!(disabled.created_at, alice.created_at);
    let stored = store
        .user(&name("alice"))
        .await
        .expect("user")
        .expect("alice");
    assert_eq!(stored.user, disabled);
    assert_eq!(stored.password_hash.as_deref(), Some("new"));
    let unchanged = store
        .update_user(&name("alice"), &UserChange::default())
        .await
        .expect("update");
    assert_eq!(unchanged, disabled);
    assert_not_found(
        store.update_user(&name("nobody"), &changed).await,
        Entity::User,
    );

    // Byte order, whatever the database's locale: '-' < '.' < '0' < '_' < 'b'.
    for n in ["a_b", "ab", "a-b", "a0", "a.b"] {
        user(store, n).await;
    }
    let page = |after: Option<&'static str>, limit| async move {
        let after = after.map(name);
        let users = store
            .list_users(after.as_ref(), limit)
            .await
            .expect("list_users");
        users.into_iter().map(|u| u.name).collect::<Vec<_>>()
    };
    assert_eq!(page(None, 3).await, names(&["a-b", "a.b", "a0"]));
    assert_eq!(page(Some("a0"), 2).await, names(&["a_b", "ab"]));
    assert_eq!(page(Some("ab"), 2).await, names(&["alice"]));
    assert_eq!(page(Some("alice"), 2).await, names(&[]));
    assert_eq!(page(None, 0).await, names(&[]));
}

pub(crate) async fn users_and_orgs_share_one_namespace(store: Arc<dyn AccountStore>) {
    let store = &*store;
    user(store, "alice").await;
    assert_already_exists(
        store.create_org(&name("alice"), &name("alice")).await,
        Entity::Organization,
    );
    org(store, "acme", "alice").await;
    let user_named_acme = NewUser {
        name: name("acme"),
        password_hash: None,
        admin: false,
    };
    assert_already_exists(store.create_user(&user_named_acme).await, Entity::User);
    assert_eq!(store.user(&name("acme")).await.expect("user"), None);

    // An owner that is not a user: nothing is created, the name stays free.
    assert_not_found(
        store.create_org(&name("initech"), &name("nobody")).await,
        Entity::User,
    );
    assert_not_found(
        store.create_org(&name("initech"), &name("acme")).await,
        Entity::User,
    );
    assert_eq!(store.namespace(&name("initech")).await.expect("ns"), None);
    user(store, "initech").await;

    let kind = |n: &'static str| async move {
        let namespace = store.namespace(&name(n)).await.expect("namespace");
        namespace.map(|ns| (ns.name, ns.kind))
    };
    assert_eq!(
        kind("alice").await,
        Some((name("alice"), NamespaceKind::User))
    );
    assert_eq!(
        kind("acme").await,
        Some((name("acme"), NamespaceKind::Organization))
    );
    assert_eq!(
        kind("initech").await,
        Some((name("initech"), NamespaceKind::User))
    );
    assert_eq!(kind("nobody").await, None);
}

pub(crate) async fn orgs_are_listed_in_pages_and_deleted(store: Arc<dyn AccountStore>) {
    let store = &*store;
    user(store, "alice").await;
    let before = now(store).await;
    let acme = store
        .create_org(&name("acme"), &name("alice"))
        .await
        .expect("create_org");
    assert_between(acme.created_at, (before, now(store).await));
    assert_eq!(store.org(&name("acme")).await.expect("org"), Some(acme));
    assert_eq!(store.org(&name("alice")).await.expect("org"), None);
    for n in ["b-org", "b.org", "b0rg"] {
        org(store, n, "alice").await;
    }
    let page = |after: Option<&'static str>, limit| async move {
        let after = after.map(name);
        let orgs = store
            .list_orgs(after.as_ref(), limit)
            .await
            .expect("list_orgs");
        orgs.into_iter().map(|o| o.name).collect::<Vec<_>>()
    };
    assert_eq!(page(None, 2).await, names(&["acme", "b-org"]));
    assert_eq!(page(Some("b-org"), 5).await, names(&["b.org", "b0rg"]));
    let users = store.list_users(None, 10).await.expect("list_users");
    assert_eq!(users.len(), 1, "organisations are not users: {users:?}");

    store.delete_org(&name("acme")).await.expect("delete_org");
    assert_eq!(store.org(&name("acme")).await.expect("org"), None);
    assert_eq!(store.namespace(&name("acme")).await.expect("ns"), None);
    assert_not_found(store.delete_org(&name("acme")).await, Entity::Organization);
    assert_not_found(store.delete_org(&name("alice")).await, Entity::Organization);
    assert!(store.user(&name("alice")).await.expect("user").is_some());
    // The name is free again.
    org(store, "acme", "alice").await;
}

pub(crate) async fn an_org_keeps_an_owner_through_role_changes(store: Arc<dyn AccountStore>) {
    let store = &*store;
    org(store, "acme", "alice").await;
    for u in ["bob", "carol"] {
        user(store, u).await;
    }
    assert_eq!(
        members(store, "acme").await,
        [member("alice", OrgRole::Owner)]
    );

    let (acme, alice, bob) = (name("acme"), name("alice"), name("bob"));
    assert_refused(store.set_member(&acme, &alice, OrgRole::Admin).await);
    assert_refused(store.remove_member(&acme, &alice).await);
    assert_eq!(
        members(store, "acme").await,
        [member("alice", OrgRole::Owner)]
    );

    set_member(store, "acme", "bob", OrgRole::Member).await;
    set_member(store, "acme", "carol", OrgRole::Admin).await;
    set_member(store, "acme", "bob", OrgRole::Owner).await;
    set_member(store, "acme", "alice", OrgRole::Member).await;
    assert_eq!(
        members(store, "acme").await,
        [
            member("alice", OrgRole::Member),
            member("bob", OrgRole::Owner),
            member("carol", OrgRole::Admin),
        ]
    );
    assert_refused(store.remove_member(&acme, &bob).await);
    assert_refused(store.set_member(&acme, &bob, OrgRole::Member).await);
    store.remove_member(&acme, &alice).await.expect("remove");
    let page = store.members(&acme, Some(&bob), 1).await.expect("members");
    assert_eq!(page, [member("carol", OrgRole::Admin)]);
    assert_eq!(store.members(&acme, None, 0).await.expect("members"), []);

    let (nobody, nowhere) = (name("nobody"), name("nowhere"));
    assert_not_found(
        store.set_member(&acme, &nobody, OrgRole::Member).await,
        Entity::User,
    );
    assert_not_found(
        store.set_member(&nowhere, &bob, OrgRole::Member).await,
        Entity::Organization,
    );
    assert_not_found(store.remove_member(&acme, &alice).await, Entity::Member);
    assert_not_found(
        store.remove_member(&nowhere, &bob).await,
        Entity::Organization,
    );
    assert_eq!(members(store, "nowhere").await, []);

    org(store, "initech", "carol").await;
    set_member(store, "initech", "bob", OrgRole::Admin).await;
    assert_eq!(
        store.memberships(&bob).await.expect("memberships"),
        [
            Membership {
                org: name("acme"),
                role: OrgRole::Owner
            },
            Membership {
                org: name("initech"),
                role: OrgRole::Admin
            },
        ]
    );
    assert_eq!(store.memberships(&alice).await.expect("memberships"), []);
}

pub(crate) async fn deleting_a_user_refuses_for_a_last_owner_and_takes_what_it_had(
    store: Arc<dyn AccountStore>,
) {
    let store = &*store;
    acme_with_bob_in_devs(store).await;
    let app = repo("acme/app");
    let bobs_grant = grant_to_user("bob", Permission::Write);
    let devs_grant = grant_to_team("devs", Permission::Read);
    store
        .set_grants(&app, &[bobs_grant, devs_grant.clone()])
        .await
        .expect("set_grants");
    store
        .create_robot(&robot("bob", "ci"))
        .await
        .expect("robot");
    store
        .create_session(&session("s1", "bob"))
        .await
        .expect("session");

    assert_refused(store.delete_user(&name("alice")).await);
    assert!(store.user(&name("alice")).await.expect("user").is_some());
    assert_eq!(owners(store, "acme").await, names(&["alice"]));

    store.delete_user(&name("bob")).await.expect("delete_user");
    assert_eq!(store.user(&name("bob")).await.expect("user"), None);
    assert_eq!(store.namespace(&name("bob")).await.expect("ns"), None);
    assert_eq!(
        members(store, "acme").await,
        [member("alice", OrgRole::Owner)]
    );
    assert_eq!(team_members(store, "acme", "devs").await, []);
    assert_eq!(store.teams_of(&name("bob")).await.expect("teams_of"), []);
    assert_eq!(grants(store, "acme/app").await, [devs_grant]);
    let bobs_robot = store.robot(&name("bob"), &name("ci")).await.expect("robot");
    assert_eq!(bobs_robot, None);
    assert_eq!(store.session("s1").await.expect("session"), None);
    assert_not_found(store.delete_user(&name("bob")).await, Entity::User);
    assert_not_found(store.delete_user(&name("acme")).await, Entity::User);
    assert!(store.org(&name("acme")).await.expect("org").is_some());

    // The name is free again, with nothing of the old user's.
    user(store, "bob").await;
    assert_eq!(store.memberships(&name("bob")).await.expect("m"), []);

    // With another owner, the last one may go.
    set_member(store, "acme", "bob", OrgRole::Owner).await;
    store
        .delete_user(&name("alice"))
        .await
        .expect("delete_user");
    assert_eq!(
        members(store, "acme").await,
        [member("bob", OrgRole::Owner)]
    );
}

pub(crate) async fn deleting_an_org_takes_its_members_teams_robots_and_team_grants(
    store: Arc<dyn AccountStore>,
) {
    let store = &*store;
    acme_with_bob_in_devs(store).await;
    store
        .create_robot(&robot("acme", "ci"))
        .await
        .expect("robot");
    let bobs_grant = grant_to_user("bob", Permission::Write);
    let devs_grant = grant_to_team("devs", Permission::Read);
    store
        .set_grants(&repo("acme/app"), &[bobs_grant.clone(), devs_grant])
        .await
        .expect("set_grants");

    store.delete_org(&name("acme")).await.expect("delete_org");
    assert_eq!(store.memberships(&name("bob")).await.expect("m"), []);
    assert_eq!(store.teams_of(&name("bob")).await.expect("teams_of"), []);
    assert_eq!(store.teams(&name("acme")).await.expect("teams"), []);
    assert_eq!(store.robots(&name("acme")).await.expect("robots"), []);
    // Grants to users are the repository's: they go when its settings are forgotten.
    assert_eq!(grants(store, "acme/app").await, [bobs_grant]);
    assert!(store.user(&name("bob")).await.expect("user").is_some());

    // A new organisation of that name starts empty.
    org(store, "acme", "bob").await;
    assert_eq!(
        members(store, "acme").await,
        [member("bob", OrgRole::Owner)]
    );
    assert_eq!(store.teams(&name("acme")).await.expect("teams"), []);
    assert_eq!(team_members(store, "acme", "devs").await, []);
}

pub(crate) async fn team_members_are_members_of_the_org(store: Arc<dyn AccountStore>) {
    let store = &*store;
    org(store, "acme", "alice").await;
    org(store, "initech", "alice").await;
    for u in ["bob", "carol"] {
        user(store, u).await;
    }
    set_member(store, "acme", "bob", OrgRole::Member).await;
    let (acme, devs) = (name("acme"), name("devs"));

    let created = store
        .create_team(&acme, &devs, "Developers")
        .await
        .expect("create_team");
    assert_eq!(
        (created.org, created.name, created.description.as_str()),
        (name("acme"), name("devs"), "Developers")
    );
    assert_already_exists(store.create_team(&acme, &devs, "").await, Entity::Team);
    assert_not_found(
        store.create_team(&name("nowhere"), &devs, "").await,
        Entity::Organization,
    );
    team(store, "acme", "ops", &[]).await;
    team(store, "initech", "devs", &["alice"]).await;
    let acme_teams = store.teams(&acme).await.expect("teams");
    let listed: Vec<_> = acme_teams
        .iter()
        .map(|t| (t.name.as_str(), t.description.as_str()))
        .collect();
    assert_eq!(listed, [("devs", "Developers"), ("ops", "")]);

    let (alice, bob, carol) = (name("alice"), name("bob"), name("carol"));
    assert_refused(store.add_team_member(&acme, &devs, &carol).await);
    assert_refused(store.add_team_member(&acme, &devs, &name("nobody")).await);
    assert_not_found(
        store.add_team_member(&acme, &name("ghosts"), &bob).await,
        Entity::Team,
    );
    for u in [&bob, &bob, &alice] {
        store.add_team_member(&acme, &devs, u).await.expect("add");
    }
    store
        .add_team_member(&acme, &name("ops"), &bob)
        .await
        .expect("add");
    assert_eq!(
        team_members(store, "acme", "devs").await,
        names(&["alice", "bob"])
    );
    assert_eq!(
        team_members(store, "initech", "devs").await,
        names(&["alice"])
    );
    let team_ref = |org: &str, team: &str| TeamRef {
        org: name(org),
        team: name(team),
    };
    assert_eq!(
        store.teams_of(&bob).await.expect("teams_of"),
        [team_ref("acme", "devs"), team_ref("acme", "ops")]
    );
    assert_eq!(
        store.teams_of(&alice).await.expect("teams_of"),
        [team_ref("acme", "devs"), team_ref("initech", "devs")]
    );

    // Leaving the organisation leaves its teams.
    store.remove_member(&acme, &bob).await.expect("remove");
    assert_eq!(team_members(store, "acme", "devs").await, names(&["alice"]));
    assert_eq!(store.teams_of(&bob).await.expect("teams_of"), []);

    store
        .remove_team_member(&acme, &devs, &alice)
        .await
        .expect("remove_team_member");
    assert_not_found(
        store.remove_team_member(&acme, &devs, &alice).await,
        Entity::TeamMember,
    );
    assert_eq!(
        team_members(store, "initech", "devs").await,
        names(&["alice"])
    );

    // Deleting a team takes its memberships and the grants to it.
    store
        .add_team_member(&acme, &devs, &alice)
        .await
        .expect("add");
    let ops_grant = grant_to_team("ops", Permission::Write);
    let devs_grant = grant_to_team("devs", Permission::Read);
    store
        .set_grants(&repo("acme/app"), &[devs_grant, ops_grant.clone()])
        .await
        .expect("set_grants");
    store.delete_team(&acme, &devs).await.expect("delete_team");
    assert_not_found(store.delete_team(&acme, &devs).await, Entity::Team);
    assert_eq!(team_members(store, "acme", "devs").await, []);
    assert_eq!(grants(store, "acme/app").await, [ops_grant]);
    let remaining = store.teams(&acme).await.expect("teams");
    assert_eq!(remaining.len(), 1);
    assert_eq!(
        team_members(store, "initech", "devs").await,
        names(&["alice"])
    );
    // A new team of the name starts empty.
    team(store, "acme", "devs", &[]).await;
    assert_eq!(team_members(store, "acme", "devs").await, []);
}

pub(crate) async fn quotas_are_set_and_lifted(store: Arc<dyn AccountStore>) {
    let store = &*store;
    org(store, "acme", "alice").await;
    let quota = |n: &'static str| async move {
        let namespace = store.namespace(&name(n)).await.expect("namespace");
        namespace.expect("a namespace").quota_bytes
    };
    assert_eq!(quota("alice").await, None);
    let ten_gib = 10 << 30;
    store
        .set_quota(&name("acme"), Some(ten_gib))
        .await
        .expect("set_quota");
    store
        .set_quota(&name("alice"), Some(0))
        .await
        .expect("set_quota");
    assert_eq!(quota("acme").await, Some(ten_gib));
    assert_eq!(quota("alice").await, Some(0));
    store
        .set_quota(&name("acme"), None)
        .await
        .expect("set_quota");
    assert_eq!(quota("acme").await, None);
    assert_not_found(
        store.set_quota(&name("nobody"), Some(1)).await,
        Entity::Namespace,
    );
    let too_big = store.set_quota(&name("acme"), Some(u64::MAX)).await;
    assert!(
        matches!(too_big, Err(AccountError::Backend(_))),
        "{too_big:?}"
    );
    assert_eq!(quota("acme").await, None);
}

// ---- repositories ----

pub(crate) async fn repository_settings_default_to_private_without_grants(
    store: Arc<dyn AccountStore>,
) {
    let store = &*store;
    let app = repo("acme/app");
    let settings = |r: &'static str| async move {
        store
            .repository_settings(&repo(r))
            .await
            .expect("repository_settings")
    };
    let defaults = RepositorySettings {
        visibility: Visibility::Private,
        grants: Vec::new(),
    };
    assert_eq!(settings("acme/app").await, defaults);

    store
        .set_visibility(&app, Visibility::Public)
        .await
        .expect("set_visibility");
    assert_eq!(settings("acme/app").await.visibility, Visibility::Public);
    assert_eq!(settings("acme/app/sub").await, defaults);
    assert_eq!(settings("acme").await, defaults);
    store
        .set_visibility(&app, Visibility::Private)
        .await
        .expect("set_visibility");
    assert_eq!(settings("acme/app").await, defaults);
    store
        .set_visibility(&app, Visibility::Public)
        .await
        .expect("set_visibility");
    store
        .delete_repository_settings(&app)
        .await
        .expect("delete_repository_settings");
    assert_eq!(settings("acme/app").await, defaults);
    store
        .delete_repository_settings(&app)
        .await
        .expect("forgetting nothing is fine");
}

pub(crate) async fn set_grants_replaces_every_grant(store: Arc<dyn AccountStore>) {
    let store = &*store;
    org(store, "acme", "alice").await;
    org(store, "initech", "alice").await;
    for u in ["bob", "carol"] {
        user(store, u).await;
    }
    team(store, "acme", "devs", &[]).await;
    team(store, "initech", "ops", &[]).await;
    let app = repo("acme/app");
    store
        .set_visibility(&app, Visibility::Public)
        .await
        .expect("set_visibility");

    let first = [
        grant_to_team("devs", Permission::Read),
        grant_to_user("bob", Permission::Write),
    ];
    store.set_grants(&app, &first).await.expect("set_grants");
    let settings = store.repository_settings(&app).await.expect("settings");
    assert_eq!(settings.visibility, Visibility::Public, "grants keep it");
    // Users first, then teams, each by name.
    assert_eq!(settings.grants, [first[1].clone(), first[0].clone()]);

    let replaced = [grant_to_user("carol", Permission::Admin)];
    store.set_grants(&app, &replaced).await.expect("set_grants");
    assert_eq!(grants(store, "acme/app").await, replaced);

    // A grantee named twice keeps the higher level.
    let twice = [
        grant_to_user("bob", Permission::Admin),
        grant_to_user("bob", Permission::Read),
        grant_to_team("devs", Permission::Read),
        grant_to_team("devs", Permission::Write),
    ];
    store.set_grants(&app, &twice).await.expect("set_grants");
    assert_eq!(
        grants(store, "acme/app").await,
        [twice[0].clone(), twice[3].clone()]
    );

    // Refused grants change nothing.
    let unknown_user = [
        grant_to_user("carol", Permission::Read),
        grant_to_user("nobody", Permission::Read),
    ];
    assert_not_found(store.set_grants(&app, &unknown_user).await, Entity::User);
    let unknown_team = [grant_to_team("ghosts", Permission::Read)];
    assert_not_found(store.set_grants(&app, &unknown_team).await, Entity::Team);
    // `ops` is initech's: acme's repositories cannot grant to it.
    let other_orgs_team = [grant_to_team("ops", Permission::Read)];
    assert_not_found(store.set_grants(&app, &other_orgs_team).await, Entity::Team);
    assert_eq!(
        grants(store, "acme/app").await,
        [twice[0].clone(), twice[3].clone()]
    );
    let initech_app = repo("initech/tools/app");
    store
        .set_grants(&initech_app, &other_orgs_team)
        .await
        .expect("a team of the repository's own organisation");
    assert_eq!(grants(store, "initech/tools/app").await, other_orgs_team);
    // A user's repository has no teams.
    assert_not_found(
        store
            .set_grants(&repo("bob/app"), &[grant_to_team("devs", Permission::Read)])
            .await,
        Entity::Team,
    );
    let settings = store.repository_settings(&repo("bob/app")).await;
    assert_eq!(settings.expect("settings"), RepositorySettings::default());

    store.set_grants(&app, &[]).await.expect("set_grants");
    assert_eq!(grants(store, "acme/app").await, []);
    store.set_grants(&app, &replaced).await.expect("set_grants");
    store
        .delete_repository_settings(&app)
        .await
        .expect("delete_repository_settings");
    let settings = store.repository_settings(&app).await.expect("settings");
    assert_eq!(settings, RepositorySettings::default());
}

// ---- robots and sessions ----

fn robot(namespace: &str, robot: &str) -> NewRobot {
    NewRobot {
        namespace: name(namespace),
        name: name(robot),
        secret_hash: format!("sha256-of-{namespace}+{robot}"),
        scopes: vec![
            RobotScope {
                repository: format!("{namespace}/app"),
                actions: Actions::from([Action::Pull, Action::Push]),
            },
            RobotScope {
                repository: format!("{namespace}/charts/*"),
                actions: Actions::from([Action::Pull]),
            },
        ],
        expires_at: None,
    }
}

pub(crate) async fn robots_are_created_listed_revoked_and_deleted(store: Arc<dyn AccountStore>) {
    let store = &*store;
    org(store, "acme", "alice").await;
    let (acme, ci) = (name("acme"), name("ci"));
    let acmes = |robot: &'static str| async move {
        let stored = store.robot(&name("acme"), &name(robot)).await;
        stored.expect("robot")
    };
    let t0 = now(store).await;
    let new_ci = NewRobot {
        expires_at: Some(t0 + 3600),
        ..robot("acme", "ci")
    };
    let created = store.create_robot(&new_ci).await.expect("create_robot");
    let window = (t0, now(store).await);
    assert_eq!(created.login(), "acme+ci");
    assert_eq!(created.scopes, new_ci.scopes);
    assert_eq!(created.expires_at, new_ci.expires_at);
    assert_eq!(created.revoked_at, None);
    assert_between(created.created_at, window);

    let stored = acmes("ci").await.expect("acme+ci");
    assert_eq!(stored.robot, created);
    assert_eq!(stored.secret_hash, "sha256-of-acme+ci");
    assert_eq!(acmes("cd").await, None);

    let again = store.create_robot(&robot("acme", "ci")).await;
    assert_already_exists(again, Entity::Robot);
    let nowhere = store.create_robot(&robot("nowhere", "ci")).await;
    assert_not_found(nowhere, Entity::Namespace);
    let no_scopes = NewRobot {
        scopes: Vec::new(),
        ..robot("alice", "ci")
    };
    let alices = store
        .create_robot(&no_scopes)
        .await
        .expect("a user's robot");
    assert_eq!(alices.scopes, []);
    let build = store.create_robot(&robot("acme", "build")).await;
    build.expect("create_robot");
    let logins = |robots: Vec<super::Robot>| robots.iter().map(|r| r.login()).collect::<Vec<_>>();
    let listed = store.robots(&acme).await.expect("robots");
    assert_eq!(logins(listed), ["acme+build", "acme+ci"]);
    let listed = store.robots(&name("alice")).await.expect("robots");
    assert_eq!(listed, [alices]);

    store.revoke_robot(&acme, &ci).await.expect("revoke_robot");
    let revoked = acmes("ci").await.expect("a revoked robot stays").robot;
    let revoked_at = revoked.revoked_at.expect("revoked");
    assert_between(revoked_at, (t0, now(store).await));
    assert!(!revoked.is_active(revoked_at));
    store
        .revoke_robot(&acme, &ci)
        .await
        .expect("revoking again");
    let listed = store.robots(&acme).await.expect("robots");
    assert_eq!(logins(listed), ["acme+build", "acme+ci"]);
    let unknown = store.revoke_robot(&acme, &name("cd")).await;
    assert_not_found(unknown, Entity::Robot);

    store.delete_robot(&acme, &ci).await.expect("delete_robot");
    assert_eq!(acmes("ci").await, None);
    assert_not_found(store.delete_robot(&acme, &ci).await, Entity::Robot);
}

fn session(id: &str, user: &str) -> NewSession {
    NewSession {
        id: id.to_owned(),
        user: name(user),
        secret_hash: format!("sha256-of-{id}"),
        service: "registry.example".to_owned(),
        expires_at: 4_000_000_000,
    }
}

pub(crate) async fn sessions_are_created_read_and_revoked(store: Arc<dyn AccountStore>) {
    let store = &*store;
    user(store, "alice").await;
    user(store, "bob").await;
    let t0 = now(store).await;
    let s1 = store
        .create_session(&session("s1", "alice"))
        .await
        .expect("create");
    assert_between(s1.created_at, (t0, now(store).await));
    assert_eq!(
        (s1.id.as_str(), s1.user.as_str(), s1.secret_hash.as_str()),
        ("s1", "alice", "sha256-of-s1")
    );
    assert_eq!(
        (s1.service.as_str(), s1.expires_at),
        ("registry.example", 4_000_000_000)
    );
    assert_eq!(s1.revoked_at, None);
    assert_eq!(
        store.session("s1").await.expect("session"),
        Some(s1.clone())
    );
    assert_eq!(store.session("s9").await.expect("session"), None);
    assert_already_exists(
        store.create_session(&session("s1", "bob")).await,
        Entity::Session,
    );
    assert_not_found(
        store.create_session(&session("s9", "nobody")).await,
        Entity::User,
    );

    assert!(store.revoke_session("s1").await.expect("revoke"));
    let revoked = store.session("s1").await.expect("session").expect("s1");
    let revoked_at = revoked.revoked_at.expect("revoked");
    assert_between(revoked_at, (t0, now(store).await));
    assert!(store.revoke_session("s1").await.expect("revoke again"));
    assert!(!store.revoke_session("s9").await.expect("revoke"));

    for (id, user) in [("s2", "alice"), ("s3", "alice"), ("s4", "bob")] {
        store
            .create_session(&session(id, user))
            .await
            .expect("create");
    }
    assert_eq!(
        store
            .revoke_sessions_of(&name("alice"))
            .await
            .expect("revoke"),
        2
    );
    assert_eq!(
        store
            .revoke_sessions_of(&name("alice"))
            .await
            .expect("revoke"),
        0
    );
    for id in ["s2", "s3"] {
        let s = store.session(id).await.expect("session").expect("exists");
        assert!(s.revoked_at.is_some(), "{id}");
    }
    let bobs = store.session("s4").await.expect("session").expect("s4");
    assert_eq!(bobs.revoked_at, None);
    assert_eq!(
        store
            .session("s1")
            .await
            .expect("session")
            .and_then(|s| s.revoked_at),
        Some(revoked_at),
        "the first revocation's time stays"
    );
}

// ---- signing keys ----

fn key(kid: &str, created_at: Timestamp) -> StoredSigningKey {
    StoredSigningKey {
        kid: kid.to_owned(),
        algorithm: "EdDSA".to_owned(),
        private_pem: format!("-----BEGIN PRIVATE KEY-----\n{kid}\n-----END PRIVATE KEY-----\n"),
        created_at,
        retired_at: None,
    }
}

pub(crate) async fn signing_keys_start_once_rotate_and_expire(store: Arc<dyn AccountStore>) {
    let store = &*store;
    let keys = || async move { store.signing_keys().await.expect("signing_keys") };
    assert_eq!(keys().await, []);
    let t0 = now(store).await;
    let (k1, k2, k3) = (key("k1", t0 - 20), key("k2", t0 - 10), key("k3", t0));
    assert!(store.add_signing_key(&k1, true).await.expect("add"));
    assert!(!store.add_signing_key(&k2, true).await.expect("add"));
    assert_eq!(keys().await, std::slice::from_ref(&k1));
    assert_already_exists(store.add_signing_key(&k1, false).await, Entity::SigningKey);

    // Rotation: the new key first, then the old one retired.
    assert!(store.add_signing_key(&k2, false).await.expect("add"));
    assert_eq!(keys().await, [k1.clone(), k2.clone()]);
    store
        .retire_signing_keys_except("k2")
        .await
        .expect("retire");
    let after_retiring = keys().await;
    let retired_at = after_retiring[0].retired_at.expect("k1 retired");
    assert_between(retired_at, (t0, now(store).await));
    assert_eq!(after_retiring[1], k2);
    assert!(!store.add_signing_key(&k3, true).await.expect("add"));

    // Keeping a key that is not active would leave none.
    assert_not_found(
        store.retire_signing_keys_except("k1").await,
        Entity::SigningKey,
    );
    assert_not_found(
        store.retire_signing_keys_except("k9").await,
        Entity::SigningKey,
    );
    assert_eq!(keys().await, after_retiring);

    let deleted = store.delete_signing_keys_retired_before(retired_at).await;
    assert_eq!(deleted.expect("delete"), 0);
    let deleted = store
        .delete_signing_keys_retired_before(retired_at + 1)
        .await;
    assert_eq!(deleted.expect("delete"), 1);
    assert_eq!(keys().await, [k2]);
}

// ---- audit ----

fn event(actor: Option<&str>, action: &str, target: &str, outcome: Outcome) -> AuditEvent {
    AuditEvent {
        actor: actor.map(str::to_owned),
        client: Some("192.0.2.7".to_owned()),
        action: action.to_owned(),
        target: target.to_owned(),
        outcome,
        detail: (outcome == Outcome::Denied).then(|| "no grant".to_owned()),
    }
}

pub(crate) async fn audit_records_are_filtered_and_paged_newest_first(
    store: Arc<dyn AccountStore>,
) {
    let store = &*store;
    let events = &[
        event(
            Some("alice"),
            "manifest.put",
            "acme/app:1",
            Outcome::Allowed,
        ),
        event(None, "manifest.get", "acme/app:1", Outcome::Denied),
        event(
            Some("acme+ci"),
            "manifest.put",
            "acme/web:2",
            Outcome::Allowed,
        ),
        event(Some("bob"), "org.create", "acmeco", Outcome::Allowed),
        event(Some("alice"), "blob.delete", "100%/x", Outcome::Denied),
        event(Some("alice"), "blob.delete", "100x/y", Outcome::Allowed),
    ];
    let t0 = now(store).await;
    for e in events {
        store.append_audit(e).await.expect("append_audit");
    }
    let t1 = now(store).await;
    let audit = |query: AuditQuery| async move {
        let query = AuditQuery {
            limit: 100,
            ..query
        };
        store.audit(&query).await.expect("audit")
    };
    let everything = audit(AuditQuery::default()).await;
    assert_eq!(everything.len(), events.len());
    let newest_first: Vec<_> = events.iter().rev().cloned().collect();
    let logged: Vec<_> = everything.iter().map(|r| r.event.clone()).collect();
    assert_eq!(logged, newest_first);
    assert!(
        everything.windows(2).all(|w| w[0].id > w[1].id),
        "ids decrease"
    );
    for record in &everything {
        assert_between(record.at, (t0, t1));
    }
    // Which of `events` a query returns, newest first.
    let matching = |query: AuditQuery| async move {
        let records = audit(query).await;
        let indexes = records.iter().map(|r| {
            let i = events.iter().position(|e| *e == r.event);
            i.expect("a logged event")
        });
        indexes.collect::<Vec<_>>()
    };
    let by_actor = AuditQuery {
        actor: Some("alice".into()),
        ..AuditQuery::default()
    };
    assert_eq!(matching(by_actor).await, [5, 4, 0]);
    let by_action = AuditQuery {
        action: Some("manifest.put".into()),
        ..AuditQuery::default()
    };
    assert_eq!(matching(by_action).await, [2, 0]);
    let under_acme = AuditQuery {
        target_prefix: Some("acme/".into()),
        ..AuditQuery::default()
    };
    assert_eq!(matching(under_acme).await, [2, 1, 0]);
    let acme_anything = AuditQuery {
        target_prefix: Some("acme".into()),
        ..AuditQuery::default()
    };
    assert_eq!(matching(acme_anything).await, [3, 2, 1, 0]);
    // No wildcards: `%` and `_` are themselves.
    let percent = AuditQuery {
        target_prefix: Some("100%".into()),
        ..AuditQuery::default()
    };
    assert_eq!(matching(percent).await, [4]);
    let denied = AuditQuery {
        outcome: Some(Outcome::Denied),
        ..AuditQuery::default()
    };
    assert_eq!(matching(denied).await, [4, 1]);
    let combined = AuditQuery {
        actor: Some("alice".into()),
        outcome: Some(Outcome::Allowed),
        target_prefix: Some("acme/".into()),
        ..AuditQuery::default()
    };
    assert_eq!(matching(combined).await, [0]);
    let in_time = AuditQuery {
        since: Some(t0),
        until: Some(t1),
        ..AuditQuery::default()
    };
    assert_eq!(matching(in_time).await.len(), events.len());
    let later = AuditQuery {
        since: Some(t1 + 1),
        ..AuditQuery::default()
    };
    assert!(matching(later).await.is_empty());
    let earlier = AuditQuery {
        until: Some(t0 - 1),
        ..AuditQuery::default()
    };
    assert!(matching(earlier).await.is_empty());
    assert_eq!(
        store
            .audit(&AuditQuery::default())
            .await
            .expect("audit")
            .len(),
        0,
        "limit 0"
    );

    // Pages of two through `before`, and through a filter.
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let query = AuditQuery {
            before,
            limit: 2,
            ..AuditQuery::default()
        };
        let page = store.audit(&query).await.expect("audit");
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 2);
        before = Some(last.id);
        paged.extend(page);
    }
    assert_eq!(paged, everything);
    let older_of_alice = AuditQuery {
        actor: Some("alice".into()),
        before: Some(everything[1].id),
        ..AuditQuery::default()
    };
    assert_eq!(matching(older_of_alice).await, [0]);
}

// ---- concurrency ----

/// Runs `op(i)` for `i` in `0..n` at once and returns the results in order.
async fn at_once<T, F, Fut>(n: usize, op: F) -> Vec<Result<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(op(i))).collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    results
}

pub(crate) async fn concurrent_claims_of_one_name_admit_one(store: Arc<dyn AccountStore>) {
    user(&*store, "alice").await;
    for round in 0..10 {
        let claimed = format!("name{round}");
        let results = at_once(8, |i| {
            let (store, claimed) = (store.clone(), name(&claimed));
            async move {
                if i % 2 == 0 {
                    let new = NewUser {
                        name: claimed,
                        password_hash: None,
                        admin: false,
                    };
                    store.create_user(&new).await.map(|_| ())
                } else {
                    store.create_org(&claimed, &name("alice")).await.map(|_| ())
                }
            }
        })
        .await;
        let admitted = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(admitted, 1, "round {round}: {results:?}");
        for refused in results.into_iter().filter(Result::is_err) {
            assert!(
                matches!(refused, Err(AccountError::AlreadyExists { .. })),
                "round {round}: {refused:?}"
            );
        }
    }
}

/// Owners demoting each other, or leaving, all at once: some are refused, an owner stays.
pub(crate) async fn concurrent_demotions_keep_an_owner(store: Arc<dyn AccountStore>) {
    let owners_per_org = 4;
    for u in 0..owners_per_org {
        user(&*store, &format!("owner{u}")).await;
    }
    for round in 0..10 {
        let org_name = format!("org{round}");
        org(&*store, &org_name, "owner0").await;
        for u in 1..owners_per_org {
            set_member(&*store, &org_name, &format!("owner{u}"), OrgRole::Owner).await;
        }
        let results = at_once(owners_per_org, |u| {
            let (store, org_name) = (store.clone(), name(&org_name));
            let owner = name(&format!("owner{u}"));
            async move {
                if u % 2 == 0 {
                    store.set_member(&org_name, &owner, OrgRole::Admin).await
                } else {
                    store.remove_member(&org_name, &owner).await
                }
            }
        })
        .await;
        for result in &results {
            assert!(
                matches!(result, Ok(()) | Err(AccountError::Refused(_))),
                "round {round}: {result:?}"
            );
        }
        let left = owners(&*store, &org_name).await;
        assert_eq!(
            left.len(),
            1,
            "round {round}: owners {left:?} after {results:?}"
        );
    }
}

/// One owner deleted while the other is demoted: one of the two is refused.
pub(crate) async fn concurrent_deletion_and_demotion_keep_an_owner(store: Arc<dyn AccountStore>) {
    for round in 0..10 {
        let org_name = format!("org{round}");
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        org(&*store, &org_name, &a).await;
        user(&*store, &b).await;
        set_member(&*store, &org_name, &b, OrgRole::Owner).await;
        let (deleted, demoted) = tokio::join!(
            tokio::spawn({
                let (store, a) = (store.clone(), name(&a));
                async move { store.delete_user(&a).await }
            }),
            tokio::spawn({
                let (store, org_name, b) = (store.clone(), name(&org_name), name(&b));
                async move { store.set_member(&org_name, &b, OrgRole::Member).await }
            }),
        );
        let (deleted, demoted) = (deleted.expect("task"), demoted.expect("task"));
        let left = owners(&*store, &org_name).await;
        assert_eq!(
            left.len(),
            1,
            "round {round}: owners {left:?} after {deleted:?}, {demoted:?}"
        );
        assert!(
            deleted.is_ok() != demoted.is_ok(),
            "round {round}: {deleted:?}, {demoted:?}"
        );
    }
}

pub(crate) async fn concurrent_first_keys_store_one(store: Arc<dyn AccountStore>) {
    let t0 = now(&*store).await;
    // Connections opened beforehand, so the writers below do not queue behind their set-up.
    at_once(8, |_| {
        let store = store.clone();
        async move { store.signing_keys().await }
    })
    .await;
    let results = at_once(8, |i| {
        let store = store.clone();
        async move {
            store
                .add_signing_key(&key(&format!("k{i}"), t0), true)
                .await
        }
    })
    .await;
    let stored = results.iter().filter(|r| matches!(r, Ok(true))).count();
    assert_eq!(stored, 1, "{results:?}");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(store.signing_keys().await.expect("signing_keys").len(), 1);
}
