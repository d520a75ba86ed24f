//! The command line: argument parsing, one function per subcommand, and the only place that prints reports
//! or picks exit codes.

mod affected;
mod bench;
mod cache;
mod completions;
mod engine;
mod error;
mod history;
mod hooks;
mod import;
mod list;
mod output;
mod plugin_author;
mod plugins;
mod progress;
mod remote;
mod report;
mod run;
mod secrets;
mod ui;
mod watch;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config};
use crate::graph::{GraphFormat, TaskGraph};
pub use error::CliError;

/// cairn: run the tasks of a repository that many machines deploy from.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, propagate_version = true)]
pub struct Cli {
    /// The tasks.toml to use (default: the closest one in this directory or above).
    #[arg(short = 'f', long = "file", global = true, value_name = "PATH")]
    file: Option<PathBuf>,

    /// When to use colours.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run tasks and everything they depend on.
    Run(run::RunArgs),
    /// List tasks with their params and descriptions.
    List(list::ListArgs),
    /// Run targets, then again whenever what they read changes; keep `service` tasks running beside them.
    Watch(watch::WatchArgs),
    /// Which tasks a change affects: files changed since a commit (the working tree included) matched against
    /// each task's inputs, then every task depending on them.
    Affected(affected::AffectedArgs),
    /// Print the task graph as Graphviz dot, Mermaid or JSON.
    Graph(GraphArgs),
    /// Load and validate tasks.toml; exit 0 when it is valid, 1 when not.
    Check,
    /// Explain why a task's cache key differs from its last successful run.
    Why(cache::WhyArgs),
    /// Inspect or trim the local cache.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Check the execution engine: resolved settings, its capabilities, a round trip and a live probe action.
    Remote(engine::RemoteArgs),
    /// Manage SOPS-encrypted secrets (age recipients): init, edit, set, get, ls, doctor, scan, updatekeys, rotate.
    Secrets(secrets::SecretsArgs),
    /// List, check and pin (plugins.lock) WebAssembly plugins; create, build and test your own.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// Run targets repeatedly, cold and warm, and report their timings (and regressions against a saved result).
    Bench(bench::BenchArgs),
    /// Show a recorded run (the latest by default) as text, or as a self-contained HTML report.
    Report(report::ReportArgs),
    /// Statistics of the last runs per task (durations, cache hit rate, failures, flakiness), or one task's runs.
    History(history::HistoryArgs),
    /// Install or remove the git pre-commit hook: a secrets scan of what is staged, then the cached `validate`.
    #[command(subcommand)]
    Hooks(hooks::HooksCommand),
    /// Print the values at a dotted key of a TOML data file (an inventory, say), one per line.
    Query {
        /// The TOML file.
        file: PathBuf,
        /// A dotted key: a table gives its keys, an array its items, a string, number or boolean itself.
        key: String,
        /// With a table of tables, only the entries whose field of this name is `true`.
        #[arg(long = "where", value_name = "FIELD")]
        filter: Option<String>,
    },
    /// Serve a local web dashboard: fleet, runs, tasks, cache, secrets layout and plugins.
    Ui(ui::UiArgs),
    /// Write a tasks.toml from a justfile, a Taskfile.yml, or package.json scripts with turbo.json.
    Import(import::ImportArgs),
    /// Print the JSON Schema of tasks.toml (draft 2020-12), for editors; also kept at schema/tasks.schema.json.
    Schema,
    /// Print a completion script for a shell.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: completions::Shell,
    },
    /// Print completion candidates (used by the completion scripts).
    #[command(name = "__complete", hide = true)]
    Complete {
        /// What to complete: `targets`, or `line` (the words of LINE, the command line up to the cursor).
        what: String,
        /// The command line up to the cursor, for `line`.
        line: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct GraphArgs {
    /// Draw only these targets and what they depend on (default: every task).
    targets: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = GraphFormatArg::Dot)]
    format: GraphFormatArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GraphFormatArg {
    Dot,
    Mermaid,
    Json,
}

/// Checks a command line (`["cairn", "run", …]`) against cairn's grammar without running it: the docs' tests
/// use it so that no guide shows a command cairn would reject.
pub fn check_command_line<I, T>(args: I) -> Result<(), String>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Cli::try_parse_from(args)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Parses the command line, runs the command and returns the process's exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = match cli.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
        }
    };
    install_report_handler(color);
    let context = Context {
        file: cli.file,
        color,
    };
    let outcome = match cli.command {
        Command::Run(args) => run::run(&context, args),
        Command::List(args) => list::list(&context, &args),
        Command::Import(args) => import::import(&args),
        Command::Watch(args) => watch::watch(&context, &args),
        Command::Affected(args) => affected::affected(&context, &args),
        Command::Graph(args) => graph(&context, &args),
        Command::Check => check(&context),
        Command::Schema => {
            print!("{}", crate::config::schema::schema_text());
            Ok(0)
        }
        Command::Why(args) => cache::why(&context, &args),
        Command::Cache(command) => cache::cache(&context, &command),
        Command::Remote(args) => engine::remote(&context, &args),
        Command::Secrets(args) => secrets::secrets(args),
        Command::Plugins(command) => plugins::plugins(&context, &command),
        Command::Hooks(command) => hooks::hooks(&command),
        Command::History(args) => history::history(&context, &args),
        Command::Bench(args) => bench::bench(&context, &args),
        Command::Report(args) => report::report(&context, &args),
        Command::Ui(args) => ui::ui(&context, &args),
        Command::Query { file, key, filter } => query(&file, &key, filter.as_deref()),
        Command::Completions { shell } => {
            print!("{}", completions::script(shell));
            Ok(0)
        }
        Command::Complete { what, line } => {
            list::complete(&context, &what, line.as_deref());
            Ok(0)
        }
    };
    match outcome {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            let code = error.exit_code();
            eprintln!("{:?}", miette::Report::new(error));
            ExitCode::from(code)
        }
    }
}

/// What every subcommand needs from the global flags.
pub(crate) struct Context {
    file: Option<PathBuf>,
    color: bool,
}

impl Context {
    /// Finds, loads and validates the tasks.toml.
    fn load(&self) -> Result<(Arc<Config>, TaskGraph), CliError> {
        self.load_with(&[])
    }

    /// Like [`Context::load`], with some `[vars]` given other values for this run (`--set NAME=VALUE`).
    fn load_with(
        &self,
        overrides: &[(String, String)],
    ) -> Result<(Arc<Config>, TaskGraph), CliError> {
        let path = match &self.file {
            Some(path) => path.clone(),
            None => {
                let cwd = std::env::current_dir().map_err(|source| CliError::Io {
                    what: "cannot read the current directory".into(),
                    source,
                })?;
                config::discover(&cwd)?
            }
        };
        let mut config = Config::load(&absolute(&path))?;
        // `.cairn/` holds run records, cached outputs and secrets' working files: its owner's alone. Best
        // effort: a read-only checkout can still be listed and checked.
        let _ = crate::atomic::private_dir(&config.root.join(".cairn"));
        for (name, value) in overrides {
            match config.vars.iter_mut().find(|v| v.name == *name) {
                Some(var) => var.value.clone_from(value),
                None => {
                    return Err(CliError::UnknownVar {
                        name: name.clone(),
                        help: config::suggest::did_you_mean(
                            name,
                            config.vars.iter().map(|v| v.name.as_str()),
                        )
                        .unwrap_or_else(|| {
                            format!("`--set` changes a var of [vars] for one run; declare `{name} = \"…\"` there first")
                        }),
                    })
                }
            }
        }
        let config = Arc::new(config);
        let graph = TaskGraph::build(Arc::clone(&config))?;
        Ok((config, graph))
    }
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_owned())
    }
}

fn install_report_handler(color: bool) {
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .color(color)
                .unicode(true)
                .terminal_links(false)
                .force_graphical(true)
                .width(100)
                .build(),
        )
    }));
}

fn check(context: &Context) -> Result<i32, CliError> {
    match context.load() {
        Ok((config, graph)) => {
            eprintln!(
                "cairn: `{}` is valid: {} tasks, {} instances",
                config.source.name(),
                config.tasks.len(),
                graph.nodes().len()
            );
            Ok(0)
        }
        Err(error) => {
            eprintln!("{:?}", miette::Report::new(error));
            Ok(1)
        }
    }
}

fn query(file: &Path, key: &str, filter: Option<&str>) -> Result<i32, CliError> {
    let name = file.display().to_string();
    let data =
        config::data::DataFile::read(Path::new("."), &name).map_err(|source| CliError::Io {
            what: format!("cannot read `{name}`"),
            source,
        })?;
    let found = match filter {
        Some(field) => data.query(key, Some(field)),
        None => data.lookup(key),
    };
    match found {
        Ok(values) => {
            for value in values {
                println!("{value}");
            }
            Ok(0)
        }
        Err(error) => Err(match error.span {
            Some(span) => CliError::Config(config::ConfigError::DataFile {
                message: error.message,
                src: data.source.clone(),
                span: config::source::to_source_span(&span),
                help: error.help,
            }),
            None => CliError::Query {
                message: error.message,
                help: error.help,
            },
        }),
    }
}

fn graph(context: &Context, args: &GraphArgs) -> Result<i32, CliError> {
    let (_, mut graph) = context.load()?;
    let selection = if args.targets.is_empty() {
        graph.select_all()
    } else {
        graph.select(&args.targets)?
    };
    let format = match args.format {
        GraphFormatArg::Dot => GraphFormat::Dot,
        GraphFormatArg::Mermaid => GraphFormat::Mermaid,
        GraphFormatArg::Json => GraphFormat::Json,
    };
    print!("{}", graph.render(&selection, format));
    Ok(0)
}
