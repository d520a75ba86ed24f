//! `cairn affected` and `cairn run --affected` in real git repositories.

use super::support::Test;

fn git(test: &Test, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=cairn test",
            "-c",
            "user.email=test@example.org",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(test.dir.path())
        .env("HOME", test.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?} failed");
}

fn committed(test: Test) -> Test {
    git(&test, &["init", "-q"]);
    git(&test, &["add", "-A"]);
    git(&test, &["commit", "-q", "-m", "first"]);
    test
}

const TASKS: &str = r#"
[tasks.web]
run = "true"
inputs = ["web/**", "!web/**/*.md"]

[tasks.api]
run = "true"
inputs = ["api/**"]

[tasks.docs]
run = "true"
inputs = ["docs/*.md"]

[tasks.bundle]
run = "true"
deps = ["web"]

[tasks.all]
deps = ["bundle", "api", "docs"]
"#;

fn project() -> Test {
    committed(
        Test::new()
            .tasks(TASKS)
            .file("web/app.js", "1")
            .file("web/README.md", "read me")
            .file("api/main.py", "1")
            .file("api/old.py", "1")
            .file("docs/guide.md", "1"),
    )
}

fn affected_json(test: &Test, args: &[&str]) -> serde_json::Value {
    let run = test
        .run_with(&[&["affected", "--json"], args].concat())
        .success();
    serde_json::from_str(&run.stdout).expect("affected --json prints JSON")
}

fn affected_names(json: &serde_json::Value) -> Vec<String> {
    json["affected"]
        .as_array()
        .expect("affected is an array")
        .iter()
        .map(|t| t["task"].as_str().expect("task name").to_owned())
        .collect()
}

#[test]
fn a_clean_tree_affects_nothing() {
    let test = project();
    let json = affected_json(&test, &[]);
    assert_eq!(affected_names(&json), Vec::<String>::new());
    assert_eq!(json["changes"], serde_json::json!([]));
    assert_eq!(json["base"]["reference"], "the merge base of HEAD and main");
}

#[test]
fn a_modified_input_affects_its_task_and_every_dependent_but_not_its_neighbours() {
    let test = project();
    test.write("web/app.js", "2");
    let json = affected_json(&test, &[]);
    assert_eq!(affected_names(&json), ["web", "bundle", "all"]);
    assert_eq!(json["affected"][0]["reason"], "inputs");
    assert_eq!(
        json["affected"][0]["files"],
        serde_json::json!(["web/app.js"])
    );
    assert_eq!(json["affected"][1]["reason"], "dependency");
    assert_eq!(json["affected"][1]["dependency"], "web");
    assert_eq!(
        json["changes"],
        serde_json::json!([{ "path": "web/app.js", "kind": "modified" }])
    );
}

#[test]
fn an_excluded_input_pattern_keeps_its_files_from_affecting_the_task() {
    let test = project();
    test.write("web/README.md", "changed");
    assert_eq!(
        affected_names(&affected_json(&test, &[])),
        Vec::<String>::new()
    );
}

#[test]
fn added_deleted_renamed_and_untracked_files_each_affect_the_tasks_that_read_them() {
    let test = project();
    // Untracked: never added to git, but not ignored.
    test.write("docs/new.md", "new");
    // Deleted.
    std::fs::remove_file(test.path("web/app.js")).expect("delete");
    // Added (staged) and renamed (out of api/, so only the old name is an input of api).
    test.write("scratch.txt", "not an input");
    git(&test, &["add", "scratch.txt"]);
    git(&test, &["mv", "api/old.py", "moved.py"]);
    let json = affected_json(&test, &[]);
    let kinds: Vec<(String, String)> = json["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().into(),
                c["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("docs/new.md".into(), "untracked".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("web/app.js".into(), "deleted".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("scratch.txt".into(), "added".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("moved.py".into(), "renamed".into())),
        "{kinds:?}"
    );
    let renamed = json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == "moved.py")
        .unwrap();
    assert_eq!(renamed["from"], "api/old.py");
    assert_eq!(
        affected_names(&json),
        ["web", "api", "docs", "bundle", "all"]
    );
}

#[test]
fn ignored_files_affect_nothing() {
    let test = Test::new()
        .tasks(TASKS)
        .file(".gitignore", "web/build/\n")
        .file("web/app.js", "1");
    let test = committed(test);
    test.write("web/build/out.js", "generated");
    assert_eq!(
        affected_names(&affected_json(&test, &[])),
        Vec::<String>::new()
    );
}

#[test]
fn since_a_branch_counts_every_commit_after_the_merge_base_and_the_working_tree() {
    let test = project();
    git(&test, &["checkout", "-q", "-b", "feature"]);
    test.write("api/main.py", "2");
    git(&test, &["commit", "-q", "-am", "api"]);
    test.write("docs/guide.md", "2");
    // By default: the merge base with main, so the commit on the branch counts, and so does the edit.
    assert_eq!(
        affected_names(&affected_json(&test, &[])),
        ["api", "docs", "all"]
    );
    // Since the branch's own head, only the edit.
    assert_eq!(
        affected_names(&affected_json(&test, &["--since", "HEAD"])),
        ["docs", "all"]
    );
    assert_eq!(
        affected_names(&affected_json(&test, &["--since", "main"])),
        ["api", "docs", "all"]
    );
}

#[test]
fn targets_limit_the_answer_to_what_they_reach() {
    let test = project();
    test.write("web/app.js", "2");
    test.write("api/main.py", "2");
    assert_eq!(
        affected_names(&affected_json(&test, &["bundle"])),
        ["web", "bundle"]
    );
}

#[test]
fn a_changed_definition_in_tasks_toml_affects_that_task_alone() {
    let test = project();
    test.edit(
        "tasks.toml",
        "[tasks.api]\nrun = \"true\"",
        "[tasks.api]\nrun = \"echo changed\"",
    );
    test.write(
        "tasks.toml",
        &format!(
            "{}\n[tasks.lint]\nrun = \"true\"\n",
            test.read("tasks.toml")
        ),
    );
    let json = affected_json(&test, &[]);
    assert_eq!(affected_names(&json), ["api", "all", "lint"]);
    assert_eq!(json["affected"][0]["reason"], "definition");
    assert_eq!(json["affected"][2]["reason"], "new");
}

#[test]
fn run_affected_runs_only_the_affected_tasks_and_what_they_need() {
    let tasks = r#"
[tasks.gen]
run = "sh -c 'echo gen >> ran.log'"
inputs = ["gen/**"]

[tasks.web]
run = "sh -c 'echo web >> ran.log'"
deps = ["gen"]
inputs = ["web/**"]

[tasks.api]
run = "sh -c 'echo api >> ran.log'"
inputs = ["api/**"]

[tasks.all]
deps = ["web", "api"]
"#;
    let test = committed(
        Test::new()
            .tasks(tasks)
            .file(".gitignore", "ran.log\n.cairn/\n")
            .file("gen/x", "1")
            .file("web/x", "1")
            .file("api/x", "1"),
    );
    test.write("web/x", "2");
    test.run_with(&["run", "all", "--affected"])
        .success()
        .stderr_has(
            "2 of 4 tasks affected by 1 changed path since the merge base of HEAD and main",
        );
    // web is affected; gen is what web needs; api is left alone.
    let ran = test.read("ran.log");
    assert!(
        ran.contains("web") && ran.contains("gen") && !ran.contains("api"),
        "{ran}"
    );

    std::fs::remove_file(test.path("ran.log")).expect("remove log");
    git(&test, &["checkout", "-q", "--", "web/x"]);
    test.run_with(&["run", "all", "--affected"])
        .success()
        .stderr_has("0 of 4 tasks affected");
    assert_eq!(test.read("ran.log"), "");
}

#[test]
fn outside_a_git_repository_affected_says_why_it_cannot_answer() {
    let test = Test::new().tasks(TASKS);
    test.run_with(&["affected"])
        .status(2)
        .stderr_has("is not inside a git repository")
        .stderr_has("git init");
}

#[test]
fn an_unknown_since_reference_is_named_with_examples() {
    let test = project();
    test.run_with(&["affected", "--since", "no-such-branch"])
        .status(2)
        .stderr_has("`--since no-such-branch`: git knows no commit by that name")
        .stderr_has("--since main");
}

#[test]
fn the_text_form_lists_changes_and_why_each_task_is_affected() {
    let test = project();
    test.write("web/app.js", "2");
    test.run_with(&["affected"])
        .success()
        .stdout_has("Changed since the merge base of HEAD and main")
        .stdout_has("  M web/app.js")
        .stdout_has("Affected: 3 of 5 tasks")
        .stdout_has("inputs: web/app.js")
        .stdout_has("depends on web");
}
