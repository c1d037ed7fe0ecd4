//! The edge node: a pull-through cache near CI runners (and, in gateway mode, in front of the
//! core nodes).
//!
//! - [`connection`]: the listeners' connection handling around pingora (caps, header and
//!   keep-alive timeouts);
//! - [`cache`]: content-addressed disk cache with LRU eviction;
//! - [`confirm`]: which cached digests the origin confirmed, for which repository and caller;
//! - [`jwks`]: a gateway's copy of the cores' token keys, to check clients' bearer tokens;
//! - [`fill`]: one origin fetch per blob however many clients ask, streamed to all of them;
//! - [`mirror`]: upstream selection, manifest TTL/revalidation, stale-if-error, blob serving.
//!
//! Depends on `oci`, `upstream`, `telemetry` and, for token verification only, `auth`'s keys
//! and tokens; nothing but `cli` depends on it.

pub mod cache;
pub mod confirm;
#[cfg(feature = "edge")]
pub mod connection;
pub mod fill;
pub mod jwks;
pub mod mirror;
#[cfg(feature = "edge")]
pub mod proxy;
#[cfg(feature = "edge")]
pub mod server;
