//! `cairn remote`: the execution engine as this repository reaches it — resolved settings, the engine's
//! capabilities, a round trip, and a live action through its sandbox.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{CliError, Context};
use crate::config::{Credential, ExecutionMode};
use crate::reapi::proto::{self, command};
use crate::reapi::tree::Blobs;
use crate::reapi::{Client, Operation};

/// Arguments of `cairn remote`.
#[derive(Debug, clap::Args)]
pub(super) struct RemoteArgs {
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
    /// Age identities to try for a token kept in cairn's secrets.
    #[arg(long, value_name = "PATH")]
    identity: Vec<PathBuf>,
}

/// What `cairn remote` found.
#[derive(Debug, Serialize)]
struct Findings {
    url: String,
    instance_name: String,
    mode: &'static str,
    jobs: usize,
    platform: Vec<(String, String)>,
    token: String,
    api: Option<String>,
    execution_enabled: Option<bool>,
    max_batch_bytes: Option<usize>,
    sha256: Option<bool>,
    round_trip_ms: Option<f64>,
    execute_ms: Option<f64>,
    execute_output: Option<String>,
    error: Option<String>,
}

/// Runs `cairn remote`: 0 when the engine answered and ran the probe, 1 when not.
pub(super) fn remote(context: &Context, args: &RemoteArgs) -> Result<i32, CliError> {
    let (config, _) = context.load()?;
    let def = config.remote_execution.as_ref();
    let Some(endpoint) = super::remote::execution_endpoint(&config, None, &args.identity)? else {
        return Err(CliError::RemoteCache {
            message: "no execution engine is configured (or CAIRN_REMOTE_EXECUTION=off)".into(),
            help: Some(
                "add `[remote_execution]` with `url = \"grpcs://HOST:PORT\"` to tasks.toml, or set CAIRN_REMOTE_EXECUTION"
                    .into(),
            ),
        });
    };
    let mode = def.map_or(ExecutionMode::Auto, |d| d.mode);
    let mut findings = Findings {
        url: endpoint.url.clone(),
        instance_name: endpoint.instance_name.clone(),
        mode: match mode {
            ExecutionMode::Auto => "auto",
            ExecutionMode::Required => "required",
            ExecutionMode::Off => "off",
        },
        jobs: def.map_or(crate::config::DEFAULT_REMOTE_JOBS, |d| d.jobs),
        platform: def.map(|d| d.platform.clone()).unwrap_or_default(),
        token: match def.and_then(|d| d.token.as_ref()).map(|t| &t.value) {
            Some(Credential::Env(var)) => format!("from ${var}"),
            Some(Credential::File(path)) => format!("from the file {path}"),
            Some(Credential::Secret { from, key }) => format!("from the secret {key} of {from}"),
            None if endpoint.token.is_some() => {
                format!("from ${}", super::remote::EXECUTION_TOKEN_VAR)
            }
            None => "none".into(),
        },
        api: None,
        execution_enabled: None,
        max_batch_bytes: None,
        sha256: None,
        round_trip_ms: None,
        execute_ms: None,
        execute_output: None,
        error: None,
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let client = Arc::new(
        Client::new(endpoint).map_err(|error| CliError::RemoteCache {
            message: error.to_string(),
            help: Some("write it as `grpc://HOST:PORT` or `grpcs://HOST:PORT`".into()),
        })?,
    );
    let outcome = (|| -> Result<(), crate::reapi::ReapiError> {
        let limits = client.blocking(client.capabilities())?;
        findings.api = Some(limits.api.clone());
        findings.execution_enabled = Some(limits.exec_enabled);
        findings.max_batch_bytes = Some(limits.max_batch);
        findings.sha256 = Some(limits.sha256);
        // The connection is open now: this is the engine's own answer time.
        let (action, blobs) = probe_action();
        let began = Instant::now();
        client.blocking(client.get_action_result(action.clone(), Vec::new()))?;
        findings.round_trip_ms = Some(ms(began.elapsed()));
        if !limits.exec_enabled {
            return Ok(());
        }
        let began = Instant::now();
        client.blocking(client.upload_missing(Arc::new(blobs)))?;
        let finished = client.blocking(client.execute(action, true, Operation::default()))?;
        findings.execute_ms = Some(ms(began.elapsed()));
        let result = finished.response.result.unwrap_or_default();
        let stdout = if result.stdout_raw.is_empty() {
            match result.stdout_digest {
                Some(digest) => client
                    .blocking(client.read_blobs(vec![digest.clone()]))?
                    .remove(&digest.hash)
                    .unwrap_or_default(),
                None => Vec::new(),
            }
        } else {
            result.stdout_raw
        };
        findings.execute_output = Some(format!(
            "exit {}: {}",
            result.exit_code,
            String::from_utf8_lossy(&stdout).trim()
        ));
        Ok(())
    })();
    if let Err(error) = outcome {
        findings.error = Some(error.to_string());
    }
    let healthy = findings.error.is_none()
        && findings.execution_enabled == Some(true)
        && findings
            .execute_output
            .as_deref()
            .is_some_and(|o| o.starts_with("exit 0:"));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&findings).unwrap_or_default()
        );
    } else {
        print!("{}", describe(&findings));
    }
    Ok(if healthy { 0 } else { 1 })
}

/// A tiny action that is never cached: `echo` through the engine's sandbox.
fn probe_action() -> (proto::Digest, Blobs) {
    let mut blobs = Blobs::default();
    let command = proto::Command {
        arguments: vec!["sh".into(), "-c".into(), "echo cairn remote probe".into()],
        environment_variables: vec![command::EnvironmentVariable {
            name: "CAIRN_PROBE".into(),
            value: "1".into(),
        }],
        ..Default::default()
    };
    let command_digest = blobs.add_message(&command);
    let root = blobs.add_message(&proto::Directory::default());
    let action = proto::Action {
        command_digest: Some(command_digest),
        input_root_digest: Some(root),
        do_not_cache: true,
        timeout: Some(bazel_remote_apis::google::protobuf::Duration {
            seconds: 30,
            nanos: 0,
        }),
        ..Default::default()
    };
    let digest = blobs.add_message(&action);
    (digest, blobs)
}

fn describe(f: &Findings) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "engine     {} (instance \"{}\")",
        f.url, f.instance_name
    );
    let platform = if f.platform.is_empty() {
        "no platform properties".to_owned()
    } else {
        let pairs: Vec<String> = f.platform.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("platform {}", pairs.join(", "))
    };
    let _ = writeln!(
        out,
        "mode       {}; up to {} actions at once; {platform}",
        f.mode, f.jobs
    );
    let _ = writeln!(out, "token      {}", f.token);
    if let Some(api) = &f.api {
        let _ = writeln!(
            out,
            "api        REAPI {api}; {}; batches up to {} KiB; execution {}",
            if f.sha256 == Some(true) {
                "SHA-256"
            } else {
                "no SHA-256 (cairn needs it)"
            },
            f.max_batch_bytes.unwrap_or(0) / 1024,
            if f.execution_enabled == Some(true) {
                "enabled"
            } else {
                "NOT enabled (a cache-only server: use it as [remote_cache] url)"
            }
        );
    }
    if let Some(rtt) = f.round_trip_ms {
        let _ = writeln!(out, "round trip {rtt:.2} ms (an action-cache lookup)");
    }
    if let (Some(took), Some(output)) = (f.execute_ms, &f.execute_output) {
        let _ = writeln!(out, "execute    {took:.1} ms for a probe action ({output})");
    }
    if let Some(error) = &f.error {
        let _ = writeln!(out, "error      {error}");
    }
    out
}
