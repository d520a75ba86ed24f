//! Run and task events for event-sink plugins (`[plugins.NAME] events = true`). Each sink has its own thread
//! and a bounded queue: a slow or failing sink drops events (with a warning) and never holds up a task; at
//! the end of the run it gets at most its timeout to finish.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_plugin_api::{exports, CacheOutcome, Capability, Event, EventBatch, TaskOutcome};

use super::plugins::Plugins;
use super::{CacheUse, Job, Reporter, TaskResult, TaskStatus};

/// Events waiting for a sink beyond this are dropped.
const QUEUE: usize = 4096;
/// A batch is sent when it is this large or this old.
const BATCH: usize = 256;
const LINGER: Duration = Duration::from_millis(200);

pub use crate::time::unix_now_ms as now_ms;

struct Worker {
    name: String,
    sender: SyncSender<Event>,
    done: std::sync::Mutex<Receiver<()>>,
    dropped: Arc<AtomicUsize>,
    timeout: Duration,
}

/// The run's event sinks.
pub struct EventSinks {
    workers: Vec<Worker>,
}

impl EventSinks {
    /// Starts one thread per plugin declared with `events = true`; `None` when there is none.
    pub fn start(plugins: &Arc<Plugins>) -> Option<Arc<EventSinks>> {
        let names = plugins.event_sinks();
        if names.is_empty() {
            return None;
        }
        let workers = names
            .into_iter()
            .map(|(name, timeout)| {
                let (sender, receiver) = sync_channel::<Event>(QUEUE);
                let (done_tx, done) = sync_channel::<()>(1);
                let dropped = Arc::new(AtomicUsize::new(0));
                let (plugins, worker_name, worker_dropped) =
                    (Arc::clone(plugins), name.clone(), Arc::clone(&dropped));
                std::thread::spawn(move || {
                    deliver(&plugins, &worker_name, &receiver, &worker_dropped);
                    let _ = done_tx.send(());
                });
                Worker {
                    name,
                    sender,
                    done: std::sync::Mutex::new(done),
                    dropped,
                    timeout,
                }
            })
            .collect();
        Some(Arc::new(EventSinks { workers }))
    }

    /// Queues `event` for every sink; never blocks.
    pub fn send(&self, event: &Event) {
        for worker in &self.workers {
            match worker.sender.try_send(event.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    worker.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Closes the queues and gives each sink at most its timeout to deliver what is left; returns what the user
    /// should be told (a sink that timed out or dropped events), for the caller to show.
    pub fn finish(self: Arc<EventSinks>) -> Vec<String> {
        let mut warnings = Vec::new();
        let Ok(sinks) = Arc::try_unwrap(self) else {
            return warnings;
        };
        let mut waiting = Vec::new();
        for worker in sinks.workers {
            drop(worker.sender);
            waiting.push((worker.name, worker.done, worker.dropped, worker.timeout));
        }
        for (name, done, dropped, timeout) in waiting {
            let done = done.into_inner().unwrap_or_else(|e| e.into_inner());
            if let Err(RecvTimeoutError::Timeout) = done.recv_timeout(timeout) {
                warnings.push(format!(
                    "event sink `{name}` did not finish within {}s; its last events were dropped",
                    timeout.as_secs_f64()
                ));
            }
            let lost = dropped.load(Ordering::Relaxed);
            if lost > 0 {
                warnings.push(format!("event sink `{name}` dropped {lost} event(s)"));
            }
        }
        warnings
    }
}

fn deliver(plugins: &Plugins, name: &str, receiver: &Receiver<Event>, dropped: &AtomicUsize) {
    let sink = plugins.sink();
    let plugin = match plugins.get(name, Capability::Events) {
        Ok(plugin) => Some(plugin),
        Err(error) => {
            sink.print_line(&format!(
                "cairn: warning: event sink `{name}` is not used: {error}"
            ));
            None
        }
    };
    let mut batch = Vec::new();
    let mut oldest: Option<Instant> = None;
    let mut warned = false;
    loop {
        let wait = oldest.map_or(Duration::from_secs(3600), |t| {
            LINGER.saturating_sub(t.elapsed())
        });
        let closed = match receiver.recv_timeout(wait) {
            Ok(event) => {
                batch.push(event);
                oldest.get_or_insert_with(Instant::now);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let due = batch.len() >= BATCH || oldest.is_some_and(|t| t.elapsed() >= LINGER) || closed;
        if due && !batch.is_empty() {
            let events = std::mem::take(&mut batch);
            oldest = None;
            match &plugin {
                Some(plugin) => {
                    let count = events.len();
                    if let Err(error) = plugin.call::<_, ()>(
                        exports::ON_EVENTS,
                        &EventBatch { events },
                        sink.as_ref(),
                    ) {
                        dropped.fetch_add(count, Ordering::Relaxed);
                        if !warned {
                            sink.print_line(&format!(
                                "cairn: warning: event sink `{name}`: {error}"
                            ));
                            warned = true;
                        }
                    }
                }
                None => {
                    dropped.fetch_add(events.len(), Ordering::Relaxed);
                }
            }
        }
        if closed {
            return;
        }
    }
}

/// A reporter that turns task starts and ends into events.
pub struct EventReporter {
    /// Where events go.
    pub sinks: Arc<EventSinks>,
}

impl Reporter for EventReporter {
    fn started(&self, job: &Job, attempt: u32) {
        if attempt <= 1 {
            self.sinks.send(&Event::TaskStarted {
                at_ms: now_ms(),
                task: job.label.clone(),
            });
        }
    }

    fn finished(&self, job: &Job, result: &TaskResult) {
        let status = outcome(&result.status);
        let exit_code = result.status.exited_with();
        self.sinks.send(&Event::TaskFinished {
            at_ms: now_ms(),
            task: job.label.clone(),
            status,
            exit_code,
            duration_ms: result.duration.as_millis() as u64,
            cache: match result.cache {
                CacheUse::Hit | CacheUse::RemoteHit => CacheOutcome::Hit,
                CacheUse::Miss => CacheOutcome::Miss,
                CacheUse::Off => CacheOutcome::Off,
            },
            params: job.key.params.clone(),
        });
    }
}

/// A task's status as event plugins hear it: protocol v1 names five, and a task the run never started counts
/// as skipped there.
fn outcome(status: &TaskStatus) -> TaskOutcome {
    match status {
        TaskStatus::Succeeded => TaskOutcome::Succeeded,
        TaskStatus::Failed { .. } => TaskOutcome::Failed,
        TaskStatus::TimedOut { .. } => TaskOutcome::TimedOut,
        TaskStatus::Interrupted => TaskOutcome::Interrupted,
        TaskStatus::Skipped { .. } | TaskStatus::NotRun => TaskOutcome::Skipped,
    }
}
