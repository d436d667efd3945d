//! HTTP callbacks to services (SPEC.md R-HTTP, R-RESP-6, R-HTTP-8).
//!
//! One pooled `reqwest::Client` per process. A callback makes up to `http.tries` attempts, each
//! with a total timeout of `http.timeout`; between attempts it waits `http.wait`, or what the
//! rate-limit reset header of a 429 answer says. The outcome is the answer object, the synthetic
//! `Service unavailable.` error when every attempt failed, or "unusable" for a 2xx/3xx JSON answer
//! that is not a JSON object (which the session turns into `Unhandled exception.`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use serde_json::{Map, Value};

use crate::compat::pyjson;
use crate::config::{CallbackUrl, HttpConfig};
use crate::metrics::Metrics;
use crate::protocol::ERR_SERVICE_UNAVAILABLE;

/// A log line about one callback, with its context: session, subscription, service, callback
/// and URL (credentials scrubbed), then the line's own fields and message.
macro_rules! callback_log {
    ($level:ident, $call:expr, $url:expr, $($rest:tt)*) => {
        tracing::$level!(
            session = $call.session,
            subscription = $call.subscription,
            service = $call.service,
            callback = $call.callback,
            url = $url.display.as_str(),
            $($rest)*
        )
    };
}

/// Longest wait after a 429 (R-HTTP-7).
const MAX_RATE_LIMIT_WAIT: f64 = 3600.0;

/// The outcome of a callback.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A JSON object: the service's answer, or `{"status": "error", "error": "Service
    /// unavailable."}` when all attempts failed.
    Answer(Map<String, Value>),
    /// A 2xx/3xx JSON answer whose body is empty, invalid, or not an object (R-RESP-6).
    Unusable(String),
}

impl Outcome {
    pub fn unavailable() -> Outcome {
        let mut m = Map::new();
        m.insert("status".into(), Value::String("error".into()));
        m.insert(
            "error".into(),
            Value::String(ERR_SERVICE_UNAVAILABLE.into()),
        );
        Outcome::Answer(m)
    }
}

/// What a callback is for: labels for metrics and context for log lines.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The service name; `""` for ticket validation.
    pub service: &'a str,
    /// `ticket`, `authorizer`, `before_subscribe`, `on_subscribe`, `on_message`,
    /// `before_unsubscribe`, `on_unsubscribe`, `on_authorization_change` or `on_heartbeat`.
    pub callback: &'static str,
    pub session: u64,
    pub subscription: Option<&'a str>,
}

/// One attempt's result.
enum Attempt {
    Done(Outcome),
    /// A failure; `Some(wait)` after a 429 (the next wait), `None` keeps the wait unchanged
    /// (connection errors and timeouts) — but any other HTTP answer resets it.
    Failed {
        rate_limit_wait: Option<f64>,
        http_answer: bool,
    },
}

pub struct ServiceClient {
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    timeout: Duration,
    tries: u32,
    wait: f64,
    reset_headers: Vec<String>,
}

impl ServiceClient {
    pub fn new(cfg: &HttpConfig, metrics: Arc<Metrics>) -> Result<ServiceClient, String> {
        let mut builder = reqwest::Client::builder()
            .gzip(true)
            .deflate(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("socketshark/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cfg.ssl_cafile {
            let pem = std::fs::read(path)
                .map_err(|e| format!("http.ssl_cafile: cannot read {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                format!(
                    "http.ssl_cafile: no usable certificate in {}: {e}",
                    path.display()
                )
            })?;
            if certs.is_empty() {
                return Err(format!(
                    "http.ssl_cafile: no certificate found in {}",
                    path.display()
                ));
            }
            builder = builder.tls_certs_only(certs);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(ServiceClient {
            client,
            metrics,
            timeout: cfg.timeout.duration(),
            tries: cfg.tries,
            wait: cfg.wait.0,
            reset_headers: cfg.reset_header_names(),
        })
    }

    /// The underlying HTTP client (pooled; for the JWKS fetches of `crate::jwt`).
    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// POSTs `body` to `url` with retries (R-HTTP-4..8).
    pub async fn call(&self, call: Call<'_>, url: &CallbackUrl, body: &Value) -> Outcome {
        let payload = crate::protocol::json_text(body);
        let started = Instant::now();
        let mut wait = self.wait;
        for attempt in 0..self.tries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs_f64(
                    wait.clamp(0.0, MAX_RATE_LIMIT_WAIT),
                ))
                .await;
            }
            match self.attempt(call, url, &payload).await {
                Attempt::Done(outcome) => return outcome,
                Attempt::Failed {
                    rate_limit_wait,
                    http_answer,
                } => {
                    if let Some(w) = rate_limit_wait {
                        wait = w;
                    } else if http_answer {
                        wait = self.wait;
                    }
                }
            }
        }
        if self.tries > 0 {
            callback_log!(
                warn,
                call,
                url,
                tries = self.tries,
                duration = started.elapsed().as_secs_f64(),
                "callback failed: service unavailable"
            );
        }
        Outcome::unavailable()
    }

    async fn attempt(&self, call: Call<'_>, url: &CallbackUrl, payload: &str) -> Attempt {
        let started = Instant::now();
        let mut req = self
            .client
            .post(url.url.clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "*/*")
            .body(payload.to_owned());
        if let Some((user, pass)) = &url.basic_auth {
            req = req.basic_auth(user, pass.as_ref());
        }
        let result = async {
            let resp = req.send().await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        }
        .await;
        let duration = started.elapsed().as_secs_f64();
        self.metrics
            .callback_duration(call.service, call.callback, duration);
        let (status, headers, body) = match result {
            Ok(r) => r,
            Err(e) => {
                if e.is_timeout() {
                    callback_log!(error, call, url, duration, "timeout in http_post");
                } else {
                    callback_log!(
                        error,
                        call,
                        url,
                        duration,
                        error = %scrubbed_error(&e),
                        "unhandled exception in http_post"
                    );
                }
                return Attempt::Failed {
                    rate_limit_wait: None,
                    http_answer: false,
                };
            }
        };
        if tracing::enabled!(tracing::Level::DEBUG) {
            // Never log the ticket (it is a credential).
            let request = if call.callback == "ticket" {
                r#"{"ticket":"*****"}"#
            } else {
                payload
            };
            tracing::debug!(
                session = call.session,
                url = url.display.as_str(),
                request,
                response = %String::from_utf8_lossy(&body),
                status = status.as_u16(),
                duration,
                "http request"
            );
        }
        if status.as_u16() == 429 {
            let wait = self.rate_limit_wait(&headers);
            callback_log!(
                warn,
                call,
                url,
                status = 429,
                wait,
                duration,
                "callback attempt failed"
            );
            return Attempt::Failed {
                rate_limit_wait: Some(wait),
                http_answer: true,
            };
        }
        if status.as_u16() >= 400 || !is_json_content_type(&headers) {
            callback_log!(
                warn,
                call,
                url,
                status = status.as_u16(),
                content_type = headers
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
                duration,
                "callback attempt failed"
            );
            return Attempt::Failed {
                rate_limit_wait: None,
                http_answer: true,
            };
        }
        let why = match pyjson::parse_bytes(&body) {
            Ok(Value::Object(m)) => return Attempt::Done(Outcome::Answer(m)),
            Ok(other) => format!("the answer is not a JSON object: {other}"),
            Err(_) if body.is_empty() => "the answer is empty".into(),
            Err(_) => "the answer is not valid JSON".into(),
        };
        // R-RESP-6: not retried; the caller decides what it means for the client.
        callback_log!(
            error,
            call,
            url,
            status = status.as_u16(),
            duration,
            error = why.as_str(),
            "unusable callback answer"
        );
        Attempt::Done(Outcome::Unusable(why))
    }

    /// The wait after a 429 answer (R-HTTP-7).
    fn rate_limit_wait(&self, headers: &HeaderMap) -> f64 {
        for name in &self.reset_headers {
            let Some(value) = headers.get(name.as_str()) else {
                continue;
            };
            let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
            if text.is_empty() {
                break;
            }
            return match pyjson::float_from_str(&text) {
                Some(v) if v.is_nan() || v < 0.0 => {
                    tracing::warn!(
                        name = name.as_str(),
                        value = text.as_str(),
                        "invalid rate reset value"
                    );
                    self.wait
                }
                Some(v) if v > MAX_RATE_LIMIT_WAIT => {
                    tracing::warn!(
                        name = name.as_str(),
                        value = text.as_str(),
                        "rate reset value too high"
                    );
                    MAX_RATE_LIMIT_WAIT
                }
                Some(v) => v,
                None => {
                    tracing::warn!(
                        name = name.as_str(),
                        value = text.as_str(),
                        "invalid rate reset value"
                    );
                    self.wait
                }
            };
        }
        tracing::warn!("got a 429 but no rate limit reset header found in response");
        self.wait
    }
}

/// `application/json` or `application/<x>+json`, any parameters (R-HTTP-6).
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// reqwest errors may print the URL; never let credentials into the log (R-LOG-6). Callback URLs
/// have their credentials removed before the request is built, so the error's URL is clean, but
/// scrub anyway.
fn scrubbed_error(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    crate::redact::scrub_url(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn client(names: &[&str]) -> ServiceClient {
        let cfg = HttpConfig {
            rate_limit_reset_header_names: names.iter().map(|s| s.to_string()).collect(),
            wait: crate::config::Secs(1.5),
            ..HttpConfig::default()
        };
        ServiceClient::new(&cfg, Arc::new(Metrics::new(false))).unwrap()
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        for (ct, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/vnd.api+json", true),
            ("text/json", false),
            ("text/plain", false),
            ("application/jsonx", false),
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_json_content_type(&h), ok, "{ct}");
        }
        assert!(!is_json_content_type(&HeaderMap::new()));
    }

    #[test]
    fn rate_limit_wait_rules() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let c = client(&[]);
        let mut h = HeaderMap::new();
        assert_eq!(c.rate_limit_wait(&h), 1.5, "no header: http.wait");
        h.insert("x-rate-limit-reset", HeaderValue::from_static("0.2"));
        assert_eq!(c.rate_limit_wait(&h), 0.2);
        h.insert("x-rate-limit-reset", HeaderValue::from_static("7200"));
        assert_eq!(c.rate_limit_wait(&h), 3600.0);
        h.insert("x-rate-limit-reset", HeaderValue::from_static("inf"));
        assert_eq!(c.rate_limit_wait(&h), 3600.0);
        h.insert("x-rate-limit-reset", HeaderValue::from_static("-1"));
        assert_eq!(c.rate_limit_wait(&h), 1.5);
        h.insert("x-rate-limit-reset", HeaderValue::from_static("nan"));
        assert_eq!(c.rate_limit_wait(&h), 1.5);
        h.insert("x-rate-limit-reset", HeaderValue::from_static("soon"));
        assert_eq!(c.rate_limit_wait(&h), 1.5);
        h.insert("x-rate-limit-reset", HeaderValue::from_static(""));
        assert_eq!(c.rate_limit_wait(&h), 1.5);

        let c = client(&["Retry-After", "X-Other"]);
        let mut h = HeaderMap::new();
        h.insert("x-rate-limit-reset", HeaderValue::from_static("0.2"));
        assert_eq!(
            c.rate_limit_wait(&h),
            1.5,
            "headers not in the list are ignored"
        );
        h.insert("x-other", HeaderValue::from_static("0.3"));
        assert_eq!(c.rate_limit_wait(&h), 0.3);
        h.insert("retry-after", HeaderValue::from_static("0.4"));
        assert_eq!(
            c.rate_limit_wait(&h),
            0.4,
            "first listed header present wins"
        );
    }
}
