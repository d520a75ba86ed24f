//! `cairn why` and `cairn cache stats|clean|gc`.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{CliError, Context};
use crate::cache::{self, LockMode, Store};
use crate::config::{format_duration, format_size, parse_duration, parse_size};
use crate::run::driver::{open_cache, predict};
use crate::run::Plan;

#[derive(Debug, clap::Args)]
pub(super) struct WhyArgs {
    /// The task to explain, e.g. `build` or `deploy:production`.
    target: String,
    /// An age identity file to decrypt the task's secrets with, tried first.
    #[arg(long = "identity", short = 'i', value_name = "FILE")]
    identity: Vec<std::path::PathBuf>,
    /// The `-- ARGS` the run would pass.
    #[arg(last = true)]
    args: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
pub(super) enum CacheCommand {
    /// Entries, blobs and size of the local cache.
    Stats,
    /// Remove everything from the local cache.
    Clean,
    /// Remove entries unused for longer than --max-age, then the least recently used beyond --max-size.
    Gc {
        /// Size to trim to, e.g. `5GiB` (default: `[settings] cache_max_size`).
        #[arg(long, value_parser = parse_size_arg)]
        max_size: Option<u64>,
        /// Age beyond which unused entries go, e.g. `30d` (default: `[settings] cache_max_age`).
        #[arg(long, value_parser = parse_duration_arg)]
        max_age: Option<std::time::Duration>,
    },
    /// Show the remote cache this machine would use, and check that it answers (and accepts uploads).
    Remote {
        /// Check it as this mode (default: as `cairn run` would use it).
        #[arg(long, value_enum, value_name = "MODE")]
        remote: Option<super::run::RemoteArg>,
        /// An age identity file, for a token kept in cairn's secrets.
        #[arg(long = "identity", short = 'i', value_name = "FILE")]
        identity: Vec<std::path::PathBuf>,
    },
    /// Make an ed25519 key for publishing to the remote cache; prints the public key to trust.
    Keygen {
        /// Where to write the private key (default: ~/.config/cairn/remote-cache.key).
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<std::path::PathBuf>,
        /// Replace an existing key file.
        #[arg(long)]
        force: bool,
    },
}

fn parse_size_arg(text: &str) -> Result<u64, String> {
    parse_size(text).map_err(|e| format!("{e} (e.g. `5GiB`, `500MiB`)"))
}

fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    parse_duration(text).map_err(|e| format!("{e} (e.g. `30d`, `12h`)"))
}

/// Explains, field by field, why `target`'s key differs from its last successful run.
pub(super) fn why(context: &Context, args: &WhyArgs) -> Result<i32, CliError> {
    let (config, mut graph) = context.load()?;
    let selection = graph.select(std::slice::from_ref(&args.target))?;
    let mut plan = Plan::new(&graph, &selection, &args.args);
    // Secrets enter keys as keyed digests, so the key cannot be explained without them.
    let plugins = (!config.plugins.is_empty())
        .then(|| crate::run::plugins::Plugins::new(std::sync::Arc::clone(&config)));
    let prepared =
        crate::run::secrets::prepare(&mut plan, &config, &args.identity, plugins.as_ref())?;
    if let (Some(plugins), Some(secrets)) = (&plugins, &prepared) {
        plugins
            .sink()
            .set_redactor(std::sync::Arc::clone(&secrets.redactor));
    }
    let session = open_cache(&config).map_err(CliError::Cache)?;
    let target = selection.targets[0];
    let index = plan
        .jobs
        .iter()
        .position(|j| j.node == target)
        .expect("the target is in its own plan");
    let job = &plan.jobs[index];
    let keyed = match predict(&plan, &session, true).swap_remove(index) {
        Ok((keyed, _)) => keyed,
        Err(error) => {
            println!("`{}`: cannot compute its key: {error}", job.label);
            return Ok(1);
        }
    };
    if !job.key.cacheable {
        println!(
            "`{}` is not cached (it declares no `inputs`, or says `cache = false`): it runs every time",
            job.label
        );
        return Ok(0);
    }
    let short = |key: &str| key[..12.min(key.len())].to_owned();
    let now = keyed.key.to_string();
    // Where the local cache lacks the result, whether the remote one has it (asked, not fetched).
    let remote_line = || -> Option<String> {
        if job.key.remote == crate::config::RemoteMode::Off || session.contains(&keyed.key) {
            return None;
        }
        let warn: std::sync::Arc<dyn Fn(&str) + Send + Sync> =
            std::sync::Arc::new(|message: &str| eprintln!("cairn: warning: {message}"));
        let options = super::remote::resolve(
            &config,
            Some(crate::config::RemoteMode::Read),
            &args.identity,
            warn,
        )
        .ok()??;
        let remote = cache::remote::Remote::new(options, &cache::dir_for(&config.root));
        Some(match remote.holder_of(&keyed.key) {
            Ok(Some(writer)) => format!(
                "the remote cache ({}) has a result for this key, {writer}: it will be fetched if it verifies",
                remote.shown_url()
            ),
            Ok(None) => format!(
                "the remote cache ({}) has no result for this key: it will run",
                remote.shown_url()
            ),
            Err(error) => format!("the remote cache could not be asked ({}): it will run", error.0),
        })
    };
    let Some(last) = session.last_success(&job.label) else {
        match remote_line() {
            Some(line) => println!(
                "`{}` has no recorded success here (key {}); {line}",
                job.label,
                short(&now)
            ),
            None => println!(
                "`{}` has no recorded success: it will run (key {})",
                job.label,
                short(&now)
            ),
        }
        return Ok(0);
    };
    let age = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(last.at);
    let ago = format_duration(std::time::Duration::from_secs(age));
    if last.key == now {
        let stored = job.key.cacheable && session.contains(&keyed.key);
        let verdict = match (job.key.cacheable, stored) {
            (false, _) => {
                "but the task is not cached (`cache = false`, or no `inputs`), so it runs"
                    .to_owned()
            }
            (true, true) => "and the cache has its result: it will be restored".to_owned(),
            (true, false) => match remote_line() {
                Some(line) => format!("but the local cache no longer has its result; {line}"),
                None => "but the cache no longer has its result (cleaned or trimmed): it will run"
                    .to_owned(),
            },
        };
        println!(
            "`{}`: nothing changed since its last success {ago} ago (key {}), {verdict}",
            job.label,
            short(&now)
        );
        return Ok(0);
    }
    println!(
        "`{}` changed since its last success {ago} ago (key {} → {}):",
        job.label,
        short(&last.key),
        short(&now)
    );
    let changes = last.fingerprint.changes(&keyed.fingerprint);
    const SHOWN: usize = 50;
    for change in changes.iter().take(SHOWN) {
        println!("  {change}");
    }
    if changes.len() > SHOWN {
        println!("  … and {} more", changes.len() - SHOWN);
    }
    if let Some(line) = remote_line() {
        println!("{line}");
    }
    Ok(0)
}

pub(super) fn cache(context: &Context, command: &CacheCommand) -> Result<i32, CliError> {
    if let CacheCommand::Keygen { output, force } = command {
        return keygen(output.as_deref(), *force);
    }
    let (config, _) = context.load()?;
    let dir = cache::dir_for(&config.root);
    match command {
        CacheCommand::Stats => {
            let store = Store::open(&dir, LockMode::Shared).map_err(CliError::Cache)?;
            let stuck = store.sweep_temps();
            let stats = store.stats();
            println!("cache:   {}", dir.display());
            println!("entries: {}", stats.entries);
            println!("blobs:   {}", stats.blobs);
            println!(
                "size:    {} (limit {}, entries unused for {} are removed)",
                format_size(stats.bytes),
                format_size(config.settings.cache_max_size),
                format_duration(config.settings.cache_max_age)
            );
            for path in stuck {
                println!(
                    "left:    {} (a temp file a killed cairn left, which cannot be removed: remove it by hand)",
                    path.display()
                );
            }
        }
        CacheCommand::Clean => {
            let store = Store::open(&dir, LockMode::Exclusive).map_err(CliError::Cache)?;
            let removed = store.clean().map_err(CliError::Cache)?;
            println!(
                "removed {} entries and {} blobs ({})",
                removed.entries,
                removed.blobs,
                format_size(removed.bytes)
            );
        }
        CacheCommand::Keygen { .. } => unreachable!("handled before the configuration is read"),
        CacheCommand::Remote { remote, identity } => {
            return remote_status(&config, remote.map(Into::into), identity);
        }
        CacheCommand::Gc { max_size, max_age } => {
            let store = Store::open(&dir, LockMode::Exclusive).map_err(CliError::Cache)?;
            let report = store
                .gc(
                    max_size.unwrap_or(config.settings.cache_max_size),
                    max_age.unwrap_or(config.settings.cache_max_age),
                )
                .map_err(CliError::Cache)?;
            println!(
                "removed {} entries and {} blobs ({})",
                report.entries,
                report.blobs,
                format_size(report.bytes)
            );
        }
    }
    Ok(0)
}

/// Writes a new signing key (owner-only, atomically) and prints what to put in tasks.toml.
fn keygen(output: Option<&std::path::Path>, force: bool) -> Result<i32, CliError> {
    use std::os::unix::fs::PermissionsExt;
    let path = match output {
        Some(path) => path.to_owned(),
        None => {
            let config_home = std::env::var_os("XDG_CONFIG_HOME")
                .map(std::path::PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".config"))
                })
                .ok_or_else(|| CliError::RemoteCache {
                    message: "neither XDG_CONFIG_HOME nor HOME is set".into(),
                    help: Some("name the file: `cairn cache keygen --output FILE`".into()),
                })?;
            config_home.join("cairn").join("remote-cache.key")
        }
    };
    if path.exists() && !force {
        return Err(CliError::RemoteCache {
            message: format!("{} already exists", path.display()),
            help: Some("pass `--force` to replace it (readers trusting the old key will stop accepting new entries)".into()),
        });
    }
    let key = cache::remote::SigningKey::generate().map_err(|message| CliError::RemoteCache {
        message,
        help: None,
    })?;
    let public = key.public_text();
    let text = zeroize::Zeroizing::new(format!(
        "# cairn remote cache signing key: keep it secret. Public key: {public}\n{}\n",
        key.to_text().as_str()
    ));
    crate::atomic::write_atomic_with(&path, |file| {
        // Owner-only before the key is written, so it is never readable by others, even for a moment.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        std::io::Write::write_all(file, text.as_bytes())
    })
    .map_err(|source| CliError::Io {
        what: format!("cannot write {}", path.display()),
        source,
    })?;
    println!("wrote the private key to {}", path.display());
    println!("public key: {public}");
    println!();
    println!("Readers trust it in tasks.toml:");
    println!();
    println!("    [remote_cache]");
    println!("    trusted_writers = [{{ name = \"ci\", key = \"{public}\" }}]");
    println!();
    println!("A writer publishes with it: CAIRN_REMOTE_SIGNING_KEY_FILE={} cairn run --remote read-write TARGET", path.display());
    Ok(0)
}

/// `cairn cache remote`: the resolved settings, then a lookup and (for a writer) an upload; exit 1 when the
/// server cannot be used.
fn remote_status(
    config: &crate::config::Config,
    mode: Option<crate::config::RemoteMode>,
    identity: &[std::path::PathBuf],
) -> Result<i32, CliError> {
    let warn: std::sync::Arc<dyn Fn(&str) + Send + Sync> =
        std::sync::Arc::new(|message: &str| eprintln!("cairn: warning: {message}"));
    let Some(options) = super::remote::resolve(config, mode, identity, warn)? else {
        println!(
            "no remote cache: set `url` in [remote_cache] of tasks.toml, or CAIRN_REMOTE_CACHE"
        );
        return Ok(0);
    };
    let timeout = options.timeout;
    let authorities = options.roots.as_ref().map(Vec::len);
    let dir = cache::dir_for(&config.root);
    let remote = cache::remote::Remote::new(options, &dir);
    println!("remote cache:    {}", remote.shown_url());
    println!(
        "mode:            {}",
        if remote.publishes() {
            "read-write"
        } else {
            "read"
        }
    );
    println!("timeout:         {} per request", format_duration(timeout));
    if let Some(count) = authorities {
        println!(
            "https:           trusting only the {count} certificate authorit{} of ca_file",
            if count == 1 { "y" } else { "ies" }
        );
    }
    let writers = remote.trusted_names();
    println!(
        "trusted writers: {}",
        if writers.is_empty() {
            "none (nothing will be read)".to_owned()
        } else {
            writers.join(", ")
        }
    );
    if let Some(key) = remote.public_key() {
        println!("signing as:      {key}");
    }
    let probe = remote.probe();
    let mut usable = true;
    match &probe.read {
        Ok(took) => println!("lookup:          ok ({} ms)", took.as_millis()),
        Err(error) => {
            usable = false;
            println!("lookup:          failed: {}", error.0);
        }
    }
    match &probe.write {
        Some(Ok(took)) => println!("upload:          ok ({} ms, read back)", took.as_millis()),
        Some(Err(error)) => {
            usable = false;
            println!("upload:          failed: {}", error.0);
        }
        None => {}
    }
    Ok(if usable { 0 } else { 1 })
}
