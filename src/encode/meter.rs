//! The memory a request's rows take while they are encoded, asked for before each buffer grows.
//! A request can weigh little on the wire and still make many rows (a record of two bytes makes
//! a row of a hundred), so the receivers charge rows against the intake budget as they grow, not
//! after. The encoders know nothing of budgets: the receiver runs them under [`metered`], and
//! [`crate::encode::copy::Rows`] asks the meter of the thread it runs on.

use std::cell::RefCell;

/// Asks for room for `bytes` more; false when there is none (the request is then refused, and
/// its rows are thrown away as they come).
pub type Ask = Box<dyn FnMut(usize) -> bool + Send>;

/// A request's meter.
pub struct Meter {
    ask: Ask,
    refused: bool,
}

impl Meter {
    pub fn new(ask: Ask) -> Self {
        Self { ask, refused: false }
    }

    /// Whether an ask was turned down.
    pub fn refused(&self) -> bool {
        self.refused
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Meter>> = const { RefCell::new(None) };
}

/// Runs `encode` with `meter` asked for every growth of its row buffers; returns its result and
/// the meter.
pub fn metered<T>(meter: Meter, encode: impl FnOnce() -> T) -> (T, Meter) {
    let earlier = CURRENT.with(|current| current.replace(Some(meter)));
    let result = encode();
    let meter = CURRENT.with(|current| current.replace(earlier)).expect("the meter set above");
    (result, meter)
}

/// What the meter of this thread said to `bytes` more.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// No meter: grow as needed.
    Unmetered,
    Granted,
    /// Refused now or earlier: write nothing more that takes memory.
    Refused,
}

/// Asks this thread's meter for `bytes` more.
pub fn ask(bytes: usize) -> Answer {
    CURRENT.with(|current| match current.borrow_mut().as_mut() {
        None => Answer::Unmetered,
        Some(meter) if meter.refused => Answer::Refused,
        Some(meter) => {
            if (meter.ask)(bytes) {
                Answer::Granted
            } else {
                meter.refused = true;
                Answer::Refused
            }
        }
    })
}

/// What a list may hold before its growth is asked for.
const UNMETERED: usize = 16 * 1024;

/// The meter refused (see [`Answer::Refused`]).
#[derive(Debug)]
pub struct Refused;

/// Pushes `item` onto `list`, asking this thread's meter first when the list must grow past
/// [`UNMETERED`] bytes.
///
/// # Errors
/// [`Refused`] when the meter refused (now or earlier); nothing is pushed.
#[inline]
pub fn push<T>(list: &mut Vec<T>, item: T) -> Result<(), Refused> {
    let size = std::mem::size_of::<T>();
    if list.len() == list.capacity() && list.capacity() * size >= UNMETERED {
        let more = list.capacity() * size;
        if ask(more) == Answer::Refused {
            return Err(Refused);
        }
        list.reserve_exact(list.capacity());
    }
    list.push(item);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_is_asked_only_inside_metered_and_remembers_a_refusal() {
        assert_eq!(ask(10), Answer::Unmetered);
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = asked.clone();
        let meter = Meter::new(Box::new(move |bytes| {
            counted.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed) + bytes <= 100
        }));
        let (answers, meter) = metered(meter, || [ask(60), ask(60), ask(1)]);
        assert_eq!(answers, [Answer::Granted, Answer::Refused, Answer::Refused]);
        assert!(meter.refused());
        assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 120, "not asked again once refused");
        assert_eq!(ask(10), Answer::Unmetered);
    }

    #[test]
    fn a_list_asks_before_it_grows_past_what_is_unmetered() {
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = asked.clone();
        let meter = Meter::new(Box::new(move |bytes| {
            counted.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed) + bytes <= 64 * 1024
        }));
        let (pushed, _) = metered(meter, || {
            let mut list: Vec<u64> = Vec::new();
            let pushed = (0..100_000).take_while(|&i| push(&mut list, i).is_ok()).count();
            (pushed, list.capacity())
        });
        // 16 KiB unasked, then 16 KiB and 32 KiB granted: 8,192 u64s; the next growth is refused.
        assert_eq!(pushed, (8192, 8192));
        assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 16 * 1024 + 32 * 1024 + 64 * 1024);
    }
}
