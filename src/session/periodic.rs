//! Periodic reauthorization (R-REAUTH) and heartbeats (R-HB) of a subscription.

use super::*;

/// A subscription's periodic call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Periodic {
    /// Reauthorization (R-REAUTH).
    Renewal,
    /// `on_heartbeat` (R-HB).
    Heartbeat,
}

impl Periodic {
    fn slot(self, sub: &mut Sub) -> &mut Option<Next> {
        match self {
            Periodic::Renewal => &mut sub.rare().reauth,
            Periodic::Heartbeat => &mut sub.rare().heartbeat,
        }
    }
}

impl Session {
    /// Puts the subscription's next renewal or heartbeat on the app's timer wheel (R-REAUTH-2,
    /// R-HB-2): a renewal `authorization_renewal_period` minus a random part of the jitter
    /// after the previous one ended, a heartbeat a random part of the period after the
    /// subscription (`first`), then every period. When it is due, a task runs the call and
    /// schedules the next one unless the subscription is gone.
    pub(super) fn schedule_periodic(&self, sub: &mut Sub, name: &str, kind: Periodic, first: bool) {
        let svc = sub.service.clone();
        let delay = match kind {
            Periodic::Renewal => {
                let period = svc.authorization_renewal_period.map(|p| p.0).unwrap_or(0.0);
                let jitter = svc.authorization_renewal_jitter.0;
                if first {
                    tracing::trace!(
                        subscription = name,
                        period,
                        jitter,
                        "initializing periodic authorizer"
                    );
                }
                period - rand::random::<f64>() * jitter
            }
            Periodic::Heartbeat => {
                let period = svc.heartbeat_period.map(|p| p.0).unwrap_or(0.0);
                if first {
                    tracing::trace!(
                        subscription = name,
                        period,
                        "initializing periodic heartbeat task"
                    );
                    rand::random::<f64>() * period
                } else {
                    period
                }
            }
        };
        let due = Instant::now() + secs(delay.max(0.0));
        let weak = self.weak.clone();
        let name = name.to_owned();
        let instance = sub.instance;
        let id = self.app.timers.schedule(
            due,
            Box::new(move || {
                if let Some(session) = weak.upgrade() {
                    session.start_periodic(name, instance, kind, svc);
                }
            }),
        );
        // Replacing the task that schedules its successor: it is ending, nothing to stop.
        if let Some(Next::Due(old)) = kind.slot(sub).replace(Next::Due(id)) {
            self.app.timers.cancel(old);
        }
    }

    /// A renewal or heartbeat is due: its call runs in a task of its own, which the
    /// subscription holds (and aborts when it ends) until the call is over.
    fn start_periodic(&self, name: String, instance: u64, kind: Periodic, svc: Arc<ServiceConfig>) {
        let mut st = self.lock();
        let Some(sub) = st.subs.get_mut(name.as_str()) else {
            return;
        };
        if sub.instance != instance || !matches!(kind.slot(sub), Some(Next::Due(_))) {
            return;
        }
        let weak = self.weak.clone();
        // Spawned under the session's lock, and the handle stored before it is released: the
        // task cannot schedule its successor (which needs the lock) before this.
        let task = tokio::spawn(async move {
            let Some(session) = weak.upgrade() else {
                return;
            };
            let again = match kind {
                Periodic::Renewal => session.renew(&name, instance, &svc).await,
                Periodic::Heartbeat => session.heartbeat(&name, instance, &svc).await,
            };
            let mut st = session.lock();
            if let Some(sub) = st.subs.get_mut(name.as_str()) {
                if sub.instance == instance {
                    if again {
                        session.schedule_periodic(sub, &name, kind, false);
                    } else {
                        *kind.slot(sub) = None;
                    }
                }
            }
        });
        *kind.slot(sub) = Some(Next::Running(task.abort_handle()));
    }

    /// One renewal (R-REAUTH-3/4). Returns whether the loop goes on.
    pub(super) async fn renew(&self, name: &str, instance: u64, svc: &Arc<ServiceConfig>) -> bool {
        let Some((extra, authz)) = self.instance_snapshot(name, instance) else {
            return false;
        };
        let Some(url) = &svc.authorizer else {
            return true;
        };
        tracing::debug!(
            session = self.id,
            subscription = name,
            "verifying authorization"
        );
        let body = self.body(name, &extra.map, &authz, None);
        let answer = match self
            .call("authorizer", &svc.name, Some(name), url, &body)
            .await
        {
            Outcome::Unusable(why) => return self.periodic_unusable(name, url, &why),
            Outcome::Answer(a) => a,
        };
        if !proto::is_ok(&answer) {
            let text = proto::error_text(&answer, proto::ERR_UNAUTHORIZED);
            self.renewal_failed(name, instance, text).await;
            return false;
        }
        let fields = pick_fields(&answer, &svc.authorizer_fields);
        if !same_fields(&fields, &authz) {
            {
                let mut st = self.lock();
                match st.subs.get_mut(name) {
                    Some(s) if s.instance == instance => s.rare().authz = fields.clone().into(),
                    _ => return false,
                }
            }
            if let Some(url) = &svc.on_authorization_change {
                let body = self.body(name, &extra.map, &fields, None);
                match self
                    .call("on_authorization_change", &svc.name, Some(name), url, &body)
                    .await
                {
                    Outcome::Unusable(why) => return self.periodic_unusable(name, url, &why),
                    Outcome::Answer(a) if !proto::is_ok(&a) => {
                        let text = proto::error_text(&a, proto::ERR_UNHANDLED);
                        self.renewal_failed(name, instance, text).await;
                        return false;
                    }
                    Outcome::Answer(_) => {}
                }
            }
        }
        tracing::debug!(
            session = self.id,
            subscription = name,
            "authorization verified"
        );
        true
    }

    /// R-RESP-6 during a periodic task: the task stops, the subscription stays.
    pub(super) fn periodic_unusable(&self, name: &str, url: &CallbackUrl, why: &str) -> bool {
        tracing::error!(
            session = self.id,
            subscription = name,
            url = url.display.as_str(),
            error = why,
            "unhandled exception in periodic task"
        );
        false
    }

    /// Ends a subscription whose renewal failed (R-REAUTH-4, R-DEF-2): removal, then
    /// `before_unsubscribe`, `on_unsubscribe`, then the `unsubscribe` push.
    pub(super) async fn renewal_failed(&self, name: &str, instance: u64, text: Value) {
        tracing::info!(
            session = self.id,
            subscription = name,
            error = plain_text(&text).as_str(),
            "authorization expired"
        );
        // Counted before the removal, so that a session end that no longer sees the
        // subscription still waits for its callbacks.
        let _in_flight = RemovalInFlight::new(self);
        let Some(removed) = self.remove_sub(name, Some(instance), false) else {
            return;
        };
        let data = self.unsubscribe_callbacks(name, &removed).await;
        let mut m = Map::new();
        m.insert("event".into(), Value::String("unsubscribe".into()));
        m.insert("subscription".into(), Value::String(name.into()));
        if let Some(d) = data {
            m.insert("data".into(), d);
        }
        m.insert("error".into(), text);
        for (k, v) in &removed.extra.map {
            m.insert(k.clone(), v.clone());
        }
        self.push(crate::protocol::json_text(&Value::Object(m)).into());
    }

    pub(super) fn instance_snapshot(
        &self,
        name: &str,
        instance: u64,
    ) -> Option<(Arc<ExtraFields>, Fields)> {
        self.lock()
            .subs
            .get(name)
            .filter(|s| s.instance == instance)
            .map(|s| (s.extra().clone(), s.authz().clone()))
    }

    /// One heartbeat (R-HB-3). Returns whether the loop goes on.
    pub(super) async fn heartbeat(&self, name: &str, instance: u64, svc: &ServiceConfig) -> bool {
        let Some((extra, authz)) = self.instance_snapshot(name, instance) else {
            return false;
        };
        let Some((_, url)) = svc.heartbeat() else {
            return false;
        };
        tracing::debug!(session = self.id, subscription = name, "sending heartbeat");
        let body = self.body(name, &extra.map, &authz, None);
        match self
            .call("on_heartbeat", &svc.name, Some(name), url, &body)
            .await
        {
            Outcome::Unusable(why) => self.periodic_unusable(name, url, &why),
            Outcome::Answer(a) if !proto::is_ok(&a) => {
                let error = proto::error_text(&a, "");
                tracing::warn!(
                    session = self.id,
                    subscription = name,
                    error = plain_text(&error).as_str(),
                    "error sending heartbeat to service"
                );
                true
            }
            Outcome::Answer(_) => {
                tracing::debug!(session = self.id, subscription = name, "heartbeat sent");
                true
            }
        }
    }
}
