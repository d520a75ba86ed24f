//! Values read from a TOML data file (an inventory of hosts, say), so that a param's values or a task's matrix
//! live in one place that other tools read too.
//!
//! A query is a dotted key. When it leads to an array of strings, those are the values; when it leads to a
//! table, its keys are, in file order, optionally only the entries whose `where` field is `true`.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::de::{DeTable, DeValue};

use super::source::SourceFile;

/// A data file named by tasks.toml, read once when tasks.toml is loaded.
#[derive(Debug)]
pub struct DataFile {
    /// The path as written in tasks.toml (relative to its directory).
    pub name: String,
    /// The file on disk.
    pub path: PathBuf,
    /// Its text, for diagnostics that point into it.
    pub source: SourceFile,
}

/// Each entry's facts by field name, by entry name (see [`DataFile::entry_fields`]).
pub type EntryFields =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<String>>>;

/// Why a query found no list of values.
#[derive(Debug, PartialEq, Eq)]
pub struct QueryError {
    /// What is wrong, naming the key.
    pub message: String,
    /// Where in the data file, when the problem is in it (not when a key is missing).
    pub span: Option<Range<usize>>,
    /// A likely fix.
    pub help: Option<String>,
}

impl DataFile {
    /// Reads `name` relative to `root`; a syntax error comes back as a message with its byte range.
    pub fn read(root: &Path, name: &str) -> Result<DataFile, std::io::Error> {
        let path = root.join(name);
        let text = std::fs::read_to_string(&path)?;
        Ok(DataFile {
            name: name.to_owned(),
            path,
            source: SourceFile::new(name, Arc::from(text.as_str())),
        })
    }

    fn text(&self) -> &str {
        self.source.inner().as_ref()
    }

    /// The values at `key`, filtered by `filter` when the key leads to a table.
    pub fn query(&self, key: &str, filter: Option<&str>) -> Result<Vec<String>, QueryError> {
        self.resolve(key, filter, false)
    }

    /// Like [`DataFile::query`], but a key leading to a string, number or boolean gives that one value
    /// (`hosts.NIXY.system`), for scripts that need one fact.
    pub fn lookup(&self, key: &str) -> Result<Vec<String>, QueryError> {
        self.resolve(key, None, true)
    }

    fn resolve(
        &self,
        key: &str,
        filter: Option<&str>,
        scalars: bool,
    ) -> Result<Vec<String>, QueryError> {
        let document = DeTable::parse(self.text()).map_err(|e| QueryError {
            message: format!("`{}` is not valid TOML: {}", self.name, e.message().trim()),
            span: e.span(),
            help: None,
        })?;
        let mut table = document.get_ref();
        let mut walked = String::new();
        let segments: Vec<&str> = key.split('.').collect();
        for (i, segment) in segments.iter().enumerate() {
            let Some(value) = table.get(*segment) else {
                let keys: Vec<&str> = table.keys().map(|k| k.get_ref().as_ref()).collect();
                let here = if walked.is_empty() {
                    "the top level".to_owned()
                } else {
                    format!("`{walked}`")
                };
                return Err(QueryError {
                    message: format!("`{}` has no key `{segment}` in {here}", self.name),
                    span: None,
                    help: super::suggest::did_you_mean(segment, keys.iter().copied()).or_else(
                        || {
                            (!keys.is_empty()).then(|| {
                                format!(
                                    "{here} has {}",
                                    keys.iter()
                                        .map(|k| format!("`{k}`"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            })
                        },
                    ),
                });
            };
            if !walked.is_empty() {
                walked.push('.');
            }
            walked.push_str(segment);
            let last = i + 1 == segments.len();
            match (value.get_ref(), last) {
                (DeValue::Table(inner), false) => table = inner,
                (DeValue::Table(inner), true) => return self.keys_of(inner, &walked, filter),
                (DeValue::Array(items), true) => {
                    if let Some(field) = filter {
                        return Err(QueryError {
                            message: format!(
                                "`{walked}` in `{}` is an array, so `where = \"{field}\"` has no entries to filter",
                                self.name
                            ),
                            span: Some(value.span()),
                            help: Some("remove `where`, or point `key` at a table".into()),
                        });
                    }
                    return items
                        .iter()
                        .enumerate()
                        .map(|(n, item)| match item.get_ref() {
                            DeValue::String(s) if !s.is_empty() => Ok(s.to_string()),
                            _ => Err(QueryError {
                                message: format!(
                                    "item {} of `{walked}` in `{}` is not a non-empty string",
                                    n + 1,
                                    self.name
                                ),
                                span: Some(item.span()),
                                help: None,
                            }),
                        })
                        .collect();
                }
                (DeValue::String(text), true) if scalars => return Ok(vec![text.to_string()]),
                (DeValue::Integer(n), true) if scalars => return Ok(vec![n.as_str().to_owned()]),
                (DeValue::Float(n), true) if scalars => return Ok(vec![n.as_str().to_owned()]),
                (DeValue::Boolean(b), true) if scalars => return Ok(vec![b.to_string()]),
                (_, _) => {
                    return Err(QueryError {
                        message: format!(
                            "`{walked}` in `{}` is {}, not {}",
                            self.name,
                            kind(value.get_ref()),
                            if last {
                                "an array of strings or a table"
                            } else {
                                "a table"
                            }
                        ),
                        span: Some(value.span()),
                        help: None,
                    })
                }
            }
        }
        Err(QueryError {
            message: "the key is empty".into(),
            span: None,
            help: Some("name a key such as `hosts` or `environments.production.hosts`".into()),
        })
    }

    /// The facts of each entry of the table at `key` (`hosts` → `NIXY` → `users` → `["alex", "susu"]`): its
    /// strings, numbers and booleans as one item, its arrays of strings as their items; other fields are left
    /// out. Empty when the key does not lead to a table (the query reported that already).
    pub fn entry_fields(&self, key: &str) -> EntryFields {
        let mut out = EntryFields::new();
        let Ok(document) = DeTable::parse(self.text()) else {
            return out;
        };
        let mut table = document.get_ref();
        for segment in key.split('.') {
            match table.get(segment).map(|v| v.get_ref()) {
                Some(DeValue::Table(inner)) => table = inner,
                _ => return out,
            }
        }
        for (entry, value) in table.iter() {
            let DeValue::Table(fields) = value.get_ref() else {
                continue;
            };
            let mut facts = std::collections::BTreeMap::new();
            for (field, value) in fields.iter() {
                let items = match value.get_ref() {
                    DeValue::String(s) => vec![s.to_string()],
                    DeValue::Integer(n) => vec![n.as_str().to_owned()],
                    DeValue::Float(n) => vec![n.as_str().to_owned()],
                    DeValue::Boolean(b) => vec![b.to_string()],
                    DeValue::Array(items) => {
                        let strings: Option<Vec<String>> = items
                            .iter()
                            .map(|i| match i.get_ref() {
                                DeValue::String(s) => Some(s.to_string()),
                                _ => None,
                            })
                            .collect();
                        match strings {
                            Some(strings) => strings,
                            None => continue,
                        }
                    }
                    _ => continue,
                };
                facts.insert(field.get_ref().to_string(), items);
            }
            out.insert(entry.get_ref().to_string(), facts);
        }
        out
    }

    fn keys_of(
        &self,
        table: &DeTable<'_>,
        walked: &str,
        filter: Option<&str>,
    ) -> Result<Vec<String>, QueryError> {
        let mut out = Vec::with_capacity(table.len());
        for (key, value) in table.iter() {
            let Some(field) = filter else {
                out.push(key.get_ref().to_string());
                continue;
            };
            let DeValue::Table(entry) = value.get_ref() else {
                return Err(QueryError {
                    message: format!(
                        "`{walked}.{}` in `{}` is {}, so it has no `{field}` field",
                        key.get_ref(),
                        self.name,
                        kind(value.get_ref())
                    ),
                    span: Some(value.span()),
                    help: None,
                });
            };
            match entry.get(field).map(|v| (v.get_ref(), v.span())) {
                Some((DeValue::Boolean(true), _)) => out.push(key.get_ref().to_string()),
                Some((DeValue::Boolean(false), _)) => {}
                Some((other, span)) => {
                    return Err(QueryError {
                        message: format!(
                            "`{walked}.{}.{field}` in `{}` is {}, not a boolean",
                            key.get_ref(),
                            self.name,
                            kind(other)
                        ),
                        span: Some(span),
                        help: None,
                    })
                }
                None => {
                    return Err(QueryError {
                        message: format!(
                            "`{walked}.{}` in `{}` has no `{field}` field",
                            key.get_ref(),
                            self.name
                        ),
                        span: Some(key.span()),
                        help: Some(format!(
                            "say `{field} = true` or `{field} = false`: an entry is never included by guess"
                        )),
                    })
                }
            }
        }
        Ok(out)
    }
}

fn kind(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> DataFile {
        DataFile {
            name: "inventory.toml".into(),
            path: PathBuf::from("inventory.toml"),
            source: SourceFile::new("inventory.toml", Arc::from(text)),
        }
    }

    const INVENTORY: &str = r#"
[hosts.NIXY]
enabled = true
[hosts.NIXEDUP]
enabled = false
[hosts.NIXI]
enabled = true

[environments.production]
hosts = ["NIXY", "NIXI"]
"#;

    #[test]
    fn table_keys_keep_file_order_and_honour_the_filter() {
        let data = file(INVENTORY);
        assert_eq!(
            data.query("hosts", None).unwrap(),
            ["NIXY", "NIXEDUP", "NIXI"]
        );
        assert_eq!(
            data.query("hosts", Some("enabled")).unwrap(),
            ["NIXY", "NIXI"]
        );
    }

    #[test]
    fn arrays_of_strings_are_values() {
        let data = file(INVENTORY);
        assert_eq!(
            data.query("environments.production.hosts", None).unwrap(),
            ["NIXY", "NIXI"]
        );
    }

    #[test]
    fn lookups_also_give_single_values() {
        let data = file("[hosts.NIXY]\nsystem = \"aarch64-darwin\"\nenabled = true\n");
        assert_eq!(
            data.lookup("hosts.NIXY.system").unwrap(),
            ["aarch64-darwin"]
        );
        assert_eq!(data.lookup("hosts.NIXY.enabled").unwrap(), ["true"]);
        assert!(data.query("hosts.NIXY.system", None).is_err());
    }

    #[test]
    fn missing_keys_are_named_with_a_suggestion() {
        let data = file(INVENTORY);
        let error = data
            .query("environments.prodution.hosts", None)
            .unwrap_err();
        assert!(error.message.contains("no key `prodution`"), "{error:?}");
        assert_eq!(error.help.as_deref(), Some("did you mean `production`?"));
    }

    #[test]
    fn wrong_types_point_into_the_file() {
        let data = file("[hosts]\nlist = [\"a\", 2]\n");
        let error = data.query("hosts.list", None).unwrap_err();
        let span = error.span.expect("a span");
        assert_eq!(&data.text()[span], "2");
        let missing = file("[hosts.a]\nsystem = \"x\"\n")
            .query("hosts", Some("enabled"))
            .unwrap_err();
        assert!(
            missing.message.contains("no `enabled` field"),
            "{missing:?}"
        );
    }
}
