//! A selected task instance resolved into everything needed to run it.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::template::shell_quote;
use crate::config::{Config, DEFAULT_SHELL};
use crate::graph::{NodeId, Selection, TaskGraph};

/// One task instance, ready to run: commands interpolated, environment and directory resolved.
#[derive(Debug, Clone)]
pub struct Job {
    /// The graph node it came from.
    pub node: NodeId,
    /// The instance's name, e.g. `deploy:production`.
    pub label: String,
    /// Command lines, run in order; the first to fail fails the task.
    pub commands: Vec<String>,
    /// The program and arguments each line is appended to.
    pub shell: Vec<String>,
    /// Whether the shell is cairn's default, so that a line with no shell syntax may be run directly.
    pub default_shell: bool,
    /// Variables added to the environment.
    pub env: Vec<(String, String)>,
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
}

/// The jobs of a selection, in dependency order, with their dependencies as indexes into `jobs`.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Jobs in an order that respects every dependency.
    pub jobs: Vec<Job>,
    /// For each job, the indexes of the jobs it depends on.
    pub deps: Vec<Vec<usize>>,
}

impl Plan {
    /// Resolves every node of `selection`; `args` (the command line's `-- ARGS`) go to the targets only.
    pub fn new(graph: &TaskGraph, selection: &Selection, args: &[String]) -> Plan {
        let config = graph.config();
        let mut position = vec![usize::MAX; graph.nodes().len()];
        for (i, &id) in selection.order.iter().enumerate() {
            position[id] = i;
        }
        let quoted_args = args
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ");
        let mut targeted = vec![false; graph.nodes().len()];
        for &id in &selection.targets {
            targeted[id] = true;
        }
        let jobs = selection
            .order
            .iter()
            .map(|&id| {
                let is_target = targeted[id];
                let args = if is_target { quoted_args.as_str() } else { "" };
                job(config, graph, id, is_target, args)
            })
            .collect();
        let deps = selection
            .order
            .iter()
            .map(|&id| graph.node(id).deps.iter().map(|&d| position[d]).collect())
            .collect();
        Plan { jobs, deps }
    }
}

fn job(config: &Config, graph: &TaskGraph, id: NodeId, is_target: bool, args: &str) -> Job {
    let node = graph.node(id);
    let def = &config.tasks[node.task];
    let vars = graph.vars();
    let mut commands: Vec<String> = def
        .run
        .iter()
        .map(|t| t.render(vars, &node.params, args))
        .collect();
    if !args.is_empty() && !def.run.iter().any(|t| t.uses_args()) {
        if let Some(last) = commands.last_mut() {
            last.push(' ');
            last.push_str(args);
        }
    }
    let mut env: Vec<(String, String)> = def
        .env
        .iter()
        .map(|(name, value)| (name.clone(), value.render(vars, &node.params, "")))
        .collect();
    env.push(("CAIRN_TASK".into(), node.label.clone()));
    for (param, value) in def.params.iter().zip(&node.params) {
        let name = format!(
            "CAIRN_PARAM_{}",
            param.name.to_uppercase().replace('-', "_")
        );
        env.push((name, value.clone()));
    }
    let dir = match &def.dir {
        Some(dir) => config.root.join(dir.render(vars, &node.params, "")),
        None => config.root.clone(),
    };
    let shell = config.shell_for(def).to_vec();
    let default_shell = shell.iter().map(String::as_str).eq(DEFAULT_SHELL);
    Job {
        node: id,
        label: node.label.clone(),
        commands,
        shell,
        default_shell,
        env,
        dir,
        timeout: def.timeout,
        retries: def.retries,
        confirm: def
            .confirm
            .as_ref()
            .map(|q| q.render(vars, &node.params, "")),
        is_target,
    }
}
