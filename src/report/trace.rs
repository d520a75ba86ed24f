//! A run as a Chrome trace (the JSON Trace Event Format that Perfetto and chrome://tracing open): one row per
//! worker slot, one slice per task that ran, and its phases (cache lookup, run, store, plugin calls) nested
//! inside it.

use serde_json::{json, Value};

use super::run_summary::RunSummary;

/// The trace of `summary`, as JSON text.
pub fn chrome_trace(summary: &RunSummary) -> String {
    let rows = worker_rows(summary);
    let mut events: Vec<Value> = vec![json!({
        "name": "process_name", "ph": "M", "pid": 1, "tid": 0,
        "args": { "name": format!("cairn run {}", summary.targets.join(" ")) }
    })];
    let workers = rows.iter().flatten().max().map_or(0, |m| m + 1);
    for worker in 0..workers {
        events.push(json!({
            "name": "thread_name", "ph": "M", "pid": 1, "tid": worker + 1,
            "args": { "name": format!("worker {}", worker + 1) }
        }));
    }
    let us = |ms: f64| (ms * 1000.0).round();
    for (task, row) in summary.tasks.iter().zip(&rows) {
        let (Some(start), Some(row)) = (task.started_ms, row) else {
            continue;
        };
        events.push(json!({
            "name": task.label, "cat": "task", "ph": "X", "pid": 1, "tid": row + 1,
            "ts": us(start), "dur": us(task.duration_ms).max(1.0),
            "args": {
                "status": task.status,
                "cache": task.cache,
                "cache_reason": task.cache_reason,
                "ran_on": task.ran_on,
                "key": task.key,
                "exit_code": task.exit_code,
                "attempts": task.attempts,
            }
        }));
        // Phases are clamped into their task, so that viewers nest them.
        let end = start + task.duration_ms;
        for phase in &task.phases {
            let from = phase.started_ms.clamp(start, end);
            let to = (phase.started_ms + phase.duration_ms).clamp(from, end);
            events.push(json!({
                "name": phase.name, "cat": "phase", "ph": "X", "pid": 1, "tid": row + 1,
                "ts": us(from), "dur": us(to - from),
                "args": { "task": task.label }
            }));
        }
    }
    serde_json::to_string_pretty(&json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "cairn": summary.cairn,
            "run": summary.id,
            "started_at": summary.started_at,
            "exit_code": summary.exit_code,
        }
    }))
    .expect("traces serialise")
}

/// Assigns each task that ran the lowest worker row free when it started, so overlapping tasks never share
/// a row and the rows are as few as the run's parallelism.
pub fn worker_rows(summary: &RunSummary) -> Vec<Option<usize>> {
    let mut order: Vec<usize> = (0..summary.tasks.len())
        .filter(|&i| summary.tasks[i].started_ms.is_some())
        .collect();
    order.sort_by(|&a, &b| {
        let start = |i: usize| summary.tasks[i].started_ms.unwrap_or_default();
        start(a).total_cmp(&start(b))
    });
    let mut busy_until: Vec<f64> = Vec::new();
    let mut rows = vec![None; summary.tasks.len()];
    for i in order {
        let task = &summary.tasks[i];
        let start = task.started_ms.unwrap_or_default();
        let end = start + task.duration_ms;
        let row = match busy_until.iter().position(|&until| until <= start) {
            Some(free) => free,
            None => {
                busy_until.push(0.0);
                busy_until.len() - 1
            }
        };
        busy_until[row] = end;
        rows[i] = Some(row);
    }
    rows
}
