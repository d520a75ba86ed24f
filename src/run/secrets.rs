//! Secrets for a run: each task's values decrypted once before anything starts, given to the task in its
//! environment or as private files, entered into cache keys only as keyed digests, and registered with the
//! redactor that filters everything the tasks print.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use zeroize::Zeroizing;

use super::job::{Plan, SecretsRequest};
use crate::config::source::line_column;
use crate::config::Config;
use crate::secrets::files::{self, Decrypted};
use crate::secrets::keys::Keyring;
use crate::secrets::policy::Policy;
use crate::secrets::redact::Redactor;
use crate::secrets::tree::{leaf_paths, lookup, Node};
use crate::secrets::SecretsError;
use cairn_plugin_api::{exports, Capability, Context as PluginContext, SecretRequest, SecretValue};

use super::plugins::Plugins;
use cairn_plugin_client::HostError;

/// Calls of a secrets provider when it keeps answering "unavailable".
const RETRIES: u32 = 3;

/// The values one task receives.
#[derive(Default)]
pub struct Injection {
    /// `(variable, value)` set in the task's environment.
    pub env: Vec<(String, Zeroizing<String>)>,
    /// `(variable, value)` written to private files; the variable gets the file's path.
    pub files: Vec<(String, Zeroizing<String>)>,
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .env
            .iter()
            .chain(&self.files)
            .map(|(n, _)| n.as_str())
            .collect();
        write!(f, "Injection({names:?})")
    }
}

/// Everything a run needs to hand out secrets.
#[derive(Debug, Default)]
pub struct RunSecrets {
    /// Filters every secret of the run out of what tasks print.
    pub redactor: Arc<Redactor>,
    /// Secrets refused as too short to redact, by name.
    pub warnings: Vec<String>,
}

/// The directory below the secrets root whose subdirectories are not environments.
const SHARED_DIRS: &[&str] = &["users", "hosts"];

/// Decrypts what the plan's tasks ask for, checks each task stays in its environment, and puts keyed
/// digests of the values into their cache keys. `None` when no task asks for secrets.
pub fn prepare(
    plan: &mut Plan,
    config: &Config,
    identities: &[PathBuf],
    plugins: Option<&Plugins>,
) -> Result<Option<RunSecrets>, SecretsError> {
    // cairn's own credentials are withheld from tasks, and redacted in case a task finds them all the same.
    let credentials = super::job::credential_values(config);
    if !plan.jobs.iter().any(|j| j.secrets.is_some()) {
        if credentials.is_empty() {
            return Ok(None);
        }
        return Ok(Some(RunSecrets {
            redactor: Arc::new(
                Redactor::new(credentials.iter().map(|(n, v)| (n.as_str(), v.as_bytes()))).0,
            ),
            ..RunSecrets::default()
        }));
    }
    for job in &plan.jobs {
        if let Some(request) = &job.secrets {
            check_environment(config, &job.label, request)?;
        }
    }
    if let Some(plugins) = plugins {
        plugins.sink().hold();
    }
    let keyring = Keyring::discover(identities);
    let policy = Policy::discover(&config.root).ok();
    let mut opened: HashMap<PathBuf, Decrypted> = HashMap::new();
    let digest_key = digest_key(&config.root)?;
    let mut run = RunSecrets::default();
    let mut all: Vec<(String, Zeroizing<String>)> = credentials;
    for job in &mut plan.jobs {
        let Some(request) = job.secrets.clone() else {
            continue;
        };
        let from_file = request
            .env
            .iter()
            .chain(&request.files)
            .any(|(_, key)| provider_of(config, key).is_none());
        if from_file && !opened.contains_key(&request.file) {
            let decrypted = files::decrypt(&request.file, &keyring, policy.as_ref())?;
            opened.insert(request.file.clone(), decrypted);
        }
        let empty = Vec::new();
        let plain = opened.get(&request.file).map_or(&empty, |f| &f.plain);
        let value = |key: &str| -> Result<Zeroizing<String>, SecretsError> {
            if let Some((provider, reference)) = provider_of(config, key) {
                return from_plugin(plugins, provider, reference, job);
            }
            match lookup(plain, key) {
                Some(Node::Scalar(scalar)) => Ok(Zeroizing::new(scalar.text.clone())),
                Some(Node::Null) => Ok(Zeroizing::new(String::new())),
                Some(_) => Err(SecretsError::usage(
                    format!(
                        "task `{}`: `{key}` in {} holds several values, not one",
                        job.label, request.relative
                    ),
                    Some(format!(
                        "name one of them: {}",
                        leaf_paths(plain)
                            .into_iter()
                            .filter(|p| p.starts_with(key))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                )),
                None => Err(SecretsError::NoKey {
                    path: request.file.clone(),
                    key: key.to_string(),
                    help: Some(format!(
                        "task `{}` asks for it; the file has: {}",
                        job.label,
                        leaf_paths(plain).join(", ")
                    )),
                }),
            }
        };
        let mut injection = Injection::default();
        for (var, key) in &request.env {
            injection.env.push((var.clone(), value(key)?));
        }
        for (var, key) in &request.files {
            injection.files.push((var.clone(), value(key)?));
        }
        let job = Arc::make_mut(job);
        for (var, value) in injection.env.iter().chain(&injection.files) {
            job.key.env.insert(
                format!("secret:{var}"),
                keyed_digest(&digest_key, var, value),
            );
            all.push((var.clone(), value.clone()));
        }
        job.injection = Some(Arc::new(injection));
    }
    let (redactor, refused) = Redactor::new(all.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
    let mut refused: Vec<String> = refused.into_iter().map(|r| r.name).collect();
    refused.dedup();
    run.warnings = refused;
    run.redactor = Arc::new(redactor);
    Ok(Some(run))
}

/// A task of environment E may read `secrets/E/…`, the shared `secrets/users/` and `secrets/hosts/`, and
/// the environments it lists in `allow_envs`; no other environment's directory.
fn check_environment(
    config: &Config,
    task: &str,
    request: &SecretsRequest,
) -> Result<(), SecretsError> {
    let parts: Vec<&str> = request
        .relative
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(SecretsError::usage(
            format!(
                "task `{task}`: `secrets.from` (`{}`) must not leave the repository with `..`",
                request.relative
            ),
            None,
        ));
    }
    let (Some(environment), ["secrets", dir, _, ..]) = (&request.environment, parts.as_slice())
    else {
        return Ok(());
    };
    if dir == environment
        || SHARED_DIRS.contains(dir)
        || request.allow_envs.iter().any(|e| e == dir)
    {
        return Ok(());
    }
    let (line, column) = line_column(config.source.inner(), request.span.start);
    Err(SecretsError::usage(
        format!(
            "task `{task}` belongs to environment `{environment}` but reads `{}`, a file of environment `{dir}` ({}:{line}:{column})",
            request.relative,
            config.source.name()
        ),
        Some(format!("if that is intended, say so: `secrets.allow_envs = [\"{dir}\"]`")),
    ))
}

/// The per-repository key that secret digests are keyed with: 32 random bytes in `.cairn/secret-digest.key`
/// (never committed), created on first use.
fn digest_key(root: &Path) -> Result<[u8; 32], SecretsError> {
    let path = root.join(".cairn/secret-digest.key");
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() == 32 => {
            let mut key = [0u8; 32];
            key.copy_from_slice(&bytes);
            return Ok(key);
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SecretsError::io("read", &path, e)),
    }
    if let Some(dir) = path.parent() {
        crate::atomic::sweep_stale_temps(dir);
    }
    let key = crate::secrets::cipher::random::<32>().map_err(|e| SecretsError::format(&path, e))?;
    crate::atomic::write_atomic_with(&path, |file| {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(&key)
    })
    .map_err(|e| SecretsError::io("write", &path, e))?;
    Ok(key)
}

fn keyed_digest(key: &[u8; 32], var: &str, value: &str) -> String {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(var.as_bytes());
    hasher.update(b"\0");
    hasher.update(value.as_bytes());
    crate::cache::hex(hasher.finalize().as_bytes())
}

static DIR_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A task's private directory of secret files: 0700, on tmpfs where the system has one, each file 0600;
/// overwritten and removed when dropped (the task has ended).
pub struct SecretFiles {
    dir: PathBuf,
    /// `(variable, path)` for the task's environment.
    pub env: Vec<(String, String)>,
}

impl SecretFiles {
    /// Writes `injection`'s files.
    pub fn create(label: &str, injection: &Injection) -> std::io::Result<SecretFiles> {
        let base = files::private_base();
        let safe_label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = base.join(format!(
            "cairn-secrets-{}-{}-{safe_label}",
            std::process::id(),
            DIR_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let mut files = SecretFiles {
            dir,
            env: Vec::new(),
        };
        for (var, value) in &injection.files {
            let path = files.dir.join(var);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            file.write_all(value.as_bytes())?;
            files.env.push((var.clone(), path.display().to_string()));
        }
        Ok(files)
    }
}

impl Drop for SecretFiles {
    fn drop(&mut self) {
        files::wipe_dir(&self.dir);
    }
}

/// Removes secret directories left by cairn processes that were killed before they could clean up.
pub fn remove_stale_dirs() -> Vec<PathBuf> {
    files::sweep_stale_private_dirs()
}

/// Where a task's secret `key` comes from, for people: `` `db.password` in secrets/production/app.yaml `` or
/// `` `app/production#token` from plugin `vault` ``. Nothing is read.
pub fn source_of(config: &Config, request: &SecretsRequest, key: &str) -> String {
    match provider_of(config, key) {
        Some((plugin, reference)) => format!("`{reference}` from plugin `{plugin}`"),
        None => format!("`{key}` in {}", request.relative),
    }
}

/// `(plugin, reference)` when `key` names a declared plugin: `vault:app/production#db_password`.
fn provider_of<'k>(config: &Config, key: &'k str) -> Option<(&'k str, &'k str)> {
    let (provider, reference) = key.split_once(':')?;
    config
        .plugins
        .iter()
        .any(|p| p.name == provider)
        .then_some((provider, reference))
}

/// Asks the secrets plugin `provider` for `reference` (`path#field`, optionally `@version`).
fn from_plugin(
    plugins: Option<&Plugins>,
    provider: &str,
    reference: &str,
    job: &super::Job,
) -> Result<Zeroizing<String>, SecretsError> {
    let plugins = plugins.ok_or_else(|| SecretsError::usage("plugins are not available", None))?;
    let (rest, version) = match reference.rsplit_once('@') {
        Some((r, v)) if !v.contains('/') && !v.contains('#') => (r, Some(v.to_string())),
        _ => (reference, None),
    };
    let (path, field) = match rest.split_once('#') {
        Some((p, f)) => (p, Some(f.to_string())),
        None => (rest, None),
    };
    let plugin = plugins
        .get(provider, Capability::Secrets)
        .map_err(|e| SecretsError::usage(format!("task `{}`: {e}", job.label), None))?;
    let request = SecretRequest {
        reference: path.to_string(),
        field,
        version,
        context: PluginContext {
            task: job.label.clone(),
            params: job.key.params.clone(),
        },
    };
    let sink = plugins.sink();
    // A provider that says "try again" (unavailable: throttled, sealed, restarting) gets two more tries.
    let mut delay = std::time::Duration::from_millis(250);
    let mut attempt = 1;
    let result = loop {
        let result: Result<SecretValue, _> =
            plugin.call(exports::SECRET_GET, &request, sink.as_ref());
        match &result {
            Err(HostError::Plugin { error, .. }) if error.retryable && attempt < RETRIES => {
                std::thread::sleep(delay);
                delay *= 3;
                attempt += 1;
            }
            _ => break result,
        }
    };
    let value = result.map_err(|e| {
        SecretsError::usage(
            format!("task `{}` needs `{provider}:{reference}`: {e}", job.label),
            None,
        )
    })?;
    Ok(Zeroizing::new(value.value))
}

/// One value of a secrets file (`key` dotted for nested maps), for cairn's own use (the remote cache's
/// token); the file is relative to the repository root unless absolute.
pub fn read_one(
    config: &Config,
    file: &str,
    key: &str,
    identities: &[PathBuf],
) -> Result<Zeroizing<String>, SecretsError> {
    let path = config.root.join(file);
    let keyring = Keyring::discover(identities);
    let policy = Policy::discover(&config.root).ok();
    let decrypted = files::decrypt(&path, &keyring, policy.as_ref())?;
    match lookup(&decrypted.plain, key) {
        Some(Node::Scalar(scalar)) => Ok(Zeroizing::new(scalar.text.clone())),
        _ => Err(SecretsError::NoKey {
            path,
            key: key.to_owned(),
            help: Some(format!(
                "the file has: {}",
                leaf_paths(&decrypted.plain).join(", ")
            )),
        }),
    }
}
