//! Test configurations: a JSON-shaped tree rendered as TOML, and the §21 base configuration.

use std::fmt;

use serde_json::{Map, Value, json};

use super::mock_service::MockService;
use super::redis_server::Redis;

/// A socketshark configuration held as a JSON object tree and rendered to TOML by
/// [`Config::toml`]. Edit it with dotted keys (`cfg.set("ws.ping.interval", 0.1)`) or explicit
/// paths (`cfg.set_path(&["services", "a.b"], json!({}))` for names containing dots).
/// `null` values are omitted from the TOML (so `set(k, Value::Null)` is like `remove(k)`).
/// Empty objects become empty tables (`[metrics.log]`).
///
/// Raw TOML can be appended with [`Config::append_raw`]; note that TOML forbids defining a
/// table twice, so raw text must only add tables that the tree does not contain — to change an
/// existing section use `set`/`merge`/`remove`.
#[derive(Clone, Debug, Default)]
pub struct Config {
    root: Map<String, Value>,
    raw: String,
}

impl Config {
    pub fn new() -> Config {
        Config::default()
    }

    /// From a JSON object, e.g. `Config::from_json(json!({"ws": {"port": 0}}))`.
    pub fn from_json(v: Value) -> Config {
        match v {
            Value::Object(root) => Config {
                root,
                raw: String::new(),
            },
            other => panic!("Config::from_json needs an object, got {other}"),
        }
    }

    /// The tree as JSON.
    pub fn as_json(&self) -> Value {
        Value::Object(self.root.clone())
    }

    /// Sets a value at a dotted key, creating intermediate tables.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) -> &mut Config {
        let path: Vec<&str> = key.split('.').collect();
        self.set_path(&path, value)
    }

    /// Sets a value at an explicit path (components may contain dots).
    pub fn set_path(&mut self, path: &[&str], value: impl Into<Value>) -> &mut Config {
        assert!(!path.is_empty(), "empty config path");
        let mut table = &mut self.root;
        for comp in &path[..path.len() - 1] {
            let entry = table.entry(comp.to_string()).or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            table = entry.as_object_mut().unwrap();
        }
        table.insert(path[path.len() - 1].to_string(), value.into());
        self
    }

    /// Builder form of [`Config::set`].
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Config {
        self.set(key, value);
        self
    }

    /// Deep-merges an object into the table at `key` (creating it); scalars overwrite.
    pub fn merge(&mut self, key: &str, value: Value) -> &mut Config {
        let path: Vec<&str> = key.split('.').collect();
        let existing = self.get_path(&path).cloned().unwrap_or(json!({}));
        let mut merged = existing;
        deep_merge(&mut merged, value);
        self.set_path(&path, merged)
    }

    /// Removes the value at a dotted key (no-op if absent).
    pub fn remove(&mut self, key: &str) -> &mut Config {
        let path: Vec<&str> = key.split('.').collect();
        self.remove_path(&path)
    }

    /// Removes the value at an explicit path.
    pub fn remove_path(&mut self, path: &[&str]) -> &mut Config {
        let mut table = &mut self.root;
        for comp in &path[..path.len() - 1] {
            match table.get_mut(*comp).and_then(Value::as_object_mut) {
                Some(t) => table = t,
                None => return self,
            }
        }
        table.shift_remove(path[path.len() - 1]);
        self
    }

    /// Builder form of [`Config::remove`].
    pub fn without(mut self, key: &str) -> Config {
        self.remove(key);
        self
    }

    /// The value at a dotted key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let path: Vec<&str> = key.split('.').collect();
        self.get_path(&path)
    }

    pub fn get_path(&self, path: &[&str]) -> Option<&Value> {
        let mut cur = self.root.get(path[0])?;
        for comp in &path[1..] {
            cur = cur.as_object()?.get(*comp)?;
        }
        Some(cur)
    }

    /// Appends raw TOML after the rendered tree (see the type's note on duplicate tables).
    pub fn append_raw(&mut self, toml: &str) -> &mut Config {
        self.raw.push('\n');
        self.raw.push_str(toml);
        self.raw.push('\n');
        self
    }

    /// True if `[metrics.prometheus]` is configured (tree or raw text).
    pub fn has_prometheus(&self) -> bool {
        self.get("metrics.prometheus").is_some_and(|v| !v.is_null())
            || self.raw.contains("prometheus")
    }

    /// Renders the configuration as TOML.
    pub fn toml(&self) -> String {
        let mut out = String::new();
        write_table(&mut out, &[], &self.root, true);
        out.push_str(&self.raw);
        out
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.toml())
    }
}

fn deep_merge(dst: &mut Value, src: Value) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                match d.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        deep_merge(existing, v)
                    }
                    _ => {
                        d.insert(k, v);
                    }
                }
            }
        }
        (d, s) => *d = s,
    }
}

/// A TOML key: bare if possible, else a quoted basic string.
pub fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    {
        k.to_string()
    } else {
        toml_string(k)
    }
}

/// A TOML basic string literal.
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML inline value (arrays and objects inline). Panics on `null` inside arrays/objects.
pub fn toml_value(v: &Value) -> String {
    match v {
        Value::Null => panic!("TOML has no null (inside an array or inline table)"),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            let s = n.to_string();
            match s.as_str() {
                "inf" | "+inf" | "Infinity" => "inf".into(),
                "-inf" | "-Infinity" => "-inf".into(),
                "NaN" | "nan" => "nan".into(),
                _ => s,
            }
        }
        Value::String(s) => toml_string(s),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(toml_value).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{} = {}", toml_key(k), toml_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn write_table(out: &mut String, path: &[String], table: &Map<String, Value>, root: bool) {
    if !root {
        let header = path
            .iter()
            .map(|k| toml_key(k))
            .collect::<Vec<_>>()
            .join(".");
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("[{header}]\n"));
    }
    for (k, v) in table {
        if v.is_null() || v.is_object() {
            continue;
        }
        out.push_str(&format!("{} = {}\n", toml_key(k), toml_value(v)));
    }
    for (k, v) in table {
        if let Value::Object(sub) = v {
            let mut p = path.to_vec();
            p.push(k.clone());
            write_table(out, &p, sub, false);
        }
    }
}

/// The §21 test configuration, pointing at `redis` and at `svc`:
///
/// * `[ws]` host 127.0.0.1, port 0, `ping.interval = 0`; `[log]` level DEBUG, format json;
/// * `[http]` tries 1, wait 0.1, timeout 5; `[redis]` 127.0.0.1:<redis port>;
/// * `[authentication.ticket]` validation_url = `svc.url("/auth")`, auth_fields = [session_id]
///   (note: the mock answers `{"status": "ok"}` by default, which lacks `session_id` — set
///   `svc.set("/auth", Reply::auth_ok("sess_123"))`, as [`super::TestEnv`] does);
/// * services `empty`, `simple`, `simple_auth`, `simple_before_subscribe`, `authorizer`,
///   `periodic_authorizer`, `periodic_authorizer_with_fields`, `periodic_heartbeat`, `complex`,
///   `ws_test`; every callback URL is `svc.url("/<service>/<callback>")`, e.g.
///   `/complex/before_subscribe`, `/authorizer/authorizer`, `/periodic_heartbeat/on_heartbeat`.
///
/// `complex` has every callback except `on_heartbeat` (no renewal period, so
/// `on_authorization_change` is never called).
pub fn base_config(redis: &Redis, svc: &MockService) -> Config {
    base_config_for(redis.port(), &svc.base_url())
}

/// [`base_config`] from a Redis port and a service base URL (`http://127.0.0.1:PORT`).
pub fn base_config_for(redis_port: u16, svc_base: &str) -> Config {
    let u = |service: &str, cb: &str| format!("{svc_base}/{service}/{cb}");
    Config::from_json(json!({
        "ws": {"host": "127.0.0.1", "port": 0, "ping": {"interval": 0}},
        "log": {"level": "DEBUG", "format": "json"},
        "http": {"tries": 1, "wait": 0.1, "timeout": 5},
        "redis": {"host": "127.0.0.1", "port": redis_port},
        "authentication": {"ticket": {
            "validation_url": format!("{svc_base}/auth"),
            "auth_fields": ["session_id"],
        }},
        "services": {
            "empty": {},
            "simple": {
                "require_authentication": false,
                "extra_fields": ["extra"],
                "filter_fields": ["session_id", "extra"],
            },
            "simple_auth": {
                "filter_fields": ["session_id"],
            },
            "simple_before_subscribe": {
                "require_authentication": false,
                "before_subscribe": u("simple_before_subscribe", "before_subscribe"),
            },
            "authorizer": {
                "require_authentication": true,
                "authorizer": u("authorizer", "authorizer"),
                "extra_fields": ["extra"],
            },
            "periodic_authorizer": {
                "require_authentication": true,
                "authorizer": u("periodic_authorizer", "authorizer"),
                "authorization_renewal_period": 0.2,
            },
            "periodic_authorizer_with_fields": {
                "require_authentication": true,
                "authorizer": u("periodic_authorizer_with_fields", "authorizer"),
                "authorizer_fields": ["capabilities"],
                "authorization_renewal_period": 0.2,
                "on_subscribe": u("periodic_authorizer_with_fields", "on_subscribe"),
                "on_authorization_change": u("periodic_authorizer_with_fields", "on_authorization_change"),
            },
            "periodic_heartbeat": {
                "require_authentication": false,
                "heartbeat_period": 0.2,
                "on_heartbeat": u("periodic_heartbeat", "on_heartbeat"),
            },
            "complex": {
                "require_authentication": true,
                "authorizer": u("complex", "authorizer"),
                "authorizer_fields": ["capabilities"],
                "extra_fields": ["extra"],
                "before_subscribe": u("complex", "before_subscribe"),
                "on_subscribe": u("complex", "on_subscribe"),
                "on_message": u("complex", "on_message"),
                "before_unsubscribe": u("complex", "before_unsubscribe"),
                "on_unsubscribe": u("complex", "on_unsubscribe"),
                "on_authorization_change": u("complex", "on_authorization_change"),
            },
            "ws_test": {
                "require_authentication": false,
                "on_unsubscribe": u("ws_test", "on_unsubscribe"),
            },
        },
    }))
}
