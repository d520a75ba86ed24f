//! One job through the cache: compute its key once its dependencies have ended, restore and replay a hit, or
//! run it (incremental tasks on their changed inputs only) and store what it produced.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cache::{Claim, DepInput, Key, Keyed, RestoreNotes, Session};

use super::remote::{Looked, Placement, RemoteEnd, RemoteExecution};
use super::{
    attempts, Executor, Job, JobContext, Reporter, Reporters, StopRequest, Stream, TaskStatus,
};

/// Whether the cache was used for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Not consulted: caching off for the task or the run.
    Off,
    /// Restored from the local cache; the task did not run.
    Hit,
    /// Fetched from the remote cache into the local one, and restored; the task did not run.
    RemoteHit,
    /// Looked up and not found (or `--force`); the task ran.
    Miss,
}

impl CacheUse {
    /// Whether the result came from a cache, local or remote.
    pub fn is_hit(self) -> bool {
        matches!(self, CacheUse::Hit | CacheUse::RemoteHit)
    }

    /// The name summaries and events give it: `hit`, `miss` or `off` (where a hit came from is in the reason).
    pub fn name(self) -> &'static str {
        match self {
            CacheUse::Hit | CacheUse::RemoteHit => "hit",
            CacheUse::Miss => "miss",
            CacheUse::Off => "off",
        }
    }
}

/// How a job ended, as the scheduler records it.
#[derive(Debug)]
pub(super) struct JobEnd {
    pub status: TaskStatus,
    pub attempts: u32,
    pub key: Option<Key>,
    pub cache: CacheUse,
    pub cache_reason: Option<String>,
    pub ran_on: Option<&'static str>,
    /// Time spent waiting for a local slot after starting: the job's own time begins after it.
    pub waited: Duration,
}

/// Where a job may run besides here, and the `--jobs` slots a command running here takes.
pub(super) struct Placing {
    pub remote: Option<Arc<RemoteExecution>>,
    pub local_slots: Arc<Semaphore>,
    /// The slot the scheduler took for a job that cannot be a cache hit before starting it.
    pub held: Option<OwnedSemaphorePermit>,
    /// How long the job waited for a slot after its lookup missed (not part of its run time).
    waited: Duration,
}

impl Placing {
    /// Placing for a job; `held` is the slot the scheduler already took for it, if it did.
    pub fn new(
        remote: Option<Arc<RemoteExecution>>,
        local_slots: Arc<Semaphore>,
        held: Option<OwnedSemaphorePermit>,
    ) -> Placing {
        Placing {
            remote,
            local_slots,
            held,
            waited: Duration::ZERO,
        }
    }

    /// Runs the job's attempts here, in one of the local slots.
    async fn here(
        &mut self,
        job: Arc<Job>,
        executor: Arc<dyn Executor>,
        context: JobContext,
    ) -> (TaskStatus, u32) {
        let _slot = match self.held.take() {
            Some(slot) => Some(slot),
            None => {
                let asked = Instant::now();
                let slot = Arc::clone(&self.local_slots).acquire_owned().await.ok();
                self.waited += asked.elapsed();
                slot
            }
        };
        attempts(job, executor, context).await
    }
}

/// Keeps a job's output lines, to be stored with its entry (beside the run's reporter, in a [`Reporters`]).
struct Capture {
    lines: Mutex<Vec<(bool, Vec<u8>)>>,
}

impl Reporter for Capture {
    fn started(&self, _job: &Job, _attempt: u32) {
        // Only the last attempt's output belongs to the result.
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
    fn output(&self, _job: &Job, stream: Stream, line: &[u8]) {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((stream == Stream::Stderr, line.to_vec()));
    }
}

/// Whether a job starts with a cache lookup, which does not take one of the `--jobs` slots: the scheduler
/// starts a few of those beyond the slots, so that lookups, fetches and restores overlap with each other and
/// with the commands running instead of waiting for a slot they do not need.
pub(super) fn may_hit(job: &Job, cached: bool, force: bool) -> bool {
    cached && job.needs_key && job.key.cacheable && !force
}

/// Runs `job`, using `cache` when there is one; `deps` are its dependencies' keys.
pub(super) async fn run_job(
    job: Arc<Job>,
    executor: Arc<dyn Executor>,
    context: JobContext,
    cache: Option<Arc<Session>>,
    deps: Vec<DepInput>,
    force: bool,
    mut placing: Placing,
) -> JobEnd {
    let mut end = run_placed(job, executor, context, cache, deps, force, &mut placing).await;
    end.waited = placing.waited;
    end
}

async fn run_placed(
    job: Arc<Job>,
    executor: Arc<dyn Executor>,
    context: JobContext,
    cache: Option<Arc<Session>>,
    deps: Vec<DepInput>,
    force: bool,
    placing: &mut Placing,
) -> JobEnd {
    let uncached = |status, attempts| JobEnd {
        status,
        attempts,
        key: None,
        cache: CacheUse::Off,
        cache_reason: None,
        ran_on: Some("local"),
        waited: Duration::ZERO,
    };
    let Some(cache) = cache.filter(|_| job.needs_key) else {
        let began = Instant::now();
        let (status, tries) = placing
            .here(Arc::clone(&job), executor, context.clone())
            .await;
        context.reporter.phase(&job, "run", began, Instant::now());
        return uncached(status, tries);
    };
    // The key and, when it may hit, the restore share one trip to the blocking pool: for a cached task this
    // is all the work there is, and each trip is a hand-off between threads.
    let try_restore = job.key.cacheable && !force;
    let remote = placing
        .remote
        .clone()
        .filter(|r| job.key.cacheable && r.placement(&job) == Placement::Remote);
    let lookup_began = Instant::now();
    let computed = {
        let (cache, job, remote) = (Arc::clone(&cache), Arc::clone(&job), remote.clone());
        tokio::task::spawn_blocking(move || {
            let keyed = cache.key(&job.key, &deps)?;
            let mut notes = RestoreNotes::default();
            let restored = try_restore.then(|| cache.restore(&keyed, &job.key, &mut notes));
            // A hit's success record is written on this trip too, not by the scheduler's thread.
            let unrecorded = match &restored {
                Some(Ok(Some(hit))) => remember(&cache, &job, &keyed, hit.from_remote.is_some()),
                _ => Vec::new(),
            };
            // A miss that goes to the engine needs its action built from the inputs just hashed: on this same
            // trip, while they are in the page cache.
            let missed = !matches!(restored, Some(Ok(Some(_))) | Some(Err(_)));
            let prepared = remote
                .filter(|_| missed)
                .map(|remote| remote.prepare(&job, &keyed, cache.root()));
            Ok::<_, crate::cache::CacheError>((keyed, restored, notes, unrecorded, prepared))
        })
        .await
    };
    context
        .reporter
        .phase(&job, "cache lookup", lookup_began, Instant::now());
    let mut prepared = None;
    let (keyed, restored) = match computed {
        Ok(Ok((keyed, restored, notes, unrecorded, early))) => {
            prepared = early;
            if let Some((asked, answered)) = notes.remote {
                context
                    .reporter
                    .phase(&job, "remote cache", asked, answered);
            }
            for reason in notes.refused.into_iter().chain(unrecorded) {
                context.reporter.note(&job, &reason);
            }
            (Ok(Ok(keyed)), restored)
        }
        Ok(Err(error)) => (Ok(Err(error)), None),
        Err(error) => (Err(error), None),
    };
    let keyed = match keyed {
        Ok(Ok(keyed)) => keyed,
        Ok(Err(error)) => {
            context
                .reporter
                .note(&job, &format!("{error}; running it without the cache"));
            let (status, tries) = placing.here(job, executor, context).await;
            return uncached(status, tries);
        }
        Err(_) => {
            context.reporter.note(
                &job,
                "computing its cache key failed; running it without the cache",
            );
            let (status, tries) = placing.here(job, executor, context).await;
            return uncached(status, tries);
        }
    };
    for pattern in &keyed.unmatched {
        context
            .reporter
            .note(&job, &format!("input pattern `{pattern}` matches no file"));
    }
    if !job.key.cacheable {
        // Its key only feeds its dependents' keys; there is no result of its own to record.
        let began = Instant::now();
        let (status, tries) = placing
            .here(Arc::clone(&job), executor, context.clone())
            .await;
        context.reporter.phase(&job, "run", began, Instant::now());
        return JobEnd {
            status,
            attempts: tries,
            key: Some(keyed.key),
            cache: CacheUse::Off,
            cache_reason: None,
            ran_on: Some("local"),
            waited: Duration::ZERO,
        };
    }

    if let Some(restored) = restored {
        match restored {
            Ok(Some(restored)) => return replay(&job, &keyed, &context, restored, None),
            Ok(None) => {}
            Err(error) => context
                .reporter
                .note(&job, &format!("{error}; treating it as a miss")),
        }
    }

    // The engine's action cache is asked before the key is claimed, like the remote cache inside `restore`:
    // taking a stored result in needs no coordination, and a claim is a file to create per task.
    let mut missed = None;
    if let Some(remote) = &remote {
        match remote
            .look_up(&job, &keyed, &cache, &context, force, prepared)
            .await
        {
            Looked::End(end) => {
                let miss = || miss_reason(&cache, &job, &keyed, force);
                if let Some(end) = remote_end(&keyed, end, miss) {
                    return end;
                }
            }
            Looked::Missed(action) => missed = Some(action),
        }
    }
    // Held until the result is stored: another cairn run that wants the same key waits for it.
    let _claim = if try_restore {
        match claim(&cache, &job, &keyed, &context).await {
            Claimed::Ours(claim) => claim,
            Claimed::Theirs(end) => return end,
        }
    } else {
        None
    };
    let miss = miss_reason(&cache, &job, &keyed, force);
    if let (Some(remote), Some(missed)) = (remote, missed) {
        let end = remote.execute(&job, &keyed, &cache, &context, missed).await;
        if let Some(end) = remote_end(&keyed, end, || miss.clone()) {
            return end;
        }
    }
    let cache_reason = Some(miss);
    // Incremental tasks get only the inputs that changed since their last success, in a file and in
    // `{{changed}}`; the file lives in a private directory that goes with the run.
    let mut list_dir = None;
    let run = if job.key.incremental {
        // `--force` means "check it all again", not "run on what changed since the last success" (nothing).
        let changed = if force {
            keyed.fingerprint.inputs.keys().cloned().collect()
        } else {
            cache.changed_inputs(&job.label, &keyed)
        };
        match write_changed_list(&changed) {
            Ok((dir, file)) => {
                let run = Arc::new(job.with_changed(&changed, &file));
                list_dir = Some(dir);
                run
            }
            Err(error) => {
                context.reporter.note(
                    &job,
                    &format!("cannot write the list of changed files: {error}"),
                );
                let (status, tries) = placing.here(job, executor, context).await;
                return uncached(status, tries);
            }
        }
    } else {
        Arc::clone(&job)
    };

    let recorder = Arc::new(Capture {
        lines: Mutex::new(Vec::new()),
    });
    let recording = JobContext {
        stop: context.stop.clone(),
        reporter: Arc::new(Reporters(vec![
            Arc::clone(&recorder) as Arc<dyn Reporter>,
            Arc::clone(&context.reporter),
        ])),
    };
    let started = Instant::now();
    let (status, tries) = placing.here(run, executor, recording).await;
    context.reporter.phase(&job, "run", started, Instant::now());
    drop(list_dir);
    if status == TaskStatus::Succeeded {
        let took = started.elapsed();
        let save_began = Instant::now();
        let log = std::mem::take(&mut *recorder.lines.lock().unwrap_or_else(|e| e.into_inner()));
        // The success is recorded on the blocking pool too: it is a durable write, and the scheduler's thread
        // would hold up every other task while it waits for the disk.
        let stored = {
            let (cache, job, keyed, context) = (
                Arc::clone(&cache),
                Arc::clone(&job),
                keyed.clone(),
                context.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let saved = cache.save(&keyed, &job.label, &job.key, &log, took);
                for note in remember(&cache, &job, &keyed, false) {
                    context.reporter.note(&job, &note);
                }
                saved
            })
            .await
        };
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(error)) => context.reporter.note(&job, &format!("not cached: {error}")),
            Err(_) => context
                .reporter
                .note(&job, "not cached: storing the result failed"),
        }
        context
            .reporter
            .phase(&job, "cache store", save_began, Instant::now());
    }
    JobEnd {
        status,
        attempts: tries,
        key: Some(keyed.key),
        cache: CacheUse::Miss,
        cache_reason,
        ran_on: Some("local"),
        waited: Duration::ZERO,
    }
}

/// The end of a job the engine settled (run there, or taken from its action cache); `None` when it was sent
/// back to run here. `miss` says why the local cache could not answer.
fn remote_end(keyed: &Keyed, end: RemoteEnd, miss: impl FnOnce() -> String) -> Option<JobEnd> {
    let RemoteEnd::Done {
        status,
        cached,
        reason,
        reached,
    } = end
    else {
        return None;
    };
    // A success was recorded where it was stored (`remote::store_and_restore`).
    Some(JobEnd {
        status,
        attempts: u32::from(!cached),
        key: Some(keyed.key),
        cache: if cached {
            CacheUse::RemoteHit
        } else {
            CacheUse::Miss
        },
        cache_reason: Some(if cached {
            reason
        } else {
            format!("{}; {reason}", miss())
        }),
        ran_on: match (reached, cached) {
            (false, _) => None,
            (true, true) => Some("remote cache"),
            (true, false) => Some("remote"),
        },
        waited: Duration::ZERO,
    })
}

/// Replays a restored result: its outputs are in place; its recorded output is shown again.
fn replay(
    job: &Arc<Job>,
    keyed: &Keyed,
    context: &JobContext,
    restored: crate::cache::Restored,
    reason: Option<String>,
) -> JobEnd {
    if let Some(writer) = &restored.from_remote {
        context
            .reporter
            .note(job, &format!("fetched from the remote cache ({writer})"));
    }
    context.reporter.cache_hit(job, &keyed.key);
    for (is_stderr, line) in restored.log {
        let stream = if is_stderr {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        context.reporter.output(job, stream, &line);
    }
    JobEnd {
        status: TaskStatus::Succeeded,
        attempts: 0,
        key: Some(keyed.key),
        cache: if restored.from_remote.is_some() {
            CacheUse::RemoteHit
        } else {
            CacheUse::Hit
        },
        ran_on: restored.from_remote.as_ref().map(|_| "remote cache"),
        waited: Duration::ZERO,
        cache_reason: reason.or_else(|| {
            restored
                .from_remote
                .map(|writer| format!("remote cache, {writer}"))
        }),
    }
}

/// Whether this run runs a missed key itself, or another run did it meanwhile.
enum Claimed {
    /// Run it (holding the claim, when claims work here).
    Ours(Option<Claim>),
    /// Another cairn run produced the result while this one waited.
    Theirs(JobEnd),
}

/// How often a run waiting for another's result looks again.
const CLAIM_POLL: Duration = Duration::from_millis(50);

/// Claims `keyed`'s task for this run. When another cairn run in the repository is running the same key (an
/// editor's on-save run beside a terminal's), waits for it to end, then takes its result from the cache
/// instead of doing the work twice; if it stored none (it failed, or was killed: the kernel releases its claim),
/// runs the task here. Nothing is held while waiting, so two runs cannot wait for each other.
async fn claim(
    cache: &Arc<Session>,
    job: &Arc<Job>,
    keyed: &Keyed,
    context: &JobContext,
) -> Claimed {
    let began = Instant::now();
    let mut waited = false;
    let claim = loop {
        match cache.store().try_claim(&keyed.key) {
            Ok(Some(claim)) => break claim,
            Ok(None) => {}
            Err(error) => {
                context
                    .reporter
                    .note(job, &format!("{error}; not coordinating with other runs"));
                return Claimed::Ours(None);
            }
        }
        if !waited {
            waited = true;
            context.reporter.waiting(job);
            context.reporter.note(
                job,
                "another cairn run is running it (same key): waiting for its result",
            );
        }
        let mut stop = context.stop.clone();
        if *stop.borrow() != StopRequest::None {
            return Claimed::Ours(None);
        }
        tokio::select! {
            () = tokio::time::sleep(CLAIM_POLL) => {}
            _ = stop.changed() => {}
        }
    };
    if !waited {
        return Claimed::Ours(Some(claim));
    }
    context
        .reporter
        .phase(job, "waiting for another run", began, Instant::now());
    let again = {
        let (cache, job, keyed) = (Arc::clone(cache), Arc::clone(job), keyed.clone());
        tokio::task::spawn_blocking(move || {
            let mut notes = RestoreNotes::default();
            let restored = cache.restore(&keyed, &job.key, &mut notes);
            let unrecorded = match &restored {
                Ok(Some(hit)) => remember(&cache, &job, &keyed, hit.from_remote.is_some()),
                _ => Vec::new(),
            };
            (restored, unrecorded)
        })
        .await
    };
    match again {
        Ok((Ok(Some(restored)), unrecorded)) => {
            for note in unrecorded {
                context.reporter.note(job, &note);
            }
            Claimed::Theirs(replay(
                job,
                keyed,
                context,
                restored,
                Some("the result of a concurrent cairn run".into()),
            ))
        }
        _ => Claimed::Ours(Some(claim)),
    }
}

/// Why a cacheable task has to run: in words for the run summary, naming at most a few changes.
fn miss_reason(cache: &Session, job: &Job, keyed: &Keyed, force: bool) -> String {
    if force {
        return "forced (--force)".into();
    }
    let Some(last) = cache.last_success(&job.label) else {
        return "no earlier success recorded".into();
    };
    if last.key == keyed.key.to_string() {
        return "unchanged, but the cache no longer has its result".into();
    }
    const SHOWN: usize = 3;
    let changes = last.fingerprint.changes(&keyed.fingerprint);
    let mut reason: Vec<String> = changes
        .iter()
        .take(SHOWN)
        .map(ToString::to_string)
        .collect();
    if changes.len() > SHOWN {
        reason.push(format!("and {} more", changes.len() - SHOWN));
    }
    if reason.is_empty() {
        "its key changed".into()
    } else {
        reason.join("; ")
    }
}

/// Records a success for `cairn why` and, for incremental tasks, the inputs now known to pass; `fetched`
/// when the result came from elsewhere (its record need not be durable: see `record_fetched_success`).
/// Returns what could not be recorded, for the run's notes. Blocks on the disk: callers are on the blocking pool.
fn remember(cache: &Session, job: &Job, keyed: &Keyed, fetched: bool) -> Vec<String> {
    let mut unrecorded = Vec::new();
    if cache.is_recorded(&job.label, keyed) {
        return unrecorded;
    }
    // The incremental state first: if cairn dies before the success record, the record still names the older
    // key and both are written again next time.
    if job.key.incremental {
        if let Err(error) = cache.record_incremental(&job.label, keyed) {
            unrecorded.push(error.to_string());
        }
    }
    let recorded = if fetched {
        cache.record_fetched_success(&job.label, keyed)
    } else {
        cache.record_success(&job.label, keyed)
    };
    if let Err(error) = recorded {
        unrecorded.push(error.to_string());
    }
    unrecorded
}

/// Writes the changed files, one per line, into a new private directory; the directory is removed when the
/// returned guard is dropped.
fn write_changed_list(
    changed: &[String],
) -> std::io::Result<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::Builder::new()
        .prefix("cairn-changed-")
        .tempdir()?;
    let file = dir.path().join("changed-files");
    let mut text = changed.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    std::fs::write(&file, text)?;
    Ok((dir, file))
}
