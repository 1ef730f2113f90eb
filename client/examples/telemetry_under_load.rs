//! Telemetry latency while a file channel on the same connection publishes bulk data.
//!
//! ```text
//! cargo run --release -p quicft-client --example telemetry_under_load -- [quic|tls|tcp] [HOST:PORT] [SECONDS] [SEGMENT]
//! ```
//! One connection opens a file channel and keeps 8 QoS 1 publishes of SEGMENT bytes in flight to
//! `bulk/…` (nobody subscribes), while it publishes a QoS 1 telemetry message every 50 ms; prints
//! the publish → PUBACK round trip of the telemetry messages and the bulk goodput.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quicft_client::{CaSource, ChannelKind, Client, ClientOptions, QoS, Transport};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let transport: Transport = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("quic")
        .parse()
        .map_err(anyhow::Error::msg)?;
    let server = args.get(2).cloned().unwrap_or_else(|| "localhost".into());
    let seconds: u64 = args.get(3).map_or(Ok(5), |s| s.parse())?;
    let segment: usize = args.get(4).map_or(Ok(256 * 1024), |s| s.parse())?;

    let (host, port) = match server.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().ok()),
        None => (server.clone(), None),
    };
    let mut options = ClientOptions::new(host, transport);
    options.port = port;
    if std::path::Path::new("quicft-data/certs/ca.pem").exists() {
        options.tls.ca = CaSource::File("quicft-data/certs/ca.pem".into());
    }
    let client = Client::connect(options).await?;
    let file = client.open_channel(ChannelKind::File).await?;
    let bytes = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);

    let mut bulk = Vec::new();
    for lane in 0..8 {
        let (file, bytes) = (file.clone(), bytes.clone());
        let payload = bytes::Bytes::from(vec![0u8; segment]);
        bulk.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                file.publish(format!("bulk/{lane}"), payload.clone(), QoS::AtLeastOnce)
                    .await?;
                bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }

    let mut rtts = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while Instant::now() < deadline {
        tick.tick().await;
        let sent = Instant::now();
        client
            .publish("telemetry/speed", "12.5", QoS::AtLeastOnce)
            .await?;
        rtts.push(sent.elapsed());
    }
    for b in bulk {
        b.await??;
    }
    rtts.sort();
    let pct = |p: usize| rtts.get((rtts.len() * p / 100).min(rtts.len().saturating_sub(1)));
    let goodput = bytes.load(Ordering::Relaxed) as f64 * 8.0 / seconds as f64 / 1e6;
    println!(
        "{transport}: bulk {goodput:.0} Mbit/s; telemetry PUBACK rtt p50 {:?} p90 {:?} p99 {:?} max {:?} (n={})",
        pct(50).copied().unwrap_or_default(),
        pct(90).copied().unwrap_or_default(),
        pct(99).copied().unwrap_or_default(),
        rtts.last().copied().unwrap_or_default(),
        rtts.len()
    );
    client.disconnect().await?;
    Ok(())
}
