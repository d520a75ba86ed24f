//! `cairn plugins …`: list, check and pin the plugins tasks.toml declares, and start a new one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::plugin_author::Kind;
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
    /// Create a plugin crate: a standalone crate `./NAME` anywhere, or `plugins/NAME` in cairn's repository.
    New {
        /// The plugin's name (also its crate's).
        name: String,
        /// What it does.
        #[arg(long, value_enum)]
        kind: Kind,
        /// Where cairn-pdk comes from: a path (`…/cairn/plugins/pdk`) or `git+URL#TAG`.
        #[arg(long, value_name = "PATH|git+URL#TAG")]
        pdk: Option<String>,
        /// Create the crate here instead of `./NAME`.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run a plugin crate's built module in the real plugin host on its recorded requests (tests/requests/).
    Test {
        /// The crate's directory or Cargo.toml (default: the current directory).
        path: Option<PathBuf>,
    },
    /// Build a plugin crate for wasm32 into its dist/ directory, and print the module's size and SHA-256.
    Build {
        /// The crate's directory or Cargo.toml (default: the current directory).
        path: Option<PathBuf>,
        /// Then record the hashes of tasks.toml's plugins in plugins.lock (as `cairn plugins lock`).
        #[arg(long)]
        lock: bool,
    },
}

pub(super) fn plugins(context: &Context, command: &PluginsCommand) -> Result<i32, CliError> {
    match command {
        PluginsCommand::New {
            name,
            kind,
            pdk,
            dir,
        } => return super::plugin_author::new_plugin(name, *kind, pdk.as_deref(), dir.as_deref()),
        PluginsCommand::Test { path } => {
            return super::plugin_author::test(path.as_deref().unwrap_or(Path::new(".")))
        }
        PluginsCommand::Build { path, lock } => {
            super::plugin_author::build(path.as_deref().unwrap_or(Path::new(".")))?;
            if !*lock {
                return Ok(0);
            }
            let (config, _) = context.load()?;
            return lock_plugins(&config);
        }
        _ => {}
    }
    let (config, _) = context.load()?;
    if config.plugins.is_empty() {
        eprintln!("cairn: tasks.toml declares no plugins ([plugins.NAME] with a `source`)");
        return Ok(0);
    }
    let registry = Plugins::new(Arc::clone(&config));
    match command {
        PluginsCommand::Lock => lock_plugins(&config),
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
        PluginsCommand::New { .. } | PluginsCommand::Build { .. } | PluginsCommand::Test { .. } => {
            unreachable!("handled above")
        }
    }
}

/// Records the hash of every declared plugin in plugins.lock (a URL's module is downloaded to be hashed).
fn lock_plugins(config: &crate::config::Config) -> Result<i32, CliError> {
    if config.plugins.is_empty() {
        eprintln!("cairn: tasks.toml declares no plugins ([plugins.NAME] with a `source`)");
        return Ok(0);
    }
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
        let bytes = match crate::config::remote_source(&def.source.value) {
            // Locking is when what a URL serves is looked at and trusted: it is downloaded now.
            Some(Ok(url)) => {
                let bytes = crate::run::plugins::download(&url).map_err(|reason| CliError::Io {
                    what: format!(
                        "cannot download plugin `{}` from `{}`",
                        def.name, def.source.value
                    ),
                    source: std::io::Error::other(reason),
                })?;
                if let Some(dir) = crate::run::plugins::plugin_cache() {
                    let _ = crate::atomic::write_atomic_private(
                        &dir.join(format!("{}.wasm", sha256_hex(&bytes))),
                        &bytes,
                    );
                }
                bytes
            }
            _ => {
                let path = config.root.join(&def.source.value);
                std::fs::read(&path).map_err(|source| CliError::Io {
                    what: format!(
                        "cannot read plugin `{}` (`{}`); build it with `cairn plugins build`",
                        def.name, def.source.value
                    ),
                    source,
                })?
            }
        };
        let sha256 = sha256_hex(&bytes);
        if let Some(pinned) = &def.sha256 {
            if !pinned.value.eq_ignore_ascii_case(&sha256) {
                eprintln!(
                    "cairn: warning: `{}` now has SHA-256 {sha256}, but its `sha256` in tasks.toml says {}: tasks.toml's pin wins",
                    def.name, pinned.value
                );
            }
        }
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
