//! Transports as sets of prioritised channels (DESIGN §3).
//!
//! A *channel* is what the session sends packets on and what answers come back on:
//!
//! * QUIC ([`quic`]): each channel is its own bidirectional stream with a send priority; the first
//!   one opened is the control stream (CONNECT, PINGREQ, DISCONNECT). Every stream has a writer task
//!   and a reader task.
//! * TCP / TLS ([`stream`]): one byte stream carries every channel. One writer task empties one queue
//!   per channel kind in priority order, whole packets at a time (MQTT cannot interleave packets), so
//!   a PINGREQ or a telemetry message waits at most for the one packet being written; one reader
//!   task hands every received packet to the session.
//!
//! Either way a channel is a [`ChannelTx`](crate::channel::ChannelTx): a data queue (bounded: back-pressure to the caller) and an
//! acknowledgement queue (for PUBACK/PUBREC/PUBREL/PUBCOMP the reader sends without waiting, sent
//! first; its depth is bounded by the receive maximum and the in-flight window).

pub(crate) mod io;
mod mirror;
mod quic;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;

use quicft_proto::{ConnAck, Packet};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::channel::{ChannelKind, ChannelTx, Outgoing};
use crate::error::{CloseReason, Error, Result};
use crate::options::{ClientOptions, Transport};
use crate::session::{encode, ServerLimits, Shared};
use io::{PacketReader, ReadError};

/// An established transport.
pub(crate) enum Link {
    Quic(quic::QuicLink),
    Stream(stream::StreamLink),
}

/// A connection after a successful CONNACK, its tasks running.
pub(crate) struct Established {
    pub(crate) link: Link,
    pub(crate) shared: Arc<Shared>,
    pub(crate) control: ChannelTx,
    pub(crate) connack: ConnAck,
    pub(crate) remote: SocketAddr,
    /// The transport that won.
    pub(crate) transport: Transport,
    /// Why the first choice did not win, when the fallback did.
    pub(crate) fell_back: Option<String>,
}

/// Connects over `options.transport` and exchanges CONNECT / CONNACK; with a fallback configured,
/// races it against the first choice once the head start has passed (happy eyeballs, RFC 8305
/// style): the first successful CONNACK wins, the loser is dropped mid-handshake (nothing of it
/// has been spawned yet, so nothing lingers).
pub(crate) async fn establish(options: &ClientOptions, connect: &Packet) -> Result<Established> {
    let connect = encode(connect, options.protocol, usize::MAX)?;
    let Some(fallback) = options.fallback.filter(|&f| f != options.transport) else {
        return establish_over(options, connect).await;
    };
    let mut fb_options = options.clone();
    fb_options.transport = fallback;
    fb_options.port = options.fallback_port;
    let primary = establish_over(options, connect.clone());
    let secondary = establish_over(&fb_options, connect);
    tokio::pin!(primary, secondary);
    let fell_back = |mut est: Established, why: String| {
        est.fell_back = Some(why);
        est
    };
    let first_error = tokio::select! {
        r = &mut primary => match r {
            Ok(est) => return Ok(est),
            Err(e) => e,
        },
        _ = tokio::time::sleep(options.fallback_delay) => {
            tracing::debug!(primary = %options.transport, %fallback, "no connection within the head start; racing the fallback");
            tokio::select! {
                r = &mut primary => match r {
                    Ok(est) => return Ok(est),
                    Err(e) => e,
                },
                r = &mut secondary => match r {
                    Ok(est) => {
                        let why = format!(
                            "{} did not answer within {} ms",
                            options.transport,
                            options.fallback_delay.as_millis()
                        );
                        return Ok(fell_back(est, why));
                    }
                    Err(e2) => {
                        return primary.await.map_err(|e1| both_failed(options.transport, e1, fallback, e2));
                    }
                },
            }
        }
    };
    tracing::debug!(primary = %options.transport, error = %first_error, %fallback, "falling back");
    let why = format!("{} failed: {first_error}", options.transport);
    secondary
        .await
        .map(|est| fell_back(est, why))
        .map_err(|e2| both_failed(options.transport, first_error, fallback, e2))
}

fn both_failed(first: Transport, e1: Error, second: Transport, e2: Error) -> Error {
    Error::AllTransportsFailed(format!("{first}: {e1}; {second}: {e2}"))
}

async fn establish_over(options: &ClientOptions, connect: bytes::Bytes) -> Result<Established> {
    match options.transport {
        Transport::Quic => quic::establish(options, connect).await,
        Transport::Tls | Transport::Tcp => stream::establish(options, connect).await,
    }
}

impl Link {
    /// The QUIC path's current maximum UDP payload (path-MTU discovery); `None` over TCP.
    pub(crate) fn path_mtu(&self) -> Option<u16> {
        match self {
            Link::Quic(l) => Some(l.path_mtu()),
            Link::Stream(_) => None,
        }
    }

    /// A new channel of `kind`: a new stream on QUIC, a queue of the shared writer on TCP.
    pub(crate) async fn open_channel(
        &self,
        shared: &Arc<Shared>,
        kind: ChannelKind,
    ) -> Result<ChannelTx> {
        match self {
            Link::Quic(l) => l.open_channel(shared, kind).await,
            Link::Stream(l) => Ok(l.channel(kind)),
        }
    }

    /// Graceful end: everything queued on data channels goes out first, then DISCONNECT on the
    /// control channel, then the transport closes.
    pub(crate) async fn shutdown(
        &self,
        shared: &Shared,
        control: &ChannelTx,
        disconnect: bytes::Bytes,
    ) {
        match self {
            Link::Quic(l) => l.shutdown(shared, control, disconnect).await,
            Link::Stream(l) => l.shutdown(shared, control, disconnect).await,
        }
    }
}

/// Sends CONNECT and reads the CONNACK on a fresh stream; refuses an error code.
async fn handshake<R, W>(
    reader: &mut PacketReader<R>,
    writer: &mut W,
    connect: &[u8],
) -> Result<ConnAck>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    writer.write_all(connect).await?;
    writer.flush().await?;
    let connack = match reader.next().await {
        Ok(Some(Packet::ConnAck(c))) => c,
        Ok(Some(Packet::Disconnect(d))) => {
            return Err(Error::ConnectionRefused {
                code: d.code,
                reason: d.properties.reason_string,
            })
        }
        Ok(Some(other)) => {
            return Err(Error::ConnectionClosed(CloseReason::Protocol(format!(
                "{} instead of CONNACK",
                other.name()
            ))))
        }
        Ok(None) => {
            return Err(Error::ConnectionClosed(CloseReason::Transport(
                "server closed the connection before CONNACK".into(),
            )))
        }
        Err(ReadError::Decode(e)) => return Err(Error::ConnectionClosed(e.into())),
        Err(ReadError::Io(e)) => return Err(Error::Io(e)),
        Err(ReadError::Truncated) => {
            return Err(Error::ConnectionClosed(CloseReason::Transport(
                "server closed the connection inside CONNACK".into(),
            )))
        }
    };
    if connack.code.is_error() {
        return Err(Error::ConnectionRefused {
            code: connack.code,
            reason: connack.properties.reason_string.clone(),
        });
    }
    Ok(connack)
}

/// The session state for a connection that the server has just accepted.
fn new_shared(options: &ClientOptions, connack: &ConnAck) -> Arc<Shared> {
    let limits = ServerLimits::from_connack(connack, options.protocol);
    Arc::new(Shared::new(
        options.protocol,
        limits,
        options.max_inflight,
        CancellationToken::new(),
    ))
}

/// Depth of a channel's acknowledgement queue: every QoS 1/2 delivery the server may have in flight
/// (our Receive Maximum) plus a PUBREL for each of our own flows, so a conforming server never
/// fills it.
fn ack_capacity(options: &ClientOptions) -> usize {
    usize::from(options.receive_maximum) + usize::from(options.max_inflight) + 64
}

/// Host names resolved to addresses, IPv4 first (the zero-config server listens on 127.0.0.1, and a
/// UDP datagram to a closed ::1 port gets no answer a QUIC client could act on quickly).
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Error::Resolve(format!("{host}: {e}")))?
        .collect();
    addrs.sort_by_key(|a| a.is_ipv6());
    addrs.dedup();
    if addrs.is_empty() {
        return Err(Error::Resolve(host.to_owned()));
    }
    Ok(addrs)
}

/// How a reader stopped.
pub(crate) enum ReadEnd {
    /// The server finished its side cleanly.
    Eof,
    /// The connection or channel was cancelled.
    Cancelled,
    /// Bytes that are not MQTT, or an I/O error: the stream is unusable.
    Failed(CloseReason),
    /// The session must end (server DISCONNECT, packet a client must never receive).
    Close(CloseReason),
}

/// Reads packets from one stream and applies them to the session until the stream ends.
pub(crate) async fn read_loop<R: AsyncRead + Unpin>(
    shared: &Shared,
    reader: &mut PacketReader<R>,
    acks: &mpsc::WeakSender<Outgoing>,
    cancel: &CancellationToken,
) -> ReadEnd {
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return ReadEnd::Cancelled,
            next = reader.next() => next,
        };
        let packet = match next {
            Ok(Some(p)) => p,
            Ok(None) => return ReadEnd::Eof,
            Err(ReadError::Decode(e)) => return ReadEnd::Failed(e.into()),
            Err(e) => return ReadEnd::Failed(CloseReason::Transport(e.to_string())),
        };
        tracing::trace!(packet = packet.name(), "received");
        let reaction = shared.on_packet(packet);
        if let Some((targets, publish)) = reaction.deliver {
            for tx in targets {
                // Waiting here is the back-pressure: a full subscription queue stops this reader, and
                // flow control then stops the server.
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return ReadEnd::Cancelled,
                    _ = tx.send(publish.clone()) => {}
                }
            }
        }
        if let Some(reply) = reaction.reply {
            match encode(&reply, shared.protocol, usize::MAX) {
                Ok(bytes) => {
                    if let Some(tx) = acks.upgrade() {
                        if let Err(mpsc::error::TrySendError::Full(_)) =
                            tx.try_send(Outgoing::Packet(bytes))
                        {
                            return ReadEnd::Close(CloseReason::Protocol(
                                "server exceeded the receive maximum".into(),
                            ));
                        }
                    }
                    // No sender left: the channel is being closed, its acks no longer matter.
                }
                Err(e) => tracing::warn!(%e, "cannot encode {}", reply.name()),
            }
        }
        if let Some(reason) = reaction.close {
            return ReadEnd::Close(reason);
        }
    }
}

/// Spawns `fut` inside the current tracing span (the connection's).
fn spawn<F>(fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(fut.in_current_span());
}
