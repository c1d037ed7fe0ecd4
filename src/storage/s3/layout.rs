//! Object keys, and what an upload area's objects say about its bytes. Pure: no requests,
//! so the planning rules (which objects hold the first `len` bytes, what a new request must
//! discard, how a blob is assembled) are tested without a server.
//!
//! An upload area (`uploads/<id>/`) holds:
//!
//! ```text
//! area               marker, JSON {"part_size": N}: the area exists; written first, removed last
//! part-<16 hex>      bytes [start, start + part_size), start a multiple of part_size
//! tail-<16 hex>      bytes [start, start + size), start a part boundary, size < part_size
//! commit             JSON: the multipart upload of a commit in progress (to abort it)
//! ```
//!
//! A session's first `len` bytes are parts `0 .. len / part_size` and the first
//! `len % part_size` bytes of the tail at `len / part_size * part_size`. Any other part or tail
//! is debris of a request that failed before the session confirmed it, or a tail a part now
//! covers. Offsets are zero-padded hex so key order is offset order.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::settings::{MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE};
use crate::oci::{Digest, UploadId};

const BLOBS: &str = "blobs/";
const UPLOADS: &str = "uploads/";
const MARKER: &str = "area";
const COMMIT: &str = "commit";
const PART: &str = "part-";
const TAIL: &str = "tail-";

/// Builds and parses the store's keys under the configured prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

/// One object of an upload area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum AreaObject {
    Marker,
    Commit,
    Part(u64),
    Tail(u64),
}

impl Keys {
    /// `prefix` is empty or ends in `/` (`S3Settings::normalized_prefix`).
    pub(super) fn new(prefix: String) -> Keys {
        Keys { prefix }
    }

    pub(super) fn blobs(&self) -> String {
        format!("{}{BLOBS}", self.prefix)
    }

    pub(super) fn uploads(&self) -> String {
        format!("{}{UPLOADS}", self.prefix)
    }

    /// Everything the store writes, for finding its multipart uploads.
    pub(super) fn root(&self) -> &str {
        &self.prefix
    }

    /// Whether a key is one of the store's blobs or upload objects (another application may
    /// share the bucket and prefix).
    pub(super) fn is_ours(&self, key: &str) -> bool {
        key.strip_prefix(&self.prefix)
            .is_some_and(|rest| rest.starts_with(BLOBS) || rest.starts_with(UPLOADS))
    }

    /// `blobs/<algorithm>/<first two hex chars>/<hex>`, as the `fs` store lays them out.
    pub(super) fn blob(&self, digest: &Digest) -> String {
        let hex = digest.hex();
        // A parsed Digest always has ≥ 64 hex chars; the fallback only keeps this panic-free.
        let fan_out = hex.get(..2).unwrap_or(hex);
        format!(
            "{}{BLOBS}{}/{fan_out}/{hex}",
            self.prefix,
            digest.algorithm().as_str()
        )
    }

    /// The committed blob a key names; `None` for anything else (foreign objects, a valid
    /// digest filed under the wrong fan-out directory, which `stat` could never find).
    pub(super) fn parse_blob(&self, key: &str) -> Option<Digest> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(BLOBS)?;
        let mut segments = rest.split('/');
        let (algorithm, fan_out, hex) = (segments.next()?, segments.next()?, segments.next()?);
        if segments.next().is_some() || fan_out.len() != 2 || !hex.starts_with(fan_out) {
            return None;
        }
        let digest: Digest = format!("{algorithm}:{hex}").parse().ok()?;
        // Only the normal form maps back to this key.
        (self.blob(&digest) == key).then_some(digest)
    }

    /// `uploads/<id>/`.
    pub(super) fn area(&self, id: &UploadId) -> String {
        format!("{}{UPLOADS}{id}/", self.prefix)
    }

    pub(super) fn object(&self, id: &UploadId, object: AreaObject) -> String {
        let area = self.area(id);
        match object {
            AreaObject::Marker => format!("{area}{MARKER}"),
            AreaObject::Commit => format!("{area}{COMMIT}"),
            AreaObject::Part(start) => format!("{area}{PART}{start:016x}"),
            AreaObject::Tail(start) => format!("{area}{TAIL}{start:016x}"),
        }
    }

    /// The upload a key belongs to and the rest of the key, for any object under
    /// `uploads/<id>/` whose id is in normal form.
    pub(super) fn parse_area_key<'k>(&self, key: &'k str) -> Option<(UploadId, &'k str)> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix(UPLOADS)?;
        let (id, name) = rest.split_once('/')?;
        let parsed: UploadId = id.parse().ok()?;
        (parsed.as_str() == id).then_some((parsed, name))
    }

    /// The key a listing of `uploads/` starts after to skip the area of `id` entirely:
    /// ids have one length, so `<id>0` sorts after all of `<id>/…` and before any later id.
    pub(super) fn after_area(&self, id: &UploadId) -> String {
        format!("{}{UPLOADS}{id}0", self.prefix)
    }

    /// A key outside any upload area and blob for the write probe.
    pub(super) fn probe(&self) -> String {
        format!(
            "{}{UPLOADS}write-probe-{}",
            self.prefix,
            uuid::Uuid::new_v4().simple()
        )
    }
}

impl AreaObject {
    /// The object a name inside an area denotes; `None` for foreign names.
    pub(super) fn parse(name: &str) -> Option<AreaObject> {
        let offset = |hex: &str| {
            (hex.len() == 16)
                .then(|| u64::from_str_radix(hex, 16).ok())
                .flatten()
        };
        match name {
            MARKER => Some(AreaObject::Marker),
            COMMIT => Some(AreaObject::Commit),
            _ => {
                if let Some(hex) = name.strip_prefix(PART) {
                    offset(hex).map(AreaObject::Part)
                } else {
                    offset(name.strip_prefix(TAIL)?).map(AreaObject::Tail)
                }
            }
        }
    }
}

/// What a listing of one upload area found: object sizes by position, and every key (to
/// remove the area).
#[derive(Debug, Default, Clone)]
pub(super) struct AreaListing {
    pub(super) parts: BTreeMap<u64, u64>,
    pub(super) tails: BTreeMap<u64, u64>,
    pub(super) has_marker: bool,
    pub(super) has_commit: bool,
    pub(super) newest: Option<SystemTime>,
}

impl AreaListing {
    pub(super) fn add(&mut self, object: AreaObject, size: u64, modified: Option<SystemTime>) {
        match object {
            AreaObject::Marker => self.has_marker = true,
            AreaObject::Commit => self.has_commit = true,
            AreaObject::Part(start) => {
                self.parts.insert(start, size);
            }
            AreaObject::Tail(start) => {
                self.tails.insert(start, size);
            }
        }
        self.newest = self.newest.max(modified);
    }

    /// Every object found, the marker last (so an interrupted removal leaves a listed area).
    pub(super) fn objects(&self) -> Vec<AreaObject> {
        let mut all: Vec<AreaObject> = self
            .parts
            .keys()
            .map(|&s| AreaObject::Part(s))
            .chain(self.tails.keys().map(|&s| AreaObject::Tail(s)))
            .collect();
        if self.has_commit {
            all.push(AreaObject::Commit);
        }
        if self.has_marker {
            all.push(AreaObject::Marker);
        }
        all
    }
}

/// `len` bytes of one object, from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Piece {
    pub(super) object: AreaObject,
    pub(super) len: u64,
}

/// Fewer than the requested bytes survive; `actual` is how far the area reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TooShort {
    pub(super) expected: u64,
    pub(super) actual: u64,
}

/// The objects holding the first `len` bytes, in order: whole parts, then a tail prefix.
pub(super) fn plan(
    listing: &AreaListing,
    part_size: u64,
    len: u64,
) -> Result<Vec<Piece>, TooShort> {
    let full_parts = len / part_size;
    let mut pieces = Vec::new();
    for index in 0..full_parts {
        let start = index * part_size;
        if listing.parts.get(&start) != Some(&part_size) {
            let actual = start + listing.tails.get(&start).copied().unwrap_or(0);
            return Err(TooShort {
                expected: len,
                actual,
            });
        }
        pieces.push(Piece {
            object: AreaObject::Part(start),
            len: part_size,
        });
    }
    let start = full_parts * part_size;
    let rest = len - start;
    if rest > 0 {
        let tail = listing.tails.get(&start).copied().unwrap_or(0);
        if tail < rest {
            return Err(TooShort {
                expected: len,
                actual: start + tail,
            });
        }
        pieces.push(Piece {
            object: AreaObject::Tail(start),
            len: rest,
        });
    }
    Ok(pieces)
}

/// What a request appending at `offset` removes first: parts and tails beyond the confirmed
/// bytes (a failed request's), and tails that confirmed parts now cover. Every part below
/// `offset`'s part boundary and the tail at it (when `offset` is inside a part) stay.
pub(super) fn debris(listing: &AreaListing, part_size: u64, offset: u64) -> Vec<AreaObject> {
    let boundary = offset / part_size * part_size;
    let live_tail = (offset > boundary).then_some(boundary);
    let parts = listing
        .parts
        .keys()
        .filter(|&&start| start >= boundary)
        .map(|&start| AreaObject::Part(start));
    let tails = listing
        .tails
        .keys()
        .filter(|&&start| Some(start) != live_tail)
        .map(|&start| AreaObject::Tail(start));
    parts.chain(tails).collect()
}

/// How a planned blob reaches its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Publish {
    /// The empty blob: one empty `PutObject`.
    Empty,
    /// One whole object (a tail or a part, so at most 5 GiB): one server-side `CopyObject`.
    Copy(AreaObject),
    /// `UploadPartCopy` of each piece (each at most 5 GiB), then `CompleteMultipartUpload`.
    Multipart(Vec<Piece>),
}

/// Chooses the cheapest way that works for any size: a single `CopyObject` only when one
/// whole object (never above the part size, hence never above S3's 5 GiB copy limit) is the
/// blob; otherwise multipart, which has no such limit.
pub(super) fn publish_plan(
    listing: &AreaListing,
    pieces: Vec<Piece>,
) -> Result<Publish, TooManyParts> {
    if pieces.len() as u64 > MAX_PARTS {
        return Err(TooManyParts(pieces.len()));
    }
    let whole = |piece: &Piece| {
        let size = match piece.object {
            AreaObject::Part(start) => listing.parts.get(&start),
            AreaObject::Tail(start) => listing.tails.get(&start),
            AreaObject::Marker | AreaObject::Commit => None,
        };
        size == Some(&piece.len) && piece.len <= MAX_PART_SIZE
    };
    Ok(match pieces.as_slice() {
        [] => Publish::Empty,
        [only] if whole(only) => Publish::Copy(only.object),
        _ => Publish::Multipart(pieces),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the upload needs {0} parts; S3 allows 10000 (raise storage.part_size_bytes)")]
pub(super) struct TooManyParts(pub(super) usize);

/// Part size an area's marker records, checked (a marker written by hand or by another tool
/// must not produce parts S3 refuses).
pub(super) fn valid_part_size(size: u64) -> Option<u64> {
    (MIN_PART_SIZE..=MAX_PART_SIZE)
        .contains(&size)
        .then_some(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn listing(parts: &[(u64, u64)], tails: &[(u64, u64)]) -> AreaListing {
        let mut l = AreaListing::default();
        l.add(AreaObject::Marker, 20, None);
        for &(start, size) in parts {
            l.add(AreaObject::Part(start), size, None);
        }
        for &(start, size) in tails {
            l.add(AreaObject::Tail(start), size, None);
        }
        l
    }

    /// Parts of `part_size` covering `[0, full_parts * part_size)`.
    fn parts(part_size: u64, full_parts: u64) -> Vec<(u64, u64)> {
        (0..full_parts)
            .map(|i| (i * part_size, part_size))
            .collect()
    }

    #[test]
    fn keys_round_trip_and_reject_strangers() {
        let keys = Keys::new("reg/".into());
        let digest = Digest::sha256_of(b"x");
        let key = keys.blob(&digest);
        assert_eq!(
            key,
            format!("reg/blobs/sha256/{}/{}", &digest.hex()[..2], digest.hex())
        );
        assert_eq!(keys.parse_blob(&key), Some(digest.clone()));
        let misfiled = key.replacen(&format!("/{}/", &digest.hex()[..2]), "/zz/", 1);
        for stranger in [
            misfiled.as_str(),
            "reg/blobs/sha256/ab/not-hex",
            "reg/blobs/md5/d4/d41d8cd98f00b204e9800998ecf8427e",
            "other/blobs/sha256/aa/aa",
            "reg/blobs/stray",
        ] {
            assert_eq!(keys.parse_blob(stranger), None, "{stranger}");
        }
        assert_eq!(Keys::new(String::new()).parse_blob(&key), None);

        let id = UploadId::generate();
        for object in [
            AreaObject::Marker,
            AreaObject::Commit,
            AreaObject::Part(5 * MIB),
            AreaObject::Tail(u64::MAX),
        ] {
            let key = keys.object(&id, object);
            let (parsed, name) = keys.parse_area_key(&key).unwrap();
            assert_eq!(parsed, id);
            assert_eq!(AreaObject::parse(name), Some(object), "{key}");
        }
        let upper = format!("reg/uploads/{}/area", id.as_str().to_uppercase());
        assert!(keys.parse_area_key(&upper).is_none());
        assert!(keys.parse_area_key(&keys.probe()).is_none());
        assert!(keys.is_ours(&keys.blob(&digest)) && keys.is_ours(&keys.area(&id)));
        assert!(!keys.is_ours("reg/other/x") && !keys.is_ours("blobs/sha256/aa/aa"));
        for name in ["part-12", "tail-zzzzzzzzzzzzzzzz", "data", ""] {
            assert_eq!(AreaObject::parse(name), None, "{name}");
        }
    }

    #[test]
    fn part_keys_sort_by_offset_and_areas_can_be_skipped() {
        let keys = Keys::new(String::new());
        let id = UploadId::generate();
        let a = keys.object(&id, AreaObject::Part(9 * MIB));
        let b = keys.object(&id, AreaObject::Part(10 * MIB));
        assert!(a < b);
        let skip = keys.after_area(&id);
        assert!(keys.object(&id, AreaObject::Tail(u64::MAX)) < skip);
        assert!(keys.object(&id, AreaObject::Marker) < skip);
        let later: UploadId = "ffffffff-ffff-4fff-bfff-ffffffffffff".parse().unwrap();
        if later != id {
            assert!(keys.area(&later) > skip);
        }
    }

    #[test]
    fn plan_takes_whole_parts_then_a_tail_prefix() {
        let ps = 5 * MIB;
        let l = listing(&parts(ps, 2), &[(2 * ps, 300), (0, 7)]);
        let got = plan(&l, ps, 2 * ps + 200).unwrap();
        assert_eq!(
            got,
            vec![
                Piece {
                    object: AreaObject::Part(0),
                    len: ps
                },
                Piece {
                    object: AreaObject::Part(ps),
                    len: ps
                },
                Piece {
                    object: AreaObject::Tail(2 * ps),
                    len: 200
                },
            ]
        );
        // On a part boundary no tail is needed, even a stale one at that boundary.
        assert_eq!(plan(&l, ps, 2 * ps).unwrap().len(), 2);
        assert_eq!(plan(&l, ps, 0).unwrap(), vec![]);
        // Below the first boundary the tail at 0 holds the bytes.
        assert_eq!(
            plan(&l, ps, 5).unwrap(),
            vec![Piece {
                object: AreaObject::Tail(0),
                len: 5
            }]
        );
    }

    #[test]
    fn plan_reports_how_far_the_bytes_reach() {
        let ps = 5 * MIB;
        let l = listing(&parts(ps, 1), &[(ps, 10)]);
        assert_eq!(
            plan(&l, ps, ps + 11),
            Err(TooShort {
                expected: ps + 11,
                actual: ps + 10
            })
        );
        // A missing part: the area reaches only to it.
        let l = listing(&[(ps, ps)], &[(2 * ps, 1)]);
        assert_eq!(
            plan(&l, ps, 2 * ps + 1),
            Err(TooShort {
                expected: 2 * ps + 1,
                actual: 0
            })
        );
        // A short part (never written by this store) does not count as a part.
        let l = listing(&[(0, ps - 1)], &[]);
        assert!(plan(&l, ps, ps).is_err());
    }

    #[test]
    fn debris_is_everything_the_confirmed_bytes_do_not_use() {
        let ps = 5 * MIB;
        // Confirmed 2 parts + 100 bytes; a failed request wrote part 2 and a tail after it.
        let l = listing(&parts(ps, 3), &[(0, 9), (2 * ps, 100), (3 * ps, 4)]);
        assert_eq!(
            debris(&l, ps, 2 * ps + 100),
            vec![
                AreaObject::Part(2 * ps),
                AreaObject::Tail(0),
                AreaObject::Tail(3 * ps)
            ]
        );
        // On a boundary the tail there is debris too (its bytes are beyond the offset).
        assert_eq!(
            debris(&l, ps, 2 * ps),
            vec![
                AreaObject::Part(2 * ps),
                AreaObject::Tail(0),
                AreaObject::Tail(2 * ps),
                AreaObject::Tail(3 * ps)
            ]
        );
        let pieces = plan(&l, ps, 2 * ps + 100).unwrap();
        let removed = debris(&l, ps, 2 * ps + 100);
        assert!(pieces.iter().all(|p| !removed.contains(&p.object)));
    }

    #[test]
    fn small_blobs_are_copied_whole_and_others_assembled() {
        let ps = 5 * MIB;
        let l = listing(&parts(ps, 1), &[(0, 10), (ps, 10)]);
        assert_eq!(publish_plan(&l, vec![]), Ok(Publish::Empty));
        let tail = plan(&l, ps, 10).unwrap();
        assert_eq!(
            publish_plan(&l, tail),
            Ok(Publish::Copy(AreaObject::Tail(0)))
        );
        // Part of a tail (its end was never confirmed) cannot be a CopyObject.
        let prefix = plan(&l, ps, 9).unwrap();
        assert!(matches!(
            publish_plan(&l, prefix),
            Ok(Publish::Multipart(_))
        ));
        let two = plan(&l, ps, ps + 10).unwrap();
        assert!(matches!(publish_plan(&l, two), Ok(Publish::Multipart(p)) if p.len() == 2));
    }

    /// The planning for blobs above S3's 5 GiB single-copy limit, without storing one: every
    /// piece is at most 5 GiB, the pieces add up to the blob, and no single copy is chosen.
    #[test]
    fn blobs_above_five_gib_are_assembled_in_parts_of_at_most_five_gib() {
        for (ps, len) in [
            (8 * MIB, 6 * GIB + 123),
            (5 * GIB, 12 * GIB),
            (5 * GIB, 5 * GIB + 1),
            (64 * MIB, 100 * GIB + 7),
        ] {
            let full = len / ps;
            let l = listing(&parts(ps, full), &[(full * ps, len % ps)]);
            let pieces = plan(&l, ps, len).unwrap();
            assert_eq!(pieces.iter().map(|p| p.len).sum::<u64>(), len);
            assert!(pieces.iter().all(|p| p.len <= MAX_PART_SIZE));
            let (last, rest) = pieces.split_last().unwrap();
            assert!(rest.iter().all(|p| p.len >= MIN_PART_SIZE) && last.len > 0);
            match publish_plan(&l, pieces) {
                Ok(Publish::Multipart(p)) => assert!(p.len() as u64 <= MAX_PARTS),
                other => panic!("{ps} {len}: {other:?}"),
            }
        }
        // Beyond 10000 parts the upload cannot be assembled: a clear error, not S3's.
        let ps = 5 * MIB;
        let len = 10_001 * ps;
        let l = listing(&parts(ps, 10_001), &[]);
        let pieces = plan(&l, ps, len).unwrap();
        assert_eq!(publish_plan(&l, pieces), Err(TooManyParts(10_001)));
    }

    #[test]
    fn marker_part_sizes_are_checked() {
        assert_eq!(valid_part_size(8 * MIB), Some(8 * MIB));
        assert_eq!(valid_part_size(MIB), None);
        assert_eq!(valid_part_size(6 * GIB), None);
    }
}
