//! age recipients and identities: parsing them, finding the user's identities where sops looks, and
//! wrapping a file's data key for each recipient as an armored age file (one per `sops.age` entry).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use zeroize::Zeroizing;

use super::cipher::{DataKey, KEY_LEN};
use super::error::FormatError;

/// A recipient a data key can be wrapped for: an `age1…` key or an `ssh-ed25519`/`ssh-rsa` public key.
#[derive(Clone)]
pub struct Recipient {
    /// The recipient as written (what `sops.age[].recipient` holds).
    pub text: String,
    inner: RecipientKind,
}

#[derive(Clone)]
enum RecipientKind {
    X25519(age::x25519::Recipient),
    Ssh(age::ssh::Recipient),
}

impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Recipient {
    /// Parses `age1…` or an SSH public key line.
    pub fn parse(text: &str) -> Result<Recipient, String> {
        let text = text.trim();
        let inner = if text.starts_with("age1") {
            RecipientKind::X25519(
                age::x25519::Recipient::from_str(text)
                    .map_err(|e| format!("`{text}` is not a valid age recipient: {e}"))?,
            )
        } else if text.starts_with("ssh-") {
            RecipientKind::Ssh(age::ssh::Recipient::from_str(text).map_err(|_| {
                format!("`{text}` is not a supported SSH public key (ssh-ed25519 or ssh-rsa)")
            })?)
        } else {
            return Err(format!(
                "`{text}` is neither an age recipient (`age1…`) nor an SSH public key (`ssh-ed25519 …`)"
            ));
        };
        Ok(Recipient {
            text: text.to_string(),
            inner,
        })
    }

    /// Wraps `key` for this recipient as an armored age file, as sops stores it.
    pub fn wrap(&self, key: &DataKey) -> Result<String, FormatError> {
        let recipient: &dyn age::Recipient = match &self.inner {
            RecipientKind::X25519(r) => r,
            RecipientKind::Ssh(r) => r,
        };
        let age_error = |e: &dyn std::fmt::Display| FormatError::Age(e.to_string());
        let encryptor = age::Encryptor::with_recipients(std::iter::once(recipient))
            .map_err(|e| age_error(&e))?;
        let mut out = Vec::new();
        let armored =
            ArmoredWriter::wrap_output(&mut out, Format::AsciiArmor).map_err(|e| age_error(&e))?;
        let mut writer = encryptor.wrap_output(armored).map_err(|e| age_error(&e))?;
        writer.write_all(&key[..]).map_err(|e| age_error(&e))?;
        writer
            .finish()
            .and_then(|armor| armor.finish())
            .map_err(|e| age_error(&e))?;
        String::from_utf8(out).map_err(|e| age_error(&e))
    }
}

/// One identity cairn can decrypt with, and where it came from.
pub struct Identity {
    /// Where it was found, for messages: `SOPS_AGE_KEY_FILE (/home/alex/keys.txt)`.
    pub source: String,
    /// Its public key, when it is an age key (SSH keys show their file instead).
    pub public: Option<String>,
    inner: Box<dyn age::Identity + Send + Sync>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.source)
    }
}

impl Identity {
    /// A short description: the public key when known, else the source.
    pub fn describe(&self) -> String {
        match &self.public {
            Some(public) => format!("{public} (from {})", self.source),
            None => self.source.clone(),
        }
    }

    /// An identity from an `AGE-SECRET-KEY-1…` string.
    pub fn from_age_secret(secret: &str, source: String) -> Result<Identity, String> {
        let identity = age::x25519::Identity::from_str(secret.trim())
            .map_err(|_| format!("{source}: not a valid AGE-SECRET-KEY"))?;
        Ok(Identity {
            source,
            public: Some(identity.to_public().to_string()),
            inner: Box::new(identity),
        })
    }
}

/// Identities found in a keys file (age-keygen output, several keys allowed) or an SSH private key.
pub fn identities_from_text(text: &str, source: &str) -> Result<Vec<Identity>, String> {
    if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----")
        || text.contains("-----BEGIN RSA PRIVATE KEY-----")
    {
        let identity = age::ssh::Identity::from_buffer(text.as_bytes(), Some(source.to_string()))
            .map_err(|e| format!("{source}: {e}"))?;
        return match identity {
            age::ssh::Identity::Unencrypted(_) => Ok(vec![Identity {
                source: source.to_string(),
                public: None,
                inner: Box::new(identity),
            }]),
            age::ssh::Identity::Encrypted(_) => Err(format!(
                "{source}: passphrase-protected SSH keys are not supported; make an age key with `cairn secrets init` or convert this one with ssh-to-age"
            )),
            age::ssh::Identity::Unsupported(_) => {
                Err(format!("{source}: this kind of SSH key cannot decrypt age files"))
            }
        };
    }
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !line.starts_with("AGE-SECRET-KEY-") {
            return Err(format!(
                "{source}:{}: expected `AGE-SECRET-KEY-1…` or a `#` comment",
                number + 1
            ));
        }
        found.push(Identity::from_age_secret(
            line,
            format!("{source}:{}", number + 1),
        )?);
    }
    if found.is_empty() {
        return Err(format!("{source}: no AGE-SECRET-KEY in the file"));
    }
    Ok(found)
}

/// Where identities were looked for, and what was found.
#[derive(Debug, Default)]
pub struct Keyring {
    /// Usable identities, in the order they are tried.
    pub identities: Vec<Identity>,
    /// Every place looked at, with what happened there (for "no identity" errors and `doctor`).
    pub tried: Vec<String>,
}

impl Keyring {
    /// Finds identities as sops does (`SOPS_AGE_KEY_FILE`, `SOPS_AGE_KEY`, `SOPS_AGE_SSH_PRIVATE_KEY_FILE`,
    /// the user's keys.txt, `~/.ssh/id_ed25519`), after the `--identity` files given.
    pub fn discover(explicit: &[PathBuf]) -> Keyring {
        let mut ring = Keyring::default();
        for path in explicit {
            ring.load_file(path, &format!("--identity {}", path.display()), true);
        }
        if let Some(path) = std::env::var_os("SOPS_AGE_KEY_FILE") {
            let path = PathBuf::from(path);
            ring.load_file(
                &path,
                &format!("SOPS_AGE_KEY_FILE ({})", path.display()),
                true,
            );
        }
        if let Ok(keys) = std::env::var("SOPS_AGE_KEY") {
            match identities_from_text(&keys, "SOPS_AGE_KEY") {
                Ok(mut ids) => {
                    ring.tried
                        .push(format!("SOPS_AGE_KEY: {} key(s)", ids.len()));
                    ring.identities.append(&mut ids);
                }
                Err(e) => ring.tried.push(e),
            }
        }
        if let Some(path) = std::env::var_os("SOPS_AGE_SSH_PRIVATE_KEY_FILE") {
            let path = PathBuf::from(path);
            ring.load_file(
                &path,
                &format!("SOPS_AGE_SSH_PRIVATE_KEY_FILE ({})", path.display()),
                true,
            );
        }
        for path in default_key_files() {
            ring.load_file(&path, &path.display().to_string(), false);
        }
        if let Some(home) = std::env::var_os("HOME") {
            let ssh = Path::new(&home).join(".ssh/id_ed25519");
            ring.load_file(&ssh, &ssh.display().to_string(), false);
        }
        ring
    }

    fn load_file(&mut self, path: &Path, source: &str, required: bool) {
        match std::fs::read_to_string(path) {
            Ok(text) => match identities_from_text(&text, source) {
                Ok(mut ids) => {
                    self.tried.push(format!("{source}: {} key(s)", ids.len()));
                    self.identities.append(&mut ids);
                }
                Err(e) => self.tried.push(e),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                self.tried.push(format!("{source}: not found"));
            }
            Err(e) => self.tried.push(format!("{source}: {e}")),
        }
    }

    /// Unwraps a data key from any stanza with any identity; says which identity did it.
    pub fn unwrap(&self, stanzas: &[(String, String)]) -> Option<(DataKey, &Identity)> {
        for identity in &self.identities {
            for (_, enc) in stanzas {
                if let Some(key) = unwrap_with(enc, identity.inner.as_ref()) {
                    return Some((key, identity));
                }
            }
        }
        None
    }
}

fn unwrap_with(armored: &str, identity: &dyn age::Identity) -> Option<DataKey> {
    let decryptor = age::Decryptor::new(ArmoredReader::new(armored.as_bytes())).ok()?;
    let mut reader = decryptor.decrypt(std::iter::once(identity)).ok()?;
    let mut plain = Zeroizing::new(Vec::with_capacity(KEY_LEN));
    reader.read_to_end(&mut plain).ok()?;
    let key: [u8; KEY_LEN] = plain.as_slice().try_into().ok()?;
    Some(Zeroizing::new(key))
}

/// The user's keys.txt where sops looks: `$XDG_CONFIG_HOME/sops/age/keys.txt`, else
/// `~/.config/sops/age/keys.txt`, and on macOS also `~/Library/Application Support/sops/age/keys.txt`.
pub fn default_key_files() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(config) => paths.push(PathBuf::from(config).join("sops/age/keys.txt")),
        None => {
            if let Some(home) = &home {
                paths.push(home.join(".config/sops/age/keys.txt"));
            }
        }
    }
    if cfg!(target_os = "macos") {
        if let Some(home) = &home {
            paths.push(home.join("Library/Application Support/sops/age/keys.txt"));
        }
    }
    paths
}

/// A fresh age identity in age-keygen's file format, and its public key.
pub fn generate() -> (Zeroizing<String>, String) {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let public = identity.to_public().to_string();
    let secret = identity.to_string();
    (Zeroizing::new(secret.expose_secret().to_string()), public)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_key_opens_only_for_its_recipient() {
        let (secret, public) = generate();
        let (other, _) = generate();
        let key: DataKey = Zeroizing::new([9u8; 32]);
        let armored = Recipient::parse(&public).unwrap().wrap(&key).unwrap();
        assert!(armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        let ring = Keyring {
            identities: identities_from_text(&secret, "test").unwrap(),
            tried: vec![],
        };
        let stanzas = vec![(public.clone(), armored.clone())];
        assert_eq!(ring.unwrap(&stanzas).map(|(k, _)| *k), Some([9u8; 32]));
        let outsider = Keyring {
            identities: identities_from_text(&other, "other").unwrap(),
            tried: vec![],
        };
        assert!(outsider.unwrap(&stanzas).is_none());
    }

    #[test]
    fn bad_recipients_and_key_files_say_what_is_wrong() {
        assert!(Recipient::parse("age1nope")
            .unwrap_err()
            .contains("not a valid age recipient"));
        assert!(Recipient::parse("pgp:ABC").unwrap_err().contains("neither"));
        assert!(identities_from_text("# c\nnot a key\n", "f")
            .unwrap_err()
            .contains("f:2"));
    }
}
