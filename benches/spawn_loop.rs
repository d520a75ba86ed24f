//! The floor for the fan-out comparison in benches/peers.sh: spawn `true` N times, J at a time, with nothing
//! else. Usage: `spawn_loop N J`.

use std::process::{Child, Command};

fn main() {
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let parallel: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2).max(1);
    let mut running: Vec<Child> = Vec::with_capacity(parallel);
    let mut started = 0;
    while started < total || !running.is_empty() {
        while started < total && running.len() < parallel {
            running.push(Command::new("true").spawn().expect("true is on PATH"));
            started += 1;
        }
        let mut first = running.remove(0);
        first.wait().expect("child can be waited for");
    }
}
