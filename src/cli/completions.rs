//! Completion scripts. Task names and param values change with tasks.toml, so the scripts ask
//! `cairn __complete targets` for them each time instead of baking them in.

use clap::ValueEnum;

/// Shells with a completion script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Shell {
    Bash,
    Zsh,
    Fish,
}

const SUBCOMMANDS: &str = "run list graph check why cache secrets plugins completions help";
const PLUGINS_COMMANDS: &str = "list check lock new";
const SECRETS_COMMANDS: &str = "init edit set get encrypt ls doctor updatekeys rotate";
const RUN_FLAGS: &str = "--jobs --keep-going --dry-run --yes --output --file --color --help";

pub(super) fn script(shell: Shell) -> String {
    match shell {
        Shell::Bash => format!(
            r#"# bash completion for cairn; load with: source <(cairn completions bash)
_cairn() {{
    local cur prev words cword
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "{SUBCOMMANDS}" -- "$cur"))
        return
    fi
    case "$prev" in
        -f|--file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --output) COMPREPLY=($(compgen -W "auto prefixed grouped raw" -- "$cur")); return ;;
        --color) COMPREPLY=($(compgen -W "auto always never" -- "$cur")); return ;;
        --format) COMPREPLY=($(compgen -W "dot mermaid json" -- "$cur")); return ;;
    esac
    case "${{COMP_WORDS[1]}}" in
        run|graph|why)
            if [[ "$cur" == -* ]]; then
                COMPREPLY=($(compgen -W "{RUN_FLAGS} --format" -- "$cur"))
            else
                local IFS=$'\n'
                COMPREPLY=($(compgen -W "$(cairn __complete targets 2>/dev/null)" -- "$cur"))
                # Names such as deploy:production contain the ':' bash splits words on.
                if [[ "$COMP_WORDBREAKS" == *:* && "$cur" == *:* ]]; then
                    local prefix="${{cur%"${{cur##*:}}"}}"
                    COMPREPLY=("${{COMPREPLY[@]#"$prefix"}}")
                fi
            fi ;;
        completions) COMPREPLY=($(compgen -W "bash zsh fish" -- "$cur")) ;;
        cache) COMPREPLY=($(compgen -W "stats gc clean --max-size --max-age" -- "$cur")) ;;
        plugins)
            if [[ $COMP_CWORD -eq 2 ]]; then
                COMPREPLY=($(compgen -W "{PLUGINS_COMMANDS}" -- "$cur"))
            elif [[ "$prev" == --kind ]]; then
                COMPREPLY=($(compgen -W "secrets events executor task" -- "$cur"))
            fi ;;
        secrets)
            if [[ $COMP_CWORD -eq 2 ]]; then
                COMPREPLY=($(compgen -W "{SECRETS_COMMANDS}" -- "$cur"))
            else
                COMPREPLY=($(compgen -f -- "$cur"))
            fi ;;
    esac
}}
complete -F _cairn cairn
"#
        ),
        Shell::Zsh => format!(
            r#"#compdef cairn
# zsh completion for cairn; load with: source <(cairn completions zsh)
_cairn() {{
    if (( CURRENT == 2 )); then
        compadd -- {SUBCOMMANDS}
        return
    fi
    case "${{words[2]}}" in
        run|graph|why)
            if [[ "${{words[CURRENT]}}" == -* ]]; then
                compadd -- {RUN_FLAGS} --format
            else
                local -a targets
                targets=("${{(@f)$(cairn __complete targets 2>/dev/null)}}")
                compadd -- $targets
            fi ;;
        completions) compadd -- bash zsh fish ;;
        cache) compadd -- stats gc clean ;;
        plugins) (( CURRENT == 3 )) && compadd -- {PLUGINS_COMMANDS} ;;
        secrets)
            if (( CURRENT == 3 )); then
                compadd -- {SECRETS_COMMANDS}
            else
                _files
            fi ;;
    esac
}}
compdef _cairn cairn
"#
        ),
        Shell::Fish => format!(
            r#"# fish completion for cairn; load with: cairn completions fish | source
complete -c cairn -f
complete -c cairn -n '__fish_use_subcommand' -a '{SUBCOMMANDS}'
complete -c cairn -n '__fish_seen_subcommand_from run graph why' -a '(cairn __complete targets 2>/dev/null)'
complete -c cairn -n '__fish_seen_subcommand_from cache' -a 'stats gc clean'
complete -c cairn -n '__fish_seen_subcommand_from secrets; and not __fish_seen_subcommand_from {SECRETS_COMMANDS}' -a '{SECRETS_COMMANDS}'
complete -c cairn -n '__fish_seen_subcommand_from {SECRETS_COMMANDS}' -F
complete -c cairn -n '__fish_seen_subcommand_from plugins; and not __fish_seen_subcommand_from {PLUGINS_COMMANDS}' -a '{PLUGINS_COMMANDS}'
complete -c cairn -n '__fish_seen_subcommand_from run' -s j -l jobs -r -d 'tasks at once'
complete -c cairn -n '__fish_seen_subcommand_from run' -s k -l keep-going -d 'keep going after a failure'
complete -c cairn -n '__fish_seen_subcommand_from run' -s n -l dry-run -d 'print the plan only'
complete -c cairn -n '__fish_seen_subcommand_from run' -s y -l yes -d 'answer yes to confirmations'
complete -c cairn -n '__fish_seen_subcommand_from run' -l output -r -a 'auto prefixed grouped raw'
complete -c cairn -n '__fish_seen_subcommand_from graph' -l format -r -a 'dot mermaid json'
complete -c cairn -n '__fish_seen_subcommand_from completions' -a 'bash zsh fish'
complete -c cairn -s f -l file -r -F -d 'tasks.toml to use'
complete -c cairn -l color -r -a 'auto always never'
"#
        ),
    }
}
