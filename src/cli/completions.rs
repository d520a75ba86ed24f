//! Shell completion. The scripts are thin: each TAB asks `cairn __complete line "…"` for candidates, which
//! are worked out from the command-line grammar itself (subcommands, flags, their values) and from tasks.toml
//! (task names and param values). A new flag or subcommand completes without touching this file.

use clap::builder::ValueHint;
use clap::{Arg, ArgAction, Command, ValueEnum};

/// Shells with a completion script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// What the scripts print in place of candidates when the shell should complete file names itself.
const FILES: &str = "__files__";

pub(super) fn script(shell: Shell) -> String {
    match shell {
        Shell::Bash => format!(
            r#"# bash completion for cairn; load with: source <(cairn completions bash)
_cairn() {{
    local line
    if [[ -n "${{COMP_LINE-}}" ]]; then
        line="${{COMP_LINE:0:COMP_POINT}}"
    else
        line="${{COMP_WORDS[*]:0:COMP_CWORD+1}}"
    fi
    local IFS=$'\n'
    local -a found
    found=($(cairn __complete line "$line" 2>/dev/null))
    if [[ "${{found[0]-}}" == {FILES} ]]; then
        COMPREPLY=($(compgen -f -- "${{COMP_WORDS[COMP_CWORD]}}"))
        return
    fi
    COMPREPLY=("${{found[@]}}")
    # bash splits words at ':' (deploy:production), so only the part after the last ':' is replaced.
    local word="${{line##*[[:space:]]}}"
    if [[ "$COMP_WORDBREAKS" == *:* && "$word" == *:* ]]; then
        local prefix="${{word%"${{word##*:}}"}}"
        COMPREPLY=("${{COMPREPLY[@]#"$prefix"}}")
    fi
}}
complete -F _cairn cairn
"#
        ),
        Shell::Zsh => format!(
            r#"#compdef cairn
# zsh completion for cairn; load with: source <(cairn completions zsh)
_cairn() {{
    local -a found
    found=("${{(@f)$(cairn __complete line "${{BUFFER[1,CURSOR]}}" 2>/dev/null)}}")
    if [[ "${{found[1]}}" == {FILES} ]]; then
        _files
    else
        compadd -Q -- "${{found[@]}}"
    fi
}}
compdef _cairn cairn
"#
        ),
        Shell::Fish => format!(
            r#"# fish completion for cairn; load with: cairn completions fish | source
function __cairn_complete
    set -l found (cairn __complete line (commandline -cp) 2>/dev/null)
    if test "$found[1]" = {FILES}
        __fish_complete_path (commandline -ct)
    else
        printf '%s\n' $found
    end
end
complete -c cairn -f -a '(__cairn_complete)'
"#
        ),
    }
}

/// The candidates for the last word of `line` (the command line up to the cursor): matching subcommands,
/// flags or values, or [`FILES`]. `targets` lists task names and instances, asked only when they are wanted.
pub(super) fn candidates(
    line: &str,
    root: &Command,
    targets: impl FnOnce() -> Vec<String>,
) -> Vec<String> {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    if line.is_empty() || line.ends_with(char::is_whitespace) {
        words.push("");
    }
    if words.len() < 2 {
        return Vec::new();
    }
    let (current, before) = words.split_last().expect("at least two words");
    // Positions and counts of arguments are filled in when the grammar is built.
    let mut built = root.clone();
    built.build();
    let root = &built;
    let mut path = vec![root];
    let mut positionals = 0usize;
    let mut skip_value = false;
    let mut after_separator = false;
    for word in &before[1..] {
        let command = *path.last().expect("the root is there");
        if skip_value {
            skip_value = false;
            continue;
        }
        if after_separator {
            continue;
        }
        if *word == "--" {
            after_separator = true;
            continue;
        }
        if word.starts_with('-') {
            skip_value = !word.contains('=') && find_option(&path, word).is_some_and(takes_value);
            continue;
        }
        match command
            .get_subcommands()
            .find(|s| s.get_name() == *word || s.get_all_aliases().any(|a| a == *word))
        {
            Some(sub) => {
                path.push(sub);
                positionals = 0;
            }
            None => positionals += 1,
        }
    }
    if after_separator {
        return vec![FILES.to_owned()];
    }
    let command = *path.last().expect("the root is there");
    let previous = before.last().copied().unwrap_or_default();
    // A flag's value: `--output gr`, or `--output=gr`.
    if let Some((flag, partial)) = current.split_once('=').filter(|(f, _)| f.starts_with("--")) {
        if let Some(arg) = find_option(&path, flag) {
            return values_of(arg, partial, Vec::new)
                .into_iter()
                .map(|v| if v == FILES { v } else { format!("{flag}={v}") })
                .collect();
        }
    }
    if previous.starts_with('-') && !previous.contains('=') {
        if let Some(arg) = find_option(&path, previous).filter(|a| takes_value(a)) {
            return values_of(arg, current, targets);
        }
    }
    if current.starts_with('-') {
        let innermost = path.len() - 1;
        let mut flags: Vec<String> = path
            .iter()
            .enumerate()
            .flat_map(|(depth, cmd)| {
                cmd.get_arguments()
                    .filter(move |a| depth == innermost || a.is_global_set())
            })
            .filter(|a| !a.is_hide_set() && !a.is_positional())
            .flat_map(|a| {
                let long = a.get_long().map(|l| format!("--{l}"));
                let short = a.get_short().map(|s| format!("-{s}"));
                long.into_iter().chain(short)
            })
            .chain(["--help".to_owned()])
            .filter(|f| f.starts_with(*current))
            .collect();
        flags.sort();
        flags.dedup();
        return flags;
    }
    let subcommands: Vec<String> = command
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_owned())
        .filter(|name| name.starts_with(*current))
        .collect();
    if !subcommands.is_empty() || command.has_subcommands() {
        return subcommands;
    }
    let positional = command
        .get_positionals()
        .filter(|a| !a.is_last_set())
        .find(|a| {
            let many = matches!(a.get_action(), ArgAction::Append)
                || a.get_num_args().is_some_and(|n| n.max_values() > 1);
            many || a.get_index().is_some_and(|i| i > positionals)
        });
    match positional {
        Some(arg) => values_of(arg, current, targets),
        None => Vec::new(),
    }
}

/// A flag of the innermost command, or a global one of any command above it.
fn find_option<'c>(path: &[&'c Command], flag: &str) -> Option<&'c Arg> {
    let flag = flag.split_once('=').map_or(flag, |(f, _)| f);
    path.iter().rev().enumerate().find_map(|(up, command)| {
        command.get_arguments().find(|a| {
            (up == 0 || a.is_global_set())
                && (flag
                    .strip_prefix("--")
                    .is_some_and(|l| a.get_long() == Some(l))
                    || flag
                        .strip_prefix('-')
                        .filter(|s| s.chars().count() == 1)
                        .is_some_and(|s| a.get_short().map(String::from).as_deref() == Some(s)))
        })
    })
}

fn takes_value(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Set | ArgAction::Append)
}

/// The values `arg` accepts that start with `partial`: its enumerated values, task targets, or files.
fn values_of(arg: &Arg, partial: &str, targets: impl FnOnce() -> Vec<String>) -> Vec<String> {
    let possible = arg.get_possible_values();
    if !possible.is_empty() {
        return possible
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_owned())
            .filter(|v| v.starts_with(partial))
            .collect();
    }
    let names_a_target = arg
        .get_value_names()
        .is_some_and(|names| names.iter().any(|n| n.as_str() == "TARGET"))
        || matches!(arg.get_id().as_str(), "targets" | "target");
    if names_a_target {
        let mut found: Vec<String> = targets()
            .into_iter()
            .filter(|t| t.starts_with(partial))
            .collect();
        found.sort();
        found.dedup();
        return found;
    }
    let names_a_path = matches!(
        arg.get_value_hint(),
        ValueHint::AnyPath | ValueHint::FilePath | ValueHint::DirPath
    ) || arg.get_value_names().is_some_and(|names| {
        names
            .iter()
            .any(|n| matches!(n.as_str(), "PATH" | "FILE" | "DIR"))
    }) || arg.get_id().as_str().contains("file");
    if names_a_path {
        return vec![FILES.to_owned()];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn complete(line: &str) -> Vec<String> {
        candidates(line, &super::super::Cli::command(), || {
            vec![
                "build".into(),
                "deploy:production".into(),
                "deploy:staging".into(),
            ]
        })
    }

    #[test]
    fn subcommands_and_nested_subcommands_complete() {
        assert!(complete("cairn ").contains(&"run".to_owned()));
        assert!(
            !complete("cairn ").contains(&"__complete".to_owned()),
            "hidden"
        );
        assert_eq!(complete("cairn ca"), ["cache"]);
        let cache = complete("cairn cache ");
        for sub in ["stats", "gc", "clean", "keygen", "remote"] {
            assert!(cache.contains(&sub.to_owned()), "{sub} in {cache:?}");
        }
    }

    #[test]
    fn flags_of_the_command_and_global_flags_complete() {
        let flags = complete("cairn run --");
        for flag in [
            "--remote",
            "--jobs",
            "--dry-run",
            "--file",
            "--color",
            "--help",
        ] {
            assert!(flags.contains(&flag.to_owned()), "{flag} in {flags:?}");
        }
        assert_eq!(complete("cairn run --rem"), ["--remote", "--remote-exec"]);
        assert!(!complete("cairn cache gc --").contains(&"--remote".to_owned()));
    }

    #[test]
    fn flag_values_complete_from_their_possible_values() {
        assert_eq!(
            complete("cairn run build --remote "),
            ["off", "read", "read-write"]
        );
        assert_eq!(complete("cairn run build --output g"), ["grouped"]);
        assert_eq!(complete("cairn run build --output=g"), ["--output=grouped"]);
        assert_eq!(complete("cairn --color n"), ["never"]);
        assert_eq!(complete("cairn completions "), ["bash", "zsh", "fish"]);
        assert_eq!(complete("cairn -f "), [FILES]);
        assert_eq!(complete("cairn cache keygen --output "), [FILES]);
    }

    #[test]
    fn targets_complete_after_flags_and_other_targets() {
        assert_eq!(
            complete("cairn run deploy:"),
            ["deploy:production", "deploy:staging"]
        );
        assert_eq!(complete("cairn run -j 2 b"), ["build"]);
        assert_eq!(complete("cairn run build dep").len(), 2);
        assert_eq!(complete("cairn why b"), ["build"]);
        assert!(complete("cairn run build -- ").contains(&FILES.to_owned()));
    }
}
