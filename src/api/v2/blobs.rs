//! Blob `GET`/`HEAD` (with `Range`) and `DELETE`.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use futures_util::StreamExt;

use super::{HandlerResult, Request, set_header};
use crate::oci::range::{RangeRequest, content_range, unsatisfied_content_range};
use crate::oci::{Digest, RepoName};
use crate::registry::{Registry, RegistryError};
use crate::telemetry::metrics;

pub(super) async fn get(
    registry: &Registry,
    name: &RepoName,
    digest: &Digest,
    request: Request,
) -> HandlerResult {
    let size = registry.blob_size(name, digest).await?;
    let is_head = request.method == axum::http::Method::HEAD;
    let (status, range) = match RangeRequest::parse(request.header(header::RANGE), size) {
        RangeRequest::Whole => (StatusCode::OK, None),
        RangeRequest::Part(range) => (StatusCode::PARTIAL_CONTENT, Some(range)),
        RangeRequest::Unsatisfiable => {
            let mut response = super::super::error::ApiError(RegistryError::RangeInvalid(format!(
                "the blob has {size} bytes"
            )))
            .into_response();
            set_header(
                &mut response,
                "content-range",
                unsatisfied_content_range(size),
            );
            return Ok(response);
        }
    };
    // Bytes flow from the object store when it offers a URL (a `Range` too: the client
    // resends it there); a `HEAD` has no bytes, so the node answers it.
    if !is_head && let Some(url) = registry.blob_redirect(digest).await? {
        let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
        set_header(&mut response, "location", url);
        set_header(&mut response, "docker-content-digest", digest.as_str());
        return Ok(response);
    }
    let len = range.as_ref().map_or(size, |r| r.end - r.start);
    let body = if is_head {
        Body::empty()
    } else {
        let stream = registry.read_blob(digest, range.clone()).await?;
        let counted = stream.inspect(|chunk| {
            if let Ok(bytes) = chunk {
                metrics().bytes_sent.inc_by(bytes.len() as u64);
            }
        });
        Body::from_stream(counted)
    };
    let mut response = (status, body).into_response();
    set_header(&mut response, "content-length", len.to_string());
    set_header(&mut response, "content-type", "application/octet-stream");
    set_header(&mut response, "docker-content-digest", digest.as_str());
    set_header(&mut response, "etag", format!("\"{digest}\""));
    set_header(&mut response, "accept-ranges", "bytes");
    if let Some(range) = range {
        set_header(&mut response, "content-range", content_range(&range, size));
    }
    Ok(response)
}

pub(super) async fn delete(registry: &Registry, name: &RepoName, digest: &Digest) -> HandlerResult {
    registry.delete_blob(name, digest).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}
