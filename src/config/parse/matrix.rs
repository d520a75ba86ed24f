//! A task's `matrix`: variables with lists of values, from tasks.toml or a data file.

use super::{
    at, to_source_span, Arc, ConfigError, DataFile, DeTable, DeValue, HashSet, MatrixDef,
    MatrixValues, ParamDef, QueryError, Scope, Span, Spanned, Value, Var, Walker,
    MAX_CHECKED_QUERIES, QUERY_KEYS,
};

impl Walker<'_> {
    /// `matrix.NAME = [values]` or `matrix.NAME = { from, key, where }`.
    pub(super) fn matrix(
        &mut self,
        context: &str,
        value: &Value<'_>,
        params: &[ParamDef],
        vars: &[Var],
    ) -> Vec<MatrixDef> {
        let Some(table) = self.table("matrix", value) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            if !self.template_name(key, "matrix", "a matrix variable's name") {
                continue;
            }
            if params.iter().any(|p| p.name == name) {
                self.invalid(
                    "matrix",
                    format!("`{name}` is already a param of this task"),
                    &at(key),
                    Some("give the matrix variable another name".into()),
                );
                continue;
            }
            let values = match value.get_ref() {
                DeValue::Array(_) => {
                    let Some(list) = self.strings(&format!("matrix.{name}"), value) else {
                        continue;
                    };
                    let mut seen = HashSet::new();
                    let mut ok = true;
                    for item in &list {
                        if item.value.is_empty() || !seen.insert(item.value.as_str()) {
                            self.invalid(
                                "matrix",
                                format!("`{}` is empty or listed twice", item.value),
                                &item.span,
                                None,
                            );
                            ok = false;
                        }
                    }
                    if !ok {
                        continue;
                    }
                    MatrixValues::Listed(list.into_iter().map(|v| v.value).collect())
                }
                DeValue::Table(spec) => {
                    let Some((file, key_text, filter)) =
                        self.query_spec(spec, value, &format!("`matrix.{name}` of {context}"))
                    else {
                        continue;
                    };
                    let scope = Scope {
                        params,
                        vars,
                        allow_args: false,
                        allow_changed: false,
                        allow_fields: false,
                        secrets: &[],
                    };
                    let Some(key_template) = self.template(
                        || format!("`matrix.{name}.key` of {context}"),
                        &key_text,
                        false,
                        &scope,
                    ) else {
                        continue;
                    };
                    let values = MatrixValues::File {
                        file,
                        key: key_template,
                        key_text: key_text.value.clone(),
                        filter,
                        span: key_text.span.clone(),
                    };
                    self.check_matrix_queries(&values, params, vars, &key_text);
                    values
                }
                _ => {
                    self.wrong_type(
                        &format!("matrix.{name}"),
                        "an array of strings or a table { from = \"file.toml\", key = \"…\" }",
                        value,
                    );
                    continue;
                }
            };
            out.push(MatrixDef {
                name: name.to_owned(),
                span: at(key),
                values,
            });
        }
        out
    }

    /// Checks a matrix's data-file key for every combination of listed param values, so a missing environment
    /// is found by `cairn check` rather than by the deploy.
    pub(super) fn check_matrix_queries(
        &mut self,
        values: &MatrixValues,
        params: &[ParamDef],
        vars: &[Var],
        key: &Spanned<String>,
    ) {
        let var_values: Vec<String> = vars.iter().map(|v| v.value.clone()).collect();
        let mut combinations: Vec<Vec<String>> = vec![Vec::new()];
        for param in params {
            let Some(listed) = &param.values else {
                return;
            };
            combinations = combinations
                .into_iter()
                .flat_map(|prefix| {
                    listed.iter().map(move |v| {
                        let mut next = prefix.clone();
                        next.push(v.clone());
                        next
                    })
                })
                .collect();
            if combinations.len() > MAX_CHECKED_QUERIES {
                return;
            }
        }
        let MatrixValues::File { file, .. } = values else {
            return;
        };
        for combination in combinations {
            if let Err(error) = values.resolve(&var_values, &combination) {
                let file = Arc::clone(file);
                self.query_error(&file, error, &key.span);
                return;
            }
        }
    }

    /// `{ from = "file.toml", key = "a.b", where = "field" }`: the file (read now), the key as written and
    /// the filter.
    pub(super) fn query_spec(
        &mut self,
        spec: &DeTable<'_>,
        value: &Value<'_>,
        context: &str,
    ) -> Option<(Arc<DataFile>, Spanned<String>, Option<String>)> {
        self.check_keys(spec, QUERY_KEYS, context);
        let from = spec.get("from").and_then(|v| self.string("from", v));
        let key = spec.get("key").and_then(|v| self.string("key", v));
        let filter = spec
            .get("where")
            .and_then(|v| self.string("where", v))
            .map(|w| w.value);
        let (Some(from), Some(key)) = (from, key) else {
            if spec.get("from").is_none() || spec.get("key").is_none() {
                self.invalid(
                    "from",
                    "a list read from a file needs `from` (the file) and `key` (where in it)",
                    &at(value),
                    Some("e.g. `{ from = \"modules/inventory.toml\", key = \"hosts\", where = \"enabled\" }`".into()),
                );
            }
            return None;
        };
        let file = match self.data_files.get(&from.value) {
            Some(cached) => cached.clone(),
            None => {
                let read = match DataFile::read(&self.root, &from.value) {
                    Ok(file) => Some(Arc::new(file)),
                    Err(error) => {
                        self.invalid(
                            "from",
                            format!("cannot read `{}`: {error}", from.value),
                            &from.span,
                            Some("the path is relative to the directory of tasks.toml".into()),
                        );
                        None
                    }
                };
                self.data_files.insert(from.value.clone(), read.clone());
                read
            }
        }?;
        Some((file, key, filter))
    }

    /// Reports a failed query: inside the data file when the problem is there, else at the key in tasks.toml.
    pub(super) fn query_error(&mut self, file: &DataFile, error: QueryError, key_span: &Span) {
        match error.span {
            Some(span) => self.errors.push(ConfigError::DataFile {
                message: error.message,
                src: file.source.clone(),
                span: to_source_span(&span),
                help: error.help,
            }),
            None => self.invalid("key", error.message, key_span, error.help),
        }
    }
}
