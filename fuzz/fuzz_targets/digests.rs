//! Digests (`oci::digest`): whatever parses displays back to the same string, has the hex
//! length of its algorithm, and survives a JSON round trip; a hasher whose state is saved and
//! restored mid-stream gives the digest of the whole input, and no saved state (they come
//! back from the metadata store) makes `restore_state` panic.
#![no_main]

use aerugo::oci::{Algorithm, Digest, Hasher};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(digest) = text.parse::<Digest>()
    {
        assert_eq!(digest.to_string(), text);
        let algorithm = digest.algorithm();
        assert_eq!(format!("{}:{}", algorithm.as_str(), digest.hex()), text);
        assert_eq!(digest.hex().len(), algorithm.hex_len());
        let json = serde_json::to_string(&digest).expect("a digest serialises");
        assert_eq!(serde_json::from_str::<Digest>(&json).ok(), Some(digest));
    }

    let _ = Hasher::restore_state(data);

    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
        let mut first = Hasher::new(algorithm);
        first.update(&data[..split]);
        let mut resumed = Hasher::restore_state(&first.save_state()).expect("own saved state");
        resumed.update(&data[split..]);
        assert_eq!(resumed.finish(), Digest::of(algorithm, data));
    }
});
