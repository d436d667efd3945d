//! `wirebytes`: one client, one subscription, `--messages` realistic records (CRM-like JSON
//! objects from a fixed seed) published through Redis at a modest rate; bytes on the wire per
//! delivered message, with (`--deflate`) or without the browser's permessage-deflate offer.
//! Both modes use the bench's own client (deflate_ws.rs), which counts frame headers + payloads
//! as read from the socket.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::client::{self, Errors, Kind, Target};
use crate::deflate_ws::{DeflateWs, Negotiation};

#[derive(clap::Args, Debug, Clone)]
pub struct WirebytesArgs {
    #[arg(long, default_value = "ws://127.0.0.1:9000/")]
    pub url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    pub redis: String,
    /// Records published (one message each).
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Published messages per second (modest, so that nothing is batched or coalesced).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seed of the records (the same seed gives the same records, so runs compare).
    #[arg(long, default_value_t = 19)]
    pub seed: u64,
    /// Offer permessage-deflate like a browser (else no extension is offered).
    #[arg(long)]
    pub deflate: bool,
    /// The subscription is `<service>.w` (a service without callbacks or authentication).
    #[arg(long, default_value = "bench")]
    pub service: String,
    #[arg(long, default_value = "")]
    pub channel_prefix: String,
    /// Seconds to wait for the last deliveries after publishing.
    #[arg(long, default_value_t = 5.0)]
    pub drain_max: f64,
}

const VOCABULARY: [&str; 16] = [
    "Northwind",
    "Harbor",
    "Quantum",
    "Summit",
    "Ridge",
    "Analytics",
    "Logistics",
    "Partners",
    "Holdings",
    "Cedar",
    "Atlas",
    "Systems",
    "Beacon",
    "Global",
    "Dynamics",
    "Ventures",
];
const TYPES: [&str; 3] = ["lead", "contact", "opportunity"];
const STATUSES: [&str; 5] = [
    "Potential",
    "Active Opportunity",
    "Qualified",
    "Bad Fit",
    "Customer",
];
const ORGANIZATION_ID: &str = "orga_4oLq6wWqnFJ2kSLtZE8DXb1nvTCGpUgRImTHsf3ceM7";

/// `n` CRM-like records (about 275 bytes of JSON each, in the spacing Python's `json.dumps`
/// uses), from `seed`: a random 64-bit hex `id`, a `type` out of three, a fixed
/// `organization_id`, a `user_id` out of 50, a `status` out of five, a `display_name` of three
/// words from a vocabulary of 16, an integer `value` and an increasing ISO `date_updated` with
/// microseconds. Our server's message carrying one is about 420 bytes, the original's about 330.
pub fn records(seed: u64, n: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    // Microseconds since 2026-12-06T00:00:00Z, from 08:00, growing by up to 2 s per record.
    let mut t: u64 = 8 * 3600 * 1_000_000;
    (0..n)
        .map(|_| {
            t += rng.random_range(0..2_000_000);
            let (secs, micros) = (t / 1_000_000, t % 1_000_000);
            let id: u64 = rng.random();
            let kind = TYPES[rng.random_range(0..TYPES.len())];
            let user = rng.random_range(0..50);
            let status = STATUSES[rng.random_range(0..STATUSES.len())];
            let name: Vec<&str> = (0..3)
                .map(|_| VOCABULARY[rng.random_range(0..VOCABULARY.len())])
                .collect();
            let value: u32 = rng.random_range(100..1_000_000);
            format!(
                concat!(
                    r#"{{"id": "{id:016x}", "type": "{kind}", "organization_id": "{org}", "#,
                    r#""user_id": "user_{user:02}", "status": "{status}", "#,
                    r#""display_name": "{name}", "value": {value}, "#,
                    r#""date_updated": "2026-12-06T{h:02}:{m:02}:{s:02}.{micros:06}+00:00"}}"#
                ),
                id = id,
                kind = kind,
                org = ORGANIZATION_ID,
                user = user,
                status = status,
                name = name.join(" "),
                value = value,
                h = secs / 3600,
                m = secs / 60 % 60,
                s = secs % 60,
                micros = micros,
            )
        })
        .collect()
}

fn mean(sum: u64, n: u64) -> Value {
    if n == 0 {
        Value::Null
    } else {
        (((sum as f64 / n as f64) * 10.0).round() / 10.0).into()
    }
}

pub async fn run(args: WirebytesArgs) -> Result<(Value, bool), String> {
    let target = Target::resolve(&args.url).await?;
    let redis_client = redis::Client::open(args.redis.as_str()).map_err(|e| e.to_string())?;
    let mut conn = redis_client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("redis {}: {e}", args.redis))?;
    let records = records(args.seed, args.messages);
    let data_bytes: u64 = records.iter().map(|r| r.len() as u64).sum();
    let name = format!("{}.w", args.service);
    let errors = Errors::default();
    let negotiation = Negotiation::default();

    let mut ws = DeflateWs::connect(target.addr, &target.url, args.deflate).await?;
    negotiation.record(&ws);
    client::subscribe(&mut ws, &name, Duration::from_secs(60))
        .await
        .map_err(|(_, e)| format!("subscribe {name}: {e}"))?;

    let done = AtomicBool::new(false);
    let publish = async {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(1.0)));
        let mut published = 0u64;
        for record in &records {
            tick.tick().await;
            let payload = format!(r#"{{"subscription": "{name}", "data": {record}}}"#);
            let channel = format!("{}{name}", args.channel_prefix);
            match redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut conn)
                .await
            {
                Ok(n) if n >= 1 => published += 1,
                Ok(_) => errors.add(Kind::Publish, || "PUBLISH reached no subscriber".into()),
                Err(e) => errors.add(Kind::Publish, || format!("PUBLISH failed: {e}")),
            }
        }
        done.store(true, Relaxed);
        (published, start.elapsed())
    };
    #[derive(Default)]
    struct Seen {
        received: u64,
        wire: u64,
        message: u64,
        compressed: u64,
        wire_first: Option<u64>,
        wire_min: Option<u64>,
        wire_max: u64,
    }
    let receive = async {
        let mut seen = Seen::default();
        let mut drain_from: Option<Instant> = None;
        while seen.received < records.len() as u64 {
            if done.load(Relaxed) {
                let since = *drain_from.get_or_insert_with(Instant::now);
                if since.elapsed().as_secs_f64() > args.drain_max {
                    break;
                }
            }
            let (text, payload) =
                match tokio::time::timeout(Duration::from_millis(200), ws.next_message()).await {
                    Err(_) => continue,
                    Ok(Err(e)) => {
                        errors.add(Kind::Disconnect, || e);
                        break;
                    }
                    Ok(Ok(m)) => m,
                };
            let stats = ws.last;
            let v: Value = match std::str::from_utf8(&payload)
                .ok()
                .filter(|_| text)
                .and_then(|t| serde_json::from_str(t).ok())
            {
                Some(v) => v,
                None => {
                    errors.add(Kind::Unexpected, || {
                        format!(
                            "not a JSON text message: {}",
                            String::from_utf8_lossy(&payload)
                        )
                    });
                    continue;
                }
            };
            let i = seen.received as usize;
            let expected: Value = serde_json::from_str(&records[i]).unwrap_or(Value::Null);
            if v.get("event").and_then(Value::as_str) != Some("message")
                || v.get("subscription").and_then(Value::as_str) != Some(name.as_str())
                || v.get("data") != Some(&expected)
            {
                errors.add(Kind::Unexpected, || {
                    format!("message {i} is not record {i}: {v}")
                });
            }
            seen.received += 1;
            seen.wire += stats.wire_bytes;
            seen.message += stats.payload_bytes;
            seen.compressed += u64::from(stats.compressed);
            seen.wire_first.get_or_insert(stats.wire_bytes);
            seen.wire_min = Some(
                seen.wire_min
                    .map_or(stats.wire_bytes, |m| m.min(stats.wire_bytes)),
            );
            seen.wire_max = seen.wire_max.max(stats.wire_bytes);
        }
        seen
    };
    let ((published, elapsed), seen) = tokio::join!(publish, receive);
    ws.close().await;

    let lost = published.saturating_sub(seen.received);
    let ok = errors.total() == 0 && lost == 0 && published == args.messages;
    let ratio = if seen.wire > 0 {
        ((seen.message as f64 / seen.wire as f64) * 100.0).round() / 100.0
    } else {
        0.0
    };
    let out = json!({
        "scenario": "wirebytes",
        "url": args.url,
        "client": "deflate_ws",
        "offered_deflate": args.deflate,
        "negotiated": negotiation.any_negotiated(),
        "deflate": negotiation.to_json(),
        "seed": args.seed,
        "messages": args.messages,
        "rate": args.rate,
        "published": published,
        "publish_s": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "received": seen.received,
        "lost": lost,
        "compressed_messages": seen.compressed,
        "wire_bytes_per_message": mean(seen.wire, seen.received),
        "message_bytes_per_message": mean(seen.message, seen.received),
        "data_bytes_per_record": mean(data_bytes, records.len() as u64),
        "compression_ratio": ratio,
        "wire_bytes_first": seen.wire_first,
        "wire_bytes_min": seen.wire_min,
        "wire_bytes_max": seen.wire_max,
        "wire_bytes_total": seen.wire,
        "ok": ok,
        "errors": errors.to_json(),
    });
    Ok((out, ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_fixed_and_json() {
        let a = records(19, 50);
        assert_eq!(a, records(19, 50));
        assert_ne!(a, records(20, 50));
        for r in &a {
            let v: Value = serde_json::from_str(r).unwrap();
            assert_eq!(v["id"].as_str().unwrap().len(), 16);
            assert_eq!(v["organization_id"], ORGANIZATION_ID);
        }
        let mean = a.iter().map(String::len).sum::<usize>() / a.len();
        assert!((250..=300).contains(&mean), "{mean}");
    }
}
