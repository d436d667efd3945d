//! `auth` (R-AUTH).

use super::*;

impl Session {
    /// `auth` (R-AUTH).
    pub(super) async fn auth(&self, cmd: &Map<String, Value>) -> CmdResult {
        let err = |text: &Value| {
            self.reply(proto::reply("auth", Some(text), None, None, None));
            Ok(false)
        };
        let ticket_cfg = self.app.cfg.authentication.ticket.as_ref();
        let method_ok = match cmd.get("method") {
            None => true,
            Some(Value::String(m)) => m == "ticket",
            Some(_) => false,
        };
        let Some(ticket_cfg) = ticket_cfg.filter(|_| method_ok) else {
            return err(&proto::ERR_AUTH_METHOD.into());
        };
        let ticket = match cmd.get("ticket") {
            Some(t) if pyjson::truthy(t) => t.clone(),
            _ => return err(&proto::ERR_NO_TICKET.into()),
        };
        let mut body = Map::new();
        body.insert("ticket".into(), ticket);
        let answer = match self
            .call(
                "ticket",
                "",
                None,
                &ticket_cfg.validation_url,
                &Value::Object(body),
            )
            .await
        {
            Outcome::Unusable(why) => return Err(unhandled(None, None, why)),
            Outcome::Answer(a) => a,
        };
        if !proto::is_ok(&answer) {
            return err(&proto::error_text(&answer, proto::ERR_AUTH_FAILED));
        }
        let mut fields = Map::new();
        for name in &ticket_cfg.auth_fields {
            match answer.get(name) {
                Some(v) => {
                    fields.insert(name.clone(), v.clone());
                }
                None => {
                    return Err(unhandled(
                        None,
                        None,
                        format!("auth field {name:?} missing from the validation response"),
                    ));
                }
            }
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let info = Value::Object(fields.clone());
            tracing::debug!(session = self.id, auth_info = %info, "auth info");
        }
        self.lock().auth = fields.into();
        self.reply(proto::reply("auth", None, None, None, None));
        Ok(true)
    }
}
