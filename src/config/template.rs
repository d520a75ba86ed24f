//! `{{name}}` interpolation, parsed once at load time into literal text and resolved references.

use std::ops::Range;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text copied as it is (kept inline up to 24 bytes: most literals are short, and a large tasks.toml
    /// holds every one of them).
    Literal(compact_str::CompactString),
    /// A `[vars]` entry, by index into `Config::vars`.
    Var(usize),
    /// A param of the task, by index into `TaskDef::params`.
    Param(usize),
    /// `{{args}}`: the shell-quoted `-- ARGS` of the run, when the task is a target.
    Args,
    /// `{{changed}}`: the quoted input files that changed since the last success (incremental tasks).
    Changed,
    /// `{{param.field}}`: a fact of the data-file entry a param's value names (`{{host.users}}`), by param
    /// index, with each value's items; a list gives one pattern per item (only `inputs` and `outputs`).
    Field {
        /// The param, by index into `TaskDef::params`.
        param: usize,
        /// The field's items for each value of the param (a value missing here has none).
        items: std::sync::Arc<std::collections::BTreeMap<String, Vec<String>>>,
    },
}

/// A string with its references resolved; rendering never parses again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// A piece found by [`scan`], before its name is resolved.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Plain text.
    Text(String),
    /// A reference, with its byte range inside the string.
    Name(String, Range<usize>),
}

/// Why a string is not a well-formed template, with the byte range at fault.
#[derive(Debug, PartialEq, Eq)]
pub struct ScanError {
    /// What is wrong.
    pub message: String,
    /// Where, inside the string.
    pub range: Range<usize>,
}

/// The name a template uses for the run's `-- ARGS`.
pub const ARGS_NAME: &str = "args";

/// The name an incremental task's template uses for its changed input files.
pub const CHANGED_NAME: &str = "changed";

/// Names cairn fills in itself, which vars and params cannot take.
pub const RESERVED_NAMES: [&str; 2] = [ARGS_NAME, CHANGED_NAME];

/// Splits `text` into literal text and `{{name}}` references. `{{{{` stands for a literal `{{`. With
/// `single_brace`, `{name}` is a reference too (dependency strings use it to pass a param along).
pub fn scan(text: &str, single_brace: bool) -> Result<Vec<Piece>, ScanError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if text[i..].starts_with("{{{{") {
            literal.push_str("{{");
            i += 4;
        } else if text[i..].starts_with("{{") {
            let Some(close) = text[i + 2..].find("}}") else {
                return Err(ScanError {
                    message: "`{{` is never closed by `}}`".into(),
                    range: i..text.len(),
                });
            };
            let end = i + 2 + close + 2;
            let name = text[i + 2..i + 2 + close].trim();
            check_name(name, i..end)?;
            flush(&mut pieces, &mut literal);
            pieces.push(Piece::Name(name.to_owned(), i..end));
            i = end;
        } else if single_brace && bytes[i] == b'{' {
            let Some(close) = text[i + 1..].find('}') else {
                return Err(ScanError {
                    message: "`{` is never closed by `}`".into(),
                    range: i..text.len(),
                });
            };
            let end = i + 1 + close + 1;
            let name = text[i + 1..i + 1 + close].trim();
            check_name(name, i..end)?;
            flush(&mut pieces, &mut literal);
            pieces.push(Piece::Name(name.to_owned(), i..end));
            i = end;
        } else {
            let ch = text[i..]
                .chars()
                .next()
                .expect("i is on a char boundary below len");
            literal.push(ch);
            i += ch.len_utf8();
        }
    }
    flush(&mut pieces, &mut literal);
    Ok(pieces)
}

fn flush(pieces: &mut Vec<Piece>, literal: &mut String) {
    if !literal.is_empty() {
        pieces.push(Piece::Text(std::mem::take(literal)));
    }
}

fn check_name(name: &str, range: Range<usize>) -> Result<(), ScanError> {
    let dotted = name
        .split_once('.')
        .is_some_and(|(param, field)| is_identifier(param) && is_identifier(field));
    if is_identifier(name) || dotted {
        Ok(())
    } else {
        Err(ScanError {
            message: if name.is_empty() {
                "empty `{{ }}`: expected a var or param name inside".into()
            } else {
                format!("`{name}` is not a name: use letters, digits, `_` and `-`")
            },
            range,
        })
    }
}

/// Whether `name` can be used as a var or param name.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Template {
    /// A template of resolved parts.
    pub fn new(parts: Vec<Part>) -> Self {
        Template { parts }
    }

    /// A template that is only literal text.
    pub fn literal(text: impl Into<compact_str::CompactString>) -> Self {
        Template {
            parts: vec![Part::Literal(text.into())],
        }
    }

    /// The parts in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Whether the template places the run's `-- ARGS` itself.
    pub fn uses_args(&self) -> bool {
        self.parts.contains(&Part::Args)
    }

    /// Whether the template refers to any param (so its value differs between instances).
    pub fn uses_params(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Param(_)))
    }

    /// Renders the template with the given var values, param values and quoted args.
    pub fn render(&self, vars: &[String], params: &[String], args: &str) -> String {
        self.render_with_slots(vars, params, args, &|_| None).0
    }

    /// Renders like [`Template::render`], and returns where `{{changed}}` stood in the result, so the list of
    /// changed files can be put there when the task runs, without parsing the text again. A param for which
    /// `by_reference` names an environment variable is not interpolated: a reference to that variable is put
    /// where it stands in a POSIX shell command (`"${VAR}"` outside quotes, `${VAR}` inside `"…"`, closed and
    /// reopened inside `'…'`), so the shell substitutes the value and never reads it as code, whatever it holds
    /// and wherever it stands (a command substitution, a here-document).
    pub fn render_with_slots(
        &self,
        vars: &[String],
        params: &[String],
        args: &str,
        by_reference: &dyn Fn(usize) -> Option<String>,
    ) -> (String, Vec<usize>) {
        let mut out = String::new();
        let mut slots = Vec::new();
        // Where the shell stands matters only for a param passed by reference: most lines have none, and reading
        // every rendered byte through the shell's grammar was a tenth of planning a large graph.
        let by_reference_here = self
            .parts
            .iter()
            .any(|p| matches!(p, Part::Param(i) if by_reference(*i).is_some()));
        let mut context = by_reference_here.then(ShellContext::default);
        let push = |out: &mut String, context: &mut Option<ShellContext>, text: &str| {
            if let Some(context) = context {
                context.feed(text);
            }
            out.push_str(text);
        };
        for part in &self.parts {
            match part {
                Part::Literal(text) => push(&mut out, &mut context, text),
                Part::Var(i) => push(&mut out, &mut context, &vars[*i]),
                Part::Param(i) => match (by_reference(*i), context.as_ref()) {
                    (Some(variable), Some(shell)) => out.push_str(&shell.reference(&variable)),
                    _ => push(&mut out, &mut context, &params[*i]),
                },
                Part::Args => push(&mut out, &mut context, args),
                Part::Changed => slots.push(out.len()),
                Part::Field { param, items } => {
                    let joined = items.get(&params[*param]).map(|i| i.join(" "));
                    push(&mut out, &mut context, joined.as_deref().unwrap_or(""));
                }
            }
        }
        (out, slots)
    }

    /// Renders a glob pattern: one result, or one per combination of items when it names list fields
    /// (`modules/home/{{host.users}}.nix` → one pattern per user); none when a field has no item.
    pub fn render_patterns(&self, vars: &[String], params: &[String]) -> Vec<String> {
        let mut out = vec![String::new()];
        for part in &self.parts {
            let pieces: Vec<&str> = match part {
                Part::Literal(text) => vec![text.as_str()],
                Part::Var(i) => vec![&vars[*i]],
                Part::Param(i) => vec![&params[*i]],
                Part::Field { param, items } => items
                    .get(&params[*param])
                    .map(|i| i.iter().map(String::as_str).collect())
                    .unwrap_or_default(),
                Part::Args | Part::Changed => vec![""],
            };
            out = match pieces.as_slice() {
                [one] => {
                    out.iter_mut().for_each(|o| o.push_str(one));
                    out
                }
                many => out
                    .iter()
                    .flat_map(|o| many.iter().map(move |p| format!("{o}{p}")))
                    .collect(),
            };
        }
        out
    }
}

/// One level of a POSIX shell command being read: outside quotes (at the top, or inside `$(…)` or backticks),
/// inside single quotes, or inside double quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// Outside quotes; `parens` counts the `(` opened inside a `$(…)`, so its own `)` is found.
    Plain {
        parens: u32,
        substitution: bool,
    },
    Single,
    Double,
    Backtick,
}

/// Where the shell's reader stands after some text: a stack of frames and whether a backslash escapes the
/// next character.
#[derive(Debug, Clone)]
struct ShellContext {
    frames: Vec<Frame>,
    escaped: bool,
    dollar: bool,
}

impl Default for ShellContext {
    fn default() -> ShellContext {
        ShellContext {
            frames: vec![Frame::Plain {
                parens: 0,
                substitution: false,
            }],
            escaped: false,
            dollar: false,
        }
    }
}

impl ShellContext {
    fn top(&self) -> Frame {
        *self
            .frames
            .last()
            .expect("the bottom frame is never popped")
    }

    fn pop(&mut self) {
        if self.frames.len() > 1 {
            self.frames.pop();
        }
    }

    fn feed(&mut self, text: &str) {
        for c in text.chars() {
            let after_dollar = std::mem::take(&mut self.dollar);
            if self.escaped {
                self.escaped = false;
                continue;
            }
            match (self.top(), c) {
                (Frame::Single, '\'') => self.pop(),
                (Frame::Single, _) => {}
                (_, '\\') => self.escaped = true,
                (Frame::Double, '"') => self.pop(),
                (Frame::Plain { .. }, '"') | (Frame::Backtick, '"') => {
                    self.frames.push(Frame::Double)
                }
                (Frame::Plain { .. }, '\'') | (Frame::Backtick, '\'') => {
                    self.frames.push(Frame::Single)
                }
                (Frame::Backtick, '`') => self.pop(),
                (_, '`') => self.frames.push(Frame::Backtick),
                (_, '$') => self.dollar = true,
                (_, '(') if after_dollar => self.frames.push(Frame::Plain {
                    parens: 0,
                    substitution: true,
                }),
                (
                    Frame::Plain {
                        parens,
                        substitution,
                    },
                    '(',
                ) => {
                    self.pop();
                    self.frames.push(Frame::Plain {
                        parens: parens + 1,
                        substitution,
                    });
                }
                (
                    Frame::Plain {
                        parens: 0,
                        substitution: true,
                    },
                    ')',
                ) => self.pop(),
                (
                    Frame::Plain {
                        parens,
                        substitution,
                    },
                    ')',
                ) => {
                    self.pop();
                    self.frames.push(Frame::Plain {
                        parens: parens.saturating_sub(1),
                        substitution,
                    });
                }
                _ => {}
            }
        }
    }

    /// A reference to the environment variable `variable` that, here, the shell expands to exactly its value.
    fn reference(&self, variable: &str) -> String {
        match self.top() {
            Frame::Double => format!("${{{variable}}}"),
            Frame::Single => format!("'\"${{{variable}}}\"'"),
            Frame::Plain { .. } | Frame::Backtick => format!("\"${{{variable}}}\""),
        }
    }
}

/// Quotes `arg` for a POSIX shell, leaving words that need no quoting as they are.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_field_gives_one_pattern_per_item_and_a_missing_one_none() {
        let items = std::sync::Arc::new(
            [
                (
                    "NIXY".to_owned(),
                    vec!["alex".to_owned(), "susu".to_owned()],
                ),
                ("NIXI".to_owned(), vec!["alex".to_owned()]),
            ]
            .into_iter()
            .collect(),
        );
        let template = Template::new(vec![
            Part::Literal("modules/".into()),
            Part::Param(0),
            Part::Literal("/".into()),
            Part::Field { param: 0, items },
            Part::Literal(".nix".into()),
        ]);
        assert_eq!(
            template.render_patterns(&[], &["NIXY".into()]),
            ["modules/NIXY/alex.nix", "modules/NIXY/susu.nix"]
        );
        assert_eq!(
            template.render_patterns(&[], &["NIXI".into()]),
            ["modules/NIXI/alex.nix"]
        );
        assert!(template.render_patterns(&[], &["OTHER".into()]).is_empty());
    }

    #[test]
    fn a_dotted_name_scans_as_one_reference() {
        let pieces = scan("{{host.users}}", false).expect("valid");
        assert_eq!(pieces, vec![Piece::Name("host.users".into(), 0..14)]);
        assert!(scan("{{host.}}", false).is_err());
        assert!(scan("{{.users}}", false).is_err());
    }

    #[test]
    fn scans_names_and_text() {
        let pieces = scan("echo {{ flake }}!", false).expect("valid");
        assert_eq!(
            pieces,
            vec![
                Piece::Text("echo ".into()),
                Piece::Name("flake".into(), 5..16),
                Piece::Text("!".into()),
            ]
        );
    }

    #[test]
    fn quadruple_brace_is_literal() {
        let pieces = scan("a {{{{b", false).expect("valid");
        assert_eq!(pieces, vec![Piece::Text("a {{b".into())]);
    }

    #[test]
    fn single_brace_only_in_dependency_mode() {
        assert_eq!(
            scan("x:{env}", false).expect("valid"),
            vec![Piece::Text("x:{env}".into())]
        );
        assert_eq!(
            scan("x:{env}", true).expect("valid"),
            vec![Piece::Text("x:".into()), Piece::Name("env".into(), 2..7)]
        );
    }

    #[test]
    fn unclosed_reference_is_an_error() {
        let err = scan("echo {{x", false).expect_err("unclosed");
        assert_eq!(err.range, 5..8);
    }

    #[test]
    fn renders_all_parts() {
        let t = Template::new(vec![
            Part::Literal("deploy ".into()),
            Part::Param(0),
            Part::Literal(" ".into()),
            Part::Var(0),
            Part::Literal(" ".into()),
            Part::Args,
        ]);
        assert_eq!(
            t.render(&["v".into()], &["prod".into()], "--x"),
            "deploy prod v --x"
        );
    }

    #[test]
    fn a_param_by_reference_is_data_wherever_it_stands() {
        let parts = |before: &str, after: &str| {
            Template::new(vec![
                Part::Literal(before.into()),
                Part::Param(0),
                Part::Literal(after.into()),
            ])
        };
        let values = ["x; id".to_owned()];
        let render = |t: &Template| {
            t.render_with_slots(&[], &values, "", &|_| Some("CAIRN_PARAM_V".into()))
                .0
        };
        assert_eq!(render(&parts("echo ", "")), r#"echo "${CAIRN_PARAM_V}""#);
        assert_eq!(
            render(&parts("echo '", "'")),
            r#"echo ''"${CAIRN_PARAM_V}"''"#
        );
        assert_eq!(
            render(&parts("echo \"", "\"")),
            r#"echo "${CAIRN_PARAM_V}""#
        );
        assert_eq!(
            render(&parts("echo \"$(printf %s ", ")\"")),
            r#"echo "$(printf %s "${CAIRN_PARAM_V}")""#
        );
        assert_eq!(
            render(&parts("echo `echo ", "`")),
            r#"echo `echo "${CAIRN_PARAM_V}"`"#
        );
        assert_eq!(
            render(&parts("echo \"it's (", ")\" 'a\"b' ")),
            r#"echo "it's (${CAIRN_PARAM_V})" 'a"b' "#
        );
        // Without a reference the value is copied as it is.
        let raw = parts("echo ", "")
            .render_with_slots(&[], &values, "", &|_| None)
            .0;
        assert_eq!(raw, "echo x; id");
    }

    #[test]
    fn quoting_keeps_plain_words() {
        assert_eq!(shell_quote("--fast"), "--fast");
        assert_eq!(shell_quote("it's here"), r"'it'\''s here'");
        assert_eq!(shell_quote(""), "''");
    }
}
