//! `cairn ui`: starts the dashboard for the project's tasks.toml.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use crate::ui::{serve, UiOptions};

use super::{CliError, Context};

#[derive(Debug, clap::Args)]
pub(super) struct UiArgs {
    /// The port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 7878)]
    port: u16,
    /// Listen on this address instead of loopback (e.g. `0.0.0.0`), so other machines can reach the dashboard.
    /// Anyone who can reach it and learns the token sees what it shows.
    #[arg(long, value_name = "ADDRESS")]
    listen: Option<IpAddr>,
    /// Open the dashboard in the default browser.
    #[arg(long)]
    open: bool,
}

pub(super) fn ui(context: &Context, args: &UiArgs) -> Result<i32, CliError> {
    let root = super::history::project_root(context)?;
    let file = match &context.file {
        Some(file) => super::absolute(file),
        None => root.join("tasks.toml"),
    };
    let ip = match args.listen {
        Some(ip) => {
            if !ip.is_loopback() {
                eprintln!(
                    "cairn ui: warning: listening on {ip}, not only on this machine: anyone who can reach it and \
                     learns the address below can see this dashboard and run tasks"
                );
            }
            ip
        }
        None => IpAddr::from([127, 0, 0, 1]),
    };
    let options = UiOptions {
        listen: SocketAddr::new(ip, args.port),
        root,
        file,
    };
    let open = args.open;
    serve(
        options,
        |url| {
            // Whoever started the dashboard may stop reading its output; that must not stop the dashboard.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "cairn ui: {url}");
            let _ = writeln!(
                out,
                "cairn ui: the address carries this session's token; Ctrl-C stops the dashboard"
            );
            let _ = out.flush();
            drop(out);
            if open {
                open_browser(url);
            }
        },
        |warning| eprintln!("cairn ui: warning: {warning}"),
    )?;
    Ok(130)
}

/// Hands the address to the desktop's opener; a machine without one keeps the printed address.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let started = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(error) = started {
        eprintln!("cairn ui: cannot start `{opener}` ({error}): open the address above by hand");
    }
}
