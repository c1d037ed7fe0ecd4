//! Integration tests: one test binary (faster to link than one per file).

mod crash;
mod distribution;
mod edge;
mod full_disk;
mod lifecycle;
mod skopeo;
mod support;
