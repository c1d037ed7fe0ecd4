//! `tags/list` and `_catalog`: order, `n`/`last` pagination and `Link` headers.

use serde_json::Value;

use super::{Api, expect_error, expect_status, header};
use crate::support::image::{OCI_MANIFEST, TestImage};

/// One page: the listed names (`tags` or `repositories`) and the `Link` header, if any.
async fn page(api: &Api, path: &str, field: &str) -> (Vec<String>, Option<String>) {
    let response = api.send(api.get(path)).await;
    let (headers, body) = expect_status(response, 200).await;
    assert!(
        header(&headers, "content-type").starts_with("application/json"),
        "{path}"
    );
    let value: Value = serde_json::from_slice(&body).expect("listing is JSON");
    let items = value[field]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: {field} must be an array: {value}"))
        .iter()
        .map(|v| v.as_str().expect("string").to_owned())
        .collect();
    let link = headers
        .get("link")
        .map(|v| v.to_str().expect("link text").to_owned());
    (items, link)
}

/// The target of `Link: <target>; rel="next"`.
fn next_target(link: &str) -> String {
    assert!(
        link.ends_with("; rel=\"next\""),
        "Link must be rel=\"next\": {link}"
    );
    let target = link
        .strip_prefix('<')
        .and_then(|l| l.split_once('>'))
        .map(|(t, _)| t);
    target
        .unwrap_or_else(|| panic!("Link must be <target>: {link}"))
        .to_owned()
}

/// Follows `Link` headers from `first` to the end; returns every page.
async fn all_pages(api: &Api, first: &str, field: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(path) = next.take() {
        assert!(pages.len() < 50, "pagination does not end");
        let (items, link) = page(api, &path, field).await;
        pages.push(items);
        next = link.map(|l| next_target(&l));
    }
    pages
}

/// Tags a single manifest with every tag in `tags` (one PUT by digest with `?tag=`s).
async fn tag_many(api: &Api, repo: &str, tags: &[&str]) {
    let image = TestImage::new(repo);
    api.push_blobs(repo, &image).await;
    let query: Vec<String> = tags.iter().map(|t| format!("tag={t}")).collect();
    let response = api
        .send(
            api.put(&format!(
                "/v2/{repo}/manifests/{}?{}",
                image.digest,
                query.join("&")
            ))
            .header("content-type", OCI_MANIFEST)
            .body(image.manifest),
        )
        .await;
    expect_status(response, 201).await;
}

#[tokio::test]
async fn tags_are_listed_in_byte_order() {
    let api = Api::start().await;
    let repo = "list/order";
    let tags = [
        "latest", "1.10", "1.9", "V2", "_private", "a", "Z", "1.0", "b-2", "b.1", "b_3",
    ];
    tag_many(&api, repo, &tags).await;
    let mut expected: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
    expected.sort(); // byte order, like Go's sort.Strings
    assert_eq!(api.tags(repo).await, expected);
    let (items, link) = page(&api, &format!("/v2/{repo}/tags/list"), "tags").await;
    assert_eq!(items, expected);
    assert!(link.is_none(), "everything fit in one page: {link:?}");
}

/// Without `n` the whole list comes back, however many pages of the configured size it
/// spans: clients that read one response and never follow `Link` must not lose tags.
#[tokio::test]
async fn tags_without_n_are_listed_whole() {
    let api = Api::start_with(|c| c.registry.max_page_size = 4).await;
    let repo = "list/whole";
    let names: Vec<String> = (0..11).map(|i| format!("t{i:02}")).collect();
    let tags: Vec<&str> = names.iter().map(String::as_str).collect();
    tag_many(&api, repo, &tags).await;
    let (items, link) = page(&api, &format!("/v2/{repo}/tags/list"), "tags").await;
    assert_eq!(items, names);
    assert!(link.is_none(), "the unpaginated form has no Link: {link:?}");
    let (items, _) = page(&api, &format!("/v2/{repo}/tags/list?last=t05"), "tags").await;
    assert_eq!(items, names[6..]);
    // With `n`, pages are still capped at the configured size and linked.
    let (items, link) = page(&api, &format!("/v2/{repo}/tags/list?n=100"), "tags").await;
    assert_eq!(items, names[..4]);
    assert!(link.is_some());
}

#[tokio::test]
async fn tags_pagination() {
    let api = Api::start().await;
    let repo = "list/pages";
    let tags = ["t0", "t1", "t2", "t3", "t4", "t5", "t6"];
    tag_many(&api, repo, &tags).await;

    let (items, link) = page(&api, &format!("/v2/{repo}/tags/list?n=3"), "tags").await;
    assert_eq!(items, ["t0", "t1", "t2"]);
    assert_eq!(
        link.as_deref(),
        Some("</v2/list/pages/tags/list?n=3&last=t2>; rel=\"next\"")
    );

    let pages = all_pages(&api, &format!("/v2/{repo}/tags/list?n=3"), "tags").await;
    let flat: Vec<String> = pages.concat();
    assert_eq!(flat, tags);
    assert!(pages.iter().all(|p| p.len() <= 3), "{pages:?}");

    // `last` alone, `last` with n, `last` past the end, `last` that is not a tag.
    let (items, _) = page(&api, &format!("/v2/{repo}/tags/list?last=t4"), "tags").await;
    assert_eq!(items, ["t5", "t6"]);
    let (items, link) = page(&api, &format!("/v2/{repo}/tags/list?n=2&last=t1"), "tags").await;
    assert_eq!(items, ["t2", "t3"]);
    assert_eq!(
        link.as_deref(),
        Some("</v2/list/pages/tags/list?n=2&last=t3>; rel=\"next\"")
    );
    let (items, link) = page(&api, &format!("/v2/{repo}/tags/list?n=5&last=t6"), "tags").await;
    assert!(items.is_empty());
    assert!(link.is_none());
    let (items, _) = page(&api, &format!("/v2/{repo}/tags/list?last=t35"), "tags").await;
    assert_eq!(items, ["t4", "t5", "t6"]);

    // n larger than what is left: fewer results, no Link.
    let (items, link) = page(&api, &format!("/v2/{repo}/tags/list?n=100"), "tags").await;
    assert_eq!(items, tags);
    assert!(link.is_none(), "{link:?}");

    // n=0: an empty list and never a Link.
    let (items, link) = page(&api, &format!("/v2/{repo}/tags/list?n=0"), "tags").await;
    assert!(items.is_empty());
    assert!(link.is_none(), "{link:?}");
}

#[tokio::test]
async fn invalid_n_is_400() {
    let api = Api::start().await;
    tag_many(&api, "list/badn", &["a"]).await;
    for n in ["-1", "abc", "1.5", "", "99999999999999999999999"] {
        for path in [
            format!("/v2/list/badn/tags/list?n={n}"),
            format!("/v2/_catalog?n={n}"),
        ] {
            let response = api.send(api.get(&path)).await;
            let (_, error) = expect_error(response, 400, "PAGINATION_NUMBER_INVALID").await;
            assert!(
                error["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{path}"
            );
        }
    }
}

#[tokio::test]
async fn tags_of_unknown_repository_is_name_unknown() {
    let api = Api::start().await;
    for path in [
        "/v2/list/nothing/tags/list",
        "/v2/list/nothing/tags/list?n=0",
        "/v2/list/nothing/tags/list?n=5&last=a",
    ] {
        let response = api.send(api.get(path)).await;
        expect_error(response, 404, "NAME_UNKNOWN").await;
    }
}

#[tokio::test]
async fn repository_without_tags_lists_none() {
    let api = Api::start().await;
    // Blobs only: the repository exists but has no tags.
    api.push_blob("list/blobsonly", b"just a blob").await;
    assert!(api.tags("list/blobsonly").await.is_empty());
    // A manifest by digest only.
    let untagged = TestImage::new("untagged");
    api.push_blobs("list/untagged", &untagged).await;
    api.push_manifest(
        "list/untagged",
        &untagged.digest,
        OCI_MANIFEST,
        &untagged.manifest,
    )
    .await;
    assert!(api.tags("list/untagged").await.is_empty());
    // Every tag deleted.
    api.push_image("list/deleted", "only", &TestImage::new("deleted tags"))
        .await;
    expect_status(
        api.send(api.delete("/v2/list/deleted/manifests/only"))
            .await,
        202,
    )
    .await;
    assert!(api.tags("list/deleted").await.is_empty());
}

#[tokio::test]
async fn catalog_lists_repositories_with_manifests_in_order() {
    let api = Api::start().await;
    assert!(api.catalog().await.is_empty());
    let repos = [
        "zeta",
        "alpha/one",
        "alpha",
        "alpha/two/three",
        "beta-x",
        "beta_x",
        "beta.x",
        "a/b/c/d",
    ];
    for repo in repos {
        api.push_image(repo, "v1", &TestImage::new(&format!("catalog {repo}")))
            .await;
    }
    // Blobs alone, an upload session, or a refused manifest make no catalog entry.
    api.push_blob("blobs-only", b"blob").await;
    api.start_upload("upload-only").await;
    let refused = TestImage::new("refused");
    let response = api
        .put_manifest("refused", "v1", OCI_MANIFEST, &refused.manifest)
        .await;
    expect_error(response, 400, "MANIFEST_BLOB_UNKNOWN").await;

    let mut expected: Vec<String> = repos.iter().map(|r| (*r).to_owned()).collect();
    expected.sort();
    let (items, link) = page(&api, "/v2/_catalog", "repositories").await;
    assert_eq!(items, expected);
    assert!(link.is_none());

    // Pages of 3, following Link headers.
    let (items, link) = page(&api, "/v2/_catalog?n=3", "repositories").await;
    assert_eq!(items, expected[..3]);
    let link = link.expect("a full page has a Link");
    assert_eq!(
        next_target(&link),
        format!("/v2/_catalog?n=3&last={}", expected[2].replace('/', "%2F"))
    );
    let pages = all_pages(&api, "/v2/_catalog?n=3", "repositories").await;
    assert_eq!(pages.concat(), expected);

    // last with a slash in it, and n=0.
    let (items, _) = page(&api, "/v2/_catalog?last=alpha/one", "repositories").await;
    let after: Vec<String> = expected
        .iter()
        .filter(|r| r.as_str() > "alpha/one")
        .cloned()
        .collect();
    assert_eq!(items, after);
    let (items, link) = page(&api, "/v2/_catalog?n=0", "repositories").await;
    assert!(items.is_empty());
    assert!(link.is_none());

    // A repository whose last manifest was deleted leaves the catalog.
    let (_, headers, _) = api.get_manifest("zeta", "v1").await;
    let digest = header(&headers, "docker-content-digest").to_owned();
    expect_status(
        api.send(api.delete(&format!("/v2/zeta/manifests/{digest}")))
            .await,
        202,
    )
    .await;
    let (items, _) = page(&api, "/v2/_catalog", "repositories").await;
    assert!(!items.contains(&"zeta".to_owned()), "{items:?}");
}

#[tokio::test]
async fn page_size_is_capped_by_configuration() {
    let api = Api::start_with(|config| config.registry.max_page_size = 2).await;
    tag_many(&api, "list/capped", &["a", "b", "c", "d", "e"]).await;
    // A larger n is capped, and the Link still leads through everything.
    let (items, link) = page(&api, "/v2/list/capped/tags/list?n=100", "tags").await;
    assert_eq!(items, ["a", "b"]);
    assert!(link.is_some());
    let pages = all_pages(&api, "/v2/list/capped/tags/list?n=100", "tags").await;
    assert_eq!(pages.concat(), ["a", "b", "c", "d", "e"]);
}
