//! A REAPI server as the remote cache (`[remote_cache] url = "grpc://…"`): an entry is an `ActionResult` in
//! the server's action cache, its blobs in the server's CAS, so users of an execution engine need no second
//! server.
//!
//! Each cairn key has an action of its own: a `Command` whose arguments are `cairn-cache-entry` and the key,
//! over the empty input root. Outputs are `output_files` (with their permission bits as `unix_mode`) and
//! `output_symlinks`; the recorded output, in cairn's log format, is the action's stdout. No signature: as
//! with Bazel, an entry is trusted through the server's authentication — whoever the server lets write
//! `UpdateActionResult` can give this repository results. Every path is still checked against the task's
//! declared outputs, and every blob against its digest, before anything is stored.

#[cfg(test)]
use std::collections::HashMap;
use std::path::{Component, Path};
use std::sync::Arc;

use crate::cache::fingerprint::{Fingerprint, Key};
use crate::cache::store::{
    decode_log, place_fetched_log, place_fetched_output, Entry, OutputRecord, Store,
};
use crate::reapi::proto::{self, ActionResult, Digest, NodeProperties};
use crate::reapi::tree::{digest_of, BlobSource, Blobs};
use crate::reapi::{Client, ReapiError};

/// The first argument of every cache entry's action, so that they can never be taken for a real action.
const MARKER: &str = "cairn-cache-entry";

/// A REAPI server holding cairn's results.
pub struct ReapiCache {
    client: Arc<Client>,
}

/// What a lookup found: the entry is in the local store, or why one was refused.
pub enum Fetched {
    /// Stored locally: the entry as written.
    Hit(Box<Entry>),
    /// Not there.
    Miss,
    /// There, and refused (a path out of the declared outputs, a blob that does not match).
    Refused(String),
}

impl ReapiCache {
    /// A cache on the server `client` talks to.
    pub fn new(client: Client) -> ReapiCache {
        ReapiCache {
            client: Arc::new(client),
        }
    }

    /// The server's URL.
    pub fn shown(&self) -> &str {
        self.client.shown()
    }

    /// The action digest standing for `key`, and the blobs that make it up.
    fn action(key: &Key) -> (Digest, Blobs) {
        let mut blobs = Blobs::default();
        let command = proto::Command {
            arguments: vec![MARKER.into(), key.to_string()],
            ..Default::default()
        };
        let command_digest = blobs.add_message(&command);
        let input_root = blobs.add_message(&proto::Directory::default());
        let action = proto::Action {
            command_digest: Some(command_digest),
            input_root_digest: Some(input_root),
            ..Default::default()
        };
        (blobs.add_message(&action), blobs)
    }

    /// Whether the server holds a result for `key` (for `--dry-run` and `cairn why`).
    pub fn holds(&self, key: &Key) -> Result<bool, ReapiError> {
        let (action, _) = Self::action(key);
        Ok(self
            .client
            .blocking(self.client.get_action_result(action, Vec::new()))?
            .is_some())
    }

    /// Looks `key` up; on a hit that passes every check, writes its blobs and entry to `store`.
    pub fn fetch(
        &self,
        key: &Key,
        fingerprint: &Fingerprint,
        store: &Store,
        allowed: &dyn Fn(&str) -> bool,
    ) -> Result<Fetched, ReapiError> {
        let (action, _) = Self::action(key);
        let Some(result) = self
            .client
            .blocking(self.client.get_action_result(action, Vec::new()))?
        else {
            return Ok(Fetched::Miss);
        };
        let mut outputs = Vec::new();
        let mut wanted = Vec::new();
        for file in &result.output_files {
            if let Err(reason) = plain(&file.path, allowed) {
                return Ok(Fetched::Refused(reason));
            }
            let Some(digest) = &file.digest else {
                return Ok(Fetched::Refused(format!("`{}` has no digest", file.path)));
            };
            wanted.push(digest.clone());
            let mode = file
                .node_properties
                .as_ref()
                .and_then(|p| p.unix_mode)
                .map_or(if file.is_executable { 0o755 } else { 0o644 }, |m| {
                    m.value & 0o777
                });
            outputs.push((file.path.clone(), Some(digest.clone()), None, mode));
        }
        for link in &result.output_symlinks {
            if let Err(reason) = plain(&link.path, allowed) {
                return Ok(Fetched::Refused(reason));
            }
            outputs.push((link.path.clone(), None, Some(link.target.clone()), 0o777));
        }
        wanted.extend(result.stdout_digest.clone());
        // Every blob is checked against its SHA-256 as it arrives.
        let blobs = match self.client.blocking(self.client.read_blobs(wanted)) {
            Ok(blobs) => blobs,
            Err(ReapiError::Protocol(reason)) => return Ok(Fetched::Refused(reason)),
            Err(error) => return Err(error),
        };
        let mut budget = crate::cache::INLINE_OUTPUTS_TOTAL_MAX;
        let mut records = Vec::with_capacity(outputs.len());
        for (path, digest, target, mode) in outputs {
            let record = match digest {
                Some(digest) => {
                    let bytes = blobs.get(&digest.hash).ok_or_else(|| {
                        ReapiError::Protocol(format!("the content of `{path}` was not sent"))
                    })?;
                    let (blob, inline) =
                        place_fetched_output(store, bytes, &mut budget).map_err(|e| {
                            ReapiError::Protocol(format!("cannot store a fetched blob: {e}"))
                        })?;
                    OutputRecord {
                        path,
                        blob: Some(blob),
                        target: None,
                        size: bytes.len() as u64,
                        mode,
                        inline,
                    }
                }
                None => OutputRecord {
                    path,
                    blob: None,
                    target,
                    size: 0,
                    mode,
                    inline: None,
                },
            };
            records.push(record);
        }
        let (log, log_inline) = match &result.stdout_digest {
            Some(digest) => {
                let bytes = blobs.get(&digest.hash).cloned().unwrap_or_default();
                if decode_log(&bytes).is_none() {
                    return Ok(Fetched::Refused(
                        "its recorded output cannot be decoded".into(),
                    ));
                }
                place_fetched_log(store, &bytes).map_err(|e| {
                    ReapiError::Protocol(format!("cannot store a fetched blob: {e}"))
                })?
            }
            None => (None, None),
        };
        let entry = Entry {
            key: key.to_string(),
            task: String::new(),
            created: crate::time::unix_now(),
            duration_ms: 0,
            outputs: records,
            log,
            log_inline,
            fingerprint: None,
            signed_by: None,
        };
        store
            .save_fetched_entry(key, &entry, fingerprint)
            .map_err(|e| ReapiError::Protocol(format!("cannot store the entry: {e}")))?;
        Ok(Fetched::Hit(Box::new(entry)))
    }

    /// Sends an entry's blobs the server lacks, then its result (last, so that no result names a missing
    /// blob); returns the bytes sent.
    pub fn publish(&self, store: &Store, entry: &Entry, key: &Key) -> Result<u64, ReapiError> {
        let (action, mut blobs) = Self::action(key);
        let mut result = ActionResult::default();
        for output in &entry.outputs {
            match (&output.blob, &output.target) {
                (Some(blob), _) => {
                    let bytes = store
                        .output_content(output, blob)
                        .map_err(|e| ReapiError::Protocol(e.to_string()))?;
                    let digest = digest_of(&bytes);
                    blobs.add(digest.clone(), BlobSource::Bytes(Arc::new(bytes)));
                    result.output_files.push(proto::OutputFile {
                        path: output.path.clone(),
                        digest: Some(digest),
                        is_executable: output.mode & 0o111 != 0,
                        contents: Vec::new(),
                        node_properties: Some(NodeProperties {
                            unix_mode: Some(bazel_remote_apis::google::protobuf::UInt32Value {
                                value: output.mode & 0o777,
                            }),
                            ..Default::default()
                        }),
                    });
                }
                (None, Some(target)) => result.output_symlinks.push(proto::OutputSymlink {
                    path: output.path.clone(),
                    target: target.clone(),
                    node_properties: None,
                }),
                (None, None) => {}
            }
        }
        if let Some(log) = &entry.log {
            let bytes = store
                .get_blob(log)
                .map_err(|e| ReapiError::Protocol(e.to_string()))?;
            result.stdout_digest = Some(blobs.add_bytes(bytes));
        } else if let Some(inline) = &entry.log_inline {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(inline)
                .map_err(|e| ReapiError::Protocol(e.to_string()))?;
            result.stdout_digest = Some(blobs.add_bytes(bytes));
        }
        let blobs = Arc::new(blobs);
        let (_, sent) = self.client.blocking(self.client.upload_missing(blobs))?;
        self.client
            .blocking(self.client.update_action_result(action, result))?;
        Ok(sent)
    }

    /// The round trip of a lookup (of a key no one has).
    pub fn probe(&self) -> Result<std::time::Duration, ReapiError> {
        let began = std::time::Instant::now();
        self.client.blocking(self.client.capabilities())?;
        self.holds(&Key([0; 32]))?;
        Ok(began.elapsed())
    }
}

/// Checks a result's path before anything is fetched: plain, relative, one of the task's declared outputs.
fn plain(path: &str, allowed: &dyn Fn(&str) -> bool) -> Result<(), String> {
    let plain = !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Err(format!("`{path}` is not a plain relative path"));
    }
    if !allowed(path) {
        return Err(format!(
            "`{path}` is not one of the task's declared outputs"
        ));
    }
    Ok(())
}

/// The blobs of a fetched result, by hash (for tests of the format).
#[cfg(test)]
fn by_hash(blobs: &Blobs) -> HashMap<String, usize> {
    blobs
        .digests()
        .into_iter()
        .map(|d| (d.hash, d.size_bytes as usize))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_action_and_the_same_key_the_same_one() {
        let (one, blobs) = ReapiCache::action(&Key([1; 32]));
        let (again, _) = ReapiCache::action(&Key([1; 32]));
        let (other, _) = ReapiCache::action(&Key([2; 32]));
        assert_eq!(one, again);
        assert_ne!(one, other);
        // The command, the empty root and the action itself.
        assert_eq!(by_hash(&blobs).len(), 3);
    }

    #[test]
    fn paths_out_of_the_declared_outputs_are_refused_before_anything_is_fetched() {
        let allowed = |p: &str| p.starts_with("out/");
        assert!(plain("out/a", &allowed).is_ok());
        assert!(plain("../etc/passwd", &allowed).is_err());
        assert!(plain("/etc/passwd", &allowed).is_err());
        assert!(plain("src/main.rs", &allowed).is_err());
    }
}
