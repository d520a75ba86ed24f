//! tasks.toml → a validated [`Config`], with every span kept for diagnostics.
//!
//! This module reads one file and checks everything that can be checked from the file alone: keys, types,
//! durations, param declarations and every `{{name}}`. Whether dependencies exist and form no cycle is the
//! graph's job, because that needs the pattern tasks expanded.

pub mod data;
mod duration;
mod error;
mod parse;
pub mod schema;
pub mod source;
pub mod suggest;
pub mod template;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use duration::{format_duration, format_size, parse_duration, parse_size};
pub use error::ConfigError;
pub use source::{SourceFile, Span};
pub use template::{Part, Template};

/// The file name cairn looks for.
pub const FILE_NAME: &str = "tasks.toml";

/// The shell used when neither `[settings]` nor the task names one.
pub const DEFAULT_SHELL: [&str; 4] = ["bash", "-eo", "pipefail", "-c"];

/// How long a task's processes get between SIGTERM and SIGKILL unless `[settings] kill_grace` says otherwise.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// The local cache's size limit unless `[settings] cache_max_size` says otherwise.
pub const DEFAULT_CACHE_MAX_SIZE: u64 = 5 << 30;

/// How long an unused cache entry is kept unless `[settings] cache_max_age` says otherwise.
pub const DEFAULT_CACHE_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);

/// A loaded and validated tasks.toml.
#[derive(Debug)]
pub struct Config {
    /// The file's text, for diagnostics.
    pub source: SourceFile,
    /// The file's path.
    pub path: PathBuf,
    /// The directory holding the file; task `dir`s are relative to it.
    pub root: PathBuf,
    /// `[settings]`.
    pub settings: Settings,
    /// `[vars]`, in file order.
    pub vars: Vec<Var>,
    /// `[plugins.*]`, in file order.
    pub plugins: Vec<PluginDef>,
    /// `[tasks.*]`, in file order.
    pub tasks: Vec<TaskDef>,
    /// `[remote_cache]`, if the file has one.
    pub remote_cache: Option<RemoteCacheDef>,
    /// `[remote_execution]`, if the file has one.
    pub remote_execution: Option<RemoteExecutionDef>,
    /// The data files params and matrices read values from, as named (relative to the root).
    pub data_files: Vec<String>,
}

/// How long one request to the remote cache may take unless `[remote_cache] timeout` says otherwise.
pub const DEFAULT_REMOTE_TIMEOUT: Duration = Duration::from_secs(10);

/// `[remote_cache]`: a server speaking the Bazel HTTP cache protocol, and whose results are trusted.
#[derive(Debug, Clone)]
pub struct RemoteCacheDef {
    /// The base URL (`…/ac/<hash>` and `…/cas/<hash>` go below it); `CAIRN_REMOTE_CACHE` may give it instead.
    pub url: Option<Spanned<String>>,
    /// Read only (the default), or read and publish.
    pub mode: RemoteMode,
    /// Where the bearer token comes from, if the server wants one.
    pub token: Option<Spanned<Credential>>,
    /// Where a writer's ed25519 signing key comes from.
    pub signing_key: Option<Spanned<Credential>>,
    /// The keys whose signed entries this repository accepts.
    pub trusted_writers: Vec<TrustedWriter>,
    /// How long a request may stay silent before the remote counts as failed.
    pub timeout: Duration,
    /// A PEM file of the certificate authorities to trust for `https://` instead of the built-in roots.
    pub ca_file: Option<Spanned<String>>,
    /// The table's header, for diagnostics.
    pub span: Span,
}

/// How long one call to the execution engine (other than running an action) may take unless
/// `[remote_execution] timeout` says otherwise.
pub const DEFAULT_EXECUTION_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Remote actions in flight at once unless `[remote_execution] jobs` says otherwise.
pub const DEFAULT_REMOTE_JOBS: usize = 32;

/// `[remote_execution]`: an engine speaking REAPI v2 that runs tasks with declared inputs and outputs.
#[derive(Debug, Clone)]
pub struct RemoteExecutionDef {
    /// `grpc://host:port` or `grpcs://host:port`; `CAIRN_REMOTE_EXECUTION` may give it instead.
    pub url: Option<Spanned<String>>,
    /// The engine's instance name.
    pub instance_name: String,
    /// Platform properties every action asks for (a task's `platform` adds to and overrides them).
    pub platform: Vec<(String, String)>,
    /// Remote actions in flight at once.
    pub jobs: usize,
    /// How long one call other than `Execute` may take.
    pub timeout: Duration,
    /// Where the bearer token comes from, if the engine wants one.
    pub token: Option<Spanned<Credential>>,
    /// When tasks run remotely.
    pub mode: ExecutionMode,
    /// A PEM file of the certificate authorities to trust for `grpcs://` instead of the built-in roots.
    pub ca_file: Option<Spanned<String>>,
    /// The table's header, for diagnostics.
    pub span: Span,
}

/// When tasks run on the execution engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionMode {
    /// Remotely when a task can, locally otherwise, and locally for the rest of the run if the engine fails.
    Auto,
    /// Remotely when a task can; an engine that fails fails the tasks sent to it.
    Required,
    /// Never.
    Off,
}

impl ExecutionMode {
    /// Parses `auto`, `required` or `off`.
    pub fn parse(text: &str) -> Option<ExecutionMode> {
        match text {
            "auto" => Some(ExecutionMode::Auto),
            "required" => Some(ExecutionMode::Required),
            "off" => Some(ExecutionMode::Off),
            _ => None,
        }
    }
}

/// What a machine may do with the remote cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteMode {
    /// Not used.
    Off,
    /// Results are fetched; nothing is published.
    Read,
    /// Results are fetched, and this machine's results are signed and published.
    ReadWrite,
}

impl RemoteMode {
    /// Parses `off`, `read` or `read-write`.
    pub fn parse(text: &str) -> Option<RemoteMode> {
        match text {
            "off" => Some(RemoteMode::Off),
            "read" => Some(RemoteMode::Read),
            "read-write" => Some(RemoteMode::ReadWrite),
            _ => None,
        }
    }
}

/// Where a credential is read from when a run needs it; never the credential itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An environment variable holding it.
    Env(String),
    /// A file holding it (relative to the repository root unless absolute; `~/` is the home directory).
    File(String),
    /// A key of a cairn secrets file (relative to the repository root).
    Secret {
        /// The secrets file.
        from: String,
        /// The key in it, dotted for nested maps.
        key: String,
    },
}

/// A public key in `trusted_writers`.
#[derive(Debug, Clone)]
pub struct TrustedWriter {
    /// The name shown in messages (given, or the key's first characters).
    pub name: String,
    /// The ed25519 public key.
    pub key: [u8; 32],
    /// Where it is written.
    pub span: Span,
}

/// The text form of a writer's public key: `ed25519:` and the key in base64.
pub const PUBLIC_KEY_PREFIX: &str = "ed25519:";

/// Parses `ed25519:<base64 of 32 bytes>`.
pub fn parse_public_key(text: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    let Some(encoded) = text.trim().strip_prefix(PUBLIC_KEY_PREFIX) else {
        return Err(format!("a writer's key starts with `{PUBLIC_KEY_PREFIX}`"));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("the key is not valid base64: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("an ed25519 public key has 32 bytes, this one {}", b.len()))
}

/// `[settings]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Parallel tasks at most; `None` means one per CPU.
    pub jobs: Option<usize>,
    /// The command prefix a task's lines are run with.
    pub shell: Vec<String>,
    /// Time between SIGTERM and SIGKILL when stopping a task.
    pub kill_grace: Duration,
    /// The local cache is trimmed to this many bytes, least recently used entries first.
    pub cache_max_size: u64,
    /// Entries unused for longer than this are removed.
    pub cache_max_age: Duration,
}

/// One `[vars]` entry.
#[derive(Debug, Clone)]
pub struct Var {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Where the name is written.
    pub span: Span,
}

/// One `[tasks.NAME]` table.
///
/// What every task has is here; the rest of its settings are in [`TaskSettings`], boxed only when the task sets
/// one of them, and read through this struct (`task.inputs`) by `Deref`: a large tasks.toml holds every task in
/// memory, and most tasks set little.
#[derive(Debug, Clone)]
pub struct TaskDef {
    /// The name, which may hold `{param}` placeholders.
    pub name: TaskName,
    /// Where the name is written.
    pub span: Span,
    /// `params.*`, in the order they appear in the name.
    pub params: Vec<ParamDef>,
    /// `run`: command lines, run in order.
    pub run: Vec<Template>,
    /// `deps`.
    pub deps: Vec<DepDef>,
    /// Every other setting; `None` when all of them have their defaults.
    settings: Option<Box<TaskSettings>>,
}

/// A task's settings beyond its name, params, commands and dependencies.
#[derive(Debug, Clone)]
pub struct TaskSettings {
    /// `description`.
    pub description: Option<String>,
    /// `inputs` globs.
    pub inputs: Vec<Spanned<String>>,
    /// `outputs` globs.
    pub outputs: Vec<Spanned<String>>,
    /// `inputs` as templates (vars, params, `{{param.field}}`), rendered per instance.
    pub input_templates: Vec<template::Template>,
    /// `outputs` as templates.
    pub output_templates: Vec<template::Template>,
    /// `env`, in file order.
    pub env: Vec<(String, Template)>,
    /// `dir`, relative to the file's directory.
    pub dir: Option<Template>,
    /// `timeout`.
    pub timeout: Option<Duration>,
    /// `retries`.
    pub retries: u32,
    /// `cache`; `None` means the default (cached when `inputs` are declared).
    pub cache: Option<bool>,
    /// `shell`, when the task overrides the default.
    pub shell: Option<Vec<String>>,
    /// `confirm`: the question asked before the task runs.
    pub confirm: Option<Template>,
    /// `confirm.when`: the question is asked only for instances whose params have these values (param
    /// index, allowed values); empty: always.
    pub confirm_when: Vec<(usize, Vec<String>)>,
    /// `env_hash`: variables read from the caller's environment whose values enter the cache key.
    pub env_hash: Vec<String>,
    /// `env_pass`: variables passed through from the caller's environment without entering the key.
    pub env_pass: Vec<String>,
    /// `deps_strategy`: what of a dependency enters this task's key.
    pub deps_strategy: DepsStrategy,
    /// `incremental`: give the command only the inputs that changed since the last success.
    pub incremental: bool,
    /// `service`: a long-running process (a dev server) that `cairn watch` keeps up and restarts on change.
    pub service: bool,
    /// `secrets`: values from a secrets file, given to the task in its environment or as files (boxed: few tasks
    /// have them, and a large tasks.toml holds every task in memory).
    pub secrets: Option<Box<TaskSecrets>>,
    /// `executor`: a plugin that rewrites each command before cairn starts it.
    pub executor: Option<Box<Spanned<String>>>,
    /// `plugin`: a plugin that runs the task on its input files instead of `run`.
    pub plugin: Option<Box<Spanned<String>>>,
    /// `lock`: a named lock held while the task runs (one cairn process at a time).
    pub lock: Option<Template>,
    /// `audit`: append a line to the audit log for every run of the task.
    pub audit: bool,
    /// `protected`: the task runs only with `--yes` in CI (and after a question on a terminal).
    pub protected: bool,
    /// `check`: a health check run after the task succeeds.
    pub check: Option<Box<CheckDef>>,
    /// `rollback`: run when the task or its check fails.
    pub rollback: Option<Template>,
    /// Variables the task fans out over: one instance per combination, named after the task.
    pub matrix: Vec<MatrixDef>,
    /// How many instances of the matrix run at once, and whether one failing stops the rest.
    pub rollout: Option<Rollout>,
    /// How far the task's results may use the remote cache (`remote = false | true | "off" | "read" |
    /// "read-write"`); unset, tasks with secrets stay local.
    pub remote: Option<RemoteMode>,
    /// `remote_execution`: `false` keeps the task on this machine; `true` sends it even with its secrets.
    pub remote_execution: Option<bool>,
    /// `platform`: REAPI platform properties this task adds to `[remote_execution] platform`.
    pub platform: Vec<(String, String)>,
}

impl TaskSettings {
    /// Every setting at its default: what a task that sets none of them has.
    pub const DEFAULT: TaskSettings = TaskSettings {
        description: None,
        inputs: Vec::new(),
        outputs: Vec::new(),
        input_templates: Vec::new(),
        output_templates: Vec::new(),
        env: Vec::new(),
        dir: None,
        timeout: None,
        retries: 0,
        cache: None,
        shell: None,
        confirm: None,
        confirm_when: Vec::new(),
        env_hash: Vec::new(),
        env_pass: Vec::new(),
        deps_strategy: DepsStrategy::Key,
        incremental: false,
        service: false,
        secrets: None,
        executor: None,
        plugin: None,
        lock: None,
        audit: false,
        protected: false,
        check: None,
        rollback: None,
        matrix: Vec::new(),
        rollout: None,
        remote: None,
        remote_execution: None,
        platform: Vec::new(),
    };

    /// Whether every setting has its default (destructured in full, so a new setting cannot be forgotten).
    fn is_default(&self) -> bool {
        let TaskSettings {
            description,
            inputs,
            outputs,
            input_templates,
            output_templates,
            env,
            dir,
            timeout,
            retries,
            cache,
            shell,
            confirm,
            confirm_when,
            env_hash,
            env_pass,
            deps_strategy,
            incremental,
            service,
            secrets,
            executor,
            plugin,
            lock,
            audit,
            protected,
            check,
            rollback,
            matrix,
            rollout,
            remote,
            remote_execution,
            platform,
        } = self;
        description.is_none()
            && inputs.is_empty()
            && outputs.is_empty()
            && input_templates.is_empty()
            && output_templates.is_empty()
            && env.is_empty()
            && dir.is_none()
            && timeout.is_none()
            && *retries == 0
            && cache.is_none()
            && shell.is_none()
            && confirm.is_none()
            && confirm_when.is_empty()
            && env_hash.is_empty()
            && env_pass.is_empty()
            && *deps_strategy == DepsStrategy::Key
            && !incremental
            && !service
            && secrets.is_none()
            && executor.is_none()
            && plugin.is_none()
            && lock.is_none()
            && !audit
            && !protected
            && check.is_none()
            && rollback.is_none()
            && matrix.is_empty()
            && rollout.is_none()
            && remote.is_none()
            && remote_execution.is_none()
            && platform.is_empty()
    }
}

/// The settings every task without any of its own reads.
static DEFAULT_SETTINGS: TaskSettings = TaskSettings::DEFAULT;

impl TaskDef {
    /// A task from its parts; `settings` are kept only when one of them differs from its default.
    pub fn new(
        name: TaskName,
        span: Span,
        params: Vec<ParamDef>,
        run: Vec<Template>,
        deps: Vec<DepDef>,
        settings: TaskSettings,
    ) -> TaskDef {
        TaskDef {
            name,
            span,
            params,
            run,
            deps,
            settings: (!settings.is_default()).then(|| Box::new(settings)),
        }
    }
}

impl std::ops::Deref for TaskDef {
    type Target = TaskSettings;

    fn deref(&self) -> &TaskSettings {
        self.settings.as_deref().unwrap_or(&DEFAULT_SETTINGS)
    }
}

/// A variable a task fans out over (`matrix.NAME`), usable as `{{NAME}}` like a param.
#[derive(Debug, Clone)]
pub struct MatrixDef {
    /// Its name.
    pub name: String,
    /// Where it is declared.
    pub span: Span,
    /// Where its values come from.
    pub values: MatrixValues,
}

/// The values of a matrix variable.
#[derive(Debug, Clone)]
pub enum MatrixValues {
    /// Listed in tasks.toml.
    Listed(Vec<String>),
    /// Read from a data file; the key may name the task's params (`environments.{{env}}.hosts`).
    File {
        /// The file.
        file: Arc<data::DataFile>,
        /// The dotted key.
        key: Template,
        /// The key as written.
        key_text: String,
        /// Only table entries whose field of this name is `true`.
        filter: Option<String>,
        /// Where `key` is written.
        span: Span,
    },
}

/// `serial` / `max_parallel`: a rollout over the matrix, one (or N) instances at a time, stopping at the
/// first failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    /// Instances at once.
    pub max_parallel: usize,
    /// Whether each instance waits for the one before it (`serial = true`).
    pub serial: bool,
}

impl TaskDef {
    /// The names templates of this task may use as params: its params, then its matrix variables.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .map(|p| p.name.as_str())
            .chain(self.matrix.iter().map(|m| m.name.as_str()))
    }
}

impl MatrixValues {
    /// The values for an instance whose params (in the task's order) are `params`.
    pub fn resolve(
        &self,
        vars: &[String],
        params: &[String],
    ) -> Result<Vec<String>, data::QueryError> {
        match self {
            MatrixValues::Listed(values) => Ok(values.clone()),
            MatrixValues::File {
                file, key, filter, ..
            } => file.query(&key.render(vars, params, ""), filter.as_deref()),
        }
    }
}

/// A task's `check` table.
#[derive(Debug, Clone)]
pub struct CheckDef {
    /// `run`: the command; exit 0 means healthy.
    pub run: Template,
    /// `retries`: further tries after a failed one.
    pub retries: u32,
    /// `interval`: the wait between tries.
    pub interval: Duration,
}

/// One `[plugins.NAME]` table.
#[derive(Debug, Clone)]
pub struct PluginDef {
    /// Its name.
    pub name: String,
    /// Where the name is written.
    pub span: Span,
    /// `source`: the module, relative to the tasks.toml directory.
    pub source: Spanned<String>,
    /// `sha256`: the module's pinned hash (else plugins.lock must pin it).
    pub sha256: Option<Spanned<String>>,
    /// `built_by`: the task that builds the module from this repository; an unpinned module is loaded when
    /// it is the very file that task's last successful run produced.
    pub built_by: Option<Spanned<String>>,
    /// `config`, in file order.
    pub config: Vec<PluginSetting>,
    /// `allow.hosts`: `HOST:PORT` destinations.
    pub allow_hosts: Vec<Spanned<String>>,
    /// `allow.env`: host variables passed to it.
    pub allow_env: Vec<Spanned<String>>,
    /// `allow.clock`.
    pub allow_clock: bool,
    /// `limits`.
    pub limits: PluginLimits,
    /// `events`: send it the run's events.
    pub events: bool,
    /// `secrets`: credentials from cairn's secrets files (`NAME = "FILE#KEY"`), passed like `allow.env`.
    pub secrets: Vec<(String, Spanned<String>)>,
    /// `trust = "full"`: the plugin may be a task's `executor`, choosing the program cairn starts.
    pub trust_full: bool,
}

/// Where a plugin's `source` is downloaded from when it is not a file of the repository: `Some(Ok(url))` for
/// `https://…`, `http://…` and `github:OWNER/REPO@TAG/ASSET` (a release asset), `Some(Err(why))` for a
/// malformed one, `None` for a path. Plain `http://` is accepted: the pinned hash, not the transport, is what
/// is trusted.
pub fn remote_source(source: &str) -> Option<Result<String, String>> {
    if source.starts_with("https://") || source.starts_with("http://") {
        let host = source.split("://").nth(1).unwrap_or("");
        return Some(if host.is_empty() || host.starts_with('/') {
            Err(format!("`{source}` names no host"))
        } else {
            Ok(source.to_owned())
        });
    }
    let rest = source.strip_prefix("github:")?;
    let parsed = rest.split_once('@').and_then(|(repository, tail)| {
        let (owner, repo) = repository.split_once('/')?;
        let (tag, asset) = tail.split_once('/')?;
        let fine = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        (fine(owner) && fine(repo) && fine(tag) && fine(asset))
            .then(|| format!("https://github.com/{owner}/{repo}/releases/download/{tag}/{asset}"))
    });
    Some(
        parsed.ok_or_else(|| {
            format!("`{source}` is not of the form `github:OWNER/REPO@TAG/ASSET.wasm`")
        }),
    )
}

/// One entry of a plugin's `config`.
#[derive(Debug, Clone)]
pub struct PluginSetting {
    /// The key.
    pub key: Spanned<String>,
    /// The value.
    pub value: PluginValue,
    /// Where the value is written.
    pub span: Span,
}

/// A plugin setting's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginValue {
    /// A string.
    String(String),
    /// An integer, as written.
    Integer(String),
    /// A boolean.
    Boolean(bool),
}

impl PluginValue {
    /// The value as the plugin reads it.
    pub fn as_text(&self) -> String {
        match self {
            PluginValue::String(s) | PluginValue::Integer(s) => s.clone(),
            PluginValue::Boolean(b) => b.to_string(),
        }
    }
}

/// `[plugins.NAME] limits`; unset values take the host's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginLimits {
    /// `timeout` per call.
    pub timeout: Option<Duration>,
    /// `memory`, in bytes.
    pub memory: Option<u64>,
    /// `fuel` per call.
    pub fuel: Option<u64>,
}

/// A task's `secrets` table.
#[derive(Debug, Clone)]
pub struct TaskSecrets {
    /// `from`: the secrets file, relative to the tasks.toml directory, possibly naming params (not needed
    /// when every key names a secrets plugin).
    pub from: Option<Template>,
    /// Where `from` is written.
    pub from_span: Span,
    /// `env`: variable → dotted key in the file.
    pub env: Vec<(String, Spanned<String>)>,
    /// `files`: variable → dotted key; the variable holds the path of a private file with the value.
    pub files: Vec<(String, Spanned<String>)>,
    /// `allow_envs`: other environments' directories this task may read.
    pub allow_envs: Vec<String>,
}

impl TaskDef {
    /// Whether results may be reused: `cache` when set, else whether `inputs` are declared.
    pub fn cacheable(&self) -> bool {
        // A service never ends with a result to keep.
        !self.service && self.cache.unwrap_or(!self.inputs.is_empty())
    }
}

/// What of a dependency enters a task's cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepsStrategy {
    /// The dependency's own key: anything that could change it changes this task's key.
    Key,
    /// The hash of the dependency's declared outputs: a dependency that re-ran but produced the same files
    /// changes nothing.
    Outputs,
}

/// A value with the span it was written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it is written.
    pub span: Span,
}

/// A task name, split at its `{param}` placeholders.
#[derive(Debug, Clone)]
pub struct TaskName {
    /// The name as written, e.g. `deploy:{env}` (inline up to 24 bytes).
    pub text: compact_str::CompactString,
    /// Literal text and params, in order.
    pub parts: Vec<NamePart>,
}

/// A piece of a task name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePart {
    /// Literal text (inline up to 24 bytes).
    Literal(compact_str::CompactString),
    /// A param, by index into `TaskDef::params`.
    Param(usize),
}

/// A task parameter.
#[derive(Debug, Clone)]
pub struct ParamDef {
    /// Its name.
    pub name: String,
    /// The values it may take; `None` accepts any non-empty value.
    pub values: Option<Vec<String>>,
    /// The value used when a target or dependency gives none.
    pub default: Option<String>,
    /// `pattern`: a regular expression a free-form value must match entirely, instead of the safe characters.
    pub pattern: Option<regex::Regex>,
    /// `description`.
    pub description: Option<String>,
    /// When `values` come from a table of a data file: each entry's facts, for `{{param.field}}`.
    pub fields: Option<Arc<data::EntryFields>>,
    /// Where it is declared.
    pub span: Span,
}

/// Punctuation a free-form param value may hold besides ASCII letters and digits when its param declares no
/// `pattern`: none of it means anything to a shell.
pub const SAFE_VALUE_PUNCTUATION: &str = "._:/@%+=,-";

impl ParamDef {
    /// Whether `value` may be given to this param by a target or a dependency.
    pub fn accepts(&self, value: &str) -> bool {
        match (&self.values, &self.pattern) {
            (Some(values), _) => values.iter().any(|v| v == value),
            (None, Some(pattern)) => pattern.is_match(value),
            (None, None) => is_safe_free_value(value),
        }
    }

    /// What a value must look like, for an error about one that does not.
    pub fn expectation(&self) -> String {
        match (&self.values, &self.pattern) {
            (Some(values), _) => format!(
                "allowed: {}",
                values.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")
            ),
            (None, Some(pattern)) => format!("the value must match `{}`", pattern.as_str()),
            (None, None) => format!(
                "a value may hold ASCII letters, digits and `{SAFE_VALUE_PUNCTUATION}`, not start with `-` and have no `..` part; give the param a `pattern` to accept others (commands then refer to the value through its variable instead of holding it)"
            ),
        }
    }
}

/// Whether a free-form value is plain data in any shell command and any path: non-empty, made of ASCII letters,
/// digits and [`SAFE_VALUE_PUNCTUATION`], not an option (`-…`) and without a `..` component.
pub fn is_safe_free_value(value: &str) -> bool {
    !value.is_empty()
        && !value.starts_with('-')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || SAFE_VALUE_PUNCTUATION.contains(c))
        && !value.split('/').any(|part| part == "..")
}

/// One entry of `deps`.
#[derive(Debug, Clone)]
pub struct DepDef {
    /// The dependency's name, possibly naming params of this task.
    pub template: Template,
    /// The name as written (inline up to 24 bytes).
    pub text: compact_str::CompactString,
    /// Where it is written.
    pub span: Span,
}

impl TaskName {
    /// Whether the name has params.
    pub fn is_pattern(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, NamePart::Param(_)))
    }

    /// The instance name for the given param values, e.g. `deploy:production`.
    pub fn instance(&self, values: &[String]) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                NamePart::Literal(text) => out.push_str(text),
                NamePart::Param(i) => out.push_str(&values[*i]),
            }
        }
        out
    }

    /// The text before the first param with trailing separators removed (`deploy` for `deploy:{env}`), which
    /// names the task with every param at its default.
    pub fn base(&self) -> Option<&str> {
        match self.parts.first() {
            Some(NamePart::Literal(text)) if self.is_pattern() => {
                let base = text.trim_end_matches([':', '-', '/', '.', '_']);
                (!base.is_empty()).then_some(base)
            }
            _ => None,
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let root = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Config::parse(&display_name(path), &text, path.to_owned(), root)
    }

    /// Validates `text` as the contents of a tasks.toml named `name`, living in `root`.
    pub fn parse(
        name: &str,
        text: &str,
        path: PathBuf,
        root: PathBuf,
    ) -> Result<Config, ConfigError> {
        let source = SourceFile::new(name, Arc::from(text));
        parse::parse(source, text, path, root)
    }

    /// The values of `[vars]` in order, as templates render them.
    pub fn var_values(&self) -> Vec<String> {
        self.vars.iter().map(|v| v.value.clone()).collect()
    }

    /// The shell a task runs its lines with, and whether it is cairn's default.
    pub fn shell_for<'a>(&'a self, task: &'a TaskDef) -> &'a [String] {
        task.shell.as_deref().unwrap_or(&self.settings.shell)
    }
}

/// Finds tasks.toml in `start` or the closest directory above it.
pub fn discover(start: &Path) -> Result<PathBuf, ConfigError> {
    start
        .ancestors()
        .map(|dir| dir.join(FILE_NAME))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| ConfigError::NotFound {
            start: start.to_owned(),
        })
}

/// The name diagnostics show for a file: relative to the working directory when it is below it.
fn display_name(path: &Path) -> String {
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(&cwd).ok().map(Path::to_path_buf));
    relative
        .unwrap_or_else(|| path.to_owned())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::{Config, DepsStrategy};

    fn load(text: &str) -> Config {
        Config::parse(
            "tasks.toml",
            text,
            PathBuf::from("tasks.toml"),
            PathBuf::from("."),
        )
        .expect("valid")
    }

    #[test]
    fn a_task_setting_nothing_keeps_no_settings_and_reads_every_default() {
        let config = load("[tasks.plain]\nrun = \"true\"\n");
        let task = &config.tasks[0];
        assert!(task.settings.is_none());
        assert!(task.inputs.is_empty() && task.confirm.is_none() && !task.audit);
        assert_eq!(task.deps_strategy, DepsStrategy::Key);
        assert_eq!(task.retries, 0);
    }

    #[test]
    fn a_task_setting_anything_keeps_its_settings() {
        for (setting, holds) in [
            ("audit = true", (|t| t.audit) as fn(&super::TaskDef) -> bool),
            ("retries = 2", |t| t.retries == 2),
            ("description = \"d\"", |t| t.description.is_some()),
            ("inputs = [\"a\"]", |t| t.inputs.len() == 1),
            ("deps_strategy = \"outputs\"", |t| {
                t.deps_strategy == DepsStrategy::Outputs
            }),
            ("env = { A = \"1\" }", |t| t.env.len() == 1),
        ] {
            let config = load(&format!("[tasks.set]\nrun = \"true\"\n{setting}\n"));
            let task = &config.tasks[0];
            assert!(task.settings.is_some(), "{setting}");
            assert!(holds(task), "{setting}");
        }
    }
}
