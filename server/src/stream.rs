//! Byte streams to packets and back: one reader task and one writer task per stream.
//!
//! A QUIC connection has many streams (control + data, DESIGN §3), a TCP or TLS connection has one;
//! both look the same to the session task: readers turn bytes into [`Event`]s on one bounded channel
//! (so a busy session pushes back on its peer through flow control), and each stream's [`Writer`]
//! takes already-encoded packets without ever blocking the session task.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use quicft_proto::{DecodeError, Packet, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::broker::StreamId;
use crate::link::{PacketRead, PacketWrite};
use crate::mirror::{Fill, Merge};

/// What the stream tasks tell a session.
pub(crate) enum Event {
    /// Every complete packet one read produced, in order: one channel hop per read rather than
    /// per packet (a read of a busy publisher's stream carries dozens of small PUBLISHes).
    Packets {
        stream: StreamId,
        packets: Vec<Packet>,
    },
    /// Bytes that are not a valid packet. The reader has already stopped its stream.
    Malformed {
        stream: StreamId,
        error: DecodeError,
    },
    /// The peer finished or reset the stream, or the connection broke.
    Closed { stream: StreamId },
    /// The accept task has handed over every data stream the peer opened, and stopped (QUIC,
    /// after a drain request).
    NoMoreStreams,
    /// The peer opened a data stream (QUIC). `drain` asks its reader to forward what it has
    /// received and end ([`spawn_reader`]).
    Opened {
        stream: StreamId,
        writer: Writer,
        drain: oneshot::Sender<()>,
    },
}

enum WriteCmd {
    Data(Bytes),
    Reset(u32),
}

/// Send side of one stream, held by the session task.
///
/// The queue to the writer task is a channel without a count limit; what bounds it is bytes: the
/// session reads [`Writer::backlog`] before it queues, drops QoS 0 deliveries over
/// `limits.max_stream_backlog`, and closes a stream that asks for answers it does not read
/// ([`crate::session`]). A count limit would not fit: one small QoS 0 delivery per turn is a
/// legitimate queue of thousands of entries.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::UnboundedSender<WriteCmd>,
    /// Bytes handed over but not yet written: lets the session drop QoS 0 traffic for a stalled
    /// stream instead of buffering without bound. (QoS 1/2 is bounded by the in-flight window.)
    backlog: Arc<AtomicUsize>,
    /// Stops the writer task at once, even in the middle of a write the peer does not read.
    task: tokio::task::AbortHandle,
}

impl Writer {
    /// Queues an encoded packet. False when the stream is gone.
    pub fn send(&self, bytes: Bytes) -> bool {
        let n = bytes.len();
        self.backlog.fetch_add(n, Ordering::Relaxed);
        let ok = self.tx.send(WriteCmd::Data(bytes)).is_ok();
        if !ok {
            self.backlog.fetch_sub(n, Ordering::Relaxed);
        }
        ok
    }

    /// Bytes queued and not yet written.
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    /// Abandons the stream with an error code (QUIC RESET_STREAM; TCP: close), after what is queued.
    pub fn reset(&self, code: u32) {
        let _ = self.tx.send(WriteCmd::Reset(code));
    }

    /// Abandons the stream now, with what is queued: the stream half is dropped (QUIC: finished
    /// with what quinn already holds; TCP: closed once its read half goes too).
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Most bytes gathered from queued small packets into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// Starts the writer task of a stream. The task ends (finishing the stream) when every [`Writer`]
/// clone is dropped, or after a reset.
pub(crate) fn spawn_writer<W: PacketWrite>(mut w: W) -> (Writer, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<WriteCmd>();
    let backlog = Arc::new(AtomicUsize::new(0));
    let counted = backlog.clone();
    let task = tokio::spawn(async move {
        let backlog = counted;
        let mut batch = BytesMut::new();
        while let Some(cmd) = rx.recv().await {
            let first = match cmd {
                WriteCmd::Data(b) => b,
                WriteCmd::Reset(code) => {
                    w.reset(code);
                    return;
                }
            };
            // Gather whatever else is already queued so small packets share one write (and, on
            // TLS, one record).
            let mut reset = None;
            let chunk = if first.len() >= WRITE_BATCH {
                first
            } else {
                batch.extend_from_slice(&first);
                while batch.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(WriteCmd::Data(b)) => batch.extend_from_slice(&b),
                        Ok(WriteCmd::Reset(code)) => {
                            reset = Some(code);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                batch.split().freeze()
            };
            let n = chunk.len();
            let ok = w.write_all(&chunk).await.is_ok() && w.flush().await.is_ok();
            backlog.fetch_sub(n, Ordering::Relaxed);
            if let Some(code) = reset {
                w.reset(code);
                return;
            }
            if !ok {
                return;
            }
        }
        let _ = w.shutdown().await;
    });
    let writer = Writer {
        tx,
        backlog,
        task: task.abort_handle(),
    };
    (writer, task)
}

/// Most packets forwarded in one [`Event::Packets`]: bounds the memory one queued event holds
/// (a 64 KiB read could otherwise become 30 000 decoded PINGREQs).
pub(crate) const MAX_BATCH: usize = 32;

/// How a stream's bytes are cut into packets: the protocol version CONNECT settled and the largest
/// packet accepted.
#[derive(Clone, Copy)]
pub(crate) struct Framing {
    pub protocol: Protocol,
    pub max_packet_size: usize,
}

/// Starts the reader task of a stream: decodes packets (starting with any bytes already read into
/// `buf`) and forwards them to the session until the stream ends or a packet is malformed. A data
/// stream that may be mirrored gets its mirror through `mirror` (crate::mirror).
///
/// When `drain` fires (or its sender is dropped) the reader stops waiting for the peer: it
/// forwards the packets already received — what the transport holds now — then reports
/// [`Event::Closed`] and ends. The task returns the stream's read half in every case, so that a
/// caller may keep reading (and discarding) the peer's input after the session is over.
pub(crate) fn spawn_reader<R: PacketRead>(
    mut r: R,
    mut buf: BytesMut,
    stream: StreamId,
    framing: Framing,
    events: mpsc::Sender<Event>,
    mirror: Option<oneshot::Receiver<R>>,
    mut drain: oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<R> {
    use futures::FutureExt;
    let Framing {
        protocol,
        max_packet_size,
    } = framing;
    let mut merge = mirror.map(Merge::new);
    tokio::spawn(async move {
        let mut draining = false;
        loop {
            let mut packets = Vec::new();
            let mut malformed = None;
            while packets.len() < MAX_BATCH {
                match Packet::decode(&mut buf, protocol, max_packet_size) {
                    Ok(Some(packet)) => packets.push(packet),
                    Ok(None) => break,
                    Err(error) => {
                        malformed = Some(error);
                        break;
                    }
                }
            }
            let full = packets.len() == MAX_BATCH;
            if !packets.is_empty()
                && events
                    .send(Event::Packets { stream, packets })
                    .await
                    .is_err()
            {
                return r;
            }
            if let Some(error) = malformed {
                let code = u32::from(error.reason_code().0);
                r.stop(code);
                if let Some(m) = merge.as_mut() {
                    m.stop(code);
                }
                let _ = events.send(Event::Malformed { stream, error }).await;
                return r;
            }
            if full {
                continue; // more complete packets may wait in `buf`
            }
            grow(&mut buf, max_packet_size);
            let more = if draining {
                // Only what has arrived: a read that would wait ends the stream for the session.
                read_more(&mut r, merge.as_mut(), &mut buf)
                    .now_or_never()
                    .unwrap_or(false)
            } else {
                tokio::select! {
                    biased;
                    more = read_more(&mut r, merge.as_mut(), &mut buf) => more,
                    _ = &mut drain => {
                        draining = true;
                        continue;
                    }
                }
            };
            if !more {
                let _ = events.send(Event::Closed { stream }).await;
                return r;
            }
        }
    })
}

/// Reads more of a stream (merged with its mirror, if it has one) into `buf`; false at its end.
/// Cancel-safe: nothing is consumed unless it completes.
async fn read_more<R: PacketRead>(
    r: &mut R,
    merge: Option<&mut Merge<R>>,
    buf: &mut BytesMut,
) -> bool {
    match merge {
        Some(m) => m.fill(r, buf).await == Fill::Read,
        None => matches!(r.read_buf(buf).await, Ok(n) if n > 0),
    }
}

/// Smallest growth of a reader's buffer.
const MIN_GROWTH: usize = 64 * 1024;

/// Makes room in a reader's buffer for the next read. A large packet (a file segment) is not
/// grown 64 KiB at a time (that re-allocates and copies it many times), but neither is its
/// declared size reserved before its bytes arrive: a peer that announces 16 MB and sends 1 KB
/// would cost 16 MB (1,000 such streams reserved 15.8 GB, issue 17). The buffer at most doubles
/// what it already holds, so a packet costs at most about twice what its sender really sent,
/// in a logarithmic number of copies.
fn grow(buf: &mut BytesMut, max_packet_size: usize) {
    let want = Packet::frame_len(buf)
        .filter(|n| *n <= max_packet_size)
        .unwrap_or(0);
    let spare = buf.capacity() - buf.len();
    if want > buf.len() && want - buf.len() > spare {
        let step = buf.len().max(MIN_GROWTH);
        buf.reserve((want - buf.len()).min(step));
    } else if spare < 4096 {
        buf.reserve(MIN_GROWTH);
    }
}

/// Reads the first packet of a connection (CONNECT) within the caller's timeout. Returns it with
/// any bytes read past it.
pub(crate) async fn read_first<R: AsyncRead + Unpin>(
    r: &mut R,
    max_packet_size: usize,
) -> Result<(Packet, BytesMut), FirstPacketError> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        // Anything but a CONNECT header is refused at its first byte rather than after waiting
        // for a body the peer announced (MQTT 5 §3.1: the first packet MUST be CONNECT).
        if buf.first().is_some_and(|b| *b != 0x10) {
            return Err(FirstPacketError::NotConnect);
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        // The protocol argument only matters after CONNECT; CONNECT itself says which it is.
        if let Some(p) = Packet::decode(&mut buf, Protocol::V5, max_packet_size)? {
            return Ok((p, buf));
        }
        if r.read_buf(&mut buf).await? == 0 {
            return Err(FirstPacketError::Closed);
        }
    }
}

/// Why no CONNECT could be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FirstPacketError {
    #[error("connection closed before CONNECT")]
    Closed,
    #[error("first packet is not CONNECT")]
    NotConnect,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Decode(#[from] DecodeError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PUBLISH whose fixed header announces 16 MiB, then `body` bytes of it.
    fn announced_16mib(body: usize) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0x30, 0x80, 0x80, 0x80, 0x08]);
        buf.extend_from_slice(&vec![0u8; body]);
        buf
    }

    #[test]
    fn a_declared_size_is_not_reserved_before_its_bytes_arrive() {
        let max = 268_435_460;
        let mut buf = announced_16mib(1024);
        grow(&mut buf, max);
        assert!(
            buf.capacity() < 1 << 20,
            "1 KiB sent of a 16 MiB packet reserved {} bytes",
            buf.capacity()
        );
        // An honest sender: the buffer keeps up in a logarithmic number of growths, and never
        // holds much more than twice what arrived.
        let frame = 5 + (16 << 20);
        let mut growths = 0;
        while buf.len() < frame {
            let cap = buf.capacity();
            grow(&mut buf, max);
            if buf.capacity() != cap {
                growths += 1;
            }
            assert!(buf.capacity() <= 2 * buf.len().max(MIN_GROWTH) + MIN_GROWTH);
            let room = (buf.capacity() - buf.len()).min(frame - buf.len());
            buf.extend_from_slice(&vec![0u8; room]);
        }
        assert!(growths <= 12, "{growths} growths for 16 MiB");
    }
}
