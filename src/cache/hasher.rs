//! Content digests of input files, with a persistent stat index (as git's index) so that a file whose size,
//! mtime, ctime and inode are unchanged is never read again.

use std::collections::BTreeMap;
use std::fs::{self, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use rayon::prelude::*;

use super::fingerprint::FileDigest;
use super::CacheError;
use crate::atomic::write_atomic_private as write_atomic;

const MAGIC: &[u8; 10] = b"CAIRNIDX1\n";

/// Files modified less than this long before the index was written are re-hashed next time: within one
/// timestamp tick, a later edit could leave size and mtime unchanged (git's "racily clean" entries).
const RACY_WINDOW_NS: i128 = 1_000_000_000;

/// Files at least this large are hashed through a memory map, the largest with several threads.
const MMAP_THRESHOLD: u64 = 256 * 1024;
const PARALLEL_THRESHOLD: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    stat: Stat,
    hash: [u8; 32],
    /// Verified during this run, so no racy-window doubt applies.
    fresh: bool,
}

/// Hashes files under one root, remembering what it hashed.
#[derive(Debug)]
pub struct FileHasher {
    root: PathBuf,
    // Paths of the user's own repository, not hostile input: a fast hasher is safe and the lookups are hot.
    index: DashMap<String, Entry, rustc_hash::FxBuildHasher>,
    written_ns: i128,
    dirty: AtomicBool,
}

fn stat_of(meta: &Metadata) -> Stat {
    Stat {
        size: meta.size(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        inode: meta.ino(),
    }
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

impl FileHasher {
    /// A hasher for files under `root`, starting from the index at `index_path` (an unreadable or damaged
    /// index is simply ignored: it only saves work).
    pub fn load(root: &Path, index_path: &Path) -> FileHasher {
        let hasher = FileHasher {
            root: root.to_owned(),
            index: DashMap::default(),
            written_ns: 0,
            dirty: AtomicBool::new(false),
        };
        match fs::read(index_path) {
            Ok(bytes) => hasher.decode(&bytes).unwrap_or(hasher_empty(root)),
            Err(_) => hasher,
        }
    }

    fn decode(self, bytes: &[u8]) -> Option<FileHasher> {
        let mut rest = bytes.strip_prefix(MAGIC)?;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = rest.split_at_checked(n)?;
            rest = tail;
            Some(head)
        };
        let u64_at = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
        let i128_at = |b: &[u8]| i128::from_le_bytes(b.try_into().expect("16 bytes"));
        let written_ns = i128_at(take(16)?);
        let count = u64_at(take(8)?);
        let index = DashMap::with_capacity_and_hasher(
            count.min(1 << 24) as usize,
            rustc_hash::FxBuildHasher,
        );
        for _ in 0..count {
            let len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
            let path = std::str::from_utf8(take(len)?).ok()?.to_owned();
            let stat = Stat {
                size: u64_at(take(8)?),
                mtime_ns: i128_at(take(16)?),
                ctime_ns: i128_at(take(16)?),
                inode: u64_at(take(8)?),
            };
            let hash: [u8; 32] = take(32)?.try_into().ok()?;
            index.insert(
                path,
                Entry {
                    stat,
                    hash,
                    fresh: false,
                },
            );
        }
        Some(FileHasher {
            index,
            written_ns,
            ..self
        })
    }

    /// Writes the index atomically, if anything was hashed since it was loaded.
    pub fn save(&self, index_path: &Path) -> io::Result<()> {
        if !self.dirty.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut out = Vec::with_capacity(16 + self.index.len() * 120);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&now_ns().to_le_bytes());
        out.extend_from_slice(&(self.index.len() as u64).to_le_bytes());
        for item in self.index.iter() {
            let (path, entry) = (item.key(), item.value());
            let Ok(len) = u16::try_from(path.len()) else {
                continue;
            };
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(path.as_bytes());
            out.extend_from_slice(&entry.stat.size.to_le_bytes());
            out.extend_from_slice(&entry.stat.mtime_ns.to_le_bytes());
            out.extend_from_slice(&entry.stat.ctime_ns.to_le_bytes());
            out.extend_from_slice(&entry.stat.inode.to_le_bytes());
            out.extend_from_slice(&entry.hash);
        }
        write_atomic(index_path, &out)
    }

    /// Digests of `files` (relative to the root), hashed in parallel; unchanged files come from the index.
    pub fn digest_all(&self, files: &[String]) -> Result<BTreeMap<String, FileDigest>, CacheError> {
        files
            .par_iter()
            .map(|path| self.digest(path).map(|d| (path.clone(), d)))
            .collect()
    }

    /// The digest of one file relative to the root.
    pub fn digest(&self, relative: &str) -> Result<FileDigest, CacheError> {
        self.digest_with(relative, None)
    }

    /// The digest of one file relative to the root, given its (not followed) metadata when the caller has it.
    pub fn digest_with(
        &self,
        relative: &str,
        known: Option<&Metadata>,
    ) -> Result<FileDigest, CacheError> {
        let full = self.root.join(relative);
        let read_error = |source: io::Error| CacheError::ReadInput {
            path: relative.to_owned(),
            source,
        };
        let meta = match known {
            Some(meta) => meta.clone(),
            None => fs::symlink_metadata(&full).map_err(read_error)?,
        };
        let stat = stat_of(&meta);
        let executable = meta.permissions().mode() & 0o111 != 0 && !meta.file_type().is_symlink();
        if let Some(entry) = self.index.get(relative) {
            let settled = entry.fresh || entry.stat.mtime_ns + RACY_WINDOW_NS <= self.written_ns;
            if entry.stat == stat && settled {
                return Ok(FileDigest {
                    hash: entry.hash,
                    executable,
                });
            }
        }
        let hash = if meta.file_type().is_symlink() {
            // A link is its target's text: never followed, so never out of the repository.
            let target = fs::read_link(&full).map_err(read_error)?;
            let mut hasher = blake3::Hasher::new();
            hasher.update(b"symlink\0");
            hasher.update(target.as_os_str().as_encoded_bytes());
            *hasher.finalize().as_bytes()
        } else {
            hash_file(&full, meta.size()).map_err(read_error)?
        };
        self.index.insert(
            relative.to_owned(),
            Entry {
                stat,
                hash,
                fresh: true,
            },
        );
        self.dirty.store(true, Ordering::Relaxed);
        Ok(FileDigest { hash, executable })
    }
}

fn hasher_empty(root: &Path) -> FileHasher {
    FileHasher {
        root: root.to_owned(),
        index: DashMap::default(),
        written_ns: 0,
        dirty: AtomicBool::new(false),
    }
}

/// BLAKE3 of a file's content.
pub fn hash_file(path: &Path, size: u64) -> io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    if size >= PARALLEL_THRESHOLD {
        hasher.update_mmap_rayon(path)?;
    } else if size >= MMAP_THRESHOLD {
        hasher.update_mmap(path)?;
    } else {
        let mut buffer = Vec::with_capacity(size as usize + 1);
        fs::File::open(path)?.read_to_end(&mut buffer)?;
        hasher.update(&buffer);
    }
    Ok(*hasher.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_files_are_served_from_the_saved_index() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = dir.path().join("index");
        std::fs::write(dir.path().join("a"), "one").expect("write");
        let first = FileHasher::load(dir.path(), &index);
        let digest = first.digest("a").expect("hashes");
        first.save(&index).expect("saves");
        let second = FileHasher::load(dir.path(), &index);
        assert_eq!(second.index.len(), 1);
        assert_eq!(second.digest("a").expect("hashes").hash, digest.hash);
    }

    #[test]
    fn a_change_within_the_racy_window_is_still_seen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = dir.path().join("index");
        let file = dir.path().join("a");
        std::fs::write(&file, "one").expect("write");
        let first = FileHasher::load(dir.path(), &index);
        first.digest("a").expect("hashes");
        first.save(&index).expect("saves");
        // Same size, and (on a coarse clock) possibly the same mtime: only the racy rule catches this.
        std::fs::write(&file, "two").expect("write");
        let second = FileHasher::load(dir.path(), &index);
        assert_eq!(
            second.digest("a").expect("hashes").hash,
            *blake3::hash(b"two").as_bytes()
        );
    }

    #[test]
    fn damaged_index_is_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = dir.path().join("index");
        std::fs::write(&index, b"CAIRNIDX1\ngarbage").expect("write");
        std::fs::write(dir.path().join("a"), "x").expect("write");
        let hasher = FileHasher::load(dir.path(), &index);
        assert!(hasher.index.is_empty());
        assert_eq!(
            hasher.digest("a").expect("hashes").hash,
            *blake3::hash(b"x").as_bytes()
        );
    }
}
