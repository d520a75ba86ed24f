//! Which remote cache a run uses and how: `[remote_cache]`, then the environment, then `--remote`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use super::CliError;
use crate::cache::remote::{RemoteOptions, SigningKey};
use crate::config::source::to_source_span;
use crate::config::{
    Config, ConfigError, Credential, ExecutionMode, RemoteMode, Spanned, DEFAULT_REMOTE_TIMEOUT,
};
use crate::run::remote::RemoteExecutionOptions;

/// The server's URL, overriding `[remote_cache] url`; `off` turns the remote cache off.
pub const URL_VAR: &str = "CAIRN_REMOTE_CACHE";
/// `read`, `read-write` or `off`, overriding `[remote_cache] mode`.
pub const MODE_VAR: &str = "CAIRN_REMOTE_CACHE_MODE";
/// The bearer token, when `[remote_cache]` names no `token`.
pub const TOKEN_VAR: &str = "CAIRN_REMOTE_CACHE_TOKEN";
/// The signing key itself, when `[remote_cache]` names no `signing_key`.
pub const KEY_VAR: &str = "CAIRN_REMOTE_SIGNING_KEY";
/// A file holding the signing key, when `[remote_cache]` names no `signing_key`.
pub const KEY_FILE_VAR: &str = "CAIRN_REMOTE_SIGNING_KEY_FILE";
/// A PEM bundle of certificate authorities to trust, overriding `[remote_cache] ca_file`.
pub const CA_FILE_VAR: &str = "CAIRN_REMOTE_CACHE_CA_FILE";

/// The execution engine's URL, overriding `[remote_execution] url`; `off` turns remote execution off.
pub const EXECUTION_URL_VAR: &str = "CAIRN_REMOTE_EXECUTION";
/// The engine's bearer token, when `[remote_execution]` names no `token`.
pub const EXECUTION_TOKEN_VAR: &str = "CAIRN_REMOTE_EXECUTION_TOKEN";
/// A PEM bundle of certificate authorities to trust for the engine, overriding `[remote_execution] ca_file`.
pub const EXECUTION_CA_FILE_VAR: &str = "CAIRN_REMOTE_EXECUTION_CA_FILE";

/// The execution engine a run uses, or `None` when it uses none: `[remote_execution]`, then
/// CAIRN_REMOTE_EXECUTION, then `--remote-exec`.
pub(super) fn resolve_execution(
    config: &Config,
    flag: Option<ExecutionMode>,
    identities: &[PathBuf],
    warn: Arc<dyn Fn(&str) + Send + Sync>,
) -> Result<Option<RemoteExecutionOptions>, CliError> {
    let Some(endpoint) = execution_endpoint(config, flag, identities)? else {
        return Ok(None);
    };
    let def = config.remote_execution.as_ref();
    let mode = flag.unwrap_or(def.map_or(ExecutionMode::Auto, |d| d.mode));
    // The scheduler awaits every call: on its runtime, a call is not handed to another thread and back.
    let client = crate::reapi::Client::on_caller_runtime(endpoint).map_err(|error| {
        execution_problem(
            error.to_string(),
            "write it as `grpc://HOST:PORT` or `grpcs://HOST:PORT`",
        )
    })?;
    Ok(Some(RemoteExecutionOptions {
        client,
        mode,
        platform: def.map(|d| d.platform.clone()).unwrap_or_default(),
        jobs: def.map_or(crate::config::DEFAULT_REMOTE_JOBS, |d| d.jobs),
        warn,
    }))
}

/// Where the engine is and how to reach it, or `None` when remote execution is off for this run.
pub(super) fn execution_endpoint(
    config: &Config,
    flag: Option<ExecutionMode>,
    identities: &[PathBuf],
) -> Result<Option<crate::reapi::Endpoint>, CliError> {
    let def = config.remote_execution.as_ref();
    let env_url = std::env::var(EXECUTION_URL_VAR)
        .ok()
        .filter(|u| !u.trim().is_empty());
    if env_url.as_deref() == Some("off") {
        return Ok(None);
    }
    let mode = flag.unwrap_or(def.map_or(ExecutionMode::Auto, |d| d.mode));
    if mode == ExecutionMode::Off {
        return Ok(None);
    }
    let url = match env_url.or_else(|| def.and_then(|d| d.url.as_ref()).map(|u| u.value.clone())) {
        Some(url) => url,
        None if flag.is_some() => {
            return Err(execution_problem(
                "`--remote-exec` needs an execution engine, and none is configured",
                &format!(
                "set `url` in [remote_execution] of tasks.toml, or {EXECUTION_URL_VAR}=grpcs://…"
            ),
            ))
        }
        None => return Ok(None),
    };
    if !(url.starts_with("grpc://") || url.starts_with("grpcs://")) {
        return Err(execution_problem(
            format!("{EXECUTION_URL_VAR}=`{url}` is not a gRPC URL"),
            "write it as `grpcs://remote.example.com:443` (or `grpc://127.0.0.1:8980`), or `off`",
        ));
    }
    let token = match def.and_then(|d| d.token.as_ref()) {
        Some(source) => read_credential(config, "remote_execution.token", source, identities)?,
        None => std::env::var(EXECUTION_TOKEN_VAR).ok().map(Zeroizing::new),
    };
    let ca_pem = certificate_authorities(
        config,
        EXECUTION_CA_FILE_VAR,
        def.and_then(|d| d.ca_file.as_ref()),
        "remote_execution.ca_file",
        read_pem,
    )?;
    Ok(Some(crate::reapi::Endpoint {
        url,
        instance_name: def.map(|d| d.instance_name.clone()).unwrap_or_default(),
        token,
        ca_pem,
        timeout: def.map_or(crate::config::DEFAULT_EXECUTION_CALL_TIMEOUT, |d| d.timeout),
    }))
}

/// The certificate authorities to trust instead of the built-in roots: the file `env_var` names, else the one
/// tasks.toml names at `key` (an error there points at it), read by `read`.
fn certificate_authorities<T>(
    config: &Config,
    env_var: &str,
    written: Option<&Spanned<String>>,
    key: &str,
    read: fn(&Path) -> Result<T, String>,
) -> Result<Option<T>, CliError> {
    const HELP: &str =
        "name a PEM file of the certificate authorities that signed the server's certificate";
    match (std::env::var_os(env_var), written) {
        (Some(path), _) => read(Path::new(&path))
            .map(Some)
            .map_err(|why| problem(format!("{env_var}: {why}"), HELP.into())),
        (None, Some(path)) => read(&expand(config, &path.value)).map(Some).map_err(|why| {
            CliError::Config(ConfigError::InvalidValue {
                key: key.into(),
                reason: why,
                src: config.source.clone(),
                span: to_source_span(&path.span),
                help: Some(HELP.into()),
            })
        }),
        (None, None) => Ok(None),
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    let pem =
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    // Checked here so that a wrong file is named now, not as a handshake failure later.
    crate::cache::remote::parse_roots(&pem).map_err(|why| format!("{}: {why}", path.display()))?;
    Ok(pem)
}

fn execution_problem(message: impl Into<String>, help: &str) -> CliError {
    CliError::RemoteCache {
        message: message.into(),
        help: Some(help.to_owned()),
    }
}

/// The remote cache options for a run, or `None` when it uses none.
pub(super) fn resolve(
    config: &Config,
    flag: Option<RemoteMode>,
    identities: &[PathBuf],
    warn: Arc<dyn Fn(&str) + Send + Sync>,
) -> Result<Option<RemoteOptions>, CliError> {
    let def = config.remote_cache.as_ref();
    let env_url = std::env::var(URL_VAR).ok().filter(|u| !u.trim().is_empty());
    if env_url.as_deref() == Some("off") {
        return Ok(None);
    }
    let url = match env_url.or_else(|| def.and_then(|d| d.url.as_ref()).map(|u| u.value.clone())) {
        Some(url) => url,
        None if flag.is_some_and(|m| m != RemoteMode::Off) => {
            return Err(problem(
                "`--remote` needs a remote cache, and none is configured",
                format!("set `url` in [remote_cache] of tasks.toml, or {URL_VAR}=https://…"),
            ))
        }
        None => return Ok(None),
    };
    let grpc = url.starts_with("grpc://") || url.starts_with("grpcs://");
    if !(url.starts_with("http://") || url.starts_with("https://") || grpc) {
        return Err(problem(
            format!("{URL_VAR} is not an HTTP or gRPC URL"),
            "write it as `https://cache.example.com/cairn` (a Bazel HTTP cache) or `grpcs://remote.example.com:443` (a REAPI server), or `off`".into(),
        ));
    }
    let env_mode = match std::env::var(MODE_VAR) {
        Ok(text) if !text.trim().is_empty() => {
            Some(RemoteMode::parse(text.trim()).ok_or_else(|| {
                problem(
                    format!("{MODE_VAR}=`{text}` is not a mode"),
                    "use `read`, `read-write` or `off`".into(),
                )
            })?)
        }
        _ => None,
    };
    let mode = flag
        .or(env_mode)
        .unwrap_or(def.map_or(RemoteMode::Read, |d| d.mode));
    if mode == RemoteMode::Off {
        return Ok(None);
    }
    let token = match def.and_then(|d| d.token.as_ref()) {
        Some(source) => read_credential(config, "token", source, identities)?,
        None => std::env::var(TOKEN_VAR).ok().map(Zeroizing::new),
    };
    let mut signing_key = None;
    // A REAPI server's entries are trusted through its authentication: there is nothing to sign.
    if mode == RemoteMode::ReadWrite && !grpc {
        let found = match def.and_then(|d| d.signing_key.as_ref()) {
            Some(source) => read_credential(config, "signing_key", source, identities)?
                .map(|text| (text, Some(source))),
            None => match (std::env::var(KEY_VAR), std::env::var_os(KEY_FILE_VAR)) {
                (Ok(text), _) => Some((Zeroizing::new(text), None)),
                (_, Some(path)) => Some((
                    read_file(Path::new(&path)).map_err(|why| {
                        problem(
                            format!("{KEY_FILE_VAR}: {why}"),
                            "`cairn cache keygen --output PATH` writes a signing key".into(),
                        )
                    })?,
                    None,
                )),
                _ => None,
            },
        };
        match found {
            Some((text, source)) => {
                let key = SigningKey::parse(&text).map_err(|why| {
                    let why = format!("the signing key cannot be used: {why}");
                    match source {
                        Some(source) => in_tasks_toml(config, "signing_key", source, why),
                        None => problem(
                            format!("{why} (from {KEY_VAR} or {KEY_FILE_VAR})"),
                            "`cairn cache keygen` makes a key file".into(),
                        ),
                    }
                })?;
                signing_key = Some(key);
            }
            // A pull request from a fork has no access to the key: it still reads.
            None => warn(&format!(
                "not publishing to the remote cache: no signing key (set `signing_key` in [remote_cache], or {KEY_FILE_VAR}); reading only"
            )),
        }
    }
    let roots = certificate_authorities(
        config,
        CA_FILE_VAR,
        def.and_then(|d| d.ca_file.as_ref()),
        "remote_cache.ca_file",
        read_roots,
    )?;
    let trusted = def.map(|d| d.trusted_writers.clone()).unwrap_or_default();
    if trusted.is_empty() && signing_key.is_none() && !grpc {
        warn("the remote cache trusts no writer (`trusted_writers` in [remote_cache] is empty): nothing will be read from it");
    }
    Ok(Some(RemoteOptions {
        url,
        token,
        timeout: def.map_or(DEFAULT_REMOTE_TIMEOUT, |d| d.timeout),
        roots,
        trusted,
        signing_key,
        publish_unsigned: grpc && mode == RemoteMode::ReadWrite,
        warn,
    }))
}

/// Reads a credential named in tasks.toml; `None` when it names an environment variable that is not set.
/// A file or secret that cannot be read is an error pointing at where tasks.toml names it.
fn read_credential(
    config: &Config,
    what: &str,
    source: &Spanned<Credential>,
    identities: &[PathBuf],
) -> Result<Option<Zeroizing<String>>, CliError> {
    match &source.value {
        Credential::Env(var) => Ok(std::env::var(var).ok().map(Zeroizing::new)),
        Credential::File(path) => read_file(&expand(config, path))
            .map(Some)
            .map_err(|why| in_tasks_toml(config, what, source, why)),
        Credential::Secret { from, key } => {
            crate::run::secrets::read_one(config, from, key, identities)
                .map(Some)
                .map_err(CliError::Secrets)
        }
    }
}

/// A path named in tasks.toml: `~/…` below the home directory, else relative to the repository root.
fn expand(config: &Config, path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME").map_or_else(
            || PathBuf::from(path),
            |home| PathBuf::from(home).join(rest),
        ),
        None => config.root.join(path),
    }
}

fn read_roots(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let pem =
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    crate::cache::remote::parse_roots(&pem).map_err(|why| format!("{}: {why}", path.display()))
}

fn read_file(path: &Path) -> Result<Zeroizing<String>, String> {
    std::fs::read_to_string(path)
        .map(|text| Zeroizing::new(text.trim().to_owned()))
        .map_err(|error| format!("cannot read {}: {error}", path.display()))
}

/// An error about a credential, shown at the place tasks.toml names it.
fn in_tasks_toml(
    config: &Config,
    what: &str,
    source: &Spanned<Credential>,
    why: String,
) -> CliError {
    CliError::Config(ConfigError::InvalidValue {
        // `token` and `signing_key` are [remote_cache]'s; other tables name their key in full.
        key: if what.contains('.') {
            what.to_owned()
        } else {
            format!("remote_cache.{what}")
        },
        reason: why,
        src: config.source.clone(),
        span: to_source_span(&source.span),
        help: Some(match what {
            "signing_key" => "`cairn cache keygen --output PATH` writes a signing key".into(),
            _ => "check the path, or name the credential another way: `{ env = \"VAR\" }`".into(),
        }),
    })
}

fn problem(message: impl Into<String>, help: String) -> CliError {
    CliError::RemoteCache {
        message: message.into(),
        help: Some(help),
    }
}
