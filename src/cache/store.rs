//! The local content-addressed store: blobs by BLAKE3 hash, one manifest per entry, all written atomically.
//!
//! Layout under the cache directory:
//! ```text
//! blobs/ab/<hash>        file content as stored (raw)
//! blobs/ab/<hash>.zst    file content, zstd-compressed (logs, and blobs over 64 KiB)
//! entries/ab/<key>.json  a manifest: outputs, log, the fingerprint's blob, the signer if fetched; mtime = last use
//! tasks/<id>.json        the last successful fingerprint of each task instance, for `cairn why`
//! tasks/<id>.key         its key alone, so a hit can tell cheaply that nothing needs recording
//! incremental/<id>.json  per-file digests at the last success of each incremental task
//! stat-index             path → stat + digest, so unchanged files are not read again
//! lock                   shared while a run uses the store, exclusive for gc and clean
//! ```
//! Blobs are written before the manifest that names them, so an entry is complete or absent whatever moment
//! cairn is killed at; a blob left without a manifest is removed by gc.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::beneath::{link_resolves_inside, Beneath, BeneathError};
use super::fingerprint::{hex, parse_hex, Fingerprint, Key};
use super::CacheError;
use crate::atomic::{
    is_temp_name, private_dir, write_atomic_private as write_atomic,
    write_atomic_private_with as write_atomic_with,
};

/// Blobs larger than this are stored compressed (and restored by copy, which a compressed blob needs anyway).
const COMPRESS_OVER: usize = 64 * 1024;

/// One output file of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// Path relative to the repository root.
    pub path: String,
    /// The content's blob (files), or `None` for a symlink.
    pub blob: Option<String>,
    /// The link's target (symlinks).
    pub target: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// A fetched result's small file, kept in the manifest (base64) instead of a blob file of its own; `blob`
    /// still names its content's hash, which is checked when it is restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
}

/// A stored result: what the task produced and printed, under its key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The key, in hex.
    pub key: String,
    /// The task instance that produced it.
    pub task: String,
    /// When it was stored, in seconds since the epoch.
    pub created: u64,
    /// How long the task took.
    pub duration_ms: u64,
    /// Output files.
    pub outputs: Vec<OutputRecord>,
    /// The blob of the recorded output (see [`encode_log`]).
    pub log: Option<String>,
    /// A short recorded output kept in the manifest itself (base64 of [`encode_log`]'s bytes) instead of a
    /// blob: one file fewer to create for a result fetched from elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_inline: Option<String>,
    /// The blob of the fingerprint the key was computed from (JSON), kept apart so that a hit, which only
    /// needs the outputs, does not read it.
    pub fingerprint: Option<String>,
    /// For an entry fetched from the remote cache, the public key (`ed25519:…`) that signed it: such an entry
    /// is used only while that key is still trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

/// A fetched result's entry as stored: with the fingerprint its key was computed from here, so that the same
/// file, hard-linked, is also the task's success record (one file to create per fetched result, not two).
/// Reading it as an [`Entry`] skips the fingerprint.
#[derive(Serialize)]
struct FetchedEntry<'a> {
    #[serde(flatten)]
    entry: &'a Entry,
    record: &'a Fingerprint,
}

/// What a success record read from a fetched result's entry holds (see [`FetchedEntry`]).
#[derive(Deserialize)]
pub struct LinkedRecord {
    /// The key, in hex.
    pub key: String,
    /// When it was stored, in seconds since the epoch.
    pub created: u64,
    /// The fingerprint the key was computed from.
    pub record: Fingerprint,
}

impl Entry {
    /// Every blob the entry names.
    pub fn blobs(&self) -> impl Iterator<Item = &String> {
        self.outputs
            .iter()
            .filter(|o| o.inline.is_none())
            .filter_map(|o| o.blob.as_ref())
            .chain(self.log.as_ref())
            .chain(self.fingerprint.as_ref())
    }
}

/// How the store is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Runs: many at once.
    Shared,
    /// gc and clean: alone, waiting for runs to end.
    Exclusive,
    /// Alone, or not at all when another process uses the store (automatic trimming after a run).
    TryExclusive,
}

/// The store in one directory, locked for as long as the value lives.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: File,
}

/// The right to run one key's task, held by one process at a time: an advisory lock on
/// `running/<key>.lock`, which the kernel releases when the process ends, however it ends.
#[derive(Debug)]
pub struct Claim {
    _file: File,
}

/// Totals for `cairn cache stats`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Entries.
    pub entries: u64,
    /// Blobs.
    pub blobs: u64,
    /// Bytes on disk.
    pub bytes: u64,
}

/// One entry and the room it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySize {
    /// The task instance that produced it.
    pub task: String,
    /// Its key, in hex.
    pub key: String,
    /// How many output files it holds.
    pub outputs: usize,
    /// Its manifest and blobs, in bytes.
    pub bytes: u64,
    /// When it was stored, in seconds since the epoch.
    pub created: u64,
}

/// What `gc` removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct GcReport {
    /// Entries removed.
    pub entries: u64,
    /// Blobs removed.
    pub blobs: u64,
    /// Bytes freed.
    pub bytes: u64,
}

fn io_error(what: &str, path: &Path) -> impl FnOnce(io::Error) -> CacheError {
    let (what, path) = (what.to_owned(), path.to_owned());
    move |source| CacheError::Store { what, path, source }
}

impl Store {
    /// Opens (creating) the store in `dir`, waiting for the lock.
    pub fn open(dir: &Path, mode: LockMode) -> Result<Store, CacheError> {
        Store::open_locked(dir, mode)?.ok_or_else(|| CacheError::Store {
            what: "the cache is in use".into(),
            path: dir.to_owned(),
            source: io::Error::from(io::ErrorKind::WouldBlock),
        })
    }

    /// Opens the store with `mode`; `None` when `TryExclusive` finds it in use.
    pub fn open_locked(dir: &Path, mode: LockMode) -> Result<Option<Store>, CacheError> {
        // What tasks produced can hold secrets: the store is its owner's alone.
        if let Some(state) = dir
            .parent()
            .filter(|p| p.file_name().is_some_and(|n| n == ".cairn"))
        {
            private_dir(state).map_err(io_error("cannot create the state directory", state))?;
        }
        private_dir(dir).map_err(io_error("cannot create the cache directory", dir))?;
        let lock_path = dir.join("lock");
        let lock = crate::lockfile::open(&lock_path)
            .map_err(io_error("cannot open the cache lock", &lock_path))?;
        let taken = match mode {
            LockMode::Shared => {
                crate::lockfile::wait(&lock, crate::lockfile::Mode::Shared).map(|()| true)
            }
            LockMode::Exclusive => {
                crate::lockfile::wait(&lock, crate::lockfile::Mode::Exclusive).map(|()| true)
            }
            LockMode::TryExclusive => {
                crate::lockfile::try_take(&lock, crate::lockfile::Mode::Exclusive)
            }
        }
        .map_err(io_error("cannot lock the cache", &lock_path))?;
        if !taken {
            return Ok(None);
        }
        let store = Store {
            dir: dir.to_owned(),
            _lock: lock,
        };
        // What a killed run left at the top (the stat index's temp file) goes now; the rest goes with gc.
        crate::atomic::sweep_stale_temps(dir);
        Ok(Some(store))
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blob_path(&self, hash: &str, compressed: bool) -> PathBuf {
        let name = if compressed {
            format!("{hash}.zst")
        } else {
            hash.to_owned()
        };
        self.dir.join("blobs").join(&hash[..2]).join(name)
    }

    /// The file of the entry for `key` (which may not exist).
    pub fn entry_path(&self, key: &Key) -> PathBuf {
        let hex = key.to_string();
        self.dir
            .join("entries")
            .join(&hex[..2])
            .join(format!("{hex}.json"))
    }

    /// A per-task file under `kind/` (`tasks`, `incremental`), named by a digest of the task's name.
    pub fn task_file(&self, kind: &str, label: &str) -> PathBuf {
        self.dir.join(kind).join(format!(
            "{}.json",
            &hex(blake3::hash(label.as_bytes()).as_bytes())[..32]
        ))
    }

    /// Stores `bytes`, returning their hash. `compress` forces zstd (logs); otherwise large blobs are.
    pub fn put_blob(&self, bytes: &[u8], compress: bool) -> Result<String, CacheError> {
        self.store_blob(bytes, compress, true)
    }

    /// Stores a blob fetched from the remote cache, returning its hash. Not waited onto the disk: every read
    /// verifies a blob against its hash and drops a damaged one, and this one can be fetched again, so the
    /// fsyncs that made a remote hit cost several local ones buy nothing here.
    pub fn put_fetched_blob(&self, bytes: &[u8]) -> Result<String, CacheError> {
        self.store_blob(bytes, false, false)
    }

    /// Stores a fetched blob whose hash is known and which the store was just found to lack (the caller checked
    /// [`Store::has_blob`]): written without looking for it again. A concurrent writer of the same blob renames
    /// the same bytes over it.
    pub fn put_missing_fetched_blob(&self, hash: &str, bytes: &[u8]) -> Result<(), CacheError> {
        self.write_blob(hash, bytes, bytes.len() > COMPRESS_OVER, false)
    }

    fn store_blob(
        &self,
        bytes: &[u8],
        compress: bool,
        durable: bool,
    ) -> Result<String, CacheError> {
        let hash = hex(blake3::hash(bytes).as_bytes());
        if self.blob_path(&hash, false).exists() || self.blob_path(&hash, true).exists() {
            return Ok(hash);
        }
        self.write_blob(
            &hash,
            bytes,
            compress || bytes.len() > COMPRESS_OVER,
            durable,
        )?;
        Ok(hash)
    }

    fn write_blob(
        &self,
        hash: &str,
        bytes: &[u8],
        compressed: bool,
        durable: bool,
    ) -> Result<(), CacheError> {
        let path = self.blob_path(hash, compressed);
        let fill = |file: &mut File| {
            if compressed {
                let mut encoder = zstd::Encoder::new(file, 3)?;
                encoder.write_all(bytes)?;
                encoder.finish().map(|_| ())
            } else {
                file.write_all(bytes)
            }
        };
        let result = if durable {
            write_atomic_with(&path, fill)
        } else {
            crate::atomic::write_replace_private_with(&path, fill)
        };
        result.map_err(io_error("cannot store a blob", &path))
    }

    /// Whether the store holds the blob (unverified: reading it verifies it).
    pub fn has_blob(&self, hash: &str) -> bool {
        parse_hex(hash).is_some()
            && (self.blob_path(hash, false).exists() || self.blob_path(hash, true).exists())
    }

    /// A blob's content, verified against its hash.
    pub fn get_blob(&self, hash: &str) -> Result<Vec<u8>, CacheError> {
        let corrupt = |reason: &str| CacheError::CorruptBlob {
            hash: hash.to_owned(),
            reason: reason.to_owned(),
        };
        let expected =
            parse_hex(hash).ok_or_else(|| corrupt("the manifest names an invalid hash"))?;
        let raw = self.blob_path(hash, false);
        let bytes = match fs::read(&raw) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let packed = self.blob_path(hash, true);
                let file = File::open(&packed).map_err(|_| corrupt("the blob is missing"))?;
                let mut out = Vec::new();
                zstd::Decoder::new(file)
                    .and_then(|mut d| d.read_to_end(&mut out))
                    .map_err(|_| {
                        let _ = fs::remove_file(&packed);
                        corrupt("the compressed blob is damaged")
                    })?;
                out
            }
            Err(error) => return Err(io_error("cannot read a blob", &raw)(error)),
        };
        if *blake3::hash(&bytes).as_bytes() != expected {
            // Gone, so that storing the same content again writes a good copy instead of trusting this one.
            let _ = fs::remove_file(&raw);
            let _ = fs::remove_file(self.blob_path(hash, true));
            return Err(corrupt("its content does not match its hash"));
        }
        Ok(bytes)
    }

    /// The content of an output file whose blob is `hash`: from the manifest when it is kept there, checked
    /// against the hash like a blob read from disk, else the blob.
    pub fn output_content(&self, output: &OutputRecord, hash: &str) -> Result<Vec<u8>, CacheError> {
        use base64::Engine;
        let Some(text) = &output.inline else {
            return self.get_blob(hash);
        };
        let corrupt = |reason: &str| CacheError::CorruptBlob {
            hash: hash.to_owned(),
            reason: reason.to_owned(),
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| corrupt("the manifest's inline content does not decode"))?;
        if hex(blake3::hash(&bytes).as_bytes()) != hash {
            return Err(corrupt(
                "the manifest's inline content does not match its hash",
            ));
        }
        Ok(bytes)
    }

    /// The entry stored under `key`, if any. A manifest that cannot be read is reported as corrupt.
    pub fn load_entry(&self, key: &Key) -> Result<Option<Entry>, CacheError> {
        let path = self.entry_path(key);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error("cannot read a cache entry", &path)(error)),
        };
        let entry: Entry = serde_json::from_slice(&text).map_err(|e| CacheError::CorruptEntry {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        if entry.key != key.to_string() {
            return Err(CacheError::CorruptEntry {
                key: key.to_string(),
                reason: "the manifest is for another key".into(),
            });
        }
        Ok(Some(entry))
    }

    /// Reads every blob of `entry`, which removes the damaged ones, so that storing their content again
    /// writes good copies.
    pub fn scrub(&self, entry: &Entry) {
        for blob in entry.blobs() {
            let _ = self.get_blob(blob);
        }
    }

    /// Marks an entry as just used, for least-recently-used eviction.
    pub fn touch(&self, key: &Key) {
        if let Ok(file) = File::options().append(true).open(self.entry_path(key)) {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    /// Removes an entry (its blobs go at the next gc).
    pub fn remove_entry(&self, key: &Key) {
        let _ = fs::remove_file(self.entry_path(key));
    }

    /// Writes `entry`'s manifest; its blobs must be stored already.
    pub fn save_entry(&self, key: &Key, entry: &Entry) -> Result<(), CacheError> {
        let path = self.entry_path(key);
        let bytes = serde_json::to_vec(entry).expect("an entry always serialises");
        write_atomic(&path, &bytes).map_err(io_error("cannot write a cache entry", &path))
    }

    /// Writes the manifest of an entry fetched from the remote cache, not waited onto the disk, like its blobs:
    /// after a crash it is whole, absent (a miss: fetched again) or torn (read as damaged, dropped, fetched
    /// again), and nothing local is lost that the remote cache does not still hold.
    pub fn save_fetched_entry(
        &self,
        key: &Key,
        entry: &Entry,
        fingerprint: &Fingerprint,
    ) -> Result<(), CacheError> {
        let path = self.entry_path(key);
        let linkable = FetchedEntry {
            entry,
            record: fingerprint,
        };
        let bytes = serde_json::to_vec(&linkable).expect("an entry always serialises");
        crate::atomic::write_replace_private_with(&path, |file| file.write_all(&bytes))
            .map_err(io_error("cannot write a cache entry", &path))
    }

    /// Stores the files at `paths` (relative to `root`) as blobs and returns their records.
    pub fn put_outputs(
        &self,
        root: &Path,
        paths: &[String],
    ) -> Result<Vec<OutputRecord>, CacheError> {
        let mut records = Vec::with_capacity(paths.len());
        for path in paths {
            let full = root.join(path);
            let meta =
                fs::symlink_metadata(&full).map_err(io_error("cannot read an output", &full))?;
            let mode = meta.permissions().mode() & 0o777;
            if meta.file_type().is_symlink() {
                let target =
                    fs::read_link(&full).map_err(io_error("cannot read an output link", &full))?;
                records.push(OutputRecord {
                    path: path.clone(),
                    blob: None,
                    target: Some(target.to_string_lossy().into_owned()),
                    size: 0,
                    mode,
                    inline: None,
                });
            } else {
                let bytes = fs::read(&full).map_err(io_error("cannot read an output", &full))?;
                records.push(OutputRecord {
                    path: path.clone(),
                    blob: Some(self.put_blob(&bytes, false)?),
                    target: None,
                    size: bytes.len() as u64,
                    mode,
                    inline: None,
                });
            }
        }
        Ok(records)
    }

    /// Writes an entry's outputs under `root`, each verified, each atomically; `allowed` says which paths the
    /// task declares as outputs, and nothing else is written; `current` says which are already in place.
    pub fn restore_outputs(
        &self,
        root: &Path,
        entry: &Entry,
        allowed: &dyn Fn(&str) -> bool,
        current: &dyn Fn(&OutputRecord) -> bool,
    ) -> Result<(), CacheError> {
        self.restore_outputs_with(root, entry, allowed, current, &HashMap::new())
    }

    /// Like [`Store::restore_outputs`], with the content of some blobs already in memory, by hash: blobs just
    /// fetched and checked against their hash, which need not be read back from the store and hashed again.
    pub fn restore_outputs_with(
        &self,
        root: &Path,
        entry: &Entry,
        allowed: &dyn Fn(&str) -> bool,
        current: &dyn Fn(&OutputRecord) -> bool,
        fresh: &HashMap<String, Vec<u8>>,
    ) -> Result<(), CacheError> {
        let unsafe_path = |path: &str, reason: &str| CacheError::UnsafePath {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        // Every link the entry holds, so that a target is judged by where it leads once they are all in place,
        // whatever their order in the manifest.
        let links: HashMap<PathBuf, PathBuf> = entry
            .outputs
            .iter()
            .filter_map(|o| Some((PathBuf::from(&o.path), PathBuf::from(o.target.as_ref()?))))
            .collect();
        // Everything the manifest itself says is checked before anything is written, so a refused entry leaves
        // no trace in the tree.
        for output in &entry.outputs {
            let relative = Path::new(&output.path);
            if !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
            {
                return Err(unsafe_path(
                    &output.path,
                    "only plain relative paths can be restored",
                ));
            }
            if !allowed(&output.path) {
                return Err(unsafe_path(
                    &output.path,
                    "not one of the task's declared outputs",
                ));
            }
            if let Some(through) = relative
                .ancestors()
                .skip(1)
                .find(|a| links.contains_key(*a))
            {
                return Err(unsafe_path(
                    &output.path,
                    &format!(
                        "`{}` on its way is a link of the same entry, and restores never write through one",
                        through.display()
                    ),
                ));
            }
            if let Some(target) = &output.target {
                if !link_resolves_inside(root, relative, Path::new(target), &links) {
                    return Err(unsafe_path(
                        &output.path,
                        "the link points out of the repository",
                    ));
                }
            }
        }
        // Opened only when something must be written: a hit whose outputs are in place writes nothing.
        let mut beneath: Option<Beneath> = None;
        for output in &entry.outputs {
            let relative = Path::new(&output.path);
            // A file already holding exactly this content and mode needs no write (and no fsync).
            if current(output) {
                continue;
            }
            let writer = match &mut beneath {
                Some(writer) => writer,
                None => beneath.insert(
                    Beneath::open(root)
                        .map_err(io_error("cannot open the repository root", root))?,
                ),
            };
            let destination = root.join(relative);
            let written = match (&output.blob, &output.target) {
                (Some(blob), _) => {
                    let read;
                    let bytes = match fresh.get(blob) {
                        Some(bytes) => bytes,
                        None => {
                            read = self.output_content(output, blob)?;
                            &read
                        }
                    };
                    if bytes.len() as u64 != output.size {
                        return Err(CacheError::CorruptBlob {
                            hash: blob.clone(),
                            reason: "its size differs from the manifest's".into(),
                        });
                    }
                    writer.write_file(relative, bytes, output.mode)
                }
                (None, Some(target)) => writer.write_link(relative, Path::new(target)),
                (None, None) => {
                    return Err(unsafe_path(
                        &output.path,
                        "the manifest has neither content nor link",
                    ))
                }
            };
            written.map_err(|error| match error {
                BeneathError::LinkOnTheWay(on_the_way) => unsafe_path(
                    &output.path,
                    &format!(
                        "`{}` on its way is a symbolic link, and restores never write through one",
                        on_the_way.display()
                    ),
                ),
                BeneathError::NotADirectory(on_the_way) => unsafe_path(
                    &output.path,
                    &format!("`{}` on its way is not a directory", on_the_way.display()),
                ),
                BeneathError::NotPlain => {
                    unsafe_path(&output.path, "only plain relative paths can be restored")
                }
                BeneathError::Io(source) => {
                    io_error("cannot restore an output", &destination)(source)
                }
            })?;
        }
        Ok(())
    }

    /// Claims the right to run the task of `key`, or `None` while another process holds it (a concurrent run
    /// computing the same result).
    pub fn try_claim(&self, key: &Key) -> Result<Option<Claim>, CacheError> {
        let path = self.dir.join("running").join(format!("{key}.lock"));
        let file = match crate::lockfile::open_private(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                crate::atomic::private_dir(&self.dir.join("running"))
                    .and_then(|()| crate::lockfile::open_private(&path))
                    .map_err(io_error("cannot create a task's claim", &path))?
            }
            Err(error) => return Err(io_error("cannot open a task's claim", &path)(error)),
        };
        match crate::lockfile::try_take(&file, crate::lockfile::Mode::Exclusive) {
            Ok(true) => Ok(Some(Claim { _file: file })),
            Ok(false) => Ok(None),
            Err(error) => Err(io_error("cannot lock a task's claim", &path)(error)),
        }
    }

    /// Removes the temp files killed writers left in the store's own directories (entries and blobs are gc's);
    /// returns those that could not be removed.
    pub fn sweep_temps(&self) -> Vec<PathBuf> {
        ["", "tasks", "incremental", "running"]
            .into_iter()
            .flat_map(|sub| crate::atomic::sweep_stale_temps(&self.dir.join(sub)))
            .collect()
    }

    /// Counts entries, blobs and bytes.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        for (path, meta) in files_under(&self.dir.join("entries")) {
            if path.extension().is_some_and(|e| e == "json") {
                stats.entries += 1;
                stats.bytes += meta.size();
            }
        }
        for (_, meta) in files_under(&self.dir.join("blobs")) {
            stats.blobs += 1;
            stats.bytes += meta.size();
        }
        stats
    }

    /// The `limit` entries that take the most room (their manifest and every blob they name, a blob shared
    /// by several counted for each), largest first: what `cairn ui` lists and `gc` would gain most from.
    pub fn largest_entries(&self, limit: usize) -> Vec<EntrySize> {
        let blob_sizes: HashMap<String, u64> = files_under(&self.dir.join("blobs"))
            .into_iter()
            .filter_map(|(path, meta)| {
                let name = path.file_name()?.to_str()?;
                Some((name.trim_end_matches(".zst").to_owned(), meta.size()))
            })
            .collect();
        let mut sizes: Vec<EntrySize> = files_under(&self.dir.join("entries"))
            .into_iter()
            .filter(|(path, _)| path.extension().is_some_and(|e| e == "json"))
            .filter_map(|(path, meta)| {
                let entry: Entry = serde_json::from_slice(&fs::read(&path).ok()?).ok()?;
                let bytes = meta.size()
                    + entry
                        .blobs()
                        .filter_map(|b| blob_sizes.get(b.as_str()))
                        .sum::<u64>();
                Some(EntrySize {
                    task: entry.task.clone(),
                    key: entry.key.clone(),
                    outputs: entry.outputs.len(),
                    bytes,
                    created: entry.created,
                })
            })
            .collect();
        sizes.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.key.cmp(&b.key)));
        sizes.truncate(limit);
        sizes
    }

    /// Removes every entry, blob and record (the store must be locked exclusively).
    pub fn clean(&self) -> Result<Stats, CacheError> {
        let before = self.stats();
        for sub in ["entries", "blobs", "tasks", "incremental", "stat-index"] {
            let path = self.dir.join(sub);
            let result = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            match result {
                Err(error) if error.kind() != io::ErrorKind::NotFound => {
                    return Err(io_error("cannot remove", &path)(error));
                }
                _ => {}
            }
        }
        Ok(before)
    }

    /// Removes entries unused for `max_age`, then the least recently used until the store fits `max_size`,
    /// then every blob no entry names and any temp file a killed write left (the store must be locked
    /// exclusively).
    pub fn gc(&self, max_size: u64, max_age: Duration) -> Result<GcReport, CacheError> {
        self.sweep_temps();
        // Under the exclusive lock no run holds a task's claim: their lock files can go.
        let _ = fs::remove_dir_all(self.dir.join("running"));
        let mut report = GcReport::default();
        let now = SystemTime::now();
        let mut entries: Vec<(PathBuf, SystemTime, u64, Vec<String>)> = Vec::new();
        for (path, meta) in files_under(&self.dir.join("entries")) {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if is_temp_name(name) {
                let _ = fs::remove_file(&path);
                continue;
            }
            let used = meta.modified().unwrap_or(now);
            let blobs = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Entry>(&b).ok())
                .map(|e| e.blobs().cloned().collect())
                .unwrap_or_default();
            entries.push((path, used, meta.size(), blobs));
        }
        let mut blob_sizes: HashMap<String, (PathBuf, u64)> = HashMap::new();
        for (path, meta) in files_under(&self.dir.join("blobs")) {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if is_temp_name(&name) {
                let _ = fs::remove_file(&path);
                continue;
            }
            blob_sizes.insert(
                name.trim_end_matches(".zst").to_owned(),
                (path, meta.size()),
            );
        }
        entries.sort_by_key(|(_, used, _, _)| *used);
        let mut references: HashMap<&str, usize> = HashMap::new();
        for (_, _, _, blobs) in &entries {
            for blob in blobs {
                *references.entry(blob.as_str()).or_default() += 1;
            }
        }
        let mut live: u64 = entries.iter().map(|(_, _, size, _)| size).sum::<u64>()
            + references
                .keys()
                .filter_map(|b| blob_sizes.get(*b))
                .map(|(_, s)| s)
                .sum::<u64>();
        let mut removed = HashSet::new();
        for (i, (path, used, size, blobs)) in entries.iter().enumerate() {
            let too_old = now.duration_since(*used).unwrap_or_default() > max_age;
            if !too_old && live <= max_size {
                continue;
            }
            if fs::remove_file(path).is_ok() {
                removed.insert(i);
                report.entries += 1;
                report.bytes += size;
                live = live.saturating_sub(*size);
                for blob in blobs {
                    let count = references.get_mut(blob.as_str()).expect("counted above");
                    *count -= 1;
                    if *count == 0 {
                        live = live.saturating_sub(blob_sizes.get(blob).map_or(0, |(_, s)| *s));
                    }
                }
            }
        }
        for (hash, (path, size)) in &blob_sizes {
            if references.get(hash.as_str()).copied().unwrap_or(0) == 0
                && fs::remove_file(path).is_ok()
            {
                report.blobs += 1;
                report.bytes += size;
            }
        }
        Ok(report)
    }
}

/// Every file below `dir`, with its metadata (missing directories have none).
fn files_under(dir: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(read) = fs::read_dir(&dir) else {
            continue;
        };
        for item in read.flatten() {
            let Ok(meta) = item.metadata() else { continue };
            if meta.is_dir() {
                stack.push(item.path());
            } else {
                out.push((item.path(), meta));
            }
        }
    }
    out
}

/// A task's recorded output: each line with whether it came from stderr.
pub type LogLines = Vec<(bool, Vec<u8>)>;

/// Recorded output up to this size (encoded) is kept in a fetched result's manifest instead of a blob.
pub const INLINE_LOG_MAX: usize = 4096;

/// A fetched output file up to this size is kept in its manifest instead of a blob: a result taken from the
/// engine then costs one new file (its manifest) instead of one per output, which is most of what a fetch
/// costs beside the network.
pub const INLINE_OUTPUT_MAX: usize = 4096;

/// The most a fetched manifest holds inline in all, so a result with many small files keeps a small manifest.
pub const INLINE_OUTPUTS_TOTAL_MAX: usize = 64 * 1024;

/// Where a fetched output file's content goes: `(blob hash, inline content)`, inline (and not stored as a
/// blob) when it is small and `budget` allows, which it then shrinks.
pub fn place_fetched_output(
    store: &Store,
    bytes: &[u8],
    budget: &mut usize,
) -> Result<(String, Option<String>), CacheError> {
    use base64::Engine;
    if bytes.len() <= INLINE_OUTPUT_MAX && bytes.len() <= *budget {
        *budget -= bytes.len();
        Ok((
            hex(blake3::hash(bytes).as_bytes()),
            Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ))
    } else {
        Ok((store.put_fetched_blob(bytes)?, None))
    }
}

/// Where a fetched result's recorded output goes: `(log blob, inline log)`, inline when it is short.
pub fn place_fetched_log(
    store: &Store,
    encoded: &[u8],
) -> Result<(Option<String>, Option<String>), CacheError> {
    use base64::Engine;
    if encoded.is_empty() {
        Ok((None, None))
    } else if encoded.len() <= INLINE_LOG_MAX {
        Ok((
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(encoded)),
        ))
    } else {
        Ok((Some(store.put_fetched_blob(encoded)?), None))
    }
}

/// Encodes recorded output lines: per line, one byte for the stream (0 stdout, 1 stderr), its length as u32,
/// then its bytes.
pub fn encode_log(lines: &[(bool, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|(_, l)| l.len() + 5).sum());
    for (is_stderr, line) in lines {
        out.push(u8::from(*is_stderr));
        out.extend_from_slice(&(line.len() as u32).to_le_bytes());
        out.extend_from_slice(line);
    }
    out
}

/// Decodes [`encode_log`]'s format; `None` when it is damaged.
pub fn decode_log(mut bytes: &[u8]) -> Option<LogLines> {
    let mut lines = Vec::new();
    while !bytes.is_empty() {
        let (&stream, rest) = bytes.split_first()?;
        let (len, rest) = rest.split_at_checked(4)?;
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        let (line, rest) = rest.split_at_checked(len)?;
        lines.push((stream == 1, line.to_vec()));
        bytes = rest;
    }
    Some(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_detect_a_flipped_byte() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), LockMode::Shared).expect("opens");
        let small = store.put_blob(b"hello", false).expect("stores");
        let large_bytes = vec![7u8; 200_000];
        let large = store.put_blob(&large_bytes, false).expect("stores");
        assert_eq!(store.get_blob(&small).expect("reads"), b"hello");
        assert_eq!(store.get_blob(&large).expect("reads"), large_bytes);
        let path = store.blob_path(&small, false);
        let mut bytes = fs::read(&path).expect("read");
        bytes[0] ^= 1;
        fs::write(&path, bytes).expect("write");
        assert!(matches!(
            store.get_blob(&small),
            Err(CacheError::CorruptBlob { .. })
        ));
    }

    #[test]
    fn small_fetched_outputs_stay_in_the_manifest_within_the_budget_and_are_checked() {
        use base64::Engine;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), LockMode::Shared).expect("opens");
        let mut budget = 10;
        let (hash, inline) = place_fetched_output(&store, b"hello", &mut budget).expect("places");
        assert_eq!(budget, 5);
        assert!(inline.is_some());
        assert!(
            !store.has_blob(&hash),
            "an inline output is not also a blob"
        );
        // Over the budget: a blob.
        let (big, none) =
            place_fetched_output(&store, b"too long now", &mut budget).expect("places");
        assert!(none.is_none());
        assert!(store.has_blob(&big));
        let mut record = OutputRecord {
            path: "out/a".into(),
            blob: Some(hash.clone()),
            target: None,
            size: 5,
            mode: 0o644,
            inline,
        };
        assert_eq!(
            store.output_content(&record, &hash).expect("reads"),
            b"hello"
        );
        let entry = Entry {
            key: "k".into(),
            task: "t".into(),
            created: 0,
            duration_ms: 0,
            outputs: vec![record.clone()],
            log: None,
            log_inline: None,
            fingerprint: None,
            signed_by: None,
        };
        assert_eq!(
            entry.blobs().count(),
            0,
            "gc and scrub look for no blob file"
        );
        // A manifest whose inline content was changed no longer matches the hash it names.
        record.inline = Some(base64::engine::general_purpose::STANDARD.encode(b"hellO"));
        assert!(matches!(
            store.output_content(&record, &hash),
            Err(CacheError::CorruptBlob { .. })
        ));
        record.inline = Some("not base64!".into());
        assert!(matches!(
            store.output_content(&record, &hash),
            Err(CacheError::CorruptBlob { .. })
        ));
    }

    #[test]
    fn largest_entries_counts_each_entrys_manifest_and_blobs_largest_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), LockMode::Shared).expect("opens");
        let save = |seed: u8, task: &str, content: &[u8]| {
            let blob = store.put_blob(content, false).expect("blob");
            let entry = Entry {
                key: hex(&[seed; 32]),
                task: task.into(),
                created: 1,
                duration_ms: 1,
                outputs: vec![OutputRecord {
                    path: "out".into(),
                    blob: Some(blob),
                    target: None,
                    size: content.len() as u64,
                    mode: 0o644,
                    inline: None,
                }],
                log: None,
                log_inline: None,
                fingerprint: None,
                signed_by: None,
            };
            store.save_entry(&Key([seed; 32]), &entry).expect("entry");
        };
        // Bytes no compressor shrinks, so the sizes on disk keep their order.
        let noise = |n: usize| -> Vec<u8> {
            let mut state = 0x2545_f491_u32;
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect()
        };
        save(1, "small", b"x");
        save(2, "big", &noise(100_000));
        save(3, "middle", &noise(5_000));
        let largest = store.largest_entries(2);
        let tasks: Vec<&str> = largest.iter().map(|e| e.task.as_str()).collect();
        assert_eq!(tasks, ["big", "middle"]);
        assert!(largest[0].bytes >= 100_000, "{largest:?}");
        assert_eq!(largest[0].outputs, 1);
    }

    #[test]
    fn log_encoding_round_trips() {
        let lines = vec![
            (false, b"out".to_vec()),
            (true, b"".to_vec()),
            (true, b"err".to_vec()),
        ];
        assert_eq!(decode_log(&encode_log(&lines)), Some(lines));
        assert_eq!(decode_log(&[0, 9, 0, 0, 0, b'x']), None);
    }

    #[test]
    fn normalize_collapses_parent_components() {
        assert_eq!(
            crate::paths::normalize_lexically(Path::new("/r/a/../b/./c")),
            PathBuf::from("/r/b/c")
        );
    }

    /// Everything below `dir` as (path, what it is), not following links: a link is its target, a file its
    /// content and mode.
    fn snapshot(dir: &Path, skip: &Path) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(here) = stack.pop() {
            let Ok(read) = fs::read_dir(&here) else {
                continue;
            };
            for item in read.flatten() {
                let path = item.path();
                if path.starts_with(skip) {
                    continue;
                }
                let meta = fs::symlink_metadata(&path).expect("stat");
                let what = if meta.file_type().is_symlink() {
                    format!("link {:?}", fs::read_link(&path).expect("readlink"))
                } else if meta.is_dir() {
                    stack.push(path.clone());
                    format!("dir {:o}", meta.mode() & 0o7777)
                } else {
                    format!(
                        "file {:o} {:?}",
                        meta.mode() & 0o7777,
                        fs::read(&path).expect("read")
                    )
                };
                out.push((path, what));
            }
        }
        out.sort();
        out
    }

    const NAMES: &[&str] = &["a", "b", "l", "up", "pre"];
    const TARGETS: &[&str] = &[
        "..",
        "../..",
        "../src",
        "../../outside",
        "up/../../outside",
        "a",
        "l/..",
        "l/../..",
        "/tmp",
        "../.git/hooks",
        "b/../../..",
        "pre/x",
        "up/up/up",
    ];

    fn output_strategy() -> impl proptest::strategy::Strategy<Value = OutputRecord> {
        use proptest::prelude::*;
        (
            proptest::collection::vec(0..NAMES.len(), 1..4),
            proptest::option::of(0..TARGETS.len()),
            prop_oneof![
                Just(0o644u32),
                Just(0o4755),
                Just(0o2755),
                Just(0o1777),
                Just(0o600)
            ],
        )
            .prop_map(|(names, target, mode)| {
                let path = std::iter::once("out")
                    .chain(names.iter().map(|&i| NAMES[i]))
                    .collect::<Vec<_>>()
                    .join("/");
                OutputRecord {
                    path,
                    blob: target
                        .is_none()
                        .then(|| hex(blake3::hash(b"payload").as_bytes())),
                    target: target.map(|i| TARGETS[i].to_owned()),
                    size: if target.is_none() { 7 } else { 0 },
                    mode,
                    inline: None,
                }
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever an entry holds (links through links, links planted before files below them, modes with
        /// set-id bits) and whatever links the tree already has, a restore writes only below the task's
        /// outputs, every link it makes resolves inside the repository, and no set-id bit is restored.
        #[test]
        fn no_entry_writes_outside_the_outputs(outputs in proptest::collection::vec(output_strategy(), 1..8)) {
            let base = tempfile::tempdir().expect("temp dir");
            let repo = base.path().join("repo");
            let store = Store::open(&base.path().join("store"), LockMode::Shared).expect("store");
            store.put_blob(b"payload", false).expect("blob");
            fs::create_dir_all(repo.join("src")).expect("mkdir");
            fs::create_dir_all(repo.join(".git/hooks")).expect("mkdir");
            fs::create_dir_all(repo.join("out")).expect("mkdir");
            fs::create_dir_all(base.path().join("outside")).expect("mkdir");
            fs::write(repo.join("src/main.rs"), "fn main() {}").expect("write");
            fs::write(base.path().join("outside/canary"), "canary").expect("write");
            // A link the user already has among the outputs, pointing away.
            std::os::unix::fs::symlink("../../outside", repo.join("out/pre")).expect("link");
            let before = snapshot(base.path(), &repo.join("out"));
            let entry = Entry {
                key: String::new(),
                task: "t".into(),
                created: 0,
                duration_ms: 0,
                outputs,
                log: None,
                log_inline: None,
                fingerprint: None,
                signed_by: None,
            };
            let _ = store.restore_outputs(&repo, &entry, &|p| p.starts_with("out/"), &|_| false);
            let after = snapshot(base.path(), &repo.join("out"));
            let changed: Vec<_> = after
                .iter()
                .filter(|(p, _)| !p.starts_with(base.path().join("store")))
                .filter(|item| !before.contains(item))
                .collect();
            proptest::prop_assert!(changed.is_empty(), "written outside the outputs: {changed:?}");
            let real_repo = repo.canonicalize().expect("repo");
            for (path, what) in snapshot(&repo.join("out"), Path::new("/nonexistent")) {
                if path == repo.join("out/pre") {
                    continue;
                }
                if what.starts_with("link") {
                    if let Ok(resolved) = path.canonicalize() {
                        proptest::prop_assert!(resolved.starts_with(&real_repo), "{path:?} leads to {resolved:?}");
                    }
                }
                if what.starts_with("file") {
                    let mode = fs::symlink_metadata(&path).expect("stat").mode();
                    proptest::prop_assert_eq!(mode & 0o7000, 0);
                }
            }
        }
    }
}
