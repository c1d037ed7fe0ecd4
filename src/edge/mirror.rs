//! The pull-through mirror: maps a request to an upstream (by `?ns=`, by path prefix, or the
//! default), then serves manifests and blobs from the disk cache, revalidating tags after
//! their TTL, coalescing blob misses into one origin fetch, and serving stale content when the
//! origin fails. Independent of pingora: it takes an [`EdgeRequest`] and returns an
//! [`EdgeResponse`], which `proxy.rs` writes to the client.
//!
//! Cached content by digest goes out only under a [`ConfirmKey`] the origin confirmed
//! (`confirm.rs`): a mirror's upstream for (upstream, repository), a gateway's core for
//! (repository, client) — the client being a verified token's subject (`jwks.rs`), and a token
//! without pull on the repository, or invalid, never served.

use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::Method;
use wildmatch::WildMatch;

use super::cache::DiskCache;
use super::confirm::{
    Caller, ClientCredentials, ConfirmKey, Confirmations, Outcome, Standing, age_of,
};
use super::fill::{FillError, Fills};
use super::jwks::{Presented, TokenKeys, grants_pull};
use crate::config::MirrorUpstream;
use crate::locks::KeyedLocks;
use crate::oci::manifest::{self, accepts};
use crate::oci::path;
use crate::oci::range::{RangeRequest, content_range, unsatisfied_content_range};
use crate::oci::{Digest, ErrorCode, ErrorEnvelope, Reference, RepoName, Tag, V2Route};
use crate::telemetry::metrics;
use crate::upstream::{ClientAnswer, FetchedBlob, UpstreamClient, UpstreamError};

/// What the mirror needs from a request.
#[derive(Debug, Clone)]
pub struct EdgeRequest {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    /// `Accept` header values.
    pub accept: Vec<String>,
    pub range: Option<String>,
    /// What a gateway passes to a core when it asks on the client's behalf.
    pub credentials: ClientCredentials,
}

pub type BodyStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

pub enum EdgeBody {
    Empty,
    Full(Bytes),
    /// A body that may fail part-way; the connection is then aborted.
    Stream(BodyStream),
}

pub struct EdgeResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: EdgeBody,
}

impl EdgeResponse {
    fn new(status: u16) -> EdgeResponse {
        EdgeResponse {
            status,
            headers: vec![("docker-distribution-api-version", "registry/2.0".into())],
            body: EdgeBody::Empty,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> EdgeResponse {
        self.headers.push((name, value.into()));
        self
    }

    /// A path that is no endpoint: `404` with the `UNSUPPORTED` envelope, as the core answers.
    pub fn not_found() -> EdgeResponse {
        let mut response = EdgeResponse::error(
            ErrorCode::Unsupported,
            "no such endpoint in the distribution API",
        );
        response.status = 404;
        response
    }

    /// An OCI error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> EdgeResponse {
        let body = ErrorEnvelope::single(code, Some(message.into()), None).to_json();
        let mut response = EdgeResponse::new(code.status())
            .header("content-type", "application/json")
            .header("content-length", body.len().to_string());
        response.body = EdgeBody::Full(Bytes::from(body));
        response
    }
}

struct Site {
    name: String,
    /// `name`, as the origin of this upstream's confirmations.
    origin: Arc<str>,
    aliases: Vec<String>,
    client: UpstreamClient,
    tag_ttl: Duration,
    max_stale: Duration,
    allow: Vec<WildMatch>,
    deny: Vec<WildMatch>,
}

impl Site {
    fn permits(&self, repo: &RepoName) -> bool {
        let name = repo.as_str();
        (self.allow.is_empty() || self.allow.iter().any(|p| p.matches(name)))
            && !self.deny.iter().any(|p| p.matches(name))
    }

    fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.iter().any(|a| a == name)
    }
}

/// Why the mirror refuses `_catalog`, tag lists and referrers: they would list the upstream's
/// content, which it does not keep.
const MANIFESTS_AND_BLOBS_ONLY: &str = "the mirror serves manifests and blobs only";

/// The origin name of a gateway's confirmations: all its cores serve one registry.
const CORES: &str = "cores";

/// Where a read goes that the cache cannot settle alone, and whose word lets cached content
/// out.
#[derive(Clone, Copy)]
enum Origin<'a> {
    /// Mirror mode: the upstream, asked with the edge's own credentials, for every client
    /// alike.
    Upstream(&'a Site),
    /// Gateway mode: the core the balancer chose (none when no core is healthy), asked with
    /// the client's credentials, for that client only.
    Core {
        site: Option<&'a Site>,
        credentials: &'a ClientCredentials,
        caller: Caller,
    },
}

impl Origin<'_> {
    fn site(&self) -> Option<&Site> {
        match self {
            Origin::Upstream(site) => Some(site),
            Origin::Core { site, .. } => *site,
        }
    }

    fn key(&self, repo: &RepoName, digest: &Digest) -> ConfirmKey {
        let (origin, caller) = match self {
            Origin::Upstream(site) => (Arc::clone(&site.origin), Caller::ANONYMOUS),
            Origin::Core { caller, .. } => (Arc::from(CORES), *caller),
        };
        ConfirmKey {
            origin,
            repo: repo.clone(),
            digest: digest.clone(),
            caller,
        }
    }

    /// Whether the origin answering a fill's own fetch confirms the read: a mirror's upstream
    /// sees the edge for every client alike; a core would judge the edge, not the client.
    fn fill_confirms(&self) -> bool {
        matches!(self, Origin::Upstream(_))
    }
}

/// What a confirmation is asked about: the origin's `HEAD` differs.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Blob,
    Manifest,
}

/// What the origin said when asked to confirm.
enum Verdict {
    Confirmed,
    /// Not there, or not for this caller: the answer to send instead of the bytes.
    Refused(EdgeResponse),
    /// The origin could not be asked; the answer to send when no confirmation is recent enough.
    Unreachable(EdgeResponse),
}

/// A manifest as served, with the confirmation it was served on.
struct FoundManifest {
    digest: Digest,
    media_type: String,
    body: Bytes,
    /// Served stale because the upstream failed to revalidate its tag.
    stale: bool,
    /// When the upstream last vouched for it in this repository.
    confirmed: SystemTime,
}

/// The mirror over every configured upstream.
pub struct Mirror {
    sites: Vec<Site>,
    default_site: Option<usize>,
    cache: Arc<DiskCache>,
    fills: Arc<Fills>,
    confirmations: Arc<Confirmations>,
    /// Single-flight for manifest lookups: concurrent cold pulls of one tag send one
    /// revalidation and one fetch upstream; the others then find the cache filled.
    manifest_locks: KeyedLocks<String>,
}

impl Mirror {
    /// The mirror of `upstreams` (a gateway's: one per core). Confirmations that the tag records
    /// in `cache` still vouch for are recalled, so a restarted edge serves what it served
    /// before without asking an upstream that may be down.
    pub fn new(
        upstreams: &[MirrorUpstream],
        cache: Arc<DiskCache>,
        confirmations: Confirmations,
    ) -> Result<Mirror, UpstreamError> {
        let mut sites = Vec::new();
        for u in upstreams {
            let mut aliases = u.aliases.clone();
            aliases.extend(url_hosts(&u.client.url));
            if aliases
                .iter()
                .any(|a| a == "registry-1.docker.io" || a == "index.docker.io")
            {
                aliases.push("docker.io".into());
            }
            sites.push(Site {
                name: u.client.name.clone(),
                origin: u.client.name.as_str().into(),
                aliases,
                client: UpstreamClient::new(&u.client)?,
                tag_ttl: Duration::from_secs(u.tag_ttl_seconds),
                max_stale: Duration::from_secs(u.max_stale_seconds),
                allow: u.allow.iter().map(|p| WildMatch::new(p)).collect(),
                deny: u.deny.iter().map(|p| WildMatch::new(p)).collect(),
            });
        }
        let default_site = upstreams
            .iter()
            .position(|u| u.default)
            .or(if sites.len() == 1 { Some(0) } else { None });
        let mirror = Mirror {
            sites,
            default_site,
            cache,
            fills: Arc::new(Fills::default()),
            confirmations: Arc::new(confirmations),
            manifest_locks: KeyedLocks::default(),
        };
        mirror.recall_confirmations();
        Ok(mirror)
    }

    pub fn cache(&self) -> &Arc<DiskCache> {
        &self.cache
    }

    /// Answers one `/v2/` request, choosing the upstream from the request.
    pub async fn handle(&self, request: &EdgeRequest) -> EdgeResponse {
        let route = match self.route(request) {
            Ok(route) => route,
            Err(response) => return response,
        };
        match self.select(&route, request.query.as_deref()) {
            Ok((site, route)) => self.serve(site, route, request).await,
            Err(response) => response,
        }
    }

    /// Gateway mode: a blob read, from the cache or fetched from `core` (the core the balancer
    /// chose, `None` when no core is healthy), once the core showed the blob in that
    /// repository to this client. A bearer token is checked against the cores' `keys` first:
    /// a valid one granting pull on the repository makes its subject the caller; any other
    /// is never served.
    pub async fn handle_for_client(
        &self,
        core: Option<&str>,
        request: &EdgeRequest,
        keys: &TokenKeys,
    ) -> EdgeResponse {
        let (name, digest) = match self.route(request) {
            Ok(V2Route::Blob { name, digest }) => (name, digest),
            Ok(_) => return EdgeResponse::error(ErrorCode::Unsupported, MANIFESTS_AND_BLOBS_ONLY),
            Err(response) => return response,
        };
        let credentials = &request.credentials;
        let site = core.and_then(|core| self.sites.iter().find(|s| s.name == core));
        let caller = match keys.check(credentials.authorization.as_ref()).await {
            Presented::Header => credentials.caller(),
            Presented::Valid(claims) if grants_pull(&claims, &name) => {
                Caller::from_subject(&claims.sub)
            }
            Presented::Valid(_) => {
                let challenge = keys.challenge(credentials, &name, true);
                return refuse_token(site, &name, &digest, credentials, challenge).await;
            }
            Presented::Refused => {
                let challenge = keys.challenge(credentials, &name, false);
                return refuse_token(site, &name, &digest, credentials, challenge).await;
            }
        };
        let origin = Origin::Core {
            site,
            credentials,
            caller,
        };
        self.blob(origin, &name, &digest, request).await
    }

    /// Parses the path and refuses what a read-only mirror cannot do.
    fn route(&self, request: &EdgeRequest) -> Result<V2Route, EdgeResponse> {
        let read = request.method == Method::GET || request.method == Method::HEAD;
        let route = match path::parse(&request.path) {
            Ok(route) => route,
            Err(e) => {
                return Err(match e.code(read) {
                    None => EdgeResponse::not_found(),
                    Some(code) => {
                        EdgeResponse::error(code, "invalid repository name, reference or digest")
                    }
                });
            }
        };
        match route {
            V2Route::Base if read => Err(EdgeResponse::new(200)
                .header("content-type", "application/json")
                .with_body(Bytes::from_static(b"{}"))),
            V2Route::Base => Err(EdgeResponse::error(
                ErrorCode::Unsupported,
                format!("{} is not supported on this endpoint", request.method),
            )),
            _ if !read => Err(EdgeResponse::error(
                ErrorCode::Unsupported,
                "this edge is a read-only mirror of its upstreams",
            )),
            route => Ok(route),
        }
    }

    async fn serve(&self, site: &Site, route: V2Route, request: &EdgeRequest) -> EdgeResponse {
        let head = request.method == Method::HEAD;
        match route {
            V2Route::Manifest { name, reference } => {
                self.manifest(site, &name, &reference, request, head).await
            }
            V2Route::Blob { name, digest } => {
                self.blob(Origin::Upstream(site), &name, &digest, request)
                    .await
            }
            _ => EdgeResponse::error(ErrorCode::Unsupported, MANIFESTS_AND_BLOBS_ONLY),
        }
    }

    /// Picks the upstream: `?ns=`, then a first path component naming an upstream, then the
    /// default. Returns the route with that prefix removed.
    fn select(
        &self,
        route: &V2Route,
        query: Option<&str>,
    ) -> Result<(&Site, V2Route), EdgeResponse> {
        let name = route
            .name()
            .ok_or_else(|| EdgeResponse::error(ErrorCode::Unsupported, MANIFESTS_AND_BLOBS_ONLY))?;
        let ns = query.and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "ns")
                .map(|(_, v)| v.into_owned())
        });
        let (site, route) = if let Some(ns) = ns {
            let site = self
                .sites
                .iter()
                .find(|s| s.answers_to(&ns))
                .ok_or_else(|| {
                    EdgeResponse::error(
                        ErrorCode::NameUnknown,
                        format!("no upstream is configured for {ns}"),
                    )
                })?;
            (site, route.clone())
        } else if let Some((site, rest)) = self.by_prefix(name) {
            (site, with_name(route, rest))
        } else {
            let index = self.default_site.ok_or_else(|| {
                EdgeResponse::error(
                    ErrorCode::NameUnknown,
                    "no default upstream: prefix the name with an upstream or use ?ns=",
                )
            })?;
            (&self.sites[index], route.clone())
        };
        let repo = route
            .name()
            .cloned()
            .ok_or_else(|| EdgeResponse::error(ErrorCode::Unsupported, MANIFESTS_AND_BLOBS_ONLY))?;
        if !site.permits(&repo) {
            return Err(EdgeResponse::error(
                ErrorCode::Denied,
                format!("{repo} is not mirrored from {}", site.name),
            ));
        }
        Ok((site, route))
    }

    fn by_prefix(&self, name: &RepoName) -> Option<(&Site, RepoName)> {
        let (first, rest) = name.as_str().split_once('/')?;
        let site = self.sites.iter().find(|s| s.answers_to(first))?;
        Some((site, rest.parse().ok()?))
    }

    async fn manifest(
        &self,
        site: &Site,
        repo: &RepoName,
        reference: &Reference,
        request: &EdgeRequest,
        head: bool,
    ) -> EdgeResponse {
        let result = match reference {
            Reference::Digest(digest) => self.manifest_by_digest(site, repo, digest).await,
            Reference::Tag(tag) => self.manifest_by_tag(site, repo, tag).await,
        };
        let found = match result {
            Ok(found) => found,
            Err(response) => return response,
        };
        if matches!(reference, Reference::Tag(_))
            && !accepts(request.accept.iter().map(String::as_str), &found.media_type)
        {
            return EdgeResponse::error(
                ErrorCode::ManifestUnknown,
                format!(
                    "the tag points at a {} manifest, which Accept does not allow",
                    found.media_type
                ),
            );
        }
        self.confirm_manifest(site, repo, &found);
        let mut response = EdgeResponse::new(200)
            .header("content-type", found.media_type)
            .header("content-length", found.body.len().to_string())
            .header("docker-content-digest", found.digest.to_string())
            .header("etag", format!("\"{}\"", found.digest));
        if found.stale {
            metrics().edge.stale_serves.inc();
            response = response
                .header("warning", "110 - \"Response is Stale\"")
                .header("x-aerugo-cache", "STALE");
        }
        if !head {
            response.body = EdgeBody::Full(found.body);
        }
        response
    }

    /// A manifest the upstream vouched for in `repo` vouches, as of then, for what it
    /// references there: the registry accepted it only with those blobs and child manifests in
    /// the repository. Returns the child manifests (of an index).
    fn confirm_manifest(&self, site: &Site, repo: &RepoName, found: &FoundManifest) -> Vec<Digest> {
        let origin = Origin::Upstream(site);
        self.confirmations
            .record(origin.key(repo, &found.digest), found.confirmed);
        let Ok(info) = manifest::parse(Some(&found.media_type), &found.body) else {
            return Vec::new();
        };
        for referenced in info.blobs.iter().chain(&info.children) {
            self.confirmations
                .record(origin.key(repo, &referenced.digest), found.confirmed);
        }
        info.children
            .into_iter()
            .map(|child| child.digest)
            .collect()
    }

    /// Re-derives the confirmations of a restarted edge from the tags it cached: each tag
    /// validated within the stale window vouches, as of its validation, for its manifest, what
    /// that references, and what the cached child manifests of an index reference. Blocking
    /// (start-up).
    fn recall_confirmations(&self) {
        let Some(since) = SystemTime::now().checked_sub(self.confirmations.stale_for()) else {
            return;
        };
        for record in self.cache.tags_validated_since(since) {
            let Some(site) = self.sites.iter().find(|s| s.name == record.upstream) else {
                continue;
            };
            let mut pending = vec![record.digest];
            // The tag's manifest, then (for an index) its children: two levels.
            for _ in 0..2 {
                let mut children = Vec::new();
                for digest in pending {
                    if let Some((media_type, body)) = self.cache.manifest(&digest) {
                        let found = FoundManifest {
                            digest,
                            media_type,
                            body,
                            stale: false,
                            confirmed: record.validated,
                        };
                        children.extend(self.confirm_manifest(site, &record.repo, &found));
                    }
                }
                pending = children;
            }
        }
    }

    /// A manifest by digest: from the disk once the upstream vouches for it in `repo`, or one
    /// fetch.
    async fn manifest_by_digest(
        &self,
        site: &Site,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<FoundManifest, EdgeResponse> {
        if let Some(found) = self.admitted_manifest(site, repo, digest).await {
            if found.is_ok() {
                metrics()
                    .edge
                    .cache_hits
                    .with_label_values(&["manifest"])
                    .inc();
            }
            return found;
        }
        let _flight = self
            .manifest_locks
            .lock(&format!("{}/{repo}@{digest}", site.name))
            .await;
        if let Some(found) = self.admitted_manifest(site, repo, digest).await {
            return found;
        }
        metrics()
            .edge
            .cache_misses
            .with_label_values(&["manifest"])
            .inc();
        self.fetch_manifest(site, repo, &Reference::Digest(digest.clone()))
            .await
    }

    /// The cached manifest `digest`, if there is one, once admitted for (upstream, `repo`).
    async fn admitted_manifest(
        &self,
        site: &Site,
        repo: &RepoName,
        digest: &Digest,
    ) -> Option<Result<FoundManifest, EdgeResponse>> {
        let (media_type, body) = self.cached_manifest(digest).await?;
        let origin = Origin::Upstream(site);
        let admitted = self
            .admit(origin, &origin.key(repo, digest), Kind::Manifest)
            .await;
        Some(admitted.map(|confirmed| FoundManifest {
            digest: digest.clone(),
            media_type,
            body,
            stale: false,
            confirmed,
        }))
    }

    /// The tag's manifest when the tag was validated within its TTL. The tag is trusted that
    /// long, so its manifest counts as vouched for now.
    async fn fresh_tag(&self, site: &Site, repo: &RepoName, tag: &Tag) -> Option<FoundManifest> {
        let (digest, validated) = self.cached_tag(site, repo, tag).await?;
        if age_of(validated) >= site.tag_ttl {
            return None;
        }
        let (media_type, body) = self.cached_manifest(&digest).await?;
        metrics().edge.cache_hits.with_label_values(&["tag"]).inc();
        Some(FoundManifest {
            digest,
            media_type,
            body,
            stale: false,
            confirmed: SystemTime::now(),
        })
    }

    /// A tag: trusted within its TTL, revalidated with a `HEAD` after it, re-fetched only when
    /// the digest moved, and served stale (within `max_stale`) when the upstream fails.
    async fn manifest_by_tag(
        &self,
        site: &Site,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<FoundManifest, EdgeResponse> {
        if let Some(hit) = self.fresh_tag(site, repo, tag).await {
            return Ok(hit);
        }
        let _flight = self
            .manifest_locks
            .lock(&format!("{}/{repo}:{tag}", site.name))
            .await;
        // Whoever held the lock before us may have just revalidated the tag.
        if let Some(hit) = self.fresh_tag(site, repo, tag).await {
            return Ok(hit);
        }
        let cached = self.cached_tag(site, repo, tag).await;
        let within_stale = cached
            .as_ref()
            .is_some_and(|(_, validated)| age_of(*validated) < site.tag_ttl + site.max_stale);
        metrics()
            .edge
            .cache_misses
            .with_label_values(&["tag"])
            .inc();
        fetch_count(site, "manifest_head");
        let head = site
            .client
            .head_manifest(repo, &Reference::Tag(tag.clone()))
            .await;
        match head {
            Ok(Some(head)) => {
                if let Some((digest, _)) = &cached
                    && *digest == head.digest
                    && let Some((media_type, body)) = self.cached_manifest(digest).await
                {
                    self.store_tag(site, repo, tag, digest).await;
                    return Ok(FoundManifest {
                        digest: digest.clone(),
                        media_type,
                        body,
                        stale: false,
                        confirmed: SystemTime::now(),
                    });
                }
                let found = self
                    .fetch_manifest(site, repo, &Reference::Tag(tag.clone()))
                    .await?;
                self.store_tag(site, repo, tag, &found.digest).await;
                Ok(found)
            }
            Ok(None) => Err(EdgeResponse::error(
                ErrorCode::ManifestUnknown,
                format!("{repo}:{tag} is not known to {}", site.name),
            )),
            Err(e) => {
                upstream_error(&site.name, &e);
                if e.is_transient()
                    && within_stale
                    && let Some((digest, validated)) = cached
                    && let Some((media_type, body)) = self.cached_manifest(&digest).await
                {
                    return Ok(FoundManifest {
                        digest,
                        media_type,
                        body,
                        stale: true,
                        confirmed: validated,
                    });
                }
                Err(unavailable(site, &e))
            }
        }
    }

    async fn fetch_manifest(
        &self,
        site: &Site,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<FoundManifest, EdgeResponse> {
        fetch_count(site, "manifest");
        match site.client.get_manifest(repo, reference).await {
            Ok(Some(m)) => {
                let cache = Arc::clone(&self.cache);
                let (digest, media_type, body) =
                    (m.digest.clone(), m.media_type.clone(), m.body.clone());
                let stored = tokio::task::spawn_blocking(move || {
                    cache.put_manifest(&digest, &media_type, &body)
                })
                .await;
                if !matches!(stored, Ok(Ok(()))) {
                    tracing::warn!(digest = %m.digest, "could not cache manifest");
                }
                Ok(FoundManifest {
                    digest: m.digest,
                    media_type: m.media_type,
                    body: m.body,
                    stale: false,
                    confirmed: SystemTime::now(),
                })
            }
            Ok(None) => Err(EdgeResponse::error(
                ErrorCode::ManifestUnknown,
                format!("{repo}:{reference} is not known to {}", site.name),
            )),
            Err(e) => {
                upstream_error(&site.name, &e);
                Err(unavailable(site, &e))
            }
        }
    }

    async fn cached_manifest(&self, digest: &Digest) -> Option<(String, Bytes)> {
        let cache = Arc::clone(&self.cache);
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || cache.manifest(&digest))
            .await
            .ok()
            .flatten()
    }

    async fn cached_tag(
        &self,
        site: &Site,
        repo: &RepoName,
        tag: &Tag,
    ) -> Option<(Digest, SystemTime)> {
        let (cache, name, repo, tag) = (
            Arc::clone(&self.cache),
            site.name.clone(),
            repo.clone(),
            tag.clone(),
        );
        tokio::task::spawn_blocking(move || cache.tag(&name, &repo, &tag))
            .await
            .ok()
            .flatten()
    }

    async fn store_tag(&self, site: &Site, repo: &RepoName, tag: &Tag, digest: &Digest) {
        let (cache, name, repo, tag, digest) = (
            Arc::clone(&self.cache),
            site.name.clone(),
            repo.clone(),
            tag.clone(),
            digest.clone(),
        );
        if !matches!(
            tokio::task::spawn_blocking(move || cache.put_tag(&name, &repo, &tag, &digest)).await,
            Ok(Ok(()))
        ) {
            tracing::warn!("could not record a tag in the edge cache");
        }
    }

    /// A blob read. A gateway settles the client's right before anything else; a mirror on a
    /// hit, or after joining a fill, unless the fill's own fetch confirmed it.
    async fn blob(
        &self,
        origin: Origin<'_>,
        repo: &RepoName,
        digest: &Digest,
        request: &EdgeRequest,
    ) -> EdgeResponse {
        let (range, head) = (request.range.as_deref(), request.method == Method::HEAD);
        let key = origin.key(repo, digest);
        let admitted_first = !origin.fill_confirms();
        if admitted_first && let Err(refusal) = self.admit(origin, &key, Kind::Blob).await {
            return refusal;
        }
        if let Some((path, size)) = self.cache.blob(digest) {
            if !admitted_first && let Err(refusal) = self.admit(origin, &key, Kind::Blob).await {
                return refusal;
            }
            metrics().edge.cache_hits.with_label_values(&["blob"]).inc();
            return serve_blob(
                digest,
                size,
                range,
                head,
                |r| Ok(Box::pin(super::fill::file_range_stream(path, r)) as BodyStream),
                "cache",
            )
            .await;
        }
        let Some(site) = origin.site() else {
            return no_healthy_core();
        };
        let fill = match self.join_fill(site, &key, origin.fill_confirms()) {
            Ok(fill) => fill,
            Err(e) => {
                return EdgeResponse::error(
                    ErrorCode::Unknown,
                    format!("edge cache unusable: {e}"),
                );
            }
        };
        // A fill that had already verified its bytes when this read came (its cache commit
        // still running) serves them from disk like the cache would: that is a hit, not a wait
        // on the origin. Told on arrival, so a read that started the fill is always a miss.
        let source = if fill.is_verified() { "cache" } else { "fill" };
        let size = match fill.size().await {
            Ok(size) => size,
            Err(e) => return fill_failed(site, digest, &e),
        };
        // A fill started for another repository (or upstream) shows this one nothing; the fill
        // for this key recorded its confirmation before `size` was known.
        if !admitted_first && let Err(refusal) = self.admit(origin, &key, Kind::Blob).await {
            return refusal;
        }
        let counter = if source == "cache" {
            &metrics().edge.cache_hits
        } else {
            &metrics().edge.cache_misses
        };
        counter.with_label_values(&["blob"]).inc();
        serve_blob(
            digest,
            size,
            range,
            head,
            |r| Ok(Box::pin(fill.read(r)) as BodyStream),
            source,
        )
        .await
    }

    /// Joins the fill of `key`'s digest, or starts one fetching it from `site` for `key`'s
    /// repository. With `confirms`, the upstream answering that fetch confirms `key`.
    fn join_fill(
        &self,
        site: &Site,
        key: &ConfirmKey,
        confirms: bool,
    ) -> std::io::Result<Arc<super::fill::Fill>> {
        let (client, upstream) = (site.client.clone(), site.name.clone());
        let confirmation = confirms.then(|| (Arc::clone(&self.confirmations), key.clone()));
        let (repo, digest) = (key.repo.clone(), key.digest.clone());
        let (fill, started) = self
            .fills
            .join_or_start(&key.digest, &self.cache, async move {
                let fetched = client.get_blob(&repo, &digest, None).await?;
                if fetched.is_some()
                    && let Some((confirmations, key)) = confirmation
                {
                    confirmations.record(key, SystemTime::now());
                }
                Ok(fetched.map(|blob| counting_body_errors(upstream, blob)))
            })?;
        if started {
            fetch_count(site, "blob");
        }
        Ok(fill)
    }

    /// Lets cached content for `key` out on a fresh confirmation, or once the origin confirms
    /// (recorded), or, while the origin cannot be asked, on a stale one; returns when the
    /// origin last vouched for it. Otherwise the origin's refusal, or why it could not be asked.
    async fn admit(
        &self,
        origin: Origin<'_>,
        key: &ConfirmKey,
        kind: Kind,
    ) -> Result<SystemTime, EdgeResponse> {
        let standing = self.confirmations.standing(key);
        if let Standing::Fresh(confirmed) = standing {
            Outcome::Hit.count();
            return Ok(confirmed);
        }
        let (outcome, admitted) = match (ask(origin, key, kind).await, standing) {
            (Verdict::Confirmed, _) => {
                let now = SystemTime::now();
                self.confirmations.record(key.clone(), now);
                (Outcome::Confirmed, Ok(now))
            }
            (Verdict::Refused(refusal), _) => {
                self.confirmations.forget(key);
                (Outcome::Refused, Err(refusal))
            }
            (Verdict::Unreachable(_), Standing::Stale(confirmed)) => {
                (Outcome::Stale, Ok(confirmed))
            }
            (Verdict::Unreachable(failure), _) => (Outcome::Unavailable, Err(failure)),
        };
        outcome.count();
        admitted
    }
}

/// Asks the origin whether it shows `key`'s digest in `key`'s repository (to `key`'s caller).
async fn ask(origin: Origin<'_>, key: &ConfirmKey, kind: Kind) -> Verdict {
    match origin {
        Origin::Upstream(site) => ask_upstream(site, key, kind).await,
        Origin::Core {
            site: Some(site),
            credentials,
            ..
        } => ask_core(site, key, credentials).await,
        Origin::Core { site: None, .. } => Verdict::Unreachable(no_healthy_core()),
    }
}

/// What an origin failure leaves a read without.
const UNCONFIRMED: &str = "has not confirmed the cached content";

/// A mirror's upstream, asked with the edge's credentials (and its token dance). One that is
/// down or rate limiting cannot answer; one that refuses the edge's credentials or lies
/// refuses.
async fn ask_upstream(site: &Site, key: &ConfirmKey, kind: Kind) -> Verdict {
    fetch_count(site, "confirm");
    let shown = match kind {
        Kind::Blob => site
            .client
            .head_blob(&key.repo, &key.digest)
            .await
            .map(|head| head.is_some()),
        Kind::Manifest => site
            .client
            .head_manifest(&key.repo, &Reference::Digest(key.digest.clone()))
            .await
            .map(|head| head.is_some()),
    };
    match shown {
        Ok(true) => Verdict::Confirmed,
        Ok(false) => Verdict::Refused(not_known(site, key, kind)),
        Err(e) => {
            upstream_error(&site.name, &e);
            let failure = upstream_failed(site, &e, UNCONFIRMED);
            if e.is_transient() {
                Verdict::Unreachable(failure)
            } else {
                Verdict::Refused(failure)
            }
        }
    }
}

/// A gateway's core, asked as the client (its `Authorization`, the gateway's `X-Forwarded-*`):
/// its refusal is relayed; a core that does not answer cannot be asked.
async fn ask_core(site: &Site, key: &ConfirmKey, credentials: &ClientCredentials) -> Verdict {
    fetch_count(site, "confirm");
    let answer = site
        .client
        .head_blob_as_client(&key.repo, &key.digest, credentials.headers())
        .await;
    match answer {
        Ok(ClientAnswer::Allowed) => Verdict::Confirmed,
        Ok(ClientAnswer::Refused { status, headers }) => {
            Verdict::Refused(relayed_refusal(status, &headers))
        }
        Err(e) => {
            upstream_error(&site.name, &e);
            Verdict::Unreachable(upstream_failed(site, &e, UNCONFIRMED))
        }
    }
}

/// A bearer token the gateway serves nothing to (the cores' keys refuse it, or it does not
/// grant pull on `repo`): the core's refusal when it gives one (its challenge may name a
/// configured realm), else `challenge`. No confirmation is recorded or dropped: one token says
/// nothing about its account's others.
async fn refuse_token(
    site: Option<&Site>,
    repo: &RepoName,
    digest: &Digest,
    credentials: &ClientCredentials,
    challenge: String,
) -> EdgeResponse {
    Outcome::Refused.count();
    if let Some(site) = site {
        let origin = Origin::Core {
            site: Some(site),
            credentials,
            caller: credentials.caller(),
        };
        match ask_core(site, &origin.key(repo, digest), credentials).await {
            Verdict::Refused(refusal) => return refusal,
            Verdict::Confirmed => tracing::warn!(
                %repo,
                "a core accepted a bearer token the gateway refuses; check [edge.gateway] \
                 service and issuer against the cores' [auth], and the clocks"
            ),
            Verdict::Unreachable(_) => {}
        }
    }
    EdgeResponse::error(
        ErrorCode::Unauthorized,
        format!("the token is invalid, expired or does not grant pull on {repo}"),
    )
    .header("www-authenticate", challenge)
}

impl EdgeResponse {
    fn with_body(mut self, body: Bytes) -> EdgeResponse {
        self.headers
            .push(("content-length", body.len().to_string()));
        self.body = EdgeBody::Full(body);
        self
    }
}

/// Builds a blob response (200 or 206/416 for `Range`) around a byte source.
async fn serve_blob(
    digest: &Digest,
    size: u64,
    range_header: Option<&str>,
    head: bool,
    open: impl FnOnce(Range<u64>) -> std::io::Result<BodyStream>,
    source: &'static str,
) -> EdgeResponse {
    let (status, range) = match RangeRequest::parse(range_header, size) {
        RangeRequest::Whole => (200, 0..size),
        RangeRequest::Part(part) => (206, part),
        RangeRequest::Unsatisfiable => {
            return EdgeResponse::error(
                ErrorCode::RangeInvalid,
                format!("the blob has {size} bytes"),
            )
            .header("content-range", unsatisfied_content_range(size));
        }
    };
    let mut response = EdgeResponse::new(status)
        .header("content-type", "application/octet-stream")
        .header("content-length", (range.end - range.start).to_string())
        .header("docker-content-digest", digest.to_string())
        .header("etag", format!("\"{digest}\""))
        .header("accept-ranges", "bytes")
        .header(
            "x-aerugo-cache",
            if source == "cache" { "HIT" } else { "MISS" },
        );
    if status == 206 {
        response = response.header("content-range", content_range(&range, size));
    }
    if head || range.is_empty() {
        return response;
    }
    match open(range) {
        Ok(stream) => {
            let counted = stream.inspect(move |chunk| {
                if let Ok(bytes) = chunk {
                    metrics()
                        .edge
                        .bytes_served
                        .with_label_values(&[source])
                        .inc_by(bytes.len() as u64);
                }
            });
            response.body = EdgeBody::Stream(Box::pin(counted));
            response
        }
        Err(e) => EdgeResponse::error(ErrorCode::Unknown, format!("edge cache: {e}")),
    }
}

fn with_name(route: &V2Route, name: RepoName) -> V2Route {
    match route.clone() {
        V2Route::Manifest { reference, .. } => V2Route::Manifest { name, reference },
        V2Route::Blob { digest, .. } => V2Route::Blob { name, digest },
        V2Route::Tags { .. } => V2Route::Tags { name },
        V2Route::Referrers { digest, .. } => V2Route::Referrers { name, digest },
        V2Route::UploadStart { .. } => V2Route::UploadStart { name },
        V2Route::Upload { id, .. } => V2Route::Upload { name, id },
        other => other,
    }
}

/// The names an upstream answers to by its URL: the host, and `host:port` when the URL has
/// an explicit port (containerd's `?ns=` names the registry as the image reference does, with
/// its port: `ns=registry.local:5000`).
fn url_hosts(url: &str) -> Vec<String> {
    let Ok(url) = reqwest::Url::parse(url) else {
        return Vec::new();
    };
    let Some(host) = url.host_str() else {
        return Vec::new();
    };
    let mut names = vec![host.to_owned()];
    if let Some(port) = url.port() {
        names.push(format!("{host}:{port}"));
    }
    names
}

fn fetch_count(site: &Site, kind: &str) {
    metrics()
        .edge
        .upstream_fetches
        .with_label_values(&[&site.name, kind])
        .inc();
}

fn upstream_error(upstream: &str, e: &UpstreamError) {
    let reason = match e {
        UpstreamError::RateLimited { .. } => "rate_limited",
        UpstreamError::Unavailable(_) => "unavailable",
        UpstreamError::DigestMismatch { .. } => "digest_mismatch",
        UpstreamError::Truncated { .. } => "truncated",
        UpstreamError::Unauthorized => "unauthorized",
        _ => "other",
    };
    metrics()
        .edge
        .upstream_errors
        .with_label_values(&[upstream, reason])
        .inc();
}

/// Counts the error that ends a blob body part-way (digest mismatch, truncation, a broken
/// connection) against the upstream, like the errors before the body.
fn counting_body_errors(upstream: String, mut blob: FetchedBlob) -> FetchedBlob {
    blob.stream = Box::pin(blob.stream.inspect(move |item| {
        if let Err(e) = item {
            let error = UpstreamError::from_io(e)
                .cloned()
                .unwrap_or_else(|| UpstreamError::Unavailable(e.to_string()));
            upstream_error(&upstream, &error);
        }
    }));
    blob
}

/// The OCI error for content the edge cannot serve because the upstream failed.
fn unavailable(site: &Site, e: &UpstreamError) -> EdgeResponse {
    upstream_failed(site, e, "the content is not cached")
}

/// The OCI error for an upstream failure, saying what it leaves the edge without.
fn upstream_failed(site: &Site, e: &UpstreamError, consequence: &str) -> EdgeResponse {
    let code = match e {
        UpstreamError::RateLimited { .. } => ErrorCode::TooManyRequests,
        UpstreamError::Unauthorized => ErrorCode::Denied,
        _ => ErrorCode::Unavailable,
    };
    let response = EdgeResponse::error(
        code,
        format!("upstream {} failed and {consequence}: {e}", site.name),
    );
    match e {
        // Pass the upstream's back-off on, so clients do not hammer the edge meanwhile.
        UpstreamError::RateLimited {
            retry_after: Some(after),
        } => response.header("retry-after", after.as_secs().max(1).to_string()),
        _ => response,
    }
}

/// Why a fill produced no bytes, as the client gets it.
fn fill_failed(site: &Site, digest: &Digest, e: &FillError) -> EdgeResponse {
    match e {
        FillError::NotFound => EdgeResponse::error(
            ErrorCode::BlobUnknown,
            format!("{digest} is not known to {}", site.name),
        ),
        FillError::Upstream(u) => {
            upstream_error(&site.name, u);
            unavailable(site, u)
        }
        FillError::Io(io) => EdgeResponse::error(ErrorCode::Unknown, format!("edge cache: {io}")),
    }
}

/// The answer when the origin does not have `key`'s digest in `key`'s repository.
fn not_known(site: &Site, key: &ConfirmKey, kind: Kind) -> EdgeResponse {
    let code = match kind {
        Kind::Blob => ErrorCode::BlobUnknown,
        Kind::Manifest => ErrorCode::ManifestUnknown,
    };
    EdgeResponse::error(
        code,
        format!("{}@{} is not known to {}", key.repo, key.digest, site.name),
    )
}

fn no_healthy_core() -> EdgeResponse {
    EdgeResponse::error(ErrorCode::Unavailable, "no healthy core")
}

/// A core's refusal as the client would have had it from the core: its status, its challenge
/// and back-off, and the error envelope its `GET` carries (a `HEAD` answer has no body to pass
/// on).
fn relayed_refusal(status: u16, headers: &http::HeaderMap) -> EdgeResponse {
    let code = match status {
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Denied,
        404 => ErrorCode::BlobUnknown,
        429 => ErrorCode::TooManyRequests,
        _ => ErrorCode::Unknown,
    };
    let mut response = EdgeResponse::error(code, code.describe().1);
    response.status = status;
    for name in ["www-authenticate", "retry-after"] {
        for value in headers.get_all(name) {
            if let Ok(value) = value.to_str() {
                response = response.header(name, value);
            }
        }
    }
    response
}
