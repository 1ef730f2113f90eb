//! Telemetry latency while a file upload saturates the connection, QUIC vs the TLS/TCP fallback,
//! with the device SDK (issue 4, DESIGN §3 and §6).
//!
//! ```text
//! cargo run --release -p quicft-bench --bin telemetry_bench -- [--size 64M] [--transports quic,tls,tcp]
//! # on the weak-link kit: server in qft-srv, this in qft-dev
//! ip netns exec qft-dev target/release/telemetry_bench --server 198.18.0.2 --ca DATA/certs/ca.pem
//! ```
//! For each transport: one SDK client connects, subscribes to its own telemetry topic, measures the
//! idle round trip (publish QoS 1 → the server → delivered back on the telemetry stream), then
//! uploads `--size` bytes with default upload options while publishing a 100-byte telemetry message
//! every `--interval` ms; prints the round trips under load (p50/p90/p99/max) and the goodput.
//! Without `--server` it starts a quicft server in-process on loopback (temp data dir).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use quicft_client::{CaSource, Client, ClientOptions, Congestion, QoS, Transport, UploadOptions};

#[derive(Parser)]
struct Args {
    /// Server host; default: an in-process server on 127.0.0.1.
    #[arg(long)]
    server: Option<String>,
    #[arg(long, default_value_t = 14567)]
    quic_port: u16,
    #[arg(long, default_value_t = 8883)]
    tls_port: u16,
    #[arg(long, default_value_t = 1883)]
    tcp_port: u16,
    /// CA of the server (default: the in-process server's).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Upload size (K, M, G suffixes).
    #[arg(long, default_value = "64M")]
    size: String,
    /// Milliseconds between telemetry messages.
    #[arg(long, default_value_t = 100)]
    interval: u64,
    /// Comma-separated: quic, tls, tcp.
    #[arg(long, default_value = "quic,tls")]
    transports: String,
    /// QUIC congestion controller of the device (bbr, cubic, newreno, delay).
    #[arg(long, default_value = "bbr")]
    congestion: Congestion,
    /// Runs per transport (their samples are pooled).
    #[arg(long, default_value_t = 1)]
    runs: u32,
}

struct Row {
    transport: Transport,
    goodput_mbps: f64,
    idle: Vec<Duration>,
    loaded: Vec<Duration>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let size = usize::try_from(quicft_bench::size::parse_size(&args.size)?)?;
    let tmp = tempfile::tempdir()?;
    let (host, ports, ca, _server) = match &args.server {
        Some(h) => {
            let ca = args.ca.clone().context("--ca is needed with --server")?;
            (
                h.clone(),
                [args.quic_port, args.tls_port, args.tcp_port],
                ca,
                None,
            )
        }
        None => {
            let data = tmp.path().join("server");
            let mut cfg = quicft_server::Config::with_data_dir(data.clone());
            let any: std::net::SocketAddr = "127.0.0.1:0".parse()?;
            cfg.listeners.quic = Some(any);
            cfg.listeners.tcp = Some(any);
            cfg.listeners.tls = Some(any);
            cfg.listeners.ws = None;
            cfg.listeners.wss = None;
            cfg.listeners.http = None;
            cfg.file_transfer.min_free_disk = 0;
            let server = quicft_server::Server::start(cfg).await?;
            let port = |a: Option<std::net::SocketAddr>| a.map_or(0, |a| a.port());
            let ports = [
                port(server.quic_addr),
                port(server.tls_addr),
                port(server.tcp_addr),
            ];
            (
                "127.0.0.1".to_owned(),
                ports,
                data.join("certs/ca.pem"),
                Some(server),
            )
        }
    };
    let file = tmp.path().join("bulk.bin");
    std::fs::write(&file, quicft_bench::ft_load::random_bytes(size, 7))?;

    let mut rows = Vec::new();
    for name in args.transports.split(',') {
        let transport: Transport = name.trim().parse().map_err(anyhow::Error::msg)?;
        let port = match transport {
            Transport::Quic => ports[0],
            Transport::Tls => ports[1],
            Transport::Tcp => ports[2],
        };
        let mut row = Row {
            transport,
            goodput_mbps: 0.0,
            idle: Vec::new(),
            loaded: Vec::new(),
        };
        for run in 0..args.runs {
            let mut o = ClientOptions::new(host.clone(), transport);
            o.port = Some(port);
            o.tls.ca = CaSource::File(ca.clone());
            o.tls.server_name = Some("localhost".into());
            o.client_id = format!("tbench-{transport}-{run}-{}", std::process::id());
            o.quic.congestion = args.congestion.clone();
            let (idle, loaded, mbps) =
                measure(o, &file, Duration::from_millis(args.interval)).await?;
            row.idle.extend(idle);
            row.loaded.extend(loaded);
            row.goodput_mbps += mbps / f64::from(args.runs);
        }
        row.idle.sort();
        row.loaded.sort();
        rows.push(row);
    }

    println!(
        "| transport | goodput Mbit/s | idle p50 ms | loaded p50 | p90 | p99 | max | samples |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            r.transport,
            r.goodput_mbps,
            ms(pct(&r.idle, 50)),
            ms(pct(&r.loaded, 50)),
            ms(pct(&r.loaded, 90)),
            ms(pct(&r.loaded, 99)),
            ms(r.loaded.last().copied().unwrap_or_default()),
            r.loaded.len()
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct(l: &[Duration], p: usize) -> Duration {
    l.get((l.len() * p / 100).min(l.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// Idle round trips, round trips during the upload, goodput in Mbit/s.
async fn measure(
    o: ClientOptions,
    file: &std::path::Path,
    every: Duration,
) -> Result<(Vec<Duration>, Vec<Duration>, f64)> {
    let client = Client::connect(o).await?;
    let topic = format!("bench/{}/telemetry", client.client_id());
    let mut sub = client.subscribe(topic.as_str(), QoS::AtLeastOnce).await?;
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let rtts: Arc<Mutex<Vec<(u64, Duration)>>> = Arc::default();
    let reader = {
        let (sent, rtts) = (sent.clone(), rtts.clone());
        tokio::spawn(async move {
            while let Ok(msg) = sub.recv().await {
                let now = Instant::now();
                let Some(seq) = msg
                    .payload
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                else {
                    continue;
                };
                let seq = u64::from_be_bytes(seq);
                if let Some(at) = sent
                    .lock()
                    .map_err(|_| ())
                    .ok()
                    .and_then(|s| s.get(&seq).copied())
                {
                    if let Ok(mut r) = rtts.lock() {
                        r.push((seq, now - at));
                    }
                }
            }
        })
    };
    let publish = |seq: u64| {
        let (client, sent, topic) = (client.clone(), sent.clone(), topic.clone());
        async move {
            let mut payload = vec![0u8; 100];
            payload[..8].copy_from_slice(&seq.to_be_bytes());
            if let Ok(mut s) = sent.lock() {
                s.insert(seq, Instant::now());
            }
            client
                .publish(topic.as_str(), payload, QoS::AtLeastOnce)
                .await
        }
    };

    // Idle: 20 messages.
    for seq in 0..20u64 {
        publish(seq).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    const LOADED: u64 = 1_000_000;
    let upload = client
        .upload(
            file,
            UploadOptions {
                file_id: Some(format!("b{}", rand_id())),
                ..UploadOptions::default()
            },
        )
        .await?;
    let progress = upload.progress();
    let total = progress.borrow().total.unwrap_or(0);
    let wait = tokio::spawn(upload.wait());
    let mut tick = tokio::time::interval(every);
    let mut seq = LOADED;
    // Publishes run concurrently: a slow acknowledgement must not delay the next message.
    let mut pubs = tokio::task::JoinSet::new();
    while progress.borrow().bytes_acked < total && !wait.is_finished() {
        tick.tick().await;
        pubs.spawn(publish(seq));
        seq += 1;
    }
    let report = wait.await??;
    while let Some(r) = pubs.join_next().await {
        r??;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    reader.abort();
    let rtts = rtts
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let idle: Vec<Duration> = rtts
        .iter()
        .filter(|(s, _)| *s < LOADED)
        .map(|(_, d)| *d)
        .collect();
    let loaded: Vec<Duration> = rtts
        .iter()
        .filter(|(s, _)| *s >= LOADED)
        .map(|(_, d)| *d)
        .collect();
    if loaded.len() + 2 < (seq - LOADED) as usize {
        bail!(
            "only {} of {} telemetry messages came back",
            loaded.len(),
            seq - LOADED
        );
    }
    let _ = client.disconnect().await;
    Ok((idle, loaded, report.goodput_bps / 1e6))
}

fn rand_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
