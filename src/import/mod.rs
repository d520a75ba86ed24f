//! `cairn import`: a tasks.toml from the task file a repository already has — a justfile, a Taskfile.yml, or
//! package.json scripts with turbo.json — so people can try cairn without rewriting anything first.
//!
//! Each format is read by its real parser: just's own (`just --dump --dump-format json`), a YAML parser for
//! Taskfiles, serde_json for npm and Turborepo. What has no equivalent in cairn is reported, never guessed,
//! and the result is loaded by cairn's own loader before it is written, so an import is a valid tasks.toml.

mod just;
mod npm;
mod taskfile;

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::config::Config;

/// Why a file could not be imported.
#[derive(Debug, Error, miette::Diagnostic)]
pub enum ImportError {
    /// The file's name says nothing of its format.
    #[error("`{path}` is not a file cairn can import")]
    #[diagnostic(
        code(cairn::import::unknown_format),
        help("cairn imports a `justfile` (or `Justfile`, `.justfile`, `*.just`), a `Taskfile.yml` (or `.yaml`, `taskfile.yml`) and a `package.json` (with `turbo.json` beside it, if there is one)")
    )]
    UnknownFormat {
        /// The file as given.
        path: String,
    },
    /// The file cannot be read.
    #[error("cannot read `{path}`: {source}")]
    #[diagnostic(code(cairn::import::read))]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not parse as its format.
    #[error("`{path}` is not a valid {format}: {message}")]
    #[diagnostic(code(cairn::import::parse))]
    Parse {
        /// The file.
        path: String,
        /// Its format.
        format: &'static str,
        /// What the parser said (with the line and column where it has them).
        message: String,
    },
    /// A justfile needs just itself to be read exactly.
    #[error("reading `{path}` needs just, which is not on PATH: {reason}")]
    #[diagnostic(
        code(cairn::import::just_missing),
        help("install just (e.g. `pipx install rust-just` or your package manager's `just`), or name it with CAIRN_JUST=/path/to/just")
    )]
    JustMissing {
        /// The justfile.
        path: String,
        /// Why it could not be started.
        reason: String,
    },
    /// The output file is there already.
    #[error("`{path}` exists already")]
    #[diagnostic(
        code(cairn::import::exists),
        help("pass `--force` to replace it, `--output PATH` to write elsewhere, or `--output -` to print it")
    )]
    Exists {
        /// The file.
        path: String,
    },
    /// What the import produced does not load: a bug of the importer, reported with the text.
    #[error("the imported tasks.toml does not load (please report this): {message}")]
    #[diagnostic(code(cairn::import::invalid_result))]
    Invalid {
        /// The loader's complaint.
        message: String,
        /// The text that was produced.
        text: String,
    },
}

/// The formats cairn imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A justfile.
    Just,
    /// A go-task Taskfile.
    Taskfile,
    /// package.json scripts, with turbo.json when there is one.
    Npm,
}

impl Format {
    /// The format a file's name says it has.
    pub fn of(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?;
        match name {
            "justfile" | "Justfile" | ".justfile" => Some(Format::Just),
            _ if name.ends_with(".just") => Some(Format::Just),
            "Taskfile.yml" | "Taskfile.yaml" | "taskfile.yml" | "taskfile.yaml"
            | "Taskfile.dist.yml" | "Taskfile.dist.yaml" => Some(Format::Taskfile),
            "package.json" | "turbo.json" => Some(Format::Npm),
            _ => None,
        }
    }
}

/// A task as the importers describe it, before it is written.
#[derive(Debug, Default, Clone)]
pub(crate) struct Task {
    pub name: String,
    pub description: Option<String>,
    pub params: Vec<(String, Option<String>)>,
    pub run: Vec<String>,
    pub deps: Vec<String>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub dir: Option<String>,
    pub env: Vec<(String, String)>,
    pub env_hash: Vec<String>,
    pub env_pass: Vec<String>,
    pub confirm: Option<String>,
    pub cache: Option<bool>,
    pub service: bool,
}

/// What an importer read.
#[derive(Debug, Default)]
pub(crate) struct Model {
    pub shell: Option<Vec<String>>,
    pub vars: Vec<(String, String)>,
    pub tasks: Vec<Task>,
    /// What could not be translated, one line each, naming where.
    pub notes: Vec<String>,
}

/// A tasks.toml made from another runner's file.
#[derive(Debug)]
pub struct Imported {
    /// The file's text.
    pub text: String,
    /// How many tasks it has.
    pub tasks: usize,
    /// What could not be translated (also written at the top of the file as comments).
    pub notes: Vec<String>,
}

/// Reads `path` and translates it.
pub fn import(path: &Path) -> Result<Imported, ImportError> {
    let format = Format::of(path).ok_or_else(|| ImportError::UnknownFormat {
        path: path.display().to_string(),
    })?;
    let model = match format {
        Format::Just => just::read(path)?,
        Format::Taskfile => taskfile::read(path)?,
        Format::Npm => npm::read(path)?,
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("the file")
        .to_owned();
    let text = render(&model, &name);
    check(&text, path.parent().unwrap_or(Path::new(".")))?;
    Ok(Imported {
        text,
        tasks: model.tasks.len(),
        notes: model.notes,
    })
}

/// Loads the result with cairn's own loader, so that nothing invalid is ever written.
fn check(text: &str, dir: &Path) -> Result<(), ImportError> {
    let root: PathBuf = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir.to_owned()
    };
    let config = Config::parse("tasks.toml", text, root.join("tasks.toml"), root).map_err(|e| {
        ImportError::Invalid {
            message: format!("{:?}", miette::Report::new(e)),
            text: text.to_owned(),
        }
    })?;
    crate::graph::TaskGraph::build(std::sync::Arc::new(config)).map_err(|e| {
        ImportError::Invalid {
            message: format!("{:?}", miette::Report::new(e)),
            text: text.to_owned(),
        }
    })?;
    Ok(())
}

/// `{{` in text that is not a cairn template must be written `{{{{`.
pub(crate) fn escape_template(text: &str) -> String {
    text.replace("{{", "{{{{")
}

/// A task name cairn accepts: no spaces or braces.
pub(crate) fn task_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_whitespace() || c == '{' || c == '}' {
                '-'
            } else {
                c
            }
        })
        .collect()
}

/// A TOML value written inline: strings quoted and escaped, arrays and tables on one line.
fn inline(value: toml::Value) -> String {
    value.to_string()
}

fn strings(items: &[String]) -> String {
    inline(toml::Value::Array(
        items.iter().cloned().map(toml::Value::String).collect(),
    ))
}

/// A key as TOML needs it: bare when it can be, quoted otherwise.
fn key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_owned()
    } else {
        inline(toml::Value::String(name.to_owned()))
    }
}

fn pairs(items: &[(String, String)]) -> String {
    let table: toml::Table = items
        .iter()
        .map(|(k, v)| (k.clone(), toml::Value::String(v.clone())))
        .collect();
    inline(toml::Value::Table(table))
}

/// The model as tasks.toml text, the notes at the top as comments.
fn render(model: &Model, source: &str) -> String {
    let mut body = String::new();
    let line = |body: &mut String, k: &str, v: String| {
        body.push_str(&format!("{} = {v}\n", key(k)));
    };
    if let Some(shell) = &model.shell {
        body.push_str("[settings]\n");
        line(&mut body, "shell", strings(shell));
        body.push('\n');
    }
    if !model.vars.is_empty() {
        body.push_str("[vars]\n");
        for (name, value) in &model.vars {
            line(&mut body, name, inline(toml::Value::String(value.clone())));
        }
        body.push('\n');
    }
    for task in &model.tasks {
        let name = match task.params.as_slice() {
            [] => task.name.clone(),
            params => format!(
                "{}:{}",
                task.name,
                params
                    .iter()
                    .map(|(n, _)| format!("{{{n}}}"))
                    .collect::<Vec<_>>()
                    .join(":")
            ),
        };
        body.push_str(&format!("[tasks.{}]\n", key(&name)));
        if let Some(description) = &task.description {
            line(
                &mut body,
                "description",
                inline(toml::Value::String(description.clone())),
            );
        }
        for (param, default) in &task.params {
            let spec = match default {
                Some(default) => format!(
                    "{{ default = {} }}",
                    inline(toml::Value::String(default.clone()))
                ),
                None => "{}".to_owned(),
            };
            body.push_str(&format!("params.{} = {spec}\n", key(param)));
        }
        if let Some(dir) = &task.dir {
            line(&mut body, "dir", inline(toml::Value::String(dir.clone())));
        }
        if !task.deps.is_empty() {
            line(&mut body, "deps", strings(&task.deps));
        }
        match task.run.as_slice() {
            [] if task.deps.is_empty() => {
                // A task that does nothing in the source still needs a command here.
                line(&mut body, "run", inline(toml::Value::String("true".into())));
            }
            [] => {}
            [one] => line(&mut body, "run", inline(toml::Value::String(one.clone()))),
            many => {
                body.push_str("run = [\n");
                for command in many {
                    body.push_str(&format!(
                        "    {},\n",
                        inline(toml::Value::String(command.clone()))
                    ));
                }
                body.push_str("]\n");
            }
        }
        if !task.inputs.is_empty() {
            line(&mut body, "inputs", strings(&task.inputs));
        }
        if !task.outputs.is_empty() {
            line(&mut body, "outputs", strings(&task.outputs));
        }
        if !task.env.is_empty() {
            line(&mut body, "env", pairs(&task.env));
        }
        if !task.env_hash.is_empty() {
            line(&mut body, "env_hash", strings(&task.env_hash));
        }
        if !task.env_pass.is_empty() {
            line(&mut body, "env_pass", strings(&task.env_pass));
        }
        if let Some(cache) = task.cache {
            line(&mut body, "cache", cache.to_string());
        }
        if task.service {
            line(&mut body, "service", "true".into());
        }
        if let Some(question) = &task.confirm {
            line(
                &mut body,
                "confirm",
                inline(toml::Value::String(question.clone())),
            );
        }
        body.push('\n');
    }
    let mut out = format!(
        "# Made by `cairn import {source}`. Every task runs the same commands as before; `inputs` and\n# `outputs` (what makes a task cacheable) are set only where {source} declared them.\n"
    );
    if !model.notes.is_empty() {
        out.push_str("#\n# Not translated (review these):\n");
        for note in &model.notes {
            out.push_str(&format!("# - {note}\n"));
        }
    }
    out.push('\n');
    out.push_str(body.trim_end());
    out.push('\n');
    out
}
