//! The small builder every end-to-end test uses: a temporary project, the real binary, a cleared environment.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// A temporary project and a command line to run in it.
pub struct Test {
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    cwd: Option<PathBuf>,
    stdin_file: Option<PathBuf>,
    envs: Vec<(String, String)>,
}

/// Every tasks.toml a test writes that cairn's loader accepts must pass schema/tasks.schema.json too: the tests'
/// hundreds of files are the schema's corpus of valid ones.
fn schema_accepts_what_loads(dir: &std::path::Path, text: &str) {
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let root = dir.to_owned();
    if cairn::config::Config::parse("tasks.toml", text, root.join("tasks.toml"), root).is_err() {
        return;
    }
    let Ok(document) = toml::from_str::<toml::Value>(text) else {
        return;
    };
    let instance = serde_json::to_value(document).expect("TOML converts to JSON");
    let validator = VALIDATOR.get_or_init(|| {
        jsonschema::draft202012::new(&cairn::config::schema::schema()).expect("a valid schema")
    });
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the schema rejects a tasks.toml the loader accepts:\n{text}\n{errors:#?}"
    );
}

/// What a run of cairn produced.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Test {
    pub fn new() -> Test {
        Test {
            dir: tempfile::tempdir().expect("temp dir"),
            args: Vec::new(),
            cwd: None,
            stdin_file: None,
            envs: Vec::new(),
        }
    }

    pub fn tasks(self, text: &str) -> Test {
        schema_accepts_what_loads(self.dir.path(), text);
        self.file("tasks.toml", text)
    }

    pub fn file(self, path: &str, text: &str) -> Test {
        let full = self.dir.path().join(path);
        std::fs::create_dir_all(full.parent().expect("has parent")).expect("mkdir");
        std::fs::write(full, text).expect("write");
        self
    }

    pub fn args(mut self, args: &[&str]) -> Test {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Adds a variable to cairn's (otherwise cleared) environment.
    pub fn env(mut self, name: &str, value: &str) -> Test {
        self.envs.retain(|(n, _)| n != name);
        self.envs.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Takes a variable back out of cairn's environment.
    pub fn unset_env(mut self, name: &str) -> Test {
        self.envs.retain(|(n, _)| n != name);
        self
    }

    /// Writes a file of the project between runs.
    pub fn write(&self, path: &str, text: &str) {
        let full = self.dir.path().join(path);
        std::fs::create_dir_all(full.parent().expect("has parent")).expect("mkdir");
        std::fs::write(full, text).expect("write");
    }

    /// Runs cairn with other arguments in the same project.
    pub fn run_with(&self, args: &[&str]) -> Run {
        Run::from(self.command_with(args).output().expect("cairn runs"))
    }

    /// Runs cairn with `args` and `text` on standard input.
    pub fn run_with_stdin(&self, args: &[&str], text: &str) -> Run {
        let file = self.dir.path().join(".stdin");
        std::fs::write(&file, text).expect("write stdin");
        let mut command = self.command_with(args);
        command.stdin(std::fs::File::open(&file).expect("stdin file"));
        let run = Run::from(command.output().expect("cairn runs"));
        let _ = std::fs::remove_file(&file);
        run
    }

    pub fn cwd(mut self, relative: &str) -> Test {
        self.cwd = Some(self.dir.path().join(relative));
        self
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.path(relative)).unwrap_or_default()
    }

    pub fn command(&self) -> Command {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.command_with(&args)
    }

    /// The real binary with `args`, in the project, with a cleared environment.
    pub fn command_with(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
        command
            .args(args)
            .current_dir(
                self.cwd
                    .clone()
                    .unwrap_or_else(|| self.dir.path().to_owned()),
            )
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("NO_COLOR", "1")
            .envs(self.envs.iter().map(|(k, v)| (k, v)));
        match &self.stdin_file {
            Some(file) => command.stdin(std::fs::File::open(file).expect("stdin file")),
            None => command.stdin(Stdio::null()),
        };
        command
    }

    pub fn run(&self) -> Run {
        Run::from(self.command().output().expect("cairn runs"))
    }
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            status: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn success(self) -> Run {
        assert_eq!(
            self.status, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn status(self, code: i32) -> Run {
        assert_eq!(
            self.status, code,
            "unexpected status\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Whether stderr holds `text`, also when miette wrapped it across lines.
    pub fn stderr_has(self, text: &str) -> Run {
        let flat = |s: &str| -> String {
            s.chars()
                .filter(|c| !c.is_whitespace() && *c != '│')
                .collect()
        };
        assert!(
            self.stderr.contains(text) || flat(&self.stderr).contains(&flat(text)),
            "stderr lacks {text:?}:\n{}",
            self.stderr
        );
        self
    }

    pub fn stdout_has(self, text: &str) -> Run {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}:\n{}",
            self.stdout
        );
        self
    }

    pub fn stderr_lacks(self, text: &str) -> Run {
        assert!(
            !self.stderr.contains(text),
            "stderr has {text:?}:\n{}",
            self.stderr
        );
        self
    }

    /// Whether the run's summary counts this many results restored from the cache (local or remote).
    pub fn cached(self, count: usize) -> Run {
        let expected = format!("({count} from cache");
        if count == 0 {
            assert!(
                !self.stderr.contains(" from cache"),
                "expected no cache hit:\n{}",
                self.stderr
            );
        } else {
            assert!(
                self.stderr.contains(&format!("{expected})"))
                    || self.stderr.contains(&format!("{expected}, ")),
                "expected {expected}):\n{}",
                self.stderr
            );
        }
        self
    }

    /// Whether the run's summary counts this many of its cache hits as fetched from the remote cache.
    pub fn fetched(self, count: usize) -> Run {
        let expected = format!("{count} of them remote)");
        assert!(
            self.stderr.contains(&expected),
            "expected {expected}:\n{}",
            self.stderr
        );
        self
    }

    pub fn stdout_lacks(self, text: &str) -> Run {
        assert!(
            !self.stdout.contains(text),
            "stdout has {text:?}:\n{}",
            self.stdout
        );
        self
    }
}

/// Parses `start end` nanosecond stamps written by a task.
pub fn span_of(test: &Test, name: &str) -> (u128, u128) {
    let text = test.read(name);
    let mut parts = text
        .split_whitespace()
        .map(|p| p.parse::<u128>().expect("nanoseconds"));
    (parts.next().expect("start"), parts.next().expect("end"))
}

pub fn stamped(name: &str) -> String {
    let now = NOW_NS;
    format!("[tasks.{name}]\nrun = \"s={now}; sleep 0.4; echo $s {now} > {name}.span\"\n")
}

/// A shell expression for the time in nanoseconds: GNU `date +%s%N` on Linux; macOS's `date` has no `%N`.
pub const NOW_NS: &str = if cfg!(target_os = "macos") {
    "$(perl -MTime::HiRes=time -e 'printf q(%.0f), time*1e9')"
} else {
    "$(date +%s%N)"
};

/// A plugin module built by plugins/build.sh, or `None` (and a note) when it is not built; in CI, which
/// builds every plugin first, a missing module is a failure.
pub fn built_plugin(name: &str) -> Option<Vec<u8>> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("plugins/dist/{name}.wasm"));
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "plugins/dist/{name}.wasm is missing: .ci/run builds it with plugins/build.sh"
            );
            eprintln!("skipped: plugins/dist/{name}.wasm is not built (run plugins/build.sh)");
            None
        }
    }
}

/// The hex SHA-256 of `bytes`, as tasks.toml pins plugins.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A loopback port nothing listens on now, for a server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// A loopback port that accepts connections and never answers (for timeouts).
pub fn silent_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    port
}

impl Test {
    /// Replaces `from` by `to` in a project file; `from` must be there, so a stale edit fails the test.
    pub fn edit(&self, path: &str, from: &str, to: &str) {
        let text = self.read(path);
        assert!(text.contains(from), "{path} has no {from:?}:\n{text}");
        self.write(path, &text.replacen(from, to, 1));
    }
}

/// Runs cairn with `args` in a pseudo-terminal (util-linux `script`), returning everything it wrote.
pub fn in_terminal(test: &Test, args: &str) -> Option<String> {
    let script = std::process::Command::new("script")
        .arg("--version")
        .output();
    if script.is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "`script` is missing: .ci/run installs bsdutils"
        );
        eprintln!("skipped: no `script` to give cairn a terminal");
        return None;
    }
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_cairn"));
    let mut script = std::process::Command::new("script");
    // util-linux's `script -qec CMD FILE` on Linux; BSD's `script -q FILE CMD…` on macOS.
    if cfg!(target_os = "macos") {
        script.args(["-q", "/dev/null", "sh", "-c", &command]);
    } else {
        script.args(["-qec", &command, "/dev/null"]);
    }
    let output = script
        .current_dir(test.path(""))
        .env("TERM", "xterm")
        .env_remove("CI")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITLAB_CI")
        .output()
        .expect("script runs");
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Every file below `dir` (not the directories), following no link.
pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        for item in read.flatten() {
            if item.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(item.path());
            } else {
                out.push(item.path());
            }
        }
    }
    out
}
