//! The pull-through mirror: maps a request to an upstream (by `?ns=`, by path prefix, or the
//! default), then serves manifests and blobs from the disk cache, revalidating tags after
//! their TTL, coalescing blob misses into one origin fetch, and serving stale content when the
//! origin fails. Independent of pingora: it takes an [`EdgeRequest`] and returns an
//! [`EdgeResponse`], which `proxy.rs` writes to the client.

use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::Method;
use wildmatch::WildMatch;

use super::cache::DiskCache;
use super::fill::{FillError, Fills};
use crate::config::MirrorUpstream;
use crate::locks::KeyedLocks;
use crate::oci::manifest::accepts;
use crate::oci::path;
use crate::oci::range::{RangeRequest, content_range, unsatisfied_content_range};
use crate::oci::{Digest, ErrorCode, ErrorEnvelope, Reference, RepoName, Tag, V2Route};
use crate::telemetry::metrics;
use crate::upstream::{FetchedBlob, UpstreamClient, UpstreamError};

/// What the mirror needs from a request.
#[derive(Debug, Clone)]
pub struct EdgeRequest {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    /// `Accept` header values.
    pub accept: Vec<String>,
    pub range: Option<String>,
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

/// The mirror over every configured upstream.
pub struct Mirror {
    sites: Vec<Site>,
    default_site: Option<usize>,
    cache: Arc<DiskCache>,
    fills: Arc<Fills>,
    /// Single-flight for manifest lookups: concurrent cold pulls of one tag send one
    /// revalidation and one fetch upstream; the others then find the cache filled.
    manifest_locks: KeyedLocks<String>,
}

impl Mirror {
    pub fn new(
        upstreams: &[MirrorUpstream],
        cache: Arc<DiskCache>,
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
        Ok(Mirror {
            sites,
            default_site,
            cache,
            fills: Arc::new(Fills::default()),
            manifest_locks: KeyedLocks::default(),
        })
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

    /// Answers a request from the named upstream (gateway mode: the core the balancer chose).
    pub async fn handle_at(&self, upstream: &str, request: &EdgeRequest) -> EdgeResponse {
        let route = match self.route(request) {
            Ok(route) => route,
            Err(response) => return response,
        };
        match self.sites.iter().find(|s| s.name == upstream) {
            Some(site) => self.serve(site, route, request).await,
            None => EdgeResponse::error(
                ErrorCode::Unavailable,
                format!("no upstream named {upstream}"),
            ),
        }
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
                self.blob(site, &name, &digest, request.range.as_deref(), head)
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
            Reference::Digest(digest) => self
                .manifest_by_digest(site, repo, digest)
                .await
                .map(|(m, b)| (digest.clone(), m, b, false)),
            Reference::Tag(tag) => self.manifest_by_tag(site, repo, tag).await,
        };
        let (digest, media_type, body, stale) = match result {
            Ok(found) => found,
            Err(response) => return response,
        };
        if matches!(reference, Reference::Tag(_))
            && !accepts(request.accept.iter().map(String::as_str), &media_type)
        {
            return EdgeResponse::error(
                ErrorCode::ManifestUnknown,
                format!("the tag points at a {media_type} manifest, which Accept does not allow"),
            );
        }
        let mut response = EdgeResponse::new(200)
            .header("content-type", media_type)
            .header("content-length", body.len().to_string())
            .header("docker-content-digest", digest.to_string())
            .header("etag", format!("\"{digest}\""));
        if stale {
            metrics().edge.stale_serves.inc();
            response = response
                .header("warning", "110 - \"Response is Stale\"")
                .header("x-aerugo-cache", "STALE");
        }
        if !head {
            response.body = EdgeBody::Full(body);
        }
        response
    }

    async fn manifest_by_digest(
        &self,
        site: &Site,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(String, Bytes), EdgeResponse> {
        if let Some(found) = self.cached_manifest(digest).await {
            metrics()
                .edge
                .cache_hits
                .with_label_values(&["manifest"])
                .inc();
            return Ok(found);
        }
        let _flight = self
            .manifest_locks
            .lock(&format!("{}/{repo}@{digest}", site.name))
            .await;
        if let Some(found) = self.cached_manifest(digest).await {
            return Ok(found);
        }
        metrics()
            .edge
            .cache_misses
            .with_label_values(&["manifest"])
            .inc();
        let fetched = self
            .fetch_manifest(site, repo, &Reference::Digest(digest.clone()))
            .await?;
        Ok((fetched.1, fetched.2))
    }

    /// The tag's manifest when the tag was validated within its TTL.
    async fn fresh_tag(
        &self,
        site: &Site,
        repo: &RepoName,
        tag: &Tag,
    ) -> Option<(Digest, String, Bytes, bool)> {
        let (digest, validated) = self.cached_tag(site, repo, tag).await?;
        if age_of(validated) >= site.tag_ttl {
            return None;
        }
        let (media_type, body) = self.cached_manifest(&digest).await?;
        metrics().edge.cache_hits.with_label_values(&["tag"]).inc();
        Some((digest, media_type, body, false))
    }

    /// A tag: trusted within its TTL, revalidated with a `HEAD` after it, re-fetched only when
    /// the digest moved, and served stale (within `max_stale`) when the upstream fails.
    async fn manifest_by_tag(
        &self,
        site: &Site,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<(Digest, String, Bytes, bool), EdgeResponse> {
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
        let age = cached.as_ref().map(|(_, validated)| age_of(*validated));
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
                    return Ok((digest.clone(), media_type, body, false));
                }
                let (digest, media_type, body) = self
                    .fetch_manifest(site, repo, &Reference::Tag(tag.clone()))
                    .await?;
                self.store_tag(site, repo, tag, &digest).await;
                Ok((digest, media_type, body, false))
            }
            Ok(None) => Err(EdgeResponse::error(
                ErrorCode::ManifestUnknown,
                format!("{repo}:{tag} is not known to {}", site.name),
            )),
            Err(e) => {
                upstream_error(&site.name, &e);
                let within = age.is_some_and(|age| age < site.tag_ttl + site.max_stale);
                if e.is_transient()
                    && within
                    && let Some((digest, _)) = &cached
                    && let Some((media_type, body)) = self.cached_manifest(digest).await
                {
                    return Ok((digest.clone(), media_type, body, true));
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
    ) -> Result<(Digest, String, Bytes), EdgeResponse> {
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
                Ok((m.digest, m.media_type, m.body))
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

    async fn blob(
        &self,
        site: &Site,
        repo: &RepoName,
        digest: &Digest,
        range: Option<&str>,
        head: bool,
    ) -> EdgeResponse {
        if let Some((path, size)) = self.cache.blob(digest) {
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
        let (client, upstream) = (site.client.clone(), site.name.clone());
        let (repo_owned, digest_owned) = (repo.clone(), digest.clone());
        let joined = self.fills.join_or_start(digest, &self.cache, async move {
            let fetched = client.get_blob(&repo_owned, &digest_owned, None).await?;
            Ok(fetched.map(|blob| counting_body_errors(upstream, blob)))
        });
        let fill = match joined {
            Ok((fill, started)) => {
                if started {
                    fetch_count(site, "blob");
                }
                fill
            }
            Err(e) => {
                return EdgeResponse::error(
                    ErrorCode::Unknown,
                    format!("edge cache unusable: {e}"),
                );
            }
        };
        let size = match fill.size().await {
            Ok(size) => size,
            Err(e) => {
                return match &*e {
                    FillError::NotFound => EdgeResponse::error(
                        ErrorCode::BlobUnknown,
                        format!("{digest} is not known to {}", site.name),
                    ),
                    FillError::Upstream(u) => {
                        upstream_error(&site.name, u);
                        unavailable(site, u)
                    }
                    FillError::Io(io) => {
                        EdgeResponse::error(ErrorCode::Unknown, format!("edge cache: {io}"))
                    }
                };
            }
        };
        // A fill that already verified its bytes (its cache commit still running) serves them
        // from disk like the cache would: that is a hit, not a wait on the origin.
        let source = if fill.is_verified() { "cache" } else { "fill" };
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
    let code = match e {
        UpstreamError::RateLimited { .. } => ErrorCode::TooManyRequests,
        UpstreamError::Unauthorized => ErrorCode::Denied,
        _ => ErrorCode::Unavailable,
    };
    let response = EdgeResponse::error(
        code,
        format!(
            "upstream {} failed and the content is not cached: {e}",
            site.name
        ),
    );
    match e {
        // Pass the upstream's back-off on, so clients do not hammer the edge meanwhile.
        UpstreamError::RateLimited {
            retry_after: Some(after),
        } => response.header("retry-after", after.as_secs().max(1).to_string()),
        _ => response,
    }
}

/// How long ago `validated` was (zero for a clock that went backwards).
fn age_of(validated: SystemTime) -> Duration {
    SystemTime::now()
        .duration_since(validated)
        .unwrap_or_default()
}
