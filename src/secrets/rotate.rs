//! `cairn secrets rotate`: a new data key and the policy's current recipients for every file in scope,
//! crash-safe. Preflight decrypts and verifies everything before anything is written; each new file is
//! staged beside the old one (fsync), verified by decrypting it again from disk, then renamed into place
//! (fsync of the directory), with a journal so that an interrupted rotation can be resumed or abandoned.
//! At every moment each file on disk is the complete old version or the complete new one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cipher::new_data_key;
use super::error::{FormatError, SecretsError};
use super::file::{Format, SopsFile};
use super::files::{self, Decrypted};
use super::keys::Keyring;
use super::policy::Policy;
use super::tree::leaf_paths;

/// What the caller asked for.
#[derive(Debug, Clone, Default)]
pub struct RotateOptions {
    /// Rotate even files the operator's identities will no longer open.
    pub allow_lockout: bool,
}

/// What a rotation did, for the report.
#[derive(Debug, Default)]
pub struct RotateReport {
    /// Files rotated.
    pub rotated: Vec<PathBuf>,
    /// Per file: recipients removed and the value paths they could read.
    pub exposed: Vec<Exposure>,
    /// Files finished from an interrupted run (`--resume`), or left as they were (`--abort`).
    pub recovered: Vec<PathBuf>,
}

/// Values a removed recipient could have read.
#[derive(Debug)]
pub struct Exposure {
    /// The file.
    pub path: PathBuf,
    /// Removed recipients, labelled with their policy names.
    pub removed: Vec<String>,
    /// Dotted paths of every value in the file.
    pub values: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    run: String,
    files: Vec<JournalEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct JournalEntry {
    path: PathBuf,
    temp: PathBuf,
    old_sha256: String,
    new_sha256: Option<String>,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum State {
    Planned,
    Staged,
    Committed,
}

/// Where the lock and journal live: `.cairn/secrets/` beside the policy (never committed).
pub fn state_dir(policy: &Policy) -> PathBuf {
    policy.root.join(".cairn/secrets")
}

fn journal_path(policy: &Policy) -> PathBuf {
    state_dir(policy).join("rotate.journal")
}

/// Removes the temp files killed cairns left beside the journal; returns those that could not be removed.
pub fn sweep_temps(policy: &Policy) -> Vec<PathBuf> {
    crate::atomic::sweep_stale_temps(&state_dir(policy))
}

/// Whether an interrupted rotation is waiting for `--resume` or `--abort`.
pub fn pending(policy: &Policy) -> Option<PathBuf> {
    let path = journal_path(policy);
    path.is_file().then_some(path)
}

/// Holds the rotation lock for as long as it lives.
struct Lock(#[allow(dead_code)] File);

fn lock(policy: &Policy) -> Result<Lock, SecretsError> {
    let dir = state_dir(policy);
    for private in [dir.parent().unwrap_or(&dir), &dir] {
        crate::atomic::private_dir(private).map_err(|e| SecretsError::io("create", private, e))?;
    }
    // A journal write killed midway left its temp file here.
    crate::atomic::sweep_stale_temps(&dir);
    let path = dir.join("rotate.lock");
    let file = crate::lockfile::open(&path).map_err(|e| SecretsError::io("open", &path, e))?;
    let taken = crate::lockfile::try_take(&file, crate::lockfile::Mode::Exclusive)
        .map_err(|e| SecretsError::io("lock", &path, e))?;
    if !taken {
        return Err(SecretsError::usage(
            "another `cairn secrets rotate` is running in this repository",
            Some("wait for it to finish".into()),
        ));
    }
    Ok(Lock(file))
}

static FAILPOINT_HITS: AtomicU32 = AtomicU32::new(0);

/// Test hook: `CAIRN_FAILPOINT=rotate:N` kills the process with SIGKILL at the N-th step boundary, to prove
/// that every interruption leaves decryptable files and a journal that `--resume` finishes.
fn failpoint() {
    let Ok(spec) = std::env::var("CAIRN_FAILPOINT") else {
        return;
    };
    let Some(target) = spec
        .strip_prefix("rotate:")
        .and_then(|n| n.parse::<u32>().ok())
    else {
        return;
    };
    if FAILPOINT_HITS.fetch_add(1, Ordering::SeqCst) + 1 == target {
        // SAFETY: sending a signal to ourselves.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sha256_of(path: &Path) -> Option<String> {
    fs::read(path).ok().map(|b| sha256(&b))
}

fn save_journal(policy: &Policy, journal: &Journal) -> Result<(), SecretsError> {
    let path = journal_path(policy);
    let text = serde_json::to_vec_pretty(journal)
        .map_err(|e| SecretsError::io("write", &path, std::io::Error::other(e)))?;
    crate::atomic::write_atomic(&path, &text).map_err(|e| SecretsError::io("write", &path, e))
}

fn load_journal(policy: &Policy) -> Result<Journal, SecretsError> {
    let path = journal_path(policy);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SecretsError::usage(
                format!(
                    "there is no interrupted rotation to resume or abort (no journal at `{}`)",
                    path.display()
                ),
                Some("the last rotation finished or was abandoned; `cairn secrets doctor` checks every file, and `cairn secrets rotate` starts a new rotation".into()),
            ))
        }
        Err(e) => return Err(SecretsError::io("read", &path, e)),
    };
    serde_json::from_slice(&bytes).map_err(|e| SecretsError::usage(
        format!("the rotation journal `{}` is damaged: {e}", path.display()),
        Some("every file on disk is either its old or its new version; delete the journal and run `cairn secrets doctor`".into()),
    ))
}

fn temp_for(path: &Path, run: &str) -> PathBuf {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("secret");
    path.with_file_name(format!(".{name}.rotate-{run}.tmp"))
}

fn sync_parent(path: &Path) -> Result<(), SecretsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::atomic::sync_dir(dir).map_err(|e| SecretsError::io("sync", dir, e))
}

/// Rotates `targets`: new data keys, the policy's recipients, atomically per file.
pub fn rotate(
    policy: &Policy,
    keyring: &Keyring,
    targets: &[PathBuf],
    options: &RotateOptions,
) -> Result<RotateReport, SecretsError> {
    let _lock = lock(policy)?;
    if let Some(journal) = pending(policy) {
        return Err(SecretsError::RotationPending { journal });
    }
    remove_orphans(targets);
    rotate_locked(policy, keyring, targets, options)
}

fn rotate_locked(
    policy: &Policy,
    keyring: &Keyring,
    targets: &[PathBuf],
    options: &RotateOptions,
) -> Result<RotateReport, SecretsError> {
    // Preflight: nothing is written unless every file opens, verifies and has a rule.
    let mut problems = Vec::new();
    let mut prepared = Vec::new();
    for path in targets {
        match prepare(policy, keyring, path, options) {
            Ok(p) => prepared.push(p),
            Err(e) => {
                use miette::Diagnostic;
                let help = e.help().map(|h| format!(" ({h})")).unwrap_or_default();
                problems.push(format!("{e}{help}"));
            }
        }
    }
    if !problems.is_empty() {
        return Err(SecretsError::usage(
            format!(
                "rotation not started, nothing was changed:\n  - {}",
                problems.join("\n  - ")
            ),
            Some(
                "fix these files (or leave them out with FILE arguments / --env) and run it again"
                    .into(),
            ),
        ));
    }
    let run = format!(
        "{:x}",
        u64::from_le_bytes(
            super::cipher::random::<8>().map_err(|e| SecretsError::format(&policy.path, e))?
        )
    );
    let mut journal = Journal {
        run: run.clone(),
        files: prepared
            .iter()
            .map(|p| JournalEntry {
                path: p.decrypted.path.clone(),
                temp: temp_for(&p.decrypted.path, &run),
                old_sha256: p.old_sha256.clone(),
                new_sha256: None,
                state: State::Planned,
            })
            .collect(),
    };
    save_journal(policy, &journal)?;
    failpoint();

    let mut report = RotateReport::default();
    for (entry, prepared) in journal.files.iter_mut().zip(&prepared) {
        stage(entry, prepared, keyring)?;
        failpoint();
    }
    save_journal(policy, &journal)?;
    failpoint();
    for index in 0..journal.files.len() {
        commit(&mut journal.files[index])?;
        failpoint();
        save_journal(policy, &journal)?;
        failpoint();
        report.rotated.push(journal.files[index].path.clone());
    }
    finish(policy)?;
    report.exposed = prepared.into_iter().filter_map(|p| p.exposure).collect();
    Ok(report)
}

struct Prepared {
    decrypted: Decrypted,
    old_sha256: String,
    new_text: String,
    new_key: super::cipher::DataKey,
    exposure: Option<Exposure>,
}

fn prepare(
    policy: &Policy,
    keyring: &Keyring,
    path: &Path,
    options: &RotateOptions,
) -> Result<Prepared, SecretsError> {
    let bytes = fs::read(path).map_err(|e| SecretsError::io("read", path, e))?;
    let decrypted = files::decrypt(path, keyring, Some(policy))?;
    let rule = policy.rule_for(path)?;
    let recipients = rule.parsed_recipients();
    let mine: Vec<&str> = keyring
        .identities
        .iter()
        .filter_map(|i| i.public.as_deref())
        .collect();
    if !options.allow_lockout && !rule.recipients.iter().any(|r| mine.contains(&r.as_str())) {
        return Err(SecretsError::usage(
            format!(
                "{}: after rotation none of your identities would open it ({} does not list your key)",
                policy.relative(path),
                rule.describe()
            ),
            Some("add your key to the rule, or pass --allow-lockout if that is intended".into()),
        ));
    }
    let removed: Vec<String> = decrypted
        .file
        .recipients()
        .into_iter()
        .filter(|r| !rule.recipients.iter().any(|n| n == r))
        .map(|r| policy.label(r))
        .collect();
    let exposure = (!removed.is_empty()).then(|| Exposure {
        path: path.to_path_buf(),
        removed,
        values: leaf_paths(&decrypted.plain),
    });
    let format = Format::for_path(path).map_err(|e| SecretsError::format(path, e))?;
    let new_key = new_data_key().map_err(|e| SecretsError::format(path, e))?;
    let new_text = files::seal(
        path,
        format,
        &decrypted.plain,
        &new_key,
        decrypted.file.metadata.scope.clone(),
        &recipients,
        None,
    )?;
    Ok(Prepared {
        old_sha256: sha256(&bytes),
        decrypted,
        new_text,
        new_key,
        exposure,
    })
}

fn stage(
    entry: &mut JournalEntry,
    prepared: &Prepared,
    keyring: &Keyring,
) -> Result<(), SecretsError> {
    let path = &entry.path;
    let mode = fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let _ = fs::remove_file(&entry.temp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&entry.temp)
        .map_err(|e| SecretsError::io("create", &entry.temp, e))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(prepared.new_text.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(|e| SecretsError::io("write", &entry.temp, e))?;
    drop(file);
    sync_parent(&entry.temp)?;
    // Verify what is on disk, not what is in memory: decrypt it again, with a local identity when the
    // operator is still a recipient.
    let staged =
        fs::read_to_string(&entry.temp).map_err(|e| SecretsError::io("read", &entry.temp, e))?;
    let format = Format::for_path(path).map_err(|e| SecretsError::format(path, e))?;
    let reread =
        SopsFile::parse(format, &staged).map_err(|e| SecretsError::format(&entry.temp, e))?;
    let key = match keyring.unwrap(&reread.metadata.age) {
        Some((key, _)) => key,
        None => prepared.new_key.clone(),
    };
    let opened = reread
        .decrypt(&key)
        .map_err(|e| SecretsError::format(&entry.temp, e))?;
    if opened.plain != prepared.decrypted.plain {
        return Err(SecretsError::format(
            &entry.temp,
            FormatError::Shape(
                "the staged file does not hold the same values; nothing was replaced".into(),
            ),
        ));
    }
    entry.new_sha256 = Some(sha256(staged.as_bytes()));
    entry.state = State::Staged;
    Ok(())
}

fn commit(entry: &mut JournalEntry) -> Result<(), SecretsError> {
    fs::rename(&entry.temp, &entry.path)
        .map_err(|e| SecretsError::io("replace", &entry.path, e))?;
    sync_parent(&entry.path)?;
    entry.state = State::Committed;
    Ok(())
}

fn finish(policy: &Policy) -> Result<(), SecretsError> {
    let path = journal_path(policy);
    fs::remove_file(&path).map_err(|e| SecretsError::io("remove", &path, e))?;
    sync_parent(&path)
}

/// Finishes an interrupted rotation: staged files whose old version is still in place are renamed in,
/// and files that were not staged yet are rotated now.
pub fn resume(
    policy: &Policy,
    keyring: &Keyring,
    options: &RotateOptions,
) -> Result<RotateReport, SecretsError> {
    let _lock = lock(policy)?;
    let journal = load_journal(policy)?;
    failpoint();
    let mut report = RotateReport::default();
    let mut remaining = Vec::new();
    // The journal stays as it is while this runs: each step below can be done again by another resume.
    for mut entry in journal.files {
        let current = sha256_of(&entry.path);
        let staged = sha256_of(&entry.temp);
        match (&entry.new_sha256, current, staged) {
            (Some(new), Some(current), _) if *new == current => {
                let _ = fs::remove_file(&entry.temp);
                report.recovered.push(entry.path);
            }
            (Some(new), Some(current), Some(staged))
                if *new == staged && current == entry.old_sha256 =>
            {
                commit(&mut entry)?;
                failpoint();
                report.recovered.push(entry.path);
            }
            _ => {
                let _ = fs::remove_file(&entry.temp);
                remaining.push(entry.path);
            }
        }
    }
    if remaining.is_empty() {
        finish(policy)?;
    } else {
        // The new journal replaces the old one in one rename: there is never a moment without a journal while
        // files still wait for their new key.
        let more = rotate_locked(policy, keyring, &remaining, options)?;
        report.rotated = more.rotated;
        report.exposed = more.exposed;
    }
    Ok(report)
}

/// Abandons an interrupted rotation: staged copies are deleted; files already replaced keep their new
/// (complete, verified) version.
pub fn abort(policy: &Policy) -> Result<RotateReport, SecretsError> {
    let _lock = lock(policy)?;
    let journal = load_journal(policy)?;
    let mut report = RotateReport::default();
    for entry in journal.files {
        if entry.temp.exists() {
            fs::remove_file(&entry.temp).map_err(|e| SecretsError::io("remove", &entry.temp, e))?;
        }
        if entry.new_sha256.is_some() && sha256_of(&entry.path) == entry.new_sha256 {
            report.rotated.push(entry.path);
        } else {
            report.recovered.push(entry.path);
        }
    }
    finish(policy)?;
    Ok(report)
}

/// Deletes `.NAME.rotate-*.tmp` files beside `targets` that no journal refers to (they hold only
/// ciphertext, so this is tidying, not a secret leak).
fn remove_orphans(targets: &[PathBuf]) {
    let mut dirs: Vec<&Path> = targets.iter().filter_map(|p| p.parent()).collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".rotate-") && name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}
