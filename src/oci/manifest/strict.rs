//! The JSON shape a manifest must have before its fields are read: one reading for every
//! client.
//!
//! Go's `encoding/json` (docker, containerd, go-containerregistry) matches object keys to
//! struct fields case-insensitively and lets the last duplicate win; serde matches exactly
//! and ignores unknown keys. A manifest with `layers` and `Layers` would then be checked by
//! the registry against one list and pulled by Go clients from the other (the
//! CVE-2021-41190 class). So a manifest is refused when any object holds the same key twice,
//! or when a key of a manifest, descriptor or platform object equals one of its known fields
//! under Unicode case folding without being that field. Nesting is capped as well: Go
//! clients cannot decode what serde would happily skip.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Deepest nesting of arrays and objects a manifest may have. Real manifests use four
/// (index → descriptor → platform → features); the margin is for artifacts' own fields.
pub const MAX_DEPTH: usize = 32;

/// Checks `bytes` (already known to be a JSON object at the top) against the rules above;
/// the error names the offending key or the nesting limit, with serde_json's position.
pub fn check(bytes: &[u8]) -> Result<(), serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    Node {
        shape: Shape::Manifest,
        depth: 0,
    }
    .deserialize(&mut deserializer)?;
    deserializer.end()
}

/// What an object is expected to be, which decides the known fields its keys are held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Manifest,
    Descriptor,
    Descriptors,
    Platform,
    /// Anything else (annotations, unknown fields): only duplicate keys are refused.
    Free,
}

impl Shape {
    fn known_fields(self) -> &'static [&'static str] {
        match self {
            Shape::Manifest => &[
                "schemaVersion",
                "mediaType",
                "artifactType",
                "config",
                "layers",
                "manifests",
                "subject",
                "annotations",
            ],
            Shape::Descriptor => &[
                "mediaType",
                "digest",
                "size",
                "urls",
                "annotations",
                "data",
                "artifactType",
                "platform",
            ],
            Shape::Platform => &[
                "architecture",
                "os",
                "os.version",
                "os.features",
                "variant",
                "features",
            ],
            Shape::Descriptors | Shape::Free => &[],
        }
    }

    fn field(self, key: &str) -> Shape {
        match (self, key) {
            (Shape::Manifest, "config" | "subject") => Shape::Descriptor,
            (Shape::Manifest, "layers" | "manifests") => Shape::Descriptors,
            (Shape::Descriptor, "platform") => Shape::Platform,
            _ => Shape::Free,
        }
    }

    fn element(self) -> Shape {
        match self {
            Shape::Descriptors => Shape::Descriptor,
            _ => Shape::Free,
        }
    }

    /// The known field `key` would select in a Go client, when `key` is not that field.
    fn case_variant_of(self, key: &str) -> Option<&'static str> {
        let fields = self.known_fields();
        if fields.is_empty() || fields.contains(&key) {
            return None;
        }
        let folded = fold(key);
        fields.iter().copied().find(|field| fold(field) == folded)
    }
}

/// Unicode case folding close to Go's `EqualFold` orbits: upper then lower maps `ſ` to `s`
/// and the Kelvin sign to `k`, as Go does. It may fold a little more than Go (`ß` → `ss`);
/// refusing such a key is harmless.
fn fold(s: &str) -> String {
    s.chars()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

/// One JSON value being walked, with its expected shape and nesting depth.
struct Node {
    shape: Shape,
    depth: usize,
}

impl Node {
    fn child(&self, shape: Shape) -> Node {
        Node {
            shape,
            depth: self.depth + 1,
        }
    }

    fn enter<E: de::Error>(&self) -> Result<(), E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "manifest is nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Node {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.enter()?;
        while seq
            .next_element_seed(self.child(self.shape.element()))?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.enter()?;
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if let Some(field) = self.shape.case_variant_of(&key) {
                return Err(de::Error::custom(format_args!(
                    "key {key:?} differs from the field {field:?} only in case"
                )));
            }
            if seen.contains(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let shape = self.shape.field(&key);
            seen.insert(key);
            map.next_value_seed(self.child(shape))?;
        }
        Ok(())
    }
}
