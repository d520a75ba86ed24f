//! What a run looked like, for people: the closing summary (and, later, summaries on disk and traces).

mod summary;

pub use summary::{render_summary, SummaryStyle};
