//! A writer task: gathers queued requests into a batch until it holds enough rows or bytes or
//! has lingered long enough, writes the batch in one transaction, and answers every request in
//! it. Writers share the queue; one gathers while the others write.

use std::{sync::Arc, time::Instant};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, Mutex};

use super::{WriteError, WriteRequest};
use crate::{config::PipelineConfig, encode::dims::KnownIds, store::writer};

pub(super) struct Batcher {
    id: usize,
    config: PipelineConfig,
    queue: Arc<Mutex<mpsc::Receiver<WriteRequest>>>,
    pool: Pool,
    known: Arc<KnownIds>,
}

impl Batcher {
    pub(super) fn new(
        id: usize,
        config: PipelineConfig,
        queue: Arc<Mutex<mpsc::Receiver<WriteRequest>>>,
        pool: Pool,
        known: Arc<KnownIds>,
    ) -> Self {
        Self {
            id,
            config,
            queue,
            pool,
            known,
        }
    }

    pub(super) async fn run(self) {
        while let Some(batch) = self.gather().await {
            self.flush(batch).await;
        }
        tracing::debug!(writer = self.id, "queue closed; writer done");
    }

    /// The next batch, or None once the queue is closed and empty.
    async fn gather(&self) -> Option<Vec<WriteRequest>> {
        let mut queue = self.queue.lock().await;
        let first = queue.recv().await?;
        let deadline = tokio::time::Instant::now() + self.config.linger();
        let (mut rows, mut bytes) = (first.payload.rows(), first.payload.bytes());
        let mut batch = vec![first];
        while rows < self.config.batch_max_rows && bytes < self.config.batch_max_bytes {
            tokio::select! {
                biased;
                next = queue.recv() => match next {
                    Some(request) => {
                        rows += request.payload.rows();
                        bytes += request.payload.bytes();
                        batch.push(request);
                    }
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        Some(batch)
    }

    async fn flush(&self, batch: Vec<WriteRequest>) {
        let started = Instant::now();
        let payloads: Vec<_> = batch.iter().map(|r| &r.payload).collect();
        let result = writer::write_batch(&self.pool, &payloads).await;
        let rows: usize = payloads.iter().map(|p| p.rows()).sum();
        match result {
            Ok(()) => {
                for payload in &payloads {
                    self.known.insert_all(&payload.new_dimension_ids);
                }
                tracing::debug!(writer = self.id, requests = batch.len(), rows, elapsed = ?started.elapsed(), "batch committed");
                for request in batch {
                    let _ = request.ack.send(Ok(()));
                }
            }
            Err(err) => {
                tracing::warn!(writer = self.id, requests = batch.len(), rows, %err, "batch failed");
                let err = WriteError::Database(err.to_string());
                for request in batch {
                    let _ = request.ack.send(Err(err.clone()));
                }
            }
        }
    }
}
