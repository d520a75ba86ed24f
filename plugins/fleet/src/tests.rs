use super::*;

const INVENTORY: &str = r#"[hosts.NIXY]
system = "aarch64-darwin"
kind = "darwin"
users = ["alex", "susu"]
enabled = true
target = "local"

[hosts.NIXSTATION64]
system = "x86_64-linux"
kind = "nixos"
users = ["alex"]
enabled = true
target = "nixstation64"

[hosts.NIXEDUP]
system = "aarch64-linux"
kind = "droid"
users = ["alex"]
enabled = false

[users.alex]
[users.susu]

[environments.production]
hosts = ["NIXY", "NIXSTATION64"]
"#;

const POLICY: &str = "keys:\n  - &alex age1a\n  - &susu age1b\n  - &NIXY age1c\ncreation_rules:\n  - path_regex: ^secrets/production/\n    key_groups:\n      - age: [*alex]\n";

const FLAKE: &str = "{\n  inputs = {\n    nixpkgs.url = \"github:NixOS/nixpkgs/nixpkgs-unstable\";\n    home-manager.url = \"github:nix-community/home-manager\";\n    home-manager.inputs.nixpkgs.follows = \"nixpkgs\";\n  };\n  outputs = { self, ... }: let inventory = builtins.fromTOML (builtins.readFile ./modules/inventory.toml); in { };\n}\n";

const LOCK: &str = r#"{
  "nodes": {
    "home-manager": {
      "inputs": { "nixpkgs": ["nixpkgs"] },
      "locked": { "narHash": "sha256-x", "owner": "nix-community", "repo": "home-manager", "rev": "abc", "type": "github" }
    },
    "nixpkgs": {
      "locked": { "narHash": "sha256-y", "owner": "NixOS", "repo": "nixpkgs", "rev": "def", "type": "github" }
    },
    "root": { "inputs": { "home-manager": "home-manager", "nixpkgs": "nixpkgs" } }
  },
  "root": "root",
  "version": 7
}
"#;

fn file(path: &str, contents: &str) -> InputFile {
    InputFile {
        path: path.into(),
        contents: contents.into(),
    }
}

fn repo() -> Vec<InputFile> {
    vec![
        file("modules/inventory.toml", INVENTORY),
        file("modules/hosts/NIXY/default.nix", "{ }\n"),
        file("modules/hosts/NIXSTATION64/default.nix", "{ }\n"),
        file("modules/home/alex.nix", "{ }\n"),
        file("modules/home/susu.nix", "{ }\n"),
        file(".sops.yaml", POLICY),
        file("secrets/production/app.yaml", "a: ENC[x]\n"),
        file("secrets/hosts/NIXY/wifi.yaml", "a: ENC[x]\n"),
        file("flake.nix", FLAKE),
        file("flake.lock", LOCK),
    ]
}

fn messages(files: &[InputFile]) -> Vec<String> {
    check(files, &Layout::default())
        .into_iter()
        .map(|d| {
            format!(
                "{}:{}:{}: {:?}: {}",
                d.path, d.line, d.column, d.severity, d.message
            )
        })
        .collect()
}

fn replace(files: &mut [InputFile], path: &str, from: &str, to: &str) {
    let file = files.iter_mut().find(|f| f.path == path).expect("file");
    assert!(file.contents.contains(from), "{from}");
    file.contents = file.contents.replace(from, to);
}

#[test]
fn a_consistent_repository_has_only_the_disabled_hosts_warning() {
    assert_eq!(
        messages(&repo()),
        ["modules/inventory.toml:15:8: Warning: host `NIXEDUP` (disabled) has no module yet: `modules/hosts/NIXEDUP/default.nix`"]
    );
}

#[test]
fn a_kind_that_does_not_fit_the_system_is_an_error() {
    let mut files = repo();
    replace(
        &mut files,
        "modules/inventory.toml",
        "system = \"x86_64-linux\"\nkind = \"nixos\"",
        "system = \"x86_64-linux\"\nkind = \"darwin\"",
    );
    let found = messages(&files);
    assert!(
        found.iter().any(|m| m.contains("host `NIXSTATION64` is a `darwin` host but its system is `x86_64-linux`: a x86_64-linux host is nixos")),
        "{found:#?}"
    );
}

#[test]
fn users_need_a_home_module_and_hosts_a_module() {
    let mut files = repo();
    files.retain(|f| {
        f.path != "modules/home/susu.nix" && f.path != "modules/hosts/NIXY/default.nix"
    });
    let found = messages(&files);
    assert!(
        found
            .iter()
            .any(|m| m
                .contains("user `susu` has no home module: `modules/home/susu.nix` is missing")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|m| m.contains("host `NIXY` has no module")),
        "{found:#?}"
    );
}

#[test]
fn environments_and_secrets_name_only_enabled_hosts() {
    let mut files = repo();
    replace(
        &mut files,
        "modules/inventory.toml",
        "hosts = [\"NIXY\", \"NIXSTATION64\"]",
        "hosts = [\"NIXY\", \"NIXSTATION64\", \"NIXEDUP\", \"NIXZ\"]",
    );
    files.push(file("secrets/hosts/NIXEDUP/x.yaml", "a: ENC[x]\n"));
    files.push(file("secrets/qa/x.yaml", "a: ENC[x]\n"));
    let found = messages(&files);
    assert!(
        found
            .iter()
            .any(|m| m.contains(":25:") && m.contains("names host `NIXEDUP`, which is disabled")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|m| m.contains("names host `NIXZ`, which is not in the inventory")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|m| m.starts_with("secrets/hosts/NIXEDUP/x.yaml:1:1") && m.contains("disabled")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|m| m.starts_with("secrets/qa/x.yaml") && m.contains("outside the layout")),
        "{found:#?}"
    );
}

#[test]
fn a_catch_all_rule_and_stale_keys_are_reported() {
    let mut files = repo();
    replace(
        &mut files,
        ".sops.yaml",
        "^secrets/production/",
        "^secrets/",
    );
    replace(&mut files, ".sops.yaml", "&NIXY", "&OLDBOX");
    let found = messages(&files);
    assert!(
        found
            .iter()
            .any(|m| m.starts_with(".sops.yaml:6:") && m.contains("matches every secret")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|m| m.starts_with(".sops.yaml:4:6")
                && m.contains("key `OLDBOX` names no user or host")),
        "{found:#?}"
    );
}

#[test]
fn flake_inputs_must_all_be_locked() {
    let mut files = repo();
    replace(
        &mut files,
        "flake.nix",
        "  };\n  outputs",
        "    sops-nix.url = \"github:Mic92/sops-nix\";\n  };\n  outputs",
    );
    replace(&mut files, "flake.lock", "\"rev\": \"def\", ", "");
    replace(&mut files, "flake.lock", "\"version\": 7", "\"version\": 6");
    let found = messages(&files);
    assert!(
        found.iter().any(|m| m.starts_with("flake.nix:6:5")
            && m.contains("input `sops-nix` is not in flake.lock")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|m| m.contains("node `nixpkgs` has no locked `rev`")),
        "{found:#?}"
    );
    assert!(
        found.iter().any(|m| m.contains("not version 7")),
        "{found:#?}"
    );
}

#[test]
fn follows_must_point_at_existing_nodes() {
    let mut files = repo();
    replace(
        &mut files,
        "flake.lock",
        "\"inputs\": { \"nixpkgs\": [\"nixpkgs\"] }",
        "\"inputs\": { \"nixpkgs\": [\"nixpkgs-old\"] }",
    );
    let found = messages(&files);
    assert!(
        found
            .iter()
            .any(|m| m
                .contains("`home-manager.nixpkgs` follows `nixpkgs-old`, which does not exist")),
        "{found:#?}"
    );
}

#[test]
fn a_broken_inventory_points_at_the_toml_error() {
    let mut files = repo();
    replace(
        &mut files,
        "modules/inventory.toml",
        "enabled = false",
        "enabled = ",
    );
    let found = messages(&files);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with("modules/inventory.toml:19:11"),
        "{found:#?}"
    );
}
