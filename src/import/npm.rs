//! package.json scripts, with Turborepo's turbo.json when there is one: each workspace package's scripts become
//! `PACKAGE:SCRIPT` tasks run by the repository's package manager, and turbo's `dependsOn`, `inputs`,
//! `outputs`, `cache`, `persistent` and `env` become cairn's deps, inputs, outputs, cache, service and
//! env_hash — `^build` naming the `build` of each workspace package this one depends on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{escape_template, task_name, ImportError, Model, Task};

/// A package of the workspace (or the root package).
struct Package {
    /// Its directory relative to the root, `""` for the root.
    dir: String,
    /// What its tasks are called before `:SCRIPT` (`""` for the root of a single package).
    prefix: String,
    scripts: BTreeMap<String, String>,
    /// The names of the workspace packages it depends on.
    depends_on: Vec<String>,
    name: Option<String>,
}

fn read_json(path: &Path) -> Result<Value, ImportError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        path: shown.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ImportError::Parse {
        path: shown,
        format: "JSON file",
        message: e.to_string(),
    })
}

pub(super) fn read(path: &Path) -> Result<Model, ImportError> {
    let root = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let manifest = read_json(&root.join("package.json"))?;
    let turbo_path = root.join("turbo.json");
    let turbo = if turbo_path.is_file() {
        Some(read_json(&turbo_path)?)
    } else {
        None
    };
    let mut model = Model::default();
    let packages = packages(&root, &manifest, &mut model.notes)?;
    let runner = package_manager(&root);

    let Some(turbo) = turbo else {
        // Scripts alone: no dependencies, no files declared, so nothing is cached.
        for package in &packages {
            for script in package.scripts.keys() {
                model.tasks.push(script_task(package, script, runner));
            }
        }
        return Ok(model);
    };
    let pipeline = turbo
        .get("tasks")
        .or_else(|| turbo.get("pipeline"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let strings = |value: Option<&Value>| -> Vec<String> {
        value
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let global_inputs = strings(turbo.get("globalDependencies"));
    let global_env = strings(turbo.get("globalEnv"));
    let global_pass = strings(turbo.get("globalPassThroughEnv"));
    let by_name: BTreeMap<&str, &Package> = packages
        .iter()
        .filter_map(|p| p.name.as_deref().map(|n| (n, p)))
        .collect();

    for (key, spec) in &pipeline {
        // `build`, `web#build` (one package), `//#lint` (the root's own script).
        let (only, script) = match key.split_once('#') {
            Some((package, script)) => (Some(package), script),
            None => (None, key.as_str()),
        };
        for package in &packages {
            let matches = match only {
                // In a workspace, the root's own scripts are turbo's only as `//#script`.
                None => !(packages.len() > 1 && package.dir.is_empty()),
                Some("//") => package.dir.is_empty(),
                Some(name) => package.name.as_deref() == Some(name),
            };
            if !matches || !package.scripts.contains_key(script) {
                continue;
            }
            let mut task = script_task(package, script, runner);
            let place = format!(
                "turbo task `{key}` of `{}`",
                package.name.as_deref().unwrap_or("the root")
            );
            let within = |pattern: &str| -> String {
                let (bang, bare) = match pattern.strip_prefix('!') {
                    Some(rest) => ("!", rest),
                    None => ("", pattern),
                };
                let bare = bare.trim_start_matches("./");
                if package.dir.is_empty() {
                    format!("{bang}{bare}")
                } else {
                    format!("{bang}{}/{bare}", package.dir)
                }
            };
            let default_inputs = if package.dir.is_empty() {
                vec!["**".to_owned(), "!node_modules/**".to_owned()]
            } else {
                vec![
                    format!("{}/**", package.dir),
                    format!("!{}/node_modules/**", package.dir),
                ]
            };
            let declared = strings(spec.get("inputs"));
            task.inputs = if declared.is_empty() {
                default_inputs.clone()
            } else {
                declared
                    .iter()
                    .flat_map(|p| {
                        if p == "$TURBO_DEFAULT$" {
                            default_inputs.clone()
                        } else {
                            vec![within(p)]
                        }
                    })
                    .collect()
            };
            task.inputs.extend(global_inputs.iter().cloned());
            task.outputs = strings(spec.get("outputs"))
                .iter()
                .map(|p| within(p))
                .collect();
            // A task's outputs are not its inputs, or its own run would change its key.
            for output in task.outputs.clone() {
                if !output.starts_with('!') {
                    task.inputs.push(format!("!{output}"));
                }
            }
            if spec.get("cache").and_then(Value::as_bool) == Some(false) {
                task.cache = Some(false);
            }
            if spec.get("persistent").and_then(Value::as_bool) == Some(true) {
                task.service = true;
                task.cache = None;
            }
            task.env_hash = global_env.clone();
            task.env_hash.extend(strings(spec.get("env")));
            task.env_pass = global_pass.clone();
            task.env_pass.extend(strings(spec.get("passThroughEnv")));
            for unsupported in ["interactive", "outputLogs", "outputMode", "with"] {
                if spec.get(unsupported).is_some() {
                    model.notes.push(format!("{place}: `{unsupported}`"));
                }
            }
            for dependency in strings(spec.get("dependsOn")) {
                if let Some(upstream) = dependency.strip_prefix('^') {
                    for name in &package.depends_on {
                        if let Some(other) = by_name.get(name.as_str()) {
                            if other.scripts.contains_key(upstream) {
                                task.deps.push(name_of(other, upstream));
                            }
                        }
                    }
                } else if let Some((target, other_script)) = dependency.split_once('#') {
                    let other = if target == "//" {
                        packages.iter().find(|p| p.dir.is_empty())
                    } else {
                        by_name.get(target).copied()
                    };
                    match other {
                        Some(other) if other.scripts.contains_key(other_script) => {
                            task.deps.push(name_of(other, other_script));
                        }
                        _ => model.notes.push(format!(
                            "{place}: `dependsOn` names `{dependency}`, which has no such script"
                        )),
                    }
                } else if package.scripts.contains_key(&dependency) {
                    task.deps.push(name_of(package, &dependency));
                }
            }
            task.deps.dedup();
            model.tasks.push(task);
        }
    }
    // Scripts turbo does not run stay plain commands, except the root's `turbo run X`: cairn runs X itself,
    // so it becomes the group of every package's X.
    let piped: Vec<String> = model.tasks.iter().map(|t| t.name.clone()).collect();
    for package in &packages {
        for (script, command) in &package.scripts {
            let name = name_of(package, script);
            if piped.contains(&name) {
                continue;
            }
            let turbo_tasks = package
                .dir
                .is_empty()
                .then(|| turbo_targets(command))
                .flatten();
            match turbo_tasks {
                Some(targets) => {
                    let deps: Vec<String> = packages
                        .iter()
                        .filter(|p| !p.dir.is_empty() || packages.len() == 1)
                        .flat_map(|p| {
                            targets
                                .iter()
                                .filter(|t| p.scripts.contains_key(**t))
                                .map(|t| name_of(p, t))
                        })
                        .filter(|d| piped.contains(d) && *d != name)
                        .collect();
                    if deps.is_empty() {
                        model.tasks.push(script_task(package, script, runner));
                    } else {
                        model.tasks.push(Task {
                            name,
                            description: Some(escape_template(command)),
                            deps,
                            ..Task::default()
                        });
                    }
                }
                None => model.tasks.push(script_task(package, script, runner)),
            }
        }
    }
    Ok(model)
}

/// The tasks of a `turbo run build test` (or `turbo build`) script with no further options.
fn turbo_targets(command: &str) -> Option<Vec<&str>> {
    let mut words = command.split_whitespace();
    if words.next()? != "turbo" {
        return None;
    }
    let rest: Vec<&str> = words.collect();
    let rest = match rest.split_first() {
        Some((&"run", tail)) => tail,
        _ => &rest[..],
    };
    (!rest.is_empty() && rest.iter().all(|w| !w.starts_with('-'))).then(|| rest.to_vec())
}

/// The task name of a package's script.
fn name_of(package: &Package, script: &str) -> String {
    if package.prefix.is_empty() {
        task_name(script)
    } else {
        task_name(&format!("{}:{script}", package.prefix))
    }
}

fn script_task(package: &Package, script: &str, runner: &str) -> Task {
    let shown = package.scripts.get(script).cloned().unwrap_or_default();
    Task {
        name: name_of(package, script),
        description: Some(escape_template(&shown)),
        run: vec![format!("{runner} run {}", shell_word(script))],
        dir: (!package.dir.is_empty()).then(|| package.dir.clone()),
        ..Task::default()
    }
}

/// A script name as one shell word.
fn shell_word(text: &str) -> String {
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_:./@".contains(c))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The package manager whose lock file the repository has.
fn package_manager(root: &Path) -> &'static str {
    if root.join("pnpm-lock.yaml").is_file() {
        "pnpm"
    } else if root.join("yarn.lock").is_file() {
        "yarn"
    } else if root.join("bun.lockb").is_file() || root.join("bun.lock").is_file() {
        "bun"
    } else {
        "npm"
    }
}

/// The root package and, with `workspaces`, every workspace package, in directory order.
fn packages(
    root: &Path,
    manifest: &Value,
    notes: &mut Vec<String>,
) -> Result<Vec<Package>, ImportError> {
    let patterns: Vec<String> = match manifest.get("workspaces") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::Object(spec)) => spec
            .get("packages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let mut dirs: Vec<String> = Vec::new();
    for pattern in &patterns {
        let pattern = pattern.trim_start_matches("./").trim_end_matches('/');
        if let Some(parent) = pattern.strip_suffix("/*") {
            if let Ok(entries) = std::fs::read_dir(root.join(parent)) {
                for entry in entries.flatten() {
                    if entry.path().join("package.json").is_file() {
                        if let Some(name) = entry.file_name().to_str() {
                            dirs.push(format!("{parent}/{name}"));
                        }
                    }
                }
            }
        } else if !pattern.contains(['*', '?', '[', '{']) {
            if root.join(pattern).join("package.json").is_file() {
                dirs.push(pattern.to_owned());
            }
        } else {
            notes.push(format!(
                "workspace pattern `{pattern}`: only `DIR/*` and plain directories are read"
            ));
        }
    }
    dirs.sort();
    dirs.dedup();
    let mut manifests = vec![(String::new(), manifest.clone())];
    for dir in &dirs {
        manifests.push((
            dir.clone(),
            read_json(&root.join(dir).join("package.json"))?,
        ));
    }
    let names: Vec<String> = manifests
        .iter()
        .filter_map(|(_, m)| m.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let workspace = !dirs.is_empty();
    Ok(manifests
        .into_iter()
        .map(|(dir, m)| {
            let scripts = m
                .get("scripts")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect();
            let depends_on = [
                "dependencies",
                "devDependencies",
                "peerDependencies",
                "optionalDependencies",
            ]
            .iter()
            .filter_map(|field| m.get(*field).and_then(Value::as_object))
            .flat_map(|deps| deps.keys().cloned())
            .filter(|name| names.contains(name))
            .collect();
            // In a workspace each package's tasks carry its directory's last part (`web:build`); the root's
            // own scripts keep their names.
            let prefix = if workspace && !dir.is_empty() {
                dir.rsplit('/').next().unwrap_or(&dir).to_owned()
            } else {
                String::new()
            };
            Package {
                dir,
                prefix,
                scripts,
                depends_on,
                name: m.get("name").and_then(Value::as_str).map(str::to_owned),
            }
        })
        .collect())
}
