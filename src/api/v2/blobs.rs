//! Blob `GET`/`HEAD` (with `Range`) and `DELETE`.

use std::ops::Range;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use futures_util::StreamExt;

use super::{HandlerResult, Request, set_header};
use crate::oci::{Digest, RepoName};
use crate::registry::{Registry, RegistryError};
use crate::telemetry::metrics;

/// What a `Range` header asks of a blob of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    Whole,
    Part(Range<u64>),
    Unsatisfiable,
}

/// One satisfiable range is served as 206; a malformed or multi-range header is ignored (RFC
/// 9110 allows serving the whole representation), an out-of-bounds one is a 416.
fn range_request(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(header) = header else {
        return RangeRequest::Whole;
    };
    let Ok(parsed) = http_range_header::parse_range_header(header) else {
        return RangeRequest::Whole;
    };
    match parsed.validate(size) {
        Ok(ranges) if ranges.len() == 1 => {
            let r = &ranges[0];
            RangeRequest::Part(*r.start()..r.end() + 1)
        }
        Ok(_) => RangeRequest::Whole,
        Err(_) => RangeRequest::Unsatisfiable,
    }
}

pub(super) async fn get(
    registry: &Registry,
    name: &RepoName,
    digest: &Digest,
    request: Request,
) -> HandlerResult {
    let size = registry.blob_size(name, digest).await?;
    let is_head = request.method == axum::http::Method::HEAD;
    if !is_head && let Some(url) = registry.blob_redirect(digest).await? {
        let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
        set_header(&mut response, "location", url);
        set_header(&mut response, "docker-content-digest", digest.as_str());
        return Ok(response);
    }
    let (status, range) = match range_request(request.header(header::RANGE), size) {
        RangeRequest::Whole => (StatusCode::OK, None),
        RangeRequest::Part(range) => (StatusCode::PARTIAL_CONTENT, Some(range)),
        RangeRequest::Unsatisfiable => {
            let mut response = super::super::error::ApiError(RegistryError::RangeInvalid(format!(
                "the blob has {size} bytes"
            )))
            .into_response();
            set_header(&mut response, "content-range", format!("bytes */{size}"));
            return Ok(response);
        }
    };
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
        set_header(
            &mut response,
            "content-range",
            format!("bytes {}-{}/{size}", range.start, range.end - 1),
        );
    }
    Ok(response)
}

pub(super) async fn delete(registry: &Registry, name: &RepoName, digest: &Digest) -> HandlerResult {
    registry.delete_blob(name, digest).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers() {
        assert_eq!(range_request(None, 10), RangeRequest::Whole);
        assert_eq!(
            range_request(Some("bytes=0-4"), 10),
            RangeRequest::Part(0..5)
        );
        assert_eq!(
            range_request(Some("bytes=5-"), 10),
            RangeRequest::Part(5..10)
        );
        assert_eq!(
            range_request(Some("bytes=-3"), 10),
            RangeRequest::Part(7..10)
        );
        assert_eq!(
            range_request(Some("bytes=10-12"), 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            range_request(Some("bytes=0-1,3-4"), 10),
            RangeRequest::Whole
        );
        assert_eq!(range_request(Some("pages=1"), 10), RangeRequest::Whole);
    }
}
