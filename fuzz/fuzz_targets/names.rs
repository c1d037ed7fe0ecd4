//! Repository names, tags, references and upload ids (`oci::name`): whatever parses displays
//! back to the same string and is safe to use as part of a storage path.
#![no_main]

use aerugo::oci::name::MAX_NAME_LEN;
use aerugo::oci::{Reference, RepoName, Tag, UploadId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = text.parse::<RepoName>() {
        assert_eq!(name.to_string(), text);
        assert!(text.len() <= MAX_NAME_LEN);
        assert!(
            text.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/')),
            "{text:?}: a character a storage path or URL would have to escape"
        );
        assert!(
            text.split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."),
            "{text:?}: an empty, `.` or `..` component"
        );
    }
    if let Ok(tag) = text.parse::<Tag>() {
        assert_eq!(tag.to_string(), text);
        assert!((1..=128).contains(&text.len()));
        assert!(!text.contains(['/', ':']) && text != "." && text != "..");
    }
    if let Ok(reference) = text.parse::<Reference>() {
        assert_eq!(reference.to_string(), text);
        match &reference {
            Reference::Tag(tag) => assert_eq!(text.parse::<Tag>().as_ref(), Ok(tag)),
            Reference::Digest(digest) => assert_eq!(digest.as_str(), text),
        }
    }
    if let Ok(id) = text.parse::<UploadId>() {
        // Any accepted spelling becomes the canonical hyphenated lowercase form.
        let canonical = id.to_string();
        assert_eq!(canonical.len(), 36, "{canonical:?}");
        assert!(
            canonical
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'-'))
        );
        assert_eq!(canonical.parse::<UploadId>(), Ok(id));
    }
});
