//! `cairn bench TARGET…`: runs targets repeatedly, cold (cache bypassed) and warm (cache primed), and reports
//! min / median / max / stddev, the cache hit rate and the cold/warm ratio; compares with an earlier result.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::report::{compare, BenchResult, ModeStats, RunSummary, BENCH_SCHEMA};

use super::{CliError, Context};

#[derive(Debug, clap::Args)]
pub(super) struct BenchArgs {
    /// The targets to run, as for `cairn run`.
    #[arg(required = true)]
    targets: Vec<String>,
    /// Measured runs per mode.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: u32,
    /// Unmeasured runs before the measured ones, per mode.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=100))]
    warmup: u32,
    /// Only the cold mode: every task runs (`--no-cache`).
    #[arg(long, conflicts_with = "warm")]
    cold: bool,
    /// Only the warm mode: the cache is primed, so cached tasks are restored.
    #[arg(long)]
    warm: bool,
    /// An earlier result (JSON) to compare with; a median slower by more than --threshold fails the bench.
    #[arg(long, value_name = "PATH")]
    compare: Option<PathBuf>,
    /// How much slower a median may get before it is a regression, in percent.
    #[arg(long, default_value_t = 10.0, value_name = "PERCENT")]
    threshold: f64,
    /// Also write the result to this file (it is always kept in .cairn/bench/).
    #[arg(long, value_name = "PATH")]
    save: Option<PathBuf>,
    /// Print the result as JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Give a var of [vars] another value for the runs.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
}

/// One `cairn run` of the targets in a child process: its wall time and its summary.
fn run_once(
    tasks_file: &Path,
    args: &BenchArgs,
    cold: bool,
    scratch: &Path,
) -> Result<(f64, RunSummary), CliError> {
    let exe = std::env::current_exe().map_err(|source| CliError::Io {
        what: "cannot find cairn's own executable".into(),
        source,
    })?;
    let summary_file = scratch.join("summary.json");
    let mut command = Command::new(exe);
    command
        .arg("-f")
        .arg(tasks_file)
        .args(["--color", "never", "run"])
        .args(&args.targets)
        .arg("--summary")
        .arg(&summary_file)
        .args(["--output", "grouped"])
        // What is measured is this machine: a remote cache would make warm runs depend on the network.
        .args(["--remote", "off"])
        .stdin(Stdio::null());
    if cold {
        command.arg("--no-cache");
    }
    for assignment in &args.set {
        command.args(["--set", assignment]);
    }
    let began = Instant::now();
    let output = command.output().map_err(|source| CliError::Io {
        what: "cannot start cairn for a bench run".into(),
        source,
    })?;
    let took = began.elapsed().as_secs_f64() * 1000.0;
    if !output.status.success() {
        let tail: Vec<&str> = std::str::from_utf8(&output.stderr)
            .unwrap_or_default()
            .lines()
            .rev()
            .take(15)
            .collect();
        return Err(CliError::Query {
            message: format!(
                "a bench run of `{}` failed (exit status {}):\n{}",
                args.targets.join(" "),
                output.status.code().unwrap_or(-1),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ),
            help: Some(
                "a bench measures a target that succeeds: fix it with `cairn run` first".into(),
            ),
        });
    }
    let summary = RunSummary::read(&summary_file).map_err(|message| CliError::Query {
        message,
        help: None,
    })?;
    Ok((took, summary))
}

fn measure(
    tasks_file: &Path,
    args: &BenchArgs,
    cold: bool,
    scratch: &Path,
) -> Result<ModeStats, CliError> {
    for _ in 0..args.warmup {
        run_once(tasks_file, args, cold, scratch)?;
    }
    if !cold && args.warmup == 0 {
        // A warm run needs a primed cache even when no warm-up was asked for.
        run_once(tasks_file, args, cold, scratch)?;
    }
    let (mut times, mut hits, mut tasks) = (Vec::new(), 0, 0);
    for _ in 0..args.runs {
        let (took, summary) = run_once(tasks_file, args, cold, scratch)?;
        times.push(took);
        hits += summary.totals.cached;
        tasks += summary.totals.tasks;
    }
    Ok(ModeStats::new(times, hits, tasks))
}

fn ms(value: f64) -> String {
    if value >= 1000.0 {
        format!("{:.3}s", value / 1000.0)
    } else {
        format!("{value:.1}ms")
    }
}

pub(super) fn bench(context: &Context, args: &BenchArgs) -> Result<i32, CliError> {
    let (config, mut graph) = context.load()?;
    // The targets are checked here, once, rather than failing inside the first child run.
    graph.select(&args.targets)?;
    let scratch = tempfile::Builder::new()
        .prefix("cairn-bench-")
        .tempdir()
        .map_err(|source| CliError::Io {
            what: "cannot create a scratch directory".into(),
            source,
        })?;
    let (do_cold, do_warm) = match (args.cold, args.warm) {
        (false, false) => (true, true),
        other => other,
    };
    let cold = if do_cold {
        eprintln!(
            "cairn: bench: {} cold run(s) of `{}`…",
            args.runs,
            args.targets.join(" ")
        );
        Some(measure(&config.path, args, true, scratch.path())?)
    } else {
        None
    };
    let warm = if do_warm {
        eprintln!("cairn: bench: {} warm run(s)…", args.runs);
        Some(measure(&config.path, args, false, scratch.path())?)
    } else {
        None
    };
    let result = BenchResult {
        schema: BENCH_SCHEMA,
        cairn: env!("CARGO_PKG_VERSION").to_owned(),
        targets: args.targets.clone(),
        created_at: crate::report::rfc3339_millis(std::time::SystemTime::now()),
        runs: args.runs as usize,
        warmup: args.warmup as usize,
        cold_over_warm: match (&cold, &warm) {
            (Some(c), Some(w)) if w.median_ms > 0.0 => Some(c.median_ms / w.median_ms),
            _ => None,
        },
        cold,
        warm,
    };
    let text = serde_json::to_string_pretty(&result).expect("results serialise");
    let kept = config.root.join(".cairn/bench").join(format!(
        "{}.json",
        result.created_at.replace([':', '-'], "")
    ));
    for path in std::iter::once(&kept).chain(args.save.as_ref()) {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(error) = crate::atomic::write_atomic(path, text.as_bytes()) {
            eprintln!("cairn: warning: cannot write {}: {error}", path.display());
        }
    }
    if args.json {
        println!("{text}");
    } else {
        println!(
            "{:<5} {:>10} {:>10} {:>10} {:>10}  {:>8}",
            "mode", "min", "median", "max", "stddev", "hits"
        );
        for (name, stats) in [("cold", &result.cold), ("warm", &result.warm)] {
            if let Some(s) = stats {
                println!(
                    "{name:<5} {:>10} {:>10} {:>10} {:>10}  {:>7.0}%",
                    ms(s.min_ms),
                    ms(s.median_ms),
                    ms(s.max_ms),
                    ms(s.stddev_ms),
                    s.hit_rate * 100.0
                );
            }
        }
        if let Some(ratio) = result.cold_over_warm {
            println!("cold / warm: {ratio:.2}× (medians)");
        }
        eprintln!("cairn: bench result kept in {}", kept.display());
    }
    let Some(earlier) = &args.compare else {
        return Ok(0);
    };
    let before: BenchResult = std::fs::read(earlier)
        .map_err(|source| CliError::Io {
            what: format!("cannot read `{}`", earlier.display()),
            source,
        })
        .and_then(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| CliError::Query {
                message: format!("`{}` is not a bench result: {e}", earlier.display()),
                help: Some("compare with a file written by `cairn bench --save`".into()),
            })
        })?;
    let comparisons = compare(&before, &result, args.threshold / 100.0);
    let mut regressed = false;
    for c in &comparisons {
        regressed |= c.regression;
        eprintln!(
            "cairn: {} median {} → {} ({:+.1}%){}",
            c.mode,
            ms(c.before_ms),
            ms(c.now_ms),
            c.change * 100.0,
            if c.regression {
                format!(": REGRESSION beyond {}%", args.threshold)
            } else {
                String::new()
            }
        );
    }
    Ok(i32::from(regressed))
}
