//! The examples in the documentation are real: each tasks.toml shown is loaded by the real binary.

use crate::support::*;

/// The ```toml blocks of a Markdown file that look like a whole tasks.toml.
fn tasks_examples(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(_), "```") => {
                let block = current.take().expect("inside a block");
                if block.contains("[tasks.") {
                    blocks.push(block);
                }
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[test]
fn readme_tasks_toml_example_is_valid() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let examples = tasks_examples(&readme);
    assert!(!examples.is_empty(), "the README shows a tasks.toml");
    for example in examples {
        Test::new().tasks(&example).args(&["check"]).run().success();
    }
}

#[test]
fn caching_guide_remote_cache_example_is_valid() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/caching.md"))
        .expect("caching.md");
    let start = guide
        .find("```toml\n[remote_cache]")
        .expect("a [remote_cache] example");
    let block = &guide[start + "```toml\n".len()..];
    let block = &block[..block.find("```").expect("the block ends")];
    Test::new()
        .tasks(&format!("{block}\n[tasks.build]\nrun = \"true\"\n"))
        .args(&["check"])
        .run()
        .success();
}

#[test]
fn readme_example_deploys_and_validates_incrementally() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let example = tasks_examples(&readme).remove(0);
    let t = Test::new()
        .tasks(&example)
        .file("hosts/a.nix", "{ }\n")
        .args(&["run", "deploy:staging", "--yes"]);
    t.run()
        .success()
        .stdout_has("validate       | validating hosts/a.nix")
        .stdout_has("deploying staging");
}

#[test]
fn repository_tasks_toml_is_valid() {
    // In place: its params and matrices read modules/inventory.toml.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("check")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cairn runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn secrets_guide_tasks_toml_example_is_valid() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/secrets.md"))
        .expect("docs/secrets.md");
    let examples = tasks_examples(&guide);
    assert!(!examples.is_empty(), "the guide shows a tasks.toml");
    for example in examples {
        Test::new().tasks(&example).args(&["check"]).run().success();
    }
}

#[test]
fn plugins_guide_tasks_toml_example_is_valid() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/plugins.md"))
        .expect("docs/plugins.md");
    let examples = tasks_examples(&guide);
    assert!(!examples.is_empty(), "the guide shows a tasks.toml");
    for example in examples {
        Test::new().tasks(&example).args(&["check"]).run().success();
    }
}

/// Every `cairn …` command shown in a shell block (```sh, ```console, ```bash) of a Markdown file, as words.
fn shown_commands(markdown: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut in_shell = false;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if let Some(fence) = trimmed.strip_prefix("```") {
            in_shell = !in_shell && ["sh", "console", "bash"].contains(&fence.trim());
            continue;
        }
        if !in_shell {
            continue;
        }
        let line = trimmed.strip_prefix("$ ").unwrap_or(trimmed);
        for piece in line.split(['|', ';']).flat_map(|p| p.split("&&")) {
            let piece = piece
                .trim()
                .trim_start_matches("source <(")
                .trim_start_matches("$(");
            if !piece.starts_with("cairn ") {
                continue;
            }
            commands.push(words(piece));
        }
    }
    commands
}

/// Splits a command the way a shell would for these examples: quotes group, an unquoted `#` starts a comment.
fn words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for ch in command.chars() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(ch);
                started = true;
            }
            (None, '#') if !started => break,
            (None, ')') => {}
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            (None, c) => {
                current.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(current);
    }
    words
}

#[test]
fn every_cairn_command_in_the_guides_is_one_cairn_accepts() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for dir in ["docs", "docs/plugins"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("docs") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    let mut checked = 0;
    let mut rejected = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("guide");
        for command in shown_commands(&text) {
            checked += 1;
            if let Err(error) = cairn::cli::check_command_line(&command) {
                rejected.push(format!(
                    "{}: `{}`: {}",
                    file.strip_prefix(root).unwrap_or(file).display(),
                    command.join(" "),
                    error.lines().next().unwrap_or_default()
                ));
            }
        }
    }
    assert!(
        checked > 40,
        "only {checked} commands found: is the scan broken?"
    );
    assert!(rejected.is_empty(), "{}", rejected.join("\n"));
}

#[test]
fn the_command_scan_reads_pipes_comments_and_quotes() {
    let text = "```sh\n$ printf %s \"$T\" | cairn secrets set a.yaml key   # stdin\nsource <(cairn completions bash)\ncairn run 'deploy:production[NIXI]' --set nix=skip\n```\n```toml\ncairn = 1\n```\n";
    assert_eq!(
        shown_commands(text),
        [
            vec!["cairn", "secrets", "set", "a.yaml", "key"],
            vec!["cairn", "completions", "bash"],
            vec![
                "cairn",
                "run",
                "deploy:production[NIXI]",
                "--set",
                "nix=skip"
            ],
        ]
    );
    assert!(cairn::cli::check_command_line(["cairn", "run", "--no-such-flag"]).is_err());
}

/// Every test docs/security.md names as holding a promise exists: a promise whose test was renamed or removed
/// is a promise nobody checks.
#[test]
fn every_test_the_threat_model_names_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/security.md")).expect("security.md");
    let mut sources = String::new();
    for dir in ["tests", "src"] {
        for file in walk(&root.join(dir)) {
            if file.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(&file).expect("source"));
            }
        }
    }
    let named: Vec<&str> = page
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| {
            word.matches('_').count() >= 3
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    assert!(named.len() > 30, "the page names its tests: {named:?}");
    let missing: Vec<&&str> = named
        .iter()
        .filter(|name| !sources.contains(&format!("fn {name}(")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/security.md names tests that do not exist: {missing:?}"
    );
}

/// The module map in docs/contributing.md is the rule: each `src/` module imports (`crate::NAME`) only the modules
/// its row lists, so the dependencies keep pointing one way.
#[test]
fn every_module_imports_only_what_the_map_allows() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide =
        std::fs::read_to_string(root.join("docs/contributing.md")).expect("contributing.md");
    let mut allowed: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in guide.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (module, imports) = (cells[1].trim_matches('`'), cells[3]);
        let names = imports
            .split(',')
            .map(|n| n.trim().trim_matches('`').to_owned())
            .filter(|n| !n.is_empty() && n != "—")
            .collect();
        allowed.insert(module.to_owned(), names);
    }
    assert!(
        allowed.len() >= 10,
        "the map lists the modules: {allowed:?}"
    );
    let mut broken = Vec::new();
    for (module, may) in &allowed {
        let dir = root.join("src").join(module);
        let files = if dir.is_dir() {
            walk(&dir)
        } else {
            vec![root.join("src").join(format!("{module}.rs"))]
        };
        for file in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "rs"))
        {
            let text =
                std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for (at, _) in text.match_indices("crate::") {
                let name: String = text[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if name != *module && allowed.contains_key(&name) && !may.contains(&name) {
                    broken.push(format!("{} imports `{name}`", file.display()));
                }
            }
        }
    }
    broken.dedup();
    assert!(
        broken.is_empty(),
        "imports against docs/contributing.md's map:\n{}",
        broken.join("\n")
    );
}

#[test]
fn cairn_schema_prints_the_schema_the_repository_keeps_for_editors() {
    let run = Test::new().run_with(&["schema"]).success();
    let stored = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/tasks.schema.json"),
    )
    .expect("schema/tasks.schema.json");
    assert_eq!(run.stdout, stored);
    let schema: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    // The repository's own tasks.toml points editors at it.
    let tasks = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tasks.toml"),
    )
    .expect("tasks.toml");
    assert!(tasks.starts_with("#:schema ./schema/tasks.schema.json\n"));
}

#[test]
fn every_cairn_command_in_the_workflows_is_one_cairn_accepts() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    let mut rejected = Vec::new();
    for entry in std::fs::read_dir(root.join(".github/workflows")).expect("workflows") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("workflow");
        for line in text.lines() {
            let Some(run) = line
                .trim_start()
                .strip_prefix("- run: ")
                .or_else(|| line.trim_start().strip_prefix("run: "))
            else {
                continue;
            };
            // `target/release/cairn …` is the cairn the job just built.
            let Some(arguments) = run.trim().strip_prefix("target/release/cairn ") else {
                continue;
            };
            checked += 1;
            let command = words(&format!("cairn {arguments}"));
            if let Err(error) = cairn::cli::check_command_line(&command) {
                rejected.push(format!(
                    "{}: `{run}`: {}",
                    path.display(),
                    error.lines().next().unwrap_or_default()
                ));
            }
        }
    }
    assert!(
        checked >= 4,
        "only {checked} cairn commands found in the workflows"
    );
    assert!(rejected.is_empty(), "{}", rejected.join("\n"));
}
