//! `cairn watch`: real files, real processes, and a pseudo-terminal for Ctrl-C.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::support::Test;

/// How long a test waits for cairn to react before it fails (a bound on a hang, not a measurement).
const PATIENCE: Duration = Duration::from_secs(20);

/// cairn's output, gathered as it comes.
#[derive(Clone, Default)]
struct Screen(Arc<Mutex<String>>);

impl Screen {
    fn gather(&self, mut from: impl Read + Send + 'static) {
        let screen = self.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = from.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                if let Ok(mut text) = screen.0.lock() {
                    text.push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            }
        });
    }

    fn text(&self) -> String {
        self.0.lock().map(|t| t.clone()).unwrap_or_default()
    }

    fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }

    /// Waits until `needle` has appeared `times` times.
    fn wait_for(&self, needle: &str, times: usize) {
        let start = Instant::now();
        while self.count(needle) < times {
            assert!(
                start.elapsed() < PATIENCE,
                "waited for {times}× {needle:?}; cairn said:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The nth "watching" line: cairn is idle after its nth run.
    fn idle(&self, times: usize) {
        self.wait_for("for changes (Ctrl-C to stop)", times);
    }
}

struct Watching {
    child: Child,
    screen: Screen,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn watch(test: &Test, args: &[&str]) -> Watching {
    let mut child = test
        .command_with(&[&["watch"], args].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn starts");
    let screen = Screen::default();
    screen.gather(child.stdout.take().expect("stdout"));
    screen.gather(child.stderr.take().expect("stderr"));
    Watching { child, screen }
}

const TASKS: &str = r#"
[tasks.gen]
run = "sh -c 'mkdir -p out && cat src/*.txt > out/all && echo gen-ran'"
inputs = ["src/*.txt"]
outputs = ["out/all"]

[tasks.lint]
run = "sh -c 'echo lint-ran'"
inputs = ["src/**"]

[tasks.docs]
run = "sh -c 'echo docs-ran'"
inputs = ["docs/**"]

[tasks.package]
run = "sh -c 'echo package-ran'"
deps = ["gen"]

[tasks.all]
deps = ["package", "lint", "docs"]
"#;

fn project() -> Test {
    let test = Test::new()
        .tasks(TASKS)
        .file(".gitignore", "src/ignored/\n")
        .file("src/a.txt", "a\n")
        .file("docs/guide.md", "guide\n");
    // A repository, so that .gitignore counts.
    let status = std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(test.path(""))
        .status()
        .expect("git runs");
    assert!(status.success());
    test
}

#[test]
fn an_edit_reruns_the_tasks_that_read_it_and_their_dependents_and_an_undo_is_a_cache_hit() {
    let test = project();
    let w = watch(&test, &["all"]);
    w.screen.idle(1);
    for task in ["| gen-ran", "| lint-ran", "| docs-ran", "| package-ran"] {
        assert_eq!(w.screen.count(task), 1, "{}", w.screen.text());
    }
    // src/a.txt (gen, lint) and docs/guide.md (docs).
    assert!(
        w.screen.text().contains("watching 2 files"),
        "{}",
        w.screen.text()
    );

    test.write("src/a.txt", "b\n");
    w.screen.idle(2);
    assert!(
        w.screen.text().contains("changed: src/a.txt"),
        "{}",
        w.screen.text()
    );
    // gen and lint read it, package depends on gen; docs is left alone.
    assert_eq!(w.screen.count("| gen-ran"), 2, "{}", w.screen.text());
    assert_eq!(w.screen.count("| lint-ran"), 2, "{}", w.screen.text());
    assert_eq!(w.screen.count("| package-ran"), 2, "{}", w.screen.text());
    assert_eq!(w.screen.count("| docs-ran"), 1, "{}", w.screen.text());

    // Undo: the cache has the first results (replayed, not run).
    let hits_before = w.screen.count("cache hit");
    test.write("src/a.txt", "a\n");
    w.screen.idle(3);
    assert!(
        w.screen.count("cache hit") >= hits_before + 2,
        "{}",
        w.screen.text()
    );
    assert_eq!(test.read("out/all"), "a\n");
}

#[test]
fn outputs_ignored_files_and_unrelated_files_never_start_a_run() {
    let test = project();
    let w = watch(&test, &["all"]);
    w.screen.idle(1);
    // gen's output, a git-ignored file, a file no task reads, cairn's own directory.
    test.write("out/all", "tampered\n");
    test.write("src/ignored/x.txt", "x\n");
    test.write("notes.txt", "x\n");
    test.write(".cairn/scratch", "x\n");
    // A real change after them: the run it starts is the second, so nothing before it started one.
    test.write("docs/guide.md", "guide 2\n");
    w.screen.idle(2);
    let text = w.screen.text();
    assert!(text.contains("changed: docs/guide.md\n"), "{text}");
    assert_eq!(w.screen.count("changed:"), 1, "{text}");
    assert_eq!(w.screen.count("| docs-ran"), 2, "{text}");
    assert_eq!(w.screen.count("| gen-ran"), 1, "{text}");
}

#[test]
fn a_broken_tasks_toml_shows_its_error_and_the_next_good_save_runs_what_changed() {
    let test = project();
    let w = watch(&test, &["all"]);
    w.screen.idle(1);
    test.write("tasks.toml", &TASKS.replace("[tasks.docs]", "[tasks.docs"));
    w.screen.wait_for("tasks.toml does not load", 1);
    assert!(
        w.screen.text().contains("tasks.toml:"),
        "{}",
        w.screen.text()
    );
    // An edit while it is broken is not lost.
    test.write("docs/guide.md", "guide 2\n");
    std::thread::sleep(Duration::from_millis(300));
    test.write(
        "tasks.toml",
        &TASKS.replace("echo lint-ran", "echo lint-ran-again"),
    );
    w.screen.wait_for("lint-ran-again", 1);
    // Idle after the first run, the broken save, the edit while broken, and the run after the fix.
    w.screen.idle(4);
    // lint's command changed, docs' input changed; gen and package did not change.
    assert_eq!(w.screen.count("| docs-ran"), 2, "{}", w.screen.text());
    assert_eq!(w.screen.count("| gen-ran"), 1, "{}", w.screen.text());
}

#[test]
fn watch_refuses_tasks_that_ask_for_confirmation() {
    let test = Test::new().tasks("[tasks.deploy]\nrun = \"true\"\nconfirm = \"Deploy?\"\n");
    test.run_with(&["watch", "deploy"])
        .status(2)
        .stderr_has("`deploy` asks for confirmation, so `cairn watch` does not run it");
}

#[test]
fn a_task_that_depends_on_a_service_is_refused_at_load() {
    let test = Test::new().tasks(
        "[tasks.serve]\nrun = \"sleep 100\"\nservice = true\n[tasks.e2e]\nrun = \"true\"\ndeps = [\"serve\"]\n",
    );
    test.run_with(&["check"])
        .status(1)
        .stderr_has("`e2e` depends on `serve`, a service");
}

/// cairn in a pseudo-terminal of its own, as from a shell: Ctrl-C is the terminal's, not a signal we send.
struct InTerminal {
    child: Child,
    master: std::fs::File,
    screen: Screen,
}

impl InTerminal {
    fn start(test: &Test, args: &[&str]) -> InTerminal {
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty fills two descriptors we then own.
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
        // SAFETY: both descriptors were just opened and are owned here.
        let (master, slave) = unsafe {
            use std::os::fd::FromRawFd;
            (
                std::fs::File::from_raw_fd(master),
                std::fs::File::from_raw_fd(slave),
            )
        };
        let mut command = test.command_with(&[&["watch"], args].concat());
        command
            .stdin(slave.try_clone().expect("dup"))
            .stdout(slave.try_clone().expect("dup"))
            .stderr(slave);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("cairn starts");
        let screen = Screen::default();
        screen.gather(master.try_clone().expect("dup"));
        InTerminal {
            child,
            master,
            screen,
        }
    }

    fn ctrl_c(&mut self) {
        self.master.write_all(b"\x03").expect("type Ctrl-C");
    }

    fn wait(&mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < PATIENCE,
                "cairn did not stop:\n{}",
                self.screen.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether a process of this id is still there.
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn a_service_restarts_once_per_relevant_change_and_ctrl_c_leaves_no_process_behind() {
    let tasks = r#"
[tasks.gen]
run = "sh -c 'mkdir -p out && cat src/*.txt > out/all'"
inputs = ["src/*.txt"]
outputs = ["out/all"]

[tasks.lint]
run = "true"
inputs = ["docs/**"]

[tasks.serve]
service = true
deps = ["gen"]
inputs = ["server.sh"]
run = "sh server.sh"

[tasks.dev]
deps = ["serve", "lint"]
"#;
    // The server starts a child of its own, as dev servers do: the whole group must go.
    let test = Test::new()
        .tasks(tasks)
        .file("src/a.txt", "a\n")
        .file("docs/guide.md", "guide\n")
        .file(
            "server.sh",
            "echo \"serving $(cat out/all)\"\nsleep 1000 &\necho $! >> pids\necho $$ >> pids\nexec sleep 1001\n",
        );
    let mut w = InTerminal::start(&test, &["dev"]);
    w.screen.wait_for("serving a", 1);
    w.screen.idle(1);

    // A dependency's input: gen runs, the server restarts once.
    test.write("src/a.txt", "b\n");
    w.screen.wait_for("serving b", 1);
    w.screen.idle(2);
    assert_eq!(
        w.screen.count("restarting `serve`"),
        1,
        "{}",
        w.screen.text()
    );

    // Something only lint reads: the server keeps running.
    test.write("docs/guide.md", "guide 2\n");
    w.screen.idle(3);
    assert_eq!(
        w.screen.count("restarting `serve`"),
        1,
        "{}",
        w.screen.text()
    );
    assert_eq!(w.screen.count("serving"), 2, "{}", w.screen.text());

    w.ctrl_c();
    let code = w.wait();
    assert_eq!(code, 130, "{}", w.screen.text());
    // Neither server (the first, restarted, nor the second) nor their background children outlived cairn.
    let pids: Vec<i32> = test
        .read("pids")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 4, "two servers, each with a child");
    let start = Instant::now();
    while pids.iter().any(|&pid| alive(pid)) {
        assert!(
            start.elapsed() < PATIENCE,
            "left behind: {:?}",
            pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_change_during_a_run_is_queued_and_starts_the_next_run() {
    let test = Test::new()
        .tasks("[tasks.slow]\nrun = \"sh -c 'sleep 1; cat src/*.txt; echo slow-done'\"\ninputs = [\"src/**\"]\ncache = false\n")
        .file("src/a.txt", "a\n");
    let w = watch(&test, &["slow"]);
    w.screen.idle(1);
    test.write("src/a.txt", "a2\n");
    w.screen.wait_for("changed: src/a.txt", 1);
    // The second run is under way (its task sleeps): this change must not be lost.
    test.write("src/b.txt", "b\n");
    w.screen.idle(3);
    let text = w.screen.text();
    assert!(text.contains("changed: src/b.txt"), "{text}");
    assert_eq!(w.screen.count("slow-done"), 3, "{text}");
    // The runs did not overlap: each ended before the next began.
    assert!(text.contains("| b\n"), "{text}");
}

#[test]
fn targets_without_inputs_are_watched_through_tasks_toml_only_and_cairn_says_so() {
    let test = Test::new().tasks("[tasks.hello]\nrun = \"echo hello-ran\"\n");
    let w = watch(&test, &["hello"]);
    w.screen.idle(1);
    assert!(
        w.screen
            .text()
            .contains("declare no `inputs` that match a file"),
        "{}",
        w.screen.text()
    );
    // tasks.toml still counts: a new command runs.
    test.write("tasks.toml", "[tasks.hello]\nrun = \"echo hello-again\"\n");
    w.screen.wait_for("hello-again", 1);
}
