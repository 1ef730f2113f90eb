//! `quicft upload --json` end to end: the one-line summary the benchmark kit reads must tell the
//! truth about reconnects and re-sent bytes (issue 4).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_quicft");

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<TempDir> {
        let dir = std::env::temp_dir().join(format!(
            "quicft-cli-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn server(dir: &Path) -> Result<quicft_server::Server> {
    let mut cfg = quicft_server::Config::with_data_dir(dir.to_owned());
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    cfg.listeners.quic = Some(any);
    cfg.listeners.tcp = Some(any);
    cfg.listeners.tls = Some(any);
    cfg.listeners.ws = None;
    cfg.listeners.wss = None;
    cfg.listeners.http = None;
    cfg.file_transfer.min_free_disk = 0;
    Ok(quicft_server::Server::start(cfg).await?)
}

/// A TCP forwarder to `to` that cuts the first connection once it has forwarded `cut_after`
/// bytes from the device (both directions die, as on a network drop); later connections pass.
async fn cutting_proxy(to: SocketAddr, cut_after: usize) -> Result<(u16, Arc<AtomicBool>)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    let cut = Arc::new(AtomicBool::new(false));
    let cut2 = cut.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = l.accept().await {
            let cut = cut2.clone();
            tokio::spawn(async move {
                let Ok(out) = TcpStream::connect(to).await else {
                    return;
                };
                let (mut in_r, mut in_w) = inbound.into_split();
                let (mut out_r, mut out_w) = out.into_split();
                let back = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut out_r, &mut in_w).await;
                });
                let armed = !cut.load(Ordering::SeqCst);
                let mut forwarded = 0usize;
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    let n = match in_r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if armed && forwarded + n > cut_after {
                        cut.store(true, Ordering::SeqCst);
                        break;
                    }
                    forwarded += n;
                    if out_w.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                // Dropping both halves of both sockets closes them.
                back.abort();
            });
        }
    });
    Ok((port, cut))
}

/// Runs `quicft upload FILE --json` over plain TCP to `port`; returns the summary line.
async fn upload_json(
    file: &Path,
    port: u16,
    ca: &Path,
    client_id: &str,
) -> Result<serde_json::Value> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(BIN)
            .arg("upload")
            .arg(file)
            .args([
                "--json",
                "--transport",
                "tcp",
                "--window",
                "1M",
                "--segment-size",
                "64K",
            ])
            .args(["--server", &format!("127.0.0.1:{port}")])
            .arg("--ca")
            .arg(ca)
            .args(["--client-id", client_id])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("quicft upload did not finish")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "quicft upload failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().last().context("no summary line")?;
    Ok(serde_json::from_str(line)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_summary_counts_reconnects_and_resent_bytes() -> Result<()> {
    tokio::time::timeout(Duration::from_secs(120), json_summary()).await?
}

async fn json_summary() -> Result<()> {
    let dir = TempDir::new("srv")?;
    let srv = server(&dir.0).await?;
    let tcp = srv.tcp_addr.context("tcp listener")?;
    let ca = dir.0.join("certs/ca.pem");
    let files = TempDir::new("files")?;
    let size: u64 = 8 << 20;
    let data: Vec<u8> = (0..size)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = files.0.join("log.bin");
    std::fs::write(&path, &data)?;

    // A clean run: nothing re-sent, no reconnect.
    let s = upload_json(&path, tcp.port(), &ca, "cli-clean").await?;
    ensure!(s["bytes"] == size && s["transport"] == "tcp", "{s}");
    ensure!(
        s["reconnects"] == 0 && s["bytes_resent"] == 0 && s["bytes_sent"] == size,
        "{s}"
    );

    // The connection dies a third of the way in: one reconnect, and what was in flight (at most
    // the 1 MiB window) went twice, no more.
    let (port, cut) = cutting_proxy(tcp, (size / 3) as usize).await?;
    let s = upload_json(&path, port, &ca, "cli-cut").await?;
    eprintln!("{s}");
    ensure!(cut.load(Ordering::SeqCst), "the proxy never cut");
    ensure!(s["bytes"] == size && s["reconnects"] == 1, "{s}");
    let resent = s["bytes_resent"].as_u64().context("bytes_resent")?;
    let sent = s["bytes_sent"].as_u64().context("bytes_sent")?;
    ensure!(resent > 0 && resent <= 1 << 20, "re-sent {resent}: {s}");
    ensure!(
        sent == size + resent,
        "sent {sent} = {size} + {resent}? {s}"
    );
    let file_id = s["file_id"].as_str().context("file_id")?;
    let export = dir.0.join("exports/cli-cut").join(file_id).join("log.bin");
    ensure!(std::fs::read(export)? == data, "export differs");
    srv.shutdown().await;
    Ok(())
}

/// Runs `quicft ARGS…` against the server's plain-TCP listener; returns success, stdout, stderr.
async fn quicft(
    srv: &quicft_server::Server,
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<(bool, String, String)> {
    let port = srv.tcp_addr.context("tcp")?.port();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(BIN)
            .args(args)
            .args([
                "--transport",
                "tcp",
                "--server",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--ca")
            .arg(dir.join("certs/ca.pem"))
            .env_remove("QUICFT_PASSWORD")
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `quicft status` of a file the server does not hold says so and exits non-zero (it printed a
/// JSON blob and exited 0).
#[tokio::test]
async fn status_of_an_unknown_file_is_an_error() -> Result<()> {
    let dir = TempDir::new("status")?;
    let srv = server(&dir.0).await?;
    let (ok, out, err) = quicft(
        &srv,
        &dir.0,
        &["status", "no-such-file", "-i", "dev-1"],
        &[],
    )
    .await?;
    ensure!(!ok, "exit 0 for an unknown file: {out}");
    ensure!(
        err.contains("holds nothing for file \"no-such-file\" of client \"dev-1\""),
        "{err}"
    );
    Ok(())
}

/// Passwords come from the environment or a file, not only the command line; a refusal says
/// what to change.
#[tokio::test]
async fn passwords_from_env_or_file_and_refusals_with_a_hint() -> Result<()> {
    let dir = TempDir::new("password")?;
    let mut cfg = quicft_server::Config::with_data_dir(dir.0.clone());
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    cfg.listeners = quicft_server::config::Listeners {
        quic: None,
        tcp: Some(any),
        tls: None,
        ws: None,
        wss: None,
        http: None,
        insecure_tcp: false,
    };
    cfg.auth.allow_anonymous = Some(false);
    cfg.auth.users.push(quicft_server::config::User {
        username: "truck-1".into(),
        password_hash: quicft_server::auth::hash_password("pw-1")?,
        client_id: None,
    });
    let srv = quicft_server::Server::start(cfg).await?;
    let publish = ["pub", "-t", "t/1", "-m", "x", "-u", "truck-1"];
    let (ok, _, err) = quicft(&srv, &dir.0, &publish, &[("QUICFT_PASSWORD", "pw-1")]).await?;
    ensure!(ok, "QUICFT_PASSWORD: {err}");
    let file = dir.0.join("pw.txt");
    std::fs::write(&file, "pw-1\n")?;
    let with_file: Vec<&str> = publish
        .iter()
        .copied()
        .chain(["--password-file", file.to_str().context("path")?])
        .collect();
    let (ok, _, err) = quicft(&srv, &dir.0, &with_file, &[]).await?;
    ensure!(ok, "--password-file: {err}");
    let (ok, _, err) = quicft(&srv, &dir.0, &publish, &[("QUICFT_PASSWORD", "wrong")]).await?;
    ensure!(!ok && err.contains("bad user name or password"), "{err}");
    let mut other_id = publish.to_vec();
    other_id.extend(["-i", "devB"]);
    let (ok, _, err) = quicft(&srv, &dir.0, &other_id, &[("QUICFT_PASSWORD", "pw-1")]).await?;
    ensure!(
        !ok && err.contains("may not use client id \"devB\"") && err.contains("-i truck-1"),
        "{err}"
    );
    let (ok, _, err) = quicft(&srv, &dir.0, &["pub", "-t", "t/1", "-m", "x"], &[]).await?;
    ensure!(
        !ok && err.contains("this server wants credentials"),
        "{err}"
    );
    Ok(())
}

/// A TCP forwarder to `to` for one connection, which it cuts after `cut_after` bytes from the
/// device; then the port refuses every connection, as a server that went away.
async fn dying_proxy(to: SocketAddr, cut_after: usize) -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        let Ok((inbound, _)) = l.accept().await else {
            return;
        };
        drop(l);
        let Ok(out) = TcpStream::connect(to).await else {
            return;
        };
        let (mut in_r, mut in_w) = inbound.into_split();
        let (mut out_r, mut out_w) = out.into_split();
        let back = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut out_r, &mut in_w).await;
        });
        let mut forwarded = 0usize;
        let mut buf = vec![0u8; 16 << 10];
        while let Ok(n) = in_r.read(&mut buf).await {
            if n == 0 || forwarded + n > cut_after || out_w.write_all(&buf[..n]).await.is_err() {
                break;
            }
            forwarded += n;
        }
        back.abort();
    });
    Ok(port)
}

/// An upload to a server that went away retried forever without a word (issue 13). Now it says it
/// is retrying, gives up after --give-up-after without progress, and exits non-zero with each
/// file's error in its JSON line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_gives_up_when_the_server_is_gone() -> Result<()> {
    let dir = TempDir::new("give-up")?;
    let srv = server(&dir.0).await?;
    // The window makes the device wait for acks: when the proxy cuts at 2 MiB, most of it is held.
    let port = dying_proxy(srv.tcp_addr.context("tcp")?, 2 << 20).await?;
    let file = dir.0.join("big.bin");
    std::fs::write(&file, vec![7u8; 4 << 20])?;
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(BIN)
            .arg("upload")
            .arg(&file)
            .args([
                "--json",
                "--transport",
                "tcp",
                "--segment-size",
                "64K",
                "--give-up-after",
                "3s",
                "--window",
                "256K",
            ])
            .args(["--server", &format!("127.0.0.1:{port}")])
            .arg("--ca")
            .arg(dir.0.join("certs/ca.pem"))
            .args(["--client-id", "give-up"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("quicft upload did not give up")??;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    ensure!(!out.status.success(), "exit 0: {stdout} {stderr}");
    let line: serde_json::Value =
        serde_json::from_str(stdout.lines().last().context("no JSON line")?)?;
    let error = line["error"].as_str().context("no error in the summary")?;
    ensure!(error.contains("no progress for 3 s: giving up"), "{error}");
    ensure!(
        stderr.contains("connection lost") && stderr.contains("retrying (attempt"),
        "{stderr}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // The next run, with the server back, says it resumes and finishes.
    let out = tokio::process::Command::new(BIN)
        .arg("upload")
        .arg(&file)
        .args([
            "--transport",
            "tcp",
            "--segment-size",
            "64K",
            "--client-id",
            "give-up",
        ])
        .args(["--server", &srv.tcp_addr.context("tcp")?.to_string()])
        .kill_on_drop(true)
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{stderr}");
    ensure!(stderr.contains("resuming: the server holds"), "{stderr}");
    Ok(())
}

/// Runs `quicft` with exactly `args` (no transport or server added).
async fn quicft_raw(args: &[&str]) -> Result<(bool, String)> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(BIN)
            .args(args)
            .env_remove("QUICFT_PASSWORD")
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// A loopback UDP port nothing listens on (bound, then released).
fn free_udp_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A QUIC attempt where nothing listens says so (from the host's ICMP answer) instead of waiting
/// out its handshake timeout; with `--transport auto` the device says why it is on TLS.
#[tokio::test]
async fn nothing_listening_on_quic_is_said_at_once_and_the_fallback_says_why() -> Result<()> {
    let dir = TempDir::new("fallback")?;
    let srv = server(&dir.0).await?;
    let ca = dir.0.join("certs/ca.pem");
    let ca = ca.to_str().context("path")?;
    let udp = free_udp_port()?;
    let quic_server = format!("127.0.0.1:{udp}");
    let pubargs = [
        "pub",
        "-t",
        "t",
        "-m",
        "x",
        "--ca",
        ca,
        "--server",
        &quic_server,
    ];

    let (ok, err) = quicft_raw(&[&pubargs[..], &["--transport", "quic"]].concat()).await?;
    ensure!(!ok, "connected to nothing: {err}");
    ensure!(
        err.contains(&format!("nothing is listening on UDP {quic_server}")),
        "{err}"
    );

    let tls_port = srv.tls_addr.context("tls")?.port().to_string();
    let fallback = ["--transport", "auto", "--fallback-port", &tls_port];
    let (ok, err) = quicft_raw(&[&pubargs[..], &fallback[..]].concat()).await?;
    ensure!(ok, "{err}");
    ensure!(
        err.contains("quic failed: ") && err.contains("nothing is listening on UDP"),
        "the fallback does not say why: {err}"
    );
    ensure!(err.contains("connected over tls to 127.0.0.1:"), "{err}");
    Ok(())
}

/// With progress bars on a terminal, every file's summary line is on the screen at the end (with
/// several files, the second one's line used to be drawn over by the bars' next refresh). The
/// screen is what a VT100 emulator (pyte) makes of the output.
#[tokio::test]
async fn every_file_keeps_its_summary_line_on_a_terminal() -> Result<()> {
    let dir = TempDir::new("tty")?;
    let srv = server(&dir.0).await?;
    let mut files = Vec::new();
    for (name, size) in [
        ("one.bin", 3_000_000),
        ("two.bin", 9_000_000),
        ("three.bin", 1_000),
    ] {
        let path = dir.0.join(name);
        std::fs::write(&path, vec![7u8; size])?;
        files.push(path.to_str().context("path")?.to_owned());
    }
    files.push(
        dir.0
            .join("missing.bin")
            .to_str()
            .context("path")?
            .to_owned(),
    );
    let port = srv.quic_addr.context("quic")?.port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/python/tty_screen.py");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .args([script, "150", "30", BIN, "upload", "-i", "tty-1"])
            .args(&files)
            .args([
                "--transport",
                "quic",
                "--server",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--ca")
            .arg(dir.0.join("certs/ca.pem"))
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let screen = String::from_utf8_lossy(&out.stdout);
    ensure!(
        !String::from_utf8_lossy(&out.stderr).contains("No module named"),
        "pyte is missing (tests/python/requirements.txt)"
    );
    for name in ["one.bin", "two.bin", "three.bin"] {
        ensure!(
            screen
                .lines()
                .any(|l| l.contains(&format!("{name}: ")) && l.contains(" bytes in ")),
            "no summary line for {name} on the screen:\n{screen}"
        );
    }
    ensure!(
        screen.contains("missing.bin: cannot start the upload"),
        "{screen}"
    );
    ensure!(screen.contains("1 of 4 uploads failed"), "{screen}");
    Ok(())
}

/// A certificate the device cannot accept gets a hint in the words of the options that fix it.
#[tokio::test]
async fn certificate_errors_say_which_option_fixes_them() -> Result<()> {
    let dir = TempDir::new("certhint")?;
    let srv = server(&dir.0).await?;
    let tls = srv.tls_addr.context("tls")?.to_string();
    let ca = dir.0.join("certs/ca.pem");
    let ca = ca.to_str().context("path")?;
    let base = [
        "pub",
        "-t",
        "t",
        "-m",
        "x",
        "--transport",
        "tls",
        "--server",
        &tls,
    ];

    let (ok, err) =
        quicft_raw(&[&base[..], &["--ca", ca, "--server-name", "wrong.example"]].concat()).await?;
    ensure!(!ok);
    ensure!(
        err.contains("pass --server-name NAME with one of them; \"wrong.example\" was checked")
            && err.contains("localhost"),
        "{err}"
    );

    let other = dir.0.join("other-ca.pem");
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&other, params.self_signed(&key)?.pem())?;
    let other = other.to_str().context("path")?;
    let (ok, err) = quicft_raw(&[&base[..], &["--ca", other]].concat()).await?;
    ensure!(!ok);
    ensure!(
        err.contains(&format!("not signed by the CA in {other}")),
        "{err}"
    );
    Ok(())
}

/// Stores `data` as a delivery for `targets`; its id.
async fn deliver(srv: &quicft_server::Server, data: &[u8], targets: &str) -> Result<String> {
    use quicft_server::delivery::{NewDelivery, Targets};
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(
        bytes::Bytes::copy_from_slice(data),
    )]);
    let new = NewDelivery {
        name: "fw.bin".into(),
        version: "1".into(),
        targets: Targets::parse(targets)?,
        expires_at: None,
        sha256: None,
    };
    Ok(srv.deliveries().create(new, body).await?.id)
}

/// `quicft download ID -o FILE --json`, and `--wait` for the next delivery announced.
#[tokio::test]
async fn download_a_delivery_and_wait_for_the_next() -> Result<()> {
    use sha2::Digest;
    let dir = TempDir::new("download")?;
    let srv = server(&dir.0).await?;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let sha = hex::encode(sha2::Sha256::digest(&data));
    let id = deliver(&srv, &data, "cli-dev").await?;
    let out = dir.0.join("fw.bin");
    let out_s = out.to_string_lossy().into_owned();
    let (ok, stdout, err) = quicft(
        &srv,
        &dir.0,
        &["download", &id, "-o", &out_s, "-i", "cli-dev", "--json"],
        &[],
    )
    .await?;
    ensure!(ok, "download failed: {err}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).context(stdout.clone())?;
    ensure!(
        v["sha256"] == sha.as_str() && v["size"] == data.len(),
        "{v}"
    );
    ensure!(std::fs::read(&out)? == data, "downloaded file differs");

    // Not for this client: a clear error, non-zero exit.
    let (ok, _, err) = quicft(
        &srv,
        &dir.0,
        &["download", &id, "-o", &out_s, "-i", "someone-else"],
        &[],
    )
    .await?;
    ensure!(!ok && err.contains("Unauthorized"), "{err}");

    // --wait: told of the next delivery, fetches it.
    let waiting_out = dir.0.join("next.bin");
    let w = waiting_out.to_string_lossy().into_owned();
    let waiter = {
        let (srv_port, dir) = (srv.tcp_addr.context("tcp")?.port(), dir.0.clone());
        tokio::process::Command::new(BIN)
            .args(["download", "--wait", "-o", &w, "-i", "cli-agent", "--json"])
            .args([
                "--transport",
                "tcp",
                "--server",
                &format!("127.0.0.1:{srv_port}"),
            ])
            .arg("--ca")
            .arg(dir.join("certs/ca.pem"))
            .kill_on_drop(true)
            .stdout(std::process::Stdio::piped())
            .spawn()?
    };
    let output = {
        // The agent subscribes after it connects: announce until it has taken one.
        let wait = waiter.wait_with_output();
        tokio::pin!(wait);
        let mut result = None;
        for _ in 0..30 {
            deliver(&srv, &data, "cli-agent").await?;
            if let Ok(r) = tokio::time::timeout(Duration::from_secs(1), &mut wait).await {
                result = Some(r?);
                break;
            }
        }
        result.context("the waiting agent never downloaded")?
    };
    ensure!(output.status.success(), "--wait failed");
    ensure!(std::fs::read(&waiting_out)? == data, "--wait file differs");
    Ok(())
}
