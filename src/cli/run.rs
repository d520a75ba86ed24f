//! `cairn run`: select, confirm, then run or print the plan.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use clap::ValueEnum;

use super::output::{CiGroups, Layout, TerminalReporter};
use super::progress::StatusLine;
use super::{CliError, Context};
use crate::config::{Config, RemoteMode};
use crate::report::{
    prune_runs, render_summary, runs_dir, LiveFeed, RunContext, RunRecorder, RunSummary,
    SummaryStyle, KEPT_RUNS, KEPT_RUNS_BYTES,
};
use crate::run::driver::{Prediction, Run, Settings};
use crate::run::{self, is_direct, Plan, Streams};

#[derive(Debug, clap::Args)]
pub(super) struct RunArgs {
    /// Tasks to run, e.g. `build` or `deploy:production` (none: the task named `default`).
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,
    /// Run at most N commands at once (default: `[settings] jobs`, else one per CPU); cache lookups take no slot.
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
    /// Run tasks on the execution engine this way for this run (default: `[remote_execution] mode`; the
    /// engine's URL may come from CAIRN_REMOTE_EXECUTION, which `off` turns off).
    #[arg(long = "remote-exec", value_enum, value_name = "MODE")]
    remote_exec: Option<RemoteExecArg>,
    /// Run only the tasks a change affects (see `cairn affected`) and what they need.
    #[arg(long)]
    affected: bool,
    /// With `--affected`: compare with this commit, branch or tag (default: the merge base with the default
    /// branch, else HEAD).
    #[arg(long, value_name = "REF", requires = "affected")]
    since: Option<String>,
    /// Run only shard K of N (`--shard 2/4`): a deterministic 1/N of the selected tasks that run something,
    /// for CI matrices; dependencies in other shards come from the cache, or run here too.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    shard: Option<(usize, usize)>,
    /// Arguments for the targets (never for their dependencies).
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

fn parse_shard(text: &str) -> Result<(usize, usize), String> {
    let parsed = text.split_once('/').and_then(|(k, n)| {
        Some((
            k.trim().parse::<usize>().ok()?,
            n.trim().parse::<usize>().ok()?,
        ))
    });
    match parsed {
        Some((k, n)) if n >= 1 && (1..=n).contains(&k) => Ok((k, n)),
        _ => Err(format!(
            "expected K/N with 1 ≤ K ≤ N, e.g. `--shard 1/4` for the first of four shards; got `{text}`"
        )),
    }
}

/// Which jobs of `plan` are shard `k` of `n`: the jobs that run something, sorted by name and dealt out in
/// turn, so the shards partition them evenly and every CI machine computes the same split.
fn shard_mask(plan: &Plan, k: usize, n: usize) -> Vec<bool> {
    let mut working: Vec<(&str, usize)> = plan
        .jobs
        .iter()
        .enumerate()
        .filter(|(_, j)| !j.commands.is_empty() || j.plugin.is_some())
        .map(|(i, j)| (j.label.as_str(), i))
        .collect();
    working.sort_unstable();
    let mut mask = vec![false; plan.jobs.len()];
    for (position, (_, i)) in working.into_iter().enumerate() {
        mask[i] = position % n == k - 1;
    }
    mask
}

/// The task `cairn run` runs when given no target.
const DEFAULT_TASK: &str = "default";

pub(super) fn parse_assignment(text: &str) -> Result<(String, String), String> {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum RemoteExecArg {
    /// Remotely when a task can, here otherwise, and here for the rest of the run if the engine fails.
    Auto,
    /// Remotely when a task can; if the engine fails, the tasks sent to it fail.
    Required,
    /// Everything runs here.
    Off,
}

impl From<RemoteExecArg> for crate::config::ExecutionMode {
    fn from(arg: RemoteExecArg) -> crate::config::ExecutionMode {
        match arg {
            RemoteExecArg::Auto => crate::config::ExecutionMode::Auto,
            RemoteExecArg::Required => crate::config::ExecutionMode::Required,
            RemoteExecArg::Off => crate::config::ExecutionMode::Off,
        }
    }
}

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

pub(super) fn run(context: &Context, mut args: RunArgs) -> Result<i32, CliError> {
    let (config, graph) = context.load_with(&args.set)?;
    // The graph (and through it the configuration) lives until the process ends: freeing 100,000 tasks' worth
    // of small allocations took a tenth of a large plan's time, for memory the exit returns anyway.
    let mut graph = std::mem::ManuallyDrop::new(graph);
    if args.targets.is_empty() {
        // Like make's first target or just's default recipe, but only by name: a task is never run by accident.
        if config.tasks.iter().any(|t| t.name.text == DEFAULT_TASK) {
            args.targets.push(DEFAULT_TASK.to_owned());
        } else {
            eprintln!(
                "cairn: no target given, and tasks.toml has no task named `{DEFAULT_TASK}` to run instead; its tasks:"
            );
            super::list::list(context, &super::list::ListArgs::default())?;
            return Ok(2);
        }
    }
    let selection = graph.select(&args.targets)?;
    let mut plan = Plan::new(&graph, &selection, &args.args);
    if args.affected {
        let changes = crate::run::affected::changes(&config.root, args.since.as_deref())?;
        let found = crate::run::affected::affected(&config, &plan, Some(&args.targets), &changes);
        eprintln!(
            "cairn: {} of {} tasks affected by {} changed path{} since {}",
            found.count(),
            plan.jobs.len(),
            changes.changes.len(),
            if changes.changes.len() == 1 { "" } else { "s" },
            changes.base.reference
        );
        if found.count() == 0 {
            return Ok(0);
        }
        plan = plan.restrict(&found.mask());
    }
    // Labels of the other shards' tasks this shard needs: they come from the cache or run here too.
    let mut borrowed: Vec<String> = Vec::new();
    if let Some((k, n)) = args.shard {
        let mask = shard_mask(&plan, k, n);
        let own = mask.iter().filter(|m| **m).count();
        let restricted = plan.restrict(&mask);
        let mine: std::collections::HashSet<&str> = plan
            .jobs
            .iter()
            .zip(&mask)
            .filter(|(_, m)| **m)
            .map(|(j, _)| j.label.as_str())
            .collect();
        borrowed = restricted
            .jobs
            .iter()
            .filter(|j| {
                (!j.commands.is_empty() || j.plugin.is_some()) && !mine.contains(j.label.as_str())
            })
            .map(|j| j.label.clone())
            .collect();
        eprintln!(
            "cairn: shard {k}/{n}: {own} of the {} tasks that run something{}",
            plan.jobs
                .iter()
                .filter(|j| !j.commands.is_empty() || j.plugin.is_some())
                .count(),
            if borrowed.is_empty() {
                String::new()
            } else {
                format!(
                    ", and {} of other shards' they depend on (from the cache, else run here too)",
                    borrowed.len()
                )
            }
        );
        if own == 0 {
            return Ok(0);
        }
        plan = restricted;
    }
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
    // Lines about the remote cache go above the status line once there is one.
    let above = Above::default();
    let warn: Arc<dyn Fn(&str) + Send + Sync> = {
        let above = above.clone();
        Arc::new(move |message: &str| above.say(&format!("cairn: warning: {message}")))
    };
    let use_cache = !args.no_cache && plan.uses_cache();
    let remote = if use_cache {
        super::remote::resolve(
            &config,
            args.remote.map(RemoteMode::from),
            &args.identity,
            Arc::clone(&warn),
        )?
    } else {
        None
    };
    // Asked for on the command line, a missing engine is an error even when nothing would be cached.
    let remote_execution = if use_cache || args.remote_exec.is_some() {
        super::remote::resolve_execution(
            &config,
            args.remote_exec.map(Into::into),
            &args.identity,
            warn,
        )?
    } else {
        None
    };
    // A dry run shows the plan to anyone, a newcomer without keys included: it names each secret and where it
    // comes from, and decrypts nothing.
    let mut prepared = Run::prepare(
        Arc::clone(&config),
        plan,
        Settings {
            targets: args.targets.clone(),
            jobs,
            keep_going: args.keep_going,
            force: args.force,
            use_cache,
            dry_run: args.dry_run,
            identities: args.identity.clone(),
            remote,
            remote_execution,
            stop: None,
        },
    )?;
    for warning in &prepared.warnings {
        eprintln!("{warning}");
    }

    if args.dry_run {
        let predictions = prepared.predict();
        let holders = match predictions.as_deref() {
            Some(predictions) => {
                let (holders, failure) = prepared.remote_holders(predictions);
                if let Some(failure) = failure {
                    eprintln!("{failure}");
                }
                holders
            }
            None => None,
        };
        print!(
            "{}",
            describe_plan(
                &config,
                prepared.plan(),
                jobs,
                predictions.as_deref(),
                holders.as_deref(),
                prepared.placements().as_deref(),
            )
        );
        return Ok(0);
    }
    confirm(prepared.plan(), args.yes)?;

    let (mut layout, mut stdio) = output_mode(
        prepared.plan(),
        args.output,
        prepared.caches(),
        prepared.holds_secrets(),
    );
    // With --json, stdout is the summary's alone: tasks are captured and their lines go to stderr.
    if args.json && layout == Layout::Direct {
        (layout, stdio) = (Layout::Prefixed, Streams::Captured);
    }
    let color = context.color && std::io::stdout().is_terminal();
    let plan = prepared.plan();
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
    let terminal: Arc<dyn run::Reporter> = Arc::new(
        TerminalReporter::new(layout, color, width)
            .with_stdout_to_stderr(args.json)
            .with_status_line(status.clone())
            .with_ci_groups(CiGroups::detect().filter(|_| layout == Layout::Grouped)),
    );
    let recorder = Arc::new(RunRecorder::new());
    let live = LiveFeed::open(&config.root, "run", &args.targets).map(Arc::new);
    let stop_requested = live.as_ref().map(|live| live.stop_requests());
    if let Some(requested) = &stop_requested {
        prepared.stop_when(requested.clone());
    }
    // Everyone who watches the run, in the order they hear of each thing: the record, then the terminal,
    // then a dashboard's live view when one is up.
    let mut reporters = vec![Arc::clone(&recorder) as Arc<dyn run::Reporter>, terminal];
    if let Some(live) = &live {
        reporters.push(Arc::clone(live) as Arc<dyn run::Reporter>);
    }
    let reporter: Arc<dyn run::Reporter> = Arc::new(run::Reporters(reporters));
    let outcome = prepared.execute(stdio, reporter)?;
    if let Some(live) = &live {
        live.end(outcome.report.exit_code());
    }
    if let Some(status) = &status {
        status.finish();
    }
    let records = recorder.take();
    let summary = RunSummary::new(
        &outcome.plan,
        &outcome.report,
        &RunContext {
            targets: &args.targets,
            jobs,
            started_at: outcome.started_at,
            records: &records,
            remote_cache: outcome.remote,
        },
    );
    record_run(&config, &summary, &args);
    if args.json {
        println!("{}", summary.to_json());
    } else {
        let style = SummaryStyle {
            color: context.color,
        };
        eprint!("{}", render_summary(&outcome.plan, &outcome.report, style));
    }
    if stop_requested.is_some_and(|requested| *requested.borrow()) {
        eprintln!("cairn: the stop was asked for in the dashboard (cairn ui)");
    }
    if !borrowed.is_empty() {
        let ran_here: Vec<&str> = outcome
            .plan
            .jobs
            .iter()
            .zip(&outcome.report.results)
            .filter(|(job, result)| {
                borrowed.contains(&job.label)
                    && !result.cache.is_hit()
                    && result.status != run::TaskStatus::NotRun
            })
            .map(|(job, _)| job.label.as_str())
            .collect();
        if !ran_here.is_empty() {
            eprintln!(
                "cairn: ran {} of other shards here too, as the cache did not have {}: {}",
                ran_here.len(),
                if ran_here.len() == 1 { "it" } else { "them" },
                ran_here.join(", ")
            );
        }
    }
    Ok(outcome.report.exit_code())
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
    predictions: Option<&[Prediction]>,
    remote_holders: Option<&[Option<String>]>,
    placements: Option<&[run::remote::Placement]>,
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
                        "miss here ({}); the remote cache holds it, {writer}",
                        &keyed.key.to_string()[..12]
                    ),
                    None => format!("miss ({})", &keyed.key.to_string()[..12]),
                },
                Err(error) => format!("unknown: {error}"),
            };
            let _ = writeln!(out, "       cache {verdict}");
        }
        if let Some(placements) = placements {
            let place = match &placements[i] {
                run::remote::Placement::Remote => "remote (on the execution engine)".to_owned(),
                run::remote::Placement::Local(reason) => format!("local: {reason}"),
            };
            let _ = writeln!(out, "       runs  {place}");
        }
    }
    out
}
