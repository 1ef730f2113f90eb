//! Helpers shared by the SDK tests (`sdk_*.rs`): client options pointing at a test server, and a
//! one-way emulated link for UDP proxies.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quicft_client::{CaSource, ClientOptions, Reconnect, Transport};
use quicft_tests::{Target, Transport as T};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Options for `transport` at `target`, trusting its dev CA, reconnecting quickly.
pub fn options(target: &impl Target, transport: Transport, client_id: &str) -> ClientOptions {
    let t = match transport {
        Transport::Quic => T::Quic,
        Transport::Tcp => T::Tcp,
        Transport::Tls => T::Tls,
    };
    let addr = target.addr(t);
    let mut o = ClientOptions::new("localhost", transport);
    o.port = Some(addr.port());
    o.tls.ca = CaSource::File(target.ca());
    o.client_id = client_id.to_owned();
    o.reconnect = Some(Reconnect {
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
        jitter: 0.5,
        max_attempts: None,
    });
    o
}

/// QUIC first, TLS as the fallback, both at `target`.
pub fn auto(target: &impl Target, client_id: &str) -> ClientOptions {
    let mut o = options(target, Transport::Quic, client_id);
    o.fallback = Some(Transport::Tls);
    o.fallback_port = Some(target.addr(T::Tls).port());
    o
}

/// Writes `len` bytes of seeded content to `dir/name`.
pub fn write_file(
    dir: &Path,
    name: &str,
    len: usize,
    seed: u64,
) -> std::io::Result<(PathBuf, Vec<u8>)> {
    let data = quicft_tests::ft::content(len, seed);
    let path = dir.join(name);
    std::fs::write(&path, &data)?;
    Ok((path, data))
}

/// Where the server exports a finished file.
pub fn export_path(data_dir: &Path, client_id: &str, file_id: &str, name: &str) -> PathBuf {
    data_dir
        .join("exports")
        .join(client_id)
        .join(file_id)
        .join(name)
}

/// A server on fixed ports (those of its first start) that can be stopped and started again on
/// the same data directory, as a restarted server process would be.
pub struct Restartable {
    pub dir: tempfile::TempDir,
    addrs: quicft_server::config::Listeners,
    server: Option<quicft_server::Server>,
}

impl Restartable {
    pub async fn start() -> anyhow::Result<Restartable> {
        quicft_tests::init_tracing();
        let dir = tempfile::tempdir()?;
        let server =
            quicft_server::Server::start(quicft_tests::test_config(dir.path().into())).await?;
        let addrs = quicft_server::config::Listeners {
            quic: server.quic_addr,
            tcp: server.tcp_addr,
            tls: server.tls_addr,
            ws: None,
            wss: None,
            http: None,
            insecure_tcp: false,
        };
        Ok(Restartable {
            dir,
            addrs,
            server: Some(server),
        })
    }

    /// The running server.
    pub fn server(&self) -> Option<&quicft_server::Server> {
        self.server.as_ref()
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        // The old sockets can outlive `shutdown` briefly (a QUIC endpoint lives until its last
        // connection handle is dropped): retry the bind for a while.
        let t0 = std::time::Instant::now();
        loop {
            let mut cfg = quicft_tests::test_config(self.dir.path().into());
            cfg.listeners = self.addrs.clone();
            match quicft_server::Server::start(cfg).await {
                Ok(s) => {
                    eprintln!("restarted after {:?}", t0.elapsed());
                    self.server = Some(s);
                    return Ok(());
                }
                Err(e) if t0.elapsed() < Duration::from_secs(20) => {
                    eprintln!("restart: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl quicft_tests::Target for Restartable {
    fn addr(&self, t: quicft_tests::Transport) -> std::net::SocketAddr {
        let a = match t {
            quicft_tests::Transport::Quic => self.addrs.quic,
            quicft_tests::Transport::Tcp => self.addrs.tcp,
            quicft_tests::Transport::Tls => self.addrs.tls,
        };
        a.expect("listener")
    }
    fn ca(&self) -> std::path::PathBuf {
        self.dir.path().join("certs/ca.pem")
    }
}

/// A one-way link: packets leave at `rate_bps` after at most `queue` of queueing (drop-tail),
/// then take `delay` to arrive.
#[derive(Clone, Copy)]
pub struct Shape {
    pub rate_bps: f64,
    pub queue: Duration,
    pub delay: Duration,
}

/// The entry of one direction of the link: datagrams sent into the returned channel leave `out`
/// (to `to`, or to the peer `out` is connected to) through `shape`, in order.
pub fn shaped(
    shape: Shape,
    out: Arc<UdpSocket>,
    to: Option<SocketAddr>,
) -> mpsc::UnboundedSender<Vec<u8>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((at, packet)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            let _ = match to {
                Some(to) => out.send_to(&packet, to).await,
                None => out.send(&packet).await,
            };
        }
    });
    // Admission: a virtual clock of when the link is next free.
    let (in_tx, mut in_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        let mut free_at = tokio::time::Instant::now();
        while let Some(packet) = in_rx.recv().await {
            let now = tokio::time::Instant::now();
            let start = free_at.max(now);
            if start - now > shape.queue {
                continue; // the queue is full: dropped
            }
            let bits = (packet.len() as f64 + 28.0) * 8.0;
            free_at = start + Duration::from_secs_f64(bits / shape.rate_bps);
            if tx.send((free_at + shape.delay, packet)).is_err() {
                return;
            }
        }
    });
    in_tx
}

/// A UDP link emulator in front of `to`: `up` shapes what devices send, `down` what the server
/// sends back. Returns the port devices connect to.
pub async fn link(to: SocketAddr, up: Shape, down: Shape) -> anyhow::Result<u16> {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let port = front.local_addr()?.port();
    tokio::spawn(async move {
        let mut backs: HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>> = HashMap::new();
        let mut buf = vec![0u8; 1 << 16];
        while let Ok((n, from)) = front.recv_from(&mut buf).await {
            let up_tx = match backs.get(&from) {
                Some(tx) => tx.clone(),
                None => {
                    let Ok(back) = UdpSocket::bind("127.0.0.1:0").await else {
                        continue;
                    };
                    if back.connect(to).await.is_err() {
                        continue;
                    }
                    let back = Arc::new(back);
                    let down_tx = shaped(down, front.clone(), Some(from));
                    let b2 = back.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 1 << 16];
                        while let Ok(n) = b2.recv(&mut buf).await {
                            if down_tx.send(buf[..n].to_vec()).is_err() {
                                return;
                            }
                        }
                    });
                    let tx = shaped(up, back, None);
                    backs.insert(from, tx.clone());
                    tx
                }
            };
            let _ = up_tx.send(buf[..n].to_vec());
        }
    });
    Ok(port)
}
