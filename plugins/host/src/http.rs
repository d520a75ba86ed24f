//! `cairn_http`: the only way a plugin reaches the network. The URL's host and port must both be granted,
//! redirects are handed back to the plugin instead of followed, proxies from the environment are ignored,
//! and a denied URL is reported through the redactor (URLs can carry tokens).

use std::io::Read;
use std::time::Duration;

use cairn_plugin_api::{ErrorCode, HttpRequest, HttpResponse, LogLevel, PluginError, Reply};

use crate::Context;

/// Responses larger than this are refused, so a plugin cannot make the host buffer without bound.
const MAX_BODY: u64 = 16 << 20;

pub(crate) fn serve(
    context: &Context,
    request: &str,
    remaining: Option<Duration>,
) -> Reply<HttpResponse> {
    let request: HttpRequest = match serde_json::from_str(request) {
        Ok(request) => request,
        Err(e) => {
            return Reply::Error(PluginError::new(
                ErrorCode::Invalid,
                format!("malformed request: {e}"),
            ))
        }
    };
    let url = match url::Url::parse(&request.url) {
        Ok(url) => url,
        Err(e) => {
            return Reply::Error(PluginError::new(
                ErrorCode::Invalid,
                format!("malformed URL: {e}"),
            ))
        }
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Reply::Error(PluginError::new(ErrorCode::Invalid, "the URL has no host"));
    };
    if !matches!(url.scheme(), "http" | "https") || !context.grants.allows(host, port) {
        let granted: Vec<String> = context
            .grants
            .hosts
            .iter()
            .map(ToString::to_string)
            .collect();
        let message = context.sink.redact(&format!(
            "request to {} refused: {host}:{port} is not in allow.hosts ({})",
            request.url,
            granted.join(", ")
        ));
        context.sink.log(&context.plugin, LogLevel::Warn, &message);
        return Reply::Error(PluginError::new(ErrorCode::PermissionDenied, message));
    }
    let timeout = remaining
        .unwrap_or(Duration::from_secs(30))
        .max(Duration::from_millis(1));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut builder = ureq::http::Request::builder()
        .method(request.method.as_str())
        .uri(request.url.as_str());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let body = request.body.unwrap_or_default().into_bytes();
    let built = match builder.body(body) {
        Ok(built) => built,
        Err(e) => {
            return Reply::Error(PluginError::new(
                ErrorCode::Invalid,
                format!("malformed request: {e}"),
            ))
        }
    };
    match agent.run(built) {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_ascii_lowercase(),
                        v.to_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            let mut text = String::new();
            let read = response
                .body_mut()
                .with_config()
                .limit(MAX_BODY)
                .reader()
                .read_to_string(&mut text);
            if let Err(e) = read {
                return Reply::Error(PluginError::new(
                    ErrorCode::Unavailable,
                    format!("reading the response failed: {e}"),
                ));
            }
            Reply::Ok(HttpResponse {
                status,
                headers,
                body: text,
            })
        }
        Err(e) => Reply::Error(PluginError::new(
            ErrorCode::Unavailable,
            context.sink.redact(&format!("{host}:{port}: {e}")),
        )),
    }
}
