//! The tasks that run beside the rounds: the live socket's reader, the live user's steady
//! publisher, and the server's RSS sampler. Each records into an `Rc<RefCell<_>>` the run
//! reads at the end (one thread; never borrowed across an await).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use redis::aio::MultiplexedConnection;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::procfs;
use crate::publisher::{self, Channels};
use crate::util::now_us;

/// What the live socket received.
#[derive(Default)]
pub(super) struct Live {
    /// `(seq, receive time µs, latency µs)`.
    pub(super) received: Vec<(u64, u64, u64)>,
    pub(super) closed: Option<String>,
}

/// The live socket as `tokio-tungstenite` opens it.
pub(super) type LiveSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Reads the live socket until it ends, recording each payload's seq and latency and the close.
pub(super) fn spawn_live_reader(mut ws: LiveSocket, live: Rc<RefCell<Live>>) -> JoinHandle<()> {
    tokio::task::spawn_local(async move {
        while let Some(message) = ws.next().await {
            let now = now_us();
            match message {
                Ok(Message::Text(t)) => {
                    if let Some((seq, ts)) = crate::payload::parse(t.as_bytes()) {
                        live.borrow_mut()
                            .received
                            .push((seq, now, now.saturating_sub(ts).max(1)));
                    }
                }
                Ok(Message::Close(frame)) => {
                    live.borrow_mut().closed = Some(
                        frame.map_or_else(|| "1005".into(), |f| u16::from(f.code).to_string()),
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    live.borrow_mut()
                        .closed
                        .get_or_insert(format!("error: {e}"));
                    break;
                }
            }
        }
    })
}

/// Samples the server's VmRSS every 100 ms as `(seconds since epoch, KiB)`.
pub(super) fn spawn_rss_sampler(
    pid: u32,
    epoch: Instant,
    rss: Rc<RefCell<Vec<(f64, u64)>>>,
) -> JoinHandle<()> {
    tokio::task::spawn_local(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(100));
        loop {
            interval.tick().await;
            if let Some(kb) = procfs::rss_kb(pid) {
                rss.borrow_mut().push((epoch.elapsed().as_secs_f64(), kb));
            }
        }
    })
}

/// Who the live publisher publishes to, how fast, and where it records what it sent.
pub(super) struct LivePublisher {
    pub(super) conn: MultiplexedConnection,
    pub(super) channels: Channels,
    pub(super) user: u64,
    /// Messages per second.
    pub(super) rate: u64,
    pub(super) epoch: Instant,
    /// `(seq, seconds since epoch)` of every message published.
    pub(super) published: Rc<RefCell<Vec<(u64, f64)>>>,
}

impl LivePublisher {
    /// Publishes seq 1, 2, … (0 was the probe) at `rate` per second until a publish fails.
    pub(super) fn spawn(mut self) -> JoinHandle<()> {
        tokio::task::spawn_local(async move {
            let start = Instant::now();
            let mut seq = 1u64;
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let due = 1 + (self.rate as f64 * start.elapsed().as_secs_f64()) as u64;
                let batch: Vec<(u64, u64)> = (seq..due).map(|s| (self.user, s)).collect();
                if batch.is_empty() {
                    continue;
                }
                if publisher::publish_each(&mut self.conn, &self.channels, &batch, 128)
                    .await
                    .is_err()
                {
                    return;
                }
                let t = self.epoch.elapsed().as_secs_f64();
                self.published
                    .borrow_mut()
                    .extend(batch.iter().map(|&(_, s)| (s, t)));
                seq = due;
            }
        })
    }
}
