//! ISO-8601 timestamps, byte-compatible with Python 3.11's `datetime`.
//!
//! * [`normalize_published_at`] reproduces `datetime.fromisoformat(s).isoformat()`
//!   (R-PUB-8). The server that this crate replaces runs CPython 3.11, whose
//!   `datetime` module is the C accelerator `_datetime`, not the pure-Python
//!   `datetime.py`. The two disagree on some malformed inputs, and the C one is
//!   what the reference really does, so this is a port of
//!   `Modules/_datetimemodule.c` (3.11): `_sanitize_isoformat_str`,
//!   `_find_isoformat_datetime_separator`, `parse_isoformat_date`,
//!   `parse_hh_mm_ss_ff`, `parse_isoformat_time`, `datetime_fromisoformat`,
//!   `tzinfo_from_isoformat_results`, then the range checks of the
//!   `datetime`/`timezone` constructors and `datetime.isoformat()`.
//!   The C code scans the UTF-8 encoding of the string as a NUL-terminated
//!   C string, so this port scans bytes, and `at()` reads a 0 byte past the
//!   end the way C reads the terminator.
//! * [`format_utc`] / [`now_utc`]: `isoformat()` of an aware UTC datetime
//!   (`sent_at`, `received_at`, R-PUB-9).
//! * [`log_timestamp`]: the `...Z` timestamp of JSON log lines (R-LOG-1).
//!
//! Python 3.11 behaviour that may be unexpected (every case is checked against
//! `python3.11` in the tests below):
//! * `24:00` is rejected in any form (`hour must be in 0..23`). Later Python
//!   versions changed this; 3.11 does not roll over to the next day.
//! * If an offset's whole seconds are zero, it is UTC: `+00:00:00.5` prints
//!   `+00:00`. The fraction is dropped.
//! * Minutes and seconds of an offset are not range-checked, only the total:
//!   `+01:99` prints `+02:39`, and `+23:59:60` fails (that is 24 h).
//! * Garbage between the time and an offset is skipped in some cases:
//!   `12x+01:00` and `12:00:00.1234567x+01:00` are accepted. A third `:`
//!   before a fraction is accepted too: `12:30:45:123` is `12:30:45.123000`.
//! * Basic-format time with extra digits reads them as the fraction:
//!   `T12304578` is `12:30:45.780000`.
//! * A NUL character ends the string early: `2024-01-01T12\0` is accepted.
//! * The date/time separator can be any one character, including a
//!   non-ASCII one (`2024-01-01é12:00`). A string that ends with the
//!   separator (`2024-01-01T`) is rejected.

use chrono::{DateTime, Datelike, Timelike, Utc};

/// Python 3.11 `datetime.fromisoformat(s).isoformat()`, or `None` when Python
/// raises. Example: `2024-01-01T00:00:00Z` → `2024-01-01T00:00:00+00:00`.
pub fn normalize_published_at(s: &str) -> Option<String> {
    parse_fromisoformat(s).map(|dt| dt.isoformat())
}

/// Python `isoformat()` of an aware UTC datetime, e.g.
/// `2026-11-24T21:13:15.563448+00:00`. Microseconds are omitted when they are
/// exactly 0. Sub-microsecond digits are truncated.
pub fn format_utc(t: DateTime<Utc>) -> String {
    let mut s = naive_isoformat(&t);
    s.push_str("+00:00");
    s
}

/// `format_utc(Utc::now())`.
pub fn now_utc() -> String {
    format_utc(Utc::now())
}

/// Log-line timestamp: naive UTC `isoformat()` followed by `Z`, e.g.
/// `2026-11-24T21:13:15.200233Z`. Microseconds are omitted when 0.
pub fn log_timestamp(t: DateTime<Utc>) -> String {
    let mut s = naive_isoformat(&t);
    s.push('Z');
    s
}

fn naive_isoformat(t: &DateTime<Utc>) -> String {
    // chrono marks a leap second with nanos >= 1e9. Python has no leap
    // seconds, so clamp it to the last microsecond of second 59.
    let micro = t.nanosecond().min(999_999_999) / 1000;
    // Written digit by digit: this runs twice per published message (`received_at`,
    // `sent_at`), where `format!` showed in profiles.
    let mut s = String::with_capacity(32);
    let year = t.year();
    if !(0..=9999).contains(&year) {
        // Outside Python's range; `format!` keeps the sign and extra digits.
        s.push_str(&format!("{year:04}"));
    } else {
        push_digits(&mut s, year as u32, 4);
    }
    for (sep, v) in [
        ('-', t.month()),
        ('-', t.day()),
        ('T', t.hour()),
        (':', t.minute()),
        (':', t.second()),
    ] {
        s.push(sep);
        push_digits(&mut s, v, 2);
    }
    if micro != 0 {
        s.push('.');
        push_digits(&mut s, micro, 6);
    }
    s
}

/// `v` in decimal, zero-padded to `width` digits (`v < 10^width`).
fn push_digits(s: &mut String, v: u32, width: u32) {
    let mut div = 10u32.pow(width - 1);
    while div > 0 {
        s.push(char::from(b'0' + (v / div % 10) as u8));
        div /= 10;
    }
}

/// A datetime built by `fromisoformat`, already range-checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PyDateTime {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    microsecond: i64,
    /// UTC offset in microseconds, strictly inside ±24 h; `None` = naive.
    offset_us: Option<i64>,
}

impl PyDateTime {
    /// `datetime.isoformat()` (sep `T`, timespec `auto`) plus
    /// `format_utcoffset` with `:` as separator.
    fn isoformat(&self) -> String {
        let mut s = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        if self.microsecond != 0 {
            s.push_str(&format!(".{:06}", self.microsecond));
        }
        if let Some(off) = self.offset_us {
            let sign = if off < 0 { '-' } else { '+' };
            let off = off.abs();
            let us = off % 1_000_000;
            let total_secs = off / 1_000_000;
            let (hh, mm, ss) = (total_secs / 3600, total_secs / 60 % 60, total_secs % 60);
            s.push_str(&format!("{sign}{hh:02}:{mm:02}"));
            if us != 0 {
                s.push_str(&format!(":{ss:02}.{us:06}"));
            } else if ss != 0 {
                s.push_str(&format!(":{ss:02}"));
            }
        }
        s
    }
}

/// The byte at `i`, or 0 past the end (the C string's NUL terminator and,
/// harmlessly, beyond it: the C code never reads further than the terminator).
fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

fn is_digit(c: u8) -> bool {
    c.is_ascii_digit()
}

/// C `parse_digits`: exactly `n` ASCII digits from `pos`.
fn parse_digits(b: &[u8], pos: usize, n: usize) -> Option<(i64, usize)> {
    let mut v = 0i64;
    for i in 0..n {
        let c = at(b, pos + i);
        if !is_digit(c) {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some((v, pos + n))
}

/// C `datetime_fromisoformat` followed by the `datetime(...)` and
/// `timezone(...)` constructor checks. `None` = Python raised.
fn parse_fromisoformat(s: &str) -> Option<PyDateTime> {
    // _sanitize_isoformat_str: fewer than 7 code points is invalid. (It also
    // swaps a surrogate separator for 'T'; a Rust str has no surrogates.)
    if s.chars().count() < 7 {
        return None;
    }
    let b = s.as_bytes();
    let len = b.len();

    // -1 in C; the date parse below then always fails (such a string has
    // length 9 and ends with "-").
    let sep = find_isoformat_datetime_separator(b);
    let (year, month, day) = parse_isoformat_date(b, sep.unwrap_or(usize::MAX))?;

    let mut time = TimeResult::default();
    if let Some(sep) = sep.filter(|&sep| len > sep) {
        // Skip the separator character. The date part parsed successfully,
        // so it is ASCII and `sep` is a character boundary. Step over one
        // UTF-8 sequence, using its lead byte as the C code does.
        let lead = b[sep];
        let step = if lead & 0x80 == 0 {
            1
        } else {
            match lead & 0xf0 {
                0xe0 => 3,
                0xf0 => 4,
                _ => 2,
            }
        };
        let start = (sep + step).min(len);
        time = parse_isoformat_time(&b[start..])?;
    }

    // tzinfo_from_isoformat_results: an offset whose whole-second part is
    // zero becomes timezone.utc, even if it has microseconds.
    let offset_us = match time.tz {
        None => None,
        Some((0, _)) => Some(0),
        Some((secs, us)) => {
            let total = secs * 1_000_000 + us;
            // timezone(): strictly between -24 h and +24 h.
            if total <= -86_400_000_000 || total >= 86_400_000_000 {
                return None;
            }
            Some(total)
        }
    };

    // check_date_args / check_time_args.
    if !(1..=9999).contains(&year) || !(1..=12).contains(&month) {
        return None;
    }
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if !(0..=23).contains(&time.hour)
        || !(0..=59).contains(&time.minute)
        || !(0..=59).contains(&time.second)
        || !(0..=999_999).contains(&time.microsecond)
    {
        return None;
    }

    Some(PyDateTime {
        year,
        month,
        day,
        hour: time.hour,
        minute: time.minute,
        second: time.second,
        microsecond: time.microsecond,
        offset_us,
    })
}

/// C `_find_isoformat_datetime_separator`, on the UTF-8 bytes. `None` is the
/// C code's -1. `b.len() >= 7` is guaranteed by the caller.
fn find_isoformat_datetime_separator(b: &[u8]) -> Option<usize> {
    let len = b.len();
    if len == 7 {
        return Some(7);
    }
    if b[4] == b'-' {
        if b[5] == b'W' {
            // YYYY-W??
            if len > 8 && b[8] == b'-' {
                // YYYY-Www-D (10) or YYYY-Www-HH (8)
                if len == 9 {
                    return None;
                }
                if len > 10 && is_digit(b[10]) {
                    return Some(8);
                }
                Some(10)
            } else {
                // YYYY-Www (8)
                Some(8)
            }
        } else {
            // YYYY-MM-DD (10)
            Some(10)
        }
    } else if b[4] == b'W' {
        // YYYYWww (7) or YYYYWwwd (8)
        let mut idx = 7;
        while idx < len && is_digit(b[idx]) {
            idx += 1;
        }
        if idx < 9 {
            Some(idx)
        } else if idx % 2 == 0 {
            Some(7)
        } else {
            Some(8)
        }
    } else {
        // YYYYMMDD (8)
        Some(8)
    }
}

/// C `parse_isoformat_date`. `len` is the separator position (it only limits
/// whether an ISO weekday follows the week). Returns (year, month, day),
/// not yet range-checked except for week dates.
fn parse_isoformat_date(b: &[u8], len: usize) -> Option<(i64, i64, i64)> {
    let (year, mut p) = parse_digits(b, 0, 4)?;
    let uses_separator = at(b, p) == b'-';
    if uses_separator {
        p += 1;
    }

    if at(b, p) == b'W' {
        p += 1;
        let (iso_week, np) = parse_digits(b, p, 2)?;
        p = np;
        let iso_day = if p < len {
            if uses_separator {
                if at(b, p) != b'-' {
                    return None;
                }
                p += 1;
            }
            parse_digits(b, p, 1)?.0
        } else {
            1
        };
        return iso_to_ymd(year, iso_week, iso_day);
    }

    let (month, np) = parse_digits(b, p, 2)?;
    p = np;
    if uses_separator {
        if at(b, p) != b'-' {
            return None;
        }
        p += 1;
    }
    let (day, _) = parse_digits(b, p, 2)?;
    Some((year, month, day))
}

#[derive(Debug, Default, Clone, Copy)]
struct TimeResult {
    hour: i64,
    minute: i64,
    second: i64,
    microsecond: i64,
    /// (signed whole seconds, signed microseconds) as in C's `tzoffset` and
    /// `tzusec`. `None` means no offset was given.
    tz: Option<(i64, i64)>,
}

/// C `parse_hh_mm_ss_ff` over `b[start..end]`. It may read `b[end]` (the
/// offset sign or the terminator), as the C code does. `Some((rv, [h, m, s, us]))`
/// where `rv` is 1 if there is more input after what was parsed. `None` is a
/// negative C return code.
#[allow(clippy::needless_range_loop)] // `i` also drives the separator logic
fn parse_hh_mm_ss_ff(b: &[u8], start: usize, end: usize) -> Option<(bool, [i64; 4])> {
    let mut vals = [0i64; 4];
    let mut p = start;
    let mut has_separator = true;

    for i in 0..3 {
        let (v, np) = parse_digits(b, p, 2)?;
        vals[i] = v;
        p = np;

        let c = at(b, p);
        p += 1;
        if i == 0 {
            has_separator = c == b':';
        }

        if p >= end {
            return Some((c != 0, vals));
        } else if has_separator && c == b':' {
            continue;
        } else if c == b'.' || c == b',' {
            break;
        } else if !has_separator {
            p -= 1;
        } else {
            return None; // malformed time separator
        }
    }

    // Fraction. Here p < end always holds.
    let len_remains = end.saturating_sub(p);
    let to_parse = len_remains.min(6);
    let (mut us, np) = parse_digits(b, p, to_parse)?;
    p = np;
    const CORRECTION: [i64; 5] = [100_000, 10_000, 1_000, 100, 10];
    if (1..6).contains(&to_parse) {
        us *= CORRECTION[to_parse - 1];
    }
    vals[3] = us;

    // Skip truncated digits. This may run past `end`; C does the same.
    while is_digit(at(b, p)) {
        p += 1;
    }
    Some((at(b, p) != 0, vals))
}

/// C `parse_isoformat_time` on the bytes after the separator.
fn parse_isoformat_time(t: &[u8]) -> Option<TimeResult> {
    let p_end = t.len();

    // do { ... } while (++tzinfo_pos < p_end);
    let mut tz_pos = 0usize;
    loop {
        let c = at(t, tz_pos);
        if c == b'Z' || c == b'+' || c == b'-' {
            break;
        }
        tz_pos += 1;
        if tz_pos >= p_end {
            break;
        }
    }

    let (more, [hour, minute, second, microsecond]) = parse_hh_mm_ss_ff(t, 0, tz_pos)?;
    let mut res = TimeResult {
        hour,
        minute,
        second,
        microsecond,
        tz: None,
    };

    if tz_pos == p_end {
        // No offset, so anything left over is an error.
        return if more { None } else { Some(res) };
    }

    if at(t, tz_pos) == b'Z' {
        if at(t, tz_pos + 1) != 0 {
            return None;
        }
        res.tz = Some((0, 0));
        return Some(res);
    }

    let sign: i64 = if at(t, tz_pos) == b'-' { -1 } else { 1 };
    let (more, [th, tm, ts, tus]) = parse_hh_mm_ss_ff(t, tz_pos + 1, p_end)?;
    if more {
        return None;
    }
    res.tz = Some((sign * (th * 3600 + tm * 60 + ts), sign * tus));
    Some(res)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

fn days_before_month(year: i64, month: i64) -> i64 {
    const DBM: [i64; 13] = [0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    DBM[month as usize] + i64::from(month > 2 && is_leap(year))
}

/// Proleptic Gregorian ordinal, 0001-01-01 = 1. Needs `year >= 1`.
fn ymd_to_ord(year: i64, month: i64, day: i64) -> i64 {
    let y = year - 1;
    y * 365 + y / 4 - y / 100 + y / 400 + days_before_month(year, month) + day
}

/// Inverse of [`ymd_to_ord`] for `ordinal >= 1`.
fn ord_to_ymd(ordinal: i64) -> (i64, i64, i64) {
    const DI400Y: i64 = 146_097;
    const DI100Y: i64 = 36_524;
    const DI4Y: i64 = 1_461;
    let n = ordinal - 1;
    let (n400, n) = (n / DI400Y, n % DI400Y);
    let (n100, n) = (n / DI100Y, n % DI100Y);
    let (n4, n) = (n / DI4Y, n % DI4Y);
    let (n1, n) = (n / 365, n % 365);
    let year = n400 * 400 + 1 + n100 * 100 + n4 * 4 + n1;
    if n1 == 4 || n100 == 4 {
        return (year - 1, 12, 31);
    }
    let mut month = 1;
    while month < 12 && days_before_month(year, month + 1) <= n {
        month += 1;
    }
    (year, month, n - days_before_month(year, month) + 1)
}

/// C `iso_to_ymd`. The year is range-checked later, on the result.
fn iso_to_ymd(iso_year: i64, iso_week: i64, iso_day: i64) -> Option<(i64, i64, i64)> {
    // For year 0 the C code computes ordinals <= 0, which always give an
    // invalid date (month or year out of range). Stop here instead.
    if iso_year < 1 {
        return None;
    }
    if !(1..=52).contains(&iso_week) {
        let mut out_of_range = true;
        if iso_week == 53 {
            // 0 = Monday. Years starting on a Thursday, and leap years
            // starting on a Wednesday, have 53 ISO weeks.
            let first_weekday = (ymd_to_ord(iso_year, 1, 1) + 6) % 7;
            if first_weekday == 3 || (first_weekday == 2 && is_leap(iso_year)) {
                out_of_range = false;
            }
        }
        if out_of_range {
            return None;
        }
    }
    if !(1..=7).contains(&iso_day) {
        return None;
    }
    // iso_week1_monday
    let first_day = ymd_to_ord(iso_year, 1, 1);
    let first_weekday = (first_day + 6) % 7;
    let mut week1_monday = first_day - first_weekday;
    if first_weekday > 3 {
        week1_monday += 7;
    }
    Some(ord_to_ymd(week1_monday + (iso_week - 1) * 7 + iso_day - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn spec_examples() {
        let n = |s: &str| normalize_published_at(s);
        assert_eq!(
            n("2024-01-01T00:00:00Z").as_deref(),
            Some("2024-01-01T00:00:00+00:00")
        );
        assert_eq!(
            n("2024-01-01T12:00:00.000000+00:00").as_deref(),
            Some("2024-01-01T12:00:00+00:00")
        );
        assert_eq!(n("2024-01-01").as_deref(), Some("2024-01-01T00:00:00"));
        assert_eq!(
            n("20240101T120000Z").as_deref(),
            Some("2024-01-01T12:00:00+00:00")
        );
        assert_eq!(n("2024-W01-1").as_deref(), Some("2024-01-01T00:00:00"));
        assert_eq!(n("not-a-date"), None);
        assert_eq!(n(""), None);
    }

    #[test]
    fn format_utc_and_log_timestamp() {
        let t = Utc.with_ymd_and_hms(2026, 11, 24, 21, 13, 15).unwrap();
        assert_eq!(format_utc(t), "2026-11-24T21:13:15+00:00");
        assert_eq!(log_timestamp(t), "2026-11-24T21:13:15Z");
        let t2 = t + chrono::Duration::nanoseconds(563_448_999);
        assert_eq!(format_utc(t2), "2026-11-24T21:13:15.563448+00:00");
        assert_eq!(log_timestamp(t2), "2026-11-24T21:13:15.563448Z");
        // Less than a microsecond: truncated to 0, so omitted.
        let t3 = t + chrono::Duration::nanoseconds(999);
        assert_eq!(format_utc(t3), "2026-11-24T21:13:15+00:00");
        let t4 =
            Utc.with_ymd_and_hms(5, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::microseconds(1);
        assert_eq!(format_utc(t4), "0005-01-02T03:04:05.000001+00:00");
        assert_eq!(log_timestamp(t4), "0005-01-02T03:04:05.000001Z");
    }

    #[test]
    fn now_utc_round_trips() {
        let s = now_utc();
        assert!(s.ends_with("+00:00"), "{s}");
        // Python would parse it back to itself.
        assert_eq!(normalize_published_at(&s).as_deref(), Some(s.as_str()));
    }

    #[test]
    fn ordinal_round_trip() {
        for ord in (1..=3_652_059).step_by(7) {
            let (y, m, d) = ord_to_ymd(ord);
            assert_eq!(ymd_to_ord(y, m, d), ord);
            assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
        }
        assert_eq!(ord_to_ymd(1), (1, 1, 1));
        assert_eq!(ord_to_ymd(3_652_059), (9999, 12, 31));
    }

    #[test]
    fn differential_against_python_3_11() {
        let mut failures = Vec::new();
        for &(input, expected) in CASES {
            let got = normalize_published_at(input);
            if got.as_deref() != expected {
                failures.push(format!("{input:?}: got {got:?}, python {expected:?}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases differ:\n{}",
            failures.len(),
            CASES.len(),
            failures.join("\n")
        );
    }

    /// xorshift64*: a tiny deterministic PRNG, so no extra crates are needed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_mutations_never_panic() {
        const ALPHABET: &[char] = &[
            '0',
            '1',
            '2',
            '5',
            '9',
            '-',
            ':',
            '.',
            ',',
            '+',
            'Z',
            'W',
            'T',
            't',
            'z',
            ' ',
            '\0',
            'x',
            'é',
            '٣',
            '€',
            '𝟘',
            '\u{7f}',
            '\u{80}',
            '\u{10ffff}',
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seeds: Vec<&str> = CASES.iter().map(|c| c.0).collect();
        for _ in 0..200_000 {
            let mut chars: Vec<char> = seeds[rng.below(seeds.len())].chars().collect();
            for _ in 0..=rng.below(4) {
                let pos = if chars.is_empty() {
                    0
                } else {
                    rng.below(chars.len())
                };
                let c = ALPHABET[rng.below(ALPHABET.len())];
                match rng.below(5) {
                    0 if !chars.is_empty() => {
                        chars.remove(pos);
                    }
                    1 if !chars.is_empty() => chars.insert(pos, chars[pos]),
                    2 if !chars.is_empty() => chars[pos] = c,
                    3 => chars.truncate(pos),
                    _ => chars.insert(pos, c),
                }
            }
            let s: String = chars.into_iter().collect();
            if let Some(out) = normalize_published_at(&s) {
                // Python's output always parses back to itself.
                assert_eq!(
                    normalize_published_at(&out).as_deref(),
                    Some(out.as_str()),
                    "{s:?}"
                );
            }
        }
    }

    /// Generated by /work/scratch/isotime/gen.py from Python 3.11.7:
    /// input -> `datetime.fromisoformat(input).isoformat()`, `None` if it raised.
    #[rustfmt::skip]
    const CASES: &[(&str, Option<&str>)] = &[
        ("2024-01-01T00:00:00Z", Some("2024-01-01T00:00:00+00:00")),
        ("2024-01-01T12:00:00.000000+00:00", Some("2024-01-01T12:00:00+00:00")),
        ("2024-01-01", Some("2024-01-01T00:00:00")),
        ("20240101T120000Z", Some("2024-01-01T12:00:00+00:00")),
        ("2024-W01-1", Some("2024-01-01T00:00:00")),
        ("2024W011", Some("2024-01-01T00:00:00")),
        ("2024-W01", Some("2024-01-01T00:00:00")),
        ("2024W01", Some("2024-01-01T00:00:00")),
        ("not-a-date", None),
        ("", None),
        ("2024-01", None),
        ("202401", None),
        ("2024011", None),
        ("2024W0", None),
        ("2024-W0", None),
        ("2024-W1", None),
        ("2024-1-1", None),
        ("24-01-01", None),
        ("2024-01-1", None),
        ("2024-01-0", None),
        ("2024-02-29", Some("2024-02-29T00:00:00")),
        ("2023-02-29", None),
        ("1900-02-29", None),
        ("2000-02-29", Some("2000-02-29T00:00:00")),
        ("2024-02-30", None),
        ("2024-04-31", None),
        ("2024-13-01", None),
        ("2024-00-01", None),
        ("2024-01-00", None),
        ("2024-01-32", None),
        ("0000-01-01", None),
        ("0001-01-01", Some("0001-01-01T00:00:00")),
        ("9999-12-31", Some("9999-12-31T00:00:00")),
        ("9999-12-31T23:59:59.999999", Some("9999-12-31T23:59:59.999999")),
        ("9999-12-31T23:59:59.999999-23:59", Some("9999-12-31T23:59:59.999999-23:59")),
        ("0001-01-01T00:00:00+23:59", Some("0001-01-01T00:00:00+23:59")),
        ("20240229", Some("2024-02-29T00:00:00")),
        ("2024-0101", None),
        ("202401-01", None),
        ("2024/01/01", None),
        ("2020-W53", Some("2020-12-28T00:00:00")),
        ("2020-W53-7", Some("2021-01-03T00:00:00")),
        ("2020W537", Some("2021-01-03T00:00:00")),
        ("2024-W53", None),
        ("2026-W53-1", Some("2026-12-28T00:00:00")),
        ("2015-W53-7", Some("2016-01-03T00:00:00")),
        ("2004-W53-6", Some("2005-01-01T00:00:00")),
        ("2024-W00-1", None),
        ("2024-W54-1", None),
        ("2024-W01-0", None),
        ("2024-W01-8", None),
        ("2024-W52-7", Some("2024-12-29T00:00:00")),
        ("2024W527", Some("2024-12-29T00:00:00")),
        ("2024-W011", None),
        ("2024W01-1", None),
        ("2024-W01-1T12:00", Some("2024-01-01T12:00:00")),
        ("2024-W01T12:00", Some("2024-01-01T12:00:00")),
        ("2024W011T12:00", Some("2024-01-01T12:00:00")),
        ("2024W01T12:00", Some("2024-01-01T12:00:00")),
        ("2024-W01-112:00", None),
        ("2024-W01-1200", Some("2024-01-01T12:00:00")),
        ("2024-W01-12", Some("2024-01-01T12:00:00")),
        ("2024-W01-", None),
        ("2024-W01-1-", None),
        ("2024W0112", None),
        ("2024W01123", Some("2024-01-01T23:00:00")),
        ("2024W011230", None),
        ("2024W0112300", Some("2024-01-01T23:00:00")),
        ("2024W01T1230", Some("2024-01-01T12:30:00")),
        ("2024W0112:30", None),
        ("0000-W01-1", None),
        ("0000-W52-7", None),
        ("0001-W01-1", Some("0001-01-01T00:00:00")),
        ("9999-W52-5", Some("9999-12-31T00:00:00")),
        ("9999-W52-6", None),
        ("9999-W53-1", None),
        ("2009-W53-7", Some("2010-01-03T00:00:00")),
        ("2009-W01-1", Some("2008-12-29T00:00:00")),
        ("1-W01-1", None),
        ("2024-01-01 12:00", Some("2024-01-01T12:00:00")),
        ("2024-01-01t12:00", Some("2024-01-01T12:00:00")),
        ("2024-01-01x12:00", Some("2024-01-01T12:00:00")),
        ("2024-01-0112:00", None),
        ("2024-01-01\u{e9}12:00", Some("2024-01-01T12:00:00")),
        ("2024-01-01\u{20ac}12:00", Some("2024-01-01T12:00:00")),
        ("2024-01-01\u{1f988}12:00", Some("2024-01-01T12:00:00")),
        ("2024-01-01\u{0}12:00", Some("2024-01-01T12:00:00")),
        ("2024-01-01\u{7f}12:00", Some("2024-01-01T12:00:00")),
        ("2024-01-01\u{80}12:00", Some("2024-01-01T12:00:00")),
        ("2024-01-01T", None),
        ("2024-01-01 ", None),
        ("2024-01-01TT12:00", None),
        ("20240101 120000", Some("2024-01-01T12:00:00")),
        ("20240101x1200", Some("2024-01-01T12:00:00")),
        ("2024-01-01\u{e9}", None),
        ("2024-01-01\u{e9}1", None),
        ("2024-01-01\u{e9}12", Some("2024-01-01T12:00:00")),
        ("2024-01-01T12", Some("2024-01-01T12:00:00")),
        ("2024-01-01T1", None),
        ("2024-01-01T123", None),
        ("2024-01-01T1230", Some("2024-01-01T12:30:00")),
        ("2024-01-01T12:30", Some("2024-01-01T12:30:00")),
        ("2024-01-01T12:3", None),
        ("2024-01-01T12:30:4", None),
        ("2024-01-01T12:30:45", Some("2024-01-01T12:30:45")),
        ("2024-01-01T123045", Some("2024-01-01T12:30:45")),
        ("2024-01-01T12:3045", None),
        ("2024-01-01T1230:45", None),
        ("2024-01-01T12::30", None),
        ("2024-01-01T12:30:", None),
        ("2024-01-01T12:30:45.", None),
        ("2024-01-01T12:30:45.1", Some("2024-01-01T12:30:45.100000")),
        ("2024-01-01T12:30:45.12", Some("2024-01-01T12:30:45.120000")),
        ("2024-01-01T12:30:45.123", Some("2024-01-01T12:30:45.123000")),
        ("2024-01-01T12:30:45.1234", Some("2024-01-01T12:30:45.123400")),
        ("2024-01-01T12:30:45.12345", Some("2024-01-01T12:30:45.123450")),
        ("2024-01-01T12:30:45.123456", Some("2024-01-01T12:30:45.123456")),
        ("2024-01-01T12:30:45.1234567", Some("2024-01-01T12:30:45.123456")),
        ("2024-01-01T12:30:45.123456789", Some("2024-01-01T12:30:45.123456")),
        ("2024-01-01T12:30:45,5", Some("2024-01-01T12:30:45.500000")),
        ("2024-01-01T12:30:45.000000", Some("2024-01-01T12:30:45")),
        ("2024-01-01T12:30:45.0000001", Some("2024-01-01T12:30:45")),
        ("2024-01-01T12:30:45.000001", Some("2024-01-01T12:30:45.000001")),
        ("2024-01-01T12.5", Some("2024-01-01T12:00:00.500000")),
        ("2024-01-01T12,5", Some("2024-01-01T12:00:00.500000")),
        ("2024-01-01T12:30.5", Some("2024-01-01T12:30:00.500000")),
        ("2024-01-01T1230.5", Some("2024-01-01T12:30:00.500000")),
        ("2024-01-01T12:30:45:123", Some("2024-01-01T12:30:45.123000")),
        ("2024-01-01T12304578", Some("2024-01-01T12:30:45.780000")),
        ("2024-01-01T1230451", None),
        ("2024-01-01T12:30:45.5x", None),
        ("2024-01-01T12:30:45.1234567x", None),
        ("2024-01-01T12:30:45.1a", None),
        ("2024-01-01T24:00", None),
        ("2024-01-01T24:00:00", None),
        ("2024-12-31T24:00:00", None),
        ("2024-01-01T24:00:00Z", None),
        ("2024-01-01T24", None),
        ("2024-01-01T23:59:59", Some("2024-01-01T23:59:59")),
        ("2024-01-01T23:60", None),
        ("2024-01-01T23:59:60", None),
        ("2024-01-01T12:00:00 ", None),
        ("2024-01-01T 12:00", None),
        ("2024-01-01T12\u{0}", Some("2024-01-01T12:00:00")),
        ("2024-01-01T12\u{0}x", None),
        ("2024-01-01T12:00Z", Some("2024-01-01T12:00:00+00:00")),
        ("2024-01-01T12:00z", None),
        ("2024-01-01T12:00Z ", None),
        ("2024-01-01T12:00ZZ", None),
        ("2024-01-01T12:00Z+01:00", None),
        ("2024-01-01T12:00+01:00Z", None),
        ("2024-01-01T12:00Z\u{0}", Some("2024-01-01T12:00:00+00:00")),
        ("2024-01-01T12:00+01", Some("2024-01-01T12:00:00+01:00")),
        ("2024-01-01T12:00+1", None),
        ("2024-01-01T12:00+011", None),
        ("2024-01-01T12:00+0130", Some("2024-01-01T12:00:00+01:30")),
        ("2024-01-01T12:00+01:30", Some("2024-01-01T12:00:00+01:30")),
        ("2024-01-01T12:00+01:3", None),
        ("2024-01-01T12:00+01:", None),
        ("2024-01-01T12:00+", None),
        ("2024-01-01T12:00-", None),
        ("2024-01-01T12:00+013000", Some("2024-01-01T12:00:00+01:30")),
        ("2024-01-01T12:00+01:30:00", Some("2024-01-01T12:00:00+01:30")),
        ("2024-01-01T12:00+01:30:15", Some("2024-01-01T12:00:00+01:30:15")),
        ("2024-01-01T12:00+01:30:15.5", Some("2024-01-01T12:00:00+01:30:15.500000")),
        ("2024-01-01T12:00+01:30:15.123456", Some("2024-01-01T12:00:00+01:30:15.123456")),
        ("2024-01-01T12:00+01:30:15.1234567", Some("2024-01-01T12:00:00+01:30:15.123456")),
        ("2024-01-01T12:00+013015.5", Some("2024-01-01T12:00:00+01:30:15.500000")),
        ("2024-01-01T12:00+01:00.5", Some("2024-01-01T12:00:00+01:00:00.500000")),
        ("2024-01-01T12:00+00:00", Some("2024-01-01T12:00:00+00:00")),
        ("2024-01-01T12:00-00:00", Some("2024-01-01T12:00:00+00:00")),
        ("2024-01-01T12:00+0000", Some("2024-01-01T12:00:00+00:00")),
        ("2024-01-01T12:00-0000", Some("2024-01-01T12:00:00+00:00")),
        ("2024-01-01T12:00+00", Some("2024-01-01T12:00:00+00:00")),
        ("2024-01-01T12:00-00", Some("2024-01-01T12:00:00+00:00")),
        ("2024-01-01T12:00+00:00:00.5", Some("2024-01-01T12:00:00+00:00")),
        ("2024-01-01T12:00-00:00:00.5", Some("2024-01-01T12:00:00+00:00")),
        ("2024-01-01T12:00-00:00:01", Some("2024-01-01T12:00:00-00:00:01")),
        ("2024-01-01T12:00-00:00:01.5", Some("2024-01-01T12:00:00-00:00:01.500000")),
        ("2024-01-01T12:00-01:00:00.25", Some("2024-01-01T12:00:00-01:00:00.250000")),
        ("2024-01-01T12:00+01:99", Some("2024-01-01T12:00:00+02:39")),
        ("2024-01-01T12:00+01:60", Some("2024-01-01T12:00:00+02:00")),
        ("2024-01-01T12:00+23:59", Some("2024-01-01T12:00:00+23:59")),
        ("2024-01-01T12:00-23:59", Some("2024-01-01T12:00:00-23:59")),
        ("2024-01-01T12:00+23:59:59.999999", Some("2024-01-01T12:00:00+23:59:59.999999")),
        ("2024-01-01T12:00-23:59:59.999999", Some("2024-01-01T12:00:00-23:59:59.999999")),
        ("2024-01-01T12:00+24:00", None),
        ("2024-01-01T12:00-24:00", None),
        ("2024-01-01T12:00+23:59:60", None),
        ("2024-01-01T12:00+99:99", None),
        ("2024-01-01T12:00+01:00x", None),
        ("2024-01-01T12:00+0100x", None),
        ("2024-01-01T12:00+01:00:", None),
        ("2024-01-01T12:00+01:00:00.", None),
        ("2024-01-01T12:00+01:00:00.1x", None),
        ("2024-01-01T12:00+01:00:00.1234567x", None),
        ("2024-01-01T12x+01:00", Some("2024-01-01T12:00:00+01:00")),
        ("2024-01-01T12:00x+01:00", Some("2024-01-01T12:00:00+01:00")),
        ("2024-01-01T12:00:00x+01:00", Some("2024-01-01T12:00:00+01:00")),
        ("2024-01-01T12:00:00.+01:00", Some("2024-01-01T12:00:00+01:00")),
        ("2024-01-01T12:00:00.5x+01:00", None),
        ("2024-01-01T12:00:00.123456x+01:00", Some("2024-01-01T12:00:00.123456+01:00")),
        ("2024-01-01T12:00:00.1234567x+01:00", Some("2024-01-01T12:00:00.123456+01:00")),
        ("2024-01-01T12:00:00.12345x+01:00", None),
        ("2024-01-01T+01:00", None),
        ("2024-01-01TZ", None),
        ("2024-01-01T12-", None),
        ("2024-01-01T12+01:00", Some("2024-01-01T12:00:00+01:00")),
        ("2024-01-01T12Z", Some("2024-01-01T12:00:00+00:00")),
        ("2024-01-01T12-05", Some("2024-01-01T12:00:00-05:00")),
        ("2024-01-01T12:00-05:30", Some("2024-01-01T12:00:00-05:30")),
        ("2024-01-01T12:00+05:45", Some("2024-01-01T12:00:00+05:45")),
        ("2024-01-01T12:00+0545", Some("2024-01-01T12:00:00+05:45")),
        ("2024-01-01T12:00:00+01:00:00+01:00", None),
        ("2024-01-01T12:00:00-01:00-01:00", None),
        ("2024-01-01T12:00\u{e9}+01:00", None),
        ("\u{662}\u{660}\u{662}\u{664}-01-01", None),
        ("2024-01-0\u{661}", None),
        ("2024-01- 1", None),
        ("2024-01-+1", None),
        ("2024-01-0_1", None),
        (" 2024-01-01", None),
        ("2024-01-01T1_:00", None),
        ("+024-01-01", None),
        ("-024-01-01", None),
        ("\u{1d7d8}\u{1d7d8}\u{1d7d8}\u{1d7d9}-01-01", None),
        ("2024-01-01T12:00+\u{660}\u{661}:00", None),
        ("2026-11-24T21:13:15.563448+00:00", Some("2026-11-24T21:13:15.563448+00:00")),
        ("2026-11-24T21:13:15+00:00", Some("2026-11-24T21:13:15+00:00")),
        ("2026-11-24T21:13:15.200233", Some("2026-11-24T21:13:15.200233")),
        ("9999-W22 17:38:19", Some("9999-05-31T17:38:19")),
        ("9999W25T11:36:11,201592", Some("9999-06-21T11:36:11.201592")),
        ("9999-06-02T20Z", Some("9999-06-02T20:00:00+00:00")),
        ("0001-04-16T2310+004136.264136", Some("0001-04-16T23:10:00+00:41:36.264136")),
        ("2024W323T213450", Some("2024-08-07T21:34:50")),
        ("1900-W08-5", Some("1900-02-23T00:00:00")),
        ("20241004T2049+061735.212156", Some("2024-10-04T20:49:00+06:17:35.212156")),
        ("2024-W19T1639-10:07:12.936478", Some("2024-05-06T16:39:00-10:07:12.936478")),
        ("1900W07", Some("1900-02-12T00:00:00")),
        ("0001W284\u{e9}05:12:03.71918182-130000.555468", Some("0001-07-12T05:12:03.719181-13:00:00.555468")),
        ("2000W371x02:20:11Z", Some("2000-09-11T02:20:11+00:00")),
        ("0001W026x15:36-005152", Some("0001-01-13T15:36:00-00:51:52")),
        ("2029-03-17T15-0000", Some("2029-03-17T15:00:00+00:00")),
        ("0001-W24T20:58-08:14:30", Some("0001-06-11T20:58:00-08:14:30")),
        ("99990307T05:08", Some("9999-03-07T05:08:00")),
        ("1900-05-30t08:00:11,03379745+00:00", Some("1900-05-30T08:00:11.033797+00:00")),
        ("2001-W02-4T15-23:56", Some("2001-01-11T15:00:00-23:56")),
        ("00011222\u{e9}01:56:17+19:35", Some("0001-12-22T01:56:17+19:35")),
        ("99990529t02", Some("9999-05-29T02:00:00")),
        ("2000W19T01:19Z", Some("2000-05-08T01:19:00+00:00")),
        ("2024-W47-6t18:52:29Z", Some("2024-11-23T18:52:29+00:00")),
        ("0001W33x04:48:45", Some("0001-08-13T04:48:45")),
        ("2024W18", Some("2024-04-29T00:00:00")),
        ("1355-04-17t07Z", Some("1355-04-17T07:00:00+00:00")),
        ("9999-W15T04-15:16", Some("9999-04-12T04:00:00-15:16")),
        ("1442-W35 13:05:24,424263017", Some("1442-08-29T13:05:24.424263")),
        ("1900W305T21", Some("1900-07-27T21:00:00")),
        ("0001W18\u{e9}163123,8271+00:00", Some("0001-04-30T16:31:23.827100+00:00")),
        ("1900W534T04:54:38,846+0000", None),
        ("9999W49", Some("9999-12-06T00:00:00")),
        ("1994W29T00:14:25", Some("1994-07-18T00:14:25")),
        ("9999W086T01:05:16.785", Some("9999-02-27T01:05:16.785000")),
        ("00010329T1544", Some("0001-03-29T15:44:00")),
        ("2000W323 09Z", Some("2000-08-09T09:00:00+00:00")),
        ("0001-W31-2x22+12:57", Some("0001-07-31T22:00:00+12:57")),
        ("1900-12-10 20:51:17.5787Z", Some("1900-12-10T20:51:17.578700+00:00")),
        ("1900W096T03-13:04:00.618149", Some("1900-03-03T03:00:00-13:04:00.618149")),
        ("20020823T0806", Some("2002-08-23T08:06:00")),
        ("2000W411", Some("2000-10-09T00:00:00")),
        ("2000-W15-4T14:31:46-0000", Some("2000-04-13T14:31:46+00:00")),
        ("9999W062T14:39Z", Some("9999-02-09T14:39:00+00:00")),
        ("20260910T08+02:58:54.785631", Some("2026-09-10T08:00:00+02:58:54.785631")),
        ("20240405\u{e9}0406", Some("2024-04-05T04:06:00")),
        ("1900W25T13:32+16:02", Some("1900-06-18T13:32:00+16:02")),
        ("2000-W46-5T141247-00:00", Some("2000-11-17T14:12:47+00:00")),
        ("2000W26\u{e9}17:35-153950", Some("2000-06-26T17:35:00-15:39:50")),
        ("0001-12-08T043049.134620Z", Some("0001-12-08T04:30:49.134620+00:00")),
        ("7630-03-07T19:22", Some("7630-03-07T19:22:00")),
        ("2000W51T01-00:00", Some("2000-12-18T01:00:00+00:00")),
        ("2000-W18-7 00:22:44", Some("2000-05-07T00:22:44")),
        ("0001-W30T02:05-221600.061590", Some("0001-07-23T02:05:00-22:16:00.061590")),
        ("1900-W22T16:17:51", Some("1900-05-28T16:17:51")),
        ("2000W094T075618,683397+16:38", Some("2000-03-02T07:56:18.683397+16:38")),
        ("0001W105T00", Some("0001-03-09T00:00:00")),
        ("2017W25T19:59-165400.984320", Some("2017-06-19T19:59:00-16:54:00.984320")),
        ("2543W08x14:31", Some("2543-02-18T14:31:00")),
        ("92860211T08:23:12-0338", Some("9286-02-11T08:23:12-03:38")),
        ("0001-07-22\u{e9}08-12:30:00", Some("0001-07-22T08:00:00-12:30")),
        ("9999-W10-4T19:16", Some("9999-03-11T19:16:00")),
        ("99990824T01:29-04:41:00.011028", Some("9999-08-24T01:29:00-04:41:00.011028")),
        ("20240308", Some("2024-03-08T00:00:00")),
        ("2000-W26x13:38:12", Some("2000-06-26T13:38:12")),
        ("20240601", Some("2024-06-01T00:00:00")),
        ("0443W487T02Z", Some("0443-11-29T02:00:00+00:00")),
        ("9764W044 19:21-0000", Some("9764-01-26T19:21:00+00:00")),
        ("0730-W30-2", Some("0730-07-22T00:00:00")),
        ("00011123T123441.3-0000", Some("0001-11-23T12:34:41.300000+00:00")),
        ("19000407T07-08", Some("1900-04-07T07:00:00-08:00")),
        ("9999W351T14Z", Some("9999-08-30T14:00:00+00:00")),
        ("5223-W08-7T12:45Z", Some("5223-02-26T12:45:00+00:00")),
        ("1900-W33", Some("1900-08-13T00:00:00")),
        ("5190-W03T06-22:24:00", Some("5190-01-15T06:00:00-22:24")),
        ("1900W065", Some("1900-02-09T00:00:00")),
        ("2024-W17t00-18:33", Some("2024-04-22T00:00:00-18:33")),
        ("0001-08-11T20+00", Some("0001-08-11T20:00:00+00:00")),
        ("20001103t05-00:00", Some("2000-11-03T05:00:00+00:00")),
        ("2000-W04-3T19+09:18", Some("2000-01-26T19:00:00+09:18")),
        ("9999W362T06", Some("9999-09-07T06:00:00")),
        ("1900-02-11T17Z", Some("1900-02-11T17:00:00+00:00")),
        ("0001-W20T20+1807", Some("0001-05-14T20:00:00+18:07")),
        ("4216W305T12:02", Some("4216-07-26T12:02:00")),
        ("9999-W50-7T16:04:08-00:00", Some("9999-12-19T16:04:08+00:00")),
        ("1900W31T23:46", Some("1900-07-30T23:46:00")),
        ("2024W44T18:08+09:01:00.934813", Some("2024-10-28T18:08:00+09:01:00.934813")),
        ("1900-W05-5", Some("1900-02-02T00:00:00")),
        ("2013W40 10:15+0000", Some("2013-09-30T10:15:00+00:00")),
        ("7719-07-29\u{e9}01:25:55-17", Some("7719-07-29T01:25:55-17:00")),
        ("1900-W50-5", Some("1900-12-14T00:00:00")),
        ("19000430T15:58:29", Some("1900-04-30T15:58:29")),
        ("0001-W18-5T14:10+0000", Some("0001-05-04T14:10:00+00:00")),
        ("8456-02-04\u{e9}07-00:00", Some("8456-02-04T07:00:00+00:00")),
        ("2000-05-11T03:00:05,8", Some("2000-05-11T03:00:05.800000")),
        ("2001-07-17T0642", Some("2001-07-17T06:42:00")),
        ("0001-10-30T22:31:55", Some("0001-10-30T22:31:55")),
        ("20000103T20Z", Some("2000-01-03T20:00:00+00:00")),
        ("8070-W22-7", Some("8070-06-01T00:00:00")),
        ("0001-W15t07:39", Some("0001-04-09T07:39:00")),
        ("2024W03 10+0000", Some("2024-01-15T10:00:00+00:00")),
        ("99991125x1124", Some("9999-11-25T11:24:00")),
        ("2012-W51T14", Some("2012-12-17T14:00:00")),
        ("2024-06-18T06:37+21", Some("2024-06-18T06:37:00+21:00")),
        ("1900-W20T05:49:44.595860-07:17", Some("1900-05-14T05:49:44.595860-07:17")),
        ("1900-W06", Some("1900-02-05T00:00:00")),
        ("0001-01-20x000811", Some("0001-01-20T00:08:11")),
        ("9999W094T18:29Z", Some("9999-03-04T18:29:00+00:00")),
        ("2000-12-23", Some("2000-12-23T00:00:00")),
        ("7359W105x02:36:34-13:57", Some("7359-03-09T02:36:34-13:57")),
        ("1638W31T1639Z", Some("1638-08-02T16:39:00+00:00")),
        ("2024-W23T19+0000", Some("2024-06-03T19:00:00+00:00")),
        ("9839W45", Some("9839-11-04T00:00:00")),
        ("2016W351T07", Some("2016-08-29T07:00:00")),
        ("20230602\u{e9}19:03:09.77", Some("2023-06-02T19:03:09.770000")),
        ("1900-W30T20:03+00:00", Some("1900-07-23T20:03:00+00:00")),
        ("9999W02T12:22:28", Some("9999-01-11T12:22:28")),
        ("1995W01 1813-22:14:38", Some("1995-01-02T18:13:00-22:14:38")),
        ("2000W382T175243.21454884Z", Some("2000-09-19T17:52:43.214548+00:00")),
        ("0001W27T13Z", Some("0001-07-02T13:00:00+00:00")),
        ("9999W345T06:49-19:04:00.079930", Some("9999-08-27T06:49:00-19:04:00.079930")),
        ("20090221", Some("2009-02-21T00:00:00")),
        ("6063W044T13-10:14:00", Some("6063-01-25T13:00:00-10:14")),
        ("2024-W41-7T09-05:57:00", Some("2024-10-13T09:00:00-05:57")),
        ("99991212T02:24", Some("9999-12-12T02:24:00")),
        ("2153-W50T06:01:47Z", Some("2153-12-10T06:01:47+00:00")),
        ("2000-W36-6T02Z", Some("2000-09-09T02:00:00+00:00")),
        ("99991219\u{e9}15:08:46,56328615", Some("9999-12-19T15:08:46.563286")),
        ("0001W112t11+07:49:00", Some("0001-03-13T11:00:00+07:49")),
        ("0001-W49T10+22:32", Some("0001-12-03T10:00:00+22:32")),
        ("2024-W52T06", Some("2024-12-23T06:00:00")),
        ("2395-09-14T07:32", Some("2395-09-14T07:32:00")),
        ("5877-W08-7 14", Some("5877-02-25T14:00:00")),
        ("9999W17T10:41", Some("9999-04-26T10:41:00")),
        ("1900W217T08", Some("1900-05-27T08:00:00")),
        ("7180W36T1712+0000", Some("7180-09-01T17:12:00+00:00")),
        ("2022-W41-3T21", Some("2022-10-12T21:00:00")),
        ("8955-W13T09:19", Some("8955-03-24T09:19:00")),
        ("2000-W30-2", Some("2000-07-25T00:00:00")),
        ("1900-W47t09:26:51", Some("1900-11-19T09:26:51")),
        ("20240212\u{e9}231030.5056433-05:20:45.061505", Some("2024-02-12T23:10:30.505643-05:20:45.061505")),
        ("2885-08-27t13:50:06-11:22:00", Some("2885-08-27T13:50:06-11:22")),
        ("0001W21T21:08", Some("0001-05-21T21:08:00")),
        ("0001-W01-4x01:33:54,47048720Z", Some("0001-01-04T01:33:54.470487+00:00")),
        ("2023-11-26t180124", Some("2023-11-26T18:01:24")),
        ("9999W051T19Z", Some("9999-02-01T19:00:00+00:00")),
        ("2000W20\u{e9}15+0000", Some("2000-05-15T15:00:00+00:00")),
        ("6030W20 054410+18", Some("6030-05-13T05:44:10+18:00")),
        ("2024W063x234133Z", Some("2024-02-07T23:41:33+00:00")),
        ("2025-12-20T17:41+00", Some("2025-12-20T17:41:00+00:00")),
        ("2000-W19t18:53:17-22:18:00.993603", Some("2000-05-08T18:53:17-22:18:00.993603")),
        ("20240106t10:29", Some("2024-01-06T10:29:00")),
        ("2000W402T0249+1116", Some("2000-10-03T02:49:00+11:16")),
        ("2029-01-26", Some("2029-01-26T00:00:00")),
        ("0001W22T11:10-152900", Some("0001-05-28T11:10:00-15:29")),
        ("1900W31t19-00:00", Some("1900-07-30T19:00:00+00:00")),
        ("9999-W22T132529.3+16", Some("9999-05-31T13:25:29.300000+16:00")),
        ("0001-W44-4T062245+0000", Some("0001-11-01T06:22:45+00:00")),
        ("20000209", Some("2000-02-09T00:00:00")),
        ("0001W31T11:57", Some("0001-07-30T11:57:00")),
        ("0001W502x20", Some("0001-12-11T20:00:00")),
        ("0001-W40T0027-0000", Some("0001-10-01T00:27:00+00:00")),
        ("2000-W11-3t07:52:21Z", Some("2000-03-15T07:52:21+00:00")),
        ("2030-W43T0009+12", Some("2030-10-21T00:09:00+12:00")),
        ("0001W40T01:26", Some("0001-10-01T01:26:00")),
        ("0001-09-21 06:55", Some("0001-09-21T06:55:00")),
        ("0001-W18T13:18:02", Some("0001-04-30T13:18:02")),
        ("2024-08-02T02", Some("2024-08-02T02:00:00")),
        ("1900-10-26\u{e9}13:05:12.5Z", Some("1900-10-26T13:05:12.500000+00:00")),
        ("2024-W13 12:47:33.49", Some("2024-03-25T12:47:33.490000")),
        ("2024-W41-2T12:56:37.2590999+18", Some("2024-10-08T12:56:37.259099+18:00")),
        ("0001-12-04x14:39+17:47:00", Some("0001-12-04T14:39:00+17:47")),
        ("2013W503x19", Some("2013-12-11T19:00:00")),
        ("60840720T11-06:30:00", Some("6084-07-20T11:00:00-06:30")),
        ("2000W291\u{e9}02:36Z", Some("2000-07-17T02:36:00+00:00")),
        ("2024W136t05:22:01,0902-205100.394980", Some("2024-03-30T05:22:01.090200-20:51:00.394980")),
        ("9999W142", Some("9999-04-06T00:00:00")),
        ("2024-W02T07+00:00", Some("2024-01-08T07:00:00+00:00")),
        ("9999W52x0051-00:00", Some("9999-12-27T00:51:00+00:00")),
        ("2000-W51T032259.680+00:00:00.580819", Some("2000-12-18T03:22:59.680000+00:00")),
        ("1900-W20-1 01:46-17:50:00", Some("1900-05-14T01:46:00-17:50")),
        ("9999W214t0634Z", Some("9999-05-27T06:34:00+00:00")),
        ("2000-W36-6T0453Z", Some("2000-09-09T04:53:00+00:00")),
        ("2025-W28-6x03", Some("2025-07-12T03:00:00")),
        ("1900-03-11 01-012700", Some("1900-03-11T01:00:00-01:27")),
        ("9999-W16-5\u{e9}10:34:46,4097203", Some("9999-04-23T10:34:46.409720")),
        ("1900-03-24", Some("1900-03-24T00:00:00")),
        ("0001-12-06x14-13:47", Some("0001-12-06T14:00:00-13:47")),
        ("2024W35 02Z", Some("2024-08-26T02:00:00+00:00")),
        ("2000-04-12T08+04:30", Some("2000-04-12T08:00:00+04:30")),
        ("2024W173T19:45+03", Some("2024-04-24T19:45:00+03:00")),
        ("2014W44T11:50:59,6019", Some("2014-10-27T11:50:59.601900")),
        ("2002W034T2148-00:00", Some("2002-01-17T21:48:00+00:00")),
        ("2000-W22 00", Some("2000-05-29T00:00:00")),
        ("7139W395\u{e9}1310-13", Some("7139-09-29T13:10:00-13:00")),
        ("2024W397T18:25", Some("2024-09-29T18:25:00")),
        ("6256-W31-6T09:28:57.1516126Z", Some("6256-08-02T09:28:57.151612+00:00")),
        ("2443-W35", Some("2443-08-24T00:00:00")),
        ("2000W322T03+16", Some("2000-08-08T03:00:00+16:00")),
        ("1034-12-16t17+0000", Some("1034-12-16T17:00:00+00:00")),
        ("00011012 01:32:11+00:00", Some("0001-10-12T01:32:11+00:00")),
        ("20240906T0358+0654", Some("2024-09-06T03:58:00+06:54")),
        ("9999-W27\u{e9}03", Some("9999-07-05T03:00:00")),
        ("1995-W07-3t12+09", Some("1995-02-15T12:00:00+09:00")),
        ("2024W38\u{e9}03+00:00", Some("2024-09-16T03:00:00+00:00")),
        ("2000-W43T21Z", Some("2000-10-23T21:00:00+00:00")),
        ("2024-W12-4x14", Some("2024-03-21T14:00:00")),
        ("9999-W27-7T16:15:14,3Z", Some("9999-07-11T16:15:14.300000+00:00")),
        ("2024W49", Some("2024-12-02T00:00:00")),
        ("0001-06-03t04+0000", Some("0001-06-03T04:00:00+00:00")),
        ("0001W153 04:03-00:00", Some("0001-04-11T04:03:00+00:00")),
        ("19000319T10Z", Some("1900-03-19T10:00:00+00:00")),
        ("9999-W23-2T16:54:27,00259", Some("9999-06-08T16:54:27.002590")),
        ("9999-09-20T04", Some("9999-09-20T04:00:00")),
        ("00010211T03:48-20:40", Some("0001-02-11T03:48:00-20:40")),
        ("6963W192\u{e9}12", Some("6963-05-10T12:00:00")),
        ("2000-W05-4T13", Some("2000-02-03T13:00:00")),
        ("06481216", Some("0648-12-16T00:00:00")),
        ("2000-W49-6\u{e9}00:24Z", Some("2000-12-09T00:24:00+00:00")),
        ("9999-12-24t11:38:47,24+0000", Some("9999-12-24T11:38:47.240000+00:00")),
        ("2000W22t00:11+00:00", Some("2000-05-29T00:11:00+00:00")),
        ("1900W37\u{e9}121235.8222+08:40:00", Some("1900-09-10T12:12:35.822200+08:40")),
        ("2000W50x09:46:57+09:48:00", Some("2000-12-11T09:46:57+09:48")),
        ("2024-W34x16+18", Some("2024-08-19T16:00:00+18:00")),
        ("2000-W09T02:21-12:53", Some("2000-02-28T02:21:00-12:53")),
        ("2024W287T23:23:15,9369098+0000", Some("2024-07-14T23:23:15.936909+00:00")),
        ("0001W252T09", Some("0001-06-19T09:00:00")),
        ("01910909", Some("0191-09-09T00:00:00")),
        ("2000-06-30x071510", Some("2000-06-30T07:15:10")),
        ("20240226T09:32:59-00:00", Some("2024-02-26T09:32:59+00:00")),
        ("19000422T02", Some("1900-04-22T02:00:00")),
        ("2000-W33-1 15:31-00:00", Some("2000-08-14T15:31:00+00:00")),
        ("2008-04-12T07:45+04", Some("2008-04-12T07:45:00+04:00")),
        ("0001W36T08:59:45.840Z", Some("0001-09-03T08:59:45.840000+00:00")),
        ("1900-W31-3T13:14", Some("1900-08-01T13:14:00")),
        ("9999W284t00:18:33", Some("9999-07-15T00:18:33")),
        ("5015W366", Some("5015-09-09T00:00:00")),
        ("9999-06-09t17", Some("9999-06-09T17:00:00")),
        ("99990410T17:54", Some("9999-04-10T17:54:00")),
        ("9486-W41 00-20", Some("9486-10-11T00:00:00-20:00")),
        ("20000330T1156-0708", Some("2000-03-30T11:56:00-07:08")),
        ("2024W04T00Z", Some("2024-01-22T00:00:00+00:00")),
        ("9999-W48-5T08:08:59", Some("9999-12-03T08:08:59")),
        ("20000503\u{e9}07:30:33", Some("2000-05-03T07:30:33")),
        ("2021W48x1242-12:06:00", Some("2021-11-29T12:42:00-12:06")),
        ("2024W327T1750-22:00:00", Some("2024-08-11T17:50:00-22:00")),
        ("2020-W38-3T19:12-122800", Some("2020-09-16T19:12:00-12:28")),
        ("20241204\u{e9}00:40:51", Some("2024-12-04T00:40:51")),
        ("2000W35", Some("2000-08-28T00:00:00")),
        ("1900-W50-3", Some("1900-12-12T00:00:00")),
        ("2024-10-25T01Z", Some("2024-10-25T01:00:00+00:00")),
        ("4929W17T11", Some("4929-04-25T11:00:00")),
        ("1900-W22-6T18:00:53.90", Some("1900-06-02T18:00:53.900000")),
        ("6030W20024410+18", None),
        ("0001W153 04:03-500:00", None),
        ("20260950T08+02:18:54.785631", None),
        ("202404-31", None),
        ("202T4-01-01T123,:4505", None),
        ("9999-W22T1332529.3+16", None),
        ("202W1", None),
        ("99990W294t06634Z", None),
        ("20221 04\u{e9}00:40:51", None),
        ("99999-W22T133529.3+1x", None),
        ("2000-04-12T08+0:30", None),
        ("2024-01-0T112-", None),
        ("2024-01-01T12:007+01:00:", None),
        ("2024-01-01T24::500:0", None),
        ("0001-W18T13::18:02", None),
        ("2624W4", None),
        ("2024-W47-6t188:52:z9Z", None),
        ("2024-01-01T23:::159:60", None),
        ("2024\u{20ac}01-01-12:00", None),
        ("9024-01-01T12:300+0000", Some("9024-01-01T12:30:00+00:00")),
        ("1442-W35 23:05:24,424263017", Some("1442-08-29T23:05:24.424263")),
        ("2124-Z0-01T12:000 ", None),
        ("6030020 05441W+18", None),
        ("2024-W13 1\u{663}:47:33.49", None),
        ("1900-W20-1:01::46-17:50 00", None),
        ("310344-12-16t17+0000", None),
        ("9199-09-20T004", None),
        ("1900-W551", None),
        ("20+4-01-01T12:00201:00.5", None),
        ("000-W30T02:05-221600.0610390", None),
        ("2000W094T07z618,683397+16:3", None),
        ("9999-W\u{e9}2T132529.3+16", None),
        ("24-00-01", None),
        ("0001W0226x16:36-005152", None),
        ("20294-01--011_:00", None),
        ("9939911255x1124", None),
        ("202-01-01TT", None),
        ("0001-49T10+2032", None),
        ("20244/01//01", None),
        ("2024-01-01T12345", None),
        ("2044-01-01T1230251", None),
        ("2024005\u{e9}004006", None),
        ("99999-W50-7T16:04:08-00:0", None),
        (",900-W10-5", None),
        ("2024-01-01T12:00::00.1234567x+01:00", None),
        ("2024011-01T1233", None),
        ("0301-W44+4T0622455-0000", None),
        ("2024001-01T10:25-01:00:0-.20", None),
        ("42024-01", None),
        ("949W362T6", None),
        ("1900W3105T21", None),
        ("2 000-W 2200", None),
        ("204T-01-01T12+01:0", None),
        ("1994W29T00\u{e9}14:25", None),
        ("2008-04-12T507:45+04", None),
        ("2024-W19T1639+10:x7:12.936478", None),
        ("00W1040T01:26", None),
        ("202-W41-3T21", None),
        ("0001W153 -04:0\u{0}-00:00", None),
        ("9999W086T01:t5:16.785", None),
        ("9999-12-31T23:59:59.999999-23:5", None),
        ("-0242z1-01T12:00+01300", None),
        ("2024-3\u{20ac}-01\u{e9}\u{e9}12:00", None),
        ("71800641712+000W", None),
        ("2024-01-01T12:00:00.000010+00:00", Some("2024-01-01T12:00:00.000010+00:00")),
        ("6024-01-01T12:00ZZ", None),
        ("2024-05-01T11:30:42", Some("2024-05-01T11:30:42")),
        ("2050-W53", None),
        ("999-09-20T04", None),
        ("0001-W202+W807", None),
        ("2024-W42T07+00:00", Some("2024-10-14T07:00:00+00:00")),
        ("2024-01-01TT23:59:59", None),
        ("2024-01-01T120:0-05:30", None),
        ("20000W2919\u{e9}02:26Z", None),
        ("2024-01--0112-5", None),
        ("2024-W066-12", None),
        ("2024-01-01T\u{20ac}z\u{0}x", None),
        ("99399-W23-2T6:52:27,00259", None),
        ("2024-01-301T12:00Z+01:00", None),
        ("2000-W366-6T0457\u{20ac}Z", None),
        ("0024-001-21T12:00+00:00", None),
        ("024-01-70\u{661}", None),
        ("2000103t05-90:00", None),
        ("92860211T08:23:120-338", None),
        ("99099W351T14Z", None),
        ("2294-01-01\u{1f988}1\u{e9}2:00", None),
        ("10z-W018-5", None),
        (" 0350-T43W0009+12", None),
        ("2025-01-601T12:00+01:60", None),
        ("20000310T1356-0708", Some("2000-03-10T13:56:00-07:08")),
        ("2024-01--01T12,5", None),
        ("20003703\u{e9}05:36:30", None),
        ("2004-01-01TT12:02+013000", None),
        ("0000-01--01", None),
        ("1900-110-26\u{e9}13:055:12.5Z", None),
        ("020x-W533", None),
        ("62024T-01-0112:00", None),
        ("240229", None),
        ("21024-W01", None),
        ("2024-0-0\u{e9}1T12:00+01:301:5.5", None),
        ("202-01-01T12-00+01::3", None),
        ("2024-010-01T12x30::45.000001", None),
        ("000-W5222-7", None),
        ("2024501+1", None),
        ("5190-W03T0622:24:00", None),
        ("135-04-17t7Z", None),
        ("2054-01-01T12:00+99:99", None),
        ("322024-01-01T12:3", None),
        ("20244-001-0__1", None),
        ("2024W01T12::00", None),
        ("202-01001T24\u{e9}-0:00", None),
        ("0009-W8T13:180:2", None),
        ("2024-01-01T122:30:4501234", None),
        ("8001-00-11T20+00", None),
        ("1900-W311-3TT313:14", None),
        ("2024-01-01T12:00Z:0\u{1f988}0.12347x+01:00", None),
        ("202440601", None),
        ("2024--01-91T11230", None),
        ("20241z04\u{e9}00:40::51", None),
        ("9999-12-24t11:38:47,24+000", None),
        ("9486-W41 00-200", None),
        ("000WW36T08:59:45.84Z", None),
        ("93990x410T17:54", None),
        ("\u{0}515W366", None),
        ("2065--W53-7", None),
        ("2000W26\u{e9}17:32-153950", Some("2000-06-26T17:32:00-15:39:50")),
        ("2W15-W53-", None),
        ("2420-011", None),
        ("2000WW4402T0249+1116", None),
        ("2999WW2T12:29:28", None),
        ("19007W05", None),
        ("99990415T57:04", None),
        ("z2026-11-24T21:13:15.200233", None),
        ("2024-01-01T126:30.5", None),
        ("2024-01-01T12:00+00:000:005.", None),
        ("2024-06-18T0066:37+21", None),
        ("1900431T23: W6", None),
        ("2000-W33-1 15:31-00:t00", None),
        ("2020-01-01T 12:04", None),
        ("80W0-722-7", None),
        ("202401-1-", None),
        ("0001006-03t04+0-00", None),
        ("2T24-01701012:30.5", None),
        ("420214-01-01 ", None),
        ("2024-01-01\u{663}T12:0+z01:99", None),
        ("2024--01-01T12:00\u{1f988}Z ", None),
        ("20241,1-0-T12:00:00x+01:00", None),
        ("2024-01-01T2444Z:00:00", None),
        ("1z994W229T00:14:25", None),
        ("2023\u{e9}11", None),
        ("2024-0110-T 12:00", None),
        ("201--02-01", None),
        ("0001:W40T01:26", None),
        ("1900W096T023-13:04:00.618.1149", None),
        ("20244-01-01t2:00", None),
        ("2024-01--01T12:00+00:00", None),
        ("999W362T06", None),
        ("0011W36T08:59:45.840Z", Some("0011-09-05T08:59:45.840000+00:00")),
        ("845602-04\u{e9}07-00:t00", None),
        ("1900-W47t09:66:51", None),
        ("0001225WT09", None),
        ("2026-11-24T21:13:15z.200233", None),
        ("1900W--37-3T13:14", None),
        ("026-11-24T211:13:15+00:500", None),
        ("2024-01-01T12:00+01:00:0.1234567x", None),
        ("2024-01-01T12:30.555", Some("2024-01-01T12:30:00.555000")),
        ("2020W38\u{e9}03++00:00", None),
        ("2\u{20ac}24-01-01T1", None),
        ("23124-01-01T02:30:45.1234567899", None),
        ("0001-W20T20+107", None),
        ("11900-02-11T177Z", None),
        ("22024-010", None),
        ("2785-08-28t13550:06-1122::00", None),
        ("2024-01-01T112:00+", None),
        ("224-01-0112:00+23:59:59.9999999", None),
        ("2024-01-01T-12630:45.0000Z01", None),
        ("20009-W53-7", None),
        ("2024-01-01T12:00:00.128345\u{663}z01:00", None),
        ("0001W36T08:59:45.981400Z", Some("0001-09-03T08:59:45.981400+00:00")),
        ("99099-W16-5\u{e9}10:3:46,4097203", None),
        ("2024-01-10T12\u{1f988}00Z ", None),
        ("20W-353", None),
        ("204W03 \u{20ac}0+0000", None),
        ("2024-01-0T12:00:00x123456.+01:00", None),
        ("1900W096T03-132:04:00.618149", None),
        ("200000503\u{e9}07:30633", None),
        ("2024-01-01T2:00ZZ", None),
        ("W2024.01 1", None),
        ("2\u{20ac}024W527", None),
        ("2024-01-017T1230:5", None),
        ("2024-01-+1T12:000", None),
        ("99999-WW53-11", None),
        ("590tW061", None),
        ("000W402T0249+11\u{663}1", None),
        ("6:840720T11-06:3,000\u{663}0", None),
        ("900-W08- 5", None),
        ("2024-01-01T12z:z010+00", None),
        ("20024--1-1", None),
        ("0001-W4+T0027-0000", None),
        ("19900-03-24", None),
        ("2024-01-01T12:008-05:30", Some("2024-01-01T12:00:00-05:30")),
        ("0024-W23T19+200", None),
        ("2024-01--21T123:30:45.1234", None),
        ("22014W44T11:50:59,601", None),
        ("6256-W31-6T09:28::57.151626Z", None),
        ("202401-01T12:00-00:00:101", None),
        ("20:4-01-01T12:0-00\u{1f988}230", None),
        ("2024-01-011T12:3045", None),
        ("20274-W541-1", None),
        ("202-4-1-01\u{e9}12", None),
        ("024-01- 11", None),
        ("2024-51-01T12:0801:00.5", None),
        ("2024-017-011T12", None),
        ("2024229", None),
        ("20244-W011", None),
        ("1355-04-1707Z", None),
        ("20000330T6151-0708", None),
        ("1900 -W30T00:03+20:000", None),
        ("2024-01-01\u{e9}912", None),
        ("20229-03-17T15-00400", None),
        ("22049220", None),
        ("2024-01W.1T12:00-00", None),
        ("1900-03-1 01-0012700", None),
        ("200-21-01T12:30:4.5x", None),
        ("49929W17T11", None),
        ("2024-W004-1201", None),
        ("20\u{20ac}221W-3 14:47:33.49", None),
        ("T2024-W53", None),
        ("2026-11-24T21:13:15+000:0z0", None),
        ("024W323T213450", None),
        ("92020W53-7", None),
        ("2024-01-", None),
        ("2024-01-01T1:00+\u{660}\u{661}:00", None),
        ("2002W034T2198-00:00", None),
        ("224-031-0ZT12:00+24:00", None),
        ("2.24-01-01T1000:+", None),
        ("0001-12-04x14:3+17:447:000", None),
        ("202401-01TT12:00", None),
        (" 2024-01--01", None),
        ("0W0007-W15t01:39", None),
        ("2024-W5552T06", None),
        ("20-41-01", None),
        ("20224-W52T06", None),
        ("9999W52xx0051-:0:\u{e9}00", None),
        ("2024-0101x12:000", None),
        ("7369W1075-02:35:34x13:57", None),
        ("2024-W", None),
        ("2024-01-01T12:00+01:7070x", None),
        ("2124-01-01T12:00+23:0559", None),
        ("2014-001-02T12x+01:00", None),
        ("2024W287T23:23:15,9369098+000", None),
        ("0001W3x 04:48:45", None),
        ("6030W0 054410+18", None),
        ("024W87T23:23:15,9369098+00+0", None),
        ("200001503T20Z", None),
        ("000W35", None),
        ("000W12:0T01426", None),
        (",054-W24-1", None),
        ("2020-01-01T12:00:01+01:74:00+01:00", None),
        ("2024-0-25T0:1Z", None),
        ("6256\u{1f988}-W31-6T09:28:7.1516126Z", None),
        ("202402,2\u{e9}231030.5056433-05:20:45.06105", None),
        ("99991219\u{e9}15:08:46,563286155", Some("9999-12-19T15:08:46.563286")),
        ("20200641", None),
        ("2000W371x\u{e9}02120:1:Z", None),
        ("202524-W1", None),
        ("2024-01-01T02:00x+011:10", None),
        ("9999W0866T1:05::16.785", None),
        ("20-24-W17t00-18:33", None),
        ("130-W50-9", None),
        ("200Z0503\u{e9}07:10:33", None),
        ("2024-01-01T12:00xx+01:00", None),
        ("20:24-91-01\u{0}12:00", None),
        ("2024-01-01T2:30:4521.34567", None),
        ("2024WW0", None),
        ("9999-06-0T20Z", None),
        ("2024-01-01T12:00+054-5", None),
        ("220524-01-01T18:00+0545", None),
        ("72024-01-01T1230.5", None),
        ("0001W112t11+07:49:000", None),
        ("1024011", None),
        ("1200-10326\u{e9}1-:05:12.5Z", None),
        ("98999W177T10:41", None),
        ("9999W351T164Z", Some("9999-08-30T16:00:00+00:00")),
        ("2024-01-01T\u{0}2:00Z1", None),
        ("1900W21T533:32816:02", None),
        ("202406,1", None),
        ("2024-01-z1T1230:45", None),
        ("2009990221", None),
        ("2024-01-01x1z2:00", None),
        ("1009W06", Some("1009-02-06T00:00:00")),
        ("20224-01-\u{0}1T1_:00", None),
        ("2420001", None),
        ("302Z4-02-200", None),
        ("1904000222T02", None),
        ("99,91212T02:24", None),
        ("1600-W22T9:17:551", None),
        ("2104W44T91:5:51,6019", None),
        ("9999706-09tt11-", None),
        ("2024-01-01T12::30:45.12745", None),
        ("2024-13-0", None),
        ("9999-09-20T004", None),
        ("20-1205-04T123041", None),
        ("9999W94", None),
        ("19000-03-28", None),
        ("201 6\u{e9}W503x19", None),
        ("24024W01-1", None),
        ("1900W097tTT03-13:04:00.618149", None),
        ("20244-01-01T12:00+00:00:00.5", None),
        ("2024-01-01T2,:60", None),
        ("200005030\u{e9}07:30:33", None),
        ("22024W063x234133Z", None),
        ("2024-01-01:12T3045", None),
        ("0000-WW01-1", None),
        ("202401-001T12:00+23:59:60", None),
        ("2024WW0111230", None),
        ("0001W71T21:08", None),
        ("1900--099-22", None),
        ("2024-01-01T2\u{0}x", None),
        ("9999W52x051-00:00", Some("9999-12-27T05:00:00+00:00")),
        ("1900-W31-3,T1341:", None),
        ("8456-02604\u{e9}07-00:00", None),
        ("2001-07-17\u{663}7T0642", None),
        ("0900W37\u{e9}1211235.8222+08:40:01", None),
        ("020-W53", None),
        ("20220-41-01TZ", None),
        ("2024011610:29", None),
        ("2020-41-01T+01.:00", None),
        ("W56", None),
        ("2024-01432", None),
        ("2024-01001T00:-0:00Z", None),
        ("9:99W25T11:36911,01592", None),
        ("9282,611T08:23:12-03358", None),
        ("0002-W3102x21+12:57", None),
        ("2024-W41-2T12:56:37.2599999+18", Some("2024-10-08T12:56:37.259999+18:00")),
        ("99999-06-02T24Z", None),
        ("0001W2+4\u{e9}05:12:03.71918182Z130000.555468", None),
        ("00011123T123441.3-0T00", None),
        ("000118\u{e9}163123,8271+00:00", None),
        ("20284-01-01TT23:60", None),
        ("200-12-23", None),
        ("0240106t10:29", None),
        ("2024-01-016T12:30+01:0Z", None),
        ("6840720T11-06:30:00", None),
        ("0001W3x04:48:45", None),
        ("2-21-10025T01", None),
        ("2024W327T1750-20:00:02", Some("2024-08-11T17:50:00-20:00:02")),
        ("2024-:1-01T12:00+01099", None),
        ("W02420112:30", None),
        ("190037\u{e9}121235.822Z+08:40:00", None),
        ("0024-11-20T2", None),
        ("928600211T08:23:12-0338", None),
        ("224-0-01T12:00+013\u{663}", None),
        ("20024-01-01T12:00-23:59:59.999999", None),
        ("2000-W.1T0322595680+000:00:00.580819", None),
        ("2024-1-01T123-", None),
        ("\u{663}1900217T08", None),
        ("200-W46-5T141247-00:00", None),
        ("104324-01-01T22:00-00", None),
        ("2000W19T011:9Z", None),
        ("9999-W23-2T16:514:277,00259", None),
        ("0-000-01-031", None),
        ("204W0112300", None),
        ("2724W011T1\u{0}2:00", None),
        ("20230602\u{e9}19:03:09..77", None),
        ("-024201\u{20ac}-01T12:00+00:\u{0}00:00.5", None),
        ("\u{1d7d8}\u{1d7d8}\u{1d7d8}\u{1d7d8}\u{1d7d9}-01-001", None),
        ("220248-W01-1-", None),
        ("030-W3-2", None),
        ("200W323 09Z", None),
        ("2000-WW432T2Z", None),
        ("2024-001-01T1-:00:00201:00-01:0", None),
        ("9999-06-02T20", Some("9999-06-02T20:00:00")),
        ("2000-W19t18:53:17-22:18:00.93603", Some("2000-05-08T18:53:17-22:18:00.936030")),
        ("224W18", None),
        ("202W40906T03\u{20ac}8+0654", None),
        ("2024W38\u{e9}03+000:0", None),
        ("202401-01T4:00:00Z", None),
        ("024-W01-2", None),
        ("2025-01-0123:59:49", None),
        ("2020-41-1", None),
        ("204-\u{663}01", None),
        ("2024-01-01T15:30:45.0000000", Some("2024-01-01T15:30:45")),
        ("2024-11-00T12:30:45.1", None),
        ("0001-04-16T2310+004136.26x136", None),
        ("20\u{663}4-01-01T+01:00", None),
        ("5885-08-27t13:20:06-11:22:00", Some("5885-08-27T13:20:06-11:22")),
        ("2\u{20ac}24-W01--1200", None),
        ("04,3W487T2Z", None),
        ("72024-01-01x12:00", None),
        ("9999-W1T04-5:16", None),
        ("1900-x0324", None),
        ("2W24001-1", None),
        ("2024-01001T12:700+01:00:00.1234567x", None),
        ("202401-01T12:30:45.12356", None),
        ("tt", None),
        ("202-01", None),
        ("0001-W15t07:3T", None),
        ("202410,10-\u{e9}1", None),
        ("2.24-01-01\u{1f988}12:00", None),
        ("2024-Z01-01T12:345", None),
        ("-024-012013 2:30:4", None),
        ("0001-12-.8T04304901346620Z", None),
        ("2024-011-01T12:30.", None),
        ("2024-01-01T12:00-00:00:1", None),
        ("0000150202x", None),
        ("0001007-22\u{e9}0-122:30:0-", None),
        ("2000-02--229", None),
        ("204-01-0T12:00z", None),
        ("2029-0317T1\u{663}5-0000", None),
        ("20024-W4776t18:52:29Z", None),
        ("2027-01-01T23:60", None),
        ("1900W21T708", None),
        ("2024WW2323T213450", None),
        ("2.2024-W01-0", None),
        ("2024001--1T12-05", None),
        ("8216W305\u{20ac}12:02", Some("8216-07-26T12:02:00")),
        ("696.9192\u{e9}12", None),
        ("000-W51-7", None),
        ("0001-W49T10932:32", None),
        ("203409\u{663}6T0258+0654", None),
        ("2024-01-01T:2:00+01100:", None),
        ("1900W534T04:54:3z8,834+0000", None),
        ("202/01/01", None),
        ("20010330T1156-0708", Some("2001-03-30T11:56:00-07:08")),
        ("2024-0x-01T12:00101:30:15.1235456", None),
        ("2004-01211\u{e9}12:00", None),
        ("2024-01-11T02::00100.1234567x+0::00", None),
        ("1-W0\u{e9}-1", None),
        ("2024 -01-01T123045078", None),
        ("26024-01-01T1_:00", None),
        ("200 -WW53-6", None),
        ("999x12511124", None),
        ("2624\u{0}W54-1", None),
        ("82024-01-00T12:30:45.0100\u{0}00", None),
        ("2024-01-201T:2:30145:123", None),
        ("-000-0005-11T03:00:05,8", None),
        ("20264-01--001\u{e9}1", None),
        ("29024-01-01T12:00+001:30:11.1234567", None),
        ("2024W63xxx234133Z", None),
        ("2024-0,1-01T12:00+01:00x", None),
        ("2000W094T075618,6983397+16:38", Some("2000-03-02T07:56:18.698339+16:38")),
        ("52024W011230", None),
        ("2024-02011-::00", None),
        ("9999-015TW4-15:16", None),
    ];
}
