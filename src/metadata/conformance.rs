//! The behaviour every `MetadataStore` backend must show, written once against the trait.
//!
//! A backend's tests invoke [`metadata_conformance!`] with an async constructor returning
//! `Some((Arc<dyn MetadataStore>, guard))`, or `None` to skip (a test service that is not
//! running, see `testkit`); the macro expands to one `#[tokio::test]` per case, each on
//! a fresh store (cases such as `list_repositories` need the whole store to themselves). The
//! guard is whatever must outlive the store, such as a temporary directory.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use super::{
    DeletedRepository, GcCursor, GcPlan, ManifestRecord, MetadataError, MetadataStore, NewManifest,
    Referrer, UploadSession,
};
use crate::oci::manifest::{DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, parse};
use crate::oci::{Digest, Reference, RepoName, Tag, UploadId};
use crate::testkit::image as kit;

/// Expands to one test per conformance case. `$make` is a path to an
/// `async fn() -> Option<(Arc<dyn MetadataStore>, G)>`: `None` skips the case (a test service
/// that is not running, see `testkit`).
macro_rules! metadata_conformance {
    ($make:path) => {
        $crate::metadata::conformance::metadata_conformance!(@cases $make;
            ping_answers,
            blob_links_are_per_repository,
            put_manifest_with_missing_references_changes_nothing,
            put_manifest_with_wrong_sizes_changes_nothing,
            put_manifest_is_idempotent_and_moves_tags,
            get_manifest_by_tag_and_by_digest,
            index_requires_its_children_in_the_repository,
            delete_manifest_removes_its_tags,
            delete_tag_keeps_the_manifest,
            list_tags_paginates_in_byte_order,
            list_repositories_lists_only_repositories_with_manifests,
            referrers_filter_by_artifact_type,
            upload_sessions_compare_and_set,
            upload_sessions_are_listed_in_pages,
            gc_collects_unreferenced_links_and_blobs,
            gc_keeps_blobs_other_repositories_reference,
            gc_works_in_batches,
            gc_pass_walks_past_what_it_keeps,
            concurrent_puts_of_one_tag_all_succeed,
            repository_size_sums_its_links,
            namespace_usage_counts_each_blob_once,
            delete_repository_removes_all_of_it,
            links_racing_a_repository_deletion_all_succeed,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            // Several worker threads, so the concurrency case really runs tasks in parallel.
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let Some((store, _guard)) = $make().await else {
                    return;
                };
                $crate::metadata::conformance::$case(store).await;
            }
        )*
    };
}
pub(crate) use metadata_conformance;

// ---- fixtures (backends' own tests use some) ----

pub(crate) fn repo(name: &str) -> RepoName {
    name.parse().expect("valid repository name")
}

fn tag(name: &str) -> Tag {
    name.parse().expect("valid tag")
}

/// A blob digest that is distinct per seed.
pub(crate) fn blob(seed: &str) -> Digest {
    Digest::sha256_of(seed.as_bytes())
}

/// Every fixture blob is linked with this size (`link`), so descriptors say it too.
pub(crate) const BLOB_SIZE: u64 = 100;

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Value {
    kit::descriptor(media_type, digest.as_str(), size)
}

/// An OCI image manifest; tests tweak the JSON (subject, artifactType…) before `manifest`.
pub(crate) fn image(config: &Digest, layers: &[&Digest]) -> Value {
    kit::oci_manifest(
        descriptor(kit::OCI_CONFIG, config, BLOB_SIZE),
        layers
            .iter()
            .map(|l| descriptor(kit::OCI_LAYER, l, BLOB_SIZE))
            .collect(),
    )
}

fn index(children: &[&NewManifest]) -> Value {
    kit::oci_index(
        children
            .iter()
            .map(|c| descriptor(OCI_MANIFEST, &c.digest, c.body.len() as u64))
            .collect(),
    )
}

/// A manifest as the registry would hand it over: real bytes, parsed by the real parser.
pub(crate) fn manifest(repo: &RepoName, json: &Value, tags: &[&str]) -> NewManifest {
    let body = Bytes::from(serde_json::to_vec(json).expect("serialisable"));
    let info = parse(None, &body).expect("valid manifest");
    NewManifest {
        repo: repo.clone(),
        digest: Digest::sha256_of(&body),
        info,
        body,
        tags: tags.iter().map(|t| tag(t)).collect(),
    }
}

fn record(m: &NewManifest) -> ManifestRecord {
    ManifestRecord {
        digest: m.digest.clone(),
        media_type: m.info.media_type.to_owned(),
        body: m.body.clone(),
    }
}

pub(crate) async fn link(store: &dyn MetadataStore, repo: &RepoName, blobs: &[&Digest]) {
    for b in blobs {
        store
            .link_blob(repo, b, BLOB_SIZE)
            .await
            .expect("link_blob");
    }
}

async fn put(store: &dyn MetadataStore, m: &NewManifest) {
    store.put_manifest(m).await.expect("put_manifest");
}

async fn get(
    store: &dyn MetadataStore,
    repo: &RepoName,
    reference: &str,
) -> Option<ManifestRecord> {
    let reference: Reference = reference.parse().expect("valid reference");
    store
        .get_manifest(repo, &reference)
        .await
        .expect("get_manifest")
}

async fn tags(store: &dyn MetadataStore, repo: &RepoName) -> Option<Vec<String>> {
    store.list_tags(repo, None, 1000).await.expect("list_tags")
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// A cutoff every grace period has already run out by, on the store's clock.
async fn future(store: &dyn MetadataStore) -> i64 {
    store.now().await.expect("now") + 10
}

/// A garbage-collection pass in one batch, large enough for any case.
async fn gc(store: &dyn MetadataStore, cutoff: i64) -> GcPlan {
    let batch = store
        .collect_garbage(cutoff, 1000, &GcCursor::default())
        .await
        .expect("gc");
    assert_eq!(batch.next, None, "one batch covers a small store");
    batch.removed
}

async fn start_upload(
    store: &dyn MetadataStore,
    repo: &RepoName,
    hash_state: &[u8],
) -> UploadSession {
    store
        .create_upload(&UploadId::generate(), repo, hash_state)
        .await
        .expect("create_upload")
}

// ---- cases ----

pub(crate) async fn ping_answers(store: Arc<dyn MetadataStore>) {
    store.ping().await.expect("ping");
}

pub(crate) async fn blob_links_are_per_repository(store: Arc<dyn MetadataStore>) {
    let store = &*store;
    let (a, b) = (repo("team/a"), repo("team/b"));
    let d = blob("layer");

    assert_eq!(store.linked_blob(&a, &d).await.expect("linked_blob"), None);
    assert!(!store.blob_known(&d).await.expect("blob_known"));

    store.link_blob(&a, &d, 42).await.expect("link");
    store
        .link_blob(&a, &d, 42)
        .await
        .expect("re-linking is idempotent");
    assert_eq!(
        store.linked_blob(&a, &d).await.expect("linked_blob"),
        Some(42)
    );
    assert_eq!(
        store.linked_blob(&b, &d).await.expect("linked_blob"),
        None,
        "links are per repository"
    );
    assert!(store.blob_known(&d).await.expect("blob_known"));
    assert!(!store.blob_known(&blob("other")).await.expect("blob_known"));
    assert_eq!(
        tags(store, &a).await,
        Some(vec![]),
        "linking a blob creates the repository"
    );

    store.link_blob(&b, &d, 42).await.expect("link");
    assert!(store.unlink_blob(&a, &d).await.expect("unlink"));
    assert!(
        !store.unlink_blob(&a, &d).await.expect("unlink"),
        "already unlinked"
    );
    assert!(
        !store
            .unlink_blob(&repo("nobody"), &d)
            .await
            .expect("unlink")
    );
    assert_eq!(store.linked_blob(&a, &d).await.expect("linked_blob"), None);
    assert_eq!(
        store.linked_blob(&b, &d).await.expect("linked_blob"),
        Some(42)
    );

    assert!(store.unlink_blob(&b, &d).await.expect("unlink"));
    assert!(
        store.blob_known(&d).await.expect("blob_known"),
        "the blob record stays until garbage collection"
    );
}

pub(crate) async fn put_manifest_with_missing_references_changes_nothing(
    store: Arc<dyn MetadataStore>,
) {
    let store = &*store;
    let (r, other) = (repo("app"), repo("other"));
    let (config, layer, elsewhere, nowhere) = (
        blob("config"),
        blob("layer"),
        blob("elsewhere"),
        blob("nowhere"),
    );
    link(store, &r, &[&config, &layer]).await;
    link(store, &other, &[&elsewhere]).await;

    let v1 = manifest(&r, &image(&config, &[&layer]), &["v1"]);
    put(store, &v1).await;

    // `elsewhere` is linked, but to another repository: that does not count.
    let bad = manifest(
        &r,
        &image(&config, &[&layer, &elsewhere, &nowhere]),
        &["v1", "v2"],
    );
    match store.put_manifest(&bad).await {
        Err(MetadataError::MissingReferences(missing)) => {
            assert_eq!(
                sorted(missing),
                sorted(vec![elsewhere.clone(), nowhere.clone()])
            );
        }
        other => panic!("expected MissingReferences, got {other:?}"),
    }
    assert_eq!(
        get(store, &r, "v1").await,
        Some(record(&v1)),
        "v1 did not move"
    );
    assert_eq!(get(store, &r, "v2").await, None);
    assert_eq!(get(store, &r, bad.digest.as_str()).await, None);
    assert_eq!(tags(store, &r).await, Some(vec!["v1".to_owned()]));

    // A refused push into a new repository does not create it.
    let fresh = repo("fresh");
    let refused = manifest(&fresh, &image(&config, &[]), &["latest"]);
    assert!(matches!(
        store.put_manifest(&refused).await,
        Err(MetadataError::MissingReferences(m)) if m == vec![config.clone()]
    ));
    assert_eq!(tags(store, &fresh).await, None);
    assert_eq!(
        store
            .list_repositories(None, 100)
            .await
            .expect("list_repositories"),
        vec!["app"]
    );
}

/// A descriptor must state the size of what it names: the blob's linked size, a child
/// manifest's byte length. Clients verify what they pull against it.
pub(crate) async fn put_manifest_with_wrong_sizes_changes_nothing(store: Arc<dyn MetadataStore>) {
    let store = &*store;
    let r = repo("app");
    let (config, layer) = (blob("config"), blob("layer"));
    link(store, &r, &[&config, &layer]).await;
    let mut wrong = image(&config, &[&layer]);
    wrong["layers"][0]["size"] = json!(999_999);
    let refused = manifest(&r, &wrong, &["v1"]);
    match store.put_manifest(&refused).await {
        Err(MetadataError::SizeMismatch {
            digest,
            declared,
            stored,
        }) => assert_eq!(
            (digest, declared, stored),
            (layer.clone(), 999_999, BLOB_SIZE)
        ),
        other => panic!("expected SizeMismatch, got {other:?}"),
    }
    assert_eq!(get(store, &r, "v1").await, None);
    assert_eq!(get(store, &r, refused.digest.as_str()).await, None);

    let child = manifest(&r, &image(&config, &[&layer]), &[]);
    put(store, &child).await;
    let mut wrong = index(&[&child]);
    wrong["manifests"][0]["size"] = json!(child.body.len() + 1);
    let refused = manifest(&r, &wrong, &["multi"]);
    assert!(matches!(
        store.put_manifest(&refused).await,
        Err(MetadataError::SizeMismatch { digest, .. }) if digest == child.digest
    ));
    assert_eq!(get(store, &r, "multi").await, None);
    // A missing reference is reported before a wrong size.
    let mut both = image(&config, &[&layer, &blob("nowhere")]);
    both["config"]["size"] = json!(1);
    assert!(matches!(
        store.put_manifest(&manifest(&r, &both, &[])).await,
        Err(MetadataError::MissingReferences(_))
    ));
}

pub(crate) async fn put_manifest_is_idempotent_and_moves_tags(store: Arc<dyn MetadataStore>) {
    let store = &*store;
    let r = repo("app");
    let (config, l1, l2) = (blob("config"), blob("l1"), blob("l2"));
    link(store, &r, &[&config, &l1, &l2]).await;

    let m1 = manifest(&r, &image(&config, &[&l1]), &["latest", "v1"]);
    let m2 = manifest(&r, &image(&config, &[&l2]), &["latest"]);
    put(store, &m1).await;
    put(store, &m1).await;
    assert_eq!(
        tags(store, &r).await,
        Some(vec!["latest".to_owned(), "v1".to_owned()])
    );
    assert_eq!(get(store, &r, "latest").await, Some(record(&m1)));

    put(store, &m2).await;
    assert_eq!(
        get(store, &r, "latest").await,
        Some(record(&m2)),
        "latest moved to m2"
    );
    assert_eq!(
        get(store, &r, "v1").await,
        Some(record(&m1)),
        "v1 stayed on m1"
    );

    // Re-putting an existing digest still moves the tags it names.
    let again = NewManifest {
        tags: vec![tag("latest")],
        ..m1.clone()
    };
    put(store, &again).await;
    assert_eq!(get(store, &r, "latest").await, Some(record(&m1)));
    assert_eq!(
        get(store, &r, m2.digest.as_str()).await,
        Some(record(&m2)),
        "untagged manifests stay"
    );
    assert_eq!(
        tags(store, &r).await,
        Some(vec!["latest".to_owned(), "v1".to_owned()])
    );
}

pub(crate) async fn get_manifest_by_tag_and_by_digest(store: Arc<dyn MetadataStore>) {
    let store = &*store;
    let (a, b) = (repo("a"), repo("b"));
    let (config, layer) = (blob("config"), blob("layer"));
    link(store, &a, &[&config, &layer]).await;
    link(store, &b, &[&config]).await;

    let oci = manifest(&a, &image(&config, &[&layer]), &["v1"]);
    let mut docker_json = image(&config, &[]);
    docker_json["mediaType"] = json!(DOCKER_MANIFEST);
    let docker = manifest(&a, &docker_json, &["docker"]);
    put(store, &oci).await;
    put(store, &docker).await;

    assert_eq!(get(store, &a, "v1").await, Some(record(&oci)));
    assert_eq!(
        get(store, &a, oci.digest.as_str()).await,
        Some(record(&oci))
    );
    let stored = get(store, &a, "docker").await.expect("docker manifest");
    assert_eq!(
        stored.media_type, DOCKER_MANIFEST,
        "the media type is kept as pushed"
    );
    assert_eq!(stored.body, docker.body, "the bytes are kept exactly");

    assert_eq!(get(store, &a, "nope").await, None);
    assert_eq!(
        get(store, &a, config.as_str()).await,
        None,
        "a blob is not a manifest"
    );
    assert_eq!(
        get(store, &b, oci.digest.as_str()).await,
        None,
        "manifests are per repository"
    );
    assert_eq!(get(store, &b, "v1").await, None);
    assert_eq!(get(store, &repo("unknown"), "v1").await, None);
    assert_eq!(
        get(store, &repo("unknown"), oci.digest.as_str()).await,
        None
    );
}

pub(crate) async fn index_requires_its_children_in_the_repository(store: Arc<dyn MetadataStore>) {
    let store = &*store;
    let (a, b) = (repo("a"), repo("b"));
    let (config, layer) = (blob("config"), blob("layer"));
    link(store, &a, &[&config, &layer]).await;
    link(store, &b, &[&config, &layer]).await;

    let child = manifest(&a, &image(&config, &[&layer]), &[]);
    let idx = manifest(&a, &index(&[&child]), &["multi"]);
    match store.put_manifest(&idx).await {
        Err(MetadataError::MissingReferences(missing)) => {
            assert_eq!(missing, vec![child.digest.clone()])
        }
        other => panic!("expected MissingReferences, got {other:?}"),
    }
    // The child in another repository does not count either.
    put(
        store,
        &NewManifest {
            repo: b.clone(),
            ..child.clone()
        },
    )
    .await;
    assert!(matches!(
        store.put_manifest(&idx).await,
        Err(MetadataError::MissingReferences(_))
    ));

    put(store, &child).await;
    put(store, &idx).await;
    let stored = get(store, &a, "multi").await.expect("index");
    assert_eq!(stored.media_type, OCI_INDEX);
    assert_eq!(stored.digest, idx.digest);
}

pub(crate) async fn delete_manifest_removes_its_tags(store: Arc<dyn MetadataStore>) {
    let store = &*store;
    let r = repo("app");
    let (config, l1, l2) = (blob("config"), blob("l1"), blob("l2"));
    link(store, &r, &[&config, &l1, &l2]).await;
    let m1 = manifest(&r, &image(&config, &[&l1]), &["a", "b"]);
    let m2 = manifest(&r, &image(&config, &[&l2]), &["c"]);
    put(store, &m1).await;
    put(store, &m2).await;

    assert_eq!(
        store
            .delete_manifest(&r, &m1.digest)
            .await
            .expect("delete")
            .map(sorted),
        Some(vec![tag("a"), tag("b")]),
        "the removed tags are reported"
    );
    assert_eq!(get(store, &r, "a").await, None);
    assert_eq!(get(store, &r, "b").await, None);
    assert_eq!(get(store, &r, m1.digest.as_str()).await, None);
    assert_eq!(get(store, &r, "c").await, Some(record(&m2)));
    assert_eq!(tags(store, &r).await, Some(vec!["c".to_owned()]));
    assert_eq!(
        store.linked_blob(&r, &l1).await.expect("linked_blob"),
        Some(100),
        "blob links stay"
    );

    assert_eq!(
        store.delete_manifest(&r, &m1.digest).await.expect("delete"),
        None,
        "already deleted"
    );
    assert_eq!(
        store
            .delete_manifest(&repo("unknown"), &m2.digest)
            .await
            .expect("delete"),
        None
    );

    // An untagged manifest is deleted with no tags to report.
    let untagged = manifest(&r, &image(&config, &[]), &[]);
    put(store, &untagged).await;
    assert_eq!(
        store
            .delete_manifest(&r, &untagged.digest)
            .await
            .expect("delete"),
        Some(vec![])
    );

    // The digest can be pushed again.
    put(
        store,
        &NewManifest {
            tags: vec![tag("d")],
            ..m1.clone()
        },
    )
    .await;
    assert_eq!(get(store, &r, "d").await, Some(record(&m1)));
}

pub(crate) async fn delete_tag_keeps_the_manifest(store: Arc<dyn MetadataStore>) {
    let store = &*store;
    let r = repo("app");
    let config = blob("config");
    link(store, &r, &[&config]).await;
    let m = manifest(&r, &image(&config, &[]), &["v1", "v2"]);
    put(store, &m).await;

    assert!(store.delete_tag(&r, &tag("v1")).await.expect("delete_tag"));
    assert!(
        !store.delete_tag(&r, &tag("v1")).await.expect("delete_tag"),
        "already deleted"
    );
    assert!(
        !store
            .delete_tag(&repo("unknown"), &tag("v2"))
            .await
            .expect("delete_tag")
    );
    assert_eq!(get(store, &r, "v1").await, None);
    assert_eq!(get(store, &r, "v2").await, Some(record(&m)));
    assert_eq!(get(store, &r, m.digest.as_str()).await, Some(record(&m)));
    assert_eq!(tags(store, &r).await, Some(vec!["v2".to_owned()]));
}

pub(crate) async fn list_tags_paginates_in_byte_order(store: Arc<dyn MetadataStore>) {
    let store = &*store;
    let r = repo("app");
    let config = blob("config");
    link(store, &r, &[&config]).await;
    put(
        store,
        &manifest(
            &r,
            &image(&config, &[]),
            &["b", "B", "a", "1.0", "_x", "latest"],
        ),
    )
    .await;

    let r = &r;
    let page = |last: Option<&'static str>, limit: usize| async move {
        store
            .list_tags(r, last, limit)
            .await
            .expect("list_tags")
            .expect("known repository")
    };
    assert_eq!(
        page(None, 100).await,
        ["1.0", "B", "_x", "a", "b", "latest"]
    );
    assert_eq!(page(None, 2).await, ["1.0", "B"]);
    assert_eq!(page(Some("B"), 2).await, ["_x", "a"]);
    assert_eq!(page(Some("a"), 2).await, ["b", "latest"]);
    assert_eq!(page(Some("latest"), 2).await, Vec::<String>::new());
    assert_eq!(
        page(Some("c"), 10).await,
        ["latest"],
        "last need not be an existing tag"
    );
    assert_eq!(page(None, 0).await, Vec::<String>::new());

    let unknown = repo("unknown");
    assert_eq!(
        store
            .list_tags(&unknown, None, 10)
            .await
            .expect("list_tags"),
        None
    );
    assert_eq!(
        store.list_tags(&unknown, None, 0).await.expect("list_tags"),
        None
    );
    assert_eq!(
        store
            .list_tags(&unknown, Some("a"), 10)
            .await
            .expect("list_tags"),
        None
    );

    let blobs_only = repo("blobs-only");
    link(store, &blobs_only, &[&config]).await;
    assert_eq!(tags(store, &blobs_only).await, Some(vec![]));
    assert_eq!(
        store
            .list_tags(&blobs_only, Some("zzz"), 10)
            .await
            .expect("list_tags"),
        Some(vec![])
    );
}

pub(crate) async fn list_repositories_lists_only_repositories_with_manifests(
    store: Arc<dyn MetadataStore>,
) {
    let store = &*store;
    let config = blob("config");
    for name in ["b/app", "a", "c.d", "a/b", "deleted"] {
        let r = repo(name);
        link(store, &r, &[&config]).await;
        put(store, &manifest(&r, &image(&config, &[]), &["latest"])).await;
    }
    let gone = manifest(&repo("deleted"), &image(&config, &[]), &[]);
    assert!(
        store
            .delete_manifest(&repo("deleted"), &gone.digest)
            .await
            .expect("delete")
            .is_some()
    );
    link(store, &repo("linked-only"), &[&config]).await;
    start_upload(store, &repo("uploading"), b"").await;

    let page = |last: Option<&'static str>, limit: usize| async move {
        store
            .list_repositories(last, limit)
            .await
            .expect("list_repositories")
    };
    assert_eq!(page(None, 100).await, ["a", "a/b", "b/app", "c.d"]);
    assert_eq!(page(None, 2).await, ["a", "a/b"]);
    assert_eq!(page(Some("a/b"), 2).await, ["b/app", "c.d"]);
    assert_eq!(page(Some("c.d"), 2).await, Vec::<String>::new());
    assert_eq!(page(Some("a"), 1).await, ["a/b"]);
    assert_eq!(
        page(Some("b"), 10).await,
        ["b/app", "c.d"],
        "last need not be a repository"
    );
    assert_eq!(page(None, 0).await, Vec::<String>::new());
}

pub(crate) async fn referrers_filter_by_artifact_type(store: Arc<dyn MetadataStore>) {
    let store = &*store;
    let r = repo("app");
    let (config, layer) = (blob("config"), blob("layer"));
    link(store, &r, &[&config, &layer]).await;
    let subject = manifest(&r, &image(&config, &[&layer]), &["latest"]);
    put(store, &subject).await;

    let mut sbom_json = image(&config, &[&layer]);
    sbom_json["artifactType"] = json!("application/vnd.example.sbom");
    sbom_json["subject"] = descriptor(OCI_MANIFEST, &subject.digest, subject.body.len() as u64);
    sbom_json["annotations"] =
        json!({ "org.opencontainers.image.created": "2024-01-01T00:00:00Z" });
    let sbom = manifest(&r, &sbom_json, &[]);

    // No artifactType: the config's media type stands in.
    let mut sig_json = image(&config, &[]);
    sig_json["config"]["mediaType"] = json!("application/vnd.example.signature");
    sig_json["subject"] = descriptor(OCI_MANIFEST, &subject.digest, subject.body.len() as u64);
    let sig = manifest(&r, &sig_json, &[]);

    // The subject of a referrer need not exist (yet).
    let absent = blob("absent subject");
    let mut orphan_json = image(&config, &[]);
    orphan_json["subject"] = descriptor(OCI_MANIFEST, &absent, BLOB_SIZE);
    let orphan = manifest(&r, &orphan_json, &[]);

    for m in [&sbom, &sig, &orphan] {
        put(store, m).await;
    }

    let as_referrer = |m: &NewManifest| Referrer {
        digest: m.digest.clone(),
        media_type: OCI_MANIFEST.to_owned(),
        size: m.body.len() as u64,
        artifact_type: m.info.artifact_type.clone(),
        annotations: m.info.annotations.clone(),
    };
    let r = &r;
    let referrers = |subject: Digest, filter: Option<&'static str>| async move {
        let mut found = store
            .list_referrers(r, &subject, filter)
            .await
            .expect("list_referrers");
        found.sort_by(|a, b| a.digest.cmp(&b.digest));
        found
    };

    let all = referrers(subject.digest.clone(), None).await;
    assert_eq!(
        all,
        sorted_referrers(vec![as_referrer(&sbom), as_referrer(&sig)])
    );
    assert_eq!(
        all.iter()
            .find(|x| x.digest == sbom.digest)
            .and_then(|x| x.annotations.clone()),
        Some(BTreeMap::from([(
            "org.opencontainers.image.created".to_owned(),
            "2024-01-01T00:00:00Z".to_owned()
        )]))
    );
    assert_eq!(
        referrers(subject.digest.clone(), Some("application/vnd.example.sbom")).await,
        vec![as_referrer(&sbom)]
    );
    assert_eq!(
        referrers(
            subject.digest.clone(),
            Some("application/vnd.example.signature")
        )
        .await,
        vec![as_referrer(&sig)]
    );
    assert_eq!(
        referrers(subject.digest.clone(), Some("application/x-none")).await,
        vec![]
    );
    assert_eq!(
        referrers(absent.clone(), None).await,
        vec![as_referrer(&orphan)]
    );
    assert_eq!(referrers(sbom.digest.clone(), None).await, vec![]);
    assert_eq!(
        store
            .list_referrers(&repo("other"), &subject.digest, None)
            .await
            .expect("list_referrers"),
        vec![]
    );

    assert!(
        store
            .delete_manifest(r, &sbom.digest)
            .await
            .expect("delete")
            .is_some()
    );
    assert_eq!(
        referrers(subject.digest.clone(), None).await,
        vec![as_referrer(&sig)]
    );
}

fn sorted_referrers(mut v: Vec<Referrer>) -> Vec<Referrer> {
    v.sort_by(|a, b| a.digest.cmp(&b.digest));
    v
}

pub(crate) async fn upload_sessions_are_listed_in_pages(store: Arc<dyn MetadataStore>) {
    let store = &*store;
    let mut created = Vec::new();
    for (i, name) in ["a", "b", "a", "c", "b"].iter().enumerate() {
        let session = start_upload(store, &repo(name), &[i as u8; 3]).await;
        created.push(session);
    }
    created.sort_by(|x, y| x.id.as_str().cmp(y.id.as_str()));
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_uploads(after.as_ref(), 2)
            .await
            .expect("list_uploads");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        listed.extend(page);
    }
    assert_eq!(listed, created);
    store
        .delete_upload(&created[0].id)
        .await
        .expect("delete_upload");
    let rest = store.list_uploads(None, 100).await.expect("list_uploads");
    assert_eq!(rest, created[1..]);
}

pub(crate) async fn upload_sessions_compare_and_set(store: Arc<dyn MetadataStore>) {
    let store = &*store;
    let r = repo("app");
    let before = store.now().await.expect("now");
    let session = start_upload(store, &r, b"s0").await;
    let id = session.id.clone();
    let started = session.created_at;
    assert!(started >= before && session.updated_at == started);
    assert_eq!((session.offset, session.repo.clone()), (0, r.clone()));
    assert_eq!(
        store.get_upload(&r, &id).await.expect("get_upload"),
        Some(session.clone())
    );
    assert_eq!(
        store
            .get_upload(&repo("other"), &id)
            .await
            .expect("get_upload"),
        None,
        "wrong repository"
    );
    assert_eq!(
        store
            .get_upload(&r, &UploadId::generate())
            .await
            .expect("get_upload"),
        None
    );
    // Starting an upload does not make the repository exist.
    assert_eq!(tags(store, &r).await, None);

    assert!(
        store
            .advance_upload(&id, 0, 10, b"s1")
            .await
            .expect("advance")
    );
    let moved = store
        .get_upload(&r, &id)
        .await
        .expect("get_upload")
        .expect("session");
    assert_eq!(
        (moved.offset, moved.hash_state.as_slice()),
        (10, &b"s1"[..])
    );
    assert_eq!(moved.created_at, started);
    assert!(moved.updated_at >= started);

    assert!(
        !store
            .advance_upload(&id, 0, 5, b"stale")
            .await
            .expect("advance"),
        "stale expected offset"
    );
    let kept = store
        .get_upload(&r, &id)
        .await
        .expect("get_upload")
        .expect("session");
    assert_eq!(
        (kept.offset, kept.hash_state.as_slice()),
        (10, &b"s1"[..]),
        "a lost race changes nothing"
    );

    assert!(
        store
            .advance_upload(&id, 10, 25, b"s2")
            .await
            .expect("advance")
    );
    assert!(
        !store
            .advance_upload(&UploadId::generate(), 0, 1, b"x")
            .await
            .expect("advance")
    );

    assert!(store.delete_upload(&id).await.expect("delete_upload"));
    assert!(!store.delete_upload(&id).await.expect("delete_upload"));
    assert_eq!(store.get_upload(&r, &id).await.expect("get_upload"), None);
    assert!(
        !store
            .advance_upload(&id, 25, 30, b"s3")
            .await
            .expect("advance"),
        "session is gone"
    );
}

pub(crate) async fn gc_collects_unreferenced_links_and_blobs(store: Arc<dyn MetadataStore>) {
    let store = &*store;
    let r = repo("app");
    let (config, layer, stray) = (blob("config"), blob("layer"), blob("stray"));
    link(store, &r, &[&config, &layer, &stray]).await;
    let m = manifest(&r, &image(&config, &[&layer]), &["latest"]);
    put(store, &m).await;
    let upload = start_upload(store, &r, b"").await.id;

    // Everything is younger than this cutoff: all of it is within its grace period.
    let past = store.now().await.expect("now") - 3600;
    assert_eq!(gc(store, past).await, GcPlan::default());
    assert_eq!(
        store.linked_blob(&r, &stray).await.expect("linked_blob"),
        Some(100)
    );

    let plan = gc(store, future(store).await).await;
    assert_eq!(
        plan,
        GcPlan {
            links: vec![(r.clone(), stray.clone())],
            blobs: vec![stray.clone()],
        }
    );
    assert_eq!(
        store.linked_blob(&r, &stray).await.expect("linked_blob"),
        None
    );
    assert!(!store.blob_known(&stray).await.expect("blob_known"));
    // Sessions are not metadata's to collect: a request may be writing one (the registry
    // ends stale ones under their lock).
    assert!(
        store
            .get_upload(&r, &upload)
            .await
            .expect("get_upload")
            .is_some()
    );
    for referenced in [&config, &layer] {
        assert_eq!(
            store
                .linked_blob(&r, referenced)
                .await
                .expect("linked_blob"),
            Some(100)
        );
        assert!(store.blob_known(referenced).await.expect("blob_known"));
    }
    assert_eq!(get(store, &r, "latest").await, Some(record(&m)));

    // Unlinked but still referenced by a manifest: the record and bytes stay.
    assert!(store.unlink_blob(&r, &layer).await.expect("unlink"));
    assert_eq!(gc(store, future(store).await).await, GcPlan::default());
    assert!(store.blob_known(&layer).await.expect("blob_known"));

    // Once the manifest is gone, nothing holds its blobs.
    assert!(
        store
            .delete_manifest(&r, &m.digest)
            .await
            .expect("delete")
            .is_some()
    );
    let plan = gc(store, future(store).await).await;
    assert_eq!(plan.links, vec![(r.clone(), config.clone())]);
    assert_eq!(
        sorted(plan.blobs),
        sorted(vec![config.clone(), layer.clone()])
    );
    assert!(!store.blob_known(&config).await.expect("blob_known"));
    assert_eq!(gc(store, future(store).await).await, GcPlan::default());
}

pub(crate) async fn gc_keeps_blobs_other_repositories_reference(store: Arc<dyn MetadataStore>) {
    let store = &*store;
    let (a, b) = (repo("a"), repo("b"));
    let (config, shared) = (blob("config"), blob("shared"));
    link(store, &a, &[&config, &shared]).await;
    link(store, &b, &[&shared]).await;
    // Only reachable through an index: the child's own references keep its blobs.
    let child = manifest(&a, &image(&config, &[&shared]), &[]);
    put(store, &child).await;
    let idx = manifest(&a, &index(&[&child]), &["multi"]);
    put(store, &idx).await;

    let plan = gc(store, future(store).await).await;
    assert_eq!(
        plan,
        GcPlan {
            links: vec![(b.clone(), shared.clone())],
            ..GcPlan::default()
        },
        "only b's link goes: a manifest in `a` still references the shared blob"
    );
    assert_eq!(
        store.linked_blob(&b, &shared).await.expect("linked_blob"),
        None,
        "b's link was unreferenced"
    );
    assert_eq!(
        store.linked_blob(&a, &shared).await.expect("linked_blob"),
        Some(100)
    );
    assert_eq!(
        store.linked_blob(&a, &config).await.expect("linked_blob"),
        Some(100)
    );
    assert!(store.blob_known(&shared).await.expect("blob_known"));
    assert_eq!(
        get(store, &a, child.digest.as_str()).await,
        Some(record(&child))
    );
    assert_eq!(get(store, &a, "multi").await, Some(record(&idx)));
}

pub(crate) async fn gc_works_in_batches(store: Arc<dyn MetadataStore>) {
    let store = &*store;
    let r = repo("app");
    let strays: Vec<Digest> = (0..5).map(|i| blob(&format!("stray-{i}"))).collect();
    link(store, &r, &strays.iter().collect::<Vec<_>>()).await;
    let cutoff = future(store).await;
    let (total, batches) = gc_pass(store, cutoff, 2).await;
    // Five links in pages of two (the third page holds one), then five records likewise.
    assert_eq!(batches, 5, "each row is examined once");
    let mut expected_links: Vec<_> = strays.iter().map(|d| (r.clone(), d.clone())).collect();
    expected_links.sort();
    assert_eq!(sorted(total.links), expected_links);
    assert_eq!(sorted(total.blobs), sorted(strays.clone()));
    for stray in &strays {
        assert!(!store.blob_known(stray).await.expect("blob_known"));
    }
}

/// A pass walks past what it keeps: many referenced links and records cost one look each,
/// and the few strays among them still go within the pass.
pub(crate) async fn gc_pass_walks_past_what_it_keeps(store: Arc<dyn MetadataStore>) {
    let store = &*store;
    let repos: Vec<RepoName> = (0..3).map(|i| repo(&format!("team/r{i}"))).collect();
    let mut strays = Vec::new();
    for (i, r) in repos.iter().enumerate() {
        let layers: Vec<Digest> = (0..6).map(|j| blob(&format!("layer-{i}-{j}"))).collect();
        let config = blob(&format!("config-{i}"));
        let stray = blob(&format!("stray-{i}"));
        let mut linked: Vec<&Digest> = layers.iter().collect();
        linked.extend([&config, &stray]);
        link(store, r, &linked).await;
        put(
            store,
            &manifest(
                r,
                &image(&config, &layers.iter().collect::<Vec<_>>()),
                &["v1"],
            ),
        )
        .await;
        strays.push((r.clone(), stray));
    }
    let cutoff = future(store).await;
    let (total, batches) = gc_pass(store, cutoff, 5).await;
    // 24 links in pages of five; the fifth page (four links) ends the links, so its batch
    // starts on the 24 records too, whose fifth page (four records) ends the pass.
    assert_eq!(batches, 9, "a batch examines its page and moves on");
    strays.sort();
    assert_eq!(sorted(total.links), strays);
    assert_eq!(
        sorted(total.blobs),
        sorted(strays.iter().map(|(_, d)| d.clone()).collect())
    );
    assert_eq!(gc(store, cutoff).await, GcPlan::default(), "nothing left");
}

/// Runs one pass in batches of `limit`, checking each stays within it; returns everything
/// removed (in pass order) and the number of batches.
async fn gc_pass(store: &dyn MetadataStore, cutoff: i64, limit: usize) -> (GcPlan, usize) {
    let mut total = GcPlan::default();
    let mut cursor = Some(GcCursor::default());
    let mut batches = 0;
    while let Some(from) = cursor {
        let batch = store
            .collect_garbage(cutoff, limit, &from)
            .await
            .expect("gc");
        let removed = batch.removed;
        assert!(
            removed.links.len() <= limit && removed.blobs.len() <= limit,
            "a batch exceeded its limit: {removed:?}"
        );
        total.links.extend(removed.links);
        total.blobs.extend(removed.blobs);
        cursor = batch.next;
        batches += 1;
        assert!(batches <= 100, "the pass does not end");
    }
    (total, batches)
}

pub(crate) async fn concurrent_puts_of_one_tag_all_succeed(store: Arc<dyn MetadataStore>) {
    let r = repo("app");
    let (config, layer) = (blob("config"), blob("layer"));
    link(&*store, &r, &[&config, &layer]).await;

    let manifests: Vec<NewManifest> = (0..8)
        .map(|i| {
            let mut json = image(&config, &[&layer]);
            json["annotations"] = json!({ "n": i.to_string() });
            manifest(&r, &json, &["latest"])
        })
        .collect();
    let mut tasks = Vec::new();
    for m in &manifests {
        // Each distinct manifest, plus the same one pushed twice at once.
        for _ in 0..2 {
            let (store, m) = (store.clone(), m.clone());
            tasks.push(tokio::spawn(async move { store.put_manifest(&m).await }));
        }
    }
    for task in tasks {
        task.await.expect("task").expect("concurrent put_manifest");
    }

    let latest = get(&*store, &r, "latest").await.expect("latest");
    assert!(
        manifests.iter().any(|m| m.digest == latest.digest),
        "latest names one of the pushes"
    );
    assert_eq!(tags(&*store, &r).await, Some(vec!["latest".to_owned()]));
    for m in &manifests {
        assert_eq!(get(&*store, &r, m.digest.as_str()).await, Some(record(m)));
    }
}

/// A push linking blobs while the repository is deleted either lands before the deletion (and
/// is deleted with it) or after (and re-creates the repository): never an error.
pub(crate) async fn links_racing_a_repository_deletion_all_succeed(store: Arc<dyn MetadataStore>) {
    let r = repo("acme/raced");
    let pushes: Vec<_> = (0..4)
        .map(|n| {
            let (store, r) = (store.clone(), r.clone());
            tokio::spawn(async move {
                for i in 0..25 {
                    let digest = blob(&format!("raced-{n}-{i}"));
                    store
                        .link_blob(&r, &digest, 1)
                        .await
                        .expect("link while deleting");
                }
            })
        })
        .collect();
    let deleter = {
        let (store, r) = (store.clone(), r.clone());
        tokio::spawn(async move {
            for _ in 0..25 {
                store
                    .delete_repository(&r)
                    .await
                    .expect("delete while linking");
                tokio::task::yield_now().await;
            }
        })
    };
    for task in pushes {
        task.await.expect("push task");
    }
    deleter.await.expect("delete task");
    let last = blob("raced-after");
    store.link_blob(&r, &last, 1).await.expect("link");
    assert_eq!(store.linked_blob(&r, &last).await.expect("read"), Some(1));
}

pub(crate) async fn repository_size_sums_its_links(store: Arc<dyn MetadataStore>) {
    let store = &*store;
    let r = repo("acme/app");
    assert_eq!(store.repository_size(&r).await.expect("size"), 0);
    store.link_blob(&r, &blob("a"), 10).await.expect("link");
    store.link_blob(&r, &blob("b"), 32).await.expect("link");
    store
        .link_blob(&repo("acme/other"), &blob("c"), 1000)
        .await
        .expect("link");
    assert_eq!(store.repository_size(&r).await.expect("size"), 42);
    store.unlink_blob(&r, &blob("a")).await.expect("unlink");
    assert_eq!(store.repository_size(&r).await.expect("size"), 32);
    assert_eq!(
        store.repository_size(&repo("unknown")).await.expect("size"),
        0
    );
}

pub(crate) async fn namespace_usage_counts_each_blob_once(store: Arc<dyn MetadataStore>) {
    let store = &*store;
    let shared = blob("shared");
    for (name, digest, size) in [
        ("my_ns/app", &shared, 100),
        ("my_ns/deep/app", &shared, 100),
        ("my_ns/deep/app", &blob("own"), 7),
        ("my_ns", &blob("top"), 3),
        // Names that share the prefix but are other namespaces.
        ("my_ns0/app", &blob("x"), 1000),
        ("my_nsx/app", &blob("y"), 1000),
        ("myans/app", &blob("z"), 1000),
        ("my_ns-b/app", &blob("w"), 1000),
    ] {
        store
            .link_blob(&repo(name), digest, size)
            .await
            .expect("link");
    }
    assert_eq!(store.namespace_usage("my_ns").await.expect("usage"), 110);
    assert_eq!(store.namespace_usage("nobody").await.expect("usage"), 0);
    assert_eq!(
        store
            .namespace_repositories("my_ns", 10)
            .await
            .expect("list"),
        ["my_ns", "my_ns/app", "my_ns/deep/app"]
    );
    assert_eq!(
        store
            .namespace_repositories("my_ns", 1)
            .await
            .expect("list"),
        ["my_ns"]
    );
    assert!(
        store
            .namespace_repositories("nobody", 10)
            .await
            .expect("list")
            .is_empty()
    );
    for (namespace, digest, holds) in [
        ("my_ns", blob("shared"), true),
        ("my_ns", blob("own"), true),
        ("my_ns", blob("top"), true),
        ("my_ns", blob("x"), false),
        ("my_ns", blob("w"), false),
        ("my_ns0", blob("x"), true),
        ("nobody", blob("shared"), false),
    ] {
        assert_eq!(
            store
                .namespace_holds_blob(namespace, &digest)
                .await
                .expect("holds"),
            holds,
            "{namespace} {digest}"
        );
    }
}

pub(crate) async fn delete_repository_removes_all_of_it(store: Arc<dyn MetadataStore>) {
    let store = &*store;
    let (r, other) = (repo("acme/app"), repo("acme/other"));
    let (config, layer) = (blob("config"), blob("layer"));
    link(store, &r, &[&config, &layer]).await;
    link(store, &other, &[&config]).await;
    let v1 = manifest(&r, &image(&config, &[&layer]), &["v1", "latest"]);
    let untagged = manifest(&r, &image(&config, &[]), &[]);
    put(store, &v1).await;
    put(store, &untagged).await;
    let kept = manifest(&other, &image(&config, &[]), &["v1"]);
    put(store, &kept).await;

    let deleted = store
        .delete_repository(&r)
        .await
        .expect("delete_repository")
        .expect("the repository was there");
    assert_eq!(
        deleted,
        DeletedRepository {
            manifests: sorted(vec![v1.digest.clone(), untagged.digest.clone()]),
            tags: vec![tag("latest"), tag("v1")],
            blobs: sorted(vec![config.clone(), layer.clone()]),
        }
    );
    assert_eq!(tags(store, &r).await, None, "the repository is unknown");
    assert_eq!(get(store, &r, v1.digest.as_str()).await, None);
    assert_eq!(store.linked_blob(&r, &layer).await.expect("linked"), None);
    assert_eq!(store.repository_size(&r).await.expect("size"), 0);
    assert_eq!(
        store.list_repositories(None, 10).await.expect("catalog"),
        vec!["acme/other"]
    );
    assert_eq!(get(store, &other, "v1").await, Some(record(&kept)));
    assert_eq!(
        store
            .delete_repository(&r)
            .await
            .expect("delete_repository"),
        None
    );

    // Garbage collection takes what only the deleted repository had, and nothing else.
    let plan = gc(store, future(store).await).await;
    assert_eq!(plan.blobs, vec![layer.clone()]);
    assert!(store.blob_known(&config).await.expect("blob_known"));

    // The name can be pushed to again.
    link(store, &r, &[&config]).await;
    put(store, &manifest(&r, &image(&config, &[]), &["new"])).await;
    assert_eq!(tags(store, &r).await, Some(vec!["new".to_owned()]));
}
