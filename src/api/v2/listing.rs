//! `_catalog`, `tags/list` and `referrers`: the listing endpoints, with `n`/`last` pagination
//! and `Link` headers.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{HandlerResult, Request, set_header};
use crate::api::AppState;
use crate::api::error::{AccessError, ApiError};
use crate::oci::manifest::OCI_INDEX;
use crate::oci::scope::Action;
use crate::oci::{Digest, RepoName};
use crate::registry::{Registry, RegistryError};

/// `n` (capped at the configured page size; `None` when the client sent none) and `last`.
fn page(request: &Request, max: usize) -> Result<(Option<usize>, Option<String>), RegistryError> {
    let n = request
        .query_param("n")
        .map(|n| {
            n.parse::<usize>().map(|n| n.min(max)).map_err(|_| {
                RegistryError::PaginationInvalid(format!("n={n:?} is not a non-negative integer"))
            })
        })
        .transpose()?;
    Ok((n, request.query_param("last")))
}

/// A `Link: <…?n=N&last=LAST>; rel="next"` header when the page is full.
fn link_next(response: &mut Response, path: &str, n: usize, items: &[String]) {
    if n > 0
        && items.len() == n
        && let Some(last) = items.last()
    {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("n", &n.to_string())
            .append_pair("last", last)
            .finish();
        set_header(response, "link", format!("<{path}?{query}>; rel=\"next\""));
    }
}

pub(super) async fn catalog(state: &AppState, request: &Request) -> HandlerResult {
    let (n, last) = page(request, state.max_page_size)?;
    let n = n.unwrap_or(state.max_page_size);
    let repositories = if n == 0 {
        Vec::new()
    } else {
        match visible_page(state, request, last, n).await {
            Ok(page) => page,
            Err(refused) => return Ok(refused),
        }
    };
    let mut response =
        axum::Json(serde_json::json!({ "repositories": repositories })).into_response();
    link_next(&mut response, "/v2/_catalog", n, &repositories);
    Ok(response)
}

/// Up to `n` repositories after `last` that the caller may pull: the store's pages, filtered
/// by the policy, until the page is full or the store has no more.
async fn visible_page(
    state: &AppState,
    request: &Request,
    mut last: Option<String>,
    n: usize,
) -> Result<Vec<String>, Response> {
    let catalog = |last: Option<String>| async move {
        state
            .registry
            .catalog(last.as_deref(), n)
            .await
            .map_err(|e| ApiError(e).into_response())
    };
    let Some(identity) = &request.admission.identity else {
        return catalog(last).await;
    };
    let mut visible = Vec::new();
    loop {
        let page = catalog(last.take()).await?;
        let exhausted = page.len() < n;
        last = page.last().cloned();
        for name in page {
            let Ok(repo) = name.parse::<RepoName>() else {
                continue;
            };
            let allowed = state
                .auth
                .allowed(&identity.principal, &repo)
                .await
                .map_err(|e| AccessError::from(e).into_response())?;
            if allowed.contains(&Action::Pull) {
                visible.push(name);
                if visible.len() == n {
                    return Ok(visible);
                }
            }
        }
        if exhausted {
            return Ok(visible);
        }
    }
}

/// With `n`, one page and a `Link` to the next. Without it, the whole list: the spec's
/// unpaginated form, which clients that never follow `Link` rely on (distribution does the
/// same); it is read page by page from the store.
pub(super) async fn tags(state: &AppState, name: &RepoName, request: &Request) -> HandlerResult {
    let (n, last) = page(request, state.max_page_size)?;
    let tags = match n {
        Some(n) => {
            // The repository must exist even when the page is empty.
            let mut tags = state
                .registry
                .list_tags(name, last.as_deref(), n.max(1))
                .await?;
            tags.truncate(n);
            tags
        }
        None => all_tags(&state.registry, name, last, state.max_page_size).await?,
    };
    let mut response =
        axum::Json(serde_json::json!({ "name": name.as_str(), "tags": tags })).into_response();
    if let Some(n) = n {
        link_next(&mut response, &format!("/v2/{name}/tags/list"), n, &tags);
    }
    Ok(response)
}

async fn all_tags(
    registry: &Registry,
    name: &RepoName,
    mut last: Option<String>,
    page_size: usize,
) -> Result<Vec<String>, RegistryError> {
    let page_size = page_size.max(1);
    let mut tags = Vec::new();
    loop {
        let page = registry.list_tags(name, last.as_deref(), page_size).await?;
        let full = page.len() == page_size;
        last = page.last().cloned();
        tags.extend(page);
        if !full {
            return Ok(tags);
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<std::collections::BTreeMap<String, String>>,
}

pub(super) async fn referrers(
    registry: &Registry,
    name: &RepoName,
    digest: &Digest,
    request: &Request,
) -> HandlerResult {
    let artifact_type = request.query_param("artifactType");
    let referrers = registry
        .referrers(name, digest, artifact_type.as_deref())
        .await?;
    let manifests: Vec<Descriptor> = referrers
        .into_iter()
        .map(|r| Descriptor {
            media_type: r.media_type,
            digest: r.digest.to_string(),
            size: r.size,
            artifact_type: r.artifact_type,
            annotations: r.annotations,
        })
        .collect();
    let body =
        serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(OCI_INDEX),
    );
    if artifact_type.is_some() {
        set_header(&mut response, "oci-filters-applied", "artifactType");
    }
    Ok(response)
}
