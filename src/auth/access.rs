//! The one table of what each distribution endpoint requires: (method, route) → the
//! repository actions a caller must hold. Every `/v2/` request is checked against it before a
//! handler runs, so no handler decides access on its own.

use http::Method;

use crate::oci::RepoName;
use crate::oci::V2Route;
use crate::oci::scope::{Action, ResourceScope};

/// What one request needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Requirement {
    /// Scopes that must all be granted, or the request is refused.
    pub needed: Vec<ResourceScope>,
    /// A cross-repository mount's source: pull on it lets the blob be mounted; without it the
    /// request goes on as a plain upload (what distribution does), so a mount never reveals
    /// whether a repository the caller may not read holds a blob.
    pub mount_source: Option<RepoName>,
    /// The endpoint names no repository but still needs a signed-in (or anonymous-token)
    /// caller: `/v2/` (clients learn the token realm from its challenge) and the catalog.
    pub needs_identity: bool,
}

fn on(name: &RepoName, actions: &[Action]) -> Vec<ResourceScope> {
    vec![ResourceScope::repository(
        name.as_str(),
        actions.iter().copied(),
    )]
}

/// What `method` on `route` requires. `mount_from` is the `from` parameter of an upload start
/// that carries `mount`. Methods no endpoint supports require nothing: they are refused by
/// the dispatcher whoever asks.
pub fn required(method: &Method, route: &V2Route, mount_from: Option<RepoName>) -> Requirement {
    use Action::{Delete, Pull, Push};
    let read = *method == Method::GET || *method == Method::HEAD;
    let needed = match route {
        V2Route::Base | V2Route::Catalog => {
            return Requirement {
                needs_identity: true,
                ..Requirement::default()
            };
        }
        V2Route::Tags { name } | V2Route::Referrers { name, .. } if *method == Method::GET => {
            on(name, &[Pull])
        }
        V2Route::Manifest { name, .. } | V2Route::Blob { name, .. } if read => on(name, &[Pull]),
        V2Route::Manifest { name, .. } if *method == Method::PUT => on(name, &[Pull, Push]),
        V2Route::Manifest { name, .. } | V2Route::Blob { name, .. }
            if *method == Method::DELETE =>
        {
            on(name, &[Delete])
        }
        V2Route::UploadStart { name } if *method == Method::POST => {
            return Requirement {
                needed: on(name, &[Pull, Push]),
                mount_source: mount_from,
                needs_identity: false,
            };
        }
        V2Route::Upload { name, .. }
            if [Method::GET, Method::PATCH, Method::PUT, Method::DELETE].contains(method) =>
        {
            on(name, &[Pull, Push])
        }
        _ => Vec::new(),
    };
    Requirement {
        needed,
        ..Requirement::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::path;

    fn needs(method: Method, path: &str) -> Vec<String> {
        let route = path::parse(path).unwrap();
        required(&method, &route, None)
            .needed
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn reads_need_pull() {
        for (method, p) in [
            (Method::GET, "/v2/a/b/tags/list".to_owned()),
            (Method::GET, "/v2/a/b/manifests/1".to_owned()),
            (Method::HEAD, "/v2/a/b/manifests/1".to_owned()),
            (Method::GET, format!("/v2/a/b/blobs/{D}")),
            (Method::HEAD, format!("/v2/a/b/blobs/{D}")),
            (Method::GET, format!("/v2/a/b/referrers/{D}")),
        ] {
            assert_eq!(needs(method, &p), ["repository:a/b:pull"], "{p}");
        }
    }

    #[test]
    fn writes_need_push_and_deletes_need_delete() {
        assert_eq!(
            needs(Method::PUT, "/v2/a/manifests/1"),
            ["repository:a:pull,push"]
        );
        assert_eq!(
            needs(Method::POST, "/v2/a/blobs/uploads/"),
            ["repository:a:pull,push"]
        );
        let upload = "/v2/a/blobs/uploads/3fa85f64-5717-4562-b3fc-2c963f66afa6";
        for method in [Method::GET, Method::PATCH, Method::PUT, Method::DELETE] {
            assert_eq!(needs(method, upload), ["repository:a:pull,push"]);
        }
        assert_eq!(
            needs(Method::DELETE, "/v2/a/manifests/1"),
            ["repository:a:delete"]
        );
        assert_eq!(
            needs(Method::DELETE, &format!("/v2/a/blobs/{D}")),
            ["repository:a:delete"]
        );
    }

    #[test]
    fn mounts_name_their_source_and_base_needs_an_identity() {
        let route = path::parse("/v2/a/blobs/uploads/").unwrap();
        let from: RepoName = "b/c".parse().unwrap();
        let req = required(&Method::POST, &route, Some(from.clone()));
        assert_eq!(req.mount_source, Some(from));
        for p in ["/v2/", "/v2/_catalog"] {
            let req = required(&Method::GET, &path::parse(p).unwrap(), None);
            assert!(req.needs_identity && req.needed.is_empty());
        }
    }

    #[test]
    fn unsupported_methods_need_nothing() {
        assert!(needs(Method::POST, "/v2/a/manifests/1").is_empty());
        assert!(needs(Method::PATCH, "/v2/a/tags/list").is_empty());
    }
}
