//! The record of one run, written to `.cairn/runs/<id>.json` after every run: what each task did, whether the
//! cache had it (and why not), when it ran and for how long, and the chain of tasks that decided the run's
//! length. `cairn history`, `cairn report` and `--trace` read it back. The format is documented in
//! docs/reports.md; `schema` changes when a field changes meaning.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::record::JobRecord;
use crate::graph::NodeId;
use crate::run::{Interruption, Plan, RunReport, TaskStatus};

/// The version of the format below.
pub const SCHEMA: u32 = 1;

/// How many run records `.cairn/runs/` keeps; older ones are removed after each run.
pub const KEPT_RUNS: usize = 200;

/// How many bytes of run records `.cairn/runs/` keeps (a run of 10,000 tasks records a few MB); the newest
/// record is kept whatever its size.
pub const KEPT_RUNS_BYTES: u64 = 64 << 20;

/// One run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunSummary {
    /// [`SCHEMA`].
    pub schema: u32,
    /// Sortable and unique: `YYYYMMDDTHHMMSS.mmmZ-PID`.
    pub id: String,
    /// The cairn version that ran it.
    pub cairn: String,
    /// The targets as given.
    pub targets: Vec<String>,
    /// When it started (RFC 3339, UTC, milliseconds).
    pub started_at: String,
    /// Wall time.
    pub duration_ms: f64,
    /// Tasks allowed at once.
    pub jobs: usize,
    /// cairn's exit status.
    pub exit_code: i32,
    /// `SIGINT` or `SIGTERM` when a signal stopped the run.
    pub interrupted: Option<String>,
    /// Counts.
    pub totals: Totals,
    /// The chain of dependencies whose durations add up to the longest path through the run.
    pub critical_path: CriticalPath,
    /// Every task of the plan, in plan order (each after its dependencies).
    pub tasks: Vec<TaskSummary>,
    /// What the remote cache did, when the run used one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_cache: Option<RemoteTotals>,
}

pub use crate::run::driver::RemoteTotals;

/// How many tasks ended which way.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    /// Tasks in the plan.
    pub tasks: usize,
    /// Succeeded, cache hits included.
    pub succeeded: usize,
    /// Restored from the cache.
    pub cached: usize,
    /// Failed or timed out.
    pub failed: usize,
    /// Not started because a dependency failed.
    pub skipped: usize,
    /// Not started because the run stopped.
    pub not_run: usize,
    /// Stopped by a signal.
    pub interrupted: usize,
}

/// The longest chain of dependent tasks, by duration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CriticalPath {
    /// Its tasks, first to last.
    pub tasks: Vec<String>,
    /// The sum of their durations.
    pub duration_ms: f64,
}

/// One task of the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskSummary {
    /// The instance, e.g. `deploy:production[NIXY]`.
    pub label: String,
    /// The task's name as written in tasks.toml.
    pub task: String,
    /// Param and matrix values.
    pub params: BTreeMap<String, String>,
    /// The instances it waited for.
    pub deps: Vec<String>,
    /// Its cache key, when one was computed.
    pub key: Option<String>,
    /// `succeeded`, `failed`, `timed_out`, `interrupted`, `skipped` or `not_run`.
    pub status: String,
    /// Its exit code, when it ran.
    pub exit_code: Option<i32>,
    /// For a skipped task, the failure that blocked it.
    pub blocked_by: Option<String>,
    /// `hit`, `miss` or `off`.
    pub cache: String,
    /// For a miss: forced, no earlier success, or what changed.
    pub cache_reason: Option<String>,
    /// Where it ran: `local`, `remote` (the execution engine) or `remote cache`; absent for a local hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran_on: Option<String>,
    /// When it started, in milliseconds since the run started.
    pub started_ms: Option<f64>,
    /// When it ended.
    pub ended_ms: Option<f64>,
    /// Its wall time, retries included.
    pub duration_ms: f64,
    /// Attempts made (0 for a cache hit or a task that never started).
    pub attempts: u32,
    /// Bytes it printed (for a hit: the replayed output).
    pub output_bytes: u64,
    /// Its phases: `cache lookup`, `run`, `cache store`, `health check`, `rollback`, `plugin NAME`.
    pub phases: Vec<PhaseSummary>,
}

/// A phase of a task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhaseSummary {
    /// What it was.
    pub name: String,
    /// When it began, in milliseconds since the run started.
    pub started_ms: f64,
    /// How long it took.
    pub duration_ms: f64,
}

/// What the summary needs besides the plan and the report.
pub struct RunContext<'a> {
    /// The targets as given.
    pub targets: &'a [String],
    /// Tasks allowed at once.
    pub jobs: usize,
    /// The wall-clock time the run started.
    pub started_at: SystemTime,
    /// Per graph node, from the run's [`super::RunRecorder`].
    pub records: &'a HashMap<NodeId, JobRecord>,
    /// The remote cache's part, when the run used one.
    pub remote_cache: Option<RemoteTotals>,
}

fn ms(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn since(start: Instant, at: Instant) -> f64 {
    ms(at.saturating_duration_since(start))
}

impl RunSummary {
    /// Builds the summary of `report`, a run of `plan`.
    pub fn new(plan: &Plan, report: &RunReport, context: &RunContext<'_>) -> RunSummary {
        let empty = JobRecord::default();
        let mut totals = Totals {
            tasks: plan.jobs.len(),
            ..Totals::default()
        };
        let mut tasks = Vec::with_capacity(plan.jobs.len());
        for (i, (job, result)) in plan.jobs.iter().zip(&report.results).enumerate() {
            match result.status {
                TaskStatus::Succeeded => {
                    totals.succeeded += 1;
                    totals.cached += usize::from(result.cache.is_hit());
                }
                TaskStatus::Failed { .. } | TaskStatus::TimedOut { .. } => totals.failed += 1,
                TaskStatus::Interrupted => totals.interrupted += 1,
                TaskStatus::Skipped { .. } => totals.skipped += 1,
                TaskStatus::NotRun => totals.not_run += 1,
            }
            let record = context.records.get(&job.node).unwrap_or(&empty);
            let started_ms = result.started.map(ms);
            let ran = !matches!(
                result.status,
                TaskStatus::Skipped { .. } | TaskStatus::NotRun
            );
            tasks.push(TaskSummary {
                label: job.label.clone(),
                task: job.key.task.clone(),
                params: job.key.params.clone(),
                deps: plan.deps[i]
                    .iter()
                    .map(|&d| plan.jobs[d].label.clone())
                    .collect(),
                key: result.key.map(|k| k.to_string()),
                status: result.status.name().to_owned(),
                exit_code: match result.status {
                    TaskStatus::Succeeded => Some(0),
                    TaskStatus::Failed { code } => Some(code),
                    TaskStatus::TimedOut { .. } => Some(124),
                    TaskStatus::Interrupted => Some(130),
                    TaskStatus::Skipped { .. } | TaskStatus::NotRun => None,
                },
                blocked_by: match result.status {
                    TaskStatus::Skipped { blocked_by } => Some(plan.jobs[blocked_by].label.clone()),
                    _ => None,
                },
                cache: result.cache.name().to_owned(),
                cache_reason: result.cache_reason.clone(),
                ran_on: result.ran_on.map(str::to_owned),
                started_ms: started_ms.filter(|_| ran),
                ended_ms: started_ms.filter(|_| ran).map(|s| s + ms(result.duration)),
                duration_ms: if ran { ms(result.duration) } else { 0.0 },
                attempts: result.attempts,
                output_bytes: record.output_bytes,
                phases: record
                    .phases
                    .iter()
                    .map(|p| PhaseSummary {
                        name: p.name.clone(),
                        started_ms: since(report.started, p.started),
                        duration_ms: ms(p.ended.saturating_duration_since(p.started)),
                    })
                    .collect(),
            });
        }
        let critical_path = critical_path(&tasks, &plan.deps);
        RunSummary {
            schema: SCHEMA,
            id: run_id(context.started_at),
            cairn: env!("CARGO_PKG_VERSION").to_owned(),
            targets: context.targets.to_vec(),
            started_at: rfc3339_millis(context.started_at),
            duration_ms: ms(report.elapsed),
            jobs: context.jobs,
            exit_code: report.exit_code(),
            interrupted: report.interrupted.map(|signal| {
                match signal {
                    Interruption::Interrupt => "SIGINT",
                    Interruption::Terminate => "SIGTERM",
                }
                .to_owned()
            }),
            totals,
            critical_path,
            tasks,
            remote_cache: context.remote_cache.clone(),
        }
    }

    /// The summary as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("summaries serialise")
    }

    /// The summary as compact JSON, for the records kept in `.cairn/runs/`.
    pub fn to_compact_json(&self) -> String {
        serde_json::to_string(self).expect("summaries serialise")
    }

    /// Reads a summary written by [`RunSummary::write`].
    pub fn read(path: &Path) -> Result<RunSummary, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let summary: RunSummary = serde_json::from_slice(&bytes)
            .map_err(|e| format!("`{}` is not a run summary: {e}", path.display()))?;
        if summary.schema != SCHEMA {
            return Err(format!(
                "`{}` has schema {}; this cairn reads schema {SCHEMA}",
                path.display(),
                summary.schema
            ));
        }
        Ok(summary)
    }

    /// Writes the summary to `path`: whole or not at all, without waiting for the disk (a record lost in a
    /// power cut costs nothing; an fsync per run would cost more than a small run itself). A record cut short
    /// by a crash is skipped by its readers with a note.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        crate::atomic::write_replace(path, self.to_json().as_bytes())
    }

    /// Like [`RunSummary::write`], compact: the form kept in `.cairn/runs/`. Returns the bytes written.
    pub fn write_compact(&self, path: &Path) -> std::io::Result<u64> {
        let text = self.to_compact_json();
        crate::atomic::write_replace(path, text.as_bytes())?;
        Ok(text.len() as u64)
    }
}

/// Where a project's run summaries live.
pub fn runs_dir(root: &Path) -> PathBuf {
    root.join(".cairn").join("runs")
}

/// The run summaries in `dir`, oldest first (ids sort by time).
pub fn list_runs(dir: &Path) -> Vec<PathBuf> {
    files_with_extension(dir, "json")
}

/// The files in `dir` whose names end in `.extension`, sorted by name; none when `dir` cannot be read.
pub fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    found.sort();
    found
}

/// Removes the oldest summaries beyond the newest `keep`, and beyond `max_bytes` in all (the newest one stays).
/// `newest_bytes` is the size of the record just written: while records are small enough that `keep` of them
/// fit in `max_bytes`, counting is enough and nothing is stat'ed (this runs after every run, however short).
pub fn prune_runs(dir: &Path, keep: usize, max_bytes: u64, newest_bytes: u64) {
    crate::atomic::sweep_stale_temps(dir);
    let runs = list_runs(dir);
    if newest_bytes.saturating_mul(keep as u64) <= max_bytes {
        let excess = runs.len().saturating_sub(keep);
        for old in &runs[..excess] {
            let _ = std::fs::remove_file(old);
        }
        return;
    }
    let mut total = 0u64;
    let mut kept = 0usize;
    for path in runs.iter().rev() {
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        total += size;
        if kept == 0 || (kept < keep && total <= max_bytes) {
            kept += 1;
        } else {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The longest path through the dependencies, weighting each task by its duration.
fn critical_path(tasks: &[TaskSummary], deps: &[Vec<usize>]) -> CriticalPath {
    let mut length = vec![0.0f64; tasks.len()];
    let mut previous: Vec<Option<usize>> = vec![None; tasks.len()];
    // Plan order puts dependencies first. Tasks that never started are not on any path.
    for i in 0..tasks.len() {
        if tasks[i].started_ms.is_none() {
            length[i] = f64::NEG_INFINITY;
            continue;
        }
        let best = deps[i]
            .iter()
            .copied()
            .filter(|&d| length[d].is_finite())
            .max_by(|&a, &b| length[a].total_cmp(&length[b]));
        length[i] = tasks[i].duration_ms + best.map_or(0.0, |b| length[b]);
        previous[i] = best;
    }
    let Some(end) = (0..tasks.len())
        .filter(|&i| length[i].is_finite())
        .max_by(|&a, &b| length[a].total_cmp(&length[b]))
    else {
        return CriticalPath::default();
    };
    let mut chain = vec![end];
    while let Some(before) = previous[*chain.last().expect("not empty")] {
        chain.push(before);
    }
    chain.reverse();
    CriticalPath {
        tasks: chain.iter().map(|&i| tasks[i].label.clone()).collect(),
        duration_ms: length[end],
    }
}

/// `YYYYMMDDTHHMMSS.mmmZ-PID`: sorts by time, unique per process.
fn run_id(at: SystemTime) -> String {
    let stamp = rfc3339_millis(at);
    let compact: String = stamp.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{compact}-{}", std::process::id())
}

pub use crate::time::rfc3339_millis;

#[cfg(test)]
mod tests {
    use super::*;

    fn task(label: &str, duration_ms: f64) -> TaskSummary {
        TaskSummary {
            label: label.into(),
            task: label.into(),
            params: BTreeMap::new(),
            deps: vec![],
            key: None,
            status: "succeeded".into(),
            exit_code: Some(0),
            blocked_by: None,
            cache: "off".into(),
            cache_reason: None,
            ran_on: None,
            started_ms: Some(0.0),
            ended_ms: Some(duration_ms),
            duration_ms,
            attempts: 1,
            output_bytes: 0,
            phases: vec![],
        }
    }

    #[test]
    fn the_critical_path_follows_the_longest_chain_of_durations() {
        // a(10) → c(1); b(30) → c; d(5) alone. Longest: b → c = 31.
        let mut tasks = vec![
            task("a", 10.0),
            task("b", 30.0),
            task("c", 1.0),
            task("d", 5.0),
            task("e", 0.0),
        ];
        // e, after c, never started: it is not on the path.
        tasks[4].started_ms = None;
        let deps = vec![vec![], vec![], vec![0, 1], vec![], vec![2]];
        let path = critical_path(&tasks, &deps);
        assert_eq!(path.tasks, ["b", "c"]);
        assert_eq!(path.duration_ms, 31.0);
    }

    #[test]
    fn pruning_keeps_the_newest_within_count_and_size() {
        let dir = tempfile::tempdir().expect("dir");
        for (i, size) in [10usize, 10, 10, 50, 10].iter().enumerate() {
            std::fs::write(dir.path().join(format!("run{i}.json")), vec![b'x'; *size])
                .expect("write");
        }
        prune_runs(dir.path(), 3, 1000, 10);
        let names = |d: &Path| -> Vec<String> {
            list_runs(d)
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(dir.path()), ["run2.json", "run3.json", "run4.json"]);
        // 60 bytes allowed: run4 (10) and run3 (50) fit, run2 does not.
        prune_runs(dir.path(), 10, 60, 10);
        assert_eq!(names(dir.path()), ["run3.json", "run4.json"]);
        // The newest always stays.
        prune_runs(dir.path(), 10, 1, 10);
        assert_eq!(names(dir.path()), ["run4.json"]);
    }

    #[test]
    fn ids_sort_by_time() {
        let early =
            run_id(std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123));
        let late =
            run_id(std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_001_001));
        assert!(early < late, "{early} < {late}");
        assert!(early.starts_with("20231114T221320.123Z-"), "{early}");
    }
}
