//! Walks the TOML document by hand, so every problem is collected with its span and unknown keys get a
//! "did you mean".

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use toml::de::{DeTable, DeValue};
use toml::Spanned as TomlSpanned;

use super::data::{DataFile, QueryError};
use super::source::{span_within_string, to_source_span, SourceFile, Span};
use super::suggest::did_you_mean;
use super::template::{self, Part, Piece, Template, ARGS_NAME, CHANGED_NAME, RESERVED_NAMES};
use super::{
    parse_duration, parse_public_key, CheckDef, Config, ConfigError, Credential, DepDef,
    DepsStrategy, ExecutionMode, MatrixDef, MatrixValues, NamePart, ParamDef, PluginDef,
    PluginLimits, PluginSetting, PluginValue, RemoteCacheDef, RemoteExecutionDef, RemoteMode,
    Rollout, Settings, Spanned, TaskDef, TaskName, TaskSecrets, TaskSettings, TrustedWriter, Var,
    DEFAULT_CACHE_MAX_AGE, DEFAULT_CACHE_MAX_SIZE, DEFAULT_EXECUTION_CALL_TIMEOUT,
    DEFAULT_KILL_GRACE, DEFAULT_REMOTE_JOBS, DEFAULT_REMOTE_TIMEOUT, DEFAULT_SHELL,
    PUBLIC_KEY_PREFIX,
};

type Value<'i> = TomlSpanned<DeValue<'i>>;
type Key<'i> = TomlSpanned<std::borrow::Cow<'i, str>>;

mod matrix;
mod params;
mod plugins;
mod remote_cache;
mod sections;
mod task;
#[cfg(test)]
mod tests;

pub(crate) const TOP_KEYS: &[&str] = &[
    "settings",
    "vars",
    "plugins",
    "tasks",
    "remote_cache",
    "remote_execution",
];
pub(crate) const EXECUTION_KEYS: &[&str] = &[
    "url",
    "instance_name",
    "platform",
    "jobs",
    "timeout",
    "token",
    "mode",
    "ca_file",
];
pub(crate) const REMOTE_KEYS: &[&str] = &[
    "url",
    "mode",
    "token",
    "signing_key",
    "trusted_writers",
    "timeout",
    "ca_file",
];
pub(crate) const PLUGIN_KEYS: &[&str] = &[
    "source", "sha256", "config", "allow", "limits", "events", "secrets", "built_by", "trust",
];
pub(crate) const ALLOW_KEYS: &[&str] = &["hosts", "env", "clock"];
pub(crate) const LIMIT_KEYS: &[&str] = &["timeout", "memory", "fuel"];
pub(crate) const SETTINGS_KEYS: &[&str] = &[
    "jobs",
    "shell",
    "kill_grace",
    "cache_max_size",
    "cache_max_age",
];
pub(crate) const TASK_KEYS: &[&str] = &[
    "description",
    "run",
    "deps",
    "params",
    "inputs",
    "outputs",
    "env",
    "dir",
    "timeout",
    "retries",
    "cache",
    "shell",
    "confirm",
    "env_hash",
    "env_pass",
    "deps_strategy",
    "incremental",
    "secrets",
    "executor",
    "plugin",
    "lock",
    "audit",
    "protected",
    "check",
    "rollback",
    "matrix",
    "serial",
    "max_parallel",
    "remote",
    "service",
    "remote_execution",
    "platform",
];
pub(crate) const QUERY_KEYS: &[&str] = &["from", "key", "where"];
/// Combinations of param values checked against a matrix's data file at load time; more are checked when used.
const MAX_CHECKED_QUERIES: usize = 256;
pub(crate) const CHECK_KEYS: &[&str] = &["run", "retries", "interval"];
pub(crate) const SECRETS_KEYS: &[&str] = &["from", "env", "files", "allow_envs"];
pub(crate) const PARAM_KEYS: &[&str] = &["values", "default", "pattern", "description"];
pub(crate) const CONFIRM_KEYS: &[&str] = &["question", "when"];
pub(crate) const CREDENTIAL_KEYS: &[&str] = &["env", "file", "secret", "from"];
pub(crate) const WRITER_KEYS: &[&str] = &["name", "key"];
const MAX_RETRIES: i64 = 100;

/// A file at least this large is parsed piece by piece (see [`sections`]); smaller ones in one go. Below it
/// (about 30,000 tasks) the whole parse is as fast and its memory no concern: pieces cost some work of their
/// own (the cut scan, the check that no task is in two pieces) that only pays off for large files.
#[cfg(not(test))]
const PIECEWISE_FROM: usize = 2 * 1024 * 1024;
/// Unit tests compare pieces with the whole on files a debug build parses quickly.
#[cfg(test)]
const PIECEWISE_FROM: usize = 256 * 1024;
/// The smallest piece: large enough that a piece's fixed cost (a parser, a document) does not count.
const MIN_PIECE: usize = 64 * 1024;

thread_local! {
    /// Where the piece being read starts in tasks.toml: the parser's spans are relative to the piece, every
    /// span the loader keeps or reports is relative to the file. Zero outside a piecewise parse.
    static PIECE_START: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Where `spanned` is written in tasks.toml.
fn at<T>(spanned: &TomlSpanned<T>) -> Span {
    let offset = PIECE_START.with(std::cell::Cell::get);
    let span = spanned.span();
    span.start + offset..span.end + offset
}

/// Sets the start of the piece being read, and back to zero when dropped (also on unwinding).
struct PieceStart;

impl PieceStart {
    fn set(offset: usize) -> PieceStart {
        PIECE_START.with(|start| start.set(offset));
        PieceStart
    }
}

impl Drop for PieceStart {
    fn drop(&mut self) {
        PIECE_START.with(|start| start.set(0));
    }
}

pub(super) fn parse(
    source: SourceFile,
    text: &str,
    path: PathBuf,
    root: PathBuf,
) -> Result<Config, ConfigError> {
    if text.len() >= PIECEWISE_FROM {
        let (pieces, task_headers) = sections::pieces_and_tasks(text, MIN_PIECE);
        if pieces.len() > 1 {
            if let Some(config) = parse_in_pieces(
                &source,
                text,
                &pieces,
                task_headers,
                path.clone(),
                root.clone(),
            ) {
                return config;
            }
        }
    }
    let name = source.name().to_owned();
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        let errors = syntax_errors
            .into_iter()
            .map(|e| {
                let span = e.span().unwrap_or(0..0);
                ConfigError::Syntax {
                    message: e.message().trim().to_owned(),
                    src: source.clone(),
                    span: to_source_span(&span),
                }
            })
            .collect();
        return Err(ConfigError::collect(&name, errors));
    }
    let mut walker = Walker::new(text, &source, &root);
    let mut document = document.into_inner();
    let top = walker.top_level(&document);
    // The tasks are most of a large file: each task's part of the document is freed as soon as it is read, so
    // the parsed document and the tasks made from it are not all in memory at once.
    let tasks = walker.tasks(document.remove("tasks"), &top.vars);
    walker.finish(source, path, root, top, tasks)
}

/// Parses `text` piece by piece: the first piece as a document, each later one for its tasks only, each
/// dropped once its tasks are read. `None` when the pieces do not parse as the whole would (a syntax error, a
/// task in two pieces, a piece holding more than tasks): the caller parses the whole file, which reports
/// exactly what is wrong where.
fn parse_in_pieces<'t>(
    source: &SourceFile,
    text: &'t str,
    pieces: &[std::ops::Range<usize>],
    task_headers: usize,
    path: PathBuf,
    root: PathBuf,
) -> Option<Result<Config, ConfigError>> {
    let (first, errors) = DeTable::parse_recoverable(&text[pieces[0].clone()]);
    if !errors.is_empty() {
        return None;
    }
    let mut walker = Walker::new(text, source, &root);
    let mut first = first.into_inner();
    // Task names borrow from the file where they can (unescaped keys): no allocation per task.
    let mut names: HashSet<std::borrow::Cow<'t, str>> = HashSet::with_capacity(task_headers + 1);
    let mut note_names = |tasks: Option<&Value<'t>>| -> bool {
        match tasks.map(TomlSpanned::get_ref) {
            Some(DeValue::Table(table)) => table
                .iter()
                .all(|(key, _)| names.insert(key.get_ref().clone())),
            Some(_) => false,
            None => true,
        }
    };
    if !note_names(first.get("tasks")) {
        return None;
    }
    let top = walker.top_level(&first);
    let mut tasks = Vec::with_capacity(task_headers + 1);
    tasks.extend(walker.tasks(first.remove("tasks"), &top.vars));
    drop(first);
    for piece in &pieces[1..] {
        let _start = PieceStart::set(piece.start);
        let (document, errors) = DeTable::parse_recoverable(&text[piece.clone()]);
        if !errors.is_empty() {
            return None;
        }
        let mut document = document.into_inner();
        if document.len() != 1 || !note_names(document.get("tasks")) {
            return None;
        }
        tasks.extend(walker.tasks(document.remove("tasks"), &top.vars));
    }
    Some(walker.finish(source.clone(), path, root, top, tasks))
}

/// What the top level of tasks.toml holds besides the tasks.
struct TopLevel {
    settings: Settings,
    vars: Vec<Var>,
    plugins: Vec<PluginDef>,
    remote_cache: Option<RemoteCacheDef>,
    remote_execution: Option<RemoteExecutionDef>,
}

impl<'t> Walker<'t> {
    fn new(text: &'t str, source: &SourceFile, root: &std::path::Path) -> Walker<'t> {
        Walker {
            text,
            source: source.clone(),
            errors: Vec::new(),
            plugin_names: Vec::new(),
            fully_trusted: Vec::new(),
            root: root.to_owned(),
            data_files: HashMap::new(),
        }
    }

    /// Reads everything but the tasks, and learns the plugins tasks may name.
    fn top_level(&mut self, document: &DeTable<'_>) -> TopLevel {
        self.check_keys(document, TOP_KEYS, "the top level");
        let settings = self.settings(document.get("settings"));
        let vars = self.vars(document.get("vars"));
        let plugins = self.plugins(document.get("plugins"));
        self.plugin_names = plugins.iter().map(|p| p.name.clone()).collect();
        self.fully_trusted = plugins
            .iter()
            .filter(|p| p.trust_full)
            .map(|p| p.name.clone())
            .collect();
        let remote_cache = document
            .get_key_value("remote_cache")
            .and_then(|(key, value)| self.remote_cache(key, value));
        let remote_execution = document
            .get_key_value("remote_execution")
            .and_then(|(key, value)| self.remote_execution(key, value));
        TopLevel {
            settings,
            vars,
            plugins,
            remote_cache,
            remote_execution,
        }
    }

    fn finish(
        self,
        source: SourceFile,
        path: PathBuf,
        root: PathBuf,
        top: TopLevel,
        tasks: Vec<TaskDef>,
    ) -> Result<Config, ConfigError> {
        if !self.errors.is_empty() {
            return Err(ConfigError::collect(source.name(), self.errors));
        }
        let mut data_files: Vec<String> = self.data_files.into_keys().collect();
        data_files.sort();
        Ok(Config {
            source,
            path,
            root,
            settings: top.settings,
            vars: top.vars,
            plugins: top.plugins,
            tasks,
            remote_cache: top.remote_cache,
            remote_execution: top.remote_execution,
            data_files,
        })
    }
}

struct Walker<'t> {
    text: &'t str,
    source: SourceFile,
    errors: Vec<ConfigError>,
    /// Declared plugins, which tasks may name.
    plugin_names: Vec<String>,
    /// Plugins declared with `trust = "full"`: the only ones a task may use as its `executor`.
    fully_trusted: Vec<String>,
    /// The directory of tasks.toml, which data files are relative to.
    root: PathBuf,
    /// Data files read so far, by the name tasks.toml gives them (`None`: unreadable, already reported).
    data_files: HashMap<String, Option<Arc<DataFile>>>,
}

/// The names a template may refer to.
#[derive(Clone, Copy)]
struct Scope<'a> {
    params: &'a [ParamDef],
    vars: &'a [Var],
    allow_args: bool,
    allow_changed: bool,
    /// Whether `{{param.field}}` may be used (glob patterns, where a list gives one pattern per item).
    allow_fields: bool,
    /// Variables that carry secrets: naming one in a template is an error, not an unknown name.
    secrets: &'a [String],
}

/// `table[key]`. A task's table holds a few keys and is asked for thirty: comparing them beats hashing the
/// name each time (a tenth of loading a large tasks.toml went to hashing).
fn lookup<'a, 'i>(table: &'a DeTable<'i>, key: &str) -> Option<&'a Value<'i>> {
    if table.len() <= 8 {
        table
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, value)| value)
    } else {
        table.get(key)
    }
}

fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl Walker<'_> {
    fn check_keys(&mut self, table: &DeTable<'_>, allowed: &[&str], context: &str) {
        for (key, _) in table.iter() {
            let key_text: &str = key.get_ref();
            if !allowed.contains(&key_text) {
                self.errors.push(ConfigError::UnknownKey {
                    key: key_text.to_owned(),
                    context: context.to_owned(),
                    src: self.source.clone(),
                    span: to_source_span(&at(key)),
                    help: did_you_mean(key_text, allowed.iter().copied())
                        .or_else(|| Some(format!("known keys: {}", allowed.join(", ")))),
                });
            }
        }
    }

    fn wrong_type(&mut self, key: &str, expected: &'static str, value: &Value<'_>) {
        self.errors.push(ConfigError::WrongType {
            key: key.to_owned(),
            expected,
            found: type_name(value.get_ref()),
            src: self.source.clone(),
            span: to_source_span(&at(value)),
        });
    }

    fn invalid(&mut self, key: &str, reason: impl Into<String>, span: &Span, help: Option<String>) {
        self.errors.push(ConfigError::InvalidValue {
            key: key.to_owned(),
            reason: reason.into(),
            src: self.source.clone(),
            span: to_source_span(span),
            help,
        });
    }

    fn table<'v, 'i>(&mut self, key: &str, value: &'v Value<'i>) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Some(table),
            _ => {
                self.wrong_type(key, "a table", value);
                None
            }
        }
    }

    /// `table[key]` read by `read` (each reader reports a wrong type at the value's span), when it is there.
    /// Every setting of a table is read through this one door, so each is one line: its key and its reader.
    fn field<T>(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
        read: impl FnOnce(&mut Self, &str, &Value<'_>) -> Option<T>,
    ) -> Option<T> {
        lookup(table, key).and_then(|value| read(self, key, value))
    }

    /// A boolean setting that is `false` when absent.
    fn flag(&mut self, table: &DeTable<'_>, key: &str) -> bool {
        self.field(table, key, Self::boolean).unwrap_or(false)
    }

    fn string(&mut self, key: &str, value: &Value<'_>) -> Option<Spanned<String>> {
        match value.get_ref() {
            DeValue::String(text) => Some(Spanned {
                value: text.to_string(),
                span: at(value),
            }),
            _ => {
                self.wrong_type(key, "a string", value);
                None
            }
        }
    }

    /// A string, or a number or boolean written without quotes (taken as its text).
    fn scalar_text(&mut self, key: &str, value: &Value<'_>) -> Option<Spanned<String>> {
        let text = match value.get_ref() {
            DeValue::String(text) => text.to_string(),
            DeValue::Integer(i) => i.as_str().to_owned(),
            DeValue::Float(f) => f.as_str().to_owned(),
            DeValue::Boolean(b) => b.to_string(),
            _ => {
                self.wrong_type(key, "a string", value);
                return None;
            }
        };
        Some(Spanned {
            value: text,
            span: at(value),
        })
    }

    fn strings(&mut self, key: &str, value: &Value<'_>) -> Option<Vec<Spanned<String>>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(key, "an array of strings", value);
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items.iter() {
            out.push(self.string(key, item)?);
        }
        Some(out)
    }

    fn string_or_strings(&mut self, key: &str, value: &Value<'_>) -> Option<Vec<Spanned<String>>> {
        match value.get_ref() {
            DeValue::String(_) => self.string(key, value).map(|s| vec![s]),
            DeValue::Array(_) => self.strings(key, value),
            _ => {
                self.wrong_type(key, "a string or an array of strings", value);
                None
            }
        }
    }

    fn boolean(&mut self, key: &str, value: &Value<'_>) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(key, "a boolean", value);
                None
            }
        }
    }

    fn integer(&mut self, key: &str, value: &Value<'_>, min: i64, max: i64) -> Option<i64> {
        let DeValue::Integer(raw) = value.get_ref() else {
            self.wrong_type(key, "an integer", value);
            return None;
        };
        let parsed = i64::from_str_radix(raw.as_str(), raw.radix())
            .ok()
            .filter(|n| (min..=max).contains(n));
        if parsed.is_none() {
            self.invalid(
                key,
                format!("expected a whole number from {min} to {max}"),
                &at(value),
                None,
            );
        }
        parsed
    }

    fn duration(&mut self, key: &str, value: &Value<'_>) -> Option<std::time::Duration> {
        let text = match value.get_ref() {
            DeValue::String(text) => text.to_string(),
            DeValue::Integer(i) => {
                let example = format!("{}s", i.as_str());
                self.invalid(
                    key,
                    "a duration needs a unit",
                    &at(value),
                    Some(format!(
                        "write it as a string with a unit, e.g. `\"{example}\"`"
                    )),
                );
                return None;
            }
            _ => {
                self.wrong_type(key, "a duration string such as \"30s\"", value);
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(d) if d.is_zero() => {
                self.invalid(key, "a duration must be longer than zero", &at(value), None);
                None
            }
            Ok(d) => Some(d),
            Err(reason) => {
                self.invalid(
                    key,
                    reason,
                    &at(value),
                    Some(
                        "use whole numbers with units ms, s, m, h or d, e.g. `90s`, `10m`, `1h30m`"
                            .into(),
                    ),
                );
                None
            }
        }
    }

    fn settings(&mut self, value: Option<&Value<'_>>) -> Settings {
        let mut settings = Settings {
            jobs: None,
            shell: DEFAULT_SHELL.iter().map(|s| s.to_string()).collect(),
            kill_grace: DEFAULT_KILL_GRACE,
            cache_max_size: DEFAULT_CACHE_MAX_SIZE,
            cache_max_age: DEFAULT_CACHE_MAX_AGE,
        };
        let Some(table) = value.and_then(|v| self.table("settings", v)) else {
            return settings;
        };
        self.check_keys(table, SETTINGS_KEYS, "[settings]");
        if let Some(v) = table.get("jobs") {
            settings.jobs = self.integer("jobs", v, 1, 4096).map(|n| n as usize);
        }
        if let Some(v) = table.get("shell") {
            if let Some(shell) = self.shell("shell", v) {
                settings.shell = shell;
            }
        }
        if let Some(v) = table.get("cache_max_size") {
            if let Some(size) = self.size("cache_max_size", v) {
                settings.cache_max_size = size;
            }
        }
        if let Some(v) = table.get("cache_max_age") {
            if let Some(age) = self.duration("cache_max_age", v) {
                settings.cache_max_age = age;
            }
        }
        if let Some(v) = table.get("kill_grace") {
            if let Some(grace) = self.duration("kill_grace", v) {
                settings.kill_grace = grace;
            }
        }
        settings
    }

    fn shell(&mut self, key: &str, value: &Value<'_>) -> Option<Vec<String>> {
        let parts = self.strings(key, value)?;
        if parts.is_empty() || parts[0].value.trim().is_empty() {
            self.invalid(
                key,
                "the shell needs at least a program",
                &at(value),
                Some("for example `shell = [\"bash\", \"-c\"]`".into()),
            );
            return None;
        }
        Some(parts.into_iter().map(|p| p.value).collect())
    }

    fn vars(&mut self, value: Option<&Value<'_>>) -> Vec<Var> {
        let Some(table) = value.and_then(|v| self.table("vars", v)) else {
            return Vec::new();
        };
        let mut vars = Vec::with_capacity(table.len());
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            if !template::is_identifier(name) || RESERVED_NAMES.contains(&name) {
                let reason = if RESERVED_NAMES.contains(&name) {
                    format!("`{name}` is a name cairn fills in itself")
                } else {
                    "a var name uses letters, digits, `_` and `-`, and starts with a letter"
                        .to_owned()
                };
                self.invalid(name, reason, &at(key), None);
                continue;
            }
            if let Some(text) = self.scalar_text(name, value) {
                vars.push(Var {
                    name: name.to_owned(),
                    value: text.value,
                    span: at(key),
                });
            }
        }
        vars
    }

    fn tasks(&mut self, value: Option<Value<'_>>, vars: &[Var]) -> Vec<TaskDef> {
        let Some(value) = value else {
            return Vec::new();
        };
        if self.table("tasks", &value).is_none() {
            return Vec::new();
        }
        let DeValue::Table(table) = value.into_inner() else {
            return Vec::new();
        };
        let mut tasks = Vec::with_capacity(table.len());
        for (key, value) in table {
            if let Some(task) = self.task(&key, &value, vars) {
                tasks.push(task);
            }
        }
        tasks
    }

    /// Environment variable names, each optionally ending in `*` to match a prefix (`"*"` alone matches all).
    fn env_patterns(&mut self, key: &str, value: &Value<'_>) -> Vec<String> {
        let names = self.strings(key, value).unwrap_or_default();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let stem = name.value.strip_suffix('*').unwrap_or(&name.value);
            let valid = stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !stem.starts_with(|c: char| c.is_ascii_digit())
                && !(stem.is_empty() && name.value.is_empty());
            if valid {
                out.push(name.value);
            } else {
                self.invalid(
                    key,
                    format!(
                        "`{}` is not a variable name or `PREFIX_*` pattern",
                        name.value
                    ),
                    &name.span,
                    None,
                );
            }
        }
        out
    }

    fn size(&mut self, key: &str, value: &Value<'_>) -> Option<u64> {
        let text = self.string(key, value)?;
        match super::parse_size(&text.value) {
            Ok(size) => Some(size),
            Err(reason) => {
                self.invalid(
                    key,
                    reason,
                    &text.span,
                    Some("for example `\"5GiB\"` or `\"500MiB\"`".into()),
                );
                None
            }
        }
    }

    fn globs(&mut self, key: &str, value: &Value<'_>) -> Vec<Spanned<String>> {
        let globs = self.strings(key, value).unwrap_or_default();
        for glob in &globs {
            // A pattern naming params is checked with a stand-in for each reference (its values are checked
            // as values); the references themselves are checked when the pattern is read as a template.
            let stand_in;
            let text = if glob.value.contains("{{") {
                let Ok(pieces) = template::scan(&glob.value, false) else {
                    continue;
                };
                stand_in = pieces
                    .into_iter()
                    .map(|piece| match piece {
                        Piece::Text(text) => text,
                        Piece::Name(..) => "x".to_owned(),
                    })
                    .collect::<String>();
                &stand_in
            } else {
                &glob.value
            };
            let pattern = text.strip_prefix('!').unwrap_or(text);
            if pattern.is_empty() {
                self.invalid(key, "the pattern is empty", &glob.span, None);
            } else if pattern.starts_with('/') {
                self.invalid(
                    key,
                    "patterns are relative to the tasks.toml directory",
                    &glob.span,
                    Some(format!(
                        "drop the leading `/`: `{}`",
                        pattern.trim_start_matches('/')
                    )),
                );
            } else if pattern.split('/').any(|c| c == "..") {
                self.invalid(
                    key,
                    "`..` would reach outside the repository",
                    &glob.span,
                    None,
                );
            } else if let Err(error) = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
            {
                self.invalid(
                    key,
                    format!("invalid pattern: {}", error.kind()),
                    &glob.span,
                    Some("patterns use `*`, `**`, `?`, `[abc]` and `{a,b}`".into()),
                );
            }
        }
        globs
    }

    /// Parses and resolves `{{name}}` references in a string value. `context` names where the string is, for
    /// error messages only, so it is built only when one is needed.
    fn template(
        &mut self,
        context: impl Fn() -> String,
        value: &Spanned<String>,
        single_brace: bool,
        scope: &Scope<'_>,
    ) -> Option<Template> {
        // Most strings hold no reference: they need no scan.
        if !value.value.contains('{') {
            return Some(Template::literal(value.value.clone()));
        }
        let pieces = match template::scan(&value.value, single_brace) {
            Ok(pieces) => pieces,
            Err(e) => {
                let span = span_within_string(self.text, &value.span, &value.value, e.range);
                self.errors.push(ConfigError::Template {
                    context: context(),
                    reason: e.message,
                    src: self.source.clone(),
                    span: to_source_span(&span),
                });
                return None;
            }
        };
        let mut parts = Vec::with_capacity(pieces.len());
        let mut ok = true;
        for piece in pieces {
            match piece {
                Piece::Text(t) => parts.push(Part::Literal(t.into())),
                Piece::Name(name, range) if name.contains('.') => {
                    match self.field_reference(&name, scope) {
                        Ok(part) => parts.push(part),
                        Err((message, help)) => {
                            ok = false;
                            let span =
                                span_within_string(self.text, &value.span, &value.value, range);
                            self.errors.push(ConfigError::Template {
                                context: context(),
                                reason: match help {
                                    Some(help) => format!("{message}; {help}"),
                                    None => message,
                                },
                                src: self.source.clone(),
                                span: to_source_span(&span),
                            });
                        }
                    }
                }
                Piece::Name(name, range) => {
                    if let Some(i) = scope.params.iter().position(|p| p.name == name) {
                        parts.push(Part::Param(i));
                    } else if name == ARGS_NAME && scope.allow_args {
                        parts.push(Part::Args);
                    } else if name == CHANGED_NAME && scope.allow_changed {
                        parts.push(Part::Changed);
                    } else if let Some(i) = scope.vars.iter().position(|v| v.name == name) {
                        parts.push(Part::Var(i));
                    } else if scope.secrets.contains(&name) {
                        ok = false;
                        let span = span_within_string(self.text, &value.span, &value.value, range);
                        self.errors.push(ConfigError::SecretInCommand {
                            name,
                            context: context(),
                            src: self.source.clone(),
                            span: to_source_span(&span),
                        });
                    } else {
                        ok = false;
                        let span = span_within_string(self.text, &value.span, &value.value, range);
                        let help = if name == ARGS_NAME {
                            Some("`{{args}}` is only available in `run`".to_owned())
                        } else if name == CHANGED_NAME {
                            Some("`{{changed}}` is available in `run` of a task with `incremental = true`".to_owned())
                        } else {
                            let candidates = scope
                                .params
                                .iter()
                                .map(|p| p.name.as_str())
                                .chain(scope.vars.iter().map(|v| v.name.as_str()));
                            did_you_mean(&name, candidates).or_else(|| {
                                Some(format!("declare it under [vars], e.g. `{name} = \"…\"`, or as a param of the task"))
                            })
                        };
                        self.errors.push(ConfigError::UnknownName {
                            name,
                            context: context(),
                            src: self.source.clone(),
                            span: to_source_span(&span),
                            help,
                        });
                    }
                }
            }
        }
        ok.then(|| Template::new(parts))
    }
}

impl Walker<'_> {
    /// Resolves `{{param.field}}`, or says why it cannot be used here.
    fn field_reference(
        &self,
        name: &str,
        scope: &Scope<'_>,
    ) -> Result<Part, (String, Option<String>)> {
        let (param_name, field) = name.split_once('.').unwrap_or((name, ""));
        if !scope.allow_fields {
            return Err((
                format!("`{{{{{name}}}}}` names a field of a param's entry, which only `inputs` and `outputs` can use"),
                Some(format!("use `{{{{{param_name}}}}}` here, or read the fact in the command (`cairn query`)")),
            ));
        }
        let Some(param) = scope.params.iter().position(|p| p.name == param_name) else {
            return Err((
                format!("`{param_name}` in `{{{{{name}}}}}` is not a param of this task"),
                did_you_mean(param_name, scope.params.iter().map(|p| p.name.as_str())),
            ));
        };
        let Some(entries) = scope.params[param].fields.as_deref() else {
            return Err((
                format!("param `{param_name}` has no fields: its values are not the entries of a data file's table"),
                Some(format!("give it `values = {{ from = \"FILE.toml\", key = \"TABLE\" }}` to use `{{{{{param_name}.FIELD}}}}`")),
            ));
        };
        let known: std::collections::BTreeSet<&str> = entries
            .values()
            .flat_map(|facts| facts.keys().map(String::as_str))
            .collect();
        if !known.contains(field) {
            return Err((
                format!("no entry of param `{param_name}`'s table has a string, number, boolean or list-of-strings field `{field}`"),
                did_you_mean(field, known.iter().copied()).or_else(|| {
                    Some(format!(
                        "its entries have {}",
                        known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                    ))
                }),
            ));
        }
        let items = entries
            .iter()
            .filter_map(|(entry, facts)| Some((entry.clone(), facts.get(field)?.clone())))
            .collect();
        Ok(Part::Field {
            param,
            items: Arc::new(items),
        })
    }
}

/// Whether `name` can be an environment variable's name.
fn is_env_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks `HOST:PORT` syntax (the plugin host checks it again when it loads).
fn check_host_port(text: &str) -> Result<(), String> {
    let expected = "expected HOST:PORT, e.g. `127.0.0.1:8200` or `vault.example.com:443`";
    if text.contains("://") || text.contains('/') {
        return Err(format!("`{text}` is a URL; {expected}"));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "`{text}` has no port; {expected} (each port is granted on its own)"
        ));
    };
    if host.is_empty() || host.contains('*') {
        return Err(format!(
            "`{text}`: name each host; wildcards are not allowed"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(format!("`{port}` is not a port; {expected}")),
    }
}
