//! `linkem`: forwards IP packets between two TUN devices through the link model in `link.rs`.
//!
//! Threads: per direction one reader (blocking read on the input TUN, hands the packet to the model and
//! writes whatever is due at once) and one scheduler (sleeps on a condition variable until the model's
//! next timeout, then writes what is due). The model of each direction sits behind a mutex that the two
//! threads of that direction share; the main thread only handles signals and writes reports.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use linkem::link::{DirConfig, Link};
use linkem::report::{DirReport, Report};
use linkem::spec::{self, CapacitySpec, Cut, DirSpec};
use linkem::trace::Trace;

/// Userspace link emulator: two TUN devices joined through a shaped link.
///
/// Packets read from the device-side TUN form the uplink (shaped by --up) and are written to the
/// server-side TUN; the reverse direction is the downlink (--down). SIGINT/SIGTERM print a report and
/// write it to --stats-file; SIGUSR1 empties the link and restarts its clock, statistics, trace and cut
/// schedule (for back-to-back runs).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Device-side TUN interface to create.
    #[arg(long, default_value = "qftd0")]
    dev_tun: String,
    /// Server-side TUN interface to create.
    #[arg(long, default_value = "qfts0")]
    srv_tun: String,
    /// Move the device-side TUN into this network namespace (with `ip link set ... netns`).
    #[arg(long)]
    dev_netns: Option<String>,
    /// Move the server-side TUN into this network namespace.
    #[arg(long)]
    srv_netns: Option<String>,
    /// Uplink (device → server), e.g. `delay=20ms,rate=20mbit,queue=200ms,loss=1%` (see spec.rs).
    #[arg(long, default_value = "")]
    up: String,
    /// Downlink (server → device), same syntax.
    #[arg(long, default_value = "")]
    down: String,
    /// Link on/off schedule for both directions, `EVERY/DOWN[@FIRST]`, e.g. `10s/2s` (down from 8 to
    /// 10 s of every 10 s) or `10s/2s@3s` (down 3–5 s, 13–15 s, …).
    #[arg(long)]
    cut: Option<String>,
    /// Seed of the loss and jitter generators (same seed and traffic, same drops).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the JSON report here (periodically, and on exit).
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// How often to rewrite the stats file while running.
    #[arg(long, default_value = "1s")]
    stats_interval: String,
    /// A name for the report, e.g. the profile.
    #[arg(long, default_value = "")]
    label: String,
    /// Create this file once the TUN devices exist (and are moved), for scripts to wait on.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Parse the configuration, print it and exit without creating devices.
    #[arg(long)]
    check: bool,
}

/// One direction: the model and the clock it runs on, shared by its reader and scheduler threads.
struct Dir {
    state: Mutex<State>,
    wake: Condvar,
    write_errors: AtomicU64,
    /// Rebuilds the model on reset (SIGUSR1).
    config: DirConfig,
    spec: String,
}

struct State {
    link: Link,
    epoch: Instant,
}

impl Dir {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reset(&self, epoch: Instant) {
        let mut st = self.lock();
        st.link = Link::new(self.config.clone());
        st.epoch = epoch;
        self.write_errors.store(0, Ordering::Relaxed);
        drop(st);
        self.wake.notify_all();
    }

    fn write(&self, out: &File, pkt: &[u8]) {
        let mut out = out;
        if out.write(pkt).is_err() {
            self.write_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn reader(input: Arc<File>, output: Arc<File>, dir: Arc<Dir>) {
    let mut buf = vec![0u8; 65536];
    let mut ready = Vec::new();
    let mut input = &*input;
    let mut errors = 0u32;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => continue,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                errors += 1;
                if errors.is_power_of_two() {
                    eprintln!("linkem: read error ({errors}): {e}");
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let notify = {
            let mut st = dir.lock();
            let now = st.epoch.elapsed();
            let before = st.link.poll_timeout();
            st.link.handle_packet(now, buf[..n].to_vec());
            while let Some(p) = st.link.poll_transmit(now) {
                ready.push(p);
            }
            let after = st.link.poll_timeout();
            matches!((before, after), (None, Some(_)))
                || matches!((before, after), (Some(b), Some(a)) if a < b)
        };
        for p in ready.drain(..) {
            dir.write(&output, &p);
        }
        if notify {
            dir.wake.notify_one();
        }
    }
}

fn scheduler(output: Arc<File>, dir: Arc<Dir>) {
    let mut ready = Vec::new();
    let mut st = dir.lock();
    loop {
        let now = st.epoch.elapsed();
        while let Some(p) = st.link.poll_transmit(now) {
            ready.push(p);
        }
        if !ready.is_empty() {
            drop(st);
            for p in ready.drain(..) {
                dir.write(&output, &p);
            }
            st = dir.lock();
            continue;
        }
        st = match st.link.poll_timeout() {
            Some(t) if t > now => match dir.wake.wait_timeout(st, t - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            },
            Some(_) => st,
            None => dir.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

fn load_dir(text: &str, cut: Option<Cut>, seed: u64) -> Result<DirConfig> {
    let spec: DirSpec =
        spec::parse_dir_spec(text).with_context(|| format!("link spec {text:?}"))?;
    let trace = match &spec.capacity {
        CapacitySpec::Trace(path) => Some(Trace::load(path)?),
        _ => None,
    };
    Ok(DirConfig::new(&spec, trace, cut, seed))
}

fn move_to_netns(dev: &str, ns: &str) -> Result<()> {
    let status = Command::new("ip")
        .args(["link", "set", "dev", dev, "netns", ns])
        .status()
        .context("running ip")?;
    if !status.success() {
        bail!("ip link set {dev} netns {ns} failed ({status})");
    }
    Ok(())
}

fn report(args: &Args, up: &Dir, down: &Dir, final_report: bool) -> Report {
    let dir_report = |d: &Dir| {
        let st = d.lock();
        let r = DirReport::new(&d.spec, &st.link, d.write_errors.load(Ordering::Relaxed));
        (r, st.epoch.elapsed())
    };
    let (up, elapsed) = dir_report(up);
    let (down, _) = dir_report(down);
    Report {
        label: args.label.clone(),
        seed: args.seed,
        cut: args.cut.clone(),
        elapsed_s: elapsed.as_secs_f64(),
        final_report,
        up,
        down,
    }
}

/// Write atomically (temp file, then rename) so readers never see half a report.
fn write_report(path: &Path, r: &Report) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(r)?;
    std::fs::write(&tmp, text + "\n").with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let cut = args.cut.as_deref().map(spec::parse_cut).transpose()?;
    let interval = spec::parse_duration(&args.stats_interval)?.max(Duration::from_millis(100));
    // Different streams per direction: the uplink's drops do not depend on downlink traffic.
    let up_cfg = load_dir(&args.up, cut, args.seed)?;
    let down_cfg = load_dir(&args.down, cut, args.seed ^ 0x646f_776e)?;
    if args.check {
        println!("up:   {up_cfg:?}\ndown: {down_cfg:?}\ncut:  {cut:?}");
        return Ok(());
    }

    let dev = Arc::new(linkem::tun::create(&args.dev_tun)?);
    let srv = Arc::new(linkem::tun::create(&args.srv_tun)?);
    if let Some(ns) = &args.dev_netns {
        move_to_netns(&args.dev_tun, ns)?;
    }
    if let Some(ns) = &args.srv_netns {
        move_to_netns(&args.srv_tun, ns)?;
    }
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGUSR1])?;

    let epoch = Instant::now();
    let make = |config: DirConfig, spec: &str| {
        Arc::new(Dir {
            state: Mutex::new(State {
                link: Link::new(config.clone()),
                epoch,
            }),
            wake: Condvar::new(),
            write_errors: AtomicU64::new(0),
            config,
            spec: spec.to_string(),
        })
    };
    let up = make(up_cfg, &args.up);
    let down = make(down_cfg, &args.down);
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(f)
            .with_context(|| format!("spawning {name}"))
    };
    {
        let (i, o, d) = (dev.clone(), srv.clone(), up.clone());
        spawn("up-read", Box::new(move || reader(i, o, d)))?;
        let (o, d) = (srv.clone(), up.clone());
        spawn("up-sched", Box::new(move || scheduler(o, d)))?;
        let (i, o, d) = (srv.clone(), dev.clone(), down.clone());
        spawn("down-read", Box::new(move || reader(i, o, d)))?;
        let (o, d) = (dev.clone(), down.clone());
        spawn("down-sched", Box::new(move || scheduler(o, d)))?;
    }
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "linkem: {} <-> {} up [{}] down [{}] cut {:?} seed {}",
        args.dev_tun, args.srv_tun, args.up, args.down, args.cut, args.seed
    );

    let mut last_write = Instant::now();
    loop {
        for sig in signals.pending() {
            if sig == SIGUSR1 {
                let epoch = Instant::now();
                up.reset(epoch);
                down.reset(epoch);
                eprintln!("linkem: reset");
                continue;
            }
            let r = report(&args, &up, &down, true);
            eprint!("{}", r.summary());
            if let Some(path) = &args.stats_file {
                write_report(path, &r)?;
            }
            // The reader threads are blocked in read(); leaving the process closes the devices.
            std::process::exit(0);
        }
        // Short, so that a SIGUSR1 reset lands within ~10 ms of being sent.
        std::thread::sleep(Duration::from_millis(10));
        if let Some(path) = &args.stats_file {
            if last_write.elapsed() >= interval {
                last_write = Instant::now();
                if let Err(e) = write_report(path, &report(&args, &up, &down, false)) {
                    eprintln!("linkem: {e:#}");
                }
            }
        }
    }
}
