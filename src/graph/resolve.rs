//! Finds which task, with which param values, a name such as `deploy:production` refers to.

use std::collections::{HashMap, HashSet};

use crate::config::suggest::did_you_mean;
use crate::config::{Config, NamePart, ParamDef};

/// Index of task names for resolving targets and dependencies.
#[derive(Debug, Default)]
pub struct Resolver {
    literal: HashMap<compact_str::CompactString, usize>,
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
                    .position(|(p, v)| !p.accepts(v))
                    .expect("only a value its param refuses can fail the strict match");
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
        let mut candidates: Vec<String> = self.literal.keys().map(ToString::to_string).collect();
        for &task in &self.patterns {
            let def = &config.tasks[task];
            candidates.push(def.name.text.to_string());
            if let [param] = def.params.as_slice() {
                for value in param.values.iter().flatten() {
                    candidates.push(def.name.instance(std::slice::from_ref(value)));
                }
            }
        }
        did_you_mean(name, candidates.iter().map(String::as_str))
    }
}

/// Matches `text` against a name's parts, filling `values`. With `strict`, each param takes only values it
/// accepts; otherwise any non-empty text. Positions already known to fail are remembered, so names with many
/// free-form params cost time polynomial in their length instead of exponential.
fn match_parts(
    parts: &[NamePart],
    params: &[ParamDef],
    text: &str,
    values: &mut [String],
    strict: bool,
) -> bool {
    let mut failed = HashSet::new();
    match_from(parts, params, text, 0, 0, values, strict, &mut failed)
}

#[allow(clippy::too_many_arguments)]
fn match_from(
    parts: &[NamePart],
    params: &[ParamDef],
    text: &str,
    part: usize,
    at: usize,
    values: &mut [String],
    strict: bool,
    failed: &mut HashSet<(usize, usize)>,
) -> bool {
    if failed.contains(&(part, at)) {
        return false;
    }
    let rest = &text[at..];
    let matched = match parts.get(part) {
        None => rest.is_empty(),
        Some(NamePart::Literal(literal)) => {
            rest.starts_with(literal.as_str())
                && match_from(
                    parts,
                    params,
                    text,
                    part + 1,
                    at + literal.len(),
                    values,
                    strict,
                    failed,
                )
        }
        Some(NamePart::Param(i)) => {
            let param = &params[*i];
            let mut found = false;
            if let (true, Some(allowed)) = (strict, &param.values) {
                for value in allowed {
                    if rest.starts_with(value.as_str())
                        && match_from(
                            parts,
                            params,
                            text,
                            part + 1,
                            at + value.len(),
                            values,
                            strict,
                            failed,
                        )
                    {
                        values[*i] = value.clone();
                        found = true;
                        break;
                    }
                }
            } else {
                for end in (1..=rest.len()).filter(|&e| rest.is_char_boundary(e)) {
                    if strict && !param.accepts(&rest[..end]) {
                        continue;
                    }
                    if match_from(
                        parts,
                        params,
                        text,
                        part + 1,
                        at + end,
                        values,
                        strict,
                        failed,
                    ) {
                        values[*i] = rest[..end].to_owned();
                        found = true;
                        break;
                    }
                }
            }
            found
        }
    };
    if !matched {
        failed.insert((part, at));
    }
    matched
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
    fn many_free_form_params_match_quickly_and_unsafe_values_are_refused() {
        let names: Vec<String> = (0..120).map(|i| format!("{{p{i}}}")).collect();
        let declared: String = (0..120).map(|i| format!("params.p{i} = {{}}\n")).collect();
        let text = format!(
            "[tasks.\"t:{}\"]\nrun = \"true\"\n{declared}",
            names.join(":")
        );
        let c = config(&text);
        let r = Resolver::new(&c);
        let unmatched = vec!["a"; 119].join(":");
        assert!(r.resolve(&c, &format!("t:{unmatched}")).is_err());
        let matched = vec!["a"; 120].join(":");
        assert_eq!(
            r.resolve(&c, &format!("t:{matched}")).map(|(_, v)| v.len()),
            Ok(120)
        );
        // Unmemoised, the first of these backtracked for minutes (35 s at 120 params in a release build).
        let c = config(TASKS);
        let r = Resolver::new(&c);
        assert!(matches!(
            r.resolve(&c, "greet:x;id:soft"),
            Err(Unresolved::BadValue { param: 0, .. })
        ));
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
