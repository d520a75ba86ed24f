//! Secrets files on disk: finding them, opening them with the user's identities, and writing them back
//! encrypted, verified and atomically.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::cipher::{new_data_key, DataKey};
use super::error::{FormatError, SecretsError};
use super::file::{Format, IvStash, Scope, SopsFile};
use super::keys::{Keyring, Recipient};
use super::policy::{short, Policy};
use super::tree::Document;

/// A file opened with a local identity.
pub struct Decrypted {
    /// The file.
    pub path: PathBuf,
    /// The encrypted file as read.
    pub file: SopsFile,
    /// Its plaintext.
    pub plain: Document,
    /// Its values' IVs, to re-encrypt unchanged values identically.
    pub stash: IvStash,
    /// Its data key.
    pub key: DataKey,
    /// The identity that opened it.
    pub opened_by: String,
}

/// Reads and parses an encrypted file without decrypting it.
pub fn read(path: &Path) -> Result<SopsFile, SecretsError> {
    let text = fs::read_to_string(path).map_err(|e| SecretsError::io("read", path, e))?;
    let format = Format::for_path(path).map_err(|e| SecretsError::format(path, e))?;
    SopsFile::parse(format, &text).map_err(|e| SecretsError::format(path, e))
}

/// Opens `path` with the first identity in `keyring` that is one of its recipients, and verifies it.
pub fn decrypt(
    path: &Path,
    keyring: &Keyring,
    policy: Option<&Policy>,
) -> Result<Decrypted, SecretsError> {
    let file = read(path)?;
    let Some((key, identity)) = keyring.unwrap(&file.metadata.age) else {
        return Err(no_identity(path, &file, keyring, policy));
    };
    let opened = file
        .decrypt(&key)
        .map_err(|e| SecretsError::format(path, e))?;
    Ok(Decrypted {
        path: path.to_path_buf(),
        opened_by: identity.describe(),
        plain: opened.plain,
        stash: opened.stash,
        key,
        file,
    })
}

/// The "no identity opens this file" error, saying what was tried and who can open it.
pub fn no_identity(
    path: &Path,
    file: &SopsFile,
    keyring: &Keyring,
    policy: Option<&Policy>,
) -> SecretsError {
    let label = |r: &str| policy.map_or_else(|| short(r), |p| p.label(r));
    let recipients: Vec<String> = file.recipients().iter().map(|r| label(r)).collect();
    let mut help = format!("the file is encrypted to: {}\n", recipients.join(", "));
    if keyring.identities.is_empty() {
        help.push_str("no age identity was found; looked at:\n");
    } else {
        let mine: Vec<String> = keyring.identities.iter().map(|i| i.describe()).collect();
        help.push_str(&format!(
            "your identities: {}\nlooked at:\n",
            mine.join(", ")
        ));
    }
    for tried in &keyring.tried {
        help.push_str(&format!("  - {tried}\n"));
    }
    help.push_str("set SOPS_AGE_KEY_FILE or pass --identity FILE; if you should have access, ask a recipient to add your key to .sops.yaml and run `cairn secrets updatekeys`");
    SecretsError::NoIdentity {
        path: path.to_path_buf(),
        help,
    }
}

/// Encrypts `plain` for `path` under its rule, keeping the data key and unchanged ciphertexts of `previous`.
/// Returns the file's new text, already verified to decrypt back to `plain`.
pub fn encrypt_for(
    path: &Path,
    plain: &Document,
    policy: &Policy,
    previous: Option<Decrypted>,
) -> Result<String, SecretsError> {
    let format = Format::for_path(path).map_err(|e| SecretsError::format(path, e))?;
    let rule = policy.rule_for(path)?;
    let recipients = rule.parsed_recipients();
    let (key, scope, stash) = match previous {
        Some(previous) => (
            previous.key,
            previous.file.metadata.scope,
            Some(previous.stash),
        ),
        None => (
            new_data_key().map_err(|e| SecretsError::format(path, e))?,
            rule.scope.clone(),
            None,
        ),
    };
    seal(path, format, plain, &key, scope, &recipients, stash)
}

/// Encrypts and verifies: the text is parsed and decrypted again and must give back `plain`.
pub fn seal(
    path: &Path,
    format: Format,
    plain: &Document,
    key: &DataKey,
    scope: Scope,
    recipients: &[Recipient],
    stash: Option<IvStash>,
) -> Result<String, SecretsError> {
    let fail = |e: FormatError| SecretsError::format(path, e);
    let file = SopsFile::encrypt(format, plain, key, scope, recipients, stash).map_err(fail)?;
    let text = file.render().map_err(fail)?;
    verify(path, &text, key, plain)?;
    Ok(text)
}

/// Checks that `text` is a file that decrypts with `key` to exactly `plain`.
pub fn verify(
    path: &Path,
    text: &str,
    key: &DataKey,
    plain: &Document,
) -> Result<(), SecretsError> {
    let fail = |e: FormatError| SecretsError::format(path, e);
    let format = Format::for_path(path).map_err(fail)?;
    let reread = SopsFile::parse(format, text).map_err(fail)?;
    let opened = reread.decrypt(key).map_err(fail)?;
    if opened.plain != *plain {
        return Err(fail(FormatError::Shape(
            "the encrypted file did not read back as what was written; nothing was changed".into(),
        )));
    }
    Ok(())
}

/// Replaces `path` with `text` atomically (temp file, fsync, rename, fsync of the directory), keeping the
/// file's permissions (new files get 0644 less the umask's effect on group/other writes).
pub fn write(path: &Path, text: &str) -> Result<(), SecretsError> {
    // An earlier write of a file here that was killed midway left its temp file (ciphertext) behind.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::atomic::sweep_stale_temps(dir);
    }
    let mode = fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    crate::atomic::write_atomic_with(path, |file| {
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(text.as_bytes())
    })
    .map_err(|e| SecretsError::io("write", path, e))
}

/// Every secrets file under `dir` (recursively), sorted; hidden files and directories are skipped.
pub fn find(dir: &Path) -> Result<Vec<PathBuf>, SecretsError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(SecretsError::io("list", dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| SecretsError::io("list", &dir, e))?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') && name != ".env" {
                continue;
            }
            let path = entry.path();
            let kind = entry
                .file_type()
                .map_err(|e| SecretsError::io("list", &path, e))?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Where private plaintext goes for a moment (an edit, a task's secret files): `$XDG_RUNTIME_DIR`, else
/// `/dev/shm` (both memory-backed on Linux), else the system's temporary directory.
pub fn private_base() -> PathBuf {
    [
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        Some(PathBuf::from("/dev/shm")),
    ]
    .into_iter()
    .flatten()
    .find(|d| d.is_dir())
    .unwrap_or_else(std::env::temp_dir)
}

/// Prefixes of the private directories cairn makes for plaintext (`<prefix><pid>-<random>`): a task's secret
/// files, and the copy `cairn secrets edit` gives the editor.
pub const PRIVATE_DIR_PREFIXES: &[&str] = &["cairn-secrets-", "cairn-edit-"];

/// Wipes the private plaintext directories left by cairn processes that were killed before they could clean
/// up (their pid is no longer alive); returns those it could not remove.
pub fn sweep_stale_private_dirs() -> Vec<PathBuf> {
    let mut left = Vec::new();
    let bases = [
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        Some(PathBuf::from("/dev/shm")),
        Some(std::env::temp_dir()),
    ];
    for base in bases.into_iter().flatten() {
        let Ok(entries) = fs::read_dir(&base) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = PRIVATE_DIR_PREFIXES
                .iter()
                .find_map(|p| name.strip_prefix(p))
            else {
                continue;
            };
            let Some(pid) = rest
                .split('-')
                .next()
                .and_then(|p| p.parse::<libc::pid_t>().ok())
                .filter(|&p| p > 0)
            else {
                continue;
            };
            if !crate::atomic::process_alive(pid) {
                wipe_dir(&entry.path());
                if entry.path().exists() {
                    left.push(entry.path());
                }
            }
        }
    }
    left
}

/// Overwrites every file in `dir` with zeros (editors leave backups and swap files too), then removes it.
pub fn wipe_dir(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Ok(meta) = entry.metadata() {
            if let Ok(mut handle) = fs::OpenOptions::new().write(true).open(entry.path()) {
                let zeros = vec![0u8; meta.len() as usize];
                let _ = handle.write_all(&zeros).and_then(|()| handle.sync_all());
            }
        }
    }
    let _ = fs::remove_dir_all(dir);
}
