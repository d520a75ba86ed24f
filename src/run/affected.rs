//! Which tasks a change touches: the files git says changed since a base commit (the working tree included,
//! untracked files too), matched against each task's declared `inputs`, then carried to every dependent.
//!
//! The answer is exact at the level of input globs: a task is affected when a changed path matches one of its
//! include patterns and none of its `!` patterns, when its definition in tasks.toml changed, or when a task it
//! depends on is affected and passes something on (a check, cached with no outputs, passes nothing on; a group
//! passes on what its members do). A task that declares no inputs is affected only through the last two.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use thiserror::Error;

use super::{Job, Plan};
use crate::config::Config;
use crate::graph::TaskGraph;

/// Git's hash of the empty tree: the base of a repository with no commit yet.
const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// Branches tried, in order, as the default branch when `origin/HEAD` names none.
const DEFAULT_BRANCHES: [&str; 4] = [
    "refs/heads/main",
    "refs/heads/master",
    "refs/remotes/origin/main",
    "refs/remotes/origin/master",
];

/// Why the changed files could not be found.
#[derive(Debug, Error, miette::Diagnostic)]
pub enum AffectedError {
    /// The tasks.toml directory is not inside a git work tree.
    #[error("`{root}` is not inside a git repository, so cairn cannot tell what changed")]
    #[diagnostic(
        code(cairn::affected::not_a_repository),
        help("run `git init` and commit, or run the targets without `--affected`")
    )]
    NotARepository {
        /// The tasks.toml directory.
        root: String,
    },
    /// `--since` names nothing git knows.
    #[error("`--since {reference}`: git knows no commit by that name")]
    #[diagnostic(
        code(cairn::affected::unknown_ref),
        help("give a branch, tag or commit, e.g. `--since main` or `--since HEAD~3`; fetch it first if it is remote")
    )]
    UnknownRef {
        /// The reference as given.
        reference: String,
    },
    /// git failed or could not be started.
    #[error("`git {command}` failed: {message}")]
    #[diagnostic(code(cairn::affected::git))]
    Git {
        /// The git subcommand and its arguments.
        command: String,
        /// What git said, or why it could not start.
        message: String,
    },
}

/// How a path changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Tracked now, not at the base.
    Added,
    /// Different content or mode.
    Modified,
    /// Gone from the working tree.
    Deleted,
    /// Moved (the old path is in `from`).
    Renamed,
    /// Copied from another file.
    Copied,
    /// Changed type (a file became a symlink, say).
    TypeChanged,
    /// Not tracked and not ignored by git.
    Untracked,
}

impl ChangeKind {
    fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Modified => 'M',
            ChangeKind::Deleted => 'D',
            ChangeKind::Renamed => 'R',
            ChangeKind::Copied => 'C',
            ChangeKind::TypeChanged => 'T',
            ChangeKind::Untracked => '?',
        }
    }
}

/// One changed path, relative to the tasks.toml directory with `/` separators.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// The path now (for a deletion, the path that was).
    pub path: String,
    /// How it changed.
    pub kind: ChangeKind,
    /// The path it was renamed or copied from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

impl Change {
    /// The paths whose inputs this change touches: a rename touches both the old and the new name.
    fn paths(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.path.as_str()).chain(
            self.from
                .as_deref()
                .filter(|_| self.kind == ChangeKind::Renamed),
        )
    }
}

/// The commit changes are measured from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Base {
    /// What was asked for or chosen (`main`, `HEAD~2`, `HEAD`), and how.
    pub reference: String,
    /// The commit (or the empty tree's hash in a repository with no commit).
    pub commit: String,
}

/// Every path that differs between the base and the working tree.
#[derive(Debug, Clone)]
pub struct ChangeSet {
    /// The base.
    pub base: Base,
    /// Changed paths, sorted.
    pub changes: Vec<Change>,
}

/// Why a task is affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Changed paths match its inputs.
    Inputs(Vec<String>),
    /// Its definition in tasks.toml differs from the base's.
    Definition,
    /// tasks.toml at the base has no such task (or instance).
    New,
    /// A task it depends on is affected (the first such, in plan order).
    Dependency(String),
}

/// The affected jobs of a plan.
#[derive(Debug)]
pub struct Affected {
    /// For each job of the plan, why it is affected, if it is.
    pub reasons: Vec<Option<Reason>>,
    /// Set when tasks.toml at the base could not be compared (it does not load): every task counts as changed.
    pub base_config_problem: Option<String>,
}

impl Affected {
    /// Whether each job of the plan is affected, for [`Plan::restrict`].
    pub fn mask(&self) -> Vec<bool> {
        self.reasons.iter().map(Option::is_some).collect()
    }

    /// How many jobs are affected.
    pub fn count(&self) -> usize {
        self.reasons.iter().filter(|r| r.is_some()).count()
    }
}

/// Finds what changed in the repository holding `root` since `since` (default: the merge base with the
/// default branch, else `HEAD`).
pub fn changes(root: &Path, since: Option<&str>) -> Result<ChangeSet, AffectedError> {
    let inside = git(root, &["rev-parse", "--is-inside-work-tree"]);
    if !matches!(inside.as_deref().map(str::trim), Ok("true")) {
        return Err(AffectedError::NotARepository {
            root: root.display().to_string(),
        });
    }
    let base = resolve_base(root, since)?;
    let mut changes = Vec::new();
    let diff = git(
        root,
        &[
            "diff",
            "--name-status",
            "-z",
            "-M",
            "--relative",
            "--no-ext-diff",
            &base.commit,
            "--",
        ],
    )?;
    let mut fields = diff.split('\0').filter(|f| !f.is_empty());
    while let Some(status) = fields.next() {
        let kind = match status.as_bytes().first() {
            Some(b'A') => ChangeKind::Added,
            Some(b'D') => ChangeKind::Deleted,
            Some(b'R') => ChangeKind::Renamed,
            Some(b'C') => ChangeKind::Copied,
            Some(b'T') => ChangeKind::TypeChanged,
            _ => ChangeKind::Modified,
        };
        let change = if matches!(kind, ChangeKind::Renamed | ChangeKind::Copied) {
            let (Some(from), Some(to)) = (fields.next(), fields.next()) else {
                break;
            };
            Change {
                path: to.to_owned(),
                kind,
                from: Some(from.to_owned()),
            }
        } else {
            let Some(path) = fields.next() else { break };
            Change {
                path: path.to_owned(),
                kind,
                from: None,
            }
        };
        changes.push(change);
    }
    let untracked = git(root, &["ls-files", "--others", "--exclude-standard", "-z"])?;
    changes.extend(
        untracked
            .split('\0')
            .filter(|p| !p.is_empty())
            .map(|path| Change {
                path: path.to_owned(),
                kind: ChangeKind::Untracked,
                from: None,
            }),
    );
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    changes.dedup_by(|a, b| a.path == b.path && a.kind == b.kind);
    Ok(ChangeSet { base, changes })
}

fn resolve_base(root: &Path, since: Option<&str>) -> Result<Base, AffectedError> {
    let commit_of = |reference: &str| {
        git(
            root,
            &[
                "rev-parse",
                "--verify",
                "-q",
                &format!("{reference}^{{commit}}"),
            ],
        )
        .ok()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
    };
    if let Some(reference) = since {
        // Never let a value be read as one of git's options.
        let found = (!reference.starts_with('-'))
            .then(|| commit_of(reference))
            .flatten();
        return match found {
            Some(commit) => Ok(Base {
                reference: reference.to_owned(),
                commit,
            }),
            None => Err(AffectedError::UnknownRef {
                reference: reference.to_owned(),
            }),
        };
    }
    let Some(head) = commit_of("HEAD") else {
        return Ok(Base {
            reference: "the empty tree (no commit yet)".into(),
            commit: EMPTY_TREE.into(),
        });
    };
    let origin_head = git(root, &["symbolic-ref", "-q", "refs/remotes/origin/HEAD"])
        .ok()
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    let candidates = origin_head
        .into_iter()
        .chain(DEFAULT_BRANCHES.iter().map(|b| (*b).to_owned()));
    for branch in candidates {
        if commit_of(&branch).is_none() {
            continue;
        }
        if let Ok(merge_base) = git(root, &["merge-base", "HEAD", &branch]) {
            let short = branch
                .strip_prefix("refs/heads/")
                .or_else(|| branch.strip_prefix("refs/remotes/"))
                .unwrap_or(&branch);
            return Ok(Base {
                reference: format!("the merge base of HEAD and {short}"),
                commit: merge_base.trim().to_owned(),
            });
        }
    }
    Ok(Base {
        reference: "HEAD".into(),
        commit: head,
    })
}

/// Runs git in `root` and returns what it printed, or an error with what it said.
fn git(root: &Path, args: &[&str]) -> Result<String, AffectedError> {
    let failed = |message: String| AffectedError::Git {
        command: args.join(" "),
        message,
    };
    let output = Command::new("git")
        .args(args)
        .current_dir(root)
        // Reading never takes the index lock a concurrent `git commit` needs.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| failed(format!("cannot start git: {e}")))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(failed(if said.is_empty() {
            format!("exited with {}", output.status)
        } else {
            said
        }));
    }
    String::from_utf8(output.stdout).map_err(|_| failed("printed a path that is not UTF-8".into()))
}

/// Which jobs of `plan` the changes affect. `config` is the loaded tasks.toml: when the change set includes
/// it, each job's definition is compared with the same job planned from the base's tasks.toml.
pub fn affected(
    config: &Config,
    plan: &Plan,
    targets: Option<&[String]>,
    changes: &ChangeSet,
) -> Affected {
    let config_name = config
        .path
        .strip_prefix(&config.root)
        .ok()
        .and_then(Path::to_str)
        .map(|p| p.replace('\\', "/"))
        .unwrap_or_else(|| "tasks.toml".into());
    let mut base_config_problem = None;
    let base_fingerprints = if changes.changes.iter().any(|c| c.path == config_name) {
        match base_plan(config, &config_name, &changes.base.commit, targets) {
            Ok(fingerprints) => Some(fingerprints),
            Err(problem) => {
                base_config_problem = Some(problem);
                None
            }
        }
    } else {
        None
    };
    let mut reasons: Vec<Option<Reason>> = Vec::with_capacity(plan.jobs.len());
    let mut carries: Vec<bool> = Vec::with_capacity(plan.jobs.len());
    for (i, job) in plan.jobs.iter().enumerate() {
        let files: Vec<String> = changes
            .changes
            .iter()
            .filter(|c| c.paths().any(|p| job.key.inputs.matches_path(p)))
            .map(|c| c.path.clone())
            .collect();
        let definition = if base_config_problem.is_some() {
            Some(Reason::Definition)
        } else {
            base_fingerprints
                .as_ref()
                .and_then(|base| match base.get(job.label.as_str()) {
                    None => Some(Reason::New),
                    Some(old) if *old != fingerprint(plan, i) => Some(Reason::Definition),
                    Some(_) => None,
                })
        };
        let is_group = job.commands.is_empty() && job.plugin.is_none();
        // A group stands for its members; any other task is reached only through a dependency that passes
        // something on.
        let through = |d: &usize| reasons[*d].is_some() && (is_group || carries[*d]);
        let reason = if !files.is_empty() {
            Some(Reason::Inputs(files))
        } else if definition.is_some() {
            definition
        } else {
            plan.deps[i]
                .iter()
                .find(|d| through(d))
                .map(|&d| Reason::Dependency(plan.jobs[d].label.clone()))
        };
        // A cached task with no outputs is a check: run again, it can only pass or fail, so what depends on it
        // still waits for it but is not changed by it. A group passes on what its affected members pass on.
        let passes_on = match &reason {
            None => false,
            Some(_) if is_group => plan.deps[i]
                .iter()
                .any(|&d| reasons[d].is_some() && carries[d]),
            Some(_) => !(job.key.cacheable && job.key.output_globs.is_empty()),
        };
        reasons.push(reason);
        carries.push(passes_on);
    }
    Affected {
        reasons,
        base_config_problem,
    }
}

/// Plans the same targets from tasks.toml as it was at `commit`, and fingerprints each job by label.
fn base_plan(
    config: &Config,
    config_name: &str,
    commit: &str,
    targets: Option<&[String]>,
) -> Result<HashMap<String, blake3::Hash>, String> {
    let text = match git(
        &config.root,
        &["show", &format!("{commit}:./{config_name}")],
    ) {
        Ok(text) => text,
        // Not there at the base: every task is new.
        Err(_) => return Ok(HashMap::new()),
    };
    let base = Config::parse(config_name, &text, config.path.clone(), config.root.clone())
        .map_err(|e| format!("{config_name} at the base does not load: {e}"))?;
    let mut graph = TaskGraph::build(Arc::new(base))
        .map_err(|e| format!("{config_name} at the base does not form a graph: {e}"))?;
    let selection = match targets {
        Some(targets) => match graph.select(targets) {
            Ok(selection) => selection,
            // The targets did not exist then: everything they reach is new.
            Err(_) => return Ok(HashMap::new()),
        },
        None => graph.select_all(),
    };
    let plan = Plan::new(&graph, &selection, &[]);
    Ok((0..plan.jobs.len())
        .map(|i| (plan.jobs[i].label.clone(), fingerprint(&plan, i)))
        .collect())
}

/// What of a job its definition decides: two plans in one process give equal fingerprints exactly when the
/// job would run the same way on the same files.
pub(crate) fn fingerprint(plan: &Plan, i: usize) -> blake3::Hash {
    let job: &Job = &plan.jobs[i];
    let key = &job.key;
    let mut deps: Vec<&str> = plan.deps[i]
        .iter()
        .map(|&d| plan.jobs[d].label.as_str())
        .collect();
    deps.sort_unstable();
    let text = format!(
        "{:?}",
        (
            (
                &job.commands,
                &key.shell,
                &key.dir,
                &key.input_globs,
                &key.output_globs,
                &key.env,
            ),
            (
                key.deps_strategy,
                key.cacheable,
                key.incremental,
                &job.plugin,
                &job.executor,
                &job.check,
                &job.rollback,
                job.secrets
                    .as_ref()
                    .map(|s| (&s.relative, &s.env, &s.files, &s.allow_envs)),
                deps,
            )
        )
    );
    blake3::hash(text.as_bytes())
}

/// Renders changes and affected jobs for people.
pub fn describe(changes: &ChangeSet, plan: &Plan, affected: &Affected) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let short = &changes.base.commit[..changes.base.commit.len().min(12)];
    let _ = writeln!(
        out,
        "Changed since {} ({short}): {} path{}",
        changes.base.reference,
        changes.changes.len(),
        if changes.changes.len() == 1 { "" } else { "s" }
    );
    for change in &changes.changes {
        match &change.from {
            Some(from) => {
                let _ = writeln!(out, "  {} {from} → {}", change.kind.letter(), change.path);
            }
            None => {
                let _ = writeln!(out, "  {} {}", change.kind.letter(), change.path);
            }
        }
    }
    if let Some(problem) = &affected.base_config_problem {
        let _ = writeln!(
            out,
            "cairn: warning: {problem}; every task counts as changed"
        );
    }
    let _ = writeln!(
        out,
        "Affected: {} of {} task{}",
        affected.count(),
        plan.jobs.len(),
        if plan.jobs.len() == 1 { "" } else { "s" }
    );
    let width = plan
        .jobs
        .iter()
        .zip(&affected.reasons)
        .filter(|(_, r)| r.is_some())
        .map(|(j, _)| j.label.chars().count())
        .max()
        .unwrap_or(0);
    for (job, reason) in plan.jobs.iter().zip(&affected.reasons) {
        let Some(reason) = reason else { continue };
        let why = match reason {
            Reason::Inputs(files) => {
                let shown: Vec<&str> = files.iter().take(3).map(String::as_str).collect();
                let more = files.len().saturating_sub(shown.len());
                let mut text = format!("inputs: {}", shown.join(", "));
                if more > 0 {
                    let _ = write!(text, " and {more} more");
                }
                text
            }
            Reason::Definition => "its definition in tasks.toml changed".into(),
            Reason::New => "new in tasks.toml".into(),
            Reason::Dependency(dep) => format!("depends on {dep}"),
        };
        let _ = writeln!(out, "  {:<width$}  {why}", job.label);
    }
    out
}

/// The stable JSON form of `cairn affected --json`.
pub fn to_json(changes: &ChangeSet, plan: &Plan, affected: &Affected) -> serde_json::Value {
    let tasks: Vec<serde_json::Value> = plan
        .jobs
        .iter()
        .zip(&affected.reasons)
        .filter_map(|(job, reason)| {
            let reason = reason.as_ref()?;
            let mut entry = serde_json::json!({ "task": job.label });
            let fields = entry.as_object_mut()?;
            match reason {
                Reason::Inputs(files) => {
                    fields.insert("reason".into(), "inputs".into());
                    fields.insert("files".into(), serde_json::json!(files));
                }
                Reason::Definition => {
                    fields.insert("reason".into(), "definition".into());
                }
                Reason::New => {
                    fields.insert("reason".into(), "new".into());
                }
                Reason::Dependency(dep) => {
                    fields.insert("reason".into(), "dependency".into());
                    fields.insert("dependency".into(), dep.clone().into());
                }
            }
            Some(entry)
        })
        .collect();
    serde_json::json!({
        "base": changes.base,
        "changes": changes.changes,
        "tasks": plan.jobs.len(),
        "affected": tasks,
    })
}
