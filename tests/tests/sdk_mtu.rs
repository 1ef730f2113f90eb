//! Path-MTU discovery on the device SDK's QUIC connection (issue 16): on a path that carries
//! 1500-byte IPv4 packets it reaches 1472 bytes of UDP payload (quinn alone stops at 1452), and on
//! a path with a smaller MTU its probes are lost, it settles below, and the upload still completes.
//!
//! The "path" is a UDP relay on loopback that drops every datagram larger than the path's payload
//! limit in either direction, as a router with that MTU and DF set would (quinn sets DF on its
//! probes; loopback itself carries 64 KiB).

mod sdk;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use quicft_client::{Client, Transport, UploadOptions};
use quicft_tests::{within, TestServer};
use tokio::net::UdpSocket;

/// What the relay saw: the largest datagram it passed each way, and the oversize ones it dropped.
#[derive(Default)]
struct PathStats {
    largest_up: AtomicUsize,
    largest_down: AtomicUsize,
    dropped: AtomicUsize,
}

/// A relay in front of `server` for one client that passes datagrams of at most `max_payload`
/// bytes. Returns the port to connect to.
async fn mtu_path(server: SocketAddr, max_payload: usize) -> Result<(u16, Arc<PathStats>)> {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    back.connect(server).await?;
    let port = front.local_addr()?.port();
    let stats = Arc::new(PathStats::default());
    let (client_tx, mut client_rx) = tokio::sync::watch::channel(None::<SocketAddr>);
    let (f, b, s) = (front.clone(), back.clone(), stats.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok((n, from)) = f.recv_from(&mut buf).await {
            let _ = client_tx.send_replace(Some(from));
            if n > max_payload {
                s.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            s.largest_up.fetch_max(n, Ordering::Relaxed);
            let _ = b.send(&buf[..n]).await;
        }
    });
    let s = stats.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = back.recv(&mut buf).await {
            let Some(to) = *client_rx.borrow_and_update() else {
                continue;
            };
            if n > max_payload {
                s.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            s.largest_down.fetch_max(n, Ordering::Relaxed);
            let _ = front.send_to(&buf[..n], to).await;
        }
    });
    Ok((port, stats))
}

/// Uploads `len` bytes over QUIC through a path of `max_payload`; returns the client's path MTU at
/// the end and the relay's counts. The export must equal the file.
async fn upload_through(
    server: &TestServer,
    max_payload: usize,
    client_id: &str,
    len: usize,
) -> Result<(u16, Arc<PathStats>)> {
    let (port, stats) = mtu_path(server.addr(quicft_tests::Transport::Quic), max_payload).await?;
    let files = tempfile::tempdir()?;
    let (path, data) = sdk::write_file(files.path(), "mtu.bin", len, 16)?;
    let mut o = sdk::options(server, Transport::Quic, client_id);
    // An IPv4 address: the SDK's default bound is the IPv4 one (1472).
    o.host = "127.0.0.1".into();
    o.tls.server_name = Some("localhost".into());
    o.port = Some(port);
    o.reconnect = None;
    let client = Client::connect(o).await?;
    let upload = client
        .upload(path.as_path(), UploadOptions::default())
        .await?;
    let file_id = upload.file_id().to_owned();
    let report = upload.wait().await?;
    ensure!(report.reconnects == 0, "{report:?}");
    let export = sdk::export_path(server.dir.path(), client_id, &file_id, "mtu.bin");
    ensure!(
        std::fs::read(&export).context("export")? == data,
        "export differs"
    );
    let mtu = client.path_mtu().context("no path MTU over QUIC")?;
    client.disconnect().await?;
    Ok((mtu, stats))
}

#[tokio::test]
async fn reaches_1472_bytes_on_a_1500_byte_ipv4_path() -> Result<()> {
    within(Duration::from_secs(120), async {
        let server = TestServer::start().await?;
        let (mtu, stats) = upload_through(&server, 1472, "mtu-1500", 4 << 20).await?;
        let (up, down) = (
            stats.largest_up.load(Ordering::Relaxed),
            stats.largest_down.load(Ordering::Relaxed),
        );
        eprintln!("path MTU {mtu}; largest datagram up {up}, down {down}");
        ensure!(mtu == 1472, "device's path MTU {mtu}, want 1472");
        ensure!(up == 1472, "largest datagram up {up}");
        // The server probes its direction too (its bound on an IPv4 listener is 1472 as well).
        ensure!(down == 1472, "largest datagram down {down}");
        // Neither side probes beyond what a 1500-byte packet carries.
        ensure!(stats.dropped.load(Ordering::Relaxed) == 0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_1400_byte_path_settles_below_and_the_upload_completes() -> Result<()> {
    within(Duration::from_secs(120), async {
        let server = TestServer::start().await?;
        // MTU 1400: 1400 − 20 (IPv4) − 8 (UDP) bytes of payload.
        let limit = 1372;
        let (mtu, stats) = upload_through(&server, limit, "mtu-1400", 4 << 20).await?;
        let dropped = stats.dropped.load(Ordering::Relaxed);
        let up = stats.largest_up.load(Ordering::Relaxed);
        eprintln!("path MTU {mtu}; largest datagram up {up}; oversize dropped {dropped}");
        ensure!(
            (1300..=limit as u16).contains(&mtu),
            "path MTU {mtu} on a {limit}-byte path"
        );
        ensure!(up <= limit && up >= 1300, "largest datagram up {up}");
        // The probes above the limit were tried, and lost.
        ensure!(dropped > 0, "no probe above {limit} was sent");
        Ok(())
    })
    .await
}
