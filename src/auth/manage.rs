//! Who may call the management API, as pure functions over the caller and the store's facts
//! (the repository rules are [`policy`](super::policy)'s), so its handlers ask and never
//! decide, and the rules are tested without a server.
//!
//! - Robots and anonymous callers may not use the management API at all: a robot is a CI
//!   identity with fixed repository scopes, not an account holder.
//! - A registry admin may do everything.
//! - A user may read itself, change its own password and manage its namespace's robots;
//!   creating, updating (admin, disabled) and deleting users are an admin's.
//! - Any user may create an organisation (it becomes its owner); members may read it, its
//!   owners and admins manage members, teams and robots, and only owners delete it or touch
//!   the owner role.
//! - Repository settings and deletes are for whoever may take every action on the repository
//!   (the namespace's user, the organisation's owners and admins, an `admin` grant).
//! - Quotas are set by registry admins and read by whoever may read the namespace; the audit
//!   log is the registry admins'.

use super::policy::{Principal, role_in};
use crate::accounts::{AccountName, Membership, Namespace, NamespaceKind, OrgRole, RobotScope};
use crate::oci::RepoName;
use crate::oci::scope::{Action, Actions, ResourceScope};

/// Whether `principal` may call the management API at all.
pub fn may_use_api(principal: &Principal) -> bool {
    matches!(principal, Principal::User { .. })
}

/// Something one may do to a user account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserRight {
    Read,
    ChangePassword,
    /// Create, list, revoke and delete the robots of the user's namespace.
    ManageRobots,
    /// Make or unmake an admin, disable or enable.
    Update,
    Delete,
}

/// Creating and listing users.
pub fn may_administer_users(principal: &Principal) -> bool {
    principal.is_admin()
}

pub fn may_on_user(principal: &Principal, user: &AccountName, right: UserRight) -> bool {
    if principal.is_admin() {
        return true;
    }
    let is_self = principal.user_name() == Some(user);
    is_self
        && matches!(
            right,
            UserRight::Read | UserRight::ChangePassword | UserRight::ManageRobots
        )
}

/// Whether changing `user`'s password needs its current one: an admin resets passwords.
pub fn password_change_needs_current(principal: &Principal) -> bool {
    !principal.is_admin()
}

/// Whether a change to `user` would take away the caller's own admin rights (demoting,
/// disabling or deleting itself): refused, so that an admin cannot lock the registry's last
/// admin out by mistake; another admin may do it.
pub fn locks_self_out(principal: &Principal, user: &AccountName, demote_or_disable: bool) -> bool {
    principal.user_name() == Some(user) && demote_or_disable
}

/// Something one may do to an organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrgRight {
    /// The organisation, its members and teams.
    Read,
    /// Members, teams, team members and robots.
    Manage,
    Delete,
}

pub fn may_create_org(principal: &Principal) -> bool {
    may_use_api(principal)
}

/// `role` is the caller's role in the organisation, if it is a member.
pub fn may_on_org(principal: &Principal, role: Option<OrgRole>, right: OrgRight) -> bool {
    if principal.is_admin() {
        return true;
    }
    if !may_use_api(principal) {
        return false;
    }
    match (right, role) {
        (_, None) => false,
        (OrgRight::Read, Some(_)) => true,
        (OrgRight::Manage, Some(role)) => role >= OrgRole::Admin,
        (OrgRight::Delete, Some(role)) => role == OrgRole::Owner,
    }
}

/// Whether a caller of `role` may move a member from `current` to `new` (`None`: not a
/// member, or removed). Beyond [`OrgRight::Manage`], only owners make or unmake owners.
pub fn may_change_member(
    principal: &Principal,
    role: Option<OrgRole>,
    current: Option<OrgRole>,
    new: Option<OrgRole>,
) -> bool {
    if principal.is_admin() || role == Some(OrgRole::Owner) {
        return true;
    }
    may_on_org(principal, role, OrgRight::Manage)
        && current != Some(OrgRole::Owner)
        && new != Some(OrgRole::Owner)
}

pub fn may_set_quota(principal: &Principal) -> bool {
    principal.is_admin()
}

/// Reading a namespace's quota and usage: its user, its organisation's members, admins.
pub fn may_read_namespace(
    principal: &Principal,
    namespace: &Namespace,
    memberships: &[Membership],
) -> bool {
    if principal.is_admin() {
        return true;
    }
    match namespace.kind {
        NamespaceKind::User => principal.user_name() == Some(&namespace.name),
        NamespaceKind::Organization => may_on_org(
            principal,
            role_in(&namespace.name, memberships),
            OrgRight::Read,
        ),
    }
}

pub fn may_read_audit(principal: &Principal) -> bool {
    principal.is_admin()
}

/// `allowed` is what [`policy::allowed`](super::policy::allowed) gives the caller on the
/// repository.
pub fn may_read_repository(principal: &Principal, allowed: &Actions) -> bool {
    may_use_api(principal) && allowed.contains(&Action::Pull)
}

/// Changing a repository's visibility and grants, or deleting it: every action on it.
pub fn may_manage_repository(principal: &Principal, allowed: &Actions) -> bool {
    may_use_api(principal) && Action::ALL.iter().all(|a| allowed.contains(a))
}

/// Why a robot scope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RobotScopeError {
    #[error("scope {0:?} is not repository:<name or prefix/*>:<actions>")]
    Malformed(String),
    #[error("scope {0:?} names an action other than pull, push, delete or *")]
    UnknownAction(String),
    #[error("scope {scope:?} reaches outside the namespace {namespace}")]
    OutsideNamespace { scope: String, namespace: String },
}

/// A robot's scope from its text (`repository:acme/*:pull,push`, `repository:acme/app:pull`):
/// a repository scope with known actions, on one repository or a name prefix, inside the
/// robot's own namespace.
pub fn robot_scope(text: &str, namespace: &AccountName) -> Result<RobotScope, RobotScopeError> {
    let malformed = || RobotScopeError::Malformed(text.to_owned());
    let scope = ResourceScope::parse(text).map_err(|_| malformed())?;
    let actions_text = text.rsplit_once(':').map_or("", |(_, actions)| actions);
    let known = |a: &str| a == "*" || a.parse::<Action>().is_ok();
    if !actions_text.split(',').filter(|a| !a.is_empty()).all(known) {
        return Err(RobotScopeError::UnknownAction(text.to_owned()));
    }
    if !scope.is_repository() || scope.actions.is_empty() {
        return Err(malformed());
    }
    let repository = scope.name.strip_suffix("/*").unwrap_or(&scope.name);
    let repo: RepoName = repository.parse().map_err(|_| malformed())?;
    if repo.namespace() != namespace.as_str() {
        return Err(RobotScopeError::OutsideNamespace {
            scope: text.to_owned(),
            namespace: namespace.to_string(),
        });
    }
    Ok(RobotScope {
        repository: scope.name,
        actions: scope.actions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::RobotScope;

    fn name(s: &str) -> AccountName {
        s.parse().unwrap()
    }

    fn user(s: &str) -> Principal {
        Principal::User {
            name: name(s),
            admin: false,
        }
    }

    fn admin() -> Principal {
        Principal::User {
            name: name("root"),
            admin: true,
        }
    }

    fn robot() -> Principal {
        Principal::Robot {
            namespace: name("acme"),
            name: name("ci"),
            scopes: vec![RobotScope {
                repository: "acme/*".into(),
                actions: Actions::from(Action::ALL),
            }],
        }
    }

    #[test]
    fn robots_and_anonymous_callers_are_refused_everything() {
        let all = Actions::from(Action::ALL);
        for who in [robot(), Principal::Anonymous] {
            assert!(!may_use_api(&who));
            assert!(!may_create_org(&who));
            assert!(!may_on_org(&who, Some(OrgRole::Owner), OrgRight::Read));
            assert!(!may_read_repository(&who, &all));
            assert!(!may_manage_repository(&who, &all));
        }
    }

    #[test]
    fn users_read_themselves_and_admins_do_the_rest() {
        let alice = name("alice");
        for right in [
            UserRight::Read,
            UserRight::ChangePassword,
            UserRight::ManageRobots,
        ] {
            assert!(may_on_user(&user("alice"), &alice, right));
            assert!(!may_on_user(&user("bob"), &alice, right));
        }
        for right in [UserRight::Update, UserRight::Delete] {
            assert!(!may_on_user(&user("alice"), &alice, right));
            assert!(may_on_user(&admin(), &alice, right));
        }
        assert!(!may_administer_users(&user("alice")));
        assert!(may_administer_users(&admin()));
        assert!(password_change_needs_current(&user("alice")));
        assert!(locks_self_out(&admin(), &name("root"), true));
        assert!(!locks_self_out(&admin(), &name("root"), false));
        assert!(!locks_self_out(&admin(), &alice, true));
        assert!(!password_change_needs_current(&admin()));
    }

    #[test]
    fn organisation_rights_follow_the_role() {
        let alice = user("alice");
        let expect = [
            (None, [false, false, false]),
            (Some(OrgRole::Member), [true, false, false]),
            (Some(OrgRole::Admin), [true, true, false]),
            (Some(OrgRole::Owner), [true, true, true]),
        ];
        for (role, rights) in expect {
            for (right, allowed) in [OrgRight::Read, OrgRight::Manage, OrgRight::Delete]
                .into_iter()
                .zip(rights)
            {
                assert_eq!(
                    may_on_org(&alice, role, right),
                    allowed,
                    "{role:?} {right:?}"
                );
            }
        }
        assert!(may_on_org(&admin(), None, OrgRight::Delete));
    }

    #[test]
    fn only_owners_touch_the_owner_role() {
        let alice = user("alice");
        let (member, org_admin, owner) = (
            Some(OrgRole::Member),
            Some(OrgRole::Admin),
            Some(OrgRole::Owner),
        );
        assert!(may_change_member(&alice, org_admin, None, member));
        assert!(may_change_member(&alice, org_admin, member, org_admin));
        assert!(may_change_member(&alice, org_admin, member, None));
        assert!(!may_change_member(&alice, org_admin, member, owner));
        assert!(!may_change_member(&alice, org_admin, owner, None));
        assert!(may_change_member(&alice, owner, owner, member));
        assert!(!may_change_member(&alice, member, None, member));
        assert!(may_change_member(&admin(), None, owner, None));
    }

    #[test]
    fn namespaces_are_read_by_their_people() {
        let org = Namespace {
            name: name("acme"),
            kind: NamespaceKind::Organization,
            quota_bytes: None,
        };
        let member = [Membership {
            org: name("acme"),
            role: OrgRole::Member,
        }];
        assert!(may_read_namespace(&user("bob"), &org, &member));
        assert!(!may_read_namespace(&user("bob"), &org, &[]));
        let alice = Namespace {
            name: name("alice"),
            kind: NamespaceKind::User,
            quota_bytes: None,
        };
        assert!(may_read_namespace(&user("alice"), &alice, &[]));
        assert!(!may_read_namespace(&user("bob"), &alice, &member));
        assert!(may_read_namespace(&admin(), &alice, &[]));
        assert!(!may_set_quota(&user("alice")) && may_set_quota(&admin()));
    }

    #[test]
    fn robot_scopes_stay_in_their_namespace() {
        let acme = name("acme");
        let scope = robot_scope("repository:acme/*:pull,push", &acme).unwrap();
        assert_eq!(scope.repository, "acme/*");
        assert_eq!(scope.actions, Actions::from([Action::Pull, Action::Push]));
        let one = robot_scope("repository:acme/team/app:*", &acme).unwrap();
        assert_eq!(
            (one.repository.as_str(), one.actions),
            ("acme/team/app", Actions::from(Action::ALL))
        );
        for outside in [
            "repository:other/*:pull",
            "repository:acmex/app:pull",
            "repository:acme0/*:pull",
        ] {
            assert!(
                matches!(
                    robot_scope(outside, &acme),
                    Err(RobotScopeError::OutsideNamespace { .. })
                ),
                "{outside}"
            );
        }
        assert!(matches!(
            robot_scope("repository:acme/app:pull,fly", &acme),
            Err(RobotScopeError::UnknownAction(_))
        ));
        for malformed in [
            "acme/app",
            "registry:catalog:*",
            "repository:acme/app:",
            "repository:ACME/app:pull",
            "repository:*:pull",
        ] {
            assert!(
                matches!(
                    robot_scope(malformed, &acme),
                    Err(RobotScopeError::Malformed(_))
                ),
                "{malformed}"
            );
        }
    }

    #[test]
    fn repositories_are_managed_with_every_action() {
        let alice = user("alice");
        let pull = Actions::from([Action::Pull]);
        let write = Actions::from([Action::Pull, Action::Push]);
        assert!(may_read_repository(&alice, &pull));
        assert!(!may_read_repository(&alice, &Actions::new()));
        assert!(!may_manage_repository(&alice, &write));
        assert!(may_manage_repository(&alice, &Actions::from(Action::ALL)));
    }
}
