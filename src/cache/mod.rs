//! Content-addressed caching: keys you can explain, a stat index so unchanged files are not read, a local store
//! whose entries are complete or absent, and the per-file state of incremental tasks.
//!
//! Exactly what goes into a key is documented in docs/caching.md and defined by [`Fingerprint`].

mod beneath;
mod files;
mod fingerprint;
mod hasher;
pub mod remote;
mod store;
mod walk;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use miette::Diagnostic;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::atomic::write_atomic;
use crate::atomic::write_atomic_private;
pub use files::{GlobList, Matches};
pub use fingerprint::{hex, platform, Change, FileDigest, Fingerprint, Key, FORMAT_VERSION};
pub use hasher::{hash_file, FileHasher};
pub use store::{
    decode_log, encode_log, place_fetched_log, place_fetched_output, Claim, Entry, EntrySize,
    GcReport, LinkedRecord, LockMode, LogLines, OutputRecord, Stats, Store,
    INLINE_OUTPUTS_TOTAL_MAX,
};

use crate::config::DepsStrategy;

/// The directory below the repository root that holds the cache, unless `CAIRN_CACHE_DIR` names another.
pub const DEFAULT_DIR: &str = ".cairn/cache";

/// Something the cache could not do. None of these fails a task: the task runs without the cache instead.
#[derive(Debug, Error, Diagnostic)]
pub enum CacheError {
    /// A glob in `inputs` or `outputs` is invalid.
    #[error("invalid pattern `{pattern}`: {reason}")]
    #[diagnostic(code(cairn::cache::glob))]
    Glob {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// Listing the repository's files failed.
    #[error("cannot list input files: {reason}")]
    #[diagnostic(code(cairn::cache::walk))]
    Walk {
        /// Why.
        reason: String,
    },
    /// An input file could not be read.
    #[error("cannot read input `{path}`: {source}")]
    #[diagnostic(code(cairn::cache::read_input))]
    ReadInput {
        /// The file, relative to the root.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The store's files could not be read or written.
    #[error("{what} (`{}`): {source}", path.display())]
    #[diagnostic(code(cairn::cache::store))]
    Store {
        /// What cairn was doing.
        what: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A stored blob does not match its hash, or is missing.
    #[error("cache blob {hash} is damaged: {reason}")]
    #[diagnostic(code(cairn::cache::corrupt_blob))]
    CorruptBlob {
        /// The blob's hash.
        hash: String,
        /// What is wrong.
        reason: String,
    },
    /// A manifest cannot be read.
    #[error("cache entry {key} is damaged: {reason}")]
    #[diagnostic(code(cairn::cache::corrupt_entry))]
    CorruptEntry {
        /// The entry's key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// An entry would write somewhere it must not.
    #[error("refusing to restore `{path}`: {reason}")]
    #[diagnostic(code(cairn::cache::unsafe_path))]
    UnsafePath {
        /// The path in the manifest.
        path: String,
        /// Why it is refused.
        reason: String,
    },
}

impl CacheError {
    /// Whether the error means a stored entry is bad (report it, drop it, run the task) rather than that the
    /// cache cannot be used at all.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            CacheError::CorruptBlob { .. }
                | CacheError::CorruptEntry { .. }
                | CacheError::UnsafePath { .. }
        )
    }
}

/// The parts of a task instance that go into its key, resolved when the plan is made.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// The task's name as written.
    pub task: String,
    /// Param values by name.
    pub params: BTreeMap<String, String>,
    /// Command lines after interpolation (args included; `{{changed}}` left empty).
    pub commands: Vec<String>,
    /// The shell.
    pub shell: std::sync::Arc<[String]>,
    /// Working directory relative to the root.
    pub dir: String,
    /// The run's args, for a target.
    pub args: Vec<String>,
    /// `inputs` as written.
    pub input_globs: Vec<String>,
    /// `inputs`, compiled.
    pub inputs: GlobList,
    /// `outputs` as written.
    pub output_globs: Vec<String>,
    /// `outputs`, compiled.
    pub outputs: GlobList,
    /// Digests of declared variables' values, by name.
    pub env: BTreeMap<String, String>,
    /// What of a dependency enters the key.
    pub deps_strategy: DepsStrategy,
    /// Whether results may be stored and reused.
    pub cacheable: bool,
    /// The most the task's results may do with the remote cache (the run's mode limits it further).
    pub remote: crate::config::RemoteMode,
    /// Whether the task gets only its changed inputs.
    pub incremental: bool,
}

/// A dependency as the dependent's key sees it.
#[derive(Debug, Clone)]
pub struct DepInput {
    /// Its name.
    pub label: String,
    /// Its key.
    pub key: Key,
    /// Its declared outputs, hashed instead of its key under `deps_strategy = "outputs"`.
    pub outputs: GlobList,
}

/// A task's key and what it was computed from.
#[derive(Debug, Clone)]
pub struct Keyed {
    /// The fingerprint.
    pub fingerprint: Fingerprint,
    /// Its key.
    pub key: Key,
    /// Input patterns that matched no file (worth a warning).
    pub unmatched: Vec<String>,
}

/// The last successful run of a task instance, for `cairn why`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuccessRecord {
    /// Its key then. First, so that checking a record against a key reads only the start of the file.
    pub key: String,
    /// The task instance.
    pub task: String,
    /// When, in seconds since the epoch.
    pub at: u64,
    /// Its fingerprint then.
    pub fingerprint: Fingerprint,
}

/// The per-file digests an incremental task had at its last success.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IncrementalState {
    /// The key of the task's definition (everything but inputs and dependencies) at the time.
    pub definition: String,
    /// Input digests at the time.
    pub files: BTreeMap<String, FileDigest>,
}

/// What a restore has to tell besides its result.
#[derive(Debug, Default)]
pub struct RestoreNotes {
    /// Entries refused or dropped, and why, for the task's output.
    pub refused: Vec<String>,
    /// When the remote cache was asked, and when it had answered (for the run's phases and trace).
    pub remote: Option<(std::time::Instant, std::time::Instant)>,
}

/// A restored result.
#[derive(Debug)]
pub struct Restored {
    /// The task's recorded output, to replay.
    pub log: LogLines,
    /// The trusted writer it came from, when it came from the remote cache.
    pub from_remote: Option<String>,
}

/// The cache as one run uses it.
#[derive(Debug)]
pub struct Session {
    root: PathBuf,
    store: Store,
    hasher: FileHasher,
    platform: String,
    remote: Option<remote::Remote>,
    /// The writers whose entries, fetched earlier from the remote cache, may still be used.
    trusted_writers: Vec<[u8; 32]>,
}

impl Session {
    /// Opens the cache of the repository at `root`, in `dir`.
    pub fn open(root: &Path, dir: &Path) -> Result<Session, CacheError> {
        let store = Store::open(dir, LockMode::Shared)?;
        let hasher = FileHasher::load(root, &dir.join("stat-index"));
        Ok(Session {
            root: root.to_owned(),
            store,
            hasher,
            platform: platform(),
            remote: None,
            trusted_writers: Vec::new(),
        })
    }

    /// The writers whose entries fetched earlier from the remote cache may still be used (`trusted_writers`
    /// and this machine's own signing key); entries signed by anyone else are dropped when met.
    pub fn set_trusted_writers(&mut self, keys: Vec<[u8; 32]>) {
        self.trusted_writers = keys;
    }

    /// Trusts one more writer (this machine's own key, when it publishes).
    pub fn add_trusted_writer(&mut self, key: [u8; 32]) {
        self.trusted_writers.push(key);
    }

    /// Shares results through `remote` from now on.
    pub fn attach_remote(&mut self, remote: remote::Remote) {
        self.remote = Some(remote);
    }

    /// The remote cache, when the run uses one.
    pub fn remote(&self) -> Option<&remote::Remote> {
        self.remote.as_ref()
    }

    /// The repository root the session's paths are relative to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Computes a task's key now: its inputs as they are on disk, its dependencies as they ended.
    pub fn key(&self, spec: &KeySpec, deps: &[DepInput]) -> Result<Keyed, CacheError> {
        let visited = spec.inputs.expand_map(&self.root, true, |path, meta| {
            self.hasher.digest_with(path, meta)
        })?;
        let inputs: BTreeMap<String, FileDigest> = visited.files.into_iter().collect();
        let unmatched = visited.unmatched;
        let mut dep_digests = BTreeMap::new();
        for dep in deps {
            let digest = match spec.deps_strategy {
                DepsStrategy::Key => dep.key.to_string(),
                DepsStrategy::Outputs => self.outputs_digest(&dep.outputs)?,
            };
            dep_digests.insert(dep.label.clone(), digest);
        }
        let fingerprint = Fingerprint {
            version: FORMAT_VERSION,
            platform: self.platform.clone(),
            task: spec.task.clone(),
            params: spec.params.clone(),
            commands: spec.commands.clone(),
            shell: spec.shell.to_vec(),
            dir: spec.dir.clone(),
            args: spec.args.clone(),
            outputs: spec.output_globs.clone(),
            input_globs: spec.input_globs.clone(),
            env: spec.env.clone(),
            inputs,
            deps: dep_digests,
        };
        Ok(Keyed {
            key: fingerprint.key(),
            fingerprint,
            unmatched,
        })
    }

    /// The digest of the files `outputs` matches now (paths, contents and modes).
    pub fn outputs_digest(&self, outputs: &GlobList) -> Result<String, CacheError> {
        let files = outputs.expand(&self.root, false)?.files;
        let digests = self.hasher.digest_all(&files)?;
        let bytes = serde_json::to_vec(&digests).expect("digests always serialise");
        Ok(hex(blake3::hash(&bytes).as_bytes()))
    }

    /// Whether an entry exists for `key` (for `--dry-run`); damage is found only when restoring.
    pub fn contains(&self, key: &Key) -> bool {
        matches!(self.store.load_entry(key), Ok(Some(entry)) if self.still_trusted(&entry))
    }

    /// Restores the entry for `key`, if the local store or (for a task that may use it) the remote cache
    /// has one: outputs verified and written, and the recorded output returned for replay. A damaged entry is
    /// removed and reported as an error, which callers treat as a miss; remote entries that were refused, and
    /// the time the remote took, go into `notes`.
    pub fn restore(
        &self,
        keyed: &Keyed,
        spec: &KeySpec,
        notes: &mut RestoreNotes,
    ) -> Result<Option<Restored>, CacheError> {
        let key = &keyed.key;
        let mut from_remote = None;
        let mut fresh = std::collections::HashMap::new();
        let entry = match self.store.load_entry(key) {
            Ok(Some(entry)) if !self.still_trusted(&entry) => {
                // Revoked since it was fetched: as if it had never been fetched.
                self.store.remove_entry(key);
                notes.refused.push(format!(
                    "dropped the result fetched earlier from the remote cache: it is signed by {}, which is no longer in trusted_writers",
                    entry.signed_by.as_deref().unwrap_or_default()
                ));
                return self.restore(keyed, spec, notes);
            }
            Ok(Some(entry)) => entry,
            Ok(None) => {
                let reads = spec.remote != crate::config::RemoteMode::Off;
                let Some(remote) = self.remote.as_ref().filter(|_| reads) else {
                    return Ok(None);
                };
                let allowed = |path: &str| spec.outputs.matches_path(path);
                let asked = std::time::Instant::now();
                let lookup = remote.fetch(key, &keyed.fingerprint, &self.store, &allowed);
                notes.remote = Some((asked, std::time::Instant::now()));
                notes.refused.extend(lookup.refused);
                let (Some(writer), Some(entry)) = (lookup.writer, lookup.entry) else {
                    return Ok(None);
                };
                from_remote = Some(writer);
                fresh = lookup.fresh;
                entry
            }
            Err(error) => {
                self.store.remove_entry(key);
                // A manifest fetched earlier is not fsynced either: torn by a power cut, it is asked for again
                // (once: the damaged copy is gone, so the next look finds nothing here).
                let reads = spec.remote != crate::config::RemoteMode::Off;
                if error.is_damage() && reads && self.remote.is_some() {
                    notes.refused.push(format!(
                        "the result kept here was damaged ({error}): asking the remote cache"
                    ));
                    return self.restore(keyed, spec, notes);
                }
                return Err(error);
            }
        };
        let result = self.restore_entry(&entry, spec, &fresh);
        match result {
            Ok(log) => {
                self.store.touch(key);
                Ok(Some(Restored { log, from_remote }))
            }
            Err(error) => {
                if error.is_damage() {
                    self.store.scrub(&entry);
                    self.store.remove_entry(key);
                    // A result fetched earlier can be fetched again (its blobs are not fsynced when fetched, so
                    // a power cut may have torn one): asked once, with the damaged copy gone.
                    if from_remote.is_none() && entry.signed_by.is_some() && self.remote.is_some() {
                        notes.refused.push(format!(
                            "the result fetched earlier was damaged here ({error}): fetching it again"
                        ));
                        return self.restore(keyed, spec, notes);
                    }
                }
                Err(error)
            }
        }
    }

    /// Restores an entry this process just stored (a result from the execution engine) without reading it back;
    /// a damaged one is removed.
    pub fn restore_stored(&self, entry: &Entry, spec: &KeySpec) -> Result<LogLines, CacheError> {
        self.restore_entry(entry, spec, &std::collections::HashMap::new())
            .inspect_err(|error| {
                if error.is_damage() {
                    self.store.scrub(entry);
                    if let Some(key) = Key::parse(&entry.key) {
                        self.store.remove_entry(&key);
                    }
                }
            })
    }

    /// Writes an entry's outputs into the tree (the declared ones only) and decodes its recorded output.
    fn restore_entry(
        &self,
        entry: &Entry,
        spec: &KeySpec,
        fresh: &std::collections::HashMap<String, Vec<u8>>,
    ) -> Result<LogLines, CacheError> {
        let allowed = |path: &str| spec.outputs.matches_path(path);
        let current = |output: &OutputRecord| self.is_current(output);
        self.store
            .restore_outputs_with(&self.root, entry, &allowed, &current, fresh)?;
        if let Some(inline) = &entry.log_inline {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(inline)
                .ok()
                .and_then(|bytes| decode_log(&bytes));
            return bytes.ok_or_else(|| CacheError::CorruptEntry {
                key: entry.key.clone(),
                reason: "its recorded output cannot be decoded".into(),
            });
        }
        match &entry.log {
            Some(blob) => {
                let decoded = match fresh.get(blob) {
                    Some(bytes) => decode_log(bytes),
                    None => decode_log(&self.store.get_blob(blob)?),
                };
                decoded.ok_or_else(|| CacheError::CorruptBlob {
                    hash: blob.clone(),
                    reason: "the recorded output cannot be decoded".into(),
                })
            }
            None => Ok(Vec::new()),
        }
    }

    /// Whether an entry may be used: computed here, or signed by a writer still trusted.
    fn still_trusted(&self, entry: &Entry) -> bool {
        match &entry.signed_by {
            None => true,
            Some(writer) => crate::config::parse_public_key(writer)
                .is_ok_and(|key| self.trusted_writers.contains(&key)),
        }
    }

    /// Whether the file an output record describes is already on disk as recorded: same size, mode and
    /// content (the content through the stat index, so an untouched file is not read).
    fn is_current(&self, output: &OutputRecord) -> bool {
        use std::os::unix::fs::PermissionsExt;
        let Some(blob) = &output.blob else {
            return false;
        };
        let Ok(meta) = std::fs::symlink_metadata(self.root.join(&output.path)) else {
            return false;
        };
        meta.is_file()
            && meta.len() == output.size
            && meta.permissions().mode() & 0o7777 == output.mode & 0o777
            && self
                .hasher
                .digest_with(&output.path, Some(&meta))
                .is_ok_and(|digest| hex(&digest.hash) == *blob)
    }

    /// Stores a successful run's outputs and output under its key.
    pub fn save(
        &self,
        keyed: &Keyed,
        task: &str,
        spec: &KeySpec,
        log: &[(bool, Vec<u8>)],
        took: Duration,
    ) -> Result<(), CacheError> {
        let outputs = spec.outputs.expand(&self.root, false)?.files;
        let records = self.store.put_outputs(&self.root, &outputs)?;
        let log = if log.is_empty() {
            None
        } else {
            Some(self.store.put_blob(&encode_log(log), true)?)
        };
        let fingerprint =
            serde_json::to_vec(&keyed.fingerprint).expect("a fingerprint always serialises");
        let fingerprint = Some(self.store.put_blob(&fingerprint, true)?);
        let entry = Entry {
            key: keyed.key.to_string(),
            task: task.to_owned(),
            created: crate::time::unix_now(),
            duration_ms: took.as_millis() as u64,
            outputs: records,
            log,
            log_inline: None,
            fingerprint,
            signed_by: None,
        };
        self.store.save_entry(&keyed.key, &entry)?;
        let writes = spec.remote == crate::config::RemoteMode::ReadWrite;
        if let Some(remote) = self.remote.as_ref().filter(|_| writes) {
            remote.publish(&entry);
        }
        Ok(())
    }

    /// Whether `keyed` is already recorded as the last success of `task` (then nothing needs writing: on a
    /// hit, this saves rewriting a record as large as the task's input list).
    pub fn is_recorded(&self, task: &str, keyed: &Keyed) -> bool {
        use std::io::Read;
        let expected = format!("{{\"key\":\"{}\"", keyed.key);
        let mut start = vec![0u8; expected.len()];
        std::fs::File::open(self.store.task_file("tasks", task))
            .and_then(|mut file| file.read_exact(&mut start))
            .is_ok_and(|()| start == expected.as_bytes())
    }

    /// Remembers `keyed` as the last success of `task`, for `cairn why`.
    pub fn record_success(&self, task: &str, keyed: &Keyed) -> Result<(), CacheError> {
        self.write_success(task, keyed, true)
    }

    /// Like [`Session::record_success`], for a result that came from elsewhere (the remote cache, the
    /// execution engine) and was just stored with its fingerprint ([`Store::save_fetched_entry`]): the entry's file
    /// becomes the record too (a hard link), so a fetched result creates one file here, not two (where links
    /// cannot be made, the record is written). Not waited onto the disk: after a crash the record is whole,
    /// absent or torn; a torn or absent one reads as "no earlier success" (`cairn why` says so) and the next hit
    /// records it again, while the result itself stays where it came from.
    pub fn record_fetched_success(&self, task: &str, keyed: &Keyed) -> Result<(), CacheError> {
        let record = self.store.task_file("tasks", task);
        match crate::atomic::link_replace(&self.store.entry_path(&keyed.key), &record) {
            Ok(()) => Ok(()),
            Err(_) => self.write_success(task, keyed, false),
        }
    }

    fn write_success(&self, task: &str, keyed: &Keyed, durable: bool) -> Result<(), CacheError> {
        let record = SuccessRecord {
            task: task.to_owned(),
            key: keyed.key.to_string(),
            at: crate::time::unix_now(),
            fingerprint: keyed.fingerprint.clone(),
        };
        let path = self.store.task_file("tasks", task);
        let store_error = |path: PathBuf| {
            move |source| CacheError::Store {
                what: "cannot record the task's success".into(),
                path,
                source,
            }
        };
        let write = |path: &Path, bytes: &[u8]| {
            if durable {
                write_atomic_private(path, bytes)
            } else {
                crate::atomic::write_replace_private_with(path, |file| {
                    std::io::Write::write_all(file, bytes)
                })
            }
        };
        // One file: the key at its start is what `is_recorded` reads (earlier versions kept it in a `.key` file
        // beside the record: one more file to create per success).
        let bytes = serde_json::to_vec(&record).expect("records serialise");
        write(&path, &bytes).map_err(store_error(path.clone()))
    }

    /// The last success of `task`, if one was recorded.
    pub fn last_success(&self, task: &str) -> Option<SuccessRecord> {
        let bytes = std::fs::read(self.store.task_file("tasks", task)).ok()?;
        if let Ok(record) = serde_json::from_slice(&bytes) {
            return Some(record);
        }
        // A fetched result's entry, linked as the record (see `record_fetched_success`).
        let linked: LinkedRecord = serde_json::from_slice(&bytes).ok()?;
        Some(SuccessRecord {
            key: linked.key,
            task: task.to_owned(),
            at: linked.created,
            fingerprint: linked.record,
        })
    }

    /// The inputs of an incremental task that changed since its last success: all of them when there was
    /// none, or when the task's definition changed since.
    pub fn changed_inputs(&self, task: &str, keyed: &Keyed) -> Vec<String> {
        let state: Option<IncrementalState> =
            std::fs::read(self.store.task_file("incremental", task))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
        let now = &keyed.fingerprint.inputs;
        match state {
            Some(state) if state.definition == keyed.fingerprint.definition_key().to_string() => {
                now.iter()
                    .filter(|(path, digest)| state.files.get(*path) != Some(digest))
                    .map(|(path, _)| path.clone())
                    .collect()
            }
            _ => now.keys().cloned().collect(),
        }
    }

    /// Records the inputs an incremental task has now passed.
    pub fn record_incremental(&self, task: &str, keyed: &Keyed) -> Result<(), CacheError> {
        let state = IncrementalState {
            definition: keyed.fingerprint.definition_key().to_string(),
            files: keyed.fingerprint.inputs.clone(),
        };
        let path = self.store.task_file("incremental", task);
        write_atomic_private(
            &path,
            &serde_json::to_vec(&state).expect("state serialises"),
        )
        .map_err(|source| CacheError::Store {
            what: "cannot record the incremental state".into(),
            path,
            source,
        })
    }

    /// Saves what was learnt about files this run.
    pub fn finish(&self) -> Result<(), CacheError> {
        let path = self.store.dir().join("stat-index");
        self.hasher.save(&path).map_err(|source| CacheError::Store {
            what: "cannot save the stat index".into(),
            path,
            source,
        })
    }
}

/// How often, at most, a run trims the cache after storing results.
const AUTO_GC_EVERY: Duration = Duration::from_secs(3600);

/// Trims the cache in `dir` to `max_size` and `max_age` if it was not trimmed in the last hour and no other
/// cairn is using it; returns what was removed, if it ran.
pub fn auto_gc(
    dir: &Path,
    max_size: u64,
    max_age: Duration,
) -> Result<Option<GcReport>, CacheError> {
    let marker = dir.join("last-gc");
    let record_now = |marker: PathBuf| {
        write_atomic_private(&marker, b"").map_err(|source| CacheError::Store {
            what: "cannot record the time of the last gc".into(),
            path: marker,
            source,
        })
    };
    let last = match std::fs::metadata(&marker).and_then(|m| m.modified()) {
        Ok(at) => at,
        // A cache without the marker is new (its first run just filled it): walking every entry it holds
        // would find nothing to trim, and was a fifth of a first run's time. Its clock starts now.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            record_now(marker)?;
            return Ok(None);
        }
        Err(_) => SystemTime::UNIX_EPOCH,
    };
    if SystemTime::now().duration_since(last).unwrap_or_default() < AUTO_GC_EVERY {
        return Ok(None);
    }
    let Some(store) = Store::open_locked(dir, LockMode::TryExclusive)? else {
        return Ok(None);
    };
    let report = store.gc(max_size, max_age)?;
    record_now(marker)?;
    Ok(Some(report))
}

/// Where the cache of the repository at `root` lives: `CAIRN_CACHE_DIR`, else [`DEFAULT_DIR`] below the root.
pub fn dir_for(root: &Path) -> PathBuf {
    std::env::var_os("CAIRN_CACHE_DIR").map_or_else(|| root.join(DEFAULT_DIR), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(command: &str) -> Keyed {
        let fingerprint = Fingerprint {
            version: FORMAT_VERSION,
            platform: "x86_64-linux".into(),
            task: "build".into(),
            params: BTreeMap::new(),
            commands: vec![command.into()],
            shell: vec!["sh".into(), "-c".into()],
            dir: ".".into(),
            args: vec![],
            outputs: vec!["out/**".into()],
            input_globs: vec!["src/**".into()],
            env: BTreeMap::new(),
            inputs: BTreeMap::new(),
            deps: BTreeMap::new(),
        };
        Keyed {
            key: fingerprint.key(),
            fingerprint,
            unmatched: Vec::new(),
        }
    }

    #[test]
    fn a_fetched_entry_is_also_the_success_record_until_a_local_success_replaces_it() {
        let root = tempfile::tempdir().expect("temp dir");
        let session = Session::open(root.path(), &root.path().join("cache")).expect("opens");
        let fetched = keyed("make fetched");
        let entry = Entry {
            key: fetched.key.to_string(),
            task: "build".into(),
            created: 1_700_000_000,
            duration_ms: 5,
            outputs: Vec::new(),
            log: None,
            log_inline: None,
            fingerprint: None,
            signed_by: None,
        };
        let store = session.store();
        store
            .save_fetched_entry(&fetched.key, &entry, &fetched.fingerprint)
            .expect("stores");
        session
            .record_fetched_success("build", &fetched)
            .expect("records");
        let record = store.task_file("tasks", "build");
        use std::os::unix::fs::MetadataExt;
        let linked = std::fs::metadata(&record).expect("record exists");
        let stored = std::fs::metadata(store.entry_path(&fetched.key)).expect("entry exists");
        assert_eq!(linked.ino(), stored.ino(), "one file, two names");
        assert!(session.is_recorded("build", &fetched));
        let last = session.last_success("build").expect("readable as a record");
        assert_eq!(last.key, fetched.key.to_string());
        assert_eq!(last.at, 1_700_000_000);
        assert_eq!(last.fingerprint, fetched.fingerprint);
        let loaded = store
            .load_entry(&fetched.key)
            .expect("reads")
            .expect("still an entry");
        assert_eq!(loaded.key, entry.key);

        // A later local success replaces the record, and leaves the fetched entry as it was.
        let local = keyed("make local");
        session.record_success("build", &local).expect("records");
        assert!(session.is_recorded("build", &local) && !session.is_recorded("build", &fetched));
        assert_eq!(
            session.last_success("build").expect("record").fingerprint,
            local.fingerprint
        );
        assert!(store.load_entry(&fetched.key).expect("reads").is_some());
        // And fetching it again links it again, over the local record.
        session
            .record_fetched_success("build", &fetched)
            .expect("records");
        assert!(session.is_recorded("build", &fetched));
    }

    #[test]
    fn a_new_cache_starts_its_gc_clock_instead_of_trimming() {
        let dir = tempfile::tempdir().expect("temp dir");
        drop(Store::open(dir.path(), LockMode::Shared).expect("opens"));
        let marker = dir.path().join("last-gc");
        assert!(auto_gc(dir.path(), 0, Duration::ZERO)
            .expect("runs")
            .is_none());
        assert!(marker.is_file(), "the clock started");
        // Within the hour: nothing.
        assert!(auto_gc(dir.path(), 0, Duration::ZERO)
            .expect("runs")
            .is_none());
        // An hour later it trims.
        let file = std::fs::File::options()
            .append(true)
            .open(&marker)
            .expect("opens");
        file.set_modified(SystemTime::now() - Duration::from_secs(7200))
            .expect("sets");
        assert!(auto_gc(dir.path(), 0, Duration::ZERO)
            .expect("runs")
            .is_some());
    }
}
