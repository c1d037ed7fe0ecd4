//! `/v2/…` paths (`oci::path`, shared by the core's router and the edge): every route parsed
//! from a path is written back as a path that parses to the same route, so matching from the
//! right-hand end is unambiguous whatever the repository name contains.
#![no_main]

use aerugo::oci::V2Route;
use aerugo::oci::path::parse;
use libfuzzer_sys::fuzz_target;

/// The canonical path of a route.
fn path_of(route: &V2Route) -> String {
    match route {
        V2Route::Base => "/v2/".to_owned(),
        V2Route::Catalog => "/v2/_catalog".to_owned(),
        V2Route::Tags { name } => format!("/v2/{name}/tags/list"),
        V2Route::UploadStart { name } => format!("/v2/{name}/blobs/uploads/"),
        V2Route::Upload { name, id } => format!("/v2/{name}/blobs/uploads/{id}"),
        V2Route::Manifest { name, reference } => format!("/v2/{name}/manifests/{reference}"),
        V2Route::Blob { name, digest } => format!("/v2/{name}/blobs/{digest}"),
        V2Route::Referrers { name, digest } => format!("/v2/{name}/referrers/{digest}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(route) = parse(path) else {
        return;
    };
    assert!(path.starts_with("/v2"), "{path:?} is not under /v2");
    let canonical = path_of(&route);
    assert_eq!(parse(&canonical), Ok(route), "{path:?} → {canonical:?}");
});
