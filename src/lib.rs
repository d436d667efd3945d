//! socketshark: a WebSocket message router, wire-compatible with SocketShark 0.5.
//!
//! Module map (see ARCHITECTURE.md for the flow of a subscribe, a client message and a
//! published message through them):
//! - [`config`]: the TOML schema, defaults and validation.
//! - [`compat`]: what exists only for byte-compatibility with the original: [`compat::pyjson`]
//!   (JSON with Python semantics), [`compat::isotime`] (Python `datetime` formatting),
//!   [`compat::structlog`] (the JSON log line) and [`compat::prometheus`] (the
//!   `prometheus_client` text exposition).
//! - [`protocol`]: client commands and replies: pure, no IO.
//! - [`publish`]: published messages: decoding and client frames.
//! - [`delivery`]: the per-subscription order filter and throttle: pure logic.
//! - [`service`]: HTTP callbacks to services (timeouts, retries, 429).
//! - [`broker`]: the broker trait; Redis PUBSUB and the embedded (memory) broker.
//! - [`demo`]: the demo page at `/` of the WebSocket port (`ws.demo`).
//! - [`feed`]: a broker connection's receive loop, liveness pings, and what its loss does.
//! - [`history`]: what follows a subscribe to a channel with history (recovery): pure.
//! - [`jwt`]: JWT verification for `auth` with `method: jwt` (keys, JWKS, claims).
//! - [`presence`]: who is subscribed where (member ids, info, join/leave events): pure.
//! - [`hub`]: channel -> local sessions; fan-out of published messages.
//! - [`session`]: one connection's state and command processing.
//! - [`api`]: the HTTP publish API (`POST /publish`).
//! - [`app`]: the process-wide context shared by sessions.
//! - [`reload`]: hot reload of the configuration (SIGHUP, `POST /admin/reload`).
//! - [`status`]: the status page and its JSON (`GET /status`, `/status.json`).
//! - [`tls`]: the `wss://` listener's certificate.
//! - [`server`]: accept, WebSocket handshake, per-connection IO, pings, TLS, shutdown.
//! - [`wire`]: the frames the server writes, batched into vectored writes.
//! - [`metrics`]: Prometheus and log metrics.
//! - [`logging`]: JSON/text log lines.
//! - [`redact`]: URL credentials scrubbed from logs and errors.

pub mod api;
pub mod app;
pub mod broker;
pub mod compat;
pub mod config;
pub mod connection;
pub mod delivery;
pub mod demo;
pub mod feed;
pub mod history;
pub mod hub;
pub mod jwt;
pub mod logging;
pub mod metrics;
pub mod presence;
pub mod protocol;
pub mod publish;
pub mod redact;
pub mod reload;
pub mod server;
pub mod service;
pub mod session;
pub mod status;
pub mod timers;
pub mod tls;
pub mod wire;
