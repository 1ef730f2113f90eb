//! `devices`: many devices on one machine against one `quicft-server` process (issue 5, item 4).
//!
//! Each simulated device has its own QUIC connection and does what a fleet device does: CONNECT on
//! the control stream, QoS 1 telemetry every `--telemetry` on one data stream, and one file upload
//! (`$file/{id}/init`, pipelined segments, `fin/{size}/{sha256}`) on another (DESIGN §2, §3). It
//! speaks MQTT on our codec (`quicft_proto`) over quinn directly, so only the server is measured.
//!
//! The server is started from the release binary on free loopback ports with a fresh data
//! directory; its CPU time comes from `/proc/<pid>/stat` and its peak RSS from `VmHWM` in
//! `/proc/<pid>/status`. At the end every exported file is checked for its size.
//!
//! ```text
//! cargo build --release -p quicft-server -p quicft-bench
//! ulimit -n 65536
//! target/release/devices --devices 1000 --file-size 1M
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use quicft_bench::launch::FtServer;
use quicft_bench::net::next_packet;
use quicft_bench::procfs;
use quicft_bench::quic;
use quicft_bench::size::parse_size;
use quicft_proto::ft::{Command as FtCommand, FileId, Mode, Sha256 as FtSha256};
use quicft_proto::{Connect, Disconnect, Packet, Properties, Protocol, Publish, QoS, ReasonCode};
use sha2::{Digest, Sha256};

/// Largest packet a device reads (server responses and deliveries are small).
const MAX_PACKET: usize = 1 << 20;

#[derive(Parser, Debug)]
#[command(
    about = "Simulate N devices (QUIC, telemetry + one file upload each) against quicft-server"
)]
struct Args {
    /// Number of devices, each with its own QUIC connection.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// File each device uploads (K/M suffixes).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    file_size: u64,
    /// Segment size (one QoS 1 PUBLISH each).
    #[arg(long, default_value = "64K", value_parser = parse_size)]
    segment: u64,
    /// Segments in flight per device (un-acknowledged).
    #[arg(long, default_value_t = 2)]
    window: usize,
    /// Seconds between telemetry messages.
    #[arg(long, default_value_t = 1.0)]
    telemetry: f64,
    /// Each device stays connected (sending telemetry) at least this many seconds.
    #[arg(long, default_value_t = 20.0)]
    min_duration: f64,
    /// Devices connect evenly spread over this many seconds.
    #[arg(long, default_value_t = 20.0)]
    ramp: f64,
    /// Client-side UDP sockets the devices are spread over.
    #[arg(long, default_value_t = 8)]
    sockets: usize,
    /// The server binary.
    #[arg(long, default_value = "target/release/quicft-server")]
    server_bin: PathBuf,
    /// Give up on a device after this many seconds.
    #[arg(long, default_value_t = 300.0)]
    device_timeout: f64,
}

/// What all devices add to.
#[derive(Default)]
struct Totals {
    connected: AtomicU64,
    uploads_done: AtomicU64,
    telemetry_sent: AtomicU64,
    telemetry_acked: AtomicU64,
    errors: AtomicU64,
    error_samples: Mutex<Vec<String>>,
    upload_ms: Mutex<Vec<u64>>,
    telemetry_ms: Mutex<Vec<u64>>,
}

impl Totals {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut s) = self.error_samples.lock() {
            if s.len() < 10 {
                s.push(what);
            }
        }
    }
}

struct Shared {
    args: Args,
    addr: SocketAddr,
    client: quinn::ClientConfig,
    file: Bytes,
    sha: FtSha256,
    totals: Totals,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let data = tempfile::tempdir()?;
    let server = FtServer::start(
        &args.server_bin,
        data.path(),
        None,
        &[("RUST_LOG".into(), "warn".into())],
        &data.path().join("server.log"),
    )?;
    let client = client_config(&server.ca())?;
    let file = Bytes::from(pseudo_random(args.file_size as usize));
    let sha = FtSha256(Sha256::digest(&file).into());
    let endpoints = (0..args.sockets.max(1))
        .map(|_| endpoint())
        .collect::<Result<Vec<_>>>()?;
    let n = args.devices;
    let shared = Arc::new(Shared {
        addr: server.quic,
        client,
        file,
        sha,
        totals: Totals::default(),
        args,
    });

    // Server CPU and memory, sampled while the devices run.
    let pid = server.pid;
    let (ticks0, t0) = (procfs::pid_stat(pid)?.ticks(), Instant::now());
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak_rss.clone();
        tokio::spawn(async move {
            loop {
                if let Some(kb) = procfs::status_kib(pid, "VmRSS:") {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let progress = {
        let s = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let t = &s.totals;
                eprintln!(
                    "[{:>5.1}s] connected {} uploads {} telemetry {}/{} errors {} rss {} MiB",
                    t0.elapsed().as_secs_f64(),
                    t.connected.load(Ordering::Relaxed),
                    t.uploads_done.load(Ordering::Relaxed),
                    t.telemetry_acked.load(Ordering::Relaxed),
                    t.telemetry_sent.load(Ordering::Relaxed),
                    t.errors.load(Ordering::Relaxed),
                    procfs::status_kib(pid, "VmRSS:").unwrap_or(0) / 1024,
                );
            }
        })
    };

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let s = shared.clone();
        let ep = endpoints[i % endpoints.len()].clone();
        let delay = Duration::from_secs_f64(s.args.ramp * i as f64 / n.max(1) as f64);
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            let limit = Duration::from_secs_f64(s.args.device_timeout);
            match tokio::time::timeout(limit, device(i, &ep, &s)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => s.totals.error(format!("dev-{i:05}: {e:#}")),
                Err(_) => s.totals.error(format!("dev-{i:05}: timed out")),
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let wall = t0.elapsed();
    let ticks = procfs::pid_stat(pid)?.ticks().saturating_sub(ticks0);
    progress.abort();
    sampler.abort();
    let hwm = procfs::status_kib(pid, "VmHWM:").unwrap_or(0);
    for ep in &endpoints {
        ep.wait_idle().await;
    }
    server.stop()?;

    // Every completed upload is an exported file of the right size.
    let exports = data.path().join("exports");
    let mut exported = 0;
    for i in 0..n {
        let dir = exports.join(format!("dev-{i:05}")).join("f1");
        if std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name() == "dev.bin"
                    && e.metadata().is_ok_and(|m| m.len() == shared.args.file_size)
            })
        {
            exported += 1;
        }
    }

    let t = &shared.totals;
    let a = &shared.args;
    let hz = procfs::clock_ticks_per_sec() as f64;
    let cpu_s = ticks as f64 / hz;
    println!("devices: {} (QUIC), file {} B each, segment {} B, window {}, telemetry every {} s, ramp {} s, min {} s",
        a.devices, a.file_size, a.segment, a.window, a.telemetry, a.ramp, a.min_duration);
    println!("connected: {}", t.connected.load(Ordering::Relaxed));
    println!(
        "uploads completed: {} / {} (exported files verified: {exported})",
        t.uploads_done.load(Ordering::Relaxed),
        n
    );
    println!(
        "telemetry: {} sent, {} acknowledged",
        t.telemetry_sent.load(Ordering::Relaxed),
        t.telemetry_acked.load(Ordering::Relaxed)
    );
    println!("errors: {}", t.errors.load(Ordering::Relaxed));
    for e in t
        .error_samples
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default()
    {
        println!("  {e}");
    }
    let pct = |v: &Mutex<Vec<u64>>, q: f64| {
        let mut v = v.lock().map(|v| v.clone()).unwrap_or_default();
        v.sort_unstable();
        if v.is_empty() {
            0
        } else {
            v[((v.len() - 1) as f64 * q) as usize]
        }
    };
    println!(
        "upload time ms: p50 {} p99 {} max {}",
        pct(&t.upload_ms, 0.5),
        pct(&t.upload_ms, 0.99),
        pct(&t.upload_ms, 1.0)
    );
    println!(
        "telemetry ack ms: p50 {} p99 {} max {}",
        pct(&t.telemetry_ms, 0.5),
        pct(&t.telemetry_ms, 0.99),
        pct(&t.telemetry_ms, 1.0)
    );
    println!("wall: {:.1} s", wall.as_secs_f64());
    println!(
        "server CPU: {cpu_s:.1} s ({:.0}% of one core on average)",
        100.0 * cpu_s / wall.as_secs_f64()
    );
    println!(
        "server peak RSS: {:.1} MiB (VmHWM; sampled VmRSS max {:.1} MiB)",
        hwm as f64 / 1024.0,
        peak_rss.load(Ordering::Relaxed) as f64 / 1024.0
    );
    if t.errors.load(Ordering::Relaxed) > 0 || exported != n {
        bail!(
            "{} errors, {exported} of {n} files exported",
            t.errors.load(Ordering::Relaxed)
        );
    }
    Ok(())
}

/// One device's life: connect, telemetry alongside one upload, stay for `min_duration`, leave.
async fn device(i: usize, ep: &quinn::Endpoint, s: &Shared) -> Result<()> {
    let started = Instant::now();
    let id = format!("dev-{i:05}");
    let conn = ep
        .connect_with(s.client.clone(), s.addr, "localhost")?
        .await
        .context("QUIC handshake")?;
    let (mut ctl_tx, mut ctl_rx) = conn.open_bi().await?;
    let connect = Connect {
        protocol: Protocol::V5,
        clean_start: true,
        keep_alive: 60,
        client_id: id.clone(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    };
    ctl_tx
        .write_all(&encode(&Packet::Connect(connect))?)
        .await?;
    let mut ctl_buf = BytesMut::new();
    match tokio::time::timeout(
        Duration::from_secs(60),
        next_packet(&mut ctl_rx, &mut ctl_buf, MAX_PACKET),
    )
    .await
    .context("CONNACK timeout")??
    {
        Some(Packet::ConnAck(a)) if a.code == ReasonCode::SUCCESS => {}
        other => bail!("CONNACK: {other:?}"),
    }
    s.totals.connected.fetch_add(1, Ordering::Relaxed);

    let until = started + Duration::from_secs_f64(s.args.min_duration);
    let (tele, upload) = tokio::join!(telemetry(&conn, &id, s, until), upload(&conn, s));
    let upload_time = upload.context("upload")?;
    tele.context("telemetry")?;
    if let Ok(mut v) = s.totals.upload_ms.lock() {
        v.push(upload_time.as_millis() as u64);
    }

    ctl_tx
        .write_all(&encode(&Packet::Disconnect(Disconnect::default()))?)
        .await?;
    let _ = ctl_tx.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
    conn.close(0u32.into(), b"done");
    Ok(())
}

/// QoS 1 telemetry every `--telemetry` seconds until `until` and the upload are both past.
async fn telemetry(conn: &quinn::Connection, id: &str, s: &Shared, until: Instant) -> Result<()> {
    let (mut tx, mut rx) = conn.open_bi().await?;
    let mut buf = BytesMut::new();
    let topic = format!("devices/{id}/telemetry");
    let mut tick = tokio::time::interval(Duration::from_secs_f64(s.args.telemetry));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pkid = 0u16;
    while Instant::now() < until {
        tick.tick().await;
        pkid = pkid.wrapping_add(1).max(1);
        let payload = Bytes::from(format!(r#"{{"t":{},"temp":21.5,"seq":{pkid}}}"#, now_ms()));
        let sent = Instant::now();
        tx.write_all(&encode(&publish(&topic, pkid, payload))?)
            .await?;
        s.totals.telemetry_sent.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(
            Duration::from_secs(30),
            next_packet(&mut rx, &mut buf, MAX_PACKET),
        )
        .await
        .context("telemetry PUBACK timeout")??
        {
            Some(Packet::PubAck(a)) if a.pkid == pkid && a.code == ReasonCode::SUCCESS => {
                s.totals.telemetry_acked.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut v) = s.totals.telemetry_ms.lock() {
                    v.push(sent.elapsed().as_millis() as u64);
                }
            }
            other => bail!("telemetry: expected PUBACK {pkid}, got {other:?}"),
        }
    }
    let _ = tx.finish();
    Ok(())
}

/// init → segments (`--window` in flight) → fin; every PUBACK must be 0x00 (bytes on disk).
async fn upload(conn: &quinn::Connection, s: &Shared) -> Result<Duration> {
    let started = Instant::now();
    let (mut tx, mut rx) = conn.open_bi().await?;
    let mut buf = BytesMut::new();
    let size = s.file.len();
    let meta = format!(r#"{{"name":"dev.bin","size":{size}}}"#);
    let file_id = FileId::parse("f1")?;
    let topic = |command| file_id.topic(Mode::Sync, &command);
    let mut pkid = 0u16;
    let mut next_pkid = || {
        pkid = pkid.wrapping_add(1).max(1);
        pkid
    };
    let ack = |p: Option<Packet>, what: &str| -> Result<u16> {
        match p {
            Some(Packet::PubAck(a)) if a.code == ReasonCode::SUCCESS => Ok(a.pkid),
            Some(Packet::PubAck(a)) => {
                bail!("{what}: PUBACK {} {:?}", a.code, a.properties.reason_string)
            }
            other => bail!("{what}: expected PUBACK, got {other:?}"),
        }
    };
    let wait = Duration::from_secs(120);
    tx.write_all(&encode(&publish(
        &topic(FtCommand::Init),
        next_pkid(),
        Bytes::from(meta),
    ))?)
    .await?;
    ack(
        tokio::time::timeout(wait, next_packet(&mut rx, &mut buf, MAX_PACKET))
            .await
            .context("init timeout")??,
        "init",
    )?;
    let seg = s.args.segment.max(1) as usize;
    let mut in_flight = 0usize;
    for off in (0..size).step_by(seg) {
        if in_flight >= s.args.window.max(1) {
            ack(
                tokio::time::timeout(wait, next_packet(&mut rx, &mut buf, MAX_PACKET))
                    .await
                    .context("segment timeout")??,
                "segment",
            )?;
            in_flight -= 1;
        }
        let chunk = s.file.slice(off..(off + seg).min(size));
        tx.write_all(&encode(&publish(
            &topic(FtCommand::Segment {
                offset: off as u64,
                checksum: None,
            }),
            next_pkid(),
            chunk,
        ))?)
        .await?;
        in_flight += 1;
    }
    while in_flight > 0 {
        ack(
            tokio::time::timeout(wait, next_packet(&mut rx, &mut buf, MAX_PACKET))
                .await
                .context("segment timeout")??,
            "segment",
        )?;
        in_flight -= 1;
    }
    let fin = topic(FtCommand::Fin {
        size: size as u64,
        checksum: Some(s.sha),
    });
    tx.write_all(&encode(&publish(&fin, next_pkid(), Bytes::new()))?)
        .await?;
    ack(
        tokio::time::timeout(wait, next_packet(&mut rx, &mut buf, MAX_PACKET))
            .await
            .context("fin timeout")??,
        "fin",
    )?;
    let _ = tx.finish();
    s.totals.uploads_done.fetch_add(1, Ordering::Relaxed);
    Ok(started.elapsed())
}

fn publish(topic: &str, pkid: u16, payload: Bytes) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.to_owned(),
        pkid,
        properties: Properties::default(),
        payload,
    })
}

fn encode(p: &Packet) -> Result<Bytes> {
    let mut b = BytesMut::new();
    p.encode(Protocol::V5, &mut b)?;
    Ok(b.freeze())
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A client endpoint on its own loopback UDP socket with 4 MiB buffers.
fn endpoint() -> Result<quinn::Endpoint> {
    use socket2::{Domain, Protocol as P, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(P::UDP))?;
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    let runtime = quinn::default_runtime().context("no async runtime")?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket.into(),
        runtime,
    )?)
}

/// The shared TLS client with this tool's own transport: 1000 mostly idle devices need a long idle
/// timeout and keep-alives rather than the server's windows.
fn client_config(ca: &Path) -> Result<quinn::ClientConfig> {
    let tls = quic::client_tls(ca)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(Duration::from_secs(120).try_into()?));
    t.keep_alive_interval(Some(Duration::from_secs(10)));
    cfg.transport_config(Arc::new(t));
    Ok(cfg)
}
