//! Watching the run from the side: a progress line on stderr once a second and, with
//! `--server-pid`, the server's RSS sampled every 250 ms into [`Shared`].

use std::time::Duration;

use tokio::task::JoinHandle;

use super::secs_since;
use super::shared::SharedRef;
use crate::procfs;
use crate::util::now_us;

/// The progress printer and the RSS sampler, stopped together.
pub(super) struct Monitors {
    progress: JoinHandle<()>,
    sampler: Option<JoinHandle<()>>,
}

impl Monitors {
    /// Starts the progress line, and the RSS sampler when `server_pid` is known.
    pub(super) fn start(shared: &SharedRef, epoch_us: u64, server_pid: Option<u32>) -> Self {
        let progress = tokio::task::spawn_local(progress(shared.clone(), epoch_us, server_pid));
        let sampler = server_pid
            .map(|pid| tokio::task::spawn_local(sample_rss(shared.clone(), epoch_us, pid)));
        Self { progress, sampler }
    }

    /// Stops both tasks.
    pub(super) fn stop(self) {
        self.progress.abort();
        if let Some(s) = self.sampler {
            s.abort();
        }
    }
}

/// Prints the phase, the socket counts and the publish and delivery rates once a second.
async fn progress(shared: SharedRef, epoch_us: u64, pid: Option<u32>) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    let (mut last_delivered, mut last_published) = (0u64, 0u64);
    interval.tick().await;
    loop {
        interval.tick().await;
        let s = shared.borrow();
        let t = s.total();
        let rss = pid.and_then(procfs::rss_kb).map_or_else(String::new, |kb| {
            format!(" | server RSS {:.1} MiB", kb as f64 / 1024.0)
        });
        eprintln!(
            "[{:7.1}s] {} | connected {} failed {} open {} closed {} | published {} (+{}/s) | delivered {} (+{}/s){rss}",
            secs_since(epoch_us, now_us()),
            s.phase,
            t.connected,
            t.failed,
            t.open,
            t.closed,
            s.published,
            s.published.saturating_sub(last_published),
            t.delivered,
            t.delivered.saturating_sub(last_delivered),
        );
        last_delivered = t.delivered;
        last_published = s.published;
    }
}

/// Records the server's VmRSS every 250 ms.
async fn sample_rss(shared: SharedRef, epoch_us: u64, pid: u32) {
    let mut interval = tokio::time::interval(Duration::from_millis(250));
    loop {
        interval.tick().await;
        if let Some(kb) = procfs::rss_kb(pid) {
            shared
                .borrow_mut()
                .rss
                .push((secs_since(epoch_us, now_us()), kb));
        }
    }
}
