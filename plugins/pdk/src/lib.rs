//! Write cairn plugins in Rust. A plugin is a `cdylib` crate that calls [`plugin!`] once:
//!
//! ```ignore
//! use cairn_pdk::{api::*, plugin};
//!
//! fn describe() -> Describe {
//!     cairn_pdk::describe("hello", env!("CARGO_PKG_VERSION"), &[Capability::Secrets])
//! }
//!
//! fn get(request: SecretRequest) -> Result<SecretValue, PluginError> {
//!     Ok(SecretValue { value: format!("value of {}", request.reference), version: None })
//! }
//!
//! plugin! { describe: describe, secrets: get }
//! ```
//!
//! Handlers are plain functions from a request type to `Result<Response, PluginError>`, so they can be unit
//! tested natively; [`testing`] calls them through the same JSON the host sends, with fake config and HTTP.

pub use cairn_plugin_api as api;
pub use serde_json;

use api::{Capability, Describe, ErrorCode, PluginError, Reply, PROTOCOL_VERSION};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A [`Describe`] with the protocol version filled in.
pub fn describe(name: &str, version: &str, capabilities: &[Capability]) -> Describe {
    Describe {
        name: name.into(),
        version: version.into(),
        protocol: PROTOCOL_VERSION,
        capabilities: capabilities.to_vec(),
        config: Vec::new(),
        description: String::new(),
    }
}

/// One setting of a plugin's configuration schema.
pub fn config_field(
    name: &str,
    kind: api::FieldKind,
    required: bool,
    description: &str,
) -> api::ConfigField {
    api::ConfigField {
        name: name.into(),
        kind,
        required,
        description: description.into(),
    }
}

/// Runs `handler` on a JSON request and returns the JSON [`Reply`]: what every export does.
pub fn dispatch<I, O>(input: &[u8], handler: impl FnOnce(I) -> Result<O, PluginError>) -> Vec<u8>
where
    I: DeserializeOwned,
    O: Serialize,
{
    let reply: Reply<O> = match serde_json::from_slice::<I>(input) {
        Ok(request) => handler(request).into(),
        Err(e) => Reply::Error(PluginError::new(
            ErrorCode::Invalid,
            format!("the request does not match the protocol: {e}"),
        )),
    };
    serde_json::to_vec(&reply).unwrap_or_else(|e| {
        format!(r#"{{"error":{{"code":"internal","message":"cannot encode the reply: {e}"}}}}"#)
            .into_bytes()
    })
}

/// The body of an export: reads the input, runs `handler`, writes the reply. Used by [`plugin!`].
#[cfg(target_arch = "wasm32")]
pub fn export<I, O>(handler: impl FnOnce(I) -> Result<O, PluginError>) -> i32
where
    I: DeserializeOwned,
    O: Serialize,
{
    let input = extism_pdk::input_bytes();
    let reply = dispatch(&input, handler);
    match extism_pdk::output(reply) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Declares the plugin's exports: `describe` and a handler per capability.
#[macro_export]
macro_rules! plugin {
    (describe: $describe:path $(, secrets: $secrets:path)? $(, events: $events:path)? $(, executor: $executor:path)? $(, task: $task:path)? $(,)?) => {
        // Natively (tests), the handlers are used only through the exports that exist on wasm32.
        #[cfg(not(target_arch = "wasm32"))]
        #[allow(dead_code)]
        fn __cairn_handlers() {
            let _ = $describe;
            $(let _ = $secrets;)?
            $(let _ = $events;)?
            $(let _ = $executor;)?
            $(let _ = $task;)?
        }
        #[cfg(target_arch = "wasm32")]
        #[export_name = "describe"]
        pub extern "C" fn __cairn_export_describe() -> i32 {
            $crate::export(|(): ()| Ok::<_, $crate::api::PluginError>($describe()))
        }
        $(
            #[cfg(target_arch = "wasm32")]
            #[export_name = "secret_get"]
            pub extern "C" fn __cairn_export_secret_get() -> i32 {
                $crate::export($secrets)
            }
        )?
        $(
            #[cfg(target_arch = "wasm32")]
            #[export_name = "on_events"]
            pub extern "C" fn __cairn_export_on_events() -> i32 {
                $crate::export($events)
            }
        )?
        $(
            #[cfg(target_arch = "wasm32")]
            #[export_name = "wrap_command"]
            pub extern "C" fn __cairn_export_wrap_command() -> i32 {
                $crate::export($executor)
            }
        )?
        $(
            #[cfg(target_arch = "wasm32")]
            #[export_name = "run_task"]
            pub extern "C" fn __cairn_export_run_task() -> i32 {
                $crate::export($task)
            }
        )?
    };
}

#[cfg(target_arch = "wasm32")]
mod host {
    #[link(wasm_import_module = "extism:host/user")]
    extern "C" {
        pub fn cairn_log(record: u64);
        pub fn cairn_now() -> u64;
        pub fn cairn_http(request: u64) -> u64;
    }

    /// Copies `bytes` into host memory and returns its offset.
    pub fn put(bytes: &[u8]) -> Option<u64> {
        extism_pdk::Memory::from_bytes(bytes)
            .ok()
            .map(|m| m.offset())
    }

    /// Reads a block of host memory as text.
    pub fn get(offset: u64) -> Option<String> {
        extism_pdk::Memory::find(offset).and_then(|m| m.to_string().ok())
    }
}

/// Logging through cairn, which redacts secrets before showing it.
/// 1-based line and byte column of a byte offset, as cairn's diagnostics (and Nix) count them.
pub fn line_column(text: &str, offset: usize) -> (u32, u32) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line as u32, column as u32)
}

pub mod log {
    use crate::api::{LogLevel, LogRecord};

    /// Logs `message` at `level`.
    pub fn write(level: LogLevel, message: impl Into<String>) {
        let record = LogRecord {
            level,
            message: message.into(),
        };
        #[cfg(target_arch = "wasm32")]
        if let Ok(json) = serde_json::to_vec(&record) {
            if let Some(offset) = super::host::put(&json) {
                // SAFETY: the host function reads the block at `offset`.
                unsafe { super::host::cairn_log(offset) };
            }
        }
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::record_log(record);
    }

    /// Logs at debug level.
    pub fn debug(message: impl Into<String>) {
        write(LogLevel::Debug, message);
    }

    /// Logs at info level.
    pub fn info(message: impl Into<String>) {
        write(LogLevel::Info, message);
    }

    /// Logs at warn level.
    pub fn warn(message: impl Into<String>) {
        write(LogLevel::Warn, message);
    }

    /// Logs at error level.
    pub fn error(message: impl Into<String>) {
        write(LogLevel::Error, message);
    }
}

/// The plugin's `[plugins.NAME] config` and the host variables it was granted (`allow.env`).
pub mod config {
    use crate::api::{ErrorCode, PluginError};

    /// A config value.
    pub fn get(key: &str) -> Option<String> {
        #[cfg(target_arch = "wasm32")]
        return extism_pdk::config::get(key).ok().flatten();
        #[cfg(not(target_arch = "wasm32"))]
        return crate::testing::config_value(key);
    }

    /// A config value that must be set.
    pub fn require(key: &str) -> Result<String, PluginError> {
        get(key).ok_or_else(|| {
            PluginError::new(ErrorCode::Invalid, format!("`config.{key}` is not set"))
        })
    }

    /// A host environment variable granted with `allow.env`.
    pub fn env(name: &str) -> Option<String> {
        get(&format!("env.{name}"))
    }
}

/// The run's clock (granted with `allow.clock = true`).
pub mod clock {
    /// Milliseconds since the Unix epoch.
    pub fn now_ms() -> u64 {
        #[cfg(target_arch = "wasm32")]
        // SAFETY: a host function without arguments.
        return unsafe { super::host::cairn_now() };
        #[cfg(not(target_arch = "wasm32"))]
        return crate::testing::clock_value().unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        });
    }
}

/// HTTP through cairn (granted with `allow.hosts`): host and port are checked, redirects are returned, not
/// followed.
pub mod http {
    use crate::api::{ErrorCode, HttpRequest, HttpResponse, PluginError, Reply};

    /// Sends `request`.
    pub fn request(request: &HttpRequest) -> Result<HttpResponse, PluginError> {
        let json = serde_json::to_vec(request)
            .map_err(|e| PluginError::new(ErrorCode::Internal, e.to_string()))?;
        #[cfg(target_arch = "wasm32")]
        let reply = {
            let offset = super::host::put(&json)
                .ok_or_else(|| PluginError::new(ErrorCode::Internal, "out of memory"))?;
            // SAFETY: the host reads the request at `offset` and returns the offset of its reply.
            let answer = unsafe { super::host::cairn_http(offset) };
            super::host::get(answer)
                .ok_or_else(|| PluginError::new(ErrorCode::Internal, "no reply from the host"))?
        };
        #[cfg(not(target_arch = "wasm32"))]
        let reply = crate::testing::http_reply(&json);
        serde_json::from_str::<Reply<HttpResponse>>(&reply)
            .map_err(|e| PluginError::new(ErrorCode::Internal, e.to_string()))?
            .into_result()
    }

    /// A GET with `headers`.
    pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<HttpResponse, PluginError> {
        request(&HttpRequest {
            method: "GET".into(),
            url: url.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: None,
        })
    }
}

/// Native tests of a plugin's handlers, with fake config, fake HTTP and captured logs.
pub mod testing {
    #[cfg(not(target_arch = "wasm32"))]
    use std::cell::RefCell;
    #[cfg(not(target_arch = "wasm32"))]
    use std::collections::BTreeMap;

    #[cfg(not(target_arch = "wasm32"))]
    use crate::api::{HttpRequest, HttpResponse, LogRecord, PluginError, Reply};

    #[cfg(not(target_arch = "wasm32"))]
    type Responder = Box<dyn Fn(HttpRequest) -> Result<HttpResponse, PluginError>>;

    #[cfg(not(target_arch = "wasm32"))]
    thread_local! {
        static CONFIG: RefCell<BTreeMap<String, String>> = RefCell::new(BTreeMap::new());
        static LOGS: RefCell<Vec<LogRecord>> = const { RefCell::new(Vec::new()) };
        static HTTP: RefCell<Option<Responder>> = RefCell::new(None);
        static CLOCK: RefCell<Option<u64>> = const { RefCell::new(None) };
    }

    /// Grants the handlers host variables, as `allow.env` does (read with `config::env`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn set_env(pairs: &[(&str, &str)]) {
        CONFIG.with(|c| {
            let mut config = c.borrow_mut();
            config.retain(|k, _| !k.starts_with("env."));
            for (name, value) in pairs {
                config.insert(format!("env.{name}"), value.to_string());
            }
        });
    }

    /// Fixes the time `clock::now_ms` answers, as `allow.clock` would give it.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn set_clock(now_ms: u64) {
        CLOCK.with(|c| *c.borrow_mut() = Some(now_ms));
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn clock_value() -> Option<u64> {
        CLOCK.with(|c| *c.borrow())
    }

    /// A `run_task` request, built up file by file: `testing::task("lint").file("a.nix", "{ }").json()`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn task(name: &str) -> TaskRequestBuilder {
        TaskRequestBuilder(crate::api::TaskRequest {
            task: name.to_string(),
            params: BTreeMap::new(),
            args: Vec::new(),
            files: Vec::new(),
        })
    }

    /// Builds a [`crate::api::TaskRequest`].
    #[cfg(not(target_arch = "wasm32"))]
    pub struct TaskRequestBuilder(crate::api::TaskRequest);

    #[cfg(not(target_arch = "wasm32"))]
    impl TaskRequestBuilder {
        /// Adds an input file.
        pub fn file(mut self, path: &str, contents: &str) -> Self {
            self.0.files.push(crate::api::InputFile {
                path: path.to_string(),
                contents: contents.to_string(),
            });
            self
        }
        /// Sets a param of the task instance.
        pub fn param(mut self, name: &str, value: &str) -> Self {
            self.0.params.insert(name.to_string(), value.to_string());
            self
        }
        /// Adds an argument (`-- ARGS`).
        pub fn arg(mut self, arg: &str) -> Self {
            self.0.args.push(arg.to_string());
            self
        }
        /// The request as the JSON cairn sends.
        pub fn json(&self) -> serde_json::Value {
            serde_json::to_value(&self.0).unwrap_or_default()
        }
    }

    /// A `secret_get` request for `reference` (and `field`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn secret(reference: &str, field: Option<&str>) -> serde_json::Value {
        serde_json::json!({ "ref": reference, "field": field })
    }

    /// An `on_events` batch of `events`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn events(events: Vec<crate::api::Event>) -> serde_json::Value {
        serde_json::to_value(crate::api::EventBatch { events }).unwrap_or_default()
    }

    /// A `wrap_command` request: `argv` of `task`, run in `cwd`, with the variables `env` names.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wrap(task: &str, argv: &[&str], cwd: &str, env: &[&str]) -> serde_json::Value {
        serde_json::json!({ "task": task, "argv": argv, "cwd": cwd, "env": env })
    }

    /// The answer of a reply, or a panic naming the plugin's error.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn ok<O: std::fmt::Debug>(reply: Reply<O>) -> O {
        match reply {
            Reply::Ok(value) => value,
            Reply::Error(error) => {
                panic!("the handler failed: {:?}: {}", error.code, error.message)
            }
        }
    }

    /// The error of a reply, or a panic showing the answer it gave instead.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn error<O: std::fmt::Debug>(reply: Reply<O>) -> PluginError {
        match reply {
            Reply::Error(error) => error,
            Reply::Ok(value) => panic!("expected an error, the handler answered {value:?}"),
        }
    }

    /// Asserts that `response` reports a diagnostic at `path:line` with `severity` whose message contains
    /// `message`, showing every diagnostic it has otherwise.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn assert_diagnostic(
        response: &crate::api::TaskResponse,
        path: &str,
        line: u32,
        severity: crate::api::Severity,
        message: &str,
    ) {
        let found = response.diagnostics.iter().any(|d| {
            d.path == path
                && d.line == line
                && d.severity == severity
                && d.message.contains(message)
        });
        assert!(
            found,
            "no {severity:?} at {path}:{line} containing {message:?}; the diagnostics are:\n{}",
            response
                .diagnostics
                .iter()
                .map(|d| format!(
                    "  {}:{}:{}: {:?}: {}",
                    d.path, d.line, d.column, d.severity, d.message
                ))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// Sets the config the handlers see (`env.NAME` keys for granted variables).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn set_config(pairs: &[(&str, &str)]) {
        CONFIG.with(|c| {
            *c.borrow_mut() = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        });
    }

    /// Answers the handlers' HTTP requests with `responder`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn set_http(
        responder: impl Fn(HttpRequest) -> Result<HttpResponse, PluginError> + 'static,
    ) {
        HTTP.with(|h| *h.borrow_mut() = Some(Box::new(responder)));
    }

    /// The log records written so far (and forgets them).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn take_logs() -> Vec<LogRecord> {
        LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()))
    }

    /// Calls `handler` with `request` as the host would: JSON in, JSON [`Reply`] out.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn call<I, O>(
        handler: impl FnOnce(I) -> Result<O, PluginError>,
        request: &serde_json::Value,
    ) -> Reply<O>
    where
        I: serde::de::DeserializeOwned,
        O: serde::Serialize + serde::de::DeserializeOwned,
    {
        let input = serde_json::to_vec(request).unwrap_or_default();
        let output = crate::dispatch(&input, handler);
        serde_json::from_slice(&output).unwrap_or_else(|e| {
            Reply::Error(PluginError::new(
                crate::api::ErrorCode::Internal,
                e.to_string(),
            ))
        })
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn config_value(key: &str) -> Option<String> {
        CONFIG.with(|c| c.borrow().get(key).cloned())
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn record_log(record: LogRecord) {
        LOGS.with(|l| l.borrow_mut().push(record));
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn http_reply(request: &[u8]) -> String {
        let reply: Reply<HttpResponse> = match serde_json::from_slice::<HttpRequest>(request) {
            Ok(request) => HTTP.with(|h| match &*h.borrow() {
                Some(responder) => responder(request).into(),
                None => Reply::Error(PluginError::new(
                    crate::api::ErrorCode::PermissionDenied,
                    "no HTTP in this test (testing::set_http)",
                )),
            }),
            Err(e) => Reply::Error(PluginError::new(
                crate::api::ErrorCode::Invalid,
                e.to_string(),
            )),
        };
        serde_json::to_string(&reply).unwrap_or_default()
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use crate::api::*;
    use crate::testing;

    /// A handler using what the kit fakes: config, a granted variable and the clock.
    fn check(request: TaskRequest) -> Result<TaskResponse, PluginError> {
        let token = crate::config::env("TOKEN").unwrap_or_default();
        let now = crate::clock::now_ms();
        let diagnostics = request
            .files
            .iter()
            .filter(|f| f.contents.contains("TODO"))
            .map(|f| Diagnostic {
                path: f.path.clone(),
                line: 1,
                column: 1,
                severity: Severity::Warning,
                message: "a TODO is left".into(),
            })
            .collect();
        Ok(TaskResponse {
            status: 0,
            diagnostics,
            output: format!(
                "{} {} {now} {}",
                request.task,
                token.len(),
                request.args.join(",")
            ),
        })
    }

    fn refuse(_: SecretRequest) -> Result<SecretValue, PluginError> {
        Err(PluginError::new(ErrorCode::NotFound, "no such secret"))
    }

    #[test]
    fn the_kit_builds_requests_fakes_grants_and_checks_diagnostics() {
        testing::set_env(&[("TOKEN", "abcd")]);
        testing::set_clock(42);
        let request = testing::task("lint")
            .file("a.nix", "{ }")
            .file("b.nix", "# TODO")
            .param("env", "ci")
            .arg("-v")
            .json();
        let response = testing::ok(testing::call(check, &request));
        assert_eq!(response.output, "lint 4 42 -v");
        testing::assert_diagnostic(&response, "b.nix", 1, Severity::Warning, "TODO");
        let error = testing::error(testing::call(
            refuse,
            &testing::secret("db", Some("password")),
        ));
        assert_eq!(error.code, ErrorCode::NotFound);
    }

    #[test]
    #[should_panic(expected = "no Error at b.nix:1")]
    fn a_missing_diagnostic_is_reported_with_the_ones_there_are() {
        let response = testing::ok(testing::call(
            check,
            &testing::task("lint").file("b.nix", "TODO").json(),
        ));
        testing::assert_diagnostic(&response, "b.nix", 1, Severity::Error, "TODO");
    }
}
