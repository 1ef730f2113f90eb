//! The S3 export against a standard client (bench/EXPORT.md): one file exported by quicft's S3
//! exporter and uploaded by boto3's multipart upload (8 MiB parts, 4 at once, like quicft's
//! defaults) to the same local S3-compatible store (moto's server mode, `tests/python/s3_store.py`),
//! interleaved, `--runs` times each; medians.
//!
//! quicft's side runs a server in-process and feeds the file through the service's own commands
//! (init, 4 MiB segments, fin: no network, which is not what is measured here), then times
//! * export: from fin's 0x00 (the file is durable on the server) to the export being `exported`
//!   (uploaded, ETag and size checked, manifest written);
//! * fin → object: from sending fin (which hashes the whole file first) to `exported`.
//!
//! Usage: export_bench [--size BYTES] [--runs N]   (python3 with moto and boto3:
//! `pip install -r tests/python/requirements.txt`)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use quicft_proto::ft::{Command as FtCommand, FileId, FtReason, FtTopic, Mode, Sha256};
use quicft_server::ft::{ExportBackend, ExportState, S3Config};
use sha2::{Digest, Sha256 as Sha};

#[derive(Parser)]
struct Args {
    /// File size in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    size: u64,
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const BUCKET: &str = "quicft-bench";
const SEG: usize = 4 << 20;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/s3_store.py")
}

fn tool(args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new("python3").arg(script()).args(args).output()?;
    if !out.status.success() {
        bail!(
            "s3_store.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(text.trim()).unwrap_or(serde_json::Value::Null))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn topic(file_id: &str, command: FtCommand) -> Result<FtTopic> {
    Ok(FtTopic {
        mode: Mode::Sync,
        file_id: FileId::parse(file_id)?,
        command,
    })
}

/// One quicft export of `file`: (export seconds, fin-to-object seconds).
async fn quicft_run(
    endpoint: &str,
    file: &Path,
    size: u64,
    sha: &str,
    run: usize,
) -> Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let mut cfg = quicft_server::config::Config::with_data_dir(dir.path().to_path_buf());
    cfg.listeners.quic = None;
    cfg.listeners.tls = None;
    cfg.listeners.http = None;
    cfg.listeners.tcp = Some("127.0.0.1:0".parse()?);
    cfg.file_transfer.min_free_disk = 0;
    cfg.file_transfer.max_file_size = size.max(1 << 30) * 2;
    cfg.file_transfer.client_quota = size.max(1 << 30) * 4;
    cfg.export.backend = ExportBackend::S3;
    cfg.export.s3 = S3Config {
        endpoint: Some(endpoint.to_owned()),
        region: Some("us-east-1".into()),
        bucket: BUCKET.into(),
        allow_http: true,
        access_key_id: Some("quicft-test".into()),
        secret_access_key: Some("quicft-test-secret".into()),
        ..S3Config::default()
    };
    let server = quicft_server::Server::start(cfg).await?;
    let ft = server.file_transfer().clone();
    let file_id = format!("run{run}");
    let meta = serde_json::json!({ "name": "big.bin", "size": size }).to_string();
    let out = ft
        .handle(
            "bench",
            &topic(&file_id, FtCommand::Init)?,
            Bytes::from(meta),
        )
        .await;
    if out.reason != FtReason::Success {
        bail!("init: {out:?}");
    }
    use std::io::Read;
    let mut f = std::fs::File::open(file)?;
    let mut offset = 0u64;
    let mut buf = vec![0u8; SEG];
    while offset < size {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let seg = Bytes::copy_from_slice(&buf[..n]);
        let cmd = FtCommand::Segment {
            offset,
            checksum: None,
        };
        let out = ft.handle("bench", &topic(&file_id, cmd)?, seg).await;
        if out.reason != FtReason::Success {
            bail!("segment {offset}: {out:?}");
        }
        offset += n as u64;
    }
    let fin = FtCommand::Fin {
        size,
        checksum: Some(Sha256::parse_hex(sha)?),
    };
    let sent = Instant::now();
    let out = ft
        .handle("bench", &topic(&file_id, fin)?, Bytes::new())
        .await;
    if out.reason != FtReason::Success {
        bail!("fin: {out:?}");
    }
    let answered = Instant::now();
    loop {
        let state = ft
            .finished()
            .into_iter()
            .find(|x| x.manifest.file_id == file_id)
            .map(|x| x.export);
        match state {
            Some(ExportState::Exported) => break,
            Some(ExportState::ExportFailed { error, .. }) => bail!("export failed: {error}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        if sent.elapsed() > Duration::from_secs(3600) {
            bail!("export did not finish");
        }
    }
    let done = Instant::now();
    server.shutdown().await;
    tool(&["rm", endpoint, BUCKET, &format!("bench/{file_id}/big.bin")])?;
    Ok((
        done.duration_since(answered).as_secs_f64(),
        done.duration_since(sent).as_secs_f64(),
    ))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    use std::io::BufRead;
    let mut store = Command::new("python3")
        .arg(script())
        .args(["serve", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("python3 s3_store.py serve")?;
    let mut line = String::new();
    std::io::BufReader::new(store.stdout.take().context("stdout")?).read_line(&mut line)?;
    let endpoint = format!("http://127.0.0.1:{}", line.trim());
    let result = bench(&args, &endpoint).await;
    let _ = store.kill();
    let _ = store.wait();
    result
}

async fn bench(args: &Args, endpoint: &str) -> Result<()> {
    tool(&["mkbucket", endpoint, BUCKET])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("big.bin");
    let sha = {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let mut h = Sha::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut block = vec![0u8; 1 << 20];
        let mut left = args.size;
        while left > 0 {
            for b in block.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let n = usize::try_from(left.min(block.len() as u64))?;
            f.write_all(&block[..n])?;
            h.update(&block[..n]);
            left -= n as u64;
        }
        hex::encode(h.finalize())
    };
    let (mut export, mut e2e, mut boto) = (Vec::new(), Vec::new(), Vec::new());
    let file_s = file.to_string_lossy().into_owned();
    for run in 0..args.runs {
        let (x, y) = quicft_run(endpoint, &file, args.size, &sha, run).await?;
        let key = format!("boto3/run{run}");
        let b = tool(&["put", endpoint, BUCKET, &key, &file_s])?["seconds"]
            .as_f64()
            .context("seconds")?;
        tool(&["rm", endpoint, BUCKET, &key])?;
        eprintln!("run {run}: quicft export {x:.2} s (fin→object {y:.2} s), boto3 {b:.2} s");
        export.push(x);
        e2e.push(y);
        boto.push(b);
    }
    let mib = args.size as f64 / (1 << 20) as f64;
    let (x, y, b) = (median(export), median(e2e), median(boto));
    println!("| | median s | MiB/s |");
    println!("|---|---|---|");
    println!(
        "| quicft export (fin answered → exported) | {x:.2} | {:.1} |",
        mib / x
    );
    println!(
        "| quicft fin sent → object complete | {y:.2} | {:.1} |",
        mib / y
    );
    println!(
        "| boto3 multipart upload (8 MiB × 4) | {b:.2} | {:.1} |",
        mib / b
    );
    println!("\nquicft / boto3 throughput: {:.2}", b / x);
    Ok(())
}
