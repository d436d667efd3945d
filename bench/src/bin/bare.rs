//! socketshark-bare: the bench's "physical-limit line" for the fan-out scenarios (issue 12).
//!
//! The simplest tokio WebSocket server that can serve `socketshark-bench fanout`: it accepts
//! WebSocket connections (tokio-tungstenite), answers a client's
//! `{"event": "subscribe", "subscription": S}` with `{"event":"subscribe","subscription":S,
//! "status":"ok"}` once Redis confirmed `SUBSCRIBE <prefix>S`, and forwards every message
//! published on that channel as `{"event":"message","subscription":S,"data":D}` (S and D taken
//! from the published `{"subscription": S, "data": D}`). No protocol beyond that: no
//! authentication, no callbacks, no filters, no limits, no pings, no unsubscribe (a closed
//! connection is only removed from its channels' lists; the Redis subscriptions stay).
//!
//! Structure: one task per connection reading commands, one writer task per connection fed by
//! an unbounded mpsc channel (one `send`, i.e. one write, per message), one shared Redis PUBSUB
//! connection (redis-rs) whose reader task looks up the channel's senders in a map behind a
//! std mutex (never held across an await). A published message is parsed once and its frame
//! serialised once; the subscribers share it (`Utf8Bytes` is reference-counted).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use redis::aio::PubSubSink;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Parser, Debug)]
#[command(name = "socketshark-bare", version, about)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 picks a free port (printed in the ready line on stderr).
    #[arg(long, default_value_t = 9000)]
    port: u16,
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis_url: String,
    /// Prepended to a subscription to make its Redis channel.
    #[arg(long, default_value = "")]
    channel_prefix: String,
}

type Tx = mpsc::UnboundedSender<Message>;

struct State {
    prefix: String,
    sink: PubSubSink,
    /// Redis channel -> (connection id, sender) of its subscribers.
    channels: Mutex<HashMap<String, Vec<(u64, Tx)>>>,
    next_id: AtomicU64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("socketshark-bare: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let client = redis::Client::open(args.redis_url.as_str()).map_err(|e| e.to_string())?;
    let pubsub = client
        .get_async_pubsub()
        .await
        .map_err(|e| format!("redis: {e}"))?;
    let (sink, mut stream) = pubsub.split();
    let state = Arc::new(State {
        prefix: args.channel_prefix,
        sink,
        channels: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
    });

    // The Redis reader: parse once, serialise once, hand the same frame to every subscriber.
    let st = state.clone();
    tokio::spawn(async move {
        while let Some(msg) = stream.next().await {
            let Some(frame) = frame_for(msg.get_channel_name(), msg.get_payload_bytes(), &st)
            else {
                continue;
            };
            let channels = st.channels.lock().unwrap();
            if let Some(subs) = channels.get(msg.get_channel_name()) {
                for (_, tx) in subs {
                    let _ = tx.send(frame.clone());
                }
            }
        }
        eprintln!("socketshark-bare: the Redis connection closed");
        std::process::exit(1);
    });

    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .await
        .map_err(|e| format!("bind {}:{}: {e}", args.host, args.port))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!(
        "{}",
        json!({"event": "ready", "host": local.ip().to_string(), "port": local.port()})
    );
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                tokio::spawn(connection(tcp, state.clone()));
            }
            Err(e) => eprintln!("socketshark-bare: accept: {e}"),
        }
    }
}

/// The text frame for a published payload `{"subscription": S, "data": D}` (S defaults to the
/// channel without the prefix).
fn frame_for(channel: &str, payload: &[u8], st: &State) -> Option<Message> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let sub = match v.get("subscription") {
        Some(Value::String(s)) => s.as_str(),
        _ => channel.strip_prefix(st.prefix.as_str()).unwrap_or(channel),
    };
    let data = v.get("data").unwrap_or(&Value::Null);
    let text = format!(
        r#"{{"event":"message","subscription":{},"data":{data}}}"#,
        Value::from(sub)
    );
    Some(Message::text(text))
}

async fn connection(tcp: TcpStream, st: Arc<State>) {
    tcp.set_nodelay(true).ok();
    // Small read buffers: the clients only send a subscribe command (10,000 connections).
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if ws_tx.send(m).await.is_err() {
                return;
            }
        }
        let _ = ws_tx.close().await;
    });

    let id = st.next_id.fetch_add(1, Relaxed);
    let mut subscribed: Vec<String> = Vec::new();
    while let Some(Ok(m)) = ws_rx.next().await {
        let text = match m {
            Message::Text(t) => t,
            Message::Close(_) => break,
            _ => continue, // pings are answered by tungstenite
        };
        let reply = command(text.as_str(), id, &tx, &st, &mut subscribed).await;
        if tx.send(Message::text(reply.to_string())).is_err() {
            break;
        }
    }

    // Gone: leave the channels' lists (the Redis subscriptions stay), let the writer finish.
    {
        let mut channels = st.channels.lock().unwrap();
        for ch in &subscribed {
            if let Some(subs) = channels.get_mut(ch) {
                subs.retain(|(i, _)| *i != id);
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Handles one client command and returns the reply.
async fn command(text: &str, id: u64, tx: &Tx, st: &State, subscribed: &mut Vec<String>) -> Value {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let event = v.get("event").and_then(Value::as_str);
    let sub = v.get("subscription").and_then(Value::as_str);
    let (Some("subscribe"), Some(sub)) = (event, sub) else {
        return json!({"status": "error", "error": "only subscribe is supported"});
    };
    let channel = format!("{}{sub}", st.prefix);
    if subscribed.contains(&channel) {
        return json!({"event": "subscribe", "subscription": sub, "status": "error",
                      "error": "Already subscribed."});
    }
    let first = {
        let mut channels = st.channels.lock().unwrap();
        let subs = channels.entry(channel.clone()).or_default();
        subs.push((id, tx.clone()));
        subs.len() == 1
    };
    subscribed.push(channel.clone());
    // The first subscriber of a channel subscribes in Redis and answers once Redis confirmed
    // (later ones answer at once: their channel is already subscribed or being subscribed).
    if first {
        let mut sink = st.sink.clone();
        if let Err(e) = sink.subscribe(&channel).await {
            return json!({"event": "subscribe", "subscription": sub, "status": "error",
                          "error": format!("redis: {e}")});
        }
    }
    json!({"event": "subscribe", "subscription": sub, "status": "ok"})
}
