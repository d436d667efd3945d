//! `history` (issue 14, not in the reference): the last messages of a channel the session is
//! subscribed to, from the channel's history.
//!
//! `{"event": "history", "subscription": "chat.room1", "limit": 10}` →
//! `{"event": "history", "status": "ok", <extra fields>, "offset": N, "epoch": "E",
//! "messages": [<message frames, oldest first>], "subscription": "chat.room1"}`. Messages go
//! through the subscription's filter fields (they target sessions); order and throttle do not
//! apply. `limit` defaults to, and is capped at, the service's `history_size`.

use super::*;

impl Session {
    pub(super) async fn history(&self, cmd: &Map<String, Value>) -> CmdResult {
        let ev = Event::History;
        let (name, svc, extra) = match self.active_subscription(ev, cmd) {
            Ok(active) => active,
            Err(answered) => return answered,
        };
        let Some((size, ttl)) = svc.history() else {
            let text = proto::ERR_NO_HISTORY.into();
            return self.error_reply(ev, name, &text, &extra.map, None);
        };
        let limit = cmd
            .get("limit")
            .and_then(Value::as_u64)
            .map_or(size, |l| (l as usize).min(size));
        let h = match self.app.hub.history(name, Some(0), ttl).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(
                    session = self.id,
                    subscription = name,
                    error = e.as_str(),
                    "history unavailable"
                );
                let text = proto::ERR_SERVICE_UNAVAILABLE.into();
                return self.error_reply(ev, name, &text, &extra.map, None);
            }
        };
        let skip = h.messages.len().saturating_sub(limit);
        let sent_at = publish::now();
        let meta = Meta {
            live: None,
            sent_at: &sent_at,
            with_published_at: true,
        };
        let messages: Vec<Value> = {
            let st = self.lock();
            h.messages[skip..]
                .iter()
                .filter_map(|p| Published::decode(p).ok())
                .filter(|m| m.subscription == name)
                .filter(|m| filter_passes(&svc, &m.fields, &extra.map, &st.auth))
                .filter_map(|m| serde_json::from_str(&publish::frame(name, &m, &extra, meta)).ok())
                .collect()
        };
        let mut fields = extra.map.clone();
        fields.insert("offset".into(), h.top.into());
        fields.insert("epoch".into(), h.epoch.into());
        fields.insert("messages".into(), Value::Array(messages));
        self.reply(proto::reply(
            "history",
            None,
            Some(&fields),
            None,
            Some(name),
        ));
        Ok(true)
    }
}
