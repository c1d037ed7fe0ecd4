//! Upload write throughput of the filesystem blob store: 64 KiB frames (what hyper hands us)
//! into an upload, including the final fsync. Bounds how fast a push can go.

use aerugo::oci::UploadId;
use aerugo::storage::BlobStore;
use aerugo::storage::fs::FsBlobStore;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const TOTAL: u64 = 256 << 20;

fn upload_write(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FsBlobStore::new(dir.path().to_path_buf()).expect("store");
    let frame = Bytes::from(vec![0x5au8; 64 * 1024]);
    let mut group = c.benchmark_group("fs_upload");
    group.throughput(Throughput::Bytes(TOTAL));
    group.sample_size(10);
    group.bench_function("write_256MiB_64KiB_frames_with_fsync", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let id = UploadId::generate();
                store.create_upload(&id).await.expect("create");
                let mut writer = store.append_upload(&id, 0).await.expect("append");
                let mut written = 0;
                while written < TOTAL {
                    writer.write(frame.clone()).await.expect("write");
                    written += frame.len() as u64;
                }
                writer.finish().await.expect("finish");
                store.delete_upload(&id).await.expect("delete");
            })
        })
    });
    group.finish();
}

criterion_group!(benches, upload_write);
criterion_main!(benches);
