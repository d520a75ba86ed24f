//! What cairn needs to run a plugin without linking wasmtime: the description of a plugin to load (module,
//! config, grants, limits), the errors, and the client of the `cairn-plugin-host` process that runs it (the
//! `cairn-plugin-host` crate, the only one with wasmtime). Kept apart from the host because every crate a
//! program links brings its `#[used]` statics, and wasmtime's pull in most of its runtime.

mod client;
mod grants;
pub mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cairn_plugin_api::{LogLevel, Reply, PROTOCOL_VERSION};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use client::{host_program, Plugin, HOST_PROGRAM_VARIABLE};
pub use grants::{Grants, HostPort};

/// Time a call may take when the user sets no `limits.timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Memory a plugin may use when the user sets no `limits.memory`.
pub const DEFAULT_MEMORY: u64 = 64 << 20;

/// Bounds on every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// Why loading or calling a plugin failed. Every variant names the plugin.
#[derive(Debug, thiserror::Error, Serialize, Deserialize)]
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
    /// The process running the plugin could not be started or stopped unexpectedly.
    #[error("plugin `{plugin}`: {message}")]
    Process {
        /// The plugin.
        plugin: String,
        /// What happened, and what to do about it.
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

impl HostError {
    /// This error with every text that came from the plugin or its runtime passed through `sink`'s redaction.
    pub fn redacted(self, sink: &dyn Sink) -> HostError {
        match self {
            HostError::Load { plugin, message } => HostError::Load {
                plugin,
                message: sink.redact(&message),
            },
            HostError::Trap {
                plugin,
                export,
                message,
            } => HostError::Trap {
                plugin,
                export,
                message: sink.redact(&message),
            },
            HostError::BadReply {
                plugin,
                export,
                message,
            } => HostError::BadReply {
                plugin,
                export,
                message: sink.redact(&message),
            },
            HostError::Process { plugin, message } => HostError::Process {
                plugin,
                message: sink.redact(&message),
            },
            HostError::Plugin { plugin, mut error } => {
                error.message = sink.redact(&error.message);
                HostError::Plugin { plugin, error }
            }
            other => other,
        }
    }
}

/// `input` as the JSON a plugin export reads (shared with the host, which calls exports in process too).
pub fn encode_request<I: Serialize>(
    plugin: &str,
    export: &str,
    input: &I,
) -> Result<Vec<u8>, HostError> {
    serde_json::to_vec(input).map_err(|e| HostError::BadReply {
        plugin: plugin.into(),
        export: export.into(),
        message: format!("the request cannot be encoded: {e}"),
    })
}

/// A plugin's output read as a [`Reply`]; its error's message is redacted.
pub fn decode_reply<O: DeserializeOwned>(
    plugin: &str,
    export: &str,
    output: &[u8],
    sink: &dyn Sink,
) -> Result<O, HostError> {
    let reply: Reply<O> = serde_json::from_slice(output).map_err(|e| HostError::BadReply {
        plugin: plugin.into(),
        export: export.into(),
        message: sink.redact(&e.to_string()),
    })?;
    reply.into_result().map_err(|mut error| {
        error.message = sink.redact(&error.message);
        HostError::Plugin {
            plugin: plugin.into(),
            error,
        }
    })
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
