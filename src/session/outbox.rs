//! The session's outgoing queue with its byte budget (the slow-consumer policy).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A frame for the connection's writer.
#[derive(Debug)]
pub enum Out {
    /// A reply.
    Text(Utf8Bytes),
    /// A push: a published message, a trailing throttled message, a server-initiated
    /// unsubscribe. Counted as dropped when it is never written.
    Push(Utf8Bytes),
    /// A push sent compressed (permessage-deflate): the message (for the logs) and the frame's
    /// payload.
    PushCompressed(Utf8Bytes, Bytes),
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

/// What the writer finds in the outbox ([`Outbox::try_take`]).
pub enum Taken {
    /// Nothing queued.
    Empty,
    /// Only pushes are queued and the writer lingers until then (`ws.write_coalesce`).
    Linger(Instant),
    /// Everything that was queued.
    Batch(VecDeque<Out>),
}

/// The session's outgoing queue with its byte budget. A plain queue under a mutex: the writer
/// takes everything queued at once (one flush per batch), and an idle session holds no buffer.
pub struct Outbox {
    queue: Mutex<VecDeque<Out>>,
    /// The connection's task, woken when the queue goes from empty to non-empty and for urgent
    /// frames (24 bytes, where a `Notify` is 32).
    ready: AtomicWaker,
    /// A reply or control frame is queued: the writer does not linger (`ws.write_coalesce`).
    urgent: AtomicBool,
    queued: AtomicUsize,
    /// The slow-consumer policy closed the session: the writer drops the frames of its batch
    /// that it has not started writing.
    cut: AtomicBool,
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
            ready: AtomicWaker::new(),
            urgent: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            cut: AtomicBool::new(false),
            busy_since_ms: AtomicU64::new(0),
        }
    }
}

impl Outbox {
    /// Queues `out`. The writer is woken when the queue was empty, and for an `urgent` frame (a
    /// reply or a control frame) also while it lingers before writing a batch of pushes.
    pub(super) fn push(&self, out: Out, urgent: bool) {
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
            self.ready.wake();
        }
    }

    /// Queues a reply (`urgent`) or a push; returns the bytes now queued.
    pub(super) fn push_text(&self, text: Utf8Bytes, urgent: bool) -> usize {
        let len = text.len();
        let out = if urgent {
            Out::Text(text)
        } else {
            Out::Push(text)
        };
        self.enqueue(out, len, urgent)
    }

    /// Queues a compressed push; returns the bytes now queued (counted compressed).
    pub(super) fn push_compressed(&self, text: Utf8Bytes, compressed: Bytes) -> usize {
        let len = compressed.len();
        self.enqueue(Out::PushCompressed(text, compressed), len, false)
    }

    /// Queues a frame of `len` bytes against the budget; returns the bytes now queued.
    fn enqueue(&self, out: Out, len: usize, urgent: bool) -> usize {
        let total = self.queued.fetch_add(len, Ordering::Relaxed) + len;
        // A backlog big enough for a full write ends the writer's linger: coalescing saves
        // small writes, it must not hold back a burst (nor push a reading client towards the
        // slow-consumer limit).
        self.push(out, urgent || total >= COALESCE_FLUSH_BYTES);
        total
    }

    /// Empties the queue once the writer is gone; returns how many pushes were in it.
    pub fn discard(&self) -> u64 {
        let q = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
        self.queued.store(0, Ordering::Relaxed);
        q.iter()
            .filter(|o| matches!(o, Out::Push(_) | Out::PushCompressed(..)))
            .count() as u64
    }

    /// The slow-consumer close: everything queued is dropped, `close` (the close frame) goes
    /// first, and the writer cuts its batch after the frame it is writing. Returns how many
    /// pushes were dropped.
    pub(super) fn close_first(&self, close: Out) -> u64 {
        let dropped = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let dropped = std::mem::take(&mut *q);
            q.push_back(close);
            self.queued.store(0, Ordering::Relaxed);
            self.urgent.store(true, Ordering::Relaxed);
            self.cut.store(true, Ordering::Release);
            dropped
        };
        self.ready.wake();
        dropped
            .iter()
            .filter(|o| matches!(o, Out::Push(_) | Out::PushCompressed(..)))
            .count() as u64
    }

    /// Whether the writer must cut its batch (once: the flag is cleared).
    pub fn take_cut(&self) -> bool {
        // A plain load first: this runs at every step of the writer.
        self.cut.load(Ordering::Relaxed) && self.cut.swap(false, Ordering::Acquire)
    }

    pub(super) fn push_control(&self, out: Out) {
        self.push(out, true);
    }

    /// The connection's task registers itself before it looks at the queue: a frame queued
    /// after [`Outbox::try_take`] found nothing (or found pushes to linger on) wakes it.
    pub fn register(&self, waker: &std::task::Waker) {
        self.ready.register(waker);
    }

    /// Wakes the connection's task (something it waits for besides the queue happened).
    pub(super) fn wake(&self) {
        self.ready.wake();
    }

    /// Everything queued, for the writer. With a `coalesce_until` still ahead (the previous
    /// batch was taken less than `ws.write_coalesce` ago), a queue of pushes only is left to
    /// fill until then; an urgent frame (or a full backlog) ends the linger.
    pub fn try_take(&self, coalesce_until: Option<Instant>) -> Taken {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.is_empty() {
            return Taken::Empty;
        }
        if !self.urgent.swap(false, Ordering::Relaxed) {
            if let Some(until) = coalesce_until.filter(|u| *u > Instant::now()) {
                return Taken::Linger(until);
            }
        }
        Taken::Batch(std::mem::take(&mut *q))
    }

    /// The writer starts writing a batch (`true`) or has written everything queued (`false`).
    pub fn set_writer_busy(&self, busy: bool) {
        let v = if busy { clock_ms() } else { 0 };
        self.busy_since_ms.store(v, Ordering::Relaxed);
    }

    /// Whether the writer has been stuck for longer than the grace period.
    pub(super) fn writer_stuck(&self) -> bool {
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
