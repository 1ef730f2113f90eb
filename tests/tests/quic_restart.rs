//! A server that crashes and comes back on the same address: its QUIC devices learn at once, from
//! a stateless reset (RFC 9000 §10.3), that their connection is gone, instead of waiting out the
//! idle timeout. That needs the reset key to survive the process (issue 17, 6): it is kept in the
//! data dir.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use quicft_proto::Packet;
use quicft_tests::{connect, ProcessServer, Target, Transport};

const BIN: &str = env!("CARGO_BIN_EXE_quicft-test-server");

/// Kills the server under a connected QUIC client, restarts it on the same address (keeping the
/// reset key or not), and returns how the client's connection ended and how long after its first
/// packet to the new process.
async fn kill_and_restart(keep_key: bool) -> Result<(quinn::ConnectionError, Duration)> {
    let dir = tempfile::tempdir()?;
    let server = ProcessServer::start(BIN, dir.path()).await?;
    let quic = server.addr(Transport::Quic);
    let mut c = connect(&server, Transport::Quic, "reset-me").await?;
    let conn = c.quic.clone().context("a QUIC connection")?;
    server.kill9().await?;
    if !keep_key {
        // What every restart did before the key was kept: a new one.
        std::fs::remove_file(dir.path().join("quic-reset.key"))?;
    }
    let server = ProcessServer::start_with_quic(BIN, dir.path(), Some(quic)).await?;
    let sent = Instant::now();
    c.ctl.send(&Packet::PingReq).await?;
    let err = conn.closed().await;
    let took = sent.elapsed();
    eprintln!("closed: {err:?} after {took:?}");
    // The device reconnects to the new process.
    connect(&server, Transport::Quic, "reset-me").await?;
    Ok((err, took))
}

#[tokio::test]
async fn a_restarted_server_resets_its_quic_devices_at_once() -> Result<()> {
    let (err, took) = tokio::time::timeout(Duration::from_secs(20), kill_and_restart(true))
        .await
        .context("no stateless reset within 20 s: the client waits for its idle timeout")??;
    assert!(matches!(err, quinn::ConnectionError::Reset), "{err:?}");
    eprintln!("connection reset {took:?} after the first packet to the restarted server");
    Ok(())
}

/// The measurement behind the issue note: with and without the kept key.
/// `cargo test -p quicft-tests --test quic_restart -- --ignored --nocapture`
#[tokio::test]
#[ignore = "a measurement; the key-less case waits out the client's idle timeout (30 s)"]
async fn measure_reset_with_and_without_the_kept_key() -> Result<()> {
    for keep in [true, false] {
        let (err, took) = kill_and_restart(keep).await?;
        println!("kept key: {keep}: {err:?} after {took:?}");
    }
    Ok(())
}
