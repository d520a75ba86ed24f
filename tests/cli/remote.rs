//! The remote cache against a real nginx (Debian's package) serving WebDAV `PUT` on loopback: one machine
//! publishes, another restores; entries not signed by a trusted writer, tampered blobs and paths out of the
//! repository are refused; a server that dies or never answers does not fail a run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{free_port, in_terminal, silent_server, Test};

/// An nginx in one process (`master_process off`, so stopping it stops the server), serving `/cairn/`.
struct Nginx {
    child: Option<Child>,
    /// The bearer token every request must carry, if any.
    token: Option<String>,
    /// The server's certificate and key, when it speaks TLS.
    tls: Option<(PathBuf, PathBuf)>,
    dir: tempfile::TempDir,
    port: u16,
    binary: PathBuf,
}

impl Nginx {
    fn start() -> Option<Nginx> {
        Nginx::start_with(None, false)
    }

    /// With TLS, the certificate is issued for 127.0.0.1 by a test CA whose certificate is `ca.pem`.
    fn start_with(token: Option<&str>, tls: bool) -> Option<Nginx> {
        let binary = nginx_binary()?;
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["root/cairn/ac", "root/cairn/cas", "tmp"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        // nginx's workers may run as another user when the tests run as root.
        make_writable(&dir.path().join("root"));
        make_writable(&dir.path().join("tmp"));
        let port = free_port();
        let tls = tls.then(|| issue_certificates(dir.path()));
        let mut nginx = Nginx {
            child: None,
            token: token.map(str::to_owned),
            tls,
            dir,
            port,
            binary,
        };
        nginx.launch();
        Some(nginx)
    }

    fn launch(&mut self) {
        let d = self.dir.path().display();
        let auth = match &self.token {
            Some(token) => {
                format!("      if ($http_authorization != \"Bearer {token}\") {{ return 401; }}\n")
            }
            None => String::new(),
        };
        let ssl = match &self.tls {
            Some((certificate, key)) => format!(
                " ssl;\n    ssl_certificate {};\n    ssl_certificate_key {}",
                certificate.display(),
                key.display()
            ),
            None => String::new(),
        };
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  server {{\n    listen 127.0.0.1:{port}{ssl};\n    location /cairn/ {{\n{auth}      root {d}/root;\n      dav_methods PUT;\n      create_full_put_path on;\n      dav_access user:rw group:rw all:r;\n      client_max_body_size 0;\n    }}\n  }}\n}}\n",
            port = self.port
        );
        let conf_path = self.dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new(&self.binary)
            .arg("-e")
            .arg(self.dir.path().join("error.log"))
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/cairn", self.port)
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("nginx.pid")
    }

    fn ac_dir(&self) -> PathBuf {
        self.dir.path().join("root/cairn/ac")
    }

    fn files(&self, space: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(self.dir.path().join("root/cairn").join(space))
                .map(|entries| entries.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
        files.sort();
        files
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Debian's nginx, or `None` (and a note) when it is not installed; in CI, which installs it, that fails.
pub(crate) fn nginx_binary() -> Option<PathBuf> {
    let binary = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if binary.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx is not installed; .ci/run installs it"
        );
        eprintln!("skipped: nginx is not installed (apt-get install nginx)");
    }
    binary
}

/// A test CA and a server certificate it issued for 127.0.0.1, made with the openssl command; returns the
/// server's certificate and key.
pub(crate) fn issue_certificates(dir: &Path) -> (PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs (.ci/run installs it)");
        assert!(
            output.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let p256 = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(p256);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=cairn test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    openssl(&ca);
    let mut request = vec!["req"];
    request.extend(p256);
    request.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&request);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (dir.join("server.pem"), dir.join("server.key"))
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    for entry in std::fs::read_dir(path).expect("read dir").flatten() {
        if entry.path().is_dir() {
            make_writable(&entry.path());
        }
    }
}

/// A signing key made by `cairn cache keygen`, and its public key.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let run = Test::new()
        .run_with(&["cache", "keygen", "--output", path.to_str().unwrap()])
        .success();
    let public = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .expect("keygen prints the public key")
        .to_owned();
    (path, public)
}

/// The project both machines hold: a build whose outputs differ on every run (so a restore is told apart
/// from a rebuild), with an executable, a compressible file, a link and a line of output.
fn project(url: &str, trusted: &str, cache_dir: &Path, extra: &str) -> Test {
    Test::new()
        .tasks(&format!(
            r#"[remote_cache]
url = "{url}"
trusted_writers = [{{ name = "ci", key = "{trusted}" }}]
timeout = "2s"

[tasks.build]
inputs = ["src/**"]
outputs = ["out/**"]
run = [
  "mkdir -p out",
  "head -c 3000 /dev/urandom > out/bin && chmod 755 out/bin",
  "for i in $(seq 1 2000); do echo \"line $i $RANDOM\"; done > out/report.txt",
  "ln -sf bin out/current",
  "echo \"built $(od -An -N4 -tx4 /dev/urandom | tr -d ' ')\"",
]
{extra}"#
        ))
        .file("src/main.c", "int main(void) { return 0; }\n")
        .env("CAIRN_CACHE_DIR", cache_dir.to_str().unwrap())
}

/// Output files as restored: path, bytes, permission bits.
type Outputs = Vec<(String, Vec<u8>, u32)>;

fn outputs(test: &Test) -> Outputs {
    use std::os::unix::fs::PermissionsExt;
    ["out/bin", "out/report.txt"]
        .into_iter()
        .map(|p| {
            let path = test.path(p);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            (p.to_owned(), std::fs::read(&path).unwrap(), mode)
        })
        .collect()
}

fn built_line(stdout: &str) -> String {
    stdout
        .lines()
        .find(|l| l.contains("built "))
        .unwrap_or_else(|| panic!("no `built` line in:\n{stdout}"))
        .to_owned()
}

/// Machine A publishes `build`; returns A's project, its outputs and its printed line.
fn publish(nginx: &Nginx, keys: &Path, caches: &Path) -> (Test, Outputs, String, String) {
    let (key, public) = keygen(keys, "ci.key");
    let a = project(&nginx.url(), &public, &caches.join("a"), "")
        .env("CAIRN_REMOTE_SIGNING_KEY_FILE", key.to_str().unwrap());
    let run = a
        .run_with(&["run", "build", "--remote", "read-write"])
        .success()
        .stderr_has("remote cache: published 1 result");
    let line = built_line(&run.stdout);
    let published = outputs(&a);
    (a, published, line, public)
}

#[test]
fn a_result_published_by_one_machine_is_restored_byte_for_byte_on_another() {
    let Some(nginx) = Nginx::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let (_a, published, line, public) = publish(&nginx, work.path(), work.path());
    assert_eq!(nginx.files("ac").len(), 1, "one signed entry");
    assert!(
        nginx.files("cas").len() >= 3,
        "the outputs and the log are blobs"
    );

    // Machine B: the same repository, its own empty cache, reading only (the default).
    let b = project(&nginx.url(), &public, &work.path().join("b"), "");
    b.run_with(&["run", "build", "--dry-run"])
        .success()
        .stdout_has("cache miss here (")
        .stdout_has("the remote cache holds it, signed by ci");
    b.run_with(&["why", "build"])
        .success()
        .stdout_has("`build` has no recorded success here")
        .stdout_has(&format!(
            "the remote cache ({}) has a result for this key, signed by ci: it will be fetched",
            nginx.url()
        ));
    let run = b
        .run_with(&[
            "run",
            "build",
            "--summary",
            "summary.json",
            "--trace",
            "trace.json",
        ])
        .success()
        .stderr_has("`build`: fetched from the remote cache (signed by ci)")
        .cached(1)
        .fetched(1);
    assert_eq!(built_line(&run.stdout), line, "A's output is replayed");
    // The time spent on the remote is its own phase, in the run record and in the trace.
    let summary: serde_json::Value = serde_json::from_str(&b.read("summary.json")).unwrap();
    let phases: Vec<&str> = summary["tasks"][0]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(phases.contains(&"remote cache"), "{phases:?}");
    assert_eq!(
        summary["tasks"][0]["cache_reason"],
        "remote cache, signed by ci"
    );
    assert!(b.read("trace.json").contains("\"remote cache\""));
    assert_eq!(outputs(&b), published, "byte-identical outputs, same modes");
    assert_eq!(
        std::fs::read_link(b.path("out/current")).unwrap(),
        PathBuf::from("bin")
    );
    assert!(
        !run.stderr.contains("published"),
        "a reader publishes nothing:\n{}",
        run.stderr
    );
    // The fetched result is B's last success now (its entry is the record), for `why`.
    b.run_with(&["why", "build"])
        .success()
        .stdout_has("`build`: nothing changed since its last success")
        .stdout_has("and the cache has its result: it will be restored");

    // The entry is now local: no server needed.
    let mut nginx = nginx;
    nginx.stop();
    std::fs::remove_dir_all(b.path("out")).unwrap();
    b.run_with(&["run", "build"])
        .success()
        .cached(1)
        .stderr_lacks("fetched from the remote cache")
        .stderr_lacks("warning");
    assert_eq!(outputs(&b), published);
}

#[test]
fn entries_not_signed_by_a_trusted_writer_are_ignored_with_a_warning() {
    let Some(nginx) = Nginx::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let (_a, published, _, public) = publish(&nginx, work.path(), work.path());
    let slot = nginx.files("ac").pop().expect("A's entry");
    let genuine = std::fs::read(&slot).unwrap();

    // An intruder with write access to the server publishes the same key under its own key.
    let (intruder_key, _) = keygen(work.path(), "intruder.key");
    let intruder = project(&nginx.url(), &public, &work.path().join("intruder"), "").env(
        "CAIRN_REMOTE_SIGNING_KEY_FILE",
        intruder_key.to_str().unwrap(),
    );
    intruder
        .run_with(&["run", "build", "--remote", "read-write", "--force"])
        .success()
        .stderr_has("published 1 result");
    let intruders_entry = nginx
        .files("ac")
        .into_iter()
        .find(|p| *p != slot)
        .expect("the intruder's entry has its own slot");
    let forged = std::fs::read(&intruders_entry).unwrap();

    let reader = |name: &str| project(&nginx.url(), &public, &work.path().join(name), "");

    // Its entry, copied into the trusted writer's slot: signed, but by a key not trusted.
    std::fs::write(&slot, &forged).unwrap();
    let b = reader("b1");
    b.run_with(&["run", "build"])
        .success()
        .stderr_has("ignored the remote cache's entry from ci: it is signed by ed25519:")
        .stderr_has("which is not in trusted_writers")
        .stderr_lacks("fetched from the remote cache")
        .cached(0);
    assert_ne!(outputs(&b), published, "the task ran instead");

    // The same, claiming to be the trusted writer: the signature does not verify.
    let mut envelope: serde_json::Value = serde_json::from_slice(&forged).unwrap();
    envelope["writer"] = serde_json::Value::String(public.clone());
    std::fs::write(&slot, serde_json::to_vec(&envelope).unwrap()).unwrap();
    reader("b2")
        .run_with(&["run", "build"])
        .success()
        .stderr_has("its signature by ci does not verify")
        .cached(0);

    // No signature at all: the manifest alone.
    let manifest = envelope["manifest"].as_str().unwrap().to_owned();
    std::fs::write(&slot, format!("{{\"manifest\": \"{manifest}\"}}")).unwrap();
    reader("b3")
        .run_with(&["run", "build"])
        .success()
        .stderr_has("it is not a signed cairn entry")
        .cached(0);

    // The genuine entry back in place is accepted again.
    std::fs::write(&slot, genuine).unwrap();
    let b4 = reader("b4");
    b4.run_with(&["run", "build"]).success().cached(1);
    assert_eq!(outputs(&b4), published);
}

#[test]
fn a_tampered_blob_is_detected_and_the_task_runs_instead() {
    let Some(nginx) = Nginx::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let (_a, published, _, public) = publish(&nginx, work.path(), work.path());
    // Flip a byte in the executable's blob (the only one of exactly 3000 bytes: random data stays raw).
    let blob = nginx
        .files("cas")
        .into_iter()
        .find(|p| std::fs::metadata(p).unwrap().len() == 3000)
        .expect("the executable's blob");
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100] ^= 0x5a;
    std::fs::write(&blob, &bytes).unwrap();

    let b = project(&nginx.url(), &public, &work.path().join("b"), "");
    b.run_with(&["run", "build"])
        .success()
        .stderr_has("ignored the remote cache's entry from ci: blob")
        .stderr_has("does not match its hash")
        .cached(0);
    let restored = outputs(&b);
    assert_ne!(
        restored[0].1, published[0].1,
        "the altered bytes were not written"
    );
    assert_ne!(restored[0].1, bytes, "the altered bytes were not written");
}

#[test]
fn an_entry_that_would_write_outside_the_repository_is_refused() {
    let Some(nginx) = Nginx::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let (_a, _, _, public) = publish(&nginx, work.path(), work.path());
    let slot = nginx.files("ac").pop().expect("A's entry");
    let genuine: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&slot).unwrap()).unwrap();
    let genuine = base64_decode(genuine["manifest"].as_str().unwrap());
    let key = cairn::cache::remote::SigningKey::parse(
        &std::fs::read_to_string(work.path().join("ci.key")).unwrap(),
    )
    .unwrap();
    // The trusted writer itself (a compromised or buggy CI) signs manifests that lead out of the repository.
    let reseal = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut manifest: serde_json::Value = serde_json::from_slice(&genuine).unwrap();
        edit(&mut manifest);
        let sealed =
            cairn::cache::remote::trust::seal(&key, &serde_json::to_vec(&manifest).unwrap());
        std::fs::write(&slot, serde_json::to_vec(&sealed).unwrap()).unwrap();
    };
    let output = |manifest: &mut serde_json::Value, path: &str| -> usize {
        manifest["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .position(|o| o["path"] == path)
            .unwrap_or_else(|| panic!("{path} in the manifest"))
    };

    reseal(&|m| {
        let i = output(m, "out/bin");
        m["outputs"][i]["path"] = "out/../../escaped".into();
    });
    let b = project(&nginx.url(), &public, &work.path().join("b"), "");
    b.run_with(&["run", "build"])
        .success()
        .stderr_has("it would write `out/../../escaped`, outside the repository")
        .cached(0);
    assert!(!b.dir.path().parent().unwrap().join("escaped").exists());

    reseal(&|m| {
        let i = output(m, "out/current");
        m["outputs"][i]["target"] = "../../../etc/passwd".into();
    });
    let c = project(&nginx.url(), &public, &work.path().join("c"), "");
    c.run_with(&["run", "build"])
        .success()
        .stderr_has("its link `out/current` points out of the repository")
        .cached(0);
    assert_eq!(
        std::fs::read_link(c.path("out/current")).unwrap(),
        PathBuf::from("bin"),
        "the task's own link, not the manifest's"
    );
}

#[test]
fn the_remote_going_down_mid_run_does_not_fail_the_run() {
    let Some(mut nginx) = Nginx::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path(), "ci.key");
    // `stop` waits until `first`'s entry is on the server, then kills the server; `second` comes after.
    let extra = format!(
        r#"
[tasks.first]
inputs = ["src/**"]
outputs = ["first.txt"]
run = "echo one > first.txt"

[tasks.stop]
deps = ["first"]
run = "until ls {ac}/* >/dev/null 2>&1; do sleep 0.05; done; kill $(cat {pid})"

[tasks.second]
deps = ["stop"]
inputs = ["src/**"]
outputs = ["second.txt"]
run = "echo two > second.txt"

[tasks.third]
deps = ["second"]
inputs = ["src/**"]
outputs = ["third.txt"]
run = "echo three > third.txt"
"#,
        ac = nginx.ac_dir().display(),
        pid = nginx.pid_file().display()
    );
    let a = project(&nginx.url(), &public, &work.path().join("a"), &extra)
        .env("CAIRN_REMOTE_SIGNING_KEY_FILE", key.to_str().unwrap());
    let run = a
        .run_with(&["run", "third", "--remote", "read-write", "-j", "1"])
        .success()
        .stderr_has("the remote cache is not usable")
        .stderr_has("going on with the local cache only");
    assert_eq!(
        run.stderr.matches("the remote cache is not usable").count(),
        1,
        "one warning, not one per task:\n{}",
        run.stderr
    );
    assert_eq!(a.read("third.txt"), "three\n");

    // Machine B, with the server back: `first` comes from it, then the server dies again under the run.
    nginx.launch();
    let b = project(&nginx.url(), &public, &work.path().join("b"), &extra);
    let run = b
        .run_with(&["run", "third", "-j", "1", "--summary", "summary.json"])
        .success()
        .stderr_has("`first`: fetched from the remote cache")
        .stderr_has("going on with the local cache only");
    assert_eq!(
        run.stderr.matches("not usable").count(),
        1,
        "{}",
        run.stderr
    );
    assert_eq!(b.read("third.txt"), "three\n");
    let summary: serde_json::Value = serde_json::from_str(&b.read("summary.json")).unwrap();
    assert_eq!(summary["remote_cache"]["fetched"], 1);
    assert_eq!(summary["remote_cache"]["unavailable"], true);
    assert_eq!(summary["remote_cache"]["publishing"], false);
}

#[test]
fn a_remote_that_never_answers_costs_one_timeout_and_one_warning() {
    let port = silent_server();
    let work = tempfile::tempdir().unwrap();
    let (_, public) = keygen(work.path(), "ci.key");
    let extra = r#"
[tasks.more]
deps = ["build"]
inputs = ["src/**"]
outputs = ["more.txt"]
run = "echo more > more.txt"
"#;
    let test = project(
        &format!("http://127.0.0.1:{port}/cairn"),
        &public,
        &work.path().join("a"),
        extra,
    )
    .edit_timeout("1s");
    let run = test.run_with(&["run", "more"]).success();
    assert_eq!(
        run.stderr.matches("did not answer in time").count(),
        1,
        "{}",
        run.stderr
    );
}

#[test]
fn a_task_limits_what_it_does_with_the_remote_cache() {
    let Some(nginx) = Nginx::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path(), "ci.key");
    let extra = r#"
[tasks.private]
inputs = ["src/**"]
outputs = ["private.txt"]
remote = false
run = "echo local only > private.txt"

[tasks.fetch-only]
inputs = ["src/**"]
outputs = ["fetched.txt"]
remote = "read"
run = "echo $RANDOM > fetched.txt"

[tasks.all]
deps = ["build", "private", "fetch-only"]
"#;
    let writer = |name: &str, extra: &str| {
        project(&nginx.url(), &public, &work.path().join(name), extra)
            .env("CAIRN_REMOTE_SIGNING_KEY_FILE", key.to_str().unwrap())
    };
    let a = writer("a", extra);
    a.run_with(&["run", "all", "--remote", "read-write"])
        .success()
        .stderr_has("published 1 result");
    assert_eq!(
        nginx.files("ac").len(),
        1,
        "only `build` went to the server: `private` is local, `fetch-only` never publishes"
    );

    // Published from a copy where the task may publish, `fetch-only` is fetched where it may only read.
    let b = writer(
        "b",
        &extra
            .replace("remote = \"read\"", "remote = true")
            .replace("remote = false", "remote = true"),
    );
    b.run_with(&["run", "fetch-only", "private", "--remote", "read-write"])
        .success()
        .stderr_has("published 2 results");
    let c = writer("c", extra);
    c.run_with(&["run", "fetch-only", "--remote", "read-write"])
        .success()
        .fetched(1);
    assert_eq!(c.read("fetched.txt"), b.read("fetched.txt"));
    // `private` is on the server now, and still never looked up where it says `remote = false`.
    c.run_with(&["run", "private", "--dry-run"])
        .success()
        .stdout_has("cache miss (")
        .stdout_lacks("remote cache holds");

    // Anything else is an error at its place.
    let bad =
        Test::new().tasks("[tasks.a]\ninputs = [\"x\"]\nremote = \"publish\"\nrun = \"true\"\n");
    bad.run_with(&["check"])
        .status(1)
        .stderr_has("tasks.toml:3:10")
        .stderr_has("`publish` is not a way to use the remote cache");
}

#[test]
fn publishing_without_a_signing_key_reads_only_and_says_so() {
    let Some(nginx) = Nginx::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let (_, public) = keygen(work.path(), "ci.key");
    let a = project(&nginx.url(), &public, &work.path().join("a"), "");
    a.run_with(&["run", "build", "--remote", "read-write"])
        .success()
        .stderr_has("not publishing to the remote cache: no signing key")
        .stderr_lacks("published");
    assert!(nginx.files("ac").is_empty());

    // A key that is set but unusable is a configuration error, not a silent downgrade.
    let bad = work.path().join("bad.key");
    std::fs::write(&bad, "ed25519-secret:AAAA\n").unwrap();
    let with_bad = project(&nginx.url(), &public, &work.path().join("c"), "")
        .env("CAIRN_REMOTE_SIGNING_KEY_FILE", bad.to_str().unwrap());
    with_bad
        .run_with(&["run", "build", "--remote", "read-write"])
        .status(2)
        .stderr_has("the signing key cannot be used: an ed25519 key has 32 bytes")
        .stderr_has("CAIRN_REMOTE_SIGNING_KEY_FILE")
        .stderr_has("cairn cache keygen");
    // Named in tasks.toml, the error points there.
    let named = project(&nginx.url(), &public, &work.path().join("d"), "");
    named.edit(
        "tasks.toml",
        "timeout = \"2s\"",
        &format!(
            "timeout = \"2s\"\nsigning_key = {{ file = \"{}\" }}",
            bad.display()
        ),
    );
    named
        .run_with(&["run", "build", "--remote", "read-write"])
        .status(2)
        .stderr_has("tasks.toml:5:15")
        .stderr_has("invalid `remote_cache.signing_key`: the signing key cannot be used");
    named.edit("tasks.toml", "bad.key", "missing.key");
    named
        .run_with(&["run", "build", "--remote", "read-write"])
        .status(2)
        .stderr_has("tasks.toml:5:15")
        .stderr_has("missing.key: No such file");
}

#[test]
fn remote_cache_settings_are_checked_with_their_position() {
    let test = Test::new().tasks(
        "[remote_cache]\nurl = \"ftp://cache\"\nmode = \"write\"\ntrusted_writers = [\"ed25519:AAAA\", { name = \"ci\" }]\ntoken = \"hunter2\"\n\n[tasks.a]\nrun = \"true\"\n",
    );
    test.run_with(&["check"])
        .status(1)
        .stderr_has("tasks.toml:2:7")
        .stderr_has("the remote cache is reached over HTTP")
        .stderr_has("tasks.toml:3:8")
        .stderr_has("`write` is not a mode")
        .stderr_has("tasks.toml:4:20")
        .stderr_has("an ed25519 public key has 32 bytes")
        .stderr_has("a trusted writer needs its `key`")
        .stderr_has("tasks.toml:5:9")
        .stderr_has("a credential is named by where it is kept");
}

#[test]
fn a_token_from_a_cairn_secret_opens_the_server_and_tasks_with_secrets_stay_local() {
    let token = "tok-5f2a9c1e7d3b";
    let Some(nginx) = Nginx::start_with(Some(token), false) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path(), "ci.key");
    let extra = r#"
[tasks.deploy-config]
inputs = ["src/**"]
outputs = ["deploy.conf"]
secrets.from = "secrets/ci.yaml"
secrets.env = { DEPLOY_KEY = "deploy_key" }
run = "echo \"key=$DEPLOY_KEY\" > deploy.conf"

[tasks.announce]
inputs = ["src/**"]
secrets.from = "secrets/ci.yaml"
secrets.env = { DEPLOY_KEY = "deploy_key" }
remote = true
run = "echo \"deploying with $DEPLOY_KEY\""

[tasks.all]
deps = ["build", "deploy-config", "announce"]
"#;
    let a = project(&nginx.url(), &public, &work.path().join("a"), extra)
        .env("CAIRN_REMOTE_SIGNING_KEY_FILE", key.to_str().unwrap());
    a.edit(
        "tasks.toml",
        "timeout = \"2s\"",
        "timeout = \"2s\"\ntoken = { secret = \"remote_token\", from = \"secrets/ci.yaml\" }",
    );
    a.run_with(&["secrets", "init", "--name", "alex"]).success();
    a.run_with_stdin(
        &["secrets", "set", "secrets/ci.yaml", "remote_token"],
        token,
    )
    .success();
    a.run_with_stdin(
        &["secrets", "set", "secrets/ci.yaml", "deploy_key"],
        "deploy-key-8c41f0",
    )
    .success();
    a.run_with(&["run", "all", "--remote", "read-write"])
        .success()
        .stderr_has("remote cache: published 2 results")
        .stderr_lacks("warning");
    assert_eq!(
        nginx.files("ac").len(),
        2,
        "`build` and `announce` (which opts in); `deploy-config` has secrets and stays local"
    );
    let blobs: Vec<String> = nginx
        .files("cas")
        .iter()
        .map(|blob| String::from_utf8_lossy(&std::fs::read(blob).unwrap()).into_owned())
        .collect();
    assert!(
        blobs.iter().all(|b| !b.contains("deploy-key-8c41f0")),
        "the secret reached the server"
    );
    assert!(
        blobs
            .iter()
            .any(|b| b.contains("deploying with [secret:DEPLOY_KEY]")),
        "the published log is the redacted one"
    );

    // Without the token the server refuses: one warning, naming the likely cause, and the run goes on.
    let b = project(&nginx.url(), &public, &work.path().join("b"), "");
    let run = b.run_with(&["run", "build"]).success().cached(0);
    assert_eq!(run.stderr.matches("HTTP 401").count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("check the token"), "{}", run.stderr);
    // With it (from the environment), the result is there.
    let c = project(&nginx.url(), &public, &work.path().join("c"), "")
        .env("CAIRN_REMOTE_CACHE_TOKEN", token);
    c.run_with(&["run", "build"])
        .success()
        .cached(1)
        .stderr_lacks(token);
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

trait EditTimeout {
    fn edit_timeout(self, to: &str) -> Self;
}

impl EditTimeout for Test {
    fn edit_timeout(self, to: &str) -> Self {
        self.edit(
            "tasks.toml",
            "timeout = \"2s\"",
            &format!("timeout = \"{to}\""),
        );
        self
    }
}

#[test]
fn cache_remote_shows_the_settings_and_checks_lookups_and_uploads() {
    let Some(mut nginx) = Nginx::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path(), "ci.key");
    let test = project(&nginx.url(), &public, &work.path().join("a"), "")
        .env("CAIRN_REMOTE_SIGNING_KEY_FILE", key.to_str().unwrap());
    test.run_with(&["why", "build"])
        .success()
        .stdout_has("has no result for this key: it will run");
    test.run_with(&["cache", "remote"])
        .success()
        .stdout_has(&format!("remote cache:    {}", nginx.url()))
        .stdout_has("mode:            read\n")
        .stdout_has("trusted writers: ci")
        .stdout_has("lookup:          ok")
        .stdout_lacks("upload:");
    test.run_with(&["cache", "remote", "--remote", "read-write"])
        .success()
        .stdout_has(&format!("signing as:      {public}"))
        .stdout_has("upload:          ok");
    nginx.stop();
    test.run_with(&["cache", "remote"])
        .status(1)
        .stdout_has("lookup:          failed: asking")
        .stdout_has("Connection refused");
}

#[test]
fn https_with_the_servers_certificate_authority_named_in_ca_file() {
    let Some(nginx) = Nginx::start_with(None, true) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path(), "ci.key");
    let ca_line = format!("timeout = \"2s\"\nca_file = \"{}\"", nginx.ca().display());
    let a = project(&nginx.url(), &public, &work.path().join("a"), "")
        .env("CAIRN_REMOTE_SIGNING_KEY_FILE", key.to_str().unwrap());
    a.edit("tasks.toml", "timeout = \"2s\"", &ca_line);
    a.run_with(&["run", "build", "--remote", "read-write"])
        .success()
        .stderr_has("published 1 result (")
        .stderr_lacks("warning");

    // Without the CA the built-in roots do not know the server: one warning, and the run goes on.
    let b = project(&nginx.url(), &public, &work.path().join("b"), "");
    let run = b.run_with(&["run", "build"]).success().cached(0);
    assert_eq!(
        run.stderr.matches("not usable").count(),
        1,
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("certificate") && run.stderr.contains("`ca_file` in [remote_cache]"),
        "the warning names the cause and the fix:\n{}",
        run.stderr
    );

    // With it from the environment, the result is fetched over TLS.
    let c = project(&nginx.url(), &public, &work.path().join("c"), "")
        .env("CAIRN_REMOTE_CACHE_CA_FILE", nginx.ca().to_str().unwrap());
    c.run_with(&["run", "build"]).success().fetched(1);
    c.run_with(&["cache", "remote"])
        .success()
        .stdout_has("https:           trusting only the 1 certificate authority of ca_file")
        .stdout_has("lookup:          ok");

    // A file that holds no certificate is an error at its place in tasks.toml.
    let d = project(&nginx.url(), &public, &work.path().join("d"), "");
    d.write("not-a-ca.pem", "hello\n");
    d.edit(
        "tasks.toml",
        "timeout = \"2s\"",
        "timeout = \"2s\"\nca_file = \"not-a-ca.pem\"",
    );
    d.run_with(&["run", "build"])
        .status(2)
        .stderr_has("tasks.toml:5:11")
        .stderr_has("holds no PEM certificate");
}

#[test]
fn the_mode_comes_from_the_flag_then_the_environment_then_tasks_toml() {
    let Some(nginx) = Nginx::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path(), "ci.key");
    // tasks.toml says read-write and names no URL; the environment gives the URL.
    let a = project(
        "http://unused.invalid/cairn",
        &public,
        &work.path().join("a"),
        "",
    )
    .env("CAIRN_REMOTE_CACHE", &nginx.url())
    .env("CAIRN_REMOTE_SIGNING_KEY_FILE", key.to_str().unwrap());
    a.edit(
        "tasks.toml",
        "url = \"http://unused.invalid/cairn\"\n",
        "mode = \"read-write\"\n",
    );
    a.run_with(&["run", "build", "--remote", "off"])
        .success()
        .stderr_lacks("published");
    assert!(
        nginx.files("ac").is_empty(),
        "--remote off wins over tasks.toml"
    );
    let a = a.env("CAIRN_REMOTE_CACHE_MODE", "read");
    a.run_with(&["run", "build", "--force"])
        .success()
        .stderr_lacks("published");
    assert!(
        nginx.files("ac").is_empty(),
        "the environment wins over tasks.toml"
    );
    a.run_with(&["run", "build", "--force", "--remote", "read-write"])
        .success()
        .stderr_has("published 1 result");
    let a = a.env("CAIRN_REMOTE_CACHE_MODE", "");
    std::fs::remove_dir_all(work.path().join("a")).unwrap();
    a.run_with(&["run", "build"]).success().fetched(1);

    // CAIRN_REMOTE_CACHE=off turns it off whatever tasks.toml says.
    let b =
        project(&nginx.url(), &public, &work.path().join("b"), "").env("CAIRN_REMOTE_CACHE", "off");
    b.run_with(&["run", "build"]).success().cached(0);
    b.run_with(&["cache", "remote"])
        .success()
        .stdout_has("no remote cache");
    let c = project(&nginx.url(), &public, &work.path().join("c"), "")
        .env("CAIRN_REMOTE_CACHE_MODE", "sometimes");
    c.run_with(&["run", "build"])
        .status(2)
        .stderr_has("CAIRN_REMOTE_CACHE_MODE=`sometimes` is not a mode")
        .stderr_has("use `read`, `read-write` or `off`");
}

#[test]
fn removing_a_writer_from_trusted_writers_revokes_what_was_fetched_from_it() {
    let Some(nginx) = Nginx::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let (_a, published, _, public) = publish(&nginx, work.path(), work.path());
    let b = project(&nginx.url(), &public, &work.path().join("b"), "");
    b.run_with(&["run", "build"]).success().fetched(1);
    std::fs::remove_dir_all(b.path("out")).unwrap();
    // Still trusted: a local hit, with or without the server.
    b.run_with(&["run", "build", "--remote", "off"])
        .success()
        .cached(1);
    assert_eq!(outputs(&b), published);

    // The key is replaced in tasks.toml: what it signed is no longer used, even from the local cache.
    let (_, other) = keygen(work.path(), "other.key");
    b.edit("tasks.toml", &public, &other);
    std::fs::remove_dir_all(b.path("out")).unwrap();
    b.run_with(&["run", "build", "--remote", "off"])
        .success()
        .stderr_has("dropped the result fetched earlier from the remote cache")
        .stderr_has("no longer in trusted_writers")
        .cached(0);
    assert_ne!(outputs(&b), published, "the task ran");
    // Its own result is a plain local entry from now on.
    b.run_with(&["run", "build", "--remote", "off"])
        .success()
        .cached(1)
        .stderr_lacks("dropped");
}

/// A loopback server that answers every lookup with 404 and never answers anything else, so uploads hang.
fn server_that_hangs_on_uploads() -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line.starts_with("GET ") {
                        // Skip the headers, then answer.
                        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                            line.clear();
                        }
                        let mut out = &stream;
                        let _ =
                            out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                    } else if line.starts_with("HEAD ") || line.starts_with("PUT ") {
                        // The connection stays open and silent until the test process ends.
                        std::thread::sleep(Duration::from_secs(600));
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn ctrl_c_while_uploads_hang_stops_waiting_and_keeps_the_local_result() {
    use std::io::{BufRead, BufReader};
    let port = server_that_hangs_on_uploads();
    let work = tempfile::tempdir().unwrap();
    let (key, public) = keygen(work.path(), "ci.key");
    let test = project(
        &format!("http://127.0.0.1:{port}/cairn"),
        &public,
        &work.path().join("a"),
        "",
    )
    .env("CAIRN_REMOTE_SIGNING_KEY_FILE", key.to_str().unwrap());
    test.edit("tasks.toml", "timeout = \"2s\"", "timeout = \"10m\"");
    let mut child = test
        .command_with(&["run", "build", "--remote", "read-write"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn starts");
    // The task's own line comes once it has run and been stored; its upload is hanging by then.
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    while !line.contains("built ") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).expect("read") > 0,
            "cairn ended early"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: a signal to the child we started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let output = child.wait_with_output().expect("cairn ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "the run itself succeeded:\n{stderr}"
    );
    assert!(
        stderr.contains("1 result was not published (waiting for uploads was cut short)"),
        "{stderr}"
    );
    // The result is safe in the local cache.
    test.run_with(&["run", "build", "--remote", "off"])
        .success()
        .cached(1);
}

#[test]
fn the_remote_caches_warning_goes_above_the_status_line_on_a_terminal() {
    let work = tempfile::tempdir().unwrap();
    let (_, public) = keygen(work.path(), "ci.key");
    // Nothing listens on the port: the first lookup fails while the status line shows.
    let extra = "\n[tasks.slow]\nrun = \"sleep 1\"\n\n[tasks.both]\ndeps = [\"build\", \"slow\"]\n";
    let test = project(
        &format!("http://127.0.0.1:{}/cairn", free_port()),
        &public,
        &work.path().join("a"),
        extra,
    );
    let Some(shown) = in_terminal(&test, "run both --color never") else {
        return;
    };
    let line = shown
        .split('\n')
        .find(|l| l.contains("the remote cache is not usable"))
        .unwrap_or_else(|| panic!("the warning is shown: {shown:?}"));
    let before = &line[..line.find("cairn: warning").expect("the line")];
    assert!(
        before.is_empty() || before.ends_with("\x1b[2K"),
        "the warning was appended to the status line: {line:?}"
    );
    assert!(
        shown.contains("remaining"),
        "a status line was shown: {shown:?}"
    );
}

/// Every blob file under a local cache directory.
fn local_blobs(cache: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![cache.join("blobs")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn a_fetched_blob_torn_by_a_power_cut_is_dropped_and_fetched_again() {
    // Blobs fetched from the remote cache are not fsynced (they are verified on every read and can be fetched
    // again): what a power cut may leave of one, an empty or cut-short file, must cost a fetch, never a wrong
    // output.
    let Some(nginx) = Nginx::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let (_a, published, _, public) = publish(&nginx, work.path(), work.path());
    let cache = work.path().join("b");
    let b = project(&nginx.url(), &public, &cache, "");
    b.run_with(&["run", "build"]).success().fetched(1);
    let blobs = local_blobs(&cache);
    assert!(
        !blobs.is_empty(),
        "the fetched blobs are in the local store"
    );
    for (i, blob) in blobs.iter().enumerate() {
        let bytes = std::fs::read(blob).unwrap();
        let torn = if i % 2 == 0 {
            Vec::new()
        } else {
            bytes[..bytes.len() / 2].to_vec()
        };
        std::fs::write(blob, torn).unwrap();
    }
    std::fs::remove_dir_all(b.path("out")).unwrap();
    b.run_with(&["run", "build"])
        .success()
        .stderr_has("was damaged here")
        .stderr_has("fetched from the remote cache")
        .fetched(1);
    assert_eq!(
        outputs(&b),
        published,
        "the outputs are the published ones, byte for byte"
    );
    assert!(
        local_blobs(&cache)
            .iter()
            .all(|blob| std::fs::metadata(blob).unwrap().len() > 0),
        "no torn blob is left behind"
    );
}

#[test]
fn a_fetched_manifest_torn_by_a_power_cut_is_dropped_and_fetched_again() {
    // Manifests fetched from the remote cache are not fsynced either: an emptied or cut-short one must cost a
    // fetch, never a wrong output or a stuck cache.
    let Some(nginx) = Nginx::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let (_a, published, _, public) = publish(&nginx, work.path(), work.path());
    let cache = work.path().join("b");
    let b = project(&nginx.url(), &public, &cache, "");
    b.run_with(&["run", "build"]).success().fetched(1);
    let mut manifests = Vec::new();
    let mut pending = vec![cache.join("entries")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                manifests.push(path);
            }
        }
    }
    assert!(
        !manifests.is_empty(),
        "the fetched entry is in the local store"
    );
    for manifest in &manifests {
        let bytes = std::fs::read(manifest).unwrap();
        std::fs::write(manifest, &bytes[..bytes.len() / 2]).unwrap();
    }
    std::fs::remove_dir_all(b.path("out")).unwrap();
    b.run_with(&["run", "build"]).success().fetched(1);
    assert_eq!(
        outputs(&b),
        published,
        "the outputs are the published ones, byte for byte"
    );
}

#[test]
fn the_dashboard_checks_the_remote_cache_when_asked() {
    let Some(mut nginx) = Nginx::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (_, public) = keygen(work.path(), "ci.key");
    let test = project(&nginx.url(), &public, &work.path().join("cache"), "");
    let ui = crate::ui::Dashboard::start(&test);
    let cache = ui.get("/cache").body;
    assert!(cache.contains("href=\"/cache/remote\""), "{cache}");
    let up = ui.get("/cache/remote");
    assert_eq!(up.status, 200, "{}", up.body);
    assert!(up.body.contains("lookup:          ok"), "{}", up.body);
    assert!(up.body.contains("trusted writers: ci"), "{}", up.body);
    nginx.stop();
    let down = ui.get("/cache/remote").body;
    assert!(down.contains("lookup:          failed"), "{down}");
    assert!(down.contains("badge bad"), "{down}");
}
