//! The audit log: one JSON line per run of a task marked `audit = true`, appended to `.cairn/audit.log` with a
//! single write, so concurrent cairn processes never interleave lines. It records who, where, which revision,
//! what (task and params) and how it ended; never a secret (params are not secrets, and values are not
//! recorded).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::Serialize;

/// One line of the audit log.
#[derive(Debug, Serialize)]
pub struct AuditLine<'a> {
    /// RFC 3339, UTC.
    pub time: String,
    /// Who ran it.
    pub user: String,
    /// On which machine.
    pub host: String,
    /// `git rev-parse HEAD` of the repository, or `unknown`.
    pub revision: String,
    /// The task instance.
    pub task: &'a str,
    /// Its params.
    pub params: &'a BTreeMap<String, String>,
    /// `succeeded`, `failed`, `timed_out`, `interrupted`, `skipped`.
    pub result: &'a str,
    /// Its exit code, when it ran.
    pub exit_code: Option<i32>,
    /// How long it took.
    pub duration_ms: u64,
}

/// The user running cairn.
pub fn user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid cannot fail.
            format!("uid {}", unsafe { libc::getuid() })
        })
}

/// This machine's host name.
pub fn host() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    if ok {
        String::from_utf8_lossy(&buffer[..end]).into_owned()
    } else {
        "unknown".into()
    }
}

/// The repository's current commit, or `unknown` outside git.
pub fn revision(root: &Path) -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Appends `lines` to `root/.cairn/audit.log`, each with one write.
pub fn append(root: &Path, lines: &[AuditLine<'_>]) -> std::io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let path = root.join(".cairn/audit.log");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)?;
    for line in lines {
        let mut text = serde_json::to_string(line).map_err(std::io::Error::other)?;
        text.push('\n');
        file.write_all(text.as_bytes())?;
    }
    file.sync_all()
}
