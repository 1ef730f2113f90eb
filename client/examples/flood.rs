//! Pipelined publishing on one connection, received back on a second one.
//!
//! ```text
//! cargo run --release -p quicft-client --example flood -- [tcp|tls|quic] [HOST:PORT] [COUNT] [QOS] [SIZE]
//! ```
//! Publishes COUNT messages of SIZE bytes concurrently (bounded by the server's Receive Maximum),
//! waits until the subscriber has all of them, and prints the rates.

use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use quicft_client::{CaSource, Client, ClientOptions, QoS, Transport};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let transport: Transport = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("tcp")
        .parse()
        .map_err(anyhow::Error::msg)?;
    let server = args.get(2).cloned().unwrap_or_else(|| "127.0.0.1".into());
    let count: usize = args.get(3).map_or(Ok(10_000), |s| s.parse())?;
    let qos = QoS::from_u8(args.get(4).map_or(Ok(1), |s| s.parse())?).unwrap_or(QoS::AtLeastOnce);
    let size: usize = args.get(5).map_or(Ok(1024), |s| s.parse())?;

    let options = || {
        let (host, port) = match server.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()),
            None => (server.clone(), None),
        };
        let mut o = ClientOptions::new(host, transport);
        o.port = port;
        if std::path::Path::new("quicft-data/certs/ca.pem").exists() {
            o.tls.ca = CaSource::File("quicft-data/certs/ca.pem".into());
        }
        o
    };
    let subscriber = Client::connect(options()).await?;
    let mut sub = subscriber.subscribe("flood/#", qos).await?;
    let publisher = Client::connect(options()).await?;
    println!(
        "connected over {transport}, receive maximum {}",
        publisher.info().receive_maximum
    );

    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let start = Instant::now();
    let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let got2 = got.clone();
    let mut receiver = tokio::spawn(async move {
        for _ in 0..count {
            sub.recv().await?;
            got2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        anyhow::Ok(Instant::now())
    });
    let mut flows: FuturesUnordered<_> = (0..count)
        .map(|i| {
            let publisher = publisher.clone();
            let payload = payload.clone();
            async move {
                publisher
                    .publish(format!("flood/{}", i % 16), payload, qos)
                    .await
            }
        })
        .collect();
    let mut refused = 0usize;
    let mut acked_n = 0usize;
    let mut last = Instant::now();
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), flows.next()).await;
        match next {
            Ok(Some(outcome)) => {
                acked_n += 1;
                if !outcome?.is_success() {
                    refused += 1;
                }
            }
            Ok(None) => break,
            Err(_) => {
                let g = got.load(std::sync::atomic::Ordering::Relaxed);
                eprintln!(
                    "stalled: {acked_n} acked, {g} received after {:?}",
                    last.elapsed()
                );
                last = Instant::now();
            }
        }
    }
    let acked = start.elapsed();
    let received = match tokio::time::timeout(std::time::Duration::from_secs(10), &mut receiver)
        .await
    {
        Ok(r) => r??.duration_since(start),
        Err(_) => {
            // A server with bounded session queues drops what a slow subscriber cannot take.
            let g = got.load(std::sync::atomic::Ordering::Relaxed);
            anyhow::bail!("receiving stalled: {g} of {count} received (dropped by the server?)");
        }
    };
    let rate = |d: std::time::Duration| count as f64 / d.as_secs_f64();
    println!(
        "{count} x {size} B at {qos:?}: all acked in {acked:.2?} ({:.0} msg/s), all received in {received:.2?} ({:.0} msg/s), {refused} refused",
        rate(acked),
        rate(received)
    );
    publisher.disconnect().await?;
    subscriber.disconnect().await?;
    Ok(())
}
