//! Secrets from HashiCorp Vault or OpenBao (KV version 2, or 1): `vault:PATH#FIELD[@VERSION]`.
//!
//! Needs `allow.hosts` for the server's host and port, and `allow.env` for its credentials: `VAULT_TOKEN`, or
//! `VAULT_ROLE_ID` and `VAULT_SECRET_ID` with `auth = "approle"`. The token never appears in tasks.toml.

use std::cell::RefCell;

use cairn_pdk::api::{
    Capability, Describe, ErrorCode, FieldKind, HttpRequest, HttpResponse, PluginError,
    SecretRequest, SecretValue,
};
use cairn_pdk::serde_json::{self, Value};
use cairn_pdk::{config, http, log, plugin};

thread_local! {
    /// The AppRole login's token, reused for the rest of the run.
    static LOGIN: RefCell<Option<String>> = const { RefCell::new(None) };
}

use cairn_pdk::config_field as field;

fn describe() -> Describe {
    let mut describe =
        cairn_pdk::describe("vault", env!("CARGO_PKG_VERSION"), &[Capability::Secrets]);
    describe.description = "HashiCorp Vault / OpenBao KV secrets (token or AppRole)".into();
    describe.config = vec![
        field(
            "address",
            FieldKind::Url,
            true,
            "the server, e.g. https://vault.example.com:8200",
        ),
        field(
            "mount",
            FieldKind::String,
            false,
            "the KV engine's mount (default: secret)",
        ),
        field(
            "kv_version",
            FieldKind::Integer,
            false,
            "1 or 2 (default: 2)",
        ),
        field(
            "namespace",
            FieldKind::String,
            false,
            "Vault Enterprise / OpenBao namespace",
        ),
        field(
            "auth",
            FieldKind::String,
            false,
            "token (default: VAULT_TOKEN) or approle (VAULT_ROLE_ID, VAULT_SECRET_ID)",
        ),
        field(
            "approle_mount",
            FieldKind::String,
            false,
            "the AppRole auth mount (default: approle)",
        ),
    ];
    describe
}

fn missing_grant(variable: &str) -> PluginError {
    PluginError::new(
        ErrorCode::Unauthenticated,
        format!("`{variable}` is not available to the plugin: set it and grant it with `allow.env = [\"{variable}\"]`"),
    )
}

fn headers(token: Option<&str>) -> Vec<(String, String)> {
    let mut headers = vec![("accept".to_string(), "application/json".to_string())];
    if let Some(token) = token {
        headers.push(("x-vault-token".into(), token.into()));
    }
    if let Some(namespace) = config::get("namespace").filter(|n| !n.is_empty()) {
        headers.push(("x-vault-namespace".into(), namespace));
    }
    headers
}

fn base() -> Result<String, PluginError> {
    Ok(config::require("address")?
        .trim_end_matches('/')
        .to_string())
}

/// A token: `VAULT_TOKEN`, or an AppRole login done once per run.
fn token() -> Result<String, PluginError> {
    match config::get("auth").as_deref().unwrap_or("token") {
        "token" => config::env("VAULT_TOKEN")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| missing_grant("VAULT_TOKEN")),
        "approle" => {
            if let Some(token) = LOGIN.with(|l| l.borrow().clone()) {
                return Ok(token);
            }
            let role_id =
                config::env("VAULT_ROLE_ID").ok_or_else(|| missing_grant("VAULT_ROLE_ID"))?;
            let secret_id =
                config::env("VAULT_SECRET_ID").ok_or_else(|| missing_grant("VAULT_SECRET_ID"))?;
            let mount = config::get("approle_mount").unwrap_or_else(|| "approle".into());
            let body =
                serde_json::json!({ "role_id": role_id, "secret_id": secret_id }).to_string();
            let response = http::request(&HttpRequest {
                method: "POST".into(),
                url: format!("{}/v1/auth/{mount}/login", base()?),
                headers: headers(None),
                body: Some(body),
            })?;
            let json = check(&response, "the AppRole login")?;
            let token = json["auth"]["client_token"]
                .as_str()
                .ok_or_else(|| {
                    PluginError::new(ErrorCode::Internal, "the AppRole login returned no token")
                })?
                .to_string();
            LOGIN.with(|l| *l.borrow_mut() = Some(token.clone()));
            Ok(token)
        }
        other => Err(PluginError::new(
            ErrorCode::Invalid,
            format!("`auth = \"{other}\"`: use \"token\" or \"approle\""),
        )),
    }
}

/// The response's JSON when it succeeded, else the typed error its status means.
fn check(response: &HttpResponse, what: &str) -> Result<Value, PluginError> {
    let json: Value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    let reasons = json["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|r| !r.is_empty())
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let error = |code, message: String| Err(PluginError::new(code, message));
    match response.status {
        200..=299 => Ok(json),
        400 => error(ErrorCode::Invalid, format!("{what}: bad request{reasons}")),
        401 => error(ErrorCode::Unauthenticated, format!("{what}: not authenticated{reasons}")),
        403 => error(ErrorCode::PermissionDenied, format!("{what}: permission denied (a wrong or expired token, or a policy that does not allow it){reasons}")),
        404 => {
            let deleted = json["data"]["metadata"]["deletion_time"].as_str().is_some_and(|t| !t.is_empty())
                || json["data"]["metadata"]["destroyed"].as_bool() == Some(true);
            if deleted {
                error(ErrorCode::NotFound, format!("{what}: this version was deleted"))
            } else {
                error(ErrorCode::NotFound, format!("{what}: no such secret"))
            }
        }
        429 | 500..=599 => error(ErrorCode::Unavailable, format!("{what}: the server answered {}{reasons}", response.status)),
        status => error(ErrorCode::Internal, format!("{what}: unexpected status {status}")),
    }
}

fn get(request: SecretRequest) -> Result<SecretValue, PluginError> {
    let mount = config::get("mount").unwrap_or_else(|| "secret".into());
    let version2 = config::get("kv_version").as_deref() != Some("1");
    let path = request.reference.trim_matches('/');
    let mut url = if version2 {
        format!("{}/v1/{mount}/data/{path}", base()?)
    } else {
        format!("{}/v1/{mount}/{path}", base()?)
    };
    if let Some(version) = &request.version {
        if !version2 {
            return Err(PluginError::new(
                ErrorCode::Invalid,
                "KV version 1 keeps no versions: drop `@…`",
            ));
        }
        if version.parse::<u64>().is_err() {
            return Err(PluginError::new(
                ErrorCode::Invalid,
                format!("`@{version}`: a version is a number"),
            ));
        }
        url.push_str(&format!("?version={version}"));
    }
    let token = token()?;
    log::debug(format!("reading {mount}/{path}"));
    let response = http::request(&HttpRequest {
        method: "GET".into(),
        url,
        headers: headers(Some(&token)),
        body: None,
    })?;
    let json = check(&response, &format!("`{path}`"))?;
    let data = if version2 {
        &json["data"]["data"]
    } else {
        &json["data"]
    };
    let version = json["data"]["metadata"]["version"]
        .as_u64()
        .map(|v| v.to_string());
    let object = data
        .as_object()
        .ok_or_else(|| PluginError::new(ErrorCode::NotFound, format!("`{path}` holds no data")))?;
    let value = match &request.field {
        Some(name) => object.get(name).ok_or_else(|| {
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            PluginError::new(
                ErrorCode::NotFound,
                format!(
                    "`{path}` has no field `{name}` (it has: {})",
                    keys.join(", ")
                ),
            )
        })?,
        None if object.len() == 1 => object.values().next().expect("one value"),
        None => {
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            return Err(PluginError::new(
                ErrorCode::Invalid,
                format!(
                    "`{path}` holds several fields; name one: `{path}#{}`",
                    keys.join("` or `#")
                ),
            ));
        }
    };
    let value = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    Ok(SecretValue { value, version })
}

plugin! { describe: describe, secrets: get }

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_pdk::api::Reply;
    use cairn_pdk::serde_json::json;
    use cairn_pdk::testing;

    fn answer(status: u16, body: Value) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![],
            body: body.to_string(),
        }
    }

    #[test]
    fn a_field_of_a_kv2_secret_is_read_with_the_token() {
        testing::set_config(&[
            ("address", "http://127.0.0.1:8200/"),
            ("env.VAULT_TOKEN", "root"),
            ("namespace", "team"),
        ]);
        testing::set_http(|request| {
            assert_eq!(
                request.url,
                "http://127.0.0.1:8200/v1/secret/data/app/prod?version=2"
            );
            assert!(request
                .headers
                .contains(&("x-vault-token".into(), "root".into())));
            assert!(request
                .headers
                .contains(&("x-vault-namespace".into(), "team".into())));
            Ok(answer(
                200,
                json!({"data": {"data": {"pw": "s3cret", "user": "u"}, "metadata": {"version": 2}}}),
            ))
        });
        let reply = testing::call(
            get,
            &json!({"ref": "app/prod", "field": "pw", "version": "2"}),
        );
        let Reply::Ok(value) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(
            (value.value.as_str(), value.version.as_deref()),
            ("s3cret", Some("2"))
        );
    }

    #[test]
    fn statuses_map_to_typed_errors() {
        testing::set_config(&[("address", "http://v:1"), ("env.VAULT_TOKEN", "t")]);
        for (status, body, code) in [
            (
                403,
                json!({"errors": ["permission denied"]}),
                ErrorCode::PermissionDenied,
            ),
            (404, json!({"errors": []}), ErrorCode::NotFound),
            (
                404,
                json!({"data": {"data": null, "metadata": {"deletion_time": "2026-01-01T00:00:00Z"}}}),
                ErrorCode::NotFound,
            ),
            (503, json!({"errors": ["sealed"]}), ErrorCode::Unavailable),
        ] {
            testing::set_http(move |_| Ok(answer(status, body.clone())));
            let reply = testing::call(get, &json!({"ref": "x", "field": "f"}));
            assert!(
                matches!(reply, Reply::Error(ref e) if e.code == code),
                "{status}: {reply:?}"
            );
        }
        testing::set_config(&[("address", "http://v:1")]);
        let reply = testing::call(get, &json!({"ref": "x"}));
        assert!(
            matches!(reply, Reply::Error(ref e) if e.message.contains("allow.env = [\"VAULT_TOKEN\"]"))
        );
    }
}
