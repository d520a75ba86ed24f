//! A secrets provider over host environment variables the user granted (`allow.env`): the way to hand a
//! CI system's credentials to tasks with cairn's redaction. `secrets.env = { TOKEN = "env-secrets:CI_TOKEN" }`.

use cairn_pdk::api::{Capability, Describe, ErrorCode, PluginError, SecretRequest, SecretValue};
use cairn_pdk::{config, plugin};

fn describe() -> Describe {
    let mut describe = cairn_pdk::describe(
        "env-secrets",
        env!("CARGO_PKG_VERSION"),
        &[Capability::Secrets],
    );
    describe.description = "secrets from host environment variables granted with allow.env".into();
    describe
}

fn get(request: SecretRequest) -> Result<SecretValue, PluginError> {
    if request.field.is_some() {
        return Err(PluginError::new(
            ErrorCode::Invalid,
            "an environment variable has no fields: drop `#…`",
        ));
    }
    let value = config::env(&request.reference).ok_or_else(|| {
        PluginError::new(
            ErrorCode::NotFound,
            format!(
                "`{}` is not set, or not granted with allow.env",
                request.reference
            ),
        )
    })?;
    Ok(SecretValue {
        value,
        version: None,
    })
}

plugin! { describe: describe, secrets: get }

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_pdk::api::Reply;
    use cairn_pdk::testing;

    #[test]
    fn granted_variables_are_returned_and_others_are_not_found() {
        testing::set_config(&[("env.CI_TOKEN", "tok-123")]);
        let reply = testing::call(get, &cairn_pdk::serde_json::json!({"ref": "CI_TOKEN"}));
        assert!(matches!(reply, Reply::Ok(ref v) if v.value == "tok-123"));
        let reply = testing::call(get, &cairn_pdk::serde_json::json!({"ref": "HOME"}));
        assert!(matches!(reply, Reply::Error(ref e) if e.code == ErrorCode::NotFound));
    }
}
