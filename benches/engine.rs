//! Load + plan + schedule of synthetic graphs with a no-op executor: what cairn costs before any process starts.
//!
//! Run with `cargo bench --bench engine`. Each graph has N tasks in layers of 100, every task depending on two
//! tasks of the layer before it, plus one `all` task depending on the last layer.

use std::path::PathBuf;
use std::sync::Arc;

use cairn::config::Config;
use cairn::graph::TaskGraph;
use cairn::run::{
    self, ExecutionFuture, Executor, Job, JobContext, Plan, Reporter, RunOptions, Stream,
    TaskResult, TaskStatus,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn synthetic(tasks: usize) -> String {
    let mut text = String::with_capacity(tasks * 64);
    text.push_str("[vars]\nflavour = \"release\"\n");
    for i in 0..tasks {
        text.push_str(&format!(
            "[tasks.t{i}]\nrun = \"build {{{{flavour}}}} {i}\"\n"
        ));
        if i >= 100 {
            let layer_start = (i / 100 - 1) * 100;
            text.push_str(&format!(
                "deps = [\"t{}\", \"t{}\"]\n",
                layer_start + i % 100,
                layer_start + (i * 7) % 100
            ));
        }
    }
    let last_layer = (tasks.saturating_sub(1) / 100) * 100;
    let deps: Vec<String> = (last_layer..tasks).map(|i| format!("\"t{i}\"")).collect();
    text.push_str(&format!("[tasks.all]\ndeps = [{}]\n", deps.join(", ")));
    text
}

struct NoOp;

impl Executor for NoOp {
    fn execute(&self, _job: Arc<Job>, _context: JobContext) -> ExecutionFuture {
        Box::pin(async { TaskStatus::Succeeded })
    }
}

struct Quiet;

impl Reporter for Quiet {
    fn started(&self, _: &Job, _: u32) {}
    fn output(&self, _: &Job, _: Stream, _: &[u8]) {}
    fn finished(&self, _: &Job, _: &TaskResult) {}
    fn retrying(&self, _: &Job, _: &TaskStatus, _: u32, _: u32) {}
    fn note(&self, _: &Job, _: &str) {}
    fn cache_hit(&self, _: &Job, _: &cairn::cache::Key) {}
}

fn load_and_plan(text: &str) -> Plan {
    let config = Config::parse(
        "tasks.toml",
        text,
        PathBuf::from("tasks.toml"),
        PathBuf::from("."),
    )
    .expect("valid");
    let mut graph = TaskGraph::build(Arc::new(config)).expect("acyclic");
    let selection = graph.select(&["all".to_owned()]).expect("selects");
    Plan::new(&graph, &selection, &[])
}

/// Runs every job of `plan` through the scheduler with the no-op executor.
fn schedule(
    runtime: &tokio::runtime::Runtime,
    plan: &Plan,
    options: &RunOptions,
) -> run::RunReport {
    runtime
        .block_on(run::execute(
            plan,
            options,
            Arc::new(NoOp),
            Arc::new(Quiet),
            None,
        ))
        .expect("runs")
}

fn engine(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let options = RunOptions {
        jobs: 8,
        keep_going: false,
        handle_signals: false,
        force: false,
        stop: None,
        remote: None,
    };
    let mut group = c.benchmark_group("engine");
    group.sample_size(20);
    for tasks in [1_000usize, 10_000] {
        let text = synthetic(tasks);
        group.throughput(Throughput::Elements(tasks as u64));
        group.bench_with_input(BenchmarkId::new("load+plan", tasks), &text, |b, text| {
            b.iter(|| load_and_plan(text))
        });
        let plan = load_and_plan(&text);
        group.bench_with_input(BenchmarkId::new("schedule", tasks), &plan, |b, plan| {
            b.iter(|| schedule(&runtime, plan, &options))
        });
        group.bench_with_input(
            BenchmarkId::new("load+plan+schedule", tasks),
            &text,
            |b, text| b.iter(|| schedule(&runtime, &load_and_plan(text), &options)),
        );
    }
    group.finish();

    // A hundred thousand tasks: fewer samples, the same measurements.
    let mut large = c.benchmark_group("engine-large");
    large.sample_size(10);
    let tasks = 100_000usize;
    let text = synthetic(tasks);
    large.throughput(Throughput::Elements(tasks as u64));
    large.bench_with_input(BenchmarkId::new("load+plan", tasks), &text, |b, text| {
        b.iter(|| load_and_plan(text))
    });
    let plan = load_and_plan(&text);
    large.bench_with_input(BenchmarkId::new("schedule", tasks), &plan, |b, plan| {
        b.iter(|| schedule(&runtime, plan, &options))
    });
    large.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
