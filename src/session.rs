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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use indexmap::IndexMap;
use serde_json::{Map, Value};
use tokio::sync::{Notify, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::app::{App, LiveSession};
use crate::compat::pyjson::{self, HashKey};
use crate::config::{CallbackUrl, ServiceConfig};
use crate::delivery::{Arrival, OrderFilter, Throttle};
use crate::hub::{Fanout, Member};
use crate::protocol::{self as proto, Decoded, Event, Name};
use crate::publish::{self, ExtraFields, Meta, Published};
use crate::service::{Call, Outcome};

/// A frame for the connection's writer.
#[derive(Debug)]
pub enum Out {
    /// A reply.
    Text(Utf8Bytes),
    /// A push: a published message, a trailing throttled message, a server-initiated
    /// unsubscribe. Counted as dropped when it is never written.
    Push(Utf8Bytes),
    Ping(Bytes),
    /// The answer to a client's ping (R-WS-6).
    Pong(Bytes),
    /// Send a close frame with this code and reason; later frames are not sent.
    Close(u16, &'static str),
    /// The answer to a client's close frame: its code echoed (none if it had none); later
    /// frames are not sent.
    CloseReply(Option<u16>, String),
    /// Flush, close the socket and stop.
    Finish,
}

/// The session's outgoing queue with its byte budget. A plain queue under a mutex: the writer
/// takes everything queued at once (one flush per batch), and an idle session holds no buffer.
pub struct Outbox {
    queue: Mutex<VecDeque<Out>>,
    /// Notified when the queue goes from empty to non-empty.
    ready: Notify,
    /// A reply or control frame is queued: the writer does not linger (`ws.write_coalesce`).
    urgent: AtomicBool,
    queued: AtomicUsize,
    /// Since when (milliseconds on [`clock_ms`]) the writer has been writing without finishing
    /// its batch; 0 when it is idle. A writer stuck for long on a full socket means the client
    /// does not read.
    busy_since_ms: AtomicU64,
}

/// Queued bytes that end the writer's `ws.write_coalesce` linger at once (at most a quarter of
/// the smallest allowed `limits.max_outbound_bytes`).
const COALESCE_FLUSH_BYTES: usize = 16 * 1024;

/// How long the writer may be stuck on a full socket, with the queue over its budget, before the
/// client counts as a slow consumer.
const SLOW_CONSUMER_GRACE_MS: u64 = 1000;

/// Milliseconds since the first call (a monotonic clock; never 0).
pub fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    start.elapsed().as_millis() as u64 + 1
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            queue: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            urgent: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            busy_since_ms: AtomicU64::new(0),
        }
    }
}

impl Outbox {
    /// Queues `out`. The writer is woken when the queue was empty, and for an `urgent` frame (a
    /// reply or a control frame) also while it lingers before writing a batch of pushes.
    fn push(&self, out: Out, urgent: bool) {
        let wake = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = q.is_empty();
            q.push_back(out);
            if urgent {
                self.urgent.store(true, Ordering::Relaxed);
            }
            was_empty || urgent
        };
        if wake {
            self.ready.notify_one();
        }
    }

    /// Queues a reply (`urgent`) or a push; returns the bytes now queued.
    fn push_text(&self, text: Utf8Bytes, urgent: bool) -> usize {
        let len = text.len();
        let total = self.queued.fetch_add(len, Ordering::Relaxed) + len;
        // A backlog big enough for a full write ends the writer's linger: coalescing saves
        // small writes, it must not hold back a burst (nor push a reading client towards the
        // slow-consumer limit).
        let out = if urgent {
            Out::Text(text)
        } else {
            Out::Push(text)
        };
        self.push(out, urgent || total >= COALESCE_FLUSH_BYTES);
        total
    }

    /// Empties the queue once the writer is gone; returns how many pushes were in it.
    pub fn discard(&self) -> u64 {
        let q = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
        self.queued.store(0, Ordering::Relaxed);
        q.iter().filter(|o| matches!(o, Out::Push(_))).count() as u64
    }

    fn push_control(&self, out: Out) {
        self.push(out, true);
    }

    /// Everything queued, waiting until there is something (for the writer). With a
    /// `coalesce_until` still ahead (the previous batch was taken less than `ws.write_coalesce`
    /// ago), a queue of pushes only is left to fill until then; an urgent frame ends the wait.
    pub async fn next_batch(&self, coalesce_until: Option<tokio::time::Instant>) -> VecDeque<Out> {
        loop {
            let nonempty = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if !q.is_empty() && self.urgent.swap(false, Ordering::Relaxed) {
                    return std::mem::take(&mut *q);
                }
                !q.is_empty()
            };
            if nonempty {
                if let Some(until) = coalesce_until.filter(|u| *u > Instant::now()) {
                    // Boxed: a timer inline would grow every idle connection's future.
                    tokio::select! {
                        _ = Box::pin(tokio::time::sleep_until(until)) => {}
                        _ = self.ready.notified() => {}
                    }
                }
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                self.urgent.store(false, Ordering::Relaxed);
                return std::mem::take(&mut *q);
            }
            self.ready.notified().await;
        }
    }

    /// The writer starts writing a batch (`true`) or has written everything queued (`false`).
    pub fn set_writer_busy(&self, busy: bool) {
        let v = if busy { clock_ms() } else { 0 };
        self.busy_since_ms.store(v, Ordering::Relaxed);
    }

    /// Whether the writer has been stuck for longer than the grace period.
    fn writer_stuck(&self) -> bool {
        let since = self.busy_since_ms.load(Ordering::Relaxed);
        since != 0 && clock_ms().saturating_sub(since) > SLOW_CONSUMER_GRACE_MS
    }

    /// Called by the writer once a text frame of `len` bytes left the queue.
    pub fn written(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::Relaxed);
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// A client frame waiting to be processed.
#[derive(Debug)]
pub enum ClientFrame {
    Text(Utf8Bytes),
    Binary(Bytes),
}

/// One active subscription of the session (R-SUB-8).
struct Sub {
    /// Distinguishes this subscription from a later one of the same name (R-OOO-3).
    instance: u64,
    service: Arc<ServiceConfig>,
    extra: Arc<ExtraFields>,
    /// Authorizer fields of the last successful authorization (R-BODY-3).
    authz: Map<String, Value>,
    order: OrderFilter,
    throttle: Throttle<Arc<Published>>,
    /// Scheduled trailing throttled sends, by throttle key.
    timers: HashMap<HashKey, AbortHandle>,
    reauth: Option<AbortHandle>,
    heartbeat: Option<AbortHandle>,
}

impl Sub {
    fn stop_tasks(&mut self, including_reauth: bool) {
        for (key, t) in self.timers.drain() {
            tracing::trace!(throttle_key = ?key, "throttled message canceled");
            t.abort();
        }
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        if including_reauth {
            if let Some(h) = self.reauth.take() {
                h.abort();
            }
        }
    }
}

/// What is left of a subscription after its removal, for the unsubscribe callbacks.
struct Removed {
    service: Arc<ServiceConfig>,
    extra: Arc<ExtraFields>,
    authz: Map<String, Value>,
}

#[derive(Default)]
struct State {
    /// Session auth fields; the session is authenticated iff non-empty (R-AUTH-7).
    auth: Map<String, Value>,
    /// Active subscriptions in subscription order (R-END-2 removes them in reverse).
    /// Boxed: the map reserves room for several entries, which would otherwise each be a
    /// whole `Sub` (816 bytes per connection with one subscription, measured with massif).
    subs: IndexMap<String, Box<Sub>, foldhash::fast::RandomState>,
    /// The name being subscribed (R-SUB-6..9; commands run one at a time, so there is at most
    /// one) and the messages buffered for it (R-SUB-10).
    acquiring: Option<(String, Vec<Arc<Published>>)>,
    next_instance: u64,
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
    pub remote: String,
    app: Arc<App>,
    out: Outbox,
    state: Mutex<State>,
    closing: AtomicBool,
    /// Closed by the slow-consumer policy (the reason its undelivered pushes are counted under).
    slow_consumer: AtomicBool,
    close_requested: Notify,
    /// Bounds the service callbacks in flight for this session (`limits.max_concurrent_callbacks`).
    callbacks: Semaphore,
    /// Notified once the writer has sent the close frame of a server-initiated close.
    close_flushed: Notify,
    /// Subscriptions removed by a failed renewal whose unsubscribe callbacks are still running;
    /// the session end waits for them (R-CB-2: `on_unsubscribe` is called for every removal).
    removals_in_flight: AtomicUsize,
    removals_done: Notify,
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
        self.0.removals_in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.removals_done.notify_waiters();
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
}

impl Session {
    pub fn new(app: Arc<App>, id: u64, remote: String) -> Arc<Session> {
        let max_callbacks = app.cfg.limits.max_concurrent_callbacks;
        Arc::new_cyclic(|weak| Session {
            id,
            remote,
            app,
            out: Outbox::default(),
            state: Mutex::new(State::default()),
            closing: AtomicBool::new(false),
            slow_consumer: AtomicBool::new(false),
            close_requested: Notify::new(),
            callbacks: Semaphore::new(max_callbacks),
            close_flushed: Notify::new(),
            removals_in_flight: AtomicUsize::new(0),
            removals_done: Notify::new(),
            weak: weak.clone(),
        })
    }

    pub fn outbox(&self) -> &Outbox {
        &self.out
    }

    /// `ws.write_coalesce` (the writer's linger between batches of pushes).
    pub fn write_coalesce(&self) -> Duration {
        self.app.cfg.ws.write_coalesce.duration()
    }

    /// Whether the server is closing this session: no more pushes or replies are sent, and
    /// client frames are ignored (R-WS-12, R-PUB-10).
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Starts a server-initiated close with this code (R-WS-10). Idempotent.
    pub fn close(&self, code: u16, reason: &'static str) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            self.out.push_control(Out::Close(code, reason));
            self.close_requested.notify_one();
        }
    }

    /// Called by the writer once the close frame was sent (or could not be).
    pub fn set_close_flushed(&self) {
        self.close_flushed.notify_one();
    }

    /// Resolves once the writer has sent the close frame.
    pub async fn close_flushed(&self) {
        self.close_flushed.notified().await
    }

    /// Resolves once [`Session::close`] was called.
    pub async fn close_requested(&self) {
        self.close_requested.notified().await
    }

    /// Counts `n` pushes written to the socket (`socketshark_messages_delivered_total`).
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
        if self.is_closing() {
            self.dropped_pushes(1);
            return;
        }
        let queued = self.out.push_text(frame, false);
        let budget = self.app.cfg.limits.max_outbound_bytes;
        if queued > budget && (queued > budget.saturating_mul(4) || self.out.writer_stuck()) {
            tracing::warn!(
                session = self.id,
                queued_bytes = queued,
                "slow consumer: closing connection"
            );
            self.app.metrics.slow_consumer();
            self.slow_consumer.store(true, Ordering::Relaxed);
            self.close(1008, "slow consumer");
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
    // Commands
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

    /// `auth` (R-AUTH).
    async fn auth(&self, cmd: &Map<String, Value>) -> CmdResult {
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
        self.lock().auth = fields;
        self.reply(proto::reply("auth", None, None, None, None));
        Ok(true)
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
            Name::Ok { name, service } => match self.app.cfg.services.get(service) {
                Some(svc) => NameCheck::Ok(name, svc.clone()),
                None => invalid(proto::ERR_INVALID_SERVICE, Some(name)),
            },
        })
    }

    /// The extra fields of a reply (R-EXT-2): the active subscription's, else the command's.
    fn reply_extra(&self, name: &str, captured: &Map<String, Value>) -> Map<String, Value> {
        match self.lock().subs.get(name) {
            Some(sub) => sub.extra.map.clone(),
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
        for (k, v) in &self.lock().auth {
            b.insert(k.clone(), v.clone());
        }
        if let Some(d) = data {
            b.insert("data".into(), d.clone());
        }
        Value::Object(b)
    }

    /// `subscribe` (R-SUB-1..13).
    async fn subscribe(&self, cmd: &Map<String, Value>) -> CmdResult {
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
                st.subs.get(name).map(|s| s.extra.map.clone()),
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
        let max = self.app.cfg.limits.max_subscriptions;
        if max > 0 && self.lock().subs.len() >= max {
            let text = proto::ERR_TOO_MANY_SUBSCRIPTIONS.into();
            return self.error_reply(ev, name, &text, &extra, None);
        }

        // R-SUB-5: authorize.
        let mut authz = Map::new();
        if let Some(url) = &svc.authorizer {
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
        self.lock().acquiring = Some((name.to_owned(), Vec::new()));
        let me: Arc<dyn Member> = self.strong();
        if let Err(e) = self.app.hub.acquire(name, me).await {
            self.abandon(name);
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
            let buffered = st.acquiring.take().map(|(_, b)| b).unwrap_or_default();
            st.next_instance += 1;
            let instance = st.next_instance;
            let mut sub = Sub {
                instance,
                service: svc.clone(),
                extra: extra.clone(),
                authz: authz.clone(),
                order: OrderFilter::default(),
                throttle: Throttle::default(),
                timers: HashMap::new(),
                reauth: None,
                heartbeat: None,
            };
            // Non-object options in the answer are treated as no options.
            let options = publish::parse_options(answer.get("options")).unwrap_or_default();
            if let Some((k, o)) = options.order {
                sub.order.seed(k, o);
            }
            if let Some((k, _)) = options.throttle {
                sub.throttle.seed(k, Instant::now());
            }
            if filter_passes(&svc, &answer, &extra.map, &st.auth) {
                let data = answer.get("data").filter(|d| !d.is_null());
                self.reply(proto::reply(
                    "subscribe",
                    None,
                    Some(&extra.map),
                    data,
                    Some(name),
                ));
            }
            if svc.authorization_renewal_period.is_some() {
                sub.reauth = Some(self.spawn_reauth(name, instance, &svc));
            }
            if svc.heartbeat().is_some() {
                sub.heartbeat = Some(self.spawn_heartbeat(name, instance, &svc));
            }
            st.subs.insert(name.to_owned(), Box::new(sub));
            for msg in buffered {
                self.pipeline(st, &msg, None);
            }
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
    fn abandon(&self, name: &str) {
        self.lock().acquiring = None;
        self.app.hub.release(name, self.id);
    }

    /// `message` (R-MSG).
    async fn message(&self, cmd: &Map<String, Value>) -> CmdResult {
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

    /// `unsubscribe` (R-UNS).
    async fn unsubscribe(&self, cmd: &Map<String, Value>) -> CmdResult {
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

    fn sub_snapshot(&self, name: &str) -> Option<(Arc<ExtraFields>, Map<String, Value>)> {
        self.lock()
            .subs
            .get(name)
            .map(|s| (s.extra.clone(), s.authz.clone()))
    }

    fn strong(&self) -> Arc<Session> {
        self.weak
            .upgrade()
            .expect("a session is alive while it runs")
    }

    /// Removes an active subscription (R-UNS-4): no more deliveries, pending throttled sends and
    /// periodic tasks stopped, the channel released. `instance` restricts the removal to one
    /// subscription instance; `stop_reauth` is false when the renewal task itself removes it.
    fn remove_sub(&self, name: &str, instance: Option<u64>, stop_reauth: bool) -> Option<Removed> {
        let mut sub = {
            let mut st = self.lock();
            match st.subs.get(name) {
                Some(s) if instance.is_none_or(|i| i == s.instance) => {}
                _ => return None,
            }
            st.subs.shift_remove(name)?
        };
        sub.stop_tasks(stop_reauth);
        self.app.hub.release(name, self.id);
        Some(Removed {
            service: sub.service,
            extra: sub.extra,
            authz: sub.authz,
        })
    }

    /// Ends the session (R-END-2): every active subscription is removed, most recent first,
    /// each followed by `before_unsubscribe` and `on_unsubscribe`, whose answers are ignored.
    pub async fn end(&self) {
        self.mark_closing();
        // Stop every periodic task first: while the removals below wait for their callbacks, no
        // heartbeat or renewal of a later subscription may start.
        let names: Vec<String> = {
            let mut st = self.lock();
            for sub in st.subs.values_mut() {
                sub.stop_tasks(true);
            }
            st.subs.keys().rev().cloned().collect()
        };
        for name in names {
            let Some(removed) = self.remove_sub(&name, None, true) else {
                continue;
            };
            self.unsubscribe_callbacks(&name, &removed).await;
        }
        // Removals started by a failed renewal finish their callbacks first.
        loop {
            let done = self.removals_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.removals_in_flight.load(Ordering::Acquire) == 0 {
                break;
            }
            done.await;
        }
    }

    /// `before_unsubscribe` then `on_unsubscribe` for a removal that is not a client command;
    /// errors are logged and ignored (R-END-2, R-DEF-4). Returns `before_unsubscribe`'s data.
    async fn unsubscribe_callbacks(&self, name: &str, removed: &Removed) -> Option<Value> {
        let svc = &removed.service;
        let mut data = None;
        for (url, callback, keep_data) in [
            (&svc.before_unsubscribe, "before_unsubscribe", true),
            (&svc.on_unsubscribe, "on_unsubscribe", false),
        ] {
            let Some(url) = url else { continue };
            let body = self.body(name, &removed.extra.map, &removed.authz, None);
            match self.call(callback, &svc.name, Some(name), url, &body).await {
                Outcome::Unusable(why) => {
                    tracing::error!(
                        session = self.id,
                        subscription = name,
                        url = url.display.as_str(),
                        error = why.as_str(),
                        "unhandled exception in unsubscribe callback"
                    );
                }
                Outcome::Answer(mut a) if keep_data => {
                    data = a.remove("data").filter(|d| !d.is_null());
                }
                Outcome::Answer(_) => {}
            }
        }
        data
    }

    // ----------------------------------------------------------------------------------------
    // Periodic reauthorization and heartbeat
    // ----------------------------------------------------------------------------------------

    fn spawn_reauth(&self, name: &str, instance: u64, svc: &Arc<ServiceConfig>) -> AbortHandle {
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
    async fn renew(&self, name: &str, instance: u64, svc: &Arc<ServiceConfig>) -> bool {
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
                    Some(s) if s.instance == instance => s.authz = fields.clone(),
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
    fn periodic_unusable(&self, name: &str, url: &CallbackUrl, why: &str) -> bool {
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
    async fn renewal_failed(&self, name: &str, instance: u64, text: Value) {
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

    fn instance_snapshot(
        &self,
        name: &str,
        instance: u64,
    ) -> Option<(Arc<ExtraFields>, Map<String, Value>)> {
        self.lock()
            .subs
            .get(name)
            .filter(|s| s.instance == instance)
            .map(|s| (s.extra.clone(), s.authz.clone()))
    }

    fn spawn_heartbeat(&self, name: &str, instance: u64, svc: &Arc<ServiceConfig>) -> AbortHandle {
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
    async fn heartbeat(&self, name: &str, instance: u64, svc: &ServiceConfig) -> bool {
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

    // ----------------------------------------------------------------------------------------
    // Published messages
    // ----------------------------------------------------------------------------------------

    /// The per-session pipeline (R-PUB-6): active subscription → filter fields → order →
    /// throttle → send. `fanout` is `Some` for live deliveries, `None` for buffered ones
    /// (R-SUB-10), which carry no `received_at`/`queue_size`.
    fn pipeline(&self, st: &mut State, msg: &Arc<Published>, fanout: Option<&mut Fanout>) {
        let State { subs, auth, .. } = st;
        let Some(sub) = subs.get_mut(&msg.subscription) else {
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
        if !filter_passes(&sub.service, &msg.fields, &sub.extra.map, auth) {
            return filtered("fields");
        }
        if let Some((key, order)) = &msg.options.order {
            if !sub.order.accept(key, *order) {
                return filtered("order");
            }
        }
        if let Some((key, period)) = &msg.options.throttle {
            match sub
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
                    let handle =
                        self.spawn_trailing_send(&msg.subscription, sub.instance, key, due);
                    if let Some(old) = sub.timers.insert(key.clone(), handle) {
                        old.abort();
                    }
                    return;
                }
            }
        }
        let frame = match fanout {
            Some(f) => f.frame(msg, &sub.extra),
            None => {
                let sent_at = publish::now();
                let meta = Meta {
                    live: None,
                    sent_at: &sent_at,
                    with_published_at: true,
                };
                publish::frame(&msg.subscription, msg, &sub.extra, meta).into()
            }
        };
        self.push(frame);
    }

    fn spawn_trailing_send(
        &self,
        name: &str,
        instance: u64,
        key: &HashKey,
        due: Instant,
    ) -> AbortHandle {
        let weak = self.weak.clone();
        let name = name.to_owned();
        let key = key.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            if let Some(session) = weak.upgrade() {
                session.trailing_send(&name, instance, &key);
            }
        })
        .abort_handle()
    }

    /// A trailing throttled send is due (R-THR-4).
    fn trailing_send(&self, name: &str, instance: u64, key: &HashKey) {
        let mut st = self.lock();
        let Some(sub) = st.subs.get_mut(name).filter(|s| s.instance == instance) else {
            tracing::trace!(
                subscription = name,
                "throttled message subscription invalid"
            );
            return;
        };
        sub.timers.remove(key);
        let Some(msg) = sub.throttle.fire(key, Instant::now()) else {
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
        let frame = publish::frame(name, &msg, &sub.extra, meta);
        drop(st);
        self.push(frame.into());
    }
}

impl Member for Session {
    fn id(&self) -> u64 {
        self.id
    }

    fn deliver(&self, channel: &str, msg: &Arc<Published>, fanout: &mut Fanout) {
        if self.is_closing() {
            self.dropped_pushes(1);
            return;
        }
        let mut st = self.lock();
        if let Some((name, buffer)) = &mut st.acquiring {
            if name == channel {
                buffer.push(msg.clone());
                return;
            }
        }
        self.pipeline(&mut st, msg, Some(fanout));
    }
}

/// A client command for the log: a `ticket` is a credential and is never logged, whatever the
/// event.
fn masked(command: &Value) -> std::borrow::Cow<'_, Value> {
    match command {
        Value::Object(m) if m.contains_key("ticket") => {
            let mut m = m.clone();
            m.insert("ticket".into(), Value::String("*****".into()));
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
