//! The intake budget: room for requests from the moment their body starts to arrive until their
//! rows are in the queue. A request takes room as its bytes arrive (and as they are
//! decompressed), never from a size it merely declares, so bodies being received, decompressed,
//! decoded and encoded are all counted, and a client that sends slowly holds only what it has
//! sent. Once the rows have room in the queue the intake room is given back.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::WriteError;

/// How many times its own size a compressed gRPC message is assumed to take once decompressed
/// (tonic decompresses it whole); OTLP/HTTP bodies are charged for what they inflate to.
pub const COMPRESSED_EXPANSION: usize = 8;

/// The budget shared by every receiver.
#[derive(Clone)]
pub struct Intake {
    room: Arc<Semaphore>,
    capacity: usize,
    wait: Duration,
}

/// Room a request holds in the intake budget, given back when dropped.
#[derive(Debug, Default)]
pub struct Room {
    permit: Option<OwnedSemaphorePermit>,
}

impl Room {
    /// Bytes of room held.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Adds `more` to this room.
    pub fn merge(&mut self, more: Room) {
        match (&mut self.permit, more.permit) {
            (Some(held), Some(more)) => held.merge(more),
            (held @ None, more) => *held = more,
            (Some(_), None) => {}
        }
    }
}

/// Where a receiver's body reader leaves the room it reserved, for the handler to take.
#[derive(Clone, Default)]
pub struct RoomSlot(Arc<Mutex<Option<Room>>>);

impl RoomSlot {
    /// Adds `room` to what the slot holds.
    pub fn merge(&self, room: Room) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert_with(Room::default)
            .merge(room);
    }

    /// Bytes of room the slot holds.
    pub fn bytes(&self) -> usize {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().map_or(0, Room::bytes)
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

    /// How much of `bytes` more a request holding `held` must take: all of it, except that no
    /// request holds more than the whole budget (one larger than that goes on alone).
    pub fn more(&self, held: usize, bytes: usize) -> usize {
        bytes.min(self.capacity.saturating_sub(held))
    }

    /// Waits for `bytes` of room, at most `pipeline.intake_wait_ms`.
    ///
    /// # Errors
    /// [`WriteError::Overloaded`] when no room came in time.
    pub async fn reserve(&self, bytes: usize) -> Result<Room, WriteError> {
        if bytes == 0 {
            return Ok(Room::default());
        }
        let bytes = u32::try_from(bytes.min(self.capacity)).unwrap_or(u32::MAX);
        match tokio::time::timeout(self.wait, self.room.clone().acquire_many_owned(bytes)).await {
            Ok(Ok(permit)) => Ok(Room { permit: Some(permit) }),
            Ok(Err(_)) => Err(WriteError::ShuttingDown),
            Err(_) => Err(WriteError::Overloaded(self.wait)),
        }
    }

    /// Takes room for `bytes` more of a request that holds `room` (see [`Intake::more`]).
    ///
    /// # Errors
    /// As [`Intake::reserve`].
    pub async fn grow(&self, room: &mut Room, bytes: usize) -> Result<(), WriteError> {
        let more = self.reserve(self.more(room.bytes(), bytes)).await?;
        room.merge(more);
        Ok(())
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

    #[tokio::test]
    async fn a_request_grows_its_room_up_to_the_whole_budget_and_no_further() {
        let intake = Intake::new(1000, Duration::from_millis(1));
        let mut room = Room::default();
        intake.grow(&mut room, 100).await.unwrap();
        intake.grow(&mut room, 300).await.unwrap();
        assert_eq!((room.bytes(), intake.in_use()), (400, 400));
        intake.grow(&mut room, 5000).await.unwrap();
        assert_eq!(room.bytes(), 1000, "never more than the budget");
        intake.grow(&mut room, 5000).await.unwrap();
        assert_eq!(intake.in_use(), 1000);
        drop(room);
        assert_eq!(intake.in_use(), 0);
    }

    #[tokio::test]
    async fn room_is_given_back_when_dropped_and_a_full_budget_turns_requests_away() {
        let intake = Intake::new(1000, Duration::from_millis(20));
        let first = intake.reserve(700).await.unwrap();
        assert_eq!(intake.in_use(), 700);
        assert!(matches!(intake.reserve(400).await, Err(WriteError::Overloaded(_))));
        let slot = RoomSlot::default();
        slot.merge(intake.reserve(300).await.unwrap());
        drop(first);
        assert_eq!(intake.in_use(), 300);
        drop(slot.take());
        assert_eq!(intake.in_use(), 0);
    }
}
