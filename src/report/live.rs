//! The live feed of a run for `cairn ui`: while a dashboard is up for the project (it keeps
//! `.cairn/ui.json`), each run (`cairn run`, each cycle of `cairn watch`) appends one JSON line per event to
//! `.cairn/live/PID-N.jsonl` (N counts the runs of one process), the last
//! one saying how the run ended. The dashboard removes a feed once it has had time to read that line (a run
//! removing its own feed would race the dashboard's reading of the end). Without a dashboard a run costs one
//! failed `stat` and writes nothing.
//!
//! Only task labels, statuses and times are written: never output (which may hold what redaction missed) and
//! never a value of any kind.

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

/// A run's feed.
pub struct LiveFeed {
    file: Mutex<File>,
    start: Instant,
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
            start: Instant::now(),
        };
        feed.write(json!({
            "event": "run",
            "command": command,
            "pid": std::process::id(),
            "targets": targets,
            "time": crate::time::unix_now_ms(),
        }));
        Some(feed)
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
        self.write(json!({"event": "end", "exit_code": exit_code, "ms": self.ms()}));
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
