//! A task plugin that fetches `config.url` through cairn's HTTP function and fails unless the answer is
//! 2xx: a health check for a deploy, and the smallest example of a plugin that needs `allow.hosts`.

use cairn_pdk::api::{
    Capability, ConfigField, Describe, FieldKind, PluginError, TaskRequest, TaskResponse,
};
use cairn_pdk::{config, http, log, plugin};

fn describe() -> Describe {
    let mut describe =
        cairn_pdk::describe("http-get", env!("CARGO_PKG_VERSION"), &[Capability::Task]);
    describe.description = "GET config.url; succeed on 2xx".into();
    describe.config = vec![ConfigField {
        name: "url".into(),
        kind: FieldKind::Url,
        required: true,
        description: "what to fetch (its host and port must be in allow.hosts)".into(),
    }];
    describe
}

fn run(_request: TaskRequest) -> Result<TaskResponse, PluginError> {
    let url = config::require("url")?;
    log::debug(format!("GET {url}"));
    let response = http::get(&url, &[("accept", "*/*")])?;
    let ok = (200..300).contains(&response.status);
    let location = response
        .headers
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| format!(" (redirect to {v}, not followed)"))
        .unwrap_or_default();
    Ok(TaskResponse {
        status: i32::from(!ok),
        diagnostics: Vec::new(),
        output: format!(
            "GET {url}: {}{location}\n{}",
            response.status,
            response.body.trim_end()
        ),
    })
}

plugin! { describe: describe, task: run }

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_pdk::api::{HttpResponse, Reply};
    use cairn_pdk::testing;

    #[test]
    fn a_2xx_answer_succeeds_and_a_redirect_is_reported_not_followed() {
        testing::set_config(&[("url", "http://127.0.0.1:9/health")]);
        testing::set_http(|_| {
            Ok(HttpResponse {
                status: 302,
                headers: vec![("location".into(), "http://elsewhere/".into())],
                body: String::new(),
            })
        });
        let request = cairn_pdk::serde_json::json!({"task": "check", "files": []});
        let Reply::Ok(response) = testing::call(run, &request) else {
            panic!()
        };
        assert_eq!(response.status, 1);
        assert!(response
            .output
            .contains("302 (redirect to http://elsewhere/, not followed)"));
    }
}
