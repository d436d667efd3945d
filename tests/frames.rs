//! The WebSocket frame layer over a raw TCP socket, Autobahn-style (the cases of the Autobahn
//! test suite that apply to a server: framing, fragmentation, control frames, UTF-8, close
//! codes, masking): each test writes hand-made frames and reads the server's frames back.
//! Protocol errors close with 1002, invalid UTF-8 with 1007, too-big messages with 1009
//! (R-WS-3..6, RFC 6455).

mod common;
use common::raw::{Raw, frame};
use common::*;

fn ping_cmd(tag: &str) -> Vec<u8> {
    json!({"event": "ping", "data": tag})
        .to_string()
        .into_bytes()
}

fn pong(tag: &str) -> Value {
    json!({"event": "pong", "data": tag})
}

/// The connection is still served: a ping command gets its pong.
async fn assert_served(c: &mut Raw, tag: &str) {
    c.send(&frame(0x81, &ping_cmd(tag))).await;
    assert_eq!(c.recv().await.expect("pong").json(), pong(tag));
}

/// Autobahn 1.x: text and binary messages of every length class, and several frames in one write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_lengths_and_batches() {
    let env = TestEnv::start().await;
    let mut c = Raw::connect(&env).await;
    for len in [0usize, 100, 125, 126, 127, 65535, 65536, 200_000] {
        let data = "x".repeat(len);
        let cmd = json!({"event": "ping", "data": data}).to_string();
        let opcode = if len % 2 == 0 { 0x81 } else { 0x82 };
        c.send(&frame(opcode, cmd.as_bytes())).await;
        // The pong's data is truncated to 128 characters (R-PING).
        let r = c.recv().await.unwrap().json();
        assert!(
            r["event"] == "pong" && r["data"] == json!(data[..len.min(128)]),
            "length {len}"
        );
    }
    // Ten commands in one write, and one command split byte by byte.
    let mut burst = Vec::new();
    for i in 0..10 {
        burst.extend(frame(0x81, &ping_cmd(&format!("b{i}"))));
    }
    c.send(&burst).await;
    for i in 0..10 {
        assert_eq!(c.recv().await.unwrap().json(), pong(&format!("b{i}")));
    }
    for b in frame(0x81, &ping_cmd("slow")) {
        c.send(&[b]).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(c.recv().await.unwrap().json(), pong("slow"));
}

/// Autobahn 2.x and 5.x: pings are answered with their payload, unsolicited pongs ignored;
/// fragmented messages are reassembled, with pings and pongs between the fragments answered
/// first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frames_and_fragments() {
    let env = TestEnv::start().await;
    let mut c = Raw::connect(&env).await;
    c.send(&frame(0x89, b"hello")).await;
    let p = c.recv().await.unwrap();
    assert_eq!((p.opcode, p.payload.as_slice()), (0xA, &b"hello"[..]));
    c.send(&frame(0x89, &[0xfe; 125])).await;
    assert_eq!(c.recv().await.unwrap().payload, vec![0xfe; 125]);
    c.send(&frame(0x8A, b"unsolicited")).await;
    assert_served(&mut c, "after pong").await;

    let cmd = ping_cmd("fragmented");
    let (a, rest) = cmd.split_at(5);
    let (b, d) = rest.split_at(7);
    let mut bytes = frame(0x01, a);
    bytes.extend(frame(0x89, b"between"));
    bytes.extend(frame(0x00, b));
    bytes.extend(frame(0x8A, b""));
    bytes.extend(frame(0x00, b""));
    bytes.extend(frame(0x80, d));
    c.send(&bytes).await;
    let p = c.recv().await.unwrap();
    assert_eq!((p.opcode, p.payload.as_slice()), (0xA, &b"between"[..]));
    assert_eq!(c.recv().await.unwrap().json(), pong("fragmented"));
    // A binary message in fragments, sent one frame per write.
    let cmd = ping_cmd("binary fragments");
    let parts: Vec<&[u8]> = cmd.chunks(4).collect();
    for (i, part) in parts.iter().enumerate() {
        let first = if i == 0 { 0x02 } else { 0x00 };
        let fin = if i == parts.len() - 1 { 0x80 } else { 0 };
        c.send(&frame(first | fin, part)).await;
    }
    assert_eq!(c.recv().await.unwrap().json(), pong("binary fragments"));
}

/// Autobahn 3.x, 4.x, 5.x, 7.x: reserved bits, unknown opcodes, unmasked frames, fragmented or
/// oversized control frames, stray continuations, a data frame inside a fragmented message and
/// invalid close codes each close the connection with 1002; the session end follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_close_1002() {
    let env = TestEnv::start().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("RSV1 without an extension", frame(0xC1, &ping_cmd("x"))),
        ("RSV2", frame(0xA1, &ping_cmd("x"))),
        ("RSV3 on a ping", frame(0x99, b"")),
        ("reserved opcode 3", frame(0x83, b"")),
        ("reserved opcode 0xB", frame(0x8B, b"x")),
        ("unmasked frame", {
            let p = ping_cmd("x");
            let mut b = vec![0x81, p.len() as u8];
            b.extend(p);
            b
        }),
        ("fragmented ping", frame(0x09, b"x")),
        ("ping of 126 bytes", frame(0x89, &[0; 126])),
        ("continuation without a message", frame(0x80, b"x")),
        ("text frame inside a fragmented message", {
            let mut b = frame(0x01, b"{");
            b.extend(frame(0x81, b"}"));
            b
        }),
        ("close with a one-byte payload", frame(0x88, &[0x03])),
        ("close code 1005", frame(0x88, &1005u16.to_be_bytes())),
        ("close code 1016", frame(0x88, &1016u16.to_be_bytes())),
        ("close code 2000", frame(0x88, &2000u16.to_be_bytes())),
        ("close code 5000", frame(0x88, &5000u16.to_be_bytes())),
    ];
    for (name, bytes) in cases {
        let mut c = Raw::connect(&env).await;
        assert_served(&mut c, name).await;
        let mark = env.server.log_mark();
        c.send(&bytes).await;
        assert_eq!(c.close_code().await, Some(1002), "{name}");
        env.server
            .wait_log_since(mark, |l| is_event(l, "closing connection"), secs(5.0))
            .await;
    }
    // Other clients were never affected.
    let mut c = Raw::connect(&env).await;
    assert_served(&mut c, "bystander").await;
}

/// Autobahn 6.x: invalid UTF-8 in a text message (whole, across fragments, or in a close
/// reason) closes with 1007; a code point split across fragments is valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf8_rules() {
    let env = TestEnv::start().await;
    let mut c = Raw::connect(&env).await;
    let cmd = json!({"event": "ping", "data": "κόσμε"}).to_string();
    let bytes = cmd.as_bytes();
    let split = cmd.find('ό').unwrap() + 1; // inside the two bytes of ό
    let mut b = frame(0x01, &bytes[..split]);
    b.extend(frame(0x80, &bytes[split..]));
    c.send(&b).await;
    assert_eq!(c.recv().await.unwrap().json(), pong("κόσμε"));

    let invalid: Vec<(&str, Vec<u8>)> = vec![
        (
            "a lone continuation byte",
            frame(0x81, b"{\"event\":\"ping\",\"data\":\"\x80\"}"),
        ),
        ("a surrogate", frame(0x81, &[0xed, 0xa0, 0x80])),
        ("a truncated sequence across fragments", {
            let mut b = frame(0x01, &[b'"', 0xce]);
            b.extend(frame(0x80, b"\""));
            b
        }),
        ("a close reason", {
            let mut p = 1000u16.to_be_bytes().to_vec();
            p.extend_from_slice(&[0xff, 0xfe]);
            frame(0x88, &p)
        }),
    ];
    for (name, bytes) in invalid {
        let mut c = Raw::connect(&env).await;
        c.send(&bytes).await;
        assert_eq!(c.close_code().await, Some(1007), "{name}");
    }
}

/// Autobahn 7.x: the client's close is answered with its own code and the connection ends;
/// a close without payload is answered with an empty close; frames after it are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_handshake() {
    let env = TestEnv::start().await;
    for code in [1000u16, 1001, 1003, 1011, 3000, 4999] {
        let mut c = Raw::connect(&env).await;
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice("bye ✓".as_bytes());
        let mut bytes = frame(0x88, &p);
        bytes.extend(frame(0x81, &ping_cmd("after close")));
        c.send(&bytes).await;
        let f = c.recv().await.expect("close answer");
        assert_eq!(f.close_code(), Some(code));
        assert_eq!(c.recv().await, None, "stream should end after the close");
    }
    let mut c = Raw::connect(&env).await;
    c.send(&frame(0x88, b"")).await;
    let f = c.recv().await.expect("close answer");
    assert_eq!((f.opcode, f.payload.len()), (8, 0));
}

/// A frame header announcing more than `limits.max_message_size` closes with 1009 at once,
/// before its payload is sent (nothing is allocated for it); fragments add up to the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_big_is_refused_from_the_header() {
    let env = TestEnv::start_with(|c| {
        c.set_path(&["limits", "max_message_size"], json!(2000));
    })
    .await;
    let mut c = Raw::connect(&env).await;
    let mut head = vec![0x82, 0x80 | 127];
    head.extend_from_slice(&(1u64 << 40).to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    c.send(&head).await;
    assert_eq!(c.close_code().await, Some(1009));

    let mut c = Raw::connect(&env).await;
    let mut b = frame(0x01, &[b' '; 1200]);
    b.extend(frame(0x80, &[b' '; 801]));
    c.send(&b).await;
    assert_eq!(c.close_code().await, Some(1009));
}
