//! Upload endpoints: `POST` (session, monolithic, mount), `PATCH`, `PUT`, `GET`, `DELETE`.
//! Every answer about a session carries `Location` and `Range`, errors included, so a client
//! can always resume from what the registry holds.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::super::error::ApiError;
use axum::body::Body;

use super::{HandlerResult, Request, body_stream, set_header};
use crate::oci::{Algorithm, ChunkRange, Digest, RepoName, UploadId};
use crate::registry::uploads::BodyInfo;
use crate::registry::{Registry, RegistryError, UploadSession};

fn upload_location(request: &Request, name: &RepoName, id: &UploadId) -> String {
    request.location(&format!("/v2/{name}/blobs/uploads/{id}"))
}

/// `Range: 0-<last byte>`; distribution (and so every client) writes `0-0` for an empty upload.
fn progress(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

fn session_response(request: &Request, status: StatusCode, session: &UploadSession) -> Response {
    let mut response = status.into_response();
    set_header(
        &mut response,
        "location",
        upload_location(request, &session.repo, &session.id),
    );
    set_header(&mut response, "range", progress(session.offset));
    set_header(&mut response, "docker-upload-uuid", session.id.as_str());
    set_header(&mut response, "content-length", "0");
    response
}

fn blob_created(request: &Request, name: &RepoName, digest: &Digest) -> Response {
    let mut response = StatusCode::CREATED.into_response();
    set_header(
        &mut response,
        "location",
        request.location(&format!("/v2/{name}/blobs/{digest}")),
    );
    set_header(&mut response, "docker-content-digest", digest.as_str());
    set_header(&mut response, "content-length", "0");
    response
}

fn body_info(request: &Request) -> Result<BodyInfo, RegistryError> {
    let range = request
        .header(header::CONTENT_RANGE)
        .map(|value| value.parse::<ChunkRange>())
        .transpose()
        .map_err(|e| RegistryError::RangeInvalid(e.to_string()))?;
    Ok(BodyInfo {
        range,
        content_length: request.content_length(),
    })
}

fn parse_digest(value: &str) -> Result<Digest, RegistryError> {
    value
        .parse()
        .map_err(|e| RegistryError::DigestInvalid(format!("{e}")))
}

pub(super) async fn start(
    registry: &Registry,
    name: &RepoName,
    request: Request,
    body: Body,
) -> HandlerResult {
    if let Some(mount) = request.query_param("mount") {
        let digest = parse_digest(&mount)?;
        let from = request
            .query_param("from")
            .map(|f| f.parse::<RepoName>())
            .transpose()
            .map_err(RegistryError::from)?;
        if let Some(from) = from
            && request.admission.may_mount
            && registry.mount_blob(name, &from, &digest).await?
        {
            return Ok(blob_created(&request, name, &digest));
        }
        let session = registry.start_upload(name, Algorithm::Sha256).await?;
        return Ok(session_response(&request, StatusCode::ACCEPTED, &session));
    }
    if let Some(digest) = request.query_param("digest") {
        let digest = parse_digest(&digest)?;
        let info = body_info(&request)?;
        registry
            .push_blob(name, &digest, info, body_stream(body))
            .await?;
        return Ok(blob_created(&request, name, &digest));
    }
    let algorithm = match request.query_param("digest-algorithm") {
        Some(a) => a
            .parse::<Algorithm>()
            .map_err(|e| RegistryError::DigestInvalid(e.to_string()))?,
        None => Algorithm::Sha256,
    };
    let session = registry.start_upload(name, algorithm).await?;
    Ok(session_response(&request, StatusCode::ACCEPTED, &session))
}

pub(super) async fn status(
    registry: &Registry,
    name: &RepoName,
    id: &UploadId,
    request: &Request,
) -> HandlerResult {
    let session = registry.upload_status(name, id).await?;
    Ok(session_response(request, StatusCode::NO_CONTENT, &session))
}

pub(super) async fn patch(
    registry: &Registry,
    name: &RepoName,
    id: &UploadId,
    request: Request,
    body: Body,
) -> HandlerResult {
    let result = async {
        let info = body_info(&request)?;
        registry
            .append_upload(name, id, info, body_stream(body))
            .await
    };
    match result.await {
        Ok(session) => Ok(session_response(&request, StatusCode::ACCEPTED, &session)),
        Err(e) => Ok(with_progress(registry, &request, name, id, e).await),
    }
}

pub(super) async fn put(
    registry: &Registry,
    name: &RepoName,
    id: &UploadId,
    request: Request,
    body: Body,
) -> HandlerResult {
    let digest = match request.query_param("digest") {
        Some(d) => parse_digest(&d)?,
        None => {
            return Err(RegistryError::DigestInvalid(
                "the digest query parameter is required".into(),
            )
            .into());
        }
    };
    let result = async {
        let info = body_info(&request)?;
        registry
            .finish_upload(name, id, &digest, info, body_stream(body))
            .await
    };
    match result.await {
        Ok(_) => Ok(blob_created(&request, name, &digest)),
        Err(e) => Ok(with_progress(registry, &request, name, id, e).await),
    }
}

pub(super) async fn cancel(registry: &Registry, name: &RepoName, id: &UploadId) -> HandlerResult {
    registry.cancel_upload(name, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// An error response that still tells the client where the session stands (when it lives).
async fn with_progress(
    registry: &Registry,
    request: &Request,
    name: &RepoName,
    id: &UploadId,
    error: RegistryError,
) -> Response {
    let mut response = ApiError(error).into_response();
    if let Ok(session) = registry.upload_status(name, id).await {
        set_header(
            &mut response,
            "location",
            upload_location(request, name, id),
        );
        set_header(&mut response, "range", progress(session.offset));
        set_header(&mut response, "docker-upload-uuid", id.as_str());
    }
    response
}
