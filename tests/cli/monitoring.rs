//! The monitoring plugin against a real Prometheus Pushgateway (Debian's `prometheus-pushgateway`, installed
//! by `.ci/run`) and a minimal OTLP/HTTP receiver written here that records what it is sent.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{built_plugin, free_port, sha256_hex, silent_server, Test};

struct Gateway {
    child: Child,
    port: u16,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

fn start_gateway() -> Option<Gateway> {
    let binary = [
        "/usr/bin/prometheus-pushgateway",
        "/usr/local/bin/pushgateway",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    let Some(binary) = binary else {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus-pushgateway is not installed; .ci/run installs it"
        );
        eprintln!("skipped: prometheus-pushgateway is not installed (apt-get install prometheus-pushgateway)");
        return None;
    };
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the Pushgateway starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the Pushgateway did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Gateway { child, port })
}

/// Accepts OTLP/HTTP posts on loopback and keeps their bodies.
fn start_receiver() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut data = Vec::new();
            let mut buffer = [0u8; 65536];
            loop {
                let n = stream.read(&mut buffer).unwrap_or(0);
                data.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&data).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        kept.lock().unwrap().push(body.to_string());
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
        }
    });
    (port, bodies)
}

fn project(module: &[u8], gateway: u16, otlp: u16) -> Test {
    let sha = sha256_hex(module);
    let test = Test::new().tasks(&format!(
        "[plugins.monitor]\nsource = \"monitoring.wasm\"\nsha256 = \"{sha}\"\nevents = true\nconfig = {{ pushgateway = \"http://127.0.0.1:{gateway}\", otlp = \"http://127.0.0.1:{otlp}/v1/traces\", instance = \"NIXSTATION64\" }}\nallow.hosts = [\"127.0.0.1:{gateway}\", \"127.0.0.1:{otlp}\"]\nlimits = {{ timeout = \"3s\" }}\n\n[tasks.\"deploy:{{env}}\"]\nparams.env.values = [\"production\", \"staging\"]\nrun = \"echo deploying {{{{env}}}}\"\n\n[tasks.broken]\nrun = \"exit 4\"\n"
    ));
    std::fs::write(test.path("monitoring.wasm"), module).unwrap();
    test
}

#[test]
fn a_run_is_pushed_to_the_pushgateway_and_exported_as_a_trace() {
    let Some(module) = built_plugin("monitoring") else {
        return;
    };
    let Some(gateway) = start_gateway() else {
        return;
    };
    let (otlp, bodies) = start_receiver();
    let test = project(&module, gateway.port, otlp);
    test.run_with(&["run", "deploy:production", "broken", "-k"])
        .status(4);
    let metrics = get(gateway.port, "/metrics");
    for expected in [
        "cairn_task_duration_seconds{cache=\"off\",environment=\"production\",instance=\"NIXSTATION64\",job=\"cairn\",status=\"succeeded\",task=\"deploy:production\"}",
        "cairn_task_success{instance=\"NIXSTATION64\",job=\"cairn\",task=\"broken\"} 0",
        "cairn_task_exit_code{instance=\"NIXSTATION64\",job=\"cairn\",task=\"broken\"} 4",
        "cairn_run_exit_code{instance=\"NIXSTATION64\",job=\"cairn\"} 4",
        "cairn_run_tasks{instance=\"NIXSTATION64\",job=\"cairn\",result=\"failed\"} 1",
    ] {
        assert!(metrics.contains(expected), "missing {expected}:\n{metrics}");
    }
    let bodies = bodies.lock().unwrap();
    let trace: serde_json::Value = serde_json::from_str(&bodies[0]).expect("OTLP JSON");
    let spans = trace["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap();
    assert_eq!(spans.len(), 3, "a run span and one per task");
    let run_span = spans[0]["spanId"].as_str().unwrap();
    assert!(spans[1..]
        .iter()
        .all(|s| s["parentSpanId"] == run_span && s["traceId"] == spans[0]["traceId"]));
    assert!(spans.iter().any(|s| s["name"] == "task deploy:production"));
}

#[test]
fn an_unreachable_monitor_warns_and_never_changes_the_result() {
    let Some(module) = built_plugin("monitoring") else {
        return;
    };
    let test = project(&module, free_port(), free_port());
    let started = Instant::now();
    test.run_with(&["run", "deploy:staging"])
        .success()
        .stdout_has("deploying staging")
        .stderr_has("warning: event sink `monitor`");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_receiver_that_never_answers_costs_at_most_the_timeout() {
    let Some(module) = built_plugin("monitoring") else {
        return;
    };
    let port = silent_server();
    let test = project(&module, port, free_port());
    test.edit("tasks.toml", "timeout = \"3s\"", "timeout = \"1s\"");
    let started = Instant::now();
    test.run_with(&["run", "deploy:staging"])
        .success()
        .stderr_has("warning: event sink `monitor`");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}
