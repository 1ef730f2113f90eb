//! The SDK's download of a delivery (`Client::download`, issue 14): over QUIC and TCP, verified
//! and renamed into place, reported to the server; resumed from the partial file after the
//! downloading process dies mid-way (a device reboot) and across a server restart.

mod sdk;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use quicft_client::{Client, DownloadOptions, Transport};
use quicft_server::delivery::{DeviceState, NewDelivery, Targets};
use quicft_tests::ft::{content, sha256_hex};

async fn deliver(srv: &sdk::Restartable, data: &[u8], targets: &str) -> Result<String> {
    let server = srv.server().context("server")?;
    let body = futures::stream::iter(
        data.chunks(100_000)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let r = server
        .deliveries()
        .create(
            NewDelivery {
                name: "model.bin".into(),
                version: "3".into(),
                targets: Targets::parse(targets)?,
                expires_at: None,
                sha256: None,
            },
            body,
        )
        .await?;
    Ok(r.id)
}

async fn state_of(srv: &sdk::Restartable, id: &str, client: &str) -> Option<DeviceState> {
    for _ in 0..100 {
        let s = srv
            .server()
            .and_then(|s| s.deliveries().get(id))
            .and_then(|r| r.devices.get(client).map(|p| p.state));
        if s == Some(DeviceState::Verified) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    srv.server()
        .and_then(|s| s.deliveries().get(id))
        .and_then(|r| r.devices.get(client).map(|p| p.state))
}

/// 4 KiB blocks (many round trips), quick retries.
fn small_blocks(progress: Option<Arc<dyn Fn(u64, u64) + Send + Sync>>) -> DownloadOptions {
    DownloadOptions {
        block_size: 4096,
        request_timeout: Duration::from_secs(2),
        on_progress: progress,
        ..DownloadOptions::default()
    }
}

type DownloadTask = tokio::task::JoinHandle<quicft_client::Result<quicft_client::DownloadReport>>;

/// Starts a download in a task and returns it once `bytes` of the file have arrived.
async fn download_until(
    client: &Client,
    id: &str,
    out: &std::path::Path,
    bytes: u64,
) -> Result<DownloadTask> {
    let done = Arc::new(AtomicU64::new(0));
    let seen = done.clone();
    let (client, out, id) = (client.clone(), out.to_owned(), id.to_owned());
    let opts = small_blocks(Some(Arc::new(move |d, _| seen.store(d, Ordering::Relaxed))));
    let task = tokio::spawn(async move { client.download(&id, &out, opts).await });
    while done.load(Ordering::Relaxed) < bytes {
        ensure!(!task.is_finished(), "finished before {bytes} bytes arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(task)
}

#[tokio::test]
async fn sdk_downloads_over_quic_and_tcp_and_reports_verified() -> Result<()> {
    let srv = sdk::Restartable::start().await?;
    let data = content((1 << 20) + 123, 7);
    let id = deliver(&srv, &data, "sdk-*").await?;
    for (transport, who) in [(Transport::Quic, "sdk-quic"), (Transport::Tcp, "sdk-tcp")] {
        let client = Client::connect(sdk::options(&srv, transport, who)).await?;
        let out = srv.dir.path().join(format!("{who}.bin"));
        let r = client
            .download(&id, &out, DownloadOptions::default())
            .await?;
        ensure!(std::fs::read(&out)? == data, "{who}: file differs");
        assert_eq!(r.sha256, sha256_hex(&data));
        assert_eq!(
            (r.size, r.bytes_fetched, r.resumed_bytes),
            (data.len() as u64, data.len() as u64, 0)
        );
        assert!(
            !out.with_extension("bin.part").exists(),
            "partial file renamed away"
        );
        assert_eq!(
            state_of(&srv, &id, who).await,
            Some(DeviceState::Verified),
            "{who}"
        );
        client.disconnect().await?;
    }
    // Not targeted: the server's error, no file.
    let client = Client::connect(sdk::options(&srv, Transport::Quic, "other-dev")).await?;
    let out = srv.dir.path().join("other.bin");
    let e = client
        .download(&id, &out, DownloadOptions::default())
        .await
        .expect_err("not targeted");
    assert!(e.to_string().contains("Unauthorized"), "{e}");
    let e = client
        .download("0000000000000000", &out, DownloadOptions::default())
        .await
        .expect_err("unknown");
    assert!(e.to_string().contains("ResourceNotFound"), "{e}");
    assert!(!out.exists());
    Ok(())
}

/// The process dies half-way (the download future is dropped, as in a reboot); the next run asks
/// only for what the partial file lacks. Then a server restart in the middle of a download.
#[tokio::test]
async fn sdk_download_resumes_after_a_reboot_and_a_server_restart() -> Result<()> {
    let mut srv = sdk::Restartable::start().await?;
    let data = content(2 << 20, 8);
    let id = deliver(&srv, &data, "rebooter").await?;
    let out = srv.dir.path().join("fw.bin");
    // 1. Killed past the half.
    let client = Client::connect(sdk::options(&srv, Transport::Quic, "rebooter")).await?;
    let task = download_until(&client, &id, &out, data.len() as u64 / 2).await?;
    task.abort();
    let _ = task.await;
    client.disconnect().await?;
    drop(client);
    let part = srv.dir.path().join("fw.bin.part");
    ensure!(part.exists() && !out.exists(), "a partial file is left");

    let client = Client::connect(sdk::options(&srv, Transport::Tcp, "rebooter")).await?;
    let r = client.download(&id, &out, small_blocks(None)).await?;
    ensure!(std::fs::read(&out)? == data, "resumed file differs");
    assert!(r.resumed_bytes > 0, "{r:?}");
    assert!(
        r.bytes_fetched + r.resumed_bytes <= data.len() as u64 + 64 * 4096,
        "only the missing blocks were fetched again: {r:?}"
    );
    client.disconnect().await?;
    std::fs::remove_file(&out)?;

    // 2. The server restarts in the middle: the client reconnects and the download completes.
    let client = Client::connect(sdk::options(&srv, Transport::Quic, "rebooter")).await?;
    let task = download_until(&client, &id, &out, data.len() as u64 / 3).await?;
    srv.restart().await?;
    let r = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .context("download did not finish after the restart")???;
    ensure!(
        std::fs::read(&out)? == data,
        "file differs after the restart"
    );
    assert_eq!(r.sha256, sha256_hex(&data));
    client.disconnect().await?;
    Ok(())
}
