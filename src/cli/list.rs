//! `cairn list` and the candidates the completion scripts ask for.

use crate::config::{MatrixValues, NamePart};

use super::{CliError, Context};

#[derive(Debug, Default, clap::Args)]
pub(super) struct ListArgs {
    /// Print only runnable names, one per line (pattern tasks once per listed value).
    #[arg(long)]
    names: bool,
}

pub(super) fn list(context: &Context, args: &ListArgs) -> Result<i32, CliError> {
    let (config, graph) = context.load()?;
    if args.names {
        for node in graph.nodes() {
            println!("{}", node.label);
        }
        return Ok(0);
    }
    let width = config
        .tasks
        .iter()
        .map(|t| t.name.text.chars().count())
        .max()
        .unwrap_or(0);
    let bold = |text: &str| {
        if context.color {
            format!("\x1b[1m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    };
    let dim = |text: &str| {
        if context.color {
            format!("\x1b[2m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    };
    for task in &config.tasks {
        let name = format!("{:<width$}", task.name.text);
        match &task.description {
            Some(description) => println!("{}  {}", bold(&name), description),
            None => println!("{}", bold(&name)),
        }
        for part in &task.name.parts {
            let NamePart::Param(i) = part else { continue };
            let param = &task.params[*i];
            let values = match &param.values {
                Some(values) => values.join(" | "),
                None => "any value".to_owned(),
            };
            let default = param
                .default
                .as_ref()
                .map(|d| format!(" (default: {d})"))
                .unwrap_or_default();
            let description = param
                .description
                .as_ref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            println!(
                "{:<width$}    {}",
                "",
                dim(&format!("{}{description} = {values}{default}", param.name))
            );
        }
        for matrix in &task.matrix {
            let values = match &matrix.values {
                MatrixValues::Listed(values) => values.join(" | "),
                MatrixValues::File {
                    file,
                    key_text,
                    filter,
                    ..
                } => {
                    let filter = filter
                        .as_ref()
                        .map(|f| format!(" where {f}"))
                        .unwrap_or_default();
                    format!("each of `{key_text}` in {}{filter}", file.name)
                }
            };
            let rollout = match task.rollout {
                Some(r) if r.serial => ", one at a time",
                Some(_) => ", a few at a time",
                None => "",
            };
            println!(
                "{:<width$}    {}",
                "",
                dim(&format!("{} = {values}{rollout}", matrix.name))
            );
        }
    }
    Ok(0)
}

/// Prints completion candidates; prints nothing (and never fails) where there is no valid tasks.toml.
pub(super) fn complete(context: &Context, what: &str, line: Option<&str>) {
    let found = match (what, line) {
        ("targets", _) => targets(context),
        ("line", Some(line)) => {
            use clap::CommandFactory;
            super::completions::candidates(line, &super::Cli::command(), || targets(context))
        }
        _ => return,
    };
    for candidate in found {
        println!("{candidate}");
    }
}

/// Every task instance, and each pattern task's base name when all its params have defaults.
fn targets(context: &Context) -> Vec<String> {
    let Ok((config, graph)) = context.load() else {
        return Vec::new();
    };
    let mut found: Vec<String> = graph.nodes().iter().map(|n| n.label.to_string()).collect();
    for task in &config.tasks {
        if let Some(base) = task.name.base() {
            if task.params.iter().all(|p| p.default.is_some()) {
                found.push(base.to_owned());
            }
        }
    }
    found
}
