//! Configuration: the TOML schema, its defaults and its validation.
//!
//! Every key of SPEC.md §1 (R-CFG-3/4) is accepted. Unknown keys are rejected with an error that
//! names the key, so a typo never silently falls back to a default. Durations are seconds,
//! integer or float. Errors are one line: `config error: <file>: <key>: <what is wrong>`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use url::Url;

/// A configuration error: one human-readable line naming the offending key.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A duration in seconds: an integer or a float, finite and not negative.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Secs(pub f64);

impl Secs {
    pub fn duration(self) -> Duration {
        // Values are validated finite and >= 0 at load time; cap absurd ones at ~31 years.
        Duration::try_from_secs_f64(self.0.min(1e9)).unwrap_or(Duration::ZERO)
    }
    pub fn is_zero(self) -> bool {
        self.0 == 0.0
    }
}

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Secs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of seconds (integer or float, >= 0)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secs, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secs, E> {
                self.visit_f64(v as f64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Secs, E> {
                if v.is_finite() && v >= 0.0 {
                    Ok(Secs(v))
                } else {
                    Err(E::custom(format!(
                        "expected a number of seconds >= 0, got {v}"
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A TCP port: an integer, or (as the reference's default `"9000"`) a string of digits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number (0-65535)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                u16::try_from(v)
                    .map(Port)
                    .map_err(|_| E::custom(format!("expected a port number (0-65535), got {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                self.visit_i64(v.min(i64::MAX as u64) as i64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                v.trim()
                    .parse::<u16>()
                    .map(Port)
                    .map_err(|_| E::custom(format!("expected a port number (0-65535), got {v:?}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A callback URL. Credentials in the URL (`user:password@`) are taken out of the request target
/// and sent as HTTP Basic authentication (R-HTTP-2); `display` is the URL with the password
/// scrubbed, the only form that may appear in logs (R-LOG-6).
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackUrl {
    pub url: Url,
    pub basic_auth: Option<(String, Option<String>)>,
    pub display: String,
}

impl CallbackUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut url = Url::parse(raw)
            .map_err(|e| format!("invalid URL {:?}: {e}", crate::redact::scrub_url(raw)))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!(
                "invalid URL {:?}: the scheme must be http or https",
                crate::redact::scrub_url(raw)
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!(
                "invalid URL {:?}: no host",
                crate::redact::scrub_url(raw)
            ));
        }
        let user = percent_decode(url.username());
        let pass = url.password().map(percent_decode);
        let basic_auth = if user.is_empty() && pass.is_none() {
            None
        } else {
            Some((user, pass))
        };
        let display = crate::redact::scrub_url(raw);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(CallbackUrl {
            url,
            basic_auth,
            display,
        })
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl<'de> Deserialize<'de> for CallbackUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CallbackUrl::parse(&s).map_err(de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LogLevel::parse(&s).ok_or_else(|| {
            de::Error::custom(format!(
                "unknown log level {s:?} (expected TRACE, DEBUG, INFO, WARN or ERROR)"
            ))
        })
    }
}

impl LogLevel {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "ERROR" | "CRITICAL" => LogLevel::Error,
            "WARN" | "WARNING" => LogLevel::Warn,
            "INFO" => LogLevel::Info,
            "DEBUG" => LogLevel::Debug,
            "TRACE" => LogLevel::Trace,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON lines when stderr is not a terminal, readable text when it is.
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PingConfig {
    pub interval: Secs,
    pub timeout: Secs,
}

impl Default for PingConfig {
    fn default() -> Self {
        PingConfig {
            interval: Secs(15.0),
            timeout: Secs(15.0),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SslConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Default `ws.write_coalesce`, seconds.
pub const DEFAULT_WRITE_COALESCE: f64 = 0.005;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WsConfig {
    pub host: String,
    pub port: Port,
    pub ping: PingConfig,
    pub ssl: Option<SslConfig>,
    /// While pushes keep coming, a connection's socket is written at most once per this many
    /// seconds (the frames queued meanwhile go out in one write); the first push after a pause,
    /// replies, pings and closes are written at once. `0` writes every batch at once.
    pub write_coalesce: Secs,
    /// permessage-deflate (RFC 7692), issue 19.
    pub compression: CompressionConfig,
    /// Serve the demo page at `/` (and the JS client at `/socketshark.js`) instead of answering
    /// plain HTTP requests `426` (issue 15). On in the no-config quick start only.
    pub demo: bool,
}

/// `[ws.compression]`: permessage-deflate for clients that offer it (every browser does).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// Accept the extension when a client offers it (the original does).
    pub enabled: bool,
    /// Published messages shorter than this (bytes of JSON) are sent uncompressed.
    pub min_size: usize,
    /// Deflate level, 0-9 (6: zlib's default; 1 is several times faster and sends 15-20 % more
    /// bytes on small JSON messages; the cost is per channel, not per subscriber).
    pub level: u32,
    /// The server's LZ77 window, 9-15 (`server_max_window_bits`; the original answers 12).
    pub window_bits: u8,
    /// Compress each channel's messages as one stream shared by its subscribers (context
    /// takeover: each message may refer to the ones before it). `false` compresses every
    /// message on its own and answers `server_no_context_takeover`.
    pub context_takeover: bool,
    /// At most this many channel streams hold a compressor (about 270 KB each with a 15-bit
    /// window, 155 KB with 12) at a time; a
    /// channel beyond it sends its messages uncompressed until one is free.
    pub max_streams: usize,
    /// A channel stream without a message for this many seconds gives its compressor back.
    pub stream_idle: Secs,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            enabled: true,
            min_size: 64,
            level: 6,
            window_bits: 15,
            context_takeover: true,
            max_streams: 512,
            stream_idle: Secs(5.0),
        }
    }
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            host: "127.0.0.1".into(),
            port: Port(9000),
            ping: PingConfig::default(),
            ssl: None,
            write_coalesce: Secs(DEFAULT_WRITE_COALESCE),
            compression: CompressionConfig::default(),
            demo: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: LogLevel,
    pub format: LogFormat,
    pub logger_name: String,
    pub trace_logger_prefix: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: LogLevel::Info,
            format: LogFormat::Auto,
            logger_name: "socketshark".into(),
            trace_logger_prefix: "trace".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    #[serde(default)]
    pub host: String,
    pub port: Port,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogMetricsConfig {}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub prometheus: Option<PrometheusConfig>,
    pub log: Option<LogMetricsConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub ssl_cafile: Option<PathBuf>,
    pub timeout: Secs,
    pub tries: u32,
    pub wait: Secs,
    pub rate_limit_reset_header_names: Vec<String>,
    /// Deprecated single name, used only when the list is empty (R-HTTP-7).
    pub rate_limit_reset_header_name: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            ssl_cafile: None,
            timeout: Secs(15.0),
            tries: 3,
            wait: Secs(3.0),
            rate_limit_reset_header_names: Vec::new(),
            rate_limit_reset_header_name: None,
        }
    }
}

impl HttpConfig {
    /// The headers consulted on a 429 answer, in order (R-HTTP-7).
    pub fn reset_header_names(&self) -> Vec<String> {
        if !self.rate_limit_reset_header_names.is_empty() {
            self.rate_limit_reset_header_names.clone()
        } else {
            vec![
                self.rate_limit_reset_header_name
                    .clone()
                    .unwrap_or_else(|| "X-Rate-Limit-Reset".into()),
            ]
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    pub host: String,
    pub port: Port,
    pub channel_prefix: String,
    pub ping_interval: Secs,
    pub ping_timeout: Secs,
    pub db: i64,
    /// What a lost or frozen connection does (issue 20).
    pub on_loss: OnLoss,
    /// Redis Cluster seed nodes (`"host:port"`, issue 16). When set, `host`/`port` are not used:
    /// channels are sharded (SSUBSCRIBE / SPUBLISH, Redis >= 7) across the cluster.
    pub cluster: Vec<String>,
}

/// What the server does when a broker connection is lost or a PING goes unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLoss {
    /// Close every client and exit (the original's behaviour, R-RED-4/5).
    #[default]
    Shutdown,
    /// Keep the sessions, reconnect with backoff and subscribe every held channel again.
    Reconnect,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            host: "localhost".into(),
            port: Port(6379),
            channel_prefix: String::new(),
            ping_interval: Secs(10.0),
            ping_timeout: Secs(5.0),
            db: 0,
            on_loss: OnLoss::Shutdown,
            cluster: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketConfig {
    pub validation_url: CallbackUrl,
    pub auth_fields: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthenticationConfig {
    pub ticket: Option<TicketConfig>,
    /// Not in the original (issue 14): `{"event": "auth", "method": "jwt", "token": ...}`.
    pub jwt: Option<JwtConfig>,
}

/// `[authentication.jwt]`: how tokens are verified and what they grant (see `crate::jwt`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// HS256/384/512 shared secret.
    pub secret: Option<String>,
    /// PEM public key (RSA, EC P-256/P-384 or Ed25519), inline...
    pub public_key: Option<String>,
    /// ... or in a file.
    pub public_key_file: Option<PathBuf>,
    /// A JWKS document's URL (keys chosen by the token's `kid`).
    pub jwks_url: Option<String>,
    /// Allowed algorithms (`"HS256"`, `"RS256"`, `"ES256"`, `"EdDSA"`, ...); empty = every one
    /// the key suits.
    pub algorithms: Vec<String>,
    /// Auth fields set from the token's claims; every one's claim must be present.
    pub auth_fields: Vec<String>,
    /// Auth field -> claim name, for fields whose claim has another name (`session_id =
    /// "sub"`). Default: the field's own name.
    pub claims: BTreeMap<String, String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    pub leeway: Secs,
}

impl JwtConfig {
    /// The PEM public key, read from `public_key_file` when that is how it is given.
    pub fn public_key_pem(&self) -> Result<Option<String>, String> {
        if let Some(k) = &self.public_key {
            return Ok(Some(k.clone()));
        }
        match &self.public_key_file {
            None => Ok(None),
            Some(path) => std::fs::read_to_string(path).map(Some).map_err(|e| {
                format!(
                    "authentication.jwt.public_key_file: cannot read {}: {e}",
                    path.display()
                )
            }),
        }
    }
}

/// One `[services.NAME]` table (R-CFG-3, service keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    #[serde(skip)]
    pub name: String,
    pub require_authentication: bool,
    pub authorizer: Option<CallbackUrl>,
    pub authorizer_fields: Vec<String>,
    pub authorization_renewal_period: Option<Secs>,
    pub authorization_renewal_jitter: Secs,
    pub extra_fields: Vec<String>,
    pub filter_fields: Vec<String>,
    pub before_subscribe: Option<CallbackUrl>,
    pub on_subscribe: Option<CallbackUrl>,
    pub on_message: Option<CallbackUrl>,
    pub before_unsubscribe: Option<CallbackUrl>,
    pub on_unsubscribe: Option<CallbackUrl>,
    pub on_authorization_change: Option<CallbackUrl>,
    pub on_heartbeat: Option<CallbackUrl>,
    pub heartbeat_period: Option<Secs>,
    /// Messages kept per channel for recovery (issue 14); 0 = no history.
    pub history_size: usize,
    /// Seconds a channel's history is kept after its last message.
    pub history_ttl: Secs,
    /// Keep who is subscribed to each channel (issue 14).
    pub presence: bool,
    /// With `presence`: subscribers get `join` / `leave` frames.
    pub join_leave: bool,
    /// Seconds a node's presence entries live without a refresh (refreshed every third).
    pub presence_ttl: Secs,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            name: String::new(),
            require_authentication: true,
            authorizer: None,
            authorizer_fields: Vec::new(),
            authorization_renewal_period: None,
            authorization_renewal_jitter: Secs(0.0),
            extra_fields: Vec::new(),
            filter_fields: Vec::new(),
            before_subscribe: None,
            on_subscribe: None,
            on_message: None,
            before_unsubscribe: None,
            on_unsubscribe: None,
            on_authorization_change: None,
            on_heartbeat: None,
            heartbeat_period: None,
            history_size: 0,
            history_ttl: Secs(300.0),
            presence: false,
            join_leave: false,
            presence_ttl: Secs(30.0),
        }
    }
}

impl ServiceConfig {
    /// `(size, ttl)` when the service's channels keep history.
    pub fn history(&self) -> Option<(usize, Duration)> {
        (self.history_size > 0).then(|| (self.history_size, self.history_ttl.duration()))
    }

    /// Heartbeats run only if both the period and the URL are set (R-HB-1).
    pub fn heartbeat(&self) -> Option<(Duration, &CallbackUrl)> {
        match (self.heartbeat_period, &self.on_heartbeat) {
            (Some(p), Some(url)) => Some((p.duration(), url)),
            _ => None,
        }
    }
}

/// The largest `history_size`: a recovery reads at most this many messages in one go.
pub const MAX_HISTORY_SIZE: usize = 10_000;

/// Where published messages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// Redis PUBSUB (`[redis]`, `[redis_alt]`): the reference's broker, and the default.
    #[default]
    Redis,
    /// In-process: no external server; messages come from the HTTP publish API. One node only.
    Memory,
    /// Core NATS subjects (`[nats]`, issue 16).
    Nats,
}

/// `[nats]`: the NATS servers (`broker = "nats"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URLs (`nats://host:port`); the client picks one and fails over to the others.
    pub servers: Vec<String>,
    /// Prepended to the subject of every subscription name.
    pub subject_prefix: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            subject_prefix: String::new(),
        }
    }
}

/// The HTTP publish API (`POST /publish`); off unless `[api]` is present.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub host: String,
    pub port: Port,
    /// Required unless `host` is a loopback address. Clients send it as
    /// `Authorization: Bearer <key>` (or `X-Api-Key: <key>`).
    pub api_key: Option<String>,
    /// Largest accepted request body, in bytes.
    pub max_body_size: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            host: "127.0.0.1".into(),
            port: Port(9001),
            api_key: None,
            max_body_size: 1 << 20,
        }
    }
}

impl ApiConfig {
    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// What a client event over `limits.max_events_per_second` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventRatePolicy {
    /// The session is slowed: its next event waits until the budget has a token again, and its
    /// socket is not read meanwhile (TCP back-pressure). Nothing is lost, replies stay in order,
    /// and the client never sees an error the original would not give.
    Delay,
    /// The event is answered `Rate limit exceeded.` without being processed.
    Reject,
}

/// Per-connection and per-process limits (not in the reference; each default is generous enough
/// that a well-behaved client never meets it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest client message in bytes; a larger one closes the connection with code 1009
    /// (R-WS-4).
    pub max_message_size: usize,
    /// Subscriptions per session; more are refused with `Too many subscriptions.`. 0 = no limit.
    pub max_subscriptions: usize,
    /// Client events per second per session, sustained; what happens to events over the rate is
    /// `event_rate_policy`. 0 = no limit.
    pub max_events_per_second: f64,
    /// Events a session may send in a burst above the sustained rate.
    pub max_event_burst: f64,
    /// What an event over the rate gets: `delay` (the default) waits for the budget to refill,
    /// and the socket is not read meanwhile; `reject` answers `Rate limit exceeded.`.
    pub event_rate_policy: EventRatePolicy,
    /// Client events queued behind the one being processed; beyond that the connection is not
    /// read until the queue drains (TCP back-pressure).
    pub max_pending_events: usize,
    /// Service callbacks in flight per session (commands, renewals and heartbeats together).
    pub max_concurrent_callbacks: usize,
    /// Bytes of frames queued for a session; a client that does not read and lets its queue
    /// grow beyond this is disconnected with close code 1008 (slow consumer).
    pub max_outbound_bytes: usize,
    /// Connections per process (including those in their handshake); beyond, new connections
    /// are answered `503 Service Unavailable`. 0 = no limit.
    pub max_connections: usize,
    /// Seconds a new connection has to complete its TLS and WebSocket handshake.
    pub handshake_timeout: Secs,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_size: 1 << 20,
            max_subscriptions: 1000,
            max_events_per_second: 100.0,
            max_event_burst: 200.0,
            event_rate_policy: EventRatePolicy::Delay,
            max_pending_events: 64,
            max_concurrent_callbacks: 8,
            max_outbound_bytes: 8 << 20,
            max_connections: 100_000,
            handshake_timeout: Secs(10.0),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub broker: BrokerKind,
    pub api: Option<ApiConfig>,
    pub ws: WsConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub http: HttpConfig,
    pub redis: RedisConfig,
    pub redis_alt: Option<RedisConfig>,
    pub nats: NatsConfig,
    pub authentication: AuthenticationConfig,
    pub limits: LimitsConfig,
    #[serde(deserialize_with = "de_services")]
    pub services: BTreeMap<String, Arc<ServiceConfig>>,
    /// Set when the server runs without a configuration file ([`Config::embedded`]).
    #[serde(skip)]
    pub embedded: bool,
}

fn de_services<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Arc<ServiceConfig>>, D::Error> {
    let raw = BTreeMap::<String, ServiceConfig>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(name, mut svc)| {
            svc.name = name.clone();
            (name, Arc::new(svc))
        })
        .collect())
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "config error: {}: cannot read the file: {e}",
                path.display()
            ))
        })?;
        Config::parse(&text)
            .map_err(|e| ConfigError(format!("config error: {}: {e}", path.display())))
    }

    /// The configuration used when no file is given: the embedded broker, the WebSocket
    /// listener on 127.0.0.1:9000, the publish API on 127.0.0.1:9001, and one service, `demo`,
    /// open to anonymous clients and without callbacks.
    pub fn embedded() -> Config {
        let mut cfg = Config {
            broker: BrokerKind::Memory,
            api: Some(ApiConfig::default()),
            embedded: true,
            ..Config::default()
        };
        cfg.ws.demo = true;
        let demo = ServiceConfig {
            name: "demo".into(),
            require_authentication: false,
            ..ServiceConfig::default()
        };
        cfg.services.insert("demo".into(), Arc::new(demo));
        cfg
    }

    /// Settings that are valid but probably not what the user meant (logged at startup).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.broker == BrokerKind::Memory {
            if self.api.is_none() {
                w.push(
                    "broker = \"memory\" without [api]: nothing can publish to this server \
                     (add an [api] table for POST /publish)"
                        .to_owned(),
                );
            }
            if self.redis_alt.is_some() {
                w.push("[redis_alt] is ignored with broker = \"memory\"".to_owned());
            }
        }
        if let Some(alt) = &self.redis_alt
            && self.broker == BrokerKind::Redis
            && alt.on_loss != self.redis.on_loss
        {
            w.push(format!(
                "[redis] on_loss = {:?} but [redis_alt] on_loss = {:?}: each connection follows \
                 its own setting",
                self.redis.on_loss, alt.on_loss
            ));
        }
        w
    }

    /// Parses and validates configuration text. The error names the key at fault.
    pub fn parse(text: &str) -> Result<Config, String> {
        let de = toml::Deserializer::parse(text).map_err(|e| one_line(&e.to_string()))?;
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let msg = one_line(&e.inner().to_string());
            if path.is_empty() || path == "." {
                msg
            } else {
                format!("{path}: {msg}")
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        for (rc, section) in self
            .redis_connections()
            .into_iter()
            .zip(["redis", "redis_alt"])
        {
            for node in &rc.cluster {
                let port = node.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>()));
                if !matches!(port, Some((h, Ok(p))) if !h.is_empty() && p > 0) {
                    return Err(format!("{section}.cluster: {node:?} is not \"host:port\""));
                }
            }
            if !rc.cluster.is_empty() && rc.db != 0 {
                return Err(format!(
                    "{section}.db: a Redis Cluster has only database 0 (cluster is set)"
                ));
            }
        }
        let c = &self.ws.compression;
        if c.level > 9 {
            return Err(format!(
                "ws.compression.level: {} is out of range (0 to 9)",
                c.level
            ));
        }
        if !(9..=15).contains(&c.window_bits) {
            return Err(format!(
                "ws.compression.window_bits: {} is out of range (9 to 15)",
                c.window_bits
            ));
        }
        if let Some(ssl) = &self.ws.ssl {
            match (&ssl.cert, &ssl.key) {
                (None, None) => {}
                (Some(_), None) => {
                    return Err("ws.ssl.key: missing (required with ws.ssl.cert)".into());
                }
                (None, Some(_)) => {
                    return Err("ws.ssl.cert: missing (required with ws.ssl.key)".into());
                }
                (Some(_), Some(_)) => {}
            }
        }
        if let Some(api) = &self.api {
            if api.api_key.as_deref().is_none_or(str::is_empty) && !api.is_loopback() {
                return Err(format!(
                    "api.api_key: required when api.host ({:?}) is not a loopback address",
                    api.host
                ));
            }
            if api.max_body_size < 1024 {
                return Err("api.max_body_size: must be at least 1024 bytes".into());
            }
        }
        let l = &self.limits;
        if l.max_message_size < 1024 {
            return Err("limits.max_message_size: must be at least 1024 bytes".into());
        }
        if !l.max_events_per_second.is_finite() || l.max_events_per_second < 0.0 {
            return Err("limits.max_events_per_second: must be a number >= 0".into());
        }
        if !l.max_event_burst.is_finite() || l.max_event_burst < 1.0 {
            return Err("limits.max_event_burst: must be a number >= 1".into());
        }
        if l.max_pending_events == 0 {
            return Err("limits.max_pending_events: must be at least 1".into());
        }
        if l.max_concurrent_callbacks == 0 {
            return Err("limits.max_concurrent_callbacks: must be at least 1".into());
        }
        if l.max_outbound_bytes < 64 * 1024 {
            return Err("limits.max_outbound_bytes: must be at least 65536 bytes".into());
        }
        if l.handshake_timeout.is_zero() {
            return Err("limits.handshake_timeout: must be > 0 seconds".into());
        }
        if let Some(jwt) = &self.authentication.jwt {
            let sources = [
                jwt.secret.is_some(),
                jwt.public_key.is_some() || jwt.public_key_file.is_some(),
                jwt.jwks_url.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() != 1 {
                return Err("authentication.jwt: exactly one of secret, public_key (or \
                            public_key_file) and jwks_url is required"
                    .into());
            }
            if jwt.public_key.is_some() && jwt.public_key_file.is_some() {
                return Err(
                    "authentication.jwt: public_key and public_key_file exclude each other".into(),
                );
            }
            if jwt.auth_fields.is_empty() {
                return Err(
                    "authentication.jwt.auth_fields: at least one field is required \
                            (a session is authenticated when it holds an auth field)"
                        .into(),
                );
            }
        }
        for (name, svc) in &self.services {
            if let Some(p) = svc.authorization_renewal_period {
                if p.0 <= 0.0 {
                    return Err(format!(
                        "services.{name}.authorization_renewal_period: must be > 0 seconds"
                    ));
                }
            }
            if let Some(p) = svc.heartbeat_period {
                if p.0 <= 0.0 {
                    return Err(format!(
                        "services.{name}.heartbeat_period: must be > 0 seconds"
                    ));
                }
            }
            if svc.history_size > 0 && svc.history_ttl.0 < 1.0 {
                return Err(format!(
                    "services.{name}.history_ttl: must be at least 1 second"
                ));
            }
            if svc.presence && svc.presence_ttl.0 < 1.0 {
                return Err(format!(
                    "services.{name}.presence_ttl: must be at least 1 second"
                ));
            }
            if svc.join_leave && !svc.presence {
                return Err(format!("services.{name}.join_leave: needs presence = true"));
            }
            if svc.history_size > MAX_HISTORY_SIZE {
                return Err(format!(
                    "services.{name}.history_size: at most {MAX_HISTORY_SIZE}"
                ));
            }
        }
        Ok(())
    }

    /// `[ws.ssl]` present with a certificate and key: serve `wss://` only (R-WS-9).
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        let ssl = self.ws.ssl.as_ref()?;
        Some((ssl.cert.as_deref()?, ssl.key.as_deref()?))
    }

    /// The service of a subscription name (`service.topic`).
    pub fn service_for(&self, subscription: &str) -> Option<Arc<ServiceConfig>> {
        let (service, _) = subscription.split_once('.')?;
        self.services.get(service).cloned()
    }

    /// Whether some service keeps history or presence (the broker then needs a command
    /// connection).
    pub fn has_history(&self) -> bool {
        self.services
            .values()
            .any(|s| s.history_size > 0 || s.presence)
    }

    /// The configured Redis connections: `[redis]` and, if present, `[redis_alt]`.
    pub fn redis_connections(&self) -> Vec<&RedisConfig> {
        let mut v = vec![&self.redis];
        if let Some(alt) = &self.redis_alt {
            v.push(alt);
        }
        v
    }
}

/// TOML errors span several lines (a snippet of the file); keep the first meaningful one and the
/// position, so the error stays one line.
fn one_line(msg: &str) -> String {
    let mut parts: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with('|') && !l.chars().all(|c| c == '^' || c == ' ')
        })
        .collect();
    parts.dedup();
    let mut out = parts.join(" ");
    // `TOML parse error at line 3, column 1 | 3 | foo ^ unexpected` → keep it compact.
    out = out.replace("  ", " ");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configurations shipped with the repository stay valid (the Docker image's default
    /// command uses deploy/docker.toml).
    #[test]
    fn shipped_configs_are_valid() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for f in ["deploy/docker.toml", "examples/socketshark.toml"] {
            let c = Config::load(&root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(c.services.contains_key("demo") || f.starts_with("examples"));
        }
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.ws.host, "127.0.0.1");
        assert_eq!(c.ws.port, Port(9000));
        assert_eq!(c.ws.ping.interval, Secs(15.0));
        assert_eq!(c.ws.ping.timeout, Secs(15.0));
        assert!(c.ws.ssl.is_none());
        assert_eq!(c.log.level, LogLevel::Info);
        assert!(c.metrics.prometheus.is_none() && c.metrics.log.is_none());
        assert_eq!(c.http.timeout, Secs(15.0));
        assert_eq!(c.http.tries, 3);
        assert_eq!(c.http.wait, Secs(3.0));
        assert_eq!(
            c.http.reset_header_names(),
            vec!["X-Rate-Limit-Reset".to_string()]
        );
        assert_eq!(c.redis.host, "localhost");
        assert_eq!(c.redis.port, Port(6379));
        assert_eq!(c.redis.channel_prefix, "");
        assert_eq!(c.redis.ping_interval, Secs(10.0));
        assert_eq!(c.redis.ping_timeout, Secs(5.0));
        assert!(c.redis_alt.is_none());
        assert!(c.authentication.ticket.is_none());
        assert!(c.services.is_empty());
    }

    #[test]
    fn broker_and_api() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.broker, BrokerKind::Redis);
        assert!(c.api.is_none());
        let c = Config::parse("broker = \"memory\"\n[api]\nport = 0\n").unwrap();
        assert_eq!(c.broker, BrokerKind::Memory);
        assert_eq!(c.api.unwrap().host, "127.0.0.1");
        let e = Config::parse("broker = \"kafka\"\n").unwrap_err();
        assert!(e.starts_with("broker:"), "{e}");
        let e = Config::parse("[api]\nhost = \"0.0.0.0\"\n").unwrap_err();
        assert!(e.starts_with("api.api_key:"), "{e}");
        assert!(Config::parse("[api]\nhost = \"0.0.0.0\"\napi_key = \"k\"\n").is_ok());
        assert!(Config::parse("[api]\nhost = \"::1\"\n").is_ok());
        assert!(Config::parse("[api]\nhost = \"localhost\"\n").is_ok());
        let e = Config::embedded();
        assert_eq!(e.broker, BrokerKind::Memory);
        assert!(!e.services["demo"].require_authentication);
        assert!(e.warnings().is_empty());
    }

    #[test]
    fn nats_keeps_history_and_presence() {
        let nats = "broker = \"nats\"\n[services.a]\n";
        assert!(Config::parse(&format!("{nats}history_size = 10\n")).is_ok());
        assert!(Config::parse(&format!("{nats}presence = true\n")).is_ok());
    }

    #[test]
    fn warnings_for_settings_that_do_nothing() {
        assert!(Config::parse("").unwrap().warnings().is_empty());
        let w = Config::parse("broker = \"memory\"\n").unwrap().warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("without [api]"), "{w:?}");
        let w = Config::parse("broker = \"memory\"\n[api]\n[redis_alt]\n")
            .unwrap()
            .warnings();
        assert_eq!(w, ["[redis_alt] is ignored with broker = \"memory\""]);
    }

    #[test]
    fn event_rate_policy() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.limits.event_rate_policy, EventRatePolicy::Delay);
        let c = Config::parse("[limits]\nevent_rate_policy = \"reject\"\n").unwrap();
        assert_eq!(c.limits.event_rate_policy, EventRatePolicy::Reject);
        let e = Config::parse("[limits]\nevent_rate_policy = \"drop\"\n").unwrap_err();
        assert!(e.contains("event_rate_policy"), "{e}");
    }

    #[test]
    fn limits() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.limits.max_message_size, 1 << 20);
        let c =
            Config::parse("[limits]\nmax_subscriptions = 0\nmax_events_per_second = 0\n").unwrap();
        assert_eq!(c.limits.max_subscriptions, 0);
        let e = Config::parse("[limits]\nmax_pending_events = 0\n").unwrap_err();
        assert!(e.starts_with("limits.max_pending_events"), "{e}");
        let e = Config::parse("[limits]\nmax_message_size = -1\n").unwrap_err();
        assert!(e.starts_with("limits.max_message_size"), "{e}");
    }

    #[test]
    fn service_defaults() {
        let c = Config::parse("[services.empty]\n").unwrap();
        let s = &c.services["empty"];
        assert_eq!(s.name, "empty");
        assert!(s.require_authentication);
        assert!(s.authorizer.is_none());
        assert_eq!(s.authorization_renewal_jitter, Secs(0.0));
        assert!(s.heartbeat().is_none());
    }

    #[test]
    fn floats_and_strings_where_the_reference_allows_them() {
        let c = Config::parse(
            "[ws]\nport = \"9001\"\n[ws.ping]\ninterval = 0.2\ntimeout = 1\n[http]\nwait = 0.5\n",
        )
        .unwrap();
        assert_eq!(c.ws.port, Port(9001));
        assert_eq!(c.ws.ping.interval, Secs(0.2));
        assert_eq!(c.http.wait, Secs(0.5));
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("[ws]\nportt = 1\n").unwrap_err();
        assert!(e.starts_with("ws:") || e.contains("portt"), "{e}");
        assert!(e.contains("portt"), "{e}");
        let e = Config::parse("[http]\ntimeout = \"x\"\n").unwrap_err();
        assert!(e.starts_with("http.timeout:"), "{e}");
        let e = Config::parse("[http]\ntimeout = -1\n").unwrap_err();
        assert!(e.starts_with("http.timeout:"), "{e}");
        let e = Config::parse("[services.a]\nauthorizer = \"not a url\"\n").unwrap_err();
        assert!(e.starts_with("services.a.authorizer:"), "{e}");
        let e = Config::parse("[services.a]\nauthorizer = \"ftp://x/\"\n").unwrap_err();
        assert!(e.contains("http or https"), "{e}");
        let e = Config::parse("[metrics.statsd]\n").unwrap_err();
        assert!(e.contains("statsd"), "{e}");
        let e = Config::parse("[metrics.prometheus]\nhost = \"\"\n").unwrap_err();
        assert!(e.contains("port"), "{e}");
        let e = Config::parse("[ws\n").unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        let e =
            Config::parse("[authentication.ticket]\nvalidation_url = \"http://x/\"\n").unwrap_err();
        assert!(e.contains("auth_fields"), "{e}");
        let e = Config::parse("[services.a]\nauthorization_renewal_period = 0\n").unwrap_err();
        assert!(
            e.starts_with("services.a.authorization_renewal_period"),
            "{e}"
        );
        let e = Config::parse("[ws.ssl]\ncert = \"a.pem\"\n").unwrap_err();
        assert!(e.starts_with("ws.ssl.key"), "{e}");
    }

    #[test]
    fn callback_url_credentials() {
        let u = CallbackUrl::parse("http://user:s%40cret@host:8080/p?q=1#f").unwrap();
        assert_eq!(u.url.as_str(), "http://host:8080/p?q=1#f");
        assert_eq!(
            u.basic_auth,
            Some(("user".to_string(), Some("s@cret".to_string())))
        );
        assert_eq!(u.display, "http://*****:*****@host:8080/p?q=1#f");
        let u = CallbackUrl::parse("http://host/p").unwrap();
        assert!(u.basic_auth.is_none());
    }

    #[test]
    fn deprecated_header_name() {
        let c = Config::parse("[http]\nrate_limit_reset_header_name = \"Retry-After\"\n").unwrap();
        assert_eq!(c.http.reset_header_names(), vec!["Retry-After".to_string()]);
        let c = Config::parse(
            "[http]\nrate_limit_reset_header_name = \"Retry-After\"\nrate_limit_reset_header_names = [\"A\", \"B\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.http.reset_header_names(),
            vec!["A".to_string(), "B".to_string()]
        );
    }

    #[test]
    fn redis_on_loss() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.redis.on_loss, OnLoss::Shutdown);
        let c = Config::parse("[redis]\non_loss = \"reconnect\"\n").unwrap();
        assert_eq!(c.redis.on_loss, OnLoss::Reconnect);
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        let e = Config::parse("[redis]\non_loss = \"retry\"\n").unwrap_err();
        assert!(e.starts_with("redis.on_loss: "), "{e}");
        let c = Config::parse("[redis]\non_loss = \"reconnect\"\n[redis_alt]\n").unwrap();
        assert!(
            c.warnings()[0].contains("each connection follows"),
            "{:?}",
            c.warnings()
        );
    }

    #[test]
    fn redis_cluster() {
        let c = Config::parse("[redis]\ncluster = [\"127.0.0.1:7000\", \"[::1]:7001\"]\n").unwrap();
        assert_eq!(c.redis.cluster, ["127.0.0.1:7000", "[::1]:7001"]);
        let e = Config::parse("[redis]\ncluster = [\"127.0.0.1\"]\n").unwrap_err();
        assert_eq!(e, "redis.cluster: \"127.0.0.1\" is not \"host:port\"");
        let e = Config::parse("[redis]\ndb = 2\ncluster = [\"h:1\"]\n").unwrap_err();
        assert!(e.starts_with("redis.db: "), "{e}");
    }

    #[test]
    fn redis_alt_defaults_like_redis() {
        let c = Config::parse("[redis_alt]\nchannel_prefix = \"alt:\"\n").unwrap();
        let alt = c.redis_alt.unwrap();
        assert_eq!(alt.port, Port(6379));
        assert_eq!(alt.channel_prefix, "alt:");
    }
}
