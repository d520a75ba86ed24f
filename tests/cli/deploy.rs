//! Deploy-grade task features: named locks across cairn processes, the audit log, protected tasks.

use std::process::Stdio;

use crate::support::Test;

#[test]
fn a_named_lock_lets_one_process_at_a_time_run_the_task() {
    let now = crate::support::NOW_NS;
    let test = Test::new().tasks(&format!(
        "[tasks.\"deploy:{{env}}\"]\nparams.env.values = [\"production\", \"staging\"]\nlock = \"deploy-{{{{env}}}}\"\nrun = \"echo start {now} >> spans.{{{{env}}}}; sleep 0.6; echo end {now} >> spans.{{{{env}}}}\"\n",
    ));
    let first = test
        .command_with(&["run", "deploy:production"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let second = test.run_with(&["run", "deploy:production"]).success();
    assert!(
        second
            .stderr
            .contains("waiting for lock `deploy-production`, held by pid"),
        "{}",
        second.stderr
    );
    assert!(first.wait_with_output().unwrap().status.success());
    let spans = test.read("spans.production");
    let stamps: Vec<(&str, u128)> = spans
        .lines()
        .map(|l| {
            let (what, at) = l.split_once(' ').unwrap();
            (what, at.parse().unwrap())
        })
        .collect();
    assert_eq!(
        stamps.iter().map(|(w, _)| *w).collect::<Vec<_>>(),
        ["start", "end", "start", "end"],
        "{spans}"
    );
    assert!(
        stamps[2].1 >= stamps[1].1,
        "the second run started after the first ended"
    );
    // Another environment is another lock: no wait.
    test.run_with(&["run", "deploy:staging"])
        .success()
        .stderr_lacks("waiting for lock");
}

#[test]
fn audited_tasks_append_a_json_line_per_run() {
    let test = Test::new()
        .tasks("[tasks.\"deploy:{env}\"]\nparams.env.values = [\"production\"]\naudit = true\nrun = \"exit ${CODE:-0}\"\nenv_pass = [\"CODE\"]\n\n[tasks.plain]\nrun = \"true\"\n")
        .env("USER", "alex");
    test.run_with(&["run", "deploy:production", "plain"])
        .success();
    let test = test.env("CODE", "3");
    test.run_with(&["run", "deploy:production"]).status(3);
    let log = test.read(".cairn/audit.log");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert_eq!(lines[0]["task"], "deploy:production");
    assert_eq!(lines[0]["params"]["env"], "production");
    assert_eq!(lines[0]["result"], "succeeded");
    assert_eq!(lines[0]["user"], "alex");
    assert!(lines[0]["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(
        lines[0]["revision"].is_string()
            && lines[0]["time"].is_string()
            && lines[0]["duration_ms"].is_u64()
    );
    assert_eq!(
        (lines[1]["result"].as_str(), lines[1]["exit_code"].as_i64()),
        (Some("failed"), Some(3))
    );
}

#[test]
fn a_protected_task_needs_yes_in_ci() {
    let test = Test::new()
        .tasks("[tasks.release]\nprotected = true\nrun = \"echo released\"\n")
        .env("CI", "true");
    test.run_with(&["run", "release"])
        .status(2)
        .stderr_has("`release` is protected")
        .stderr_has("--yes");
    test.run_with(&["run", "release", "--yes"])
        .success()
        .stdout_has("released");
}

const HEALTH: &str = r#"
[tasks."deploy:{env}"]
params.env.values = ["production", "staging"]
run = "echo deployed {{env}} >> log; test ! -e fail-deploy"
check = { run = "n=$(cat tries 2>/dev/null || echo 0); n=$((n+1)); echo $n > tries; test $n -ge ${NEED:-1}", retries = 3, interval = "100ms" }
rollback = "echo rolled back {{env}} >> log"
env_pass = ["NEED"]
"#;

#[test]
fn a_health_check_is_retried_and_its_failure_rolls_the_task_back() {
    let test = Test::new().tasks(HEALTH);
    // Healthy on the third try: the task succeeds, nothing is rolled back.
    let test = test.env("NEED", "3");
    test.run_with(&["run", "deploy:staging"])
        .success()
        .stderr_has("health check failed (try 1 of 4); next in 100ms")
        .stderr_lacks("rolling back");
    assert_eq!(test.read("log"), "deployed staging\n");
    // Never healthy: the task fails after four tries and its rollback runs with the same params.
    std::fs::remove_file(test.path("tries")).unwrap();
    let test = test.env("NEED", "99");
    test.run_with(&["run", "deploy:production"])
        .status(1)
        .stderr_has("health check failed 4 time(s)")
        .stderr_has("rolling back");
    assert_eq!(
        test.read("log"),
        "deployed staging\ndeployed production\nrolled back production\n"
    );
}

#[test]
fn a_failed_task_is_rolled_back_without_a_check() {
    let test = Test::new().tasks(HEALTH);
    test.write("fail-deploy", "");
    test.run_with(&["run", "deploy:staging"])
        .status(1)
        .stderr_has("rolling back");
    assert_eq!(test.read("log"), "deployed staging\nrolled back staging\n");
    assert!(
        !test.path("tries").exists(),
        "no health check after a failure"
    );
}

#[test]
fn confirm_when_asks_only_for_the_listed_param_values() {
    let test = Test::new().tasks(
        "[tasks.\"deploy:{env}\"]\nparams.env.values = [\"production\", \"staging\"]\nconfirm = { question = \"Deploy {{env}}?\", when = { env = [\"production\"] } }\nrun = \"echo deployed {{env}}\"\n",
    );
    test.run_with(&["run", "deploy:staging"])
        .success()
        .stdout_has("deployed staging");
    test.run_with(&["run", "deploy:production"])
        .status(2)
        .stderr_has("asks for confirmation (\"Deploy production?\")");
    test.run_with(&["run", "deploy:production", "--yes"])
        .success()
        .stdout_has("deployed production");
    test.write(
        "tasks.toml",
        "[tasks.\"deploy:{env}\"]\nparams.env.values = [\"production\"]\nconfirm = { when = { env = [\"prod\"], stage = [\"x\"] } }\nrun = \"true\"\n",
    );
    test.run_with(&["check"])
        .status(1)
        .stderr_has("`prod` is not a value of param `env`")
        .stderr_has("`stage` is not a param of this task");
}

fn git(test: &Test, args: &[&str]) -> std::process::Output {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(test.path(""))
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .output()
        .expect("git runs");
    output
}

#[test]
fn the_pre_commit_hook_runs_validate_and_blocks_a_failing_commit() {
    let test =
        Test::new().tasks("[tasks.validate]\nrun = \"test ! -e broken\"\ninputs = [\"*\"]\n");
    assert!(git(&test, &["init", "-q"]).status.success());
    test.run_with(&["hooks", "install"])
        .success()
        .stderr_has("then `cairn run validate`)");
    use std::os::unix::fs::PermissionsExt;
    let hook = test.path(".git/hooks/pre-commit");
    assert_eq!(
        std::fs::metadata(&hook).unwrap().permissions().mode() & 0o111,
        0o111
    );
    test.write("a.txt", "a\n");
    git(&test, &["add", "."]);
    assert!(git(&test, &["commit", "-qm", "ok"]).status.success());
    test.write("broken", "x\n");
    git(&test, &["add", "."]);
    let refused = git(&test, &["commit", "-qm", "broken"]);
    assert!(
        !refused.status.success(),
        "the hook let a failing validate through"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("`validate` failed"));
    // A hook cairn did not write is left alone unless forced; uninstall removes only its own.
    std::fs::write(&hook, "#!/bin/sh\necho mine\n").unwrap();
    test.run_with(&["hooks", "install"])
        .status(1)
        .stderr_has("was not written by cairn");
    test.run_with(&["hooks", "uninstall"])
        .status(1)
        .stderr_has("left alone");
    test.run_with(&["hooks", "install", "--force"]).success();
    test.run_with(&["hooks", "uninstall"]).success();
    assert!(!hook.exists());
}
