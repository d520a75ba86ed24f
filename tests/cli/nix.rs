//! The nix validator through a real run: a corpus of valid and broken files, positions as Nix reports them,
//! and incremental re-checks that parse only what changed.

use std::path::Path;

use crate::support::Test;

fn project() -> Option<Test> {
    let Ok(module) =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dist/nix.wasm"))
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "plugins/dist/nix.wasm is missing"
        );
        eprintln!("skipped: the nix plugin is not built (run plugins/build.sh)");
        return None;
    };
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(&module)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let test = Test::new().tasks(&format!(
        "[plugins.nix]\nsource = \"nix.wasm\"\nsha256 = \"{sha}\"\n\n[tasks.validate]\nplugin = \"nix\"\ninputs = [\"**/*.nix\"]\nincremental = true\n"
    ));
    std::fs::write(test.path("nix.wasm"), module).unwrap();
    test.write("flake.nix", "{\n  inputs.nixpkgs.url = \"github:NixOS/nixpkgs\";\n  outputs = { self, nixpkgs, ... }@inputs: {\n    nixosConfigurations.NIXSTATION64 = nixpkgs.lib.nixosSystem { modules = [ ./hosts/nixstation64.nix ]; };\n  };\n}\n");
    test.write("hosts/nixstation64.nix", "{ config, pkgs, lib, ... }:\nlet\n  user = \"alex\";\nin {\n  networking.hostName = \"NIXSTATION64\";\n  users.users.${user}.isNormalUser = true;\n  environment.systemPackages = with pkgs; [ git vim ];\n}\n");
    test.write(
        "modules/common.nix",
        "{ pkgs, ... }: {\n  programs.zsh.enable = true;\n}\n",
    );
    Some(test)
}

#[test]
fn a_corpus_is_checked_with_nix_positions_and_only_changes_are_rechecked() {
    let Some(test) = project() else { return };
    test.run_with(&["run", "validate"])
        .success()
        .stdout_has("nix: 3 file(s) checked, 0 with errors");
    // Nothing changed: the task comes from the cache and parses nothing.
    test.run_with(&["run", "validate"]).success().cached(1);
    // Break one file three ways; only it is handed to the plugin.
    test.write("modules/common.nix", "{ pkgs, pkgs, ... }: {\n  programs.zsh.enable = true;\n  programs.zsh.enable = false;\n  home = usr;\n}\n");
    test.run_with(&["run", "validate"])
        .status(1)
        .stdout_has("nix: 1 file(s) checked, 1 with errors")
        .stderr_has("modules/common.nix:1:9: error: duplicate formal function argument `pkgs`")
        .stderr_has(
            "modules/common.nix:3:3: error: attribute `programs.zsh.enable` already defined at 2:3",
        )
        .stderr_has("modules/common.nix:4:10: error: undefined variable `usr`");
    test.write(
        "modules/common.nix",
        "{ pkgs, ... }: {\n  programs.zsh.enable = true\n}\n",
    );
    test.run_with(&["run", "validate"])
        .status(1)
        .stderr_has("modules/common.nix:3:1: error: syntax error");
    // Back to the content of the last success: restored from the cache, nothing parsed.
    test.write(
        "modules/common.nix",
        "{ pkgs, ... }: {\n  programs.zsh.enable = true;\n}\n",
    );
    test.run_with(&["run", "validate"]).success().cached(1);
    test.write(
        "modules/common.nix",
        "{ pkgs, ... }: {\n  programs.fish.enable = true;\n}\n",
    );
    test.run_with(&["run", "validate"])
        .success()
        .stdout_has("nix: 1 file(s) checked, 0 with errors");
}

/// Files Nix accepts and rejects, for comparing verdicts with `nix-instantiate --parse`.
const CORPUS: &[(&str, &str)] = &[
    ("ok-module", "{ config, lib, pkgs, ... }:\n{\n  imports = [ ./hardware.nix ];\n  services.openssh.enable = lib.mkDefault true;\n}\n"),
    ("ok-let", "let\n  a = 1;\n  b = a + 1;\nin { inherit a b; c = \"${toString b}\"; }\n"),
    ("ok-with", "with import <nixpkgs> { }; stdenv.mkDerivation { name = \"x\"; buildInputs = [ hello ]; }\n"),
    ("ok-merge", "{ a.b = 1; a.c = 2; d = { e = 1; }; d.f = 2; }\n"),
    ("ok-rec", "rec { x = 1; y = x + 1; }\n"),
    ("ok-pattern", "{ a, b ? a, ... }@args: a + b + args.c\n"),
    ("bad-semicolon", "{\n  a = 1\n  b = 2;\n}\n"),
    ("bad-brace", "{ a = [ 1 2 ; }\n"),
    ("bad-undefined", "{ pkgs, ... }:\n{\n  environment.systemPackages = [ pkgs.git vimm ];\n}\n"),
    ("bad-duplicate", "{\n  networking.hostName = \"a\";\n  networking.hostName = \"b\";\n}\n"),
    ("bad-duplicate-let", "let a = 1; a = 2; in a\n"),
    ("bad-formal", "{ x, y, x }: x\n"),
    ("bad-nested", "{ x = 1; x.y = 2; }\n"),
    ("bad-eof", "let a = 1;\n"),
];

#[test]
fn verdicts_and_first_error_positions_match_nix_instantiate() {
    let Some(nix) = [
        "/usr/bin/nix-instantiate",
        "/run/current-system/sw/bin/nix-instantiate",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "nix-instantiate is missing: .ci/run installs Debian's nix-bin"
        );
        eprintln!("skipped: nix-instantiate is not installed (apt-get install nix-bin)");
        return;
    };
    let Some(test) = project() else { return };
    test.edit(
        "tasks.toml",
        "inputs = [\"**/*.nix\"]\nincremental = true",
        "inputs = [\"corpus/*.nix\"]",
    );
    for (name, text) in CORPUS {
        test.write(&format!("corpus/{name}.nix"), text);
    }
    let run = test.run_with(&["run", "validate", "--no-cache"]);
    for (name, _) in CORPUS {
        let path = format!("corpus/{name}.nix");
        let ours = run
            .stderr
            .lines()
            .find(|l| l.starts_with(&format!("{path}:")))
            .map(|l| l.split(": ").next().unwrap_or("").to_string());
        let output = std::process::Command::new(nix)
            .args(["--parse", &path])
            .current_dir(test.path(""))
            .output()
            .unwrap();
        let theirs = if output.status.success() {
            None
        } else {
            let text = String::from_utf8_lossy(&output.stderr).into_owned();
            // Nix names the error's position on a line of its own: `       at /path/file.nix:3:3:`.
            let prefix = format!("at {}:", test.path(&path).display());
            let at = text
                .lines()
                .map(str::trim)
                .find_map(|l| l.strip_prefix(&prefix))
                .map(|rest| {
                    let position: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == ':')
                        .collect();
                    format!("{path}:{}", position.trim_end_matches(':'))
                });
            Some(at.unwrap_or_else(|| format!("{path}: (no position) {text}")))
        };
        assert_eq!(
            ours.is_some(),
            theirs.is_some(),
            "{name}: cairn {ours:?}, nix {theirs:?}"
        );
        if let (Some(ours), Some(theirs)) = (&ours, &theirs) {
            let position = |p: &str| p.split_once(':').map(|(_, at)| at.to_string());
            assert_eq!(
                position(ours),
                position(theirs),
                "{name}: first error: cairn {ours}, nix {theirs}"
            );
        }
    }
}

#[test]
fn deep_and_large_files_nix_accepts_never_crash_the_plugin() {
    let Some(test) = project() else { return };
    let depth = 20_000;
    let files = [
        (
            "lists.nix",
            format!("{}1{}", "[ ".repeat(depth), " ]".repeat(depth)),
        ),
        ("sum.nix", format!("1{}", " + 1".repeat(depth))),
        ("negations.nix", format!("{}1", "-".repeat(depth))),
        (
            "sets.nix",
            format!("{}1{}", "{ a = ".repeat(depth), "; }".repeat(depth)),
        ),
        ("lambdas.nix", format!("{}1", "x: ".repeat(depth))),
    ];
    for (name, text) in &files {
        test.write(&format!("deep/{name}"), text);
    }
    // And a 2 MB module, within the default limits.
    let mut big = String::from("{ lib, pkgs, ... }:\n{\n");
    let mut i = 0;
    while big.len() < 2_000_000 {
        big.push_str(&format!(
            "  services.svc{i} = {{ enable = true; port = {}; name = \"service-{i}\"; }};\n",
            i % 65_536
        ));
        i += 1;
    }
    big.push_str("}\n");
    test.write("deep/big.nix", &big);
    // Nix accepts them all: checked and passed, or (past the 512 levels rnix parses of some constructs) said
    // to be unchecked with a warning at the end of the file; never a plugin crash, never a failed task.
    test.run_with(&["run", "validate"])
        .success()
        .stdout_has("nix: 9 file(s) checked, 0 with errors")
        .stderr_lacks("crashed")
        .stderr_lacks("deep/lists.nix")
        .stderr_lacks("deep/sum.nix")
        .stderr_lacks("deep/negations.nix")
        .stderr_has("deep/sets.nix:1:180002: warning: not checked: the expression nests more than 512 levels deep")
        .stderr_has("deep/lambdas.nix:1:60002: warning: not checked");
}
