//! Runs a [`Plan`]: schedules ready jobs up to the parallelism limit, retries, stops on failure or signal.
//!
//! The scheduler is one loop over a `JoinSet`: nothing else decides what runs next. How a job runs is an
//! [`Executor`]'s business (processes in production, a no-op in benchmarks); what the user sees is a
//! [`Reporter`]'s. This module never prints.

pub mod affected;
pub mod audit;
mod cached;
pub mod driver;
pub mod events;
mod job;
pub mod lock;
pub mod plugins;
mod process;
pub mod remote;
pub mod secrets;
mod signals;
mod spawn;
pub mod watcher;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::cache::{DepInput, Key, Session};
use signals::Signals;
use tokio::task::JoinSet;

pub use cached::CacheUse;
pub use job::{env_matches, Job, Plan, RolloutSlot, SecretsRequest, ALWAYS_PASSED};
pub use process::{is_direct, ProcessExecutor, Streams};

/// Which of a task's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a finished (or never started) task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskStatus {
    /// Every command exited 0.
    Succeeded,
    /// A command exited non-zero (or was killed by a signal: 128 + its number).
    Failed {
        /// The exit code.
        code: i32,
    },
    /// An attempt ran past the task's `timeout`.
    TimedOut {
        /// The limit.
        after: Duration,
    },
    /// Stopped because cairn was interrupted.
    Interrupted,
    /// Not started because a dependency failed.
    Skipped {
        /// The job whose failure blocked it.
        blocked_by: usize,
    },
    /// Not started because the run stopped after a failure or a signal.
    NotRun,
}

impl TaskStatus {
    /// The name it goes by in run records, audit lines and plugin events.
    pub fn name(&self) -> &'static str {
        match self {
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed { .. } => "failed",
            TaskStatus::TimedOut { .. } => "timed_out",
            TaskStatus::Interrupted => "interrupted",
            TaskStatus::Skipped { .. } => "skipped",
            TaskStatus::NotRun => "not_run",
        }
    }

    /// The task's own exit code, when it ran to an exit.
    pub fn exited_with(&self) -> Option<i32> {
        match self {
            TaskStatus::Succeeded => Some(0),
            TaskStatus::Failed { code } => Some(*code),
            _ => None,
        }
    }

    /// Whether the task ran and failed (not skipped, not interrupted).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            TaskStatus::Failed { .. } | TaskStatus::TimedOut { .. }
        )
    }

    /// The exit status cairn takes from this task when it is the first failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            TaskStatus::Succeeded => 0,
            TaskStatus::Failed { code } => *code,
            TaskStatus::TimedOut { .. } => 124,
            TaskStatus::Interrupted => 130,
            TaskStatus::Skipped { .. } | TaskStatus::NotRun => 1,
        }
    }
}

/// What became of one job.
#[derive(Debug, Clone)]
pub struct TaskResult {
    /// How it ended.
    pub status: TaskStatus,
    /// When its first attempt started, relative to the run's start.
    pub started: Option<Duration>,
    /// Wall time of all attempts.
    pub duration: Duration,
    /// Attempts made (0 when not started or restored from the cache).
    pub attempts: u32,
    /// Whether the cache was used.
    pub cache: CacheUse,
    /// The task's cache key, when one was computed.
    pub key: Option<Key>,
    /// Why the cache did not have its result, for a miss: forced, never succeeded before, or what changed.
    pub cache_reason: Option<String>,
    /// Where it ran: `local`, `remote` (on the execution engine) or `remote cache` (the engine's action
    /// cache had it); `None` for a local cache hit or a job that never started.
    pub ran_on: Option<&'static str>,
}

/// A signal that stopped the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Interruption {
    /// The conventional exit status for a process stopped by this signal.
    pub fn exit_code(self) -> i32 {
        match self {
            Interruption::Interrupt => 130,
            Interruption::Terminate => 143,
        }
    }
}

/// The outcome of a whole run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// One result per job of the plan, in plan order.
    pub results: Vec<TaskResult>,
    /// The first job to fail, in time: the root cause.
    pub first_failure: Option<usize>,
    /// The signal that stopped the run, if any.
    pub interrupted: Option<Interruption>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// When the run started; every `started` of a result is relative to it.
    pub started: Instant,
}

impl RunReport {
    /// cairn's exit status: 0, the first failed task's code, or 128 + the signal that stopped the run.
    pub fn exit_code(&self) -> i32 {
        if let Some(signal) = self.interrupted {
            return signal.exit_code();
        }
        match self.first_failure {
            Some(i) => self.results[i].status.exit_code(),
            None => 0,
        }
    }
}

/// How hard a running job is being asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopRequest {
    /// Keep going.
    None,
    /// SIGTERM, then SIGKILL after the grace period.
    Graceful,
    /// SIGKILL now (a second Ctrl-C).
    Now,
}

/// What an executor gets besides the job.
#[derive(Clone)]
pub struct JobContext {
    /// Changes when the run is interrupted.
    pub stop: watch::Receiver<StopRequest>,
    /// Where output and notes go.
    pub reporter: Arc<dyn Reporter>,
}

/// A boxed future an [`Executor`] returns.
pub type ExecutionFuture = Pin<Box<dyn Future<Output = TaskStatus> + Send>>;

/// Runs one attempt of a job.
pub trait Executor: Send + Sync + 'static {
    /// Runs `job` once and says how it ended.
    fn execute(&self, job: Arc<Job>, context: JobContext) -> ExecutionFuture;
}

/// Receives what happens during a run, to show it.
pub trait Reporter: Send + Sync + 'static {
    /// A job's attempt is starting.
    fn started(&self, job: &Job, attempt: u32) {
        let _ = (job, attempt);
    }
    /// A complete line of a job's output (without its newline), or a chunk of an overlong one.
    fn output(&self, job: &Job, stream: Stream, line: &[u8]) {
        let _ = (job, stream, line);
    }
    /// A job has ended.
    fn finished(&self, job: &Job, result: &TaskResult) {
        let _ = (job, result);
    }
    /// A job failed and will run again.
    fn retrying(&self, job: &Job, failed: &TaskStatus, next_attempt: u32, attempts: u32) {
        let _ = (job, failed, next_attempt, attempts);
    }
    /// Something the user should know about a job (it timed out, its program is missing, …).
    fn note(&self, job: &Job, message: &str) {
        let _ = (job, message);
    }
    /// A job's result was restored from the cache; its recorded output follows through `output`.
    fn cache_hit(&self, job: &Job, key: &Key) {
        let _ = (job, key);
    }
    /// A phase of a job (computing its key, restoring, running, storing, a plugin call) took this long.
    fn phase(&self, job: &Job, name: &str, started: Instant, ended: Instant) {
        let _ = (job, name, started, ended);
    }
    /// A job waits for another cairn run that is running the same key (`started` or `cache_hit` follows).
    fn waiting(&self, job: &Job) {
        let _ = job;
    }
    /// A line of cairn's own about the run, not about one job (a plugin's log line, what the remote cache
    /// published, a warning), already worded and without its newline.
    fn notice(&self, line: &str) {
        let _ = line;
    }
}

/// Several reporters as one: each hears everything, in order. Each reporter implements only what it is for
/// (the terminal, the run record, plugin events, a job's captured output) instead of wrapping the next.
pub struct Reporters(pub Vec<Arc<dyn Reporter>>);

impl Reporter for Reporters {
    fn started(&self, job: &Job, attempt: u32) {
        self.0.iter().for_each(|r| r.started(job, attempt));
    }
    fn output(&self, job: &Job, stream: Stream, line: &[u8]) {
        self.0.iter().for_each(|r| r.output(job, stream, line));
    }
    fn finished(&self, job: &Job, result: &TaskResult) {
        self.0.iter().for_each(|r| r.finished(job, result));
    }
    fn retrying(&self, job: &Job, failed: &TaskStatus, next_attempt: u32, attempts: u32) {
        self.0
            .iter()
            .for_each(|r| r.retrying(job, failed, next_attempt, attempts));
    }
    fn note(&self, job: &Job, message: &str) {
        self.0.iter().for_each(|r| r.note(job, message));
    }
    fn cache_hit(&self, job: &Job, key: &Key) {
        self.0.iter().for_each(|r| r.cache_hit(job, key));
    }
    fn phase(&self, job: &Job, name: &str, started: Instant, ended: Instant) {
        self.0
            .iter()
            .for_each(|r| r.phase(job, name, started, ended));
    }
    fn waiting(&self, job: &Job) {
        self.0.iter().for_each(|r| r.waiting(job));
    }
    fn notice(&self, line: &str) {
        self.0.iter().for_each(|r| r.notice(line));
    }
}

/// Scheduling choices for one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Jobs at once, at least 1.
    pub jobs: usize,
    /// After a failure, keep starting jobs whose dependencies succeeded.
    pub keep_going: bool,
    /// Stop on SIGINT/SIGTERM (off in benchmarks and embedders that handle signals themselves).
    pub handle_signals: bool,
    /// Run tasks even when the cache has their result (and store the new result).
    pub force: bool,
    /// Stops the run as SIGTERM would when it turns `true` (`cairn watch` stopping a service to restart it).
    pub stop: Option<watch::Receiver<bool>>,
    /// The execution engine tasks may run on; its actions do not take the local `jobs` slots.
    pub remote: Option<Arc<remote::RemoteExecution>>,
}

/// How many jobs that may be cache hits start beyond the `slots` local slots: enough to keep lookups waiting on
/// the disk or the network overlapped (on two cores, 4 to 16 measured the same for 200 remote hits).
fn lookahead(slots: usize) -> usize {
    (2 * slots).max(4)
}

/// Runs `plan` to the end, or until a failure or signal stops it.
pub async fn execute(
    plan: &Plan,
    options: &RunOptions,
    executor: Arc<dyn Executor>,
    reporter: Arc<dyn Reporter>,
    cache: Option<Arc<Session>>,
) -> std::io::Result<RunReport> {
    let start = Instant::now();
    let count = plan.jobs.len();
    let jobs = &plan.jobs;
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (i, deps) in plan.deps.iter().enumerate() {
        for &d in deps {
            dependents[d].push(i);
        }
    }
    let waiting: Vec<usize> = plan.deps.iter().map(Vec::len).collect();
    let mut state = Progress {
        ready: (0..count)
            .filter(|&i| waiting[i] == 0)
            .map(Reverse)
            .collect(),
        waiting,
        dependents,
        results: vec![
            TaskResult {
                status: TaskStatus::NotRun,
                started: None,
                duration: Duration::ZERO,
                attempts: 0,
                cache: CacheUse::Off,
                key: None,
                cache_reason: None,
                ran_on: None,
            };
            count
        ],
        rollouts: HashMap::new(),
        stopping: false,
        first_failure: None,
        interrupted: None,
        keep_going: options.keep_going,
        start,
    };
    let (stop_tx, stop_rx) = watch::channel(StopRequest::None);
    let context = JobContext {
        stop: stop_rx,
        reporter: Arc::clone(&reporter),
    };
    let mut signals = if options.handle_signals {
        Some(Signals::new()?)
    } else {
        None
    };
    let mut running: JoinSet<cached::JobEnd> = JoinSet::new();
    let mut running_index: HashMap<tokio::task::Id, usize> = HashMap::new();
    // A command running here takes one of the `--jobs` slots; a cache lookup does not. A job that cannot be a
    // hit gets its slot from the scheduler before it starts; a few jobs that may be hits start beyond the slots
    // (their lookups, fetches and restores wait on the disk or the network, not the processor), and take a
    // slot only if they miss. With an engine, up to its own number of actions run beside the local jobs too.
    let slots = options.jobs.max(1);
    let limit = slots + lookahead(slots) + options.remote.as_ref().map_or(0, |r| r.jobs());
    let local_slots = Arc::new(tokio::sync::Semaphore::new(slots));
    let mut asked_to_stop = options.stop.clone();

    loop {
        // Everything that already ended is taken into account before anything new starts: a failure that
        // has happened stops a rollout even when another job's end was noticed first.
        while let Some(joined) = running.try_join_next_with_id() {
            let (i, end) = state.identify(joined, &mut running_index, jobs, reporter.as_ref());
            state.finish(i, end, jobs, reporter.as_ref());
        }
        while !state.stopping && running.len() < limit {
            let free = Arc::clone(&local_slots).try_acquire_owned().ok();
            let may_hit = |i: usize| cached::may_hit(&jobs[i], cache.is_some(), options.force);
            if free.is_none() && !state.ready.peek().is_some_and(|&Reverse(i)| may_hit(i)) {
                break;
            }
            let Some(i) = state.next_ready(jobs) else {
                break;
            };
            // A rollout's turn can make next_ready pick another job than the one looked at: one that cannot hit
            // and finds no free slot waits for one after it starts.
            let held = free.filter(|_| !may_hit(i));
            state.results[i].started = Some(start.elapsed());
            let deps = plan.deps[i]
                .iter()
                .filter_map(|&d| {
                    Some(DepInput {
                        label: jobs[d].label.clone(),
                        key: state.results[d].key?,
                        outputs: jobs[d].key.outputs.clone(),
                    })
                })
                .collect();
            let handle = running.spawn(cached::run_job(
                Arc::clone(&jobs[i]),
                Arc::clone(&executor),
                context.clone(),
                cache.clone(),
                deps,
                options.force,
                cached::Placing::new(options.remote.clone(), Arc::clone(&local_slots), held),
            ));
            running_index.insert(handle.id(), i);
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            joined = running.join_next_with_id() => {
                let joined = joined.expect("the set is not empty");
                let (i, end) = state.identify(joined, &mut running_index, jobs, reporter.as_ref());
                state.finish(i, end, jobs, reporter.as_ref());
            }
            signal = asked(&mut asked_to_stop, &mut signals) => {
                state.interrupted.get_or_insert(signal);
                state.stopping = true;
                let harder = if *stop_tx.borrow() == StopRequest::None { StopRequest::Graceful } else { StopRequest::Now };
                let _ = stop_tx.send(harder);
            }
        }
    }

    let mut results = state.results;
    mark_skipped(&plan.deps, &mut results);
    Ok(RunReport {
        results,
        first_failure: state.first_failure,
        interrupted: state.interrupted,
        elapsed: start.elapsed(),
        started: start,
    })
}

/// The next signal, or the caller's request to stop, which counts as SIGTERM.
async fn asked(
    stop: &mut Option<watch::Receiver<bool>>,
    signals: &mut Option<Signals>,
) -> Interruption {
    let requested = async {
        match stop {
            Some(stop) => {
                // A dropped sender is no request: the run goes on.
                if stop.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        signal = Signals::next(signals) => signal,
        () = requested => Interruption::Terminate,
    }
}

/// The scheduler's bookkeeping: what is ready, what waits for what, and how each job ended.
struct Progress {
    ready: BinaryHeap<Reverse<usize>>,
    waiting: Vec<usize>,
    dependents: Vec<Vec<usize>>,
    results: Vec<TaskResult>,
    rollouts: HashMap<usize, RolloutState>,
    stopping: bool,
    first_failure: Option<usize>,
    interrupted: Option<Interruption>,
    keep_going: bool,
    start: Instant,
}

impl Progress {
    /// The next job to start, in plan order, that its rollout (if any) lets start now.
    fn next_ready(&mut self, jobs: &[Arc<Job>]) -> Option<usize> {
        loop {
            let Reverse(i) = self.ready.pop()?;
            let Some(slot) = jobs[i].rollout else {
                return Some(i);
            };
            let state = self.rollouts.entry(slot.group).or_default();
            if let Some(failed) = state.stopped_by {
                // The rollout stopped at a failure: the rest of its instances stay as they are.
                self.results[i].status = TaskStatus::Skipped { blocked_by: failed };
                continue;
            }
            let out_of_turn = slot.serial && slot.rank != state.started;
            if state.running >= slot.max_parallel || out_of_turn {
                state.waiting.push(i);
                continue;
            }
            state.running += 1;
            state.started += 1;
            return Some(i);
        }
    }

    /// Which job a finished task was, and how it ended (a runner that panicked counts as a failure).
    fn identify(
        &self,
        joined: Result<(tokio::task::Id, cached::JobEnd), tokio::task::JoinError>,
        running_index: &mut HashMap<tokio::task::Id, usize>,
        jobs: &[Arc<Job>],
        reporter: &dyn Reporter,
    ) -> (usize, cached::JobEnd) {
        match joined {
            Ok((id, end)) => (
                running_index.remove(&id).expect("spawned ids are indexed"),
                end,
            ),
            Err(error) => {
                let i = running_index
                    .remove(&error.id())
                    .expect("spawned ids are indexed");
                reporter.note(
                    &jobs[i],
                    "cairn's runner for this task stopped unexpectedly",
                );
                (
                    i,
                    cached::JobEnd {
                        status: TaskStatus::Failed { code: 70 },
                        attempts: 1,
                        key: None,
                        cache: CacheUse::Off,
                        cache_reason: None,
                        ran_on: None,
                        waited: Duration::ZERO,
                    },
                )
            }
        }
    }

    /// Records how job `i` ended and makes ready what waited only for it.
    fn finish(
        &mut self,
        i: usize,
        end: cached::JobEnd,
        jobs: &[Arc<Job>],
        reporter: &dyn Reporter,
    ) {
        // A job that looked in the cache and missed may have waited for a slot: its time starts after that.
        let started = self.results[i].started.unwrap_or_default() + end.waited;
        self.results[i] = TaskResult {
            status: end.status,
            started: Some(started),
            duration: self.start.elapsed().saturating_sub(started),
            attempts: end.attempts,
            cache: end.cache,
            key: end.key,
            cache_reason: end.cache_reason,
            ran_on: end.ran_on,
        };
        reporter.finished(&jobs[i], &self.results[i]);
        if let Some(slot) = jobs[i].rollout {
            let state = self.rollouts.entry(slot.group).or_default();
            state.running -= 1;
            if self.results[i].status != TaskStatus::Succeeded {
                state.stopped_by.get_or_insert(i);
            }
            self.ready.extend(state.waiting.drain(..).map(Reverse));
        }
        match &self.results[i].status {
            TaskStatus::Succeeded => {
                for &next in &self.dependents[i] {
                    self.waiting[next] -= 1;
                    if self.waiting[next] == 0 {
                        self.ready.push(Reverse(next));
                    }
                }
            }
            TaskStatus::Interrupted => {
                // Only a task that owns the terminal sees Ctrl-C before cairn does.
                self.interrupted.get_or_insert(Interruption::Interrupt);
                self.stopping = true;
            }
            status if status.is_failure() => {
                self.first_failure.get_or_insert(i);
                if !self.keep_going {
                    self.stopping = true;
                }
            }
            _ => {}
        }
    }
}

/// How far one rollout (a matrix with `serial` or `max_parallel`) has got.
#[derive(Default)]
struct RolloutState {
    running: usize,
    /// Instances started so far; a serial rollout starts the instance of that rank next.
    started: usize,
    /// Ready instances held back by the rollout's limit.
    waiting: Vec<usize>,
    /// The instance whose failure stopped the rollout.
    stopped_by: Option<usize>,
}

/// Runs a job's attempts until one succeeds, the retries run out, or the run is interrupted.
pub(super) async fn attempts(
    job: Arc<Job>,
    executor: Arc<dyn Executor>,
    context: JobContext,
) -> (TaskStatus, u32) {
    let allowed = job.retries + 1;
    let mut attempt = 1;
    loop {
        context.reporter.started(&job, attempt);
        let status = executor.execute(Arc::clone(&job), context.clone()).await;
        let stopping = *context.stop.borrow() != StopRequest::None;
        if !status.is_failure() || attempt == allowed || stopping {
            return (status, attempt);
        }
        context
            .reporter
            .retrying(&job, &status, attempt + 1, allowed);
        attempt += 1;
    }
}

/// Marks never-started jobs whose dependencies failed as skipped, naming the failure that blocked them.
fn mark_skipped(deps: &[Vec<usize>], results: &mut [TaskResult]) {
    // Plan order puts dependencies first, so one forward pass sees each blocker before what it blocks.
    for i in 0..results.len() {
        if results[i].status != TaskStatus::NotRun {
            continue;
        }
        let blocker = deps[i].iter().find_map(|&d| match &results[d].status {
            status if status.is_failure() || *status == TaskStatus::Interrupted => Some(d),
            TaskStatus::Skipped { blocked_by } => Some(*blocked_by),
            _ => None,
        });
        if let Some(blocked_by) = blocker {
            results[i].status = TaskStatus::Skipped { blocked_by };
        }
    }
}

#[cfg(test)]
mod tests;
