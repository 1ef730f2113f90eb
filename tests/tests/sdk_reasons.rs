//! How the SDK's uploads react to the server's reason codes (DESIGN §2): 0x83 stops with the
//! server's reason, 0x97 backs off and retries, 0x10 starts over from byte 0, 0x80 re-sends the
//! segment.

mod sdk;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use quicft_client::{Client, Reconnect, Transport, UploadOptions, UploadState};
use quicft_tests::{within, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn quick_backoff() -> Reconnect {
    Reconnect {
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(400),
        jitter: 0.5,
        max_attempts: None,
    }
}

#[tokio::test]
async fn refusal_0x83_stops_with_the_servers_reason() -> Result<()> {
    within(Duration::from_secs(60), async {
        let server = TestServer::start_with(|c| c.file_transfer.max_file_size = 1 << 20).await?;
        let files = tempfile::tempdir()?;
        let (path, _) = sdk::write_file(files.path(), "too-big.bin", 2 << 20, 1)?;
        let client = Client::connect(sdk::options(&server, Transport::Quic, "refused")).await?;
        let err = client
            .upload(path.as_path(), UploadOptions::default())
            .await?
            .wait()
            .await
            .err()
            .context("an upload over the size limit must fail")?;
        let msg = err.to_string();
        ensure!(msg.contains("0x83") && msg.contains("limit"), "{msg}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn quota_0x97_backs_off_until_there_is_room() -> Result<()> {
    within(Duration::from_secs(120), async {
        let server =
            TestServer::start_with(|c| c.file_transfer.max_transfers_per_client = 1).await?;
        let files = tempfile::tempdir()?;
        let client = Client::connect(sdk::options(&server, Transport::Quic, "quota")).await?;
        let opts = UploadOptions {
            quota_backoff: quick_backoff(),
            window: 256 << 10,
            segment_size: Some(64 << 10),
            ..UploadOptions::default()
        };
        let (p1, d1) = sdk::write_file(files.path(), "one.bin", 6 << 20, 1)?;
        let (p2, d2) = sdk::write_file(files.path(), "two.bin", 1 << 20, 2)?;
        let first = client.upload(p1.as_path(), opts.clone()).await?;
        let mut p = first.progress();
        tokio::time::timeout(Duration::from_secs(20), p.wait_for(|p| p.bytes_acked > 0)).await??;
        // One transfer per client: the second init is answered 0x97 until the first is done.
        let second = client.upload(p2.as_path(), opts).await?;
        let mut p = second.progress();
        tokio::time::timeout(
            Duration::from_secs(20),
            p.wait_for(|p| p.state == UploadState::BackingOff),
        )
        .await
        .context("second upload never backed off")??;
        let (id1, id2) = (first.file_id().to_owned(), second.file_id().to_owned());
        first.wait().await?;
        tokio::time::timeout(Duration::from_secs(30), second.wait()).await??;
        for (id, name, data) in [(id1, "one.bin", d1), (id2, "two.bin", d2)] {
            ensure!(
                std::fs::read(sdk::export_path(server.dir.path(), "quota", &id, name))? == data
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn restart_0x10_starts_over_from_zero() -> Result<()> {
    within(Duration::from_secs(120), async {
        let server = TestServer::start().await?;
        let files = tempfile::tempdir()?;
        let size = 16 << 20;
        let (path, data) = sdk::write_file(files.path(), "again.bin", size, 4)?;
        let client = Client::connect(sdk::options(&server, Transport::Tcp, "restart-0x10")).await?;
        let opts = UploadOptions {
            window: 512 << 10,
            segment_size: Some(64 << 10),
            ..UploadOptions::default()
        };
        let upload = client.upload(path.as_path(), opts).await?;
        let file_id = upload.file_id().to_owned();
        let mut p = upload.progress();
        tokio::time::timeout(
            Duration::from_secs(20),
            p.wait_for(|p| p.bytes_acked >= size as u64 / 4),
        )
        .await??;
        upload.pause();
        tokio::time::timeout(
            Duration::from_secs(10),
            p.wait_for(|p| p.state == UploadState::Paused),
        )
        .await??;
        // Let what was in flight land, then have the server's GC expire the idle transfer (as if the
        // device had been away longer than segments_ttl): it no longer knows it, segments get 0x10.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let held = p.borrow().bytes_acked;
        ensure!(held < size as u64, "upload finished before the pause");
        let far_future = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            + 30 * 24 * 3600;
        server.server.file_transfer().gc_once(far_future).await;
        let status = client.file_status(&file_id).await?;
        ensure!(
            status.reason_code == 0x10,
            "GC kept the transfer: {status:?}"
        );
        upload.resume();
        let report = upload.wait().await?;
        let export = sdk::export_path(server.dir.path(), "restart-0x10", &file_id, "again.bin");
        ensure!(std::fs::read(export)? == data, "export differs");
        // Everything the server had was lost, so it went out again from byte 0.
        ensure!(
            report.bytes_sent >= size as u64 + held,
            "did not start over: {report:?}"
        );
        Ok(())
    })
    .await
}

/// A plain-TCP forwarder to `to` that flips the last byte of the first occurrence of `marker` in
/// what the device sends (once), as a faulty middlebox or a bit error the transport did not catch
/// would. Returns its port and the number of bytes it corrupted.
async fn corrupting_proxy(
    to: std::net::SocketAddr,
    marker: Vec<u8>,
) -> Result<(u16, Arc<AtomicUsize>)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    let corrupted = Arc::new(AtomicUsize::new(0));
    let count = corrupted.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = l.accept().await {
            let count = count.clone();
            let marker = marker.clone();
            tokio::spawn(async move {
                let Ok(out) = TcpStream::connect(to).await else {
                    return;
                };
                let (mut in_r, mut in_w) = inbound.into_split();
                let (mut out_r, mut out_w) = out.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut out_r, &mut in_w).await;
                });
                // The last `marker.len() - 1` bytes already forwarded, so that a marker split
                // across two reads is found too (its last byte is always in the current read).
                let mut tail: Vec<u8> = Vec::new();
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = match in_r.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let chunk = &mut buf[..n];
                    if count.load(Ordering::SeqCst) == 0 {
                        let mut hay = tail.clone();
                        hay.extend_from_slice(chunk);
                        if let Some(at) = hay.windows(marker.len()).position(|w| w == marker) {
                            let last = at + marker.len() - 1 - tail.len();
                            chunk[last] ^= 0x5a;
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        let keep = hay.len().min(marker.len() - 1);
                        tail = hay[hay.len() - keep..].to_vec();
                    }
                    if out_w.write_all(chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((port, corrupted))
}

/// A segment whose bytes do not match the SHA-256 in its topic is answered 0x80 (retransmit): the
/// SDK sends that segment again, only that one, on the same connection, and the file arrives
/// byte-identical.
#[tokio::test]
async fn retransmit_0x80_resends_the_segment() -> Result<()> {
    within(Duration::from_secs(120), async {
        let server = TestServer::start().await?;
        let files = tempfile::tempdir()?;
        let size = 2 << 20;
        let segment = 64 << 10;
        let (path, data) = sdk::write_file(files.path(), "flipped.bin", size, 80)?;
        // 32 bytes in the middle of the 11th segment (pseudo-random content: unique in the file).
        let at = 10 * segment + 4000;
        let (port, corrupted) = corrupting_proxy(
            server.addr(quicft_tests::Transport::Tcp),
            data[at..at + 32].to_vec(),
        )
        .await?;
        let mut o = sdk::options(&server, Transport::Tcp, "flipped");
        o.port = Some(port);
        let client = Client::connect(o).await?;
        let opts = UploadOptions {
            segment_size: Some(segment),
            window: 512 << 10,
            segment_checksums: true,
            ..UploadOptions::default()
        };
        let upload = client.upload(path.as_path(), opts).await?;
        let file_id = upload.file_id().to_owned();
        let report = upload.wait().await?;
        ensure!(
            corrupted.load(Ordering::SeqCst) == 1,
            "the proxy never saw the marker"
        );
        let export = sdk::export_path(server.dir.path(), "flipped", &file_id, "flipped.bin");
        ensure!(std::fs::read(export)? == data, "export differs");
        // Exactly the refused segment went twice, without any reconnect.
        ensure!(
            report.reconnects == 0 && client.reconnects() == 0,
            "the corruption cost a connection: {report:?}"
        );
        ensure!(
            report.bytes_resent == segment as u64
                && report.bytes_sent == size as u64 + segment as u64,
            "expected one re-sent segment: {report:?}"
        );
        Ok(())
    })
    .await
}
