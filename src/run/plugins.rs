//! Plugins for a run: declared in tasks.toml, pinned by hash, loaded only when a selected task needs one
//! (so a broken plugin that nothing uses stops nothing), configured and checked against the schema the plugin
//! describes, and called from blocking threads.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use cairn_plugin_api::{Capability, FieldKind, LogLevel};
use cairn_plugin_client::{Grants, HostError, HostPort, Limits, Plugin, Sink, Spec};
use miette::{Diagnostic, SourceSpan};
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::config::source::to_source_span;
use crate::config::{Config, PluginDef, PluginValue, SourceFile};
use crate::secrets::redact::Redactor;

/// The lock file beside tasks.toml.
pub const LOCK_FILE: &str = "plugins.lock";

/// Why a plugin could not be used.
#[derive(Debug, Error, Diagnostic)]
pub enum PluginError {
    /// A problem in what tasks.toml says about the plugin.
    #[error("{message}")]
    #[diagnostic(code(cairn::plugins::config))]
    Config {
        /// What is wrong.
        message: String,
        #[source_code]
        src: SourceFile,
        #[label("here")]
        span: SourceSpan,
        /// How to fix it.
        #[help]
        help: Option<String>,
    },
    /// The module file or its pin.
    #[error("plugin `{plugin}`: {message}")]
    #[diagnostic(code(cairn::plugins::module))]
    Module {
        /// The plugin.
        plugin: String,
        /// What is wrong.
        message: String,
        /// How to fix it.
        #[help]
        help: Option<String>,
    },
    /// Loading or calling it failed.
    #[error(transparent)]
    #[diagnostic(code(cairn::plugins::host))]
    Host(#[from] HostError),
}

/// `plugins.lock`: the content hash of each plugin, written by `cairn plugins lock`.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct LockFile {
    /// By plugin name.
    #[serde(default)]
    pub plugins: BTreeMap<String, LockEntry>,
}

/// One pinned plugin.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LockEntry {
    /// The module's path when it was pinned.
    pub source: String,
    /// Its SHA-256.
    pub sha256: String,
}

impl LockFile {
    /// Reads `plugins.lock` in `root`; a missing file is an empty lock.
    pub fn read(root: &Path) -> Result<LockFile, String> {
        let path = root.join(LOCK_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LockFile::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# Written by `cairn plugins lock`: a run loads a plugin only when its module has this hash.\n",
        );
        out.push_str(&toml::to_string(self).unwrap_or_default());
        out
    }
}

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Values granted to plugins, by name, and the redactor that hides them.
type Granted = (Vec<(String, Zeroizing<String>)>, Option<Redactor>);

/// Where plugin logs go: stderr, redacted, with the plugin's name.
pub struct RunSink {
    redactor: RwLock<Arc<Redactor>>,
    /// Host variables granted to plugins (tokens, usually), also kept out of what plugins print, and the
    /// redactor built from them (rebuilt when a plugin loads, not for every line).
    granted: RwLock<Granted>,
    verbose: bool,
    /// Log lines kept back while secrets are being fetched: a provider may log a value before cairn knows
    /// it is one.
    held: Mutex<Option<Vec<(String, LogLevel, String)>>>,
    /// Where lines go instead of straight to stderr: above the terminal's status line, during a run.
    printer: RwLock<Option<LinePrinter>>,
}

/// Writes one line of cairn's own (without its newline) where the user sees it.
pub type LinePrinter = Arc<dyn Fn(&str) + Send + Sync>;

impl RunSink {
    /// Sends plugin lines through `printer` from now on (`None`: straight to stderr again).
    pub fn set_printer(&self, printer: Option<LinePrinter>) {
        if let Ok(mut slot) = self.printer.write() {
            *slot = printer;
        }
    }

    /// Shows one line of cairn's about plugins: through the printer when there is one, else on stderr.
    pub fn print_line(&self, line: &str) {
        match self.printer.read().ok().and_then(|p| p.clone()) {
            Some(printer) => printer(line),
            None => eprintln!("{line}"),
        }
    }

    /// A sink that redacts with `redactor` from now on, and shows what was held back, redacted with it.
    pub fn set_redactor(&self, redactor: Arc<Redactor>) {
        if let Ok(mut slot) = self.redactor.write() {
            *slot = redactor;
        }
        self.release();
    }

    /// Adds a value granted to a plugin to what is redacted from everything plugins print.
    fn grant(&self, name: &str, value: &str) {
        if let Ok(mut granted) = self.granted.write() {
            granted
                .0
                .push((name.to_owned(), Zeroizing::new(value.to_owned())));
            let (redactor, _) =
                Redactor::new(granted.0.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
            granted.1 = Some(redactor);
        }
    }

    /// Keeps log lines back until [`RunSink::release`].
    pub fn hold(&self) {
        if let Ok(mut held) = self.held.lock() {
            held.get_or_insert_with(Vec::new);
        }
    }

    /// Shows the held lines, redacted with the current redactor.
    pub fn release(&self) {
        let lines = self
            .held
            .lock()
            .ok()
            .and_then(|mut h| h.take())
            .unwrap_or_default();
        for (plugin, level, message) in lines {
            let message = self.redact(&message);
            self.show(&plugin, level, &message);
        }
    }

    fn show(&self, plugin: &str, level: LogLevel, message: &str) {
        if level == LogLevel::Debug && !self.verbose {
            return;
        }
        let tag = match level {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warning",
            LogLevel::Error => "error",
        };
        self.print_line(&format!("cairn: plugin `{plugin}` {tag}: {message}"));
    }
}

impl Sink for RunSink {
    fn redact(&self, text: &str) -> String {
        let text = match self.redactor.read() {
            Ok(redactor) => redactor.redact_str(text),
            Err(_) => text.to_string(),
        };
        match self.granted.read() {
            Ok(granted) => match &granted.1 {
                Some(redactor) => redactor.redact_str(&text),
                None => text,
            },
            Err(_) => text,
        }
    }

    fn log(&self, plugin: &str, level: LogLevel, message: &str) {
        if let Ok(mut held) = self.held.lock() {
            if let Some(lines) = held.as_mut() {
                lines.push((plugin.to_string(), level, message.to_string()));
                return;
            }
        }
        self.show(plugin, level, message);
    }
}

type Slot = OnceLock<Result<Arc<Plugin>, Arc<PluginError>>>;

/// The plugins of one run, each loaded on first use.
pub struct Plugins {
    config: Arc<Config>,
    lock: Result<LockFile, String>,
    sink: Arc<RunSink>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    cache_dir: Option<PathBuf>,
}

impl Plugins {
    /// The plugins `config` declares; nothing is read until one is used.
    pub fn new(config: Arc<Config>) -> Plugins {
        let lock = LockFile::read(&config.root);
        let cache_dir = compile_cache();
        Plugins {
            config,
            lock,
            sink: Arc::new(RunSink {
                redactor: RwLock::new(Arc::new(Redactor::default())),
                verbose: std::env::var_os("CAIRN_PLUGIN_DEBUG").is_some(),
                held: Mutex::new(None),
                granted: RwLock::new((Vec::new(), None)),
                printer: RwLock::new(None),
            }),
            slots: Mutex::new(HashMap::new()),
            cache_dir,
        }
    }

    /// Plugins declared with `events = true`, with their call timeouts.
    pub fn event_sinks(&self) -> Vec<(String, std::time::Duration)> {
        self.config
            .plugins
            .iter()
            .filter(|p| p.events)
            .map(|p| {
                (
                    p.name.clone(),
                    p.limits.timeout.unwrap_or(Limits::default().timeout),
                )
            })
            .collect()
    }

    /// The directory of tasks.toml.
    pub fn root(&self) -> &Path {
        &self.config.root
    }

    /// The sink plugins log through.
    pub fn sink(&self) -> Arc<RunSink> {
        Arc::clone(&self.sink)
    }

    /// The plugin named `name`, loaded (once) if needed, which must have `capability`. Blocks.
    pub fn get(&self, name: &str, capability: Capability) -> Result<Arc<Plugin>, Arc<PluginError>> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(slots.entry(name.to_string()).or_default())
        };
        let plugin = slot
            .get_or_init(|| self.load(name).map(Arc::new).map_err(Arc::new))
            .clone()?;
        if !plugin.describe.capabilities.contains(&capability) {
            let has: Vec<&str> = plugin
                .describe
                .capabilities
                .iter()
                .map(|c| c.as_str())
                .collect();
            return Err(Arc::new(PluginError::Module {
                plugin: name.to_string(),
                message: format!(
                    "it is used as a `{}` plugin but it can only do: {}",
                    capability.as_str(),
                    if has.is_empty() {
                        "nothing".into()
                    } else {
                        has.join(", ")
                    }
                ),
                help: None,
            }));
        }
        Ok(plugin)
    }

    fn def(&self, name: &str) -> Result<&PluginDef, PluginError> {
        self.config
            .plugins
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| PluginError::Module {
                plugin: name.to_string(),
                message: "is not declared in tasks.toml".into(),
                help: None,
            })
    }

    /// Reads, verifies and loads `name`, then checks its config against its schema.
    pub fn load(&self, name: &str) -> Result<Plugin, PluginError> {
        let def = self.def(name)?;
        let (wasm, _) = self.verified_module(def)?;
        let mut grants = Grants {
            clock: def.allow_clock,
            ..Grants::default()
        };
        for host in &def.allow_hosts {
            let parsed: HostPort = host
                .value
                .parse()
                .map_err(|message| self.config_error(message, &host.span, None))?;
            grants.hosts.push(parsed);
        }
        for variable in &def.allow_env {
            if let Ok(value) = std::env::var(&variable.value) {
                self.sink.grant(&variable.value, &value);
                grants.env.push((variable.value.clone(), value));
            }
        }
        for (name, reference) in &def.secrets {
            let value = self.credential(&def.name, reference)?;
            self.sink.grant(name, &value);
            grants.env.push((name.clone(), value.to_string()));
        }
        let defaults = Limits::default();
        let limits = Limits {
            timeout: def.limits.timeout.unwrap_or(defaults.timeout),
            memory: def.limits.memory.unwrap_or(defaults.memory),
            fuel: def.limits.fuel,
        };
        let config = def
            .config
            .iter()
            .map(|s| (s.key.value.clone(), s.value.as_text()))
            .collect();
        let sink: Arc<dyn Sink> = self.sink.clone();
        let plugin = Plugin::load(
            Spec {
                name: name.to_string(),
                wasm,
                config,
                grants,
                limits,
                cache_dir: self.cache_dir.clone(),
            },
            sink,
        )?;
        self.check_config(def, &plugin)?;
        Ok(plugin)
    }

    /// A credential for a plugin from one of cairn's secrets files (`FILE#KEY`).
    fn credential(
        &self,
        plugin: &str,
        reference: &crate::config::Spanned<String>,
    ) -> Result<zeroize::Zeroizing<String>, PluginError> {
        let (file, key) = reference
            .value
            .split_once('#')
            .unwrap_or((&reference.value, ""));
        let path = self.config.root.join(file);
        let keyring = crate::secrets::keys::Keyring::discover(&[]);
        let policy = crate::secrets::policy::Policy::discover(&self.config.root).ok();
        let fail = |message: String| PluginError::Module {
            plugin: plugin.to_string(),
            message,
            help: None,
        };
        let opened = crate::secrets::files::decrypt(&path, &keyring, policy.as_ref())
            .map_err(|e| fail(format!("its credential `{}`: {e}", reference.value)))?;
        match crate::secrets::tree::lookup(&opened.plain, key) {
            Some(crate::secrets::tree::Node::Scalar(s)) => {
                Ok(zeroize::Zeroizing::new(s.text.clone()))
            }
            _ => Err(fail(format!(
                "its credential `{}`: no value at `{key}` in `{file}`",
                reference.value
            ))),
        }
    }

    /// The module's bytes, after checking them against the pinned hash; also returns the hash.
    pub fn verified_module(&self, def: &PluginDef) -> Result<(Vec<u8>, String), PluginError> {
        if let Some(Ok(url)) = crate::config::remote_source(&def.source.value) {
            return self.downloaded_module(def, &url);
        }
        let path = self.config.root.join(&def.source.value);
        let wasm = std::fs::read(&path).map_err(|e| PluginError::Module {
            plugin: def.name.clone(),
            message: format!("cannot read `{}`: {e}", def.source.value),
            help: Some("build the plugins with `plugins/build.sh`".into()),
        })?;
        let found = sha256_hex(&wasm);
        let lock = self.lock.as_ref().map_err(|e| PluginError::Module {
            plugin: def.name.clone(),
            message: format!("plugins.lock is unreadable: {e}"),
            help: Some("rewrite it with `cairn plugins lock`".into()),
        })?;
        let (expected, from) = match (&def.sha256, lock.plugins.get(&def.name)) {
            (Some(pinned), _) => (
                pinned.value.to_ascii_lowercase(),
                "its `sha256` in tasks.toml",
            ),
            (None, Some(entry)) => (entry.sha256.to_ascii_lowercase(), "plugins.lock"),
            (None, None) if def.built_by.is_some() => {
                self.check_built_by(def, &wasm)?;
                return Ok((wasm, found));
            }
            (None, None) => {
                return Err(PluginError::Module {
                    plugin: def.name.clone(),
                    message: "is not pinned: cairn loads only plugins whose hash is recorded".into(),
                    help: Some(format!(
                        "run `cairn plugins lock` to record the hash of `{}` in plugins.lock (or set `sha256 = \"{found}\"`)",
                        def.source.value
                    )),
                });
            }
        };
        if expected != found {
            return Err(PluginError::Module {
                plugin: def.name.clone(),
                message: format!(
                    "`{}` has SHA-256 {found}, but {from} says {expected}: refusing to load it",
                    def.source.value
                ),
                help: Some(
                    "if you rebuilt or updated it on purpose, run `cairn plugins lock`".into(),
                ),
            });
        }
        Ok((wasm, found))
    }

    /// A module from a URL: its pin (tasks.toml's `sha256`, else plugins.lock's entry for this very URL) says
    /// which bytes are wanted; they come from the user's cache when it has them, else are downloaded once and
    /// kept there. Whatever their origin, they are hashed before every load.
    fn downloaded_module(
        &self,
        def: &PluginDef,
        url: &str,
    ) -> Result<(Vec<u8>, String), PluginError> {
        let refuse = |message: String, help: Option<String>| PluginError::Module {
            plugin: def.name.clone(),
            message,
            help,
        };
        let lock = self.lock.as_ref().map_err(|e| {
            refuse(
                format!("plugins.lock is unreadable: {e}"),
                Some("rewrite it with `cairn plugins lock`".into()),
            )
        })?;
        let expected = match (&def.sha256, lock.plugins.get(&def.name)) {
            (Some(pinned), _) => pinned.value.to_ascii_lowercase(),
            (None, Some(entry)) if entry.source == def.source.value => entry.sha256.to_ascii_lowercase(),
            (None, Some(entry)) => {
                return Err(refuse(
                    format!(
                        "plugins.lock pins `{}`, not `{}`: a downloaded plugin is loaded only by the hash pinned for its URL",
                        entry.source, def.source.value
                    ),
                    Some("run `cairn plugins lock` to download it and pin what it serves now".into()),
                ))
            }
            (None, None) => {
                return Err(refuse(
                    "is downloaded from a URL but not pinned: cairn loads only plugins whose hash is recorded".into(),
                    Some(format!(
                        "run `cairn plugins lock` to download `{}` and record its hash, or set `sha256 = \"…\"`",
                        def.source.value
                    )),
                ))
            }
        };
        let cache = plugin_cache();
        let cached = cache
            .as_ref()
            .map(|dir| dir.join(format!("{expected}.wasm")));
        if let Some(path) = &cached {
            if let Ok(bytes) = std::fs::read(path) {
                if sha256_hex(&bytes) == expected {
                    return Ok((bytes, expected));
                }
                // A damaged or altered copy is never used: it is fetched again.
                let _ = std::fs::remove_file(path);
            }
        }
        let bytes = download(url).map_err(|reason| {
            refuse(
                format!("cannot download `{}`: {reason}", def.source.value),
                Some("it is downloaded once, then loaded from the cache offline; check the URL and the network".into()),
            )
        })?;
        let found = sha256_hex(&bytes);
        if found != expected {
            return Err(refuse(
                format!(
                    "`{}` served bytes with SHA-256 {found}, but the pin says {expected}: refusing to load them",
                    def.source.value
                ),
                Some("if the plugin was updated on purpose, run `cairn plugins lock` (or change `sha256`)".into()),
            ));
        }
        if let Some(path) = &cached {
            // Best effort: without the copy, the next run downloads again.
            let _ = crate::atomic::write_atomic_private(path, &bytes);
        }
        Ok((bytes, found))
    }

    /// Accepts a module built from this repository: it must be byte for byte the output that its `built_by`
    /// task's last successful run stored in the cache, so a module swapped after the build is refused.
    fn check_built_by(&self, def: &PluginDef, wasm: &[u8]) -> Result<(), PluginError> {
        let task = def.built_by.as_ref().map_or("", |t| t.value.as_str());
        let refuse = |message: String| {
            PluginError::Module {
            plugin: def.name.clone(),
            message,
            help: Some(format!(
                "run `cairn run {task}` to build it (and make the tasks that use it depend on `{task}`), or pin it with `cairn plugins lock`"
            )),
        }
        };
        let store = crate::cache::Store::open(
            &crate::cache::dir_for(&self.config.root),
            crate::cache::LockMode::Shared,
        )
        .map_err(|e| refuse(format!("cannot read the cache to check who built it: {e}")))?;
        let record: Option<crate::cache::SuccessRecord> =
            std::fs::read(store.task_file("tasks", task))
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let Some(record) = record else {
            return Err(refuse(format!(
                "is not pinned, and task `{task}` (its `built_by`) has no successful run recorded"
            )));
        };
        let entry = crate::cache::Key::parse(&record.key)
            .and_then(|key| store.load_entry(&key).ok().flatten());
        let wanted = crate::paths::normalize_lexically(std::path::Path::new(&def.source.value));
        let produced = entry.as_ref().and_then(|entry| {
            entry.outputs.iter().find(|o| {
                crate::paths::normalize_lexically(std::path::Path::new(&o.path)) == wanted
            })
        });
        let Some(produced) = produced else {
            return Err(refuse(format!(
                "is not pinned, and `{}` is not among the outputs of task `{task}`'s last successful run",
                def.source.value
            )));
        };
        let digest = crate::cache::hex(blake3::hash(wasm).as_bytes());
        if produced.blob.as_deref() != Some(digest.as_str()) {
            return Err(refuse(format!(
                "`{}` is not the file task `{task}` built: it changed after that task's last successful run",
                def.source.value
            )));
        }
        Ok(())
    }

    fn check_config(&self, def: &PluginDef, plugin: &Plugin) -> Result<(), PluginError> {
        let schema = &plugin.describe.config;
        for setting in &def.config {
            let Some(field) = schema.iter().find(|f| f.name == setting.key.value) else {
                let known: Vec<&str> = schema.iter().map(|f| f.name.as_str()).collect();
                let help =
                    crate::config::suggest::did_you_mean(&setting.key.value, known.iter().copied())
                        .or_else(|| {
                            Some(if known.is_empty() {
                                "it takes no settings".into()
                            } else {
                                format!("its settings: {}", known.join(", "))
                            })
                        });
                return Err(self.config_error(
                    format!(
                        "plugin `{}` has no setting `{}`",
                        def.name, setting.key.value
                    ),
                    &setting.key.span,
                    help,
                ));
            };
            let fits = match (field.kind, &setting.value) {
                (FieldKind::String, PluginValue::String(_)) => true,
                (FieldKind::Url, PluginValue::String(s)) => {
                    s.starts_with("http://") || s.starts_with("https://")
                }
                (FieldKind::Integer, PluginValue::Integer(_)) => true,
                (FieldKind::Boolean, PluginValue::Boolean(_)) => true,
                _ => false,
            };
            if !fits {
                let expected = match field.kind {
                    FieldKind::String => "a string",
                    FieldKind::Url => "an http:// or https:// URL",
                    FieldKind::Integer => "an integer",
                    FieldKind::Boolean => "true or false",
                };
                return Err(self.config_error(
                    format!(
                        "`config.{}` of plugin `{}` must be {expected}",
                        field.name, def.name
                    ),
                    &setting.span,
                    (!field.description.is_empty()).then(|| field.description.clone()),
                ));
            }
        }
        for field in schema.iter().filter(|f| f.required) {
            if !def.config.iter().any(|s| s.key.value == field.name) {
                return Err(self.config_error(
                    format!("plugin `{}` needs `config.{}`", def.name, field.name),
                    &def.span,
                    Some(format!(
                        "add `config = {{ {} = … }}`: {}",
                        field.name, field.description
                    )),
                ));
            }
        }
        Ok(())
    }

    fn config_error(
        &self,
        message: String,
        span: &crate::config::Span,
        help: Option<String>,
    ) -> PluginError {
        PluginError::Config {
            message,
            src: self.config.source.clone(),
            span: to_source_span(span),
            help,
        }
    }
}

/// A wasmtime cache configuration, so modules compile once, not every run. wasmtime loads what it finds there
/// as native code, past the module's pinned hash and the sandbox, so it lives only where this user alone can
/// write: `$XDG_CACHE_HOME/cairn/wasmtime` (`~/.cache`, or `~/Library/Caches` on macOS), never in the
/// repository's or a shared `CAIRN_CACHE_DIR`. When that cannot be made sure of, plugins compile every run.
fn compile_cache() -> Option<PathBuf> {
    let base = user_cache_base()?;
    let cairn = base.join("cairn");
    let dir = cairn.join("wasmtime");
    // Each directory that could swap what is below it must be ours and closed to other writers, checked
    // before anything is created inside it.
    if std::fs::symlink_metadata(&base).is_err() {
        crate::atomic::private_dir(&base).ok()?;
    }
    if !only_we_write(&base) {
        return None;
    }
    for private in [&cairn, &dir, &dir.join("compiled")] {
        crate::atomic::private_dir(private).ok()?;
        if !only_we_write(private) {
            return None;
        }
    }
    cairn_plugin_client::compile_cache_config(&dir).ok()
}

/// Where downloaded plugins are kept, by hash: `$XDG_CACHE_HOME/cairn/plugins` (0700, files 0600), only where
/// this user alone can write; `None` (download every run) when that cannot be made sure of.
pub fn plugin_cache() -> Option<PathBuf> {
    let base = user_cache_base()?;
    if std::fs::symlink_metadata(&base).is_err() {
        crate::atomic::private_dir(&base).ok()?;
    }
    if !only_we_write(&base) {
        return None;
    }
    let cairn = base.join("cairn");
    let dir = cairn.join("plugins");
    for private in [&cairn, &dir] {
        crate::atomic::private_dir(private).ok()?;
        if !only_we_write(private) {
            return None;
        }
    }
    Some(dir)
}

/// The most a downloaded module may weigh.
const MAX_MODULE_BYTES: u64 = 256 << 20;

/// Fetches a module: redirects followed (release assets are served from elsewhere), bounded in time and size.
pub fn download(url: &str) -> Result<Vec<u8>, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(5)
        .timeout_connect(Some(std::time::Duration::from_secs(10)))
        .timeout_global(Some(std::time::Duration::from_secs(300)))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| e.to_string())?;
    match response.status().as_u16() {
        200 => response
            .body_mut()
            .with_config()
            .limit(MAX_MODULE_BYTES)
            .read_to_vec()
            .map_err(|e| e.to_string()),
        status => Err(format!("the server answered {status}")),
    }
}

/// The user's cache directory: `$XDG_CACHE_HOME`, else `~/.cache` (`~/Library/Caches` on macOS).
fn user_cache_base() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let home = PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?);
    Some(if cfg!(target_os = "macos") {
        home.join("Library/Caches")
    } else {
        home.join(".cache")
    })
}

/// Whether `dir` is a real directory (not a link) owned by this user that no one else may write to.
fn only_we_write(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(dir).is_ok_and(|meta| {
        // SAFETY: geteuid has no preconditions.
        meta.is_dir() && meta.uid() == unsafe { libc::geteuid() } && meta.mode() & 0o022 == 0
    })
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .config
            .plugins
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        write!(f, "Plugins({names:?})")
    }
}
