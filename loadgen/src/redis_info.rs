//! Redis' own accounting of a run: `INFO cpu`, `INFO commandstats` and `INFO memory` read
//! before and after the publish phase (Redis CPU per message published, the publishing
//! command's calls and µs per call, memory growth), and `MEMORY USAGE` of a sample of users'
//! history keys (the stream and the meta record, named by the server's own `ws_names`
//! function so that loadgen never re-derives the key scheme).

use std::collections::BTreeMap;

use anyhow::Context as _;
use redis::aio::MultiplexedConnection;
use serde::Serialize;

use crate::publisher::Channels;

/// The counters of one `INFO` reading.
#[derive(Clone, Debug, Default)]
pub struct InfoSnap {
    /// `used_cpu_sys + used_cpu_user`, seconds (the whole redis-server process).
    cpu_s: f64,
    /// `cmdstat_<name>`: `(calls, usec)`.
    commands: BTreeMap<String, (u64, u64)>,
    /// `used_memory`, bytes.
    used_memory: u64,
}

impl InfoSnap {
    /// Reads `INFO cpu`, `INFO commandstats` and `INFO memory`.
    pub async fn take(conn: &mut MultiplexedConnection) -> anyhow::Result<Self> {
        let mut text = String::new();
        for section in ["cpu", "commandstats", "memory"] {
            let part: String = redis::cmd("INFO")
                .arg(section)
                .query_async(conn)
                .await
                .with_context(|| format!("redis INFO {section}"))?;
            text += &part;
        }
        Ok(Self::parse(&text))
    }

    fn parse(text: &str) -> Self {
        let mut snap = Self::default();
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once(':') else {
                continue;
            };
            match key {
                "used_cpu_sys" | "used_cpu_user" => {
                    snap.cpu_s += value.parse::<f64>().unwrap_or(0.0);
                }
                "used_memory" => snap.used_memory = value.parse().unwrap_or(0),
                _ => {
                    if let Some(name) = key.strip_prefix("cmdstat_") {
                        snap.commands.insert(name.to_owned(), command_stat(value));
                    }
                }
            }
        }
        snap
    }
}

/// `calls` and `usec` of a `cmdstat_` line (`calls=3,usec=12,usec_per_call=4.00,…`).
fn command_stat(value: &str) -> (u64, u64) {
    let field = |name: &str| {
        value
            .split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("calls"), field("usec"))
}

/// What publishing cost Redis over a phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RedisCost {
    /// The publishing command (`publish` or `fcall`).
    pub command: String,
    /// Its calls over the phase.
    pub calls: u64,
    /// Its µs per call (Redis' own timing of the command, commands a function calls included).
    pub usec_per_call: f64,
    /// Redis process CPU over the phase (`used_cpu_sys + used_cpu_user`), seconds.
    pub cpu_s: f64,
    /// That CPU per message published, µs (command execution, the reply, and writing the
    /// message to the subscribers' connections).
    pub cpu_us_per_publish: f64,
    /// `used_memory` growth over the phase, bytes.
    pub used_memory_delta: i64,
    /// Every command Redis ran in the phase (those a function calls included): calls and µs
    /// per call, the split of the publishing command's time.
    pub commands: BTreeMap<String, CommandCost>,
}

/// One command's share of a phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CommandCost {
    /// Calls in the phase.
    pub calls: u64,
    /// µs per call.
    pub usec_per_call: f64,
}

impl RedisCost {
    /// The cost of `published` messages sent with `command` between `a` and `b`.
    pub fn between(a: &InfoSnap, b: &InfoSnap, command: &str, published: u64) -> Self {
        let (calls_a, usec_a) = a.commands.get(command).copied().unwrap_or((0, 0));
        let (calls_b, usec_b) = b.commands.get(command).copied().unwrap_or((0, 0));
        let calls = calls_b.saturating_sub(calls_a);
        let usec = usec_b.saturating_sub(usec_a);
        let cpu_s = (b.cpu_s - a.cpu_s).max(0.0);
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        let commands = b
            .commands
            .iter()
            .filter_map(|(name, &(calls_b, usec_b))| {
                let (calls_a, usec_a) = a.commands.get(name).copied().unwrap_or((0, 0));
                let calls = calls_b.checked_sub(calls_a).filter(|c| *c > 0)?;
                let usec = usec_b.saturating_sub(usec_a);
                let cost = CommandCost {
                    calls,
                    usec_per_call: round(usec as f64 / calls as f64),
                };
                Some((name.clone(), cost))
            })
            .collect();
        Self {
            command: command.to_owned(),
            calls,
            usec_per_call: round(if calls > 0 {
                usec as f64 / calls as f64
            } else {
                0.0
            }),
            cpu_s: round(cpu_s),
            cpu_us_per_publish: round(if published > 0 {
                cpu_s * 1e6 / published as f64
            } else {
                0.0
            }),
            used_memory_delta: b.used_memory as i64 - a.used_memory as i64,
            commands,
        }
    }
}

/// Memory of users' histories, from `MEMORY USAGE <key> SAMPLES 0` (exact) of a sample.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HistoryMemory {
    /// Users sampled (spread evenly over the run's users).
    pub users_sampled: u64,
    /// Of those, users with a stream.
    pub users_with_history: u64,
    /// Mean entries per stream (`XLEN`).
    pub entries_mean: f64,
    /// Mean bytes of the stream key `{ws:<user>}:h`.
    pub stream_bytes_mean: f64,
    /// Mean bytes of the meta key `{ws:<user>}:m`.
    pub meta_bytes_mean: f64,
    /// Stream + meta, bytes per user.
    pub per_user_bytes_mean: f64,
    /// Stream bytes per entry.
    pub bytes_per_entry: f64,
    /// Key names of the first user sampled, for the record.
    pub example_keys: Vec<String>,
}

/// Measures the history keys of up to `sample` of the run's `users`.
pub async fn history_memory(
    conn: &mut MultiplexedConnection,
    channels: &Channels,
    users: u64,
    sample: u64,
) -> anyhow::Result<HistoryMemory> {
    let sample = sample.min(users).max(1);
    let step = (users / sample).max(1);
    let mut m = HistoryMemory::default();
    let (mut stream_total, mut meta_total, mut entries_total) = (0u64, 0u64, 0u64);
    for user in (0..users).step_by(step as usize).take(sample as usize) {
        let names: Vec<String> = redis::cmd("FCALL_RO")
            .arg("ws_names")
            .arg(1)
            .arg(channels.of(user))
            .query_async(conn)
            .await
            .context("redis FCALL_RO ws_names (is the server's history on?)")?;
        let [_, stream, meta] = names.as_slice() else {
            anyhow::bail!("ws_names answered {names:?}, not [durable, stream, meta]");
        };
        let usage = |key: &str| {
            let mut cmd = redis::cmd("MEMORY");
            cmd.arg("USAGE").arg(key).arg("SAMPLES").arg(0);
            cmd
        };
        let stream_bytes: Option<u64> = usage(stream)
            .query_async(conn)
            .await
            .context("MEMORY USAGE")?;
        let meta_bytes: Option<u64> = usage(meta)
            .query_async(conn)
            .await
            .context("MEMORY USAGE")?;
        let entries: u64 = redis::cmd("XLEN")
            .arg(stream)
            .query_async(conn)
            .await
            .context("XLEN")?;
        if m.example_keys.is_empty() {
            m.example_keys = vec![stream.clone(), meta.clone()];
        }
        m.users_sampled += 1;
        m.users_with_history += u64::from(stream_bytes.is_some());
        stream_total += stream_bytes.unwrap_or(0);
        meta_total += meta_bytes.unwrap_or(0);
        entries_total += entries;
    }
    let n = m.users_sampled.max(1) as f64;
    let round = |x: f64| (x * 10.0).round() / 10.0;
    m.entries_mean = round(entries_total as f64 / n);
    m.stream_bytes_mean = round(stream_total as f64 / n);
    m.meta_bytes_mean = round(meta_total as f64 / n);
    m.per_user_bytes_mean = round((stream_total + meta_total) as f64 / n);
    m.bytes_per_entry = round(if entries_total > 0 {
        stream_total as f64 / entries_total as f64
    } else {
        0.0
    });
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_info_sections() {
        let text = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\n\
                    # Commandstats\r\ncmdstat_fcall:calls=10,usec=55,usec_per_call=5.50,rejected_calls=0,failed_calls=0\r\n\
                    cmdstat_publish:calls=4,usec=8,usec_per_call=2.00\r\n# Memory\r\nused_memory:1000\r\n";
        let a = InfoSnap::parse(text);
        assert!((a.cpu_s - 3.75).abs() < 1e-9);
        assert_eq!(a.commands["fcall"], (10, 55));
        assert_eq!(a.used_memory, 1000);
        let b = InfoSnap::parse(
            "used_cpu_sys:2.5\nused_cpu_user:2.25\ncmdstat_fcall:calls=110,usec=555,usec_per_call=5\nused_memory:900\n",
        );
        let cost = RedisCost::between(&a, &b, "fcall", 100);
        assert_eq!(cost.calls, 100);
        assert!((cost.usec_per_call - 5.0).abs() < 1e-9);
        assert!((cost.cpu_us_per_publish - 10_000.0).abs() < 1e-6);
        assert_eq!(cost.used_memory_delta, -100);
        assert_eq!(cost.commands.len(), 1);
        assert_eq!(cost.commands["fcall"].calls, 100);
    }
}
