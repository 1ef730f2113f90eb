//! What a [`Client`](crate::Client) connects to and how.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quicft_proto::Protocol;

/// Default UDP port of MQTT over QUIC (EMQX's).
pub const DEFAULT_QUIC_PORT: u16 = 14567;
/// Default port of MQTT over TLS.
pub const DEFAULT_TLS_PORT: u16 = 8883;
/// Default port of plain MQTT over TCP.
pub const DEFAULT_TCP_PORT: u16 = 1883;

/// How the client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Transport {
    /// MQTT over QUIC: one stream per channel, ALPN `mqtt` (DESIGN §3).
    #[default]
    Quic,
    /// MQTT over TLS over TCP: every channel shares one byte stream.
    Tls,
    /// Plain MQTT over TCP (no encryption): for loopback and tests.
    Tcp,
}

impl Transport {
    /// The port used when none is given.
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Quic => DEFAULT_QUIC_PORT,
            Transport::Tls => DEFAULT_TLS_PORT,
            Transport::Tcp => DEFAULT_TCP_PORT,
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Quic => "quic",
            Transport::Tls => "tls",
            Transport::Tcp => "tcp",
        })
    }
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "quic" => Ok(Transport::Quic),
            "tls" => Ok(Transport::Tls),
            "tcp" => Ok(Transport::Tcp),
            other => Err(format!("unknown transport {other:?} (quic, tls or tcp)")),
        }
    }
}

/// Which certificates the client trusts for the server.
#[derive(Debug, Clone, Default)]
pub enum CaSource {
    /// The operating system's trust store (servers with publicly trusted certificates).
    #[default]
    Platform,
    /// Every certificate in this PEM file (e.g. the server's dev CA, `quicft-data/certs/ca.pem`).
    File(PathBuf),
    /// PEM text held in memory.
    Pem(Bytes),
}

/// A client certificate for mutual TLS: the PEM chain (leaf first) and its PEM private key.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub cert_chain: PathBuf,
    pub key: PathBuf,
}

/// TLS settings, used by QUIC and by the TLS transport.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub ca: CaSource,
    /// Name checked against the server certificate; defaults to the host.
    pub server_name: Option<String>,
    /// Mutual TLS (device authentication by certificate).
    pub client_cert: Option<ClientCert>,
    /// ALPN protocols offered over TLS/TCP (QUIC always offers `mqtt`). Empty by default: plain
    /// MQTT-over-TLS servers do not negotiate ALPN.
    pub tls_alpn: Vec<Vec<u8>>,
}

/// Congestion controller for QUIC. See DESIGN §6 for how each behaves on a lossy uplink.
#[derive(Clone, Default)]
pub enum Congestion {
    /// Keeps goodput under random loss (Cubic falls to a fifth of the link at 1% loss), at the price of
    /// a standing queue. The default because devices sit on lossy cellular links.
    #[default]
    Bbr,
    /// quinn's default; fine on clean links.
    Cubic,
    NewReno,
    /// Any controller written against quinn's `congestion::Controller` trait.
    Custom(Arc<dyn quinn::congestion::ControllerFactory + Send + Sync>),
}

impl std::fmt::Debug for Congestion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Congestion::Bbr => "Bbr",
            Congestion::Cubic => "Cubic",
            Congestion::NewReno => "NewReno",
            Congestion::Custom(_) => "Custom",
        })
    }
}

impl std::str::FromStr for Congestion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "bbr" => Ok(Congestion::Bbr),
            "cubic" => Ok(Congestion::Cubic),
            "newreno" | "new-reno" | "reno" => Ok(Congestion::NewReno),
            other => Err(format!(
                "unknown congestion controller {other:?} (bbr, cubic, newreno)"
            )),
        }
    }
}

/// QUIC transport tuning. The defaults are sized for slow links with long round trips (cellular,
/// satellite): quinn's own defaults assume 100 Mbit/s at 100 ms.
#[derive(Debug, Clone)]
pub struct QuicOptions {
    pub congestion: Congestion,
    /// Bytes the server may send on one stream before we read them.
    pub stream_receive_window: u32,
    /// Bytes the server may send on all streams together before we read them.
    pub receive_window: u32,
    /// Bytes we keep unacknowledged in flight across all streams. Must cover bandwidth × RTT of the
    /// fastest link we expect, or uploads stall on it: 16 MiB covers 100 Mbit/s at 1.3 s.
    pub send_window: u64,
    /// First RTT estimate before any sample: cellular links start far above quinn's 333 ms less often
    /// than they start below it, so it is kept.
    pub initial_rtt: Duration,
    /// QUIC idle timeout: the connection is dropped after this long without any packet from the peer.
    pub idle_timeout: Duration,
    /// QUIC PING interval, keeping NAT bindings alive even when MQTT keep-alive is off.
    pub keep_alive_interval: Option<Duration>,
    /// Size asked for the UDP socket's send and receive buffers (the kernel may cap it at
    /// `net.core.{r,w}mem_max`). quinn loses packets on bursts with the small defaults.
    pub socket_buffer: usize,
}

impl Default for QuicOptions {
    fn default() -> Self {
        QuicOptions {
            congestion: Congestion::default(),
            stream_receive_window: 4 << 20,
            receive_window: 16 << 20,
            send_window: 16 << 20,
            initial_rtt: Duration::from_millis(333),
            idle_timeout: Duration::from_secs(60),
            keep_alive_interval: Some(Duration::from_secs(15)),
            socket_buffer: 4 << 20,
        }
    }
}

/// Send priorities of the channel kinds; higher is sent first. On QUIC they become stream priorities
/// (`SendStream::set_priority`); over TCP they order the queues of the one writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priorities {
    pub control: i32,
    pub telemetry: i32,
    pub file: i32,
}

impl Default for Priorities {
    fn default() -> Self {
        Priorities {
            control: 2,
            telemetry: 1,
            file: 0,
        }
    }
}

/// Everything [`Client::connect`](crate::Client::connect) needs. Build it with
/// [`ClientOptions::new`] and adjust the public fields.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub host: String,
    /// `None`: the transport's default port.
    pub port: Option<u16>,
    pub transport: Transport,
    pub tls: TlsOptions,
    pub quic: QuicOptions,
    pub protocol: Protocol,
    /// Empty: the server assigns one (MQTT 5; 3.1.1 then needs `clean_start`).
    pub client_id: String,
    pub clean_start: bool,
    /// Seconds between PINGREQs; 0 turns MQTT keep-alive off.
    pub keep_alive: u16,
    /// MQTT 5 Session Expiry Interval in seconds; `None` = 0 (session ends with the connection).
    pub session_expiry: Option<u32>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    /// Whole connect (resolve, handshake, CONNECT → CONNACK) must finish within this.
    pub connect_timeout: Duration,
    pub priorities: Priorities,
    /// Our own cap on QoS 1/2 publishes in flight; the server's Receive Maximum caps it too.
    pub max_inflight: u16,
    /// Largest packet we accept from the server (announced as Maximum Packet Size under MQTT 5).
    pub max_incoming_packet_size: u32,
    /// Receive Maximum we announce: QoS 1/2 deliveries the server may have unacknowledged.
    pub receive_maximum: u16,
    /// Packets queued per channel before `publish` waits (back-pressure towards the application).
    pub channel_queue: usize,
    /// Messages buffered per subscription before the connection stops reading (back-pressure towards
    /// the server).
    pub subscription_queue: usize,
}

impl ClientOptions {
    /// Options for `host` over `transport` with every other field at its default.
    pub fn new(host: impl Into<String>, transport: Transport) -> Self {
        ClientOptions {
            host: host.into(),
            port: None,
            transport,
            tls: TlsOptions::default(),
            quic: QuicOptions::default(),
            protocol: Protocol::V5,
            client_id: String::new(),
            clean_start: true,
            keep_alive: 30,
            session_expiry: None,
            username: None,
            password: None,
            connect_timeout: Duration::from_secs(10),
            priorities: Priorities::default(),
            max_inflight: u16::MAX,
            max_incoming_packet_size: 16 << 20,
            receive_maximum: 1024,
            channel_queue: 64,
            subscription_queue: 256,
        }
    }

    /// The port in use: the given one or the transport's default.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.transport.default_port())
    }

    /// The name the server certificate must carry.
    pub fn server_name(&self) -> &str {
        self.tls.server_name.as_deref().unwrap_or(&self.host)
    }
}
