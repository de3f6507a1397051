//! Memory budgets that requests take from as they come to hold memory. The intake budget holds
//! the bytes of requests as they arrive, never a size they merely declare, so a client that
//! sends slowly holds only what it has sent; it is given back once the request's rows are in the
//! queue. What is built from those bytes (inflated bodies, decoded structs, encoded rows) is
//! taken, as it is built, from the queue's budget (see `Pipeline::build`), which the writers give
//! back as they commit: a request waiting for room to build never holds up the requests that
//! free it, so requests cannot starve each other holding half of what they need.

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

/// A request takes intake room up to this fraction of the budget ahead of what has arrived
/// (see [`Intake::step`]): at least this many stalled requests are needed to hold it all.
pub const STEP_FRACTION: usize = 64;

impl Room {
    /// All the memory the request has asked for so far.
    pub fn asked(&self) -> usize {
        self.asked
    }

    /// An empty room in another budget that counts, towards the request's memory limit, what
    /// this one has asked for.
    pub fn counting(&self) -> Room {
        Room { permit: None, asked: self.asked }
    }

    /// The permit that holds the room, to hand on.
    pub fn into_permit(self) -> Option<OwnedSemaphorePermit> {
        self.permit
    }

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

/// Where a receiver's body reader leaves the room it took, for the handler to take: in the
/// intake budget for the bytes received, and in the queue for what was built from them (an
/// inflated message).
#[derive(Clone, Default)]
pub struct RoomSlot(Arc<Mutex<Option<Room>>>, Arc<Mutex<Option<Room>>>);

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

    /// Leaves the queue room of what was built.
    pub fn put_built(&self, room: Room) {
        *self.1.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(room);
    }

    pub fn take_built(&self) -> Option<Room> {
        self.1.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

impl Intake {
    pub fn new(capacity: usize, wait: Duration, request_limit: usize) -> Self {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        Self::sharing(Arc::new(Semaphore::new(capacity)), capacity, wait, request_limit)
    }

    /// A budget over `room`, a semaphore of `capacity` permits that others may take from too.
    pub fn sharing(room: Arc<Semaphore>, capacity: usize, wait: Duration, request_limit: usize) -> Self {
        Self { room, capacity: capacity.max(1), wait, request_limit }
    }

    /// How much more room a request that has asked for `asked` bytes so far must take to cover
    /// `needed` bytes of its body, which declares `declared` bytes in all (if it says): nothing
    /// while it is covered, else at least the shortfall and up to a step (the budget over
    /// [`STEP_FRACTION`]) ahead, as far as the declared size goes. Taking room a step ahead lets
    /// most requests take theirs in one or a few goes (a request that takes it a frame at a time
    /// holds part of the budget while it waits for the rest, and under overload such requests
    /// starve each other: 33% of capacity stored against 68% a step ahead, bench/overload.sh),
    /// and no request holds more than a step beyond what it has sent.
    pub fn step(&self, asked: usize, needed: usize, declared: Option<usize>) -> usize {
        if needed <= asked {
            return 0;
        }
        let step = self.capacity / STEP_FRACTION;
        let ahead = declared.map_or(step, |declared| declared.saturating_sub(asked).min(step));
        (needed - asked).max(ahead)
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
        self.reserve_within(bytes, self.wait).await
    }

    async fn reserve_within(&self, bytes: usize, wait: Duration) -> Result<Room, WriteError> {
        if bytes == 0 {
            return Ok(Room::default());
        }
        let bytes = u32::try_from(bytes.min(self.capacity)).unwrap_or(u32::MAX);
        let permit = if wait.is_zero() {
            self.room.clone().try_acquire_many_owned(bytes).map_err(|err| match err {
                tokio::sync::TryAcquireError::Closed => WriteError::ShuttingDown,
                tokio::sync::TryAcquireError::NoPermits => WriteError::Overloaded(wait),
            })
        } else {
            match tokio::time::timeout(wait, self.room.clone().acquire_many_owned(bytes)).await {
                Ok(Ok(permit)) => Ok(permit),
                Ok(Err(_)) => Err(WriteError::ShuttingDown),
                Err(_) => Err(WriteError::Overloaded(wait)),
            }
        };
        Ok(Room { permit: Some(permit?), asked: 0 })
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
            // A request that would hold more than half the budget waits for none of it: it takes
            // what is free now or is turned away, rather than hold half the budget while others
            // wait behind it.
            let wait = if asked > intake.capacity / 2 { Duration::ZERO } else { intake.wait };
            let mut more = intake.reserve_within(intake.more(held, bytes), wait).await?;
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
