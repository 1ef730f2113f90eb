//! The data streams of a QUIC connection, and their mirrors.
//!
//! Promise: every bidirectional stream the client opens after CONNACK becomes a data stream of the
//! session (an [`Event::Opened`] with its writer, then its reader's packets); a unidirectional
//! stream is a mirror of a data stream once its header names one ([`crate::mirror`]), refused
//! otherwise. Streams opened before CONNACK wait in quinn until the session accepts them.

use bytes::BytesMut;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::link::PacketRead;
use crate::mirror::{self, Pairing};
use crate::stream::{self, Event, Framing};

/// Accepts the data streams of a QUIC connection (after CONNACK: streams opened earlier wait in
/// quinn until then), and the mirrors of data streams (crate::mirror). When `drain` fires (a normal
/// DISCONNECT), it hands over every stream the peer has already opened, reports
/// [`Event::NoMoreStreams`] and ends.
pub(super) async fn accept_data_streams(
    conn: quinn::Connection,
    framing: Framing,
    events: mpsc::Sender<Event>,
    io: crate::clients::Io,
    mut drain: oneshot::Receiver<()>,
) {
    let mut pairing = Pairing::new();
    // Mirror streams whose header has been read: (data stream index, mirror).
    let (headers_tx, mut headers) = mpsc::channel(mirror::MAX_MIRRORS as usize);
    let open = |send: quinn::SendStream, recv: quinn::RecvStream, pairing: &mut Pairing<_>| {
        let stream = recv.id().index();
        let (writer, _task) = stream::spawn_writer(io.wrap(send));
        let (drain, drain_rx) = oneshot::channel();
        let mirror = Some(pairing.data_stream(stream));
        let (events, recv) = (events.clone(), io.wrap(recv));
        async move {
            if events
                .send(Event::Opened {
                    stream,
                    writer,
                    drain,
                })
                .await
                .is_err()
            {
                return false;
            }
            let buf = BytesMut::new();
            stream::spawn_reader(recv, buf, stream, framing, events, mirror, drain_rx);
            true
        }
    };
    loop {
        tokio::select! {
            bi = conn.accept_bi() => {
                let Ok((send, recv)) = bi else { return };
                if !open(send, recv, &mut pairing).await {
                    return;
                }
            }
            _ = &mut drain => {
                // Only what the peer has opened already: an accept that would wait ends it.
                while let Some(Ok((send, recv))) = conn.accept_bi().now_or_never() {
                    if !open(send, recv, &mut pairing).await {
                        return;
                    }
                }
                let _ = events.send(Event::NoMoreStreams).await;
                return;
            }
            uni = conn.accept_uni() => {
                let Ok(recv) = uni else { return };
                let mut recv = io.wrap(recv);
                let headers_tx = headers_tx.clone();
                tokio::spawn(async move {
                    let header = tokio::time::timeout(
                        mirror::HEADER_TIMEOUT,
                        mirror::read_header(&mut recv),
                    )
                    .await;
                    match header {
                        Ok(Ok(Ok(h))) => {
                            let _ = headers_tx.send((h.stream_id >> 2, recv)).await;
                        }
                        Ok(Ok(Err(e))) => {
                            tracing::debug!(error = %e, "mirror stream refused");
                            recv.stop(mirror::REFUSED);
                        }
                        _ => recv.stop(mirror::REFUSED),
                    }
                });
            }
            Some((index, recv)) = headers.recv() => {
                if let Some(mut refused) = pairing.mirror(index, recv) {
                    tracing::debug!(index, "mirror of a stream that ended or already has one");
                    refused.stop(mirror::REFUSED);
                }
            }
        }
    }
}
