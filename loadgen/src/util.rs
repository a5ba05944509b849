//! Small shared helpers: wall-clock time in microseconds, a `--flag value` command-line parser
//! with typed getters, `ws://` URL parsing, the JSON line writer used on stdout, and the
//! report writer (summary, JSON, SVG) of the run and stuck-reader modes.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};

/// Microseconds since the Unix epoch (the clock every process of a run shares).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Parsed `--key value` / `--key=value` options and `--switch` flags.
#[derive(Debug, Default)]
pub struct Flags {
    values: HashMap<String, String>,
    switches: HashSet<String>,
}

impl Flags {
    /// Parses `args`; `switches` take no value, `valued` take one; anything else is an error.
    pub fn parse(args: &[String], switches: &[&str], valued: &[&str]) -> anyhow::Result<Self> {
        let mut flags = Flags::default();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let Some(name) = arg.strip_prefix("--") else {
                bail!("unexpected argument {arg:?} (options start with --)");
            };
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (name, None),
            };
            if switches.contains(&name) {
                if inline.is_some() {
                    bail!("--{name} takes no value");
                }
                flags.switches.insert(name.to_owned());
            } else if valued.contains(&name) {
                let value = match inline {
                    Some(v) => v,
                    None => iter
                        .next()
                        .cloned()
                        .ok_or_else(|| anyhow!("--{name} needs a value"))?,
                };
                flags.values.insert(name.to_owned(), value);
            } else {
                bail!("unknown option --{name} (see --help)");
            }
        }
        Ok(flags)
    }

    /// The raw value of `--name`, if given.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `--name` parsed as `T`, or `default` when absent.
    pub fn num<T: FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v.parse::<T>().map_err(|e| anyhow!("--{name} {v:?}: {e}")),
        }
    }

    /// `--name` parsed as `T`, if given.
    pub fn opt<T: FromStr>(&self, name: &str) -> anyhow::Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        self.values
            .get(name)
            .map(|v| v.parse::<T>().map_err(|e| anyhow!("--{name} {v:?}: {e}")))
            .transpose()
    }

    /// Whether the switch `--name` was given.
    pub fn switch(&self, name: &str) -> bool {
        self.switches.contains(name)
    }

    /// The HS256 secret: `--secret`, else `$LOADGEN_SECRET`.
    pub fn secret(&self) -> anyhow::Result<String> {
        match self.str("secret") {
            Some(s) => Ok(s.to_owned()),
            None => std::env::var("LOADGEN_SECRET")
                .map_err(|_| anyhow!("--secret or $LOADGEN_SECRET is required")),
        }
    }
}

/// The parts of a `ws://host:port/path?query` URL the tools need.
#[derive(Clone, Debug)]
pub struct WsUrl {
    /// `host[:port]` as written, for the Host header.
    pub authority: String,
    /// Host name or address.
    pub host: String,
    /// Port (80 when absent).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path_and_query: String,
}

impl WsUrl {
    /// Parses a `ws://` URL (TLS `wss://` is not supported by this tool).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow!("--url {url:?}: only ws:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                p.parse::<u16>()
                    .with_context(|| format!("--url {url:?}: bad port"))?,
            ),
            _ => (authority.to_owned(), 80),
        };
        if host.is_empty() {
            bail!("--url {url:?}: no host");
        }
        Ok(Self {
            authority: authority.to_owned(),
            host,
            port,
            path_and_query: path.to_owned(),
        })
    }

    /// This URL with `param` (`name=value`) added to its query.
    pub fn with_param(&self, param: &str) -> Self {
        let sep = if self.path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        Self {
            path_and_query: format!("{}{sep}{param}", self.path_and_query),
            ..self.clone()
        }
    }

    /// The `ws://` URL carrying `token` in its query, as the contract's `?token=` form.
    pub fn with_token(&self, token: &str) -> String {
        let sep = if self.path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "ws://{}{}{sep}token={token}",
            self.authority, self.path_and_query
        )
    }

    /// Path and query with the token, for a hand-written request line.
    pub fn target_with_token(&self, token: &str) -> String {
        let sep = if self.path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}token={token}", self.path_and_query)
    }

    /// Resolves the host to one socket address.
    pub async fn resolve(&self) -> anyhow::Result<SocketAddr> {
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("cannot resolve {}", self.host))?
            .next()
            .ok_or_else(|| anyhow!("{} resolved to no address", self.host))
    }
}

/// Writes one JSON line to stdout and flushes it (the worker → parent channel).
pub fn emit_line<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let line = serde_json::to_string(value).context("serialising a report line")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("writing to stdout (parent gone?)")?;
    out.flush().context("flushing stdout (parent gone?)")?;
    Ok(())
}

/// Prints `summary` on stderr, then writes `report` as pretty JSON to `json_path` (stdout
/// when `None`) and, when `svg_path` is given, the plot `svg()` to it.
pub fn write_report<T: serde::Serialize>(
    report: &T,
    summary: &str,
    json_path: Option<&str>,
    svg_path: Option<&str>,
    svg: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    eprint!("{summary}");
    let text = serde_json::to_string_pretty(report).context("serialising the report")?;
    match json_path {
        Some(path) => {
            std::fs::write(path, text + "\n").with_context(|| format!("writing {path}"))?
        }
        None => println!("{text}"),
    }
    if let Some(path) = svg_path {
        std::fs::write(path, svg()).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ws_urls() {
        let u = WsUrl::parse("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 8080));
        assert_eq!(u.with_token("T"), "ws://127.0.0.1:8080/ws?token=T");
        let u = WsUrl::parse("ws://example.com/x?a=1").unwrap();
        assert_eq!(u.port, 80);
        assert_eq!(u.target_with_token("T"), "/x?a=1&token=T");
        assert_eq!(
            u.with_param("v=2").with_token("T"),
            "ws://example.com/x?a=1&v=2&token=T"
        );
        assert!(WsUrl::parse("wss://x/ws").is_err());
    }

    #[test]
    fn parses_flags() {
        let args: Vec<String> = ["--users", "5", "--drain", "--rate=7"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let f = Flags::parse(&args, &["drain"], &["users", "rate"]).unwrap();
        assert_eq!(f.num("users", 0u32).unwrap(), 5);
        assert_eq!(f.num("rate", 0u32).unwrap(), 7);
        assert!(f.switch("drain"));
        assert!(Flags::parse(&["--nope".to_string()], &[], &[]).is_err());
    }
}
