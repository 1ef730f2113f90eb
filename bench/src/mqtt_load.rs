//! MQTT 5 load generator for `broker_bench`: N QoS 1 publishers → 1 QoS 1 subscriber (or M members of
//! the shared subscription `$share/bench/bench/#`: fan-in to a consumer group), over TCP, TLS
//! or QUIC, written directly on the `quicft_proto` codec (not the SDK) so that it speaks to quicft and
//! to mosquitto alike and costs as little CPU as possible.
//!
//! * Every publisher keeps up to `window` PUBLISHes un-acknowledged (pipelined, never
//!   stop-and-wait) and writes whatever it may send in one batch.
//! * `max_outstanding` bounds messages published but not yet delivered to the subscriber, over all
//!   publishers. A broker acknowledges a PUBLISH as soon as it has routed it, so without this bound
//!   fast publishers fill the subscriber's queue until the broker drops or buffers without limit,
//!   and the latency measured is only the queue's length. With it the run is closed-loop: nothing
//!   is dropped and the latency is that of the path.
//! * Each payload starts with the send time (ns since the run's base `Instant`), the publisher
//!   number and a sequence number; the subscriber turns them into publish→delivery latency and
//!   counts duplicates. Both ends live in this process, so one clock serves both.
//!
//! QUIC follows DESIGN §3: CONNECT/CONNACK on the first client-opened bidirectional stream (the
//! control stream), PUBLISH and SUBSCRIBE on a second one, acks and deliveries on that same stream.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use quicft_proto::{
    Connect, Disconnect, Packet, Properties, Protocol, PubResp, Publish, QoS, ReasonCode,
    Subscribe, SubscribeFilter, SubscriptionOptions,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::net::next_packet;
use crate::quic;

/// Largest packet the generator accepts from a broker.
const MAX_PACKET: usize = 1024 * 1024;
/// Bytes at the front of every payload: send time (u64 ns), publisher (u32), sequence (u32).
const HEADER: usize = 16;
/// Most PUBLISHes encoded into one write.
const MAX_BATCH: usize = 64;
/// UDP socket buffers of the QUIC client sockets (quinn loses packets on loopback with less).
const UDP_BUFFER: usize = 4 * 1024 * 1024;
/// How long teardown waits for outstanding acks and deliveries.
const DRAIN: Duration = Duration::from_secs(5);

/// How the generator reaches the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    /// MQTT over TLS over TCP: the encrypted stream transport, QUIC's fair comparison.
    Tls,
    Quic,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Quic => "QUIC",
        }
    }
}

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// CA certificate (PEM) to trust over QUIC and TLS; the server name checked is `localhost`.
    pub ca: Option<PathBuf>,
    /// QUIC: the generator's largest UDP payload (see [`LoadConfig::quic_mtu`]).
    pub quic_mtu: Option<u16>,
}

/// The shape of the load.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub publishers: usize,
    /// Un-acknowledged QoS 1 PUBLISHes per publisher (also capped by the broker's Receive Maximum).
    pub window: usize,
    /// Payload bytes per message (at least 16, for the timestamp header).
    pub payload: usize,
    /// Published-but-not-delivered messages over all publishers; `None` for open loop.
    pub max_outstanding: Option<usize>,
    /// Makes client ids unique across runs against one broker.
    pub tag: String,
    /// QUIC: initial and largest UDP payload of the generator's packets (quinn's default 1200,
    /// discovering up to 1452). Larger values show how much of QUIC's cost is per packet.
    pub quic_mtu: Option<u16>,
    /// Consumers: 1 subscribes to `bench/#`; more each subscribe to `$share/bench/bench/#` and
    /// every message goes to one of them (MQTT 5 §4.8.2).
    pub subscribers: usize,
    /// Exercise the brokers' persistence: the subscriber's session outlives its connection
    /// (Session Expiry 3600 s, so every QoS 1 delivery to it belongs to a persistent session) and
    /// every PUBLISH is retained (each one replaces its topic's retained message).
    pub persistent: bool,
}

/// What the subscriber saw between [`Load::begin_window`] and [`Load::end_window`].
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub elapsed: Duration,
    pub delivered: u64,
    /// Publish→delivery latencies in µs, sorted.
    pub latencies_us: Vec<u32>,
}

impl Window {
    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency percentile in ms (nearest rank), `None` without samples.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        let n = self.latencies_us.len();
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let i = rank.clamp(1, n) - 1;
        self.latencies_us.get(i).map(|us| f64::from(*us) / 1000.0)
    }
}

/// Counts over the whole run, read after [`Load::stop`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Totals {
    pub published: u64,
    pub acked: u64,
    pub delivered: u64,
    /// Deliveries whose sequence number was not above the last one seen from that publisher.
    pub duplicates_or_reordered: u64,
    /// Published and never delivered, even after the drain.
    pub lost: u64,
    /// QUIC runs only.
    pub quic: Option<QuicStats>,
}

/// What the generator's QUIC connections counted (quinn `ConnectionStats`, summed), from the
/// client side: the publishers' connections carry PUBLISH up and PUBACK down, the subscriber's
/// carries deliveries down and PUBACK up.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QuicSide {
    pub connections: u64,
    pub udp_tx_datagrams: u64,
    /// Send calls (several datagrams each with GSO).
    pub udp_tx_ios: u64,
    pub udp_rx_datagrams: u64,
    /// Packets that carried ACK frames, sent and received.
    pub ack_frames_tx: u64,
    pub ack_frames_rx: u64,
    pub stream_frames_tx: u64,
    pub stream_frames_rx: u64,
    pub lost_packets: u64,
    pub congestion_events: u64,
    /// Smallest path MTU seen at the end.
    pub mtu: u16,
}

impl QuicSide {
    fn add(&mut self, s: &quinn::ConnectionStats) {
        self.connections += 1;
        self.udp_tx_datagrams += s.udp_tx.datagrams;
        self.udp_tx_ios += s.udp_tx.ios;
        self.udp_rx_datagrams += s.udp_rx.datagrams;
        self.ack_frames_tx += s.frame_tx.acks;
        self.ack_frames_rx += s.frame_rx.acks;
        self.stream_frames_tx += s.frame_tx.stream;
        self.stream_frames_rx += s.frame_rx.stream;
        self.lost_packets += s.path.lost_packets;
        self.congestion_events += s.path.congestion_events;
        self.mtu = if self.mtu == 0 {
            s.path.current_mtu
        } else {
            self.mtu.min(s.path.current_mtu)
        };
    }
}

/// QUIC counters of a run, by role.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QuicStats {
    pub publishers: QuicSide,
    pub subscriber: QuicSide,
}

#[derive(Default)]
struct Recorder {
    recording: bool,
    started: Option<Instant>,
    delivered: u64,
    latencies_us: Vec<u32>,
}

struct PublisherStats {
    published: AtomicU64,
    acked: AtomicU64,
}

/// A running load: connected clients, publishing until [`Load::stop`].
pub struct Load {
    /// Stops the publishers.
    stop_tx: watch::Sender<bool>,
    /// Stops the subscriber, after the drain.
    sub_stop_tx: watch::Sender<bool>,
    recorder: Arc<Mutex<Recorder>>,
    delivered: Arc<AtomicU64>,
    dups: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
    quic: bool,
    quic_stats: Arc<Mutex<QuicStats>>,
    pub_stats: Vec<Arc<PublisherStats>>,
    publishers: Vec<JoinHandle<Result<()>>>,
    subscribers: Vec<JoinHandle<Result<()>>>,
}

impl Load {
    /// Connects the subscriber (and waits for its SUBACK), then the publishers, and starts
    /// publishing.
    pub async fn start(target: &Target, cfg: &LoadConfig, base: Instant) -> Result<Load> {
        if cfg.payload < HEADER {
            bail!("payload must be at least {HEADER} bytes");
        }
        let tls = match target.transport {
            Transport::Quic | Transport::Tls => {
                let ca = target
                    .ca
                    .as_deref()
                    .context("QUIC and TLS need the server's CA certificate")?;
                Some(quic::client_tls(ca)?)
            }
            Transport::Tcp => None,
        };
        let quic = match (&tls, target.transport) {
            (Some(tls), Transport::Quic) => {
                Some(Arc::new(quic_client_config(tls.clone(), cfg.quic_mtu)?))
            }
            _ => None,
        };
        let tls = tls.map(|t| tokio_rustls::TlsConnector::from(Arc::new(t)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (sub_stop_tx, sub_stop_rx) = watch::channel(false);
        let recorder = Arc::new(Mutex::new(Recorder::default()));
        let delivered = Arc::new(AtomicU64::new(0));
        let dups = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let quic_stats = Arc::new(Mutex::new(QuicStats::default()));
        let outstanding = cfg.max_outstanding.map(|n| Arc::new(Semaphore::new(n)));

        let filter = match cfg.subscribers {
            0 | 1 => "bench/#",
            _ => "$share/bench/bench/#",
        };
        let expiry = cfg.persistent.then_some(3600);
        let mut subscribers = Vec::new();
        for j in 0..cfg.subscribers.max(1) {
            let sub_id = format!("bench-sub-{}-{j}", cfg.tag);
            let mut sub = Client::connect(target, quic.as_deref(), tls.as_ref(), &sub_id, expiry)
                .await
                .with_context(|| format!("subscriber {j} connect"))?;
            sub.subscribe(filter).await.context("subscribe")?;
            // Each consumer sees an increasing subsequence of every publisher's sequence, so the
            // duplicate check per consumer still holds.
            subscribers.push(tokio::spawn(subscribe_loop(
                sub,
                base,
                cfg.publishers,
                recorder.clone(),
                delivered.clone(),
                dups.clone(),
                outstanding.clone(),
                sub_stop_rx.clone(),
                quic_stats.clone(),
            )));
        }

        let mut clients = Vec::with_capacity(cfg.publishers);
        for i in 0..cfg.publishers {
            let id = format!("bench-pub-{}-{i}", cfg.tag);
            clients.push(
                Client::connect(target, quic.as_deref(), tls.as_ref(), &id, None)
                    .await
                    .with_context(|| format!("publisher {i} connect"))?,
            );
        }
        let payload = Bytes::from(vec![b'x'; cfg.payload - HEADER]);
        let mut pub_stats = Vec::new();
        let mut publishers = Vec::new();
        for (i, c) in clients.into_iter().enumerate() {
            let stats = Arc::new(PublisherStats {
                published: AtomicU64::new(0),
                acked: AtomicU64::new(0),
            });
            pub_stats.push(stats.clone());
            let window = cfg.window.min(usize::from(c.receive_maximum)).max(1);
            let p = Publisher {
                index: i as u32,
                topic: format!("bench/{i}"),
                retain: cfg.persistent,
                filler: payload.clone(),
                window,
                base,
            };
            publishers.push(tokio::spawn(p.run(
                c,
                stats,
                outstanding.clone(),
                stop_rx.clone(),
                failed.clone(),
                quic_stats.clone(),
            )));
        }
        Ok(Load {
            stop_tx,
            sub_stop_tx,
            recorder,
            delivered,
            dups,
            failed,
            quic: target.transport == Transport::Quic,
            quic_stats,
            pub_stats,
            publishers,
            subscribers,
        })
    }

    /// Deliveries so far (all of the run).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// True when a client failed (connection error, unexpected packet).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
            || self.subscribers.iter().any(|s| s.is_finished())
            || self.publishers.iter().any(|p| p.is_finished())
    }

    /// Starts counting deliveries and recording latencies.
    pub fn begin_window(&self) {
        let mut r = lock(&self.recorder);
        *r = Recorder {
            recording: true,
            started: Some(Instant::now()),
            ..Recorder::default()
        };
    }

    /// Stops counting and returns what was counted.
    pub fn end_window(&self) -> Window {
        let mut r = lock(&self.recorder);
        let elapsed = r.started.map_or(Duration::ZERO, |t| t.elapsed());
        r.recording = false;
        let mut latencies_us = std::mem::take(&mut r.latencies_us);
        latencies_us.sort_unstable();
        Window {
            elapsed,
            delivered: r.delivered,
            latencies_us,
        }
    }

    /// Stops publishing, waits (bounded) for outstanding acks and deliveries, disconnects everyone.
    pub async fn stop(self) -> Result<Totals> {
        let _ = self.stop_tx.send(true);
        let mut errors = Vec::new();
        for p in self.publishers {
            match p.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(format!("publisher: {e:#}")),
                Err(e) => errors.push(format!("publisher task: {e}")),
            }
        }
        let quic = self.quic;
        let published: u64 = self
            .pub_stats
            .iter()
            .map(|s| s.published.load(Ordering::Relaxed))
            .sum();
        let acked: u64 = self
            .pub_stats
            .iter()
            .map(|s| s.acked.load(Ordering::Relaxed))
            .sum();
        // The subscriber finishes once it has everything that was published, or after the drain.
        let deadline = Instant::now() + DRAIN;
        while self.delivered.load(Ordering::Relaxed) < published
            && Instant::now() < deadline
            && !self.subscribers.iter().any(|s| s.is_finished())
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let delivered = self.delivered.load(Ordering::Relaxed);
        // Everything has arrived (or will not): the subscriber disconnects.
        let _ = self.sub_stop_tx.send(true);
        for s in self.subscribers {
            match tokio::time::timeout(DRAIN, s).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => errors.push(format!("subscriber: {e:#}")),
                Ok(Err(e)) => errors.push(format!("subscriber task: {e}")),
                Err(_) => errors.push("subscriber did not finish".into()),
            }
        }
        let totals = Totals {
            published,
            acked,
            delivered,
            duplicates_or_reordered: self.dups.load(Ordering::Relaxed),
            lost: published.saturating_sub(delivered),
            quic: quic.then(|| {
                self.quic_stats
                    .lock()
                    .map(|q| q.clone())
                    .unwrap_or_default()
            }),
        };
        if !errors.is_empty() {
            bail!(
                "{} (so far: {} published, {} acked, {} delivered)",
                errors.join("; "),
                totals.published,
                totals.acked,
                totals.delivered
            );
        }
        Ok(totals)
    }
}

fn lock(m: &Mutex<Recorder>) -> std::sync::MutexGuard<'_, Recorder> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// What keeps a QUIC connection alive besides its data stream: the endpoint, the connection and
/// the control stream (finishing it would end the session).
struct QuicControl {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: quinn::SendStream,
    _recv: quinn::RecvStream,
}

/// One connected MQTT client with one channel for PUBLISH/SUBSCRIBE: the TCP connection itself, or
/// a QUIC data stream.
struct Client {
    rd: Reader,
    wr: Writer,
    buf: BytesMut,
    /// The broker's Receive Maximum (CONNACK), 65535 when absent.
    receive_maximum: u16,
    quic: Option<QuicControl>,
}

impl Client {
    async fn connect(
        target: &Target,
        quic: Option<&quinn::ClientConfig>,
        tls: Option<&tokio_rustls::TlsConnector>,
        client_id: &str,
        session_expiry: Option<u32>,
    ) -> Result<Client> {
        let connect = Packet::Connect(Connect {
            protocol: Protocol::V5,
            clean_start: true,
            keep_alive: 60,
            client_id: client_id.to_owned(),
            will: None,
            username: None,
            password: None,
            properties: Properties {
                receive_maximum: Some(u16::MAX),
                session_expiry_interval: session_expiry,
                ..Properties::default()
            },
        });
        let mut out = BytesMut::new();
        connect.encode(Protocol::V5, &mut out)?;
        match (target.transport, quic) {
            (Transport::Tcp | Transport::Tls, _) => {
                let s = tokio::net::TcpStream::connect(target.addr)
                    .await
                    .with_context(|| format!("TCP connect {}", target.addr))?;
                s.set_nodelay(true)?;
                let (rd, wr): (Reader, Writer) = match (target.transport, tls) {
                    (Transport::Tls, Some(tls)) => {
                        let name = rustls::pki_types::ServerName::try_from("localhost")?;
                        let s = tls.connect(name, s).await.context("TLS handshake")?;
                        let (r, w) = tokio::io::split(s);
                        (Box::new(r), Box::new(w))
                    }
                    (Transport::Tls, None) => bail!("TLS without a client configuration"),
                    _ => {
                        let (r, w) = s.into_split();
                        (Box::new(r), Box::new(w))
                    }
                };
                let mut c = Client {
                    rd,
                    wr,
                    buf: BytesMut::with_capacity(64 * 1024),
                    receive_maximum: u16::MAX,
                    quic: None,
                };
                c.wr.write_all(&out).await?;
                c.receive_maximum = read_connack(&mut c.rd, &mut c.buf).await?;
                Ok(c)
            }
            (Transport::Quic, Some(cfg)) => {
                let endpoint = quic_endpoint(cfg.clone(), target.quic_mtu)?;
                let conn = endpoint
                    .connect(target.addr, "localhost")?
                    .await
                    .context("QUIC handshake")?;
                // The control stream carries CONNECT/CONNACK; MQTT traffic goes on a data stream.
                let (mut send, mut recv) = conn.open_bi().await?;
                send.write_all(&out).await?;
                let mut cbuf = BytesMut::new();
                let receive_maximum = read_connack(&mut recv, &mut cbuf).await?;
                let (dsend, drecv) = conn.open_bi().await?;
                Ok(Client {
                    rd: Box::new(drecv),
                    wr: Box::new(dsend),
                    buf: BytesMut::with_capacity(64 * 1024),
                    receive_maximum,
                    quic: Some(QuicControl {
                        endpoint,
                        conn,
                        send,
                        _recv: recv,
                    }),
                })
            }
            (Transport::Quic, None) => bail!("QUIC without a client configuration"),
        }
    }

    async fn next_packet(&mut self) -> Result<Option<Packet>> {
        next_packet(&mut self.rd, &mut self.buf, MAX_PACKET).await
    }

    async fn subscribe(&mut self, filter: &str) -> Result<()> {
        let s = Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![SubscribeFilter {
                filter: filter.to_owned(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
            }],
            properties: Properties::default(),
        });
        let mut out = BytesMut::new();
        s.encode(Protocol::V5, &mut out)?;
        self.wr.write_all(&out).await?;
        let p = tokio::time::timeout(Duration::from_secs(10), self.next_packet())
            .await
            .context("SUBACK timeout")??;
        match p {
            Some(Packet::SubAck(a)) if a.codes.first() == Some(&ReasonCode::GRANTED_QOS_1) => {
                Ok(())
            }
            Some(Packet::SubAck(a)) => bail!("SUBACK {:?}", a.codes),
            Some(other) => bail!("expected SUBACK, got {}", other.name()),
            None => bail!("connection closed before SUBACK"),
        }
    }
}

/// Reads the CONNACK and returns the broker's Receive Maximum.
async fn read_connack<R: AsyncRead + Unpin + ?Sized>(
    rd: &mut R,
    buf: &mut BytesMut,
) -> Result<u16> {
    let p = tokio::time::timeout(Duration::from_secs(10), next_packet(rd, buf, MAX_PACKET))
        .await
        .context("CONNACK timeout")??;
    match p {
        Some(Packet::ConnAck(a)) if a.code == ReasonCode::SUCCESS => {
            Ok(a.properties.receive_maximum.unwrap_or(u16::MAX))
        }
        Some(Packet::ConnAck(a)) => bail!("CONNACK refused: {}", a.code),
        Some(other) => bail!("expected CONNACK, got {}", other.name()),
        None => bail!("connection closed before CONNACK"),
    }
}

/// Normal DISCONNECT (on the control stream over QUIC, on the only stream over TCP), then closes.
/// Returns the QUIC connection's counters.
async fn disconnect(mut wr: Writer, quic: Option<QuicControl>) -> Option<quinn::ConnectionStats> {
    let stats = quic.as_ref().map(|q| q.conn.stats());
    let mut out = BytesMut::new();
    if Packet::Disconnect(Disconnect::default())
        .encode(Protocol::V5, &mut out)
        .is_err()
    {
        return stats;
    }
    match quic {
        None => {
            let _ = wr.write_all(&out).await;
            let _ = wr.shutdown().await;
        }
        Some(mut q) => {
            let _ = q.send.write_all(&out).await;
            let _ = q.send.finish();
            let _ = wr.shutdown().await;
            // The server closes the connection once it has read the DISCONNECT.
            let _ = tokio::time::timeout(Duration::from_secs(1), q.conn.closed()).await;
            q.conn.close(0u32.into(), b"bench done");
            let _ = tokio::time::timeout(Duration::from_secs(1), q.endpoint.wait_idle()).await;
        }
    }
    stats
}

/// A publisher: one topic, a window of un-acknowledged PUBLISHes.
struct Publisher {
    index: u32,
    topic: String,
    retain: bool,
    filler: Bytes,
    window: usize,
    base: Instant,
}

impl Publisher {
    async fn run(
        self,
        client: Client,
        stats: Arc<PublisherStats>,
        outstanding: Option<Arc<Semaphore>>,
        mut stop: watch::Receiver<bool>,
        failed: Arc<AtomicBool>,
        quic_stats: Arc<Mutex<QuicStats>>,
    ) -> Result<()> {
        let credit = Arc::new(Semaphore::new(self.window));
        let Client {
            rd,
            mut wr,
            buf,
            quic,
            ..
        } = client;
        // When the ack reader ends (error, or the broker closed the stream) it closes the window,
        // which wakes the writer below with an error.
        let mut reader = tokio::spawn({
            let (credit, stats) = (credit.clone(), stats.clone());
            async move {
                let r = ack_loop(rd, buf, credit.clone(), stats).await;
                credit.close();
                r
            }
        });
        let mut seq: u32 = 0;
        let mut pkid: u16 = 0;
        let mut out = BytesMut::with_capacity(MAX_BATCH * (self.filler.len() + HEADER + 64));
        let result: Result<()> = async {
            loop {
                // One credit from the window and one from the end-to-end bound, then as many more
                // as are free right now: they all go out in one write.
                let got = tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => None,
                    p = credit.acquire() => Some(p),
                };
                let Some(p) = got else { break };
                p?.forget();
                let mut n = 1;
                if let Some(o) = &outstanding {
                    let got = tokio::select! {
                        biased;
                        _ = stop.wait_for(|s| *s) => None,
                        p = o.acquire() => Some(p),
                    };
                    let Some(p) = got else {
                        credit.add_permits(1);
                        break;
                    };
                    p?.forget();
                }
                while n < MAX_BATCH {
                    let Ok(p) = credit.try_acquire() else { break };
                    if let Some(o) = &outstanding {
                        let Ok(q) = o.try_acquire() else {
                            drop(p);
                            break;
                        };
                        q.forget();
                    }
                    p.forget();
                    n += 1;
                }
                let now = self.base.elapsed().as_nanos() as u64;
                for _ in 0..n {
                    pkid = pkid.checked_add(1).unwrap_or(1);
                    let mut payload = BytesMut::with_capacity(HEADER + self.filler.len());
                    payload.put_u64(now);
                    payload.put_u32(self.index);
                    payload.put_u32(seq);
                    payload.extend_from_slice(&self.filler);
                    seq = seq.wrapping_add(1);
                    let p = Publish {
                        dup: false,
                        qos: QoS::AtLeastOnce,
                        retain: self.retain,
                        topic: self.topic.clone(),
                        pkid,
                        properties: Properties::default(),
                        payload: payload.freeze(),
                    };
                    Packet::Publish(p).encode(Protocol::V5, &mut out)?;
                }
                wr.write_all(&out).await?;
                out.clear();
                stats.published.fetch_add(n as u64, Ordering::Relaxed);
            }
            // Wait for the outstanding acks before leaving.
            let _ = tokio::time::timeout(DRAIN, credit.acquire_many(self.window as u32)).await;
            Ok(())
        }
        .await;
        let result = match result {
            // The writer saw the window close: the reader knows why.
            Err(e) if reader.is_finished() => match (&mut reader).await {
                Ok(Err(why)) => Err(why.context("reading PUBACKs")),
                Ok(Ok(())) => Err(anyhow!("broker closed the publisher's stream")),
                Err(_) => Err(e),
            },
            other => other,
        };
        if result.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        reader.abort();
        if let Some(st) = disconnect(wr, quic).await {
            if let Ok(mut q) = quic_stats.lock() {
                q.publishers.add(&st);
            }
        }
        result
    }
}

/// Reads PUBACKs and gives their credit back.
async fn ack_loop(
    mut rd: Reader,
    mut buf: BytesMut,
    credit: Arc<Semaphore>,
    stats: Arc<PublisherStats>,
) -> Result<()> {
    loop {
        let mut acks = 0;
        while let Some(p) = Packet::decode(&mut buf, Protocol::V5, MAX_PACKET)? {
            match p {
                Packet::PubAck(a) if !a.code.is_error() => acks += 1,
                Packet::PubAck(a) => bail!("PUBACK {} for {}", a.code, a.pkid),
                Packet::Disconnect(d) => bail!("DISCONNECT {}", d.code),
                other => bail!("publisher got {}", other.name()),
            }
        }
        if acks > 0 {
            credit.add_permits(acks);
            stats.acked.fetch_add(acks as u64, Ordering::Relaxed);
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        if rd.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// Receives deliveries, acknowledges each one (all acks of a read in one write), records latency.
#[allow(clippy::too_many_arguments)]
async fn subscribe_loop(
    client: Client,
    base: Instant,
    publishers: usize,
    recorder: Arc<Mutex<Recorder>>,
    delivered: Arc<AtomicU64>,
    dups: Arc<AtomicU64>,
    outstanding: Option<Arc<Semaphore>>,
    mut stop: watch::Receiver<bool>,
    quic_stats: Arc<Mutex<QuicStats>>,
) -> Result<()> {
    let Client {
        mut rd,
        mut wr,
        mut buf,
        quic,
        ..
    } = client;
    let mut last_seq: Vec<Option<u32>> = vec![None; publishers];
    let mut acks = BytesMut::with_capacity(64 * 1024);
    let mut lat = Vec::with_capacity(1024);
    let result: Result<()> = async {
        loop {
            let mut n = 0u64;
            while let Some(p) = Packet::decode(&mut buf, Protocol::V5, MAX_PACKET)? {
                match p {
                    Packet::Publish(p) => {
                        if p.qos != QoS::AtMostOnce {
                            Packet::PubAck(PubResp::new(p.pkid, ReasonCode::SUCCESS))
                                .encode(Protocol::V5, &mut acks)?;
                        }
                        let Some(h) = p.payload.get(..HEADER) else {
                            bail!("delivery without the bench header")
                        };
                        let sent = u64::from_be_bytes(h[0..8].try_into()?);
                        let who = u32::from_be_bytes(h[8..12].try_into()?) as usize;
                        let seq = u32::from_be_bytes(h[12..16].try_into()?);
                        if let Some(last) = last_seq.get_mut(who) {
                            if last.is_some_and(|l| seq <= l) {
                                dups.fetch_add(1, Ordering::Relaxed);
                            }
                            *last = Some(seq);
                        }
                        lat.push(sent);
                        n += 1;
                    }
                    Packet::Disconnect(d) => bail!("DISCONNECT {}", d.code),
                    other => bail!("subscriber got {}", other.name()),
                }
            }
            if n > 0 {
                wr.write_all(&acks).await?;
                acks.clear();
                let now = base.elapsed().as_nanos() as u64;
                {
                    let mut r = lock(&recorder);
                    if r.recording {
                        r.delivered += n;
                        for sent in &lat {
                            let us = now.saturating_sub(*sent) / 1000;
                            r.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                        }
                    }
                }
                lat.clear();
                delivered.fetch_add(n, Ordering::Relaxed);
                if let Some(o) = &outstanding {
                    o.add_permits(n as usize);
                }
            }
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(64 * 1024);
            }
            let read = tokio::select! {
                r = rd.read_buf(&mut buf) => r?,
                // Sent by `Load::stop` after the drain: whatever is still missing is lost.
                _ = stop.wait_for(|s| *s) => return Ok(()),
            };
            if read == 0 {
                bail!("broker closed the subscriber's stream");
            }
        }
    }
    .await;
    if let Some(st) = disconnect(wr, quic).await {
        if let Ok(mut q) = quic_stats.lock() {
            q.subscriber.add(&st);
        }
    }
    result
}

/// quinn client configuration on top of [`quic::client_tls`].
fn quic_client_config(tls: rustls::ClientConfig, mtu: Option<u16>) -> Result<quinn::ClientConfig> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // Windows as large as the server's, so flow control never paces the generator.
    transport
        .stream_receive_window(quinn::VarInt::from_u32(8 * 1024 * 1024))
        .receive_window(quinn::VarInt::from_u32(32 * 1024 * 1024))
        .send_window(32 * 1024 * 1024);
    if let Some(mtu) = mtu {
        let mut discovery = quinn::MtuDiscoveryConfig::default();
        discovery.upper_bound(mtu);
        transport
            .initial_mtu(mtu)
            .mtu_discovery_config(Some(discovery));
    }
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

/// A client endpoint on its own UDP socket (one per simulated device) with large buffers.
fn quic_endpoint(cfg: quinn::ClientConfig, mtu: Option<u16>) -> Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol as SockProto, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(SockProto::UDP))?;
    socket.set_recv_buffer_size(UDP_BUFFER)?;
    socket.set_send_buffer_size(UDP_BUFFER)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    let runtime = quinn::default_runtime().ok_or_else(|| anyhow!("no async runtime"))?;
    let mut endpoint_cfg = quinn::EndpointConfig::default();
    if let Some(mtu) = mtu {
        // What we tell the server we can receive; quinn's default is 1472.
        endpoint_cfg.max_udp_payload_size(mtu)?;
    }
    let mut ep = quinn::Endpoint::new(endpoint_cfg, None, socket.into(), runtime)?;
    ep.set_default_client_config(cfg);
    Ok(ep)
}

/// Socket buffer sizes the kernel actually granted (Linux reports twice the usable size).
pub fn udp_buffers_granted() -> io::Result<(usize, usize)> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    s.set_recv_buffer_size(UDP_BUFFER)?;
    s.set_send_buffer_size(UDP_BUFFER)?;
    Ok((s.recv_buffer_size()?, s.send_buffer_size()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let w = Window {
            elapsed: Duration::from_secs(2),
            delivered: 100,
            latencies_us: (1..=100).map(|i| i * 1000).collect(),
        };
        assert_eq!(w.rate(), 50.0);
        assert_eq!(w.percentile_ms(50.0), Some(50.0));
        assert_eq!(w.percentile_ms(99.0), Some(99.0));
        assert_eq!(w.percentile_ms(100.0), Some(100.0));
        assert_eq!(Window::default().percentile_ms(50.0), None);
    }
}
