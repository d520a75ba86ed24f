//! Shows task output on the terminal: prefixed lines, grouped blocks, or nothing (when the task owns the
//! terminal), plus cairn's own notes.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use super::progress::StatusLine;

use crate::cache::Key;
use crate::config::format_duration;
use crate::run::{Job, Reporter, Stream, TaskResult, TaskStatus};

/// How task output is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Each line as it comes, behind the task's label.
    Prefixed,
    /// Each task's output in one block when it ends.
    Grouped,
    /// Lines as they come, unlabelled (one task, captured so it can be cached).
    Plain,
    /// Tasks write to the terminal themselves; only cairn's notes are printed.
    Direct,
}

/// A [`Reporter`] writing to stdout and stderr.
pub struct TerminalReporter {
    layout: Layout,
    color: bool,
    width: usize,
    /// Tasks' stdout lines go to stderr (stdout is for `--json`).
    stdout_to_stderr: bool,
    /// The live status line, on a terminal.
    status: Option<Arc<StatusLine>>,
    /// Collapsible groups for the CI that reads this log.
    ci_groups: Option<CiGroups>,
    buffers: Mutex<HashMap<usize, Vec<BufferedLine>>>,
}

/// The CI whose log format folds a task's block into one collapsible line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiGroups {
    /// `::group::` / `::endgroup::`.
    GitHubActions,
    /// `section_start` / `section_end`.
    GitLab,
}

impl CiGroups {
    /// The CI this process runs in, from the variables each one sets.
    pub fn detect() -> Option<CiGroups> {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| v == "true");
        if set("GITHUB_ACTIONS") {
            Some(CiGroups::GitHubActions)
        } else if set("GITLAB_CI") {
            Some(CiGroups::GitLab)
        } else {
            None
        }
    }

    fn open(self, node: usize, title: &str) -> String {
        let title = title.trim_start_matches("── ");
        match self {
            CiGroups::GitHubActions => format!("::group::{}", title.trim()),
            CiGroups::GitLab => format!(
                "\x1b[0Ksection_start:{}:cairn_task_{node}[collapsed=true]\r\x1b[0K{}",
                crate::time::unix_now(),
                title.trim()
            ),
        }
    }

    fn close(self, node: usize) -> String {
        match self {
            CiGroups::GitHubActions => "::endgroup::".into(),
            CiGroups::GitLab => format!(
                "\x1b[0Ksection_end:{}:cairn_task_{node}\r\x1b[0K",
                crate::time::unix_now()
            ),
        }
    }
}

/// A line held back until its task ends (grouped output).
type BufferedLine = (Stream, Vec<u8>);

/// Colours for labels, picked by a hash of the label so a task keeps its colour from run to run.
const PALETTE: [&str; 6] = ["36", "33", "35", "32", "34", "96"];

impl TerminalReporter {
    /// A reporter for tasks whose labels are at most `width` characters.
    pub fn new(layout: Layout, color: bool, width: usize) -> TerminalReporter {
        TerminalReporter {
            layout,
            color,
            width,
            stdout_to_stderr: false,
            status: None,
            ci_groups: None,
            buffers: Mutex::new(HashMap::new()),
        }
    }

    /// Sends what tasks print on stdout to stderr, keeping stdout for a machine-readable result.
    pub fn with_stdout_to_stderr(mut self, yes: bool) -> TerminalReporter {
        self.stdout_to_stderr = yes;
        self
    }

    /// Draws a live status line below the output (a terminal only).
    pub fn with_status_line(mut self, status: Option<Arc<StatusLine>>) -> TerminalReporter {
        self.status = status;
        self
    }

    /// Wraps each grouped task block in the CI's collapsible-section markers.
    pub fn with_ci_groups(mut self, groups: Option<CiGroups>) -> TerminalReporter {
        self.ci_groups = groups;
        self
    }

    /// Writes `text` where lines of `stream` go (above the status line, when there is one).
    fn write(&self, stream: Stream, text: &[u8]) {
        let to_stderr = stream == Stream::Stderr || self.stdout_to_stderr;
        if let Some(status) = &self.status {
            status.print(to_stderr, text);
            return;
        }
        let _ = if to_stderr {
            std::io::stderr().lock().write_all(text)
        } else {
            std::io::stdout().lock().write_all(text)
        };
    }

    fn label(&self, job: &Job) -> String {
        let padded = format!("{:<width$}", job.label, width = self.width);
        if self.color {
            let hash = job
                .label
                .bytes()
                .fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b));
            format!(
                "\x1b[{}m{padded}\x1b[0m",
                PALETTE[hash as usize % PALETTE.len()]
            )
        } else {
            padded
        }
    }

    fn note_line(&self, text: &str) {
        self.write(Stream::Stderr, format!("cairn: {text}\n").as_bytes());
    }
}

fn describe(status: &TaskStatus) -> String {
    match status {
        TaskStatus::Succeeded => "succeeded".into(),
        TaskStatus::Failed { code } if *code > 128 => format!("killed by signal {}", code - 128),
        TaskStatus::Failed { code } => format!("failed with exit code {code}"),
        TaskStatus::TimedOut { after } => format!("timed out after {}", format_duration(*after)),
        TaskStatus::Interrupted => "interrupted".into(),
        TaskStatus::Skipped { .. } | TaskStatus::NotRun => "not run".into(),
    }
}

impl Reporter for TerminalReporter {
    fn started(&self, job: &Job, _attempt: u32) {
        if let Some(status) = &self.status {
            status.started(job.node, &job.label);
        }
    }

    fn waiting(&self, job: &Job) {
        if let Some(status) = &self.status {
            status.started(job.node, &format!("{} (waiting)", job.label));
        }
    }

    fn output(&self, job: &Job, stream: Stream, line: &[u8]) {
        match self.layout {
            Layout::Prefixed => {
                let mut text = self.label(job).into_bytes();
                text.extend_from_slice(b" | ");
                text.extend_from_slice(line);
                text.push(b'\n');
                // One write per line under the lock, so lines of parallel tasks never interleave mid-line.
                self.write(stream, &text);
            }
            Layout::Grouped => {
                let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
                buffers
                    .entry(job.node)
                    .or_default()
                    .push((stream, line.to_vec()));
            }
            Layout::Plain => {
                let mut text = Vec::with_capacity(line.len() + 1);
                text.extend_from_slice(line);
                text.push(b'\n');
                self.write(stream, &text);
            }
            Layout::Direct => {}
        }
    }

    fn finished(&self, job: &Job, result: &TaskResult) {
        if let Some(status) = &self.status {
            status.finished(job.node, result.cache.is_hit(), result.status.is_failure());
        }
        match self.layout {
            Layout::Grouped => {
                let lines = self
                    .buffers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&job.node)
                    .unwrap_or_default();
                let mut out = Vec::new();
                let header = format!(
                    "── {} ({}, {}) ",
                    job.label,
                    describe(&result.status),
                    format_duration(result.duration)
                );
                match self.ci_groups {
                    Some(groups) => {
                        let _ = writeln!(out, "{}", groups.open(job.node, &header));
                    }
                    None => {
                        let _ = writeln!(
                            out,
                            "{header}{}",
                            "─".repeat(60usize.saturating_sub(header.chars().count()))
                        );
                    }
                }
                for (_, line) in lines {
                    out.extend_from_slice(&line);
                    out.push(b'\n');
                }
                if let Some(groups) = self.ci_groups {
                    let _ = writeln!(out, "{}", groups.close(job.node));
                }
                // The block is one write, so blocks of tasks ending together never interleave.
                self.write(Stream::Stdout, &out);
            }
            Layout::Prefixed | Layout::Direct | Layout::Plain => {
                if result.status.is_failure() {
                    self.note_line(&format!("`{}` {}", job.label, describe(&result.status)));
                }
            }
        }
    }

    fn retrying(&self, job: &Job, failed: &TaskStatus, next_attempt: u32, attempts: u32) {
        self.note_line(&format!(
            "`{}` {}; retrying (attempt {next_attempt} of {attempts})",
            job.label,
            describe(failed)
        ));
    }

    fn note(&self, job: &Job, message: &str) {
        self.note_line(&format!("`{}`: {message}", job.label));
    }

    fn notice(&self, line: &str) {
        self.write(Stream::Stderr, format!("{line}\n").as_bytes());
    }

    fn cache_hit(&self, job: &Job, key: &Key) {
        let short = &key.to_string()[..12];
        self.note_line(&format!(
            "`{}`: cache hit, replaying output ({short})",
            job.label
        ));
    }
}
