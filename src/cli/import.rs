//! `cairn import FILE`: write a tasks.toml from another runner's file and say what could not be translated.

use std::path::PathBuf;

use super::CliError;

#[derive(Debug, clap::Args)]
pub(super) struct ImportArgs {
    /// A justfile, Taskfile.yml, or package.json (turbo.json beside it is read too).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Where to write (default: tasks.toml beside FILE); `-` prints it instead.
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Replace an existing tasks.toml.
    #[arg(long)]
    force: bool,
}

pub(super) fn import(args: &ImportArgs) -> Result<i32, CliError> {
    let imported = crate::import::import(&args.file)?;
    let target = args.output.clone().unwrap_or_else(|| {
        args.file
            .parent()
            .map_or_else(|| PathBuf::from("tasks.toml"), |dir| dir.join("tasks.toml"))
    });
    if target.as_os_str() == "-" {
        print!("{}", imported.text);
    } else {
        if target.exists() && !args.force {
            return Err(CliError::Import(crate::import::ImportError::Exists {
                path: target.display().to_string(),
            }));
        }
        crate::atomic::write_atomic(&target, imported.text.as_bytes()).map_err(|source| {
            CliError::Io {
                what: format!("cannot write {}", target.display()),
                source,
            }
        })?;
        eprintln!(
            "cairn: wrote {} with {} task{} from {}",
            target.display(),
            imported.tasks,
            if imported.tasks == 1 { "" } else { "s" },
            args.file.display()
        );
    }
    if !imported.notes.is_empty() {
        eprintln!(
            "cairn: {} thing{} could not be translated (listed at the top of the file too):",
            imported.notes.len(),
            if imported.notes.len() == 1 { "" } else { "s" }
        );
        for note in &imported.notes {
            eprintln!("  - {note}");
        }
    }
    Ok(0)
}
