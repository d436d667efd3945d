//! Published messages routed to the session: the per-subscription pipeline (R-PUB-6,
//! R-FLT, R-OOO, R-THR) and the trailing sends of throttled messages.

use super::*;

impl Session {
    /// The per-session pipeline (R-PUB-6): active subscription → filter fields → order →
    /// throttle → send. `fanout` is `Some` for live deliveries, `None` for buffered ones
    /// (R-SUB-10), which carry no `received_at`/`queue_size`.
    pub(super) fn pipeline(
        &self,
        st: &mut State,
        msg: &Arc<Published>,
        fanout: Option<&mut Fanout<'_>>,
    ) {
        let State {
            subs,
            auth,
            deflate,
            ..
        } = st;
        let Some(sub) = subs.get_mut(msg.subscription.as_str()) else {
            return;
        };
        let metrics = &self.app.metrics;
        let filtered = |reason: &'static str| {
            metrics.messages_dropped(reason, 1);
            tracing::trace!(
                session = self.id,
                subscription = msg.subscription.as_str(),
                data = msg.data.as_str(),
                reason,
                "message filtered"
            );
        };
        if !filter_passes(&sub.service, &msg.fields, &sub.extra().map, auth) {
            return filtered("fields");
        }
        if let Some((key, order)) = &msg.options.order {
            if !sub.keyed().order.accept(key, *order) {
                return filtered("order");
            }
        }
        if let Some((key, period)) = &msg.options.throttle {
            match sub
                .keyed()
                .throttle
                .arrive(key, *period, Instant::now(), msg.clone())
            {
                Arrival::SendNow(_) => {}
                Arrival::Held => {
                    // The pending message it replaces will never be sent.
                    return filtered("throttle");
                }
                Arrival::Schedule(due) => {
                    tracing::trace!(
                        session = self.id,
                        subscription = msg.subscription.as_str(),
                        throttle_key = ?key,
                        delay = due.saturating_duration_since(Instant::now()).as_secs_f64(),
                        "throttled message scheduled"
                    );
                    let timer =
                        self.schedule_trailing_send(&msg.subscription, sub.instance, key, due);
                    if let Some(old) = sub.keyed().timers.insert(key.clone(), timer) {
                        self.app.timers.cancel(old);
                    }
                    return;
                }
            }
        }
        let (frame, compressed) = match fanout {
            Some(f) => f.frame_for(
                msg,
                sub.extra(),
                deflate.as_mut(),
                std::time::Instant::now(),
            ),
            None => {
                let sent_at = publish::now();
                let meta = Meta {
                    live: None,
                    sent_at: &sent_at,
                    with_published_at: true,
                };
                let frame = publish::frame(&msg.subscription, msg, sub.extra(), meta);
                (frame.into(), None)
            }
        };
        self.push_maybe_compressed(frame, compressed);
    }

    /// The trailing send of a throttled message, on the app's timer wheel (R-THR-4).
    pub(super) fn schedule_trailing_send(
        &self,
        name: &str,
        instance: u64,
        key: &HashKey,
        due: Instant,
    ) -> TimerId {
        let weak = self.weak.clone();
        let name = name.to_owned();
        let key = key.clone();
        self.app.timers.schedule(
            due,
            Box::new(move || {
                if let Some(session) = weak.upgrade() {
                    session.trailing_send(&name, instance, &key);
                }
            }),
        )
    }

    /// A trailing throttled send is due (R-THR-4).
    pub(super) fn trailing_send(&self, name: &str, instance: u64, key: &HashKey) {
        let mut st = self.lock();
        let Some(sub) = st.subs.get_mut(name).filter(|s| s.instance == instance) else {
            tracing::trace!(
                subscription = name,
                "throttled message subscription invalid"
            );
            return;
        };
        let keyed = sub.keyed();
        keyed.timers.remove(key);
        let Some(msg) = keyed.throttle.fire(key, Instant::now()) else {
            return;
        };
        tracing::trace!(
            session = self.id,
            subscription = name,
            "sending throttled message"
        );
        let sent_at = publish::now();
        let meta = Meta {
            live: None,
            sent_at: &sent_at,
            with_published_at: false,
        };
        let frame = publish::frame(name, &msg, sub.extra(), meta);
        drop(st);
        self.push(frame.into());
    }
}

impl Member for Session {
    fn id(&self) -> u64 {
        self.id
    }

    fn deliver(&self, channel: &str, msg: &Arc<Published>, fanout: &mut Fanout<'_>) {
        if self.is_closing() {
            self.dropped_pushes(1);
            return;
        }
        let mut st = self.lock();
        if let Some((name, buffer)) = st.acquiring.as_deref_mut() {
            if name == channel {
                buffer.push(msg.clone());
                return;
            }
        }
        self.pipeline(&mut st, msg, Some(fanout));
    }

    fn notice(&self, channel: &str, frame: &Utf8Bytes) {
        if !self.is_closing() && self.lock().subs.contains_key(channel) {
            self.push(frame.clone());
        }
    }
}
