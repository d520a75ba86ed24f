//! A task plugin that checks `.nix` files the way Nix's parser does, without Nix: every syntax error (rnix),
//! plus what rnix accepts but `nix-instantiate --parse` rejects (undefined variables outside `with`, duplicate
//! attributes and `let` bindings, duplicate formals), and optionally the nixpkgs-fmt formatting of files that
//! parse. Positions are `line:column` with columns in bytes, as Nix counts them.

mod scope;

use cairn_pdk::api::{
    Capability, ConfigField, Describe, Diagnostic, FieldKind, PluginError, Severity, TaskRequest,
    TaskResponse,
};
use cairn_pdk::{config, plugin};
use rnix::{ParseError, Root};

fn describe() -> Describe {
    let mut describe = cairn_pdk::describe("nix", env!("CARGO_PKG_VERSION"), &[Capability::Task]);
    describe.description =
        "Nix syntax, scope and duplicate checks (rnix); nixpkgs-fmt formatting".into();
    describe.config = vec![ConfigField {
        name: "format".into(),
        kind: FieldKind::Boolean,
        required: false,
        description: "also require nixpkgs-fmt formatting (default false)".into(),
    }];
    describe
}

/// The nesting rnix's parser stops at (its own recursion guard).
const RNIX_DEPTH: usize = 512;

/// 1-based line and byte column of `offset` in `text`.
pub fn position(text: &str, offset: usize) -> (u32, u32) {
    cairn_pdk::line_column(text, offset)
}

fn syntax_message(error: &ParseError) -> (Option<usize>, String) {
    match error {
        ParseError::Unexpected(r) => (
            Some(r.start().into()),
            "syntax error: unexpected input".into(),
        ),
        ParseError::UnexpectedExtra(r) => (
            Some(r.start().into()),
            "syntax error: unexpected token after the expression".into(),
        ),
        ParseError::UnexpectedWanted(got, r, wanted) => {
            let wanted: Vec<String> = wanted
                .iter()
                .map(|k| format!("{k:?}").trim_start_matches("TOKEN_").to_lowercase())
                .collect();
            (
                Some(r.start().into()),
                format!(
                    "syntax error: unexpected {}, expected {}",
                    format!("{got:?}")
                        .trim_start_matches("TOKEN_")
                        .to_lowercase(),
                    wanted.join(" or ")
                ),
            )
        }
        ParseError::UnexpectedDoubleBind(r) => (
            Some(r.start().into()),
            "syntax error: a pattern is bound twice".into(),
        ),
        ParseError::DuplicatedArgs(r, name) => (
            Some(r.start().into()),
            format!("duplicate formal function argument `{name}`"),
        ),
        ParseError::UnexpectedEOF | ParseError::UnexpectedEOFWanted(_) => {
            (None, "syntax error: unexpected end of file".into())
        }
        _ => (None, "syntax error: the file cannot be parsed".into()),
    }
}

/// Every problem in one file.
pub fn check(path: &str, text: &str, format: bool) -> Vec<Diagnostic> {
    let parse = Root::parse(text);
    let mut out = Vec::new();
    let diagnostic = |offset: usize, message: String| {
        let (line, column) = position(text, offset);
        Diagnostic {
            path: path.to_string(),
            line,
            column,
            severity: Severity::Error,
            message,
        }
    };
    // rnix stops at 512 nested levels of some constructs (sets, lambdas, `let`), where Nix goes on: such a file
    // is valid as far as anyone can tell here, so it is reported as unchecked, not failed.
    if parse
        .errors()
        .iter()
        .any(|e| matches!(e, ParseError::RecursionLimitExceeded))
    {
        let mut d = diagnostic(
            text.trim_end().len(),
            format!(
                "not checked: the expression nests more than {RNIX_DEPTH} levels deep, past what this checker parses (Nix accepts it)"
            ),
        );
        d.severity = Severity::Warning;
        out.push(d);
        return out;
    }
    if let Some(first) = parse.errors().first() {
        // rnix recovers and reports the knock-on errors of the first one too; Nix stops at the first.
        let (offset, message) = syntax_message(first);
        let more = parse.errors().len() - 1;
        let suffix = if more > 0 {
            format!(" (+{more} more)")
        } else {
            String::new()
        };
        // Nix places an unexpected end of file just after the last token, not after trailing blank lines.
        let end = text.trim_end().len();
        out.push(diagnostic(
            offset.unwrap_or(end),
            format!("{message}{suffix}"),
        ));
        return out;
    }
    for (offset, message) in scope::check(&parse.syntax()) {
        out.push(diagnostic(offset, message));
    }
    if format && out.is_empty() {
        let formatted = nixpkgs_fmt::reformat_string(text);
        if formatted != text {
            let first = text
                .lines()
                .zip(formatted.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| text.lines().count().min(formatted.lines().count()));
            let mut d = diagnostic(0, "not formatted as nixpkgs-fmt formats it".into());
            d.line = first as u32 + 1;
            d.column = 1;
            out.push(d);
        }
    }
    out
}

fn run(request: TaskRequest) -> Result<TaskResponse, PluginError> {
    let format = config::get("format").as_deref() == Some("true");
    let mut diagnostics = Vec::new();
    let mut checked = 0;
    for file in request.files.iter().filter(|f| f.path.ends_with(".nix")) {
        checked += 1;
        diagnostics.extend(check(&file.path, &file.contents, format));
    }
    let bad = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.path.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    Ok(TaskResponse {
        status: i32::from(bad > 0),
        output: format!("nix: {checked} file(s) checked, {bad} with errors"),
        diagnostics,
    })
}

plugin! { describe: describe, task: run }

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<(u32, u32, String)> {
        check("f.nix", text, false)
            .into_iter()
            .map(|d| (d.line, d.column, d.message))
            .collect()
    }

    #[test]
    fn valid_files_have_no_errors() {
        for text in [
            "{ pkgs, lib ? pkgs.lib, ... }@args: with pkgs; { x = hello; y = args.z or 1; }",
            "let a = 1; b = a + c; c = 2; inherit (builtins) map; in map (x: x + b) [ a ]",
            "let x = { y = 1; }; in rec { a = 1; b = a; } // { inherit (x) y; x.y.z = 1; x.w = 2; }",
            "{ a = { b = 1; }; a.c = 2; \"s${toString 1}\" = 3; }",
            "let f = { x, y ? x }: x + y; in f { x = 1; }",
            "{ x = builtins.map; y = __curPos; z = true && false || null == null; }",
        ] {
            assert_eq!(errors(text), Vec::<(u32, u32, String)>::new(), "{text}");
        }
    }

    #[test]
    fn nix_parser_errors_are_found_with_byte_columns() {
        assert_eq!(errors("{ a = 1 }")[0].0, 1);
        assert!(errors("{ a = 1 }")[0].2.starts_with("syntax error"));
        assert_eq!(
            errors("let x = 1; in y"),
            vec![(1, 15, "undefined variable `y`".into())]
        );
        assert_eq!(
            errors("# é\n{ a = b; }")[0],
            (2, 7, "undefined variable `b`".into())
        );
        assert_eq!(
            errors("{ a = 1; a = 2; }"),
            vec![(1, 10, "attribute `a` already defined at 1:3".into())]
        );
        assert_eq!(
            errors("{ x = 1; x.y = 2; }")[0].2,
            "attribute `x.y` already defined at 1:3"
        );
        assert_eq!(
            errors("{ a, a }: a")[0].2,
            "duplicate formal function argument `a`"
        );
        assert_eq!(
            errors("let a = 1; a = 2; in a")[0].2,
            "attribute `a` already defined at 1:5"
        );
        assert!(errors("with import <nixpkgs> {}; undefinedButOk").is_empty());
    }

    /// Each case as `nix-instantiate --parse` (Nix 2.8) answers it: no error, or the first error's line:column
    /// and message (Nix quotes names with '…', the plugin with `…`).
    #[test]
    fn attribute_sets_merge_and_clash_as_nix_says() {
        let valid = [
            "{ a = { x = 1; }; a = { y = 2; }; }",
            "rec { a = rec { x = 1; }; a.y = x; }",
            "{ a.b = 1; a = { c = 2; }; }",
            "let a = { b = 1; }; a.c = 2; in a",
            "{ a = rec { b = 1; }; a.c = 2; a.d.e = 3; }",
            "{ a.b.c = 1; a.b.d = 2; a.e = 3; }",
            "{ ${x} = 1; ${x} = 2; }",
            "rec { a = rec { x = 1; }; a.y = x; a.z = y; }",
            "{ a = rec { x = 1; }; a.y = x; }",
        ];
        for text in valid {
            let found = errors(&text.replace("${x}", "${toString 1}"));
            assert_eq!(found, Vec::<(u32, u32, String)>::new(), "{text}");
        }
        let invalid = [
            (
                "{ a = 1; a.b = 2; }",
                1,
                10,
                "attribute `a.b` already defined at 1:3",
            ),
            (
                "{ a = { x = 1; }; a = { x = 2; }; }",
                1,
                9,
                "attribute `x` already defined at 1:25",
            ),
            (
                "{ a = { x.y = 1; }; a = { x.z = 2; }; }",
                1,
                9,
                "attribute `x` already defined at 1:27",
            ),
            (
                "{ a = { b = 1; }; a = { b.c = 2; }; }",
                1,
                9,
                "attribute `b` already defined at 1:25",
            ),
            (
                "{ a.b = { c = 1; }; a.b = { c = 2; }; }",
                1,
                11,
                "attribute `c` already defined at 1:29",
            ),
            (
                "{ a = 1; ${\"a\"} = 2; }",
                1,
                10,
                "attribute `a` already defined at 1:3",
            ),
            (
                "{ \"a\" = 1; a = 2; }",
                1,
                12,
                "attribute `a` already defined at 1:3",
            ),
            (
                "{ a.${\"b\"} = 1; a.b = 2; }",
                1,
                17,
                "attribute `a.b` already defined at 1:3",
            ),
            (
                "{ inherit a; a = 1; }",
                1,
                14,
                "attribute `a` already defined at 1:10",
            ),
            (
                "{ inherit (x) a; a = 1; }",
                1,
                18,
                "attribute `a` already defined at 1:14",
            ),
            (
                "{ a = 1;  inherit   a; }",
                1,
                18,
                "attribute `a` already defined at 1:3",
            ),
            (
                "{ inherit a a; }",
                1,
                10,
                "attribute `a` already defined at 1:10",
            ),
            (
                "{ inherit a; a.b = 1; }",
                1,
                14,
                "attribute `a.b` already defined at 1:10",
            ),
            (
                "{ b = c; a = 1; a = 2; }",
                1,
                17,
                "attribute `a` already defined at 1:10",
            ),
        ];
        for (text, line, column, message) in invalid {
            let found = errors(text);
            assert_eq!(
                found.first(),
                Some(&(line, column, message.to_string())),
                "{text}: {found:?}"
            );
        }
        assert_eq!(
            errors("({ a }@a: a)")[0].2,
            "duplicate formal function argument `a`"
        );
    }

    #[test]
    fn formatting_is_checked_only_when_asked_and_only_on_files_that_parse() {
        let messy = "{a=1;\n   b=2;}\n";
        assert!(check("f.nix", messy, false).is_empty());
        let found = check("f.nix", messy, true);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].message, "not formatted as nixpkgs-fmt formats it");
        let tidy = nixpkgs_fmt::reformat_string(messy);
        assert!(check("f.nix", &tidy, true).is_empty());
        assert!(check("f.nix", "{ a = 1 }", true)[0]
            .message
            .starts_with("syntax error"));
    }
}
