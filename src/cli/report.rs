//! `cairn report [RUN] [--html PATH]`: one recorded run, as text or as a self-contained HTML page.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::format_duration;
use crate::report::{html_report, list_runs, runs_dir, RunSummary};

use super::{CliError, Context};

#[derive(Debug, clap::Args)]
pub(super) struct ReportArgs {
    /// The run: its id (or the start of it), a summary file, or nothing for the latest run.
    run: Option<String>,
    /// Write a self-contained HTML report (timeline, graph with the critical path, details) to this file.
    #[arg(long, value_name = "PATH")]
    html: Option<PathBuf>,
}

/// The summary a RUN argument names.
fn find_run(root: &Path, run: Option<&str>) -> Result<RunSummary, CliError> {
    let fail = |message: String, help: Option<String>| CliError::Query { message, help };
    if let Some(path) = run.map(Path::new).filter(|p| p.is_file()) {
        return RunSummary::read(path).map_err(|m| fail(m, None));
    }
    let dir = runs_dir(root);
    let runs = list_runs(&dir);
    let chosen = match run {
        None => runs.last(),
        Some(id) => {
            let matching: Vec<&PathBuf> = runs
                .iter()
                .filter(|p| {
                    p.file_stem()
                        .is_some_and(|s| s.to_string_lossy().starts_with(id))
                })
                .collect();
            if matching.len() > 1 {
                return Err(fail(
                    format!("`{id}` names {} runs", matching.len()),
                    Some("give more of the id (`cairn history` lists them)".into()),
                ));
            }
            matching.first().copied()
        }
    };
    let Some(path) = chosen else {
        return Err(fail(
            match run {
                Some(id) => format!("no recorded run `{id}` in {}", dir.display()),
                None => format!("no runs recorded yet in {}", dir.display()),
            },
            Some("every `cairn run` records one; `cairn history` lists the recent ones".into()),
        ));
    };
    RunSummary::read(path).map_err(|m| fail(m, None))
}

fn ms(value: f64) -> String {
    format_duration(Duration::from_secs_f64(value.max(0.0) / 1000.0))
}

pub(super) fn report(context: &Context, args: &ReportArgs) -> Result<i32, CliError> {
    let root = super::history::project_root(context)?;
    let summary = find_run(&root, args.run.as_deref())?;
    if let Some(path) = &args.html {
        crate::atomic::write_atomic(path, html_report(&summary).as_bytes()).map_err(|source| {
            CliError::Io {
                what: format!("cannot write `{}`", path.display()),
                source,
            }
        })?;
        eprintln!("cairn: wrote {} (run {})", path.display(), summary.id);
        return Ok(0);
    }
    println!(
        "run {} · cairn run {} · {} · {} · exit status {}",
        summary.id,
        summary.targets.join(" "),
        summary.started_at,
        ms(summary.duration_ms),
        summary.exit_code
    );
    let t = &summary.totals;
    println!(
        "{} tasks: {} succeeded ({} from cache), {} failed, {} skipped, {} not run",
        t.tasks, t.succeeded, t.cached, t.failed, t.skipped, t.not_run
    );
    println!(
        "critical path ({}): {}",
        ms(summary.critical_path.duration_ms),
        summary.critical_path.tasks.join(" → ")
    );
    let width = summary
        .tasks
        .iter()
        .map(|t| t.label.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<width$}  {:<11} {:<5} {:>9} {:>9}  why it ran",
        "task", "status", "cache", "start", "duration"
    );
    for task in &summary.tasks {
        println!(
            "{:<width$}  {:<11} {:<5} {:>9} {:>9}  {}",
            task.label,
            task.status,
            task.cache,
            task.started_ms.map_or_else(|| "—".into(), ms),
            ms(task.duration_ms),
            task.cache_reason
                .as_deref()
                .or(task.blocked_by.as_deref().map(|_| "blocked"))
                .unwrap_or("")
        );
    }
    Ok(0)
}
