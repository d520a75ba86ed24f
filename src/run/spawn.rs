//! Starting a captured task's process without glibc's `posix_spawn`, on Linux.
//!
//! `posix_spawn` (which `std::process::Command` uses) makes its child query and reset every one of the 64
//! signals' dispositions before `execve`, about 120 system calls, while the parent waits for the exec; it
//! also maps and unmaps a fresh stack and checks each redirected descriptor against the descriptor limit. For
//! tasks that take a millisecond that was a third of what cairn added to each one. This starts the child the
//! same way — `clone` with `CLONE_VM | CLONE_VFORK`, so nothing of the parent is copied — on a stack kept for
//! the run, resets only the signals that can have a handler, and gets the child's pidfd from `clone` itself.
//!
//! What the child does between `clone` and `execve` runs in cairn's memory while cairn's thread is suspended:
//! only async-signal-safe calls, no allocation, every pointer prepared beforehand.
//!
//! Anything this path does not handle (a program without a `/`, a descriptor numbered 0–2, another spawn in
//! progress, a kernel without `CLONE_PIDFD`, another system) makes [`spawn`] return `None`, and the caller
//! starts the process through `tokio::process` as before.

use std::os::fd::BorrowedFd;

#[cfg(target_os = "linux")]
pub(super) use linux::{spawn, DirectChild};

/// Where a directly started child's three standard streams go.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(super) struct StdStreams<'a> {
    /// `None`: the child inherits cairn's stdin.
    pub stdin: Option<BorrowedFd<'a>>,
    /// The write end of the stdout pipe.
    pub stdout: BorrowedFd<'a>,
    /// The write end of the stderr pipe.
    pub stderr: BorrowedFd<'a>,
}

#[cfg(not(target_os = "linux"))]
pub(super) use other::{spawn, DirectChild};

#[cfg(not(target_os = "linux"))]
mod other {
    use std::io;
    use std::process::ExitStatus;

    use super::StdStreams;

    /// A child started directly: never, on this system.
    pub(in crate::run) enum DirectChild {}

    impl DirectChild {
        pub(in crate::run) fn id(&self) -> u32 {
            match *self {}
        }

        pub(in crate::run) async fn wait(&mut self) -> io::Result<ExitStatus> {
            match *self {}
        }

        pub(in crate::run) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
            match *self {}
        }
    }

    /// Always `None`: processes start through `tokio::process` here.
    pub(in crate::run) fn spawn(
        _command: &std::process::Command,
        _clear_env: bool,
        _streams: &StdStreams<'_>,
    ) -> Option<io::Result<DirectChild>> {
        None
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::BTreeMap;
    use std::ffi::{c_int, c_void, CString, OsStr, OsString};
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
    use std::sync::{Mutex, OnceLock};

    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    use super::StdStreams;

    /// The child's stack: it runs only until `execve`, in a handful of libc calls.
    const STACK_SIZE: usize = 64 * 1024;

    /// Set when the kernel refused this kind of clone: every later spawn goes the usual way.
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

    /// The stack children start on, mapped once. A mutex, because each child runs on it until it has exec'd
    /// (the spawning thread is suspended meanwhile, but another thread could spawn at the same time).
    static STACK: OnceLock<Option<Mutex<Stack>>> = OnceLock::new();

    /// An mmap'd stack with an inaccessible page below it, so an overflow faults instead of writing over
    /// cairn's memory.
    struct Stack {
        top: *mut c_void,
    }

    // SAFETY: the mapping is never unmapped, and only the holder of the mutex hands it to a child.
    unsafe impl Send for Stack {}

    impl Stack {
        fn map() -> Option<Stack> {
            let page = 4096;
            // SAFETY: a fresh anonymous mapping; nothing else refers to it.
            unsafe {
                let base = libc::mmap(
                    std::ptr::null_mut(),
                    STACK_SIZE + page,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                    -1,
                    0,
                );
                if base == libc::MAP_FAILED {
                    return None;
                }
                if libc::mprotect(base, page, libc::PROT_NONE) != 0 {
                    libc::munmap(base, STACK_SIZE + page);
                    return None;
                }
                Some(Stack {
                    top: base.cast::<u8>().add(STACK_SIZE + page).cast(),
                })
            }
        }
    }

    /// Signals the child sets back to their default before `execve`: any that may have a handler in cairn
    /// (a handler would otherwise run in the child, in cairn's memory, if the signal came before the exec),
    /// and SIGPIPE, which Rust ignores in cairn and which the task should have as usual. Signals cairn was
    /// started with ignored stay ignored, as an exec keeps them.
    fn signals_to_reset() -> &'static [c_int] {
        static SIGNALS: OnceLock<Vec<c_int>> = OnceLock::new();
        SIGNALS.get_or_init(|| {
            // The ones tokio or cairn may register later, whatever they are now.
            let usual = [
                libc::SIGINT,
                libc::SIGTERM,
                libc::SIGHUP,
                libc::SIGQUIT,
                libc::SIGCHLD,
                libc::SIGWINCH,
                libc::SIGUSR1,
                libc::SIGUSR2,
                libc::SIGALRM,
                libc::SIGTSTP,
                libc::SIGCONT,
            ];
            let mut signals = vec![libc::SIGPIPE];
            for signal in 1..=libc::SIGRTMAX() {
                if signal == libc::SIGKILL || signal == libc::SIGSTOP || signal == libc::SIGPIPE {
                    continue;
                }
                // SAFETY: a query only; `action` is written by sigaction.
                let handler = unsafe {
                    let mut action: libc::sigaction = std::mem::zeroed();
                    if libc::sigaction(signal, std::ptr::null(), &mut action) != 0 {
                        continue;
                    }
                    action.sa_sigaction
                };
                let handled = handler != libc::SIG_DFL && handler != libc::SIG_IGN;
                if handled || (usual.contains(&signal) && handler != libc::SIG_IGN) {
                    signals.push(signal);
                }
            }
            signals
        })
    }

    /// Everything the child needs, prepared by the parent: the child only reads it (and writes `failure`).
    struct Setup<'a> {
        program: *const libc::c_char,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
        cwd: *const libc::c_char,
        stdin: c_int,
        stdout: c_int,
        stderr: c_int,
        reset: &'a [c_int],
        /// The errno of the step that failed, or 0.
        failure: AtomicI32,
    }

    /// Records why the child could not become the task, and ends it.
    ///
    /// # Safety
    /// Only in the child, after a failed call that set errno.
    unsafe fn fail(setup: &Setup<'_>) -> ! {
        setup
            .failure
            .store(*libc::__errno_location(), Ordering::Relaxed);
        libc::_exit(127)
    }

    /// The child's side: set up its process, then become the task. Runs on [`Stack`], in cairn's memory.
    extern "C" fn start_child(setup: *mut c_void) -> c_int {
        // SAFETY: `setup` points to the parent's `Setup`, alive while the parent is suspended (CLONE_VFORK);
        // every call below is async-signal-safe and allocates nothing.
        unsafe {
            let setup = &*setup.cast::<Setup<'_>>();
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            for &signal in setup.reset {
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
            // Its own process group, so that stopping the task stops everything it started.
            if libc::setpgid(0, 0) != 0 {
                fail(setup);
            }
            if setup.stdin >= 0 && libc::dup2(setup.stdin, 0) < 0 {
                fail(setup);
            }
            if libc::dup2(setup.stdout, 1) < 0 || libc::dup2(setup.stderr, 2) < 0 {
                fail(setup);
            }
            if !setup.cwd.is_null() && libc::chdir(setup.cwd) != 0 {
                fail(setup);
            }
            let mut unblocked: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut unblocked);
            libc::sigprocmask(libc::SIG_SETMASK, &unblocked, std::ptr::null_mut());
            libc::execve(setup.program, setup.argv, setup.envp);
            fail(setup)
        }
    }

    /// A process started by [`spawn`]; reaped by `wait` or `try_wait`, or when dropped.
    pub(in crate::run) struct DirectChild {
        pid: libc::pid_t,
        pidfd: AsyncFd<OwnedFd>,
        status: Option<ExitStatus>,
    }

    impl DirectChild {
        /// The process id (also its process group's).
        pub(in crate::run) fn id(&self) -> u32 {
            self.pid as u32
        }

        /// Waits for the process to exit, without blocking the runtime: its pidfd becomes readable then.
        pub(in crate::run) async fn wait(&mut self) -> io::Result<ExitStatus> {
            loop {
                if let Some(status) = self.status {
                    return Ok(status);
                }
                let mut ready = self.pidfd.readable().await?;
                match reap(self.pid)? {
                    Some(status) => self.status = Some(status),
                    None => ready.clear_ready(),
                }
            }
        }

        /// The exit status if the process has exited, reaping it.
        pub(in crate::run) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
            if self.status.is_none() {
                self.status = reap(self.pid)?;
            }
            Ok(self.status)
        }
    }

    impl Drop for DirectChild {
        fn drop(&mut self) {
            if self.status.is_some() || matches!(reap(self.pid), Ok(Some(_)) | Err(_)) {
                return;
            }
            // Dropped while its process runs (the run itself was abandoned): it is reaped when it ends, so
            // no zombie is left behind for as long as cairn runs.
            let pid = self.pid;
            let _ = std::thread::Builder::new()
                .name("cairn-reaper".into())
                .spawn(move || {
                    let mut status = 0;
                    // SAFETY: waits for our own child; `status` is written by waitpid.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                });
        }
    }

    /// `waitpid` without blocking: `None` while the process runs.
    fn reap(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
        let mut status = 0;
        loop {
            // SAFETY: `status` is written by waitpid; the pid is our unreaped child, so it cannot have been
            // reused.
            match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
                0 => return Ok(None),
                -1 => {
                    let error = io::Error::last_os_error();
                    if error.kind() != io::ErrorKind::Interrupted {
                        return Err(error);
                    }
                }
                _ => return Ok(Some(ExitStatus::from_raw(status))),
            }
        }
    }

    fn c_string(text: &OsStr) -> io::Result<CString> {
        CString::new(text.as_bytes()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a program, argument or variable contains a NUL byte",
            )
        })
    }

    /// Starts `command` (its program, arguments, variables and directory; `clear_env` as the command was
    /// told) with `streams` in a new process group. `None` when this path cannot start it: the caller then
    /// uses `tokio::process`.
    pub(in crate::run) fn spawn(
        command: &std::process::Command,
        clear_env: bool,
        streams: &StdStreams<'_>,
    ) -> Option<io::Result<DirectChild>> {
        if UNSUPPORTED.load(Ordering::Relaxed) {
            return None;
        }
        let program = command.get_program();
        // A bare name would need a PATH search; cairn resolves names itself, and the rest go the usual way.
        if !program.as_bytes().contains(&b'/') {
            return None;
        }
        let fds = [
            streams.stdin.map(|fd| fd.as_raw_fd()),
            Some(streams.stdout.as_raw_fd()),
            Some(streams.stderr.as_raw_fd()),
        ];
        // dup2 onto itself would leave close-on-exec set: descriptors 0-2 go the usual way.
        if fds.iter().flatten().any(|&fd| fd <= 2) {
            return None;
        }
        let stack = STACK
            .get_or_init(|| Stack::map().map(Mutex::new))
            .as_ref()?;
        let stack = stack.try_lock().ok()?;
        match start(command, clear_env, fds, &stack) {
            Err(error) if UNSUPPORTED.load(Ordering::Relaxed) => {
                drop(error);
                None
            }
            started => Some(started),
        }
    }

    fn start(
        command: &std::process::Command,
        clear_env: bool,
        [stdin, stdout, stderr]: [Option<c_int>; 3],
        stack: &Stack,
    ) -> io::Result<DirectChild> {
        let program = c_string(command.get_program())?;
        let args = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(c_string)
            .collect::<io::Result<Vec<CString>>>()?;
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());

        let mut variables: BTreeMap<OsString, OsString> = match clear_env {
            true => BTreeMap::new(),
            false => std::env::vars_os().collect(),
        };
        for (name, value) in command.get_envs() {
            match value {
                Some(value) => variables.insert(name.to_owned(), value.to_owned()),
                None => variables.remove(name),
            };
        }
        let environment = variables
            .into_iter()
            .map(|(name, value)| {
                let mut entry = name.into_vec();
                entry.push(b'=');
                entry.extend(value.into_vec());
                CString::new(entry).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "an environment variable contains a NUL byte",
                    )
                })
            })
            .collect::<io::Result<Vec<CString>>>()?;
        let mut envp: Vec<*const libc::c_char> = environment.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());

        let cwd = command
            .get_current_dir()
            .map(|dir| c_string(dir.as_os_str()))
            .transpose()?;

        let setup = Setup {
            program: program.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            cwd: cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            stdin: stdin.unwrap_or(-1),
            stdout: stdout.unwrap_or(-1),
            stderr: stderr.unwrap_or(-1),
            reset: signals_to_reset(),
            failure: AtomicI32::new(0),
        };
        let mut pidfd: c_int = -1;
        // SAFETY: every signal is blocked around the clone, so no handler of cairn's runs in the child before
        // it has reset them; the child runs `start_child` on a stack no one else uses (we hold its lock) and
        // reads `setup` while this thread is suspended (CLONE_VFORK), which lives until clone returns.
        let pid = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
            let pid = libc::clone(
                start_child,
                stack.top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                std::ptr::addr_of!(setup).cast_mut().cast(),
                &mut pidfd as *mut c_int,
            );
            let error = io::Error::last_os_error();
            libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
            if pid < 0 {
                // No CLONE_PIDFD (before Linux 5.2), or a sandbox that forbids this clone: the usual way.
                if matches!(
                    error.raw_os_error(),
                    Some(libc::EINVAL | libc::ENOSYS | libc::EPERM)
                ) {
                    UNSUPPORTED.store(true, Ordering::Relaxed);
                }
                return Err(error);
            }
            pid
        };
        // SAFETY: clone stored a new pidfd, which nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let failure = setup.failure.load(Ordering::Relaxed);
        if failure != 0 {
            // It has exited already (127): reap it and report why it could not start.
            let _ = reap(pid);
            return Err(io::Error::from_raw_os_error(failure));
        }
        // SAFETY: an OwnedFd is open and always the same descriptor until the AsyncFd drops it.
        match unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) } {
            Ok(pidfd) => Ok(DirectChild {
                pid,
                pidfd,
                status: None,
            }),
            Err(error) => {
                let error = io::Error::from(error);
                // SAFETY: our own child, which cannot be waited for without its pidfd in the runtime.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let mut status = 0;
                // SAFETY: as above; `status` is written by waitpid.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                Err(error)
            }
        }
    }
}
