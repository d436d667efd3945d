//! Periodic reauthorization (R-REAUTH) and heartbeats (R-HB) of a subscription.

use super::*;

impl Session {
    pub(super) fn spawn_reauth(
        &self,
        name: &str,
        instance: u64,
        svc: &Arc<ServiceConfig>,
    ) -> AbortHandle {
        let weak = self.weak.clone();
        let name = name.to_owned();
        let svc = svc.clone();
        let period = svc.authorization_renewal_period.map(|p| p.0).unwrap_or(0.0);
        let jitter = svc.authorization_renewal_jitter.0;
        tracing::trace!(
            subscription = name.as_str(),
            period,
            jitter,
            "initializing periodic authorizer"
        );
        tokio::spawn(async move {
            loop {
                let sleep = period - rand::random::<f64>() * jitter;
                if sleep > 0.0 {
                    tokio::time::sleep(secs(sleep)).await;
                }
                let Some(session) = weak.upgrade() else {
                    return;
                };
                if !session.renew(&name, instance, &svc).await {
                    return;
                }
            }
        })
        .abort_handle()
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
                    Some(s) if s.instance == instance => s.authz = fields.clone().into(),
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
        self.push(Value::Object(m).to_string().into());
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
            .map(|s| (s.extra.clone(), s.authz.clone()))
    }

    pub(super) fn spawn_heartbeat(
        &self,
        name: &str,
        instance: u64,
        svc: &Arc<ServiceConfig>,
    ) -> AbortHandle {
        let weak = self.weak.clone();
        let name = name.to_owned();
        let svc = svc.clone();
        let period = svc.heartbeat_period.map(|p| p.0).unwrap_or(0.0);
        tracing::trace!(
            subscription = name.as_str(),
            period,
            "initializing periodic heartbeat task"
        );
        tokio::spawn(async move {
            tokio::time::sleep(secs(rand::random::<f64>() * period)).await;
            loop {
                let Some(session) = weak.upgrade() else {
                    return;
                };
                if !session.heartbeat(&name, instance, &svc).await {
                    return;
                }
                drop(session);
                tokio::time::sleep(secs(period)).await;
            }
        })
        .abort_handle()
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
