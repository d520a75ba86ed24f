//! An event sink for monitoring: at the end of each run, pushes task and run metrics to a Prometheus
//! Pushgateway (text exposition format), and, when configured, exports one OTLP/HTTP JSON trace: a span for
//! the run and a child span per task.
//!
//! Needs `allow.hosts` for the Pushgateway's and the OTLP receiver's `HOST:PORT`. Failures are reported to
//! cairn, which turns them into warnings: the run is never held up beyond the plugin's timeout.

use std::cell::RefCell;
use std::collections::BTreeMap;

use cairn_pdk::api::{
    CacheOutcome, Capability, ConfigField, Describe, ErrorCode, Event, EventBatch, FieldKind,
    HttpRequest, PluginError, TaskOutcome,
};
use cairn_pdk::serde_json::json;
use cairn_pdk::{config, http, log, plugin};

/// One finished task.
#[derive(Clone)]
struct Finished {
    task: String,
    status: TaskOutcome,
    exit_code: Option<i32>,
    duration_ms: u64,
    cache: CacheOutcome,
    params: BTreeMap<String, String>,
    started_ms: u64,
    ended_ms: u64,
}

#[derive(Default)]
struct Run {
    started_ms: u64,
    targets: Vec<String>,
    starts: BTreeMap<String, u64>,
    finished: Vec<Finished>,
}

thread_local! {
    static RUN: RefCell<Run> = RefCell::new(Run::default());
}

fn field(name: &str, kind: FieldKind, description: &str) -> ConfigField {
    cairn_pdk::config_field(name, kind, false, description)
}

fn describe() -> Describe {
    let mut describe = cairn_pdk::describe(
        "monitoring",
        env!("CARGO_PKG_VERSION"),
        &[Capability::Events],
    );
    describe.description = "task and run metrics to a Pushgateway; OTLP/HTTP JSON traces".into();
    describe.config = vec![
        field(
            "pushgateway",
            FieldKind::Url,
            "the Pushgateway, e.g. http://127.0.0.1:9091",
        ),
        field("job", FieldKind::String, "the job label (default: cairn)"),
        field(
            "instance",
            FieldKind::String,
            "an instance label, e.g. the host's name",
        ),
        field(
            "otlp",
            FieldKind::Url,
            "an OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces",
        ),
        field(
            "service",
            FieldKind::String,
            "service.name of the traces (default: cairn)",
        ),
    ];
    describe
}

fn on_events(batch: EventBatch) -> Result<(), PluginError> {
    for event in batch.events {
        match event {
            Event::RunStarted { at_ms, targets, .. } => RUN.with(|r| {
                *r.borrow_mut() = Run {
                    started_ms: at_ms,
                    targets,
                    ..Run::default()
                };
            }),
            Event::TaskStarted { at_ms, task } => RUN.with(|r| {
                r.borrow_mut().starts.insert(task, at_ms);
            }),
            Event::TaskFinished {
                at_ms,
                task,
                status,
                exit_code,
                duration_ms,
                cache,
                params,
            } => RUN.with(|r| {
                let mut run = r.borrow_mut();
                let started_ms = run
                    .starts
                    .get(&task)
                    .copied()
                    .unwrap_or(at_ms.saturating_sub(duration_ms));
                run.finished.push(Finished {
                    task,
                    status,
                    exit_code,
                    duration_ms,
                    cache,
                    params,
                    started_ms,
                    ended_ms: at_ms,
                });
            }),
            Event::RunFinished {
                at_ms,
                exit_code,
                succeeded,
                failed,
                skipped,
                duration_ms,
            } => {
                let run = RUN.with(|r| std::mem::take(&mut *r.borrow_mut()));
                let mut problems = Vec::new();
                if let Some(url) = config::get("pushgateway") {
                    let text = exposition(&run, exit_code, succeeded, failed, skipped, duration_ms);
                    if let Err(e) = push(&url, &text) {
                        problems.push(e.message);
                    }
                }
                if let Some(url) = config::get("otlp") {
                    let body = traces(&run, at_ms, exit_code);
                    if let Err(e) = post(&url, "application/json", body) {
                        problems.push(e.message);
                    }
                }
                if !problems.is_empty() {
                    return Err(PluginError::new(
                        ErrorCode::Unavailable,
                        problems.join("; "),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A label value escaped for the exposition format.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn exposition(
    run: &Run,
    exit_code: i32,
    succeeded: usize,
    failed: usize,
    skipped: usize,
    duration_ms: u64,
) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, rows: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (labels, value) in rows {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let labels_of = |f: &Finished| {
        let mut labels = format!("task=\"{}\"", label(&f.task));
        if let Some(env) = f.params.get("env") {
            labels.push_str(&format!(",environment=\"{}\"", label(env)));
        }
        labels
    };
    metric(
        "cairn_task_duration_seconds",
        "Wall time of the task in the last run.",
        run.finished
            .iter()
            .map(|f| {
                (
                    format!(
                        "{{{},status=\"{}\",cache=\"{}\"}}",
                        labels_of(f),
                        label(f.status.name()),
                        label(f.cache.name())
                    ),
                    format!("{}", f.duration_ms as f64 / 1000.0),
                )
            })
            .collect(),
    );
    metric(
        "cairn_task_success",
        "1 when the task succeeded (ran or came from the cache) in the last run.",
        run.finished
            .iter()
            .map(|f| {
                (
                    format!("{{{}}}", labels_of(f)),
                    u8::from(f.status == TaskOutcome::Succeeded).to_string(),
                )
            })
            .collect(),
    );
    metric(
        "cairn_task_cache_hit",
        "1 when the task's result came from the cache.",
        run.finished
            .iter()
            .map(|f| {
                (
                    format!("{{{}}}", labels_of(f)),
                    u8::from(f.cache == CacheOutcome::Hit).to_string(),
                )
            })
            .collect(),
    );
    metric(
        "cairn_task_exit_code",
        "The task's exit code, when it ran.",
        run.finished
            .iter()
            .filter_map(|f| {
                f.exit_code
                    .map(|c| (format!("{{{}}}", labels_of(f)), c.to_string()))
            })
            .collect(),
    );
    metric(
        "cairn_run_duration_seconds",
        "Wall time of the last run.",
        vec![(String::new(), format!("{}", duration_ms as f64 / 1000.0))],
    );
    metric(
        "cairn_run_exit_code",
        "cairn's exit status of the last run.",
        vec![(String::new(), exit_code.to_string())],
    );
    metric(
        "cairn_run_tasks",
        "Tasks of the last run by result.",
        [
            ("succeeded", succeeded),
            ("failed", failed),
            ("skipped", skipped),
        ]
        .iter()
        .map(|(result, n)| (format!("{{result=\"{result}\"}}"), n.to_string()))
        .collect(),
    );
    out
}

fn push(base: &str, text: &str) -> Result<(), PluginError> {
    let job = config::get("job").unwrap_or_else(|| "cairn".into());
    let mut url = format!(
        "{}/metrics/job/{}",
        base.trim_end_matches('/'),
        segment(&job)
    );
    if let Some(instance) = config::get("instance") {
        url.push_str(&format!("/instance/{}", segment(&instance)));
    }
    post(&url, "text/plain; version=0.0.4", text.to_string())
}

/// A grouping-key value for a Pushgateway URL path.
fn segment(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn post(url: &str, content_type: &str, body: String) -> Result<(), PluginError> {
    let response = http::request(&HttpRequest {
        method: "POST".into(),
        url: url.into(),
        headers: vec![("content-type".into(), content_type.into())],
        body: Some(body),
    })?;
    if (200..300).contains(&response.status) {
        log::debug(format!("{url}: {}", response.status));
        Ok(())
    } else {
        Err(PluginError::new(
            ErrorCode::Unavailable,
            format!(
                "{url} answered {}: {}",
                response.status,
                response.body.lines().next().unwrap_or("")
            ),
        ))
    }
}

/// A stable pseudo-random id: the plugin has no random source, and ids only need to be unique per run.
fn id(seed: &str, bytes: usize) -> String {
    let mut out = String::new();
    let mut state: u64 = 0xcbf2_9ce4_8422_2325;
    for round in 0..bytes.div_ceil(8) {
        for b in seed.bytes().chain([round as u8]) {
            state ^= u64::from(b);
            state = state.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{state:016x}"));
    }
    out.truncate(bytes * 2);
    out
}

fn traces(run: &Run, ended_ms: u64, exit_code: i32) -> String {
    let run_seed = format!("{}:{}", run.started_ms, run.targets.join(","));
    let trace_id = id(&run_seed, 16);
    let run_span = id(&format!("{run_seed}:run"), 8);
    let nanos = |ms: u64| (u128::from(ms) * 1_000_000).to_string();
    let string = |key: &str, value: &str| json!({"key": key, "value": {"stringValue": value}});
    let mut spans = vec![json!({
        "traceId": trace_id, "spanId": run_span, "name": format!("cairn run {}", run.targets.join(" ")), "kind": 1,
        "startTimeUnixNano": nanos(run.started_ms), "endTimeUnixNano": nanos(ended_ms),
        "attributes": [{"key": "process.exit_code", "value": {"intValue": exit_code.to_string()}}],
        "status": {"code": if exit_code == 0 { 1 } else { 2 }},
    })];
    for f in &run.finished {
        let mut attributes = vec![
            string("task.name", &f.task),
            string("task.status", f.status.name()),
            string("task.cache", f.cache.name()),
        ];
        if let Some(code) = f.exit_code {
            attributes
                .push(json!({"key": "process.exit_code", "value": {"intValue": code.to_string()}}));
        }
        for (name, value) in &f.params {
            attributes.push(string(&format!("task.param.{name}"), value));
        }
        spans.push(json!({
            "traceId": trace_id, "spanId": id(&format!("{run_seed}:{}", f.task), 8), "parentSpanId": run_span,
            "name": format!("task {}", f.task), "kind": 1,
            "startTimeUnixNano": nanos(f.started_ms), "endTimeUnixNano": nanos(f.ended_ms),
            "attributes": attributes,
            "status": {"code": if f.status == TaskOutcome::Succeeded { 1 } else { 2 }},
        }));
    }
    let service = config::get("service").unwrap_or_else(|| "cairn".into());
    json!({"resourceSpans": [{
        "resource": {"attributes": [string("service.name", &service)]},
        "scopeSpans": [{"scope": {"name": "cairn", "version": env!("CARGO_PKG_VERSION")}, "spans": spans}],
    }]})
    .to_string()
}

plugin! { describe: describe, events: on_events }

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_pdk::api::Reply;
    use cairn_pdk::testing;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_run_is_pushed_as_metrics_and_a_trace() {
        testing::set_config(&[
            ("pushgateway", "http://127.0.0.1:9091"),
            ("otlp", "http://127.0.0.1:4318/v1/traces"),
            ("instance", "NIXSTATION64"),
        ]);
        let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let log = Arc::clone(&seen);
        testing::set_http(move |request| {
            log.lock()
                .unwrap()
                .push((request.url, request.body.unwrap_or_default()));
            Ok(cairn_pdk::api::HttpResponse {
                status: 200,
                headers: vec![],
                body: String::new(),
            })
        });
        let events = json!({"events": [
            {"type": "run_started", "at_ms": 1000, "targets": ["deploy:production"], "tasks": 1},
            {"type": "task_started", "at_ms": 1001, "task": "deploy:production"},
            {"type": "task_finished", "at_ms": 3001, "task": "deploy:production", "status": "succeeded", "exit_code": 0,
             "duration_ms": 2000, "cache": "miss", "params": {"env": "production"}},
            {"type": "run_finished", "at_ms": 3002, "exit_code": 0, "succeeded": 1, "failed": 0, "skipped": 0, "duration_ms": 2002}]});
        assert!(matches!(testing::call(on_events, &events), Reply::Ok(())));
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[0].0,
            "http://127.0.0.1:9091/metrics/job/cairn/instance/NIXSTATION64"
        );
        assert!(seen[0].1.contains("cairn_task_duration_seconds{task=\"deploy:production\",environment=\"production\",status=\"succeeded\",cache=\"miss\"} 2"), "{}", seen[0].1);
        assert!(seen[1].1.contains("\"name\":\"task deploy:production\""));
    }
}
