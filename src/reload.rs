//! Hot reload (issue 17): `SIGHUP` or `POST /admin/reload` reads the configuration file again.
//!
//! The new file is parsed and validated exactly as at startup (and as `--check-config`); an
//! invalid one is refused with that message and nothing changes. Otherwise services (callback
//! URLs, fields, periods, history, presence), limits, `ws.ping` and `ws.write_coalesce` (for new
//! connections), the ticket validation URL and the log level and format apply at once, without
//! closing a connection: each session's subscriptions switch to their service's new settings,
//! and a subscription whose service is gone ends as after a failed renewal (the client gets
//! `{"event": "unsubscribe", "subscription": ..., "error": "Unauthorized."}`). Settings that
//! need a restart (listeners, brokers, the HTTP client, compression, JWT keys) keep their old
//! values and are reported on one log line.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::app::App;
use crate::config::Config;

/// What a reload did.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    pub services_added: Vec<String>,
    pub services_removed: Vec<String>,
    pub services_changed: Vec<String>,
    /// Sections that differ but need a restart: their old values stay.
    pub restart_needed: Vec<&'static str>,
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "status": "ok",
            "services_added": self.services_added,
            "services_removed": self.services_removed,
            "services_changed": self.services_changed,
            "restart_needed": self.restart_needed,
        })
    }
}

/// Rereads the configuration file and applies it. `Err` = refused (nothing changed).
pub fn reload(app: &App) -> Result<Report, String> {
    let Some(path) = &app.config_path else {
        let e = "no configuration file to reload (started without -c)".to_owned();
        tracing::error!(error = e.as_str(), "configuration reload refused");
        return Err(e);
    };
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = e.0.as_str(), "configuration reload refused");
            return Err(e.0);
        }
    };
    let old = app.cfg();
    let (effective, report) = merge(&old, new);
    let effective = Arc::new(effective);
    app.set_cfg(effective.clone());
    crate::logging::reconfigure(&effective.log);
    for s in app.sessions() {
        s.reconfigure(&effective);
    }
    if !report.restart_needed.is_empty() {
        tracing::warn!(
            settings = report.restart_needed.join(", ").as_str(),
            "configuration reload: these settings need a restart and keep their old values"
        );
    }
    tracing::info!(
        added = report.services_added.join(", ").as_str(),
        removed = report.services_removed.join(", ").as_str(),
        changed = report.services_changed.join(", ").as_str(),
        "configuration reloaded"
    );
    Ok(report)
}

/// The configuration to run with: `new`, except the sections that need a restart, which keep
/// their `old` values; and what differs.
pub fn merge(old: &Config, mut new: Config) -> (Config, Report) {
    let mut report = Report::default();
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    macro_rules! keep {
        ($($field:ident).+, $name:expr) => {
            if differs(&old.$($field).+, &new.$($field).+) {
                report.restart_needed.push($name);
                new.$($field).+ = old.$($field).+.clone();
            }
        };
    }
    keep!(broker, "broker");
    keep!(api, "api");
    keep!(ws.host, "ws.host");
    keep!(ws.port, "ws.port");
    keep!(ws.ssl, "ws.ssl");
    keep!(ws.compression, "ws.compression");
    keep!(metrics, "metrics");
    keep!(http, "http");
    keep!(redis, "redis");
    keep!(redis_alt, "redis_alt");
    keep!(authentication.jwt, "authentication.jwt");
    for (name, svc) in &new.services {
        match old.services.get(name) {
            None => report.services_added.push(name.clone()),
            Some(o) if differs(o, svc) => report.services_changed.push(name.clone()),
            Some(_) => {}
        }
    }
    for name in old.services.keys() {
        if !new.services.contains_key(name) {
            report.services_removed.push(name.clone());
        }
    }
    new.embedded = old.embedded;
    (new, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_settings_keep_their_old_values() {
        let old =
            Config::parse("[ws]\nport = 9000\n[redis]\nport = 6379\n[services.a]\n[services.b]\n")
                .unwrap();
        let new = Config::parse(
            "[ws]\nport = 9100\n[redis]\nport = 6380\n[limits]\nmax_subscriptions = 5\n\
             [services.a]\nrequire_authentication = false\n[services.c]\n",
        )
        .unwrap();
        let (eff, r) = merge(&old, new);
        assert_eq!(r.restart_needed, vec!["ws.port", "redis"]);
        assert_eq!(eff.ws.port, old.ws.port);
        assert_eq!(eff.redis.port, old.redis.port);
        assert_eq!(eff.limits.max_subscriptions, 5);
        assert_eq!(r.services_added, vec!["c"]);
        assert_eq!(r.services_removed, vec!["b"]);
        assert_eq!(r.services_changed, vec!["a"]);
        assert!(!eff.services["a"].require_authentication);
        let (_, same) = merge(&old, old.clone());
        assert_eq!(same, Report::default());
    }
}
