//! The Bazel HTTP cache protocol, as much of it as cairn needs: `GET`, `HEAD` and `PUT` of `/ac/<sha256>`
//! and `/cas/<sha256>` below a base URL, each bounded in time.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use zeroize::Zeroizing;

/// The two namespaces of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Entries (signed manifests).
    Ac,
    /// Blobs, by the SHA-256 of their bytes.
    Cas,
}

impl Space {
    fn path(self) -> &'static str {
        match self {
            Space::Ac => "ac",
            Space::Cas => "cas",
        }
    }
}

/// Why the server could not be used; the run goes on with the local cache only.
#[derive(Debug, Clone)]
pub struct Unavailable(pub String);

/// Resolves each server name once per client. ureq's own resolver starts a thread for every request that has a
/// time limit (all of cairn's do), which was most of what fetching a small entry cost the processor; a run
/// talks to one server whose address does not change under it. (`ureq::unversioned` is pinned by Cargo.lock.)
#[derive(Debug, Default)]
struct RememberingResolver {
    known: std::sync::Mutex<
        std::collections::HashMap<String, ureq::unversioned::resolver::ResolvedSocketAddrs>,
    >,
    system: ureq::unversioned::resolver::DefaultResolver,
}

impl ureq::unversioned::resolver::Resolver for RememberingResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let Some(authority) = uri.authority() else {
            return self.system.resolve(uri, config, timeout);
        };
        let name = format!("{}|{authority}", uri.scheme_str().unwrap_or_default());
        if let Some(addresses) = self.lock().get(&name) {
            return Ok(addresses.clone());
        }
        let addresses = self.system.resolve(uri, config, timeout)?;
        self.lock().insert(name, addresses.clone());
        Ok(addresses)
    }
}

impl RememberingResolver {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<String, ureq::unversioned::resolver::ResolvedSocketAddrs>,
    > {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The slowest transfer rate a request is allowed before it counts as failed: large blobs get time in
/// proportion to their size, so a slow link is not mistaken for a dead server, and a dead one is still found.
const MIN_BYTES_PER_SECOND: u64 = 256 * 1024;

/// A client for one server.
pub struct Client {
    base: String,
    shown: String,
    authorization: Option<Zeroizing<String>>,
    agent: ureq::Agent,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({})", self.shown)
    }
}

impl Client {
    /// A client for the server at `url`; credentials in the URL (`https://user:pass@host/`) become Basic
    /// authentication, `token` a Bearer token. A request that stays silent for `timeout` fails; `roots`
    /// replace the built-in certificate authorities.
    pub fn new(
        url: &str,
        token: Option<Zeroizing<String>>,
        timeout: Duration,
        roots: Option<&[Vec<u8>]>,
    ) -> Client {
        let (base, basic) = split_credentials(url.trim_end_matches('/'));
        let authorization = match (token, basic) {
            (Some(token), _) => Some(Zeroizing::new(format!("Bearer {}", token.trim()))),
            (None, Some(userinfo)) => Some(Zeroizing::new(format!(
                "Basic {}",
                BASE64.encode(userinfo.as_bytes())
            ))),
            (None, None) => None,
        };
        // A server that stops answering for `timeout` at any point has failed; the whole request is bounded
        // per call (see `bounded`).
        let connect = timeout.min(Duration::from_secs(5));
        let tls = match roots {
            Some(roots) => {
                let certificates: Vec<ureq::tls::Certificate<'static>> = roots
                    .iter()
                    .map(|der| ureq::tls::Certificate::from_der(der).to_owned())
                    .collect();
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certificates))
                    .build()
            }
            None => ureq::tls::TlsConfig::default(),
        };
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_resolve(Some(connect))
            .timeout_connect(Some(connect))
            .timeout_send_request(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_per_read(Some(timeout))
            .timeout_per_write(Some(timeout))
            .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::default(),
            RememberingResolver::default(),
        );
        Client {
            shown: base.clone(),
            base,
            authorization,
            agent,
            timeout,
        }
    }

    /// The most a request moving `bytes` may take.
    fn budget(&self, bytes: u64) -> Duration {
        self.timeout + Duration::from_secs(bytes / MIN_BYTES_PER_SECOND)
    }

    /// The URL as messages show it: without credentials.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn url(&self, space: Space, hash: &str) -> String {
        format!("{}/{}/{hash}", self.base, space.path())
    }

    fn failed(&self, what: &str, error: &ureq::Error) -> Unavailable {
        let reason = match error {
            ureq::Error::Timeout(_) => "it did not answer in time".to_owned(),
            ureq::Error::Io(e) => e.to_string(),
            other => other.to_string(),
        };
        let hint = if reason.contains("certificate") {
            " (a server whose certificate your own authority issued needs it named: `ca_file` in [remote_cache], or CAIRN_REMOTE_CACHE_CA_FILE)"
        } else {
            ""
        };
        Unavailable(format!("{what} {}: {reason}{hint}", self.shown))
    }

    fn refused(&self, what: &str, status: u16) -> Unavailable {
        let hint = match status {
            400 if what.starts_with("writing") => {
                " (bazel-remote needs `--disable_http_ac_validation`: cairn's entries are signed manifests, not Bazel ActionResults)"
            }
            401 | 403 => " (check the token or the URL's credentials)",
            405 | 501 => " (does the server accept PUT? nginx needs `dav_methods PUT`)",
            413 => " (the server's upload limit is too low: nginx's `client_max_body_size`)",
            _ => "",
        };
        Unavailable(format!(
            "{what} {} was refused with HTTP {status}{hint}",
            self.shown
        ))
    }

    /// The object's bytes, `None` when the server does not have it; more than `limit` bytes is an error.
    pub fn get(
        &self,
        space: Space,
        hash: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, Unavailable> {
        let mut request = self
            .agent
            .get(self.url(space, hash))
            .config()
            .timeout_global(Some(self.budget(limit)))
            .build();
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth.as_str());
        }
        let mut response = request
            .call()
            .map_err(|e| self.failed("reading from", &e))?;
        match response.status().as_u16() {
            200 => response
                .body_mut()
                .with_config()
                .limit(limit)
                .read_to_vec()
                .map(Some)
                .map_err(|e| self.failed("reading from", &e)),
            404 => Ok(None),
            status => Err(self.refused("reading from", status)),
        }
    }

    /// Whether the server has the object.
    pub fn has(&self, space: Space, hash: &str) -> Result<bool, Unavailable> {
        let mut request = self
            .agent
            .head(self.url(space, hash))
            .config()
            .timeout_global(Some(self.budget(0)))
            .build();
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth.as_str());
        }
        let response = request.call().map_err(|e| self.failed("asking", &e))?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => Err(self.refused("asking", status)),
        }
    }

    /// Stores the object.
    pub fn put(&self, space: Space, hash: &str, body: &[u8]) -> Result<(), Unavailable> {
        let mut request = self
            .agent
            .put(self.url(space, hash))
            .config()
            .timeout_global(Some(self.budget(body.len() as u64)))
            .build()
            .header("Content-Type", "application/octet-stream");
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth.as_str());
        }
        let response = request
            .send(body)
            .map_err(|e| self.failed("writing to", &e))?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            status => Err(self.refused("writing to", status)),
        }
    }
}

/// The certificates of a PEM bundle, in DER; an error when it holds none or cannot be read.
pub fn parse_roots(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut roots = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        // A bundle may carry other sections (keys); only certificates are roots.
        let item = item.map_err(|e| format!("it is not valid PEM: {e}"))?;
        if let ureq::tls::PemItem::Certificate(certificate) = item {
            roots.push(certificate.der().to_vec());
        }
    }
    if roots.is_empty() {
        return Err("it holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)".into());
    }
    Ok(roots)
}

/// Splits `scheme://user:pass@host/path` into the URL without credentials and the credentials.
fn split_credentials(url: &str) -> (String, Option<Zeroizing<String>>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => (
            format!("{scheme}://{host}{}", &rest[authority_end..]),
            Some(Zeroizing::new(userinfo.to_owned())),
        ),
        None => (url.to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_are_taken_out_of_what_is_shown() {
        let (url, userinfo) = split_credentials("https://ci:s3cret@cache.example.com/cairn");
        assert_eq!(url, "https://cache.example.com/cairn");
        assert_eq!(userinfo.as_deref().map(String::as_str), Some("ci:s3cret"));
        let (url, userinfo) = split_credentials("http://127.0.0.1:8080/a@b");
        assert_eq!(url, "http://127.0.0.1:8080/a@b");
        assert!(userinfo.is_none());
    }
}
