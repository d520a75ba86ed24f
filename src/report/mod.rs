//! What a run looked like, for people: the closing summary, the run record on disk (`.cairn/runs/`), history
//! across runs, Chrome traces and the HTML report.

mod bench;
mod history;
mod html;
mod live;
mod record;
mod run_summary;
mod summary;
mod trace;

pub use bench::{compare, BenchResult, Comparison, ModeStats, BENCH_SCHEMA};
pub use history::{percentile, task_history, TaskHistory};
pub use html::html_report;
pub use live::{stop_request_path, LiveFeed, LIVE_DIR, UI_MARKER};
pub use record::{JobRecord, PhaseTiming, RunRecorder};
pub use run_summary::{
    files_with_extension, list_runs, prune_runs, rfc3339_millis, runs_dir, CriticalPath,
    PhaseSummary, RemoteTotals, RunContext, RunSummary, TaskSummary, Totals, KEPT_RUNS,
    KEPT_RUNS_BYTES, SCHEMA,
};
pub use summary::{render_summary, SummaryStyle};
pub use trace::{chrome_trace, worker_rows};
