//! Named locks (`lock = "deploy-{{env}}"`): at most one cairn process at a time runs a task holding a given
//! name. The lock is an flock on `.cairn/locks/NAME.lock`, released by the kernel if the holder dies; the file
//! says who holds it, for whoever has to wait. Once taken, it is held until cairn exits.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// A lock this process took: it keeps the file open, and with it the flock, until cairn exits.
struct NamedLock {
    _file: File,
}

/// One entry per lock file this process has asked for; the inner mutex makes a second task of the same run
/// wait for the first to take it instead of queueing a second flock behind its own process.
type Held = Mutex<HashMap<PathBuf, Arc<Mutex<Option<NamedLock>>>>>;

fn held() -> &'static Held {
    static HELD: OnceLock<Held> = OnceLock::new();
    HELD.get_or_init(Held::default)
}

/// Takes the lock at `path` for the rest of this process, calling `waiting` with the holder's description if
/// another process has it, then waiting for it. Taking a lock this process already holds returns at once: a
/// rollout keeps its lock from the first host to the last, and no other cairn can slip in between.
pub fn acquire(path: &Path, waiting: impl FnOnce(&str)) -> std::io::Result<()> {
    let entry = {
        let mut map = held().lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(path.to_owned()).or_default())
    };
    let mut slot = entry.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_none() {
        *slot = Some(take(path, waiting)?);
    }
    Ok(())
}

fn take(path: &Path, waiting: impl FnOnce(&str)) -> std::io::Result<NamedLock> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = crate::lockfile::open(path)?;
    if !crate::lockfile::try_take(&file, crate::lockfile::Mode::Exclusive)? {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        waiting(holder.trim());
        crate::lockfile::wait(&file, crate::lockfile::Mode::Exclusive)?;
    }
    let holder = format!(
        "pid {}, user {}, host {}, since {}",
        std::process::id(),
        super::audit::user(),
        super::audit::host(),
        crate::time::now_rfc3339()
    );
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(holder.as_bytes())?;
    file.flush()?;
    Ok(NamedLock { _file: file })
}
