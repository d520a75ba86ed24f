//! The cairn plugin protocol: JSON messages passed through Extism's input and output, shared by the host
//! (`cairn-plugin-host`) and plugins (through `cairn-pdk`). Every export answers with a [`Reply`].
//!
//! A plugin exports `describe` and, for each capability it has, that capability's exports:
//!
//! | capability | export | input | output |
//! |---|---|---|---|
//! | [`Capability::Secrets`] | `secret_get` | [`SecretRequest`] | [`SecretValue`] |
//! | [`Capability::Events`] | `on_events` | [`EventBatch`] | `()` |
//! | [`Capability::Executor`] | `wrap_command` | [`WrapRequest`] | [`WrapResponse`] |
//! | [`Capability::Task`] | `run_task` | [`TaskRequest`] | [`TaskResponse`] |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks. A host loads plugins whose `protocol` it supports.
pub const PROTOCOL_VERSION: u32 = 1;

/// Export names.
pub mod exports {
    /// Returns a [`super::Describe`].
    pub const DESCRIBE: &str = "describe";
    /// Secrets provider.
    pub const SECRET_GET: &str = "secret_get";
    /// Event sink.
    pub const ON_EVENTS: &str = "on_events";
    /// Executor.
    pub const WRAP_COMMAND: &str = "wrap_command";
    /// Task.
    pub const RUN_TASK: &str = "run_task";
}

/// Host functions a plugin may import (module `extism:host/user`), each only when granted.
pub mod host_functions {
    /// `cairn_log(LogRecord json)`: always available; the text goes through the redactor.
    pub const LOG: &str = "cairn_log";
    /// `cairn_now() -> u64` milliseconds since the Unix epoch: only with `allow.clock = true`.
    pub const NOW: &str = "cairn_now";
    /// `cairn_http(HttpRequest json) -> HttpResponse json`: only with `allow.hosts`.
    pub const HTTP: &str = "cairn_http";
}

/// What a plugin answers: `{"ok": …}` or `{"error": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply<T> {
    /// Success.
    Ok(T),
    /// A typed failure.
    Error(PluginError),
}

impl<T> From<Result<T, PluginError>> for Reply<T> {
    fn from(result: Result<T, PluginError>) -> Reply<T> {
        match result {
            Ok(value) => Reply::Ok(value),
            Err(error) => Reply::Error(error),
        }
    }
}

impl<T> Reply<T> {
    /// The reply as a `Result`.
    pub fn into_result(self) -> Result<T, PluginError> {
        match self {
            Reply::Ok(value) => Ok(value),
            Reply::Error(error) => Err(error),
        }
    }
}

/// A failure a plugin reports. Its message must never contain a secret value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// For the user.
    pub message: String,
    /// Whether trying again may work.
    #[serde(default)]
    pub retryable: bool,
}

impl PluginError {
    /// An error of `code` with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> PluginError {
        PluginError {
            code,
            retryable: matches!(code, ErrorCode::Unavailable),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

/// Kinds of plugin failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The thing asked for does not exist.
    NotFound,
    /// The credentials are valid but not allowed to do this.
    PermissionDenied,
    /// The credentials are missing or wrong.
    Unauthenticated,
    /// The service cannot be reached or is overloaded (retryable).
    Unavailable,
    /// The request or the configuration is wrong.
    Invalid,
    /// A bug in the plugin.
    Internal,
}

impl ErrorCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Invalid => "invalid",
            ErrorCode::Internal => "internal",
        }
    }
}

/// What `describe` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Describe {
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The protocol version it speaks.
    pub protocol: u32,
    /// What it can do.
    pub capabilities: Vec<Capability>,
    /// The settings it accepts in `[plugins.NAME] config`.
    #[serde(default)]
    pub config: Vec<ConfigField>,
    /// One line for `cairn plugins list`.
    #[serde(default)]
    pub description: String,
}

impl Describe {
    /// What a host knows of a plugin before it has described itself: the name it was loaded under.
    pub fn unknown(name: &str) -> Describe {
        Describe {
            name: name.to_string(),
            version: String::new(),
            protocol: 0,
            capabilities: Vec::new(),
            config: Vec::new(),
            description: String::new(),
        }
    }
}

/// A plugin capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Provides secrets: `secret_get`.
    Secrets,
    /// Receives run and task events: `on_events`.
    Events,
    /// Rewrites a task's command before cairn spawns it: `wrap_command`.
    Executor,
    /// Runs a task itself on its input files: `run_task`.
    Task,
}

impl Capability {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Secrets => "secrets",
            Capability::Events => "events",
            Capability::Executor => "executor",
            Capability::Task => "task",
        }
    }

    /// The export that implements it.
    pub fn export(self) -> &'static str {
        match self {
            Capability::Secrets => exports::SECRET_GET,
            Capability::Events => exports::ON_EVENTS,
            Capability::Executor => exports::WRAP_COMMAND,
            Capability::Task => exports::RUN_TASK,
        }
    }
}

/// One setting of a plugin's configuration schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigField {
    /// Its key.
    pub name: String,
    /// Its type.
    pub kind: FieldKind,
    /// Whether it must be given.
    #[serde(default)]
    pub required: bool,
    /// What it means.
    #[serde(default)]
    pub description: String,
}

/// Types of configuration values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// Any string.
    String,
    /// An `http://` or `https://` URL.
    Url,
    /// An integer.
    Integer,
    /// `true` or `false`.
    Boolean,
}

/// Who is asking, so a plugin can choose paths per environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// The task instance, e.g. `deploy:production`.
    pub task: String,
    /// The task's params.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// `secret_get`'s input: `vault:app/production#db_password` is `reference = "app/production"`,
/// `field = "db_password"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRequest {
    /// What to read, in the provider's terms (a path, an ARN, …).
    #[serde(rename = "ref")]
    pub reference: String,
    /// Which field of it, when it holds several.
    #[serde(default)]
    pub field: Option<String>,
    /// A specific version, when the provider keeps several.
    #[serde(default)]
    pub version: Option<String>,
    /// Who is asking.
    #[serde(default)]
    pub context: Context,
}

/// `secret_get`'s output.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretValue {
    /// The value.
    pub value: String,
    /// The version read, when the provider has versions.
    #[serde(default)]
    pub version: Option<String>,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue(version: {:?})", self.version)
    }
}

/// `on_events`' input: events since the last batch, already redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    /// In the order they happened.
    pub events: Vec<Event>,
}

/// Something that happened during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The run began.
    RunStarted {
        /// Milliseconds since the Unix epoch.
        at_ms: u64,
        /// The targets asked for.
        targets: Vec<String>,
        /// How many tasks the plan holds.
        tasks: usize,
    },
    /// A task began.
    TaskStarted {
        /// Milliseconds since the Unix epoch.
        at_ms: u64,
        /// The task instance.
        task: String,
    },
    /// A task ended.
    TaskFinished {
        /// Milliseconds since the Unix epoch.
        at_ms: u64,
        /// The task instance.
        task: String,
        /// How it ended (`succeeded`, `failed`, `timed_out`, `interrupted`, `skipped` on the wire).
        status: TaskOutcome,
        /// Its exit code, when it ran and exited.
        #[serde(default)]
        exit_code: Option<i32>,
        /// How long it took.
        duration_ms: u64,
        /// Where its result came from (`hit`, `miss` or `off` on the wire).
        cache: CacheOutcome,
        /// The task's params (`env = "production"`, …), for labels.
        #[serde(default)]
        params: BTreeMap<String, String>,
    },
    /// The run ended.
    RunFinished {
        /// Milliseconds since the Unix epoch.
        at_ms: u64,
        /// cairn's exit status.
        exit_code: i32,
        /// Tasks that succeeded (from the cache or not).
        succeeded: usize,
        /// Tasks that failed.
        failed: usize,
        /// Tasks not run.
        skipped: usize,
        /// How long the run took.
        duration_ms: u64,
    },
}

/// `wrap_command`'s input: the process cairn is about to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrapRequest {
    /// The task instance.
    pub task: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// Names (not values) of the variables the process gets.
    pub env: Vec<String>,
    /// Names of the variables that hold secrets (to forward without translation, e.g. `WSLENV`).
    #[serde(default)]
    pub secret_env: Vec<String>,
    /// The operating system cairn runs on (`linux`, `macos`, `windows`, …).
    #[serde(default)]
    pub host_os: String,
}

/// `wrap_command`'s output: what cairn starts instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrapResponse {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Working directory, when it changes.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Variables to add or replace.
    #[serde(default)]
    pub set_env: BTreeMap<String, String>,
}

/// `run_task`'s input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRequest {
    /// The task instance.
    pub task: String,
    /// Its params.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Its arguments (`-- ARGS`).
    #[serde(default)]
    pub args: Vec<String>,
    /// Its declared inputs (only the changed ones for an incremental task), relative to the tasks.toml
    /// directory.
    pub files: Vec<InputFile>,
}

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// Relative path with `/` separators.
    pub path: String,
    /// Its text (files that are not UTF-8 are passed with replacement characters).
    pub contents: String,
}

/// `run_task`'s output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResponse {
    /// The task's exit status: 0 for success.
    pub status: i32,
    /// Problems found, shown as `path:line:column: severity: message`.
    #[serde(default)]
    pub diagnostics: Vec<Diagnostic>,
    /// Text to show as the task's output.
    #[serde(default)]
    pub output: String,
}

/// A problem a task plugin found in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The file.
    pub path: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// How bad.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Fails the task.
    Error,
    /// Shown, does not fail.
    Warning,
    /// Shown.
    Info,
}

/// `cairn_log`'s input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// How important.
    pub level: LogLevel,
    /// The text (redacted by the host before it is shown).
    pub message: String,
}

/// Log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Detail for debugging.
    Debug,
    /// Progress.
    Info,
    /// Something the user should look at.
    Warn,
    /// Something failed.
    Error,
}

/// `cairn_http`'s input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// An `http://` or `https://` URL whose host and port were granted.
    pub url: String,
    /// Request headers.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Request body.
    #[serde(default)]
    pub body: Option<String>,
}

/// `cairn_http`'s output. Redirects are returned, never followed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Response headers (names in lower case).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The body as text.
    #[serde(default)]
    pub body: String,
}

/// How a task ended, as event plugins hear it. Serialized as protocol v1's strings; a value a newer cairn
/// adds reads as `Unknown` instead of failing the whole batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskOutcome {
    /// It ran and exited 0, or its result came from the cache.
    Succeeded,
    /// It exited non-zero (or was killed by a signal).
    Failed,
    /// It ran past its `timeout`.
    TimedOut,
    /// Ctrl-C or SIGTERM stopped it.
    Interrupted,
    /// It did not run: a dependency failed, or the run stopped first.
    Skipped,
    /// A status this plugin's protocol version does not know.
    #[serde(other)]
    Unknown,
}

impl TaskOutcome {
    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            TaskOutcome::Succeeded => "succeeded",
            TaskOutcome::Failed => "failed",
            TaskOutcome::TimedOut => "timed_out",
            TaskOutcome::Interrupted => "interrupted",
            TaskOutcome::Skipped => "skipped",
            TaskOutcome::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for TaskOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a task's result came from. Serialized as protocol v1's strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheOutcome {
    /// Restored from the cache (local or remote).
    Hit,
    /// Run, and its result stored.
    Miss,
    /// The cache was not used for it.
    Off,
    /// A value this plugin's protocol version does not know.
    #[serde(other)]
    Unknown,
}

impl CacheOutcome {
    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Off => "off",
            CacheOutcome::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_and_errors_have_their_documented_shape() {
        let reply: Reply<SecretValue> =
            Reply::Error(PluginError::new(ErrorCode::NotFound, "no such path"));
        let text = serde_json::to_string(&reply).unwrap();
        assert_eq!(
            text,
            r#"{"error":{"code":"not_found","message":"no such path","retryable":false}}"#
        );
        let ok: Reply<SecretValue> = serde_json::from_str(r#"{"ok":{"value":"v"}}"#).unwrap();
        assert_eq!(ok.into_result().unwrap().value, "v");
        let request: SecretRequest =
            serde_json::from_str(r#"{"ref":"app/prod","field":"pw"}"#).unwrap();
        assert_eq!(request.reference, "app/prod");
    }

    #[test]
    fn outcomes_keep_protocol_v1_strings_and_read_new_values_as_unknown() {
        let event = Event::TaskFinished {
            at_ms: 1,
            task: "deploy".into(),
            status: TaskOutcome::TimedOut,
            exit_code: None,
            duration_ms: 2,
            cache: CacheOutcome::Miss,
            params: BTreeMap::new(),
        };
        let text = serde_json::to_string(&event).unwrap();
        assert!(
            text.contains(r#""status":"timed_out""#) && text.contains(r#""cache":"miss""#),
            "{text}"
        );
        let newer = text
            .replace("timed_out", "quarantined")
            .replace("miss", "borrowed");
        let Event::TaskFinished { status, cache, .. } = serde_json::from_str(&newer).unwrap()
        else {
            panic!("not a task_finished");
        };
        assert_eq!(
            (status, cache),
            (TaskOutcome::Unknown, CacheOutcome::Unknown)
        );
    }

    #[test]
    fn events_are_tagged_by_type() {
        let event = Event::TaskStarted {
            at_ms: 1,
            task: "build".into(),
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"type":"task_started","at_ms":1,"task":"build"}"#
        );
    }
}
