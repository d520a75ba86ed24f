//! A SOPS file: its encrypted tree and `sops` metadata, and the operations on it (decrypt and verify,
//! encrypt, re-wrap the data key), byte-compatible with sops 3.11 for age recipients.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use regex::Regex;
use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroizing;

use super::cipher::{random, DataKey, Sealed};
use super::error::FormatError;
use super::keys::Recipient;
use super::tree::{Document, Kind, ListItem, MapItem, Node, Scalar};
use super::{dotenv, json, yaml};

/// The version cairn writes into `sops.version`: the sops release whose format it follows.
pub const SOPS_VERSION: &str = "3.11.0";

/// The three stores cairn reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.yaml`, `.yml`.
    Yaml,
    /// `.json`.
    Json,
    /// `.env`.
    Dotenv,
}

impl Format {
    /// The format a file's name implies, as sops decides it.
    pub fn for_path(path: &Path) -> Result<Format, FormatError> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match extension {
            "yaml" | "yml" => Ok(Format::Yaml),
            "json" => Ok(Format::Json),
            "env" => Ok(Format::Dotenv),
            _ if name == ".env" || name.ends_with(".env") => Ok(Format::Dotenv),
            _ => Err(FormatError::Unsupported(format!(
                "cannot tell the format of `{name}`: name it .yaml, .yml, .json or .env"
            ))),
        }
    }

    /// Parses plaintext (or the tree part of an encrypted file).
    pub fn parse(self, text: &str) -> Result<Document, FormatError> {
        match self {
            Format::Yaml => yaml::parse(text).map(|p| p.document),
            Format::Json => json::parse(text),
            Format::Dotenv => dotenv::parse(text),
        }
    }

    /// Writes a document.
    pub fn emit(self, document: &Document) -> Result<String, FormatError> {
        match self {
            Format::Yaml => Ok(yaml::emit(document)),
            Format::Json => json::emit(document),
            Format::Dotenv => dotenv::emit(document),
        }
    }
}

/// Which values are encrypted (sops's `*_suffix` / `*_regex` settings) and what the MAC covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Keys ending with this are left in plaintext (sops's default is `_unencrypted`).
    pub unencrypted_suffix: Option<String>,
    /// Only keys ending with this are encrypted.
    pub encrypted_suffix: Option<String>,
    /// Keys matching this are left in plaintext.
    pub unencrypted_regex: Option<String>,
    /// Only keys matching this are encrypted.
    pub encrypted_regex: Option<String>,
    /// The MAC covers only encrypted values.
    pub mac_only_encrypted: bool,
}

impl Scope {
    /// sops's default for new files.
    pub fn sops_default() -> Scope {
        Scope {
            unencrypted_suffix: Some("_unencrypted".into()),
            ..Scope::default()
        }
    }

    /// The string settings that are set, by their `sops` metadata names.
    fn settings(&self) -> Vec<(&'static str, &String)> {
        [
            ("unencrypted_suffix", &self.unencrypted_suffix),
            ("encrypted_suffix", &self.encrypted_suffix),
            ("unencrypted_regex", &self.unencrypted_regex),
            ("encrypted_regex", &self.encrypted_regex),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| (name, v)))
        .collect()
    }

    fn compile(&self) -> Result<CompiledScope<'_>, FormatError> {
        let compile = |r: &Option<String>| {
            r.as_deref()
                .map(|r| {
                    Regex::new(r).map_err(|e| {
                        FormatError::Unsupported(format!("the regex `{r}` does not compile: {e}"))
                    })
                })
                .transpose()
        };
        Ok(CompiledScope {
            scope: self,
            unencrypted: compile(&self.unencrypted_regex)?,
            encrypted: compile(&self.encrypted_regex)?,
        })
    }
}

struct CompiledScope<'a> {
    scope: &'a Scope,
    unencrypted: Option<Regex>,
    encrypted: Option<Regex>,
}

impl CompiledScope<'_> {
    /// Whether a value under `path` (mapping keys only) is encrypted, by sops's rules.
    fn encrypts(&self, path: &[String]) -> bool {
        let mut encrypted = true;
        if let Some(suffix) = non_empty(&self.scope.unencrypted_suffix) {
            if path.iter().any(|p| p.ends_with(suffix)) {
                encrypted = false;
            }
        }
        if let Some(suffix) = non_empty(&self.scope.encrypted_suffix) {
            encrypted = path.iter().any(|p| p.ends_with(suffix));
        }
        if let Some(regex) = &self.unencrypted {
            if path.iter().any(|p| regex.is_match(p)) {
                encrypted = false;
            }
        }
        if let Some(regex) = &self.encrypted {
            encrypted = path.iter().any(|p| regex.is_match(p));
        }
        encrypted
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// The `sops` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// `(recipient, armored wrapped data key)` for every age recipient.
    pub age: Vec<(String, String)>,
    /// RFC 3339 UTC, whole seconds; the MAC's associated data.
    pub lastmodified: String,
    /// The encrypted MAC.
    pub mac: String,
    /// Which values are encrypted.
    pub scope: Scope,
    /// The sops version that last wrote the file.
    pub version: String,
}

/// An encrypted file: the tree with `ENC[…]` leaves, and its metadata.
#[derive(Debug, Clone)]
pub struct SopsFile {
    /// Its store.
    pub format: Format,
    /// The tree without the `sops` key.
    pub tree: Document,
    /// The `sops` block.
    pub metadata: Metadata,
}

/// IVs of the values a file held, by `(path, type, plaintext)`, so re-encrypting an unchanged value gives
/// the same ciphertext (small diffs), as sops does.
#[derive(Default)]
pub struct IvStash {
    ivs: HashMap<StashKey, VecDeque<[u8; 32]>>,
}

/// A value's associated data, type tag and plaintext.
type StashKey = (String, &'static str, Vec<u8>);

impl Drop for IvStash {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for ((_, _, mut plain), _) in self.ivs.drain() {
            plain.zeroize();
        }
    }
}

/// A decrypted file.
pub struct Opened {
    /// The plaintext tree.
    pub plain: Document,
    /// The IVs of its values.
    pub stash: IvStash,
}

const TOP_LEVEL_KEY: &str = "sops";

impl SopsFile {
    /// Reads an encrypted file; a file without `sops` metadata is [`FormatError::NotEncrypted`].
    pub fn parse(format: Format, text: &str) -> Result<SopsFile, FormatError> {
        let mut tree = format.parse(text)?;
        let metadata_node = match format {
            Format::Dotenv => unflatten_dotenv(&mut tree)?,
            Format::Yaml | Format::Json => {
                let position = tree
                    .iter()
                    .position(|i| matches!(i, MapItem::Pair(k, _) if k == TOP_LEVEL_KEY));
                match position.map(|p| tree.remove(p)) {
                    Some(MapItem::Pair(_, node)) => Some(node),
                    _ => None,
                }
            }
        };
        let metadata = metadata_from_node(metadata_node.ok_or(FormatError::NotEncrypted)?)?;
        Ok(SopsFile {
            format,
            tree,
            metadata,
        })
    }

    /// Whether `text` is an encrypted file of `format` (it has `sops` metadata).
    pub fn is_encrypted(format: Format, text: &str) -> bool {
        match format {
            Format::Dotenv => text.lines().any(|l| l.starts_with("sops_mac=")),
            Format::Yaml | Format::Json => match format.parse(text) {
                Ok(tree) => tree
                    .iter()
                    .any(|i| matches!(i, MapItem::Pair(k, _) if k == TOP_LEVEL_KEY)),
                Err(_) => false,
            },
        }
    }

    /// The file's text.
    pub fn render(&self) -> Result<String, FormatError> {
        let mut tree = self.tree.clone();
        match self.format {
            Format::Dotenv => tree.extend(flatten_dotenv(&self.metadata)),
            Format::Yaml | Format::Json => tree.push(MapItem::Pair(
                TOP_LEVEL_KEY.into(),
                metadata_to_node(&self.metadata),
            )),
        }
        self.format.emit(&tree)
    }

    /// The recipients the data key is wrapped for.
    pub fn recipients(&self) -> Vec<&str> {
        self.metadata.age.iter().map(|(r, _)| r.as_str()).collect()
    }

    /// Decrypts every value with `key`, authenticating each against its path and the whole against the MAC.
    pub fn decrypt(&self, key: &DataKey) -> Result<Opened, FormatError> {
        let scope = self.metadata.scope.compile()?;
        let mut walk = Walk {
            key,
            scope: &scope,
            mac_only: self.metadata.scope.mac_only_encrypted,
            hash: Sha512::new(),
            stash: IvStash::default(),
            fresh_ivs: false,
        };
        if walk.mac_only {
            walk.hash.update(Sha256::digest(b"sops"));
        }
        let mut plain = self.tree.clone();
        walk.map(&mut plain, &mut Vec::new(), Direction::Open)?;
        let computed = hex_upper(&walk.hash.finalize());
        let stored = match Sealed::parse(&self.metadata.mac) {
            Some(sealed) => sealed?,
            None => {
                return Err(FormatError::BadValue(
                    "`sops.mac` is not an encrypted value".into(),
                ))
            }
        };
        let stored = stored
            .open(key, &self.metadata.lastmodified)
            .map_err(|_| FormatError::MacMismatch)?;
        if stored.as_slice() != computed.as_bytes() {
            return Err(FormatError::MacMismatch);
        }
        Ok(Opened {
            plain,
            stash: walk.stash,
        })
    }

    /// Encrypts `plain` under `key` for `recipients`, reusing the IVs in `stash` for unchanged values.
    pub fn encrypt(
        format: Format,
        plain: &Document,
        key: &DataKey,
        scope: Scope,
        recipients: &[Recipient],
        stash: Option<IvStash>,
    ) -> Result<SopsFile, FormatError> {
        if recipients.is_empty() {
            return Err(FormatError::Unsupported(
                "no recipients: the file would be unreadable".into(),
            ));
        }
        if plain
            .iter()
            .any(|i| matches!(i, MapItem::Pair(k, _) if k == TOP_LEVEL_KEY))
        {
            return Err(FormatError::AlreadyEncrypted);
        }
        let compiled = scope.compile()?;
        let mut walk = Walk {
            key,
            scope: &compiled,
            mac_only: scope.mac_only_encrypted,
            hash: Sha512::new(),
            stash: stash.unwrap_or_default(),
            fresh_ivs: true,
        };
        if walk.mac_only {
            walk.hash.update(Sha256::digest(b"sops"));
        }
        let mut tree = plain.clone();
        walk.map(&mut tree, &mut Vec::new(), Direction::Seal)?;
        let mac_hex = hex_upper(&walk.hash.finalize());
        let lastmodified = crate::time::now_rfc3339();
        let mac = Sealed::seal(key, mac_hex.as_bytes(), &lastmodified, "str", random()?)?.render();
        let age = wrap_all(key, recipients)?;
        Ok(SopsFile {
            format,
            tree,
            metadata: Metadata {
                age,
                lastmodified,
                mac,
                scope,
                version: SOPS_VERSION.into(),
            },
        })
    }

    /// Wraps the (unchanged) data key for a new set of recipients; values, MAC and timestamp stay as they
    /// are, like `sops updatekeys`.
    pub fn rewrap(&mut self, key: &DataKey, recipients: &[Recipient]) -> Result<(), FormatError> {
        if recipients.is_empty() {
            return Err(FormatError::Unsupported(
                "no recipients: the file would be unreadable".into(),
            ));
        }
        // Recipients that stay keep their stanza byte for byte: smaller diffs.
        let mut age = Vec::new();
        for recipient in recipients {
            match self.metadata.age.iter().find(|(r, _)| *r == recipient.text) {
                Some(existing) => age.push(existing.clone()),
                None => age.push((recipient.text.clone(), recipient.wrap(key)?)),
            }
        }
        self.metadata.age = age;
        Ok(())
    }
}

fn wrap_all(key: &DataKey, recipients: &[Recipient]) -> Result<Vec<(String, String)>, FormatError> {
    recipients
        .iter()
        .map(|r| Ok((r.text.clone(), r.wrap(key)?)))
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Open,
    Seal,
}

struct Walk<'a> {
    key: &'a DataKey,
    scope: &'a CompiledScope<'a>,
    mac_only: bool,
    hash: Sha512,
    stash: IvStash,
    fresh_ivs: bool,
}

impl Walk<'_> {
    fn map(
        &mut self,
        items: &mut [MapItem],
        path: &mut Vec<String>,
        direction: Direction,
    ) -> Result<(), FormatError> {
        for item in items {
            match item {
                MapItem::Comment(text) => self.comment(text, path, direction)?,
                MapItem::Pair(key, value) => {
                    path.push(key.clone());
                    self.node(value, path, direction)?;
                    path.pop();
                }
            }
        }
        Ok(())
    }

    fn node(
        &mut self,
        node: &mut Node,
        path: &mut Vec<String>,
        direction: Direction,
    ) -> Result<(), FormatError> {
        match node {
            Node::Null => Ok(()),
            Node::Map(items) => self.map(items, path, direction),
            Node::List(items) => {
                for item in items {
                    match item {
                        ListItem::Comment(text) => self.comment(text, path, direction)?,
                        ListItem::Node(inner) => self.node(inner, path, direction)?,
                    }
                }
                Ok(())
            }
            Node::Scalar(scalar) => match direction {
                Direction::Open => self.open(scalar, path),
                Direction::Seal => self.seal(scalar, path),
            },
        }
    }

    fn open(&mut self, scalar: &mut Scalar, path: &[String]) -> Result<(), FormatError> {
        let encrypted = self.scope.encrypts(path);
        if encrypted && !scalar.text.is_empty() {
            let aad = aad(path);
            let sealed = match (scalar.kind, Sealed::parse(&scalar.text)) {
                (Kind::Str, Some(sealed)) => sealed?,
                _ => {
                    return Err(FormatError::BadValue(format!(
                        "the value at `{}` should be encrypted but is plaintext",
                        path.join(".")
                    )))
                }
            };
            let plain = sealed
                .open(self.key, &aad)
                .map_err(|_| FormatError::Tampered {
                    path: path.join("."),
                })?;
            let kind = Kind::from_tag(&sealed.kind).ok_or_else(|| {
                FormatError::BadValue(format!("unknown value type `{}`", sealed.kind))
            })?;
            let text = String::from_utf8(plain.to_vec()).map_err(|_| {
                FormatError::BadValue(format!("the value at `{}` is not UTF-8", path.join(".")))
            })?;
            *scalar = Scalar::from_sops(kind, text);
            self.stash
                .ivs
                .entry((aad, kind.tag(), scalar.sops_bytes()))
                .or_default()
                .push_back(sealed.iv);
        }
        if !self.mac_only || encrypted {
            self.hash.update(scalar.sops_bytes());
        }
        Ok(())
    }

    fn seal(&mut self, scalar: &mut Scalar, path: &[String]) -> Result<(), FormatError> {
        let encrypted = self.scope.encrypts(path);
        let plain = Zeroizing::new(scalar.sops_bytes());
        if !self.mac_only || encrypted {
            self.hash.update(&plain[..]);
        }
        if encrypted && !plain.is_empty() {
            let aad = aad(path);
            let kind = match scalar.kind {
                Kind::Time | Kind::Bytes => Kind::Str,
                kind => kind,
            };
            let iv = self.iv_for(aad.clone(), kind.tag(), &plain)?;
            let sealed = Sealed::seal(self.key, &plain, &aad, kind.tag(), iv)?;
            *scalar = Scalar::string(sealed.render());
        }
        Ok(())
    }

    fn iv_for(
        &mut self,
        aad: String,
        kind: &'static str,
        plain: &[u8],
    ) -> Result<[u8; 32], FormatError> {
        let reused = self
            .stash
            .ivs
            .get_mut(&(aad, kind, plain.to_vec()))
            .and_then(VecDeque::pop_front);
        match reused {
            Some(iv) => Ok(iv),
            None if self.fresh_ivs => random(),
            None => random(),
        }
    }

    fn comment(
        &mut self,
        text: &mut String,
        path: &[String],
        direction: Direction,
    ) -> Result<(), FormatError> {
        if !self.scope.encrypts(path) || text.is_empty() {
            return Ok(());
        }
        let aad = aad(path);
        match direction {
            // A comment that does not open was written in plaintext (older sops); it is kept as it is.
            Direction::Open => {
                if let Some(Ok(sealed)) = Sealed::parse(text) {
                    if let Ok(plain) = sealed.open(self.key, &aad) {
                        if let Ok(plain) = String::from_utf8(plain.to_vec()) {
                            self.stash
                                .ivs
                                .entry((aad, "comment", plain.as_bytes().to_vec()))
                                .or_default()
                                .push_back(sealed.iv);
                            *text = plain;
                        }
                    }
                }
            }
            Direction::Seal => {
                let iv = self.iv_for(aad.clone(), "comment", text.as_bytes())?;
                *text = Sealed::seal(self.key, text.as_bytes(), &aad, "comment", iv)?.render();
            }
        }
        Ok(())
    }
}

/// The associated data of a value: its mapping keys joined with `:`, plus a trailing `:`.
fn aad(path: &[String]) -> String {
    let mut out = path.join(":");
    out.push(':');
    out
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn metadata_from_node(node: Node) -> Result<Metadata, FormatError> {
    let Node::Map(items) = node else {
        return Err(FormatError::BadValue("`sops` is not a mapping".into()));
    };
    let mut age = Vec::new();
    let (mut lastmodified, mut mac, mut version) = (None, None, String::new());
    let mut scope = Scope::default();
    let text = |node: &Node| match node {
        Node::Scalar(s) => Some(s.text.clone()),
        _ => None,
    };
    let mut groups = 0;
    for item in items {
        let MapItem::Pair(key, value) = item else {
            continue;
        };
        let present = !matches!(&value, Node::Null)
            && !matches!(&value, Node::List(l) if l.is_empty())
            && !matches!(&value, Node::Scalar(s) if s.text.is_empty());
        match key.as_str() {
            "age" => age.extend(age_stanzas(&value)?),
            "lastmodified" => lastmodified = text(&value),
            "mac" => mac = text(&value),
            "version" => version = text(&value).unwrap_or_default(),
            "unencrypted_suffix" => scope.unencrypted_suffix = text(&value),
            "encrypted_suffix" => scope.encrypted_suffix = text(&value),
            "unencrypted_regex" => scope.unencrypted_regex = text(&value),
            "encrypted_regex" => scope.encrypted_regex = text(&value),
            "mac_only_encrypted" => scope.mac_only_encrypted = text(&value).as_deref() == Some("true"),
            "shamir_threshold" => {}
            "key_groups" if present => {
                let Node::List(list) = &value else {
                    return Err(FormatError::BadValue("`sops.key_groups` is not a list".into()));
                };
                for group in list {
                    let ListItem::Node(Node::Map(group)) = group else { continue };
                    groups += 1;
                    for entry in group {
                        if let MapItem::Pair(kind, keys) = entry {
                            match kind.as_str() {
                                "age" => age.extend(age_stanzas(keys)?),
                                other if !matches!(keys, Node::Null) => return Err(foreign(other)),
                                _ => {}
                            }
                        }
                    }
                }
            }
            "pgp" | "kms" | "gcp_kms" | "azure_kv" | "hc_vault" | "hckms" if present => {
                return Err(foreign(&key))
            }
            "unencrypted_comment_regex" | "encrypted_comment_regex" if present => {
                return Err(FormatError::Unsupported(format!(
                    "`sops.{key}` is not supported by cairn; use `unencrypted_suffix` or a regex on keys"
                )))
            }
            _ => {}
        }
    }
    if groups > 1 {
        return Err(FormatError::Unsupported(format!(
            "this file splits its data key across {groups} key groups (Shamir); cairn supports one group of age recipients"
        )));
    }
    if age.is_empty() {
        return Err(FormatError::Unsupported(
            "this file has no age recipients; cairn only opens files encrypted to age (or SSH) keys".into(),
        ));
    }
    Ok(Metadata {
        age,
        lastmodified: lastmodified
            .ok_or_else(|| FormatError::BadValue("`sops.lastmodified` is missing".into()))?,
        mac: mac.ok_or_else(|| FormatError::BadValue("`sops.mac` is missing".into()))?,
        scope,
        version,
    })
}

fn foreign(kind: &str) -> FormatError {
    FormatError::Unsupported(format!(
        "this file is also encrypted with `{kind}` keys; cairn supports age recipients only (re-encrypt it to age with `sops`, or remove those keys)"
    ))
}

fn age_stanzas(node: &Node) -> Result<Vec<(String, String)>, FormatError> {
    let Node::List(items) = node else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in items {
        let ListItem::Node(Node::Map(entry)) = item else {
            continue;
        };
        let field = |name: &str| {
            entry.iter().find_map(|i| match i {
                MapItem::Pair(k, Node::Scalar(s)) if k == name => Some(s.text.clone()),
                _ => None,
            })
        };
        match (field("recipient"), field("enc")) {
            (Some(recipient), Some(enc)) => out.push((recipient, enc)),
            _ => {
                return Err(FormatError::BadValue(
                    "an age entry without `recipient` and `enc`".into(),
                ))
            }
        }
    }
    Ok(out)
}

fn metadata_to_node(metadata: &Metadata) -> Node {
    let string = |s: &str| Node::Scalar(Scalar::string(s));
    let age = metadata
        .age
        .iter()
        .map(|(recipient, enc)| {
            ListItem::Node(Node::Map(vec![
                MapItem::Pair("recipient".into(), string(recipient)),
                MapItem::Pair("enc".into(), string(enc)),
            ]))
        })
        .collect();
    let mut items = vec![
        MapItem::Pair("age".into(), Node::List(age)),
        MapItem::Pair("lastmodified".into(), string(&metadata.lastmodified)),
        MapItem::Pair("mac".into(), string(&metadata.mac)),
    ];
    let scope = &metadata.scope;
    for (name, value) in scope.settings() {
        items.push(MapItem::Pair(name.into(), string(value)));
    }
    if scope.mac_only_encrypted {
        items.push(MapItem::Pair(
            "mac_only_encrypted".into(),
            Node::Scalar(Scalar {
                kind: Kind::Bool,
                text: "true".into(),
            }),
        ));
    }
    items.push(MapItem::Pair("version".into(), string(&metadata.version)));
    Node::Map(items)
}

const DOTENV_PREFIX: &str = "sops_";

/// sops flattens its metadata into `sops_…` lines in dotenv files (`sops_age__list_0__map_enc=…`).
fn flatten_dotenv(metadata: &Metadata) -> Vec<MapItem> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (i, (recipient, enc)) in metadata.age.iter().enumerate() {
        pairs.push((format!("age__list_{i}__map_enc"), enc.clone()));
        pairs.push((format!("age__list_{i}__map_recipient"), recipient.clone()));
    }
    pairs.push(("lastmodified".into(), metadata.lastmodified.clone()));
    pairs.push(("mac".into(), metadata.mac.clone()));
    let scope = &metadata.scope;
    for (name, value) in scope.settings() {
        pairs.push((name.into(), value.clone()));
    }
    if scope.mac_only_encrypted {
        pairs.push(("mac_only_encrypted".into(), "true".into()));
    }
    pairs.push(("version".into(), metadata.version.clone()));
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| {
            MapItem::Pair(
                format!("{DOTENV_PREFIX}{k}"),
                Node::Scalar(Scalar::string(v)),
            )
        })
        .collect()
}

fn unflatten_dotenv(tree: &mut Document) -> Result<Option<Node>, FormatError> {
    let mut flat: Vec<(String, Node)> = Vec::new();
    tree.retain(|item| match item {
        MapItem::Pair(k, v) if k.starts_with(DOTENV_PREFIX) => {
            flat.push((k[DOTENV_PREFIX.len()..].to_string(), v.clone()));
            false
        }
        _ => true,
    });
    if flat.is_empty() {
        return Ok(None);
    }
    let mut items: Vec<MapItem> = Vec::new();
    let mut age: Vec<(Option<String>, Option<String>)> = Vec::new();
    // Each recipient takes at least one line, so no index can reach this: a larger one would only make the
    // list below allocate what the file names (found by fuzzing: `sops_age__list_9223372036854775803__…`).
    let lines = flat.len();
    for (key, value) in flat {
        if let Some(rest) = key.strip_prefix("age__list_") {
            let (index, field) = rest.split_once("__map_").ok_or_else(|| {
                FormatError::BadValue(format!("unexpected metadata line `sops_{key}`"))
            })?;
            let index: usize = index.parse().map_err(|_| {
                FormatError::BadValue(format!("unexpected metadata line `sops_{key}`"))
            })?;
            if index >= lines {
                return Err(FormatError::BadValue(format!(
                    "`sops_{key}` names recipient {index}, but the file has only {lines} metadata lines"
                )));
            }
            if age.len() <= index {
                age.resize(index + 1, (None, None));
            }
            let text = match value {
                Node::Scalar(mut s) => Some(std::mem::take(&mut s.text)),
                _ => None,
            };
            match field {
                "recipient" => age[index].0 = text,
                "enc" => age[index].1 = text,
                _ => {}
            }
        } else if key.contains("__") {
            let kind = key.split("__").next().unwrap_or("");
            return Err(match kind {
                "key_groups" => FormatError::Unsupported(
                    "this file uses key groups; cairn supports one group of age recipients".into(),
                ),
                other => foreign(other),
            });
        } else {
            items.push(MapItem::Pair(key, value));
        }
    }
    let stanzas = age
        .into_iter()
        .map(|(recipient, enc)| {
            let field = |name: &str, v: Option<String>| {
                MapItem::Pair(
                    name.into(),
                    Node::Scalar(Scalar::string(v.unwrap_or_default())),
                )
            };
            ListItem::Node(Node::Map(vec![
                field("recipient", recipient),
                field("enc", enc),
            ]))
        })
        .collect();
    items.push(MapItem::Pair("age".into(), Node::List(stanzas)));
    Ok(Some(Node::Map(items)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_follows_sops_rules() {
        let scope = Scope::sops_default();
        let compiled = scope.compile().unwrap();
        assert!(compiled.encrypts(&["db".into(), "password".into()]));
        assert!(!compiled.encrypts(&["host_unencrypted".into(), "x".into()]));
        let only = Scope {
            encrypted_regex: Some("^(data|stringData)$".into()),
            ..Scope::default()
        };
        let compiled = only.compile().unwrap();
        assert!(compiled.encrypts(&["data".into(), "x".into()]));
        assert!(!compiled.encrypts(&["metadata".into()]));
    }
}

#[cfg(test)]
mod vector_tests {
    use super::*;
    use crate::secrets::keys::{identities_from_text, Keyring};
    use crate::secrets::tree::lookup;

    fn vectors() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/sops")
    }

    fn ring(name: &str) -> Keyring {
        let text = std::fs::read_to_string(vectors().join("keys").join(name)).unwrap();
        Keyring {
            identities: identities_from_text(&text, name).unwrap(),
            tried: vec![],
        }
    }

    fn open(relative: &str, key: &str) -> Result<Document, FormatError> {
        let path = vectors().join(relative);
        let file = SopsFile::parse(
            Format::for_path(&path)?,
            &std::fs::read_to_string(&path).unwrap(),
        )?;
        let ring = ring(key);
        let (data_key, _) = ring.unwrap(&file.metadata.age).ok_or(FormatError::Crypto)?;
        file.decrypt(&data_key).map(|o| o.plain)
    }

    #[test]
    fn sops_written_files_decrypt_to_their_plaintext() {
        for (enc, plain) in [
            ("enc/production/deploy.yaml", "plain/deploy.yaml"),
            ("enc/alex-only/deploy.yaml", "plain/deploy.yaml"),
            ("enc/production/app.json", "plain/app.json"),
            ("enc/production/app.env", "plain/app.env"),
            ("enc/suffix/suffix.yaml", "plain/suffix.yaml"),
        ] {
            let opened = open(enc, "alex.txt").unwrap_or_else(|e| panic!("{enc}: {e}"));
            let path = vectors().join(plain);
            let expected = Format::for_path(&path)
                .unwrap()
                .parse(&std::fs::read_to_string(&path).unwrap())
                .unwrap();
            assert_eq!(opened, expected, "{enc}");
        }
        assert!(open("enc/production/deploy.yaml", "host.txt").is_ok());
        let doc = open("enc/production/deploy.yaml", "alex.txt").unwrap();
        assert_eq!(
            lookup(&doc, "db.password"),
            Some(&Node::Scalar(Scalar::string(
                "p@ss w0rd: with 'quotes' and \"dq\""
            )))
        );
    }

    #[test]
    fn tampered_and_foreign_files_are_refused() {
        let error = open("enc/tampered-deploy.yaml", "alex.txt").unwrap_err();
        assert!(
            matches!(error, FormatError::Tampered { ref path } if path == "api_token"),
            "{error}"
        );
        assert!(open("enc/production/deploy.yaml", "outsider.txt").is_err());
    }

    #[test]
    fn a_dotenv_recipient_index_beyond_the_file_is_refused_not_allocated() {
        // Found by the sops_file fuzz target: the index was used to size a list (capacity overflow).
        let text = "DB_PASSWORD=ENC[AES256_GCM,data:yA=,iv:x,tag:1jQT+Lg==,type:str]\nsops_age__list_9223372036854775803__map_enc=x\nsops_version=3.11.0\n";
        let error = SopsFile::parse(Format::Dotenv, text).expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("names recipient 9223372036854775803"),
            "{error}"
        );
        let text = "A=1\nsops_age__list_100000000__map_recipient=age1x\nsops_version=3.11.0\n";
        assert!(SopsFile::parse(Format::Dotenv, text).is_err());
    }
}
