//! The S3-compatible exporter against a real store: moto's server mode (`tests/python/s3_store.py`,
//! started by each test on a free loopback port; `.ci/run` installs it), read back with boto3.
//! Files go up from a real MQTT upload; the store is killed mid-export, the server is SIGKILLed
//! mid-export, the bucket is missing — and every file ends in the store byte-identical, or stays
//! on the server with the error shown, never lost.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use quicft_proto::ReasonCode;
use quicft_server::ft::{ExportBackend, ExportConfig, ExportState, FinishedInfo, S3Config};
use quicft_server::webhooks::WebhookConfig;
use quicft_tests::ft::{self, content, sha256_hex};
use quicft_tests::{connect, ProcessServer, Target, TestServer, Transport};
use tower::ServiceExt;

const BIN: &str = env!("CARGO_BIN_EXE_quicft-test-server");
const BUCKET: &str = "quicft-exports";
const SEG: usize = 1 << 20;
/// 40 MB: five 8 MiB parts.
const BIG: usize = 40_000_000;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/s3_store.py")
}

/// A moto S3 server process; killed when dropped.
struct Store {
    child: Child,
    port: u16,
}

impl Store {
    /// On `port` (0: a free one).
    fn start(port: u16) -> Result<Store> {
        Store::start_with(port, false)
    }

    /// With `auth`, the store checks credentials (moto's IAM) from its second request on: the
    /// first (making the bucket) is free, and no key the test could send exists.
    fn start_with(port: u16, auth: bool) -> Result<Store> {
        use std::io::BufRead;
        let mut cmd = Command::new("python3");
        if auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "1");
        }
        let mut child = cmd
            .arg(script())
            .args(["serve", &port.to_string()])
            .stdout(Stdio::piped())
            // Its access log would drown the test's output.
            .stderr(Stdio::null())
            .spawn()
            .context("python3 s3_store.py serve (pip install -r tests/python/requirements.txt)")?;
        let out = child.stdout.take().context("stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line)?;
        let port = line.trim().parse().context("store port")?;
        Ok(Store { child, port })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a `s3_store.py` command; its stdout as JSON (null when empty).
fn tool(args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new("python3").arg(script()).args(args).output()?;
    if !out.status.success() {
        bail!(
            "s3_store.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    Ok(serde_json::from_str(text.trim())?)
}

fn export_config(endpoint: &str, parallel_parts: usize) -> ExportConfig {
    ExportConfig {
        backend: ExportBackend::S3,
        s3: S3Config {
            endpoint: Some(endpoint.to_owned()),
            region: Some("us-east-1".into()),
            bucket: BUCKET.into(),
            prefix: "quicft/".into(),
            allow_http: true,
            access_key_id: Some("quicft-test".into()),
            secret_access_key: Some("quicft-test-secret".into()),
            parallel_parts,
            max_retries: 4,
            retry_timeout_secs: 10,
            presign_expiry_secs: 600,
            ..S3Config::default()
        },
    }
}

/// Uploads `data` over MQTT (TCP) as `file_id` and sends fin; expects 0x00 everywhere.
async fn upload(server: &impl Target, client: &str, file_id: &str, data: &[u8]) -> Result<()> {
    let mut c = connect(server, Transport::Tcp, client).await?;
    let s = c.data().await?;
    let name = format!("{file_id} data.bin");
    if ft::init(s, file_id, &name, Some(data.len() as u64)).await? != ReasonCode::SUCCESS {
        bail!("init refused");
    }
    for chunk in data.chunks(8 * SEG).enumerate() {
        let (i, chunk) = chunk;
        let base = i * 8 * SEG;
        let segs: Vec<(u64, &[u8])> = chunk
            .chunks(SEG)
            .enumerate()
            .map(|(j, d)| ((base + j * SEG) as u64, d))
            .collect();
        for (off, code) in ft::segments(s, file_id, &segs).await? {
            if code != ReasonCode::SUCCESS {
                bail!("segment at {off}: {code}");
            }
        }
    }
    let fin = format!("$file/{file_id}/fin/{}/{}", data.len(), sha256_hex(data));
    let code = ft::cmd(s, &fin, b"").await?;
    if code != ReasonCode::SUCCESS {
        bail!("fin: {code}");
    }
    c.disconnect().await
}

fn finished(server: &TestServer, file_id: &str) -> Option<FinishedInfo> {
    server
        .server
        .file_transfer()
        .finished()
        .into_iter()
        .find(|f| f.manifest.file_id == file_id)
}

/// Waits until `file_id`'s export state passes `pred`.
async fn wait_export(
    server: &TestServer,
    file_id: &str,
    limit: Duration,
    pred: impl Fn(&ExportState) -> bool,
) -> Result<FinishedInfo> {
    let start = Instant::now();
    loop {
        if let Some(f) = finished(server, file_id) {
            if pred(&f.export) {
                return Ok(f);
            }
        }
        if start.elapsed() > limit {
            bail!(
                "export of {file_id} not as expected after {limit:?}: {:?}",
                finished(server, file_id).map(|f| f.export)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the export of `file_id` failed; its error.
async fn wait_failed(server: &TestServer, file_id: &str) -> Result<String> {
    let f = wait_export(server, file_id, Duration::from_secs(60), |s| {
        matches!(s, ExportState::ExportFailed { .. })
    })
    .await?;
    match f.export {
        ExportState::ExportFailed { error, .. } => Ok(error),
        other => bail!("{other:?}"),
    }
}

/// The object key of `file_id` uploaded by [`upload`] from `client`.
fn key(client: &str, file_id: &str) -> String {
    format!("quicft/{client}/{file_id}/{file_id}%20data.bin")
}

/// Waits for `%export.json` under `data_dir` to record at least one acknowledged part.
async fn wait_for_a_part(data_dir: &Path, client: &str, file_id: &str) -> Result<()> {
    let path = data_dir
        .join("transfers")
        .join(client)
        .join(file_id)
        .join("%export.json");
    let start = Instant::now();
    loop {
        if let Ok(bytes) = std::fs::read(&path) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                let parts = v["parts"]
                    .as_array()
                    .map_or(0, |p| p.iter().filter(|x| !x.is_null()).count());
                if parts >= 1 {
                    return Ok(());
                }
            }
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("no part was acknowledged");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get(
    app: &axum::Router,
    uri: &str,
) -> Result<(StatusCode, axum::http::HeaderMap, Vec<u8>)> {
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty())?)
        .await?;
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await?;
    Ok((parts.status, parts.headers, body.to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_40mb_file_is_exported_in_parts_byte_identical() -> Result<()> {
    let store = Store::start(0)?;
    tool(&["mkbucket", &store.endpoint(), BUCKET])?;
    let endpoint = store.endpoint();
    let hook_out = tempfile::tempdir()?;
    let hook_file = hook_out.path().join("events.jsonl");
    let hook = Receiver::start(&hook_file)?;
    let server = TestServer::start_with(|c| {
        c.export = export_config(&endpoint, 3);
        c.webhooks = vec![WebhookConfig {
            url: format!("http://127.0.0.1:{}/", hook.port),
            events: vec!["completed".into(), "exported".into()],
            secret: "s3-hook".into(),
            max_pending: 100,
        }];
    })
    .await?;
    let data = content(BIG, 40);
    upload(&server, "dev-1", "big", &data).await?;
    let f = wait_export(&server, "big", Duration::from_secs(180), |s| {
        *s == ExportState::Exported
    })
    .await?;
    let key = key("dev-1", "big");
    assert_eq!(
        f.manifest.location.as_deref(),
        Some(format!("s3://{BUCKET}/{key}").as_str())
    );
    let stat = tool(&["stat", &store.endpoint(), BUCKET, &key])?;
    assert_eq!(stat["size"], BIG as u64);
    assert_eq!(stat["sha256"], sha256_hex(&data));
    assert!(stat["parts"].as_u64().unwrap_or(0) >= 3, "{stat}");
    assert!(
        stat["etag"].as_str().unwrap_or("").ends_with("-5"),
        "{stat}"
    );
    // The manifest object beside it.
    let keys = tool(&["keys", &store.endpoint(), BUCKET])?;
    assert!(
        keys.as_array()
            .is_some_and(|k| k.iter().any(|k| k == "quicft/dev-1/big/%manifest.json")),
        "{keys}"
    );
    // The local copy is gone; the record of the export stays.
    assert!(!server.dir.path().join("transfers/dev-1/big").exists());
    assert!(server
        .dir
        .path()
        .join("exports/dev-1/big/%manifest.json")
        .exists());
    // REST: state and location; the content is a redirect to a presigned URL that serves it.
    let app = server.api();
    let (status, _, body) = get(&app, "/api/v1/files/dev-1/big").await?;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(v["export_state"], "exported");
    assert_eq!(v["location"], format!("s3://{BUCKET}/{key}"));
    let (status, headers, _) = get(&app, "/api/v1/files/dev-1/big/content").await?;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    let url = headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("Location")?;
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let fetched = tool(&["url", url])?;
    assert_eq!(fetched["sha256"], sha256_hex(&data));
    let (_, _, metrics) = get(&app, "/metrics").await?;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("quicft_exports_total "), "{metrics}");
    // The webhook heard `completed` (the file is whole on the server), then `exported` with the
    // object's location.
    let start = Instant::now();
    let events = loop {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&hook_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= 2 || start.elapsed() > Duration::from_secs(30) {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e["body"]["event"].as_str())
        .collect();
    assert_eq!(kinds, ["completed", "exported"], "{events:#?}");
    assert!(events.iter().all(|e| e["sig_ok"] == true));
    assert_eq!(
        events[1]["body"]["export_path"],
        format!("s3://{BUCKET}/{key}")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_credentials_keep_the_file_and_show_the_error() -> Result<()> {
    let store = Store::start_with(0, true)?;
    tool(&["mkbucket", &store.endpoint(), BUCKET])?;
    let endpoint = store.endpoint();
    let server = TestServer::start_with(|c| c.export = export_config(&endpoint, 2)).await?;
    let data = content(2_000_000, 44);
    upload(&server, "dev-5", "denied", &data).await?;
    let error = wait_failed(&server, "denied").await?;
    assert!(error.contains("InvalidAccessKeyId"), "{error}");
    let data_file = server.dir.path().join("transfers/dev-5/denied/data.part");
    assert_eq!(std::fs::metadata(&data_file)?.len(), data.len() as u64);
    let app = server.api();
    let (_, _, body) = get(&app, "/api/v1/files/dev-5/denied").await?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(v["export_state"], "export_failed", "{v}");
    assert!(
        v["export_error"]
            .as_str()
            .is_some_and(|e| e.contains("InvalidAccessKeyId")),
        "{v}"
    );
    Ok(())
}

/// The webhook receiver of `tests/python/webhook_receiver.py` (checks signatures).
struct Receiver {
    child: Child,
    port: u16,
}

impl Receiver {
    fn start(out: &Path) -> Result<Receiver> {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/webhook_receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["0", "s3-hook"])
            .arg(out)
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let port = line.trim().parse().context("receiver port")?;
        Ok(Receiver { child, port })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_killed_mid_export_and_restarted_then_export_completes() -> Result<()> {
    let mut store = Store::start(0)?;
    tool(&["mkbucket", &store.endpoint(), BUCKET])?;
    let endpoint = store.endpoint();
    let server = TestServer::start_with(|c| c.export = export_config(&endpoint, 1)).await?;
    let data = content(BIG, 41);
    upload(&server, "dev-2", "outage", &data).await?;
    wait_for_a_part(server.dir.path(), "dev-2", "outage").await?;
    let port = store.port;
    store.kill();
    // While the store is away the file stays on the server, whole.
    let data_file = server.dir.path().join("transfers/dev-2/outage/data.part");
    assert_eq!(
        std::fs::metadata(&data_file)
            .context("the export finished before the store was killed")?
            .len(),
        BIG as u64
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // moto keeps nothing across a restart: the bucket is made again, the upload id is gone.
    let store = Store::start(port)?;
    tool(&["mkbucket", &store.endpoint(), BUCKET])?;
    wait_export(&server, "outage", Duration::from_secs(240), |s| {
        *s == ExportState::Exported
    })
    .await?;
    let stat = tool(&["stat", &store.endpoint(), BUCKET, &key("dev-2", "outage")])?;
    assert_eq!(stat["size"], BIG as u64);
    assert_eq!(stat["sha256"], sha256_hex(&data));
    assert!(!data_file.exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_export_completes_after_restart() -> Result<()> {
    let store = Store::start(0)?;
    tool(&["mkbucket", &store.endpoint(), BUCKET])?;
    let dir = tempfile::tempdir()?;
    let cfg = serde_json::to_string(&export_config(&store.endpoint(), 1))?;
    std::env::set_var("QUICFT_TEST_EXPORT", &cfg);
    let server = ProcessServer::start(BIN, dir.path()).await?;
    let data = content(BIG, 42);
    upload(&server, "dev-3", "crash", &data).await?;
    wait_for_a_part(dir.path(), "dev-3", "crash").await?;
    server.kill9().await?;
    let tdir = dir.path().join("transfers/dev-3/crash");
    assert_eq!(
        std::fs::metadata(tdir.join("data.part"))?.len(),
        BIG as u64,
        "the file is kept until its export is checked"
    );
    let _server = ProcessServer::start(BIN, dir.path()).await?;
    let key = key("dev-3", "crash");
    let start = Instant::now();
    while tdir.exists() {
        if start.elapsed() > Duration::from_secs(240) {
            bail!("export not finished after the restart");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stat = tool(&["stat", &store.endpoint(), BUCKET, &key])?;
    assert_eq!(stat["size"], BIG as u64);
    assert_eq!(stat["sha256"], sha256_hex(&data));
    assert!(
        stat["etag"].as_str().unwrap_or("").ends_with("-5"),
        "{stat}"
    );
    // Resumed, not begun again: a second upload would have left the first one open.
    let open = tool(&["uploads", &store.endpoint(), BUCKET])?;
    assert_eq!(open, serde_json::json!([]), "multipart uploads left open");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_bucket_keeps_the_file_shows_the_error_and_recovers() -> Result<()> {
    let store = Store::start(0)?;
    let endpoint = store.endpoint();
    let server = TestServer::start_with(|c| c.export = export_config(&endpoint, 2)).await?;
    let data = content(3_000_000, 43);
    upload(&server, "dev-4", "nobucket", &data).await?;
    let error = wait_failed(&server, "nobucket").await?;
    assert!(
        error.contains("NoSuchBucket") || error.contains("bucket does not exist"),
        "{error}"
    );
    // Kept, shown on REST, and still downloadable from the server.
    let app = server.api();
    let (_, _, body) = get(&app, "/api/v1/files/dev-4/nobucket").await?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(v["export_state"], "export_failed", "{v}");
    assert!(v["export_error"].as_str().is_some_and(|e| !e.is_empty()));
    let (status, _, body) = get(&app, "/api/v1/files/dev-4/nobucket/content").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sha256_hex(&body), sha256_hex(&data));
    let (_, _, metrics) = get(&app, "/metrics").await?;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        !metrics.contains("quicft_export_failures_total 0\n"),
        "{metrics}"
    );
    // The bucket appears: the retry exports it.
    tool(&["mkbucket", &store.endpoint(), BUCKET])?;
    wait_export(&server, "nobucket", Duration::from_secs(120), |s| {
        *s == ExportState::Exported
    })
    .await?;
    let stat = tool(&["stat", &store.endpoint(), BUCKET, &key("dev-4", "nobucket")])?;
    assert_eq!(stat["sha256"], sha256_hex(&data));
    Ok(())
}
