//! The fleet for real: `cairn run deploy:production` on a copy of this repository against test hosts that are
//! real OpenSSH servers on loopback, each with its own Nix store and system profile. Builds, `nix copy` over ssh,
//! generations and rollbacks are all real; only running a generation is stood in for, by the seam in
//! modules/lib/fleet.sh (a test host's sshd sets FLEET_TEST_HOST).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fleet::{fleet_copy_with, git, plugins_built, real_nix, Fleet};
use crate::support::Test;

const SSHD: &str = "/usr/sbin/sshd";

/// Debian's openssh-server, which .ci/run installs; skipped with a message elsewhere only.
fn sshd_available() -> bool {
    let found = Path::new(SSHD).is_file();
    assert!(
        found || std::env::var_os("CI").is_none(),
        "{SSHD} is missing: .ci/run installs openssh-server"
    );
    if !found {
        eprintln!("skipped: no {SSHD} (install openssh-server) to stand up test hosts with");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A new ed25519 key at `path`; returns its public line.
fn keygen(path: &Path) -> String {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
    std::fs::read_to_string(path.with_extension("pub")).expect("public key")
}

fn user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// One machine of the test fleet: an sshd of its own on loopback, whose sessions use the Nix store under
/// `dir/root` and the system profile inside it.
struct Host {
    name: &'static str,
    alias: &'static str,
    dir: PathBuf,
    port: u16,
    sshd: Option<Child>,
}

impl Host {
    fn new(base: &Path, name: &'static str, alias: &'static str) -> Host {
        let dir = base.join(alias);
        std::fs::create_dir_all(dir.join("root")).expect("mkdir");
        keygen(&dir.join("host_key"));
        Host {
            name,
            alias,
            dir,
            port: free_port(),
            sshd: None,
        }
    }

    fn start(&mut self, authorized_keys: &Path) {
        let dir = self.dir.display();
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {dir}/host_key\nAuthorizedKeysFile {keys}\n\
             PidFile {dir}/sshd.pid\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             SetEnv NIX_REMOTE=local?root={dir}/root FLEET_SYSTEM_PROFILE={dir}/root/nix/var/nix/profiles/system \
             FLEET_TEST_HOST={dir} \"NIX_CONFIG=build-users-group =\"\n",
            port = self.port,
            keys = authorized_keys.display(),
        );
        std::fs::write(self.dir.join("sshd_config"), config).expect("write");
        // As root, sshd wants its privilege separation directory (made at boot where systemd runs).
        let _ = std::fs::create_dir_all("/run/sshd");
        let log = std::fs::File::create(self.dir.join("sshd.log")).expect("log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(self.dir.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd starts");
        self.sshd = Some(child);
        let began = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = self.sshd.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && began.elapsed() < Duration::from_secs(10),
                "sshd for {} did not come up: {}",
                self.name,
                std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.sshd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The host's profile's current generation, from its symlink.
    fn generation(&self) -> Option<u32> {
        let link = std::fs::read_link(self.dir.join("root/nix/var/nix/profiles/system")).ok()?;
        let name = link.file_name()?.to_string_lossy().into_owned();
        name.strip_prefix("system-")?
            .strip_suffix("-link")?
            .parse()
            .ok()
    }

    /// The revision of the system the host runs (the one last activated on it).
    fn running_revision(&self) -> Option<String> {
        let system = std::fs::read_link(self.dir.join("current-system")).ok()?;
        let manifest = std::fs::read_to_string(system.join("manifest.nix")).ok()?;
        let value: serde_json::Value = serde_json::from_str(&manifest).ok()?;
        Some(value["revision"].as_str()?.to_owned())
    }

    /// Whether the store path is in this host's own store.
    fn store_has(&self, path: &Path) -> bool {
        self.dir
            .join("root")
            .join(path.strip_prefix("/").unwrap_or(path))
            .exists()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
    }
}

fn head(test: &Test) -> String {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(test.path(""))
        .output()
        .expect("git runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The test fleet: a copy of the repository whose production hosts are three sshd servers started here (each
/// with its own store), a deploy key made for the run, and `check_interval` between health checks. `None`
/// (skip) where sshd, Nix or the plugins are missing outside CI.
fn test_fleet(check_interval: &str) -> Option<(Test, Test, [Host; 3], String)> {
    if !plugins_built() || real_nix().is_none() || !sshd_available() {
        return None;
    }
    let Fleet {
        repo: test,
        outside,
    } = fleet_copy_with(false);
    let user = user();
    let mut hosts = [
        Host::new(&outside.path("hosts"), "NIXY", "nixy"),
        Host::new(&outside.path("hosts"), "NIXSTATION64", "nixstation64"),
        Host::new(&outside.path("hosts"), "NIXY2", "nixy2"),
    ];

    // A deploy key made for this run, kept as the environment's secret; the hosts accept it.
    let deploy_key = outside.path("deploy_key");
    let public = keygen(&deploy_key);
    outside.write("authorized_keys", &public);
    let private = std::fs::read_to_string(&deploy_key).expect("key");
    test.run_with_stdin(
        &[
            "secrets",
            "set",
            "secrets/production/deploy.yaml",
            "ssh.private_key",
        ],
        &private,
    )
    .success();
    // Every host is reached over ssh (NIXY too: this machine must not become a Mac), and production has a
    // third host so that a failure in the middle leaves one untouched.
    test.edit(
        "modules/inventory.toml",
        "target = \"local\"",
        &format!("target = \"{user}@nixy\""),
    );
    test.edit(
        "modules/inventory.toml",
        "target = \"root@nixstation64.home.arpa\"",
        &format!("target = \"{user}@nixstation64\""),
    );
    test.edit(
        "modules/inventory.toml",
        "target = \"root@nixy2.home.arpa\"",
        &format!("target = \"{user}@nixy2\""),
    );
    test.edit(
        "modules/inventory.toml",
        "hosts = [\"NIXY\", \"NIXSTATION64\"]",
        "hosts = [\"NIXY\", \"NIXSTATION64\", \"NIXY2\"]",
    );
    // A host belongs to one environment.
    test.edit(
        "modules/inventory.toml",
        "hosts = [\"NIXY2\"]",
        "hosts = []",
    );
    // The systems: builtins only, so Debian's Nix builds them offline (modules/lib/test-system.nix).
    test.edit(
        "flake.nix",
        "mk = import ./modules/lib/mk-system.nix { inherit inputs self inventory; };",
        "mk = import ./modules/lib/test-system.nix { inherit self inventory; };",
    );
    let mut ssh_config = String::new();
    for host in &hosts {
        ssh_config.push_str(&format!(
            "Host {}\n  HostName 127.0.0.1\n  Port {}\n",
            host.alias, host.port
        ));
    }
    outside.write("ssh_config", &ssh_config);
    let test = test
        .env(
            "NIX_SSHOPTS",
            &format!("-F {}", outside.path("ssh_config").display()),
        )
        .env("NIX_CONFIG", "build-users-group =\nsubstituters =");
    if check_interval != "20ms" {
        test.edit(
            "tasks.toml",
            "interval = \"20ms\"",
            &format!("interval = \"{check_interval}\""),
        );
    }
    git(&test, &["commit", "-qam", "the test fleet"]);
    git(&test, &["push", "-q"]);
    for host in &mut hosts {
        host.start(&outside.path("authorized_keys"));
    }

    Some((test, outside, hosts, user))
}

#[test]
fn deploys_go_over_real_ssh_into_each_hosts_own_store_and_roll_back_its_profile() {
    let Some((test, outside, mut hosts, user)) = test_fleet("20ms") else {
        return;
    };
    // First contact: each host's key is recorded, with its fingerprint to check on the host.
    for host in &hosts {
        test.run_with(&["run", &format!("trust-host:{}", host.name)])
            .success()
            .stdout_has(&format!("recorded the host keys of {}", host.name))
            .stdout_has("ED25519");
    }
    let known = test.read("modules/known_hosts");
    for host in &hosts {
        assert!(
            known.contains(&format!("[127.0.0.1]:{} ssh-ed25519 ", host.port)),
            "{known}"
        );
    }
    test.run_with(&["run", "trust-host:NIXY"])
        .success()
        .stdout_has("already trusted");
    git(&test, &["add", "modules/known_hosts"]);
    git(&test, &["commit", "-qm", "trust the test fleet"]);
    git(&test, &["push", "-q"]);

    test.run_with(&["run", "status:production"])
        .success()
        .stdout_has("NIXY  cannot be asked what it runs")
        .stdout_has("3 of 3 host(s) differ");

    // A rollout: each host gets the system built from this tree, copied into its own store, as generation 1.
    let first = head(&test);
    let deployed = test
        .run_with(&["run", "deploy:production", "--yes"])
        .success()
        .stdout_has("fleet: NIXY: generation 1 runs /nix/store/")
        .stdout_has("fleet: NIXY2 runs ");
    for host in &hosts {
        assert_eq!(host.generation(), Some(1), "{}", host.name);
        assert_eq!(host.running_revision().as_deref(), Some(first.as_str()));
        let system = std::fs::read_link(host.dir.join("current-system")).expect("activated");
        assert!(
            host.store_has(&system),
            "{} is in {}'s own store",
            system.display(),
            host.name
        );
    }
    assert!(!deployed.stdout.contains("PRIVATE KEY") && !deployed.stderr.contains("PRIVATE KEY"));
    let audit = test.read(".cairn/audit.log");
    for host in &hosts {
        assert!(
            audit.lines().any(|l| l
                .contains(&format!("\"task\":\"deploy:production[{}]\"", host.name))
                && l.contains("\"result\":\"succeeded\"")),
            "{audit}"
        );
    }
    assert!(!audit.contains("PRIVATE KEY"));
    test.run_with(&["run", "status:production"])
        .success()
        .stdout_has(&format!(
            "NIXSTATION64  runs {} (generation 1), this tree",
            &first[..12]
        ))
        .stdout_has("0 of 3 host(s) differ");

    // The next commit; the second host comes up unhealthy: it is rolled back to generation 1, the rollout
    // stops, and the third host keeps what it had.
    test.write(
        "modules/home/common.nix",
        &(test.read("modules/home/common.nix") + "\n"),
    );
    git(&test, &["commit", "-qam", "next"]);
    git(&test, &["push", "-q"]);
    let second = head(&test);
    std::fs::write(hosts[1].dir.join("unhealthy"), "").expect("write");
    test.run_with(&["run", "deploy:production", "--yes"])
        .status(1)
        .stderr_has("`deploy:production[NIXSTATION64]`: rolling back")
        .stderr_has("not run because of it: `deploy:production[NIXY2]`")
        .stdout_has("fleet: NIXSTATION64 is back on its previous generation (1: /nix/store/");
    assert_eq!(hosts[0].generation(), Some(2));
    assert_eq!(
        hosts[0].running_revision().as_deref(),
        Some(second.as_str())
    );
    assert_eq!(hosts[1].generation(), Some(1), "the profile rolled back");
    assert!(
        hosts[1]
            .dir
            .join("root/nix/var/nix/profiles/system-2-link")
            .exists(),
        "the failed generation stays listed, as nix-env --rollback leaves it"
    );
    assert_eq!(hosts[1].running_revision().as_deref(), Some(first.as_str()));
    assert_eq!(hosts[2].generation(), Some(1));
    assert_eq!(hosts[2].running_revision().as_deref(), Some(first.as_str()));
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
    let status: serde_json::Value = serde_json::from_str(line).expect("JSON");
    assert_eq!(status[0]["state"], "current");
    assert_eq!(status[0]["generation"], 2);
    assert_eq!(status[1]["state"], "behind");
    assert_eq!(status[1]["running"], first.as_str());
    assert_eq!(status[1]["generation"], 1);
    assert_eq!(status[2]["state"], "behind");
    std::fs::remove_file(hosts[1].dir.join("unhealthy")).expect("remove");

    // A host that is down fails clearly and stops the rollout before anything else changes.
    hosts[0].stop();
    test.run_with(&["run", "deploy:production", "--yes"])
        .status(1)
        .stderr_has(&format!("NIXY ({user}@nixy) cannot be reached over ssh"))
        .stderr_has("not run because of it: `deploy:production[NIXSTATION64]`");
    assert_eq!(hosts[1].generation(), Some(1));

    // A host whose key changed (reinstalled, or someone in between) is refused, and first contact will not
    // quietly accept the new key either.
    keygen(&hosts[0].dir.join("host_key"));
    hosts[0].start(&outside.path("authorized_keys"));
    test.run_with(&["run", "deploy:production", "--yes"])
        .status(1)
        .stderr_has("Host key verification failed");
    assert_eq!(hosts[0].generation(), Some(2), "nothing reached the host");
    test.run_with(&["run", "trust-host:NIXY"])
        .status(1)
        .stderr_has("offers host keys other than those in");
}

/// The store path a host's profile names as its current generation, and the one it runs.
fn profile_and_running(host: &Host) -> (Option<PathBuf>, Option<PathBuf>) {
    let profile = host.dir.join("root/nix/var/nix/profiles/system");
    let current = std::fs::read_link(&profile)
        .ok()
        .and_then(|generation| std::fs::read_link(profile.with_file_name(generation)).ok());
    (
        current,
        std::fs::read_link(host.dir.join("current-system")).ok(),
    )
}

#[test]
fn ctrl_c_mid_rollout_leaves_every_host_on_a_whole_generation_and_status_says_which() {
    // Health checks a second apart, so that the interrupt lands while a host is being checked.
    let Some((test, _outside, hosts, _user)) = test_fleet("1s") else {
        return;
    };
    for host in &hosts {
        test.run_with(&["run", &format!("trust-host:{}", host.name)])
            .success();
    }
    git(&test, &["add", "modules/known_hosts"]);
    git(&test, &["commit", "-qm", "trust the test fleet"]);
    git(&test, &["push", "-q"]);
    test.run_with(&["run", "deploy:production", "--yes"])
        .success();
    let first = head(&test);

    test.write(
        "modules/home/common.nix",
        &(test.read("modules/home/common.nix") + "\n"),
    );
    git(&test, &["commit", "-qam", "next"]);
    git(&test, &["push", "-q"]);
    let second = head(&test);
    // The second host comes up unhealthy and is checked again and again: Ctrl-C arrives meanwhile.
    std::fs::write(hosts[1].dir.join("unhealthy"), "").expect("write");
    let child = test
        .command_with(&["run", "deploy:production", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn starts");
    let began = Instant::now();
    while hosts[1].generation() != Some(2) {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "the second host never got its new generation"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on the pid of a child this test started and has not waited for yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().expect("cairn ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");

    // Each host runs what its profile names (old or new, never a mix), and the third was not touched. A switch
    // under way when the interrupt came ends on the host first, within moments.
    for host in &hosts {
        let began = Instant::now();
        let (profile, running) = loop {
            let (profile, running) = profile_and_running(host);
            if profile == running || began.elapsed() > Duration::from_secs(10) {
                break (profile, running);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(profile.is_some(), "{} has a current generation", host.name);
        assert_eq!(
            profile, running,
            "{} runs its current generation; cairn said: {stderr}",
            host.name
        );
    }
    assert_eq!(
        hosts[0].running_revision().as_deref(),
        Some(second.as_str())
    );
    assert_eq!(hosts[2].generation(), Some(1));
    assert_eq!(hosts[2].running_revision().as_deref(), Some(first.as_str()));
    // status says which: each host's revision and generation, as they are on the hosts.
    std::fs::remove_file(hosts[1].dir.join("unhealthy")).expect("remove");
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
    let status: serde_json::Value = serde_json::from_str(line).expect("JSON");
    for (index, host) in hosts.iter().enumerate() {
        assert_eq!(
            status[index]["generation"].as_u64(),
            host.generation().map(u64::from),
            "{}",
            host.name
        );
        assert_eq!(
            status[index]["running"].as_str(),
            host.running_revision().as_deref(),
            "{}",
            host.name
        );
    }
}
