//! How the SDK's uploads react to the server's reason codes (DESIGN §2): 0x83 stops with the
//! server's reason, 0x97 backs off and retries, 0x10 starts over from byte 0.

mod sdk;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use quicft_client::{Client, Reconnect, Transport, UploadOptions, UploadState};
use quicft_tests::TestServer;

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
}

#[tokio::test]
async fn quota_0x97_backs_off_until_there_is_room() -> Result<()> {
    let server = TestServer::start_with(|c| c.file_transfer.max_transfers_per_client = 1).await?;
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
        ensure!(std::fs::read(sdk::export_path(server.dir.path(), "quota", &id, name))? == data);
    }
    Ok(())
}

#[tokio::test]
async fn restart_0x10_starts_over_from_zero() -> Result<()> {
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
}
