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

/// The budget shared by every receiver.
#[derive(Clone)]
pub struct Intake {
    room: Arc<Semaphore>,
    capacity: usize,
    wait: Duration,
    /// `pipeline.max_request_memory`.
    request_limit: usize,
}

/// Room a request holds in the intake budget, given back when dropped.
#[derive(Debug, Default)]
pub struct Room {
    permit: Option<OwnedSemaphorePermit>,
    /// All the memory the request has asked for, even past the whole budget.
    asked: usize,
}

impl Room {
    /// Bytes of room held.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Adds `more` to this room.
    pub fn merge(&mut self, more: Room) {
        self.asked += more.asked;
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

    /// Runs `f` on the room the slot holds (none yet: an empty one).
    pub fn with<T>(&self, f: impl FnOnce(&Room) -> T) -> T {
        f(self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert_with(Room::default))
    }

    pub fn take(&self) -> Option<Room> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

impl Intake {
    pub fn new(capacity: usize, wait: Duration, request_limit: usize) -> Self {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        Self { room: Arc::new(Semaphore::new(capacity)), capacity, wait, request_limit }
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
            Ok(Ok(permit)) => Ok(Room { permit: Some(permit), asked: 0 }),
            Ok(Err(_)) => Err(WriteError::ShuttingDown),
            Err(_) => Err(WriteError::Overloaded(self.wait)),
        }
    }

    /// Takes room for `bytes` more of a request that holds `room` (see [`Intake::more`]).
    ///
    /// # Errors
    /// As [`Intake::reserve`]; [`WriteError::TooLarge`] once the request would have asked for
    /// more than `pipeline.max_request_memory` in all.
    pub async fn grow(&self, room: &mut Room, bytes: usize) -> Result<(), WriteError> {
        let more = self.reserve_more(room, bytes).await?;
        room.merge(more);
        Ok(())
    }

    /// The room [`Intake::grow`] adds to `room`, for a caller that merges it later.
    ///
    /// # Errors
    /// As [`Intake::grow`].
    pub fn reserve_more(
        &self,
        room: &Room,
        bytes: usize,
    ) -> impl std::future::Future<Output = Result<Room, WriteError>> + Send + 'static {
        let (intake, asked, held) = (self.clone(), room.asked.saturating_add(bytes), room.bytes());
        async move {
            if asked > intake.request_limit {
                return Err(WriteError::TooLarge(intake.request_limit));
            }
            let mut more = intake.reserve(intake.more(held, bytes)).await?;
            more.asked = bytes;
            Ok(more)
        }
    }

    /// [`Intake::grow`] from a thread that may block (encoding and decompressing run on such).
    ///
    /// # Errors
    /// As [`Intake::grow`].
    pub fn grow_blocking(
        &self,
        runtime: &tokio::runtime::Handle,
        room: &mut Room,
        bytes: usize,
    ) -> Result<(), WriteError> {
        runtime.block_on(self.grow(room, bytes))
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
        let intake = Intake::new(1000, Duration::from_millis(1), 20_000);
        let mut room = Room::default();
        intake.grow(&mut room, 100).await.unwrap();
        intake.grow(&mut room, 300).await.unwrap();
        assert_eq!((room.bytes(), intake.in_use()), (400, 400));
        intake.grow(&mut room, 5000).await.unwrap();
        assert_eq!(room.bytes(), 1000, "never more than the budget");
        intake.grow(&mut room, 5000).await.unwrap();
        assert_eq!(intake.in_use(), 1000);
        // 10,400 asked so far; 10,000 more would pass the request limit of 20,000.
        assert!(matches!(intake.grow(&mut room, 10_000).await, Err(WriteError::TooLarge(20_000))));
        drop(room);
        assert_eq!(intake.in_use(), 0);
    }

    #[tokio::test]
    async fn room_is_given_back_when_dropped_and_a_full_budget_turns_requests_away() {
        let intake = Intake::new(1000, Duration::from_millis(20), 20_000);
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
