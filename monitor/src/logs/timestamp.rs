//! RFC 3339 timestamps with nanoseconds, in UTC, without a date crate.
//!
//! Formatting follows Go's `time.RFC3339Nano` as containerd uses it for CRI
//! logs: trailing zeros of the fraction are dropped (and the dot with them
//! when the fraction is zero), the zone is always `Z`. Parsing accepts any
//! fraction of 0–9 digits and a `Z` or `±hh:mm` offset, as the kubelet does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic
/// Gregorian (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01 (`days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
}

impl UtcTime {
    /// Times before the epoch are clamped to it (a node's clock is never
    /// there in practice).
    pub fn from_system(t: SystemTime) -> UtcTime {
        let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let secs = d.as_secs() as i64;
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let rem = secs.rem_euclid(86_400);
        UtcTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
            nanos: d.subsec_nanos(),
        }
    }
}

/// `2016-10-06T00:17:09.669794202Z` (RFC3339Nano, UTC, zeros trimmed).
pub fn format_rfc3339_nano(t: SystemTime) -> String {
    let mut s = String::with_capacity(30);
    push_rfc3339_nano(&mut s, t);
    s
}

/// Appends the RFC3339Nano form of `t` to `out`.
pub fn push_rfc3339_nano(out: &mut String, t: SystemTime) {
    use std::fmt::Write;
    let u = UtcTime::from_system(t);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    );
    if u.nanos != 0 {
        let frac = format!("{:09}", u.nanos);
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
}

/// `20061002-150405`: the suffix the kubelet gives rotated log files (UTC
/// here, so names sort the same on every node).
pub fn format_rotation_suffix(t: SystemTime) -> String {
    let u = UtcTime::from_system(t);
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    )
}

/// A timestamp that is not RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RFC 3339 timestamp {0:?}")]
pub struct TimestampError(pub String);

fn digits(s: &[u8], range: std::ops::Range<usize>) -> Option<u32> {
    let part = s.get(range)?;
    if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
        return None;
    }
    part.iter().try_fold(0u32, |acc, b| {
        acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
    })
}

/// Parses an RFC 3339 timestamp (`Z` or numeric offset, optional fraction).
pub fn parse_rfc3339(s: &str) -> Result<SystemTime, TimestampError> {
    parse_inner(s.as_bytes()).ok_or_else(|| TimestampError(s.chars().take(64).collect()))
}

fn parse_inner(b: &[u8]) -> Option<SystemTime> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(b, 0..4)?;
    let month = digits(b, 5..7)?;
    let day = digits(b, 8..10)?;
    let hour = digits(b, 11..13)?;
    let minute = digits(b, 14..16)?;
    let second = digits(b, 17..19)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        let n = end - start;
        if n == 0 || n > 9 {
            return None;
        }
        nanos = digits(b, start..end)? * 10u32.pow((9 - n) as u32);
        i = end;
    }
    let offset_secs: i64 = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let h = i64::from(digits(b, i + 1..i + 3)?);
            let m = i64::from(digits(b, i + 4..i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 3600 + m * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
        - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn known_values_format() {
        assert_eq!(format_rfc3339_nano(at(0, 0)), "1970-01-01T00:00:00Z");
        // date -u -d @1475713029 → 2016-10-06T00:17:09Z
        assert_eq!(
            format_rfc3339_nano(at(1_475_713_029, 669_794_202)),
            "2016-10-06T00:17:09.669794202Z"
        );
        assert_eq!(
            format_rfc3339_nano(at(1_475_713_029, 500_000_000)),
            "2016-10-06T00:17:09.5Z"
        );
        // Leap day and end of century.
        assert_eq!(
            format_rfc3339_nano(at(951_782_400, 0)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            format_rfc3339_nano(at(4_107_542_399, 1)),
            "2100-02-28T23:59:59.000000001Z"
        );
        assert_eq!(
            format_rotation_suffix(at(1_475_713_029, 9)),
            "20161006-001709"
        );
    }

    #[test]
    fn round_trip_over_many_days() {
        let mut t = 0u64;
        while t < 5_000_000_000 {
            let st = at(t, (t % 1_000_000_007) as u32 % 1_000_000_000);
            assert_eq!(parse_rfc3339(&format_rfc3339_nano(st)).unwrap(), st);
            t += 86_400 * 13 + 3607;
        }
    }

    #[test]
    fn offsets_and_garbage() {
        assert_eq!(
            parse_rfc3339("2016-10-06T02:17:09.5+02:00").unwrap(),
            at(1_475_713_029, 500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2016-10-05T23:17:09-01:00").unwrap(),
            at(1_475_713_029, 0)
        );
        for bad in [
            "",
            "2016-10-06",
            "2016-13-06T00:17:09Z",
            "2016-10-06T00:17:09",
            "2016-10-06T00:17:09.Z",
            "2016-10-06T00:17:09.1234567890Z",
            "2016-10-06T00:17:09+0200",
            "2016-10-06T0x:17:09Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?}");
        }
    }
}
