//! The device example of the documentation (`examples/device.py`, issue 18) runs against a real
//! server, so it cannot rot: telemetry arrives, an upload interrupted after a few acknowledged
//! segments resumes from what the server holds (`$file/{fileId}/status`) and the exported file is
//! byte-identical. Needs python3 with paho-mqtt (`bash .ci/run` installs it); a missing peer fails
//! the test with a hint, never skips it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use quicft_proto::QoS;
use quicft_tests::{TestServer, Transport};
use tokio::process::Command;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/device.py")
}

/// Runs the example with `args`; returns its last stdout line as JSON and its exit status.
async fn device(srv: &TestServer, args: &[&str]) -> Result<(serde_json::Value, bool)> {
    let port = srv.addr(Transport::Tcp).port().to_string();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new("python3")
            .arg(example())
            .args(["--host", "127.0.0.1", "--port", &port])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("examples/device.py timed out")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'paho'") {
        bail!("paho-mqtt is not installed: `python3 -m pip install -r tests/python/requirements.txt` (or `bash .ci/run`)");
    }
    let line = stdout.lines().last().unwrap_or_default();
    let v = serde_json::from_str(line)
        .with_context(|| format!("device.py printed {stdout:?}, stderr {stderr}"))?;
    Ok((v, out.status.success()))
}

#[tokio::test]
async fn device_example_uploads_resumes_and_sends_telemetry() -> Result<()> {
    let srv = TestServer::start().await?;
    // 40 segments of 8 KiB and a short last one.
    let data: Vec<u8> = (0..330_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = srv.dir.path().join("log-0042.bin");
    std::fs::write(&file, &data)?;
    let seg = 8192usize;
    let total_segments = data.len().div_ceil(seg);

    // A cloud-side subscriber sees the device's telemetry.
    let mut cloud = srv.connect(Transport::Tcp, "cloud").await?;
    let granted = cloud
        .data()
        .await?
        .subscribe("devices/+/telemetry", QoS::AtLeastOnce, 1)
        .await?;
    ensure!(granted.iter().all(|c| !c.is_error()), "SUBACK {granted:?}");

    let common = [
        "--client-id",
        "truck-17",
        "--file",
        file.to_str().context("path")?,
        "--file-id",
        "log-42",
        "--segment-size",
        "8192",
    ];
    // First run: dies (no DISCONNECT) after 12 acknowledged segments.
    let (first, ok) = device(&srv, &[&common[..], &["--stop-after", "12"]].concat()).await?;
    ensure!(ok && first["stopped_after"] == 12, "first run: {first}");
    let telemetry = cloud.data().await?.next_publish().await?;
    ensure!(
        telemetry.topic == "devices/truck-17/telemetry",
        "{}",
        telemetry.topic
    );
    let held: u64 = srv
        .server
        .file_transfer()
        .transfers()
        .iter()
        .filter(|t| t.client_id == "truck-17" && t.file_id == "log-42")
        .map(|t| t.bytes_held)
        .sum();
    ensure!(
        held >= 12 * seg as u64,
        "acknowledged segments are held: {held}"
    );
    ensure!(
        held < data.len() as u64,
        "the first run did not finish: {held}"
    );

    // Second run: asks `status`, sends only what is missing, fin.
    let (second, ok) = device(&srv, &common).await?;
    ensure!(ok, "second run failed: {second}");
    ensure!(second["fin"] == 0 && second["telemetry"] == 0, "{second}");
    let resumed = second["resumed_bytes"].as_u64().context("resumed_bytes")?;
    ensure!(
        resumed >= 12 * seg as u64,
        "resumed from the server's ranges: {second}"
    );
    let sent = second["segments_sent"].as_u64().context("segments_sent")? as usize;
    ensure!(
        sent <= total_segments - 12,
        "only the missing segments were sent again: {sent} of {total_segments}"
    );
    let exported = std::fs::read(srv.dir.path().join("exports/truck-17/log-42/log-0042.bin"))?;
    ensure!(exported == data, "the exported file is byte-identical");

    // A third run finds the file complete and sends nothing.
    let (third, ok) = device(&srv, &common).await?;
    ensure!(
        ok && third["segments_sent"] == 0 && third["fin"] == 0,
        "{third}"
    );
    Ok(())
}
