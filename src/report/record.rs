//! Watches a run go by (as a [`Reporter`] in front of the terminal) and keeps, per job, what the summary needs
//! and the run itself does not: how much it printed, and how long each of its phases took.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::graph::NodeId;
use crate::run::{Job, Reporter, Stream};

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

/// A [`Reporter`] that records [`JobRecord`]s (beside the terminal, in a [`crate::run::Reporters`]).
#[derive(Default)]
pub struct RunRecorder {
    jobs: Mutex<HashMap<NodeId, JobRecord>>,
}

impl RunRecorder {
    /// A recorder that has seen nothing yet.
    pub fn new() -> RunRecorder {
        RunRecorder::default()
    }

    /// What was recorded, by graph node.
    pub fn take(&self) -> HashMap<NodeId, JobRecord> {
        std::mem::take(&mut *self.jobs.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Reporter for RunRecorder {
    fn output(&self, job: &Job, _stream: Stream, line: &[u8]) {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(job.node)
            .or_default()
            .output_bytes += line.len() as u64 + 1;
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
    }
}
