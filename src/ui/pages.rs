//! The views. Each reads what the CLI reads (run records, the audit log, the cache, tasks.toml, the secrets
//! policy) at the moment it is asked, so a page is as current as `cairn history` or `cairn cache stats` would
//! be; nothing is kept between requests.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

use serde::Deserialize;

use super::html::{self, badge, bars, duration_ms, escape, facts, path_segment, percent, table};
use crate::config::{format_duration, format_size, Config, RemoteMode};
use crate::report::{html_report, list_runs, runs_dir, task_history, RunSummary, TaskHistory};

/// What a page needs to know of the project.
pub struct Project {
    /// The directory of tasks.toml.
    pub root: PathBuf,
    /// tasks.toml itself.
    pub file: PathBuf,
    /// The `cairn` executable that runs, explains and checks on the dashboard's behalf (normally itself).
    pub exe: PathBuf,
}

/// A rendered answer: HTTP status, content type and body.
pub struct Rendered {
    /// The status code.
    pub status: u16,
    /// The body's media type.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Rendered {
    fn html(body: String) -> Rendered {
        Rendered {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body,
        }
    }

    /// A piece of a page, for a script to put in place.
    pub fn html_fragment(body: String) -> Rendered {
        Rendered::html(body)
    }
}

/// How many of the latest run records the history figures read.
const HISTORY_RUNS: usize = 50;
/// How many entries the Cache view lists by size.
const BIGGEST_ENTRIES: usize = 20;
/// How many runs the Runs view lists.
const LISTED_RUNS: usize = 1000;

impl Project {
    fn name(&self) -> String {
        self.root.file_name().map_or_else(
            || self.root.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// A page of the dashboard with `body` under `title`, `current` marked in the navigation.
    pub fn page(&self, title: &str, current: &str, body: &str) -> Rendered {
        Rendered::html(html::page(title, current, &self.name(), body))
    }

    /// A page that only says something (an action's outcome).
    pub fn message(&self, title: &str, body: &str) -> Rendered {
        self.page(title, "", body)
    }

    /// The question a protected task (or one with `confirm`) asks, with the plan it would run.
    pub fn confirm_page(&self, target: &str, plan: &str, csrf: &str) -> Rendered {
        let questions: Vec<String> = plan
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix("asks "))
            .map(|q| format!("<li>{}</li>", escape(q.trim())))
            .collect();
        let body = format!(
            "<p>Running <code>{target}</code> asks first:</p><ul class=\"questions\">{}</ul>\
             <p>This is its plan (<code>cairn run {target} --dry-run</code>):</p><pre id=\"plan\">{}</pre>\
             <form method=\"post\" action=\"/actions/run\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"target\" value=\"{target}\"><input type=\"hidden\" name=\"confirmed\" value=\"yes\">\
             <button type=\"submit\" id=\"confirm\">Yes, run {target}</button> <a href=\"/tasks\">No, go back</a></form>",
            questions.join(""),
            escape(plan),
            target = escape(target),
            csrf = escape(csrf),
        );
        self.page(&format!("Run {target}?"), "", &body)
    }

    /// The page at `path` (without its query), or `None` when there is none.
    pub fn render(&self, path: &str, csrf: &str) -> Option<Rendered> {
        let segments: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|segment| html::percent_decode(segment, false))
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        Some(match segments.as_slice() {
            [] => self.overview(),
            ["fleet"] => self.fleet(),
            ["fleet", task] => self.fleet_history(task),
            ["runs"] => self.runs(),
            ["runs", id] => self.run(id)?,
            ["runs", id, "report"] => self.run_report(id)?,
            ["tasks"] => self.tasks(),
            ["tasks", name] => self.task(name, csrf)?,
            ["cache"] => self.cache(),
            ["cache", "remote"] => self.remote_cache(),
            ["secrets"] => self.secrets(),
            ["plugins"] => self.plugins(),
            _ => return None,
        })
    }

    fn overview(&self) -> Rendered {
        let runs = self.recent_runs(1);
        let last = runs.last().map_or_else(
            || "no run recorded yet".to_owned(),
            |r| {
                format!(
                    "<a href=\"/runs/{}\">{}</a> {} · {} · {}",
                    path_segment(&r.id),
                    escape(&r.targets.join(" ")),
                    badge(if r.exit_code == 0 {
                        "succeeded"
                    } else {
                        "failed"
                    }),
                    escape(&r.started_at),
                    duration_ms(r.duration_ms)
                )
            },
        );
        let mut body = facts(&[
            ("project", escape(&self.root.display().to_string())),
            ("last run", last),
        ]);
        body.push_str("<ul class=\"views\">");
        for (path, name) in html::VIEWS {
            let _ = write!(body, "<li><a href=\"{path}\">{name}</a></li>");
        }
        body.push_str("</ul>");
        self.page("Overview", "/", &body)
    }

    fn recent_runs(&self, last: usize) -> Vec<RunSummary> {
        let paths = list_runs(&runs_dir(&self.root));
        let skip = paths.len().saturating_sub(last);
        paths[skip..]
            .iter()
            .filter_map(|p| RunSummary::read(p).ok())
            .collect()
    }

    fn find_run(&self, id: &str) -> Option<RunSummary> {
        // Ids name files: only an id that is one of the listed records is read, never a path built from input.
        list_runs(&runs_dir(&self.root))
            .into_iter()
            .find(|p| p.file_stem().is_some_and(|s| s == id))
            .and_then(|p| RunSummary::read(&p).ok())
    }

    fn runs(&self) -> Rendered {
        let runs = self.recent_runs(LISTED_RUNS);
        let chart: Vec<(String, f64)> = runs
            .iter()
            .rev()
            .take(HISTORY_RUNS)
            .rev()
            .map(|r| (r.targets.join(" "), r.duration_ms))
            .collect();
        let max = chart.iter().map(|(_, v)| *v).fold(0.0, f64::max);
        let rows: Vec<Vec<String>> = runs
            .iter()
            .rev()
            .map(|r| {
                vec![
                    format!(
                        "<a href=\"/runs/{}\">{}</a>",
                        path_segment(&r.id),
                        escape(&r.started_at)
                    ),
                    escape(&r.targets.join(" ")),
                    badge(match (r.exit_code, &r.interrupted) {
                        (_, Some(_)) => "interrupted",
                        (0, None) => "succeeded",
                        _ => "failed",
                    }),
                    duration_ms(r.duration_ms),
                    format!(
                        "{} succeeded ({} from the cache), {} failed",
                        r.totals.succeeded, r.totals.cached, r.totals.failed
                    ),
                ]
            })
            .collect();
        let body = format!(
            "{}{}",
            bars("duration of the latest runs", &chart, max, " ms"),
            table(&["started", "targets", "result", "took", "tasks"], &rows)
        );
        self.page("Runs", "/runs", &body)
    }

    fn run(&self, id: &str) -> Option<Rendered> {
        let run = self.find_run(id)?;
        let rows: Vec<Vec<String>> = run
            .tasks
            .iter()
            .map(|t| {
                vec![
                    format!(
                        "<a href=\"/tasks/{}\">{}</a>",
                        path_segment(&t.task),
                        escape(&t.label)
                    ),
                    badge(&t.status),
                    badge(&t.cache),
                    escape(t.ran_on.as_deref().unwrap_or("")),
                    duration_ms(t.duration_ms),
                    escape(
                        t.cache_reason
                            .as_deref()
                            .or(t.blocked_by.as_deref())
                            .unwrap_or(""),
                    ),
                ]
            })
            .collect();
        let body = format!(
            "{}<p><a href=\"/runs/{}/report\">Timeline, graph and critical path</a></p>{}",
            facts(&[
                ("targets", escape(&run.targets.join(" "))),
                ("started", escape(&run.started_at)),
                ("took", duration_ms(run.duration_ms)),
                ("exit code", run.exit_code.to_string()),
                ("jobs", run.jobs.to_string()),
                (
                    "critical path",
                    format!(
                        "{} ({})",
                        escape(&run.critical_path.tasks.join(" → ")),
                        duration_ms(run.critical_path.duration_ms)
                    )
                ),
            ]),
            path_segment(&run.id),
            table(&["task", "status", "cache", "where", "took", "why"], &rows)
        );
        Some(self.page(&format!("Run {}", run.id), "/runs", &body))
    }

    fn run_report(&self, id: &str) -> Option<Rendered> {
        self.find_run(id)
            .map(|run| Rendered::html(html_report(&run)))
    }

    fn load_config(&self) -> Result<Config, String> {
        Config::load(&self.file).map_err(|error| {
            let report = miette::Report::new(error);
            format!("{report:?}")
        })
    }

    fn config_error(&self, title: &str, current: &str, error: &str) -> Rendered {
        self.page(
            title,
            current,
            &format!(
                "<p class=\"error\">tasks.toml does not load; `cairn check` says:</p><pre>{}</pre>",
                escape(&strip_ansi(error))
            ),
        )
    }

    fn history(&self) -> BTreeMap<String, TaskHistory> {
        task_history(&self.recent_runs(HISTORY_RUNS))
            .into_iter()
            .map(|h| (h.label.clone(), h))
            .collect()
    }

    fn tasks(&self) -> Rendered {
        let config = match self.load_config() {
            Ok(config) => config,
            Err(error) => return self.config_error("Tasks", "/tasks", &error),
        };
        let history = self.history();
        let rows: Vec<Vec<String>> = config
            .tasks
            .iter()
            .map(|task| {
                let name = &task.name.text;
                let seen = history.get(name.as_str());
                vec![
                    format!(
                        "<a href=\"/tasks/{}\">{}</a>",
                        path_segment(name),
                        escape(name)
                    ),
                    escape(task.description.as_deref().unwrap_or("")),
                    escape(
                        &task
                            .deps
                            .iter()
                            .map(|d| d.text.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    seen.map_or("–".into(), |h| h.runs.to_string()),
                    seen.and_then(|h| h.p50_ms).map_or("–".into(), duration_ms),
                    seen.and_then(|h| h.p95_ms).map_or("–".into(), duration_ms),
                    percent(seen.and_then(|h| h.hit_rate)),
                    seen.map_or(String::new(), |h| {
                        if h.flaky_keys.is_empty() {
                            String::new()
                        } else {
                            badge("flaky")
                        }
                    }),
                ]
            })
            .collect();
        let body = format!(
            "{}<p>Figures over the last {HISTORY_RUNS} recorded runs.</p>{}",
            graph_svg(&config),
            table(
                &[
                    "task",
                    "description",
                    "depends on",
                    "runs",
                    "p50",
                    "p95",
                    "hit rate",
                    ""
                ],
                &rows
            )
        );
        self.page("Tasks", "/tasks", &body)
    }

    fn task(&self, name: &str, csrf: &str) -> Option<Rendered> {
        let config = match self.load_config() {
            Ok(config) => config,
            Err(error) => return Some(self.config_error(name, "/tasks", &error)),
        };
        // A task by its name, or an instance of one (`deploy:production[NIXY]`) by its label in the graph.
        let config = std::sync::Arc::new(config);
        let (index, instance) = match config.tasks.iter().position(|t| t.name.text == name) {
            Some(index) => (index, false),
            None => {
                let graph = crate::graph::TaskGraph::build(std::sync::Arc::clone(&config)).ok()?;
                let node = graph.nodes().iter().find(|n| n.label == name)?;
                (node.task, true)
            }
        };
        let task = &config.tasks[index];
        let list = |items: Vec<String>| -> String {
            if items.is_empty() {
                "–".into()
            } else {
                items
                    .iter()
                    .map(|i| format!("<code>{}</code>", escape(i)))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        let dependents: Vec<String> = config
            .tasks
            .iter()
            .filter(|t| t.deps.iter().any(|d| d.text == name))
            .map(|t| t.name.text.to_string())
            .collect();
        let runs = self.recent_runs(HISTORY_RUNS);
        let history = task_history(&runs);
        let mine: Vec<&TaskHistory> = history
            .iter()
            .filter(|h| h.label == name || h.label.starts_with(&format!("{name}[")))
            .collect();
        let durations: Vec<(String, f64)> = runs
            .iter()
            .filter_map(|r| {
                r.tasks
                    .iter()
                    .find(|t| t.task == name && t.attempts > 0)
                    .map(|t| (r.started_at.clone(), t.duration_ms))
            })
            .collect();
        let max = durations.iter().map(|(_, v)| *v).fold(0.0, f64::max);
        let rows: Vec<Vec<String>> = mine
            .iter()
            .map(|h| {
                vec![
                    escape(&h.label),
                    h.runs.to_string(),
                    h.executed.to_string(),
                    h.p50_ms.map_or("–".into(), duration_ms),
                    h.p95_ms.map_or("–".into(), duration_ms),
                    percent(h.hit_rate),
                    percent(h.failure_rate),
                    if h.flaky_keys.is_empty() {
                        String::new()
                    } else {
                        badge("flaky")
                    },
                ]
            })
            .collect();
        let secrets = task.secrets.as_ref().map_or_else(
            || "–".into(),
            |s| {
                // Which variables get secrets and from which keys; never a value.
                list(
                    s.env
                        .iter()
                        .chain(&s.files)
                        .map(|(var, key)| format!("{var} ← {}", key.value))
                        .collect(),
                )
            },
        );
        // The key of its latest recorded result, and the run that recorded it.
        let last_key = runs
            .iter()
            .rev()
            .find_map(|r| {
                r.tasks
                    .iter()
                    .find(|t| (t.label == name || t.task == name) && t.key.is_some())
                    .map(|t| (r, t))
            })
            .map_or_else(
                || "–".into(),
                |(run, t)| {
                    let key = t.key.as_deref().unwrap_or_default();
                    format!(
                        "<code>{}</code> ({}, in <a href=\"/runs/{}\">the run of {}</a>)",
                        escape(key.get(..16).unwrap_or(key)),
                        escape(&t.status),
                        path_segment(&run.id),
                        escape(&run.started_at)
                    )
                },
            );
        let run_form = format!(
            "<form method=\"post\" action=\"/actions/run\" class=\"run\"><input type=\"hidden\" name=\"csrf\" \
             value=\"{}\"><label>Target <input name=\"target\" value=\"{}\" required></label> \
             <button type=\"submit\" id=\"run\">{}</button></form>",
            escape(csrf),
            escape(name),
            if task.protected || task.confirm.is_some() { "Run… (asks first)" } else { "Run" }
        );
        // `cairn why` itself: the same explanation the terminal gives.
        let why = if task.name.is_pattern() && !instance {
            "<p class=\"empty\">Name an instance (<code>cairn why NAME</code>) to see why it would run.</p>".to_owned()
        } else {
            let mut command = super::actions::cairn(self);
            command.args(["why", name]);
            let (_, text) = super::actions::capture(command);
            format!("<pre id=\"why\">{}</pre>", escape(&strip_ansi(&text)))
        };
        let body = format!(
            "{run_form}<h2>Why it would run now</h2>{why}<h2>Definition</h2>{}<h2>History</h2>{}{}",
            facts(&[
                (
                    "description",
                    escape(task.description.as_deref().unwrap_or("–"))
                ),
                (
                    "params",
                    list(task.params.iter().map(|p| p.name.clone()).collect())
                ),
                (
                    "depends on",
                    list(task.deps.iter().map(|d| d.text.to_string()).collect())
                ),
                ("needed by", list(dependents)),
                (
                    "inputs",
                    list(task.inputs.iter().map(|i| i.value.clone()).collect())
                ),
                (
                    "outputs",
                    list(task.outputs.iter().map(|o| o.value.clone()).collect())
                ),
                (
                    "environment",
                    list(task.env.iter().map(|(k, _)| k.clone()).collect())
                ),
                ("secrets", secrets),
                (
                    "cached",
                    match task.cache {
                        Some(false) => "no".into(),
                        _ if task.inputs.is_empty() => "no (no inputs declared)".into(),
                        _ => "yes".into(),
                    }
                ),
                (
                    "protected",
                    if task.protected {
                        "yes: asks before it runs".into()
                    } else {
                        "no".into()
                    }
                ),
                (
                    "audited",
                    if task.audit {
                        "yes".into()
                    } else {
                        "no".into()
                    }
                ),
                ("last key", last_key),
            ]),
            bars("duration when it ran, latest runs", &durations, max, " ms"),
            table(
                &["instance", "runs", "ran", "p50", "p95", "hit rate", "failures", ""],
                &rows
            )
        );
        Some(self.page(name, "/tasks", &body))
    }

    fn cache(&self) -> Rendered {
        let dir = crate::cache::dir_for(&self.root);
        let store = crate::cache::Store::open(&dir, crate::cache::LockMode::Shared);
        let largest = store
            .as_ref()
            .map(|store| store.largest_entries(BIGGEST_ENTRIES))
            .unwrap_or_default();
        let stats = store.map(|store| store.stats());
        let config = self.load_config().ok();
        let mut pairs = vec![("directory", escape(&dir.display().to_string()))];
        match &stats {
            Ok(stats) => {
                pairs.push(("entries", stats.entries.to_string()));
                pairs.push(("blobs", stats.blobs.to_string()));
                pairs.push(("size", format_size(stats.bytes)));
            }
            Err(error) => pairs.push(("state", escape(&error.to_string()))),
        }
        if let Some(config) = &config {
            pairs.push((
                "limits",
                format!(
                    "{}, entries unused for {} are removed",
                    format_size(config.settings.cache_max_size),
                    format_duration(config.settings.cache_max_age)
                ),
            ));
            let remote = config.remote_cache.as_ref().and_then(|r| {
                r.url.as_ref().map(|url| {
                    let mode = match r.mode {
                        RemoteMode::Off => "off",
                        RemoteMode::Read => "read",
                        RemoteMode::ReadWrite => "read-write",
                    };
                    // The URL as written: credentials live in `token`, which is never shown.
                    format!(
                        "{} ({mode}) · <a href=\"/cache/remote\">check it now</a>",
                        escape(&strip_userinfo(&url.value))
                    )
                })
            });
            pairs.push((
                "remote cache",
                remote.unwrap_or_else(|| "none configured".into()),
            ));
        }
        let runs = self.recent_runs(HISTORY_RUNS);
        let rates: Vec<(String, f64)> = runs
            .iter()
            .filter(|r| r.totals.cached + r.totals.succeeded > 0)
            .map(|r| {
                let looked = (r.totals.cached + r.totals.succeeded) as f64;
                (
                    r.started_at.clone(),
                    r.totals.cached as f64 / looked * 100.0,
                )
            })
            .collect();
        let biggest: Vec<Vec<String>> = largest
            .iter()
            .map(|e| {
                vec![
                    format!(
                        "<a href=\"/tasks/{}\">{}</a>",
                        path_segment(task_of(&e.task)),
                        escape(&e.task)
                    ),
                    format_size(e.bytes),
                    e.outputs.to_string(),
                    format!("<code>{}</code>", escape(e.key.get(..12).unwrap_or(&e.key))),
                ]
            })
            .collect();
        let body = format!(
            "{}<h2>Hit rate</h2>{}<h2>Biggest entries</h2>{}",
            facts(&pairs),
            if rates.is_empty() {
                "<p class=\"empty\">No run recorded yet.</p>".into()
            } else {
                bars(
                    "share of tasks the cache had, per run (latest runs)",
                    &rates,
                    100.0,
                    " %",
                )
            },
            table(&["task", "size", "outputs", "key"], &biggest)
        );
        self.page("Cache", "/cache", &body)
    }

    /// The remote cache's status, asked on request (a server that is down costs its timeout): what
    /// `cairn cache remote` reports — the resolved settings, a lookup and, for a writer, an upload read back.
    fn remote_cache(&self) -> Rendered {
        let mut check = super::actions::cairn(self);
        check.args(["cache", "remote"]);
        let (code, report) = super::actions::capture(check);
        let verdict = match code {
            0 => badge("ok"),
            _ => badge("failed"),
        };
        let body = format!(
            "<p>What <code>cairn cache remote</code> reports now {verdict} · <a href=\"/cache\">back to the cache</a></p>\
             <pre id=\"remote-status\">{}</pre>",
            escape(&strip_ansi(&report))
        );
        self.page("Remote cache", "/cache", &body)
    }

    fn audit_lines(&self) -> Vec<AuditEntry> {
        let Ok(text) = std::fs::read_to_string(self.root.join(".cairn").join("audit.log")) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    fn fleet(&self) -> Rendered {
        let lines = self.audit_lines();
        let head = crate::run::audit::revision(&self.root);
        let mut last: BTreeMap<&str, &AuditEntry> = BTreeMap::new();
        for line in &lines {
            last.insert(line.task.as_str(), line);
        }
        // The fleet as tasks.toml defines it: every instance of an audited task with a matrix (a deploy over
        // each environment's hosts, from the inventory), grouped by environment, deployed or not.
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Ok(config) = self.load_config() {
            let config = std::sync::Arc::new(config);
            if let Ok(graph) = crate::graph::TaskGraph::build(std::sync::Arc::clone(&config)) {
                for node in graph.nodes() {
                    if config.tasks[node.task].audit
                        && matches!(node.role, crate::graph::Role::Instance { .. })
                    {
                        groups
                            .entry(task_of(&node.label).to_owned())
                            .or_default()
                            .push(node.label.to_string());
                    }
                }
            }
        }
        let row = |instance: &str, line: Option<&&AuditEntry>| -> Vec<String> {
            let link = format!(
                "<a href=\"/fleet/{}\">{}</a>",
                path_segment(instance),
                escape(instance)
            );
            match line {
                None => vec![
                    link,
                    badge("never"),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ],
                Some(line) => {
                    let drift = if line.revision == "unknown" || head == "unknown" {
                        "unknown"
                    } else if line.revision == head {
                        "current"
                    } else {
                        "drift"
                    };
                    vec![
                        link,
                        badge(&line.result),
                        escape(&line.time),
                        escape(&line.user),
                        escape(&line.host),
                        format!("<code>{}</code>", escape(short_revision(&line.revision))),
                        badge(drift),
                    ]
                }
            }
        };
        let headers = [
            "instance",
            "last result",
            "when",
            "who",
            "from",
            "revision",
            "drift",
        ];
        let mut body = format!(
            "<p>Every host of every environment as tasks.toml and its inventory define them, with the last run \
             of each from <code>.cairn/audit.log</code> (a deploy's health check and rollback are part of its \
             result); drift compares that run's revision with this checkout's (<code>{}</code>).</p>",
            escape(short_revision(&head))
        );
        let mut shown = std::collections::BTreeSet::new();
        for (group, instances) in &groups {
            let rows: Vec<Vec<String>> = instances
                .iter()
                .map(|instance| {
                    shown.insert(instance.as_str());
                    row(instance, last.get(instance.as_str()))
                })
                .collect();
            let _ = write!(body, "<h2>{}</h2>{}", escape(group), table(&headers, &rows));
        }
        let others: Vec<Vec<String>> = last
            .iter()
            .filter(|(task, _)| !shown.contains(*task))
            .map(|(task, line)| row(task, Some(line)))
            .collect();
        if !others.is_empty() || groups.is_empty() {
            let _ = write!(
                body,
                "<h2>Other audited runs</h2>{}",
                table(&headers, &others)
            );
        }
        self.page("Fleet", "/fleet", &body)
    }

    fn fleet_history(&self, instance: &str) -> Rendered {
        let lines = self.audit_lines();
        let rows: Vec<Vec<String>> = lines
            .iter()
            .rev()
            .filter(|l| l.task == instance)
            .map(|l| {
                vec![
                    escape(&l.time),
                    badge(&l.result),
                    escape(&l.user),
                    escape(&l.host),
                    format!("<code>{}</code>", escape(short_revision(&l.revision))),
                    l.exit_code.map_or_else(String::new, |c| c.to_string()),
                    duration_ms(l.duration_ms as f64),
                ]
            })
            .collect();
        let body = table(
            &["when", "result", "who", "from", "revision", "exit", "took"],
            &rows,
        );
        self.page(instance, "/fleet", &body)
    }

    fn secrets(&self) -> Rendered {
        let policy = match crate::secrets::policy::Policy::discover(&self.root) {
            Ok(policy) => policy,
            Err(error) => {
                return self.page(
                    "Secrets",
                    "/secrets",
                    &format!("<p class=\"empty\">{}</p>", escape(&error.to_string())),
                )
            }
        };
        let keys: Vec<Vec<String>> = policy
            .keys
            .iter()
            .map(|(name, public)| {
                vec![
                    escape(name),
                    format!(
                        "<code>{}</code>",
                        escape(&crate::secrets::policy::short(public))
                    ),
                ]
            })
            .collect();
        let rules: Vec<Vec<String>> = policy
            .rules
            .iter()
            .map(|rule| {
                vec![
                    escape(&rule.describe()),
                    escape(
                        &rule
                            .recipients
                            .iter()
                            .map(|r| policy.label(r))
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                ]
            })
            .collect();
        let files: Vec<Vec<String>> = crate::secrets::files::find(&policy.root.join("secrets"))
            .unwrap_or_default()
            .iter()
            .map(|path| {
                let shown = escape(&policy.relative(path));
                // Only the file's metadata and key names are read: values stay encrypted and unread.
                match crate::secrets::files::read(path) {
                    Ok(file) => vec![
                        shown,
                        crate::secrets::tree::leaf_paths(&file.tree)
                            .len()
                            .to_string(),
                        escape(
                            &file
                                .recipients()
                                .iter()
                                .map(|r| policy.label(r))
                                .collect::<Vec<_>>()
                                .join(", "),
                        ),
                        match policy.rule_for(path) {
                            Ok(rule) => escape(&rule.describe()),
                            Err(error) => format!(
                                "<span class=\"badge bad\">{}</span>",
                                escape(&error.to_string())
                            ),
                        },
                    ],
                    Err(error) => {
                        vec![shown, "–".into(), escape(&error.to_string()), String::new()]
                    }
                }
            })
            .collect();
        // `cairn secrets doctor` itself, which reports on keys and files without printing a value.
        let mut doctor = super::actions::cairn(self);
        doctor.args(["secrets", "doctor"]);
        let (_, doctor) = super::actions::capture(doctor);
        let body = format!(
            "<p>Names, rules and recipients from <code>{}</code>; never a value and never a private key.</p>\
             <h2>Files</h2>{}<h2>Rules</h2>{}<h2>People and hosts</h2>{}<h2>Doctor</h2><pre id=\"doctor\">{}</pre>",
            escape(&policy.relative(&policy.path)),
            table(&["file", "values", "recipients", "rule"], &files),
            table(&["rule", "recipients"], &rules),
            table(&["name", "public key"], &keys),
            escape(&strip_ansi(&doctor))
        );
        self.page("Secrets", "/secrets", &body)
    }

    fn plugins(&self) -> Rendered {
        let config = match self.load_config() {
            Ok(config) => config,
            Err(error) => return self.config_error("Plugins", "/plugins", &error),
        };
        let rows: Vec<Vec<String>> = config
            .plugins
            .iter()
            .map(|plugin| {
                let users: Vec<String> = config
                    .tasks
                    .iter()
                    .filter(|t| {
                        t.plugin.as_ref().is_some_and(|p| p.value == plugin.name)
                            || t.executor.as_ref().is_some_and(|p| p.value == plugin.name)
                    })
                    .map(|t| t.name.text.to_string())
                    .collect();
                let mut grants = Vec::new();
                for (what, granted) in [("hosts", &plugin.allow_hosts), ("env", &plugin.allow_env)]
                {
                    if !granted.is_empty() {
                        let names: Vec<&str> = granted.iter().map(|g| g.value.as_str()).collect();
                        grants.push(format!("{what}: {}", names.join(", ")));
                    }
                }
                if plugin.allow_clock {
                    grants.push("clock".into());
                }
                if !plugin.secrets.is_empty() {
                    grants.push(format!(
                        "secrets: {}",
                        plugin
                            .secrets
                            .iter()
                            .map(|(name, _)| name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                if plugin.events {
                    grants.push("run events".into());
                }
                if plugin.trust_full {
                    grants.push("trust = full".into());
                }
                let limits = [
                    plugin
                        .limits
                        .timeout
                        .map(|t| format!("time {}", format_duration(t))),
                    plugin
                        .limits
                        .memory
                        .map(|m| format!("memory {}", format_size(m))),
                    plugin.limits.fuel.map(|f| format!("fuel {f}")),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ");
                vec![
                    escape(&plugin.name),
                    format!("<code>{}</code>", escape(&plugin.source.value)),
                    plugin.sha256.as_ref().map_or_else(
                        || "<span class=\"badge bad\">not pinned</span>".into(),
                        |s| {
                            format!(
                                "<code>{}</code>",
                                escape(s.value.get(..16).unwrap_or(&s.value))
                            )
                        },
                    ),
                    escape(&if grants.is_empty() {
                        "nothing".into()
                    } else {
                        grants.join("; ")
                    }),
                    escape(&if limits.is_empty() {
                        "defaults".into()
                    } else {
                        limits
                    }),
                    escape(&users.join(", ")),
                ]
            })
            .collect();
        let body = table(
            &["plugin", "source", "sha256", "grants", "limits", "used by"],
            &rows,
        );
        self.page("Plugins", "/plugins", &body)
    }
}

/// One line of `.cairn/audit.log` as the Fleet view reads it.
#[derive(Debug, Deserialize)]
struct AuditEntry {
    time: String,
    user: String,
    host: String,
    revision: String,
    task: String,
    result: String,
    exit_code: Option<i32>,
    #[serde(default)]
    duration_ms: u64,
}

/// The task graph as inline SVG: tasks in columns by depth (what a task needs is to its left), each a link
/// to the task's page, so selecting one is following a link (keyboard included).
fn graph_svg(config: &Config) -> String {
    let names: Vec<&str> = config.tasks.iter().map(|t| t.name.text.as_str()).collect();
    let index: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let deps: Vec<Vec<usize>> = config
        .tasks
        .iter()
        .map(|t| {
            t.deps
                .iter()
                .filter_map(|d| index.get(d.text.as_str()).copied())
                .collect()
        })
        .collect();
    // Depth by longest path, iterating to a fixed point (bounded: tasks.toml has no cycles once loaded).
    let mut depth = vec![0usize; names.len()];
    for _ in 0..names.len().min(64) {
        let mut changed = false;
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                if depth[i] < depth[d] + 1 {
                    depth[i] = depth[d] + 1;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut rows_in_column: BTreeMap<usize, usize> = BTreeMap::new();
    let mut position = vec![(0usize, 0usize); names.len()];
    for (i, d) in depth.iter().enumerate() {
        let row = rows_in_column.entry(*d).or_insert(0);
        position[i] = (*d, *row);
        *row += 1;
    }
    let (column_width, row_height, box_width, box_height) = (190.0, 34.0, 170.0, 24.0);
    let columns = rows_in_column.len().max(1) as f64;
    let rows = rows_in_column.values().copied().max().unwrap_or(1) as f64;
    let width = columns * column_width;
    let height = rows * row_height + 10.0;
    let mut out = format!(
        "<figure class=\"graph\"><svg viewBox=\"0 0 {width} {height}\" width=\"{width}\" role=\"group\" \
         aria-label=\"task graph: each task after what it depends on\">"
    );
    let centre = |i: usize| {
        let (c, r) = position[i];
        (c as f64 * column_width + 5.0, r as f64 * row_height + 5.0)
    };
    for (i, ds) in deps.iter().enumerate() {
        let (x, y) = centre(i);
        for &d in ds {
            let (dx, dy) = centre(d);
            let _ = write!(
                out,
                "<line x1=\"{:.0}\" y1=\"{:.0}\" x2=\"{x:.0}\" y2=\"{:.0}\" class=\"edge\"/>",
                dx + box_width,
                dy + box_height / 2.0,
                y + box_height / 2.0
            );
        }
    }
    for (i, name) in names.iter().enumerate() {
        let (x, y) = centre(i);
        let shown: String = if name.chars().count() > 24 {
            name.chars().take(23).chain(std::iter::once('…')).collect()
        } else {
            (*name).to_owned()
        };
        let _ = write!(
            out,
            "<a href=\"/tasks/{}\" class=\"node\"><rect x=\"{x:.0}\" y=\"{y:.0}\" width=\"{box_width}\" \
             height=\"{box_height}\" rx=\"4\"/><text x=\"{:.0}\" y=\"{:.0}\">{}</text><title>{}</title></a>",
            path_segment(name),
            x + 8.0,
            y + 16.0,
            escape(&shown),
            escape(name)
        );
    }
    out.push_str("</svg></figure>");
    out
}

/// The task an instance label belongs to (`deploy:production[NIXY]` → `deploy:production`).
fn task_of(label: &str) -> &str {
    label.split('[').next().unwrap_or(label)
}

fn short_revision(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}

/// A URL without `user:password@`, for display.
fn strip_userinfo(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// miette's colours removed, for a `<pre>`.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_undoes_path_segment() {
        assert_eq!(
            html::percent_decode(&path_segment("deploy:production[NIXY]"), false),
            "deploy:production[NIXY]"
        );
        assert_eq!(html::percent_decode("a%2", false), "a%2");
    }

    #[test]
    fn credentials_in_a_remote_url_are_not_shown() {
        assert_eq!(
            strip_userinfo("https://user:pw@cache.example/x"),
            "https://cache.example/x"
        );
        assert_eq!(strip_userinfo("grpc://127.0.0.1:1"), "grpc://127.0.0.1:1");
    }
}
