//! The intake budget: room for requests from the moment their body starts to arrive until their
//! rows are in the queue. A receiver reserves a request's room from the size the request
//! declares before reading its body, so bodies being received, decompressed, decoded and
//! encoded are all counted; once the rows have room in the queue the intake room is given back.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::WriteError;

/// How many times its own size a compressed body is assumed to take once decompressed.
pub const COMPRESSED_EXPANSION: usize = 8;

/// The budget shared by every receiver.
#[derive(Clone)]
pub struct Intake {
    room: Arc<Semaphore>,
    capacity: usize,
    wait: Duration,
}

/// Room a request holds in the intake budget, given back when dropped.
#[derive(Debug)]
pub struct Room {
    _permit: OwnedSemaphorePermit,
}

/// Where a receiver's body reader leaves the room it reserved, for the handler to take.
#[derive(Clone, Default)]
pub struct RoomSlot(Arc<Mutex<Option<Room>>>);

impl RoomSlot {
    pub fn put(&self, room: Room) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(room);
    }

    pub fn take(&self) -> Option<Room> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

impl Intake {
    pub fn new(capacity: usize, wait: Duration) -> Self {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        Self { room: Arc::new(Semaphore::new(capacity)), capacity, wait }
    }

    /// The room to reserve for a body of `declared` bytes (`None` when the size is not known
    /// before reading it) that may be at most `limit` bytes once decompressed. A body larger
    /// than the whole budget reserves all of it, and so goes through alone.
    pub fn need(&self, declared: Option<usize>, compressed: bool, limit: usize) -> usize {
        let expected = match declared {
            Some(bytes) if compressed => bytes.saturating_mul(COMPRESSED_EXPANSION),
            Some(bytes) => bytes,
            None => limit,
        };
        expected.min(limit).min(self.capacity).max(1)
    }

    /// Waits for `bytes` of room (see [`Intake::need`]), at most `pipeline.intake_wait_ms`.
    ///
    /// # Errors
    /// [`WriteError::Overloaded`] when no room came in time.
    pub async fn reserve(&self, bytes: usize) -> Result<Room, WriteError> {
        let bytes = u32::try_from(bytes.min(self.capacity)).unwrap_or(u32::MAX);
        match tokio::time::timeout(self.wait, self.room.clone().acquire_many_owned(bytes)).await {
            Ok(Ok(permit)) => Ok(Room { _permit: permit }),
            Ok(Err(_)) => Err(WriteError::ShuttingDown),
            Err(_) => Err(WriteError::Overloaded(self.wait)),
        }
    }

    /// Bytes of room held by requests right now.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn in_use(&self) -> usize {
        self.capacity - self.room.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_needed_follows_the_declared_size_within_the_limits() {
        let intake = Intake::new(1000, Duration::from_millis(1));
        assert_eq!(intake.need(Some(100), false, 10_000), 100);
        assert_eq!(intake.need(Some(100), true, 10_000), 800);
        assert_eq!(intake.need(Some(100), true, 500), 500, "never more than the decompressed limit");
        assert_eq!(intake.need(Some(5000), false, 10_000), 1000, "never more than the budget");
        assert_eq!(intake.need(None, false, 600), 600, "an unknown size reserves the limit");
        assert_eq!(intake.need(Some(0), false, 600), 1);
    }

    #[tokio::test]
    async fn room_is_given_back_when_dropped_and_a_full_budget_turns_requests_away() {
        let intake = Intake::new(1000, Duration::from_millis(20));
        let first = intake.reserve(700).await.unwrap();
        assert_eq!(intake.in_use(), 700);
        assert!(matches!(intake.reserve(400).await, Err(WriteError::Overloaded(_))));
        let slot = RoomSlot::default();
        slot.put(intake.reserve(300).await.unwrap());
        drop(first);
        assert_eq!(intake.in_use(), 300);
        drop(slot.take());
        assert_eq!(intake.in_use(), 0);
    }
}
