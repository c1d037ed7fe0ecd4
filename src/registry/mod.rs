//! Registry services: the operations of the distribution API over the three seams.
//!
//! Depends on `oci`, `storage`, `metadata` and `cache` — never on axum or pingora — so the
//! HTTP adapter (`api`) stays a thin translation and the rules live here: what must exist
//! before a manifest is accepted, when a blob becomes visible, what garbage collection may
//! remove.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use crate::cache::Cache;
use crate::coordination::Coordinator;
use crate::metadata::MetadataStore;
use crate::storage::BlobStore;

mod blobs;
mod error;
pub mod gc;
mod manifests;
pub mod quota;
mod repositories;
pub mod uploads;

/// What the upload endpoints report back; re-exported so `api` needs nothing of `metadata`.
pub use crate::metadata::UploadSession;
pub use error::RegistryError;
pub use manifests::PutManifestOutcome;
pub use quota::NamespaceQuotas;

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// A request body as the registry sees it: a stream of chunks that may fail mid-way (the
/// client went away), in which case nothing it carried is committed.
pub type BodyStream = Pin<
    Box<
        dyn Stream<Item = std::result::Result<Bytes, Box<dyn std::error::Error + Send + Sync>>>
            + Send,
    >,
>;

/// Limits and timings the services enforce.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_manifest_bytes: u64,
    /// Bounds how stale a cached tag or blob link may be after a write through another node.
    pub cache_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_manifest_bytes: 4 << 20,
            cache_ttl: Duration::from_secs(5),
        }
    }
}

/// The four seams a registry runs on. Every node of a cluster must be given backends that
/// all the nodes share (one database, one bucket, one cache, locks they all see), or one node
/// alone: the embedded ones.
pub struct Backends {
    pub blobs: Arc<dyn BlobStore>,
    pub meta: Arc<dyn MetadataStore>,
    pub cache: Arc<dyn Cache>,
    /// One request at a time per upload session (two PATCHes racing on one session would
    /// interleave bytes), and publishing a blob excluded from garbage collection deleting the
    /// same digest, so GC never removes bytes a push has just committed.
    pub coordinator: Arc<dyn Coordinator>,
}

/// The registry's application state: the seams and the rules over them.
pub struct Registry {
    blobs: Arc<dyn BlobStore>,
    meta: Arc<dyn MetadataStore>,
    cache: Arc<dyn Cache>,
    coordinator: Arc<dyn Coordinator>,
    quotas: Arc<dyn NamespaceQuotas>,
    settings: Settings,
}

impl Registry {
    pub fn new(backends: Backends, settings: Settings) -> Registry {
        let Backends {
            blobs,
            meta,
            cache,
            coordinator,
        } = backends;
        Registry {
            blobs,
            meta,
            cache,
            coordinator,
            quotas: Arc::new(quota::Unlimited),
            settings,
        }
    }

    /// Enforces namespace quotas from `quotas` on every push (none without it).
    pub fn with_quotas(mut self, quotas: Arc<dyn NamespaceQuotas>) -> Registry {
        self.quotas = quotas;
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether the backends answer and take writes (`/readyz`): a registry that cannot
    /// store a push is not ready, even if it still serves pulls.
    pub async fn ready(&self) -> Result<()> {
        self.meta.ping().await?;
        self.blobs.check_writable().await?;
        Ok(())
    }
}
