//! The checks behind the fuzz targets in `fuzz_targets/`.
//!
//! Each public function takes one fuzzer input and panics if an invariant is broken (under
//! libFuzzer, any panic, in any thread, aborts and is reported as a crash). They live in a library
//! so that `cargo test` in this directory can replay the seed corpora and the saved regressions on
//! a stable toolchain (`tests/replay.rs`).
//!
//! Inputs that may nest deeply run on a thread with the server's worker stack
//! ([`pyjson::WORKER_STACK`]): the server parses, clones, serialises and drops values nested up to
//! [`pyjson::MAX_DEPTH`] on such threads, never on a smaller stack.

use serde_json::{Map, Value};
use socketshark::compat::isotime::normalize_published_at;
use socketshark::protocol::{self, Decoded, Event, Name};
use socketshark::publish::{self, ExtraFields, Meta, Published, Rejected};
use socketshark::compat::pyjson::{self, HashKey};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Inputs with more opening-bracket bytes than this run on a worker-sized stack. The count of
/// `[`/`{` bytes bounds the nesting in UTF-8, UTF-16 and UTF-32 alike.
const INLINE_BRACKETS: usize = 64;

/// Runs `f` on the caller's thread for shallow inputs, else on a fresh thread with the server's
/// worker stack (a panic there aborts under libFuzzer, and is re-raised here otherwise).
pub fn on_worker_stack<R: Send>(data: &[u8], f: impl FnOnce() -> R + Send) -> R {
    let brackets = data.iter().filter(|&&c| c == b'[' || c == b'{').count();
    if brackets <= INLINE_BRACKETS {
        return f();
    }
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("fuzz-worker".to_owned())
            .stack_size(pyjson::WORKER_STACK)
            .spawn_scoped(scope, f)
            .expect("spawn a worker-stack thread");
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The deepest bracket nesting of a text outside JSON strings (exact for valid JSON).
pub fn nesting(text: &str) -> usize {
    pyjson::nesting(text.as_bytes())
}

/// Parses an output of the server (a reply or a frame): it must be JSON that the server itself
/// would accept again.
fn reparse(text: &str, what: &str) -> Value {
    match pyjson::parse(text) {
        Ok(v) => v,
        Err(e) => panic!("{what} is not JSON ({e}): {text:.300}"),
    }
}

/// `a == b` as maps, and the same key order.
fn assert_same_object(got: &Value, want: &Map<String, Value>, what: &str) {
    let Value::Object(got) = got else {
        panic!("{what}: not an object: {got:.300}");
    };
    assert!(got == want, "{what}: {got:?} != {want:?}");
    assert!(
        got.keys().eq(want.keys()),
        "{what}: key order {:?} != {:?}",
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

// ---------------------------------------------------------------------------------------------
// client_frame
// ---------------------------------------------------------------------------------------------

/// Is `data` (valid UTF-8) read as plain UTF-8 by `json.loads(bytes)`'s encoding detection?
fn detected_as_plain_utf8(data: &[u8]) -> bool {
    let nul_pattern = match data.len() {
        2 => data[0] == 0 || data[1] == 0,
        n if n >= 4 => data[0] == 0 || data[1] == 0,
        _ => false,
    };
    !data.starts_with(&[0xEF, 0xBB, 0xBF]) && !nul_pattern
}

/// Client frames: text and binary decoding, classification (R-FRM-1..4), then every reply the
/// protocol module builds from what decodes (R-RPL, R-PING, R-NAME, R-EXT).
pub fn client_frame(data: &[u8]) {
    on_worker_stack(data, || {
        let bin = protocol::decode_binary(data);
        match pyjson::decode_binary(data) {
            None => assert_eq!(bin, Decoded::Undecodable),
            Some(text) => {
                let as_text = protocol::decode_text(&text);
                assert_eq!(bin, as_text, "binary != text decoding of {text:?}");
                check_decoded(&text, &as_text);
            }
        }
        if let Ok(text) = std::str::from_utf8(data) {
            if detected_as_plain_utf8(data) {
                assert_eq!(pyjson::decode_binary(data).as_deref(), Some(text));
            } else {
                check_decoded(text, &protocol::decode_text(text));
            }
        }
    });
}

/// Is `text` one JSON document that the server must accept: valid for serde_json (which, like
/// `pyjson`, rejects lone surrogates, `NaN` and a BOM) and nested at most `MAX_DEPTH` deep?
fn acceptable_json(text: &str) -> bool {
    if nesting(text) > pyjson::MAX_DEPTH {
        return false;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    serde::Deserialize::deserialize(&mut de)
        .map(|_: Value| ())
        .and_then(|()| de.end())
        .is_ok()
}

fn check_decoded(text: &str, decoded: &Decoded) {
    let valid = acceptable_json(text);
    match decoded {
        Decoded::Undecodable => panic!("decode_text gave Undecodable"),
        Decoded::NotJson => {
            assert!(!valid, "acceptable JSON classified NotJson: {text:.300}");
            let _ = protocol::invalid_message_reply();
        }
        Decoded::Invalid(v) => {
            assert!(valid, "invalid JSON accepted: {text:.300}");
            if let Value::Object(m) = v {
                assert!(
                    !matches!(m.get("event"), Some(Value::String(e)) if pyjson::char_len(e) <= protocol::MAX_EVENT_LEN),
                    "object with a valid event classified Invalid: {text:.300}"
                );
            }
            let r = reparse(&protocol::invalid_message_reply(), "invalid_message_reply");
            let mut want = Map::new();
            want.insert("status".into(), s("error"));
            want.insert("error".into(), s(protocol::ERR_INVALID_MESSAGE));
            assert_same_object(&r, &want, "invalid_message_reply");
        }
        Decoded::Unknown(name, v) => {
            assert!(valid, "invalid JSON accepted: {text:.300}");
            assert!(pyjson::char_len(name) <= protocol::MAX_EVENT_LEN);
            assert!(Event::parse(name).is_none());
            assert_eq!(v.get("event"), Some(&s(name)));
            let r = reparse(&protocol::unknown_event_reply(name), "unknown_event_reply");
            let mut want = Map::new();
            want.insert("event".into(), s(name));
            want.insert("status".into(), s("error"));
            want.insert("error".into(), s(protocol::ERR_EVENT_NOT_FOUND));
            assert_same_object(&r, &want, "unknown_event_reply");
        }
        Decoded::Command(ev, map) => {
            assert!(valid, "invalid JSON accepted: {text:.300}");
            assert_eq!(map.get("event"), Some(&s(ev.name())));
            assert_eq!(Event::parse(ev.name()), Some(*ev));
            check_command(*ev, map);
        }
    }
}

fn check_command(ev: Event, cmd: &Map<String, Value>) {
    // R-PING-1
    let pong = reparse(&protocol::pong_reply(cmd), "pong_reply");
    let data = match cmd.get("data") {
        Some(Value::String(d)) => {
            let t = pyjson::truncate_chars(d, protocol::MAX_PONG_LEN);
            assert_eq!(
                pyjson::char_len(t),
                pyjson::char_len(d).min(protocol::MAX_PONG_LEN)
            );
            assert!(d.starts_with(t));
            s(t)
        }
        _ => Value::Null,
    };
    let mut want = Map::new();
    want.insert("event".into(), s("pong"));
    want.insert("data".into(), data);
    assert_same_object(&pong, &want, "pong_reply");

    // R-NAME
    let name = protocol::subscription_name(cmd);
    let sub = match name {
        Name::Missing => {
            assert!(cmd.get("subscription").is_none_or(|v| !pyjson::truthy(v)));
            None
        }
        Name::NotAString => {
            let v = cmd
                .get("subscription")
                .expect("NotAString without subscription");
            assert!(pyjson::truthy(v) && !v.is_string());
            None
        }
        Name::BadFormat(n) => {
            assert_eq!(cmd.get("subscription"), Some(&s(n)));
            assert!(!matches!(n.split_once('.'), Some((a, b)) if !a.is_empty() && !b.is_empty()));
            Some(n)
        }
        Name::Ok { name, service } => {
            assert_eq!(cmd.get("subscription"), Some(&s(name)));
            let (a, b) = name.split_once('.').expect("Ok name without a dot");
            assert!(a == service && !a.is_empty() && !b.is_empty());
            Some(name)
        }
    };

    // R-EXT-1: the command's own keys (bounded), plus one that is absent.
    let mut names: Vec<String> = cmd.keys().take(8).cloned().collect();
    names.push("\u{0}absent".to_owned());
    let extra = protocol::capture_extra_fields(cmd, &names);
    for (k, v) in &extra {
        assert_eq!(cmd.get(k), Some(v));
    }
    assert_eq!(
        extra.len(),
        names.iter().filter(|n| cmd.contains_key(*n)).count()
    );

    // R-RESP
    let err = protocol::error_text(cmd, protocol::ERR_UNHANDLED);
    assert_eq!(
        &err,
        cmd.get("error").unwrap_or(&s(protocol::ERR_UNHANDLED))
    );
    if let Some(d) = protocol::error_data(cmd) {
        assert!(pyjson::truthy(d));
    }
    assert_eq!(protocol::is_ok(cmd), cmd.get("status") == Some(&s("ok")));

    // R-RPL-1..3 with every combination of the optional parts.
    let errors = [None, Some(s(protocol::ERR_UNAUTHORIZED)), Some(err)];
    let extras = [None, Some(&extra)];
    let datas = [None, cmd.get("data")];
    let subs = [None, sub];
    for error in &errors {
        for x in extras {
            for data in datas {
                for sub in subs {
                    let got = protocol::reply(ev.name(), error.as_ref(), x, data, sub);
                    let got = reparse(&got, "reply");
                    let mut want = Map::new();
                    want.insert("event".into(), s(ev.name()));
                    match error {
                        None => {
                            want.insert("status".into(), s("ok"));
                        }
                        Some(e) => {
                            want.insert("status".into(), s("error"));
                            want.insert("error".into(), e.clone());
                        }
                    }
                    for (k, v) in x.into_iter().flatten() {
                        want.insert(k.clone(), v.clone());
                    }
                    if let Some(d) = data {
                        want.insert("data".into(), d.clone());
                    }
                    if let Some(n) = sub {
                        want.insert("subscription".into(), s(n));
                    }
                    assert_same_object(&got, &want, "reply");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// published_message
// ---------------------------------------------------------------------------------------------

const FRAME_KEYS: [&str; 7] = [
    "event",
    "subscription",
    "data",
    "published_at",
    "received_at",
    "queue_size",
    "sent_at",
];

/// Published messages (R-PUB-3/5/7/8/9): decoding agrees with the rules, then frames built with
/// and without extra fields, live or not, with or without `published_at`, are JSON with exactly
/// the expected keys, in order, and the message's `data` unchanged.
pub fn published_message(data: &[u8]) {
    on_worker_stack(data, || {
        let decoded = Published::decode(data);
        let parsed = pyjson::parse_bytes(data);
        let (fields, msg) = match (parsed, decoded) {
            (Err(_), Err(Rejected::NotJson)) => return,
            (Err(e), other) => panic!("parse_bytes failed ({e}) but decode gave {other:?}"),
            (Ok(_), Err(Rejected::NotJson)) => panic!("decode said NotJson for parseable JSON"),
            (Ok(v), Err(Rejected::InvalidEvent(w))) => {
                assert_eq!(v, w);
                assert!(
                    !matches!(&v, Value::Object(m) if m.contains_key("subscription") && m.contains_key("data")),
                    "InvalidEvent for an object with subscription and data"
                );
                return;
            }
            (Ok(v), Err(Rejected::Dropped(why))) => {
                let m = v.as_object().expect("Dropped a non-object");
                let sub_ok = m.get("subscription").is_some_and(Value::is_string);
                let opts_ok = publish::parse_options(m.get("options")).is_ok();
                let pa_ok = matches!(
                    m.get("published_at"),
                    None | Some(Value::Null | Value::String(_))
                );
                assert!(
                    !(sub_ok && opts_ok && pa_ok),
                    "dropped for no reason ({why})"
                );
                return;
            }
            (Ok(v), Ok(msg)) => {
                let Value::Object(m) = v else {
                    panic!("decoded a non-object")
                };
                check_published(&m, &msg);
                (m, msg)
            }
        };
        check_frames(&fields, &msg);
    });
}

fn check_published(m: &Map<String, Value>, msg: &Published) {
    assert_eq!(m.get("subscription"), Some(&s(&msg.subscription)));
    let data = m.get("data").expect("no data");
    assert_eq!(msg.data, data.to_string());
    assert_eq!(&msg.fields, m);
    let published_at = match m.get("published_at") {
        Some(Value::String(p)) => normalize_published_at(p),
        None | Some(Value::Null) => None,
        Some(other) => panic!("accepted published_at {other}"),
    };
    assert_eq!(msg.published_at, published_at);
    // Debug text, not ==: an order or throttle may be NaN.
    assert_eq!(
        format!("{:?}", Ok::<_, &str>(&msg.options)),
        format!("{:?}", publish::parse_options(m.get("options")).as_ref())
    );
}

fn check_frames(fields: &Map<String, Value>, msg: &Published) {
    let data = fields.get("data").expect("no data");
    // Extra-field sets: none; non-colliding (fast path) with values taken from the message;
    // colliding with frame keys but not `data` (slow path); colliding with `data` too.
    let others: Vec<(&String, &Value)> = fields
        .iter()
        .filter(|(k, _)| !FRAME_KEYS.contains(&k.as_str()))
        .take(4)
        .collect();
    let pick = |i: usize| -> Value {
        others
            .get(i)
            .map_or_else(|| Value::from(i), |(_, v)| (*v).clone())
    };
    let mut fast = Map::new();
    fast.insert("extra".into(), s("bar"));
    for (k, v) in &others {
        fast.insert((*k).clone(), (*v).clone());
    }
    let mut slow = Map::new();
    slow.insert("extra".into(), pick(0));
    slow.insert("event".into(), pick(1));
    slow.insert("queue_size".into(), pick(2));
    slow.insert("sent_at".into(), s("overwritten"));
    let mut slow_data = Map::new();
    slow_data.insert("data".into(), pick(0));
    slow_data.insert("published_at".into(), pick(1));
    slow_data.insert("subscription".into(), s("x.y"));
    let sets = [Map::new(), fast, slow, slow_data];

    let received_at = "2026-11-24T21:13:15.563448+00:00";
    let sent_at = "2026-11-24T21:13:15.600000+00:00";
    let queue_size = fields.len() * 7;
    for set in sets {
        let extra = ExtraFields::new(set.clone());
        assert_eq!(
            extra.fragment().is_some(),
            !set.keys().any(|k| FRAME_KEYS.contains(&k.as_str()))
        );
        for live in [None, Some((received_at, queue_size))] {
            for with_published_at in [true, false] {
                let meta = Meta {
                    live,
                    sent_at,
                    with_published_at,
                };
                let frame = publish::frame(&msg.subscription, msg, &extra, meta);
                let got = reparse(&frame, "frame");
                let mut want = Map::new();
                want.insert("event".into(), s("message"));
                want.insert("subscription".into(), s(&msg.subscription));
                want.insert("data".into(), data.clone());
                if let Some(p) = msg.published_at.as_deref().filter(|_| with_published_at) {
                    want.insert("published_at".into(), s(p));
                }
                if let Some((r, q)) = live {
                    want.insert("received_at".into(), s(r));
                    want.insert("queue_size".into(), Value::from(q));
                }
                for (k, v) in &set {
                    want.insert(k.clone(), v.clone());
                }
                want.insert("sent_at".into(), s(sent_at));
                if !set.contains_key("data") {
                    assert!(
                        got.get("data") == want.get("data"),
                        "frame changed data (extra keys {:?}): {:.200} -> {:.200}",
                        set.keys().collect::<Vec<_>>(),
                        data.to_string(),
                        got.get("data").map(Value::to_string).unwrap_or_default()
                    );
                }
                assert_same_object(&got, &want, "frame");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// pyjson
// ---------------------------------------------------------------------------------------------

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

fn same_float(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => x == y || (x.is_nan() && y.is_nan()),
        _ => false,
    }
}

/// Values every input is compared with.
fn probes() -> Vec<Value> {
    [
        "null",
        "true",
        "false",
        "0",
        "-0",
        "0.0",
        "-0.0",
        "1",
        "1.0",
        "1e0",
        "-1",
        "2",
        "0.5",
        "1e400",
        "-1e400",
        "1e-400",
        "1e30",
        "1000000000000000019884624838656",
        "\"\"",
        "\"1\"",
        "\"a\"",
        "[]",
        "{}",
        "[1]",
        "[true]",
        "{\"a\":1}",
        "{\"a\":1.0}",
    ]
    .iter()
    .map(|t| serde_json::from_str(t).expect("probe"))
    .collect()
}

/// Python's `float(str)` agrees with Rust's parser on texts made only of `[0-9.eE+-]`.
fn check_float_from_str(text: &str) {
    let got = pyjson::float_from_str(text);
    if !text.is_empty()
        && text
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        let want = text.parse::<f64>().ok();
        assert!(
            same_float(got, want),
            "float_from_str({text:?}) = {got:?}, Rust parse gives {want:?}"
        );
    }
    if let Some(f) = got {
        // Surrounding ASCII whitespace is stripped.
        assert!(same_float(
            pyjson::float_from_str(&format!(" \t{text}\n ")),
            Some(f)
        ));
    }
}

fn check_number_float(v: &Value) {
    let Value::Number(n) = v else { return };
    let text = n.as_str();
    let rust = text.parse::<f64>().expect("a JSON number parses as f64");
    let integral = !text.contains(['.', 'e', 'E']);
    let want = if integral && rust.is_infinite() {
        None // OverflowError
    } else {
        Some(rust)
    };
    assert!(same_float(pyjson::py_float(v), want), "py_float({text})");
}

/// Checks the rules that relate `py_eq`, `truthy`, `py_float` and `hash_key` on a pair.
fn check_pair(a: &Value, b: &Value) {
    let eq = pyjson::py_eq(a, b);
    assert_eq!(eq, pyjson::py_eq(b, a), "py_eq not symmetric: {a} {b}");
    if eq {
        assert_eq!(
            pyjson::truthy(a),
            pyjson::truthy(b),
            "equal, truthy differs: {a} {b}"
        );
        assert!(
            same_float(pyjson::py_float(a), pyjson::py_float(b)),
            "equal, float() differs: {a} {b}"
        );
    }
    if is_scalar(a) && is_scalar(b) {
        let (ha, hb) = (pyjson::hash_key(Some(a)), pyjson::hash_key(Some(b)));
        assert!(ha.is_some() && hb.is_some(), "unhashable scalar: {a} {b}");
        assert_eq!(
            ha == hb,
            eq,
            "hash_key equality != py_eq: {a} {b} ({ha:?} {hb:?})"
        );
    }
}

/// JSON with Python semantics: parsing, `py_eq` (reflexive, symmetric, survives a round trip),
/// `truthy`, `py_float`, `hash_key` (equal keys ⇔ equal scalars), `float_from_str`,
/// `decode_binary`, `truncate_chars`.
pub fn pyjson(data: &[u8]) {
    on_worker_stack(data, || {
        let text = std::str::from_utf8(data).ok();
        let parsed = pyjson::parse_bytes(data);
        match text {
            None => assert!(parsed.is_err()),
            Some(t) => {
                assert_eq!(parsed, pyjson::parse(t));
                check_float_from_str(t);
                let n = data.len() % 7;
                let cut = pyjson::truncate_chars(t, n);
                assert_eq!(pyjson::char_len(cut), pyjson::char_len(t).min(n));
                assert!(t.starts_with(cut));
            }
        }
        if let Some(d) = pyjson::decode_binary(data) {
            let _ = pyjson::parse(&d);
        }
        let Ok(v) = parsed else { return };

        assert!(pyjson::py_eq(&v, &v), "py_eq not reflexive");
        let copy = v.clone();
        assert!(pyjson::py_eq(&v, &copy));
        let again = reparse(&v.to_string(), "serialised value");
        assert!(again == v, "round trip changed the value");
        assert!(pyjson::py_eq(&v, &again));
        let truthy = pyjson::truthy(&v);
        match &v {
            Value::Array(a) => assert_eq!(truthy, !a.is_empty()),
            Value::Object(o) => assert_eq!(truthy, !o.is_empty()),
            Value::String(st) => {
                assert_eq!(truthy, !st.is_empty());
                assert!(same_float(pyjson::py_float(&v), pyjson::float_from_str(st)));
                check_float_from_str(st);
            }
            Value::Null => assert!(!truthy),
            Value::Bool(b) => assert_eq!(truthy, *b),
            Value::Number(_) => {
                assert_eq!(truthy, !pyjson::py_eq(&v, &Value::from(0)));
                check_number_float(&v);
            }
        }
        match pyjson::hash_key(Some(&v)) {
            None => assert!(!is_scalar(&v)),
            Some(k) => {
                assert!(is_scalar(&v));
                if let HashKey::Float(bits) = k {
                    let f = f64::from_bits(bits);
                    assert!(f != 0.0 && (f.is_infinite() || f.fract() != 0.0));
                }
            }
        }

        // Pairs among the value, a few of its members and fixed probes.
        let mut vals: Vec<&Value> = vec![&v];
        match &v {
            Value::Array(a) => vals.extend(a.iter().take(10)),
            Value::Object(o) => vals.extend(o.values().take(10)),
            _ => {}
        }
        for m in vals.iter().skip(1) {
            check_number_float(m);
            if let Value::String(st) = m {
                check_float_from_str(st);
            }
        }
        let probes = probes();
        let all: Vec<&Value> = vals.iter().copied().chain(probes.iter()).collect();
        for (i, a) in vals.iter().enumerate() {
            for b in &all[i..] {
                check_pair(a, b);
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// isotime
// ---------------------------------------------------------------------------------------------

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff][±HH:MM[:SS[.ffffff]]]`, a real date and time, an offset under
/// 24 h; microseconds printed only when non-zero.
fn check_isoformat(out: &str) {
    let b = out.as_bytes();
    let bad = || -> ! { panic!("not isoformat(): {out:?}") };
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        bad();
    }
    let (y, mo, d) = (digits(&b[0..4]), digits(&b[5..7]), digits(&b[8..10]));
    let (h, mi, se) = (digits(&b[11..13]), digits(&b[14..16]), digits(&b[17..19]));
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(se)) = (y, mo, d, h, mi, se) else {
        bad()
    };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let dim = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    assert!((1..=9999).contains(&y) && (1..=12).contains(&mo), "{out}");
    assert!(d >= 1 && d <= dim[(mo - 1) as usize], "{out}");
    assert!(h < 24 && mi < 60 && se < 60, "{out}");
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let us = rest.get(1..7).and_then(digits).unwrap_or_else(|| bad());
        assert!(us != 0, "zero microseconds printed: {out}");
        rest = &rest[7..];
    }
    if rest.is_empty() {
        return;
    }
    if !(rest[0] == b'+' || rest[0] == b'-') || rest.len() < 6 || rest[3] != b':' {
        bad();
    }
    let (oh, om) = (digits(&rest[1..3]), digits(&rest[4..6]));
    let (Some(oh), Some(om)) = (oh, om) else {
        bad()
    };
    let mut osec = 0;
    let mut ous = 0;
    let tail = &rest[6..];
    match tail.len() {
        0 => {}
        3 if tail[0] == b':' => osec = digits(&tail[1..3]).unwrap_or_else(|| bad()),
        10 if tail[0] == b':' && tail[3] == b'.' => {
            osec = digits(&tail[1..3]).unwrap_or_else(|| bad());
            ous = digits(&tail[4..10]).unwrap_or_else(|| bad());
            assert!(ous != 0, "zero offset microseconds printed: {out}");
        }
        _ => bad(),
    }
    assert!(om < 60 && osec < 60, "{out}");
    if tail.len() == 3 {
        assert!(osec != 0, "zero offset seconds printed: {out}");
    }
    let total_us = ((oh * 60 + om) * 60 + osec) * 1_000_000 + ous;
    assert!(
        total_us < 86_400 * 1_000_000,
        "offset of 24 h or more: {out}"
    );
    if total_us == 0 {
        assert_eq!(rest, b"+00:00", "UTC offset not printed as +00:00: {out}");
    }
}

/// `published_at` normalisation (R-PUB-8): never panics; its output is `isoformat()`-shaped and
/// re-normalises to itself.
pub fn isotime(data: &[u8]) {
    let lossy = String::from_utf8_lossy(data);
    for text in [&*lossy, lossy.trim()] {
        if let Some(out) = normalize_published_at(text) {
            check_isoformat(&out);
            assert_eq!(
                normalize_published_at(&out).as_deref(),
                Some(out.as_str()),
                "not idempotent: {text:?} -> {out:?}"
            );
        }
    }
}
