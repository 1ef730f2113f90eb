//! The three measurements of `ft_bench` (issue 3, "Speed"): a durable EMQX-style upload to a real
//! `quicft-server`, a raw quinn stream with the server's TLS and transport settings, and a
//! sequential write of the same size with one fdatasync.
//!
//! The upload client speaks MQTT 5 on our codec (`quicft_proto`), not the SDK, so that nothing but
//! the server and the transport stands between the bytes and the disk:
//!
//! ```text
//! init     $file/{id}/init        {"name","size","checksum"}   wait for its PUBACK
//! segments $file/{id}/{offset}    `window` un-acknowledged at once (pipelined)
//! fin      $file/{id}/fin/{size}  sent once every segment is acknowledged; PUBACK after assembly
//! ```
//! Every PUBACK must be 0x00: under quicft that means the bytes are on disk (DESIGN §2, §4).
//!
//! Segments are written without copying their payload: the codec encodes the PUBLISH with an empty
//! payload, [`publish_header`] patches its Remaining Length, and header and payload go to the
//! stream as two chunks (quinn `write_chunk`; TCP `write_all`). The raw quinn client writes the
//! same `Bytes` the same way, so the ratio between the two is the server's and MQTT's cost alone.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use quicft_proto::ft::{Command as FtCommand, FileId, Mode};
use quicft_proto::{
    Connect, Disconnect, Packet, Properties, Protocol, PubResp, Publish, QoS, ReasonCode,
};
use quicft_server::config::QuicConfig;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::sync::Semaphore;

use crate::net::next_packet;
use crate::quic;

/// Largest packet accepted from the server (acks only; 64 KiB is plenty).
const MAX_PACKET: usize = 64 * 1024;
/// Time allowed for a handshake, a CONNACK or an ack that should come at once.
const SHORT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------------------ QUIC settings

/// rustls (ring) client trusting `ca` only, ALPN `mqtt`, with the server's transport settings.
pub fn quic_client_config(ca: &Path, q: &QuicConfig) -> Result<quinn::ClientConfig> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(quic::client_tls(ca)?)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(quic::transport_config(q)?));
    Ok(cfg)
}

/// A UDP socket on loopback with buffers as large as the kernel grants up to `buffer`.
fn udp_socket(addr: SocketAddr, buffer: usize) -> Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol as SockProto, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(SockProto::UDP))?;
    socket.set_recv_buffer_size(buffer)?;
    socket.set_send_buffer_size(buffer)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// What the kernel grants for a UDP socket buffer request of `buffer` (Linux reports twice the
/// usable size and caps the request at net.core.rmem_max / wmem_max).
pub fn udp_buffers_granted(buffer: usize) -> Result<(usize, usize)> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    s.set_recv_buffer_size(buffer)?;
    s.set_send_buffer_size(buffer)?;
    Ok((s.recv_buffer_size()?, s.send_buffer_size()?))
}

fn client_endpoint(cfg: quinn::ClientConfig, buffer: usize) -> Result<quinn::Endpoint> {
    let socket = udp_socket(SocketAddr::from(([127, 0, 0, 1], 0)), buffer)?;
    let runtime = quinn::default_runtime().ok_or_else(|| anyhow!("no async runtime"))?;
    let mut ep = quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)?;
    ep.set_default_client_config(cfg);
    Ok(ep)
}

/// What the sender's QUIC stack saw: losses on loopback mean the UDP buffers overflowed.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct QuicStats {
    pub sent_packets: u64,
    pub lost_packets: u64,
    pub congestion_events: u64,
    pub mtu: u16,
    pub min_rtt_us: u64,
    pub cwnd: u64,
}

impl QuicStats {
    pub fn of(conn: &quinn::Connection) -> QuicStats {
        let p = conn.stats().path;
        QuicStats {
            sent_packets: p.sent_packets,
            lost_packets: p.lost_packets,
            congestion_events: p.congestion_events,
            mtu: p.current_mtu,
            min_rtt_us: p.min_rtt.as_micros() as u64,
            cwnd: p.cwnd,
        }
    }

    /// What happened between `earlier` and `self` (the counters; MTU, RTT and cwnd as now).
    pub fn since(self, earlier: QuicStats) -> QuicStats {
        QuicStats {
            sent_packets: self.sent_packets - earlier.sent_packets,
            lost_packets: self.lost_packets - earlier.lost_packets,
            congestion_events: self.congestion_events - earlier.congestion_events,
            ..self
        }
    }
}

impl std::fmt::Display for QuicStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} pkts sent, {} lost, {} congestion events, MTU {}, min RTT {} µs, cwnd {:.1} MiB",
            self.sent_packets,
            self.lost_packets,
            self.congestion_events,
            self.mtu,
            self.min_rtt_us,
            self.cwnd as f64 / (1 << 20) as f64
        )
    }
}

// ------------------------------------------------------------------------------ MQTT client

/// Which listener an upload goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Quic,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Quic => "QUIC",
            Transport::Tcp => "TCP",
        }
    }
}

enum Wr {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    Quic(quinn::SendStream),
}

impl Wr {
    /// Writes `parts` in order; over QUIC without copying them.
    async fn send(&mut self, parts: &[Bytes]) -> Result<()> {
        match self {
            Wr::Tcp(w) => {
                for p in parts {
                    w.write_all(p).await?;
                }
            }
            Wr::Quic(w) => {
                for p in parts {
                    w.write_chunk(p.clone()).await?;
                }
            }
        }
        Ok(())
    }
}

/// What keeps a QUIC session alive besides its data stream.
struct QuicKeep {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    control: quinn::SendStream,
    _control_rx: quinn::RecvStream,
}

/// One MQTT 5 session with one channel for PUBLISH/PUBACK: the TCP connection, or a QUIC data
/// stream (the control stream carried CONNECT/CONNACK, DESIGN §3).
pub struct MqttConn {
    rd: Box<dyn AsyncRead + Unpin + Send>,
    wr: Wr,
    buf: BytesMut,
    /// The server's Receive Maximum: the most un-acknowledged QoS 1 PUBLISHes it allows.
    pub receive_maximum: u16,
    /// The server's Maximum Packet Size, when it announced one.
    pub maximum_packet_size: Option<u32>,
    quic: Option<QuicKeep>,
}

impl MqttConn {
    /// Connects with a clean session. `quic` carries the client configuration and the UDP socket
    /// buffer size.
    pub async fn connect(
        transport: Transport,
        addr: SocketAddr,
        quic: Option<(&quinn::ClientConfig, usize)>,
        client_id: &str,
    ) -> Result<MqttConn> {
        let connect = Packet::Connect(Connect {
            protocol: Protocol::V5,
            clean_start: true,
            keep_alive: 60,
            client_id: client_id.to_owned(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        });
        let mut out = BytesMut::new();
        connect.encode(Protocol::V5, &mut out)?;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        match (transport, quic) {
            (Transport::Tcp, _) => {
                let s = tokio::time::timeout(SHORT, tokio::net::TcpStream::connect(addr))
                    .await
                    .context("TCP connect timeout")?
                    .with_context(|| format!("TCP connect {addr}"))?;
                s.set_nodelay(true)?;
                let (mut r, mut w) = s.into_split();
                w.write_all(&out).await?;
                let ack = read_connack(&mut r, &mut buf).await?;
                Ok(MqttConn::new(Box::new(r), Wr::Tcp(w), buf, &ack, None))
            }
            (Transport::Quic, Some((cfg, buffer))) => {
                let endpoint = client_endpoint(cfg.clone(), buffer)?;
                let conn = tokio::time::timeout(SHORT, endpoint.connect(addr, "localhost")?)
                    .await
                    .context("QUIC handshake timeout")?
                    .context("QUIC handshake")?;
                let (mut control, mut control_rx) = conn.open_bi().await?;
                control.write_all(&out).await?;
                let mut cbuf = BytesMut::new();
                let ack = read_connack(&mut control_rx, &mut cbuf).await?;
                let (dsend, drecv) = conn.open_bi().await?;
                let keep = QuicKeep {
                    endpoint,
                    conn,
                    control,
                    _control_rx: control_rx,
                };
                Ok(MqttConn::new(
                    Box::new(drecv),
                    Wr::Quic(dsend),
                    buf,
                    &ack,
                    Some(keep),
                ))
            }
            (Transport::Quic, None) => bail!("QUIC without a client configuration"),
        }
    }

    fn new(
        rd: Box<dyn AsyncRead + Unpin + Send>,
        wr: Wr,
        buf: BytesMut,
        ack: &Properties,
        quic: Option<QuicKeep>,
    ) -> MqttConn {
        MqttConn {
            rd,
            wr,
            buf,
            receive_maximum: ack.receive_maximum.unwrap_or(u16::MAX),
            maximum_packet_size: ack.maximum_packet_size,
            quic,
        }
    }

    /// The QUIC connection's path statistics (sender side), `None` over TCP.
    pub fn quic_stats(&self) -> Option<QuicStats> {
        self.quic.as_ref().map(|q| QuicStats::of(&q.conn))
    }

    /// Normal DISCONNECT, then closes (over QUIC: waits for the server to close the connection).
    pub async fn disconnect(self) {
        let mut out = BytesMut::new();
        if Packet::Disconnect(Disconnect::default())
            .encode(Protocol::V5, &mut out)
            .is_err()
        {
            return;
        }
        let MqttConn { wr, quic, .. } = self;
        match (wr, quic) {
            (Wr::Tcp(mut w), _) => {
                let _ = w.write_all(&out).await;
                let _ = w.shutdown().await;
            }
            (Wr::Quic(mut data), Some(mut q)) => {
                let _ = q.control.write_all(&out).await;
                let _ = q.control.finish();
                let _ = data.finish();
                let _ = tokio::time::timeout(Duration::from_secs(2), q.conn.closed()).await;
                q.conn.close(0u32.into(), b"bench done");
                let _ = tokio::time::timeout(Duration::from_secs(2), q.endpoint.wait_idle()).await;
            }
            (Wr::Quic(_), None) => {}
        }
    }
}

async fn read_connack<R: AsyncRead + Unpin + ?Sized>(
    rd: &mut R,
    buf: &mut BytesMut,
) -> Result<Properties> {
    let p = tokio::time::timeout(SHORT, next_packet(rd, buf, MAX_PACKET))
        .await
        .context("CONNACK timeout")??;
    match p {
        Some(Packet::ConnAck(a)) if a.code == ReasonCode::SUCCESS => Ok(a.properties),
        Some(Packet::ConnAck(a)) => bail!("CONNACK refused: {}", a.code),
        Some(other) => bail!("expected CONNACK, got {}", other.name()),
        None => bail!("connection closed before CONNACK"),
    }
}

/// Next PUBACK; anything else (or the end of the stream) is an error.
async fn next_ack<R: AsyncRead + Unpin + ?Sized>(
    rd: &mut R,
    buf: &mut BytesMut,
) -> Result<PubResp> {
    match next_packet(rd, buf, MAX_PACKET).await? {
        Some(Packet::PubAck(a)) => Ok(a),
        Some(Packet::Disconnect(d)) => bail!(
            "server sent DISCONNECT {} {:?}",
            d.code,
            d.properties.reason_string
        ),
        Some(other) => bail!("expected PUBACK, got {}", other.name()),
        None => bail!("server closed the stream"),
    }
}

/// A PUBACK that is not 0x00, with the reason string when the server gave one.
fn check_ack(a: &PubResp, what: &str) -> Result<()> {
    if a.code != ReasonCode::SUCCESS {
        let why = a.properties.reason_string.as_deref().unwrap_or("");
        bail!("{what}: PUBACK {} {why}", a.code);
    }
    Ok(())
}

/// The bytes of a QoS 1 PUBLISH of `topic` with a `payload_len`-byte payload, up to where the
/// payload starts: the codec's encoding of the same PUBLISH with an empty payload, with its
/// Remaining Length raised by `payload_len`.
pub fn publish_header(topic: &str, pkid: u16, payload_len: usize) -> Result<Bytes> {
    let p = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.to_owned(),
        pkid,
        properties: Properties::default(),
        payload: Bytes::new(),
    });
    let mut empty = BytesMut::new();
    p.encode(Protocol::V5, &mut empty)?;
    // Fixed header: type/flags byte, then Remaining Length as a variable byte integer (MQTT 5
    // §1.5.5), at most 4 bytes.
    let mut remaining = 0usize;
    let mut len_bytes = 0usize;
    for (i, b) in empty.iter().skip(1).take(4).enumerate() {
        remaining |= usize::from(b & 0x7f) << (7 * i);
        len_bytes = i + 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    let body = empty
        .get(1 + len_bytes..)
        .context("codec produced a short PUBLISH")?;
    if body.len() != remaining {
        bail!("codec produced an unexpected PUBLISH header");
    }
    let mut total = remaining + payload_len;
    if total > 268_435_455 {
        bail!("PUBLISH of {payload_len} bytes is over MQTT's limit");
    }
    let mut out = BytesMut::with_capacity(5 + body.len());
    out.put_u8(empty[0]);
    loop {
        let mut b = (total & 0x7f) as u8;
        total >>= 7;
        if total > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if total == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    Ok(out.freeze())
}

/// How an upload is cut and paced.
#[derive(Debug, Clone, Copy)]
pub struct UploadShape {
    /// Payload bytes per segment PUBLISH.
    pub segment: usize,
    /// Segments in flight (sent, not yet acknowledged).
    pub window: usize,
}

/// Timings of one upload, all from just before init is written.
#[derive(Debug, Clone)]
pub struct UploadReport {
    pub bytes: u64,
    pub segments: u64,
    /// Window actually used (the server's Receive Maximum may lower it).
    pub window: usize,
    /// init's PUBACK (transfer directory and files created durably).
    pub init: Duration,
    /// The last segment's PUBACK.
    pub segments_done: Duration,
    /// fin's PUBACK (assembly and export done): the upload's completion time.
    pub total: Duration,
}

impl UploadReport {
    pub fn goodput(&self) -> f64 {
        self.bytes as f64 / self.total.as_secs_f64().max(1e-9)
    }
}

/// Uploads `data` as one file `file_id` (see the module docs); fails on any PUBACK but 0x00.
/// `sha256_hex` goes into init's metadata so that the server checks the assembled file.
pub async fn upload(
    conn: &mut MqttConn,
    file_id: &str,
    data: &Bytes,
    sha256_hex: &str,
    shape: UploadShape,
) -> Result<UploadReport> {
    let size = data.len() as u64;
    let file_id = FileId::parse(file_id)?;
    let topic = |command| file_id.topic(Mode::Sync, &command);
    let segment_topic = |offset| {
        topic(FtCommand::Segment {
            offset,
            checksum: None,
        })
    };
    let segment = shape.segment.max(1);
    let window = shape
        .window
        .clamp(1, usize::from(conn.receive_maximum).max(1));
    if let Some(max) = conn.maximum_packet_size {
        let need = publish_header(&segment_topic(size), 1, segment)?.len() + segment;
        if need > max as usize {
            bail!("segment of {segment} bytes makes {need}-byte packets; the server accepts at most {max}");
        }
    }
    let init_payload = serde_json::to_vec(&serde_json::json!({
        "name": "bench.bin",
        "size": size,
        "checksum": sha256_hex,
    }))?;
    let MqttConn { rd, wr, buf, .. } = conn;
    let rd: &mut (dyn AsyncRead + Unpin + Send) = rd.as_mut();

    let t0 = Instant::now();
    // init: the transfer must exist before its first segment arrives.
    let init_payload = Bytes::from(init_payload);
    wr.send(&[
        publish_header(&topic(FtCommand::Init), 1, init_payload.len())?,
        init_payload,
    ])
    .await?;
    let a = tokio::time::timeout(SHORT, next_ack(rd, buf))
        .await
        .context("init PUBACK timeout")??;
    check_ack(&a, "init")?;
    let t_init = t0.elapsed();

    // Segments, pipelined: the writer takes a credit per segment, the reader gives it back per ack.
    let credit = Semaphore::new(window);
    // pkid → offset of the segment in flight under it.
    let pending: Mutex<HashMap<u16, u64>> = Mutex::new(HashMap::with_capacity(window));
    let nseg = size.div_ceil(segment as u64);
    let writer = async {
        let mut pkid: u16 = 1;
        let mut offset = 0u64;
        while offset < size {
            credit.acquire().await?.forget();
            pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
            let end = (offset + segment as u64).min(size);
            let payload = data.slice(offset as usize..end as usize);
            if lock(&pending).insert(pkid, offset).is_some() {
                bail!("packet id {pkid} reused while in flight");
            }
            let header = publish_header(&segment_topic(offset), pkid, payload.len())?;
            wr.send(&[header, payload]).await?;
            offset = end;
        }
        Ok::<_, anyhow::Error>(pkid)
    };
    let reader = async {
        let mut acked = 0u64;
        // Generous: the first ack of a stalled disk may take long, but not forever.
        let stall = Duration::from_secs(60);
        while acked < nseg {
            let a = tokio::time::timeout(stall, next_ack(rd, buf))
                .await
                .context("no segment PUBACK for 60 s")??;
            let Some(offset) = lock(&pending).remove(&a.pkid) else {
                bail!("PUBACK for packet id {} that is not in flight", a.pkid);
            };
            check_ack(&a, &format!("segment at {offset}"))?;
            credit.add_permits(1);
            acked += 1;
        }
        Ok::<_, anyhow::Error>(())
    };
    let (last_pkid, ()) = tokio::try_join!(writer, reader)?;
    let t_segments = t0.elapsed();

    // fin: every byte is durable; its PUBACK comes after assembly and export.
    let pkid = if last_pkid == u16::MAX {
        1
    } else {
        last_pkid + 1
    };
    let fin = topic(FtCommand::Fin {
        size,
        checksum: None,
    });
    wr.send(&[publish_header(&fin, pkid, 0)?]).await?;
    let a = tokio::time::timeout(Duration::from_secs(120), next_ack(rd, buf))
        .await
        .context("fin PUBACK timeout")??;
    if a.pkid != pkid {
        bail!("fin: PUBACK for packet id {}, expected {pkid}", a.pkid);
    }
    check_ack(&a, "fin")?;
    Ok(UploadReport {
        bytes: size,
        segments: nseg,
        window,
        init: t_init,
        segments_done: t_segments,
        total: t0.elapsed(),
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ------------------------------------------------------------------------------ raw quinn

/// Name of the raw receiver's threads, for [`threads_ticks`].
pub const RAW_SINK_THREADS: &str = "raw-sink";

/// A raw QUIC receiver with the server's certificate, ALPN and transport settings, in its own
/// tokio runtime (2 worker threads, like `quicft-server` on this machine): it reads each stream to
/// its end, discards the bytes and answers with their count (u64, big-endian).
pub struct RawSink {
    pub addr: SocketAddr,
    endpoint: quinn::Endpoint,
    runtime: Option<tokio::runtime::Runtime>,
}

impl RawSink {
    /// `cert`/`key`: the server's development certificate (`<data-dir>/certs/server.{pem,key}`).
    pub fn start(cert: &Path, key: &Path, q: &QuicConfig) -> Result<RawSink> {
        let id = quicft_server::tls::load_pem(cert, key)?;
        let crypto = quicft_server::tls::server_config(&id, true)?;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::new(quic::transport_config(q)?));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .thread_name(RAW_SINK_THREADS)
            .enable_all()
            .build()?;
        let socket = udp_socket(SocketAddr::from(([127, 0, 0, 1], 0)), q.socket_buffer)?;
        let endpoint = {
            let _guard = runtime.enter();
            let rt = quinn::default_runtime().ok_or_else(|| anyhow!("no async runtime"))?;
            quinn::Endpoint::new(quinn::EndpointConfig::default(), Some(server), socket, rt)?
        };
        let addr = endpoint.local_addr()?;
        let ep = endpoint.clone();
        runtime.spawn(async move {
            while let Some(incoming) = ep.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        tokio::spawn(async move {
                            let mut n = 0u64;
                            while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
                                n += chunk.bytes.len() as u64;
                            }
                            let _ = send.write_all(&n.to_be_bytes()).await;
                            let _ = send.finish();
                            let _ = send.stopped().await;
                        });
                    }
                });
            }
        });
        Ok(RawSink {
            addr,
            endpoint,
            runtime: Some(runtime),
        })
    }
}

impl Drop for RawSink {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"done");
        // Dropped from async code: a blocking shutdown would panic there.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Sends `data` over one fresh stream in `segment`-sized chunks (as [`upload`] writes its
/// payloads) and waits for the sink's count. Timed from opening the stream to the count; the
/// handshake is outside, as it is for the upload.
pub async fn raw_quinn(
    sink: SocketAddr,
    cfg: &quinn::ClientConfig,
    buffer: usize,
    data: &Bytes,
    segment: usize,
) -> Result<(Duration, QuicStats)> {
    let endpoint = client_endpoint(cfg.clone(), buffer)?;
    let conn = tokio::time::timeout(SHORT, endpoint.connect(sink, "localhost")?)
        .await
        .context("raw QUIC handshake timeout")?
        .context("raw QUIC handshake")?;
    let before = QuicStats::of(&conn);
    let t0 = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + segment.max(1)).min(data.len());
        send.write_chunk(data.slice(offset..end)).await?;
        offset = end;
    }
    send.finish()?;
    let answer = recv.read_to_end(8).await?;
    let elapsed = t0.elapsed();
    let stats = QuicStats::of(&conn).since(before);
    let got = u64::from_be_bytes(
        answer
            .as_slice()
            .try_into()
            .map_err(|_| anyhow!("raw sink answered {} bytes", answer.len()))?,
    );
    if got != data.len() as u64 {
        bail!("raw sink received {got} of {} bytes", data.len());
    }
    conn.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    Ok((elapsed, stats))
}

// ------------------------------------------------------------------------------ disk

/// Writes `data` sequentially into a new file `path` in 1 MiB writes, then one fdatasync; the time
/// of all of it (open included). The file is removed afterwards.
pub fn disk_write(path: &Path, data: &[u8]) -> Result<Duration> {
    const CHUNK: usize = 1 << 20;
    let t0 = Instant::now();
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    for chunk in data.chunks(CHUNK) {
        f.write_all(chunk)?;
    }
    f.sync_data()?;
    let elapsed = t0.elapsed();
    drop(f);
    fs::remove_file(path)?;
    Ok(elapsed)
}

// ------------------------------------------------------------------------------ data

/// `n` pseudo-random bytes (SplitMix64): incompressible, reproducible, and quick to make.
pub fn random_bytes(n: usize, seed: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(n + 8);
    let mut x = seed;
    while out.len() < n {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.put_u64_le(z ^ (z >> 31));
    }
    out.truncate(n);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_plus_payload_is_the_codec_encoding() {
        for len in [
            0usize,
            1,
            100,
            127 - 20,
            16_383,
            16_384,
            1 << 20,
            2_097_151,
            2_097_152 + 7,
        ] {
            let payload = random_bytes(len, len as u64);
            let topic = format!("$file/f1/{}", len * 3);
            let mut full = BytesMut::new();
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: topic.clone(),
                pkid: 77,
                properties: Properties::default(),
                payload: payload.clone(),
            })
            .encode(Protocol::V5, &mut full)
            .expect("encode");
            let mut ours = BytesMut::from(&publish_header(&topic, 77, len).expect("header")[..]);
            ours.extend_from_slice(&payload);
            assert_eq!(ours, full, "payload of {len} bytes");
        }
    }
}
