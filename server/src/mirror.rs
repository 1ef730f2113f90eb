//! Mirrored data streams (`quicft_proto::mirror`): a client may send the bytes of a data stream a
//! second time on a unidirectional stream, and the stream's reader takes each byte from whichever
//! copy brings it first. A telemetry message in a lost packet then arrives with its copy, a few
//! milliseconds later, instead of one loss-detection round trip later.
//!
//! Two parts: [`Pairing`] (in the connection's accept loop) matches mirror streams to data streams,
//! in whichever order they arrive; [`Merge`] (in the data stream's reader task) reads both copies.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use quicft_proto::mirror::{Header, HeaderError};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::oneshot;

use crate::link::PacketRead;

/// Unidirectional streams a client may have open at once: one mirror per telemetry channel is the
/// use; the limit also bounds the mirrors held while their data stream has not arrived.
pub(crate) const MAX_MIRRORS: u32 = 8;

/// How long a new unidirectional stream has to deliver its header.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// STOP_SENDING code for a mirror that is refused (names no stream it may copy, or one that
/// already has a mirror or has ended): the MQTT reason code for a protocol error.
pub(crate) const REFUSED: u32 = 0x82;

/// Reads a mirror stream's header.
pub(crate) async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Result<Header, HeaderError>> {
    let mut bytes = [0u8; 8];
    r.read_exact(&mut bytes[..1]).await?;
    let len = Header::len_from_first_byte(bytes[0]);
    r.read_exact(&mut bytes[1..len]).await?;
    Ok(Header::decode(&bytes[..len]))
}

/// Matches mirrors with data streams of one connection (stream indexes, as the session uses them).
pub(crate) struct Pairing<R> {
    /// Data streams that may still get a mirror: where to hand it. Entries whose reader has ended
    /// are dropped on the next insert.
    open: HashMap<u64, oneshot::Sender<R>>,
    /// Mirrors that arrived before their data stream (its first packet was the one lost).
    early: HashMap<u64, R>,
    /// Index of the next data stream quinn has not handed out yet.
    next: u64,
}

impl<R: PacketRead> Pairing<R> {
    pub(crate) fn new() -> Self {
        Pairing {
            open: HashMap::new(),
            early: HashMap::new(),
            next: 1,
        }
    }

    /// A data stream was accepted: returns where its reader receives a mirror.
    pub(crate) fn data_stream(&mut self, index: u64) -> oneshot::Receiver<R> {
        let (tx, rx) = oneshot::channel();
        self.next = self.next.max(index + 1);
        match self.early.remove(&index) {
            Some(mirror) => {
                let _ = tx.send(mirror);
            }
            None => {
                self.open.retain(|_, tx| !tx.is_closed());
                self.open.insert(index, tx);
            }
        }
        rx
    }

    /// A mirror's header named data stream `index`. Returns the mirror when it cannot be used.
    pub(crate) fn mirror(&mut self, index: u64, mirror: R) -> Option<R> {
        if let Some(tx) = self.open.remove(&index) {
            return tx.send(mirror).err();
        }
        if index >= self.next && !self.early.contains_key(&index) {
            self.early.insert(index, mirror);
            return None;
        }
        Some(mirror) // already mirrored, or the stream has ended
    }
}

/// The reading side of a data stream that may get a mirror.
pub(crate) struct Merge<R> {
    attach: Option<oneshot::Receiver<R>>,
    mirror: Option<R>,
    /// Bytes of the stream taken so far, from either copy.
    taken: u64,
    /// Bytes read from each copy.
    primary_at: u64,
    mirror_at: u64,
    scratch: Vec<u8>,
    mirror_scratch: Vec<u8>,
}

/// What one [`Merge::fill`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    /// Zero or more new bytes were appended.
    Read,
    /// The data stream ended (or failed).
    End,
}

const SCRATCH: usize = 16 * 1024;

impl<R: PacketRead> Merge<R> {
    pub(crate) fn new(attach: oneshot::Receiver<R>) -> Self {
        Merge {
            attach: Some(attach),
            mirror: None,
            taken: 0,
            primary_at: 0,
            mirror_at: 0,
            scratch: Vec::new(),
            mirror_scratch: Vec::new(),
        }
    }

    /// Waits for bytes from the data stream `primary` or its mirror and appends the new ones to
    /// `buf`. A mirror that ends or fails is dropped; the data stream's end is the stream's end.
    pub(crate) async fn fill(&mut self, primary: &mut R, buf: &mut BytesMut) -> Fill {
        let Merge {
            attach,
            mirror,
            taken,
            primary_at,
            mirror_at,
            scratch,
            mirror_scratch,
        } = self;
        // Without a mirror, or while the data stream leads, its bytes go straight into `buf`.
        let direct = *primary_at == *taken;
        if !direct && scratch.is_empty() {
            scratch.resize(SCRATCH, 0);
        }
        if mirror.is_some() && mirror_scratch.is_empty() {
            mirror_scratch.resize(SCRATCH, 0);
        }
        enum Got<R> {
            Primary(std::io::Result<usize>),
            Mirror(std::io::Result<usize>),
            Attach(Option<R>),
        }
        let got = tokio::select! {
            r = async {
                if direct { primary.read_buf(buf).await } else { primary.read(scratch).await }
            } => Got::Primary(r),
            r = async {
                match mirror.as_mut() {
                    Some(m) => m.read(mirror_scratch).await,
                    None => std::future::pending().await,
                }
            } => Got::Mirror(r),
            m = async {
                match attach.as_mut() {
                    Some(rx) => rx.await.ok(),
                    None => std::future::pending().await,
                }
            } => Got::Attach(m),
        };
        match got {
            Got::Primary(Ok(n)) if n > 0 => {
                if direct {
                    *primary_at += n as u64;
                    *taken = *primary_at;
                } else {
                    take(buf, taken, primary_at, &scratch[..n]);
                }
                Fill::Read
            }
            Got::Primary(_) => Fill::End,
            Got::Mirror(Ok(n)) if n > 0 => {
                take(buf, taken, mirror_at, &mirror_scratch[..n]);
                Fill::Read
            }
            Got::Mirror(_) => {
                *mirror = None;
                Fill::Read
            }
            Got::Attach(m) => {
                *attach = None;
                *mirror = m;
                Fill::Read
            }
        }
    }

    /// Stops the mirror too when the data stream is stopped.
    pub(crate) fn stop(&mut self, code: u32) {
        if let Some(m) = self.mirror.as_mut() {
            m.stop(code);
        }
    }
}

/// `bytes` were read from one copy at offset `at`: appends the part beyond what was `taken`.
fn take(buf: &mut BytesMut, taken: &mut u64, at: &mut u64, bytes: &[u8]) {
    let end = *at + bytes.len() as u64;
    if end > *taken {
        // Each copy's offset is at most `taken` (taken is the furthest any copy got).
        let skip = usize::try_from(*taken - *at).unwrap_or(bytes.len());
        buf.extend_from_slice(&bytes[skip.min(bytes.len())..]);
        *taken = end;
    }
    *at = end;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    impl PacketRead for tokio::io::DuplexStream {}

    #[test]
    fn take_appends_only_what_is_new() {
        let mut buf = BytesMut::new();
        let (mut taken, mut a, mut b) = (0, 0, 0);
        take(&mut buf, &mut taken, &mut a, b"hello");
        take(&mut buf, &mut taken, &mut b, b"hel");
        take(&mut buf, &mut taken, &mut b, b"lo wor");
        take(&mut buf, &mut taken, &mut a, b" w");
        take(&mut buf, &mut taken, &mut a, b"orld");
        assert_eq!(&buf[..], b"hello world");
        assert_eq!((taken, a, b), (11, 11, 9));
    }

    /// The mirror delivers bytes the data stream holds back; the data stream's late copy of them
    /// is dropped; its end ends the merged stream.
    #[tokio::test]
    async fn merge_takes_each_byte_from_the_first_copy() {
        let (mut primary, mut p_tx) = tokio::io::duplex(64);
        let (mirror, mut m_tx) = tokio::io::duplex(64);
        let (attach_tx, attach_rx) = oneshot::channel();
        let mut merge = Merge::new(attach_rx);
        let mut buf = BytesMut::new();

        p_tx.write_all(b"abc").await.expect("duplex open");
        assert_eq!(merge.fill(&mut primary, &mut buf).await, Fill::Read);
        assert_eq!(&buf[..], b"abc");

        attach_tx
            .send(mirror)
            .unwrap_or_else(|_| panic!("reader alive"));
        assert_eq!(merge.fill(&mut primary, &mut buf).await, Fill::Read); // attached
        m_tx.write_all(b"abcdef").await.expect("duplex open");
        assert_eq!(merge.fill(&mut primary, &mut buf).await, Fill::Read);
        assert_eq!(&buf[..], b"abcdef");

        // The data stream catches up with bytes already taken, then brings new ones.
        p_tx.write_all(b"def").await.expect("duplex open");
        assert_eq!(merge.fill(&mut primary, &mut buf).await, Fill::Read);
        assert_eq!(&buf[..], b"abcdef");
        p_tx.write_all(b"g").await.expect("duplex open");
        assert_eq!(merge.fill(&mut primary, &mut buf).await, Fill::Read);
        assert_eq!(&buf[..], b"abcdefg");

        // The mirror ending is not the stream's end.
        drop(m_tx);
        assert_eq!(merge.fill(&mut primary, &mut buf).await, Fill::Read);
        assert!(merge.mirror.is_none());
        drop(p_tx);
        assert_eq!(merge.fill(&mut primary, &mut buf).await, Fill::End);
        assert_eq!(&buf[..], b"abcdefg");
    }

    #[tokio::test]
    async fn pairing_in_either_order_and_only_once() {
        let mut pairing = Pairing::<tokio::io::DuplexStream>::new();
        // Mirror first (the data stream's first packet was lost).
        let (early, _keep) = tokio::io::duplex(8);
        assert!(pairing.mirror(2, early).is_none());
        let rx = pairing.data_stream(2);
        assert!(rx.await.is_ok());
        // Data stream first.
        let rx = pairing.data_stream(3);
        let (m, _keep2) = tokio::io::duplex(8);
        assert!(pairing.mirror(3, m).is_none());
        assert!(rx.await.is_ok());
        // A second mirror for the same stream, or for a stream that has ended, is refused.
        let (again, _k) = tokio::io::duplex(8);
        assert!(pairing.mirror(3, again).is_some());
        let (late, _k) = tokio::io::duplex(8);
        assert!(pairing.mirror(1, late).is_some());
        // A data stream whose reader ended cannot take its mirror.
        drop(pairing.data_stream(5));
        let (m, _k) = tokio::io::duplex(8);
        assert!(pairing.mirror(5, m).is_some());
    }
}
