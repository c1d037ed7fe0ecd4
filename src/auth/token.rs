//! Access tokens: JWTs per docker-auth-jwt.md — `iss`, `sub`, `aud`, `exp`, `nbf`, `iat`,
//! `jti` and the `access` claim — signed with the ring's signing key and verified against
//! any key of the ring. Only the ring's algorithm is accepted, so `alg: none` and an HMAC
//! token keyed with a public key are refused before any signature is checked.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::{ALGORITHM, KeyRing, VerifyingKeys};
use super::secret;
use crate::oci::scope::AccessEntry;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user, `<namespace>+<robot>`, or empty for an anonymous token.
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<AccessEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token names no key this registry knows")]
    UnknownKey,
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// Who issues and who accepts tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenParties {
    /// `iss`: names this registry's token service.
    pub issuer: String,
    /// `aud`: the service a token is for (the challenge's `service`).
    pub service: String,
}

/// Allowed clock difference between the node that issued a token and the one checking it.
const LEEWAY_SECONDS: u64 = 30;

pub fn issue(
    ring: &KeyRing,
    parties: &TokenParties,
    subject: &str,
    access: Vec<AccessEntry>,
    now: i64,
    lifetime_seconds: i64,
) -> Result<String, TokenError> {
    let key = ring.signing();
    let mut header = Header::new(ALGORITHM);
    header.kid = Some(key.kid.clone());
    let claims = Claims {
        iss: parties.issuer.clone(),
        sub: subject.to_owned(),
        aud: parties.service.clone(),
        exp: now + lifetime_seconds,
        nbf: now,
        iat: now,
        jti: secret::random_token(),
        access,
    };
    Ok(jsonwebtoken::encode(&header, &claims, key.encoding())?)
}

/// The claims of a token this registry issued for `parties.service`, unexpired, signed by one
/// of `keys` (a node's ring, or an edge's copy of the published keys).
pub fn verify(
    keys: &impl VerifyingKeys,
    parties: &TokenParties,
    token: &str,
) -> Result<Claims, TokenError> {
    let header = jsonwebtoken::decode_header(token)?;
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| keys.verifier(kid))
        .ok_or(TokenError::UnknownKey)?;
    let mut validation = Validation::new(ALGORITHM);
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_nbf = true;
    validation.set_audience(&[&parties.service]);
    validation.set_issuer(&[&parties.issuer]);
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
    Ok(jsonwebtoken::decode::<Claims>(token, key, &validation)?.claims)
}

/// Tokens whose signature and claims checked out, by their SHA-256, until they expire (at most
/// [`VERIFIED_TOKEN_TTL`]): a client sends the same token with every request, and an Ed25519
/// check costs more than answering the request. Shared by the cores and the edge.
pub struct VerifiedTokens {
    remembered: moka::sync::Cache<String, Arc<Claims>>,
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        VerifiedTokens {
            remembered: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_TOKENS)
                .time_to_live(VERIFIED_TOKEN_TTL)
                .build(),
        }
    }
}

impl VerifiedTokens {
    /// [`verify`], or the claims it gave for this token before while they are unexpired.
    pub fn verify(
        &self,
        keys: &impl VerifyingKeys,
        parties: &TokenParties,
        token: &str,
    ) -> Result<Claims, TokenError> {
        let key = secret::digest(token);
        if let Some(claims) = self.remembered.get(&key)
            && claims.exp > unix_now()
        {
            return Ok((*claims).clone());
        }
        let claims = verify(keys, parties, token)?;
        self.remembered.insert(key, Arc::new(claims.clone()));
        Ok(claims)
    }
}

/// How many verified tokens a node remembers, and for how long at most (a token's own expiry
/// ends it sooner; a key deleted by a rotation stops its tokens within this).
const VERIFIED_TOKENS: u64 = 100_000;
const VERIFIED_TOKEN_TTL: Duration = Duration::from_secs(60);

/// This node's clock, for the expiry of remembered tokens (issuers stamp tokens with the
/// store's clock; verification allows for the difference).
pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::SigningKey;
    use crate::oci::scope::{Action, ResourceScope};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn parties() -> TokenParties {
        TokenParties {
            issuer: "aerugo".into(),
            service: "registry.test".into(),
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }

    fn pull(name: &str) -> Vec<AccessEntry> {
        vec![AccessEntry::from(&ResourceScope::repository(
            name,
            [Action::Pull],
        ))]
    }

    #[test]
    fn issued_tokens_verify_with_their_claims() {
        let ring = KeyRing::single(SigningKey::generate());
        let token = issue(&ring, &parties(), "alice", pull("a/b"), now(), 300).unwrap();
        let claims = verify(&ring, &parties(), &token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.access, pull("a/b"));
        assert_eq!(claims.exp - claims.iat, 300);
    }

    #[test]
    fn foreign_expired_and_misaddressed_tokens_are_refused() {
        let ring = KeyRing::single(SigningKey::generate());
        let other = KeyRing::single(SigningKey::generate());
        let token = issue(&other, &parties(), "alice", pull("a"), now(), 300).unwrap();
        assert!(matches!(
            verify(&ring, &parties(), &token),
            Err(TokenError::UnknownKey)
        ));
        let expired = issue(&ring, &parties(), "alice", pull("a"), now() - 3600, 300).unwrap();
        assert!(verify(&ring, &parties(), &expired).is_err());
        let elsewhere = TokenParties {
            service: "other".into(),
            ..parties()
        };
        let token = issue(&ring, &elsewhere, "alice", pull("a"), now(), 300).unwrap();
        assert!(verify(&ring, &parties(), &token).is_err());
    }

    /// Rebuilds `token` with another header and claims, keeping its signature.
    fn forge(token: &str, header: serde_json::Value, claims: Option<serde_json::Value>) -> String {
        let mut parts = token.split('.');
        let (_, body, signature) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        let body = claims.map_or(body.to_owned(), |c| URL_SAFE_NO_PAD.encode(c.to_string()));
        format!(
            "{}.{body}.{signature}",
            URL_SAFE_NO_PAD.encode(header.to_string())
        )
    }

    #[test]
    fn alg_none_hmac_and_tampered_claims_are_refused() {
        let ring = KeyRing::single(SigningKey::generate());
        let kid = ring.signing().kid.clone();
        let token = issue(&ring, &parties(), "alice", pull("a"), now(), 300).unwrap();
        let none = forge(&token, serde_json::json!({"alg": "none", "kid": kid}), None);
        assert!(verify(&ring, &parties(), &none).is_err());
        let none_unsigned = format!("{}.", none.rsplit_once('.').unwrap().0);
        assert!(verify(&ring, &parties(), &none_unsigned).is_err());
        // HS256 keyed with the public key (the classic key-confusion attack).
        let x = serde_json::to_value(ring.jwks()).unwrap()["keys"][0]["x"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(kid.clone());
        let claims = verify(&ring, &parties(), &token).unwrap();
        let hmac = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(x.as_bytes()),
        )
        .unwrap();
        assert!(verify(&ring, &parties(), &hmac).is_err());
        // More access than was signed.
        let mut widened = serde_json::to_value(&claims).unwrap();
        widened["access"][0]["actions"] = serde_json::json!(["pull", "push"]);
        let tampered = forge(
            &token,
            serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}),
            Some(widened),
        );
        assert!(verify(&ring, &parties(), &tampered).is_err());
    }
}
