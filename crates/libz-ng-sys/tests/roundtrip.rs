//! flate2's zlib-ng backend, as pingora-core builds it, compresses and inflates through this
//! stand-in: the same bytes come back, actually compressed, and corrupt input is an error.

use std::io::{Read, Write};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

fn sample() -> Vec<u8> {
    (0..200_000u32).map(|i| (i % 251) as u8).collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("compress");
    encoder.finish().expect("finish")
}

#[test]
fn gzip_round_trip_restores_the_bytes() {
    let data = sample();
    let compressed = gzip(&data);
    assert!(
        compressed.len() < data.len() / 10,
        "not compressed: {}",
        compressed.len()
    );
    let mut restored = Vec::new();
    GzDecoder::new(&compressed[..])
        .read_to_end(&mut restored)
        .expect("inflate");
    assert_eq!(restored, data);
}

#[test]
fn corrupt_deflate_stream_is_an_error() {
    let mut compressed = gzip(&sample());
    let middle = compressed.len() / 2;
    compressed[middle..middle + 16].fill(0xff);
    let mut restored = Vec::new();
    assert!(GzDecoder::new(&compressed[..])
        .read_to_end(&mut restored)
        .is_err());
}
