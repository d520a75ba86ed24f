//! `.sops.yaml`: who each secrets file is encrypted to. Named keys (YAML anchors such as `&alex`) and
//! `creation_rules` whose `path_regex` is matched against the file's path relative to the policy's
//! directory; the first match wins and a file that matches none is an error (cairn adds no catch-all).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use miette::{NamedSource, SourceSpan};
use regex::Regex;

use super::error::SecretsError;
use super::file::Scope;
use super::keys::Recipient;
use super::tree::{ListItem, MapItem, Node};
use super::yaml;
use crate::config::SourceFile;

/// The policy file's name.
pub const FILE_NAME: &str = ".sops.yaml";

/// A loaded `.sops.yaml`.
#[derive(Debug)]
pub struct Policy {
    /// The file.
    pub path: PathBuf,
    /// Its directory: rules match paths relative to it.
    pub root: PathBuf,
    /// Anchored keys: `(name, recipient)`, in file order.
    pub keys: Vec<(String, String)>,
    /// `creation_rules`, in order.
    pub rules: Vec<Rule>,
    text: Arc<str>,
}

/// One creation rule.
#[derive(Debug)]
pub struct Rule {
    /// Its position in `creation_rules` (0-based).
    pub index: usize,
    /// `path_regex` as written; `None` matches every file.
    pub path_regex: Option<String>,
    regex: Option<Regex>,
    /// The recipients, as written.
    pub recipients: Vec<String>,
    /// Which values files under this rule encrypt.
    pub scope: Scope,
}

impl Rule {
    /// `rule 2 (^secrets/production/)`, for messages.
    pub fn describe(&self) -> String {
        match &self.path_regex {
            Some(regex) => format!("rule {} (`{regex}`)", self.index + 1),
            None => format!(
                "rule {} (no path_regex: matches everything)",
                self.index + 1
            ),
        }
    }

    /// The parsed recipients.
    pub fn parsed_recipients(&self) -> Vec<Recipient> {
        // Validated when the policy was loaded.
        self.recipients
            .iter()
            .filter_map(|r| Recipient::parse(r).ok())
            .collect()
    }
}

impl Policy {
    /// Finds `.sops.yaml` in `start` or the closest directory above it (as sops does), unless `SOPS_CONFIG`
    /// names one.
    pub fn discover(start: &Path) -> Result<Policy, SecretsError> {
        if let Some(path) = std::env::var_os("SOPS_CONFIG") {
            return Policy::load(Path::new(&path));
        }
        let found = start
            .ancestors()
            .map(|dir| dir.join(FILE_NAME))
            .find(|candidate| candidate.is_file());
        match found {
            Some(path) => Policy::load(&path),
            None => Err(SecretsError::Policy {
                message: format!(
                    "no {FILE_NAME} in `{}` or any directory above it",
                    start.display()
                ),
                src: None,
                span: None,
                help: Some("run `cairn secrets init` to create one with your key".into()),
            }),
        }
    }

    /// Reads and validates the policy at `path`.
    pub fn load(path: &Path) -> Result<Policy, SecretsError> {
        let text = std::fs::read_to_string(path).map_err(|e| SecretsError::io("read", path, e))?;
        let root = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Policy::parse(path, root, &text)
    }

    /// Validates `text` as a policy file at `path`.
    pub fn parse(path: &Path, root: PathBuf, text: &str) -> Result<Policy, SecretsError> {
        let source: SourceFile = NamedSource::new(path.display().to_string(), Arc::from(text));
        let parsed = yaml::parse(text).map_err(|e| SecretsError::Policy {
            message: format!("{}: {e}", path.display()),
            src: None,
            span: None,
            help: None,
        })?;
        let fail = |key: &str, message: String, help: Option<String>| {
            let span = parsed
                .spans
                .get(key)
                .map(|r| SourceSpan::from(r.start..r.end));
            SecretsError::Policy {
                message,
                src: span.map(|_| source.clone()),
                span,
                help,
            }
        };
        let mut keys = Vec::new();
        for (name, node) in &parsed.anchors {
            if let Node::Scalar(s) = node {
                keys.push((name.clone(), s.text.trim().to_string()));
            }
        }
        let mut rules = Vec::new();
        let rule_nodes = match super::tree::lookup(&parsed.document, "creation_rules") {
            Some(Node::List(items)) => items.clone(),
            Some(_) => return Err(fail("creation_rules", "`creation_rules` must be a list".into(), None)),
            None => {
                return Err(fail(
                    "",
                    format!("{} has no `creation_rules`", path.display()),
                    Some("add a rule: `creation_rules: [{path_regex: ^secrets/, key_groups: [{age: [*you]}]}]`".into()),
                ))
            }
        };
        let nodes = rule_nodes.iter().filter_map(|i| match i {
            ListItem::Node(n) => Some(n),
            ListItem::Comment(_) => None,
        });
        for (index, node) in nodes.enumerate() {
            let at = |field: &str| format!("creation_rules.{index}.{field}");
            let Node::Map(items) = node else {
                return Err(fail(
                    &at(""),
                    format!("creation rule {} is not a mapping", index + 1),
                    None,
                ));
            };
            let mut rule = Rule {
                index,
                path_regex: None,
                regex: None,
                recipients: Vec::new(),
                scope: Scope::default(),
            };
            let mut groups = 0;
            for item in items {
                let MapItem::Pair(key, value) = item else {
                    continue;
                };
                let text = scalar_text(value);
                match key.as_str() {
                    "path_regex" => {
                        let regex = text.ok_or_else(|| fail(&at(key), "`path_regex` must be text".into(), None))?;
                        rule.regex = Some(Regex::new(&regex).map_err(|e| {
                            fail(&at(key), format!("`path_regex` does not compile: {e}"), None)
                        })?);
                        rule.path_regex = Some(regex);
                    }
                    "age" => rule.recipients.extend(recipient_list(value)),
                    "key_groups" => {
                        let Node::List(list) = value else {
                            return Err(fail(&at(key), "`key_groups` must be a list".into(), None));
                        };
                        for (g, group) in list.iter().filter_map(|i| match i {
                            ListItem::Node(n) => Some(n),
                            ListItem::Comment(_) => None,
                        }).enumerate() {
                            groups += 1;
                            let Node::Map(entries) = group else { continue };
                            for entry in entries {
                                let MapItem::Pair(kind, keys) = entry else { continue };
                                match kind.as_str() {
                                    "age" => rule.recipients.extend(recipient_list(keys)),
                                    other => {
                                        return Err(fail(
                                            &format!("creation_rules.{index}.key_groups.{g}.{other}"),
                                            format!("creation rule {}: `{other}` keys are not supported; cairn encrypts to age recipients only", index + 1),
                                            None,
                                        ))
                                    }
                                }
                            }
                        }
                    }
                    "unencrypted_suffix" => rule.scope.unencrypted_suffix = text,
                    "encrypted_suffix" => rule.scope.encrypted_suffix = text,
                    "unencrypted_regex" => rule.scope.unencrypted_regex = text,
                    "encrypted_regex" => rule.scope.encrypted_regex = text,
                    "mac_only_encrypted" => rule.scope.mac_only_encrypted = text.as_deref() == Some("true"),
                    "shamir_threshold" => {}
                    "pgp" | "kms" | "gcp_kms" | "azure_keyvault" | "hc_vault_transit_uri" | "hckms" => {
                        return Err(fail(
                            &at(key),
                            format!("creation rule {}: `{key}` keys are not supported; cairn encrypts to age recipients only", index + 1),
                            None,
                        ))
                    }
                    "unencrypted_comment_regex" | "encrypted_comment_regex" => {
                        return Err(fail(&at(key), format!("`{key}` is not supported by cairn"), None))
                    }
                    _ => {}
                }
            }
            if groups > 1 {
                return Err(fail(
                    &at("key_groups"),
                    format!("creation rule {} has {groups} key groups (Shamir); cairn supports one group", index + 1),
                    Some("put every recipient in one group: `key_groups: [{age: [*a, *b]}]` (a second `- age:` line starts a second group)".into()),
                ));
            }
            for recipient in &rule.recipients {
                Recipient::parse(recipient).map_err(|e| {
                    fail(
                        &at("key_groups"),
                        format!("creation rule {}: {e}", index + 1),
                        None,
                    )
                })?;
            }
            if rule.recipients.is_empty() {
                return Err(fail(
                    &at(""),
                    format!("creation rule {} has no age recipients", index + 1),
                    Some("add `key_groups: [{age: [*name]}]`".into()),
                ));
            }
            if rule.scope == Scope::default() {
                rule.scope = Scope::sops_default();
            }
            rules.push(rule);
        }
        Ok(Policy {
            path: path.to_path_buf(),
            root,
            keys,
            rules,
            text: Arc::from(text),
        })
    }

    /// The file's text (for editing it).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// `file`'s path relative to the policy's directory, with `/` separators.
    pub fn relative(&self, file: &Path) -> String {
        let absolute = absolute(file);
        let root = absolute_dir(&self.root);
        let relative = absolute.strip_prefix(&root).unwrap_or(&absolute);
        relative
            .components()
            .filter_map(|c| match c {
                Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Every rule whose `path_regex` matches `file`.
    pub fn matching(&self, file: &Path) -> Vec<&Rule> {
        let relative = self.relative(file);
        self.rules
            .iter()
            .filter(|r| r.regex.as_ref().is_none_or(|re| re.is_match(&relative)))
            .collect()
    }

    /// The rule that applies to `file`: the first that matches.
    pub fn rule_for(&self, file: &Path) -> Result<&Rule, SecretsError> {
        self.matching(file)
            .into_iter()
            .next()
            .ok_or_else(|| SecretsError::NoRule {
                path: self.relative(file),
                config: self.path.clone(),
            })
    }

    /// The anchor name of a recipient, if it has one.
    pub fn name_of(&self, recipient: &str) -> Option<&str> {
        self.keys
            .iter()
            .find(|(_, r)| r == recipient)
            .map(|(n, _)| n.as_str())
    }

    /// `alex (age1…)` or just the recipient.
    pub fn label(&self, recipient: &str) -> String {
        match self.name_of(recipient) {
            Some(name) => format!("{name} ({})", short(recipient)),
            None => short(recipient),
        }
    }
}

/// A recipient shortened for display: `age1qwrzj4h9…ssreuu26`.
pub fn short(recipient: &str) -> String {
    if recipient.len() > 24 && recipient.is_ascii() {
        format!("{}…{}", &recipient[..12], &recipient[recipient.len() - 8..])
    } else {
        recipient.to_string()
    }
}

fn scalar_text(node: &Node) -> Option<String> {
    match node {
        Node::Scalar(s) => Some(s.text.clone()),
        _ => None,
    }
}

/// Recipients from a list, or from sops's comma-separated string form.
fn recipient_list(node: &Node) -> Vec<String> {
    match node {
        Node::Scalar(s) => s
            .text
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(String::from)
            .collect(),
        Node::List(items) => items
            .iter()
            .filter_map(|i| match i {
                ListItem::Node(Node::Scalar(s)) => Some(s.text.trim().to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        normalize(path)
    } else {
        normalize(&std::env::current_dir().unwrap_or_default().join(path))
    }
}

fn absolute_dir(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| absolute(dir))
}

/// Removes `.` and `..` without touching the filesystem, except that a directory that exists is resolved
/// (so symlinked checkouts compare equal).
fn normalize(path: &Path) -> PathBuf {
    let out = crate::paths::normalize_lexically(path);
    match (out.parent(), out.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or(out),
        _ => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "keys:\n  - &alex age1qwrzj4h9tsgtl525zf9x0g9lkl39pcyyyfeutdku57pkrjytxdssreuu26\n  - &host age14w7d5twfvhvnxugyptyrfu8eexjclmv2cjynl7p0arj5me8haptsp4ejqy\ncreation_rules:\n  - path_regex: ^secrets/production/.*\n    key_groups: [{age: [*alex, *host]}]\n  - path_regex: ^secrets/dev/\n    age: age1qwrzj4h9tsgtl525zf9x0g9lkl39pcyyyfeutdku57pkrjytxdssreuu26\n";

    fn policy() -> Policy {
        Policy::parse(
            Path::new("/repo/.sops.yaml"),
            PathBuf::from("/repo"),
            POLICY,
        )
        .unwrap()
    }

    #[test]
    fn rules_match_paths_relative_to_the_policy() {
        let policy = policy();
        let rule = policy
            .rule_for(Path::new("/repo/secrets/production/deploy.yaml"))
            .unwrap();
        assert_eq!(rule.index, 0);
        assert_eq!(rule.recipients.len(), 2);
        assert_eq!(policy.name_of(&rule.recipients[1]), Some("host"));
        assert_eq!(
            policy
                .rule_for(Path::new("/repo/secrets/dev/a.env"))
                .unwrap()
                .index,
            1
        );
        let error = policy
            .rule_for(Path::new("/repo/secrets/oops.yaml"))
            .unwrap_err();
        assert!(error.to_string().contains("secrets/oops.yaml"), "{error}");
    }

    #[test]
    fn foreign_keys_groups_and_bad_regexes_are_refused() {
        for (text, expected) in [
            ("creation_rules:\n  - path_regex: x\n    pgp: ABC\n", "age recipients only"),
            ("creation_rules:\n  - path_regex: x\n    key_groups:\n      - age: [age1qwrzj4h9tsgtl525zf9x0g9lkl39pcyyyfeutdku57pkrjytxdssreuu26]\n      - age: [age1qwrzj4h9tsgtl525zf9x0g9lkl39pcyyyfeutdku57pkrjytxdssreuu26]\n", "2 key groups"),
            ("creation_rules:\n  - path_regex: '('\n    age: age1qwrzj4h9tsgtl525zf9x0g9lkl39pcyyyfeutdku57pkrjytxdssreuu26\n", "does not compile"),
            ("creation_rules:\n  - path_regex: x\n    age: age1bad\n", "not a valid age recipient"),
        ] {
            let error = Policy::parse(Path::new("p"), PathBuf::from("."), text).unwrap_err();
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
