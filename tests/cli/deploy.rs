//! Deploy-grade task features: named locks across cairn processes, the audit log, protected tasks.

use std::process::Stdio;

use crate::support::Test;

#[test]
fn a_named_lock_lets_one_process_at_a_time_run_the_task() {
    let test = Test::new().tasks(
        "[tasks.\"deploy:{env}\"]\nparams.env.values = [\"production\", \"staging\"]\nlock = \"deploy-{{env}}\"\nrun = \"echo start $(date +%s%N) >> spans.{{env}}; sleep 0.6; echo end $(date +%s%N) >> spans.{{env}}\"\n",
    );
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
