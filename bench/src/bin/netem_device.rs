//! The device side of `bench/netem.sh run`: one upload with the device SDK while the same connection
//! publishes telemetry, or telemetry alone beside another uploader (curl), printed as one JSON line.
//!
//! ```text
//! netem_device upload FILE --server 198.18.0.2 --port 14567 --transport quic --ca CA [--congestion delay]
//! netem_device telemetry --server 198.18.0.2 --port 14567 --ca CA --ready-file F   # SIGUSR1 marks the
//!                                           # start of the other upload, SIGTERM ends the run
//! ```
//!
//! Telemetry is what a device sends while it uploads: a 100-byte QoS 1 PUBLISH every `--interval`
//! ms on the SDK's telemetry channel; its latency is publish → PUBACK as the device sees it (one
//! round trip plus whatever queue the message waits in). A message is counted as "during the
//! upload" when it was published between the upload's start and its end; the PUBACKs of the last
//! ones are awaited (up to `--drain` s) after the upload ends. `idle` is the same latency before
//! the upload, at a 50 ms spacing.
//!
//! The quicft CLI (`quicft upload --json`) uploads but cannot publish at the same time on its
//! connection, hence this program (bench/NETEM.md).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use quicft_client::{CaSource, Client, ClientOptions, Congestion, QoS, Transport, UploadOptions};
use serde::Serialize;
use tokio::task::JoinSet;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Upload FILE on one connection, publishing telemetry on the same connection meanwhile.
    Upload {
        file: PathBuf,
        /// Once connected and idle samples are taken, write this file and start the upload only on
        /// SIGUSR1 (so that run.sh can restart the link's clock first).
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Segment size (K, M suffixes); default: the SDK's (256 KiB QUIC, 64 KiB TLS/TCP).
        #[arg(long)]
        segment_size: Option<String>,
    },
    /// Telemetry only (over --transport, QUIC by default), for an upload made by another program.
    /// Writes --ready-file once connected and idle samples are taken; SIGUSR1 marks the start of
    /// the other upload, SIGTERM (or SIGINT) its end: then prints the JSON line and exits.
    Telemetry {
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
}

#[derive(Args)]
struct Conn {
    #[arg(long, global = true, default_value = "198.18.0.2")]
    server: String,
    /// Server port (default: the transport's, 14567 QUIC, 8883 TLS).
    #[arg(long, global = true)]
    port: Option<u16>,
    #[arg(long, global = true, default_value = "quic")]
    transport: Transport,
    /// CA certificate (PEM) of the server.
    /// (Required; not marked so, since clap cannot require a global argument.)
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Name the server certificate carries (the dev certificate has `localhost`).
    #[arg(long, global = true, default_value = "localhost")]
    server_name: String,
    /// The device's QUIC congestion controller: bbr, cubic, newreno, delay, or delay-10s (delay
    /// with its min-RTT probe every 10 s on any path, as before issue 16).
    #[arg(long, global = true, default_value = "delay")]
    congestion: String,
    #[arg(long, global = true)]
    client_id: Option<String>,
    /// Minimum gap (ms) of the telemetry mirror (the SDK's second copy of the telemetry stream,
    /// QuicOptions::telemetry_mirror); 0 turns it off.
    #[arg(long, global = true, default_value_t = 5)]
    mirror_ms: u64,
    /// Upper bound of the device's path-MTU search in bytes of UDP payload
    /// (QuicOptions::mtu_upper_bound); default: the SDK's (1472 to an IPv4 server).
    #[arg(long, global = true)]
    mtu_upper_bound: Option<u16>,
    /// Milliseconds between telemetry messages.
    #[arg(long, global = true, default_value_t = 100)]
    interval: u64,
    /// Telemetry payload bytes.
    #[arg(long, global = true, default_value_t = 100)]
    payload: usize,
    /// Seconds to wait for the PUBACKs still missing when the upload ends.
    #[arg(long, global = true, default_value_t = 15)]
    drain: u64,
}

#[derive(Serialize, Default)]
struct Telemetry {
    /// How the latency is measured and where the messages travel.
    measure: &'static str,
    connection: &'static str,
    transport: String,
    /// Minimum gap of the telemetry mirror, QUIC only (None: no mirror).
    mirror_ms: Option<u64>,
    qos: u8,
    interval_ms: u64,
    payload_bytes: usize,
    idle_p50_ms: Option<f64>,
    /// Messages published during the upload, and how many of them were acknowledged.
    sent: usize,
    acked: usize,
    failed: usize,
    p50_ms: Option<f64>,
    p90_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    /// Every message of the upload in send order: [seconds since the upload started, ms to its
    /// PUBACK or null], to see when the slow ones were sent (start-up, a capacity dip, a loss).
    samples: Vec<(f64, Option<f64>)>,
}

#[derive(Serialize)]
struct UploadLine {
    tool: &'static str,
    transport: String,
    device_cc: String,
    bytes: u64,
    /// Wall time of `Client::upload` → `Upload::wait` (connection already up, as on a device).
    seconds: f64,
    goodput_mbit: f64,
    /// The SDK's own figures (its clock starts inside `upload`).
    sdk_seconds: f64,
    reconnects: u32,
    bytes_sent: u64,
    /// File bytes sent again by the SDK after reconnects (transport-level retransmissions are not
    /// counted here; run.sh adds the link's own byte count).
    bytes_resent: u64,
    connect_s: f64,
    start_unix_ns: u128,
    /// The path-MTU search's bound asked for (None: the SDK's default) and the largest UDP payload
    /// the path carried at the upload's end (QUIC only).
    mtu_upper_bound: Option<u16>,
    path_mtu: Option<u16>,
    telemetry: Telemetry,
}

#[derive(Serialize)]
struct TelemetryLine {
    tool: &'static str,
    transport: String,
    device_cc: String,
    connect_s: f64,
    start_unix_ns: Option<u128>,
    telemetry: Telemetry,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match cli.command {
            Cmd::Upload {
                file,
                ready_file,
                segment_size,
            } => upload(&cli.conn, file, ready_file, segment_size).await,
            Cmd::Telemetry { ready_file } => telemetry_only(&cli.conn, ready_file).await,
        }
    })
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

async fn connect(c: &Conn) -> Result<(Client, f64)> {
    let mut o = ClientOptions::new(c.server.clone(), c.transport);
    o.port = c.port;
    o.tls.ca = CaSource::File(c.ca.clone().context("--ca is required")?);
    o.tls.server_name = Some(c.server_name.clone());
    o.client_id = c
        .client_id
        .clone()
        .unwrap_or_else(|| format!("netem-{}-{}", c.transport, std::process::id()));
    o.quic.congestion = match c.congestion.as_str() {
        // DelayBbr with the min-RTT probe every 10 s whatever the RTT (before issue 16), for A/B
        // runs against the default in one build.
        "delay-10s" => Congestion::Custom(std::sync::Arc::new(quicft_congestion::DelayBbrConfig {
            min_rtt_window_rtts: 0.0,
            ..Default::default()
        })),
        other => other.parse::<Congestion>().map_err(anyhow::Error::msg)?,
    };
    o.quic.telemetry_mirror = Some(Duration::from_millis(c.mirror_ms)).filter(|d| !d.is_zero());
    o.quic.mtu_upper_bound = c.mtu_upper_bound;
    o.connect_timeout = Duration::from_secs(15);
    let t = Instant::now();
    let client = Client::connect(o)
        .await
        .with_context(|| format!("cannot connect to {} over {}", c.server, c.transport))?;
    Ok((client, t.elapsed().as_secs_f64()))
}

/// One telemetry message's fate: published at `at`, acknowledged after `rtt` (None: failed).
type Sample = (Instant, Option<Duration>);

/// Publishes one QoS 1 message and times it to its PUBACK.
async fn publish_one(client: Client, topic: String, payload: usize, seq: u64) -> Sample {
    let mut body = vec![0u8; payload.max(8)];
    body[..8].copy_from_slice(&seq.to_be_bytes());
    let at = Instant::now();
    let ok = matches!(
        client.publish(topic.as_str(), body, QoS::AtLeastOnce).await,
        Ok(o) if o.is_success()
    );
    (at, ok.then(|| at.elapsed()))
}

/// Base latency: `n` messages one at a time, 50 ms apart.
async fn idle_p50(client: &Client, topic: &str, payload: usize, n: u64) -> Option<f64> {
    let mut v = Vec::new();
    for seq in 0..n {
        if let (_, Some(d)) = publish_one(client.clone(), topic.to_owned(), payload, seq).await {
            v.push(d);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    v.sort();
    pct_ms(&v, 0.5)
}

/// Nearest-rank percentile in ms.
fn pct_ms(sorted: &[Duration], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).map(|d| d.as_secs_f64() * 1e3)
}

/// Waits for the publishes still running (up to `drain`) and summarises those sent in
/// `[from, to]`.
async fn summarise(
    mut pubs: JoinSet<Sample>,
    mut done: Vec<Sample>,
    from: Instant,
    to: Instant,
    drain: Duration,
    mut t: Telemetry,
) -> Telemetry {
    let deadline = tokio::time::Instant::now() + drain;
    while !pubs.is_empty() {
        match tokio::time::timeout_at(deadline, pubs.join_next()).await {
            Ok(Some(Ok(s))) => done.push(s),
            Ok(Some(Err(_))) => {}
            Ok(None) | Err(_) => break,
        }
    }
    // Whatever is still running now never got its PUBACK in time: sent, not acked.
    let unanswered: Vec<Sample> = std::iter::repeat_n((from, None), pubs.len()).collect();
    pubs.abort_all();
    let during: Vec<&Sample> = done
        .iter()
        .chain(unanswered.iter())
        .filter(|(at, _)| *at >= from && *at <= to)
        .collect();
    let mut in_order = during.clone();
    in_order.sort_by_key(|(at, _)| *at);
    t.samples = in_order
        .iter()
        .map(|(at, d)| {
            let since = at.saturating_duration_since(from).as_secs_f64();
            let ms = d.map(|d| (d.as_secs_f64() * 1e4).round() / 10.0);
            ((since * 1e3).round() / 1e3, ms)
        })
        .collect();
    let mut lat: Vec<Duration> = during.iter().filter_map(|(_, d)| *d).collect();
    lat.sort();
    t.sent = during.len();
    t.acked = lat.len();
    t.failed = t.sent - t.acked;
    t.p50_ms = pct_ms(&lat, 0.5);
    t.p90_ms = pct_ms(&lat, 0.9);
    t.p99_ms = pct_ms(&lat, 0.99);
    t.max_ms = lat.last().map(|d| d.as_secs_f64() * 1e3);
    t
}

fn telemetry_header(c: &Conn, connection: &'static str) -> Telemetry {
    Telemetry {
        measure: "publish→PUBACK",
        connection,
        transport: c.transport.to_string(),
        mirror_ms: Some(c.mirror_ms).filter(|m| *m > 0 && c.transport == Transport::Quic),
        qos: 1,
        interval_ms: c.interval,
        payload_bytes: c.payload,
        ..Telemetry::default()
    }
}

async fn upload(
    c: &Conn,
    file: PathBuf,
    ready_file: Option<PathBuf>,
    segment_size: Option<String>,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let (client, connect_s) = connect(c).await?;
    let topic = format!("bench/{}/telemetry", client.client_id());
    let mut tele = telemetry_header(c, "same connection as the upload");
    tele.idle_p50_ms = idle_p50(&client, &topic, c.payload, 10).await;
    let segment_size = match segment_size {
        Some(s) => Some(usize::try_from(quicft_bench::size::parse_size(&s)?)?),
        None => None,
    };
    let opts = UploadOptions {
        file_id: Some(format!("netem-{}-{}", std::process::id(), unix_ns())),
        segment_size,
        ..UploadOptions::default()
    };
    if let Some(f) = &ready_file {
        std::fs::write(f, b"ready\n").with_context(|| format!("cannot write {}", f.display()))?;
        tokio::time::timeout(Duration::from_secs(120), usr1.recv())
            .await
            .context("no SIGUSR1 within 120 s")?;
    }
    let start_unix_ns = unix_ns();
    let start = Instant::now();
    let up = client.upload(file.as_path(), opts).await?;
    let mut wait = tokio::spawn(up.wait());
    let mut tick = tokio::time::interval(Duration::from_millis(c.interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pubs = JoinSet::new();
    let mut done = Vec::new();
    let mut seq = 1_000_000u64;
    let report = loop {
        tokio::select! {
            r = &mut wait => break r,
            _ = tick.tick() => {
                pubs.spawn(publish_one(client.clone(), topic.clone(), c.payload, seq));
                seq += 1;
            }
            Some(Ok(s)) = pubs.join_next(), if !pubs.is_empty() => done.push(s),
        }
    };
    let end = Instant::now();
    let path_mtu = client.path_mtu();
    let seconds = (end - start).as_secs_f64();
    let report = report.context("upload task panicked")??;
    let telemetry = summarise(pubs, done, start, end, Duration::from_secs(c.drain), tele).await;
    let line = UploadLine {
        tool: "netem_device",
        transport: report.transport.to_string(),
        device_cc: c.congestion.clone(),
        bytes: report.bytes,
        seconds,
        goodput_mbit: report.bytes as f64 * 8.0 / seconds / 1e6,
        sdk_seconds: report.seconds,
        reconnects: report.reconnects,
        bytes_sent: report.bytes_sent,
        bytes_resent: report.bytes_resent,
        connect_s,
        start_unix_ns,
        mtu_upper_bound: c.mtu_upper_bound,
        path_mtu,
        telemetry,
    };
    emit(&line, client).await
}

async fn telemetry_only(c: &Conn, ready_file: Option<PathBuf>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (client, connect_s) = connect(c).await?;
    let topic = format!("bench/{}/telemetry", client.client_id());
    let mut tele = telemetry_header(c, "own connection beside the upload");
    tele.idle_p50_ms = idle_p50(&client, &topic, c.payload, 10).await;
    if let Some(f) = &ready_file {
        std::fs::write(f, b"ready\n").with_context(|| format!("cannot write {}", f.display()))?;
    }
    let started = Arc::new(AtomicBool::new(false));
    let mut from = None;
    let mut start_unix_ns = None;
    let mut tick = tokio::time::interval(Duration::from_millis(c.interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pubs = JoinSet::new();
    let mut done = Vec::new();
    let mut seq = 1_000_000u64;
    loop {
        tokio::select! {
            _ = usr1.recv() => {
                if !started.swap(true, Ordering::Relaxed) {
                    from = Some(Instant::now());
                    start_unix_ns = Some(unix_ns());
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                pubs.spawn(publish_one(client.clone(), topic.clone(), c.payload, seq));
                seq += 1;
            }
            Some(Ok(s)) = pubs.join_next(), if !pubs.is_empty() => done.push(s),
        }
    }
    let end = Instant::now();
    // Without SIGUSR1 the whole run counts.
    let from = from.unwrap_or(end - Duration::from_secs(3600));
    let telemetry = summarise(pubs, done, from, end, Duration::from_secs(c.drain), tele).await;
    let line = TelemetryLine {
        tool: "netem_device",
        transport: c.transport.to_string(),
        device_cc: c.congestion.clone(),
        connect_s,
        start_unix_ns,
        telemetry,
    };
    emit(&line, client).await
}

/// Prints the run's JSON line, then says goodbye to the server (briefly: the figures are out).
async fn emit(line: &impl Serialize, client: Client) -> Result<()> {
    println!("{}", serde_json::to_string(line)?);
    let _ = tokio::time::timeout(Duration::from_secs(3), client.disconnect()).await;
    Ok(())
}
