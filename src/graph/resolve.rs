//! Finds which task, with which param values, a name such as `deploy:production` refers to.

use std::collections::HashMap;

use crate::config::suggest::did_you_mean;
use crate::config::{Config, NamePart, ParamDef};

/// Index of task names for resolving targets and dependencies.
#[derive(Debug, Default)]
pub struct Resolver {
    literal: HashMap<String, usize>,
    patterns: Vec<usize>,
    bases: HashMap<String, usize>,
}

/// Why a name resolves to no task.
#[derive(Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// No task has that name or a pattern that fits it.
    Unknown {
        /// A close name, if any.
        suggestion: Option<String>,
    },
    /// A pattern task fits, but a value is not allowed for its param.
    BadValue {
        /// The task.
        task: usize,
        /// The param's index.
        param: usize,
        /// The value given.
        value: String,
    },
    /// The base name of a pattern task was given, but a param has no default.
    MissingValue {
        /// The task.
        task: usize,
        /// The param's index.
        param: usize,
    },
}

impl Resolver {
    /// Indexes every task of `config`.
    pub fn new(config: &Config) -> Resolver {
        let mut resolver = Resolver::default();
        for (i, task) in config.tasks.iter().enumerate() {
            if task.name.is_pattern() {
                resolver.patterns.push(i);
                if let Some(base) = task.name.base() {
                    resolver.bases.entry(base.to_owned()).or_insert(i);
                }
            } else {
                resolver.literal.insert(task.name.text.clone(), i);
            }
        }
        resolver
    }

    /// The task and param values `name` refers to.
    pub fn resolve(&self, config: &Config, name: &str) -> Result<(usize, Vec<String>), Unresolved> {
        if let Some(&task) = self.literal.get(name) {
            return Ok((task, Vec::new()));
        }
        for &task in &self.patterns {
            let def = &config.tasks[task];
            let mut values = vec![String::new(); def.params.len()];
            if match_parts(&def.name.parts, &def.params, name, &mut values, true) {
                return Ok((task, values));
            }
        }
        if let Some(&task) = self.bases.get(name) {
            let params = &config.tasks[task].params;
            return match params.iter().position(|p| p.default.is_none()) {
                Some(param) => Err(Unresolved::MissingValue { task, param }),
                None => Ok((
                    task,
                    params.iter().filter_map(|p| p.default.clone()).collect(),
                )),
            };
        }
        // A pattern that fits once its values are not checked means the value is the mistake.
        for &task in &self.patterns {
            let def = &config.tasks[task];
            let mut values = vec![String::new(); def.params.len()];
            if match_parts(&def.name.parts, &def.params, name, &mut values, false) {
                let param = def
                    .params
                    .iter()
                    .zip(&values)
                    .position(|(p, v)| {
                        p.values
                            .as_ref()
                            .is_some_and(|allowed| !allowed.contains(v))
                    })
                    .expect("only an enumerated param can fail the strict match");
                return Err(Unresolved::BadValue {
                    task,
                    param,
                    value: values.swap_remove(param),
                });
            }
        }
        Err(Unresolved::Unknown {
            suggestion: self.suggest(config, name),
        })
    }

    fn suggest(&self, config: &Config, name: &str) -> Option<String> {
        let mut candidates: Vec<String> = self.literal.keys().cloned().collect();
        for &task in &self.patterns {
            let def = &config.tasks[task];
            candidates.push(def.name.text.clone());
            if let [param] = def.params.as_slice() {
                for value in param.values.iter().flatten() {
                    candidates.push(def.name.instance(std::slice::from_ref(value)));
                }
            }
        }
        did_you_mean(name, candidates.iter().map(String::as_str))
    }
}

/// Matches `text` against a name's parts, filling `values`. With `strict`, an enumerated param only takes its
/// listed values; otherwise any non-empty text.
fn match_parts(
    parts: &[NamePart],
    params: &[ParamDef],
    text: &str,
    values: &mut [String],
    strict: bool,
) -> bool {
    match parts.split_first() {
        None => text.is_empty(),
        Some((NamePart::Literal(literal), rest)) => text
            .strip_prefix(literal.as_str())
            .is_some_and(|after| match_parts(rest, params, after, values, strict)),
        Some((NamePart::Param(i), rest)) => {
            if let (true, Some(allowed)) = (strict, &params[*i].values) {
                for value in allowed {
                    if let Some(after) = text.strip_prefix(value.as_str()) {
                        if match_parts(rest, params, after, values, strict) {
                            values[*i] = value.clone();
                            return true;
                        }
                    }
                }
                return false;
            }
            for end in (1..=text.len()).filter(|&e| text.is_char_boundary(e)) {
                if match_parts(rest, params, &text[end..], values, strict) {
                    values[*i] = text[..end].to_owned();
                    return true;
                }
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn config(text: &str) -> Config {
        Config::parse(
            "tasks.toml",
            text,
            PathBuf::from("tasks.toml"),
            PathBuf::from("."),
        )
        .expect("valid config")
    }

    const TASKS: &str = r#"
[tasks.build]
run = "true"
[tasks."deploy:{env}"]
params.env = { values = ["production", "staging"], default = "staging" }
run = "true"
[tasks."greet:{who}:{how}"]
params.who = {}
params.how = { values = ["loud", "soft"] }
run = "true"
"#;

    #[test]
    fn resolves_literal_pattern_and_base_names() {
        let c = config(TASKS);
        let r = Resolver::new(&c);
        assert_eq!(r.resolve(&c, "build"), Ok((0, vec![])));
        assert_eq!(
            r.resolve(&c, "deploy:production"),
            Ok((1, vec!["production".into()]))
        );
        assert_eq!(r.resolve(&c, "deploy"), Ok((1, vec!["staging".into()])));
        assert_eq!(
            r.resolve(&c, "greet:a:b:soft"),
            Ok((2, vec!["a:b".into(), "soft".into()]))
        );
    }

    #[test]
    fn reports_bad_values_and_missing_defaults() {
        let c = config(TASKS);
        let r = Resolver::new(&c);
        assert_eq!(
            r.resolve(&c, "deploy:prod"),
            Err(Unresolved::BadValue {
                task: 1,
                param: 0,
                value: "prod".into()
            })
        );
        assert_eq!(
            r.resolve(&c, "greet"),
            Err(Unresolved::MissingValue { task: 2, param: 0 })
        );
    }

    #[test]
    fn suggests_instances_for_typos() {
        let c = config(TASKS);
        let r = Resolver::new(&c);
        assert_eq!(
            r.resolve(&c, "biuld"),
            Err(Unresolved::Unknown {
                suggestion: Some("did you mean `build`?".into())
            })
        );
    }
}
