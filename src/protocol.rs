//! The client protocol: decoding client frames into commands and building replies.
//! Pure: no IO, no state. Wire strings are exact (SPEC.md R-FRM, R-RPL, R-PING and the error
//! texts of R-AUTH, R-NAME, R-SUB, R-MSG, R-UNS).

use serde_json::{Map, Value};

use crate::compat::pyjson::{self, JsonError};

pub const ERR_INVALID_MESSAGE: &str = "Messages must be JSON and contain an event field.";
pub const ERR_EVENT_NOT_FOUND: &str = "Event not found.";
pub const ERR_AUTH_METHOD: &str = "Authentication method unsupported.";
pub const ERR_NO_TICKET: &str = "Must specify ticket.";
pub const ERR_AUTH_FAILED: &str = "Authentication failed.";
pub const ERR_SERVICE_UNAVAILABLE: &str = "Service unavailable.";
pub const ERR_INVALID_SUBSCRIPTION: &str = "Invalid subscription format.";
pub const ERR_INVALID_SERVICE: &str = "Invalid service.";
pub const ERR_AUTH_REQUIRED: &str = "Authentication required.";
pub const ERR_ALREADY_SUBSCRIBED: &str = "Already subscribed.";
pub const ERR_UNAUTHORIZED: &str = "Unauthorized.";
pub const ERR_UNHANDLED: &str = "Unhandled exception.";
pub const ERR_NO_SUBSCRIPTION: &str = "Subscription does not exist.";
/// Not in the reference: `limits.max_subscriptions` reached.
pub const ERR_TOO_MANY_SUBSCRIPTIONS: &str = "Too many subscriptions.";
/// Not in the reference: `limits.max_events_per_second` exceeded.
pub const ERR_RATE_LIMITED: &str = "Rate limit exceeded.";
/// Not in the reference: `auth` with `"method": "jwt"` and no `token`.
pub const ERR_NO_TOKEN: &str = "Must specify token.";
/// Not in the reference: the JWT's `exp` has passed.
pub const ERR_TOKEN_EXPIRED: &str = "Token expired.";
/// Not in the reference: `presence` on a service without `presence = true`.
pub const ERR_NO_PRESENCE: &str = "Presence is not enabled.";
/// Not in the reference: `history` on a service without `history_size`.
pub const ERR_NO_HISTORY: &str = "History is not enabled.";

/// Longest accepted event name, in code points (R-FRM-3).
pub const MAX_EVENT_LEN: usize = 40;
/// Longest pong data, in code points (R-PING-1).
pub const MAX_PONG_LEN: usize = 128;

/// The known client events (R-FRM-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Auth,
    Subscribe,
    Message,
    Unsubscribe,
    Ping,
    /// Not in the reference (issue 14).
    History,
    Presence,
    PresenceStats,
}

impl Event {
    pub fn parse(name: &str) -> Option<Event> {
        Some(match name {
            "auth" => Event::Auth,
            "subscribe" => Event::Subscribe,
            "message" => Event::Message,
            "unsubscribe" => Event::Unsubscribe,
            "ping" => Event::Ping,
            "history" => Event::History,
            "presence" => Event::Presence,
            "presence_stats" => Event::PresenceStats,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Event::Auth => "auth",
            Event::Subscribe => "subscribe",
            Event::Message => "message",
            Event::Unsubscribe => "unsubscribe",
            Event::Ping => "ping",
            Event::History => "history",
            Event::Presence => "presence",
            Event::PresenceStats => "presence_stats",
        }
    }
}

/// What a client frame decodes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Not JSON (or nested too deeply): R-FRM-2 reply, not counted in metrics.
    NotJson,
    /// JSON, but not an object with a string `event` of at most 40 code points: R-FRM-3 reply,
    /// counted as `invalid`.
    Invalid(Value),
    /// An event name that is not known: R-FRM-4 reply, counted as `unknown`.
    Unknown(String, Value),
    /// A known command; the map is the whole command object.
    Command(Event, Map<String, Value>),
    /// A binary message whose bytes cannot be decoded as text (R-DEF-3): close without reply.
    Undecodable,
}

/// Decodes a text message (R-FRM-1..4).
pub fn decode_text(text: &str) -> Decoded {
    match pyjson::parse(text) {
        Ok(v) => classify(v),
        Err(JsonError::Invalid | JsonError::TooDeep) => Decoded::NotJson,
    }
}

/// Decodes a binary message like Python's `json.loads(bytes)` (R-FRM-1).
pub fn decode_binary(bytes: &[u8]) -> Decoded {
    match pyjson::decode_binary(bytes) {
        Some(text) => decode_text(&text),
        None => Decoded::Undecodable,
    }
}

fn classify(v: Value) -> Decoded {
    let Value::Object(map) = v else {
        return Decoded::Invalid(v);
    };
    let name = match map.get("event") {
        Some(Value::String(s)) if s.chars().count() <= MAX_EVENT_LEN => s.clone(),
        _ => return Decoded::Invalid(Value::Object(map)),
    };
    match Event::parse(&name) {
        Some(ev) => Decoded::Command(ev, map),
        None => Decoded::Unknown(name, Value::Object(map)),
    }
}

/// The result of validating a command's `subscription` (R-NAME).
#[derive(Debug, Clone, PartialEq)]
pub enum Name<'a> {
    /// Missing or falsy: `Invalid subscription format.` without a `subscription` key.
    Missing,
    /// A truthy non-string (R-NAME-5 / R-DEF-3): the connection is closed without a reply.
    NotAString,
    /// A string without a `.` or with an empty service or topic part.
    BadFormat(&'a str),
    /// Well-formed: `service.topic`, split at the first dot.
    Ok { name: &'a str, service: &'a str },
}

pub fn subscription_name(cmd: &Map<String, Value>) -> Name<'_> {
    match cmd.get("subscription") {
        None => Name::Missing,
        Some(v) if !pyjson::truthy(v) => Name::Missing,
        Some(Value::String(s)) => match s.split_once('.') {
            Some((service, topic)) if !service.is_empty() && !topic.is_empty() => {
                Name::Ok { name: s, service }
            }
            _ => Name::BadFormat(s),
        },
        Some(_) => Name::NotAString,
    }
}

/// The fields of a command captured as a subscription's extra fields (R-EXT-1).
pub fn capture_extra_fields(cmd: &Map<String, Value>, names: &[String]) -> Map<String, Value> {
    let mut out = Map::new();
    for name in names {
        if let Some(v) = cmd.get(name) {
            out.insert(name.clone(), v.clone());
        }
    }
    out
}

/// `v` as compact JSON text: the bytes of `Value::to_string`, without the `fmt` machinery
/// (measured: 2 % of the server's CPU in the echo bench went to `Display`).
pub fn json_text(v: &Value) -> String {
    serde_json::to_string(v).expect("a Value serialises")
}

/// The keys a reply sets itself.
const REPLY_KEYS: [&str; 5] = ["event", "status", "error", "data", "subscription"];

/// Builds a reply (R-RPL-1..3): `event`, `status`, [`error`], then the extra fields, then
/// [`data`], then [`subscription`]; later keys overwrite earlier ones (in the first one's
/// place, as a Python dict does). Written straight to text unless an extra field overwrites
/// one of the reply's own keys (then through a map, for that precedence).
pub fn reply(
    event: &str,
    error: Option<&Value>,
    extra: Option<&Map<String, Value>>,
    data: Option<&Value>,
    subscription: Option<&str>,
) -> String {
    if extra.is_some_and(|x| x.keys().any(|k| REPLY_KEYS.contains(&k.as_str()))) {
        return reply_through_map(event, error, extra, data, subscription);
    }
    let mut out = Vec::with_capacity(64 + data.map_or(0, |_| 32));
    out.extend_from_slice(b"{\"event\":");
    put_json(&mut out, event);
    match error {
        None => out.extend_from_slice(b",\"status\":\"ok\""),
        Some(e) => {
            out.extend_from_slice(b",\"status\":\"error\",\"error\":");
            put_json(&mut out, e);
        }
    }
    for (k, v) in extra.into_iter().flatten() {
        out.push(b',');
        put_json(&mut out, k);
        out.push(b':');
        put_json(&mut out, v);
    }
    if let Some(d) = data {
        out.extend_from_slice(b",\"data\":");
        put_json(&mut out, d);
    }
    if let Some(s) = subscription {
        out.extend_from_slice(b",\"subscription\":");
        put_json(&mut out, s);
    }
    out.push(b'}');
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Appends `v` as compact JSON (a string escaped as serde_json escapes it).
fn put_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(out, v).expect("serialising into a Vec does not fail");
}

/// [`reply`] through a map: an extra field may overwrite one of the reply's own keys.
fn reply_through_map(
    event: &str,
    error: Option<&Value>,
    extra: Option<&Map<String, Value>>,
    data: Option<&Value>,
    subscription: Option<&str>,
) -> String {
    let mut m = Map::new();
    m.insert("event".into(), Value::String(event.into()));
    match error {
        None => {
            m.insert("status".into(), Value::String("ok".into()));
        }
        Some(e) => {
            m.insert("status".into(), Value::String("error".into()));
            m.insert("error".into(), e.clone());
        }
    }
    if let Some(extra) = extra {
        for (k, v) in extra {
            m.insert(k.clone(), v.clone());
        }
    }
    if let Some(d) = data {
        m.insert("data".into(), d.clone());
    }
    if let Some(s) = subscription {
        m.insert("subscription".into(), Value::String(s.into()));
    }
    json_text(&Value::Object(m))
}

/// `{"status": "error", "error": "Messages must be JSON and contain an event field."}` (R-FRM-2/3).
pub fn invalid_message_reply() -> String {
    let mut m = Map::new();
    m.insert("status".into(), Value::String("error".into()));
    m.insert("error".into(), Value::String(ERR_INVALID_MESSAGE.into()));
    json_text(&Value::Object(m))
}

/// `{"event": <name>, "status": "error", "error": "Event not found."}` (R-FRM-4).
pub fn unknown_event_reply(name: &str) -> String {
    reply(
        name,
        Some(&Value::String(ERR_EVENT_NOT_FOUND.into())),
        None,
        None,
        None,
    )
}

/// `{"event": "pong", "data": ...}` (R-PING-1).
pub fn pong_reply(cmd: &Map<String, Value>) -> String {
    let data = match cmd.get("data") {
        Some(Value::String(s)) => Value::String(pyjson::truncate_chars(s, MAX_PONG_LEN).into()),
        _ => Value::Null,
    };
    let mut m = Map::new();
    m.insert("event".into(), Value::String("pong".into()));
    m.insert("data".into(), data);
    json_text(&Value::Object(m))
}

/// The text of an error from a service result (R-RESP-2): its `error` value verbatim if the key
/// exists (even `null`), else the callback's default text.
pub fn error_text(result: &Map<String, Value>, default: &str) -> Value {
    result
        .get("error")
        .cloned()
        .unwrap_or_else(|| Value::String(default.into()))
}

/// The data attached to an error reply (R-RESP-3): only a truthy `data`.
pub fn error_data(result: &Map<String, Value>) -> Option<&Value> {
    result.get("data").filter(|d| pyjson::truthy(d))
}

/// A service result is successful iff its `status` is exactly the string `"ok"` (R-RESP-1).
pub fn is_ok(result: &Map<String, Value>) -> bool {
    matches!(result.get("status"), Some(Value::String(s)) if s == "ok")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// R-RPL-1..3: the key order and compact form on the wire, pinned.
    #[test]
    fn reply_bytes() {
        let extra = json!({"extra": {"b": 1, "a": [1.5, "é"]}});
        assert_eq!(
            reply("subscribe", None, extra.as_object(), None, Some("s.t")),
            r#"{"event":"subscribe","status":"ok","extra":{"b":1,"a":[1.5,"é"]},"subscription":"s.t"}"#
        );
        assert_eq!(
            reply(
                "message",
                Some(&json!("Nope.")),
                None,
                Some(&json!({"x": null})),
                None
            ),
            r#"{"event":"message","status":"error","error":"Nope.","data":{"x":null}}"#
        );
        // An extra field named like one of the reply's keys overwrites it in its place.
        let extra = json!({"z": 0, "status": "custom"});
        assert_eq!(
            reply("auth", None, extra.as_object(), None, None),
            r#"{"event":"auth","status":"custom","z":0}"#
        );
    }

    /// The text written straight is the map's, byte for byte, whatever the parts.
    #[test]
    fn reply_text_matches_the_map() {
        let extras = [
            None,
            Some(json!({})),
            Some(json!({"k": 1, "é\u{1F600}": [1, 2.5, null], "q\"\\\n": {"a": "\u{7f}\u{1}"}})),
            // Overwrites one of the reply's own keys: the map's precedence.
            Some(json!({"status": "x", "z": 1})),
            Some(json!({"data": 1, "subscription": 2})),
        ];
        let values = [
            None,
            Some(json!("text \"quoted\" \u{2028}")),
            Some(json!({"nested": [1, {"x": false}]})),
            Some(json!(1e300)),
        ];
        for event in ["subscribe", "é\"\\", ""] {
            for extra in &extras {
                let extra = extra.as_ref().map(|v| v.as_object().unwrap());
                for error in &values {
                    for data in &values {
                        for sub in [None, Some("svc.t\u{0}\u{e9}")] {
                            let want =
                                reply_through_map(event, error.as_ref(), extra, data.as_ref(), sub);
                            let got = reply(event, error.as_ref(), extra, data.as_ref(), sub);
                            assert_eq!(got, want);
                        }
                    }
                }
            }
        }
    }

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn decode_invalid_and_unknown() {
        assert_eq!(decode_text("{"), Decoded::NotJson);
        assert_eq!(decode_text(""), Decoded::NotJson);
        assert_eq!(decode_text("{'event': 'ping'}"), Decoded::NotJson);
        for s in [
            "null",
            "\"hello\"",
            "{}",
            "{\"event\": null}",
            "{\"event\": 5}",
            "[1]",
        ] {
            assert!(matches!(decode_text(s), Decoded::Invalid(_)), "{s}");
        }
        let long = format!("{{\"event\": \"{}\"}}", "a".repeat(41));
        assert!(matches!(decode_text(&long), Decoded::Invalid(_)));
        let max = format!("{{\"event\": \"{}\"}}", "é".repeat(40));
        assert!(matches!(decode_text(&max), Decoded::Unknown(..)));
        for name in ["", "hello", "pong", "AUTH", " ping"] {
            let s = json!({ "event": name }).to_string();
            match decode_text(&s) {
                Decoded::Unknown(n, _) => assert_eq!(n, name),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(matches!(
            decode_text("{\"event\": \"ping\"}"),
            Decoded::Command(Event::Ping, _)
        ));
        assert!(matches!(
            decode_binary(b"{\"event\": \"ping\"}"),
            Decoded::Command(Event::Ping, _)
        ));
    }

    #[test]
    fn names() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(subscription_name(&m(json!({}))), Name::Missing);
        assert_eq!(
            subscription_name(&m(json!({"subscription": ""}))),
            Name::Missing
        );
        assert_eq!(
            subscription_name(&m(json!({"subscription": 0}))),
            Name::Missing
        );
        assert_eq!(
            subscription_name(&m(json!({"subscription": 1}))),
            Name::NotAString
        );
        assert_eq!(
            subscription_name(&m(json!({"subscription": [1]}))),
            Name::NotAString
        );
        let cmd = m(json!({"subscription": "invalid"}));
        assert_eq!(subscription_name(&cmd), Name::BadFormat("invalid"));
        for bad in [".topic", "service.", "."] {
            let cmd = m(json!({ "subscription": bad }));
            assert_eq!(subscription_name(&cmd), Name::BadFormat(bad));
        }
        let cmd = m(json!({"subscription": "a.b.c"}));
        assert_eq!(
            subscription_name(&cmd),
            Name::Ok {
                name: "a.b.c",
                service: "a"
            }
        );
    }

    #[test]
    fn reply_precedence() {
        let extra = parse(r#"{"extra": "bar", "status": "x"}"#);
        let r = reply(
            "subscribe",
            None,
            Some(extra.as_object().unwrap()),
            Some(&json!({"a": 1})),
            Some("simple.topic"),
        );
        assert_eq!(
            parse(&r),
            json!({"event": "subscribe", "status": "x", "extra": "bar", "data": {"a": 1}, "subscription": "simple.topic"})
        );
        let r = reply(
            "auth",
            Some(&json!("Authentication failed.")),
            None,
            None,
            None,
        );
        assert_eq!(
            parse(&r),
            json!({"event": "auth", "status": "error", "error": "Authentication failed."})
        );
        // `subscription` always wins over an extra field of the same name.
        let extra = parse(r#"{"subscription": "other"}"#);
        let r = reply(
            "message",
            None,
            Some(extra.as_object().unwrap()),
            None,
            Some("a.b"),
        );
        assert_eq!(parse(&r)["subscription"], json!("a.b"));
    }

    #[test]
    fn pong() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            parse(&pong_reply(&m(json!({"event": "ping"})))),
            json!({"event": "pong", "data": null})
        );
        assert_eq!(
            parse(&pong_reply(&m(json!({"event": "ping", "data": 123})))),
            json!({"event": "pong", "data": null})
        );
        assert_eq!(
            parse(&pong_reply(&m(json!({"event": "ping", "data": "hello"})))),
            json!({"event": "pong", "data": "hello"})
        );
        let long = "x".repeat(200);
        let r = parse(&pong_reply(&m(json!({"event": "ping", "data": long}))));
        assert_eq!(r["data"].as_str().unwrap().len(), 128);
    }

    #[test]
    fn value_fidelity() {
        // Big integers, floats and key order pass through unchanged (R-FRM-6).
        let text =
            r#"{"event":"ping","data":{"b":123456789012345678901234567890,"a":1.50,"c":-0.0}}"#;
        let Decoded::Command(_, m) = decode_text(text) else {
            panic!()
        };
        let out = reply("message", None, None, m.get("data"), None);
        assert!(
            out.contains(r#""data":{"b":123456789012345678901234567890,"a":1.50,"c":-0.0}"#),
            "{out}"
        );
    }

    #[test]
    fn service_results() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert!(is_ok(&m(json!({"status": "ok"}))));
        assert!(!is_ok(&m(json!({"status": "OK"}))));
        assert!(!is_ok(&m(json!({}))));
        assert_eq!(
            error_text(&m(json!({"status": "error"})), "Unauthorized."),
            json!("Unauthorized.")
        );
        assert_eq!(
            error_text(&m(json!({"error": null})), "Unauthorized."),
            Value::Null
        );
        assert_eq!(error_data(&m(json!({"data": {}}))), None);
        assert_eq!(error_data(&m(json!({"data": [1]}))), Some(&json!([1])));
    }
}
