//! `cairn history [TASK]`: what the last runs say about each task, or about one.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{self, format_duration};
use crate::report::{list_runs, runs_dir, task_history, RunSummary};

use super::{CliError, Context};

#[derive(Debug, clap::Args)]
pub(super) struct HistoryArgs {
    /// Show this task instance's runs one by one instead of every task's statistics.
    task: Option<String>,
    /// How many of the most recent runs to read.
    #[arg(long, short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    last: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The directory of the tasks.toml in use, found without requiring the file to be valid.
pub(super) fn project_root(context: &Context) -> Result<PathBuf, CliError> {
    let file = match &context.file {
        Some(file) => super::absolute(file),
        None => {
            let cwd = std::env::current_dir().map_err(|source| CliError::Io {
                what: "cannot read the current directory".into(),
                source,
            })?;
            config::discover(&cwd)?
        }
    };
    Ok(file
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".")))
}

/// The most recent `last` run summaries of the project, oldest first; unreadable ones are named and skipped.
pub(super) fn recent_runs(root: &std::path::Path, last: usize) -> Vec<RunSummary> {
    let paths = list_runs(&runs_dir(root));
    let skip = paths.len().saturating_sub(last);
    paths[skip..]
        .iter()
        .filter_map(|path| match RunSummary::read(path) {
            Ok(summary) => Some(summary),
            Err(error) => {
                eprintln!("cairn: skipped {error}");
                None
            }
        })
        .collect()
}

fn ms(value: f64) -> String {
    format_duration(Duration::from_secs_f64(value.max(0.0) / 1000.0))
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "—".into(), |v| format!("{:.0}%", v * 100.0))
}

pub(super) fn history(context: &Context, args: &HistoryArgs) -> Result<i32, CliError> {
    let root = project_root(context)?;
    let runs = recent_runs(&root, args.last as usize);
    if runs.is_empty() {
        eprintln!(
            "cairn: no runs recorded yet in {} (every `cairn run` records one)",
            runs_dir(&root).display()
        );
        return Ok(0);
    }
    if let Some(label) = &args.task {
        let rows: Vec<(&RunSummary, &crate::report::TaskSummary)> = runs
            .iter()
            .filter_map(|run| {
                run.tasks
                    .iter()
                    .find(|t| t.label == *label)
                    .map(|t| (run, t))
            })
            .collect();
        if rows.is_empty() {
            let known: std::collections::BTreeSet<&str> = runs
                .iter()
                .flat_map(|r| r.tasks.iter().map(|t| t.label.as_str()))
                .collect();
            return Err(CliError::Query {
                message: format!("`{label}` is in none of the last {} runs", runs.len()),
                help: config::suggest::did_you_mean(label, known.iter().copied()),
            });
        }
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &rows
                        .iter()
                        .map(|(run, task)| serde_json::json!({
                            "run": run.id, "started_at": run.started_at, "task": task
                        }))
                        .collect::<Vec<_>>()
                )
                .expect("serialises")
            );
            return Ok(0);
        }
        println!(
            "{:<28} {:<11} {:<5} {:>9}  {:<12}  why it ran",
            "run", "status", "cache", "duration", "key"
        );
        for (run, task) in rows {
            println!(
                "{:<28} {:<11} {:<5} {:>9}  {:<12}  {}",
                run.id,
                task.status,
                task.cache,
                ms(task.duration_ms),
                task.key.as_deref().map_or("—", |k| &k[..12.min(k.len())]),
                task.cache_reason.as_deref().unwrap_or("")
            );
        }
        return Ok(0);
    }
    let stats = task_history(&runs);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&stats).expect("serialises")
        );
        return Ok(0);
    }
    let failed = runs.iter().filter(|r| r.exit_code != 0).count();
    eprintln!(
        "cairn: {} run(s) from {} to {}, {failed} failed",
        runs.len(),
        runs[0].started_at,
        runs[runs.len() - 1].started_at
    );
    let width = stats
        .iter()
        .map(|s| s.label.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<width$}  {:>4} {:>4}  {:>9} {:>9} {:>9}  {:>5} {:>6}  flaky",
        "task", "runs", "ran", "mean", "p50", "p95", "hits", "fails"
    );
    for s in &stats {
        let time = |v: Option<f64>| v.map_or_else(|| "—".into(), ms);
        println!(
            "{:<width$}  {:>4} {:>4}  {:>9} {:>9} {:>9}  {:>5} {:>6}  {}",
            s.label,
            s.runs,
            s.executed,
            time(s.mean_ms),
            time(s.p50_ms),
            time(s.p95_ms),
            percent(s.hit_rate),
            percent(s.failure_rate),
            if s.flaky_keys.is_empty() {
                String::new()
            } else {
                format!("yes: {} key(s) both passed and failed", s.flaky_keys.len())
            }
        );
    }
    Ok(0)
}
