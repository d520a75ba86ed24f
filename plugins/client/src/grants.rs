//! What a plugin is allowed: network destinations (host and port), the clock, host environment variables.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The grants of one plugin. The default grants nothing.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// `allow.hosts`: the only destinations `cairn_http` reaches.
    pub hosts: Vec<HostPort>,
    /// `allow.clock`: whether `cairn_now` is available.
    pub clock: bool,
    /// `allow.env`: host variables passed in the plugin's config as `env.NAME` (name, value).
    pub env: Vec<(String, String)>,
}

/// Names the granted variables without their values, which are often tokens.
impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("hosts", &self.hosts)
            .field("clock", &self.clock)
            .field(
                "env",
                &self.env.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Grants {
    /// Whether `host:port` was granted.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.hosts.iter().any(|h| h.host == host && h.port == port)
    }
}

/// A granted destination: a host name or address, and a port (always explicit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    /// Lower-case host name, or an IP address without brackets.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(text: &str) -> Result<HostPort, String> {
        let expected = "expected HOST:PORT, e.g. `127.0.0.1:8200` or `vault.example.com:443`";
        if text.contains("://") || text.contains('/') {
            return Err(format!("`{text}` is a URL; {expected}"));
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, port) = rest
                .split_once("]:")
                .ok_or_else(|| format!("`{text}`: {expected}"))?;
            (host, port)
        } else {
            text.rsplit_once(':')
                .ok_or_else(|| format!("`{text}` has no port; {expected}"))?
        };
        if host.is_empty() || host == "*" || host.contains('*') {
            return Err(format!(
                "`{text}`: wildcards are not allowed; name each host"
            ));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{text}`: `{port}` is not a port; {expected}"))?;
        Ok(HostPort {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_are_both_required_and_both_checked() {
        let grant: HostPort = "127.0.0.1:8200".parse().unwrap();
        let grants = Grants {
            hosts: vec![grant, "[::1]:80".parse().unwrap()],
            ..Grants::default()
        };
        assert!(grants.allows("127.0.0.1", 8200));
        assert!(!grants.allows("127.0.0.1", 8201));
        assert!(!grants.allows("127.0.0.2", 8200));
        assert!(grants.allows("[::1]", 80));
        for bad in ["127.0.0.1", "http://x:1", "*:80", "x:0", "x:http"] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_output_names_granted_variables_without_their_values() {
        let grants = Grants {
            env: vec![("VAULT_TOKEN".into(), "s.hunter2hunter2".into())],
            ..Grants::default()
        };
        let shown = format!("{grants:?}");
        assert!(
            shown.contains("VAULT_TOKEN") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
