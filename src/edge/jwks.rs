//! The cores' token keys at a gateway, so it can check a client's bearer token itself: who the
//! client is (the token's subject) and what the core granted it (the `access` claim), also
//! while no core answers.
//!
//! The keys are the JWK set the cores publish at `GET /auth/jwks`, fetched from a healthy core
//! at start and every `jwks_refresh_seconds`, and again (at most every
//! [`REFETCH_INTERVAL`]) when a token names a key the set lacks — a rotation. The last good
//! set is kept in memory and in `jwks.json` in the cache directory, so a gateway restarted
//! while the cores are down still checks tokens.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::HeaderValue;
use jsonwebtoken::jwk::JwkSet;

use super::confirm::ClientCredentials;
use crate::auth::keys::{KeyError, PublicKeys};
use crate::auth::token::{Claims, TokenError, TokenParties, VerifiedTokens};
use crate::oci::RepoName;
use crate::oci::scope::Action;

/// How often a token naming an unknown key may make the gateway fetch the keys: a rotation is
/// picked up at once, a flood of forged key ids costs the cores one request per interval.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// How soon a failed fetch is tried again (at most `jwks_refresh_seconds`).
const RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// A JWK set is a few hundred bytes per key; more is not a key set.
const MAX_JWKS_BYTES: usize = 64 << 10;

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The file the last good set is kept in, in the cache directory.
const FILE_NAME: &str = "jwks.json";

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("no healthy core to fetch the token keys from")]
    NoCore,
    #[error("fetching {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("the key set of {url} is unusable: {reason}")]
    Unusable { url: String, reason: String },
    #[error("keeping the token keys in {path}: {source}")]
    Persist {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a client's `Authorization` header amounts to.
#[derive(Debug)]
pub enum Presented {
    /// No bearer token (none, basic credentials, another scheme), or no key set yet to check
    /// one with: the caller is its header, as the core judges it.
    Header,
    /// A token of the cores, unexpired, for this service.
    Valid(Claims),
    /// A bearer token the keys refuse: expired, not yet valid, forged, for another service or
    /// issuer, or not a token of the cores at all.
    Refused,
}

/// Whether a valid token's `access` claim grants pulling `repo`.
pub fn grants_pull(claims: &Claims, repo: &RepoName) -> bool {
    claims
        .access
        .iter()
        .any(|entry| entry.grants(repo.as_str(), Action::Pull))
}

/// The healthy cores' base URLs (`http://host:port`), asked in order.
pub type HealthyCores = Box<dyn Fn() -> Vec<String> + Send + Sync>;

/// The key set a gateway checks tokens with, and how it keeps it current.
pub struct TokenKeys {
    parties: TokenParties,
    current: RwLock<Option<(JwkSet, Arc<PublicKeys>)>>,
    file: PathBuf,
    cores: HealthyCores,
    http: reqwest::Client,
    /// When the keys were last fetched (or tried); held while fetching, so one fetch runs at a
    /// time and callers that waited for it use its result.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    verified: VerifiedTokens,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("parties", &self.parties)
            .field("keys", &self.keys())
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// The keys of `parties`' cores, starting from the set kept in `cache_dir` (if any).
    /// Blocking (start-up).
    pub fn open(
        parties: TokenParties,
        cache_dir: &Path,
        cores: HealthyCores,
    ) -> Result<TokenKeys, reqwest::Error> {
        let file = cache_dir.join(FILE_NAME);
        let current = match std::fs::read(&file) {
            Ok(bytes) => match parse(&bytes) {
                Ok(kept) => Some(kept),
                Err(reason) => {
                    tracing::warn!(file = %file.display(), %reason, "ignoring the kept token keys");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                tracing::warn!(file = %file.display(), %error, "cannot read the kept token keys");
                None
            }
        };
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("aerugo-edge/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(TokenKeys {
            parties,
            current: RwLock::new(current),
            file,
            cores,
            http,
            last_fetch: tokio::sync::Mutex::new(None),
            verified: VerifiedTokens::default(),
        })
    }

    pub fn service(&self) -> &str {
        &self.parties.service
    }

    fn keys(&self) -> Option<Arc<PublicKeys>> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.as_ref().map(|(_, keys)| Arc::clone(keys))
    }

    /// Checks the bearer token of `authorization`, fetching the keys first when it names one
    /// the set lacks (or there is no set yet) and [`REFETCH_INTERVAL`] has passed.
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> Presented {
        let Some(token) = bearer_token(authorization) else {
            return Presented::Header;
        };
        let mut verified = self.verify(token);
        if matches!(verified, None | Some(Err(TokenError::UnknownKey))) {
            self.refetch_unless_recent().await;
            verified = self.verify(token);
        }
        match verified {
            None => Presented::Header,
            Some(Ok(claims)) => Presented::Valid(claims),
            Some(Err(error)) => {
                tracing::debug!(%error, "bearer token refused at the edge");
                Presented::Refused
            }
        }
    }

    /// `None` without a key set.
    fn verify(&self, token: &str) -> Option<Result<Claims, TokenError>> {
        let keys = self.keys()?;
        Some(self.verified.verify(&*keys, &self.parties, token))
    }

    async fn refetch_unless_recent(&self) {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < REFETCH_INTERVAL) {
            return;
        }
        if let Err(error) = self.fetch(&mut last).await {
            tracing::warn!(%error, "could not fetch the token keys");
        }
    }

    /// Fetches the keys now (once at a time).
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let mut last = self.last_fetch.lock().await;
        self.fetch(&mut last).await
    }

    /// Refreshes the keys every `every` (sooner after a failure), forever.
    pub async fn keep_fresh(&self, every: Duration) {
        loop {
            let wait = match self.refresh().await {
                Ok(()) => every,
                Err(error) => {
                    tracing::warn!(%error, "could not refresh the token keys");
                    every.min(RETRY_INTERVAL)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn fetch(&self, last: &mut Option<Instant>) -> Result<(), JwksError> {
        *last = Some(Instant::now());
        let mut failure = JwksError::NoCore;
        for core in (self.cores)() {
            match self.fetch_from(&core).await {
                Ok((set, keys)) => return self.install(set, keys).await,
                Err(e) => failure = e,
            }
        }
        Err(failure)
    }

    async fn fetch_from(&self, core: &str) -> Result<(JwkSet, Arc<PublicKeys>), JwksError> {
        let url = format!("{}/auth/jwks", core.trim_end_matches('/'));
        let fetch_failed = |reason: String| JwksError::Fetch {
            url: url.clone(),
            reason,
        };
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| fetch_failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(fetch_failed(format!("HTTP {}", response.status())));
        }
        let body = read_limited(response)
            .await
            .map_err(|e| fetch_failed(e.to_string()))?;
        parse(&body).map_err(|reason| JwksError::Unusable {
            url: url.clone(),
            reason,
        })
    }

    /// Makes `set` the current one, and keeps it on disk when it changed.
    async fn install(&self, set: JwkSet, keys: Arc<PublicKeys>) -> Result<(), JwksError> {
        {
            let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
            if current.as_ref().is_some_and(|(held, _)| *held == set) {
                return Ok(());
            }
            *current = Some((set.clone(), keys));
        }
        tracing::info!(keys = set.keys.len(), "token keys updated");
        let file = self.file.clone();
        let persisted = tokio::task::spawn_blocking(move || persist(&file, &set))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        persisted.map_err(|source| JwksError::Persist {
            path: self.file.clone(),
            source,
        })
    }

    /// The challenge a core would send a client refused `pull` on `repo` (with
    /// `insufficient`: whose token lacks that scope), its realm the token endpoint as the
    /// client reaches it through the gateway.
    pub fn challenge(
        &self,
        credentials: &ClientCredentials,
        repo: &RepoName,
        insufficient: bool,
    ) -> String {
        let forwarded = |name: &str| {
            credentials
                .forwarded
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .and_then(|(_, v)| v.to_str().ok())
        };
        let realm = match forwarded("x-forwarded-host") {
            Some(host) => format!(
                "{}://{host}/auth/token",
                forwarded("x-forwarded-proto").unwrap_or("http")
            ),
            None => "/auth/token".to_owned(),
        };
        let mut challenge = format!(
            "Bearer realm=\"{realm}\",service=\"{}\",scope=\"repository:{repo}:pull\"",
            self.parties.service
        );
        if insufficient {
            challenge.push_str(",error=\"insufficient_scope\"");
        }
        challenge
    }
}

/// The token of a `Bearer` `Authorization` header.
fn bearer_token(authorization: Option<&HeaderValue>) -> Option<&str> {
    let (scheme, token) = authorization?.to_str().ok()?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn parse(bytes: &[u8]) -> Result<(JwkSet, Arc<PublicKeys>), String> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let keys = PublicKeys::from_jwks(&set).map_err(|e: KeyError| e.to_string())?;
    Ok((set, Arc::new(keys)))
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("more than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Writes `set` to `file` whole or not at all (temp file, fsync, rename). Blocking.
fn persist(file: &Path, set: &JwkSet) -> std::io::Result<()> {
    use std::io::Write;
    let root = file.parent().unwrap_or(Path::new("."));
    let temp = root.join(format!("{FILE_NAME}.{}.tmp", std::process::id()));
    let mut out = std::fs::File::create(&temp)?;
    out.write_all(&serde_json::to_vec(set)?)?;
    out.sync_all()?;
    crate::fileio::publish(&temp, file, root)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::auth::keys::{KeyRing, SigningKey};
    use crate::auth::token;
    use crate::oci::scope::{AccessEntry, ResourceScope};

    fn parties() -> TokenParties {
        TokenParties {
            issuer: "aerugo".into(),
            service: "aerugo".into(),
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }

    fn bearer(ring: &KeyRing, issued: i64) -> HeaderValue {
        let access = vec![AccessEntry::from(&ResourceScope::repository(
            "acme/app",
            [Action::Pull],
        ))];
        let token = token::issue(ring, &parties(), "alice", access, issued, 300).unwrap();
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
    }

    fn no_cores() -> HealthyCores {
        Box::new(Vec::new)
    }

    #[tokio::test]
    async fn kept_keys_verify_and_refuse_without_any_core() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::single(SigningKey::generate());
        persist(&dir.path().join(FILE_NAME), &ring.jwks()).unwrap();
        let keys = TokenKeys::open(parties(), dir.path(), no_cores()).unwrap();

        let Presented::Valid(claims) = keys.check(Some(&bearer(&ring, now()))).await else {
            panic!("a token of the kept keys verifies");
        };
        assert_eq!(claims.sub, "alice");
        assert!(grants_pull(&claims, &"acme/app".parse().unwrap()));
        assert!(!grants_pull(&claims, &"acme/other".parse().unwrap()));
        let expired = bearer(&ring, now() - 3600);
        assert!(matches!(
            keys.check(Some(&expired)).await,
            Presented::Refused
        ));
        let foreign = bearer(&KeyRing::single(SigningKey::generate()), now());
        assert!(matches!(
            keys.check(Some(&foreign)).await,
            Presented::Refused
        ));
        let garbage = HeaderValue::from_static("Bearer not-a-jwt");
        assert!(matches!(
            keys.check(Some(&garbage)).await,
            Presented::Refused
        ));
        let basic = HeaderValue::from_static("Basic YWxpY2U6cHc=");
        assert!(matches!(keys.check(Some(&basic)).await, Presented::Header));
        assert!(matches!(keys.check(None).await, Presented::Header));
    }

    #[tokio::test]
    async fn without_keys_a_token_is_left_to_the_core() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{\"keys\": []}").unwrap();
        let keys = TokenKeys::open(parties(), dir.path(), no_cores()).unwrap();
        let ring = KeyRing::single(SigningKey::generate());
        assert!(matches!(
            keys.check(Some(&bearer(&ring, now()))).await,
            Presented::Header
        ));
        assert!(matches!(keys.refresh().await, Err(JwksError::NoCore)));
    }

    /// A core serving `set` at `/auth/jwks` (any path, in fact), counting the requests.
    async fn core_serving(set: Arc<RwLock<JwkSet>>) -> (HealthyCores, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&served);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).await.unwrap() == 1 {
                    head.push(byte[0]);
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let body = serde_json::to_string(&*set.read().unwrap()).unwrap();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(response.as_bytes()).await.unwrap();
            }
        });
        (Box::new(move || vec![url.clone()]), served)
    }

    #[tokio::test]
    async fn a_rotated_key_is_fetched_once_and_kept_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (
            KeyRing::single(SigningKey::generate()),
            KeyRing::single(SigningKey::generate()),
        );
        let published = Arc::new(RwLock::new(old.jwks()));
        let (cores, fetches) = core_serving(Arc::clone(&published)).await;
        let keys = TokenKeys::open(parties(), dir.path(), cores).unwrap();
        keys.refresh().await.unwrap();
        assert!(matches!(
            keys.check(Some(&bearer(&old, now()))).await,
            Presented::Valid(_)
        ));

        let mut both = old.jwks();
        both.keys.extend(new.jwks().keys);
        *published.write().unwrap() = both;
        // Within the interval of the last fetch, an unknown key is refused without asking.
        assert!(matches!(
            keys.check(Some(&bearer(&new, now()))).await,
            Presented::Refused
        ));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        *keys.last_fetch.lock().await = Instant::now().checked_sub(REFETCH_INTERVAL);
        assert!(matches!(
            keys.check(Some(&bearer(&new, now()))).await,
            Presented::Valid(_)
        ));
        let forged = bearer(&KeyRing::single(SigningKey::generate()), now());
        assert!(matches!(
            keys.check(Some(&forged)).await,
            Presented::Refused
        ));
        assert_eq!(fetches.load(Ordering::SeqCst), 2, "one fetch per interval");

        let restarted = TokenKeys::open(parties(), dir.path(), no_cores()).unwrap();
        for ring in [&old, &new] {
            assert!(matches!(
                restarted.check(Some(&bearer(ring, now()))).await,
                Presented::Valid(_)
            ));
        }
    }

    #[test]
    fn the_challenge_names_the_token_endpoint_as_the_client_reaches_it() {
        let dir = tempfile::tempdir().unwrap();
        let keys = TokenKeys::open(parties(), dir.path(), no_cores()).unwrap();
        let credentials = ClientCredentials {
            authorization: None,
            forwarded: vec![
                (
                    http::HeaderName::from_static("x-forwarded-proto"),
                    HeaderValue::from_static("https"),
                ),
                (
                    http::HeaderName::from_static("x-forwarded-host"),
                    HeaderValue::from_static("registry.example:8443"),
                ),
            ],
        };
        let repo = "acme/app".parse().unwrap();
        assert_eq!(
            keys.challenge(&credentials, &repo, true),
            "Bearer realm=\"https://registry.example:8443/auth/token\",service=\"aerugo\",\
             scope=\"repository:acme/app:pull\",error=\"insufficient_scope\""
        );
    }
}
