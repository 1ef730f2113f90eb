//! Telemetry on the same connection as a bulk upload (DESIGN §3): published every 100 ms on the
//! telemetry channel while a file saturates the link, it must still arrive promptly. Over QUIC
//! the telemetry stream has a higher priority than the file stream and the delay-aware congestion
//! controller keeps the bottleneck queue short; over TCP the SDK's writer puts it before file
//! segments, so it waits for at most one segment (plus what the socket holds).
//!
//! Loopback is not a link anyone saturates (the CPU is the limit there), so the QUIC case runs
//! through a userspace link emulator in this file: the device's packets leave at 20 Mbit/s through
//! a 100 ms drop-tail queue, 10 ms each way. Only telemetry sent while the upload was backlogged
//! (megabytes of file data queued at the sender, far beyond the link's bandwidth-delay product)
//! counts, and the upload must have used most of the link.
//!
//! Bounds are generous on purpose (a shared 2-core machine, debug builds): they catch telemetry
//! queued behind the file (seconds: 8 MiB of window is 3.4 s of this link), not milliseconds.
//! `bench/` measures the real figures.

mod sdk;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use quicft_client::{Client, ClientOptions, QoS, Transport, UploadOptions};
use quicft_tests::{within, TestServer};
use sdk::{link, Shape};

/// File data the sender holds unacknowledged for a telemetry sample to count as "under load":
/// 20 × the emulated link's bandwidth-delay product (50 kB).
const BACKLOG: u64 = 1 << 20;

/// What one run measured.
struct Run {
    /// Publish → delivery to another client, of telemetry sent while the upload was backlogged.
    loaded: Vec<Duration>,
    /// Telemetry messages published during the upload.
    published: usize,
    goodput_mbit: f64,
}

/// Telemetry sent every 100 ms by `device` during an upload of `size` bytes, received by a
/// watcher connected straight to the server.
async fn telemetry_during_upload(
    server: &TestServer,
    device_options: ClientOptions,
    size: usize,
) -> Result<Run> {
    let files = tempfile::tempdir()?;
    let (path, _) = sdk::write_file(files.path(), "bulk.bin", size, 99)?;
    let device_id = device_options.client_id.clone();
    let device = Client::connect(device_options).await?;
    let watcher = Client::connect(sdk::options(
        server,
        Transport::Quic,
        &format!("watch-{device_id}"),
    ))
    .await?;
    let topic = format!("fleet/{device_id}/speed");
    let mut sub = watcher.subscribe(topic.as_str(), QoS::AtLeastOnce).await?;
    // Per message: when it was published and how much file data the sender held unacknowledged.
    let sent: Arc<Mutex<HashMap<u32, (Instant, u64)>>> = Arc::default();

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
                let p = progress.borrow().clone();
                let backlog = p.bytes_sent.saturating_sub(p.bytes_acked);
                sent.lock()
                    .expect("lock")
                    .insert(seq, (Instant::now(), backlog));
                device
                    .publish(topic.as_str(), seq.to_be_bytes().to_vec(), QoS::AtLeastOnce)
                    .await?;
            }
            anyhow::Ok(seq)
        })
    };
    let mut received: Vec<(Duration, u64)> = Vec::new();
    let on_message = |msg: quicft_client::Publish, received: &mut Vec<(Duration, u64)>| {
        let now = Instant::now();
        let Ok(seq) = <[u8; 4]>::try_from(&msg.payload[..]) else {
            return;
        };
        if let Some((at, backlog)) = sent.lock().expect("lock").get(&u32::from_be_bytes(seq)) {
            received.push((now - *at, *backlog));
        }
    };
    let receiver = async {
        loop {
            let msg = sub.recv().await?;
            on_message(msg, &mut received);
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    };
    let report = tokio::select! {
        r = done => r??,
        r = receiver => { r?; unreachable!() }
    };
    let published = publisher.await?? as usize;
    // The last messages may still be on their way; take what arrives within a second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while received.len() < published {
        let Ok(Ok(msg)) = tokio::time::timeout_at(deadline, sub.recv()).await else {
            break;
        };
        on_message(msg, &mut received);
    }
    ensure!(
        received.len() + 1 >= published,
        "{} of {published} telemetry messages arrived",
        received.len()
    );
    let mut loaded: Vec<Duration> = received
        .iter()
        .filter(|(_, backlog)| *backlog >= BACKLOG)
        .map(|(l, _)| *l)
        .collect();
    loaded.sort();
    device.disconnect().await?;
    watcher.disconnect().await?;
    Ok(Run {
        loaded,
        published,
        goodput_mbit: report.goodput_bps / 1e6,
    })
}

fn pct(l: &[Duration], p: usize) -> Duration {
    l.get((l.len() * p / 100).min(l.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn describe(name: &str, r: &Run) -> String {
    format!(
        "{name}: {:.1} Mbit/s upload; telemetry under load p50 {:?} p99 {:?} max {:?} \
         ({} of {} samples backlogged)",
        r.goodput_mbit,
        pct(&r.loaded, 50),
        pct(&r.loaded, 99),
        r.loaded.last().copied().unwrap_or_default(),
        r.loaded.len(),
        r.published
    )
}

/// QUIC through a saturated 20 Mbit/s link, with the SDK's defaults (priorities, delay-aware
/// congestion control, 8 MiB upload window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_is_not_starved_on_a_saturated_quic_link() -> Result<()> {
    within(Duration::from_secs(180), async {
        let server = TestServer::start().await?;
        let rate_mbit = 20.0;
        let up = Shape {
            rate_bps: rate_mbit * 1e6,
            queue: Duration::from_millis(100),
            delay: Duration::from_millis(10),
        };
        let down = Shape {
            rate_bps: 1e9,
            ..up
        };
        let port = link(server.addr(quicft_tests::Transport::Quic), up, down).await?;
        let mut o = sdk::options(&server, Transport::Quic, "tele-quic");
        o.port = Some(port);
        // 8 MiB: 3.4 s of this link, about 30 telemetry samples.
        let run = telemetry_during_upload(&server, o, 8 << 20).await?;
        eprintln!("{}", describe("quic", &run));
        // Saturated: the upload got most of the link (the rest is headers, startup, the tail).
        ensure!(
            run.goodput_mbit > rate_mbit * 0.5,
            "the link was not saturated: {:.1} of {rate_mbit} Mbit/s",
            run.goodput_mbit
        );
        ensure!(
            run.loaded.len() >= 10,
            "only {} of {} telemetry samples were taken with the upload backlogged",
            run.loaded.len(),
            run.published
        );
        // Behind the file's backlog (≥ 1 MiB, 0.4 s of link) it would be far above this.
        ensure!(
            pct(&run.loaded, 99) < Duration::from_millis(500),
            "{}",
            describe("quic", &run)
        );
        Ok(())
    })
    .await
}

/// A TCP forwarder to `to` that reads what devices send at `rate_bps` only, from a socket with a
/// small receive buffer: the kernel's buffers in front of it are the link's queue, as a router's
/// buffer would be.
async fn tcp_link(to: SocketAddr, rate_bps: f64) -> Result<u16> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(64 << 10)?;
    socket.bind("127.0.0.1:0".parse()?)?;
    let listener = socket.listen(16)?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(out) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let (mut in_r, mut in_w) = inbound.into_split();
                let (mut out_r, mut out_w) = out.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut out_r, &mut in_w).await;
                });
                let mut buf = vec![0u8; 8 << 10];
                let mut free_at = tokio::time::Instant::now();
                loop {
                    let n = match in_r.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let now = tokio::time::Instant::now();
                    free_at = free_at.max(now) + Duration::from_secs_f64(n as f64 * 8.0 / rate_bps);
                    tokio::time::sleep_until(free_at).await;
                    if out_w.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

/// TCP through a saturated 20 Mbit/s link: the SDK's writer sends control and telemetry before
/// file segments, in bounded slices, and keeps little unsent in the socket (TCP_NOTSENT_LOWAT);
/// what remains is the one connection's queue in the network, which QUIC's streams do not share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_is_not_starved_on_a_saturated_tcp_link() -> Result<()> {
    within(Duration::from_secs(180), async {
        let server = TestServer::start().await?;
        let rate_mbit = 20.0;
        let port = tcp_link(server.addr(quicft_tests::Transport::Tcp), rate_mbit * 1e6).await?;
        let mut o = sdk::options(&server, Transport::Tcp, "tele-tcp");
        o.port = Some(port);
        let run = telemetry_during_upload(&server, o, 8 << 20).await?;
        eprintln!("{}", describe("tcp", &run));
        ensure!(
            run.goodput_mbit > rate_mbit * 0.5,
            "the link was not saturated: {:.1} of {rate_mbit} Mbit/s",
            run.goodput_mbit
        );
        ensure!(
            run.loaded.len() >= 10,
            "only {} of {} telemetry samples were taken with the upload backlogged",
            run.loaded.len(),
            run.published
        );
        // Behind the file channel's queue (64 segments of 64 KiB) it would be seconds.
        ensure!(
            pct(&run.loaded, 99) < Duration::from_secs(1),
            "{}",
            describe("tcp", &run)
        );
        Ok(())
    })
    .await
}
