//! A task plugin that checks a fleet repository (one inventory of hosts, users and environments, Nix modules,
//! sops secrets, a flake) for the mistakes that only show when a machine is deployed: a host whose kind does
//! not fit its system, a user without a home module, an environment naming a disabled host, a secret for a
//! host that does not exist, a catch-all secrets rule, a flake input that was never locked.
//!
//! It reads only the files the task lists as inputs, and never evaluates Nix.

use std::collections::{BTreeMap, BTreeSet};

use cairn_pdk::api::{
    Capability, ConfigField, Describe, Diagnostic, FieldKind, InputFile, PluginError, Severity,
    TaskRequest, TaskResponse,
};
use cairn_pdk::{config, plugin};
use toml::de::{DeTable, DeValue};

/// Where things live in the repository; every path is relative to tasks.toml.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The inventory (TOML).
    pub inventory: String,
    /// One directory per host, holding its `default.nix`.
    pub hosts_dir: String,
    /// One `USER.nix` home-manager module per user.
    pub home_dir: String,
    /// The secrets tree: `ENV/…`, `hosts/HOST/…`, `users/USER/…`.
    pub secrets_dir: String,
}

impl Default for Layout {
    fn default() -> Layout {
        Layout {
            inventory: "modules/inventory.toml".into(),
            hosts_dir: "modules/hosts".into(),
            home_dir: "modules/home".into(),
            secrets_dir: "secrets".into(),
        }
    }
}

/// Systems Nix builds for that the fleet may run, with the kinds of host each can be.
const SYSTEMS: &[(&str, &[&str])] = &[
    ("aarch64-darwin", &["darwin"]),
    ("x86_64-darwin", &["darwin"]),
    ("x86_64-linux", &["nixos"]),
    ("aarch64-linux", &["nixos", "droid"]),
];
const HOST_FIELDS: &[&str] = &[
    "system",
    "kind",
    "users",
    "enabled",
    "target",
    "description",
    "primary",
];

fn describe() -> Describe {
    let mut describe = cairn_pdk::describe("fleet", env!("CARGO_PKG_VERSION"), &[Capability::Task]);
    describe.description =
        "inventory ↔ modules ↔ secrets ↔ flake.lock consistency of a fleet repository".into();
    let field = |name: &str, description: &str| ConfigField {
        name: name.into(),
        kind: FieldKind::String,
        required: false,
        description: description.into(),
    };
    describe.config = vec![
        field(
            "inventory",
            "the inventory (default modules/inventory.toml)",
        ),
        field("hosts_dir", "per-host modules (default modules/hosts)"),
        field("home_dir", "per-user home modules (default modules/home)"),
        field("secrets_dir", "the secrets tree (default secrets)"),
    ];
    describe
}

struct Report<'f> {
    files: &'f [InputFile],
    diagnostics: Vec<Diagnostic>,
}

impl Report<'_> {
    fn add(&mut self, severity: Severity, path: &str, offset: usize, message: String) {
        let (line, column) = self
            .files
            .iter()
            .find(|f| f.path == path)
            .map_or((1, 1), |f| cairn_pdk::line_column(&f.contents, offset));
        self.diagnostics.push(Diagnostic {
            path: path.to_owned(),
            line,
            column,
            severity,
            message,
        });
    }

    fn error(&mut self, path: &str, offset: usize, message: String) {
        self.add(Severity::Error, path, offset, message);
    }

    fn warn(&mut self, path: &str, offset: usize, message: String) {
        self.add(Severity::Warning, path, offset, message);
    }
}

#[derive(Debug)]
struct Host {
    name: String,
    at: usize,
    system: Option<String>,
    kind: Option<String>,
    users: Vec<(String, usize)>,
    enabled: bool,
}

/// A name and the byte offset it is written at.
type Named = (String, usize);

/// An environment: its name, where it is declared, and its hosts.
type Environment = (String, usize, Vec<Named>);

#[derive(Debug, Default)]
struct Inventory {
    hosts: Vec<Host>,
    users: Vec<(String, usize)>,
    environments: Vec<Environment>,
}

impl Inventory {
    fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

/// Every problem found in `files`.
pub fn check(files: &[InputFile], layout: &Layout) -> Vec<Diagnostic> {
    let mut report = Report {
        files,
        diagnostics: Vec::new(),
    };
    let paths: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let Some(inventory_file) = files.iter().find(|f| f.path == layout.inventory) else {
        report.error(
            &layout.inventory,
            0,
            format!(
                "the inventory `{}` is not among the task's inputs",
                layout.inventory
            ),
        );
        return report.diagnostics;
    };
    let Some(inventory) = read_inventory(inventory_file, &mut report) else {
        return report.diagnostics;
    };
    check_inventory(&inventory, layout, &paths, &mut report);
    check_secrets_layout(&inventory, layout, files, &mut report);
    if let Some(policy) = files.iter().find(|f| f.path == ".sops.yaml") {
        check_policy(&inventory, layout, policy, &mut report);
    }
    let flake = files.iter().find(|f| f.path == "flake.nix");
    let lock = files.iter().find(|f| f.path == "flake.lock");
    if let Some(flake) = flake {
        check_flake(flake, lock, layout, &mut report);
    }
    report.diagnostics
}

fn read_inventory(file: &InputFile, report: &mut Report<'_>) -> Option<Inventory> {
    let path = file.path.as_str();
    let document = match DeTable::parse(&file.contents) {
        Ok(document) => document,
        Err(error) => {
            let at = error.span().map_or(0, |s| s.start);
            report.error(
                path,
                at,
                format!("invalid TOML: {}", error.message().trim()),
            );
            return None;
        }
    };
    let mut inventory = Inventory::default();
    let root = document.get_ref();
    for key in root.keys() {
        let name: &str = key.get_ref();
        if !["hosts", "users", "environments"].contains(&name) {
            report.error(
                path,
                key.span().start,
                format!(
                    "unknown table `{name}`: the inventory has `hosts`, `users` and `environments`"
                ),
            );
        }
    }
    let table = |name: &str,
                 report: &mut Report<'_>|
     -> Option<Vec<(String, usize, Option<DeTable<'_>>)>> {
        let value = root.get(name)?;
        let DeValue::Table(entries) = value.get_ref() else {
            report.error(
                path,
                value.span().start,
                format!("`{name}` must be a table"),
            );
            return None;
        };
        Some(
            entries
                .iter()
                .map(|(k, v)| {
                    let inner = match v.get_ref() {
                        DeValue::Table(t) => Some(t.clone()),
                        _ => None,
                    };
                    (k.get_ref().to_string(), k.span().start, inner)
                })
                .collect(),
        )
    };
    for (name, at, entry) in table("hosts", report).unwrap_or_default() {
        let Some(entry) = entry else {
            report.error(
                path,
                at,
                format!("host `{name}` must be a table of its facts"),
            );
            continue;
        };
        for key in entry.keys() {
            if !HOST_FIELDS.contains(&key.get_ref().as_ref()) {
                report.error(
                    path,
                    key.span().start,
                    format!(
                        "unknown field `{}` of host `{name}`: expected one of {}",
                        key.get_ref(),
                        HOST_FIELDS.join(", ")
                    ),
                );
            }
        }
        let string = |field: &str, report: &mut Report<'_>| match entry.get(field) {
            Some(v) => match v.get_ref() {
                DeValue::String(s) => Some(s.to_string()),
                _ => {
                    report.error(
                        path,
                        v.span().start,
                        format!("`{field}` of host `{name}` must be a string"),
                    );
                    None
                }
            },
            None => {
                report.error(path, at, format!("host `{name}` has no `{field}`"));
                None
            }
        };
        let system = string("system", report);
        let kind = string("kind", report);
        let enabled = match entry.get("enabled").map(|v| (v.get_ref(), v.span())) {
            Some((DeValue::Boolean(b), _)) => *b,
            Some((_, span)) => {
                report.error(
                    path,
                    span.start,
                    format!("`enabled` of host `{name}` must be true or false"),
                );
                false
            }
            None => {
                report.error(
                    path,
                    at,
                    format!("host `{name}` does not say whether it is `enabled`"),
                );
                false
            }
        };
        let mut users = Vec::new();
        match entry.get("users").map(|v| (v.get_ref(), v.span())) {
            Some((DeValue::Array(items), _)) => {
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => users.push((s.to_string(), item.span().start)),
                        _ => report.error(
                            path,
                            item.span().start,
                            format!("the users of host `{name}` must be names"),
                        ),
                    }
                }
            }
            Some((_, span)) => report.error(
                path,
                span.start,
                format!("`users` of host `{name}` must be an array of names"),
            ),
            None => report.error(path, at, format!("host `{name}` has no `users`")),
        }
        inventory.hosts.push(Host {
            name,
            at,
            system,
            kind,
            users,
            enabled,
        });
    }
    for (name, at, _) in table("users", report).unwrap_or_default() {
        inventory.users.push((name, at));
    }
    for (name, at, entry) in table("environments", report).unwrap_or_default() {
        let mut hosts = Vec::new();
        match entry
            .as_ref()
            .and_then(|e| e.get("hosts"))
            .map(|v| (v.get_ref(), v.span()))
        {
            Some((DeValue::Array(items), _)) => {
                for item in items.iter() {
                    if let DeValue::String(s) = item.get_ref() {
                        hosts.push((s.to_string(), item.span().start));
                    } else {
                        report.error(
                            path,
                            item.span().start,
                            format!("the hosts of environment `{name}` must be names"),
                        );
                    }
                }
            }
            _ => report.error(
                path,
                at,
                format!("environment `{name}` needs `hosts = [...]`"),
            ),
        }
        inventory.environments.push((name, at, hosts));
    }
    Some(inventory)
}

fn check_inventory(
    inventory: &Inventory,
    layout: &Layout,
    paths: &BTreeSet<&str>,
    report: &mut Report<'_>,
) {
    let path = layout.inventory.as_str();
    for host in &inventory.hosts {
        if let (Some(system), Some(kind)) = (&host.system, &host.kind) {
            match SYSTEMS.iter().find(|(s, _)| s == system) {
                None => report.error(
                    path,
                    host.at,
                    format!(
                        "host `{}` has system `{system}`; expected one of {}",
                        host.name,
                        SYSTEMS.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", ")
                    ),
                ),
                Some((_, kinds)) if !kinds.contains(&kind.as_str()) => report.error(
                    path,
                    host.at,
                    format!(
                        "host `{}` is a `{kind}` host but its system is `{system}`: a {system} host is {}",
                        host.name,
                        kinds.join(" or ")
                    ),
                ),
                Some(_) => {}
            }
        }
        for (user, at) in &host.users {
            if !inventory.users.iter().any(|(u, _)| u == user) {
                report.error(
                    path,
                    *at,
                    format!(
                        "host `{}` names user `{user}`, who is not under [users]",
                        host.name
                    ),
                );
            }
        }
        let module = format!("{}/{}/default.nix", layout.hosts_dir, host.name);
        if !paths.contains(module.as_str()) {
            if host.enabled {
                report.error(
                    path,
                    host.at,
                    format!("host `{}` has no module: `{module}` is missing", host.name),
                );
            } else {
                report.warn(
                    path,
                    host.at,
                    format!(
                        "host `{}` (disabled) has no module yet: `{module}`",
                        host.name
                    ),
                );
            }
        }
    }
    for (user, at) in &inventory.users {
        let module = format!("{}/{user}.nix", layout.home_dir);
        if !paths.contains(module.as_str()) {
            report.error(
                path,
                *at,
                format!("user `{user}` has no home module: `{module}` is missing"),
            );
        }
        if !inventory
            .hosts
            .iter()
            .any(|h| h.users.iter().any(|(u, _)| u == user))
        {
            report.warn(path, *at, format!("user `{user}` is on no host"));
        }
    }
    let mut placed: BTreeMap<&str, &str> = BTreeMap::new();
    for (environment, _, hosts) in &inventory.environments {
        for (name, at) in hosts {
            match inventory.host(name) {
                None => report.error(path, *at, format!("environment `{environment}` names host `{name}`, which is not in the inventory")),
                Some(host) if !host.enabled => report.error(
                    path,
                    *at,
                    format!("environment `{environment}` names host `{name}`, which is disabled: enable it or take it out"),
                ),
                Some(host) if host.kind.as_deref() == Some("droid") => report.error(
                    path,
                    *at,
                    format!("environment `{environment}` names host `{name}`: a nix-on-droid device switches on the device itself, not by a deploy"),
                ),
                Some(_) => {}
            }
            if let Some(other) = placed.insert(name, environment) {
                if other != environment {
                    report.error(path, *at, format!("host `{name}` is in both `{other}` and `{environment}`: a host belongs to one environment"));
                }
            }
        }
    }
    for host in inventory
        .hosts
        .iter()
        .filter(|h| h.enabled && h.kind.as_deref() != Some("droid"))
    {
        if !placed.contains_key(host.name.as_str()) {
            report.warn(
                path,
                host.at,
                format!(
                    "host `{}` is in no environment, so no deploy reaches it",
                    host.name
                ),
            );
        }
    }
}

fn check_secrets_layout(
    inventory: &Inventory,
    layout: &Layout,
    files: &[InputFile],
    report: &mut Report<'_>,
) {
    let prefix = format!("{}/", layout.secrets_dir);
    for file in files.iter().filter(|f| f.path.starts_with(&prefix)) {
        let rest = &file.path[prefix.len()..];
        let mut parts = rest.split('/');
        let first = parts.next().unwrap_or_default();
        let second = parts.next();
        match (first, second) {
            ("hosts", Some(host)) if parts.clone().next().is_some() => match inventory.host(host) {
                None => report.error(&file.path, 0, format!("secrets for host `{host}`, which is not in the inventory")),
                Some(h) if !h.enabled => report.error(&file.path, 0, format!("secrets for host `{host}`, which is disabled: no host can read them")),
                Some(_) => {}
            },
            ("users", Some(user)) if parts.clone().next().is_some() => {
                if !inventory.users.iter().any(|(u, _)| u == user) {
                    report.error(&file.path, 0, format!("secrets for user `{user}`, who is not in the inventory"));
                }
            }
            (environment, Some(_)) if inventory.environments.iter().any(|(e, _, _)| e == environment) => {}
            _ => report.error(
                &file.path,
                0,
                format!(
                    "`{}` is outside the layout: secrets go in {prefix}ENV/ (one of {}), {prefix}hosts/HOST/ or {prefix}users/USER/",
                    file.path,
                    inventory.environments.iter().map(|(e, _, _)| e.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ),
        }
    }
}

/// `.sops.yaml`: every key is named after a user or a host (anchors), and no rule catches every file.
fn check_policy(
    inventory: &Inventory,
    layout: &Layout,
    policy: &InputFile,
    report: &mut Report<'_>,
) {
    let mut offset = 0;
    for line in policy.contents.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(anchor) = trimmed.strip_prefix("- &") {
            let name: String = anchor.chars().take_while(|c| !c.is_whitespace()).collect();
            let at = offset + indent + 3;
            let is_user = inventory.users.iter().any(|(u, _)| *u == name);
            match inventory.host(&name) {
                Some(host) if !host.enabled => report.warn(
                    &policy.path,
                    at,
                    format!("key `{name}` belongs to a disabled host: files encrypted to it are readable by a machine that is not deployed"),
                ),
                Some(_) => {}
                None if is_user => {}
                None => report.warn(
                    &policy.path,
                    at,
                    format!("key `{name}` names no user or host of the inventory: a stale key? (`cairn secrets rotate` removes it)"),
                ),
            }
        }
        if let Some(regex) = trimmed
            .strip_prefix("- path_regex:")
            .or_else(|| trimmed.strip_prefix("path_regex:"))
        {
            let regex = regex.trim().trim_matches(|c| c == '"' || c == '\'');
            let secrets = &layout.secrets_dir;
            let catch_all = [
                "".to_owned(),
                ".*".to_owned(),
                format!("^{secrets}/"),
                format!("^{secrets}/.*"),
                format!("{secrets}/"),
                format!("{secrets}/.*"),
            ];
            if catch_all.iter().any(|c| c == regex) {
                report.error(
                    &policy.path,
                    offset + indent,
                    format!("`path_regex: {regex}` matches every secret: give each environment, host and user its own rule so each file has only the readers it needs"),
                );
            }
        }
        offset += line.len();
    }
}

fn check_flake(
    flake: &InputFile,
    lock: Option<&InputFile>,
    layout: &Layout,
    report: &mut Report<'_>,
) {
    let inventory_name = layout.inventory.rsplit('/').next().unwrap_or_default();
    if !(flake.contents.contains("builtins.fromTOML") && flake.contents.contains(inventory_name)) {
        report.error(
            &flake.path,
            0,
            format!("flake.nix does not read `{}` with builtins.fromTOML: the inventory and the configurations can drift", layout.inventory),
        );
    }
    let declared = declared_inputs(&flake.contents);
    let Some(lock) = lock else {
        report.error(
            &flake.path,
            0,
            "there is no flake.lock among the task's inputs: commit one (`nix flake lock`)".into(),
        );
        return;
    };
    let json: serde_json::Value = match serde_json::from_str(&lock.contents) {
        Ok(json) => json,
        Err(error) => {
            let at = line_offset(&lock.contents, error.line());
            report.error(&lock.path, at, format!("flake.lock is not JSON: {error}"));
            return;
        }
    };
    if json.get("version").and_then(|v| v.as_u64()) != Some(7) {
        report.error(
            &lock.path,
            0,
            "flake.lock is not version 7: re-lock it with a current Nix".into(),
        );
    }
    let nodes = json.get("nodes").and_then(|n| n.as_object());
    let root_name = json.get("root").and_then(|r| r.as_str()).unwrap_or("root");
    let Some(nodes) = nodes else {
        report.error(&lock.path, 0, "flake.lock has no `nodes`".into());
        return;
    };
    let root_inputs = nodes
        .get(root_name)
        .and_then(|r| r.get("inputs"))
        .and_then(|i| i.as_object())
        .cloned()
        .unwrap_or_default();
    let at = |needle: &str| lock.contents.find(&format!("\"{needle}\"")).unwrap_or(0);
    for (name, at_decl) in &declared {
        if !root_inputs.contains_key(name) {
            report.error(&flake.path, *at_decl, format!("input `{name}` is not in flake.lock: run `nix flake lock` on a machine with network"));
        }
    }
    for name in root_inputs.keys() {
        if !declared.iter().any(|(d, _)| d == name) {
            report.error(
                &lock.path,
                at(name),
                format!("flake.lock locks `{name}`, which flake.nix no longer declares: re-lock"),
            );
        }
    }
    for (name, node) in nodes {
        if name == root_name {
            continue;
        }
        match node.get("locked") {
            Some(locked) => {
                for field in ["narHash", "type"] {
                    if locked
                        .get(field)
                        .and_then(|v| v.as_str())
                        .is_none_or(str::is_empty)
                    {
                        report.error(
                            &lock.path,
                            at(name),
                            format!("flake.lock node `{name}` has no locked `{field}`"),
                        );
                    }
                }
                let kind = locked
                    .get("type")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default();
                if ["github", "gitlab", "git"].contains(&kind)
                    && locked.get("rev").and_then(|v| v.as_str()).is_none()
                {
                    report.error(
                        &lock.path,
                        at(name),
                        format!("flake.lock node `{name}` has no locked `rev`"),
                    );
                }
            }
            None => report.error(
                &lock.path,
                at(name),
                format!("flake.lock node `{name}` is not locked"),
            ),
        }
        if let Some(inputs) = node.get("inputs").and_then(|i| i.as_object()) {
            for (input, target) in inputs {
                if let Some(path) = target.as_array() {
                    let mut current = root_name.to_owned();
                    for step in path.iter().filter_map(|s| s.as_str()) {
                        let next = nodes
                            .get(&current)
                            .and_then(|n| n.get("inputs"))
                            .and_then(|i| i.get(step))
                            .and_then(|t| t.as_str());
                        match next {
                            Some(next) => current = next.to_owned(),
                            None => {
                                report.error(
                                    &lock.path,
                                    at(name),
                                    format!(
                                        "`{name}.{input}` follows `{}`, which does not exist",
                                        path.iter()
                                            .filter_map(|s| s.as_str())
                                            .collect::<Vec<_>>()
                                            .join("/")
                                    ),
                                );
                                break;
                            }
                        }
                    }
                } else if let Some(target) = target.as_str() {
                    if !nodes.contains_key(target) {
                        report.error(
                            &lock.path,
                            at(name),
                            format!("`{name}.{input}` points at node `{target}`, which is missing"),
                        );
                    }
                }
            }
        }
    }
}

fn line_offset(text: &str, line: usize) -> usize {
    text.split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum()
}

/// The inputs a flake.nix declares, with where: `NAME.url = …` and `NAME = { url = …` inside `inputs`.
fn declared_inputs(text: &str) -> Vec<(String, usize)> {
    let mut found: Vec<(String, usize)> = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let at = offset + line.len() - trimmed.len();
        offset += line.len();
        if trimmed.starts_with('#') {
            continue;
        }
        let trimmed = trimmed.strip_prefix("inputs.").unwrap_or(trimmed);
        let name: String = trimmed
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        let rest = trimmed[name.len()..].trim_start();
        if rest.starts_with(".url") && !found.iter().any(|(n, _)| *n == name) {
            found.push((name, at));
        }
    }
    found
}

fn run(request: TaskRequest) -> Result<TaskResponse, PluginError> {
    let defaults = Layout::default();
    let layout = Layout {
        inventory: config::get("inventory").unwrap_or(defaults.inventory),
        hosts_dir: config::get("hosts_dir").unwrap_or(defaults.hosts_dir),
        home_dir: config::get("home_dir").unwrap_or(defaults.home_dir),
        secrets_dir: config::get("secrets_dir").unwrap_or(defaults.secrets_dir),
    };
    let diagnostics = check(&request.files, &layout);
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diagnostics.len() - errors;
    Ok(TaskResponse {
        status: i32::from(errors > 0),
        output: format!(
            "fleet: {} file(s) checked, {errors} error(s), {warnings} warning(s)",
            request.files.len()
        ),
        diagnostics,
    })
}

plugin! { describe: describe, task: run }

#[cfg(test)]
mod tests;
