//! Writing beneath a directory without following links.
//!
//! A restore writes what a cache entry says, and an entry may come from a writer that was compromised. A check on
//! the path's text cannot see a link that an earlier output of the same entry planted (`out/l -> ../src`, then
//! `out/l/main.rs`), so every component below the root is opened from the root's descriptor with `O_NOFOLLOW`:
//! a link anywhere on the way is refused instead of followed. The calls are POSIX (`openat`, `mkdirat`,
//! `renameat`, `symlinkat`), the same on Linux and macOS.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a write beneath the root did not happen.
#[derive(Debug)]
pub enum BeneathError {
    /// A component on the way (relative to the root) is a symbolic link.
    LinkOnTheWay(PathBuf),
    /// A component on the way is a file, not a directory.
    NotADirectory(PathBuf),
    /// The path is not a plain relative path.
    NotPlain,
    /// The filesystem refused.
    Io(io::Error),
}

impl From<io::Error> for BeneathError {
    fn from(error: io::Error) -> BeneathError {
        BeneathError::Io(error)
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A directory that writes happen beneath; the directories opened on the way are kept for the next write.
pub struct Beneath {
    root: OwnedFd,
    opened: HashMap<PathBuf, OwnedFd>,
    /// Directories already cleared of temp files killed restores left.
    swept: std::collections::HashSet<PathBuf>,
}

impl Beneath {
    /// Opens `root` (which may itself be reached through links: only what is below it is checked).
    pub fn open(root: &Path) -> io::Result<Beneath> {
        let file = File::open(root)?;
        if !file.metadata()?.is_dir() {
            return Err(io::Error::from(io::ErrorKind::NotADirectory));
        }
        Ok(Beneath {
            root: OwnedFd::from(file),
            opened: HashMap::new(),
            swept: std::collections::HashSet::new(),
        })
    }

    /// Writes `bytes` to `relative` through a temp file beside it (fsynced, renamed, directory fsynced), with the
    /// permission bits `mode & 0o777`: set-user-ID, set-group-ID and sticky bits are never restored.
    pub fn write_file(
        &mut self,
        relative: &Path,
        bytes: &[u8],
        mode: u32,
    ) -> Result<(), BeneathError> {
        let (dir, name) = self.parent_of(relative)?;
        let temp_c = c_name(&temp_name(name))?;
        let name_c = c_name(name)?;
        // SAFETY: openat on a descriptor we own with a NUL-terminated name; the result is checked.
        let fd = unsafe {
            libc::openat(
                dir,
                temp_c.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let mut file = unsafe { File::from_raw_fd(fd) };
        let written = (|| {
            file.write_all(bytes)?;
            // SAFETY: fchmod on the descriptor we hold.
            if unsafe { libc::fchmod(file.as_raw_fd(), (mode & 0o777) as libc::mode_t) } != 0 {
                return Err(io::Error::last_os_error());
            }
            file.sync_all()?;
            rename_within(dir, &temp_c, &name_c)?;
            fsync_dir(dir)
        })();
        if written.is_err() {
            unlink_within(dir, &temp_c);
        }
        written.map_err(BeneathError::Io)
    }

    /// Makes `relative` a symbolic link to `target` (replacing what is there, never following it).
    pub fn write_link(&mut self, relative: &Path, target: &Path) -> Result<(), BeneathError> {
        let (dir, name) = self.parent_of(relative)?;
        let temp_c = c_name(&temp_name(name))?;
        let name_c = c_name(name)?;
        let target_c =
            CString::new(target.as_os_str().as_bytes()).map_err(|_| BeneathError::NotPlain)?;
        // SAFETY: symlinkat with NUL-terminated strings on a descriptor we own.
        if unsafe { libc::symlinkat(target_c.as_ptr(), dir, temp_c.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
        let renamed = rename_within(dir, &temp_c, &name_c).and_then(|()| fsync_dir(dir));
        if renamed.is_err() {
            unlink_within(dir, &temp_c);
        }
        renamed.map_err(BeneathError::Io)
    }

    /// The directory holding `relative`'s last component (created as needed, no link followed) and that name.
    fn parent_of<'a>(&mut self, relative: &'a Path) -> Result<(RawFd, &'a OsStr), BeneathError> {
        let mut names = Vec::new();
        for component in relative.components() {
            match component {
                Component::Normal(name) => names.push(name),
                _ => return Err(BeneathError::NotPlain),
            }
        }
        let Some((last, dirs)) = names.split_last() else {
            return Err(BeneathError::NotPlain);
        };
        let mut fd = self.root.as_raw_fd();
        let mut walked = PathBuf::new();
        for name in dirs {
            walked.push(name);
            if let Some(open) = self.opened.get(&walked) {
                fd = open.as_raw_fd();
                continue;
            }
            let opened = open_dir_nofollow(fd, name, &walked)?;
            fd = opened.as_raw_fd();
            self.opened.insert(walked.clone(), opened);
        }
        if self.swept.insert(walked.clone()) {
            // A restore killed midway left its temp files here; the task's next store would take them for
            // outputs. The directory was just opened without following links, so this stays in it.
            sweep_stale_temps_at(fd);
        }
        Ok((fd, last))
    }
}

/// Opens (creating if missing) the directory `name` inside `parent`, refusing a link or a file there.
fn open_dir_nofollow(parent: RawFd, name: &OsStr, walked: &Path) -> Result<OwnedFd, BeneathError> {
    let name_c = c_name(name)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    for _ in 0..3 {
        // SAFETY: openat on a descriptor we own with a NUL-terminated name; the result is checked.
        let fd = unsafe { libc::openat(parent, name_c.as_ptr(), flags) };
        if fd >= 0 {
            // SAFETY: `fd` was just opened and is owned by nothing else.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::ENOENT) => {
                // SAFETY: mkdirat with a NUL-terminated name on a descriptor we own.
                if unsafe { libc::mkdirat(parent, name_c.as_ptr(), 0o777) } != 0 {
                    let error = io::Error::last_os_error();
                    if error.raw_os_error() != Some(libc::EEXIST) {
                        return Err(error.into());
                    }
                }
            }
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                return Err(if is_link_at(parent, &name_c) {
                    BeneathError::LinkOnTheWay(walked.to_owned())
                } else {
                    BeneathError::NotADirectory(walked.to_owned())
                });
            }
            _ => return Err(error.into()),
        }
    }
    Err(BeneathError::Io(io::Error::other(
        "a directory on the way keeps changing",
    )))
}

/// Removes the temp files of dead writers in the directory `dir` is open on (see `atomic::sweep_stale_temps`).
fn sweep_stale_temps_at(dir: RawFd) {
    // SAFETY: dup of a descriptor we hold; fdopendir takes the copy, closedir releases it.
    let copy = unsafe { libc::dup(dir) };
    if copy < 0 {
        return;
    }
    // SAFETY: `copy` is a valid directory descriptor we own.
    let stream = unsafe { libc::fdopendir(copy) };
    if stream.is_null() {
        // SAFETY: fdopendir failed, so `copy` is still ours to close.
        unsafe { libc::close(copy) };
        return;
    }
    let mut stale = Vec::new();
    loop {
        // SAFETY: readdir on the stream opened above; the entry is read before the next call.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            break;
        }
        // SAFETY: d_name is a NUL-terminated name inside the entry readdir returned.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) };
        let writer = name.to_str().ok().and_then(crate::atomic::temp_writer);
        if let Some(pid) = writer {
            if pid != std::process::id() as libc::pid_t && !crate::atomic::process_alive(pid) {
                stale.push(name.to_owned());
            }
        }
    }
    // SAFETY: closes the stream (and `copy`) opened above.
    unsafe { libc::closedir(stream) };
    for name in stale {
        unlink_within(dir, &name);
    }
}

fn is_link_at(parent: RawFd, name: &CString) -> bool {
    // SAFETY: an all-zero stat is a valid value for fstatat to fill.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat fills `stat`, which lives for the call.
    let found =
        unsafe { libc::fstatat(parent, name.as_ptr(), &mut stat, libc::AT_SYMLINK_NOFOLLOW) } == 0;
    found && (stat.st_mode & libc::S_IFMT) == libc::S_IFLNK
}

fn rename_within(dir: RawFd, from: &CString, to: &CString) -> io::Result<()> {
    // SAFETY: renameat within one directory we hold, NUL-terminated names.
    if unsafe { libc::renameat(dir, from.as_ptr(), dir, to.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn unlink_within(dir: RawFd, name: &CString) {
    // SAFETY: unlinkat within a directory we hold; a failure leaves a temp file that gc sweeps.
    unsafe { libc::unlinkat(dir, name.as_ptr(), 0) };
}

fn fsync_dir(dir: RawFd) -> io::Result<()> {
    // SAFETY: fsync on a descriptor we hold.
    if unsafe { libc::fsync(dir) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A temp name beside `name` that the sweeps of killed writes recognise (see `atomic::is_temp_name`).
fn temp_name(name: &OsStr) -> OsString {
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    temp
}

fn c_name(name: &OsStr) -> Result<CString, BeneathError> {
    CString::new(name.as_bytes()).map_err(|_| BeneathError::NotPlain)
}

/// Whether a link at `link` (relative to `root`) pointing to `target` resolves inside `root`, following every
/// link on its way, whether on disk or among `pending` (links about to be written, by path relative to
/// `root`), at most 40 of them as the kernel does.
pub fn link_resolves_inside(
    root: &Path,
    link: &Path,
    target: &Path,
    pending: &HashMap<PathBuf, PathBuf>,
) -> bool {
    let start: Vec<OsString> = match link.parent() {
        Some(parent) => parent.iter().map(OsStr::to_owned).collect(),
        None => Vec::new(),
    };
    let mut hops = 0;
    resolve_inside(root, start, target, pending, &mut hops).is_some()
}

/// Resolves `target` from `at` (components below `root`, none of them a link); `None` once it leaves `root`.
fn resolve_inside(
    root: &Path,
    mut at: Vec<OsString>,
    target: &Path,
    pending: &HashMap<PathBuf, PathBuf>,
    hops: &mut u32,
) -> Option<Vec<OsString>> {
    for component in target.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                at.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
            Component::Normal(name) => {
                at.push(name.to_owned());
                let here: PathBuf = at.iter().collect();
                let next = pending
                    .get(&here)
                    .cloned()
                    .or_else(|| std::fs::read_link(root.join(&here)).ok());
                if let Some(next) = next {
                    *hops += 1;
                    if *hops > 40 {
                        return None;
                    }
                    at.pop();
                    at = resolve_inside(root, at, &next, pending, hops)?;
                }
            }
        }
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_on_the_way_is_refused_and_nothing_is_written_through_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("repo");
        std::fs::create_dir_all(root.join("src")).expect("mkdir");
        std::fs::create_dir_all(root.join("out")).expect("mkdir");
        std::os::unix::fs::symlink("../src", root.join("out/l")).expect("link");
        let mut beneath = Beneath::open(&root).expect("opens");
        let refused = beneath.write_file(Path::new("out/l/main.rs"), b"evil", 0o644);
        assert!(matches!(refused, Err(BeneathError::LinkOnTheWay(p)) if p == Path::new("out/l")));
        assert!(!root.join("src/main.rs").exists());
        beneath
            .write_file(Path::new("out/deep/a.txt"), b"ok", 0o4755)
            .expect("writes");
        let meta = std::fs::metadata(root.join("out/deep/a.txt")).expect("written");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    }

    #[test]
    fn a_temp_file_a_killed_restore_left_is_swept_when_its_directory_is_written_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("out")).expect("mkdir");
        // No process has pid 2^22 + 1 (above Linux's and macOS's limits).
        let left = dir.path().join("out/.a.txt.tmp.4194305.0");
        std::fs::write(&left, "half").expect("write");
        let mut beneath = Beneath::open(dir.path()).expect("opens");
        beneath
            .write_file(Path::new("out/a.txt"), b"whole", 0o644)
            .expect("writes");
        assert!(!left.exists());
        assert_eq!(
            std::fs::read(dir.path().join("out/a.txt")).expect("read"),
            b"whole"
        );
    }

    #[test]
    fn link_targets_are_resolved_through_the_links_they_pass() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("out")).expect("mkdir");
        let none = HashMap::new();
        let inside = |link: &str, target: &str, pending: &HashMap<PathBuf, PathBuf>| {
            link_resolves_inside(root, Path::new(link), Path::new(target), pending)
        };
        assert!(inside("out/a", "../src/x", &none));
        assert!(inside("out/a", "..", &none));
        assert!(!inside("out/a", "../..", &none));
        assert!(!inside("out/a", "/etc/passwd", &none));
        let mut pending = HashMap::new();
        pending.insert(PathBuf::from("out/up"), PathBuf::from(".."));
        // Lexically `out/up/../../X` is `X`, inside; through the link it is two levels above the root.
        assert!(!inside("out/esc", "up/../../X", &pending));
        std::os::unix::fs::symlink("..", root.join("out/up")).expect("link");
        assert!(!inside("out/esc", "up/../../X", &none));
        std::os::unix::fs::symlink("loop", root.join("out/loop")).expect("link");
        assert!(!inside("out/x", "loop", &none));
    }
}
