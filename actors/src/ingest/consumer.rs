//! The ingest actor: one Kafka consumer (a consumer-group member) on its own arbiter, feeding
//! one record at a time to the [`Pipeline`], and the handle the server keeps to stop it. The
//! Kafka clients and callbacks are in `kafka.rs`; the decisions in `pipeline.rs`.

use std::time::Duration;

use actix::prelude::*;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::sync::{oneshot, watch};

use super::dedupe::Dedupe;
use super::kafka::{
    consumer_config, record_of, DeadLetters, IngestConsumer, IngestContext, KafkaIo,
};
use super::lookup::OwnerLookup;
use super::pipeline::Pipeline;
use super::route::Routes;
use super::status::Status;
use super::{IngestConfig, IngestError, IngestMetrics, TraceHook};
use crate::broker::{Broker, BrokerHealth};
use crate::history::HistoryStore;

/// How long a graceful stop may take (final commit, leaving the group).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait after a consume error before polling again.
const CONSUME_ERROR_DELAY: Duration = Duration::from_millis(100);

/// The running ingest: its health (for `/readyz`) and a way to stop it.
pub struct Ingest {
    health: watch::Receiver<BrokerHealth>,
    addr: Addr<IngestActor>,
    arbiter: Arbiter,
}

impl Ingest {
    /// Creates the consumer (joining group `config.group_id`, subscribed to every routed topic),
    /// the dead-letter producer, the lookups and the dedupe store, and starts consuming on a new
    /// arbiter. With `history` (the server's store, when `history.size > 0`) notifications are
    /// published durably into it. Kafka, Redis and the lookup service may be down now: the
    /// ingest waits for them. Must be called inside an actix system.
    pub fn start(
        config: IngestConfig,
        broker: Broker,
        history: Option<HistoryStore>,
        metrics: IngestMetrics,
        trace: TraceHook,
    ) -> Result<Ingest, IngestError> {
        let routes = Routes::new(&config.routes)?;
        let topics = routes.topics();
        for topic in &topics {
            metrics.events_consumed.with_label_values(&[topic]);
            metrics.consumer_lag.with_label_values(&[topic]).set(0);
        }
        let (status, health) = Status::new(metrics.clone());
        let context = IngestContext {
            status: status.clone(),
            topics: topics.clone(),
        };
        let consumer: IngestConsumer = consumer_config(&config)
            .create_with_context(context)
            .map_err(IngestError::Kafka)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|source| IngestError::Subscribe {
                topics: topics.clone(),
                source,
            })?;
        let dead_letters = match &config.dead_letter_topic {
            Some(topic) => Some(DeadLetters::new(&config, topic)?),
            None => None,
        };
        let io = KafkaIo {
            lookup: OwnerLookup::new(&config.lookup)?,
            dedupe: Dedupe::new(&config.dedupe, history)?,
            consumer,
            dead_letters,
            broker,
        };
        tracing::info!(
            brokers = %config.brokers.join(","),
            group_id = %config.group_id,
            topics = ?topics,
            dedupe = io.dedupe.kind(),
            durable = io.dedupe.durable(),
            dead_letter_topic = config.dead_letter_topic.as_deref().unwrap_or(""),
            "kafka ingest starting"
        );
        let pipeline = Pipeline::new(io, routes, &config, metrics, status, trace);
        let (addr, arbiter) = IngestActor::start_on_arbiter(pipeline);
        Ok(Ingest {
            health,
            addr,
            arbiter,
        })
    }

    /// A receiver of health changes.
    pub fn health_receiver(&self) -> watch::Receiver<BrokerHealth> {
        self.health.clone()
    }

    /// Stops consuming, commits the offsets of what was published and leaves the group (so a
    /// replacement gets the partitions at once). Bounded by a timeout.
    pub async fn stop(self) {
        let stopped = tokio::time::timeout(STOP_TIMEOUT, self.addr.send(Stop)).await;
        if stopped.is_err() {
            tracing::warn!("kafka ingest did not stop within {STOP_TIMEOUT:?}");
        }
        self.arbiter.stop();
    }
}

/// The actor hosting the consumer loop on its arbiter.
struct IngestActor {
    run: Option<(
        Pipeline<KafkaIo>,
        watch::Receiver<bool>,
        oneshot::Sender<()>,
    )>,
    stop: watch::Sender<bool>,
    done: Option<oneshot::Receiver<()>>,
}

impl IngestActor {
    /// Starts the actor consuming with `pipeline` on a new arbiter.
    fn start_on_arbiter(pipeline: Pipeline<KafkaIo>) -> (Addr<IngestActor>, Arbiter) {
        let arbiter = Arbiter::new();
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done) = oneshot::channel();
        let addr = IngestActor::start_in_arbiter(&arbiter.handle(), move |_| IngestActor {
            run: Some((pipeline, stop_rx, done_tx)),
            stop,
            done: Some(done),
        });
        (addr, arbiter)
    }
}

impl Actor for IngestActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some((pipeline, stop, done)) = self.run.take() else {
            return;
        };
        let run = async move {
            consume(pipeline, stop).await;
            let _ = done.send(());
        };
        ctx.spawn(run.into_actor(self).map(|(), _, ctx| ctx.stop()));
    }
}

/// Stop consuming; answered once the consumer has committed and closed.
#[derive(Message)]
#[rtype(result = "()")]
struct Stop;

impl Handler<Stop> for IngestActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Stop, _: &mut Context<Self>) -> Self::Result {
        let _ = self.stop.send(true);
        let done = self.done.take();
        Box::pin(async move {
            if let Some(done) = done {
                let _ = done.await;
            }
        })
    }
}

/// Consumes until `stop` turns true, then commits and closes the consumer.
async fn consume(pipeline: Pipeline<KafkaIo>, mut stop: watch::Receiver<bool>) {
    let consumer = &pipeline.io().consumer;
    loop {
        let received = tokio::select! {
            biased;
            _ = stop.changed() => break,
            received = consumer.recv() => received,
        };
        let message = match received {
            Ok(message) => message,
            Err(error) => {
                log_consume_error(&error);
                tokio::select! {
                    _ = stop.changed() => break,
                    () = tokio::time::sleep(CONSUME_ERROR_DELAY) => continue,
                }
            }
        };
        let record = record_of(&message);
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            () = pipeline.process(&record) => {}
        }
    }
    tracing::info!("kafka ingest stopping: committing offsets and leaving the group");
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => tracing::warn!(%error, "final kafka offset commit failed"),
    }
    drop(pipeline);
    tracing::info!("kafka ingest stopped");
}

/// Logs a failed poll; connectivity errors were already reported by the error callback.
fn log_consume_error(error: &KafkaError) {
    let connectivity = matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
    );
    if connectivity {
        tracing::debug!(%error, "kafka consume error");
    } else {
        tracing::warn!(%error, "kafka consume error");
    }
}
