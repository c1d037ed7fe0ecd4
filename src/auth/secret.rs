//! Random secrets (robot tokens, refresh tokens) and how they are kept: only their SHA-256
//! is stored, and a presented secret is compared in constant time.

use aws_lc_rs::constant_time;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// `N` bytes from the operating system's generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The system generator fails only when the kernel has no entropy source at all, where
    // nothing secure can go on.
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random generator failed");
    bytes
}

/// 256 random bits, URL-safe base64 (43 characters).
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// What the store keeps of a secret: SHA-256, hex.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` is the one whose [`digest`] is `stored`, without leaking through timing
/// how much of it matched.
pub fn matches(secret: &str, stored: &str) -> bool {
    constant_time::verify_slices_are_equal(digest(secret).as_bytes(), stored.as_bytes()).is_ok()
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn same(presented: &str, expected: &str) -> bool {
    constant_time::verify_slices_are_equal(presented.as_bytes(), expected.as_bytes()).is_ok()
}

/// A token with a public id to look it up by and a secret to check: `<id>.<secret>`.
pub struct SplitToken {
    pub id: String,
    pub secret: String,
}

impl SplitToken {
    pub fn generate() -> SplitToken {
        SplitToken {
            id: URL_SAFE_NO_PAD.encode(random_bytes::<12>()),
            secret: random_token(),
        }
    }

    pub fn parse(token: &str) -> Option<SplitToken> {
        let (id, secret) = token.split_once('.')?;
        let plausible = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (plausible(id) && plausible(secret)).then(|| SplitToken {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    pub fn to_token(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_their_digest() {
        let secret = random_token();
        assert_eq!(secret.len(), 43);
        let stored = digest(&secret);
        assert!(matches(&secret, &stored));
        assert!(!matches(&random_token(), &stored));
        assert!(!matches(&secret, "short"));
    }

    #[test]
    fn split_tokens_round_trip_and_refuse_junk() {
        let token = SplitToken::generate();
        let parsed = SplitToken::parse(&token.to_token()).unwrap();
        assert_eq!((parsed.id, parsed.secret), (token.id, token.secret));
        for junk in [
            "",
            "nodot",
            ".x",
            "x.",
            "a.b.c",
            "a b.c",
            &format!("a.{}", "x".repeat(65)),
        ] {
            assert!(SplitToken::parse(junk).is_none(), "{junk}");
        }
    }
}
