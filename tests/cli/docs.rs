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
