//! What the `/v2/` gate decided for a request, and the admissions a node remembers.
//!
//! A client repeats the same request with the same `Authorization` header many times (every
//! layer HEAD of a pull, every blob of a mirror). Checking it afresh means a token hash and
//! claims clone, two epoch-keyed lookups and a repository-name parse: more CPU than answering
//! a blob HEAD. So an admission is remembered whole, keyed by the account epoch, the SHA-256 of
//! the header and the requirement, and a repeat costs one hash and one lookup. The epoch in
//! the key ends it with every change to who may do what, exactly like the decisions it was
//! made of; a bearer token's admission also ends when the token expires.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::access::Requirement;
use super::service::Identity;

/// What the gate decided for a request the caller may make.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// Who asked; `None` on an open registry (no users yet).
    pub identity: Option<Arc<Identity>>,
    /// Whether a mount may take the blob from its source repository.
    pub may_mount: bool,
}

/// Identifies one remembered admission. The header is kept only as its digest, so no
/// password or token stays in memory past its request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AdmissionKey {
    epoch: Arc<str>,
    credentials: [u8; 32],
    requirement: Requirement,
}

impl AdmissionKey {
    /// `authorization`: the request's `Authorization` header, empty when it sent none.
    pub(super) fn new(epoch: Arc<str>, authorization: &[u8], requirement: &Requirement) -> Self {
        AdmissionKey {
            epoch,
            credentials: Sha256::digest(authorization).into(),
            requirement: requirement.clone(),
        }
    }
}

#[derive(Debug)]
struct Remembered {
    admission: Admission,
    /// Unix seconds after which the admission no longer holds (its token's expiry).
    expires_at: Option<i64>,
}

pub(super) struct Admissions {
    remembered: moka::sync::Cache<AdmissionKey, Arc<Remembered>>,
}

/// How many admissions a node remembers, and for how long at most: no longer than it keeps a
/// verified token ([`super::token`]), so a key deleted by a rotation ends them as soon.
const ADMISSIONS: u64 = 100_000;
const ADMISSION_TTL: Duration = Duration::from_secs(60);

impl Default for Admissions {
    fn default() -> Self {
        Admissions {
            remembered: moka::sync::Cache::builder()
                .max_capacity(ADMISSIONS)
                .time_to_live(ADMISSION_TTL)
                .build(),
        }
    }
}

impl Admissions {
    pub(super) fn recall(&self, key: &AdmissionKey, now: i64) -> Option<Admission> {
        let remembered = self.remembered.get(key)?;
        if remembered.expires_at.is_some_and(|at| at <= now) {
            self.remembered.invalidate(key);
            return None;
        }
        Some(remembered.admission.clone())
    }

    pub(super) fn remember(&self, key: AdmissionKey, admission: &Admission) {
        let expires_at = admission
            .identity
            .as_ref()
            .and_then(|identity| identity.token_expires_at);
        let remembered = Remembered {
            admission: admission.clone(),
            expires_at,
        };
        self.remembered.insert(key, Arc::new(remembered));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;
    use crate::oci::scope::{Action, ResourceScope};

    fn requirement(name: &str) -> Requirement {
        Requirement {
            needed: vec![ResourceScope::repository(name, [Action::Pull])],
            ..Requirement::default()
        }
    }

    fn admitted(expires_at: Option<i64>) -> Admission {
        Admission {
            identity: Some(Arc::new(Identity {
                principal: Principal::Anonymous,
                token_access: Some(Vec::new()),
                token_expires_at: expires_at,
            })),
            may_mount: false,
        }
    }

    #[test]
    fn an_admission_is_recalled_only_for_the_same_epoch_header_and_requirement() {
        let admissions = Admissions::default();
        let key = |epoch: &str, header: &str, repo: &str| {
            AdmissionKey::new(epoch.into(), header.as_bytes(), &requirement(repo))
        };
        admissions.remember(key("e1", "Bearer a", "x/y"), &admitted(None));
        assert_eq!(
            admissions.recall(&key("e1", "Bearer a", "x/y"), 0),
            Some(admitted(None))
        );
        assert_eq!(admissions.recall(&key("e2", "Bearer a", "x/y"), 0), None);
        assert_eq!(admissions.recall(&key("e1", "Bearer b", "x/y"), 0), None);
        assert_eq!(admissions.recall(&key("e1", "Bearer a", "x/z"), 0), None);
    }

    #[test]
    fn an_admission_ends_when_its_token_expires() {
        let admissions = Admissions::default();
        let key = AdmissionKey::new("e".into(), b"Bearer t", &requirement("x/y"));
        admissions.remember(key.clone(), &admitted(Some(100)));
        assert!(admissions.recall(&key, 99).is_some());
        assert_eq!(admissions.recall(&key, 100), None);
        assert_eq!(admissions.recall(&key, 99), None, "forgotten once expired");
    }
}
