//! Presence (issue 14, not in the reference): a subscription to a service with `presence`
//! registers the session on the channel (and announces it with `join_leave`); its removal,
//! whatever the cause, unregisters it. The `presence` and `presence_stats` commands read the
//! channel's members across nodes. See [`crate::presence`].

use super::*;
use crate::presence;

impl Session {
    fn presence_channel(&self, name: &str) -> Option<(Arc<dyn crate::broker::Broker>, String)> {
        let b = self.app.hub.brokers().first()?.clone();
        let channel = format!("{}{}", b.prefix(), name);
        Some((b, channel))
    }

    /// Registers this subscription as a member of the channel (after the subscribe reply).
    pub(super) async fn presence_join(
        &self,
        name: &str,
        svc: &ServiceConfig,
        extra: &Map<String, Value>,
    ) {
        let Some((b, channel)) = self.presence_channel(name) else {
            return;
        };
        let id = presence::member_id(&self.app.node, self.id);
        let auth = self.lock().auth.clone();
        let info = presence::info(&id, &auth, extra);
        self.app.presence.add(name, &id, info.clone());
        let ttl = svc.presence_ttl.duration();
        if let Err(e) = b
            .presence_add(&channel, vec![(id, info.clone())], ttl)
            .await
        {
            tracing::warn!(
                session = self.id,
                subscription = name,
                error = e.as_str(),
                "presence update failed"
            );
        }
        if svc.join_leave {
            let payload = presence::event_payload(name, "join", &info);
            if let Err(e) = b.publish(&channel, payload).await {
                tracing::warn!(
                    session = self.id,
                    subscription = name,
                    error = e.as_str(),
                    "presence join not published"
                );
            }
        }
    }

    /// Unregisters a removed subscription (in the background: removals are synchronous).
    pub(super) fn presence_leave(&self, name: &str, svc: &ServiceConfig) {
        let Some((b, channel)) = self.presence_channel(name) else {
            return;
        };
        let id = presence::member_id(&self.app.node, self.id);
        self.app.presence.remove(name, &id);
        let leave = svc.join_leave.then(|| {
            let auth = self.lock().auth.clone();
            presence::event_payload(name, "leave", &presence::info(&id, &auth, &Map::new()))
        });
        let session = self.id;
        let name = name.to_owned();
        tokio::spawn(async move {
            if let Err(e) = b.presence_remove(&channel, &id).await {
                tracing::warn!(
                    session,
                    subscription = name.as_str(),
                    error = e.as_str(),
                    "presence update failed"
                );
            }
            if let Some(payload) = leave {
                let _ = b.publish(&channel, payload).await;
            }
        });
    }

    /// `presence` and `presence_stats`: the channel's members, or their counts.
    pub(super) async fn presence(&self, cmd: &Map<String, Value>, stats: bool) -> CmdResult {
        let ev = if stats {
            Event::PresenceStats
        } else {
            Event::Presence
        };
        let (name, svc, extra) = match self.active_subscription(ev, cmd) {
            Ok(active) => active,
            Err(answered) => return answered,
        };
        if !svc.presence {
            let text = proto::ERR_NO_PRESENCE.into();
            return self.error_reply(ev, name, &text, &extra.map, None);
        }
        let read = match self.presence_channel(name) {
            Some((b, channel)) => b.presence(&channel).await,
            None => Err("no broker".to_owned()),
        };
        let infos = match read {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(
                    session = self.id,
                    subscription = name,
                    error = e.as_str(),
                    "presence unavailable"
                );
                let text = proto::ERR_SERVICE_UNAVAILABLE.into();
                return self.error_reply(ev, name, &text, &extra.map, None);
            }
        };
        let members = presence::members(&infos);
        let mut fields = extra.map.clone();
        if stats {
            let (clients, users) = presence::stats(&members);
            fields.insert("num_clients".into(), clients.into());
            fields.insert("num_users".into(), users.into());
        } else {
            fields.insert("members".into(), Value::Array(members));
        }
        self.reply(proto::reply(
            ev.name(),
            None,
            Some(&fields),
            None,
            Some(name),
        ));
        Ok(true)
    }
}
