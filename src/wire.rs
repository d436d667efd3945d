//! The frames the server writes (RFC 6455 §5.2; a server never masks) and their vectored writes;
//! [`read`] decodes the frames it reads.
//!
//! Writing is done here because it is simple and because
//! tungstenite's writer copies every frame into a per-connection buffer that keeps its largest
//! size for the life of the connection: after one burst of 16 KiB messages every connection
//! would hold 16 KiB more. Here a batch of frames is written with one vectored write: headers
//! and small payloads are copied into one buffer, larger payloads are written from the shared
//! frame (the same bytes for every session that gets the message), and nothing outlives the
//! batch.

pub mod deflate;
pub mod read;

use std::io::{self, IoSlice};

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncWrite;

pub const OP_TEXT: u8 = 0x1;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;
/// Added to a data opcode: the frame's payload is compressed (permessage-deflate).
pub const RSV1: u8 = 0x40;

/// Payloads up to this size are copied next to their header; larger ones are written in place.
const INLINE_MAX: usize = 512;
/// Slices per `writev` call (well under every system's `IOV_MAX`).
const MAX_SLICES: usize = 64;

/// The frames of one batch, ready to be written.
#[derive(Default)]
pub struct Batch {
    chunks: Vec<Bytes>,
    small: BytesMut,
    /// Where each frame ends, in bytes from the start of the batch, with [`PUSH_BIT`] set on
    /// the frames that are pushes: what [`Batch::cut`] needs to stop at a frame boundary.
    ends: Vec<u64>,
    /// Bytes of the batch appended so far, and written so far.
    appended: u64,
    written: u64,
}

const PUSH_BIT: u64 = 1 << 63;

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.small.is_empty()
    }

    /// Appends one unfragmented push frame (a text frame counted as a delivered push).
    pub fn push(&mut self, opcode: u8, payload: Bytes) {
        self.frame(opcode, payload);
        if let Some(end) = self.ends.last_mut() {
            *end |= PUSH_BIT;
        }
    }

    /// Drops every frame not started yet; the frame being written (if one is half written)
    /// stays, so the stream stays valid. Returns how many pushes stay and how many were
    /// dropped.
    pub fn cut(&mut self) -> (u32, u32) {
        if !self.small.is_empty() {
            self.chunks.push(self.small.split().freeze());
        }
        let keep_until = self
            .ends
            .iter()
            .map(|e| e & !PUSH_BIT)
            .find(|&end| end >= self.written)
            .filter(|_| self.written > 0)
            .unwrap_or(self.written);
        let (mut kept, mut dropped) = (0, 0);
        for &e in &self.ends {
            if e & PUSH_BIT != 0 {
                if e & !PUSH_BIT <= keep_until {
                    kept += 1;
                } else {
                    dropped += 1;
                }
            }
        }
        let mut keep = keep_until - self.written;
        let mut whole = 0;
        for c in &mut self.chunks {
            if keep == 0 {
                break;
            }
            if (c.len() as u64) <= keep {
                keep -= c.len() as u64;
                whole += 1;
            } else {
                c.truncate(keep as usize);
                keep = 0;
                whole += 1;
            }
        }
        self.chunks.truncate(whole);
        self.ends.clear();
        self.appended = keep_until;
        (kept, dropped)
    }

    /// Appends one unfragmented frame.
    pub fn frame(&mut self, opcode: u8, payload: Bytes) {
        let len = payload.len();
        let header = if len < 126 {
            2
        } else if len <= 0xFFFF {
            4
        } else {
            10
        };
        self.appended += (header + len) as u64;
        self.ends.push(self.appended);
        self.small.reserve(10 + len.min(INLINE_MAX));
        self.small.put_u8(0x80 | opcode);
        if len < 126 {
            self.small.put_u8(len as u8);
        } else if len <= 0xFFFF {
            self.small.put_u8(126);
            self.small.put_u16(len as u16);
        } else {
            self.small.put_u8(127);
            self.small.put_u64(len as u64);
        }
        if len <= INLINE_MAX {
            self.small.extend_from_slice(&payload);
        } else {
            self.chunks.push(self.small.split().freeze());
            self.chunks.push(payload);
        }
    }

    /// A close frame: the code (if any) and the reason.
    pub fn close(&mut self, code: Option<u16>, reason: &str) {
        let mut p = BytesMut::new();
        if let Some(code) = code {
            p.put_u16(code);
            p.extend_from_slice(reason.as_bytes());
        }
        self.frame(OP_CLOSE, p.freeze());
    }

    /// Writes everything (several `writev` calls if the socket takes less), leaving the batch
    /// empty. Does not flush.
    pub async fn write_to<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write_all(cx, w)).await
    }

    /// [`Batch::write_to`] as a poll: what each `writev` took is removed from the batch at once,
    /// so a caller may stop polling at any time and resume later without losing or repeating a
    /// byte.
    pub fn poll_write_all<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        w: &mut W,
    ) -> Poll<io::Result<()>> {
        if !self.small.is_empty() {
            self.chunks.push(self.small.split().freeze());
        }
        while !self.chunks.is_empty() {
            let n = if self.chunks.len() == 1 {
                // One buffer: a plain write (`send`), cheaper in the kernel than `writev`.
                match Pin::new(&mut *w).poll_write(cx, &self.chunks[0]) {
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            } else {
                // On the stack: no allocation per write.
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = self.chunks.len().min(MAX_SLICES);
                for (slot, c) in slices.iter_mut().zip(&self.chunks) {
                    *slot = IoSlice::new(c);
                }
                match Pin::new(&mut *w).poll_write_vectored(cx, &slices[..count]) {
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n as u64;
            // Drop what was written: whole chunks, then part of the next one.
            let mut n = n;
            let mut whole = 0;
            for c in &mut self.chunks {
                if n >= c.len() {
                    n -= c.len();
                    whole += 1;
                } else {
                    let _ = c.split_to(n);
                    break;
                }
            }
            self.chunks.drain(..whole);
        }
        // Nothing is kept between batches.
        *self = Batch::default();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A writer that takes at most `max` bytes per call, vectored or not.
    struct Trickle {
        out: Vec<u8>,
        max: usize,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.max);
            self.out.extend_from_slice(&buf[..n]);
            self.calls += 1;
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut left = self.max;
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(left);
                self.out.extend_from_slice(&b[..k]);
                n += k;
                left -= k;
                if left == 0 {
                    break;
                }
            }
            self.calls += 1;
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// The reference encoding: tungstenite's own (server role, unmasked).
    fn tungstenite_bytes(frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        let mut out = Vec::new();
        for (op, p) in frames {
            let frame = match *op {
                OP_TEXT => Frame::message(p.clone(), OpCode::Data(Data::Text), true),
                OP_PING => Frame::ping(p.clone()),
                _ => Frame::pong(p.clone()),
            };
            frame.format(&mut out).unwrap();
        }
        out
    }

    #[tokio::test]
    async fn frames_match_tungstenite_whatever_the_socket_takes() {
        let sizes = [0, 1, 125, 126, 127, 511, 512, 513, 65535, 65536, 70000];
        let frames: Vec<(u8, Vec<u8>)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let op = [OP_TEXT, OP_PING, OP_PONG][i % 3];
                let op = if n > 125 { OP_TEXT } else { op };
                (op, (0..n).map(|k| (k % 251) as u8).collect())
            })
            .collect();
        let expected = tungstenite_bytes(&frames);
        for max in [1, 7, 100, 4096, usize::MAX] {
            let mut b = Batch::default();
            for (op, p) in &frames {
                b.frame(*op, Bytes::from(p.clone()));
            }
            let mut w = Trickle {
                out: Vec::new(),
                max,
                calls: 0,
            };
            b.write_to(&mut w).await.unwrap();
            assert!(b.is_empty());
            assert_eq!(w.out.len(), expected.len(), "max {max}");
            assert!(w.out == expected, "max {max}");
            if max == usize::MAX {
                assert_eq!(w.calls, 1, "one writev for the whole batch");
            }
        }
    }

    /// A socket that takes `budget` bytes in all, then is full.
    struct Full {
        out: Vec<u8>,
        budget: usize,
    }

    impl AsyncWrite for Full {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.budget);
            if n == 0 {
                return Poll::Pending;
            }
            self.out.extend_from_slice(&buf[..n]);
            self.budget -= n;
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_cut_batch_ends_at_the_frame_being_written() {
        // A ping (not a push), then pushes of 100, 600 (written in place) and 70,000 bytes.
        let frames: Vec<(u8, Vec<u8>)> = [(OP_PING, 4), (OP_TEXT, 100), (OP_TEXT, 600)]
            .into_iter()
            .chain([(OP_TEXT, 70_000), (OP_TEXT, 10)])
            .map(|(op, n)| (op, (0..n).map(|k| (k % 251) as u8).collect()))
            .collect();
        let all = tungstenite_bytes(&frames);
        let mut ends = vec![0];
        for f in &frames {
            ends.push(ends.last().unwrap() + tungstenite_bytes(std::slice::from_ref(f)).len());
        }
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for budget in [
            0,
            1,
            6,
            7,
            50,
            ends[2],
            ends[2] + 1,
            ends[3] - 1,
            ends[3],
            ends[3] + 9,
        ] {
            let mut b = Batch::default();
            for (op, p) in &frames {
                if *op == OP_TEXT {
                    b.push(*op, Bytes::from(p.clone()));
                } else {
                    b.frame(*op, Bytes::from(p.clone()));
                }
            }
            let mut w = Full {
                out: Vec::new(),
                budget,
            };
            assert!(b.poll_write_all(&mut cx, &mut w).is_pending());
            let (kept, dropped) = b.cut();
            w.budget = usize::MAX;
            assert!(b.poll_write_all(&mut cx, &mut w).is_ready());
            // Everything written, up to the end of the frame in progress, and nothing more.
            let until = if budget == 0 {
                0
            } else {
                *ends.iter().find(|&&e| e >= budget).unwrap()
            };
            assert_eq!(w.out.len(), until, "budget {budget}");
            assert!(w.out[..] == all[..until], "budget {budget}");
            let frames_kept = ends.iter().filter(|&&e| e > 0 && e <= until).count() as u32;
            // The ping is not a push.
            assert_eq!(kept, frames_kept.saturating_sub(1), "budget {budget}");
            assert_eq!(kept + dropped, 4, "budget {budget}");
        }
    }

    #[tokio::test]
    async fn close_frames() {
        let mut b = Batch::default();
        b.close(Some(1000), "");
        b.close(Some(1008), "slow consumer");
        b.close(None, "");
        let mut w = Trickle {
            out: Vec::new(),
            max: usize::MAX,
            calls: 0,
        };
        b.write_to(&mut w).await.unwrap();
        let mut expected = vec![0x88, 2, 0x03, 0xE8, 0x88, 15, 0x03, 0xF0];
        expected.extend_from_slice(b"slow consumer");
        expected.extend_from_slice(&[0x88, 0]);
        assert_eq!(w.out, expected);
    }
}
