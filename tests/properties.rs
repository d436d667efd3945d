//! Property tests of the decoders (a short run that fits the normal `cargo test`; the long runs
//! are the cargo-fuzz targets in `fuzz/`).
//!
//! - `decode_text` classifies every JSON value exactly like R-FRM-2..4, and invalid text as
//!   `NotJson`; `decode_binary` never panics, and reads UTF-16/UTF-32/BOM encodings of a text
//!   like the text itself.
//! - `Published::decode` never panics on messages with random `subscription`, `data`, `options`
//!   and `published_at`, and when it accepts one, `frame()` (with or without extra fields, fast
//!   or map-based path) is JSON carrying `data` unchanged.
//! - `py_eq` is reflexive and symmetric; `hash_key` equality is `py_eq` on scalars.
//! - `normalize_published_at` is idempotent.
//!
//! Values are bounded (depth ≤ 4, ≤ 6 members per container), so serde_json's default recursion
//! limit is never reached here. Each property runs 256 cases by default (the file takes ~1.5 s in
//! a debug build); `PROPTEST_CASES=20000 cargo test --test properties` runs a longer session.

use proptest::prelude::*;
use serde_json::{Map, Value};
use socketshark::compat::isotime::normalize_published_at;
use socketshark::compat::pyjson;
use socketshark::protocol::{self, Decoded, Event};
use socketshark::publish::{self, ExtraFields, Meta, Published, Rejected};

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// A JSON number as text, kept verbatim (the crate uses `arbitrary_precision`).
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "-?(0|[1-9][0-9]{0,40})(\\.[0-9]{1,12})?([eE][+-]?[0-9]{1,3})?"
            .prop_map(|t| serde_json::from_str::<Value>(&t).expect("number text")),
    ]
}

/// Keys that the rules read, and a few others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "event", "subscription", "data", "options", "published_at", "extra", "status",
            "error", "order", "order_key", "throttle", "throttle_key", "session_id",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,8}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        "\\PC{0,12}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An `event` value: known names, other short strings, strings around the 40-code-point limit,
/// non-strings.
fn event_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec!["auth", "subscribe", "message", "unsubscribe", "ping"])
            .prop_map(|s| Value::String(s.to_owned())),
        "\\PC{0,8}".prop_map(Value::String),
        (39usize..=41, prop::sample::select(vec!["a", "é", "😀"]))
            .prop_map(|(n, c)| Value::String(c.repeat(n))),
        json(),
    ]
}

/// Client commands: mostly objects, often with an `event`.
fn command() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => json(),
        6 => (
            prop::collection::vec((key(), json()), 0..5),
            prop::option::weighted(0.9, event_value()),
        )
            .prop_map(|(kv, event)| {
                let mut m: Map<String, Value> = kv.into_iter().collect();
                if let Some(e) = event {
                    m.insert("event".into(), e);
                }
                Value::Object(m)
            }),
    ]
}

fn iso_like() -> impl Strategy<Value = String> {
    prop_oneof![
        // Mostly valid dates and times, in the extended and basic formats.
        4 => "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])([T t]([01][0-9]|2[0-3])(:[0-5][0-9](:[0-5][0-9]([.,][0-9]{1,9})?)?)?)?(Z|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9](:?[0-5][0-9](\\.[0-9]{1,6})?)?)?)?",
        2 => "[0-9]{4}(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])(T([01][0-9]|2[0-3])([0-5][0-9]([0-5][0-9])?)?)?(Z|[+-][0-9]{2}([0-9]{2})?)?",
        2 => "[0-9]{4}-?[0-9]{2}-?[0-9]{2}([T t][0-9]{2}(:?[0-9]{2}(:?[0-9]{2}([.,][0-9]{1,9})?)?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2}(:?[0-9]{2}(\\.[0-9]{1,6})?)?)?)?",
        1 => "[0-9]{4}-?W[0-5][0-9](-?[1-7])?(T[0-9]{2}(:[0-9]{2})?)?",
        1 => "[0-9:.,TWZ+ -]{0,24}",
        1 => "\\PC{0,16}",
    ]
}

fn options() -> impl Strategy<Value = Value> {
    let order = prop_oneof![
        number(),
        prop::sample::select(vec!["2", " 2.5 ", "1e3", "inf", "nan", "1_000", "x", ""])
            .prop_map(|s| Value::String(s.to_owned())),
        any::<bool>().prop_map(Value::Bool),
        json(),
    ];
    prop_oneof![
        1 => json(),
        3 => prop::collection::vec(
            (
                prop::sample::select(vec!["order", "order_key", "throttle", "throttle_key"]),
                prop_oneof![order, json()],
            ),
            0..4,
        )
        .prop_map(|kv| {
            Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        }),
    ]
}

/// Published messages: `subscription` and `data` usually present, the rest random.
fn published() -> impl Strategy<Value = Value> {
    let subscription = prop_oneof![
        4 => "[a-z]{1,6}\\.[a-z_0-9.]{1,8}".prop_map(Value::String),
        1 => json(),
    ];
    let published_at = prop_oneof![
        3 => iso_like().prop_map(Value::String),
        1 => json(),
    ];
    (
        prop::option::weighted(0.95, subscription),
        prop::option::weighted(0.95, json()),
        prop::option::weighted(0.5, options()),
        prop::option::weighted(0.5, published_at),
        prop::collection::vec((key(), json()), 0..3),
    )
        .prop_map(|(sub, data, opts, pa, others)| {
            let mut m: Map<String, Value> = others.into_iter().collect();
            for (k, v) in [
                ("subscription", sub),
                ("data", data),
                ("options", opts),
                ("published_at", pa),
            ] {
                match v {
                    Some(v) => {
                        m.insert(k.into(), v);
                    }
                    None => {
                        m.remove(k);
                    }
                }
            }
            Value::Object(m)
        })
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

/// Python-equal variants of a value: `1` ↔ `1.0` ↔ `true`, `0` ↔ `-0.0` ↔ `false`, recursively.
fn variant(v: &Value, flip: &mut impl FnMut() -> bool) -> Value {
    match v {
        Value::Bool(b) if flip() => Value::from(u8::from(*b)),
        Value::Number(n) if flip() => {
            let t = n.as_str();
            let text = match t {
                "1" => "true".to_owned(),
                "0" => "-0.0".to_owned(),
                _ if !t.contains(['.', 'e', 'E']) && t.len() < 15 => format!("{t}.0"),
                _ => t.to_owned(),
            };
            serde_json::from_str(&text).expect("variant number")
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| variant(x, flip)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), variant(x, flip)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Cases per property in the normal `cargo test` (the whole file runs in ~1.5 s in debug);
/// `PROPTEST_CASES=N cargo test --test properties` runs N instead.
const DEFAULT_CASES: u32 = 256;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    ProptestConfig {
        cases,
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Client frames
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// R-FRM-2..4: every JSON value is classified by the rules.
    #[test]
    fn decode_text_classifies_json_by_the_rules(v in command(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&v).unwrap()
        } else {
            v.to_string()
        };
        let got = protocol::decode_text(&text);
        let want = match &v {
            Value::Object(m) => match m.get("event") {
                Some(Value::String(e)) if e.chars().count() <= protocol::MAX_EVENT_LEN => {
                    match Event::parse(e) {
                        Some(ev) => Decoded::Command(ev, m.clone()),
                        None => Decoded::Unknown(e.clone(), v.clone()),
                    }
                }
                _ => Decoded::Invalid(v.clone()),
            },
            _ => Decoded::Invalid(v.clone()),
        };
        prop_assert_eq!(&got, &want);
        // Binary frames carrying the same text, in every encoding `json.loads(bytes)` detects.
        let utf16le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let utf16be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let utf32le: Vec<u8> = text.chars().flat_map(|c| (c as u32).to_le_bytes()).collect();
        let utf32be: Vec<u8> = text.chars().flat_map(|c| (c as u32).to_be_bytes()).collect();
        let with_bom = |bom: &[u8], body: &[u8]| [bom, body].concat();
        for bytes in [
            text.as_bytes().to_vec(),
            with_bom(&[0xEF, 0xBB, 0xBF], text.as_bytes()),
            utf16le.clone(),
            utf16be.clone(),
            with_bom(&[0xFF, 0xFE], &utf16le),
            with_bom(&[0xFE, 0xFF], &utf16be),
            utf32le.clone(),
            utf32be.clone(),
            with_bom(&[0xFF, 0xFE, 0, 0], &utf32le),
            with_bom(&[0, 0, 0xFE, 0xFF], &utf32be),
        ] {
            prop_assert_eq!(&protocol::decode_binary(&bytes), &want);
        }
    }

    /// R-FRM-2: text that is not JSON (or not one JSON document) is `NotJson`.
    #[test]
    fn decode_text_rejects_what_is_not_json(
        text in prop_oneof![
            "\\PC{0,24}",
            "[\\[\\]{}\":,0-9a-z .eE+\\\\-]{0,24}",
            (command(), any::<prop::sample::Index>()).prop_map(|(v, i)| {
                // A truncated document.
                let t = v.to_string();
                let mut cut = i.index(t.len().max(1));
                while !t.is_char_boundary(cut) {
                    cut -= 1;
                }
                t[..cut].to_owned()
            }),
            json().prop_map(|v| format!("{v} {v}")),
        ]
    ) {
        let valid = serde_json::from_str::<Value>(&text).is_ok();
        let got = protocol::decode_text(&text);
        prop_assert_eq!(got == Decoded::NotJson, !valid, "{:?} -> {:?}", text, got);
    }

    /// Binary frames: any bytes, no panic; undecodable bytes are `Undecodable`.
    #[test]
    fn decode_binary_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let got = protocol::decode_binary(&bytes);
        match pyjson::decode_binary(&bytes) {
            None => prop_assert_eq!(got, Decoded::Undecodable),
            Some(text) => prop_assert_eq!(got, protocol::decode_text(&text)),
        }
    }

    /// The replies built from a decoded command are JSON, with R-RPL-3's precedence.
    #[test]
    fn replies_are_json(v in command()) {
        let Decoded::Command(ev, cmd) = protocol::decode_text(&v.to_string()) else {
            return Ok(());
        };
        let pong = parse(&protocol::pong_reply(&cmd));
        prop_assert_eq!(pong.get("event"), Some(&Value::from("pong")));
        prop_assert!(pong.get("data").is_some());
        let extra = protocol::capture_extra_fields(&cmd, &["extra".into(), "status".into()]);
        let sub = match protocol::subscription_name(&cmd) {
            protocol::Name::Ok { name, .. } | protocol::Name::BadFormat(name) => Some(name),
            _ => None,
        };
        let err = protocol::error_text(&cmd, protocol::ERR_UNHANDLED);
        let reply = parse(&protocol::reply(
            ev.name(),
            Some(&err),
            Some(&extra),
            cmd.get("data"),
            sub,
        ));
        prop_assert_eq!(reply.get("event"), Some(&Value::from(ev.name())));
        prop_assert_eq!(reply.get("error"), Some(&err));
        prop_assert_eq!(reply.get("data"), cmd.get("data"));
        prop_assert_eq!(reply.get("subscription").and_then(Value::as_str), sub);
        let status = extra.get("status").cloned().unwrap_or(Value::from("error"));
        prop_assert_eq!(reply.get("status"), Some(&status));
    }
}

// ---------------------------------------------------------------------------------------------
// Published messages
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// R-PUB-3/5/7/8: decode never panics, rejects by the rules, and frames carry `data`
    /// unchanged.
    #[test]
    fn published_decode_and_frame(v in published()) {
        let text = v.to_string();
        let m = v.as_object().expect("object");
        match Published::decode(text.as_bytes()) {
            Err(Rejected::NotJson) => prop_assert!(false, "NotJson for {}", text),
            Err(Rejected::InvalidEvent(w)) => {
                prop_assert_eq!(&w, &v);
                prop_assert!(!m.contains_key("subscription") || !m.contains_key("data"));
            }
            Err(Rejected::Dropped(why)) => {
                let sub_ok = m.get("subscription").is_some_and(Value::is_string);
                let opts_ok = publish::parse_options(m.get("options")).is_ok();
                let pa_ok = matches!(
                    m.get("published_at"),
                    None | Some(Value::Null | Value::String(_))
                );
                prop_assert!(!(sub_ok && opts_ok && pa_ok), "dropped ({}): {}", why, text);
            }
            Ok(msg) => {
                let data = &m["data"];
                prop_assert_eq!(Some(&Value::from(msg.subscription.as_str())), m.get("subscription"));
                let pa = m.get("published_at").and_then(Value::as_str).and_then(normalize_published_at);
                prop_assert_eq!(&msg.published_at, &pa);
                let mut fast = Map::new();
                fast.insert("extra".into(), m.get("extra").cloned().unwrap_or(Value::from(1)));
                let mut slow = Map::new();
                slow.insert("event".into(), Value::from("overwritten"));
                slow.insert("queue_size".into(), data.clone());
                for set in [Map::new(), fast, slow] {
                    let extra = ExtraFields::new(set.clone());
                    for (live, with_published_at) in
                        [(None, true), (Some(("2026-01-01T00:00:00+00:00", 3)), false)]
                    {
                        let meta = Meta { live, sent_at: "2026-01-01T00:00:01+00:00", with_published_at };
                        let frame = parse(&publish::frame(&msg.subscription, &msg, &extra, meta));
                        prop_assert_eq!(frame.get("data"), Some(data), "frame {}", frame);
                        prop_assert_eq!(
                            frame.get("subscription").and_then(Value::as_str),
                            Some(msg.subscription.as_str())
                        );
                        prop_assert_eq!(
                            frame.get("published_at").and_then(Value::as_str),
                            pa.as_deref().filter(|_| with_published_at)
                        );
                        prop_assert_eq!(
                            frame.get("sent_at").and_then(Value::as_str),
                            Some("2026-01-01T00:00:01+00:00")
                        );
                        for (k, v) in &set {
                            prop_assert_eq!(frame.get(k), Some(v));
                        }
                    }
                }
            }
        }
    }

    /// Arbitrary bytes as a published payload: no panic.
    #[test]
    fn published_decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = Published::decode(&bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// Python semantics, timestamps
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// `py_eq` is reflexive and symmetric, survives a JSON round trip, and holds between a value
    /// and its Python-equal variants (`1`/`1.0`/`true`); on scalars, `hash_key` equality is
    /// `py_eq`.
    #[test]
    fn py_eq_reflexive_and_symmetric(a in json(), b in json(), seed in any::<u64>()) {
        prop_assert!(pyjson::py_eq(&a, &a));
        prop_assert!(pyjson::py_eq(&a, &parse(&a.to_string())));
        prop_assert_eq!(pyjson::py_eq(&a, &b), pyjson::py_eq(&b, &a));
        let mut bits = seed;
        let mut flip = || {
            bits = bits.rotate_left(1);
            bits & 1 == 1
        };
        let c = variant(&a, &mut flip);
        prop_assert!(pyjson::py_eq(&a, &c), "{} != {}", a, c);
        prop_assert!(pyjson::py_eq(&c, &a));
        prop_assert_eq!(pyjson::truthy(&a), pyjson::truthy(&c));
        for (x, y) in [(&a, &b), (&a, &c)] {
            let (hx, hy) = (pyjson::hash_key(Some(x)), pyjson::hash_key(Some(y)));
            prop_assert_eq!(hx.is_some(), is_scalar(x));
            prop_assert_eq!(hy.is_some(), is_scalar(y));
            if is_scalar(x) && is_scalar(y) {
                prop_assert_eq!(hx == hy, pyjson::py_eq(x, y), "{} {}", x, y);
            }
        }
    }

    /// `published_at` normalisation is idempotent.
    #[test]
    fn normalize_published_at_is_idempotent(s in iso_like()) {
        if let Some(out) = normalize_published_at(&s) {
            let again = normalize_published_at(&out);
            prop_assert_eq!(again.as_deref(), Some(out.as_str()), "{:?}", s);
        }
    }
}
