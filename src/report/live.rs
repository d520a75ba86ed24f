//! The live feed of a run for `cairn ui`: while a dashboard is up for the project (it keeps
//! `.cairn/ui.json`), each run (`cairn run`, each cycle of `cairn watch`) appends one JSON line per event to
//! `.cairn/live/PID-N.jsonl` (N counts the runs of one process), the last
//! one saying how the run ended. The dashboard removes a feed once it has had time to read that line (a run
//! removing its own feed would race the dashboard's reading of the end). Without a dashboard a run costs one
//! failed `stat` and writes nothing.
//!
//! Only task labels, statuses and times are written: never output (which may hold what redaction missed) and
//! never a value of any kind.
//!
//! A `cairn run` can be stopped from the dashboard: the dashboard creates `PID-N.stop` beside the feed, and the
//! run, which looks for that file a few times a second while its feed is open, stops as SIGTERM would. A file
//! rather than a signal, so that a process id reused after a crash can never be signalled by mistake.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::json;

use crate::run::{Job, Reporter, TaskResult};

/// The file a running dashboard keeps, relative to the project.
pub const UI_MARKER: &str = ".cairn/ui.json";
/// The directory of live feeds, relative to the project.
pub const LIVE_DIR: &str = ".cairn/live";

/// How often a run whose feed is open looks for a request to stop.
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// The file the dashboard creates to stop the run whose feed is `feed`.
pub fn stop_request_path(feed: &Path) -> std::path::PathBuf {
    feed.with_extension("stop")
}

/// A run's feed.
pub struct LiveFeed {
    file: Mutex<File>,
    path: std::path::PathBuf,
    start: Instant,
    ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LiveFeed {
    /// A feed for this run of `command` (`run`, `watch`) when a dashboard is up for the project at `root`; `None` otherwise, or when the
    /// feed cannot be made (the run goes on without it).
    pub fn open(root: &Path, command: &str, targets: &[String]) -> Option<LiveFeed> {
        if !root.join(UI_MARKER).exists() {
            return None;
        }
        let dir = root.join(LIVE_DIR);
        std::fs::create_dir_all(&dir).ok()?;
        static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("{}-{run}.jsonl", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .ok()?;
        let feed = LiveFeed {
            file: Mutex::new(file),
            path,
            start: Instant::now(),
            ended: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        feed.write(json!({
            "event": "run",
            "command": command,
            "pid": std::process::id(),
            "targets": targets,
            "time": crate::time::unix_now_ms(),
            // Whether this run listens for a stop request from the dashboard (`stop_requests`).
            "stoppable": command == "run",
        }));
        Some(feed)
    }

    /// Turns `true` when the dashboard asks this run to stop (see the module's documentation). Looks for the
    /// request on a thread of its own until the feed ends.
    pub fn stop_requests(&self) -> tokio::sync::watch::Receiver<bool> {
        let (sender, receiver) = tokio::sync::watch::channel(false);
        let request = stop_request_path(&self.path);
        let ended = std::sync::Arc::clone(&self.ended);
        let spawned = std::thread::Builder::new()
            .name("cairn-stop-request".into())
            .spawn(move || {
                while !ended.load(std::sync::atomic::Ordering::Relaxed) && !sender.is_closed() {
                    if request.exists() {
                        let _ = std::fs::remove_file(&request);
                        let _ = sender.send(true);
                        return;
                    }
                    std::thread::sleep(STOP_POLL);
                }
            });
        // Without the thread the run cannot be stopped from the page; it runs as it would without a dashboard.
        drop(spawned);
        receiver
    }

    /// Appends one event as one line with one write, so a reader never sees half of one.
    fn write(&self, event: serde_json::Value) {
        let mut line = event.to_string();
        line.push('\n');
        if let Ok(mut file) = self.file.lock() {
            let _ = file.write_all(line.as_bytes());
        }
    }

    fn ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The run has ended with `exit_code`: the last event.
    pub fn end(&self, exit_code: i32) {
        self.ended.store(true, std::sync::atomic::Ordering::Relaxed);
        // A request that came too late to matter.
        let _ = std::fs::remove_file(stop_request_path(&self.path));
        self.write(json!({"event": "end", "exit_code": exit_code, "ms": self.ms()}));
    }
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        self.ended.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Reporter for LiveFeed {
    fn started(&self, job: &Job, attempt: u32) {
        self.write(
            json!({"event": "started", "task": job.label, "attempt": attempt, "ms": self.ms()}),
        );
    }

    fn cache_hit(&self, job: &Job, _key: &crate::cache::Key) {
        self.write(json!({"event": "cached", "task": job.label, "ms": self.ms()}));
    }

    fn finished(&self, job: &Job, result: &TaskResult) {
        self.write(json!({
            "event": "finished",
            "task": job.label,
            "status": result.status.name(),
            "cached": result.cache.is_hit(),
            "duration_ms": u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
            "ms": self.ms(),
        }));
    }
}
