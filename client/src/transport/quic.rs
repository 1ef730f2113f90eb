//! MQTT over QUIC: one bidirectional stream per channel (DESIGN §3).
//!
//! ```text
//!  stream 0 (control, priority control)   CONNECT → CONNACK, PINGREQ ↔ PINGRESP, DISCONNECT
//!  stream 4 (telemetry)                   PUBLISH/SUBSCRIBE …, their acks, deliveries it subscribed to
//!  stream 8, 12 … (telemetry or file)     the same, one per channel the application opens
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use quinn::{RecvStream, SendStream, VarInt};
use tokio::sync::{mpsc, oneshot};

use super::io::{run_writer, PacketReader, PriorityQueues, WriterEnd};
use super::mirror::{spawn_mirror, MirrorTx, Tee};
use super::{ack_capacity, handshake, new_shared, read_loop, resolve, spawn};
use super::{Established, Link, ReadEnd};
use crate::channel::{ChannelId, ChannelKind, ChannelTx, Outgoing};
use crate::error::{CloseReason, Error, Result};
use crate::options::{ClientOptions, Congestion, Priorities, QuicOptions};
use crate::session::Shared;

/// Stream error code when we reset a stream the server sent bytes on that are not MQTT
/// (the MQTT reason code for Malformed Packet).
const MALFORMED: u32 = 0x81;
/// How long a finished stream waits for the server to acknowledge its last bytes.
const FINISH_WAIT: Duration = Duration::from_secs(5);
/// How long a graceful shutdown waits for the close to reach the server.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

pub(crate) struct QuicLink {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    priorities: Priorities,
    channel_queue: usize,
    ack_capacity: usize,
    max_packet_in: usize,
    next_id: AtomicU64,
    /// Minimum gap of telemetry mirrors, when the server offers them (super::mirror).
    mirror: Option<Duration>,
    /// Data channels opened so far, to finish them before DISCONNECT. Weak: a channel nobody holds
    /// finishes on its own.
    channels: Mutex<Vec<mpsc::WeakSender<Outgoing>>>,
}

pub(crate) async fn establish(options: &ClientOptions, connect: Bytes) -> Result<Established> {
    let addrs = resolve(&options.host, options.port()).await?;
    let endpoint = endpoint(&options.quic, addrs.iter().any(SocketAddr::is_ipv6))?;
    let configs = PathConfigs {
        v4: client_config(options, false)?,
        v6: client_config(options, true)?,
    };
    let (conn, remote) = race(&endpoint, &configs, &addrs, options.server_name()).await?;
    tracing::debug!(%remote, "QUIC connection established");

    let (send, recv) = conn.open_bi().await?;
    let _ = send.set_priority(options.priorities.control);
    let max_in = options.max_incoming_packet_size as usize;
    let mut reader = PacketReader::new(recv, options.protocol, max_in);
    let mut send = send;
    let connack = handshake(&mut reader, &mut send, &connect).await?;
    let shared = new_shared(options, &connack);
    let offered = quicft_proto::mirror::offered(&connack.properties);

    let link = QuicLink {
        endpoint,
        conn: conn.clone(),
        priorities: options.priorities,
        channel_queue: options.channel_queue.max(1),
        ack_capacity: ack_capacity(options),
        max_packet_in: max_in,
        next_id: AtomicU64::new(1),
        mirror: options.quic.telemetry_mirror.filter(|_| offered),
        channels: Mutex::new(Vec::new()),
    };
    let control = link.spawn_channel(&shared, 0, ChannelKind::Control, send, reader, None);

    // Connection-level end: a lost connection fails the session; a closed session closes the
    // connection (dropping the last client handle, keep-alive timeout, server DISCONNECT …).
    let watcher = shared.clone();
    spawn(async move {
        tokio::select! {
            _ = watcher.cancel.cancelled() => conn.close(VarInt::from_u32(0), b""),
            err = conn.closed() => watcher.close(CloseReason::Transport(err.to_string())),
        }
    });

    Ok(Established {
        link: Link::Quic(link),
        shared,
        control,
        connack,
        remote,
        transport: crate::options::Transport::Quic,
        fell_back: None,
    })
}

impl QuicLink {
    pub(crate) async fn open_channel(
        &self,
        shared: &Arc<Shared>,
        kind: ChannelKind,
    ) -> Result<ChannelTx> {
        let (send, recv) = tokio::select! {
            _ = shared.cancel.cancelled() => return Err(shared.closed_error()),
            opened = self.conn.open_bi() => opened?,
        };
        let priority = match kind {
            ChannelKind::Control => self.priorities.control,
            ChannelKind::Telemetry => self.priorities.telemetry,
            ChannelKind::File => self.priorities.file,
        };
        let _ = send.set_priority(priority);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let reader = PacketReader::new(recv, shared.protocol, self.max_packet_in);
        let mirror = match (kind, self.mirror) {
            (ChannelKind::Telemetry, Some(gap)) => self.open_mirror(shared, &send, priority, gap),
            _ => None,
        };
        let tx = self.spawn_channel(shared, id, kind, send, reader, mirror);
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels.retain(|w| w.strong_count() > 0);
        channels.push(tx.data.downgrade());
        Ok(tx)
    }

    /// A mirror for the telemetry stream `send`, if the server has room for one right now (it
    /// allows a few unidirectional streams; without room the channel simply has no mirror).
    fn open_mirror(
        &self,
        shared: &Shared,
        send: &SendStream,
        priority: i32,
        gap: Duration,
    ) -> Option<MirrorTx> {
        use futures::FutureExt;
        let uni = self.conn.open_uni().now_or_never()?.ok()?;
        let _ = uni.set_priority(priority);
        spawn_mirror(
            self.conn.clone(),
            send,
            uni,
            gap,
            shared.cancel.child_token(),
        )
    }

    /// Starts the writer and reader tasks of one stream.
    fn spawn_channel(
        &self,
        shared: &Arc<Shared>,
        id: ChannelId,
        kind: ChannelKind,
        mut send: SendStream,
        mut reader: PacketReader<RecvStream>,
        mirror: Option<MirrorTx>,
    ) -> ChannelTx {
        let (data, data_rx) = mpsc::channel(self.channel_queue);
        let (acks, acks_rx) = mpsc::channel(self.ack_capacity);
        let weak_acks = acks.downgrade();
        // Cancelled with the connection, or alone when this stream goes bad.
        let cancel = shared.cancel.child_token();
        let span = tracing::debug_span!("stream", id, ?kind);

        let writer_cancel = cancel.clone();
        let writer_shared = shared.clone();
        spawn(tracing::Instrument::instrument(
            async move {
                let mut queues = PriorityQueues::new(vec![acks_rx, data_rx]);
                let mut tee = Tee {
                    primary: &mut send,
                    mirror,
                };
                let end = run_writer(&mut queues, &mut tee, &writer_cancel).await;
                drop(tee); // a finished or failed stream ends its mirror too
                match end {
                    Ok(WriterEnd::Closed) => {
                        let _ = send.finish();
                    }
                    Ok(WriterEnd::Finish(done)) => {
                        let _ = send.finish();
                        let _ = tokio::time::timeout(FINISH_WAIT, send.stopped()).await;
                        let _ = done.send(());
                    }
                    Ok(WriterEnd::Cancelled) => {
                        if !writer_shared.cancel.is_cancelled() {
                            let _ = send.reset(VarInt::from_u32(MALFORMED));
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%e, "stream write failed");
                        end_channel(
                            &writer_shared,
                            id,
                            kind,
                            CloseReason::Transport(e.to_string()),
                        );
                        writer_cancel.cancel();
                    }
                }
            },
            span.clone(),
        ));

        let reader_shared = shared.clone();
        spawn(tracing::Instrument::instrument(
            async move {
                let end = read_loop(&reader_shared, &mut reader, &weak_acks, &cancel).await;
                match end {
                    ReadEnd::Cancelled => {}
                    ReadEnd::Eof => {
                        tracing::debug!("server finished the stream");
                        end_channel(
                            &reader_shared,
                            id,
                            kind,
                            CloseReason::Transport("server finished the control stream".into()),
                        );
                        cancel.cancel();
                    }
                    ReadEnd::Failed(reason) => {
                        tracing::warn!(%reason, "stream failed");
                        let _ = reader.get_mut().stop(VarInt::from_u32(MALFORMED));
                        end_channel(&reader_shared, id, kind, reason);
                        cancel.cancel();
                    }
                    ReadEnd::Close(reason) => reader_shared.close(reason),
                }
            },
            span,
        ));

        ChannelTx {
            id,
            kind,
            data,
            acks,
        }
    }

    pub(crate) fn path_mtu(&self) -> u16 {
        self.conn.stats().path.current_mtu
    }

    pub(crate) async fn shutdown(&self, shared: &Shared, control: &ChannelTx, disconnect: Bytes) {
        // Data streams first: a QUIC server reads streams independently, so a message still on its
        // way on a data stream could otherwise arrive after the DISCONNECT and be dropped.
        let channels: Vec<_> = {
            let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
            channels
                .iter()
                .filter_map(mpsc::WeakSender::upgrade)
                .collect()
        };
        let mut finished = Vec::new();
        for tx in channels {
            let (done, wait) = oneshot::channel();
            if tx.send(Outgoing::Finish(done)).await.is_ok() {
                finished.push(wait);
            }
        }
        let _ = tokio::time::timeout(FINISH_WAIT, futures::future::join_all(finished)).await;

        let (done, wait) = oneshot::channel();
        if control
            .data
            .send(Outgoing::Packet(disconnect))
            .await
            .is_ok()
            && control.data.send(Outgoing::Finish(done)).await.is_ok()
        {
            let _ = tokio::time::timeout(FINISH_WAIT, wait).await;
        }
        shared.close(CloseReason::Local);
        self.conn.close(VarInt::from_u32(0), b"");
        let _ = tokio::time::timeout(CLOSE_WAIT, self.endpoint.wait_idle()).await;
    }
}

/// A stream ended: for the control stream that ends the connection, for a data stream only its own
/// flows and subscriptions.
fn end_channel(shared: &Shared, id: ChannelId, kind: ChannelKind, reason: CloseReason) {
    if kind == ChannelKind::Control {
        shared.close(reason);
    } else {
        shared.fail_channel(id);
    }
}

/// A client endpoint on a UDP socket with enlarged buffers: quinn drops packets on bursts with the
/// kernel's small defaults. Dual-stack when any server address is IPv6.
fn endpoint(q: &QuicOptions, want_v6: bool) -> Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = if want_v6 {
        match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
            Ok(s) => {
                // Dual-stack so IPv4 addresses of the same name stay reachable.
                let _ = s.set_only_v6(false);
                s.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)).into())?;
                s
            }
            Err(_) => bind_v4()?,
        }
    } else {
        bind_v4()?
    };
    if let Err(e) = socket.set_recv_buffer_size(q.socket_buffer) {
        tracing::warn!(%e, "cannot raise the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(q.socket_buffer) {
        tracing::warn!(%e, "cannot raise the UDP send buffer");
    }
    // Linux reports twice what it grants; anything below the ask means net.core.rmem_max capped it.
    if let Ok(got) = socket.recv_buffer_size() {
        if got < q.socket_buffer {
            tracing::info!(
                asked = q.socket_buffer,
                got,
                "UDP receive buffer capped by the system (raise net.core.rmem_max)"
            );
        }
    }
    socket.set_nonblocking(true)?;
    let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket.into(),
        runtime,
    )?)
}

fn bind_v4() -> Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)).into())?;
    Ok(s)
}

/// The largest UDP payload in a 1500-byte IP packet (Ethernet, LTE and most cellular bearers):
/// 1500 − 20 (IPv4) − 8 (UDP), and 1500 − 40 (IPv6) − 8. quinn's path-MTU search stops at 1452 by
/// default, which leaves 20 bytes a packet (1.4 % of the wire) unused on IPv4.
const MAX_UDP_PAYLOAD_V4: u16 = 1472;
const MAX_UDP_PAYLOAD_V6: u16 = 1452;

/// One client configuration per address family: the path-MTU search's upper bound differs.
struct PathConfigs {
    v4: quinn::ClientConfig,
    v6: quinn::ClientConfig,
}

/// quinn's path-MTU discovery (RFC 8899 probes with DF set) searching up to `upper_bound` bytes of
/// UDP payload; a path that carries less only costs lost probes (they do not count as congestion)
/// and ends the search lower.
pub(crate) fn mtu_discovery(upper_bound: u16) -> quinn::MtuDiscoveryConfig {
    let mut mtud = quinn::MtuDiscoveryConfig::default();
    mtud.upper_bound(upper_bound);
    mtud
}

fn client_config(options: &ClientOptions, remote_v6: bool) -> Result<quinn::ClientConfig> {
    let q = &options.quic;
    let default_bound = if remote_v6 {
        MAX_UDP_PAYLOAD_V6
    } else {
        MAX_UDP_PAYLOAD_V4
    };
    let crypto = crate::tls::quic_config(&options.tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(q.idle_timeout)
        .map_err(|_| Error::InvalidOptions("QUIC idle timeout too large".into()))?;
    t.stream_receive_window(VarInt::from_u32(q.stream_receive_window))
        .receive_window(VarInt::from_u32(q.receive_window))
        .send_window(q.send_window)
        .initial_rtt(q.initial_rtt)
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(q.keep_alive_interval)
        // Every stream is opened by the client (DESIGN §3).
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .mtu_discovery_config(Some(mtu_discovery(
            q.mtu_upper_bound.unwrap_or(default_bound),
        )));
    let factory: Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> = match &q.congestion {
        Congestion::Bbr => Arc::new(quinn::congestion::BbrConfig::default()),
        Congestion::Cubic => Arc::new(quinn::congestion::CubicConfig::default()),
        Congestion::NewReno => Arc::new(quinn::congestion::NewRenoConfig::default()),
        Congestion::Delay => Arc::new(quicft_congestion::DelayBbrConfig::default()),
        Congestion::Custom(f) => f.clone(),
    };
    t.congestion_controller_factory(factory);
    config.transport_config(Arc::new(t));
    Ok(config)
}

/// Starts a handshake to every address at once and keeps the first that completes (a name such as
/// `localhost` may resolve to addresses the server does not listen on, and UDP gives no quick
/// "refused").
/// Resolves when `addr` is known to have no UDP listener: a one-byte datagram from a connected
/// socket brings back the host's ICMP "port unreachable" as ECONNREFUSED at once, where the QUIC
/// handshake would wait its whole timeout (quinn's socket is not connected and never sees it).
/// Pending forever when no such answer comes (a firewall that drops, a real server: QUIC servers
/// discard a datagram too short to be a packet).
async fn refused(addr: SocketAddr) -> std::io::Error {
    let probe = async {
        let local: SocketAddr = match addr {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = tokio::net::UdpSocket::bind(local).await?;
        socket.connect(addr).await?;
        socket.send(&[0]).await?;
        let mut buf = [0u8; 64];
        loop {
            socket.recv(&mut buf).await?;
        }
    };
    let result: std::io::Result<std::convert::Infallible> = probe.await;
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("nothing is listening on UDP {addr} (connection refused)"),
        ),
        // No verdict from the probe (no socket, no route): leave it to the handshake.
        _ => std::future::pending().await,
    }
}

async fn race(
    endpoint: &quinn::Endpoint,
    configs: &PathConfigs,
    addrs: &[SocketAddr],
    server_name: &str,
) -> Result<(quinn::Connection, SocketAddr)> {
    let mut last_err: Option<Error> = None;
    let mut attempts = FuturesUnordered::new();
    for &addr in addrs {
        if addr.is_ipv6() && endpoint.local_addr().is_ok_and(|l| l.is_ipv4()) {
            continue;
        }
        // A v4 address through a dual-stack socket is still an IPv4 packet on the wire.
        let config = if addr.is_ipv6() {
            &configs.v6
        } else {
            &configs.v4
        };
        match endpoint.connect_with(config.clone(), addr, server_name) {
            Ok(connecting) => attempts.push(async move {
                tokio::select! {
                    r = connecting => (addr, r.map_err(Error::from)),
                    refused = refused(addr) => (addr, Err(Error::Io(refused))),
                }
            }),
            Err(e) => last_err = Some(e.into()),
        }
    }
    while let Some((addr, result)) = attempts.next().await {
        match result {
            Ok(conn) => return Ok((conn, addr)),
            Err(e) => {
                tracing::debug!(%addr, %e, "QUIC handshake failed");
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or_else(|| Error::Resolve(server_name.to_owned())))
}
