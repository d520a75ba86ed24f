//! Remote execution: a cacheable task with declared outputs runs on a REAPI engine instead of here. Its
//! declared inputs become the action's input root, its command line the action's `Command`; the engine's
//! action cache is asked first, the result's outputs are stored in the local cache under the task's cairn key
//! and restored from there through the same checks as any hit, and its output is replayed.
//!
//! An engine that is down or refuses turns remote execution off for the rest of the run with one warning
//! (`auto`), or fails the tasks sent to it (`required`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;

use super::{Job, JobContext, StopRequest, Stream, TaskStatus};
use crate::cache::{encode_log, Entry, Keyed, OutputRecord, Session};
use crate::config::template::shell_quote;
use crate::config::ExecutionMode;
use crate::reapi::proto::{self, command, platform, ActionResult, Digest};
use crate::reapi::tree::{digest_of, Blobs, InputRoot};
use crate::reapi::{Client, Operation, ReapiError};
use crate::secrets::redact::Redactor;

/// Characters that make a pattern component a wildcard.
const META: &[char] = &['*', '?', '[', '{'];

/// How a run reaches the execution engine, resolved from `[remote_execution]`, the environment and flags.
pub struct RemoteExecutionOptions {
    /// The client (nothing is sent until the first task).
    pub client: Client,
    /// `auto` or `required` (`off` is no options at all).
    pub mode: ExecutionMode,
    /// Platform properties every action asks for.
    pub platform: Vec<(String, String)>,
    /// Remote actions in flight at once.
    pub jobs: usize,
    /// Where the one warning about an unusable engine goes.
    pub warn: Arc<dyn Fn(&str) + Send + Sync>,
}

/// Where a job runs, and why when not remotely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On the engine.
    Remote,
    /// Here, for this reason.
    Local(String),
}

/// What the engine did in one run.
#[derive(Debug, Default, Clone, Copy)]
pub struct RemoteExecutionReport {
    /// Actions the engine ran.
    pub executed: u64,
    /// Results taken from the engine's action cache.
    pub cached: u64,
    /// Blobs and bytes uploaded.
    pub uploaded_blobs: u64,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// Whether the engine failed and the run went on without it.
    pub unavailable: bool,
}

/// Remote execution as one run uses it.
pub struct RemoteExecution {
    client: Arc<Client>,
    mode: ExecutionMode,
    platform: Vec<(String, String)>,
    jobs: usize,
    slots: tokio::sync::Semaphore,
    down: AtomicBool,
    warned: AtomicBool,
    warn: Arc<dyn Fn(&str) + Send + Sync>,
    redactor: Option<Arc<Redactor>>,
    interactive: AtomicBool,
    executed: AtomicU64,
    cached: AtomicU64,
    uploaded_blobs: AtomicU64,
    uploaded_bytes: AtomicU64,
}

impl std::fmt::Debug for RemoteExecution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteExecution({})", self.client.shown())
    }
}

/// How a job sent to the engine ended, or that it should run here after all.
pub(super) enum RemoteEnd {
    /// The engine ran it, or its action cache had it.
    Done {
        /// How it ended.
        status: TaskStatus,
        /// Whether the result came from the engine's action cache.
        cached: bool,
        /// What the summary says about it.
        reason: String,
        /// Whether the engine ran it or answered for it (a failure to reach it did not).
        reached: bool,
    },
    /// Run it here (the engine is off for the run, or this job could not be sent); said to the user already.
    Local,
}

/// What the engine's action cache said about a job.
pub(super) enum Looked {
    /// Settled: a hit taken in, or the job runs here (or failed, when remote execution is required).
    End(RemoteEnd),
    /// Not there: run it on the engine with [`RemoteExecution::execute`].
    Missed(Missed),
}

impl From<Result<Missed, RemoteEnd>> for Looked {
    fn from(looked: Result<Missed, RemoteEnd>) -> Looked {
        looked.map_or_else(Looked::End, Looked::Missed)
    }
}

/// A job's action built ahead of asking the engine, and when that was done (for the run record's phases).
pub(super) struct Early {
    action: Result<Prepared, ReapiError>,
    began: Instant,
    ended: Instant,
}

/// An action the engine's cache did not have, ready to upload and execute.
pub(super) struct Missed {
    action: Prepared,
    /// A failure the engine kept was found, or the cache was not asked: Execute must not answer from it.
    skip_cache_lookup: bool,
}

impl RemoteExecution {
    /// Remote execution for a run; `interactive` (one task attached to the terminal) keeps everything here.
    pub fn new(
        options: RemoteExecutionOptions,
        redactor: Option<Arc<Redactor>>,
        interactive: bool,
    ) -> RemoteExecution {
        RemoteExecution {
            client: Arc::new(options.client),
            mode: options.mode,
            platform: options.platform,
            jobs: options.jobs.max(1),
            slots: tokio::sync::Semaphore::new(options.jobs.max(1)),
            down: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            warn: options.warn,
            redactor,
            interactive: AtomicBool::new(interactive),
            executed: AtomicU64::new(0),
            cached: AtomicU64::new(0),
            uploaded_blobs: AtomicU64::new(0),
            uploaded_bytes: AtomicU64::new(0),
        }
    }

    /// Keeps every task here: the run turned out to be one task attached to the terminal.
    pub fn set_interactive(&self) {
        self.interactive.store(true, Ordering::Relaxed);
    }

    /// Remote actions in flight at once.
    pub fn jobs(&self) -> usize {
        self.jobs
    }

    /// The engine's URL.
    pub fn shown_url(&self) -> &str {
        self.client.shown()
    }

    /// What the engine did so far.
    pub fn report(&self) -> RemoteExecutionReport {
        RemoteExecutionReport {
            executed: self.executed.load(Ordering::Relaxed),
            cached: self.cached.load(Ordering::Relaxed),
            uploaded_blobs: self.uploaded_blobs.load(Ordering::Relaxed),
            uploaded_bytes: self.uploaded_bytes.load(Ordering::Relaxed),
            unavailable: self.down.load(Ordering::Relaxed),
        }
    }

    /// Where `job` runs in this run, and why.
    pub fn placement(&self, job: &Job) -> Placement {
        if self.interactive.load(Ordering::Relaxed) {
            return Placement::Local("it runs alone, attached to the terminal".into());
        }
        placement(job)
    }

    /// Builds `job`'s action (input root, command, action) from the inputs `keyed` was computed from; blocking.
    pub(super) fn prepare(&self, job: &Job, keyed: &Keyed, root: &std::path::Path) -> Early {
        let began = Instant::now();
        let action = prepare(job, keyed, root, &self.platform);
        Early {
            action,
            began,
            ended: Instant::now(),
        }
    }

    /// Whether the engine is still in use for this run.
    fn usable(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    /// Handles an error of the engine: in `auto`, an engine-wide failure turns remote execution off (warning
    /// once) and any failure sends the job back here; in `required`, the job fails.
    fn failed(&self, job: &Job, context: &JobContext, error: &ReapiError) -> RemoteEnd {
        let engine_down = error.is_engine_down();
        if self.mode == ExecutionMode::Required {
            context.reporter.note(
                job,
                &format!("remote execution is required and failed: {error}"),
            );
            return RemoteEnd::Done {
                status: TaskStatus::Failed { code: 1 },
                cached: false,
                reason: format!("remote execution failed: {error}"),
                reached: false,
            };
        }
        if engine_down {
            self.down.store(true, Ordering::Relaxed);
            if !self.warned.swap(true, Ordering::Relaxed) {
                (self.warn)(&format!(
                    "the execution engine at {} is not usable: {error}; running the remaining tasks here",
                    self.client.shown()
                ));
            }
        } else {
            context
                .reporter
                .note(job, &format!("not run remotely ({error}); running it here"));
        }
        RemoteEnd::Local
    }

    /// Builds `job`'s action and asks the engine's action cache for it: a hit is stored in the local cache
    /// under `keyed` and restored; a miss comes back ready for [`RemoteExecution::execute`]. `force` skips
    /// the engine's cache. Needs no claim on the key: like a fetch from the remote cache, two runs taking the
    /// same result in write the same files atomically.
    pub(super) async fn look_up(
        self: &Arc<Self>,
        job: &Arc<Job>,
        keyed: &Keyed,
        cache: &Arc<Session>,
        context: &JobContext,
        force: bool,
        early: Option<Early>,
    ) -> Looked {
        if !self.usable() {
            return Looked::End(RemoteEnd::Local);
        }
        let Ok(_slot) = self.slots.acquire().await else {
            return Looked::End(RemoteEnd::Local);
        };
        if !self.usable() {
            return Looked::End(RemoteEnd::Local);
        }
        Looked::from(
            self.look_up_holding_slot(job, keyed, cache, context, force, early)
                .await,
        )
    }

    async fn look_up_holding_slot(
        self: &Arc<Self>,
        job: &Arc<Job>,
        keyed: &Keyed,
        cache: &Arc<Session>,
        context: &JobContext,
        force: bool,
        early: Option<Early>,
    ) -> Result<Missed, RemoteEnd> {
        // Asked once per run (the client keeps the answer): an engine that cannot run cairn's actions is off.
        match self.client.capabilities().await {
            Ok(limits) if !limits.exec_enabled => {
                let error = ReapiError::Unsupported(
                    "the server does not execute actions (a cache-only server: name it in [remote_cache] url instead)"
                        .into(),
                );
                return Err(self.failed(job, context, &error));
            }
            Ok(limits) if !limits.sha256 => {
                let error = ReapiError::Unsupported(
                    "the server does not accept SHA-256 digests, the only function cairn uses"
                        .into(),
                );
                return Err(self.failed(job, context, &error));
            }
            Ok(_) => {}
            Err(error) => return Err(self.failed(job, context, &error)),
        }
        // The input root: every declared input, digested (and checked against the key) on the blocking pool,
        // usually already on the cache lookup's trip there.
        let early = match early {
            Some(early) => early,
            None => {
                let (remote, owned_job, keyed, root) = (
                    Arc::clone(self),
                    Arc::clone(job),
                    keyed.clone(),
                    cache.root().to_owned(),
                );
                match tokio::task::spawn_blocking(move || remote.prepare(&owned_job, &keyed, &root))
                    .await
                {
                    Ok(early) => early,
                    Err(_) => {
                        return Err(self.failed(
                            job,
                            context,
                            &ReapiError::Protocol("preparing the action failed".into()),
                        ))
                    }
                }
            }
        };
        context
            .reporter
            .phase(job, "remote prepare", early.began, early.ended);
        let action = match early.action {
            Ok(action) => action,
            Err(error) => return Err(self.failed(job, context, &error)),
        };

        // The engine's action cache first.
        let shareable = job.key.remote != crate::config::RemoteMode::Off;
        let mut skip_cache_lookup = force || !shareable;
        if !skip_cache_lookup {
            let asked = Instant::now();
            let inline = action.output_paths.clone();
            match self
                .client
                .get_action_result(action.digest.clone(), inline)
                .await
            {
                Ok(Some(result)) if result.exit_code == 0 => {
                    context
                        .reporter
                        .phase(job, "remote cache", asked, Instant::now());
                    return Err(
                        match self
                            .finish(job, keyed, cache, context, &action, result, true)
                            .await
                        {
                            Ok(end) => end,
                            Err(error) => self.failed(job, context, &error),
                        },
                    );
                }
                // A failure the engine kept is not a result to reuse: run it again.
                Ok(Some(_)) => skip_cache_lookup = true,
                Ok(None) => {}
                Err(error) => return Err(self.failed(job, context, &error)),
            }
            context
                .reporter
                .phase(job, "remote cache", asked, Instant::now());
        }

        Ok(Missed {
            action,
            skip_cache_lookup,
        })
    }

    /// Uploads a missed action's inputs, runs it on the engine, stores the result in the local cache under
    /// `keyed` and restores it.
    pub(super) async fn execute(
        self: &Arc<Self>,
        job: &Arc<Job>,
        keyed: &Keyed,
        cache: &Arc<Session>,
        context: &JobContext,
        missed: Missed,
    ) -> RemoteEnd {
        if !self.usable() {
            return RemoteEnd::Local;
        }
        let Ok(_slot) = self.slots.acquire().await else {
            return RemoteEnd::Local;
        };
        if !self.usable() {
            return RemoteEnd::Local;
        }
        let Missed {
            action,
            skip_cache_lookup,
        } = missed;
        context.reporter.started(job, 1);
        let upload_began = Instant::now();
        match self.client.upload_missing(Arc::clone(&action.blobs)).await {
            Ok((blobs, bytes)) => {
                self.uploaded_blobs.fetch_add(blobs, Ordering::Relaxed);
                self.uploaded_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Err(error) => return self.failed(job, context, &error),
        }
        let execute_began = Instant::now();
        context
            .reporter
            .phase(job, "remote upload", upload_began, execute_began);

        let operation = Operation::default();
        let mut stop = context.stop.clone();
        if *stop.borrow() != StopRequest::None {
            return interrupted();
        }
        let execution =
            self.client
                .execute(action.digest.clone(), skip_cache_lookup, operation.clone());
        let finished = tokio::select! {
            finished = execution => finished,
            _ = stop.changed() => {
                if let Some(name) = operation.name() {
                    let _ = self.client.cancel(name).await;
                }
                return interrupted();
            }
        };
        let finished = match finished {
            Ok(finished) => finished,
            Err(error) => return self.failed(job, context, &error),
        };
        let ended = Instant::now();
        match finished.executing_since {
            Some(since) => {
                context
                    .reporter
                    .phase(job, "remote queue", execute_began, since);
                context.reporter.phase(job, "remote execute", since, ended);
            }
            None => context
                .reporter
                .phase(job, "remote execute", execute_began, ended),
        }
        let response = finished.response;
        // The engine's own time for the action (its worker, sandbox set-up included): what is left of the
        // execute phase around it is the queue and the wire.
        if let Some(worker) = response
            .result
            .as_ref()
            .and_then(|r| r.execution_metadata.as_ref())
            .and_then(worker_time)
        {
            let began = ended
                .checked_sub(worker)
                .unwrap_or(execute_began)
                .max(execute_began);
            context.reporter.phase(job, "remote worker", began, ended);
        }
        let status = response.status.unwrap_or_default();
        if status.code == tonic::Code::DeadlineExceeded as i32 {
            if let Some(result) = &response.result {
                self.replay(job, context, result, &HashMap::new()).await;
            }
            return RemoteEnd::Done {
                status: TaskStatus::TimedOut {
                    after: job.timeout.unwrap_or_default(),
                },
                cached: false,
                reason: format!("ran remotely on {}", self.client.shown()),
                reached: true,
            };
        }
        if status.code != 0 {
            let error = ReapiError::Status {
                call: "Execute",
                code: tonic::Code::from(status.code),
                message: status.message,
            };
            return self.failed(job, context, &error);
        }
        let Some(result) = response.result else {
            return self.failed(
                job,
                context,
                &ReapiError::Protocol("an Execute answer without a result".into()),
            );
        };
        self.executed.fetch_add(1, Ordering::Relaxed);
        match self
            .finish(
                job,
                keyed,
                cache,
                context,
                &action,
                result,
                response.cached_result,
            )
            .await
        {
            Ok(end) => end,
            Err(error) => self.failed(job, context, &error),
        }
    }

    /// Takes a result in: its outputs into the local cache and the tree (a success only), its output replayed.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        job: &Arc<Job>,
        keyed: &Keyed,
        cache: &Arc<Session>,
        context: &JobContext,
        action: &Prepared,
        result: ActionResult,
        cached: bool,
    ) -> Result<RemoteEnd, ReapiError> {
        let download_began = Instant::now();
        let outputs = self.collect_outputs(job, action, &result).await?;
        // Small files the engine sent inline, each checked against its digest like any download.
        let mut inline: HashMap<String, Vec<u8>> = HashMap::new();
        for file in &result.output_files {
            if let (Some(digest), false) = (&file.digest, file.contents.is_empty()) {
                let sent = digest_of(&file.contents);
                if sent.hash != digest.hash || sent.size_bytes != digest.size_bytes {
                    return Err(ReapiError::Protocol(format!(
                        "the inline content of `{}` does not match its digest",
                        file.path
                    )));
                }
                inline.insert(digest.hash.clone(), file.contents.clone());
            }
        }
        let mut wanted: Vec<Digest> = outputs
            .iter()
            .filter_map(|o| match &o.content {
                Content::File { digest, .. } if !inline.contains_key(&digest.hash) => {
                    Some(digest.clone())
                }
                Content::File { .. } | Content::Link { .. } => None,
            })
            .collect();
        wanted.extend(
            result
                .stdout_digest
                .clone()
                .filter(|_| result.stdout_raw.is_empty()),
        );
        wanted.extend(
            result
                .stderr_digest
                .clone()
                .filter(|_| result.stderr_raw.is_empty()),
        );
        let mut blobs = self.client.read_blobs(wanted).await?;
        blobs.extend(inline);
        context
            .reporter
            .phase(job, "remote download", download_began, Instant::now());
        let reason = if cached {
            self.cached.fetch_add(1, Ordering::Relaxed);
            format!("the engine's action cache ({})", self.client.shown())
        } else {
            format!("ran remotely on {}", self.client.shown())
        };
        if result.exit_code != 0 {
            self.replay(job, context, &result, &blobs).await;
            return Ok(RemoteEnd::Done {
                status: TaskStatus::Failed {
                    code: result.exit_code,
                },
                cached,
                reason,
                reached: true,
            });
        }
        let log = log_lines(&result, &blobs, self.redactor.as_deref());
        let took = result
            .execution_metadata
            .as_ref()
            .and_then(|m| {
                Some(
                    timestamp(m.worker_completed_timestamp.as_ref()?)?
                        - timestamp(m.worker_start_timestamp.as_ref()?)?,
                )
            })
            .map_or(Duration::ZERO, |nanos| {
                Duration::from_nanos(nanos.max(0) as u64)
            });
        let store_began = Instant::now();
        let restored = {
            let (cache, job, keyed) = (Arc::clone(cache), Arc::clone(job), keyed.clone());
            tokio::task::spawn_blocking(move || {
                store_and_restore(&cache, &job, &keyed, &outputs, &blobs, &log, took)
            })
            .await
            .map_err(|_| ReapiError::Protocol("storing the result failed".into()))?
        };
        let (restored, refused) = restored?;
        for reason in refused {
            context.reporter.note(job, &reason);
        }
        context
            .reporter
            .phase(job, "cache store", store_began, Instant::now());
        if cached {
            context.reporter.cache_hit(job, &keyed.key);
        }
        for (is_stderr, line) in restored {
            let stream = if is_stderr {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            context.reporter.output(job, stream, &line);
        }
        Ok(RemoteEnd::Done {
            status: TaskStatus::Succeeded,
            cached,
            reason,
            reached: true,
        })
    }

    /// The result's outputs as files and links relative to the repository root (directories expanded from
    /// their `Tree`), keeping only paths the task declares as outputs.
    async fn collect_outputs(
        &self,
        job: &Job,
        action: &Prepared,
        result: &ActionResult,
    ) -> Result<Vec<Output>, ReapiError> {
        let under = |path: &str| -> Result<String, ReapiError> {
            let clean = path.trim_start_matches("./");
            if clean.is_empty()
                || clean.starts_with('/')
                || clean.split('/').any(|c| c == ".." || c.is_empty())
            {
                return Err(ReapiError::Protocol(format!(
                    "the output path `{path}` is not a plain relative path"
                )));
            }
            Ok(if action.work_dir.is_empty() {
                clean.to_owned()
            } else {
                format!("{}/{clean}", action.work_dir)
            })
        };
        let mut outputs = Vec::new();
        for file in &result.output_files {
            let digest = file
                .digest
                .clone()
                .ok_or_else(|| ReapiError::Protocol("an output file without a digest".into()))?;
            outputs.push(Output {
                path: under(&file.path)?,
                content: Content::File {
                    digest,
                    executable: file.is_executable,
                },
            });
        }
        // Engines before REAPI 2.1 report links in the older fields only.
        #[allow(deprecated)]
        let older_links = result
            .output_file_symlinks
            .iter()
            .chain(&result.output_directory_symlinks);
        for link in result.output_symlinks.iter().chain(older_links) {
            outputs.push(Output {
                path: under(&link.path)?,
                content: Content::Link {
                    target: link.target.clone(),
                },
            });
        }
        let trees: Vec<Digest> = result
            .output_directories
            .iter()
            .filter_map(|d| d.tree_digest.clone())
            .collect();
        if !trees.is_empty() {
            let blobs = self.client.read_blobs(trees).await?;
            for directory in &result.output_directories {
                let Some(digest) = &directory.tree_digest else {
                    continue;
                };
                let bytes = blobs.get(&digest.hash).ok_or_else(|| {
                    ReapiError::Protocol(format!("the tree of `{}` is missing", directory.path))
                })?;
                let tree = proto::Tree::decode(bytes.as_slice()).map_err(|e| {
                    ReapiError::Protocol(format!(
                        "the tree of `{}` does not decode: {e}",
                        directory.path
                    ))
                })?;
                let base = under(&directory.path)?;
                expand_tree(&tree, &base, &mut outputs)?;
            }
        }
        // Only what the task declares: an engine's extra files (a directory output's neighbours) stay behind.
        outputs.retain(|o| job.key.outputs.matches_path(&o.path));
        Ok(outputs)
    }

    /// Shows a failed (or timed-out) result's output.
    async fn replay(
        &self,
        job: &Job,
        context: &JobContext,
        result: &ActionResult,
        blobs: &HashMap<String, Vec<u8>>,
    ) {
        let mut blobs = blobs.clone();
        let missing: Vec<Digest> = [&result.stdout_digest, &result.stderr_digest]
            .into_iter()
            .flatten()
            .filter(|d| !blobs.contains_key(&d.hash))
            .cloned()
            .collect();
        if !missing.is_empty() {
            if let Ok(more) = self.client.read_blobs(missing).await {
                blobs.extend(more);
            }
        }
        for (is_stderr, line) in log_lines(result, &blobs, self.redactor.as_deref()) {
            let stream = if is_stderr {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            context.reporter.output(job, stream, &line);
        }
    }
}

fn interrupted() -> RemoteEnd {
    RemoteEnd::Done {
        status: TaskStatus::Interrupted,
        cached: false,
        reason: "interrupted; the remote operation was cancelled".into(),
        reached: true,
    }
}

/// How long the engine's worker had the action, by the engine's own clock.
fn worker_time(metadata: &proto::ExecutedActionMetadata) -> Option<Duration> {
    let nanos = timestamp(metadata.worker_completed_timestamp.as_ref()?)?
        - timestamp(metadata.worker_start_timestamp.as_ref()?)?;
    u64::try_from(nanos).ok().map(Duration::from_nanos)
}

/// Nanoseconds since the epoch of a protobuf timestamp.
fn timestamp(t: &bazel_remote_apis::google::protobuf::Timestamp) -> Option<i128> {
    Some(i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos))
}

/// Where `job` may run, whatever the run's settings: remote only for what the engine can do alone and what
/// may leave this machine.
pub fn placement(job: &Job) -> Placement {
    let local = |reason: &str| Placement::Local(reason.to_owned());
    if job.remote_execution == Some(false) {
        return local("remote_execution = false");
    }
    if job.plugin.is_some() {
        return local("a plugin runs it");
    }
    if job.executor.is_some() {
        return local("a plugin executor rewrites its commands");
    }
    if job.commands.is_empty() {
        return local("it has no commands");
    }
    if !job.key.cacheable {
        return local("it is not cacheable (no inputs, or cache = false)");
    }
    if job.key.output_globs.is_empty() {
        return local("it declares no outputs");
    }
    if job.protected {
        return local("it is protected");
    }
    if job.service {
        return local("it is a service");
    }
    if job.key.incremental {
        return local("it is incremental (its list of changed files is here)");
    }
    if job.lock.is_some() {
        return local("it holds a lock");
    }
    if job.check.is_some() || job.rollback.is_some() {
        return local("it has a health check or a rollback");
    }
    if let Some(secrets) = &job.secrets {
        if job.remote_execution != Some(true) {
            return local(
                "it reads secrets, which would travel to the engine (remote_execution = true sends them)",
            );
        }
        if !secrets.files.is_empty() {
            return local("its secrets are files, which cannot be sent");
        }
    }
    if let Err(reason) = output_paths(job) {
        return Placement::Local(reason);
    }
    Placement::Remote
}

/// The task's working directory relative to the repository root (`""` for the root).
fn work_dir(job: &Job) -> String {
    let dir = job.key.dir.trim_matches('/');
    if dir == "." {
        String::new()
    } else {
        dir.trim_start_matches("./").to_owned()
    }
}

/// The action's `output_paths`, relative to the working directory: each output pattern's fixed part (a file,
/// or the directory a wildcard is in), sorted and without duplicates.
fn output_paths(job: &Job) -> Result<Vec<String>, String> {
    let dir = work_dir(job);
    let mut paths = Vec::new();
    for pattern in &job.key.output_globs {
        if pattern.starts_with('!') {
            continue;
        }
        let fixed: Vec<&str> = pattern
            .split('/')
            .take_while(|c| !c.contains(META) && !c.contains('\\'))
            .collect();
        let fixed = fixed.join("/");
        let relative = if dir.is_empty() {
            Some(fixed.as_str())
        } else {
            fixed.strip_prefix(&format!("{dir}/"))
        };
        match relative {
            Some(path) if !path.is_empty() => paths.push(path.to_owned()),
            _ => {
                return Err(format!(
                    "its output `{pattern}` has no fixed directory inside its dir"
                ))
            }
        }
    }
    paths.sort();
    paths.dedup();
    // A path inside another is already brought back with it.
    let mut kept: Vec<String> = Vec::new();
    for path in paths {
        if !kept.iter().any(|k| path.starts_with(&format!("{k}/"))) {
            kept.push(path);
        }
    }
    Ok(kept)
}

/// An action ready to send.
struct Prepared {
    digest: Digest,
    blobs: Arc<Blobs>,
    work_dir: String,
    /// The action's output paths (the engine may send small output files of a cached result inline).
    output_paths: Vec<String>,
}

/// Builds the input root, `Command` and `Action` of `job`.
fn prepare(
    job: &Job,
    keyed: &Keyed,
    root: &std::path::Path,
    run_platform: &[(String, String)],
) -> Result<Prepared, ReapiError> {
    let mut blobs = Blobs::default();
    let mut tree = InputRoot::new();
    let dir = work_dir(job);
    tree.add_dir(&dir);
    for (path, digest) in &keyed.fingerprint.inputs {
        tree.add_file(root, path, Some(&digest.hash), &mut blobs)?;
    }
    let input_root = tree.finish(&mut blobs);

    let arguments = arguments(job);
    let mut environment: BTreeMap<String, String> = job
        .env
        .iter()
        .filter(|(name, _)| {
            job.key.env.contains_key(name) || (name.starts_with("CAIRN_") && name != "CAIRN")
        })
        .cloned()
        .collect();
    if let Some(injection) = &job.injection {
        for (name, value) in &injection.env {
            environment.insert(name.clone(), value.to_string());
        }
    }
    let mut properties: BTreeMap<String, String> = run_platform.iter().cloned().collect();
    properties.extend(job.platform.iter().cloned());
    let platform = (!properties.is_empty()).then(|| proto::Platform {
        properties: properties
            .into_iter()
            .map(|(name, value)| platform::Property { name, value })
            .collect(),
    });
    let output_paths = output_paths(job).map_err(ReapiError::Protocol)?;
    let inline_paths = output_paths.clone();
    // The platform goes in the `Command` too: engines before REAPI 2.2 read it only there.
    #[allow(deprecated)]
    let command = proto::Command {
        arguments,
        environment_variables: environment
            .into_iter()
            .map(|(name, value)| command::EnvironmentVariable { name, value })
            .collect(),
        output_paths,
        platform: platform.clone(),
        working_directory: dir.clone(),
        ..Default::default()
    };
    let command_digest = blobs.add_message(&command);
    let action = proto::Action {
        command_digest: Some(command_digest),
        input_root_digest: Some(input_root),
        timeout: job
            .timeout
            .map(|t| bazel_remote_apis::google::protobuf::Duration {
                seconds: t.as_secs() as i64,
                nanos: t.subsec_nanos() as i32,
            }),
        // A task whose results stay on this machine (`remote = false`, or its secrets) must not leave one in
        // the engine's cache for others either.
        do_not_cache: job.key.remote == crate::config::RemoteMode::Off,
        salt: Vec::new(),
        platform,
    };
    let digest = blobs.add_message(&action);
    Ok(Prepared {
        digest,
        blobs: Arc::new(blobs),
        work_dir: dir,
        output_paths: inline_paths,
    })
}

/// The argv of the action: the task's shell and its line, as a local run does; several lines run in order
/// through `sh`, each in the task's shell, stopping at the first that fails (with its exit code).
fn arguments(job: &Job) -> Vec<String> {
    let shell: Vec<String> = job.shell.to_vec();
    if let [line] = job.commands.as_slice() {
        let mut argv = shell;
        argv.push(line.clone());
        return argv;
    }
    let script = job
        .commands
        .iter()
        .map(|line| {
            shell
                .iter()
                .chain(std::iter::once(line))
                .map(|word| shell_quote(word))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join(" && ");
    vec!["sh".into(), "-c".into(), script]
}

/// An output of a result.
struct Output {
    path: String,
    content: Content,
}

enum Content {
    File { digest: Digest, executable: bool },
    Link { target: String },
}

/// Adds the files and links of an output directory's `Tree` under `base`.
fn expand_tree(
    tree: &proto::Tree,
    base: &str,
    outputs: &mut Vec<Output>,
) -> Result<(), ReapiError> {
    let children: HashMap<String, &proto::Directory> = tree
        .children
        .iter()
        .map(|child| (digest_of(&child.encode_to_vec()).hash, child))
        .collect();
    let root = tree
        .root
        .as_ref()
        .ok_or_else(|| ReapiError::Protocol("a tree without a root".into()))?;
    let mut stack = vec![(base.to_owned(), root, 0usize)];
    while let Some((path, directory, depth)) = stack.pop() {
        if depth > 256 {
            return Err(ReapiError::Protocol(
                "an output tree nested too deep".into(),
            ));
        }
        let checked = |name: &str| {
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                Err(ReapiError::Protocol(format!("an output named `{name}`")))
            } else {
                Ok(())
            }
        };
        for file in &directory.files {
            checked(&file.name)?;
            outputs.push(Output {
                path: format!("{path}/{}", file.name),
                content: Content::File {
                    digest: file.digest.clone().unwrap_or_default(),
                    executable: file.is_executable,
                },
            });
        }
        for link in &directory.symlinks {
            checked(&link.name)?;
            outputs.push(Output {
                path: format!("{path}/{}", link.name),
                content: Content::Link {
                    target: link.target.clone(),
                },
            });
        }
        for child in &directory.directories {
            checked(&child.name)?;
            let digest = child
                .digest
                .as_ref()
                .map(|d| d.hash.clone())
                .unwrap_or_default();
            let found = children.get(&digest).ok_or_else(|| {
                ReapiError::Protocol(format!("the tree lacks the directory `{}`", child.name))
            })?;
            stack.push((format!("{path}/{}", child.name), found, depth + 1));
        }
    }
    Ok(())
}

/// The result's stdout and stderr as recorded lines (stdout's first: the engine keeps them apart), redacted.
fn log_lines(
    result: &ActionResult,
    blobs: &HashMap<String, Vec<u8>>,
    redactor: Option<&Redactor>,
) -> Vec<(bool, Vec<u8>)> {
    let text = |raw: &Vec<u8>, digest: &Option<Digest>| -> Vec<u8> {
        if !raw.is_empty() {
            return raw.clone();
        }
        digest
            .as_ref()
            .and_then(|d| blobs.get(&d.hash).cloned())
            .unwrap_or_default()
    };
    let mut lines = Vec::new();
    for (is_stderr, bytes) in [
        (false, text(&result.stdout_raw, &result.stdout_digest)),
        (true, text(&result.stderr_raw, &result.stderr_digest)),
    ] {
        let bytes = match redactor {
            Some(redactor) => redactor.redact(&bytes).into_owned(),
            None => bytes,
        };
        let mut rest: &[u8] = &bytes;
        while !rest.is_empty() {
            let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            lines.push((is_stderr, rest[..end].to_vec()));
            rest = rest.get(end + 1..).unwrap_or_default();
        }
    }
    lines
}

/// Stores a successful result as a local cache entry under the task's key, then restores it into the tree
/// through the cache's own checks (declared outputs only, no writes through links, links that stay inside).
/// Returns the output to replay, and what the restore refused.
fn store_and_restore(
    cache: &Session,
    job: &Job,
    keyed: &Keyed,
    outputs: &[Output],
    blobs: &HashMap<String, Vec<u8>>,
    log: &[(bool, Vec<u8>)],
    took: Duration,
) -> Result<(crate::cache::LogLines, Vec<String>), ReapiError> {
    let store = cache.store();
    let cache_error = |e: crate::cache::CacheError| ReapiError::Protocol(e.to_string());
    let mut records = Vec::with_capacity(outputs.len());
    let mut budget = crate::cache::INLINE_OUTPUTS_TOTAL_MAX;
    for output in outputs {
        records.push(match &output.content {
            Content::File { digest, executable } => {
                let bytes = blobs.get(&digest.hash).ok_or_else(|| {
                    ReapiError::Protocol(format!("the content of `{}` was not sent", output.path))
                })?;
                // Small files stay in the manifest; larger blobs are not waited onto the disk: the engine keeps
                // the result, and a torn blob is found and refetched.
                let (blob, inline) = crate::cache::place_fetched_output(store, bytes, &mut budget)
                    .map_err(cache_error)?;
                OutputRecord {
                    path: output.path.clone(),
                    blob: Some(blob),
                    target: None,
                    size: bytes.len() as u64,
                    mode: if *executable { 0o755 } else { 0o644 },
                    inline,
                }
            }
            Content::Link { target } => OutputRecord {
                path: output.path.clone(),
                blob: None,
                target: Some(target.clone()),
                size: 0,
                mode: 0o777,
                inline: None,
            },
        });
    }
    let (log_blob, log_inline) =
        crate::cache::place_fetched_log(store, &encode_log(log)).map_err(cache_error)?;
    let entry = Entry {
        key: keyed.key.to_string(),
        task: job.label.clone(),
        created: crate::time::unix_now(),
        duration_ms: took.as_millis() as u64,
        outputs: records,
        log: log_blob,
        log_inline,
        // The success record keeps the fingerprint for `cairn why`, as for entries fetched from a remote cache:
        // a blob of it here would be one more file to create per result.
        fingerprint: None,
        signed_by: None,
    };
    store
        .save_fetched_entry(&keyed.key, &entry, &keyed.fingerprint)
        .map_err(cache_error)?;
    let mut refused = Vec::new();
    match cache.restore_stored(&entry, &job.key) {
        Ok(log) => {
            // Recorded here, on the blocking pool, rather than by the scheduler: a write per task there holds up
            // every other task's progress.
            if !cache.is_recorded(&job.label, keyed) {
                if let Err(error) = cache.record_fetched_success(&job.label, keyed) {
                    refused.push(error.to_string());
                }
            }
            Ok((log, refused))
        }
        Err(error) => Err(ReapiError::Protocol(format!(
            "the engine's result cannot be restored: {error}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_with(outputs: &[&str], dir: &str) -> Job {
        let mut job = super::super::job::test_job("t");
        job.commands = vec!["true".into()];
        job.key.cacheable = true;
        job.key.remote = crate::config::RemoteMode::ReadWrite;
        job.key.dir = dir.into();
        job.key.output_globs = outputs.iter().map(|s| (*s).to_owned()).collect();
        job
    }

    #[test]
    fn output_patterns_become_their_fixed_paths_relative_to_the_working_directory() {
        let job = job_with(
            &["dist/**", "out/report.txt", "dist/sub/*.js", "!dist/tmp/**"],
            ".",
        );
        assert_eq!(output_paths(&job).unwrap(), vec!["dist", "out/report.txt"]);
        let job = job_with(&["pkg/a/build/**"], "pkg/a");
        assert_eq!(output_paths(&job).unwrap(), vec!["build"]);
    }

    #[test]
    fn an_output_without_a_fixed_directory_keeps_the_task_here() {
        let job = job_with(&["**/*.o"], ".");
        assert!(
            matches!(placement(&job), Placement::Local(reason) if reason.contains("no fixed directory"))
        );
        let job = job_with(&["other/x"], "pkg");
        assert!(matches!(placement(&job), Placement::Local(_)));
    }

    #[test]
    fn tasks_with_secrets_stay_here_unless_they_say_otherwise() {
        let mut job = job_with(&["out/x"], ".");
        assert_eq!(placement(&job), Placement::Remote);
        job.secrets = Some(super::super::SecretsRequest {
            file: "s.yaml".into(),
            relative: "s.yaml".into(),
            span: 0..0,
            env: vec![("TOKEN".into(), "token".into())],
            files: vec![],
            environment: None,
            allow_envs: vec![],
        });
        assert!(matches!(placement(&job), Placement::Local(reason) if reason.contains("secrets")));
        job.remote_execution = Some(true);
        assert_eq!(placement(&job), Placement::Remote);
    }

    #[test]
    fn several_lines_run_in_order_and_stop_at_the_first_failure() {
        let mut job = job_with(&["out/x"], ".");
        job.shell = Arc::from(vec!["bash".to_owned(), "-c".to_owned()]);
        job.commands = vec!["echo one".into(), "false".into(), "echo never".into()];
        let argv = arguments(&job);
        let status = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&status.stdout), "one\n");
        assert_eq!(status.status.code(), Some(1));
    }

    #[test]
    fn the_tasks_platform_adds_to_and_overrides_the_runs_and_unshared_results_are_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let mut job = job_with(&["out/x"], ".");
        job.platform = vec![
            ("OSFamily".into(), "linux".into()),
            ("pool".into(), "big".into()),
        ];
        let keyed = Keyed {
            fingerprint: crate::cache::Fingerprint {
                version: 1,
                platform: String::new(),
                task: "t".into(),
                params: Default::default(),
                commands: vec![],
                shell: vec![],
                dir: ".".into(),
                args: vec![],
                outputs: vec![],
                input_globs: vec![],
                env: Default::default(),
                inputs: Default::default(),
                deps: Default::default(),
            },
            key: crate::cache::Key([0; 32]),
            unmatched: vec![],
        };
        let run = [
            ("OSFamily".to_owned(), "Linux".to_owned()),
            ("arch".to_owned(), "x86_64".to_owned()),
        ];
        let decode = |prepared: &Prepared| {
            let action_bytes = match prepared.blobs.source(&prepared.digest.hash) {
                Some(crate::reapi::tree::BlobSource::Bytes(b)) => b.clone(),
                _ => panic!("the action is in memory"),
            };
            let action = proto::Action::decode(action_bytes.as_slice()).unwrap();
            let command_digest = action.command_digest.clone().unwrap();
            let command_bytes = match prepared.blobs.source(&command_digest.hash) {
                Some(crate::reapi::tree::BlobSource::Bytes(b)) => b.clone(),
                _ => panic!("the command is in memory"),
            };
            (
                action,
                proto::Command::decode(command_bytes.as_slice()).unwrap(),
            )
        };
        let (action, command) = decode(&prepare(&job, &keyed, dir.path(), &run).unwrap());
        let properties: Vec<(String, String)> = action
            .platform
            .unwrap()
            .properties
            .into_iter()
            .map(|p| (p.name, p.value))
            .collect();
        assert_eq!(
            properties,
            vec![
                ("OSFamily".to_owned(), "linux".to_owned()),
                ("arch".to_owned(), "x86_64".to_owned()),
                ("pool".to_owned(), "big".to_owned())
            ]
        );
        assert_eq!(command.output_paths, vec!["out/x"]);
        assert!(!action.do_not_cache);
        job.key.remote = crate::config::RemoteMode::Off;
        let (action, _) = decode(&prepare(&job, &keyed, dir.path(), &run).unwrap());
        assert!(action.do_not_cache);
    }

    #[test]
    fn log_lines_keep_streams_apart_and_drop_only_the_final_newline() {
        let result = ActionResult {
            stdout_raw: b"a\n\nb".to_vec(),
            stderr_raw: b"e\n".to_vec(),
            ..Default::default()
        };
        let lines = log_lines(&result, &HashMap::new(), None);
        assert_eq!(
            lines,
            vec![
                (false, b"a".to_vec()),
                (false, b"".to_vec()),
                (false, b"b".to_vec()),
                (true, b"e".to_vec())
            ]
        );
    }
}
