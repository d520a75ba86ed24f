//! `cairn graph`: a selection drawn as Graphviz dot, Mermaid or JSON.

use std::fmt::Write;

use serde::Serialize;

use super::{Selection, TaskGraph};

/// The output formats of `cairn graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// Graphviz `digraph`.
    Dot,
    /// A Mermaid `flowchart`.
    Mermaid,
    /// `{ "nodes": [...], "edges": [...] }`.
    Json,
}

#[derive(Serialize)]
struct JsonGraph<'a> {
    nodes: Vec<JsonNode<'a>>,
    edges: Vec<[&'a str; 2]>,
}

#[derive(Serialize)]
struct JsonNode<'a> {
    name: &'a str,
    task: &'a str,
    params: std::collections::BTreeMap<&'a str, &'a str>,
    description: Option<&'a str>,
    deps: Vec<&'a str>,
}

impl TaskGraph {
    /// Draws `selection` in `format`; edges point from a task to what it depends on.
    pub fn render(&self, selection: &Selection, format: GraphFormat) -> String {
        let mut out = String::new();
        match format {
            GraphFormat::Dot => {
                out.push_str("digraph cairn {\n  rankdir=LR;\n  node [shape=box];\n");
                for &id in &selection.order {
                    let _ = writeln!(out, "  {};", dot_quote(&self.node(id).label));
                }
                for &id in &selection.order {
                    for &dep in &self.node(id).deps {
                        let _ = writeln!(
                            out,
                            "  {} -> {};",
                            dot_quote(&self.node(id).label),
                            dot_quote(&self.node(dep).label)
                        );
                    }
                }
                out.push_str("}\n");
            }
            GraphFormat::Mermaid => {
                out.push_str("flowchart LR\n");
                for &id in &selection.order {
                    let _ = writeln!(
                        out,
                        "  n{id}[\"{}\"]",
                        self.node(id).label.replace('"', "#quot;")
                    );
                }
                for &id in &selection.order {
                    for &dep in &self.node(id).deps {
                        let _ = writeln!(out, "  n{id} --> n{dep}");
                    }
                }
            }
            GraphFormat::Json => {
                let config = self.config();
                let nodes = selection
                    .order
                    .iter()
                    .map(|&id| {
                        let node = self.node(id);
                        let def = &config.tasks[node.task];
                        JsonNode {
                            name: &node.label,
                            task: &def.name.text,
                            params: def
                                .params
                                .iter()
                                .map(|p| p.name.as_str())
                                .zip(node.params.iter().map(String::as_str))
                                .collect(),
                            description: def.description.as_deref(),
                            deps: node
                                .deps
                                .iter()
                                .map(|&d| self.node(d).label.as_str())
                                .collect(),
                        }
                    })
                    .collect();
                let edges = selection
                    .order
                    .iter()
                    .flat_map(|&id| {
                        self.node(id).deps.iter().map(move |&d| {
                            [self.node(id).label.as_str(), self.node(d).label.as_str()]
                        })
                    })
                    .collect();
                out = serde_json::to_string_pretty(&JsonGraph { nodes, edges })
                    .expect("plain data serialises");
                out.push('\n');
            }
        }
        out
    }
}

fn dot_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}
