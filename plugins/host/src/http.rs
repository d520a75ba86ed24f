//! `cairn_http`: the only way a plugin reaches the network. The URL's host and port must both be granted,
//! redirects are handed back to the plugin instead of followed, proxies from the environment are ignored,
//! and a denied URL is reported through the redactor (URLs can carry tokens).

use std::io::Read;
use std::time::Duration;

use cairn_plugin_api::{ErrorCode, HttpRequest, HttpResponse, LogLevel, PluginError, Reply};

use crate::runtime::Context;

/// Responses larger than this are refused, so a plugin cannot make the host buffer without bound.
const MAX_BODY: u64 = 16 << 20;

/// Headers that frame the request or address the connection: cairn sets them from the URL and the body, and
/// a plugin that set them could smuggle a second request past the granted host (`Host`, a length together
/// with a chunked body) or reach a proxy. `Proxy-*` is refused as a prefix.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "expect",
];

/// The header a plugin may not set, if `headers` has one.
fn reserved_header(headers: &[(String, String)]) -> Option<&str> {
    headers.iter().map(|(name, _)| name.as_str()).find(|name| {
        let lower = name.trim().to_ascii_lowercase();
        RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-")
    })
}

/// The largest reply (as encoded for the plugin) a plugin with `memory` bytes of linear memory is given: the
/// plugin decodes it into a copy of its own, so a reply near its cap would only make it trap after the host
/// had paid for it.
pub(crate) fn max_reply(memory: u64) -> u64 {
    (memory / 4).min(MAX_BODY)
}

/// The refusal a plugin gets for a request cairn will not send (logged as a warning too).
fn refuse(context: &Context, why: String) -> Reply<HttpResponse> {
    let message = context.sink.redact(&why);
    context.sink.log(&context.plugin, LogLevel::Warn, &message);
    Reply::Error(PluginError::new(ErrorCode::PermissionDenied, message))
}

fn refuse_large(context: &Context, url: &str, limit: u64) -> Reply<HttpResponse> {
    let message = context.sink.redact(&format!(
        "the reply from {url} is larger than {} KiB, the most a plugin with limits.memory = {} MiB is handed",
        limit >> 10,
        context.memory >> 20
    ));
    context.sink.log(&context.plugin, LogLevel::Warn, &message);
    Reply::Error(PluginError::new(ErrorCode::Invalid, message))
}

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
    if let Some(name) = reserved_header(&request.headers) {
        return refuse(
            context,
            format!(
                "request to {} refused: the header `{name}` is cairn's to set, not a plugin's",
                request.url
            ),
        );
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
            let limit = max_reply(context.memory);
            // A declared length says up front what the reply would cost: refused before a byte is read.
            let declared = response
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|length| length > limit) {
                return refuse_large(context, &request.url, limit);
            }
            let mut bytes = Vec::new();
            let read = response
                .body_mut()
                .with_config()
                .limit(MAX_BODY + 1)
                .reader()
                .take(limit + 1)
                .read_to_end(&mut bytes);
            if let Err(e) = read {
                return Reply::Error(PluginError::new(
                    ErrorCode::Unavailable,
                    format!("reading the response failed: {e}"),
                ));
            }
            if bytes.len() as u64 > limit {
                return refuse_large(context, &request.url, limit);
            }
            let Ok(text) = String::from_utf8(bytes) else {
                return Reply::Error(PluginError::new(
                    ErrorCode::Unavailable,
                    "reading the response failed: the body is not UTF-8 text",
                ));
            };
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
