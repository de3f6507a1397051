//! A mergeable duration histogram with a stated relative error: DDSketch's logarithmic mapping
//! (Masson, Rim and Lee, VLDB 2019) at a relative accuracy of [`RELATIVE_ACCURACY`] (1%).
//!
//! A duration `d` of at least one nanosecond falls in bucket `ceil(log_γ d)` with
//! `γ = (1 + α) / (1 - α)`; a bucket stands for the value `2 γ^i / (γ + 1)`, which is within `α`
//! of every duration in it. So a percentile read from merged buckets is within 1% of the exact
//! one (the same rank of the sorted durations, as `percentile_disc` takes it). Two sketches merge
//! by adding counts bucket by bucket, which is what lets rollup rows written by many requests,
//! batches and replicas be summed at read time, over any time range and set of keys.
//!
//! Why this layout: its error is relative, so 1 µs and 10 s spans are both within 1%, with about
//! 115 buckets per decade (a few hundred at most for a real endpoint, ~20 bytes per minute for a
//! typical one); OpenTelemetry's base-2 exponential histogram at scale 5 is the same idea with a
//! 1.1% bound that depends on where in the bucket a value falls. HDR histograms have a fixed
//! range and store every bucket of it.
//!
//! Stored as `bytea`: for each non-empty bucket in increasing order, the zigzag varint of its
//! index minus the previous one's (the first minus 0), then its count as a varint. Durations of
//! zero or less (an end before the start) go in bucket [`ZERO`], reported as 0.

/// The bound on a reported percentile's relative error.
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// The bucket of durations of zero or less.
pub const ZERO: i32 = i32::MIN;

/// The bucket of the longest duration, `i64::MAX` nanoseconds; a duration of at least one
/// nanosecond falls in `0..=MAX_BUCKET`.
pub const MAX_BUCKET: i32 = 2_184;

const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);

/// Counts of durations by bucket: those of [`ZERO`], and the others either as a short sorted
/// list of (bucket, count) while there are at most [`SPARSE_BUCKETS`] of them (a request's
/// tally of one key holds a few durations), or in one run of slots from the lowest bucket
/// counted to the highest, so that merging many sketches (a read sums one per rollup row) adds
/// slot to slot. At most one of the two holds counts.
#[derive(Debug, Clone, Default)]
pub struct Durations {
    zero: u64,
    sparse: Vec<(i32, u64)>,
    /// The bucket of `slots[0]`.
    first: i32,
    slots: Vec<u64>,
}

/// Buckets kept as a sorted list before they turn into slots.
const SPARSE_BUCKETS: usize = 32;

/// `ln γ`, what a duration's logarithm is divided by (also by the SQL that buckets stored
/// spans, which is given this number).
#[must_use]
pub fn ln_gamma() -> f64 {
    GAMMA.ln()
}

/// The bucket a duration of `nanos` nanoseconds falls in.
#[must_use]
pub fn bucket(nanos: i64) -> i32 {
    if nanos <= 0 {
        return ZERO;
    }
    (((nanos as f64).ln() / ln_gamma()).ceil() as i32).clamp(0, MAX_BUCKET)
}

/// The value a bucket stands for: within [`RELATIVE_ACCURACY`] of every duration in it.
#[must_use]
pub fn value(bucket: i32) -> f64 {
    if bucket == ZERO {
        return 0.0;
    }
    2.0 * GAMMA.powi(bucket) / (GAMMA + 1.0)
}

impl PartialEq for Durations {
    fn eq(&self, other: &Self) -> bool {
        self.buckets().eq(other.buckets())
    }
}

impl Eq for Durations {}

impl Durations {
    pub fn add(&mut self, nanos: i64) {
        self.add_to_bucket(bucket(nanos), 1);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Durations) {
        self.zero = self.zero.saturating_add(other.zero);
        for &(bucket, count) in &other.sparse {
            self.add_to_bucket(bucket, count);
        }
        if other.slots.is_empty() {
            return;
        }
        self.make_dense();
        let last = other.first + other.slots.len() as i32 - 1;
        self.cover(other.first, last);
        let start = (other.first - self.first) as usize;
        for (slot, &count) in self.slots[start..].iter_mut().zip(&other.slots) {
            *slot = slot.saturating_add(count);
        }
    }

    /// Adds `count` durations to `bucket` ([`ZERO`] or `0..=MAX_BUCKET`; others are clamped to
    /// that range).
    pub fn add_to_bucket(&mut self, bucket: i32, count: u64) {
        if bucket == ZERO {
            self.zero = self.zero.saturating_add(count);
            return;
        }
        let bucket = bucket.clamp(0, MAX_BUCKET);
        if self.slots.is_empty() {
            match self.sparse.binary_search_by_key(&bucket, |&(b, _)| b) {
                Ok(i) => self.sparse[i].1 = self.sparse[i].1.saturating_add(count),
                Err(i) if self.sparse.len() < SPARSE_BUCKETS => self.sparse.insert(i, (bucket, count)),
                Err(_) => {
                    self.make_dense();
                    self.add_to_bucket(bucket, count);
                }
            }
            return;
        }
        if bucket < self.first || bucket - self.first >= self.slots.len() as i32 {
            self.cover(bucket, bucket);
        }
        let slot = &mut self.slots[(bucket - self.first) as usize];
        *slot = slot.saturating_add(count);
    }

    /// Moves the sorted list's counts into slots.
    fn make_dense(&mut self) {
        let (Some(&(low, _)), Some(&(high, _))) = (self.sparse.first(), self.sparse.last()) else { return };
        self.cover(low, high);
        for (bucket, count) in std::mem::take(&mut self.sparse) {
            let slot = &mut self.slots[(bucket - self.first) as usize];
            *slot = slot.saturating_add(count);
        }
    }

    /// Makes the slots reach from `low` to `high` at least (both in `0..=MAX_BUCKET`), growing
    /// by at least as many slots as they hold, so that adding durations one by one grows them a
    /// few times only.
    fn cover(&mut self, low: i32, high: i32) {
        if self.slots.is_empty() {
            self.first = low;
            self.slots.resize((high - low + 1) as usize, 0);
            return;
        }
        let len = self.slots.len() as i32;
        if low < self.first {
            let first = low.min(self.first - len).max(0);
            self.slots.splice(0..0, std::iter::repeat_n(0, (self.first - first) as usize));
            self.first = first;
        }
        let last = self.first + self.slots.len() as i32 - 1;
        if high > last {
            let last = high.max(last + len).min(MAX_BUCKET);
            self.slots.resize((last - self.first + 1) as usize, 0);
        }
    }

    /// The buckets that hold a duration, in increasing order, with their counts.
    pub fn buckets(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        let zero = (self.zero > 0).then_some((ZERO, self.zero));
        let first = self.first;
        zero.into_iter().chain(self.sparse.iter().copied()).chain(
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, &count)| count > 0)
                .map(move |(i, &count)| (first + i as i32, count)),
        )
    }

    /// Memory the counts hold.
    pub fn held_bytes(&self) -> usize {
        self.sparse.capacity() * std::mem::size_of::<(i32, u64)>() + self.slots.capacity() * 8
    }

    pub fn count(&self) -> u64 {
        let sparse = self.sparse.iter().map(|&(_, count)| count);
        sparse.chain(self.slots.iter().copied()).fold(self.zero, u64::saturating_add)
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// The duration at quantile `q` (0 to 1) in nanoseconds, as `percentile_disc` picks it (the
    /// value at rank `ceil(q n)` of the `n` sorted durations) within the stated error; `None`
    /// when there are no durations.
    #[must_use]
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bucket, count) in self.buckets() {
            seen += count;
            if seen >= rank {
                return Some(value(bucket));
            }
        }
        None
    }

    /// The stored form (see the module's documentation).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut previous = 0i64;
        for (bucket, count) in self.buckets() {
            let delta = i64::from(bucket) - previous;
            put_varint(&mut out, ((delta << 1) ^ (delta >> 63)) as u64);
            put_varint(&mut out, count);
            previous = i64::from(bucket);
        }
        out
    }

    /// Adds the counts of a stored sketch.
    ///
    /// # Errors
    /// [`Malformed`] for bytes [`Durations::encode`] does not write.
    pub fn merge_encoded(&mut self, mut bytes: &[u8]) -> Result<(), Malformed> {
        let mut previous = 0i64;
        while !bytes.is_empty() {
            let zigzag = take_varint(&mut bytes)?;
            let delta = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
            let bucket = previous.checked_add(delta).ok_or(Malformed)?;
            let count = take_varint(&mut bytes)?;
            let bucket_i32 = i32::try_from(bucket).map_err(|_| Malformed)?;
            if bucket_i32 != ZERO && !(0..=MAX_BUCKET).contains(&bucket_i32) {
                return Err(Malformed);
            }
            self.count_of(bucket_i32).checked_add(count).ok_or(Malformed)?;
            self.add_to_bucket(bucket_i32, count);
            previous = bucket;
        }
        Ok(())
    }

    fn count_of(&self, bucket: i32) -> u64 {
        if bucket == ZERO {
            return self.zero;
        }
        if let Ok(i) = self.sparse.binary_search_by_key(&bucket, |&(b, _)| b) {
            return self.sparse[i].1;
        }
        bucket
            .checked_sub(self.first)
            .and_then(|i| self.slots.get(usize::try_from(i).ok()?))
            .copied()
            .unwrap_or(0)
    }

    /// A stored sketch.
    ///
    /// # Errors
    /// [`Malformed`] for bytes [`Durations::encode`] does not write.
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let mut durations = Self::default();
        durations.merge_encoded(bytes)?;
        Ok(durations)
    }
}

/// Bytes that are not a stored sketch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a stored duration sketch is malformed")]
pub struct Malformed;

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Result<u64, Malformed> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or(Malformed)?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err(Malformed)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// `percentile_disc`: the value at rank ceil(q n) of the sorted values.
    fn exact(sorted: &[i64], q: f64) -> i64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    fn within_accuracy(reported: f64, exact: i64) -> bool {
        if exact <= 0 {
            return reported == 0.0;
        }
        // The bound, plus what rounding ln() near a bucket's edge can add.
        (reported - exact as f64).abs() <= exact as f64 * (RELATIVE_ACCURACY + 1e-9)
    }

    #[test]
    fn every_duration_is_within_the_accuracy_of_its_bucket() {
        let mut nanos = 1i64;
        while nanos < i64::MAX / 2 {
            for n in [nanos, nanos + 1, nanos * 3 / 2] {
                assert!(within_accuracy(value(bucket(n)), n), "{n} ns reported as {}", value(bucket(n)));
            }
            nanos *= 2;
        }
        assert!(within_accuracy(value(bucket(i64::MAX)), i64::MAX));
        assert_eq!(value(bucket(0)), 0.0);
        assert_eq!(value(bucket(-5)), 0.0);
    }

    #[test]
    fn the_longest_duration_falls_in_the_last_bucket() {
        assert_eq!(((i64::MAX as f64).ln() / ln_gamma()).ceil() as i32, MAX_BUCKET);
        assert_eq!(bucket(1), 0);
    }

    #[test]
    fn a_stored_sketch_reads_back_and_garbage_is_refused() {
        let mut d = Durations::default();
        for n in [0, -3, 1, 1, 999, 1_000_000, i64::MAX] {
            d.add(n);
        }
        assert_eq!(Durations::decode(&d.encode()), Ok(d.clone()));
        assert_eq!(Durations::decode(&[]), Ok(Durations::default()));
        assert_eq!(Durations::decode(&[0x80]), Err(Malformed));
        assert_eq!(Durations::decode(&[2]), Err(Malformed), "a bucket without its count");
        assert_eq!(Durations::decode(&[0xff; 11]), Err(Malformed));
        // Bucket 2,185 and bucket -1: no duration falls there.
        assert_eq!(Durations::decode(&[0x92, 0x22, 1]), Err(Malformed));
        assert_eq!(Durations::decode(&[1, 1]), Err(Malformed));
    }

    proptest! {
        #[test]
        fn percentiles_of_merged_sketches_are_within_the_stated_error(
            parts in prop::collection::vec(
                prop::collection::vec(prop_oneof![
                    0i64..2_000,
                    1_000i64..100_000_000,
                    // Skewed: a long tail of slow requests.
                    (0u32..40).prop_map(|e| 1i64 << e),
                    Just(i64::MAX),
                ], 1..200),
                1..5,
            ),
            q in prop::sample::select(vec![0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0]),
        ) {
            let mut merged = Durations::default();
            for part in &parts {
                let mut sketch = Durations::default();
                part.iter().for_each(|&n| sketch.add(n));
                // Through the stored form, as rows are summed when read.
                merged.merge_encoded(&sketch.encode()).expect("its own encoding");
            }
            let mut all: Vec<i64> = parts.concat();
            all.sort_unstable();
            prop_assert_eq!(merged.count(), all.len() as u64);
            let reported = merged.quantile(q).expect("not empty");
            prop_assert!(within_accuracy(reported, exact(&all, q)), "q {}: {} vs {}", q, reported, exact(&all, q));
        }

        #[test]
        fn decoding_any_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Durations::decode(&bytes);
        }
    }
}
