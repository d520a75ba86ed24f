//! Writes that are complete or absent, whatever moment the process is killed at.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` through a temp file in the same directory: write, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// Like [`write_atomic`], with the content written by `fill`.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    replace_through_temp(path, true, None, fill)
}

/// Like [`write_atomic`], for a file only its owner may read (mode `0600` from the moment it exists): cache
/// blobs and records, which may hold what a task produced from secrets.
pub fn write_atomic_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_through_temp(path, true, Some(0o600), |file| file.write_all(bytes))
}

/// Like [`write_atomic_private`], with the content written by `fill`.
pub fn write_atomic_private_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    replace_through_temp(path, true, Some(0o600), fill)
}

/// Creates `dir` (and its parents) if missing, leaves it readable by its owner alone (`0700`), and tightens
/// an existing one that is ours but open to others. Another user's directory is left as it is (the caller
/// chose to share it).
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match fs::symlink_metadata(dir) {
        Ok(meta) => {
            // SAFETY: geteuid has no preconditions.
            let ours = meta.uid() == unsafe { libc::geteuid() };
            if meta.is_dir() && ours && meta.mode() & 0o077 != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
            }
            Ok(())
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)?;
            }
            match fs::DirBuilder::new().mode(0o700).create(dir) {
                Err(error) if error.kind() != io::ErrorKind::AlreadyExists => Err(error),
                _ => Ok(()),
            }
        }
        Err(error) => Err(error),
    }
}

/// Writes `bytes` to `path` through a temp file and a rename, without waiting for the disk: a reader sees the
/// old file or the whole new one, never a half-written one, but a power cut may lose the write. For records
/// whose loss costs nothing (a run's summary), where two fsyncs would cost more than the run itself.
pub fn write_replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_through_temp(path, false, None, |file| file.write_all(bytes))
}

/// Like [`write_atomic_private_with`] without waiting for the disk, for content that is verified whenever it is
/// read and can be had again (a blob fetched from the remote cache): a power cut may lose or tear it, and the
/// reader then finds it damaged, drops it and fetches or rebuilds it.
pub fn write_replace_private_with(
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    replace_through_temp(path, false, Some(0o600), fill)
}

/// Fills a temp file beside `path` and renames it over `path`; with `durable`, fsyncs the file before the
/// rename and the directory after it; with `mode`, the temp file is created with those permissions.
fn replace_through_temp(
    path: &Path,
    durable: bool,
    mode: Option<u32>,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    // A bare file name lives in the current directory, whose name is `.` rather than the empty parent.
    let dir = match path.parent() {
        Some(dir) if dir.as_os_str().is_empty() => Path::new("."),
        Some(dir) => dir,
        None => return Err(io::Error::other("a file to write needs a directory")),
    };
    fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut options = File::options();
        options.write(true).create_new(true);
        if let Some(mode) = mode {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode);
        }
        let mut file = options.open(&temp)?;
        fill(&mut file)?;
        if durable {
            file.sync_all()?;
        }
        fs::rename(&temp, path)?;
        if durable {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Makes `path` a second name of the file `existing` (a hard link), replacing whatever `path` was through a
/// temp name and a rename, so a reader sees the old file or the new one. Not waited onto the disk, like
/// [`write_replace`]. Both must be on one file system; the caller writes a copy when this fails.
pub fn link_replace(existing: &Path, path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => return Err(io::Error::other("a link to make needs a directory")),
    };
    match fs::hard_link(existing, path) {
        Ok(()) => return Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound && !dir.exists() => {
            fs::create_dir_all(dir)?;
            match fs::hard_link(existing, path) {
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                done => return done,
            }
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error),
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::hard_link(existing, &temp)?;
    fs::rename(&temp, path).inspect_err(|_| {
        let _ = fs::remove_file(&temp);
    })
}

/// Makes a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether the process `pid` still exists (also when it belongs to another user): the writer of a temp file or
/// private directory named after it may still be using it.
pub fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    let signalled = unsafe { libc::kill(pid, 0) } == 0;
    signalled || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The pid of the process that writes the temp file `name` (`.NAME.tmp.PID.N`), if it is one.
pub fn temp_writer(name: &str) -> Option<libc::pid_t> {
    if !is_temp_name(name) {
        return None;
    }
    let mut parts = name.rsplit('.');
    let _counter: u64 = parts.next()?.parse().ok()?;
    parts
        .next()?
        .parse()
        .ok()
        .filter(|&pid: &libc::pid_t| pid > 0)
}

/// Removes the temp files in `dir` (not below it) whose writer is no longer running: what a write killed
/// midway left. Returns those that could not be removed, for the caller to report.
pub fn sweep_stale_temps(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut left = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_writer) else {
            continue;
        };
        if pid == std::process::id() as libc::pid_t || process_alive(pid) {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => left.push(entry.path()),
            _ => {}
        }
    }
    left
}

/// Whether a directory entry is a temp file left by a write that never finished.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_replaces_the_file_at_its_path_and_creates_its_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        fs::write(&first, b"one").expect("write");
        fs::write(&second, b"two").expect("write");
        let name = dir.path().join("sub/name");
        link_replace(&first, &name).expect("new link");
        assert_eq!(fs::read(&name).expect("read"), b"one");
        link_replace(&second, &name).expect("replacing link");
        assert_eq!(fs::read(&name).expect("read"), b"two");
        assert_eq!(fs::read(&first).expect("read"), b"one");
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("name")],
            "no temp left"
        );
        assert!(link_replace(&dir.path().join("missing"), &name).is_err());
    }

    #[test]
    fn temp_files_of_dead_writers_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        // No process has pid 2^22 + 1 (above Linux's and macOS's limits).
        let dead = dir.path().join(".stat-index.tmp.4194305.0");
        let live = dir
            .path()
            .join(format!(".stat-index.tmp.{}.1", std::process::id()));
        let other = dir.path().join("stat-index");
        for path in [&dead, &live, &other] {
            fs::write(path, b"x").expect("write");
        }
        assert!(sweep_stale_temps(dir.path()).is_empty());
        assert!(!dead.exists() && live.exists() && other.exists());
        assert_eq!(temp_writer(".a.json.tmp.123.4"), Some(123));
        assert_eq!(temp_writer("a.json"), None);
    }

    #[test]
    fn writes_replace_whole_files_and_leave_no_temp() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a/b.json");
        write_atomic(&path, b"first").expect("write");
        write_atomic(&path, b"second").expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"second");
        let names: Vec<_> = fs::read_dir(dir.path().join("a")).expect("list").collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn private_replacing_writes_create_replace_and_stay_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("new/dir/blob");
        write_replace_private_with(&path, |f| f.write_all(b"first")).expect("new file");
        assert_eq!(fs::read(&path).expect("read"), b"first");
        write_replace_private_with(&path, |f| f.write_all(b"second")).expect("replaced");
        assert_eq!(fs::read(&path).expect("read"), b"second");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A write that fails leaves nothing behind, not even its temp file.
        let failed = dir.path().join("new/dir/failed");
        assert!(write_replace_private_with(&failed, |_| Err(io::Error::other("no"))).is_err());
        let names: Vec<_> = fs::read_dir(dir.path().join("new/dir"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("blob")],
            "no temp left"
        );
    }
}
