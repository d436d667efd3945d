//! Metrics: the Prometheus families of the reference (R-MET-2..7), the log provider (R-MET-8)
//! and the HTTP endpoint that exposes them.
//!
//! Values live in `prometheus` crate types (atomics, cheap to update from any task). The text
//! exposition is [`crate::compat::prometheus::encode`] over [`Registry::gather`], because it must
//! match the reference (Python `prometheus_client`) byte for byte: this module says which
//! families exist, in which order (registration order), and keeps the first-use order of the
//! series of labelled families; the encoder prints them the reference's way.
//!
//! The four reference families come first, exactly as the reference prints them:
//!
//! ```text
//! # HELP socketshark_service_state Service status
//! # TYPE socketshark_service_state gauge
//! socketshark_service_state 1.0
//! # HELP socketshark_connection_count Active connections
//! # TYPE socketshark_connection_count gauge
//! socketshark_connection_count 1.0
//! # HELP socketshark_connection_total Connection total
//! # TYPE socketshark_connection_total counter
//! socketshark_connection_total 2.0
//! # HELP socketshark_event_success_counter Event success counter
//! # TYPE socketshark_event_success_counter gauge
//! socketshark_event_success_counter{event="subscribe",status="success"} 1.0
//! ```
//!
//! They are followed by a few extras that the reference does not have (build info, delivered /
//! dropped published messages, callback latency). The informative `*_created` series and the
//! Python runtime metrics of the reference are not reproduced.
//!
//! Adding a metric: create it through the `Builder` in [`Metrics::new`] (this fixes its place
//! in the output), keep the handle in [`Metrics`] and add a method that updates it. Labelled
//! families go through `Labelled`, which keeps their series in first-use order.

use std::sync::{Arc, PoisonError, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use prometheus::core::{
    Atomic, AtomicF64, AtomicU64, Collector, GenericCounter, GenericCounterVec,
};
use prometheus::proto::LabelPair;
use prometheus::{
    Counter, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::compat::prometheus::{Family, Format, Kind, SeriesOrder, encode};

/// Content type of the Prometheus text exposition format 0.0.4 (as sent by the reference).
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of the OpenMetrics text format, served when the `Accept` header asks for it.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The page served at `/` (the reference's exact page).
pub const ROOT_PAGE: &str = "<html><body><a href=\"/metrics\">Metrics</a></body></html>";

/// Target of the log provider's lines (R-MET-8).
const LOG_TARGET: &str = "socketshark::metrics";

/// Buckets of the callback duration histogram (the Python client's defaults, in seconds).
const CALLBACK_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// All metrics of the process. `Send + Sync`; every update is a few atomic operations (plus a
/// read lock and a short linear scan for labelled families).
pub struct Metrics {
    log_provider: bool,
    registry: Registry,
    families: Vec<Family>,
    service_state: IntGauge,
    connection_count: IntGauge,
    connection_total: IntCounter,
    event_success: Arc<Labelled<Gauge>>,
    messages_delivered: IntCounter,
    messages_dropped: Arc<Labelled<IntCounter>>,
    callback_duration: Arc<Labelled<Histogram>>,
    broker_connected: Arc<Labelled<Gauge>>,
    broker_outages: Arc<Labelled<IntCounter>>,
    broker_outage_seconds: Arc<Labelled<Counter>>,
    outbound_queue_bytes: IntGauge,
    slow_consumers: IntCounter,
    rate_limited: IntCounter,
    rate_delayed: IntCounter,
    messages_compressed: IntCounter,
    compression_streams: IntGauge,
    /// Set when a shutdown starts: `/readyz` then answers 503 although the service state stays 1
    /// until the end (R-SHUT-4).
    draining: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("log_provider", &self.log_provider)
            .field("ready", &self.is_ready())
            .field("active_connections", &self.active_connections())
            .field("total_connections", &self.total_connections())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates the metrics with every value at 0 (service state 0, R-CFG-6).
    /// `log_provider`: `[metrics.log]` is configured (R-MET-8). The Prometheus values are kept
    /// either way; the caller starts [`serve`] only when `[metrics.prometheus]` is configured.
    pub fn new(log_provider: bool) -> Metrics {
        let mut b = Builder::default();
        // The four reference families, in the reference's order (R-MET-3..6).
        let service_state = b.int_gauge("socketshark_service_state", "Service status");
        let connection_count = b.int_gauge("socketshark_connection_count", "Active connections");
        let connection_total = b.int_counter("socketshark_connection_total", "Connection total");
        let event_success = b.gauge_vec(
            "socketshark_event_success_counter",
            "Event success counter",
            &["event", "status"],
        );
        // Extras (not in the reference).
        let build_info = b.int_gauge_vec(
            "socketshark_build_info",
            "Build information of this socketshark",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let messages_delivered = b.int_counter(
            "socketshark_messages_delivered_total",
            "Messages pushed to clients (written to the socket)",
        );
        let messages_dropped = b.counter_vec::<AtomicU64>(
            "socketshark_messages_dropped_total",
            "Messages not pushed to a subscribed session, by reason",
            &["reason"],
        );
        let callback_duration = b.histogram_vec(
            "socketshark_callback_duration_seconds",
            "Duration of service callback HTTP attempts in seconds",
            &["service", "callback"],
            CALLBACK_BUCKETS,
        );
        let broker_connected = b.gauge_vec(
            "socketshark_broker_connected",
            "Whether the broker connection (redis, redis_alt, memory) is up; 0 once lost or a PING went unanswered",
            &["broker"],
        );
        let broker_outages = b.counter_vec::<AtomicU64>(
            "socketshark_broker_outages_total",
            "Broker outages ridden out by reconnecting (redis.on_loss = \"reconnect\"), counted when the connection is back",
            &["broker"],
        );
        let broker_outage_seconds = b.counter_vec::<AtomicF64>(
            "socketshark_broker_outage_seconds_total",
            "Seconds without a broker connection, from the loss being noticed to every channel subscribed again",
            &["broker"],
        );
        let outbound_queue_bytes = b.int_gauge(
            "socketshark_outbound_queue_bytes",
            "Bytes of frames queued for clients, all sessions together",
        );
        let slow_consumers = b.int_counter(
            "socketshark_slow_consumer_disconnects_total",
            "Sessions closed because their client did not read its messages",
        );
        let rate_limited = b.int_counter(
            "socketshark_rate_limited_events_total",
            "Client events refused because the session exceeded limits.max_events_per_second",
        );
        let rate_delayed = b.int_counter(
            "socketshark_rate_delayed_events_total",
            "Client events that waited for the session's budget of limits.max_events_per_second",
        );
        let messages_compressed = b.int_counter(
            "socketshark_messages_compressed_total",
            "Messages pushed to clients compressed (permessage-deflate)",
        );
        let compression_streams = b.int_gauge(
            "socketshark_compression_streams",
            "Channel compression streams holding a compressor (ws.compression.max_streams)",
        );
        Metrics {
            log_provider,
            registry: b.registry,
            families: b.defs,
            service_state,
            connection_count,
            connection_total,
            event_success,
            messages_delivered,
            messages_dropped,
            callback_duration,
            broker_connected,
            broker_outages,
            broker_outage_seconds,
            outbound_queue_bytes,
            slow_consumers,
            rate_limited,
            rate_delayed,
            messages_compressed,
            compression_streams,
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A shutdown started: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether load balancers should send new clients here: ready and not shutting down.
    pub fn accepts_clients(&self) -> bool {
        self.is_ready() && !self.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether the log provider (`[metrics.log]`) is enabled.
    pub fn log_provider(&self) -> bool {
        self.log_provider
    }

    /// Service state 1 (ready) or 0 (R-MET-3).
    pub fn set_ready(&self, ready: bool) {
        self.service_state.set(i64::from(ready));
        if self.log_provider {
            tracing::debug!(target: LOG_TARGET, ready, "metrics");
        }
    }

    /// A session started: active +1, total +1 (R-MET-4, R-MET-5).
    pub fn connection_opened(&self) {
        self.connection_count.inc();
        self.connection_total.inc();
        self.log_connections();
    }

    /// A session ended (at the end of R-END-2): active −1 (R-MET-4).
    pub fn connection_closed(&self) {
        self.connection_count.dec();
        self.log_connections();
    }

    fn log_connections(&self) {
        if self.log_provider {
            tracing::debug!(
                target: LOG_TARGET,
                active_connections = self.active_connections(),
                total_connections = self.total_connections(),
                "metrics"
            );
        }
    }

    /// A counted client command finished (R-MET-6): `event` is the event label (`auth`,
    /// `subscribe`, `message`, `unsubscribe`, `ping`, `unknown` or `invalid`), `success` is
    /// false when it produced an error reply or was invalid/unknown.
    pub fn event(&self, event: &str, success: bool) {
        let status = if success { "success" } else { "error" };
        self.event_success.with(&[event, status], |g| g.inc());
        if self.log_provider {
            tracing::debug!(target: LOG_TARGET, evt = event, success, "metrics");
        }
    }

    /// Extra: `n` published messages were sent to sessions.
    pub fn messages_delivered(&self, n: u64) {
        if n > 0 {
            self.messages_delivered.inc_by(n);
        }
    }

    /// Extra: a broker connection went up or down.
    pub fn set_broker_connected(&self, broker: &str, up: bool) {
        self.broker_connected
            .with(&[broker], |g| g.set(if up { 1.0 } else { 0.0 }));
    }

    /// Extra: a broker connection came back after an outage of `seconds` (`on_loss =
    /// "reconnect"`).
    pub fn broker_outage(&self, broker: &str, seconds: f64) {
        self.broker_outages.with(&[broker], |c| c.inc());
        self.broker_outage_seconds
            .with(&[broker], |c| c.inc_by(seconds));
    }

    /// Extra: the bytes currently queued for clients (all sessions).
    pub fn set_outbound_queue_bytes(&self, bytes: i64) {
        self.outbound_queue_bytes.set(bytes);
    }

    /// Extra: a session was closed as a slow consumer.
    pub fn slow_consumer(&self) {
        self.slow_consumers.inc();
    }

    /// Extra: a client event was refused by the rate limit.
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// Extra: `n` messages were pushed compressed.
    pub fn messages_compressed(&self, n: u64) {
        self.messages_compressed.inc_by(n);
    }

    /// Extra: channel compression streams holding a compressor.
    pub fn set_compression_streams(&self, n: i64) {
        self.compression_streams.set(n);
    }

    /// Extra: a client event waited for the session's rate budget (`event_rate_policy = "delay"`).
    pub fn rate_delayed(&self) {
        self.rate_delayed.inc();
    }

    /// Extra: `n` published messages were not sent to a subscribed session. `reason` is a
    /// short fixed word: `fields`, `order`, `throttle` (the R-LOG-4 `message filtered`
    /// reasons; `throttle` = superseded by a newer pending message), `slow_consumer` (routed to
    /// or queued for a session closed by the slow-consumer policy) or `closed` (routed to or
    /// queued for a session closing for another reason). Every value is a series.
    pub fn messages_dropped(&self, reason: &str, n: u64) {
        self.messages_dropped.with(&[reason], |c| c.inc_by(n));
    }

    /// Extra: one callback HTTP attempt took `seconds`. `service` is the service name (`""`
    /// for ticket validation); `callback` a short fixed name such as `ticket`, `authorizer`,
    /// `before_subscribe`, `on_message`, … (not a URL).
    pub fn callback_duration(&self, service: &str, callback: &str, seconds: f64) {
        self.callback_duration
            .with(&[service, callback], |h| h.observe(seconds));
    }

    /// Messages pushed to clients since start.
    pub fn delivered(&self) -> u64 {
        self.messages_delivered.get()
    }

    /// For the status page: brokers (connected, outages), drops by reason, and per service and
    /// callback the attempts, their mean and an estimate of their p99 (from the histogram).
    pub fn status(&self) -> serde_json::Value {
        use serde_json::json;
        let mut brokers = serde_json::Map::new();
        for (labels, g) in self.broker_connected.series() {
            let outages = self.broker_outages.get(&[&labels[0]], |c| c.get());
            brokers.insert(
                labels[0].clone(),
                json!({"connected": g.get() == 1.0, "outages": outages.unwrap_or(0)}),
            );
        }
        let mut dropped = serde_json::Map::new();
        for (labels, c) in self.messages_dropped.series() {
            dropped.insert(labels[0].clone(), c.get().into());
        }
        let mut callbacks = Vec::new();
        for (labels, h) in self.callback_duration.series() {
            let n = h.get_sample_count();
            let mean = if n == 0 {
                0.0
            } else {
                h.get_sample_sum() / n as f64
            };
            callbacks.push(json!({
                "service": labels[0], "callback": labels[1], "attempts": n,
                "mean_s": mean, "p99_le_s": histogram_quantile(&h, 0.99),
            }));
        }
        json!({"brokers": brokers, "dropped": dropped, "callbacks": callbacks})
    }

    /// Current service state (true = 1).
    pub fn is_ready(&self) -> bool {
        self.service_state.get() == 1
    }

    /// Current number of active connections.
    pub fn active_connections(&self) -> i64 {
        self.connection_count.get()
    }

    /// Number of connections since start.
    pub fn total_connections(&self) -> u64 {
        self.connection_total.get()
    }

    /// The Prometheus text exposition format 0.0.4, as the reference prints it.
    pub fn render(&self) -> String {
        encode(&self.families, &self.registry.gather(), Format::Text)
    }

    /// The OpenMetrics text format (served when the client's `Accept` header asks for
    /// `application/openmetrics-text`, like the reference): counter families are named without
    /// `_total`, the help text also escapes `"`, and the output ends with `# EOF`.
    pub fn render_openmetrics(&self) -> String {
        encode(&self.families, &self.registry.gather(), Format::OpenMetrics)
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP endpoint

/// The metrics HTTP application: `GET /metrics`, `GET /` (a page linking to `/metrics`),
/// `GET /healthz` (`ok`), `GET /readyz` (`ready` / 503 `not ready` from the service state);
/// anything else is 404.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/", get(root_page))
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(metrics)
}

/// Serves [`router`] on an already-bound listener until the task is dropped (R-MET-2).
pub async fn serve(metrics: Arc<Metrics>, listener: tokio::net::TcpListener) {
    if let Err(e) = axum::serve(listener, router(metrics)).await {
        tracing::error!(target: LOG_TARGET, error = %e, "metrics server failed");
    }
}

async fn root_page() -> Html<&'static str> {
    Html(ROOT_PAGE)
}

async fn metrics_page(State(metrics): State<Arc<Metrics>>, headers: HeaderMap) -> Response {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    if wants_openmetrics(&accept) {
        (
            [(header::CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)],
            metrics.render_openmetrics(),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, CONTENT_TYPE_TEXT)],
            metrics.render(),
        )
            .into_response()
    }
}

/// The reference's negotiation: OpenMetrics when any media range of `Accept` is exactly
/// `application/openmetrics-text` (parameters ignored), else the 0.0.4 text format.
fn wants_openmetrics(accept: &str) -> bool {
    accept
        .split(',')
        .any(|range| range.split(';').next().unwrap_or("").trim() == "application/openmetrics-text")
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> (StatusCode, &'static str) {
    if metrics.accepts_clients() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "404: Not Found")
}

// ---------------------------------------------------------------------------------------------
// Families and registration

type MakeChild<M> = Box<dyn Fn(&[&str]) -> M + Send + Sync>;

/// A labelled family: the children of a prometheus `*Vec`, cached in first-use order (which
/// is the order the reference prints them in). Meant for small, fixed sets of label values.
struct Labelled<M> {
    label_names: &'static [&'static str],
    make: MakeChild<M>,
    children: RwLock<Vec<(Box<[String]>, M)>>,
}

impl<M> Labelled<M> {
    fn new(label_names: &'static [&'static str], make: MakeChild<M>) -> Labelled<M> {
        Labelled {
            label_names,
            make,
            children: RwLock::new(Vec::new()),
        }
    }

    /// Runs `f` on the series with these label values (in `label_names` order), creating it
    /// on first use.
    fn with<R>(&self, values: &[&str], f: impl FnOnce(&M) -> R) -> R {
        debug_assert_eq!(values.len(), self.label_names.len());
        let same = |v: &[String]| v.iter().map(String::as_str).eq(values.iter().copied());
        {
            let children = self.children.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, m)) = children.iter().find(|(v, _)| same(v)) {
                return f(m);
            }
        }
        let mut children = self
            .children
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = children.iter().position(|(v, _)| same(v)) {
            return f(&children[i].1);
        }
        let child = (self.make)(values);
        let r = f(&child);
        children.push((values.iter().map(|s| s.to_string()).collect(), child));
        r
    }
}

impl<M: Clone> Labelled<M> {
    /// Every series: its label values and a handle on it.
    fn series(&self) -> Vec<(Box<[String]>, M)> {
        self.children
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `f` on the series with these label values, if it exists.
    fn get<R>(&self, values: &[&str], f: impl FnOnce(&M) -> R) -> Option<R> {
        let children = self.children.read().unwrap_or_else(PoisonError::into_inner);
        children
            .iter()
            .find(|(v, _)| v.iter().map(String::as_str).eq(values.iter().copied()))
            .map(|(_, m)| f(m))
    }
}

/// The upper bound of the bucket holding quantile `q` of a histogram (`None` without samples;
/// infinity when it is beyond the last bucket).
fn histogram_quantile(h: &Histogram, q: f64) -> Option<f64> {
    use prometheus::core::Metric;
    let m = h.metric();
    let hist = m.get_histogram();
    let total = hist.get_sample_count();
    if total == 0 {
        return None;
    }
    let want = (q * total as f64).ceil() as u64;
    hist.get_bucket()
        .iter()
        .find(|b| b.cumulative_count() >= want)
        .map(|b| b.upper_bound())
        .or(Some(f64::INFINITY))
}

impl<M: Send + Sync> SeriesOrder for Labelled<M> {
    fn position(&self, labels: &[LabelPair]) -> Option<usize> {
        let value_of = |name: &str| {
            labels
                .iter()
                .find(|lp| lp.name() == name)
                .map(|lp| lp.value())
        };
        let children = self.children.read().unwrap_or_else(PoisonError::into_inner);
        children.iter().position(|(values, _)| {
            self.label_names
                .iter()
                .zip(values.iter())
                .all(|(name, v)| value_of(name) == Some(v.as_str()))
        })
    }
}

/// Registers families in output order. Names and help texts are constants: a registration
/// error is a programming error (covered by the tests).
#[derive(Default)]
struct Builder {
    registry: Registry,
    defs: Vec<Family>,
}

impl Builder {
    fn register<C: Collector + Clone + 'static>(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        collector: &C,
        order: Option<Arc<dyn SeriesOrder>>,
    ) {
        // The encoder relies on this (OpenMetrics family name = name without `_total`).
        assert!(
            kind != Kind::Counter || name.ends_with("_total"),
            "counter {name} must end with _total"
        );
        if let Err(e) = self.registry.register(Box::new(collector.clone())) {
            panic!("cannot register metric {name}: {e}");
        }
        self.defs.push(Family {
            name,
            help,
            kind,
            order,
        });
    }

    fn int_gauge(&mut self, name: &'static str, help: &'static str) -> IntGauge {
        let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
        self.register(name, help, Kind::Gauge, &g, None);
        g
    }

    fn int_counter(&mut self, name: &'static str, help: &'static str) -> IntCounter {
        let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
        self.register(name, help, Kind::Counter, &c, None);
        c
    }

    /// A labelled gauge family whose series are all set once at start (no ordering needed).
    fn int_gauge_vec(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> IntGaugeVec {
        let v = IntGaugeVec::new(Opts::new(name, help), labels)
            .unwrap_or_else(|e| panic!("metric {name}: {e}"));
        self.register(name, help, Kind::Gauge, &v, None);
        v
    }

    fn gauge_vec(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Arc<Labelled<Gauge>> {
        let v = GaugeVec::new(Opts::new(name, help), labels)
            .unwrap_or_else(|e| panic!("metric {name}: {e}"));
        let vc = v.clone();
        let l = Arc::new(Labelled::new(
            labels,
            Box::new(move |vals: &[&str]| vc.with_label_values(vals)),
        ));
        self.register(name, help, Kind::Gauge, &v, Some(l.clone()));
        l
    }

    /// A labelled counter family, integer (`IntCounter`) or float (`Counter`).
    fn counter_vec<P: Atomic + 'static>(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Arc<Labelled<GenericCounter<P>>> {
        let v = GenericCounterVec::<P>::new(Opts::new(name, help), labels)
            .unwrap_or_else(|e| panic!("metric {name}: {e}"));
        let vc = v.clone();
        let l = Arc::new(Labelled::new(
            labels,
            Box::new(move |vals: &[&str]| vc.with_label_values(vals)),
        ));
        self.register(name, help, Kind::Counter, &v, Some(l.clone()));
        l
    }

    fn histogram_vec(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &[f64],
    ) -> Arc<Labelled<Histogram>> {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        let v = HistogramVec::new(opts, labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
        let vc = v.clone();
        let l = Arc::new(Labelled::new(
            labels,
            Box::new(move |vals: &[&str]| vc.with_label_values(vals)),
        ));
        self.register(name, help, Kind::Histogram, &v, Some(l.clone()));
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const REFERENCE_HEAD: &str = "\
# HELP socketshark_service_state Service status
# TYPE socketshark_service_state gauge
socketshark_service_state 0.0
# HELP socketshark_connection_count Active connections
# TYPE socketshark_connection_count gauge
socketshark_connection_count 0.0
# HELP socketshark_connection_total Connection total
# TYPE socketshark_connection_total counter
socketshark_connection_total 0.0
# HELP socketshark_event_success_counter Event success counter
# TYPE socketshark_event_success_counter gauge
";

    fn extras(delivered: &str, dropped: &str, callbacks: &str) -> String {
        format!(
            "# HELP socketshark_build_info Build information of this socketshark
# TYPE socketshark_build_info gauge
socketshark_build_info{{version=\"{}\"}} 1.0
# HELP socketshark_messages_delivered_total Messages pushed to clients (written to the socket)
# TYPE socketshark_messages_delivered_total counter
socketshark_messages_delivered_total {delivered}
# HELP socketshark_messages_dropped_total Messages not pushed to a subscribed session, by reason
# TYPE socketshark_messages_dropped_total counter
{dropped}# HELP socketshark_callback_duration_seconds Duration of service callback HTTP attempts in seconds
# TYPE socketshark_callback_duration_seconds histogram
{callbacks}# HELP socketshark_broker_connected Whether the broker connection (redis, redis_alt, memory) is up; 0 once lost or a PING went unanswered
# TYPE socketshark_broker_connected gauge
# HELP socketshark_broker_outages_total Broker outages ridden out by reconnecting (redis.on_loss = \"reconnect\"), counted when the connection is back
# TYPE socketshark_broker_outages_total counter
# HELP socketshark_broker_outage_seconds_total Seconds without a broker connection, from the loss being noticed to every channel subscribed again
# TYPE socketshark_broker_outage_seconds_total counter
# HELP socketshark_outbound_queue_bytes Bytes of frames queued for clients, all sessions together
# TYPE socketshark_outbound_queue_bytes gauge
socketshark_outbound_queue_bytes 0.0
# HELP socketshark_slow_consumer_disconnects_total Sessions closed because their client did not read its messages
# TYPE socketshark_slow_consumer_disconnects_total counter
socketshark_slow_consumer_disconnects_total 0.0
# HELP socketshark_rate_limited_events_total Client events refused because the session exceeded limits.max_events_per_second
# TYPE socketshark_rate_limited_events_total counter
socketshark_rate_limited_events_total 0.0
# HELP socketshark_rate_delayed_events_total Client events that waited for the session's budget of limits.max_events_per_second
# TYPE socketshark_rate_delayed_events_total counter
socketshark_rate_delayed_events_total 0.0
# HELP socketshark_messages_compressed_total Messages pushed to clients compressed (permessage-deflate)
# TYPE socketshark_messages_compressed_total counter
socketshark_messages_compressed_total 0.0
# HELP socketshark_compression_streams Channel compression streams holding a compressor (ws.compression.max_streams)
# TYPE socketshark_compression_streams gauge
socketshark_compression_streams 0.0
",
            env!("CARGO_PKG_VERSION")
        )
    }

    #[test]
    fn initial_render() {
        let m = Metrics::new(false);
        let expected = format!("{REFERENCE_HEAD}{}", extras("0.0", "", ""));
        assert_eq!(m.render(), expected);
        assert!(!m.is_ready());
    }

    #[test]
    fn render_after_calls_matches_reference() {
        let m = Metrics::new(false);
        m.set_ready(true);
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.event("subscribe", true);
        m.event("unknown", false);
        m.event("invalid", false);
        let expected = format!(
            "\
# HELP socketshark_service_state Service status
# TYPE socketshark_service_state gauge
socketshark_service_state 1.0
# HELP socketshark_connection_count Active connections
# TYPE socketshark_connection_count gauge
socketshark_connection_count 1.0
# HELP socketshark_connection_total Connection total
# TYPE socketshark_connection_total counter
socketshark_connection_total 2.0
# HELP socketshark_event_success_counter Event success counter
# TYPE socketshark_event_success_counter gauge
socketshark_event_success_counter{{event=\"subscribe\",status=\"success\"}} 1.0
socketshark_event_success_counter{{event=\"unknown\",status=\"error\"}} 1.0
socketshark_event_success_counter{{event=\"invalid\",status=\"error\"}} 1.0
{}",
            extras("0.0", "", "")
        );
        assert_eq!(m.render(), expected);
        assert!(m.is_ready());
        assert_eq!(m.active_connections(), 1);
        assert_eq!(m.total_connections(), 2);

        m.set_ready(false);
        m.event("subscribe", true);
        m.event("subscribe", false);
        let out = m.render();
        assert!(out.contains("socketshark_service_state 0.0\n"));
        assert!(out.contains(
            "socketshark_event_success_counter{event=\"subscribe\",status=\"success\"} 2.0\n\
             socketshark_event_success_counter{event=\"unknown\",status=\"error\"} 1.0\n\
             socketshark_event_success_counter{event=\"invalid\",status=\"error\"} 1.0\n\
             socketshark_event_success_counter{event=\"subscribe\",status=\"error\"} 1.0\n"
        ));
    }

    #[test]
    fn connection_count_can_go_negative() {
        let m = Metrics::new(false);
        m.connection_closed();
        assert!(m.render().contains("socketshark_connection_count -1.0\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new(false);
        m.event("a\"b\\c\nd", false);
        assert!(m.render().contains(
            "socketshark_event_success_counter{event=\"a\\\"b\\\\c\\nd\",status=\"error\"} 1.0\n"
        ));
    }

    #[test]
    fn extras_render() {
        let m = Metrics::new(false);
        m.messages_delivered(1);
        m.messages_delivered(1);
        m.messages_dropped("throttle", 1);
        m.messages_dropped("fields", 1);
        m.messages_dropped("throttle", 1);
        m.callback_duration("svc", "on_subscribe", 0.02);
        m.callback_duration("svc", "on_subscribe", 3.0);
        m.callback_duration("svc", "authorizer", 20.0);
        let buckets = |cb: &str, counts: [u32; 15], count: u32, sum: &str| {
            let les = [
                "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1.0",
                "2.5", "5.0", "7.5", "10.0", "+Inf",
            ];
            let mut s = String::new();
            for (le, c) in les.iter().zip(counts) {
                s += &format!(
                    "socketshark_callback_duration_seconds_bucket{{callback=\"{cb}\",le=\"{le}\",service=\"svc\"}} {c}.0\n"
                );
            }
            s += &format!(
                "socketshark_callback_duration_seconds_count{{callback=\"{cb}\",service=\"svc\"}} {count}.0\n\
                 socketshark_callback_duration_seconds_sum{{callback=\"{cb}\",service=\"svc\"}} {sum}\n"
            );
            s
        };
        let callbacks = buckets(
            "on_subscribe",
            [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2],
            2,
            "3.02",
        ) + &buckets(
            "authorizer",
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            1,
            "20.0",
        );
        let dropped = "socketshark_messages_dropped_total{reason=\"throttle\"} 2.0\n\
                       socketshark_messages_dropped_total{reason=\"fields\"} 1.0\n";
        let expected = format!("{REFERENCE_HEAD}{}", extras("2.0", dropped, &callbacks));
        assert_eq!(m.render(), expected);
    }

    #[test]
    fn openmetrics_render() {
        let m = Metrics::new(false);
        m.connection_opened();
        m.event("ping", true);
        m.messages_dropped("order", 1);
        let out = m.render_openmetrics();
        assert!(out.starts_with(
            "# HELP socketshark_service_state Service status
# TYPE socketshark_service_state gauge
socketshark_service_state 0.0
# HELP socketshark_connection_count Active connections
# TYPE socketshark_connection_count gauge
socketshark_connection_count 1.0
# HELP socketshark_connection Connection total
# TYPE socketshark_connection counter
socketshark_connection_total 1.0
# HELP socketshark_event_success_counter Event success counter
# TYPE socketshark_event_success_counter gauge
socketshark_event_success_counter{event=\"ping\",status=\"success\"} 1.0
"
        ));
        assert!(out.contains(
            "# TYPE socketshark_messages_dropped counter\n\
             socketshark_messages_dropped_total{reason=\"order\"} 1.0\n"
        ));
        assert!(out.contains("# TYPE socketshark_callback_duration_seconds histogram\n"));
        assert!(out.ends_with("socketshark_compression_streams 0.0\n# EOF\n"));
    }

    #[test]
    fn openmetrics_negotiation() {
        assert!(!wants_openmetrics(""));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(wants_openmetrics("text/html, application/openmetrics-text"));
        assert!(!wants_openmetrics("application/openmetrics-textx"));
    }

    #[test]
    fn metrics_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Metrics>();
        check::<Arc<Metrics>>();
    }

    // --- log provider -------------------------------------------------------------------

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<String>>>);

    struct FieldsVisitor(Vec<String>);

    impl tracing::field::Visit for FieldsVisitor {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push(format!("{}={value:?}", field.name()));
        }
        fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
            self.0.push(format!("{}:i64={value}", field.name()));
        }
        fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
            self.0.push(format!("{}:u64={value}", field.name()));
        }
        fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
            self.0.push(format!("{}:bool={value}", field.name()));
        }
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            self.0.push(format!("{}:str={value}", field.name()));
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut v = FieldsVisitor(Vec::new());
            event.record(&mut v);
            let meta = event.metadata();
            self.0.lock().unwrap().push(format!(
                "{} {} {}",
                meta.level(),
                meta.target(),
                v.0.join(" ")
            ));
        }
    }

    fn captured(log_provider: bool, f: impl FnOnce(&Metrics)) -> Vec<String> {
        use tracing_subscriber::layer::SubscriberExt;
        let cap = Capture::default();
        let subscriber = tracing_subscriber::registry().with(cap.clone());
        let m = Metrics::new(log_provider);
        tracing::subscriber::with_default(subscriber, || f(&m));
        cap.0.lock().unwrap().clone()
    }

    #[test]
    fn log_provider_lines() {
        let lines = captured(true, |m| {
            m.set_ready(true);
            m.connection_opened();
            m.connection_opened();
            m.connection_closed();
            m.event("subscribe", true);
            m.event("invalid", false);
            m.messages_delivered(1);
            m.messages_dropped("order", 1);
            m.callback_duration("", "ticket", 0.1);
            m.set_ready(false);
        });
        let t = "DEBUG socketshark::metrics";
        assert_eq!(
            lines,
            vec![
                format!("{t} message=metrics ready:bool=true"),
                format!("{t} message=metrics active_connections:i64=1 total_connections:u64=1"),
                format!("{t} message=metrics active_connections:i64=2 total_connections:u64=2"),
                format!("{t} message=metrics active_connections:i64=1 total_connections:u64=2"),
                format!("{t} message=metrics evt:str=subscribe success:bool=true"),
                format!("{t} message=metrics evt:str=invalid success:bool=false"),
                format!("{t} message=metrics ready:bool=false"),
            ]
        );
    }

    #[test]
    fn no_log_lines_without_log_provider() {
        let lines = captured(false, |m| {
            m.set_ready(true);
            m.connection_opened();
            m.connection_closed();
            m.event("ping", true);
            assert!(m.render().contains("socketshark_connection_total 1.0\n"));
        });
        assert!(lines.is_empty(), "{lines:?}");
    }

    // --- HTTP -------------------------------------------------------------------------------

    async fn fetch(addr: std::net::SocketAddr, path: &str, accept: Option<&str>) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accept = accept
            .map(|a| format!("Accept: {a}\r\n"))
            .unwrap_or_default();
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{accept}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn split(resp: &str) -> (&str, String, &str) {
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        let status = head.lines().next().unwrap();
        let ctype = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        (status, ctype, body)
    }

    #[tokio::test]
    async fn http_endpoints() {
        let metrics = Arc::new(Metrics::new(false));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(metrics.clone(), listener));

        metrics.event("subscribe", true);
        let resp = fetch(addr, "/metrics", None).await;
        let (status, ctype, body) = split(&resp);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
        assert_eq!(body, metrics.render());
        assert!(body.contains(
            "socketshark_event_success_counter{event=\"subscribe\",status=\"success\"} 1.0\n"
        ));

        let resp = fetch(
            addr,
            "/metrics",
            Some("application/openmetrics-text;version=1.0.0"),
        )
        .await;
        let (status, ctype, body) = split(&resp);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(ctype, CONTENT_TYPE_OPENMETRICS);
        assert!(body.ends_with("# EOF\n"));

        let resp = fetch(addr, "/", None).await;
        let (status, ctype, body) = split(&resp);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(ctype.starts_with("text/html"), "{ctype}");
        assert_eq!(body, ROOT_PAGE);
        assert!(body.contains("href=\"/metrics\""));

        let resp = fetch(addr, "/healthz", None).await;
        let (status, _, body) = split(&resp);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, "ok");

        let resp = fetch(addr, "/readyz", None).await;
        let (status, _, body) = split(&resp);
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(body, "not ready");

        metrics.set_ready(true);
        let resp = fetch(addr, "/readyz", None).await;
        let (status, _, body) = split(&resp);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, "ready");

        let resp = fetch(addr, "/nope", None).await;
        let (status, _, _) = split(&resp);
        assert_eq!(status, "HTTP/1.1 404 Not Found");

        server.abort();
        let _ = server.await;
    }
}
