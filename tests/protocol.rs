//! Protocol-level integration tests over real sockets: framing (R-FRM, R-WS, R-NAME, R-ORD),
//! authentication (R-AUTH), metrics and logs (R-MET, R-LOG) and the command line / configuration
//! (R-CFG). Scenario ids (T-n) refer to SPEC.md §21.
mod common;
use common::*;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{ExitStatus, Stdio};

const INVALID_MESSAGE: &str = "Messages must be JSON and contain an event field.";
const METHOD_UNSUPPORTED: &str = "Authentication method unsupported.";
const NO_TICKET: &str = "Must specify ticket.";

// ------------------------------------------------------------------------------------------------
// Local helpers
// ------------------------------------------------------------------------------------------------

/// The R-FRM-2/R-FRM-3 reply (no `event` key).
fn invalid_reply() -> Value {
    json!({"status": "error", "error": INVALID_MESSAGE})
}

fn auth_error(text: Value) -> Value {
    json!({"event": "auth", "status": "error", "error": text})
}

/// Sends a ping with `tag` and asserts the pong (also a barrier, R-ORD-1).
async fn ping_ok(c: &mut Client, tag: &str) {
    let r = c.request(&json!({"event": "ping", "data": tag})).await;
    assert_eq!(r, json!({"event": "pong", "data": tag}), "pong for {tag}");
}

/// Sends raw text and returns the next reply.
async fn request_text(c: &mut Client, text: &str) -> Value {
    c.send_text(text).await;
    c.recv().await
}

/// The next data frame as text (binary frames decoded as UTF-8).
async fn recv_raw(c: &mut Client) -> String {
    match c.recv_frame().await {
        DataFrame::Text(t) => t,
        DataFrame::Binary(b) => String::from_utf8(b).expect("binary reply is not UTF-8"),
    }
}

/// The next data frame (None on timeout), or Err(description) if the connection closed first.
async fn recv_or_close(
    mut c: Client,
    timeout: Duration,
) -> Result<(Client, Option<DataFrame>), String> {
    let task = tokio::spawn(async move {
        let f = c.recv_frame_timeout(timeout).await;
        (c, f)
    });
    match task.await {
        Ok(r) => Ok(r),
        Err(e) => {
            let payload = e.into_panic();
            Err(payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default())
        }
    }
}

/// `depth` nested arrays around `leaf`: `[[[leaf]]]`.
fn nested_arrays(depth: usize, leaf: &str) -> String {
    format!("{}{leaf}{}", "[".repeat(depth), "]".repeat(depth))
}

fn utf16(s: &str, big_endian: bool, bom: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if bom {
        out.extend_from_slice(if big_endian {
            &[0xFE, 0xFF]
        } else {
            &[0xFF, 0xFE]
        });
    }
    for u in s.encode_utf16() {
        out.extend_from_slice(&if big_endian {
            u.to_be_bytes()
        } else {
            u.to_le_bytes()
        });
    }
    out
}

fn utf32(s: &str, big_endian: bool, bom: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if bom {
        out.extend_from_slice(if big_endian {
            &[0x00, 0x00, 0xFE, 0xFF]
        } else {
            &[0xFF, 0xFE, 0x00, 0x00]
        });
    }
    for c in s.chars() {
        let cp = c as u32;
        out.extend_from_slice(&if big_endian {
            cp.to_be_bytes()
        } else {
            cp.to_le_bytes()
        });
    }
    out
}

/// Standard base64 (for the expected `Authorization: Basic` value).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Is `v` a JSON number written as a float (with a fraction or an exponent) equal to `want`?
fn is_float(v: &Value, want: f64) -> bool {
    let text = v.to_string();
    v.is_number() && text.contains(['.', 'e', 'E']) && text.parse::<f64>().is_ok_and(|f| f == want)
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

/// A log timestamp: ISO-8601 UTC with microseconds and `Z` (R-LOG-1).
fn is_log_timestamp(s: &str) -> bool {
    match s.strip_suffix('Z') {
        Some(rest) => {
            rest.len() == 26
                && rest.contains('.')
                && iso_utc_micros(&format!("{rest}+00:00")).is_some()
        }
        None => false,
    }
}

/// Asserts the common shape of a JSON log line (R-LOG-1).
fn assert_log_shape(line: &Value, pid: u32) {
    let o = line
        .as_object()
        .unwrap_or_else(|| panic!("log line is not an object: {line}"));
    assert!(
        !o.contains_key("raw"),
        "log line is not a JSON object: {line}"
    );
    assert!(
        o.get("event").is_some_and(Value::is_string),
        "event: {line}"
    );
    let level = o.get("level").and_then(Value::as_str).unwrap_or("");
    assert!(
        ["debug", "info", "warning", "error"].contains(&level),
        "level: {line}"
    );
    assert!(
        o.get("logger").is_some_and(Value::is_string),
        "logger: {line}"
    );
    let ts = o.get("timestamp").and_then(Value::as_str).unwrap_or("");
    assert!(is_log_timestamp(ts), "timestamp {ts:?}: {line}");
    assert_eq!(o.get("pid"), Some(&json!(pid)), "pid: {line}");
}

/// GET /metrics; asserts 200.
async fn metrics_text(port: u16) -> String {
    let r = http_get(port, "/metrics").await;
    assert_eq!(r.status, 200, "GET /metrics: {r:?}");
    r.body
}

/// Polls /metrics until `pred` holds (10 s); returns that exposition.
async fn wait_metrics(port: u16, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + secs(10.0);
    loop {
        let body = metrics_text(port).await;
        if pred(&body) {
            return body;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting until {what}; /metrics:\n{body}");
        }
        sleep_ms(20).await;
    }
}

/// The `socketshark_event_success_counter` series: `"event/status"` → value text.
fn event_series(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("socketshark_event_success_counter{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").expect("sample line");
        let mut event = "";
        let mut status = "";
        for pair in labels.split(',') {
            let (k, v) = pair.split_once('=').expect("label pair");
            let v = v.trim_matches('"');
            match k {
                "event" => event = v,
                "status" => status = v,
                other => panic!("unexpected label {other} in {line}"),
            }
        }
        out.insert(format!("{event}/{status}"), value.trim().to_string());
    }
    out
}

fn series(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Output of a finished CLI run.
struct CliRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args` (no config unless given), waits up to `timeout` for it to exit.
async fn run_cli(args: Vec<String>, timeout: Duration) -> CliRun {
    let handle = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(server_bin());
        cmd.args(&args)
            .env_remove("RUST_LOG")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = common::server::spawn_child(cmd).expect("cannot spawn socketshark");
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let t_out = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = out.read_to_end(&mut s);
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s);
            s
        });
        let deadline = std::time::Instant::now() + timeout;
        let status = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break s;
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("socketshark {args:?} did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        CliRun {
            status,
            stdout: String::from_utf8_lossy(&t_out.join().unwrap()).into_owned(),
            stderr: String::from_utf8_lossy(&t_err.join().unwrap()).into_owned(),
        }
    });
    match handle.await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// A configuration that would fail at Redis if it started (so a config error is what ends it).
fn offline_config() -> Config {
    base_config_for(unreachable_port(), "http://127.0.0.1:1")
}

/// Asserts a configuration error: exit status 2, exactly one stderr line mentioning every
/// string of `mentions`, no panic or backtrace (R-CFG-5).
fn assert_config_error(status: ExitStatus, stderr: &str, mentions: &[&str]) {
    let text = stderr.trim_end();
    assert_eq!(
        status.code(),
        Some(2),
        "exit status {status}; stderr:\n{stderr}"
    );
    assert_eq!(
        text.lines().count(),
        1,
        "expected exactly one stderr line, got:\n{stderr}"
    );
    let lower = text.to_ascii_lowercase();
    assert!(
        !lower.contains("panicked") && !lower.contains("backtrace"),
        "panic output: {stderr}"
    );
    for m in mentions {
        assert!(text.contains(m), "stderr does not mention {m:?}: {stderr}");
    }
}

// ================================================================================================
// 1. Framing (R-FRM, R-WS, R-NAME, R-ORD)
// ================================================================================================

/// T-2 (R-FRM-3): JSON that is not a command object gets the framing error without `event`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t02_invalid_commands_get_the_framing_error() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    for text in [
        "null",
        "\"hello\"",
        "{}",
        r#"{"event": null}"#,
        r#"{"event": 5}"#,
        r#"{"event": true}"#,
        r#"{"event": ["ping"]}"#,
        r#"{"event": {"name": "ping"}}"#,
        r#"["event", "ping"]"#,
        "123",
        r#"{"Event": "ping"}"#,
    ] {
        assert_eq!(request_text(&mut c, text).await, invalid_reply(), "{text}");
    }
    c.expect_silence(ms(300)).await;
    ping_ok(&mut c, "still open").await;
}

/// T-3 (R-FRM-4): unknown event names are echoed with `Event not found.`; nothing else is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t03_unknown_events_are_not_found() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    for name in ["", "hello", "pong", "AUTH", " ping", "ping ", "Subscribe"] {
        let r = c.request(&json!({"event": name})).await;
        assert_eq!(
            r,
            json!({"event": name, "status": "error", "error": "Event not found."}),
            "event {name:?}"
        );
    }
    c.expect_silence(ms(300)).await;
}

/// T-4 (R-PING-1): pong echoes string data (truncated to 128 code points), else `null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t04_ping_pong_data() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    let cases = [
        (json!({"event": "ping"}), json!(null)),
        (json!({"event": "ping", "data": 123}), json!(null)),
        (json!({"event": "ping", "data": null}), json!(null)),
        (json!({"event": "ping", "data": {"a": "b"}}), json!(null)),
        (json!({"event": "ping", "data": ["x"]}), json!(null)),
        (json!({"event": "ping", "data": "hello"}), json!("hello")),
        (json!({"event": "ping", "data": ""}), json!("")),
        (
            json!({"event": "ping", "data": "é".repeat(200)}),
            json!("é".repeat(128)),
        ),
        (
            json!({"event": "ping", "data": "🦈".repeat(129)}),
            json!("🦈".repeat(128)),
        ),
        (
            json!({"event": "ping", "data": "x".repeat(128)}),
            json!("x".repeat(128)),
        ),
    ];
    for (cmd, want) in cases {
        let r = c.request(&cmd).await;
        assert_eq!(r, json!({"event": "pong", "data": want}), "{cmd}");
    }
    c.expect_silence(ms(300)).await;
}

/// R-FRM-1, R-WS-3: a binary message carrying JSON is processed like a text message, and binary
/// JSON that is not valid gets the R-FRM-2 reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_frm_1_binary_json_works_like_text() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    c.send_binary(br#"{"event": "ping", "data": "bin"}"#.to_vec())
        .await;
    assert_eq!(c.recv().await, json!({"event": "pong", "data": "bin"}));
    c.send_binary(br#"{"event": "subscribe", "subscription": "simple.bin"}"#.to_vec())
        .await;
    assert_eq!(
        c.recv().await,
        json!({"event": "subscribe", "status": "ok", "subscription": "simple.bin"})
    );
    c.send_binary(b"not json".to_vec()).await;
    assert_eq!(c.recv().await, invalid_reply());
    c.send_binary(Vec::new()).await;
    assert_eq!(c.recv().await, invalid_reply());
    c.send_binary(br#"{"event": "hello"}"#.to_vec()).await;
    assert_eq!(
        c.recv().await,
        json!({"event": "hello", "status": "error", "error": "Event not found."})
    );
    ping_ok(&mut c, "after binary").await;
}

/// R-FRM-1: binary JSON in UTF-8 (with BOM), UTF-16 LE/BE and UTF-32 LE/BE, with and without
/// BOM, is detected like Python's `json.loads(bytes)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_frm_1_binary_utf16_utf32_with_and_without_bom() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    let text = r#"{"event": "ping", "data": "é🦈x"}"#;
    let mut utf8_bom = vec![0xEF, 0xBB, 0xBF];
    utf8_bom.extend_from_slice(text.as_bytes());
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("utf-8 with BOM", utf8_bom),
        ("utf-16-le", utf16(text, false, false)),
        ("utf-16-le with BOM", utf16(text, false, true)),
        ("utf-16-be", utf16(text, true, false)),
        ("utf-16-be with BOM", utf16(text, true, true)),
        ("utf-32-le", utf32(text, false, false)),
        ("utf-32-le with BOM", utf32(text, false, true)),
        ("utf-32-be", utf32(text, true, false)),
        ("utf-32-be with BOM", utf32(text, true, true)),
    ];
    for (what, bytes) in variants {
        c.send_binary(bytes).await;
        let r = c.recv().await;
        assert_eq!(r, json!({"event": "pong", "data": "é🦈x"}), "{what}");
    }
}

/// R-DEF-3 (R-FRM-1): a binary message whose bytes cannot be decoded as text closes the
/// connection with code 1000 and no reply; the session end still runs (`on_unsubscribe`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_def_3_undecodable_binary_closes_1000_and_ends_the_session() {
    let env = TestEnv::start().await;
    let variants: Vec<(&str, Vec<u8>)> = vec![
        (
            "invalid utf-8",
            b"{\"event\": \"ping\", \"data\": \"\xff\"}".to_vec(),
        ),
        (
            "truncated utf-16 (BOM + odd length)",
            vec![0xFF, 0xFE, b'{'],
        ),
        (
            "utf-32 code point above U+10FFFF",
            vec![0x00, 0x00, 0xFE, 0xFF, 0x00, 0x11, 0x00, 0x00],
        ),
    ];
    for (i, (what, bytes)) in variants.into_iter().enumerate() {
        let name = format!("ws_test.bin{i}");
        let mut c = env.client().await;
        subscribe_ok(&mut c, &name).await;
        c.send_binary(bytes).await;
        let code = c.recv_close(secs(5.0)).await;
        assert_eq!(code, Some(1000), "{what}");
        let bodies = env
            .svc
            .wait_calls("/ws_test/on_unsubscribe", i + 1, secs(5.0))
            .await;
        assert_eq!(bodies[i], json!({"subscription": name}), "{what}");
    }
    // The server keeps serving.
    let mut c = env.client().await;
    ping_ok(&mut c, "alive").await;
    assert_eq!(env.svc.calls("/ws_test/on_unsubscribe"), 3);
}

/// R-NAME-5, R-DEF-3: a truthy non-string `subscription` (number, true, array, object) in
/// subscribe/message/unsubscribe closes with 1000 without a reply; the session end runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_name_5_truthy_non_string_subscription_closes_1000_and_ends_the_session() {
    let env = TestEnv::start().await;
    let values = [
        json!(5),
        json!(1.5),
        json!(true),
        json!(["a.b"]),
        json!({"a": "b"}),
    ];
    let mut n = 0;
    for event in ["subscribe", "message", "unsubscribe"] {
        for v in &values {
            let name = format!("ws_test.t{n}");
            let mut c = env.client().await;
            subscribe_ok(&mut c, &name).await;
            c.send(&json!({"event": event, "subscription": v})).await;
            let code = c.recv_close(secs(5.0)).await;
            assert_eq!(code, Some(1000), "{event} with subscription {v}");
            n += 1;
            let bodies = env
                .svc
                .wait_calls("/ws_test/on_unsubscribe", n, secs(5.0))
                .await;
            assert_eq!(bodies[n - 1], json!({"subscription": name}), "{event} {v}");
        }
    }
    let mut c = env.client().await;
    ping_ok(&mut c, "alive").await;
}

/// T-12, R-NAME-1: a missing or falsy `subscription` → `Invalid subscription format.` without a
/// `subscription` key, for subscribe, message and unsubscribe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t12_falsy_subscription_is_invalid_format_without_subscription_key() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    let falsy = [
        Some(json!("")),
        Some(json!(0)),
        Some(json!(0.0)),
        Some(json!(false)),
        Some(json!(null)),
        Some(json!([])),
        Some(json!({})),
        None,
    ];
    for event in ["subscribe", "message", "unsubscribe"] {
        for v in &falsy {
            let mut cmd = json!({"event": event, "extra": "x"});
            if let Some(v) = v {
                cmd["subscription"] = v.clone();
            }
            let r = c.request(&cmd).await;
            assert_eq!(
                r,
                json!({"event": event, "status": "error", "error": "Invalid subscription format."}),
                "{cmd}"
            );
        }
    }
    c.expect_silence(ms(300)).await;
}

/// T-13, T-14, R-NAME-2..4: malformed names are echoed with the format error, unknown services
/// get `Invalid service.`, topics may contain further dots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_t14_subscription_name_format_and_service() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    for event in ["subscribe", "message", "unsubscribe"] {
        for name in ["a.", ".b", "invalid", ".", "simple", "simple."] {
            let r = c
                .request(&json!({"event": event, "subscription": name, "extra": "x"}))
                .await;
            assert_eq!(
                r,
                json!({"event": event, "status": "error", "error": "Invalid subscription format.", "subscription": name}),
                "{event} {name:?}"
            );
        }
        for name in ["invalid.topic", "Simple.topic", "simple_x.topic"] {
            let r = c
                .request(&json!({"event": event, "subscription": name, "extra": "x"}))
                .await;
            assert_eq!(
                r,
                json!({"event": event, "status": "error", "error": "Invalid service.", "subscription": name}),
                "{event} {name:?}"
            );
        }
    }
    // A topic with extra dots is fine (split at the first dot).
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "simple.a.b.c"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "subscription": "simple.a.b.c"})
    );
    c.send(&json!({"event": "message", "subscription": "simple.a.b.c", "data": 1}))
        .await;
    ping_ok(&mut c, "barrier").await;
    let r = c
        .request(&json!({"event": "unsubscribe", "subscription": "simple.a.b.c"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "unsubscribe", "status": "ok", "subscription": "simple.a.b.c"})
    );
}

/// R-FRM-2: text that is not JSON (empty, truncated, single quotes, leading UTF-8 BOM, trailing
/// garbage) gets the framing error and the connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_frm_2_invalid_json_keeps_the_connection_open() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    for text in [
        "",
        " ",
        "{",
        r#"{"event": "ping""#,
        "{'event': 'ping'}",
        "\u{feff}{\"event\": \"ping\"}",
        r#"{"event": "ping"} x"#,
        r#"{"event": "ping",}"#,
        "hello",
        "[[[[",
    ] {
        assert_eq!(
            request_text(&mut c, text).await,
            invalid_reply(),
            "{text:?}"
        );
        ping_ok(&mut c, "open").await;
    }
}

/// R-FRM-3: the 40-code-point limit counts code points, not bytes (multi-byte characters).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_frm_3_event_name_length_counts_code_points() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    for ch in ["a", "é", "€", "🦈"] {
        let ok = ch.repeat(40);
        let r = c.request(&json!({"event": ok})).await;
        assert_eq!(
            r,
            json!({"event": ok, "status": "error", "error": "Event not found."}),
            "40 x {ch}"
        );
        let long = ch.repeat(41);
        let r = c.request(&json!({"event": long})).await;
        assert_eq!(r, invalid_reply(), "41 x {ch}");
    }
    // An over-long event is never echoed.
    let r = c.request(&json!({"event": "ping".repeat(50)})).await;
    assert_eq!(r, invalid_reply());
}

/// R-FRM-4: event names are exact and case-sensitive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_frm_4_pong_auth_uppercase_and_padded_names_are_unknown() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    for name in [
        "pong",
        "AUTH",
        " ping",
        "Ping",
        "ping\n",
        "subscribe ",
        "MESSAGE",
    ] {
        let r = c.request(&json!({"event": name, "data": "x"})).await;
        assert_eq!(
            r,
            json!({"event": name, "status": "error", "error": "Event not found."}),
            "{name:?}"
        );
    }
}

/// R-FRM-5, R-FRM-6: keys a rule does not read are ignored; duplicate keys resolve to the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_frm_5_unknown_keys_are_ignored() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    let r = c
        .request(&json!({"event": "ping", "data": "x", "foo": 1, "status": "bar", "error": "e"}))
        .await;
    assert_eq!(r, json!({"event": "pong", "data": "x"}));
    // `other` is not an extra field of `simple`: not captured, not echoed.
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "simple.topic", "other": "y", "extra": "e", "options": {"a": 1}}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "extra": "e", "subscription": "simple.topic"})
    );
    let r = request_text(
        &mut c,
        r#"{"event": "nope", "event": "ping", "data": "dup"}"#,
    )
    .await;
    assert_eq!(r, json!({"event": "pong", "data": "dup"}));
}

/// R-FRM-6: values passed through (extra fields, message data, service data) keep their exact
/// JSON form: big integers, floats stay floats, key order, unicode, last duplicate key wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_frm_6_value_fidelity() {
    let env = TestEnv::start().await;
    let mut c = env.auth_client().await;
    // Through a subscribe extra field echoed in the reply.
    let cmd = r#"{"event": "subscribe", "subscription": "simple.topic", "extra": {"big": 123456789012345678901234567890, "neg": -98765432109876543210, "f": 1.50, "e": 1e3, "z": 0, "b": true, "n": null, "s": "\u00e9é🦈\ud83e\udd88", "arr": [3, 2, 1], "dup": 1, "dup": 2}}"#;
    c.send_text(cmd).await;
    let raw = recv_raw(&mut c).await;
    let r: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(r["status"], json!("ok"), "{raw}");
    let extra = &r["extra"];
    assert_eq!(
        keys(extra),
        ["big", "neg", "f", "e", "z", "b", "n", "s", "arr", "dup"],
        "{raw}"
    );
    assert_eq!(
        extra["big"].to_string(),
        "123456789012345678901234567890",
        "{raw}"
    );
    assert_eq!(extra["neg"].to_string(), "-98765432109876543210", "{raw}");
    assert!(is_float(&extra["f"], 1.5), "1.50 must stay a float: {raw}");
    assert!(
        is_float(&extra["e"], 1000.0),
        "1e3 must stay a float: {raw}"
    );
    assert_eq!(extra["z"].to_string(), "0", "{raw}");
    assert_eq!(extra["b"], json!(true));
    assert_eq!(extra["n"], json!(null));
    assert_eq!(extra["s"], json!("éé🦈🦈"));
    assert_eq!(extra["arr"].to_string(), "[3,2,1]");
    assert_eq!(extra["dup"].to_string(), "2", "last duplicate wins: {raw}");

    // Through `message` data to on_message, and the service's data back to the client.
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "complex.topic"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "subscription": "complex.topic"})
    );
    env.svc.set(
        "/complex/on_message",
        Reply::raw(
            "application/json",
            r#"{"status": "ok", "data": {"zz": 98765432109876543210987654321, "f": 2.50, "k2": 1, "k1": {"y": 1, "x": 2}}}"#,
        ),
    );
    c.send_text(r#"{"event": "message", "subscription": "complex.topic", "data": {"big": 123456789012345678901234567890, "f": 1.50, "b": "x", "a": "y"}}"#)
        .await;
    let raw = recv_raw(&mut c).await;
    let r: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(r["status"], json!("ok"), "{raw}");
    assert_eq!(keys(&r["data"]), ["zz", "f", "k2", "k1"], "{raw}");
    assert_eq!(r["data"]["zz"].to_string(), "98765432109876543210987654321");
    assert!(is_float(&r["data"]["f"], 2.5), "{raw}");
    assert_eq!(keys(&r["data"]["k1"]), ["y", "x"], "{raw}");
    let req = env.svc.requests("/complex/on_message");
    assert_eq!(req.len(), 1);
    let body = &req[0].body;
    assert_eq!(keys(&body["data"]), ["big", "f", "b", "a"], "{body}");
    assert_eq!(
        body["data"]["big"].to_string(),
        "123456789012345678901234567890"
    );
    assert!(is_float(&body["data"]["f"], 1.5), "{body}");
}

/// R-FRM-7: a command nested 512 levels deep (document depth) is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_frm_7_nesting_512_levels_accepted() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    // The command object is level 1, so the extra field holds 511 more levels.
    let deep = nested_arrays(511, "1");
    let cmd =
        format!(r#"{{"event": "subscribe", "subscription": "simple.deep", "extra": {deep}}}"#);
    c.send_text(&cmd).await;
    let raw = recv_raw(&mut c).await;
    assert!(
        raw.contains(&deep),
        "the deep extra field is not echoed unchanged: {}",
        &raw[..raw.len().min(300)]
    );
    let shallow: Value = serde_json::from_str(&raw.replacen(&deep, "\"DEEP\"", 1)).unwrap();
    assert_eq!(
        shallow,
        json!({"event": "subscribe", "status": "ok", "extra": "DEEP", "subscription": "simple.deep"})
    );
    // Deep message data too (here the command is 512 levels deep as well).
    c.send_text(&format!(
        r#"{{"event": "ping", "data": {}}}"#,
        nested_arrays(511, "")
    ))
    .await;
    assert_eq!(c.recv().await, json!({"event": "pong", "data": null}));
}

/// R-FRM-7: a value nested 512 levels deep inside a command (subscribe extra field, ping data)
/// is accepted. Assumption: "at least 512 levels" counts the nesting of the value the client
/// sends, not including the command object around it (document depth 513); the reference
/// accepts ~1000 levels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_frm_7_value_nested_512_levels_inside_a_command_accepted() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    c.send_text(&format!(
        r#"{{"event": "ping", "data": {}}}"#,
        nested_arrays(512, "")
    ))
    .await;
    assert_eq!(c.recv().await, json!({"event": "pong", "data": null}));
    let deep = nested_arrays(512, "1");
    c.send_text(&format!(
        r#"{{"event": "subscribe", "subscription": "simple.deep", "extra": {deep}}}"#
    ))
    .await;
    let raw = recv_raw(&mut c).await;
    assert!(
        raw.contains(&deep),
        "the deep extra field is not echoed unchanged: {}",
        &raw[..raw.len().min(300)]
    );
}

/// R-FRM-7: 100000 levels are rejected (R-FRM-2 reply or R-DEF-3 close) without harming the
/// server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_frm_7_nesting_100000_levels_rejected_without_harm() {
    let env = TestEnv::start().await;
    let mut other = env.client().await;
    subscribe_ok(&mut other, "ws_test.other").await;
    for (what, text) in [
        (
            "arrays",
            format!(
                r#"{{"event": "ping", "data": {}}}"#,
                nested_arrays(100_000, "")
            ),
        ),
        (
            "objects",
            format!(
                r#"{{"event": "ping", "data": {}1{}}}"#,
                r#"{"a": "#.repeat(100_000),
                "}".repeat(100_000)
            ),
        ),
        ("unterminated", "[".repeat(100_000)),
    ] {
        let mut c = env.client().await;
        c.send_text(&text).await;
        match recv_or_close(c, secs(10.0)).await {
            Ok((mut c, Some(DataFrame::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v, invalid_reply(), "{what}");
                ping_ok(&mut c, "open").await;
            }
            Ok((_, Some(DataFrame::Binary(b)))) => panic!("{what}: unexpected binary frame {b:?}"),
            Ok((_, None)) => panic!("{what}: neither a reply nor a close within 10 s"),
            // R-DEF-3 alternative: closed with 1000 and no reply.
            Err(closed) => assert!(closed.contains("code 1000"), "{what}: {closed}"),
        }
    }
    ping_ok(&mut other, "unharmed").await;
    let mut c = env.client().await;
    ping_ok(&mut c, "new client").await;
    assert_eq!(env.svc.calls("/ws_test/on_unsubscribe"), 0);
}

/// R-WS-4: a message of exactly 1 MiB is processed; one byte more closes with 1009 and the
/// session end follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ws_4_oversized_message_closes_1009() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "ws_test.big").await;
    let frame = |len: usize| {
        let overhead = r#"{"event":"ping","data":""}"#.len();
        let s = format!(
            r#"{{"event":"ping","data":"{}"}}"#,
            "x".repeat(len - overhead)
        );
        assert_eq!(s.len(), len);
        s
    };
    c.send_text(&frame(1 << 20)).await;
    assert_eq!(
        c.recv().await,
        json!({"event": "pong", "data": "x".repeat(128)})
    );
    c.send_text(&frame((1 << 20) + 1)).await;
    let code = c.recv_close(secs(10.0)).await;
    assert_eq!(code, Some(1009));
    let bodies = env
        .svc
        .wait_calls("/ws_test/on_unsubscribe", 1, secs(5.0))
        .await;
    assert_eq!(bodies, vec![json!({"subscription": "ws_test.big"})]);

    // A message over 1 MiB in total made of smaller fragments is too large as well.
    let mut c = env.client().await;
    subscribe_ok(&mut c, "ws_test.frag").await;
    let half = "x".repeat(600 * 1024);
    c.send_fragmented(
        &[
            br#"{"event":"ping","data":""#,
            half.as_bytes(),
            half.as_bytes(),
            br#""}"#,
        ],
        false,
    )
    .await;
    let code = c.recv_close(secs(10.0)).await;
    assert_eq!(code, Some(1009));
    env.svc
        .wait_calls("/ws_test/on_unsubscribe", 2, secs(5.0))
        .await;
}

/// R-WS-5: invalid UTF-8 in a text frame closes with 1007; the session end follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ws_5_invalid_utf8_text_closes_1007() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "ws_test.utf8").await;
    c.send_text_bytes(b"{\"event\": \"ping\", \"data\": \"\xc3\x28\"}".to_vec())
        .await;
    let code = c.recv_close(secs(5.0)).await;
    assert_eq!(code, Some(1007));
    let bodies = env
        .svc
        .wait_calls("/ws_test/on_unsubscribe", 1, secs(5.0))
        .await;
    assert_eq!(bodies, vec![json!({"subscription": "ws_test.utf8"})]);
}

/// R-WS-3: fragmented messages (text and binary, split inside a multi-byte character) are
/// reassembled into one command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ws_3_fragmented_messages_are_reassembled() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    c.send_fragmented(
        &[b"{\"event\":", b"\"ping\",\"data\":", b"\"frag\"}"],
        false,
    )
    .await;
    assert_eq!(c.recv().await, json!({"event": "pong", "data": "frag"}));
    // "é" is C3 A9: split between the two bytes.
    c.send_fragmented(&[b"{\"event\":\"ping\",\"data\":\"\xc3", b"\xa9\"}"], false)
        .await;
    assert_eq!(c.recv().await, json!({"event": "pong", "data": "é"}));
    c.send_fragmented(
        &[
            b"{\"event\":\"subscribe\",",
            b"\"subscription\":\"simple.f\"}",
        ],
        true,
    )
    .await;
    assert_eq!(
        c.recv().await,
        json!({"event": "subscribe", "status": "ok", "subscription": "simple.f"})
    );
    c.expect_silence(ms(300)).await;
}

/// R-WS-1: any request path and query string is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ws_1_any_path_and_query_works() {
    let env = TestEnv::start().await;
    let port = env.server.port();
    for path in ["", "/", "/ws", "/a/b?x=1", "/socketshark/?token=abc&x=%20"] {
        let url = format!("ws://127.0.0.1:{port}{path}");
        let mut c = Client::connect(&url).await;
        ping_ok(&mut c, path).await;
    }
    // No origin check.
    let mut c = Client::try_connect_with_headers(
        &env.server.ws_url(),
        &[("Origin", "http://evil.example")],
    )
    .await
    .expect("connect with Origin");
    ping_ok(&mut c, "origin").await;
}

/// R-WS-2: a plain HTTP request gets 426, invalid handshakes and garbage are rejected; none of
/// them creates a session or affects an open one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ws_2_plain_http_and_garbage_are_rejected() {
    let env = TestEnv::start().await;
    let port = env.server.port();
    let mut c = env.client().await;
    subscribe_ok(&mut c, "ws_test.keep").await;
    env.server
        .wait_log(|l| is_event(l, "new session"), secs(5.0))
        .await;

    let raw = tcp_exchange(
        port,
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".to_vec(),
        secs(5.0),
    )
    .await;
    let resp = parse_http_response(&raw)
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&raw)));
    assert_eq!(resp.status, 426, "{resp:?}");

    // Upgrade request without Sec-WebSocket-Key: a 4xx answer.
    let raw = tcp_exchange(
        port,
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .to_vec(),
        secs(5.0),
    )
    .await;
    let resp = parse_http_response(&raw)
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&raw)));
    assert!((400..500).contains(&resp.status), "{resp:?}");

    // Garbage bytes: no 101, whatever else happens.
    for garbage in [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(),
        b"\x00\x01\x02\x03\r\n\r\n".to_vec(),
        b"HELLO\r\n\r\n".to_vec(),
    ] {
        let raw = tcp_exchange(port, garbage, secs(5.0)).await;
        if let Some(resp) = parse_http_response(&raw) {
            assert!((400..500).contains(&resp.status), "garbage got {resp:?}");
        }
    }

    ping_ok(&mut c, "unaffected").await;
    assert_eq!(
        env.server.count_log("new session"),
        1,
        "only the WebSocket client created a session"
    );
    assert_eq!(env.svc.calls("/ws_test/on_unsubscribe"), 0);
}

/// R-WS-6: client Ping frames are answered with Pong frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ws_6_client_pings_are_answered() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    c.send_ping(b"abc".to_vec()).await;
    c.wait_pongs(1, secs(5.0)).await;
    assert_eq!(c.pongs()[0].1, b"abc".to_vec());
    ping_ok(&mut c, "after ping frame").await;
}

/// The closing handshake started by the client (RFC 6455 §5.5.1): the server answers with a
/// close frame echoing the client's code, and the session ends as on any disconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ws_client_close_is_echoed() {
    let env = TestEnv::start().await;
    for (code, reason) in [(1000, ""), (1001, "going away"), (4000, "app")] {
        let mut c = env.client().await;
        subscribe_ok(&mut c, "ws_test.bye").await;
        assert_eq!(c.close_with(code, reason).await, Some(code), "code {code}");
        assert_eq!(c.close_frame(), Some((code, reason.to_owned())));
    }
    env.svc
        .wait_calls("/ws_test/on_unsubscribe", 3, secs(5.0))
        .await;
    env.redis.wait_channels(&[], secs(5.0)).await;
}

/// R-ORD-1, R-ORD-2: a burst of 50 pings gets 50 pongs, in order, one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_ord_1_burst_of_pings_answered_in_order() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    for i in 0..50 {
        c.send(&json!({"event": "ping", "data": i.to_string()}))
            .await;
    }
    let replies = c.recv_n(50).await;
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r, &json!({"event": "pong", "data": i.to_string()}));
    }
    c.expect_silence(ms(300)).await;
}

// ================================================================================================
// 2. Authentication (R-AUTH)
// ================================================================================================

/// T-5, R-AUTH-1/2: a method other than exactly `"ticket"` (also null, 5, "TICKET") is
/// unsupported and the validation service is not called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t05_unsupported_auth_methods() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    for method in [
        json!("x"),
        json!(null),
        json!(5),
        json!("TICKET"),
        json!(""),
        json!(false),
        json!(" ticket"),
    ] {
        let r = c
            .request(&json!({"event": "auth", "method": method, "ticket": "valid_ticket"}))
            .await;
        assert_eq!(r, auth_error(json!(METHOD_UNSUPPORTED)), "method {method}");
    }
    ping_ok(&mut c, "barrier").await;
    assert_eq!(env.svc.calls("/auth"), 0);
    // Array/object methods: the reference fails (Unhandled exception + close); the Rust version
    // MAY answer unsupported instead (R-AUTH-2).
    for method in [json!(["ticket"]), json!({"ticket": 1})] {
        let mut c = env.client().await;
        let r = c
            .request(&json!({"event": "auth", "method": method, "ticket": "valid_ticket"}))
            .await;
        if r != auth_error(json!(METHOD_UNSUPPORTED)) {
            assert_eq!(r, auth_error(json!("Unhandled exception.")), "{method}");
            assert_eq!(c.recv_close(secs(5.0)).await, Some(1000));
        }
    }
    // `method: "ticket"` explicitly is the default.
    let r = c
        .request(&json!({"event": "auth", "method": "ticket", "ticket": "valid_ticket"}))
        .await;
    assert_eq!(r, json!({"event": "auth", "status": "ok"}));
}

/// T-6, R-AUTH-9: without `[authentication.ticket]` every auth is unsupported and services that
/// require authentication cannot be subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t06_no_authentication_configured() {
    let env = TestEnv::start_with(|c| {
        c.remove("authentication");
    })
    .await;
    let mut c = env.client().await;
    for cmd in [
        json!({"event": "auth", "method": "ticket"}),
        json!({"event": "auth", "method": "ticket", "ticket": "valid_ticket"}),
        json!({"event": "auth", "ticket": "valid_ticket"}),
        json!({"event": "auth"}),
    ] {
        assert_eq!(
            c.request(&cmd).await,
            auth_error(json!(METHOD_UNSUPPORTED)),
            "{cmd}"
        );
    }
    for name in ["empty.topic", "simple_auth.topic", "authorizer.topic"] {
        let r = c
            .request(&json!({"event": "subscribe", "subscription": name}))
            .await;
        assert_eq!(
            r,
            json!({"event": "subscribe", "status": "error", "error": "Authentication required.", "subscription": name})
        );
    }
    subscribe_ok(&mut c, "simple.topic").await;
    assert_eq!(env.svc.calls("/auth"), 0);
    assert_eq!(env.svc.calls("/authorizer/authorizer"), 0);
}

/// T-8, R-AUTH-3: a missing or falsy ticket → `Must specify ticket.` without calling anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t08_missing_or_falsy_ticket() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    let mut cmds = vec![
        json!({"event": "auth"}),
        json!({"event": "auth", "method": "ticket"}),
    ];
    for t in [
        json!(""),
        json!(0),
        json!(0.0),
        json!(false),
        json!([]),
        json!({}),
        json!(null),
    ] {
        cmds.push(json!({"event": "auth", "ticket": t.clone()}));
        cmds.push(json!({"event": "auth", "method": "ticket", "ticket": t}));
    }
    for cmd in cmds {
        assert_eq!(c.request(&cmd).await, auth_error(json!(NO_TICKET)), "{cmd}");
    }
    ping_ok(&mut c, "barrier").await;
    assert_eq!(env.svc.calls("/auth"), 0);
}

/// R-AUTH-3/4: truthy non-string tickets are forwarded unchanged in `{"ticket": ...}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_auth_4_truthy_tickets_forwarded_unchanged() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    let tickets = [
        r#""valid_ticket""#,
        "5",
        "-1",
        "1.5",
        "true",
        r#"[1, "a", null]"#,
        r#"{"k": {"n": 1}, "a": 2}"#,
        "123456789012345678901234567890",
        r#"" ""#,
    ];
    for t in tickets {
        let r = request_text(&mut c, &format!(r#"{{"event": "auth", "ticket": {t}}}"#)).await;
        assert_eq!(r, json!({"event": "auth", "status": "ok"}), "ticket {t}");
    }
    let reqs = env.svc.requests("/auth");
    assert_eq!(reqs.len(), tickets.len());
    for (req, t) in reqs.iter().zip(tickets) {
        let want: Value = serde_json::from_str(&format!(r#"{{"ticket": {t}}}"#)).unwrap();
        assert_eq!(req.body, want, "ticket {t}");
        assert_eq!(req.method, "POST");
        assert!(
            req.header("content-type")
                .is_some_and(|ct| ct.starts_with("application/json")),
            "content type: {:?}",
            req.headers
        );
    }
    // Big integers are sent as written (R-FRM-6).
    let raw = String::from_utf8_lossy(&reqs[7].raw_body).to_string();
    assert!(raw.contains("123456789012345678901234567890"), "{raw}");
    assert_eq!(
        reqs[7].body["ticket"].to_string(),
        "123456789012345678901234567890"
    );
    assert!(is_float(&reqs[3].body["ticket"], 1.5), "{raw}");
}

/// T-9, R-AUTH-5, R-HTTP-8: validation URL unreachable → `Service unavailable.`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t09_validation_unreachable_is_service_unavailable() {
    let env = TestEnv::start_with(|c| {
        c.set(
            "authentication.ticket.validation_url",
            unreachable_url("/auth"),
        );
    })
    .await;
    let mut c = env.client().await;
    let r = c
        .request(&json!({"event": "auth", "ticket": "valid_ticket"}))
        .await;
    assert_eq!(r, auth_error(json!("Service unavailable.")));
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "simple_auth.topic"}))
        .await;
    assert_eq!(r["error"], json!("Authentication required."));
}

/// T-10, T-11, R-AUTH-4..6: a failed validation leaves the session unauthenticated; a valid one
/// keeps only the configured auth fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_t11_failed_then_valid_ticket() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    env.svc.push(
        "/auth",
        Reply::json(json!({"status": "error", "session_id": "sess_123", "foo": "bar"})),
    );
    let r = c
        .request(&json!({"event": "auth", "ticket": "invalid_ticket"}))
        .await;
    assert_eq!(r, auth_error(json!("Authentication failed.")));
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "simple_auth.topic"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "error", "error": "Authentication required.", "subscription": "simple_auth.topic"})
    );
    env.svc.push(
        "/auth",
        Reply::json(json!({"status": "ok", "session_id": "sess_123", "foo": "bar"})),
    );
    let r = c
        .request(&json!({"event": "auth", "ticket": "valid_ticket"}))
        .await;
    assert_eq!(r, json!({"event": "auth", "status": "ok"}));
    assert_eq!(
        env.svc.bodies("/auth"),
        vec![
            json!({"ticket": "invalid_ticket"}),
            json!({"ticket": "valid_ticket"})
        ]
    );
    // Only session_id is kept: the authorizer body shows the auth fields.
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "authorizer.topic"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "subscribe", "status": "ok", "subscription": "authorizer.topic"})
    );
    assert_eq!(
        env.svc.bodies("/authorizer/authorizer"),
        vec![json!({"subscription": "authorizer.topic", "session_id": "sess_123"})]
    );
}

/// R-AUTH-5: the service's `error` is forwarded verbatim (even null or a number), else
/// `Authentication failed.`; auth errors never carry data; HTTP failures are
/// `Service unavailable.`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_auth_5_error_text_verbatim_and_defaults() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    let cases = [
        (
            Reply::json(json!({"status": "error", "error": null})),
            json!(null),
        ),
        (
            Reply::json(json!({"status": "error", "error": 42})),
            json!(42),
        ),
        (
            Reply::json(json!({"status": "error", "error": {"code": 1}})),
            json!({"code": 1}),
        ),
        (
            Reply::json(json!({"status": "error", "error": "bad ticket", "data": {"x": 1}})),
            json!("bad ticket"),
        ),
        (
            Reply::json(json!({"status": "error", "data": {"x": 1}})),
            json!("Authentication failed."),
        ),
        (
            Reply::json(json!({"status": "OK", "session_id": "s"})),
            json!("Authentication failed."),
        ),
        (
            Reply::json(json!({"session_id": "s"})),
            json!("Authentication failed."),
        ),
        (
            Reply::json(json!({"status": true, "session_id": "s"})),
            json!("Authentication failed."),
        ),
        (
            Reply::auth_ok("s").status(500),
            json!("Service unavailable."),
        ),
        (
            Reply::raw("text/plain", r#"{"status": "ok", "session_id": "s"}"#),
            json!("Service unavailable."),
        ),
    ];
    for (reply, want) in cases {
        let what = format!("{reply:?}");
        env.svc.push("/auth", reply);
        let r = c.request(&json!({"event": "auth", "ticket": "t"})).await;
        assert_eq!(r, auth_error(want), "{what}");
    }
    // Still unauthenticated.
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "empty.topic"}))
        .await;
    assert_eq!(r["error"], json!("Authentication required."));
}

/// R-AUTH-6, R-AUTH-8: re-authentication replaces the auth fields entirely; a failed
/// re-authentication keeps the previous ones. Observed through callback bodies and filters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_auth_8_reauth_replaces_fields_and_failed_reauth_keeps_them() {
    let env = TestEnv::start_with(|c| {
        c.set(
            "authentication.ticket.auth_fields",
            json!(["session_id", "role"]),
        );
    })
    .await;
    let mut c = env.client().await;
    env.svc.push(
        "/auth",
        Reply::json(json!({"status": "ok", "session_id": "s1", "role": "admin", "x": 1})),
    );
    assert_eq!(
        c.request(&json!({"event": "auth", "ticket": "t1"})).await,
        json!({"event": "auth", "status": "ok"})
    );
    subscribe_ok(&mut c, "authorizer.a").await;
    subscribe_ok(&mut c, "simple_auth.topic").await;
    env.redis
        .wait_channels(&["authorizer.a", "simple_auth.topic"], secs(5.0))
        .await;
    let publish = |sid: &'static str, n: i64| json!({"subscription": "simple_auth.topic", "data": n, "session_id": sid});
    env.redis
        .publish_json("simple_auth.topic", &publish("s1", 1))
        .await;
    let m = c.recv().await;
    assert_eq!(m["data"], json!(1));

    env.svc.push(
        "/auth",
        Reply::json(json!({"status": "ok", "session_id": "s2", "role": null})),
    );
    assert_eq!(
        c.request(&json!({"event": "auth", "ticket": "t2"})).await,
        json!({"event": "auth", "status": "ok"})
    );
    subscribe_ok(&mut c, "authorizer.b").await;

    env.svc.push(
        "/auth",
        Reply::json(json!({"status": "error", "session_id": "s3", "role": "x"})),
    );
    assert_eq!(
        c.request(&json!({"event": "auth", "ticket": "t3"})).await,
        auth_error(json!("Authentication failed."))
    );
    subscribe_ok(&mut c, "authorizer.c").await;

    assert_eq!(
        env.svc.bodies("/authorizer/authorizer"),
        vec![
            json!({"subscription": "authorizer.a", "session_id": "s1", "role": "admin"}),
            json!({"subscription": "authorizer.b", "session_id": "s2", "role": null}),
            json!({"subscription": "authorizer.c", "session_id": "s2", "role": null}),
        ]
    );
    // The filter of the existing subscription uses the current auth fields (R-AUTH-8).
    env.redis
        .publish_json("simple_auth.topic", &publish("s1", 2))
        .await;
    env.redis
        .publish_json("simple_auth.topic", &publish("s2", 3))
        .await;
    let m = c.recv().await;
    assert_eq!(m["data"], json!(3), "{m}");
    c.expect_silence(ms(300)).await;
}

/// R-AUTH-6, R-RESP-6: a validation answer lacking a configured auth field → `Unhandled
/// exception.` then close 1000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_auth_6_missing_auth_field_is_unhandled_and_closes() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    subscribe_ok(&mut c, "ws_test.x").await;
    env.svc
        .push("/auth", Reply::json(json!({"status": "ok", "user": "u"})));
    let r = c
        .request(&json!({"event": "auth", "ticket": "valid_ticket"}))
        .await;
    assert_eq!(
        r,
        json!({"event": "auth", "status": "error", "error": "Unhandled exception."})
    );
    assert_eq!(c.recv_close(secs(5.0)).await, Some(1000));
    env.svc
        .wait_calls("/ws_test/on_unsubscribe", 1, secs(5.0))
        .await;
    // A `null` value is fine.
    let mut c = env.client().await;
    env.svc.push(
        "/auth",
        Reply::json(json!({"status": "ok", "session_id": null})),
    );
    let r = c
        .request(&json!({"event": "auth", "ticket": "valid_ticket"}))
        .await;
    assert_eq!(r, json!({"event": "auth", "status": "ok"}));
}

/// R-AUTH-7: with `auth_fields = []` an auth succeeds but the session is still unauthenticated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_auth_7_empty_auth_fields_stay_unauthenticated() {
    let env = TestEnv::start_with(|c| {
        c.set("authentication.ticket.auth_fields", json!([]));
    })
    .await;
    let mut c = env.client().await;
    let r = c
        .request(&json!({"event": "auth", "ticket": "valid_ticket"}))
        .await;
    assert_eq!(r, json!({"event": "auth", "status": "ok"}));
    for name in ["empty.x", "simple_auth.x"] {
        let r = c
            .request(&json!({"event": "subscribe", "subscription": name}))
            .await;
        assert_eq!(
            r,
            json!({"event": "subscribe", "status": "error", "error": "Authentication required.", "subscription": name})
        );
    }
    subscribe_ok(&mut c, "simple.x").await;
}

/// R-AUTH-5/6, R-RPL-5: auth replies never carry extra fields or data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_rpl_5_auth_replies_carry_no_extra_fields_or_data() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    env.svc.push(
        "/auth",
        Reply::json(
            json!({"status": "ok", "session_id": "s", "data": {"x": 1}, "extra": "e", "subscription": "simple.t"}),
        ),
    );
    let r = c
        .request(&json!({"event": "auth", "ticket": "t", "extra": "bar", "data": {"a": 1}, "subscription": "simple.topic"}))
        .await;
    assert_eq!(r, json!({"event": "auth", "status": "ok"}));
    env.svc.push(
        "/auth",
        Reply::json(json!({"status": "error", "error": "no", "data": {"x": 1}, "extra": "e"})),
    );
    let r = c
        .request(&json!({"event": "auth", "ticket": "t", "extra": "bar", "subscription": "simple.topic"}))
        .await;
    assert_eq!(r, auth_error(json!("no")));
    let r = c
        .request(&json!({"event": "auth", "method": "x", "extra": "bar", "subscription": "simple.topic"}))
        .await;
    assert_eq!(r, auth_error(json!(METHOD_UNSUPPORTED)));
}

// ================================================================================================
// 3. Metrics and logs (R-MET, R-LOG)
// ================================================================================================

/// R-MET-2..7: the Prometheus endpoint: the four reference families with exact HELP/TYPE lines,
/// float values, counts after a scripted sequence, connection gauge back to 0, `/`, 404,
/// `/healthz`, `/readyz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_met_prometheus_families_and_counts() {
    let env = TestEnv::start_with(|c| {
        c.set(
            "metrics.prometheus",
            json!({"host": "127.0.0.1", "port": 0}),
        );
    })
    .await;
    let port = env.server.metrics_port().await.expect("metrics port");

    // Fresh process: every family present, no event series yet. The ready line is logged just
    // before the service state becomes 1 (R-CFG-6), so wait for it.
    let text = wait_metrics(port, "service_state is 1", |t| {
        t.lines().any(|l| l == "socketshark_service_state 1.0")
    })
    .await;
    for line in [
        "# HELP socketshark_service_state Service status",
        "# TYPE socketshark_service_state gauge",
        "socketshark_service_state 1.0",
        "# HELP socketshark_connection_count Active connections",
        "# TYPE socketshark_connection_count gauge",
        "socketshark_connection_count 0.0",
        "# HELP socketshark_connection_total Connection total",
        "# TYPE socketshark_connection_total counter",
        "socketshark_connection_total 0.0",
        "# HELP socketshark_event_success_counter Event success counter",
        "# TYPE socketshark_event_success_counter gauge",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line:?} in:\n{text}"
        );
    }
    assert!(event_series(&text).is_empty(), "{text}");

    // The scripted sequence (R-MET-6).
    let mut c = env.client().await;
    for bad in ["{", "", "{'event': 'ping'}"] {
        assert_eq!(request_text(&mut c, bad).await, invalid_reply()); // not counted
    }
    assert_eq!(request_text(&mut c, "null").await, invalid_reply()); // invalid/error
    c.request(&json!({"event": "hello"})).await; // unknown/error
    ping_ok(&mut c, "1").await; // ping/success
    c.request(&json!({"event": "auth", "method": "x"})).await; // auth/error
    authenticate(&mut c).await; // auth/success
    subscribe_ok(&mut c, "simple.topic").await; // subscribe/success
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "simple.topic"}))
        .await; // subscribe/error
    assert_eq!(r["error"], json!("Already subscribed."));
    let r = c
        .request(&json!({"event": "subscribe", "subscription": ""}))
        .await; // subscribe/error
    assert_eq!(r["error"], json!("Invalid subscription format."));
    c.send(&json!({"event": "message", "subscription": "simple.topic", "data": 1}))
        .await; // message/success, no reply
    let r = c
        .request(&json!({"event": "message", "subscription": "simple.nope"}))
        .await; // message/error
    assert_eq!(r["error"], json!("Subscription does not exist."));
    let r = c
        .request(&json!({"event": "unsubscribe", "subscription": "simple.topic"}))
        .await; // unsubscribe/success
    assert_eq!(r["status"], json!("ok"));
    let r = c
        .request(&json!({"event": "unsubscribe", "subscription": "simple.topic"}))
        .await; // unsubscribe/error
    assert_eq!(r["error"], json!("Subscription does not exist."));

    // R-RESP-6 path: not counted.
    let mut c2 = env.client().await;
    env.svc.push("/auth", Reply::json(json!({"status": "ok"})));
    let r = c2
        .request(&json!({"event": "auth", "ticket": "valid_ticket"}))
        .await;
    assert_eq!(r["error"], json!("Unhandled exception."));
    assert_eq!(c2.recv_close(secs(5.0)).await, Some(1000));
    // R-DEF-3 frame: not counted.
    let mut c3 = env.client().await;
    c3.send(&json!({"event": "subscribe", "subscription": 5}))
        .await;
    assert_eq!(c3.recv_close(secs(5.0)).await, Some(1000));

    ping_ok(&mut c, "2").await; // ping/success
    let text = wait_metrics(port, "ping/success reaches 2", |t| {
        event_series(t).get("ping/success").map(String::as_str) == Some("2.0")
    })
    .await;
    assert_eq!(
        event_series(&text),
        series(&[
            ("invalid/error", "1.0"),
            ("unknown/error", "1.0"),
            ("ping/success", "2.0"),
            ("auth/error", "1.0"),
            ("auth/success", "1.0"),
            ("subscribe/success", "1.0"),
            ("subscribe/error", "2.0"),
            ("message/success", "1.0"),
            ("message/error", "1.0"),
            ("unsubscribe/success", "1.0"),
            ("unsubscribe/error", "1.0"),
        ]),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "socketshark_connection_total 3.0"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "socketshark_service_state 1.0"),
        "{text}"
    );

    // The connection gauge returns to 0 once every session has ended.
    drop(c);
    drop(c2);
    drop(c3);
    let text = wait_metrics(port, "connection_count returns to 0", |t| {
        t.lines().any(|l| l == "socketshark_connection_count 0.0")
    })
    .await;
    assert!(
        text.lines()
            .any(|l| l == "socketshark_connection_total 3.0"),
        "{text}"
    );

    // Other endpoints.
    let root = http_get(port, "/").await;
    assert_eq!(root.status, 200);
    assert!(
        root.header("content-type")
            .is_some_and(|ct| ct.starts_with("text/html")),
        "{root:?}"
    );
    assert!(root.body.contains("/metrics"), "{root:?}");
    assert_eq!(http_get(port, "/nope").await.status, 404);
    assert_eq!(http_get(port, "/metricsx").await.status, 404);
    assert_eq!(http_get(port, "/healthz").await.status, 200);
    assert_eq!(http_get(port, "/readyz").await.status, 200);
    let m = http_get(port, "/metrics").await;
    assert!(
        m.header("content-type")
            .is_some_and(|ct| ct.starts_with("text/plain")),
        "{m:?}"
    );
}

/// T-58, T-61, T-62, R-MET-8: the log provider's debug `metrics` lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t58_t61_t62_log_metrics_provider() {
    let env = TestEnv::start_with(|c| {
        c.set("metrics.log", json!({}));
    })
    .await;
    let pid = env.server.pid();
    let init = env.server.find_logs("initializing metrics");
    assert_eq!(init.len(), 1, "T-58: exactly one provider: {init:?}");
    assert_eq!(init[0]["provider"], json!("log"));
    let ready = env
        .server
        .wait_log(
            |l| is_event(l, "metrics") && l["ready"] == json!(true),
            secs(5.0),
        )
        .await;
    assert_eq!(ready["level"], json!("debug"));

    let mut c1 = env.client().await;
    let line = env
        .server
        .wait_log(
            |l| {
                is_event(l, "metrics")
                    && l["active_connections"] == json!(1)
                    && l["total_connections"] == json!(1)
            },
            secs(5.0),
        )
        .await;
    assert_eq!(line["level"], json!("debug"), "T-61: {line}");
    assert_eq!(line["pid"], json!(pid), "T-61: {line}");

    let c2 = env.client().await;
    env.server
        .wait_log(
            |l| {
                is_event(l, "metrics")
                    && l["active_connections"] == json!(2)
                    && l["total_connections"] == json!(2)
            },
            secs(5.0),
        )
        .await;
    let mark = env.server.log_mark();
    c2.abort().await;
    let line = env
        .server
        .wait_log_since(
            mark,
            |l| is_event(l, "metrics") && l.get("active_connections").is_some(),
            secs(5.0),
        )
        .await;
    assert_eq!(line["active_connections"], json!(1), "T-62: {line}");
    assert_eq!(line["total_connections"], json!(2), "T-62: {line}");
    assert_eq!(line["pid"], json!(pid), "T-62: {line}");

    // Counted commands log `evt` and `success`.
    ping_ok(&mut c1, "x").await;
    let l = env
        .server
        .wait_log(
            |l| is_event(l, "metrics") && l["evt"] == json!("ping"),
            secs(5.0),
        )
        .await;
    assert_eq!(l["success"], json!(true), "{l}");
    c1.request(&json!({"event": "nope"})).await;
    let l = env
        .server
        .wait_log(
            |l| is_event(l, "metrics") && l["evt"] == json!("unknown"),
            secs(5.0),
        )
        .await;
    assert_eq!(l["success"], json!(false), "{l}");
    assert_eq!(l["level"], json!("debug"));
    let mark = env.server.log_mark();
    assert_eq!(request_text(&mut c1, "{").await, invalid_reply());
    ping_ok(&mut c1, "barrier").await;
    env.server
        .wait_log_since(
            mark,
            |l| is_event(l, "metrics") && l["evt"] == json!("ping"),
            secs(5.0),
        )
        .await;
    assert!(
        env.server
            .logs_since(mark)
            .iter()
            .filter(|l| is_event(l, "metrics") && l.get("evt").is_some())
            .all(|l| l["evt"] == json!("ping")),
        "invalid JSON must not be counted: {:?}",
        env.server.logs_since(mark)
    );
}

/// T-60, R-MET-1: without providers there are no metrics lines (and no metrics endpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t60_no_metrics_providers() {
    let env = TestEnv::start().await;
    let mut c = env.client().await;
    ping_ok(&mut c, "x").await;
    c.request(&json!({"event": "nope"})).await;
    drop(c);
    let mut c = env.client().await;
    ping_ok(&mut c, "y").await;
    assert_eq!(
        env.server.count_log("metrics"),
        0,
        "{}",
        env.server.log_dump()
    );
    assert_eq!(env.server.count_log("initializing metrics"), 0);
    assert_eq!(env.server.count_log(METRICS_EVENT), 0);
}

/// T-7, R-LOG-1, R-LOG-3: `client event` and `client send` debug lines with `pid`, `session` and
/// `data` as JSON objects; every line is a JSON object with event/level/logger/timestamp/pid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t07_client_event_and_client_send_logs() {
    let env = TestEnv::start().await;
    let pid = env.server.pid();
    let mut c = env.client().await;
    let r = c.request(&json!({"event": "auth", "method": "x"})).await;
    assert_eq!(r, auth_error(json!(METHOD_UNSUPPORTED)));
    let ev = env
        .server
        .wait_log(
            |l| is_event(l, "client event") && l["data"] == json!({"event": "auth", "method": "x"}),
            secs(5.0),
        )
        .await;
    let sent = env
        .server
        .wait_log(
            |l| {
                is_event(l, "client send")
                    && l["data"]
                        == json!({"event": "auth", "status": "error", "error": METHOD_UNSUPPORTED})
            },
            secs(5.0),
        )
        .await;
    for l in [&ev, &sent] {
        assert_eq!(l["level"], json!("debug"), "{l}");
        assert_eq!(l["logger"], json!("socketshark"), "{l}");
        assert_eq!(l["pid"], json!(pid), "{l}");
        assert!(l["session"].is_u64(), "session must be an integer: {l}");
        assert!(l["data"].is_object(), "data must be the JSON object: {l}");
    }
    assert_eq!(ev["session"], sent["session"]);
    let new_session = env.server.wait_event("new session", secs(5.0)).await;
    assert_eq!(new_session["session"], ev["session"]);
    assert!(new_session["remote"].is_string(), "{new_session}");

    // Ready line (R-LOG-5).
    let ready = env.server.find_logs(READY_EVENT);
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0]["level"], json!("info"));
    assert_eq!(ready[0]["host"], json!("127.0.0.1"));
    assert_eq!(ready[0]["port"], json!(env.server.port()));
    assert_eq!(ready[0]["secure"], json!(false));

    drop(c);
    env.server.stop(secs(10.0)).await;
    for line in env.server.logs() {
        assert_log_shape(&line, pid);
    }
    assert_eq!(env.server.stdout_text(), "", "nothing on stdout (R-LOG-1)");
}

/// T-63, R-HTTP-2, R-LOG-6: URL credentials become Basic authentication and never reach the
/// log (`*****:*****@`); a user without password is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t63_url_credentials_are_basic_auth_and_scrubbed_from_logs() {
    let env = TestEnv::start_with_env(|c, _redis, svc| {
        c.set(
            "authentication.ticket.validation_url",
            svc.url_with_userinfo("user:secret", "/auth"),
        );
        c.set_path(
            &["services", "simple_before_subscribe", "before_subscribe"],
            svc.url_with_userinfo(":secret", "/sbs/before?q=1#frag"),
        );
        c.set_path(
            &["services", "authorizer", "authorizer"],
            format!(
                "http://user:secret@127.0.0.1:{}/authorizer/authorizer",
                unreachable_port()
            ),
        );
        c.set_path(
            &["services", "ws_test", "on_unsubscribe"],
            svc.url_with_userinfo("someuser", "/ws_test/on_unsubscribe"),
        );
    })
    .await;
    let mut c = env.auth_client().await;
    subscribe_ok(&mut c, "simple_before_subscribe.t").await;
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "authorizer.t"}))
        .await;
    assert_eq!(r["error"], json!("Service unavailable."));
    subscribe_ok(&mut c, "ws_test.t").await;
    let r = c
        .request(&json!({"event": "unsubscribe", "subscription": "ws_test.t"}))
        .await;
    assert_eq!(r["status"], json!("ok"));
    env.svc
        .wait_calls("/ws_test/on_unsubscribe", 1, secs(5.0))
        .await;

    let auth = env.svc.requests("/auth");
    assert_eq!(auth.len(), 1);
    let want = format!("Basic {}", base64(b"user:secret"));
    assert_eq!(auth[0].header("authorization"), Some(want.as_str()));
    assert_eq!(auth[0].uri, "/auth");
    let sbs = env.svc.requests("/sbs/before");
    assert_eq!(sbs.len(), 1);
    let want = format!("Basic {}", base64(b":secret"));
    assert_eq!(sbs[0].header("authorization"), Some(want.as_str()));
    assert_eq!(sbs[0].uri, "/sbs/before?q=1");

    ping_ok(&mut c, "barrier").await;
    drop(c);
    env.server.stop(secs(10.0)).await;
    let text = env.server.stderr_text();
    assert!(
        !text.contains("secret"),
        "a log line contains the password:\n{text}"
    );
    assert!(
        text.contains("*****:*****@127.0.0.1"),
        "the scrubbed URL is not logged:\n{text}"
    );
    assert!(
        text.contains("someuser@127.0.0.1"),
        "a user without password is kept:\n{text}"
    );
    assert!(
        env.server
            .logs()
            .iter()
            .filter(|l| is_event(l, "http request"))
            .any(|l| l["url"]
                == json!(format!(
                    "http://*****:*****@127.0.0.1:{}/auth",
                    env.svc.port()
                ))),
        "no `http request` line with the scrubbed validation URL:\n{text}"
    );
    assert!(
        env.server.logs().iter().any(|l| l["url"]
            == json!(format!(
                "http://*****:*****@127.0.0.1:{}/sbs/before?q=1#frag",
                env.svc.port()
            ))),
        "password-only URL not scrubbed with query and fragment kept:\n{text}"
    );
}

/// The R-LOG-4 trace events that [`exercise_traced_paths`] triggers.
const TRACE_EVENTS: [&str; 11] = [
    "trace",
    "redis ping",
    "redis pong",
    "ping",
    "pong",
    "service event",
    "message filtered",
    "throttled message scheduled",
    "sending throttled message",
    "initializing periodic authorizer",
    "initializing periodic heartbeat task",
];

/// Starts a server with `log.level = level`, Redis and WebSocket pings every 0.1 s, and drives
/// it through every traced path: an authenticated session subscribes to `periodic_authorizer`
/// (renewal 0.2) and `periodic_heartbeat` (heartbeat 0.2) and to `simple.topic`, which then gets
/// a message dropped by its filter fields, one dropped by order, and three throttled messages
/// (first sent, second scheduled, third replacing it: dropped by throttle, then sent trailing).
async fn exercise_traced_paths(level: &str) -> TestEnv {
    let env = TestEnv::start_with(|cfg| {
        cfg.set("log.level", level);
        cfg.merge("redis", json!({"ping_interval": 0.1, "ping_timeout": 1.0}));
        cfg.set("ws.ping", json!({"interval": 0.1, "timeout": 1.0}));
    })
    .await;
    let mut c = env.auth_client().await;
    let sub = "simple.topic";
    for name in ["periodic_authorizer.topic", "periodic_heartbeat.topic", sub] {
        let r = c
            .request(&json!({"event": "subscribe", "subscription": name}))
            .await;
        assert_eq!(r["status"], json!("ok"), "{r}");
    }
    env.redis
        .wait_channels(
            &["periodic_authorizer.topic", "periodic_heartbeat.topic", sub],
            secs(5.0),
        )
        .await;
    let opt =
        |data: &str, options: Value| json!({"subscription": sub, "data": data, "options": options});
    let msgs = [
        json!({"subscription": sub, "data": "filtered", "extra": "other"}),
        opt("o5", json!({"order": 5})),
        opt("o3", json!({"order": 3})),
        opt("t1", json!({"throttle": 0.3, "throttle_key": "t"})),
        opt("t2", json!({"throttle": 0.3, "throttle_key": "t"})),
        opt("t3", json!({"throttle": 0.3, "throttle_key": "t"})),
    ];
    for m in &msgs {
        env.redis.publish_json(sub, m).await;
    }
    let got: Vec<Value> = c
        .recv_n(3)
        .await
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(got, vec![json!("o5"), json!("t1"), json!("t3")]);
    env.svc
        .wait_calls("/periodic_heartbeat/on_heartbeat", 2, secs(5.0))
        .await;
    env.svc
        .wait_calls("/periodic_authorizer/authorizer", 2, secs(5.0))
        .await;
    c.wait_pings(2, secs(5.0)).await;
    sleep_ms(500).await; // several Redis PINGs (every 0.1 s)
    assert!(env.server.is_running());
    env
}

/// R-LOG-4, R-LOG-2: with `log.level = "TRACE"` the trace events appear on logger
/// `trace.socketshark` at level `debug`, with their context: `message filtered` with `reason`
/// `fields`, `order` and `throttle` and the message's `data`; `throttled message scheduled`
/// (`throttle_key`, `delay`: the time until the trailing send); `trace` once at start; `sending throttled
/// message`; `initializing periodic authorizer` (`subscription`, `period`, `jitter`);
/// `initializing periodic heartbeat task` (`subscription`, `period`); `redis ping` / `redis
/// pong` (`latency`); WebSocket `ping` / `pong` (`latency`); `service event` (`data`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_log_4_trace_events_at_trace_level() {
    let env = exercise_traced_paths("TRACE").await;
    let pid = env.server.pid();
    let trace = |event: &str| -> Vec<Value> {
        let lines = env.server.find_logs(event);
        assert!(
            !lines.is_empty(),
            "no `{event}` trace line:\n{}",
            env.server.log_dump()
        );
        for l in &lines {
            assert_eq!(l["logger"], json!("trace.socketshark"), "{l}");
            assert_eq!(l["level"], json!("debug"), "{l}");
            assert_log_shape(l, pid);
        }
        lines
    };
    for event in TRACE_EVENTS {
        trace(event);
    }
    assert_eq!(trace("trace").len(), 1, "`trace` once at start");
    let filtered = trace("message filtered");
    // `data` is the message being filtered: for `throttle`, the one that arrived while a trailing
    // send was scheduled (it takes the place of the pending one, which is never sent).
    for (reason, data) in [("fields", "filtered"), ("order", "o3"), ("throttle", "t3")] {
        let l = filtered
            .iter()
            .find(|l| l["reason"] == json!(reason))
            .unwrap_or_else(|| panic!("no `message filtered` with reason {reason}: {filtered:#?}"));
        assert_eq!(l["subscription"], json!("simple.topic"), "{l}");
        assert_eq!(l["data"], json!(data), "{l}");
    }
    assert_eq!(filtered.len(), 3, "{filtered:#?}");
    let scheduled = trace("throttled message scheduled");
    assert_eq!(scheduled.len(), 1, "{scheduled:#?}");
    assert!(
        scheduled[0]["delay"]
            .as_f64()
            .is_some_and(|d| (0.0..=0.3).contains(&d)),
        "{}",
        scheduled[0]
    );
    assert!(scheduled[0]["throttle_key"].is_string(), "{}", scheduled[0]);
    let authz = trace("initializing periodic authorizer");
    assert_eq!(authz.len(), 1, "{authz:#?}");
    assert_eq!(authz[0]["subscription"], json!("periodic_authorizer.topic"));
    assert_eq!(authz[0]["period"].as_f64(), Some(0.2), "{}", authz[0]);
    assert_eq!(authz[0]["jitter"].as_f64(), Some(0.0), "{}", authz[0]);
    let hb = trace("initializing periodic heartbeat task");
    assert_eq!(hb.len(), 1, "{hb:#?}");
    assert_eq!(hb[0]["subscription"], json!("periodic_heartbeat.topic"));
    assert_eq!(hb[0]["period"].as_f64(), Some(0.2), "{}", hb[0]);
    for event in ["redis pong", "pong"] {
        for l in trace(event) {
            assert!(
                l["latency"].as_f64().is_some_and(|x| x >= 0.0),
                "latency: {l}"
            );
        }
    }
    let events = trace("service event");
    assert!(
        events
            .iter()
            .any(|l| l["data"]["data"] == json!("o5") && l["data"]["options"]["order"] == 5),
        "no `service event` with the published message as `data`: {events:#?}"
    );
    // Trace lines do not replace the main logger's debug lines.
    assert!(env.server.has_log("sending heartbeat"));
    assert!(env.server.has_log("client event"));
}

/// R-LOG-2 / R-LOG-4: with `log.level = "DEBUG"` the same activity logs its debug lines but no
/// trace line at all (no logger `trace.socketshark`, none of the trace events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_log_4_no_trace_events_at_debug_level() {
    let env = exercise_traced_paths("DEBUG").await;
    assert!(env.server.has_log("sending heartbeat"));
    assert!(env.server.has_log("client event"));
    for l in env.server.logs() {
        assert_ne!(l["logger"], json!("trace.socketshark"), "{l}");
        let event = l["event"].as_str().unwrap_or("");
        assert!(!TRACE_EVENTS.contains(&event), "trace event at DEBUG: {l}");
    }
}

// ================================================================================================
// 4. CLI and configuration (R-CFG)
// ================================================================================================

/// R-CFG-1: `--version` and `--help` exit 0; `--check-config` without `-c` exits 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_cfg_1_version_help_and_check_config_without_file() {
    let v = run_cli(vec!["--version".into()], secs(10.0)).await;
    assert!(v.status.success(), "--version: {}", v.status);
    assert!(v.stdout.contains("socketshark"), "{}", v.stdout);
    let h = run_cli(vec!["--help".into()], secs(10.0)).await;
    assert!(h.status.success(), "--help: {}", h.status);
    assert!(h.stdout.contains("--config"), "{}", h.stdout);
    // Without -c the server runs on the embedded broker (issue 6; tested in tests/api.rs), but
    // --check-config needs a file.
    let m = run_cli(vec!["--check-config".into()], secs(10.0)).await;
    assert_eq!(
        m.status.code(),
        Some(2),
        "--check-config without -c: {}",
        m.status
    );
    assert!(m.stderr.contains("-c FILE.toml"), "{}", m.stderr);
}

/// R-CFG-5: a missing file, bad TOML, an unknown key, a wrong type, an invalid URL → exit 2 and
/// one stderr line naming the key, no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_cfg_5_config_errors_exit_2_with_one_line_naming_the_key() {
    let r = run_cli(
        vec!["-c".into(), "/nonexistent/socketshark-missing.toml".into()],
        secs(10.0),
    )
    .await;
    assert_config_error(r.status, &r.stderr, &["socketshark-missing.toml"]);

    let (status, stderr) = Server::start_expect_failure("[ws\nport = 1\n", secs(10.0)).await;
    assert_config_error(status, &stderr, &[]);

    let cases: Vec<(Config, Vec<&str>)> = vec![
        (
            offline_config().with("services.simple.authorizerr", "http://127.0.0.1:1/a"),
            vec!["services.simple", "authorizerr"],
        ),
        (offline_config().with("ws.portt", 1), vec!["ws", "portt"]),
        (
            offline_config().with("http.tries", "three"),
            vec!["http.tries"],
        ),
        (
            offline_config().with("ws.ping.interval", "fast"),
            vec!["ws.ping.interval"],
        ),
        (
            offline_config().with("services.simple.require_authentication", "no"),
            vec!["services.simple.require_authentication"],
        ),
        (
            offline_config().with("services.simple.authorizer", "not a url"),
            vec!["services.simple.authorizer"],
        ),
        (
            offline_config().with("authentication.ticket.validation_url", "http//x"),
            vec!["authentication.ticket.validation_url"],
        ),
    ];
    for (cfg, mentions) in cases {
        let (status, stderr) = Server::start_expect_failure(&cfg.toml(), secs(10.0)).await;
        assert_config_error(status, &stderr, &mentions);
    }
}

/// R-CFG-5: `--check-config` validates without starting anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_cfg_check_config_exits_without_starting() {
    let dir = TempDir::new("protocol-check");
    let good = dir.write("good.toml", offline_config().toml());
    let r = run_cli(
        vec![
            "-c".into(),
            good.display().to_string(),
            "--check-config".into(),
        ],
        secs(10.0),
    )
    .await;
    assert!(r.status.success(), "{}: {}", r.status, r.stderr);
    assert!(!r.stderr.contains("ready"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("could not connect to redis"),
        "{}",
        r.stderr
    );
    let bad = dir.write(
        "bad.toml",
        offline_config().with("http.tries", "three").toml(),
    );
    let r = run_cli(
        vec![
            "-c".into(),
            bad.display().to_string(),
            "--check-config".into(),
        ],
        secs(10.0),
    )
    .await;
    assert_config_error(r.status, &r.stderr, &["http.tries"]);
}

/// T-59, R-MET-1, R-CFG-5: an unknown metrics provider, or Prometheus without `port`, is a
/// startup failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t59_unknown_metrics_provider_fails_startup() {
    let cfg = offline_config().with("metrics.statsd", json!({"port": 8125}));
    let (status, stderr) = Server::start_expect_failure(&cfg.toml(), secs(10.0)).await;
    assert!(!status.success(), "{status}: {stderr}");
    assert!(stderr.contains("statsd"), "{stderr}");
    assert!(!stderr.contains(READY_EVENT), "{stderr}");
    let cfg = offline_config().with("metrics.prometheus", json!({"host": "127.0.0.1"}));
    let (status, stderr) = Server::start_expect_failure(&cfg.toml(), secs(10.0)).await;
    assert!(!status.success(), "{status}: {stderr}");
    assert!(stderr.contains("port"), "{stderr}");
}

/// Starting with `cfg` fails: a `could not connect to redis` error line, a non-zero exit, no
/// ready line, no panic (R-RED-1, R-CFG-5).
async fn assert_redis_startup_failure(cfg: &Config) {
    let (status, stderr) = Server::start_expect_failure(&cfg.toml(), secs(15.0)).await;
    assert!(!status.success(), "{status}: {stderr}");
    let line = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| is_event(l, "could not connect to redis"))
        .unwrap_or_else(|| panic!("no `could not connect to redis` line:\n{stderr}"));
    assert_eq!(line["level"], json!("error"), "{line}");
    assert!(!stderr.contains(READY_EVENT), "{stderr}");
    assert!(
        !stderr.to_ascii_lowercase().contains("panicked"),
        "{stderr}"
    );
}

/// R-RED-1, R-CFG-5: Redis unreachable → `could not connect to redis` error line, non-zero exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_red_1_redis_unreachable_fails_startup() {
    let cfg = offline_config();
    assert_redis_startup_failure(&cfg).await;
}

/// R-RED-1, R-RED-3, R-CFG-5: `[redis]` reachable but `[redis_alt]` unreachable → the
/// `could not connect to redis` error line, non-zero exit, no ready line, no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_red_1_redis_alt_unreachable_fails_startup() {
    let redis = Redis::start().await;
    let cfg = base_config_for(redis.port(), "http://127.0.0.1:1").with(
        "redis_alt",
        json!({"host": "127.0.0.1", "port": unreachable_port(), "channel_prefix": "alt:"}),
    );
    assert_redis_startup_failure(&cfg).await;
}

/// R-RED-1: the subscriber connection selects `redis.db`: a database Redis does not have fails
/// startup (with SELECT's error in the line); an existing non-zero one works (PUB/SUB does not
/// depend on it: a message published from database 0 is delivered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_red_1_redis_db_is_selected() {
    let redis = Redis::start().await;
    let cfg = base_config_for(redis.port(), "http://127.0.0.1:1").with("redis.db", 99);
    assert_redis_startup_failure(&cfg).await;
    let (_, stderr) = Server::start_expect_failure(&cfg.toml(), secs(15.0)).await;
    assert!(stderr.contains("SELECT 99"), "{stderr}");

    let cfg = base_config_for(redis.port(), "http://127.0.0.1:1").with("redis.db", 3);
    let server = Server::start_config(&cfg).await;
    let mut c = Client::connect(&server.ws_url()).await;
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "simple.topic"}))
        .await;
    assert_eq!(r["status"], json!("ok"), "{r}");
    redis
        .publish_json(
            "simple.topic",
            &json!({"subscription": "simple.topic", "data": 1}),
        )
        .await;
    let m = c.recv().await;
    assert_eq!(m["data"], json!(1), "{m}");
}

/// R-CFG-5: the WebSocket port cannot be bound → non-zero exit, no ready line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_cfg_5_websocket_port_taken_fails_startup() {
    let redis = Redis::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = base_config_for(redis.port(), "http://127.0.0.1:1").with("ws.port", port);
    let (status, stderr) = Server::start_expect_failure(&cfg.toml(), secs(15.0)).await;
    assert!(!status.success(), "{status}: {stderr}");
    assert!(!stderr.contains(READY_EVENT), "{stderr}");
    assert!(
        !stderr.to_ascii_lowercase().contains("panicked"),
        "{stderr}"
    );
    drop(taken);
}

/// R-CFG-2: durations may be floats (`0.2`); e.g. `ws.ping.interval = 0.2` pings every 0.2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_cfg_2_float_durations_are_accepted() {
    let env = TestEnv::start_with(|c| {
        c.set("ws.ping", json!({"interval": 0.2, "timeout": 1.5}));
        c.set("http.timeout", 2.5);
        c.set("http.wait", 0.2);
        c.set("redis.ping_interval", 0.5);
        c.set("redis.ping_timeout", 2.5);
        c.set("services.periodic_heartbeat.heartbeat_period", 0.25);
    })
    .await;
    let mut c = env.client().await;
    c.wait_pings(3, secs(5.0)).await;
    ping_ok(&mut c, "alive").await;
    assert!(env.server.is_running());
}
