//! `cairn ui` through the real binary: its guard against other sites and other users (raw HTTP), a crawl of
//! every page for secrets, and every view driven in real headless Chromium through chromedriver (WebDriver),
//! with screenshots under the target directory for docs/dashboard.md.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{free_port, Test};

/// A running `cairn ui` on a free port; stopped (Ctrl-C) when dropped.
pub(crate) struct Dashboard {
    child: Child,
    port: u16,
    token: String,
    _output: BufReader<std::process::ChildStdout>,
}

impl Dashboard {
    pub(crate) fn start(test: &Test) -> Dashboard {
        let mut child = test
            .command_with(&["ui", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cairn ui starts");
        let mut line = String::new();
        let mut output = BufReader::new(child.stdout.take().expect("stdout"));
        output
            .read_line(&mut line)
            .expect("cairn ui prints its address");
        let url = line
            .trim()
            .strip_prefix("cairn ui: ")
            .unwrap_or_else(|| panic!("{line}"));
        let rest = url
            .strip_prefix("http://127.0.0.1:")
            .unwrap_or_else(|| panic!("{url}"));
        let (port, token) = rest
            .split_once("/?token=")
            .unwrap_or_else(|| panic!("{url}"));
        Dashboard {
            child,
            port: port.parse().expect("a port"),
            token: token.to_owned(),
            _output: output,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn origin(&self) -> String {
        format!("http://{}", self.host())
    }

    /// The Live view's fragment once `shows` holds for it (`Err` with the last one after 30 s).
    fn live_until(&self, shows: impl Fn(&str) -> bool) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let live = self.get("/live?fragment=1").body;
            if shows(&live) {
                return Ok(live);
            }
            if Instant::now() > deadline {
                return Err(live);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET `path` as the token's holder.
    pub(crate) fn get(&self, path: &str) -> Answer {
        http(
            self.port,
            "GET",
            path,
            &[
                ("Host", &self.host()),
                ("Authorization", &format!("Bearer {}", self.token)),
            ],
            "",
        )
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        // SAFETY: a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
        let _ = self.child.wait();
    }
}

pub(crate) struct Answer {
    pub(crate) status: u16,
    headers: String,
    pub(crate) body: String,
}

/// One HTTP/1.1 request on its own connection.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "DELETE" {
        request.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send");
    let (head, body) = read_response(&mut stream);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {head}"));
    Answer {
        status,
        headers: head,
        body,
    }
}

/// An HTTP/1.1 response read by its own framing (Content-Length, or chunks): servers need not close.
fn read_response(stream: &mut TcpStream) -> (String, String) {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("answer");
        if n == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let mut body = Vec::new();
    if let Some(length) = length {
        body.resize(length, 0);
        reader.read_exact(&mut body).expect("body");
    } else if lower.contains("transfer-encoding: chunked") {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).expect("chunk size");
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).expect("chunk");
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut body).expect("body");
    }
    (
        head.trim_end().to_owned(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn csrf_of(page: &str) -> String {
    let start = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with the CSRF token")
        + 19;
    page[start..start + 64].to_owned()
}

const TASKS: &str = r#"
[tasks.build]
description = "compile the thing"
run = "echo built > out.txt"
inputs = ["src/**"]
outputs = ["out.txt"]

[tasks.test]
run = "true"
deps = ["build"]

[tasks.slow]
run = "sleep 3"

[tasks.ship]
description = "deploy to production"
run = "echo shipped"
deps = ["test"]
protected = true
audit = true

[tasks."roll:{env}"]
description = "each host of an environment in turn"
params.env.values = ["prod", "stage"]
matrix.host = { from = "hosts.toml", key = "environments.{{env}}.hosts" }
serial = true
run = "echo rolled {{host}}"
audit = true
"#;

/// A plugin the Plugins view shows with its grants (never loaded: no selected task uses it).
const PLUGIN: &str = r#"
[plugins.lint]
source = "plugins/line-lint.wasm"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
allow.env = ["LANG"]
limits = { timeout = "2s", memory = "64MiB" }

[tasks.lint]
plugin = "lint"
inputs = ["src/**"]
"#;

/// Two people's public keys and a rule per environment, for the Secrets view.
const SOPS_POLICY: &str = "keys:\n  - &alex age1qwrzj4h9tsgtl525zf9x0g9lkl39pcyyyfeutdku57pkrjytxdssreuu26\n  - &NIXSTATION64 age14w7d5twfvhvnxugyptyrfu8eexjclmv2cjynl7p0arj5me8haptsp4ejqy\ncreation_rules:\n  - path_regex: ^secrets/production/\n    key_groups: [{age: [*alex, *NIXSTATION64]}]\n  - path_regex: ^secrets/staging/\n    key_groups: [{age: [*alex]}]\n";

const HOSTS: &str = "[environments.prod]\nhosts = [\"alpha\", \"beta\"]\n[environments.stage]\nhosts = [\"gamma\"]\n";

fn project() -> Test {
    let test = Test::new()
        .file("hosts.toml", HOSTS)
        .tasks(TASKS)
        .file("src/a.txt", "a\n");
    test.run_with(&["run", "ship", "--yes"]).success();
    test
}

#[test]
fn the_dashboard_answers_only_the_token_holder_through_its_own_host_and_origin() {
    let test = project();
    let ui = Dashboard::start(&test);
    let host = ui.host();
    // No token: refused, and nothing of the project in the answer.
    let anonymous = http(ui.port, "GET", "/runs", &[("Host", &host)], "");
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert!(!anonymous.body.contains("ship"), "{}", anonymous.body);
    let wrong = http(
        ui.port,
        "GET",
        "/runs",
        &[("Host", &host), ("Cookie", "cairn_ui=00")],
        "",
    );
    assert_eq!(wrong.status, 401);
    let wrong_query = http(ui.port, "GET", "/?token=0000", &[("Host", &host)], "");
    assert_eq!(wrong_query.status, 401);
    // DNS rebinding: the token is right but the page was reached under another name.
    let bearer = format!("Bearer {}", ui.token);
    let rebound = http(
        ui.port,
        "GET",
        "/runs",
        &[
            ("Host", &format!("attacker.example:{}", ui.port)),
            ("Authorization", &bearer),
        ],
        "",
    );
    assert_eq!(rebound.status, 421, "{}", rebound.body);
    let no_host = http(ui.port, "GET", "/runs", &[("Authorization", &bearer)], "");
    assert_eq!(no_host.status, 421);
    // The printed address sets an HttpOnly, SameSite=Strict cookie and drops the token from the address.
    let first = http(
        ui.port,
        "GET",
        &format!("/tasks?token={}", ui.token),
        &[("Host", &host)],
        "",
    );
    assert_eq!(first.status, 303, "{}", first.headers);
    let lower = first.headers.to_ascii_lowercase();
    assert!(
        lower.contains("location: /tasks\r\n") || lower.ends_with("location: /tasks"),
        "{}",
        first.headers
    );
    assert!(
        lower.contains("httponly") && lower.contains("samesite=strict"),
        "{}",
        first.headers
    );
    let cookie = format!("cairn_ui={}", ui.token);
    let page = http(
        ui.port,
        "GET",
        "/tasks",
        &[("Host", &host), ("Cookie", &cookie)],
        "",
    );
    assert_eq!(page.status, 200);
    assert!(page.body.contains("compile the thing"), "{}", page.body);
    let lower = page.headers.to_ascii_lowercase();
    for header in [
        "content-security-policy: default-src 'none'",
        "x-frame-options: deny",
        "referrer-policy: same-origin",
    ] {
        assert!(lower.contains(header), "missing {header}: {}", page.headers);
    }
    // Actions: a POST from another site, or without the page's CSRF token, does nothing.
    let csrf = csrf_of(&ui.get("/tasks/ship").body);
    let form = format!("csrf={csrf}&target=ship&confirmed=yes");
    let own = ui.origin();
    let headers = |origin: Option<&'static str>| form_headers(&host, &cookie, origin);
    let ours = || form_headers(&host, &cookie, Some(&own));
    let audit_before = test.read(".cairn/audit.log");
    let cross_site = http(
        ui.port,
        "POST",
        "/actions/run",
        &headers(Some("http://attacker.example")),
        &form,
    );
    assert_eq!(cross_site.status, 403, "{}", cross_site.body);
    let no_origin = http(ui.port, "POST", "/actions/run", &headers(None), &form);
    assert_eq!(no_origin.status, 403);
    let no_csrf = http(
        ui.port,
        "POST",
        "/actions/run",
        &ours(),
        "target=ship&confirmed=yes",
    );
    assert_eq!(no_csrf.status, 403, "{}", no_csrf.body);
    let flag = http(
        ui.port,
        "POST",
        "/actions/run",
        &ours(),
        &format!("csrf={csrf}&target=--help"),
    );
    assert_eq!(flag.status, 400, "a flag is not a target: {}", flag.body);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        test.read(".cairn/audit.log"),
        audit_before,
        "a refused action ran something"
    );
    // The same action from the page itself: a protected task shows its plan and asks first.
    let asked = http(
        ui.port,
        "POST",
        "/actions/run",
        &ours(),
        &format!("csrf={csrf}&target=ship"),
    );
    assert_eq!(asked.status, 200);
    assert!(asked.body.contains("is protected"), "{}", asked.body);
    assert!(
        asked.body.contains("cairn run ship --dry-run"),
        "{}",
        asked.body
    );
    assert_eq!(
        test.read(".cairn/audit.log"),
        audit_before,
        "asking ran something"
    );
    let confirmed = http(ui.port, "POST", "/actions/run", &ours(), &form);
    assert_eq!(confirmed.status, 303, "{}", confirmed.body);
    let deadline = Instant::now() + Duration::from_secs(30);
    while test.read(".cairn/audit.log") == audit_before {
        assert!(
            Instant::now() < deadline,
            "the confirmed run never reached the audit log"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_event_stream_tells_each_task_of_a_terminal_run_as_it_starts_and_ends() {
    let test = project();
    let ui = Dashboard::start(&test);
    let mut stream = TcpStream::connect(("127.0.0.1", ui.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!(
        "GET /events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        ui.host(),
        ui.token
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut events = BufReader::new(stream);
    let mut line = String::new();
    events.read_line(&mut line).expect("status line");
    assert!(line.contains(" 200 "), "{line}");
    let run = test
        .command_with(&["run", "slow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cairn run");
    let mut seen = Vec::new();
    for wanted in [
        "\"event\":\"run\"",
        "\"event\":\"started\"",
        "\"event\":\"finished\"",
        "\"event\":\"end\"",
    ] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                Instant::now() < deadline,
                "no {wanted} within 30 s; seen {seen:?}"
            );
            line.clear();
            let n = events.read_line(&mut line).unwrap_or_else(|e| {
                panic!("the stream stopped before {wanted}: {e}; seen {seen:?}")
            });
            assert!(n > 0, "the stream ended before {wanted}; seen {seen:?}");
            if line.starts_with("data: {\"") {
                seen.push(line.trim().to_owned());
                if line.contains(wanted) {
                    assert!(
                        wanted.contains("run")
                            || wanted.contains("end")
                            || line.contains("\"task\":\"slow\""),
                        "{line}"
                    );
                    break;
                }
            }
        }
    }
    let mut run = run;
    assert!(run.wait().expect("ends").success());
}

#[test]
fn a_cycle_of_cairn_watch_shows_in_the_live_view() {
    let test = project();
    let ui = Dashboard::start(&test);
    let mut watching = test
        .command_with(&["watch", "slow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cairn watch");
    let shown = ui.live_until(|live| live.contains("cairn watch slow") && live.contains("running"));
    let _ = watching.kill();
    let _ = watching.wait();
    if let Err(live) = shown {
        panic!("{live}");
    }
}

#[test]
fn a_service_kept_up_by_cairn_watch_shows_in_the_live_view_until_it_stops() {
    let test = project().tasks(&format!(
        "{TASKS}\n[tasks.web]\nrun = \"sleep 60\"\nservice = true\n"
    ));
    let ui = Dashboard::start(&test);
    let mut watching = test
        .command_with(&["watch", "web"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cairn watch");
    let shown = ui.live_until(|live| {
        live.contains("service web (kept up by cairn watch)") && live.contains("running")
    });
    // Ctrl-C stops the watch and its service; the service's feed then says it ended.
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(watching.id() as libc::pid_t, libc::SIGINT);
    }
    let _ = watching.wait();
    if let Err(live) = shown {
        panic!("{live}");
    }
    let live = ui.get("/live?fragment=1").body;
    assert!(
        !live.contains("service web (kept up by cairn watch) <span class=\"badge good\">running"),
        "{live}"
    );
}

#[test]
fn a_run_started_in_a_terminal_is_stopped_from_the_live_view() {
    let test = project().tasks(&format!("{TASKS}\n[tasks.long]\nrun = \"sleep 60\"\n"));
    let ui = Dashboard::start(&test);
    let mut run = test
        .command_with(&["run", "long"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn run");
    let live = ui
        .live_until(|live| live.contains("Stop this run") && live.contains("running"))
        .unwrap_or_else(|live| panic!("no stoppable run shown: {live}"));
    let marker = "name=\"target\" value=\"";
    let at = live.find(marker).expect("the run's name") + marker.len();
    let id = &live[at..at + live[at..].find('"').expect("end of the name")];
    let csrf = csrf_of(&live);
    let (host, cookie, own) = (ui.host(), format!("cairn_ui={}", ui.token), ui.origin());
    // Only the page may ask, and only for a run in progress that listens.
    let cross_site = http(
        ui.port,
        "POST",
        "/actions/stop",
        &form_headers(&host, &cookie, Some("http://attacker.example")),
        &format!("csrf={csrf}&target={id}"),
    );
    assert_eq!(cross_site.status, 403, "{}", cross_site.body);
    let ours = form_headers(&host, &cookie, Some(&own));
    for bad in ["../../tasks", "1-1", "x"] {
        let refused = http(
            ui.port,
            "POST",
            "/actions/stop",
            &ours,
            &format!("csrf={csrf}&target={bad}"),
        );
        assert_eq!(refused.status, 404, "{bad}: {}", refused.body);
    }
    assert!(run.try_wait().expect("waits").is_none(), "still running");
    let asked = http(
        ui.port,
        "POST",
        "/actions/stop",
        &ours,
        &format!("csrf={csrf}&target={id}"),
    );
    assert_eq!(asked.status, 303, "{}", asked.body);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = run.try_wait().expect("waits") {
            break status;
        }
        assert!(Instant::now() < deadline, "the run did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(143), "stopped as SIGTERM would");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().expect("stderr"), &mut stderr).unwrap();
    assert!(
        stderr.contains("the stop was asked for in the dashboard"),
        "{stderr}"
    );
    // The request is gone with the run, and the feed says how it ended.
    let leftover = std::fs::read_dir(test.path(".cairn/live"))
        .expect("live dir")
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().ends_with(".stop"));
    assert!(!leftover, "a stop request was left behind");
}

#[test]
fn no_page_of_the_dashboard_shows_a_secret_value_or_a_private_key() {
    let test = crate::secrets::deploy_project();
    test.run_with(&["run", "deploy:production"]).success();
    let ui = Dashboard::start(&test);
    let private_key = std::fs::read_to_string(test.path("keys/alex.txt")).expect("key");
    let secret_line = private_key
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("an age identity")
        .to_owned();
    // Every page the views link to, breadth first, plus the assets and the live fragment.
    let mut queue: Vec<String> = [
        "/",
        "/live",
        "/live?fragment=1",
        "/assets/app.js",
        "/assets/app.css",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(path) = queue.pop() {
        if !seen.insert(path.clone()) || seen.len() > 300 {
            continue;
        }
        let answer = ui.get(&path);
        assert!(
            answer.status == 200,
            "{path}: {} {}",
            answer.status,
            answer.body
        );
        crate::secrets::assert_no_secret(&answer.body, &path);
        crate::secrets::assert_no_secret(&html_unescape(&answer.body), &path);
        assert!(
            !answer.body.contains("AGE-SECRET-KEY"),
            "{path} shows a private key"
        );
        assert!(
            !answer.body.contains(&secret_line[15..40]),
            "{path} shows alex's key"
        );
        let mut rest = answer.body.as_str();
        while let Some(at) = rest.find("href=\"/") {
            rest = &rest[at + 6..];
            let end = rest.find('"').unwrap_or(rest.len());
            let link = rest[..end].replace("&amp;", "&");
            if !link.starts_with("//") {
                queue.push(link);
            }
        }
    }
    for view in [
        "/fleet", "/runs", "/tasks", "/cache", "/secrets", "/plugins",
    ] {
        assert!(seen.contains(view), "the crawl missed {view}: {seen:?}");
    }
    assert!(
        seen.iter()
            .any(|p| p.starts_with("/runs/") && p.ends_with("/report")),
        "{seen:?}"
    );
    assert!(seen.len() >= 12, "{seen:?}");
    // The Secrets view names the files and who can read them.
    let secrets = ui.get("/secrets").body;
    assert!(
        secrets.contains("secrets/production/deploy.yaml"),
        "{secrets}"
    );
    assert!(secrets.contains("alex"), "{secrets}");
}

fn form_headers<'a>(
    host: &'a str,
    cookie: &'a str,
    origin: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![("Host", host), ("Cookie", cookie)];
    if let Some(origin) = origin {
        h.push(("Origin", origin));
    }
    h
}

fn html_unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// chromedriver on a free port, and one headless Chromium session through it (WebDriver).
struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    fn start() -> Option<Browser> {
        let (Some(chromium), Some(chromedriver)) = (which("chromium"), which("chromedriver"))
        else {
            assert!(
                std::env::var_os("CI").is_none(),
                "chromium and chromedriver are not installed; .ci/run installs them"
            );
            eprintln!("skipped: chromium or chromedriver is not installed");
            return None;
        };
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
        };
        let capabilities = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                         "--disable-dev-shm-usage", "--hide-scrollbars"]
            }
        }}});
        let created = browser.call("POST", "/session", Some(capabilities));
        browser.session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        Some(browser)
    }

    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("chromedriver");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("send");
        let (head, body) = read_response(&mut stream);
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("chromedriver said: {head}\n{body}"))
    }

    fn session_call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn open(&self, url: &str) {
        self.session_call("POST", "/url", Some(serde_json::json!({"url": url})));
    }

    fn find(&self, css: &str) -> Option<String> {
        let found = self.session_call(
            "POST",
            "/element",
            Some(serde_json::json!({"using": "css selector", "value": css})),
        );
        found["value"]
            .as_object()?
            .iter()
            .find(|(k, _)| k.starts_with("element-"))
            .and_then(|(_, v)| v.as_str().map(str::to_owned))
    }

    /// The text of the first element `css` selects, waiting for it while a page is still loading.
    fn text(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(element) = self.find(css) {
                let answer = self.session_call("GET", &format!("/element/{element}/text"), None);
                // A page replaced between finding and reading leaves a stale element: look again.
                if let Some(text) = answer["value"].as_str() {
                    return text.to_owned();
                }
            }
            assert!(Instant::now() < deadline, "no {css} on {}", self.source());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let element = loop {
            if let Some(element) = self.find(css) {
                break element;
            }
            assert!(Instant::now() < deadline, "no {css} on {}", self.source());
            std::thread::sleep(Duration::from_millis(50));
        };
        self.session_call(
            "POST",
            &format!("/element/{element}/click"),
            Some(serde_json::json!({})),
        );
    }

    fn source(&self) -> String {
        self.session_call("GET", "/source", None)["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn screenshot(&self, name: &str) {
        use base64::Engine;
        let shot = self.session_call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["value"].as_str().unwrap_or_default())
            .expect("a PNG");
        let dir = screenshots();
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot written");
    }

    /// Waits until `css` holds `text`, without reloading the page (what the page's own script shows).
    fn wait_for_text(&self, css: &str, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.find(css).is_some() && self.text(css).contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {text:?}: {}",
                self.source()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.call("DELETE", &format!("/session/{}", self.session), None)
            }));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Where the tests leave the views' screenshots (shown in docs/dashboard.md).
fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard")
}

#[test]
fn every_view_renders_in_chromium_and_the_live_view_follows_runs_from_the_page_and_a_terminal() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let test = project();
    test.run_with(&["run", "test"]).success();
    test.run_with(&["run", "roll:stage"]).success();
    test.write("tasks.toml", &format!("{TASKS}{PLUGIN}"));
    test.write(".sops.yaml", SOPS_POLICY);
    test.write(
        "secrets/production/deploy.yaml",
        "db:\n    password: hunter2-not-shown\n",
    );
    test.write("secrets/staging/app.env", "TOKEN=not-shown-either\n");
    for file in ["secrets/production/deploy.yaml", "secrets/staging/app.env"] {
        test.run_with(&["secrets", "encrypt", file]).success();
    }
    let ui = Dashboard::start(&test);
    let base = ui.origin();
    // The printed address: the browser keeps the token as a cookie and every later page needs nothing else.
    browser.open(&format!("{base}/?token={}", ui.token));
    assert_eq!(browser.text("h1"), "Overview");
    for (path, title, shot) in [
        ("/fleet", "Fleet", "fleet"),
        ("/runs", "Runs", "runs"),
        ("/tasks", "Tasks", "tasks"),
        ("/cache", "Cache", "cache"),
        ("/secrets", "Secrets", "secrets"),
        ("/plugins", "Plugins", "plugins"),
    ] {
        browser.open(&format!("{base}{path}"));
        assert_eq!(browser.text("h1"), title, "{}", browser.source());
        browser.screenshot(shot);
    }
    // Secrets: files, who can open them, the rules; never a value.
    browser.open(&format!("{base}/secrets"));
    let secrets = browser.text("main");
    for expected in [
        "secrets/production/deploy.yaml",
        "NIXSTATION64 (age14w7d5twf",
        "secrets/staging/app.env",
    ] {
        assert!(
            secrets.contains(expected),
            "the Secrets view lacks {expected}: {secrets}"
        );
    }
    assert!(!browser.source().contains("hunter2") && !browser.source().contains("not-shown"));
    browser.screenshot("secrets");
    // Plugins: the pin, the grants and who uses it.
    browser.open(&format!("{base}/plugins"));
    let plugins = browser.text("main");
    for expected in ["lint", "env: LANG", "time 2.00s", "memory 64.0 MiB"] {
        assert!(
            plugins.contains(expected),
            "the Plugins view lacks {expected}: {plugins}"
        );
    }
    browser.screenshot("plugins");
    // Fleet: every host of every environment from the inventory, deployed or not, and other audited tasks.
    browser.open(&format!("{base}/fleet"));
    let fleet = browser.text("main");
    for expected in [
        "roll:prod[alpha]",
        "roll:prod[beta]",
        "roll:stage[gamma]",
        "never",
        "ship",
    ] {
        assert!(
            fleet.contains(expected),
            "the Fleet view lacks {expected}: {fleet}"
        );
    }
    assert!(
        browser
            .source()
            .contains("roll:stage[gamma]</a></td><td><span class=\"badge good\">succeeded"),
        "{fleet}"
    );
    // A past run and its report (timeline, graph, critical path).
    browser.open(&format!("{base}/runs"));
    browser.click("main table tbody tr a");
    browser.wait_for_text("h1", "Run ");
    browser.screenshot("run");
    // The graph: selecting a task (a node of the graph) opens its page.
    browser.open(&format!("{base}/tasks"));
    browser.click("figure.graph a[href='/tasks/build']");
    browser.wait_for_text("h1", "build");
    assert_eq!(browser.text("h1"), "build");
    assert!(browser.text("main").contains("compile the thing"));
    assert!(
        browser.text("#why").contains("build"),
        "{}",
        browser.source()
    );
    browser.screenshot("task");
    // A protected task asks first, with its plan; "yes" runs it and the Live view follows it to its end.
    browser.open(&format!("{base}/tasks/ship"));
    browser.click("#run");
    // A click starts a navigation: wait for the new page rather than read the old one.
    browser.wait_for_text("main", "is protected");
    assert!(browser.text("#plan").contains("ship"));
    browser.screenshot("confirm");
    browser.click("#confirm");
    browser.wait_for_text("h1", "Live");
    browser.wait_for_text("section.page-run", "succeeded");
    // A run started in a terminal shows up in the open page by itself (server-sent events), and ends there.
    assert!(!browser.source().contains("cairn run slow"));
    let mut terminal = test
        .command_with(&["run", "slow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cairn run");
    browser.wait_for_text("#live", "cairn run slow");
    let section = format!("section.live-run[data-pid='{}']", terminal.id());
    browser.wait_for_text(&section, "running");
    browser.screenshot("live");
    assert!(terminal.wait().expect("the run ends").success());
    browser.wait_for_text("#live", "No run in progress");
}
