//! Server configuration: zero-config defaults, a TOML file (`--config`), and command-line overrides.
//!
//! The defaults are what `quicft-server` with no arguments does: loopback-only listeners, anonymous
//! clients allowed (only because nothing is reachable from outside), data under `./quicft-data`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::ft::{ExportConfig, FtConfig};

/// Everything the server needs to start. Built by [`Config::default`], [`Config::from_toml`] and the
/// flags in `main.rs`, then checked by [`Config::validate`].
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Root of everything the server writes: certificates, transfers, exports.
    pub data_dir: PathBuf,
    pub listeners: Listeners,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub limits: Limits,
    pub quic: QuicConfig,
    pub file_transfer: FtConfig,
    pub http: HttpConfig,
    /// Seconds between publications of the `$SYS/broker/…` topics (retained); 0: none.
    pub sys_interval: u64,
    pub persistence: PersistenceConfig,
    /// Where finished files go (local directory or an S3-compatible store).
    pub export: ExportConfig,
    /// This node behind a QUIC-LB load balancer (server id in every connection id).
    pub cluster: crate::quic_lb::ClusterConfig,
    /// `[[webhooks]]`: where file-transfer events are POSTed.
    pub webhooks: Vec<crate::webhooks::WebhookConfig>,
}

/// Broker state that survives a restart: retained messages and persistent sessions (their
/// subscriptions and queued QoS 1/2 messages), in `<data_dir>/broker.redb`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PersistenceConfig {
    /// On by default: a server that promises not to lose an acknowledged file segment should not
    /// lose an acknowledged message queued for a device either (as EMQX; mosquitto defaults off).
    pub enabled: bool,
    /// Seconds (fractions allowed) between writes of what changed: a crash loses at most the last
    /// interval. 0: every message is on disk before its PUBACK/PUBREC (costs a disk sync per batch).
    #[serde(with = "secs_f64")]
    pub persist_interval: Duration,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            enabled: true,
            persist_interval: Duration::from_secs(1),
        }
    }
}

/// The HTTP API (listening on `listeners.http`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Bearer token required on every route but `/healthz`. Without one the API is open, which is
    /// allowed on loopback addresses only.
    pub token: Option<String>,
    /// A file whose first line is the token (kept out of the configuration file); read at start.
    pub token_file: Option<PathBuf>,
}

impl HttpConfig {
    /// Reads `token_file` into `token`.
    pub fn load_token_file(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            self.token = Some(text.lines().next().unwrap_or("").trim().to_owned());
        }
        Ok(())
    }
}

/// Listener addresses; `None` disables a listener (`"off"` in TOML, as on the command line).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listeners {
    /// MQTT over QUIC (UDP), ALPN `mqtt`.
    #[serde(deserialize_with = "listen_addr")]
    pub quic: Option<SocketAddr>,
    /// Plain MQTT over TCP: only for loopback or trusted networks.
    #[serde(deserialize_with = "listen_addr")]
    pub tcp: Option<SocketAddr>,
    /// MQTT over TLS over TCP.
    #[serde(deserialize_with = "listen_addr")]
    pub tls: Option<SocketAddr>,
    /// MQTT over WebSocket (path `/mqtt`, subprotocol `mqtt`), plain: like `tcp`, only for
    /// loopback or trusted networks.
    #[serde(deserialize_with = "listen_addr")]
    pub ws: Option<SocketAddr>,
    /// MQTT over WebSocket over TLS, with the server's certificate.
    #[serde(deserialize_with = "listen_addr")]
    pub wss: Option<SocketAddr>,
    /// REST API and metrics.
    #[serde(deserialize_with = "listen_addr")]
    pub http: Option<SocketAddr>,
    /// Accept a plain-TCP (or plain WebSocket) listener off loopback (passwords cross the network
    /// in the clear).
    pub insecure_tcp: bool,
}

impl Default for Listeners {
    fn default() -> Self {
        let lo = |port| Some(SocketAddr::from(([127, 0, 0, 1], port)));
        Listeners {
            quic: lo(14567),
            tcp: lo(1883),
            tls: lo(8883),
            // The ports mosquitto and EMQX users expect for MQTT over WebSocket.
            ws: lo(8083),
            wss: lo(8084),
            http: lo(8080),
            insecure_tcp: false,
        }
    }
}

/// Where the certificate and key come from. When both are unset, a development CA and a server
/// certificate for `localhost`, 127.0.0.1 and ::1 are generated under `<data-dir>/certs/` on first start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Extra names for the generated development certificate (e.g. a LAN host name).
    pub dev_cert_names: Vec<String>,
    /// PEM CA certificates that sign device certificates (mTLS on QUIC and TLS).
    pub client_ca: Option<PathBuf>,
    /// Whether devices present a certificate; anything but `off` needs `client_ca`.
    pub client_auth: ClientAuth,
    /// How a certificate's name (CN, else the first SAN) relates to the CONNECT client id.
    pub cert_client_id: CertClientId,
}

/// Client-certificate policy of the QUIC and TLS listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No certificate is asked for.
    #[default]
    Off,
    /// A certificate, if sent, must chain to `client_ca`; devices without one use passwords.
    Optional,
    /// The handshake fails without a certificate that chains to `client_ca`.
    Required,
}

/// What the certificate's name does to the client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertClientId {
    /// The CONNECT client id must be the certificate name (an empty one is assigned it).
    #[default]
    Match,
    /// The certificate name is the client id, whatever the CONNECT says.
    Assign,
}

/// Who may connect.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accept CONNECTs without credentials. `None`: on loopback listeners only (a client on another
    /// listener must authenticate, and a server without any way to authenticate refuses to start on
    /// a non-loopback address), so a server is never opened to the world by accident. `false`: on
    /// no listener. `true`: on every listener.
    pub allow_anonymous: Option<bool>,
    /// The client ids a password user may connect with, unless the user has its own `client_id`:
    /// `%u` (the default) is the username itself; `*` matches any run of characters (`"%u-*"`,
    /// `"*"` for any id). Without it any user could take any device's client id, and with it its
    /// files and `%c` topics.
    pub client_id: Option<String>,
    /// Accounts. Passwords are stored as argon2 PHC strings (`quicft-server hash-password`).
    pub users: Vec<User>,
    /// A separate TOML file with more `[[users]]`, so that accounts can change without the config.
    pub users_file: Option<PathBuf>,
    /// Topic access rules (mosquitto-style patterns, see `acl.rs`). None: every topic but the
    /// reserved file-transfer ones is open.
    pub acl: Vec<crate::acl::Rule>,
}

/// One username/password account.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub username: String,
    /// argon2 PHC string, e.g. `$argon2id$v=19$m=19456,t=2,p=1$…`; never the password itself.
    pub password_hash: String,
    /// The client ids this user may connect with (see [`AuthConfig::client_id`]; default `%u`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// Resource limits; each protects the server from one kind of misbehaving or overeager peer.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Concurrent connections over all transports; more are refused before any MQTT work.
    pub max_connections: usize,
    /// Time a new connection has to finish TLS/QUIC handshake.
    #[serde(with = "secs")]
    pub handshake_timeout: Duration,
    /// Time from connection to a complete CONNECT (slowloris protection).
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    /// Largest packet accepted (and advertised in CONNACK), fixed header included.
    pub max_packet_size: usize,
    /// QoS 1/2 messages in flight towards one client, and Receive Maximum advertised to clients.
    pub inflight_window: u16,
    /// Messages queued for one session (online or offline) before new ones are dropped.
    pub max_queued_messages: usize,
    /// Bytes of QoS 0 deliveries waiting on one stream before further QoS 0 messages are dropped.
    pub max_stream_backlog: usize,
    /// Keepalive granted when a client asks for 0 or more than this (seconds); 0 keeps the client's.
    pub max_keep_alive: u16,
    /// Upper bound on the session expiry a client may ask for (seconds).
    pub max_session_expiry: u32,
    /// Topic aliases a client may use towards the server.
    pub topic_alias_maximum: u16,
    /// Bytes of file-transfer payload held in memory at once over all clients (segments received
    /// and not yet durable). Past it, segments are answered 0x97 (retry later) instead of
    /// growing memory with devices x segments in flight.
    pub max_ft_inflight_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 100_000,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_packet_size: 16 * 1024 * 1024,
            inflight_window: 256,
            max_queued_messages: 1000,
            max_stream_backlog: 4 * 1024 * 1024,
            max_keep_alive: 0,
            max_session_expiry: 7 * 24 * 3600,
            topic_alias_maximum: 64,
            max_ft_inflight_bytes: 512 * 1024 * 1024,
        }
    }
}

/// QUIC transport tuning. The defaults are sized for long, slow, lossy uplinks (cellular,
/// satellite): a 600 ms RTT at 20 Mbit/s needs 1.5 MB in flight, so windows are well above that.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuicConfig {
    /// Congestion controller for data the server sends: `delay` (quicft-congestion's delay-aware,
    /// loss-tolerant controller, the default; bench/CC.md), `cubic` (quinn's default) or `bbr`.
    pub congestion: Congestion,
    /// Per-stream receive window in bytes.
    pub stream_receive_window: u32,
    /// Connection receive window in bytes.
    pub receive_window: u32,
    /// Send window in bytes.
    pub send_window: u64,
    /// Client-opened bidirectional streams allowed at once (control + telemetry + file channels).
    pub max_concurrent_bidi_streams: u32,
    /// The QUIC connection is closed after this long without any packet (MQTT keepalive usually
    /// notices a dead peer earlier).
    #[serde(with = "secs")]
    pub idle_timeout: Duration,
    /// Requested UDP socket buffer size (both directions); quinn advises several MiB.
    pub socket_buffer: usize,
    /// Upper bound (bytes of UDP payload) of path-MTU discovery for the packets the server sends.
    /// Unset: the largest payload of a 1500-byte IP packet for the listen address's family, 1472
    /// on IPv4 and 1452 on IPv6 (and on a dual-stack `[::]` listener). Probes find a smaller path.
    pub mtu_upper_bound: Option<u16>,
}

impl Default for QuicConfig {
    fn default() -> Self {
        QuicConfig {
            // bench/CC.md: BBR's goodput under random loss with a fifth of its queue.
            congestion: Congestion::Delay,
            stream_receive_window: 8 * 1024 * 1024,
            receive_window: 32 * 1024 * 1024,
            send_window: 32 * 1024 * 1024,
            max_concurrent_bidi_streams: 256,
            idle_timeout: Duration::from_secs(300),
            socket_buffer: 8 * 1024 * 1024,
            mtu_upper_bound: None,
        }
    }
}

/// Congestion controller choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// quinn's default; collapses to a fifth of the link at 1% random loss.
    Cubic,
    /// quinn's (experimental) BBR: keeps goodput under loss but fills the bottleneck queue.
    Bbr,
    /// `quicft_congestion::DelayBbr`: keeps the link full under random loss and the queue short
    /// (bench/CC.md). The default.
    #[default]
    Delay,
}

impl std::str::FromStr for Congestion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cubic" => Ok(Congestion::Cubic),
            "bbr" => Ok(Congestion::Bbr),
            "delay" => Ok(Congestion::Delay),
            other => Err(format!(
                "unknown congestion controller {other:?} (cubic, bbr, delay)"
            )),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::with_data_dir(PathBuf::from("quicft-data"))
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration in {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error(
        "refusing to listen on non-loopback address {0} without authentication: configure users \
         ([auth] users or users_file; `quicft-server users add`) or client certificates ([tls] \
         client_ca and client_auth = \"required\"), or pass --allow-anonymous \
         (allow_anonymous = true) if this network is trusted"
    )]
    AnonymousExposed(SocketAddr),
    /// Several of the secure-default rules at once: all of them, so that fixing one does not
    /// reveal the next.
    #[error("{}", list(.0))]
    Insecure(Vec<ConfigError>),
    #[error(
        "plain TCP listener on non-loopback address {0} would carry passwords in the clear: use TLS, \
         or set [listeners] insecure_tcp = true (or allow_anonymous = true on a trusted network)"
    )]
    PlainTcpExposed(SocketAddr),
    #[error(
        "plain WebSocket listener on non-loopback address {0} would carry passwords in the clear: \
         use wss, or set [listeners] insecure_tcp = true (or allow_anonymous = true on a trusted \
         network)"
    )]
    PlainWsExposed(SocketAddr),
    #[error("tls.cert and tls.key must be given together")]
    HalfTls,
    #[error("invalid limit: {0}")]
    Limit(&'static str),
    #[error("invalid [export] section: {0}")]
    Export(String),
    #[error("invalid [cluster] section: {0}")]
    Cluster(String),
    #[error("invalid [[webhooks]] entry: {0}")]
    Webhook(String),
    #[error(
        "HTTP API on non-loopback address {0} without a token: set [http] token or token_file, \
         or pass --http-token-file FILE"
    )]
    HttpExposed(SocketAddr),
    #[error("[http] token must not be empty")]
    EmptyHttpToken,
    #[error("tls.client_auth needs tls.client_ca")]
    NoClientCa,
}

fn list(errors: &[ConfigError]) -> String {
    let mut out = format!(
        "{} things to fix before this server may start:",
        errors.len()
    );
    for e in errors {
        out.push_str("\n  - ");
        out.push_str(&e.to_string());
    }
    out
}

impl Config {
    /// Defaults with everything stored under `data_dir`.
    pub fn with_data_dir(data_dir: PathBuf) -> Config {
        let mut cfg = Config {
            data_dir: PathBuf::new(),
            listeners: Listeners::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            limits: Limits::default(),
            quic: QuicConfig::default(),
            file_transfer: FtConfig::default(),
            http: HttpConfig::default(),
            sys_interval: 10,
            persistence: PersistenceConfig::default(),
            export: ExportConfig::default(),
            cluster: crate::quic_lb::ClusterConfig::default(),
            webhooks: Vec::new(),
        };
        cfg.set_data_dir(data_dir);
        cfg
    }

    /// Moves the data directory and every path derived from it that was not set explicitly.
    pub fn set_data_dir(&mut self, data_dir: PathBuf) {
        let old = std::mem::replace(&mut self.data_dir, data_dir);
        let defaults = FtConfig::default();
        // A path is derived (and follows the data directory) unless someone set it explicitly.
        let derived = |p: &Path, name: &str, default: &Path| {
            p.as_os_str().is_empty() || p == default || p == old.join(name)
        };
        if derived(
            &self.file_transfer.store_dir,
            "transfers",
            &defaults.store_dir,
        ) {
            self.file_transfer.store_dir = self.data_dir.join("transfers");
        }
        if derived(
            &self.file_transfer.export_root,
            "exports",
            &defaults.export_root,
        ) {
            self.file_transfer.export_root = self.data_dir.join("exports");
        }
    }

    /// Reads a TOML file over the defaults.
    pub fn from_toml(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        cfg.http.load_token_file()?;
        // Paths left at their defaults follow data_dir.
        let dir = std::mem::take(&mut cfg.data_dir);
        cfg.data_dir = PathBuf::from("quicft-data");
        cfg.set_data_dir(dir);
        Ok(cfg)
    }

    /// Every listener address that is configured.
    pub fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let l = &self.listeners;
        [l.quic, l.tcp, l.tls, l.ws, l.wss, l.http]
            .into_iter()
            .flatten()
    }

    /// Checks the secure-default rules before anything binds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::HalfTls);
        }
        self.export.check().map_err(ConfigError::Export)?;
        self.cluster.parse().map_err(ConfigError::Cluster)?;
        for h in &self.webhooks {
            h.check().map_err(ConfigError::Webhook)?;
        }
        if self.limits.max_connections == 0 {
            return Err(ConfigError::Limit("max_connections must be at least 1"));
        }
        if self.limits.inflight_window == 0 {
            return Err(ConfigError::Limit("inflight_window must be at least 1"));
        }
        if self.limits.max_packet_size < 64 || self.limits.max_packet_size > 268_435_460 {
            return Err(ConfigError::Limit(
                "max_packet_size must be between 64 and 268435460",
            ));
        }
        if self
            .quic
            .mtu_upper_bound
            .is_some_and(|b| !(1200..=65527).contains(&b))
        {
            // QUIC's floor is 1200 bytes of UDP payload; 65527 is UDP's own limit.
            return Err(ConfigError::Limit(
                "quic.mtu_upper_bound must be between 1200 and 65527",
            ));
        }
        if self.limits.max_ft_inflight_bytes < self.limits.max_packet_size {
            // Otherwise a segment of the largest allowed size would be answered 0x97 forever.
            return Err(ConfigError::Limit(
                "max_ft_inflight_bytes must be at least max_packet_size",
            ));
        }
        let exposed = |a: &SocketAddr| !a.ip().is_loopback();
        // Anonymous access off loopback only when asked for in so many words.
        let authenticated = !self.auth.users.is_empty()
            || self.auth.users_file.is_some()
            || self.tls.client_auth == ClientAuth::Required;
        if self.tls.client_auth != ClientAuth::Off && self.tls.client_ca.is_none() {
            return Err(ConfigError::NoClientCa);
        }
        let mut open = Vec::new();
        if self.auth.allow_anonymous.is_none() && !authenticated {
            if let Some(a) = self.addresses().find(exposed) {
                open.push(ConfigError::AnonymousExposed(a));
            }
        }
        // The API can cancel transfers and hand out every file: never open beyond loopback.
        if self
            .http
            .token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(ConfigError::EmptyHttpToken);
        }
        if let Some(a) = self.listeners.http.filter(exposed) {
            if self.http.token.is_none() {
                open.push(ConfigError::HttpExposed(a));
            }
        }
        // Plain TCP carries passwords in the clear: off loopback only on explicit request, by
        // declaring the network trusted (anonymous allowed) or plain TCP accepted as such.
        if let Some(a) = self.listeners.tcp.filter(exposed) {
            if self.auth.allow_anonymous != Some(true) && !self.listeners.insecure_tcp {
                open.push(ConfigError::PlainTcpExposed(a));
            }
        }
        if let Some(a) = self.listeners.ws.filter(exposed) {
            if self.auth.allow_anonymous != Some(true) && !self.listeners.insecure_tcp {
                open.push(ConfigError::PlainWsExposed(a));
            }
        }
        match open.len() {
            0 => Ok(()),
            1 => Err(open.remove(0)),
            _ => Err(ConfigError::Insecure(open)),
        }
    }
}

/// A listener address, or `"off"`.
pub fn parse_listen(s: &str) -> Result<Option<SocketAddr>, String> {
    if s == "off" {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| format!("{s:?}: {e} (expected IP:PORT or off)"))
}

fn listen_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    parse_listen(&s).map_err(serde::de::Error::custom)
}

/// Durations written as seconds in TOML, fractions allowed (`0.5`).
mod secs_f64 {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = f64::deserialize(d)?;
        Duration::try_from_secs_f64(s).map_err(|_| {
            serde::de::Error::custom(format!("{s}: expected a number of seconds, 0 or more"))
        })
    }
}

/// Durations written as whole seconds in TOML.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_config_is_loopback_and_valid() {
        let cfg = Config::default();
        assert!(cfg.addresses().all(|a| a.ip().is_loopback()));
        cfg.validate().expect("defaults must validate");
        assert_eq!(
            cfg.auth.allow_anonymous, None,
            "anonymous on loopback listeners only"
        );
        assert_eq!(
            cfg.file_transfer.export_root,
            PathBuf::from("quicft-data/exports")
        );
    }

    #[test]
    fn exposed_without_auth_is_refused() {
        let mut cfg = Config::default();
        cfg.listeners.quic = Some("0.0.0.0:14567".parse().expect("addr"));
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::AnonymousExposed(_))
        ));
        cfg.auth.allow_anonymous = Some(true);
        cfg.validate().expect("explicit anonymous is allowed");
    }

    #[test]
    fn client_certificates_need_a_ca_and_count_as_authentication() {
        let mut cfg = Config::default();
        cfg.tls.client_auth = ClientAuth::Required;
        assert!(matches!(cfg.validate(), Err(ConfigError::NoClientCa)));
        cfg.tls.client_ca = Some(PathBuf::from("devices-ca.pem"));
        cfg.listeners.quic = Some("0.0.0.0:14567".parse().expect("addr"));
        cfg.validate()
            .expect("required client certificates are authentication");
    }

    #[test]
    fn exposed_plain_tcp_needs_explicit_consent() {
        let mut cfg = Config::default();
        cfg.auth.users.push(User {
            username: "u".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into(),
            client_id: None,
        });
        cfg.listeners.tcp = Some("0.0.0.0:1883".parse().expect("addr"));
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::PlainTcpExposed(_))
        ));
        // Refusing anonymous clients is valid everywhere; it is not consent to plain TCP.
        cfg.auth.allow_anonymous = Some(false);
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::PlainTcpExposed(_))
        ));
        cfg.listeners.insecure_tcp = true;
        cfg.validate().expect("plain TCP accepted in so many words");
        cfg.listeners.tcp = Some("127.0.0.1:1883".parse().expect("addr"));
        cfg.listeners.insecure_tcp = false;
        cfg.validate()
            .expect("allow_anonymous = false with plain TCP on loopback");
        // Plain WebSocket follows the same rule.
        cfg.listeners.ws = Some("0.0.0.0:8083".parse().expect("addr"));
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::PlainWsExposed(_))
        ));
        cfg.listeners.insecure_tcp = true;
        cfg.validate()
            .expect("plain WebSocket accepted in so many words");
    }

    #[test]
    fn every_missing_piece_is_named_at_once() {
        let mut cfg = Config::default();
        cfg.listeners.quic = Some("0.0.0.0:14567".parse().expect("addr"));
        cfg.listeners.http = Some("0.0.0.0:8080".parse().expect("addr"));
        let err = cfg.validate().expect_err("open");
        assert!(
            matches!(&err, ConfigError::Insecure(v) if v.len() == 2),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("2 things to fix"), "{text}");
        assert!(
            text.contains("configure users") && text.contains("--http-token-file"),
            "{text}"
        );
    }

    #[test]
    fn mtu_upper_bound_stays_within_udp() {
        let mut cfg = Config::default();
        cfg.quic.mtu_upper_bound = Some(1472);
        cfg.validate().expect("1472 is fine");
        for bad in [0, 1199, 65528] {
            cfg.quic.mtu_upper_bound = Some(bad);
            assert!(
                matches!(cfg.validate(), Err(ConfigError::Limit(_))),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn exposed_http_needs_a_token() {
        let mut cfg = Config::default();
        cfg.auth.allow_anonymous = Some(true);
        cfg.listeners.http = Some("0.0.0.0:8080".parse().expect("addr"));
        assert!(matches!(cfg.validate(), Err(ConfigError::HttpExposed(_))));
        cfg.http.token = Some(" ".into());
        assert!(matches!(cfg.validate(), Err(ConfigError::EmptyHttpToken)));
        cfg.http.token = Some("s3cret-token".into());
        cfg.validate().expect("token given");
    }

    #[test]
    fn toml_overrides_and_derived_paths_follow_data_dir() {
        let dir = std::env::temp_dir().join(format!("qft-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "data_dir = \"/var/lib/q\"\n[listeners]\ntcp = \"127.0.0.1:1999\"\n[quic]\ncongestion = \"bbr\"\n[limits]\nconnect_timeout = 3\n",
        )
        .expect("write");
        let cfg = Config::from_toml(&path).expect("parse");
        assert_eq!(
            cfg.listeners.tcp,
            Some("127.0.0.1:1999".parse().expect("addr"))
        );
        assert_eq!(cfg.quic.congestion, Congestion::Bbr);
        std::fs::write(&path, "[listeners]\nhttp = \"off\"\nquic = \"off\"\n").expect("write");
        let off = Config::from_toml(&path).expect("off parses");
        assert_eq!((off.listeners.http, off.listeners.quic), (None, None));
        assert!(
            off.listeners.tls.is_some(),
            "keys left out keep their defaults"
        );
        std::fs::write(
            &path,
            "[listeners]\nws = \"off\"\nwss = \"127.0.0.1:9084\"\n",
        )
        .expect("write");
        let ws = Config::from_toml(&path).expect("ws keys parse");
        assert_eq!(ws.listeners.ws, None);
        assert_eq!(
            ws.listeners.wss,
            Some("127.0.0.1:9084".parse().expect("addr"))
        );
        assert_eq!(
            Config::default().listeners.ws,
            Some("127.0.0.1:8083".parse().expect("addr"))
        );
        std::fs::write(&path, "[listeners]\nhttp = \"of\"\n").expect("write");
        let err = Config::from_toml(&path)
            .expect_err("a typo is an error")
            .to_string();
        assert!(err.contains("expected IP:PORT or off"), "{err}");
        assert_eq!(cfg.limits.connect_timeout, Duration::from_secs(3));
        assert_eq!(
            cfg.file_transfer.store_dir,
            PathBuf::from("/var/lib/q/transfers")
        );
        std::fs::write(&path, "bogus = 1\n").expect("write");
        assert!(matches!(
            Config::from_toml(&path),
            Err(ConfigError::Parse { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn congestion_names() {
        assert_eq!("delay".parse::<Congestion>(), Ok(Congestion::Delay));
        assert_eq!("bbr".parse::<Congestion>(), Ok(Congestion::Bbr));
        assert!("reno".parse::<Congestion>().is_err());
        let q: QuicConfig = toml::from_str("congestion = \"delay\"").expect("parse");
        assert_eq!(q.congestion, Congestion::Delay);
    }

    #[test]
    fn persistence_section() {
        let d = PersistenceConfig::default();
        assert!(d.enabled);
        assert_eq!(d.persist_interval, Duration::from_secs(1));
        let p: PersistenceConfig =
            toml::from_str("enabled = false\npersist_interval = 0.25").expect("parse");
        assert!(!p.enabled);
        assert_eq!(p.persist_interval, Duration::from_millis(250));
        let p: PersistenceConfig = toml::from_str("persist_interval = 0").expect("parse");
        assert!(p.persist_interval.is_zero());
        assert!(toml::from_str::<PersistenceConfig>("persist_interval = -1").is_err());
    }
}
