//! The OCI distribution vocabulary: names, digests, routes, byte ranges, manifests, error
//! codes and token scopes.
//!
//! Pure and free of IO: nothing here touches the network, the disk, axum or pingora, so the
//! registry core and the edge parse requests with the same code. Every other module may depend
//! on `oci`; `oci` depends on no other module of the crate.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod name;
pub mod path;
pub mod range;
pub mod scope;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use error::{ErrorCode, ErrorEnvelope};
pub use name::{NameError, Reference, RepoName, Tag, UploadId};
pub use path::{RouteError, V2Route};
pub use range::{ChunkRange, ContentRangeError, RangeRequest};
pub use scope::{Action, Actions, ResourceScope, ScopeError};
