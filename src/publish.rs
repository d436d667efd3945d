//! Published messages: decoding what services publish (R-PUB-3, R-PUB-5, R-PUB-8, R-OOO-1/2,
//! R-THR-1/2) and building the frames sent to clients (R-PUB-7, R-PUB-9). Pure, no IO.
//!
//! A message is decoded once per publish, whatever the number of subscribers; its `data` is
//! serialised once, and frames are assembled from pre-serialised pieces.

use serde_json::{Map, Value};

use crate::compat::isotime;
use crate::compat::pyjson::{self, HashKey};

/// `(order key, order)` or `(throttle key, period in seconds)`.
pub type Keyed = (HashKey, f64);

/// The delivery options of a message or of a `before_subscribe` response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    pub order: Option<Keyed>,
    pub throttle: Option<Keyed>,
}

/// A decoded published message.
#[derive(Debug)]
pub struct Published {
    /// The message's `subscription` value: the subscription it is for (R-PUB-4).
    pub subscription: String,
    /// `data`, serialised once.
    pub data: String,
    /// `published_at`, normalised (R-PUB-8).
    pub published_at: Option<String>,
    pub options: Options,
    /// The whole message object: filter fields are looked up here (R-FLT-1).
    pub fields: Map<String, Value>,
    /// Where the message stands in its channel's history, when it was published with history.
    pub position: Option<Position>,
}

/// A message's place in its channel's history (issue 14): its offset, and the epoch of the
/// history (which changes when the history is lost, so offsets are comparable only within one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// The key under which a history-keeping publish puts the position into the published object:
/// `{"_history": {"offset": N, "epoch": "E"}, ...}`. A server without history (the original)
/// ignores it, as it does every unknown key (R-PUB-3).
pub const HISTORY_KEY: &str = "_history";

impl Position {
    /// Reads the position from a published object, if it carries a valid one.
    pub fn of(fields: &Map<String, Value>) -> Option<Position> {
        Position::of_object(fields.get(HISTORY_KEY)?)
    }

    /// Reads `{"offset": N, "epoch": "E"}`.
    pub fn of_object(v: &Value) -> Option<Position> {
        let h = v.as_object()?;
        Some(Position {
            offset: h.get("offset")?.as_u64()?,
            epoch: h.get("epoch")?.as_str()?.to_owned(),
        })
    }

    /// `payload` (a JSON object, serialised) with the position inserted as its first key.
    pub fn stamp(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let rest = payload.trim_ascii_start().strip_prefix(b"{")?;
        if rest.trim_ascii_start().starts_with(b"}") {
            return None;
        }
        let mut out = Vec::with_capacity(payload.len() + 48 + self.epoch.len());
        out.extend_from_slice(b"{\"_history\":{\"offset\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.offset).as_bytes());
        out.extend_from_slice(b",\"epoch\":");
        out.extend_from_slice(Value::String(self.epoch.clone()).to_string().as_bytes());
        out.extend_from_slice(b"},");
        out.extend_from_slice(rest);
        Some(out)
    }
}

/// Why a published message is not delivered at all.
#[derive(Debug, PartialEq)]
pub enum Rejected {
    /// Not UTF-8 or not JSON (logged as `JSONDecodeError`).
    NotJson,
    /// Not an object, or without `subscription` or `data` (logged as `invalid service event`).
    InvalidEvent(Value),
    /// Dropped silently (a quirk of R-PUB-5: non-string subscription, bad `options`, unhashable
    /// keys, non-string `published_at`).
    Dropped(&'static str),
}

/// Reads `options` (R-PUB-5 quirks, R-OOO-1/2, R-THR-1/2). `Err` = the message is dropped.
pub fn parse_options(options: Option<&Value>) -> Result<Options, &'static str> {
    let opts = match options {
        None => return Ok(Options::default()),
        Some(Value::Object(o)) => o,
        // A string or an array is treated as no options.
        Some(Value::String(_) | Value::Array(_)) => return Ok(Options::default()),
        Some(_) => return Err("options is not an object"),
    };
    let keyed = |value: &str, key: &str| -> Result<Option<Keyed>, &'static str> {
        match opts.get(value).and_then(pyjson::py_float) {
            None => Ok(None),
            Some(v) => match pyjson::hash_key(opts.get(key)) {
                Some(k) => Ok(Some((k, v))),
                None => Err("unhashable order_key or throttle_key"),
            },
        }
    };
    Ok(Options {
        order: keyed("order", "order_key")?,
        throttle: keyed("throttle", "throttle_key")?,
    })
}

impl Published {
    /// Decodes a payload received from the broker.
    pub fn decode(payload: &[u8]) -> Result<Published, Rejected> {
        let value = pyjson::parse_bytes(payload).map_err(|_| Rejected::NotJson)?;
        let Value::Object(fields) = value else {
            return Err(Rejected::InvalidEvent(value));
        };
        if !fields.contains_key("subscription") || !fields.contains_key("data") {
            return Err(Rejected::InvalidEvent(Value::Object(fields)));
        }
        let Some(Value::String(subscription)) = fields.get("subscription") else {
            return Err(Rejected::Dropped("subscription is not a string"));
        };
        let subscription = subscription.clone();
        let options = parse_options(fields.get("options")).map_err(Rejected::Dropped)?;
        let published_at = match fields.get("published_at") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                let normalised = isotime::normalize_published_at(s);
                if normalised.is_none() {
                    tracing::warn!(published_at = s.as_str(), "invalid published_at format");
                }
                normalised
            }
            Some(_) => return Err(Rejected::Dropped("published_at is not a string")),
        };
        let data = fields
            .get("data")
            .map(crate::protocol::json_text)
            .unwrap_or_default();
        let position = Position::of(&fields);
        Ok(Published {
            subscription,
            data,
            published_at,
            options,
            fields,
            position,
        })
    }
}

/// Keys a client frame sets itself; an extra field with one of these names forces the slow,
/// map-based frame assembly so that overwrite precedence stays exact.
const FRAME_KEYS: [&str; 9] = [
    "event",
    "subscription",
    "data",
    "offset",
    "epoch",
    "published_at",
    "received_at",
    "queue_size",
    "sent_at",
];

/// A subscription's extra fields with their frame fragment serialised once, at subscribe time.
#[derive(Debug, Default)]
pub struct ExtraFields {
    pub map: Map<String, Value>,
    /// `,"k":v,...` when no key collides with a frame key; `None` otherwise.
    fragment: Option<String>,
}

impl ExtraFields {
    /// The (shared) empty set: most subscriptions have no extra fields.
    pub fn none() -> std::sync::Arc<ExtraFields> {
        ExtraFields::none_ref().clone()
    }

    /// The (shared) empty set, borrowed.
    pub fn none_ref() -> &'static std::sync::Arc<ExtraFields> {
        static NONE: std::sync::LazyLock<std::sync::Arc<ExtraFields>> =
            std::sync::LazyLock::new(|| std::sync::Arc::new(ExtraFields::new(Map::new())));
        &NONE
    }

    pub fn new(map: Map<String, Value>) -> ExtraFields {
        let fragment = if map.keys().any(|k| FRAME_KEYS.contains(&k.as_str())) {
            None
        } else {
            let mut s = String::new();
            for (k, v) in &map {
                s.push(',');
                s.push_str(&Value::String(k.clone()).to_string());
                s.push(':');
                s.push_str(&v.to_string());
            }
            Some(s)
        };
        ExtraFields { map, fragment }
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The cache key of frames built with these extra fields: equal for equal fields.
    pub fn fragment(&self) -> Option<&str> {
        self.fragment.as_deref()
    }
}

/// Per-delivery metadata (R-PUB-9).
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    /// Live deliveries carry the receive time and queue size; buffered and trailing throttled
    /// deliveries do not.
    pub live: Option<(&'a str, usize)>,
    pub sent_at: &'a str,
    /// Trailing throttled sends carry only data, extra fields and `sent_at` (R-THR-4).
    pub with_published_at: bool,
}

/// Builds the frame of a delivered message (R-PUB-7):
/// `{"event": "message", "subscription", "data", ["offset", "epoch"], ["published_at"],
/// ["received_at"], ["queue_size"], <extra fields>, "sent_at"}`. `offset` and `epoch` are there
/// only for a message published with history (issue 14).
pub fn frame(name: &str, msg: &Published, extra: &ExtraFields, meta: Meta<'_>) -> String {
    let published_at = msg
        .published_at
        .as_deref()
        .filter(|_| meta.with_published_at);
    match extra.fragment() {
        Some(fragment) => {
            let mut s =
                String::with_capacity(64 + name.len() + msg.data.len() + fragment.len() + 100);
            s.push_str(r#"{"event":"message","subscription":"#);
            push_json_str(&mut s, name);
            s.push_str(r#","data":"#);
            s.push_str(&msg.data);
            if let Some(pos) = &msg.position {
                s.push_str(r#","offset":"#);
                s.push_str(itoa::Buffer::new().format(pos.offset));
                push_str_field(&mut s, "epoch", &pos.epoch);
            }
            if let Some(p) = published_at {
                push_str_field(&mut s, "published_at", p);
            }
            if let Some((received_at, queue_size)) = meta.live {
                push_str_field(&mut s, "received_at", received_at);
                s.push_str(r#","queue_size":"#);
                s.push_str(itoa::Buffer::new().format(queue_size));
            }
            s.push_str(fragment);
            push_str_field(&mut s, "sent_at", meta.sent_at);
            s.push('}');
            s
        }
        None => {
            let mut m = Map::new();
            m.insert("event".into(), "message".into());
            m.insert("subscription".into(), name.into());
            // The value already parsed (re-parsing would also hit serde_json's depth limit).
            let data = msg.fields.get("data").cloned().unwrap_or(Value::Null);
            m.insert("data".into(), data);
            if let Some(pos) = &msg.position {
                m.insert("offset".into(), pos.offset.into());
                m.insert("epoch".into(), pos.epoch.as_str().into());
            }
            if let Some(p) = published_at {
                m.insert("published_at".into(), p.into());
            }
            if let Some((received_at, queue_size)) = meta.live {
                m.insert("received_at".into(), received_at.into());
                m.insert("queue_size".into(), queue_size.into());
            }
            for (k, v) in &extra.map {
                m.insert(k.clone(), v.clone());
            }
            m.insert("sent_at".into(), meta.sent_at.into());
            Value::Object(m).to_string()
        }
    }
}

/// Appends `,"key":"value"` (`key` needs no escaping).
fn push_str_field(s: &mut String, key: &str, value: &str) {
    s.push_str(",\"");
    s.push_str(key);
    s.push_str("\":");
    push_json_str(s, value);
}

/// Appends `value` as a JSON string, escaped exactly as `serde_json` does (only `"`, `\\` and
/// control characters; other characters as they are), without an allocation in the common
/// case of nothing to escape.
fn push_json_str(s: &mut String, value: &str) {
    if value.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        s.push_str(&Value::String(value.to_owned()).to_string());
    } else {
        s.push('"');
        s.push_str(value);
        s.push('"');
    }
}

/// Current time in the frames' format (R-PUB-9).
pub fn now() -> String {
    isotime::now_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_stamped_message_carries_its_position_into_the_frame() {
        let pos = Position {
            offset: 7,
            epoch: "Ab3".into(),
        };
        let stamped = pos
            .stamp(br#"  {"subscription": "a.b", "data": {"x": 1}}"#)
            .unwrap();
        assert_eq!(
            String::from_utf8(stamped.clone()).unwrap(),
            r#"{"_history":{"offset":7,"epoch":"Ab3"},"subscription": "a.b", "data": {"x": 1}}"#
        );
        assert_eq!(pos.stamp(b"{ }"), None);
        assert_eq!(pos.stamp(b"[1]"), None);
        let msg = Published::decode(&stamped).unwrap();
        assert_eq!(msg.position, Some(pos));
        let meta = Meta {
            live: None,
            sent_at: "T",
            with_published_at: true,
        };
        let fast = frame("a.b", &msg, &ExtraFields::new(Map::new()), meta);
        assert_eq!(
            fast,
            r#"{"event":"message","subscription":"a.b","data":{"x":1},"offset":7,"epoch":"Ab3","sent_at":"T"}"#
        );
        // An extra field named like a frame key takes the map path; same keys, same order.
        let mut extra = Map::new();
        extra.insert("epoch".into(), json!("mine"));
        let slow = frame("a.b", &msg, &ExtraFields::new(extra), meta);
        assert_eq!(
            slow,
            r#"{"event":"message","subscription":"a.b","data":{"x":1},"offset":7,"epoch":"mine","sent_at":"T"}"#
        );
        // Without a valid position there is none.
        let plain =
            Published::decode(br#"{"_history": {"offset": -1}, "subscription": "a.b", "data": 1}"#)
                .unwrap();
        assert_eq!(plain.position, None);
    }

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn decode_rejections() {
        assert_eq!(Published::decode(b"{").unwrap_err(), Rejected::NotJson);
        assert_eq!(Published::decode(b"\xff").unwrap_err(), Rejected::NotJson);
        assert!(matches!(
            Published::decode(b"[1]").unwrap_err(),
            Rejected::InvalidEvent(_)
        ));
        assert!(matches!(
            Published::decode(br#"{"subscription": "a.b"}"#).unwrap_err(),
            Rejected::InvalidEvent(_)
        ));
        assert!(matches!(
            Published::decode(br#"{"data": 1}"#).unwrap_err(),
            Rejected::InvalidEvent(_)
        ));
        for bad in [
            r#"{"subscription": 1, "data": 1}"#,
            r#"{"subscription": "a.b", "data": 1, "options": null}"#,
            r#"{"subscription": "a.b", "data": 1, "options": 5}"#,
            r#"{"subscription": "a.b", "data": 1, "options": true}"#,
            r#"{"subscription": "a.b", "data": 1, "options": {"order": 1, "order_key": [1]}}"#,
            r#"{"subscription": "a.b", "data": 1, "options": {"throttle": 1, "throttle_key": {}}}"#,
            r#"{"subscription": "a.b", "data": 1, "published_at": 5}"#,
        ] {
            assert!(
                matches!(Published::decode(bad.as_bytes()), Err(Rejected::Dropped(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn decode_options() {
        let m = Published::decode(br#"{"subscription": "a.b", "data": null, "options": "order"}"#)
            .unwrap();
        assert_eq!(m.options, Options::default());
        assert_eq!(m.data, "null");
        let m = Published::decode(
            br#"{"subscription": "a.b", "data": 1, "options": {"order": "invalid", "order_key": [1], "throttle": "0.5"}}"#,
        )
        .unwrap();
        assert!(
            m.options.order.is_none(),
            "invalid order: unordered, key ignored"
        );
        assert_eq!(m.options.throttle.as_ref().unwrap().1, 0.5);
        let m = Published::decode(
            br#"{"subscription": "a.b", "data": 1, "options": {"order": true, "order_key": "k"}}"#,
        )
        .unwrap();
        assert_eq!(m.options.order.as_ref().unwrap().1, 1.0);
    }

    #[test]
    fn json_strings_are_escaped_as_serde_json_does() {
        for v in [
            "",
            "a.b",
            "é\u{2028}x",
            "q\"uote",
            "back\\slash",
            "tab\t",
            "\u{1}",
            "\u{7f}",
        ] {
            let mut s = String::new();
            push_json_str(&mut s, v);
            assert_eq!(s, serde_json::to_string(v).unwrap(), "{v:?}");
        }
    }

    #[test]
    fn frame_shapes() {
        let m = Published::decode(
            br#"{"subscription": "simple.topic", "data": {"baz": "foo"}, "published_at": "2024-01-01T00:00:00Z", "session_id": 1, "options": {}}"#,
        )
        .unwrap();
        let none = ExtraFields::default();
        let f = frame(
            "simple.topic",
            &m,
            &none,
            Meta {
                live: Some(("2026-01-01T00:00:00.5+00:00", 3)),
                sent_at: "T",
                with_published_at: true,
            },
        );
        assert_eq!(
            parse(&f),
            json!({"event": "message", "subscription": "simple.topic", "data": {"baz": "foo"},
                   "published_at": "2024-01-01T00:00:00+00:00",
                   "received_at": "2026-01-01T00:00:00.5+00:00", "queue_size": 3, "sent_at": "T"})
        );
        let extra = ExtraFields::new(parse(r#"{"extra": "bar"}"#).as_object().unwrap().clone());
        let f = frame(
            "simple.topic",
            &m,
            &extra,
            Meta {
                live: None,
                sent_at: "T",
                with_published_at: false,
            },
        );
        assert_eq!(
            f,
            r#"{"event":"message","subscription":"simple.topic","data":{"baz":"foo"},"extra":"bar","sent_at":"T"}"#
        );
    }

    /// Deep data survives the map-based path (found by fuzzing: re-parsing `data` hit serde_json's
    /// default recursion limit and delivered `null`).
    #[test]
    fn deep_data_with_colliding_extra_fields() {
        std::thread::Builder::new()
            .stack_size(crate::compat::pyjson::WORKER_STACK)
            .spawn(|| {
                let depth = 500;
                let data = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
                let payload = format!(r#"{{"subscription":"s.t","data":{data}}}"#);
                let m = Published::decode(payload.as_bytes()).unwrap();
                let extra =
                    ExtraFields::new(parse(r#"{"event": "x"}"#).as_object().unwrap().clone());
                let meta = Meta {
                    live: None,
                    sent_at: "T",
                    with_published_at: true,
                };
                let f = frame("s.t", &m, &extra, meta);
                let v = crate::compat::pyjson::parse(&f).unwrap();
                assert_eq!(v["data"].to_string(), data);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn colliding_extra_fields_overwrite_but_sent_at_is_last() {
        let m = Published::decode(br#"{"subscription": "s.t", "data": 1}"#).unwrap();
        let extra = ExtraFields::new(
            parse(r#"{"data": "x", "sent_at": "y", "z": 1}"#)
                .as_object()
                .unwrap()
                .clone(),
        );
        assert!(extra.fragment().is_none());
        let f = frame(
            "s.t",
            &m,
            &extra,
            Meta {
                live: None,
                sent_at: "T",
                with_published_at: true,
            },
        );
        assert_eq!(
            parse(&f),
            json!({"event": "message", "subscription": "s.t", "data": "x", "z": 1, "sent_at": "T"})
        );
    }
}
