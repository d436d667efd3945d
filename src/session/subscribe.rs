//! `subscribe` (R-SUB).

use super::*;

impl Session {
    /// `subscribe` (R-SUB-1..13).
    pub(super) async fn subscribe(&self, cmd: &Map<String, Value>) -> CmdResult {
        let (name, svc) = match self.check_name(Event::Subscribe, cmd)? {
            NameCheck::Reply(r) => {
                self.reply(r);
                return Ok(false);
            }
            NameCheck::Ok(n, s) => (n, s),
        };
        let extra = proto::capture_extra_fields(cmd, &svc.extra_fields);
        let (authenticated, existing) = {
            let st = self.lock();
            (
                !st.auth.is_empty(),
                st.subs.get(name).map(|s| s.extra().map.clone()),
            )
        };
        let ev = Event::Subscribe;
        if svc.require_authentication && !authenticated {
            let reply_extra = existing.as_ref().unwrap_or(&extra);
            return self.error_reply(
                ev,
                name,
                &proto::ERR_AUTH_REQUIRED.into(),
                reply_extra,
                None,
            );
        }
        if let Some(existing) = existing {
            return self.error_reply(
                ev,
                name,
                &proto::ERR_ALREADY_SUBSCRIBED.into(),
                &existing,
                None,
            );
        }
        let max = self.app.cfg().limits.max_subscriptions;
        if max > 0 && self.lock().subs.len() >= max {
            let text = proto::ERR_TOO_MANY_SUBSCRIPTIONS.into();
            return self.error_reply(ev, name, &text, &extra, None);
        }

        // R-SUB-5: authorize.
        let mut authz = Map::new();
        let authorizer = svc.authorizer.as_ref().filter(|_| !self.token_grants(name));
        if let Some(url) = authorizer {
            tracing::debug!(
                session = self.id,
                subscription = name,
                "verifying authorization"
            );
            let body = self.body(name, &extra, &Map::new(), None);
            match self
                .call("authorizer", &svc.name, Some(name), url, &body)
                .await
            {
                Outcome::Unusable(why) => return Err(unhandled(Some(name), Some(extra), why)),
                Outcome::Answer(a) if !proto::is_ok(&a) => {
                    let text = proto::error_text(&a, proto::ERR_UNAUTHORIZED);
                    return self.error_reply(ev, name, &text, &extra, proto::error_data(&a));
                }
                Outcome::Answer(a) => {
                    authz = pick_fields(&a, &svc.authorizer_fields);
                    tracing::debug!(
                        session = self.id,
                        subscription = name,
                        "authorization verified"
                    );
                }
            }
        }

        // R-SUB-6: hold the channel; buffer what arrives for it until the subscription is active.
        self.lock().acquiring = Some(Box::new((name.to_owned(), Vec::new())));
        let me: Arc<dyn Member> = self.strong();
        let (channel, ready) = self.app.hub.acquire(name, me);
        if let Err(e) = ready.await {
            self.abandon(name);
            if self.app.hub.brokers().iter().any(|b| b.reconnects()) {
                // The broker did not come back within the wait: the session stays open and the
                // client may try again (`on_loss = "reconnect"`).
                tracing::warn!(
                    session = self.id,
                    subscription = name,
                    error = e.as_str(),
                    "subscription failed: broker unavailable"
                );
                let text = Value::String(proto::ERR_SERVICE_UNAVAILABLE.into());
                return self.error_reply(ev, name, &text, &extra, None);
            }
            return Err(unhandled(
                Some(name),
                Some(extra),
                format!("broker subscription failed: {e}"),
            ));
        }
        // This session holds the channel, so it is the one just confirmed.
        self.app.hub.confirmed(name);

        // R-SUB-7: before_subscribe. A refusal leaves no trace (R-DEF-1).
        let answer = match &svc.before_subscribe {
            None => {
                let mut ok = Map::new();
                ok.insert("status".into(), Value::String("ok".into()));
                ok
            }
            Some(url) => {
                let body = self.body(name, &extra, &authz, None);
                match self
                    .call("before_subscribe", &svc.name, Some(name), url, &body)
                    .await
                {
                    Outcome::Unusable(why) => {
                        self.abandon(name);
                        return Err(unhandled(Some(name), Some(extra), why));
                    }
                    Outcome::Answer(a) if !proto::is_ok(&a) => {
                        self.abandon(name);
                        let text = proto::error_text(&a, proto::ERR_UNHANDLED);
                        return self.error_reply(ev, name, &text, &extra, proto::error_data(&a));
                    }
                    Outcome::Answer(a) => a,
                }
            }
        };

        // Issue 14: the channel's position and, when the client asks to recover, the messages
        // it missed. Read now that live messages for the name are being buffered.
        let recover = crate::history::recover_of(cmd);
        // `before_subscribe` may turn history off for this subscription (`"options":
        // {"history": false}`) or narrow its recovery window (`{"history": N}`).
        let sub_history = answer.get("options").and_then(|o| o.get("history"));
        let window = sub_history.and_then(Value::as_u64);
        let history_on = sub_history != Some(&Value::Bool(false));
        let history = match svc.history().filter(|_| history_on) {
            None => None,
            Some((_, ttl)) => {
                let since = recover.as_ref().and_then(|r| r.as_ref()).map(|r| r.offset);
                match self.app.hub.history(name, since, ttl).await {
                    Ok(h) => {
                        let top = publish::Position {
                            offset: h.top,
                            epoch: h.epoch.clone(),
                        };
                        self.app.hub.seed_position(name, top);
                        Some(h)
                    }
                    Err(e) => {
                        tracing::warn!(
                            session = self.id,
                            subscription = name,
                            error = e.as_str(),
                            "history unavailable"
                        );
                        None
                    }
                }
            }
        };

        // R-SUB-8..11: register, evaluate the answer like a published message, reply, deliver
        // the buffered messages, start the periodic tasks — all under the state lock, so the
        // reply precedes the buffered messages, which precede live ones.
        let extra = if extra.is_empty() {
            ExtraFields::none()
        } else {
            Arc::new(ExtraFields::new(extra))
        };
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            let buffered = st.acquiring.take().map(|a| a.1).unwrap_or_default();
            st.next_instance += 1;
            let instance = st.next_instance;
            let mut sub = Sub {
                instance,
                service: svc.clone(),
                rare: None,
            };
            if !extra.map.is_empty() {
                sub.rare().extra = Some(extra.clone());
            }
            if !authz.is_empty() {
                sub.rare().authz = authz.clone().into();
            }
            // Non-object options in the answer are treated as no options.
            let options = publish::parse_options(answer.get("options")).unwrap_or_default();
            if let Some((k, o)) = options.order {
                sub.keyed().order.seed(k, o);
            }
            if let Some((k, _)) = options.throttle {
                sub.keyed().throttle.seed(k, Instant::now());
            }
            let (follow, reply_fields) = match &history {
                Some(h) => {
                    let plan = crate::history::plan(
                        recover.as_ref().map(Option::as_ref),
                        h,
                        buffered,
                        window,
                    );
                    let fields = plan.reply_fields();
                    (plan.deliver, Some(fields))
                }
                None => {
                    // History could not be read: a recovery cannot be promised.
                    let fields = (svc.history().is_some() && recover.is_some()).then(|| {
                        let mut m = Map::new();
                        m.insert("recovered".into(), false.into());
                        m
                    });
                    (buffered, fields)
                }
            };
            if filter_passes(&svc, &answer, &extra.map, &st.auth) {
                let data = answer.get("data").filter(|d| !d.is_null());
                let reply_extra = match reply_fields {
                    None => std::borrow::Cow::Borrowed(&extra.map),
                    Some(fields) => {
                        let mut m = extra.map.clone();
                        m.extend(fields);
                        std::borrow::Cow::Owned(m)
                    }
                };
                self.reply(proto::reply(
                    "subscribe",
                    None,
                    Some(&reply_extra),
                    data,
                    Some(name),
                ));
            }
            if svc.authorization_renewal_period.is_some() {
                self.schedule_periodic(&mut sub, name, Periodic::Renewal, true);
            }
            if svc.heartbeat().is_some() {
                self.schedule_periodic(&mut sub, name, Periodic::Heartbeat, true);
            }
            st.subs.insert(channel, sub);
            // The list grows by several entries at a time; a session with few subscriptions
            // keeps exactly what it holds. Not for many: shrinking copies them all.
            if st.subs.len() <= 16 {
                st.subs.shrink_to_fit();
            }
            for msg in follow {
                self.pipeline(st, &msg, None);
            }
        }

        if svc.presence {
            self.presence_join(name, &svc, &extra.map).await;
        }

        // R-SUB-12: on_subscribe; its answer is ignored.
        if let Some(url) = &svc.on_subscribe {
            let body = self.body(name, &extra.map, &authz, None);
            if let Outcome::Unusable(why) = self
                .call("on_subscribe", &svc.name, Some(name), url, &body)
                .await
            {
                return Err(unhandled(Some(name), Some(extra.map.clone()), why));
            }
        }
        Ok(true)
    }

    /// Undoes R-SUB-6 after a refused subscribe (R-DEF-1).
    pub(super) fn abandon(&self, name: &str) {
        self.lock().acquiring = None;
        self.app.hub.release(name, self.id);
    }
}
