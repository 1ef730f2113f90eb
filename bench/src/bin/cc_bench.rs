//! `cc_bench`: QUIC congestion controllers side by side on an emulated cellular uplink (DESIGN §6,
//! issue 6), with kernel TCP on the same link for reference. Results and commands: bench/CC.md.
//!
//! The link: two network namespaces of its own (`cc-a` device 198.19.0.1, `cc-b` server
//! 198.19.0.2), joined by `linkem` (bench/linkem) over two TUN devices (`ccd0`, `ccs0`): uplink
//! 20 Mbit/s, 20 ms, 200 ms drop-tail queue and the random loss under test; downlink 50 Mbit/s,
//! 20 ms. (The names differ from `bench/netem.sh`'s `qft-dev`/`qft-srv`, so both can be up at once.)
//!
//! One measurement: a QUIC connection whose first stream uploads SIZE bytes (16 MiB by default)
//! while a second stream at higher priority sends a 100-byte message every 100 ms that the server
//! echoes; goodput is SIZE over the time from the first write to the server's confirmation of the
//! byte count, and the message round trips give p50/p90/p99. `tcp` does the same with kernel TCP
//! (the namespace's `tcp_congestion_control`, BBR by default): the upload on one connection, the
//! messages on a second one. Runs are interleaved (run 1 of every controller, then run 2, ...) so
//! that noise from the shared machine falls on all of them alike; the table shows medians.
//!
//! ```text
//! cargo build --release -p quicft-bench -p linkem
//! sudo target/release/cc_bench run [--losses 0,1,3] [--ccs cubic,bbr,delay,tcp] [--runs 3] [--size 16M]
//! ```
//!
//! `serve` and `upload` are the two ends, started by `run` inside the namespaces with
//! `ip netns exec`; they work on any network too.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use quicft_bench::size::parse_size;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEV_NS: &str = "cc-a";
const SRV_NS: &str = "cc-b";
const DEV_TUN: &str = "ccd0";
const SRV_TUN: &str = "ccs0";
const DEV_IP: &str = "198.19.0.1";
const SRV_IP: &str = "198.19.0.2";
/// QUIC port of the first controller in [`CCS`]; the others follow.
const BASE_PORT: u16 = 4431;
const CCS: [&str; 4] = ["cubic", "bbr", "delay", "newreno"];
const TCP_BULK_PORT: u16 = 4440;
const TCP_ECHO_PORT: u16 = 4441;
const MSG_SIZE: usize = 100;
const MSG_EVERY: Duration = Duration::from_millis(100);

#[derive(Parser, Debug)]
#[command(
    version,
    about = "QUIC congestion controllers side by side on an emulated uplink"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Bring up the link, measure every controller at every loss rate, print the table, tear down.
    Run(RunArgs),
    /// The receiving end: one QUIC port per controller, plus TCP.
    Serve(ServeArgs),
    /// One measurement against a `serve`; prints one JSON line.
    Upload(UploadArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Random uplink loss rates in percent.
    #[arg(long, value_delimiter = ',', default_value = "0,1,3")]
    losses: Vec<f64>,
    /// What to compare: cubic, bbr, delay, newreno (QUIC) and tcp (kernel TCP).
    #[arg(long, value_delimiter = ',', default_value = "cubic,bbr,delay,tcp")]
    ccs: Vec<String>,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Upload size (binary units: 16M, 64M).
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    size: u64,
    /// Uplink rate (linkem syntax).
    #[arg(long, default_value = "20mbit")]
    rate: String,
    /// One-way delay in ms (the RTT is twice this).
    #[arg(long, default_value_t = 20)]
    delay_ms: u64,
    /// linkem binary [default: next to this one].
    #[arg(long)]
    linkem: Option<PathBuf>,
    /// Where the JSON of every measurement goes.
    #[arg(long, default_value = "bench/results/cc.json")]
    json: PathBuf,
    /// linkem's seed (each loss level adds its percentage × 100).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    #[arg(long)]
    addr: IpAddr,
    /// Folder with the certificate (`server.pem`, `server.key`); generated there if missing.
    #[arg(long)]
    certs: PathBuf,
}

#[derive(clap::Args, Debug)]
struct UploadArgs {
    #[arg(long)]
    server: IpAddr,
    /// cubic, bbr, delay, newreno or tcp.
    #[arg(long)]
    cc: String,
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    size: u64,
    /// The CA that signed the server's certificate.
    #[arg(long)]
    ca: PathBuf,
}

/// One measurement, as `upload` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Measurement {
    cc: String,
    size: u64,
    secs: f64,
    goodput_mbit: f64,
    /// Message round trips (ms), in sending order; messages never echoed are left out and counted.
    rtts_ms: Vec<f64>,
    unanswered: usize,
    /// QUIC only: the sender's view at the end.
    srtt_ms: Option<f64>,
    lost_packets: Option<u64>,
    sent_packets: Option<u64>,
    congestion_events: Option<u64>,
    cwnd: Option<u64>,
    /// DelayBbr only: its mode changes during the upload, `(ms since start, mode, bandwidth
    /// Mbit/s, min RTT ms)`, sampled every 10 ms.
    #[serde(default)]
    modes: Vec<(u64, String, f64, f64)>,
}

/// A measurement with where it was taken and what the link saw meanwhile.
#[derive(Debug, Clone, Serialize)]
struct Record {
    loss_pct: f64,
    run: usize,
    #[serde(flatten)]
    m: Measurement,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// linkem's uplink during this measurement.
    link_queue_p50_ms: Option<f64>,
    link_queue_p99_ms: Option<f64>,
    link_queue_full_drops: Option<u64>,
    link_loss_rate: Option<f64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.cmd {
        Cmd::Run(a) => run(a),
        Cmd::Serve(a) => runtime()?.block_on(serve(a)),
        Cmd::Upload(a) => {
            let m = runtime()?.block_on(upload(a))?;
            println!("{}", serde_json::to_string(&m)?);
            Ok(())
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

// ------------------------------------------------------------------------------------ QUIC setup

fn factory(cc: &str) -> Result<Arc<dyn quinn::congestion::ControllerFactory + Send + Sync>> {
    Ok(match cc {
        "cubic" => Arc::new(quinn::congestion::CubicConfig::default()),
        "bbr" => Arc::new(quinn::congestion::BbrConfig::default()),
        "newreno" => Arc::new(quinn::congestion::NewRenoConfig::default()),
        "delay" => Arc::new(quicft_congestion::DelayBbrConfig::default()),
        other => bail!("unknown controller {other:?}"),
    })
}

/// quicft-server's QUIC transport settings (server/src/config.rs), with the controller under test.
fn transport(cc: &str) -> Result<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u32(8 << 20))
        .receive_window(quinn::VarInt::from_u32(32 << 20))
        .send_window(32 << 20)
        .max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            60_000,
        ))))
        .congestion_controller_factory(factory(cc)?);
    Ok(t)
}

fn udp_socket(addr: SocketAddr) -> Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // quinn loses packets on bursts with the kernel's small default buffers.
    let _ = socket.set_recv_buffer_size(8 << 20);
    let _ = socket.set_send_buffer_size(8 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn endpoint(addr: SocketAddr, server: Option<quinn::ServerConfig>) -> Result<quinn::Endpoint> {
    let rt = quinn::default_runtime().ok_or_else(|| anyhow!("no async runtime"))?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        udp_socket(addr)?,
        rt,
    )?)
}

fn client_config(ca: &Path, cc: &str) -> Result<quinn::ClientConfig> {
    let tls = quicft_bench::quic::client_tls(ca)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport(cc)?));
    Ok(cfg)
}

// ----------------------------------------------------------------------------------------- serve

async fn serve(a: ServeArgs) -> Result<()> {
    if !a.certs.join("server.pem").exists() {
        quicft_server::tls::generate_dev_certs(&a.certs, &[a.addr.to_string()])?;
    }
    let id =
        quicft_server::tls::load_pem(&a.certs.join("server.pem"), &a.certs.join("server.key"))?;
    for (i, cc) in CCS.iter().enumerate() {
        let crypto = quicft_server::tls::server_config(&id, true)?;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::new(transport(cc)?));
        let ep = endpoint(SocketAddr::new(a.addr, BASE_PORT + i as u16), Some(server))?;
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        tokio::spawn(quic_stream(send, recv));
                    }
                });
            }
        });
    }
    let bulk = tokio::net::TcpListener::bind(SocketAddr::new(a.addr, TCP_BULK_PORT)).await?;
    let echo = tokio::net::TcpListener::bind(SocketAddr::new(a.addr, TCP_ECHO_PORT)).await?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = bulk.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                let mut n = 0u64;
                while let Ok(k) = s.read(&mut buf).await {
                    if k == 0 {
                        break;
                    }
                    n += k as u64;
                }
                let _ = s.write_all(&n.to_be_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(k) = s.read(&mut buf).await {
                    if k == 0 || s.write_all(&buf[..k]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    println!("ready");
    // Until killed.
    std::future::pending::<Result<()>>().await
}

/// First byte: `T` echo everything back (telemetry), `B` count everything and answer the count.
async fn quic_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let mut kind = [0u8; 1];
    if recv.read_exact(&mut kind).await.is_err() {
        return;
    }
    if kind[0] == b'T' {
        let _ = send.set_priority(10);
        let mut buf = vec![0u8; 4096];
        while let Ok(Some(k)) = recv.read(&mut buf).await {
            if send.write_all(&buf[..k]).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
    } else {
        let mut n = 0u64;
        while let Ok(Some(chunk)) = recv.read_chunk(1 << 20, true).await {
            n += chunk.bytes.len() as u64;
        }
        let _ = send.write_all(&n.to_be_bytes()).await;
        let _ = send.finish();
        let _ = send.stopped().await;
    }
}

// ---------------------------------------------------------------------------------------- upload

/// Sends a numbered message every 100 ms on `w` and times its echo from `r` until `done`.
struct Telemetry {
    sent: Arc<Mutex<HashMap<u32, Instant>>>,
    rtts: Arc<Mutex<Vec<(u32, f64)>>>,
}

impl Telemetry {
    fn new() -> Telemetry {
        Telemetry {
            sent: Arc::default(),
            rtts: Arc::default(),
        }
    }

    fn spawn<W, R>(&self, mut w: W, mut r: R, done: tokio::sync::watch::Receiver<bool>)
    where
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        let sent = self.sent.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MSG_EVERY);
            let mut seq = 0u32;
            let mut msg = [0u8; MSG_SIZE];
            loop {
                tick.tick().await;
                if *done.borrow() {
                    break;
                }
                msg[..4].copy_from_slice(&seq.to_be_bytes());
                if let Ok(mut s) = sent.lock() {
                    s.insert(seq, Instant::now());
                }
                if w.write_all(&msg).await.is_err() {
                    break;
                }
                seq += 1;
            }
        });
        let sent = self.sent.clone();
        let rtts = self.rtts.clone();
        tokio::spawn(async move {
            let mut msg = [0u8; MSG_SIZE];
            while r.read_exact(&mut msg).await.is_ok() {
                let now = Instant::now();
                let seq = u32::from_be_bytes([msg[0], msg[1], msg[2], msg[3]]);
                let at = sent.lock().ok().and_then(|mut s| s.remove(&seq));
                if let (Some(at), Ok(mut rtts)) = (at, rtts.lock()) {
                    rtts.push((seq, (now - at).as_secs_f64() * 1e3));
                }
            }
        });
    }

    /// Round trips in sending order, and how many messages got no echo.
    async fn finish(&self) -> (Vec<f64>, usize) {
        // Echoes of the last messages are still on their way.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut rtts = self.rtts.lock().map(|r| r.clone()).unwrap_or_default();
        rtts.sort_by_key(|&(seq, _)| seq);
        let unanswered = self.sent.lock().map(|s| s.len()).unwrap_or(0);
        (rtts.into_iter().map(|(_, ms)| ms).collect(), unanswered)
    }
}

async fn upload(a: UploadArgs) -> Result<Measurement> {
    if a.cc == "tcp" {
        return upload_tcp(a).await;
    }
    let port = CCS
        .iter()
        .position(|c| *c == a.cc)
        .ok_or_else(|| anyhow!("unknown controller {}", a.cc))?;
    let server = SocketAddr::new(a.server, BASE_PORT + port as u16);
    let ep = endpoint(SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0), None)?;
    let conn = ep
        .connect_with(client_config(&a.ca, &a.cc)?, server, &a.server.to_string())?
        .await?;

    let (mut tsend, trecv) = conn.open_bi().await?;
    tsend.set_priority(10)?;
    tsend.write_all(b"T").await?;
    let (mut bsend, mut brecv) = conn.open_bi().await?;
    bsend.write_all(b"B").await?;

    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let telemetry = Telemetry::new();
    telemetry.spawn(tsend, trecv, done_rx);

    let chunk = bytes::Bytes::from(vec![0x5au8; 64 << 10]);
    let start = Instant::now();
    let modes = watch_modes(conn.clone(), start, done_tx.subscribe());
    let mut left = a.size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        bsend.write_chunk(chunk.slice(..n)).await?;
        left -= n as u64;
    }
    bsend.finish()?;
    let mut count = [0u8; 8];
    brecv.read_exact(&mut count).await?;
    let secs = start.elapsed().as_secs_f64();
    let _ = done_tx.send(true);
    if u64::from_be_bytes(count) != a.size {
        bail!(
            "server counted {} bytes of {}",
            u64::from_be_bytes(count),
            a.size
        );
    }
    let stats = conn.stats();
    let modes = modes.await.unwrap_or_default();
    let (rtts_ms, unanswered) = telemetry.finish().await;
    conn.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(1), ep.wait_idle()).await;
    Ok(Measurement {
        cc: a.cc,
        size: a.size,
        secs,
        goodput_mbit: a.size as f64 * 8.0 / secs / 1e6,
        rtts_ms,
        unanswered,
        srtt_ms: Some(stats.path.rtt.as_secs_f64() * 1e3),
        lost_packets: Some(stats.path.lost_packets),
        sent_packets: Some(stats.path.sent_packets),
        congestion_events: Some(stats.path.congestion_events),
        cwnd: Some(stats.path.cwnd),
        modes,
    })
}

/// DelayBbr's mode changes while the upload runs (for explaining outliers; empty for the other
/// controllers).
fn watch_modes(
    conn: quinn::Connection,
    start: Instant,
    mut done: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<(u64, String, f64, f64)>> {
    tokio::spawn(async move {
        let mut out: Vec<(u64, String, f64, f64)> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = done.changed() => break,
            }
            let Ok(cc) = conn
                .congestion_state()
                .into_any()
                .downcast::<quicft_congestion::DelayBbr>()
            else {
                break;
            };
            let mode = format!("{:?}", cc.mode());
            if out.last().is_none_or(|l| l.1 != mode) {
                out.push((
                    start.elapsed().as_millis() as u64,
                    mode,
                    cc.bandwidth() as f64 * 8.0 / 1e6,
                    cc.min_rtt().map_or(0.0, |d| d.as_secs_f64() * 1e3),
                ));
            }
        }
        out
    })
}

async fn upload_tcp(a: UploadArgs) -> Result<Measurement> {
    let echo = tokio::net::TcpStream::connect(SocketAddr::new(a.server, TCP_ECHO_PORT)).await?;
    echo.set_nodelay(true)?;
    let (er, ew) = echo.into_split();
    let mut bulk = tokio::net::TcpStream::connect(SocketAddr::new(a.server, TCP_BULK_PORT)).await?;

    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let telemetry = Telemetry::new();
    telemetry.spawn(ew, er, done_rx);

    let chunk = vec![0x5au8; 64 << 10];
    let start = Instant::now();
    let mut left = a.size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        bulk.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    bulk.shutdown().await?;
    let mut count = [0u8; 8];
    bulk.read_exact(&mut count).await?;
    let secs = start.elapsed().as_secs_f64();
    let _ = done_tx.send(true);
    if u64::from_be_bytes(count) != a.size {
        bail!(
            "server counted {} bytes of {}",
            u64::from_be_bytes(count),
            a.size
        );
    }
    let (rtts_ms, unanswered) = telemetry.finish().await;
    Ok(Measurement {
        cc: a.cc,
        size: a.size,
        secs,
        goodput_mbit: a.size as f64 * 8.0 / secs / 1e6,
        rtts_ms,
        unanswered,
        srtt_ms: None,
        lost_packets: None,
        sent_packets: None,
        congestion_events: None,
        cwnd: None,
        modes: Vec::new(),
    })
}

// ------------------------------------------------------------------------------------------- run

/// The link and the server, stopped (by PID) and removed when dropped.
struct Bed {
    linkem: Option<Child>,
    server: Option<Child>,
    stats: PathBuf,
}

impl Drop for Bed {
    fn drop(&mut self) {
        for child in [self.server.take(), self.linkem.take()]
            .into_iter()
            .flatten()
        {
            stop(child);
        }
        for ns in [DEV_NS, SRV_NS] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// SIGTERM (linkem writes its report on it), then SIGKILL after 2 s.
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..20 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn sh(cmd: &[&str]) -> Result<()> {
    let status = Command::new(cmd[0])
        .args(&cmd[1..])
        .status()
        .with_context(|| format!("{cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn ns_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name))
        })
        .unwrap_or(false)
}

/// `chrt -f PRIO` when real-time scheduling is allowed: on two shared cores a compile next door
/// must not become link delay or sender stalls.
fn rt_prefix(prio: &str) -> Vec<String> {
    let ok = Command::new("chrt")
        .args(["-f", prio, "true"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        vec!["chrt".into(), "-f".into(), prio.into()]
    } else {
        Vec::new()
    }
}

fn bed_up(a: &RunArgs, loss: f64, exe: &Path, certs: &Path) -> Result<Bed> {
    for ns in [DEV_NS, SRV_NS] {
        if ns_exists(ns) {
            bail!("namespace {ns} exists already (another cc_bench running? `ip netns del {ns}`)");
        }
    }
    let linkem = match &a.linkem {
        Some(p) => p.clone(),
        None => exe.with_file_name("linkem"),
    };
    if !linkem.exists() {
        bail!(
            "no linkem at {} (cargo build --release -p linkem)",
            linkem.display()
        );
    }
    let mut bed = Bed {
        linkem: None,
        server: None,
        stats: std::env::temp_dir().join(format!("cc_bench-{}.json", std::process::id())),
    };
    for ns in [DEV_NS, SRV_NS] {
        sh(&["ip", "netns", "add", ns])?;
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ])
            .status();
    }
    let ready = std::env::temp_dir().join(format!("cc_bench-{}.ready", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let mut up = format!("delay={}ms,rate={},queue=200ms", a.delay_ms, a.rate);
    if loss > 0.0 {
        up += &format!(",loss={loss}%");
    }
    let down = format!("delay={}ms,rate=50mbit,queue=200ms", a.delay_ms);
    let seed = a.seed + (loss * 100.0) as u64;
    let mut cmd = rt_prefix("10");
    cmd.push(linkem.display().to_string());
    for s in [
        "--dev-tun",
        DEV_TUN,
        "--srv-tun",
        SRV_TUN,
        "--dev-netns",
        DEV_NS,
        "--srv-netns",
        SRV_NS,
        "--stats-interval",
        "200ms",
    ] {
        cmd.push(s.into());
    }
    cmd.extend([
        "--up".into(),
        up.clone(),
        "--down".into(),
        down,
        "--seed".into(),
        seed.to_string(),
    ]);
    cmd.extend(["--label".into(), format!("cc loss {loss}%")]);
    cmd.extend(["--stats-file".into(), bed.stats.display().to_string()]);
    cmd.extend(["--ready-file".into(), ready.display().to_string()]);
    let log = std::fs::File::create(std::env::temp_dir().join("cc_bench-linkem.log"))?;
    bed.linkem = Some(
        Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    for _ in 0..100 {
        if ready.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !ready.exists() {
        bail!(
            "linkem did not come up (see {})",
            std::env::temp_dir().join("cc_bench-linkem.log").display()
        );
    }
    sh(&[
        "ip", "-n", DEV_NS, "addr", "add", DEV_IP, "peer", SRV_IP, "dev", DEV_TUN,
    ])?;
    sh(&[
        "ip", "-n", SRV_NS, "addr", "add", SRV_IP, "peer", DEV_IP, "dev", SRV_TUN,
    ])?;
    sh(&["ip", "-n", DEV_NS, "link", "set", DEV_TUN, "up"])?;
    sh(&["ip", "-n", SRV_NS, "link", "set", SRV_TUN, "up"])?;

    let mut cmd = vec![
        "ip".to_string(),
        "netns".into(),
        "exec".into(),
        SRV_NS.into(),
    ];
    cmd.extend(rt_prefix("5"));
    cmd.extend([
        exe.display().to_string(),
        "serve".into(),
        "--addr".into(),
        SRV_IP.into(),
    ]);
    cmd.extend(["--certs".into(), certs.display().to_string()]);
    let mut server = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = server
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no server stdout"))?;
    bed.server = Some(server);
    let mut line = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut line).context("server did not start")?;
    eprintln!("cc_bench: link up: uplink {up}, seed {seed}");
    Ok(bed)
}

/// linkem's uplink figures since the last reset (it rewrites the stats file every 200 ms).
fn link_report(path: &Path) -> Option<serde_json::Value> {
    std::thread::sleep(Duration::from_millis(450));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(v.get("up")?.clone())
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    // Linear between closest ranks (numpy's default): with ~70 messages per upload a nearest-rank
    // p99 would just be the maximum, which the table shows separately.
    let x = p * (s.len() - 1) as f64;
    let (i, frac) = (x.floor() as usize, x - x.floor());
    let j = (i + 1).min(s.len() - 1);
    s[i] + (s[j] - s[i]) * frac
}

fn median(v: Vec<f64>) -> f64 {
    quicft_bench::stats::median(v).unwrap_or(f64::NAN)
}

fn run(a: RunArgs) -> Result<()> {
    let exe = std::env::current_exe()?;
    let certs = std::env::temp_dir().join(format!("cc_bench-certs-{}", std::process::id()));
    quicft_server::tls::generate_dev_certs(&certs, &[SRV_IP.to_string()])?;
    let tcp_cc =
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control").unwrap_or_default();
    let mut records: Vec<Record> = Vec::new();
    for &loss in &a.losses {
        let bed = bed_up(&a, loss, &exe, &certs)?;
        let linkem_pid = bed.linkem.as_ref().map(|c| c.id());
        // The namespace's TCP controller is what `tcp` measures.
        let ns_tcp = Command::new("ip")
            .args([
                "netns",
                "exec",
                DEV_NS,
                "cat",
                "/proc/sys/net/ipv4/tcp_congestion_control",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        eprintln!("cc_bench: kernel TCP in {DEV_NS}: {ns_tcp}");
        for r in 1..=a.runs {
            for cc in &a.ccs {
                if let Some(pid) = linkem_pid {
                    // Fresh counters for this measurement.
                    let _ = Command::new("kill")
                        .args(["-USR1", &pid.to_string()])
                        .status();
                    std::thread::sleep(Duration::from_millis(300));
                }
                let mut cmd = vec![
                    "ip".to_string(),
                    "netns".into(),
                    "exec".into(),
                    DEV_NS.into(),
                ];
                cmd.extend(rt_prefix("5"));
                cmd.extend([
                    exe.display().to_string(),
                    "upload".into(),
                    "--server".into(),
                    SRV_IP.into(),
                ]);
                cmd.extend([
                    "--cc".into(),
                    cc.clone(),
                    "--size".into(),
                    a.size.to_string(),
                ]);
                cmd.extend(["--ca".into(), certs.join("ca.pem").display().to_string()]);
                let out = Command::new(&cmd[0])
                    .args(&cmd[1..])
                    .stderr(Stdio::inherit())
                    .output()?;
                if !out.status.success() {
                    eprintln!("cc_bench: {cc} at {loss}% run {r} failed");
                    continue;
                }
                let m: Measurement =
                    serde_json::from_slice(&out.stdout).context("upload's JSON")?;
                let link = link_report(&bed.stats);
                let f = |k: &str, q: &str| link.as_ref()?.get(k)?.get(q)?.as_f64();
                let rec = Record {
                    loss_pct: loss,
                    run: r,
                    p50_ms: pct(&m.rtts_ms, 0.5),
                    p90_ms: pct(&m.rtts_ms, 0.9),
                    p99_ms: pct(&m.rtts_ms, 0.99),
                    max_ms: pct(&m.rtts_ms, 1.0),
                    link_queue_p50_ms: f("queue_delay_ms", "p50"),
                    link_queue_p99_ms: f("queue_delay_ms", "p99"),
                    link_queue_full_drops: f("drops", "queue_full").map(|x| x as u64),
                    link_loss_rate: link.as_ref().and_then(|l| l.get("loss_rate")?.as_f64()),
                    m,
                };
                let probes: Vec<String> = rec
                    .m
                    .modes
                    .iter()
                    .filter(|m| m.1 != "Cruise")
                    .map(|m| format!("{}@{}ms/{:.1}Mbit/{:.1}ms", m.1, m.0, m.2, m.3))
                    .collect();
                if !probes.is_empty() {
                    eprintln!("cc_bench:   modes {}", probes.join(" "));
                }
                eprintln!(
                    "cc_bench: {loss}% {cc:>7} run {r}: {:.2} Mbit/s, msg rtt p50 {:.1} p99 {:.1} ms, \
                     srtt {:.1} ms, link queue p50 {:.1} p99 {:.1} ms",
                    rec.m.goodput_mbit,
                    rec.p50_ms,
                    rec.p99_ms,
                    rec.m.srtt_ms.unwrap_or(f64::NAN),
                    rec.link_queue_p50_ms.unwrap_or(f64::NAN),
                    rec.link_queue_p99_ms.unwrap_or(f64::NAN),
                );
                records.push(rec);
            }
        }
        drop(bed);
    }
    let _ = std::fs::remove_dir_all(&certs);
    if let Some(dir) = a.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.json, serde_json::to_vec_pretty(&records)?)?;
    print_table(&a, &records, tcp_cc.trim());
    Ok(())
}

fn print_table(a: &RunArgs, records: &[Record], tcp_cc: &str) {
    println!(
        "\nUplink {} with {} ms each way, 200 ms queue; {} MiB upload; medians of {} runs (min–max goodput); \
         message RTT = 100-byte message every 100 ms on a higher-priority stream, echoed.\n",
        a.rate,
        a.delay_ms,
        a.size >> 20,
        a.runs
    );
    println!("| loss | sender | goodput Mbit/s | vs TCP | msg RTT p50 | p90 | p99 | max | sender srtt at end | link queue p50 / p99 |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &loss in &a.losses {
        let tcp = median(
            records
                .iter()
                .filter(|r| r.loss_pct == loss && r.m.cc == "tcp")
                .map(|r| r.m.goodput_mbit)
                .collect(),
        );
        for cc in &a.ccs {
            let rs: Vec<&Record> = records
                .iter()
                .filter(|r| r.loss_pct == loss && &r.m.cc == cc)
                .collect();
            if rs.is_empty() {
                continue;
            }
            let col = |f: &dyn Fn(&Record) -> f64| median(rs.iter().map(|r| f(r)).collect());
            let gp: Vec<f64> = rs.iter().map(|r| r.m.goodput_mbit).collect();
            let lo = gp.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = gp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let name = match cc.as_str() {
                "tcp" => format!("kernel TCP ({tcp_cc})"),
                "delay" => "quinn + quicft DelayBbr".to_string(),
                other => format!("quinn {other}"),
            };
            let g = col(&|r| r.m.goodput_mbit);
            let srtt = col(&|r| r.m.srtt_ms.unwrap_or(f64::NAN));
            println!(
                "| {loss}% | {name} | {g:.2} ({lo:.2}–{hi:.2}) | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.1} / {:.1} |",
                if tcp.is_nan() { "–".to_string() } else { format!("{:.3}", g / tcp) },
                col(&|r| r.p50_ms),
                col(&|r| r.p90_ms),
                col(&|r| r.p99_ms),
                col(&|r| r.max_ms),
                if srtt.is_nan() { "–".to_string() } else { format!("{srtt:.1}") },
                col(&|r| r.link_queue_p50_ms.unwrap_or(f64::NAN)),
                col(&|r| r.link_queue_p99_ms.unwrap_or(f64::NAN)),
            );
        }
    }
}
