//! The subscriber connection to one Redis (R-RED-1..4): SUBSCRIBE, UNSUBSCRIBE and PING on a
//! TCP connection of our own, speaking RESP2, instead of redis-rs's `PubSub`.
//!
//! Why not the crate here (redis-rs stays for commands, scripts and Redis Cluster): its
//! `PubSub` keeps a set of every subscribed channel's name for its own resubscription, about
//! 70 bytes of RSS per channel that the hub already holds (ARCHITECTURE.md, "Memory"), and hands
//! each message to its stream as a parsed value that we copied again. A subscriber connection
//! needs little of RESP: flat arrays of bulk strings and integers, `+OK`, `+PONG` and errors.
//!
//! One task owns the socket. Requests reach it through an unbounded channel, so they are written
//! in call order: [`Handle::subscribe`] and [`Handle::unsubscribe`] are issued before they return
//! (the hub calls them under its lock, so Redis sees its decisions in order). Redis answers
//! requests in the order it received them, one confirmation per channel of a SUBSCRIBE or
//! UNSUBSCRIBE; the task keeps what each coming answer belongs to in a FIFO. Messages go to the
//! stream in batches, one per socket read. The stream ends when the connection closes, fails or
//! breaks the protocol; requests then fail ("redis connection lost"). Dropping every handle or
//! the stream closes the connection.

use std::collections::VecDeque;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::{BoxFuture, Incoming};

/// The answer to a request: `Ok` once Redis confirmed it.
type Reply = oneshot::Sender<Result<(), String>>;

enum Request {
    Subscribe(Vec<String>, Reply),
    Unsubscribe(String),
    Ping(Reply),
    Select(i64, Reply),
    /// `INFO server`, answered with its text.
    Info(oneshot::Sender<Result<Vec<u8>, String>>),
}

/// What the next answers from Redis belong to, oldest request first.
enum Pending {
    /// A SUBSCRIBE still waiting for `left` confirmations (one per channel).
    Subscribe {
        left: usize,
        reply: Reply,
    },
    /// An UNSUBSCRIBE still waiting for `left` confirmations (nobody awaits them).
    Unsubscribe {
        left: usize,
    },
    Ping(Reply),
    Select(Reply),
    Info(oneshot::Sender<Result<Vec<u8>, String>>),
}

/// Reads at least this much at a time.
const READ_CHUNK: usize = 64 * 1024;
/// A read buffer that grew past this for a large message is dropped once it is empty.
const KEEP_BUFFER: usize = 1024 * 1024;

/// Sends requests to the connection's task. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    requests: mpsc::UnboundedSender<Request>,
}

fn lost() -> String {
    "redis connection lost".to_owned()
}

impl Handle {
    /// Subscribes `channels` (one command); resolves when Redis confirmed every one.
    pub fn subscribe(&self, channels: Vec<String>) -> BoxFuture<Result<(), String>> {
        self.request(|reply| Request::Subscribe(channels, reply))
    }

    /// Unsubscribes `channel`; the confirmation is not awaited.
    pub fn unsubscribe(&self, channel: String) {
        let _ = self.requests.send(Request::Unsubscribe(channel));
    }

    /// Round-trips a PING.
    pub fn ping(&self) -> BoxFuture<Result<(), String>> {
        self.request(Request::Ping)
    }

    fn request(&self, make: impl FnOnce(Reply) -> Request) -> BoxFuture<Result<(), String>> {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(make(reply)).is_err() {
            return Box::pin(std::future::ready(Err(lost())));
        }
        Box::pin(async move { answer.await.unwrap_or_else(|_| Err(lost())) })
    }
}

/// Connects to `host:port`, checks that Redis is 3.2 or later (it answers PING in subscriber
/// mode, which the liveness check relies on: R-RED-1; a server that refuses INFO is taken as
/// recent), selects `db` when it is not 0 (so a wrong one fails at startup, as it does on the
/// command connection) and round-trips a PING. Returns the handle and the stream of messages.
pub async fn connect(host: &str, port: u16, db: i64) -> Result<(Handle, Messages), String> {
    let socket = TcpStream::connect((host, port))
        .await
        .map_err(|e| e.to_string())?;
    socket.set_nodelay(true).map_err(|e| e.to_string())?;
    let (requests, rx) = mpsc::unbounded_channel();
    let (batches, messages) = mpsc::unbounded_channel();
    tokio::spawn(drive(socket, rx, batches));
    let handle = Handle { requests };
    let (reply, info) = oneshot::channel();
    handle
        .requests
        .send(Request::Info(reply))
        .map_err(|_| lost())?;
    if let Ok(Ok(info)) = info.await
        && let Some(version) = version(&info)
        && version < (3, 2)
    {
        return Err(format!(
            "Redis {}.{} is too old: PING in subscriber mode needs Redis >= 3.2",
            version.0, version.1
        ));
    }
    if db != 0 {
        handle
            .request(|reply| Request::Select(db, reply))
            .await
            .map_err(|e| format!("SELECT {db}: {e}"))?;
    }
    handle.ping().await.map_err(|e| format!("PING: {e}"))?;
    Ok((
        handle,
        Messages {
            batches: messages,
            current: Vec::new().into_iter(),
        },
    ))
}

/// `(major, minor)` of `redis_version:` in an `INFO server` text.
fn version(info: &[u8]) -> Option<(u32, u32)> {
    let text = std::str::from_utf8(info).ok()?;
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))?;
    let mut parts = v.trim().split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// The messages of a subscriber connection; ends when the connection does.
pub struct Messages {
    batches: mpsc::UnboundedReceiver<Vec<Incoming>>,
    current: std::vec::IntoIter<Incoming>,
}

impl Stream for Messages {
    type Item = Incoming;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        loop {
            if let Some(m) = self.current.next() {
                return Poll::Ready(Some(m));
            }
            match self.batches.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.current = batch.into_iter(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The connection's task: writes requests, reads answers and messages, until the connection
/// ends or nobody holds a handle or the stream any more.
async fn drive(
    mut socket: TcpStream,
    mut requests: mpsc::UnboundedReceiver<Request>,
    batches: mpsc::UnboundedSender<Vec<Incoming>>,
) {
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let end = loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            if buf.is_empty() && buf.capacity() > KEEP_BUFFER {
                buf = BytesMut::new();
            }
            buf.reserve(READ_CHUNK);
        }
        tokio::select! {
            read = socket.read_buf(&mut buf) => match read {
                Ok(0) => break "closed by redis".to_owned(),
                Err(e) => break e.to_string(),
                Ok(_) => {
                    let mut batch = Vec::new();
                    if let Err(e) = take_frames(&mut buf, &mut pending, &mut batch) {
                        break e;
                    }
                    if !batch.is_empty() && batches.send(batch).is_err() {
                        break "the stream was dropped".to_owned();
                    }
                }
            },
            request = requests.recv() => {
                let Some(first) = request else {
                    break "every handle was dropped".to_owned();
                };
                out.clear();
                encode(first, &mut out, &mut pending);
                // Let the tasks that are ready run first: during a burst of connections their
                // SUBSCRIBEs join this write. A write to Redis costs this core about as much
                // as the rest of a client's connect and subscribe (measured: 14 % of the
                // server's CPU in the connect bench, one write per subscribe); when nothing
                // else is ready this returns at once.
                tokio::task::yield_now().await;
                while let Ok(more) = requests.try_recv() {
                    encode(more, &mut out, &mut pending);
                }
                if let Err(e) = socket.write_all(&out).await {
                    break e.to_string();
                }
                if out.capacity() > KEEP_BUFFER {
                    out = Vec::new();
                }
            },
            () = batches.closed() => break "the stream was dropped".to_owned(),
        }
    };
    tracing::debug!(reason = end.as_str(), "redis subscriber connection ended");
    // Dropping `pending` and the queued requests fails whoever awaits them.
}

/// Appends `request` as a RESP command to `out` and records the answers it expects.
fn encode(request: Request, out: &mut Vec<u8>, pending: &mut VecDeque<Pending>) {
    match request {
        Request::Subscribe(channels, reply) => {
            command(out, "SUBSCRIBE", channels.iter().map(String::as_bytes));
            pending.push_back(Pending::Subscribe {
                left: channels.len(),
                reply,
            });
        }
        Request::Unsubscribe(channel) => {
            command(out, "UNSUBSCRIBE", [channel.as_bytes()]);
            pending.push_back(Pending::Unsubscribe { left: 1 });
        }
        Request::Ping(reply) => {
            command(out, "PING", []);
            pending.push_back(Pending::Ping(reply));
        }
        Request::Select(db, reply) => {
            command(out, "SELECT", [db.to_string().as_bytes()]);
            pending.push_back(Pending::Select(reply));
        }
        Request::Info(reply) => {
            command(out, "INFO", [&b"server"[..]]);
            pending.push_back(Pending::Info(reply));
        }
    }
}

/// `*N\r\n$len\r\nNAME\r\n$len\r\narg\r\n...`
fn command<'a>(out: &mut Vec<u8>, name: &str, args: impl IntoIterator<Item = &'a [u8]>) {
    let args: Vec<&[u8]> = args.into_iter().collect();
    let mut n = itoa::Buffer::new();
    out.push(b'*');
    out.extend_from_slice(n.format(args.len() + 1).as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in std::iter::once(name.as_bytes()).chain(args) {
        out.push(b'$');
        out.extend_from_slice(n.format(arg.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// One element of a reply: subscriber-mode replies are flat.
#[derive(Debug, PartialEq)]
enum Item<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Int(i64),
    Bulk(Option<&'a [u8]>),
}

/// A reply: one item, or an array of at most [`MAX_ITEMS`] items (`pmessage` has four), kept
/// inline: no allocation per message.
#[derive(Debug, PartialEq)]
enum Frame<'a> {
    One(Item<'a>),
    Array([Item<'a>; MAX_ITEMS], usize),
}

const MAX_ITEMS: usize = 4;

/// Redis's own limit on a bulk string (`proto-max-bulk-len`, 512 MiB): a longer one means the
/// peer is not speaking RESP, and waiting for it would grow the buffer without end.
const MAX_BULK: i64 = 512 * 1024 * 1024;

/// Handles every complete frame in `buf` (and removes it): messages go to `batch`, answers
/// resolve the oldest pending request. An error ends the connection.
fn take_frames(
    buf: &mut BytesMut,
    pending: &mut VecDeque<Pending>,
    batch: &mut Vec<Incoming>,
) -> Result<(), String> {
    // The messages' channels and payloads, as ranges of `buf`: once every complete frame is
    // read, that part of the buffer is frozen and each message gets slices of it (a reference
    // count, not an allocation and a copy per message).
    let mut messages: Vec<(Range<usize>, Range<usize>)> = Vec::new();
    let mut at = 0;
    let base = buf.as_ptr() as usize;
    while let Some((frame, next)) = parse(&buf[at..])? {
        at += next;
        answer(frame, pending, &mut |channel: &[u8], payload: &[u8]| {
            let range = |b: &[u8]| {
                let start = b.as_ptr() as usize - base;
                start..start + b.len()
            };
            messages.push((range(channel), range(payload)));
        })?;
    }
    if messages.is_empty() {
        buf.advance(at);
    } else {
        let read = buf.split_to(at).freeze();
        batch.extend(
            messages
                .into_iter()
                .map(|(c, p)| Incoming::new(read.slice(c), read.slice(p))),
        );
    }
    Ok(())
}

/// Handles one frame: a message goes to `message(channel, payload)`, a reply to the request
/// that expects it.
fn answer(
    frame: Frame<'_>,
    pending: &mut VecDeque<Pending>,
    message: &mut impl FnMut(&[u8], &[u8]),
) -> Result<(), String> {
    let unexpected = |what: &str| format!("unexpected reply from redis: {what}");
    match frame {
        Frame::Array(items, len) => match &items[..len] {
            [
                Item::Bulk(Some(b"message")),
                Item::Bulk(Some(channel)),
                Item::Bulk(Some(payload)),
            ] => {
                message(channel, payload);
                Ok(())
            }
            [Item::Bulk(Some(b"subscribe")), _, _] => match pending.front_mut() {
                Some(Pending::Subscribe { left, .. }) => {
                    *left -= 1;
                    if *left == 0
                        && let Some(Pending::Subscribe { reply, .. }) = pending.pop_front()
                    {
                        let _ = reply.send(Ok(()));
                    }
                    Ok(())
                }
                _ => Err(unexpected("a subscribe confirmation")),
            },
            [Item::Bulk(Some(b"unsubscribe")), _, _] => match pending.front_mut() {
                Some(Pending::Unsubscribe { left }) => {
                    *left -= 1;
                    if *left == 0 {
                        pending.pop_front();
                    }
                    Ok(())
                }
                _ => Err(unexpected("an unsubscribe confirmation")),
            },
            [Item::Bulk(Some(b"pong")), _] => pong(pending),
            other => Err(unexpected(&format!("{other:?}"))),
        },
        Frame::One(Item::Simple(b"PONG")) => pong(pending),
        Frame::One(Item::Bulk(Some(text))) => match pending.pop_front() {
            Some(Pending::Info(reply)) => {
                let _ = reply.send(Ok(text.to_vec()));
                Ok(())
            }
            _ => Err(unexpected("a bulk string")),
        },
        Frame::One(Item::Simple(b"OK")) => match pending.pop_front() {
            Some(Pending::Select(reply)) => {
                let _ = reply.send(Ok(()));
                Ok(())
            }
            _ => Err(unexpected("+OK")),
        },
        Frame::One(Item::Error(e)) => {
            let e = String::from_utf8_lossy(e).into_owned();
            match pending.pop_front() {
                Some(Pending::Subscribe { reply, .. } | Pending::Ping(reply))
                | Some(Pending::Select(reply)) => {
                    let _ = reply.send(Err(e));
                    Ok(())
                }
                Some(Pending::Info(reply)) => {
                    let _ = reply.send(Err(e));
                    Ok(())
                }
                Some(Pending::Unsubscribe { .. }) => {
                    tracing::warn!(error = e.as_str(), "redis refused an UNSUBSCRIBE");
                    Ok(())
                }
                None => Err(unexpected(&e)),
            }
        }
        Frame::One(other) => Err(unexpected(&format!("{other:?}"))),
    }
}

fn pong(pending: &mut VecDeque<Pending>) -> Result<(), String> {
    match pending.pop_front() {
        Some(Pending::Ping(reply)) => {
            let _ = reply.send(Ok(()));
            Ok(())
        }
        _ => Err("unexpected reply from redis: a pong".to_owned()),
    }
}

/// Parses one frame from the start of `buf`: `None` while it is incomplete, else the frame and
/// its length.
fn parse(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, String> {
    if buf.first() != Some(&b'*') {
        return Ok(item(buf)?.map(|(it, n)| (Frame::One(it), n)));
    }
    let Some((count, mut at)) = line(buf, 1)? else {
        return Ok(None);
    };
    let count = number(count)?;
    if !(0..=MAX_ITEMS as i64).contains(&count) {
        return Err(format!("unexpected reply from redis: an array of {count}"));
    }
    let mut items = [const { Item::Bulk(None) }; MAX_ITEMS];
    for slot in items.iter_mut().take(count as usize) {
        if buf.get(at) == Some(&b'*') {
            return Err("unexpected reply from redis: a nested array".to_owned());
        }
        let Some((it, n)) = item(&buf[at..])? else {
            return Ok(None);
        };
        *slot = it;
        at += n;
    }
    Ok(Some((Frame::Array(items, count as usize), at)))
}

/// One non-array item at the start of `buf`, and its length.
fn item(buf: &[u8]) -> Result<Option<(Item<'_>, usize)>, String> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let Some((text, end)) = line(buf, 1)? else {
        return Ok(None);
    };
    Ok(Some(match kind {
        b'+' => (Item::Simple(text), end),
        b'-' => (Item::Error(text), end),
        b':' => (Item::Int(number(text)?), end),
        b'$' => {
            let len = number(text)?;
            if len < 0 {
                return Ok(Some((Item::Bulk(None), end)));
            }
            if len > MAX_BULK {
                return Err(format!(
                    "malformed reply from redis: a bulk string of {len} bytes"
                ));
            }
            let len = len as usize;
            if buf.len() < end + len + 2 {
                return Ok(None);
            }
            if &buf[end + len..end + len + 2] != b"\r\n" {
                return Err("malformed reply from redis: a bulk string without CRLF".to_owned());
            }
            (Item::Bulk(Some(&buf[end..end + len])), end + len + 2)
        }
        other => {
            return Err(format!(
                "unexpected reply from redis: type byte {:?}",
                other as char
            ));
        }
    }))
}

/// The line starting at `from` (without its CRLF) and where the next one starts.
fn line(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, String> {
    let Some(rest) = buf.get(from..) else {
        return Ok(None);
    };
    match rest.iter().position(|&b| b == b'\r') {
        None => Ok(None),
        Some(cr) if from + cr + 1 >= buf.len() => Ok(None),
        Some(cr) if buf[from + cr + 1] == b'\n' => Ok(Some((&rest[..cr], from + cr + 2))),
        Some(_) => Err("malformed reply from redis: CR without LF".to_owned()),
    }
}

fn number(text: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            format!(
                "malformed reply from redis: {:?} is not a number",
                String::from_utf8_lossy(text)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(wire: &[u8]) -> (Vec<Incoming>, VecDeque<Pending>, usize) {
        let mut buf = BytesMut::from(wire);
        let mut pending = VecDeque::new();
        let mut batch = Vec::new();
        take_frames(&mut buf, &mut pending, &mut batch).unwrap();
        (batch, pending, buf.len())
    }

    #[test]
    fn reads_the_version() {
        let info = b"# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n";
        assert_eq!(version(info), Some((7, 0)));
        assert_eq!(version(b"redis_version:3.0.7\r\n"), Some((3, 0)));
        assert!(version(b"redis_version:3.0.7\r\n").unwrap() < (3, 2));
        assert_eq!(version(b"nothing"), None);
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        let mut pending = VecDeque::new();
        let (reply, _) = oneshot::channel();
        encode(
            Request::Subscribe(vec!["a".into(), "bc".into()], reply),
            &mut out,
            &mut pending,
        );
        encode(Request::Unsubscribe("a".into()), &mut out, &mut pending);
        let (reply, _) = oneshot::channel();
        encode(Request::Ping(reply), &mut out, &mut pending);
        assert_eq!(
            out,
            b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$2\r\nbc\r\n\
              *2\r\n$11\r\nUNSUBSCRIBE\r\n$1\r\na\r\n*1\r\n$4\r\nPING\r\n"
        );
        assert_eq!(pending.len(), 3);
    }

    #[test]
    fn messages_and_partial_frames() {
        let wire = b"*3\r\n$7\r\nmessage\r\n$4\r\nchan\r\n$5\r\nhello\r\n\
                     *3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$0\r\n\r\n";
        let (batch, _, left) = frames(wire);
        assert_eq!(left, 0);
        assert_eq!(batch.len(), 2);
        assert_eq!(
            (&*batch[0].channel_str(), &batch[0].payload[..]),
            ("chan", &b"hello"[..])
        );
        assert_eq!(batch[1].payload, &b""[..]);
        // Every cut inside a frame waits for the rest; nothing is taken twice.
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let (mut pending, mut batch) = (VecDeque::new(), Vec::new());
            take_frames(&mut buf, &mut pending, &mut batch).unwrap();
            buf.extend_from_slice(&wire[cut..]);
            take_frames(&mut buf, &mut pending, &mut batch).unwrap();
            assert_eq!(batch.len(), 2, "cut at {cut}");
            assert!(buf.is_empty());
        }
        // A payload holding CRLF is taken by its length.
        let (batch, _, _) = frames(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$4\r\n\r\n\r\n\r\n");
        assert_eq!(batch[0].payload, &b"\r\n\r\n"[..]);
    }

    #[test]
    fn confirmations_resolve_requests_in_order() {
        let mut pending = VecDeque::new();
        let (r1, mut a1) = oneshot::channel();
        let (r2, mut a2) = oneshot::channel();
        let (r3, mut a3) = oneshot::channel();
        pending.push_back(Pending::Subscribe { left: 2, reply: r1 });
        pending.push_back(Pending::Unsubscribe { left: 1 });
        pending.push_back(Pending::Ping(r2));
        pending.push_back(Pending::Subscribe { left: 1, reply: r3 });
        let mut buf = BytesMut::from(
            &b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n\
               *3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n"[..],
        );
        let mut batch = Vec::new();
        take_frames(&mut buf, &mut pending, &mut batch).unwrap();
        assert!(a1.try_recv().is_err(), "one confirmation of two");
        assert_eq!(batch.len(), 1);
        buf.extend_from_slice(
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n\
              *3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n\
              *2\r\n$4\r\npong\r\n$0\r\n\r\n\
              -NOPERM no\r\n",
        );
        take_frames(&mut buf, &mut pending, &mut batch).unwrap();
        assert_eq!(a1.try_recv().unwrap(), Ok(()));
        assert_eq!(a2.try_recv().unwrap(), Ok(()));
        assert_eq!(a3.try_recv().unwrap(), Err("NOPERM no".to_owned()));
        assert!(pending.is_empty());
    }

    #[test]
    fn out_of_turn_replies_end_the_connection() {
        let mut buf = BytesMut::from(&b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"[..]);
        let mut pending = VecDeque::new();
        pending.push_back(Pending::Unsubscribe { left: 1 });
        assert!(take_frames(&mut buf, &mut pending, &mut Vec::new()).is_err());
        let mut buf = BytesMut::from(&b"+PONG\r\n"[..]);
        assert!(take_frames(&mut buf, &mut VecDeque::new(), &mut Vec::new()).is_err());
        for bad in [
            &b"*9\r\n"[..],
            b"*1\r\n*1\r\n",
            b"$3\r\nabcde",
            b":x\r\n",
            b"!3\r\n",
            b"$99999999999\r\n",
        ] {
            let mut buf = BytesMut::from(bad);
            let (reply, _) = oneshot::channel();
            let mut pending = VecDeque::from([Pending::Ping(reply)]);
            assert!(
                take_frames(&mut buf, &mut pending, &mut Vec::new()).is_err(),
                "{bad:?}"
            );
        }
    }
}
