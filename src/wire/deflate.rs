//! permessage-deflate (RFC 7692): the negotiation, the inflating of client messages, and the
//! compression of published messages as one stream per channel shared by its subscribers.
//!
//! What we agree to (the answer to the first acceptable offer):
//! `permessage-deflate; server_max_window_bits=W; client_no_context_takeover`, plus
//! `server_no_context_takeover` when the client asks for it or `context_takeover = false`.
//! - `client_no_context_takeover` (a server may always ask it): every client message is
//!   inflated on its own by an inflater of the worker thread, so no connection holds an inflate
//!   window between messages.
//! - The server compresses only published messages (replies, pings and closes go
//!   uncompressed; RSV1 is per message, and an uncompressed message leaves the client's
//!   inflate window as it was).
//!
//! How published messages are compressed (see ARCHITECTURE.md for the measurements behind it):
//! each channel keeps one compressor ([`Stream`]) for the frame its plain subscribers share, so
//! a message is compressed once per channel with context takeover, not once per subscriber. A
//! session may take a frame of that stream only if its client's inflate window holds exactly the
//! stream's messages since the stream's last *join point* (a message compressed by a fresh or
//! reset compressor, which refers to nothing before it). [`Sync`] tracks that per session: a
//! session in step gets each next compressed frame; one that is not (it just subscribed, a filter
//! skipped a message for it, it is in step with another channel) gets the message uncompressed,
//! which does not disturb its window, and asks the stream for a join point. The stream makes one
//! (resets its compressor, about 5 µs) at most every [`JOIN_GAP`] messages. A compressor costs
//! about 270 KB (15-bit window): at most `max_streams` exist, and a channel idle for `stream_idle` gives its
//! compressor back (its next message is a join point).

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Inflate, InflateFlush, Status};

use crate::config::CompressionConfig;

/// Why a compressed client message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the limit.
    TooBig,
    /// It is not valid deflate data.
    Invalid,
}

/// The bytes a sync flush ends with; removed from every compressed message and added back
/// before inflating one (RFC 7692 §7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// A stream makes a join point at most once per this many messages.
pub const JOIN_GAP: u64 = 8;

/// A session in step with one channel switches to another after this many of the other's
/// messages went to it uncompressed in a row.
const SWITCH_AFTER: u8 = 16;

/// What was agreed with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The server's window (`server_max_window_bits`).
    pub window_bits: u8,
    /// The client asked `server_no_context_takeover` (or the server chose it).
    pub no_context_takeover: bool,
}

impl Agreed {
    /// The value of the `Sec-WebSocket-Extensions` response header.
    pub fn response(&self) -> String {
        let mut s = format!(
            "permessage-deflate; server_max_window_bits={}; client_no_context_takeover",
            self.window_bits
        );
        if self.no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        s
    }

    /// How published messages go to this client: through the channel streams, compressed one
    /// by one, or uncompressed (its window is smaller than the server's compressors use).
    pub fn mode(&self, cfg: &CompressionConfig) -> Mode {
        if self.window_bits < cfg.window_bits {
            Mode::Plain
        } else if self.no_context_takeover {
            Mode::EachMessage
        } else {
            Mode::Streams
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Streams,
    EachMessage,
    Plain,
}

/// Picks the first acceptable `permessage-deflate` offer among the values of the client's
/// `Sec-WebSocket-Extensions` headers. An offer with an unknown, repeated or invalid parameter
/// is declined (the next one is tried); nothing here fails the handshake.
pub fn negotiate<'a>(
    headers: impl IntoIterator<Item = &'a str>,
    cfg: &CompressionConfig,
) -> Option<Agreed> {
    if !cfg.enabled {
        return None;
    }
    for header in headers {
        for offer in header.split(',') {
            if let Some(a) = accept_offer(offer, cfg) {
                return Some(a);
            }
        }
    }
    None
}

fn accept_offer(offer: &str, cfg: &CompressionConfig) -> Option<Agreed> {
    let mut parts = offer.split(';');
    let name = parts.next()?.trim();
    if !name.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut server_bits: Option<u8> = None;
    let mut seen = [false; 4];
    let mut server_no_ctx = false;
    for p in parts {
        let p = p.trim();
        if p.is_empty() {
            return None;
        }
        let (key, value) = match p.split_once('=') {
            Some((k, v)) => {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                (k.trim(), Some(v))
            }
            None => (p, None),
        };
        let index = match key.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
        match (index, value) {
            (0, None) => server_no_ctx = true,
            (1, None) => {}
            (2, Some(v)) => server_bits = Some(window_bits(v)?),
            (3, None) => {}
            (3, Some(v)) => {
                window_bits(v)?;
            }
            _ => return None,
        }
    }
    let window = server_bits.map_or(cfg.window_bits, |b| b.min(cfg.window_bits));
    Some(Agreed {
        window_bits: window,
        no_context_takeover: server_no_ctx || !cfg.context_takeover,
    })
}

/// A window size parameter: 8 to 15, digits only, no leading zero (RFC 7692 §7.1.2).
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

thread_local! {
    /// The inflater of the worker thread (every client message is inflated on its own).
    static INFLATER: RefCell<Option<Inflate>> = const { RefCell::new(None) };
    /// The compressor of the worker thread for messages compressed one by one.
    static SOLO: RefCell<Option<(u32, u8, Deflate)>> = const { RefCell::new(None) };
}

/// Inflates one client message (its frames' payloads together), never producing more than
/// `max` bytes: past that it stops with [`InflateError::TooBig`] without holding the rest.
pub fn inflate(data: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    INFLATER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let inf = cell.get_or_insert_with(|| Inflate::new(false, 15));
        inf.reset(false);
        let r = inflate_with(inf, data, max);
        if r.is_err() {
            // A failed stream may leave state behind: start the next message from scratch.
            *cell = None;
        }
        r
    })
}

fn inflate_with(inf: &mut Inflate, data: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let limit = max.saturating_add(1);
    let mut out: Vec<u8> = Vec::with_capacity(data.len().saturating_mul(4).max(256).min(limit));
    for input in [data, &TAIL[..]] {
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= limit {
                    return Err(InflateError::TooBig);
                }
                let more = out.len().max(4096).min(limit - out.len());
                out.reserve_exact(more);
            }
            let (in0, out0) = (inf.total_in(), inf.total_out());
            let status = inf
                .decompress_uninit(
                    &input[pos..],
                    out.spare_capacity_mut(),
                    InflateFlush::SyncFlush,
                )
                .map_err(|_| InflateError::Invalid)?;
            let consumed = (inf.total_in() - in0) as usize;
            let produced = (inf.total_out() - out0) as usize;
            // SAFETY: the inflater initialised `produced` bytes of the spare capacity.
            unsafe { out.set_len(out.len() + produced) };
            pos += consumed;
            if out.len() > max {
                return Err(InflateError::TooBig);
            }
            match status {
                Status::StreamEnd => {
                    // A final block ends the message; nothing may follow it but the tail.
                    return Ok(out);
                }
                _ if pos == input.len() && out.len() < out.capacity() => break,
                _ if consumed == 0 && produced == 0 && out.len() < out.capacity() => {
                    return Err(InflateError::Invalid);
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Compresses `data` into a payload for an RSV1 frame (the sync flush's tail removed).
fn compress_into(d: &mut Deflate, data: &[u8]) -> Bytes {
    let mut out: Vec<u8> = Vec::with_capacity(data.len() + data.len() / 8 + 64);
    let mut pos = 0;
    loop {
        if out.len() == out.capacity() {
            out.reserve(data.len() / 4 + 64);
        }
        let (in0, out0) = (d.total_in(), d.total_out());
        let r = d.compress_uninit(
            &data[pos..],
            out.spare_capacity_mut(),
            DeflateFlush::SyncFlush,
        );
        let consumed = (d.total_in() - in0) as usize;
        let produced = (d.total_out() - out0) as usize;
        // SAFETY: the compressor initialised `produced` bytes of the spare capacity.
        unsafe { out.set_len(out.len() + produced) };
        pos += consumed;
        // Done when all input is in and the flush did not run out of room.
        if r.is_err() || (pos == data.len() && out.len() < out.capacity()) {
            break;
        }
    }
    debug_assert!(out.ends_with(&TAIL));
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    Bytes::from(out)
}

fn new_deflate(level: u32, window_bits: u8) -> Deflate {
    Deflate::new_with_config(DeflateConfig {
        level: level as i32,
        window_bits: -i32::from(window_bits),
        // zlib's default (8) costs 114 KB more per compressor for the same output on messages
        // of a few KB (measured: level 1, 15-bit window, 266 KB with 1 or 3, 380 KB with 8).
        mem_level: 3,
        ..DeflateConfig::default()
    })
}

/// One message compressed on its own (for clients without context takeover), by the worker
/// thread's compressor.
pub fn compress_solo(data: &[u8], level: u32, window_bits: u8) -> Bytes {
    SOLO.with(|cell| {
        let mut cell = cell.borrow_mut();
        match &mut *cell {
            Some((l, w, d)) if *l == level && *w == window_bits => d.reset(),
            slot => *slot = Some((level, window_bits, new_deflate(level, window_bits))),
        }
        let (_, _, d) = cell.as_mut().expect("set above");
        compress_into(d, data)
    })
}

/// The compressors that exist (channel streams), against `max_streams`.
#[derive(Default)]
pub struct Budget {
    live: AtomicUsize,
}

impl Budget {
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
}

/// A compressor counted in its budget.
struct Counted {
    deflate: Deflate,
    budget: Arc<Budget>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.budget.live.fetch_sub(1, Ordering::Relaxed);
    }
}

static NEXT_STREAM_ID: AtomicU64 = AtomicU64::new(1);

/// A frame of a channel stream: the compressed payload, its place in the stream, and whether
/// it is a join point.
#[derive(Clone, Debug)]
pub struct StreamFrame {
    pub bytes: Bytes,
    pub seq: u64,
    pub join_point: bool,
}

/// One channel's compression stream (see the module documentation).
pub struct Stream {
    id: u64,
    deflate: Option<Box<Counted>>,
    /// The place of the next message.
    seq: u64,
    /// The place of the latest join point.
    joined_at: u64,
    /// A session asked for a join point.
    want_join: bool,
    /// When the stream last compressed (the caller's clock).
    last_used: Option<Instant>,
}

impl Default for Stream {
    fn default() -> Self {
        Stream {
            id: NEXT_STREAM_ID.fetch_add(1, Ordering::Relaxed),
            deflate: None,
            seq: 0,
            joined_at: 0,
            want_join: false,
            last_used: None,
        }
    }
}

impl Stream {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Where the next message would go: its place and whether it is a join point, or `None`
    /// when no compressor can be had (the budget is spent). Takes a compressor if needed.
    pub fn next_slot(
        &mut self,
        cfg: &CompressionConfig,
        budget: &Arc<Budget>,
    ) -> Option<(u64, bool)> {
        match &mut self.deflate {
            None => {
                let live = budget.live.fetch_add(1, Ordering::Relaxed);
                if live >= cfg.max_streams {
                    budget.live.fetch_sub(1, Ordering::Relaxed);
                    return None;
                }
                self.deflate = Some(Box::new(Counted {
                    deflate: new_deflate(cfg.level, cfg.window_bits),
                    budget: budget.clone(),
                }));
                self.joined_at = self.seq;
            }
            Some(c) if self.want_join && self.seq >= self.joined_at + JOIN_GAP => {
                c.deflate.reset();
                self.joined_at = self.seq;
            }
            Some(_) => {}
        }
        if self.joined_at == self.seq {
            self.want_join = false;
        }
        Some((self.seq, self.joined_at == self.seq))
    }

    /// Compresses the message for the slot [`Stream::next_slot`] returned.
    pub fn compress(&mut self, data: &[u8], now: Instant) -> StreamFrame {
        let seq = self.seq;
        let join_point = self.joined_at == seq;
        let c = self.deflate.as_mut().expect("next_slot took a compressor");
        let bytes = compress_into(&mut c.deflate, data);
        self.seq += 1;
        self.last_used = Some(now);
        StreamFrame {
            bytes,
            seq,
            join_point,
        }
    }

    pub fn want_join(&mut self) {
        self.want_join = true;
    }

    /// Gives the compressor back if the stream was idle since `idle_since`; true if it did.
    pub fn release_if_idle(&mut self, idle_since: Instant) -> bool {
        if self.deflate.is_some() && self.last_used.is_none_or(|t| t < idle_since) {
            self.deflate = None;
            return true;
        }
        false
    }

    pub fn holds_compressor(&self) -> bool {
        self.deflate.is_some()
    }
}

/// Which stream a session's client is in step with (see the module documentation).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sync {
    /// The stream (0: none) and the place of the next message the client can take from it.
    stream: u64,
    next: u64,
    /// Messages of other channels sent uncompressed in a row while in step with `stream`.
    misses: u8,
}

/// What a session does with message `seq` of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Send the stream's compressed frame.
    Compressed,
    /// Send the message uncompressed; `want_join`: ask the stream for a join point.
    Plain { want_join: bool },
}

impl Sync {
    pub fn offer(&mut self, stream: u64, seq: u64, join_point: bool) -> Take {
        if self.stream == stream && self.next == seq {
            self.next = seq + 1;
            self.misses = 0;
            return Take::Compressed;
        }
        if self.stream == stream {
            // It missed a message of this stream: out of step.
            self.stream = 0;
        }
        let free = self.stream == 0 || self.misses >= SWITCH_AFTER;
        if join_point && free {
            *self = Sync {
                stream,
                next: seq + 1,
                misses: 0,
            };
            return Take::Compressed;
        }
        if !free {
            self.misses = self.misses.saturating_add(1);
        }
        Take::Plain {
            want_join: self.stream == 0 || self.misses >= SWITCH_AFTER,
        }
    }

    /// The client got a compressed message from outside the stream: out of step.
    pub fn leave(&mut self) {
        *self = Sync::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CompressionConfig {
        CompressionConfig::default()
    }

    fn agreed(h: &str) -> Option<Agreed> {
        negotiate([h], &cfg())
    }

    #[test]
    fn browsers_offers_are_accepted() {
        let chrome = agreed("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(
            chrome.response(),
            "permessage-deflate; server_max_window_bits=15; client_no_context_takeover"
        );
        assert_eq!(chrome.mode(&cfg()), Mode::Streams);
        assert_eq!(agreed("permessage-deflate"), Some(chrome));
        assert_eq!(
            agreed("Permessage-Deflate ;client_max_window_bits=10"),
            Some(chrome)
        );
    }

    #[test]
    fn parameters() {
        let a = agreed("permessage-deflate; server_no_context_takeover").unwrap();
        assert!(a.no_context_takeover);
        assert!(a.response().ends_with("; server_no_context_takeover"));
        assert_eq!(a.mode(&cfg()), Mode::EachMessage);
        let a = agreed("permessage-deflate; server_max_window_bits=10").unwrap();
        assert_eq!(a.window_bits, 10);
        assert_eq!(a.mode(&cfg()), Mode::Plain);
        let a = agreed("permessage-deflate; server_max_window_bits=\"15\"").unwrap();
        assert_eq!(a.window_bits, 15);
        assert!(agreed("permessage-deflate; client_no_context_takeover").is_some());
    }

    #[test]
    fn invalid_offers_are_declined_and_the_next_one_tried() {
        for bad in [
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; client_no_context_takeover=1",
            "permessage-deflate; client_max_window_bits; client_max_window_bits",
            "permessage-deflate;",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert_eq!(agreed(bad), None, "{bad}");
        }
        let a = negotiate(
            [
                "permessage-deflate; foo, permessage-deflate; server_max_window_bits=9",
                "permessage-deflate",
            ],
            &cfg(),
        )
        .unwrap();
        assert_eq!(a.window_bits, 9);
        let off = CompressionConfig {
            enabled: false,
            ..cfg()
        };
        assert_eq!(negotiate(["permessage-deflate"], &off), None);
        let no_ctx = CompressionConfig {
            context_takeover: false,
            ..cfg()
        };
        assert!(
            negotiate(["permessage-deflate"], &no_ctx)
                .unwrap()
                .no_context_takeover
        );
    }

    /// A client's inflater with context takeover (what a browser keeps).
    struct Client(Inflate);

    impl Client {
        fn new(bits: u8) -> Client {
            Client(Inflate::new(false, bits))
        }
        fn take(&mut self, payload: &[u8]) -> Vec<u8> {
            let mut input = payload.to_vec();
            input.extend_from_slice(&TAIL);
            let mut out = vec![0u8; 1 << 20];
            let o0 = self.0.total_out();
            self.0
                .decompress(&input, &mut out, InflateFlush::SyncFlush)
                .unwrap();
            out.truncate((self.0.total_out() - o0) as usize);
            out
        }
    }

    fn message(i: usize) -> Vec<u8> {
        format!(
            "{{\"event\":\"message\",\"subscription\":\"crm.org\",\"data\":{{\"id\":{i},\"status\":\"open\",\"name\":\"alpha bravo\"}}}}"
        )
        .into_bytes()
    }

    #[test]
    fn inflate_round_trip_limits_and_errors() {
        let data = [message(1), message(2), message(3)].concat();
        let c = compress_solo(&data, 1, 15);
        assert!(c.len() < data.len());
        assert_eq!(inflate(&c, 1 << 20).unwrap(), data);
        assert_eq!(inflate(&c, data.len()).unwrap(), data);
        assert_eq!(inflate(&c, data.len() - 1), Err(InflateError::TooBig));
        // A bomb: 1 MiB + 1 of zeros from a few hundred bytes.
        let zeros = vec![0u8; (1 << 20) + 1];
        let bomb = compress_solo(&zeros, 9, 15);
        assert!(bomb.len() < 2000, "{}", bomb.len());
        assert_eq!(inflate(&bomb, 1 << 20), Err(InflateError::TooBig));
        let exact = compress_solo(&zeros[..1 << 20], 9, 15);
        assert_eq!(inflate(&exact, 1 << 20).unwrap().len(), 1 << 20);
        // Garbage.
        assert_eq!(
            inflate(&[0xff, 0xff, 0xff, 0x00], 1 << 20),
            Err(InflateError::Invalid)
        );
        // The empty message.
        assert_eq!(inflate(&[0x02, 0x00], 100).unwrap(), b"");
        assert_eq!(inflate(&compress_solo(b"", 1, 15), 100).unwrap(), b"");
        // The inflater is usable after an error.
        assert_eq!(inflate(&c, 1 << 20).unwrap(), data);
    }

    #[test]
    fn a_stream_shared_by_sessions_joining_at_different_points() {
        let budget = Arc::new(Budget::default());
        let cfg = cfg();
        let mut stream = Stream::default();
        let t0 = Instant::now();
        // Three sessions: one from the start, one that joins later, one that skips a message.
        let mut clients: Vec<(Sync, Client, Vec<usize>)> = (0..3)
            .map(|_| (Sync::default(), Client::new(cfg.window_bits), vec![]))
            .collect();
        let mut compressed = [0usize; 3];
        for i in 0..100 {
            let data = message(i);
            let (seq, join) = stream.next_slot(&cfg, &budget).unwrap();
            let frame = stream.compress(&data, t0);
            assert_eq!((frame.seq, frame.join_point), (seq, join));
            for (k, (sync, client, got)) in clients.iter_mut().enumerate() {
                if k == 1 && i < 30 {
                    continue; // not subscribed yet
                }
                if k == 2 && i == 50 {
                    continue; // filtered out
                }
                match sync.offer(stream.id(), seq, join) {
                    Take::Compressed => {
                        assert_eq!(client.take(&frame.bytes), data, "session {k} message {i}");
                        compressed[k] += 1;
                    }
                    Take::Plain { want_join } => {
                        if want_join {
                            stream.want_join();
                        }
                    }
                }
                got.push(i);
            }
        }
        assert_eq!(compressed[0], 100);
        // Late and skipping sessions waited at most JOIN_GAP messages for a join point.
        assert!(compressed[1] >= 70 - JOIN_GAP as usize, "{compressed:?}");
        assert!(compressed[2] >= 99 - JOIN_GAP as usize, "{compressed:?}");
        assert_eq!(budget.live(), 1);
        assert!(!stream.release_if_idle(t0));
        assert!(stream.release_if_idle(t0 + std::time::Duration::from_millis(1)));
        assert_eq!(budget.live(), 0);
        // After the release the next message is a join point for everyone.
        let (_, join) = stream.next_slot(&cfg, &budget).unwrap();
        assert!(join);
    }

    #[test]
    fn the_budget_caps_compressors() {
        let budget = Arc::new(Budget::default());
        let cfg = CompressionConfig {
            max_streams: 1,
            ..cfg()
        };
        let mut a = Stream::default();
        let mut b = Stream::default();
        assert!(a.next_slot(&cfg, &budget).is_some());
        assert!(b.next_slot(&cfg, &budget).is_none());
        drop(a);
        assert!(b.next_slot(&cfg, &budget).is_some());
    }

    #[test]
    fn sync_switches_to_a_busier_channel() {
        let mut s = Sync::default();
        assert_eq!(s.offer(1, 0, true), Take::Compressed);
        // Messages of stream 2 while in step with 1: plain, no join request at first.
        for i in 0..SWITCH_AFTER as u64 - 1 {
            assert_eq!(s.offer(2, i, false), Take::Plain { want_join: false });
        }
        assert_eq!(s.offer(2, 20, false), Take::Plain { want_join: true });
        assert_eq!(s.offer(2, 21, true), Take::Compressed);
        // Now out of step with 1.
        assert_eq!(s.offer(1, 1, false), Take::Plain { want_join: false });
    }
}
