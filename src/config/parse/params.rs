//! Pattern task names and their params: values, defaults, patterns.

use super::{
    at, did_you_mean, span_within_string, template, to_source_span, type_name, ConfigError,
    DeValue, HashSet, Key, NamePart, ParamDef, Piece, Spanned, TaskName, Value, Walker, PARAM_KEYS,
    RESERVED_NAMES,
};

impl Walker<'_> {
    /// Whether a key can name something templates refer to (a param, a matrix variable); reports it if not.
    pub(super) fn template_name(&mut self, key: &Key<'_>, table: &str, what: &str) -> bool {
        let name: &str = key.get_ref();
        let valid = template::is_identifier(name) && !RESERVED_NAMES.contains(&name);
        if !valid {
            self.invalid(
                table,
                format!("`{name}` cannot be {what}"),
                &at(key),
                Some("use letters, digits, `_` and `-`, starting with a letter; `args` and `changed` are reserved".into()),
            );
        }
        valid
    }

    pub(super) fn params(&mut self, context: &str, value: &Value<'_>) -> Vec<ParamDef> {
        let Some(table) = self.table("params", value) else {
            return Vec::new();
        };
        let mut params = Vec::new();
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            if !self.template_name(key, "params", "a param name") {
                continue;
            }
            let param_context = format!("param `{name}` of {context}");
            let Some(spec) = (match value.get_ref() {
                DeValue::Table(t) => Some(t),
                _ => {
                    self.errors.push(ConfigError::WrongType {
                        key: format!("params.{name}"),
                        expected: "a table such as { values = [\"a\", \"b\"], default = \"a\" }",
                        found: type_name(value.get_ref()),
                        src: self.source.clone(),
                        span: to_source_span(&at(value)),
                    });
                    None
                }
            }) else {
                continue;
            };
            self.check_keys(spec, PARAM_KEYS, &param_context);
            let mut fields = None;
            let values = spec.get("values").and_then(|v| {
                if let DeValue::Table(query) = v.get_ref() {
                    let (file, key, filter) =
                        self.query_spec(query, v, &format!("`values` of {param_context}"))?;
                    fields = Some(std::sync::Arc::new(file.entry_fields(&key.value)));
                    return match file.query(&key.value, filter.as_deref()) {
                        Ok(list) if list.is_empty() => {
                            self.invalid(
                                "values",
                                format!("`{}` in `{}` lists no values", key.value, file.name),
                                &key.span,
                                None,
                            );
                            None
                        }
                        Ok(list) => Some(
                            list.into_iter()
                                .map(|value| Spanned {
                                    value,
                                    span: key.span.clone(),
                                })
                                .collect(),
                        ),
                        Err(error) => {
                            self.query_error(&file, error, &key.span);
                            None
                        }
                    };
                }
                let list = self.strings("values", v)?;
                if list.is_empty() {
                    self.invalid(
                        "values",
                        "the list of values is empty",
                        &at(v),
                        Some("list at least one value, or remove `values` to accept any".into()),
                    );
                    return None;
                }
                let mut seen = HashSet::new();
                for item in &list {
                    if item.value.is_empty() {
                        self.invalid("values", "a value cannot be empty", &item.span, None);
                    } else if !seen.insert(item.value.as_str()) {
                        self.invalid(
                            "values",
                            format!("`{}` is listed twice", item.value),
                            &item.span,
                            None,
                        );
                    }
                }
                Some(list)
            });
            let default = spec
                .get("default")
                .and_then(|v| self.scalar_text("default", v));
            if let (Some(values), Some(default)) = (&values, &default) {
                if !values.iter().any(|v| v.value == default.value) {
                    self.invalid(
                        "default",
                        format!("`{}` is not one of the values", default.value),
                        &default.span,
                        did_you_mean(&default.value, values.iter().map(|v| v.value.as_str()))
                            .or_else(|| {
                                Some(format!(
                                    "expected one of {}",
                                    values
                                        .iter()
                                        .map(|v| format!("`{}`", v.value))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ))
                            }),
                    );
                }
            }
            let description = spec
                .get("description")
                .and_then(|v| self.string("description", v))
                .map(|d| d.value);
            let pattern = spec
                .get("pattern")
                .and_then(|v| self.param_pattern(v, values.is_some()));
            params.push(ParamDef {
                name: name.to_owned(),
                values: values.map(|l| l.into_iter().map(|v| v.value).collect()),
                default: default.map(|d| d.value),
                pattern,
                description,
                fields,
                span: at(key),
            });
        }
        params
    }

    /// A param's `pattern`, anchored so that it must match the whole value.
    pub(super) fn param_pattern(
        &mut self,
        value: &Value<'_>,
        has_values: bool,
    ) -> Option<regex::Regex> {
        let text = self.string("pattern", value)?;
        if has_values {
            self.invalid(
                "pattern",
                "a param with `values` takes only those: `pattern` would never apply",
                &text.span,
                Some(
                    "remove `pattern`, or remove `values` to accept any value that matches it"
                        .into(),
                ),
            );
            return None;
        }
        match regex::Regex::new(&format!("^(?:{})$", text.value)) {
            Ok(regex) => Some(regex),
            Err(error) => {
                let reason = error.to_string();
                let last = reason.lines().last().unwrap_or("invalid").trim().to_owned();
                self.invalid(
                    "pattern",
                    format!("`{}` is not a valid regular expression: {last}", text.value),
                    &text.span,
                    Some("the syntax is Rust's `regex` crate's, e.g. \"[a-z][a-z0-9-]*\"".into()),
                );
                None
            }
        }
    }

    /// Splits the task's name at `{param}` and orders the params as the name uses them.
    pub(super) fn task_name(
        &mut self,
        key: &Key<'_>,
        declared: Vec<ParamDef>,
    ) -> Option<(TaskName, Vec<ParamDef>)> {
        let text: &str = key.get_ref();
        let pieces = match template::scan(text, true) {
            Ok(pieces) => pieces,
            Err(e) => {
                let span = span_within_string(self.text, &at(key), text, e.range);
                self.invalid("tasks", e.message, &span, None);
                return None;
            }
        };
        let mut ordered: Vec<ParamDef> = Vec::new();
        let mut parts = Vec::with_capacity(pieces.len());
        let mut ok = true;
        for piece in pieces {
            match piece {
                Piece::Text(t) => parts.push(NamePart::Literal(t.into())),
                Piece::Name(name, range) => {
                    let span = span_within_string(self.text, &at(key), text, range);
                    if ordered.iter().any(|p| p.name == name) {
                        self.invalid(
                            "tasks",
                            format!("`{{{name}}}` appears twice in the name"),
                            &span,
                            None,
                        );
                        ok = false;
                    } else if let Some(param) = declared.iter().find(|p| p.name == name) {
                        parts.push(NamePart::Param(ordered.len()));
                        ordered.push(param.clone());
                    } else {
                        self.invalid(
                            "tasks",
                            format!("`{{{name}}}` is not a declared param"),
                            &span,
                            Some(format!(
                                "declare it: `params.{name} = {{ values = [...] }}`"
                            )),
                        );
                        ok = false;
                    }
                }
            }
        }
        for param in &declared {
            if !ordered.iter().any(|p| p.name == param.name) {
                self.invalid(
                    "params",
                    format!("param `{}` is not used in the task name", param.name),
                    &param.span,
                    Some(format!(
                        "add `{{{}}}` to the name, e.g. `[tasks.\"{text}:{{{}}}\"]`",
                        param.name, param.name
                    )),
                );
                ok = false;
            }
        }
        ok.then(|| {
            (
                TaskName {
                    text: text.into(),
                    parts,
                },
                ordered,
            )
        })
    }
}
