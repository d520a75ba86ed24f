//! What a plugin costs: compiling and instantiating a module (once per run, or once ever with the compile
//! cache), starting the `cairn-plugin-host` process that runs it for cairn, and one call with a small JSON
//! request on an instantiated plugin, in process and through the host's pipes (what cairn pays). Run with
//! `cargo bench --bench plugins`. Uses plugins/dist/line-lint.wasm when plugins/build.sh has built it, else
//! an equivalent module written in WAT.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use cairn_plugin_api::{exports, InputFile, LogLevel, TaskRequest, TaskResponse};
use cairn_plugin_client::{Grants, Limits, Plugin, Sink, Spec};
use cairn_plugin_host::runtime::Instance;
use criterion::{criterion_group, criterion_main, Criterion};

struct Quiet;

impl Sink for Quiet {
    fn redact(&self, text: &str) -> String {
        text.to_string()
    }
    fn log(&self, _plugin: &str, _level: LogLevel, _message: &str) {}
}

/// A module answering `describe` and `run_task` with fixed replies: the host's own cost, nothing else.
fn wat_module() -> Vec<u8> {
    let describe = r#"{"ok":{"name":"bench","version":"0","protocol":1,"capabilities":["task"]}}"#;
    let reply = r#"{"ok":{"status":0,"diagnostics":[],"output":"ok"}}"#;
    let escape = |s: &str| s.replace('"', "\\\"");
    format!(
        r#"(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{d}")
  (data (i32.const 512) "{r}")
  (func $emit (param $ptr i32) (param $len i32)
    (local $off i64) (local $i i32)
    (local.set $off (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (call $store_u8 (i64.add (local.get $off) (i64.extend_i32_u (local.get $i)))
        (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (call $output_set (local.get $off) (i64.extend_i32_u (local.get $len))))
  (func (export "describe") (result i32) (call $emit (i32.const 0) (i32.const {dl})) (i32.const 0))
  (func (export "run_task") (result i32) (call $emit (i32.const 512) (i32.const {rl})) (i32.const 0)))"#,
        d = escape(describe),
        r = escape(reply),
        dl = describe.len(),
        rl = reply.len()
    )
    .into_bytes()
}

fn module() -> (String, Vec<u8>) {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dist/line-lint.wasm");
    match std::fs::read(&built) {
        Ok(bytes) => ("line-lint (Rust)".into(), bytes),
        Err(_) => ("WAT echo".into(), wat_module()),
    }
}

fn spec(wasm: &[u8]) -> Spec {
    Spec {
        name: "bench".into(),
        wasm: wasm.to_vec(),
        config: BTreeMap::new(),
        grants: Grants::default(),
        limits: Limits::default(),
        cache_dir: None,
    }
}

fn plugin_costs(c: &mut Criterion) {
    let (kind, wasm) = module();
    eprintln!("plugin benchmark module: {kind}, {} bytes", wasm.len());
    let sink: Arc<dyn Sink> = Arc::new(Quiet);
    let mut group = c.benchmark_group("plugin");
    group.sample_size(10);
    group.bench_function("compile and load (no cache)", |b| {
        b.iter(|| Instance::load(spec(&wasm), Arc::clone(&sink)).expect("loads"))
    });
    let host = std::path::PathBuf::from(env!("CARGO_BIN_EXE_cairn-plugin-host"));
    group.bench_function("start a host process, compile and load (no cache)", |b| {
        b.iter(|| Plugin::load_with(&host, spec(&wasm), sink.as_ref()).expect("loads"))
    });
    group.finish();

    let instance = Instance::load(spec(&wasm), Arc::clone(&sink)).expect("loads");
    let plugin = Plugin::load_with(&host, spec(&wasm), sink.as_ref()).expect("loads");
    let request = TaskRequest {
        task: "lint".into(),
        params: BTreeMap::new(),
        args: Vec::new(),
        files: vec![InputFile {
            path: "hosts/a.nix".into(),
            contents: "{ config, ... }:\n{\n  networking.hostName = \"a\";\n}\n".into(),
        }],
    };
    let mut group = c.benchmark_group("plugin");
    group.bench_function(
        "call run_task (small JSON, warm instance, in process)",
        |b| {
            b.iter(|| {
                let response: TaskResponse = instance
                    .call(exports::RUN_TASK, &request, sink.as_ref())
                    .expect("calls");
                response
            })
        },
    );
    group.bench_function(
        "call run_task (small JSON, warm instance, through the host process)",
        |b| {
            b.iter(|| {
                let response: TaskResponse = plugin
                    .call(exports::RUN_TASK, &request, sink.as_ref())
                    .expect("calls");
                response
            })
        },
    );
    group.finish();
}

criterion_group!(benches, plugin_costs);
criterion_main!(benches);
