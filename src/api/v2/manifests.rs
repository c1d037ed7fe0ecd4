//! Manifest `GET`/`HEAD`/`PUT`/`DELETE`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::{HandlerResult, Request, append_header, set_header};
use crate::oci::{Reference, RepoName, Tag};
use crate::registry::{Registry, RegistryError};
use crate::telemetry::metrics;

pub(super) async fn get(
    registry: &Registry,
    name: &RepoName,
    reference: &Reference,
    request: Request,
) -> HandlerResult {
    let accept = request
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let record = registry.get_manifest(name, reference, accept).await?;
    let len = record.body.len();
    if request.method == axum::http::Method::GET {
        metrics().bytes_sent.inc_by(len as u64);
    }
    let mut response = record.body.into_response();
    set_header(&mut response, "content-type", &record.media_type);
    set_header(&mut response, "content-length", len.to_string());
    set_header(
        &mut response,
        "docker-content-digest",
        record.digest.as_str(),
    );
    set_header(&mut response, "etag", format!("\"{}\"", record.digest));
    Ok(response)
}

pub(super) async fn put(
    registry: &Registry,
    name: &RepoName,
    reference: &Reference,
    request: Request,
    body: axum::body::Body,
) -> HandlerResult {
    let limit = registry.settings().max_manifest_bytes;
    if request.content_length().is_some_and(|len| len > limit) {
        return Err(RegistryError::ManifestTooLarge { limit }.into());
    }
    let content_type = request.header(header::CONTENT_TYPE).map(str::to_owned);
    let extra_tags = request
        .query()
        .into_iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| v.parse::<Tag>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(RegistryError::from)?;
    let tagged_by_query = !extra_tags.is_empty();
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let body = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(RegistryError::ManifestTooLarge { limit }.into());
        }
        Err(e) => {
            return Err(RegistryError::ManifestInvalid(format!(
                "could not read the manifest: {e}"
            ))
            .into());
        }
    };
    let outcome = registry
        .put_manifest(name, reference, content_type.as_deref(), body, extra_tags)
        .await?;
    let mut response: Response = StatusCode::CREATED.into_response();
    set_header(
        &mut response,
        "location",
        request.location(&format!("/v2/{name}/manifests/{}", outcome.digest)),
    );
    set_header(
        &mut response,
        "docker-content-digest",
        outcome.digest.as_str(),
    );
    set_header(&mut response, "content-length", "0");
    if let Some(subject) = &outcome.subject {
        set_header(&mut response, "oci-subject", subject.as_str());
    }
    if tagged_by_query {
        for tag in &outcome.tags {
            append_header(&mut response, "oci-tag", tag.as_str());
        }
    }
    Ok(response)
}

pub(super) async fn delete(
    registry: &Registry,
    name: &RepoName,
    reference: &Reference,
) -> HandlerResult {
    registry.delete_manifest(name, reference).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
