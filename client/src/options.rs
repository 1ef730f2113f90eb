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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
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

/// Congestion controller of the QUIC connection, which governs what the device sends: file data
/// goes *up*, so this is the choice that decides both upload goodput and how long telemetry waits
/// behind file data in the network. See DESIGN §6 and bench/CC.md for measurements on a lossy
/// uplink. Parsed from `delay`, `bbr`, `cubic` or `newreno` (the CLI's `--congestion`).
///
/// ```
/// use quicft_client::{Congestion, QuicOptions};
///
/// assert!(matches!(QuicOptions::default().congestion, Congestion::Delay));
/// let cubic: Congestion = "cubic".parse().unwrap();
/// assert!(matches!(cubic, Congestion::Cubic));
/// ```
#[derive(Clone, Default)]
pub enum Congestion {
    /// quicft's delay-aware, loss-tolerant controller (`quicft_congestion::DelayBbr`), the
    /// default, as on the server: BBR's goodput under random loss with a ~0.25 × BDP queue
    /// instead of BBR's full buffer, so telemetry on the same connection is not stuck behind file
    /// data in the bottleneck queue.
    #[default]
    Delay,
    /// quinn's BBR (marked experimental there): keeps goodput under random loss, at the price of a
    /// standing queue of up to the whole bottleneck buffer in front of telemetry.
    Bbr,
    /// quinn's default; fine on clean links, but reads every random radio loss as congestion
    /// (a fifth of the link at 1% loss).
    Cubic,
    /// Like Cubic, slightly worse under loss.
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
            Congestion::Delay => "Delay",
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
            "delay" => Ok(Congestion::Delay),
            other => Err(format!(
                "unknown congestion controller {other:?} (bbr, cubic, newreno, delay)"
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
    /// Send every telemetry stream twice: its bytes again on a mirror stream, this long (or an
    /// eighth of the RTT, if longer) after the original, when the server offers it (quicft does;
    /// other servers never see a mirror). A telemetry message in a lost packet then costs the
    /// gap instead of a loss-detection round trip: at 1 % / 3 % uplink loss on a 40 ms link, p99 of
    /// publish → PUBACK during an upload 65 / 61 ms with it, 107 / 103 ms without (bench/NETEM.md).
    /// Costs a second copy of the telemetry bytes (1.3 % of a 1 Mbit/s link for ten 100-byte
    /// messages a second). `None`: no mirror.
    pub telemetry_mirror: Option<Duration>,
    /// Upper bound (bytes of UDP payload) of the path-MTU search: quinn starts at 1200 bytes and
    /// probes larger packets a few round trips into the connection. `None`: the largest payload a
    /// 1500-byte IP packet carries, 1472 to an IPv4 server and 1452 to an IPv6 one (quinn's own
    /// default is 1452 for both). A path that carries less is found by the probes; more needs a
    /// larger bound (jumbo frames).
    pub mtu_upper_bound: Option<u16>,
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
            telemetry_mirror: Some(Duration::from_millis(5)),
            mtu_upper_bound: None,
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

/// How a client that lost its connection gets it back: exponential backoff with jitter, capped.
///
/// The n-th attempt (from 0) waits `min(max_delay, initial_delay × 2ⁿ)`, less a random share of
/// up to `jitter` of it, so that a fleet of devices dropped by the same outage does not come back
/// in lock-step. The first attempt after a drop waits too: a server that just said "shutting
/// down" is not back within microseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconnect {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// Share of each delay (0.0 to 1.0) that is randomised away.
    pub jitter: f64,
    /// Give up (and close the client) after this many failed attempts in a row; `None`: never.
    pub max_attempts: Option<u32>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            jitter: 0.5,
            max_attempts: None,
        }
    }
}

impl Reconnect {
    /// The wait before attempt `attempt` (0-based), given a random number in `[0, 1)`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use quicft_client::Reconnect;
    ///
    /// let r = Reconnect {
    ///     initial_delay: Duration::from_millis(100),
    ///     max_delay: Duration::from_secs(2),
    ///     jitter: 0.5,
    ///     max_attempts: None,
    /// };
    /// assert_eq!(r.delay(0, 0.0), Duration::from_millis(100));
    /// assert_eq!(r.delay(10, 0.0), Duration::from_secs(2)); // capped
    /// assert_eq!(r.delay(1, 0.5), Duration::from_millis(150)); // 200 ms less a quarter
    /// ```
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let factor = 2f64.powi(i32::try_from(attempt.min(30)).unwrap_or(30));
        let base = self
            .initial_delay
            .mul_f64(factor)
            .min(self.max_delay)
            .max(Duration::from_millis(1));
        let cut = self.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0);
        base.mul_f64(1.0 - cut)
    }
}

/// Everything [`Client::connect`](crate::Client::connect) needs. Build it with
/// [`ClientOptions::new`] (one transport) or [`ClientOptions::auto`] (QUIC, falling back to TLS)
/// and adjust the public fields.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub host: String,
    /// Port of `transport`; `None`: the transport's default port.
    pub port: Option<u16>,
    /// The transport tried first.
    pub transport: Transport,
    /// Tried as well when `transport` fails or has not connected within `fallback_delay` (both
    /// race from then on, the first CONNACK wins; [`ConnectionInfo::transport`] tells which).
    ///
    /// [`ConnectionInfo::transport`]: crate::ConnectionInfo::transport
    pub fallback: Option<Transport>,
    /// Port of the fallback transport; `None`: its default port.
    pub fallback_port: Option<u16>,
    /// Head start of `transport` over `fallback` (happy eyeballs). Short: a network that drops
    /// UDP gives no error at all, only silence.
    pub fallback_delay: Duration,
    /// Reconnect after a lost connection; `None`: the client closes with the connection.
    pub reconnect: Option<Reconnect>,
    /// TCP_NOTSENT_LOWAT on TCP/TLS connections: bytes the kernel may hold unsent. Keeping it small
    /// keeps the priority order in our writer instead of letting megabytes of file data queue in
    /// the socket ahead of the next telemetry message. Default 16 KiB: 128 KiB is a second of
    /// queue at 1 Mbit/s; 16 KiB cut telemetry p99 on a 20 Mbit/s TCP link from ~200 to ~125 ms
    /// (tests/tests/sdk_telemetry.rs) with the same goodput, and loopback TLS uploads kept their
    /// rate. `None`: the system default.
    pub tcp_notsent_lowat: Option<u32>,
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
            fallback: None,
            fallback_port: None,
            fallback_delay: Duration::from_millis(300),
            reconnect: Some(Reconnect::default()),
            tcp_notsent_lowat: Some(16 * 1024),
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

    /// QUIC first, TLS when QUIC fails or does not answer within `fallback_delay`: what a device
    /// on an unknown network should use.
    pub fn auto(host: impl Into<String>) -> Self {
        let mut o = ClientOptions::new(host, Transport::Quic);
        o.fallback = Some(Transport::Tls);
        o
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_only_shortens() {
        let r = Reconnect {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            jitter: 0.5,
            max_attempts: None,
        };
        assert_eq!(r.delay(0, 0.0), Duration::from_millis(100));
        assert_eq!(r.delay(2, 0.0), Duration::from_millis(400));
        assert_eq!(r.delay(10, 0.0), Duration::from_secs(1));
        assert_eq!(r.delay(1000, 0.0), Duration::from_secs(1));
        assert_eq!(r.delay(0, 0.999_999).as_millis(), 50);
        assert!(r.delay(3, 0.3) < r.delay(3, 0.0));
    }
}
