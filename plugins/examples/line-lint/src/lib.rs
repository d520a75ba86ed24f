//! A task plugin: checks its input files for trailing whitespace, tab indentation, lines longer than
//! `config.max_line_length` (default 120) and a missing final newline. It sees only the files the task
//! declares as inputs (only the changed ones when the task is incremental).

use cairn_pdk::api::{
    Capability, Describe, Diagnostic, PluginError, Severity, TaskRequest, TaskResponse,
};
use cairn_pdk::{config, plugin};

fn describe() -> Describe {
    let mut describe =
        cairn_pdk::describe("line-lint", env!("CARGO_PKG_VERSION"), &[Capability::Task]);
    describe.description = "trailing whitespace, tabs, long lines, final newline".into();
    describe.config = vec![cairn_pdk::api::ConfigField {
        name: "max_line_length".into(),
        kind: cairn_pdk::api::FieldKind::Integer,
        required: false,
        description: "longest allowed line, in characters (default 120)".into(),
    }];
    describe
}

fn run(request: TaskRequest) -> Result<TaskResponse, PluginError> {
    let limit: usize = config::get("max_line_length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let mut diagnostics = Vec::new();
    for file in &request.files {
        let mut report = |line: usize, column: usize, severity, message: String| {
            diagnostics.push(Diagnostic {
                path: file.path.clone(),
                line: line as u32,
                column: column as u32,
                severity,
                message,
            });
        };
        for (index, line) in file.contents.lines().enumerate() {
            let trimmed = line.trim_end();
            if trimmed.len() != line.len() {
                report(
                    index + 1,
                    trimmed.chars().count() + 1,
                    Severity::Error,
                    "trailing whitespace".into(),
                );
            }
            if line.starts_with('\t') {
                report(
                    index + 1,
                    1,
                    Severity::Warning,
                    "indented with a tab".into(),
                );
            }
            let length = line.chars().count();
            if length > limit {
                report(
                    index + 1,
                    limit + 1,
                    Severity::Error,
                    format!("line is {length} characters long (limit {limit})"),
                );
            }
        }
        if !file.contents.is_empty() && !file.contents.ends_with('\n') {
            let lines = file.contents.lines().count().max(1);
            report(
                lines,
                1,
                Severity::Error,
                "no newline at the end of the file".into(),
            );
        }
    }
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let output = format!("checked {} file(s): {errors} error(s)", request.files.len());
    Ok(TaskResponse {
        status: i32::from(errors > 0),
        diagnostics,
        output,
    })
}

plugin! { describe: describe, task: run }

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_pdk::api::Reply;
    use cairn_pdk::testing;

    #[test]
    fn problems_are_reported_with_positions() {
        testing::set_config(&[("max_line_length", "10")]);
        let request = cairn_pdk::serde_json::json!({"task": "lint", "files": [
            {"path": "a.nix", "contents": "ok\nbad  \n\tx\nthis line is long\nend"}]});
        let Reply::Ok(response) = testing::call(run, &request) else {
            panic!()
        };
        let found: Vec<(u32, u32, &str)> = response
            .diagnostics
            .iter()
            .map(|d| (d.line, d.column, d.message.as_str()))
            .collect();
        assert_eq!(found[0], (2, 4, "trailing whitespace"));
        assert_eq!(found[1], (3, 1, "indented with a tab"));
        assert_eq!(found[2].0, 4);
        assert_eq!(found[3], (5, 1, "no newline at the end of the file"));
        assert_eq!(response.status, 1);
    }
}
