//! Log output (SPEC.md §18, R-LOG-1..6): one line per event on stderr, JSON or human-readable
//! text. URL credentials are scrubbed by [`crate::redact`].
//!
//! [`init`] installs the process-wide `tracing` subscriber: a [`Registry`] with one layer that
//! filters callsites itself (a disabled callsite gets `Interest::never`, so a filtered-out event
//! costs one atomic load at the call site) and formats each enabled event into a buffer written to
//! stderr with one `write_all` under the stderr lock, so concurrent lines never interleave.
//!
//! JSON lines (R-LOG-1) have the original's layout, written by [`crate::compat::structlog`]:
//! `{"event", "level", "logger", "timestamp", "pid", <fields>...}`. What this module decides:
//! * `logger` is `log.logger_name` (`socketshark`), `{log.trace_logger_prefix}.{log.logger_name}`
//!   (`trace.socketshark`) for TRACE events (R-LOG-4), and the event's target for events of other
//!   crates;
//! * fields keep their JSON types (integers, floats, booleans, strings); values recorded with `%`
//!   or `?` are strings, except the fields named in [`JSON_FIELDS`] (`data`, `request`,
//!   `response`, `auth_info`), whose text (however recorded) is embedded as a JSON value when it
//!   parses as JSON: call
//!   sites write `tracing::debug!(session = id, data = %value, "client event")` with `value` a
//!   `serde_json::Value` (its `Display` is compact JSON) or a JSON frame's text;
//! * the text format (`log.format = "text"`, free-form per R-LOG-1) is ours:
//!   `{timestamp} {LEVEL} {logger}: {event} {name}={value}...`.
//!
//! Filtering (R-LOG-2): our events (targets starting with `socketshark`) are filtered by
//! `log.level`; TRACE events pass only with `log.level = "TRACE"`. Events of other crates are shown
//! at WARN and above (ERROR only with `log.level = "ERROR"`). A non-empty `RUST_LOG` replaces this
//! entirely (`tracing_subscriber::filter::Targets` syntax: `socketshark=debug,hyper=info`,
//! `debug`); an unparsable one is reported on one warning line and the config applies.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde_json::{Number, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::Registry;

use crate::compat::structlog;
use crate::config::{LogConfig, LogFormat, LogLevel};

/// The target prefix of our own events (module paths of the library and the binary).
pub const OWN_TARGET: &str = "socketshark";

/// Fields whose `Display`/`Debug` text is embedded in JSON lines as a JSON value when it parses.
pub const JSON_FIELDS: [&str; 4] = ["data", "request", "response", "auth_info"];

// ------------------------------------------------------------------------------------------------
// Installation
// ------------------------------------------------------------------------------------------------

/// Installs the global subscriber writing to stderr (R-LOG-1). The format is `log.format`
/// (`auto`: JSON unless stderr is a terminal); the filter is `log.level`, or `RUST_LOG` when set
/// and non-empty (see the module documentation). A second call changes nothing and does not panic.
pub fn init(cfg: &LogConfig) {
    if tracing::dispatcher::has_been_set() {
        return;
    }
    let style = Style::resolve(cfg.format, std::io::stderr().is_terminal());
    let rust_log = std::env::var_os("RUST_LOG").map(|v| v.to_string_lossy().into_owned());
    let (filter, warning) = select_filter(cfg.level, rust_log.as_deref());
    let layer = LogLayer::new(cfg, style, filter, StderrSink);
    if let Some(error) = &warning {
        layer.write_record(
            &Level::WARN,
            OWN_TARGET,
            "invalid RUST_LOG, using log.level",
            &[
                ("rust_log", Value::String(rust_log.unwrap_or_default())),
                ("error", Value::String(error.clone())),
            ],
        );
    }
    let (layer, handle) = tracing_subscriber::reload::Layer::new(layer);
    let _ = RELOAD.set(handle);
    let _ = tracing::subscriber::set_global_default(Registry::default().with(layer));
}

/// Changes the installed subscriber's level and format to `cfg`'s (a configuration reload);
/// `RUST_LOG`, when set, still decides the filter. Does nothing before [`init`].
pub fn reconfigure(cfg: &LogConfig) {
    let Some(handle) = RELOAD.get() else {
        return;
    };
    let style = Style::resolve(cfg.format, std::io::stderr().is_terminal());
    let rust_log = std::env::var_os("RUST_LOG").map(|v| v.to_string_lossy().into_owned());
    let (filter, _) = select_filter(cfg.level, rust_log.as_deref());
    let _ = handle.modify(|layer| *layer = LogLayer::new(cfg, style, filter, StderrSink));
}

/// The handle [`reconfigure`] swaps the stderr layer through.
static RELOAD: std::sync::OnceLock<
    tracing_subscriber::reload::Handle<LogLayer<StderrSink>, Registry>,
> = std::sync::OnceLock::new();

/// The layer [`init`] installs, writing into `writer` instead of stderr and filtering by
/// `cfg.level` only (`RUST_LOG` is ignored). `LogFormat::Auto` means JSON. For tests.
pub fn layer_for_writer<S: Subscriber>(
    cfg: &LogConfig,
    writer: Arc<Mutex<Vec<u8>>>,
) -> impl Layer<S> + Send + Sync + 'static {
    LogLayer::new(
        cfg,
        Style::resolve(cfg.format, false),
        config_filter(cfg.level),
        BufSink(writer),
    )
}

/// A whole subscriber around [`layer_for_writer`], for `tracing::subscriber::with_default`.
pub fn subscriber_for_writer(
    cfg: &LogConfig,
    writer: Arc<Mutex<Vec<u8>>>,
) -> impl Subscriber + Send + Sync + 'static {
    Registry::default().with(layer_for_writer(cfg, writer))
}

/// The filter `log.level` stands for: our targets at that level, other crates at WARN (or ERROR
/// when `log.level` is ERROR).
pub fn config_filter(level: LogLevel) -> Targets {
    let own = match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    };
    Targets::new()
        .with_default(own.min(LevelFilter::WARN))
        .with_target(OWN_TARGET, own)
}

/// The filter for `log.level` and the value of `RUST_LOG`: `RUST_LOG` when it holds directives
/// and parses, else the config's filter (with the parse error to report when it does not parse).
pub fn select_filter(level: LogLevel, rust_log: Option<&str>) -> (Targets, Option<String>) {
    let Some(spec) = rust_log else {
        return (config_filter(level), None);
    };
    let directives: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return (config_filter(level), None);
    }
    match directives.join(",").parse::<Targets>() {
        Ok(targets) => (targets, None),
        Err(e) => (config_filter(level), Some(e.to_string())),
    }
}

// ------------------------------------------------------------------------------------------------
// The layer
// ------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Json,
    Text,
}

impl Style {
    fn resolve(format: LogFormat, terminal: bool) -> Style {
        match format {
            LogFormat::Json => Style::Json,
            LogFormat::Text => Style::Text,
            LogFormat::Auto if terminal => Style::Text,
            LogFormat::Auto => Style::Json,
        }
    }
}

/// Where finished lines go; each call gets one whole line, newline included.
trait LineSink: Send + Sync + 'static {
    fn write_line(&self, line: &[u8]);
}

struct StderrSink;

impl LineSink for StderrSink {
    fn write_line(&self, line: &[u8]) {
        // Stderr is unbuffered: one write_all under the lock writes the line in one go.
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line);
    }
}

struct BufSink(Arc<Mutex<Vec<u8>>>);

impl LineSink for BufSink {
    fn write_line(&self, line: &[u8]) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(line);
    }
}

struct LogLayer<W> {
    style: Style,
    filter: Targets,
    max_level: LevelFilter,
    logger: String,
    trace_logger: String,
    pid: u32,
    sink: W,
}

impl<W: LineSink> LogLayer<W> {
    fn new(cfg: &LogConfig, style: Style, filter: Targets, sink: W) -> Self {
        let max_level = filter
            .iter()
            .map(|(_, level)| level)
            .chain(filter.default_level())
            .max()
            .unwrap_or(LevelFilter::OFF);
        LogLayer {
            style,
            filter,
            max_level,
            logger: cfg.logger_name.clone(),
            trace_logger: format!("{}.{}", cfg.trace_logger_prefix, cfg.logger_name),
            pid: std::process::id(),
            sink,
        }
    }

    fn wants(&self, meta: &Metadata<'_>) -> bool {
        // Spans are not used for output: never track them.
        !meta.is_span() && self.filter.would_enable(meta.target(), meta.level())
    }

    fn write_record(&self, level: &Level, target: &str, message: &str, fields: &[(&str, Value)]) {
        let logger = if !target.starts_with(OWN_TARGET) {
            target
        } else if *level == Level::TRACE {
            &self.trace_logger
        } else {
            &self.logger
        };
        let line = format_line(
            self.style,
            level,
            logger,
            Utc::now(),
            self.pid,
            message,
            fields,
        );
        self.sink.write_line(&line);
    }
}

impl<S: Subscriber, W: LineSink> Layer<S> for LogLayer<W> {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if self.wants(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.wants(meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max_level)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        self.write_record(
            meta.level(),
            meta.target(),
            fields.message.as_deref().unwrap_or(""),
            &fields.fields,
        );
    }
}

/// An event's message and fields, in the order given.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    fields: Vec<(&'static str, Value)>,
}

impl Fields {
    fn push(&mut self, field: &Field, value: Value) {
        self.fields.push((field.name(), value));
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v =
            Number::from_f64(value).map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.push(field, v);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let v = Number::from_i128(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.push(field, v);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let v = Number::from_u128(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.push(field, v);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else if JSON_FIELDS.contains(&field.name()) {
            // JSON text (a frame, a request body) is embedded as JSON when it parses.
            let v = serde_json::from_str::<Value>(value)
                .unwrap_or_else(|_| Value::String(value.to_string()));
            self.push(field, v);
        } else {
            self.push(field, Value::String(value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else if JSON_FIELDS.contains(&field.name()) {
            // The default recursion limit (128) bounds the depth of what is embedded (and so the
            // recursion of its serialisation); deeper values stay strings.
            let v = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
            self.push(field, v);
        } else {
            self.push(field, Value::String(text));
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Formatting
// ------------------------------------------------------------------------------------------------

/// One whole line (newline included) in the given style: the original's JSON line
/// ([`structlog::json_line`]) or our text line.
fn format_line(
    style: Style,
    level: &Level,
    logger: &str,
    time: DateTime<Utc>,
    pid: u32,
    message: &str,
    fields: &[(&str, Value)],
) -> Vec<u8> {
    match style {
        Style::Json => structlog::json_line(level, logger, time, pid, message, fields),
        Style::Text => text_line(level, logger, time, message, fields),
    }
}

/// `{timestamp} {LEVEL} {logger}: {message} {name}={value}...` (R-LOG-1 leaves the text format
/// free; the timestamp is the JSON line's).
fn text_line(
    level: &Level,
    logger: &str,
    time: DateTime<Utc>,
    message: &str,
    fields: &[(&str, Value)],
) -> Vec<u8> {
    let timestamp = structlog::format_timestamp(time);
    let mut s = format!("{timestamp} {:<5} {logger}: ", level.as_str());
    push_text_message(&mut s, message);
    for (name, value) in fields {
        s.push(' ');
        s.push_str(name);
        s.push('=');
        push_text_value(&mut s, value);
    }
    s.push('\n');
    s.into_bytes()
}

/// The message as is, with control characters escaped so the line stays one line.
fn push_text_message(s: &mut String, message: &str) {
    for c in message.chars() {
        if c.is_control() {
            s.extend(c.escape_default());
        } else {
            s.push(c);
        }
    }
}

/// Strings bare unless empty or holding whitespace, quotes, `=` or control characters (then
/// quoted and escaped); other values as compact JSON.
fn push_text_value(s: &mut String, value: &Value) {
    match value {
        Value::String(v) => {
            let quote = v.is_empty()
                || v.chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=');
            if quote {
                s.push_str(&format!("{v:?}"));
            } else {
                s.push_str(v);
            }
        }
        other => s.push_str(&other.to_string()),
    }
}

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    // --- line formatting ------------------------------------------------------------------------

    fn cfg(level: LogLevel) -> LogConfig {
        LogConfig {
            level,
            ..LogConfig::default()
        }
    }

    /// Runs `f` under a subscriber built from `cfg` and returns the lines it wrote.
    fn capture(cfg: &LogConfig, f: impl FnOnce()) -> Vec<String> {
        let buf = Arc::new(Mutex::new(Vec::new()));
        tracing::subscriber::with_default(subscriber_for_writer(cfg, buf.clone()), f);
        let bytes = buf.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'));
        text.lines().map(str::to_string).collect()
    }

    fn capture_json(cfg: &LogConfig, f: impl FnOnce()) -> Vec<serde_json::Map<String, Value>> {
        capture(cfg, f)
            .iter()
            .map(|l| match serde_json::from_str::<Value>(l) {
                Ok(Value::Object(m)) => m,
                other => panic!("not a JSON object: {l:?} ({other:?})"),
            })
            .collect()
    }

    fn is_timestamp(s: &str) -> bool {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        let base = b.len() >= 20
            && digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[7] == b'-'
            && digits(8..10)
            && b[10] == b'T'
            && digits(11..13)
            && b[13] == b':'
            && digits(14..16)
            && b[16] == b':'
            && digits(17..19)
            && s.ends_with('Z');
        base && (b.len() == 20 || (b.len() == 27 && b[19] == b'.' && digits(20..26)))
    }

    #[test]
    fn json_line_has_the_required_keys_in_order() {
        let lines = capture_json(&cfg(LogLevel::Info), || {
            tracing::info!(
                host = "127.0.0.1",
                port = 9000u16,
                secure = false,
                "🦈  ready"
            );
        });
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        let keys: Vec<&str> = l.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "event",
                "level",
                "logger",
                "timestamp",
                "pid",
                "host",
                "port",
                "secure"
            ]
        );
        assert_eq!(l["event"], "🦈  ready");
        assert_eq!(l["level"], "info");
        assert_eq!(l["logger"], "socketshark");
        assert_eq!(l["pid"], json!(std::process::id()));
        assert!(l["pid"].is_u64());
        assert!(
            is_timestamp(l["timestamp"].as_str().unwrap()),
            "{}",
            l["timestamp"]
        );
        assert_eq!(l["host"], "127.0.0.1");
        assert_eq!(l["port"], json!(9000));
        assert_eq!(l["secure"], json!(false));
    }

    #[test]
    fn json_level_names_and_trace_logger() {
        let lines = capture_json(&cfg(LogLevel::Trace), || {
            tracing::error!("e");
            tracing::warn!("w");
            tracing::info!("i");
            tracing::debug!("d");
            tracing::trace!(latency = 0.25, "pong");
        });
        let got: Vec<(&str, &str, &str)> = lines
            .iter()
            .map(|l| {
                (
                    l["event"].as_str().unwrap(),
                    l["level"].as_str().unwrap(),
                    l["logger"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("e", "error", "socketshark"),
                ("w", "warning", "socketshark"),
                ("i", "info", "socketshark"),
                ("d", "debug", "socketshark"),
                ("pong", "debug", "trace.socketshark"),
            ]
        );
        assert_eq!(lines[4]["latency"], json!(0.25));
    }

    #[test]
    fn custom_logger_names() {
        let c = LogConfig {
            level: LogLevel::Trace,
            logger_name: "shark".into(),
            trace_logger_prefix: "tr".into(),
            ..LogConfig::default()
        };
        let lines = capture_json(&c, || {
            tracing::info!("a");
            tracing::trace!("b");
        });
        assert_eq!(lines[0]["logger"], "shark");
        assert_eq!(lines[1]["logger"], "tr.shark");
    }

    #[test]
    fn json_fields_are_embedded_as_json() {
        let v = json!({"event": "subscribe", "subscription": "a.b", "n": [1, 2.5, null, true]});
        let frame = r#"{"status":"ok","x":"y"}"#.to_string();
        let null = Value::Null;
        let lines = capture_json(&cfg(LogLevel::Debug), || {
            tracing::debug!(session = 3, data = %v, "client event");
            tracing::debug!(session = 3, data = %frame, "client send");
            tracing::debug!(url = "http://h/", request = %json!({"a": 1}), response = %null,
                duration = 0.5, "http request");
            tracing::debug!(auth_info = %json!({"user": 1}), "auth info");
            tracing::warn!(data = %"not json", "received invalid json");
            tracing::warn!(data = "{\"a\":1}", error = %"{\"a\":1}", "json fields however recorded");
        });
        assert_eq!(lines[0]["session"], json!(3));
        assert_eq!(lines[0]["data"], v);
        assert_eq!(lines[1]["data"], json!({"status": "ok", "x": "y"}));
        assert_eq!(lines[2]["request"], json!({"a": 1}));
        assert_eq!(lines[2]["response"], Value::Null);
        assert_eq!(lines[2]["duration"], json!(0.5));
        assert_eq!(lines[3]["auth_info"], json!({"user": 1}));
        assert_eq!(lines[4]["data"], "not json");
        // A JSON field is embedded however it was recorded; other fields stay strings.
        assert_eq!(lines[5]["data"], json!({"a": 1}));
        assert_eq!(lines[5]["error"], "{\"a\":1}");
    }

    #[test]
    fn big_numbers_keep_their_digits() {
        let v: Value =
            serde_json::from_str(r#"{"big": 123456789012345678901234567890, "f": 1.10}"#).unwrap();
        let lines = capture(&cfg(LogLevel::Info), || {
            tracing::info!(data = %v, neg = -5i64, max = u64::MAX, wide = i128::MIN, "numbers");
        });
        assert!(
            lines[0].contains(r#""data":{"big":123456789012345678901234567890,"f":1.10}"#),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].contains(r#""neg":-5,"max":18446744073709551615"#),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].contains(r#""wide":-170141183460469231731687303715884105728"#),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn json_escaping_is_valid_and_keeps_unicode() {
        let nasty = "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} del \u{7f} shark 🦈 é \u{2028}";
        let raw = capture(&cfg(LogLevel::Info), || {
            tracing::info!(error = nasty, other = %nasty, "msg {}", nasty);
        });
        assert_eq!(raw.len(), 1, "{raw:?}");
        assert!(raw[0].contains('🦈') && raw[0].contains('é'), "{}", raw[0]);
        let l: serde_json::Map<String, Value> = serde_json::from_str(&raw[0]).unwrap();
        assert_eq!(l["event"], format!("msg {nasty}"));
        assert_eq!(l["error"], nasty);
        assert_eq!(l["other"], nasty);
    }

    #[test]
    fn clashing_field_names_do_not_duplicate_keys() {
        let lines = capture(&cfg(LogLevel::Info), || {
            tracing::info!(level = "x", pid = 1, event = "y", "clash");
        });
        let l: serde_json::Map<String, Value> = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(l["level"], "info");
        assert_eq!(l["_level"], "x");
        assert_eq!(l["_pid"], json!(1));
        assert_eq!(l["_event"], "y");
        assert_eq!(l["event"], "clash");
    }

    #[test]
    fn levels_filter_our_events() {
        let events = || {
            tracing::error!("e");
            tracing::warn!("w");
            tracing::info!("i");
            tracing::debug!("d");
            tracing::trace!("t");
        };
        let names = |level| -> Vec<String> {
            capture_json(&cfg(level), events)
                .iter()
                .map(|l| l["event"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(LogLevel::Error), ["e"]);
        assert_eq!(names(LogLevel::Warn), ["e", "w"]);
        assert_eq!(names(LogLevel::Info), ["e", "w", "i"]);
        assert_eq!(names(LogLevel::Debug), ["e", "w", "i", "d"]);
        assert_eq!(names(LogLevel::Trace), ["e", "w", "i", "d", "t"]);
    }

    #[test]
    fn other_crates_show_only_warnings_and_errors() {
        let events = || {
            tracing::error!(target: "hyper::proto", "he");
            tracing::warn!(target: "tungstenite", "tw");
            tracing::info!(target: "redis", "ri");
            tracing::debug!(target: "reqwest::connect", "rd");
            tracing::trace!(target: "hyper", "ht");
        };
        let lines = capture_json(&cfg(LogLevel::Trace), events);
        let got: Vec<(&str, &str, &str)> = lines
            .iter()
            .map(|l| {
                (
                    l["event"].as_str().unwrap(),
                    l["level"].as_str().unwrap(),
                    l["logger"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("he", "error", "hyper::proto"),
                ("tw", "warning", "tungstenite")
            ]
        );
        let lines = capture_json(&cfg(LogLevel::Error), events);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["event"], "he");
    }

    #[test]
    fn spans_are_ignored() {
        let lines = capture_json(&cfg(LogLevel::Trace), || {
            let span = tracing::info_span!("conn", session = 1);
            let _g = span.enter();
            tracing::info!("inside");
        });
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), 5);
    }

    #[test]
    fn auto_format_is_json_for_non_terminals() {
        assert_eq!(Style::resolve(LogFormat::Auto, false), Style::Json);
        assert_eq!(Style::resolve(LogFormat::Auto, true), Style::Text);
        assert_eq!(Style::resolve(LogFormat::Json, true), Style::Json);
        assert_eq!(Style::resolve(LogFormat::Text, false), Style::Text);
    }

    #[test]
    fn text_format() {
        let t = Utc.with_ymd_and_hms(2026, 11, 24, 21, 13, 15).unwrap()
            + chrono::Duration::microseconds(200_233);
        let line = |level, logger, msg, fields: &[(&str, Value)]| {
            String::from_utf8(format_line(Style::Text, level, logger, t, 42, msg, fields)).unwrap()
        };
        assert_eq!(
            line(
                &Level::INFO,
                "socketshark",
                "🦈  ready",
                &[
                    ("host", json!("127.0.0.1")),
                    ("port", json!(9000)),
                    ("secure", json!(false))
                ]
            ),
            "2026-11-24T21:13:15.200233Z INFO  socketshark: 🦈  ready host=127.0.0.1 port=9000 secure=false\n"
        );
        assert_eq!(
            line(
                &Level::TRACE,
                "trace.socketshark",
                "two\nlines",
                &[
                    ("error", json!("has space")),
                    ("empty", json!("")),
                    ("data", json!({"a": [1, "b"]}))
                ]
            ),
            "2026-11-24T21:13:15.200233Z TRACE trace.socketshark: two\\nlines error=\"has space\" empty=\"\" data={\"a\":[1,\"b\"]}\n"
        );
        let c = LogConfig {
            format: LogFormat::Text,
            ..LogConfig::default()
        };
        let lines = capture(&c, || {
            tracing::warn!(remote = "1.2.3.4:5", "dropped connection")
        });
        assert!(
            lines[0].ends_with(" WARN  socketshark: dropped connection remote=1.2.3.4:5"),
            "{}",
            lines[0]
        );
        assert!(is_timestamp(lines[0].split(' ').next().unwrap()));
    }

    // --- RUST_LOG -------------------------------------------------------------------------------

    #[test]
    fn rust_log_replaces_the_config_filter() {
        let (t, w) = select_filter(LogLevel::Info, Some("socketshark=debug,hyper=info"));
        assert!(w.is_none());
        assert!(t.would_enable("socketshark::session", &Level::DEBUG));
        assert!(!t.would_enable("socketshark::session", &Level::TRACE));
        assert!(t.would_enable("hyper::proto", &Level::INFO));
        assert!(!t.would_enable("redis", &Level::ERROR));

        let (t, w) = select_filter(LogLevel::Error, Some(" debug, "));
        assert!(w.is_none());
        assert!(t.would_enable("socketshark", &Level::DEBUG));
        assert!(t.would_enable("redis", &Level::DEBUG));
        assert!(!t.would_enable("socketshark", &Level::TRACE));

        let (t, _) = select_filter(LogLevel::Info, Some("trace"));
        assert!(t.would_enable("socketshark", &Level::TRACE));
    }

    #[test]
    fn empty_rust_log_means_the_config() {
        for v in [None, Some(""), Some("  "), Some(",")] {
            let (t, w) = select_filter(LogLevel::Info, v);
            assert!(w.is_none());
            assert!(t.would_enable("socketshark", &Level::INFO));
            assert!(!t.would_enable("socketshark", &Level::DEBUG));
            assert!(t.would_enable("hyper", &Level::WARN));
            assert!(!t.would_enable("hyper", &Level::INFO));
        }
    }

    #[test]
    fn invalid_rust_log_falls_back_with_a_warning() {
        let (t, w) = select_filter(LogLevel::Debug, Some("socketshark=loud"));
        assert!(w.is_some());
        assert!(t.would_enable("socketshark", &Level::DEBUG));
        assert!(!t.would_enable("socketshark", &Level::TRACE));
        assert!(!t.would_enable("hyper", &Level::INFO));

        let buf = Arc::new(Mutex::new(Vec::new()));
        let layer = LogLayer::new(&LogConfig::default(), Style::Json, t, BufSink(buf.clone()));
        layer.write_record(
            &Level::WARN,
            OWN_TARGET,
            "invalid RUST_LOG, using log.level",
            &[
                ("rust_log", json!("socketshark=loud")),
                ("error", json!(w.unwrap())),
            ],
        );
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let l: serde_json::Map<String, Value> = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(l["level"], "warning");
        assert_eq!(l["rust_log"], "socketshark=loud");
    }

    #[test]
    fn config_filter_levels() {
        let t = config_filter(LogLevel::Debug);
        assert!(t.would_enable("socketshark::hub", &Level::DEBUG));
        assert!(!t.would_enable("socketshark::hub", &Level::TRACE));
        assert!(t.would_enable("tokio", &Level::WARN));
        assert!(!t.would_enable("tokio", &Level::INFO));
        let t = config_filter(LogLevel::Error);
        assert!(!t.would_enable("tokio", &Level::WARN));
        assert!(!t.would_enable("socketshark", &Level::WARN));
    }

    #[test]
    fn init_twice_does_not_panic() {
        // Level ERROR, so stray events of other tests on threads without a scoped subscriber stay
        // quiet.
        let c = LogConfig {
            level: LogLevel::Error,
            format: LogFormat::Json,
            ..LogConfig::default()
        };
        init(&c);
        init(&c);
    }
}
