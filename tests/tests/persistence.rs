//! Broker state that survives a restart (README "Persistence"): retained messages and the queued
//! QoS 1 messages of an offline persistent session, across SIGTERM and SIGKILL of the server
//! process, seen by paho-mqtt (tests/python/paho_persist.py); and a damaged store file refused at
//! start with a clear message, never a panic.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use quicft_tests::{ProcessServer, Target, Transport};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_quicft-test-server");

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/paho_persist.py")
}

/// Runs the paho script in `mode` against the server's TCP listener; its last JSON line.
async fn paho(server: &ProcessServer, mode: &str, args: &[&str]) -> Result<Value> {
    let port = server.addr(Transport::Tcp).port().to_string();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new("python3")
            .arg(script())
            .args([mode, "127.0.0.1", &port])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("paho timed out")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "paho {mode} failed: {}\nstdout: {stdout}\nstderr: {}\n(python3 with paho-mqtt is installed by `bash .ci/run`)",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("paho output: {stdout}"))
}

fn payloads(v: &Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["payload"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn start(dir: &Path, interval: &str) -> Result<ProcessServer> {
    ProcessServer::start_with_env(
        BIN,
        dir,
        None,
        &[("QUICFT_TEST_PERSIST_INTERVAL", interval)],
    )
    .await
}

/// How the server goes down.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Term,
    /// SIGKILL once the persist interval has passed since the last change.
    Kill,
}

async fn stop(server: ProcessServer, how: Stop) -> Result<()> {
    match how {
        Stop::Term => server.terminate().await,
        Stop::Kill => {
            // The default interval is 1 s: wait past it (and a write) before the crash.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            server.kill9().await
        }
    }
}

/// A retained message and five QoS 1 messages queued for an offline persistent session come
/// back after a restart; the session is present and its subscription still routes.
async fn survives(how: Stop) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tag = format!("{how:?}").to_lowercase();
    let (sub_id, topic, ret_topic) = (
        format!("persist-sub-{tag}"),
        format!("persist/{tag}/q"),
        format!("persist/{tag}/retained"),
    );
    let server = start(dir.path(), "1").await?;
    let v = paho(&server, "subscribe", &[&sub_id, &topic]).await?;
    assert_eq!(v["session_present"], false, "{v}");
    let v = paho(&server, "publish", &[&topic, "5"]).await?;
    assert_eq!(v["acked"], 5, "{v}");
    let v = paho(&server, "publish", &[&ret_topic, "1", "retain"]).await?;
    assert_eq!(v["acked"], 1, "{v}");
    stop(server, how).await?;

    let server = start(dir.path(), "1").await?;
    let v = paho(&server, "retained", &[&ret_topic]).await?;
    assert_eq!(payloads(&v), ["m0"], "retained message after {how:?}: {v}");
    assert_eq!(v["messages"][0]["retain"], true, "{v}");
    let v = paho(&server, "receive", &[&sub_id, "5", "10"]).await?;
    assert_eq!(v["session_present"], true, "session after {how:?}: {v}");
    assert_eq!(
        payloads(&v),
        ["m0", "m1", "m2", "m3", "m4"],
        "queued messages after {how:?}, in order, once: {v}"
    );
    // The restored subscription routes new messages; the delivered ones are not sent again.
    let v = paho(&server, "publish", &[&topic, "1"]).await?;
    assert_eq!(v["acked"], 1, "{v}");
    let v = paho(&server, "receive", &[&sub_id, "1", "10"]).await?;
    assert_eq!(payloads(&v), ["m0"], "only the new message: {v}");
    server.terminate().await
}

#[tokio::test]
async fn retained_and_queued_messages_survive_sigterm() -> Result<()> {
    survives(Stop::Term).await
}

#[tokio::test]
async fn retained_and_queued_messages_survive_sigkill_after_the_interval() -> Result<()> {
    survives(Stop::Kill).await
}

/// With `persist_interval = 0` every message the server acknowledged is on disk: the server is
/// SIGKILLed while a publisher streams QoS 1 messages, and every PUBACKed one reaches the
/// persistent subscriber after the restart.
#[tokio::test]
async fn interval_zero_keeps_every_acknowledged_message_across_sigkill() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (sub_id, topic) = ("persist-sync-sub", "persist/sync/q");
    let server = start(dir.path(), "0").await?;
    paho(&server, "subscribe", &[sub_id, topic]).await?;
    let port = server.addr(Transport::Tcp).port().to_string();
    let mut publisher = Command::new("python3")
        .arg(script())
        .args(["stream", "127.0.0.1", &port, topic, "100000"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(publisher.stdout.take().context("stdout")?).lines();
    let mut acked = 0u64;
    // Kill mid-stream, once a good number of messages have been acknowledged.
    while acked < 150 {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("publisher stalled")??
            .context("publisher ended early")?;
        acked = serde_json::from_str::<Value>(&line)?["acked"]
            .as_u64()
            .context("acked")?;
    }
    server.kill9().await?;
    // Acks that were on their way when the server died count too.
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await
    {
        if let Some(n) = serde_json::from_str::<Value>(&line)?["acked"].as_u64() {
            acked = acked.max(n);
        }
    }
    let _ = publisher.kill().await;

    let server = start(dir.path(), "0").await?;
    let v = paho(&server, "receive", &[sub_id, &acked.to_string(), "20"]).await?;
    let got = payloads(&v);
    // Messages are published one at a time, so acknowledged means m0..m{acked-1}.
    for i in 0..acked {
        assert!(
            got.contains(&format!("m{i}")),
            "acknowledged message m{i} lost ({acked} acked, {} received)",
            got.len()
        );
    }
    server.terminate().await
}

/// A truncated or overwritten store file: the server refuses to start, names the file and says
/// what to do; it does not panic.
#[tokio::test]
async fn damaged_store_is_a_clear_error_not_a_panic() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // A store with something in it.
    let server = start(dir.path(), "1").await?;
    paho(
        &server,
        "subscribe",
        &["persist-damaged", "persist/damaged"],
    )
    .await?;
    paho(&server, "publish", &["persist/damaged/r", "1", "retain"]).await?;
    server.terminate().await?;
    let file = dir.path().join("broker.redb");
    let good = std::fs::read(&file)?;
    assert!(good.len() > 1024, "store written: {} bytes", good.len());

    let mut garbled = good.clone();
    for b in garbled.iter_mut().skip(512).step_by(7) {
        *b ^= 0x5a;
    }
    let cases: [(&str, Vec<u8>); 3] = [
        ("truncated", good[..good.len() / 3].to_vec()),
        ("garbled", garbled),
        ("not a store", b"hello, I am not a database".to_vec()),
    ];
    for (what, bytes) in cases {
        std::fs::write(&file, &bytes)?;
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            Command::new(BIN)
                .arg(dir.path())
                .env("QUICFT_TEST_PERSIST_INTERVAL", "1")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .context("server neither started nor failed")??;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{what}: panic: {stderr}");
        if out.status.success() {
            bail!("{what}: the server started on a damaged store (it should refuse or recover)");
        }
        assert!(
            stderr.contains("broker.redb") && stderr.contains("move the file away"),
            "{what}: the error names the file and what to do: {stderr}"
        );
    }
    Ok(())
}
