//! Telemetry on the same connection as a bulk upload (DESIGN §3): published every 100 ms on the
//! telemetry channel while a file saturates the connection, it must still arrive promptly. Over QUIC
//! the telemetry stream has a higher priority than the file stream; over TCP the SDK's writer puts
//! it before file segments, so it waits for at most one segment (plus what the socket holds).
//!
//! Bounds are generous on purpose (a shared 2-core machine, debug builds): they catch telemetry
//! queued behind the file (seconds), not milliseconds. `bench/` measures the real figures.

mod sdk;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use quicft_client::{Client, QoS, Transport, UploadOptions};
use quicft_tests::TestServer;

/// Latencies (publish → delivery to another client) of telemetry sent every 100 ms during an
/// upload of `size` bytes over `t`, and the upload's goodput in Mbit/s.
async fn telemetry_during_upload(
    server: &TestServer,
    t: Transport,
    size: usize,
) -> Result<(Vec<Duration>, f64)> {
    let files = tempfile::tempdir()?;
    let (path, _) = sdk::write_file(files.path(), "bulk.bin", size, 99)?;
    let device_id = format!("tele-dev-{t}");
    let device = Client::connect(sdk::options(server, t, &device_id)).await?;
    let watcher = Client::connect(sdk::options(
        server,
        Transport::Quic,
        &format!("tele-watch-{t}"),
    ))
    .await?;
    let topic = format!("fleet/{device_id}/speed");
    let mut sub = watcher.subscribe(topic.as_str(), QoS::AtLeastOnce).await?;
    let sent: Arc<Mutex<HashMap<u32, Instant>>> = Arc::default();

    let upload = device
        .upload(path.as_path(), UploadOptions::default())
        .await?;
    let progress = upload.progress();
    let done = tokio::spawn(upload.wait());
    let publisher = {
        let (device, sent, topic) = (device.clone(), sent.clone(), topic.clone());
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut seq = 0u32;
            // Only while the file is still going, so every sample is one "under load".
            while progress.borrow().bytes_acked < size as u64 {
                tick.tick().await;
                seq += 1;
                sent.lock().expect("lock").insert(seq, Instant::now());
                device
                    .publish(topic.as_str(), seq.to_be_bytes().to_vec(), QoS::AtLeastOnce)
                    .await?;
            }
            anyhow::Ok(seq)
        })
    };
    let mut latencies = Vec::new();
    let receiver = async {
        loop {
            let msg = sub.recv().await?;
            let now = Instant::now();
            let Ok(seq) = <[u8; 4]>::try_from(&msg.payload[..]) else {
                continue;
            };
            if let Some(at) = sent.lock().expect("lock").get(&u32::from_be_bytes(seq)) {
                latencies.push(now - *at);
            }
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    };
    let report = tokio::select! {
        r = done => r??,
        r = receiver => { r?; unreachable!() }
    };
    let published = publisher.await??;
    // The last messages may still be on their way; take what arrived within a second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while latencies.len() < published as usize {
        let Ok(Ok(msg)) = tokio::time::timeout_at(deadline, sub.recv()).await else {
            break;
        };
        let now = Instant::now();
        if let Ok(seq) = <[u8; 4]>::try_from(&msg.payload[..]) {
            if let Some(at) = sent.lock().expect("lock").get(&u32::from_be_bytes(seq)) {
                latencies.push(now - *at);
            }
        }
    }
    ensure!(
        latencies.len() + 1 >= published as usize,
        "{} of {published} telemetry messages arrived",
        latencies.len()
    );
    latencies.sort();
    Ok((latencies, report.goodput_bps / 1e6))
}

fn pct(l: &[Duration], p: usize) -> Duration {
    l.get((l.len() * p / 100).min(l.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_is_not_starved_by_an_upload() -> Result<()> {
    let server = TestServer::start().await?;
    let size = 96 << 20;
    let (quic, goodput) = telemetry_during_upload(&server, Transport::Quic, size).await?;
    eprintln!(
        "quic: {goodput:.0} Mbit/s upload; telemetry p50 {:?} p99 {:?} max {:?} (n={})",
        pct(&quic, 50),
        pct(&quic, 99),
        quic.last().copied().unwrap_or_default(),
        quic.len()
    );
    ensure!(
        quic.len() >= 3,
        "upload too short to sample telemetry: {} samples",
        quic.len()
    );
    // Behind 8 MiB of file data on a stream of equal priority, or a full TCP socket, this is
    // seconds on a loaded machine; on its own stream at higher priority, milliseconds.
    ensure!(
        pct(&quic, 99) < Duration::from_millis(750),
        "quic telemetry p99 {:?}",
        pct(&quic, 99)
    );

    let (tcp, goodput) = telemetry_during_upload(&server, Transport::Tcp, size).await?;
    eprintln!(
        "tcp: {goodput:.0} Mbit/s upload; telemetry p50 {:?} p99 {:?} max {:?} (n={})",
        pct(&tcp, 50),
        pct(&tcp, 99),
        tcp.last().copied().unwrap_or_default(),
        tcp.len()
    );
    ensure!(
        pct(&tcp, 99) < Duration::from_secs(3),
        "tcp telemetry p99 {:?}",
        pct(&tcp, 99)
    );
    Ok(())
}
