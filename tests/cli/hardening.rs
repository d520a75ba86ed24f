//! Attacks on cairn, each reproduced through the binary and shown to fail: a cache entry that would write outside
//! its outputs, credentials handed to tasks, param values run as shell, cached outputs readable by other users.
//! docs/security.md names the promise each test holds.

use std::os::unix::fs::PermissionsExt;

use serde_json::{json, Value};

use crate::support::*;

const BUILD: &str = r#"
[tasks.build]
run = "mkdir -p out && echo made > out/a.txt"
inputs = ["in.txt"]
outputs = ["out/**"]
"#;

fn built() -> Test {
    let t = Test::new()
        .tasks(BUILD)
        .file("in.txt", "x\n")
        .file("src/main.rs", "fn main() {}\n");
    t.run_with(&["run", "build"]).success().cached(0);
    t
}

/// Rewrites every stored entry's outputs, as a compromised cache writer would: `outputs` gets the blob and size
/// of the entry's one real output.
fn forge(t: &Test, outputs: impl Fn(&str, u64) -> Vec<Value>) {
    for path in walk(&t.path(".cairn/cache/entries")) {
        let mut entry: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("manifest")).expect("json");
        let real = &entry["outputs"][0];
        let (blob, size) = (
            real["blob"].as_str().expect("blob").to_owned(),
            real["size"].as_u64().expect("size"),
        );
        entry["outputs"] = Value::Array(outputs(&blob, size));
        std::fs::write(&path, serde_json::to_vec(&entry).expect("json")).expect("write");
    }
    std::fs::remove_dir_all(t.path("out")).expect("remove outputs");
}

fn file(path: &str, blob: &str, size: u64, mode: u32) -> Value {
    json!({ "path": path, "blob": blob, "target": null, "size": size, "mode": mode })
}

fn link(path: &str, target: &str) -> Value {
    json!({ "path": path, "blob": null, "target": target, "size": 0, "mode": 0o777 })
}

#[test]
fn a_forged_entry_cannot_write_through_a_link_it_plants() {
    let t = built();
    forge(&t, |blob, size| {
        vec![
            link("out/l", "../src"),
            file("out/l/main.rs", blob, size, 0o644),
        ]
    });
    t.run_with(&["run", "build"])
        .success()
        .cached(0)
        .stderr_has("refusing to restore `out/l/main.rs`")
        .stderr_has("on its way is a link");
    assert_eq!(t.read("src/main.rs"), "fn main() {}\n");
    // Refused before anything was written: the planted link is not left behind.
    assert!(std::fs::symlink_metadata(t.path("out/l")).is_err());
}

#[test]
fn a_forged_entry_cannot_plant_a_git_hook() {
    let t = built();
    std::fs::create_dir_all(t.path(".git/hooks")).expect("mkdir");
    forge(&t, |blob, size| {
        vec![
            link("out/h", "../.git/hooks"),
            file("out/h/pre-commit", blob, size, 0o755),
        ]
    });
    t.run_with(&["run", "build"])
        .success()
        .cached(0)
        .stderr_has("refusing to restore `out/h/pre-commit`");
    assert!(!t.path(".git/hooks/pre-commit").exists());
}

#[test]
fn a_link_whose_target_climbs_through_another_link_is_refused() {
    let t = built();
    // Read lexically, `out/up/../../X` is `X` inside the repository; through `up -> ..` it is outside.
    forge(&t, |_, _| {
        vec![link("out/up", ".."), link("out/esc", "up/../../X")]
    });
    t.run_with(&["run", "build"])
        .success()
        .cached(0)
        .stderr_has("refusing to restore `out/esc`: the link points out of the repository");
    assert!(std::fs::symlink_metadata(t.path("out/esc")).is_err());
}

#[test]
fn a_link_the_tree_already_has_is_never_written_through() {
    let t = built();
    let outside = tempfile::tempdir().expect("temp dir");
    forge(&t, |blob, size| {
        vec![file("out/sub/a.txt", blob, size, 0o644)]
    });
    std::fs::create_dir(t.path("out")).expect("mkdir");
    std::os::unix::fs::symlink(outside.path(), t.path("out/sub")).expect("link");
    t.run_with(&["run", "build"])
        .success()
        .cached(0)
        .stderr_has("refusing to restore `out/sub/a.txt`: `out/sub` on its way is a symbolic link");
    assert!(!outside.path().join("a.txt").exists());
}

#[test]
fn set_id_bits_are_never_restored() {
    let t = built();
    forge(&t, |blob, size| vec![file("out/a.txt", blob, size, 0o6755)]);
    t.run_with(&["run", "build"]).success().cached(1);
    let mode = std::fs::metadata(t.path("out/a.txt"))
        .expect("restored")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
}

const AGE_KEY: &str = "AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGP";
const TOKEN: &str = "remote-cache-token-0123456789";

#[test]
fn credentials_are_withheld_from_tasks_that_pass_everything() {
    let t = Test::new()
        .tasks(
            r#"
[tasks.all]
run = "echo age=[$SOPS_AGE_KEY] sign=[$CAIRN_REMOTE_SIGNING_KEY] token=[$CAIRN_REMOTE_CACHE_TOKEN] mine=[$MY_SETTING]"
env_pass = ["*"]
[tasks.prefixed]
run = "echo age=[$SOPS_AGE_KEY]"
env_pass = ["SOPS_*"]
"#,
        )
        .env("SOPS_AGE_KEY", AGE_KEY)
        .env("CAIRN_REMOTE_SIGNING_KEY", "signing-key-material-abcdef")
        .env("CAIRN_REMOTE_CACHE_TOKEN", TOKEN)
        .env("MY_SETTING", "visible");
    t.run_with(&["run", "all", "prefixed"])
        .success()
        .stdout_has("age=[] sign=[] token=[] mine=[visible]")
        .stdout_has("prefixed | age=[]");
}

#[test]
fn a_credential_named_exactly_reaches_the_task_but_never_its_output_or_cache() {
    let t = Test::new()
        .tasks(
            r#"
[tasks.named]
run = "echo token=[$CAIRN_REMOTE_CACHE_TOKEN]; echo err=[$CAIRN_REMOTE_CACHE_TOKEN] >&2; test -n \"$CAIRN_REMOTE_CACHE_TOKEN\""
env_pass = ["CAIRN_REMOTE_CACHE_TOKEN"]
inputs = ["in.txt"]
"#,
        )
        .file("in.txt", "x\n")
        .env("CAIRN_REMOTE_CACHE_TOKEN", TOKEN);
    let run = t
        .run_with(&["run", "named"])
        .success()
        .stdout_has("token=[[secret:CAIRN_REMOTE_CACHE_TOKEN]]")
        .stderr_has("err=[[secret:CAIRN_REMOTE_CACHE_TOKEN]]");
    assert!(!run.stdout.contains(TOKEN) && !run.stderr.contains(TOKEN));
    // Replayed without the token in the environment, nothing could redact it now: the stored log never had it.
    t.unset_env("CAIRN_REMOTE_CACHE_TOKEN")
        .run_with(&["run", "named"])
        .success()
        .cached(1)
        .stdout_has("token=[[secret:CAIRN_REMOTE_CACHE_TOKEN]]")
        .stdout_lacks(TOKEN);
}

const GREET: &str = r#"
[tasks."greet:{who}"]
params.who = {}
run = "echo hello {{who}}"
check = { run = "echo checked {{who}}" }

[tasks."say:{what}"]
params.what = { pattern = ".+" }
run = ["echo plain {{what}}", "echo \"double {{what}}\"", "echo 'single {{what}}'", "echo \"sub $(printf %s {{what}})\"", "echo `printf 'tick %s' {{what}}`", "cat <<EOF\nheredoc {{what}}\nEOF"]
"#;

#[test]
fn a_free_form_value_outside_the_safe_characters_is_refused() {
    let t = Test::new().tasks(GREET);
    t.run_with(&["run", "greet:world; echo INJECTED-$(id -un)"])
        .status(2)
        .stderr_has("is not a value of param `who`")
        .stderr_has("give the param a `pattern`")
        .stdout_lacks("INJECTED");
    t.run_with(&["run", "greet:--upload-pack=touch"]).status(2);
    t.run_with(&["run", "greet:../../etc"]).status(2);
    t.run_with(&["run", "greet:feature/login-2@v1.2"])
        .success()
        .stdout_has("hello feature/login-2@v1.2")
        .stdout_has("checked feature/login-2@v1.2");
}

#[test]
fn a_value_its_pattern_accepts_is_data_wherever_the_command_places_it() {
    let value = r#"x; echo INJECTED-$(id -un) `id` "dq" 'sq' \"#;
    let t = Test::new().tasks(GREET);
    let run = t
        .run_with(&["run", &format!("say:{value}")])
        .success()
        .stdout_has(&format!("plain {value}"))
        .stdout_has(&format!("double {value}"))
        .stdout_has(&format!("single {value}"))
        .stdout_has(&format!("sub {value}"))
        .stdout_has(&format!("tick {value}"))
        // A here-document keeps the reference's quotes as text, and still never runs the value.
        .stdout_has(&format!("heredoc \"{value}\""));
    assert!(
        !run.stdout.lines().any(|l| l.contains("| INJECTED-")),
        "{}",
        run.stdout
    );
}

#[test]
fn a_param_pattern_that_is_not_a_regular_expression_is_reported_at_its_place() {
    Test::new()
        .tasks("[tasks.\"t:{x}\"]\nparams.x = { pattern = \"[a-z\" }\nrun = \"true\"\n")
        .args(&["check"])
        .run()
        .status(1)
        .stderr_has("tasks.toml:2:")
        .stderr_has("is not a valid regular expression");
}

#[test]
fn cached_outputs_and_the_state_directory_are_their_owners_alone() {
    let t = Test::new()
        .tasks(
            r#"
[tasks.build]
run = "mkdir -p out && (umask 077; echo secret-derived > out/key)"
inputs = ["in.txt"]
outputs = ["out/**"]
"#,
        )
        .file("in.txt", "x\n");
    // A `.cairn` made open by an older cairn is tightened too.
    std::fs::create_dir_all(t.path(".cairn")).expect("mkdir");
    std::fs::set_permissions(t.path(".cairn"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    t.run_with(&["run", "build"]).success();
    let mode = |path: &std::path::Path| {
        std::fs::symlink_metadata(path)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&t.path(".cairn")), 0o700);
    assert_eq!(mode(&t.path(".cairn/cache")), 0o700);
    let stored = walk(&t.path(".cairn/cache"));
    assert!(stored
        .iter()
        .any(|p| p.starts_with(t.path(".cairn/cache/blobs"))));
    for path in stored.iter().filter(|p| !p.ends_with("lock")) {
        assert_eq!(
            mode(path) & 0o077,
            0,
            "{} is open to others",
            path.display()
        );
    }
}

#[test]
fn a_plaintext_copy_left_by_a_killed_edit_is_wiped_by_the_next_secrets_command() {
    let test = Test::new().file(
        ".sops.yaml",
        "creation_rules:\n  - path_regex: ^secrets/\n    age: age1qwrzj4h9tsgtl525zf9x0g9lkl39pcyyyfeutdku57pkrjytxdssreuu26\n",
    );
    let key =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/sops/keys/alex.txt");
    test.write("secrets/app.yaml", "token: edit-me-please-0123\n");
    let runtime = test.path("runtime");
    std::fs::create_dir_all(&runtime).expect("mkdir");
    // The editor records the copy, then cairn is killed outright: nothing of cairn's runs after SIGKILL.
    test.write(
        "editor.sh",
        "#!/bin/sh\necho \"$1\" > \"$EDIT_LOG\"\nd=$(basename \"$(dirname \"$1\")\")\npid=${d#cairn-edit-}\nkill -KILL ${pid%%-*}\n",
    );
    std::fs::set_permissions(
        test.path("editor.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let (editor, log) = (test.path("editor.sh"), test.path("edit.log"));
    let test = test
        .env("SOPS_AGE_KEY_FILE", key.to_str().expect("utf-8"))
        .env("EDITOR", editor.to_str().expect("utf-8"))
        .env("EDIT_LOG", log.to_str().expect("utf-8"))
        .env("XDG_RUNTIME_DIR", runtime.to_str().expect("utf-8"));
    test.run_with(&["secrets", "encrypt", "secrets/app.yaml"])
        .success();
    let killed = test.run_with(&["secrets", "edit", "secrets/app.yaml"]);
    assert_eq!(killed.status, -1, "cairn was killed by a signal");
    let copy = std::path::PathBuf::from(test.read("edit.log").trim());
    assert!(
        copy.exists(),
        "the kill left the plaintext copy (the attack)"
    );
    test.run_with(&["secrets", "ls"]).success();
    assert!(
        !copy.parent().expect("dir").exists(),
        "the next command wiped it"
    );
}

/// Nine levels of nine aliases: 9^9 (387 million) values from a dozen lines.
fn alias_bomb(prefix: &str) -> String {
    let mut text = format!(
        "{prefix}a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
    );
    let names: Vec<char> = ('a'..='i').collect();
    for pair in names.windows(2) {
        let (from, to) = (pair[0], pair[1]);
        let refs = vec![format!("*{from}"); 9].join(",");
        text.push_str(&format!("{prefix}{to}: &{to} [{refs}]\n"));
    }
    text
}

#[test]
fn a_yaml_alias_bomb_in_a_secrets_file_fails_fast_with_its_place() {
    let test = Test::new()
        .file(
            ".sops.yaml",
            "creation_rules:\n  - path_regex: ^secrets/\n    age: age1qwrzj4h9tsgtl525zf9x0g9lkl39pcyyyfeutdku57pkrjytxdssreuu26\n",
        )
        .file("secrets/bomb.yaml", &alias_bomb(""));
    test.run_with(&["secrets", "encrypt", "secrets/bomb.yaml"])
        .status(1)
        .stderr_has("secrets/bomb.yaml")
        .stderr_has("more than 100000 values through its aliases");
}

#[test]
fn a_yaml_alias_bomb_in_the_policy_fails_fast_with_its_place() {
    let policy = format!(
        "{}creation_rules:\n  - path_regex: ^secrets/\n    age: age1qwrzj4h9tsgtl525zf9x0g9lkl39pcyyyfeutdku57pkrjytxdssreuu26\n",
        alias_bomb("x")
    );
    Test::new()
        .file(".sops.yaml", &policy)
        .file("secrets/app.yaml", "token: abcdefgh\n")
        .run_with(&["secrets", "encrypt", "secrets/app.yaml"])
        .status(1)
        .stderr_has(".sops.yaml")
        .stderr_has("more than 100000 values through its aliases");
}

#[test]
fn a_dry_run_names_each_secret_and_its_source_without_any_key() {
    let test = Test::new()
        .file(
            ".sops.yaml",
            "creation_rules:\n  - path_regex: ^secrets/\n    age: age1qwrzj4h9tsgtl525zf9x0g9lkl39pcyyyfeutdku57pkrjytxdssreuu26\n",
        )
        .file("secrets/production/deploy.yaml", "api_token: tok_live_8f3a9c2e1b\nssh:\n  key: private-key-material\n")
        .tasks(
            r#"
[tasks.build]
run = "echo build"
inputs = ["tasks.toml"]
[tasks."deploy:{env}"]
params.env = { values = ["production"] }
deps = ["build"]
run = "echo deploying"
inputs = ["tasks.toml"]
secrets.from = "secrets/{{env}}/deploy.yaml"
secrets.env = { API_TOKEN = "api_token" }
secrets.files = { SSH_KEY = "ssh.key" }
"#,
        );
    test.run_with(&["secrets", "encrypt", "secrets/production/deploy.yaml"])
        .success();
    // A newcomer: no identity anywhere.
    let test = test
        .env("SOPS_AGE_KEY_FILE", "/nonexistent/keys.txt")
        .env("XDG_CONFIG_HOME", "/nonexistent");
    let run = test
        .run_with(&["run", "deploy:production", "--dry-run"])
        .success()
        .stdout_has("secret $API_TOKEN from `api_token` in secrets/production/deploy.yaml")
        .stdout_has("secret $SSH_KEY (as a file) from `ssh.key` in secrets/production/deploy.yaml")
        .stdout_has("cache unknown: its key holds digests of its secrets")
        .stdout_has("cache miss");
    assert!(!run.stdout.contains("tok_live") && !run.stdout.contains("private-key-material"));
    // The real run still needs the key, and says so.
    test.run_with(&["run", "deploy:production", "--yes"])
        .status(1)
        .stderr_has("SOPS_AGE_KEY_FILE");
}

#[test]
fn a_file_whose_name_is_not_utf8_makes_the_task_uncached_never_stale() {
    use std::os::unix::ffi::OsStrExt;
    let t = Test::new()
        .tasks("[tasks.list]\nrun = \"cat src/* | wc -c\"\ninputs = [\"src/**\"]\n")
        .file("src/a.txt", "a\n");
    let odd = t
        .path("src")
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
    std::fs::write(&odd, "first\n").expect("write");
    t.run_with(&["run", "list"])
        .success()
        .stderr_has("has a name that is not UTF-8")
        .stdout_has("8");
    std::fs::write(&odd, "changed content\n").expect("write");
    // Before, the file was skipped and this was a hit replaying `8`.
    t.run_with(&["run", "list"])
        .success()
        .cached(0)
        .stdout_has("18");
}

#[test]
fn a_plugin_is_never_handed_what_an_input_link_points_to_outside_the_repository() {
    let Some(lint) = built_plugin("line-lint") else {
        return;
    };
    let outside = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        outside.path().join("private.txt"),
        "outside-secret-line   \n",
    )
    .expect("write");
    let t = Test::new()
        .tasks(&format!(
            "[tasks.lint]\nplugin = \"lint\"\ninputs = [\"hosts/*.nix\"]\n[tasks.lint_one]\nplugin = \"lint\"\ninputs = [\"hosts/link.nix\"]\n[plugins.lint]\nsource = \"lint.wasm\"\nsha256 = \"{}\"\n",
            sha256_hex(&lint)
        ))
        .file("hosts/a.nix", "{ }\n");
    std::fs::write(t.path("lint.wasm"), &lint).expect("write");
    std::os::unix::fs::symlink(outside.path().join("private.txt"), t.path("hosts/evil.nix"))
        .expect("link");
    t.run_with(&["run", "lint"])
        .status(1)
        .stderr_has("input `hosts/evil.nix` is a link out of the repository")
        .stderr_lacks("trailing whitespace");
    std::fs::remove_file(t.path("hosts/evil.nix")).expect("remove");
    // A link inside the repository is read only when its target is an input too, so the key covers it.
    std::os::unix::fs::symlink("a.nix", t.path("hosts/link.nix")).expect("link");
    t.run_with(&["run", "lint"]).success();
    t.run_with(&["run", "lint_one"])
        .status(1)
        .stderr_has("is a link to `hosts/a.nix`, which is not one of the task's inputs");
}

#[test]
fn a_secret_inside_http_basic_auth_is_redacted() {
    let t = Test::new()
        .tasks(
            r#"
[tasks.auth]
run = "for u in a ci deploy; do printf '%s:%s' $u \"$CAIRN_REMOTE_CACHE_TOKEN\" | base64 -w0; echo; done"
env_pass = ["CAIRN_REMOTE_CACHE_TOKEN"]
"#,
        )
        .env("CAIRN_REMOTE_CACHE_TOKEN", TOKEN);
    let run = t.run_with(&["run", "auth"]).success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    for line in lines {
        assert!(line.contains("[secret:CAIRN_REMOTE_CACHE_TOKEN]"), "{line}");
    }
}

#[test]
fn a_target_against_a_task_of_many_free_form_params_resolves_without_backtracking() {
    let names: Vec<String> = (0..120).map(|i| format!("{{p{i}}}")).collect();
    let declared: String = (0..120).map(|i| format!("params.p{i} = {{}}\n")).collect();
    let t = Test::new().tasks(&format!(
        "[tasks.\"t:{}\"]\nrun = \"echo matched\"\n{declared}",
        names.join(":")
    ));
    // One value short: no instance fits. Backtracking tried every split of the name (35 s at 120 params in a
    // release build, minutes in a debug one); now each position is tried once.
    t.run_with(&["run", &format!("t:{}", vec!["a"; 119].join(":"))])
        .status(2)
        .stderr_has("no task");
    t.run_with(&["run", &format!("t:{}", vec!["a"; 120].join(":"))])
        .success()
        .stdout_has("matched");
}
