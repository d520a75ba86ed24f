//! `cairn bench` results: repeated runs of a target, cold (cache bypassed) and warm (cache hits), their
//! statistics, and the comparison with an earlier result that flags regressions.

use serde::{Deserialize, Serialize};

/// The version of [`BenchResult`]'s format.
pub const BENCH_SCHEMA: u32 = 1;

/// One bench: the same targets, several runs per mode.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BenchResult {
    /// [`BENCH_SCHEMA`].
    pub schema: u32,
    /// The cairn version that measured it.
    pub cairn: String,
    /// The targets run.
    pub targets: Vec<String>,
    /// When it was measured (RFC 3339).
    pub created_at: String,
    /// Measured runs per mode.
    pub runs: usize,
    /// Unmeasured runs before them.
    pub warmup: usize,
    /// The cold runs (`--no-cache`: every task runs), if measured.
    pub cold: Option<ModeStats>,
    /// The warm runs (the cache primed: hits where tasks are cached), if measured.
    pub warm: Option<ModeStats>,
    /// Cold median over warm median, when both were measured.
    pub cold_over_warm: Option<f64>,
}

/// The runs of one mode.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModeStats {
    /// Each run's wall time, in order.
    pub times_ms: Vec<f64>,
    /// Fastest.
    pub min_ms: f64,
    /// Median.
    pub median_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Sample standard deviation (0 for one run).
    pub stddev_ms: f64,
    /// Cache hits over tasks, across the runs.
    pub hit_rate: f64,
}

impl ModeStats {
    /// Statistics of `times_ms`, with `hits` of `tasks` restored from the cache across them.
    pub fn new(times_ms: Vec<f64>, hits: usize, tasks: usize) -> ModeStats {
        let mut sorted = times_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len().max(1) as f64;
        let mean = sorted.iter().sum::<f64>() / n;
        let variance = if sorted.len() > 1 {
            sorted.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        let median = match sorted.len() {
            0 => 0.0,
            len if len % 2 == 1 => sorted[len / 2],
            len => (sorted[len / 2 - 1] + sorted[len / 2]) / 2.0,
        };
        ModeStats {
            min_ms: sorted.first().copied().unwrap_or_default(),
            max_ms: sorted.last().copied().unwrap_or_default(),
            median_ms: median,
            mean_ms: mean,
            stddev_ms: variance.sqrt(),
            hit_rate: if tasks == 0 {
                0.0
            } else {
                hits as f64 / tasks as f64
            },
            times_ms,
        }
    }
}

/// How one mode's median moved against an earlier bench.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// `cold` or `warm`.
    pub mode: &'static str,
    /// The earlier median.
    pub before_ms: f64,
    /// This median.
    pub now_ms: f64,
    /// now / before − 1.
    pub change: f64,
    /// Whether the change is beyond the threshold.
    pub regression: bool,
}

/// Compares the modes both results measured; a median slower by more than `threshold` (0.1 = 10 %) is a
/// regression.
pub fn compare(before: &BenchResult, now: &BenchResult, threshold: f64) -> Vec<Comparison> {
    let pairs = [
        ("cold", &before.cold, &now.cold),
        ("warm", &before.warm, &now.warm),
    ];
    pairs
        .into_iter()
        .filter_map(|(mode, before, now)| {
            let (before, now) = (before.as_ref()?, now.as_ref()?);
            let change = if before.median_ms > 0.0 {
                now.median_ms / before.median_ms - 1.0
            } else {
                0.0
            };
            Some(Comparison {
                mode,
                before_ms: before.median_ms,
                now_ms: now.median_ms,
                change,
                regression: change > threshold,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_a_few_runs() {
        let stats = ModeStats::new(vec![30.0, 10.0, 20.0, 40.0], 3, 8);
        assert_eq!(
            (stats.min_ms, stats.median_ms, stats.max_ms),
            (10.0, 25.0, 40.0)
        );
        assert_eq!(stats.mean_ms, 25.0);
        assert!(
            (stats.stddev_ms - 12.909_944).abs() < 1e-5,
            "{}",
            stats.stddev_ms
        );
        assert_eq!(stats.hit_rate, 0.375);
        assert_eq!(
            stats.times_ms,
            [30.0, 10.0, 20.0, 40.0],
            "kept in run order"
        );
    }

    #[test]
    fn a_slower_median_beyond_the_threshold_is_a_regression() {
        let result = |cold: f64, warm: f64| BenchResult {
            schema: BENCH_SCHEMA,
            cairn: "0".into(),
            targets: vec![],
            created_at: String::new(),
            runs: 1,
            warmup: 0,
            cold: Some(ModeStats::new(vec![cold], 0, 1)),
            warm: Some(ModeStats::new(vec![warm], 1, 1)),
            cold_over_warm: None,
        };
        let found = compare(&result(100.0, 10.0), &result(105.0, 12.0), 0.1);
        assert!(!found[0].regression, "cold +5 %");
        assert!(found[1].regression, "warm +20 %");
        assert!((found[1].change - 0.2).abs() < 1e-9);
    }
}
