//! The read side's memory, bounded by bytes as the write side's intake is: every answer has a
//! budget (`query.answer_bytes`), charged row by row as the rows arrive from PostgreSQL, and
//! every read in flight takes its charge from one shared pool (`query.memory_bytes`).
//!
//! An answer that reaches its budget stops there: a page ends early with its token to go on,
//! and an answer that cannot be cut (one trace) is refused RESOURCE_EXHAUSTED naming the
//! setting. A read that finds the shared pool taken waits for room up to
//! `query.memory_wait_ms`, then is refused RESOURCE_EXHAUSTED (HTTP 429): reads queue or fail,
//! memory never grows past the pool.

use std::{sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{
    types::{FromSql, Type},
    Row,
};
use tonic::Status;

use crate::config::QueryConfig;

/// The pool's unit: permits count KiB, so that one charge never needs more than `u32` of them.
const UNIT: usize = 1024;

/// The memory every read in flight shares. Cheap to clone.
#[derive(Clone)]
pub struct ReadMemory {
    pool: Arc<Semaphore>,
    answer_bytes: usize,
    wait: Duration,
}

impl ReadMemory {
    pub fn new(config: &QueryConfig) -> Self {
        let units = config.memory_bytes.div_ceil(UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            pool: Arc::new(Semaphore::new(units)),
            answer_bytes: config.answer_bytes,
            wait: Duration::from_millis(config.memory_wait_ms),
        }
    }

    /// A new answer's budget; it takes nothing from the pool until it is charged.
    pub fn budget(&self) -> Budget {
        Budget { memory: self.clone(), held: None, used: 0 }
    }

    /// Bytes of the pool not held by any read now.
    pub fn available_bytes(&self) -> usize {
        self.pool.available_permits() * UNIT
    }
}

/// One answer's share of the read memory: what it has charged, held until it is dropped.
pub struct Budget {
    memory: ReadMemory,
    held: Option<OwnedSemaphorePermit>,
    used: usize,
}

/// Whether a charge fitted.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Fit {
    /// Charged: the row belongs in the answer.
    Fits,
    /// The answer is full (its own budget, or the room the other reads leave): it ends before
    /// this row.
    Full,
}

impl Budget {
    /// Charges `bytes` more to this answer.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED when the answer holds nothing yet and cannot take even this: the
    /// single item is larger than `query.answer_bytes`, or the shared pool stayed taken for
    /// `query.memory_wait_ms`.
    pub async fn charge(&mut self, bytes: usize) -> Result<Fit, Status> {
        let first = self.used == 0;
        if self.used.saturating_add(bytes) > self.memory.answer_bytes {
            if first {
                return Err(Status::resource_exhausted(format!(
                    "one item of this answer takes {bytes} bytes, more than query.answer_bytes ({}); \
                     read it with SQL or raise the setting",
                    self.memory.answer_bytes
                )));
            }
            return Ok(Fit::Full);
        }
        let have = self.held.as_ref().map_or(0, |p| p.num_permits());
        let need = (self.used + bytes).div_ceil(UNIT).saturating_sub(have);
        if need > 0 {
            let Ok(need) = u32::try_from(need) else { return Ok(Fit::Full) };
            let permit = match Arc::clone(&self.memory.pool).try_acquire_many_owned(need) {
                Ok(permit) => permit,
                // Other reads hold the pool: a started answer ends here, a new one waits its turn.
                Err(_) if !first => return Ok(Fit::Full),
                Err(_) => {
                    let acquire = Arc::clone(&self.memory.pool).acquire_many_owned(need);
                    match tokio::time::timeout(self.memory.wait, acquire).await {
                        Ok(Ok(permit)) => permit,
                        _ => {
                            return Err(Status::resource_exhausted(format!(
                                "the read side's memory (query.memory_bytes) stayed taken by other reads for {:?}; try again",
                                self.memory.wait
                            )))
                        }
                    }
                }
            };
            match &mut self.held {
                Some(held) => held.merge(permit),
                None => self.held = Some(permit),
            }
        }
        self.used += bytes;
        Ok(Fit::Fits)
    }

    /// Bytes charged so far.
    pub fn used(&self) -> usize {
        self.used
    }
}

/// What reading a JSON object costs while it is decoded (serde_json's map of it, whatever few
/// members it has), in bytes: held for one row at a time.
const OBJECT_TRANSIENT_BYTES: usize = 640;
/// What each member or element of a JSON value costs once decoded into OTLP (a KeyValue, an
/// event, an array element), in bytes, beside its text.
const NODE_BYTES: usize = 96;

/// What a row costs in memory: what it holds and what decoding it leaves behind, and what its
/// decoding needs while it runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RowCost {
    /// Held until the answer is sent: the row's bytes as received, the OTLP decoded from them
    /// (text copied, plus [`NODE_BYTES`] per JSON member or element) and the answer's encoding
    /// of them.
    pub held: usize,
    /// Needed only while this row is decoded (one row at a time): its JSON objects as maps.
    pub transient: usize,
}

/// The cost of `row`: every column's bytes as they arrived (jsonb arrives as its text),
/// counted three times (received, decoded, encoded), with its JSON's objects and members
/// counted from the text. Over-counting (a brace inside a string) only ends a page sooner.
pub fn row_cost(row: &Row) -> RowCost {
    let mut cost = RowCost { held: 64, transient: 0 };
    for i in 0..row.len() {
        let Ok(Raw(bytes)) = row.try_get::<_, Raw<'_>>(i) else { continue };
        let column = column_cost(bytes);
        cost.held += column.held;
        cost.transient += column.transient;
    }
    cost
}

/// The cost of one column's bytes (see [`row_cost`]).
fn column_cost(bytes: &[u8]) -> RowCost {
    let (mut objects, mut members) = (0usize, 0usize);
    for byte in bytes {
        match byte {
            b'{' => objects += 1,
            b',' | b'[' => members += 1,
            _ => {}
        }
    }
    RowCost {
        held: 3 * bytes.len() + NODE_BYTES * (objects + members),
        transient: OBJECT_TRANSIENT_BYTES * objects,
    }
}

/// A column's bytes as they arrived, whatever its type.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(raw))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(&[]))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(memory_bytes: usize, answer_bytes: usize) -> ReadMemory {
        ReadMemory::new(&QueryConfig {
            memory_bytes,
            answer_bytes,
            memory_wait_ms: 50,
            ..QueryConfig::default()
        })
    }

    #[test]
    fn json_objects_and_members_are_counted_from_the_text() {
        let text = br#"[{"name":"a","time_unix_nano":1},{"name":"b","time_unix_nano":2}]"#;
        let cost = column_cost(text);
        // Two objects, four separators and the array's bracket.
        assert_eq!(cost.held, 3 * text.len() + NODE_BYTES * (2 + 4));
        assert_eq!(cost.transient, 2 * OBJECT_TRANSIENT_BYTES);
        assert_eq!(column_cost(b"plain text"), RowCost { held: 30, transient: 0 });
        // 200,000 small events: their maps weigh far more than their text while decoded.
        let events: Vec<u8> =
            std::iter::repeat_n(&br#"{"n":"e","t":1},"#[..], 200_000).flatten().copied().collect();
        assert!(column_cost(&events).transient > 100 * events.len() / 10);
    }

    #[tokio::test]
    async fn an_answer_stops_at_its_budget_and_refuses_an_item_larger_than_it() {
        let memory = memory(1 << 20, 10_000);
        let mut budget = memory.budget();
        assert_eq!(budget.charge(6_000).await.unwrap(), Fit::Fits);
        assert_eq!(budget.charge(6_000).await.unwrap(), Fit::Full, "past the answer's budget");
        assert_eq!(budget.charge(4_000).await.unwrap(), Fit::Fits, "a smaller one still fits");
        let err = memory.budget().charge(10_001).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("query.answer_bytes"), "{}", err.message());
    }

    #[tokio::test]
    async fn reads_share_the_pool_and_give_it_back() {
        let memory = memory(100 * UNIT, 80 * UNIT);
        let mut first = memory.budget();
        assert_eq!(first.charge(70 * UNIT).await.unwrap(), Fit::Fits);
        assert_eq!(memory.available_bytes(), 30 * UNIT);
        // A second read that started ends where the pool does...
        let mut second = memory.budget();
        assert_eq!(second.charge(20 * UNIT).await.unwrap(), Fit::Fits);
        assert_eq!(second.charge(20 * UNIT).await.unwrap(), Fit::Full);
        // ...and a third that has nothing yet waits, then is refused.
        let err = memory.budget().charge(40 * UNIT).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("query.memory_bytes"));
        drop(first);
        assert_eq!(
            memory.budget().charge(40 * UNIT).await.unwrap(),
            Fit::Fits,
            "room again once a read ends"
        );
        drop(second);
        assert_eq!(memory.available_bytes(), 100 * UNIT);
    }

    #[tokio::test]
    async fn a_waiting_read_goes_on_when_room_is_given_back() {
        let memory = ReadMemory::new(&QueryConfig {
            memory_bytes: 10 * UNIT,
            answer_bytes: 10 * UNIT,
            memory_wait_ms: 10_000,
            ..QueryConfig::default()
        });
        let mut first = memory.budget();
        first.charge(10 * UNIT).await.unwrap();
        let waiting = tokio::spawn({
            let memory = memory.clone();
            async move { memory.budget().charge(5 * UNIT).await }
        });
        tokio::task::yield_now().await;
        drop(first);
        assert_eq!(waiting.await.unwrap().unwrap(), Fit::Fits);
    }
}
