//! Plugins through the real binary: the example plugins built by plugins/build.sh (one per capability),
//! and hostile modules written in WAT that try to escape their limits.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::{in_terminal, Test};

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dist")
}

/// A built example plugin's bytes; in CI (which runs plugins/build.sh first) a missing one is a failure.
fn example(name: &str) -> Option<Vec<u8>> {
    match std::fs::read(dist().join(format!("{name}.wasm"))) {
        Ok(bytes) => Some(bytes),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "plugins/dist/{name}.wasm is missing: .ci/run builds it with plugins/build.sh"
            );
            eprintln!("skipped: plugins/dist/{name}.wasm is not built (run plugins/build.sh)");
            None
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A project holding `modules` (name → bytes) and a tasks.toml that pins each by hash.
fn project(modules: &[(&str, &[u8])], tasks: &str) -> Test {
    let test = Test::new();
    let mut toml = String::new();
    for (name, bytes) in modules {
        std::fs::write(test.path(&format!("{name}.wasm")), bytes).unwrap();
        toml.push_str(&format!(
            "[plugins.{name}]\nsource = \"{name}.wasm\"\nsha256 = \"{}\"\n",
            sha256(bytes)
        ));
    }
    test.tasks(&format!("{tasks}\n{toml}"))
}

/// A WAT module speaking the protocol: `describe` answers for `capability`, and `body` is the export.
fn hostile(export: &str, capability: &str, imports: &str, body: &str) -> Vec<u8> {
    let describe = format!(
        r#"{{"ok":{{"name":"hostile","version":"0","protocol":1,"capabilities":["{capability}"]}}}}"#
    );
    let escaped = describe.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        r#"(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  {imports}
  (memory (export "memory") 1)
  (data (i32.const 0) "{escaped}")
  (func $emit (param $ptr i32) (param $len i32)
    (local $off i64) (local $i i32)
    (local.set $off (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (call $store_u8 (i64.add (local.get $off) (i64.extend_i32_u (local.get $i)))
        (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (call $output_set (local.get $off) (i64.extend_i32_u (local.get $len))))
  (func (export "describe") (result i32) (call $emit (i32.const 0) (i32.const {len})) (i32.const 0))
  (func (export "{export}") (result i32) {body})
)"#,
        len = describe.len()
    )
    .into_bytes()
}

const OTHER_TASK: &str = "[tasks.other]\nrun = \"echo other ran\"\n";

#[test]
fn an_infinite_loop_is_stopped_by_the_timeout_and_the_run_goes_on() {
    let module = hostile(
        "run_task",
        "task",
        "",
        "(loop $forever (br $forever)) (i32.const 0)",
    );
    let test = project(
        &[("spin", &module)],
        &format!("[tasks.spin]\nplugin = \"spin\"\n{OTHER_TASK}"),
    );
    test.edit(
        "tasks.toml",
        "[plugins.spin]\n",
        "[plugins.spin]\nlimits = { timeout = \"1s\" }\n",
    );
    test.run_with(&["run", "spin", "other", "-k"])
        .status(1)
        .stderr_has("plugin `spin` was stopped after 1s in `run_task` (its timeout)")
        .stdout_has("other ran");
}

#[test]
fn a_memory_bomb_is_stopped_by_the_cap() {
    let module = hostile(
        "run_task",
        "task",
        "",
        "(block $full (loop $more (br_if $full (i32.eq (memory.grow (i32.const 16)) (i32.const -1))) (br $more))) unreachable",
    );
    let test = project(
        &[("bomb", &module)],
        &format!("[tasks.bomb]\nplugin = \"bomb\"\n{OTHER_TASK}"),
    );
    test.edit(
        "tasks.toml",
        "[plugins.bomb]\n",
        "[plugins.bomb]\nlimits = { memory = \"8MiB\" }\n",
    );
    test.run_with(&["run", "bomb", "other", "-k"])
        .status(1)
        .stderr_has("plugin `bomb` crashed in `run_task`")
        .stderr_has("its cap is 8 MiB")
        .stdout_has("other ran");
}

#[test]
fn fuel_bounds_the_instructions_of_a_call() {
    let module = hostile(
        "run_task",
        "task",
        "",
        "(loop $forever (br $forever)) (i32.const 0)",
    );
    let test = project(&[("spin", &module)], "[tasks.spin]\nplugin = \"spin\"\n");
    test.edit(
        "tasks.toml",
        "[plugins.spin]\n",
        "[plugins.spin]\nlimits = { fuel = 1000000 }\n",
    );
    test.run_with(&["run", "spin"])
        .status(1)
        .stderr_has("plugin `spin` ran out of fuel in `run_task` (limits.fuel = 1000000)");
}

#[test]
fn a_trap_fails_only_its_task() {
    let module = hostile("run_task", "task", "", "unreachable");
    let test = project(
        &[("crash", &module)],
        &format!("[tasks.crash]\nplugin = \"crash\"\n{OTHER_TASK}"),
    );
    test.run_with(&["run", "crash", "other", "-k"])
        .status(1)
        .stderr_has("plugin `crash` crashed in `run_task`")
        .stdout_has("other ran");
}

#[test]
fn importing_an_ungranted_host_function_fails_at_load() {
    let http = "(import \"extism:host/user\" \"cairn_http\" (func $http (param i64) (result i64)))";
    let module = hostile("run_task", "task", http, "(i32.const 0)");
    let test = project(&[("net", &module)], "[tasks.net]\nplugin = \"net\"\n");
    test.run_with(&["run", "net"])
        .status(1)
        .stderr_has(
            "plugin `net` imports `extism:host/user::cairn_http`, which cairn does not give it",
        )
        .stderr_has("allow.hosts");
    let wasi = "(import \"wasi_snapshot_preview1\" \"fd_write\" (func $w (param i32 i32 i32 i32) (result i32)))";
    let module = hostile("run_task", "task", wasi, "(i32.const 0)");
    let test = project(&[("files", &module)], "[tasks.files]\nplugin = \"files\"\n");
    test.run_with(&["run", "files"])
        .status(1)
        .stderr_has("imports `wasi_snapshot_preview1::fd_write`")
        .stderr_has("WASI");
}

#[test]
fn a_plugin_no_selected_task_uses_is_never_loaded() {
    let test = project(
        &[("broken", b"not wasm at all")],
        &format!("[tasks.broken]\nplugin = \"broken\"\n{OTHER_TASK}"),
    );
    test.run_with(&["run", "other"])
        .success()
        .stdout_has("other ran");
    test.run_with(&["run", "broken"])
        .status(1)
        .stderr_has("plugin `broken` cannot be loaded");
}

#[test]
fn unpinned_and_changed_modules_are_refused() {
    let Some(lint) = example("line-lint") else {
        return;
    };
    let test = Test::new().tasks("[plugins.lint]\nsource = \"lint.wasm\"\n\n[tasks.lint]\nplugin = \"lint\"\ninputs = [\"*.txt\"]\n");
    std::fs::write(test.path("lint.wasm"), &lint).unwrap();
    test.write("a.txt", "fine\n");
    test.run_with(&["run", "lint"])
        .status(1)
        .stderr_has("is not pinned")
        .stderr_has("cairn plugins lock");
    test.run_with(&["plugins", "lock"]).success();
    assert!(test.read("plugins.lock").contains(&sha256(&lint)));
    test.run_with(&["run", "lint"])
        .success()
        .stdout_has("checked 1 file(s): 0 error(s)");
    let mut changed = lint.clone();
    changed.push(0);
    std::fs::write(test.path("lint.wasm"), &changed).unwrap();
    test.run_with(&["run", "lint", "--force"])
        .status(1)
        .stderr_has("refusing to load it");
    test.run_with(&["plugins", "check"])
        .status(1)
        .stderr_has("refusing to load it");
}

#[test]
fn a_task_plugin_checks_its_inputs_and_reports_positions() {
    let Some(lint) = example("line-lint") else {
        return;
    };
    let test = project(
        &[("lint", &lint)],
        "[tasks.lint]\nplugin = \"lint\"\ninputs = [\"hosts/*.nix\"]\nincremental = true\n",
    );
    test.edit(
        "tasks.toml",
        "[plugins.lint]\n",
        "[plugins.lint]\nconfig = { max_line_length = 20 }\n",
    );
    test.write("hosts/a.nix", "{ }\n");
    test.write("hosts/b.nix", "{ x = 1; }   \n");
    test.run_with(&["run", "lint"])
        .status(1)
        .stdout_has("checked 2 file(s): 1 error(s)")
        .stderr_has("hosts/b.nix:1:11: error: trailing whitespace");
    test.write("hosts/b.nix", "{ x = 1; }\n");
    // No success yet: every input is checked.
    test.run_with(&["run", "lint"])
        .success()
        .stdout_has("checked 2 file(s): 0 error(s)");
    // Incremental: after a success, only the changed file is handed to the plugin.
    test.write("hosts/a.nix", "{ y = 2; }\n");
    test.run_with(&["run", "lint", "--trace", "trace.json"])
        .success()
        .stdout_has("checked 1 file(s): 0 error(s)");
    // The plugin call is a phase of the task, in its run record and nested in the trace.
    let trace: serde_json::Value =
        serde_json::from_str(&test.read("trace.json")).expect("the trace is JSON");
    let phases: Vec<&str> = trace["traceEvents"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["cat"] == "phase")
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        phases,
        ["cache lookup", "plugin lint", "run", "cache store"]
    );
    test.run_with(&["plugins", "list"])
        .success()
        .stdout_has("lint  line-lint 0.1.0  protocol 1  [task]  grants: nothing");
}

#[test]
fn plugin_config_is_checked_against_its_schema_with_positions() {
    let Some(lint) = example("line-lint") else {
        return;
    };
    let test = project(
        &[("lint", &lint)],
        "[tasks.lint]\nplugin = \"lint\"\ninputs = [\"*.txt\"]\n",
    );
    test.write("a.txt", "x\n");
    test.edit(
        "tasks.toml",
        "[plugins.lint]\n",
        "[plugins.lint]\nconfig = { max_line_lenght = 20 }\n",
    );
    test.run_with(&["plugins", "check"])
        .status(1)
        .stderr_has("plugin `lint` has no setting `max_line_lenght`")
        .stderr_has("tasks.toml:6:12")
        .stderr_has("did you mean `max_line_length`");
    test.edit(
        "tasks.toml",
        "max_line_lenght = 20",
        "max_line_length = \"long\"",
    );
    test.run_with(&["plugins", "check"])
        .status(1)
        .stderr_has("`config.max_line_length` of plugin `lint` must be an integer");
}

#[test]
fn an_executor_plugin_rewrites_the_command_cairn_starts() {
    let Some(module) = example("prefix-exec") else {
        return;
    };
    let test = project(
        &[("wrap", &module)],
        "[tasks.show]\nexecutor = \"wrap\"\nrun = \"echo foo=$FOO by=$CAIRN_EXECUTOR\"\n",
    );
    test.edit(
        "tasks.toml",
        "[plugins.wrap]\n",
        "[plugins.wrap]\nconfig = { prefix = \"env FOO=prefixed\" }\n",
    );
    // An executor picks the program cairn runs with the task's environment: without full trust, no run.
    test.run_with(&["run", "show"])
        .status(2)
        .stderr_has("tasks.toml:2:12")
        .stderr_has("plugin `wrap` would choose the program this task runs")
        .stderr_has("add `trust = \"full\"` to `[plugins.wrap]`")
        .stdout_lacks("foo=");
    test.edit(
        "tasks.toml",
        "[plugins.wrap]\n",
        "[plugins.wrap]\ntrust = \"full\"\n",
    );
    test.run_with(&["run", "show"])
        .success()
        .stdout_has("foo=prefixed by=prefix-exec");
}

#[test]
fn an_event_sink_receives_task_and_run_events() {
    let Some(module) = example("event-log") else {
        return;
    };
    let test = project(
        &[("log", &module)],
        &format!("{OTHER_TASK}[tasks.fail]\nrun = \"exit 3\"\n"),
    );
    test.edit(
        "tasks.toml",
        "[plugins.log]\n",
        "[plugins.log]\nevents = true\n",
    );
    test.run_with(&["run", "other", "fail", "-k"])
        .status(3)
        .stderr_has("plugin `log` info: other: succeeded in")
        .stderr_has("plugin `log` info: fail: failed in")
        .stderr_has("plugin `log` info: run: 1 succeeded, 1 failed, 0 not run, exit 3");
    // A sink that cannot load warns and the run is unaffected.
    std::fs::write(test.path("log.wasm"), b"broken").unwrap();
    test.run_with(&["run", "other"])
        .status(0)
        .stderr_has("event sink `log` is not used");
}

#[test]
fn a_secrets_plugin_provides_values_that_are_redacted() {
    let Some(module) = example("env-secrets") else {
        return;
    };
    let test = project(&[("hostenv", &module)], "[tasks.token]\nsecrets.env = { TOKEN = \"hostenv:CI_TOKEN\" }\nrun = \"echo token=$TOKEN\"\n");
    test.edit(
        "tasks.toml",
        "[plugins.hostenv]\n",
        "[plugins.hostenv]\nallow.env = [\"CI_TOKEN\"]\n",
    );
    let test = test.env("CI_TOKEN", "ci-token-value-123");
    let run = test.run_with(&["run", "token"]).success();
    assert!(
        run.stdout.contains("token=[secret:TOKEN]") && !run.stdout.contains("ci-token-value-123"),
        "{}",
        run.stdout
    );
    let test = test.env("CI_TOKEN", "");
    test.run_with(&["run", "token"])
        .status(1)
        .stderr_has("needs `hostenv:CI_TOKEN`");
}

/// A one-shot HTTP server on loopback answering every request with `response`; counts requests.
fn serve(response: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut stream = stream;
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (port, hits)
}

#[test]
fn http_reaches_only_granted_host_and_port_and_never_follows_redirects() {
    let Some(module) = example("http-get") else {
        return;
    };
    let (ok_port, _) =
        serve("HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nhealthy");
    let (other_port, other_hits) =
        serve("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let redirect: &'static str = Box::leak(
        format!("HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{other_port}/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").into_boxed_str(),
    );
    let (redirect_port, _) = serve(redirect);
    let setup = |url_port: u16, granted: &[u16]| {
        let hosts: Vec<String> = granted
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        let test = project(&[("probe", &module)], "[tasks.check]\nplugin = \"probe\"\n");
        test.edit("tasks.toml", "[plugins.probe]\n", &format!("[plugins.probe]\nconfig = {{ url = \"http://127.0.0.1:{url_port}/health?token=abc\" }}\nallow.hosts = [{}]\n", hosts.join(", ")));
        test
    };
    setup(ok_port, &[ok_port])
        .run_with(&["run", "check"])
        .success()
        .stdout_has(&format!(
            "GET http://127.0.0.1:{ok_port}/health?token=abc: 200"
        ))
        .stdout_has("healthy");
    // Same host, another port: refused by cairn before any connection.
    setup(other_port, &[ok_port])
        .run_with(&["run", "check"])
        .status(1)
        .stderr_has(&format!(
            "127.0.0.1:{other_port} is not in allow.hosts (127.0.0.1:{ok_port})"
        ));
    assert_eq!(other_hits.load(Ordering::SeqCst), 0);
    // A redirect to an ungranted port comes back to the plugin; cairn does not follow it.
    setup(redirect_port, &[redirect_port])
        .run_with(&["run", "check"])
        .status(1)
        .stdout_has("302 (redirect to");
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "the redirect was not followed"
    );
}

#[test]
fn plugins_new_scaffolds_a_crate_that_builds_and_passes_its_own_test() {
    let wasm_toolchain = Path::new("/usr/bin/rustc").exists()
        || Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-unknown-unknown"));
    if !wasm_toolchain {
        assert!(
            std::env::var_os("CI").is_none(),
            "no wasm32 toolchain: .ci/run installs one through plugins/build.sh"
        );
        eprintln!("skipped: no wasm32 toolchain (plugins/build.sh installs Debian's)");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let test = Test::new();
    for dir in ["plugins/api/src", "plugins/pdk/src"] {
        std::fs::create_dir_all(test.path(dir)).unwrap();
    }
    for file in [
        "plugins/api/Cargo.toml",
        "plugins/api/src/lib.rs",
        "plugins/pdk/Cargo.toml",
        "plugins/pdk/src/lib.rs",
        "plugins/build.sh",
    ] {
        std::fs::copy(repo.join(file), test.path(file)).unwrap();
    }
    test.run_with(&["plugins", "new", "demo-check", "--kind", "task"])
        .success()
        .stderr_has("cairn plugins build");
    let crate_dir = test.path("plugins/demo-check");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let native = Command::new(&cargo)
        .args(["test", "-q"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", test.path("native-target"))
        .output()
        .unwrap();
    assert!(
        native.status.success(),
        "{}",
        String::from_utf8_lossy(&native.stderr)
    );
    let home = std::env::var("HOME").unwrap_or_default();
    let build = Command::new(test.path("plugins/build.sh"))
        .arg("demo-check")
        .env(
            "CAIRN_PLUGIN_TARGET_DIR",
            format!("{home}/.cache/cairn/plugins-target"),
        )
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let module = std::fs::read(test.path("plugins/dist/demo-check.wasm")).expect("built module");
    // And cairn runs it.
    test.write("a.txt", "x\n");
    test.write(
        "tasks.toml",
        &format!("[plugins.demo]\nsource = \"plugins/dist/demo-check.wasm\"\nsha256 = \"{}\"\n\n[tasks.check]\nplugin = \"demo\"\ninputs = [\"a.txt\"]\n", sha256(&module)),
    );
    test.run_with(&["run", "check"])
        .success()
        .stdout_has("1 file(s) checked");
}

#[test]
fn mistakes_in_plugin_declarations_are_reported_with_positions() {
    Test::new()
        .tasks("[plugins.lint]\nsource = \"lint.wasm\"\nallow.hosts = [\"127.0.0.1\", \"https://x:443\"]\nsha256 = \"abc\"\nlimit = {}\n\n[tasks.a]\nplugin = \"lnit\"\n")
        .args(&["check"])
        .run()
        .status(1)
        .stderr_has("`127.0.0.1` has no port")
        .stderr_has("tasks.toml:3:16")
        .stderr_has("`https://x:443` is a URL")
        .stderr_has("expected 64 hexadecimal digits")
        .stderr_has("unknown key `limit`")
        .stderr_has("no plugin named `lnit`")
        .stderr_has("did you mean `lint`");
    Test::new()
        .tasks("[plugins.x]\nsource = \"x.wasm\"\n\n[tasks.a]\nplugin = \"x\"\nrun = \"true\"\n")
        .args(&["check"])
        .run()
        .status(1)
        .stderr_has("either by `run` or by a `plugin`");
}

#[test]
fn a_plugin_built_by_a_task_loads_only_while_it_is_that_tasks_output() {
    let (Some(lint), Some(other)) = (example("line-lint"), example("event-log")) else {
        return;
    };
    let test = Test::new();
    std::fs::write(test.path("line-lint.wasm"), &lint).unwrap();
    let test = test.tasks(
        "[plugins.lint]\nsource = \"dist/lint.wasm\"\nbuilt_by = \"build-plugin\"\n\n\
         [tasks.build-plugin]\nrun = \"mkdir -p dist && cp line-lint.wasm dist/lint.wasm\"\ninputs = [\"line-lint.wasm\"]\noutputs = [\"dist/lint.wasm\"]\n\n\
         [tasks.lint]\nplugin = \"lint\"\ninputs = [\"*.nix\"]\ndeps = [\"build-plugin\"]\n\n\
         [tasks.lint-alone]\nplugin = \"lint\"\ninputs = [\"*.nix\"]\n",
    );
    test.write("a.nix", "{ }\n");
    // Put there by hand: no build vouches for it.
    std::fs::create_dir_all(test.path("dist")).unwrap();
    std::fs::write(test.path("dist/lint.wasm"), &lint).unwrap();
    test.run_with(&["run", "lint-alone"])
        .status(1)
        .stderr_has("task `build-plugin` (its `built_by`) has no successful run recorded");
    test.run_with(&["run", "lint"])
        .success()
        .stdout_has("checked 1 file(s): 0 error(s)");
    test.run_with(&["plugins", "check"])
        .success()
        .stdout_has("built by task `build-plugin`");
    // Swapped after the build: refused, even though the task that built it is cached.
    std::fs::write(test.path("dist/lint.wasm"), &other).unwrap();
    test.run_with(&["run", "lint-alone"])
        .status(1)
        .stderr_has("is not the file task `build-plugin` built");
    // Rebuilt by its task: trusted again without a new pin.
    test.run_with(&["run", "lint", "--force"]).success();
}

#[test]
fn plugin_log_lines_go_above_the_status_line_on_a_terminal() {
    let Some(module) = example("event-log") else {
        return;
    };
    let test = project(
        &[("log", &module)],
        // b runs long enough for the events of a to be delivered (and logged) while the status line shows.
        "[tasks.a]\nrun = \"sleep 0.1\"\n[tasks.b]\nrun = \"sleep 1\"\n",
    );
    test.edit(
        "tasks.toml",
        "[plugins.log]\n",
        "[plugins.log]\nevents = true\n",
    );
    let Some(shown) = in_terminal(&test, "run a b --color never") else {
        return;
    };
    // Each plugin line starts on a cleared line, never after the status line's text.
    let lines: Vec<&str> = shown
        .split('\n')
        .filter(|l| l.contains("plugin `log` info:"))
        .collect();
    assert!(lines.len() >= 3, "{shown:?}");
    for line in lines {
        let before = &line[..line.find("cairn: plugin").expect("the line")];
        assert!(
            before.is_empty() || before.ends_with("\x1b[2K"),
            "a plugin line was appended to the status line: {line:?}"
        );
    }
}

#[test]
fn a_task_plugins_output_never_shows_what_it_was_granted() {
    let Some(lint) = example("line-lint") else {
        return;
    };
    const GRANTED: &str = "tok-granted-0123456789";
    let test = project(
        &[("lint", &lint)],
        "[tasks.lint]\nplugin = \"lint\"\ninputs = [\"hosts/*.nix\"]\n",
    );
    test.edit(
        "tasks.toml",
        "[plugins.lint]\n",
        "[plugins.lint]\nallow.env = [\"LINT_TOKEN\"]\n",
    );
    // The plugin reports a file whose name holds the granted value (a plugin could put it anywhere).
    test.write(&format!("hosts/{GRANTED}.nix"), "{ x = 1; }   \n");
    let test = test.env("LINT_TOKEN", GRANTED);
    let run = test
        .run_with(&["run", "lint"])
        .status(1)
        .stderr_has("hosts/[secret:LINT_TOKEN].nix:1:11: error: trailing whitespace");
    assert!(!run.stderr.contains(GRANTED) && !run.stdout.contains(GRANTED));
    test.write(&format!("hosts/{GRANTED}.nix"), "{ x = 1; }\n");
    test.run_with(&["run", "lint"]).success();
    // Replayed from the cache without the variable (so nothing could redact it now): the log never held it.
    let replay = test.unset_env("LINT_TOKEN").run_with(&["run", "lint"]);
    assert!(!replay.stdout.contains(GRANTED), "{}", replay.stdout);
}

/// A WAT task plugin that sends `request` (JSON) through `cairn_http`, ignores the reply and succeeds.
fn http_client(request: &str) -> Vec<u8> {
    let describe = r#"{"ok":{"name":"client","version":"0","protocol":1,"capabilities":["task"]}}"#;
    let done = r#"{"ok":{"status":0,"diagnostics":[],"output":"sent"}}"#;
    let escape = |text: &str| text.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        r#"(module
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/user" "cairn_http" (func $http (param i64) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{describe}")
  (data (i32.const 1024) "{done}")
  (data (i32.const 4096) "{request}")
  (func $copy (param $ptr i32) (param $len i32) (result i64)
    (local $off i64) (local $i i32)
    (local.set $off (call $alloc (i64.extend_i32_u (local.get $len))))
    (block $end (loop $next
      (br_if $end (i32.ge_u (local.get $i) (local.get $len)))
      (call $store_u8 (i64.add (local.get $off) (i64.extend_i32_u (local.get $i)))
        (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (local.get $off))
  (func (export "describe") (result i32)
    (call $output_set (call $copy (i32.const 0) (i32.const {describe_len})) (i64.const {describe_len}))
    (i32.const 0))
  (func (export "run_task") (result i32)
    (drop (call $http (call $copy (i32.const 4096) (i32.const {request_len}))))
    (call $output_set (call $copy (i32.const 1024) (i32.const {done_len})) (i64.const {done_len}))
    (i32.const 0))
)"#,
        describe = escape(describe),
        done = escape(done),
        request = escape(request),
        describe_len = describe.len(),
        done_len = done.len(),
        request_len = request.len(),
    )
    .into_bytes()
}

/// A project whose task `send` runs [`http_client`] with `request`, granted `127.0.0.1:port`, plus `extra`
/// lines in its declaration.
fn client_project(request: &str, port: u16, extra: &str) -> Test {
    let test = project(
        &[("client", &http_client(request))],
        "[tasks.send]\nplugin = \"client\"\n",
    );
    test.edit(
        "tasks.toml",
        "[plugins.client]\n",
        &format!("[plugins.client]\nallow.hosts = [\"127.0.0.1:{port}\"]\n{extra}"),
    );
    test
}

#[test]
fn a_plugin_cannot_set_framing_or_addressing_headers() {
    let (port, hits) = serve("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
    for header in [
        "Host",
        "Content-Length",
        "transfer-encoding",
        "Connection",
        "Upgrade",
        "TE",
        "Proxy-Authorization",
    ] {
        let request = format!(
            r#"{{"method":"POST","url":"http://127.0.0.1:{port}/a","headers":[["{header}","5"]],"body":"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"}}"#
        );
        client_project(&request, port, "")
            .run_with(&["run", "send"])
            .success()
            .stderr_has(&format!(
                "the header `{header}` is cairn's to set, not a plugin's"
            ));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached the server");
    // An ordinary header still goes through.
    let request = format!(
        r#"{{"method":"GET","url":"http://127.0.0.1:{port}/a","headers":[["accept","*/*"]]}}"#
    );
    client_project(&request, port, "")
        .run_with(&["run", "send"])
        .success()
        .stderr_lacks("refused");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn a_reply_larger_than_the_plugin_may_hold_is_refused_before_it_is_copied_in() {
    let big: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n{body}",
            len = 15 << 20,
            body = "x".repeat(15 << 20)
        )
        .into_boxed_str(),
    );
    let (port, hits) = serve(big);
    let request = format!(r#"{{"method":"GET","url":"http://127.0.0.1:{port}/big"}}"#);
    client_project(&request, port, "limits = { memory = \"16MiB\" }\n")
        .run_with(&["run", "send"])
        .success()
        .stderr_has(
            "is larger than 4096 KiB, the most a plugin with limits.memory = 16 MiB is handed",
        );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn compiled_plugin_code_is_kept_only_where_the_user_alone_writes() {
    let Some(lint) = example("line-lint") else {
        return;
    };
    let test = project(
        &[("lint", &lint)],
        "[tasks.lint]\nplugin = \"lint\"\ninputs = [\"a.nix\"]\ncache = false\n",
    );
    test.write("a.nix", "{ }\n");
    // A shared cache directory, and a user cache whose path wasmtime's TOML must spell right (a combining accent).
    let shared = test.path("shared-cache");
    let user_cache = test.path("cafe\u{301}/cache");
    let test = test
        .env("CAIRN_CACHE_DIR", shared.to_str().unwrap())
        .env("XDG_CACHE_HOME", user_cache.to_str().unwrap());
    test.run_with(&["run", "lint"]).success();
    let compiled = |dir: &Path| {
        crate::support::walk(dir)
            .into_iter()
            .filter(|p| !p.ends_with("wasmtime-cache.toml"))
            .count()
    };
    assert_eq!(
        compiled(&shared),
        0,
        "nothing compiled lands in the shared cache"
    );
    assert!(
        compiled(&user_cache.join("cairn/wasmtime")) > 0,
        "the user's own cache holds it"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(user_cache.join("cairn/wasmtime"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    // A cache directory another user owns is not trusted: plugins compile without it, and still work.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let other = test.path("other/cache");
        std::fs::create_dir_all(other.join("cairn")).unwrap();
        std::os::unix::fs::chown(other.join("cairn"), Some(65534), Some(65534)).unwrap();
        let test = test.env("XDG_CACHE_HOME", other.to_str().unwrap());
        test.run_with(&["run", "lint"]).success();
        assert_eq!(compiled(&other), 0, "{:?}", crate::support::walk(&other));
    }
}

/// Whether `haystack` holds a registry path of a wasmtime release (`wasmtime-NN.`), which its panic locations
/// carry wherever its code is linked.
fn holds_wasmtime(haystack: &[u8]) -> bool {
    haystack
        .windows(10)
        .any(|w| w.starts_with(b"wasmtime-") && w[9].is_ascii_digit())
}

#[test]
fn the_cairn_executable_does_not_link_the_plugin_runtime() {
    let host = std::fs::read(env!("CARGO_BIN_EXE_cairn-plugin-host")).unwrap();
    assert!(
        holds_wasmtime(&host),
        "the check must see wasmtime where it is linked"
    );
    let cairn = std::fs::read(env!("CARGO_BIN_EXE_cairn")).unwrap();
    assert!(
        !holds_wasmtime(&cairn),
        "cairn links wasmtime: something in src/ uses cairn_plugin_host (use cairn_plugin_client)"
    );
}

/// A stand-in for the plugin host: a shell script (run with an empty environment, hence absolute paths).
fn host_script(test: &Test, body: &str) -> String {
    let path = test.path("fake-host.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_plugin_host_that_dies_fails_only_its_task_and_says_how_it_ended() {
    let module = hostile("run_task", "task", "", "(i32.const 0)");
    let test = project(
        &[("lint", &module)],
        &format!("[tasks.lint]\nplugin = \"lint\"\n{OTHER_TASK}"),
    );
    let host = host_script(&test, "echo 'the runtime fell over' >&2\nexit 3");
    test.env("CAIRN_PLUGIN_HOST", &host)
        .run_with(&["run", "lint", "other", "-k"])
        .status(1)
        .stderr_has(
            "plugin `lint`: its host process stopped during `describe` (exit status 3): the runtime fell over",
        )
        .stdout_has("other ran");
}

#[test]
fn a_missing_plugin_host_is_named_with_how_to_get_it() {
    let module = hostile("run_task", "task", "", "(i32.const 0)");
    let test = project(&[("lint", &module)], "[tasks.lint]\nplugin = \"lint\"\n");
    let missing = test.path("no-such-host");
    test.env("CAIRN_PLUGIN_HOST", missing.to_str().unwrap())
        .run_with(&["run", "lint"])
        .status(1)
        .stderr_has("cannot start the plugin host")
        .stderr_has("no-such-host");
}

#[test]
fn the_plugin_host_gets_none_of_cairns_environment() {
    let Some(module) = example("line-lint") else {
        return;
    };
    let test = project(
        &[("lint", &module)],
        "[tasks.lint]\nplugin = \"lint\"\ninputs = [\"*.txt\"]\n",
    )
    .file("a.txt", "fine\n");
    let seen = test.path("host-env.txt");
    let host = host_script(
        &test,
        &format!(
            "/usr/bin/env > '{}'\nexec '{}' \"$@\"",
            seen.display(),
            env!("CARGO_BIN_EXE_cairn-plugin-host")
        ),
    );
    let test = test
        .env("CAIRN_PLUGIN_HOST", &host)
        .env(
            "SOPS_AGE_KEY",
            "AGE-SECRET-KEY-1NOTAREALKEYBUTITSHOULDSTAYINCAIRN",
        )
        .env("AWS_SECRET_ACCESS_KEY", "not-for-plugins");
    test.run_with(&["run", "lint"]).success();
    let environment = std::fs::read_to_string(&seen).unwrap();
    assert!(
        !environment.contains("SOPS_AGE_KEY") && !environment.contains("AWS_SECRET"),
        "{environment}"
    );
}

#[test]
fn a_runaway_recursion_traps_its_call_and_the_run_goes_on() {
    // The host gives a call 48 MiB of native stack on a thread that has more: endless recursion ends in a trap
    // of that call, not in a crash of the host process.
    let module = hostile(
        "run_task",
        "task",
        "(func $deep (result i32) (call $deep))",
        "(call $deep)",
    );
    let test = project(
        &[("deep", &module)],
        &format!("[tasks.deep]\nplugin = \"deep\"\n{OTHER_TASK}"),
    );
    test.run_with(&["run", "deep", "other", "-k"])
        .status(1)
        .stderr_has("plugin `deep` crashed in `run_task`")
        .stderr_lacks("its host process stopped")
        .stdout_has("other ran");
}

/// A real HTTP server (Python's) on loopback serving `dir`, stopped when dropped.
struct Served {
    child: std::process::Child,
    port: u16,
}

impl Served {
    fn start(dir: &std::path::Path) -> Served {
        let port = crate::support::free_port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs");
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "the server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Served { child, port }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_plugin_from_a_url_is_pinned_cached_reused_offline_and_refused_when_its_bytes_change() {
    let Some(lint) = example("line-lint") else {
        return;
    };
    let Some(other) = example("event-log") else {
        return;
    };
    let site = tempfile::tempdir().expect("temp dir");
    std::fs::write(site.path().join("lint.wasm"), &lint).expect("write");
    let server = Served::start(site.path());
    let url = format!("http://127.0.0.1:{}/lint.wasm", server.port);
    let cache = tempfile::tempdir().expect("temp dir");
    let test = Test::new()
        .tasks(&format!(
            "[plugins.lint]\nsource = \"{url}\"\n\n[tasks.lint]\nplugin = \"lint\"\ninputs = [\"hosts/*.nix\"]\ncache = false\n"
        ))
        .file("hosts/a.nix", "{ }\n")
        .env("XDG_CACHE_HOME", &cache.path().display().to_string());

    // Not pinned yet: nothing is downloaded, and the fix is named.
    test.run_with(&["run", "lint"])
        .status(1)
        .stderr_has("is downloaded from a URL but not pinned")
        .stderr_has("cairn plugins lock");
    // Locking downloads it, pins URL and hash, and keeps the bytes in the user's cache, private.
    test.run_with(&["plugins", "lock"]).success();
    let lock = test.read("plugins.lock");
    assert!(
        lock.contains(&url) && lock.contains(&sha256(&lint)),
        "{lock}"
    );
    let kept = cache
        .path()
        .join(format!("cairn/plugins/{}.wasm", sha256(&lint)));
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&kept), 0o600);
    assert_eq!(mode(kept.parent().expect("dir")), 0o700);
    test.run_with(&["run", "lint"])
        .success()
        .stdout_has("checked 1 file(s)");

    // Offline: the server is gone, the cached copy is used.
    drop(server);
    test.run_with(&["run", "lint"])
        .success()
        .stdout_has("checked 1 file(s)");

    // The bytes at the URL change (a compromised server): a fresh download is refused, naming the plugin.
    std::fs::write(site.path().join("lint.wasm"), &other).expect("write");
    let server = Served::start(site.path());
    let moved = format!("http://127.0.0.1:{}/lint.wasm", server.port);
    test.edit("tasks.toml", &url, &moved);
    test.edit("plugins.lock", &url, &moved);
    std::fs::remove_file(&kept).expect("forget the cached copy");
    test.run_with(&["run", "lint"])
        .status(1)
        .stderr_has("plugin `lint`")
        .stderr_has(&format!(
            "but the pin says {}: refusing to load them",
            sha256(&lint)
        ));
    assert!(!kept.exists(), "refused bytes are not kept");

    // A cached copy altered on disk is never loaded: it is fetched again, and refused again here.
    std::fs::write(&kept, b"not the module").expect("tamper");
    test.run_with(&["run", "lint"])
        .status(1)
        .stderr_has("refusing to load them");
}

#[test]
fn a_github_release_source_must_name_owner_repo_tag_and_asset() {
    let test = Test::new().tasks(
        "[plugins.p]\nsource = \"github:owner/repo/p.wasm\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
    );
    test.run_with(&["check"])
        .status(1)
        .stderr_has("is not of the form `github:OWNER/REPO@TAG/ASSET.wasm`");
}

/// cairn with the author's own toolchain: their cargo and rustup homes, and a shared target directory so the
/// standard library for wasm32 is built once for every test.
fn author(test: Test) -> Test {
    let home = std::env::var("HOME").unwrap_or_default();
    let keep = |name: &str, default: String| std::env::var(name).unwrap_or(default);
    test.env("CARGO_HOME", &keep("CARGO_HOME", format!("{home}/.cargo")))
        .env(
            "RUSTUP_HOME",
            &keep("RUSTUP_HOME", format!("{home}/.rustup")),
        )
        .env(
            "CAIRN_PLUGIN_TARGET_DIR",
            &keep(
                "CAIRN_PLUGIN_TARGET_DIR",
                format!("{home}/.cache/cairn/plugins-target"),
            ),
        )
}

#[test]
fn a_plugin_of_each_kind_goes_from_an_empty_directory_to_a_run_outside_the_repository() {
    if example("line-lint").is_none() {
        // No wasm toolchain here (CI has one: .ci/run installs it).
        return;
    }
    let pdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/pdk");
    let expected = [
        ("task", "1 file(s) checked"),
        ("secrets", "got a secret of 20 characters"),
        ("events", "TaskFinished"),
        ("executor", "run through hello-executor"),
    ];
    for (kind, shows) in expected {
        let name = format!("hello-{kind}");
        // An empty directory of the author's: no cairn checkout above it.
        let empty = author(Test::new());
        empty
            .run_with(&["plugins", "new", &name, "--kind", kind])
            .status(1)
            .stderr_has("cairn-pdk is not on crates.io yet")
            .stderr_has("--pdk PATH");
        empty
            .run_with(&[
                "plugins",
                "new",
                &name,
                "--kind",
                kind,
                "--pdk",
                &pdk.display().to_string(),
            ])
            .success()
            .stderr_has("cairn plugins build --lock");
        for file in [
            "Cargo.toml",
            "src/lib.rs",
            "README.md",
            "tasks.toml",
            ".gitignore",
        ] {
            assert!(
                empty.path(&format!("{name}/{file}")).is_file(),
                "{kind}: no {file}"
            );
        }
        let crate_dir = author(empty.cwd(&name));
        crate_dir
            .run_with(&["plugins", "build", "--lock"])
            .success()
            .stdout_has(&format!("dist/{name}.wasm"))
            .stdout_has("sha256 ");
        assert!(
            crate_dir
                .read(&format!("{name}/plugins.lock"))
                .contains(&name),
            "{kind}"
        );
        // The built module, in the real plugin host, answers the scaffold's recorded request.
        crate_dir
            .run_with(&["plugins", "test"])
            .success()
            .stdout_has("ok    tests/requests/example.json")
            .stdout_has("1 of 1 recorded request answered as expected");
        if kind == "task" {
            crate_dir.write(
                &format!("{name}/tests/requests/wrong.json"),
                r#"{ "request": { "task": "t", "files": [] }, "expect": { "ok": { "status": 1 } } }"#,
            );
            crate_dir.write(
                &format!("{name}/tests/requests/starved.json"),
                r#"{ "request": { "task": "t", "files": [] }, "limits": { "fuel": 1 }, "expect": { "fails": "fuel" } }"#,
            );
            crate_dir
                .run_with(&["plugins", "test"])
                .status(1)
                .stdout_has("ok    tests/requests/starved.json")
                .stdout_has("FAIL  tests/requests/wrong.json: /ok/status: expected 1, got 0")
                .stdout_has("2 of 3 recorded requests");
            std::fs::remove_file(crate_dir.path(&format!("{name}/tests/requests/wrong.json")))
                .expect("remove");
        }
        let run = crate_dir.run_with(&["run", "try"]).success();
        assert!(
            run.stdout.contains(shows) || run.stderr.contains(shows),
            "{kind}: {}{}",
            run.stdout,
            run.stderr
        );
    }
}

#[test]
fn plugins_build_says_what_is_wrong_with_a_crate_that_is_no_plugin() {
    let test = Test::new().file(
        "Cargo.toml",
        "[package]\nname = \"lib\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    test.run_with(&["plugins", "build"])
        .status(1)
        .stderr_has("does not build a plugin")
        .stderr_has("crate-type");
    Test::new()
        .run_with(&["plugins", "build"])
        .status(1)
        .stderr_has("has no Cargo.toml");
}

#[test]
fn a_plugin_written_in_assemblyscript_speaks_the_same_protocol_as_the_rust_ones() {
    let (Some(counter), Some(_)) = (example("as-line-count"), example("line-lint")) else {
        return;
    };
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/examples");
    // The same harness, on each plugin's recorded requests, through the real host.
    for plugin in ["as-line-count", "line-lint"] {
        Test::new()
            .env("CAIRN_PLUGIN_DIST", &dist().display().to_string())
            .run_with(&[
                "plugins",
                "test",
                &examples.join(plugin).display().to_string(),
            ])
            .success()
            .stdout_has("recorded request");
    }
    // And cairn runs it as a task: config checked against what it declares, diagnostics shown.
    let test = project(
        &[("count", &counter)],
        "[tasks.count]\nplugin = \"count\"\ninputs = [\"notes/*.txt\"]\n",
    );
    test.edit(
        "tasks.toml",
        "[plugins.count]\n",
        "[plugins.count]\nconfig = { max_lines = 2 }\n",
    );
    test.write("notes/a.txt", "one\ntwo\n");
    test.write("notes/b.txt", "one\ntwo\nthree\n");
    test.run_with(&["run", "count"])
        .status(1)
        .stdout_has("counted 5 line(s) in 2 file(s)")
        .stderr_has("notes/b.txt:3:1: error: has 3 lines; at most 2 allowed");
    test.edit("tasks.toml", "max_lines = 2", "max_lines = \"two\"");
    test.run_with(&["run", "count"])
        .status(1)
        .stderr_has("max_lines");
}

#[test]
fn a_plugin_crate_can_take_the_pdk_from_a_tagged_git_release() {
    if example("line-lint").is_none() {
        return;
    }
    // A release of this repository, served by git: the commit under test, tagged.
    let origin = tempfile::tempdir().expect("temp dir");
    let bare = origin.path().join("cairn.git");
    let git = |args: &[&str]| {
        let status = std::process::Command::new("git")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?}");
    };
    git(&[
        "clone",
        "--quiet",
        "--bare",
        env!("CARGO_MANIFEST_DIR"),
        &bare.display().to_string(),
    ]);
    git(&[
        "--git-dir",
        &bare.display().to_string(),
        "tag",
        "v0.1.0-test",
        "HEAD",
    ]);
    let pdk = format!("git+file://{}#v0.1.0-test", bare.display());
    let test = author(Test::new());
    test.run_with(&[
        "plugins", "new", "from-git", "--kind", "task", "--pdk", &pdk,
    ])
    .success();
    assert!(
        test.read("from-git/Cargo.toml")
            .contains("tag = \"v0.1.0-test\""),
        "{}",
        test.read("from-git/Cargo.toml")
    );
    let crate_dir = author(test.cwd("from-git"));
    crate_dir.run_with(&["plugins", "build"]).success();
    crate_dir
        .run_with(&["plugins", "test"])
        .success()
        .stdout_has("1 of 1 recorded request answered as expected");
}
