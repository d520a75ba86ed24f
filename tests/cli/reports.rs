//! What a run leaves behind: its summary (.cairn/runs/, --summary, --json), history across runs, and the
//! Chrome trace.

use serde_json::Value;

use crate::support::{in_terminal, Test};

const PROJECT: &str = r#"
[tasks.fetch]
run = "echo fetched"
inputs = ["fetch.txt"]

[tasks.compile]
run = "echo compiling; cat src.txt"
inputs = ["src.txt"]

[tasks.check]
deps = ["fetch", "compile"]
run = "echo checking >&2; exit ${CHECK_EXIT:-0}"
env_pass = ["CHECK_EXIT"]

[tasks.ship]
deps = ["check"]
run = "echo shipped"
"#;

fn project() -> Test {
    Test::new()
        .tasks(PROJECT)
        .file("fetch.txt", "f\n")
        .file("src.txt", "one\n")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

fn task<'a>(summary: &'a Value, label: &str) -> &'a Value {
    summary["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["label"] == label)
        .unwrap_or_else(|| panic!("no task {label} in {summary}"))
}

#[test]
fn a_run_summary_records_hits_misses_a_failure_and_a_skipped_task() {
    let test = project();
    test.run_with(&["run", "ship"]).success();
    test.write("src.txt", "two\n");
    let test = test.env("CHECK_EXIT", "4");
    let run = test
        .run_with(&["run", "ship", "--summary", "out/summary.json"])
        .status(4);
    let summary = json(&test.read("out/summary.json"));
    assert_eq!(summary["schema"], 1);
    assert_eq!(summary["targets"], serde_json::json!(["ship"]));
    assert_eq!(summary["exit_code"], 4);
    assert_eq!(
        summary["totals"],
        serde_json::json!({"tasks": 4, "succeeded": 2, "cached": 1, "failed": 1, "skipped": 1, "not_run": 0, "interrupted": 0})
    );
    let fetch = task(&summary, "fetch");
    assert_eq!(fetch["cache"], "hit");
    assert_eq!(fetch["attempts"], 0);
    assert_eq!(fetch["output_bytes"], 8, "the replayed `fetched` line");
    let compile = task(&summary, "compile");
    assert_eq!(compile["cache"], "miss");
    assert_eq!(compile["cache_reason"], "input changed: src.txt");
    assert_eq!(compile["key"].as_str().map(str::len), Some(64));
    let names: Vec<&str> = compile["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["cache lookup", "run", "cache store"]);
    let check = task(&summary, "check");
    assert_eq!(
        (check["status"].as_str(), check["exit_code"].as_i64()),
        (Some("failed"), Some(4))
    );
    assert_eq!(check["deps"], serde_json::json!(["fetch", "compile"]));
    assert_eq!(check["cache"], "off");
    let ship = task(&summary, "ship");
    assert_eq!(ship["status"], "skipped");
    assert_eq!(ship["blocked_by"], "check");
    assert!(ship["started_ms"].is_null());
    // compile ran longest of the chain that ended with the failure.
    let path = summary["critical_path"]["tasks"].as_array().expect("path");
    assert_eq!(path.last().and_then(Value::as_str), Some("check"));
    // The same record is kept under .cairn/runs/, one file per run.
    let kept = std::fs::read_dir(test.path(".cairn/runs"))
        .expect("runs")
        .count();
    assert_eq!(kept, 2);
    assert!(
        run.stderr.contains("cairn: 4 tasks:"),
        "the human summary is still printed"
    );
}

#[test]
fn json_prints_the_summary_alone_on_stdout() {
    let test = project();
    let run = test.run_with(&["run", "ship", "--json"]).success();
    let summary = json(&run.stdout);
    assert_eq!(summary["totals"]["succeeded"], 4);
    assert!(
        run.stderr.contains("compiling"),
        "task output went to stderr: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("cairn: 4 tasks"),
        "no human summary with --json"
    );
}

#[test]
fn the_trace_has_a_slice_per_task_with_its_phases_nested() {
    let test = project();
    test.run_with(&["run", "ship", "--trace", "trace.json", "-j", "2"])
        .success();
    let trace = json(&test.read("trace.json"));
    let events = trace["traceEvents"].as_array().expect("events");
    let slices: Vec<&Value> = events.iter().filter(|e| e["cat"] == "task").collect();
    let mut labels: Vec<&str> = slices
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    labels.sort_unstable();
    assert_eq!(labels, ["check", "compile", "fetch", "ship"]);
    for phase in events.iter().filter(|e| e["cat"] == "phase") {
        let parent = slices
            .iter()
            .find(|s| s["name"] == phase["args"]["task"])
            .expect("the phase's task");
        assert_eq!(phase["tid"], parent["tid"], "same row as its task");
        let (ts, dur) = (
            phase["ts"].as_f64().unwrap(),
            phase["dur"].as_f64().unwrap(),
        );
        let (pts, pdur) = (
            parent["ts"].as_f64().unwrap(),
            parent["dur"].as_f64().unwrap(),
        );
        assert!(
            ts >= pts && ts + dur <= pts + pdur,
            "{phase} inside {parent}"
        );
    }
    // Two workers at most, each named.
    let rows: std::collections::BTreeSet<i64> =
        slices.iter().map(|s| s["tid"].as_i64().unwrap()).collect();
    assert!(rows.len() <= 2 && rows.iter().all(|&r| r >= 1), "{rows:?}");
    assert!(events
        .iter()
        .any(|e| e["ph"] == "M" && e["args"]["name"] == "worker 1"));
}

#[test]
fn history_reports_durations_hit_rates_failures_and_flaky_tasks() {
    let test = Test::new().tasks(
        "[tasks.build]\nrun = \"echo built\"\ninputs = [\"in.txt\"]\n\n[tasks.flaky]\nrun = \"if [ -e failed-once ]; then echo ok; else touch failed-once; exit 1; fi\"\ninputs = [\"in.txt\"]\n",
    );
    test.write("in.txt", "1\n");
    test.run_with(&["run", "build", "flaky", "-k"]).status(1);
    test.run_with(&["run", "build", "flaky"]).success();
    test.run_with(&["run", "build", "flaky"]).success();
    let stats = json(&test.run_with(&["history", "--json"]).success().stdout);
    let find = |label: &str| {
        stats
            .as_array()
            .expect("list")
            .iter()
            .find(|s| s["label"] == label)
            .cloned()
            .expect("task")
    };
    let build = find("build");
    assert_eq!(
        (build["runs"].as_u64(), build["executed"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(build["hit_rate"].as_f64(), Some(2.0 / 3.0));
    let flaky = find("flaky");
    assert_eq!(flaky["failure_rate"], 0.5);
    assert_eq!(
        flaky["flaky_keys"].as_array().map(Vec::len),
        Some(1),
        "same key, both outcomes"
    );
    test.run_with(&["history"])
        .success()
        .stdout_has("flaky")
        .stdout_has("yes: 1 key(s) both passed and failed")
        .stderr_has("3 run(s) from");
    test.run_with(&["history", "flaky"])
        .success()
        .stdout_has("failed")
        .stdout_has("no earlier success recorded");
    test.run_with(&["history", "flakey"])
        .status(1)
        .stderr_has("did you mean `flaky`?");
}

#[test]
fn bench_measures_cold_and_warm_runs_and_flags_regressions() {
    let test = Test::new()
        .tasks("[tasks.slow]\nrun = \"sleep 0.05; echo done\"\ninputs = [\"in.txt\"]\n")
        .file("in.txt", "x\n");
    let run = test
        .run_with(&[
            "bench",
            "slow",
            "--runs",
            "2",
            "--warmup",
            "0",
            "--json",
            "--save",
            "base.json",
        ])
        .success();
    let result = json(&run.stdout);
    assert_eq!(result["runs"], 2);
    let cold = &result["cold"];
    let warm = &result["warm"];
    assert_eq!(cold["times_ms"].as_array().map(Vec::len), Some(2));
    assert_eq!(cold["hit_rate"], 0.0, "cold runs bypass the cache");
    assert_eq!(warm["hit_rate"], 1.0, "warm runs restore the cached task");
    assert!(
        cold["median_ms"].as_f64() > Some(50.0),
        "the task sleeps 50 ms: {cold}"
    );
    assert!(result["cold_over_warm"].as_f64() > Some(1.0));
    assert_eq!(json(&test.read("base.json")), result);

    // An earlier result that was much faster: this one is a regression.
    let mut faster = result.clone();
    faster["cold"]["median_ms"] = serde_json::json!(1.0);
    test.write("faster.json", &faster.to_string());
    test.run_with(&[
        "bench",
        "slow",
        "--runs",
        "1",
        "--cold",
        "--compare",
        "faster.json",
    ])
    .status(1)
    .stderr_has("REGRESSION beyond 10%");
    let mut slower = result.clone();
    slower["cold"]["median_ms"] = serde_json::json!(100_000.0);
    test.write("slower.json", &slower.to_string());
    test.run_with(&[
        "bench",
        "slow",
        "--runs",
        "1",
        "--cold",
        "--compare",
        "slower.json",
    ])
    .success()
    .stdout_has("cold ")
    .stderr_lacks("REGRESSION");
    test.run_with(&["bench", "nope"])
        .status(2)
        .stderr_has("no task named `nope`");
}

/// Debian's chromium, which .ci/run installs; without it (outside CI) the browser test says it is skipped.
fn chromium() -> Option<String> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            std::process::Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(str::to_owned);
    assert!(
        found.is_some() || std::env::var_os("CI").is_none(),
        "chromium is missing: .ci/run installs it"
    );
    if found.is_none() {
        eprintln!("skipped: no chromium to render the HTML report in");
    }
    found
}

#[test]
fn the_html_report_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        return;
    };
    let test = Test::new().tasks(
        "[tasks.fetch]\nrun = \"echo fetched\"\ninputs = [\"in.txt\"]\n\n[tasks.slow]\nrun = \"sleep 0.2\"\n\n[tasks.\"<b>mark</b>\"]\ndeps = [\"fetch\", \"slow\"]\nrun = \"exit 5\"\n\n[tasks.after]\ndeps = [\"<b>mark</b>\"]\nrun = \"true\"\n",
    );
    test.write("in.txt", "x\n");
    test.run_with(&["run", "fetch"]).success();
    test.run_with(&["run", "after"]).status(5);
    test.run_with(&["report", "--html", "report.html"])
        .success()
        .stderr_has("wrote report.html");
    let summary = {
        let mut files: Vec<_> = std::fs::read_dir(test.path(".cairn/runs"))
            .expect("runs")
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        json(&std::fs::read_to_string(files.last().expect("a run")).expect("summary"))
    };
    test.run_with(&["report"])
        .success()
        .stdout_has("critical path")
        .stdout_has("<b>mark</b>  failed");
    let profile = test.path("chromium-profile");
    let output = std::process::Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", test.path("report.html").display()))
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        dom.contains("data-rendered=\"yes\""),
        "the script ran to the end:\n{dom}"
    );
    assert!(!dom.contains("<p class=\"render-error\""), "{dom}");
    let started = summary["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !t["started_ms"].is_null())
        .count();
    assert_eq!(started, 3, "after was skipped");
    assert_eq!(
        dom.matches("<rect class=\"bar ").count(),
        started,
        "a timeline bar per task that ran"
    );
    assert_eq!(
        dom.matches("class=\"bar hit\"").count(),
        1,
        "fetch came from the cache"
    );
    assert_eq!(dom.matches("class=\"bar failed\"").count(), 1);
    let path = summary["critical_path"]["tasks"].as_array().unwrap();
    assert_eq!(path.len(), 2, "slow → <b>mark</b>: {path:?}");
    assert_eq!(dom.matches("<g class=\"node critical\"").count(), 2);
    assert_eq!(dom.matches("class=\"edge critical\"").count(), 1);
    assert_eq!(dom.matches("<tr data-task=").count(), 4, "a row per task");
    // A task name is text, never markup.
    assert!(dom.contains("&lt;b&gt;mark&lt;/b&gt;"), "{dom}");
    assert!(!dom.contains("<b>mark</b>"));
}

const TWO_TASKS: &str = "[tasks.a]\nrun = \"echo a-start; sleep 0.3; echo a-end\"\n[tasks.b]\nrun = \"sleep 0.1; echo b-out\"\n[tasks.c]\ndeps = [\"a\", \"b\"]\nrun = \"echo c-out\"\n";

#[test]
fn a_terminal_gets_a_live_status_line_below_the_output() {
    let test = Test::new().tasks(TWO_TASKS);
    let Some(shown) = in_terminal(&test, "run c --color never") else {
        return;
    };
    assert!(
        shown.contains("\x1b[2K"),
        "the line is cleared and redrawn: {shown:?}"
    );
    assert!(shown.contains("running: a"), "{shown:?}");
    assert!(
        shown.contains("3/3 done · 0 cached · 0 failed · 0 remaining"),
        "{shown:?}"
    );
    for line in ["a | a-start", "a | a-end", "b | b-out", "c | c-out"] {
        assert!(
            shown.contains(line),
            "task output still scrolls by: {line} in {shown:?}"
        );
    }
    // The summary comes after the line is gone for good.
    let summary = shown.find("cairn: 3 tasks").expect("summary");
    assert!(shown[summary..]
        .lines()
        .next()
        .is_some_and(|l| !l.contains("done ·")));
    let plain = in_terminal(&test, "run c --progress plain --color never").expect("script");
    assert!(
        !plain.contains("\x1b[2K") && !plain.contains("remaining"),
        "{plain:?}"
    );
    // Off a terminal there is no status line either.
    let piped = test.run_with(&["run", "c"]).success();
    assert!(!piped.stderr.contains("remaining"));
}

#[test]
fn ci_logs_get_collapsible_groups() {
    let test = Test::new().tasks(TWO_TASKS);
    let github = test
        .env("GITHUB_ACTIONS", "true")
        .run_with(&["run", "c"])
        .success();
    assert!(
        github.stdout.contains("::group::c (succeeded,"),
        "{}",
        github.stdout
    );
    assert_eq!(github.stdout.matches("::group::").count(), 3);
    assert_eq!(github.stdout.matches("::endgroup::").count(), 3);
    assert!(github.stdout.contains("a-start\na-end\n::endgroup::"));
    let test = Test::new().tasks(TWO_TASKS).env("GITLAB_CI", "true");
    let gitlab = test.run_with(&["run", "c"]).success();
    assert_eq!(
        gitlab.stdout.matches("section_start:").count(),
        3,
        "{}",
        gitlab.stdout
    );
    assert!(gitlab
        .stdout
        .contains("[collapsed=true]\r\x1b[0Kb (succeeded,"));
    assert_eq!(gitlab.stdout.matches("section_end:").count(), 3);
}
