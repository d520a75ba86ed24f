//! A selected task instance resolved into everything needed to run it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::{hex, GlobList, KeySpec};
use crate::config::template::shell_quote;
use crate::config::{Config, RemoteMode, DEFAULT_SHELL};
use crate::graph::{NodeId, Role, Selection, TaskGraph};

/// Variables every task receives from cairn's environment, without them entering its cache key: what a
/// program needs to find itself and the terminal. Everything else must be declared (`env_hash`, `env_pass`).
pub const ALWAYS_PASSED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TMPDIR",
    "TZ",
    "CI",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XDG_RUNTIME_DIR",
    "SSH_AUTH_SOCK",
];

/// Variables holding cairn's own credentials (or naming where they are). A task gets one only when it names
/// it exactly in `env_pass` or `env_hash`: `env_pass = ["*"]` or a pattern such as `SOPS_*` never hands them
/// out. Those holding a value are also redacted from everything the run prints and stores.
pub const CREDENTIAL_VARS: &[&str] = &[
    "SOPS_AGE_KEY",
    "SOPS_AGE_KEY_FILE",
    "SOPS_AGE_KEY_CMD",
    "SOPS_AGE_SSH_PRIVATE_KEY_FILE",
    "CAIRN_REMOTE_CACHE_TOKEN",
    "CAIRN_REMOTE_SIGNING_KEY",
    "CAIRN_REMOTE_SIGNING_KEY_FILE",
    "CAIRN_REMOTE_EXECUTION_TOKEN",
];

/// Credential variables whose value is itself the credential (not a path to it): these are redacted.
const CREDENTIAL_VALUES: &[&str] = &[
    "SOPS_AGE_KEY",
    "CAIRN_REMOTE_CACHE_TOKEN",
    "CAIRN_REMOTE_SIGNING_KEY",
    "CAIRN_REMOTE_EXECUTION_TOKEN",
];

/// The names of every variable holding one of cairn's credentials for this configuration: the fixed ones
/// and those `[remote_cache]` names with `{ env = "…" }`.
pub fn credential_vars(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = CREDENTIAL_VARS.iter().map(|n| (*n).to_owned()).collect();
    names.extend(named_credential_envs(config));
    names
}

fn named_credential_envs(config: &Config) -> Vec<String> {
    let cache = config.remote_cache.as_ref();
    let engine = config.remote_execution.as_ref();
    [
        cache.and_then(|c| c.token.as_ref()),
        cache.and_then(|c| c.signing_key.as_ref()),
        engine.and_then(|e| e.token.as_ref()),
    ]
    .into_iter()
    .flatten()
    .filter_map(|c| match &c.value {
        crate::config::Credential::Env(var) => Some(var.clone()),
        _ => None,
    })
    .collect()
}

/// `(name, value)` of every credential variable set in cairn's environment whose value is a credential, for
/// the redactor.
pub fn credential_values(config: &Config) -> Vec<(String, zeroize::Zeroizing<String>)> {
    CREDENTIAL_VALUES
        .iter()
        .map(|n| (*n).to_owned())
        .chain(named_credential_envs(config))
        .filter_map(|name| {
            let value = std::env::var(&name).ok()?;
            Some((name, zeroize::Zeroizing::new(value)))
        })
        .collect()
}

/// One task instance, ready to run: commands interpolated, environment and directory resolved.
#[derive(Debug, Clone)]
pub struct Job {
    /// The graph node it came from.
    pub node: NodeId,
    /// The instance's name, e.g. `deploy:production`.
    pub label: String,
    /// Command lines, run in order; the first to fail fails the task.
    pub commands: Vec<String>,
    /// Byte offsets in each command line where `{{changed}}` goes (incremental tasks).
    pub changed_slots: Vec<Vec<usize>>,
    /// The program and arguments each line is appended to (shared by the jobs of a plan that use it).
    pub shell: Arc<[String]>,
    /// Whether the shell is cairn's default, so that a line with no shell syntax may be run directly.
    pub default_shell: bool,
    /// Variables passed from cairn's environment that every strict task gets ([`ALWAYS_PASSED`]), shared by
    /// all jobs of a plan.
    pub base_env: Arc<[(String, String)]>,
    /// The task's own variables, added after `base_env` (the whole environment when `clear_env`, else what is
    /// added to cairn's).
    pub env: Vec<(String, String)>,
    /// Whether the task starts from an empty environment (the default: strict).
    pub clear_env: bool,
    /// Working directory.
    pub dir: PathBuf,
    /// How long one attempt may take.
    pub timeout: Option<Duration>,
    /// How many times a failed attempt is repeated.
    pub retries: u32,
    /// The question to ask before running, if the task asks one.
    pub confirm: Option<String>,
    /// Whether the task was named on the command line.
    pub is_target: bool,
    /// Whether its cache key is needed: it is cacheable, or a cacheable task's key includes it (through any
    /// chain of dependencies). Other tasks compute no key at all.
    pub needs_key: bool,
    /// What goes into its cache key.
    pub key: KeySpec,
    /// The secrets it asks for (`secrets` in tasks.toml), resolved to a file.
    pub secrets: Option<SecretsRequest>,
    /// The values decrypted for it before the run started (see `secrets::prepare`): what its processes get.
    pub injection: Option<Arc<super::secrets::Injection>>,
    /// The plugin that rewrites its commands (`executor`).
    pub executor: Option<String>,
    /// The plugin that runs it on its inputs instead of commands (`plugin`).
    pub plugin: Option<String>,
    /// The named lock it holds while it runs, and the file that implements it.
    pub lock: Option<(String, PathBuf)>,
    /// Whether each run is written to the audit log.
    pub audit: bool,
    /// Whether it needs `--yes` in CI.
    pub protected: bool,
    /// The health check after success: command, further tries, interval.
    pub check: Option<(String, u32, Duration)>,
    /// The command run when the task or its check fails.
    pub rollback: Option<String>,
    /// The rollout it is part of, as an instance of a task's matrix with `serial` or `max_parallel`.
    pub rollout: Option<RolloutSlot>,
    /// Whether it is a service: a long-running process `cairn watch` keeps up beside the runs.
    pub service: bool,
    /// `remote_execution` as written: `false` keeps it here, `true` sends it even with its secrets.
    pub remote_execution: Option<bool>,
    /// Its own REAPI platform properties (over `[remote_execution] platform`).
    pub platform: Vec<(String, String)>,
}

/// A job's place in a rollout: the scheduler runs at most `max_parallel` jobs of one group at once, and
/// starts none once one of them has failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutSlot {
    /// The group node's id in the graph, shared by every instance of the rollout.
    pub group: NodeId,
    /// Instances at once.
    pub max_parallel: usize,
    /// Whether instances start in matrix order, each after the one before it has succeeded.
    pub serial: bool,
    /// Its position among the selected instances of its group, in matrix order.
    pub rank: usize,
}

/// A task's `secrets`, with its params applied.
#[derive(Debug, Clone)]
pub struct SecretsRequest {
    /// The secrets file (the tasks.toml directory when the task reads only plugins).
    pub file: PathBuf,
    /// The file as written after interpolation, relative to the tasks.toml directory.
    pub relative: String,
    /// Where `from` is written, for diagnostics.
    pub span: crate::config::Span,
    /// `(variable, key)` pairs given as environment variables.
    pub env: Vec<(String, String)>,
    /// `(variable, key)` pairs given as files (the variable holds the path).
    pub files: Vec<(String, String)>,
    /// The task's environment: the value of its `env` param, if it has one.
    pub environment: Option<String>,
    /// Other environments it may read (`allow_envs`).
    pub allow_envs: Vec<String>,
}

/// The jobs of a selection, in dependency order, with their dependencies as indexes into `jobs`.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Jobs in an order that respects every dependency.
    pub jobs: Vec<Arc<Job>>,
    /// For each job, the indexes of the jobs it depends on.
    pub deps: Vec<Vec<usize>>,
}

/// Marks the jobs whose keys are needed: cacheable ones and, transitively, their dependencies.
fn mark_needed_keys(jobs: &mut [Arc<Job>], deps: &[Vec<usize>]) {
    // Plan order puts dependencies first, so walking it backwards sees every dependent before its deps.
    let mut needed: Vec<bool> = jobs
        .iter()
        .map(|j| j.needs_key || j.key.cacheable)
        .collect();
    for i in (0..jobs.len()).rev() {
        if needed[i] {
            for &d in &deps[i] {
                needed[d] = true;
            }
        }
    }
    for (job, needed) in jobs.iter_mut().zip(needed) {
        if needed != job.needs_key {
            unshared(job).needs_key = needed;
        }
    }
}

/// A job being planned, which nothing else holds yet.
fn unshared(job: &mut Arc<Job>) -> &mut Job {
    Arc::make_mut(job)
}

/// Numbers the selected instances of each rollout 0, 1, … in matrix order, so a serial rollout of a subset
/// (one named instance, say) waits for nothing outside it.
fn rank_rollouts(jobs: &mut [Arc<Job>]) {
    let mut members: std::collections::HashMap<NodeId, Vec<(usize, usize)>> =
        std::collections::HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        if let Some(slot) = job.rollout {
            members.entry(slot.group).or_default().push((slot.rank, i));
        }
    }
    for mut list in members.into_values() {
        list.sort_unstable();
        for (rank, (_, i)) in list.into_iter().enumerate() {
            if jobs[i].rollout.is_some_and(|slot| slot.rank != rank) {
                if let Some(slot) = unshared(&mut jobs[i]).rollout.as_mut() {
                    slot.rank = rank;
                }
            }
        }
    }
}

/// cairn's own environment, read once per plan.
struct Caller {
    /// This cairn's executable, which tasks get as `CAIRN` to call cairn back (like make's `$(MAKE)`).
    exe: Option<String>,
    all: Vec<(String, String)>,
    /// Credential variables, handed out only to a task that names them exactly.
    credentials: Vec<String>,
    base: Arc<[(String, String)]>,
    none: Arc<[(String, String)]>,
    /// `[settings] shell`, shared by every job that does not set its own.
    shell: Arc<[String]>,
    /// Whether that shell is cairn's default.
    shell_is_default: bool,
}

impl Caller {
    fn read(config: &Config) -> Caller {
        let all: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let exe = std::env::current_exe()
            .ok()
            .and_then(|p| p.into_os_string().into_string().ok());
        let mut base: Vec<(String, String)> = all
            .iter()
            .filter(|(name, _)| ALWAYS_PASSED.iter().any(|p| env_matches(name, p)))
            .cloned()
            .collect();
        // Shared by every strict task of the plan, so it costs nothing per task.
        base.extend(exe.iter().map(|e| ("CAIRN".to_owned(), e.clone())));
        Caller {
            exe,
            all,
            credentials: credential_vars(config),
            base: Arc::from(base),
            none: Arc::from(Vec::new()),
            shell: Arc::from(config.settings.shell.as_slice()),
            shell_is_default: config
                .settings
                .shell
                .iter()
                .map(String::as_str)
                .eq(DEFAULT_SHELL),
        }
    }
}

/// The environment variable a task receives a param's value in: `CAIRN_PARAM_` and its name in upper case,
/// `-` becoming `_`.
pub fn param_variable(param: &str) -> String {
    format!("CAIRN_PARAM_{}", param.to_uppercase().replace('-', "_"))
}

/// Whether `name` is matched by `pattern` (`NAME`, `PREFIX_*` or `*`).
pub fn env_matches(name: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

impl Plan {
    /// Whether any task of the plan uses the cache.
    pub fn uses_cache(&self) -> bool {
        self.jobs.iter().any(|j| j.needs_key)
    }

    /// Resolves every node of `selection`; `args` (the command line's `-- ARGS`) go to the targets only.
    pub fn new(graph: &TaskGraph, selection: &Selection, args: &[String]) -> Plan {
        let config = graph.config();
        let mut position = vec![usize::MAX; graph.nodes().len()];
        for (i, &id) in selection.order.iter().enumerate() {
            position[id] = i;
        }
        let mut targeted = vec![false; graph.nodes().len()];
        for &id in &selection.targets {
            targeted[id] = true;
        }
        let caller = Caller::read(config);
        // Each job goes straight to its shared home: no second copy of a plan's worth of jobs.
        let mut jobs: Vec<Arc<Job>> = selection
            .order
            .iter()
            .map(|&id| {
                let args = if targeted[id] { args } else { &[] };
                Arc::new(job(config, graph, id, targeted[id], args, &caller))
            })
            .collect();
        let deps: Vec<Vec<usize>> = selection
            .order
            .iter()
            .map(|&id| graph.node(id).deps.iter().map(|&d| position[d]).collect())
            .collect();
        rank_rollouts(&mut jobs);
        mark_needed_keys(&mut jobs, &deps);
        Plan { jobs, deps }
    }

    /// The plan of the jobs `keep` marks and what they need, in the same order (`--affected`). A job that runs
    /// something needs every dependency; a group (deps only) needs none, so `ci` keeps only its kept members.
    pub fn restrict(&self, keep: &[bool]) -> Plan {
        let mut kept = keep.to_vec();
        // Dependents come after their dependencies, so walking backwards reaches every dependency in one pass.
        for i in (0..self.jobs.len()).rev() {
            let job = &self.jobs[i];
            if kept[i] && (!job.commands.is_empty() || job.plugin.is_some()) {
                for &d in &self.deps[i] {
                    kept[d] = true;
                }
            }
        }
        let mut position = vec![usize::MAX; self.jobs.len()];
        let mut jobs = Vec::new();
        for (i, job) in self.jobs.iter().enumerate() {
            if kept[i] {
                position[i] = jobs.len();
                jobs.push(Arc::clone(job));
            }
        }
        let deps = (0..self.jobs.len())
            .filter(|&i| kept[i])
            .map(|i| {
                self.deps[i]
                    .iter()
                    .filter(|&&d| kept[d])
                    .map(|&d| position[d])
                    .collect()
            })
            .collect();
        // A serial rollout of fewer hosts still starts at rank 0.
        rank_rollouts(&mut jobs);
        Plan { jobs, deps }
    }
}

fn digest(name: &str, value: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(name.as_bytes());
    hasher.update(b"=");
    hasher.update(value.as_bytes());
    hex(hasher.finalize().as_bytes())
}

fn job(
    config: &Config,
    graph: &TaskGraph,
    id: NodeId,
    is_target: bool,
    args: &[String],
    caller: &Caller,
) -> Job {
    let node = graph.node(id);
    let def = &config.tasks[node.task];
    if node.role == Role::Group {
        return group_job(config, graph, id, is_target);
    }
    let vars = graph.vars();
    // Values a param's `pattern` lets through may hold anything the pattern allows, and come from whoever runs
    // cairn (CI passing `deploy:$BRANCH`): shell commands refer to them through their environment variable
    // instead of holding them, so no value is ever read as code. (Other free-form values are limited to
    // characters that mean nothing to a shell.)
    let free_form = |i: usize| {
        def.params
            .get(i)
            .filter(|p| p.pattern.is_some())
            .map(|p| param_variable(&p.name))
    };
    let quoted_args = args
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let (mut commands, changed_slots): (Vec<String>, Vec<Vec<usize>>) = def
        .run
        .iter()
        .map(|t| t.render_with_slots(vars, &node.params, &quoted_args, &free_form))
        .unzip();
    if !quoted_args.is_empty() && !def.run.iter().any(|t| t.uses_args()) {
        if let Some(last) = commands.last_mut() {
            last.push(' ');
            last.push_str(&quoted_args);
        }
    }

    let pass_all = def.env_pass.iter().any(|p| p == "*");
    let mut env: Vec<(String, String)> = Vec::new();
    let mut key_env = BTreeMap::new();
    // Most tasks declare nothing to take from the caller: they only share the plan's base environment.
    if !def.env_hash.is_empty() || !def.env_pass.is_empty() {
        let named = |name: &str| def.env_pass.iter().chain(&def.env_hash).any(|p| p == name);
        for (name, value) in &caller.all {
            if caller.credentials.contains(name) && !named(name) {
                continue;
            }
            let hashed = def.env_hash.iter().any(|p| env_matches(name, p));
            if hashed {
                key_env.insert(name.clone(), digest(name, value));
            }
            let passed = hashed || def.env_pass.iter().any(|p| env_matches(name, p));
            let in_base = ALWAYS_PASSED.iter().any(|p| env_matches(name, p));
            if passed && (pass_all || !in_base) {
                env.push((name.clone(), value.clone()));
            }
        }
    }
    for (name, template) in &def.env {
        let value = template.render(vars, &node.params, "");
        key_env.insert(name.clone(), digest(name, &value));
        env.push((name.clone(), value));
    }
    env.push(("CAIRN_TASK".into(), node.label.to_string()));
    if pass_all {
        if let Some(exe) = &caller.exe {
            env.push(("CAIRN".into(), exe.clone()));
        }
    }
    for (param, value) in def.param_names().zip(&node.params) {
        let name = param_variable(param);
        env.push((name, value.clone()));
    }

    let relative_dir = def
        .dir
        .as_ref()
        .map_or_else(|| ".".to_owned(), |d| d.render(vars, &node.params, ""));
    let dir = if relative_dir == "." {
        config.root.clone()
    } else {
        config.root.join(&relative_dir)
    };
    let (shell, default_shell) = match &def.shell {
        None => (Arc::clone(&caller.shell), caller.shell_is_default),
        Some(own) => (
            Arc::from(own.as_slice()),
            own.iter().map(String::as_str).eq(DEFAULT_SHELL),
        ),
    };
    // Patterns may name params (`modules/hosts/{{host}}/**`) and their entries' facts
    // (`modules/home/{{host.users}}.nix`, one pattern per user). A value can only add text inside the
    // repository: a rendered pattern that would leave it (`..`, a leading `/`) is dropped, as it could match
    // nothing cairn hashes.
    let globs = |list: &[crate::config::template::Template]| -> Vec<String> {
        list.iter()
            .flat_map(|t| t.render_patterns(vars, &node.params))
            .filter(|p| {
                let bare = p.strip_prefix('!').unwrap_or(p);
                !bare.is_empty() && !bare.starts_with('/') && !bare.split('/').any(|c| c == "..")
            })
            .collect()
    };
    let input_globs = globs(&def.input_templates);
    // A task plugin given credentials (allow.env, secrets) may put them in what it returns, like a task with
    // secrets: its results stay on this machine unless the task says otherwise.
    let plugin_holds_grants = def.plugin.as_ref().is_some_and(|name| {
        config
            .plugins
            .iter()
            .any(|p| p.name == name.value && (!p.allow_env.is_empty() || !p.secrets.is_empty()))
    });
    let output_globs = globs(&def.output_templates);
    // Patterns were checked when the file was loaded; they compile when first used, on the task's thread.
    let compile = |list: &[String]| GlobList::lazy(list);
    let key = KeySpec {
        task: def.name.text.to_string(),
        params: def
            .param_names()
            .map(str::to_owned)
            .zip(node.params.iter().cloned())
            .collect(),
        commands: commands.clone(),
        shell: shell.clone(),
        dir: relative_dir,
        args: args.to_vec(),
        inputs: compile(&input_globs),
        input_globs,
        outputs: compile(&output_globs),
        output_globs,
        env: key_env,
        deps_strategy: def.deps_strategy,
        cacheable: def.cacheable(),
        // Secrets reach a task's outputs more easily than its logs (which are redacted): such a task's results
        // stay on this machine unless it says otherwise.
        remote: def
            .remote
            .unwrap_or(if def.secrets.is_none() && !plugin_holds_grants {
                RemoteMode::ReadWrite
            } else {
                RemoteMode::Off
            }),
        incremental: def.incremental,
    };
    Job {
        node: id,
        label: node.label.to_string(),
        commands,
        changed_slots,
        shell,
        default_shell,
        base_env: if pass_all {
            caller.none.clone()
        } else {
            caller.base.clone()
        },
        env,
        // Even `env_pass = ["*"]` gets a built environment, never cairn's own: credentials stay behind.
        clear_env: true,
        dir,
        timeout: def.timeout,
        retries: def.retries,
        // A matrix asks once, for the whole group.
        confirm: if node.role == Role::Plain {
            confirmation(def, vars, node)
        } else {
            None
        },
        is_target,
        needs_key: false,
        key,
        injection: None,
        secrets: def.secrets.as_ref().map(|s| {
            let relative = s
                .from
                .as_ref()
                .map(|f| f.render(vars, &node.params, ""))
                .unwrap_or_default();
            let pairs = |list: &[(String, crate::config::Spanned<String>)]| {
                list.iter()
                    .map(|(var, key)| (var.clone(), key.value.clone()))
                    .collect()
            };
            SecretsRequest {
                file: config.root.join(&relative),
                relative,
                span: s.from_span.clone(),
                env: pairs(&s.env),
                files: pairs(&s.files),
                environment: def
                    .params
                    .iter()
                    .position(|p| p.name == "env")
                    .map(|i| node.params[i].clone()),
                allow_envs: s.allow_envs.clone(),
            }
        }),
        executor: def.executor.as_ref().map(|e| e.value.clone()),
        plugin: def.plugin.as_ref().map(|p| p.value.clone()),
        lock: def.lock.as_ref().map(|l| {
            let name = l.render(vars, &node.params, "");
            let file: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let path = config
                .root
                .join(".cairn/locks")
                .join(format!("{file}.lock"));
            (name, path)
        }),
        audit: def.audit,
        protected: def.protected && node.role == Role::Plain,
        check: def.check.as_ref().map(|c| {
            let command = c
                .run
                .render_with_slots(vars, &node.params, "", &free_form)
                .0;
            (command, c.retries, c.interval)
        }),
        rollback: def
            .rollback
            .as_ref()
            .map(|r| r.render_with_slots(vars, &node.params, "", &free_form).0),
        rollout: match (node.role, def.rollout) {
            (Role::Instance { group, position }, Some(rollout)) => Some(RolloutSlot {
                group,
                max_parallel: rollout.max_parallel,
                serial: rollout.serial,
                rank: position,
            }),
            _ => None,
        },
        service: def.service && node.role != Role::Group,
        remote_execution: def.remote_execution,
        platform: def.platform.clone(),
    }
}

/// The question a task asks before the run: its `confirm`, or the one `protected` implies.
fn confirmation(
    def: &crate::config::TaskDef,
    vars: &[String],
    node: &crate::graph::Node,
) -> Option<String> {
    let applies = def
        .confirm_when
        .iter()
        .all(|(param, values)| values.contains(&node.params[*param]));
    def.confirm
        .as_ref()
        .filter(|_| applies)
        .map(|q| q.render(vars, &node.params, ""))
        .or_else(|| {
            def.protected
                .then(|| format!("`{}` is protected. Run it?", node.label))
        })
}

/// The group node of a matrix task: it runs nothing itself, asks the task's question once and waits for its
/// instances.
fn group_job(config: &Config, graph: &TaskGraph, id: NodeId, is_target: bool) -> Job {
    let node = graph.node(id);
    let def = &config.tasks[node.task];
    let mut job = empty_job(&node.label);
    job.node = id;
    job.dir = config.root.clone();
    job.is_target = is_target;
    job.confirm = confirmation(def, graph.vars(), node);
    job.protected = def.protected;
    job.key.task = def.name.text.to_string();
    job.key.params = def
        .params
        .iter()
        .map(|p| p.name.clone())
        .zip(node.params.iter().cloned())
        .collect();
    job
}

/// A job that runs nothing, with an empty key.
fn empty_job(label: &str) -> Job {
    let none = GlobList::new(&[]).expect("no patterns");
    Job {
        node: 0,
        label: label.into(),
        commands: vec![],
        changed_slots: vec![],
        shell: DEFAULT_SHELL.iter().map(|s| (*s).to_owned()).collect(),
        default_shell: true,
        base_env: Arc::from(Vec::new()),
        env: vec![],
        clear_env: true,
        dir: ".".into(),
        timeout: None,
        retries: 0,
        confirm: None,
        is_target: false,
        needs_key: false,
        key: KeySpec {
            task: label.into(),
            params: BTreeMap::new(),
            commands: vec![],
            shell: Arc::from(Vec::new()),
            dir: ".".into(),
            args: vec![],
            input_globs: vec![],
            inputs: none.clone(),
            output_globs: vec![],
            outputs: none,
            env: BTreeMap::new(),
            deps_strategy: crate::config::DepsStrategy::Key,
            cacheable: false,
            remote: RemoteMode::Off,
            incremental: false,
        },
        secrets: None,
        injection: None,
        executor: None,
        plugin: None,
        lock: None,
        audit: false,
        protected: false,
        check: None,
        rollback: None,
        rollout: None,
        service: false,
        remote_execution: None,
        platform: Vec::new(),
    }
}

impl Job {
    /// This job with `{{changed}}` filled in and `CAIRN_CHANGED_FILES` naming `list_file`.
    pub fn with_changed(&self, changed: &[String], list_file: &std::path::Path) -> Job {
        let quoted = changed
            .iter()
            .map(|p| shell_quote(p))
            .collect::<Vec<_>>()
            .join(" ");
        let mut job = self.clone();
        for (line, slots) in job.commands.iter_mut().zip(&self.changed_slots) {
            for &at in slots.iter().rev() {
                line.insert_str(at, &quoted);
            }
        }
        job.env.push((
            "CAIRN_CHANGED_FILES".into(),
            list_file.display().to_string(),
        ));
        job
    }
}

/// A job with nothing to run, for tests of the scheduler and executor.
#[cfg(test)]
pub(crate) fn test_job(label: &str) -> Job {
    let mut job = empty_job(label);
    job.shell = Arc::from(vec!["bash".to_owned(), "-c".to_owned()]);
    job.clear_env = false;
    job.is_target = true;
    job
}
