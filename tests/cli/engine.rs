//! End-to-end tests of the engine: order, parallelism, params, errors, signals, output.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

// ---------------------------------------------------------------- order and parallelism

#[test]
fn dependencies_run_before_dependents() {
    let t = Test::new()
        .tasks(
            r#"
[tasks.deploy]
deps = ["test", "build"]
run = "echo deploy >> order"
[tasks.test]
deps = ["build"]
run = "echo test >> order"
[tasks.build]
run = "echo build >> order"
"#,
        )
        .args(&["run", "deploy", "-j", "4"]);
    t.run().success().stderr_has("3 tasks: 3 succeeded");
    assert_eq!(t.read("order"), "build\ntest\ndeploy\n");
}

#[test]
fn two_jobs_overlap_and_one_job_does_not() {
    let tasks = format!(
        "{}{}[tasks.both]\ndeps = [\"a\", \"b\"]\n",
        stamped("a"),
        stamped("b")
    );
    let parallel = Test::new().tasks(&tasks).args(&["run", "both", "-j2"]);
    parallel.run().success();
    let (a, b) = (span_of(&parallel, "a.span"), span_of(&parallel, "b.span"));
    assert!(
        a.0 < b.1 && b.0 < a.1,
        "with -j2 the tasks should overlap: {a:?} {b:?}"
    );

    let serial = Test::new().tasks(&tasks).args(&["run", "both", "-j1"]);
    serial.run().success();
    let (a, b) = (span_of(&serial, "a.span"), span_of(&serial, "b.span"));
    assert!(
        a.1 <= b.0 || b.1 <= a.0,
        "with -j1 the tasks must not overlap: {a:?} {b:?}"
    );
}

#[test]
fn settings_jobs_limits_parallelism() {
    let tasks = format!(
        "[settings]\njobs = 1\n{}{}[tasks.both]\ndeps = [\"a\", \"b\"]\n",
        stamped("a"),
        stamped("b")
    );
    let t = Test::new().tasks(&tasks).args(&["run", "both"]);
    t.run().success();
    let (a, b) = (span_of(&t, "a.span"), span_of(&t, "b.span"));
    assert!(
        a.1 <= b.0 || b.1 <= a.0,
        "jobs = 1 must not overlap: {a:?} {b:?}"
    );
}

// ---------------------------------------------------------------- params and interpolation

const DEPLOY: &str = r#"
[vars]
flake = "./nix"

[tasks.build]
run = "echo built {{flake}}"

[tasks."notify:{env}"]
params.env = { values = ["production", "staging", "development"] }
run = "echo notify $CAIRN_PARAM_ENV"

[tasks."deploy:{env}"]
description = "Deploy every host of one environment"
params.env = { values = ["production", "staging", "development"], default = "development" }
deps = ["build", "notify:{env}"]
env = { TARGET = "hosts-{{env}}" }
run = "echo deploying {{env}} to $TARGET from {{flake}}"
"#;

#[test]
fn pattern_task_receives_its_param_everywhere() {
    Test::new()
        .tasks(DEPLOY)
        .args(&["run", "deploy:staging"])
        .run()
        .success()
        .stdout_has("deploy:staging | deploying staging to hosts-staging from ./nix")
        .stdout_has("notify:staging | notify staging")
        .stdout_has("build          | built ./nix")
        .stdout_lacks("production");
}

#[test]
fn base_name_uses_the_default_value() {
    Test::new()
        .tasks(DEPLOY)
        .args(&["run", "deploy"])
        .run()
        .success()
        .stdout_has("deploying development");
}

#[test]
fn each_instance_runs_once_per_distinct_params() {
    let t = Test::new()
        .tasks(
            r#"
[tasks."log:{n}"]
params.n = { values = ["1", "2"] }
run = "echo {{n}} >> log"
[tasks.a]
deps = ["log:1", "log:2"]
run = "true"
[tasks.b]
deps = ["log:1"]
run = "true"
"#,
        )
        .args(&["run", "a", "b", "log:1"]);
    t.run().success();
    let mut lines: Vec<String> = t.read("log").lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(lines, ["1", "2"]);
}

#[test]
fn free_param_accepts_any_value() {
    Test::new()
        .tasks("[tasks.\"greet:{who}\"]\nparams.who = {}\nrun = \"echo hello {{who}}\"\n")
        .args(&["run", "greet:ada"])
        .run()
        .success()
        .stdout_has("hello ada");
}

#[test]
fn dir_is_relative_to_tasks_toml_and_interpolated() {
    Test::new()
        .tasks("[vars]\nsub = \"nested/deeper\"\n[tasks.where]\ndir = \"{{sub}}\"\nrun = \"pwd\"\n")
        .file("nested/deeper/.keep", "")
        .cwd("nested")
        .args(&["run", "where"])
        .run()
        .success()
        .stdout_has("nested/deeper");
}

#[test]
fn run_list_runs_each_line_in_order_and_stops_at_the_first_failure() {
    Test::new()
        .tasks("[tasks.steps]\nrun = [\"echo one\", \"exit 4\", \"echo three\"]\n")
        .args(&["run", "steps"])
        .run()
        .status(4)
        .stdout_has("one")
        .stdout_lacks("three");
}

// ---------------------------------------------------------------- load-time errors

fn check_error(tasks: &str, expected: &[&str]) {
    let run = Test::new()
        .tasks(tasks)
        .args(&["run", "anything"])
        .run()
        .status(2);
    for text in expected {
        assert!(
            run.stderr.contains(text),
            "stderr lacks {text:?}:\n{}",
            run.stderr
        );
    }
}

#[test]
fn unknown_key_names_line_column_and_suggests() {
    check_error(
        "[tasks.build]\nrun = \"true\"\ndescripton = \"x\"\n",
        &[
            "unknown key `descripton` in task `build`",
            "[tasks.toml:3:1]",
            "did you mean `description`?",
        ],
    );
}

#[test]
fn unknown_top_level_and_settings_keys_are_errors() {
    check_error(
        "[setings]\njobs = 2\n[tasks.a]\nrun = \"true\"\n",
        &[
            "unknown key `setings` in the top level",
            "[tasks.toml:1:2]",
            "did you mean `settings`?",
        ],
    );
    check_error(
        "[settings]\njobz = 2\n[tasks.a]\nrun = \"true\"\n",
        &[
            "unknown key `jobz` in [settings]",
            "[tasks.toml:2:1]",
            "did you mean `jobs`?",
        ],
    );
}

#[test]
fn wrong_type_names_expected_and_found() {
    check_error(
        "[tasks.a]\nrun = \"true\"\nretries = \"3\"\n",
        &[
            "`retries` must be an integer, found a string",
            "[tasks.toml:3:11]",
        ],
    );
    check_error(
        "[tasks.a]\nrun = 5\n",
        &[
            "`run` must be a string or an array of strings, found an integer",
            "[tasks.toml:2:7]",
        ],
    );
}

#[test]
fn bad_duration_explains_the_format() {
    check_error(
        "[tasks.a]\nrun = \"true\"\ntimeout = \"10x\"\n",
        &[
            "invalid `timeout`: unknown unit `x`",
            "[tasks.toml:3:11]",
            "e.g. `90s`, `10m`, `1h30m`",
        ],
    );
    check_error(
        "[tasks.a]\nrun = \"true\"\ntimeout = 10\n",
        &["a duration needs a unit", "[tasks.toml:3:11]", "`\"10s\"`"],
    );
}

#[test]
fn unknown_interpolation_name_points_inside_the_string() {
    check_error(
        "[vars]\nflake = \".\"\n[tasks.a]\nrun = \"echo {{flak}}\"\n",
        &[
            "unknown name `flak` in `run` of task `a`",
            "[tasks.toml:4:13]",
            "did you mean `flake`?",
        ],
    );
}

#[test]
fn unknown_dependency_names_line_column_and_suggests() {
    check_error(
        "[tasks.build]\nrun = \"true\"\n[tasks.test]\nrun = \"true\"\ndeps = [\"biuld\"]\n",
        &[
            "task `test` depends on unknown task `biuld`",
            "[tasks.toml:5:9]",
            "did you mean `build`?",
        ],
    );
}

#[test]
fn param_default_outside_values_is_an_error() {
    check_error(
        "[tasks.\"d:{env}\"]\nparams.env = { values = [\"production\", \"staging\"], default = \"prod\" }\nrun = \"true\"\n",
        &["`prod` is not one of the values", "[tasks.toml:2:62]", "did you mean `production`?"],
    );
}

#[test]
fn dependency_param_value_outside_values_is_an_error() {
    check_error(
        "[tasks.a]\nrun = \"true\"\ndeps = [\"d:prod\"]\n[tasks.\"d:{env}\"]\nparams.env = { values = [\"production\"] }\nrun = \"true\"\n",
        &["`prod` is not a value of param `env`", "[tasks.toml:3:9]", "did you mean `production`?"],
    );
}

#[test]
fn target_param_value_outside_values_is_a_usage_error() {
    Test::new()
        .tasks(DEPLOY)
        .args(&["run", "deploy:prod"])
        .run()
        .status(2)
        .stderr_has("`prod` is not a value of param `env` of task `deploy:{env}`")
        .stderr_has("did you mean `production`?");
}

#[test]
fn cycle_shows_every_edge_with_its_span() {
    check_error(
        "[tasks.a]\nrun = \"true\"\ndeps = [\"b\"]\n[tasks.b]\nrun = \"true\"\ndeps = [\"c\"]\n[tasks.c]\nrun = \"true\"\ndeps = [\"a\"]\n",
        &[
            "dependency cycle: a → b → c → a",
            "[tasks.toml:3:9]",
            "`a` depends on `b`",
            "`b` depends on `c`",
            "`c` depends on `a`",
        ],
    );
}

#[test]
fn several_problems_are_reported_together() {
    check_error(
        "[tasks.a]\nrun = \"true\"\nretries = \"x\"\ntimeout = \"1y\"\nfoo = 1\n",
        &[
            "3 problems in `tasks.toml`",
            "retries",
            "unknown unit `y`",
            "unknown key `foo`",
        ],
    );
}

#[test]
fn undeclared_name_placeholder_is_an_error() {
    check_error(
        "[tasks.\"deploy:{env}\"]\nrun = \"true\"\n",
        &[
            "`{env}` is not a declared param",
            "[tasks.toml:1:16]",
            "params.env",
        ],
    );
}

#[test]
fn invalid_toml_points_at_the_syntax_error() {
    check_error(
        "[tasks.a\nrun = \"true\"\n",
        &["invalid TOML", "[tasks.toml:1:9]"],
    );
}

#[test]
fn unknown_target_suggests_a_close_name() {
    Test::new()
        .tasks("[tasks.build]\nrun = \"true\"\n")
        .args(&["run", "biuld"])
        .run()
        .status(2)
        .stderr_has("no task named `biuld`")
        .stderr_has("did you mean `build`?");
}

#[test]
fn check_exits_zero_when_valid_and_one_when_not() {
    Test::new()
        .tasks(DEPLOY)
        .args(&["check"])
        .run()
        .success()
        .stderr_has("is valid");
    Test::new()
        .tasks("[tasks.a]\nrun = \"true\"\ndeps = [\"missing\"]\n")
        .args(&["check"])
        .run()
        .status(1)
        .stderr_has("unknown task `missing`");
}

// ---------------------------------------------------------------- finding tasks.toml

#[test]
fn tasks_toml_is_found_walking_up() {
    Test::new()
        .tasks("[tasks.hi]\nrun = \"echo found\"\n")
        .file("a/b/c/.keep", "")
        .cwd("a/b/c")
        .args(&["run", "hi"])
        .run()
        .success()
        .stdout_has("found");
}

#[test]
fn file_flag_overrides_discovery() {
    Test::new()
        .tasks("[tasks.hi]\nrun = \"echo root\"\n")
        .file("other/custom.toml", "[tasks.hi]\nrun = \"echo custom\"\n")
        .args(&["-f", "other/custom.toml", "run", "hi"])
        .run()
        .success()
        .stdout_has("custom");
}

#[test]
fn missing_tasks_toml_is_a_clear_error() {
    Test::new()
        .args(&["run", "x"])
        .run()
        .status(2)
        .stderr_has("no tasks.toml in")
        .stderr_has("-f PATH");
}

// ---------------------------------------------------------------- failure, exit codes, keep-going

const FAILING: &str = r#"
[tasks.broken]
run = "echo about to fail; exit 3"
[tasks.after]
deps = ["broken"]
run = "echo after > after.txt"
[tasks.slow]
run = "sleep 0.3; echo slow > slow.txt"
[tasks.independent]
deps = ["slow"]
run = "echo independent > independent.txt"
[tasks.all]
deps = ["after", "independent"]
run = "true"
"#;

#[test]
fn failure_exit_code_is_the_first_failed_task_and_dependents_do_not_run() {
    let t = Test::new().tasks(FAILING).args(&["run", "all", "-j2"]);
    t.run()
        .status(3)
        .stderr_has("first failure: `broken` (exit code 3)")
        .stderr_has("not run because of it:")
        .stderr_has("`after`");
    assert!(!t.path("after.txt").exists());
    // The running task finishes, but nothing new starts after the failure.
    assert!(t.path("slow.txt").exists());
    assert!(!t.path("independent.txt").exists());
}

#[test]
fn keep_going_runs_everything_whose_deps_succeeded() {
    let t = Test::new()
        .tasks(FAILING)
        .args(&["run", "all", "-j2", "--keep-going"]);
    t.run().status(3).stderr_has("first failure: `broken`");
    assert!(t.path("independent.txt").exists());
    assert!(!t.path("after.txt").exists());
}

#[test]
fn single_task_exit_code_passes_through() {
    Test::new()
        .tasks("[tasks.x]\nrun = \"exit 42\"\n")
        .args(&["run", "x"])
        .run()
        .status(42);
}

#[test]
fn missing_program_exits_127() {
    Test::new()
        .tasks("[tasks.x]\nrun = \"definitely-not-a-program-cairn\"\n")
        .args(&["run", "x"])
        .run()
        .status(127);
}

// ---------------------------------------------------------------- timeout, retries, signals

#[test]
fn timeout_stops_the_task_with_124() {
    let started = Instant::now();
    Test::new()
        .tasks("[tasks.slow]\nrun = \"sleep 30\"\ntimeout = \"300ms\"\n")
        .args(&["run", "slow"])
        .run()
        .status(124)
        .stderr_has("timed out after 300ms");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn timeout_kills_a_task_that_ignores_sigterm_after_the_grace_period() {
    Test::new()
        .tasks("[settings]\nkill_grace = \"200ms\"\n[tasks.stubborn]\nrun = \"trap '' TERM; sleep 30\"\ntimeout = \"200ms\"\n")
        .args(&["run", "stubborn"])
        .run()
        .status(124);
}

#[test]
fn retries_rerun_a_failing_task_and_say_so() {
    let t = Test::new()
        .tasks(
            "[tasks.flaky]\nrun = \"echo x >> tries; test $(wc -l < tries) -ge 3\"\nretries = 2\n",
        )
        .args(&["run", "flaky"]);
    t.run()
        .success()
        .stderr_has("retrying (attempt 2 of 3)")
        .stderr_has("retrying (attempt 3 of 3)");
    assert_eq!(t.read("tries").lines().count(), 3);
}

#[test]
fn retries_give_up_after_the_last_attempt() {
    let t = Test::new()
        .tasks("[tasks.broken]\nrun = \"echo x >> tries; exit 5\"\nretries = 1\n")
        .args(&["run", "broken"]);
    t.run().status(5).stderr_has("after 2 attempts");
    assert_eq!(t.read("tries").lines().count(), 2);
}

pub fn pid_gone(pid: i32) -> bool {
    // SAFETY: signal 0 only asks whether the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return true;
    }
    // A reparented process may linger as a zombie until init reaps it; that is not a running orphan. `ps`
    // says so on Linux and macOS alike (there is no /proc on macOS).
    std::process::Command::new("ps")
        .args(["-o", "stat=", "-p", &pid.to_string()])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim_start()
                .starts_with('Z')
        })
}

pub fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists()
        || std::fs::read_to_string(path)
            .unwrap_or_default()
            .trim()
            .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn interrupt_leaves_nothing_behind(signal: i32, expected_status: i32) {
    let t = Test::new()
        .tasks(
            r#"
[tasks.one]
run = "sleep 60 & echo $! > one.pid; wait"
[tasks.two]
run = "trap '' TERM; sleep 60 & echo $! > two.pid; wait"
[tasks.both]
deps = ["one", "two"]
"#,
        )
        .args(&["run", "both", "-j2"]);
    let mut child = t
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_for(&t.path("one.pid"));
    wait_for(&t.path("two.pid"));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    let started = Instant::now();
    let status = child.wait().expect("cairn exits");
    assert_eq!(status.code(), Some(expected_status));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "cairn took too long to stop"
    );
    for file in ["one.pid", "two.pid"] {
        let pid: i32 = t.read(file).trim().parse().expect("pid");
        assert!(
            pid_gone(pid),
            "background process {pid} of {file} outlived cairn"
        );
    }
}

#[test]
fn ctrl_c_stops_every_task_and_leaves_no_process_alive() {
    interrupt_leaves_nothing_behind(libc::SIGINT, 130);
}

#[test]
fn sigterm_stops_every_task_and_leaves_no_process_alive() {
    interrupt_leaves_nothing_behind(libc::SIGTERM, 143);
}

#[test]
fn background_processes_end_with_their_task() {
    let t = Test::new()
        .tasks("[tasks.spawner]\nrun = \"sleep 60 & echo $! > bg.pid\"\n[tasks.other]\nrun = \"true\"\n")
        .args(&["run", "spawner", "other"]);
    t.run().success();
    let pid: i32 = t.read("bg.pid").trim().parse().expect("pid");
    assert!(pid_gone(pid), "background process {pid} outlived its task");
}

#[test]
fn what_a_background_process_prints_as_its_task_ends_it_is_kept() {
    // The leader exits once its background subshell has set its trap; the subshell, asked to stop with the
    // group, says goodbye first.
    let t = Test::new()
        .tasks(
            "[tasks.spawner]\nrun = \"(trap 'echo goodbye from the background; exit 0' TERM; touch trapped; while :; do sleep 0.05; done) & until [ -f trapped ]; do sleep 0.01; done; echo started\"\n[tasks.other]\nrun = \"true\"\n",
        )
        // Two tasks: their output is captured and labelled, so it is cairn that reads what the group prints.
        .args(&["run", "spawner", "other"]);
    t.run()
        .success()
        .stdout_has("spawner | started")
        .stdout_has("spawner | goodbye from the background");
}

#[test]
fn a_task_that_closes_its_output_early_ends_when_its_process_does() {
    // cairn keeps its own copy of the pipes' write ends until the process exits: the task must still end then,
    // with what it printed before closing them.
    let t = Test::new()
        .tasks(
            "[tasks.quiet]\nrun = \"echo before; exec >&- 2>&-; sleep 0.2\"\n[tasks.other]\nrun = \"true\"\n",
        )
        .args(&["run", "quiet", "other"]);
    t.run()
        .success()
        .stdout_has("quiet | before")
        .stderr_has("2 tasks: 2 succeeded");
}

#[test]
fn a_task_reads_nothing_from_what_cairn_was_given_on_stdin() {
    let t = Test::new().tasks("[tasks.reader]\nrun = \"cat\"\n[tasks.other]\nrun = \"true\"\n");
    // cairn's stdin a file with text in it: the task gets /dev/null, not the file.
    let run = t.run_with_stdin(&["run", "reader", "other"], "typed-at-the-terminal\n");
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(
        !run.stdout.contains("typed-at-the-terminal"),
        "{}",
        run.stdout
    );
    // cairn's stdin /dev/null already: the task inherits it and still reads nothing.
    t.run_with(&["run", "reader", "other"])
        .success()
        .stderr_has("2 tasks: 2 succeeded");
}

#[test]
fn a_task_has_default_sigpipe_and_keeps_the_signals_cairn_was_started_ignoring() {
    // Rust ignores SIGPIPE in cairn: a task's `yes | head` must still end `yes` by the signal (141), quietly,
    // as in a shell.
    // SIGHUP ignored by whoever started cairn (nohup, say) stays ignored in the task, as an exec keeps it.
    let t = Test::new().tasks(
        "[tasks.pipe]\nrun = \"set +e; yes | head -n 1; echo yes-status=${PIPESTATUS[0]}\"\n[tasks.hup]\nrun = \"kill -HUP $$; echo survived\"\n",
    );
    let mut command = t.command_with(&["run", "pipe", "hup"]);
    // SAFETY: signal() is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    Run::from(command.output().expect("cairn runs"))
        .success()
        .stdout_has("pipe | y\n")
        .stdout_has("pipe | yes-status=141")
        .stdout_has("hup  | survived")
        .stdout_lacks("Broken pipe")
        .stderr_lacks("Broken pipe");
}

#[test]
fn a_task_inherits_no_descriptor_of_cairns_but_its_three_streams() {
    // `busy` holds its own pipes (and cairn its pidfd, its event loop, /dev/null) while `fds` looks at what it
    // was given: only 0-2, and the directory `ls` itself opens.
    let t = Test::new()
        .tasks("[tasks.fds]\nrun = \"sleep 0.1; ls /dev/fd\"\n[tasks.busy]\nrun = \"sleep 0.3\"\n");
    let mut command = t.command_with(&["run", "fds", "busy", "-j", "2"]);
    // SAFETY: close() is async-signal-safe. Whatever the test runner leaked to us is not cairn's doing.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            for fd in 3..1024 {
                libc::close(fd);
            }
            Ok(())
        });
    }
    let run = Run::from(command.output().expect("cairn runs")).success();
    let seen: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("fds  | "))
        .collect();
    assert!(seen.len() >= 3, "{}", run.stdout);
    assert!(
        seen.iter().all(|fd| ["0", "1", "2", "3"].contains(fd)),
        "the task was given more: {seen:?}"
    );
}

#[test]
fn a_program_that_cannot_start_is_named_with_the_reason() {
    Test::new()
        .tasks("[tasks.gone]\nrun = \"./no-such-tool --flag\"\n[tasks.other]\nrun = \"true\"\n")
        .args(&["run", "gone", "other"])
        .run()
        .stderr_has("cannot start `./no-such-tool`: No such file or directory")
        .stderr_has("1 failed");
}

// ---------------------------------------------------------------- dry run, args, confirm

#[test]
fn dry_run_prints_the_plan_and_runs_nothing() {
    let t = Test::new()
        .tasks(DEPLOY)
        .args(&["run", "deploy:production", "--dry-run"]);
    t.run()
        .success()
        .stdout_has("plan: 3 tasks")
        .stdout_has("3. deploy:production  (after build, notify:production)")
        .stdout_has("param env=production")
        .stdout_has("$ echo deploying production to $TARGET from ./nix (shell)")
        .stdout_has("$ echo built ./nix\n");
    assert!(!t.path("order").exists());
}

#[test]
fn args_reach_only_the_target() {
    Test::new()
        .tasks("[tasks.dep]\nrun = \"echo dep-args:\"\n[tasks.top]\ndeps = [\"dep\"]\nrun = \"echo top-args:\"\n")
        .args(&["run", "top", "--", "--fast", "it's"])
        .run()
        .success()
        .stdout_has("top | top-args: --fast it's")
        .stdout_has("dep | dep-args:\n");
}

#[test]
fn args_placeholder_puts_args_where_the_task_says() {
    Test::new()
        .tasks("[tasks.t]\nrun = \"echo before {{args}} after\"\n")
        .args(&["run", "t", "--", "a b"])
        .run()
        .success()
        .stdout_has("before a b after");
}

#[test]
fn confirm_without_a_terminal_fails_unless_yes() {
    let t = Test::new()
        .tasks(&format!("{DEPLOY}confirm = \"Deploy to {{{{env}}}}?\"\n"))
        .args(&["run", "deploy:production"]);
    t.run()
        .status(2)
        .stderr_has("task `deploy:production` asks for confirmation (\"Deploy to production?\")")
        .stderr_has("--yes")
        .stdout_lacks("built");
    Test::new()
        .tasks(&format!("{DEPLOY}confirm = \"Deploy to {{{{env}}}}?\"\n"))
        .args(&["run", "deploy:production", "--yes"])
        .run()
        .success()
        .stdout_has("deploying production");
}

// ---------------------------------------------------------------- output

#[test]
fn single_task_output_passes_through_unprefixed() {
    Test::new()
        .tasks("[tasks.one]\nrun = \"printf 'raw\\\\n'\"\n")
        .args(&["run", "one"])
        .run()
        .success()
        .stdout_has("raw\n")
        .stdout_lacks("one |");
}

#[test]
fn parallel_output_is_prefixed_per_line() {
    Test::new()
        .tasks("[tasks.a]\nrun = \"echo from-a; echo err-a >&2\"\n[tasks.bb]\nrun = \"echo from-bb\"\n")
        .args(&["run", "a", "bb"])
        .run()
        .success()
        .stdout_has("a  | from-a\n")
        .stdout_has("bb | from-bb\n")
        .stderr_has("a  | err-a\n");
}

#[test]
fn grouped_output_prints_each_task_as_one_block() {
    let run = Test::new()
        .tasks("[tasks.a]\nrun = \"echo a1; sleep 0.2; echo a2\"\n[tasks.b]\nrun = \"echo b1; sleep 0.1; echo b2\"\n")
        .args(&["run", "a", "b", "-j2", "--output", "grouped"])
        .run()
        .success();
    let a = run
        .stdout
        .find("a1\na2\n")
        .expect("a's block is contiguous");
    let b = run
        .stdout
        .find("b1\nb2\n")
        .expect("b's block is contiguous");
    assert!(
        b < a,
        "b ends first so its block comes first:\n{}",
        run.stdout
    );
    assert!(run.stdout.contains("── a (succeeded"));
}

// ---------------------------------------------------------------- list, graph, completions

#[test]
fn list_shows_names_params_and_descriptions() {
    Test::new()
        .tasks(DEPLOY)
        .args(&["list"])
        .run()
        .success()
        .stdout_has("deploy:{env}  Deploy every host of one environment")
        .stdout_has("env = production | staging | development (default: development)");
}

#[test]
fn graph_formats_draw_the_selected_tasks() {
    Test::new()
        .tasks(DEPLOY)
        .args(&["graph", "deploy:staging", "--format", "dot"])
        .run()
        .success()
        .stdout_has("\"deploy:staging\" -> \"notify:staging\";")
        .stdout_lacks("production");
    Test::new()
        .tasks(DEPLOY)
        .args(&["graph", "deploy:staging", "--format", "mermaid"])
        .run()
        .success()
        .stdout_has("flowchart LR");
    let run = Test::new()
        .tasks(DEPLOY)
        .args(&["graph", "--format", "json"])
        .run()
        .success();
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("valid JSON");
    let names: Vec<&str> = json["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert!(
        names.contains(&"deploy:production") && names.contains(&"notify:development"),
        "{names:?}"
    );
}

#[test]
fn completions_offer_task_names_and_param_values() {
    Test::new()
        .args(&["completions", "bash"])
        .run()
        .success()
        .stdout_has("complete -F _cairn cairn")
        .stdout_has("cairn __complete line");
    Test::new()
        .args(&["completions", "zsh"])
        .run()
        .success()
        .stdout_has("compdef _cairn cairn");
    Test::new()
        .args(&["completions", "fish"])
        .run()
        .success()
        .stdout_has("complete -c cairn");
    let run = Test::new()
        .tasks(DEPLOY)
        .args(&["__complete", "targets"])
        .run()
        .success();
    for name in [
        "build",
        "deploy:production",
        "deploy:staging",
        "notify:development",
        "deploy",
    ] {
        assert!(
            run.stdout.lines().any(|l| l == name),
            "missing {name}:\n{}",
            run.stdout
        );
    }
    // Through the grammar: a target after flags, a flag's values, a nested subcommand's flags.
    let complete = |line: &str| {
        Test::new()
            .tasks(DEPLOY)
            .args(&["__complete", "line", line])
            .run()
            .success()
            .stdout
    };
    assert_eq!(complete("cairn run -j 2 deploy:s"), "deploy:staging\n");
    assert_eq!(complete("cairn run build --remote r"), "read\nread-write\n");
    assert!(complete("cairn cache keygen --").contains("--output\n"));
}

#[test]
fn bash_completion_completes_pattern_values() {
    if Command::new("bash").arg("--version").output().is_err() {
        return;
    }
    let t = Test::new().tasks(DEPLOY);
    let script = Test::new()
        .args(&["completions", "bash"])
        .run()
        .success()
        .stdout;
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_cairn"))
        .parent()
        .expect("bin dir")
        .to_owned();
    let probe = format!(
        "{script}\nCOMP_WORDS=(cairn run deploy:pr); COMP_CWORD=2; _cairn; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    );
    let output = Command::new("bash")
        .arg("-c")
        .arg(probe)
        .current_dir(t.dir.path())
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .expect("bash runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.lines().any(|l| l == "production"), "{text}");
}

// ---------------------------------------------------------------- a real terminal

/// Runs cairn on a new pseudo-terminal, as a session leader with it as controlling terminal, the way a shell
/// would; returns the terminal's master side and the child.
fn spawn_on_terminal(test: &Test) -> (std::fs::File, std::process::Child) {
    use std::os::fd::FromRawFd;
    use std::os::unix::process::CommandExt;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors we then own.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty");
    let mut command = test.command();
    // SAFETY: the descriptors are fresh and only duplicated into the child.
    unsafe {
        command
            .stdin(Stdio::from_raw_fd(libc::dup(slave)))
            .stdout(Stdio::from_raw_fd(libc::dup(slave)))
            .stderr(Stdio::from_raw_fd(slave))
            .pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
    }
    let child = command.spawn().expect("spawn on terminal");
    // SAFETY: we own the master descriptor.
    (unsafe { std::fs::File::from_raw_fd(master) }, child)
}

#[test]
fn task_owning_the_terminal_reads_keyboard_and_ctrl_c_stops_it_cleanly() {
    use std::io::{Read, Write};
    let t = Test::new()
        .tasks("[tasks.ask]\nrun = \"read n; echo got-$n; test -t 0 && echo on-tty; sleep 60 & echo $! > bg.pid; sleep 60\"\n")
        .args(&["--color", "never", "run", "ask"]);
    let (mut terminal, mut child) = spawn_on_terminal(&t);
    terminal.write_all(b"ada\n").expect("type");
    wait_for(&t.path("bg.pid"));
    terminal.write_all(&[3]).expect("Ctrl-C");
    let status = child.wait().expect("cairn exits");
    let mut screen = Vec::new();
    // The master reads until the last writer closes (EIO on Linux); what matters is what arrived before.
    let _ = terminal.read_to_end(&mut screen);
    let screen = String::from_utf8_lossy(&screen);
    assert_eq!(status.code(), Some(130), "{screen}");
    assert!(
        screen.contains("got-ada") && screen.contains("on-tty"),
        "{screen}"
    );
    assert!(screen.contains("stopped by Ctrl-C"), "{screen}");
    let pid: i32 = t.read("bg.pid").trim().parse().expect("pid");
    assert!(pid_gone(pid), "background process {pid} outlived the task");
}

#[test]
fn a_task_with_its_own_path_finds_its_programs_there() {
    let t = Test::new()
        .tasks("[tasks.own]\nenv = { PATH = \"{{bin}}:/usr/bin:/bin\" }\nrun = \"greeter\"\n[vars]\nbin = \"BIN\"\n")
        .file("bin/greeter", "#!/bin/sh\necho hello from my own PATH\n");
    let bin = t.path("bin");
    std::fs::set_permissions(
        bin.join("greeter"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    t.write(
        "tasks.toml",
        &format!(
            "[tasks.own]\nenv = {{ PATH = \"{}:/usr/bin:/bin\" }}\nrun = \"greeter\"\n",
            bin.display()
        ),
    );
    t.args(&["run", "own"])
        .run()
        .success()
        .stdout_has("hello from my own PATH");
}

#[test]
fn cache_key_mistakes_are_reported_with_the_others() {
    Test::new()
        .tasks("[tasks.a]\nrun = \"true\"\ntimeout = \"1y\"\nenv_hash = [\"1BAD\"]\ndeps_strategy = \"files\"\n")
        .args(&["check"])
        .run()
        .status(1)
        .stderr_has("3 problems")
        .stderr_has("unknown unit `y`")
        .stderr_has("`1BAD` is not a variable name")
        .stderr_has("`files` is not a strategy");
}

#[test]
fn set_gives_a_var_another_value_for_one_run() {
    let test = Test::new()
        .tasks("[vars]\nnix = \"require\"\n\n[tasks.build]\nrun = \"echo nix={{nix}}\"\n");
    test.run_with(&["run", "build"])
        .success()
        .stdout_has("nix=require");
    test.run_with(&["run", "build", "--set", "nix=skip"])
        .success()
        .stdout_has("nix=skip");
    test.run_with(&["run", "build", "--set", "nxi=skip"])
        .status(2)
        .stderr_has("there is no var `nxi` in [vars]")
        .stderr_has("did you mean `nix`?");
    test.run_with(&["run", "build", "--set", "nix"])
        .status(2)
        .stderr_has("expected NAME=VALUE");
}

#[test]
fn run_without_a_target_runs_the_task_named_default_or_lists_the_tasks() {
    let test = Test::new()
        .tasks("[tasks.build]\nrun = \"echo built\"\n\n[tasks.default]\ndeps = [\"build\"]\n");
    test.run_with(&["run"]).success().stdout_has("built");
    let test = Test::new().tasks(
        "[tasks.build]\ndescription = \"Build it\"\nrun = \"echo built\"\n\n[tasks.lint]\nrun = \"echo linted\"\n",
    );
    test.run_with(&["run"])
        .status(2)
        .stderr_has("no target given, and tasks.toml has no task named `default`")
        .stdout_has("Build it")
        .stdout_has("lint")
        .stdout_lacks("built");
}

const SHARDED: &str = r#"
[tasks.gen]
run = "sh -c 'echo gen >> ran.log; mkdir -p out; echo generated > out/gen'"
inputs = ["src/**"]
outputs = ["out/gen"]

[tasks.stamp]
run = "sh -c 'echo stamp >> ran.log'"

[tasks.a]
run = "sh -c 'echo a >> ran.log'"
deps = ["gen"]

[tasks.b]
run = "sh -c 'echo b >> ran.log'"
deps = ["stamp"]

[tasks.c]
run = "sh -c 'echo c >> ran.log'"

[tasks.all]
deps = ["a", "b", "c"]
"#;

fn ran(test: &Test) -> Vec<String> {
    let mut lines: Vec<String> = test.read("ran.log").lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

#[test]
fn shards_partition_the_tasks_and_take_other_shards_results_from_the_cache() {
    let test = Test::new().tasks(SHARDED).file("src/x", "1");
    // Tasks that run something, sorted: a b c gen stamp; dealt to shards 1, 2, 1, 2, 1.
    test.run_with(&["run", "all", "--shard", "2/2"])
        .success()
        .stderr_has("shard 2/2: 2 of the 5 tasks that run something");
    assert_eq!(
        ran(&test),
        ["b", "gen", "stamp"],
        "b needs stamp, of shard 1: it ran here too"
    );
    std::fs::remove_file(test.path("ran.log")).expect("remove");
    test.run_with(&["run", "all", "--shard", "1/2"])
        .success()
        .stderr_has("shard 1/2: 3 of the 5 tasks that run something, and 1 of other shards'");
    // gen (shard 2) is cached: a takes its output from the cache; stamp, uncached, is shard 1's own.
    assert_eq!(ran(&test), ["a", "c", "stamp"]);
    assert_eq!(test.read("out/gen"), "generated\n");
}

#[test]
fn a_shard_says_which_tasks_of_other_shards_it_had_to_run() {
    let test = Test::new().tasks(SHARDED).file("src/x", "1");
    test.run_with(&["run", "all", "--shard", "2/2"])
        .success()
        .stderr_has("ran 1 of other shards here too, as the cache did not have it: stamp");
}

#[test]
fn a_shard_outside_its_count_is_refused_with_an_example() {
    Test::new()
        .tasks(SHARDED)
        .run_with(&["run", "all", "--shard", "3/2"])
        .status(2)
        .stderr_has("expected K/N with 1 ≤ K ≤ N, e.g. `--shard 1/4`");
}
