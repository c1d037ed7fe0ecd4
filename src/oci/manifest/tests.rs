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

/// Go clients match keys case-insensitively (Unicode folding) and let the last duplicate win;
/// every way of making them read other descriptors than the registry checks is refused.
#[test]
fn keys_go_clients_read_differently_are_rejected() {
    let layer = format!(
        r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":10}}"#,
        d('f')
    );
    let with_field = |field: &str| {
        image(Some(OCI_MANIFEST)).replacen('{', &format!(r#"{{"{field}":[{layer}],"#), 1)
    };
    let index = |platform: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":5,"platform":{platform}}}]}}"#,
            d('c')
        )
    };
    let ambiguous = [
        with_field("Layers"),
        with_field("LAYERS"),
        with_field("layerſ"),
        image(Some(OCI_MANIFEST)).replace(r#""config""#, r#""Config""#),
        image(Some(OCI_MANIFEST)).replace(
            r#""mediaType":"application/vnd.oci.image.manifest"#,
            r#""MediaType":"application/vnd.oci.image.manifest"#,
        ),
        image(Some(OCI_MANIFEST)).replace(r#""size":10"#, r#""size":10,"Size":11"#),
        image(Some(OCI_MANIFEST)).replace(r#""size":10"#, r#""size":10,"Key":1,"diGest":"x""#),
        format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[],"Manifests":[]}}"#),
        index(r#"{"os":"linux","OS":"windows","architecture":"amd64"}"#),
        // Duplicates: the registry would read the first, Go clients the last.
        with_field("layers"),
        image(Some(OCI_MANIFEST)).replace(r#""size":10"#, r#""size":10,"size":11"#),
        image(Some(OCI_MANIFEST)).replace(r#""size":10"#, r#""size":10,"digest":"x""#),
        image(Some(OCI_MANIFEST)).replacen('{', r#"{"annotations":{"a":"1","a":"2"},"#, 1),
        index(r#"{"os":"linux","os":"windows","architecture":"amd64"}"#),
        image(Some(OCI_MANIFEST)).replacen('{', r#"{"x-extra":{"k":1,"k":2},"#, 1),
    ];
    for body in ambiguous {
        let err = parse(None, body.as_bytes()).unwrap_err();
        assert!(
            matches!(err, ManifestError::Ambiguous(_)),
            "{body}: {err:?}"
        );
    }
    // Keys outside the known fields keep their freedom, whatever their case.
    let free = image(Some(OCI_MANIFEST)).replacen(
        '{',
        r#"{"annotations":{"Size":"1","LAYERS":"x"},"x-Layers":[],"#,
        1,
    );
    assert_eq!(parse(None, free.as_bytes()).unwrap().blobs.len(), 2);
}

#[test]
fn deep_nesting_is_rejected_without_exhausting_the_stack() {
    let nested = |depth: usize| {
        let value = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        image(Some(OCI_MANIFEST)).replacen('{', &format!(r#"{{"x-extra":{value},"#), 1)
    };
    let at_limit = nested(strict::MAX_DEPTH - 1);
    assert!(parse(None, at_limit.as_bytes()).is_ok());
    for depth in [strict::MAX_DEPTH, 100_000] {
        let err = parse(None, nested(depth).as_bytes()).unwrap_err();
        assert!(
            matches!(err, ManifestError::Ambiguous(_)),
            "{depth}: {err:?}"
        );
    }
}

#[test]
fn descriptors_carry_their_declared_sizes() {
    let info = parse(None, image(Some(OCI_MANIFEST)).as_bytes()).unwrap();
    let sizes: Vec<u64> = info.blobs.iter().map(|b| b.size).collect();
    assert_eq!(sizes, [2, 10]);
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
