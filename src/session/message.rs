//! `message` (R-MSG).

use super::*;

impl Session {
    /// `message` (R-MSG).
    pub(super) async fn message(&self, cmd: &Map<String, Value>) -> CmdResult {
        let (name, svc) = match self.check_name(Event::Message, cmd)? {
            NameCheck::Reply(r) => {
                self.reply(r);
                return Ok(false);
            }
            NameCheck::Ok(n, s) => (n, s),
        };
        let ev = Event::Message;
        let Some((extra, authz)) = self.sub_snapshot(name) else {
            let captured = proto::capture_extra_fields(cmd, &svc.extra_fields);
            return self.error_reply(
                ev,
                name,
                &proto::ERR_NO_SUBSCRIPTION.into(),
                &captured,
                None,
            );
        };
        let Some(url) = &svc.on_message else {
            return Ok(true);
        };
        let data = cmd.get("data").cloned().unwrap_or(Value::Null);
        let body = self.body(name, &extra.map, &authz, Some(&data));
        let answer = match self
            .call("on_message", &svc.name, Some(name), url, &body)
            .await
        {
            Outcome::Unusable(why) => {
                return Err(unhandled(Some(name), Some(extra.map.clone()), why));
            }
            Outcome::Answer(a) => a,
        };
        let extra = self.reply_extra(name, &extra.map);
        if proto::is_ok(&answer) {
            if let Some(d) = answer.get("data") {
                let data = Some(d).filter(|d| !d.is_null());
                self.reply(proto::reply(
                    "message",
                    None,
                    Some(&extra),
                    data,
                    Some(name),
                ));
            }
            Ok(true)
        } else {
            let text = proto::error_text(&answer, proto::ERR_UNHANDLED);
            self.error_reply(ev, name, &text, &extra, proto::error_data(&answer))
        }
    }
}
