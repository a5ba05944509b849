//! End-to-end tests of the Kafka ingest: a real Kafka-protocol broker (tansu, started here on a
//! free port with in-memory storage), a real redis-server and real sockets; the server runs
//! in-process, or as the real binary where a test crashes it, signals it or reads its log. Platform events produced to Kafka must reach their owner's socket as the contract's
//! notification, exactly once, across duplicates, a crash of the consuming server and a Redis
//! outage; with history on (the default) they are durable, so a v2 socket gets them with their
//! position and can resume; records that cannot become a notification go to the dead-letter
//! topic without blocking the partition.
//!
//! tansu must be installed (`scripts/install-tansu.sh`; CI does it): without it these tests fail
//! with a message saying so, they are never skipped.

#![cfg(feature = "kafka")]

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use actix_web::{web, App, HttpResponse, HttpServer};
use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// The first route of the platform: EssaySlotAssigned.
const SLOT_TOPIC: &str = "huleedu.essay.lifecycle.essay.slot.assigned.v1";
const SLOT_TYPE: &str = "huleedu.essay.slot.assigned.v1";
const SLOT_EVENT: &str = "essay.slot.assigned";
const SLOT_FIELDS: [&str; 4] = ["batch_id", "essay_id", "file_upload_id", "text_storage_id"];
/// `event_timestamp` of the test events, and its RFC 3339 form in notifications.
const EVENT_TIME: &str = "2026-03-01T10:00:00.250000+00:00";
const NOTIFIED_TIME: &str = "2026-03-01T10:00:00.250000Z";
/// Deadline for a notification to arrive once its event is in Kafka (a consumer group may
/// still be forming).
const KAFKA_DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// tansu
// ---------------------------------------------------------------------------------------------

/// The tansu binary: `$TANSU`, else `tansu` on PATH, else `~/.cargo/bin/tansu`.
fn tansu_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("tansu"))
        .find(|candidate| candidate.is_file());
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let in_cargo = cargo_home
        .map(|home| home.join("bin").join("tansu"))
        .filter(|candidate| candidate.is_file());
    on_path.or(in_cargo).unwrap_or_else(|| {
        panic!(
            "tansu (the Kafka-protocol broker these tests run against) is not installed: run \
             scripts/install-tansu.sh (cargo install tansu --version 0.6.0 --locked --features \
             dynostore), or set TANSU to its path"
        )
    })
}

/// A tansu broker with in-memory storage on a free port, killed on drop.
struct Tansu {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Tansu {
    async fn start() -> Self {
        let bin = tansu_bin();
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir for tansu");
        let log = File::create(dir.path().join("tansu.log")).expect("tansu log");
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let mut tansu = Self { child, port, dir };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        while TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = tansu.child.try_wait() {
                panic!("tansu exited with {status}:\n{}", tansu.log());
            }
            assert!(
                start.elapsed() < STARTUP_DEADLINE,
                "tansu did not listen on {addr} within {STARTUP_DEADLINE:?}:\n{}",
                tansu.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tansu
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// `127.0.0.1:PORT`, for `kafka.brokers`.
    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `tansu topic create` (topics are not created automatically).
    fn create_topic(&self, name: &str, partitions: u32) {
        let output = Command::new(tansu_bin())
            .args(["topic", "create", name])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .args(["--partitions", &partitions.to_string()])
            .output()
            .expect("run tansu topic create");
        assert!(
            output.status.success(),
            "tansu topic create {name}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn producer(&self) -> Producer {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("message.timeout.ms", "10000")
            .set("linger.ms", "0")
            .create()
            .expect("kafka producer");
        Producer(producer)
    }

    /// Every record of partition 0 of `topic` from the beginning, until `count` arrived.
    fn read(&self, topic: &str, count: usize) -> Vec<Record> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .create()
            .expect("kafka reader");
        let mut partitions = TopicPartitionList::new();
        partitions
            .add_partition_offset(topic, 0, Offset::Beginning)
            .expect("partition");
        consumer.assign(&partitions).expect("assign");
        let start = Instant::now();
        let mut records = Vec::new();
        while records.len() < count {
            assert!(
                start.elapsed() < KAFKA_DEADLINE,
                "only {} of {count} records in {topic} within {KAFKA_DEADLINE:?}: {records:?}",
                records.len()
            );
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => records.push(Record {
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers: message
                        .headers()
                        .map(|headers| {
                            headers
                                .iter()
                                .map(|h| {
                                    let value = h.value.unwrap_or_default();
                                    (
                                        h.key.to_owned(),
                                        String::from_utf8_lossy(value).into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                Some(Err(error)) => panic!("reading {topic}: {error}"),
                None => {}
            }
        }
        records
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- tansu log ---\n{}\n--- end of tansu log ---",
                self.log()
            );
        }
    }
}

/// A record read back from Kafka.
#[derive(Debug)]
struct Record {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: HashMap<String, String>,
}

struct Producer(FutureProducer);

impl Producer {
    /// Produces one record and waits for the broker's acknowledgement.
    async fn send(&self, topic: &str, key: &str, payload: &[u8]) {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        if let Err((error, _)) = self.0.send(record, Timeout::After(KAFKA_DEADLINE)).await {
            panic!("produce to {topic}: {error}");
        }
    }

    async fn send_json(&self, topic: &str, key: &str, event: &Value) {
        self.send(topic, key, event.to_string().as_bytes()).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Events and settings
// ---------------------------------------------------------------------------------------------

/// An EssaySlotAssigned envelope; `metadata` is added as given.
fn slot_assigned(event_id: &str, batch_id: &str, n: usize, metadata: Value) -> Value {
    json!({
        "event_id": event_id,
        "event_type": SLOT_TYPE,
        "event_timestamp": EVENT_TIME,
        "source_service": "essay_lifecycle_service",
        "correlation_id": format!("corr-{event_id}"),
        "data": {
            "batch_id": batch_id,
            "essay_id": format!("essay-{n}"),
            "file_upload_id": format!("upload-{n}"),
            "text_storage_id": format!("text-{n}"),
            "internal_note": "not forwarded"
        },
        "metadata": metadata
    })
}

/// The notification the contract promises for [`slot_assigned`], as the exact text.
fn slot_notification(event_id: &str, batch_id: &str, n: usize) -> String {
    format!(
        r#"{{"event":"{SLOT_EVENT}","event_id":"{event_id}","correlation_id":"corr-{event_id}","timestamp":"{NOTIFIED_TIME}","data":{{"batch_id":"{batch_id}","essay_id":"essay-{n}","file_upload_id":"upload-{n}","text_storage_id":"text-{n}"}}}}"#
    )
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A route of the slot-assigned event on `topic`; `owner` is one `"key": value` pair.
fn slot_route(topic: &str, owner: (&str, &str)) -> Value {
    let mut route = json!({
        "topic": topic,
        "event_type": SLOT_TYPE,
        "event": SLOT_EVENT,
        "fields": SLOT_FIELDS,
    });
    route[owner.0] = json!(owner.1);
    route
}

/// `settings` with the ingest on: `routes` (JSON array) and extra `[kafka]` keys.
fn with_kafka(
    settings: TestSettings,
    tansu: &Tansu,
    routes: &Value,
    extra: &[(&str, &str)],
) -> TestSettings {
    let mut settings = settings
        .env("WS__KAFKA__BROKERS", tansu.bootstrap())
        .env("WS__KAFKA__GROUP_ID", format!("ws-test-{}", new_id()))
        .env("WS__KAFKA__ROUTES", routes.to_string())
        .env("WS__KAFKA__BACKOFF_MAX_MS", "500")
        .env("WS__KAFKA__RESUME_DELAY_MS", "300")
        .env("RUST_LOG", "info");
    for (key, value) in extra {
        settings = settings.env(format!("WS__KAFKA__{}", key.to_uppercase()), *value);
    }
    settings
}

/// The same group for several servers: the settings with a fixed group id.
fn with_group(settings: TestSettings, group: &str) -> TestSettings {
    settings.env("WS__KAFKA__GROUP_ID", group)
}

/// Waits until a metric series reaches `at_least`.
async fn wait_metric(server: &Server, series: &str, at_least: f64) {
    let what = format!("{series} >= {at_least}");
    wait_until(KAFKA_DEADLINE, &what, || async {
        server.metric(series).await.unwrap_or(0.0) >= at_least
    })
    .await;
}

/// Reads `count` notifications (parsed) from `client`.
async fn recv_notifications(client: &mut WsClient, count: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let text = client.recv_text(KAFKA_DEADLINE).await;
        out.push(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Owner lookup service
// ---------------------------------------------------------------------------------------------

/// A tiny owner service: `GET /batches/{batch_id}/owner` answers `{"user_id": …}` for the
/// batches it knows and 404 for the others; it counts requests.
struct OwnerService {
    port: u16,
    requests: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

impl OwnerService {
    fn start(owners: &[(&str, &str)]) -> Self {
        Self::start_on(0, owners)
    }

    /// On `port` (0: any free port).
    fn start_on(port: u16, owners: &[(&str, &str)]) -> Self {
        let owners: Arc<HashMap<String, String>> = Arc::new(
            owners
                .iter()
                .map(|(b, u)| ((*b).to_owned(), (*u).to_owned()))
                .collect(),
        );
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind owner service");
        let port = listener.local_addr().expect("addr").port();
        let server = HttpServer::new(move || {
            let owners = owners.clone();
            let counter = counter.clone();
            App::new().route(
                "/batches/{batch_id}/owner",
                web::get().to(move |batch: web::Path<String>| {
                    let owners = owners.clone();
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        match owners.get(batch.as_str()) {
                            Some(user) => HttpResponse::Ok().json(json!({ "user_id": user })),
                            None => HttpResponse::NotFound().finish(),
                        }
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            port,
            requests,
            handle,
        }
    }

    fn url_template(&self) -> String {
        owner_url_template(self.port)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn owner_url_template(port: u16) -> String {
    format!("http://127.0.0.1:{port}/batches/{{batch_id}}/owner")
}

impl Drop for OwnerService {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_web::rt::spawn(async move { handle.stop(false).await });
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The owner found by a JSON pointer, by a Redis key and by an HTTP lookup (cached): each event
/// reaches its owner's socket as exactly the contract's notification; the same event produced
/// twice is delivered once; an event whose owner the lookup does not know is rejected without
/// holding up the next. History is off here (`history.size = 0`): the plain path, the event id
/// marked by `SET NX` and the notification PUBLISHed on the plain channel in one script.
#[actix_web::test]
async fn events_reach_their_owner_found_by_pointer_redis_key_or_http_lookup_once() {
    let redis = RedisServer::start().await;
    let tansu = Tansu::start().await;
    let (pointer_topic, http_topic) = ("platform.pointer.v1", "platform.http.v1");
    for topic in [SLOT_TOPIC, pointer_topic, http_topic] {
        tansu.create_topic(topic, 1);
    }
    let owners = OwnerService::start(&[("batch-h", "owner-http")]);
    let _: () = redis::cmd("SET")
        .arg("batch_owner:batch-r")
        .arg("owner-redis")
        .query_async(&mut redis.conn().await)
        .await
        .expect("SET owner key");
    let routes = json!([
        slot_route(SLOT_TOPIC, ("owner_redis_key", "batch_owner:{batch_id}")),
        slot_route(pointer_topic, ("user_pointer", "/metadata/user_id")),
        slot_route(http_topic, ("owner_http_url", &owners.url_template())),
    ]);
    let settings = with_kafka(
        TestSettings::with_redis(&redis).set("history.size", 0),
        &tansu,
        &routes,
        &[("required", "true")],
    );
    let server = Server::start_in_process(settings).await;
    server.wait_readyz(200, KAFKA_DEADLINE).await;
    let health = server.get("/healthz").await.json();
    assert_eq!(health["kafka"]["state"], "up", "{health}");

    let mut by_redis = server.connect(&token("owner-redis")).await;
    let mut by_pointer = server.connect(&token("owner-pointer")).await;
    let mut by_http = server.connect(&token("owner-http")).await;
    for user in ["owner-redis", "owner-pointer", "owner-http"] {
        redis.wait_subscribed(user, 1).await;
    }
    let producer = tansu.producer();

    // Owner from Redis: the EssaySlotAssigned route of the platform.
    let first = new_id();
    let event = slot_assigned(&first, "batch-r", 1, json!({}));
    producer.send_json(SLOT_TOPIC, "batch-r", &event).await;
    assert_eq!(
        by_redis.recv_text(KAFKA_DEADLINE).await,
        slot_notification(&first, "batch-r", 1)
    );

    // The same event again (a redelivery, or the producer retried), then a new one: only the
    // new one arrives.
    producer.send_json(SLOT_TOPIC, "batch-r", &event).await;
    let second = new_id();
    let next = slot_assigned(&second, "batch-r", 2, json!({}));
    producer.send_json(SLOT_TOPIC, "batch-r", &next).await;
    assert_eq!(
        by_redis.recv_text(KAFKA_DEADLINE).await,
        slot_notification(&second, "batch-r", 2),
        "the duplicate was delivered again"
    );

    // Owner from a JSON pointer into the envelope.
    let id = new_id();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let metadata = json!({"user_id": "owner-pointer", "traceparent": traceparent});
    let event = slot_assigned(&id, "batch-p", 3, metadata);
    producer.send_json(pointer_topic, "batch-p", &event).await;
    assert_eq!(
        by_pointer.recv_text(KAFKA_DEADLINE).await,
        slot_notification(&id, "batch-p", 3)
    );

    // Owner from the HTTP lookup: an unknown batch (404) is rejected, the next event still
    // arrives, and a second event of the same batch is served from the cache.
    let unknown = slot_assigned(&new_id(), "batch-unknown", 4, json!({}));
    producer
        .send_json(http_topic, "batch-unknown", &unknown)
        .await;
    let ids = [new_id(), new_id()];
    for (n, id) in ids.iter().enumerate() {
        let event = slot_assigned(id, "batch-h", 5 + n, json!({}));
        producer.send_json(http_topic, "batch-h", &event).await;
    }
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(
            by_http.recv_text(KAFKA_DEADLINE).await,
            slot_notification(id, "batch-h", 5 + n)
        );
    }
    assert_eq!(
        owners.requests(),
        2,
        "one lookup for the unknown batch, one for batch-h (then cached)"
    );

    for client in [&mut by_redis, &mut by_pointer, &mut by_http] {
        client.expect_silence(Duration::from_millis(300)).await;
    }
    let metric = |series: &str| {
        let series = series.to_owned();
        let server = &server;
        async move { server.metric(&series).await.unwrap_or(-1.0) }
    };
    assert_eq!(metric("ws_ingest_notifications_published_total").await, 5.0);
    assert_eq!(metric("ws_ingest_duplicates_suppressed_total").await, 1.0);
    assert_eq!(
        metric(r#"ws_ingest_dead_lettered_total{reason="owner_not_found"}"#).await,
        1.0
    );
    assert_eq!(
        metric(&format!(
            r#"ws_ingest_events_consumed_total{{topic="{SLOT_TOPIC}"}}"#
        ))
        .await,
        3.0
    );
    assert_eq!(
        metric("ws_ingest_event_to_publish_seconds_count").await,
        5.0
    );
    assert_eq!(metric("ws_ingest_paused").await, 0.0);
    let dedupe_key = format!("ws:ingest:seen:{first}");
    let mark: Option<String> = redis::cmd("GET")
        .arg(&dedupe_key)
        .query_async(&mut redis.conn().await)
        .await
        .expect("GET dedupe key");
    assert_eq!(
        mark.as_deref(),
        Some("d"),
        "{dedupe_key} marks the event published"
    );
}

/// A v2 socket of `user` (`?v=2`, resuming from `since` when given): answers it and the welcome
/// frame, which must come first.
async fn connect_v2(server: &Server, user: &str, since: Option<&str>) -> (WsClient, Value) {
    let mut url = format!("{}&v=2", server.ws_url(&token(user)));
    if let Some(since) = since {
        url = format!("{url}&since={since}");
    }
    let mut client = WsClient::connect(&url).await;
    let welcome = recv_notifications(&mut client, 1).await.remove(0);
    assert_eq!(welcome["type"], "welcome", "the first frame: {welcome}");
    (client, welcome)
}

/// The v2 frame of the durable message `notification` at `epoch:offset`.
fn durable_frame(epoch: &Value, offset: u64, notification: &str) -> Value {
    let data: Value = serde_json::from_str(notification).expect("a notification is JSON");
    json!({"type": "message", "epoch": epoch, "offset": offset, "data": data})
}

/// With history on (the default): an event reaches a v2 socket as a durable message with its
/// position; the same event again (a redelivery) is not delivered twice; a socket resuming from
/// before it gets it out of the history. Answers the epoch and the first event's id.
async fn events_are_durable(settings: TestSettings, tansu: &Tansu) -> (Value, String) {
    tansu.create_topic(SLOT_TOPIC, 1);
    let routes = json!([slot_route(
        SLOT_TOPIC,
        ("user_pointer", "/metadata/user_id")
    )]);
    let server = Server::start_in_process(with_kafka(settings, tansu, &routes, &[])).await;
    let (mut client, welcome) = connect_v2(&server, "owner-v", None).await;
    let epoch = welcome["epoch"].clone();
    assert_eq!(welcome["offset"], 0, "{welcome}");
    let producer = tansu.producer();
    let event = |id: &str, n| slot_assigned(id, "batch-v", n, json!({"user_id": "owner-v"}));
    let (first, second) = (new_id(), new_id());
    producer
        .send_json(SLOT_TOPIC, "batch-v", &event(&first, 1))
        .await;
    let frames = recv_notifications(&mut client, 1).await;
    let want = durable_frame(&epoch, 1, &slot_notification(&first, "batch-v", 1));
    assert_eq!(frames[0], want);

    producer
        .send_json(SLOT_TOPIC, "batch-v", &event(&first, 1))
        .await;
    producer
        .send_json(SLOT_TOPIC, "batch-v", &event(&second, 2))
        .await;
    let frames = recv_notifications(&mut client, 1).await;
    let want = durable_frame(&epoch, 2, &slot_notification(&second, "batch-v", 2));
    assert_eq!(frames[0], want, "the redelivered event was delivered again");
    client.expect_silence(Duration::from_millis(300)).await;
    let published = server.metric("ws_ingest_notifications_published_total");
    assert_eq!(published.await, Some(2.0));
    let duplicates = server.metric("ws_ingest_duplicates_suppressed_total");
    assert_eq!(duplicates.await, Some(1.0));

    let since = format!("{}:0", epoch.as_str().expect("an epoch"));
    let (mut resumed, welcome) = connect_v2(&server, "owner-v", Some(&since)).await;
    assert_eq!(
        (&welcome["offset"], &welcome["recovered"]),
        (&json!(2), &json!(true))
    );
    let replayed = recv_notifications(&mut resumed, 2).await;
    let offsets: Vec<&Value> = replayed.iter().map(|frame| &frame["offset"]).collect();
    assert_eq!(offsets, [1, 2], "both events are in the history, once each");
    (epoch, first)
}

/// The Redis broker: dedupe, append and publish are one `ws_publish_once` call, the event id's
/// record kept in the user's hash slot with the position it was published at.
#[actix_web::test]
async fn events_reach_v2_sockets_durably_once_with_redis() {
    let redis = RedisServer::start().await;
    let tansu = Tansu::start().await;
    let (epoch, first) = events_are_durable(TestSettings::with_redis(&redis), &tansu).await;
    let record = format!("{{ws:owner-v}}:d:{first}");
    let stored: Option<String> = redis::cmd("GET")
        .arg(&record)
        .query_async(&mut redis.conn().await)
        .await
        .expect("GET the dedupe record");
    let want = format!("{}:1", epoch.as_str().unwrap_or_default());
    assert_eq!(stored, Some(want), "{record} holds the event's position");
    let plain_mark: Option<String> = redis::cmd("GET")
        .arg(format!("ws:ingest:seen:{first}"))
        .query_async(&mut redis.conn().await)
        .await
        .expect("GET the plain dedupe key");
    assert_eq!(plain_mark, None, "the plain path was not taken");
}

/// The in-process broker: the in-process dedupe cache, then the in-process history.
#[actix_web::test]
async fn events_reach_v2_sockets_durably_once_in_process() {
    let tansu = Tansu::start().await;
    events_are_durable(TestSettings::new(), &tansu).await;
}

/// A record with no owner, a malformed envelope and an event type without a route each land in
/// the dead-letter topic, raw, with the reason; the next good event is still delivered (in-process
/// broker, so the in-process dedupe cache suppresses a duplicate too).
#[actix_web::test]
async fn rejected_records_are_dead_lettered_and_the_partition_moves_on() {
    let tansu = Tansu::start().await;
    let (topic, dead_letters) = ("platform.events.v1", "platform.websocket.dead-letters.v1");
    tansu.create_topic(topic, 1);
    tansu.create_topic(dead_letters, 1);
    let routes = json!([slot_route(topic, ("user_pointer", "/metadata/user_id"))]);
    let extra = [("dead_letter_topic", dead_letters)];
    let server = Server::start(with_kafka(TestSettings::new(), &tansu, &routes, &extra)).await;
    let mut client = server.connect(&token("owner-d")).await;
    publish_api_until_received(&server, "owner-d", &mut client).await;
    let producer = tansu.producer();

    let no_owner = slot_assigned(&new_id(), "batch-d", 1, json!({"note": "no user_id"}));
    let malformed = br#"{"event_id": "not-json"#.to_vec();
    let mut unknown = slot_assigned(&new_id(), "batch-d", 2, json!({"user_id": "owner-d"}));
    unknown["event_type"] = json!("huleedu.batch.something.else.v1");
    let rejected: [(&str, Vec<u8>, &str); 3] = [
        (
            "k-no-owner",
            no_owner.to_string().into_bytes(),
            "missing_user",
        ),
        ("k-malformed", malformed, "malformed"),
        (
            "k-unknown",
            unknown.to_string().into_bytes(),
            "unknown_event_type",
        ),
    ];
    for (key, payload, _) in &rejected {
        producer.send(topic, key, payload).await;
    }
    let good_id = new_id();
    let good = slot_assigned(&good_id, "batch-d", 3, json!({"user_id": "owner-d"}));
    producer.send_json(topic, "k-good", &good).await;
    assert_eq!(
        client.recv_text(KAFKA_DEADLINE).await,
        slot_notification(&good_id, "batch-d", 3)
    );

    let records = tansu.read(dead_letters, rejected.len());
    for (record, (key, payload, reason)) in records.iter().zip(&rejected) {
        assert_eq!(record.key.as_deref(), Some(key.as_bytes()));
        assert_eq!(&record.payload, payload, "the raw record, unchanged");
        assert_eq!(record.headers["dlq.reason"], *reason, "{record:?}");
        assert_eq!(record.headers["dlq.source.topic"], topic);
        assert_eq!(record.headers["dlq.source.partition"], "0");
        assert!(!record.headers["dlq.error"].is_empty());
    }
    let offsets: Vec<&str> = records
        .iter()
        .map(|r| r.headers["dlq.source.offset"].as_str())
        .collect();
    assert_eq!(offsets, ["0", "1", "2"]);

    // The good event again, then another: only the new one arrives.
    producer.send_json(topic, "k-good", &good).await;
    let last_id = new_id();
    let last = slot_assigned(&last_id, "batch-d", 4, json!({"user_id": "owner-d"}));
    producer.send_json(topic, "k-last", &last).await;
    assert_eq!(
        client.recv_text(KAFKA_DEADLINE).await,
        slot_notification(&last_id, "batch-d", 4)
    );
    client.expect_silence(Duration::from_millis(300)).await;
    for (_, _, reason) in &rejected {
        let series = format!(r#"ws_ingest_dead_lettered_total{{reason="{reason}"}}"#);
        assert_eq!(server.metric(&series).await, Some(1.0), "{series}");
    }
    assert_eq!(
        server.metric("ws_ingest_duplicates_suppressed_total").await,
        Some(1.0)
    );
    assert_eq!(
        server
            .metric("ws_ingest_notifications_published_total")
            .await,
        Some(2.0)
    );
    let consumed = format!(r#"ws_ingest_events_consumed_total{{topic="{topic}"}}"#);
    assert_eq!(server.metric(&consumed).await, Some(6.0));
    let log = server.log();
    let no_owner_cid = format!("corr-{}", no_owner["event_id"].as_str().unwrap());
    let rejection = log
        .lines()
        .find(|line| line.contains("kafka record rejected") && line.contains(&no_owner_cid));
    assert!(
        rejection.is_some_and(|line| line.contains("missing_user")),
        "the rejection is logged with its correlation id and reason:\n{log}"
    );
}

/// The consuming server crashes (SIGKILL) mid-stream and a new one takes over its partitions:
/// every event reaches the socket (held by another replica) exactly once. Offsets are committed
/// rarely here, so the replacement redelivers everything the crashed server had published, and
/// the Redis dedupe store must suppress all of it.
#[actix_web::test]
async fn a_crash_mid_stream_loses_nothing_and_doubles_nothing() {
    let redis = RedisServer::start().await;
    let tansu = Tansu::start().await;
    tansu.create_topic(SLOT_TOPIC, 2);
    let holder = Server::start(TestSettings::with_redis(&redis)).await;
    let mut client = holder.connect(&token("owner-c")).await;
    redis.wait_subscribed("owner-c", 1).await;

    let routes = json!([slot_route(
        SLOT_TOPIC,
        ("user_pointer", "/metadata/user_id")
    )]);
    let extra = [
        ("commit_interval_ms", "60000"),
        ("session_timeout_ms", "6000"),
    ];
    let group = format!("ws-test-{}", new_id());
    let settings = with_group(
        with_kafka(TestSettings::with_redis(&redis), &tansu, &routes, &extra),
        &group,
    );
    let mut first = Server::start(settings.clone()).await;
    let producer = tansu.producer();
    let total = 60;
    let ids: Vec<String> = (0..total).map(|_| new_id()).collect();
    let produce = |range: std::ops::Range<usize>| {
        let (producer, ids) = (&producer, &ids);
        async move {
            for n in range {
                let batch = format!("batch-{}", n % 7);
                let event = slot_assigned(&ids[n], &batch, n, json!({"user_id": "owner-c"}));
                producer.send_json(SLOT_TOPIC, &batch, &event).await;
            }
        }
    };
    produce(0..30).await;
    let mut seen: Vec<Value> = recv_notifications(&mut client, 10).await;
    first.signal("KILL");
    first.wait_exit(DEADLINE).await;
    produce(30..total).await;
    let second = Server::start(settings.clone()).await;
    seen.extend(recv_notifications(&mut client, total - seen.len()).await);
    client.expect_silence(Duration::from_millis(500)).await;

    let received: HashSet<&str> = seen
        .iter()
        .map(|n| n["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(received.len(), seen.len(), "a notification arrived twice");
    let expected: HashSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(received, expected, "a notification is missing");
    let suppressed = second
        .metric("ws_ingest_duplicates_suppressed_total")
        .await
        .unwrap_or(0.0);
    assert!(
        suppressed >= 10.0,
        "the replacement redelivered what the crashed server published ({suppressed} suppressed)"
    );

    // A graceful restart (SIGTERM, as a rolling deploy does) mid-stream: the stopping server
    // commits what it published and leaves the group, its successor takes over at once.
    let more: Vec<String> = (0..20).map(|_| new_id()).collect();
    let mut second = second;
    for (n, id) in more.iter().enumerate() {
        let event = slot_assigned(id, "batch-g", total + n, json!({"user_id": "owner-c"}));
        producer.send_json(SLOT_TOPIC, "batch-g", &event).await;
        if n == 10 {
            second.sigterm();
        }
    }
    assert!(second.wait_exit(DEADLINE * 2).await.success(), "clean exit");
    assert!(
        second.log().contains("kafka ingest stopped"),
        "{}",
        second.log()
    );
    let third = Server::start(settings).await;
    let rest = recv_notifications(&mut client, more.len()).await;
    client.expect_silence(Duration::from_millis(500)).await;
    let received: HashSet<&str> = rest
        .iter()
        .map(|n| n["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(received.len(), rest.len(), "a notification arrived twice");
    assert_eq!(
        received,
        more.iter().map(String::as_str).collect::<HashSet<_>>()
    );
    let redelivered = third
        .metric("ws_ingest_duplicates_suppressed_total")
        .await
        .unwrap_or(0.0);
    assert!(
        redelivered <= 1.0,
        "the stopping server committed its offsets: {redelivered} redelivered"
    );
}

/// Redis goes down: consumption pauses (nothing is dropped or published into the void), the
/// ingest reports itself paused; Redis comes back: the backlog is delivered, in order, once.
#[actix_web::test]
async fn a_redis_outage_pauses_consumption_and_the_backlog_follows() {
    let mut redis = RedisServer::start().await;
    let tansu = Tansu::start().await;
    tansu.create_topic(SLOT_TOPIC, 1);
    let routes = json!([slot_route(
        SLOT_TOPIC,
        ("user_pointer", "/metadata/user_id")
    )]);
    let settings = with_kafka(TestSettings::with_redis(&redis), &tansu, &routes, &[]);
    let server = Server::start_in_process(settings).await;
    let mut client = server.connect(&token("owner-o")).await;
    redis.wait_subscribed("owner-o", 1).await;
    let producer = tansu.producer();
    let event = |n: usize, id: &str| slot_assigned(id, "batch-o", n, json!({"user_id": "owner-o"}));

    let before = new_id();
    producer
        .send_json(SLOT_TOPIC, "batch-o", &event(0, &before))
        .await;
    assert_eq!(
        client.recv_text(KAFKA_DEADLINE).await,
        slot_notification(&before, "batch-o", 0)
    );

    redis.kill();
    let backlog: Vec<String> = (0..5).map(|_| new_id()).collect();
    for (n, id) in backlog.iter().enumerate() {
        producer
            .send_json(SLOT_TOPIC, "batch-o", &event(1 + n, id))
            .await;
    }
    wait_metric(&server, "ws_ingest_paused", 1.0).await;
    let health = server.get("/healthz").await.json();
    assert_eq!(health["kafka"]["state"], "down", "{health}");
    assert!(
        health["kafka"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("paused"),
        "{health}"
    );
    client.expect_silence(Duration::from_secs(1)).await;
    assert_eq!(
        server
            .metric("ws_ingest_notifications_published_total")
            .await,
        Some(1.0)
    );

    redis.restart().await;
    for (n, id) in backlog.iter().enumerate() {
        assert_eq!(
            client.recv_text(KAFKA_DEADLINE).await,
            slot_notification(id, "batch-o", 1 + n),
            "backlog in order"
        );
    }
    client.expect_silence(Duration::from_millis(500)).await;
    assert_eq!(server.metric("ws_ingest_paused").await, Some(0.0));
    assert_eq!(
        server
            .metric("ws_ingest_notifications_published_total")
            .await,
        Some(6.0)
    );
    let health = server.get("/healthz").await.json();
    assert_eq!(health["kafka"]["state"], "up", "{health}");
}

/// The owner lookup is down: consumption pauses (the event waits, it is not dead-lettered),
/// `/readyz` answers 503 since `kafka.required` is set; the lookup comes back: the event is
/// delivered and readiness returns.
#[actix_web::test]
async fn an_owner_lookup_outage_pauses_consumption_and_readiness() {
    let tansu = Tansu::start().await;
    tansu.create_topic(SLOT_TOPIC, 1);
    let port = free_port();
    let routes = json!([slot_route(
        SLOT_TOPIC,
        ("owner_http_url", &owner_url_template(port))
    )]);
    let extra = [("required", "true"), ("lookup_timeout_ms", "500")];
    let server =
        Server::start_in_process(with_kafka(TestSettings::new(), &tansu, &routes, &extra)).await;
    let mut client = server.connect(&token("owner-l")).await;
    publish_api_until_received(&server, "owner-l", &mut client).await;
    server.wait_readyz(200, KAFKA_DEADLINE).await;

    let id = new_id();
    let event = slot_assigned(&id, "batch-l", 1, json!({}));
    tansu
        .producer()
        .send_json(SLOT_TOPIC, "batch-l", &event)
        .await;
    wait_metric(&server, "ws_ingest_paused", 1.0).await;
    let reply = server.wait_readyz(503, DEADLINE).await;
    let error = reply.assert_error(503, "SERVICE_UNAVAILABLE");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("kafka ingest down"),
        "{error}"
    );
    assert!(
        server
            .metric(r#"ws_ingest_retries_total{dependency="owner lookup"}"#)
            .await
            .unwrap_or(0.0)
            >= 1.0
    );

    let _owners = OwnerService::start_on(port, &[("batch-l", "owner-l")]);
    assert_eq!(
        client.recv_text(KAFKA_DEADLINE).await,
        slot_notification(&id, "batch-l", 1)
    );
    server.wait_readyz(200, DEADLINE).await;
    assert_eq!(server.metric("ws_ingest_paused").await, Some(0.0));
    assert_eq!(
        server
            .metric(r#"ws_ingest_dead_lettered_total{reason="lookup_unavailable"}"#)
            .await,
        Some(0.0)
    );
}

/// With trace export on, each event is processed in a `kafka.ingest` span whose parent is the
/// envelope's `metadata.traceparent`, so a trace runs from the emitting service through Kafka to
/// the notification. (Also: SIGTERM stops the ingest cleanly.)
#[actix_web::test]
async fn the_ingest_span_continues_the_envelope_traceparent() {
    let receiver = OtlpReceiver::start();
    let tansu = Tansu::start().await;
    tansu.create_topic(SLOT_TOPIC, 1);
    let routes = json!([slot_route(
        SLOT_TOPIC,
        ("user_pointer", "/metadata/user_id")
    )]);
    let settings = with_kafka(TestSettings::new(), &tansu, &routes, &[])
        .env(
            "WS__TELEMETRY__OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", receiver.port),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let mut server = Server::start(settings).await;
    let mut client = server.connect(&token("owner-t")).await;
    publish_api_until_received(&server, "owner-t", &mut client).await;
    let (trace_id, parent_id) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let id = new_id();
    let metadata = json!({
        "user_id": "owner-t",
        "traceparent": format!("00-{trace_id}-{parent_id}-01")
    });
    let event = slot_assigned(&id, "batch-t", 1, metadata);
    tansu
        .producer()
        .send_json(SLOT_TOPIC, "batch-t", &event)
        .await;
    assert_eq!(
        client.recv_text(KAFKA_DEADLINE).await,
        slot_notification(&id, "batch-t", 1)
    );
    client.close().await;
    server.sigterm();
    assert!(server.wait_exit(DEADLINE * 2).await.success(), "clean exit");
    assert!(
        server.log().contains("kafka ingest stopped"),
        "{}",
        server.log()
    );

    let spans = receiver.spans();
    let span = spans
        .iter()
        .find(|s| s["name"] == "kafka.ingest" && s["traceId"] == trace_id)
        .unwrap_or_else(|| panic!("no kafka.ingest span in the envelope's trace: {spans:#?}"));
    assert_eq!(span["parentSpanId"], parent_id);
    let attribute = |key: &str| {
        span["attributes"]
            .as_array()
            .and_then(|a| a.iter().find(|kv| kv["key"] == key))
            .map(|kv| kv["value"].clone())
            .unwrap_or_else(|| panic!("no attribute {key} in {span:#}"))
    };
    assert_eq!(attribute("outcome")["stringValue"], "published");
    assert_eq!(
        attribute("messaging.destination.name")["stringValue"],
        SLOT_TOPIC
    );
    assert_eq!(
        attribute("correlation_id")["stringValue"],
        format!("corr-{id}")
    );
}

/// A tiny OTLP/HTTP receiver: records the JSON body of every POST and answers 200 `{}`.
struct OtlpReceiver {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl OtlpReceiver {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let port = listener.local_addr().expect("addr").port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&bodies);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let sink = Arc::clone(&sink);
                std::thread::spawn(move || otlp_serve(stream, &sink));
            }
        });
        Self { port, bodies }
    }

    fn spans(&self) -> Vec<Value> {
        let bodies = self.bodies.lock().expect("lock").clone();
        bodies
            .iter()
            .flat_map(|body| {
                body["resourceSpans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .flat_map(|rs| rs["scopeSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|ss| ss["spans"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

fn otlp_serve(stream: std::net::TcpStream, sink: &Mutex<Vec<Value>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(json) = serde_json::from_slice(&body) {
            sink.lock().expect("lock").push(json);
        }
        let reply =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Not a test: the event→socket latency and the ingest's throughput on this machine (Redis
/// broker, one partition). Run with
/// `cargo test --release --test kafka_ingest -- --ignored --nocapture bench`; extra librdkafka
/// properties for the server from `KAFKA_BENCH_PROPERTIES` (a JSON object). tansu holds a fetch
/// for `fetch.wait.max.ms` (default here 100) even when records arrive, which dominates the
/// latency measured against it; Kafka answers as soon as a record is there.
#[actix_web::test]
#[ignore = "benchmark: run explicitly"]
async fn bench_event_to_socket_latency_and_throughput() {
    let redis = RedisServer::start().await;
    let tansu = Tansu::start().await;
    tansu.create_topic(SLOT_TOPIC, 1);
    let routes = json!([slot_route(
        SLOT_TOPIC,
        ("user_pointer", "/metadata/user_id")
    )]);
    let mut settings = with_kafka(TestSettings::with_redis(&redis), &tansu, &routes, &[])
        .set("limits.send_queue_max", 100_000)
        .env("RUST_LOG", "warn");
    // e.g. KAFKA_BENCH_PROPERTIES='{"fetch.wait.max.ms":"10"}'
    if let Ok(properties) = std::env::var("KAFKA_BENCH_PROPERTIES") {
        settings = settings.env("WS__KAFKA__PROPERTIES", properties);
    }
    let server = Server::start(settings).await;
    let mut client = server.connect(&token("owner-b")).await;
    redis.wait_subscribed("owner-b", 1).await;
    let producer = tansu.producer();
    let event = |id: &str, n: usize| {
        let mut event = slot_assigned(id, "batch-b", n, json!({"user_id": "owner-b"}));
        event["event_timestamp"] =
            json!(humantime::format_rfc3339_micros(SystemTime::now()).to_string());
        event
    };
    // Warm-up: the group forms, connections open.
    let id = new_id();
    producer.send_json(SLOT_TOPIC, "b", &event(&id, 0)).await;
    client.recv_text(KAFKA_DEADLINE).await;

    // Latency: 1,000 events at about 200/s, each timed from produce to socket. A separate task
    // produces, so that the socket is read (and timed) the moment a frame arrives.
    let count = 1000;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let acks: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let producing = {
        let (sent, acks) = (sent.clone(), acks.clone());
        let producer = tansu.producer();
        let payloads: Vec<(String, Vec<u8>)> = (0..count)
            .map(|n| {
                let id = new_id();
                let payload = event(&id, n).to_string().into_bytes();
                (id, payload)
            })
            .collect();
        actix_web::rt::spawn(async move {
            let start = Instant::now();
            for (n, (id, payload)) in payloads.into_iter().enumerate() {
                let at = Instant::now();
                sent.lock().unwrap().insert(id, at);
                producer.send(SLOT_TOPIC, "b", &payload).await;
                acks.lock().unwrap().push(at.elapsed());
                let due = start + Duration::from_millis(5 * (n as u64 + 1));
                tokio::time::sleep_until(due.into()).await;
            }
        })
    };
    let mut latencies = Vec::with_capacity(count);
    while latencies.len() < count {
        let text = client.recv_text(KAFKA_DEADLINE).await;
        let now = Instant::now();
        let value: Value = serde_json::from_str(&text).unwrap();
        let sent_at = sent.lock().unwrap()[value["event_id"].as_str().unwrap()];
        latencies.push(now - sent_at);
    }
    producing.await.expect("producer task");
    let pct = |values: &mut Vec<Duration>, p: f64| {
        values.sort();
        values[((values.len() as f64 * p) as usize).min(values.len() - 1)]
    };
    println!(
        "event->socket over {count} events at ~200/s: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        pct(&mut latencies, 0.50),
        pct(&mut latencies, 0.90),
        pct(&mut latencies, 0.99),
        pct(&mut latencies, 1.0),
    );
    let mut acks = acks.lock().unwrap().clone();
    println!(
        "of which producing (until the broker's ack): p50 {:?}, p99 {:?}",
        pct(&mut acks, 0.50),
        pct(&mut acks, 0.99),
    );
    let sum = server
        .metric("ws_ingest_event_to_publish_seconds_sum")
        .await
        .unwrap_or(0.0);
    let n = server
        .metric("ws_ingest_event_to_publish_seconds_count")
        .await
        .unwrap_or(1.0);
    println!(
        "event timestamp -> hand-off to Redis, mean: {:.1} ms",
        1000.0 * sum / n
    );

    // Throughput: 5,000 events produced as fast as the producer goes, then drained.
    let burst = 5000;
    let payloads: Vec<Vec<u8>> = (0..burst)
        .map(|n| event(&new_id(), n).to_string().into_bytes())
        .collect();
    let start = Instant::now();
    let sends = payloads.iter().map(|p| {
        let record = FutureRecord::to(SLOT_TOPIC).key("b").payload(p);
        producer.0.send(record, Timeout::After(KAFKA_DEADLINE))
    });
    let results = futures_util::future::join_all(sends).await;
    assert!(results.iter().all(Result::is_ok), "produce failed");
    let produced = start.elapsed();
    for _ in 0..burst {
        client.recv_text(Duration::from_secs(60)).await;
    }
    let elapsed = start.elapsed();
    println!(
        "throughput: {burst} events produced in {produced:?}, all on the socket after {elapsed:?}: {:.0} events/s",
        burst as f64 / elapsed.as_secs_f64()
    );
}
