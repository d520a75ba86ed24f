//! Fan-out: a task's `matrix`, read from tasks.toml or a data file, rolled out serially or a few at a time.

use crate::support::Test;

const INVENTORY: &str = r#"
[hosts.alpha]
enabled = true
[hosts.beta]
enabled = true
[hosts.gamma]
enabled = true
[hosts.phone]
enabled = false

[environments.production]
hosts = ["alpha", "beta", "gamma"]
[environments.staging]
hosts = ["beta"]
"#;

fn fleet(rollout: &str) -> Test {
    let now = crate::support::NOW_NS;
    Test::new().file("inventory.toml", INVENTORY).tasks(&format!(
        r#"
[tasks."build:{{host}}"]
params.host = {{ values = {{ from = "inventory.toml", key = "hosts", where = "enabled" }} }}
run = "echo built {{{{host}}}} >> log"

[tasks."deploy:{{env}}"]
params.env = {{ values = ["production", "staging"] }}
matrix.host = {{ from = "inventory.toml", key = "environments.{{{{env}}}}.hosts" }}
{rollout}
deps = ["build:{{{{host}}}}"]
run = "echo start {{{{host}}}} {now} >> spans; sleep 0.2; echo end {{{{host}}}} {now} >> spans; test {{{{host}}}} != ${{FAIL_ON:-none}}"
env_pass = ["FAIL_ON"]
rollback = "echo rolled back $CAIRN_PARAM_HOST >> log"
"#
    ))
}

#[test]
fn a_serial_matrix_deploys_each_host_of_the_environment_in_file_order() {
    let test = fleet("serial = true");
    test.run_with(&["run", "deploy:production"]).success();
    let spans = test.read("spans");
    let order: Vec<String> = spans
        .lines()
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        order,
        [
            "start alpha",
            "end alpha",
            "start beta",
            "end beta",
            "start gamma",
            "end gamma"
        ],
        "{spans}"
    );
    let staging = fleet("serial = true");
    staging.run_with(&["run", "deploy:staging"]).success();
    assert_eq!(staging.read("log"), "built beta\n");
}

#[test]
fn a_failing_host_is_rolled_back_and_stops_the_rollout() {
    let test = fleet("serial = true").env("FAIL_ON", "beta");
    test.run_with(&["run", "deploy:production", "--keep-going"])
        .status(1)
        .stderr_has("`deploy:production[beta]`: rolling back")
        .stderr_has("not run because of it: `deploy:production[gamma]`, `deploy:production`");
    let spans = test.read("spans");
    assert!(!spans.contains("gamma"), "{spans}");
    assert!(test.read("log").contains("rolled back beta"));
    assert!(!test.read("log").contains("rolled back alpha"));
}

#[test]
fn max_parallel_bounds_how_many_hosts_run_at_once() {
    let test = fleet("max_parallel = 2").args(&["-j", "8"]);
    test.run_with(&["run", "deploy:production"]).success();
    let spans = test.read("spans");
    let mut events: Vec<(u128, i32)> = Vec::new();
    for line in spans.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let at: u128 = parts[2].parse().unwrap();
        events.push((at, if parts[0] == "start" { 1 } else { -1 }));
    }
    events.sort();
    let mut running = 0;
    let mut most = 0;
    for (_, change) in events {
        running += change;
        most = most.max(running);
    }
    assert_eq!(most, 2, "{spans}");
}

#[test]
fn one_instance_can_be_named_as_a_target() {
    let test = fleet("serial = true");
    test.run_with(&["run", "deploy:production[gamma]"])
        .success();
    assert_eq!(test.read("log"), "built gamma\n");
    test.run_with(&["run", "deploy:production[delta]"])
        .status(2)
        .stderr_has("no task named `deploy:production[delta]`")
        .stderr_has("its instances are `deploy:production[alpha]`");
}

#[test]
fn dry_run_and_list_show_the_fan_out() {
    let test = fleet("serial = true");
    test.run_with(&["run", "deploy:production", "--dry-run"])
        .success()
        .stdout_has("deploy:production[alpha]  (after build:alpha)")
        .stdout_has("param host=gamma")
        .stdout_has("rollout one at a time; a failure stops the rest")
        .stdout_has("rollback echo rolled back $CAIRN_PARAM_HOST >> log");
    test.run_with(&["list"])
        .success()
        .stdout_has("host = alpha | beta | gamma")
        .stdout_has("host = each of `environments.{{env}}.hosts` in inventory.toml, one at a time");
}

#[test]
fn a_disabled_or_unknown_host_is_not_a_value() {
    let test = fleet("serial = true");
    test.run_with(&["run", "build:phone"])
        .status(2)
        .stderr_has("`phone` is not a value of param `host`");
}

#[test]
fn matrix_mistakes_point_at_tasks_toml_and_the_data_file() {
    let test = Test::new()
        .file("inventory.toml", "[environments.production]\nhosts = [\"a\", 3]\n")
        .tasks("[tasks.\"deploy:{env}\"]\nparams.env.values = [\"production\", \"qa\"]\nmatrix.host = { from = \"inventory.toml\", key = \"environments.{{env}}.hosts\" }\nrun = \"true\"\n");
    test.run_with(&["check"])
        .status(1)
        .stderr_has("item 2 of `environments.production.hosts` in `inventory.toml` is not a non-empty string")
        .stderr_has("inventory.toml:2:");
    test.write(
        "inventory.toml",
        "[environments.production]\nhosts = [\"a\"]\n",
    );
    test.run_with(&["check"])
        .status(1)
        .stderr_has("`inventory.toml` has no key `qa` in `environments`")
        .stderr_has("tasks.toml:3:");
    test.write("tasks.toml", "[tasks.x]\nserial = true\nrun = \"true\"\n");
    test.run_with(&["check"])
        .status(1)
        .stderr_has("this task has no `matrix`");
    test.write(
        "tasks.toml",
        "[tasks.x]\nmatrix.h = { from = \"missing.toml\", key = \"a\" }\nrun = \"true\"\n",
    );
    test.run_with(&["check"])
        .status(1)
        .stderr_has("cannot read `missing.toml`");
}

#[test]
fn hosts_of_a_rollout_share_one_lock_for_the_whole_run() {
    let test = fleet("serial = true\nlock = \"deploy-{{env}}\"");
    test.run_with(&["run", "deploy:production"])
        .success()
        .stderr_lacks("waiting for lock");
}

#[test]
fn tasks_can_look_facts_up_with_cairn_query() {
    let test = Test::new().file("inventory.toml", INVENTORY).tasks(
        "[tasks.\"show:{host}\"]\nparams.host = { values = { from = \"inventory.toml\", key = \"hosts\", where = \"enabled\" } }\nrun = \"echo enabled=$(\\\"$CAIRN\\\" query inventory.toml hosts.{{host}}.enabled)\"\n",
    );
    test.run_with(&["run", "show:beta"])
        .success()
        .stdout_has("enabled=true");
    test.run_with(&["query", "inventory.toml", "hosts", "--where", "enabled"])
        .success()
        .stdout_has("alpha\nbeta\ngamma\n");
    test.run_with(&["query", "inventory.toml", "environments.production.hosts"])
        .success()
        .stdout_has("alpha\nbeta\ngamma\n");
    test.run_with(&["query", "inventory.toml", "hosts.alpah.enabled"])
        .status(1)
        .stderr_has("`inventory.toml` has no key `alpah` in `hosts`")
        .stderr_has("did you mean `alpha`?");
}
