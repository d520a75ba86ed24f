//! The Extism host cairn runs plugins with. Everything a plugin may do is granted here, per plugin: no
//! filesystem, no WASI, no environment, no clock and no network unless `tasks.toml` grants them; every call is
//! bounded in time, memory and (optionally) fuel; and the only network access is cairn's own HTTP function,
//! which checks host *and* port and never follows a redirect.

mod grants;
mod http;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_plugin_api::{
    exports, host_functions, Describe, LogLevel, LogRecord, Reply, PROTOCOL_VERSION,
};
use extism::{Function, Manifest, PluginBuilder, UserData, ValType, Wasm, PTR};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use grants::{Grants, HostPort};

/// Time a call may take when the user sets no `limits.timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Memory a plugin may use when the user sets no `limits.memory`.
pub const DEFAULT_MEMORY: u64 = 64 << 20;
const PAGE: u64 = 64 << 10;

/// Bounds on every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall time per call.
    pub timeout: Duration,
    /// Linear memory, in bytes.
    pub memory: u64,
    /// Instructions per call, when set.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            timeout: DEFAULT_TIMEOUT,
            memory: DEFAULT_MEMORY,
            fuel: None,
        }
    }
}

/// Where a plugin's logs and denied requests go, and how text is cleaned of secrets first.
pub trait Sink: Send + Sync {
    /// `text` with every secret replaced.
    fn redact(&self, text: &str) -> String;
    /// A log line from `plugin` (already redacted).
    fn log(&self, plugin: &str, level: LogLevel, message: &str);
}

/// Writes wasmtime's cache configuration for compiled modules kept in `dir/compiled` (to `dir/wasmtime-cache.toml`,
/// only when it changed) and returns its path, for [`Spec::cache_dir`]. wasmtime loads what it finds there as
/// native code: the caller must choose a `dir` only its user can write.
pub fn compile_cache_config(dir: &std::path::Path) -> std::io::Result<PathBuf> {
    let compiled = dir.join("compiled");
    let text = compile_cache_toml(&compiled)?;
    let config = dir.join("wasmtime-cache.toml");
    if std::fs::read_to_string(&config).ok().as_deref() != Some(text.as_str()) {
        let temp = dir.join(format!(".wasmtime-cache.toml.tmp.{}.0", std::process::id()));
        std::fs::write(&temp, &text)?;
        std::fs::rename(&temp, &config)?;
    }
    Ok(config)
}

/// The configuration's text, written with a TOML serializer so that any path (accents, quotes) survives.
fn compile_cache_toml(compiled: &std::path::Path) -> std::io::Result<String> {
    let directory = compiled.to_str().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the compile cache's path is not UTF-8",
        )
    })?;
    let mut cache = toml::Table::new();
    cache.insert(
        "directory".into(),
        toml::Value::String(directory.to_owned()),
    );
    let mut document = toml::Table::new();
    document.insert("cache".into(), toml::Value::Table(cache));
    toml::to_string(&document).map_err(std::io::Error::other)
}

/// Everything needed to load one plugin.
pub struct Spec {
    /// Its name in `tasks.toml`.
    pub name: String,
    /// The module's bytes (already checked against its pinned hash).
    pub wasm: Vec<u8>,
    /// `config`, as strings (what the plugin reads with `config_get`).
    pub config: BTreeMap<String, String>,
    /// What it may do.
    pub grants: Grants,
    /// Bounds on each call.
    pub limits: Limits,
    /// Where compiled modules are cached, if anywhere.
    pub cache_dir: Option<PathBuf>,
}

/// A loaded plugin: one instance, called one call at a time.
pub struct Plugin {
    /// Its name in `tasks.toml`.
    pub name: String,
    /// What it said about itself.
    pub describe: Describe,
    /// Its bounds.
    pub limits: Limits,
    instance: Mutex<extism::Plugin>,
}

/// Why loading or calling a plugin failed. Every variant names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The module does not compile or instantiate.
    #[error("plugin `{plugin}` cannot be loaded: {message}")]
    Load {
        /// The plugin.
        plugin: String,
        /// Why.
        message: String,
    },
    /// The module imports a host function it was not granted (or that does not exist).
    #[error("plugin `{plugin}` imports `{import}`, which cairn does not give it{hint}")]
    Import {
        /// The plugin.
        plugin: String,
        /// `module::name`.
        import: String,
        /// What would grant it, when something would.
        hint: String,
    },
    /// A required export is missing.
    #[error("plugin `{plugin}` has no `{export}` export")]
    MissingExport {
        /// The plugin.
        plugin: String,
        /// The export.
        export: String,
    },
    /// The plugin speaks another protocol version.
    #[error("plugin `{plugin}` speaks protocol {found}; this cairn speaks {PROTOCOL_VERSION}")]
    Protocol {
        /// The plugin.
        plugin: String,
        /// Its version.
        found: u32,
    },
    /// A call ran out of time.
    #[error("plugin `{plugin}` was stopped after {}s in `{export}` (its timeout)", .after.as_secs_f64())]
    Timeout {
        /// The plugin.
        plugin: String,
        /// The export.
        export: String,
        /// The limit.
        after: Duration,
    },
    /// A call ran out of fuel.
    #[error("plugin `{plugin}` ran out of fuel in `{export}` (limits.fuel = {fuel})")]
    Fuel {
        /// The plugin.
        plugin: String,
        /// The export.
        export: String,
        /// The limit.
        fuel: u64,
    },
    /// The plugin trapped (crashed).
    #[error("plugin `{plugin}` crashed in `{export}`: {message}")]
    Trap {
        /// The plugin.
        plugin: String,
        /// The export.
        export: String,
        /// What the runtime said (redacted).
        message: String,
    },
    /// The plugin answered something that is not the protocol.
    #[error("plugin `{plugin}` answered `{export}` with something cairn cannot read: {message}")]
    BadReply {
        /// The plugin.
        plugin: String,
        /// The export.
        export: String,
        /// Why.
        message: String,
    },
    /// The plugin reported a typed error.
    #[error("plugin `{plugin}`: {error}")]
    Plugin {
        /// The plugin.
        plugin: String,
        /// Its error (message redacted).
        error: cairn_plugin_api::PluginError,
    },
}

impl Plugin {
    /// Compiles and instantiates `spec`'s module with only what it is granted, then asks it to describe
    /// itself and checks the protocol version.
    pub fn load(spec: Spec, sink: Arc<dyn Sink>) -> Result<Plugin, HostError> {
        let name = spec.name.clone();
        let pages = u32::try_from(spec.limits.memory.div_ceil(PAGE)).unwrap_or(u32::MAX);
        let mut manifest = Manifest::new([Wasm::data(spec.wasm)])
            .disallow_all_hosts()
            .with_memory_max(pages)
            .with_timeout(spec.limits.timeout);
        for (key, value) in &spec.config {
            manifest = manifest.with_config_key(key, value);
        }
        for (key, value) in &spec.grants.env {
            manifest = manifest.with_config_key(format!("env.{key}"), value);
        }
        let mut builder = PluginBuilder::new(manifest)
            .with_wasi(false)
            .with_functions(functions(&name, &spec.grants, &sink, spec.limits.memory));
        builder = match &spec.cache_dir {
            Some(dir) => builder.with_cache_config(dir),
            None => builder.with_cache_disabled(),
        };
        if let Some(fuel) = spec.limits.fuel {
            builder = builder.with_fuel_limit(fuel);
        }
        let instance = builder
            .build()
            .map_err(|e| load_error(&name, &spec.grants, &format!("{e:#}"), sink.as_ref()))?;
        let mut plugin = Plugin {
            name: name.clone(),
            describe: Describe {
                name: name.clone(),
                version: String::new(),
                protocol: 0,
                capabilities: Vec::new(),
                config: Vec::new(),
                description: String::new(),
            },
            limits: spec.limits,
            instance: Mutex::new(instance),
        };
        if !plugin.has_export(exports::DESCRIBE) {
            return Err(HostError::MissingExport {
                plugin: name,
                export: exports::DESCRIBE.into(),
            });
        }
        let describe: Describe = plugin.call(exports::DESCRIBE, &(), sink.as_ref())?;
        if describe.protocol != PROTOCOL_VERSION {
            return Err(HostError::Protocol {
                plugin: name,
                found: describe.protocol,
            });
        }
        for capability in &describe.capabilities {
            if !plugin.has_export(capability.export()) {
                return Err(HostError::MissingExport {
                    plugin: name,
                    export: capability.export().into(),
                });
            }
        }
        plugin.describe = describe;
        Ok(plugin)
    }

    /// Whether the module exports `export`.
    pub fn has_export(&self, export: &str) -> bool {
        self.instance
            .lock()
            .map(|p| p.function_exists(export))
            .unwrap_or(false)
    }

    /// Calls `export` with `input` as JSON and reads its [`Reply`]. Blocks: call it from a blocking thread.
    pub fn call<I: Serialize, O: DeserializeOwned>(
        &self,
        export: &str,
        input: &I,
        sink: &dyn Sink,
    ) -> Result<O, HostError> {
        let input = serde_json::to_vec(input).map_err(|e| HostError::BadReply {
            plugin: self.name.clone(),
            export: export.into(),
            message: format!("the request cannot be encoded: {e}"),
        })?;
        let mut instance = self
            .instance
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = instance.call::<&[u8], Vec<u8>>(export, &input);
        drop(instance);
        let output = result.map_err(|e| self.call_error(export, &format!("{e:#}"), sink))?;
        let reply: Reply<O> = serde_json::from_slice(&output).map_err(|e| HostError::BadReply {
            plugin: self.name.clone(),
            export: export.into(),
            message: e.to_string(),
        })?;
        reply.into_result().map_err(|mut error| {
            error.message = sink.redact(&error.message);
            HostError::Plugin {
                plugin: self.name.clone(),
                error,
            }
        })
    }

    fn call_error(&self, export: &str, message: &str, sink: &dyn Sink) -> HostError {
        let (plugin, export) = (self.name.clone(), export.to_string());
        if message.contains("timeout") {
            HostError::Timeout {
                plugin,
                export,
                after: self.limits.timeout,
            }
        } else if message.contains("out of fuel") {
            HostError::Fuel {
                plugin,
                export,
                fuel: self.limits.fuel.unwrap_or_default(),
            }
        } else {
            let first = message.lines().next().unwrap_or(message);
            let hint = if message.contains("oom") || message.contains("out of memory") {
                format!(
                    ": it ran out of memory (its cap is {} MiB, limits.memory)",
                    self.limits.memory >> 20
                )
            } else if message.contains("unreachable") || message.contains("memory") {
                format!(
                    " (a plugin that runs out of memory stops this way: its cap is {} MiB, limits.memory)",
                    self.limits.memory >> 20
                )
            } else {
                String::new()
            };
            HostError::Trap {
                plugin,
                export,
                message: sink.redact(&format!("{first}{hint}")),
            }
        }
    }
}

fn load_error(plugin: &str, grants: &Grants, message: &str, sink: &dyn Sink) -> HostError {
    // wasmtime: "unknown import: `extism:host/user::cairn_http` has not been defined"
    if let Some(rest) = message.split("unknown import: `").nth(1) {
        let import = rest.split('`').next().unwrap_or(rest).to_string();
        let hint = if import.ends_with(host_functions::HTTP) && grants.hosts.is_empty() {
            "; grant network access with `allow.hosts = [\"HOST:PORT\"]`".to_string()
        } else if import.ends_with(host_functions::NOW) && !grants.clock {
            "; grant the clock with `allow.clock = true`".to_string()
        } else if import.starts_with("wasi") {
            "; cairn does not give plugins WASI (files, environment, clock): build for wasm32-unknown-unknown".to_string()
        } else {
            String::new()
        };
        return HostError::Import {
            plugin: plugin.into(),
            import,
            hint,
        };
    }
    HostError::Load {
        plugin: plugin.into(),
        message: sink.redact(message.lines().next().unwrap_or(message)),
    }
}

/// The host functions `plugin` may import: logging always, the clock and HTTP only when granted.
fn functions(plugin: &str, grants: &Grants, sink: &Arc<dyn Sink>, memory: u64) -> Vec<Function> {
    let context = Arc::new(Context {
        plugin: plugin.to_string(),
        grants: grants.clone(),
        sink: Arc::clone(sink),
        memory,
    });
    let mut list = vec![Function::new(
        host_functions::LOG,
        [PTR],
        [],
        UserData::new(Arc::clone(&context)),
        |current, inputs, _outputs, data| {
            let context = data.get()?;
            let context = context.lock().map_err(|_| extism::Error::msg("poisoned"))?;
            let text: String = current.memory_get_val(&inputs[0])?;
            let record: LogRecord = serde_json::from_str(&text).unwrap_or(LogRecord {
                level: LogLevel::Info,
                message: text,
            });
            let message = context.sink.redact(&record.message);
            context.sink.log(&context.plugin, record.level, &message);
            Ok(())
        },
    )];
    if grants.clock {
        list.push(Function::new(
            host_functions::NOW,
            [],
            [ValType::I64],
            UserData::new(()),
            |_current, _inputs, outputs, _data| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                outputs[0] = extism::Val::I64(now);
                Ok(())
            },
        ));
    }
    if !grants.hosts.is_empty() {
        list.push(Function::new(
            host_functions::HTTP,
            [PTR],
            [PTR],
            UserData::new(Arc::clone(&context)),
            |current, inputs, outputs, data| {
                let context = data.get()?;
                let context = context.lock().map_err(|_| extism::Error::msg("poisoned"))?;
                let text: String = current.memory_get_val(&inputs[0])?;
                let reply = http::serve(&context, &text, current.time_remaining());
                let mut json = serde_json::to_string(&reply).unwrap_or_default();
                // Escaping can grow a body that passed the limit: the encoded reply is what the guest gets.
                if json.len() as u64 > 2 * http::max_reply(context.memory) {
                    let refused: Reply<cairn_plugin_api::HttpResponse> =
                        Reply::Error(cairn_plugin_api::PluginError::new(
                            cairn_plugin_api::ErrorCode::Invalid,
                            "the reply is too large for the plugin's limits.memory",
                        ));
                    json = serde_json::to_string(&refused).unwrap_or_default();
                }
                let handle = current.memory_new(&json)?;
                outputs[0] = current.memory_to_val(handle);
                Ok(())
            },
        ));
    }
    list
}

/// What the host functions know about the plugin calling them.
pub(crate) struct Context {
    pub(crate) plugin: String,
    pub(crate) grants: Grants,
    pub(crate) sink: Arc<dyn Sink>,
    /// The plugin's `limits.memory`, which bounds the replies it is handed.
    pub(crate) memory: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compile_cache_configuration_keeps_any_path_intact() {
        let path = std::path::Path::new("/home/zoe\u{301}/\"quoted\"/cache");
        let text = compile_cache_toml(path).expect("serialises");
        let parsed: toml::Table = toml::from_str(&text).expect("parses back");
        assert_eq!(parsed["cache"]["directory"].as_str(), path.to_str());
    }
}
