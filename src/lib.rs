//! Aerugo: a container registry (OCI Distribution API core) and, from the same code, an edge
//! pull-through cache.
//!
//! # Layout
//!
//! - [`oci`]: protocol vocabulary (names, digests, routes, manifests, error codes, token
//!   scopes). Pure.
//! - [`accounts`]: the `AccountStore` seam — users, organisations, teams, robots, grants,
//!   sessions, signing keys, audit (implemented by the SQL stores of `metadata`).
//! - [`storage`]: the `BlobStore` seam — content-addressed bytes (`fs`).
//! - [`metadata`]: the `MetadataStore` seam — repositories, manifests, tags, uploads (`sqlite`).
//! - [`cache`]: the `Cache` seam — a lossy accelerator (`memory`).
//! - [`coordination`]: the `Coordinator` seam — digest, upload-session and GC locks (`local`).
//! - [`upstream`]: the `Upstream` seam — a registry client for pull-through (token dance,
//!   retries, digest-verified manifests and blob streams).
//! - [`fileio`]: positioned file I/O for blob bodies (pooled reads, double-buffered writes,
//!   durable rename), shared by `storage::fs` and the edge's disk cache. A leaf.
//! - [`digesting`]: hashing beside a byte stream on another core (pushes, upstream blobs).
//!   A leaf.
//!
//! Dependency rule: `oci` ← `accounts` ← `metadata`; `oci` ← `storage`/`metadata`/`cache`/
//! `coordination` ← `registry` ← `api`.
//! `registry` never names axum; `api` never touches SQL or files.

// `unsafe` is allowed in one module, `fileio::mapped`, with the invariant that makes it sound.
#![deny(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod accounts;
pub mod api;
pub mod app;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
pub mod coordination;
pub mod digesting;
pub mod edge;
pub mod fileio;
pub mod limits;
pub mod locks;
pub mod metadata;
pub mod oci;
pub mod registry;
pub mod seed;
pub mod storage;
pub mod telemetry;
#[doc(hidden)]
pub mod testkit;
pub mod upstream;
