//! [`UpstreamClient`]: manifests and blobs of one upstream registry, authenticated, retried and
//! verified.
//!
//! Layers, bottom up:
//! - [`UpstreamClient::send`]: one HTTP exchange with retries (connect errors, timeouts, 5xx,
//!   a body that breaks while being buffered), nothing about auth;
//! - [`UpstreamClient::registry_call`]: a registry request with credentials, answering a `401`
//!   challenge once (token dance or `Basic`), and mapping statuses to [`UpstreamError`];
//! - the public methods, which check digests, sizes and ranges.

use std::ops::Range;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::TryStreamExt;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Response, StatusCode, Url};

use super::challenge::{self, Challenge};
use super::token_cache::{CachedToken, TokenCache, TokenKey};
use super::verify::verify;
use super::{UpstreamConfig, UpstreamError};
use crate::oci::manifest::{self, SUPPORTED_MEDIA_TYPES};
use crate::oci::{Algorithm, Digest, Reference, RepoName};
use crate::storage::ByteStream;

const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// Token responses are a JWT and a few fields; anything bigger is not one.
const MAX_TOKEN_RESPONSE_BYTES: u64 = 1 << 20;

/// Backoff never waits longer than this between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a manifest `HEAD` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Digest,
    /// `Content-Type` without parameters, when sent.
    pub media_type: Option<String>,
    /// `Content-Length`, when sent.
    pub size: Option<u64>,
}

/// A manifest whose bytes were checked against `digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    pub digest: Digest,
    pub media_type: String,
    /// The exact bytes the upstream sent; `digest` is over them.
    pub body: Bytes,
}

/// What a blob `HEAD` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobHead {
    pub size: Option<u64>,
}

/// What the origin answered a request made with a client's own credentials
/// ([`UpstreamClient::head_blob_as_client`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAnswer {
    /// A 2xx: the origin shows the blob to that client.
    Allowed,
    /// Any other status below 500 (`404`, `401` with its challenge, `403`, `429`…).
    Refused { status: u16, headers: HeaderMap },
}

/// The byte range a ranged blob fetch was answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedRange {
    /// Half-open; may end before the requested end when the blob is shorter.
    pub range: Range<u64>,
    /// The blob's whole size, when `Content-Range` said (`bytes a-b/total`).
    pub total: Option<u64>,
}

/// A blob body on its way. `stream` ends with an `io::Error` (carrying an [`UpstreamError`],
/// see [`UpstreamError::from_io`]) when the bytes turn out wrong, short or interrupted.
pub struct FetchedBlob {
    /// How many bytes `stream` yields, when the upstream said (`Content-Length`).
    pub content_length: Option<u64>,
    /// `Some` for a ranged fetch. Ranged bytes are length-checked but not digest-checked (a
    /// slice cannot be); only a whole-blob fetch may be committed to a cache.
    pub range: Option<ServedRange>,
    pub stream: ByteStream,
}

impl std::fmt::Debug for FetchedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchedBlob")
            .field("content_length", &self.content_length)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// A client for one upstream registry. Cheap to clone (one `Arc`); clones share the connection
/// pool and the token cache, and no lock is held across a request.
#[derive(Clone)]
pub struct UpstreamClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("name", &self.inner.name)
            .field("base", &self.inner.base.as_str())
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// The configured name; part of every token-cache key.
    name: Arc<str>,
    /// The base URL with any trailing `/` removed; `/v2/…` is appended to it.
    base: Url,
    /// One pooled client (rustls) for registry, token realm and redirect targets alike.
    http: reqwest::Client,
    credentials: Option<Credentials>,
    tokens: TokenCache,
    /// How the upstream asked to be authenticated last time, so later requests carry
    /// credentials up front instead of paying a `401` round trip each. Read on every request,
    /// written only when a challenge changes it; never held across an `await`.
    scheme: RwLock<AuthScheme>,
    /// Every manifest media type we store, sent as `Accept` on manifest requests.
    accept: HeaderValue,
    /// Deadline of manifest, `HEAD` and token requests (blob bodies use the read-idle timeout).
    request_timeout: Duration,
    retry: RetryPolicy,
    max_manifest_bytes: u64,
}

#[derive(Clone)]
struct Credentials {
    username: String,
    password: String,
}

#[derive(Debug, Clone, Default)]
enum AuthScheme {
    #[default]
    Anonymous,
    Basic,
    Bearer(Arc<BearerRealm>),
}

#[derive(Debug)]
struct BearerRealm {
    realm: Url,
    service: Option<String>,
}

/// The credential one attempt carried, so a `401` tells which one was rejected.
#[derive(Debug, Clone)]
enum Auth {
    None,
    Basic,
    Bearer(Arc<str>),
}

#[derive(Debug, Clone, Copy)]
struct RetryPolicy {
    retries: u32,
    base: Duration,
}

impl RetryPolicy {
    /// Delay before retry number `retry` (1-based): `base · 2^(retry-1)`, of which a random
    /// half is dropped ("equal jitter"), so clients that failed together do not retry in step.
    fn delay(&self, retry: u32) -> Duration {
        let full = self
            .base
            .saturating_mul(1 << retry.saturating_sub(1).min(16))
            .min(MAX_BACKOFF);
        let half = full / 2;
        half + half.mul_f64(jitter())
    }
}

/// A number in `[0, 1)`. `RandomState` is randomly seeded, which is all jitter needs.
fn jitter() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// One HTTP exchange to make.
struct Call {
    method: Method,
    url: Url,
    headers: HeaderMap,
    /// Total deadline per attempt; `None` for blob downloads (read-idle timeout only).
    timeout: Option<Duration>,
    /// Read the whole 2xx body inside the retry loop, refusing more than this many bytes.
    buffer_limit: Option<u64>,
}

/// A successful (2xx) answer.
struct Answer {
    headers: HeaderMap,
    status: StatusCode,
    body: AnswerBody,
}

enum AnswerBody {
    Buffered(Bytes),
    /// The body is still to be read (blob downloads, `HEAD`).
    Unread(Response),
}

/// An answer that is neither 2xx nor retried: the caller decides what the status means.
struct Refusal {
    status: StatusCode,
    headers: HeaderMap,
    /// The URL that answered: differs from the request's after a redirect.
    url: Url,
}

impl UpstreamClient {
    /// Builds the client. Fails on an unusable configuration (URL, timeouts, credentials).
    pub fn new(config: &UpstreamConfig) -> Result<Self, UpstreamError> {
        Self::with_token_cache(config, TokenCache::new())
    }

    /// Like [`UpstreamClient::new`], sharing `tokens` with other clients (keys include the
    /// upstream's name, so names must be unique among them).
    pub fn with_token_cache(
        config: &UpstreamConfig,
        tokens: TokenCache,
    ) -> Result<Self, UpstreamError> {
        let invalid =
            |what: String| UpstreamError::Config(format!("upstream {:?}: {what}", config.name));
        if config.name.is_empty() {
            return Err(invalid("name must not be empty".into()));
        }
        let mut base =
            Url::parse(&config.url).map_err(|e| invalid(format!("url {:?}: {e}", config.url)))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(invalid(format!(
                "url {:?} must be http(s)://host[:port][/prefix]",
                config.url
            )));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid(format!(
                "url {:?} must not have a query or fragment",
                config.url
            )));
        }
        let trimmed = base.path().trim_end_matches('/').to_owned();
        base.set_path(&trimmed);
        let seconds = |field: &str, value: f64| {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| invalid(format!("{field} must be a positive number of seconds")))
        };
        let connect_timeout = seconds("connect_timeout_seconds", config.connect_timeout_seconds)?;
        let request_timeout = seconds("timeout_seconds", config.timeout_seconds)?;
        let read_idle_timeout = seconds(
            "read_idle_timeout_seconds",
            config.read_idle_timeout_seconds,
        )?;
        let credentials = match (&config.username, &config.password) {
            (Some(username), password) => Some(Credentials {
                username: username.clone(),
                password: password.clone().unwrap_or_default(),
            }),
            (None, Some(_)) => return Err(invalid("password given without username".into())),
            (None, None) => None,
        };
        let accept = HeaderValue::from_str(&SUPPORTED_MEDIA_TYPES.join(", "))
            .map_err(|e| invalid(format!("Accept header: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            // Applies to every read, bodies included, and resets after each: a stalled
            // download fails without a total deadline capping large layers.
            .read_timeout(read_idle_timeout)
            // The default policy follows up to 10 redirects and strips `Authorization` when
            // the host, port or scheme changes, so a bearer token never reaches the object
            // store a blob is redirected to (tested).
            .redirect(reqwest::redirect::Policy::limited(10))
            .user_agent(concat!("aerugo/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid(format!("HTTP client: {e}")))?;
        Ok(UpstreamClient {
            inner: Arc::new(Inner {
                name: config.name.as_str().into(),
                base,
                http,
                credentials,
                tokens,
                scheme: RwLock::new(AuthScheme::Anonymous),
                accept,
                request_timeout,
                retry: RetryPolicy {
                    retries: config.retries,
                    base: Duration::from_millis(config.retry_base_delay_ms),
                },
                max_manifest_bytes: config.max_manifest_bytes,
            }),
        })
    }

    /// The upstream's configured name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// `HEAD` a manifest: what `reference` currently points at, without downloading it (Docker
    /// Hub does not count `HEAD` against its pull rate limit). `None` when the upstream does
    /// not have it.
    ///
    /// # Errors
    /// `DigestMismatch` when asked by digest and the upstream reports another one; `Protocol`
    /// when asked by tag and the upstream sends no `Docker-Content-Digest`.
    pub async fn head_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<Option<ManifestHead>, UpstreamError> {
        let call = self.manifest_call(Method::HEAD, name, reference, None)?;
        let Some(answer) = self.registry_call(call, name).await? else {
            return Ok(None);
        };
        let claimed = header_digest(&answer.headers)?;
        let digest = match (reference, claimed) {
            (Reference::Digest(asked), Some(claimed)) if claimed != *asked => {
                return Err(UpstreamError::DigestMismatch {
                    expected: asked.clone(),
                    actual: claimed,
                });
            }
            (Reference::Digest(asked), _) => asked.clone(),
            (Reference::Tag(_), Some(claimed)) => claimed,
            (Reference::Tag(tag), None) => {
                return Err(UpstreamError::Protocol(format!(
                    "HEAD of {name}:{tag} answered without Docker-Content-Digest"
                )));
            }
        };
        Ok(Some(ManifestHead {
            digest,
            media_type: content_type(&answer.headers).map(str::to_owned),
            size: content_length(&answer.headers)?,
        }))
    }

    /// `GET` a manifest and verify it: by digest, the body must hash to that digest; by tag,
    /// to the `Docker-Content-Digest` the upstream sent (with its algorithm), and otherwise
    /// its SHA-256 becomes the digest. `None` when the upstream does not have it.
    ///
    /// # Errors
    /// `DigestMismatch` (never a success with wrong bytes), `TooLarge` above
    /// `max_manifest_bytes`, `Protocol` when the media type cannot be told.
    pub async fn get_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<Option<FetchedManifest>, UpstreamError> {
        let call = self.manifest_call(
            Method::GET,
            name,
            reference,
            Some(self.inner.max_manifest_bytes),
        )?;
        let Some(answer) = self.registry_call(call, name).await? else {
            return Ok(None);
        };
        let body = answer.buffered()?;
        let expected = match reference {
            Reference::Digest(asked) => Some(asked.clone()),
            Reference::Tag(_) => header_digest(&answer.headers)?,
        };
        let algorithm = expected
            .as_ref()
            .map_or(Algorithm::Sha256, Digest::algorithm);
        let actual = Digest::of(algorithm, &body);
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(UpstreamError::DigestMismatch { expected, actual });
        }
        let media_type = match content_type(&answer.headers) {
            Some(specific) if !is_generic_type(specific) => specific.to_owned(),
            // No (useful) Content-Type: the manifest's own `mediaType` or shape says.
            header => manifest::parse(header, &body)
                .map(|info| info.media_type.to_owned())
                .map_err(|e| {
                    UpstreamError::Protocol(format!("cannot tell the manifest's media type: {e}"))
                })?,
        };
        Ok(Some(FetchedManifest {
            digest: actual,
            media_type,
            body,
        }))
    }

    /// `HEAD` a blob. `None` when the upstream does not have it.
    pub async fn head_blob(
        &self,
        name: &RepoName,
        digest: &Digest,
    ) -> Result<Option<BlobHead>, UpstreamError> {
        let call = self.blob_call(
            Method::HEAD,
            name,
            digest,
            HeaderMap::new(),
            Some(self.inner.request_timeout),
        )?;
        let Some(answer) = self.registry_call(call, name).await? else {
            return Ok(None);
        };
        if let Some(claimed) = header_digest(&answer.headers)?
            && claimed != *digest
        {
            return Err(UpstreamError::DigestMismatch {
                expected: digest.clone(),
                actual: claimed,
            });
        }
        Ok(Some(BlobHead {
            size: content_length(&answer.headers)?,
        }))
    }

    /// `HEAD` a blob on a client's behalf: `headers` (its `Authorization`, a gateway's
    /// `X-Forwarded-*`) go as given, none of this client's credentials are added and no
    /// challenge is answered, so the origin judges that client, and a refusal (with its
    /// `WWW-Authenticate`) is the client's to see. For a gateway in front of its own origin.
    ///
    /// # Errors
    /// As the other methods when the origin cannot be asked (connect errors, timeouts and 5xx
    /// after the retries).
    pub async fn head_blob_as_client(
        &self,
        name: &RepoName,
        digest: &Digest,
        headers: HeaderMap,
    ) -> Result<ClientAnswer, UpstreamError> {
        let call = self.blob_call(
            Method::HEAD,
            name,
            digest,
            headers,
            Some(self.inner.request_timeout),
        )?;
        Ok(match self.send(&call, &Auth::None).await? {
            Ok(_) => ClientAnswer::Allowed,
            Err(refusal) => ClientAnswer::Refused {
                status: refusal.status.as_u16(),
                headers: refusal.headers,
            },
        })
    }

    /// `GET` a blob, or the bytes `range` (half-open) of it. Returns once the headers are in;
    /// the body streams. Redirects (object storage, CDNs) are followed without our
    /// credentials. `None` when the upstream does not have it.
    ///
    /// The whole blob's stream is verified as it goes: its last item is an error when the
    /// bytes do not hash to `digest`, fall short of `Content-Length`, or stop arriving (the
    /// read-idle timeout, a reset). A ranged stream is length-checked only.
    ///
    /// # Errors
    /// Before the body: as the other methods; `Protocol` when `range` is empty or the upstream
    /// ignores it (answers `200`), or the `Content-Range` does not match.
    pub async fn get_blob(
        &self,
        name: &RepoName,
        digest: &Digest,
        range: Option<Range<u64>>,
    ) -> Result<Option<FetchedBlob>, UpstreamError> {
        let mut headers = HeaderMap::new();
        if let Some(r) = &range {
            if r.start >= r.end {
                return Err(UpstreamError::Protocol(format!("empty byte range {r:?}")));
            }
            let value = format!("bytes={}-{}", r.start, r.end - 1);
            headers.insert(header::RANGE, header_value(&value)?);
        }
        let call = self.blob_call(Method::GET, name, digest, headers, None)?;
        let Some(answer) = self.registry_call(call, name).await? else {
            return Ok(None);
        };
        let content_length = content_length(&answer.headers)?;
        let (served, verify_digest) = match range {
            None if answer.status == StatusCode::OK => (None, Some(digest.clone())),
            None => {
                return Err(UpstreamError::Protocol(format!(
                    "blob GET answered {}",
                    answer.status
                )));
            }
            Some(asked) if answer.status == StatusCode::PARTIAL_CONTENT => {
                let served = content_range(&answer.headers)?;
                if served.range.start != asked.start || served.range.end > asked.end {
                    return Err(UpstreamError::Protocol(format!(
                        "asked for bytes {asked:?}, upstream sent {:?}",
                        served.range
                    )));
                }
                if content_length.is_some_and(|len| len != served.range.end - served.range.start) {
                    return Err(UpstreamError::Protocol(
                        "Content-Length disagrees with Content-Range".into(),
                    ));
                }
                (Some(served), None)
            }
            Some(_) => {
                return Err(UpstreamError::Protocol(format!(
                    "upstream ignored the Range request (answered {})",
                    answer.status
                )));
            }
        };
        let expected_len = content_length.or(served.as_ref().map(|s| s.range.end - s.range.start));
        let response = answer.unread()?;
        let body: ByteStream = Box::pin(response.bytes_stream().map_err(body_error));
        let stream = verify(body, verify_digest, expected_len);
        Ok(Some(FetchedBlob {
            content_length: expected_len,
            range: served,
            stream,
        }))
    }

    fn url(&self, name: &RepoName, kind: &str, reference: &str) -> Result<Url, UpstreamError> {
        // Names, tags and digests are validated and URL-safe, so plain formatting is exact.
        let url = format!(
            "{}/v2/{name}/{kind}/{reference}",
            self.inner.base.as_str().trim_end_matches('/')
        );
        Url::parse(&url).map_err(|e| UpstreamError::Protocol(format!("bad URL {url:?}: {e}")))
    }

    fn manifest_call(
        &self,
        method: Method,
        name: &RepoName,
        reference: &Reference,
        buffer_limit: Option<u64>,
    ) -> Result<Call, UpstreamError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, self.inner.accept.clone());
        Ok(Call {
            method,
            url: self.url(name, "manifests", &reference.to_string())?,
            headers,
            timeout: Some(self.inner.request_timeout),
            buffer_limit,
        })
    }

    fn blob_call(
        &self,
        method: Method,
        name: &RepoName,
        digest: &Digest,
        headers: HeaderMap,
        timeout: Option<Duration>,
    ) -> Result<Call, UpstreamError> {
        Ok(Call {
            method,
            url: self.url(name, "blobs", digest.as_str())?,
            headers,
            timeout,
            buffer_limit: None,
        })
    }

    /// A pull request to the registry: authenticated up front when the upstream's scheme is
    /// known, answering one `401` challenge (a second `401` is final), mapping `404` to `None`.
    async fn registry_call(
        &self,
        call: Call,
        name: &RepoName,
    ) -> Result<Option<Answer>, UpstreamError> {
        let key = TokenKey {
            upstream: self.inner.name.clone(),
            scope: format!("repository:{name}:pull"),
        };
        let mut auth = self.current_auth(&key).await?;
        let mut challenged = false;
        loop {
            let refusal = match self.send(&call, &auth).await? {
                Ok(answer) => return Ok(Some(answer)),
                Err(refusal) => refusal,
            };
            let from_origin = same_origin(&refusal.url, &call.url);
            match refusal.status.as_u16() {
                404 => return Ok(None),
                401 if from_origin && !challenged => {
                    challenged = true;
                    auth = self.answer_challenge(&refusal.headers, &key, &auth).await?;
                }
                // From a redirect target (an expired presigned URL) these are not about our
                // credentials, and fall through to `Status`.
                401 | 403 if from_origin => return Err(UpstreamError::Unauthorized),
                429 => {
                    return Err(UpstreamError::RateLimited {
                        retry_after: retry_after(&refusal.headers),
                    });
                }
                code => return Err(UpstreamError::Status(code)),
            }
        }
    }

    /// The credential to send before any challenge of this request.
    async fn current_auth(&self, key: &TokenKey) -> Result<Auth, UpstreamError> {
        let scheme = self
            .inner
            .scheme
            .read()
            .map(|s| s.clone())
            .unwrap_or_default();
        match scheme {
            AuthScheme::Anonymous => Ok(Auth::None),
            AuthScheme::Basic => Ok(Auth::Basic),
            AuthScheme::Bearer(realm) => Ok(Auth::Bearer(self.token(&realm, key).await?)),
        }
    }

    fn remember_scheme(&self, scheme: AuthScheme) {
        if let Ok(mut current) = self.inner.scheme.write() {
            *current = scheme;
        }
    }

    /// Turns a `401` into the credential for the next attempt.
    async fn answer_challenge(
        &self,
        headers: &HeaderMap,
        key: &TokenKey,
        rejected: &Auth,
    ) -> Result<Auth, UpstreamError> {
        let mut challenges: Vec<Challenge> = Vec::new();
        for value in headers.get_all(header::WWW_AUTHENTICATE) {
            let value = value
                .to_str()
                .map_err(|_| UpstreamError::Protocol("WWW-Authenticate is not ASCII".into()))?;
            challenges.extend(
                challenge::parse(value).map_err(|e| UpstreamError::Protocol(e.to_string()))?,
            );
        }
        if let Some(bearer) = challenges.iter().find(|c| c.is("bearer")) {
            let realm = bearer
                .param("realm")
                .ok_or_else(|| UpstreamError::Protocol("Bearer challenge without realm".into()))?;
            let realm = Url::parse(realm)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    UpstreamError::Protocol(format!("Bearer realm {realm:?} is not an http(s) URL"))
                })?;
            let realm = Arc::new(BearerRealm {
                realm,
                service: bearer.param("service").map(str::to_owned),
            });
            self.remember_scheme(AuthScheme::Bearer(realm.clone()));
            if let Auth::Bearer(token) = rejected {
                tracing::debug!(upstream = %self.inner.name, scope = %key.scope, "cached token rejected; fetching another");
                self.inner.tokens.invalidate_if(key, token).await;
            }
            return Ok(Auth::Bearer(self.token(&realm, key).await?));
        }
        if challenges.iter().any(|c| c.is("basic")) && self.inner.credentials.is_some() {
            self.remember_scheme(AuthScheme::Basic);
            return Ok(Auth::Basic);
        }
        Err(UpstreamError::Unauthorized)
    }

    async fn token(&self, realm: &BearerRealm, key: &TokenKey) -> Result<Arc<str>, UpstreamError> {
        self.inner
            .tokens
            .get_or_fetch(key, self.fetch_token(realm, &key.scope))
            .await
    }

    /// The token dance proper: `GET <realm>?service=…&scope=…`, with basic credentials when
    /// configured (anonymous otherwise).
    async fn fetch_token(
        &self,
        realm: &BearerRealm,
        scope: &str,
    ) -> Result<CachedToken, UpstreamError> {
        let mut url = realm.realm.clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = &realm.service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        let call = Call {
            method: Method::GET,
            url,
            headers: HeaderMap::new(),
            timeout: Some(self.inner.request_timeout),
            buffer_limit: Some(MAX_TOKEN_RESPONSE_BYTES),
        };
        let auth = if self.inner.credentials.is_some() {
            Auth::Basic
        } else {
            Auth::None
        };
        let sent_at = Instant::now();
        tracing::debug!(upstream = %self.inner.name, %scope, "fetching a bearer token");
        let answer = match self.send(&call, &auth).await? {
            Ok(answer) => answer,
            Err(refusal) => {
                return Err(match refusal.status.as_u16() {
                    401 | 403 => UpstreamError::Unauthorized,
                    429 => UpstreamError::RateLimited {
                        retry_after: retry_after(&refusal.headers),
                    },
                    code => UpstreamError::Status(code),
                });
            }
        };
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<f64>,
        }
        let body = answer.buffered()?;
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            UpstreamError::Protocol(format!("token response is not the expected JSON: {e}"))
        })?;
        let token = parsed
            .token
            .filter(|t| !t.is_empty())
            .or(parsed.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| {
                UpstreamError::Protocol("token response has neither token nor access_token".into())
            })?;
        let expires_in = parsed
            .expires_in
            // Negative or NaN: not worth keeping; absurdly large: capped by the cache.
            .map(|s| Duration::try_from_secs_f64(s.min(1e9)).unwrap_or(Duration::ZERO));
        Ok(CachedToken::new(token.into(), sent_at, expires_in))
    }

    /// One exchange with retries. `Ok(Ok(_))`: a 2xx (its body buffered when asked);
    /// `Ok(Err(_))`: a status to interpret; `Err(_)`: retries exhausted or unusable.
    async fn send(
        &self,
        call: &Call,
        auth: &Auth,
    ) -> Result<Result<Answer, Refusal>, UpstreamError> {
        let mut retry = 0;
        loop {
            let failure = match self.attempt(call, auth).await {
                Attempt::Done(result) => return result,
                Attempt::Retryable(failure) => failure,
            };
            if retry >= self.inner.retry.retries {
                return Err(failure);
            }
            retry += 1;
            let delay = self.inner.retry.delay(retry);
            tracing::debug!(
                upstream = %self.inner.name, url = %call.url, error = %failure, retry, ?delay,
                "retrying upstream request"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, call: &Call, auth: &Auth) -> Attempt {
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone())
            .headers(call.headers.clone());
        if let Some(timeout) = call.timeout {
            request = request.timeout(timeout);
        }
        request = match (auth, &self.inner.credentials) {
            (Auth::Bearer(token), _) => request.bearer_auth(token),
            (Auth::Basic, Some(c)) => request.basic_auth(&c.username, Some(&c.password)),
            _ => request,
        };
        let response = match request.send().await {
            Ok(response) => response,
            // Too many redirects, an unbuildable request: trying again changes nothing.
            Err(e) if e.is_redirect() || e.is_builder() => {
                return Attempt::Done(Err(UpstreamError::Protocol(call.describe(e))));
            }
            Err(e) => return Attempt::Retryable(UpstreamError::Unavailable(call.describe(e))),
        };
        let status = response.status();
        if status.is_server_error() {
            return Attempt::Retryable(UpstreamError::Status(status.as_u16()));
        }
        if !status.is_success() {
            let refusal = Refusal {
                status,
                headers: response.headers().clone(),
                url: response.url().clone(),
            };
            return Attempt::Done(Ok(Err(refusal)));
        }
        let headers = response.headers().clone();
        let Some(limit) = call.buffer_limit else {
            return Attempt::Done(Ok(Ok(Answer {
                headers,
                status,
                body: AnswerBody::Unread(response),
            })));
        };
        match read_limited(response, limit).await {
            Ok(body) => Attempt::Done(Ok(Ok(Answer {
                headers,
                status,
                body: AnswerBody::Buffered(body),
            }))),
            Err(BodyError::TooLarge) => Attempt::Done(Err(UpstreamError::TooLarge { limit })),
            // Nothing was handed out yet, so a broken body is as retryable as a refused connect.
            Err(BodyError::Transport(e)) => {
                Attempt::Retryable(UpstreamError::Unavailable(call.describe(e)))
            }
        }
    }
}

impl Call {
    /// A failure of this call, naming our own URL (never a redirect target's).
    fn describe(&self, e: reqwest::Error) -> String {
        format!("{} {}: {}", self.method, self.url, describe(e))
    }
}

enum Attempt {
    Done(Result<Result<Answer, Refusal>, UpstreamError>),
    Retryable(UpstreamError),
}

impl Answer {
    fn buffered(&self) -> Result<Bytes, UpstreamError> {
        match &self.body {
            AnswerBody::Buffered(bytes) => Ok(bytes.clone()),
            AnswerBody::Unread(_) => Err(UpstreamError::Protocol(
                "internal: body was not buffered".into(),
            )),
        }
    }

    fn unread(self) -> Result<Response, UpstreamError> {
        match self.body {
            AnswerBody::Unread(response) => Ok(response),
            AnswerBody::Buffered(_) => Err(UpstreamError::Protocol(
                "internal: body was buffered".into(),
            )),
        }
    }
}

enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads a whole body, refusing more than `limit` bytes whatever `Content-Length` claims.
async fn read_limited(mut response: Response, limit: u64) -> Result<Bytes, BodyError> {
    if content_length(response.headers())
        .ok()
        .flatten()
        .is_some_and(|len| len > limit)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A failed body read as the `io::Error` a [`ByteStream`] yields.
fn body_error(e: reqwest::Error) -> std::io::Error {
    let kind = if e.is_timeout() {
        std::io::ErrorKind::TimedOut
    } else {
        std::io::ErrorKind::ConnectionAborted
    };
    UpstreamError::Unavailable(describe(e)).into_io(kind)
}

/// The error with its causes (reqwest's own message is often just "error sending request"),
/// without the URL: after a redirect that is a presigned object-store URL, whose signature
/// must not end up in logs.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

fn header_value(value: &str) -> Result<HeaderValue, UpstreamError> {
    HeaderValue::from_str(value)
        .map_err(|_| UpstreamError::Protocol(format!("bad header value {value:?}")))
}

fn header_str<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h str>, UpstreamError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| UpstreamError::Protocol(format!("{name} is not ASCII")))
        })
        .transpose()
}

fn header_digest(headers: &HeaderMap) -> Result<Option<Digest>, UpstreamError> {
    header_str(headers, &DOCKER_CONTENT_DIGEST)?
        .map(|v| {
            v.parse()
                .map_err(|e| UpstreamError::Protocol(format!("Docker-Content-Digest {v:?}: {e}")))
        })
        .transpose()
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, UpstreamError> {
    header_str(headers, &header::CONTENT_LENGTH)?
        .map(|v| {
            v.parse()
                .map_err(|_| UpstreamError::Protocol(format!("Content-Length {v:?}")))
        })
        .transpose()
}

/// `Content-Type` without parameters.
fn content_type(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next()?.trim();
    (!essence.is_empty()).then_some(essence)
}

/// Types some registries and object stores send for anything; they say nothing about a manifest.
fn is_generic_type(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/json" | "application/octet-stream" | "text/plain" | "binary/octet-stream"
    )
}

/// `Content-Range: bytes a-b/total` (or `/*`).
pub(super) fn content_range(headers: &HeaderMap) -> Result<ServedRange, UpstreamError> {
    let value = header_str(headers, &header::CONTENT_RANGE)?
        .ok_or_else(|| UpstreamError::Protocol("206 without Content-Range".into()))?;
    let bad = || UpstreamError::Protocol(format!("Content-Range {value:?}"));
    let spec = value.strip_prefix("bytes ").ok_or_else(bad)?;
    let (span, total) = spec.split_once('/').ok_or_else(bad)?;
    let (first, last) = span.split_once('-').ok_or_else(bad)?;
    let first: u64 = first.trim().parse().map_err(|_| bad())?;
    let last: u64 = last.trim().parse().map_err(|_| bad())?;
    let total = match total.trim() {
        "*" => None,
        n => Some(n.parse::<u64>().map_err(|_| bad())?),
    };
    let end = last.checked_add(1).ok_or_else(bad)?;
    if last < first || total.is_some_and(|t| last >= t) {
        return Err(bad());
    }
    Ok(ServedRange {
        range: first..end,
        total,
    })
}

/// `Retry-After` as delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = parse_http_date(value)?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only HTTP-date form senders may generate.
pub(super) fn parse_http_date(value: &str) -> Option<SystemTime> {
    let (_weekday, rest) = value.split_once(", ")?;
    let mut parts = rest.split(' ');
    let day: u32 = parts.next()?.parse().ok()?;
    let month_name = parts.next()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month_name)? as u32
        + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || parts.next().is_some() || hms.next().is_some() {
        return None;
    }
    // Four-digit years only (the format's), which also keeps the arithmetic from overflowing.
    if !(1970..=9999).contains(&year) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + s;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
