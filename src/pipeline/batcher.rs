//! A writer task: gathers queued requests into a batch until it holds enough rows or bytes or
//! has lingered long enough, writes the batch in one transaction, and answers every request in
//! it. Writers share the queue; one gathers while the others write.
//!
//! Lingering trades latency for larger transactions, and pays only while every other writer is
//! busy: a batch stops gathering as soon as another writer is free to take the next request.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Instant,
};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, Mutex, Notify};

use super::{Payload, WriteError, WriteRequest};
use crate::{
    config::PipelineConfig,
    encode::dims::KnownIds,
    store::writer,
    telemetry::{self, Telemetry},
};

/// The first and the longest wait between attempts to write a batch the database did not take.
const RETRY_BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(100);
const RETRY_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// The queue the writers share, and how many of them are free: waiting for their turn to gather.
pub(super) struct Queue {
    requests: Mutex<mpsc::Receiver<WriteRequest>>,
    free: AtomicUsize,
    freed: Notify,
}

impl Queue {
    pub(super) fn new(requests: mpsc::Receiver<WriteRequest>) -> Self {
        Self { requests: Mutex::new(requests), free: AtomicUsize::new(0), freed: Notify::new() }
    }
}

pub(super) struct Batcher {
    id: usize,
    config: PipelineConfig,
    queue: Arc<Queue>,
    pool: Pool,
    known: Arc<KnownIds>,
    telemetry: Telemetry,
}

impl Batcher {
    pub(super) fn new(
        id: usize,
        config: PipelineConfig,
        queue: Arc<Queue>,
        pool: Pool,
        known: Arc<KnownIds>,
        telemetry: Telemetry,
    ) -> Self {
        Self { id, config, queue, pool, known, telemetry }
    }

    pub(super) async fn run(self) {
        while let Some(batch) = self.gather().await {
            self.flush(batch).await;
        }
        tracing::debug!(writer = self.id, "queue closed; writer done");
    }

    /// The next batch, or None once the queue is closed and empty.
    async fn gather(&self) -> Option<Vec<WriteRequest>> {
        self.queue.free.fetch_add(1, Ordering::SeqCst);
        self.queue.freed.notify_waiters();
        let mut queue = self.queue.requests.lock().await;
        self.queue.free.fetch_sub(1, Ordering::SeqCst);
        let first = queue.recv().await?;
        let deadline = tokio::time::Instant::now() + self.config.linger();
        let (mut rows, mut bytes) = (first.payload.rows(), first.payload.bytes());
        let mut batch = vec![first];
        while rows < self.config.batch_max_rows && bytes < self.config.batch_max_bytes {
            let freed = self.queue.freed.notified();
            let next = match queue.try_recv() {
                Ok(request) => Some(request),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                // Nothing is waiting: linger for more, unless another writer is free to write
                // whatever comes next at once.
                Err(mpsc::error::TryRecvError::Empty) if self.queue.free.load(Ordering::SeqCst) > 0 => None,
                Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                    biased;
                    next = queue.recv() => next,
                    () = freed => None,
                    () = tokio::time::sleep_until(deadline) => None,
                },
            };
            let Some(request) = next else { break };
            rows += request.payload.rows();
            bytes += request.payload.bytes();
            batch.push(request);
        }
        Some(batch)
    }

    /// Writes a batch and answers its requests. While the database cannot be reached, the batch
    /// is retried with backoff; requests whose deadline passes meanwhile are answered
    /// UNAVAILABLE and leave it.
    async fn flush(&self, mut batch: Vec<WriteRequest>) {
        let mut backoff = RETRY_BACKOFF_MIN;
        loop {
            let started = Instant::now();
            let payloads: Vec<_> = batch.iter().map(|r| &r.payload).collect();
            let rollups = Payload::rollup_tuples(&payloads);
            let mut tuples: Vec<_> = payloads.iter().map(|p| &p.tables).collect();
            tuples.push(&rollups);
            let result = writer::write_batch(&self.pool, &tuples).await;
            let rows: usize = payloads.iter().map(|p| p.rows()).sum();
            let err = match result {
                Ok(timings) => {
                    tracing::debug!(writer = self.id, requests = batch.len(), rows, elapsed = ?started.elapsed(), "batch committed");
                    let t = &self.telemetry;
                    t.histogram(telemetry::BATCH_ROWS, &[]).record(rows as f64);
                    t.histogram(telemetry::BATCH_REQUESTS, &[]).record(batch.len() as f64);
                    t.histogram(telemetry::COPY_SECONDS, &[]).record(timings.copy.as_secs_f64());
                    t.histogram(telemetry::COMMIT_SECONDS, &[]).record(timings.commit.as_secs_f64());
                    for request in batch {
                        self.committed(request);
                    }
                    return;
                }
                Err(err) if err.is_data_error() && batch.len() > 1 => {
                    self.telemetry
                        .counter(telemetry::DATABASE_ERRORS, &[("kind", err.failure().label())])
                        .increment(1);
                    tracing::warn!(writer = self.id, requests = batch.len(), %err, "batch refused by the database; writing its requests one by one");
                    return self.isolate(batch).await;
                }
                Err(err) if err.is_data_error() => {
                    self.telemetry
                        .counter(telemetry::DATABASE_ERRORS, &[("kind", err.failure().label())])
                        .increment(1);
                    tracing::warn!(writer = self.id, %err, "request refused by the database");
                    for request in batch {
                        let _ = request.ack.send(Err(WriteError::Refused(err.to_string())));
                    }
                    return;
                }
                Err(err) => {
                    let kind = err.failure().label();
                    self.telemetry.counter(telemetry::DATABASE_ERRORS, &[("kind", kind)]).increment(1);
                    err
                }
            };
            let now = tokio::time::Instant::now();
            let (expired, waiting): (Vec<_>, Vec<_>) =
                batch.into_iter().partition(|r| r.deadline <= now + backoff);
            tracing::warn!(writer = self.id, requests = waiting.len(), given_up = expired.len(), rows, %err, ?backoff, "batch failed; retrying");
            let failure = WriteError::Database(err.to_string());
            for request in expired {
                let _ = request.ack.send(Err(failure.clone()));
            }
            if waiting.is_empty() {
                return;
            }
            batch = waiting;
            self.telemetry.counter(telemetry::BATCH_RETRIES, &[]).increment(1);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
    }

    /// Writes each request of a refused batch in a transaction of its own, so that only the
    /// requests whose own data the database refuses fail, and everyone else's rows commit.
    async fn isolate(&self, batch: Vec<WriteRequest>) {
        for request in batch {
            let rollups = Payload::rollup_tuples(&[&request.payload]);
            match writer::write_batch(&self.pool, &[&request.payload.tables, &rollups]).await {
                Ok(_) => self.committed(request),
                Err(err) => {
                    let err = if err.is_data_error() {
                        tracing::warn!(writer = self.id, %err, "request refused by the database");
                        WriteError::Refused(err.to_string())
                    } else {
                        WriteError::Database(err.to_string())
                    };
                    let _ = request.ack.send(Err(err));
                }
            }
        }
    }

    /// Answers a request whose rows committed.
    fn committed(&self, request: WriteRequest) {
        let today = crate::time::epoch_day(std::time::SystemTime::now());
        self.known.insert_all(&request.payload.new_dimension_ids, today);
        let _ = request.ack.send(Ok(()));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use deadpool_postgres::{Manager, ManagerConfig};
    use tokio::sync::{oneshot, Semaphore};

    use super::*;
    use crate::{
        encode::{copy::Table, Encoded, TableId},
        pipeline::Payload,
    };

    const ONE: Table = Table { name: "t", columns: &["c"], kind: crate::encode::copy::TableKind::Dimension };

    /// A request of `rows` one-column rows. The pool is never used: gathering does not touch it.
    fn request(rows: usize) -> WriteRequest {
        let mut encoded = Encoded::default();
        for _ in 0..rows {
            encoded.rows_mut(TableId::Spans).row(&ONE).int4(1);
        }
        let room = Arc::new(Semaphore::new(1)).try_acquire_owned().expect("permit");
        WriteRequest {
            payload: Payload::new(encoded),
            ack: oneshot::channel().0,
            deadline: tokio::time::Instant::now(),
            _room: room,
        }
    }

    fn batcher(config: PipelineConfig) -> (Batcher, mpsc::Sender<WriteRequest>) {
        let (tx, rx) = mpsc::channel(16);
        let manager = Manager::from_config(
            "postgres://nobody@127.0.0.1:1/none".parse().expect("url"),
            tokio_postgres::NoTls,
            ManagerConfig::default(),
        );
        let pool = Pool::builder(manager).build().expect("pool");
        let batcher =
            Batcher::new(0, config, Arc::new(Queue::new(rx)), pool, Arc::default(), Telemetry::new());
        (batcher, tx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_lingers_to_gather_requests_then_flushes() {
        let (b, tx) = batcher(PipelineConfig { linger_ms: 20, ..Default::default() });
        tx.send(request(1)).await.expect("send");
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            late.send(request(2)).await.expect("send");
            tokio::time::sleep(Duration::from_millis(30)).await;
            late.send(request(4)).await.expect("send");
        });
        let started = tokio::time::Instant::now();
        let batch = b.gather().await.expect("a batch");
        assert_eq!(batch.iter().map(|r| r.payload.rows()).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(started.elapsed(), Duration::from_millis(20), "flushed when the linger ran out");
        let batch = b.gather().await.expect("the next batch");
        assert_eq!(batch.iter().map(|r| r.payload.rows()).collect::<Vec<_>>(), [4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_flushes_without_waiting() {
        let (b, tx) = batcher(PipelineConfig { linger_ms: 1_000, batch_max_rows: 3, ..Default::default() });
        for rows in [2, 2, 1] {
            tx.send(request(rows)).await.expect("send");
        }
        let started = tokio::time::Instant::now();
        let batch = b.gather().await.expect("a batch");
        assert_eq!(batch.len(), 2, "stops once the row limit is reached");
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_queue_flushes_what_it_has_then_ends() {
        let (b, tx) = batcher(PipelineConfig { linger_ms: 1_000, ..Default::default() });
        tx.send(request(1)).await.expect("send");
        drop(tx);
        let started = tokio::time::Instant::now();
        assert_eq!(b.gather().await.expect("the partial batch").len(), 1);
        assert_eq!(started.elapsed(), Duration::ZERO, "no lingering on a closed queue");
        assert!(b.gather().await.is_none());
    }
}
