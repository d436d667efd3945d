//! The status page (issue 15): `GET /status.json` and `GET /status` (a page that reads it every
//! two seconds) on the API port, behind `api.api_key` when one is set. Read-only.
//!
//! `status.json`: `{"version", "uptime_s", "ready", "connections", "sessions", "services":
//! {NAME: {"channels", "subscriptions"}}, "messages": {"in_per_s", "out_per_s", "received",
//! "delivered"}, "brokers": {LABEL: {"connected", "outages"}}, "dropped": {REASON: n},
//! "callbacks": [{"service", "callback", "attempts", "mean_s", "p99_le_s"}]}`.

use serde_json::{Value, json};

use crate::app::App;

/// The page at `/status`.
pub const PAGE: &str = include_str!("status.html");

/// The JSON the page shows.
pub fn status(app: &App, started: std::time::Instant) -> Value {
    let rates = *app.rates.lock().unwrap();
    let services: serde_json::Map<String, Value> = app
        .hub
        .per_service()
        .into_iter()
        .map(|(name, (channels, subs))| {
            (name, json!({"channels": channels, "subscriptions": subs}))
        })
        .collect();
    let m = app.metrics.status();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": started.elapsed().as_secs(),
        "ready": app.metrics.accepts_clients(),
        "connections": app.connections(),
        "sessions": app.session_count(),
        "services": services,
        "messages": {
            "in_per_s": rates.in_per_s.round(),
            "out_per_s": rates.out_per_s.round(),
            "received": app.hub.received(),
            "delivered": app.metrics.delivered(),
        },
        "brokers": m["brokers"],
        "dropped": m["dropped"],
        "callbacks": m["callbacks"],
    })
}
