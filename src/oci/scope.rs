//! Token scopes (`repository:samalba/my-app:pull,push`): what a client asks a token service
//! for, what a `WWW-Authenticate` challenge names and what a token's `access` claim grants
//! (docker-auth-scope.md). Shared by the token service, the core's authorization and the edge.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What may be done to a repository. `*` in a scope means all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, ScopeError> {
        match s {
            "pull" => Ok(Action::Pull),
            "push" => Ok(Action::Push),
            "delete" => Ok(Action::Delete),
            other => Err(ScopeError::UnknownAction(other.to_owned())),
        }
    }
}

/// A set of actions, ordered so that scopes print the same way every time.
pub type Actions = BTreeSet<Action>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope {0:?} is not type:name:actions")]
    Malformed(String),
    #[error("unknown action {0:?} (pull, push, delete or *)")]
    UnknownAction(String),
}

/// One resource scope: a type (`repository`, `registry`), a name and the actions on it.
///
/// Actions a registry does not know (a client may ask for `*` or `metadata-read`) are kept
/// apart in `unknown` so parsing never fails on them: the token service grants none of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceScope {
    pub kind: String,
    pub name: String,
    pub actions: Actions,
}

impl ResourceScope {
    pub fn repository(name: impl Into<String>, actions: impl IntoIterator<Item = Action>) -> Self {
        ResourceScope {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.into_iter().collect(),
        }
    }

    pub fn is_repository(&self) -> bool {
        self.kind == "repository"
    }

    /// Parses one scope. The name may hold a `:` (a host's port), so the type is what comes
    /// before the first `:` and the actions what comes after the last. Unknown actions are
    /// dropped (nothing grants them); `*` means every action.
    pub fn parse(text: &str) -> Result<ResourceScope, ScopeError> {
        let malformed = || ScopeError::Malformed(text.to_owned());
        let (kind, rest) = text.split_once(':').ok_or_else(malformed)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(malformed)?;
        // `repository(plugin)`: the class is deprecated and ignored.
        let kind = kind.split_once('(').map_or(kind, |(kind, _)| kind);
        let valid_kind = !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphanumeric());
        if !valid_kind || name.is_empty() {
            return Err(malformed());
        }
        let mut parsed = Actions::new();
        for action in actions.split(',').filter(|a| !a.is_empty()) {
            if action == "*" {
                parsed.extend(Action::ALL);
            } else if let Ok(action) = action.parse() {
                parsed.insert(action);
            }
        }
        Ok(ResourceScope {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions: parsed,
        })
    }

    /// Parses a space-separated scope list (a `scope` parameter may hold several).
    pub fn parse_list(text: &str) -> Result<Vec<ResourceScope>, ScopeError> {
        text.split(' ')
            .filter(|s| !s.is_empty())
            .map(ResourceScope::parse)
            .collect()
    }
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:", self.kind, self.name)?;
        for (i, action) in self.actions.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(action.as_str())?;
        }
        Ok(())
    }
}

/// One entry of a token's `access` claim (docker-auth-jwt.md): the JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    /// Kept as strings: a token may carry actions this build does not know.
    pub actions: Vec<String>,
}

impl From<&ResourceScope> for AccessEntry {
    fn from(scope: &ResourceScope) -> Self {
        AccessEntry {
            kind: scope.kind.clone(),
            name: scope.name.clone(),
            actions: scope
                .actions
                .iter()
                .map(|a| a.as_str().to_owned())
                .collect(),
        }
    }
}

impl AccessEntry {
    /// Whether this entry grants `action` on repository `name`.
    pub fn grants(&self, name: &str, action: Action) -> bool {
        self.kind == "repository"
            && self.name == name
            && self.actions.iter().any(|a| a == action.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_examples() {
        let scope = ResourceScope::parse("repository:samalba/my-app:pull,push").unwrap();
        assert_eq!(scope.kind, "repository");
        assert_eq!(scope.name, "samalba/my-app");
        assert_eq!(scope.actions, Actions::from([Action::Pull, Action::Push]));
        assert_eq!(scope.to_string(), "repository:samalba/my-app:pull,push");
    }

    #[test]
    fn a_port_in_the_name_is_kept() {
        let scope = ResourceScope::parse("repository:localhost:5000/app:pull").unwrap();
        assert_eq!(scope.name, "localhost:5000/app");
        assert_eq!(scope.actions, Actions::from([Action::Pull]));
    }

    #[test]
    fn resource_classes_are_ignored() {
        let scope = ResourceScope::parse("repository(plugin):a/b:pull").unwrap();
        assert_eq!(scope.kind, "repository");
    }

    #[test]
    fn star_means_every_action_and_unknown_actions_are_dropped() {
        let all = ResourceScope::parse("repository:a:*").unwrap();
        assert_eq!(all.actions, Actions::from(Action::ALL));
        let odd = ResourceScope::parse("registry:catalog:*,metadata-read").unwrap();
        assert_eq!(odd.kind, "registry");
        let unknown = ResourceScope::parse("repository:a:metadata-read").unwrap();
        assert!(unknown.actions.is_empty());
    }

    #[test]
    fn malformed_scopes_are_errors() {
        for text in [
            "repository",
            "repository:a",
            ":a:pull",
            "repo sitory:a:pull",
            "x::pull",
        ] {
            assert!(ResourceScope::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn lists_are_space_separated() {
        let list = ResourceScope::parse_list("repository:a:pull  repository:b:push").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].name, "b");
        assert!(ResourceScope::parse_list("").unwrap().is_empty());
    }

    #[test]
    fn access_entries_grant_only_their_repository_and_actions() {
        let entry = AccessEntry::from(&ResourceScope::repository("a/b", [Action::Pull]));
        assert!(entry.grants("a/b", Action::Pull));
        assert!(!entry.grants("a/b", Action::Push));
        assert!(!entry.grants("a/bc", Action::Pull));
    }
}
