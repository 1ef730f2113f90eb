//! Webhooks with a durable outbox, against a real HTTP receiver (`tests/python/webhook_receiver.py`,
//! Python's http.server, which checks every signature): events of real MQTT transfers are taken
//! while the receiver is down, the server is restarted, the receiver comes up — and gets every
//! event exactly once, signed, in order per file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use quicft_proto::ReasonCode;
use quicft_server::webhooks::WebhookConfig;
use quicft_server::Server;
use quicft_tests::ft::{self, content, sha256_hex};
use quicft_tests::{connect, test_config, TestServer, Transport};

const SECRET: &str = "webhook-test-secret";

struct Receiver(Child);

impl Receiver {
    fn start(port: u16, out: &Path) -> Result<Receiver> {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/webhook_receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(SECRET)
            .arg(out)
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        if line.trim().is_empty() {
            bail!("receiver did not start");
        }
        Ok(Receiver(child))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start(dir: tempfile::TempDir, url: &str) -> Result<TestServer> {
    quicft_tests::init_tracing();
    let mut cfg = test_config(dir.path().to_path_buf());
    cfg.webhooks = vec![WebhookConfig {
        url: url.to_owned(),
        events: Vec::new(),
        secret: SECRET.into(),
        max_pending: 1000,
    }];
    let server = Server::start(cfg).await?;
    Ok(TestServer { server, dir })
}

/// Lines in the hook's outbox logs (every event ever appended to the current generation).
fn outbox_lines(data_dir: &Path) -> usize {
    let Ok(hooks) = std::fs::read_dir(data_dir.join("webhooks")) else {
        return 0;
    };
    hooks
        .flatten()
        .flat_map(|h| std::fs::read_dir(h.path()).into_iter().flatten().flatten())
        .filter(|f| f.file_name().to_string_lossy().ends_with(".log"))
        .map(|f| {
            std::fs::read(f.path())
                .map(|b| b.iter().filter(|&&c| c == b'\n').count())
                .unwrap_or(0)
        })
        .sum()
}

fn received(out: &PathBuf) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_server_restarted_every_event_delivered_once_signed_in_order() -> Result<()> {
    // A port nothing listens on yet: the receiver is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}/hooks/quicft");
    let server = start(tempfile::tempdir()?, &url).await?;

    let mut c = connect(&server, Transport::Tcp, "hook-dev").await?;
    let s = c.data().await?;
    // ok: started, completed.
    let data = content(300_000, 7);
    assert_eq!(
        ft::init(s, "ok", "ok.bin", Some(300_000)).await?,
        ReasonCode::SUCCESS
    );
    for (off, code) in ft::segments(
        s,
        "ok",
        &[(0, &data[..150_000]), (150_000, &data[150_000..])],
    )
    .await?
    {
        assert_eq!(code, ReasonCode::SUCCESS, "segment {off}");
    }
    let fin = format!("$file/ok/fin/300000/{}", sha256_hex(&data));
    assert_eq!(ft::cmd(s, &fin, b"").await?, ReasonCode::SUCCESS);
    // gone: started, aborted.
    assert_eq!(
        ft::init(s, "gone", "gone.bin", None).await?,
        ReasonCode::SUCCESS
    );
    assert_eq!(
        ft::cmd(s, "$file/gone/abort", b"").await?,
        ReasonCode::SUCCESS
    );
    // bad: started, failed (the checksum does not match the bytes held).
    assert_eq!(
        ft::init(s, "bad", "bad.bin", Some(1000)).await?,
        ReasonCode::SUCCESS
    );
    ft::segments(s, "bad", &[(0, &data[..1000])]).await?;
    let fin = format!("$file/bad/fin/1000/{}", sha256_hex(b"something else"));
    assert_ne!(ft::cmd(s, &fin, b"").await?, ReasonCode::SUCCESS);
    c.disconnect().await?;

    // Every event is in the outbox before the server goes.
    let start_wait = Instant::now();
    while outbox_lines(server.dir.path()) < 6 {
        if start_wait.elapsed() > Duration::from_secs(20) {
            bail!(
                "events not in the outbox: {}",
                outbox_lines(server.dir.path())
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let TestServer { server, dir } = server;
    server.shutdown().await;
    let server = start(dir, &url).await?;
    // Still down for a moment after the restart: deliveries fail and are retried.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = server.dir.path().join("received.jsonl");
    let _receiver = Receiver::start(port, &out)?;
    let start_wait = Instant::now();
    while received(&out).len() < 6 {
        if start_wait.elapsed() > Duration::from_secs(90) {
            bail!("only {} events arrived", received(&out).len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing more comes (no repeat).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = received(&out);
    assert_eq!(got.len(), 6, "{got:#?}");
    assert!(got.iter().all(|e| e["sig_ok"] == true), "{got:#?}");
    let mut ids: Vec<&str> = got.iter().filter_map(|e| e["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6, "distinct event ids");
    let mut per_file: HashMap<String, Vec<String>> = HashMap::new();
    for e in &got {
        assert_eq!(e["body"]["client_id"], "hook-dev");
        per_file
            .entry(e["body"]["file_id"].as_str().unwrap_or("").to_owned())
            .or_default()
            .push(e["body"]["event"].as_str().unwrap_or("").to_owned());
    }
    assert_eq!(per_file["ok"], ["started", "completed"]);
    assert_eq!(per_file["gone"], ["started", "aborted"]);
    assert_eq!(per_file["bad"], ["started", "failed"]);
    Ok(())
}
