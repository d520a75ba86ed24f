//! What the dashboard can do: run a target (after showing its plan and asking, when any task in it asks), and
//! stop the run it started. Runs are `cairn run` processes of this same executable, so the dashboard adds no
//! second way of running anything: the same plan, questions, secrets policy, cache and records.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::html::{escape, facts, percent_decode};
use super::pages::Project;

/// How much of a run's output the Live view keeps (the tail).
const OUTPUT_TAIL: usize = 64 * 1024;

/// A run the dashboard started.
pub struct PageRun {
    child: Child,
    /// The target as asked.
    pub target: String,
    started: Instant,
    /// How long it took, once it has been seen to end.
    took: Option<std::time::Duration>,
    output: Arc<Mutex<Vec<u8>>>,
}

/// `cairn` itself, in the project, with the project's tasks.toml, no colours and no terminal.
pub fn cairn(project: &Project) -> Command {
    let mut command = Command::new(&project.exe);
    command
        .arg("--file")
        .arg(&project.file)
        .current_dir(&project.root)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

/// A command of cairn's own, run to its end: (exit code, stdout and stderr together).
pub fn capture(mut command: Command) -> (i32, String) {
    match command.output() {
        Ok(output) => {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            (output.status.code().unwrap_or(-1), text)
        }
        Err(error) => (-1, format!("cannot start cairn: {error}")),
    }
}

/// Whether `target` may be handed to `cairn run` as one argument: a task name, not a flag.
pub fn valid_target(target: &str) -> bool {
    !target.is_empty()
        && target.len() <= 256
        && !target.starts_with('-')
        && !target.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Whether a dry run's plan holds a task that asks before it runs (protected tasks and `confirm`).
pub fn plan_asks(plan: &str) -> bool {
    plan.lines()
        .any(|line| line.trim_start().starts_with("asks "))
}

impl PageRun {
    /// Starts `cairn run TARGET` (with `--yes` once the page has asked).
    pub fn start(project: &Project, target: &str, confirmed: bool) -> std::io::Result<PageRun> {
        let mut command = cairn(project);
        command.arg("run").arg(target);
        if confirmed {
            command.arg("--yes");
        }
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn()?;
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = Arc::clone(&output);
            std::thread::spawn(move || keep_tail(stream, &output));
        }
        Ok(PageRun {
            child,
            target: target.to_owned(),
            started: Instant::now(),
            took: None,
            output,
        })
    }

    /// Its exit code once it has ended.
    pub fn ended(&mut self) -> Option<i32> {
        let code = self
            .child
            .try_wait()
            .ok()
            .flatten()
            .map(|status| status.code().unwrap_or(130));
        if code.is_some() && self.took.is_none() {
            self.took = Some(self.started.elapsed());
        }
        code
    }

    /// Asks it to stop as Ctrl-C would: tasks get SIGTERM and their grace, the run is recorded as interrupted.
    pub fn cancel(&mut self) {
        if self.ended().is_some() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: a signal to our own child, which has not been reaped (try_wait said it runs).
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
    }

    /// The run as the Live view shows it: state, and the tail of what it printed.
    pub fn render(&mut self, csrf: &str) -> String {
        let state = match self.ended() {
            None => super::html::badge("running"),
            Some(0) => super::html::badge("succeeded"),
            Some(code) => format!("{} (exit {code})", super::html::badge("failed")),
        };
        let running = self.ended().is_none();
        let output = self
            .output
            .lock()
            .map(|o| String::from_utf8_lossy(&o).into_owned())
            .unwrap_or_default();
        let cancel = if running {
            format!(
                "<form method=\"post\" action=\"/actions/cancel\"><input type=\"hidden\" name=\"csrf\" \
                 value=\"{}\"><button type=\"submit\" id=\"cancel\">Stop this run</button></form>",
                escape(csrf)
            )
        } else {
            String::new()
        };
        format!(
            "<section class=\"page-run\"><h2>Started here: cairn run {}</h2>{}{cancel}<pre id=\"run-output\">{}</pre></section>",
            escape(&self.target),
            facts(&[
                ("state", state),
                (
                    if running { "for" } else { "took" },
                    super::html::duration_ms(
                        self.took.unwrap_or_else(|| self.started.elapsed()).as_secs_f64() * 1000.0,
                    ),
                ),
            ]),
            escape(&output)
        )
    }
}

fn keep_tail(mut stream: Box<dyn Read + Send>, output: &Mutex<Vec<u8>>) {
    let mut buffer = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buffer) {
        if n == 0 {
            break;
        }
        if let Ok(mut kept) = output.lock() {
            kept.extend_from_slice(&buffer[..n]);
            if kept.len() > OUTPUT_TAIL {
                let excess = kept.len() - OUTPUT_TAIL;
                kept.drain(..excess);
            }
        }
    }
}

/// The fields of an `application/x-www-form-urlencoded` body.
pub fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key, true), percent_decode(value, true))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_task_names_become_targets() {
        assert!(valid_target("deploy:production"));
        assert!(!valid_target("--yes"));
        assert!(!valid_target("a b"));
        assert!(!valid_target(""));
    }

    #[test]
    fn form_bodies_are_decoded() {
        assert_eq!(
            form_fields(b"target=deploy%3Astaging&confirmed=yes&x=a+b"),
            vec![
                ("target".into(), "deploy:staging".into()),
                ("confirmed".into(), "yes".into()),
                ("x".into(), "a b".into())
            ]
        );
    }

    #[test]
    fn a_plan_with_a_question_is_recognised() {
        assert!(plan_asks(
            "  3. deploy\n       asks  Deploy to production?\n"
        ));
        assert!(!plan_asks("  1. build\n       $ make\n"));
    }
}
