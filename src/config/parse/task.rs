//! A task's table: its commands, inputs and outputs, deps, env, rollout and secrets.

use super::{
    at, did_you_mean, is_env_name, lookup, CheckDef, DeTable, DeValue, DepDef, DepsStrategy, Key,
    MatrixDef, ParamDef, RemoteMode, Rollout, Scope, Spanned, TaskDef, TaskSecrets, TaskSettings,
    Template, Value, Var, Walker, CHECK_KEYS, MAX_RETRIES, SECRETS_KEYS, TASK_KEYS,
};

impl Walker<'_> {
    pub(super) fn task(
        &mut self,
        key: &Key<'_>,
        value: &Value<'_>,
        vars: &[Var],
    ) -> Option<TaskDef> {
        let name: &str = key.get_ref();
        let context = format!("task `{name}`");
        let DeValue::Table(table) = value.get_ref() else {
            self.wrong_type(&format!("tasks.{name}"), "a table", value);
            return None;
        };
        let errors_before = self.errors.len();
        self.check_keys(table, TASK_KEYS, &context);

        if name.is_empty() || name.chars().any(char::is_whitespace) {
            self.invalid(
                "tasks",
                "a task name must be non-empty and have no spaces",
                &at(key),
                Some("use `-` or `:` to separate words, e.g. `deploy:production`".into()),
            );
            return None;
        }
        let declared = match lookup(table, "params") {
            Some(v) => self.params(&context, v),
            None => Vec::new(),
        };
        let (task_name, params) = self.task_name(key, declared)?;
        let matrix = match lookup(table, "matrix") {
            Some(v) => self.matrix(&context, v, &params, vars),
            None => Vec::new(),
        };
        let rollout = self.rollout(table, &matrix, key);
        // Matrix variables are used like params; instances carry their values after the params'.
        let mut scope_params = params.clone();
        scope_params.extend(matrix.iter().map(|m| ParamDef {
            name: m.name.clone(),
            values: None,
            default: None,
            pattern: None,
            description: None,
            fields: None,
            span: m.span.clone(),
        }));
        let incremental = self.flag(table, "incremental");
        let service = self.flag(table, "service");
        let secrets = self.field(table, "secrets", |w, _, v| {
            w.task_secrets(&context, v, &scope_params, vars)
        });
        let secret_names: Vec<String> = secrets
            .iter()
            .flat_map(|s| s.env.iter().chain(&s.files).map(|(var, _)| var.clone()))
            .collect();
        let scope = Scope {
            params: &scope_params,
            vars,
            allow_args: false,
            allow_changed: false,
            allow_fields: false,
            secrets: &secret_names,
        };
        let run_scope = Scope {
            allow_args: true,
            allow_changed: incremental,
            ..scope
        };

        let run = self
            .field(table, "run", Self::string_or_strings)
            .unwrap_or_default();
        let run = self.templates(run, &context, "run", false, &run_scope);
        let dep_texts = self.field(table, "deps", Self::strings).unwrap_or_default();
        // Sized exactly: a filtered collect starts at four, twice what a typical task needs, for every task.
        let mut deps = Vec::with_capacity(dep_texts.len());
        for dep in dep_texts {
            if let Some(template) =
                self.template(|| format!("`deps` of {context}"), &dep, true, &scope)
            {
                deps.push(DepDef {
                    template,
                    text: dep.value.into(),
                    span: dep.span,
                });
            }
        }
        let lock = self.templated(table, "lock", &context, &scope);
        let audit = self.flag(table, "audit");
        let protected = self.flag(table, "protected");
        let check = self.field(table, "check", |w, _, v| w.task_check(v, &context, &scope));
        let rollback = self.templated(table, "rollback", &context, &scope);
        let executor = self.field(table, "executor", Self::plugin_reference);
        if let Some(name) = &executor {
            // An executor chooses the program cairn starts with the task's environment, secrets included:
            // whoever wrote the plugin runs code as you. That is said once, where the plugin is declared.
            if !self.fully_trusted.contains(&name.value) {
                self.invalid(
                    "executor",
                    format!(
                        "plugin `{}` would choose the program this task runs, with its environment and secrets, but it is not declared with `trust = \"full\"`",
                        name.value
                    ),
                    &name.span,
                    Some(format!(
                        "if you trust its author as you trust this repository's, add `trust = \"full\"` to `[plugins.{}]`",
                        name.value
                    )),
                );
            }
        }
        let plugin = self.field(table, "plugin", Self::plugin_reference);
        if plugin.is_some() && lookup(table, "run").is_some() {
            if let Some((k, _)) = table.get_key_value("plugin") {
                self.invalid(
                    "plugin",
                    "a task is run either by `run` or by a `plugin`, not both",
                    &at(k),
                    Some(
                        "remove `run`, or make the plugin its `executor` to wrap its commands"
                            .into(),
                    ),
                );
            }
        }
        if run.is_empty()
            && deps.is_empty()
            && plugin.is_none()
            && lookup(table, "run").is_none()
            && lookup(table, "deps").is_none()
        {
            self.invalid(
                "tasks",
                format!("task `{name}` has neither `run` nor `deps`"),
                &at(key),
                Some("add `run = \"…\"` with its command, or `deps = [...]` to make it a group of tasks".into()),
            );
        }
        let inputs = self
            .field(table, "inputs", |w, k, v| Some(w.globs(k, v)))
            .unwrap_or_default();
        let outputs = self
            .field(table, "outputs", |w, k, v| Some(w.globs(k, v)))
            .unwrap_or_default();
        let glob_scope = Scope {
            allow_fields: true,
            ..scope
        };
        let input_templates = self.glob_templates("inputs", &inputs, &context, &glob_scope);
        let output_templates = self.glob_templates("outputs", &outputs, &context, &glob_scope);
        let env = self
            .field(table, "env", |w, _, v| {
                Some(w.task_env(v, &context, &scope))
            })
            .unwrap_or_default();
        if let Some(secrets) = &secrets {
            for (var, key) in secrets.env.iter().chain(&secrets.files) {
                if env.iter().any(|(name, _)| name == var) {
                    self.invalid(
                        "secrets",
                        format!("`{var}` is set both by `env` and by `secrets`"),
                        &key.span,
                        Some("give the secret another variable name".into()),
                    );
                }
            }
        }
        let dir = self.field(table, "dir", Self::string).and_then(|d| {
            if d.value.trim().is_empty() {
                self.invalid(
                    "dir",
                    "the directory is empty",
                    &d.span,
                    Some("use `\".\"` for the tasks.toml directory".into()),
                );
                return None;
            }
            self.template(|| format!("`dir` of {context}"), &d, false, &scope)
        });
        let timeout = self.field(table, "timeout", Self::duration);
        let retries = self
            .field(table, "retries", |w, k, v| w.integer(k, v, 0, MAX_RETRIES))
            .unwrap_or(0) as u32;
        let cache = self.field(table, "cache", Self::boolean);
        let remote = self.field(table, "remote", |w, _, v| w.task_remote(v));
        let remote_execution = self.field(table, "remote_execution", Self::boolean);
        let platform = self
            .field(table, "platform", Self::platform)
            .unwrap_or_default();
        let shell = self.field(table, "shell", Self::shell);
        let mut confirm_when = Vec::new();
        let confirm = match lookup(table, "confirm") {
            Some(v) => match v.get_ref() {
                DeValue::Boolean(true) => Some(Template::literal(format!("Run `{name}`?"))),
                DeValue::Boolean(false) => None,
                DeValue::Table(spec) => {
                    self.check_keys(
                        spec,
                        super::CONFIRM_KEYS,
                        &format!("`confirm` of {context}"),
                    );
                    if let Some(when) = spec.get("when").and_then(|w| self.table("confirm.when", w))
                    {
                        for (param_key, values) in when.iter() {
                            let param_name: &str = param_key.get_ref();
                            let Some(index) = params.iter().position(|p| p.name == param_name)
                            else {
                                self.invalid(
                                    "confirm.when",
                                    format!("`{param_name}` is not a param of this task"),
                                    &at(param_key),
                                    did_you_mean(
                                        param_name,
                                        params.iter().map(|p| p.name.as_str()),
                                    ),
                                );
                                continue;
                            };
                            let Some(list) =
                                self.strings(&format!("confirm.when.{param_name}"), values)
                            else {
                                continue;
                            };
                            if let Some(allowed) = &params[index].values {
                                for item in &list {
                                    if !allowed.contains(&item.value) {
                                        self.invalid(
                                            "confirm.when",
                                            format!(
                                                "`{}` is not a value of param `{param_name}`",
                                                item.value
                                            ),
                                            &item.span,
                                            did_you_mean(
                                                &item.value,
                                                allowed.iter().map(String::as_str),
                                            ),
                                        );
                                    }
                                }
                            }
                            confirm_when.push((index, list.into_iter().map(|i| i.value).collect()));
                        }
                    }
                    match spec.get("question") {
                        Some(q) => self.string("confirm.question", q).and_then(|q| {
                            self.template(|| format!("`confirm` of {context}"), &q, false, &scope)
                        }),
                        None => Some(Template::literal(format!("Run `{name}`?"))),
                    }
                }
                _ => self.string("confirm", v).and_then(|q| {
                    self.template(|| format!("`confirm` of {context}"), &q, false, &scope)
                }),
            },
            None => None,
        };
        let description = self
            .field(table, "description", Self::string)
            .map(|d| d.value);
        let env_hash = self
            .field(table, "env_hash", |w, k, v| Some(w.env_patterns(k, v)))
            .unwrap_or_default();
        let env_pass = self
            .field(table, "env_pass", |w, k, v| Some(w.env_patterns(k, v)))
            .unwrap_or_default();
        let deps_strategy = self
            .field(table, "deps_strategy", Self::deps_strategy)
            .unwrap_or(DepsStrategy::Key);
        if incremental && inputs.is_empty() {
            let span = table
                .get_key_value("incremental")
                .map_or(at(key), |(k, _)| at(k));
            self.invalid(
                "incremental",
                "an incremental task needs `inputs`",
                &span,
                Some("list the files it checks, e.g. `inputs = [\"**/*.nix\"]`".into()),
            );
        }
        if self.errors.len() > errors_before {
            return None;
        }
        let settings = TaskSettings {
            description,
            inputs,
            outputs,
            input_templates,
            output_templates,
            env,
            dir,
            timeout,
            retries,
            cache,
            shell,
            confirm,
            confirm_when,
            env_hash,
            env_pass,
            deps_strategy,
            incremental,
            service,
            secrets: secrets.map(Box::new),
            executor: executor.map(Box::new),
            plugin: plugin.map(Box::new),
            lock,
            audit,
            protected,
            check: check.map(Box::new),
            rollback,
            matrix,
            rollout,
            remote,
            remote_execution,
            platform,
        };
        Some(TaskDef::new(
            task_name,
            at(key),
            params,
            run,
            deps,
            settings,
        ))
    }

    /// Each text of `key` as a template, in `scope`; a text that is not one is reported and left out.
    fn templates(
        &mut self,
        texts: Vec<Spanned<String>>,
        context: &str,
        key: &str,
        is_dep: bool,
        scope: &Scope<'_>,
    ) -> Vec<Template> {
        texts
            .into_iter()
            .filter_map(|text| {
                self.template(|| format!("`{key}` of {context}"), &text, is_dep, scope)
            })
            .collect()
    }

    /// `inputs` or `outputs` read as templates: a pattern may name vars, params and `{{param.field}}`.
    fn glob_templates(
        &mut self,
        key: &str,
        globs: &[Spanned<String>],
        context: &str,
        scope: &Scope<'_>,
    ) -> Vec<Template> {
        globs
            .iter()
            .filter_map(|glob| {
                self.template(|| format!("`{key}` of {context}"), glob, false, scope)
            })
            .collect()
    }

    /// A string setting that is a template (`lock`, `rollback`), in `scope`.
    fn templated(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
        context: &str,
        scope: &Scope<'_>,
    ) -> Option<Template> {
        let text = self.field(table, key, Self::string)?;
        self.template(|| format!("`{key}` of {context}"), &text, false, scope)
    }

    /// A task's `check`: the health check run after its command, with its tries and their interval.
    fn task_check(
        &mut self,
        value: &Value<'_>,
        context: &str,
        scope: &Scope<'_>,
    ) -> Option<CheckDef> {
        let t = self.table("check", value)?;
        self.check_keys(t, CHECK_KEYS, &format!("`check` of {context}"));
        let run = self.field(t, "run", |w, _, v| w.string("check.run", v));
        if run.is_none() && t.get("run").is_none() {
            self.invalid(
                "check",
                "`check` needs `run`: the health check's command",
                &at(value),
                None,
            );
        }
        let run = self.template(|| format!("`check.run` of {context}"), &run?, false, scope)?;
        let retries = self
            .field(t, "retries", |w, _, v| {
                w.integer("check.retries", v, 0, MAX_RETRIES)
            })
            .unwrap_or(0) as u32;
        let interval = self
            .field(t, "interval", |w, _, v| w.duration("check.interval", v))
            .unwrap_or(std::time::Duration::from_secs(5));
        Some(CheckDef {
            run,
            retries,
            interval,
        })
    }

    /// A task's `env`: variable names checked, values as templates.
    fn task_env(
        &mut self,
        value: &Value<'_>,
        context: &str,
        scope: &Scope<'_>,
    ) -> Vec<(String, Template)> {
        let mut env = Vec::new();
        let Some(env_table) = self.table("env", value) else {
            return env;
        };
        for (env_key, env_value) in env_table.iter() {
            let var: &str = env_key.get_ref();
            let valid = var
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                self.invalid(
                    "env",
                    format!("`{var}` is not a valid environment variable name"),
                    &at(env_key),
                    Some("use letters, digits and `_`, starting with a letter".into()),
                );
                continue;
            }
            if let Some(text) = self.scalar_text(var, env_value) {
                let ctx = || format!("`env.{var}` of {context}");
                if let Some(t) = self.template(ctx, &text, false, scope) {
                    env.push((var.to_owned(), t));
                }
            }
        }
        env
    }

    /// `deps_strategy`: what of a dependency enters the key.
    fn deps_strategy(&mut self, key: &str, value: &Value<'_>) -> Option<DepsStrategy> {
        let text = self.string(key, value)?;
        match text.value.as_str() {
            "key" => Some(DepsStrategy::Key),
            "outputs" => Some(DepsStrategy::Outputs),
            other => {
                self.invalid(
                    "deps_strategy",
                    format!("`{other}` is not a strategy"),
                    &text.span,
                    Some("use `\"key\"` (a dependency's cache key) or `\"outputs\"` (the hash of its outputs)".into()),
                );
                None
            }
        }
    }

    /// A task's `remote`: a boolean, or the most it may do with the remote cache.
    pub(super) fn task_remote(&mut self, value: &Value<'_>) -> Option<RemoteMode> {
        match value.get_ref() {
            DeValue::Boolean(true) => Some(RemoteMode::ReadWrite),
            DeValue::Boolean(false) => Some(RemoteMode::Off),
            DeValue::String(text) => {
                let mode = RemoteMode::parse(text);
                if mode.is_none() {
                    self.invalid(
                        "remote",
                        format!("`{text}` is not a way to use the remote cache"),
                        &at(value),
                        Some("use `false` (or `\"off\"`), `\"read\"` (fetch, never publish), or `\"read-write\"` (or `true`)".into()),
                    );
                }
                mode
            }
            _ => {
                self.wrong_type(
                    "remote",
                    "a boolean or \"off\", \"read\", \"read-write\"",
                    value,
                );
                None
            }
        }
    }

    /// `serial = true` or `max_parallel = N`, which only a task with a matrix can have.
    pub(super) fn rollout(
        &mut self,
        table: &DeTable<'_>,
        matrix: &[MatrixDef],
        task: &Key<'_>,
    ) -> Option<Rollout> {
        let serial = table
            .get_key_value("serial")
            .and_then(|(k, v)| Some((at(k), self.boolean("serial", v)?)));
        let parallel = table
            .get_key_value("max_parallel")
            .and_then(|(k, v)| Some((at(k), self.integer("max_parallel", v, 1, 1 << 16)?)));
        let rollout = match (&serial, &parallel) {
            (Some((_, true)), Some((span, _))) => {
                self.invalid(
                    "max_parallel",
                    "`serial = true` already runs one instance at a time",
                    span,
                    Some("keep one of `serial = true` and `max_parallel`".into()),
                );
                return None;
            }
            (Some((_, true)), None) => Rollout {
                max_parallel: 1,
                serial: true,
            },
            (_, Some((_, n))) => Rollout {
                max_parallel: *n as usize,
                serial: false,
            },
            (Some((_, false)), None) | (None, None) => return None,
        };
        if matrix.is_empty() {
            let span = serial
                .map(|(span, _)| span)
                .or(parallel.map(|(span, _)| span))
                .unwrap_or(at(task));
            self.invalid(
                "tasks",
                "`serial` and `max_parallel` limit how a matrix rolls out, and this task has no `matrix`",
                &span,
                Some("add `matrix.NAME = [...]` (or `{ from = \"file.toml\", key = \"…\" }`) to fan the task out".into()),
            );
            return None;
        }
        Some(rollout)
    }

    pub(super) fn task_secrets(
        &mut self,
        context: &str,
        value: &Value<'_>,
        params: &[ParamDef],
        vars: &[Var],
    ) -> Option<TaskSecrets> {
        let table = self.table("secrets", value)?;
        let secrets_context = format!("`secrets` of {context}");
        self.check_keys(table, SECRETS_KEYS, &secrets_context);
        let scope = Scope {
            params,
            vars,
            allow_args: false,
            allow_changed: false,
            allow_fields: false,
            secrets: &[],
        };
        let from = table
            .get("from")
            .and_then(|v| self.string("secrets.from", v));
        let from_template = match &from {
            Some(from) => Some(self.template(
                || format!("`secrets.from` of {context}"),
                from,
                false,
                &scope,
            )?),
            None => None,
        };
        let mapping = |name: &str, this: &mut Self| -> Vec<(String, Spanned<String>)> {
            let Some(v) = lookup(table, name) else {
                return Vec::new();
            };
            let Some(entries) = this.table(&format!("secrets.{name}"), v) else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for (var_key, key_value) in entries.iter() {
                let var: &str = var_key.get_ref();
                if !is_env_name(var) {
                    this.invalid(
                        &format!("secrets.{name}"),
                        format!("`{var}` is not a valid environment variable name"),
                        &at(var_key),
                        Some("use letters, digits and `_`, starting with a letter".into()),
                    );
                    continue;
                }
                if let Some(key) = this.string(&format!("secrets.{name}.{var}"), key_value) {
                    if key.value.trim().is_empty() {
                        this.invalid(
                            &format!("secrets.{name}"),
                            "the key is empty",
                            &key.span,
                            Some("name a key of the secrets file, dotted for nested ones: `db.password`".into()),
                        );
                        continue;
                    }
                    out.push((var.to_owned(), key));
                }
            }
            out
        };
        let env = mapping("env", self);
        let files = mapping("files", self);
        for (var, key) in &files {
            if env.iter().any(|(other, _)| other == var) {
                self.invalid(
                    "secrets.files",
                    format!("`{var}` is both in `secrets.env` and `secrets.files`"),
                    &key.span,
                    None,
                );
            }
        }
        if env.is_empty() && files.is_empty() {
            self.invalid(
                "secrets",
                "`secrets` gives the task nothing: add `env` or `files`",
                &from.as_ref().map_or(at(value), |f| f.span.clone()),
                Some("e.g. `secrets.env = { DB_PASSWORD = \"db.password\" }`".into()),
            );
        }
        // A key is read from `from` unless it names a plugin: `vault:app/production#db_password`.
        if from.is_none() {
            for (_, key) in env.iter().chain(&files) {
                let provider = key.value.split_once(':').map(|(p, _)| p);
                if !provider.is_some_and(|p| self.plugin_names.iter().any(|n| n == p)) {
                    self.invalid(
                        "secrets",
                        format!("`{}` is read from a secrets file, but `secrets.from` is not set", key.value),
                        &key.span,
                        Some("add `secrets.from = \"secrets/…\"`, or name a secrets plugin: `PLUGIN:ref#field`".into()),
                    );
                }
            }
        }
        let allow_envs = match lookup(table, "allow_envs") {
            Some(v) => self
                .strings("secrets.allow_envs", v)
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.value)
                .collect(),
            None => Vec::new(),
        };
        Some(TaskSecrets {
            from: from_template,
            from_span: from.map_or(at(value), |f| f.span),
            env,
            files,
            allow_envs,
        })
    }
}
