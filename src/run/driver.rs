//! One run, from a plan to its report: the plugins it may load, the secrets it decrypts, the cache session and
//! the remote cache, the scheduler, signals, the audit log and the run events plugins receive. Whoever starts a
//! run (the CLI today; watch mode and remote execution next) resolves its options, shows what happens through
//! a [`Reporter`] and records the outcome; everything in between is here, once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::events::{now_ms, EventReporter, EventSinks};
use super::plugins::Plugins;
use super::remote::{Placement, RemoteExecution, RemoteExecutionOptions, RemoteExecutionReport};
use super::secrets::RunSecrets;
use super::signals::Signals;
use super::{
    audit, CacheUse, Plan, ProcessExecutor, Reporter, Reporters, RunOptions, RunReport, Streams,
    TaskStatus,
};
use crate::cache::remote::{Remote, RemoteOptions};
use crate::cache::{CacheError, DepInput, Key, Keyed, Session};
use crate::config::{Config, RemoteMode};
use crate::secrets::SecretsError;

/// How long a run waits at its end for uploads to the remote cache still under way.
const UPLOAD_DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The tasks' secrets could not be decrypted or fetched.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The cache could not be opened.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The scheduler or its signal handlers could not start.
    #[error("{what}: {source}")]
    Io {
        /// What cairn was doing.
        what: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

/// What a run was asked to do, resolved from flags, settings and the environment by its caller.
pub struct Settings {
    /// The targets as the user named them (for plugins' run events).
    pub targets: Vec<String>,
    /// Jobs at once, at least 1.
    pub jobs: usize,
    /// After a failure, keep starting jobs whose dependencies succeeded.
    pub keep_going: bool,
    /// Run tasks even when the cache has their result.
    pub force: bool,
    /// Read and write the cache (`--no-cache` clears it).
    pub use_cache: bool,
    /// Only show the plan: decrypt nothing, publish nothing.
    pub dry_run: bool,
    /// Age identities to try first.
    pub identities: Vec<PathBuf>,
    /// The remote cache, when one is configured and not turned off.
    pub remote: Option<RemoteOptions>,
    /// The execution engine, when one is configured and not turned off.
    pub remote_execution: Option<RemoteExecutionOptions>,
    /// Stops the run as SIGTERM would when it turns `true`.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// A run ready to start: its plugins declared, its secrets decrypted, its cache open.
pub struct Run {
    config: Arc<Config>,
    plan: Plan,
    settings: Settings,
    plugins: Option<Arc<Plugins>>,
    secrets: Option<Arc<RunSecrets>>,
    session: Option<Arc<Session>>,
    remote_execution: Option<Arc<RemoteExecution>>,
    /// Lines the user should read before anything runs (already worded, `cairn: warning: …`).
    pub warnings: Vec<String>,
}

/// How a run ended, with what its caller needs to record and show it.
pub struct Outcome {
    /// The plan that ran.
    pub plan: Plan,
    /// Each job's result.
    pub report: RunReport,
    /// When the run started.
    pub started_at: SystemTime,
    /// The remote cache's part, when there was one.
    pub remote: Option<RemoteTotals>,
    /// The execution engine's part, when there was one.
    pub remote_execution: Option<(String, RemoteExecutionReport)>,
}

/// The remote cache's part in a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteTotals {
    /// The server, without credentials.
    pub url: String,
    /// Whether this machine published.
    pub publishing: bool,
    /// Entries restored from it.
    pub fetched: u64,
    /// Entries published.
    pub published: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Entries not published (the server failed, or time ran out).
    pub abandoned: u64,
    /// Whether the server failed and the run went on without it.
    pub unavailable: bool,
}

/// A job's key as it would be now and whether the cache holds it, or why it cannot be known.
pub type Prediction = Result<(Keyed, bool), String>;

impl Run {
    /// Declares the plugins (each loads when a task first needs it), decrypts the tasks' secrets (not for a
    /// dry run, which names them only) and opens the cache with the remote cache attached.
    pub fn prepare(
        config: Arc<Config>,
        mut plan: Plan,
        mut settings: Settings,
    ) -> Result<Run, DriverError> {
        let plugins =
            (!config.plugins.is_empty()).then(|| Arc::new(Plugins::new(Arc::clone(&config))));
        let secrets = if settings.dry_run {
            None
        } else {
            super::secrets::prepare(&mut plan, &config, &settings.identities, plugins.as_deref())?
                .map(Arc::new)
        };
        if let (Some(plugins), Some(secrets)) = (&plugins, &secrets) {
            plugins.sink().set_redactor(Arc::clone(&secrets.redactor));
        }
        let mut warnings = Vec::new();
        if let Some(secrets) = &secrets {
            for left in super::secrets::remove_stale_dirs() {
                warnings.push(format!(
                    "cairn: warning: cannot remove `{}`, a plaintext copy left by a cairn that was killed: remove it by hand",
                    left.display()
                ));
            }
            for name in &secrets.warnings {
                warnings.push(format!(
                    "cairn: warning: `{name}` is shorter than {} bytes, too short to redact from output; it is passed to the task but will show in logs (make it longer, or treat it as configuration, not a secret)",
                    crate::secrets::redact::MIN_SECRET_LEN
                ));
            }
        }
        // A plan with nothing to cache does not touch the cache at all.
        let session = if !settings.use_cache || !plan.uses_cache() {
            None
        } else {
            let mut session = open_cache(&config)?;
            if let Some(mut options) = settings.remote.take() {
                if settings.dry_run {
                    // A dry run only asks the remote cache what it holds.
                    options.signing_key = None;
                }
                if let Some(own) = &options.signing_key {
                    session.add_trusted_writer(own.public());
                }
                let dir = crate::cache::dir_for(&config.root);
                session.attach_remote(Remote::new(options, &dir));
            }
            Some(Arc::new(session))
        };
        // Remote execution needs the cache: results come back into it, and are restored from it.
        let remote_execution = settings
            .remote_execution
            .take()
            .filter(|_| session.is_some())
            .map(|options| {
                Arc::new(RemoteExecution::new(
                    options,
                    secrets.as_ref().map(|s| Arc::clone(&s.redactor)),
                    false,
                ))
            });
        Ok(Run {
            config,
            plan,
            settings,
            plugins,
            secrets,
            session,
            remote_execution,
            warnings,
        })
    }

    /// Stops the run as SIGTERM would when `stop` turns `true` (a request from the dashboard).
    pub fn stop_when(&mut self, stop: tokio::sync::watch::Receiver<bool>) {
        self.settings.stop = Some(stop);
    }

    /// The plan this run executes.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Whether the run's tasks hold decrypted secrets (their output must then be captured and redacted).
    pub fn holds_secrets(&self) -> bool {
        self.secrets.is_some()
    }

    /// Where each job would run, when the run has an execution engine.
    pub fn placements(&self) -> Option<Vec<Placement>> {
        let remote = self.remote_execution.as_ref()?;
        Some(
            self.plan
                .jobs
                .iter()
                .map(|job| remote.placement(job))
                .collect(),
        )
    }

    /// Whether the run reads and writes the cache.
    pub fn caches(&self) -> bool {
        self.session.is_some()
    }

    /// Each job's predicted key and cache hit, when the run uses the cache.
    pub fn predict(&self) -> Option<Vec<Prediction>> {
        let session = self.session.as_deref()?;
        Some(predict(&self.plan, session, self.secrets.is_some()))
    }

    /// For each predicted miss of a task that may use the remote cache, the trusted writer whose slot holds
    /// an entry for its key (asked, not fetched); `None` without a remote cache. A server that fails is asked
    /// no more, and the second value says why.
    pub fn remote_holders(
        &self,
        predictions: &[Prediction],
    ) -> (Option<Vec<Option<String>>>, Option<String>) {
        let Some(remote) = self.session.as_deref().and_then(Session::remote) else {
            return (None, None);
        };
        let mut failure = None;
        let holders = self
            .plan
            .jobs
            .iter()
            .zip(predictions)
            .map(|(job, predicted)| match predicted {
                Ok((keyed, false))
                    if failure.is_none()
                        && job.key.cacheable
                        && job.key.remote != RemoteMode::Off =>
                {
                    match remote.holder_of(&keyed.key) {
                        Ok(holder) => holder,
                        Err(error) => {
                            failure = Some(format!(
                                "cairn: warning: the remote cache could not be asked: {}",
                                error.0
                            ));
                            None
                        }
                    }
                }
                _ => None,
            })
            .collect();
        (Some(holders), failure)
    }

    /// Runs the plan to its end (or until a failure or signal stops it), waits for the remote cache's
    /// uploads, trims the cache, appends the audit log and tells event plugins. Everything it has to say
    /// goes through `reporter`, plugins' log lines included.
    pub fn execute(
        self,
        streams: Streams,
        reporter: Arc<dyn Reporter>,
    ) -> Result<Outcome, DriverError> {
        let Run {
            config,
            plan,
            settings,
            plugins,
            secrets,
            session,
            remote_execution,
            warnings: _,
        } = self;
        if let (Some(remote), Streams::Inherited { foreground: true }) =
            (&remote_execution, &streams)
        {
            remote.set_interactive();
        }
        let sinks = plugins.as_ref().and_then(EventSinks::start);
        if let Some(plugins) = &plugins {
            let reporter = Arc::clone(&reporter);
            plugins
                .sink()
                .set_printer(Some(Arc::new(move |line: &str| reporter.notice(line))));
        }
        let mut watchers = vec![Arc::clone(&reporter)];
        if let Some(sinks) = &sinks {
            watchers.push(Arc::new(EventReporter {
                sinks: Arc::clone(sinks),
            }));
        }
        let watchers: Arc<dyn Reporter> = Arc::new(Reporters(watchers));
        let started_at = SystemTime::now();
        if let Some(sinks) = &sinks {
            sinks.send(&cairn_plugin_api::Event::RunStarted {
                at_ms: now_ms(),
                targets: settings.targets.clone(),
                tasks: plan.jobs.len(),
            });
        }
        let mut executor = ProcessExecutor::new(streams, config.settings.kill_grace);
        if let Some(secrets) = &secrets {
            executor = executor.with_secrets(Arc::clone(secrets));
        }
        if let Some(plugins) = &plugins {
            executor = executor.with_plugins(Arc::clone(plugins));
        }
        let options = RunOptions {
            jobs: settings.jobs,
            keep_going: settings.keep_going,
            handle_signals: true,
            force: settings.force,
            stop: settings.stop.clone(),
            remote: remote_execution.clone(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| DriverError::Io {
                what: "cannot start the task scheduler".into(),
                source,
            })?;
        let report = runtime
            .block_on(super::execute(
                &plan,
                &options,
                Arc::new(executor),
                watchers,
                session.clone(),
            ))
            .map_err(|source| DriverError::Io {
                what: "cannot listen for Ctrl-C and SIGTERM".into(),
                source,
            })?;
        let remote = session
            .as_ref()
            .filter(|s| s.remote().is_some())
            .map(|session| {
                runtime.block_on(drain_remote(
                    Arc::clone(session),
                    report.interrupted.is_some(),
                    Arc::clone(&reporter),
                ))
            });
        if let Some(session) = session {
            if let Err(error) = session.finish() {
                reporter.notice(&format!("cairn: {error}"));
            }
            // The shared lock goes with the session, so that trimming can take the store alone.
            drop(session);
            if report
                .results
                .iter()
                .any(|r| matches!(r.cache, CacheUse::Miss | CacheUse::RemoteHit))
            {
                let dir = crate::cache::dir_for(&config.root);
                if let Err(error) = crate::cache::auto_gc(
                    &dir,
                    config.settings.cache_max_size,
                    config.settings.cache_max_age,
                ) {
                    reporter.notice(&format!("cairn: trimming the cache failed: {error}"));
                }
            }
        }
        if let Err(error) = audit::append(&config.root, &audit_lines(&config, &plan, &report)) {
            reporter.notice(&format!(
                "cairn: warning: the audit log could not be written: {error}"
            ));
        }
        if let Some(sinks) = sinks {
            sinks.send(&run_finished(&report));
            for warning in sinks.finish() {
                reporter.notice(&format!("cairn: warning: {warning}"));
            }
        }
        if let Some(plugins) = &plugins {
            plugins.sink().set_printer(None);
        }
        Ok(Outcome {
            plan,
            report,
            started_at,
            remote,
            remote_execution: remote_execution.map(|r| (r.shown_url().to_owned(), r.report())),
        })
    }
}

/// The audit log's lines for the jobs that asked to be audited and ran.
fn audit_lines<'a>(
    config: &Config,
    plan: &'a Plan,
    report: &RunReport,
) -> Vec<audit::AuditLine<'a>> {
    if !plan.jobs.iter().any(|j| j.audit) {
        return Vec::new();
    }
    let (time, user, host) = (crate::time::now_rfc3339(), audit::user(), audit::host());
    // Asking git costs a process: only when something is audited.
    let revision = audit::revision(&config.root);
    plan.jobs
        .iter()
        .zip(&report.results)
        .filter(|(job, result)| job.audit && !matches!(result.status, TaskStatus::NotRun))
        .map(|(job, result)| audit::AuditLine {
            time: time.clone(),
            user: user.clone(),
            host: host.clone(),
            revision: revision.clone(),
            task: &job.label,
            params: &job.key.params,
            result: result.status.name(),
            exit_code: result.status.exited_with(),
            duration_ms: result.duration.as_millis() as u64,
        })
        .collect()
}

/// The event that tells plugins how the run ended.
fn run_finished(report: &RunReport) -> cairn_plugin_api::Event {
    let count = |f: fn(&TaskStatus) -> bool| report.results.iter().filter(|r| f(&r.status)).count();
    cairn_plugin_api::Event::RunFinished {
        at_ms: now_ms(),
        exit_code: report.exit_code(),
        succeeded: count(|s| matches!(s, TaskStatus::Succeeded)),
        failed: count(|s| matches!(s, TaskStatus::Failed { .. } | TaskStatus::TimedOut { .. })),
        skipped: count(|s| {
            matches!(
                s,
                TaskStatus::Skipped { .. } | TaskStatus::NotRun | TaskStatus::Interrupted
            )
        }),
        duration_ms: report.elapsed.as_millis() as u64,
    }
}

/// Waits for the remote cache's uploads on a blocking thread, and stops waiting at Ctrl-C or SIGTERM (the
/// uploads under way end with cairn; their server keeps no partial object).
async fn drain_remote(
    session: Arc<Session>,
    interrupted: bool,
    reporter: Arc<dyn Reporter>,
) -> RemoteTotals {
    let mut waiting = {
        let session = Arc::clone(&session);
        tokio::task::spawn_blocking(move || match session.remote() {
            Some(remote) => finish_remote(remote, interrupted, reporter.as_ref()),
            None => RemoteTotals::default(),
        })
    };
    let mut signals = Signals::new().ok();
    let finished = tokio::select! {
        finished = &mut waiting => finished,
        _ = Signals::next(&mut signals) => {
            if let Some(remote) = session.remote() {
                remote.cut_short();
            }
            waiting.await
        }
    };
    finished.unwrap_or_default()
}

/// Waits for the remote cache's uploads (none after Ctrl-C but those already sending), says what was
/// published, and returns the run record's part.
fn finish_remote(remote: &Remote, interrupted: bool, reporter: &dyn Reporter) -> RemoteTotals {
    let drain = if interrupted {
        Duration::ZERO
    } else {
        UPLOAD_DRAIN_LIMIT
    };
    let done = remote.finish(drain);
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    if done.published > 0 {
        reporter.notice(&format!(
            "cairn: remote cache: published {} result{} ({} sent) to {}",
            done.published,
            plural(done.published),
            crate::config::format_size(done.bytes_sent),
            remote.shown_url()
        ));
    }
    if done.abandoned > 0 {
        reporter.notice(&format!(
            "cairn: warning: remote cache: {} result{} not published{}",
            done.abandoned,
            if done.abandoned == 1 {
                " was"
            } else {
                "s were"
            },
            if done.cut_short {
                " (waiting for uploads was cut short)"
            } else {
                ""
            }
        ));
    }
    RemoteTotals {
        url: remote.shown_url().to_owned(),
        publishing: remote.publishes(),
        fetched: done.fetched,
        published: done.published,
        bytes_sent: done.bytes_sent,
        abandoned: done.abandoned,
        unavailable: done.unavailable,
    }
}

/// Opens the repository's cache (`CAIRN_CACHE_DIR` overrides where it lives), trusting what was fetched from
/// the remote cache only while its writer is in `trusted_writers`.
pub fn open_cache(config: &Config) -> Result<Session, CacheError> {
    let mut session = Session::open(&config.root, &crate::cache::dir_for(&config.root))?;
    session.set_trusted_writers(
        config
            .remote_cache
            .iter()
            .flat_map(|d| d.trusted_writers.iter().map(|w| w.key))
            .collect(),
    );
    Ok(session)
}

/// Each job's key as it would be now, and whether the cache has it, computed in plan order as a run would
/// (assuming each dependency ends with the key predicted for it).
pub fn predict(plan: &Plan, session: &Session, secrets_prepared: bool) -> Vec<Prediction> {
    let mut keys: Vec<Option<Key>> = vec![None; plan.jobs.len()];
    let mut out = Vec::with_capacity(plan.jobs.len());
    for (i, job) in plan.jobs.iter().enumerate() {
        if job.secrets.is_some() && !secrets_prepared {
            out.push(Err(
                "its key holds digests of its secrets, which a dry run does not decrypt".into(),
            ));
            continue;
        }
        let mut deps: Vec<DepInput> = Vec::with_capacity(plan.deps[i].len());
        let mut unknown = None;
        for &d in &plan.deps[i] {
            match keys[d] {
                Some(key) => deps.push(DepInput {
                    label: plan.jobs[d].label.clone(),
                    key,
                    outputs: plan.jobs[d].key.outputs.clone(),
                }),
                None => unknown = Some(&plan.jobs[d].label),
            }
        }
        if let Some(dep) = unknown {
            out.push(Err(format!("it depends on `{dep}`, whose key is unknown")));
            continue;
        }
        match session.key(&job.key, &deps) {
            Ok(keyed) => {
                keys[i] = Some(keyed.key);
                let hit = job.key.cacheable && session.contains(&keyed.key);
                out.push(Ok((keyed, hit)));
            }
            Err(error) => out.push(Err(error.to_string())),
        }
    }
    out
}
