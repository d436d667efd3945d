//! `unsubscribe` (R-UNS).

use super::*;

impl Session {
    /// `unsubscribe` (R-UNS).
    pub(super) async fn unsubscribe(&self, cmd: &Map<String, Value>) -> CmdResult {
        let (name, svc) = match self.check_name(Event::Unsubscribe, cmd)? {
            NameCheck::Reply(r) => {
                self.reply(r);
                return Ok(false);
            }
            NameCheck::Ok(n, s) => (n, s),
        };
        let ev = Event::Unsubscribe;
        let not_found = |extra: &Map<String, Value>| {
            self.error_reply(ev, name, &proto::ERR_NO_SUBSCRIPTION.into(), extra, None)
        };
        let Some((extra, authz)) = self.sub_snapshot(name) else {
            return not_found(&proto::capture_extra_fields(cmd, &svc.extra_fields));
        };
        let mut data = None;
        if let Some(url) = &svc.before_unsubscribe {
            let body = self.body(name, &extra.map, &authz, None);
            match self
                .call("before_unsubscribe", &svc.name, Some(name), url, &body)
                .await
            {
                Outcome::Unusable(why) => {
                    return Err(unhandled(Some(name), Some(extra.map.clone()), why));
                }
                Outcome::Answer(a) if !proto::is_ok(&a) => {
                    let text = proto::error_text(&a, proto::ERR_UNHANDLED);
                    return self.error_reply(ev, name, &text, &extra.map, proto::error_data(&a));
                }
                Outcome::Answer(mut a) => data = a.remove("data").filter(|d| !d.is_null()),
            }
        }
        // A renewal failure may have removed it meanwhile (R-DEF-6): then it is gone already.
        let Some(removed) = self.remove_sub(name, None, true) else {
            return not_found(&extra.map);
        };
        self.reply(proto::reply(
            "unsubscribe",
            None,
            Some(&removed.extra.map),
            data.as_ref(),
            Some(name),
        ));
        if let Some(url) = &svc.on_unsubscribe {
            let body = self.body(name, &removed.extra.map, &removed.authz, None);
            if let Outcome::Unusable(why) = self
                .call("on_unsubscribe", &svc.name, Some(name), url, &body)
                .await
            {
                return Err(unhandled(Some(name), Some(removed.extra.map.clone()), why));
            }
        }
        Ok(true)
    }
}
