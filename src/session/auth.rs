//! `auth` (R-AUTH).

use super::*;

impl Session {
    /// `auth` (R-AUTH).
    pub(super) async fn auth(&self, cmd: &Map<String, Value>) -> CmdResult {
        let err = |text: &Value| {
            self.reply(proto::reply("auth", Some(text), None, None, None));
            Ok(false)
        };
        if matches!(cmd.get("method"), Some(Value::String(m)) if m == "jwt") {
            if let Some(verifier) = &self.app.jwt {
                return self.auth_jwt(verifier, cmd).await;
            }
        }
        let cfg = self.app.cfg();
        let ticket_cfg = cfg.authentication.ticket.as_ref();
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
        {
            let mut st = self.lock();
            st.auth = fields.into();
            if let Some(id) = st.token.take().and_then(|t| t.expiry) {
                self.app.timers.cancel(id);
            }
        }
        self.reply(proto::reply("auth", None, None, None, None));
        Ok(true)
    }

    /// `auth` with `"method": "jwt"` (issue 14): the token's claims become the auth fields;
    /// its `exp` ends the authentication unless a newer token is sent before.
    async fn auth_jwt(
        &self,
        verifier: &crate::jwt::Verifier,
        cmd: &Map<String, Value>,
    ) -> CmdResult {
        let err = |text: &str| {
            self.reply(proto::reply("auth", Some(&text.into()), None, None, None));
            Ok(false)
        };
        let Some(token) = cmd
            .get("token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        else {
            return err(proto::ERR_NO_TOKEN);
        };
        let grant = match verifier.verify(token).await {
            Ok(g) => g,
            Err(crate::jwt::Refused::Expired) => return err(proto::ERR_TOKEN_EXPIRED),
            Err(crate::jwt::Refused::Invalid(why)) => {
                tracing::info!(session = self.id, reason = why.as_str(), "jwt refused");
                return err(proto::ERR_AUTH_FAILED);
            }
        };
        if tracing::enabled!(tracing::Level::DEBUG) {
            let info = Value::Object(grant.fields.clone());
            tracing::debug!(session = self.id, auth_info = %info, "auth info");
        }
        {
            let mut st = self.lock();
            st.tokens += 1;
            let generation = st.tokens;
            let exp = grant.expires_in.map(|left| Instant::now() + left);
            let expiry = exp.map(|at| self.schedule_expiry(generation, at));
            st.auth = grant.fields.into();
            let old = st.token.replace(Box::new(Token {
                generation,
                exp,
                expiry,
                channels: grant.channels,
            }));
            if let Some(id) = old.and_then(|t| t.expiry) {
                self.app.timers.cancel(id);
            }
        }
        self.reply(proto::reply("auth", None, None, None, None));
        Ok(true)
    }

    /// The token's `exp` passed and no newer token came: the session is no longer
    /// authenticated; it is told `Token expired.`, and its subscriptions to services that
    /// require authentication end as after a failed renewal (an `unsubscribe` push with the same
    /// error).
    async fn token_expired(&self, generation: u64) {
        let ended: Vec<(String, u64)> = {
            let mut st = self.lock();
            let Some(token) = st.token.as_mut().filter(|t| t.generation == generation) else {
                // Replaced by a newer token meanwhile.
                return;
            };
            if let Some(exp) = token.exp.filter(|exp| Instant::now() < *exp) {
                // The timer was capped (`timers::MAX_DELAY`): wait on.
                token.expiry = Some(self.schedule_expiry(generation, exp));
                return;
            }
            st.token = None;
            if self.is_closing() {
                return;
            }
            st.auth = Fields::default();
            st.subs
                .iter()
                .filter(|(_, s)| s.service.require_authentication)
                .map(|(name, s)| (name.name().to_owned(), s.instance))
                .collect()
        };
        tracing::info!(
            session = self.id,
            subscriptions = ended.len(),
            "token expired"
        );
        let text = Value::String(proto::ERR_TOKEN_EXPIRED.into());
        self.reply(proto::reply("auth", Some(&text), None, None, None));
        for (name, instance) in ended {
            self.renewal_failed(&name, instance, text.clone()).await;
        }
    }

    /// The timer that ends JWT authentication `generation` at `exp`.
    fn schedule_expiry(&self, generation: u64, exp: Instant) -> TimerId {
        let weak = self.weak.clone();
        self.app.timers.schedule(
            exp,
            Box::new(move || {
                if let Some(session) = weak.upgrade() {
                    tokio::spawn(async move { session.token_expired(generation).await });
                }
            }),
        )
    }

    /// Whether the session's token lets it subscribe to `name` without the authorizer.
    pub(super) fn token_grants(&self, name: &str) -> bool {
        self.lock()
            .token
            .as_ref()
            .and_then(|t| t.channels.as_ref())
            .is_some_and(|c| c.iter().any(|c| c == name))
    }
}
