//! Watches a run go by (as a [`Reporter`] in front of the terminal) and keeps, per job, what the summary needs
//! and the run itself does not: how much it printed, and how long each of its phases took.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::cache::Key;
use crate::graph::NodeId;
use crate::run::{Job, Reporter, Stream, TaskResult, TaskStatus};

/// A phase of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseTiming {
    /// `cache lookup`, `run`, `cache store`, `health check`, `rollback`, `plugin NAME`.
    pub name: String,
    /// When it began.
    pub started: Instant,
    /// When it ended.
    pub ended: Instant,
}

/// What was seen of one job.
#[derive(Debug, Clone, Default)]
pub struct JobRecord {
    /// Bytes of output (lines and their newlines), replayed output included.
    pub output_bytes: u64,
    /// Its phases, in the order they ended.
    pub phases: Vec<PhaseTiming>,
}

/// A [`Reporter`] that forwards everything to `inner` and records [`JobRecord`]s.
pub struct RunRecorder {
    inner: Arc<dyn Reporter>,
    jobs: Mutex<HashMap<NodeId, JobRecord>>,
}

impl RunRecorder {
    /// Records what passes through to `inner`.
    pub fn new(inner: Arc<dyn Reporter>) -> RunRecorder {
        RunRecorder {
            inner,
            jobs: Mutex::new(HashMap::new()),
        }
    }

    /// What was recorded, by graph node.
    pub fn take(&self) -> HashMap<NodeId, JobRecord> {
        std::mem::take(&mut *self.jobs.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Reporter for RunRecorder {
    fn started(&self, job: &Job, attempt: u32) {
        self.inner.started(job, attempt);
    }
    fn output(&self, job: &Job, stream: Stream, line: &[u8]) {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(job.node)
            .or_default()
            .output_bytes += line.len() as u64 + 1;
        self.inner.output(job, stream, line);
    }
    fn finished(&self, job: &Job, result: &TaskResult) {
        self.inner.finished(job, result);
    }
    fn retrying(&self, job: &Job, failed: &TaskStatus, next: u32, of: u32) {
        self.inner.retrying(job, failed, next, of);
    }
    fn note(&self, job: &Job, message: &str) {
        self.inner.note(job, message);
    }
    fn waiting(&self, job: &Job) {
        self.inner.waiting(job);
    }
    fn cache_hit(&self, job: &Job, key: &Key) {
        self.inner.cache_hit(job, key);
    }
    fn phase(&self, job: &Job, name: &str, started: Instant, ended: Instant) {
        let timing = PhaseTiming {
            name: name.to_owned(),
            started,
            ended,
        };
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(job.node)
            .or_default()
            .phases
            .push(timing);
        self.inner.phase(job, name, started, ended);
    }
}
