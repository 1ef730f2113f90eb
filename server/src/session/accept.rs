//! The data streams of a QUIC connection, and their mirrors.
//!
//! Promise: every bidirectional stream the client opens after CONNACK becomes a data stream of the
//! session (an [`Event::Opened`] with its writer, then its reader's packets); a unidirectional
//! stream is a mirror of a data stream once its header names one ([`crate::mirror`]), refused
//! otherwise. Streams opened before CONNACK wait in quinn until the session accepts them.

use bytes::BytesMut;
use quicft_proto::Protocol;
use tokio::sync::mpsc;

use crate::link::PacketRead;
use crate::mirror::{self, Pairing};
use crate::stream::{self, Event};

/// Accepts the data streams of a QUIC connection (after CONNACK: streams opened earlier wait in
/// quinn until then), and the mirrors of data streams (crate::mirror).
pub(super) async fn accept_data_streams(
    conn: quinn::Connection,
    protocol: Protocol,
    max: usize,
    events: mpsc::Sender<Event>,
    io: crate::clients::Io,
) {
    let mut pairing = Pairing::new();
    // Mirror streams whose header has been read: (data stream index, mirror).
    let (headers_tx, mut headers) = mpsc::channel(mirror::MAX_MIRRORS as usize);
    loop {
        tokio::select! {
            bi = conn.accept_bi() => {
                let Ok((send, recv)) = bi else { return };
                let stream = recv.id().index();
                let (writer, _task) = stream::spawn_writer(io.wrap(send));
                let (drain, drain_rx) = tokio::sync::oneshot::channel();
                if events.send(Event::Opened { stream, writer, drain }).await.is_err() {
                    return;
                }
                stream::spawn_reader(
                    io.wrap(recv),
                    BytesMut::new(),
                    stream,
                    stream::Framing {
                        protocol,
                        max_packet_size: max,
                    },
                    events.clone(),
                    Some(pairing.data_stream(stream)),
                    drain_rx,
                );
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
