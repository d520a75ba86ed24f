//! justfiles, read by just itself: `just --dump --dump-format json` is just's own parser and evaluator of
//! the file's structure, so every recipe, parameter, dependency and interpolation is what just sees.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::{escape_template, task_name, ImportError, Model, Task};

/// The shell just uses when the justfile sets none.
const JUST_DEFAULT_SHELL: [&str; 2] = ["sh", "-cu"];

pub(super) fn read(path: &Path) -> Result<Model, ImportError> {
    let shown = path.display().to_string();
    let program = std::env::var_os("CAIRN_JUST").unwrap_or_else(|| "just".into());
    let output = Command::new(&program)
        .arg("--justfile")
        .arg(path)
        .arg("--working-directory")
        .arg(
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .args(["--dump", "--dump-format", "json"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| ImportError::JustMissing {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(ImportError::Parse {
            path: shown,
            format: "justfile",
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let dump: Value = serde_json::from_slice(&output.stdout).map_err(|e| ImportError::Parse {
        path: shown.clone(),
        format: "justfile (just's JSON dump)",
        message: e.to_string(),
    })?;
    Ok(translate(&dump))
}

/// What a recipe's line or a variable refers to, for interpolation.
struct Scope<'a> {
    vars: &'a HashMap<String, String>,
    params: &'a [String],
    variadic: Option<&'a str>,
}

fn translate(dump: &Value) -> Model {
    let mut model = Model::default();
    let settings = &dump["settings"];
    model.shell = Some(match settings["shell"].as_object() {
        Some(shell) => std::iter::once(
            shell
                .get("command")
                .and_then(Value::as_str)
                .unwrap_or("sh")
                .to_owned(),
        )
        .chain(
            shell
                .get("arguments")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned)),
        )
        .collect(),
        None => JUST_DEFAULT_SHELL.iter().map(|s| (*s).to_owned()).collect(),
    });
    for (setting, what) in [
        (
            "dotenv_load",
            "`set dotenv-load`: cairn passes no .env file; declare the variables in `env`",
        ),
        (
            "positional_arguments",
            "`set positional-arguments`: use `{{args}}` in `run` instead of $1…",
        ),
        ("fallback", "`set fallback`"),
        ("windows_powershell", "`set windows-powershell`"),
    ] {
        if settings[setting].as_bool() == Some(true) {
            model.notes.push(what.to_owned());
        }
    }
    let export_all = settings["export"].as_bool() == Some(true);

    // Assignments, in the order just evaluates them (each may use the ones before).
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut exported: Vec<String> = Vec::new();
    if let Some(assignments) = dump["assignments"].as_object() {
        for (name, assignment) in assignments {
            if assignment["value"][0] == "evaluate" {
                model.notes.push(format!(
                    "variable `{name}` is a backtick: its command now runs where the variable is used, not once"
                ));
            }
            match expression_text(&assignment["value"], &vars) {
                Some(value) => {
                    vars.insert(name.clone(), value.clone());
                    model.vars.push((name.clone(), value));
                }
                None => {
                    model.notes.push(format!(
                        "variable `{name}` is computed by just (a function or a condition); set it in [vars] or with `--set {name}=…`"
                    ));
                    vars.insert(name.clone(), String::new());
                    model.vars.push((name.clone(), String::new()));
                }
            }
            if export_all || assignment["export"].as_bool() == Some(true) {
                exported.push(name.clone());
            }
        }
    }
    if dump["modules"].as_object().is_some_and(|m| !m.is_empty()) {
        model
            .notes
            .push("modules (`mod NAME`): import each module's justfile on its own".into());
    }

    let recipes = dump["recipes"].as_object().cloned().unwrap_or_default();
    for (name, recipe) in &recipes {
        model.tasks.push(recipe_task(
            name,
            recipe,
            &recipes,
            &vars,
            &exported,
            &mut model.notes,
        ));
    }
    if let Some(aliases) = dump["aliases"].as_object() {
        for (alias, spec) in aliases {
            if let Some(target) = spec["target"].as_str() {
                model.tasks.push(Task {
                    name: task_name(alias),
                    description: Some(format!("alias of {target}")),
                    deps: vec![task_name(target)],
                    ..Task::default()
                });
            }
        }
    }
    // just runs the first recipe when given none; cairn runs the task named `default`.
    if let Some(first) = dump["first"].as_str() {
        let takes_required = recipes
            .get(first)
            .and_then(|r| r["parameters"].as_array())
            .is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["kind"] == "singular" && p["default"].is_null())
            });
        if !recipes.contains_key("default") && !takes_required {
            model.tasks.push(Task {
                name: "default".into(),
                description: Some(format!("what `just` alone ran: {first}")),
                deps: vec![task_name(first)],
                ..Task::default()
            });
        }
    }
    model
}

fn recipe_task(
    name: &str,
    recipe: &Value,
    recipes: &serde_json::Map<String, Value>,
    vars: &HashMap<String, String>,
    exported: &[String],
    notes: &mut Vec<String>,
) -> Task {
    let mut task = Task {
        name: task_name(name),
        description: recipe["doc"].as_str().map(str::to_owned),
        ..Task::default()
    };
    let mut params: Vec<String> = Vec::new();
    let mut variadic = None;
    for parameter in recipe["parameters"].as_array().into_iter().flatten() {
        let Some(param) = parameter["name"].as_str() else {
            continue;
        };
        match parameter["kind"].as_str() {
            Some("singular") => {
                let default = match &parameter["default"] {
                    Value::Null => None,
                    value => match expression_text(value, vars) {
                        Some(text) => Some(text),
                        None => {
                            notes.push(format!("recipe `{name}`: the default of `{param}` is computed; it has none here"));
                            None
                        }
                    },
                };
                task.params.push((param.to_owned(), default));
                params.push(param.to_owned());
            }
            _ => {
                // `*args` and `+args` are the run's `-- ARGS`.
                variadic = Some(param.to_owned());
            }
        }
        if parameter["export"].as_bool() == Some(true) {
            task.env
                .push((param.to_owned(), format!("{{{{{param}}}}}")));
        }
    }
    for var in exported {
        task.env.push((var.clone(), format!("{{{{{var}}}}}")));
    }
    for attribute in recipe["attributes"].as_array().into_iter().flatten() {
        match attribute {
            Value::String(a) if a == "private" => {}
            Value::String(a) if a == "confirm" => task.confirm = Some(format!("Run {name}?")),
            Value::Object(o) if o.contains_key("confirm") => {
                task.confirm = Some(
                    o["confirm"]
                        .as_str()
                        .map_or_else(|| format!("Run {name}?"), str::to_owned),
                );
            }
            Value::Object(o) if o.contains_key("doc") => {
                if let Some(doc) = o["doc"].as_str() {
                    task.description = Some(doc.to_owned());
                }
            }
            other => notes.push(format!(
                "recipe `{name}`: attribute `{}`",
                match other {
                    Value::String(s) => s.clone(),
                    Value::Object(o) => o.keys().cloned().collect::<Vec<_>>().join(", "),
                    _ => other.to_string(),
                }
            )),
        }
    }
    let scope = Scope {
        vars,
        params: &params,
        variadic: variadic.as_deref(),
    };
    let lines: Vec<String> = recipe["body"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|line| line_text(line, &scope, name, notes))
        .collect();
    task.run = if recipe["shebang"].as_bool() == Some(true) {
        script(&lines)
    } else {
        lines
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let mut line = line.trim_start().to_owned();
                // `@` only stops just from echoing the line; cairn never echoes it.
                loop {
                    if let Some(rest) = line.strip_prefix('@') {
                        line = rest.to_owned();
                    } else if let Some(rest) = line.strip_prefix('-') {
                        // `-`: just goes on when the line fails.
                        line = format!("{{ {rest}; }} || true");
                    } else {
                        break;
                    }
                }
                line
            })
            .collect()
    };
    let priors = recipe["priors"].as_u64().unwrap_or(u64::MAX) as usize;
    for (index, dependency) in recipe["dependencies"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(target) = dependency["recipe"].as_str() else {
            continue;
        };
        if index >= priors {
            notes.push(format!(
                "recipe `{name}`: `&& {target}` runs after it in just; cairn runs dependencies before, so it is left out (make a group of both)"
            ));
            continue;
        }
        let mut dep = task_name(target);
        let arguments: Vec<Option<String>> = dependency["arguments"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|argument| match argument {
                Value::Array(parts) if parts.first() == Some(&Value::String("variable".into())) => {
                    let variable = parts.get(1).and_then(Value::as_str)?;
                    if params.iter().any(|p| p == variable) {
                        Some(format!("{{{variable}}}"))
                    } else {
                        vars.get(variable).cloned()
                    }
                }
                other => expression_text(other, vars),
            })
            .collect();
        if arguments.iter().any(Option::is_none) {
            notes.push(format!(
                "recipe `{name}`: an argument of `{target}` is computed; the dependency uses its defaults"
            ));
        } else if !arguments.is_empty() {
            let takes = recipes
                .get(target)
                .and_then(|r| r["parameters"].as_array())
                .map_or(0, |ps| {
                    ps.iter().filter(|p| p["kind"] == "singular").count()
                });
            if arguments.len() == takes {
                for argument in arguments.into_iter().flatten() {
                    dep.push(':');
                    dep.push_str(&argument);
                }
            } else {
                notes.push(format!(
                    "recipe `{name}`: `{target}` is given {} of its {takes} arguments; the dependency uses its defaults",
                    arguments.len()
                ));
            }
        }
        task.deps.push(dep);
    }
    task
}

/// A shebang recipe: its body is one script for its interpreter.
fn script(lines: &[String]) -> Vec<String> {
    let Some((first, body)) = lines.split_first() else {
        return Vec::new();
    };
    let interpreter = first.trim_start_matches("#!").trim();
    let interpreter = interpreter
        .strip_prefix("/usr/bin/env ")
        .unwrap_or(interpreter)
        .trim();
    let program = interpreter.split_whitespace().next().unwrap_or("sh");
    let base = program.rsplit('/').next().unwrap_or(program);
    let text = body.join("\n");
    if matches!(base, "sh" | "bash" | "zsh" | "dash") {
        vec![format!("{interpreter} -c {}", quote(&text))]
    } else {
        vec![format!(
            "{interpreter} - <<'CAIRN_SCRIPT'\n{text}\nCAIRN_SCRIPT"
        )]
    }
}

/// Single-quotes text for a POSIX shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// One body line: text fragments and `{{…}}` interpolations, the latter as cairn templates where they name a
/// param or a variable.
fn line_text(line: &Value, scope: &Scope<'_>, recipe: &str, notes: &mut Vec<String>) -> String {
    let mut out = String::new();
    for fragment in line.as_array().into_iter().flatten() {
        match fragment {
            Value::String(text) => out.push_str(&escape_template(text)),
            Value::Array(interpolation) => {
                let expression = interpolation.first().unwrap_or(&Value::Null);
                match expression {
                    Value::Array(parts)
                        if parts.first() == Some(&Value::String("variable".into())) =>
                    {
                        let name = parts.get(1).and_then(Value::as_str).unwrap_or("");
                        if Some(name) == scope.variadic {
                            out.push_str("{{args}}");
                        } else if scope.params.iter().any(|p| p == name)
                            || scope.vars.contains_key(name)
                        {
                            out.push_str(&format!("{{{{{name}}}}}"));
                        } else {
                            out.push_str(name);
                        }
                    }
                    other => match expression_text(other, scope.vars) {
                        Some(text) => out.push_str(&escape_template(&text)),
                        None => {
                            notes.push(format!(
                                "recipe `{recipe}`: an interpolation computed by just ({}) is left as a comment in its line",
                                other
                            ));
                            out.push_str("$(: untranslated)");
                        }
                    },
                }
            }
            _ => {}
        }
    }
    out
}

/// The text of an expression built from strings, variables and concatenation; `None` when just would have
/// to compute it (a function call, a condition, a backtick).
fn expression_text(value: &Value, vars: &HashMap<String, String>) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => match parts.first()?.as_str()? {
            "variable" => vars.get(parts.get(1)?.as_str()?).cloned(),
            "concatenate" => {
                Some(expression_text(parts.get(1)?, vars)? + &expression_text(parts.get(2)?, vars)?)
            }
            // A backtick: the shell runs it where the value is used.
            "evaluate" => Some(format!("$({})", parts.get(1)?.as_str()?)),
            _ => None,
        },
        _ => None,
    }
}
