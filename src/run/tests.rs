use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;

/// An executor that fails the jobs whose label is listed and records what ran and how many ran at once.
#[derive(Default)]
struct Scripted {
    failing: Vec<&'static str>,
    ran: Mutex<Vec<String>>,
    /// `+label` when a job starts, `-label` when it ends, in order.
    events: Mutex<Vec<String>>,
    running: AtomicUsize,
    peak: AtomicUsize,
}

impl Executor for Arc<Scripted> {
    fn execute(&self, job: Arc<Job>, _context: JobContext) -> ExecutionFuture {
        let this = Arc::clone(self);
        Box::pin(async move {
            this.events
                .lock()
                .expect("not poisoned")
                .push(format!("+{}", job.label));
            let now = this.running.fetch_add(1, Ordering::SeqCst) + 1;
            this.peak.fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            this.running.fetch_sub(1, Ordering::SeqCst);
            this.ran
                .lock()
                .expect("not poisoned")
                .push(job.label.clone());
            this.events
                .lock()
                .expect("not poisoned")
                .push(format!("-{}", job.label));
            if this.failing.contains(&job.label.as_str()) {
                TaskStatus::Failed { code: 3 }
            } else {
                TaskStatus::Succeeded
            }
        })
    }
}

struct Silent;

impl Reporter for Silent {}

fn job(label: &str, retries: u32) -> Job {
    Job {
        retries,
        ..super::job::test_job(label)
    }
}

/// a, b (after a), c (after b), d (independent).
fn plan(retries: u32) -> Plan {
    Plan {
        jobs: ["a", "b", "c", "d"]
            .iter()
            .map(|l| Arc::new(job(l, retries)))
            .collect(),
        deps: vec![vec![], vec![0], vec![1], vec![]],
    }
}

fn run_plan(plan: &Plan, executor: Arc<Scripted>, jobs: usize, keep_going: bool) -> RunReport {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let options = RunOptions {
        jobs,
        keep_going,
        handle_signals: false,
        force: false,
        stop: None,
        remote: None,
    };
    runtime
        .block_on(execute(
            plan,
            &options,
            Arc::new(executor),
            Arc::new(Silent),
            None,
        ))
        .expect("runs")
}

#[test]
fn dependencies_finish_before_dependents_start() {
    let executor = Arc::new(Scripted::default());
    let report = run_plan(&plan(0), Arc::clone(&executor), 4, false);
    assert_eq!(report.exit_code(), 0);
    let ran = executor.ran.lock().expect("not poisoned").clone();
    let at = |l: &str| ran.iter().position(|r| r == l).expect("ran");
    assert!(at("a") < at("b") && at("b") < at("c"));
}

#[test]
fn parallelism_never_exceeds_the_limit() {
    let executor = Arc::new(Scripted::default());
    let wide = Plan {
        jobs: (0..20)
            .map(|i| Arc::new(job(&format!("t{i}"), 0)))
            .collect(),
        deps: vec![vec![]; 20],
    };
    run_plan(&wide, Arc::clone(&executor), 3, false);
    assert_eq!(executor.peak.load(Ordering::SeqCst), 3);
}

#[test]
fn failure_skips_dependents_and_names_the_root_cause() {
    let executor = Arc::new(Scripted {
        failing: vec!["a"],
        ..Scripted::default()
    });
    let report = run_plan(&plan(0), executor, 1, false);
    assert_eq!(report.first_failure, Some(0));
    assert_eq!(report.exit_code(), 3);
    assert_eq!(
        report.results[1].status,
        TaskStatus::Skipped { blocked_by: 0 }
    );
    assert_eq!(
        report.results[2].status,
        TaskStatus::Skipped { blocked_by: 0 }
    );
    // With one job at a time, the independent task had not started when `a` failed.
    assert_eq!(report.results[3].status, TaskStatus::NotRun);
}

#[test]
fn keep_going_runs_independent_tasks() {
    let executor = Arc::new(Scripted {
        failing: vec!["a"],
        ..Scripted::default()
    });
    let report = run_plan(&plan(0), executor, 1, true);
    assert_eq!(report.results[3].status, TaskStatus::Succeeded);
    assert_eq!(
        report.results[2].status,
        TaskStatus::Skipped { blocked_by: 0 }
    );
}

#[test]
fn retries_repeat_a_failing_task() {
    let executor = Arc::new(Scripted {
        failing: vec!["a"],
        ..Scripted::default()
    });
    let report = run_plan(&plan(2), Arc::clone(&executor), 1, false);
    assert_eq!(report.results[0].attempts, 3);
    let ran = executor.ran.lock().expect("not poisoned").clone();
    assert_eq!(ran.iter().filter(|l| *l == "a").count(), 3);
}

/// `count` instances of one rollout, with no dependencies between them.
fn rollout(count: usize, max_parallel: usize, serial: bool) -> Plan {
    Plan {
        jobs: (0..count)
            .map(|rank| {
                let mut job = job(&format!("h{rank}"), 0);
                job.rollout = Some(super::job::RolloutSlot {
                    group: 1000,
                    max_parallel,
                    serial,
                    rank,
                });
                Arc::new(job)
            })
            .collect(),
        deps: vec![vec![]; count],
    }
}

proptest::proptest! {
    #[test]
    fn a_rollout_keeps_its_pace_and_stops_at_the_first_failure(
        count in 1usize..12,
        max_parallel in 1usize..5,
        serial in proptest::bool::ANY,
        failing in proptest::collection::btree_set(0usize..12, 0..3),
    ) {
        let max_parallel = if serial { 1 } else { max_parallel };
        let labels: Vec<&'static str> = failing
            .iter()
            .map(|i| &*Box::leak(format!("h{i}").into_boxed_str()))
            .collect();
        let executor = Arc::new(Scripted { failing: labels, ..Scripted::default() });
        // Plenty of slots and --keep-going: only the rollout may hold instances back.
        let report = run_plan(&rollout(count, max_parallel, serial), Arc::clone(&executor), 8, true);
        let ran = executor.ran.lock().expect("not poisoned").clone();
        proptest::prop_assert!(executor.peak.load(Ordering::SeqCst) <= max_parallel);
        let first_failure = (0..count).find(|i| failing.contains(i));
        let ranks: Vec<usize> = ran.iter().map(|l| l[1..].parse().expect("rank")).collect();
        match first_failure {
            None => proptest::prop_assert_eq!(ranks.len(), count),
            Some(f) if serial => {
                proptest::prop_assert_eq!(ranks, (0..=f).collect::<Vec<_>>());
                for later in f + 1..count {
                    proptest::prop_assert_eq!(&report.results[later].status, &TaskStatus::Skipped { blocked_by: f });
                }
            }
            Some(_) => {
                // Once a failure has ended, no instance starts; those already running finish.
                let events = executor.events.lock().expect("not poisoned").clone();
                let failed_at = events
                    .iter()
                    .position(|e| e.strip_prefix('-').is_some_and(|l| failing.contains(&l[1..].parse::<usize>().expect("rank"))))
                    .expect("a failure ended");
                proptest::prop_assert!(!events[failed_at..].iter().any(|e| e.starts_with('+')), "{:?}", events);
                // And they started in matrix order.
                let starts: Vec<usize> = events.iter().filter_map(|e| e.strip_prefix("+h")).map(|r| r.parse().expect("rank")).collect();
                proptest::prop_assert!(starts.windows(2).all(|w| w[0] < w[1]), "{:?}", starts);
            }
        }
    }
}
