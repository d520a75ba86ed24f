//! Config → [`TaskGraph`]: every task instance (a task with its param values) and the edges between them.
//!
//! Building expands pattern tasks for every combination of their listed values and checks that every
//! dependency exists and that there is no cycle; a [`Selection`] then picks the part a run needs, in an order
//! that respects every edge. Nothing downstream checks these again.

mod error;
mod render;
mod resolve;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use miette::LabeledSpan;

use crate::config::source::to_source_span;
use crate::config::{Config, Span};
pub use error::GraphError;
pub use render::GraphFormat;
use resolve::{Resolver, Unresolved};

/// Index of a node in a [`TaskGraph`].
pub type NodeId = usize;

/// Splits `task[values]` into the task's name and the bracketed part, if there is one.
fn split_instance(target: &str) -> (&str, Option<&str>) {
    match target.strip_suffix(']').and_then(|t| t.rsplit_once('[')) {
        Some((group, values)) if !group.is_empty() => (group, Some(values)),
        _ => (target, None),
    }
}

/// Pattern tasks with more combinations of listed values than this are only checked at their defaults.
const MAX_STATIC_COMBINATIONS: usize = 4096;

/// One task instance.
#[derive(Debug, Clone)]
pub struct Node {
    /// Index into `Config::tasks`.
    pub task: usize,
    /// Param values, in the order of the task's params.
    pub params: Vec<String>,
    /// The instance's name, e.g. `deploy:production`.
    pub label: compact_str::CompactString,
    /// What it depends on. (Where each is written is found again only for an error: see `edge_span`.)
    pub deps: Vec<NodeId>,
    /// Its place in a matrix, if its task has one.
    pub role: Role,
}

/// How a node relates to its task's matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The task has no matrix.
    Plain,
    /// The task instance as named (`deploy:production`): it runs nothing itself and depends on every
    /// instance of its matrix.
    Group,
    /// One combination of matrix values (`deploy:production[NIXY]`), whose params end with those values.
    Instance {
        /// The group it belongs to.
        group: NodeId,
        /// Its position in the matrix, in file order.
        position: usize,
    },
}

/// The validated, acyclic graph of task instances.
#[derive(Debug)]
pub struct TaskGraph {
    config: Arc<Config>,
    vars: Vec<String>,
    resolver: Resolver,
    nodes: Vec<Node>,
    index: Instances,
}

/// Every instance made so far, by task and param values.
#[derive(Debug)]
struct Instances {
    /// The instance of each task without params, by task (`NONE` until it is made): most of a large graph,
    /// kept out of the map, where each key costs 40 bytes.
    plain: Vec<NodeId>,
    /// Instances with param values.
    with_params: HashMap<(usize, Vec<String>), NodeId>,
}

impl Instances {
    const NONE: NodeId = NodeId::MAX;

    fn new(tasks: usize) -> Instances {
        Instances {
            plain: vec![Instances::NONE; tasks],
            with_params: HashMap::new(),
        }
    }

    fn get(&self, task: usize, params: &[String]) -> Option<NodeId> {
        if params.is_empty() {
            let id = self.plain[task];
            (id != Instances::NONE).then_some(id)
        } else {
            self.with_params.get(&(task, params.to_vec())).copied()
        }
    }

    fn insert(&mut self, task: usize, params: Vec<String>, id: NodeId) {
        if params.is_empty() {
            self.plain[task] = id;
        } else {
            self.with_params.insert((task, params), id);
        }
    }
}

/// The part of a graph that a run needs: the targets and everything they depend on, ordered.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The targets, as named on the command line, without repeats.
    pub targets: Vec<NodeId>,
    /// Every selected node, each after all of its dependencies.
    pub order: Vec<NodeId>,
}

impl TaskGraph {
    /// Builds the graph of every statically known instance and validates it.
    pub fn build(config: Arc<Config>) -> Result<TaskGraph, GraphError> {
        let mut graph = TaskGraph {
            vars: config.var_values(),
            resolver: Resolver::new(&config),
            nodes: Vec::with_capacity(config.tasks.len()),
            index: Instances::new(config.tasks.len()),
            config,
        };
        let mut pending = Vec::new();
        for task in 0..graph.config.tasks.len() {
            for values in static_instances(&graph.config, task) {
                graph.intern(task, values, &mut pending);
            }
        }
        graph.expand(pending)?;
        graph.check_acyclic(0..graph.nodes.len())?;
        Ok(graph)
    }

    /// The configuration this graph was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The values of `[vars]`, in order.
    pub fn vars(&self) -> &[String] {
        &self.vars
    }

    /// A node by id.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// All nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Selects `targets` (task names as on the command line) and everything they depend on.
    pub fn select(&mut self, targets: &[String]) -> Result<Selection, GraphError> {
        let first_new = self.nodes.len();
        let mut pending = Vec::new();
        let mut roots = Vec::with_capacity(targets.len());
        let mut errors = Vec::new();
        // `deploy:production[NIXY]` names one instance of a matrix: its group is resolved, then the instance.
        let mut instances = Vec::new();
        for target in targets {
            let (group_name, instance) = split_instance(target);
            match self.resolver.resolve(&self.config, group_name) {
                Ok((task, values)) => {
                    let id = self.intern(task, values, &mut pending);
                    match instance {
                        Some(_) => instances.push((id, target)),
                        None if !roots.contains(&id) => roots.push(id),
                        None => {}
                    }
                }
                Err(unresolved) => errors.push(self.target_error(group_name, unresolved)),
            }
        }
        if !errors.is_empty() {
            return Err(GraphError::collect(errors));
        }
        self.expand(pending)?;
        for (group, target) in instances {
            let found = self.nodes[group]
                .deps
                .iter()
                .copied()
                .filter(|_| self.nodes[group].role == Role::Group)
                .find(|&d| self.nodes[d].label == *target);
            match found {
                Some(id) if !roots.contains(&id) => roots.push(id),
                Some(_) => {}
                None => {
                    let known: Vec<&str> = if self.nodes[group].role == Role::Group {
                        self.nodes[group]
                            .deps
                            .iter()
                            .map(|&d| self.nodes[d].label.as_str())
                            .collect()
                    } else {
                        Vec::new()
                    };
                    errors.push(GraphError::UnknownTarget {
                        target: target.clone(),
                        help: Some(if known.is_empty() {
                            format!("`{}` has no matrix instances", self.nodes[group].label)
                        } else {
                            format!(
                                "its instances are {}",
                                known
                                    .iter()
                                    .map(|k| format!("`{k}`"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        }),
                    });
                }
            }
        }
        if !errors.is_empty() {
            return Err(GraphError::collect(errors));
        }
        self.check_acyclic(first_new..self.nodes.len())?;
        Ok(self.closure(roots))
    }

    /// Selects every statically known instance.
    pub fn select_all(&self) -> Selection {
        self.closure((0..self.nodes.len()).collect())
    }

    /// The targets and everything they depend on, in dependency order (ties broken by node id).
    fn closure(&self, targets: Vec<NodeId>) -> Selection {
        let mut selected = vec![false; self.nodes.len()];
        let mut stack = targets.clone();
        let mut members = Vec::new();
        while let Some(id) = stack.pop() {
            if !std::mem::replace(&mut selected[id], true) {
                members.push(id);
                stack.extend(
                    self.nodes[id]
                        .deps
                        .iter()
                        .copied()
                        .filter(|&d| !selected[d]),
                );
            }
        }
        // Each node's dependents, in one array (offsets per node) instead of a vector per node: a large graph's
        // selection spent most of its time allocating and chasing those.
        let mut waiting = vec![0usize; self.nodes.len()];
        let mut start = vec![0usize; self.nodes.len() + 1];
        for &id in &members {
            for &dep in &self.nodes[id].deps {
                waiting[id] += 1;
                start[dep + 1] += 1;
            }
        }
        for i in 0..self.nodes.len() {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut edges = vec![0 as NodeId; start[self.nodes.len()]];
        for &id in &members {
            for &dep in &self.nodes[id].deps {
                edges[fill[dep]] = id;
                fill[dep] += 1;
            }
        }
        let dependents = |id: NodeId| &edges[start[id]..start[id + 1]];
        let mut ready: BinaryHeap<Reverse<NodeId>> = members
            .iter()
            .copied()
            .filter(|&id| waiting[id] == 0)
            .map(Reverse)
            .collect();
        let mut order = Vec::with_capacity(members.len());
        while let Some(Reverse(id)) = ready.pop() {
            order.push(id);
            for &next in dependents(id) {
                waiting[next] -= 1;
                if waiting[next] == 0 {
                    ready.push(Reverse(next));
                }
            }
        }
        debug_assert_eq!(
            order.len(),
            members.len(),
            "graph is acyclic by construction"
        );
        Selection { targets, order }
    }

    fn intern(&mut self, task: usize, params: Vec<String>, pending: &mut Vec<NodeId>) -> NodeId {
        if let Some(id) = self.index.get(task, &params) {
            return id;
        }
        let id = self.nodes.len();
        let def = &self.config.tasks[task];
        let label = def.name.instance(&params);
        let role = if def.matrix.is_empty() {
            Role::Plain
        } else {
            Role::Group
        };
        self.nodes.push(Node {
            task,
            params: params.clone(),
            label: label.into(),
            deps: Vec::new(),
            role,
        });
        self.index.insert(task, params, id);
        pending.push(id);
        id
    }

    /// Connects every pending node to its dependencies, creating instances as they are named.
    fn expand(&mut self, mut pending: Vec<NodeId>) -> Result<(), GraphError> {
        let config = Arc::clone(&self.config);
        let mut errors = Vec::new();
        while let Some(id) = pending.pop() {
            let def = &config.tasks[self.nodes[id].task];
            if self.nodes[id].role == Role::Group {
                match self.fan_out(id, &mut pending) {
                    Ok(()) => {}
                    Err(error) => errors.push(error),
                }
                continue;
            }
            let mut deps = Vec::with_capacity(def.deps.len());
            for dep in &def.deps {
                let name = dep.template.render(&self.vars, &self.nodes[id].params, "");
                match self.resolver.resolve(&config, &name) {
                    // A group may gather services (`dev = [serve, lint]`); a task that does something would
                    // wait for one forever.
                    Ok((task, _))
                        if config.tasks[task].service
                            && (!def.run.is_empty() || def.plugin.is_some()) =>
                    {
                        errors.push(GraphError::DependsOnService {
                            task: self.nodes[id].label.to_string(),
                            service: name.clone(),
                            src: config.source.clone(),
                            span: to_source_span(&dep.span),
                        });
                    }
                    Ok((task, values)) => {
                        let target = self.intern(task, values, &mut pending);
                        if !deps.contains(&target) {
                            deps.push(target);
                        }
                    }
                    Err(unresolved) => {
                        errors.push(self.dependency_error(id, &name, &dep.span, unresolved));
                    }
                }
            }
            self.nodes[id].deps = deps;
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(GraphError::collect(errors))
        }
    }

    /// Creates the instances of a group node's matrix, in order, and makes the group depend on them.
    fn fan_out(&mut self, id: NodeId, pending: &mut Vec<NodeId>) -> Result<(), GraphError> {
        let config = Arc::clone(&self.config);
        let def = &config.tasks[self.nodes[id].task];
        let params = self.nodes[id].params.clone();
        let mut combinations: Vec<Vec<String>> = vec![Vec::new()];
        for matrix in &def.matrix {
            let values = matrix
                .values
                .resolve(&self.vars, &params)
                .map_err(|error| {
                    let (span, file) = match &matrix.values {
                        crate::config::MatrixValues::File { span, file, .. } => {
                            (span.clone(), Some(file.name.clone()))
                        }
                        crate::config::MatrixValues::Listed(_) => (matrix.span.clone(), None),
                    };
                    GraphError::Matrix {
                        task: self.nodes[id].label.to_string(),
                        message: error.message,
                        src: config.source.clone(),
                        span: to_source_span(&span),
                        help: error.help.or_else(|| file.map(|f| format!("check `{f}`"))),
                    }
                })?;
            combinations = combinations
                .into_iter()
                .flat_map(|prefix| {
                    values.iter().map(move |value| {
                        let mut next = prefix.clone();
                        next.push(value.clone());
                        next
                    })
                })
                .collect();
        }
        let mut instances = Vec::with_capacity(combinations.len());
        for (position, combination) in combinations.into_iter().enumerate() {
            let label = format!("{}[{}]", self.nodes[id].label, combination.join(","));
            let mut full = params.clone();
            full.extend(combination);
            let task = self.nodes[id].task;
            let instance = match self.index.get(task, &full) {
                Some(existing) => existing,
                None => {
                    let instance = self.nodes.len();
                    self.nodes.push(Node {
                        task,
                        params: full.clone(),
                        label: label.into(),
                        deps: Vec::new(),
                        role: Role::Instance {
                            group: id,
                            position,
                        },
                    });
                    self.index.insert(task, full, instance);
                    instance
                }
            };
            instances.push(instance);
        }
        self.nodes[id].deps = instances.clone();
        pending.extend(instances.into_iter().rev());
        Ok(())
    }

    /// Finds a cycle reachable from `from`, reporting it with the span of each edge.
    fn check_acyclic(&self, from: std::ops::Range<NodeId>) -> Result<(), GraphError> {
        const NEW: u8 = 0;
        const ON_STACK: u8 = 1;
        const DONE: u8 = 2;
        let mut state = vec![NEW; self.nodes.len()];
        for start in from {
            if state[start] != NEW {
                continue;
            }
            // Each frame is (node, index of the next dep to visit).
            let mut stack: Vec<(NodeId, usize)> = vec![(start, 0)];
            state[start] = ON_STACK;
            while let Some(&mut (id, ref mut next)) = stack.last_mut() {
                if let Some(&dep) = self.nodes[id].deps.get(*next) {
                    *next += 1;
                    match state[dep] {
                        NEW => {
                            state[dep] = ON_STACK;
                            stack.push((dep, 0));
                        }
                        ON_STACK => {
                            let from = stack
                                .iter()
                                .position(|&(n, _)| n == dep)
                                .expect("dep is on the stack");
                            let path: Vec<NodeId> = stack[from..].iter().map(|&(n, _)| n).collect();
                            return Err(self.cycle_error(&path));
                        }
                        _ => {}
                    }
                } else {
                    state[id] = DONE;
                    stack.pop();
                }
            }
        }
        Ok(())
    }

    /// Where the dependency of `from` on `to` is written, found again by resolving `from`'s deps: a span
    /// kept per edge would cost every node of a large graph its own list, for the rare run with a cycle.
    fn edge_span(&self, from: NodeId, to: NodeId) -> Span {
        let node = &self.nodes[from];
        let def = &self.config.tasks[node.task];
        if node.role == Role::Group {
            return def.matrix[0].span.clone();
        }
        def.deps
            .iter()
            .find(|dep| {
                let name = dep.template.render(&self.vars, &node.params, "");
                self.resolver
                    .resolve(&self.config, &name)
                    .is_ok_and(|(task, params)| self.index.get(task, &params) == Some(to))
            })
            .map_or_else(|| def.span.clone(), |dep| dep.span.clone())
    }

    fn cycle_error(&self, path: &[NodeId]) -> GraphError {
        let mut names: Vec<&str> = path.iter().map(|&n| self.nodes[n].label.as_str()).collect();
        names.push(&self.nodes[path[0]].label);
        let mut edges = Vec::new();
        for (i, &from) in path.iter().enumerate() {
            let to = path[(i + 1) % path.len()];
            edges.push(LabeledSpan::new_with_span(
                Some(format!(
                    "`{}` depends on `{}`",
                    self.nodes[from].label, self.nodes[to].label
                )),
                to_source_span(&self.edge_span(from, to)),
            ));
        }
        GraphError::Cycle {
            cycle: names.join(" → "),
            src: self.config.source.clone(),
            edges,
        }
    }

    fn dependency_error(
        &self,
        id: NodeId,
        dep: &str,
        span: &Span,
        unresolved: Unresolved,
    ) -> GraphError {
        let task = self.nodes[id].label.to_string();
        let src = self.config.source.clone();
        let span = to_source_span(span);
        match unresolved {
            Unresolved::Unknown { suggestion } => GraphError::UnknownDependency {
                task,
                dep: dep.to_owned(),
                src,
                span,
                help: suggestion,
            },
            Unresolved::BadValue {
                task: t,
                param,
                value,
            } => {
                let def = &self.config.tasks[t].params[param];
                GraphError::DependencyParamValue {
                    task,
                    dep: dep.to_owned(),
                    param: def.name.clone(),
                    help: param_help(&value, def),
                    value,
                    src,
                    span,
                }
            }
            Unresolved::MissingValue { task: t, param } => {
                let def = &self.config.tasks[t];
                GraphError::UnknownDependency {
                    task,
                    dep: dep.to_owned(),
                    src,
                    span,
                    help: Some(format!(
                        "`{}` needs a value for `{}`: name an instance such as `{}`",
                        def.name.text,
                        def.params[param].name,
                        example_instance(&self.config, t)
                    )),
                }
            }
        }
    }

    fn target_error(&self, target: &str, unresolved: Unresolved) -> GraphError {
        match unresolved {
            Unresolved::Unknown { suggestion } => GraphError::UnknownTarget {
                target: target.to_owned(),
                help: suggestion.or_else(|| Some("`cairn list` shows every task".into())),
            },
            Unresolved::BadValue { task, param, value } => {
                let def = &self.config.tasks[task];
                GraphError::TargetParamValue {
                    task: def.name.text.to_string(),
                    param: def.params[param].name.clone(),
                    help: param_help(&value, &def.params[param]),
                    value,
                }
            }
            Unresolved::MissingValue { task, param } => {
                let def = &self.config.tasks[task];
                GraphError::MissingParam {
                    task: def.name.text.to_string(),
                    param: def.params[param].name.clone(),
                    help: Some(format!(
                        "name an instance, e.g. `cairn run {}`",
                        example_instance(&self.config, task)
                    )),
                }
            }
        }
    }
}

/// An example instance name for a pattern task, using defaults, first values or the param's name.
fn example_instance(config: &Config, task: usize) -> String {
    let def = &config.tasks[task];
    let values: Vec<String> = def
        .params
        .iter()
        .map(|p| {
            p.default
                .clone()
                .or_else(|| p.values.as_ref().and_then(|v| v.first().cloned()))
                .unwrap_or_else(|| p.name.to_uppercase())
        })
        .collect();
    def.name.instance(&values)
}

fn param_help(value: &str, param: &crate::config::ParamDef) -> Option<String> {
    let Some(allowed) = &param.values else {
        return Some(param.expectation());
    };
    let list = allowed
        .iter()
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match crate::config::suggest::closest(value, allowed.iter().map(String::as_str)) {
        Some(close) => Some(format!("did you mean `{close}`? allowed: {list}")),
        None => Some(format!("allowed: {list}")),
    }
}

/// The param value combinations of a task that exist without being named: every combination of listed values
/// (free params at their default), or nothing when a free param has no default.
fn static_instances(config: &Config, task: usize) -> Vec<Vec<String>> {
    let params = &config.tasks[task].params;
    let mut choices: Vec<Vec<String>> = Vec::with_capacity(params.len());
    for param in params {
        match (&param.values, &param.default) {
            (Some(values), _) => choices.push(values.clone()),
            (None, Some(default)) => choices.push(vec![default.clone()]),
            (None, None) => return Vec::new(),
        }
    }
    let combinations = choices
        .iter()
        .map(Vec::len)
        .try_fold(1usize, |acc, n| acc.checked_mul(n));
    if combinations.is_none_or(|n| n > MAX_STATIC_COMBINATIONS) {
        let defaults: Option<Vec<String>> = params.iter().map(|p| p.default.clone()).collect();
        return defaults.into_iter().collect();
    }
    let mut out = vec![Vec::with_capacity(params.len())];
    for options in choices {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                options.iter().map(move |value| {
                    let mut next = prefix.clone();
                    next.push(value.clone());
                    next
                })
            })
            .collect();
    }
    out
}

#[cfg(test)]
mod tests;
