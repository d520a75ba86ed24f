//! `cairn affected`: what a change touches, for people (`--json` for scripts).

use super::{CliError, Context};
use crate::run::affected::{self, describe, to_json};
use crate::run::Plan;

#[derive(Debug, clap::Args)]
pub(super) struct AffectedArgs {
    /// Consider only these targets and what they depend on (default: every task).
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,
    /// Compare with this commit, branch or tag (default: the merge base with the default branch, else HEAD).
    #[arg(long, value_name = "REF")]
    since: Option<String>,
    /// Print the changes and affected tasks as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn affected(context: &Context, args: &AffectedArgs) -> Result<i32, CliError> {
    let (config, mut graph) = context.load()?;
    let selection = if args.targets.is_empty() {
        graph.select_all()
    } else {
        graph.select(&args.targets)?
    };
    let plan = Plan::new(&graph, &selection, &[]);
    let changes = affected::changes(&config.root, args.since.as_deref())?;
    let targets = (!args.targets.is_empty()).then_some(args.targets.as_slice());
    let found = affected::affected(&config, &plan, targets, &changes);
    if args.json {
        let json = to_json(&changes, &plan, &found);
        println!(
            "{}",
            serde_json::to_string_pretty(&json).map_err(|e| CliError::Io {
                what: "cannot write JSON".into(),
                source: e.into(),
            })?
        );
    } else {
        print!("{}", describe(&changes, &plan, &found));
    }
    Ok(0)
}
