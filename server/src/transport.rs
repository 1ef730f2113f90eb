//! Listeners: QUIC (quinn), TCP and TLS (tokio-rustls), and WebSocket on either of the latter two
//! (`ws`). Each accepted connection becomes a `session::serve` task; all feed the same broker and
//! sessions.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::OwnedSemaphorePermit;

use crate::config::{Config, Congestion, QuicConfig};
use crate::link::{Link, Transport};
use crate::session;
use crate::tls::{self, Identity};
use crate::Ctx;

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Said once, in the operator's words: "TLS listener 127.0.0.1:8883: address already in use".
    #[error("{listener} listener {addr}: {reason}")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        reason: String,
    },
    #[error("QUIC configuration: {0}")]
    Quic(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

impl ListenError {
    /// A bind error of the `listener` ("QUIC", "TCP", "TLS", "HTTP API") on `addr`.
    pub fn bind(
        listener: &'static str,
        addr: SocketAddr,
    ) -> impl Fn(std::io::Error) -> ListenError + Copy {
        move |e| ListenError::Bind {
            listener,
            addr,
            reason: describe_io(&e),
        }
    }
}

/// "Address already in use (os error 98)" → "address already in use".
fn describe_io(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_owned(),
    }
}

/// A UDP socket with large buffers: quinn loses packets at high rates with the kernel's default
/// 208 KiB (seen on loopback). Linux caps the request at net.core.rmem_max/wmem_max.
fn udp_socket(addr: SocketAddr, buffer: usize) -> Result<std::net::UdpSocket, ListenError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = ListenError::bind("QUIC", addr);
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    let (rcv, snd) = (
        socket.recv_buffer_size().unwrap_or(0),
        socket.send_buffer_size().unwrap_or(0),
    );
    // Linux reports twice the usable size.
    if rcv < buffer || snd < buffer {
        tracing::warn!(
            requested = buffer,
            recv = rcv,
            send = snd,
            "UDP socket buffers are smaller than requested; raise net.core.rmem_max and net.core.wmem_max"
        );
    }
    socket.bind(&addr.into()).map_err(err)?;
    Ok(socket.into())
}

/// The largest UDP payload of a 1500-byte IPv4 / IPv6 packet: 1500 − 20 (or 40) − 8. quinn's
/// path-MTU search stops at 1452 by default, 20 bytes a packet short on IPv4.
pub const MAX_UDP_PAYLOAD_V4: u16 = 1472;
pub const MAX_UDP_PAYLOAD_V6: u16 = 1452;

/// The server's QUIC transport settings: stream limits, windows, congestion controller, idle
/// timeout, path-MTU search (up to `[quic] mtu_upper_bound`, by default [`MAX_UDP_PAYLOAD_V4`];
/// an IPv6 listener lowers the default, see `quic_endpoint`). Public so that the bench's
/// endpoints run with exactly these.
pub fn transport_config(q: &QuicConfig) -> Result<quinn::TransportConfig, ListenError> {
    transport_config_for(q, q.mtu_upper_bound.unwrap_or(MAX_UDP_PAYLOAD_V4))
}

fn transport_config_for(
    q: &QuicConfig,
    mtu_upper_bound: u16,
) -> Result<quinn::TransportConfig, ListenError> {
    let mut transport = quinn::TransportConfig::default();
    let mut mtud = quinn::MtuDiscoveryConfig::default();
    // Probes (RFC 8899, DF set) find a smaller path; their loss does not count as congestion.
    mtud.upper_bound(mtu_upper_bound);
    transport.mtu_discovery_config(Some(mtud));
    transport
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(q.max_concurrent_bidi_streams))
        // Client-opened unidirectional streams are mirrors of data streams (crate::mirror).
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(crate::mirror::MAX_MIRRORS))
        .stream_receive_window(quinn::VarInt::from_u32(q.stream_receive_window))
        .receive_window(quinn::VarInt::from_u32(q.receive_window))
        .send_window(q.send_window)
        .max_idle_timeout(Some(
            q.idle_timeout
                .try_into()
                .map_err(|_| ListenError::Quic("idle_timeout too large".into()))?,
        ));
    match q.congestion {
        Congestion::Cubic => transport
            .congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default())),
        Congestion::Bbr => transport
            .congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default())),
        Congestion::Delay => transport
            .congestion_controller_factory(Arc::new(quicft_congestion::DelayBbrConfig::default())),
    };
    Ok(transport)
}

/// Builds the QUIC endpoint (ALPN `mqtt`, windows and congestion control from the config).
pub(crate) fn quic_endpoint(
    cfg: &Config,
    id: &Identity,
    cert: Arc<tls::ServerCert>,
    addr: SocketAddr,
) -> Result<quinn::Endpoint, ListenError> {
    let q = &cfg.quic;
    let crypto = tls::server_config_with(id, cert, true)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
        .map_err(|e| ListenError::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let default_bound = if addr.is_ipv6() {
        MAX_UDP_PAYLOAD_V6
    } else {
        MAX_UDP_PAYLOAD_V4
    };
    let transport = transport_config_for(q, q.mtu_upper_bound.unwrap_or(default_bound))?;
    server.transport_config(Arc::new(transport));
    let socket = udp_socket(addr, q.socket_buffer)?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| ListenError::Quic("no async runtime".into()))?;
    let reset_key = stateless_reset_key(&cfg.data_dir).map_err(|e| {
        ListenError::Quic(format!(
            "stateless reset key {}: {e}",
            cfg.data_dir.join(RESET_KEY_FILE).display()
        ))
    })?;
    // quinn drops a short-header packet whose connection ID its generator does not recognise
    // before it considers a reset; the generator's key must outlive the process as well.
    let cid_key = ring::hmac::sign(&reset_key, b"quicft connection-id key");
    let cid_key = cid_key
        .as_ref()
        .first_chunk::<8>()
        .map_or(0, |b| u64::from_le_bytes(*b));
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
    // Behind a QUIC-LB load balancer, ids that carry this node's server id (crate::quic_lb).
    match cfg.cluster.parse().map_err(ListenError::Quic)? {
        Some(lb) => endpoint_config.cid_generator(move || Box::new(lb.clone())),
        None => endpoint_config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        }),
    };
    quinn::Endpoint::new(endpoint_config, Some(server), socket, runtime)
        .map_err(ListenError::bind("QUIC", addr))
}

/// The stateless-reset key's file in the data dir.
pub const RESET_KEY_FILE: &str = "quic-reset.key";

/// The key QUIC stateless-reset tokens are derived from (RFC 9000 §10.3), kept in the data dir
/// (created once, mode 0600). With a fresh key per process, a restarted server could not send a
/// reset its devices recognise, and each would wait out its idle timeout (~60 s, issue 17) before
/// reconnecting; with the same key, a device's next packet gets a reset it accepts at once. The
/// connection-ID generator's key is derived from it (see `quic_endpoint`).
fn stateless_reset_key(data_dir: &std::path::Path) -> std::io::Result<ring::hmac::Key> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    const LEN: usize = 64;
    let path = data_dir.join(RESET_KEY_FILE);
    let mut key = [0u8; LEN];
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                .map_err(|_| std::io::Error::other("no system randomness"))?;
            f.write_all(&key)?;
            f.sync_all()?;
            std::fs::File::open(data_dir)?.sync_all()?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut f = std::fs::File::open(&path)?;
            f.read_exact(&mut key)?;
        }
        Err(e) => return Err(e),
    }
    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key))
}

/// A TCP listener whose accept backlog fits `max_connections` (the kernel caps it at
/// net.core.somaxconn). The usual 128 made connects past ~2,100 in a burst of 3,000 wait a second
/// for a SYN retry (issue 17).
pub(crate) fn tcp_listener(
    listener: &'static str,
    addr: SocketAddr,
    max_connections: usize,
) -> Result<TcpListener, ListenError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = ListenError::bind(listener, addr);
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    let backlog = i32::try_from(max_connections).unwrap_or(i32::MAX).max(128);
    socket.listen(backlog).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

/// Takes a connection slot, or `None` when `max_connections` are open.
fn permit(ctx: &Ctx) -> Option<OwnedSemaphorePermit> {
    let p = ctx.connections.clone().try_acquire_owned().ok();
    if p.is_none() {
        tracing::warn!("connection limit reached, refusing a connection");
    }
    p
}

/// Accepts QUIC connections until shutdown.
pub(crate) async fn serve_quic(endpoint: quinn::Endpoint, ctx: Arc<Ctx>) {
    let mut shutdown = ctx.shutdown.clone();
    let Ok(listener) = endpoint.local_addr() else {
        tracing::error!("QUIC endpoint has no local address");
        return;
    };
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i { Some(i) => i, None => return },
            _ = shutdown.changed() => return,
        };
        let Some(permit) = permit(&ctx) else {
            incoming.refuse();
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let peer = incoming.remote_address();
            let handshake = async {
                let conn = incoming.accept()?.await?;
                // The first client-opened bidirectional stream is the control stream (DESIGN §3).
                let (send, recv) = conn.accept_bi().await?;
                Ok::<_, quinn::ConnectionError>((conn, send, recv))
            };
            match tokio::time::timeout(ctx.config.limits.handshake_timeout, handshake).await {
                Ok(Ok((conn, send, recv))) => {
                    if recv.id().index() != 0 {
                        conn.close(
                            quinn::VarInt::from_u32(0x82),
                            b"control stream must be the first stream",
                        );
                        return;
                    }
                    let cert_name = quic_cert_name(&conn);
                    let link = Link {
                        transport: Transport::Quic,
                        peer,
                        listener,
                        quic: Some(conn),
                        cert_name,
                    };
                    session::serve(ctx, link, recv, send).await;
                }
                // Every refused connection gets a line with its reason (an unknown CA, a client
                // certificate rustls rejects, a wrong ALPN …): what an operator looks for first.
                Ok(Err(e)) => {
                    tracing::info!(%peer, reason = %e, "QUIC connection refused: handshake failed")
                }
                Err(_) => tracing::info!(%peer, "QUIC connection refused: handshake timeout"),
            }
            drop(permit);
        });
    }
}

/// The verified client certificate's name on a QUIC connection (mTLS), if there is one.
fn quic_cert_name(conn: &quinn::Connection) -> Option<Arc<str>> {
    let identity = conn.peer_identity()?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    chain.first().and_then(tls::cert_name).map(Arc::from)
}

/// What a TCP (or TLS) listener's connections carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// MQTT bytes directly.
    Mqtt,
    /// MQTT in WebSocket binary frames (`crate::ws`).
    WebSocket,
}

/// Accepts TCP connections (TLS when an acceptor is given) until shutdown.
pub(crate) async fn serve_tcp(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    framing: Framing,
    ctx: Arc<Ctx>,
) {
    let ws = framing == Framing::WebSocket;
    let mut shutdown = ctx.shutdown.clone();
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "TCP listener has no local address");
            return;
        }
    };
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Some(permit) = permit(&ctx) else { continue };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let link = Link {
                        transport: if ws { Transport::Ws } else { Transport::Tcp },
                        peer,
                        listener: local,
                        quic: None,
                        cert_name: None,
                    };
                    if ws {
                        crate::ws::serve(ctx, link, stream).await;
                    } else {
                        let (r, w) = stream.into_split();
                        session::serve(ctx, link, r, w).await;
                    }
                }
                Some(acceptor) => {
                    match tokio::time::timeout(
                        ctx.config.limits.handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(tls)) => {
                            let cert_name = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(tls::cert_name)
                                .map(Arc::from);
                            let link = Link {
                                transport: if ws { Transport::Wss } else { Transport::Tls },
                                peer,
                                listener: local,
                                quic: None,
                                cert_name,
                            };
                            if ws {
                                crate::ws::serve(ctx, link, tls).await;
                            } else {
                                let (r, w) = tokio::io::split(tls);
                                session::serve(ctx, link, r, w).await;
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%peer, reason = %e, "TLS connection refused: handshake failed")
                        }
                        Err(_) => {
                            tracing::info!(%peer, "TLS connection refused: handshake timeout")
                        }
                    }
                }
            }
            drop(permit);
        });
    }
}
