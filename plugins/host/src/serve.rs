//! The `cairn-plugin-host` executable's loop: load the one plugin cairn sends, then answer its calls until
//! cairn closes the pipe. Keeping wasmtime in this process is what lets a run without plugins start without
//! loading it, and a crash in the runtime end here instead of in cairn.

use std::fs::File;
use std::io::{self, BufReader};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use cairn_plugin_api::LogLevel;

use crate::runtime::Instance;
use crate::{HostError, Sink, Spec};
use cairn_plugin_client::wire::{read_frame, write_frame, FromHost, ToHost};

/// Sends log lines back to cairn as they happen; cairn redacts them (it holds the secrets' values).
struct PipeSink {
    out: Arc<Mutex<File>>,
}

impl Sink for PipeSink {
    fn redact(&self, text: &str) -> String {
        text.to_string()
    }

    fn log(&self, _plugin: &str, level: LogLevel, message: &str) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // A closed pipe means cairn is gone; the call's own answer will fail to send and end the loop.
        let _ = write_frame(
            &mut *out,
            &FromHost::Log {
                level,
                message: message.to_string(),
            },
            &[],
        );
    }
}

/// Runs the host on this process's stdin and stdout; returns when cairn closes stdin.
pub fn main() -> ExitCode {
    // Calls run on a thread with room for the stack wasmtime lets them use.
    let served = std::thread::Builder::new()
        .name("plugin".into())
        .stack_size(crate::runtime::CALL_THREAD_STACK)
        .spawn(serve)
        .map_err(|e| io::Error::other(format!("cannot start the call thread: {e}")))
        .and_then(|thread| {
            thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the call thread panicked")))
        });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cairn-plugin-host: {error}");
            ExitCode::from(2)
        }
    }
}

fn serve() -> io::Result<()> {
    use std::os::fd::AsFd;
    if std::io::IsTerminal::is_terminal(&io::stdin()) {
        return Err(io::Error::other(
            "this program is started by cairn to run a plugin; it is not run by hand",
        ));
    }
    ignore_interrupts();
    let mut input = BufReader::new(File::from(io::stdin().as_fd().try_clone_to_owned()?));
    let out = Arc::new(Mutex::new(File::from(
        io::stdout().as_fd().try_clone_to_owned()?,
    )));
    let send = |header: &FromHost, payload: &[u8]| {
        let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
        write_frame(&mut *out, header, payload)
    };
    let sink: Arc<dyn Sink> = Arc::new(PipeSink {
        out: Arc::clone(&out),
    });

    let Some((ToHost::Load(request), wasm)) = read_frame(&mut input)? else {
        return Err(io::Error::other("the first request was not a load"));
    };
    let name = request.name.clone();
    let spec = Spec {
        name: request.name,
        wasm,
        config: request.config,
        grants: request.grants,
        limits: request.limits,
        cache_dir: request.cache_dir,
    };
    let instance = match Instance::load(spec, Arc::clone(&sink)) {
        Ok(instance) => instance,
        Err(error) => return send(&FromHost::Failed { error }, &[]),
    };
    send(
        &FromHost::Loaded {
            describe: instance.describe.clone(),
        },
        &[],
    )?;

    while let Some((request, payload)) = read_frame::<ToHost>(&mut input)? {
        let ToHost::Call { export } = request else {
            let error = HostError::Process {
                plugin: name.clone(),
                message: "the plugin host was asked to load a second plugin".into(),
            };
            send(&FromHost::Failed { error }, &[])?;
            continue;
        };
        match instance.call_raw(&export, &payload, sink.as_ref()) {
            Ok(output) => send(&FromHost::Returned, &output)?,
            Err(error) => send(&FromHost::Failed { error }, &[])?,
        }
    }
    Ok(())
}

/// Ctrl-C reaches the whole process group; cairn decides when the host stops (by closing its stdin), so that a
/// run being cancelled can still tell its event plugins.
fn ignore_interrupts() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to "ignore" installs no handler code.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
}
