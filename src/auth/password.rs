//! Password hashes: argon2id in PHC strings. Hashing costs tens of milliseconds of CPU on
//! purpose, so callers run it off the async threads ([`hash`] and [`verify`] are blocking).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::LazyLock;

use super::secret;

/// Shortest password accepted for a new user or a password change.
pub const MIN_PASSWORD_LEN: usize = 8;

/// Longest password accepted: argon2 takes any length, but hashing megabytes per login
/// attempt would be a denial of service.
pub const MAX_PASSWORD_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("a password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters long")]
    Length,
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// OWASP's argon2id recommendation (19 MiB, two passes, one lane).
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// 32 bytes derived from `secret` under a fixed, purpose-naming `salt` (argon2id, as for
/// passwords: every guess at the secret costs an argon2 run). Blocking.
pub fn derive_key(secret: &str, salt: &[u8]) -> Result<[u8; 32], PasswordError> {
    let mut key = [0u8; 32];
    hasher()
        .hash_password_into(secret.as_bytes(), salt, &mut key)
        .map_err(|e| PasswordError::Hashing(e.to_string()))?;
    Ok(key)
}

/// Checks a new password's length.
pub fn check_new(password: &str) -> Result<(), PasswordError> {
    let len = password.chars().count();
    if (MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&len) {
        Ok(())
    } else {
        Err(PasswordError::Length)
    }
}

/// The PHC string of `password` under a fresh random salt. Blocking.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    check_new(password)?;
    let salt = SaltString::encode_b64(&secret::random_bytes::<16>())
        .map_err(|e| PasswordError::Hashing(e.to_string()))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hashing(e.to_string()))
}

/// A hash of no one's password, verified against when the user does not exist or has no
/// password, so that a wrong user name costs the same time as a wrong password.
static DECOY: LazyLock<String> = LazyLock::new(|| {
    hash(&secret::random_token()).unwrap_or_else(|_| {
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG".to_owned()
    })
});

/// Whether `password` matches `stored` (a PHC string); `None` checks against a decoy and
/// fails. Blocking. An unreadable stored hash fails like a wrong password.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    let matches = |phc: &str| {
        PasswordHash::new(phc).is_ok_and(|parsed| {
            hasher()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    };
    match stored {
        Some(phc) if password.len() <= MAX_PASSWORD_LEN * 4 => matches(phc),
        _ => {
            matches(&DECOY);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_their_password() {
        let stored = hash("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify("correct horse", Some(&stored)));
        assert!(!verify("correct horsE", Some(&stored)));
        assert!(!verify("correct horse", None));
        assert!(!verify("correct horse", Some("not a phc string")));
    }

    #[test]
    fn salts_differ() {
        assert_ne!(hash("password1").unwrap(), hash("password1").unwrap());
    }

    #[test]
    fn lengths_are_checked() {
        assert!(matches!(hash("short"), Err(PasswordError::Length)));
        assert!(check_new(&"x".repeat(MAX_PASSWORD_LEN + 1)).is_err());
        assert!(check_new("eight ch").is_ok());
    }
}
