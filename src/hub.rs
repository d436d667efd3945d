//! The hub: which local sessions hold or are acquiring each subscription name, the broker
//! channel subscriptions that follow from it, and the fan-out of published messages.
//!
//! - One broker subscription per channel per broker, however many sessions use it (R-PUB-2):
//!   SUBSCRIBE when the first session acquires the name, UNSUBSCRIBE when the last lets go.
//!   Both are issued while the hub lock is held, so they reach the broker in decision order.
//! - Fan-out decodes a message once, then hands it to each member session; frames are built
//!   once per distinct set of extra fields and shared ([`Fanout`]).
//! - The lock is a plain mutex held for map lookups only, never across an `.await`; the member
//!   list is copy-on-write (`Arc<[..]>`) so a fan-out iterates it without holding the lock.
//! - permessage-deflate: each channel that carries messages has a compression stream
//!   ([`deflate::Stream`]), locked for the whole fan-out of one message so that every session
//!   queues the stream's frames in stream order; the frame is compressed at most once, when
//!   the first session in step with the stream needs it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::broker::Broker;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::config::CompressionConfig;
use crate::publish::{self, ExtraFields, Meta, Position, Published, Rejected};
use crate::wire::deflate::{self, Budget, Mode, Stream, StreamFrame, Take};
use bytes::Bytes;

/// The compression settings and the count of compressors (`ws.compression`).
pub struct Codec {
    pub cfg: CompressionConfig,
    pub budget: Arc<Budget>,
}

/// What a session that negotiated permessage-deflate keeps for it.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub mode: Mode,
    pub sync: deflate::Sync,
}

impl Peer {
    pub fn new(mode: Mode) -> Peer {
        Peer {
            mode,
            sync: deflate::Sync::default(),
        }
    }
}

/// A receiver of published messages: a session.
pub trait Member: Send + Sync {
    fn id(&self) -> u64;
    /// Handles a message routed to it through `channel` (the subscription name the session
    /// holds or is acquiring, without prefix).
    fn deliver(&self, channel: &str, msg: &Arc<Published>, fanout: &mut Fanout<'_>);
    /// A frame about `channel` that is not a message (a lost history gap, a presence join or
    /// leave): pushed if the session holds the subscription.
    fn notice(&self, channel: &str, frame: &Utf8Bytes);
}

type Ready = Shared<BoxFuture<'static, Result<(), String>>>;

/// A channel's members, copy-on-write: a fan-out clones this (one reference count) under the
/// lock and iterates it without. One member is held inline (most channels have one); several
/// behind a thin pointer, so that the enum is 16 bytes (the tag in the niche of `One`).
#[derive(Clone)]
enum Members {
    One(Arc<dyn Member>),
    Many(Arc<Box<[Arc<dyn Member>]>>),
}

impl Members {
    fn as_slice(&self) -> &[Arc<dyn Member>] {
        match self {
            Members::One(m) => std::slice::from_ref(m),
            Members::Many(ms) => ms,
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// The list with `member` added.
    fn with(&self, member: Arc<dyn Member>) -> Members {
        let ms: Box<[_]> = self.as_slice().iter().cloned().chain([member]).collect();
        Members::Many(Arc::new(ms))
    }

    /// The list without `member_id`; `None` when none is left.
    fn without(&self, member_id: u64) -> Option<Members> {
        let mut ms: Vec<_> = self
            .as_slice()
            .iter()
            .filter(|m| m.id() != member_id)
            .cloned()
            .collect();
        match ms.len() {
            0 => None,
            1 => ms.pop().map(Members::One),
            _ => Some(Members::Many(Arc::new(ms.into_boxed_slice()))),
        }
    }
}

/// A channel held by local sessions: one allocation per channel, shared by the hub's table
/// and by every session's subscription to it (which keys its subscription map with it, so the
/// name is stored once).
pub struct Channel {
    name: Name,
    /// Changed and read under the hub's lock only (never contended; a `Mutex` for the
    /// interior mutability of a shared allocation).
    state: Mutex<ChannelState>,
}

struct ChannelState {
    members: Members,
    /// What most channels do not have (boxed: 8 bytes instead of 24).
    rare: Option<Box<Rare>>,
}

#[derive(Default)]
struct Rare {
    /// Resolves when the channel is subscribed on every broker; `None` once that is known
    /// (no shared future is kept per channel).
    ready: Option<Ready>,
    /// The compression stream, from the first message on (with compression enabled).
    stream: Option<Arc<Mutex<Stream>>>,
    /// With history: the position of the last message dispatched (or of the channel when a
    /// session subscribed). Later copies of a message are dropped, and after a broker outage
    /// the feed reads the gap from here (issue 20).
    last: Option<Position>,
}

impl ChannelState {
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Default::default)
    }

    /// Drops the box once it holds nothing.
    fn tidy(&mut self) {
        if let Some(r) = &self.rare {
            if r.ready.is_none() && r.stream.is_none() && r.last.is_none() {
                self.rare = None;
            }
        }
    }
}

/// A channel name: inline up to 22 bytes (most names; a boxed `str` would take a heap block
/// of 32 bytes besides its 16), else boxed. 24 bytes.
enum Name {
    Inline(u8, [u8; Name::INLINE]),
    Boxed(Box<str>),
}

impl Name {
    const INLINE: usize = 22;

    fn new(name: &str) -> Name {
        if name.len() <= Name::INLINE {
            let mut bytes = [0; Name::INLINE];
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            Name::Inline(name.len() as u8, bytes)
        } else {
            Name::Boxed(name.into())
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Copied from a `str` whole: always UTF-8.
            Name::Inline(len, bytes) => std::str::from_utf8(&bytes[..*len as usize]).unwrap_or(""),
            Name::Boxed(name) => name,
        }
    }
}

/// A shared handle on a [`Channel`] that hashes, compares and borrows as its name: the key of
/// the hub's table and of a session's subscriptions.
#[derive(Clone)]
pub struct ChannelRef(Arc<Channel>);

impl ChannelRef {
    pub fn name(&self) -> &str {
        self.0.name.as_str()
    }

    fn state(&self) -> MutexGuard<'_, ChannelState> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::ops::Deref for ChannelRef {
    type Target = str;

    fn deref(&self) -> &str {
        self.name()
    }
}

impl std::borrow::Borrow<str> for ChannelRef {
    fn borrow(&self) -> &str {
        self.name()
    }
}

impl std::hash::Hash for ChannelRef {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        // As its name, which `Borrow<str>` requires.
        self.name().hash(h)
    }
}

impl PartialEq for ChannelRef {
    fn eq(&self, other: &ChannelRef) -> bool {
        self.name() == other.name()
    }
}

impl Eq for ChannelRef {}

impl std::fmt::Debug for ChannelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.name().fmt(f)
    }
}

pub struct Hub {
    /// The channels held, by name: a table of pointers (8 bytes a slot).
    channels: Mutex<foldhash::HashSet<ChannelRef>>,
    /// Messages received from the brokers (for the status page).
    received: std::sync::atomic::AtomicU64,
    brokers: Vec<Arc<dyn Broker>>,
    codec: Option<Codec>,
}

impl Hub {
    /// `compression`: the `ws.compression` settings when it is enabled.
    pub fn new(brokers: Vec<Arc<dyn Broker>>, compression: Option<CompressionConfig>) -> Hub {
        Hub {
            channels: Mutex::new(foldhash::HashSet::default()),
            received: Default::default(),
            brokers,
            codec: compression.map(|cfg| Codec {
                cfg,
                budget: Arc::new(Budget::default()),
            }),
        }
    }

    /// Compressors held by channel streams.
    pub fn compressors(&self) -> usize {
        self.codec.as_ref().map_or(0, |c| c.budget.live())
    }

    /// Gives back the compressors of channels idle for `ws.compression.stream_idle`.
    pub fn release_idle_streams(&self, now: Instant) {
        let Some(codec) = &self.codec else {
            return;
        };
        let idle_since = now.checked_sub(codec.cfg.stream_idle.duration());
        let Some(idle_since) = idle_since else {
            return;
        };
        let streams: Vec<_> = self
            .channels
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| c.state().rare.as_ref()?.stream.clone())
            .collect();
        for s in streams {
            // A stream busy with a fan-out is not idle.
            if let Ok(mut s) = s.try_lock() {
                s.release_if_idle(idle_since);
            }
        }
    }

    pub fn brokers(&self) -> &[Arc<dyn Broker>] {
        &self.brokers
    }

    /// Adds `member` to the name's channel and ensures the channel is subscribed on every
    /// broker (R-SUB-6). Returns the channel and what resolves when the subscriptions are
    /// confirmed.
    pub fn acquire(&self, name: &str, member: Arc<dyn Member>) -> (ChannelRef, Ready) {
        let mut channels = self.channels.lock().unwrap();
        if let Some(ch) = channels.get(name) {
            let mut st = ch.state();
            st.members = st.members.with(member);
            let ready = match st.rare.as_ref().and_then(|r| r.ready.as_ref()) {
                Some(r) => r.clone(),
                None => futures_util::future::ready(Ok(())).boxed().shared(),
            };
            drop(st);
            return (ch.clone(), ready);
        }
        let futures: Vec<_> = self
            .brokers
            .iter()
            .map(|b| b.subscribe(&format!("{}{}", b.prefix(), name)))
            .collect();
        let ready = async move {
            for f in futures {
                f.await?;
            }
            Ok(())
        }
        .boxed()
        .shared();
        let ch = ChannelRef(Arc::new(Channel {
            name: Name::new(name),
            state: Mutex::new(ChannelState {
                members: Members::One(member),
                rare: Some(Box::new(Rare {
                    ready: Some(ready.clone()),
                    ..Rare::default()
                })),
            }),
        }));
        channels.insert(ch.clone());
        (ch, ready)
    }

    /// The channel's broker subscriptions are confirmed: forget the shared future.
    pub fn confirmed(&self, name: &str) {
        if let Some(ch) = self.channels.lock().unwrap().get(name) {
            let mut st = ch.state();
            if let Some(r) = &mut st.rare {
                r.ready = None;
            }
            st.tidy();
        }
    }

    /// Removes the member from the name's channel; the last one out unsubscribes the channel on
    /// every broker (R-PUB-2, R-UNS-4, R-END-3, R-DEF-1).
    pub fn release(&self, name: &str, member_id: u64) {
        let mut channels = self.channels.lock().unwrap();
        let Some(ch) = channels.get(name) else {
            return;
        };
        {
            let mut st = ch.state();
            if let Some(members) = st.members.without(member_id) {
                st.members = members;
                return;
            }
        }
        channels.remove(name);
        for b in &self.brokers {
            b.unsubscribe(&format!("{}{}", b.prefix(), name));
        }
    }

    /// After broker `index` reconnected: subscribes every held channel on it again. Issued
    /// under the hub lock, so every later acquire or release reaches the broker after it;
    /// resolves when every channel is confirmed. Returns the number of channels.
    pub fn resubscribe(&self, index: usize) -> (usize, BoxFuture<'static, Result<(), String>>) {
        let Some(b) = self.brokers.get(index) else {
            return (0, futures_util::future::ready(Ok(())).boxed());
        };
        let channels = self.channels.lock().unwrap();
        let names: Vec<String> = channels
            .iter()
            .map(|ch| format!("{}{}", b.prefix(), ch.name()))
            .collect();
        (names.len(), b.resubscribe(names))
    }

    /// The position of the name's channel and, with `since`, its stored messages after that
    /// offset, from the first broker (issue 14).
    pub fn history(
        &self,
        name: &str,
        since: Option<u64>,
        ttl: std::time::Duration,
    ) -> BoxFuture<'static, Result<crate::broker::History, String>> {
        match self.brokers.first() {
            Some(b) => b.history(&format!("{}{}", b.prefix(), name), since, ttl),
            None => futures_util::future::ready(Err("no broker".to_owned())).boxed(),
        }
    }

    /// Records that the name's channel stood at `pos` when a session subscribed, unless a
    /// message already told.
    pub fn seed_position(&self, name: &str, pos: Position) {
        if let Some(ch) = self.channels.lock().unwrap().get(name) {
            ch.state().rare().last.get_or_insert(pos);
        }
    }

    /// The channels with a known history position, and that position.
    pub fn positions(&self) -> Vec<(String, Position)> {
        self.channels
            .lock()
            .unwrap()
            .iter()
            .filter_map(|ch| {
                let last = ch.state().rare.as_ref()?.last.clone()?;
                Some((ch.name().to_owned(), last))
            })
            .collect()
    }

    /// `msg` carries position `pos` on the name's channel: whether it is new (and if so, it
    /// becomes the channel's last). A message at or before the last one of the same epoch was
    /// delivered already (by a gap recovery, issue 20).
    fn advance(&self, name: &str, pos: &Position) -> bool {
        let channels = self.channels.lock().unwrap();
        let Some(ch) = channels.get(name) else {
            return false;
        };
        let mut st = ch.state();
        let last = &mut st.rare().last;
        match last {
            Some(last) if last.epoch == pos.epoch && pos.offset <= last.offset => false,
            _ => {
                *last = Some(pos.clone());
                true
            }
        }
    }

    /// Messages of the name's channel were lost for good (after a broker outage, beyond its
    /// history): tells its sessions `{"event": "recover", "subscription": name, "recovered":
    /// false, "offset": N, "epoch": E}`, the channel's position from which they go on.
    pub fn unrecovered(&self, name: &str, pos: Position) {
        let members = {
            let channels = self.channels.lock().unwrap();
            let Some(ch) = channels.get(name) else {
                return;
            };
            let mut st = ch.state();
            st.rare().last = Some(pos.clone());
            st.members.clone()
        };
        let frame = Utf8Bytes::from(
            serde_json::json!({
                "event": "recover",
                "subscription": name,
                "recovered": false,
                "offset": pos.offset,
                "epoch": pos.epoch,
            })
            .to_string(),
        );
        for m in members.as_slice() {
            m.notice(name, &frame);
        }
    }

    /// Messages received from the brokers since start.
    pub fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Per service: channels held and subscriptions on them (sessions holding or acquiring).
    pub fn per_service(&self) -> std::collections::BTreeMap<String, (usize, usize)> {
        let mut m = std::collections::BTreeMap::new();
        for ch in self.channels.lock().unwrap().iter() {
            let name = ch.name();
            let service = name.split_once('.').map_or(name, |(s, _)| s);
            let e = m.entry(service.to_owned()).or_insert((0, 0));
            e.0 += 1;
            e.1 += ch.state().members.len();
        }
        m
    }

    /// Number of channels held (for tests and metrics).
    pub fn channel_count(&self) -> usize {
        self.channels.lock().unwrap().len()
    }

    /// The channel's members and its compression stream (created on its first message).
    fn members(&self, name: &str) -> Option<(Members, Option<Arc<Mutex<Stream>>>)> {
        let channels = self.channels.lock().unwrap();
        let mut st = channels.get(name)?.state();
        let stream = self
            .codec
            .as_ref()
            .map(|_| st.rare().stream.get_or_insert_with(Arc::default).clone());
        Some((st.members.clone(), stream))
    }

    /// Routes one message received from broker `broker_index` (R-PUB-4).
    pub fn dispatch(&self, broker_index: usize, channel: &str, payload: &[u8], queue_size: usize) {
        self.received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let received_at = publish::now();
        let Some(broker) = self.brokers.get(broker_index) else {
            return;
        };
        let Some(name) = channel.strip_prefix(broker.prefix()) else {
            return;
        };
        let Some((members, stream)) = self.members(name) else {
            return;
        };
        let msg = match Published::decode(payload) {
            Ok(m) => Arc::new(m),
            Err(Rejected::NotJson) => {
                tracing::error!(
                    channel,
                    payload = %String::from_utf8_lossy(payload),
                    "JSONDecodeError"
                );
                return;
            }
            Err(Rejected::InvalidEvent(v)) => {
                if let Some(frame) = crate::presence::event_frame(name, &v) {
                    let frame = Utf8Bytes::from(frame);
                    for m in members.as_slice() {
                        m.notice(name, &frame);
                    }
                    return;
                }
                tracing::warn!(data = %v, "invalid service event");
                return;
            }
            Err(Rejected::Dropped(why)) => {
                tracing::warn!(
                    channel,
                    reason = why,
                    payload = %String::from_utf8_lossy(payload),
                    "invalid service event"
                );
                return;
            }
        };
        if let Some(pos) = &msg.position {
            if !self.advance(name, pos) {
                tracing::debug!(channel, offset = pos.offset, "message delivered already");
                return;
            }
        }
        tracing::trace!(data = %String::from_utf8_lossy(payload), "service event");
        let stream = stream
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()));
        let codec = self.codec.as_ref().zip(stream);
        let mut fanout = Fanout::new(received_at, queue_size, codec);
        for m in members.as_slice() {
            m.deliver(name, &msg, &mut fanout);
        }
    }
}

/// Frames of one message, built once per distinct set of extra fields and shared by every
/// session that gets the same bytes. (A frame's subscription name is always the message's own
/// `subscription`, so the extra-fields fragment alone identifies the frame.)
pub struct Fanout<'a> {
    /// The compression settings and the channel's stream, locked for the fan-out.
    codec: Option<(&'a Codec, MutexGuard<'a, Stream>)>,
    /// The stream's frame of this message, once compressed.
    compressed: Option<StreamFrame>,
    /// This message compressed on its own (for clients without context takeover).
    solo: Option<Bytes>,
    received_at: String,
    queue_size: usize,
    /// When the first frame was built (R-PUB-9 `sent_at`).
    sent_at: Option<String>,
    /// The frame for subscriptions without extra fields (the common case: no lookup).
    plain: Option<Utf8Bytes>,
    /// Frames for other sets of extra fields, by their serialised fragment.
    frames: foldhash::HashMap<String, Utf8Bytes>,
}

impl<'a> Fanout<'a> {
    pub fn new(
        received_at: String,
        queue_size: usize,
        codec: Option<(&'a Codec, MutexGuard<'a, Stream>)>,
    ) -> Fanout<'a> {
        Fanout {
            codec,
            compressed: None,
            solo: None,
            received_at,
            queue_size,
            sent_at: None,
            plain: None,
            frames: foldhash::HashMap::default(),
        }
    }

    /// The live frame of `msg` for a subscription with these extra fields.
    fn frame(&mut self, msg: &Published, extra: &ExtraFields) -> Utf8Bytes {
        let fragment = extra.fragment();
        if fragment == Some("") {
            if let Some(f) = &self.plain {
                return f.clone();
            }
        } else if let Some(f) = fragment.and_then(|frag| self.frames.get(frag)) {
            return f.clone();
        }
        let sent_at = self.sent_at.get_or_insert_with(publish::now);
        let meta = Meta {
            live: Some((&self.received_at, self.queue_size)),
            sent_at,
            with_published_at: true,
        };
        let f = Utf8Bytes::from(publish::frame(&msg.subscription, msg, extra, meta));
        match fragment {
            Some("") => self.plain = Some(f.clone()),
            Some(frag) => {
                self.frames.insert(frag.to_owned(), f.clone());
            }
            None => {}
        }
        f
    }

    /// The live frame of `msg` for a session, and its compressed payload when the session's
    /// client negotiated permessage-deflate and gets this message compressed (see
    /// [`deflate`]: only the frame of subscriptions without extra fields is compressed).
    pub fn frame_for(
        &mut self,
        msg: &Published,
        extra: &ExtraFields,
        peer: Option<&mut Peer>,
        now: Instant,
    ) -> (Utf8Bytes, Option<Bytes>) {
        let text = self.frame(msg, extra);
        let (Some(peer), Some((codec, stream))) = (peer, self.codec.as_mut()) else {
            return (text, None);
        };
        if text.len() < codec.cfg.min_size || extra.fragment() != Some("") {
            return (text, None);
        }
        match peer.mode {
            Mode::Plain => (text, None),
            Mode::EachMessage => {
                let cfg = &codec.cfg;
                let solo = self.solo.get_or_insert_with(|| {
                    deflate::compress_solo(text.as_bytes(), cfg.level, cfg.window_bits)
                });
                let solo = solo.clone();
                (text, Some(solo))
            }
            Mode::Streams => {
                let slot = match &self.compressed {
                    Some(f) => Some((f.seq, f.join_point)),
                    None => stream.next_slot(&codec.cfg, &codec.budget),
                };
                let Some((seq, join_point)) = slot else {
                    return (text, None);
                };
                match peer.sync.offer(stream.id(), seq, join_point) {
                    Take::Compressed => {
                        let f = self
                            .compressed
                            .get_or_insert_with(|| stream.compress(text.as_bytes(), now));
                        let bytes = f.bytes.clone();
                        (text, Some(bytes))
                    }
                    Take::Plain { want_join } => {
                        if want_join {
                            stream.want_join();
                        }
                        (text, None)
                    }
                }
            }
        }
    }
}
