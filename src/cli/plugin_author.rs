//! `cairn plugins new` and `cairn plugins build`: what a plugin author runs, in cairn's repository or in any
//! directory of their own.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::CliError;
use crate::run::plugins::sha256_hex;

/// The target plugins are compiled for.
const TARGET: &str = "wasm32-unknown-unknown";

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

fn failure(message: String, help: Option<String>) -> CliError {
    CliError::PluginCrate { message, help }
}

fn write(path: &Path, text: &str) -> Result<(), CliError> {
    crate::atomic::write_atomic(path, text.as_bytes()).map_err(|source| CliError::Io {
        what: format!("cannot write `{}`", path.display()),
        source,
    })
}

/// Where the new crate finds the PDK.
enum Pdk {
    /// A path, as written in Cargo.toml.
    Path(String),
    /// A git repository and tag.
    Git { url: String, tag: String },
}

impl Pdk {
    fn dependency(&self) -> String {
        match self {
            Pdk::Path(path) => format!("cairn-pdk = {{ path = {} }}", toml_string(path)),
            Pdk::Git { url, tag } => format!(
                "cairn-pdk = {{ git = {}, tag = {} }}",
                toml_string(url),
                toml_string(tag)
            ),
        }
    }
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Creates a plugin crate: under `plugins/NAME` in a checkout of cairn, else a standalone crate `./NAME` (or
/// `dir`) with its own workspace, README, native tests and a tasks.toml that uses it.
pub(super) fn new_plugin(
    name: &str,
    kind: Kind,
    pdk: Option<&str>,
    dir: Option<&Path>,
) -> Result<i32, CliError> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(failure(
            format!("`{name}` cannot be a plugin name (use lower-case letters, digits and `-`)"),
            None,
        ));
    }
    let cwd = std::env::current_dir().map_err(|source| CliError::Io {
        what: "cannot read the current directory".into(),
        source,
    })?;
    let checkout = cwd
        .ancestors()
        .map(|d| d.join("plugins"))
        .find(|d| d.join("pdk/Cargo.toml").is_file());
    // Inside cairn's own repository (and asked nothing else), the plugin joins the others under plugins/.
    if let (Some(plugins_dir), None, None) = (&checkout, pdk, dir) {
        let crate_dir = plugins_dir.join(name);
        refuse_existing(&crate_dir)?;
        let pdk = Pdk::Path(relative_path(&crate_dir, &plugins_dir.join("pdk")));
        write(&crate_dir.join("Cargo.toml"), &cargo_toml(name, &pdk))?;
        write(&crate_dir.join("src/lib.rs"), &scaffold(name, kind))?;
        write(
            &crate_dir.join(REQUESTS_DIR).join("example.json"),
            recorded_request(kind),
        )?;
        eprintln!(
            "cairn: created {}\n  build:  cairn plugins build {}   (writes {}/dist/{name}.wasm)\n  test:   cd {} && cargo test\n  use:    [plugins.{}] source = \"…/{name}.wasm\", then `cairn plugins lock`",
            crate_dir.display(),
            crate_dir.display(),
            crate_dir.display(),
            crate_dir.display(),
            name.replace('-', "_")
        );
        return Ok(0);
    }
    let crate_dir = dir.map_or_else(|| cwd.join(name), |d| cwd.join(d));
    refuse_existing(&crate_dir)?;
    let pdk = match pdk {
        Some(spec) if spec.starts_with("git+") => {
            let rest = &spec[4..];
            let Some((url, tag)) = rest.split_once('#') else {
                return Err(failure(
                    format!("`--pdk {spec}`: name the release tag, e.g. `git+https://example.org/cairn.git#v0.1.0`"),
                    None,
                ));
            };
            Pdk::Git {
                url: url.to_owned(),
                tag: tag.to_owned(),
            }
        }
        Some(path) => {
            let absolute = cwd.join(path);
            if !absolute.join("Cargo.toml").is_file() {
                return Err(failure(
                    format!("`--pdk {path}` is not the PDK: it has no Cargo.toml (give the `plugins/pdk` directory of a cairn checkout)"),
                    None,
                ));
            }
            let absolute = absolute.canonicalize().unwrap_or(absolute);
            Pdk::Path(absolute.display().to_string())
        }
        None => match &checkout {
            Some(plugins_dir) => Pdk::Path(
                plugins_dir
                    .join("pdk")
                    .canonicalize()
                    .unwrap_or_else(|_| plugins_dir.join("pdk"))
                    .display()
                    .to_string(),
            ),
            None => {
                return Err(failure(
                    "cairn-pdk is not on crates.io yet, so the new crate needs to be told where it is".into(),
                    Some("pass `--pdk PATH` (the `plugins/pdk` directory of a cairn checkout) or `--pdk git+URL#TAG` (a tagged release of cairn's repository)".into()),
                ));
            }
        },
    };
    write(&crate_dir.join("Cargo.toml"), &cargo_toml(name, &pdk))?;
    write(&crate_dir.join("src/lib.rs"), &scaffold(name, kind))?;
    write(&crate_dir.join("README.md"), &readme(name, kind))?;
    write(
        &crate_dir.join(REQUESTS_DIR).join("example.json"),
        recorded_request(kind),
    )?;
    write(&crate_dir.join("tasks.toml"), &tasks_toml(name, kind))?;
    write(&crate_dir.join(".gitignore"), "/target\n/.cairn\n")?;
    if kind == Kind::Task {
        write(&crate_dir.join("examples/hello.txt"), "hello from cairn\n")?;
    }
    eprintln!(
        "cairn: created {dir} (a crate of its own)\n  next:   cd {dir}\n          cargo test                  # the handler, natively\n          cairn plugins build --lock  # dist/{name}.wasm, pinned in plugins.lock\n          cairn plugins test          # the built module, in the sandbox, on tests/requests/\n          cairn run try               # tasks.toml runs it",
        dir = crate_dir.display()
    );
    Ok(0)
}

/// A recorded request `cairn plugins test` sends the built module, with the answer the scaffold gives.
fn recorded_request(kind: Kind) -> &'static str {
    match kind {
        Kind::Task => concat!(
            "{\n  \"request\": { \"task\": \"try\", \"files\": [{ \"path\": \"a.txt\", \"contents\": \"x\" }] },\n",
            "  \"expect\": { \"ok\": { \"status\": 0, \"output\": \"1 file(s) checked\" } }\n}\n"
        ),
        Kind::Secrets => concat!(
            "{\n  \"config\": { \"prefix\": \"value-of-\" },\n  \"request\": { \"ref\": \"db/password\" },\n",
            "  \"expect\": { \"ok\": { \"value\": \"value-of-db/password\" } }\n}\n"
        ),
        Kind::Events => concat!(
            "{\n  \"request\": { \"events\": [{ \"type\": \"task_started\", \"at_ms\": 1, \"task\": \"build\" }] },\n",
            "  \"expect\": { \"ok\": null }\n}\n"
        ),
        Kind::Executor => concat!(
            "{\n  \"request\": { \"task\": \"t\", \"argv\": [\"true\"], \"cwd\": \"/\", \"env\": [] },\n",
            "  \"expect\": { \"ok\": { \"argv\": [\"env\", \"true\"] } }\n}\n"
        ),
    }
}

fn refuse_existing(dir: &Path) -> Result<(), CliError> {
    if dir.exists() {
        return Err(failure(format!("`{}` already exists", dir.display()), None));
    }
    Ok(())
}

fn relative_path(from: &Path, to: &Path) -> String {
    let parent = to.parent().unwrap_or(Path::new("."));
    let up = from
        .strip_prefix(parent)
        .map_or(1, |rest| rest.components().count());
    let mut path = PathBuf::new();
    for _ in 0..up {
        path.push("..");
    }
    path.push(to.file_name().unwrap_or_default());
    path.display().to_string()
}

fn cargo_toml(name: &str, pdk: &Pdk) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
# cdylib: the plugin; rlib: so `cargo test` can test its handlers natively.
crate-type = ["cdylib", "rlib"]

[dependencies]
{dependency}

[profile.release]
panic = "abort"
opt-level = "s"
lto = true
strip = true
codegen-units = 1

# Built on its own for wasm32 (`cairn plugins build`), never as part of another workspace.
[workspace]
"#,
        dependency = pdk.dependency()
    )
}

fn readme(name: &str, kind: Kind) -> String {
    let what = match kind {
        Kind::Task => {
            "a task plugin: cairn hands it a task's input files and shows what it reports"
        }
        Kind::Secrets => {
            "a secrets plugin: tasks ask it for values with `secrets.env = { VAR = \"NAME:ref\" }`"
        }
        Kind::Events => {
            "an event sink: it receives each run's events (tasks started, finished, cached)"
        }
        Kind::Executor => {
            "an executor: it rewrites each command of the tasks that name it before cairn starts it"
        }
    };
    format!(
        r#"# {name}

A [cairn](https://crates.io/crates/cairn) plugin: {what}.

```sh
cargo test                    # the handlers, natively, with cairn_pdk::testing
cairn plugins build --lock    # dist/{name}.wasm for wasm32, its hash pinned in plugins.lock
cairn plugins test            # the built module in cairn's plugin host, on each request in tests/requests/
cairn run try                 # tasks.toml here uses it
```

`cairn plugins build` uses rustup's `wasm32-unknown-unknown` target (`rustup target add
wasm32-unknown-unknown`), or Debian's `rustc-web` toolchain when that is what is installed.

To publish: attach `dist/{name}.wasm` to a release and give users its URL and SHA-256; they declare

```toml
[plugins.{name}]
source = "https://example.org/releases/v0.1.0/{name}.wasm"   # or github:OWNER/REPO@TAG/{name}.wasm
sha256 = "…"                                                 # or `cairn plugins lock`
```
"#
    )
}

fn tasks_toml(name: &str, kind: Kind) -> String {
    let plugin = format!("[plugins.{name}]\nsource = \"dist/{name}.wasm\"\n");
    match kind {
        Kind::Task => format!(
            "{plugin}\n[tasks.try]\ndescription = \"Run {name} on the example files\"\nplugin = \"{name}\"\ninputs = [\"examples/**\"]\n"
        ),
        Kind::Secrets => format!(
            "{plugin}config = {{ prefix = \"value-of-\" }}\n\n[tasks.try]\ndescription = \"Ask {name} for a secret\"\nsecrets.env = {{ ANSWER = \"{name}:db/password\" }}\nrun = \"test -n \\\"$ANSWER\\\" && echo got a secret of ${{#ANSWER}} characters\"\n"
        ),
        Kind::Events => format!(
            "{plugin}events = true\n\n[tasks.try]\ndescription = \"A run whose events {name} receives\"\nrun = \"echo a task {name} hears about\"\n"
        ),
        Kind::Executor => format!(
            "{plugin}trust = \"full\"\n\n[tasks.try]\ndescription = \"A command {name} rewrites\"\nexecutor = \"{name}\"\nrun = \"echo run through {name}\"\n"
        ),
    }
}

pub(super) fn scaffold(name: &str, kind: Kind) -> String {
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
    // The settings a plugin reads are declared, so cairn checks tasks.toml's `config` against them.
    let settings = match kind {
        Kind::Secrets => "\n    describe.config = vec![ConfigField {\n        name: \"prefix\".into(),\n        kind: FieldKind::String,\n        required: false,\n        description: \"put before each value (an example setting)\".into(),\n    }];",
        _ => "",
    };
    format!(
        r##"//! The `{name}` plugin for cairn.

#[allow(unused_imports)]
use cairn_pdk::api::*;
#[allow(unused_imports)]
use cairn_pdk::{{config, log, plugin}};

fn describe() -> Describe {{
    let mut describe = cairn_pdk::describe("{name}", env!("CARGO_PKG_VERSION"), &[Capability::{capability}]);
    describe.description = "what {name} does".into();{settings}
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

/// How to compile for wasm32 on this machine.
struct Toolchain {
    cargo: PathBuf,
    env: Vec<(&'static str, String)>,
    build_std: bool,
    describe: String,
}

/// rustup's wasm32 target when it is installed; else Debian's `rustc-web` with `-Zbuild-std` when all of it is
/// there; else an explanation of what to install.
fn toolchain() -> Result<Toolchain, CliError> {
    let rustup_target = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET)
        });
    if rustup_target {
        return Ok(Toolchain {
            cargo: "cargo".into(),
            env: Vec::new(),
            build_std: false,
            describe: format!("rustup's {TARGET} target"),
        });
    }
    let debian = [
        Path::new("/usr/bin/rustc"),
        Path::new("/usr/bin/cargo"),
        Path::new("/usr/lib/rustlib/src/rust/library"),
    ]
    .iter()
    .all(|p| p.exists())
        && (Path::new("/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld").exists()
            || Command::new("rust-lld").arg("--version").output().is_ok());
    if debian {
        let version = Command::new("/usr/bin/rustc")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        return Ok(Toolchain {
            cargo: "/usr/bin/cargo".into(),
            // rustup's shims would shadow Debian's compiler; RUSTC_BOOTSTRAP lets this stable compiler build
            // its own standard library, for these builds only.
            env: vec![
                ("RUSTC", "/usr/bin/rustc".into()),
                ("RUSTDOC", "/usr/bin/rustdoc".into()),
                ("RUSTC_BOOTSTRAP", "1".into()),
            ],
            build_std: true,
            describe: format!("Debian's {version} with -Zbuild-std"),
        });
    }
    Err(CliError::PluginCrate {
        message: format!("no Rust toolchain for {TARGET} is installed"),
        help: Some(format!(
            "with rustup: `rustup target add {TARGET}`; on Debian or Ubuntu without it: `sudo apt-get install rustc-web cargo-web rust-web-src rust-web-llvm lld-22` (cairn then builds the standard library with -Zbuild-std)"
        )),
    })
}

/// The crate's package and library names, and whether it is a cdylib.
fn crate_names(manifest: &Path) -> Result<(String, String), CliError> {
    let text = std::fs::read_to_string(manifest).map_err(|source| CliError::Io {
        what: format!("cannot read `{}`", manifest.display()),
        source,
    })?;
    let value: toml::Table = toml::from_str(&text).map_err(|e| CliError::PluginCrate {
        message: format!(
            "`{}` is not valid TOML: {}",
            manifest.display(),
            e.message()
        ),
        help: None,
    })?;
    let package = value
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        .ok_or_else(|| CliError::PluginCrate {
            message: format!("`{}` has no [package] name", manifest.display()),
            help: None,
        })?
        .to_owned();
    let lib = value.get("lib");
    let cdylib = lib
        .and_then(|l| l.get("crate-type"))
        .and_then(toml::Value::as_array)
        .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("cdylib")));
    if !cdylib {
        return Err(CliError::PluginCrate {
            message: format!("`{}` does not build a plugin: its [lib] has no `crate-type = [\"cdylib\"]`", manifest.display()),
            help: Some("a plugin crate has `[lib] crate-type = [\"cdylib\", \"rlib\"]` (see `cairn plugins new`)".into()),
        });
    }
    let library = lib
        .and_then(|l| l.get("name"))
        .and_then(toml::Value::as_str)
        .map_or_else(|| package.replace('-', "_"), str::to_owned);
    Ok((package, library))
}

/// Whether the manifest names a git dependency.
fn git_dependencies(manifest: &Path) -> bool {
    std::fs::read_to_string(manifest)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| t.get("dependencies").and_then(|d| d.as_table()).cloned())
        .is_some_and(|deps| deps.values().any(|d| d.get("git").is_some()))
}

/// Builds the plugin crate at `path` for wasm32 and writes `dist/NAME.wasm` beside its Cargo.toml (or where
/// `CAIRN_PLUGIN_DIST` says); returns the module's path.
pub(super) fn build(path: &Path) -> Result<PathBuf, CliError> {
    let manifest = if path.is_dir() {
        path.join("Cargo.toml")
    } else {
        path.to_owned()
    };
    if !manifest.is_file() {
        return Err(CliError::PluginCrate {
            message: format!("`{}` has no Cargo.toml", path.display()),
            help: Some("run it in a plugin crate (`cairn plugins new NAME --kind …` makes one), or name its directory".into()),
        });
    }
    let crate_dir = manifest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let (package, library) = crate_names(&manifest)?;
    let toolchain = toolchain()?;
    let target_dir = std::env::var_os("CAIRN_PLUGIN_TARGET_DIR")
        .map_or_else(|| crate_dir.join("target"), PathBuf::from);
    eprintln!(
        "cairn: building {package} for {TARGET} with {}",
        toolchain.describe
    );
    let mut command = Command::new(&toolchain.cargo);
    command
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target_dir)
        .envs(toolchain.env.iter().map(|(k, v)| (k, v)));
    if crate_dir.join("Cargo.lock").is_file() {
        command.arg("--locked");
    }
    if toolchain.build_std {
        command.arg("-Zbuild-std=std,panic_abort");
    }
    if toolchain.build_std && git_dependencies(&manifest) {
        // Debian's cargo cannot fetch git dependencies (the PDK from a tagged release): its libgit2 fails
        // with "invalid version 0 on git_proxy_options". Another cargo on PATH (rustup's) fetches them into
        // the shared CARGO_HOME, after which Debian's builds offline from what is there.
        let fetched = Command::new("cargo")
            .args(["fetch", "--manifest-path"])
            .arg(&manifest)
            .status()
            .is_ok_and(|s| s.success());
        if !fetched {
            eprintln!("cairn: warning: could not fetch the git dependencies with `cargo fetch`; Debian's cargo will try");
        }
    }
    let status = command.status().map_err(|source| CliError::Io {
        what: format!("cannot start `{}`", toolchain.cargo.display()),
        source,
    })?;
    if !status.success() {
        return Err(CliError::PluginCrate {
            message: format!("cargo could not build `{package}` (its errors are above)"),
            help: None,
        });
    }
    let artifact = target_dir.join(format!("{TARGET}/release/{library}.wasm"));
    let bytes = std::fs::read(&artifact).map_err(|source| CliError::Io {
        what: format!("cargo built no `{}`", artifact.display()),
        source,
    })?;
    let dist =
        std::env::var_os("CAIRN_PLUGIN_DIST").map_or_else(|| crate_dir.join("dist"), PathBuf::from);
    let module = dist.join(format!("{package}.wasm"));
    write_bytes(&module, &bytes)?;
    println!(
        "{}  {} bytes  sha256 {}",
        module.display(),
        bytes.len(),
        sha256_hex(&bytes)
    );
    Ok(module)
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    crate::atomic::write_atomic(path, bytes).map_err(|source| CliError::Io {
        what: format!("cannot write `{}`", path.display()),
        source,
    })
}

/// Where a plugin crate keeps the recorded requests `cairn plugins test` sends its built module.
pub(super) const REQUESTS_DIR: &str = "tests/requests";

/// Prints the plugin's log lines as they come.
struct PrintedLogs;

impl cairn_plugin_client::Sink for PrintedLogs {
    fn redact(&self, text: &str) -> String {
        text.to_owned()
    }
    fn log(&self, plugin: &str, level: cairn_plugin_api::LogLevel, message: &str) {
        eprintln!("      {plugin} {level:?}: {message}");
    }
}

/// The `name` of a plugin's package.json.
fn package_json_name(path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path).map_err(|_| CliError::PluginCrate {
        message: format!(
            "`{}` has no Cargo.toml or package.json",
            path.parent().unwrap_or(Path::new(".")).display()
        ),
        help: Some("run it in a plugin's directory, or name it: `cairn plugins test PATH`".into()),
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| CliError::PluginCrate {
            message: format!("`{}` is not JSON: {e}", path.display()),
            help: None,
        })?;
    value
        .get("name")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| CliError::PluginCrate {
            message: format!("`{}` has no `name`", path.display()),
            help: None,
        })
}

/// Whether `expected` is found in `actual`: every key of an expected object with a matching value, arrays of
/// the same length matching item by item, other values equal. Returns where they first differ.
fn contains(
    expected: &serde_json::Value,
    actual: &serde_json::Value,
    at: &str,
) -> Result<(), String> {
    use serde_json::Value;
    match (expected, actual) {
        (Value::Object(want), Value::Object(have)) => {
            for (key, value) in want {
                let here = format!("{at}/{key}");
                match have.get(key) {
                    Some(found) => contains(value, found, &here)?,
                    None => return Err(format!("{here}: expected {value}, found nothing")),
                }
            }
            Ok(())
        }
        (Value::Array(want), Value::Array(have)) if want.len() == have.len() => want
            .iter()
            .zip(have)
            .enumerate()
            .try_for_each(|(i, (w, h))| contains(w, h, &format!("{at}/{i}"))),
        _ if expected == actual => Ok(()),
        _ => Err(format!(
            "{}: expected {expected}, got {actual}",
            if at.is_empty() { "/" } else { at }
        )),
    }
}

/// Runs the built module of the crate at `path` (`dist/NAME.wasm`) in the real plugin host — the sandbox,
/// limits and grants of a run — on each recorded request under `tests/requests/`, and compares its replies.
pub(super) fn test(path: &Path) -> Result<i32, CliError> {
    let crate_dir = if path.is_dir() {
        path.to_owned()
    } else {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    };
    // A Rust crate, or a plugin of another language with a package.json (AssemblyScript, say).
    let package = if crate_dir.join("Cargo.toml").is_file() {
        crate_names(&crate_dir.join("Cargo.toml"))?.0
    } else {
        package_json_name(&crate_dir.join("package.json"))?
    };
    let dist =
        std::env::var_os("CAIRN_PLUGIN_DIST").map_or_else(|| crate_dir.join("dist"), PathBuf::from);
    let module = dist.join(format!("{package}.wasm"));
    let wasm = std::fs::read(&module).map_err(|_| CliError::PluginCrate {
        message: format!("`{}` is not built", module.display()),
        help: Some("build it first: `cairn plugins build`".into()),
    })?;
    let mut cases: Vec<PathBuf> = std::fs::read_dir(crate_dir.join(REQUESTS_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    cases.sort();
    if cases.is_empty() {
        return Err(CliError::PluginCrate {
            message: format!("no recorded requests in `{}`", crate_dir.join(REQUESTS_DIR).display()),
            help: Some("add JSON files such as `{ \"request\": {…}, \"expect\": { \"ok\": {…} } }` (docs/plugins.md, \"Testing the built module\")".into()),
        });
    }
    let mut failed = 0;
    for case_path in &cases {
        let shown = case_path
            .strip_prefix(&crate_dir)
            .unwrap_or(case_path)
            .display()
            .to_string();
        match run_case(&package, &wasm, case_path) {
            Ok(()) => println!("ok    {shown}"),
            Err(why) => {
                failed += 1;
                println!("FAIL  {shown}: {why}");
            }
        }
    }
    println!(
        "{} of {} recorded request{} answered as expected by {} ({} bytes, run in the plugin host)",
        cases.len() - failed,
        cases.len(),
        if cases.len() == 1 { "" } else { "s" },
        module.display(),
        wasm.len()
    );
    Ok(i32::from(failed > 0))
}

/// One recorded request: `request`, `expect` (`{"ok": …}`, `{"error": {"code": …}}` or `{"fails": "text"}`
/// for a trap, timeout or refused grant), and optionally `call` (the export; by default the one of the
/// plugin's capability), `config`, `env`, `hosts`, `clock` and `limits` (`timeout_ms`, `memory`, `fuel`).
fn run_case(package: &str, wasm: &[u8], case_path: &Path) -> Result<(), String> {
    use serde_json::Value;
    let text = std::fs::read_to_string(case_path).map_err(|e| format!("cannot read it: {e}"))?;
    let case: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let strings = |key: &str| -> Vec<(String, String)> {
        case.get(key)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                )
            })
            .collect()
    };
    let mut grants = cairn_plugin_client::Grants {
        clock: case.get("clock").and_then(Value::as_bool).unwrap_or(false),
        env: strings("env"),
        ..cairn_plugin_client::Grants::default()
    };
    for host in case
        .get("hosts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let parsed = host
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(|e| format!("`hosts`: {e}"))?;
        grants.hosts.push(parsed);
    }
    let defaults = cairn_plugin_client::Limits::default();
    let limits = case.get("limits");
    let limits = cairn_plugin_client::Limits {
        timeout: limits
            .and_then(|l| l.get("timeout_ms"))
            .and_then(Value::as_u64)
            .map_or(defaults.timeout, std::time::Duration::from_millis),
        memory: limits
            .and_then(|l| l.get("memory"))
            .and_then(Value::as_u64)
            .unwrap_or(defaults.memory),
        fuel: limits.and_then(|l| l.get("fuel")).and_then(Value::as_u64),
    };
    let spec = cairn_plugin_client::Spec {
        name: package.to_owned(),
        wasm: wasm.to_vec(),
        config: strings("config").into_iter().collect(),
        grants,
        limits,
        cache_dir: None,
    };
    let sink: std::sync::Arc<dyn cairn_plugin_client::Sink> = std::sync::Arc::new(PrintedLogs);
    let loaded = cairn_plugin_client::Plugin::load(spec, std::sync::Arc::clone(&sink));
    let expected = case.get("expect").cloned().unwrap_or(Value::Null);
    let plugin = match loaded {
        Ok(plugin) => plugin,
        Err(error) => return fails_as_expected(&expected, &error.to_string()),
    };
    let export = match case.get("call").and_then(Value::as_str) {
        Some(export) => export.to_owned(),
        None => match plugin.describe.capabilities.as_slice() {
            [one] => one.export().to_owned(),
            _ => {
                return Err(
                    "the plugin has several capabilities: say which export with `call`".into(),
                )
            }
        },
    };
    let request = case.get("request").cloned().unwrap_or(Value::Null);
    let actual = match plugin.call::<Value, Value>(&export, &request, sink.as_ref()) {
        Ok(value) => serde_json::json!({ "ok": value }),
        Err(cairn_plugin_client::HostError::Plugin { error, .. }) => {
            serde_json::json!({ "error": serde_json::to_value(&error).unwrap_or(Value::Null) })
        }
        Err(other) => return fails_as_expected(&expected, &other.to_string()),
    };
    if expected.get("fails").is_some() {
        return Err(format!("expected a failure, got {actual}"));
    }
    contains(&expected, &actual, "")
}

fn fails_as_expected(expected: &serde_json::Value, message: &str) -> Result<(), String> {
    match expected.get("fails").and_then(serde_json::Value::as_str) {
        Some(text) if message.contains(text) => Ok(()),
        Some(text) => Err(format!(
            "expected a failure saying {text:?}, got: {message}"
        )),
        None => Err(message.to_owned()),
    }
}
