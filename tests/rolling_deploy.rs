//! A Kubernetes rolling deploy, simulated on one machine: two server processes A and B share one
//! real `redis-server`; 200 protocol v2 clients hold a socket on A while a publisher sends every
//! user a sequenced durable message every 20 ms through the publish API of B (the replica that
//! stays); A gets SIGTERM. Every client must be closed by A with 1012 SERVICE_UNAVAILABLE (a
//! valid JSON reason of at most 123 bytes), at times spread over the drain window, reconnect to
//! B after a jittered delay as docs/FRONTEND.md tells browser clients to, resuming with `since`,
//! be welcomed with `recovered:true`, and receive every message: **0 lost, 0 duplicated** for
//! every client (each offset from 1 to the last published exactly once, in order, the payload's
//! sequence number equal to its offset). A must exit 0. The reconnect times and how many
//! messages each resume replayed are printed.
//!
//! Run alone, with the report: `cargo test --test rolling_deploy -- --nocapture`.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

/// Clients (one user each) moved from A to B.
const CLIENTS: usize = 200;
/// A's `shutdown.drain_timeout_s`: closes are spread over 80% of it.
const DRAIN_TIMEOUT_S: u64 = 4;
/// Share of the drain window the server spreads closes over (the drain coordinator's).
const SPREAD_SHARE: f64 = 0.8;
/// The publisher sends every user one message per tick.
const PUBLISH_EVERY: Duration = Duration::from_millis(20);
/// docs/FRONTEND.md: after a 1012 the first reconnect waits a uniformly random delay in
/// [0, this) ("full jitter"), so that clients closed in the same instant do not reconnect in it.
const RECONNECT_JITTER_MS: u64 = 1000;
/// docs/FRONTEND.md: later attempts back off exponentially (full jitter), capped.
const BACKOFF_CAP_MS: u64 = 30_000;

/// What one client saw, filled in by its task.
#[derive(Debug, Default)]
struct Record {
    /// Every durable offset received, on A then on B, in order.
    offsets: Vec<u64>,
    /// The position of the last message processed on A: `<epoch>:<offset>`.
    since: Option<String>,
    /// B's welcome: `recovered`, and its top (messages replayed = top - since).
    recovered_b: Option<bool>,
    replayed_b: u64,
    /// Highest sequence number received on A.
    last_seq_a: Option<u64>,
    /// When A's close frame arrived, and its code and reason.
    closed_at: Option<Instant>,
    close: Option<(u16, String)>,
    /// When the closing handshake with A completed (A ended the TCP connection).
    ended_a_at: Option<Instant>,
    /// Something other than a 1012 close ended the socket on A.
    error: Option<String>,
    /// When the WebSocket handshake with B completed.
    connected_b_at: Option<Instant>,
    /// Handshake attempts B refused (must stay 0 in this test, recorded to report).
    failed_attempts_b: u32,
    /// First sequence number received on B, and when.
    first_seq_b: Option<u64>,
    first_b_at: Option<Instant>,
    /// Messages received on each server.
    received_a: u64,
    received_b: u64,
}

type Records = Rc<RefCell<Vec<Record>>>;

/// SplitMix64: a dependency-free PRNG for the jitter, seeded per client from one printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, bound).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

fn user(i: usize) -> String {
    format!("roll-{i:03}")
}

/// A v2 frame as JSON; panics on anything else.
fn frame(text: &str, me: &str) -> Value {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{me} got a non-JSON v2 frame ({e}): {text:?}"))
}

/// A durable message frame's (epoch, offset), checking that its payload `{"seq":N}` carries
/// the same number (every user gets one message per tick, so seq and offset agree).
fn durable(frame: &Value, me: &str) -> (String, u64) {
    assert_eq!(frame["type"], "message", "{me}: {frame}");
    let offset = frame["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("{me}: {frame}"));
    assert_eq!(
        frame["data"]["seq"], offset,
        "{me}: payload and offset disagree: {frame}"
    );
    let epoch = frame["epoch"].as_str().unwrap_or_default().to_owned();
    (epoch, offset)
}

/// One client: reads A until A closes it, waits the jittered delay, connects to B (backing off
/// if B refuses), and reads B until `stop`, then closes.
async fn client(
    i: usize,
    mut on_a: WsClient,
    b_base: String,
    records: Records,
    stop: Rc<RefCell<Option<u64>>>,
    seed: u64,
) {
    let me = user(i);
    let mut rng = Rng(seed ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    // On A: the welcome, then messages until its close frame.
    let Some(Frame::Text(text)) = on_a.next_frame(Duration::from_secs(30)).await else {
        records.borrow_mut()[i].error = Some("no welcome on A".into());
        return;
    };
    let welcome = frame(&text, &me);
    assert_eq!(welcome["type"], "welcome", "{me}: {welcome}");
    records.borrow_mut()[i].since = Some(format!(
        "{}:{}",
        welcome["epoch"].as_str().unwrap_or_default(),
        welcome["offset"]
    ));
    loop {
        match on_a.next_frame(Duration::from_secs(30)).await {
            Some(Frame::Text(text)) => {
                let (epoch, offset) = durable(&frame(&text, &me), &me);
                let mut records = records.borrow_mut();
                let record = &mut records[i];
                record.offsets.push(offset);
                record.since = Some(format!("{epoch}:{offset}"));
                record.last_seq_a = Some(offset);
                record.received_a += 1;
            }
            Some(Frame::Close(Some((code, reason)))) => {
                let mut records = records.borrow_mut();
                records[i].closed_at = Some(Instant::now());
                records[i].close = Some((code, reason));
                break;
            }
            other => {
                records.borrow_mut()[i].error = Some(format!("on A: {other:?}"));
                return;
            }
        }
    }
    // Complete the closing handshake, as a browser does before its `close` event: the next read
    // sends the queued close reply and sees the end of the stream.
    match on_a.next_frame(Duration::from_secs(2)).await {
        Some(Frame::Ended(_)) => records.borrow_mut()[i].ended_a_at = Some(Instant::now()),
        other => {
            records.borrow_mut()[i].error = Some(format!("on A after the close frame: {other:?}"));
            return;
        }
    }
    drop(on_a);

    // The guide's reconnect: full jitter first, then capped exponential backoff with full jitter;
    // v2, resuming after the last message processed.
    let since = records.borrow()[i].since.clone().unwrap_or_default();
    let url = format!("{b_base}?since={since}");
    let mut attempt: u32 = 0;
    let mut on_b = loop {
        let ceiling = (RECONNECT_JITTER_MS << attempt.min(10)).min(BACKOFF_CAP_MS);
        tokio::time::sleep(Duration::from_millis(rng.below(ceiling))).await;
        let protocol = format!("bearer, {}, notify.v2", token(&me));
        match WsClient::try_connect(&url, Some(&protocol), None).await {
            Ok(ws) => break ws,
            Err(_) => {
                records.borrow_mut()[i].failed_attempts_b += 1;
                attempt += 1;
            }
        }
    };
    records.borrow_mut()[i].connected_b_at = Some(Instant::now());
    let Some(Frame::Text(text)) = on_b.next_frame(Duration::from_secs(10)).await else {
        records.borrow_mut()[i].error = Some("no welcome on B".into());
        return;
    };
    let welcome = frame(&text, &me);
    assert_eq!(welcome["type"], "welcome", "{me}: {welcome}");
    {
        let mut records = records.borrow_mut();
        let since_offset: u64 = since
            .rsplit(':')
            .next()
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        records[i].recovered_b = welcome["recovered"].as_bool();
        records[i].replayed_b = welcome["offset"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(since_offset);
    }

    // On B, until every message published has arrived (the test sets the last offset).
    loop {
        let last = *stop.borrow();
        if last.is_some() && records.borrow()[i].offsets.last().copied() >= last {
            break;
        }
        match on_b.next_frame(Duration::from_millis(50)).await {
            None => continue,
            Some(Frame::Text(text)) => {
                let (_, offset) = durable(&frame(&text, &me), &me);
                let mut records = records.borrow_mut();
                let record = &mut records[i];
                record.offsets.push(offset);
                if record.first_seq_b.is_none() {
                    record.first_seq_b = Some(offset);
                    record.first_b_at = Some(Instant::now());
                }
                record.received_b += 1;
            }
            Some(other) => {
                records.borrow_mut()[i].error = Some(format!("on B: {other:?}"));
                return;
            }
        }
    }
    on_b.close().await;
}

/// Publishes `{"seq":N}` durably to every user every 20 ms (one publish API call to B per tick)
/// until `stop`; `seq_sent` holds the last sequence number sent. Every user's offset is the
/// sequence number: the API must answer each one's position, or the test fails.
async fn publisher(server_b: Rc<Server>, stop: Rc<RefCell<bool>>, seq_sent: Rc<RefCell<u64>>) {
    let users: Vec<String> = (0..CLIENTS).map(user).collect();
    let user_refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    while !*stop.borrow() {
        tick.tick().await;
        seq += 1;
        let reply = server_b
            .publish_api(&user_refs, serde_json::json!({ "seq": seq }))
            .await;
        let positions = &reply.json()["positions"];
        for user in &users {
            assert_eq!(
                positions[user]["offset"], seq,
                "{user}'s position: {positions}"
            );
        }
        *seq_sent.borrow_mut() = seq;
    }
}

/// min / median / max (and p90) of a sample, for the report.
fn summary(mut values: Vec<f64>, unit: &str) -> String {
    if values.is_empty() {
        return "no samples".into();
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    format!(
        "min {:.0}{unit}, median {:.0}{unit}, p90 {:.0}{unit}, max {:.0}{unit} (n={})",
        at(0.0),
        at(0.5),
        at(0.9),
        at(1.0),
        values.len()
    )
}

#[actix_web::test]
async fn rolling_deploy_moves_every_client_from_a_to_b() {
    let started = Instant::now();
    let redis = RedisServer::start().await;
    let settings = TestSettings::with_redis(&redis);
    let mut server_a = Server::start(
        settings
            .clone()
            .set("shutdown.drain_timeout_s", DRAIN_TIMEOUT_S),
    )
    .await;
    let server_b = Rc::new(Server::start(settings).await);
    server_a.wait_readyz(200, STARTUP_DEADLINE).await;
    server_b.wait_readyz(200, STARTUP_DEADLINE).await;

    // 200 clients on A, connected concurrently.
    let handshakes = (0..CLIENTS).map(|i| {
        let url = format!("{}&v=2", server_a.ws_url(&token(&user(i))));
        async move { WsClient::connect(&url).await }
    });
    let sockets = futures_util::future::join_all(handshakes).await;

    let records: Records = Rc::new(RefCell::new(
        (0..CLIENTS).map(|_| Record::default()).collect(),
    ));
    let stop_clients = Rc::new(RefCell::new(None::<u64>));
    let stop_publisher = Rc::new(RefCell::new(false));
    let seq_sent = Rc::new(RefCell::new(0u64));
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    println!("jitter seed {seed}");

    let clients: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            actix_web::rt::spawn(client(
                i,
                ws,
                server_b.ws_base(),
                records.clone(),
                stop_clients.clone(),
                seed,
            ))
        })
        .collect();
    let publisher = actix_web::rt::spawn(publisher(
        server_b.clone(),
        stop_publisher.clone(),
        seq_sent.clone(),
    ));

    // Every client receives on A before the deploy starts (its subscription is live).
    wait_until(
        DEADLINE,
        "every client to receive a message on A",
        || async {
            records
                .borrow()
                .iter()
                .all(|r| r.received_a > 0 || r.error.is_some())
        },
    )
    .await;

    // The deploy: SIGTERM to A.
    let sigterm_at = Instant::now();
    server_a.sigterm();
    let drain_deadline = Duration::from_secs(DRAIN_TIMEOUT_S + 10);
    wait_until(
        drain_deadline,
        "every client to be closed by A, reconnect to B and receive there",
        || async {
            records
                .borrow()
                .iter()
                .all(|r| r.first_seq_b.is_some() || r.error.is_some())
        },
    )
    .await;
    let status = server_a
        .wait_exit(Duration::from_secs(DRAIN_TIMEOUT_S + 5))
        .await;
    let exited_after = sigterm_at.elapsed();

    *stop_publisher.borrow_mut() = true;
    publisher.await.expect("publisher task");
    let last = *seq_sent.borrow();
    *stop_clients.borrow_mut() = Some(last);
    wait_until(
        DEADLINE,
        "every client to receive the last message on B",
        || async {
            records
                .borrow()
                .iter()
                .all(|r| r.offsets.last() == Some(&last) || r.error.is_some())
        },
    )
    .await;
    for handle in clients {
        handle.await.expect("client task");
    }

    // ---- Assertions ----
    let records = records.borrow();
    let errors: Vec<String> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.error.as_ref().map(|e| format!("{}: {e}", user(i))))
        .collect();
    assert!(errors.is_empty(), "clients failed: {errors:#?}");
    for (i, r) in records.iter().enumerate() {
        let (code, reason) = r.close.as_ref().expect("close recorded");
        assert_eq!(*code, 1012, "{}: close code (reason {reason})", user(i));
        assert!(
            reason.len() <= MAX_CLOSE_REASON,
            "{}: close reason is {} bytes: {reason}",
            user(i),
            reason.len()
        );
        let json: Value = serde_json::from_str(reason)
            .unwrap_or_else(|e| panic!("{}: close reason is not JSON ({e}): {reason:?}", user(i)));
        assert_eq!(json["error_code"], "SERVICE_UNAVAILABLE", "reason {reason}");
        for field in ["message", "correlation_id"] {
            assert!(
                json.get(field).is_some(),
                "close reason lacks {field}: {reason}"
            );
        }
        assert!(r.received_b > 0, "{} received nothing on B", user(i));
        assert_eq!(r.recovered_b, Some(true), "{}: B's welcome", user(i));
        let expected: Vec<u64> = (1..=*seq_sent.borrow()).collect();
        if r.offsets != expected {
            let unique: std::collections::HashSet<_> = r.offsets.iter().collect();
            panic!(
                "{}: {} messages received for {} sent: {} lost, {} duplicated",
                user(i),
                r.offsets.len(),
                expected.len(),
                expected.iter().filter(|o| !unique.contains(o)).count(),
                r.offsets.len() - unique.len()
            );
        }
    }
    let closes: Vec<Instant> = records.iter().filter_map(|r| r.closed_at).collect();
    let first_close = *closes.iter().min().expect("closes");
    let last_close = *closes.iter().max().expect("closes");
    let spread = last_close - first_close;
    let window = Duration::from_secs(DRAIN_TIMEOUT_S).mul_f64(SPREAD_SHARE);
    assert!(
        spread >= window.mul_f64(0.4),
        "closes were not spread: first to last {spread:?}, window {window:?}"
    );
    assert!(status.success(), "A exited with {status} after the drain");

    // ---- Report ----
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let replayed: Vec<f64> = records.iter().map(|r| r.replayed_b as f64).collect();
    let to_connect: Vec<f64> = records
        .iter()
        .map(|r| ms(r.connected_b_at.unwrap() - r.closed_at.unwrap()))
        .collect();
    let to_message: Vec<f64> = records
        .iter()
        .map(|r| ms(r.first_b_at.unwrap() - r.closed_at.unwrap()))
        .collect();
    let handshake: Vec<f64> = records
        .iter()
        .map(|r| ms(r.ended_a_at.unwrap() - r.closed_at.unwrap()))
        .collect();
    let ticks_per_s = 1000.0 / PUBLISH_EVERY.as_millis() as f64;
    println!("rolling deploy: {CLIENTS} clients A -> B, drain_timeout_s {DRAIN_TIMEOUT_S}");
    println!(
        "  closes (all 1012 SERVICE_UNAVAILABLE): first {:.0} ms after SIGTERM, spread over {:.0} ms \
         (window {:.0} ms); A exited 0 {:.0} ms after SIGTERM",
        ms(first_close - sigterm_at),
        ms(spread),
        ms(window),
        ms(exited_after)
    );
    println!(
        "  reconnect jitter: uniform [0, {RECONNECT_JITTER_MS}) ms; handshakes refused by B: {}",
        records.iter().map(|r| r.failed_attempts_b).sum::<u32>()
    );
    println!(
        "  close frame -> A ends the connection: {}",
        summary(handshake, " ms")
    );
    println!("  close -> connected to B: {}", summary(to_connect, " ms"));
    println!(
        "  close -> first message on B: {}",
        summary(to_message, " ms")
    );
    println!(
        "  messages published during each client's reconnect and replayed by its resume (one per \
         {} ms tick): {}",
        PUBLISH_EVERY.as_millis(),
        summary(replayed.clone(), "")
    );
    println!(
        "  0 lost, 0 duplicated: {:.0} replayed in all, {} sent per client ({ticks_per_s:.0}/s to \
         each user); received on A {}, on B {}; test took {:.1} s",
        replayed.iter().sum::<f64>(),
        *seq_sent.borrow(),
        records.iter().map(|r| r.received_a).sum::<u64>(),
        records.iter().map(|r| r.received_b).sum::<u64>(),
        started.elapsed().as_secs_f64()
    );
}
