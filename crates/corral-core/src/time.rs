//! Wall-clock timestamps for records and JSON (`*_ms` fields).
//!
//! Durations inside a process use `std::time::Instant`; these milliseconds are
//! only for what is stored or shown, where a monotonic clock means nothing.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Parses a moment given on a command line, as ms since the epoch:
/// `+90s` / `+30m` / `+2h` / `+1d` from `now_ms`, a UTC RFC 3339 time
/// (`2026-11-24T09:00Z`, `2026-11-24T09:00:30Z`), or plain epoch
/// milliseconds. Other time zones are refused rather than guessed.
pub fn parse_instant_ms(s: &str, now_ms: u64) -> Result<u64, String> {
    let s = s.trim();
    if let Some(rel) = s.strip_prefix('+') {
        return parse_duration_ms(rel).map(|d| now_ms.saturating_add(d));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| format!("{s:?} is too large"));
    }
    parse_rfc3339_utc_ms(s)
}

/// `90s`, `30m`, `2h`, `1d` (a bare number is seconds) in milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let bad = || format!("bad duration {s:?}: want a number with s, m, h or d (e.g. 30m)");
    let (digits, unit_ms) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1_000),
        Some((i, 'm')) => (&s[..i], 60_000),
        Some((i, 'h')) => (&s[..i], 3_600_000),
        Some((i, 'd')) => (&s[..i], 86_400_000),
        Some(_) => (s, 1_000),
        None => return Err(bad()),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(unit_ms).ok_or_else(bad)
}

/// `YYYY-MM-DDTHH:MM[:SS]Z` → ms since the epoch.
fn parse_rfc3339_utc_ms(s: &str) -> Result<u64, String> {
    let bad = || format!("bad time {s:?}: want +30m, epoch ms, or UTC like 2026-11-24T09:00Z");
    let body = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')).ok_or_else(bad)?;
    let (date, clock) = body.split_once(['T', 't', ' ']).ok_or_else(bad)?;
    let num = |p: &str| p.parse::<u64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let c: Vec<&str> = clock.split(':').collect();
    if d.len() != 3 || !(2..=3).contains(&c.len()) {
        return Err(bad());
    }
    let (year, month, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (hour, minute) = (num(c[0])?, num(c[1])?);
    let second = c.get(2).map(|x| num(x)).transpose()?.unwrap_or(0);
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(bad());
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    Ok(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000)
}

fn is_leap(y: u64) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (year ≥ 1970).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let leap_days = |y: u64| y / 4 - y / 100 + y / 400;
    let before_year = (y - 1970) * 365 + leap_days(y - 1) - leap_days(1969);
    let before_month: u64 = (1..m).map(|mm| days_in_month(y, mm)).sum();
    before_year + before_month + d - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_relative_absolute_and_raw() {
        assert_eq!(parse_instant_ms("+90s", 1_000), Ok(91_000));
        assert_eq!(parse_instant_ms("+30m", 0), Ok(1_800_000));
        assert_eq!(parse_instant_ms("+1d", 5), Ok(86_400_005));
        assert_eq!(parse_instant_ms("1700000000000", 0), Ok(1_700_000_000_000));
        assert_eq!(parse_instant_ms("1970-01-01T00:00Z", 9), Ok(0));
        // 2026-11-24T09:00:30Z, checked against `date -u -d 2026-11-24T09:00:30Z +%s`.
        assert_eq!(parse_instant_ms("2026-11-24T09:00:30Z", 0), Ok(1_795_510_830_000));
        assert_eq!(parse_instant_ms("2024-02-29T00:00Z", 0), Ok(1_709_164_800_000));
    }

    #[test]
    fn bad_instants_say_what_is_wanted() {
        for bad in ["", "+", "+5x", "tomorrow", "2026-11-24T09:00", "2026-11-24T09:00+01:00", "2025-02-29T00:00Z", "2026-13-01T00:00Z", "2026-11-24T24:00Z", "1969-12-31T23:59Z"] {
            let e = parse_instant_ms(bad, 0).unwrap_err();
            assert!(e.starts_with("bad"), "{bad:?}: {e}");
        }
    }
}
