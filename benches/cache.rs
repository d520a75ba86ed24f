//! The cache's hot paths: deciding "nothing changed" over 20,000 files from the stat index, hashing files
//! cold, and computing a key. Run with `cargo bench --bench cache`.

use std::collections::BTreeMap;
use std::path::Path;

use cairn::cache::{
    FileDigest, FileHasher, Fingerprint, GlobList, KeySpec, Session, FORMAT_VERSION,
};
use cairn::config::DepsStrategy;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const FILES: usize = 20_000;

fn tree(root: &Path, files: usize, size: usize) {
    let block: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    for i in 0..files {
        let dir = root.join(format!("data/d{}", i / 100));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut content = block.clone();
        content.extend_from_slice(&i.to_le_bytes());
        std::fs::write(dir.join(format!("f{i}.bin")), content).expect("write");
    }
}

fn spec(inputs: &[&str]) -> KeySpec {
    let globs: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
    KeySpec {
        task: "scan".into(),
        params: BTreeMap::new(),
        commands: vec!["true".into()],
        shell: vec!["bash".to_owned(), "-c".to_owned()].into(),
        dir: ".".into(),
        args: vec![],
        inputs: GlobList::new(&globs).expect("valid"),
        input_globs: globs,
        output_globs: vec![],
        outputs: GlobList::new(&[]).expect("valid"),
        env: BTreeMap::new(),
        deps_strategy: DepsStrategy::Key,
        cacheable: true,
        remote: cairn::config::RemoteMode::Off,
        incremental: false,
    }
}

fn cache(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    tree(root, FILES, 1024);
    let cache_dir = root.join(".cairn/cache");
    let scan = spec(&["data/**"]);
    {
        // Fill the stat index once, as a first run would.
        let session = Session::open(root, &cache_dir).expect("opens");
        session.key(&scan, &[]).expect("keys");
        session.finish().expect("saves");
    }
    // Files written within a second of the index are hashed again by the next run, which then saves an index
    // that trusts them: that second run is what every later one looks like.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    {
        let session = Session::open(root, &cache_dir).expect("opens");
        session.key(&scan, &[]).expect("keys");
        session.finish().expect("saves");
    }

    let mut group = c.benchmark_group("cache");
    group.sample_size(20);
    group.throughput(Throughput::Elements(FILES as u64));
    group.bench_function(BenchmarkId::new("unchanged-check", FILES), |b| {
        b.iter(|| {
            let session = Session::open(root, &cache_dir).expect("opens");
            session.key(&scan, &[]).expect("keys")
        })
    });

    let files: Vec<String> = (0..2_000)
        .map(|i| format!("data/d{}/f{i}.bin", i / 100))
        .collect();
    let big = tempfile::tempdir().expect("temp dir");
    tree(big.path(), 256, 256 * 1024);
    let big_files: Vec<String> = (0..256)
        .map(|i| format!("data/d{}/f{i}.bin", i / 100))
        .collect();
    group.throughput(Throughput::Bytes(256 * 256 * 1024));
    group.bench_function("cold-hash/256x256KiB", |b| {
        b.iter(|| {
            let hasher = FileHasher::load(big.path(), &big.path().join("no-index"));
            hasher.digest_all(&big_files).expect("hashes")
        })
    });
    group.throughput(Throughput::Elements(files.len() as u64));
    group.bench_function("cold-hash/2000x1KiB", |b| {
        b.iter(|| {
            let hasher = FileHasher::load(root, &root.join("no-index"));
            hasher.digest_all(&files).expect("hashes")
        })
    });

    let fingerprint = Fingerprint {
        version: FORMAT_VERSION,
        platform: "x86_64-linux".into(),
        task: "build".into(),
        params: BTreeMap::new(),
        commands: vec!["cargo build".into()],
        shell: vec!["bash".into()],
        dir: ".".into(),
        args: vec![],
        outputs: vec![],
        input_globs: vec!["src/**".into()],
        env: BTreeMap::new(),
        inputs: (0..1000)
            .map(|i| {
                (
                    format!("src/file{i}.rs"),
                    FileDigest {
                        hash: [i as u8; 32],
                        executable: false,
                    },
                )
            })
            .collect(),
        deps: BTreeMap::new(),
    };
    group.throughput(Throughput::Elements(1000));
    group.bench_function("key/1000-inputs", |b| b.iter(|| fingerprint.key()));
    group.finish();
    restore(c);
}

/// Restoring an entry of 500 files in 10 directories through the checked, link-refusing writer, beside the same
/// files written with plain path-based durable writes (what restores did before they were checked): the ratio
/// is what the checks cost. Both fsync every file and directory, as a restore must.
fn restore(c: &mut Criterion) {
    use cairn::cache::{Entry, LockMode, Store};
    const RESTORED: usize = 500;
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = dir.path().join("repo");
    let paths: Vec<String> = (0..RESTORED)
        .map(|i| format!("out/d{}/f{i}.txt", i % 10))
        .collect();
    for (i, path) in paths.iter().enumerate() {
        let full = repo.join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(&full, format!("{i:04096}")).expect("write");
    }
    let store = Store::open(&dir.path().join("store"), LockMode::Shared).expect("store");
    let entry = Entry {
        key: String::new(),
        task: "build".into(),
        created: 0,
        duration_ms: 0,
        outputs: store.put_outputs(&repo, &paths).expect("stored"),
        log: None,
        log_inline: None,
        fingerprint: None,
        signed_by: None,
    };
    let contents: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::fs::read(repo.join(p)).expect("read"))
        .collect();
    let mut group = c.benchmark_group("restore");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RESTORED as u64));
    group.bench_function("checked/500-files", |b| {
        b.iter(|| {
            let _ = std::fs::remove_dir_all(repo.join("out"));
            store
                .restore_outputs(&repo, &entry, &|p| p.starts_with("out/"), &|_| false)
                .expect("restores");
        })
    });
    group.bench_function("path-based/500-files", |b| {
        b.iter(|| {
            let _ = std::fs::remove_dir_all(repo.join("out"));
            for (path, bytes) in paths.iter().zip(&contents) {
                let full = repo.join(path);
                std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
                cairn::atomic::write_atomic(&full, bytes).expect("writes");
            }
        })
    });
    group.finish();
}

criterion_group!(benches, cache);
criterion_main!(benches);
