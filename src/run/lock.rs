//! Named locks (`lock = "deploy-{{env}}"`): at most one cairn process at a time runs a task holding a given
//! name. The lock is an flock on `.cairn/locks/NAME.lock`, released by the kernel if the holder dies; the file
//! says who holds it, for whoever has to wait.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// A held lock; released when dropped (or when the process ends, however it ends).
pub struct NamedLock {
    _file: File,
}

/// Takes the lock at `path`, calling `waiting` with the holder's description if another process has it, then
/// waiting for it.
pub fn acquire(path: &Path, waiting: impl FnOnce(&str)) -> std::io::Result<NamedLock> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        waiting(holder.trim());
        // SAFETY: as above; this call blocks until the holder releases it.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let holder = format!(
        "pid {}, user {}, host {}, since {}",
        std::process::id(),
        super::audit::user(),
        super::audit::host(),
        crate::secrets::file::now_rfc3339()
    );
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(holder.as_bytes())?;
    file.flush()?;
    Ok(NamedLock { _file: file })
}
