use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;

fn graph(text: &str) -> Result<TaskGraph, GraphError> {
    let config = Config::parse(
        "tasks.toml",
        text,
        PathBuf::from("tasks.toml"),
        PathBuf::from("."),
    )
    .expect("config is valid");
    TaskGraph::build(Arc::new(config))
}

fn labels(graph: &TaskGraph, ids: &[NodeId]) -> Vec<String> {
    ids.iter()
        .map(|&id| graph.node(id).label.to_string())
        .collect()
}

#[test]
fn selection_orders_dependencies_first() {
    let mut g = graph(
        r#"
[tasks.deploy]
deps = ["test", "build"]
run = "true"
[tasks.test]
deps = ["build"]
run = "true"
[tasks.build]
run = "true"
[tasks.unrelated]
run = "true"
"#,
    )
    .expect("valid graph");
    let s = g.select(&["deploy".into()]).expect("selects");
    assert_eq!(labels(&g, &s.order), ["build", "test", "deploy"]);
}

#[test]
fn pattern_dependency_passes_param_along() {
    let mut g = graph(
        r#"
[tasks."deploy:{env}"]
params.env = { values = ["production", "staging"] }
deps = ["notify:{env}", "check:{{env}}"]
run = "true"
[tasks."notify:{env}"]
params.env = { values = ["production", "staging"] }
run = "true"
[tasks."check:{target}"]
params.target = {}
run = "true"
"#,
    )
    .expect("valid graph");
    let s = g.select(&["deploy:staging".into()]).expect("selects");
    let mut names = labels(&g, &s.order);
    names.sort();
    assert_eq!(names, ["check:staging", "deploy:staging", "notify:staging"]);
}

#[test]
fn cycle_error_names_every_edge() {
    let err = graph(
        r#"
[tasks.a]
deps = ["b"]
run = "true"
[tasks.b]
deps = ["c"]
run = "true"
[tasks.c]
deps = ["a"]
run = "true"
"#,
    )
    .expect_err("cycle");
    match err {
        GraphError::Cycle { cycle, edges, .. } => {
            assert_eq!(cycle, "a → b → c → a");
            assert_eq!(edges.len(), 3);
        }
        other => panic!("expected a cycle, got {other:?}"),
    }
}

#[test]
fn cycle_through_pattern_instances_is_found() {
    let err = graph(
        r#"
[tasks."x:{n}"]
params.n = { values = ["1", "2"] }
deps = ["y:{n}"]
run = "true"
[tasks."y:{n}"]
params.n = { values = ["1", "2"] }
deps = ["x:{n}"]
run = "true"
"#,
    )
    .expect_err("cycle");
    assert!(matches!(err, GraphError::Cycle { .. }), "{err:?}");
}

#[test]
fn unknown_dependency_suggests_close_name() {
    let err =
        graph("[tasks.a]\ndeps = [\"biuld\"]\nrun = \"true\"\n[tasks.build]\nrun = \"true\"\n")
            .expect_err("unknown");
    match err {
        GraphError::UnknownDependency { dep, help, .. } => {
            assert_eq!(dep, "biuld");
            assert_eq!(help.as_deref(), Some("did you mean `build`?"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn dependency_with_disallowed_value_is_reported() {
    let err = graph(
        r#"
[tasks.a]
deps = ["deploy:prod"]
run = "true"
[tasks."deploy:{env}"]
params.env = { values = ["production"] }
run = "true"
"#,
    )
    .expect_err("bad value");
    assert!(
        matches!(err, GraphError::DependencyParamValue { ref value, .. } if value == "prod"),
        "{err:?}"
    );
}

#[test]
fn free_param_target_is_created_on_selection() {
    let mut g =
        graph("[tasks.\"greet:{who}\"]\nparams.who = {}\nrun = \"echo {{who}}\"\n").expect("valid");
    assert!(g.nodes().is_empty());
    let s = g.select(&["greet:ada".into()]).expect("selects");
    assert_eq!(labels(&g, &s.order), ["greet:ada"]);
}

fn chain_config(edges: &[(usize, usize)], count: usize) -> String {
    let mut text = String::new();
    for i in 0..count {
        let deps: Vec<String> = edges
            .iter()
            .filter(|(from, _)| *from == i)
            .map(|(_, to)| format!("\"t{to}\""))
            .collect();
        text.push_str(&format!(
            "[tasks.t{i}]\nrun = \"true\"\ndeps = [{}]\n",
            deps.join(", ")
        ));
    }
    text
}

proptest! {
    // Edges only point from a higher index to a lower one, so every generated graph is acyclic.
    #[test]
    fn every_order_respects_dependencies(count in 1usize..30, raw in proptest::collection::vec((0usize..30, 0usize..30), 0..80)) {
        let edges: Vec<(usize, usize)> = raw
            .into_iter()
            .map(|(a, b)| (a % count, b % count))
            .filter(|(a, b)| a > b)
            .collect();
        let g = graph(&chain_config(&edges, count)).expect("acyclic");
        let s = g.select_all();
        prop_assert_eq!(s.order.len(), count);
        let position: HashMap<NodeId, usize> = s.order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        for &id in &s.order {
            for &dep in &g.node(id).deps {
                prop_assert!(position[&dep] < position[&id]);
            }
        }
    }

    #[test]
    fn back_edge_always_makes_a_cycle(count in 2usize..20) {
        let mut edges: Vec<(usize, usize)> = (1..count).map(|i| (i, i - 1)).collect();
        edges.push((0, count - 1));
        let result = graph(&chain_config(&edges, count));
        let is_cycle = matches!(result, Err(GraphError::Cycle { .. }));
        prop_assert!(is_cycle);
    }
}
