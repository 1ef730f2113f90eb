//! `ft_bench`: durable file-upload goodput of quicft against its two ceilings, in one run (issue 3,
//! "Speed").
//!
//! Measured side by side, rounds interleaved (the order rotates every round), on loopback:
//! * **quicft QUIC** (and **quicft TCP**): one file uploaded EMQX-style to a real `quicft-server`
//!   with durable acks: init, pipelined segments, sync fin; time from init to fin's PUBACK.
//! * **raw quinn**: the same bytes over one QUIC stream with the server's certificate, ALPN and
//!   transport settings, to a receiver that discards them and confirms the count.
//! * **disk**: the same bytes written sequentially into the server's store directory in 1 MiB
//!   writes with one fdatasync at the end.
//!
//! The target is quicft QUIC ≥ 0.8 × the lower of the two ceilings. See bench/FT.md.
//!
//! ```text
//! cargo build --release -p quicft-server -p quicft-bench
//! target/release/ft_bench [--size 1G] [--segment 1M] [--window 16] [--repeat 3]
//! target/release/ft_bench --smoke          # CI: 8 MiB once; exit 1 on any failure
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use quicft_bench::ft_load::{self, MqttConn, RawSink, Transport, UploadReport, UploadShape};
use quicft_bench::launch::FtServer;
use quicft_bench::procfs::{self, MachineTicks};
use quicft_bench::size::{fmt_size, parse_size};
use quicft_server::config::QuicConfig;
use sha2::Digest;

/// Durable upload goodput of quicft vs raw quinn and vs the disk, on loopback.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// File size (binary units: 1G, 256M, 8M).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    size: u64,
    /// Segment payload size.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    segment: u64,
    /// Segments in flight (un-acknowledged) per upload.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Rounds; each measures everything once, in a rotated order. Medians are reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// What to measure (comma-separated): quic, tcp, raw, disk.
    #[arg(long, value_delimiter = ',', default_value = "quic,tcp,raw,disk")]
    only: Vec<String>,
    /// Where the run's directory (server data dir, disk-test file, logs) is created. It must be on
    /// the disk you mean to measure.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: PathBuf,
    /// quicft-server binary [default: next to this one, i.e. target/release/quicft-server].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// TOML configuration passed to the server with --config; its [quic] section is also what the
    /// bench's own QUIC ends use (client and raw-quinn receiver).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Extra environment for the server process only, KEY=VALUE (repeatable), e.g.
    /// MALLOC_MMAP_THRESHOLD_=33554432 to try glibc malloc settings.
    #[arg(long, value_parser = parse_env)]
    server_env: Vec<(String, String)>,
    /// Keep the run directory (server log, data dir) instead of deleting it.
    #[arg(long)]
    keep: bool,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// CI smoke test: 8 MiB, one round, everything measured; exit 1 on any failure.
    #[arg(long)]
    smoke: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    QuicftQuic,
    QuicftTcp,
    RawQuinn,
    Disk,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::QuicftQuic => "quicft QUIC (durable)",
            Kind::QuicftTcp => "quicft TCP (durable)",
            Kind::RawQuinn => "raw quinn stream",
            Kind::Disk => "disk write+fdatasync",
        }
    }

    fn parse(s: &str) -> Result<Kind> {
        Ok(match s.trim() {
            "quic" => Kind::QuicftQuic,
            "tcp" => Kind::QuicftTcp,
            "raw" => Kind::RawQuinn,
            "disk" => Kind::Disk,
            other => bail!("unknown measurement {other:?} (quic, tcp, raw, disk)"),
        })
    }
}

/// One timed measurement.
#[derive(Debug, Clone, serde::Serialize)]
struct Sample {
    kind: Kind,
    round: usize,
    /// Position in its round (0 = first).
    position: usize,
    secs: f64,
    mib_per_s: f64,
    /// quicft only: init's PUBACK, last segment's PUBACK, fin's PUBACK (s from init).
    #[serde(skip_serializing_if = "Option::is_none")]
    phases: Option<[f64; 3]>,
    /// quicft only: CPU seconds (user, system) of the server process during the upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    server_cpu: Option<[f64; 2]>,
    /// CPU seconds of the bench process (client; for raw quinn also the receiver).
    bench_cpu: f64,
    /// CPU seconds per GiB of the sending side (the bench's client threads).
    sender_cpu_s_per_gib: f64,
    /// CPU seconds per GiB of the receiving side: the server process, or the raw receiver's
    /// threads; for the disk test, the writing thread (the bench process).
    receiver_cpu_s_per_gib: f64,
    /// CPU seconds per GiB moved, bench process and server together: on a machine where the
    /// measurement gets less than every core, goodput follows this.
    cpu_s_per_gib: f64,
    /// quicft only: fresh memory the server touched (minor faults × 4 KiB) per byte uploaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    server_fresh_mem_per_byte: Option<f64>,
    /// QUIC only: the sender's path statistics during the measurement.
    #[serde(skip_serializing_if = "Option::is_none")]
    quic: Option<ft_load::QuicStats>,
    /// Cores busy machine-wide during the measurement (ours and everyone else's), out of `cores`.
    machine_busy_cores: f64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ft_bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ft_bench: FAILED: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(mut args: Args) -> Result<()> {
    if args.smoke {
        args.size = 8 << 20;
        args.repeat = 1;
    }
    let kinds: Vec<Kind> = args
        .only
        .iter()
        .map(|s| Kind::parse(s))
        .collect::<Result<_>>()?;
    if kinds.is_empty() || args.repeat == 0 || args.window == 0 || args.segment == 0 {
        bail!("nothing to measure");
    }
    let size = usize::try_from(args.size)?;
    let segment = usize::try_from(args.segment)?;
    let shape = UploadShape {
        segment,
        window: args.window,
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");

    let quic_cfg: QuicConfig = match &args.config {
        Some(path) => quicft_server::Config::from_toml(path)?.quic,
        None => QuicConfig::default(),
    };
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory for the bench binary")?
            .join("quicft-server"),
    };

    let run_dir = tempfile::Builder::new()
        .prefix("ft_bench-")
        .tempdir_in(&args.dir)?;
    let data_dir = run_dir.path().join("data");
    println!(
        "ft_bench: {}",
        machine_note(&args.dir, quic_cfg.socket_buffer)
    );
    println!("command:  {command}");
    println!(
        "shape:    {} file, {} segments, window {}, {} round(s), run dir {}",
        fmt_size(args.size),
        fmt_size(args.segment),
        args.window,
        args.repeat,
        run_dir.path().display()
    );
    println!(
        "quic:     stream window {}, connection window {}, send window {}, {:?}, UDP buffer {} requested{}",
        fmt_size(u64::from(quic_cfg.stream_receive_window)),
        fmt_size(u64::from(quic_cfg.receive_window)),
        fmt_size(quic_cfg.send_window),
        quic_cfg.congestion,
        fmt_size(quic_cfg.socket_buffer as u64),
        args.config.as_ref().map(|c| format!(" (from {})", c.display())).unwrap_or_default()
    );

    let t = Instant::now();
    let data = ft_load::random_bytes(size, 0x5eed_f11e);
    let sha = hex::encode(sha2::Sha256::digest(&data));
    println!(
        "data:     {} pseudo-random bytes, sha256 {sha} ({:.1} s to make)",
        size,
        t.elapsed().as_secs_f64()
    );

    let log = run_dir.path().join("server.log");
    let server = FtServer::start(
        &bin,
        &data_dir,
        args.config.as_deref(),
        &args.server_env,
        &log,
    )?;
    println!(
        "server:   pid {} QUIC {} TCP {} data {}",
        server.pid,
        server.quic,
        server.tcp,
        data_dir.display()
    );
    for (k, v) in &args.server_env {
        println!("server env: {k}={v}");
    }
    let result = measure_all(&args, &kinds, &server, &quic_cfg, &data, &sha, shape).await;
    let stopped = server.stop();
    let samples = match (result, stopped) {
        (Ok(s), Ok(())) => s,
        (Err(e), _) => {
            keep_dir(run_dir, true);
            return Err(e);
        }
        (Ok(_), Err(e)) => {
            keep_dir(run_dir, true);
            return Err(e.context("server did not stop cleanly"));
        }
    };
    report(&args, &kinds, &samples, &command)?;
    keep_dir(run_dir, args.keep);
    Ok(())
}

fn parse_env(s: &str) -> Result<(String, String)> {
    let (k, v) = s.split_once('=').context("expected KEY=VALUE")?;
    Ok((k.to_owned(), v.to_owned()))
}

/// Keeps (and names) the run directory, or deletes it.
fn keep_dir(dir: tempfile::TempDir, keep: bool) {
    if keep {
        println!("kept:     {}", dir.keep().display());
    }
}

async fn measure_all(
    args: &Args,
    kinds: &[Kind],
    server: &FtServer,
    q: &QuicConfig,
    data: &Bytes,
    sha: &str,
    shape: UploadShape,
) -> Result<Vec<Sample>> {
    let client_cfg = ft_load::quic_client_config(&server.ca(), q)?;
    let certs = server.data_dir.join("certs");
    let sink = if kinds.contains(&Kind::RawQuinn) {
        Some(RawSink::start(
            &certs.join("server.pem"),
            &certs.join("server.key"),
            q,
        )?)
    } else {
        None
    };
    let store = server.store_dir();
    std::fs::create_dir_all(&store)?;
    let tick = procfs::clock_ticks_per_sec() as f64;
    let mut samples = Vec::new();
    for round in 0..args.repeat {
        let mut order = kinds.to_vec();
        order.rotate_left(round % kinds.len());
        for (position, &kind) in order.iter().enumerate() {
            settle().await;
            let cpu0 = self_ticks()?;
            let srv0 = server.cpu_ticks()?;
            let flt0 = server.minor_faults()?;
            let m0 = MachineTicks::read()?.busy;
            let sink0 = procfs::threads_ticks(ft_load::RAW_SINK_THREADS)?;
            let (elapsed, report, quic) = match kind {
                Kind::QuicftQuic | Kind::QuicftTcp => {
                    let (r, stats) = quicft_upload(
                        kind,
                        round,
                        server,
                        &client_cfg,
                        q.socket_buffer,
                        data,
                        sha,
                        shape,
                    )
                    .await
                    .with_context(|| format!("{} round {}", kind.label(), round + 1))?;
                    (r.total, Some(r), stats)
                }
                Kind::RawQuinn => {
                    let sink = sink.as_ref().context("raw sink not started")?;
                    let (d, stats) = ft_load::raw_quinn(
                        sink.addr,
                        &client_cfg,
                        q.socket_buffer,
                        data,
                        shape.segment,
                    )
                    .await
                    .with_context(|| format!("raw quinn round {}", round + 1))?;
                    (d, None, Some(stats))
                }
                Kind::Disk => {
                    let path = store.join("ft_bench-disk-ceiling.bin");
                    let data = data.clone();
                    let d = tokio::task::spawn_blocking(move || ft_load::disk_write(&path, &data))
                        .await?
                        .with_context(|| format!("disk write round {}", round + 1))?;
                    (d, None, None)
                }
            };
            let bench_cpu = (self_ticks()? - cpu0) as f64 / tick;
            let srv1 = server.cpu_ticks()?;
            let flt1 = server.minor_faults()?;
            let m1 = MachineTicks::read()?.busy;
            let sink_cpu =
                (procfs::threads_ticks(ft_load::RAW_SINK_THREADS)? - sink0) as f64 / tick;
            let quicft = report.is_some();
            let server_cpu = quicft.then(|| {
                [
                    (srv1.0 - srv0.0) as f64 / tick,
                    (srv1.1 - srv0.1) as f64 / tick,
                ]
            });
            let ours = bench_cpu + server_cpu.map_or(0.0, |c| c[0] + c[1]);
            let gib = data.len() as f64 / (1u64 << 30) as f64;
            // /proc/stat counts all CPUs together: busy ticks over the wall time are busy cores.
            let machine_busy_cores = (m1 - m0) as f64 / tick / elapsed.as_secs_f64().max(1e-9);
            let s = Sample {
                kind,
                round,
                position,
                secs: elapsed.as_secs_f64(),
                mib_per_s: data.len() as f64 / (1 << 20) as f64 / elapsed.as_secs_f64().max(1e-9),
                phases: report.as_ref().map(|r: &UploadReport| {
                    [
                        r.init.as_secs_f64(),
                        r.segments_done.as_secs_f64(),
                        r.total.as_secs_f64(),
                    ]
                }),
                server_cpu,
                server_fresh_mem_per_byte: quicft
                    .then(|| (flt1 - flt0) as f64 * 4096.0 / data.len() as f64),
                bench_cpu,
                cpu_s_per_gib: ours / gib,
                quic,
                sender_cpu_s_per_gib: match kind {
                    Kind::Disk => 0.0,
                    _ => (bench_cpu - sink_cpu) / gib,
                },
                receiver_cpu_s_per_gib: match kind {
                    Kind::Disk => bench_cpu / gib,
                    Kind::RawQuinn => sink_cpu / gib,
                    _ => server_cpu.map_or(0.0, |c| c[0] + c[1]) / gib,
                },
                machine_busy_cores,
            };
            println!(
                "  round {} #{}: {:<24} {:>8.1} MiB/s  {:>7.3} s{}",
                round + 1,
                position + 1,
                kind.label(),
                s.mib_per_s,
                s.secs,
                match (&s.phases, &s.server_cpu) {
                    (Some(p), Some(c)) => format!(
                        "  (init {:.0} ms, segments {:.3} s, fin {:.0} ms; server CPU {:.2}+{:.2} s, client {:.2} s; \
                         server touched {:.2} B of fresh memory per B)",
                        p[0] * 1e3,
                        p[1] - p[0],
                        (p[2] - p[1]) * 1e3,
                        c[0],
                        c[1],
                        s.bench_cpu,
                        s.server_fresh_mem_per_byte.unwrap_or(0.0)
                    ),
                    _ => format!("  (bench CPU {:.2} s)", s.bench_cpu),
                }
            );
            println!(
                "             CPU s/GiB: sender {:.2}, receiver {:.2}; machine busy {:.2} of {} cores",
                s.sender_cpu_s_per_gib,
                s.receiver_cpu_s_per_gib,
                s.machine_busy_cores,
                cores()
            );
            if let Some(q) = &s.quic {
                println!("             QUIC sender: {q}");
            }
            samples.push(s);
        }
    }
    drop(sink);
    Ok(samples)
}

/// One upload on a fresh session; checks the exported file's size and then deletes it, so rounds
/// do not fill the disk.
#[allow(clippy::too_many_arguments)]
async fn quicft_upload(
    kind: Kind,
    round: usize,
    server: &FtServer,
    client_cfg: &quinn::ClientConfig,
    buffer: usize,
    data: &Bytes,
    sha: &str,
    shape: UploadShape,
) -> Result<(UploadReport, Option<ft_load::QuicStats>)> {
    let (transport, addr) = match kind {
        Kind::QuicftTcp => (Transport::Tcp, server.tcp),
        _ => (Transport::Quic, server.quic),
    };
    // A client id per upload: finished exports count against the client's quota.
    let client_id = format!(
        "ft_bench-{}-{}",
        transport.as_str().to_ascii_lowercase(),
        round
    );
    let mut conn =
        MqttConn::connect(transport, addr, Some((client_cfg, buffer)), &client_id).await?;
    if conn.receive_maximum < shape.window as u16 {
        println!(
            "  note: server Receive Maximum {} caps the window",
            conn.receive_maximum
        );
    }
    let limit =
        Duration::from_secs(60) + Duration::from_secs_f64(data.len() as f64 / (5 << 20) as f64);
    let before = conn.quic_stats();
    let r = tokio::time::timeout(limit, ft_load::upload(&mut conn, "bench", data, sha, shape))
        .await
        .with_context(|| format!("upload did not finish in {} s", limit.as_secs()))??;
    let stats = conn
        .quic_stats()
        .zip(before)
        .map(|(now, then)| now.since(then));
    conn.disconnect().await;
    let export = server.export_dir(&client_id);
    let file = export.join("bench").join("bench.bin");
    let len = std::fs::metadata(&file)
        .with_context(|| format!("exported file {}", file.display()))?
        .len();
    if len != data.len() as u64 {
        bail!("exported file has {len} bytes, uploaded {}", data.len());
    }
    std::fs::remove_dir_all(&export)?;
    Ok((r, stats))
}

/// Between measurements: deleted files' blocks are discarded (the mount may use `discard`) and
/// dirty pages written back now, not during the next measurement.
async fn settle() {
    let _ = tokio::process::Command::new("sync").status().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn median(v: Vec<f64>) -> f64 {
    quicft_bench::stats::median(v).unwrap_or(f64::NAN)
}

fn report(args: &Args, kinds: &[Kind], samples: &[Sample], command: &str) -> Result<()> {
    let rate = |k: Kind, round: usize| {
        samples
            .iter()
            .find(|s| s.kind == k && s.round == round)
            .map(|s| s.mib_per_s)
    };
    let all = |k: Kind| {
        samples
            .iter()
            .filter(|s| s.kind == k)
            .map(|s| s.mib_per_s)
            .collect::<Vec<_>>()
    };

    println!();
    println!(
        "## Results ({} file, {} segments, window {}; MiB/s; 2 cores, shared)",
        fmt_size(args.size),
        fmt_size(args.segment),
        args.window
    );
    let mut head = format!("| {:<24} |", "measurement");
    for r in 0..args.repeat {
        head += &format!(" round {:<3} |", r + 1);
    }
    head += "   median |";
    println!("{head}");
    println!("|{}", "---|".repeat(args.repeat + 2));
    for &k in kinds {
        let mut line = format!("| {:<24} |", k.label());
        for r in 0..args.repeat {
            line += &format!(" {:>9.1} |", rate(k, r).unwrap_or(f64::NAN));
        }
        line += &format!(" {:>8.1} |", median(all(k)));
        println!("{line}");
    }

    println!();
    println!("CPU seconds per GiB (medians): sender = the bench's client threads; receiver = quicft-server, the raw");
    println!("receiver's threads, or the disk writer; busy = cores busy machine-wide (everyone's) of {}:", cores());
    for &k in kinds {
        let v =
            |f: fn(&Sample) -> f64| median(samples.iter().filter(|s| s.kind == k).map(f).collect());
        println!(
            "  {:<24} sender {:>5.2}  receiver {:>5.2}  total {:>5.2}   busy {:.2} cores",
            k.label(),
            v(|s| s.sender_cpu_s_per_gib),
            v(|s| s.receiver_cpu_s_per_gib),
            v(|s| s.cpu_s_per_gib),
            v(|s| s.machine_busy_cores)
        );
    }

    // Ratios per round (side by side), then their median.
    let ratio = |num: Kind, den: Kind| -> Vec<f64> {
        (0..args.repeat)
            .filter_map(|r| Some(rate(num, r)? / rate(den, r)?))
            .collect()
    };
    let mut summary = serde_json::Map::new();
    println!();
    for (num, den) in [
        (Kind::QuicftQuic, Kind::RawQuinn),
        (Kind::QuicftQuic, Kind::Disk),
        (Kind::QuicftTcp, Kind::Disk),
        (Kind::QuicftQuic, Kind::QuicftTcp),
    ] {
        let v = ratio(num, den);
        if v.is_empty() {
            continue;
        }
        let per: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
        println!(
            "ratio {:<22} / {:<22} = {:.2} (median; rounds: {})",
            num.label(),
            den.label(),
            median(v.clone()),
            per.join(", ")
        );
        summary.insert(format!("{:?}/{:?}", num, den), serde_json::json!(median(v)));
    }
    if kinds.contains(&Kind::QuicftQuic)
        && kinds.contains(&Kind::RawQuinn)
        && kinds.contains(&Kind::Disk)
    {
        let (raw, disk) = (median(all(Kind::RawQuinn)), median(all(Kind::Disk)));
        let (ceiling, name) = if raw <= disk {
            (Kind::RawQuinn, "raw quinn")
        } else {
            (Kind::Disk, "disk")
        };
        let r = median(ratio(Kind::QuicftQuic, ceiling));
        println!(
            "lower ceiling: {name} ({:.1} MiB/s vs {} {:.1} MiB/s); quicft QUIC / ceiling = {r:.2} → {} (target ≥ 0.80)",
            raw.min(disk),
            if ceiling == Kind::RawQuinn { "disk" } else { "raw quinn" },
            raw.max(disk),
            if r >= 0.8 { "MEETS" } else { "MISSES" }
        );
        summary.insert("ceiling".into(), serde_json::json!(name));
        summary.insert("quic_over_ceiling".into(), serde_json::json!(r));
    }
    println!("machine: {}", machine_note(&args.dir, 0));
    println!("command: {command}");
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "command": command,
            "size": args.size,
            "segment": args.segment,
            "window": args.window,
            "samples": samples,
            "summary": summary,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// Cores, CPU, kernel, the filesystem under `dir`, and (with `udp` > 0) the UDP buffers granted.
fn machine_note(dir: &Path, udp: usize) -> String {
    let cores = cores();
    let cpu = procfs::cpu_model();
    let mut note = format!(
        "{cores} cores ({cpu}), shared and noisy; Linux {}; {}",
        procfs::kernel_release(),
        mount_of(dir)
    );
    if udp > 0 {
        if let Ok((r, s)) = ft_load::udp_buffers_granted(udp) {
            note += &format!(
                "; UDP buffers granted {}/{} (rcv/snd as Linux reports them)",
                fmt_size(r as u64),
                fmt_size(s as u64)
            );
        }
    }
    note
}

/// The mount that holds `dir`: device, mount point, type, options.
fn mount_of(dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let (dev, mp, ty, opts) = (f.first()?, f.get(1)?, f.get(2)?, f.get(3)?);
            dir.starts_with(mp)
                .then(|| (mp.len(), format!("{} on {mp} ({ty}, {opts})", dev)))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, s)| format!("{} is {s}", dir.display()))
        .unwrap_or_else(|| format!("{} (mount unknown)", dir.display()))
}

fn self_ticks() -> Result<u64> {
    Ok(procfs::stat("/proc/self/stat")?.ticks())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}
