//! Mirrored telemetry streams (`quicft_proto::mirror`): every byte written on a telemetry stream is
//! written again, a little later, on a unidirectional stream the server merges with it.
//!
//! Why: a telemetry message in a lost packet waits for loss detection (one round trip) and then for
//! its resend to cross the bottleneck queue: ~105 ms p99 at 1 % loss on a 40 ms link. Its copy,
//! sent `gap` later in another packet, arrives instead. The gap must put the copy in a different
//! packet than the original: at least `min_gap`, and an eighth of the smoothed RTT so that slow
//! links, where one packet takes milliseconds to serialise, get a wider spacing.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use quicft_proto::mirror::Header;
use quinn::{SendStream, VarInt};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Copies not yet written past which the mirror gives up (ends its stream) rather than buffer
/// more: a telemetry stream this busy is not carrying small messages.
const MAX_BACKLOG: usize = 1 << 20;

/// The writer's handle on a mirror: where written bytes are copied to.
pub(crate) struct MirrorTx {
    tx: mpsc::UnboundedSender<(Instant, Bytes)>,
    backlog: Arc<AtomicUsize>,
}

/// Starts the task that writes the copies of `primary`'s bytes on `uni`. Ends (finishing `uni`)
/// when the [`MirrorTx`] is dropped; resets `uni` on `cancel`.
pub(crate) fn spawn_mirror(
    conn: quinn::Connection,
    primary: &SendStream,
    mut uni: SendStream,
    min_gap: Duration,
    cancel: CancellationToken,
) -> Option<MirrorTx> {
    let header = Header {
        stream_id: u64::from(primary.id()),
    }
    .encode()
    .ok()?;
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Bytes)>();
    let backlog = Arc::new(AtomicUsize::new(0));
    let left = backlog.clone();
    super::spawn(async move {
        let copy = async {
            uni.write_all(&header).await?;
            while let Some((at, bytes)) = rx.recv().await {
                let gap = (conn.rtt() / 8).max(min_gap);
                tokio::time::sleep_until(at + gap).await;
                uni.write_all(&bytes).await?;
                left.fetch_sub(bytes.len(), Ordering::Relaxed);
            }
            uni.finish()?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = uni.reset(VarInt::from_u32(0));
            }
            r = copy => if let Err(e) = r {
                tracing::debug!(error = %e, "telemetry mirror ended");
            },
        }
    });
    Some(MirrorTx { tx, backlog })
}

/// A stream's send half whose written bytes are also handed to its mirror, if it has one.
pub(crate) struct Tee<'a> {
    pub(crate) primary: &'a mut SendStream,
    pub(crate) mirror: Option<MirrorTx>,
}

impl AsyncWrite for Tee<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut *self.primary).poll_write(cx, buf))?;
        if let Some(m) = &self.mirror {
            let queued = m.backlog.fetch_add(n, Ordering::Relaxed) + n;
            let sent =
                m.tx.send((Instant::now(), Bytes::copy_from_slice(&buf[..n])))
                    .is_ok();
            if !sent || queued > MAX_BACKLOG {
                self.mirror = None;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.primary).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.primary).poll_shutdown(cx)
    }
}
