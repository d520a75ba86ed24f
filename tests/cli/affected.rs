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
outputs = ["dist/web.js"]

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
fn a_check_that_is_affected_does_not_affect_what_waits_for_it() {
    let tasks = r#"
[tasks.lint]
run = "true"
inputs = ["src/**"]

[tasks.gen]
run = "true"
inputs = ["gen/**"]
outputs = ["out/gen"]

[tasks.package]
run = "true"
deps = ["lint", "gen"]

[tasks.ci]
deps = ["lint", "package"]
"#;
    let test = committed(
        Test::new()
            .tasks(tasks)
            .file("src/a", "1")
            .file("gen/a", "1"),
    );
    test.write("src/a", "2");
    // lint runs again and can only pass or fail: package is not changed by it; ci, its group, is affected.
    assert_eq!(affected_names(&affected_json(&test, &[])), ["lint", "ci"]);
    test.write("gen/a", "2");
    assert_eq!(
        affected_names(&affected_json(&test, &[])),
        ["lint", "gen", "package", "ci"]
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

const FLEET: &str = r#"
[tasks."build:{host}"]
params.host = { values = { from = "inventory.toml", key = "hosts", where = "enabled" } }
run = "sh -c 'mkdir -p out && echo {{host}} > out/{{host}}'"
outputs = ["out/{{host}}"]
inputs = ["common/**", "{{host.kind}}/**", "hosts/{{host}}/**", "home/{{host.users}}.nix"]

[tasks.deploy]
matrix.host = { from = "inventory.toml", key = "hosts", where = "enabled" }
deps = ["build:{{host}}"]
run = "true"
"#;

const INVENTORY: &str = r#"
[hosts.mac]
kind = "darwin"
users = ["alex", "susu"]
enabled = true

[hosts.box]
kind = "nixos"
users = ["alex"]
enabled = true

[hosts.arm]
kind = "nixos"
users = ["alex", "susu"]
enabled = true

[hosts.phone]
kind = "droid"
users = ["susu"]
enabled = false
"#;

fn fleet() -> Test {
    committed(
        Test::new()
            .tasks(FLEET)
            .file("inventory.toml", INVENTORY)
            .file("common/default.nix", "{ }")
            .file("darwin/default.nix", "{ }")
            .file("nixos/default.nix", "{ }")
            .file("hosts/mac/default.nix", "{ }")
            .file("hosts/box/default.nix", "{ }")
            .file("hosts/arm/default.nix", "{ }")
            .file("home/alex.nix", "{ }")
            .file("home/susu.nix", "{ }"),
    )
}

fn affected_builds(test: &Test) -> Vec<String> {
    affected_names(&affected_json(test, &["deploy"]))
        .into_iter()
        .filter(|t| t.starts_with("build:"))
        .collect()
}

#[test]
fn a_users_home_affects_only_the_hosts_that_user_has_a_home_on() {
    let test = fleet();
    test.write("home/susu.nix", "{ changed }");
    assert_eq!(affected_builds(&test), ["build:mac", "build:arm"]);
    let json = affected_json(&test, &["deploy"]);
    let deploys: Vec<String> = affected_names(&json)
        .into_iter()
        .filter(|t| t.starts_with("deploy"))
        .collect();
    assert_eq!(deploys, ["deploy[mac]", "deploy[arm]", "deploy"]);
}

#[test]
fn a_kind_module_affects_the_hosts_of_that_kind_and_common_affects_every_host() {
    let test = fleet();
    test.write("nixos/default.nix", "{ changed }");
    assert_eq!(affected_builds(&test), ["build:box", "build:arm"]);
    git(&test, &["checkout", "-q", "--", "nixos/default.nix"]);
    test.write("common/new.nix", "{ }");
    assert_eq!(
        affected_builds(&test),
        ["build:mac", "build:box", "build:arm"]
    );
}

#[test]
fn a_host_of_its_own_affects_that_host_alone() {
    let test = fleet();
    git(
        &test,
        &["mv", "hosts/box/default.nix", "hosts/box/configuration.nix"],
    );
    assert_eq!(affected_builds(&test), ["build:box"]);
}

#[test]
fn inputs_naming_params_key_the_cache_per_instance() {
    let test = fleet();
    test.run_with(&["run", "deploy"]).success();
    test.run_with(&["run", "deploy"]).success().cached(3);
    test.write("home/susu.nix", "{ changed }");
    // mac and arm read susu's home: they run again; box comes from the cache.
    test.run_with(&["run", "deploy"]).success().cached(1);
}

#[test]
fn a_since_value_that_looks_like_an_option_is_refused_never_passed_to_git() {
    let test = project();
    let target = test.path("written-by-git");
    test.run_with(&[
        "affected",
        &format!("--since=--output={}", target.display()),
    ])
    .status(2)
    .stderr_has("git knows no commit by that name");
    assert!(!target.exists());
}
