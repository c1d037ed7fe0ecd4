//! Integration tests: one test binary (faster to link than one per file).

mod auth;
mod check_backends;
mod cluster;
mod compose;
mod connections;
mod crash;
mod distribution;
mod docker;
mod edge;
mod full_disk;
mod image;
mod lifecycle;
mod locations;
mod manage;
mod operations;
mod secrets;
mod skopeo;
mod support;
