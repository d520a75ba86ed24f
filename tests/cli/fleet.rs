//! This repository's own configuration (tasks.toml, flake.nix, modules/, secrets/) driven through the real
//! binary: `validate` on the repository itself, and the whole deploy path on a copy, with stand-ins for the
//! programs that would touch real machines (nix, sudo, darwin-rebuild, nixos-rebuild, ssh, darwin-version).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Run, Test};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The plugins validate uses, built by plugins/build.sh; in CI (which builds them first) a missing one fails.
fn plugins_built() -> bool {
    let built = ["nix", "fleet"]
        .iter()
        .all(|p| repo().join(format!("plugins/dist/{p}.wasm")).is_file());
    assert!(
        built || std::env::var_os("CI").is_none(),
        "plugins/dist/{{nix,fleet}}.wasm are missing: .ci/run builds them with plugins/build.sh"
    );
    if !built {
        eprintln!("skipped: plugins/dist/{{nix,fleet}}.wasm are not built (run plugins/build.sh)");
    }
    built
}

/// cairn in the repository itself, with the caller's HOME so plugins/build.sh reuses its warm build.
fn in_repo(args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command
        .args(args)
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .env_remove("CI");
    Run::from(command.output().expect("cairn runs"))
}

/// Removes a file when dropped, so a failing assertion cannot leave the repository broken.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn validate_passes_on_the_repository_hits_the_cache_and_rechecks_only_a_changed_file() {
    if !plugins_built() {
        return;
    }
    in_repo(&["run", "validate"])
        .success()
        .stdout_has("fleet: ")
        .stdout_has(" 0 error(s)");
    in_repo(&["run", "validate"])
        .success()
        .stderr_has("6 tasks: 6 succeeded (5 from cache)");
    let broken = Scratch(repo().join("modules/hosts/NIXY/zz-broken-by-test.nix"));
    std::fs::write(&broken.0, "{ pkgs, ... }:\n{\n  services.x = {\n}\n").unwrap();
    let failed = in_repo(&["run", "validate"])
        .status(1)
        .stdout_has("nix: 1 file(s) checked, 1 with errors");
    let output = format!("{}{}", failed.stdout, failed.stderr);
    assert!(
        output.contains("modules/hosts/NIXY/zz-broken-by-test.nix:4:2: error:"),
        "{output}"
    );
    drop(broken);
    in_repo(&["run", "validate"])
        .success()
        .stderr_has("(5 from cache)");
}

/// A copy of the configuration, and a directory outside it for what is not part of the repository: the test
/// identity, the git remote, the stand-in programs and the state they keep (it is their HOME).
struct Fleet {
    repo: Test,
    outside: Test,
}

/// Copies the configuration into a fresh project: tracked layout, the built plugins (with a build.sh that
/// leaves them as they are), and secrets re-created for a test identity that stands in for alex.
fn fleet_copy() -> Fleet {
    let test = Test::new();
    let outside = Test::new();
    let root = repo();
    for file in [
        "tasks.toml",
        "flake.nix",
        "flake.lock",
        ".sops.yaml",
        ".gitignore",
    ] {
        std::fs::copy(root.join(file), test.path(file)).unwrap();
    }
    copy_dir(&root.join("modules"), &test.path("modules"));
    std::fs::create_dir_all(test.path("plugins/dist")).unwrap();
    for plugin in ["nix", "fleet"] {
        let name = format!("plugins/dist/{plugin}.wasm");
        std::fs::copy(root.join(&name), test.path(&name)).unwrap();
    }
    test.write(
        "plugins/build.sh",
        "#!/bin/sh\necho \"plugins: built by the test harness: $*\"\n",
    );
    executable(&test.path("plugins/build.sh"));

    // A test identity takes alex's place in .sops.yaml; the repository's secrets are re-created for it.
    let keys = outside.path("keys.txt").display().to_string();
    let scratch = Test::new().env("SOPS_AGE_KEY_FILE", &keys);
    let public = scratch
        .run_with(&["secrets", "init", "--name", "alex"])
        .success()
        .stdout
        .trim()
        .to_owned();
    let policy = test.read(".sops.yaml");
    let alex = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("- &alex "))
        .expect("alex's key")
        .to_owned();
    test.write(".sops.yaml", &policy.replace(&alex, &public));
    let test = test.env("SOPS_AGE_KEY_FILE", &keys).env("USER", "alex");
    for env in ["production", "staging", "development"] {
        test.run_with_stdin(
            &["secrets", "set", &format!("secrets/{env}/deploy.yaml"), "ssh.private_key"],
            &format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{env}-deploy-key-for-tests\n-----END OPENSSH PRIVATE KEY-----\n"),
        )
        .success();
    }
    // Health checks retry every 10 s on real machines; the stand-ins answer at once.
    test.edit("tasks.toml", "interval = \"10s\"", "interval = \"20ms\"");
    stand_ins(&outside);
    git(&test, &["init", "-q", "-b", "main"]);
    git(&test, &["add", "."]);
    git(&test, &["commit", "-qm", "fleet"]);
    let remote = outside.path("remote.git").display().to_string();
    git(&test, &["init", "-q", "--bare", &remote]);
    git(&test, &["remote", "add", "origin", &remote]);
    git(&test, &["push", "-q", "-u", "origin", "main"]);
    let path = format!(
        "{}:{}",
        outside.path("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let home = outside.path("").display().to_string();
    Fleet {
        repo: test.env("PATH", &path).env("HOME", &home),
        outside,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name.to_string_lossy().contains("broken-by-test") {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn git(test: &Test, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(test.path(""))
        .env("GIT_AUTHOR_NAME", "alex")
        .env("GIT_AUTHOR_EMAIL", "alex@example.org")
        .env("GIT_COMMITTER_NAME", "alex")
        .env("GIT_COMMITTER_EMAIL", "alex@example.org")
        .env("HOME", test.path(""))
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

/// Programs that would touch real machines, each logging to $HOME/deploy.log. A host "runs" the revision
/// its last switch recorded in $HOME/state/HOST; $HOME/unhealthy-HOST makes its health check see an old one.
fn stand_ins(test: &Test) {
    let common = r#"log() { echo "$*" >> "$HOME/deploy.log"; }
key_of() { set -- ${NIX_SSHOPTS:-}; [ "${1:-}" = -i ] && sed -n 2p "$2" || echo none; }
host_of_flake() { for a in "$@"; do case $a in .#*) echo "${a#.#}";; esac; done; }
"#;
    let scripts = [
        ("nix", "log \"nix $*\"\n"),
        ("sudo", "log \"sudo $1 $2\"\nexec \"$@\"\n"),
        (
            "darwin-rebuild",
            "host=$(host_of_flake \"$@\")\nlog \"darwin-rebuild $* key=$(key_of)\"\ncase \" $* \" in *\" switch \"*) mkdir -p \"$HOME/state\"; git rev-parse HEAD > \"$HOME/state/$host\";; esac\n",
        ),
        (
            "nixos-rebuild",
            "host=$(host_of_flake \"$@\")\nlog \"nixos-rebuild $* key=$(key_of)\"\ncase \" $* \" in *\" --rollback \"*) ;; *\" switch \"*) mkdir -p \"$HOME/state\"; git rev-parse HEAD > \"$HOME/state/$host\";; esac\n",
        ),
        (
            "darwin-version",
            "if [ -e \"$HOME/unhealthy-NIXY\" ]; then echo 0000000; else cat \"$HOME/state/NIXY\"; fi\n",
        ),
        (
            "ssh",
            "key=none\nwhile [ $# -gt 0 ]; do case $1 in -i) key=$(sed -n 2p \"$2\"); shift 2;; -o) echo \"$2\" >> \"$HOME/ssh-options.log\"; shift 2;; *) break;; esac; done\ntarget=$1; shift\nhost=$(echo \"${target#*@}\" | cut -d. -f1 | tr a-z A-Z)\nlog \"ssh $target $* key=$key\"\ncase \"$*\" in\n  *configuration-revision*) if [ -e \"$HOME/unhealthy-$host\" ]; then echo 0000000; else cat \"$HOME/state/$host\"; fi;;\n  *is-system-running*) echo running;;\nesac\n",
        ),
        (
            "ssh-keyscan",
            "for a in \"$@\"; do address=$a; done\nlog \"ssh-keyscan $address\"\n[ -e \"$HOME/hostkey-$address\" ] && echo \"$address $(cat \"$HOME/hostkey-$address\")\"\n",
        ),
    ];
    for (name, body) in scripts {
        let path = test.path(&format!("bin/{name}"));
        test.write(
            &format!("bin/{name}"),
            &format!("#!/bin/bash\nset -eu\n{common}{body}"),
        );
        executable(&path);
    }
}

#[test]
fn deploying_production_switches_each_host_in_turn_and_rolls_back_the_one_that_fails() {
    if !plugins_built() {
        return;
    }
    let Fleet {
        repo: test,
        outside,
    } = fleet_copy();
    test.run_with(&["run", "deploy:production", "--dry-run"])
        .success()
        .stdout_has("deploy:production[NIXY]")
        .stdout_has("deploy:production[NIXSTATION64]")
        .stdout_has("$ modules/lib/fleet.sh activate NIXSTATION64")
        .stdout_has("check modules/lib/fleet.sh check NIXY (tries 4, every 20ms)")
        .stdout_has("rollback modules/lib/fleet.sh rollback NIXSTATION64")
        .stdout_has("rollout one at a time; a failure stops the rest")
        .stdout_has("asks  Deploy this tree to production (one host at a time)?");
    // No terminal to ask on: nothing runs without --yes.
    test.run_with(&["run", "deploy:production"])
        .status(2)
        .stderr_has("asks for confirmation");
    assert!(outside.read("deploy.log").is_empty());

    test.run_with(&["run", "deploy:production", "--yes"])
        .success()
        .stdout_has("fleet: the tree is clean and")
        .stdout_has("fleet: NIXY runs ")
        .stdout_has("fleet: NIXSTATION64 runs ");
    let log = outside.read("deploy.log");
    let mut order: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with("ssh") && !l.starts_with("sudo"))
        .collect();
    // Both builds come before any activation, in either order (they run in parallel).
    order[..2].sort_unstable();
    assert_eq!(
        order,
        [
            "nix --extra-experimental-features nix-command flakes build --no-link .#darwinConfigurations.NIXY.system",
            "nix --extra-experimental-features nix-command flakes build --no-link .#nixosConfigurations.NIXSTATION64.config.system.build.toplevel",
            "darwin-rebuild switch --flake .#NIXY key=production-deploy-key-for-tests",
            "nixos-rebuild switch --flake .#NIXSTATION64 --target-host root@nixstation64.home.arpa key=production-deploy-key-for-tests",
        ],
        "{log}"
    );
    assert!(log.contains("ssh root@nixstation64.home.arpa systemctl is-system-running key=production-deploy-key-for-tests"), "{log}");

    // NIXY, first in the rollout, comes up on the wrong revision: it is rolled back, NIXSTATION64 is left alone.
    std::fs::remove_file(outside.path("deploy.log")).unwrap();
    outside.write("unhealthy-NIXY", "");
    let failed = test
        .run_with(&["run", "deploy:production", "--yes"])
        .status(1)
        .stderr_has("`deploy:production[NIXY]`: rolling back")
        .stderr_has(
            "not run because of it: `deploy:production[NIXSTATION64]`, `deploy:production`",
        );
    assert!(
        failed.stderr.contains("NIXY runs revision '0000000'"),
        "{}",
        failed.stderr
    );
    let log = outside.read("deploy.log");
    assert!(
        log.contains("darwin-rebuild --rollback key=production-deploy-key-for-tests"),
        "{log}"
    );
    assert!(!log.contains("nixos-rebuild switch"), "{log}");
    // The secret reached the stand-ins, never cairn's output.
    assert!(
        !failed.stdout.contains("deploy-key-for-tests")
            && !failed.stderr.contains("deploy-key-for-tests")
    );

    let audit = test.read(".cairn/audit.log");
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let results: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["task"].as_str().unwrap().to_owned(),
                l["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("deploy:production[NIXY]".to_owned(), "succeeded".to_owned()),
            (
                "deploy:production[NIXSTATION64]".to_owned(),
                "succeeded".to_owned()
            ),
            ("deploy:production[NIXY]".to_owned(), "failed".to_owned()),
        ]
    );
    assert_eq!(lines[2]["params"]["host"], "NIXY");
    assert_eq!(lines[2]["params"]["env"], "production");
    assert!(!audit.contains("deploy-key-for-tests"));
}

#[test]
fn production_refuses_a_dirty_or_unpushed_tree_and_staging_only_warns() {
    if !plugins_built() {
        return;
    }
    let Fleet {
        repo: test,
        outside,
    } = fleet_copy();
    test.edit("modules/hosts/NIXI/default.nix", "\"left\"", "\"bottom\"");
    test.run_with(&["run", "deploy:production", "--yes"])
        .status(1)
        .stderr_has("production deploys only a committed tree")
        .stderr_has("modules/hosts/NIXI/default.nix");
    assert!(!outside.read("deploy.log").contains("rebuild"));
    // Staging asks nothing and deploys, warning about the uncommitted change; its host reports "dirty".
    test.run_with(&["run", "deploy:staging"])
        .stdout_has("warning: deploying staging from a tree with uncommitted changes");
    git(&test, &["commit", "-qam", "bottom"]);
    test.run_with(&["run", "deploy:production", "--yes"])
        .status(1)
        .stderr_has("1 commit(s) are not on origin/main yet: git push");
}

#[test]
fn build_without_nix_says_so_and_skips_only_when_asked() {
    if !plugins_built() {
        return;
    }
    let Fleet {
        repo: test,
        outside: _outside,
    } = fleet_copy();
    // A PATH with everything of this machine but Nix.
    let bin = test.path("no-nix-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let link = bin.join(&name);
            if !name.to_string_lossy().starts_with("nix") && !link.exists() {
                let _ = std::os::unix::fs::symlink(entry.path(), link);
            }
        }
    }
    let test = test.env("PATH", &bin.display().to_string());
    test.run_with(&["run", "build:NIXI"])
        .status(1)
        .stderr_has("building NIXI: nix is not installed on this machine")
        .stderr_has("--set nix=skip");
    test.run_with(&["run", "build:NIXI", "--set", "nix=skip"])
        .success()
        .stdout_has("SKIPPED: building NIXI: nix is not installed on this machine (--set nix=skip); nothing was built");
    test.run_with(&["run", "test"])
        .status(1)
        .stderr_has("evaluating the configuration's tests: nix is not installed");
    test.run_with(&["run", "build:NIXEDUP"])
        .status(2)
        .stderr_has("`NIXEDUP` is not a value of param `host`");
}

#[test]
fn rotate_keys_gives_an_environment_new_data_keys_then_validates() {
    if !plugins_built() {
        return;
    }
    let Fleet {
        repo: test,
        outside: _outside,
    } = fleet_copy();
    let before = test.read("secrets/staging/deploy.yaml");
    let production = test.read("secrets/production/deploy.yaml");
    test.run_with(&["run", "rotate-keys:staging"])
        .status(2)
        .stderr_has("asks for confirmation");
    test.run_with(&["run", "rotate-keys:staging", "--yes"])
        .success()
        .stdout_has("nix: 19 file(s) checked");
    let after = test.read("secrets/staging/deploy.yaml");
    assert_ne!(
        before, after,
        "the data key and every value were re-encrypted"
    );
    test.run_with(&[
        "secrets",
        "get",
        "secrets/staging/deploy.yaml",
        "ssh.private_key",
    ])
    .success()
    .stdout_has("staging-deploy-key-for-tests");
    assert_eq!(
        test.read("secrets/production/deploy.yaml"),
        production,
        "other environments are left alone"
    );
    assert!(test
        .read(".cairn/audit.log")
        .contains("\"task\":\"rotate-keys:staging\""));
}

/// The real Nix (Debian's nix-bin, which .ci/run installs); `None` (skip) outside CI only.
fn real_nix() -> Option<()> {
    let found = Command::new("nix")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found || std::env::var_os("CI").is_none(),
        "nix is missing: .ci/run installs nix-bin"
    );
    if !found {
        eprintln!("skipped: no nix to lock a flake with");
    }
    found.then_some(())
}

#[test]
fn update_moves_a_flake_input_to_its_newest_revision_and_says_what_changed() {
    if real_nix().is_none() {
        return;
    }
    // A flake whose input is a local git repository: what `nix flake lock` does to a GitHub input, offline.
    let test = Test::new();
    let dep = test.path("dep");
    std::fs::create_dir_all(&dep).unwrap();
    std::fs::write(dep.join("flake.nix"), "{ outputs = _: { value = 1; }; }\n").unwrap();
    let in_dep = |args: &[&str]| {
        let status = Command::new("git")
            .args(["-c", "user.name=alex", "-c", "user.email=alex@example.org"])
            .args(args)
            .current_dir(&dep)
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?}");
    };
    in_dep(&["init", "-q"]);
    in_dep(&["add", "-A"]);
    in_dep(&["commit", "-qm", "one"]);
    let project = test.path("project");
    std::fs::create_dir_all(project.join("modules/lib")).unwrap();
    std::fs::copy(
        repo().join("modules/lib/fleet.sh"),
        project.join("modules/lib/fleet.sh"),
    )
    .unwrap();
    executable(&project.join("modules/lib/fleet.sh"));
    std::fs::write(
        project.join("flake.nix"),
        format!(
            "{{\n  inputs.dep.url = \"git+file://{}\";\n  outputs = {{ self, dep }}: {{ v = dep.value; }};\n}}\n",
            dep.display()
        ),
    )
    .unwrap();
    std::fs::write(
        project.join("tasks.toml"),
        "[tasks.update]\nenv_pass = [\"NIX_*\"]\nrun = \"modules/lib/fleet.sh update {{args}}\"\n",
    )
    .unwrap();
    let nix = |args: &[&str]| {
        let output = Command::new("nix")
            .args(["--extra-experimental-features", "nix-command flakes"])
            .args(args)
            .current_dir(&project)
            .env("HOME", test.path(""))
            .output()
            .expect("nix runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    nix(&["flake", "lock"]);
    let first = std::fs::read_to_string(project.join("flake.lock")).unwrap();
    std::fs::write(dep.join("flake.nix"), "{ outputs = _: { value = 2; }; }\n").unwrap();
    in_dep(&["commit", "-qam", "two"]);
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(&dep)
        .output()
        .unwrap();
    let new_rev = String::from_utf8_lossy(&head.stdout).trim().to_owned();

    let run = test
        .command_with(&["run", "update", "--", "dep"])
        .current_dir(&project)
        .output()
        .expect("cairn runs");
    let shown =
        String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{shown}");
    let lock = std::fs::read_to_string(project.join("flake.lock")).unwrap();
    assert!(lock.contains(&new_rev) && lock != first, "{lock}");
    let summary = std::fs::read_to_string(project.join(".cairn/update-summary.md")).unwrap();
    assert!(
        summary.contains("| dep | ") && summary.contains(&new_rev[..12]),
        "{summary}"
    );
    // Nothing newer: said so.
    let again = test
        .command_with(&["run", "update"])
        .current_dir(&project)
        .output()
        .expect("cairn runs");
    assert!(again.status.success());
    assert!(
        std::fs::read_to_string(project.join(".cairn/update-summary.md"))
            .unwrap()
            .contains("No input changed.")
    );
}

#[test]
fn status_shows_what_each_host_runs_and_the_drift_from_this_tree() {
    if !plugins_built() {
        return;
    }
    let Fleet {
        repo: test,
        outside,
    } = fleet_copy();
    // Before any deploy, the stand-in hosts cannot say what they run.
    test.run_with(&["run", "status:production"])
        .success()
        .stdout_has("NIXY  cannot be asked what it runs")
        .stdout_has("fleet: production: 2 of 2 host(s) differ from this tree");
    test.run_with(&["run", "deploy:production", "--yes"])
        .success();
    let head = String::from_utf8_lossy(
        &Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(test.path(""))
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_owned();
    test.run_with(&["run", "status:production"])
        .success()
        .stdout_has(&format!("NIXY  runs {}, this tree", &head[..12]))
        .stdout_has(&format!("NIXSTATION64  runs {}, this tree", &head[..12]))
        .stdout_has("0 of 2 host(s) differ");
    // A new commit: both hosts are behind it, and the JSON form says so for scripts.
    test.write(
        "modules/home/common.nix",
        &(test.read("modules/home/common.nix") + "\n"),
    );
    git(&test, &["commit", "-qam", "next"]);
    let run = test
        .run_with(&[
            "run",
            "status:production",
            "--output",
            "raw",
            "--",
            "--json",
        ])
        .success();
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with('['))
        .unwrap_or_else(|| panic!("no JSON in {}", run.stdout));
    let hosts: serde_json::Value = serde_json::from_str(line).expect("JSON");
    assert_eq!(hosts[0]["host"], "NIXY");
    assert_eq!(hosts[0]["state"], "behind");
    assert_eq!(hosts[0]["running"], head);
    assert_eq!(hosts[1]["state"], "behind");
    // The deploy key reached the stand-in ssh, never the output.
    assert!(!run.stdout.contains("deploy-key-for-tests"));
    assert!(outside
        .read("deploy.log")
        .contains("configuration-revision key=production-deploy-key-for-tests"));
}

#[test]
fn first_contact_records_a_hosts_keys_and_a_changed_key_is_refused() {
    if !plugins_built() {
        return;
    }
    let Fleet {
        repo: test,
        outside,
    } = fleet_copy();
    let keygen = |name: &str| {
        let path = outside.path(name);
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
            .arg(&path)
            .status()
            .expect("ssh-keygen runs");
        assert!(status.success());
        let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
        public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let address = "nixstation64.home.arpa";
    outside.write(&format!("hostkey-{address}"), &keygen("first"));
    test.run_with(&["run", "trust-host:NIXSTATION64"])
        .success()
        .stdout_has("recorded the host keys of NIXSTATION64")
        .stdout_has("ED25519");
    let known = test.read("modules/known_hosts");
    assert!(
        known
            .lines()
            .any(|l| l.starts_with(&format!("{address} ssh-ed25519 "))),
        "{known}"
    );
    test.run_with(&["run", "trust-host:NIXSTATION64"])
        .success()
        .stdout_has("already trusted");
    // Reinstalled, or someone in between: refused, and the recorded key is kept.
    outside.write(&format!("hostkey-{address}"), &keygen("second"));
    test.run_with(&["run", "trust-host:NIXSTATION64"])
        .status(1)
        .stderr_has("offers host keys other than those in");
    assert_eq!(test.read("modules/known_hosts"), known);
    // Every ssh the deploy makes trusts only that file, strictly.
    test.run_with(&["run", "status:production"]).success();
    let options = outside.read("ssh-options.log");
    assert!(options.contains("StrictHostKeyChecking=yes"), "{options}");
    assert!(
        options.contains("UserKnownHostsFile=") && options.contains("modules/known_hosts"),
        "{options}"
    );
    assert!(!options.contains("StrictHostKeyChecking=no"));
}
