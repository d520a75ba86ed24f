//! The JSON Schema (draft 2020-12) of tasks.toml, for editors: taplo (VS Code's Even Better TOML, Helix,
//! Neovim) completes keys and flags mistakes as the file is typed.
//!
//! Keys come from the loader's own lists (a test holds the two equal), descriptions from the tables of
//! docs/tasks-toml.md, so the schema, the loader and the reference cannot drift apart. The schema checks what
//! a schema can: keys, types, enums, ranges and the syntax of durations and sizes. What needs the whole file
//! (a dependency that exists, a param named in the task's name, no cycle) stays the loader's: `cairn check`.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

/// Where the schema is kept in the repository, for the `#:schema` directive.
pub const SCHEMA_PATH: &str = "schema/tasks.schema.json";

/// The reference the descriptions are read from.
const REFERENCE: &str = include_str!("../../docs/tasks-toml.md");

/// A duration such as `"250ms"`, `"90s"` or `"1h30m"` (the loader trims spaces around it).
const DURATION: &str = r"^\s*([0-9]+(ms|s|m|h|d))+\s*$";

/// A size such as `"5GiB"` or `"500MB"`.
const SIZE: &str = r"^\s*[0-9]+\s*(B|KiB|MiB|GiB|TiB|KB|kB|MB|GB|TB)?\s*$";

/// Names vars and params may take.
const IDENTIFIER: &str = "^[A-Za-z_][A-Za-z0-9_-]*$";

/// The sections of the reference whose tables describe keys, by the heading they stand under.
const SECTIONS: [(&str, &str); 7] = [
    ("settings", "## `[settings]`"),
    ("task", "## `[tasks.NAME]`"),
    ("param", "### Pattern tasks and params"),
    ("query", "### Values from a data file"),
    ("plugin", "## `[plugins.NAME]`"),
    ("remote", "## `[remote_cache]`"),
    ("execution", "## `[remote_execution]`"),
];

/// Tables whose keys the reference describes one by one (`check.run`, `allow.hosts`): what the table itself is.
const GROUPS: [(&str, &str, &str); 6] = [
    (
        "task",
        "secrets",
        "Secrets decrypted for this task from a SOPS file: from, env, files, allow_envs",
    ),
    (
        "task",
        "check",
        "A health check run after the task succeeds: run, retries, interval",
    ),
    (
        "task",
        "confirm.question",
        "The question asked before the run starts",
    ),
    (
        "task",
        "confirm.when",
        "Ask only when the task's params take these values, e.g. { env = [\"production\"] }",
    ),
    (
        "plugin",
        "allow",
        "What the plugin may reach (nothing by default): hosts, env, clock",
    ),
    (
        "plugin",
        "limits",
        "Bounds on each call: timeout, memory, fuel",
    ),
];

/// `(section, key)` → the reference's words for it, with its default when the table gives one.
fn descriptions() -> HashMap<(&'static str, String), String> {
    let mut out = HashMap::new();
    let mut section = None;
    for line in REFERENCE.lines() {
        if line.starts_with('#') {
            section = SECTIONS
                .iter()
                .find(|(_, heading)| line.trim() == *heading)
                .map(|(name, _)| *name);
            continue;
        }
        let Some(section) = section else { continue };
        let Some(row) = line.strip_prefix("| `") else {
            continue;
        };
        let cells: Vec<&str> = row.split(" | ").map(str::trim).collect();
        let Some((key, _)) = cells[0].split_once('`') else {
            continue;
        };
        let meaning = cells.last().map_or("", |m| m.trim_end_matches('|').trim());
        let text = match cells.len() {
            4 if !matches!(cells[2], "—" | "none" | "required") => {
                format!("{meaning} (default: {})", cells[2].replace('`', ""))
            }
            _ => meaning.to_owned(),
        };
        out.insert((section, key.to_owned()), text.replace('`', ""));
    }
    out
}

struct Builder {
    descriptions: HashMap<(&'static str, String), String>,
}

impl Builder {
    /// `schema` with the reference's description of `section`'s `key` added (a table the reference
    /// describes key by key, such as `params.NAME`, gets that row's, or a summary of its keys).
    fn described(&self, section: &'static str, key: &str, mut schema: Value) -> Value {
        let text = self
            .descriptions
            .get(&(section, key.to_owned()))
            .or_else(|| self.descriptions.get(&(section, format!("{key}.NAME"))))
            .cloned()
            .or_else(|| {
                GROUPS
                    .iter()
                    .find(|(s, k, _)| *s == section && *k == key)
                    .map(|(_, _, text)| (*text).to_owned())
            });
        if let (Some(text), Some(object)) = (text, schema.as_object_mut()) {
            object.insert("description".into(), Value::String(text));
        }
        schema
    }

    /// A closed object: `keys` with their schemas, each described from `section` under `prefix` (`check.`).
    fn object(&self, section: &'static str, prefix: &str, keys: Vec<(&str, Value)>) -> Value {
        let properties: Map<String, Value> = keys
            .into_iter()
            .map(|(key, schema)| {
                let described = self.described(section, &format!("{prefix}{key}"), schema);
                (key.to_owned(), described)
            })
            .collect();
        json!({ "type": "object", "properties": properties, "additionalProperties": false })
    }
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn non_empty_string() -> Value {
    json!({ "type": "string", "minLength": 1 })
}

fn strings() -> Value {
    json!({ "type": "array", "items": { "type": "string" } })
}

fn boolean() -> Value {
    json!({ "type": "boolean" })
}

fn duration() -> Value {
    json!({ "type": "string", "pattern": DURATION })
}

fn size() -> Value {
    json!({ "type": "string", "pattern": SIZE })
}

fn table_of_strings() -> Value {
    json!({ "type": "object", "additionalProperties": { "type": "string" } })
}

/// The schema, as `cairn schema` prints it and schema/tasks.schema.json holds it.
pub fn schema() -> Value {
    let b = Builder {
        descriptions: descriptions(),
    };
    let query = b.object(
        "query",
        "",
        vec![
            ("from", non_empty_string()),
            ("key", non_empty_string()),
            ("where", non_empty_string()),
        ],
    );
    let query = {
        let mut query = query;
        query["required"] = json!(["from", "key"]);
        query
    };
    let values = json!({
        "oneOf": [
            { "type": "array", "items": non_empty_string(), "minItems": 1, "uniqueItems": true },
            query.clone(),
        ]
    });
    let param = b.object(
        "param",
        "",
        vec![
            ("values", values.clone()),
            ("default", string()),
            ("pattern", string()),
            ("description", string()),
        ],
    );
    let settings = b.object(
        "settings",
        "",
        vec![
            ("jobs", json!({ "type": "integer", "minimum": 1 })),
            (
                "shell",
                json!({ "type": "array", "items": non_empty_string(), "minItems": 1 }),
            ),
            ("kill_grace", duration()),
            ("cache_max_size", size()),
            ("cache_max_age", duration()),
        ],
    );
    let confirm = json!({
        "oneOf": [
            string(),
            boolean(),
            b.object("task", "confirm.", vec![
                ("question", string()),
                ("when", json!({ "type": "object", "additionalProperties": strings() })),
            ]),
        ]
    });
    let secrets = b.object(
        "task",
        "secrets.",
        vec![
            ("from", non_empty_string()),
            ("env", table_of_strings()),
            ("files", table_of_strings()),
            ("allow_envs", strings()),
        ],
    );
    let check = {
        let mut check = b.object(
            "task",
            "check.",
            vec![
                ("run", non_empty_string()),
                (
                    "retries",
                    json!({ "type": "integer", "minimum": 0, "maximum": 100 }),
                ),
                ("interval", duration()),
            ],
        );
        check["required"] = json!(["run"]);
        check
    };
    let mut task = b.object(
        "task",
        "",
        vec![
            ("description", string()),
            (
                "run",
                json!({ "oneOf": [string(), { "type": "array", "items": string(), "minItems": 1 }] }),
            ),
            ("deps", strings()),
            (
                "params",
                json!({ "type": "object", "propertyNames": { "pattern": IDENTIFIER }, "additionalProperties": param }),
            ),
            ("inputs", json!({ "type": "array", "items": non_empty_string() })),
            ("outputs", json!({ "type": "array", "items": non_empty_string() })),
            ("env", table_of_strings()),
            ("dir", string()),
            ("timeout", duration()),
            ("retries", json!({ "type": "integer", "minimum": 0, "maximum": 100 })),
            ("cache", boolean()),
            ("shell", json!({ "type": "array", "items": non_empty_string(), "minItems": 1 })),
            ("confirm", confirm),
            ("env_hash", strings()),
            ("env_pass", strings()),
            ("deps_strategy", json!({ "enum": ["key", "outputs"] })),
            ("incremental", boolean()),
            ("secrets", secrets),
            ("executor", non_empty_string()),
            ("plugin", non_empty_string()),
            ("lock", non_empty_string()),
            ("audit", boolean()),
            ("protected", boolean()),
            ("check", check),
            ("rollback", non_empty_string()),
            (
                "matrix",
                json!({ "type": "object", "propertyNames": { "pattern": IDENTIFIER }, "additionalProperties": values }),
            ),
            ("serial", boolean()),
            ("max_parallel", json!({ "type": "integer", "minimum": 1 })),
            ("remote", json!({ "enum": [true, false, "read-write", "read", "off"] })),
            ("service", boolean()),
            ("remote_execution", boolean()),
            ("platform", platform()),
        ],
    );
    // What the loader says about a task with nothing to do, and about a plugin task with commands too.
    task["anyOf"] = json!([
        { "required": ["run"] },
        { "required": ["deps"] },
        { "required": ["plugin"] },
    ]);
    task["not"] = json!({ "required": ["run", "plugin"] });

    let plugin = {
        let mut plugin = b.object(
            "plugin",
            "",
            vec![
                ("source", non_empty_string()),
                ("sha256", json!({ "type": "string", "pattern": "^[0-9a-fA-F]{64}$" })),
                ("built_by", non_empty_string()),
                (
                    "config",
                    json!({ "type": "object", "additionalProperties": { "type": ["string", "integer", "boolean"] } }),
                ),
                (
                    "allow",
                    b.object(
                        "plugin",
                        "allow.",
                        vec![
                            ("hosts", json!({ "type": "array", "items": { "type": "string", "pattern": "^[^/*:]+:[0-9]+$" } })),
                            ("env", strings()),
                            ("clock", boolean()),
                        ],
                    ),
                ),
                ("secrets", table_of_strings()),
                (
                    "limits",
                    b.object(
                        "plugin",
                        "limits.",
                        vec![
                            ("timeout", duration()),
                            ("memory", size()),
                            ("fuel", json!({ "type": "integer", "minimum": 1 })),
                        ],
                    ),
                ),
                ("events", boolean()),
                ("trust", json!({ "enum": ["sandbox", "full"] })),
            ],
        );
        plugin["required"] = json!(["source"]);
        plugin
    };

    let credential = json!({
        "oneOf": [
            { "type": "object", "properties": { "env": non_empty_string() }, "required": ["env"], "additionalProperties": false },
            { "type": "object", "properties": { "file": non_empty_string() }, "required": ["file"], "additionalProperties": false },
            {
                "type": "object",
                "properties": { "secret": non_empty_string(), "from": non_empty_string() },
                "required": ["secret", "from"],
                "additionalProperties": false
            },
        ]
    });
    let writer_key = json!({ "type": "string", "pattern": "^ed25519:" });
    let remote = b.object(
        "remote",
        "",
        vec![
            (
                "url",
                json!({ "type": "string", "pattern": "^(https?|grpcs?)://" }),
            ),
            ("mode", json!({ "enum": ["read", "read-write", "off"] })),
            ("token", credential.clone()),
            ("signing_key", credential.clone()),
            (
                "trusted_writers",
                json!({
                    "type": "array",
                    "items": {
                        "oneOf": [
                            writer_key.clone(),
                            {
                                "type": "object",
                                "properties": { "name": string(), "key": writer_key },
                                "required": ["key"],
                                "additionalProperties": false
                            },
                        ]
                    }
                }),
            ),
            ("timeout", duration()),
            ("ca_file", non_empty_string()),
        ],
    );

    let mut execution = b.object(
        "execution",
        "",
        vec![
            ("url", json!({ "type": "string", "pattern": "^grpcs?://" })),
            ("instance_name", string()),
            ("platform", platform()),
            (
                "jobs",
                json!({ "type": "integer", "minimum": 1, "maximum": 10000 }),
            ),
            ("timeout", duration()),
            ("token", credential),
            ("mode", json!({ "enum": ["auto", "required", "off"] })),
            ("ca_file", non_empty_string()),
        ],
    );
    execution["description"] = json!("An engine speaking REAPI v2 that runs tasks with declared inputs and outputs (docs/remote-execution.md)");

    let mut settings = settings;
    settings["description"] = json!("Settings of every run: jobs, shell, kill_grace, cache limits");
    let mut remote = remote;
    remote["description"] =
        json!("A Bazel HTTP remote cache shared by machines and CI, and whose signed results are trusted (docs/caching.md)");
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://cairn.invalid/schema/tasks.schema.json",
        "title": "cairn tasks.toml",
        "description": "Tasks, plugins, settings and the remote cache of a cairn repository (docs/tasks-toml.md). `cairn check` checks what a schema cannot: dependencies that exist, params, cycles.",
        "type": "object",
        "properties": {
            "settings": settings,
            "vars": {
                "description": "Names with values, used in tasks as {{name}}; `cairn run --set NAME=VALUE` overrides one",
                "type": "object",
                "propertyNames": { "pattern": IDENTIFIER, "not": { "enum": ["args", "changed"] } },
                "additionalProperties": { "type": ["string", "integer", "number", "boolean"] }
            },
            "tasks": {
                "description": "The tasks, by name; a name with {param} placeholders defines a family",
                "type": "object",
                "additionalProperties": task
            },
            "plugins": {
                "description": "WebAssembly plugins, by name (docs/plugins.md)",
                "type": "object",
                "additionalProperties": plugin
            },
            "remote_cache": remote,
            "remote_execution": execution,
        },
        "additionalProperties": false
    })
}

/// REAPI platform properties: names to string values (numbers and booleans are taken as their text).
fn platform() -> Value {
    json!({
        "type": "object",
        "additionalProperties": { "type": ["string", "integer", "number", "boolean"] }
    })
}

/// The schema as it is printed and stored: pretty, with a final newline.
pub fn schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use super::*;
    use crate::config::parse;
    use crate::config::Config;

    fn keys(schema: &Value) -> BTreeSet<String> {
        schema["properties"]
            .as_object()
            .expect("an object schema")
            .keys()
            .cloned()
            .collect()
    }

    fn set(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|k| (*k).to_owned()).collect()
    }

    #[test]
    fn the_schema_knows_exactly_the_keys_the_loader_knows() {
        let s = schema();
        let task = &s["properties"]["tasks"]["additionalProperties"];
        let plugin = &s["properties"]["plugins"]["additionalProperties"];
        assert_eq!(keys(&s), set(parse::TOP_KEYS));
        assert_eq!(
            keys(&s["properties"]["settings"]),
            set(parse::SETTINGS_KEYS)
        );
        assert_eq!(keys(task), set(parse::TASK_KEYS));
        assert_eq!(
            keys(&task["properties"]["params"]["additionalProperties"]),
            set(parse::PARAM_KEYS)
        );
        assert_eq!(keys(&task["properties"]["check"]), set(parse::CHECK_KEYS));
        assert_eq!(
            keys(&task["properties"]["secrets"]),
            set(parse::SECRETS_KEYS)
        );
        assert_eq!(
            keys(&task["properties"]["confirm"]["oneOf"][2]),
            set(parse::CONFIRM_KEYS)
        );
        assert_eq!(
            keys(&task["properties"]["matrix"]["additionalProperties"]["oneOf"][1]),
            set(parse::QUERY_KEYS)
        );
        assert_eq!(keys(plugin), set(parse::PLUGIN_KEYS));
        assert_eq!(keys(&plugin["properties"]["allow"]), set(parse::ALLOW_KEYS));
        assert_eq!(
            keys(&plugin["properties"]["limits"]),
            set(parse::LIMIT_KEYS)
        );
        let remote = &s["properties"]["remote_cache"];
        assert_eq!(keys(remote), set(parse::REMOTE_KEYS));
        assert_eq!(
            keys(&s["properties"]["remote_execution"]),
            set(parse::EXECUTION_KEYS)
        );
        let credentials: BTreeSet<String> = remote["properties"]["token"]["oneOf"]
            .as_array()
            .expect("alternatives")
            .iter()
            .flat_map(keys)
            .collect();
        assert_eq!(credentials, set(parse::CREDENTIAL_KEYS));
        assert_eq!(
            keys(&remote["properties"]["trusted_writers"]["items"]["oneOf"][1]),
            set(parse::WRITER_KEYS)
        );
    }

    #[test]
    fn every_key_has_the_references_description() {
        fn walk(schema: &Value, path: &str, missing: &mut Vec<String>) {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (key, value) in properties {
                    let here = format!("{path}.{key}");
                    // Credential alternatives and writer tables are described where they are used.
                    let inside_alternative = path.ends_with("oneOf");
                    if value.get("description").is_none() && !inside_alternative {
                        missing.push(here.clone());
                    }
                    walk(value, &here, missing);
                }
            }
            for nested in ["additionalProperties", "items"] {
                if let Some(inner) = schema.get(nested) {
                    walk(inner, &format!("{path}.{nested}"), missing);
                }
            }
            if let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) {
                for alternative in alternatives {
                    walk(alternative, &format!("{path}.oneOf"), missing);
                }
            }
        }
        let mut missing = Vec::new();
        walk(&schema(), "", &mut missing);
        assert_eq!(
            missing,
            Vec::<String>::new(),
            "keys docs/tasks-toml.md does not describe"
        );
    }

    fn validator() -> jsonschema::Validator {
        jsonschema::draft202012::new(&schema()).expect("the schema is a valid draft 2020-12 schema")
    }

    fn as_json(text: &str) -> Value {
        let value: toml::Value = toml::from_str(text).expect("valid TOML");
        serde_json::to_value(value).expect("TOML converts to JSON")
    }

    fn loads(text: &str) -> bool {
        let root = std::env::temp_dir().join("cairn-schema-tests-nonexistent");
        Config::parse("tasks.toml", text, root.join("tasks.toml"), root).is_ok()
    }

    fn repository() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn the_repositorys_tasks_toml_is_valid_against_the_schema() {
        let text = std::fs::read_to_string(repository().join("tasks.toml")).expect("tasks.toml");
        let validator = validator();
        let instance = as_json(&text);
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
    }

    #[test]
    fn every_example_in_the_docs_the_loader_accepts_the_schema_accepts() {
        let validator = validator();
        let mut checked = 0;
        for entry in std::fs::read_dir(repository().join("docs")).expect("docs/") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "md") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable");
            for block in text.split("```toml\n").skip(1) {
                let Some((example, _)) = block.split_once("```") else {
                    continue;
                };
                // Fragments (a single line of a task) and examples naming files that are not here are the
                // loader's to reject; every whole file it accepts must pass the schema too.
                if toml::from_str::<toml::Value>(example).is_err() || !loads(example) {
                    continue;
                }
                let instance = as_json(example);
                let errors: Vec<String> = validator
                    .iter_errors(&instance)
                    .map(|e| e.to_string())
                    .collect();
                assert!(
                    errors.is_empty(),
                    "{}:\n{example}\n{errors:#?}",
                    path.display()
                );
                checked += 1;
            }
        }
        assert!(checked >= 5, "only {checked} whole examples found in docs/");
    }

    /// Files the loader rejects for a reason a schema can express: the schema must reject them too.
    const INVALID: &[(&str, &str)] = &[
        ("an unknown table", "[setings]\njobs = 2\n"),
        (
            "a misspelt task key",
            "[tasks.a]\nrun = \"true\"\ndpes = []\n",
        ),
        (
            "retries as text",
            "[tasks.a]\nrun = \"true\"\nretries = \"three\"\n",
        ),
        (
            "retries over 100",
            "[tasks.a]\nrun = \"true\"\nretries = 101\n",
        ),
        (
            "a duration without a unit",
            "[tasks.a]\nrun = \"true\"\ntimeout = \"10\"\n",
        ),
        (
            "a duration as a number",
            "[tasks.a]\nrun = \"true\"\ntimeout = 10\n",
        ),
        (
            "an unknown deps_strategy",
            "[tasks.a]\nrun = \"true\"\ndeps_strategy = \"all\"\n",
        ),
        ("zero jobs", "[settings]\njobs = 0\n"),
        ("an empty shell", "[settings]\nshell = []\n"),
        ("a bad size", "[settings]\ncache_max_size = \"5 parsecs\"\n"),
        (
            "a task with nothing to do",
            "[tasks.a]\ndescription = \"nothing\"\n",
        ),
        (
            "a plugin task with a command",
            "[plugins.p]\nsource = \"p.wasm\"\n[tasks.a]\nplugin = \"p\"\nrun = \"true\"\n",
        ),
        ("run as a number", "[tasks.a]\nrun = 5\n"),
        (
            "an empty list of values",
            "[tasks.\"a:{x}\"]\nrun = \"true\"\nparams.x = { values = [] }\n",
        ),
        (
            "an unknown param key",
            "[tasks.\"a:{x}\"]\nrun = \"true\"\nparams.x = { value = [\"1\"] }\n",
        ),
        (
            "an unknown remote setting",
            "[tasks.a]\nrun = \"true\"\nremote = \"sometimes\"\n",
        ),
        (
            "zero max_parallel",
            "[tasks.a]\nrun = \"true\"\nmatrix.x = [\"1\"]\nmax_parallel = 0\n",
        ),
        (
            "a check without run",
            "[tasks.a]\nrun = \"true\"\ncheck = { retries = 2 }\n",
        ),
        ("a plugin without source", "[plugins.p]\nsha256 = \"00\"\n"),
        (
            "an unknown trust level",
            "[plugins.p]\nsource = \"p.wasm\"\ntrust = \"partial\"\n",
        ),
        (
            "a host without a port",
            "[plugins.p]\nsource = \"p.wasm\"\nallow.hosts = [\"vault.local\"]\n",
        ),
        (
            "a remote cache mode",
            "[remote_cache]\nurl = \"http://127.0.0.1:1\"\nmode = \"write\"\n",
        ),
        (
            "a credential written in the file",
            "[remote_cache]\nurl = \"http://127.0.0.1:1\"\ntoken = \"s3cret\"\n",
        ),
        (
            "a credential in two places",
            "[remote_cache]\nurl = \"http://127.0.0.1:1\"\ntoken = { env = \"A\", file = \"b\" }\n",
        ),
        ("a var named args", "[vars]\nargs = \"x\"\n"),
        (
            "confirm as a number",
            "[tasks.a]\nrun = \"true\"\nconfirm = 5\n",
        ),
    ];

    #[test]
    fn what_the_loader_rejects_for_a_reason_a_schema_can_express_the_schema_rejects() {
        let validator = validator();
        for (what, text) in INVALID {
            assert!(!loads(text), "the loader accepts {what}:\n{text}");
            assert!(
                !validator.is_valid(&as_json(text)),
                "the schema accepts {what}:\n{text}"
            );
        }
    }

    #[test]
    fn the_stored_schema_is_the_generated_one() {
        let stored = std::fs::read_to_string(repository().join(SCHEMA_PATH)).unwrap_or_default();
        assert!(
            stored == schema_text(),
            "{SCHEMA_PATH} is stale: run `cargo run -q -- schema > {SCHEMA_PATH}`"
        );
    }
}
