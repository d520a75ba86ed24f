//! The Live view: every `cairn run` of the project in progress, from the feeds runs write while a dashboard
//! is up (see `report::live`), whether the run was started from a terminal or from the dashboard.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::html::{badge, duration_ms, escape, table};
use crate::report::LIVE_DIR;

#[derive(Debug, Deserialize)]
struct Event {
    event: String,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    cached: bool,
    #[serde(default)]
    duration_ms: Option<u64>,
    #[serde(default)]
    ms: Option<u64>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    time: Option<u64>,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    stoppable: bool,
}

/// What a feed says of one task.
enum TaskState {
    Running {
        since_ms: u64,
    },
    Ended {
        status: String,
        cached: bool,
        duration_ms: u64,
    },
}

/// One run in progress (or just ended), as its feed tells it.
struct LiveRun {
    /// The feed's name without its extension (`PID-N`): what a stop request names.
    id: String,
    pid: u32,
    /// Whether the run looks for a stop request from the dashboard.
    stoppable: bool,
    /// `run`, or `watch` for a cycle of `cairn watch`.
    command: String,
    targets: Vec<String>,
    tasks: BTreeMap<String, TaskState>,
    last_ms: u64,
    started_unix_ms: Option<u64>,
    exit_code: Option<i32>,
}

/// The feeds in the project's live directory.
pub fn feeds(root: &Path) -> Vec<PathBuf> {
    crate::report::files_with_extension(&root.join(LIVE_DIR), "jsonl")
}

fn read_run(path: &Path) -> Option<LiveRun> {
    // `PID-N`: the process, then which of its runs (a `cairn watch` runs many).
    let stem = path.file_stem()?.to_str()?;
    let pid: u32 = stem.split('-').next()?.parse().ok()?;
    let text = std::fs::read_to_string(path).ok()?;
    let mut run = LiveRun {
        id: stem.to_owned(),
        pid,
        stoppable: false,
        command: "run".into(),
        targets: Vec::new(),
        tasks: BTreeMap::new(),
        last_ms: 0,
        started_unix_ms: None,
        exit_code: None,
    };
    // A line still being written is not complete yet: only whole lines count.
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let Ok(event) = serde_json::from_str::<Event>(line) else {
            continue;
        };
        run.last_ms = run.last_ms.max(event.ms.unwrap_or(0));
        match (event.event.as_str(), event.task) {
            ("run", _) => {
                run.targets = event.targets;
                run.command = event.command.unwrap_or_else(|| "run".into());
                run.started_unix_ms = event.time;
                run.stoppable = event.stoppable;
            }
            ("started", Some(task)) => {
                run.tasks.insert(
                    task,
                    TaskState::Running {
                        since_ms: event.ms.unwrap_or(0),
                    },
                );
            }
            ("finished", Some(task)) => {
                run.tasks.insert(
                    task,
                    TaskState::Ended {
                        status: event.status.unwrap_or_default(),
                        cached: event.cached,
                        duration_ms: event.duration_ms.unwrap_or(0),
                    },
                );
            }
            ("end", _) => run.exit_code = event.exit_code,
            _ => {}
        }
    }
    Some(run)
}

/// Whether process `pid` still exists (a feed whose run was killed stays behind).
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only asks whether the process exists and may be signalled.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// How long an ended run's feed stays (shown with its outcome) before the dashboard removes it: long enough
/// for every open page's event stream, which looks five times a second, to have read its last line.
const ENDED_FEED_KEPT: std::time::Duration = std::time::Duration::from_secs(5);

/// Removes the feeds of runs that ended (their last event, or their process gone) more than `grace` ago.
pub fn sweep(root: &Path, grace: std::time::Duration) {
    for path in feeds(root) {
        let Some(run) = read_run(&path) else {
            continue;
        };
        let ended = run.exit_code.is_some() || !alive(run.pid);
        let idle = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .unwrap_or_default();
        if ended && idle >= grace {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(crate::report::stop_request_path(&path));
        }
    }
}

/// [`sweep`] with the usual grace.
pub fn sweep_ended(root: &Path) {
    sweep(root, ENDED_FEED_KEPT);
}

/// The Live view's changing part: each run in progress (or just ended) with its tasks.
pub fn fragment(root: &Path, csrf: &str) -> String {
    sweep_ended(root);
    let runs: Vec<LiveRun> = feeds(root).iter().filter_map(|p| read_run(p)).collect();
    if runs.is_empty() {
        return "<p class=\"empty\" id=\"no-runs\">No run in progress. Start one here or in a terminal; it \
                shows up as it starts.</p>"
            .into();
    }
    let mut out = String::new();
    for run in runs {
        let state = match run.exit_code {
            Some(0) => badge("succeeded"),
            Some(_) => badge("failed"),
            None if alive(run.pid) => badge("running"),
            None => badge("interrupted"),
        };
        // A running run's age is the clock's; an ended one's is its last event's.
        let elapsed = match (run.exit_code, run.started_unix_ms) {
            (None, Some(started)) => crate::time::unix_now_ms().saturating_sub(started),
            _ => run.last_ms,
        };
        let done = run
            .tasks
            .values()
            .filter(|t| matches!(t, TaskState::Ended { .. }))
            .count();
        // A service `cairn watch` keeps up has a feed of its own for each process of it.
        let heading = match run.command.as_str() {
            "service" => format!(
                "service {} (kept up by cairn watch)",
                escape(&run.targets.join(" "))
            ),
            command => format!(
                "cairn {} {}",
                escape(command),
                escape(&run.targets.join(" "))
            ),
        };
        let _ = write!(
            out,
            "<section class=\"live-run\" data-pid=\"{pid}\"><h2>{heading} {state}</h2>\
             <p>process {pid} · {done} of {seen} tasks seen have ended · {elapsed}</p>",
            pid = run.pid,
            seen = run.tasks.len(),
            elapsed = duration_ms(elapsed as f64),
        );
        if run.stoppable && run.exit_code.is_none() && alive(run.pid) {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/actions/stop\" class=\"stop\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <input type=\"hidden\" name=\"target\" value=\"{id}\">\
                 <button type=\"submit\">Stop this run</button></form>",
                csrf = escape(csrf),
                id = escape(&run.id),
            );
        }
        let mut rows: Vec<(u8, Vec<String>)> = run
            .tasks
            .iter()
            .map(|(label, state)| match state {
                TaskState::Running { since_ms } => (
                    0,
                    vec![
                        escape(label),
                        badge("running"),
                        match run.started_unix_ms {
                            Some(started) => format!(
                                "for {}",
                                duration_ms(
                                    crate::time::unix_now_ms().saturating_sub(started + since_ms)
                                        as f64
                                )
                            ),
                            None => String::new(),
                        },
                    ],
                ),
                TaskState::Ended {
                    status,
                    cached,
                    duration_ms: took,
                } => (
                    1,
                    vec![
                        escape(label),
                        badge(if *cached { "hit" } else { status }),
                        duration_ms(*took as f64),
                    ],
                ),
            })
            .collect();
        rows.sort_by_key(|(order, _)| *order);
        let rows: Vec<Vec<String>> = rows.into_iter().map(|(_, row)| row).collect();
        out.push_str(&table(&["task", "state", "time"], &rows));
        out.push_str("</section>");
    }
    out
}

/// Asks the run whose feed is `id` (`PID-N`) to stop, if it is one in progress that listens: returns whether the
/// request was made. Only names of feeds present in the live directory are accepted.
pub fn request_stop(root: &Path, id: &str) -> bool {
    let well_formed = id.split_once('-').is_some_and(|(pid, n)| {
        !pid.is_empty()
            && !n.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && n.bytes().all(|b| b.is_ascii_digit())
    });
    if !well_formed {
        return false;
    }
    let feed = root.join(LIVE_DIR).join(format!("{id}.jsonl"));
    let Some(run) = read_run(&feed) else {
        return false;
    };
    if !run.stoppable || run.exit_code.is_some() || !alive(run.pid) {
        return false;
    }
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(crate::report::stop_request_path(&feed))
        .is_ok()
}

/// The complete lines the feeds gained since `offsets` (each feed's bytes already sent), oldest feed first;
/// `offsets` moves past them and forgets feeds that are gone.
pub fn new_lines(
    root: &Path,
    offsets: &mut std::collections::HashMap<PathBuf, u64>,
) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let present = feeds(root);
    offsets.retain(|path, _| present.contains(path));
    let mut lines = Vec::new();
    for path in present {
        let Ok(mut file) = std::fs::File::open(&path) else {
            continue;
        };
        let offset = offsets.entry(path).or_insert(0);
        if file.seek(SeekFrom::Start(*offset)).is_err() {
            continue;
        }
        let mut fresh = String::new();
        if file.read_to_string(&mut fresh).is_err() {
            continue;
        }
        // Only whole lines: a line still being written is sent when it is complete.
        let complete = fresh.rfind('\n').map_or(0, |at| at + 1);
        *offset += complete as u64;
        lines.extend(fresh[..complete].lines().map(str::to_owned));
    }
    lines
}

/// A fingerprint of what the Live view shows: the feeds (names and sizes) and the newest run record, so a run
/// too short to be seen between two looks still changes it when its record appears.
pub fn signature(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut seen: Vec<(PathBuf, u64)> = feeds(root)
        .into_iter()
        .map(|p| {
            let len = std::fs::metadata(&p).map_or(0, |m| m.len());
            (p, len)
        })
        .collect();
    if let Some(newest) = crate::report::list_runs(&crate::report::runs_dir(root)).pop() {
        seen.push((newest, 0));
    }
    seen
}
