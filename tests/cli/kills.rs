//! Kill tests: a rotation resume killed at any point, temp files a killed cairn leaves, and two runs that
//! share one cache, one of them killed. Each kill is bounded (tens of kills, a second or so each).

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const ALEX: &str = "age1qwrzj4h9tsgtl525zf9x0g9lkl39pcyyyfeutdku57pkrjytxdssreuu26";

/// A small deterministic generator of kill delays (xorshift), so a failing round can be replayed.
fn random_below(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |bound| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    }
}

fn vectors() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/sops")
}

/// Six encrypted files in the three formats, and alex's identity.
fn secrets_project() -> Test {
    let test = Test::new().file(
        ".sops.yaml",
        &format!("creation_rules:\n  - path_regex: ^secrets/\n    age: {ALEX}\n"),
    );
    for i in 0..2 {
        for name in ["deploy.yaml", "app.json", "app.env"] {
            let text = std::fs::read_to_string(vectors().join("plain").join(name)).expect("plain");
            test.write(&format!("secrets/s{i}/{name}"), &text);
        }
    }
    let key = vectors().join("keys/alex.txt");
    let test = test.env("SOPS_AGE_KEY_FILE", key.to_str().expect("utf-8"));
    for i in 0..2 {
        for name in ["deploy.yaml", "app.json", "app.env"] {
            test.run_with(&["secrets", "encrypt", &format!("secrets/s{i}/{name}")])
                .success();
        }
    }
    test
}

fn secret_files(test: &Test) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = walk(&test.path("secrets"))
        .into_iter()
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

fn contents(files: &[std::path::PathBuf]) -> Vec<Vec<u8>> {
    files
        .iter()
        .map(|f| std::fs::read(f).expect("read"))
        .collect()
}

/// Each file's values, as `cairn secrets get` shows them (one key each is enough to prove it opens).
fn opens(test: &Test) {
    for i in 0..2 {
        for (name, key) in [
            ("deploy.yaml", "api_token"),
            ("app.json", "token"),
            ("app.env", "API_TOKEN"),
        ] {
            test.run_with(&["secrets", "get", &format!("secrets/s{i}/{name}"), key])
                .success();
        }
    }
}

#[test]
fn a_resume_killed_at_any_step_leaves_a_journal_until_every_file_is_rotated() {
    let test = secrets_project();
    let files = secret_files(&test);
    let mut kills = 0;
    for resume_step in 1.. {
        let before = contents(&files);
        // A rotation killed right after its journal is written: every file is still on its old data key.
        let run = test
            .command_with(&["secrets", "rotate"])
            .env("CAIRN_FAILPOINT", "rotate:1")
            .output()
            .expect("runs");
        assert!(!run.status.success());
        assert_eq!(contents(&files), before, "nothing was rotated yet");
        let resumed = test
            .command_with(&["secrets", "rotate", "--resume"])
            .env("CAIRN_FAILPOINT", format!("rotate:{resume_step}"))
            .output()
            .expect("runs");
        let journal = test.path(".cairn/secrets/rotate.journal");
        if resumed.status.success() {
            assert!(!journal.exists());
            break;
        }
        kills += 1;
        // Whatever the moment: either a journal says what is left, or every file has its new data key.
        let now = contents(&files);
        let rotated = now.iter().zip(&before).filter(|(a, b)| a != b).count();
        assert!(
            journal.exists() || rotated == files.len(),
            "resume killed at step {resume_step}: no journal, {rotated} of {} files rotated",
            files.len()
        );
        opens(&test);
        // A resume of the resume finishes it.
        test.run_with(&["secrets", "rotate", "--resume"]).success();
        assert!(!journal.exists());
        let after = contents(&files);
        assert!(
            after.iter().zip(&before).all(|(a, b)| a != b),
            "every file has a new data key after step {resume_step}"
        );
        opens(&test);
        test.run_with(&["secrets", "doctor"]).success();
    }
    assert!(
        kills >= 6,
        "the resume's failpoints cover its steps ({kills} kills)"
    );
    // Nothing to resume: said plainly, not as an I/O error.
    test.run_with(&["secrets", "rotate", "--resume"])
        .status(1)
        .stderr_has("there is no interrupted rotation to resume or abort");
}

#[test]
fn rotations_and_resumes_killed_at_random_moments_lose_nothing() {
    let test = secrets_project();
    let files = secret_files(&test);
    let original = contents(&files);
    let journal = test.path(".cairn/secrets/rotate.journal");
    let mut next = random_below(0x9e37_79b9);
    for round in 0..20 {
        let args: &[&str] = if journal.exists() {
            &["secrets", "rotate", "--resume"]
        } else {
            &["secrets", "rotate"]
        };
        let mut child = test
            .command_with(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(next(120)));
        // SAFETY: killing our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        opens(&test);
        let doctor = test.run_with(&["secrets", "doctor"]);
        if !journal.exists() {
            assert_eq!(doctor.status, 0, "round {round}: {}", doctor.stdout);
        } else {
            assert!(
                doctor.stdout.contains("interrupted rotation is pending"),
                "round {round}"
            );
        }
    }
    if journal.exists() {
        test.run_with(&["secrets", "rotate", "--resume"]).success();
    }
    opens(&test);
    assert_ne!(contents(&files), original, "rotations happened");
    let leftovers: Vec<_> = walk(&test.path("secrets"))
        .into_iter()
        .chain(walk(&test.path(".cairn/secrets")))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".tmp"))
        })
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

/// A pid no process has (above Linux's and macOS's limits).
const DEAD_PID: u32 = 4_194_305;

#[test]
fn temp_files_of_killed_writers_are_swept_by_the_next_command_and_stuck_ones_reported() {
    let test = secrets_project();
    test.write(
        "tasks.toml",
        "[tasks.build]\nrun = \"echo built\"\ninputs = [\"tasks.toml\"]\n",
    );
    test.run_with(&["run", "build"]).success();
    let stat_temp = test.path(&format!(".cairn/cache/.stat-index.tmp.{DEAD_PID}.3"));
    let journal_temp = test.path(&format!(".cairn/secrets/.rotate.journal.tmp.{DEAD_PID}.0"));
    let live_temp = test.path(&format!(
        ".cairn/cache/.stat-index.tmp.{}.0",
        std::process::id()
    ));
    std::fs::create_dir_all(test.path(".cairn/secrets")).expect("mkdir");
    for path in [&stat_temp, &journal_temp, &live_temp] {
        std::fs::write(path, "half-written").expect("write");
    }
    test.run_with(&["run", "build"]).success().cached(1);
    assert!(!stat_temp.exists(), "the next run swept the cache's");
    assert!(
        live_temp.exists(),
        "a live writer's temp file is left alone"
    );
    test.run_with(&["secrets", "doctor"]).success();
    assert!(!journal_temp.exists(), "doctor swept the journal's");
    // One that cannot be removed (here a directory by that name) is reported, not ignored.
    let stuck = test.path(&format!(".cairn/cache/.stat-index.tmp.{DEAD_PID}.9"));
    std::fs::create_dir_all(stuck.join("inside")).expect("mkdir");
    test.run_with(&["cache", "stats"]).success().stdout_has(
        ".stat-index.tmp.4194305.9 (a temp file a killed cairn left, which cannot be removed",
    );
    let stuck = test.path(&format!(".cairn/secrets/.rotate.journal.tmp.{DEAD_PID}.9"));
    std::fs::create_dir_all(stuck.join("inside")).expect("mkdir");
    test.run_with(&["secrets", "doctor"])
        .status(1)
        .stdout_has(".rotate.journal.tmp.4194305.9: a temp file a killed cairn left");
}

const SHARED: &str = r#"
[tasks."work:{n}"]
params.n = { values = ["0","1","2","3","4","5","6","7","8","9","10","11","12","13","14","15","16","17","18","19","20","21","22","23","24","25","26","27","28","29","30","31","32","33","34","35","36","37","38","39","40","41","42","43","44","45","46","47","48","49"] }
run = "sleep 0.2; echo {{n}} >> executions.log; mkdir -p out && echo result-{{n}} > out/{{n}}.txt"
inputs = ["src/**"]
outputs = ["out/{{n}}.txt"]

[tasks.all]
deps = ["work:{n}"]
"#;

fn shared_project() -> Test {
    let all: Vec<String> = (0..50).map(|n| format!("\"work:{n}\"")).collect();
    Test::new()
        .tasks(&SHARED.replace(
            "deps = [\"work:{n}\"]",
            &format!("deps = [{}]", all.join(", ")),
        ))
        .file("src/input.txt", "input\n")
}

fn spawn_run(test: &Test, args: &[&str]) -> Child {
    test.command_with(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

fn executions(test: &Test) -> Vec<String> {
    test.read("executions.log")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn two_concurrent_runs_execute_each_miss_once() {
    let test = shared_project();
    let (first, second) = (
        spawn_run(&test, &["run", "all", "-j4"]),
        spawn_run(&test, &["run", "all", "-j4"]),
    );
    let mut waited = false;
    for child in [first, second] {
        let output = child.wait_with_output().expect("waits");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        waited |=
            stderr.contains("another cairn run is running it (same key): waiting for its result");
    }
    let mut ran = executions(&test);
    assert_eq!(ran.len(), 50, "each of the 50 misses ran once: {ran:?}");
    ran.sort();
    ran.dedup();
    assert_eq!(ran.len(), 50);
    assert!(waited, "one run said it waited for the other");
    for n in 0..50 {
        assert_eq!(test.read(&format!("out/{n}.txt")), format!("result-{n}\n"));
    }
    // --no-cache runs stay independent: they neither wait nor take results.
    let (first, second) = (
        spawn_run(&test, &["run", "all", "-j4", "--no-cache"]),
        spawn_run(&test, &["run", "all", "-j4", "--no-cache"]),
    );
    for child in [first, second] {
        assert!(child.wait_with_output().expect("waits").status.success());
    }
    assert_eq!(executions(&test).len(), 150);
}

/// A project with one cached task that takes two seconds and logs each execution.
fn slow_project() -> Test {
    Test::new()
        .tasks("[tasks.slow]\nrun = \"echo started >> executions.log; sleep 2; echo done > out.txt\"\ninputs = [\"src/**\"]\noutputs = [\"out.txt\"]\n")
        .file("src/input.txt", "input\n")
}

/// Waits until a run has started the task (it holds the task's claim from then on).
fn wait_until_started(test: &Test) {
    let began = Instant::now();
    while executions(test).is_empty() {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "the first run started its task"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killing_the_run_that_holds_a_task_makes_the_waiting_run_do_it() {
    let test = slow_project();
    let mut holder = spawn_run(&test, &["run", "slow"]);
    wait_until_started(&test);
    let waiter = spawn_run(&test, &["run", "slow"]);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: killing our own child; its task lives on in its own process group, holding nothing.
    unsafe { libc::kill(holder.id() as i32, libc::SIGKILL) };
    let _ = holder.wait();
    let output = waiter.wait_with_output().expect("waits");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("waiting for its result"), "{stderr}");
    assert_eq!(executions(&test).len(), 2, "the waiting run ran it itself");
    assert_eq!(test.read("out.txt"), "done\n");
}

#[test]
fn concurrent_runs_killed_at_random_moments_leave_a_cache_both_can_use() {
    let test = shared_project();
    let mut next = random_below(0x2545_f491);
    for round in 0..10 {
        test.write("src/input.txt", &format!("input {round}\n"));
        let mut victim = spawn_run(&test, &["run", "all", "-j4"]);
        let survivor = spawn_run(&test, &["run", "all", "-j4"]);
        std::thread::sleep(Duration::from_millis(100 + next(1500)));
        // SAFETY: killing our own child.
        unsafe { libc::kill(victim.id() as i32, libc::SIGKILL) };
        let _ = victim.wait();
        let output = survivor.wait_with_output().expect("waits");
        assert!(
            output.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        test.run_with(&["run", "all", "-j4"]).success().cached(50);
        for n in 0..50 {
            assert_eq!(test.read(&format!("out/{n}.txt")), format!("result-{n}\n"));
        }
    }
}

#[test]
fn a_run_waiting_for_another_says_so_on_its_status_line() {
    let test = slow_project();
    let holder = spawn_run(&test, &["run", "slow"]);
    wait_until_started(&test);
    let screen = in_terminal(&test, "run slow --output prefixed");
    assert!(holder.wait_with_output().expect("waits").status.success());
    let Some(screen) = screen else {
        return;
    };
    assert!(screen.contains("running: slow (waiting)"), "{screen}");
    assert_eq!(
        executions(&test).len(),
        1,
        "the waiting run took the result"
    );
}
