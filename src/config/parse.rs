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
    DepsStrategy, MatrixDef, MatrixValues, NamePart, ParamDef, PluginDef, PluginLimits,
    PluginSetting, PluginValue, RemoteCacheDef, RemoteMode, Rollout, Settings, Spanned, TaskDef,
    TaskName, TaskSecrets, TrustedWriter, Var, DEFAULT_CACHE_MAX_AGE, DEFAULT_CACHE_MAX_SIZE,
    DEFAULT_KILL_GRACE, DEFAULT_REMOTE_TIMEOUT, DEFAULT_SHELL, PUBLIC_KEY_PREFIX,
};

type Value<'i> = TomlSpanned<DeValue<'i>>;
type Key<'i> = TomlSpanned<std::borrow::Cow<'i, str>>;

const TOP_KEYS: &[&str] = &["settings", "vars", "plugins", "tasks", "remote_cache"];
const REMOTE_KEYS: &[&str] = &[
    "url",
    "mode",
    "token",
    "signing_key",
    "trusted_writers",
    "timeout",
    "ca_file",
];
const PLUGIN_KEYS: &[&str] = &[
    "source", "sha256", "config", "allow", "limits", "events", "secrets", "built_by", "trust",
];
const ALLOW_KEYS: &[&str] = &["hosts", "env", "clock"];
const LIMIT_KEYS: &[&str] = &["timeout", "memory", "fuel"];
const SETTINGS_KEYS: &[&str] = &[
    "jobs",
    "shell",
    "kill_grace",
    "cache_max_size",
    "cache_max_age",
];
const TASK_KEYS: &[&str] = &[
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
];
const QUERY_KEYS: &[&str] = &["from", "key", "where"];
/// Combinations of param values checked against a matrix's data file at load time; more are checked when used.
const MAX_CHECKED_QUERIES: usize = 256;
const CHECK_KEYS: &[&str] = &["run", "retries", "interval"];
const SECRETS_KEYS: &[&str] = &["from", "env", "files", "allow_envs"];
const PARAM_KEYS: &[&str] = &["values", "default", "pattern", "description"];
const MAX_RETRIES: i64 = 100;

pub(super) fn parse(
    source: SourceFile,
    text: &str,
    path: PathBuf,
    root: PathBuf,
) -> Result<Config, ConfigError> {
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
    let mut walker = Walker {
        text,
        source: source.clone(),
        errors: Vec::new(),
        plugin_names: Vec::new(),
        fully_trusted: Vec::new(),
        root: root.clone(),
        data_files: HashMap::new(),
    };
    let document = document.get_ref();
    walker.check_keys(document, TOP_KEYS, "the top level");
    let settings = walker.settings(document.get("settings"));
    let vars = walker.vars(document.get("vars"));
    let plugins = walker.plugins(document.get("plugins"));
    walker.plugin_names = plugins.iter().map(|p| p.name.clone()).collect();
    walker.fully_trusted = plugins
        .iter()
        .filter(|p| p.trust_full)
        .map(|p| p.name.clone())
        .collect();
    let tasks = walker.tasks(document.get("tasks"), &vars);
    let remote_cache = document
        .get_key_value("remote_cache")
        .and_then(|(key, value)| walker.remote_cache(key, value));
    if !walker.errors.is_empty() {
        return Err(ConfigError::collect(&name, walker.errors));
    }
    Ok(Config {
        source,
        path,
        root,
        settings,
        vars,
        plugins,
        tasks,
        remote_cache,
    })
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
struct Scope<'a> {
    params: &'a [ParamDef],
    vars: &'a [Var],
    allow_args: bool,
    allow_changed: bool,
    /// Variables that carry secrets: naming one in a template is an error, not an unknown name.
    secrets: &'a [String],
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
                    span: to_source_span(&key.span()),
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
            span: to_source_span(&value.span()),
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

    fn string(&mut self, key: &str, value: &Value<'_>) -> Option<Spanned<String>> {
        match value.get_ref() {
            DeValue::String(text) => Some(Spanned {
                value: text.to_string(),
                span: value.span(),
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
            span: value.span(),
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
                &value.span(),
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
                    &value.span(),
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
                self.invalid(
                    key,
                    "a duration must be longer than zero",
                    &value.span(),
                    None,
                );
                None
            }
            Ok(d) => Some(d),
            Err(reason) => {
                self.invalid(
                    key,
                    reason,
                    &value.span(),
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
                &value.span(),
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
                self.invalid(name, reason, &key.span(), None);
                continue;
            }
            if let Some(text) = self.scalar_text(name, value) {
                vars.push(Var {
                    name: name.to_owned(),
                    value: text.value,
                    span: key.span(),
                });
            }
        }
        vars
    }

    fn tasks(&mut self, value: Option<&Value<'_>>, vars: &[Var]) -> Vec<TaskDef> {
        let Some(table) = value.and_then(|v| self.table("tasks", v)) else {
            return Vec::new();
        };
        let mut tasks = Vec::with_capacity(table.len());
        for (key, value) in table.iter() {
            if let Some(task) = self.task(key, value, vars) {
                tasks.push(task);
            }
        }
        tasks
    }

    fn task(&mut self, key: &Key<'_>, value: &Value<'_>, vars: &[Var]) -> Option<TaskDef> {
        let name: &str = key.get_ref();
        let context = format!("task `{name}`");
        let DeValue::Table(table) = value.get_ref() else {
            self.wrong_type(&format!("tasks.{name}"), "a table", value);
            return None;
        };
        let errors_before = self.errors.len();
        self.check_keys(table, TASK_KEYS, &context);

        if name.is_empty() || name.chars().any(char::is_whitespace) {
            self.invalid(
                "tasks",
                "a task name must be non-empty and have no spaces",
                &key.span(),
                Some("use `-` or `:` to separate words, e.g. `deploy:production`".into()),
            );
            return None;
        }
        let declared = match table.get("params") {
            Some(v) => self.params(&context, v),
            None => Vec::new(),
        };
        let (task_name, params) = self.task_name(key, declared)?;
        let matrix = match table.get("matrix") {
            Some(v) => self.matrix(&context, v, &params, vars),
            None => Vec::new(),
        };
        let rollout = self.rollout(table, &matrix, key);
        // Matrix variables are used like params; instances carry their values after the params'.
        let mut scope_params = params.clone();
        scope_params.extend(matrix.iter().map(|m| ParamDef {
            name: m.name.clone(),
            values: None,
            default: None,
            pattern: None,
            description: None,
            span: m.span.clone(),
        }));
        let incremental = table
            .get("incremental")
            .and_then(|v| self.boolean("incremental", v))
            .unwrap_or(false);
        let secrets = match table.get("secrets") {
            Some(v) => self.task_secrets(&context, v, &scope_params, vars),
            None => None,
        };
        let secret_names: Vec<String> = secrets
            .iter()
            .flat_map(|s| s.env.iter().chain(&s.files).map(|(var, _)| var.clone()))
            .collect();
        let scope = Scope {
            params: &scope_params,
            vars,
            allow_args: false,
            allow_changed: false,
            secrets: &secret_names,
        };
        let run_scope = Scope {
            allow_args: true,
            allow_changed: incremental,
            ..scope
        };

        let mut run = Vec::new();
        if let Some(v) = table.get("run") {
            for line in self.string_or_strings("run", v).unwrap_or_default() {
                if let Some(t) =
                    self.template(|| format!("`run` of {context}"), &line, false, &run_scope)
                {
                    run.push(t);
                }
            }
        }
        let mut deps = Vec::new();
        if let Some(v) = table.get("deps") {
            for dep in self.strings("deps", v).unwrap_or_default() {
                if let Some(t) =
                    self.template(|| format!("`deps` of {context}"), &dep, true, &scope)
                {
                    deps.push(DepDef {
                        template: t,
                        text: dep.value,
                        span: dep.span,
                    });
                }
            }
        }
        let lock = table
            .get("lock")
            .and_then(|v| self.string("lock", v))
            .and_then(|l| self.template(|| format!("`lock` of {context}"), &l, false, &scope));
        let audit = table
            .get("audit")
            .and_then(|v| self.boolean("audit", v))
            .unwrap_or(false);
        let protected = table
            .get("protected")
            .and_then(|v| self.boolean("protected", v))
            .unwrap_or(false);
        let check = match table.get("check") {
            Some(v) => self.table("check", v).and_then(|t| {
                self.check_keys(t, CHECK_KEYS, &format!("`check` of {context}"));
                let run = t.get("run").and_then(|v| self.string("check.run", v));
                if run.is_none() && t.get("run").is_none() {
                    self.invalid(
                        "check",
                        "`check` needs `run`: the health check's command",
                        &v.span(),
                        None,
                    );
                }
                let run = run.and_then(|r| {
                    self.template(|| format!("`check.run` of {context}"), &r, false, &scope)
                })?;
                let retries = t
                    .get("retries")
                    .and_then(|v| self.integer("check.retries", v, 0, MAX_RETRIES))
                    .unwrap_or(0) as u32;
                let interval = t
                    .get("interval")
                    .and_then(|v| self.duration("check.interval", v))
                    .unwrap_or(std::time::Duration::from_secs(5));
                Some(CheckDef {
                    run,
                    retries,
                    interval,
                })
            }),
            None => None,
        };
        let rollback = table
            .get("rollback")
            .and_then(|v| self.string("rollback", v))
            .and_then(|r| self.template(|| format!("`rollback` of {context}"), &r, false, &scope));
        let executor = table
            .get("executor")
            .and_then(|v| self.plugin_reference("executor", v));
        if let Some(name) = &executor {
            // An executor chooses the program cairn starts with the task's environment, secrets included:
            // whoever wrote the plugin runs code as you. That is said once, where the plugin is declared.
            if !self.fully_trusted.contains(&name.value) {
                self.invalid(
                    "executor",
                    format!(
                        "plugin `{}` would choose the program this task runs, with its environment and secrets, but it is not declared with `trust = \"full\"`",
                        name.value
                    ),
                    &name.span,
                    Some(format!(
                        "if you trust its author as you trust this repository's, add `trust = \"full\"` to `[plugins.{}]`",
                        name.value
                    )),
                );
            }
        }
        let plugin = table
            .get("plugin")
            .and_then(|v| self.plugin_reference("plugin", v));
        if plugin.is_some() && table.get("run").is_some() {
            if let Some((k, _)) = table.get_key_value("plugin") {
                self.invalid(
                    "plugin",
                    "a task is run either by `run` or by a `plugin`, not both",
                    &k.span(),
                    Some(
                        "remove `run`, or make the plugin its `executor` to wrap its commands"
                            .into(),
                    ),
                );
            }
        }
        if run.is_empty()
            && deps.is_empty()
            && plugin.is_none()
            && table.get("run").is_none()
            && table.get("deps").is_none()
        {
            self.invalid(
                "tasks",
                format!("task `{name}` has neither `run` nor `deps`"),
                &key.span(),
                Some("add `run = \"…\"` with its command, or `deps = [...]` to make it a group of tasks".into()),
            );
        }
        let inputs = match table.get("inputs") {
            Some(v) => self.globs("inputs", v),
            None => Vec::new(),
        };
        let outputs = match table.get("outputs") {
            Some(v) => self.globs("outputs", v),
            None => Vec::new(),
        };
        let mut env = Vec::new();
        if let Some(v) = table.get("env") {
            if let Some(env_table) = self.table("env", v) {
                for (env_key, env_value) in env_table.iter() {
                    let var: &str = env_key.get_ref();
                    let valid = var
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !valid {
                        self.invalid(
                            "env",
                            format!("`{var}` is not a valid environment variable name"),
                            &env_key.span(),
                            Some("use letters, digits and `_`, starting with a letter".into()),
                        );
                        continue;
                    }
                    if let Some(text) = self.scalar_text(var, env_value) {
                        let ctx = || format!("`env.{var}` of {context}");
                        if let Some(t) = self.template(ctx, &text, false, &scope) {
                            env.push((var.to_owned(), t));
                        }
                    }
                }
            }
        }
        if let Some(secrets) = &secrets {
            for (var, key) in secrets.env.iter().chain(&secrets.files) {
                if env.iter().any(|(name, _)| name == var) {
                    self.invalid(
                        "secrets",
                        format!("`{var}` is set both by `env` and by `secrets`"),
                        &key.span,
                        Some("give the secret another variable name".into()),
                    );
                }
            }
        }
        let dir = table
            .get("dir")
            .and_then(|v| self.string("dir", v))
            .and_then(|d| {
                if d.value.trim().is_empty() {
                    self.invalid(
                        "dir",
                        "the directory is empty",
                        &d.span,
                        Some("use `\".\"` for the tasks.toml directory".into()),
                    );
                    return None;
                }
                self.template(|| format!("`dir` of {context}"), &d, false, &scope)
            });
        let timeout = table
            .get("timeout")
            .and_then(|v| self.duration("timeout", v));
        let retries = table
            .get("retries")
            .and_then(|v| self.integer("retries", v, 0, MAX_RETRIES))
            .unwrap_or(0) as u32;
        let cache = table.get("cache").and_then(|v| self.boolean("cache", v));
        let remote = table.get("remote").and_then(|v| self.task_remote(v));
        let shell = table.get("shell").and_then(|v| self.shell("shell", v));
        let mut confirm_when = Vec::new();
        let confirm = match table.get("confirm") {
            Some(v) => match v.get_ref() {
                DeValue::Boolean(true) => Some(Template::literal(format!("Run `{name}`?"))),
                DeValue::Boolean(false) => None,
                DeValue::Table(spec) => {
                    self.check_keys(
                        spec,
                        &["question", "when"],
                        &format!("`confirm` of {context}"),
                    );
                    if let Some(when) = spec.get("when").and_then(|w| self.table("confirm.when", w))
                    {
                        for (param_key, values) in when.iter() {
                            let param_name: &str = param_key.get_ref();
                            let Some(index) = params.iter().position(|p| p.name == param_name)
                            else {
                                self.invalid(
                                    "confirm.when",
                                    format!("`{param_name}` is not a param of this task"),
                                    &param_key.span(),
                                    did_you_mean(
                                        param_name,
                                        params.iter().map(|p| p.name.as_str()),
                                    ),
                                );
                                continue;
                            };
                            let Some(list) =
                                self.strings(&format!("confirm.when.{param_name}"), values)
                            else {
                                continue;
                            };
                            if let Some(allowed) = &params[index].values {
                                for item in &list {
                                    if !allowed.contains(&item.value) {
                                        self.invalid(
                                            "confirm.when",
                                            format!(
                                                "`{}` is not a value of param `{param_name}`",
                                                item.value
                                            ),
                                            &item.span,
                                            did_you_mean(
                                                &item.value,
                                                allowed.iter().map(String::as_str),
                                            ),
                                        );
                                    }
                                }
                            }
                            confirm_when.push((index, list.into_iter().map(|i| i.value).collect()));
                        }
                    }
                    match spec.get("question") {
                        Some(q) => self.string("confirm.question", q).and_then(|q| {
                            self.template(|| format!("`confirm` of {context}"), &q, false, &scope)
                        }),
                        None => Some(Template::literal(format!("Run `{name}`?"))),
                    }
                }
                _ => self.string("confirm", v).and_then(|q| {
                    self.template(|| format!("`confirm` of {context}"), &q, false, &scope)
                }),
            },
            None => None,
        };
        let description = table
            .get("description")
            .and_then(|v| self.string("description", v))
            .map(|d| d.value);

        let env_hash = match table.get("env_hash") {
            Some(v) => self.env_patterns("env_hash", v),
            None => Vec::new(),
        };
        let env_pass = match table.get("env_pass") {
            Some(v) => self.env_patterns("env_pass", v),
            None => Vec::new(),
        };
        let deps_strategy = match table.get("deps_strategy") {
            None => DepsStrategy::Key,
            Some(v) => match self.string("deps_strategy", v) {
                Some(s) if s.value == "key" => DepsStrategy::Key,
                Some(s) if s.value == "outputs" => DepsStrategy::Outputs,
                Some(s) => {
                    self.invalid(
                        "deps_strategy",
                        format!("`{}` is not a strategy", s.value),
                        &s.span,
                        Some("use `\"key\"` (a dependency's cache key) or `\"outputs\"` (the hash of its outputs)".into()),
                    );
                    DepsStrategy::Key
                }
                None => DepsStrategy::Key,
            },
        };
        if incremental && inputs.is_empty() {
            let span = table
                .get_key_value("incremental")
                .map_or(key.span(), |(k, _)| k.span());
            self.invalid(
                "incremental",
                "an incremental task needs `inputs`",
                &span,
                Some("list the files it checks, e.g. `inputs = [\"**/*.nix\"]`".into()),
            );
        }
        if self.errors.len() > errors_before {
            return None;
        }
        Some(TaskDef {
            name: task_name,
            span: key.span(),
            description,
            params,
            run,
            deps,
            inputs,
            outputs,
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
        })
    }

    /// A task's `remote`: a boolean, or the most it may do with the remote cache.
    fn task_remote(&mut self, value: &Value<'_>) -> Option<RemoteMode> {
        match value.get_ref() {
            DeValue::Boolean(true) => Some(RemoteMode::ReadWrite),
            DeValue::Boolean(false) => Some(RemoteMode::Off),
            DeValue::String(text) => {
                let mode = RemoteMode::parse(text);
                if mode.is_none() {
                    self.invalid(
                        "remote",
                        format!("`{text}` is not a way to use the remote cache"),
                        &value.span(),
                        Some("use `false` (or `\"off\"`), `\"read\"` (fetch, never publish), or `\"read-write\"` (or `true`)".into()),
                    );
                }
                mode
            }
            _ => {
                self.wrong_type(
                    "remote",
                    "a boolean or \"off\", \"read\", \"read-write\"",
                    value,
                );
                None
            }
        }
    }

    /// `[remote_cache]`.
    fn remote_cache(&mut self, key: &Key<'_>, value: &Value<'_>) -> Option<RemoteCacheDef> {
        let table = self.table("remote_cache", value)?;
        self.check_keys(table, REMOTE_KEYS, "[remote_cache]");
        let url = table.get("url").and_then(|v| self.string("url", v));
        if let Some(url) = &url {
            let scheme_ok = url.value.starts_with("http://") || url.value.starts_with("https://");
            if !scheme_ok {
                self.invalid(
                    "url",
                    "the remote cache is reached over HTTP",
                    &url.span,
                    Some("write it as `https://cache.example.com/cairn` (or `http://` on a trusted network)".into()),
                );
            }
        }
        let mut mode = RemoteMode::Read;
        if let Some(v) = table.get("mode") {
            if let Some(text) = self.string("mode", v) {
                match RemoteMode::parse(&text.value) {
                    Some(parsed) => mode = parsed,
                    None => self.invalid(
                        "mode",
                        format!("`{}` is not a mode", text.value),
                        &text.span,
                        Some("use `\"read\"` (the default), `\"read-write\"` or `\"off\"`".into()),
                    ),
                }
            }
        }
        let spanned = |value: &Value<'_>, credential: Credential| Spanned {
            value: credential,
            span: value.span(),
        };
        let token = table
            .get("token")
            .and_then(|v| Some(spanned(v, self.credential("token", v)?)));
        let signing_key = table
            .get("signing_key")
            .and_then(|v| Some(spanned(v, self.credential("signing_key", v)?)));
        let mut trusted_writers = Vec::new();
        if let Some(v) = table.get("trusted_writers") {
            match v.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        if let Some(writer) = self.trusted_writer(item) {
                            trusted_writers.push(writer);
                        }
                    }
                }
                _ => self.wrong_type("trusted_writers", "an array of keys", v),
            }
        }
        let timeout = table
            .get("timeout")
            .and_then(|v| self.duration("timeout", v))
            .unwrap_or(DEFAULT_REMOTE_TIMEOUT);
        let ca_file = table.get("ca_file").and_then(|v| self.string("ca_file", v));
        Some(RemoteCacheDef {
            url,
            mode,
            token,
            signing_key,
            trusted_writers,
            timeout,
            ca_file,
            span: key.span(),
        })
    }

    /// `{ env = "VAR" }`, `{ file = "path" }` or `{ secret = "key", from = "secrets/file" }`.
    fn credential(&mut self, key: &str, value: &Value<'_>) -> Option<Credential> {
        let example = format!(
            "for example `{key} = {{ env = \"CAIRN_REMOTE_{}\" }}`, `{{ file = \"~/.config/cairn/{key}\" }}` or `{{ secret = \"remote-cache.{key}\", from = \"secrets/ci.yaml\" }}`",
            key.to_ascii_uppercase()
        );
        let DeValue::Table(spec) = value.get_ref() else {
            self.invalid(
                key,
                "a credential is named by where it is kept, never written here",
                &value.span(),
                Some(example),
            );
            return None;
        };
        self.check_keys(
            spec,
            &["env", "file", "secret", "from"],
            &format!("`{key}`"),
        );
        let text = |walker: &mut Self, name: &str| {
            spec.get(name)
                .and_then(|v| walker.string(&format!("{key}.{name}"), v))
                .map(|s| s.value)
        };
        match (
            text(self, "env"),
            text(self, "file"),
            text(self, "secret"),
            text(self, "from"),
        ) {
            (Some(var), None, None, None) => Some(Credential::Env(var)),
            (None, Some(path), None, None) => Some(Credential::File(path)),
            (None, None, Some(secret), Some(from)) => {
                Some(Credential::Secret { from, key: secret })
            }
            (None, None, Some(_), None) => {
                self.invalid(
                    key,
                    "`secret` needs `from`, the secrets file that holds it",
                    &value.span(),
                    Some(example),
                );
                None
            }
            _ => {
                self.invalid(
                    key,
                    "name one place: `env`, `file`, or `secret` with `from`",
                    &value.span(),
                    Some(example),
                );
                None
            }
        }
    }

    /// `"ed25519:<base64>"` or `{ name = "ci", key = "ed25519:<base64>" }`.
    fn trusted_writer(&mut self, value: &Value<'_>) -> Option<TrustedWriter> {
        let (name, text) = match value.get_ref() {
            DeValue::String(_) => (None, self.string("trusted_writers", value)?),
            DeValue::Table(spec) => {
                self.check_keys(spec, &["name", "key"], "a trusted writer");
                let name = spec
                    .get("name")
                    .and_then(|v| self.string("trusted_writers.name", v));
                let Some(key) = spec
                    .get("key")
                    .and_then(|v| self.string("trusted_writers.key", v))
                else {
                    self.invalid(
                        "trusted_writers",
                        "a trusted writer needs its `key`",
                        &value.span(),
                        Some("`{ name = \"ci\", key = \"ed25519:…\" }`; `cairn cache keygen` prints a key".into()),
                    );
                    return None;
                };
                (name.map(|n| n.value), key)
            }
            _ => {
                self.wrong_type(
                    "trusted_writers",
                    "a key string or a { name, key } table",
                    value,
                );
                return None;
            }
        };
        match parse_public_key(&text.value) {
            Ok(key) => Some(TrustedWriter {
                name: name.unwrap_or_else(|| {
                    let encoded = text.value.trim();
                    encoded[..encoded.len().min(PUBLIC_KEY_PREFIX.len() + 8)].to_owned()
                }),
                key,
                span: text.span,
            }),
            Err(reason) => {
                self.invalid(
                    "trusted_writers",
                    reason,
                    &text.span,
                    Some("a writer's public key looks like `ed25519:` and 44 base64 characters; `cairn cache keygen` prints one".into()),
                );
                None
            }
        }
    }

    /// `serial = true` or `max_parallel = N`, which only a task with a matrix can have.
    fn rollout(
        &mut self,
        table: &DeTable<'_>,
        matrix: &[MatrixDef],
        task: &Key<'_>,
    ) -> Option<Rollout> {
        let serial = table
            .get_key_value("serial")
            .and_then(|(k, v)| Some((k.span(), self.boolean("serial", v)?)));
        let parallel = table
            .get_key_value("max_parallel")
            .and_then(|(k, v)| Some((k.span(), self.integer("max_parallel", v, 1, 1 << 16)?)));
        let rollout = match (&serial, &parallel) {
            (Some((_, true)), Some((span, _))) => {
                self.invalid(
                    "max_parallel",
                    "`serial = true` already runs one instance at a time",
                    span,
                    Some("keep one of `serial = true` and `max_parallel`".into()),
                );
                return None;
            }
            (Some((_, true)), None) => Rollout {
                max_parallel: 1,
                serial: true,
            },
            (_, Some((_, n))) => Rollout {
                max_parallel: *n as usize,
                serial: false,
            },
            (Some((_, false)), None) | (None, None) => return None,
        };
        if matrix.is_empty() {
            let span = serial
                .map(|(span, _)| span)
                .or(parallel.map(|(span, _)| span))
                .unwrap_or(task.span());
            self.invalid(
                "tasks",
                "`serial` and `max_parallel` limit how a matrix rolls out, and this task has no `matrix`",
                &span,
                Some("add `matrix.NAME = [...]` (or `{ from = \"file.toml\", key = \"…\" }`) to fan the task out".into()),
            );
            return None;
        }
        Some(rollout)
    }

    /// `matrix.NAME = [values]` or `matrix.NAME = { from, key, where }`.
    fn matrix(
        &mut self,
        context: &str,
        value: &Value<'_>,
        params: &[ParamDef],
        vars: &[Var],
    ) -> Vec<MatrixDef> {
        let Some(table) = self.table("matrix", value) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            if !self.template_name(key, "matrix", "a matrix variable's name") {
                continue;
            }
            if params.iter().any(|p| p.name == name) {
                self.invalid(
                    "matrix",
                    format!("`{name}` is already a param of this task"),
                    &key.span(),
                    Some("give the matrix variable another name".into()),
                );
                continue;
            }
            let values = match value.get_ref() {
                DeValue::Array(_) => {
                    let Some(list) = self.strings(&format!("matrix.{name}"), value) else {
                        continue;
                    };
                    let mut seen = HashSet::new();
                    let mut ok = true;
                    for item in &list {
                        if item.value.is_empty() || !seen.insert(item.value.as_str()) {
                            self.invalid(
                                "matrix",
                                format!("`{}` is empty or listed twice", item.value),
                                &item.span,
                                None,
                            );
                            ok = false;
                        }
                    }
                    if !ok {
                        continue;
                    }
                    MatrixValues::Listed(list.into_iter().map(|v| v.value).collect())
                }
                DeValue::Table(spec) => {
                    let Some((file, key_text, filter)) =
                        self.query_spec(spec, value, &format!("`matrix.{name}` of {context}"))
                    else {
                        continue;
                    };
                    let scope = Scope {
                        params,
                        vars,
                        allow_args: false,
                        allow_changed: false,
                        secrets: &[],
                    };
                    let Some(key_template) = self.template(
                        || format!("`matrix.{name}.key` of {context}"),
                        &key_text,
                        false,
                        &scope,
                    ) else {
                        continue;
                    };
                    let values = MatrixValues::File {
                        file,
                        key: key_template,
                        key_text: key_text.value.clone(),
                        filter,
                        span: key_text.span.clone(),
                    };
                    self.check_matrix_queries(&values, params, vars, &key_text);
                    values
                }
                _ => {
                    self.wrong_type(
                        &format!("matrix.{name}"),
                        "an array of strings or a table { from = \"file.toml\", key = \"…\" }",
                        value,
                    );
                    continue;
                }
            };
            out.push(MatrixDef {
                name: name.to_owned(),
                span: key.span(),
                values,
            });
        }
        out
    }

    /// Checks a matrix's data-file key for every combination of listed param values, so a missing environment
    /// is found by `cairn check` rather than by the deploy.
    fn check_matrix_queries(
        &mut self,
        values: &MatrixValues,
        params: &[ParamDef],
        vars: &[Var],
        key: &Spanned<String>,
    ) {
        let var_values: Vec<String> = vars.iter().map(|v| v.value.clone()).collect();
        let mut combinations: Vec<Vec<String>> = vec![Vec::new()];
        for param in params {
            let Some(listed) = &param.values else {
                return;
            };
            combinations = combinations
                .into_iter()
                .flat_map(|prefix| {
                    listed.iter().map(move |v| {
                        let mut next = prefix.clone();
                        next.push(v.clone());
                        next
                    })
                })
                .collect();
            if combinations.len() > MAX_CHECKED_QUERIES {
                return;
            }
        }
        let MatrixValues::File { file, .. } = values else {
            return;
        };
        for combination in combinations {
            if let Err(error) = values.resolve(&var_values, &combination) {
                let file = Arc::clone(file);
                self.query_error(&file, error, &key.span);
                return;
            }
        }
    }

    /// `{ from = "file.toml", key = "a.b", where = "field" }`: the file (read now), the key as written and
    /// the filter.
    fn query_spec(
        &mut self,
        spec: &DeTable<'_>,
        value: &Value<'_>,
        context: &str,
    ) -> Option<(Arc<DataFile>, Spanned<String>, Option<String>)> {
        self.check_keys(spec, QUERY_KEYS, context);
        let from = spec.get("from").and_then(|v| self.string("from", v));
        let key = spec.get("key").and_then(|v| self.string("key", v));
        let filter = spec
            .get("where")
            .and_then(|v| self.string("where", v))
            .map(|w| w.value);
        let (Some(from), Some(key)) = (from, key) else {
            if spec.get("from").is_none() || spec.get("key").is_none() {
                self.invalid(
                    "from",
                    "a list read from a file needs `from` (the file) and `key` (where in it)",
                    &value.span(),
                    Some("e.g. `{ from = \"modules/inventory.toml\", key = \"hosts\", where = \"enabled\" }`".into()),
                );
            }
            return None;
        };
        let file = match self.data_files.get(&from.value) {
            Some(cached) => cached.clone(),
            None => {
                let read = match DataFile::read(&self.root, &from.value) {
                    Ok(file) => Some(Arc::new(file)),
                    Err(error) => {
                        self.invalid(
                            "from",
                            format!("cannot read `{}`: {error}", from.value),
                            &from.span,
                            Some("the path is relative to the directory of tasks.toml".into()),
                        );
                        None
                    }
                };
                self.data_files.insert(from.value.clone(), read.clone());
                read
            }
        }?;
        Some((file, key, filter))
    }

    /// Reports a failed query: inside the data file when the problem is there, else at the key in tasks.toml.
    fn query_error(&mut self, file: &DataFile, error: QueryError, key_span: &Span) {
        match error.span {
            Some(span) => self.errors.push(ConfigError::DataFile {
                message: error.message,
                src: file.source.clone(),
                span: to_source_span(&span),
                help: error.help,
            }),
            None => self.invalid("key", error.message, key_span, error.help),
        }
    }

    /// A task's `executor` or `plugin`: the name of a declared plugin.
    fn plugin_reference(&mut self, key: &str, value: &Value<'_>) -> Option<Spanned<String>> {
        let name = self.string(key, value)?;
        if !self.plugin_names.contains(&name.value) {
            let help = did_you_mean(&name.value, self.plugin_names.iter().map(String::as_str))
                .or_else(|| {
                    Some(format!(
                        "declare it: `[plugins.{}]` with `source = \"plugins/dist/{}.wasm\"`",
                        name.value, name.value
                    ))
                });
            self.invalid(
                key,
                format!("no plugin named `{}`", name.value),
                &name.span,
                help,
            );
            return None;
        }
        Some(name)
    }

    fn plugins(&mut self, value: Option<&Value<'_>>) -> Vec<PluginDef> {
        let Some(table) = value.and_then(|v| self.table("plugins", v)) else {
            return Vec::new();
        };
        let mut plugins = Vec::new();
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            if !template::is_identifier(name) {
                self.invalid(
                    "plugins",
                    format!("`{name}` cannot be a plugin name"),
                    &key.span(),
                    Some("use letters, digits, `_` and `-`, starting with a letter".into()),
                );
                continue;
            }
            let context = format!("[plugins.{name}]");
            let Some(table) = self.table(&format!("plugins.{name}"), value) else {
                continue;
            };
            self.check_keys(table, PLUGIN_KEYS, &context);
            let Some(source) = table.get("source").and_then(|v| self.string("source", v)) else {
                if table.get("source").is_none() {
                    self.invalid(
                        "plugins",
                        format!("plugin `{name}` has no `source`"),
                        &key.span(),
                        Some(format!("add `source = \"plugins/dist/{name}.wasm\"`")),
                    );
                }
                continue;
            };
            let sha256 = table.get("sha256").and_then(|v| self.string("sha256", v));
            if let Some(sha) = &sha256 {
                if sha.value.len() != 64 || !sha.value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    self.invalid(
                        "sha256",
                        "expected 64 hexadecimal digits",
                        &sha.span,
                        Some(
                            "`cairn plugins lock` writes the hash of every plugin to plugins.lock"
                                .into(),
                        ),
                    );
                }
            }
            let built_by = table
                .get("built_by")
                .and_then(|v| self.string("built_by", v));
            let mut config = Vec::new();
            if let Some(v) = table.get("config") {
                if let Some(entries) = self.table("config", v) {
                    for (k, v) in entries.iter() {
                        let text = match v.get_ref() {
                            DeValue::String(t) => Some(PluginValue::String(t.to_string())),
                            DeValue::Integer(i) => {
                                Some(PluginValue::Integer(i.as_str().to_owned()))
                            }
                            DeValue::Boolean(b) => Some(PluginValue::Boolean(*b)),
                            _ => {
                                self.wrong_type(
                                    &format!("config.{}", k.get_ref()),
                                    "a string, an integer or a boolean",
                                    v,
                                );
                                None
                            }
                        };
                        if let Some(text) = text {
                            config.push(PluginSetting {
                                key: Spanned {
                                    value: k.get_ref().to_string(),
                                    span: k.span(),
                                },
                                value: text,
                                span: v.span(),
                            });
                        }
                    }
                }
            }
            let (mut hosts, mut env, mut clock) = (Vec::new(), Vec::new(), false);
            if let Some(v) = table.get("allow") {
                if let Some(allow) = self.table("allow", v) {
                    self.check_keys(allow, ALLOW_KEYS, &format!("{context} allow"));
                    if let Some(v) = allow.get("hosts") {
                        for host in self.strings("allow.hosts", v).unwrap_or_default() {
                            match check_host_port(&host.value) {
                                Ok(()) => hosts.push(host),
                                Err(why) => self.invalid("allow.hosts", why, &host.span, None),
                            }
                        }
                    }
                    if let Some(v) = allow.get("env") {
                        env = self.strings("allow.env", v).unwrap_or_default();
                    }
                    if let Some(v) = allow.get("clock") {
                        clock = self.boolean("allow.clock", v).unwrap_or(false);
                    }
                }
            }
            let mut limits = PluginLimits::default();
            if let Some(v) = table.get("limits") {
                if let Some(l) = self.table("limits", v) {
                    self.check_keys(l, LIMIT_KEYS, &format!("{context} limits"));
                    limits.timeout = l
                        .get("timeout")
                        .and_then(|v| self.duration("limits.timeout", v));
                    limits.memory = l.get("memory").and_then(|v| self.size("limits.memory", v));
                    limits.fuel = l
                        .get("fuel")
                        .and_then(|v| self.integer("limits.fuel", v, 1, i64::MAX))
                        .map(|f| f as u64);
                }
            }
            let events = table
                .get("events")
                .and_then(|v| self.boolean("events", v))
                .unwrap_or(false);
            let trust_full = match table.get("trust").and_then(|v| self.string("trust", v)) {
                Some(trust) if trust.value == "full" => true,
                Some(trust) if trust.value == "sandbox" => false,
                Some(trust) => {
                    self.invalid(
                        "trust",
                        format!("`{}` is not a level of trust", trust.value),
                        &trust.span,
                        Some("`\"sandbox\"` (the default) or `\"full\"` (needed to be an `executor`)".into()),
                    );
                    false
                }
                None => false,
            };
            let mut secrets = Vec::new();
            if let Some(v) = table.get("secrets") {
                if let Some(entries) = self.table("secrets", v) {
                    for (k, v) in entries.iter() {
                        let name: &str = k.get_ref();
                        if !is_env_name(name) {
                            self.invalid(
                                "secrets",
                                format!("`{name}` is not a valid variable name"),
                                &k.span(),
                                None,
                            );
                            continue;
                        }
                        if let Some(reference) = self.string(&format!("secrets.{name}"), v) {
                            if !reference.value.contains('#') {
                                self.invalid(
                                    "secrets",
                                    "expected FILE#KEY",
                                    &reference.span,
                                    Some(
                                        "e.g. `\"secrets/production/aws.yaml#secret_access_key\"`"
                                            .into(),
                                    ),
                                );
                                continue;
                            }
                            secrets.push((name.to_string(), reference));
                        }
                    }
                }
            }
            plugins.push(PluginDef {
                name: name.to_string(),
                span: key.span(),
                source,
                sha256,
                built_by,
                config,
                allow_hosts: hosts,
                allow_env: env,
                allow_clock: clock,
                limits,
                events,
                trust_full,
                secrets,
            });
        }
        plugins
    }

    fn task_secrets(
        &mut self,
        context: &str,
        value: &Value<'_>,
        params: &[ParamDef],
        vars: &[Var],
    ) -> Option<TaskSecrets> {
        let table = self.table("secrets", value)?;
        let secrets_context = format!("`secrets` of {context}");
        self.check_keys(table, SECRETS_KEYS, &secrets_context);
        let scope = Scope {
            params,
            vars,
            allow_args: false,
            allow_changed: false,
            secrets: &[],
        };
        let from = table
            .get("from")
            .and_then(|v| self.string("secrets.from", v));
        let from_template = match &from {
            Some(from) => Some(self.template(
                || format!("`secrets.from` of {context}"),
                from,
                false,
                &scope,
            )?),
            None => None,
        };
        let mapping = |name: &str, this: &mut Self| -> Vec<(String, Spanned<String>)> {
            let Some(v) = table.get(name) else {
                return Vec::new();
            };
            let Some(entries) = this.table(&format!("secrets.{name}"), v) else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for (var_key, key_value) in entries.iter() {
                let var: &str = var_key.get_ref();
                if !is_env_name(var) {
                    this.invalid(
                        &format!("secrets.{name}"),
                        format!("`{var}` is not a valid environment variable name"),
                        &var_key.span(),
                        Some("use letters, digits and `_`, starting with a letter".into()),
                    );
                    continue;
                }
                if let Some(key) = this.string(&format!("secrets.{name}.{var}"), key_value) {
                    if key.value.trim().is_empty() {
                        this.invalid(
                            &format!("secrets.{name}"),
                            "the key is empty",
                            &key.span,
                            Some("name a key of the secrets file, dotted for nested ones: `db.password`".into()),
                        );
                        continue;
                    }
                    out.push((var.to_owned(), key));
                }
            }
            out
        };
        let env = mapping("env", self);
        let files = mapping("files", self);
        for (var, key) in &files {
            if env.iter().any(|(other, _)| other == var) {
                self.invalid(
                    "secrets.files",
                    format!("`{var}` is both in `secrets.env` and `secrets.files`"),
                    &key.span,
                    None,
                );
            }
        }
        if env.is_empty() && files.is_empty() {
            self.invalid(
                "secrets",
                "`secrets` gives the task nothing: add `env` or `files`",
                &from.as_ref().map_or(value.span(), |f| f.span.clone()),
                Some("e.g. `secrets.env = { DB_PASSWORD = \"db.password\" }`".into()),
            );
        }
        // A key is read from `from` unless it names a plugin: `vault:app/production#db_password`.
        if from.is_none() {
            for (_, key) in env.iter().chain(&files) {
                let provider = key.value.split_once(':').map(|(p, _)| p);
                if !provider.is_some_and(|p| self.plugin_names.iter().any(|n| n == p)) {
                    self.invalid(
                        "secrets",
                        format!("`{}` is read from a secrets file, but `secrets.from` is not set", key.value),
                        &key.span,
                        Some("add `secrets.from = \"secrets/…\"`, or name a secrets plugin: `PLUGIN:ref#field`".into()),
                    );
                }
            }
        }
        let allow_envs = match table.get("allow_envs") {
            Some(v) => self
                .strings("secrets.allow_envs", v)
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.value)
                .collect(),
            None => Vec::new(),
        };
        Some(TaskSecrets {
            from: from_template,
            from_span: from.map_or(value.span(), |f| f.span),
            env,
            files,
            allow_envs,
        })
    }

    /// Whether a key can name something templates refer to (a param, a matrix variable); reports it if not.
    fn template_name(&mut self, key: &Key<'_>, table: &str, what: &str) -> bool {
        let name: &str = key.get_ref();
        let valid = template::is_identifier(name) && !RESERVED_NAMES.contains(&name);
        if !valid {
            self.invalid(
                table,
                format!("`{name}` cannot be {what}"),
                &key.span(),
                Some("use letters, digits, `_` and `-`, starting with a letter; `args` and `changed` are reserved".into()),
            );
        }
        valid
    }

    fn params(&mut self, context: &str, value: &Value<'_>) -> Vec<ParamDef> {
        let Some(table) = self.table("params", value) else {
            return Vec::new();
        };
        let mut params = Vec::new();
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            if !self.template_name(key, "params", "a param name") {
                continue;
            }
            let param_context = format!("param `{name}` of {context}");
            let Some(spec) = (match value.get_ref() {
                DeValue::Table(t) => Some(t),
                _ => {
                    self.errors.push(ConfigError::WrongType {
                        key: format!("params.{name}"),
                        expected: "a table such as { values = [\"a\", \"b\"], default = \"a\" }",
                        found: type_name(value.get_ref()),
                        src: self.source.clone(),
                        span: to_source_span(&value.span()),
                    });
                    None
                }
            }) else {
                continue;
            };
            self.check_keys(spec, PARAM_KEYS, &param_context);
            let values = spec.get("values").and_then(|v| {
                if let DeValue::Table(query) = v.get_ref() {
                    let (file, key, filter) =
                        self.query_spec(query, v, &format!("`values` of {param_context}"))?;
                    return match file.query(&key.value, filter.as_deref()) {
                        Ok(list) if list.is_empty() => {
                            self.invalid(
                                "values",
                                format!("`{}` in `{}` lists no values", key.value, file.name),
                                &key.span,
                                None,
                            );
                            None
                        }
                        Ok(list) => Some(
                            list.into_iter()
                                .map(|value| Spanned {
                                    value,
                                    span: key.span.clone(),
                                })
                                .collect(),
                        ),
                        Err(error) => {
                            self.query_error(&file, error, &key.span);
                            None
                        }
                    };
                }
                let list = self.strings("values", v)?;
                if list.is_empty() {
                    self.invalid(
                        "values",
                        "the list of values is empty",
                        &v.span(),
                        Some("list at least one value, or remove `values` to accept any".into()),
                    );
                    return None;
                }
                let mut seen = HashSet::new();
                for item in &list {
                    if item.value.is_empty() {
                        self.invalid("values", "a value cannot be empty", &item.span, None);
                    } else if !seen.insert(item.value.as_str()) {
                        self.invalid(
                            "values",
                            format!("`{}` is listed twice", item.value),
                            &item.span,
                            None,
                        );
                    }
                }
                Some(list)
            });
            let default = spec
                .get("default")
                .and_then(|v| self.scalar_text("default", v));
            if let (Some(values), Some(default)) = (&values, &default) {
                if !values.iter().any(|v| v.value == default.value) {
                    self.invalid(
                        "default",
                        format!("`{}` is not one of the values", default.value),
                        &default.span,
                        did_you_mean(&default.value, values.iter().map(|v| v.value.as_str()))
                            .or_else(|| {
                                Some(format!(
                                    "expected one of {}",
                                    values
                                        .iter()
                                        .map(|v| format!("`{}`", v.value))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ))
                            }),
                    );
                }
            }
            let description = spec
                .get("description")
                .and_then(|v| self.string("description", v))
                .map(|d| d.value);
            let pattern = spec
                .get("pattern")
                .and_then(|v| self.param_pattern(v, values.is_some()));
            params.push(ParamDef {
                name: name.to_owned(),
                values: values.map(|l| l.into_iter().map(|v| v.value).collect()),
                default: default.map(|d| d.value),
                pattern,
                description,
                span: key.span(),
            });
        }
        params
    }

    /// A param's `pattern`, anchored so that it must match the whole value.
    fn param_pattern(&mut self, value: &Value<'_>, has_values: bool) -> Option<regex::Regex> {
        let text = self.string("pattern", value)?;
        if has_values {
            self.invalid(
                "pattern",
                "a param with `values` takes only those: `pattern` would never apply",
                &text.span,
                Some(
                    "remove `pattern`, or remove `values` to accept any value that matches it"
                        .into(),
                ),
            );
            return None;
        }
        match regex::Regex::new(&format!("^(?:{})$", text.value)) {
            Ok(regex) => Some(regex),
            Err(error) => {
                let reason = error.to_string();
                let last = reason.lines().last().unwrap_or("invalid").trim().to_owned();
                self.invalid(
                    "pattern",
                    format!("`{}` is not a valid regular expression: {last}", text.value),
                    &text.span,
                    Some("the syntax is Rust's `regex` crate's, e.g. \"[a-z][a-z0-9-]*\"".into()),
                );
                None
            }
        }
    }

    /// Splits the task's name at `{param}` and orders the params as the name uses them.
    fn task_name(
        &mut self,
        key: &Key<'_>,
        declared: Vec<ParamDef>,
    ) -> Option<(TaskName, Vec<ParamDef>)> {
        let text: &str = key.get_ref();
        let pieces = match template::scan(text, true) {
            Ok(pieces) => pieces,
            Err(e) => {
                let span = span_within_string(self.text, &key.span(), text, e.range);
                self.invalid("tasks", e.message, &span, None);
                return None;
            }
        };
        let mut ordered: Vec<ParamDef> = Vec::new();
        let mut parts = Vec::new();
        let mut ok = true;
        for piece in pieces {
            match piece {
                Piece::Text(t) => parts.push(NamePart::Literal(t)),
                Piece::Name(name, range) => {
                    let span = span_within_string(self.text, &key.span(), text, range);
                    if ordered.iter().any(|p| p.name == name) {
                        self.invalid(
                            "tasks",
                            format!("`{{{name}}}` appears twice in the name"),
                            &span,
                            None,
                        );
                        ok = false;
                    } else if let Some(param) = declared.iter().find(|p| p.name == name) {
                        parts.push(NamePart::Param(ordered.len()));
                        ordered.push(param.clone());
                    } else {
                        self.invalid(
                            "tasks",
                            format!("`{{{name}}}` is not a declared param"),
                            &span,
                            Some(format!(
                                "declare it: `params.{name} = {{ values = [...] }}`"
                            )),
                        );
                        ok = false;
                    }
                }
            }
        }
        for param in &declared {
            if !ordered.iter().any(|p| p.name == param.name) {
                self.invalid(
                    "params",
                    format!("param `{}` is not used in the task name", param.name),
                    &param.span,
                    Some(format!(
                        "add `{{{}}}` to the name, e.g. `[tasks.\"{text}:{{{}}}\"]`",
                        param.name, param.name
                    )),
                );
                ok = false;
            }
        }
        ok.then(|| {
            (
                TaskName {
                    text: text.to_owned(),
                    parts,
                },
                ordered,
            )
        })
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
            let pattern = glob.value.strip_prefix('!').unwrap_or(&glob.value);
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
                Piece::Text(t) => parts.push(Part::Literal(t)),
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
