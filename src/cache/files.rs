//! Turns `inputs`/`outputs` globs into the list of files they match, relative to the repository root.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::CacheError;

/// `inputs` or `outputs` patterns (`!pattern` excludes), compiled on first use: planning a run compiles
/// nothing, and tasks' patterns compile in parallel on the threads that use them.
#[derive(Debug, Clone)]
pub struct GlobList {
    patterns: Arc<[String]>,
    compiled: Arc<OnceLock<Result<Compiled, (String, String)>>>,
}

#[derive(Debug)]
struct Compiled {
    include: Includes,
    exclude: GlobSet,
    includes: Vec<String>,
    /// Directories to walk: the literal part of each include pattern.
    bases: Vec<String>,
    /// Literal parts inside another base: walked on their own only when git ignores them (the walk of the
    /// outer base skips them then).
    nested_bases: Vec<String>,
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

/// What [`GlobList::expand_map`] found: each file with what the visit returned for it.
#[derive(Debug)]
pub struct Visited<T> {
    /// Matching files, sorted by path, with their visit's result.
    pub files: Vec<(String, T)>,
    /// Include patterns that matched nothing.
    pub unmatched: Vec<String>,
}

const META: &[char] = &['*', '?', '[', '{'];

/// The include patterns. When each is a directory and everything under it (`DIR/**`, the usual input of a
/// package), a path under one is matched by comparing its start: compiling the set (globset builds an
/// Aho–Corasick automaton for it) cost more than the rest of a small task's cached check, and is done only if a
/// path the comparison cannot decide comes up.
#[derive(Debug)]
struct Includes {
    globs: Vec<globset::Glob>,
    /// Each pattern's `DIR`, when every pattern has the form `DIR/**` with no wildcard or escape in `DIR`.
    directories: Option<Vec<String>>,
    set: OnceLock<GlobSet>,
}

impl Includes {
    fn new(globs: Vec<globset::Glob>, patterns: &[String]) -> Includes {
        let directories = patterns
            .iter()
            .map(|p| {
                p.strip_suffix("/**")
                    .filter(|dir| !dir.is_empty() && !dir.contains(META) && !dir.contains('\\'))
                    .map(str::to_owned)
            })
            .collect();
        Includes {
            globs,
            directories,
            set: OnceLock::new(),
        }
    }

    fn set(&self) -> &GlobSet {
        self.set.get_or_init(|| {
            let mut builder = GlobSetBuilder::new();
            for glob in &self.globs {
                builder.add(glob.clone());
            }
            builder.build().expect("globs compiled one by one above")
        })
    }

    /// Calls `hit` with the index of each pattern that matches `path`.
    fn each_match(&self, path: &str, mut hit: impl FnMut(usize)) {
        if let Some(directories) = &self.directories {
            // Only the directory itself is left to the compiled set: whether `DIR/**` takes `DIR` is globset's
            // call, and the answer must not depend on this shortcut.
            let undecided = |dir: &String| {
                path.strip_prefix(dir.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest == "/")
            };
            if !directories.iter().any(undecided) {
                for (i, dir) in directories.iter().enumerate() {
                    if path
                        .strip_prefix(dir.as_str())
                        .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
                    {
                        hit(i);
                    }
                }
                return;
            }
        }
        match self.globs.len() {
            0 => {}
            1 => {
                if self.set().is_match(path) {
                    hit(0)
                }
            }
            _ => self.set().matches(path).into_iter().for_each(hit),
        }
    }

    fn is_match(&self, path: &str) -> bool {
        let mut matched = false;
        self.each_match(path, |_| matched = true);
        matched
    }
}

impl GlobList {
    /// Compiles patterns now; an invalid one is an error naming it.
    pub fn new(patterns: &[String]) -> Result<GlobList, CacheError> {
        let list = GlobList::lazy(patterns);
        list.compiled()?;
        Ok(list)
    }

    /// Patterns compiled when first used (they were checked when tasks.toml was loaded).
    pub fn lazy(patterns: &[String]) -> GlobList {
        if patterns.is_empty() {
            // Most tasks of a large plan declare no outputs (or inputs): they share one empty list instead of
            // allocating two per job.
            static EMPTY: OnceLock<GlobList> = OnceLock::new();
            return EMPTY
                .get_or_init(|| GlobList {
                    patterns: Arc::from(Vec::new()),
                    compiled: Arc::new(OnceLock::new()),
                })
                .clone();
        }
        GlobList {
            patterns: patterns.into(),
            compiled: Arc::new(OnceLock::new()),
        }
    }

    fn compiled(&self) -> Result<&Compiled, CacheError> {
        self.compiled
            .get_or_init(|| {
                Compiled::compile(&self.patterns).map_err(|e| match e {
                    CacheError::Glob { pattern, reason } => (pattern, reason),
                    other => (String::new(), other.to_string()),
                })
            })
            .as_ref()
            .map_err(|(pattern, reason)| CacheError::Glob {
                pattern: pattern.clone(),
                reason: reason.clone(),
            })
    }

    /// Whether `path` (relative, `/`-separated) is matched by an include pattern and no exclude pattern.
    pub fn matches_path(&self, path: &str) -> bool {
        self.compiled()
            .is_ok_and(|c| c.include.is_match(path) && !c.exclude.is_match(path))
    }

    /// Whether no include pattern was given.
    pub fn is_empty(&self) -> bool {
        self.patterns.iter().all(|p| p.starts_with('!'))
    }

    /// Finds the files under `root` that match. With `gitignore`, files ignored by git are skipped (inputs);
    /// without, they are found too (outputs are usually ignored build products). Symlinks are listed, never
    /// followed, and `.git` and `.cairn` are never entered.
    pub fn expand(&self, root: &Path, gitignore: bool) -> Result<Matches, CacheError> {
        self.compiled()?.expand(root, gitignore)
    }

    /// Like [`GlobList::expand`], calling `visit` on each matching file as it is found, so that work per file
    /// (hashing) happens in the same pass as the listing. Returns the files sorted by path, with what `visit`
    /// returned, and the include patterns that matched nothing.
    pub fn expand_map<T: Send>(
        &self,
        root: &Path,
        gitignore: bool,
        visit: impl Fn(&str, Option<&std::fs::Metadata>) -> Result<T, CacheError> + Sync,
    ) -> Result<Visited<T>, CacheError> {
        self.compiled()?.expand_map(root, gitignore, visit)
    }
}

impl Compiled {
    fn compile(patterns: &[String]) -> Result<Compiled, CacheError> {
        let mut include = Vec::new();
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
            include.push(glob);
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
        let (bases, nested): (Vec<String>, Vec<String>) = bases
            .iter()
            .cloned()
            .partition(|b| !bases.iter().any(|o| o != b && is_within(b, o)));
        let nested_bases: Vec<String> = nested
            .iter()
            .filter(|b| !nested.iter().any(|o| o != *b && is_within(b, o)))
            .cloned()
            .collect();
        let build = |b: GlobSetBuilder| b.build().expect("globs compiled one by one above");
        Ok(Compiled {
            include: Includes::new(include, &includes),
            exclude: build(exclude),
            includes,
            bases,
            nested_bases,
            literals,
        })
    }

    /// Finds the files under `root` that match. With `gitignore`, files ignored by git are skipped (inputs);
    /// without, they are found too (outputs are usually ignored build products). Symlinks are listed, never
    /// followed, and `.git` and `.cairn` are never entered.
    pub fn expand(&self, root: &Path, gitignore: bool) -> Result<Matches, CacheError> {
        let visited = self.expand_map(root, gitignore, |_, _| Ok(()))?;
        Ok(Matches {
            files: visited.files.into_iter().map(|(path, ())| path).collect(),
            unmatched: visited.unmatched,
        })
    }

    /// Like [`GlobList::expand`], calling `visit` on each matching file from the walking threads, so that work
    /// per file (hashing) runs in the same parallel pass as the listing. Returns the files sorted by path, with
    /// what `visit` returned, and the include patterns that matched nothing.
    pub fn expand_map<T: Send>(
        &self,
        root: &Path,
        gitignore: bool,
        visit: impl Fn(&str, Option<&std::fs::Metadata>) -> Result<T, CacheError> + Sync,
    ) -> Result<Visited<T>, CacheError> {
        let hits: Vec<AtomicBool> = self
            .includes
            .iter()
            .map(|_| AtomicBool::new(false))
            .collect();
        let found = Mutex::new(Vec::new());
        let failure: Mutex<Option<CacheError>> = Mutex::new(None);
        let consider = |relative: &str, meta: Option<&std::fs::Metadata>| -> bool {
            if self.exclude.is_match(relative) {
                return true;
            }
            let mut matched = false;
            self.include.each_match(relative, |i| {
                hits[i].store(true, Ordering::Relaxed);
                matched = true;
            });
            if !matched {
                return true;
            }
            match visit(relative, meta) {
                Ok(value) => {
                    lock(&found).push((relative.to_owned(), value));
                    true
                }
                Err(error) => {
                    *lock(&failure) = Some(error);
                    false
                }
            }
        };
        for literal in &self.literals {
            if let Ok(meta) = std::fs::symlink_metadata(root.join(literal)) {
                if !meta.is_dir() {
                    consider(literal, Some(&meta));
                }
            }
        }
        // Literal patterns were handled above; a walk that also finds them must not list them twice.
        let visit = |relative: &str, meta: &std::fs::Metadata| {
            if self.literals.iter().any(|l| l == relative) {
                return true;
            }
            consider(relative, Some(meta))
        };
        let not_utf8 = |relative: &Path, is_dir: bool| -> bool {
            // A file the patterns take, or a directory they may reach into: its changes could not enter the key.
            let taken = if is_dir {
                !self.exclude.is_match(relative)
            } else {
                self.include.set().is_match(relative) && !self.exclude.is_match(relative)
            };
            if taken {
                *lock(&failure) = Some(CacheError::Walk {
                    reason: format!(
                        "`{}` has a name that is not UTF-8, which cairn cannot key or restore: rename it, or exclude it (`!PATTERN`, or .gitignore)",
                        relative.display()
                    ),
                });
            }
            !taken
        };
        let visitor = super::walk::Visitor {
            file: &visit,
            not_utf8: &not_utf8,
        };
        for base in &self.bases {
            super::walk::walk(root, base, gitignore, &visitor);
            if lock(&failure).is_some() {
                break;
            }
        }
        if gitignore {
            for base in &self.nested_bases {
                if lock(&failure).is_some() {
                    break;
                }
                super::walk::walk_if_ignored(root, base, &visitor);
            }
        }
        if let Some(error) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(error);
        }
        let mut found = found.into_inner().unwrap_or_else(|e| e.into_inner());
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // An ignored directory named by two patterns, one inside the other, is walked by both.
        found.dedup_by(|a, b| a.0 == b.0);
        let unmatched = self
            .includes
            .iter()
            .zip(&hits)
            .filter(|(_, hit)| !hit.load(Ordering::Relaxed))
            .map(|(p, _)| p.clone())
            .collect();
        Ok(Visited {
            files: found,
            unmatched,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
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

    proptest::proptest! {
        #[test]
        fn the_directory_shortcut_matches_exactly_what_globset_matches(
            dirs in proptest::collection::vec("[ab]{1,2}(/[ab.]{1,2}){0,2}", 1..4),
            paths in proptest::collection::vec("[ab./]{0,9}", 1..30),
        ) {
            let patterns: Vec<String> = dirs.iter().map(|d| format!("{d}/**")).collect();
            let globs: Vec<globset::Glob> = patterns
                .iter()
                .map(|p| GlobBuilder::new(p).literal_separator(true).backslash_escape(true).build().unwrap())
                .collect();
            let includes = Includes::new(globs.clone(), &patterns);
            proptest::prop_assert!(includes.directories.is_some());
            let mut reference = GlobSetBuilder::new();
            for glob in globs {
                reference.add(glob);
            }
            let reference = reference.build().unwrap();
            for path in paths {
                let mut found = Vec::new();
                includes.each_match(&path, |i| found.push(i));
                found.sort_unstable();
                proptest::prop_assert_eq!(found, reference.matches(&path), "path {:?}", path);
            }
        }
    }

    #[test]
    fn an_ignored_directory_named_by_a_pattern_is_listed_once() {
        let dir = tree(&[".gitignore", "a.txt", "target/x.bin", "target/debug/y.bin"]);
        std::fs::write(dir.path().join(".gitignore"), "target/\n").expect("write");
        let found = globs(&["**/*.txt", "target/**", "target/debug/*.bin"])
            .expand(dir.path(), true)
            .expect("expands");
        assert_eq!(found.files, ["a.txt", "target/debug/y.bin", "target/x.bin"]);
        let found = globs(&["**/*"]).expand(dir.path(), true).expect("expands");
        assert_eq!(found.files, [".gitignore", "a.txt"]);
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
