//! The cache key: a versioned, ordered struct of everything that can change a task's result, serialised and
//! hashed with BLAKE3. The same struct is stored with each entry so `cairn why` can say what changed.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Bumped whenever what goes into a key, or how, changes: old entries then simply miss.
pub const FORMAT_VERSION: u32 = 1;

/// Everything that goes into a task's cache key. Field order is the serialisation order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The Nix system string of the machine, e.g. `x86_64-linux`.
    pub platform: String,
    /// The task's name as written (`deploy:{env}`).
    pub task: String,
    /// Param values by name.
    pub params: BTreeMap<String, String>,
    /// Command lines after interpolation (`-- ARGS` included).
    pub commands: Vec<String>,
    /// The shell the lines run with.
    pub shell: Vec<String>,
    /// Working directory relative to tasks.toml.
    pub dir: String,
    /// The run's `-- ARGS`, when the task is a target.
    pub args: Vec<String>,
    /// Declared output globs.
    pub outputs: Vec<String>,
    /// Declared input globs.
    pub input_globs: Vec<String>,
    /// Digests of declared variables' values, by name (values themselves are never stored).
    pub env: BTreeMap<String, String>,
    /// Input files: relative path → content digest and executable bit.
    pub inputs: BTreeMap<String, FileDigest>,
    /// Dependencies: name → their key, or the digest of their outputs.
    pub deps: BTreeMap<String, String>,
}

/// A file's content digest and executable bit, written `x:<hex>` or `-:<hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileDigest {
    /// BLAKE3 of the content (of the link target's text, for a symlink).
    pub hash: [u8; 32],
    /// Whether any execute bit is set.
    pub executable: bool,
}

/// A cache key: BLAKE3 of a serialised [`Fingerprint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl Key {
    /// Parses 64 hex digits.
    pub fn parse(text: &str) -> Option<Key> {
        parse_hex(text).map(Key)
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Parses 64 hex digits into 32 bytes.
pub fn parse_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

impl Serialize for FileDigest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mode = if self.executable { 'x' } else { '-' };
        serializer.serialize_str(&format!("{mode}:{}", hex(&self.hash)))
    }
}

impl<'de> Deserialize<'de> for FileDigest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let (mode, digest) = text
            .split_once(':')
            .ok_or_else(|| serde::de::Error::custom("expected MODE:HEX"))?;
        Ok(FileDigest {
            hash: parse_hex(digest)
                .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))?,
            executable: mode == "x",
        })
    }
}

impl Fingerprint {
    /// The key: BLAKE3 of the canonical JSON (struct fields in order, maps sorted).
    pub fn key(&self) -> Key {
        let mut hasher = blake3::Hasher::new();
        serde_json::to_writer(&mut hasher, self).expect("a fingerprint always serialises");
        Key(*hasher.finalize().as_bytes())
    }

    /// The key of everything but the input files, which tells an incremental task whether its definition
    /// changed (then every file is "changed").
    pub fn definition_key(&self) -> Key {
        // Built field by field rather than cloned and cleared: the input map can hold tens of thousands of files.
        Fingerprint {
            version: self.version,
            platform: self.platform.clone(),
            task: self.task.clone(),
            params: self.params.clone(),
            commands: self.commands.clone(),
            shell: self.shell.clone(),
            dir: self.dir.clone(),
            args: self.args.clone(),
            outputs: self.outputs.clone(),
            input_globs: self.input_globs.clone(),
            env: self.env.clone(),
            inputs: BTreeMap::new(),
            deps: BTreeMap::new(),
        }
        .key()
    }

    /// What differs between `self` (the last success) and `now`, field by field.
    pub fn changes(&self, now: &Fingerprint) -> Vec<Change> {
        let mut changes = Vec::new();
        if self.version != now.version {
            changes.push(Change::Version);
        }
        if self.platform != now.platform {
            changes.push(Change::Platform {
                before: self.platform.clone(),
                now: now.platform.clone(),
            });
        }
        if self.task != now.task || self.commands != now.commands {
            changes.push(Change::Commands);
        }
        diff_maps(&self.params, &now.params, |name, _| {
            changes.push(Change::Param(name.to_owned()))
        });
        if self.shell != now.shell {
            changes.push(Change::Shell);
        }
        if self.dir != now.dir {
            changes.push(Change::Dir);
        }
        if self.args != now.args {
            changes.push(Change::Args);
        }
        if self.outputs != now.outputs {
            changes.push(Change::OutputGlobs);
        }
        if self.input_globs != now.input_globs {
            changes.push(Change::InputGlobs);
        }
        diff_maps(&self.env, &now.env, |name, _| {
            changes.push(Change::Env(name.to_owned()))
        });
        diff_maps(&self.inputs, &now.inputs, |path, how| {
            changes.push(match how {
                MapDiff::Added => Change::InputAdded(path.to_owned()),
                MapDiff::Removed => Change::InputRemoved(path.to_owned()),
                MapDiff::Changed => {
                    let (a, b) = (&self.inputs[path], &now.inputs[path]);
                    if a.hash == b.hash {
                        Change::InputMode(path.to_owned())
                    } else {
                        Change::InputContent(path.to_owned())
                    }
                }
            })
        });
        diff_maps(&self.deps, &now.deps, |name, _| {
            changes.push(Change::Dep(name.to_owned()))
        });
        changes
    }
}

enum MapDiff {
    Added,
    Removed,
    Changed,
}

fn diff_maps<V: PartialEq>(
    before: &BTreeMap<String, V>,
    now: &BTreeMap<String, V>,
    mut report: impl FnMut(&str, MapDiff),
) {
    for (name, value) in now {
        match before.get(name) {
            None => report(name, MapDiff::Added),
            Some(old) if old != value => report(name, MapDiff::Changed),
            _ => {}
        }
    }
    for name in before.keys() {
        if !now.contains_key(name) {
            report(name, MapDiff::Removed);
        }
    }
}

/// One reason a key differs from the last success's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// cairn's key format changed.
    Version,
    /// A different machine kind.
    Platform {
        /// Before.
        before: String,
        /// Now.
        now: String,
    },
    /// The command lines (or task) changed.
    Commands,
    /// A param's value.
    Param(String),
    /// The shell.
    Shell,
    /// The working directory.
    Dir,
    /// The `-- ARGS`.
    Args,
    /// The declared output globs.
    OutputGlobs,
    /// The declared input globs.
    InputGlobs,
    /// A declared variable's value (named, never shown).
    Env(String),
    /// A new input file.
    InputAdded(String),
    /// An input file that is gone.
    InputRemoved(String),
    /// An input file's content.
    InputContent(String),
    /// An input file's executable bit.
    InputMode(String),
    /// A dependency's key or outputs.
    Dep(String),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Version => write!(f, "cairn's cache format changed"),
            Change::Platform { before, now } => write!(f, "platform: was `{before}`, now `{now}`"),
            Change::Commands => write!(f, "command: the command lines changed"),
            Change::Param(name) => write!(f, "param `{name}` changed"),
            Change::Shell => write!(f, "shell changed"),
            Change::Dir => write!(f, "dir changed"),
            Change::Args => write!(f, "args: the `-- ARGS` changed"),
            Change::OutputGlobs => write!(f, "outputs: the declared output patterns changed"),
            Change::InputGlobs => write!(f, "inputs: the declared input patterns changed"),
            Change::Env(name) => write!(f, "env: the value of `{name}` changed"),
            Change::InputAdded(path) => write!(f, "input added: {path}"),
            Change::InputRemoved(path) => write!(f, "input removed: {path}"),
            Change::InputContent(path) => write!(f, "input changed: {path}"),
            Change::InputMode(path) => write!(f, "input executable bit changed: {path}"),
            Change::Dep(name) => write!(f, "dependency `{name}` changed"),
        }
    }
}

/// The Nix system string of this machine (`x86_64-linux`, `aarch64-darwin`, …).
pub fn platform() -> String {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    format!("{}-{os}", std::env::consts::ARCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Fingerprint {
        Fingerprint {
            version: FORMAT_VERSION,
            platform: "x86_64-linux".into(),
            task: "build".into(),
            params: BTreeMap::new(),
            commands: vec!["make".into()],
            shell: vec!["bash".into(), "-c".into()],
            dir: ".".into(),
            args: vec![],
            outputs: vec![],
            input_globs: vec!["src/**".into()],
            env: BTreeMap::new(),
            inputs: BTreeMap::new(),
            deps: BTreeMap::new(),
        }
    }

    #[test]
    fn digest_round_trips_through_json() {
        let digest = FileDigest {
            hash: [7; 32],
            executable: true,
        };
        let text = serde_json::to_string(&digest).expect("serialises");
        assert!(text.starts_with("\"x:0707"));
        assert_eq!(
            serde_json::from_str::<FileDigest>(&text).expect("parses"),
            digest
        );
    }

    #[test]
    fn changes_name_each_field() {
        let before = sample();
        let mut now = sample();
        now.params.insert("env".into(), "prod".into());
        now.inputs.insert(
            "a.nix".into(),
            FileDigest {
                hash: [1; 32],
                executable: false,
            },
        );
        now.env.insert("TOKEN".into(), "digest".into());
        let changes = before.changes(&now);
        assert!(changes.contains(&Change::Param("env".into())));
        assert!(changes.contains(&Change::InputAdded("a.nix".into())));
        assert!(changes.contains(&Change::Env("TOKEN".into())));
        assert!(before.changes(&before).is_empty());
    }

    proptest! {
        // BTreeMaps make the key independent of the order inputs were found in.
        #[test]
        fn key_is_independent_of_insertion_order(files in proptest::collection::btree_map("[a-z]{1,8}", any::<u8>(), 0..20)) {
            let mut forward = sample();
            let mut backward = sample();
            for (path, byte) in &files {
                forward.inputs.insert(path.clone(), FileDigest { hash: [*byte; 32], executable: false });
            }
            for (path, byte) in files.iter().rev() {
                backward.inputs.insert(path.clone(), FileDigest { hash: [*byte; 32], executable: false });
            }
            prop_assert_eq!(forward.key(), backward.key());
        }

        #[test]
        fn any_input_change_changes_the_key(files in proptest::collection::btree_map("[a-z]{1,8}", any::<u8>(), 1..20), flip in any::<prop::sample::Index>()) {
            let mut before = sample();
            for (path, byte) in &files {
                before.inputs.insert(path.clone(), FileDigest { hash: [*byte; 32], executable: false });
            }
            let mut after = before.clone();
            let path = flip.get(&files.keys().cloned().collect::<Vec<_>>()).clone();
            after.inputs.get_mut(&path).expect("present").executable = true;
            prop_assert_ne!(before.key(), after.key());
        }
    }
}
