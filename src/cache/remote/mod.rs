//! The remote cache: results shared between machines through a server speaking the Bazel HTTP cache protocol
//! (bazel-remote, BuildBuddy, nginx with WebDAV `PUT`), trusted only when a listed writer signed them.
//!
//! On the server:
//! ```text
//! cas/<sha256>   a blob: an output's or a log's bytes, zstd-compressed when that is smaller
//! ac/<sha256>    a signed envelope around a manifest, at a slot derived from the cairn key and the writer
//! ```
//! A reader looks in the slot of each trusted writer, verifies the signature and that the manifest is for the
//! key it computed, checks every path before anything is fetched, and verifies each blob twice: the SHA-256
//! the server addresses it by, and the BLAKE3 the local store keeps it under. What passes is written to the
//! local store as an entry that remembers its signer (so revoking the key revokes it there too) and restored
//! from there, through the same checks as any local hit.
//!
//! Nothing here fails a run. The first request that fails or times out turns the remote off for the rest of
//! the run with one warning; an entry that does not verify is reported against its task and treated as a miss.

pub mod grpc;
mod http;
pub mod trust;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use http::{parse_roots, Unavailable};
pub use trust::{public_text, SigningKey};

use super::fingerprint::{hex, parse_hex, Fingerprint, Key};
use super::store::{Entry, LockMode, OutputRecord, Store};
use crate::config::TrustedWriter;
use http::{Client, Space};

/// An envelope larger than this is not an entry of ours.
const MAX_ENVELOPE: u64 = 16 << 20;
/// Blobs smaller than this are sent as they are: compressing them saves nothing worth a round of zstd.
const COMPRESS_FROM: usize = 512;
/// An entry's blobs are downloaded, or checked and sent, on up to this many threads.
const BLOB_THREADS: usize = 8;
/// Uploads run on this many threads, beside the run.
const UPLOAD_THREADS: usize = 2;

/// How a run reaches the remote cache, resolved from `[remote_cache]`, the environment and the command line.
pub struct RemoteOptions {
    /// The base URL.
    pub url: String,
    /// A bearer token.
    pub token: Option<Zeroizing<String>>,
    /// How long a request may stay silent (the whole request gets more in proportion to its bytes).
    pub timeout: Duration,
    /// The certificate authorities (DER) trusted for `https://` instead of the built-in roots.
    pub roots: Option<Vec<Vec<u8>>>,
    /// Whose entries are accepted.
    pub trusted: Vec<TrustedWriter>,
    /// This machine's key, when it publishes.
    pub signing_key: Option<SigningKey>,
    /// Whether this machine publishes to a REAPI server (which needs no signing key).
    pub publish_unsigned: bool,
    /// Where the one warning about an unusable remote goes.
    pub warn: Arc<dyn Fn(&str) + Send + Sync>,
}

/// What the remote cache did in one run.
#[derive(Debug, Default, Clone, Copy)]
pub struct RemoteReport {
    /// Entries restored from it.
    pub fetched: u64,
    /// Entries published.
    pub published: u64,
    /// Bytes sent (blobs the server already had are not sent again).
    pub bytes_sent: u64,
    /// Entries not published because the remote failed or the time to finish ran out.
    pub abandoned: u64,
    /// Whether the server failed and was turned off for the rest of the run.
    pub unavailable: bool,
    /// Whether waiting for uploads was cut short ([`Remote::cut_short`]).
    pub cut_short: bool,
}

/// What [`Remote::probe`] found: how long each check took, or why it failed.
#[derive(Debug)]
pub struct Probe {
    /// A lookup.
    pub read: Result<Duration, Unavailable>,
    /// An upload read back, when this machine publishes and the lookup worked.
    pub write: Option<Result<Duration, Unavailable>>,
}

/// What looking a key up found.
#[derive(Debug, Default)]
pub struct Lookup {
    /// The trusted writer whose entry is now in the local store, on a hit.
    pub writer: Option<String>,
    /// That entry, as stored (restored without reading it back).
    pub entry: Option<Entry>,
    /// The content of the blobs just fetched for it, by BLAKE3, already checked.
    pub fresh: HashMap<String, Vec<u8>>,
    /// Entries that were found and refused, and why, for the task's output.
    pub refused: Vec<String>,
}

/// One manifest file of the remote: what a writer stored under a key.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    key: String,
    task: String,
    created: u64,
    duration_ms: u64,
    outputs: Vec<RemoteOutput>,
    log: Option<RemoteBlob>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RemoteOutput {
    path: String,
    blob: Option<RemoteBlob>,
    target: Option<String>,
    mode: u32,
}

/// A blob as the remote holds it: addressed by the SHA-256 of the bytes sent, known locally by the BLAKE3 of
/// the content.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RemoteBlob {
    sha256: String,
    blake3: String,
    size: u64,
    stored_size: u64,
    zstd: bool,
}

struct Health {
    down: AtomicBool,
    warned: AtomicBool,
    warn: Arc<dyn Fn(&str) + Send + Sync>,
    fetched: AtomicU64,
    published: AtomicU64,
    bytes_sent: AtomicU64,
    abandoned: AtomicU64,
    /// Entries queued or being sent.
    pending: AtomicU64,
    /// Set to stop waiting for uploads.
    cut: AtomicBool,
}

impl Health {
    fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Turns the remote off for the rest of the run, warning the first time.
    fn fail(&self, error: &Unavailable) {
        self.down.store(true, Ordering::Relaxed);
        // After Ctrl-C the run's closing lines are out already: a late failure is not worth a word.
        if !self.warned.swap(true, Ordering::Relaxed) && !self.cut.load(Ordering::Relaxed) {
            (self.warn)(&format!(
                "the remote cache is not usable: {}; going on with the local cache only",
                error.0
            ));
        }
    }
}

/// The remote cache as one run uses it.
pub struct Remote {
    client: Arc<Client>,
    /// A REAPI server instead of an HTTP one (`grpc://`, `grpcs://`).
    reapi: Option<Arc<grpc::ReapiCache>>,
    trusted: Vec<TrustedWriter>,
    signer: Option<Arc<SigningKey>>,
    /// Whether this machine publishes (with a signing key over HTTP; by the server's leave over REAPI).
    publishing: bool,
    health: Arc<Health>,
    uploads: Mutex<Option<Uploads>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.client.shown())
    }
}

struct Uploads {
    sender: mpsc::Sender<Entry>,
    workers: Vec<JoinHandle<()>>,
    deadline: Arc<Mutex<Option<Instant>>>,
}

impl Remote {
    /// A remote for the store in `store_dir`; publishing starts its upload threads, which open the store
    /// again (shared) to read what they send.
    pub fn new(options: RemoteOptions, store_dir: &Path) -> Remote {
        let client = Arc::new(Client::new(
            &options.url,
            options.token.clone(),
            options.timeout,
            options.roots.as_deref(),
        ));
        let health = Arc::new(Health {
            down: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            warn: options.warn,
            fetched: AtomicU64::new(0),
            published: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            cut: AtomicBool::new(false),
        });
        let reapi = if options.url.starts_with("grpc://") || options.url.starts_with("grpcs://") {
            let endpoint = crate::reapi::Endpoint {
                url: options.url.clone(),
                instance_name: String::new(),
                token: options.token,
                ca_pem: options.roots.as_deref().map(pem_of),
                timeout: options.timeout,
            };
            match crate::reapi::Client::new(endpoint) {
                Ok(client) => Some(Arc::new(grpc::ReapiCache::new(client))),
                Err(error) => {
                    health.fail(&Unavailable(error.to_string()));
                    None
                }
            }
        } else {
            None
        };
        let mut trusted = options.trusted;
        let signer = options
            .signing_key
            .map(Arc::new)
            .filter(|_| reapi.is_none());
        // A writer reads back what it wrote itself, whether or not the repository lists its key.
        if let Some(signer) = &signer {
            if !trusted.iter().any(|t| t.key == signer.public()) {
                trusted.push(TrustedWriter {
                    name: "this machine".into(),
                    key: signer.public(),
                    span: 0..0,
                });
            }
        }
        let publishing = signer.is_some() || (reapi.is_some() && options.publish_unsigned);
        let send: Option<Sender> = match (&reapi, &signer) {
            (Some(reapi), _) if publishing => {
                let reapi = Arc::clone(reapi);
                Some(Arc::new(move |store: &Store, entry: &Entry| {
                    let key = super::fingerprint::parse_hex(&entry.key)
                        .map(Key)
                        .ok_or_else(|| Fault::Bad("the entry's key is not hex".into()))?;
                    reapi.publish(store, entry, &key).map_err(|error| {
                        if error.is_engine_down() {
                            Fault::Unavailable(Unavailable(error.to_string()))
                        } else {
                            Fault::Bad(error.to_string())
                        }
                    })
                }))
            }
            (None, Some(signer)) => {
                let (client, signer) = (Arc::clone(&client), Arc::clone(signer));
                Some(Arc::new(move |store: &Store, entry: &Entry| {
                    upload(&client, &signer, store, entry)
                }))
            }
            _ => None,
        };
        let uploads = send.and_then(|send| {
            let store = match Store::open(store_dir, LockMode::Shared) {
                Ok(store) => Arc::new(store),
                Err(error) => {
                    (health.warn)(&format!(
                        "results will not be published to the remote cache: {error}"
                    ));
                    return None;
                }
            };
            Some(Uploads::start(send, Arc::clone(&health), store))
        });
        Remote {
            client,
            reapi,
            trusted,
            signer,
            publishing,
            health,
            uploads: Mutex::new(uploads),
        }
    }

    /// The server's URL as messages show it.
    pub fn shown_url(&self) -> &str {
        self.client.shown()
    }

    /// Whether this machine publishes.
    pub fn publishes(&self) -> bool {
        self.publishing
    }

    /// Whether the server is a REAPI server (trusted through its authentication, not signatures).
    pub fn is_reapi(&self) -> bool {
        self.reapi.is_some() || self.client.shown().starts_with("grpc")
    }

    /// Looks `key` up in each trusted writer's slot; on a verified hit, the entry and its blobs are written
    /// to `store`, and `allowed` (the task's declared outputs) was checked for every path first.
    pub fn fetch(
        &self,
        key: &Key,
        fingerprint: &Fingerprint,
        store: &Store,
        allowed: &dyn Fn(&str) -> bool,
    ) -> Lookup {
        let mut lookup = Lookup::default();
        if self.is_reapi() {
            let Some(reapi) = self.reapi.as_ref().filter(|_| !self.health.is_down()) else {
                return lookup;
            };
            match reapi.fetch(key, fingerprint, store, allowed) {
                Ok(grpc::Fetched::Hit(entry)) => {
                    self.health.fetched.fetch_add(1, Ordering::Relaxed);
                    lookup.entry = Some(*entry);
                    lookup.writer = Some(format!(
                        "trusted through {}'s authentication",
                        reapi.shown()
                    ));
                }
                Ok(grpc::Fetched::Miss) => {}
                Ok(grpc::Fetched::Refused(reason)) => lookup
                    .refused
                    .push(format!("ignored the remote cache's entry: {reason}")),
                Err(error) if error.is_engine_down() => {
                    self.health.fail(&Unavailable(error.to_string()));
                }
                Err(error) => lookup
                    .refused
                    .push(format!("ignored the remote cache's entry: {error}")),
            }
            return lookup;
        }
        let key_text = key.to_string();
        for writer in &self.trusted {
            if self.health.is_down() {
                break;
            }
            let slot = trust::slot(&key_text, &writer.key);
            let envelope = match self.client.get(Space::Ac, &slot, MAX_ENVELOPE) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => continue,
                Err(error) => {
                    self.health.fail(&error);
                    break;
                }
            };
            let accepted = trust::open(&envelope, writer)
                .map_err(|rejection| rejection.to_string())
                .and_then(|(manifest, name)| {
                    Ok((read_manifest(&manifest, &key_text, allowed)?, name))
                });
            let (manifest, name) = match accepted {
                Ok(found) => found,
                Err(reason) => {
                    lookup.refused.push(format!(
                        "ignored the remote cache's entry from {}: {reason}",
                        writer.name
                    ));
                    continue;
                }
            };
            match self.import(key, &manifest, writer, fingerprint, store) {
                Ok((entry, fresh)) => {
                    self.health.fetched.fetch_add(1, Ordering::Relaxed);
                    lookup.entry = Some(entry);
                    lookup.fresh = fresh;
                    lookup.writer = Some(format!("signed by {name}"));
                    return lookup;
                }
                Err(Fault::Unavailable(error)) => {
                    self.health.fail(&error);
                    break;
                }
                Err(Fault::Bad(reason)) => lookup.refused.push(format!(
                    "ignored the remote cache's entry from {}: {reason}",
                    writer.name
                )),
            }
        }
        lookup
    }

    /// Downloads and verifies the blobs the local store lacks, then writes the entry.
    fn import(
        &self,
        key: &Key,
        manifest: &Manifest,
        writer: &TrustedWriter,
        fingerprint: &Fingerprint,
        store: &Store,
    ) -> Result<(Entry, HashMap<String, Vec<u8>>), Fault> {
        let missing: Vec<&RemoteBlob> = manifest
            .outputs
            .iter()
            .filter_map(|o| o.blob.as_ref())
            .chain(manifest.log.as_ref())
            .filter(|blob| !store.has_blob(&blob.blake3))
            .collect();
        // Several at once: each blob costs a round trip and a write, and an entry can have thousands.
        let contents = in_parallel(&missing, |blob| self.fetch_blob(blob, store))?;
        let fresh = missing
            .iter()
            .map(|blob| blob.blake3.clone())
            .zip(contents)
            .collect();
        let entry = Entry {
            key: manifest.key.clone(),
            task: manifest.task.clone(),
            created: manifest.created,
            duration_ms: manifest.duration_ms,
            outputs: manifest
                .outputs
                .iter()
                .map(|o| OutputRecord {
                    path: o.path.clone(),
                    blob: o.blob.as_ref().map(|b| b.blake3.clone()),
                    target: o.target.clone(),
                    size: o.blob.as_ref().map_or(0, |b| b.size),
                    mode: o.mode,
                    inline: None,
                })
                .collect(),
            log: manifest.log.as_ref().map(|b| b.blake3.clone()),
            log_inline: None,
            fingerprint: None,
            signed_by: Some(public_text(&writer.key)),
        };
        store
            .save_fetched_entry(key, &entry, fingerprint)
            .map_err(|e| Fault::Bad(format!("cannot store the entry: {e}")))?;
        Ok((entry, fresh))
    }

    /// The first trusted writer whose slot holds an entry for `key` (existence only: nothing is verified or
    /// fetched), for `cairn why`.
    pub fn holder_of(&self, key: &Key) -> Result<Option<String>, Unavailable> {
        if self.is_reapi() {
            let Some(reapi) = &self.reapi else {
                return Err(Unavailable(format!(
                    "{} cannot be reached",
                    self.client.shown()
                )));
            };
            return match reapi.holds(key) {
                Ok(true) => Ok(Some("trusted through the server's authentication".into())),
                Ok(false) => Ok(None),
                Err(error) => Err(Unavailable(error.to_string())),
            };
        }
        let key_text = key.to_string();
        for writer in &self.trusted {
            if self
                .client
                .has(Space::Ac, &trust::slot(&key_text, &writer.key))?
            {
                return Ok(Some(format!("signed by {}", writer.name)));
            }
        }
        Ok(None)
    }

    /// Downloads one blob the local store lacks, verifies it, writes it to the store and returns its content.
    fn fetch_blob(&self, blob: &RemoteBlob, store: &Store) -> Result<Vec<u8>, Fault> {
        let fetched = self
            .client
            .get(Space::Cas, &blob.sha256, blob.stored_size)
            .map_err(Fault::Unavailable)?
            .ok_or_else(|| {
                Fault::Bad(format!(
                    "the server no longer has blob {}",
                    short(&blob.sha256)
                ))
            })?;
        let content = verify_blob(blob, fetched).map_err(Fault::Bad)?;
        store
            .put_missing_fetched_blob(&blob.blake3, &content)
            .map_err(|e| Fault::Bad(format!("cannot store a fetched blob: {e}")))?;
        Ok(content)
    }

    /// The trusted writers' names, this machine's included when it publishes.
    pub fn trusted_names(&self) -> Vec<String> {
        self.trusted.iter().map(|t| t.name.clone()).collect()
    }

    /// This machine's public key, when it publishes.
    pub fn public_key(&self) -> Option<String> {
        self.signer.as_ref().map(|s| s.public_text())
    }

    /// Checks that the server answers a lookup and, when this machine publishes, accepts an upload (a small
    /// fixed blob: content-addressed, so sending it again changes nothing).
    pub fn probe(&self) -> Probe {
        const PROBE: &[u8] = b"cairn remote cache probe\n";
        if self.is_reapi() {
            let read = match &self.reapi {
                Some(reapi) => reapi.probe().map_err(|e| Unavailable(e.to_string())),
                None => Err(Unavailable(format!(
                    "{} cannot be reached",
                    self.client.shown()
                ))),
            };
            return Probe { read, write: None };
        }
        let hash = hex(&Sha256::digest(PROBE));
        let began = Instant::now();
        let read = self.client.has(Space::Cas, &hash).map(|_| began.elapsed());
        let write = match (&read, self.publishes()) {
            (Ok(_), true) => {
                let began = Instant::now();
                Some(self.client.put(Space::Cas, &hash, PROBE).and_then(
                    |()| match self.client.get(Space::Cas, &hash, 1024)? {
                        Some(bytes) if bytes == PROBE => Ok(began.elapsed()),
                        _ => Err(Unavailable(format!(
                            "{} accepted an upload but does not serve it back",
                            self.client.shown()
                        ))),
                    },
                ))
            }
            _ => None,
        };
        Probe { read, write }
    }

    /// Queues `entry` (already in the local store) for publishing, if this machine publishes.
    pub fn publish(&self, entry: &Entry) {
        if self.health.is_down() {
            return;
        }
        let uploads = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(uploads) = uploads.as_ref() {
            self.health.pending.fetch_add(1, Ordering::Relaxed);
            if uploads.sender.send(entry.clone()).is_err() {
                self.health.pending.fetch_sub(1, Ordering::Relaxed);
                self.health.abandoned.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits for queued uploads, for at most `limit`; what is still queued then is abandoned. Returns early,
    /// leaving uploads under way to end with the process, once [`Remote::cut_short`] is called.
    pub fn finish(&self, limit: Duration) -> RemoteReport {
        let uploads = self
            .uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut cut_short = false;
        if let Some(uploads) = uploads {
            *uploads.deadline.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Instant::now() + limit);
            drop(uploads.sender);
            // A request under way cannot be cancelled; waiting for it can.
            'workers: for worker in uploads.workers {
                while !worker.is_finished() {
                    if self.health.cut.load(Ordering::Relaxed) {
                        cut_short = true;
                        break 'workers;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = worker.join();
            }
        }
        let pending = if cut_short {
            self.health.pending.load(Ordering::Relaxed)
        } else {
            0
        };
        RemoteReport {
            fetched: self.health.fetched.load(Ordering::Relaxed),
            published: self.health.published.load(Ordering::Relaxed),
            bytes_sent: self.health.bytes_sent.load(Ordering::Relaxed),
            abandoned: self.health.abandoned.load(Ordering::Relaxed) + pending,
            unavailable: self.health.is_down(),
            cut_short,
        }
    }

    /// Stops [`Remote::finish`] from waiting any longer (Ctrl-C while uploads are under way).
    pub fn cut_short(&self) {
        self.health.cut.store(true, Ordering::Relaxed);
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // Uploads never outlive the run: a remote dropped without `finish` gives them no time at all.
        self.finish(Duration::ZERO);
    }
}

enum Fault {
    Unavailable(Unavailable),
    Bad(String),
}

/// Publishes one entry (HTTP: signed manifest and blobs; REAPI: blobs and an action result).
type Sender = Arc<dyn Fn(&Store, &Entry) -> Result<u64, Fault> + Send + Sync>;

impl Uploads {
    fn start(send: Sender, health: Arc<Health>, store: Arc<Store>) -> Uploads {
        let (sender, receiver) = mpsc::channel::<Entry>();
        let receiver = Arc::new(Mutex::new(receiver));
        let deadline: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
        let workers = (0..UPLOAD_THREADS)
            .map(|_| {
                let (send, health, store, receiver, deadline) = (
                    Arc::clone(&send),
                    Arc::clone(&health),
                    Arc::clone(&store),
                    Arc::clone(&receiver),
                    Arc::clone(&deadline),
                );
                std::thread::spawn(move || loop {
                    let next = receiver.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(entry) = next else {
                        return;
                    };
                    let late = deadline
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .is_some_and(|at| Instant::now() >= at);
                    if late || health.is_down() || health.cut.load(Ordering::Relaxed) {
                        health.pending.fetch_sub(1, Ordering::Relaxed);
                        health.abandoned.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    match send(&store, &entry) {
                        Ok(sent) => {
                            health.published.fetch_add(1, Ordering::Relaxed);
                            health.bytes_sent.fetch_add(sent, Ordering::Relaxed);
                        }
                        Err(Fault::Unavailable(error)) => {
                            health.abandoned.fetch_add(1, Ordering::Relaxed);
                            health.fail(&error);
                        }
                        Err(Fault::Bad(reason)) => {
                            health.abandoned.fetch_add(1, Ordering::Relaxed);
                            if !health.cut.load(Ordering::Relaxed) {
                                (health.warn)(&format!(
                                    "`{}` was not published to the remote cache: {reason}",
                                    entry.task
                                ));
                            }
                        }
                    }
                    health.pending.fetch_sub(1, Ordering::Relaxed);
                })
            })
            .collect();
        Uploads {
            sender,
            workers,
            deadline,
        }
    }
}

/// Sends an entry's blobs the server lacks, then its signed manifest (last, so no manifest names a blob
/// the server does not have); returns the bytes sent.
fn upload(
    client: &Client,
    signer: &SigningKey,
    store: &Store,
    entry: &Entry,
) -> Result<u64, Fault> {
    // A short log kept inside the manifest travels as a blob like any other.
    let inline_log = match &entry.log_inline {
        Some(text) => {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| Fault::Bad(format!("the inline log does not decode: {e}")))?;
            Some(
                store
                    .put_fetched_blob(&bytes)
                    .map_err(|e| Fault::Bad(e.to_string()))?,
            )
        }
        None => None,
    };
    let log_hash = entry.log.as_ref().or(inline_log.as_ref());
    // So are small files a fetched result keeps in its manifest.
    for output in entry.outputs.iter().filter(|o| o.inline.is_some()) {
        if let Some(hash) = &output.blob {
            let bytes = store
                .output_content(output, hash)
                .map_err(|e| Fault::Bad(e.to_string()))?;
            store
                .put_fetched_blob(&bytes)
                .map_err(|e| Fault::Bad(e.to_string()))?;
        }
    }
    let sent = AtomicU64::new(0);
    let send_blob = |hash: &&String| -> Result<RemoteBlob, Fault> {
        let content = store
            .get_blob(hash)
            .map_err(|e| Fault::Bad(e.to_string()))?;
        let (stored, zstd) = pack(&content);
        let blob = RemoteBlob {
            sha256: hex(&Sha256::digest(&stored)),
            blake3: (*hash).clone(),
            size: content.len() as u64,
            stored_size: stored.len() as u64,
            zstd,
        };
        if !client
            .has(Space::Cas, &blob.sha256)
            .map_err(Fault::Unavailable)?
        {
            client
                .put(Space::Cas, &blob.sha256, &stored)
                .map_err(Fault::Unavailable)?;
            sent.fetch_add(stored.len() as u64, Ordering::Relaxed);
        }
        Ok(blob)
    };
    let hashes: Vec<&String> = entry
        .outputs
        .iter()
        .filter_map(|o| o.blob.as_ref())
        .chain(log_hash)
        .collect();
    let sent_blobs = in_parallel(&hashes, send_blob)?;
    let by_hash: std::collections::HashMap<&str, &RemoteBlob> = sent_blobs
        .iter()
        .map(|blob| (blob.blake3.as_str(), blob))
        .collect();
    let remote_blob = |hash: &String| by_hash.get(hash.as_str()).map(|b| (*b).clone());
    let outputs = entry
        .outputs
        .iter()
        .map(|output| RemoteOutput {
            path: output.path.clone(),
            blob: output.blob.as_ref().and_then(remote_blob),
            target: output.target.clone(),
            mode: output.mode,
        })
        .collect();
    let log = log_hash.and_then(remote_blob);
    let sent = sent.into_inner();
    let manifest = Manifest {
        key: entry.key.clone(),
        task: entry.task.clone(),
        created: entry.created,
        duration_ms: entry.duration_ms,
        outputs,
        log,
    };
    let bytes = serde_json::to_vec(&manifest).expect("a manifest always serialises");
    let envelope =
        serde_json::to_vec(&trust::seal(signer, &bytes)).expect("an envelope always serialises");
    let slot = trust::slot(&entry.key, &signer.public());
    client
        .put(Space::Ac, &slot, &envelope)
        .map_err(Fault::Unavailable)?;
    Ok(sent + envelope.len() as u64)
}

/// PEM text of DER certificates, for the gRPC client's TLS settings.
fn pem_of(roots: &[Vec<u8>]) -> Vec<u8> {
    use base64::Engine;
    let mut pem = String::new();
    for der in roots {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let encoded = base64::engine::general_purpose::STANDARD.encode(der);
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem.into_bytes()
}

/// Applies `work` to every item on up to [`BLOB_THREADS`] threads, in order of the results; the first failure
/// stops the rest from starting and is returned.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&T) -> Result<R, Fault> + Sync,
) -> Result<Vec<R>, Fault> {
    // One item (a typical entry: one output) is done on the calling thread: a thread started and joined per
    // entry was most of what a fetch cost the processor.
    if items.len() <= 1 {
        return items.iter().map(work).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let failed: Mutex<Option<Fault>> = Mutex::new(None);
    let worker = || loop {
        if failed.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            return;
        }
        let index = next.fetch_add(1, Ordering::Relaxed);
        let Some(item) = items.get(index) else {
            return;
        };
        match work(item) {
            Ok(result) => {
                results.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(result);
            }
            Err(fault) => {
                failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(fault);
                return;
            }
        }
    };
    std::thread::scope(|scope| {
        // The calling thread is one of the workers.
        for _ in 1..items.len().min(BLOB_THREADS) {
            scope.spawn(worker);
        }
        worker();
    });
    if let Some(fault) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(fault);
    }
    Ok(results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect())
}

/// The bytes to send for `content`: zstd-compressed when that is smaller.
fn pack(content: &[u8]) -> (Vec<u8>, bool) {
    if content.len() >= COMPRESS_FROM {
        if let Ok(packed) = zstd::encode_all(content, 3) {
            if packed.len() < content.len() {
                return (packed, true);
            }
        }
    }
    (content.to_vec(), false)
}

/// Checks fetched bytes against the SHA-256 they were asked for, unpacks them (never past the size the
/// manifest gives) and checks the content against its BLAKE3.
fn verify_blob(blob: &RemoteBlob, fetched: Vec<u8>) -> Result<Vec<u8>, String> {
    let tampered = || {
        format!(
            "blob {} does not match its hash (altered on the server or in transit)",
            short(&blob.sha256)
        )
    };
    let content = if blob.zstd {
        // Compressed bytes reach the decoder only once they are known to be the writer's: the SHA-256 first.
        // (Bytes sent as they are need no SHA-256: the signed BLAKE3 below covers exactly them.)
        if hex(&Sha256::digest(&fetched)) != blob.sha256 {
            return Err(tampered());
        }
        let mut out = Vec::new();
        zstd::Decoder::new(fetched.as_slice())
            .map_err(|_| tampered())?
            .take(blob.size + 1)
            .read_to_end(&mut out)
            .map_err(|_| tampered())?;
        out
    } else {
        fetched
    };
    if content.len() as u64 != blob.size || hex(blake3::hash(&content).as_bytes()) != blob.blake3 {
        return Err(tampered());
    }
    Ok(content)
}

/// Checks a manifest's bytes as a fetch does once its signature is verified (it must be for `key`, and every
/// path and blob must pass [`check_paths`]), without using it: for fuzzing and for diagnostics.
pub fn check_manifest(
    bytes: &[u8],
    key: &str,
    allowed: &dyn Fn(&str) -> bool,
) -> Result<(), String> {
    read_manifest(bytes, key, allowed).map(|_| ())
}

fn read_manifest(
    bytes: &[u8],
    key: &str,
    allowed: &dyn Fn(&str) -> bool,
) -> Result<Manifest, String> {
    let manifest: Manifest =
        serde_json::from_slice(bytes).map_err(|e| format!("its manifest cannot be read: {e}"))?;
    if manifest.key != key {
        // A genuine entry copied to another key's slot: signed, but not for this key.
        return Err("it is signed for another key".to_owned());
    }
    check_paths(&manifest, allowed)?;
    Ok(manifest)
}

/// Refuses a manifest any of whose paths is not a plain relative path among the task's declared outputs,
/// whose links point out of the repository, or whose blobs are not named by digests, before anything is
/// downloaded.
fn check_paths(manifest: &Manifest, allowed: &dyn Fn(&str) -> bool) -> Result<(), String> {
    let is_digest = |text: &str| parse_hex(text).is_some_and(|bytes| hex(&bytes) == text);
    let blobs = manifest
        .outputs
        .iter()
        .filter_map(|o| o.blob.as_ref())
        .chain(manifest.log.as_ref());
    for blob in blobs {
        // The SHA-256 becomes part of a URL: nothing but a digest may get there.
        if !is_digest(&blob.sha256) || !is_digest(&blob.blake3) {
            return Err("it names a blob by something other than a digest".into());
        }
    }
    for output in &manifest.outputs {
        let path = Path::new(&output.path);
        if output.path.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(format!(
                "it would write `{}`, outside the repository",
                output.path
            ));
        }
        if !allowed(&output.path) {
            return Err(format!(
                "it would write `{}`, which is not one of the task's outputs",
                output.path
            ));
        }
        match (&output.blob, &output.target) {
            (Some(_), None) => {}
            (None, Some(target)) => {
                let parent = Path::new(&output.path).parent().unwrap_or(Path::new(""));
                if Path::new(target).is_absolute()
                    || !crate::paths::stays_inside(&parent.join(target))
                {
                    return Err(format!(
                        "its link `{}` points out of the repository",
                        output.path
                    ));
                }
            }
            _ => return Err(format!("`{}` has neither content nor link", output.path)),
        }
    }
    Ok(())
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(path: &str, target: Option<&str>) -> Manifest {
        let blob = RemoteBlob {
            sha256: "00".repeat(32),
            blake3: "00".repeat(32),
            size: 0,
            stored_size: 0,
            zstd: false,
        };
        Manifest {
            key: "k".into(),
            task: "t".into(),
            created: 0,
            duration_ms: 0,
            outputs: vec![RemoteOutput {
                path: path.into(),
                blob: target.is_none().then_some(blob),
                target: target.map(Into::into),
                mode: 0o644,
            }],
            log: None,
        }
    }

    #[test]
    fn paths_that_leave_the_repository_are_refused_before_download() {
        let any = |_: &str| true;
        for bad in ["../x", "/etc/passwd", "a/../../x", "", "./a"] {
            assert!(check_paths(&manifest(bad, None), &any).is_err(), "{bad}");
        }
        assert!(check_paths(&manifest("out/a", None), &any).is_ok());
        assert!(check_paths(&manifest("out/link", Some("../../etc")), &any).is_err());
        assert!(check_paths(&manifest("out/link", Some("/etc/passwd")), &any).is_err());
        assert!(check_paths(&manifest("out/link", Some("a")), &any).is_ok());
        let only_out = |p: &str| p.starts_with("out/");
        assert!(check_paths(&manifest("src/main.rs", None), &only_out).is_err());
        let mut traversal = manifest("out/a", None);
        if let Some(blob) = traversal.outputs[0].blob.as_mut() {
            blob.sha256 = "../../ac/x".into();
        }
        assert!(check_paths(&traversal, &any).is_err());
    }

    #[test]
    fn parallel_work_keeps_the_order_and_stops_at_a_failure() {
        let items: Vec<u32> = (0..100).collect();
        let doubled = in_parallel(&items, |n| Ok(n * 2)).ok().unwrap();
        assert_eq!(doubled, items.iter().map(|n| n * 2).collect::<Vec<_>>());
        let started = AtomicU64::new(0);
        let result = in_parallel(&items, |n| {
            started.fetch_add(1, Ordering::Relaxed);
            if *n == 3 {
                Err(Fault::Bad("three".into()))
            } else {
                Ok(*n)
            }
        });
        assert!(matches!(result, Err(Fault::Bad(reason)) if reason == "three"));
        assert!(
            started.load(Ordering::Relaxed) < 100,
            "the rest did not start"
        );
        assert!(in_parallel(&Vec::<u32>::new(), |n| Ok(*n))
            .ok()
            .unwrap()
            .is_empty());
        assert_eq!(in_parallel(&[5u32], |n| Ok(n + 1)).ok(), Some(vec![6]));
        assert!(matches!(
            in_parallel(&[5u32], |_| Err::<u32, _>(Fault::Bad("five".into()))),
            Err(Fault::Bad(reason)) if reason == "five"
        ));
    }

    #[test]
    fn a_blob_is_checked_against_its_signed_hashes_and_its_size() {
        let content = b"hello ".repeat(200);
        let (stored, zstd) = pack(&content);
        assert!(zstd, "repetitive content is sent compressed");
        let blob = RemoteBlob {
            sha256: hex(&Sha256::digest(&stored)),
            blake3: hex(blake3::hash(&content).as_bytes()),
            size: content.len() as u64,
            stored_size: stored.len() as u64,
            zstd,
        };
        assert_eq!(verify_blob(&blob, stored.clone()).unwrap(), content);
        let mut altered = stored.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(verify_blob(&blob, altered).is_err());
        // A server that serves other bytes under the right SHA-256 is caught by the BLAKE3.
        let other = RemoteBlob {
            blake3: hex(blake3::hash(b"other").as_bytes()),
            ..blob.clone()
        };
        assert!(verify_blob(&other, stored).is_err());
        // Bytes sent uncompressed are checked against the signed BLAKE3 and size alone.
        let plain = b"random-looking bytes".to_vec();
        let (sent, zstd) = pack(&plain);
        assert!(!zstd);
        let blob = RemoteBlob {
            sha256: hex(&Sha256::digest(&sent)),
            blake3: hex(blake3::hash(&plain).as_bytes()),
            size: plain.len() as u64,
            stored_size: sent.len() as u64,
            zstd,
        };
        assert_eq!(verify_blob(&blob, sent.clone()).unwrap(), plain);
        let mut altered = sent.clone();
        altered[0] ^= 1;
        assert!(verify_blob(&blob, altered).is_err());
        assert!(
            verify_blob(&blob, sent[1..].to_vec()).is_err(),
            "a short blob"
        );
    }
}
