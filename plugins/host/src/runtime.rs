//! The plugin runtime: one Extism instance, in this process. The `cairn-plugin-host` executable runs it for
//! cairn (see [`crate::serve`]); benchmarks and the host's own tests call it directly.

use std::sync::{Arc, Mutex};

use cairn_plugin_api::{
    exports, host_functions, Describe, LogLevel, LogRecord, Reply, PROTOCOL_VERSION,
};
use extism::{Function, Manifest, PluginBuilder, UserData, ValType, Wasm, PTR};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{http, Grants, HostError, Limits, Sink, Spec};
use cairn_plugin_client::{decode_reply, encode_request};

const PAGE: u64 = 64 << 10;

/// Native stack a call may use (wasmtime's default is 512 KiB): compiled WebAssembly recurses on the native
/// stack, and a parser that recurses per nesting level (the nix plugin's, on a file Nix accepts with thousands
/// of nested lists) ran out of the default long before its own limits. Calls must run on a thread with more
/// stack than this: `cairn-plugin-host` runs them on one of [`CALL_THREAD_STACK`].
pub const MAX_WASM_STACK: usize = 48 << 20;
/// The stack of the thread `cairn-plugin-host` calls plugins on.
pub const CALL_THREAD_STACK: usize = 64 << 20;

/// A loaded plugin: one instance, called one call at a time.
pub struct Instance {
    /// Its name in `tasks.toml`.
    pub name: String,
    /// What it said about itself.
    pub describe: Describe,
    /// Its bounds.
    pub limits: Limits,
    instance: Mutex<extism::Plugin>,
}

impl Instance {
    /// Compiles and instantiates `spec`'s module with only what it is granted, then asks it to describe
    /// itself and checks the protocol version.
    pub fn load(spec: Spec, sink: Arc<dyn Sink>) -> Result<Instance, HostError> {
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
        let mut engine = wasmtime::Config::new();
        // wasmtime checks the limit against the stack it would give an async call, though calls are synchronous.
        engine.async_stack_size(MAX_WASM_STACK + (1 << 20));
        engine.max_wasm_stack(MAX_WASM_STACK);
        let mut builder = PluginBuilder::new(manifest)
            .with_wasmtime_config(engine)
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
        let mut plugin = Instance {
            name: name.clone(),
            describe: Describe::unknown(&name),
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
        let input = encode_request(&self.name, export, input)?;
        let output = self.call_raw(export, &input, sink)?;
        decode_reply(&self.name, export, &output, sink)
    }

    /// Calls `export` with `input` (the request's JSON) and returns the plugin's output bytes unread.
    pub fn call_raw(
        &self,
        export: &str,
        input: &[u8],
        sink: &dyn Sink,
    ) -> Result<Vec<u8>, HostError> {
        let mut instance = self
            .instance
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = instance.call::<&[u8], Vec<u8>>(export, input);
        drop(instance);
        result.map_err(|e| self.call_error(export, &format!("{e:#}"), sink))
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
