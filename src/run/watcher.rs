//! What `cairn watch` decides between runs: which files to watch, which changes count, which tasks a change
//! re-runs, and the plan of each run. Runs themselves go through the driver like any other.
//!
//! A change counts when it touches a file some selected task reads (its `inputs`, as the cache expands them,
//! so git-ignored files count only where a pattern names them), or tasks.toml and the data files it reads.
//! Paths under `.git/` and `.cairn/` and every task's `outputs` never count, so a run cannot trigger itself.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher as _;
use tokio::sync::mpsc;

use super::{Job, Plan};
use crate::cache::GlobList;

/// Why files cannot be watched.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum WatchError {
    /// The operating system's file notification failed.
    #[error("cannot watch `{path}` for changes: {reason}")]
    #[diagnostic(
        code(cairn::watch::notify),
        help("on Linux, a large tree may need more inotify watches: `sysctl fs.inotify.max_user_watches=524288`")
    )]
    Notify {
        /// The directory.
        path: String,
        /// What the system said.
        reason: String,
    },
}

/// The files a plan reads, and the patterns that decide whether a changed path matters.
pub struct WatchSet {
    /// Files the inputs matched when the set was made, relative with `/`.
    files: HashSet<String>,
    /// Each job's inputs, for files that did not exist then.
    inputs: Vec<GlobList>,
    /// Every job's outputs: changes there are the runs' own.
    outputs: Vec<GlobList>,
    /// tasks.toml and the data files it reads, relative to the root.
    config_files: Vec<String>,
    /// Directories to watch with everything below them, relative to the root (`""` is the root): the fixed
    /// part of each pattern with a wildcard.
    directories: Vec<String>,
    /// Directories to watch without their subdirectories: where a pattern without wildcard (a file such as
    /// `Cargo.toml`) lives, so naming one file at the root does not watch a whole `target/` or `node_modules/`.
    parents: Vec<String>,
    root: PathBuf,
}

/// Directories cairn never reacts to.
const NEVER: [&str; 2] = [".git", ".cairn"];

impl WatchSet {
    /// The inputs of every job of `plan` under `root`, plus `config_files`.
    pub fn of(plan: &Plan, root: &Path, config_files: Vec<String>) -> WatchSet {
        let mut files = HashSet::new();
        let mut inputs = Vec::with_capacity(plan.jobs.len());
        let mut outputs = Vec::with_capacity(plan.jobs.len());
        let mut bases: Vec<String> = Vec::new();
        let mut parents: Vec<String> = Vec::new();
        for job in &plan.jobs {
            if !job.key.inputs.is_empty() {
                // A pattern that fails to expand (it was checked at load) only leaves its files unwatched.
                if let Ok(found) = job.key.inputs.expand(root, true) {
                    files.extend(found.files);
                }
                for pattern in &job.key.input_globs {
                    if pattern.starts_with('!') {
                        continue;
                    }
                    if pattern.contains(['*', '?', '[', '{']) {
                        bases.push(literal_base(pattern));
                    } else {
                        parents.push(literal_base(pattern));
                    }
                }
            }
            inputs.push(job.key.inputs.clone());
            outputs.push(job.key.outputs.clone());
        }
        bases.sort();
        bases.dedup();
        // A directory inside another watched one is already covered.
        let mut directories: Vec<String> = Vec::new();
        for base in bases {
            let covered = directories
                .iter()
                .any(|d| d.is_empty() || base == *d || base.starts_with(&format!("{d}/")));
            if !covered {
                directories.push(base);
            }
        }
        // tasks.toml and the data files: their directories, on their own.
        for file in &config_files {
            parents.push(literal_base(file));
        }
        let inside = |dir: &str, of: &[String]| {
            of.iter()
                .any(|d| d.is_empty() || dir == d || dir.starts_with(&format!("{d}/")))
        };
        parents.sort();
        parents.dedup();
        parents.retain(|p| !inside(p, &directories));
        WatchSet {
            files,
            inputs,
            outputs,
            config_files,
            directories,
            parents,
            root: root.to_owned(),
        }
    }

    /// How many files the inputs matched.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no input matched any file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Whether `path` (relative) is tasks.toml or a data file it reads.
    pub fn is_config(&self, path: &str) -> bool {
        self.config_files.iter().any(|c| c == path)
    }

    /// Whether a change to `path` (relative, `/`-separated) matters.
    pub fn matters(&self, path: &str) -> bool {
        if NEVER
            .iter()
            .any(|n| path == *n || path.starts_with(&format!("{n}/")))
        {
            return false;
        }
        if self.is_config(path) {
            return true;
        }
        if self.outputs.iter().any(|o| o.matches_path(path)) {
            return false;
        }
        if self.files.contains(path) {
            return true;
        }
        // A file that did not exist before counts when the cache would hash it: its job's inputs, expanded as
        // the cache expands them (git-ignored files only where a pattern names them), include it now.
        self.inputs.iter().any(|inputs| {
            inputs.matches_path(path)
                && inputs
                    .expand(&self.root, true)
                    .is_ok_and(|found| found.files.iter().any(|f| f == path))
        })
    }
}

/// The directory part of a pattern before its first wildcard (`src` for `src/**/*.rs`, `""` for `*.md`).
fn literal_base(pattern: &str) -> String {
    let fixed = pattern
        .find(['*', '?', '[', '{'])
        .map_or(pattern, |i| &pattern[..i]);
    // A pattern without wildcards names a file: its directory is what is watched.
    match fixed.rfind('/') {
        Some(i) => fixed[..i].to_owned(),
        None => String::new(),
    }
}

/// Which jobs of `plan` a change re-runs: those whose inputs match a changed path or that `changed_jobs`
/// marks (a new or changed definition), and everything depending on them.
pub fn rerun_set(plan: &Plan, changed_paths: &[String], changed_jobs: &[bool]) -> Vec<bool> {
    let mut rerun: Vec<bool> = plan
        .jobs
        .iter()
        .enumerate()
        .map(|(i, job)| {
            changed_jobs.get(i).copied().unwrap_or(false)
                || changed_paths.iter().any(|p| job.key.inputs.matches_path(p))
        })
        .collect();
    // Plan order puts dependencies first.
    for i in 0..plan.jobs.len() {
        if !rerun[i] && plan.deps[i].iter().any(|&d| rerun[d]) {
            rerun[i] = true;
        }
    }
    rerun
}

/// For each job of `new`, whether its definition is new or differs from the job of the same name in `old`.
pub fn definition_changes(old: &Plan, new: &Plan) -> Vec<bool> {
    let before: std::collections::HashMap<&str, blake3::Hash> = (0..old.jobs.len())
        .map(|i| {
            (
                old.jobs[i].label.as_str(),
                super::affected::fingerprint(old, i),
            )
        })
        .collect();
    (0..new.jobs.len())
        .map(|i| {
            before
                .get(new.jobs[i].label.as_str())
                .is_none_or(|f| *f != super::affected::fingerprint(new, i))
        })
        .collect()
}

/// The plan of one run: the jobs to re-run, and the dependencies they need. A dependency that succeeded in an
/// earlier run and is not re-run stands in as done: it keeps its key (so its dependents' keys are the ones a
/// full run computes) and runs nothing, restores nothing and stores nothing. Services never run here.
pub fn cycle_plan(plan: &Plan, rerun: &[bool], succeeded: &HashSet<String>) -> Plan {
    let restricted = plan.restrict(rerun);
    let rerunning: HashSet<&str> = plan
        .jobs
        .iter()
        .zip(rerun)
        .filter(|(_, r)| **r)
        .map(|(j, _)| j.label.as_str())
        .collect();
    let jobs = restricted
        .jobs
        .iter()
        .map(|job| {
            let rerunning = rerunning.contains(job.label.as_str());
            let done_before = !rerunning && succeeded.contains(&job.label);
            if job.service || done_before {
                Arc::new(stand_in(job))
            } else {
                Arc::clone(job)
            }
        })
        .collect();
    Plan {
        jobs,
        deps: restricted.deps,
    }
}

/// A job that does nothing but take its place (and its key) in a run.
pub fn stand_in(job: &Job) -> Job {
    let mut quiet = job.clone();
    quiet.commands.clear();
    quiet.changed_slots.clear();
    quiet.plugin = None;
    quiet.executor = None;
    quiet.check = None;
    quiet.rollback = None;
    quiet.confirm = None;
    quiet.lock = None;
    quiet.audit = false;
    quiet.key.cacheable = false;
    quiet.key.incremental = false;
    quiet
}

/// File events under the watched directories, as paths relative to the root.
pub struct FileEvents {
    _watcher: notify::RecommendedWatcher,
    receiver: mpsc::UnboundedReceiver<PathBuf>,
    roots: Vec<PathBuf>,
}

impl FileEvents {
    /// Starts watching `set`'s directories under `root` (the nearest existing parent of one not created yet).
    pub fn start(root: &Path, set: &WatchSet) -> Result<FileEvents, WatchError> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if matches!(event.kind, notify::EventKind::Access(_)) {
                    return;
                }
                for path in event.paths {
                    let _ = sender.send(path);
                }
            })
            .map_err(|e| WatchError::Notify {
                path: root.display().to_string(),
                reason: e.to_string(),
            })?;
        let plan = set
            .directories
            .iter()
            .map(|d| (d, notify::RecursiveMode::Recursive))
            .chain(
                set.parents
                    .iter()
                    .map(|d| (d, notify::RecursiveMode::NonRecursive)),
            );
        let mut watched: Vec<PathBuf> = Vec::new();
        for (directory, mode) in plan {
            let mut path = if directory.is_empty() {
                root.to_owned()
            } else {
                root.join(directory)
            };
            // Not created yet: its nearest existing parent is watched, whole, so its creation is seen.
            let mut mode = mode;
            while !path.is_dir() && path != root {
                path = path
                    .parent()
                    .map_or_else(|| root.to_owned(), Path::to_path_buf);
                mode = notify::RecursiveMode::Recursive;
            }
            if watched.contains(&path) {
                continue;
            }
            watcher.watch(&path, mode).map_err(|e| WatchError::Notify {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            watched.push(path);
        }
        // Events name paths as the system sees them (on macOS `/private/var/…` for `/var/…`).
        let mut roots = vec![root.to_owned()];
        if let Ok(canonical) = root.canonicalize() {
            if canonical != root {
                roots.push(canonical);
            }
        }
        Ok(FileEvents {
            _watcher: watcher,
            receiver,
            roots,
        })
    }

    fn relative(&self, path: &Path) -> Option<String> {
        let rest = self.roots.iter().find_map(|r| path.strip_prefix(r).ok())?;
        let text = rest.to_str()?.replace('\\', "/");
        (!text.is_empty()).then_some(text)
    }

    /// Waits for a change that `matters`, then for `quiet` without another one (a save is often several
    /// events, an editor's or a formatter's), and returns every path that changed, sorted.
    pub async fn next_batch(
        &mut self,
        quiet: Duration,
        matters: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let mut changed: Vec<String> = Vec::new();
        loop {
            let Some(path) = self.receiver.recv().await else {
                return changed;
            };
            if let Some(relative) = self.relative(&path).filter(|p| matters(p)) {
                changed.push(relative);
                break;
            }
        }
        while let Ok(Some(path)) = tokio::time::timeout(quiet, self.receiver.recv()).await {
            if let Some(relative) = self.relative(&path).filter(|p| matters(p)) {
                changed.push(relative);
            }
        }
        changed.sort();
        changed.dedup();
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_named_at_the_root_watches_the_root_alone_and_a_wildcard_its_tree() {
        let root = std::env::temp_dir();
        let config = crate::config::Config::parse(
            "tasks.toml",
            "[tasks.build]\nrun = \"true\"\ninputs = [\"Cargo.toml\", \"src/**/*.rs\", \"docs/guide.md\", \"src/lib.rs\"]\n",
            root.join("tasks.toml"),
            root.clone(),
        )
        .expect("valid");
        let mut graph = crate::graph::TaskGraph::build(std::sync::Arc::new(config)).expect("graph");
        let selection = graph.select(&["build".to_owned()]).expect("selects");
        let plan = Plan::new(&graph, &selection, &[]);
        let set = WatchSet::of(&plan, &root, vec!["tasks.toml".into()]);
        assert_eq!(set.directories, ["src"]);
        // `src/lib.rs` is inside the watched `src` tree already.
        assert_eq!(set.parents, ["", "docs"]);
    }

    #[test]
    fn the_literal_base_of_a_pattern_is_the_directory_before_its_first_wildcard() {
        assert_eq!(literal_base("src/**/*.rs"), "src");
        assert_eq!(literal_base("modules/hosts/NIXY/**"), "modules/hosts/NIXY");
        assert_eq!(literal_base("*.md"), "");
        assert_eq!(literal_base("Cargo.toml"), "");
        assert_eq!(literal_base("docs/guide.md"), "docs");
        assert_eq!(literal_base("a/b{c,d}/e"), "a");
    }
}
