//! Lists files below a directory in parallel, honouring `.gitignore`, and stats each one relative to its open
//! directory: on a large tree a cache hit is mostly this listing, so it is done in one pass with the cheapest
//! `stat` there is (a one-component `fstatat`, rather than resolving the whole path again).

use std::fs::{self, Metadata};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;

/// The ignore rules in force in one directory: its own `.gitignore`, then its parents'.
#[derive(Clone, Default)]
struct Rules {
    chain: Vec<Arc<Gitignore>>,
}

impl Rules {
    fn with_dir(&self, dir: &Path, is_root: bool) -> Rules {
        let mut builder = GitignoreBuilder::new(dir);
        let mut any = false;
        let candidates: &[&str] = if is_root {
            &[".gitignore", ".git/info/exclude"]
        } else {
            &[".gitignore"]
        };
        for name in candidates {
            let file = dir.join(name);
            if file.is_file() && builder.add(&file).is_none() {
                any = true;
            }
        }
        let mut chain = self.chain.clone();
        if any {
            if let Ok(rules) = builder.build() {
                chain.push(Arc::new(rules));
            }
        }
        Rules { chain }
    }

    /// Whether `path` is ignored: the innermost file with an opinion decides, as in git.
    fn ignores(&self, path: &Path, is_dir: bool) -> bool {
        for rules in self.chain.iter().rev() {
            match rules.matched(path, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        false
    }
}

/// What the walk calls: `file(relative_path, metadata)` for every file and symlink, and `not_utf8(relative_path,
/// is_dir)` for every entry whose name is not UTF-8 (which cannot be keyed by name); each returns false to stop.
pub struct Visitor<'a> {
    /// Files and symlinks.
    pub file: &'a (dyn Fn(&str, &Metadata) -> bool + Sync),
    /// Entries whose name is not UTF-8.
    pub not_utf8: &'a (dyn Fn(&Path, bool) -> bool + Sync),
}

/// Walks every file and symlink below `base` (a directory relative to `root`). `.git` and `.cairn` are never
/// entered; with `gitignore`, ignored paths are skipped.
pub fn walk(root: &Path, base: &str, gitignore: bool, visit: &Visitor<'_>) {
    walk_from(root, base, gitignore, false, visit);
}

/// Walks `base` only when git ignores it or a directory above it: a pattern whose fixed part names an ignored
/// directory asks for its files, which a walk from higher up (honouring `.gitignore`) left out.
pub fn walk_if_ignored(root: &Path, base: &str, visit: &Visitor<'_>) {
    walk_from(root, base, true, true, visit);
}

fn walk_from(root: &Path, base: &str, gitignore: bool, only_if_ignored: bool, visit: &Visitor<'_>) {
    let mut rules = Rules::default();
    let mut gitignore = gitignore;
    let mut ignored = false;
    if gitignore {
        // The rules of every directory from the root down to the base apply below it.
        rules = rules.with_dir(root, true);
        let mut dir = root.to_path_buf();
        for component in base.split('/').filter(|c| !c.is_empty()) {
            dir.push(component);
            // A pattern whose fixed part names an ignored directory (`plugins/dist/*.wasm`, built there and
            // ignored by git) asks for those files by name: they are inputs, whatever .gitignore says.
            if rules.ignores(&dir, true) {
                gitignore = false;
                ignored = true;
                break;
            }
            rules = rules.with_dir(&dir, false);
        }
    }
    if only_if_ignored && !ignored {
        return;
    }
    let prefix = if base.is_empty() {
        String::new()
    } else {
        format!("{base}/")
    };
    let start = if base.is_empty() {
        root.to_path_buf()
    } else {
        root.join(base)
    };
    walk_dir(start, prefix, rules, gitignore, visit);
}

/// Directories with at least this many subdirectories have them walked in parallel. Below it, handing work to
/// other threads costs more than it saves (most tasks' inputs are a few small directories).
const FAN_OUT: usize = 8;

fn walk_dir(
    dir: PathBuf,
    prefix: String,
    rules: Rules,
    gitignore: bool,
    visit: &Visitor<'_>,
) -> bool {
    use rayon::prelude::*;
    let Ok(entries) = fs::read_dir(&dir) else {
        return true;
    };
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let raw_name = entry.file_name();
        let Some(name) = raw_name.to_str() else {
            // Skipping it would give a stale hit when it changes: the caller decides what it means.
            if gitignore && rules.ignores(&entry.path(), kind.is_dir()) {
                continue;
            }
            if !(visit.not_utf8)(&Path::new(&prefix).join(&raw_name), kind.is_dir()) {
                return false;
            }
            continue;
        };
        if kind.is_dir() {
            if name == ".git" || name == ".cairn" {
                continue;
            }
            let path = entry.path();
            if gitignore && rules.ignores(&path, true) {
                continue;
            }
            subdirs.push((path, format!("{prefix}{name}/")));
        } else {
            if gitignore && rules.ignores(&entry.path(), false) {
                continue;
            }
            // DirEntry::metadata is an fstatat on the open directory, and never follows a link.
            let Ok(meta) = entry.metadata() else { continue };
            if !(visit.file)(&format!("{prefix}{name}"), &meta) {
                return false;
            }
        }
    }
    let descend = |(path, child_prefix): (PathBuf, String)| {
        let child_rules = if gitignore {
            rules.with_dir(&path, false)
        } else {
            rules.clone()
        };
        walk_dir(path, child_prefix, child_rules, gitignore, visit)
    };
    if subdirs.len() >= FAN_OUT {
        subdirs.into_par_iter().all(descend)
    } else {
        subdirs.into_iter().all(descend)
    }
}
