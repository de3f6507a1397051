//! The path from request handlers to the writers: a queue bounded both in requests and in
//! encoded bytes, and the acknowledgement each request waits for. A handler gets its answer only
//! after the transaction holding its rows has committed (or failed).

mod batcher;
pub mod intake;

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::{
    sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
};

use self::intake::{Intake, Room};
use crate::{
    config::PipelineConfig,
    encode::{
        dims::KnownIds,
        rollups::{LogTallies, SpanTallies},
        Encoded,
    },
    store::writer::Tuples,
    telemetry::Telemetry,
};

/// Requests that may wait in the queue at once; the byte budget usually binds first.
pub const QUEUE_REQUESTS: usize = 4096;

/// One request's encoded rows, frozen for streaming: per table (indexed like
/// [`crate::encode::TABLES`]) the tuples and their count; and its records' tallies, whose rollup
/// rows the writer writes merged with those of the requests it writes them with.
pub struct Payload {
    pub tables: Tuples,
    pub new_dimension_ids: Vec<i64>,
    pub spans: SpanTallies,
    pub logs: LogTallies,
}

impl Payload {
    pub fn new(encoded: Encoded) -> Self {
        let mut rows = encoded.rows.into_iter();
        Self {
            tables: std::array::from_fn(|_| {
                let r = rows.next().unwrap_or_default();
                (r.buf.freeze(), r.count)
            }),
            new_dimension_ids: encoded.new_dimension_ids,
            spans: encoded.spans,
            logs: encoded.logs,
        }
    }

    /// The rollup rows of the requests of one transaction, their tallies merged (a key that
    /// several requests tallied is one row): tuples for `span_rollup` and `log_rollup` only.
    pub fn rollup_tuples(payloads: &[&Payload]) -> Tuples {
        let (mut spans, mut logs) = (SpanTallies::default(), LogTallies::default());
        for payload in payloads {
            spans.merge(&payload.spans);
            logs.merge(&payload.logs);
        }
        let mut encoded = Encoded { spans, logs, ..Encoded::default() };
        encoded.write_tallies();
        Self::new(encoded).tables
    }

    pub fn rows(&self) -> usize {
        self.tables.iter().map(|(_, n)| n).sum()
    }

    pub fn bytes(&self) -> usize {
        self.tables.iter().map(|(b, _)| b.len()).sum()
    }
}

/// Why a request's rows were not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The database write failed; sending again may succeed.
    #[error("storing the batch failed: {0}")]
    Database(String),
    /// The pipeline is closed: the server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The database refused this request's rows; sending them again cannot succeed.
    #[error("the database refused the request's data: {0}")]
    Refused(String),
    /// No room came free in the intake budget or the queue for the whole wait: more is offered
    /// than the database takes.
    #[error("otelephant is overloaded: no room for the request came free within {0:?}")]
    Overloaded(std::time::Duration),
    /// The request would take more memory on its way in (its body, what it inflates and decodes
    /// to, its rows) than one request may; sending it again cannot succeed.
    #[error(
        "the request would take more than {0} bytes of memory on its way in (pipeline.max_request_memory); send smaller requests"
    )]
    TooLarge(usize),
}

/// A request in the queue: its rows, the room it holds in the queue, and where its answer goes.
pub struct WriteRequest {
    pub payload: Payload,
    pub ack: oneshot::Sender<Result<(), WriteError>>,
    /// When the request is answered UNAVAILABLE if its rows could not be written by then.
    pub deadline: tokio::time::Instant,
    _room: OwnedSemaphorePermit,
}

/// The handlers' side of the pipeline.
#[derive(Clone)]
pub struct Pipeline {
    tx: mpsc::Sender<WriteRequest>,
    room: Arc<Semaphore>,
    capacity_bytes: u32,
    queue_wait: std::time::Duration,
    retry_deadline: std::time::Duration,
    pub known: Arc<KnownIds>,
    /// Room for the bytes of requests on their way in, taken by the receivers.
    pub intake: Intake,
    /// The queue's budget, for what requests build from their bytes before they are queued
    /// (inflated bodies, decoded structs, rows), taken as it is built; waits up to
    /// `pipeline.queue_wait_ms`.
    pub build: Intake,
    pub telemetry: Telemetry,
}

/// How full the queue is, readable without keeping the pipeline open.
#[derive(Clone)]
pub struct QueueDepth {
    room: Arc<Semaphore>,
    capacity_bytes: u32,
}

impl QueueDepth {
    /// Bytes held by queued requests and unfinished batches.
    pub fn used(&self) -> usize {
        (self.capacity_bytes as usize).saturating_sub(self.room.available_permits())
    }

    pub fn capacity(&self) -> usize {
        self.capacity_bytes as usize
    }
}

impl Pipeline {
    /// Starts `config.writers` writer tasks on `pool`. The writers stop once every clone of the
    /// returned `Pipeline` is dropped and the queue has drained.
    pub fn start(config: &PipelineConfig, pool: Pool, telemetry: Telemetry) -> (Self, Vec<JoinHandle<()>>) {
        let (tx, rx) = mpsc::channel(QUEUE_REQUESTS);
        let rx = Arc::new(batcher::Queue::new(rx));
        let capacity_bytes = config.queue_bytes.min(u32::MAX as usize) as u32;
        let known = Arc::new(KnownIds::default());
        let writers = (0..config.writers)
            .map(|id| {
                let batcher = batcher::Batcher::new(
                    id,
                    config.clone(),
                    rx.clone(),
                    pool.clone(),
                    known.clone(),
                    telemetry.clone(),
                );
                tokio::spawn(batcher.run())
            })
            .collect();
        let room = Arc::new(Semaphore::new(capacity_bytes as usize));
        let retry_deadline = config.retry_deadline();
        let queue_wait = config.queue_wait();
        let intake = Intake::new(config.intake_bytes, config.intake_wait(), config.max_request_memory);
        let build =
            Intake::sharing(room.clone(), capacity_bytes as usize, queue_wait, config.max_request_memory);
        (
            Self { tx, room, capacity_bytes, queue_wait, retry_deadline, known, intake, build, telemetry },
            writers,
        )
    }

    pub fn depth(&self) -> QueueDepth {
        QueueDepth { room: self.room.clone(), capacity_bytes: self.capacity_bytes }
    }

    /// Queues a request's rows and waits until they are committed. The queue room the request
    /// took while it was built (`built`) is kept for its rows, what they do not need is given
    /// back, and what they need more is waited for, at most `pipeline.queue_wait_ms`; then the
    /// request's intake room is given back.
    ///
    /// # Errors
    /// [`WriteError`] when the rows were not stored.
    pub async fn submit(
        &self,
        encoded: Encoded,
        intake: Option<Room>,
        built: Room,
    ) -> Result<(), WriteError> {
        if encoded.total_rows() == 0 {
            return Ok(());
        }
        // A request larger than the whole queue still goes through, alone.
        let need = (encoded.held_bytes().max(1) as u64).min(u64::from(self.capacity_bytes)) as u32;
        let held = u32::try_from(built.bytes()).unwrap_or(u32::MAX);
        let room = match built.into_permit() {
            Some(mut room) if held >= need => {
                drop(room.split((held - need) as usize));
                room
            }
            held_room => {
                let more = need - held;
                let mut more =
                    tokio::time::timeout(self.queue_wait, self.room.clone().acquire_many_owned(more))
                        .await
                        .map_err(|_| WriteError::Overloaded(self.queue_wait))?
                        .map_err(|_| WriteError::ShuttingDown)?;
                if let Some(held_room) = held_room {
                    more.merge(held_room);
                }
                more
            }
        };
        drop(intake);
        let payload = Payload::new(encoded);
        let (ack, answer) = oneshot::channel();
        self.tx
            .send(WriteRequest {
                payload,
                ack,
                deadline: tokio::time::Instant::now() + self.retry_deadline,
                _room: room,
            })
            .await
            .map_err(|_| WriteError::ShuttingDown)?;
        answer.await.unwrap_or(Err(WriteError::ShuttingDown))
    }
}
