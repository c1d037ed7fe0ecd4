//! The token-signing keys: Ed25519 (JWS `EdDSA`), one signing, several verifying during a
//! rotation, published as a JWK set so edges verify tokens offline.
//!
//! Keys come from a PEM file named in the configuration, are derived from a secret every node
//! is given (`[security] jwt_secret`, env `JWT_SECRET`), or are generated on first start and
//! kept in the account store, so that every node of a cluster signs with the same key. A
//! rotation adds a new key and retires the old ones; a retired key still verifies until the
//! tokens it signed have expired, then it is deleted.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use super::secret;
use crate::accounts::{StoredSigningKey, Timestamp};

/// The JWS algorithm of every key this build makes.
pub const ALGORITHM: Algorithm = Algorithm::EdDSA;
const ALGORITHM_NAME: &str = "EdDSA";

/// PKCS#8 v1 prefix of an Ed25519 private key: the seed follows (RFC 8410).
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not an Ed25519 private key in PKCS#8 PEM: {0}")]
    Unreadable(String),
    #[error("signing key of algorithm {0:?}: only EdDSA keys are supported")]
    Algorithm(String),
    #[error("no active signing key")]
    NoActiveKey,
    #[error("the JWK set holds no Ed25519 key with a kid")]
    NoPublicKey,
    #[error("a shared signing secret must be at least {MIN_SHARED_SECRET_LEN} characters long")]
    WeakSecret,
}

/// Shortest shared secret a signing key is derived from.
pub const MIN_SHARED_SECRET_LEN: usize = 32;

/// Where token verification finds the public key a token's `kid` names: a node's own ring, or
/// an edge's copy of the published keys.
pub trait VerifyingKeys {
    fn verifier(&self, kid: &str) -> Option<&DecodingKey>;
}

/// One key: what signs, what verifies, and its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> SigningKey {
        let mut der = ED25519_PKCS8_PREFIX.to_vec();
        der.extend_from_slice(&secret::random_bytes::<32>());
        // A well-formed key of the one supported kind always converts.
        Self::from_der(&der).expect("a generated Ed25519 key is valid")
    }

    /// The key derived from a shared secret: the same on every node given it, and a
    /// different secret is a different key. The public half is published (JWKS), so the
    /// secret must resist guessing: [`MIN_SHARED_SECRET_LEN`] characters at least, and each
    /// guess costs an argon2id run. Blocking.
    pub fn from_shared_secret(secret: &str) -> Result<SigningKey, KeyError> {
        if secret.chars().count() < MIN_SHARED_SECRET_LEN {
            return Err(KeyError::WeakSecret);
        }
        let seed = super::password::derive_key(secret, b"aerugo token-signing key v1")
            .map_err(|e| KeyError::Unreadable(e.to_string()))?;
        let mut der = ED25519_PKCS8_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        Self::from_der(&der)
    }

    /// Reads a PKCS#8 PEM Ed25519 private key (what `openssl genpkey -algorithm ed25519`
    /// writes).
    pub fn from_pem(pem: &str) -> Result<SigningKey, KeyError> {
        let encoding = EncodingKey::from_ed_pem(pem.as_bytes())
            .map_err(|e| KeyError::Unreadable(e.to_string()))?;
        Self::from_encoding(encoding)
    }

    fn from_der(der: &[u8]) -> Result<SigningKey, KeyError> {
        Self::from_encoding(EncodingKey::from_ed_der(der))
    }

    fn from_encoding(encoding: EncodingKey) -> Result<SigningKey, KeyError> {
        let unreadable = |e: jsonwebtoken::errors::Error| KeyError::Unreadable(e.to_string());
        let mut jwk = Jwk::from_encoding_key(&encoding, ALGORITHM).map_err(unreadable)?;
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(unreadable)?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::EdDSA);
        let decoding = DecodingKey::from_jwk(&jwk).map_err(unreadable)?;
        Ok(SigningKey {
            kid,
            encoding,
            decoding,
            jwk,
        })
    }

    /// The private key as PKCS#8 PEM, for the account store.
    pub fn to_pem(&self) -> String {
        let body = STANDARD.encode(self.encoding.as_bytes());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect();
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        )
    }

    pub fn to_stored(&self, created_at: Timestamp) -> StoredSigningKey {
        StoredSigningKey {
            kid: self.kid.clone(),
            algorithm: ALGORITHM_NAME.into(),
            private_pem: self.to_pem(),
            created_at,
            retired_at: None,
        }
    }

    pub fn from_stored(stored: &StoredSigningKey) -> Result<SigningKey, KeyError> {
        if stored.algorithm != ALGORITHM_NAME {
            return Err(KeyError::Algorithm(stored.algorithm.clone()));
        }
        Self::from_pem(&stored.private_pem)
    }

    pub(super) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }
}

/// The keys a node signs and verifies with.
#[derive(Debug, Clone)]
pub struct KeyRing {
    signing: SigningKey,
    verifying: BTreeMap<String, SigningKey>,
}

impl KeyRing {
    /// A ring of one key.
    pub fn single(key: SigningKey) -> KeyRing {
        KeyRing {
            verifying: BTreeMap::from([(key.kid.clone(), key.clone())]),
            signing: key,
        }
    }

    /// The ring of stored keys: the newest active one signs, every stored one verifies.
    pub fn from_stored(stored: &[StoredSigningKey]) -> Result<KeyRing, KeyError> {
        let signer = stored
            .iter()
            .filter(|k| k.retired_at.is_none())
            .max_by_key(|k| (k.created_at, k.kid.clone()))
            .ok_or(KeyError::NoActiveKey)?;
        let mut verifying = BTreeMap::new();
        for key in stored {
            let key = SigningKey::from_stored(key)?;
            verifying.insert(key.kid.clone(), key);
        }
        let signing = SigningKey::from_stored(signer)?;
        Ok(KeyRing { signing, verifying })
    }

    pub fn signing(&self) -> &SigningKey {
        &self.signing
    }

    /// The public keys, as `GET /auth/jwks` serves them.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.verifying.values().map(|k| k.jwk.clone()).collect(),
        }
    }
}

impl VerifyingKeys for KeyRing {
    fn verifier(&self, kid: &str) -> Option<&DecodingKey> {
        self.verifying.get(kid).map(|k| &k.decoding)
    }
}

/// Verifying keys only, from a published JWK set: what an edge checks tokens with, offline.
#[derive(Clone)]
pub struct PublicKeys(BTreeMap<String, DecodingKey>);

impl std::fmt::Debug for PublicKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl PublicKeys {
    /// The Ed25519 keys of `set` that carry a `kid`; other keys are skipped (a later core may
    /// publish kinds this build does not verify). A set with none is refused, so a broken
    /// answer never replaces a working set.
    pub fn from_jwks(set: &JwkSet) -> Result<PublicKeys, KeyError> {
        let mut keys = BTreeMap::new();
        for jwk in &set.keys {
            let ed25519 = matches!(&jwk.algorithm,
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519);
            if let (true, Some(kid)) = (ed25519, &jwk.common.key_id)
                && let Ok(key) = DecodingKey::from_jwk(jwk)
            {
                keys.insert(kid.clone(), key);
            }
        }
        if keys.is_empty() {
            return Err(KeyError::NoPublicKey);
        }
        Ok(PublicKeys(keys))
    }
}

impl VerifyingKeys for PublicKeys {
    fn verifier(&self, kid: &str) -> Option<&DecodingKey> {
        self.0.get(kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_pem_with_a_stable_kid() {
        let key = SigningKey::generate();
        let again = SigningKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(key.kid, again.kid);
        assert_ne!(SigningKey::generate().kid, key.kid);
    }

    #[test]
    fn a_shared_secret_gives_every_node_the_same_key() {
        let secret = "correct horse battery staple, and then some";
        let one = SigningKey::from_shared_secret(secret).unwrap();
        let other_node = SigningKey::from_shared_secret(secret).unwrap();
        assert_eq!(one.kid, other_node.kid);
        assert_eq!(one.to_pem(), other_node.to_pem());
        let different = SigningKey::from_shared_secret(&format!("{secret}!")).unwrap();
        assert_ne!(one.kid, different.kid);
        assert!(matches!(
            SigningKey::from_shared_secret("too short"),
            Err(KeyError::WeakSecret)
        ));
    }

    #[test]
    fn openssl_keys_are_read() {
        // `openssl genpkey -algorithm ed25519` (RFC 8410's example key).
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        let key = SigningKey::from_pem(pem).unwrap();
        let jwks = serde_json::to_value(KeyRing::single(key).jwks()).unwrap();
        assert_eq!(jwks["keys"][0]["kty"], "OKP");
        assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
        assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
        // RFC 8410 §10.3's public key for that private key.
        assert_eq!(
            jwks["keys"][0]["x"],
            "Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE"
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(
            SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
        let mut stored = SigningKey::generate().to_stored(0);
        stored.algorithm = "HS256".into();
        assert!(matches!(
            SigningKey::from_stored(&stored),
            Err(KeyError::Algorithm(_))
        ));
    }

    #[test]
    fn the_newest_active_key_signs_and_all_verify() {
        let old = SigningKey::generate();
        let new = SigningKey::generate();
        let mut old_stored = old.to_stored(1);
        old_stored.retired_at = Some(5);
        let ring = KeyRing::from_stored(&[old_stored.clone(), new.to_stored(2)]).unwrap();
        assert_eq!(ring.signing().kid, new.kid);
        assert!(ring.verifier(&old.kid).is_some());
        assert_eq!(ring.jwks().keys.len(), 2);
        assert!(matches!(
            KeyRing::from_stored(&[old_stored]),
            Err(KeyError::NoActiveKey)
        ));
    }

    #[test]
    fn published_keys_verify_alone_and_other_kinds_are_skipped() {
        let ring = KeyRing::single(SigningKey::generate());
        let kid = ring.signing().kid.clone();
        let mut published = serde_json::to_value(ring.jwks()).unwrap();
        let hmac = serde_json::json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"});
        published["keys"].as_array_mut().unwrap().push(hmac);
        let set: JwkSet = serde_json::from_value(published).unwrap();
        let keys = PublicKeys::from_jwks(&set).unwrap();
        assert!(keys.verifier(&kid).is_some());
        assert!(keys.verifier("hmac").is_none());
        let only_hmac: JwkSet =
            serde_json::from_value(serde_json::json!({"keys": [set.keys[1].clone()]})).unwrap();
        assert!(matches!(
            PublicKeys::from_jwks(&only_hmac),
            Err(KeyError::NoPublicKey)
        ));
    }
}
