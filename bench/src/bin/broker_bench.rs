//! `broker_bench`: MQTT broker throughput, quicft (QUIC and TCP) against mosquitto (TCP), in one run.
//!
//! QoS 1, 1 KiB payloads, N publishers → 1 subscriber on `bench/#`, a warm-up and then a fixed
//! measurement window, for every N and every target; rounds interleave the targets so that the
//! ratios compare runs made side by side. Each scenario gets a fresh broker process, so its CPU and
//! peak RSS are its own. See bench/BROKER.md for how to read the table.
//!
//! Persistence: the plain targets run both brokers with it off. `mosquitto-tcp-persist`,
//! `quicft-tcp-persist` and `quicft-quic-persist` turn it on (quicft: `[persistence]
//! persist_interval = 1`; mosquitto: `persistence true`, `autosave_interval 1`) and make the load
//! use it: the subscriber's session is persistent (Session Expiry 3600 s), so every QoS 1 delivery
//! is one the broker must keep across a restart, and every PUBLISH is retained. `quicft-tcp-sync`
//! and `quicft-quic-sync` use `persist_interval = 0` (each message on disk before its PUBACK).
//!
//! `--targets …,relay-tcp,relay-quic` adds the ceiling: `relay_broker` (src/bin/relay_broker.rs), the
//! least work any broker must do, over the same TCP and QUIC setups (and TLS: `relay-tls`); the
//! ratio table then shows relay QUIC / relay TCP next to quicft QUIC / quicft TCP.
//!
//! ```text
//! cargo build --release -p quicft-server -p quicft-bench
//! cargo run --release -p quicft-bench --bin broker_bench -- [--publishers 4,16] [--rounds 3]
//! cargo run --release -p quicft-bench --bin broker_bench -- --smoke      # CI: exits 1 if nothing arrives
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use quicft_bench::broker_procs::{self, BrokerProc, Kind};
use quicft_bench::mqtt_load::{Load, LoadConfig, Target, Totals, Transport};
use quicft_bench::procfs::{self, MachineTicks};
use quicft_bench::stats::median;

/// MQTT broker throughput: quicft over QUIC and TCP against mosquitto over TCP.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Publisher counts to run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "4,16")]
    publishers: Vec<usize>,
    /// Un-acknowledged QoS 1 PUBLISHes per publisher.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// Messages published but not yet delivered, over all publishers; 0 = unbounded (open loop:
    /// the brokers' queues fill and quicft drops past its per-session queue bound).
    #[arg(long, default_value_t = 1000)]
    max_outstanding: usize,
    /// Warm-up seconds before the measurement window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Measurement window in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Rounds; each runs every target for every publisher count, interleaved.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Targets to run (comma-separated); also available: quicft-tls, and relay-tcp / relay-quic /
    /// relay-tls (the minimal relay_broker ceiling on the same transports).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mosquitto-tcp,quicft-tcp,quicft-quic"
    )]
    targets: Vec<TargetKind>,
    /// quicft TOML configuration to start it with (flags still set the listeners and data dir).
    #[arg(long)]
    quicft_config: Option<PathBuf>,
    /// mosquitto's max_inflight_messages (quicft's inflight_window default is 256).
    #[arg(long, default_value_t = 256)]
    mosquitto_inflight: u16,
    /// Extra lines for the generated mosquitto.conf (e.g. "set_tcp_nodelay true").
    #[arg(long)]
    mosquitto_conf: Vec<String>,
    /// Pin the broker and the generator to disjoint CPUs, "BROKER:GENERATOR" in taskset syntax
    /// (e.g. 1:0): every broker then gets the same single core, and the generator cannot steal it.
    #[arg(long)]
    pin: Option<String>,
    /// QUIC: the generator's initial and largest UDP payload (analysis; quinn's default is 1200
    /// growing to 1452). The server's own packets follow its configuration.
    #[arg(long)]
    quic_mtu: Option<u16>,
    /// Seconds a broker gets to exit after SIGTERM before it is killed (raise it when the broker
    /// runs under valgrind, which writes its profile at exit).
    #[arg(long, default_value_t = 5.0)]
    stop_timeout: f64,
    /// Load generator worker threads.
    #[arg(long, default_value_t = 2)]
    gen_threads: usize,
    /// quicft-server binary [default: next to this one, i.e. target/release/quicft-server].
    #[arg(long)]
    quicft_bin: Option<PathBuf>,
    /// relay_broker binary [default: next to this one, i.e. target/release/relay_broker].
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// mosquitto binary [default: /usr/sbin/mosquitto].
    #[arg(long)]
    mosquitto_bin: Option<PathBuf>,
    /// Also write every row as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Keep the brokers' logs and configs (printed path) instead of deleting them.
    #[arg(long)]
    keep_logs: bool,
    /// CI smoke test: 1 publisher, 1 s, quicft TCP and QUIC only; exit 1 unless both deliver.
    #[arg(long)]
    smoke: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
enum TargetKind {
    MosquittoTcp,
    QuicftTcp,
    QuicftQuic,
    /// Not in the default set: QUIC's encrypted counterpart, for analysis.
    QuicftTls,
    /// Not in the default set: the minimal relay (ceiling) over TCP.
    RelayTcp,
    /// Not in the default set: the minimal relay (ceiling) over QUIC, quicft's QUIC settings.
    RelayQuic,
    /// Not in the default set: the minimal relay (ceiling) over TLS, quicft's TLS settings.
    RelayTls,
    /// Not in the default set: mosquitto with `persistence true` (saved every second) and a
    /// persistent, retained load.
    MosquittoTcpPersist,
    /// Not in the default set: quicft with persistence on (`persist_interval = 1`) and a
    /// persistent, retained load.
    QuicftTcpPersist,
    QuicftQuicPersist,
    /// Not in the default set: as `quicft-*-persist` with `persist_interval = 0`.
    QuicftTcpSync,
    QuicftQuicSync,
}

impl TargetKind {
    fn server(self) -> Kind {
        use TargetKind::*;
        match self {
            MosquittoTcp | MosquittoTcpPersist => Kind::Mosquitto,
            QuicftTcp | QuicftQuic | QuicftTls | QuicftTcpPersist | QuicftQuicPersist
            | QuicftTcpSync | QuicftQuicSync => Kind::Quicft,
            RelayTcp | RelayQuic | RelayTls => Kind::Relay,
        }
    }
    fn transport(self) -> Transport {
        use TargetKind::*;
        match self {
            QuicftQuic | RelayQuic | QuicftQuicPersist | QuicftQuicSync => Transport::Quic,
            QuicftTls | RelayTls => Transport::Tls,
            MosquittoTcp | QuicftTcp | RelayTcp | MosquittoTcpPersist | QuicftTcpPersist
            | QuicftTcpSync => Transport::Tcp,
        }
    }
    /// The broker's persistence: `None` off, else the write interval in seconds.
    fn persist_interval(self) -> Option<f64> {
        use TargetKind::*;
        match self {
            MosquittoTcpPersist | QuicftTcpPersist | QuicftQuicPersist => Some(1.0),
            QuicftTcpSync | QuicftQuicSync => Some(0.0),
            _ => None,
        }
    }
    /// The persistence column of the tables.
    fn persistence(self) -> &'static str {
        match (self.server(), self.persist_interval()) {
            (Kind::Relay, _) => "–",
            (_, None) => "off",
            (Kind::Mosquitto, Some(_)) => "autosave 1 s",
            (_, Some(0.0)) => "0 (before ack)",
            (_, Some(_)) => "1 s",
        }
    }
}

/// One scenario's result.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    round: usize,
    target: TargetKind,
    publishers: usize,
    msgs_per_s: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// % of one core (2 cores = 200 %).
    server_cpu: f64,
    server_peak_rss_mib: f64,
    generator_cpu: f64,
    /// Machine-wide softirq time (loopback networking, charged to no process).
    softirq_cpu: f64,
    /// Machine busy time charged to neither the broker, the generator nor softirq: other work on
    /// a shared machine (noise).
    other_cpu: f64,
    /// Machine idle time: with some left, the run was not CPU-bound.
    idle_cpu: f64,
    window_s: f64,
    totals: Totals,
    /// The broker ignored SIGTERM for `--stop-timeout` and was killed (does not affect the figures).
    killed: bool,
    error: Option<String>,
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.publishers = vec![1];
        args.warmup = 0.3;
        args.duration = 1.0;
        args.rounds = 1;
        args.targets = vec![TargetKind::QuicftTcp, TargetKind::QuicftQuic];
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.gen_threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let work = tempfile::Builder::new().prefix("broker-bench-").tempdir()?;
    let data_dir = work.path().join("quicft-data");
    let quicft_bin = broker_procs::find_binary(args.quicft_bin.as_deref(), &default_quicft_bins());
    let mosquitto_bin = broker_procs::find_binary(
        args.mosquitto_bin.as_deref(),
        &[
            "/usr/sbin/mosquitto",
            "/usr/bin/mosquitto",
            "/usr/local/sbin/mosquitto",
        ]
        .map(PathBuf::from),
    );
    let relay_bin = broker_procs::find_binary(args.relay_bin.as_deref(), &default_relay_bins());
    let needs = |k: Kind| args.targets.iter().any(|t| t.server() == k);
    let relay_bin = match (needs(Kind::Relay), relay_bin) {
        (true, None) => bail!("relay_broker binary not found: cargo build --release -p quicft-bench, or pass --relay-bin"),
        (_, b) => b,
    };
    let quicft_bin = match (needs(Kind::Quicft), quicft_bin) {
        (true, None) => bail!("quicft-server binary not found: cargo build --release -p quicft-server, or pass --quicft-bin"),
        (_, b) => b,
    };
    let mosquitto_bin = match (needs(Kind::Mosquitto), mosquitto_bin) {
        (true, None) => {
            bail!("mosquitto not found: apt-get install mosquitto, or pass --mosquitto-bin")
        }
        (_, b) => b,
    };
    let tck = procfs::clock_ticks_per_sec() as f64;
    let broker_cpus = match &args.pin {
        None => None,
        Some(p) => {
            let (broker, generator) = p
                .split_once(':')
                .context("--pin wants BROKER_CPUS:GENERATOR_CPUS, e.g. 1:0")?;
            broker_procs::pin_self(generator)?;
            Some(broker.to_owned())
        }
    };
    print_header(
        &args,
        quicft_bin.as_deref(),
        mosquitto_bin.as_deref(),
        relay_bin.as_deref(),
    );

    let base = Instant::now();
    let mut rows = Vec::new();
    for round in 1..=args.rounds {
        for &publishers in &args.publishers {
            for &target in &args.targets {
                let label = format!("r{round}-{publishers}p-{target:?}").to_lowercase();
                eprint!(
                    "round {round}: {} {} × {publishers} publishers … ",
                    target.server().as_str(),
                    target.transport().as_str()
                );
                let quicft_config = match target.server() {
                    Kind::Quicft => Some(quicft_config(&args, target, work.path(), &label)?),
                    _ => None,
                };
                // Each quicft scenario starts without the broker state of the previous one.
                let _ = std::fs::remove_file(data_dir.join("broker.redb"));
                let started = match target.server() {
                    Kind::Quicft => BrokerProc::start_quicft(
                        quicft_bin.as_deref().context("no quicft binary")?,
                        broker_cpus.as_deref(),
                        target == TargetKind::QuicftTls,
                        quicft_config.as_deref(),
                        &data_dir,
                        work.path(),
                        &label,
                    ),
                    Kind::Relay => BrokerProc::start_relay(
                        relay_bin.as_deref().context("no relay_broker binary")?,
                        broker_cpus.as_deref(),
                        target == TargetKind::RelayTls,
                        &data_dir,
                        work.path(),
                        &label,
                    ),
                    Kind::Mosquitto => BrokerProc::start_mosquitto(
                        mosquitto_bin.as_deref().context("no mosquitto binary")?,
                        broker_cpus.as_deref(),
                        work.path(),
                        args.mosquitto_inflight,
                        &args.mosquitto_conf,
                        &label,
                        target.persist_interval().is_some(),
                    ),
                };
                if let Ok(b) = &started {
                    eprint!(
                        "(pid {}, tcp {}{}) ",
                        b.pid,
                        b.tcp,
                        b.quic.map(|q| format!(", quic {q}")).unwrap_or_default()
                    );
                }
                let row = match started {
                    Ok(broker) => {
                        scenario(&args, broker, target, publishers, round, &label, base, tck).await
                    }
                    Err(e) => failed_row(round, target, publishers, format!("{e:#}")),
                };
                match &row.error {
                    None => eprintln!("{:.0} msg/s", row.msgs_per_s),
                    Some(e) => eprintln!("FAILED: {e}"),
                }
                if row.killed {
                    eprintln!(
                        "  note: {} did not exit within {} s of SIGTERM; killed by PID",
                        target.server().as_str(),
                        args.stop_timeout
                    );
                }
                rows.push(row);
            }
        }
    }

    println!();
    print_rows(&args, &rows);
    print_quic(&rows);
    let ratios = print_ratios(&args, &rows);
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "config": {
                "publishers": args.publishers, "window": args.window, "payload": args.payload,
                "max_outstanding": args.max_outstanding, "warmup_s": args.warmup, "duration_s": args.duration,
                "rounds": args.rounds, "mosquitto_inflight": args.mosquitto_inflight, "gen_threads": args.gen_threads,
                "cpus": cpus(),
            },
            "rows": rows,
            "ratios": ratios,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    if args.keep_logs {
        let kept = work.keep();
        eprintln!("broker logs and configs kept in {}", kept.display());
    }

    let failures: Vec<&Row> = rows
        .iter()
        .filter(|r| r.error.is_some() || r.totals.delivered == 0)
        .collect();
    if !failures.is_empty() {
        for r in &failures {
            eprintln!(
                "FAILED: {} {} × {}: {}",
                r.target.server().as_str(),
                r.target.transport().as_str(),
                r.publishers,
                r.error.as_deref().unwrap_or("nothing delivered")
            );
        }
        std::process::exit(1);
    }
    Ok(())
}

/// Runs one scenario against a started broker and stops the broker.
#[allow(clippy::too_many_arguments)]
async fn scenario(
    args: &Args,
    broker: BrokerProc,
    target: TargetKind,
    publishers: usize,
    round: usize,
    label: &str,
    base: Instant,
    tck: f64,
) -> Row {
    let addr = match target.transport() {
        Transport::Tcp => Some(broker.tcp),
        Transport::Quic => broker.quic,
        Transport::Tls => broker.tls,
    };
    let Some(addr) = addr else {
        return failed_row(
            round,
            target,
            publishers,
            "broker has no such listener".into(),
        );
    };
    let t = Target {
        transport: target.transport(),
        addr,
        ca: broker.ca.clone(),
        quic_mtu: args.quic_mtu,
    };
    let cfg = LoadConfig {
        publishers,
        window: args.window,
        payload: args.payload,
        max_outstanding: (args.max_outstanding > 0).then_some(args.max_outstanding),
        tag: label.to_owned(),
        quic_mtu: args.quic_mtu,
        persistent: target.persist_interval().is_some(),
    };
    let result = measure(args, &broker, &t, &cfg, base, tck).await;
    let rss = broker
        .peak_rss_kib()
        .map(|k| k as f64 / 1024.0)
        .unwrap_or(f64::NAN);
    let tail = broker.log_tail();
    let stopped = broker.stop(Duration::from_secs_f64(args.stop_timeout));
    match result {
        Ok(mut row) => {
            row.round = round;
            row.target = target;
            row.server_peak_rss_mib = rss;
            match stopped {
                Ok(true) => {}
                Ok(false) => {
                    row.killed = true;
                }
                Err(e) => row.error = Some(format!("{e:#}")),
            }
            row
        }
        Err(e) => failed_row(
            round,
            target,
            publishers,
            format!("{e:#}\nbroker log:\n{tail}"),
        ),
    }
}

async fn measure(
    args: &Args,
    broker: &BrokerProc,
    t: &Target,
    cfg: &LoadConfig,
    base: Instant,
    tck: f64,
) -> Result<Row> {
    let load = Load::start(t, cfg, base).await?;
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    if load.failed() {
        return Err(load
            .stop()
            .await
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("a client failed during warm-up")));
    }
    let s0 = broker.cpu_ticks()?;
    let g0 = procfs::stat("/proc/self/stat")?.ticks();
    let m0 = MachineTicks::read()?;
    load.begin_window();
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    while Instant::now() < deadline && !load.failed() {
        tokio::time::sleep(
            Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    let window = load.end_window();
    let s1 = broker.cpu_ticks()?;
    let g1 = procfs::stat("/proc/self/stat")?.ticks();
    let m = MachineTicks::read()?.since(m0);
    let totals = load.stop().await?;
    let secs = window.elapsed.as_secs_f64();
    let pct = |ticks: u64| ticks as f64 / tck / secs * 100.0;
    let (server_cpu, generator_cpu) = (pct(s1 - s0), pct(g1 - g0));
    Ok(Row {
        round: 0,
        target: TargetKind::QuicftTcp,
        publishers: cfg.publishers,
        msgs_per_s: window.rate(),
        p50_ms: window.percentile_ms(50.0),
        p99_ms: window.percentile_ms(99.0),
        server_cpu,
        server_peak_rss_mib: 0.0,
        generator_cpu,
        softirq_cpu: pct(m.softirq),
        other_cpu: (pct(m.busy) - server_cpu - generator_cpu - pct(m.softirq)).max(0.0),
        idle_cpu: pct(m.idle),
        window_s: secs,
        totals,
        killed: false,
        error: None,
    })
}

/// quicft's configuration for `target`: `--quicft-config` (if given) with a `[persistence]`
/// section that turns persistence off or sets its interval (so that file must not have one).
fn quicft_config(args: &Args, target: TargetKind, dir: &Path, label: &str) -> Result<PathBuf> {
    let mut text = match &args.quicft_config {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?,
        None => String::new(),
    };
    match target.persist_interval() {
        None => text.push_str("\n[persistence]\nenabled = false\n"),
        Some(i) => text.push_str(&format!(
            "\n[persistence]\nenabled = true\npersist_interval = {i}\n"
        )),
    }
    let path = dir.join(format!("{label}.toml"));
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

fn failed_row(round: usize, target: TargetKind, publishers: usize, error: String) -> Row {
    Row {
        round,
        target,
        publishers,
        msgs_per_s: 0.0,
        p50_ms: None,
        p99_ms: None,
        server_cpu: 0.0,
        server_peak_rss_mib: 0.0,
        generator_cpu: 0.0,
        softirq_cpu: 0.0,
        other_cpu: 0.0,
        idle_cpu: 0.0,
        window_s: 0.0,
        totals: Totals::default(),
        killed: false,
        error: Some(error),
    }
}

fn default_quicft_bins() -> Vec<PathBuf> {
    sibling_bins("quicft-server")
}

fn default_relay_bins() -> Vec<PathBuf> {
    sibling_bins("relay_broker")
}

/// `name` next to this executable, then in the workspace's target/release.
fn sibling_bins(name: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        v.push(dir.join(name));
    }
    v.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/release")
            .join(name),
    );
    v
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn print_header(
    args: &Args,
    quicft: Option<&Path>,
    mosquitto: Option<&Path>,
    relay: Option<&Path>,
) {
    let model = procfs::cpu_model();
    let kernel = procfs::kernel_release();
    println!("# broker_bench");
    println!();
    println!(
        "- machine: {} cores ({model}), Linux {}, loopback only",
        cpus(),
        kernel
    );
    if let Some(q) = quicft {
        println!("- quicft: {}", q.display());
    }
    if let Some(r) = relay.filter(|_| args.targets.iter().any(|t| t.server() == Kind::Relay)) {
        println!("- relay (ceiling): {}", r.display());
    }
    if let Some(m) = mosquitto {
        let v = std::process::Command::new(m)
            .arg("-h")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(str::to_owned)
            });
        println!("- mosquitto: {} ({})", m.display(), v.unwrap_or_default());
    }
    // Linux reports twice the usable size.
    let udp = quicft_bench::mqtt_load::udp_buffers_granted()
        .map(|(r, s)| format!("{} KiB rcv / {} KiB snd", r / 2048, s / 2048));
    println!(
        "- pinning: {}\n- load: QoS 1, {} B payload, window {} per publisher, max outstanding {}, {} s warm-up + {} s window, {} round(s), generator {} threads, QUIC client UDP buffers {}",
        args.pin.as_deref().map_or_else(|| "none (broker and generator share all cores)".to_owned(), |p| format!("broker:generator on CPUs {p}")),
        args.payload,
        args.window,
        if args.max_outstanding == 0 { "unbounded".to_owned() } else { args.max_outstanding.to_string() },
        args.warmup,
        args.duration,
        args.rounds,
        args.gen_threads,
        udp.unwrap_or_else(|e| e.to_string())
    );
    let n = cpus();
    println!(
        "- CPU % is of one core ({n} cores = {} %), measured over the window from /proc; softirq, other (= busy − broker − generator − softirq: the rest of a shared machine) and idle are machine-wide",
        n * 100
    );
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{x:.digits$}"))
}

fn print_rows(args: &Args, rows: &[Row]) {
    println!("| round | server | transport | persistence | publishers | msgs/s delivered | p50 ms | p99 ms | server CPU % | msgs per server CPU-s | server peak RSS MiB | generator CPU % | softirq % | other % | idle % | lost |");
    println!("|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let per_cpu = if r.server_cpu > 0.0 {
            format!("{:.0}", r.msgs_per_s / (r.server_cpu / 100.0))
        } else {
            "–".into()
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            r.round,
            r.target.server().as_str(),
            r.target.transport().as_str(),
            r.target.persistence(),
            r.publishers,
            if r.error.is_some() { "FAILED".into() } else { format!("{:.0}", r.msgs_per_s) },
            fmt_opt(r.p50_ms, 2),
            fmt_opt(r.p99_ms, 2),
            r.server_cpu,
            per_cpu,
            r.server_peak_rss_mib,
            r.generator_cpu,
            r.softirq_cpu,
            r.other_cpu,
            r.idle_cpu,
            r.totals.lost,
        );
    }
    if args.rounds > 1 {
        println!();
        println!("Median over {} rounds:", args.rounds);
        println!();
        println!("| server | transport | persistence | publishers | msgs/s delivered | p50 ms | p99 ms | server CPU % | server peak RSS MiB | generator CPU % |");
        println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for &n in &args.publishers {
            for &t in &args.targets {
                let sel: Vec<&Row> = rows
                    .iter()
                    .filter(|r| r.publishers == n && r.target == t && r.error.is_none())
                    .collect();
                if sel.is_empty() {
                    continue;
                }
                let m = |f: &dyn Fn(&Row) -> Option<f64>| {
                    median(sel.iter().filter_map(|r| f(r)).collect())
                };
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    t.server().as_str(),
                    t.transport().as_str(),
                    t.persistence(),
                    n,
                    fmt_opt(m(&|r| Some(r.msgs_per_s)), 0),
                    fmt_opt(m(&|r| r.p50_ms), 2),
                    fmt_opt(m(&|r| r.p99_ms), 2),
                    fmt_opt(m(&|r| Some(r.server_cpu)), 0),
                    fmt_opt(m(&|r| Some(r.server_peak_rss_mib)), 1),
                    fmt_opt(m(&|r| Some(r.generator_cpu)), 0),
                );
            }
        }
    }
}

/// Client-side QUIC counters per message: how many packets, I/O calls and ACKs each MQTT
/// message costs on the wire.
fn print_quic(rows: &[Row]) {
    let q: Vec<(&Row, &quicft_bench::mqtt_load::QuicStats)> = rows
        .iter()
        .filter_map(|r| r.totals.quic.as_ref().map(|q| (r, q)))
        .collect();
    if q.is_empty() {
        return;
    }
    let per = |a: u64, b: u64| {
        if b == 0 {
            "–".to_owned()
        } else {
            format!("{:.2}", a as f64 / b as f64)
        }
    };
    println!();
    println!("QUIC, seen from the generator (whole run, per message): publishers → server datagrams and send calls, server → subscriber datagrams, ACK frames, path MTU, losses");
    println!();
    println!("| round | publishers | pub datagrams/msg | pub send calls/msg | pub ACKs rcvd/msg | sub datagrams/msg | sub ACKs sent/msg | MTU | lost pkts | congestion events |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (r, q) in q {
        let (p, s) = (&q.publishers, &q.subscriber);
        let (np, nd) = (r.totals.published, r.totals.delivered);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.round,
            r.publishers,
            per(p.udp_tx_datagrams, np),
            per(p.udp_tx_ios, np),
            per(p.ack_frames_rx, np),
            per(s.udp_rx_datagrams, nd),
            per(s.ack_frames_tx, nd),
            p.mtu.min(s.mtu),
            p.lost_packets + s.lost_packets,
            p.congestion_events + s.congestion_events,
        );
    }
}

/// Ratios from rows of the same round (run side by side), then their median over rounds.
///
/// Always: quicft TCP / mosquitto and quicft QUIC / quicft TCP (the issue's targets). With TLS in
/// the targets: quicft QUIC / quicft TLS. With relay targets: relay QUIC / relay TCP (the
/// ceiling: what QUIC / TCP comes to for a broker that does nearly nothing), relay QUIC / relay TLS,
/// quicft QUIC / relay QUIC (how much of that ceiling quicft reaches over QUIC) and quicft TCP /
/// relay TCP.
fn print_ratios(args: &Args, rows: &[Row]) -> serde_json::Value {
    use TargetKind::*;
    let rate = |round: usize, n: usize, t: TargetKind| {
        rows.iter()
            .find(|r| r.round == round && r.publishers == n && r.target == t && r.error.is_none())
            .map(|r| r.msgs_per_s)
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let has = |t: TargetKind| args.targets.contains(&t);
    // (header, json key, numerator, denominator, target)
    let mut cols: Vec<(&str, &str, TargetKind, TargetKind, Option<f64>)> = vec![
        (
            "quicft TCP / mosquitto (target ≥ 1.0)",
            "quicft_tcp_over_mosquitto",
            QuicftTcp,
            MosquittoTcp,
            Some(1.0),
        ),
        (
            "quicft QUIC / quicft TCP (target ≥ 0.8)",
            "quicft_quic_over_quicft_tcp",
            QuicftQuic,
            QuicftTcp,
            Some(0.8),
        ),
    ];
    // Persistence: what it costs quicft, and quicft against mosquitto with it on.
    for (head, key, a, b) in [
        (
            "quicft TCP persist / quicft TCP",
            "quicft_tcp_persist_over_off",
            QuicftTcpPersist,
            QuicftTcp,
        ),
        (
            "quicft QUIC persist / quicft QUIC",
            "quicft_quic_persist_over_off",
            QuicftQuicPersist,
            QuicftQuic,
        ),
        (
            "quicft TCP persist / mosquitto persist",
            "quicft_tcp_persist_over_mosquitto_persist",
            QuicftTcpPersist,
            MosquittoTcpPersist,
        ),
        (
            "quicft TCP sync / quicft TCP persist",
            "quicft_tcp_sync_over_persist",
            QuicftTcpSync,
            QuicftTcpPersist,
        ),
        (
            "quicft QUIC sync / quicft QUIC persist",
            "quicft_quic_sync_over_persist",
            QuicftQuicSync,
            QuicftQuicPersist,
        ),
    ] {
        if has(a) && has(b) {
            cols.push((head, key, a, b, None));
        }
    }
    if has(QuicftTls) {
        cols.push((
            "quicft QUIC / quicft TLS (no target)",
            "quicft_quic_over_quicft_tls",
            QuicftQuic,
            QuicftTls,
            None,
        ));
    }
    if has(RelayTcp) && has(RelayQuic) {
        cols.push((
            "relay QUIC / relay TCP (ceiling)",
            "relay_quic_over_relay_tcp",
            RelayQuic,
            RelayTcp,
            None,
        ));
    }
    if has(RelayQuic) && has(RelayTls) {
        cols.push((
            "relay QUIC / relay TLS",
            "relay_quic_over_relay_tls",
            RelayQuic,
            RelayTls,
            None,
        ));
    }
    if has(RelayQuic) && has(QuicftQuic) {
        cols.push((
            "quicft QUIC / relay QUIC",
            "quicft_quic_over_relay_quic",
            QuicftQuic,
            RelayQuic,
            None,
        ));
    }
    if has(RelayTcp) && has(QuicftTcp) {
        cols.push((
            "quicft TCP / relay TCP",
            "quicft_tcp_over_relay_tcp",
            QuicftTcp,
            RelayTcp,
            None,
        ));
    }
    let cell = |v: Option<f64>, target: Option<f64>| match (v, target) {
        (Some(x), Some(t)) if x >= t => format!("{x:.2} ✓"),
        (Some(x), Some(_)) => format!("{x:.2} ✗"),
        (Some(x), None) => format!("{x:.2}"),
        (None, _) => "–".into(),
    };
    println!();
    let heads: Vec<&str> = cols.iter().map(|c| c.0).collect();
    println!("| publishers | round | {} |", heads.join(" | "));
    println!("|---:|---:|{}", "---:|".repeat(cols.len()));
    let mut out = Vec::new();
    for &n in &args.publishers {
        let mut per_col: Vec<Vec<f64>> = vec![Vec::new(); cols.len()];
        for round in 1..=args.rounds {
            let mut cells = Vec::new();
            for (i, c) in cols.iter().enumerate() {
                let v = ratio(rate(round, n, c.2), rate(round, n, c.3));
                per_col[i].extend(v);
                cells.push(cell(v, c.4));
            }
            println!("| {n} | {round} | {} |", cells.join(" | "));
        }
        let medians: Vec<Option<f64>> = per_col.into_iter().map(median).collect();
        if args.rounds > 1 {
            let cells: Vec<String> = medians
                .iter()
                .zip(&cols)
                .map(|(m, c)| cell(*m, c.4))
                .collect();
            println!("| {n} | median | {} |", cells.join(" | "));
        }
        let mut obj = serde_json::Map::new();
        obj.insert("publishers".into(), serde_json::json!(n));
        for (m, c) in medians.iter().zip(&cols) {
            obj.insert(c.1.into(), serde_json::json!(m));
        }
        out.push(serde_json::Value::Object(obj));
    }
    serde_json::Value::Array(out)
}
