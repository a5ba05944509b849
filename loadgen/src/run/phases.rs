//! The phases of a run, one method of [`Run`] each, in the order `run` calls them: connect,
//! verify (one message per user), hold, publish (fixed rate or flat out, plain or durable,
//! with Redis' own accounting around it and the blip of `--blip-at-s` in it), drain (SIGTERM
//! the server and time the closes) and finish (every worker sends its final report). Each
//! phase has a deadline and checks the workers while it waits. The resume phase is in
//! `delivery`.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt as _;

use super::shared::wait_until;
use super::workers::{self, Worker};
use super::{sleep_s, BlipStart, DrainStart, Run};
use crate::procfs::{self, CpuSnap};
use crate::protocol::Command;
use crate::publisher::{Conn, Mode, Sent};
use crate::redis_info::{InfoSnap, RedisCost};
use crate::report::{PublishSummary, VerifySummary};
use crate::util::now_us;

/// Longest wait of the verification round, for the publishes and for the deliveries each.
const VERIFY_LIMIT: Duration = Duration::from_secs(30);

impl Run {
    /// Waits until every worker has finished connecting, then lets the server settle.
    pub(super) async fn connect(
        &mut self,
        total_sockets: u64,
        start: &CpuSnap,
    ) -> anyhow::Result<()> {
        let limit = Duration::from_secs(self.cfg.connect_timeout_s + 5)
            + Duration::from_secs_f64(total_sockets as f64 / 500.0);
        if !wait_until(&self.shared, limit, |s| s.total().connect_done).await? {
            bail!("connect phase did not finish within {limit:?}");
        }
        self.mark("connected");
        self.account_cpu("connect", start);
        let connected = self.shared.borrow().total();
        eprintln!(
            "[{:7.1}s] connected {} of {total_sockets} ({} failed)",
            self.started.elapsed().as_secs_f64(),
            connected.connected,
            connected.failed
        );
        sleep_s(2.0).await; // let the server settle (sessions join hubs, Redis subscribes)
        self.seen.open_after_connect = self.shared.borrow().total().open;
        self.seen.rss_connected = self.cfg.server_pid.and_then(procfs::rss_kb);
        Ok(())
    }

    /// One message per user; every open socket must get it.
    pub(super) async fn verify(&mut self, conn: &mut Conn) -> anyhow::Result<()> {
        self.set_phase("verify");
        let t0 = Instant::now();
        let retries = self.publish_one_per_user(conn).await?;
        self.shared.borrow_mut().published = self.cfg.users;
        let target = self.seen.open_after_connect;
        let got = wait_until(&self.shared, VERIFY_LIMIT, |s| {
            s.total().delivered >= target
        })
        .await?;
        let delivered = self.shared.borrow().total().delivered;
        if !got {
            eprintln!("warning: verification round: {delivered} of {target} sockets got it");
        }
        self.seen.verify = Some(VerifySummary {
            sockets: target,
            delivered,
            seconds: t0.elapsed().as_secs_f64(),
            retries,
        });
        self.mark("verified");
        Ok(())
    }

    /// Publishes seq 0 to every user, again to the users nobody was subscribed for yet, until
    /// each had a subscriber or `VERIFY_LIMIT` passed; returns how many publishes were retried.
    async fn publish_one_per_user(&self, conn: &mut Conn) -> anyhow::Result<u64> {
        let mut pending: Vec<u64> = (0..self.cfg.users).collect();
        let mut retries = 0u64;
        let deadline = Instant::now() + VERIFY_LIMIT;
        while !pending.is_empty() && Instant::now() < deadline {
            let mut missed = Vec::new();
            for chunk in pending.chunks(self.cfg.pipeline as usize) {
                let batch: Vec<(u64, u64)> = chunk.iter().map(|&u| (u, 0)).collect();
                missed.extend(
                    conn.publish_each(&self.channels, &batch, self.cfg.payload)
                        .await?,
                );
            }
            if !missed.is_empty() {
                retries += missed.len() as u64;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            pending = missed;
        }
        if !pending.is_empty() {
            eprintln!(
                "warning: {} users never had a subscriber (not connected?)",
                pending.len()
            );
        }
        Ok(retries)
    }

    /// Keeps the sockets idle `--hold-s`, then samples the server's RSS.
    pub(super) async fn hold(&mut self) -> anyhow::Result<()> {
        if self.cfg.hold_s > 0.0 {
            self.set_phase("hold");
            sleep_s(self.cfg.hold_s).await;
            self.shared.borrow().check()?;
        }
        if self.seen.verify.is_some() || self.cfg.hold_s > 0.0 {
            self.seen.rss_after_hold = self.cfg.server_pid.and_then(procfs::rss_kb);
        }
        Ok(())
    }

    /// How the publish phase publishes.
    fn mode(&self) -> Mode {
        if self.cfg.durable {
            Mode::Durable
        } else {
            Mode::Plain
        }
    }

    /// Publishes for `--duration-s` and records what went out and what it cost Redis.
    /// (On a cluster, Redis' cost is not accounted: its `INFO` is per node.)
    pub(super) async fn publish(&mut self, conn: &mut Conn) -> anyhow::Result<()> {
        let fixed = self.cfg.rate > 0;
        self.set_phase(match (fixed, self.cfg.durable) {
            (true, false) => "publish (fixed rate)",
            (false, false) => "publish (flat out)",
            (true, true) => "publish durably (fixed rate)",
            (false, true) => "publish durably (flat out)",
        });
        if self.cfg.blip_at_s.is_some() {
            self.seen.blip = Some(BlipStart {
                metrics_before: self.scrape().await,
                ..BlipStart::default()
            });
        }
        let info_start = redis_info(conn).await;
        self.mark("publish");
        self.seen.publish_start_us = now_us();
        let start = self.snap();
        let t0 = Instant::now();
        let first = self.seen.published_end;
        let next = self.publish_for_duration(conn, first).await?;
        let seconds = t0.elapsed().as_secs_f64();
        self.account_cpu("publish", &start);
        self.mark("publish end");
        if let Some(blip) = self.seen.blip.as_mut() {
            blip.publish_end_us = now_us();
        }
        let redis = match (info_start, redis_info(conn).await) {
            (Some(a), Some(b)) => Some(RedisCost::between(
                &a,
                &b,
                self.mode().command(),
                next - first,
            )),
            _ => None,
        };
        self.seen.published_end = next;
        self.seen.publish = Some(PublishSummary {
            mode: if fixed { "fixed" } else { "flat-out" }.to_owned(),
            target_per_s: self.cfg.rate,
            published: next - first,
            seconds,
            per_s: (next - first) as f64 / seconds,
            to_nobody: self.shared.borrow().to_nobody,
            payload_bytes: self.cfg.payload,
            fanout: self.cfg.sockets_per_user,
            durable: self.cfg.durable,
            redis,
        });
        Ok(())
    }

    /// Publishes from message `first` for `--duration-s`, at `--rate` or flat out (bounded by
    /// `--max-in-flight`), up to `--pipelines-in-flight` pipelines at once, with the blip of
    /// `--blip-at-s` on the way; returns the index after the last message published.
    async fn publish_for_duration(&mut self, conn: &mut Conn, first: u64) -> anyhow::Result<u64> {
        let mode = self.mode();
        let mut blip_at = self.cfg.blip_at_s.map(Duration::from_secs_f64);
        let live = self.shared.borrow().total().open.max(1);
        let per_message = live as f64 / self.cfg.users as f64;
        let start = Instant::now();
        let duration = Duration::from_secs_f64(self.cfg.duration_s);
        let mut next = first;
        let mut pending = FuturesUnordered::new();
        loop {
            let elapsed = start.elapsed();
            let running = elapsed < duration;
            if blip_at.is_some_and(|at| elapsed >= at) {
                blip_at = None;
                self.blip(conn, first, next).await?;
            }
            while running && pending.len() < self.cfg.pipelines_in_flight {
                let budget = self.budget(first, next, elapsed, per_message);
                if budget == 0 {
                    break;
                }
                let (mut c, ch) = (conn.clone(), self.channels.clone());
                let (users, size, range) = (self.cfg.users, self.cfg.payload, next..next + budget);
                pending.push(async move {
                    let sent = c.publish_range(mode, &ch, range, users, size, false).await;
                    (sent, now_us())
                });
                next += budget;
            }
            if pending.is_empty() {
                if !running {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                self.shared.borrow().check()?;
                continue;
            }
            tokio::select! {
                done = pending.next() => {
                    if let Some((sent, at)) = done {
                        self.record_sent(sent?, at);
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
        }
        Ok(next)
    }

    /// How many messages the next pipeline may publish: what the rate makes due by `elapsed`,
    /// or flat out what keeps the deliveries in flight under `--max-in-flight`; at most
    /// `--pipeline`.
    fn budget(&self, first: u64, next: u64, elapsed: Duration, per_message: f64) -> u64 {
        if self.cfg.rate > 0 {
            let due = first + (self.cfg.rate as f64 * elapsed.as_secs_f64()) as u64;
            due.saturating_sub(next).min(self.cfg.pipeline)
        } else {
            let delivered = self.shared.borrow().total().delivered as f64;
            let in_flight = (next as f64 * per_message - delivered).max(0.0);
            let room = (self.cfg.max_in_flight as f64 - in_flight).max(0.0) / per_message;
            (room as u64).min(self.cfg.pipeline)
        }
    }

    /// Counts a pipeline's messages, in total and in the series bin of `at_us`.
    fn record_sent(&self, sent: Sent, at_us: u64) {
        let Sent {
            messages,
            to_nobody,
        } = sent;
        let bin = at_us.saturating_sub(self.epoch_us) / (self.cfg.bin_ms * 1000);
        let mut s = self.shared.borrow_mut();
        s.published += messages;
        s.to_nobody += to_nobody;
        *s.published_bins.entry(bin).or_default() += messages;
    }

    /// Sends SIGTERM to the server and waits until it is gone and every socket closed, or
    /// `--drain-wait-s` passed.
    pub(super) async fn drain(&mut self) -> anyhow::Result<()> {
        let pid = self
            .cfg
            .server_pid
            .ok_or_else(|| anyhow!("--drain needs --server-pid"))?;
        self.set_phase("drain");
        let open = self.shared.borrow().total().open;
        let sigterm_us = now_us();
        let start = self.snap();
        self.mark("SIGTERM");
        send_sigterm(pid)?;
        let exit_us = self.wait_for_drain(pid).await?;
        self.account_cpu("drain", &start);
        self.seen.drain = Some(DrainStart {
            sigterm_us,
            open,
            exit_us,
        });
        Ok(())
    }

    /// Polls every 5 ms for the server's exit and the last close; returns when it exited.
    async fn wait_for_drain(&mut self, pid: u32) -> anyhow::Result<Option<u64>> {
        let limit = Duration::from_secs_f64(self.cfg.drain_wait_s);
        let t0 = Instant::now();
        let mut exit_us = None;
        while t0.elapsed() < limit {
            self.shared.borrow().check()?;
            if exit_us.is_none() && !procfs::alive(pid) {
                exit_us = Some(now_us());
                self.mark("server exit");
            }
            if exit_us.is_some() && self.shared.borrow().total().open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(exit_us)
    }

    /// Tells every worker what was published and waits for their final reports.
    pub(super) async fn finish(&mut self, workers: &mut [Worker]) -> anyhow::Result<()> {
        self.set_phase("report");
        let published_any =
            self.cfg.verify || self.seen.publish.is_some() || self.seen.resume.is_some();
        let command = Command::Finish {
            published: published_any.then_some(self.seen.published_end),
            users: self.cfg.users,
            wait_ms: (self.cfg.settle_s * 1000.0) as u64,
        };
        workers::send_all(workers, &command).await?;
        let limit = Duration::from_secs_f64(self.cfg.settle_s + 30.0);
        if !wait_until(&self.shared, limit, |s| {
            s.finals.iter().all(Option::is_some)
        })
        .await?
        {
            bail!("workers did not report within {limit:?}");
        }
        Ok(())
    }
}

/// Redis' `INFO` counters, or `None` (with a warning) when they cannot be read: they are
/// accounting, not the measurement. `None` without a warning on a cluster.
async fn redis_info(conn: &mut Conn) -> Option<InfoSnap> {
    match InfoSnap::take(conn.single()?).await {
        Ok(snap) => Some(snap),
        Err(e) => {
            eprintln!("warning: {e:#}");
            None
        }
    }
}

/// `kill -TERM pid`.
fn send_sigterm(pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .context("running kill -TERM")?;
    if !status.success() {
        bail!("kill -TERM {pid} failed: {status}");
    }
    Ok(())
}
