//! An executor: runs each command of a task behind a fixed prefix (`config.prefix`, words separated by
//! spaces), e.g. `nice -n 10` or `env LC_ALL=C`. cairn still starts the process; the plugin only rewrites it.

use cairn_pdk::api::{Capability, Describe, PluginError, WrapRequest, WrapResponse};
use cairn_pdk::{config, plugin};

fn describe() -> Describe {
    let mut describe = cairn_pdk::describe(
        "prefix-exec",
        env!("CARGO_PKG_VERSION"),
        &[Capability::Executor],
    );
    describe.description = "runs commands behind config.prefix".into();
    describe.config = vec![cairn_pdk::api::ConfigField {
        name: "prefix".into(),
        kind: cairn_pdk::api::FieldKind::String,
        required: true,
        description: "words put before every command".into(),
    }];
    describe
}

fn wrap(request: WrapRequest) -> Result<WrapResponse, PluginError> {
    let prefix = config::require("prefix")?;
    let mut argv: Vec<String> = prefix.split_whitespace().map(String::from).collect();
    argv.extend(request.argv);
    let mut set_env = std::collections::BTreeMap::new();
    set_env.insert("CAIRN_EXECUTOR".to_string(), "prefix-exec".to_string());
    Ok(WrapResponse {
        argv,
        cwd: None,
        set_env,
    })
}

plugin! { describe: describe, executor: wrap }

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_pdk::api::Reply;
    use cairn_pdk::testing;

    #[test]
    fn the_prefix_goes_before_the_command() {
        testing::set_config(&[("prefix", "env LC_ALL=C")]);
        let request = cairn_pdk::serde_json::json!({"task": "t", "argv": ["sh", "-c", "echo"], "cwd": "/", "env": []});
        let Reply::Ok(response) = testing::call(wrap, &request) else {
            panic!()
        };
        assert_eq!(response.argv, ["env", "LC_ALL=C", "sh", "-c", "echo"]);
    }
}
