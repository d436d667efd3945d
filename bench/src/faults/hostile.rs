//! Slow and hostile clients, with a bystander client pinging the server every 10 ms throughout:
//! a handshake sent one byte a second, many half-open connections (TCP connected, no
//! handshake), a client that never reads while messages are published to it, a frame of
//! 1 MiB + 1 byte, invalid UTF-8 in a text frame, and 10 000 nested arrays.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use super::procs::{Server, metric, proc_stats, scrape};
use super::{Ctx, Row, ServerSetup, ms, progress};
use crate::client::{self, Target, Ws};

const INVALID: &str = "Messages must be JSON and contain an event field.";

/// Pings every 10 ms and records each round trip.
struct Bystander {
    samples: Mutex<Vec<(Instant, u64)>>,
    failures: AtomicU64,
    alive: AtomicBool,
    problem: Mutex<Option<String>>,
}

impl Bystander {
    async fn run(self: Arc<Self>, mut ws: Ws) {
        let mut n = 0u64;
        loop {
            n += 1;
            let t0 = Instant::now();
            // A string: the pong echoes string data only (R-PING-1).
            let tag = n.to_string();
            let cmd = json!({"event": "ping", "data": tag});
            let r = async {
                client::send_json(&mut ws, &cmd).await?;
                loop {
                    match client::next_frame(&mut ws).await {
                        client::Frame::Other(v)
                            if v.get("event") == Some(&json!("pong"))
                                && v.get("data").and_then(Value::as_str) == Some(tag.as_str()) =>
                        {
                            return Ok(());
                        }
                        client::Frame::Closed(why) => return Err(why),
                        _ => {}
                    }
                }
            };
            match tokio::time::timeout(Duration::from_secs(5), r).await {
                Ok(Ok(())) => {
                    self.samples
                        .lock()
                        .unwrap()
                        .push((t0, t0.elapsed().as_micros() as u64));
                }
                Ok(Err(e)) => {
                    *self.problem.lock().unwrap() = Some(e);
                    self.alive.store(false, Relaxed);
                    return;
                }
                Err(_) => {
                    self.failures.fetch_add(1, Relaxed);
                    self.samples.lock().unwrap().push((t0, 5_000_000));
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// (pings, p99 ms, max ms) of the pings sent in [from, to].
    fn window(&self, from: Instant, to: Instant) -> (usize, f64, f64) {
        let mut v: Vec<u64> = self
            .samples
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, r)| *r)
            .collect();
        if v.is_empty() {
            return (0, 0.0, 0.0);
        }
        v.sort_unstable();
        let p99 = v[((v.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)];
        (
            v.len(),
            p99 as f64 / 1000.0,
            *v.last().unwrap() as f64 / 1000.0,
        )
    }
}

/// Adds the bystander's figures and the common checks to a row.
async fn finish(
    row: &mut Row,
    by: &Bystander,
    server: &Server,
    from: Instant,
    panics_before: usize,
) {
    // At least a second of bystander pings around each fault.
    tokio::time::sleep_until((from + Duration::from_secs(1)).into()).await;
    let (n, p99, max) = by.window(from, Instant::now());
    row.figure = format!(
        "{}; bystander p99 {p99:.2} ms, max {max:.2} ms over {n} pings",
        row.figure
    );
    row.json["bystander"] = json!({"pings": n, "p99_ms": p99, "max_ms": max});
    row.check(by.alive.load(Relaxed), || {
        format!(
            "the bystander was disconnected: {:?}",
            by.problem.lock().unwrap()
        )
    });
    row.check(n > 0, || "the bystander got no pong".into());
    row.timing(p99 < 50.0, || format!("bystander p99 {p99:.2} ms ≥ 50 ms"));
    let panics = server.panics();
    row.check(panics.len() == panics_before, || {
        format!("server panicked: {panics:?}")
    });
    row.check(server.exited().is_none(), || "the server exited".into());
}

/// How a connection ends when read: `close CODE`, `EOF`, `error ...`, or a timeout; and the
/// number of text frames read before.
async fn read_to_end(ws: &mut Ws, idle: Duration) -> (String, u64) {
    let mut frames = 0u64;
    loop {
        match tokio::time::timeout(idle, ws.next()).await {
            Err(_) => return (format!("still open after {idle:?} of silence"), frames),
            Ok(None) => return ("EOF".into(), frames),
            Ok(Some(Err(e))) => return (format!("error ({e})"), frames),
            Ok(Some(Ok(Message::Close(Some(c))))) => {
                return (format!("close {}", u16::from(c.code)), frames);
            }
            Ok(Some(Ok(Message::Close(None)))) => return ("close without code".into(), frames),
            Ok(Some(Ok(Message::Text(_) | Message::Binary(_)))) => frames += 1,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Reads a raw TCP socket until EOF or error; returns when and how many bytes were read.
async fn wait_closed(mut s: TcpStream, limit: Duration) -> (Option<Instant>, usize, Vec<u8>) {
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Err(_) => return (None, got.len(), got),
            Ok(Ok(0)) | Ok(Err(_)) => return (Some(Instant::now()), got.len(), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

const HANDSHAKE: &str = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

pub async fn run(ctx: &Ctx) -> Result<Vec<Row>, String> {
    let (half_open, slow_msgs, slow_size, slow_rate, hs_timeout) = if ctx.short {
        (100usize, 1_000u64, 40_000usize, 500.0, 2.0)
    } else {
        (1_000, 10_000, 4_000, 2_500.0, 10.0)
    };
    let redis = ctx.redis().await?;
    let limits = if ctx.short {
        format!("handshake_timeout = {hs_timeout}")
    } else {
        String::new() // the default, 10 s
    };
    let setup = ServerSetup::write(
        ctx,
        "hostile",
        redis.port,
        "",
        &limits,
        "[services.f]\nrequire_authentication = false\n",
    )?;
    let server = setup.start(ctx).await?;
    let target = Target::resolve(&setup.url()).await?;
    let mut by_ws = target.connect().await?;
    client::subscribe(&mut by_ws, "f.bystander", Duration::from_secs(10))
        .await
        .map_err(|e| e.1)?;
    let by = Arc::new(Bystander {
        samples: Mutex::new(Vec::new()),
        failures: AtomicU64::new(0),
        alive: AtomicBool::new(true),
        problem: Mutex::new(None),
    });
    let by_task = tokio::spawn(by.clone().run(by_ws));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut rows = Vec::new();
    let hs = Duration::from_secs_f64(hs_timeout);

    // 1. A handshake sent one byte a second.
    {
        progress("hostile: handshake at one byte a second");
        let from = Instant::now();
        let panics = server.panics().len();
        let mut row = Row::new(
            "slow client: WebSocket handshake sent one byte a second",
            format!("1 connection; limits.handshake_timeout = {hs_timeout} s"),
        );
        let s = TcpStream::connect(target.addr)
            .await
            .map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let (mut rd, mut wr) = s.into_split();
        let writer = tokio::spawn(async move {
            let mut sent = 0usize;
            for b in HANDSHAKE.as_bytes() {
                if wr.write_all(&[*b]).await.is_err() {
                    break;
                }
                sent += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            sent
        });
        let mut buf = [0u8; 1024];
        let mut answer = Vec::new();
        let closed = loop {
            match tokio::time::timeout_at(
                (t0 + hs + Duration::from_secs(5)).into(),
                rd.read(&mut buf),
            )
            .await
            {
                Err(_) => break None,
                Ok(Ok(0)) | Ok(Err(_)) => break Some(t0.elapsed()),
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            }
        };
        writer.abort();
        let sent = writer.await.unwrap_or(0);
        let first_line = String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        row.check(
            closed.is_some_and(|c| {
                c + Duration::from_millis(200) >= hs && c <= hs + Duration::from_secs(2)
            }),
            || {
                format!(
                    "expected the server to close the connection after {hs_timeout} s: {closed:?}"
                )
            },
        );
        row.outcome = format!(
            "closed by the server after the handshake timeout ({} bytes of the handshake sent{})",
            sent.max(closed.map_or(0, |c| c.as_secs() as usize)),
            if answer.is_empty() {
                ", no answer".to_string()
            } else {
                format!(", answer `{first_line}`")
            }
        );
        row.figure = format!(
            "closed {} ms after connect",
            closed.map_or("—".into(), |c| ms(c).to_string())
        );
        row.json = json!({"closed_ms": closed.map(ms), "answer": first_line, "handshake_timeout_s": hs_timeout});
        finish(&mut row, &by, &server, from, panics).await;
        rows.push(row);
    }

    // 2. Half-open connections: TCP connected, nothing sent.
    {
        progress(format!("hostile: {half_open} half-open connections"));
        let from = Instant::now();
        let panics = server.panics().len();
        let mut row = Row::new(
            "half-open connections (TCP connected, no handshake, never send)",
            format!("{half_open} connections at once; limits.handshake_timeout = {hs_timeout} s"),
        );
        let t0 = Instant::now();
        let mut waits = Vec::with_capacity(half_open);
        let mut connect_failed = 0;
        let mut slow_connects = 0u64;
        let mut slowest = Duration::ZERO;
        for _ in 0..half_open {
            let tc = Instant::now();
            match TcpStream::connect(target.addr).await {
                Ok(s) => waits.push(tokio::spawn(wait_closed(s, hs + Duration::from_secs(5)))),
                Err(_) => connect_failed += 1,
            }
            let took = tc.elapsed();
            slowest = slowest.max(took);
            if took > Duration::from_millis(200) {
                slow_connects += 1;
            }
        }
        let connected_in = t0.elapsed();
        // Meanwhile a new client must still get in.
        let t1 = Instant::now();
        let newcomer = async {
            let mut ws = target.connect().await?;
            client::subscribe(&mut ws, "f.newcomer", Duration::from_secs(10))
                .await
                .map_err(|e| e.1)?;
            client::close(ws).await;
            Ok::<_, String>(t1.elapsed())
        }
        .await;
        let mut closed_at = Vec::new();
        let mut open = 0;
        let mut answered = 0;
        for w in waits {
            match w.await {
                Ok((Some(at), n, _)) => {
                    closed_at.push(at - t0);
                    if n > 0 {
                        answered += 1;
                    }
                }
                _ => open += 1,
            }
        }
        closed_at.sort();
        let first = closed_at.first().copied();
        let last = closed_at.last().copied();
        row.check(connect_failed == 0, || {
            format!("{connect_failed} TCP connects failed")
        });
        row.check(open == 0, || {
            format!("{open} connections still open {} s after the timeout", 5)
        });
        row.check(
            first.is_some_and(|f| f + Duration::from_millis(200) >= hs),
            || format!("a half-open connection was closed before the timeout: {first:?}"),
        );
        row.check(newcomer.is_ok(), || {
            format!("a new client could not connect meanwhile: {newcomer:?}")
        });
        row.outcome = format!(
            "{} of {half_open} closed by the server after the handshake timeout ({answered} with an answer); a new client connected + subscribed meanwhile in {}",
            closed_at.len(),
            match &newcomer {
                Ok(d) => format!("{} ms", ms(*d)),
                Err(e) => format!("FAILED ({e})"),
            }
        );
        row.figure = format!(
            "opened one after the other in {} ms ({slow_connects} TCP connects took over 200 ms, the slowest {} ms); closed {}–{} ms after the first connect",
            ms(connected_in),
            ms(slowest),
            first.map_or("—".into(), |d| ms(d).to_string()),
            last.map_or("—".into(), |d| ms(d).to_string())
        );
        row.json = json!({
            "connections": half_open, "closed": closed_at.len(), "still_open": open,
            "first_closed_ms": first.map(ms), "last_closed_ms": last.map(ms),
            "opened_ms": ms(connected_in), "slow_connects": slow_connects, "slowest_connect_ms": ms(slowest),
            "newcomer_ms": newcomer.as_ref().ok().map(|d| ms(*d)),
        });
        finish(&mut row, &by, &server, from, panics).await;
        rows.push(row);
    }

    // 3. A client that never reads while messages are published to it.
    {
        progress(format!(
            "hostile: non-reading client, {slow_msgs} messages of {slow_size} bytes"
        ));
        let from = Instant::now();
        let panics = server.panics().len();
        let mut row = Row::new(
            "client that never reads",
            format!(
                "{slow_msgs} messages of {} kB published to it at {slow_rate:.0}/s ({:.0} MiB; limits.max_outbound_bytes 8 MiB)",
                slow_size / 1000,
                (slow_msgs as usize * slow_size) as f64 / 1048576.0
            ),
        );
        let m0 = scrape(setup.metrics_port).await.unwrap_or_default();
        let st0 = proc_stats(server.pid)?;
        let mut ws = target.connect().await?;
        client::subscribe(&mut ws, "f.slow", Duration::from_secs(10))
            .await
            .map_err(|e| e.1)?;
        let rc = redis::Client::open(redis.url()).map_err(|e| e.to_string())?;
        let mut conn = rc
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let pad = "x".repeat(slow_size);
        let t0 = Instant::now();
        let mut reached = 0u64;
        let mut publish_errors = 0u64;
        for i in 0..slow_msgs {
            let due = t0 + Duration::from_secs_f64(i as f64 / slow_rate);
            tokio::time::sleep_until(due.into()).await;
            let p =
                format!(r#"{{"subscription": "f.slow", "data": {{"seq": {i}, "pad": "{pad}"}}}}"#);
            match redis::cmd("PUBLISH")
                .arg("f.slow")
                .arg(p)
                .query_async::<i64>(&mut conn)
                .await
            {
                Ok(n) => reached += n.max(0) as u64,
                Err(_) => publish_errors += 1,
            }
        }
        let published_in = t0.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let m1 = scrape(setup.metrics_port).await.unwrap_or_default();
        let disconnects = metric(&m1, "socketshark_slow_consumer_disconnects_total")
            - metric(&m0, "socketshark_slow_consumer_disconnects_total");
        let slow = |m: &std::collections::BTreeMap<String, f64>| -> f64 {
            m.iter()
                .filter(|(k, _)| {
                    k.starts_with("socketshark_messages_dropped_total")
                        && k.contains("slow_consumer")
                })
                .map(|(_, v)| v)
                .sum()
        };
        let dropped = slow(&m1) - slow(&m0);
        let queued = metric(&m1, "socketshark_outbound_queue_bytes");
        let conns = metric(&m1, "socketshark_connection_count");
        let st1 = proc_stats(server.pid)?;
        // Does the server let go of the socket while the client still does not read?
        let hold = if ctx.short { 3.0 } else { 15.0 };
        let t_wait = Instant::now();
        let mut released = None;
        while t_wait.elapsed() < Duration::from_secs_f64(hold) {
            if proc_stats(server.pid).is_ok_and(|p| p.fds <= st0.fds) {
                released = Some(t_wait.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let st_hold = proc_stats(server.pid)?;
        // Now read what the socket holds, up to the end.
        let (end, frames) = read_to_end(&mut ws, Duration::from_secs(3)).await;
        drop(ws);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let st2 = proc_stats(server.pid)?;
        row.check(disconnects == 1.0, || {
            format!(
                "socketshark_slow_consumer_disconnects_total went up by {disconnects}, expected 1"
            )
        });
        row.check(publish_errors == 0, || {
            format!("{publish_errors} PUBLISH errors")
        });
        row.outcome = format!(
            "disconnected as a slow consumer (slow_consumer_disconnects_total +{disconnects}); reading afterwards it got {frames} messages then {end}{}",
            if end == "close 1008" {
                ""
            } else {
                " (the 1008 close frame did not arrive: issue #20)"
            }
        );
        row.outcome.push_str(&match released {
            Some(d) => format!("; the server closed its socket {} ms after the publishing ended + 2 s", ms(d)),
            None => format!(
                "; while it did not read, the server kept its socket open (fds {} vs {} before it connected) for the {hold} s watched after the last publish + 2 s, RSS {} KiB",
                st_hold.fds, st0.fds, st_hold.rss_kib
            ),
        });
        row.figure = format!(
            "{} of {slow_msgs} published while subscribed (PUBLISH receivers), in {} ms; messages dropped (slow_consumer) +{dropped}; 2 s after the last publish, before it read: server queue gauge {queued} bytes, connection gauge {conns} (bystander included), server RSS {} KiB and {} fds (before subscribing: {} KiB, {} fds; after it read and closed: {} KiB, {} fds)",
            reached,
            ms(published_in),
            st1.rss_kib,
            st1.fds,
            st0.rss_kib,
            st0.fds,
            st2.rss_kib,
            st2.fds,
        );
        row.json = json!({
            "messages": slow_msgs, "size": slow_size, "received_before_close": frames, "end": end,
            "slow_consumer_disconnects": disconnects, "dropped_slow_consumer": dropped,
            "publish_reached": reached, "queued_bytes_before_read": queued, "connections_before_read": conns,
            "socket_released_ms": released.map(ms), "watched_s": hold, "server_after_watch": st_hold.to_json(),
            "server_before": st0.to_json(), "server_before_read": st1.to_json(), "server_after_close": st2.to_json(),
        });
        finish(&mut row, &by, &server, from, panics).await;
        rows.push(row);
    }

    // 4. A frame of 1 MiB + 1 byte (and, as a control, one of exactly 1 MiB).
    {
        progress("hostile: frames of 1 MiB and 1 MiB + 1 byte");
        let from = Instant::now();
        let panics = server.panics().len();
        let mut row = Row::new(
            "message of 1 MiB + 1 byte",
            "one text frame of 1,048,577 bytes (control: a `ping` of exactly 1,048,576 bytes on another connection)".into(),
        );
        let ping_of = |size: usize| {
            let head = r#"{"event": "ping", "data": ""#;
            let tail = r#""}"#;
            format!("{head}{}{tail}", "y".repeat(size - head.len() - tail.len()))
        };
        let control = async {
            let mut ws = target.connect().await?;
            client::send_json(
                &mut ws,
                &serde_json::from_str::<Value>(&ping_of(1 << 20)).unwrap_or_default(),
            )
            .await?;
            let got =
                match tokio::time::timeout(Duration::from_secs(10), client::next_frame(&mut ws))
                    .await
                {
                    Ok(client::Frame::Other(v)) => {
                        v.get("event").cloned().unwrap_or_default().to_string()
                    }
                    Ok(client::Frame::Closed(why)) => why,
                    Ok(client::Frame::Delivery { .. }) => "delivery".into(),
                    Err(_) => "timeout".into(),
                };
            client::close(ws).await;
            Ok::<_, String>(got)
        }
        .await;
        let mut ws = target.connect().await?;
        let sent = ws.send(Message::text(ping_of((1 << 20) + 1))).await;
        let (end, frames) = read_to_end(&mut ws, Duration::from_secs(5)).await;
        row.check(control.as_deref() == Ok("\"pong\""), || {
            format!("1 MiB control: {control:?}")
        });
        row.check(end == "close 1009", || {
            format!("expected close 1009, got {end} (send: {sent:?})")
        });
        row.outcome = format!(
            "{end} after {frames} frames (1 MiB control: {})",
            match &control {
                Ok(v) if v == "\"pong\"" => "pong".to_string(),
                other => format!("{other:?}"),
            }
        );
        row.figure = format!("closed {} ms after sending", ms(from.elapsed()));
        row.json = json!({"end": end, "control": control.ok()});
        finish(&mut row, &by, &server, from, panics).await;
        rows.push(row);
    }

    // 5. Invalid UTF-8 in a text frame.
    {
        progress("hostile: invalid UTF-8 in a text frame");
        let from = Instant::now();
        let panics = server.panics().len();
        let mut row = Row::new(
            "invalid UTF-8 in a text frame",
            "one text frame `{\\xff\\xfe}`".into(),
        );
        let mut ws = target.connect().await?;
        let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
        let sent = ws.send(Message::Frame(frame)).await;
        let (end, frames) = read_to_end(&mut ws, Duration::from_secs(5)).await;
        row.check(end == "close 1007", || {
            format!("expected close 1007, got {end} (send: {sent:?})")
        });
        row.outcome = format!("{end} after {frames} frames");
        row.figure = format!("closed {} ms after sending", ms(from.elapsed()));
        row.json = json!({"end": end});
        finish(&mut row, &by, &server, from, panics).await;
        rows.push(row);
    }

    // 6. 10 000 nested arrays.
    {
        progress("hostile: 10,000 nested arrays");
        let from = Instant::now();
        let panics = server.panics().len();
        let mut row = Row::new(
            "10,000 nested arrays",
            "`[[[…]]]` 10,000 deep as a message, then `{\"event\": \"ping\", \"data\": [[[…]]]}` 10,000 deep, then a ping".into(),
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let mut ws = target.connect().await?;
        let mut replies = Vec::new();
        for text in [
            deep.clone(),
            format!(r#"{{"event": "ping", "data": {deep}}}"#),
        ] {
            let t = Instant::now();
            let r = async {
                ws.send(Message::text(text))
                    .await
                    .map_err(|e| e.to_string())?;
                match tokio::time::timeout(Duration::from_secs(10), client::next_frame(&mut ws))
                    .await
                {
                    Ok(client::Frame::Other(v)) => Ok(v),
                    Ok(client::Frame::Closed(why)) => Err(why),
                    Ok(client::Frame::Delivery { .. }) => Err("a delivery".into()),
                    Err(_) => Err("no reply within 10 s".into()),
                }
            }
            .await;
            replies.push((r, t.elapsed()));
        }
        let after = client::request(
            &mut ws,
            &json!({"event": "ping", "data": "after"}),
            "pong",
            None,
            Duration::from_secs(10),
        )
        .await;
        // `request` wants status ok; a pong has none, so look at the frame it returns as an error.
        let still_open = match &after {
            Ok(_) => true,
            Err((_, e)) => e.contains("\"pong\""),
        };
        client::close(ws).await;
        let expected = json!({"status": "error", "error": INVALID});
        for (r, _) in &replies {
            row.check(r.as_ref().ok() == Some(&expected), || {
                format!("expected {expected}, got {r:?}")
            });
        }
        row.check(still_open, || {
            format!("the connection did not answer a ping afterwards: {after:?}")
        });
        row.outcome = format!(
            "both answered `{{\"status\": \"error\", \"error\": \"{INVALID}\"}}`{}; connection still open (ping → pong)",
            if replies
                .iter()
                .all(|(r, _)| r.as_ref().ok() == Some(&expected))
            {
                ""
            } else {
                " (NOT all)"
            }
        );
        row.figure = format!(
            "replies in {} ms",
            replies
                .iter()
                .map(|(_, d)| ms(*d).to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        );
        row.json = json!({"replies": replies.iter().map(|(r, d)| json!({"reply": r.as_ref().ok(), "error": r.as_ref().err(), "ms": ms(*d)})).collect::<Vec<_>>()});
        finish(&mut row, &by, &server, from, panics).await;
        rows.push(row);
    }

    let failures = by.failures.load(Relaxed);
    by_task.abort();
    let code = server.stop(Duration::from_secs(30)).await;
    if let Some(last) = rows.last_mut() {
        last.check(code == Some(0), || {
            format!("server exit {code:?} on SIGTERM")
        });
        last.check(failures == 0, || {
            format!("{failures} bystander pings unanswered within 5 s")
        });
    }
    Ok(rows)
}
