//! One connection's state and the processing of its commands (SPEC.md R-AUTH, R-SUB, R-MSG,
//! R-UNS, R-REAUTH, R-HB, R-END) and of the published messages routed to it (R-PUB-6, R-FLT,
//! R-OOO, R-THR).
//!
//! Commands run one at a time, each to completion including its callbacks (R-ORD-1); the
//! connection task in `server` guarantees that. Published messages arrive concurrently from the
//! hub's fan-out and are processed synchronously under the session's state lock, which is never
//! held across an `.await`. Everything the session sends goes through its [`Outbox`], an
//! unbounded queue with a byte budget: replies are never dropped, and a session whose pushes
//! exceed the budget (a client that stopped reading) is disconnected — the slow-consumer policy.
//!
//! This file holds the session's state and what every command shares (the dispatch in
//! [`Session::process`], name checks, callback bodies, removals). One file per command or step:
//! `auth`, `subscribe`, `message`, `unsubscribe`, `end`, `periodic` (renewals and heartbeats),
//! `published` (the per-subscription pipeline of published messages) and `outbox`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::app::{App, LiveSession};
use crate::compat::pyjson::{self, HashKey};
use crate::config::{CallbackUrl, ServiceConfig};
use crate::delivery::{Arrival, OrderFilter, Throttle};
use crate::hub::{ChannelRef, Fanout, Member, Peer};
use crate::protocol::{self as proto, Decoded, Event, Name};
use crate::publish::{self, ExtraFields, Meta, Published};
use crate::service::{Call, Outcome};
use crate::timers::{TimerId, Timers};

mod auth;
mod end;
mod history;
mod message;
mod outbox;
mod periodic;
mod presence;
mod published;
mod subs;
mod subscribe;
mod unsubscribe;

use periodic::Periodic;
use subs::Subs;

pub use outbox::{Out, Outbox, Taken, clock_ms};

/// A client frame waiting to be processed.
#[derive(Debug)]
pub enum ClientFrame {
    Text(Utf8Bytes),
    Binary(Bytes),
}

/// One active subscription of the session (R-SUB-8): 24 bytes, held in the session's map.
struct Sub {
    /// Distinguishes this subscription from a later one of the same name (R-OOO-3).
    instance: u64,
    service: Arc<ServiceConfig>,
    /// What a subscription without extra fields, authorizer fields, order or throttle state,
    /// renewals or heartbeats does not use: nothing at all then.
    rare: Option<Box<SubRare>>,
}

#[derive(Default)]
struct SubRare {
    /// The extra fields (R-EXT), when there are any.
    extra: Option<Arc<ExtraFields>>,
    /// Authorizer fields of the last successful authorization (R-BODY-3).
    authz: Fields,
    /// The order filter and throttle state, once a message (or the subscribe answer) had
    /// `order` or `throttle` options. Boxed: three hash maps are 144 bytes, which most
    /// subscriptions never use.
    keyed: Option<Box<Keyed>>,
    /// The renewal and the heartbeat: waiting on the app's timer wheel, or running.
    reauth: Option<Next>,
    heartbeat: Option<Next>,
}

/// A subscription's next renewal or heartbeat.
enum Next {
    /// Waiting on the app's timer wheel.
    Due(TimerId),
    /// Its call is in progress, in this task.
    Running(AbortHandle),
}

impl Next {
    fn stop(self, timers: &Timers) {
        match self {
            Next::Due(id) => timers.cancel(id),
            Next::Running(task) => task.abort(),
        }
    }
}

/// A subscription's per-key delivery state (R-OOO, R-THR).
#[derive(Default)]
struct Keyed {
    order: OrderFilter,
    throttle: Throttle<Arc<Published>>,
    /// Scheduled trailing throttled sends, by throttle key.
    timers: HashMap<HashKey, TimerId>,
}

impl Sub {
    fn rare(&mut self) -> &mut SubRare {
        self.rare.get_or_insert_with(Default::default)
    }

    fn keyed(&mut self) -> &mut Keyed {
        self.rare().keyed.get_or_insert_with(Default::default)
    }

    /// The extra fields (R-EXT); the shared empty set when there are none.
    fn extra(&self) -> &Arc<ExtraFields> {
        match self.rare.as_ref().and_then(|r| r.extra.as_ref()) {
            Some(e) => e,
            None => ExtraFields::none_ref(),
        }
    }

    /// Authorizer fields of the last successful authorization (R-BODY-3).
    fn authz(&self) -> &Fields {
        static NONE: Fields = Fields(None);
        self.rare.as_ref().map_or(&NONE, |r| &r.authz)
    }

    /// Cancels the subscription's timers and aborts a renewal or heartbeat in progress (but
    /// not the renewal when `including_reauth` is false: the renewal itself is ending it).
    fn stop_timers(&mut self, timers: &Timers, including_reauth: bool) {
        let Some(rare) = &mut self.rare else {
            return;
        };
        if let Some(keyed) = &mut rare.keyed {
            for (key, t) in keyed.timers.drain() {
                tracing::trace!(throttle_key = ?key, "throttled message canceled");
                timers.cancel(t);
            }
        }
        if let Some(next) = rare.heartbeat.take() {
            next.stop(timers);
        }
        if including_reauth {
            if let Some(next) = rare.reauth.take() {
                next.stop(timers);
            }
        }
    }
}

/// Auth or authorizer fields kept by a session or subscription: boxed, and nothing at all when
/// there are none (most sessions and subscriptions): 8 bytes instead of 72.
#[derive(Clone, Default, Debug)]
struct Fields(Option<Box<Map<String, Value>>>);

impl From<Map<String, Value>> for Fields {
    fn from(map: Map<String, Value>) -> Fields {
        Fields((!map.is_empty()).then(|| Box::new(map)))
    }
}

impl std::ops::Deref for Fields {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Map<String, Value> {
        static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

/// What is left of a subscription after its removal, for the unsubscribe callbacks.
struct Removed {
    service: Arc<ServiceConfig>,
    extra: Arc<ExtraFields>,
    authz: Fields,
}

#[derive(Default)]
struct State {
    /// Session auth fields; the session is authenticated iff non-empty (R-AUTH-7).
    auth: Fields,
    /// Active subscriptions in subscription order (R-END-2 removes them in reverse), keyed by
    /// the hub's channel (which holds the name: one copy per channel, not per subscription).
    /// Shrunk to fit after an insert (`subscribe`): 32 bytes a subscription (`subs`).
    subs: Subs<ChannelRef, Sub>,
    /// The name being subscribed (R-SUB-6..9; commands run one at a time, so there is at most
    /// one) and the messages buffered for it (R-SUB-10). Boxed: 48 bytes an idle session does
    /// not need.
    acquiring: Option<Box<(String, Vec<Arc<Published>>)>>,
    next_instance: u64,
    /// permessage-deflate, when the client negotiated it (R-WS-6a). Inline (24 bytes): browsers
    /// always negotiate it, and boxed it cost them 56.
    deflate: Option<Peer>,
    /// What the JWT the session authenticated with grants beyond its auth fields (issue 14).
    token: Option<Box<Token>>,
    /// JWT authentications so far (`Token::generation`).
    tokens: u64,
}

/// A JWT authentication's expiry and channels.
struct Token {
    /// Which authentication this is (a timer of a replaced token must not end the new one).
    generation: u64,
    /// When the token's `exp` passes.
    exp: Option<Instant>,
    /// The timer that ends the authentication at `exp`.
    expiry: Option<TimerId>,
    /// The `channels` claim: subscribed without the authorizer callback.
    channels: Option<Vec<String>>,
}

/// Why a command ends abnormally.
enum Failure {
    /// R-RESP-6: an unusable service answer. Reply `Unhandled exception.`, then close.
    Unhandled {
        subscription: Option<String>,
        extra: Option<Map<String, Value>>,
        why: String,
    },
    /// R-DEF-3: a malformed command. Close without a reply.
    Malformed(&'static str),
}

type CmdResult = Result<bool, Failure>;

/// A name check that did not pass: the error reply to send.
enum NameCheck<'a> {
    Ok(&'a str, Arc<ServiceConfig>),
    Reply(String),
}

pub struct Session {
    pub id: u64,
    /// The client's address (32 bytes inline; as a `String` it was 24 plus its heap block).
    pub remote: std::net::SocketAddr,
    app: Arc<App>,
    out: Outbox,
    state: Mutex<State>,
    closing: AtomicBool,
    /// Closed by the slow-consumer policy (the reason its undelivered pushes are counted under).
    slow_consumer: AtomicBool,
    /// Bounds the service callbacks in flight for this session (`limits.max_concurrent_callbacks`).
    callbacks: Semaphore,
    /// Set once the writer has sent the close frame of a server-initiated close.
    close_flushed: AtomicBool,
    /// Subscriptions removed by a failed renewal whose unsubscribe callbacks are still running;
    /// the session end waits for them (R-CB-2: `on_unsubscribe` is called for every removal).
    removals_in_flight: AtomicUsize,
    weak: Weak<Session>,
}

/// Counts a renewal-failure removal while its callbacks run.
struct RemovalInFlight<'a>(&'a Session);

impl<'a> RemovalInFlight<'a> {
    fn new(session: &'a Session) -> Self {
        session.removals_in_flight.fetch_add(1, Ordering::AcqRel);
        RemovalInFlight(session)
    }
}

impl Drop for RemovalInFlight<'_> {
    fn drop(&mut self) {
        if self.0.removals_in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The session end may be waiting for it.
            self.0.out.wake();
        }
    }
}

impl LiveSession for Session {
    fn id(&self) -> u64 {
        self.id
    }

    fn close(&self, code: u16, reason: &'static str) {
        Session::close(self, code, reason);
    }

    fn queued_bytes(&self) -> usize {
        self.out.queued_bytes()
    }

    fn reconfigure(&self, cfg: &crate::config::Config) {
        let gone: Vec<(String, u64)> = {
            let mut st = self.lock();
            let mut gone = Vec::new();
            for (name, sub) in st.subs.iter_mut() {
                match cfg.services.get(&sub.service.name) {
                    Some(svc) => sub.service = svc.clone(),
                    None => gone.push((name.name().to_owned(), sub.instance)),
                }
            }
            gone
        };
        if gone.is_empty() || self.is_closing() {
            return;
        }
        let session = self.strong();
        tokio::spawn(async move {
            let text = Value::String(proto::ERR_UNAUTHORIZED.into());
            for (name, instance) in gone {
                tracing::info!(
                    session = session.id,
                    subscription = name.as_str(),
                    "service removed by a configuration reload"
                );
                session.renewal_failed(&name, instance, text.clone()).await;
            }
        });
    }
}

impl Session {
    pub fn new(app: Arc<App>, id: u64, remote: std::net::SocketAddr) -> Arc<Session> {
        let max_callbacks = app.cfg().limits.max_concurrent_callbacks;
        Arc::new_cyclic(|weak| Session {
            id,
            remote,
            app,
            out: Outbox::default(),
            state: Mutex::new(State::default()),
            closing: AtomicBool::new(false),
            slow_consumer: AtomicBool::new(false),
            callbacks: Semaphore::new(max_callbacks),
            close_flushed: AtomicBool::new(false),
            removals_in_flight: AtomicUsize::new(0),
            weak: weak.clone(),
        })
    }

    pub fn outbox(&self) -> &Outbox {
        &self.out
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// The client negotiated permessage-deflate; published messages go to it as `mode` says.
    pub fn set_deflate(&self, mode: crate::wire::deflate::Mode) {
        self.lock().deflate = Some(Peer::new(mode));
    }

    /// `ws.write_coalesce` (the writer's linger between batches of pushes).
    pub fn write_coalesce(&self) -> Duration {
        self.app.cfg().ws.write_coalesce.duration()
    }

    /// Whether the server is closing this session: no more pushes or replies are sent, and
    /// client frames are ignored (R-WS-12, R-PUB-10).
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Starts a server-initiated close with this code (R-WS-10). Idempotent.
    pub fn close(&self, code: u16, reason: &'static str) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            // Queuing the close frame wakes the connection's task, which then sees `closing`.
            self.out.push_control(Out::Close(code, reason));
        }
    }

    /// Closed by the slow-consumer policy.
    pub fn is_slow_consumer(&self) -> bool {
        self.slow_consumer.load(Ordering::Relaxed)
    }

    /// Called by the writer (in the connection's task) once the close frame was sent (or could
    /// not be).
    pub fn set_close_flushed(&self) {
        self.close_flushed.store(true, Ordering::Release);
    }

    /// Whether the writer has sent the close frame.
    pub fn is_close_flushed(&self) -> bool {
        self.close_flushed.load(Ordering::Acquire)
    }

    /// Counts `n` pushes written to the socket (`socketshark_messages_delivered_total`).
    /// `n` pushes went out compressed (permessage-deflate).
    pub fn compressed_pushes(&self, n: u64) {
        self.app.metrics.messages_compressed(n);
    }

    pub fn delivered_pushes(&self, n: u64) {
        self.app.metrics.messages_delivered(n);
    }

    /// Counts `n` pushes that will never reach this closing session
    /// (`socketshark_messages_dropped_total`: `slow_consumer` or `closed`).
    pub fn dropped_pushes(&self, n: u64) {
        if n > 0 {
            let reason = if self.slow_consumer.load(Ordering::Relaxed) {
                "slow_consumer"
            } else {
                "closed"
            };
            self.app.metrics.messages_dropped(reason, n);
        }
    }

    /// Marks the session as ending without sending anything (client gone).
    pub fn mark_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Tells the writer to flush and close the socket.
    pub fn outbox_finish(&self) {
        self.out.push_control(Out::Finish);
    }

    pub fn send_ping(&self, payload: Bytes) {
        self.out.push_control(Out::Ping(payload));
    }

    /// Answers a client's ping (R-WS-6).
    pub fn send_pong(&self, payload: Bytes) {
        self.out.push_control(Out::Pong(payload));
    }

    /// Answers a client's close frame (the closing handshake; the session then ends).
    pub fn reply_close(&self, code: Option<u16>, reason: String) {
        self.out.push_control(Out::CloseReply(code, reason));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a reply. Replies are never dropped by the slow-consumer policy.
    fn reply(&self, text: String) {
        if self.is_closing() {
            return;
        }
        self.out.push_text(text.into(), true);
    }

    /// Sends a push. The slow-consumer policy: a session whose queue is over its byte budget
    /// while its writer has been stuck on a full socket for a second (the client does not read),
    /// or whose queue is four times over budget (the client reads slower than it is sent to), is
    /// disconnected with close code 1008. A burst that a reading client drains is not.
    fn push(&self, frame: Utf8Bytes) {
        self.push_maybe_compressed(frame, None);
    }

    /// Queues a push: `compressed`, its permessage-deflate payload if it goes compressed.
    fn push_maybe_compressed(&self, frame: Utf8Bytes, compressed: Option<Bytes>) {
        if self.is_closing() {
            self.dropped_pushes(1);
            return;
        }
        let queued = match compressed {
            Some(c) => self.out.push_compressed(frame, c),
            None => self.out.push_text(frame, false),
        };
        let budget = self.app.cfg().limits.max_outbound_bytes;
        if queued > budget && (queued > budget.saturating_mul(4) || self.out.writer_stuck()) {
            tracing::warn!(
                session = self.id,
                queued_bytes = queued,
                "slow consumer: closing connection"
            );
            self.app.metrics.slow_consumer();
            self.slow_consumer.store(true, Ordering::Relaxed);
            if !self.closing.swap(true, Ordering::AcqRel) {
                // What is queued would only delay the close frame behind megabytes the client
                // does not read: it is dropped, and the close frame goes first.
                let dropped = self.out.close_first(Out::Close(1008, "slow consumer"));
                self.dropped_pushes(dropped);
            }
        }
    }

    /// Calls a service callback; at most `limits.max_concurrent_callbacks` are in flight per
    /// session (commands, renewals and heartbeats together).
    async fn call(
        &self,
        callback: &'static str,
        service: &str,
        subscription: Option<&str>,
        url: &CallbackUrl,
        body: &Value,
    ) -> Outcome {
        let _permit = self.callbacks.acquire().await;
        let call = Call {
            service,
            callback,
            session: self.id,
            subscription,
        };
        self.app.http.call(call, url, body).await
    }

    // ----------------------------------------------------------------------------------------
    // Commands: the dispatch here, each command in its own file
    // ----------------------------------------------------------------------------------------

    /// Processes one client frame to completion (R-ORD-1). `rate_limited`: the session is over
    /// `limits.max_events_per_second`; a command is then answered `Rate limit exceeded.`
    /// without being processed.
    pub async fn process(self: Arc<Self>, frame: ClientFrame, rate_limited: bool) {
        let decoded = match &frame {
            ClientFrame::Text(t) => proto::decode_text(t.as_str()),
            ClientFrame::Binary(b) => proto::decode_binary(b),
        };
        let metrics = &self.app.metrics;
        match decoded {
            Decoded::NotJson => {
                tracing::warn!(session = self.id, "received invalid json");
                self.reply(proto::invalid_message_reply());
            }
            Decoded::Invalid(v) => {
                tracing::debug!(session = self.id, data = %masked(&v), "client event");
                self.reply(proto::invalid_message_reply());
                metrics.event("invalid", false);
            }
            Decoded::Unknown(name, v) => {
                tracing::debug!(session = self.id, data = %masked(&v), "client event");
                self.reply(proto::unknown_event_reply(&name));
                metrics.event("unknown", false);
            }
            Decoded::Undecodable => {
                tracing::error!(
                    session = self.id,
                    error = "binary message is not decodable text",
                    "unhandled error in consumer handler"
                );
                self.close(1000, "");
            }
            Decoded::Command(event, cmd) => {
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let data = Value::Object(cmd.clone());
                    tracing::debug!(session = self.id, data = %masked(&data), "client event");
                }
                if rate_limited {
                    self.app.metrics.rate_limited();
                    let subscription = match cmd.get("subscription") {
                        Some(Value::String(s))
                            if !s.is_empty() && event != Event::Auth && event != Event::Ping =>
                        {
                            Some(s.as_str())
                        }
                        _ => None,
                    };
                    self.reply(proto::reply(
                        event.name(),
                        Some(&Value::String(proto::ERR_RATE_LIMITED.into())),
                        None,
                        None,
                        subscription,
                    ));
                    metrics.event(event.name(), false);
                    return;
                }
                let result = match event {
                    Event::Ping => {
                        self.reply(proto::pong_reply(&cmd));
                        Ok(true)
                    }
                    Event::Auth => self.auth(&cmd).await,
                    Event::Subscribe => self.subscribe(&cmd).await,
                    Event::Message => self.message(&cmd).await,
                    Event::Unsubscribe => self.unsubscribe(&cmd).await,
                    Event::History => self.history(&cmd).await,
                    Event::Presence => self.presence(&cmd, false).await,
                    Event::PresenceStats => self.presence(&cmd, true).await,
                };
                match result {
                    Ok(success) => metrics.event(event.name(), success),
                    Err(Failure::Unhandled {
                        subscription,
                        extra,
                        why,
                    }) => {
                        tracing::error!(
                            session = self.id,
                            event = event.name(),
                            error = why.as_str(),
                            "unhandled event processing exception"
                        );
                        self.reply(proto::reply(
                            event.name(),
                            Some(&Value::String(proto::ERR_UNHANDLED.into())),
                            extra.as_ref(),
                            None,
                            subscription.as_deref(),
                        ));
                        self.close(1000, "");
                    }
                    Err(Failure::Malformed(why)) => {
                        tracing::error!(
                            session = self.id,
                            error = why,
                            "unhandled error in consumer handler"
                        );
                        self.close(1000, "");
                    }
                }
            }
        }
    }

    /// Validates a command's subscription name (R-NAME); errors are replied here.
    fn check_name<'a>(
        &self,
        event: Event,
        cmd: &'a Map<String, Value>,
    ) -> Result<NameCheck<'a>, Failure> {
        let invalid = |text: &str, sub: Option<&str>| {
            NameCheck::Reply(proto::reply(
                event.name(),
                Some(&Value::String(text.into())),
                None,
                None,
                sub,
            ))
        };
        Ok(match proto::subscription_name(cmd) {
            Name::Missing => invalid(proto::ERR_INVALID_SUBSCRIPTION, None),
            Name::NotAString => return Err(Failure::Malformed("subscription is not a string")),
            Name::BadFormat(s) => invalid(proto::ERR_INVALID_SUBSCRIPTION, Some(s)),
            Name::Ok { name, service } => match self.app.cfg().services.get(service) {
                Some(svc) => NameCheck::Ok(name, svc.clone()),
                None => invalid(proto::ERR_INVALID_SERVICE, Some(name)),
            },
        })
    }

    /// The extra fields of a reply (R-EXT-2): the active subscription's, else the command's.
    fn reply_extra(&self, name: &str, captured: &Map<String, Value>) -> Map<String, Value> {
        match self.lock().subs.get(name) {
            Some(sub) => sub.extra().map.clone(),
            None => captured.clone(),
        }
    }

    fn error_reply(
        &self,
        event: Event,
        name: &str,
        text: &Value,
        extra: &Map<String, Value>,
        data: Option<&Value>,
    ) -> CmdResult {
        self.reply(proto::reply(
            event.name(),
            Some(text),
            Some(extra),
            data,
            Some(name),
        ));
        Ok(false)
    }

    /// The body of a service callback (R-BODY-1): subscription, extra fields, authorizer
    /// fields, auth fields, then `data` for `on_message`.
    fn body(
        &self,
        name: &str,
        extra: &Map<String, Value>,
        authz: &Map<String, Value>,
        data: Option<&Value>,
    ) -> Value {
        let mut b = Map::new();
        b.insert("subscription".into(), Value::String(name.into()));
        for (k, v) in extra.iter().chain(authz) {
            b.insert(k.clone(), v.clone());
        }
        for (k, v) in self.lock().auth.iter() {
            b.insert(k.clone(), v.clone());
        }
        if let Some(d) = data {
            b.insert("data".into(), d.clone());
        }
        Value::Object(b)
    }

    /// For a command on an active subscription (`history`, `presence`): its name, service and
    /// extra fields. `Err` holds the command's result when it was answered already (a bad name,
    /// or `Subscription does not exist.`).
    fn active_subscription<'a>(
        &self,
        ev: Event,
        cmd: &'a Map<String, Value>,
    ) -> Result<(&'a str, Arc<ServiceConfig>, Arc<ExtraFields>), CmdResult> {
        let (name, svc) = match self.check_name(ev, cmd) {
            Err(failure) => return Err(Err(failure)),
            Ok(NameCheck::Reply(r)) => {
                self.reply(r);
                return Err(Ok(false));
            }
            Ok(NameCheck::Ok(n, s)) => (n, s),
        };
        match self.sub_snapshot(name) {
            Some((extra, _)) => Ok((name, svc, extra)),
            None => {
                let captured = proto::capture_extra_fields(cmd, &svc.extra_fields);
                let text = proto::ERR_NO_SUBSCRIPTION.into();
                Err(self.error_reply(ev, name, &text, &captured, None))
            }
        }
    }

    fn sub_snapshot(&self, name: &str) -> Option<(Arc<ExtraFields>, Fields)> {
        self.lock()
            .subs
            .get(name)
            .map(|s| (s.extra().clone(), s.authz().clone()))
    }

    fn strong(&self) -> Arc<Session> {
        self.weak
            .upgrade()
            .expect("a session is alive while it runs")
    }

    /// Removes an active subscription (R-UNS-4): no more deliveries, pending throttled sends and
    /// periodic tasks stopped, the channel released. `instance` restricts the removal to one
    /// subscription instance; `stop_reauth` is false when the renewal itself removes it.
    fn remove_sub(&self, name: &str, instance: Option<u64>, stop_reauth: bool) -> Option<Removed> {
        let mut sub = {
            let mut st = self.lock();
            match st.subs.get(name) {
                Some(s) if instance.is_none_or(|i| i == s.instance) => {}
                _ => return None,
            }
            st.subs.shift_remove(name)?
        };
        sub.stop_timers(&self.app.timers, stop_reauth);
        self.app.hub.release(name, self.id);
        if sub.service.presence {
            self.presence_leave(name, &sub.service);
        }
        let extra = sub.extra().clone();
        Some(Removed {
            authz: sub.rare.map(|r| r.authz).unwrap_or_default(),
            service: sub.service,
            extra,
        })
    }
}

/// A client command for the log: a `ticket` (or a JWT's `token`) is a credential and is never
/// logged, whatever the event.
fn masked(command: &Value) -> std::borrow::Cow<'_, Value> {
    match command {
        Value::Object(m) if m.contains_key("ticket") || m.contains_key("token") => {
            let mut m = m.clone();
            for key in ["ticket", "token"] {
                if m.contains_key(key) {
                    m.insert(key.into(), Value::String("*****".into()));
                }
            }
            std::borrow::Cow::Owned(Value::Object(m))
        }
        _ => std::borrow::Cow::Borrowed(command),
    }
}

fn unhandled(name: Option<&str>, extra: Option<Map<String, Value>>, why: String) -> Failure {
    Failure::Unhandled {
        subscription: name.map(str::to_owned),
        extra,
        why,
    }
}

/// The pairs of a service answer whose key is listed (R-BODY-3, R-AUTH-6).
fn pick_fields(answer: &Map<String, Value>, names: &[String]) -> Map<String, Value> {
    let mut m = Map::new();
    for n in names {
        if let Some(v) = answer.get(n) {
            m.insert(n.clone(), v.clone());
        }
    }
    m
}

/// Whether two authorizer-field maps are equal as Python dicts (R-REAUTH-3): any key added,
/// removed or changed is a change; `1` and `1.0` are the same value.
fn same_fields(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| pyjson::py_eq(v, w)))
}

/// Filter fields (R-FLT-1): every filter field present in `message` must equal the
/// subscription's extra field (if it is an extra field) or the session's auth field.
fn filter_passes(
    svc: &ServiceConfig,
    message: &Map<String, Value>,
    extra: &Map<String, Value>,
    auth: &Map<String, Value>,
) -> bool {
    svc.filter_fields.iter().all(|f| {
        let Some(wanted) = message.get(f) else {
            return true;
        };
        let mine = if svc.extra_fields.contains(f) {
            extra.get(f)
        } else {
            auth.get(f)
        };
        pyjson::py_eq(wanted, mine.unwrap_or(&Value::Null))
    })
}

/// A JSON value as log text: a string without its quotes, anything else as JSON.
fn plain_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::from_secs(10 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn filter_fields_follow_r_flt() {
        let svc = ServiceConfig {
            extra_fields: vec!["extra".into()],
            filter_fields: vec!["session_id".into(), "extra".into()],
            ..ServiceConfig::default()
        };
        let anon = Map::new();
        let authed = map(json!({"session_id": "sess_123"}));
        let no_extra = Map::new();
        let extra_bar = map(json!({"extra": "bar"}));
        // T-20: null reaches anonymous sessions only.
        let m = map(json!({"session_id": null}));
        assert!(filter_passes(&svc, &m, &no_extra, &anon));
        assert!(!filter_passes(&svc, &m, &no_extra, &authed));
        let m = map(json!({"session_id": "sess_123"}));
        assert!(!filter_passes(&svc, &m, &no_extra, &anon));
        assert!(filter_passes(&svc, &m, &no_extra, &authed));
        // T-23: extra field comparison.
        let m = map(json!({"extra": "foo"}));
        assert!(!filter_passes(&svc, &m, &extra_bar, &anon));
        let m = map(json!({"extra": "bar"}));
        assert!(filter_passes(&svc, &m, &extra_bar, &anon));
        // Keys that are not filter fields impose nothing; Python equality applies.
        let m = map(json!({"other": 1}));
        assert!(filter_passes(&svc, &m, &no_extra, &anon));
        let num = map(json!({"session_id": 1}));
        assert!(filter_passes(
            &svc,
            &map(json!({"session_id": 1.0})),
            &no_extra,
            &num
        ));
        assert!(filter_passes(
            &svc,
            &map(json!({"session_id": true})),
            &no_extra,
            &num
        ));
    }

    #[test]
    fn authorizer_field_changes() {
        let a = map(json!({"capabilities": "foo"}));
        let b = map(json!({"capabilities": "bar"}));
        assert!(same_fields(&a, &a.clone()));
        assert!(!same_fields(&a, &b));
        assert!(!same_fields(&a, &Map::new()));
        let picked = pick_fields(
            &map(json!({"status": "ok", "capabilities": "foo", "plan_type": "bar"})),
            &["capabilities".into()],
        );
        assert_eq!(Value::Object(picked), json!({"capabilities": "foo"}));
    }
}
