//! The JSON log line of the original (structlog's `JSONRenderer` behind Python's logging),
//! R-LOG-1: one object per line with the original's keys, `{"event", "level", "logger",
//! "timestamp", "pid", <fields>...}`.
//!
//! - `event` is the message; `level` is structlog's level name: `error`, `warning`, `info` or
//!   `debug` (TRACE events print `debug`, as the reference's trace logger logs at debug level);
//! - `timestamp` is Python's `isoformat()` of the UTC time with a `Z`, microseconds left out
//!   when zero ([`format_timestamp`]);
//! - the event's fields follow in the order given, keeping their JSON types; a field named like
//!   one of the keys above ([`RESERVED`]), or like an earlier field, is written as `_name` (our
//!   rule, so that no key appears twice).
//!
//! Not byte-identical with the reference, and not part of R-LOG-1: the key order (the reference
//! writes `pid` and the fields first and `event`, `level`, `logger`, `timestamp` last, R-LOG-5)
//! and non-ASCII text, written as UTF-8 where the reference writes `\uXXXX` escapes.
//!
//! Which logger name a line carries, which fields are embedded as JSON and the text format
//! (ours, not the original's) are [`crate::logging`]'s.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tracing::Level;

/// Keys written by the formatter itself; an event field of the same name is written as `_name`.
pub const RESERVED: [&str; 5] = ["event", "level", "logger", "timestamp", "pid"];

/// `2026-11-24T21:13:15.200233Z`; the fraction is left out when it is zero (Python `isoformat`).
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    crate::compat::isotime::log_timestamp(t)
}

/// structlog's level name of a `tracing` level.
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        _ => "debug",
    }
}

/// One whole JSON line (newline included).
pub fn json_line(
    level: &Level,
    logger: &str,
    time: DateTime<Utc>,
    pid: u32,
    message: &str,
    fields: &[(&str, Value)],
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128 + message.len());
    let timestamp = format_timestamp(time);
    buf.extend_from_slice(b"{\"event\":");
    push_json(&mut buf, message);
    buf.extend_from_slice(b",\"level\":");
    push_json(&mut buf, level_name(level));
    buf.extend_from_slice(b",\"logger\":");
    push_json(&mut buf, logger);
    buf.extend_from_slice(b",\"timestamp\":");
    push_json(&mut buf, &timestamp);
    buf.extend_from_slice(format!(",\"pid\":{pid}").as_bytes());
    for (i, (name, value)) in fields.iter().enumerate() {
        let clash = RESERVED.contains(name) || fields[..i].iter().any(|(other, _)| other == name);
        buf.push(b',');
        if clash {
            push_json(&mut buf, &format!("_{name}"));
        } else {
            push_json(&mut buf, name);
        }
        buf.push(b':');
        push_json(&mut buf, value);
    }
    buf.push(b'}');
    buf.push(b'\n');
    buf
}

fn push_json<T: serde::Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) {
    // Writing a str or a Value into a Vec cannot fail (non-string map keys cannot occur).
    let _ = serde_json::to_writer(&mut *buf, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn json_format_of_a_fixed_record() {
        let t = Utc.with_ymd_and_hms(2026, 11, 24, 21, 13, 15).unwrap();
        let line = json_line(
            &Level::WARN,
            "socketshark",
            t,
            7,
            "a \"b\"",
            &[("session", json!(1))],
        );
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"event\":\"a \\\"b\\\"\",\"level\":\"warning\",\"logger\":\"socketshark\",\"timestamp\":\"2026-11-24T21:13:15Z\",\"pid\":7,\"session\":1}\n"
        );
    }

    #[test]
    fn level_names_and_clashing_fields() {
        let t = Utc.with_ymd_and_hms(2026, 11, 24, 21, 13, 15).unwrap();
        let levels: Vec<&str> = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ]
        .iter()
        .map(level_name)
        .collect();
        assert_eq!(levels, ["error", "warning", "info", "debug", "debug"]);
        let line = json_line(
            &Level::INFO,
            "x",
            t,
            1,
            "m",
            &[("level", json!("a")), ("n", json!(1)), ("n", json!(2))],
        );
        assert!(
            String::from_utf8(line)
                .unwrap()
                .ends_with(",\"pid\":1,\"_level\":\"a\",\"n\":1,\"_n\":2}\n")
        );
    }

    #[test]
    fn timestamps_like_python_isoformat() {
        let t = Utc.with_ymd_and_hms(2026, 11, 24, 21, 13, 15).unwrap();
        assert_eq!(format_timestamp(t), "2026-11-24T21:13:15Z");
        assert_eq!(
            format_timestamp(t + chrono::Duration::microseconds(200_233)),
            "2026-11-24T21:13:15.200233Z"
        );
        assert_eq!(
            format_timestamp(t + chrono::Duration::microseconds(5)),
            "2026-11-24T21:13:15.000005Z"
        );
        // Sub-microsecond parts are truncated, as Python's datetime has no nanoseconds.
        assert_eq!(
            format_timestamp(t + chrono::Duration::nanoseconds(999)),
            "2026-11-24T21:13:15Z"
        );
        let now = format_timestamp(Utc::now());
        assert!(
            now.ends_with('Z') && (now.len() == 20 || now.len() == 27),
            "{now}"
        );
    }
}
