//! End-to-end tests of the cache: hits, every kind of miss, restores, replay, `why`, incremental tasks,
//! damage, concurrency and crashes.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

const BUILD: &str = r#"
[tasks.build]
run = "mkdir -p out && cat src/*.txt > out/all.txt && cp src/tool.sh out/tool.sh && echo built from $(ls src | wc -l) files && echo to-stderr >&2"
inputs = ["src/**"]
outputs = ["out/**"]
"#;

fn project() -> Test {
    let t = Test::new()
        .tasks(BUILD)
        .file("src/a.txt", "alpha\n")
        .file("src/b.txt", "beta\n")
        .file("src/tool.sh", "#!/bin/sh\necho tool\n");
    std::fs::set_permissions(
        t.path("src/tool.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    t.args(&["run", "build"])
}

#[test]
fn second_run_with_no_change_is_a_hit_that_replays_the_log() {
    let t = project();
    t.run().success().cached(0).stdout_has("built from 3 files");
    t.run()
        .success()
        .cached(1)
        .stdout_has("built from 3 files")
        .stderr_has("to-stderr")
        .stderr_has("`build`: cache hit, replaying output");
}

#[test]
fn outputs_are_restored_byte_identical_with_their_modes() {
    let t = project();
    t.run().success();
    let before = std::fs::read(t.path("out/all.txt")).expect("output");
    std::fs::remove_dir_all(t.path("out")).expect("remove outputs");
    t.run().success().cached(1);
    assert_eq!(
        std::fs::read(t.path("out/all.txt")).expect("restored"),
        before
    );
    let mode = std::fs::metadata(t.path("out/tool.sh"))
        .expect("restored")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
}

#[test]
fn content_change_is_a_miss() {
    let t = project();
    t.run().success();
    t.write("src/a.txt", "ALPHA\n");
    t.run().success().cached(0);
    assert_eq!(t.read("out/all.txt"), "ALPHA\nbeta\n");
}

#[test]
fn exec_bit_change_is_a_miss() {
    let t = project();
    t.run().success();
    std::fs::set_permissions(t.path("src/a.txt"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    t.run().success().cached(0);
}

#[test]
fn renamed_input_is_a_miss() {
    let t = project();
    t.run().success();
    std::fs::rename(t.path("src/b.txt"), t.path("src/c.txt")).expect("rename");
    t.run().success().cached(0);
}

#[test]
fn touching_mtime_only_is_still_a_hit() {
    let t = project();
    t.run().success();
    std::thread::sleep(Duration::from_millis(20));
    let file = std::fs::File::options()
        .append(true)
        .open(t.path("src/a.txt"))
        .expect("open");
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .expect("touch");
    t.run().success().cached(1);
}

#[test]
fn declared_env_value_change_is_a_miss_and_why_names_it_without_its_value() {
    let t = Test::new()
        .tasks("[tasks.show]\nrun = \"echo $MODE > mode.txt\"\ninputs = [\"tasks.toml\"]\nenv_hash = [\"MODE\"]\noutputs = [\"mode.txt\"]\n")
        .env("MODE", "first-secret-value")
        .args(&["run", "show"]);
    t.run().success();
    t.run().success().cached(1);
    let t = t.env("MODE", "second-secret-value");
    let why = t.run_with(&["why", "show"]).success();
    assert!(
        why.stdout.contains("env: the value of `MODE` changed"),
        "{}",
        why.stdout
    );
    assert!(
        !why.stdout.contains("secret-value"),
        "why must not show values: {}",
        why.stdout
    );
    t.run().success().cached(0);
    assert_eq!(t.read("mode.txt"), "second-secret-value\n");
}

#[test]
fn undeclared_variables_do_not_reach_the_task() {
    let t = Test::new()
        .tasks(
            "[tasks.strict]\nrun = \"echo strict=${LEAK:-unset}\"\n[tasks.opted]\nrun = \"echo passed=${LEAK:-unset}\"\nenv_pass = [\"LEAK\"]\n[tasks.all]\nrun = \"echo all=${LEAK:-unset}\"\nenv_pass = [\"*\"]\n",
        )
        .env("LEAK", "visible")
        .args(&["run", "strict", "opted", "all"]);
    t.run()
        .success()
        .stdout_has("strict=unset")
        .stdout_has("passed=visible")
        .stdout_has("all=visible");
}

#[test]
fn changed_param_is_a_miss() {
    let t = Test::new()
        .tasks("[tasks.\"gen:{n}\"]\nparams.n = { values = [\"1\", \"2\"] }\nrun = \"echo {{n}}\"\ninputs = [\"tasks.toml\"]\n")
        .args(&["run", "gen:1"]);
    t.run().success();
    t.run().success().cached(1);
    t.run_with(&["run", "gen:2"])
        .success()
        .cached(0)
        .stdout_has("2");
}

#[test]
fn changed_dependency_is_a_miss_for_its_dependents() {
    let t = Test::new()
        .tasks(
            "[tasks.gen]\nrun = \"cat in.txt > gen.txt\"\ninputs = [\"in.txt\"]\noutputs = [\"gen.txt\"]\n[tasks.use]\ndeps = [\"gen\"]\nrun = \"cat gen.txt\"\ninputs = [\"tasks.toml\"]\n",
        )
        .file("in.txt", "one\n")
        .args(&["run", "use"]);
    t.run().success();
    t.run().success().cached(2);
    t.write("in.txt", "two\n");
    let why = t.run_with(&["why", "use"]).success();
    assert!(
        why.stdout.contains("dependency `gen` changed"),
        "{}",
        why.stdout
    );
    t.run().success().cached(0).stdout_has("use | two");
}

#[test]
fn outputs_strategy_ignores_a_dependency_that_reproduced_the_same_files() {
    let t = Test::new()
        .tasks(
            "[tasks.gen]\nrun = \"head -c 3 in.txt > gen.txt\"\ninputs = [\"in.txt\"]\noutputs = [\"gen.txt\"]\n[tasks.use]\ndeps = [\"gen\"]\nrun = \"cat gen.txt\"\ninputs = [\"tasks.toml\"]\ndeps_strategy = \"outputs\"\n",
        )
        .file("in.txt", "abc-1\n")
        .args(&["run", "use"]);
    t.run().success();
    t.write("in.txt", "abc-2\n");
    // `gen` reruns (its input changed) and writes the same three bytes: `use` stays a hit.
    t.run().success().cached(1);
}

#[test]
fn why_names_the_changed_file() {
    let t = project();
    t.run().success();
    t.write("src/b.txt", "BETA\n");
    let why = t.run_with(&["why", "build"]).success();
    assert!(
        why.stdout.contains("input changed: src/b.txt"),
        "{}",
        why.stdout
    );
    assert!(!why.stdout.contains("src/a.txt"), "{}", why.stdout);
}

#[test]
fn dry_run_predicts_hits_and_misses() {
    let t = project();
    t.run_with(&["run", "build", "--dry-run"])
        .success()
        .stdout_has("cache miss");
    t.run().success();
    t.run_with(&["run", "build", "--dry-run"])
        .success()
        .stdout_has("cache hit");
}

#[test]
fn force_runs_on_a_hit_and_no_cache_neither_reads_nor_writes() {
    let t = project();
    t.run_with(&["run", "build", "--no-cache"])
        .success()
        .cached(0);
    t.run().success().cached(0);
    t.run_with(&["run", "build", "--force"])
        .success()
        .cached(0)
        .stderr_lacks("cache hit");
    t.run().success().cached(1);
}

#[test]
fn failed_tasks_are_never_cached() {
    let t = Test::new()
        .tasks("[tasks.flaky]\nrun = \"echo x >> count; test -f ok\"\ninputs = [\"tasks.toml\"]\n")
        .args(&["run", "flaky"]);
    t.run().status(1);
    t.run().status(1);
    assert_eq!(t.read("count").lines().count(), 2);
}

#[test]
fn flipped_byte_in_a_stored_blob_is_detected_and_replaced() {
    let t = project();
    t.run().success();
    let mut damaged = 0;
    for entry in walk(&t.path(".cairn/cache/blobs")) {
        let mut bytes = std::fs::read(&entry).expect("blob");
        if !entry.to_string_lossy().ends_with(".zst") && !bytes.is_empty() {
            bytes[0] ^= 0x20;
            std::fs::write(&entry, bytes).expect("write");
            damaged += 1;
        }
    }
    assert!(damaged > 0, "the build stores raw blobs");
    // Outputs already in place are not rewritten, so the blobs are only read (and checked) when needed.
    std::fs::remove_dir_all(t.path("out")).expect("remove outputs");
    t.run()
        .success()
        .cached(0)
        .stderr_has("is damaged")
        .stderr_has("treating it as a miss");
    // The new run stored a good entry again.
    t.run().success().cached(1);
    assert_eq!(t.read("out/all.txt"), "alpha\nbeta\n");
}

#[test]
fn restore_refuses_paths_outside_the_declared_outputs() {
    let t = project();
    t.run().success();
    for entry in walk(&t.path(".cairn/cache/entries")) {
        let text = std::fs::read_to_string(&entry).expect("manifest");
        std::fs::write(
            &entry,
            text.replace("\"out/all.txt\"", "\"../escaped.txt\""),
        )
        .expect("write");
    }
    t.run()
        .success()
        .cached(0)
        .stderr_has("refusing to restore `../escaped.txt`");
    assert!(!t
        .dir
        .path()
        .parent()
        .expect("parent")
        .join("escaped.txt")
        .exists());
}

#[test]
fn unmatched_input_pattern_is_a_warning() {
    Test::new()
        .tasks("[tasks.t]\nrun = \"true\"\ninputs = [\"docs/**/*.md\"]\n")
        .args(&["run", "t"])
        .run()
        .success()
        .stderr_has("input pattern `docs/**/*.md` matches no file");
}

#[test]
fn gitignored_files_are_not_inputs() {
    let t = Test::new()
        .tasks("[tasks.t]\nrun = \"true\"\ninputs = [\"**/*\"]\n")
        .file(".gitignore", "scratch/\n")
        .file("a.txt", "a")
        .args(&["run", "t"]);
    t.run().success();
    t.write("scratch/noise.txt", "changes all the time");
    t.run().success().cached(1);
}

#[test]
fn a_pattern_that_names_an_ignored_directory_takes_its_files() {
    // plugins/dist is ignored by git (built there), yet `plugins/dist/*.wasm` asks for those files by name.
    let t = Test::new()
        .tasks("[tasks.t]\nrun = \"true\"\ninputs = [\"plugins/dist/*.wasm\", \"**/*.txt\"]\n")
        .file("plugins/.gitignore", "dist/\n")
        .file("plugins/dist/a.wasm", "v1")
        .file(".gitignore", "scratch/\n")
        .file("a.txt", "a")
        .args(&["run", "t"]);
    t.run().success().stderr_lacks("matches no file");
    t.run().success().cached(1);
    t.write("plugins/dist/a.wasm", "v2");
    t.run().success().cached(0);
    // A wildcard reaching into an ignored directory from above still leaves it out.
    t.write("scratch/noise.txt", "changes all the time");
    t.run().success().cached(1);
}

#[test]
fn incremental_task_receives_exactly_the_changed_files() {
    let t = Test::new()
        .tasks(
            "[tasks.validate]\nrun = \"echo checking {{changed}}; cp $CAIRN_CHANGED_FILES last-list; ! grep -l BROKEN {{changed}}\"\ninputs = [\"**/*.nix\"]\nincremental = true\n",
        )
        .file("a.nix", "{ }\n")
        .file("m/b.nix", "{ }\n")
        .file("m/c.nix", "{ }\n")
        .args(&["run", "validate"]);
    t.run()
        .success()
        .stdout_has("checking a.nix m/b.nix m/c.nix");
    t.run().success().cached(1);
    // --force checks everything again, not the nothing that changed.
    t.run_with(&["run", "validate", "--force"])
        .success()
        .stdout_has("checking a.nix m/b.nix m/c.nix");
    t.write("m/b.nix", "{ x = 1; }\n");
    t.run().success().stdout_has("checking m/b.nix\n");
    assert_eq!(t.read("last-list"), "m/b.nix\n");
    // A failure keeps the files it was given "changed"; the others stay passed.
    t.write("m/c.nix", "BROKEN\n");
    t.run().status(1).stdout_has("checking m/c.nix\n");
    t.write("a.nix", "{ y = 2; }\n");
    t.run().status(1).stdout_has("checking a.nix m/c.nix\n");
    t.write("m/c.nix", "{ fixed = true; }\n");
    t.run().success().stdout_has("checking a.nix m/c.nix\n");
    // Content identical to what last passed needs no new check.
    t.write("m/b.nix", "{ }\n");
    t.run().success();
    t.write("m/b.nix", "{ x = 2; }\n");
    t.run().success().stdout_has("checking m/b.nix\n");
}

#[test]
fn dry_run_marks_where_an_incremental_task_gets_its_changed_files() {
    Test::new()
        .tasks("[tasks.v]\nrun = \"check {{changed}}\"\ninputs = [\"*.nix\"]\nincremental = true\n")
        .file("a.nix", "{ }\n")
        .args(&["run", "v", "--dry-run"])
        .run()
        .success()
        .stdout_has("$ check <changed inputs>");
}

#[test]
fn incremental_task_definition_change_rechecks_every_file() {
    let t = Test::new()
        .tasks("[tasks.validate]\nrun = \"echo checking {{changed}}\"\ninputs = [\"*.nix\"]\nincremental = true\n")
        .file("a.nix", "{ }\n")
        .file("b.nix", "{ }\n")
        .args(&["run", "validate"]);
    t.run().success();
    t.write("tasks.toml", "[tasks.validate]\nrun = \"echo re-checking {{changed}}\"\ninputs = [\"*.nix\"]\nincremental = true\n");
    t.run().success().stdout_has("re-checking a.nix b.nix");
}

#[test]
fn changed_placeholder_needs_incremental() {
    Test::new()
        .tasks("[tasks.v]\nrun = \"echo {{changed}}\"\ninputs = [\"*.nix\"]\n")
        .args(&["run", "v"])
        .run()
        .status(2)
        .stderr_has("unknown name `changed`")
        .stderr_has("`incremental = true`");
}

#[test]
fn cache_stats_clean_and_gc_manage_the_store() {
    let t = project();
    t.run().success();
    t.run_with(&["cache", "stats"])
        .success()
        .stdout_has("entries: 1");
    t.run_with(&["cache", "gc", "--max-size", "0"])
        .success()
        .stdout_has("removed 1 entries");
    t.run().success().cached(0);
    t.run_with(&["cache", "clean"])
        .success()
        .stdout_has("removed 1 entries");
    t.run_with(&["cache", "stats"])
        .success()
        .stdout_has("entries: 0");
    t.run_with(&["cache", "gc", "--max-size", "lots"])
        .status(2)
        .stderr_has("e.g. `5GiB`");
}

#[test]
fn two_processes_share_one_cache_safely() {
    let t = Test::new()
        .tasks(
            "[tasks.\"make:{n}\"]\nparams.n = { values = [\"1\", \"2\", \"3\", \"4\"] }\nrun = \"mkdir -p out && seq 1 2000 > out/{{n}}.txt && echo made {{n}}\"\ninputs = [\"tasks.toml\"]\noutputs = [\"out/{{n}}.txt\"]\n[tasks.all]\ndeps = [\"make:1\", \"make:2\", \"make:3\", \"make:4\"]\n",
        )
        .args(&["run", "all", "-j4"]);
    let spawn = || {
        t.command()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (first, second) = (spawn(), spawn());
    for child in [first, second] {
        let output = child.wait_with_output().expect("waits");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    t.run().success().cached(4);
}

#[test]
fn killing_cairn_at_any_moment_leaves_a_usable_cache() {
    let t = Test::new()
        .tasks(
            "[tasks.\"make:{n}\"]\nparams.n = { values = [\"1\", \"2\", \"3\", \"4\", \"5\", \"6\"] }\nrun = \"mkdir -p out/{{n}} && head -c 300000 /dev/urandom > out/{{n}}/blob && echo made {{n}}\"\ninputs = [\"tasks.toml\"]\noutputs = [\"out/{{n}}/**\"]\n[tasks.all]\ndeps = [\"make:1\", \"make:2\", \"make:3\", \"make:4\", \"make:5\", \"make:6\"]\n",
        )
        .args(&["run", "all", "-j2", "--force"]);
    // Kill points spread over the run, including while blobs and manifests are written.
    for delay_ms in [5u64, 15, 30, 45, 60, 80, 100, 130, 160, 200] {
        let mut child = t
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SAFETY: killing our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        for file in walk(&t.path(".cairn/cache/entries")) {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if name.starts_with('.') {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("manifest readable");
            assert!(
                serde_json::from_str::<serde_json::Value>(&text).is_ok(),
                "a manifest is whole: {name}"
            );
        }
    }
    // Whatever was stored is complete; what was not is simply missing. A normal run then completes.
    t.run_with(&["run", "all", "-j2"]).success();
    t.run_with(&["run", "all", "-j2"]).success().cached(6);
}

#[test]
fn an_edited_output_is_restored_on_a_hit_and_an_intact_one_is_left_alone() {
    let t = project();
    t.run().success();
    t.write("out/all.txt", "edited by hand\n");
    let untouched = std::fs::metadata(t.path("out/tool.sh"))
        .expect("output")
        .modified()
        .expect("mtime");
    std::thread::sleep(Duration::from_millis(20));
    t.run().success().cached(1);
    assert_eq!(t.read("out/all.txt"), "alpha\nbeta\n");
    let after = std::fs::metadata(t.path("out/tool.sh"))
        .expect("output")
        .modified()
        .expect("mtime");
    assert_eq!(
        untouched, after,
        "an output already in place is not rewritten"
    );
}

#[test]
fn a_cache_hit_does_not_wait_for_the_slot_a_running_command_holds() {
    // One slot (`-j 1`), held by `a-gate` until `hit`'s output exists: only a lookup and restore that need no
    // slot can put it there while the command runs (`a-gate` is first in the plan, so it starts first).
    let t = Test::new()
        .tasks(
            r#"
[tasks.a-gate]
run = "for i in $(seq 200); do [ -f out/hit.txt ] && exit 0; sleep 0.05; done; echo never restored; exit 1"

[tasks.hit]
run = "mkdir -p out && echo restored > out/hit.txt"
inputs = ["src/**"]
outputs = ["out/hit.txt"]

[tasks.all]
deps = ["a-gate", "hit"]
"#,
        )
        .file("src/in.txt", "x\n");
    t.run_with(&["run", "hit"]).success();
    std::fs::remove_file(t.path("out/hit.txt")).expect("remove the output");
    t.run_with(&["run", "all", "-j", "1"])
        .success()
        .cached(1)
        .stdout_lacks("never restored");
    assert_eq!(t.read("out/hit.txt"), "restored\n");
}

#[test]
fn a_miss_that_waited_for_a_slot_is_timed_from_when_it_got_one() {
    // `-j 1`: `a-slow` holds the slot for a second while `b-miss` looks in the cache beside it, misses and waits.
    // Its time in the run record starts when it gets the slot, not when its lookup began.
    let t = Test::new()
        .tasks(
            r#"
[tasks.a-slow]
run = "sleep 1"

[tasks.b-miss]
run = "true"
inputs = ["src/**"]
outputs = ["out/none"]

[tasks.all]
deps = ["a-slow", "b-miss"]
"#,
        )
        .file("src/in.txt", "x\n");
    t.run_with(&["run", "all", "-j", "1", "--summary", "summary.json"])
        .success()
        .cached(0);
    let summary: serde_json::Value =
        serde_json::from_str(&t.read("summary.json")).expect("summary");
    let task = |name: &str| {
        summary["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .find(|task| task["label"] == name)
            .cloned()
            .expect("task in the summary")
    };
    let (slow, miss) = (task("a-slow"), task("b-miss"));
    let ms = |task: &serde_json::Value, field: &str| task[field].as_f64().expect(field);
    assert!(
        ms(&miss, "started_ms") >= ms(&slow, "ended_ms") - 50.0,
        "b-miss started when the slot was free: {miss}\n{slow}"
    );
    assert!(
        ms(&miss, "duration_ms") < 500.0,
        "the wait is not its run time: {miss}"
    );
}
