//! `cairn import`: a justfile (read by the real just), a Taskfile.yml and an npm workspace with turbo.json
//! become a tasks.toml that loads and runs the same commands.

use super::support::Test;

/// The real just: `CAIRN_TEST_JUST` (.ci/run installs it), else one on PATH; `None` (skip) outside CI only.
fn just() -> Option<String> {
    if let Some(path) = std::env::var_os("CAIRN_TEST_JUST") {
        return Some(path.to_string_lossy().into_owned());
    }
    let on_path = std::process::Command::new("just")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return Some("just".into());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "just is missing: .ci/run installs it and sets CAIRN_TEST_JUST"
    );
    eprintln!("skipped: no just to read justfiles with");
    None
}

const JUSTFILE: &str = r#"
# A Rust project's justfile, as people write them.
set shell := ["bash", "-c"]

profile := "release"
export GREETING := "hello"

alias b := build

# Build the project
build target="all": (check "fast")
    @echo "building {{target}} with {{profile}}" >> log.txt
    echo "$GREETING" >> log.txt

check mode:
    echo "check {{mode}}" >> log.txt

test *args: build
    echo "test {{args}}" >> log.txt

lint:
    -false
    echo "lint went on" >> log.txt

script:
    #!/usr/bin/env python3
    open("script.txt", "w").write("from python\n")

publish: build && notify
    echo publish >> log.txt

notify:
    echo notify >> log.txt
"#;

#[test]
fn a_justfile_becomes_tasks_that_run_the_same_commands() {
    let Some(just) = just() else { return };
    let test = Test::new()
        .file("justfile", JUSTFILE)
        .env("CAIRN_JUST", &just);
    test.run_with(&["import", "justfile"])
        .success()
        .stderr_has("wrote ")
        .stderr_has("`&& notify` runs after it in just");
    let tasks = test.read("tasks.toml");
    assert!(tasks.contains("[tasks.\"build:{target}\"]"), "{tasks}");
    assert!(
        tasks.contains("params.target = { default = \"all\" }"),
        "{tasks}"
    );
    assert!(tasks.contains("shell = [\"bash\", \"-c\"]"), "{tasks}");

    // `cairn run test -- -q` runs what `just test -q` runs: check, build (with the default), test.
    test.run_with(&["run", "test", "--", "-q"]).success();
    assert_eq!(
        test.read("log.txt"),
        "check fast\nbuilding all with release\nhello\ntest -q\n"
    );
    std::fs::remove_file(test.path("log.txt")).expect("remove");
    test.run_with(&["run", "build:web"]).success();
    assert_eq!(
        test.read("log.txt"),
        "check fast\nbuilding web with release\nhello\n"
    );
    // A `-` line's failure is ignored; a shebang recipe runs its interpreter; an alias runs its recipe.
    test.run_with(&["run", "lint", "script", "b"]).success();
    assert!(test.read("log.txt").contains("lint went on"));
    assert_eq!(test.read("script.txt"), "from python\n");
    // `just` alone runs the first recipe: so does `cairn run`.
    test.run_with(&["run"]).success();
}

#[test]
fn a_justfile_that_just_rejects_is_reported_with_justs_words() {
    let Some(just) = just() else { return };
    let test = Test::new()
        .file("justfile", "build:\n    echo {{nope}}\n")
        .env("CAIRN_JUST", &just);
    test.run_with(&["import", "justfile"])
        .status(2)
        .stderr_has("is not a valid justfile")
        .stderr_has("nope");
    assert!(!test.path("tasks.toml").exists());
}

const TASKFILE: &str = r#"
version: '3'

vars:
  OUT: build/app.txt

env:
  MODE: release

tasks:
  default:
    deps: [build]

  build:
    desc: Assemble the app
    sources:
      - 'src/**/*.txt'
    generates:
      - '{{.OUT}}'
    cmds:
      - mkdir -p build
      - cat src/*.txt > {{.OUT}}
      - echo "$MODE" >> {{.OUT}}

  test:
    deps: [build]
    cmds:
      - grep -q release {{.OUT}}
      - cmd: false
        ignore_error: true
      - task: notify

  notify:
    cmds:
      - echo notified > notified.txt
    preconditions:
      - test -d build
"#;

#[test]
fn a_taskfile_becomes_cached_tasks_where_it_declares_sources_and_generates() {
    let test = Test::new()
        .file("Taskfile.yml", TASKFILE)
        .file("src/a.txt", "a\n");
    test.run_with(&["import", "Taskfile.yml"])
        .success()
        .stderr_has("task `notify`: `preconditions`");
    let tasks = test.read("tasks.toml");
    assert!(tasks.contains("inputs = [\"src/**/*.txt\"]"), "{tasks}");
    assert!(tasks.contains("outputs = [\"{{OUT}}\"]"), "{tasks}");
    test.run_with(&["run", "test"]).success();
    assert_eq!(test.read("build/app.txt"), "a\nrelease\n");
    assert_eq!(test.read("notified.txt"), "notified\n");
    // go-task skipped an up-to-date build; here it is a cache hit.
    test.run_with(&["run", "build"]).success().cached(1);
}

#[test]
fn an_npm_workspace_with_turbo_becomes_package_tasks_with_turbos_graph() {
    let test = Test::new()
        .file(
            "package.json",
            r#"{ "name": "mono", "private": true, "workspaces": ["apps/*", "packages/*"],
                 "scripts": { "build": "turbo run build", "format": "echo formatted > formatted.txt" } }"#,
        )
        .file(
            "apps/web/package.json",
            r#"{ "name": "web", "scripts": { "build": "mkdir -p dist && cat ../../packages/ui/dist/ui.txt > dist/web.txt", "dev": "sleep 1000" },
                 "dependencies": { "ui": "*" } }"#,
        )
        .file("apps/web/index.js", "web\n")
        .file(
            "packages/ui/package.json",
            r#"{ "name": "ui", "scripts": { "build": "mkdir -p dist && echo ui > dist/ui.txt" } }"#,
        )
        .file("packages/ui/index.js", "ui\n")
        .file(
            "turbo.json",
            r#"{ "tasks": {
                  "build": { "dependsOn": ["^build"], "outputs": ["dist/**"] },
                  "dev": { "cache": false, "persistent": true } } }"#,
        );
    test.run_with(&["import", "package.json"]).success();
    let tasks = test.read("tasks.toml");
    assert!(tasks.contains("[tasks.\"web:build\"]"), "{tasks}");
    assert!(tasks.contains("deps = [\"ui:build\"]"), "{tasks}");
    assert!(tasks.contains("service = true"), "{tasks}");
    // The root's `turbo run build` is the group of every package's build.
    assert!(
        tasks.contains("deps = [\"web:build\", \"ui:build\"]"),
        "{tasks}"
    );
    let graph = test
        .run_with(&["graph", "build", "--format", "json"])
        .success();
    assert!(graph.stdout.contains("ui:build"), "{}", graph.stdout);

    let Ok(npm) = std::process::Command::new("npm").arg("--version").output() else {
        assert!(std::env::var_os("CI").is_none(), "npm is missing");
        return;
    };
    assert!(npm.status.success());
    test.run_with(&["run", "build"]).success();
    assert_eq!(test.read("apps/web/dist/web.txt"), "ui\n");
    test.run_with(&["run", "build"]).success().cached(2);
}

#[test]
fn import_never_overwrites_a_tasks_toml_unless_asked() {
    let test = Test::new()
        .tasks("[tasks.mine]\nrun = \"true\"\n")
        .file("Taskfile.yml", TASKFILE);
    test.run_with(&["import", "Taskfile.yml"])
        .status(2)
        .stderr_has("exists already")
        .stderr_has("--force");
    assert!(test.read("tasks.toml").contains("[tasks.mine]"));
    test.run_with(&["import", "Taskfile.yml", "--output", "-"])
        .success()
        .stdout_has("[tasks.build]");
    test.run_with(&["import", "Taskfile.yml", "--force"])
        .success();
    assert!(test.read("tasks.toml").contains("[tasks.build]"));
}

#[test]
fn a_file_of_no_known_format_is_named_with_the_ones_cairn_reads() {
    let test = Test::new().file("Makefile", "all:\n\ttrue\n");
    test.run_with(&["import", "Makefile"])
        .status(2)
        .stderr_has("`Makefile` is not a file cairn can import")
        .stderr_has("Taskfile.yml");
}

#[test]
fn a_taskfile_that_is_not_yaml_is_reported_with_its_place() {
    let test = Test::new().file("Taskfile.yml", "version: '3'\ntasks:\n  build: [unclosed\n");
    test.run_with(&["import", "Taskfile.yml"])
        .status(2)
        .stderr_has("is not a valid Taskfile (YAML)")
        .stderr_has("line");
}
