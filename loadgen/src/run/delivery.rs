//! The delivery phases of a run (durable publishing and protocol v2, README "Delivery
//! guarantees"), methods of [`Run`]:
//!
//! - the blip: `CLIENT KILL TYPE pubsub` during the publish phase, so the server's subscriber
//!   link drops and every live v2 socket must catch up out of the history;
//! - the resume: every socket drops its connection, a backlog is published durably while they
//!   are away, every socket reconnects with `since`; the server's CPU is sampled from the
//!   reconnect until every socket has its backlog;
//! - the history's memory after publishing durably;
//! - the server's delivery counters (`/metrics`) scraped around them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::shared::wait_until;
use super::workers::{self, Worker};
use super::{sleep_s, ResumeStart, Run};
use crate::protocol::Command;
use crate::publisher::{Conn, Mode};
use crate::rawws;
use crate::redis_info;
use crate::util::{now_us, WsUrl};

/// The server's counters of delivery (every series of these names).
const DELIVERY_METRICS: &[&str] = &[
    "ws_resumes_total",
    "ws_catch_ups_total",
    "ws_messages_replayed_total",
    "ws_resets_total",
    "ws_broker_reconnects_total",
    "ws_connections_opened_total",
    "ws_messages_dropped_total",
];

/// Longest wait for every socket to drop its connection.
const DISCONNECT_LIMIT: Duration = Duration::from_secs(30);

/// The delivery counters of a `/metrics` text: `name{labels}` → value.
pub(super) type Counters = BTreeMap<String, f64>;

/// `after - before` of every counter in either (zeros left out).
pub(super) fn counter_deltas(before: &Counters, after: &Counters) -> Counters {
    after
        .keys()
        .chain(before.keys())
        .map(|k| {
            let d = after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
            (k.clone(), d)
        })
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

impl Run {
    /// The server's delivery counters now; empty (with a warning) when `/metrics` cannot be
    /// read: they are a cross-check, not the measurement.
    pub(super) async fn scrape(&self) -> Counters {
        let fetch = async {
            let url = WsUrl::parse(&self.cfg.url)?;
            let target = url.resolve().await?;
            rawws::http_get(target, &url.authority, &self.cfg.metrics_path).await
        };
        match fetch.await {
            Ok(text) => rawws::samples(&text, DELIVERY_METRICS),
            Err(e) => {
                eprintln!("warning: cannot read the server's metrics: {e:#}");
                Counters::new()
            }
        }
    }

    /// Kills Redis' subscriber connections now, with `next` the index of the next message to
    /// publish and `first` the phase's first.
    pub(super) async fn blip(
        &mut self,
        conn: &mut Conn,
        first: u64,
        next: u64,
    ) -> anyhow::Result<()> {
        let at_us = now_us();
        let killed = conn.kill_subscribers().await?;
        self.mark("CLIENT KILL TYPE pubsub");
        eprintln!(
            "[{:7.1}s] blip: {killed} subscriber connection(s) killed",
            self.now_s()
        );
        if let Some(blip) = self.seen.blip.as_mut() {
            blip.at_us = Some(at_us);
            blip.killed = killed;
            blip.published_before = next - first;
        }
        Ok(())
    }

    /// After a blip: polls the server's `ws_catch_ups_total{cause="reconnect"}` every 20 ms
    /// until it has not moved for a second (or 15 s passed), and records when it last moved:
    /// the server's side of "every live v2 socket caught up".
    pub(super) async fn await_catch_ups(&mut self) {
        const KEY: &str = r#"ws_catch_ups_total{cause="reconnect"}"#;
        let Some(blip) = self.seen.blip.as_ref().filter(|b| b.at_us.is_some()) else {
            return;
        };
        let base = blip.metrics_before.get(KEY).copied().unwrap_or(0.0);
        let t0 = Instant::now();
        let (mut last, mut last_change) = (0.0, None);
        let mut quiet_since = Instant::now();
        while t0.elapsed() < Duration::from_secs(15) {
            let counters = self.scrape().await;
            if counters.is_empty() {
                return;
            }
            let n = counters.get(KEY).copied().unwrap_or(0.0) - base;
            if n != last {
                (last, last_change) = (n, Some(now_us()));
                quiet_since = Instant::now();
            } else if n > 0.0 && quiet_since.elapsed() >= Duration::from_secs(1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(blip) = self.seen.blip.as_mut() {
            blip.catch_ups_last_us = last_change;
            blip.catch_ups = last;
        }
    }

    /// Memory of a sample of the users' histories, after publishing durably.
    pub(super) async fn measure_history(&mut self, conn: &mut Conn) -> anyhow::Result<()> {
        let sample = self.cfg.history_sample;
        if sample == 0 || !self.cfg.durable {
            return Ok(());
        }
        let Some(conn) = conn.single() else {
            // Refused by the configuration: the histories are spread over the primaries.
            return Ok(());
        };
        let m = redis_info::history_memory(conn, &self.channels, self.cfg.users, sample).await?;
        self.seen.history_memory = Some(m);
        Ok(())
    }

    /// Every socket drops its connection; a backlog is published durably; after
    /// `--resume-away-s` every socket reconnects with `since`; waits until every socket has
    /// its backlog, sampling the server's CPU from the reconnect to then.
    pub(super) async fn resume(
        &mut self,
        conn: &mut Conn,
        workers: &mut [Worker],
    ) -> anyhow::Result<()> {
        self.set_phase("disconnect");
        self.mark("disconnect");
        let before = self.shared.borrow().total();
        let away_from = Instant::now();
        workers::send_all(workers, &Command::Disconnect).await?;
        if !wait_until(&self.shared, DISCONNECT_LIMIT, |s| s.total().open == 0).await? {
            eprintln!("warning: some sockets did not drop their connection");
        }
        let sockets_away = self.shared.borrow().total().away;
        self.publish_backlog(conn).await?;
        sleep_s(self.cfg.resume_away_s - away_from.elapsed().as_secs_f64()).await;
        let metrics_before = self.scrape().await;
        self.set_phase("resume");
        self.mark("reconnect");
        let start = self.snap();
        let reconnect_us = now_us();
        let away_s = away_from.elapsed().as_secs_f64();
        workers::send_all(workers, &Command::Reconnect).await?;
        let expected = before.delivered + self.cfg.resume_backlog * sockets_away;
        let limit = Duration::from_secs(60) + Duration::from_secs_f64(sockets_away as f64 / 200.0);
        let done = wait_until(&self.shared, limit, |s| {
            let t = s.total();
            t.reconnects_done >= sockets_away && t.delivered >= expected
        })
        .await?;
        self.account_cpu("resume", &start);
        self.mark("resumed");
        if !done {
            eprintln!("warning: not every socket had its backlog within {limit:?}");
        }
        let metrics_after = self.scrape().await;
        self.seen.resume = Some(ResumeStart {
            sockets: sockets_away,
            reconnect_us,
            away_s,
            done_us: done.then(now_us),
            server_metrics: counter_deltas(&metrics_before, &metrics_after),
        });
        Ok(())
    }

    /// `--resume-backlog` messages to every user, durably, untimed (their receivers count them
    /// but do not time them: they wait for the socket's return).
    async fn publish_backlog(&mut self, conn: &mut Conn) -> anyhow::Result<()> {
        self.set_phase("backlog");
        let users = self.cfg.users;
        let first = self.seen.published_end;
        let end = first + self.cfg.resume_backlog * users;
        let mut next = first;
        while next < end {
            let to = (next + self.cfg.pipeline).min(end);
            let sent = conn
                .publish_range(
                    Mode::Durable,
                    &self.channels,
                    next..to,
                    users,
                    self.cfg.payload,
                    true,
                )
                .await?;
            self.shared.borrow_mut().published += sent.messages;
            next = to;
        }
        self.seen.published_end = end;
        self.seen.resume_backlog_published = end - first;
        Ok(())
    }
}
