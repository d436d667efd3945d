//! The HTTP publish API: `POST /publish` (off unless `[api]` is configured).
//!
//! The body is exactly what a service would PUBLISH to Redis — a message object
//! (`subscription`, `data`, optional `options`, `published_at` and filter fields) — or a JSON
//! array of them (published in order). Each message goes to the primary broker on the channel
//! `channel_prefix + subscription`: with Redis it is a PUBLISH, so every node delivers it; with
//! the embedded broker it is delivered by this process.
//!
//! Answers: `200 {"status": "ok", "published": N}`; `400` for a body that is not a message or
//! an array of messages (the error names the message and the problem); `401` without the right
//! key; `413` for a body over `api.max_body_size`; `503` when the broker refuses (with
//! `published`: how many messages of the batch went out before it did).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::RawQuery;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::app::App;
use crate::compat::pyjson;
use crate::config::ApiConfig;
use crate::publish::{Published, Rejected};

#[derive(Clone)]
struct ApiState {
    app: Arc<App>,
    key: Option<Arc<str>>,
    started: std::time::Instant,
}

pub fn router(app: Arc<App>, cfg: &ApiConfig) -> Router {
    let key = cfg
        .api_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .map(Arc::from);
    Router::new()
        .route(
            "/publish",
            post(publish)
                .fallback(|| async { error(StatusCode::METHOD_NOT_ALLOWED, "Use POST /publish.") }),
        )
        .route("/presence", get(presence))
        .route("/admin/reload", post(admin_reload))
        .route("/status.json", get(status_json))
        .route("/status", get(status_page))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "Not found: use POST /publish.") })
        .layer(DefaultBodyLimit::max(cfg.max_body_size))
        .with_state(ApiState {
            app,
            key,
            started: std::time::Instant::now(),
        })
}

/// Serves the API on an already-bound listener until the task is dropped.
pub async fn serve(app: Arc<App>, cfg: ApiConfig, listener: tokio::net::TcpListener) {
    if let Err(e) = axum::serve(listener, router(app, &cfg)).await {
        tracing::error!(error = %e, "publish API failed");
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, text: &str) -> Response {
    json_response(status, json!({"status": "error", "error": text}))
}

/// Compares in time independent of where the strings differ.
fn same_key(given: &[u8], key: &[u8]) -> bool {
    given.len() == key.len() && given.iter().zip(key).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

fn authorized(headers: &HeaderMap, key: &str) -> bool {
    // The scheme is case-insensitive (RFC 7235).
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim());
    let api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    [bearer, api_key]
        .into_iter()
        .flatten()
        .any(|given| same_key(given.as_bytes(), key.as_bytes()))
}

/// Checks one message the way the delivery path will read it.
fn check(value: &Value, index: Option<usize>) -> Result<String, String> {
    let at = |what: &str| match index {
        Some(i) => format!("message {i}: {what}"),
        None => what.to_owned(),
    };
    let Value::Object(obj) = value else {
        return Err(at("a message must be a JSON object"));
    };
    match obj.get("subscription") {
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(_) => return Err(at("`subscription` must be a non-empty string")),
        None => return Err(at("`subscription` is required")),
    }
    if !obj.contains_key("data") {
        return Err(at("`data` is required"));
    }
    let payload = value.to_string();
    match Published::decode(payload.as_bytes()) {
        Ok(_) => Ok(payload),
        Err(Rejected::Dropped(why)) => Err(at(why)),
        Err(Rejected::NotJson | Rejected::InvalidEvent(_)) => Err(at("not a valid message")),
    }
}

async fn publish(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Some(denied) = check_key(&st, &headers, None) {
        return denied;
    }
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The body is larger than api.max_body_size.",
            );
        }
        Err(e) => return error(e.status(), &e.body_text()),
    };
    let value = match pyjson::parse_bytes(&body) {
        Ok(v) => v,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "The body must be JSON: a message object or an array of them.",
            );
        }
    };
    let payloads: Result<Vec<(String, String)>, String> = match &value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| check(v, Some(i)).map(|p| (subscription_of(v), p)))
            .collect(),
        v => check(v, None).map(|p| vec![(subscription_of(v), p)]),
    };
    let payloads = match payloads {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let Some(broker) = st.app.hub.brokers().first() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "No broker.");
    };
    let n = payloads.len();
    let mut offsets = Vec::new();
    for (published, (subscription, payload)) in payloads.into_iter().enumerate() {
        let channel = format!("{}{}", broker.prefix(), subscription);
        let history = st
            .app
            .cfg()
            .service_for(&subscription)
            .and_then(|svc| svc.history());
        let sent = match history {
            // The broker gives the message its offset in the channel's history (issue 14).
            Some((size, ttl)) => broker
                .publish_with_history(&channel, payload.into_bytes(), size, ttl)
                .await
                .map(Some),
            None => broker
                .publish(&channel, payload.into_bytes())
                .await
                .map(|()| None),
        };
        offsets.push(sent.as_ref().ok().copied().flatten());
        if let Err(e) = sent {
            tracing::error!(channel, published, error = e.as_str(), "publish failed");
            // Messages before this one went out: say how many, so a client can resume.
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({
                    "status": "error",
                    "error": format!("Publishing failed: {e}"),
                    "published": published,
                }),
            );
        }
    }
    if offsets.iter().all(Option::is_none) {
        return json_response(StatusCode::OK, json!({"status": "ok", "published": n}));
    }
    // With history: each message's offset (`null` for one without history), in order.
    json_response(
        StatusCode::OK,
        json!({"status": "ok", "published": n, "offsets": offsets}),
    )
}

/// `GET /status.json` (issue 15): see `crate::status`.
async fn status_json(State(st): State<ApiState>, headers: HeaderMap, query: RawQuery) -> Response {
    if let Some(denied) = check_key(&st, &headers, query.0.as_deref()) {
        return denied;
    }
    json_response(StatusCode::OK, crate::status::status(&st.app, st.started))
}

/// `GET /status`: the page that shows `status.json` (with the key as `?key=` when one is set).
async fn status_page(State(st): State<ApiState>, headers: HeaderMap, query: RawQuery) -> Response {
    if let Some(denied) = check_key(&st, &headers, query.0.as_deref()) {
        return denied;
    }
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        crate::status::PAGE,
    )
        .into_response()
}

/// `401` unless the request carries the API key (header, or `?key=` for the status page that a
/// browser opens), when one is set.
fn check_key(st: &ApiState, headers: &HeaderMap, query: Option<&str>) -> Option<Response> {
    let key = st.key.as_ref()?;
    let in_query = query.is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .any(|(k, v)| k == "key" && same_key(v.as_bytes(), key.as_bytes()))
    });
    if in_query || authorized(headers, key) {
        return None;
    }
    Some(error(
        StatusCode::UNAUTHORIZED,
        "Invalid API key: send it as `Authorization: Bearer <key>`.",
    ))
}

/// `POST /admin/reload` (issue 17): reloads the configuration file like SIGHUP. `200` with what
/// changed and what needs a restart, `400` with the configuration error (nothing changed).
async fn admin_reload(State(st): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(denied) = check_key(&st, &headers, None) {
        return denied;
    }
    tracing::info!("reload requested");
    match crate::reload::reload(&st.app) {
        Ok(report) => json_response(StatusCode::OK, report.to_json()),
        Err(e) => error(StatusCode::BAD_REQUEST, &e),
    }
}

/// `GET /presence?subscription=NAME` (issue 14): the members of a channel whose service has
/// `presence`, across nodes.
async fn presence(State(st): State<ApiState>, headers: HeaderMap, query: RawQuery) -> Response {
    if let Some(denied) = check_key(&st, &headers, None) {
        return denied;
    }
    let name = query.0.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "subscription")
            .map(|(_, v)| v.into_owned())
    });
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "`subscription` is required.");
    };
    let svc = st.app.cfg().service_for(&name);
    if !svc.is_some_and(|s| s.presence) {
        return error(
            StatusCode::BAD_REQUEST,
            "Presence is not enabled for this subscription's service.",
        );
    }
    let Some(broker) = st.app.hub.brokers().first() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "No broker.");
    };
    match broker
        .presence(&format!("{}{}", broker.prefix(), name))
        .await
    {
        Ok(infos) => json_response(
            StatusCode::OK,
            json!({"status": "ok", "subscription": name, "members": crate::presence::members(&infos)}),
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("Presence unavailable: {e}"),
        ),
    }
}

fn subscription_of(v: &Value) -> String {
    v.get("subscription")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "k"));
        h.insert(header::AUTHORIZATION, "Bearer k".parse().unwrap());
        assert!(authorized(&h, "k"));
        assert!(!authorized(&h, "kk"));
        h.insert(header::AUTHORIZATION, "bearer k".parse().unwrap());
        assert!(authorized(&h, "k"));
        h.insert(header::AUTHORIZATION, "Basic k".parse().unwrap());
        assert!(!authorized(&h, "k"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "k".parse().unwrap());
        assert!(authorized(&h, "k"));
    }

    #[test]
    fn message_checks() {
        assert!(check(&json!({"subscription": "a.b", "data": null}), None).is_ok());
        assert_eq!(
            check(&json!({"data": 1}), Some(2)).unwrap_err(),
            "message 2: `subscription` is required"
        );
        assert!(check(&json!({"subscription": 5, "data": 1}), None).is_err());
        assert!(check(&json!({"subscription": "a.b"}), None).is_err());
        assert!(check(&json!([1]), None).is_err());
        assert!(
            check(
                &json!({"subscription": "a.b", "data": 1, "options": null}),
                None
            )
            .unwrap_err()
            .contains("options")
        );
    }
}
