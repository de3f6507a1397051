//! Days and dates: the day number (days since 1970-01-01, UTC) that partitions and dimension
//! rows are dated with, and calendar dates of day numbers and timestamps, for people.

/// Nanoseconds since the Unix epoch, now (0 if the clock is before it).
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Days since the Unix epoch (UTC) at `now`: the day number partitions and dimension rows are
/// dated with.
pub fn epoch_day(now: std::time::SystemTime) -> i32 {
    (now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() / 86_400) as i32
}

/// The UTC calendar date `(year, month, day)` of `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
pub fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `YYYY-MM-DD` of a day number.
pub fn date_text(days: i64) -> String {
    let (year, month, day) = civil_date(days);
    format!("{year:04}-{month:02}-{day:02}")
}

/// `YYYY-MM-DD HH:MM:SS.mmm` in UTC of nanoseconds since the epoch.
pub fn utc_text(nanos: u64) -> String {
    let secs = (nanos / 1_000_000_000) as i64;
    let millis = (nanos / 1_000_000) % 1000;
    let rem = secs.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02}:{:02}.{millis:03}",
        date_text(secs.div_euclid(86_400)),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_the_calendar() {
        assert_eq!(date_text(0), "1970-01-01");
        assert_eq!(date_text(20_788), "2026-12-01");
        assert_eq!(date_text(11_016), "2000-02-29");
        assert_eq!(date_text(-1), "1969-12-31");
        assert_eq!(utc_text(1_767_225_600_123_000_000), "2026-01-01 00:00:00.123");
    }
}
