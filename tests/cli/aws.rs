//! The aws-secrets-manager plugin against a real moto server (PyPI `moto[server]`, installed by `.ci/run`)
//! started on a free loopback port with signature checking on: after the first requests (used to create a
//! user and its key), every request's SigV4 signature is verified against that key.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{built_plugin, sha256_hex, silent_server, Test};

const PASSWORD: &str = "aws-db-pa55word-0042";

struct Moto {
    child: Child,
    port: u16,
    key: (String, String),
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("CAIRN_TEST_MOTO_VENV").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/cairn/tools/moto-venv")),
    ];
    let found = candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("bin/moto_server").is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "moto is not installed; .ci/run installs it (pip install 'moto[server]')"
        );
        eprintln!("skipped: moto is not installed (pip install 'moto[server]==5.2.5')");
    }
    found
}

/// Starts moto with signature checks after 3 unauthenticated set-up calls, creates a user, its key, a policy,
/// and the test's secrets (signed with that key).
fn start() -> Option<Moto> {
    let venv = venv()?;
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(venv.join("bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto starts");
    let mut moto = Moto {
        child,
        port,
        key: (String::new(), String::new()),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let script = format!(
        r#"
import boto3, json
url = "http://127.0.0.1:{port}"
iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
iam.create_user(UserName="cairn")
key = iam.create_access_key(UserName="cairn")["AccessKey"]
iam.put_user_policy(UserName="cairn", PolicyName="sm", PolicyDocument=json.dumps({{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}}]}}))
sm = boto3.client("secretsmanager", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
sm.create_secret(Name="dotfiles/production/deploy", SecretString=json.dumps({{"db_password": "old-password-v1"}}))
sm.put_secret_value(SecretId="dotfiles/production/deploy", SecretString=json.dumps({{"db_password": "{PASSWORD}", "port": 5432}}))
sm.create_secret(Name="dotfiles/binary", SecretBinary=b"binary-secret-99")
print(key["AccessKeyId"], key["SecretAccessKey"])
"#
    );
    let output = Command::new(venv.join("bin/python"))
        .arg("-c")
        .arg(script)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut words = text.split_whitespace();
    moto.key = (
        words.next().unwrap().to_string(),
        words.next().unwrap().to_string(),
    );
    Some(moto)
}

fn module() -> Option<Vec<u8>> {
    built_plugin("aws-secrets-manager")
}

fn project(module: &[u8], port: u16, grants: &str, key: &str) -> Test {
    let sha = sha256_hex(module);
    let test = Test::new().tasks(&format!(
        "[plugins.aws]\nsource = \"aws.wasm\"\nsha256 = \"{sha}\"\nconfig = {{ region = \"us-east-1\", endpoint = \"http://127.0.0.1:{port}\" }}\n{grants}\nlimits = {{ timeout = \"5s\" }}\n\n[tasks.deploy]\nsecrets.env = {{ SECRET = \"{key}\" }}\nrun = \"echo secret=$SECRET; echo length=${{#SECRET}}\"\n"
    ));
    std::fs::write(test.path("aws.wasm"), module).unwrap();
    test
}

fn all_grants(port: u16) -> String {
    format!("allow.hosts = [\"127.0.0.1:{port}\"]\nallow.env = [\"AWS_ACCESS_KEY_ID\", \"AWS_SECRET_ACCESS_KEY\"]\nallow.clock = true")
}

#[test]
fn a_signed_request_reads_a_field_a_stage_and_a_binary_secret() {
    let (Some(module), Some(moto)) = (module(), start()) else {
        return;
    };
    let run = |key: &str| {
        project(&module, moto.port, &all_grants(moto.port), key)
            .env("AWS_ACCESS_KEY_ID", &moto.key.0)
            .env("AWS_SECRET_ACCESS_KEY", &moto.key.1)
            .run_with(&["run", "deploy"])
    };
    let current = run("aws:dotfiles/production/deploy#db_password").success();
    assert!(
        current.stdout.contains("secret=[secret:SECRET]")
            && current
                .stdout
                .contains(&format!("length={}", PASSWORD.len())),
        "{}",
        current.stdout
    );
    assert!(!current.stdout.contains(PASSWORD) && !current.stderr.contains(&moto.key.1));
    run("aws:dotfiles/production/deploy#db_password@AWSPREVIOUS")
        .success()
        .stdout_has(&format!("length={}", "old-password-v1".len()));
    run("aws:dotfiles/binary")
        .success()
        .stdout_has(&format!("length={}", "binary-secret-99".len()));
}

#[test]
fn aws_failures_are_typed_and_name_what_is_missing() {
    let (Some(module), Some(moto)) = (module(), start()) else {
        return;
    };
    let key = "aws:dotfiles/production/deploy#db_password";
    // A wrong secret key: moto checks the signature.
    project(&module, moto.port, &all_grants(moto.port), key)
        .env("AWS_ACCESS_KEY_ID", &moto.key.0)
        .env("AWS_SECRET_ACCESS_KEY", "wrong-secret-key-000")
        .run_with(&["run", "deploy"])
        .status(1)
        .stderr_has("unauthenticated")
        .stderr_lacks("wrong-secret-key-000");
    let good = |key: &str, grants: &str| {
        project(&module, moto.port, grants, key)
            .env("AWS_ACCESS_KEY_ID", &moto.key.0)
            .env("AWS_SECRET_ACCESS_KEY", &moto.key.1)
            .run_with(&["run", "deploy"])
    };
    good("aws:dotfiles/none#x", &all_grants(moto.port))
        .status(1)
        .stderr_has("not_found")
        .stderr_has("ResourceNotFoundException");
    good(
        "aws:dotfiles/production/deploy#nope",
        &all_grants(moto.port),
    )
    .status(1)
    .stderr_has("has no field `nope` (it has: db_password, port)");
    // Each missing grant is named.
    let no_clock = all_grants(moto.port).replace("allow.clock = true", "");
    good(key, &no_clock)
        .status(1)
        .stderr_has("allow.clock = true");
    let no_env = all_grants(moto.port).replace(
        "allow.env = [\"AWS_ACCESS_KEY_ID\", \"AWS_SECRET_ACCESS_KEY\"]",
        "",
    );
    good(key, &no_env)
        .status(1)
        .stderr_has("allow.env = [\"AWS_ACCESS_KEY_ID\"]");
    // The server down.
    let port = moto.port;
    drop(moto);
    project(&module, port, &all_grants(port), key)
        .env("AWS_ACCESS_KEY_ID", "AKID")
        .env("AWS_SECRET_ACCESS_KEY", "SECRET-KEY-1")
        .run_with(&["run", "deploy"])
        .status(1)
        .stderr_has("unavailable");
}

#[test]
fn an_endpoint_that_never_answers_is_cut_off_by_the_timeout() {
    let Some(module) = module() else { return };
    let port = silent_server();
    let started = Instant::now();
    project(
        &module,
        port,
        &all_grants(port),
        "aws:dotfiles/production/deploy",
    )
    .env("AWS_ACCESS_KEY_ID", "AKID")
    .env("AWS_SECRET_ACCESS_KEY", "SECRET-KEY-1")
    .run_with(&["run", "deploy"])
    .status(1)
    .stderr_has("needs `aws:dotfiles/production/deploy`");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "bounded by the timeout and the retries"
    );
}

#[test]
fn credentials_can_come_from_a_cairn_secrets_file() {
    let (Some(module), Some(moto)) = (module(), start()) else {
        return;
    };
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/sops");
    let grants = format!("allow.hosts = [\"127.0.0.1:{}\"]\nallow.env = [\"AWS_ACCESS_KEY_ID\"]\nallow.clock = true\nsecrets = {{ AWS_SECRET_ACCESS_KEY = \"secrets/ci/aws.yaml#secret_key\" }}", moto.port);
    let test = project(
        &module,
        moto.port,
        &grants,
        "aws:dotfiles/production/deploy#db_password",
    );
    let alex = std::fs::read_to_string(vectors.join("keys/alex.txt")).unwrap();
    test.write("keys/alex.txt", &alex);
    let recipient = alex
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    test.write(
        ".sops.yaml",
        &format!("creation_rules:\n  - path_regex: ^secrets/ci/\n    age: {recipient}\n"),
    );
    let key_file = test.path("keys/alex.txt").display().to_string();
    let test = test
        .env("SOPS_AGE_KEY_FILE", &key_file)
        .env("AWS_ACCESS_KEY_ID", &moto.key.0);
    test.run_with_stdin(
        &["secrets", "set", "secrets/ci/aws.yaml", "secret_key"],
        &moto.key.1,
    )
    .success();
    let run = test.run_with(&["run", "deploy"]).success();
    assert!(
        run.stdout.contains(&format!("length={}", PASSWORD.len())),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains(&moto.key.1) && !run.stderr.contains(&moto.key.1));
}
