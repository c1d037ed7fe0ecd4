//! Who may do what to a repository: the tenant model as one pure function over the facts the
//! account store holds, so the rules are tested without a database.
//!
//! - A registry admin may do everything, everywhere.
//! - A user owns the namespace of its own name.
//! - An organisation's owners and admins may do everything in its namespace; its members may
//!   pull every repository of it; users and teams get more through repository grants.
//! - A public repository may be pulled by anyone, anonymous callers included.
//! - A robot may do what its scopes say, inside its own namespace only.
//! - Pushing to a namespace that is neither a user nor an organisation is for admins only.

use crate::accounts::{
    AccountName, Grantee, Membership, Namespace, NamespaceKind, OrgRole, RepositorySettings,
    RobotScope, TeamRef, Visibility,
};
use crate::oci::RepoName;
use crate::oci::scope::{Action, Actions};

/// The caller, once its credentials were checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Principal {
    Anonymous,
    User {
        name: AccountName,
        admin: bool,
    },
    Robot {
        namespace: AccountName,
        name: AccountName,
        scopes: Vec<RobotScope>,
    },
}

impl Principal {
    /// The token subject and audit actor: the user name, `<namespace>+<robot>`, or empty.
    pub fn subject(&self) -> String {
        match self {
            Principal::Anonymous => String::new(),
            Principal::User { name, .. } => name.to_string(),
            Principal::Robot {
                namespace, name, ..
            } => format!("{namespace}+{name}"),
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::User { admin: true, .. })
    }

    pub fn user_name(&self) -> Option<&AccountName> {
        match self {
            Principal::User { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// What the store knows that bears on one (principal, repository) decision.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The repository's namespace, when it is a user or an organisation.
    pub namespace: Option<Namespace>,
    pub settings: RepositorySettings,
    /// The user's organisations (empty for other principals).
    pub memberships: Vec<Membership>,
    /// The user's teams (empty for other principals).
    pub teams: Vec<TeamRef>,
}

/// Every action `principal` may take on `repo`.
pub fn allowed(principal: &Principal, repo: &RepoName, facts: &Facts) -> Actions {
    let mut actions = Actions::new();
    if facts.settings.visibility == Visibility::Public {
        actions.insert(Action::Pull);
    }
    match principal {
        Principal::Anonymous => {}
        Principal::User { admin: true, .. } => actions.extend(Action::ALL),
        Principal::User { name, .. } => actions.extend(user_actions(name, facts)),
        Principal::Robot {
            namespace, scopes, ..
        } => {
            if namespace.as_str() == repo.namespace() {
                for scope in scopes.iter().filter(|s| s.covers(repo)) {
                    actions.extend(scope.actions.iter().copied());
                }
            }
        }
    }
    actions
}

fn user_actions(user: &AccountName, facts: &Facts) -> Actions {
    let Some(namespace) = &facts.namespace else {
        return Actions::new();
    };
    let mut actions = Actions::new();
    match namespace.kind {
        NamespaceKind::User if namespace.name == *user => actions.extend(Action::ALL),
        NamespaceKind::User => {}
        NamespaceKind::Organization => match role_in(&namespace.name, &facts.memberships) {
            Some(OrgRole::Owner | OrgRole::Admin) => actions.extend(Action::ALL),
            Some(OrgRole::Member) => {
                actions.insert(Action::Pull);
            }
            None => {}
        },
    }
    for grant in &facts.settings.grants {
        let applies = match &grant.grantee {
            Grantee::User { name } => name == user,
            Grantee::Team { team } => facts
                .teams
                .iter()
                .any(|t| t.org == namespace.name && t.team == *team),
        };
        if applies {
            actions.extend(grant.permission.actions());
        }
    }
    actions
}

/// The user's role in `org`, from its memberships.
pub fn role_in(org: &AccountName, memberships: &[Membership]) -> Option<OrgRole> {
    memberships.iter().find(|m| m.org == *org).map(|m| m.role)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{Grant, Permission};

    fn name(s: &str) -> AccountName {
        s.parse().unwrap()
    }

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    fn user(s: &str) -> Principal {
        Principal::User {
            name: name(s),
            admin: false,
        }
    }

    fn org_facts(memberships: &[(&str, OrgRole)]) -> Facts {
        Facts {
            namespace: Some(Namespace {
                name: name("acme"),
                kind: NamespaceKind::Organization,
                quota_bytes: None,
            }),
            memberships: memberships
                .iter()
                .map(|(org, role)| Membership {
                    org: name(org),
                    role: *role,
                })
                .collect(),
            ..Facts::default()
        }
    }

    const ALL: [Action; 3] = Action::ALL;

    #[test]
    fn users_own_their_namespace_only() {
        let facts = Facts {
            namespace: Some(Namespace {
                name: name("alice"),
                kind: NamespaceKind::User,
                quota_bytes: None,
            }),
            ..Facts::default()
        };
        assert_eq!(
            allowed(&user("alice"), &repo("alice/app"), &facts),
            Actions::from(ALL)
        );
        assert!(allowed(&user("bob"), &repo("alice/app"), &facts).is_empty());
        assert!(allowed(&Principal::Anonymous, &repo("alice/app"), &facts).is_empty());
    }

    #[test]
    fn organisation_roles() {
        let app = repo("acme/app");
        let owner = org_facts(&[("acme", OrgRole::Owner)]);
        assert_eq!(allowed(&user("o"), &app, &owner), Actions::from(ALL));
        let admin = org_facts(&[("acme", OrgRole::Admin)]);
        assert_eq!(allowed(&user("a"), &app, &admin), Actions::from(ALL));
        let member = org_facts(&[("acme", OrgRole::Member)]);
        assert_eq!(
            allowed(&user("m"), &app, &member),
            Actions::from([Action::Pull])
        );
        let other_org = org_facts(&[("other", OrgRole::Owner)]);
        assert!(allowed(&user("x"), &app, &other_org).is_empty());
    }

    #[test]
    fn grants_to_users_and_teams() {
        let app = repo("acme/app");
        let mut facts = org_facts(&[("acme", OrgRole::Member)]);
        facts.settings.grants = vec![
            Grant {
                grantee: Grantee::Team { team: name("ci") },
                permission: Permission::Write,
            },
            Grant {
                grantee: Grantee::User {
                    name: name("carol"),
                },
                permission: Permission::Admin,
            },
        ];
        assert_eq!(
            allowed(&user("m"), &app, &facts),
            Actions::from([Action::Pull])
        );
        facts.teams = vec![TeamRef {
            org: name("acme"),
            team: name("ci"),
        }];
        assert_eq!(
            allowed(&user("m"), &app, &facts),
            Actions::from([Action::Pull, Action::Push])
        );
        // A team of the same name in another organisation grants nothing here.
        facts.teams = vec![TeamRef {
            org: name("evil"),
            team: name("ci"),
        }];
        assert_eq!(
            allowed(&user("m"), &app, &facts),
            Actions::from([Action::Pull])
        );
        assert_eq!(allowed(&user("carol"), &app, &facts), Actions::from(ALL));
    }

    #[test]
    fn public_repositories_are_pullable_by_anyone() {
        let mut facts = org_facts(&[]);
        facts.settings.visibility = Visibility::Public;
        for who in [Principal::Anonymous, user("stranger")] {
            assert_eq!(
                allowed(&who, &repo("acme/app"), &facts),
                Actions::from([Action::Pull])
            );
        }
    }

    #[test]
    fn unknown_namespaces_are_for_admins() {
        let facts = Facts::default();
        assert!(allowed(&user("alice"), &repo("nobody/app"), &facts).is_empty());
        let admin = Principal::User {
            name: name("root"),
            admin: true,
        };
        assert_eq!(
            allowed(&admin, &repo("nobody/app"), &facts),
            Actions::from(ALL)
        );
    }

    #[test]
    fn robots_stay_in_their_scopes_and_namespace() {
        let robot = Principal::Robot {
            namespace: name("acme"),
            name: name("ci"),
            scopes: vec![RobotScope {
                repository: "acme/*".into(),
                actions: Actions::from([Action::Pull, Action::Push]),
            }],
        };
        let facts = org_facts(&[]);
        assert_eq!(
            allowed(&robot, &repo("acme/team/app"), &facts),
            Actions::from([Action::Pull, Action::Push])
        );
        assert!(allowed(&robot, &repo("acmex/app"), &facts).is_empty());
        let escaping = Principal::Robot {
            namespace: name("acme"),
            name: name("ci"),
            scopes: vec![RobotScope {
                repository: "other/*".into(),
                actions: Actions::from(ALL),
            }],
        };
        assert!(allowed(&escaping, &repo("other/app"), &facts).is_empty());
        assert_eq!(robot.subject(), "acme+ci");
    }
}
