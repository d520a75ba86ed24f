//! Runs a job's command lines as real processes, each in its own process group so that stopping a task stops
//! everything it started.

use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::time::Instant;

use super::plugins::Plugins;
use super::secrets::{Injection, RunSecrets, SecretFiles};
use super::spawn;
use super::{ExecutionFuture, Executor, Job, JobContext, StopRequest, Stream, TaskStatus};
use crate::config::format_duration;
use crate::secrets::redact::Redactor;
use cairn_plugin_api::{
    exports, Capability, InputFile, Severity, TaskRequest, TaskResponse, WrapRequest, WrapResponse,
};

/// Lines longer than this are passed on in pieces, so a task printing without newlines cannot exhaust memory.
const MAX_LINE: usize = 64 * 1024;

/// How often we look whether a process group has emptied while waiting for it to go.
const GROUP_POLL: Duration = Duration::from_millis(10);

/// How a job's standard streams are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streams {
    /// Output is read line by line and handed to the reporter; stdin is empty.
    Captured,
    /// The task shares cairn's terminal untouched; with `foreground`, it becomes the terminal's foreground
    /// process group, so it can read the keyboard and Ctrl-C reaches it as it would from a shell.
    Inherited {
        /// Hand the terminal to the task.
        foreground: bool,
    },
}

/// Runs jobs as child processes.
#[derive(Debug, Clone)]
pub struct ProcessExecutor {
    stdio: Streams,
    kill_grace: Duration,
    programs: Arc<ProgramCache>,
    secrets: Option<Arc<RunSecrets>>,
    plugins: Option<Arc<Plugins>>,
    /// Where a captured task's stdin comes from.
    empty_input: EmptyInput,
}

/// A captured task reads nothing: its stdin is `/dev/null`, got as cheaply as cairn's own stdin allows.
#[derive(Debug, Clone)]
enum EmptyInput {
    /// cairn's own stdin is `/dev/null` already (CI, cron, a service): the task inherits it, which costs no
    /// system call at all.
    Inherited,
    /// `/dev/null`, opened once per run: duplicating a descriptor costs a fraction of opening the device by
    /// its path for each task.
    Shared(Arc<std::fs::File>),
    /// Opened for each task (when opening it once failed).
    Opened,
}

impl EmptyInput {
    fn for_this_process() -> EmptyInput {
        let Ok(null) = std::fs::File::open("/dev/null") else {
            return EmptyInput::Opened;
        };
        let null_device = character_device(null.as_fd());
        if null_device.is_some() && null_device == character_device(std::io::stdin().as_fd()) {
            EmptyInput::Inherited
        } else {
            EmptyInput::Shared(Arc::new(null))
        }
    }

    fn stdio(&self) -> Stdio {
        match self {
            EmptyInput::Inherited => Stdio::inherit(),
            EmptyInput::Shared(null) => {
                null.try_clone().map_or_else(|_| Stdio::null(), Stdio::from)
            }
            EmptyInput::Opened => Stdio::null(),
        }
    }
}

/// The device number of `fd` when it is a character device (a terminal, `/dev/null`).
fn character_device(fd: std::os::fd::BorrowedFd<'_>) -> Option<libc::dev_t> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat only writes into `stat`, which is read only when it succeeded.
    let stat = unsafe {
        if libc::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    ((stat.st_mode & libc::S_IFMT) == libc::S_IFCHR).then_some(stat.st_rdev)
}

/// Programs found on cairn's `PATH`, looked up once per run.
///
/// Left to itself, spawning searches `PATH` by calling execve in every directory until one works, and a failed
/// execve costs several times a failed stat; with many short tasks that is most of cairn's own overhead.
#[derive(Debug)]
struct ProgramCache {
    path: Option<String>,
    /// cairn's own working directory (it never changes it): a task that runs there needs no `chdir` in the
    /// child, which is on every task's critical path.
    cwd: Option<PathBuf>,
    found: std::sync::Mutex<std::collections::HashMap<String, Option<PathBuf>>>,
}

impl Default for ProgramCache {
    fn default() -> ProgramCache {
        ProgramCache {
            path: std::env::var("PATH").ok(),
            cwd: std::env::current_dir().ok(),
            found: std::sync::Mutex::default(),
        }
    }
}

impl ProgramCache {
    /// The full path of `program`, when it is a bare name found on `PATH`.
    fn resolve(&self, program: &str) -> Option<PathBuf> {
        if program.contains('/') {
            return None;
        }
        let mut found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        found
            .entry(program.to_owned())
            .or_insert_with(|| {
                let path = self.path.as_ref()?;
                std::env::split_paths(path)
                    .filter(|dir| dir.is_absolute())
                    .map(|dir| dir.join(program))
                    .find(|candidate| is_executable(candidate))
            })
            .clone()
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl ProcessExecutor {
    /// An executor connecting task streams as `stdio` says, giving processes `kill_grace` between SIGTERM
    /// and SIGKILL.
    pub fn new(stdio: Streams, kill_grace: Duration) -> ProcessExecutor {
        ProcessExecutor {
            stdio,
            kill_grace,
            programs: Arc::default(),
            secrets: None,
            plugins: None,
            empty_input: match stdio {
                Streams::Captured => EmptyInput::for_this_process(),
                Streams::Inherited { .. } => EmptyInput::Opened,
            },
        }
    }

    /// Lets tasks use the run's plugins (`plugin`, `executor`).
    pub fn with_plugins(mut self, plugins: Arc<Plugins>) -> ProcessExecutor {
        self.plugins = Some(plugins);
        self
    }

    fn redactor(&self) -> Option<&Redactor> {
        self.secrets
            .as_deref()
            .map(|s| s.redactor.as_ref())
            .filter(|r| !r.is_empty())
    }

    /// Gives tasks the secrets they ask for and filters every secret of the run out of their output.
    pub fn with_secrets(mut self, secrets: Arc<RunSecrets>) -> ProcessExecutor {
        self.secrets = Some(secrets);
        self
    }
}

impl Executor for ProcessExecutor {
    fn execute(&self, job: Arc<Job>, context: JobContext) -> ExecutionFuture {
        let this = self.clone();
        Box::pin(async move { this.attempt(job, &context).await })
    }
}

enum Ending {
    Exited(std::io::Result<ExitStatus>),
    TimedOut,
    Interrupted,
}

impl ProcessExecutor {
    async fn attempt(&self, job: Arc<Job>, context: &JobContext) -> TaskStatus {
        let deadline = job.timeout.map(|t| Instant::now() + t);
        let injection = job.injection.clone();
        // Lives until the attempt ends, however it ends: the files go with it.
        let secret_files = match injection.as_deref() {
            Some(injection) if !injection.files.is_empty() => {
                match SecretFiles::create(&job.label, injection) {
                    Ok(files) => Some(files),
                    Err(error) => {
                        context
                            .reporter
                            .note(&job, &format!("cannot write the secret files: {error}"));
                        return TaskStatus::Failed { code: 1 };
                    }
                }
            }
            _ => None,
        };
        let secret_env = Secrets {
            injection: injection.as_deref(),
            files: secret_files.as_ref(),
        };
        // Held from here until cairn exits, whichever way it exits.
        if let Some((name, file)) = &job.lock {
            let (name, file) = (name.clone(), file.clone());
            let (job_for_note, reporter) = (Arc::clone(&job), Arc::clone(&context.reporter));
            let taken = tokio::task::spawn_blocking(move || {
                super::lock::acquire(&file, |holder| {
                    reporter.note(
                        &job_for_note,
                        &format!("waiting for lock `{name}`, held by {holder}"),
                    );
                })
            })
            .await;
            match taken {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    context
                        .reporter
                        .note(&job, &format!("cannot take its lock: {error}"));
                    return TaskStatus::Failed { code: 1 };
                }
                Err(_) => return TaskStatus::Interrupted,
            }
        }
        if let Some(name) = &job.plugin {
            let began = std::time::Instant::now();
            let status = self.plugin_task(&job, name, context).await;
            context.reporter.phase(
                &job,
                &format!("plugin {name}"),
                began,
                std::time::Instant::now(),
            );
            return status;
        }
        let mut status = TaskStatus::Succeeded;
        for line in &job.commands {
            status = self
                .run_line(&job, line, deadline, context, &secret_env)
                .await;
            if status != TaskStatus::Succeeded {
                break;
            }
        }
        if let (TaskStatus::Succeeded, Some((check, retries, interval))) = (&status, &job.check) {
            let began = std::time::Instant::now();
            status = self
                .health_check(&job, check, *retries, *interval, context, &secret_env)
                .await;
            context
                .reporter
                .phase(&job, "health check", began, std::time::Instant::now());
        }
        if matches!(
            status,
            TaskStatus::Failed { .. } | TaskStatus::TimedOut { .. }
        ) {
            if let Some(rollback) = &job.rollback {
                context.reporter.note(&job, "rolling back");
                // The rollback has its own clock: the task's deadline may be what failed it.
                let began = std::time::Instant::now();
                let undone = self
                    .run_line(&job, rollback, None, context, &secret_env)
                    .await;
                context
                    .reporter
                    .phase(&job, "rollback", began, std::time::Instant::now());
                if undone != TaskStatus::Succeeded {
                    context.reporter.note(
                        &job,
                        &format!("the rollback failed too ({})", describe_status(&undone)),
                    );
                }
            }
        }
        status
    }

    async fn run_line(
        &self,
        job: &Arc<Job>,
        line: &str,
        deadline: Option<Instant>,
        context: &JobContext,
        secrets: &Secrets<'_>,
    ) -> TaskStatus {
        let mut command = self.command(job, line);
        secrets.apply(&mut command);
        if let Some(name) = &job.executor {
            let began = std::time::Instant::now();
            let wrapped = self.wrap(job, name, &mut command, secrets).await;
            context.reporter.phase(
                job,
                &format!("plugin {name}"),
                began,
                std::time::Instant::now(),
            );
            if let Err(message) = wrapped {
                context.reporter.note(job, &message);
                return TaskStatus::Failed { code: 1 };
            }
        }
        let (capture, mut writers) = match self.stdio {
            Streams::Captured => match Capture::open() {
                Ok((capture, writers)) => (Some(capture), Some(writers)),
                Err(error) => {
                    context.reporter.note(
                        job,
                        &format!("cannot make the pipes that capture its output: {error}"),
                    );
                    return TaskStatus::Failed { code: 1 };
                }
            },
            Streams::Inherited { .. } => (None, None),
        };
        let started = writers
            .as_ref()
            .and_then(|writers| self.spawn_directly(job, &command, writers));
        let spawned = match started {
            Some(started) => started.map(Leader::Direct),
            None => {
                if let Some(writers) = writers.take() {
                    command
                        .stdin(self.empty_input.stdio())
                        .stdout(writers.out)
                        .stderr(writers.err);
                }
                command.spawn().map(Leader::Tokio)
            }
        };
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                let program = command
                    .as_std()
                    .get_program()
                    .to_string_lossy()
                    .into_owned();
                context
                    .reporter
                    .note(job, &format!("cannot start `{program}`: {error}"));
                return TaskStatus::Failed { code: 127 };
            }
        };
        let group = child.id().map(|pid| pid as libc::pid_t);
        // Both pipes are drained inside this future, beside the wait: no task of their own to start and join
        // for each command.
        let redactor = self
            .secrets
            .as_deref()
            .map(|s| s.redactor.as_ref())
            .filter(|r| !r.is_empty());
        let readers = async {
            if let Some(Capture { out, err }) = capture {
                tokio::join!(
                    pump(out, job, Stream::Stdout, context, redactor),
                    pump(err, job, Stream::Stderr, context, redactor)
                );
            }
        };
        tokio::pin!(readers);
        let mut drained = false;

        let mut stop = context.stop.clone();
        let ending = loop {
            tokio::select! {
                status = child.wait() => break Ending::Exited(status),
                _ = sleep_until(deadline) => break Ending::TimedOut,
                _ = stop.wait_for(|s| *s != StopRequest::None) => break Ending::Interrupted,
                () = &mut readers, if !drained => drained = true,
            }
        };
        // The pipes' write ends cairn kept close here: from now on they end when the task's processes are gone.
        drop(command);
        drop(writers);
        let status = match ending {
            // A task owning the terminal receives Ctrl-C itself; dying of it is an interruption, not a failure.
            Ending::Exited(Ok(status))
                if status.signal() == Some(libc::SIGINT)
                    && matches!(self.stdio, Streams::Inherited { foreground: true }) =>
            {
                TaskStatus::Interrupted
            }
            Ending::Exited(Ok(status)) => exit_status(status),
            Ending::Exited(Err(error)) => {
                context
                    .reporter
                    .note(job, &format!("lost track of the process: {error}"));
                TaskStatus::Failed { code: 1 }
            }
            Ending::TimedOut => {
                let after = job.timeout.unwrap_or_default();
                context.reporter.note(
                    job,
                    &format!("timed out after {}; stopping it", format_duration(after)),
                );
                TaskStatus::TimedOut { after }
            }
            Ending::Interrupted => TaskStatus::Interrupted,
        };
        // Whatever the leader did, the rest of its group goes with it: background processes would otherwise
        // outlive the task and hold its output pipes open.
        if let Some(group) = group {
            let mut stop = context.stop.clone();
            let ending_group = end_group(group, &mut child, self.kill_grace, &mut stop);
            // What the rest of the group prints while it is asked to stop is still read (and a full pipe
            // cannot keep it from exiting).
            if drained {
                ending_group.await;
            } else {
                tokio::join!(ending_group, &mut readers);
                drained = true;
            }
        }
        let _ = child.wait().await;
        if !drained {
            readers.await;
        }
        if matches!(self.stdio, Streams::Inherited { foreground: true }) {
            reclaim_terminal();
        }
        status
    }

    /// Starts a captured command through [`spawn`] when it can (see there why), `None` when it cannot.
    fn spawn_directly(
        &self,
        job: &Job,
        command: &Command,
        writers: &Writers,
    ) -> Option<std::io::Result<spawn::DirectChild>> {
        let stdin = match &self.empty_input {
            EmptyInput::Inherited => None,
            EmptyInput::Shared(null) => Some(null.as_fd()),
            EmptyInput::Opened => return None,
        };
        let streams = spawn::StdStreams {
            stdin,
            stdout: writers.out.as_fd(),
            stderr: writers.err.as_fd(),
        };
        spawn::spawn(command.as_std(), job.clear_env, &streams)
    }

    fn command(&self, job: &Job, line: &str) -> Command {
        // A task whose PATH differs from ours (it sets its own in `env`) finds its programs there. Tasks are
        // handed our PATH explicitly, so only a different value counts.
        let own_path = job.env.iter().any(|(name, value)| {
            name == "PATH" && Some(value.as_str()) != self.programs.path.as_deref()
        });
        // An executor plugin decides where the command runs (another system, even): names stay unresolved.
        let program = |name: &str| match own_path || job.executor.is_some() {
            false => self
                .programs
                .resolve(name)
                .map_or_else(|| name.into(), PathBuf::into_os_string),
            true => name.into(),
        };
        let mut command = match direct_argv(job, line) {
            Some(argv) => {
                let mut c = Command::new(program(&argv[0]));
                c.args(&argv[1..]);
                c
            }
            None => {
                let mut c = Command::new(program(&job.shell[0]));
                c.args(&job.shell[1..]).arg(line);
                c
            }
        };
        if job.clear_env {
            command.env_clear();
        }
        if self.programs.cwd.as_deref() != Some(job.dir.as_path()) {
            command.current_dir(&job.dir);
        }
        command
            .envs(job.base_env.iter().map(|(k, v)| (k, v)))
            .envs(job.env.iter().map(|(k, v)| (k, v)));
        self.connect(&mut command);
        command
    }

    /// Connects a command's streams and process group as this executor's mode says.
    fn connect(&self, command: &mut Command) {
        command.kill_on_drop(false);
        match self.stdio {
            Streams::Captured => {
                // The streams are connected in `run_line`, once it knows how the process starts.
                command.process_group(0);
            }
            Streams::Inherited { foreground: false } => {
                command
                    .stdin(Stdio::inherit())
                    .stdout(Stdio::inherit())
                    .stderr(Stdio::inherit())
                    .process_group(0);
            }
            Streams::Inherited { foreground: true } => {
                command
                    .stdin(Stdio::inherit())
                    .stdout(Stdio::inherit())
                    .stderr(Stdio::inherit());
                // SAFETY: only async-signal-safe libc calls run between fork and exec.
                unsafe {
                    command.pre_exec(|| {
                        libc::setpgid(0, 0);
                        with_sigttou_blocked(|| {
                            libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpid())
                        });
                        Ok(())
                    });
                }
            }
        }
    }
}

/// Whether `line` would run directly, without the shell (exposed for `--dry-run`).
pub fn is_direct(job: &Job, line: &str) -> bool {
    direct_argv(job, line).is_some()
}

/// The argv to run `line` with directly, when the shell would add nothing: cairn's default shell, only plain
/// words, and a first word that is an ordinary program. Saves a shell start per line, as make does.
fn direct_argv(job: &Job, line: &str) -> Option<Vec<String>> {
    const SHELL_ONLY: &[&str] = &[
        ".",
        "alias",
        "bg",
        "bind",
        "break",
        "builtin",
        "caller",
        "case",
        "cd",
        "command",
        "compgen",
        "complete",
        "continue",
        "coproc",
        "declare",
        "dirs",
        "disown",
        "do",
        "done",
        "elif",
        "else",
        "enable",
        "esac",
        "eval",
        "exec",
        "exit",
        "export",
        "fc",
        "fg",
        "fi",
        "for",
        "function",
        "getopts",
        "hash",
        "help",
        "history",
        "if",
        "in",
        "jobs",
        "kill",
        "let",
        "local",
        "logout",
        "mapfile",
        "popd",
        "pushd",
        "pwd",
        "read",
        "readarray",
        "readonly",
        "return",
        "select",
        "set",
        "shift",
        "shopt",
        "source",
        "suspend",
        "then",
        "time",
        "times",
        "trap",
        "type",
        "typeset",
        "ulimit",
        "umask",
        "unalias",
        "unset",
        "until",
        "wait",
        "while",
    ];
    if !job.default_shell {
        return None;
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || " \t-_./=:,+@%^".contains(c);
    if !line.chars().all(plain) {
        return None;
    }
    let argv: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    let first = argv.first()?;
    if first.contains('=') || SHELL_ONLY.contains(&first.as_str()) {
        return None;
    }
    Some(argv)
}

fn exit_status(status: ExitStatus) -> TaskStatus {
    match (status.code(), status.signal()) {
        (Some(0), _) => TaskStatus::Succeeded,
        (Some(code), _) => TaskStatus::Failed { code },
        (None, Some(signal)) => TaskStatus::Failed { code: 128 + signal },
        (None, None) => TaskStatus::Failed { code: 1 },
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// SIGTERM to every process of the group, then SIGKILL once the grace period is over (or at once on a second
/// interrupt). Returns as soon as the group is empty.
async fn end_group(
    group: libc::pid_t,
    leader: &mut Leader,
    grace: Duration,
    stop: &mut watch::Receiver<StopRequest>,
) {
    if !signal_group(group, libc::SIGTERM) {
        return;
    }
    let deadline = Instant::now() + grace;
    loop {
        // An unreaped leader is a zombie that still counts as a member of its group.
        let _ = leader.try_wait();
        if !group_alive(group) {
            return;
        }
        if Instant::now() >= deadline || *stop.borrow() == StopRequest::Now {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(GROUP_POLL) => {}
            _ = stop.wait_for(|s| *s == StopRequest::Now) => {}
        }
    }
    signal_group(group, libc::SIGKILL);
}

/// Sends `signal` to a process group; false when the group no longer exists.
fn signal_group(group: libc::pid_t, signal: libc::c_int) -> bool {
    // SAFETY: killpg has no memory-safety preconditions.
    unsafe { libc::killpg(group, signal) == 0 }
}

fn group_alive(group: libc::pid_t) -> bool {
    signal_group(group, 0)
}

/// Takes the terminal back after a foreground task, so cairn can print its summary and the shell gets it back.
fn reclaim_terminal() {
    // SAFETY: plain libc calls on our own stdin.
    unsafe {
        with_sigttou_blocked(|| libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp()));
    }
}

/// Runs `f` with SIGTTOU blocked: a background process changing the terminal's foreground group would
/// otherwise be stopped by the very signal that guards it.
unsafe fn with_sigttou_blocked(f: impl FnOnce() -> libc::c_int) {
    let mut block: libc::sigset_t = std::mem::zeroed();
    let mut previous: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut block);
    libc::sigaddset(&mut block, libc::SIGTTOU);
    libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut previous);
    f();
    libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
}

impl ProcessExecutor {
    /// Runs the task's health check until it passes or its tries run out.
    async fn health_check(
        &self,
        job: &Arc<Job>,
        check: &str,
        retries: u32,
        interval: Duration,
        context: &JobContext,
        secrets: &Secrets<'_>,
    ) -> TaskStatus {
        let tries = retries + 1;
        for attempt in 1..=tries {
            let status = self.run_line(job, check, None, context, secrets).await;
            match status {
                TaskStatus::Succeeded => return status,
                TaskStatus::Interrupted => return status,
                _ if attempt < tries => {
                    context.reporter.note(
                        job,
                        &format!(
                            "health check failed (try {attempt} of {tries}); next in {}",
                            format_duration(interval)
                        ),
                    );
                    let mut stop = context.stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = stop.wait_for(|s| *s != StopRequest::None) => return TaskStatus::Interrupted,
                    }
                }
                _ => {
                    context
                        .reporter
                        .note(job, &format!("health check failed {tries} time(s)"));
                    return status;
                }
            }
        }
        TaskStatus::Failed { code: 1 }
    }

    /// Runs a task through its `plugin`: the plugin gets the task's input files (only the changed ones for an
    /// incremental task) and answers with a status, diagnostics and output.
    async fn plugin_task(&self, job: &Arc<Job>, name: &str, context: &JobContext) -> TaskStatus {
        let Some(plugins) = self.plugins.clone() else {
            context
                .reporter
                .note(job, "plugins are not available in this run");
            return TaskStatus::Failed { code: 1 };
        };
        let (task, name) = (Arc::clone(job), name.to_string());
        let answer = tokio::task::spawn_blocking(move || -> Result<TaskResponse, String> {
            let plugin = plugins
                .get(&name, Capability::Task)
                .map_err(|e| render(&*e))?;
            let request = TaskRequest {
                task: task.label.clone(),
                params: task.key.params.clone(),
                args: task.key.args.clone(),
                files: input_files(&task, plugins.root())?,
            };
            let sink = plugins.sink();
            plugin
                .call(exports::RUN_TASK, &request, sink.as_ref())
                .map_err(|e| e.to_string())
        })
        .await;
        let response = match answer {
            Ok(Ok(response)) => response,
            Ok(Err(message)) => {
                context.reporter.note(job, &message);
                return TaskStatus::Failed { code: 1 };
            }
            Err(error) => {
                context
                    .reporter
                    .note(job, &format!("the plugin call was lost: {error}"));
                return TaskStatus::Failed { code: 1 };
            }
        };
        let direct = matches!(self.stdio, Streams::Inherited { .. });
        let sink = self.plugins.as_ref().map(|p| p.sink());
        let emit = |stream: Stream, line: &str| {
            let line = match self.redactor() {
                Some(r) => r.redact_str(line),
                None => line.to_owned(),
            };
            // What the plugin itself was granted (allow.env values, its secrets) is as secret as the run's.
            let text = match &sink {
                Some(sink) => cairn_plugin_client::Sink::redact(sink.as_ref(), &line).into_bytes(),
                None => line.into_bytes(),
            };
            // With the terminal given to tasks, the reporter shows nothing of theirs: write as a process would.
            if direct {
                use std::io::Write;
                let framed = [&text[..], b"\n"].concat();
                let _ = match stream {
                    Stream::Stdout => std::io::stdout().lock().write_all(&framed),
                    Stream::Stderr => std::io::stderr().lock().write_all(&framed),
                };
            } else {
                context.reporter.output(job, stream, &text);
            }
        };
        for line in response.output.lines() {
            emit(Stream::Stdout, line);
        }
        for d in &response.diagnostics {
            let severity = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
                Severity::Info => "info",
            };
            emit(
                Stream::Stderr,
                &format!(
                    "{}:{}:{}: {severity}: {}",
                    d.path, d.line, d.column, d.message
                ),
            );
        }
        match response.status {
            0 => TaskStatus::Succeeded,
            code => TaskStatus::Failed { code },
        }
    }

    /// Lets the task's `executor` plugin rewrite the command; cairn still starts the process.
    async fn wrap(
        &self,
        job: &Arc<Job>,
        name: &str,
        command: &mut Command,
        secrets: &Secrets<'_>,
    ) -> Result<(), String> {
        let plugins = self
            .plugins
            .clone()
            .ok_or("plugins are not available in this run")?;
        let std_command = command.as_std();
        let argv: Vec<String> = std::iter::once(std_command.get_program())
            .chain(std_command.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut env: Vec<String> = job
            .base_env
            .iter()
            .chain(&job.env)
            .map(|(k, _)| k.clone())
            .collect();
        let secret_env: Vec<String> = secrets.names();
        env.extend(secret_env.iter().cloned());
        let request = WrapRequest {
            task: job.label.clone(),
            argv,
            cwd: job.dir.display().to_string(),
            env,
            secret_env,
            host_os: std::env::consts::OS.to_string(),
        };
        let name = name.to_string();
        let response = tokio::task::spawn_blocking(move || -> Result<WrapResponse, String> {
            let plugin = plugins
                .get(&name, Capability::Executor)
                .map_err(|e| render(&*e))?;
            let sink = plugins.sink();
            plugin
                .call(exports::WRAP_COMMAND, &request, sink.as_ref())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("the plugin call was lost: {e}"))??;
        let Some((program, args)) = response.argv.split_first() else {
            return Err(format!(
                "executor `{}` returned an empty command",
                job.executor.as_deref().unwrap_or("")
            ));
        };
        // The plugin only describes the process; cairn starts it, with everything else it already set.
        let mut wrapped = Command::new(
            self.programs
                .resolve(program)
                .map_or_else(|| program.into(), PathBuf::into_os_string),
        );
        wrapped.args(args);
        let std_wrapped = wrapped.as_std_mut();
        if job.clear_env {
            std_wrapped.env_clear();
        }
        for (key, value) in command.as_std().get_envs() {
            if let Some(value) = value {
                std_wrapped.env(key, value);
            }
        }
        std_wrapped.envs(&response.set_env);
        std_wrapped.current_dir(response.cwd.as_deref().map_or(job.dir.as_path(), Path::new));
        self.connect(&mut wrapped);
        *command = wrapped;
        Ok(())
    }
}

/// A plugin error as one block of text (miette's rendering, for errors that point into tasks.toml).
fn render(error: &dyn miette::Diagnostic) -> String {
    struct Shown<'a>(&'a dyn miette::Diagnostic);
    impl std::fmt::Debug for Shown<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
                .render_report(f, self.0)
        }
    }
    format!("{:?}", Shown(error))
}

/// The task's declared inputs as the plugin receives them: every input, or only the changed ones when the
/// task is incremental.
fn input_files(job: &Job, root: &Path) -> Result<Vec<InputFile>, String> {
    let changed = job
        .env
        .iter()
        .find(|(k, _)| k == "CAIRN_CHANGED_FILES")
        .map(|(_, list)| std::fs::read_to_string(list).map_err(|e| e.to_string()));
    let paths: Vec<String> = match changed {
        Some(list) => list?.lines().map(String::from).collect(),
        None => {
            job.key
                .inputs
                .expand(root, true)
                .map_err(|e| e.to_string())?
                .files
        }
    };
    // The key holds a link's text, not what it points to: a link is handed over only when its target is
    // itself one of the task's inputs (so the key covers what the plugin reads), and never out of the tree.
    let all_inputs = std::cell::OnceCell::new();
    let real_root = std::cell::OnceCell::new();
    paths
        .into_iter()
        .map(|path| {
            let full = root.join(&path);
            let meta = std::fs::symlink_metadata(&full)
                .map_err(|e| format!("cannot read input `{path}`: {e}"))?;
            let read_from = if meta.file_type().is_symlink() {
                let target = full
                    .canonicalize()
                    .map_err(|e| format!("cannot follow input link `{path}`: {e}"))?;
                let real_root = match real_root.get() {
                    Some(resolved) => resolved,
                    None => real_root.get_or_init(|| root.canonicalize().unwrap_or_else(|_| root.to_owned())),
                };
                let inside = target
                    .strip_prefix(real_root)
                    .ok()
                    .and_then(Path::to_str)
                    .ok_or_else(|| {
                        format!("input `{path}` is a link out of the repository: cairn does not hand what it points to to a plugin")
                    })?;
                let inputs: &Vec<String> = match all_inputs.get() {
                    Some(inputs) => inputs,
                    None => {
                        let listed = job
                            .key
                            .inputs
                            .expand(root, true)
                            .map_err(|e| e.to_string())?
                            .files;
                        all_inputs.get_or_init(|| listed)
                    }
                };
                if !inputs.iter().any(|i| i == inside) {
                    return Err(format!(
                        "input `{path}` is a link to `{inside}`, which is not one of the task's inputs: add it to `inputs`, so that the key covers what the plugin reads"
                    ));
                }
                target
            } else {
                full
            };
            let bytes = std::fs::read(&read_from)
                .map_err(|e| format!("cannot read input `{path}`: {e}"))?;
            Ok(InputFile {
                contents: String::from_utf8_lossy(&bytes).into_owned(),
                path,
            })
        })
        .collect()
}

/// A job's secrets as one attempt passes them to its processes.
struct Secrets<'a> {
    injection: Option<&'a Injection>,
    files: Option<&'a SecretFiles>,
}

impl Secrets<'_> {
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        if let Some(injection) = self.injection {
            names.extend(injection.env.iter().map(|(k, _)| k.clone()));
        }
        if let Some(files) = self.files {
            names.extend(files.env.iter().map(|(k, _)| k.clone()));
        }
        names
    }

    fn apply(&self, command: &mut Command) {
        if let Some(injection) = self.injection {
            command.envs(injection.env.iter().map(|(k, v)| (k, v.as_str())));
        }
        if let Some(files) = self.files {
            command.envs(files.env.iter().map(|(k, v)| (k, v)));
        }
    }
}

/// The read ends of a captured command's two output pipes.
struct Capture {
    out: tokio::net::unix::pipe::Receiver,
    err: tokio::net::unix::pipe::Receiver,
}

/// The write ends of a captured command's pipes, which cairn keeps until its process has exited.
///
/// Otherwise the pipes' ends would wake cairn one by one as the exiting process closes them, each time taking
/// the processor from it (they often share one), before its exit itself wakes cairn a third time; held open,
/// the exit is the only wake-up, and the pipes then end at once.
struct Writers {
    out: std::io::PipeWriter,
    err: std::io::PipeWriter,
}

impl Capture {
    /// Two new pipes: their read ends registered with the runtime, and their write ends.
    fn open() -> std::io::Result<(Capture, Writers)> {
        let (out, out_writer) = std::io::pipe()?;
        let (err, err_writer) = std::io::pipe()?;
        let capture = Capture {
            out: nonblocking_receiver(out)?,
            err: nonblocking_receiver(err)?,
        };
        Ok((
            capture,
            Writers {
                out: out_writer,
                err: err_writer,
            },
        ))
    }
}

/// A task's leading process, started directly or through tokio.
enum Leader {
    Tokio(tokio::process::Child),
    Direct(spawn::DirectChild),
}

impl Leader {
    fn id(&self) -> Option<u32> {
        match self {
            Leader::Tokio(child) => child.id(),
            Leader::Direct(child) => Some(child.id()),
        }
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            Leader::Tokio(child) => child.wait().await,
            Leader::Direct(child) => child.wait().await,
        }
    }

    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match self {
            Leader::Tokio(child) => child.try_wait(),
            Leader::Direct(child) => child.try_wait(),
        }
    }
}

/// The read end of a pipe, made non-blocking (the write end the child gets stays blocking) and registered
/// with the runtime.
fn nonblocking_receiver(
    reader: std::io::PipeReader,
) -> std::io::Result<tokio::net::unix::pipe::Receiver> {
    let fd = std::os::fd::OwnedFd::from(reader);
    // SAFETY: fcntl on a descriptor we own; a new pipe end's only status flag is its access mode, which
    // F_SETFL ignores.
    if unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::F_SETFL,
            libc::O_NONBLOCK,
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(fd)
}

/// Reads a stream line by line and hands each line to the reporter, with secrets redacted. A secret split
/// across reads is whole by the time its line is complete; an overlong line is passed on in pieces that
/// never cut through a secret.
async fn pump(
    stream: impl AsyncRead + Unpin,
    job: &Job,
    which: Stream,
    context: &JobContext,
    redactor: Option<&Redactor>,
) {
    let emit = |bytes: &[u8]| match redactor {
        Some(redactor) => context.reporter.output(job, which, &redactor.redact(bytes)),
        None => context.reporter.output(job, which, bytes),
    };
    let mut reader = BufReader::with_capacity(16 * 1024, stream);
    let mut line = Vec::new();
    loop {
        let buffer = match reader.fill_buf().await {
            Ok(buffer) if !buffer.is_empty() => buffer,
            _ => break,
        };
        match buffer.iter().position(|&b| b == b'\n') {
            Some(end) => {
                line.extend_from_slice(&buffer[..end]);
                reader.consume(end + 1);
                emit(&line);
                line.clear();
            }
            None => {
                let taken = buffer.len();
                line.extend_from_slice(buffer);
                reader.consume(taken);
                if line.len() >= MAX_LINE {
                    let cut = redactor.map_or(line.len(), |r| r.safe_prefix(&line)).max(1);
                    emit(&line[..cut]);
                    line.drain(..cut);
                }
            }
        }
    }
    if !line.is_empty() {
        emit(&line);
    }
}

fn describe_status(status: &TaskStatus) -> String {
    match status {
        TaskStatus::Failed { code } => format!("exit code {code}"),
        TaskStatus::TimedOut { .. } => "timed out".into(),
        TaskStatus::Interrupted => "interrupted".into(),
        _ => "not run".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(default_shell: bool) -> Job {
        Job {
            default_shell,
            ..crate::run::job::test_job("t")
        }
    }

    #[test]
    fn plain_commands_skip_the_shell() {
        assert_eq!(
            direct_argv(&job(true), "cargo build --release"),
            Some(vec!["cargo".into(), "build".into(), "--release".into()])
        );
    }

    #[test]
    fn shell_syntax_keeps_the_shell() {
        for line in [
            "echo $HOME",
            "a && b",
            "cd src",
            "FOO=1 make",
            "ls *.rs",
            "echo 'x'",
            "exit 3",
            "a | b",
        ] {
            assert_eq!(direct_argv(&job(true), line), None, "{line}");
        }
    }

    #[test]
    fn custom_shell_is_always_used() {
        assert_eq!(direct_argv(&job(false), "true"), None);
    }
}
