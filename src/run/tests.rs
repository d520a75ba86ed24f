use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;

/// An executor that fails the jobs whose label is listed and records what ran and how many ran at once.
#[derive(Default)]
struct Scripted {
    failing: Vec<&'static str>,
    ran: Mutex<Vec<String>>,
    running: AtomicUsize,
    peak: AtomicUsize,
}

impl Executor for Arc<Scripted> {
    fn execute(&self, job: Arc<Job>, _context: JobContext) -> ExecutionFuture {
        let this = Arc::clone(self);
        Box::pin(async move {
            let now = this.running.fetch_add(1, Ordering::SeqCst) + 1;
            this.peak.fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            this.running.fetch_sub(1, Ordering::SeqCst);
            this.ran
                .lock()
                .expect("not poisoned")
                .push(job.label.clone());
            if this.failing.contains(&job.label.as_str()) {
                TaskStatus::Failed { code: 3 }
            } else {
                TaskStatus::Succeeded
            }
        })
    }
}

struct Silent;

impl Reporter for Silent {
    fn started(&self, _: &Job, _: u32) {}
    fn output(&self, _: &Job, _: Stream, _: &[u8]) {}
    fn finished(&self, _: &Job, _: &TaskResult) {}
    fn retrying(&self, _: &Job, _: &TaskStatus, _: u32, _: u32) {}
    fn note(&self, _: &Job, _: &str) {}
    fn cache_hit(&self, _: &Job, _: &crate::cache::Key) {}
}

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
