//! One round of a stuck-reader run, as methods of [`Stuck`]: open a fresh socket that never
//! reads, flood its user, let the stuck client read again after `--read-after-s` (does a close
//! frame come, with which code?), and watch the server's RSS while it settles.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};

use super::report::{FloodSummary, RoundSummary};
use super::{wait_subscribed, Stuck, STUCK_USER};
use crate::procfs::{self, CpuSnap, CpuUsage};
use crate::rawws::{self, RawClient};

/// Width of a series interval.
pub(super) const BIN: Duration = Duration::from_millis(250);

impl Stuck {
    /// Runs round `round` (1-based) and summarises it.
    pub(super) async fn round(&mut self, round: usize) -> anyhow::Result<RoundSummary> {
        let (stuck, rss_before) = self.open_stuck_socket(round).await?;
        let cpu_start = CpuSnap::take(&self.watched, Some(self.cfg.pid));
        let flood = self.flood(round).await?;
        let flood_start_s = self.flood_windows.last().map_or(0.0, |w| w.0);
        let read_after = Duration::from_secs_f64(self.cfg.read_after_s);
        let reader = tokio::task::spawn_local(async move {
            tokio::time::sleep(read_after).await;
            rawws::read_all(stuck, Duration::from_secs(8), Duration::from_secs(30)).await
        });
        self.settle().await;
        let rss_after = procfs::rss_kb(self.cfg.pid)
            .ok_or_else(|| anyhow!("server {} is gone", self.cfg.pid))?;
        let cpu = CpuUsage::between(
            &cpu_start,
            &CpuSnap::take(&self.watched, Some(self.cfg.pid)),
        );
        let stuck_socket = reader
            .await
            .map_err(|e| anyhow!("stuck reader task: {e}"))?;
        self.mark(format!("round {round}: settled"));
        Ok(RoundSummary {
            round,
            rss_before_kb: rss_before,
            rss_peak_kb: self.rss_peak_since(flood_start_s, rss_after),
            rss_after_kb: rss_after,
            flood,
            stuck_socket,
            cpu,
        })
    }

    /// The stuck socket: upgrade, then read nothing; returns it with the server's RSS once
    /// both sockets are open and settled.
    async fn open_stuck_socket(&mut self, round: usize) -> anyhow::Result<(RawClient, u64)> {
        let token = self.minter.mint(&self.user_id(STUCK_USER))?;
        let stuck = rawws::connect(self.target, &self.cfg.url, &token, self.cfg.rcvbuf).await?;
        wait_subscribed(&mut self.conn, &self.channels, STUCK_USER).await?;
        self.mark(format!("round {round}: stuck socket open"));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_before =
            procfs::rss_kb(self.cfg.pid).ok_or_else(|| anyhow!("no process {}", self.cfg.pid))?;
        eprintln!(
            "[{:6.1}s] round {round}: both sockets open; server RSS {rss_before} KiB",
            self.at()
        );
        Ok((stuck, rss_before))
    }

    /// Publishes `--flood` messages to the stuck user, `--pipeline` at a time.
    async fn flood(&mut self, round: usize) -> anyhow::Result<FloodSummary> {
        self.mark(format!("round {round}: flood"));
        let flood_start = Instant::now();
        let flood_start_s = self.at();
        let mut flood = FloodSummary {
            payload_bytes: self.cfg.payload,
            ..FloodSummary::default()
        };
        let mut last_report = Instant::now();
        while flood.messages < self.cfg.flood {
            self.flood_pipeline(round, &mut flood, flood_start).await?;
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                self.print_flood_progress(&flood);
            }
        }
        flood.seconds = flood_start.elapsed().as_secs_f64();
        flood.per_s = flood.messages as f64 / flood.seconds;
        let flood_end_s = self.at();
        self.flood_windows.push((flood_start_s, flood_end_s));
        self.mark(format!("round {round}: flood end"));
        eprintln!(
            "[{:6.1}s] round {round}: flood done, {} in {:.2}s; the stuck client reads again in {} s; settling {} s",
            self.at(),
            flood.messages,
            flood.seconds,
            self.cfg.read_after_s,
            self.cfg.settle_s
        );
        Ok(flood)
    }

    /// One pipeline of the flood; counts which PUBLISHes still reached the server and notes
    /// when the first one reached nobody (the server had unsubscribed).
    async fn flood_pipeline(
        &mut self,
        round: usize,
        flood: &mut FloodSummary,
        flood_start: Instant,
    ) -> anyhow::Result<()> {
        let n = self.cfg.pipeline.min(self.cfg.flood - flood.messages);
        let channel = self.channels.of(STUCK_USER);
        let mut body = Vec::with_capacity(self.cfg.payload + 32);
        let mut pipe = redis::pipe();
        let ts = crate::util::now_us();
        for i in 0..n {
            crate::payload::build(flood.messages + i + 1, ts, self.cfg.payload, &mut body);
            pipe.cmd("PUBLISH").arg(&channel).arg(&body[..]);
        }
        let replies: Vec<i64> = pipe
            .query_async(&mut self.conn)
            .await
            .context("flood PUBLISH pipeline")?;
        for r in replies {
            if r > 0 {
                flood.reached_server += 1;
            } else {
                flood.to_nobody += 1;
                if flood.unsubscribed_after_s.is_none() {
                    flood.unsubscribed_after_s = Some(flood_start.elapsed().as_secs_f64());
                    self.mark(format!("round {round}: unsubscribed"));
                }
            }
        }
        flood.messages += n;
        let bin = (self.epoch.elapsed().as_micros() / BIN.as_micros()) as u64;
        *self.flood_bins.entry(bin).or_default() += n;
        Ok(())
    }

    fn print_flood_progress(&self, flood: &FloodSummary) {
        eprintln!(
            "[{:6.1}s] flood {} / {} published, {} reached the server | server RSS {} KiB | live received {}",
            self.at(),
            flood.messages,
            self.cfg.flood,
            flood.reached_server,
            procfs::rss_kb(self.cfg.pid).unwrap_or(0),
            self.live.borrow().received.len()
        );
    }

    /// Waits `--settle-s`, printing the server's RSS once a second.
    async fn settle(&self) {
        let settle = Instant::now();
        while settle.elapsed().as_secs_f64() < self.cfg.settle_s {
            tokio::time::sleep(Duration::from_secs(1)).await;
            eprintln!(
                "[{:6.1}s] settle: server RSS {} KiB | live received {}",
                self.at(),
                procfs::rss_kb(self.cfg.pid).unwrap_or(0),
                self.live.borrow().received.len()
            );
        }
    }

    /// The largest RSS sample since `since_s`, and at least `rss_after`.
    fn rss_peak_since(&self, since_s: f64, rss_after: u64) -> u64 {
        let peak = self
            .rss
            .borrow()
            .iter()
            .filter(|(t, _)| *t >= since_s)
            .map(|s| s.1)
            .max()
            .unwrap_or(rss_after);
        peak.max(rss_after)
    }
}
