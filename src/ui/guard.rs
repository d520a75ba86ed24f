//! Who may talk to the dashboard: the holder of the session's token, through a `Host` this server answers to,
//! and for every action a same-origin POST carrying the page's CSRF token.
//!
//! The threats (docs/security.md): another local user or a web page in the user's own browser. A page on any
//! site can make the browser send requests to 127.0.0.1 (CSRF) and, through DNS rebinding, read the answers
//! under a name it controls; the token (never sent by the browser to another origin, kept in an HttpOnly,
//! SameSite=Strict cookie), the `Host` check and the `Origin` check stop each of those.

use std::net::SocketAddr;

/// The cookie that carries the session token after the first visit.
pub const COOKIE: &str = "cairn_ui";

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The `Host` header names a server this is not (DNS rebinding), or is missing.
    ForeignHost,
    /// Neither the cookie nor an `Authorization: Bearer` header carries the token.
    NoToken,
    /// A POST whose `Origin` is missing or another site's.
    ForeignOrigin,
    /// A POST without the page's CSRF token.
    NoCsrf,
}

impl Refusal {
    /// The HTTP status and a one-line reason for the page.
    pub fn status_and_reason(self) -> (u16, &'static str) {
        match self {
            Refusal::ForeignHost => (421, "this server does not answer to that Host name"),
            Refusal::NoToken => (
                401,
                "open the address `cairn ui` printed: it carries the session's token",
            ),
            Refusal::ForeignOrigin => (403, "a request from another site is refused"),
            Refusal::NoCsrf => (
                403,
                "the form's CSRF token is missing or stale: reload the page",
            ),
        }
    }
}

/// The session's secrets and the names it answers to.
pub struct Guard {
    token: String,
    csrf: String,
    hosts: Vec<String>,
}

impl Guard {
    /// A new session for a server bound to `addr`, with fresh random tokens.
    pub fn new(addr: SocketAddr) -> std::io::Result<Guard> {
        Ok(Guard::with_tokens(addr, random_hex()?, random_hex()?))
    }

    fn with_tokens(addr: SocketAddr, token: String, csrf: String) -> Guard {
        let port = addr.port();
        let mut hosts = vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ];
        let own = match addr {
            SocketAddr::V4(v4) => format!("{}:{port}", v4.ip()),
            SocketAddr::V6(v6) => format!("[{}]:{port}", v6.ip()),
        };
        if !hosts.contains(&own) && !addr.ip().is_unspecified() {
            hosts.push(own);
        }
        Guard { token, csrf, hosts }
    }

    /// The session token (printed once, in the address the user opens).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The CSRF token pages embed in their forms.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Whether `host` (the request's `Host` header) is one this server answers to.
    pub fn host_ok(&self, host: Option<&str>) -> Result<(), Refusal> {
        match host {
            Some(host) if self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) => Ok(()),
            _ => Err(Refusal::ForeignHost),
        }
    }

    /// Whether `given` is the session token.
    pub fn is_token(&self, given: &str) -> bool {
        constant_time_eq(given.as_bytes(), self.token.as_bytes())
    }

    /// Whether the request carries the token in its cookie or as a bearer token.
    pub fn authenticated(
        &self,
        cookie: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<(), Refusal> {
        let from_cookie = cookie.into_iter().flat_map(|c| c.split(';')).any(|pair| {
            pair.trim()
                .strip_prefix(COOKIE)
                .and_then(|rest| rest.strip_prefix('='))
                .is_some_and(|value| self.is_token(value))
        });
        let from_header = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|value| self.is_token(value.trim()));
        if from_cookie || from_header {
            Ok(())
        } else {
            Err(Refusal::NoToken)
        }
    }

    /// Whether a POST may act: its `Origin` is this server as the browser reached it, and its form carries the
    /// CSRF token.
    pub fn post_ok(
        &self,
        origin: Option<&str>,
        host: &str,
        csrf: Option<&str>,
    ) -> Result<(), Refusal> {
        let expected = format!("http://{host}");
        match origin {
            Some(origin) if origin.eq_ignore_ascii_case(&expected) => {}
            _ => return Err(Refusal::ForeignOrigin),
        }
        match csrf {
            Some(given) if constant_time_eq(given.as_bytes(), self.csrf.as_bytes()) => Ok(()),
            _ => Err(Refusal::NoCsrf),
        }
    }
}

/// 32 random bytes as hex.
fn random_hex() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equality whose time does not depend on where the inputs first differ (a token must not leak byte by byte).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::with_tokens(
            "127.0.0.1:8123".parse().unwrap(),
            "t0ken".into(),
            "csrf1".into(),
        )
    }

    #[test]
    fn only_loopback_names_with_the_right_port_are_accepted_as_host() {
        let g = guard();
        assert!(g.host_ok(Some("127.0.0.1:8123")).is_ok());
        assert!(g.host_ok(Some("localhost:8123")).is_ok());
        assert_eq!(
            g.host_ok(Some("evil.example:8123")),
            Err(Refusal::ForeignHost)
        );
        assert_eq!(g.host_ok(Some("127.0.0.1:9999")), Err(Refusal::ForeignHost));
        assert_eq!(g.host_ok(None), Err(Refusal::ForeignHost));
    }

    #[test]
    fn the_token_is_taken_from_the_cookie_or_a_bearer_header_only() {
        let g = guard();
        assert!(g.authenticated(Some("a=b; cairn_ui=t0ken"), None).is_ok());
        assert!(g.authenticated(None, Some("Bearer t0ken")).is_ok());
        assert_eq!(
            g.authenticated(Some("cairn_ui=t0ke"), None),
            Err(Refusal::NoToken)
        );
        assert_eq!(
            g.authenticated(Some("xcairn_ui=t0ken"), None),
            Err(Refusal::NoToken)
        );
        assert_eq!(g.authenticated(None, None), Err(Refusal::NoToken));
    }

    #[test]
    fn a_post_needs_its_own_origin_and_the_csrf_token() {
        let g = guard();
        let host = "127.0.0.1:8123";
        assert!(g
            .post_ok(Some("http://127.0.0.1:8123"), host, Some("csrf1"))
            .is_ok());
        assert_eq!(
            g.post_ok(None, host, Some("csrf1")),
            Err(Refusal::ForeignOrigin)
        );
        assert_eq!(
            g.post_ok(Some("http://evil.example"), host, Some("csrf1")),
            Err(Refusal::ForeignOrigin)
        );
        assert_eq!(
            g.post_ok(Some("http://127.0.0.1:8123"), host, None),
            Err(Refusal::NoCsrf)
        );
        assert_eq!(
            g.post_ok(Some("http://127.0.0.1:8123"), host, Some("x")),
            Err(Refusal::NoCsrf)
        );
    }

    #[test]
    fn tokens_are_long_and_differ_between_sessions() {
        let a = Guard::new("127.0.0.1:1".parse().unwrap()).unwrap();
        let b = Guard::new("127.0.0.1:1".parse().unwrap()).unwrap();
        assert_eq!(a.token().len(), 64);
        assert_ne!(a.token(), b.token());
        assert_ne!(a.token(), a.csrf());
    }
}
