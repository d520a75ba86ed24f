//! The short summary every run ends with: counts, time, and on failure the root cause and what it blocked.

use crate::config::format_duration;
use crate::run::{CacheUse, Interruption, Plan, RunReport, TaskStatus};

/// How the summary is decorated.
#[derive(Debug, Clone, Copy)]
pub struct SummaryStyle {
    /// Use ANSI colours.
    pub color: bool,
}

/// The summary lines (each ending in a newline) for `report` of `plan`.
pub fn render_summary(plan: &Plan, report: &RunReport, style: SummaryStyle) -> String {
    let paint = |code: &str, text: &str| {
        if style.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    };
    let mut succeeded = 0;
    let mut cached = 0;
    let mut remote = 0;
    let mut ran_remotely = 0;
    let mut failed = 0;
    let mut interrupted = 0;
    let mut not_run = 0;
    for result in &report.results {
        ran_remotely += usize::from(result.ran_on == Some("remote"));
        match result.status {
            TaskStatus::Succeeded => {
                succeeded += 1;
                cached += usize::from(result.cache.is_hit());
                remote += usize::from(result.cache == CacheUse::RemoteHit);
            }
            TaskStatus::Failed { .. } | TaskStatus::TimedOut { .. } => failed += 1,
            TaskStatus::Interrupted => interrupted += 1,
            TaskStatus::Skipped { .. } | TaskStatus::NotRun => not_run += 1,
        }
    }
    let total = report.results.len();
    let mut parts = vec![if remote > 0 {
        format!("{succeeded} succeeded ({cached} from cache, {remote} of them remote)")
    } else if cached > 0 {
        format!("{succeeded} succeeded ({cached} from cache)")
    } else {
        format!("{succeeded} succeeded")
    }];
    if ran_remotely > 0 {
        parts.push(format!("{ran_remotely} ran on the execution engine"));
    }
    if failed > 0 {
        parts.push(paint("31", &format!("{failed} failed")));
    }
    if interrupted > 0 {
        parts.push(format!("{interrupted} interrupted"));
    }
    if not_run > 0 {
        parts.push(format!("{not_run} not run"));
    }
    let noun = if total == 1 { "task" } else { "tasks" };
    let mut out = format!(
        "cairn: {total} {noun}: {} in {}\n",
        parts.join(", "),
        format_duration(report.elapsed)
    );
    if let Some(signal) = report.interrupted {
        let name = match signal {
            Interruption::Interrupt => "Ctrl-C (SIGINT)",
            Interruption::Terminate => "SIGTERM",
        };
        out.push_str(&format!("cairn: {} by {name}\n", paint("33", "stopped")));
    }
    if let Some(first) = report.first_failure {
        let result = &report.results[first];
        let why = match &result.status {
            TaskStatus::TimedOut { after } => {
                format!("timed out after {}", format_duration(*after))
            }
            TaskStatus::Failed { code } if *code > 128 => {
                format!("killed by signal {}", code - 128)
            }
            TaskStatus::Failed { code } => format!("exit code {code}"),
            _ => "failed".to_owned(),
        };
        let attempts = if result.attempts > 1 {
            format!(", after {} attempts", result.attempts)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "cairn: first failure: {} ({why}{attempts})\n",
            paint("1;31", &format!("`{}`", plan.jobs[first].label))
        ));
        let blocked: Vec<String> = report
            .results
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r.status, TaskStatus::Skipped { .. } | TaskStatus::NotRun))
            .map(|(i, _)| format!("`{}`", plan.jobs[i].label))
            .collect();
        if !blocked.is_empty() {
            out.push_str(&format!(
                "cairn: not run because of it: {}\n",
                blocked.join(", ")
            ));
        }
        let others: Vec<String> = report
            .results
            .iter()
            .enumerate()
            .filter(|(i, r)| *i != first && r.status.is_failure())
            .map(|(i, _)| format!("`{}`", plan.jobs[i].label))
            .collect();
        if !others.is_empty() {
            out.push_str(&format!("cairn: also failed: {}\n", others.join(", ")));
        }
    }
    out
}
