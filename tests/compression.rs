//! permessage-deflate (R-WS-6a, RFC 7692; SPEC T-64, T-65; issue 19) over real sockets: the
//! negotiation, published messages compressed per channel stream and inflated by clients that
//! keep their inflate window like browsers do, compressed client messages, and the limits.

mod common;
use common::raw::{Raw, frame};
use common::*;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use socketshark::wire::deflate::compress_solo;

const CHROME: &str = "permessage-deflate; client_max_window_bits";

/// What the server answers to an offer (`None`: the extension was declined).
async fn answer(port: u16, offer: Option<&str>) -> Option<String> {
    Raw::connect_offering(port, offer).await.extensions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiation_follows_rfc_7692() {
    let env = TestEnv::start().await;
    let port = env.server.port();
    let ours = "permessage-deflate; server_max_window_bits=15; client_no_context_takeover";
    assert_eq!(answer(port, Some(CHROME)).await.as_deref(), Some(ours));
    // Firefox offers it bare.
    assert_eq!(
        answer(port, Some("permessage-deflate")).await.as_deref(),
        Some(ours)
    );
    assert_eq!(answer(port, None).await, None);
    // Unknown or invalid parameters decline that offer; the handshake still succeeds.
    for bad in [
        "permessage-deflate; foo=1",
        "permessage-deflate; server_max_window_bits=20",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; client_max_window_bits; client_max_window_bits",
        "x-webkit-deflate-frame",
    ] {
        assert_eq!(answer(port, Some(bad)).await, None, "{bad}");
    }
    // The first acceptable offer of several.
    assert_eq!(
        answer(
            port,
            Some("permessage-deflate; foo, permessage-deflate; server_no_context_takeover")
        )
        .await
        .as_deref(),
        Some(
            "permessage-deflate; server_max_window_bits=15; client_no_context_takeover; server_no_context_takeover"
        )
    );
    assert_eq!(
        answer(port, Some("permessage-deflate; server_max_window_bits=10"))
            .await
            .as_deref(),
        Some("permessage-deflate; server_max_window_bits=10; client_no_context_takeover")
    );

    let off = TestEnv::start_with(|c| {
        c.set_path(&["ws", "compression", "enabled"], false);
    })
    .await;
    assert_eq!(answer(off.server.port(), Some(CHROME)).await, None);
}

/// A realistic record of about 420 bytes (CRM-like: ids, a status, a name, a timestamp).
fn record(rng: &mut StdRng, i: usize) -> Value {
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    let w = |rng: &mut StdRng| words[rng.random_range(0..words.len())];
    let kind = ["contact", "lead", "opportunity"][rng.random_range(0..3)];
    let status = ["open", "won", "lost"][rng.random_range(0..3)];
    json!({
        "id": format!("{:016x}", rng.random::<u64>()),
        "seq": i,
        "type": kind,
        "organization_id": "org_5f2a9c1e7b3d4a60",
        "user_id": format!("user_{:02}", rng.random_range(0..50)),
        "status": status,
        "display_name": format!("{} {} {}", w(rng), w(rng), w(rng)),
        "value": rng.random_range(0..1_000_000),
        "date_updated": format!("2026-12-06T05:{:02}:{:02}.{:06}+00:00",
            rng.random_range(0..60), rng.random_range(0..60), rng.random_range(0..1_000_000)),
    })
}

/// A raw client's subscribe (or other request): sends it and reads up to its reply, keeping the
/// messages that arrive meanwhile.
async fn request(c: &mut Raw, inbox: &mut Vec<(bool, Value)>, cmd: Value) -> Value {
    c.send(&frame(0x81, cmd.to_string().as_bytes())).await;
    loop {
        let f = c.recv_inflated().await.expect("a reply");
        let v = f.json();
        if v["event"] == "message" {
            inbox.push((f.rsv1, v));
        } else {
            return v;
        }
    }
}

/// Reads `n` more messages into `inbox`.
async fn read_messages(c: &mut Raw, inbox: &mut Vec<(bool, Value)>, n: usize) {
    while inbox.len() < n {
        let f = c.recv_inflated().await.expect("a message");
        inbox.push((f.rsv1, f.json()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_messages_arrive_compressed_and_inflate_to_the_plain_frames() {
    let env = TestEnv::start().await;
    let port = env.server.port();
    let mut a = Raw::connect_offering(port, Some(CHROME)).await;
    let mut b = Raw::connect_offering(port, Some("permessage-deflate")).await;
    let mut p = Raw::connect_offering(port, None).await;
    let sub = json!({"event": "subscribe", "subscription": "simple.crm"});
    let mut inbox: [Vec<(bool, Value)>; 4] = Default::default();
    for (c, inbox) in [&mut a, &mut b, &mut p].into_iter().zip(&mut inbox) {
        assert_eq!(request(c, inbox, sub.clone()).await["status"], "ok");
    }
    let mut rng = StdRng::seed_from_u64(19);
    let publish =
        |i: usize, rng: &mut StdRng| json!({"subscription": "simple.crm", "data": record(rng, i)});
    for i in 0..60 {
        env.redis
            .publish_json("simple.crm", &publish(i, &mut rng))
            .await;
    }
    // A fourth client subscribes late: it joins the channel's stream at a join point.
    let mut late = Raw::connect_offering(port, Some(CHROME)).await;
    assert_eq!(
        request(&mut late, &mut inbox[3], sub.clone()).await["status"],
        "ok"
    );
    for i in 60..100 {
        env.redis
            .publish_json("simple.crm", &publish(i, &mut rng))
            .await;
    }
    read_messages(&mut a, &mut inbox[0], 100).await;
    read_messages(&mut b, &mut inbox[1], 100).await;
    read_messages(&mut p, &mut inbox[2], 100).await;
    // The late client gets the messages delivered after its subscription (the first 60 may
    // still have been on their way): a suffix of the others' ending with the last one.
    while inbox[3].last().is_none_or(|(_, v)| v["data"]["seq"] != 99) {
        let f = late.recv_inflated().await.expect("a message");
        inbox[3].push((f.rsv1, f.json()));
    }

    // Every compressing client inflates to exactly the plain client's frames, in order.
    let plain: Vec<&Value> = inbox[2]
        .iter()
        .map(|(rsv1, v)| {
            assert!(!rsv1, "a client that offered nothing got RSV1");
            v
        })
        .collect();
    for k in [0, 1] {
        let got: Vec<&Value> = inbox[k].iter().map(|(_, v)| v).collect();
        assert_eq!(got, plain, "client {k}");
        let compressed = inbox[k].iter().filter(|(r, _)| *r).count();
        assert_eq!(compressed, 100, "client {k}: every message compressed");
    }
    let late_got: Vec<&Value> = inbox[3].iter().map(|(_, v)| v).collect();
    assert!(late_got.len() >= 40);
    assert_eq!(late_got, plain[100 - late_got.len()..].to_vec());
    let late_compressed = inbox[3].iter().filter(|(r, _)| *r).count();
    assert!(
        late_compressed + 9 >= late_got.len(),
        "late client: {late_compressed} of {} compressed",
        late_got.len()
    );
    // Replies stay uncompressed; a ping command still gets its pong.
    let pong = request(&mut a, &mut inbox[0], json!({"event": "ping"})).await;
    assert_eq!(pong["event"], "pong");
    assert_eq!(inbox[0].len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_takeover_shrinks_a_stream_of_records() {
    let env = TestEnv::start_with(|c| {
        c.set(
            "metrics.prometheus",
            json!({"host": "127.0.0.1", "port": 0}),
        );
        c.set_path(&["ws", "compression", "stream_idle"], 1);
    })
    .await;
    let mport = env.server.metrics_port().await.expect("metrics");
    let mut c = Raw::connect_offering(env.server.port(), Some(CHROME)).await;
    let mut inbox = Vec::new();
    let sub = json!({"event": "subscribe", "subscription": "simple.crm"});
    assert_eq!(request(&mut c, &mut inbox, sub).await["status"], "ok");
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..200 {
        let m = json!({"subscription": "simple.crm", "data": record(&mut rng, i)});
        env.redis.publish_json("simple.crm", &m).await;
    }
    let mut wire = 0usize;
    for _ in 0..200 {
        let f = c.recv().await.expect("a frame");
        assert!(f.rsv1);
        wire += f.payload.len();
    }
    // Without context takeover a ~500-byte record deflates to ~330 bytes; with the channel's
    // stream the same records take well under a third of their size.
    let per_message = wire / 200;
    assert!(per_message < 160, "{per_message} bytes per message");
    // The counters: 200 compressed pushes; one stream holds a compressor, and gives it back
    // once the channel has been idle for `stream_idle` (1 s here; the sweep runs every second).
    let wait_metric = |name: &'static str, want: f64| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = http_get(mport, "/metrics").await.body;
            let v = prom_value(&text, name).unwrap_or_else(|| panic!("no {name}"));
            if v == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} = {v}, want {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    wait_metric("socketshark_messages_compressed_total", 200.0).await;
    wait_metric("socketshark_compression_streams", 1.0).await;
    wait_metric("socketshark_compression_streams", 0.0).await;
    // The next message starts a fresh stream, and still inflates for the client.
    let mut inbox = Vec::new();
    let m = json!({"subscription": "simple.crm", "data": record(&mut rng, 200)});
    env.redis.publish_json("simple.crm", &m).await;
    read_messages(&mut c, &mut inbox, 1).await;
    assert!(inbox[0].0);
    assert_eq!(inbox[0].1["data"]["seq"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_client_messages_whole_and_fragmented() {
    let env = TestEnv::start().await;
    let mut c = Raw::connect_offering(env.server.port(), Some(CHROME)).await;
    let ping = json!({"event": "ping", "data": "zipped zipped zipped zipped"}).to_string();
    let z = compress_solo(ping.as_bytes(), 6, 15);
    c.send(&frame(0xC1, &z)).await;
    let r = c.recv().await.unwrap();
    assert!(!r.rsv1, "replies are not compressed");
    assert_eq!(r.json()["data"], "zipped zipped zipped zipped");
    // Fragmented, with a ping control frame between the fragments.
    let mut bytes = frame(0x41, &z[..4]);
    bytes.extend(frame(0x89, b"hi"));
    bytes.extend(frame(0x80, &z[4..]));
    c.send(&bytes).await;
    let pong = c.recv().await.unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (0xA, &b"hi"[..]));
    assert_eq!(c.recv().await.unwrap().json()["event"], "pong");
    // Uncompressed messages are fine on the same connection.
    c.send(&frame(0x81, ping.as_bytes())).await;
    assert_eq!(c.recv().await.unwrap().json()["event"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_limits_and_invalid_data() {
    let env = TestEnv::start().await;
    let port = env.server.port();
    // Exactly 1 MiB once inflated is accepted.
    let max = 1 << 20;
    let head = "{\"event\":\"ping\",\"data\":\"";
    let fill = max - head.len() - 2;
    let exact = format!("{head}{}\"}}", "a".repeat(fill));
    assert_eq!(exact.len(), max);
    let mut c = Raw::connect_offering(port, Some(CHROME)).await;
    c.send(&frame(0xC1, &compress_solo(exact.as_bytes(), 9, 15)))
        .await;
    assert_eq!(c.recv().await.unwrap().json()["event"], "pong");
    // One byte more: a frame of about a kilobyte closes with 1009.
    let over = format!("{head}{}\"}}", "a".repeat(fill + 1));
    let bomb = compress_solo(over.as_bytes(), 9, 15);
    assert!(bomb.len() < 4096, "{}", bomb.len());
    let mut c = Raw::connect_offering(port, Some(CHROME)).await;
    c.send(&frame(0xC1, &bomb)).await;
    assert_eq!(c.close_code().await, Some(1009));
    // Invalid deflate data fails the connection (1002).
    let mut c = Raw::connect_offering(port, Some(CHROME)).await;
    c.send(&frame(0xC1, &[0xff, 0xee, 0xdd, 0xcc])).await;
    assert_eq!(c.close_code().await, Some(1002));
    // RSV1 without negotiation fails the connection too.
    let mut c = Raw::connect_offering(port, None).await;
    c.send(&frame(0xC1, &compress_solo(b"{\"event\":\"ping\"}", 1, 15)))
        .await;
    assert_eq!(c.close_code().await, Some(1002));
    // The server is still fine.
    let mut c = Raw::connect_offering(port, Some(CHROME)).await;
    c.send(&frame(0x81, b"{\"event\":\"ping\"}")).await;
    assert_eq!(c.recv().await.unwrap().json()["event"], "pong");
}

/// Random subscribe / unsubscribe / publish interleavings over three channels, with clients
/// that compress and clients that do not: every client gets exactly the messages of the channels
/// it was subscribed to when they were published, in order, and every compressed frame inflates
/// (through the client's context-takeover window) to exactly that message. Streams see joins,
/// leaves, skipped messages and clients hopping between channels; each published message is read
/// by its subscribers before the next step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_interleavings_inflate_to_exactly_the_expected_messages() {
    let env = TestEnv::start_with(|c| {
        // Small messages compress too, so that short and long ones mix in the streams.
        c.set_path(&["ws", "compression", "min_size"], 0);
    })
    .await;
    let port = env.server.port();
    let channels = ["simple.a", "simple.b", "simple.c"];
    for seed in [1u64, 2, 3] {
        let mut rng = StdRng::seed_from_u64(seed);
        let offers = [
            Some(CHROME),
            Some(CHROME),
            Some("permessage-deflate"),
            None,
            Some(CHROME),
        ];
        let mut clients = Vec::new();
        for o in offers {
            clients.push(Raw::connect_offering(port, o).await);
        }
        let n = clients.len();
        let mut subscribed = vec![[false; 3]; n];
        let mut inbox: Vec<Vec<(bool, Value)>> = vec![Vec::new(); n];
        let mut expected: Vec<Vec<(String, u64)>> = vec![Vec::new(); n];
        let mut compressed = 0usize;
        for step in 0..150u64 {
            let k = rng.random_range(0..n);
            let ch = rng.random_range(0..3);
            match rng.random_range(0..10) {
                0..=2 => {
                    let event = if subscribed[k][ch] {
                        "unsubscribe"
                    } else {
                        "subscribe"
                    };
                    let cmd = json!({"event": event, "subscription": channels[ch]});
                    let r = request(&mut clients[k], &mut inbox[k], cmd).await;
                    assert_eq!(r["status"], "ok", "seed {seed} step {step}: {r}");
                    subscribed[k][ch] = !subscribed[k][ch];
                }
                _ => {
                    let size = [1, 10, 200, 2000][rng.random_range(0..4)];
                    let text: String = (0..size)
                        .map(|_| ["ab", "cd", "ef", " ", "\"", "é"][rng.random_range(0..6)])
                        .collect();
                    let m = json!({
                        "subscription": channels[ch],
                        "data": {"seed": seed, "step": step, "text": text},
                    });
                    env.redis.publish_json(channels[ch], &m).await;
                    // Every subscriber reads it before the next step: the fan-out of one
                    // message is not atomic with the commands of other sessions (a session
                    // that unsubscribes while the fan-out runs may or may not get it).
                    for (j, subs) in subscribed.iter().enumerate() {
                        if subs[ch] {
                            expected[j].push((channels[ch].to_owned(), step));
                            let want = expected[j].len();
                            read_messages(&mut clients[j], &mut inbox[j], want).await;
                        }
                    }
                }
            }
        }
        for (k, c) in clients.iter_mut().enumerate() {
            let want = expected[k].len();
            let read = read_messages(c, &mut inbox[k], want);
            if tokio::time::timeout(Duration::from_secs(4), read)
                .await
                .is_err()
            {
                let got: Vec<_> = inbox[k]
                    .iter()
                    .map(|(r, v)| (*r, v["subscription"].clone(), v["data"]["step"].clone()))
                    .collect();
                panic!(
                    "seed {seed} client {k} ({:?}): {} of {want} messages\nexpected {:?}\ngot {got:?}",
                    offers[k],
                    inbox[k].len(),
                    expected[k]
                );
            }
            let got: Vec<(String, u64)> = inbox[k]
                .iter()
                .map(|(_, v)| {
                    (
                        v["subscription"].as_str().unwrap().to_owned(),
                        v["data"]["step"].as_u64().unwrap(),
                    )
                })
                .collect();
            assert_eq!(got, expected[k], "seed {seed} client {k}");
            compressed += inbox[k].iter().filter(|(r, _)| *r).count();
            if offers[k].is_none() {
                assert!(inbox[k].iter().all(|(r, _)| !r));
            }
            // Nothing more arrives.
            let pong = request(c, &mut inbox[k], json!({"event": "ping"})).await;
            assert_eq!(pong["event"], "pong");
            assert_eq!(inbox[k].len(), expected[k].len(), "seed {seed} client {k}");
        }
        assert!(compressed > 0, "seed {seed}: nothing was compressed");
    }
}
