//! Manifest media types and validation: what a pushed manifest must look like, and which
//! blobs, child manifests and subject it points at.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
/// Layers that live outside the registry (Windows base layers, nondistributable OCI layers);
/// when they carry `urls` the registry does not require their bytes.
const FOREIGN_LAYER_PREFIXES: &[&str] = &[
    "application/vnd.docker.image.rootfs.foreign.",
    "application/vnd.oci.image.layer.nondistributable.",
];

/// Every manifest media type the registry stores, in the order offered to upstreams.
pub const SUPPORTED_MEDIA_TYPES: &[&str] = &[
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    NotJson(String),
    #[error("schemaVersion must be 2")]
    SchemaVersion,
    #[error("Content-Type {header:?} does not match the manifest's mediaType {body:?}")]
    MediaTypeMismatch { header: String, body: String },
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("cannot tell the manifest's media type: set mediaType or Content-Type")]
    UnknownMediaType,
    #[error("{media_type} requires the field {field:?}")]
    MissingField {
        media_type: &'static str,
        field: &'static str,
    },
    #[error("{media_type} must not have the field {field:?}")]
    UnexpectedField {
        media_type: &'static str,
        field: &'static str,
    },
    #[error("descriptor in {field:?} is invalid: {reason}")]
    InvalidDescriptor { field: &'static str, reason: String },
    /// Keys Go clients would read differently (case variants, duplicates) or nesting they
    /// cannot decode; see `strict`.
    #[error("manifest is ambiguous: {0}")]
    Ambiguous(String),
}

/// A blob or manifest a manifest points at, with the size it claims for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Descriptor {
    pub digest: Digest,
    pub size: u64,
}

/// What the registry needs to know about a valid manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    pub media_type: &'static str,
    /// The type reported to the referrers API: `artifactType`, else the config's media type.
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    /// Config and layer blobs that must exist in the repository, with the stored size.
    pub blobs: Vec<Descriptor>,
    /// Child manifests of an index that must exist in the repository, with their size.
    pub children: Vec<Descriptor>,
    /// Annotations as a JSON object, copied into referrer descriptors.
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ManifestInfo {
    pub fn is_index(&self) -> bool {
        matches!(self.media_type, OCI_INDEX | DOCKER_MANIFEST_LIST)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<i64>,
    #[serde(default)]
    urls: Vec<String>,
}

impl RawDescriptor {
    fn validate(&self, field: &'static str) -> Result<Descriptor, ManifestError> {
        let invalid = |reason: String| ManifestError::InvalidDescriptor { field, reason };
        match &self.media_type {
            Some(m) if !m.is_empty() => {}
            _ => return Err(invalid("mediaType is required".into())),
        }
        let size = self
            .size
            .and_then(|size| u64::try_from(size).ok())
            .ok_or_else(|| invalid("size must be a non-negative integer".into()))?;
        let digest = self
            .digest
            .as_deref()
            .ok_or_else(|| invalid("digest is required".into()))?
            .parse()
            .map_err(|e| invalid(format!("{e}")))?;
        Ok(Descriptor { digest, size })
    }

    fn is_foreign(&self) -> bool {
        let media_type = self.media_type.as_deref().unwrap_or_default();
        !self.urls.is_empty()
            && FOREIGN_LAYER_PREFIXES
                .iter()
                .any(|p| media_type.starts_with(p))
    }
}

/// Strips parameters (`; charset=…`) and treats generic JSON types as "not said".
fn declared_type(content_type: Option<&str>) -> Option<&str> {
    let essence = content_type?.split(';').next()?.trim();
    match essence {
        "" | "application/json" | "application/octet-stream" => None,
        other => Some(other),
    }
}

fn canonical(media_type: &str) -> Result<&'static str, ManifestError> {
    if let Some(known) = SUPPORTED_MEDIA_TYPES.iter().find(|m| **m == media_type) {
        return Ok(known);
    }
    Err(ManifestError::UnsupportedMediaType(media_type.to_owned()))
}

/// Validates a manifest as pushed and tells what it references.
pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<ManifestInfo, ManifestError> {
    strict::check(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ManifestError::Ambiguous(e.to_string()),
        _ => ManifestError::NotJson(e.to_string()),
    })?;
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::NotJson(e.to_string()))?;
    if raw.schema_version != Some(serde_json::Value::from(2)) {
        if let Some(m) = raw
            .media_type
            .as_deref()
            .filter(|m| DOCKER_SCHEMA1.contains(m))
        {
            return Err(ManifestError::UnsupportedMediaType(m.to_owned()));
        }
        return Err(ManifestError::SchemaVersion);
    }
    let header = declared_type(content_type);
    let media_type = match (header, raw.media_type.as_deref()) {
        (Some(h), Some(b)) if h != b => {
            return Err(ManifestError::MediaTypeMismatch {
                header: h.into(),
                body: b.into(),
            });
        }
        (_, Some(b)) => canonical(b)?,
        (Some(h), None) => canonical(h)?,
        (None, None) if raw.manifests.is_some() => OCI_INDEX,
        (None, None) if raw.config.is_some() => OCI_MANIFEST,
        (None, None) => return Err(ManifestError::UnknownMediaType),
    };
    let subject = raw
        .subject
        .as_ref()
        .map(|s| s.validate("subject").map(|d| d.digest))
        .transpose()?;
    let mut info = ManifestInfo {
        media_type,
        artifact_type: raw.artifact_type.clone().filter(|a| !a.is_empty()),
        subject,
        blobs: Vec::new(),
        children: Vec::new(),
        annotations: raw.annotations.clone(),
    };
    if info.is_index() {
        forbid(media_type, "config", raw.config.is_some())?;
        forbid(media_type, "layers", raw.layers.is_some())?;
        let manifests = require(media_type, "manifests", raw.manifests.as_ref())?;
        for child in manifests {
            info.children.push(child.validate("manifests")?);
        }
    } else {
        forbid(media_type, "manifests", raw.manifests.is_some())?;
        let config = require(media_type, "config", raw.config.as_ref())?;
        info.blobs.push(config.validate("config")?);
        let layers = require(media_type, "layers", raw.layers.as_ref())?;
        for layer in layers {
            let descriptor = layer.validate("layers")?;
            if !layer.is_foreign() {
                info.blobs.push(descriptor);
            }
        }
        if info.artifact_type.is_none() {
            info.artifact_type = config.media_type.clone();
        }
    }
    Ok(info)
}

fn require<'a, T>(
    media_type: &'static str,
    field: &'static str,
    value: Option<&'a T>,
) -> Result<&'a T, ManifestError> {
    value.ok_or(ManifestError::MissingField { media_type, field })
}

fn forbid(
    media_type: &'static str,
    field: &'static str,
    present: bool,
) -> Result<(), ManifestError> {
    if present {
        return Err(ManifestError::UnexpectedField { media_type, field });
    }
    Ok(())
}

/// Whether a client's `Accept` header values admit `media_type`. No header, `*/*` and
/// `application/*` admit everything (old clients send nothing and expect whatever is stored).
pub fn accepts<'a>(accept_values: impl IntoIterator<Item = &'a str>, media_type: &str) -> bool {
    let mut any_value = false;
    for value in accept_values {
        for item in value.split(',') {
            let essence = item.split(';').next().unwrap_or_default().trim();
            if essence.is_empty() {
                continue;
            }
            any_value = true;
            if essence == media_type || essence == "*/*" || essence == "application/*" {
                return true;
            }
        }
    }
    !any_value
}

mod strict;

#[cfg(test)]
mod tests;
