//! How an upgraded socket reaches its session: the HTTP layer hands over the stream with the
//! 101 answer and any bytes read past the request, and the session is started on the arbiter
//! of its user's hub, the stream moved there from the HTTP worker's reactor.

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;

use super::{Session, SessionParams};

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
        let stream = stream.into_std()?;
        let start = move || match TcpStream::from_std(stream) {
            Ok(stream) => {
                let upgraded = Upgraded {
                    stream,
                    handshake,
                    read_ahead,
                };
                Session::start(params, upgraded);
            }
            Err(error) => tracing::warn!(%error, "cannot register a handed-over socket"),
        };
        if arbiter.spawn_fn(start) {
            Ok(())
        } else {
            Err(SpawnError::ArbiterGone)
        }
    }
}
