//! Secret scanning before a commit: what must never be committed in the clear. Three kinds of finding:
//!
//! - a value of the repository's own secrets, decrypted with the local identities (cairn knows the real
//!   values, which no generic scanner does), in plain text or base64;
//! - a file where `.sops.yaml` says secrets live that is not SOPS-encrypted;
//! - private key material by its documented format: age and SSH/PEM private keys, PGP private key blocks,
//!   AWS access key ids, GitHub, GitLab and Slack tokens, Google API keys.
//!
//! Findings name the file, the line and the kind, never the value. The values are held only in memory, as
//! an automaton over their bytes, and zeroed when the scan ends.

use std::path::{Path, PathBuf};

use aho_corasick::AhoCorasick;
use base64::Engine;
use zeroize::Zeroizing;

/// What was found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The file, relative to the repository root.
    pub path: String,
    /// 1-based line, 0 for the whole file.
    pub line: usize,
    /// What kind of secret (`decrypted-value`, `unencrypted-secrets-file`, `age-secret-key`, …).
    pub kind: String,
    /// What it is, in words, without the value.
    pub detail: String,
}

/// One file's content to scan, with its path relative to the root.
pub struct Candidate {
    /// Relative path with `/` separators.
    pub path: String,
    /// Its bytes (as staged, or as in the working tree).
    pub bytes: Vec<u8>,
}

/// Known values (from the decrypted secrets files), by where they come from.
#[derive(Default)]
pub struct KnownValues {
    patterns: Vec<Zeroizing<Vec<u8>>>,
    origins: Vec<String>,
}

/// Values shorter than this are too common to mean a leak (`true`, `8080`, `admin`).
const SHORTEST_VALUE: usize = 8;

impl KnownValues {
    /// Adds `value` (and its base64 forms) as coming from `origin` (`secrets/production/db.yaml#password`).
    pub fn add(&mut self, value: &str, origin: &str) {
        if value.len() < SHORTEST_VALUE {
            return;
        }
        let encodings = [
            value.as_bytes().to_vec(),
            base64::engine::general_purpose::STANDARD
                .encode(value)
                .into_bytes(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(value)
                .into_bytes(),
        ];
        for encoded in encodings {
            // A trailing `=` of padding differs with what follows in a file: match the part before it.
            let trimmed: Vec<u8> = encoded.iter().copied().take_while(|b| *b != b'=').collect();
            self.patterns.push(Zeroizing::new(trimmed));
            self.origins.push(origin.to_owned());
        }
    }

    /// How many values (with their encodings) are looked for.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// A file's kind of private key material, by its documented format.
struct Format {
    kind: &'static str,
    detail: &'static str,
    regex: regex::bytes::Regex,
}

fn formats() -> Vec<Format> {
    let make = |kind, detail, pattern: &str| Format {
        kind,
        detail,
        regex: regex::bytes::Regex::new(pattern).expect("the formats are valid expressions"),
    };
    vec![
        make(
            "age-secret-key",
            "an age secret key",
            r"AGE-SECRET-KEY-1[02-9ACDEFGHJKLMNPQRSTUVWXYZ]{58}",
        ),
        make(
            "private-key",
            "a PEM or OpenSSH private key",
            r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----",
        ),
        make(
            "pgp-private-key",
            "a PGP private key block",
            r"-----BEGIN PGP PRIVATE KEY BLOCK-----",
        ),
        make(
            "aws-access-key-id",
            "an AWS access key id",
            r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        ),
        make(
            "github-token",
            "a GitHub token",
            r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",
        ),
        make(
            "gitlab-token",
            "a GitLab personal access token",
            r"\bglpat-[A-Za-z0-9_-]{20}\b",
        ),
        make(
            "slack-token",
            "a Slack token",
            r"\bxox[baprs]-[A-Za-z0-9-]{10,}\b",
        ),
        make(
            "google-api-key",
            "a Google API key",
            r"\bAIza[0-9A-Za-z_-]{35}\b",
        ),
    ]
}

/// An allowed finding: a path (glob) and optionally a kind, with the reason it is allowed.
#[derive(Debug, Clone)]
pub struct Allowance {
    /// Files it covers.
    pub path: globset::GlobMatcher,
    /// The kind it covers, or every kind.
    pub kind: Option<String>,
}

/// The allow list, `.cairn-scan-allow.toml` at the root: `[[allow]] path = "docs/*.md", kind = "…",
/// reason = "…"`; a reason is required, so an exception always says why it is one.
pub fn read_allowances(root: &Path) -> Result<Vec<Allowance>, String> {
    let path = root.join(ALLOW_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {ALLOW_FILE}: {e}")),
    };
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| format!("{ALLOW_FILE} is not valid TOML: {}", e.message()))?;
    let mut out = Vec::new();
    for (i, item) in table
        .get("allow")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = |name: &str| item.get(name).and_then(toml::Value::as_str);
        let (Some(path), Some(reason)) = (field("path"), field("reason")) else {
            return Err(format!(
                "{ALLOW_FILE}: allowance {} needs `path` and `reason` (why this is not a leak)",
                i + 1
            ));
        };
        if reason.trim().is_empty() {
            return Err(format!(
                "{ALLOW_FILE}: allowance {} has an empty `reason`",
                i + 1
            ));
        }
        let glob = globset::Glob::new(path)
            .map_err(|e| format!("{ALLOW_FILE}: `{path}` is not a valid pattern: {e}"))?;
        out.push(Allowance {
            path: glob.compile_matcher(),
            kind: field("kind").map(str::to_owned),
        });
    }
    Ok(out)
}

/// The allow list's file name.
pub const ALLOW_FILE: &str = ".cairn-scan-allow.toml";

/// Scans `candidates` for known values and key material; `must_be_encrypted` says which paths `.sops.yaml`
/// covers (those must be SOPS files).
pub fn scan(
    candidates: &[Candidate],
    known: &KnownValues,
    must_be_encrypted: &dyn Fn(&str) -> bool,
    allowances: &[Allowance],
) -> Vec<Finding> {
    let automaton = (!known.is_empty())
        .then(|| AhoCorasick::new(known.patterns.iter().map(|p| p.as_slice())).ok())
        .flatten();
    let formats = formats();
    let mut findings = Vec::new();
    for candidate in candidates {
        let line_of = |offset: usize| {
            1 + candidate.bytes[..offset.min(candidate.bytes.len())]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
        };
        let mut found: Vec<Finding> = Vec::new();
        if must_be_encrypted(&candidate.path) && !is_sops_file(&candidate.path, &candidate.bytes) {
            found.push(Finding {
                path: candidate.path.clone(),
                line: 0,
                kind: "unencrypted-secrets-file".into(),
                detail: "`.sops.yaml` says secrets live here, and this file is not encrypted (`cairn secrets encrypt FILE`)".into(),
            });
        }
        // An encrypted file holds ciphertext only: looking for values or keys in it would only find its
        // own recipients' public keys.
        if !is_sops_file(&candidate.path, &candidate.bytes) {
            if let Some(automaton) = &automaton {
                for hit in automaton.find_overlapping_iter(&candidate.bytes) {
                    let origin = &known.origins[hit.pattern().as_usize()];
                    found.push(Finding {
                        path: candidate.path.clone(),
                        line: line_of(hit.start()),
                        kind: "decrypted-value".into(),
                        detail: format!("the value of {origin}, in the clear"),
                    });
                }
            }
            for format in &formats {
                for hit in format.regex.find_iter(&candidate.bytes) {
                    found.push(Finding {
                        path: candidate.path.clone(),
                        line: line_of(hit.start()),
                        kind: format.kind.into(),
                        detail: format.detail.into(),
                    });
                }
            }
        }
        found.retain(|f| {
            !allowances
                .iter()
                .any(|a| a.path.is_match(&f.path) && a.kind.as_deref().is_none_or(|k| k == f.kind))
        });
        found.sort_by(|a, b| (a.line, &a.kind).cmp(&(b.line, &b.kind)));
        found.dedup_by(|a, b| a.line == b.line && a.kind == b.kind && a.detail == b.detail);
        findings.extend(found);
    }
    findings
}

/// Whether `bytes`, at `path`, is a SOPS-encrypted file: it parses as one in the format its name says (a
/// file that merely mentions `sops:` and `ENC[…]`, a test's source say, is scanned like any other).
fn is_sops_file(path: &str, bytes: &[u8]) -> bool {
    let Ok(format) = super::file::Format::for_path(Path::new(path)) else {
        return false;
    };
    std::str::from_utf8(bytes)
        .ok()
        .is_some_and(|text| super::file::SopsFile::parse(format, text).is_ok())
}

/// The files to scan: what is staged for the next commit (`staged`), else `paths` (files, or directories
/// walked), else every file of the working tree that git does not ignore.
pub fn candidates(root: &Path, staged: bool, paths: &[PathBuf]) -> Result<Vec<Candidate>, String> {
    let git = |args: &[&str]| -> Result<Vec<u8>, String> {
        let output = std::process::Command::new("git")
            .args(args)
            .current_dir(root)
            .env("GIT_OPTIONAL_LOCKS", "0")
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "`git {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(output.stdout)
    };
    let split = |bytes: Vec<u8>| -> Vec<String> {
        bytes
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    };
    if staged {
        let names = split(git(&[
            "diff",
            "--cached",
            "--name-only",
            "-z",
            "--diff-filter=ACMR",
            "--relative",
        ])?);
        return names
            .into_iter()
            .map(|path| {
                let bytes = git(&["show", &format!(":./{path}")])?;
                Ok(Candidate { path, bytes })
            })
            .collect();
    }
    let mut files: Vec<String> = Vec::new();
    if paths.is_empty() {
        files = split(git(&[
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])?);
    } else {
        for path in paths {
            let full = root.join(path);
            if full.is_dir() {
                let mut stack = vec![full];
                while let Some(dir) = stack.pop() {
                    for entry in std::fs::read_dir(&dir)
                        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
                        .flatten()
                    {
                        let p = entry.path();
                        if p.file_name().is_some_and(|n| n == ".git") {
                            continue;
                        }
                        if p.is_dir() {
                            stack.push(p);
                        } else if let Ok(rel) = p.strip_prefix(root) {
                            files.push(rel.to_string_lossy().replace('\\', "/"));
                        }
                    }
                }
            } else {
                files.push(
                    full.strip_prefix(root)
                        .unwrap_or(path)
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    files.sort();
    files.dedup();
    Ok(files
        .into_iter()
        .filter_map(|path| {
            let bytes = std::fs::read(root.join(&path)).ok()?;
            Some(Candidate { path, bytes })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(path: &str, text: &str, known: &KnownValues) -> Vec<Finding> {
        let candidate = Candidate {
            path: path.into(),
            bytes: text.as_bytes().to_vec(),
        };
        scan(&[candidate], known, &|_| false, &[])
    }

    #[test]
    fn a_known_value_is_found_as_is_and_base64_encoded_and_a_short_one_is_not_looked_for() {
        let mut known = KnownValues::default();
        known.add("s3cret-value!", "secrets/a.yaml#token");
        known.add("short", "secrets/a.yaml#user");
        assert_eq!(
            known.len(),
            3,
            "three encodings of the long value, none of the short one"
        );
        let found = one("x.txt", "one\ntoken=s3cret-value!\n", &known);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].line, found[0].kind.as_str()),
            (2, "decrypted-value")
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode("s3cret-value!");
        assert_eq!(one("y.yaml", &format!("v: {encoded}\n"), &known).len(), 1);
        assert!(one("z.txt", "user=short\n", &known).is_empty());
    }

    #[test]
    fn key_formats_are_recognised_and_lookalikes_are_not() {
        let known = KnownValues::default();
        let age = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
        assert_eq!(one("k.txt", age, &known)[0].kind, "age-secret-key");
        assert_eq!(
            one("k.pem", "-----BEGIN RSA PRIVATE KEY-----\n", &known)[0].kind,
            "private-key"
        );
        assert_eq!(
            one("k.txt", "id AKIAIOSFODNN7EXAMPLE\n", &known)[0].kind,
            "aws-access-key-id"
        );
        assert!(one("k.txt", "-----BEGIN PUBLIC KEY-----\nage1abc\n", &known).is_empty());
    }
}
