//! The SDK's congestion controller choice reaches quinn: an upload over QUIC with quicft's
//! delay-aware controller (`Congestion::Delay`, quicft-congestion) completes byte-identical, and the
//! name parses as the CLI's `--congestion delay` does. Its behaviour on lossy links is measured in
//! bench/CC.md and simulated in congestion/src/tests.rs.

mod sdk;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use quicft_client::{Client, Congestion, Transport, UploadOptions};

use quicft_tests::ft::sha256_hex;
use quicft_tests::{within, TestServer};

#[tokio::test]
async fn upload_with_the_delay_aware_controller() -> Result<()> {
    within(Duration::from_secs(120), async {
        let server = TestServer::start().await?;
        let files = tempfile::tempdir()?;
        let (path, data) = sdk::write_file(files.path(), "cc.bin", 4 << 20, 7)?;
        let mut options = sdk::options(&server, Transport::Quic, "dev-cc");
        options.quic.congestion = "delay".parse::<Congestion>().map_err(anyhow::Error::msg)?;
        ensure!(matches!(options.quic.congestion, Congestion::Delay));
        let client = Client::connect(options).await?;
        let upload = client
            .upload(path.as_path(), UploadOptions::default())
            .await?;
        let file_id = upload.file_id().to_owned();
        let report = upload.wait().await?;
        ensure!(
            report.bytes == data.len() as u64 && report.transport == Transport::Quic,
            "{report:?}"
        );
        ensure!(report.sha256 == sha256_hex(&data));
        let export = sdk::export_path(server.dir.path(), "dev-cc", &file_id, "cc.bin");
        ensure!(
            std::fs::read(&export).context("export")? == data,
            "export differs"
        );
        client.disconnect().await?;
        Ok(())
    })
    .await
}
