//! A quicft server for tests that need a separate process (crash tests): every listener on an
//! ephemeral loopback port, data in the directory given, and the bound addresses printed as one JSON
//! line on stdout. Stops on SIGTERM/SIGINT (or dies on SIGKILL, which is the point).
//!
//! Usage: quicft-test-server DATA_DIR [QUIC_ADDR]   (QUIC_ADDR: to come back on a port a killed
//! server had, as a restarted production server does). `QUICFT_TEST_PERSIST_INTERVAL` (seconds)
//! sets `[persistence] persist_interval`; `QUICFT_TEST_EXPORT`: the `[export]` section as JSON.

use anyhow::{Context, Result};

#[tokio::main]
async fn main() -> Result<()> {
    let dir = std::env::args()
        .nth(1)
        .context("usage: quicft-test-server DATA_DIR")?;
    quicft_tests::init_tracing();
    let mut config = quicft_tests::test_config(dir.into());
    if let Some(quic) = std::env::args().nth(2) {
        config.listeners.quic = Some(quic.parse().context("QUIC_ADDR")?);
    }
    if let Ok(s) = std::env::var("QUICFT_TEST_PERSIST_INTERVAL") {
        let secs: f64 = s.parse().context("QUICFT_TEST_PERSIST_INTERVAL")?;
        config.persistence.persist_interval = std::time::Duration::from_secs_f64(secs);
    }
    // The `[export]` section as JSON (tests/tests/s3_export.rs).
    if let Ok(export) = std::env::var("QUICFT_TEST_EXPORT") {
        config.export = serde_json::from_str(&export).context("QUICFT_TEST_EXPORT")?;
    }
    let server = quicft_server::Server::start(config).await?;
    let addrs = serde_json::json!({
        "quic": server.quic_addr.map(|a| a.to_string()),
        "tcp": server.tcp_addr.map(|a| a.to_string()),
        "tls": server.tls_addr.map(|a| a.to_string()),
    });
    println!("{addrs}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    server.shutdown().await;
    Ok(())
}
