//! `[remote_cache]`: the server, the mode, credentials and trusted writers.

use super::{
    at, parse_public_key, Credential, DeValue, ExecutionMode, Key, RemoteCacheDef,
    RemoteExecutionDef, RemoteMode, Spanned, TrustedWriter, Value, Walker,
    DEFAULT_EXECUTION_CALL_TIMEOUT, DEFAULT_REMOTE_JOBS, DEFAULT_REMOTE_TIMEOUT, EXECUTION_KEYS,
    PUBLIC_KEY_PREFIX, REMOTE_KEYS,
};

impl Walker<'_> {
    /// `[remote_cache]`.
    pub(super) fn remote_cache(
        &mut self,
        key: &Key<'_>,
        value: &Value<'_>,
    ) -> Option<RemoteCacheDef> {
        let table = self.table("remote_cache", value)?;
        self.check_keys(table, REMOTE_KEYS, "[remote_cache]");
        let url = table.get("url").and_then(|v| self.string("url", v));
        if let Some(url) = &url {
            let scheme_ok = ["http://", "https://", "grpc://", "grpcs://"]
                .iter()
                .any(|scheme| url.value.starts_with(scheme));
            if !scheme_ok {
                self.invalid(
                    "url",
                    "the remote cache is reached over HTTP (the Bazel HTTP cache protocol) or gRPC (a REAPI server)",
                    &url.span,
                    Some("write it as `https://cache.example.com/cairn` or `grpcs://remote.example.com:443` (`http://`, `grpc://` on a trusted network)".into()),
                );
            }
        }
        let mut mode = RemoteMode::Read;
        if let Some(v) = table.get("mode") {
            if let Some(text) = self.string("mode", v) {
                match RemoteMode::parse(&text.value) {
                    Some(parsed) => mode = parsed,
                    None => self.invalid(
                        "mode",
                        format!("`{}` is not a mode", text.value),
                        &text.span,
                        Some("use `\"read\"` (the default), `\"read-write\"` or `\"off\"`".into()),
                    ),
                }
            }
        }
        let spanned = |value: &Value<'_>, credential: Credential| Spanned {
            value: credential,
            span: at(value),
        };
        let token = table
            .get("token")
            .and_then(|v| Some(spanned(v, self.credential("token", v)?)));
        let signing_key = table
            .get("signing_key")
            .and_then(|v| Some(spanned(v, self.credential("signing_key", v)?)));
        let mut trusted_writers = Vec::new();
        if let Some(v) = table.get("trusted_writers") {
            match v.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        if let Some(writer) = self.trusted_writer(item) {
                            trusted_writers.push(writer);
                        }
                    }
                }
                _ => self.wrong_type("trusted_writers", "an array of keys", v),
            }
        }
        let timeout = table
            .get("timeout")
            .and_then(|v| self.duration("timeout", v))
            .unwrap_or(DEFAULT_REMOTE_TIMEOUT);
        let ca_file = table.get("ca_file").and_then(|v| self.string("ca_file", v));
        Some(RemoteCacheDef {
            url,
            mode,
            token,
            signing_key,
            trusted_writers,
            timeout,
            ca_file,
            span: at(key),
        })
    }

    /// `[remote_execution]`.
    pub(super) fn remote_execution(
        &mut self,
        key: &Key<'_>,
        value: &Value<'_>,
    ) -> Option<RemoteExecutionDef> {
        let table = self.table("remote_execution", value)?;
        self.check_keys(table, EXECUTION_KEYS, "[remote_execution]");
        let url = table.get("url").and_then(|v| self.string("url", v));
        if let Some(url) = &url {
            if !(url.value.starts_with("grpc://") || url.value.starts_with("grpcs://")) {
                self.invalid(
                    "url",
                    "an execution engine is reached over gRPC",
                    &url.span,
                    Some("write it as `grpcs://remote.example.com:443` (or `grpc://127.0.0.1:8980` on a trusted network)".into()),
                );
            }
        }
        let instance_name = table
            .get("instance_name")
            .and_then(|v| self.string("instance_name", v))
            .map(|s| s.value)
            .unwrap_or_default();
        let platform = table
            .get("platform")
            .and_then(|v| self.platform("platform", v))
            .unwrap_or_default();
        let jobs = table
            .get("jobs")
            .and_then(|v| self.integer("jobs", v, 1, 10_000))
            .map_or(DEFAULT_REMOTE_JOBS, |n| n as usize);
        let timeout = table
            .get("timeout")
            .and_then(|v| self.duration("timeout", v))
            .unwrap_or(DEFAULT_EXECUTION_CALL_TIMEOUT);
        let token = table.get("token").and_then(|v| {
            Some(Spanned {
                value: self.credential("token", v)?,
                span: at(v),
            })
        });
        let mut mode = ExecutionMode::Auto;
        if let Some(text) = table.get("mode").and_then(|v| self.string("mode", v)) {
            match ExecutionMode::parse(&text.value) {
                Some(parsed) => mode = parsed,
                None => self.invalid(
                    "mode",
                    format!("`{}` is not a mode", text.value),
                    &text.span,
                    Some("use `\"auto\"` (the default), `\"required\"` or `\"off\"`".into()),
                ),
            }
        }
        let ca_file = table.get("ca_file").and_then(|v| self.string("ca_file", v));
        Some(RemoteExecutionDef {
            url,
            instance_name,
            platform,
            jobs,
            timeout,
            token,
            mode,
            ca_file,
            span: at(key),
        })
    }

    /// A table of REAPI platform properties: names to string values.
    pub(super) fn platform(
        &mut self,
        key: &str,
        value: &Value<'_>,
    ) -> Option<Vec<(String, String)>> {
        let table = self.table(key, value)?;
        let mut properties = Vec::new();
        for (name, value) in table.iter() {
            let text = self.scalar_text(&format!("{key}.{}", name.get_ref()), value)?;
            properties.push((name.get_ref().to_string(), text.value));
        }
        properties.sort();
        Some(properties)
    }

    /// `{ env = "VAR" }`, `{ file = "path" }` or `{ secret = "key", from = "secrets/file" }`.
    pub(super) fn credential(&mut self, key: &str, value: &Value<'_>) -> Option<Credential> {
        let example = format!(
            "for example `{key} = {{ env = \"CAIRN_REMOTE_{}\" }}`, `{{ file = \"~/.config/cairn/{key}\" }}` or `{{ secret = \"remote-cache.{key}\", from = \"secrets/ci.yaml\" }}`",
            key.to_ascii_uppercase()
        );
        let DeValue::Table(spec) = value.get_ref() else {
            self.invalid(
                key,
                "a credential is named by where it is kept, never written here",
                &at(value),
                Some(example),
            );
            return None;
        };
        self.check_keys(spec, super::CREDENTIAL_KEYS, &format!("`{key}`"));
        let text = |walker: &mut Self, name: &str| {
            spec.get(name)
                .and_then(|v| walker.string(&format!("{key}.{name}"), v))
                .map(|s| s.value)
        };
        match (
            text(self, "env"),
            text(self, "file"),
            text(self, "secret"),
            text(self, "from"),
        ) {
            (Some(var), None, None, None) => Some(Credential::Env(var)),
            (None, Some(path), None, None) => Some(Credential::File(path)),
            (None, None, Some(secret), Some(from)) => {
                Some(Credential::Secret { from, key: secret })
            }
            (None, None, Some(_), None) => {
                self.invalid(
                    key,
                    "`secret` needs `from`, the secrets file that holds it",
                    &at(value),
                    Some(example),
                );
                None
            }
            _ => {
                self.invalid(
                    key,
                    "name one place: `env`, `file`, or `secret` with `from`",
                    &at(value),
                    Some(example),
                );
                None
            }
        }
    }

    /// `"ed25519:<base64>"` or `{ name = "ci", key = "ed25519:<base64>" }`.
    pub(super) fn trusted_writer(&mut self, value: &Value<'_>) -> Option<TrustedWriter> {
        let (name, text) = match value.get_ref() {
            DeValue::String(_) => (None, self.string("trusted_writers", value)?),
            DeValue::Table(spec) => {
                self.check_keys(spec, super::WRITER_KEYS, "a trusted writer");
                let name = spec
                    .get("name")
                    .and_then(|v| self.string("trusted_writers.name", v));
                let Some(key) = spec
                    .get("key")
                    .and_then(|v| self.string("trusted_writers.key", v))
                else {
                    self.invalid(
                        "trusted_writers",
                        "a trusted writer needs its `key`",
                        &at(value),
                        Some("`{ name = \"ci\", key = \"ed25519:…\" }`; `cairn cache keygen` prints a key".into()),
                    );
                    return None;
                };
                (name.map(|n| n.value), key)
            }
            _ => {
                self.wrong_type(
                    "trusted_writers",
                    "a key string or a { name, key } table",
                    value,
                );
                return None;
            }
        };
        match parse_public_key(&text.value) {
            Ok(key) => Some(TrustedWriter {
                name: name.unwrap_or_else(|| {
                    let encoded = text.value.trim();
                    encoded[..encoded.len().min(PUBLIC_KEY_PREFIX.len() + 8)].to_owned()
                }),
                key,
                span: text.span,
            }),
            Err(reason) => {
                self.invalid(
                    "trusted_writers",
                    reason,
                    &text.span,
                    Some("a writer's public key looks like `ed25519:` and 44 base64 characters; `cairn cache keygen` prints one".into()),
                );
                None
            }
        }
    }
}
