//! The drain coordinator (what the card calls the "system supervisor"; not named `Supervisor`,
//! which in actix means restart-on-failure). On the first SIGTERM or SIGINT it turns readiness
//! off, stops new upgrades, asks the directory to close every session with 1012 at times spread
//! over most of the drain window, and reports completion when no session is left or the deadline
//! passes. A second signal ends the process at once. The pacing of the closes ([`SpreadCloses`])
//! is decided here; the hubs only apply it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use rand::Rng;
use tokio::sync::oneshot;

use crate::directory::Directory;
use crate::hub::ClosePacing;
use crate::limiter::ConnectionLimiter;

/// Share of the drain window over which closes are spread; the rest is flush margin.
const SPREAD_SHARE: f64 = 0.8;
/// How often the coordinator checks whether every session is gone.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Each session closes at a uniformly random point of `window`, so that a node's closes are
/// spread evenly over it (a reconnect storm becomes a steady trickle).
#[derive(Clone, Copy, Debug)]
pub struct SpreadCloses {
    window: Duration,
}

impl SpreadCloses {
    /// Closes spread over `window`.
    pub fn over(window: Duration) -> Self {
        Self { window }
    }
}

impl ClosePacing for SpreadCloses {
    fn close_delay(&self) -> Duration {
        spread_delay(&mut rand::rng(), self.window)
    }
}

/// A uniformly random point in `window`.
fn spread_delay(rng: &mut impl Rng, window: Duration) -> Duration {
    let millis = window.as_millis().min(u128::from(u64::MAX)) as u64;
    if millis == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rng.random_range(0..millis))
}

/// Whether the node is draining. Written only by the coordinator; read by HTTP handlers.
#[derive(Clone, Debug, Default)]
pub struct DrainState {
    draining: Arc<AtomicBool>,
}

impl DrainState {
    /// True once the drain has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn begin(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

/// How the drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every session closed before the deadline.
    Empty,
    /// The deadline passed with sessions still open.
    Deadline,
    /// A second signal arrived.
    Forced,
}

/// A shutdown signal (SIGTERM or SIGINT).
#[derive(Message, Clone, Copy, Debug)]
#[rtype(result = "()")]
pub struct ShutdownSignal;

/// Coordinates the graceful drain.
pub struct DrainCoordinator {
    state: DrainState,
    directory: Directory,
    limiter: ConnectionLimiter,
    timeout: Duration,
    done: Option<oneshot::Sender<DrainOutcome>>,
    started: Option<Instant>,
}

impl DrainCoordinator {
    /// A coordinator; `done` receives the outcome once the drain ends.
    pub fn new(
        state: DrainState,
        directory: Directory,
        limiter: ConnectionLimiter,
        timeout: Duration,
        done: oneshot::Sender<DrainOutcome>,
    ) -> Self {
        Self {
            state,
            directory,
            limiter,
            timeout,
            done: Some(done),
            started: None,
        }
    }

    fn finish(&mut self, outcome: DrainOutcome) {
        if let Some(done) = self.done.take() {
            let _ = done.send(outcome);
        }
    }

    fn begin(&mut self, ctx: &mut Context<Self>) {
        let open = self.limiter.open();
        tracing::info!(open, timeout_s = self.timeout.as_secs(), "drain started");
        self.state.begin();
        self.started = Some(Instant::now());
        let pacing = SpreadCloses::over(self.timeout.mul_f64(SPREAD_SHARE));
        self.directory.drain(Arc::new(pacing));
        ctx.run_interval(POLL_EVERY, |this, _| this.check());
    }

    fn check(&mut self) {
        let Some(started) = self.started else {
            return;
        };
        if self.done.is_none() {
            return; // already reported
        }
        if self.limiter.open() == 0 {
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "drain complete"
            );
            self.finish(DrainOutcome::Empty);
        } else if started.elapsed() >= self.timeout {
            tracing::warn!(open = self.limiter.open(), "drain deadline passed");
            self.finish(DrainOutcome::Deadline);
        }
    }
}

impl Actor for DrainCoordinator {
    type Context = Context<Self>;
}

impl Handler<ShutdownSignal> for DrainCoordinator {
    type Result = ();

    fn handle(&mut self, _: ShutdownSignal, ctx: &mut Context<Self>) {
        if self.started.is_some() {
            tracing::warn!("second shutdown signal: exiting now");
            self.finish(DrainOutcome::Forced);
        } else {
            self.begin(ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_delays_fall_inside_the_window() {
        let mut rng = rand::rng();
        let window = Duration::from_millis(80);
        for _ in 0..1000 {
            assert!(spread_delay(&mut rng, window) < window);
        }
        assert_eq!(spread_delay(&mut rng, Duration::ZERO), Duration::ZERO);
    }
}
