//! Errors the command line reports, and the exit status each maps to.

use miette::Diagnostic;
use thiserror::Error;

use crate::config::ConfigError;
use crate::graph::GraphError;

/// Anything that stops a command before or instead of running tasks.
#[derive(Debug, Error, Diagnostic)]
pub enum CliError {
    /// The tasks.toml is missing or invalid.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Config(#[from] ConfigError),

    /// The tasks do not form a valid graph, or a target is unknown.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Graph(#[from] GraphError),

    /// The cache cannot be opened.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Cache(crate::cache::CacheError),

    /// What changed could not be found (`cairn affected`, `--affected`).
    #[error(transparent)]
    #[diagnostic(transparent)]
    Affected(#[from] crate::run::affected::AffectedError),

    /// `cairn watch` cannot watch these targets.
    #[error("{message}")]
    #[diagnostic(code(cairn::watch))]
    Watch {
        /// What is wrong.
        message: String,
        #[help]
        help: Option<String>,
    },

    /// Files cannot be watched.
    #[error(transparent)]
    #[diagnostic(transparent)]
    WatchFiles(#[from] crate::run::watcher::WatchError),

    /// The dashboard could not start.
    #[error("{0}")]
    #[diagnostic(
        code(cairn::ui),
        help("pick another port with `--port`, or 0 for any free one")
    )]
    Ui(#[from] crate::ui::UiError),

    /// Another runner's file could not be imported.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Import(#[from] crate::import::ImportError),

    /// A plugin crate could not be created or built.
    #[error("{message}")]
    #[diagnostic(code(cairn::plugins::author))]
    PluginCrate {
        /// What went wrong.
        message: String,
        #[help]
        help: Option<String>,
    },

    /// A secrets command failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Secrets(#[from] crate::secrets::SecretsError),

    /// `--set` names a var tasks.toml does not declare.
    #[error("`--set {name}=…`: there is no var `{name}` in [vars]")]
    #[diagnostic(code(cairn::run::unknown_var))]
    UnknownVar {
        /// The name given.
        name: String,
        #[help]
        help: String,
    },

    /// A git hook cannot be installed or removed.
    #[error("{message}")]
    #[diagnostic(code(cairn::hooks))]
    Hooks {
        /// What is wrong.
        message: String,
        #[help]
        help: Option<String>,
    },

    /// The remote cache is configured in a way a run cannot use.
    #[error("{message}")]
    #[diagnostic(code(cairn::remote_cache))]
    RemoteCache {
        /// What is wrong.
        message: String,
        #[help]
        help: Option<String>,
    },

    /// `cairn query` found nothing at the key.
    #[error("{message}")]
    #[diagnostic(code(cairn::query))]
    Query {
        /// What is missing.
        message: String,
        #[help]
        help: Option<String>,
    },

    /// A task asks for confirmation and there is no terminal to ask on.
    #[error(
        "task `{task}` asks for confirmation (\"{question}\"), and there is no terminal to ask on"
    )]
    #[diagnostic(
        code(cairn::run::needs_confirmation),
        help("pass `--yes` to confirm it ahead of time")
    )]
    NeedsConfirmation {
        /// The task.
        task: String,
        /// Its question.
        question: String,
    },

    /// The user answered no.
    #[error("not confirmed: `{task}` was not run, and neither was anything else")]
    #[diagnostic(code(cairn::run::declined))]
    Declined {
        /// The task.
        task: String,
    },

    /// `-- ARGS` given to a target that runs no command.
    #[error("`{task}` runs no command of its own, so it cannot take `-- {args}`")]
    #[diagnostic(
        code(cairn::run::args_without_command),
        help("pass the arguments to a task with `run`")
    )]
    ArgsWithoutCommand {
        /// The task.
        task: String,
        /// The args as given.
        args: String,
    },

    /// The runtime or terminal failed in a way cairn cannot recover from.
    #[error("{what}: {source}")]
    #[diagnostic(code(cairn::io))]
    Io {
        /// What cairn was doing.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl From<crate::run::driver::DriverError> for CliError {
    fn from(error: crate::run::driver::DriverError) -> CliError {
        use crate::run::driver::DriverError;
        match error {
            DriverError::Secrets(error) => CliError::Secrets(error),
            DriverError::Cache(error) => CliError::Cache(error),
            DriverError::Io { what, source } => CliError::Io { what, source },
        }
    }
}

impl CliError {
    /// The exit status: 2 for a usage or configuration problem, 1 when the user declined.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Declined { .. }
            | CliError::Io { .. }
            | CliError::Cache(_)
            | CliError::Secrets(_)
            | CliError::Query { .. }
            | CliError::Hooks { .. }
            | CliError::WatchFiles(_)
            | CliError::Ui(_)
            | CliError::PluginCrate { .. }
            | CliError::Affected(crate::run::affected::AffectedError::Git { .. }) => 1,
            _ => 2,
        }
    }
}
