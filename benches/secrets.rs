//! Redaction throughput: how fast task output is cleaned of secrets (every value in its encoded forms) on its
//! way to the terminal, the cache and the summaries.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use cairn::secrets::redact::Redactor;

fn redaction(c: &mut Criterion) {
    // Twenty secrets of realistic lengths (tokens, passwords, keys).
    let values: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| {
            (
                format!("SECRET_{i}"),
                format!("s3cr3t-value-{i:04}-{}", "x".repeat(8 + i * 3)).into_bytes(),
            )
        })
        .collect();
    let (redactor, _) = Redactor::new(values.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
    // 16 MiB of build-log-like lines; one line in a thousand carries a secret.
    let mut log = Vec::with_capacity(16 << 20);
    let mut line = 0usize;
    while log.len() < 16 << 20 {
        if line % 1000 == 999 {
            log.extend_from_slice(b"token=");
            log.extend_from_slice(&values[line % 20].1);
        } else {
            log.extend_from_slice(
                format!(
                    "   Compiling crate-{line} v0.1.{} (/work/src/crate-{line})",
                    line % 97
                )
                .as_bytes(),
            );
        }
        log.push(b'\n');
        line += 1;
    }
    let lines: Vec<&[u8]> = log.split(|&b| b == b'\n').collect();
    let mut group = c.benchmark_group("redaction");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(log.len() as u64));
    group.bench_function("16MiB-log/20-secrets/line-by-line", |b| {
        b.iter(|| {
            let mut kept = 0usize;
            for line in &lines {
                kept += redactor.redact(line).len();
            }
            kept
        })
    });
    // What a task's output goes through: the complete lines of each 16 KiB read, cleaned in one pass.
    group.bench_function("16MiB-log/20-secrets/per-read", |b| {
        b.iter(|| {
            let mut kept = 0usize;
            for chunk in log.chunks(16 * 1024) {
                let end = chunk
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(chunk.len(), |i| i + 1);
                kept += redactor.redact(&chunk[..end]).len();
            }
            kept
        })
    });
    group.finish();
}

criterion_group!(benches, redaction);
criterion_main!(benches);
