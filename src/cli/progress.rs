//! The live status line at the bottom of a terminal during a run: counts (done, cached, failed, remaining)
//! and the running tasks with their elapsed time. Task output keeps scrolling above it into the normal
//! scrollback: every write clears the line, prints, and draws it again. No alternate screen, no cursor
//! movement beyond the current line, so scrolling back and copying work as usual.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::config::format_duration;

/// Frames of the spinner, one per redraw tick.
const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// How often the line is redrawn when nothing else happens (elapsed times move).
const TICK: Duration = Duration::from_millis(120);

#[derive(Default)]
struct State {
    total: usize,
    done: usize,
    cached: usize,
    failed: usize,
    /// Running jobs by node: label and start.
    running: BTreeMap<usize, (String, Instant)>,
    /// Whether the line is on the screen now.
    drawn: bool,
    frame: usize,
}

/// The status line, shared by the reporter (which writes task output around it) and a ticking thread.
pub struct StatusLine {
    state: Mutex<State>,
    stop: AtomicBool,
    wake: Condvar,
    color: bool,
}

impl StatusLine {
    /// A status line for a run of `total` tasks, redrawn by its own thread until [`StatusLine::finish`].
    pub fn start(total: usize, color: bool) -> Arc<StatusLine> {
        let line = Arc::new(StatusLine {
            state: Mutex::new(State {
                total,
                ..State::default()
            }),
            stop: AtomicBool::new(false),
            wake: Condvar::new(),
            color,
        });
        let ticking = Arc::clone(&line);
        std::thread::spawn(move || {
            let mut state = ticking.state.lock().unwrap_or_else(|e| e.into_inner());
            while !ticking.stop.load(Ordering::Relaxed) {
                state.frame = state.frame.wrapping_add(1);
                ticking.redraw(&mut state);
                state = ticking
                    .wake
                    .wait_timeout(state, TICK)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        });
        line
    }

    /// A job started.
    pub fn started(&self, node: usize, label: &str) {
        let mut state = self.lock();
        state
            .running
            .entry(node)
            .or_insert_with(|| (label.to_owned(), Instant::now()));
        self.redraw(&mut state);
    }

    /// A job ended.
    pub fn finished(&self, node: usize, cached: bool, failed: bool) {
        let mut state = self.lock();
        state.running.remove(&node);
        state.done += 1;
        state.cached += usize::from(cached);
        state.failed += usize::from(failed);
        self.redraw(&mut state);
    }

    /// Writes `bytes` to stdout (or stderr) above the line: clear it, write, draw it again.
    pub fn print(&self, to_stderr: bool, bytes: &[u8]) {
        let mut state = self.lock();
        self.clear(&mut state);
        if to_stderr {
            let _ = std::io::stderr().lock().write_all(bytes);
        } else {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(bytes);
            let _ = out.flush();
        }
        self.redraw(&mut state);
    }

    /// Removes the line for good (before the closing summary).
    pub fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.notify_all();
        let mut state = self.lock();
        self.clear(&mut state);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn clear(&self, state: &mut State) {
        if state.drawn {
            let _ = std::io::stderr().lock().write_all(b"\r\x1b[2K");
            state.drawn = false;
        }
    }

    fn redraw(&self, state: &mut State) {
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        let text = render(state, terminal_width(), self.color);
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(b"\r\x1b[2K");
        let _ = err.write_all(text.as_bytes());
        let _ = err.flush();
        state.drawn = true;
    }
}

/// The line's text, cut to `width` columns so it never wraps (a wrapped line could not be cleared).
fn render(state: &State, width: usize, color: bool) -> String {
    let remaining = state.total.saturating_sub(state.done + state.running.len());
    let spinner = SPINNER[state.frame % SPINNER.len()];
    let mut counts = format!(
        "{spinner} {}/{} done · {} cached · {} failed · {} remaining",
        state.done, state.total, state.cached, state.failed, remaining
    );
    if !state.running.is_empty() {
        let now = Instant::now();
        let mut running: Vec<(&String, Duration)> = state
            .running
            .values()
            .map(|(label, since)| (label, now.saturating_duration_since(*since)))
            .collect();
        // The longest-running first: those are the ones worth watching.
        running.sort_by_key(|r| std::cmp::Reverse(r.1));
        let list: Vec<String> = running
            .iter()
            .map(|(label, took)| format!("{label} {}", format_duration(*took)))
            .collect();
        counts.push_str(" · running: ");
        counts.push_str(&list.join(", "));
    }
    let cut: String = counts
        .chars()
        .take(width.saturating_sub(1).max(10))
        .collect();
    if color {
        format!("\x1b[2m{cut}\x1b[0m")
    } else {
        cut
    }
}

/// Columns of the terminal on stderr (80 when it cannot be told).
fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills the winsize we own.
    unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) == 0 && size.ws_col > 0 {
            usize::from(size.ws_col)
        } else {
            80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_and_lists_the_longest_running_first() {
        let mut state = State {
            total: 10,
            done: 4,
            cached: 2,
            failed: 1,
            ..State::default()
        };
        let now = Instant::now();
        state
            .running
            .insert(1, ("quick".into(), now - Duration::from_millis(200)));
        state
            .running
            .insert(2, ("slow".into(), now - Duration::from_secs(3)));
        let text = render(&state, 200, false);
        assert!(
            text.contains("4/10 done · 2 cached · 1 failed · 4 remaining · running: slow 3."),
            "{text}"
        );
        assert!(text.find("slow").unwrap() < text.find("quick").unwrap());
        assert!(
            render(&state, 30, false).chars().count() <= 29,
            "cut to the width"
        );
    }
}
