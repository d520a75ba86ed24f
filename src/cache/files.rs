//! Turns `inputs`/`outputs` globs into the list of files they match, relative to the repository root.

use std::collections::BTreeSet;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::CacheError;

/// Compiled `inputs` or `outputs` patterns: `!pattern` excludes.
#[derive(Debug, Clone)]
pub struct GlobList {
    include: GlobSet,
    exclude: GlobSet,
    includes: Vec<String>,
    /// Directories to walk: the literal part of each include pattern.
    bases: Vec<String>,
    /// Include patterns with no wildcard: checked directly rather than found by walking.
    literals: Vec<String>,
}

/// What a [`GlobList`] matched.
#[derive(Debug, Default)]
pub struct Matches {
    /// Matching files, sorted, relative with `/` separators.
    pub files: Vec<String>,
    /// Include patterns that matched nothing.
    pub unmatched: Vec<String>,
}

const META: &[char] = &['*', '?', '[', '{'];

impl GlobList {
    /// Compiles patterns; an invalid one is an error naming it.
    pub fn new(patterns: &[String]) -> Result<GlobList, CacheError> {
        let mut include = GlobSetBuilder::new();
        let mut exclude = GlobSetBuilder::new();
        let mut includes = Vec::new();
        let mut bases = BTreeSet::new();
        let mut literals = Vec::new();
        for raw in patterns {
            let (negated, pattern) = match raw.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, raw.as_str()),
            };
            let pattern = pattern.trim_start_matches("./");
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|source| CacheError::Glob {
                    pattern: raw.clone(),
                    reason: source.kind().to_string(),
                })?;
            if negated {
                exclude.add(glob);
                continue;
            }
            include.add(glob);
            includes.push(pattern.to_owned());
            if pattern.contains(META) {
                let literal: Vec<&str> = pattern
                    .split('/')
                    .take_while(|c| !c.contains(META))
                    .collect();
                bases.insert(literal.join("/"));
            } else {
                literals.push(pattern.to_owned());
            }
        }
        // A base inside another base would be walked twice.
        let bases: Vec<String> = bases
            .iter()
            .filter(|b| !bases.iter().any(|o| o != *b && is_within(b, o)))
            .cloned()
            .collect();
        let build = |b: GlobSetBuilder| b.build().expect("globs compiled one by one above");
        Ok(GlobList {
            include: build(include),
            exclude: build(exclude),
            includes,
            bases,
            literals,
        })
    }

    /// Whether `path` (relative, `/`-separated) is matched by an include pattern and no exclude pattern.
    pub fn matches_path(&self, path: &str) -> bool {
        self.include.is_match(path) && !self.exclude.is_match(path)
    }

    /// Whether no include pattern was given.
    pub fn is_empty(&self) -> bool {
        self.includes.is_empty()
    }

    /// Finds the files under `root` that match. With `gitignore`, files ignored by git are skipped (inputs);
    /// without, they are found too (outputs are usually ignored build products). Symlinks are listed, never
    /// followed, and `.git` and `.cairn` are never entered.
    pub fn expand(&self, root: &Path, gitignore: bool) -> Result<Matches, CacheError> {
        let mut files = BTreeSet::new();
        let mut hits = vec![false; self.includes.len()];
        let mut consider = |relative: String, files: &mut BTreeSet<String>| {
            if self.exclude.is_match(&relative) {
                return;
            }
            let matched = self.include.matches(&relative);
            if !matched.is_empty() {
                for i in matched {
                    hits[i] = true;
                }
                files.insert(relative);
            }
        };
        for literal in &self.literals {
            if std::fs::symlink_metadata(root.join(literal)).is_ok_and(|m| !m.is_dir()) {
                consider(literal.clone(), &mut files);
            }
        }
        if !self.bases.is_empty() {
            let mut roots = self
                .bases
                .iter()
                .map(|b| root.join(b))
                .filter(|p| p.is_dir());
            let Some(first) = roots.next() else {
                return Ok(self.finish(files, hits));
            };
            let mut walk = ignore::WalkBuilder::new(first);
            for other in roots {
                walk.add(other);
            }
            walk.hidden(false)
                .ignore(false)
                .git_ignore(gitignore)
                .git_exclude(gitignore)
                .git_global(false)
                .parents(gitignore)
                .require_git(false)
                .follow_links(false)
                .filter_entry(|entry| {
                    let name = entry.file_name();
                    !(entry.file_type().is_some_and(|t| t.is_dir())
                        && (name == ".git" || name == ".cairn"))
                });
            for entry in walk.build() {
                let entry = entry.map_err(|source| CacheError::Walk {
                    reason: source.to_string(),
                })?;
                if entry.file_type().is_none_or(|t| t.is_dir()) {
                    continue;
                }
                let Ok(relative) = entry.path().strip_prefix(root) else {
                    continue;
                };
                let Some(relative) = relative.to_str() else {
                    continue;
                };
                consider(relative.to_owned(), &mut files);
            }
        }
        Ok(self.finish(files, hits))
    }

    fn finish(&self, files: BTreeSet<String>, hits: Vec<bool>) -> Matches {
        Matches {
            files: files.into_iter().collect(),
            unmatched: self
                .includes
                .iter()
                .zip(hits)
                .filter(|(_, hit)| !hit)
                .map(|(p, _)| p.clone())
                .collect(),
        }
    }
}

fn is_within(path: &str, base: &str) -> bool {
    base.is_empty()
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for file in files {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, file).expect("write");
        }
        dir
    }

    fn globs(patterns: &[&str]) -> GlobList {
        GlobList::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).expect("valid")
    }

    #[test]
    fn matches_recursive_globs_with_negation() {
        let dir = tree(&["a.nix", "m/b.nix", "m/skip.nix", "m/c.txt", ".git/x.nix"]);
        let found = globs(&["**/*.nix", "!m/skip.nix"])
            .expand(dir.path(), true)
            .expect("expands");
        assert_eq!(found.files, ["a.nix", "m/b.nix"]);
    }

    #[test]
    fn gitignored_files_are_not_inputs_but_can_be_outputs() {
        let dir = tree(&[".gitignore", "src/a.rs", "target/out.bin"]);
        std::fs::write(dir.path().join(".gitignore"), "target/\n").expect("write");
        assert_eq!(
            globs(&["**/*"])
                .expand(dir.path(), true)
                .expect("expands")
                .files,
            [".gitignore", "src/a.rs"]
        );
        assert_eq!(
            globs(&["target/**"])
                .expand(dir.path(), false)
                .expect("expands")
                .files,
            ["target/out.bin"]
        );
    }

    #[test]
    fn reports_patterns_that_match_nothing() {
        let dir = tree(&["a.nix"]);
        let found = globs(&["*.nix", "docs/**/*.md", "missing.txt"])
            .expand(dir.path(), true)
            .expect("expands");
        assert_eq!(found.unmatched, ["docs/**/*.md", "missing.txt"]);
    }

    #[test]
    fn star_does_not_cross_directories() {
        let dir = tree(&["a.nix", "m/b.nix"]);
        assert_eq!(
            globs(&["*.nix"])
                .expand(dir.path(), true)
                .expect("expands")
                .files,
            ["a.nix"]
        );
    }
}
