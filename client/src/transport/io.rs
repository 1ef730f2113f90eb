//! Packet framing over byte streams, and the writer that empties prioritised queues into one.
//!
//! Both transports use these: a QUIC stream is a byte stream with two queues (acks, then data), the
//! TCP/TLS connection is one byte stream with a queue per channel kind.

use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll};

use bytes::BytesMut;
use quicft_proto::{DecodeError, Packet, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::channel::Outgoing;

/// Small packets are coalesced into one write up to this size (one syscall / one quinn lock instead
/// of one per packet); larger packets are written on their own, without a copy.
const BATCH: usize = 64 * 1024;

/// Why a writer stopped.
#[derive(Debug)]
pub(crate) enum WriterEnd {
    /// Every queue was closed (all senders dropped).
    Closed,
    /// An [`Outgoing::Finish`] arrived; answer it once the send side is finished.
    Finish(oneshot::Sender<()>),
    /// The connection or channel was cancelled.
    Cancelled,
}

/// Reads MQTT packets from a byte stream.
pub(crate) struct PacketReader<R> {
    io: R,
    buf: BytesMut,
    protocol: Protocol,
    max_packet_size: usize,
}

/// Why a [`PacketReader`] stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("stream ended in the middle of a packet")]
    Truncated,
}

impl<R: AsyncRead + Unpin> PacketReader<R> {
    pub(crate) fn new(io: R, protocol: Protocol, max_packet_size: usize) -> Self {
        PacketReader {
            io,
            buf: BytesMut::with_capacity(8 * 1024),
            protocol,
            max_packet_size,
        }
    }

    pub(crate) fn get_mut(&mut self) -> &mut R {
        &mut self.io
    }

    /// The next packet; `Ok(None)` at a clean end of stream. Cancel-safe: bytes already read stay
    /// in the buffer.
    pub(crate) async fn next(&mut self) -> Result<Option<Packet>, ReadError> {
        loop {
            if let Some(packet) =
                Packet::decode(&mut self.buf, self.protocol, self.max_packet_size)?
            {
                return Ok(Some(packet));
            }
            if self.buf.capacity() - self.buf.len() < 4 * 1024 {
                self.buf.reserve(BATCH);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }
}

/// Receivers emptied in strict priority order: index 0 first. Within one receiver, FIFO.
pub(crate) struct PriorityQueues {
    levels: Vec<Option<mpsc::Receiver<Outgoing>>>,
}

impl PriorityQueues {
    /// `levels[0]` has the highest priority.
    pub(crate) fn new(levels: Vec<mpsc::Receiver<Outgoing>>) -> Self {
        PriorityQueues {
            levels: levels.into_iter().map(Some).collect(),
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outgoing>> {
        let mut open = false;
        for slot in &mut self.levels {
            let Some(rx) = slot else { continue };
            match rx.poll_recv(cx) {
                Poll::Ready(Some(item)) => return Poll::Ready(Some(item)),
                Poll::Ready(None) => *slot = None,
                Poll::Pending => open = true,
            }
        }
        if open {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    }

    /// The highest-priority item, waiting for one; `None` once every queue is closed and empty.
    pub(crate) async fn next(&mut self) -> Option<Outgoing> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The highest-priority item that is ready now.
    pub(crate) fn try_next(&mut self) -> Option<Outgoing> {
        for slot in &mut self.levels {
            let Some(rx) = slot else { continue };
            match rx.try_recv() {
                Ok(item) => return Some(item),
                Err(mpsc::error::TryRecvError::Disconnected) => *slot = None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
        }
        None
    }
}

/// Writes queued packets to `io` in priority order until the queues close, a Finish arrives or
/// `cancel` fires. A packet is never interrupted, so a higher-priority packet waits at most for the
/// one being written (MQTT cannot interleave packets on one stream).
pub(crate) async fn run_writer<W: AsyncWrite + Unpin>(
    queues: &mut PriorityQueues,
    io: &mut W,
    cancel: &CancellationToken,
) -> io::Result<WriterEnd> {
    let mut batch = BytesMut::with_capacity(BATCH);
    let mut barriers: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let first = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(WriterEnd::Cancelled),
            item = queues.next() => item,
        };
        let Some(first) = first else {
            io.flush().await?;
            return Ok(WriterEnd::Closed);
        };
        let mut item = Some(first);
        while let Some(it) = item {
            match it {
                Outgoing::Packet(bytes) if bytes.len() >= BATCH => {
                    write_batch(io, &mut batch).await?;
                    io.write_all(&bytes).await?;
                }
                Outgoing::Packet(bytes) => {
                    batch.extend_from_slice(&bytes);
                    if batch.len() >= BATCH {
                        write_batch(io, &mut batch).await?;
                    }
                }
                Outgoing::Barrier(done) => barriers.push(done),
                Outgoing::Finish(done) => {
                    write_batch(io, &mut batch).await?;
                    io.flush().await?;
                    for b in barriers.drain(..) {
                        let _ = b.send(());
                    }
                    return Ok(WriterEnd::Finish(done));
                }
            }
            item = queues.try_next();
        }
        write_batch(io, &mut batch).await?;
        io.flush().await?;
        for b in barriers.drain(..) {
            let _ = b.send(());
        }
    }
}

async fn write_batch<W: AsyncWrite + Unpin>(io: &mut W, batch: &mut BytesMut) -> io::Result<()> {
    if !batch.is_empty() {
        io.write_all(batch).await?;
        batch.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn pkt(tag: u8, len: usize) -> Outgoing {
        Outgoing::Packet(Bytes::from(vec![tag; len]))
    }

    #[tokio::test]
    async fn strict_priority_across_queues_fifo_within() {
        let (hi_tx, hi) = mpsc::channel(8);
        let (lo_tx, lo) = mpsc::channel(8);
        let mut q = PriorityQueues::new(vec![hi, lo]);
        for i in 0..3 {
            lo_tx.try_send(pkt(10 + i, 1)).expect("room");
        }
        hi_tx.try_send(pkt(1, 1)).expect("room");
        hi_tx.try_send(pkt(2, 1)).expect("room");
        let mut order = Vec::new();
        while let Some(Outgoing::Packet(b)) = q.try_next() {
            order.push(b[0]);
        }
        assert_eq!(order, [1, 2, 10, 11, 12]);
    }

    #[tokio::test]
    async fn next_ends_when_all_queues_close() {
        let (hi_tx, hi) = mpsc::channel(1);
        let (lo_tx, lo) = mpsc::channel(1);
        let mut q = PriorityQueues::new(vec![hi, lo]);
        lo_tx.try_send(pkt(7, 1)).expect("room");
        drop(hi_tx);
        drop(lo_tx);
        assert!(matches!(q.next().await, Some(Outgoing::Packet(_))));
        assert!(q.next().await.is_none());
    }

    /// The writer sends a control packet queued behind many file packets before them, and a barrier
    /// is answered only after everything before it on its queue is written.
    #[tokio::test]
    async fn writer_puts_control_before_queued_file_data() {
        let (ctl_tx, ctl) = mpsc::channel(8);
        let (file_tx, file) = mpsc::channel(64);
        for _ in 0..20 {
            file_tx.try_send(pkt(b'f', 1000)).expect("room");
        }
        let (barrier_tx, barrier_rx) = oneshot::channel();
        file_tx
            .try_send(Outgoing::Barrier(barrier_tx))
            .expect("room");
        ctl_tx.try_send(pkt(b'c', 2)).expect("room");
        let (fin_tx, _fin_rx) = oneshot::channel();
        let mut q = PriorityQueues::new(vec![ctl, file]);
        let mut out = Vec::new();
        let cancel = CancellationToken::new();
        let writer = async {
            let end = run_writer(&mut q, &mut out, &cancel).await;
            (end, out)
        };
        let feeder = async {
            barrier_rx.await.expect("barrier answered");
            ctl_tx
                .send(Outgoing::Finish(fin_tx))
                .await
                .expect("writer alive");
        };
        let ((end, out), ()) = tokio::join!(writer, feeder);
        assert!(matches!(end, Ok(WriterEnd::Finish(_))));
        assert_eq!(&out[..2], b"cc");
        assert_eq!(out.len(), 2 + 20 * 1000);
    }

    #[tokio::test]
    async fn writer_stops_on_cancel() {
        let (_tx, rx) = mpsc::channel::<Outgoing>(1);
        let mut q = PriorityQueues::new(vec![rx]);
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut out = Vec::new();
        assert!(matches!(
            run_writer(&mut q, &mut out, &cancel).await,
            Ok(WriterEnd::Cancelled)
        ));
    }
}
