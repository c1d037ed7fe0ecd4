//! Manifest validation (`oci::manifest::parse`). The first input byte chooses the request's
//! `Content-Type`, the rest is the body.
//!
//! For every manifest the parser accepts:
//! - its media type is one the registry stores, an index names children and no blobs, an
//!   image names at least its config blob and no children;
//! - no field the parser reads is spelled, in any object it reads it from, in a way Go's
//!   `encoding/json` would also take for that field (another case, `K` for `k`, `ſ` for `s`)
//!   or given twice: docker, containerd and go-containerregistry would then read other
//!   descriptors than the registry checked (the CVE-2021-41190 class);
//! - the blobs and children (digest and size) and the subject it reports are exactly the
//!   descriptors under those fields, read again here from an order- and duplicate-preserving
//!   parse of the same bytes.
#![no_main]

use std::fmt;

use aerugo::oci::Digest;
use aerugo::oci::manifest::{self, Descriptor, SUPPORTED_MEDIA_TYPES};
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some(manifest::OCI_MANIFEST),
    Some(manifest::OCI_INDEX),
    Some(manifest::DOCKER_MANIFEST),
    Some(manifest::DOCKER_MANIFEST_LIST),
    Some("application/json"),
    Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
    Some("text/plain"),
];

/// Top-level fields the parser reads, and the descriptor fields it reads.
const MANIFEST_FIELDS: &[&str] = &[
    "schemaVersion",
    "mediaType",
    "artifactType",
    "config",
    "layers",
    "manifests",
    "subject",
    "annotations",
];
const DESCRIPTOR_FIELDS: &[&str] = &["mediaType", "digest", "size", "urls"];
const FOREIGN_LAYER_PREFIXES: &[&str] = &[
    "application/vnd.docker.image.rootfs.foreign.",
    "application/vnd.oci.image.layer.nondistributable.",
];

/// JSON with every object's members in order, duplicates kept.
enum Json {
    Object(Vec<(String, Json)>),
    Array(Vec<Json>),
    String(String),
    Unsigned(u64),
    Other,
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Json, E> {
        Ok(Json::Other)
    }
    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        // `-0` arrives here.
        Ok(u64::try_from(n).map_or(Json::Other, Json::Unsigned))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(Json::Unsigned(n))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Json, E> {
        Ok(Json::Other)
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Other)
    }
    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry()? {
            members.push(member);
        }
        Ok(Json::Object(members))
    }
}

/// Go's `encoding/json` field matching: exact, else case-insensitive with Unicode simple
/// folding, under which only `K` (U+212A) and `ſ` (U+017F) fold onto ASCII letters.
fn go_matches(key: &str, field: &str) -> bool {
    let fold = |c: char| match c {
        '\u{212A}' => 'k',
        '\u{017F}' => 's',
        c => c.to_ascii_lowercase(),
    };
    key.chars().map(fold).eq(field.chars().map(fold))
}

/// The members of an object the parser reads `fields` from, after checking that none of
/// them is spelled, or given, in a way Go would read as another value of the field.
fn members<'a>(json: &'a Json, fields: &[&str]) -> &'a [(String, Json)] {
    let Json::Object(members) = json else {
        panic!("accepted a manifest with a non-object where an object belongs");
    };
    for name in fields {
        let spellings: Vec<&str> = members
            .iter()
            .filter(|(key, _)| go_matches(key, name))
            .map(|(key, _)| key.as_str())
            .collect();
        assert!(
            spellings.is_empty() || spellings == [*name],
            "accepted a manifest whose {name:?} Go reads from {spellings:?}"
        );
    }
    members
}

fn get<'a>(members: &'a [(String, Json)], field: &str) -> Option<&'a Json> {
    members
        .iter()
        .find(|(key, _)| key == field)
        .map(|(_, value)| value)
}

fn string(json: Option<&Json>) -> Option<&str> {
    match json {
        Some(Json::String(s)) => Some(s),
        _ => None,
    }
}

/// A descriptor's digest and size, media type and whether it has URLs.
fn descriptor(json: &Json) -> (Descriptor, Option<&str>, bool) {
    let members = members(json, DESCRIPTOR_FIELDS);
    let digest: Digest = string(get(members, "digest"))
        .and_then(|d| d.parse().ok())
        .expect("accepted a descriptor without a valid digest");
    let Some(&Json::Unsigned(size)) = get(members, "size") else {
        panic!("accepted a descriptor without a non-negative integer size");
    };
    let media_type = string(get(members, "mediaType"));
    let has_urls = matches!(get(members, "urls"), Some(Json::Array(urls)) if !urls.is_empty());
    (Descriptor { digest, size }, media_type, has_urls)
}

fn descriptors(json: Option<&Json>) -> Vec<&Json> {
    match json {
        Some(Json::Array(items)) => items.iter().collect(),
        _ => Vec::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    let Ok(info) = manifest::parse(content_type, body) else {
        return;
    };
    assert!(SUPPORTED_MEDIA_TYPES.contains(&info.media_type));
    if info.is_index() {
        assert!(info.blobs.is_empty());
    } else {
        assert!(info.children.is_empty() && !info.blobs.is_empty());
    }

    // The parser caps nesting far below serde_json's recursion limit (128), so what it
    // accepted parses here too.
    let json = serde_json::from_slice::<Json>(body).expect("accepted a manifest that is not JSON");
    let top = members(&json, MANIFEST_FIELDS);
    let field = |name: &str| get(top, name);

    let subject = field("subject").map(|s| descriptor(s).0.digest);
    assert_eq!(subject, info.subject);

    let children: Vec<Descriptor> = descriptors(field("manifests"))
        .into_iter()
        .map(|d| descriptor(d).0)
        .collect();
    assert_eq!(children, info.children);

    let mut blobs: Vec<Descriptor> = field("config")
        .map(|c| descriptor(c).0)
        .into_iter()
        .collect();
    for layer in descriptors(field("layers")) {
        let (blob, media_type, has_urls) = descriptor(layer);
        let foreign = has_urls
            && FOREIGN_LAYER_PREFIXES
                .iter()
                .any(|p| media_type.unwrap_or_default().starts_with(p));
        if !foreign {
            blobs.push(blob);
        }
    }
    assert_eq!(blobs, info.blobs);
});
