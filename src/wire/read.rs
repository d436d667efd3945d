//! The frames the server reads (RFC 6455 §5): a decoder that holds no buffer between messages.
//!
//! [`FrameReader`] is sans-IO: [`FrameReader::feed`] takes whatever bytes arrived, consumes all of
//! them, and returns the complete messages and control frames they finished. What belongs to an
//! unfinished frame stays in the reader: at most 13 header bytes inline, and the payload of the
//! message being received, allocated as its bytes arrive (a header announcing 1 MiB allocates
//! nothing until the bytes come). Between messages the reader owns no heap memory, so an idle
//! connection holds no read buffer, and a large message's memory goes with the message.
//!
//! [`read_frames`] drives it from an `AsyncRead`: the socket is read into a scratch buffer of
//! the worker thread (not of the connection), and the bytes are decoded before the poll returns.
//!
//! Rules (a server's side of RFC 6455; the client-facing close codes are SPEC R-WS-3..6):
//! - every client frame must be masked; RSV2 and RSV3 must be clear, and RSV1 too unless
//!   permessage-deflate was negotiated, and then only on the first frame of a data message (it
//!   marks the message compressed: [`super::deflate`] inflates it when complete, within the
//!   same size limit);
//!   unknown opcodes, a continuation without a message, a new data frame inside a fragmented
//!   message, a fragmented or over-125-byte control frame, and a 64-bit length with its top bit
//!   set are protocol errors (1002);
//! - a message (all its fragments together) over `max_message` bytes closes with 1009, detected
//!   from the header before its payload is read;
//! - a text message that is not UTF-8 closes with 1007 (checked when the message is complete);
//! - a close frame's payload is empty, or a valid code (1000-1003, 1007-1014, 3000-4999) and a
//!   UTF-8 reason: otherwise 1002 (1007 for a reason that is not UTF-8);
//! - control frames may come between the fragments of a message.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::deflate::InflateError;

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Bytes read from the socket per read call (a scratch buffer per worker thread).
const SCRATCH: usize = 64 * 1024;
/// The payload buffer of a message grows ahead of the bytes received by at least this much, and
/// at most by what it already holds (doubling), never past the frame's announced length.
const GROW_AHEAD: usize = 64 * 1024;

/// A message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Text(Utf8Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// The client's close frame: its code and reason, if it had any.
    Close(Option<(u16, String)>),
}

/// Why the connection must be failed; [`ReadError::close_code`] is the code to close it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    Protocol(&'static str),
    TooBig,
    InvalidUtf8,
}

impl ReadError {
    pub fn close_code(&self) -> u16 {
        match self {
            ReadError::Protocol(_) => 1002,
            ReadError::TooBig => 1009,
            ReadError::InvalidUtf8 => 1007,
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Protocol(why) => write!(f, "WebSocket protocol error: {why}"),
            ReadError::TooBig => f.write_str("message too big"),
            ReadError::InvalidUtf8 => f.write_str("invalid UTF-8 in a text message"),
        }
    }
}

/// The frame whose payload is being received.
struct InFrame {
    opcode: u8,
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes still to come.
    remaining: usize,
    /// Payload bytes received so far (the mask's offset).
    done: usize,
}

/// The decoder: see the module documentation. Between frames it is 24 bytes and owns nothing;
/// the state of a frame or message split across reads is boxed until it completes.
pub struct FrameReader {
    max_message: usize,
    /// A close frame was decoded: everything after it is ignored.
    closed: bool,
    /// permessage-deflate was negotiated (RSV1 marks a compressed message).
    inflate: bool,
    partial: Option<Box<Decoding>>,
}

impl FrameReader {
    pub fn new(max_message: usize) -> FrameReader {
        FrameReader {
            max_message,
            closed: false,
            inflate: false,
            partial: None,
        }
    }

    /// permessage-deflate was negotiated: compressed messages (RSV1) are accepted.
    pub fn set_inflate(&mut self, on: bool) {
        self.inflate = on;
    }

    /// Whether the reader holds part of a frame or message (it owns no heap memory otherwise).
    pub fn is_mid_message(&self) -> bool {
        self.partial.is_some()
    }

    /// Decodes `data` entirely, appending what it completes to `out`. After an error the
    /// connection must be failed; after a close frame the rest is ignored.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Frame>) -> Result<(), ReadError> {
        let mut d = match self.partial.take() {
            Some(d) => *d,
            None => Decoding::new(self.max_message, self.inflate),
        };
        d.closed = self.closed;
        let r = d.feed(data, out);
        self.closed = d.closed;
        if d.is_mid_message() {
            self.partial = Some(Box::new(d));
        }
        r
    }
}

/// The decoder's working state (on the stack while it decodes; boxed in the [`FrameReader`]
/// only while a frame or message is incomplete).
struct Decoding {
    max_message: usize,
    head: [u8; 14],
    head_len: u8,
    frame: Option<InFrame>,
    /// The data message being received: its opcode (text or binary) and payload so far.
    message: Option<(u8, Vec<u8>)>,
    /// The payload of the control frame being received (at most 125 bytes).
    control: Vec<u8>,
    closed: bool,
    inflate: bool,
    /// The message being received is compressed.
    compressed: bool,
}

impl Decoding {
    fn new(max_message: usize, inflate: bool) -> Decoding {
        Decoding {
            max_message,
            head: [0; 14],
            head_len: 0,
            frame: None,
            message: None,
            control: Vec::new(),
            closed: false,
            inflate,
            compressed: false,
        }
    }

    /// Whether part of a frame or message is held.
    fn is_mid_message(&self) -> bool {
        self.head_len > 0 || self.frame.is_some() || self.message.is_some()
    }

    fn feed(&mut self, mut data: &[u8], out: &mut Vec<Frame>) -> Result<(), ReadError> {
        while !data.is_empty() && !self.closed {
            if self.frame.is_none() {
                match self.header(&mut data)? {
                    Some(frame) => self.frame = Some(frame),
                    None => return Ok(()),
                }
            }
            let frame = self.frame.as_mut().expect("set above");
            let take = frame.remaining.min(data.len());
            let (chunk, rest) = data.split_at(take);
            data = rest;
            let buf = if is_control(frame.opcode) {
                &mut self.control
            } else {
                let (_, payload) = self.message.as_mut().expect("a data frame has a message");
                if payload.capacity() - payload.len() < take {
                    // Grow with the bytes that arrive, not with what the header announced:
                    // doubling (at least GROW_AHEAD), never past the announced rest.
                    let ahead = frame.remaining.min(payload.len().max(GROW_AHEAD)).max(take);
                    payload.reserve_exact(ahead);
                }
                payload
            };
            let start = buf.len();
            buf.extend_from_slice(chunk);
            unmask(&mut buf[start..], frame.mask, frame.done);
            frame.remaining -= take;
            frame.done += take;
            if frame.remaining == 0 {
                let frame = self.frame.take().expect("set above");
                self.finish(frame, out)?;
            }
        }
        Ok(())
    }

    /// Parses a frame header from `data` (completing bytes kept from earlier calls); `None` if
    /// `data` ended first (the bytes are kept). Checks everything the header can tell.
    fn header(&mut self, data: &mut &[u8]) -> Result<Option<InFrame>, ReadError> {
        // How long the header is, once its first two bytes are known.
        let needed = |head: &[u8]| -> usize {
            let len7 = head[1] & 0x7F;
            let ext = match len7 {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            2 + ext + if head[1] & 0x80 != 0 { 4 } else { 0 }
        };
        loop {
            let have = self.head_len as usize;
            let want = if have < 2 { 2 } else { needed(&self.head) };
            if have == want {
                break;
            }
            if data.is_empty() {
                return Ok(None);
            }
            let n = (want - have).min(data.len());
            self.head[have..have + n].copy_from_slice(&data[..n]);
            self.head_len += n as u8;
            *data = &data[n..];
        }
        let head = &self.head[..self.head_len as usize];
        self.head_len = 0;
        let (b0, b1) = (head[0], head[1]);
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        let rsv1 = b0 & 0x40 != 0;
        if b0 & 0x30 != 0 || (rsv1 && !self.inflate) {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        if rsv1 && !matches!(opcode, OP_TEXT | OP_BINARY) {
            return Err(ReadError::Protocol(
                "RSV1 on a control or continuation frame",
            ));
        }
        if b1 & 0x80 == 0 {
            return Err(ReadError::Protocol("unmasked client frame"));
        }
        let (len, rest) = match b1 & 0x7F {
            126 => (
                u64::from(u16::from_be_bytes([head[2], head[3]])),
                &head[4..],
            ),
            127 => {
                let len = u64::from_be_bytes(head[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(ReadError::Protocol("payload length with its top bit set"));
                }
                (len, &head[10..])
            }
            n => (u64::from(n), &head[2..]),
        };
        let mask: [u8; 4] = rest[..4].try_into().expect("4 bytes");
        match opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin {
                    return Err(ReadError::Protocol("fragmented control frame"));
                }
                if len > 125 {
                    return Err(ReadError::Protocol("control frame over 125 bytes"));
                }
                self.control.clear();
            }
            OP_TEXT | OP_BINARY => {
                if self.message.is_some() {
                    return Err(ReadError::Protocol(
                        "new data frame inside a fragmented message",
                    ));
                }
                if len > self.max_message as u64 {
                    return Err(ReadError::TooBig);
                }
                self.message = Some((opcode, Vec::new()));
                self.compressed = rsv1;
            }
            OP_CONT => {
                let Some((_, payload)) = &self.message else {
                    return Err(ReadError::Protocol("continuation frame without a message"));
                };
                if payload.len() as u64 + len > self.max_message as u64 {
                    return Err(ReadError::TooBig);
                }
            }
            _ => return Err(ReadError::Protocol("unknown opcode")),
        }
        Ok(Some(InFrame {
            opcode,
            fin,
            mask,
            remaining: len as usize,
            done: 0,
        }))
    }

    /// A frame's payload is complete: emit the control frame, or the message if it was the last
    /// fragment.
    fn finish(&mut self, frame: InFrame, out: &mut Vec<Frame>) -> Result<(), ReadError> {
        match frame.opcode {
            OP_PING => out.push(Frame::Ping(Bytes::from(std::mem::take(&mut self.control)))),
            OP_PONG => out.push(Frame::Pong(Bytes::from(std::mem::take(&mut self.control)))),
            OP_CLOSE => {
                let payload = std::mem::take(&mut self.control);
                out.push(Frame::Close(close_payload(&payload)?));
                self.closed = true;
            }
            _ if frame.fin => {
                let (opcode, mut payload) = self.message.take().expect("a data frame");
                if std::mem::take(&mut self.compressed) {
                    payload =
                        super::deflate::inflate(&payload, self.max_message).map_err(
                            |e| match e {
                                InflateError::TooBig => ReadError::TooBig,
                                InflateError::Invalid => {
                                    ReadError::Protocol("invalid compressed data")
                                }
                            },
                        )?;
                }
                payload.shrink_to_fit();
                if opcode == OP_TEXT {
                    let text = Utf8Bytes::try_from(payload).map_err(|_| ReadError::InvalidUtf8)?;
                    out.push(Frame::Text(text));
                } else {
                    out.push(Frame::Binary(Bytes::from(payload)));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn is_control(opcode: u8) -> bool {
    opcode & 0x8 != 0
}

/// Unmasks `buf`, whose first byte is byte `offset` of the payload.
fn unmask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut mask = mask;
    mask.rotate_left(offset % 4);
    let word = u32::from_ne_bytes(mask);
    let mut chunks = buf.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(mask) {
        *b ^= m;
    }
}

/// A close frame's code and reason (RFC 6455 §5.5.1, §7.4).
fn close_payload(payload: &[u8]) -> Result<Option<(u16, String)>, ReadError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(ReadError::Protocol("close frame with a one-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !allowed {
                return Err(ReadError::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| ReadError::InvalidUtf8)?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

/// What ended a read.
#[derive(Debug)]
pub enum ReadFail {
    /// The peer closed the connection (end of stream) or the socket failed.
    Gone(Option<io::Error>),
    /// The client broke the protocol: close with [`ReadError::close_code`].
    Protocol(ReadError),
}

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// Reads once from `stream` (waiting until bytes come) and decodes them, appending complete
/// frames to `out` (possibly none: a frame may need more reads). Cancel-safe: bytes are consumed
/// only by the poll that returns `Ready`.
pub async fn read_frames<R: AsyncRead + Unpin>(
    stream: &mut R,
    reader: &mut FrameReader,
    out: &mut Vec<Frame>,
) -> Result<(), ReadFail> {
    poll_fn(|cx| poll_read_frames(cx, stream, reader, out)).await
}

/// [`read_frames`] as a poll: `Pending` (the task is woken when bytes come) or one read decoded.
pub fn poll_read_frames<R: AsyncRead + Unpin>(
    cx: &mut Context<'_>,
    stream: &mut R,
    reader: &mut FrameReader,
    out: &mut Vec<Frame>,
) -> Poll<Result<(), ReadFail>> {
    SCRATCH_BUF.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let mut buf = ReadBuf::new(&mut scratch[..]);
        match Pin::new(&mut *stream).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(ReadFail::Gone(Some(e)))),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                Poll::Ready(Err(ReadFail::Gone(None)))
            }
            Poll::Ready(Ok(())) => {
                Poll::Ready(reader.feed(buf.filled(), out).map_err(ReadFail::Protocol))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    /// A masked client frame.
    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![b0];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn text(s: &str) -> Frame {
        Frame::Text(Utf8Bytes::from(s.to_owned()))
    }

    /// Feeds `bytes` in chunks of `step` bytes.
    fn decode_in_steps(bytes: &[u8], step: usize) -> (Vec<Frame>, Result<(), ReadError>) {
        let mut r = FrameReader::new(MAX);
        let mut out = Vec::new();
        for chunk in bytes.chunks(step) {
            if let Err(e) = r.feed(chunk, &mut out) {
                return (out, Err(e));
            }
        }
        (out, Ok(()))
    }

    /// Every chunking of the input gives the same frames.
    fn decode(bytes: &[u8]) -> (Vec<Frame>, Result<(), ReadError>) {
        let whole = decode_in_steps(bytes, bytes.len().max(1));
        for step in [1, 2, 3, 7, 13, 64] {
            assert_eq!(decode_in_steps(bytes, step), whole, "step {step}");
        }
        whole
    }

    #[test]
    fn single_frames_of_every_length_class() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 300_000] {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let s = String::from_utf8(payload.clone()).unwrap();
            let (frames, r) = decode_in_steps(&frame(0x81, &payload), 4096);
            assert_eq!(r, Ok(()));
            assert_eq!(frames, vec![text(&s)], "len {len}");
            let (frames, r) = decode_in_steps(&frame(0x82, &payload), 1000);
            assert_eq!(r, Ok(()));
            assert_eq!(frames, vec![Frame::Binary(Bytes::from(payload))]);
        }
    }

    #[test]
    fn several_frames_in_one_read_and_split_anywhere() {
        let mut bytes = frame(0x81, b"{\"event\":\"ping\"}");
        bytes.extend(frame(0x89, b"hi"));
        bytes.extend(frame(0x8A, b""));
        bytes.extend(frame(0x82, &[0, 159, 146, 150]));
        let (frames, r) = decode(&bytes);
        assert_eq!(r, Ok(()));
        assert_eq!(
            frames,
            vec![
                text("{\"event\":\"ping\"}"),
                Frame::Ping(Bytes::from_static(b"hi")),
                Frame::Pong(Bytes::new()),
                Frame::Binary(Bytes::from_static(&[0, 159, 146, 150])),
            ]
        );
    }

    #[test]
    fn fragments_reassemble_with_control_frames_between() {
        let mut bytes = frame(0x01, b"Hel");
        bytes.extend(frame(0x89, b"p1"));
        bytes.extend(frame(0x00, b"lo, "));
        bytes.extend(frame(0x8A, b"p2"));
        bytes.extend(frame(0x00, b""));
        bytes.extend(frame(0x80, "wörld".as_bytes()));
        let (frames, r) = decode(&bytes);
        assert_eq!(r, Ok(()));
        assert_eq!(
            frames,
            vec![
                Frame::Ping(Bytes::from_static(b"p1")),
                Frame::Pong(Bytes::from_static(b"p2")),
                text("Hello, wörld"),
            ]
        );
    }

    #[test]
    fn a_code_point_split_between_fragments_is_valid() {
        let s = "añb".as_bytes();
        let mut bytes = frame(0x01, &s[..2]);
        bytes.extend(frame(0x80, &s[2..]));
        assert_eq!(decode(&bytes), (vec![text("añb")], Ok(())));
    }

    #[test]
    fn protocol_errors_close_with_1002() {
        let unmasked = vec![0x81, 0x02, b'h', b'i'];
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("rsv1", frame(0xC1, b"x")),
            ("rsv2", frame(0xA1, b"x")),
            ("rsv3", frame(0x91, b"x")),
            ("opcode 3", frame(0x83, b"")),
            ("opcode 0xB", frame(0x8B, b"")),
            ("unmasked", unmasked),
            ("continuation first", frame(0x80, b"x")),
            ("fragmented ping", frame(0x09, b"x")),
            ("ping over 125", frame(0x89, &[b'a'; 126])),
            ("close with one byte", frame(0x88, &[3])),
            ("close code 999", frame(0x88, &999u16.to_be_bytes())),
            ("close code 1004", frame(0x88, &1004u16.to_be_bytes())),
            ("close code 1005", frame(0x88, &1005u16.to_be_bytes())),
            ("close code 1006", frame(0x88, &1006u16.to_be_bytes())),
            ("close code 1015", frame(0x88, &1015u16.to_be_bytes())),
            ("close code 2999", frame(0x88, &2999u16.to_be_bytes())),
            ("close code 5000", frame(0x88, &5000u16.to_be_bytes())),
            ("text inside a message", {
                let mut b = frame(0x01, b"a");
                b.extend(frame(0x81, b"b"));
                b
            }),
            ("length top bit", {
                let mut b = vec![0x82, 0xFF];
                b.extend_from_slice(&(1u64 << 63).to_be_bytes());
                b.extend_from_slice(&[1, 2, 3, 4]);
                b
            }),
        ];
        for (name, bytes) in cases {
            let (_, r) = decode(&bytes);
            let e = r.expect_err(name);
            assert!(matches!(e, ReadError::Protocol(_)), "{name}: {e:?}");
            assert_eq!(e.close_code(), 1002, "{name}");
        }
    }

    #[test]
    fn valid_close_frames() {
        for code in [1000u16, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999] {
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice("bye ✓".as_bytes());
            let (frames, r) = decode(&frame(0x88, &p));
            assert_eq!(r, Ok(()));
            assert_eq!(frames, vec![Frame::Close(Some((code, "bye ✓".into())))]);
        }
        assert_eq!(
            decode(&frame(0x88, b"")),
            (vec![Frame::Close(None)], Ok(()))
        );
    }

    #[test]
    fn nothing_is_decoded_after_a_close() {
        let mut bytes = frame(0x88, b"");
        bytes.extend(frame(0x81, b"late"));
        bytes.extend([0xFF, 0xFF]); // garbage: ignored too
        assert_eq!(decode(&bytes), (vec![Frame::Close(None)], Ok(())));
    }

    #[test]
    fn invalid_utf8_closes_with_1007() {
        for bytes in [
            frame(0x81, &[0xce, 0xba, 0xe1, 0xbd]),
            frame(0x81, &[0xed, 0xa0, 0x80]), // a surrogate
            frame(0x81, &[0xff]),
            {
                let mut b = frame(0x01, &[0xce]);
                b.extend(frame(0x80, &[0x41]));
                b
            },
            {
                let mut p = 1000u16.to_be_bytes().to_vec();
                p.push(0xff);
                frame(0x88, &p)
            },
        ] {
            let (_, r) = decode(&bytes);
            assert_eq!(r, Err(ReadError::InvalidUtf8));
            assert_eq!(ReadError::InvalidUtf8.close_code(), 1007);
        }
    }

    #[test]
    fn message_size_limit_from_the_header_and_across_fragments() {
        let mut r = FrameReader::new(10);
        let mut out = Vec::new();
        assert_eq!(r.feed(&frame(0x81, b"0123456789"), &mut out), Ok(()));
        assert_eq!(out, vec![text("0123456789")]);
        // Over the limit: refused from the header, before any payload byte.
        let big = frame(0x82, b"0123456789A");
        let mut r = FrameReader::new(10);
        assert_eq!(r.feed(&big[..6], &mut out), Err(ReadError::TooBig));
        // Fragments add up.
        let mut r = FrameReader::new(10);
        let mut bytes = frame(0x01, b"012345");
        bytes.extend(frame(0x80, b"6789A"));
        assert_eq!(r.feed(&bytes, &mut out), Err(ReadError::TooBig));
        assert_eq!(ReadError::TooBig.close_code(), 1009);
    }

    #[test]
    fn a_large_header_allocates_only_what_arrives() {
        let mut r = FrameReader::new(MAX);
        let mut out = Vec::new();
        let bytes = frame(0x82, &vec![7u8; 1 << 20]);
        r.feed(&bytes[..14 + 10], &mut out).unwrap();
        let cap = r
            .partial
            .as_ref()
            .unwrap()
            .message
            .as_ref()
            .unwrap()
            .1
            .capacity();
        assert!(cap <= GROW_AHEAD, "{cap} bytes reserved for 10 received");
        r.feed(&bytes[14 + 10..], &mut out).unwrap();
        assert_eq!(out, vec![Frame::Binary(Bytes::from(vec![7u8; 1 << 20]))]);
    }

    #[test]
    fn idle_reader_owns_no_memory() {
        let mut r = FrameReader::new(MAX);
        let mut out = Vec::new();
        let mut bytes = frame(0x81, &[b'x'; 5000]);
        bytes.extend(frame(0x89, b"ping"));
        r.feed(&bytes, &mut out).unwrap();
        assert!(!r.is_mid_message());
        assert!(r.partial.is_none());
        r.feed(&bytes[..3], &mut out).unwrap();
        assert!(r.is_mid_message());
    }

    fn inflating() -> FrameReader {
        let mut r = FrameReader::new(MAX);
        r.set_inflate(true);
        r
    }

    #[test]
    fn compressed_messages_whole_and_fragmented_with_control_frames_between() {
        use crate::wire::deflate::compress_solo;
        let msg = "{\"event\":\"message\",\"data\":\"héllo héllo héllo héllo\"}";
        let c = compress_solo(msg.as_bytes(), 6, 15);
        let mut bytes = frame(0xC1, &c);
        // The same message in three fragments, a ping and a pong between them.
        bytes.extend(frame(0x41, &c[..3]));
        bytes.extend(frame(0x89, b"p"));
        bytes.extend(frame(0x00, &c[3..5]));
        bytes.extend(frame(0x8A, b""));
        bytes.extend(frame(0x80, &c[5..]));
        // Uncompressed messages still work, and a compressed binary one.
        bytes.extend(frame(0x81, b"plain"));
        bytes.extend(frame(0xC2, &compress_solo(&[0, 1, 2, 3], 1, 15)));
        for step in [1, 5, bytes.len()] {
            let mut r = inflating();
            let mut out = Vec::new();
            for chunk in bytes.chunks(step) {
                r.feed(chunk, &mut out).unwrap();
            }
            assert_eq!(
                out,
                vec![
                    text(msg),
                    Frame::Ping(Bytes::from_static(b"p")),
                    Frame::Pong(Bytes::new()),
                    text(msg),
                    text("plain"),
                    Frame::Binary(Bytes::from_static(&[0, 1, 2, 3])),
                ]
            );
            assert!(!r.is_mid_message());
        }
    }

    #[test]
    fn compressed_message_errors() {
        use crate::wire::deflate::compress_solo;
        let c = compress_solo(b"hello", 1, 15);
        let err = |bytes: Vec<u8>| {
            let mut out = Vec::new();
            inflating().feed(&bytes, &mut out).unwrap_err()
        };
        // RSV1 on a continuation or a control frame, RSV1 without negotiation.
        let mut b = frame(0x41, &c[..2]);
        b.extend(frame(0xC0, &c[2..]));
        assert_eq!(err(b).close_code(), 1002);
        assert_eq!(err(frame(0xC9, b"")).close_code(), 1002);
        let mut out = Vec::new();
        let plain = FrameReader::new(MAX).feed(&frame(0xC1, &c), &mut out);
        assert_eq!(plain.unwrap_err().close_code(), 1002);
        // Invalid deflate data.
        assert_eq!(err(frame(0xC1, &[0xff, 0xff, 0xff])).close_code(), 1002);
        // A bomb: 2 KB that inflate past 1 MiB.
        let bomb = compress_solo(&vec![b'a'; MAX + 1], 9, 15);
        assert!(bomb.len() < 4096);
        assert_eq!(err(frame(0xC1, &bomb)), ReadError::TooBig);
        // Exactly the limit is accepted; invalid UTF-8 inside is 1007.
        let exact = compress_solo(&vec![b'a'; MAX], 9, 15);
        let mut out = Vec::new();
        inflating().feed(&frame(0xC1, &exact), &mut out).unwrap();
        assert!(matches!(&out[..], [Frame::Text(t)] if t.len() == MAX));
        let bad_utf8 = compress_solo(&[0xff, 0xfe], 1, 15);
        assert_eq!(err(frame(0xC1, &bad_utf8)), ReadError::InvalidUtf8);
    }

    #[test]
    fn unmask_matches_bytewise_at_every_offset() {
        let mask = [1, 2, 3, 4];
        for offset in 0..8 {
            for len in 0..20 {
                let data: Vec<u8> = (0..len as u8).collect();
                let mut fast = data.clone();
                unmask(&mut fast, mask, offset);
                let slow: Vec<u8> = data
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[(offset + i) % 4])
                    .collect();
                assert_eq!(fast, slow, "offset {offset} len {len}");
            }
        }
    }
}
