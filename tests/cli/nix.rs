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
