//! Hashing throughput: every pushed byte goes through `oci::Hasher`, so this bounds push speed.

use aerugo::oci::{Algorithm, Hasher};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn hashing(c: &mut Criterion) {
    let chunk = vec![0x5au8; 1 << 20];
    let mut group = c.benchmark_group("hash_1MiB");
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
        group.bench_function(algorithm.as_str(), |b| {
            b.iter(|| {
                let mut hasher = Hasher::new(algorithm);
                hasher.update(std::hint::black_box(&chunk));
                hasher.finish()
            })
        });
    }
    group.finish();
    c.bench_function("hash_state_save_restore", |b| {
        let mut hasher = Hasher::new(Algorithm::Sha256);
        hasher.update(&chunk[..1000]);
        b.iter(|| Hasher::restore_state(&std::hint::black_box(&hasher).save_state()))
    });
}

criterion_group!(benches, hashing);
criterion_main!(benches);
