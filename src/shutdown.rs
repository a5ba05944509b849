//! Shutdown as a value: a [`ShutdownHandle`] that whoever owns the process (the binary's
//! signal handler, a test) triggers, and the [`Shutdown`] that [`crate::run`] receives. The first
//! trigger starts the graceful drain, a second one ends it at once, exactly as SIGTERM and a
//! second SIGTERM do.

use tokio::sync::mpsc;

/// Triggers a server's shutdown. Cloning it gives another trigger of the same server.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    triggers: mpsc::UnboundedSender<()>,
}

/// The receiving side, handed to [`crate::run`]. Every trigger is delivered (none coalesce), so
/// two quick triggers are a drain and then an immediate exit.
#[derive(Debug)]
pub struct Shutdown {
    triggers: mpsc::UnboundedReceiver<()>,
}

impl Shutdown {
    /// A new pair: the handle to trigger with, and the value to pass to [`crate::run`].
    pub fn new() -> (ShutdownHandle, Shutdown) {
        let (triggers, receiver) = mpsc::unbounded_channel();
        (ShutdownHandle { triggers }, Shutdown { triggers: receiver })
    }

    /// Waits for the next trigger; `None` once every handle is gone (no trigger can come).
    pub async fn triggered(&mut self) -> Option<()> {
        self.triggers.recv().await
    }
}

impl ShutdownHandle {
    /// Asks the server to shut down: the first call drains, the next one exits at once. A
    /// server that has already stopped ignores it.
    pub fn trigger(&self) {
        // A send error means the server is gone: nothing is left to shut down.
        let _ = self.triggers.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two quick triggers arrive as two (the second is what skips the drain), not one.
    #[tokio::test]
    async fn every_trigger_is_delivered() {
        let (handle, mut shutdown) = Shutdown::new();
        handle.trigger();
        handle.clone().trigger();
        assert_eq!(shutdown.triggered().await, Some(()));
        assert_eq!(shutdown.triggered().await, Some(()));
    }

    /// Once every handle is gone no trigger can come, and waiting says so instead of hanging.
    #[tokio::test]
    async fn no_handle_left_ends_the_wait() {
        let (handle, mut shutdown) = Shutdown::new();
        drop(handle);
        assert_eq!(shutdown.triggered().await, None);
    }

    /// Triggering a server that has stopped is harmless.
    #[test]
    fn triggering_a_stopped_server_is_ignored() {
        let (handle, shutdown) = Shutdown::new();
        drop(shutdown);
        handle.trigger();
    }
}
