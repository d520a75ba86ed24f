//! `cairn ui`'s server-side rendering over a project with 1,000 recorded runs (the target: a page for
//! 1,000 runs in under 300 ms). Run with `cargo bench --bench ui`.

use cairn::ui::Project;
use criterion::{criterion_group, criterion_main, Criterion};

const RUNS: usize = 1000;
const TASKS_PER_RUN: usize = 20;

/// A project directory with `RUNS` run records of `TASKS_PER_RUN` tasks each, shaped as `cairn run` writes them.
fn project() -> (tempfile::TempDir, Project) {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_owned();
    let mut tasks_toml = String::new();
    for t in 0..TASKS_PER_RUN {
        tasks_toml.push_str(&format!(
            "[tasks.t{t}]\nrun = \"true\"\ninputs = [\"src/**\"]\n"
        ));
    }
    std::fs::write(root.join("tasks.toml"), tasks_toml).expect("tasks.toml");
    let runs = root.join(".cairn/runs");
    std::fs::create_dir_all(&runs).expect("runs dir");
    for r in 0..RUNS {
        let id = format!("20261206T{:06}.000Z-{r}", r);
        let tasks: Vec<serde_json::Value> = (0..TASKS_PER_RUN)
            .map(|t| {
                serde_json::json!({
                    "label": format!("t{t}"), "task": format!("t{t}"), "params": {}, "deps": [],
                    "key": format!("{:064x}", r * 1000 + t), "status": "succeeded", "exit_code": 0,
                    "blocked_by": null, "cache": if t % 3 == 0 { "miss" } else { "hit" },
                    "cache_reason": null, "started_ms": 1.0, "ended_ms": 20.0 + t as f64,
                    "duration_ms": 19.0 + t as f64, "attempts": 1, "output_bytes": 120,
                    "phases": [{"name": "run", "started_ms": 1.0, "duration_ms": 18.0}]
                })
            })
            .collect();
        let record = serde_json::json!({
            "schema": 1, "id": id, "cairn": "0.1.0", "targets": ["all"],
            "started_at": format!("2026-12-06T00:00:{:02}.000Z", r % 60), "duration_ms": 250.0 + r as f64,
            "jobs": 2, "exit_code": 0, "interrupted": null,
            "totals": {"tasks": TASKS_PER_RUN, "succeeded": TASKS_PER_RUN, "cached": 13, "failed": 0,
                       "skipped": 0, "not_run": 0, "interrupted": 0},
            "critical_path": {"tasks": ["t0"], "duration_ms": 19.0},
            "tasks": tasks,
        });
        std::fs::write(runs.join(format!("{id}.json")), record.to_string()).expect("record");
    }
    let project = Project {
        file: root.join("tasks.toml"),
        root,
        exe: env!("CARGO_BIN_EXE_cairn").into(),
    };
    (dir, project)
}

fn pages(c: &mut Criterion) {
    let (_dir, project) = project();
    let mut group = c.benchmark_group("ui");
    group.sample_size(20);
    // Task pages also run `cairn why` (a process of its own), which is not the server's rendering.
    for path in ["/runs", "/tasks", "/cache", "/fleet"] {
        assert!(project.render(path, "csrf").is_some(), "{path} renders");
        group.bench_function(format!("render {path} (1,000 runs recorded)"), |b| {
            b.iter(|| project.render(path, "csrf").map(|page| page.body.len()))
        });
    }
    group.finish();
}

criterion_group!(benches, pages);
criterion_main!(benches);
