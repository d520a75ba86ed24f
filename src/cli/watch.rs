//! `cairn watch`: run targets, then again on every change to what they read, and keep services up.
//!
//! A change that arrives while a run is under way waits for it: the run finishes (its tasks read the tree as
//! it was when they started), then the change starts the next run. Nothing is lost, as the file events queue
//! meanwhile; nothing is stopped half-way. A service is the exception, being never done: it is restarted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use super::output::{Layout, TerminalReporter};
use super::{CliError, Context};
use crate::config::Config;
use crate::report::{render_summary, LiveFeed, SummaryStyle};
use crate::run::driver::{Run, Settings};
use crate::run::watcher::{cycle_plan, definition_changes, rerun_set, FileEvents, WatchSet};
use crate::run::{self, Job, Plan, Streams, TaskStatus};

#[derive(Debug, clap::Args)]
pub(super) struct WatchArgs {
    /// Tasks to run and keep up to date, e.g. `build` or `dev` (services among them are kept running).
    #[arg(value_name = "TARGET", required = true)]
    targets: Vec<String>,
    /// How long to wait after a change for more before running (a save is often several events), in ms.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    debounce: u64,
    /// Run at most N commands at once (default: `[settings] jobs`, else one per CPU); cache lookups take no slot.
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    jobs: Option<u32>,
    /// Give a var of [vars] another value (as `cairn run --set`).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = super::run::parse_assignment)]
    set: Vec<(String, String)>,
    /// An age identity file to decrypt tasks' secrets with, tried first.
    #[arg(long = "identity", short = 'i', value_name = "FILE")]
    identity: Vec<std::path::PathBuf>,
}

/// The loaded configuration and the plan of the targets.
struct Loaded {
    config: Arc<Config>,
    plan: Plan,
}

fn load(context: &Context, args: &WatchArgs) -> Result<Loaded, CliError> {
    let (config, mut graph) = context.load_with(&args.set)?;
    let selection = graph.select(&args.targets)?;
    let plan = Plan::new(&graph, &selection, &[]);
    // Nobody is there to answer between saves, and a change must never deploy.
    if let Some(job) = plan
        .jobs
        .iter()
        .find(|j| j.confirm.is_some() || j.protected)
    {
        return Err(CliError::Watch {
            message: format!(
                "`{}` asks for confirmation, so `cairn watch` does not run it",
                job.label
            ),
            help: Some(
                "watch the tasks that build and check; run the others with `cairn run`".into(),
            ),
        });
    }
    Ok(Loaded { config, plan })
}

/// tasks.toml and the data files it reads, relative to the root.
fn config_files(config: &Config) -> Vec<String> {
    let name = config
        .path
        .strip_prefix(&config.root)
        .ok()
        .and_then(|p| p.to_str())
        .unwrap_or("tasks.toml")
        .replace('\\', "/");
    let mut files = vec![name];
    files.extend(config.data_files.iter().cloned());
    files
}

pub(super) fn watch(context: &Context, args: &WatchArgs) -> Result<i32, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CliError::Io {
            what: "cannot start the watcher".into(),
            source,
        })?;
    let (mut interrupt, mut terminate) = runtime
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
            ))
        })
        .map_err(|source| CliError::Io {
            what: "cannot listen for Ctrl-C".into(),
            source,
        })?;
    let mut loaded = load(context, args)?;
    let mut rerun = vec![true; loaded.plan.jobs.len()];
    let mut succeeded: HashSet<String> = HashSet::new();
    let mut services = Services::default();
    let mut set = WatchSet::of(
        &loaded.plan,
        &loaded.config.root,
        config_files(&loaded.config),
    );
    let mut events = runtime.block_on(async { FileEvents::start(&loaded.config.root, &set) })?;
    let quiet = Duration::from_millis(args.debounce);
    // Paths that changed while tasks.toml did not load: they count once it does again.
    let mut pending: Vec<String> = Vec::new();
    let mut first = true;
    let mut broken = false;

    let code = loop {
        if rerun.iter().any(|r| *r) {
            let plan = cycle_plan(&loaded.plan, &rerun, &succeeded);
            let working = plan
                .jobs
                .iter()
                .filter(|j| !j.commands.is_empty() || j.plugin.is_some())
                .count();
            if working > 0 || first {
                match run_once(context, args, &loaded.config, plan)? {
                    Cycle::Ran(results) => {
                        for (label, ok) in results {
                            if ok {
                                succeeded.insert(label);
                            } else {
                                succeeded.remove(&label);
                            }
                        }
                    }
                    Cycle::Interrupted(code) => break code,
                }
            }
        }
        services.update(&loaded, &rerun, &succeeded, args, context.color);
        if first && set.is_empty() {
            // Only tasks.toml can start another run: say why, so nobody waits for an edit that does nothing.
            eprintln!(
                "cairn: warning: the targets declare no `inputs` that match a file, so only a change to tasks.toml starts another run; declare what each task reads in `inputs`"
            );
        }
        first = false;
        eprintln!(
            "cairn: watching {} file{} for changes (Ctrl-C to stop)",
            set.len(),
            if set.len() == 1 { "" } else { "s" }
        );

        let batch = runtime.block_on(async {
            tokio::select! {
                batch = events.next_batch(quiet, |p| set.matters(p)) => Some(batch),
                _ = interrupt.recv() => None,
                _ = terminate.recv() => None,
            }
        });
        let Some(changed) = batch else { break 130 };
        if changed.is_empty() {
            // The watcher itself stopped: nothing more will come.
            break 1;
        }
        eprintln!("cairn: changed: {}", summarize(&changed));
        let reload = changed.iter().any(|p| set.is_config(p));
        pending.extend(changed);
        if broken && !reload {
            // Kept for when tasks.toml loads again.
            eprintln!("cairn: tasks.toml still does not load; waiting for it to be fixed");
            continue;
        }
        if reload {
            match load(context, args) {
                Ok(reloaded) => {
                    broken = false;
                    let changes = definition_changes(&loaded.plan, &reloaded.plan);
                    loaded = reloaded;
                    // The plan is new: what succeeded under the old one counts only where nothing changed.
                    rerun = rerun_set(&loaded.plan, &pending, &changes);
                    set = WatchSet::of(
                        &loaded.plan,
                        &loaded.config.root,
                        config_files(&loaded.config),
                    );
                    events =
                        runtime.block_on(async { FileEvents::start(&loaded.config.root, &set) })?;
                }
                Err(error) => {
                    broken = true;
                    eprintln!("{:?}", miette::Report::new(error));
                    eprintln!("cairn: tasks.toml does not load; fix it and save (the last good tasks stay meanwhile)");
                    rerun = vec![false; loaded.plan.jobs.len()];
                    continue;
                }
            }
        } else {
            rerun = rerun_set(&loaded.plan, &pending, &[]);
        }
        pending.clear();
    };
    services.stop_all();
    Ok(code)
}

/// The paths of a change, shortened when there are many.
fn summarize(paths: &[String]) -> String {
    let shown: Vec<&str> = paths.iter().take(5).map(String::as_str).collect();
    match paths.len() - shown.len() {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

enum Cycle {
    /// Each job's label and whether it succeeded.
    Ran(Vec<(String, bool)>),
    /// Ctrl-C or SIGTERM stopped the run: the exit status.
    Interrupted(i32),
}

fn run_once(
    context: &Context,
    args: &WatchArgs,
    config: &Arc<Config>,
    plan: Plan,
) -> Result<Cycle, CliError> {
    let jobs = args
        .jobs
        .map(|j| j as usize)
        .or(config.settings.jobs)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let use_cache = plan.uses_cache();
    let prepared = Run::prepare(
        Arc::clone(config),
        plan,
        Settings {
            targets: args.targets.clone(),
            jobs,
            keep_going: true,
            force: false,
            use_cache,
            dry_run: false,
            identities: args.identity.clone(),
            remote: None,
            remote_execution: None,
            stop: None,
        },
    )?;
    for warning in &prepared.warnings {
        eprintln!("{warning}");
    }
    let width = prepared
        .plan()
        .jobs
        .iter()
        .map(|j| j.label.chars().count())
        .max()
        .unwrap_or(0);
    let terminal: Arc<dyn run::Reporter> = Arc::new(TerminalReporter::new(
        Layout::Prefixed,
        context.color,
        width,
    ));
    // Each cycle shows in a dashboard's Live view like any run.
    let live = LiveFeed::open(&config.root, "watch", &args.targets).map(Arc::new);
    let reporter: Arc<dyn run::Reporter> = match &live {
        Some(live) => Arc::new(run::Reporters(vec![
            terminal,
            Arc::clone(live) as Arc<dyn run::Reporter>,
        ])),
        None => terminal,
    };
    let outcome = prepared.execute(Streams::Captured, reporter)?;
    if let Some(live) = &live {
        live.end(outcome.report.exit_code());
    }
    eprint!(
        "{}",
        render_summary(
            &outcome.plan,
            &outcome.report,
            SummaryStyle {
                color: context.color
            }
        )
    );
    if let Some(interruption) = outcome.report.interrupted {
        return Ok(Cycle::Interrupted(interruption.exit_code()));
    }
    Ok(Cycle::Ran(
        outcome
            .plan
            .jobs
            .iter()
            .zip(&outcome.report.results)
            .filter(|(job, _)| !job.service)
            .map(|(job, result)| {
                (
                    job.label.clone(),
                    matches!(result.status, TaskStatus::Succeeded),
                )
            })
            .collect(),
    ))
}

/// The services kept running beside the runs, by label.
#[derive(Default)]
struct Services {
    running: HashMap<String, Service>,
}

/// One service's process, run by its own one-job run on a thread of its own.
struct Service {
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

impl Services {
    /// Starts each service of the plan whose dependencies have succeeded, and restarts one whose own inputs or
    /// dependencies changed. One whose dependency failed keeps its last good process.
    fn update(
        &mut self,
        loaded: &Loaded,
        rerun: &[bool],
        succeeded: &HashSet<String>,
        args: &WatchArgs,
        color: bool,
    ) {
        let plan = &loaded.plan;
        let wanted: HashSet<&str> = plan
            .jobs
            .iter()
            .filter(|j| j.service)
            .map(|j| j.label.as_str())
            .collect();
        // Services no longer in the plan (tasks.toml changed) stop.
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|l| !wanted.contains(l.as_str()))
            .cloned()
            .collect();
        for label in gone {
            self.stop(&label);
        }
        for (i, job) in plan.jobs.iter().enumerate() {
            if !job.service {
                continue;
            }
            let ready = plan.deps[i]
                .iter()
                .all(|&d| succeeded.contains(&plan.jobs[d].label));
            let changed = rerun.get(i).copied().unwrap_or(true);
            // Started once already (running, or ended by itself): again only after a change.
            let started = self.running.contains_key(&job.label);
            if !ready || (started && !changed) {
                continue;
            }
            if self.running.contains_key(&job.label) {
                eprintln!("cairn: restarting `{}`", job.label);
                self.stop(&job.label);
            }
            self.start(Arc::clone(&loaded.config), job, args, color);
        }
    }

    fn start(&mut self, config: Arc<Config>, job: &Arc<Job>, args: &WatchArgs, color: bool) {
        let (stop, asked) = tokio::sync::watch::channel(false);
        let job = Arc::clone(job);
        let label = job.label.clone();
        let label_shown = label.clone();
        let settings = Settings {
            targets: vec![label.clone()],
            jobs: 1,
            keep_going: false,
            force: false,
            use_cache: false,
            dry_run: false,
            identities: args.identity.clone(),
            remote: None,
            remote_execution: None,
            stop: Some(asked),
        };
        let thread = std::thread::spawn(move || {
            let width = job.label.chars().count();
            let plan = Plan {
                jobs: vec![job],
                deps: vec![Vec::new()],
            };
            let terminal: Arc<dyn run::Reporter> =
                Arc::new(TerminalReporter::new(Layout::Prefixed, color, width));
            // A dashboard's Live view shows the service for as long as this process of it lives.
            let live = LiveFeed::open(&config.root, "service", std::slice::from_ref(&label_shown))
                .map(Arc::new);
            let reporter: Arc<dyn run::Reporter> = match &live {
                Some(live) => Arc::new(run::Reporters(vec![
                    terminal,
                    Arc::clone(live) as Arc<dyn run::Reporter>,
                ])),
                None => terminal,
            };
            let outcome = Run::prepare(config, plan, settings)
                .map(|run| run.execute(Streams::Captured, reporter));
            if let Some(live) = &live {
                let code = match &outcome {
                    Ok(Ok(outcome)) => outcome.report.exit_code(),
                    _ => 1,
                };
                live.end(code);
            }
            match outcome {
                Ok(Ok(outcome)) if outcome.report.interrupted.is_none() => {
                    let status = outcome.report.results.first().map(|r| r.status.clone());
                    eprintln!(
                        "cairn: service `{}` ended ({}); it starts again on the next change to what it reads",
                        outcome.plan.jobs[0].label,
                        match status {
                            Some(TaskStatus::Succeeded) => "exit 0".to_owned(),
                            Some(other) => other.name().to_owned(),
                            None => "not run".to_owned(),
                        }
                    );
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => eprintln!("{:?}", miette::Report::new(CliError::from(error))),
                Err(error) => eprintln!("{:?}", miette::Report::new(CliError::from(error))),
            }
        });
        self.running.insert(label, Service { stop, thread });
    }

    /// Stops a service's whole process group (SIGTERM, then SIGKILL after the grace) and waits for it.
    fn stop(&mut self, label: &str) {
        if let Some(service) = self.running.remove(label) {
            let _ = service.stop.send(true);
            let _ = service.thread.join();
        }
    }

    fn stop_all(&mut self) {
        let labels: Vec<String> = self.running.keys().cloned().collect();
        for label in &labels {
            if let Some(service) = self.running.get(label) {
                let _ = service.stop.send(true);
            }
        }
        for label in labels {
            self.stop(&label);
        }
    }
}
