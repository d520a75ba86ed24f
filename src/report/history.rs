//! Statistics over the run records in `.cairn/runs/`: per task, how long it takes when it runs, how often the
//! cache has it, how often it fails, and whether it is flaky (one key, different outcomes).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::run_summary::RunSummary;

/// One task across runs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskHistory {
    /// The task instance.
    pub label: String,
    /// Runs it was part of.
    pub runs: usize,
    /// Of those, runs where it actually ran (not restored, not skipped).
    pub executed: usize,
    /// Mean, median and 95th percentile of its duration when it ran, in milliseconds.
    pub mean_ms: Option<f64>,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 95th percentile (nearest rank).
    pub p95_ms: Option<f64>,
    /// Cache hits over cache lookups (hits and misses), when it is cached.
    pub hit_rate: Option<f64>,
    /// Failures over runs where it ran.
    pub failure_rate: Option<f64>,
    /// Keys under which it both succeeded and failed: the same inputs, different outcomes.
    pub flaky_keys: Vec<String>,
}

/// Per-task statistics over `runs` (oldest first), sorted by label.
pub fn task_history(runs: &[RunSummary]) -> Vec<TaskHistory> {
    #[derive(Default)]
    struct Seen {
        runs: usize,
        durations: Vec<f64>,
        hits: usize,
        misses: usize,
        failures: usize,
        outcomes: BTreeMap<String, BTreeSet<bool>>,
    }
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    for run in runs {
        for task in &run.tasks {
            let entry = seen.entry(task.label.clone()).or_default();
            entry.runs += 1;
            match task.cache.as_str() {
                "hit" => entry.hits += 1,
                "miss" => entry.misses += 1,
                _ => {}
            }
            let ran = task.attempts > 0;
            if !ran {
                continue;
            }
            entry.durations.push(task.duration_ms);
            let failed = matches!(task.status.as_str(), "failed" | "timed_out");
            entry.failures += usize::from(failed);
            if let (Some(key), "succeeded" | "failed" | "timed_out") =
                (&task.key, task.status.as_str())
            {
                entry
                    .outcomes
                    .entry(key.clone())
                    .or_default()
                    .insert(failed);
            }
        }
    }
    seen.into_iter()
        .map(|(label, s)| {
            let mut sorted = s.durations.clone();
            sorted.sort_by(f64::total_cmp);
            let executed = sorted.len();
            TaskHistory {
                label,
                runs: s.runs,
                executed,
                mean_ms: (executed > 0).then(|| sorted.iter().sum::<f64>() / executed as f64),
                p50_ms: percentile(&sorted, 50.0),
                p95_ms: percentile(&sorted, 95.0),
                hit_rate: (s.hits + s.misses > 0)
                    .then(|| s.hits as f64 / (s.hits + s.misses) as f64),
                failure_rate: (executed > 0).then(|| s.failures as f64 / executed as f64),
                flaky_keys: s
                    .outcomes
                    .into_iter()
                    .filter(|(_, outcomes)| outcomes.len() > 1)
                    .map(|(key, _)| key)
                    .collect(),
            }
        })
        .collect()
}

/// The nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::run_summary::{CriticalPath, TaskSummary, Totals};

    fn run(tasks: Vec<TaskSummary>) -> RunSummary {
        RunSummary {
            schema: 1,
            id: "x".into(),
            cairn: "0".into(),
            targets: vec![],
            started_at: String::new(),
            duration_ms: 0.0,
            jobs: 1,
            exit_code: 0,
            interrupted: None,
            totals: Totals::default(),
            critical_path: CriticalPath::default(),
            tasks,
            remote_cache: None,
        }
    }

    fn task(label: &str, status: &str, cache: &str, key: &str, duration_ms: f64) -> TaskSummary {
        TaskSummary {
            label: label.into(),
            task: label.into(),
            params: BTreeMap::new(),
            deps: vec![],
            key: Some(key.into()),
            status: status.into(),
            exit_code: None,
            blocked_by: None,
            cache: cache.into(),
            cache_reason: None,
            ran_on: None,
            started_ms: Some(0.0),
            ended_ms: Some(duration_ms),
            duration_ms,
            attempts: u32::from(cache != "hit"),
            output_bytes: 0,
            phases: vec![],
        }
    }

    #[test]
    fn durations_rates_and_flakiness_over_runs() {
        let runs = vec![
            run(vec![
                task("build", "succeeded", "miss", "k1", 100.0),
                task("test", "failed", "off", "t1", 10.0),
            ]),
            run(vec![
                task("build", "succeeded", "hit", "k1", 1.0),
                task("test", "succeeded", "off", "t1", 30.0),
            ]),
            run(vec![
                task("build", "succeeded", "miss", "k2", 300.0),
                task("test", "succeeded", "off", "t2", 20.0),
            ]),
            run(vec![task("build", "succeeded", "hit", "k2", 1.0)]),
        ];
        let history = task_history(&runs);
        let build = &history[0];
        assert_eq!(
            (build.label.as_str(), build.runs, build.executed),
            ("build", 4, 2)
        );
        assert_eq!(build.mean_ms, Some(200.0));
        assert_eq!(build.p50_ms, Some(100.0));
        assert_eq!(build.p95_ms, Some(300.0));
        assert_eq!(build.hit_rate, Some(0.5));
        assert_eq!(build.failure_rate, Some(0.0));
        assert!(build.flaky_keys.is_empty());
        let test = &history[1];
        assert_eq!(test.hit_rate, None, "never cached");
        assert_eq!(test.failure_rate, Some(1.0 / 3.0));
        assert_eq!(test.flaky_keys, ["t1"], "t1 failed once and passed once");
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(10.0));
        assert_eq!(percentile(&values, 95.0), Some(19.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
