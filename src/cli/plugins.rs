//! `cairn plugins …`: list, check and pin the plugins tasks.toml declares, and start a new one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{CliError, Context};
use crate::run::plugins::{sha256_hex, LockEntry, LockFile, Plugins, LOCK_FILE};

#[derive(Debug, clap::Subcommand)]
pub(super) enum PluginsCommand {
    /// Each declared plugin: version, protocol, capabilities and what it is granted (loads each).
    List,
    /// Load every declared plugin: hashes, protocol version, config against its schema, imports.
    Check,
    /// Record the hash of every declared plugin in plugins.lock.
    Lock,
    /// Create a plugin crate under plugins/NAME that plugins/build.sh builds.
    New {
        /// The plugin's name (also its crate's).
        name: String,
        /// What it does.
        #[arg(long, value_enum)]
        kind: Kind,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Kind {
    /// A secrets provider (`secret_get`).
    Secrets,
    /// An event sink (`on_events`).
    Events,
    /// An executor (`wrap_command`).
    Executor,
    /// A task (`run_task`).
    Task,
}

pub(super) fn plugins(context: &Context, command: &PluginsCommand) -> Result<i32, CliError> {
    if let PluginsCommand::New { name, kind } = command {
        return new_plugin(name, *kind);
    }
    let (config, _) = context.load()?;
    if config.plugins.is_empty() {
        eprintln!("cairn: tasks.toml declares no plugins ([plugins.NAME] with a `source`)");
        return Ok(0);
    }
    let registry = Plugins::new(Arc::clone(&config));
    match command {
        PluginsCommand::Lock => {
            let mut lock = LockFile::default();
            for def in &config.plugins {
                if let (Some(task), None) = (&def.built_by, &def.sha256) {
                    // A pin would refuse the next build; the build task's cache record vouches instead.
                    println!(
                        "{}  built by task `{}`, not pinned  {}",
                        def.name, task.value, def.source.value
                    );
                    continue;
                }
                let path = config.root.join(&def.source.value);
                let bytes = std::fs::read(&path).map_err(|source| CliError::Io {
                    what: format!(
                        "cannot read plugin `{}` (`{}`); build it with plugins/build.sh",
                        def.name, def.source.value
                    ),
                    source,
                })?;
                let sha256 = sha256_hex(&bytes);
                println!("{}  {}  {}", def.name, &sha256[..16], def.source.value);
                lock.plugins.insert(
                    def.name.clone(),
                    LockEntry {
                        source: def.source.value.clone(),
                        sha256,
                    },
                );
            }
            let path = config.root.join(LOCK_FILE);
            crate::atomic::write_atomic(&path, lock.render().as_bytes()).map_err(|source| {
                CliError::Io {
                    what: format!("cannot write `{}`", path.display()),
                    source,
                }
            })?;
            eprintln!(
                "cairn: wrote {} ({} plugins); commit it",
                path.display(),
                lock.plugins.len()
            );
            Ok(0)
        }
        PluginsCommand::List | PluginsCommand::Check => {
            let mut failed = 0;
            for def in &config.plugins {
                match registry.load(&def.name) {
                    Ok(plugin) => {
                        let d = &plugin.describe;
                        let capabilities: Vec<&str> =
                            d.capabilities.iter().map(|c| c.as_str()).collect();
                        let mut grants: Vec<String> = def
                            .allow_hosts
                            .iter()
                            .map(|h| format!("net {}", h.value))
                            .collect();
                        grants.extend(def.allow_env.iter().map(|e| format!("env {}", e.value)));
                        if def.allow_clock {
                            grants.push("clock".into());
                        }
                        if matches!(command, PluginsCommand::List) {
                            println!(
                                "{}  {} {}  protocol {}  [{}]  grants: {}{}",
                                def.name,
                                d.name,
                                d.version,
                                d.protocol,
                                capabilities.join(", "),
                                if grants.is_empty() {
                                    "nothing".into()
                                } else {
                                    grants.join(", ")
                                },
                                if d.description.is_empty() {
                                    String::new()
                                } else {
                                    format!("\n    {}", d.description)
                                }
                            );
                        } else {
                            let trust = match (&def.built_by, &def.sha256) {
                                (Some(task), None) => format!("built by task `{}`", task.value),
                                _ => "hash pinned".to_owned(),
                            };
                            println!(
                                "ok    {} ({} {}, protocol {}, {trust})",
                                def.name, d.name, d.version, d.protocol
                            );
                        }
                    }
                    Err(error) => {
                        failed += 1;
                        eprintln!("{:?}", miette::Report::new(error));
                    }
                }
            }
            Ok(i32::from(failed > 0))
        }
        PluginsCommand::New { .. } => unreachable!("handled above"),
    }
}

const CARGO_TOML: &str = r#"[package]
name = "NAME"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
# cdylib: the plugin; rlib: so `cargo test` can test its handlers natively.
crate-type = ["cdylib", "rlib"]

[dependencies]
cairn-pdk = { path = "PDK" }

[profile.release]
panic = "abort"
opt-level = "s"
lto = true
strip = true
codegen-units = 1

# Built on its own by plugins/build.sh.
[workspace]
"#;

fn new_plugin(name: &str, kind: Kind) -> Result<i32, CliError> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(CliError::Io {
            what: format!(
                "`{name}` cannot be a plugin name (use lower-case letters, digits and `-`)"
            ),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    let cwd = std::env::current_dir().map_err(|source| CliError::Io {
        what: "cannot read the current directory".into(),
        source,
    })?;
    let plugins_dir = cwd
        .ancestors()
        .map(|d| d.join("plugins"))
        .find(|d| d.join("pdk/Cargo.toml").is_file())
        .ok_or_else(|| CliError::Io {
            what: "no plugins/pdk found here or above: run this in a repository that has cairn's plugins/ directory".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
    let dir = plugins_dir.join(name);
    if dir.exists() {
        return Err(CliError::Io {
            what: format!("`{}` already exists", dir.display()),
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        });
    }
    let pdk = relative_pdk(&dir, &plugins_dir.join("pdk"));
    let write = |path: &Path, text: &str| -> Result<(), CliError> {
        crate::atomic::write_atomic(path, text.as_bytes()).map_err(|source| CliError::Io {
            what: format!("cannot write `{}`", path.display()),
            source,
        })
    };
    write(
        &dir.join("Cargo.toml"),
        &CARGO_TOML.replace("NAME", name).replace("PDK", &pdk),
    )?;
    write(&dir.join("src/lib.rs"), &scaffold(name, kind))?;
    eprintln!(
        "cairn: created {}\n  build:  plugins/build.sh {name}   (writes plugins/dist/{name}.wasm)\n  test:   cd {} && cargo test\n  use:    [plugins.{}] source = \"plugins/dist/{name}.wasm\", then `cairn plugins lock`",
        dir.display(),
        dir.display(),
        name.replace('-', "_")
    );
    Ok(0)
}

fn relative_pdk(from: &Path, pdk: &Path) -> String {
    let parent = pdk.parent().unwrap_or(Path::new("."));
    let up = from
        .strip_prefix(parent)
        .map_or(1, |rest| rest.components().count());
    let mut path = PathBuf::new();
    for _ in 0..up {
        path.push("..");
    }
    path.push("pdk");
    path.display().to_string()
}

fn scaffold(name: &str, kind: Kind) -> String {
    let (capability, request, response, handler, body, test_input, test_check) = match kind {
        Kind::Secrets => (
            "Secrets", "SecretRequest", "SecretValue", "secrets",
            "    // Read `request.reference` (and `request.field`) from your store here.\n    let value = config::get(\"prefix\").unwrap_or_default() + &request.reference;\n    Ok(SecretValue { value, version: None })",
            r#"{"ref": "db/password"}"#,
            "assert!(matches!(reply, Reply::Ok(ref v) if v.value.ends_with(\"db/password\")));",
        ),
        Kind::Events => (
            "Events", "EventBatch", "()", "events",
            "    for event in &request.events {\n        log::info(format!(\"{event:?}\"));\n    }\n    Ok(())",
            r#"{"events": [{"type": "task_started", "at_ms": 1, "task": "build"}]}"#,
            "assert!(matches!(reply, Reply::Ok(())));",
        ),
        Kind::Executor => (
            "Executor", "WrapRequest", "WrapResponse", "executor",
            "    // Return the command to start instead; cairn starts it.\n    let mut argv = vec![\"env\".to_string()];\n    argv.extend(request.argv);\n    Ok(WrapResponse { argv, cwd: None, set_env: Default::default() })",
            r#"{"task": "t", "argv": ["true"], "cwd": "/", "env": []}"#,
            "assert!(matches!(reply, Reply::Ok(ref r) if r.argv == [\"env\", \"true\"]));",
        ),
        Kind::Task => (
            "Task", "TaskRequest", "TaskResponse", "task",
            "    // Check `request.files` (the task's inputs) and report what you find.\n    let output = format!(\"{} file(s) checked\", request.files.len());\n    Ok(TaskResponse { status: 0, diagnostics: Vec::new(), output })",
            r#"{"task": "check", "files": [{"path": "a.txt", "contents": "x"}]}"#,
            "assert!(matches!(reply, Reply::Ok(ref r) if r.status == 0));",
        ),
    };
    format!(
        r##"//! The `{name}` plugin for cairn.

#[allow(unused_imports)]
use cairn_pdk::api::*;
#[allow(unused_imports)]
use cairn_pdk::{{config, log, plugin}};

fn describe() -> Describe {{
    let mut describe = cairn_pdk::describe("{name}", env!("CARGO_PKG_VERSION"), &[Capability::{capability}]);
    describe.description = "what {name} does".into();
    describe
}}

fn handle(request: {request}) -> Result<{response}, PluginError> {{
{body}
}}

plugin! {{ describe: describe, {handler}: handle }}

#[cfg(test)]
mod tests {{
    use super::*;
    use cairn_pdk::testing;

    #[test]
    fn it_answers_a_request() {{
        let request = cairn_pdk::serde_json::from_str(r#"{test_input}"#).unwrap();
        let reply = testing::call(handle, &request);
        {test_check}
    }}
}}
"##
    )
}
