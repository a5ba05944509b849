//! What the parent learns while the run goes on: each worker's latest tick and final report, a
//! worker's failure or exit, the phase name, and what the parent itself published and sampled.
//! One thread: the tasks share it through an `Rc<RefCell<_>>`, never borrowed across an await.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::protocol::{Tick, WorkerFinal};

/// What the parent knows while the run goes on (shared by its tasks; one thread).
#[derive(Default)]
pub(super) struct Shared {
    pub(super) ticks: Vec<Tick>,
    pub(super) finals: Vec<Option<WorkerFinal>>,
    pub(super) fatal: Option<String>,
    pub(super) exited: Vec<bool>,
    pub(super) phase: String,
    pub(super) published: u64,
    pub(super) to_nobody: u64,
    /// Messages published per series bin.
    pub(super) published_bins: BTreeMap<u64, u64>,
    pub(super) rss: Vec<(f64, u64)>,
}

/// The handle the parent's tasks share.
pub(super) type SharedRef = Rc<RefCell<Shared>>;

impl Shared {
    /// Makes room for `count` workers' ticks, final reports and exits.
    pub(super) fn expect_workers(&mut self, count: usize) {
        self.ticks = vec![Tick::default(); count];
        self.finals = vec![None; count];
        self.exited = vec![false; count];
    }

    /// The workers' latest ticks added up.
    pub(super) fn total(&self) -> Tick {
        let mut t = Tick {
            connect_done: true,
            ..Tick::default()
        };
        for w in &self.ticks {
            t.connected += w.connected;
            t.failed += w.failed;
            t.connect_done &= w.connect_done;
            t.open += w.open;
            t.delivered += w.delivered;
            t.closed += w.closed;
            t.away += w.away;
            t.reconnects_done += w.reconnects_done;
        }
        t
    }

    /// Fails when a worker reported a failure or exited without its final report.
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if let Some(error) = &self.fatal {
            bail!("a worker failed: {error}");
        }
        if let Some(i) = self
            .exited
            .iter()
            .zip(&self.finals)
            .position(|(exited, fin)| *exited && fin.is_none())
        {
            bail!("worker {i} exited without reporting");
        }
        Ok(())
    }

    /// The final reports received so far.
    pub(super) fn finals(&self) -> Vec<&WorkerFinal> {
        self.finals.iter().flatten().collect()
    }
}

/// Waits up to `limit` for `done`, checking the workers every 10 ms; `false` on timeout.
pub(super) async fn wait_until(
    shared: &SharedRef,
    limit: Duration,
    mut done: impl FnMut(&Shared) -> bool,
) -> anyhow::Result<bool> {
    let start = Instant::now();
    loop {
        {
            let s = shared.borrow();
            s.check()?;
            if done(&s) {
                return Ok(true);
            }
        }
        if start.elapsed() >= limit {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
