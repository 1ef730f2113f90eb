//! Mirrored telemetry (quicft_proto::mirror): the SDK sends the telemetry stream's bytes a second
//! time, a gap later, on a stream the server merges with it, so a telemetry message whose packet is
//! lost arrives with its copy instead of after QUIC's loss recovery.
//!
//! Through a UDP proxy with 100 ms each way, every device packet is dropped for 15 ms right when a
//! message is published: the message's own packet is lost, its copy (40 ms later) is not. The same
//! run without the mirror shows what the loss costs otherwise (a probe timeout and a resend, about
//! two more round trips), so the test cannot pass on a path where nothing was lost.

mod sdk;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use quicft_client::{Client, QoS, Transport};
use quicft_tests::{within, TestServer};
use sdk::{shaped, Shape};
use tokio::net::UdpSocket;

const ONE_WAY: Duration = Duration::from_millis(100);
const DROP_FOR: Duration = Duration::from_millis(15);
const GAP: Duration = Duration::from_millis(40);
/// Between the mirrored case (~2 × ONE_WAY + GAP = 240 ms) and the unmirrored one (probe timeout
/// ≥ 1.5 round trips, then the resend's round trip: ≥ 500 ms).
const BOUND: Duration = Duration::from_millis(400);

/// The proxy's two directions: a fixed delay, no rate limit.
const LINK: Shape = Shape {
    rate_bps: 1e12,
    queue: Duration::from_secs(1),
    delay: ONE_WAY,
};

/// A proxy for one device in front of `to` that can drop the device's packets for a while.
struct Proxy {
    port: u16,
    drop_until: Arc<Mutex<Instant>>,
    dropped: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(to: SocketAddr) -> Result<Proxy> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        back.connect(to).await?;
        let port = front.local_addr()?.port();
        let drop_until = Arc::new(Mutex::new(Instant::now()));
        let dropped = Arc::new(AtomicUsize::new(0));
        let (until, count) = (drop_until.clone(), dropped.clone());
        let device: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let device2 = device.clone();
        let (front2, back2) = (front.clone(), back.clone());
        tokio::spawn(async move {
            let up = shaped(LINK, back2, None);
            let mut buf = vec![0u8; 1 << 16];
            while let Ok((n, from)) = front2.recv_from(&mut buf).await {
                if n <= 1 {
                    // The SDK's "is anything listening" probe (a 1-byte datagram from another
                    // socket, see client/src/transport/quic.rs `refused`): not the device's
                    // address, and a server discards it anyway.
                    continue;
                }
                *device2.lock().expect("lock") = Some(from);
                if Instant::now() < *until.lock().expect("lock") {
                    count.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let _ = up.send(buf[..n].to_vec());
            }
        });
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 16];
            let mut down = None;
            while let Ok(n) = back.recv(&mut buf).await {
                let Some(to) = *device.lock().expect("lock") else {
                    continue;
                };
                let tx = down.get_or_insert_with(|| shaped(LINK, front.clone(), Some(to)));
                let _ = tx.send(buf[..n].to_vec());
            }
        });
        Ok(Proxy {
            port,
            drop_until,
            dropped,
        })
    }

    fn drop_for(&self, d: Duration) {
        *self.drop_until.lock().expect("lock") = Instant::now() + d;
    }
}

/// Publish → PUBACK of messages whose packets were dropped (only samples where the proxy dropped
/// something count).
async fn lossy_publishes(mirror: Option<Duration>, id: &str) -> Result<Vec<Duration>> {
    let server = TestServer::start().await?;
    let proxy = Proxy::start(server.addr(quicft_tests::Transport::Quic)).await?;
    let mut o = sdk::options(&server, Transport::Quic, id);
    o.port = Some(proxy.port);
    o.quic.telemetry_mirror = mirror;
    let client = Client::connect(o).await?;
    let topic = format!("fleet/{id}/speed");
    // Opens the telemetry stream (and its mirror) and gives quinn an RTT estimate.
    for _ in 0..4 {
        client
            .publish(topic.as_str(), &b"warm"[..], QoS::AtLeastOnce)
            .await?;
    }
    let mut lossy = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await; // quiet: nothing else in flight
        let before = proxy.dropped.load(Ordering::Relaxed);
        proxy.drop_for(DROP_FOR);
        let start = Instant::now();
        let outcome = client
            .publish(topic.as_str(), &b"sample"[..], QoS::AtLeastOnce)
            .await?;
        ensure!(outcome.is_success(), "publish refused: {outcome:?}");
        if proxy.dropped.load(Ordering::Relaxed) > before {
            lossy.push(start.elapsed());
        }
    }
    client.disconnect().await?;
    lossy.sort();
    eprintln!("mirror {mirror:?}: publish → PUBACK of messages whose packet was lost: {lossy:?}");
    ensure!(
        lossy.len() >= 3,
        "only {} of 5 drop windows caught a packet: nothing was lost",
        lossy.len()
    );
    Ok(lossy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirrored_message_survives_the_loss_of_its_packet() -> Result<()> {
    within(Duration::from_secs(120), async {
        let with = lossy_publishes(Some(GAP), "mirror-on").await?;
        let without = lossy_publishes(None, "mirror-off").await?;
        let median = |l: &[Duration]| l[l.len() / 2];
        ensure!(
            median(&with) < BOUND,
            "with the mirror a lost message still took {:?} (median of {with:?})",
            median(&with)
        );
        ensure!(
            median(&without) > BOUND,
            "without the mirror the lost message took only {:?}: the proxy did not lose it",
            median(&without)
        );
        Ok(())
    })
    .await
}
