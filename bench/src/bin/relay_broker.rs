//! `relay_broker`: the least work any MQTT 5 broker must do for `broker_bench`'s workload, as a
//! ceiling to compare quicft with, on the same transports (bench/BROKER.md, "Ceiling").
//!
//! * Accepts connections; answers CONNECT with CONNACK (Receive Maximum as quicft's
//!   `inflight_window`, 256), SUBSCRIBE with SUBACK (granted QoS 1; the stream that subscribed is
//!   remembered as *the* subscriber, whatever its filter), PINGREQ with PINGRESP, DISCONNECT by
//!   closing.
//! * PUBLISH QoS 0/1: PUBACK (QoS 1) to the publisher, all acks of one read in one write, and the
//!   message forwarded as a QoS 1 PUBLISH to the subscriber with the relay's own packet ids. The
//!   subscriber's Receive Maximum is respected loosely (a semaphore per subscriber, freed by its
//!   PUBACKs, which are otherwise ignored).
//! * No sessions, no topic matching, no retained messages, no queue bounds, no will, no keepalive,
//!   no authentication: none of what makes a broker a broker beyond moving the bytes.
//! * One task per stream reader; what a read decodes is forwarded as one batch through a bounded
//!   channel to the subscriber's writer task, which drains what is queued and writes it in one go.
//!
//! QUIC as in quicft-server (`server/src/transport.rs`, `quic_endpoint`), by construction: the
//! transport settings come from `quicft_server::config::Config::default().quic` (windows,
//! concurrent streams, idle timeout, congestion controller, UDP socket buffers), the TLS config
//! from `quicft_server::tls` (ALPN `mqtt`, TLS 1.3, ring) with the development CA in
//! `<data-dir>/certs/` (generated if missing, as quicft does), and DESIGN §3's stream mapping:
//! CONNECT/CONNACK on the first client-opened bidirectional stream, everything else on the data
//! streams, acks on the stream the packet came on, deliveries on the stream that subscribed.
//!
//! ```text
//! relay_broker --data-dir DIR [--tcp 127.0.0.1:1883] [--quic 127.0.0.1:14567] [--tls 127.0.0.1:8883]
//! ```
//! TLS (MQTT over TLS over TCP, QUIC's encrypted stream counterpart) uses quicft's TLS listener
//! configuration (`quicft_server::tls::server_config(.., false)`) with the same certificate.
//! Exits 0 on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use clap::Parser;
use quicft_proto::{
    ConnAck, Packet, Properties, Protocol, PubResp, Publish, QoS, ReasonCode, SubAck,
};
use quicft_server::config::Config;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

/// Largest packet accepted.
const MAX_PACKET: usize = 1024 * 1024;
/// Batches (one per publisher read) queued for the subscriber before publishers wait.
const QUEUE: usize = 1024;
/// Queued items the subscriber's writer takes at once.
const DRAIN: usize = 64;

/// A minimal MQTT 5 relay: the ceiling for broker_bench (see bench/BROKER.md).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Plain TCP listen address.
    #[arg(long)]
    tcp: Option<SocketAddr>,
    /// QUIC listen address.
    #[arg(long)]
    quic: Option<SocketAddr>,
    /// TLS listen address.
    #[arg(long)]
    tls: Option<SocketAddr>,
    /// Directory whose certs/ holds (or receives) the development CA and server certificate.
    #[arg(long)]
    data_dir: PathBuf,
    /// Receive Maximum announced in CONNACK (quicft's inflight_window default).
    #[arg(long, default_value_t = 256)]
    receive_maximum: u16,
}

/// What the subscriber's writer task is given.
enum Out {
    /// Messages to deliver, as decoded from one publisher read.
    Deliver(Vec<Publish>),
    /// Encoded packets (acks for a stream that has handed its writer over).
    Raw(BytesMut),
}

struct Shared {
    /// The one subscriber's writer.
    subscriber: Mutex<Option<mpsc::Sender<Out>>>,
    receive_maximum: u16,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Same runtime as quicft-server's main: multi-threaded, one worker per core.
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let shared = Arc::new(Shared {
        subscriber: Mutex::new(None),
        receive_maximum: args.receive_maximum,
    });
    // QUIC first: the bench waits for the TCP port, so both are up once it accepts.
    if let Some(addr) = args.quic {
        let ep = quic_endpoint(&args.data_dir, addr)?;
        eprintln!("relay_broker: QUIC on {}", ep.local_addr()?);
        tokio::spawn(serve_quic(ep, shared.clone()));
    }
    if let Some(addr) = args.tls {
        let id = quicft_server::tls::load_or_generate(&Default::default(), &args.data_dir)?;
        let cfg = quicft_server::tls::server_config(&id, false)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        eprintln!("relay_broker: TLS on {}", l.local_addr()?);
        tokio::spawn(serve_tcp(l, Some(acceptor), shared.clone()));
    }
    if let Some(addr) = args.tcp {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        eprintln!("relay_broker: TCP on {}", l.local_addr()?);
        tokio::spawn(serve_tcp(l, None, shared.clone()));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("relay_broker: stopping");
    // Connections are simply dropped; exit without waiting for their tasks.
    std::process::exit(0);
}

/// quicft-server's QUIC endpoint, rebuilt from its public configuration and TLS code.
fn quic_endpoint(data_dir: &std::path::Path, addr: SocketAddr) -> Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol as SockProto, Socket, Type};
    let q = Config::default().quic;
    let id = quicft_server::tls::load_or_generate(&Default::default(), data_dir)?;
    let crypto = quicft_server::tls::server_config(&id, true)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(quicft_bench::quic::transport_config(&q)?));
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(SockProto::UDP))?;
    let _ = socket.set_recv_buffer_size(q.socket_buffer);
    let _ = socket.set_send_buffer_size(q.socket_buffer);
    socket.bind(&addr.into())?;
    let runtime = quinn::default_runtime().ok_or_else(|| anyhow!("no async runtime"))?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket.into(),
        runtime,
    )?)
}

async fn serve_quic(ep: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = ep.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = quic_connection(incoming, shared).await {
                eprintln!("relay_broker: QUIC connection: {e:#}");
            }
        });
    }
}

async fn quic_connection(incoming: quinn::Incoming, shared: Arc<Shared>) -> Result<()> {
    let conn = incoming.await?;
    // The control stream: CONNECT/CONNACK, then only DISCONNECT.
    let (mut csend, mut crecv) = conn.accept_bi().await?;
    let mut cbuf = BytesMut::with_capacity(1024);
    let Some(client_rm) = read_connect(&mut crecv, &mut cbuf).await? else {
        return Ok(());
    };
    csend.write_all(&connack(shared.receive_maximum)?).await?;
    let control = {
        let conn = conn.clone();
        async move {
            // DISCONNECT, end of stream or an error: the session (and connection) ends.
            let _ = read_until_disconnect(&mut crecv, &mut cbuf).await;
            conn.close(0u32.into(), b"");
            drop(csend);
        }
    };
    tokio::spawn(control);
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(_) => return Ok(()),
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_stream(recv, send, BytesMut::new(), client_rm, shared).await {
                if !is_closed(&e) {
                    eprintln!("relay_broker: QUIC data stream: {e:#}");
                }
            }
        });
    }
}

/// Plain TCP, or TLS over TCP with an acceptor.
async fn serve_tcp(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let r = match tls {
                None => {
                    let (rd, wr) = stream.into_split();
                    stream_connection(rd, wr, shared).await
                }
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => {
                        let (rd, wr) = tokio::io::split(s);
                        stream_connection(rd, wr, shared).await
                    }
                    // The readiness probe connects and closes without a handshake.
                    Err(_) => Ok(()),
                },
            };
            if let Err(e) = r {
                if !is_closed(&e) {
                    eprintln!("relay_broker: TCP/TLS connection: {e:#}");
                }
            }
        });
    }
}

/// CONNECT/CONNACK, then MQTT on the same byte stream.
async fn stream_connection<R, W>(mut rd: R, mut wr: W, shared: Arc<Shared>) -> Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // The bench's readiness probe connects and closes: not an error.
    let Some(client_rm) = read_connect(&mut rd, &mut buf).await? else {
        return Ok(());
    };
    wr.write_all(&connack(shared.receive_maximum)?).await?;
    serve_stream(rd, wr, buf, client_rm, shared).await
}

/// A peer going away mid-read is how the bench ends its clients.
fn is_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::NotConnected
            )
        }) || c.downcast_ref::<quinn::WriteError>().is_some()
            || c.downcast_ref::<quinn::ReadError>().is_some()
            || c.downcast_ref::<quinn::ConnectionError>().is_some()
    })
}

fn connack(receive_maximum: u16) -> Result<BytesMut> {
    let mut out = BytesMut::new();
    Packet::ConnAck(ConnAck {
        session_present: false,
        code: ReasonCode::SUCCESS,
        properties: Properties {
            receive_maximum: Some(receive_maximum),
            ..Properties::default()
        },
    })
    .encode(Protocol::V5, &mut out)?;
    Ok(out)
}

/// Reads one packet, which must be CONNECT; returns the client's Receive Maximum, `None` at end
/// of stream before anything arrived.
async fn read_connect<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> Result<Option<u16>> {
    loop {
        if let Some(p) = Packet::decode(buf, Protocol::V5, MAX_PACKET)? {
            return match p {
                Packet::Connect(c) => Ok(Some(c.properties.receive_maximum.unwrap_or(u16::MAX))),
                other => bail!("expected CONNECT, got {}", other.name()),
            };
        }
        buf.reserve(4096);
        if rd.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn read_until_disconnect<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> Result<()> {
    loop {
        while let Some(p) = Packet::decode(buf, Protocol::V5, MAX_PACKET)? {
            if let Packet::Disconnect(_) = p {
                return Ok(());
            }
        }
        buf.reserve(4096);
        if rd.read_buf(buf).await? == 0 {
            return Ok(());
        }
    }
}

/// One MQTT stream (a TCP connection, or a QUIC data stream) after CONNECT.
async fn serve_stream<R, W>(
    mut rd: R,
    wr: W,
    mut buf: BytesMut,
    client_rm: u16,
    shared: Arc<Shared>,
) -> Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // The write half belongs to this task until the stream subscribes; then to its writer task.
    let mut wr = Some(wr);
    let mut to_writer: Option<mpsc::Sender<Out>> = None;
    let mut window: Option<Arc<Semaphore>> = None;
    let mut acks = BytesMut::with_capacity(4096);
    let mut fwd: Vec<Publish> = Vec::new();
    loop {
        let mut freed = 0;
        let mut subscribed = false;
        let mut disconnect = false;
        while let Some(p) = Packet::decode(&mut buf, Protocol::V5, MAX_PACKET)? {
            match p {
                Packet::Publish(p) => {
                    match p.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => {
                            Packet::PubAck(PubResp::new(p.pkid, ReasonCode::SUCCESS))
                                .encode(Protocol::V5, &mut acks)?
                        }
                        QoS::ExactlyOnce => bail!("the relay does not do QoS 2"),
                    }
                    fwd.push(p);
                }
                Packet::PubAck(_) => freed += 1,
                Packet::Subscribe(s) => {
                    Packet::SubAck(SubAck {
                        pkid: s.pkid,
                        codes: vec![ReasonCode::GRANTED_QOS_1; s.filters.len()],
                        properties: Properties::default(),
                    })
                    .encode(Protocol::V5, &mut acks)?;
                    subscribed = true;
                }
                Packet::PingReq => Packet::PingResp.encode(Protocol::V5, &mut acks)?,
                Packet::Disconnect(_) => {
                    disconnect = true;
                    break;
                }
                other => bail!("the relay does not handle {}", other.name()),
            }
        }
        if freed > 0 {
            if let Some(w) = &window {
                w.add_permits(freed);
            }
        }
        if !fwd.is_empty() {
            let tx = shared
                .subscriber
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match tx {
                // Waits when the subscriber's queue is full: back-pressure on this publisher.
                Some(tx) => {
                    if tx
                        .send(Out::Deliver(std::mem::take(&mut fwd)))
                        .await
                        .is_err()
                    {
                        fwd.clear();
                    }
                }
                None => fwd.clear(),
            }
        }
        if !acks.is_empty() {
            match (wr.as_mut(), &to_writer) {
                (Some(w), _) => {
                    w.write_all(&acks).await?;
                    acks.clear();
                }
                (None, Some(tx)) => {
                    if tx.send(Out::Raw(acks.split())).await.is_err() {
                        return Ok(());
                    }
                }
                (None, None) => acks.clear(),
            }
        }
        if subscribed {
            if let Some(w) = wr.take() {
                let (tx, rx) = mpsc::channel(QUEUE);
                let sem = Arc::new(Semaphore::new(usize::from(client_rm.max(1))));
                tokio::spawn(subscriber_writer(
                    w,
                    rx,
                    sem.clone(),
                    u32::from(client_rm.max(1)),
                ));
                *shared.subscriber.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx.clone());
                to_writer = Some(tx);
                window = Some(sem);
            }
        }
        if disconnect {
            return Ok(());
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        if rd.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// The subscriber's writer: drains what is queued, numbers the deliveries, writes them in one go.
async fn subscriber_writer<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Out>,
    window: Arc<Semaphore>,
    receive_maximum: u32,
) -> Result<()> {
    let mut out = BytesMut::with_capacity(256 * 1024);
    let mut items = Vec::with_capacity(DRAIN);
    let mut pkid: u16 = 0;
    while rx.recv_many(&mut items, DRAIN).await > 0 {
        for item in items.drain(..) {
            match item {
                Out::Raw(b) => out.extend_from_slice(&b),
                Out::Deliver(msgs) => {
                    // Loosely: a whole batch at once, never more than the window itself.
                    let n = u32::try_from(msgs.len())
                        .unwrap_or(u32::MAX)
                        .min(receive_maximum);
                    match window.try_acquire_many(n) {
                        Ok(p) => p.forget(),
                        Err(_) => {
                            // Send what is pending first: its acks are what frees the window.
                            wr.write_all(&out).await?;
                            out.clear();
                            window.acquire_many(n).await?.forget();
                        }
                    }
                    for mut p in msgs {
                        pkid = pkid.checked_add(1).unwrap_or(1);
                        p.pkid = pkid;
                        p.qos = QoS::AtLeastOnce;
                        p.dup = false;
                        p.retain = false;
                        Packet::Publish(p).encode(Protocol::V5, &mut out)?;
                    }
                }
            }
        }
        wr.write_all(&out).await?;
        out.clear();
    }
    Ok(())
}
