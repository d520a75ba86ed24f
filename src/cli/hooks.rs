//! `cairn hooks install | uninstall`: a git pre-commit hook that runs a task (the cached `validate`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::CliError;

/// The first line after the shebang of every hook cairn writes, so it only ever replaces its own.
const MARKER: &str = "# Installed by `cairn hooks install`";

#[derive(Debug, clap::Subcommand)]
pub(super) enum HooksCommand {
    /// Write a git hook that runs a task before each commit (by default the pre-commit hook, running `validate`).
    Install {
        /// The task the hook runs.
        #[arg(long, default_value = "validate")]
        task: String,
        /// The git hook to write.
        #[arg(long, default_value = "pre-commit")]
        hook: String,
        /// Replace a hook that cairn did not write.
        #[arg(long)]
        force: bool,
    },
    /// Remove a hook cairn wrote.
    Uninstall {
        /// The git hook to remove.
        #[arg(long, default_value = "pre-commit")]
        hook: String,
    },
}

pub(super) fn hooks(command: &HooksCommand) -> Result<i32, CliError> {
    match command {
        HooksCommand::Install { task, hook, force } => install(task, hook, *force),
        HooksCommand::Uninstall { hook } => uninstall(hook),
    }
}

/// Where git looks for hooks here: `core.hooksPath` when set, else `.git/hooks` (also in worktrees).
fn hooks_dir() -> Result<PathBuf, CliError> {
    let output = Command::new("git")
        .args(["rev-parse", "--git-path", "hooks"])
        .output()
        .map_err(|source| CliError::Io {
            what: "cannot run git".into(),
            source,
        })?;
    if !output.status.success() {
        return Err(CliError::Hooks {
            message: "not inside a git repository".into(),
            help: Some("run `cairn hooks install` in the repository's working tree".into()),
        });
    }
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Ok(PathBuf::from(text))
}

fn ours(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .is_ok_and(|text| text.lines().nth(1).is_some_and(|l| l.starts_with(MARKER)))
}

fn install(task: &str, hook: &str, force: bool) -> Result<i32, CliError> {
    let dir = hooks_dir()?;
    let path = dir.join(hook);
    if path.exists() && !ours(&path) && !force {
        return Err(CliError::Hooks {
            message: format!("`{}` exists and was not written by cairn", path.display()),
            help: Some(
                "keep it and call `cairn run validate` from it, or pass `--force` to replace it"
                    .into(),
            ),
        });
    }
    // The hook prefers the cairn on PATH and falls back to the one that installed it, so it works in a
    // checkout where cairn was only ever run through cargo.
    let fallback = std::env::current_exe()
        .ok()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "cairn".into());
    let quoted_task = crate::config::template::shell_quote(task);
    let quoted_fallback = crate::config::template::shell_quote(&fallback);
    let script = format!(
        "#!/bin/sh\n{MARKER}: refuses secrets in the clear, then runs `cairn run {task}` before git goes on.\n\
         # The scan reads what is staged; the task checks the working tree (cached, so an unchanged tree costs\n\
         # milliseconds). Skip both once: git commit --no-verify\n\
         cairn=$(command -v cairn || echo {quoted_fallback})\n\
         \"$cairn\" secrets scan --staged || exit 1\n\
         exec \"$cairn\" run {quoted_task}\n"
    );
    std::fs::create_dir_all(&dir).map_err(|source| CliError::Io {
        what: format!("cannot create `{}`", dir.display()),
        source,
    })?;
    crate::atomic::write_atomic_with(&path, |file| {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        file.write_all(script.as_bytes())
    })
    .map_err(|source| CliError::Io {
        what: format!("cannot write `{}`", path.display()),
        source,
    })?;
    eprintln!(
        "cairn: installed {} (runs `cairn secrets scan --staged`, then `cairn run {task}`)",
        path.display()
    );
    Ok(0)
}

fn uninstall(hook: &str) -> Result<i32, CliError> {
    let path = hooks_dir()?.join(hook);
    if !path.exists() {
        eprintln!("cairn: no {hook} hook to remove");
        return Ok(0);
    }
    if !ours(&path) {
        return Err(CliError::Hooks {
            message: format!("`{}` was not written by cairn: left alone", path.display()),
            help: None,
        });
    }
    std::fs::remove_file(&path).map_err(|source| CliError::Io {
        what: format!("cannot remove `{}`", path.display()),
        source,
    })?;
    eprintln!("cairn: removed {}", path.display());
    Ok(0)
}
