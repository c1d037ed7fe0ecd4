use super::*;

fn d(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn image(media_type: Option<&str>) -> String {
    let mt = media_type
        .map(|m| format!(r#""mediaType":"{m}","#))
        .unwrap_or_default();
    format!(
        r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":10}}]}}"#,
        d('a'),
        d('b')
    )
}

#[test]
fn valid_manifests_report_their_references() {
    let info = parse(Some(OCI_MANIFEST), image(Some(OCI_MANIFEST)).as_bytes()).unwrap();
    assert_eq!(info.media_type, OCI_MANIFEST);
    assert_eq!(info.blobs.len(), 2);
    assert_eq!(
        info.artifact_type.as_deref(),
        Some("application/vnd.oci.image.config.v1+json")
    );

    let info = parse(None, image(None).as_bytes()).unwrap();
    assert_eq!(info.media_type, OCI_MANIFEST);

    let info = parse(
        Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
        image(None).as_bytes(),
    )
    .unwrap();
    assert_eq!(info.media_type, OCI_MANIFEST);

    let docker = image(Some(DOCKER_MANIFEST));
    assert_eq!(
        parse(Some(DOCKER_MANIFEST), docker.as_bytes())
            .unwrap()
            .media_type,
        DOCKER_MANIFEST
    );

    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":5,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
        d('c')
    );
    let info = parse(Some(OCI_INDEX), index.as_bytes()).unwrap();
    assert!(info.is_index());
    assert_eq!(info.children.len(), 1);
    assert!(info.blobs.is_empty());

    let artifact = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.example.sbom","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":7}},"annotations":{{"k":"v"}}}}"#,
        d('a'),
        d('e')
    );
    let info = parse(Some(OCI_MANIFEST), artifact.as_bytes()).unwrap();
    assert_eq!(
        info.artifact_type.as_deref(),
        Some("application/vnd.example.sbom")
    );
    assert_eq!(
        info.subject.as_ref().map(|s| s.as_str().to_owned()),
        Some(d('e'))
    );
    assert_eq!(info.annotations.unwrap()["k"], "v");
}

#[test]
fn foreign_layers_with_urls_are_not_required() {
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{}","size":10,"urls":["https://example.com/l"]}}]}}"#,
        d('a'),
        d('b')
    );
    assert_eq!(parse(None, body.as_bytes()).unwrap().blobs.len(), 1);
}

#[test]
fn invalid_manifests_are_rejected() {
    let bad_digest = image(Some(OCI_MANIFEST)).replace(&d('b'), "sha256:nothex");
    let negative_size = image(Some(OCI_MANIFEST)).replace(r#""size":10"#, r#""size":-1"#);
    let no_config = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#);
    let index_with_layers =
        format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[],"layers":[]}}"#);
    let cases: Vec<(Option<&str>, String, &str)> = vec![
        (None, "not json".into(), "NotJson"),
        (None, "[]".into(), "NotJson"),
        (None, r#"{"schemaVersion":1}"#.into(), "SchemaVersion"),
        (
            None,
            r#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#.into(),
            "UnsupportedMediaType",
        ),
        (Some(DOCKER_MANIFEST), image(Some(OCI_MANIFEST)), "MediaTypeMismatch"),
        (None, image(Some("application/x-unknown")), "UnsupportedMediaType"),
        (None, r#"{"schemaVersion":2}"#.into(), "UnknownMediaType"),
        (None, no_config, "MissingField"),
        (None, index_with_layers, "UnexpectedField"),
        (None, bad_digest, "InvalidDescriptor"),
        (None, negative_size, "InvalidDescriptor"),
    ];
    for (content_type, body, expected) in cases {
        let err = parse(content_type, body.as_bytes()).unwrap_err();
        assert!(format!("{err:?}").starts_with(expected), "{body}: {err:?}");
    }
}

#[test]
fn accept_negotiation() {
    assert!(accepts([], OCI_MANIFEST));
    assert!(accepts(["*/*"], OCI_MANIFEST));
    assert!(accepts([DOCKER_MANIFEST, OCI_MANIFEST], OCI_MANIFEST));
    assert!(accepts(
        ["application/vnd.oci.image.manifest.v1+json; q=0.5, text/plain"],
        OCI_MANIFEST
    ));
    assert!(!accepts([DOCKER_MANIFEST], OCI_MANIFEST));
    assert!(accepts([""], OCI_INDEX));
}
