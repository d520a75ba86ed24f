//! This repository's own configuration (tasks.toml, flake.nix, modules/, secrets/) driven through the real
//! binary: `validate` on the repository itself, and on a copy what a deploy checks before it touches a host
//! (stand-ins for nix and ssh record that nothing was sent), the build without Nix, key rotation and updates.
//! Deploys to real hosts (sshd, Nix stores) are in fleet_ssh.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Run, Test};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The plugins validate uses, built by plugins/build.sh; in CI (which builds them first) a missing one fails.
pub(crate) fn plugins_built() -> bool {
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
pub(crate) struct Fleet {
    pub(crate) repo: Test,
    pub(crate) outside: Test,
}

/// Copies the configuration into a fresh project: tracked layout, the built plugins (with a build.sh that
/// leaves them as they are), and secrets re-created for a test identity that stands in for alex.
fn fleet_copy() -> Fleet {
    fleet_copy_with(true)
}

/// [`fleet_copy`], with the stand-in programs on PATH or (`false`) this machine's own nix, ssh and ssh-keyscan.
pub(crate) fn fleet_copy_with(stand_in_programs: bool) -> Fleet {
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
    let system_path = std::env::var("PATH").unwrap_or_default();
    let path = if stand_in_programs {
        format!("{}:{system_path}", outside.path("bin").display())
    } else {
        system_path
    };
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

pub(crate) fn git(test: &Test, args: &[&str]) {
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

/// A stand-in for `nix` and `ssh`, each logging its arguments to $HOME/deploy.log, for the tests that check what
/// happens before any host is touched (tests/cli/fleet_ssh.rs deploys to real hosts).
fn stand_ins(test: &Test) {
    for name in ["nix", "ssh"] {
        let path = test.path(&format!("bin/{name}"));
        test.write(
            &format!("bin/{name}"),
            &format!("#!/bin/bash\nset -eu\necho \"{name} $*\" >> \"$HOME/deploy.log\"\n"),
        );
        executable(&path);
    }
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
    assert!(!outside.read("deploy.log").contains(" copy "));
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
        .stdout_has("nix: 20 file(s) checked");
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
pub(crate) fn real_nix() -> Option<()> {
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
