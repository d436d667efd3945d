//! One WebSocket connection after its handshake, to its end: a hand-written driver
//! ([`Connection::poll_run`]) that reads frames, runs the session's commands one at a time
//! (R-ORD-1), drives the ping schedules (R-WS-7/8) and writes the session's outbox, all from
//! one task, on the socket itself (no split halves, no lock); then the end of the session and
//! the closing handshake (R-END, R-WS-10).
//!
//! Why by hand rather than a `select!` loop: an idle connection's memory is mostly its task,
//! and a task is its future. The `select!` loop's future kept the state of every branch's
//! future (1,368 bytes); this driver keeps only the fields below, and what a running command
//! or the end needs is boxed for as long as it runs.
//!
//! One poll of the driver loops over: start the next command if none runs (and the event
//! budget allows) → poll the running command → read (unless the queue is full or the session
//! waits for its budget) → write (one batch of the outbox at a time, [`Writer`]) → the one
//! timer (rate wait, pings, the writer's linger). It returns `Pending` once none of them made
//! progress; each registered the task's waker (the socket, the command's future, the outbox,
//! the timer). After [`ROUNDS_PER_POLL`] rounds it yields to the other tasks of the worker.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use crate::app::{App, ConnectionSlot};
use crate::config::EventRatePolicy;
use crate::session::{ClientFrame, Out, Session, Taken};
use crate::wire::deflate::Agreed;
use crate::wire::read::{Frame, FrameReader, ReadFail, poll_read_frames};
use crate::wire::{self, Batch};

/// How long the server waits for the client's close frame (R-WS-10).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// A slow consumer's close (`limits.max_outbound_bytes`): how long the socket may take to
/// accept the close frame (the frame being written, then the close frame) before the
/// connection is reset, and how long the client's close frame is then waited for.
const SLOW_CLOSE_WRITE: Duration = Duration::from_secs(2);
const SLOW_CLOSE_REPLY: Duration = Duration::from_millis(500);

/// The WebSocket library keepalive of the reference (R-WS-8).
const KEEPALIVE: Duration = Duration::from_secs(20);
/// Rounds of the driver per poll before it yields to the worker's other tasks.
const ROUNDS_PER_POLL: u32 = 32;

/// A socket the connection can reset (RST) rather than close, when what it must write could not
/// be written: the kernel then frees its buffers at once.
pub trait Reset {
    fn reset(&self);
}

impl Reset for tokio::net::TcpStream {
    fn reset(&self) {
        let _ = self.set_zero_linger();
    }
}

impl Reset for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn reset(&self) {
        let _ = self.get_ref().0.set_zero_linger();
    }
}

type CommandFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the handshake hands to the connection.
pub struct Accepted<S> {
    pub app: Arc<App>,
    pub io: S,
    /// Bytes the client sent right after its handshake request.
    pub leftover: Vec<u8>,
    pub deflate: Option<Agreed>,
    pub remote: SocketAddr,
}

/// The handshake (TLS and HTTP upgrade): the accepted connection, or `None` if it is not to be
/// served.
pub type Handshake<S> = Pin<Box<dyn Future<Output = Option<Accepted<S>>> + Send>>;

pin_project_lite::pin_project! {
    /// A connection's task, by hand rather than an `async fn` (an idle connection's memory is
    /// mostly its task, and a task is its future): the handshake (boxed, freed once done), then
    /// the connection ([`Connection::poll_run`]), then its end (boxed). An idle connection's
    /// future is the running [`Connection`], its one timer and the connection slot.
    pub struct Task<S> {
        // The one timer of the connection (rate wait, pings, the writer's linger).
        #[pin]
        timer: Sleep,
        phase: Phase<S>,
        slot: ConnectionSlot,
    }
}

// The running connection is what the task is for: it is inline, the short phases are boxed.
#[allow(clippy::large_enum_variant)]
enum Phase<S> {
    Handshake(Handshake<S>),
    Running(Connection<S>),
    Ending(Pin<Box<dyn Future<Output = ()> + Send>>),
    Done,
}

impl<S> Task<S>
where
    S: AsyncRead + AsyncWrite + Reset + Unpin + Send + 'static,
{
    pub fn new(handshake: Handshake<S>, slot: ConnectionSlot) -> Task<S> {
        Task {
            timer: tokio::time::sleep_until(Instant::now() + KEEPALIVE),
            phase: Phase::Handshake(handshake),
            slot,
        }
    }
}

impl<S> Future for Task<S>
where
    S: AsyncRead + AsyncWrite + Reset + Unpin + Send + 'static,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let _ = &this.slot;
        let mut timer = this.timer;
        loop {
            match this.phase {
                Phase::Handshake(handshake) => {
                    let accepted = ready!(handshake.as_mut().poll(cx));
                    *this.phase = match accepted.and_then(Connection::start) {
                        Some(conn) => Phase::Running(conn),
                        None => Phase::Done,
                    };
                }
                Phase::Running(conn) => {
                    ready!(conn.poll_run(cx, timer.as_mut()));
                    let Phase::Running(conn) = std::mem::replace(this.phase, Phase::Done) else {
                        unreachable!("matched above");
                    };
                    *this.phase = Phase::Ending(Box::pin(conn.finish()));
                }
                Phase::Ending(end) => {
                    ready!(end.as_mut().poll(cx));
                    *this.phase = Phase::Done;
                }
                Phase::Done => return Poll::Ready(()),
            }
        }
    }
}

/// What a connection holds while it runs (an idle one: these fields, the timer and the task).
struct Connection<S> {
    session: Arc<Session>,
    io: S,
    decoder: FrameReader,
    writer: Writer,
    pings: Pings,
    bucket: TokenBucket,
    /// Client messages waiting for the running command (released when empty).
    queue: Queue,
    current: Option<CommandFuture>,
    /// Set while the session waits for its event budget (`event_rate_policy = "delay"`): the
    /// next event is not started and the socket is not read until then.
    rate_wait: Option<Instant>,
    /// Whether the frame at the head of the queue was already counted as delayed.
    waited: bool,
    /// The client has not closed its side (and the socket can still be read).
    reading: bool,
    started: Instant,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Reset + Unpin + Send + 'static,
{
    /// Opens the session of a connection whose handshake is done; `None` if the server is
    /// shutting down.
    fn start(accepted: Accepted<S>) -> Option<Connection<S>> {
        let Accepted {
            app,
            io,
            leftover,
            deflate,
            remote,
        } = accepted;
        let id = app.next_session_id();
        let session = Session::new(app.clone(), id, remote);
        if let Some(agreed) = deflate {
            session.set_deflate(agreed.mode(&app.cfg().ws.compression));
        }
        app.register(session.clone());
        if app.is_shutting_down() {
            // Shutdown began after the check of the handshake and may already have closed the
            // sessions it saw: this one would never be closed, and shutdown would wait for it
            // forever (R-SHUT-3).
            app.unregister(id);
            tracing::warn!(remote = %remote, "dropped connection");
            return None;
        }
        app.metrics.connection_opened();
        tracing::debug!(session = id, remote = %remote, "new session");
        tracing::info!(session = id, remote = %remote, "connection open");
        let limits = &app.cfg().limits;
        let mut conn = Connection {
            io,
            decoder: FrameReader::new(limits.max_message_size),
            writer: Writer::default(),
            pings: Pings::new(&session),
            bucket: TokenBucket::new(limits.max_event_burst),
            queue: Queue::default(),
            current: None,
            rate_wait: None,
            waited: false,
            reading: true,
            started: Instant::now(),
            session,
        };
        conn.decoder.set_inflate(deflate.is_some());
        // The bytes that came with the handshake.
        let mut frames = Vec::new();
        let first = conn.decoder.feed(&leftover, &mut frames);
        conn.on_frames(frames);
        if let Err(e) = first {
            conn.read_failed(ReadFail::Protocol(e));
        }
        Some(conn)
    }

    /// Drives the connection until its session is closing (or the client is gone) and no
    /// command runs.
    fn poll_run(&mut self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>) -> Poll<()> {
        let session = self.session.clone();
        let session = &*session;
        let app = session.app();
        let limits = &app.cfg().limits;
        // Before the outbox is looked at: a frame queued from now on wakes this task.
        session.outbox().register(cx.waker());
        for _ in 0..ROUNDS_PER_POLL {
            let closing = session.is_closing();
            if self.current.is_none() && self.rate_wait.is_none() && !closing {
                self.start_next_command();
            }
            if self.current.is_none() {
                if closing {
                    for frame in self.queue.take_all() {
                        ignored(session, &frame);
                    }
                    return Poll::Ready(());
                }
                if !self.reading && self.queue.is_empty() {
                    return Poll::Ready(());
                }
            }
            if let Some(command) = &mut self.current {
                if command.as_mut().poll(cx).is_ready() {
                    self.current = None;
                    continue;
                }
            }
            let mut progress = false;
            // At most `max_pending` events wait behind the running one; beyond that the socket
            // is not read (TCP back-pressure on a client that floods). One read may complete
            // several frames, so the queue can pass that bound by one read's worth (64 KiB).
            if self.reading
                && self.rate_wait.is_none()
                && self.queue.len() < limits.max_pending_events
            {
                let mut frames = Vec::new();
                if let Poll::Ready(r) =
                    poll_read_frames(cx, &mut self.io, &mut self.decoder, &mut frames)
                {
                    self.on_frames(frames);
                    if let Err(fail) = r {
                        self.read_failed(fail);
                    }
                    progress = true;
                }
            }
            if !self.writer.done
                && self
                    .writer
                    .poll_step(cx, session, &mut self.io, true)
                    .is_ready()
            {
                progress = true;
            }
            let ping_deadline = if session.is_closing() {
                None
            } else {
                self.pings.deadline(session)
            };
            let linger = self.writer.coalesce_until.filter(|_| self.writer.lingering);
            let deadline = [self.rate_wait, ping_deadline, linger]
                .into_iter()
                .flatten()
                .min();
            if let Some(d) = deadline {
                // Moved only when the deadline changes: a new timer per wake-up costs a
                // timer-wheel insert and removal per message.
                if timer.deadline() != d {
                    timer.as_mut().reset(d);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    self.on_timer(ping_deadline);
                    progress = true;
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Starts the command at the head of the queue, if the event budget allows (R-ORD-1).
    fn start_next_command(&mut self) {
        let Some(frame) = self.queue.pop_front() else {
            return;
        };
        let session = &self.session;
        let limits = &session.app().cfg().limits;
        let now = Instant::now();
        match self
            .bucket
            .take(now, limits.max_events_per_second, limits.max_event_burst)
        {
            Ok(()) => {
                self.waited = false;
                self.current = Some(Box::pin(session.clone().process(frame, false)));
            }
            Err(wait) if limits.event_rate_policy == EventRatePolicy::Delay => {
                if !self.waited {
                    session.app().metrics.rate_delayed();
                    self.waited = true;
                }
                self.queue.push_front(frame);
                self.rate_wait = Some(now + wait);
            }
            Err(_) => self.current = Some(Box::pin(session.clone().process(frame, true))),
        }
    }

    /// The timer fired: the rate wait is over, a ping is due or timed out, the linger is over.
    fn on_timer(&mut self, ping_deadline: Option<Instant>) {
        let now = Instant::now();
        if self.rate_wait.is_some_and(|t| t <= now) {
            self.rate_wait = None;
        }
        if self.writer.lingering && self.writer.coalesce_until.is_some_and(|t| t <= now) {
            self.writer.lingering = false;
        }
        if ping_deadline.is_some_and(|t| t <= now) {
            self.pings.on_timer(&self.session, now);
        }
    }

    /// Hands the frames of one read to the session: messages to the command queue (or ignored
    /// when the session is closing, R-WS-12), pings answered, pongs to the ping schedules, the
    /// client's close answered (the closing handshake, echoing its code) and reading stopped.
    fn on_frames(&mut self, frames: Vec<Frame>) {
        let session = &*self.session;
        for frame in frames {
            let message = match frame {
                Frame::Text(t) => ClientFrame::Text(t),
                Frame::Binary(b) => ClientFrame::Binary(b),
                Frame::Pong(p) => {
                    self.pings.on_pong(session, &p, Instant::now());
                    continue;
                }
                Frame::Ping(p) => {
                    session.send_pong(p);
                    continue;
                }
                Frame::Close(close) => {
                    let (code, reason) = match close {
                        None => (None, String::new()),
                        Some((code, reason)) => (Some(code), reason),
                    };
                    session.reply_close(code, reason);
                    self.reading = false;
                    continue;
                }
            };
            if session.is_closing() {
                ignored(session, &message);
            } else {
                self.queue.push_back(message);
            }
        }
    }

    /// The end of reading: the client went away, or broke the protocol (closed with 1002, 1007
    /// or 1009: R-WS-4, R-WS-5).
    fn read_failed(&mut self, fail: ReadFail) {
        self.reading = false;
        let session = &self.session;
        match fail {
            ReadFail::Protocol(e) => {
                tracing::info!(session = session.id, error = %e, "closing connection");
                session.close(e.close_code(), "");
            }
            ReadFail::Gone(e) => {
                let error = e
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "end of stream".into());
                tracing::debug!(session = session.id, error, "connection lost");
            }
        }
    }

    /// Ends the session (R-END-2: once no command is in progress), then the closing handshake,
    /// while the writer goes on writing (no longer lingering).
    async fn finish(mut self) {
        let session = self.session.clone();
        let app = session.app().clone();
        let id = session.id;
        let server_closed = session.is_closing();
        // A slow consumer's close is bounded (docs/CONFIG.md, `limits.max_outbound_bytes`): the
        // socket gets SLOW_CLOSE_WRITE to take the close frame, counted from here (the decision:
        // the session ends as soon as no command runs), or it is reset.
        let slow = session.is_slow_consumer();
        let write_by = Instant::now() + SLOW_CLOSE_WRITE;
        // How long the client's close frame is waited for, then the writer's last flush.
        let (reply_limit, flush_limit) = if slow {
            (SLOW_CLOSE_REPLY, SLOW_CLOSE_REPLY)
        } else {
            (CLOSE_TIMEOUT, Duration::from_secs(2))
        };
        let mut end = Box::pin(session.end());
        self.while_writing(None, |cx, _| end.as_mut().poll(cx))
            .await;
        if server_closed {
            // Let the close frame reach the client before the session counts as ended
            // (shutdown waits for sessions, then the process exits).
            let limit = if slow {
                write_by.saturating_duration_since(Instant::now())
            } else {
                Duration::from_secs(2)
            };
            self.while_writing(Some(limit), |_, _| {
                if session.is_close_flushed() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
        }
        let reset = slow && !session.is_close_flushed();
        app.metrics.connection_closed();
        app.unregister(id);
        tracing::info!(
            session = id,
            remote = %session.remote,
            duration = self.started.elapsed().as_secs_f64(),
            "connection closed"
        );

        if reset {
            // The client did not take the close frame: the connection is reset, and what was
            // queued for it is dropped with it.
            tracing::info!(session = id, "slow consumer: connection reset");
            self.io.reset();
            session.dropped_pushes(session.outbox().discard());
            return;
        }
        // Wait (bounded) for the client's close frame after a server-initiated close, then let
        // the writer flush what it has and close.
        if server_closed && self.reading {
            let mut decoder = std::mem::replace(&mut self.decoder, FrameReader::new(0));
            let mut frames = Vec::new();
            let s = session.clone();
            self.while_writing(Some(reply_limit), |cx, io| {
                loop {
                    let r = ready!(poll_read_frames(cx, io, &mut decoder, &mut frames));
                    for frame in frames.drain(..) {
                        match frame {
                            Frame::Text(t) => ignored(&s, &ClientFrame::Text(t)),
                            Frame::Binary(b) => ignored(&s, &ClientFrame::Binary(b)),
                            Frame::Close(_) => return Poll::Ready(()),
                            Frame::Ping(_) | Frame::Pong(_) => {}
                        }
                    }
                    if r.is_err() {
                        return Poll::Ready(());
                    }
                }
            })
            .await;
        }
        session.outbox_finish();
        let finished = poll_fn(|cx| {
            session.outbox().register(cx.waker());
            while !self.writer.done {
                ready!(self.writer.poll_step(cx, &session, &mut self.io, false));
            }
            Poll::Ready(())
        });
        let _ = tokio::time::timeout(flush_limit, finished).await;
        // What the writer could not write (it was stuck on a client that does not read).
        session.dropped_pushes(session.outbox().discard());
    }

    /// Polls `f` while the writer goes on writing, for at most `limit`; `None` if the time ran
    /// out.
    async fn while_writing<T>(
        &mut self,
        limit: Option<Duration>,
        mut f: impl FnMut(&mut Context<'_>, &mut S) -> Poll<T>,
    ) -> Option<T> {
        let mut deadline = limit.map(|l| Box::pin(tokio::time::sleep(l)));
        let session = self.session.clone();
        poll_fn(|cx| {
            // The writer, the close flag and the end's removals wake this task through it.
            session.outbox().register(cx.waker());
            loop {
                if let Poll::Ready(out) = f(cx, &mut self.io) {
                    return Poll::Ready(Some(out));
                }
                let mut wrote = false;
                while !self.writer.done
                    && self
                        .writer
                        .poll_step(cx, &session, &mut self.io, false)
                        .is_ready()
                {
                    wrote = true;
                }
                if let Some(d) = &mut deadline {
                    if d.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                }
                if !wrote {
                    return Poll::Pending;
                }
            }
        })
        .await
    }
}

/// The client messages waiting for the running command: boxed, and released when empty (an
/// idle connection holds 8 bytes, not a 32-byte `VecDeque` and its buffer).
#[derive(Default)]
#[allow(clippy::box_collection)] // the point: 8 bytes inline instead of 32
struct Queue(Option<Box<VecDeque<ClientFrame>>>);

impl Queue {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push_back(&mut self, frame: ClientFrame) {
        self.0.get_or_insert_with(Default::default).push_back(frame);
    }

    fn push_front(&mut self, frame: ClientFrame) {
        self.0
            .get_or_insert_with(Default::default)
            .push_front(frame);
    }

    fn pop_front(&mut self) -> Option<ClientFrame> {
        let q = self.0.as_mut()?;
        let frame = q.pop_front();
        if q.is_empty() {
            self.0 = None;
        }
        frame
    }

    fn take_all(&mut self) -> VecDeque<ClientFrame> {
        self.0.take().map(|q| *q).unwrap_or_default()
    }
}

fn ignored(session: &Session, frame: &ClientFrame) {
    let data = match frame {
        ClientFrame::Text(t) => t.as_str().to_owned(),
        ClientFrame::Binary(b) => String::from_utf8_lossy(b).into_owned(),
    };
    tracing::warn!(
        session = session.id,
        data = data.as_str(),
        "inactive client event ignored"
    );
}

/// Client events a session may start (`limits.max_events_per_second`, `max_event_burst`; read
/// from the configuration at each take).
struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(burst: f64) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is there (nothing is taken then).
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> Result<(), Duration> {
        if rate <= 0.0 {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

/// One ping schedule's state: when its next ping is due, or, with a ping awaiting its pong,
/// that ping's payload and when it was sent.
#[derive(Clone, Copy)]
struct Pinger {
    at: Instant,
    outstanding: Option<[u8; 4]>,
}

/// What a ping schedule is: its interval and timeout, the close when a pong is late, the log.
struct PingSpec {
    interval: Duration,
    timeout: Duration,
    close: (u16, &'static str),
    log: &'static str,
}

impl PingSpec {
    /// `which`: 0 is the configured `ws.ping` (R-WS-7), 1 the library keepalive (R-WS-8).
    fn of(session: &Session, which: usize) -> PingSpec {
        if which == 0 {
            let ping = &session.app().cfg().ws.ping;
            PingSpec {
                interval: ping.interval.duration(),
                timeout: ping.timeout.duration(),
                close: (1000, ""),
                log: "ping timeout",
            }
        } else {
            PingSpec {
                interval: KEEPALIVE,
                timeout: KEEPALIVE,
                close: (1011, "keepalive ping timeout"),
                log: "keepalive ping timeout",
            }
        }
    }
}

/// The two ping schedules of a connection (a schedule with a zero interval is off). Only their
/// state is kept per connection (48 bytes); what they are comes from the configuration.
struct Pings([Option<Pinger>; 2]);

impl Pings {
    fn new(session: &Session) -> Pings {
        let now = Instant::now();
        Pings(std::array::from_fn(|which| {
            let spec = PingSpec::of(session, which);
            (!spec.interval.is_zero()).then(|| Pinger {
                at: now + spec.interval,
                outstanding: None,
            })
        }))
    }

    fn deadline(&self, session: &Session) -> Option<Instant> {
        let mut min: Option<Instant> = None;
        for (which, p) in self.0.iter().enumerate() {
            let Some(p) = p else { continue };
            let d = match p.outstanding {
                Some(_) => p.at + PingSpec::of(session, which).timeout,
                None => p.at,
            };
            min = Some(min.map_or(d, |m| m.min(d)));
        }
        min
    }

    /// Sends the pings that are due; closes the session when a pong is late.
    fn on_timer(&mut self, session: &Session, now: Instant) {
        for (which, slot) in self.0.iter_mut().enumerate() {
            let Some(p) = slot else { continue };
            let spec = PingSpec::of(session, which);
            match p.outstanding {
                Some(_) if now >= p.at + spec.timeout => {
                    tracing::warn!(session = session.id, "{}", spec.log);
                    session.close(spec.close.0, spec.close.1);
                    return;
                }
                Some(_) => {}
                None if now >= p.at => {
                    let payload = rand::random::<[u8; 4]>();
                    p.outstanding = Some(payload);
                    p.at = now;
                    tracing::trace!(session = session.id, "ping");
                    session.send_ping(Bytes::copy_from_slice(&payload));
                }
                None => {}
            }
        }
    }

    fn on_pong(&mut self, session: &Session, payload: &[u8], now: Instant) {
        for (which, slot) in self.0.iter_mut().enumerate() {
            let Some(p) = slot else { continue };
            if p.outstanding
                .is_some_and(|expected| expected[..] == *payload)
            {
                let rtt = now.saturating_duration_since(p.at);
                tracing::trace!(latency = rtt.as_secs_f64(), "pong");
                p.at = now + PingSpec::of(session, which).interval.saturating_sub(rtt);
                p.outstanding = None;
            }
        }
    }
}

/// The connection's writer: drains the session's outbox into the socket, one vectored write per
/// batch of ready frames; while pushes keep coming, at most one batch per `ws.write_coalesce`
/// (fewer, larger writes: the kernel's cost is per write, not per byte). All its progress is in
/// `self` ([`Writer::poll_step`]), and it holds nothing between batches.
#[derive(Default)]
struct Writer {
    /// No batch of pushes only is taken before then (the previous batch was taken less than
    /// `ws.write_coalesce` ago).
    coalesce_until: Option<Instant>,
    /// Set while the writer lingers (pushes are queued, none urgent) until `coalesce_until`:
    /// the driver's timer wakes it then.
    lingering: bool,
    /// The frames of the batch being written (none between batches: nothing is kept).
    frames: Option<Box<Batch>>,
    /// A batch was taken from the outbox and is not finished yet.
    busy: bool,
    /// Pushes in the batch, and pushes that will never be written.
    pushed: u32,
    /// Pushes taken compressed (a counter's pending increment).
    compressed: u32,
    unsent: u32,
    /// The batch holds the server's close frame / the `Finish` marker.
    close_sent: bool,
    finish: bool,
    /// A close frame was queued: later frames are not sent.
    closed: bool,
    /// A write failed: nothing more is written.
    broken: bool,
    /// The socket was shut down (after `Finish`).
    done: bool,
}

impl Writer {
    /// Takes a batch from the outbox (unless one is being written) and writes it: `Ready` once
    /// it is written (or could not be), `Pending` while the outbox is empty, while the writer
    /// lingers (`linger`: `ws.write_coalesce` applies) or while the socket is full.
    fn poll_step<S: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        session: &Session,
        io: &mut S,
        linger: bool,
    ) -> Poll<()> {
        if session.outbox().take_cut() && !self.closed {
            // The slow-consumer close: the frames not started are dropped, the close frame
            // is next in the outbox.
            if let Some(frames) = self.frames.as_mut() {
                let (kept, dropped) = frames.cut();
                self.pushed = kept;
                self.unsent += dropped;
            }
        }
        if !self.busy {
            let until = if linger { self.coalesce_until } else { None };
            match session.outbox().try_take(until) {
                Taken::Empty => return Poll::Pending,
                Taken::Linger(_) => {
                    self.lingering = true;
                    return Poll::Pending;
                }
                Taken::Batch(batch) => {
                    self.lingering = false;
                    self.take(session, batch);
                }
            }
        }
        if let Some(frames) = self.frames.as_mut().filter(|_| !self.broken) {
            let mut written = Ok(());
            if !frames.is_empty() {
                written = ready!(frames.poll_write_all(cx, io));
            }
            if written.is_ok() {
                written = ready!(Pin::new(&mut *io).poll_flush(cx));
            }
            if written.is_err() {
                self.broken = true;
                (self.pushed, self.unsent) = (0, self.unsent + self.pushed);
            }
        }
        self.frames = None;
        if self.finish {
            // Errors do not matter: the connection is over.
            let _ = ready!(Pin::new(&mut *io).poll_shutdown(cx));
        }
        self.batch_done(session);
        Poll::Ready(())
    }

    /// Encodes a batch taken from the outbox.
    fn take(&mut self, session: &Session, batch: VecDeque<Out>) {
        let outbox = session.outbox();
        let coalesce = session.write_coalesce();
        if !coalesce.is_zero() {
            self.coalesce_until = Some(Instant::now() + coalesce);
        }
        outbox.set_writer_busy(true);
        self.busy = true;
        let frames = self.frames.get_or_insert_with(Default::default);
        for out in batch {
            let (text, is_push, compressed) = match out {
                Out::Text(text) => (text, false, None),
                Out::Push(text) => (text, true, None),
                Out::PushCompressed(text, compressed) => (text, true, Some(compressed)),
                Out::Ping(p) => {
                    if !self.closed {
                        frames.frame(wire::OP_PING, p);
                    }
                    continue;
                }
                Out::Pong(p) => {
                    if !self.closed {
                        frames.frame(wire::OP_PONG, p);
                    }
                    continue;
                }
                Out::Close(code, reason) => {
                    if !self.closed {
                        frames.close(Some(code), reason);
                    }
                    self.closed = true;
                    self.close_sent = true;
                    continue;
                }
                Out::CloseReply(code, reason) => {
                    if !self.closed {
                        frames.close(code, &reason);
                    }
                    self.closed = true;
                    continue;
                }
                Out::Finish => {
                    self.finish = true;
                    break;
                }
            };
            outbox.written(compressed.as_ref().map_or(text.len(), Bytes::len));
            if self.closed || self.broken {
                tracing::warn!(session = session.id, "attempted to send to closed socket");
                self.unsent += u32::from(is_push);
                continue;
            }
            if tracing::enabled!(tracing::Level::DEBUG) {
                tracing::debug!(session = session.id, data = text.as_str(), "client send");
            }
            let (op, payload) = match compressed {
                Some(c) => {
                    self.compressed += 1;
                    (wire::OP_TEXT | wire::RSV1, c)
                }
                None => (wire::OP_TEXT, text.into()),
            };
            if is_push {
                self.pushed += 1;
                frames.push(op, payload);
            } else {
                frames.frame(op, payload);
            }
        }
    }

    /// The batch is written (or could not be).
    fn batch_done(&mut self, session: &Session) {
        if self.close_sent {
            session.set_close_flushed();
            self.close_sent = false;
        }
        session.outbox().set_writer_busy(false);
        session.delivered_pushes(u64::from(std::mem::take(&mut self.pushed)));
        let compressed = std::mem::take(&mut self.compressed);
        if compressed > 0 {
            session.compressed_pushes(u64::from(compressed));
        }
        session.dropped_pushes(u64::from(std::mem::take(&mut self.unsent)));
        self.busy = false;
        self.done = self.finish;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_burst_then_rate_then_wait() {
        let (rate, burst) = (10.0, 3.0);
        let t0 = Instant::now();
        let mut b = TokenBucket::new(burst);
        b.last = t0;
        for _ in 0..3 {
            assert_eq!(b.take(t0, rate, burst), Ok(()));
        }
        // Empty: one token comes after 1/10 s.
        let wait = b.take(t0, rate, burst).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // Nothing was taken by the refusal: after the wait there is exactly one.
        let later = t0 + wait;
        assert_eq!(b.take(later, rate, burst), Ok(()));
        assert!(b.take(later, rate, burst).is_err());
        // Refills up to the burst, not beyond.
        let much_later = later + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.take(much_later, rate, burst), Ok(()));
        }
        assert!(b.take(much_later, rate, burst).is_err());
    }

    #[test]
    fn token_bucket_rate_zero_is_unlimited() {
        let mut b = TokenBucket::new(1.0);
        let now = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(b.take(now, 0.0, 1.0), Ok(()));
        }
    }

    /// A guard on idle memory (issue 12): tokio's task cell is aligned to 128 bytes, and an idle
    /// connection's future must keep it at 512 bytes (the cell adds about 110 bytes of its own).
    #[test]
    fn an_idle_connection_task_fits_a_512_byte_cell() {
        let size = std::mem::size_of::<Task<tokio::net::TcpStream>>();
        assert!(size <= 392, "connection task future: {size} bytes");
    }
}
