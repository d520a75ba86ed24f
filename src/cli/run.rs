//! `cairn run`: select, confirm, then run or print the plan.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use clap::ValueEnum;

use super::output::{CiGroups, Layout, TerminalReporter};
use super::progress::StatusLine;
use super::{CliError, Context};
use crate::cache::remote::Remote;
use crate::cache::{DepInput, Key, Keyed, Session};
use crate::config::{Config, RemoteMode};
use crate::report::{
    prune_runs, render_summary, runs_dir, RemoteTotals, RunContext, RunRecorder, RunSummary,
    SummaryStyle, KEPT_RUNS, KEPT_RUNS_BYTES,
};
use crate::run::{self, is_direct, Plan, ProcessExecutor, RunOptions, Streams};

#[derive(Debug, clap::Args)]
pub(super) struct RunArgs {
    /// Tasks to run, e.g. `build` or `deploy:production`.
    #[arg(required = true, value_name = "TARGET")]
    targets: Vec<String>,
    /// Run at most N tasks at once (default: `[settings] jobs`, else one per CPU).
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    jobs: Option<u32>,
    /// After a failure, keep running every task whose dependencies succeeded.
    #[arg(short = 'k', long)]
    keep_going: bool,
    /// Print what would run, in order, with commands interpolated and predicted cache hits; run nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Answer yes to every `confirm` question.
    #[arg(short = 'y', long)]
    yes: bool,
    /// Run tasks even when the cache has their result, and store the new result.
    #[arg(long)]
    force: bool,
    /// Neither read nor write the cache.
    #[arg(long, conflicts_with = "force")]
    no_cache: bool,
    /// How task output is shown.
    #[arg(long, value_enum, default_value_t = OutputArg::Auto)]
    output: OutputArg,
    /// An age identity file (keys.txt or SSH private key) to decrypt tasks' secrets with, tried first.
    #[arg(long = "identity", short = 'i', value_name = "FILE")]
    identity: Vec<std::path::PathBuf>,
    /// The live status line on a terminal (`auto`), or plain lines only (`plain`).
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    progress: ProgressArg,
    /// Also write the run's summary (JSON, as in .cairn/runs/) to this file.
    #[arg(long, value_name = "PATH")]
    summary: Option<std::path::PathBuf>,
    /// Print the run's summary as JSON on stdout instead of the closing lines (task output goes to stderr).
    #[arg(long)]
    json: bool,
    /// Write a Chrome trace of the run (Perfetto, chrome://tracing): a row per worker, a slice per task.
    #[arg(long, value_name = "PATH")]
    trace: Option<std::path::PathBuf>,
    /// Give a var of [vars] another value for this run (it enters the keys of the tasks that use it).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_assignment)]
    set: Vec<(String, String)>,
    /// Use the remote cache this way for this run (default: `[remote_cache] mode`, or CAIRN_REMOTE_CACHE_MODE).
    #[arg(long, value_enum, value_name = "MODE")]
    remote: Option<RemoteArg>,
    /// Arguments for the targets (never for their dependencies).
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

fn parse_assignment(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!(
            "expected NAME=VALUE, e.g. `--set nix=skip`; got `{text}`"
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum RemoteArg {
    /// Neither fetch from nor publish to the remote cache.
    Off,
    /// Fetch results signed by a trusted writer; publish nothing.
    Read,
    /// Fetch, and sign and publish this machine's results.
    ReadWrite,
}

impl From<RemoteArg> for RemoteMode {
    fn from(arg: RemoteArg) -> RemoteMode {
        match arg {
            RemoteArg::Off => RemoteMode::Off,
            RemoteArg::Read => RemoteMode::Read,
            RemoteArg::ReadWrite => RemoteMode::ReadWrite,
        }
    }
}

/// How long a run waits at its end for uploads to the remote cache still under way.
const UPLOAD_DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProgressArg {
    /// A status line at the bottom of the terminal while tasks run; plain lines elsewhere.
    Auto,
    /// Plain lines only.
    Plain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputArg {
    /// Untouched for a single task; prefixed when several run.
    Auto,
    /// Every line behind its task's label.
    Prefixed,
    /// Each task's output in one block when it ends.
    Grouped,
    /// Tasks write straight to the terminal, unlabelled (nothing to replay from the cache).
    Raw,
}

pub(super) fn run(context: &Context, args: RunArgs) -> Result<i32, CliError> {
    let (config, mut graph) = context.load_with(&args.set)?;
    let selection = graph.select(&args.targets)?;
    let mut plan = Plan::new(&graph, &selection, &args.args);
    if !args.args.is_empty() {
        if let Some(job) = plan
            .jobs
            .iter()
            .find(|j| j.is_target && j.commands.is_empty())
        {
            return Err(CliError::ArgsWithoutCommand {
                task: job.label.clone(),
                args: args.args.join(" "),
            });
        }
    }
    let jobs = args
        .jobs
        .map(|j| j as usize)
        .or(config.settings.jobs)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Plugins load when a task first needs one; declaring them costs nothing.
    let plugins = (!config.plugins.is_empty())
        .then(|| Arc::new(run::plugins::Plugins::new(Arc::clone(&config))));
    // A dry run shows the plan to anyone, a newcomer without keys included: it names each secret and where it
    // comes from, and decrypts nothing.
    let secrets = if args.dry_run {
        None
    } else {
        run::secrets::prepare(&mut plan, &config, &args.identity, plugins.as_deref())?.map(Arc::new)
    };
    if let (Some(plugins), Some(secrets)) = (&plugins, &secrets) {
        plugins.sink().set_redactor(Arc::clone(&secrets.redactor));
    }
    if let Some(secrets) = &secrets {
        for left in run::secrets::remove_stale_dirs() {
            eprintln!(
                "cairn: warning: cannot remove `{}`, a plaintext copy left by a cairn that was killed: remove it by hand",
                left.display()
            );
        }
        for name in &secrets.warnings {
            eprintln!(
                "cairn: warning: `{name}` is shorter than {} bytes, too short to redact from output; it is passed to the task but will show in logs (make it longer, or treat it as configuration, not a secret)",
                crate::secrets::redact::MIN_SECRET_LEN
            );
        }
    }
    // Lines about the remote cache go above the status line once there is one.
    let above = Above::default();
    let warn: Arc<dyn Fn(&str) + Send + Sync> = {
        let above = above.clone();
        Arc::new(move |message: &str| above.say(&format!("cairn: warning: {message}")))
    };
    // A plan with nothing to cache does not touch the cache at all.
    let session = if args.no_cache || !plan.uses_cache() {
        None
    } else {
        let mut session = open_cache(&config)?;
        let flag = args.remote.map(RemoteMode::from);
        if let Some(mut options) = super::remote::resolve(&config, flag, &args.identity, warn)? {
            if args.dry_run {
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

    if args.dry_run {
        let predictions = session.as_deref().map(|s| predict(&plan, s, false));
        let holders = session
            .as_deref()
            .zip(predictions.as_deref())
            .and_then(|(session, predictions)| remote_holders(&plan, session, predictions));
        print!(
            "{}",
            describe_plan(
                &config,
                &plan,
                jobs,
                predictions.as_deref(),
                holders.as_deref()
            )
        );
        return Ok(0);
    }
    confirm(&plan, args.yes)?;

    let (mut layout, mut stdio) =
        output_mode(&plan, args.output, session.is_some(), secrets.is_some());
    // With --json, stdout is the summary's alone: tasks are captured and their lines go to stderr.
    if args.json && layout == Layout::Direct {
        (layout, stdio) = (Layout::Prefixed, Streams::Captured);
    }
    let color = context.color && std::io::stdout().is_terminal();
    let width = plan
        .jobs
        .iter()
        .map(|j| j.label.chars().count())
        .max()
        .unwrap_or(0);
    // The status line needs a terminal that cairn writes to; a task that owns the terminal gets it alone.
    let status = (args.progress == ProgressArg::Auto
        && layout != Layout::Direct
        && std::io::stderr().is_terminal())
    .then(|| StatusLine::start(plan.jobs.len(), context.color));
    if let Some(status) = &status {
        above.set(Arc::clone(status));
    }
    // Plugins' log lines go above the status line too, not through it.
    if let (Some(status), Some(plugins)) = (&status, &plugins) {
        let status = Arc::clone(status);
        plugins.sink().set_printer(Some(Arc::new(move |line: &str| {
            status.print(true, format!("{line}\n").as_bytes())
        })));
    }
    let terminal: Arc<dyn run::Reporter> = Arc::new(
        TerminalReporter::new(layout, color, width)
            .with_stdout_to_stderr(args.json)
            .with_status_line(status.clone())
            .with_ci_groups(CiGroups::detect().filter(|_| layout == Layout::Grouped)),
    );
    let sinks = plugins.as_ref().and_then(run::events::EventSinks::start);
    let recorder = Arc::new(RunRecorder::new());
    // Everyone who watches the run, in the order they hear of each thing: the record, plugins, the terminal.
    let mut watchers: Vec<Arc<dyn run::Reporter>> =
        vec![Arc::clone(&recorder) as Arc<dyn run::Reporter>];
    if let Some(sinks) = &sinks {
        watchers.push(Arc::new(run::events::EventReporter {
            sinks: Arc::clone(sinks),
        }));
    }
    watchers.push(terminal);
    let reporter: Arc<dyn run::Reporter> = Arc::new(run::Reporters(watchers));
    let started_at = std::time::SystemTime::now();
    if let Some(sinks) = &sinks {
        sinks.send(&cairn_plugin_api::Event::RunStarted {
            at_ms: run::events::now_ms(),
            targets: args.targets.clone(),
            tasks: plan.jobs.len(),
        });
    }
    let mut executor = ProcessExecutor::new(stdio, config.settings.kill_grace);
    if let Some(secrets) = &secrets {
        executor = executor.with_secrets(Arc::clone(secrets));
    }
    if let Some(plugins) = &plugins {
        executor = executor.with_plugins(Arc::clone(plugins));
    }
    let executor = Arc::new(executor);
    let options = RunOptions {
        jobs,
        keep_going: args.keep_going,
        handle_signals: true,
        force: args.force,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CliError::Io {
            what: "cannot start the task scheduler".into(),
            source,
        })?;
    let report = runtime
        .block_on(run::execute(
            &plan,
            &options,
            executor,
            reporter,
            session.clone(),
        ))
        .map_err(|source| CliError::Io {
            what: "cannot listen for Ctrl-C and SIGTERM".into(),
            source,
        })?;
    let remote_totals = session
        .as_ref()
        .filter(|s| s.remote().is_some())
        .map(|session| {
            runtime.block_on(drain_remote(
                Arc::clone(session),
                report.interrupted.is_some(),
                above.clone(),
            ))
        });
    if let Some(session) = session {
        if let Err(error) = session.finish() {
            eprintln!("cairn: {error}");
        }
        // The shared lock goes with the session, so that trimming can take the store alone.
        drop(session);
        if report
            .results
            .iter()
            .any(|r| matches!(r.cache, run::CacheUse::Miss | run::CacheUse::RemoteHit))
        {
            let dir = crate::cache::dir_for(&config.root);
            if let Err(error) = crate::cache::auto_gc(
                &dir,
                config.settings.cache_max_size,
                config.settings.cache_max_age,
            ) {
                eprintln!("cairn: trimming the cache failed: {error}");
            }
        }
    }
    let audited: Vec<run::audit::AuditLine<'_>> = {
        let (time, user, host) = (
            crate::time::now_rfc3339(),
            run::audit::user(),
            run::audit::host(),
        );
        // Asking git costs a process: only when something is audited.
        let revision = if plan.jobs.iter().any(|j| j.audit) {
            run::audit::revision(&config.root)
        } else {
            String::new()
        };
        plan.jobs
            .iter()
            .zip(&report.results)
            .filter(|(job, result)| job.audit && !matches!(result.status, run::TaskStatus::NotRun))
            .map(|(job, result)| {
                let (status, exit_code) = (result.status.name(), result.status.exited_with());
                run::audit::AuditLine {
                    time: time.clone(),
                    user: user.clone(),
                    host: host.clone(),
                    revision: revision.clone(),
                    task: &job.label,
                    params: &job.key.params,
                    result: status,
                    exit_code,
                    duration_ms: result.duration.as_millis() as u64,
                }
            })
            .collect()
    };
    if let Err(error) = run::audit::append(&config.root, &audited) {
        eprintln!("cairn: warning: the audit log could not be written: {error}");
    }
    if let Some(status) = &status {
        status.finish();
        if let Some(plugins) = &plugins {
            plugins.sink().set_printer(None);
        }
    }
    // The recorder holds the event reporter, which holds the sinks: it goes first, so the sinks can finish.
    let records = recorder.take();
    drop(recorder);
    if let Some(sinks) = sinks {
        let count = |f: fn(&run::TaskStatus) -> bool| {
            report.results.iter().filter(|r| f(&r.status)).count()
        };
        sinks.send(&cairn_plugin_api::Event::RunFinished {
            at_ms: run::events::now_ms(),
            exit_code: report.exit_code(),
            succeeded: count(|s| matches!(s, run::TaskStatus::Succeeded)),
            failed: count(|s| {
                matches!(
                    s,
                    run::TaskStatus::Failed { .. } | run::TaskStatus::TimedOut { .. }
                )
            }),
            skipped: count(|s| {
                matches!(
                    s,
                    run::TaskStatus::Skipped { .. }
                        | run::TaskStatus::NotRun
                        | run::TaskStatus::Interrupted
                )
            }),
            duration_ms: report.elapsed.as_millis() as u64,
        });
        for warning in sinks.finish() {
            eprintln!("cairn: warning: {warning}");
        }
    }
    let summary = RunSummary::new(
        &plan,
        &report,
        &RunContext {
            targets: &args.targets,
            jobs,
            started_at,
            records: &records,
            remote_cache: remote_totals,
        },
    );
    record_run(&config, &summary, &args);
    if args.json {
        println!("{}", summary.to_json());
    } else {
        let style = SummaryStyle {
            color: context.color,
        };
        eprint!("{}", render_summary(&plan, &report, style));
    }
    Ok(report.exit_code())
}

/// Keeps the run's summary in .cairn/runs/ (trimmed to the newest [`KEPT_RUNS`] within [`KEPT_RUNS_BYTES`]),
/// and writes the copies and trace the command line asked for. A failure here is reported, never the run's
/// failure.
fn record_run(config: &Config, summary: &RunSummary, args: &RunArgs) {
    let dir = runs_dir(&config.root);
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let path = dir.join(format!("{}.json", summary.id));
    match summary.write_compact(&path) {
        // Listing the directory costs more than a short run's own bookkeeping, so about one run in sixteen
        // trims it (and any run whose record alone is large).
        Ok(bytes)
            if started_ms.is_multiple_of(16)
                || bytes.saturating_mul(KEPT_RUNS as u64) > KEPT_RUNS_BYTES =>
        {
            prune_runs(&dir, KEPT_RUNS, KEPT_RUNS_BYTES, bytes)
        }
        Ok(_) => {}
        Err(error) => eprintln!(
            "cairn: warning: cannot keep the run's summary in {}: {error}",
            dir.display()
        ),
    }
    if let Some(copy) = &args.summary {
        if let Err(error) = summary.write(copy) {
            eprintln!(
                "cairn: warning: cannot write the summary to {}: {error}",
                copy.display()
            );
        }
    }
    if let Some(trace) = &args.trace {
        let text = crate::report::chrome_trace(summary);
        if let Err(error) = crate::atomic::write_atomic(trace, text.as_bytes()) {
            eprintln!(
                "cairn: warning: cannot write the trace to {}: {error}",
                trace.display()
            );
        }
    }
}

/// How output is shown and how the tasks' streams are connected.
fn output_mode(plan: &Plan, output: OutputArg, caching: bool, secrets: bool) -> (Layout, Streams) {
    let single = plan.jobs.len() == 1;
    // Output that is not read by cairn cannot be redacted: a run holding secrets is always captured.
    if secrets {
        if output == OutputArg::Raw {
            eprintln!("cairn: --output raw would show secrets unfiltered; output is captured and redacted instead");
        }
        return match output {
            OutputArg::Grouped => (Layout::Grouped, Streams::Captured),
            OutputArg::Auto | OutputArg::Raw if single => (Layout::Plain, Streams::Captured),
            _ => (Layout::Prefixed, Streams::Captured),
        };
    }
    // A task whose result may be stored is captured, so that its output can be replayed on a hit.
    let single_cached = single && caching && plan.jobs[0].key.cacheable;
    let inherited = || Streams::Inherited {
        foreground: single && std::io::stdin().is_terminal() && owns_terminal(),
    };
    match output {
        // A CI that folds sections shows each task's block collapsed, rather than interleaved lines.
        OutputArg::Auto if !single && CiGroups::detect().is_some() => {
            (Layout::Grouped, Streams::Captured)
        }
        OutputArg::Auto if single_cached => (Layout::Plain, Streams::Captured),
        OutputArg::Auto if single => (Layout::Direct, inherited()),
        OutputArg::Raw => (Layout::Direct, inherited()),
        OutputArg::Grouped => (Layout::Grouped, Streams::Captured),
        OutputArg::Auto | OutputArg::Prefixed => (Layout::Prefixed, Streams::Captured),
    }
}

/// Prints lines above the status line while there is one, else to stderr.
#[derive(Clone, Default)]
struct Above(Arc<std::sync::RwLock<Option<Arc<StatusLine>>>>);

impl Above {
    fn set(&self, status: Arc<StatusLine>) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(status);
        }
    }

    fn say(&self, line: &str) {
        match self.0.read().ok().and_then(|slot| slot.clone()) {
            Some(status) => status.print(true, format!("{line}\n").as_bytes()),
            None => eprintln!("{line}"),
        }
    }
}

/// Waits for the remote cache's uploads on a blocking thread, and stops waiting at Ctrl-C or SIGTERM (the
/// uploads under way end with cairn; their server keeps no partial object).
async fn drain_remote(session: Arc<Session>, interrupted: bool, above: Above) -> RemoteTotals {
    let mut waiting = {
        let session = Arc::clone(&session);
        tokio::task::spawn_blocking(move || {
            let remote = session.remote().expect("only called with a remote cache");
            finish_remote(remote, interrupted, &above)
        })
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let finished = tokio::select! {
        finished = &mut waiting => finished,
        _ = tokio::signal::ctrl_c() => {
            if let Some(remote) = session.remote() {
                remote.cut_short();
            }
            waiting.await
        }
        () = terminate => {
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
fn finish_remote(remote: &Remote, interrupted: bool, above: &Above) -> RemoteTotals {
    let drain = if interrupted {
        std::time::Duration::ZERO
    } else {
        UPLOAD_DRAIN_LIMIT
    };
    let done = remote.finish(drain);
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    if done.published > 0 {
        above.say(&format!(
            "cairn: remote cache: published {} result{} ({} sent) to {}",
            done.published,
            plural(done.published),
            crate::config::format_size(done.bytes_sent),
            remote.shown_url()
        ));
    }
    if done.abandoned > 0 {
        above.say(&format!(
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
pub(super) fn open_cache(config: &Config) -> Result<Session, CliError> {
    let mut session = Session::open(&config.root, &crate::cache::dir_for(&config.root))
        .map_err(CliError::Cache)?;
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
pub(super) fn predict(
    plan: &Plan,
    session: &Session,
    secrets_prepared: bool,
) -> Vec<Result<(Keyed, bool), String>> {
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

/// For each predicted miss of a task that may use the remote cache, the trusted writer whose slot holds an
/// entry for its key (asked, not fetched); `None` without a remote cache. A server that fails is asked no more.
fn remote_holders(
    plan: &Plan,
    session: &Session,
    predictions: &[Result<(Keyed, bool), String>],
) -> Option<Vec<Option<String>>> {
    let remote = session.remote()?;
    let mut reachable = true;
    let holders = plan
        .jobs
        .iter()
        .zip(predictions)
        .map(|(job, predicted)| match predicted {
            Ok((keyed, false))
                if reachable && job.key.cacheable && job.key.remote != RemoteMode::Off =>
            {
                match remote.holder_of(&keyed.key) {
                    Ok(holder) => holder,
                    Err(error) => {
                        reachable = false;
                        eprintln!(
                            "cairn: warning: the remote cache could not be asked: {}",
                            error.0
                        );
                        None
                    }
                }
            }
            _ => None,
        })
        .collect();
    Some(holders)
}

/// Whether cairn is in the terminal's foreground process group (not started with `&`), so it may hand the
/// terminal to a task.
fn owns_terminal() -> bool {
    // SAFETY: plain queries on our own stdin.
    unsafe { libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp() }
}

/// Asks every question up front, before anything runs, so a "no" never leaves a half-done run.
fn confirm(plan: &Plan, yes: bool) -> Result<(), CliError> {
    let questions: Vec<(&str, &str)> = plan
        .jobs
        .iter()
        .filter_map(|j| j.confirm.as_deref().map(|q| (j.label.as_str(), q)))
        .collect();
    if questions.is_empty() || yes {
        return Ok(());
    }
    // In CI nobody answers: a protected task needs `--yes` there even when a terminal is attached.
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if let Some(job) = plan.jobs.iter().find(|j| j.protected && in_ci) {
        return Err(CliError::NeedsConfirmation {
            task: job.label.clone(),
            question: job.confirm.clone().unwrap_or_default(),
        });
    }
    if !std::io::stdin().is_terminal() {
        let (task, question) = questions[0];
        return Err(CliError::NeedsConfirmation {
            task: task.to_owned(),
            question: question.to_owned(),
        });
    }
    let stdin = std::io::stdin();
    for (task, question) in questions {
        eprint!("{question} [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        stdin
            .lock()
            .read_line(&mut answer)
            .map_err(|source| CliError::Io {
                what: "cannot read the answer".into(),
                source,
            })?;
        if !matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
            return Err(CliError::Declined {
                task: task.to_owned(),
            });
        }
    }
    Ok(())
}

fn describe_plan(
    config: &Config,
    plan: &Plan,
    jobs: usize,
    predictions: Option<&[Result<(Keyed, bool), String>]>,
    remote_holders: Option<&[Option<String>]>,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let count = plan.jobs.len();
    let _ = writeln!(
        out,
        "plan: {count} task{}, up to {jobs} at once",
        if count == 1 { "" } else { "s" }
    );
    for (i, job) in plan.jobs.iter().enumerate() {
        let after: Vec<&str> = plan.deps[i]
            .iter()
            .map(|&d| plan.jobs[d].label.as_str())
            .collect();
        let after = if after.is_empty() {
            String::new()
        } else {
            format!("  (after {})", after.join(", "))
        };
        let _ = writeln!(out, "{:>3}. {}{after}", i + 1, job.label);
        for (name, value) in job
            .env
            .iter()
            .filter(|(n, _)| n.starts_with("CAIRN_PARAM_"))
        {
            let _ = writeln!(
                out,
                "       param {}={value}",
                name.trim_start_matches("CAIRN_PARAM_").to_lowercase()
            );
        }
        let _ = writeln!(out, "       dir   {}", job.dir.display());
        if let Some(timeout) = job.timeout {
            let _ = writeln!(
                out,
                "       timeout {}",
                crate::config::format_duration(timeout)
            );
        }
        if job.retries > 0 {
            let _ = writeln!(out, "       retries {}", job.retries);
        }
        if let Some(slot) = job.rollout {
            let pace = if slot.max_parallel == 1 {
                "one at a time".to_owned()
            } else {
                format!("up to {} at once", slot.max_parallel)
            };
            let _ = writeln!(out, "       rollout {pace}; a failure stops the rest");
        }
        if let Some((check, retries, interval)) = &job.check {
            let _ = writeln!(
                out,
                "       check {check} (tries {}, every {})",
                retries + 1,
                crate::config::format_duration(*interval)
            );
        }
        if let Some(rollback) = &job.rollback {
            let _ = writeln!(out, "       rollback {rollback}");
        }
        if let Some((name, _)) = &job.lock {
            let _ = writeln!(out, "       lock  {name}");
        }
        if let Some(question) = &job.confirm {
            let _ = writeln!(out, "       asks  {question}");
        }
        if let Some(request) = &job.secrets {
            for (variable, key, how) in request
                .env
                .iter()
                .map(|(v, k)| (v, k, ""))
                .chain(request.files.iter().map(|(v, k)| (v, k, " (as a file)")))
            {
                let source = run::secrets::source_of(config, request, key);
                let _ = writeln!(out, "       secret ${variable}{how} from {source}");
            }
        }
        for (line, slots) in job.commands.iter().zip(&job.changed_slots) {
            let how = if is_direct(job, line) { "" } else { " (shell)" };
            // An incremental task's changed files are only known when it runs.
            let mut shown = line.clone();
            for &at in slots.iter().rev() {
                shown.insert_str(at, "<changed inputs>");
            }
            let _ = writeln!(out, "       $ {shown}{how}");
        }
        if let Some(predictions) = predictions {
            let verdict = match &predictions[i] {
                _ if !job.key.cacheable => "not cached".to_owned(),
                Ok((keyed, true)) => format!("hit ({})", &keyed.key.to_string()[..12]),
                Ok((keyed, false)) => match remote_holders.and_then(|h| h[i].as_deref()) {
                    Some(writer) => format!(
                        "miss here ({}); the remote cache holds it, signed by {writer}",
                        &keyed.key.to_string()[..12]
                    ),
                    None => format!("miss ({})", &keyed.key.to_string()[..12]),
                },
                Err(error) => format!("unknown: {error}"),
            };
            let _ = writeln!(out, "       cache {verdict}");
        }
    }
    out
}
