//! Advisory file locks: the cache store's (shared by runs, exclusive for gc), a rotation's, named task locks
//! and per-key claims. They are std's `File::lock` family (`flock` on Unix), so the kernel releases a lock
//! however its holder ends, and nothing here needs `unsafe`.

use std::fs::{File, TryLockError};
use std::io;
use std::path::Path;

/// How a lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// With any number of other shared holders.
    Shared,
    /// Alone.
    Exclusive,
}

/// Opens `path` for locking, creating it (and not truncating what it says) if needed.
pub fn open(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Like [`open`], creating the file readable by its owner only: for locks inside the private cache, whose
/// every file is its owner's alone.
pub fn open_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// Locks `file` in `mode`, waiting for other holders.
pub fn wait(file: &File, mode: Mode) -> io::Result<()> {
    match mode {
        Mode::Shared => file.lock_shared(),
        Mode::Exclusive => file.lock(),
    }
}

/// Locks `file` in `mode` if no other holder is in the way; `false` when one is.
pub fn try_take(file: &File, mode: Mode) -> io::Result<bool> {
    let result = match mode {
        Mode::Shared => file.try_lock_shared(),
        Mode::Exclusive => file.try_lock(),
    };
    match result {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(error)) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_and_shared_shares_until_the_file_is_closed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lock");
        let (first, second) = (open(&path).expect("open"), open(&path).expect("open"));
        assert!(try_take(&first, Mode::Shared).expect("lock"));
        assert!(try_take(&second, Mode::Shared).expect("lock"));
        assert!(!try_take(&open(&path).expect("open"), Mode::Exclusive).expect("lock"));
        drop((first, second));
        let third = open(&path).expect("open");
        wait(&third, Mode::Exclusive).expect("lock");
        assert!(!try_take(&open(&path).expect("open"), Mode::Shared).expect("lock"));
    }
}
