//! `[server]`: the listening socket, the WebSocket endpoint, frame size and allowed origins.

use serde::Deserialize;

use super::de::string_list;
use super::validate::{at_least, is_bind_address, is_hostname};
use super::SettingsError;

/// Smallest accepted `server.max_frame_bytes`.
const MIN_FRAME_BYTES: usize = 1024;

/// `[server]`: listening socket and WebSocket endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on, `host:port`.
    pub bind: String,
    /// Path of the WebSocket endpoint; starts with `/`.
    pub ws_path: String,
    /// HTTP worker threads; 0 = one per CPU core.
    pub workers: usize,
    /// Largest client frame (and reassembled message), in bytes.
    pub max_frame_bytes: usize,
    /// Browser origins allowed to connect (`scheme://host[:port]`); empty allows every origin.
    #[serde(deserialize_with = "string_list")]
    pub allowed_origins: Vec<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: "0.0.0.0:8080".into(),
            ws_path: "/ws".into(),
            workers: 0,
            max_frame_bytes: 65536,
            allowed_origins: Vec::new(),
        }
    }
}

impl ServerSettings {
    /// Checks `[server]`: the bind address, the endpoint path, the frame size, the origins.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if !is_bind_address(&self.bind) {
            let reason = format!("expected host:port, got {:?}", self.bind);
            return Err(SettingsError::invalid("server.bind", reason));
        }
        if !self.ws_path.starts_with('/') || self.ws_path.contains(['?', '#', ' ']) {
            let reason = format!(
                "expected a path starting with \"/\" (no space, ? or #), got {:?}",
                self.ws_path
            );
            return Err(SettingsError::invalid("server.ws_path", reason));
        }
        at_least(
            "server.max_frame_bytes",
            self.max_frame_bytes,
            MIN_FRAME_BYTES,
        )?;
        match self.allowed_origins.iter().find(|o| !is_origin(o)) {
            Some(origin) => Err(SettingsError::invalid(
                "server.allowed_origins",
                format!("expected scheme://host[:port] (no path), got {origin:?}"),
            )),
            None => Ok(()),
        }
    }
}

/// `scheme://host[:port]`, as browsers send in `Origin` (no path, no trailing slash).
fn is_origin(origin: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((ip, rest)) => (ip.parse::<std::net::Ipv6Addr>().is_ok(), rest),
            None => (false, ""),
        },
        None => {
            let (host, port) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
            (is_hostname(host), port)
        }
    };
    let port_ok = match port.strip_prefix(':') {
        Some(port) => port.parse::<u16>().is_ok(),
        None => port.is_empty(),
    };
    scheme_ok && host && port_ok
}
