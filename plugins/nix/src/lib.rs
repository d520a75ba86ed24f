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

/// A token as Nix's parser names it in its messages (`'}'`, `IN`, `ID`, …).
fn nix_token(kind: rnix::SyntaxKind) -> String {
    let debug = format!("{kind:?}");
    let name = match debug.as_str() {
        "TOKEN_L_BRACE" => "'{'",
        "TOKEN_R_BRACE" | "TOKEN_INTERPOL_END" => "'}'",
        "TOKEN_L_BRACK" => "'['",
        "TOKEN_R_BRACK" => "']'",
        "TOKEN_L_PAREN" => "'('",
        "TOKEN_R_PAREN" => "')'",
        "TOKEN_SEMICOLON" => "';'",
        "TOKEN_ASSIGN" => "'='",
        "TOKEN_COLON" => "':'",
        "TOKEN_COMMA" => "','",
        "TOKEN_DOT" => "'.'",
        "TOKEN_QUESTION" => "'?'",
        "TOKEN_AT" => "'@'",
        "TOKEN_STRING_START" | "TOKEN_STRING_END" => "'\"'",
        "TOKEN_INTERPOL_START" => "DOLLAR_CURLY",
        "TOKEN_ELLIPSIS" => "ELLIPSIS",
        "TOKEN_IDENT" => "ID",
        "TOKEN_OR" => "OR_KW",
        "TOKEN_INTEGER" => "INT",
        "TOKEN_FLOAT" => "FLOAT",
        "TOKEN_PATH" => "PATH",
        "TOKEN_URI" => "URI",
        "TOKEN_ERROR" => "invalid token",
        other => {
            // Keywords (`TOKEN_IN` → `IN`) and the rest by rnix's name.
            return other.trim_start_matches("TOKEN_").to_string();
        }
    };
    name.to_string()
}

/// `, expecting X` when the parser wanted one thing, as Nix says it; nothing when it listed several, since
/// rnix's list and Nix's differ.
fn expecting(wanted: &[rnix::SyntaxKind]) -> String {
    match wanted {
        [only] => format!(", expecting {}", nix_token(*only)),
        _ => String::new(),
    }
}

/// Where a syntax error is, when rnix gives a range, and what it is, in Nix's words.
fn syntax_message(error: &ParseError) -> (Option<usize>, String) {
    match error {
        ParseError::Unexpected(r) => (
            Some(r.start().into()),
            "syntax error, unexpected input".into(),
        ),
        ParseError::UnexpectedExtra(r) => (
            Some(r.start().into()),
            "syntax error, unexpected input after the expression, expecting end of file".into(),
        ),
        ParseError::UnexpectedWanted(got, r, wanted) => (
            Some(r.start().into()),
            format!(
                "syntax error, unexpected {}{}",
                nix_token(*got),
                expecting(wanted)
            ),
        ),
        ParseError::UnexpectedDoubleBind(r) => (
            Some(r.start().into()),
            "syntax error, the pattern is bound twice".into(),
        ),
        ParseError::DuplicatedArgs(r, name) => (
            Some(r.start().into()),
            format!("duplicate formal function argument `{name}`"),
        ),
        ParseError::UnexpectedEOF => (None, "syntax error, unexpected end of file".into()),
        ParseError::UnexpectedEOFWanted(wanted) => (
            None,
            format!("syntax error, unexpected end of file{}", expecting(wanted)),
        ),
        _ => (None, "syntax error, the file cannot be parsed".into()),
    }
}

/// A string left open runs to the end of the file: rnix reports an invalid token there, Nix an unexpected end
/// of file at the string's content (after `''` and the blanks and newline that may follow it, which its lexer
/// takes as part of the opener).
fn unterminated_string(text: &str, error: &ParseError) -> Option<(Option<usize>, String)> {
    let ParseError::UnexpectedWanted(got, range, _) = error else {
        return None;
    };
    if format!("{got:?}") != "TOKEN_ERROR" || usize::from(range.end()) < text.trim_end().len() {
        return None;
    }
    let start = usize::from(range.start());
    let before = &text[..start];
    let (at, expecting) = if before.ends_with("''") {
        let rest = &text[start..];
        let blanks = rest.len() - rest.trim_start_matches(' ').len();
        let skip = if rest[blanks..].starts_with('\n') {
            blanks + 1
        } else {
            0
        };
        (start + skip, "")
    } else if before.ends_with('"') {
        (start, ", expecting '\"'")
    } else {
        return None;
    };
    Some((
        Some(at),
        format!("syntax error, unexpected end of file{expecting}"),
    ))
}

/// Where Nix places an unexpected end of file: at the start of the last thing its lexer matched, which may be
/// a token, a comment or a run of blanks (so after `;` and a newline it is the newline's place).
fn last_token_start(root: &rnix::SyntaxNode) -> Option<usize> {
    root.last_token()
        .map(|t| usize::from(t.text_range().start()))
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
        let (offset, message) = unterminated_string(text, first).unwrap_or((offset, message));
        let at = offset
            .or_else(|| last_token_start(&parse.syntax()))
            .unwrap_or(0);
        out.push(diagnostic(at, format!("{message}{suffix}")));
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

    /// Syntax errors as `nix-instantiate --parse` (Nix 2.8) reports them: line:column and message (the plugin
    /// may add `(+N more)`, Nix stops at the first). Where rnix's list of expected tokens is not Nix's, the
    /// plugin leaves the list out rather than print another.
    #[test]
    fn syntax_errors_are_placed_and_worded_as_nix_does() {
        let cases = [
            ("{ a = 1;", 1, 8, "syntax error, unexpected end of file"),
            (
                "{ a = ''\n  unterminated",
                2,
                1,
                "syntax error, unexpected end of file",
            ),
            (
                "{ \u{e9} = 1; x = y; }",
                1,
                3,
                "syntax error, unexpected invalid token",
            ),
            (
                "{ a = 1 }",
                1,
                9,
                "syntax error, unexpected '}', expecting ';'",
            ),
            ("[ 1 2", 1, 5, "syntax error, unexpected end of file"),
            (
                "let a = 1 in a",
                1,
                11,
                "syntax error, unexpected IN, expecting ';'",
            ),
            (
                "{ a = \"x",
                1,
                8,
                "syntax error, unexpected end of file, expecting '\"'",
            ),
            ("f (x", 1, 4, "syntax error, unexpected end of file"),
            ("{ a = 1; b = 2;; }", 1, 16, "syntax error, unexpected ';'"),
            ("{ a.b. = 1; }", 1, 8, "syntax error, unexpected '='"),
            ("x:", 1, 2, "syntax error, unexpected end of file"),
            (
                "if a then b",
                1,
                11,
                "syntax error, unexpected end of file, expecting ELSE",
            ),
            ("\"${\"", 1, 4, "syntax error, unexpected end of file"),
            (
                "assert true;",
                1,
                12,
                "syntax error, unexpected end of file",
            ),
            (
                "{ a = 1;\n# a comment after the last token\n",
                2,
                33,
                "syntax error, unexpected end of file",
            ),
            ("{ a = 1;\n", 1, 9, "syntax error, unexpected end of file"),
            (
                "{ a = 1; /* c */",
                1,
                10,
                "syntax error, unexpected end of file",
            ),
            (
                "{ a = 1; /* c */ \n",
                1,
                17,
                "syntax error, unexpected end of file",
            ),
            ("{\ta = b; }", 1, 7, "undefined variable `b`"),
            (
                "{ a = \"\u{e9}\"; b = c; }",
                1,
                17,
                "undefined variable `c`",
            ),
        ];
        for (text, line, column, message) in cases {
            let found = errors(text);
            let first = found
                .first()
                .map(|(l, c, m)| (*l, *c, m.split(" (+").next().unwrap_or(m).to_string()));
            assert_eq!(first, Some((line, column, message.to_string())), "{text:?}");
        }
        for valid in [
            "{ a = 1; }\n# trailing comment",
            "{ inherit; }",
            "{ a = 1; }\n\n\n",
        ] {
            assert!(errors(valid).is_empty(), "{valid:?}");
        }
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
