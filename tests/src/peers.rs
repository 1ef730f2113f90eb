//! Running clients that are not ours (paho-mqtt scripts in tests/python, MQTT.js scripts in
//! tests/js) and reading the one JSON line each prints last. `.ci/run` installs them; a missing peer
//! fails the test with a hint, never skips it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::Command;

/// tests/python: the paho-mqtt and aioquic peers.
pub fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// tests/js: the MQTT.js peers (`npm ci` there installs them).
pub fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Fails with a hint when `bin` is not on the PATH.
pub fn need(bin: &str) -> Result<()> {
    if std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .output()?
        .status
        .success()
    {
        Ok(())
    } else {
        bail!("{bin} is not installed; run `bash .ci/run` (it installs the interop peers)")
    }
}

/// Runs a peer (60 s at most) and parses the last line it printed as JSON.
pub async fn run_json(cmd: &mut Command) -> Result<serde_json::Value> {
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.kill_on_drop(true).output())
        .await
        .context("peer timed out")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "peer failed: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("peer output: {stdout}"))
}

/// `python3 tests/python/{script} args…`, its JSON line.
pub async fn paho(script: &str, args: &[&str]) -> Result<serde_json::Value> {
    need("python3")?;
    run_json(
        Command::new("python3")
            .arg(python_dir().join(script))
            .args(args),
    )
    .await
}
