//! Test harness: start a real server on port 0 in a temporary data directory, and talk to it with a
//! raw packet-level client over QUIC, TCP or TLS (raw, so tests can also send what a well-behaved
//! client never would).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Bytes, BytesMut};
use quicft_proto::{
    ConnAck, Connect, Packet, Properties, Protocol, PubResp, Publish, QoS, SubscribeFilter,
    SubscriptionOptions,
};
use quicft_server::{Config, Server};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub mod peers;

/// How long a test waits for an expected packet before failing.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// A server in a temporary directory; dropped with the test.
pub struct TestServer {
    pub server: Server,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// All listeners on 127.0.0.1:0, data in a temp dir.
    pub async fn start() -> Result<TestServer> {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestServer::start`], with the configuration adjusted first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Result<TestServer> {
        init_tracing();
        let dir = tempfile::tempdir()?;
        let mut cfg = test_config(dir.path().to_path_buf());
        adjust(&mut cfg);
        let server = Server::start(cfg).await?;
        Ok(TestServer { server, dir })
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }

    pub fn addr(&self, t: Transport) -> SocketAddr {
        let a = match t {
            Transport::Quic => self.server.quic_addr,
            Transport::Tcp => self.server.tcp_addr,
            Transport::Tls => self.server.tls_addr,
        };
        a.expect("listener enabled")
    }

    /// Connects with a CONNECT built by [`connect_packet`] and expects success.
    pub async fn connect(&self, t: Transport, client_id: &str) -> Result<Conn> {
        connect(self, t, client_id).await
    }
}

/// The HTTP API of a test server.
impl TestServer {
    /// The API app, to call without a socket (`tower::ServiceExt::oneshot`).
    pub fn api(&self) -> axum::Router {
        quicft_server::http::router(self.server.api_state())
    }

    /// `http://127.0.0.1:port` when the HTTP listener is enabled (`listeners.http`, off in [`test_config`]).
    pub fn http_url(&self) -> Option<String> {
        self.server.http_addr.map(|a| format!("http://{a}"))
    }
}

/// Where a server listens and which CA it uses: an in-process [`TestServer`] or a server process.
pub trait Target {
    fn addr(&self, t: Transport) -> SocketAddr;
    fn ca(&self) -> PathBuf;
}

impl Target for TestServer {
    fn addr(&self, t: Transport) -> SocketAddr {
        TestServer::addr(self, t)
    }
    fn ca(&self) -> PathBuf {
        TestServer::ca(self)
    }
}

/// Connects a clean-start MQTT 5 client and expects success.
pub async fn connect(target: &impl Target, t: Transport, client_id: &str) -> Result<Conn> {
    let (conn, ack) = Conn::open(target, t, connect_packet(client_id, Protocol::V5)).await?;
    if ack.code.is_error() {
        bail!("CONNACK refused: {}", ack.code);
    }
    Ok(conn)
}

/// A server running as its own process (`quicft-test-server`), to be killed for real.
pub struct ProcessServer {
    pub child: tokio::process::Child,
    pub data_dir: PathBuf,
    addrs: HashMap<&'static str, SocketAddr>,
}

impl ProcessServer {
    /// Starts `bin` (the path of `quicft-test-server`) on `data_dir` and reads its addresses.
    pub async fn start(bin: &str, data_dir: &std::path::Path) -> Result<ProcessServer> {
        Self::start_with_quic(bin, data_dir, None).await
    }

    /// Like [`ProcessServer::start`], with the QUIC listener on `quic` (e.g. the address of a
    /// server that was killed) instead of an ephemeral port.
    pub async fn start_with_quic(
        bin: &str,
        data_dir: &std::path::Path,
        quic: Option<SocketAddr>,
    ) -> Result<ProcessServer> {
        Self::start_with_env(bin, data_dir, quic, &[]).await
    }

    /// Like [`ProcessServer::start_with_quic`], with environment variables for the server.
    pub async fn start_with_env(
        bin: &str,
        data_dir: &std::path::Path,
        quic: Option<SocketAddr>,
        env: &[(&str, &str)],
    ) -> Result<ProcessServer> {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg(data_dir);
        cmd.envs(env.iter().copied());
        if let Some(a) = quic {
            cmd.arg(a.to_string());
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(RECV_TIMEOUT, lines.next_line())
            .await??
            .context("server printed nothing")?;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        // The server's logs follow on the same pipe: keep reading them (into the test's output),
        // or its next log line would meet a closed pipe and kill it.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[server] {line}");
            }
        });
        let mut addrs = HashMap::new();
        for k in ["quic", "tcp", "tls"] {
            if let Some(a) = v[k].as_str() {
                addrs.insert(k, a.parse()?);
            }
        }
        Ok(ProcessServer {
            child,
            data_dir: data_dir.to_owned(),
            addrs,
        })
    }

    /// SIGTERM, and waits for the clean stop; fails unless the server exits 0.
    pub async fn terminate(mut self) -> Result<()> {
        let pid = self.child.id().context("server already gone")?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        let exit = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await??;
        anyhow::ensure!(exit.success(), "server exited with {exit} after SIGTERM");
        Ok(())
    }

    /// SIGKILL: no shutdown, no flush, nothing.
    pub async fn kill9(mut self) -> Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }
}

impl Target for ProcessServer {
    fn addr(&self, t: Transport) -> SocketAddr {
        let k = match t {
            Transport::Quic => "quic",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        };
        self.addrs[k]
    }
    fn ca(&self) -> PathBuf {
        self.data_dir.join("certs/ca.pem")
    }
}

/// Server logs in test output (`RUST_LOG=debug cargo test …` for more).
pub fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The test configuration: every listener on an ephemeral loopback port.
pub fn test_config(data_dir: PathBuf) -> Config {
    let mut cfg = Config::with_data_dir(data_dir);
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    cfg.listeners.quic = Some(any);
    cfg.listeners.tcp = Some(any);
    cfg.listeners.tls = Some(any);
    cfg.listeners.ws = Some(any);
    cfg.listeners.wss = Some(any);
    cfg.listeners.http = None;
    // The machine's free disk is not ours to judge in tests.
    cfg.file_transfer.min_free_disk = 0;
    cfg
}

/// The three transports every behaviour is checked over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Quic,
    Tcp,
    Tls,
}

pub const ALL_TRANSPORTS: [Transport; 3] = [Transport::Quic, Transport::Tcp, Transport::Tls];

/// A clean-start MQTT 5 (or 3.1.1) CONNECT with a 60 s keepalive.
pub fn connect_packet(client_id: &str, protocol: Protocol) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.to_owned(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

pub fn publish(topic: &str, payload: &[u8], qos: QoS, pkid: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.to_owned(),
        pkid: if qos == QoS::AtMostOnce { 0 } else { pkid },
        properties: Properties::default(),
        payload: Bytes::copy_from_slice(payload),
    })
}

pub fn subscribe(filter: &str, qos: QoS, pkid: u16) -> Packet {
    Packet::Subscribe(quicft_proto::Subscribe {
        pkid,
        filters: vec![SubscribeFilter {
            filter: filter.to_owned(),
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
        }],
        properties: Properties::default(),
    })
}

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// One byte stream speaking MQTT packets.
pub struct RawStream {
    reader: Reader,
    writer: Writer,
    buf: BytesMut,
    pub protocol: Protocol,
    /// The QUIC stream, to check resets.
    pub quic_id: Option<quinn::StreamId>,
    /// Deliveries that arrived while waiting for an ack (already acknowledged); `next_publish`
    /// returns them first.
    pending: std::collections::VecDeque<Publish>,
}

/// What a stream read ended with when no packet came.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// Clean end of stream (FIN / TCP close).
    Finished,
    /// QUIC stream reset by the server with this code.
    Reset(u64),
    /// Connection closed (QUIC CONNECTION_CLOSE or TCP error).
    ConnectionLost,
}

impl RawStream {
    pub async fn send(&mut self, p: &Packet) -> Result<()> {
        let mut b = BytesMut::new();
        p.encode(self.protocol, &mut b)?;
        self.send_bytes(&b).await
    }

    pub async fn send_bytes(&mut self, b: &[u8]) -> Result<()> {
        self.writer.write_all(b).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// The next packet, or an error after [`RECV_TIMEOUT`] or when the stream ends.
    pub async fn recv(&mut self) -> Result<Packet> {
        match tokio::time::timeout(RECV_TIMEOUT, self.next()).await {
            Ok(Ok(Some(p))) => Ok(p),
            Ok(Ok(None)) => Err(anyhow!("stream ended")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(anyhow!("no packet within {RECV_TIMEOUT:?}")),
        }
    }

    /// The next packet, `None` if none comes within `wait`.
    pub async fn try_recv(&mut self, wait: Duration) -> Result<Option<Packet>> {
        match tokio::time::timeout(wait, self.next()).await {
            Ok(Ok(Some(p))) => Ok(Some(p)),
            Ok(Ok(None)) => Err(anyhow!("stream ended")),
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// Reads packets (skipping them) until the stream ends; reports how.
    pub async fn recv_end(&mut self) -> Result<(Vec<Packet>, StreamEnd)> {
        let mut seen = Vec::new();
        let fut = async {
            loop {
                match Packet::decode(&mut self.buf, self.protocol, usize::MAX) {
                    Ok(Some(p)) => {
                        seen.push(p);
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => return Err(anyhow!("server sent malformed bytes: {e}")),
                }
                match self.reader.read_buf(&mut self.buf).await {
                    Ok(0) => return Ok(StreamEnd::Finished),
                    Ok(_) => {}
                    Err(e) => return Ok(classify(&e)),
                }
            }
        };
        let end = tokio::time::timeout(RECV_TIMEOUT, fut)
            .await
            .map_err(|_| anyhow!("stream did not end"))??;
        Ok((seen, end))
    }

    async fn next(&mut self) -> Result<Option<Packet>> {
        loop {
            if let Some(p) = Packet::decode(&mut self.buf, self.protocol, usize::MAX)? {
                return Ok(Some(p));
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            match self.reader.read_buf(&mut self.buf).await {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) => bail!("stream error: {e} ({:?})", classify(&e)),
            }
        }
    }

    /// Publishes at QoS 1 and returns the PUBACK.
    pub async fn publish_qos1(
        &mut self,
        topic: &str,
        payload: &[u8],
        pkid: u16,
    ) -> Result<PubResp> {
        self.send(&publish(topic, payload, QoS::AtLeastOnce, pkid))
            .await?;
        loop {
            match self.recv().await? {
                Packet::PubAck(a) if a.pkid == pkid => return Ok(a),
                // Deliveries on the same stream may interleave: keep them for `next_publish`.
                Packet::Publish(p) => self.keep(p).await?,
                other => bail!("expected PUBACK {pkid}, got {other:?}"),
            }
        }
    }

    /// Subscribes and returns the SUBACK codes.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: QoS,
        pkid: u16,
    ) -> Result<Vec<quicft_proto::ReasonCode>> {
        self.send(&subscribe(filter, qos, pkid)).await?;
        match self.recv().await? {
            Packet::SubAck(a) if a.pkid == pkid => Ok(a.codes),
            other => bail!("expected SUBACK, got {other:?}"),
        }
    }

    /// Acknowledges a QoS 1 delivery and keeps it for `next_publish`.
    pub async fn keep_pub(&mut self, p: Publish) -> Result<()> {
        self.keep(p).await
    }

    async fn keep(&mut self, p: Publish) -> Result<()> {
        if p.qos == QoS::AtLeastOnce {
            self.send(&Packet::PubAck(PubResp::new(
                p.pkid,
                quicft_proto::ReasonCode::SUCCESS,
            )))
            .await?;
        }
        self.pending.push_back(p);
        Ok(())
    }

    /// The next PUBLISH (acknowledging QoS 1 deliveries), skipping other packets.
    pub async fn next_publish(&mut self) -> Result<Publish> {
        if let Some(p) = self.pending.pop_front() {
            return Ok(p);
        }
        loop {
            if let Packet::Publish(p) = self.recv().await? {
                self.keep(p).await?;
                return self.pending.pop_front().ok_or_else(|| anyhow!("kept"));
            }
        }
    }

    /// The next PUBLISH on `topic`, dropping (acknowledged) deliveries on other topics.
    pub async fn next_publish_on(&mut self, topic: &str) -> Result<Publish> {
        loop {
            let p = self.next_publish().await?;
            if p.topic == topic {
                return Ok(p);
            }
        }
    }
}

fn classify(e: &std::io::Error) -> StreamEnd {
    if let Some(inner) = e.get_ref() {
        if let Some(re) = inner.downcast_ref::<quinn::ReadError>() {
            return match re {
                quinn::ReadError::Reset(code) => StreamEnd::Reset(code.into_inner()),
                _ => StreamEnd::ConnectionLost,
            };
        }
    }
    StreamEnd::ConnectionLost
}

/// A raw client connection: the control stream, and on QUIC the data streams it opens.
pub struct Conn {
    pub transport: Transport,
    pub ctl: RawStream,
    pub quic: Option<quinn::Connection>,
    endpoint: Option<quinn::Endpoint>,
    data: Option<RawStream>,
}

impl Conn {
    /// Opens the transport and sends `connect`; returns the connection and the CONNACK.
    pub async fn open(
        server: &impl Target,
        t: Transport,
        connect: Connect,
    ) -> Result<(Conn, ConnAck)> {
        let conn = Conn::raw(server, t, connect.protocol).await?;
        conn.connect(connect).await
    }

    /// Sends CONNECT on the control stream and reads the CONNACK.
    async fn connect(mut self, connect: Connect) -> Result<(Conn, ConnAck)> {
        self.ctl.send(&Packet::Connect(connect)).await?;
        match self.ctl.recv().await? {
            Packet::ConnAck(ack) => Ok((self, ack)),
            other => bail!("expected CONNACK, got {other:?}"),
        }
    }

    /// Opens the transport (and, on QUIC, the control stream) without sending anything.
    pub async fn raw(server: &impl Target, t: Transport, protocol: Protocol) -> Result<Conn> {
        match t {
            Transport::Tcp => {
                let s = tokio::net::TcpStream::connect(server.addr(t)).await?;
                let (r, w) = s.into_split();
                Ok(Conn::single(t, Box::new(r), Box::new(w), protocol))
            }
            Transport::Tls | Transport::Quic => {
                let tls = client_tls(&server.ca())?;
                Conn::raw_with_tls(server, t, protocol, tls).await
            }
        }
    }

    /// Like [`Conn::open`] with a given rustls client configuration (e.g. one with a client
    /// certificate for mTLS); TLS and QUIC only.
    pub async fn open_with_tls(
        server: &impl Target,
        t: Transport,
        connect: Connect,
        tls: rustls::ClientConfig,
    ) -> Result<(Conn, ConnAck)> {
        let conn = Conn::raw_with_tls(server, t, connect.protocol, tls).await?;
        conn.connect(connect).await
    }

    /// Like [`Conn::raw`] with a given rustls client configuration; TLS and QUIC only.
    pub async fn raw_with_tls(
        server: &impl Target,
        t: Transport,
        protocol: Protocol,
        tls: rustls::ClientConfig,
    ) -> Result<Conn> {
        let addr = server.addr(t);
        match t {
            Transport::Tcp => bail!("plain TCP has no TLS"),
            Transport::Tls => {
                let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
                let s = tokio::net::TcpStream::connect(addr).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost")?;
                let tls = connector.connect(name, s).await?;
                let (r, w) = tokio::io::split(tls);
                Ok(Conn::single(t, Box::new(r), Box::new(w), protocol))
            }
            Transport::Quic => {
                let endpoint = quic_client_with(tls)?;
                let conn = endpoint
                    .connect(addr, "localhost")?
                    .await
                    .context("QUIC handshake")?;
                let (send, recv) = conn.open_bi().await?;
                let ctl = RawStream {
                    quic_id: Some(send.id()),
                    reader: Box::new(recv),
                    writer: Box::new(send),
                    buf: BytesMut::new(),
                    protocol,
                    pending: Default::default(),
                };
                Ok(Conn {
                    transport: t,
                    ctl,
                    quic: Some(conn),
                    endpoint: Some(endpoint),
                    data: None,
                })
            }
        }
    }

    fn single(t: Transport, r: Reader, w: Writer, protocol: Protocol) -> Conn {
        let ctl = RawStream {
            reader: r,
            writer: w,
            buf: BytesMut::new(),
            protocol,
            quic_id: None,
            pending: Default::default(),
        };
        Conn {
            transport: t,
            ctl,
            quic: None,
            endpoint: None,
            data: None,
        }
    }

    /// The client's QUIC endpoint (to rebind it: a migration to a new address).
    pub fn quic_endpoint(&self) -> Option<&quinn::Endpoint> {
        self.endpoint.as_ref()
    }

    /// Opens a new QUIC data stream (fails on TCP/TLS, which have one stream).
    pub async fn open_stream(&self) -> Result<RawStream> {
        let conn = self
            .quic
            .as_ref()
            .ok_or_else(|| anyhow!("only QUIC has data streams"))?;
        let (send, recv) = conn.open_bi().await?;
        Ok(RawStream {
            quic_id: Some(send.id()),
            reader: Box::new(recv),
            writer: Box::new(send),
            buf: BytesMut::new(),
            protocol: self.ctl.protocol,
            pending: Default::default(),
        })
    }

    /// Where PUBLISH/SUBSCRIBE go: a data stream on QUIC (opened on first use), the only stream otherwise.
    pub async fn data(&mut self) -> Result<&mut RawStream> {
        if self.quic.is_none() {
            return Ok(&mut self.ctl);
        }
        if self.data.is_none() {
            self.data = Some(self.open_stream().await?);
        }
        self.data.as_mut().ok_or_else(|| anyhow!("no data stream"))
    }

    /// Sends DISCONNECT (0x00) on the control stream and waits for the server to close.
    pub async fn disconnect(mut self) -> Result<()> {
        self.ctl
            .send(&Packet::Disconnect(Default::default()))
            .await?;
        if let Some(c) = &self.quic {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.closed()).await;
        }
        if let Some(ep) = self.endpoint.take() {
            ep.close(0u32.into(), b"");
        }
        Ok(())
    }

    /// Drops the network connection without DISCONNECT (as a crashing device would).
    pub fn kill(mut self) {
        if let Some(c) = &self.quic {
            c.close(1u32.into(), b"gone");
        }
        self.endpoint.take();
    }
}

/// rustls client config trusting `ca` only (ring provider, ALPN mqtt).
pub fn client_tls(ca: &std::path::Path) -> Result<rustls::ClientConfig> {
    let mut cfg = tls_builder(ca)?.with_no_client_auth();
    cfg.alpn_protocols = vec![b"mqtt".to_vec()];
    Ok(cfg)
}

/// A rustls client builder (ring provider) trusting `ca` only.
fn tls_builder(
    ca: &std::path::Path,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).with_context(|| format!("read {}", ca.display()))?;
    for c in rustls_pemfile_certs(&pem)? {
        roots.add(c)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots))
}

/// Like [`client_tls`], presenting a client certificate chain and key (PEM) for mTLS.
pub fn client_tls_with_cert(
    ca: &std::path::Path,
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let chain = rustls_pemfile_certs(cert_pem.as_bytes())?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let mut cfg = tls_builder(ca)?.with_client_auth_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"mqtt".to_vec()];
    Ok(cfg)
}

fn rustls_pemfile_certs(pem: &[u8]) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    Ok(rustls::pki_types::CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?)
}

/// A QUIC client endpoint on 127.0.0.1:0 trusting `ca`.
pub fn quic_client(ca: &std::path::Path) -> Result<quinn::Endpoint> {
    quic_client_with(client_tls(ca)?)
}

/// A QUIC client endpoint on 127.0.0.1:0 with the given rustls configuration.
pub fn quic_client_with(tls: rustls::ClientConfig) -> Result<quinn::Endpoint> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    Ok(ep)
}

/// File-transfer helpers over a raw stream (DESIGN §2 topics).
pub mod ft {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU16, Ordering};

    use anyhow::{bail, Result};
    use quicft_proto::{Packet, QoS, ReasonCode};
    use sha2::{Digest, Sha256};

    use super::{publish, RawStream};

    static PKID: AtomicU16 = AtomicU16::new(1);

    /// A packet id for the next command (unique among what a test has in flight).
    pub fn pkid() -> u16 {
        loop {
            let id = PKID.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    pub fn sha256_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// Deterministic pseudo-random content.
    pub fn content(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// One QoS 1 command; returns the PUBACK reason code.
    pub async fn cmd(s: &mut RawStream, topic: &str, payload: &[u8]) -> Result<ReasonCode> {
        Ok(s.publish_qos1(topic, payload, pkid()).await?.code)
    }

    pub async fn init(
        s: &mut RawStream,
        file_id: &str,
        name: &str,
        size: Option<u64>,
    ) -> Result<ReasonCode> {
        let mut meta = serde_json::json!({ "name": name });
        if let Some(size) = size {
            meta["size"] = size.into();
        }
        cmd(
            s,
            &format!("$file/{file_id}/init"),
            meta.to_string().as_bytes(),
        )
        .await
    }

    /// Sends all segments pipelined, then collects every PUBACK; returns the codes by offset.
    pub async fn segments(
        s: &mut RawStream,
        file_id: &str,
        segs: &[(u64, &[u8])],
    ) -> Result<Vec<(u64, ReasonCode)>> {
        let mut by_pkid = HashMap::new();
        for (offset, data) in segs {
            let id = pkid();
            s.send(&publish(
                &format!("$file/{file_id}/{offset}"),
                data,
                QoS::AtLeastOnce,
                id,
            ))
            .await?;
            by_pkid.insert(id, *offset);
        }
        let mut codes = Vec::new();
        while !by_pkid.is_empty() {
            match s.recv().await? {
                Packet::PubAck(a) => match by_pkid.remove(&a.pkid) {
                    Some(off) => codes.push((off, a.code)),
                    None => bail!("unexpected PUBACK {}", a.pkid),
                },
                Packet::Publish(p) => s.keep_pub(p).await?,
                other => bail!("expected PUBACK, got {other:?}"),
            }
        }
        codes.sort_by_key(|(o, _)| *o);
        Ok(codes)
    }

    /// Splits `data` into `seg`-byte segments at their offsets.
    pub fn split(data: &[u8], seg: usize) -> Vec<(u64, &[u8])> {
        data.chunks(seg.max(1))
            .enumerate()
            .map(|(i, c)| ((i * seg) as u64, c))
            .collect()
    }

    pub async fn fin(s: &mut RawStream, file_id: &str, data: &[u8]) -> Result<ReasonCode> {
        cmd(
            s,
            &format!("$file/{file_id}/fin/{}/{}", data.len(), sha256_hex(data)),
            b"",
        )
        .await
    }

    /// Uploads a whole file in order on one stream and finishes it; every code must be 0x00.
    pub async fn upload(
        s: &mut RawStream,
        file_id: &str,
        name: &str,
        data: &[u8],
        seg: usize,
    ) -> Result<()> {
        let code = init(s, file_id, name, Some(data.len() as u64)).await?;
        if code != ReasonCode::SUCCESS {
            bail!("init: {code}");
        }
        // A bounded pipeline: the server's Receive Maximum is 256.
        for chunk in split(data, seg).chunks(64) {
            for (off, code) in segments(s, file_id, chunk).await? {
                if code != ReasonCode::SUCCESS {
                    bail!("segment {off}: {code}");
                }
            }
        }
        let code = fin(s, file_id, data).await?;
        if code != ReasonCode::SUCCESS {
            bail!("fin: {code}");
        }
        Ok(())
    }
}

/// Runs a whole test body with a deadline, so that a hang fails the test instead of blocking CI.
pub async fn within<T>(
    limit: Duration,
    test: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, test).await {
        Ok(r) => r,
        Err(_) => bail!("test did not finish within {limit:?}"),
    }
}
