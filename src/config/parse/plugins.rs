//! `[plugins]`: modules, pins, config, grants and limits; tasks' references to them.

use super::{
    at, check_host_port, did_you_mean, is_env_name, template, DeValue, PluginDef, PluginLimits,
    PluginSetting, PluginValue, Spanned, Value, Walker, ALLOW_KEYS, LIMIT_KEYS, PLUGIN_KEYS,
};

impl Walker<'_> {
    /// A task's `executor` or `plugin`: the name of a declared plugin.
    pub(super) fn plugin_reference(
        &mut self,
        key: &str,
        value: &Value<'_>,
    ) -> Option<Spanned<String>> {
        let name = self.string(key, value)?;
        if !self.plugin_names.contains(&name.value) {
            let help = did_you_mean(&name.value, self.plugin_names.iter().map(String::as_str))
                .or_else(|| {
                    Some(format!(
                        "declare it: `[plugins.{}]` with `source = \"plugins/dist/{}.wasm\"`",
                        name.value, name.value
                    ))
                });
            self.invalid(
                key,
                format!("no plugin named `{}`", name.value),
                &name.span,
                help,
            );
            return None;
        }
        Some(name)
    }

    pub(super) fn plugins(&mut self, value: Option<&Value<'_>>) -> Vec<PluginDef> {
        let Some(table) = value.and_then(|v| self.table("plugins", v)) else {
            return Vec::new();
        };
        let mut plugins = Vec::new();
        for (key, value) in table.iter() {
            let name: &str = key.get_ref();
            if !template::is_identifier(name) {
                self.invalid(
                    "plugins",
                    format!("`{name}` cannot be a plugin name"),
                    &at(key),
                    Some("use letters, digits, `_` and `-`, starting with a letter".into()),
                );
                continue;
            }
            let context = format!("[plugins.{name}]");
            let Some(table) = self.table(&format!("plugins.{name}"), value) else {
                continue;
            };
            self.check_keys(table, PLUGIN_KEYS, &context);
            let Some(source) = table.get("source").and_then(|v| self.string("source", v)) else {
                if table.get("source").is_none() {
                    self.invalid(
                        "plugins",
                        format!("plugin `{name}` has no `source`"),
                        &at(key),
                        Some(format!("add `source = \"plugins/dist/{name}.wasm\"`")),
                    );
                }
                continue;
            };
            let sha256 = table.get("sha256").and_then(|v| self.string("sha256", v));
            if let Some(sha) = &sha256 {
                if sha.value.len() != 64 || !sha.value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    self.invalid(
                        "sha256",
                        "expected 64 hexadecimal digits",
                        &sha.span,
                        Some(
                            "`cairn plugins lock` writes the hash of every plugin to plugins.lock"
                                .into(),
                        ),
                    );
                }
            }
            let built_by = table
                .get("built_by")
                .and_then(|v| self.string("built_by", v));
            match crate::config::remote_source(&source.value) {
                Some(Err(reason)) => {
                    self.invalid("source", reason, &source.span, Some(
                        "e.g. `https://example.org/lint.wasm` or `github:owner/repo@v1.2.0/lint.wasm`".into(),
                    ));
                }
                Some(Ok(_)) if built_by.is_some() => {
                    if let Some(task) = &built_by {
                        self.invalid(
                            "built_by",
                            "a downloaded plugin is trusted by its pinned hash, not by a build here",
                            &task.span,
                            Some("remove `built_by`, and pin it: `cairn plugins lock` or `sha256 = \"…\"`".into()),
                        );
                    }
                }
                _ => {}
            }
            let mut config = Vec::new();
            if let Some(v) = table.get("config") {
                if let Some(entries) = self.table("config", v) {
                    for (k, v) in entries.iter() {
                        let text = match v.get_ref() {
                            DeValue::String(t) => Some(PluginValue::String(t.to_string())),
                            DeValue::Integer(i) => {
                                Some(PluginValue::Integer(i.as_str().to_owned()))
                            }
                            DeValue::Boolean(b) => Some(PluginValue::Boolean(*b)),
                            _ => {
                                self.wrong_type(
                                    &format!("config.{}", k.get_ref()),
                                    "a string, an integer or a boolean",
                                    v,
                                );
                                None
                            }
                        };
                        if let Some(text) = text {
                            config.push(PluginSetting {
                                key: Spanned {
                                    value: k.get_ref().to_string(),
                                    span: at(k),
                                },
                                value: text,
                                span: at(v),
                            });
                        }
                    }
                }
            }
            let (mut hosts, mut env, mut clock) = (Vec::new(), Vec::new(), false);
            if let Some(v) = table.get("allow") {
                if let Some(allow) = self.table("allow", v) {
                    self.check_keys(allow, ALLOW_KEYS, &format!("{context} allow"));
                    if let Some(v) = allow.get("hosts") {
                        for host in self.strings("allow.hosts", v).unwrap_or_default() {
                            match check_host_port(&host.value) {
                                Ok(()) => hosts.push(host),
                                Err(why) => self.invalid("allow.hosts", why, &host.span, None),
                            }
                        }
                    }
                    if let Some(v) = allow.get("env") {
                        env = self.strings("allow.env", v).unwrap_or_default();
                    }
                    if let Some(v) = allow.get("clock") {
                        clock = self.boolean("allow.clock", v).unwrap_or(false);
                    }
                }
            }
            let mut limits = PluginLimits::default();
            if let Some(v) = table.get("limits") {
                if let Some(l) = self.table("limits", v) {
                    self.check_keys(l, LIMIT_KEYS, &format!("{context} limits"));
                    limits.timeout = l
                        .get("timeout")
                        .and_then(|v| self.duration("limits.timeout", v));
                    limits.memory = l.get("memory").and_then(|v| self.size("limits.memory", v));
                    limits.fuel = l
                        .get("fuel")
                        .and_then(|v| self.integer("limits.fuel", v, 1, i64::MAX))
                        .map(|f| f as u64);
                }
            }
            let events = table
                .get("events")
                .and_then(|v| self.boolean("events", v))
                .unwrap_or(false);
            let trust_full = match table.get("trust").and_then(|v| self.string("trust", v)) {
                Some(trust) if trust.value == "full" => true,
                Some(trust) if trust.value == "sandbox" => false,
                Some(trust) => {
                    self.invalid(
                        "trust",
                        format!("`{}` is not a level of trust", trust.value),
                        &trust.span,
                        Some("`\"sandbox\"` (the default) or `\"full\"` (needed to be an `executor`)".into()),
                    );
                    false
                }
                None => false,
            };
            let mut secrets = Vec::new();
            if let Some(v) = table.get("secrets") {
                if let Some(entries) = self.table("secrets", v) {
                    for (k, v) in entries.iter() {
                        let name: &str = k.get_ref();
                        if !is_env_name(name) {
                            self.invalid(
                                "secrets",
                                format!("`{name}` is not a valid variable name"),
                                &at(k),
                                None,
                            );
                            continue;
                        }
                        if let Some(reference) = self.string(&format!("secrets.{name}"), v) {
                            if !reference.value.contains('#') {
                                self.invalid(
                                    "secrets",
                                    "expected FILE#KEY",
                                    &reference.span,
                                    Some(
                                        "e.g. `\"secrets/production/aws.yaml#secret_access_key\"`"
                                            .into(),
                                    ),
                                );
                                continue;
                            }
                            secrets.push((name.to_string(), reference));
                        }
                    }
                }
            }
            plugins.push(PluginDef {
                name: name.to_string(),
                span: at(key),
                source,
                sha256,
                built_by,
                config,
                allow_hosts: hosts,
                allow_env: env,
                allow_clock: clock,
                limits,
                events,
                trust_full,
                secrets,
            });
        }
        plugins
    }
}
