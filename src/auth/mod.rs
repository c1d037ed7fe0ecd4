//! Identity and access: who a caller is (passwords, robot secrets, tokens) and what it may do
//! (the tenant policy over the `accounts` seam), the Docker token protocol's tokens and keys,
//! and the table of what each distribution endpoint requires.
//!
//! No HTTP here: `api` turns headers into [`Credentials`], asks [`Auth`], and renders its
//! answers (challenges, token responses). Depends on `accounts`, `cache` and `oci`.

pub mod access;
pub mod admission;
pub mod keys;
pub mod manage;
pub mod password;
pub mod policy;
pub mod secret;
mod service;
pub mod token;

pub use access::{Requirement, required};
pub use admission::Admission;
pub use keys::{KeyRing, SigningKey};
pub use policy::Principal;
pub use service::{
    Auth, AuthError, AuthSettings, Credentials, EPOCH_REFRESH, Identity, IssuedToken, Verdict,
};
pub use token::TokenParties;
