//! `quicft`: upload files, ask for their status, publish and subscribe from a shell.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use quicft_client::{
    CaSource, Client, ClientOptions, Congestion, Message, Protocol, QoS, ReasonCode, Transport,
    UploadOptions,
};

/// Where the zero-config server writes its development CA.
const DEV_CA: &str = "quicft-data/certs/ca.pem";

#[derive(Parser)]
#[command(
    name = "quicft",
    version,
    about = "MQTT over QUIC (or TLS/TCP) from the command line"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Upload files (resumable: run it again after any failure and it continues where the server
    /// stands).
    Upload(UploadArgs),
    /// Ask the server what it holds of a transfer of this client id; prints its JSON answer.
    Status(StatusArgs),
    /// Publish one message.
    Pub(PubArgs),
    /// Subscribe and print each message's payload on its own line.
    Sub(SubArgs),
    /// Download a delivery to a file (resumable: run it again after an interruption), verify its
    /// SHA-256 and report it to the server; with --wait, first wait for the next delivery announced
    /// to this client id.
    Download(DownloadArgs),
}

#[derive(Args)]
struct DownloadArgs {
    /// The delivery's id (as `POST /api/v1/deliveries` answered); none with --wait.
    id: Option<String>,
    /// Where to write the file (the partial file is FILE.part, its block list FILE.part.json).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    /// Block size (K suffix allowed): 256 to 128K.
    #[arg(long, value_parser = parse_size, default_value = "64K")]
    block_size: usize,
    /// Wait for the next delivery announced on $file-delivery/notify/{clientId}, then download it
    /// (how an update agent runs).
    #[arg(long)]
    wait: bool,
    /// No progress bar; print one JSON summary line on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct UploadArgs {
    /// Files to upload, all at once on one connection.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Transfer id (one file only). Default: derived from the path, size and modification time,
    /// so that running the same command again resumes the transfer.
    #[arg(long)]
    file_id: Option<String>,
    /// Segment size in bytes (K and M suffixes allowed). Default: 256K over QUIC, 64K over TLS/TCP.
    #[arg(long, value_parser = parse_size)]
    segment_size: Option<usize>,
    /// Bytes in flight per file, unacknowledged (K and M suffixes allowed).
    #[arg(long, value_parser = parse_size, default_value = "8M")]
    window: usize,
    /// Streams per file (QUIC; over TCP they share the one connection).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    streams: u16,
    /// No progress bar; print one JSON summary line per file on stdout.
    #[arg(long)]
    json: bool,
    /// Stop retrying after this long without progress (`90s`, `10m`, `1h`; `0` = never): exit
    /// non-zero with each unfinished file's error. What the server acknowledged stays there, and
    /// the next run resumes from it.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    give_up_after: Duration,
}

#[derive(Args)]
struct StatusArgs {
    /// The transfer's id (as printed by `quicft upload --json`).
    file_id: String,
}

#[derive(Args)]
struct Common {
    /// auto (QUIC, falling back to TLS), quic, tls or tcp.
    #[arg(long, global = true, default_value = "auto")]
    transport: TransportArg,
    /// With --transport auto: the TLS port to fall back to (default 8883); the port in --server
    /// is then the QUIC port.
    #[arg(long, global = true)]
    fallback_port: Option<u16>,
    /// Server as HOST or HOST:PORT (default ports: 14567 QUIC, 8883 TLS, 1883 TCP); an IPv6
    /// address with a port goes in brackets, as in `[::1]:14567`.
    #[arg(long, global = true, default_value = "localhost")]
    server: String,
    /// CA certificate (PEM) to trust. Default: ./quicft-data/certs/ca.pem if it exists, else the
    /// system trust store.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Name the server certificate must carry (default: the host).
    #[arg(long, global = true)]
    server_name: Option<String>,
    /// Client certificate chain (PEM) for mutual TLS; needs --key.
    #[arg(long, global = true, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, global = true, requires = "cert")]
    key: Option<PathBuf>,
    /// Client identifier (default: assigned by the server; for upload and status the --username
    /// if one is given (a server binds users to client ids, by default the username itself),
    /// else `quicft-<hostname>-<machine id digest>`, since transfers belong to a client id).
    #[arg(short = 'i', long = "client-id", global = true)]
    client_id: Option<String>,
    /// User name for the server's password authentication.
    #[arg(short = 'u', long, global = true)]
    username: Option<String>,
    /// Password (MQTT 3.1.1 needs --username with it). Better: the QUICFT_PASSWORD environment
    /// variable, --password-file, or the prompt you get with --username alone on a terminal.
    #[arg(short = 'P', long, global = true)]
    password: Option<String>,
    /// File whose first line is the password.
    #[arg(long, global = true, conflicts_with = "password")]
    password_file: Option<PathBuf>,
    /// Speak MQTT 3.1.1 instead of 5.
    #[arg(long, global = true)]
    v311: bool,
    /// Keep-alive interval in seconds (0: off).
    #[arg(short = 'k', long, global = true, default_value_t = 30)]
    keepalive: u16,
    /// Give up connecting after this many seconds.
    #[arg(long, global = true, default_value_t = 10)]
    connect_timeout: u64,
    /// QUIC congestion controller for what this device sends: delay (quicft's delay-aware,
    /// loss-tolerant controller: full goodput under random loss, short queue ahead of
    /// telemetry), bbr, cubic or newreno.
    #[arg(long, global = true, default_value = "delay")]
    congestion: Congestion,
}

#[derive(Args)]
struct PubArgs {
    /// Topic to publish to.
    #[arg(short = 't', long)]
    topic: String,
    #[command(flatten)]
    payload: Payload,
    /// Quality of service: 0, 1 or 2.
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Ask the server to retain the message.
    #[arg(short = 'r', long)]
    retain: bool,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Payload {
    /// The payload.
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// Send this file's contents as the payload.
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    /// Send an empty payload.
    #[arg(short = 'n', long = "null-message")]
    null: bool,
}

#[derive(Args)]
struct SubArgs {
    /// Topic filter; repeat for several.
    #[arg(short = 't', long = "topic", required = true)]
    filters: Vec<String>,
    /// Maximum QoS to receive: 0, 1 or 2.
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Exit after this many messages.
    #[arg(short = 'C', long = "count")]
    count: Option<u64>,
    /// Print the topic before each payload.
    #[arg(short = 'v', long)]
    verbose: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUICFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quicft: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quicft: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut options = options(&cli.common)?;
    if options.client_id.is_empty()
        && matches!(
            cli.command,
            Command::Upload(_) | Command::Status(_) | Command::Download(_)
        )
    {
        options.client_id = match &options.username {
            Some(user) => user.clone(),
            None => default_client_id(),
        };
    }
    match cli.command {
        Command::Upload(args) => upload(options, args).await,
        Command::Status(args) => status(options, args).await,
        Command::Pub(args) => publish(options, args).await,
        Command::Sub(args) => subscribe(options, args).await,
        Command::Download(args) => download(options, args).await,
    }
}

async fn download(options: ClientOptions, args: DownloadArgs) -> anyhow::Result<()> {
    let client = connect(options).await?;
    let id = match (args.id, args.wait) {
        (Some(id), false) => id,
        (None, true) => {
            let topic = quicft_proto::file_delivery::notify_topic(&client.client_id());
            let mut sub = client.subscribe(topic.as_str(), QoS::AtLeastOnce).await?;
            if !args.json {
                eprintln!("waiting for a delivery on {topic}");
            }
            let note = sub.recv().await?;
            let n: quicft_proto::file_delivery::Notification =
                serde_json::from_slice(&note.payload).context("bad notification")?;
            n.id
        }
        _ => bail!("give a delivery id or --wait, not both"),
    };
    let block_size = u32::try_from(args.block_size).context("--block-size")?;
    let bar = (!args.json).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let progress = bar.clone().map(|b| {
        std::sync::Arc::new(move |done: u64, total: u64| {
            b.set_length(total);
            b.set_position(done);
        }) as std::sync::Arc<dyn Fn(u64, u64) + Send + Sync>
    });
    let opts = quicft_client::DownloadOptions {
        block_size,
        on_progress: progress,
        ..quicft_client::DownloadOptions::default()
    };
    let result = client.download(&id, &args.output, opts).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), client.disconnect()).await;
    let r = result.with_context(|| format!("download of {id} failed (run again to resume)"))?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        eprintln!(
            "{}: {} bytes, SHA-256 {} verified ({} fetched, {} from an earlier run)",
            r.path.display(),
            r.size,
            r.sha256,
            r.bytes_fetched,
            r.resumed_bytes
        );
    }
    Ok(())
}

/// `--transport`: one transport, or QUIC with TLS as the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransportArg {
    Auto,
    Only(Transport),
}

impl std::str::FromStr for TransportArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(TransportArg::Auto);
        }
        s.parse()
            .map(TransportArg::Only)
            .map_err(|_| format!("unknown transport {s:?} (auto, quic, tls or tcp)"))
    }
}

/// `4096`, `64K`, `8M` (binary units).
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: usize = digits.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        _ => return Err(format!("bad size unit in {s:?} (K or M)")),
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("bad size {s:?}")),
        Some(v) => Ok(v),
    }
}

/// A stable client id for this machine: transfers are keyed by client id, so a second run must
/// use the same one to resume. The host name alone is not enough: devices cloned from one image
/// share it and would take each other's sessions and transfers; the machine id (systemd's
/// /etc/machine-id, regenerated per installation) tells them apart.
fn default_client_id() -> String {
    let machine = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty());
    let host = host_client_id();
    match machine {
        Some(id) => {
            use sha2::Digest;
            let digest = hex::encode(sha2::Sha256::digest(id.as_bytes()));
            format!("{host}-{}", &digest[..8])
        }
        None => host,
    }
}

/// `quicft-<hostname>`, with characters outside `[A-Za-z0-9.-]` replaced.
fn host_client_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "device".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("quicft-{host}")
}

/// The one-line summary `--json` prints per file.
#[derive(serde::Serialize)]
struct Summary<'a> {
    file: String,
    file_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    goodput_bps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transport: Option<Transport>,
    /// Reconnects of the connection while this upload ran (also when it failed).
    reconnects: u32,
    /// Segment bytes this run handed to the connection, re-sends included.
    bytes_sent: u64,
    /// Of those, bytes sent more than once (after a reconnect, 0x80, 0x97 or 0x10); counted when
    /// handed to the connection, so a segment still queued when a connection dropped counts too.
    /// Transport-level retransmissions (TCP, QUIC) are not in it.
    bytes_resent: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn upload(options: ClientOptions, args: UploadArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if args.file_id.is_some() && args.files.len() > 1 {
        bail!("--file-id names one transfer: give one file with it");
    }
    let client = connect(options).await?;
    let bars = (!args.json && std::io::stderr().is_terminal()).then(indicatif::MultiProgress::new);
    let say = Say(bars.clone());
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    let mut running = Vec::new();
    for file in &args.files {
        let opts = UploadOptions {
            file_id: args.file_id.clone(),
            segment_size: args.segment_size,
            window: args.window,
            streams: usize::from(args.streams),
            ..UploadOptions::default()
        };
        let started = match client.upload(file.as_path(), opts).await {
            Ok(u) => u,
            Err(e) => {
                // Reported with the others below; the remaining files still go.
                let e = anyhow::Error::new(e).context("cannot start the upload");
                let task = tokio::spawn(async move { Err(e) });
                // Its line takes a place among the bars, so that it is not drawn over.
                let bar = bars.as_ref().map(|b| b.add(indicatif::ProgressBar::new(0)));
                running.push((file.clone(), String::new(), None, task, bar));
                continue;
            }
        };
        let mut shown = None;
        if let Some(bars) = &bars {
            let bar = bars.add(indicatif::ProgressBar::new(0));
            shown = Some(bar.clone());
            bar.set_style(style.clone());
            bar.set_prefix(
                file.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            );
            let mut progress = started.progress();
            tokio::spawn(async move {
                loop {
                    let p = progress.borrow_and_update().clone();
                    bar.set_length(p.total.unwrap_or(0));
                    bar.set_position(p.bytes_acked);
                    bar.set_message(match p.state {
                        quicft_client::UploadState::Uploading => String::new(),
                        s => format!("{s:?}").to_lowercase(),
                    });
                    if progress.changed().await.is_err() {
                        bar.finish();
                        return;
                    }
                }
            });
        }
        let file_id = started.file_id().to_owned();
        let progress = started.progress();
        if !args.json {
            tokio::spawn(say_if_resuming(
                say.clone(),
                file.clone(),
                started.progress(),
            ));
        }
        let task = tokio::spawn(async move { started.wait().await.map_err(anyhow::Error::new) });
        running.push((file.clone(), file_id, Some(progress), task, shown));
    }
    let watched: Vec<_> = running.iter().filter_map(|r| r.2.clone()).collect();
    let stall = stall_watch(say.clone(), client.clone(), watched, args.give_up_after);
    tokio::pin!(stall);
    let mut gave_up: Option<String> = None;
    let mut failed = 0usize;
    for (file, file_id, progress, mut task, bar) in running {
        let result = match &gave_up {
            Some(why) => {
                task.abort();
                Err(anyhow::anyhow!("{why}"))
            }
            None => tokio::select! {
                r = &mut task => match r {
                    Ok(r) => r,
                    Err(e) => Err(anyhow::anyhow!("upload task failed: {e}")),
                },
                why = &mut stall => {
                    task.abort();
                    gave_up = Some(why.clone());
                    Err(anyhow::anyhow!("{why}"))
                }
                () = interrupted() => {
                    task.abort();
                    let why = "interrupted (the server keeps what it acknowledged; run the same \
                               command again to resume)";
                    gave_up = Some(why.to_owned());
                    Err(anyhow::anyhow!("{why}"))
                }
            },
        };
        if gave_up.is_some() && !args.json {
            if let Some(p) = progress.as_ref().map(|p| p.borrow().clone()) {
                say.line(format_args!(
                    "quicft: {}: the server holds {} of {} bytes",
                    file.display(),
                    p.bytes_acked,
                    p.total.map_or_else(|| "?".to_owned(), |t| t.to_string())
                ));
            }
        }
        let summary = match &result {
            Ok(r) => Summary {
                file: file.display().to_string(),
                file_id: &file_id,
                bytes: Some(r.bytes),
                seconds: Some(r.seconds),
                goodput_bps: Some(r.goodput_bps),
                transport: Some(r.transport),
                reconnects: r.reconnects,
                bytes_sent: r.bytes_sent,
                bytes_resent: r.bytes_resent,
                sha256: Some(&r.sha256),
                error: None,
            },
            Err(e) => {
                // What the failed run cost so far, from its last progress update.
                let p = progress.as_ref().map(|p| p.borrow().clone());
                Summary {
                    file: file.display().to_string(),
                    file_id: &file_id,
                    bytes: None,
                    seconds: None,
                    goodput_bps: None,
                    transport: None,
                    reconnects: p.as_ref().map_or(0, |p| p.reconnects),
                    bytes_sent: p.as_ref().map_or(0, |p| p.bytes_sent),
                    bytes_resent: p.as_ref().map_or(0, |p| p.bytes_resent),
                    sha256: None,
                    error: Some(format!("{e:#}")),
                }
            }
        };
        if args.json {
            println!("{}", serde_json::to_string(&summary)?);
        }
        match result {
            // Nothing had to be sent: the server already held the whole file (same file id).
            Ok(r) if !args.json && r.bytes_sent == 0 && r.bytes > 0 => say.file(
                bar.as_ref(),
                format_args!(
                    "{}: already on the server ({} bytes, id {}); nothing sent",
                    file.display(),
                    r.bytes,
                    r.file_id
                ),
            ),
            Ok(r) if !args.json => say.file(
                bar.as_ref(),
                format_args!(
                    "{}: {} bytes in {:.2} s ({:.1} Mbit/s) over {}, id {}{}",
                    file.display(),
                    r.bytes,
                    r.seconds,
                    r.goodput_bps / 1e6,
                    r.transport,
                    r.file_id,
                    if r.reconnects > 0 {
                        format!(
                            ", {} reconnects, {} bytes re-sent",
                            r.reconnects, r.bytes_resent
                        )
                    } else {
                        String::new()
                    }
                ),
            ),
            Ok(_) => {}
            Err(e) => {
                failed += 1;
                if !args.json {
                    say.file(
                        bar.as_ref(),
                        format_args!("quicft: {}: {e:#}", file.display()),
                    );
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), client.disconnect()).await;
    if failed > 0 {
        bail!("{failed} of {} uploads failed", args.files.len());
    }
    Ok(())
}

/// Says so when an upload starts from what the server already holds.
async fn say_if_resuming(
    say: Say,
    file: PathBuf,
    mut progress: tokio::sync::watch::Receiver<quicft_client::Progress>,
) {
    loop {
        let p = progress.borrow_and_update().clone();
        // Past Starting, the server's status answer is in.
        if let (Some(total), false) = (p.total, p.state == quicft_client::UploadState::Starting) {
            if p.bytes_acked > 0 && p.bytes_acked < total {
                say.line(format_args!(
                    "quicft: {}: resuming: the server holds {} of {} bytes",
                    file.display(),
                    p.bytes_acked,
                    total
                ));
            }
            return;
        }
        if progress.changed().await.is_err() {
            return;
        }
    }
}

/// Says on stderr when the connection is lost and each retry fails, and when it is back; resolves
/// with the reason to give up once no upload has made progress for `give_up` (never when it is 0).
async fn stall_watch(
    say: Say,
    client: Client,
    progress: Vec<tokio::sync::watch::Receiver<quicft_client::Progress>>,
    give_up: Duration,
) -> String {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let (mut last_sum, mut last_change) = (None, tokio::time::Instant::now());
    let mut reported: Option<u32> = None;
    loop {
        tick.tick().await;
        match client.state() {
            quicft_client::ConnectionState::Reconnecting { attempt, error }
                if reported != Some(attempt) =>
            {
                say.line(format_args!(
                    "quicft: connection lost ({error}); retrying (attempt {})",
                    attempt + 1
                ));
                reported = Some(attempt);
            }
            quicft_client::ConnectionState::Connected(info) if reported.is_some() => {
                say.line(format_args!("quicft: reconnected over {}", info.transport));
                say_if_fell_back(&say, &info);
                reported = None;
            }
            _ => {}
        }
        // A finished upload (its sender gone) counts as progress once.
        let sum: u64 = progress
            .iter()
            .map(|p| {
                p.borrow()
                    .bytes_acked
                    .saturating_add(u64::from(p.has_changed().is_err()))
            })
            .sum();
        if last_sum != Some(sum) {
            (last_sum, last_change) = (Some(sum), tokio::time::Instant::now());
        } else if !give_up.is_zero() && last_change.elapsed() >= give_up {
            return format!(
                "no progress for {}: giving up (the server keeps what it acknowledged; run the \
                 same command again to resume)",
                humantime(give_up)
            );
        }
    }
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, 0) => format!("{m} min"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

/// `90`, `90s`, `10m`, `1h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("bad duration {s:?} (e.g. 90s, 10m, 1h)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        _ => return Err(format!("bad duration unit in {s:?} (s, m or h)")),
    };
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

async fn status(options: ClientOptions, args: StatusArgs) -> anyhow::Result<()> {
    let client_id = options.client_id.clone();
    let client = connect(options).await?;
    let status = client
        .file_status(&args.file_id)
        .await
        .context("status query failed")?;
    let _ = tokio::time::timeout(Duration::from_secs(5), client.disconnect()).await;
    if status.reason_code == quicft_proto::ft::FtReason::Restart.code() {
        bail!(
            "the server holds nothing for file {:?} of client {client_id:?} (a file id names a \
             transfer of one client id: pass the -i the upload used)",
            args.file_id
        );
    }
    println!("{}", serde_json::to_string_pretty(&status)?);
    Ok(())
}

fn qos(n: u8) -> QoS {
    QoS::from_u8(n).unwrap_or(QoS::AtMostOnce)
}

async fn connect(options: ClientOptions) -> anyhow::Result<Client> {
    let what = format!(
        "{}:{} over {}",
        options.host,
        options.port(),
        options.transport
    );
    let ca_hint = match &options.tls.ca {
        CaSource::Platform => {
            " (to trust a server's dev CA, pass --ca quicft-data/certs/ca.pem)".to_owned()
        }
        CaSource::File(path) => format!(
            " (the server's certificate is not signed by the CA in {}: a quicft server's \
             development CA is <its data dir>/certs/ca.pem)",
            path.display()
        ),
        _ => String::new(),
    };
    let platform = matches!(options.tls.ca, CaSource::Platform);
    let name_hint = format!(
        " (connect by one of the names the certificate has, or pass --server-name NAME with one \
         of them; {:?} was checked)",
        options.server_name()
    );
    let (client_id, user, cert) = (
        options.client_id.clone(),
        options.username.clone(),
        options.tls.client_cert.is_some(),
    );
    let client = Client::connect(options).await.map_err(|e| {
        let hint = match &e {
            quicft_client::Error::ConnectionRefused { code, .. } => {
                refusal_hint(*code, &client_id, user.as_deref(), cert)
            }
            e if e.to_string().contains("not valid for name") => name_hint,
            e if e.to_string().contains("UnknownIssuer") => ca_hint,
            e if e.to_string().contains("certificate") && platform => ca_hint,
            _ => String::new(),
        };
        anyhow::Error::new(e).context(format!("cannot connect to {what}{hint}"))
    })?;
    say_if_fell_back(&Say::default(), &client.info());
    Ok(client)
}

/// Says why a device is on its fallback transport: an operator reading "over tls" wonders.
fn say_if_fell_back(say: &Say, info: &quicft_client::ConnectionInfo) {
    if let Some(why) = &info.fell_back {
        say.line(format_args!(
            "quicft: {why}; connected over {} to {} instead",
            info.transport, info.remote
        ));
    }
}

/// Lines for the operator on standard error. While progress bars are drawn there, a plain
/// `eprintln!` is drawn over by the bars' next refresh (with several files, a finished file's
/// summary line vanished that way): the bars are taken down for the line, then drawn again below
/// it. A file's own summary takes the place of its bar ([`Say::file`]).
#[derive(Clone, Default)]
struct Say(Option<indicatif::MultiProgress>);

impl Say {
    /// A file's summary line: in place of its bar when it has one, else as a line.
    fn file(&self, bar: Option<&indicatif::ProgressBar>, text: std::fmt::Arguments<'_>) {
        match bar {
            Some(bar) => {
                // The bar's task only ever sets the message, length and position: the prefix,
                // alone in the template, is the line.
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{prefix}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar.set_prefix(text.to_string());
                bar.finish();
            }
            None => self.line(text),
        }
    }

    fn line(&self, text: std::fmt::Arguments<'_>) {
        match &self.0 {
            Some(bars) => bars.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }
}

/// What to do about a CONNACK refusal, in the words of the options that cause it.
fn refusal_hint(code: ReasonCode, client_id: &str, user: Option<&str>, cert: bool) -> String {
    match code {
        ReasonCode::BAD_USER_NAME_OR_PASSWORD => {
            ": bad user name or password (check -u and the password)".into()
        }
        ReasonCode::NOT_AUTHORIZED | ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => {
            match (user, cert) {
                (_, true) => format!(
                    ": not authorized: with a client certificate the server may require the \
                 certificate's name as client id (this was {client_id:?}): pass -i NAME"
                ),
                (Some(u), false) => format!(
                ": not authorized: user {u:?} may not use client id {client_id:?} (servers bind \
                 users to client ids, by default the username: -i {u})"
            ),
                (None, false) => {
                    ": not authorized: this server wants credentials (-u, and a password \
                 from QUICFT_PASSWORD, --password-file or the prompt) or a client certificate \
                 (--cert, --key)"
                        .into()
                }
            }
        }
        _ => String::new(),
    }
}

async fn publish(options: ClientOptions, args: PubArgs) -> anyhow::Result<()> {
    let payload = match (&args.payload.message, &args.payload.file) {
        (Some(m), _) => Bytes::from(m.clone().into_bytes()),
        (None, Some(path)) => Bytes::from(
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        ),
        (None, None) => Bytes::new(),
    };
    let client = connect(options).await?;
    let message = Message::new(args.topic, payload)
        .qos(qos(args.qos))
        .retain(args.retain);
    let outcome = client.send(message).await.context("publish failed");
    let disconnected = client.disconnect().await;
    let outcome = outcome?;
    if !outcome.is_success() {
        let why = outcome.reason.as_deref().or(describe(outcome.code));
        match why {
            Some(why) => bail!("publish refused by the server: {} ({why})", outcome.code),
            None => bail!("publish refused by the server: {}", outcome.code),
        }
    }
    disconnected.context("disconnect failed")?;
    Ok(())
}

async fn subscribe(options: ClientOptions, args: SubArgs) -> anyhow::Result<()> {
    let client = connect(options).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    for filter in &args.filters {
        let mut sub = client
            .subscribe(filter.as_str(), qos(args.qos))
            .await
            .with_context(|| format!("cannot subscribe to {filter}"))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                let next = sub.recv().await;
                let stop = next.is_err();
                if tx.send(next).await.is_err() || stop {
                    return;
                }
            }
        });
    }
    drop(tx);

    let mut seen = 0u64;
    let mut stdout = std::io::stdout().lock();
    loop {
        if args.count.is_some_and(|c| seen >= c) {
            break;
        }
        let next = tokio::select! {
            next = rx.recv() => next,
            _ = interrupted() => break,
        };
        let msg = match next {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => return Err(e).context("subscription ended"),
            None => bail!("subscription ended"),
        };
        if args.verbose {
            stdout.write_all(msg.topic.as_bytes())?;
            stdout.write_all(b" ")?;
        }
        stdout.write_all(&msg.payload)?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
        seen += 1;
    }
    drop(stdout);
    // A disconnect that fails after we got what we came for is not worth a failure exit.
    if let Err(e) = tokio::time::timeout(Duration::from_secs(5), client.disconnect()).await {
        tracing::debug!(%e, "disconnect timed out");
    }
    Ok(())
}

/// Names of the PUBACK/PUBREC error codes a server may answer (MQTT 5.0 §3.4.2.1).
fn describe(code: ReasonCode) -> Option<&'static str> {
    Some(match code {
        ReasonCode::UNSPECIFIED_ERROR => "unspecified error",
        ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR => "implementation specific error",
        ReasonCode::NOT_AUTHORIZED => "not authorized",
        ReasonCode::TOPIC_NAME_INVALID => "topic name invalid",
        ReasonCode::PACKET_IDENTIFIER_IN_USE => "packet identifier in use",
        ReasonCode::QUOTA_EXCEEDED => "quota exceeded",
        ReasonCode::PAYLOAD_FORMAT_INVALID => "payload format invalid",
        _ => return None,
    })
}

/// Ctrl-C, or SIGTERM on Unix: either ends `sub` with a clean DISCONNECT.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn options(c: &Common) -> anyhow::Result<ClientOptions> {
    let (host, port) = split_server(&c.server)?;
    let mut o = match c.transport {
        TransportArg::Auto => {
            let mut o = ClientOptions::auto(host);
            o.fallback_port = c.fallback_port;
            o
        }
        TransportArg::Only(t) => ClientOptions::new(host, t),
    };
    o.port = port;
    o.protocol = if c.v311 { Protocol::V311 } else { Protocol::V5 };
    o.client_id = c.client_id.clone().unwrap_or_default();
    o.username = c.username.clone();
    o.password = password(c)?.map(|p| Bytes::from(p.into_bytes()));
    o.keep_alive = c.keepalive;
    o.connect_timeout = Duration::from_secs(c.connect_timeout.max(1));
    o.quic.congestion = c.congestion.clone();
    o.tls.server_name = c.server_name.clone();
    o.tls.ca = match &c.ca {
        Some(path) => CaSource::File(path.clone()),
        None if std::path::Path::new(DEV_CA).exists() => CaSource::File(DEV_CA.into()),
        None => CaSource::Platform,
    };
    if let (Some(cert), Some(key)) = (&c.cert, &c.key) {
        o.tls.client_cert = Some(quicft_client::ClientCert {
            cert_chain: cert.clone(),
            key: key.clone(),
        });
    }
    Ok(o)
}

/// The password: -P, else QUICFT_PASSWORD, else the first line of --password-file, else a prompt
/// without echo when a username is given on a terminal.
fn password(c: &Common) -> anyhow::Result<Option<String>> {
    use std::io::IsTerminal;
    if let Some(p) = &c.password {
        return Ok(Some(p.clone()));
    }
    if let Ok(p) = std::env::var("QUICFT_PASSWORD") {
        return Ok(Some(p));
    }
    if let Some(path) = &c.password_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--password-file {}", path.display()))?;
        return Ok(Some(text.lines().next().unwrap_or("").to_owned()));
    }
    if c.username.is_some() && std::io::stdin().is_terminal() {
        return Ok(Some(rpassword::prompt_password("Password: ")?));
    }
    Ok(None)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address.
fn split_server(s: &str) -> anyhow::Result<(String, Option<u16>)> {
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .with_context(|| format!("bad port in --server {s:?}"))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            bail!("missing ] in --server {s:?}");
        };
        return match after.strip_prefix(':') {
            Some(p) => Ok((host.to_owned(), Some(parse_port(p)?))),
            None if after.is_empty() => Ok((host.to_owned(), None)),
            None => bail!("bad --server {s:?}"),
        };
    }
    match s.matches(':').count() {
        0 => Ok((s.to_owned(), None)),
        1 => {
            let (host, p) = s.split_once(':').unwrap_or((s, ""));
            Ok((host.to_owned(), Some(parse_port(p)?)))
        }
        _ => Ok((s.to_owned(), None)),
    }
    .and_then(|(h, p)| {
        if h.is_empty() {
            bail!("empty host in --server {s:?}")
        } else {
            Ok((h, p))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_and_status_parse_with_defaults() {
        let cli = Cli::try_parse_from(["quicft", "upload", "big.bin"]).expect("parses");
        assert_eq!(cli.common.transport, TransportArg::Auto);
        // The device sends the file data: the delay-aware controller by default, as the server.
        assert!(matches!(cli.common.congestion, Congestion::Delay));
        let Command::Upload(u) = cli.command else {
            panic!("upload expected")
        };
        assert_eq!((u.streams, u.window, u.json), (1, 8 << 20, false));
        let cli = Cli::try_parse_from([
            "quicft",
            "upload",
            "a",
            "b",
            "--segment-size",
            "64K",
            "--streams",
            "4",
            "--json",
            "--transport",
            "tls",
            "--client-id",
            "dev-1",
            "--congestion",
            "cubic",
        ])
        .expect("parses");
        assert!(matches!(cli.common.congestion, Congestion::Cubic));
        let Command::Upload(u) = cli.command else {
            panic!("upload expected")
        };
        assert_eq!(u.segment_size, Some(64 << 10));
        assert_eq!(u.files.len(), 2);
        assert!(
            Cli::try_parse_from(["quicft", "upload"]).is_err(),
            "needs a file"
        );
        assert!(Cli::try_parse_from(["quicft", "status", "f1"]).is_ok());
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert!(parse_size("0").is_err() && parse_size("3G").is_err());
    }

    #[test]
    fn server_forms() {
        let ok = |s: &str| split_server(s).expect(s);
        assert_eq!(ok("localhost"), ("localhost".into(), None));
        assert_eq!(ok("example.com:1883"), ("example.com".into(), Some(1883)));
        assert_eq!(ok("[::1]:14567"), ("::1".into(), Some(14567)));
        assert_eq!(ok("[::1]"), ("::1".into(), None));
        assert_eq!(ok("::1"), ("::1".into(), None));
        assert!(split_server("host:notaport").is_err());
        assert!(split_server(":1883").is_err());
    }

    #[test]
    fn cli_parses_pub_and_sub() {
        let cli = Cli::try_parse_from([
            "quicft",
            "pub",
            "-t",
            "a/b",
            "-m",
            "hi",
            "--qos",
            "2",
            "--retain",
            "--transport",
            "tcp",
        ])
        .expect("parses");
        assert_eq!(cli.common.transport, TransportArg::Only(Transport::Tcp));
        assert!(matches!(
            cli.command,
            Command::Pub(PubArgs {
                qos: 2,
                retain: true,
                ..
            })
        ));
        let cli = Cli::try_parse_from([
            "quicft", "--server", "h:1", "sub", "-t", "x/#", "-t", "y", "-C", "3",
        ])
        .expect("parses");
        assert!(matches!(
            cli.command,
            Command::Sub(SubArgs { count: Some(3), .. })
        ));
        assert!(
            Cli::try_parse_from(["quicft", "pub", "-t", "a"]).is_err(),
            "needs a payload"
        );
        assert!(Cli::try_parse_from(["quicft", "pub", "-t", "a", "-m", "x", "-q", "3"]).is_err());
    }
}
