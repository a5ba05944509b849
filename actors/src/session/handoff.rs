//! How an upgraded socket reaches its session: the HTTP layer hands over the stream with the
//! 101 answer and any bytes read past the request, and the session is started on the arbiter
//! of its user's hub, the stream moved there from the HTTP worker's reactor. A socket that never
//! reaches its session (the hub's arbiter has stopped) is closed with 1011 and the JSON reason,
//! not dropped in silence.

use std::io::Write as _;
use std::net::Shutdown;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;

use super::{Session, SessionParams};
use crate::close::{CloseCode, CloseReason};
use crate::wire::OutFrame;

/// A socket whose upgrade request was accepted, handed over by the HTTP layer.
pub struct Upgraded {
    /// The connection.
    pub stream: TcpStream,
    /// What is left to write of the HTTP 101 answer, written before anything else.
    pub handshake: Bytes,
    /// Bytes the client sent after its upgrade request, already read by the HTTP layer.
    pub read_ahead: BytesMut,
}

/// Why an upgraded socket could not be handed to its session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The stream could not be moved between threads.
    #[error("cannot hand the socket over: {0}")]
    Handoff(#[from] std::io::Error),
    /// The hub's arbiter has stopped (the node is shutting down).
    #[error("the arbiter of the user's hub has stopped")]
    ArbiterGone,
}

impl Session {
    /// Starts the session on the arbiter of its user's hub, moving the socket there: the hub
    /// and every session of a user share one thread, so a message crosses threads once per
    /// batch from the broker, not once per socket.
    pub fn spawn(params: SessionParams, upgraded: Upgraded) -> Result<(), SpawnError> {
        let arbiter = params.hub.arbiter.clone();
        let Upgraded {
            stream,
            mut handshake,
            read_ahead,
        } = upgraded;
        // The 101 goes out now (a fresh socket's send buffer takes it whole), not after the
        // move: the client's handshake waits one thread hop less.
        if let Ok(written) = stream.try_write(&handshake) {
            let _ = handshake.split_to(written);
        }
        // Leaves this thread's reactor; registered again with the target's.
        let in_transit = InTransit {
            stream: Some(stream.into_std()?),
            handshake,
            correlation_id: Arc::clone(&params.correlation_id),
        };
        let start = move || {
            let Some((stream, handshake)) = in_transit.arrive() else {
                return;
            };
            match TcpStream::from_std(stream) {
                Ok(stream) => {
                    let upgraded = Upgraded {
                        stream,
                        handshake,
                        read_ahead,
                    };
                    Session::start(params, upgraded);
                }
                Err(error) => tracing::warn!(%error, "cannot register a handed-over socket"),
            }
        };
        if arbiter.spawn_fn(start) {
            Ok(())
        } else {
            Err(SpawnError::ArbiterGone)
        }
    }
}

/// A socket between the HTTP worker and its session's arbiter. Dropped before it arrives (the
/// arbiter has stopped and dropped the task carrying it), it tells the client why: the rest of
/// the 101, then a 1011 close with the JSON reason, written without blocking (a fresh socket's
/// send buffer holds both), then the connection ends.
struct InTransit {
    stream: Option<std::net::TcpStream>,
    handshake: Bytes,
    correlation_id: Arc<str>,
}

impl InTransit {
    /// The stream and what is left of its 101, now owned by the session's arbiter (`None` only
    /// if it was taken already, which `arrive` consuming the value rules out).
    fn arrive(mut self) -> Option<(std::net::TcpStream, Bytes)> {
        let stream = self.stream.take()?;
        Some((stream, std::mem::take(&mut self.handshake)))
    }
}

impl Drop for InTransit {
    fn drop(&mut self) {
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        let reason = CloseReason::new(
            CloseCode::Internal,
            "session could not start",
            &self.correlation_id,
        );
        let mut out = self.handshake.to_vec();
        OutFrame::close(&reason).write_into(&mut out);
        let _ = stream.write_all(&out);
        let _ = stream.shutdown(Shutdown::Write);
    }
}
