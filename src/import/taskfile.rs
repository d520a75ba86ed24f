//! go-task's Taskfile.yml (version 3), read with cairn's YAML reader (saphyr). `sources` and `generates` become
//! `inputs` and `outputs`, so the tasks go-task skipped when up to date are cached here.

use std::path::Path;

use super::{escape_template, task_name, ImportError, Model, Task};
use crate::secrets::tree::{ListItem, MapItem, Node};

pub(super) fn read(path: &Path) -> Result<Model, ImportError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        path: shown.clone(),
        source,
    })?;
    let parsed = crate::secrets::yaml::parse(&text).map_err(|e| ImportError::Parse {
        path: shown.clone(),
        format: "Taskfile (YAML)",
        message: e.to_string(),
    })?;
    Ok(translate(&parsed.document))
}

fn get<'a>(items: &'a [MapItem], key: &str) -> Option<&'a Node> {
    items.iter().find_map(|item| match item {
        MapItem::Pair(k, v) if k == key => Some(v),
        _ => None,
    })
}

fn pairs(node: Option<&Node>) -> Vec<(&str, &Node)> {
    match node {
        Some(Node::Map(items)) => items
            .iter()
            .filter_map(|item| match item {
                MapItem::Pair(k, v) => Some((k.as_str(), v)),
                MapItem::Comment(_) => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn list(node: Option<&Node>) -> Vec<&Node> {
    match node {
        Some(Node::List(items)) => items
            .iter()
            .filter_map(|item| match item {
                ListItem::Node(n) => Some(n),
                ListItem::Comment(_) => None,
            })
            .collect(),
        Some(Node::Null) | None => Vec::new(),
        Some(other) => vec![other],
    }
}

fn text(node: Option<&Node>) -> Option<String> {
    match node {
        Some(Node::Scalar(scalar)) => Some(scalar.text.clone()),
        _ => None,
    }
}

/// Translates go-task's `{{.NAME}}` into cairn's `{{NAME}}` where NAME is a var, and `{{.CLI_ARGS}}` into
/// `{{args}}`; anything else between `{{ }}` (functions, pipelines) is reported and left as text.
fn template(
    input: &str,
    vars: &[(String, String)],
    local: &[(String, String)],
    place: &str,
    notes: &mut Vec<String>,
) -> String {
    let mut out = String::new();
    let mut rest = input;
    while let Some(start) = rest.find("{{") {
        out.push_str(&escape_template(&rest[..start]));
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&escape_template(&rest[start..]));
            return out;
        };
        let inner = rest[start + 2..start + end].trim();
        let name = inner
            .strip_prefix('.')
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        match name {
            Some("CLI_ARGS") => out.push_str("{{args}}"),
            Some(name) if local.iter().any(|(k, _)| k == name) => {
                // A task's own var has one value: it is written in place.
                let value = &local
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                out.push_str(&escape_template(value));
            }
            Some(name) if vars.iter().any(|(k, _)| k == name) => {
                out.push_str(&format!("{{{{{name}}}}}"))
            }
            _ => {
                notes.push(format!("{place}: `{{{{{inner}}}}}` is a Go template cairn does not evaluate; left as text"));
                out.push_str(&escape_template(&rest[start..start + end + 2]));
            }
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(&escape_template(rest));
    out
}

/// A task's or the file's `vars`: static values only (`sh:` values are reported).
fn read_vars(node: Option<&Node>, place: &str, notes: &mut Vec<String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in pairs(node) {
        match value {
            Node::Scalar(scalar) => out.push((name.to_owned(), scalar.text.clone())),
            Node::Map(items) if get(items, "sh").is_some() => {
                let command = text(get(items, "sh")).unwrap_or_default();
                notes.push(format!(
                    "{place}: var `{name}` runs `{command}`: it now runs where the var is used (`$(…)`), not once"
                ));
                out.push((name.to_owned(), format!("$({command})")));
            }
            _ => notes.push(format!("{place}: var `{name}` is not a plain value")),
        }
    }
    out
}

fn translate(document: &[MapItem]) -> Model {
    let mut model = Model::default();
    let notes = &mut model.notes;
    if let Some(version) = text(get(document, "version")) {
        if !version.starts_with('3') {
            notes.push(format!(
                "the file says version {version}; it was read as version 3"
            ));
        }
    }
    for unsupported in ["includes", "dotenv", "output", "interval", "set", "shopt"] {
        if get(document, unsupported).is_some() {
            notes.push(format!("top-level `{unsupported}`"));
        }
    }
    let vars = read_vars(get(document, "vars"), "vars", notes);
    let global_env: Vec<(String, String)> = pairs(get(document, "env"))
        .into_iter()
        .filter_map(|(k, v)| text(Some(v)).map(|v| (k.to_owned(), v)))
        .collect();
    // go-task runs commands with its own POSIX shell interpreter (mvdan/sh): plain `sh` is the closest.
    model.shell = Some(vec!["sh".into(), "-c".into()]);

    for (name, spec) in pairs(get(document, "tasks")) {
        let place = format!("task `{name}`");
        // `task: build` may be a bare list of commands or a single command.
        let items: Vec<MapItem> = match spec {
            Node::Map(items) => items.clone(),
            Node::List(_) => vec![MapItem::Pair("cmds".into(), spec.clone())],
            Node::Scalar(_) => vec![MapItem::Pair("cmds".into(), spec.clone())],
            Node::Null => Vec::new(),
        };
        let local = read_vars(get(&items, "vars"), &place, notes);
        let expand =
            |text: &str, notes: &mut Vec<String>| template(text, &vars, &local, &place, notes);
        let mut task = Task {
            name: task_name(name),
            description: text(get(&items, "desc")).or_else(|| text(get(&items, "summary"))),
            ..Task::default()
        };
        for command in list(get(&items, "cmds")) {
            match command {
                Node::Scalar(scalar) => task.run.push(expand(&scalar.text, notes)),
                Node::Map(entry) => {
                    if let Some(cmd) = text(get(entry, "cmd")) {
                        let line = expand(&cmd, notes);
                        task.run.push(
                            if get(entry, "ignore_error")
                                .is_some_and(|n| matches!(n, Node::Scalar(s) if s.text == "true"))
                            {
                                format!("{{ {line}; }} || true")
                            } else {
                                line
                            },
                        );
                    } else if let Some(other) = text(get(entry, "task")) {
                        // Another task in the middle of the commands: cairn calls itself (`$CAIRN`).
                        if get(entry, "vars").is_some() {
                            notes.push(format!("{place}: the vars passed to `{other}` in `cmds`"));
                        }
                        task.run
                            .push(format!("\"$CAIRN\" run {}", task_name(&other)));
                    } else if get(entry, "defer").is_some() {
                        notes.push(format!(
                            "{place}: `defer` (cairn has `rollback` for a failure only)"
                        ));
                    } else {
                        notes.push(format!("{place}: a command of a kind cairn does not know"));
                    }
                }
                _ => {}
            }
        }
        for dep in list(get(&items, "deps")) {
            match dep {
                Node::Scalar(scalar) => task.deps.push(task_name(&scalar.text)),
                Node::Map(entry) => {
                    if let Some(other) = text(get(entry, "task")) {
                        if get(entry, "vars").is_some() {
                            notes.push(format!("{place}: the vars passed to dependency `{other}`"));
                        }
                        task.deps.push(task_name(&other));
                    }
                }
                _ => {}
            }
        }
        task.inputs = list(get(&items, "sources"))
            .into_iter()
            .filter_map(|n| text(Some(n)))
            .map(|s| expand(&s, notes))
            .collect();
        task.outputs = list(get(&items, "generates"))
            .into_iter()
            .filter_map(|n| text(Some(n)))
            .map(|s| expand(&s, notes))
            .collect();
        if let Some(dir) = text(get(&items, "dir")) {
            let dir = dir
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_owned();
            if !dir.is_empty() && dir != "." {
                // go-task reads `sources` relative to `dir`; cairn reads them from the root.
                let prefix = |p: &String| match p.strip_prefix('!') {
                    Some(rest) => format!("!{dir}/{rest}"),
                    None => format!("{dir}/{p}"),
                };
                task.inputs = task.inputs.iter().map(prefix).collect();
                task.outputs = task.outputs.iter().map(prefix).collect();
                task.dir = Some(dir);
            }
        }
        task.env = global_env.clone();
        for (key, value) in pairs(get(&items, "env")) {
            if let Some(value) = text(Some(value)) {
                task.env.retain(|(k, _)| k != key);
                task.env.push((key.to_owned(), expand(&value, notes)));
            }
        }
        if let Some(prompt) = text(get(&items, "prompt")) {
            task.confirm = Some(prompt);
        }
        for unsupported in [
            "preconditions",
            "status",
            "platforms",
            "requires",
            "run",
            "method",
            "internal",
            "label",
        ] {
            if get(&items, unsupported).is_some() {
                notes.push(format!("{place}: `{unsupported}`"));
            }
        }
        for alias in list(get(&items, "aliases"))
            .into_iter()
            .filter_map(|n| text(Some(n)))
        {
            model.tasks.push(Task {
                name: task_name(&alias),
                description: Some(format!("alias of {name}")),
                deps: vec![task_name(name)],
                ..Task::default()
            });
        }
        model.tasks.push(task);
    }
    model.vars = vars;
    // `task` alone runs the task named `default`, as `cairn run` does: nothing to add.
    model
}
