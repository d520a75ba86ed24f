//! A plugin as cairn holds it: a `cairn-plugin-host` process running the plugin, spoken to over pipes. cairn
//! itself never loads wasmtime, so a run without plugins does not pay for it, and a runtime crash ends the
//! host process, not the run.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_plugin_api::Describe;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::wire::{read_frame, write_frame, FromHost, LoadRequest, ToHost};
use crate::{decode_reply, encode_request, HostError, Limits, Sink, Spec};

/// The environment variable naming the plugin-host executable, when it is not beside cairn's own.
pub const HOST_PROGRAM_VARIABLE: &str = "CAIRN_PLUGIN_HOST";
const HOST_PROGRAM: &str = "cairn-plugin-host";
/// What the host wrote to stderr is kept for the error message, up to this much.
const STDERR_TAIL: usize = 4096;

/// Where the plugin-host executable is: `$CAIRN_PLUGIN_HOST`, else beside the running executable (or, for
/// cargo's test and bench binaries in `target/*/deps`, one folder up).
pub fn host_program() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(HOST_PROGRAM_VARIABLE).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot tell where this executable is ({e})"))?;
    let name = format!("{HOST_PROGRAM}{}", std::env::consts::EXE_SUFFIX);
    let beside = exe.with_file_name(&name);
    if beside.is_file() {
        return Ok(beside);
    }
    if let Some(deps) = exe
        .parent()
        .filter(|d| d.file_name() == Some("deps".as_ref()))
    {
        if let Some(up) = deps.parent().map(|d| d.join(&name)).filter(|p| p.is_file()) {
            return Ok(up);
        }
    }
    Err(format!(
        "`{name}` is not beside `{}`; it runs plugins for cairn. `cargo install --path .` installs both, \
         `cargo build` builds both, or set {HOST_PROGRAM_VARIABLE} to its path",
        exe.display()
    ))
}

/// A loaded plugin: one host process, called one call at a time.
pub struct Plugin {
    /// Its name in `tasks.toml`.
    pub name: String,
    /// What it said about itself.
    pub describe: Describe,
    /// Its bounds.
    pub limits: Limits,
    connection: Mutex<Connection>,
}

struct Connection {
    child: Child,
    to_host: Option<ChildStdin>,
    from_host: BufReader<ChildStdout>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Reads the host's stderr until the host exits.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    /// Set once the pipe broke: every later call fails the same way instead of waiting on a dead process.
    failed: Option<String>,
}

impl Plugin {
    /// Starts a host process, has it compile and instantiate `spec`'s module with only what it is granted,
    /// and checks that the module describes itself in this protocol.
    pub fn load(spec: Spec, sink: Arc<dyn Sink>) -> Result<Plugin, HostError> {
        let program = host_program().map_err(|message| HostError::Process {
            plugin: spec.name.clone(),
            message,
        })?;
        Plugin::load_with(&program, spec, sink.as_ref())
    }

    /// [`Plugin::load`] with the host executable given.
    pub fn load_with(program: &Path, spec: Spec, sink: &dyn Sink) -> Result<Plugin, HostError> {
        let name = spec.name.clone();
        let start_error = |e: std::io::Error| {
            HostError::Process {
            plugin: name.clone(),
            message: format!(
                "cannot start the plugin host `{}`: {e}; `cargo build` builds it beside cairn, or set \
                 {HOST_PROGRAM_VARIABLE}",
                program.display()
            ),
        }
        };
        // An empty environment: the host needs none, and cairn's credentials stay in cairn.
        let mut child = Command::new(program)
            .env_clear()
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(start_error)?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = child.stderr.take().map(|mut pipe| {
            let tail = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buffer = [0u8; 1024];
                while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                    let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                    tail.extend_from_slice(&buffer[..n]);
                    let excess = tail.len().saturating_sub(STDERR_TAIL);
                    tail.drain(..excess);
                }
            })
        });
        let (Some(to_host), Some(from_host)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(HostError::Process {
                plugin: name,
                message: "the plugin host's pipes could not be opened".into(),
            });
        };
        let mut plugin = Plugin {
            name: name.clone(),
            describe: Describe::unknown(&name),
            limits: spec.limits,
            connection: Mutex::new(Connection {
                child,
                to_host: Some(to_host),
                from_host: BufReader::new(from_host),
                stderr,
                stderr_reader,
                failed: None,
            }),
        };
        let request = ToHost::Load(LoadRequest {
            name: spec.name,
            config: spec.config,
            grants: spec.grants,
            limits: spec.limits,
            cache_dir: spec.cache_dir,
        });
        match plugin.exchange("describe", &request, &spec.wasm, sink)? {
            (FromHost::Loaded { describe }, _) => {
                plugin.describe = describe;
                Ok(plugin)
            }
            _ => Err(plugin.protocol_error("describe", "an answer other than the description")),
        }
    }

    /// Calls `export` with `input` as JSON and reads its [`cairn_plugin_api::Reply`]. Blocks: call it from
    /// a blocking thread.
    pub fn call<I: Serialize, O: DeserializeOwned>(
        &self,
        export: &str,
        input: &I,
        sink: &dyn Sink,
    ) -> Result<O, HostError> {
        let input = encode_request(&self.name, export, input)?;
        let request = ToHost::Call {
            export: export.to_string(),
        };
        match self.exchange(export, &request, &input, sink)? {
            (FromHost::Returned, output) => decode_reply(&self.name, export, &output, sink),
            _ => Err(self.protocol_error(export, "an answer other than a call's")),
        }
    }

    /// Sends one request and reads frames until its answer, passing log lines to `sink` on the way.
    fn exchange(
        &self,
        export: &str,
        request: &ToHost,
        payload: &[u8],
        sink: &dyn Sink,
    ) -> Result<(FromHost, Vec<u8>), HostError> {
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(why) = &connection.failed {
            return Err(self.process_error(why.clone()));
        }
        let sent = match connection.to_host.as_mut() {
            Some(pipe) => write_frame(pipe, request, payload),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        if let Err(error) = sent {
            return Err(self.broken(&mut connection, export, &error.to_string()));
        }
        loop {
            match read_frame::<FromHost>(&mut connection.from_host) {
                Ok(Some((FromHost::Log { level, message }, _))) => {
                    sink.log(&self.name, level, &sink.redact(&message));
                }
                Ok(Some((FromHost::Failed { error }, _))) => return Err(error.redacted(sink)),
                Ok(Some(answer)) => return Ok(answer),
                Ok(None) => return Err(self.broken(&mut connection, export, "it closed the pipe")),
                Err(error) => return Err(self.broken(&mut connection, export, &error.to_string())),
            }
        }
    }

    /// The error for a host process that stopped answering, with how it ended and what it said; later
    /// calls fail the same way.
    fn broken(&self, connection: &mut Connection, export: &str, what: &str) -> HostError {
        let deadline = Instant::now() + Duration::from_millis(500);
        let status = loop {
            match connection.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break None,
            }
        };
        let ended = match status {
            Some(status) => {
                // The host is gone, so its stderr is closed: what it said last is all read once the reader ends.
                if let Some(reader) = connection.stderr_reader.take() {
                    let _ = reader.join();
                }
                describe_exit(status)
            }
            None => what.to_string(),
        };
        let said = {
            let tail = connection.stderr.lock().unwrap_or_else(|p| p.into_inner());
            String::from_utf8_lossy(&tail).trim().to_string()
        };
        let mut message = format!("its host process stopped during `{export}` ({ended})");
        if let Some(last) = said.lines().rev().find(|l| !l.trim().is_empty()) {
            message.push_str(&format!(": {last}"));
        }
        connection.failed = Some(message.clone());
        self.process_error(message)
    }

    fn process_error(&self, message: String) -> HostError {
        HostError::Process {
            plugin: self.name.clone(),
            message,
        }
    }

    fn protocol_error(&self, export: &str, what: &str) -> HostError {
        HostError::BadReply {
            plugin: self.name.clone(),
            export: export.into(),
            message: format!("its host process sent {what}"),
        }
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => status.to_string(),
    }
}

impl Drop for Plugin {
    /// Closing the host's stdin ends it; one that does not end promptly (a call still running after cairn
    /// gave up on it) is killed.
    fn drop(&mut self) {
        let connection = self
            .connection
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        drop(connection.to_host.take());
        let deadline = Instant::now() + Duration::from_millis(200);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = connection.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = connection.child.kill();
        let _ = connection.child.wait();
    }
}
