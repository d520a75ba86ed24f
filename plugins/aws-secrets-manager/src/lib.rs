//! Secrets from AWS Secrets Manager: `aws:SECRET_ID#JSON_FIELD@STAGE_OR_VERSION_ID`.
//!
//! Calls `GetSecretValue` over the JSON 1.1 protocol and signs it with SigV4 here in the plugin; the host only
//! supplies the clock (`allow.clock = true`). Credentials come from granted variables (`allow.env`):
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, for temporary credentials, `AWS_SESSION_TOKEN`.

mod sigv4;

use base64::Engine;
use cairn_pdk::api::{
    Capability, Describe, ErrorCode, FieldKind, HttpRequest, HttpResponse, PluginError,
    SecretRequest, SecretValue,
};
use cairn_pdk::serde_json::{self, json, Value};
use cairn_pdk::{clock, config, http, plugin};

use cairn_pdk::config_field as field;

fn describe() -> Describe {
    let mut describe = cairn_pdk::describe(
        "aws-secrets-manager",
        env!("CARGO_PKG_VERSION"),
        &[Capability::Secrets],
    );
    describe.description = "AWS Secrets Manager GetSecretValue, SigV4-signed in the plugin".into();
    describe.config = vec![
        field("region", FieldKind::String, true, "e.g. eu-west-1"),
        field(
            "endpoint",
            FieldKind::Url,
            false,
            "default: https://secretsmanager.REGION.amazonaws.com",
        ),
    ];
    describe
}

fn credential(name: &str) -> Result<String, PluginError> {
    config::env(name).filter(|v| !v.is_empty()).ok_or_else(|| {
        PluginError::new(
            ErrorCode::Unauthenticated,
            format!("`{name}` is not available to the plugin: set it and grant it with `allow.env = [\"{name}\"]`"),
        )
    })
}

fn get(request: SecretRequest) -> Result<SecretValue, PluginError> {
    let region = config::require("region")?;
    let endpoint = config::get("endpoint")
        .unwrap_or_else(|| format!("https://secretsmanager.{region}.amazonaws.com"))
        .trim_end_matches('/')
        .to_string();
    let host = endpoint
        .split_once("://")
        .map_or(endpoint.as_str(), |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let keys = sigv4::Credentials {
        access_key: credential("AWS_ACCESS_KEY_ID")?,
        secret_key: credential("AWS_SECRET_ACCESS_KEY")?,
        session_token: config::env("AWS_SESSION_TOKEN").filter(|t| !t.is_empty()),
    };
    let mut body = json!({ "SecretId": request.reference });
    match request.version.as_deref() {
        Some(stage)
            if stage.starts_with("AWS")
                || stage.chars().all(|c| c.is_ascii_uppercase() || c == '_') =>
        {
            body["VersionStage"] = json!(stage);
        }
        Some(id) => body["VersionId"] = json!(id),
        None => {}
    }
    let body = body.to_string();
    let target = "secretsmanager.GetSecretValue";
    let headers = sigv4::sign(&sigv4::Signing {
        credentials: &keys,
        region: &region,
        service: "secretsmanager",
        host: &host,
        target,
        body: &body,
        now_ms: clock::now_ms(),
    });
    let response = http::request(&HttpRequest {
        method: "POST".into(),
        url: format!("{endpoint}/"),
        headers,
        body: Some(body),
    })?;
    let json = check(&response, &request.reference)?;
    let version = json["VersionId"].as_str().map(String::from);
    let text = if let Some(text) = json["SecretString"].as_str() {
        text.to_string()
    } else if let Some(encoded) = json["SecretBinary"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| {
                PluginError::new(
                    ErrorCode::Internal,
                    format!("SecretBinary is not base64: {e}"),
                )
            })?;
        String::from_utf8(bytes).unwrap_or_else(|_| encoded.to_string())
    } else {
        return Err(PluginError::new(
            ErrorCode::NotFound,
            format!("`{}` has no value", request.reference),
        ));
    };
    let value = match &request.field {
        None => text,
        Some(name) => {
            let parsed: Value = serde_json::from_str(&text).map_err(|_| {
                PluginError::new(
                    ErrorCode::Invalid,
                    format!(
                        "`{}` is not JSON, so it has no field `{name}`",
                        request.reference
                    ),
                )
            })?;
            match parsed.get(name) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => {
                    let keys: Vec<String> = parsed
                        .as_object()
                        .map(|o| o.keys().cloned().collect())
                        .unwrap_or_default();
                    return Err(PluginError::new(
                        ErrorCode::NotFound,
                        format!(
                            "`{}` has no field `{name}` (it has: {})",
                            request.reference,
                            keys.join(", ")
                        ),
                    ));
                }
            }
        }
    };
    Ok(SecretValue { value, version })
}

/// The JSON of a successful answer, else the typed error its `__type` (JSON) or `<Code>` (XML) names.
fn check(response: &HttpResponse, id: &str) -> Result<Value, PluginError> {
    if (200..300).contains(&response.status) {
        return serde_json::from_str(&response.body)
            .map_err(|e| PluginError::new(ErrorCode::Internal, format!("unreadable answer: {e}")));
    }
    let json: Value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    let kind = json["__type"]
        .as_str()
        .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
        .or_else(|| {
            let start = response.body.find("<Code>")? + "<Code>".len();
            let end = response.body[start..].find("</Code>")? + start;
            Some(response.body[start..end].to_string())
        })
        .unwrap_or_default();
    let message = json["message"]
        .as_str()
        .or_else(|| json["Message"].as_str())
        .unwrap_or("")
        .to_string();
    let code = match kind.as_str() {
        "ResourceNotFoundException" => ErrorCode::NotFound,
        "AccessDeniedException" | "AccessDenied" => ErrorCode::PermissionDenied,
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "InvalidClientTokenId"
        | "ExpiredTokenException"
        | "MissingAuthenticationToken" => ErrorCode::Unauthenticated,
        "ThrottlingException" | "InternalServiceError" | "ServiceUnavailable" => {
            ErrorCode::Unavailable
        }
        "InvalidParameterException" | "InvalidRequestException" | "ValidationException" => {
            ErrorCode::Invalid
        }
        _ if response.status == 403 => ErrorCode::Unauthenticated,
        _ if response.status == 429 || response.status >= 500 => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    };
    let detail = if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    };
    Err(PluginError::new(
        code,
        format!("`{id}`: {kind} ({}){detail}", response.status),
    ))
}

plugin! { describe: describe, secrets: get }

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_pdk::api::Reply;
    use cairn_pdk::testing;

    fn setup() {
        testing::set_config(&[
            ("region", "us-east-1"),
            ("endpoint", "http://127.0.0.1:5055"),
            ("env.AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            (
                "env.AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            ),
        ]);
    }

    #[test]
    fn a_json_field_of_a_secret_string_is_returned() {
        setup();
        testing::set_http(|request| {
            assert!(request
                .headers
                .iter()
                .any(|(k, v)| k == "x-amz-target" && v == "secretsmanager.GetSecretValue"));
            assert!(request.headers.iter().any(|(k, v)| k == "authorization"
                && v.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")));
            assert!(request
                .body
                .as_deref()
                .unwrap()
                .contains("\"VersionStage\":\"AWSPREVIOUS\""));
            Ok(HttpResponse {
                status: 200,
                headers: vec![],
                body: r#"{"SecretString":"{\"password\":\"pw1\"}","VersionId":"v-1"}"#.into(),
            })
        });
        let reply = testing::call(
            get,
            &json!({"ref": "app/prod", "field": "password", "version": "AWSPREVIOUS"}),
        );
        let Reply::Ok(value) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(value.value, "pw1");
    }

    #[test]
    fn error_types_in_json_and_xml_are_mapped() {
        setup();
        for (status, body, code) in [
            (
                400,
                r#"{"__type":"ResourceNotFoundException","message":"no"}"#,
                ErrorCode::NotFound,
            ),
            (
                400,
                r#"{"__type":"com.amazonaws#AccessDeniedException"}"#,
                ErrorCode::PermissionDenied,
            ),
            (
                403,
                "<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code></Error></ErrorResponse>",
                ErrorCode::Unauthenticated,
            ),
            (
                400,
                r#"{"__type":"ThrottlingException"}"#,
                ErrorCode::Unavailable,
            ),
        ] {
            testing::set_http(move |_| {
                Ok(HttpResponse {
                    status,
                    headers: vec![],
                    body: body.into(),
                })
            });
            let reply = testing::call(get, &json!({"ref": "x"}));
            assert!(
                matches!(reply, Reply::Error(ref e) if e.code == code),
                "{body}: {reply:?}"
            );
        }
    }
}
