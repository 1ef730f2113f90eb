//! Scenario tests on the simulated link (`sim.rs`): virtual time, seeded loss, no sockets or clocks.
//! The link is DESIGN §6's unless a test says otherwise: 20 Mbit/s, 40 ms RTT, 200 ms drop-tail
//! queue, random loss after the bottleneck, a telemetry message every 100 ms next to the upload.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{Controller, ControllerFactory};

use crate::sim::{run_bulk, Link, Run, Sim, Traffic};
use crate::{DelayBbr, DelayBbrConfig, Mode};

fn s(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Fails the test, naming the measure, when `value` is below `min`.
#[track_caller]
fn at_least(what: &str, value: f64, min: f64) {
    assert!(value >= min, "{what}: {value:.3} (want >= {min})");
}

/// Fails the test, naming the measure, when `value` is above `max`.
#[track_caller]
fn at_most(what: &str, value: f64, max: f64) {
    assert!(value <= max, "{what}: {value:.3} (want <= {max})");
}

fn summary(name: &str, run: &Run) {
    for w in &run.windows {
        eprintln!(
            "{name} [{:.1}-{:.1}s] goodput {:.2} Mbit/s util {:.3} queue mean {:.1} p99 {:.1} max {:.1} ms \
             srtt mean {:.1} ms telemetry p50 {:.1} p99 {:.1} max {:.1} ms (n={}) lost random/queue {}/{}",
            w.from.as_secs_f64(),
            w.until.as_secs_f64(),
            w.goodput() / 1e6,
            w.utilisation(),
            ms(w.mean_queue()),
            ms(w.queue_pct(0.99)),
            ms(w.queue_pct(1.0)),
            ms(w.mean_srtt()),
            ms(w.telemetry_pct(0.5)),
            ms(w.telemetry_pct(0.99)),
            ms(w.telemetry_pct(1.0)),
            w.telemetry.len(),
            run.lost_random,
            run.lost_queue,
        );
    }
}

/// Probes (ProbeRtt entries) between `from` and `until`.
fn probes(run: &Run, from: f64, until: f64) -> usize {
    let modes: Vec<Mode> = run
        .trace
        .iter()
        .filter(|t| t.at >= s(from) && t.at < s(until))
        .map(|t| t.mode)
        .collect();
    modes
        .windows(2)
        .filter(|w| w[0] != Mode::ProbeRtt && w[1] == Mode::ProbeRtt)
        .count()
}

fn bw_mbit(run: &Run, at: f64) -> f64 {
    let snap = run
        .trace
        .iter()
        .rev()
        .find(|t| t.at <= s(at))
        .expect("trace");
    snap.bw as f64 * 8.0 / 1e6
}

#[test]
fn fills_the_link_with_a_short_queue_at_0_1_and_3_percent_random_loss() {
    for loss in [0.0, 0.01, 0.03] {
        let run = run_bulk(Link::lte(loss), s(30.0), &[(s(5.0), s(30.0))]);
        summary(&format!("lte {loss}"), &run);
        let w = &run.windows[0];
        assert!(
            w.utilisation() >= 0.95,
            "loss {loss}: utilisation {:.3}",
            w.utilisation()
        );
        let ceiling = 20e6 * (1.0 - loss);
        assert!(
            w.goodput() >= 0.93 * ceiling,
            "loss {loss}: goodput {:.2} Mbit/s",
            w.goodput() / 1e6
        );
        // The standing queue is the gain's 0.25 × BDP = 10 ms; the sender's srtt stays within
        // base RTT + 50%.
        assert!(
            ms(w.mean_queue()) <= 15.0,
            "loss {loss}: mean queue {:.1} ms",
            ms(w.mean_queue())
        );
        assert!(
            ms(w.mean_srtt()) <= 60.0,
            "loss {loss}: mean srtt {:.1} ms",
            ms(w.mean_srtt())
        );
        assert!(
            ms(w.telemetry_pct(0.5)) <= 60.0,
            "loss {loss}: telemetry p50 {:.1}",
            ms(w.telemetry_pct(0.5))
        );
        // Random loss never reads as congestion: only the periodic min-RTT probes (every 10 s).
        assert!(
            probes(&run, 5.0, 30.0) <= 3,
            "loss {loss}: {} probes",
            probes(&run, 5.0, 30.0)
        );
    }
}

#[test]
fn startup_reaches_the_link_rate_in_a_few_round_trips_and_drains_its_queue() {
    for loss in [0.0, 0.03] {
        let run = run_bulk(
            Link::lte(loss),
            s(3.0),
            &[(s(0.0), s(1.0)), (s(1.0), s(3.0))],
        );
        summary(&format!("startup {loss}"), &run);
        let cruising = run
            .trace
            .iter()
            .find(|t| t.mode == Mode::Cruise)
            .expect("reaches cruise");
        assert!(
            cruising.at <= s(0.5),
            "loss {loss}: cruise only at {:?}",
            cruising.at
        );
        assert!(
            bw_mbit(&run, 0.5) >= 18.0,
            "loss {loss}: bw {:.1} at 0.5 s",
            bw_mbit(&run, 0.5)
        );
        // Startup's overshoot is bounded by its delay exit (BBR's startup would queue ~1.9 BDP).
        let first = &run.windows[0];
        assert!(
            ms(first.queue_pct(1.0)) <= 60.0,
            "loss {loss}: startup queue max {:.1}",
            ms(first.queue_pct(1.0))
        );
        let after = &run.windows[1];
        assert!(
            ms(after.queue_pct(1.0)) <= 15.0,
            "loss {loss}: queue after startup {:.1}",
            ms(after.queue_pct(1.0))
        );
    }
}

#[test]
fn adapts_when_the_bandwidth_halves() {
    let mut link = Link::lte(0.01);
    link.rate_changes = vec![(s(10.0), 10e6)];
    let run = run_bulk(link, s(20.0), &[(s(10.0), s(11.0)), (s(11.0), s(20.0))]);
    summary("halve", &run);
    let w = &run.windows[1];
    at_least("utilisation", w.utilisation(), 0.95);
    at_most("mean queue ms", ms(w.mean_queue()), 15.0);
    let bw = bw_mbit(&run, 20.0);
    assert!(
        (9.0..=11.0).contains(&bw),
        "bandwidth estimate {bw:.2} Mbit/s"
    );
    // The stale estimate's queue is gone within a second.
    at_most(
        "queue during the change",
        ms(run.windows[0].mean_queue()),
        30.0,
    );
}

#[test]
fn adapts_when_the_bandwidth_doubles() {
    let mut link = Link::lte(0.01);
    link.rate = 10e6;
    link.rate_changes = vec![(s(10.0), 20e6)];
    let run = run_bulk(link, s(20.0), &[(s(10.0), s(11.0)), (s(11.0), s(20.0))]);
    summary("double", &run);
    // +25% per round trip while there is room: the new capacity is found in well under a second.
    at_least("bandwidth estimate at 10.5 s", bw_mbit(&run, 10.5), 18.0);
    at_least("utilisation", run.windows[0].utilisation(), 0.9);
    let w = &run.windows[1];
    at_least("utilisation", w.utilisation(), 0.95);
    at_most("mean queue ms", ms(w.mean_queue()), 15.0);
}

#[test]
fn backs_off_on_a_real_queue_build_up() {
    // The link drops to a quarter: the window from the old estimate holds 4 × the new BDP, i.e. a
    // queue of ~190 ms. The delay signal must catch it and empty it, and the new estimate must be
    // the new rate, not the old one nor a collapse below it.
    let mut link = Link::lte(0.01);
    link.rate_changes = vec![(s(10.0), 5e6)];
    let run = run_bulk(link, s(20.0), &[(s(10.0), s(11.0)), (s(11.0), s(20.0))]);
    summary("quarter", &run);
    trace(&run, 9.9, 12.0, 4);
    let first_probe = run
        .trace
        .iter()
        .find(|t| t.at >= s(10.0) && t.mode == Mode::ProbeRtt)
        .expect("backs off");
    assert!(
        first_probe.at <= s(10.4),
        "backed off only at {:?}",
        first_probe.at
    );
    let w = &run.windows[1];
    at_most("mean queue ms", ms(w.mean_queue()), 15.0);
    at_least("utilisation", w.utilisation(), 0.95);
    let bw = bw_mbit(&run, 20.0);
    assert!(
        (4.5..=5.5).contains(&bw),
        "bandwidth estimate {bw:.2} Mbit/s"
    );
    // Min RTT unharmed by the queue it saw.
    let min = run.controller.min_rtt().expect("min rtt");
    assert!(ms(min) < 45.0, "min rtt {:.1}", ms(min));
}

#[test]
fn follows_a_longer_route_without_mistaking_it_for_congestion() {
    let mut link = Link::lte(0.01);
    link.delay_changes = vec![(s(10.0), Duration::from_millis(40))];
    let run = run_bulk(link, s(20.0), &[(s(11.0), s(20.0))]);
    summary("rtt 40 -> 80", &run);
    let min = run.controller.min_rtt().expect("min rtt");
    assert!((78.0..=85.0).contains(&ms(min)), "min rtt {:.1}", ms(min));
    // The bandwidth estimate survived: a delay-based controller that read the longer path as a
    // queue would have cut it.
    at_least("bandwidth estimate", bw_mbit(&run, 11.0), 18.0);
    let w = &run.windows[0];
    at_least("utilisation", w.utilisation(), 0.95);
    at_most("mean queue ms", ms(w.mean_queue()), 25.0);
}

#[test]
fn follows_a_shorter_route() {
    let mut link = Link::lte(0.01);
    link.delay_changes = vec![(s(10.0), Duration::from_millis(10))];
    let run = run_bulk(link, s(25.0), &[(s(11.0), s(20.0)), (s(21.0), s(25.0))]);
    summary("rtt 40 -> 20", &run);
    assert!(run.windows[0].utilisation() >= 0.95);
    // The standing queue hides the new min RTT until the periodic probe (10 s) finds it.
    let min = run.controller.min_rtt().expect("min rtt");
    assert!(ms(min) <= 21.0, "min rtt {:.1}", ms(min));
    let w = &run.windows[1];
    at_least("utilisation", w.utilisation(), 0.95);
    at_most("mean queue ms", ms(w.mean_queue()), 8.0);
}

#[test]
fn telemetry_only_periods_keep_the_bandwidth_for_the_next_upload() {
    let traffic = Traffic {
        bulk: vec![(s(0.0), s(10.0)), (s(20.0), s(30.0))],
        telemetry: Some(Duration::from_millis(100)),
    };
    let run = Sim::new(Link::lte(0.01), traffic, DelayBbrConfig::default())
        .run(s(30.0), &[(s(12.0), s(20.0)), (s(20.0), s(20.5))]);
    summary("idle", &run);
    // While idle the telemetry sees the bare path.
    let idle = &run.windows[0];
    at_most("idle telemetry p50", ms(idle.telemetry_pct(0.5)), 45.0);
    at_least("estimate kept through idle:", bw_mbit(&run, 19.9), 18.0);
    // The upload resumes at full rate at once: no new startup from the minimum window.
    let resumed = &run.windows[1];
    at_least("utilisation", resumed.utilisation(), 0.9);
}

#[test]
fn slow_long_lossy_link() {
    // bench/profiles.txt `3g` without jitter: 1 Mbit/s, 150 ms RTT, 0.5% loss, 500 ms queue.
    let link = Link {
        rate: 1e6,
        rate_changes: Vec::new(),
        one_way: Duration::from_millis(75),
        delay_changes: Vec::new(),
        queue: Duration::from_millis(500),
        loss: 0.005,
        seed: 2,
        ack_slots: None,
        trace: None,
        ack_trace: None,
    };
    let run = run_bulk(link, s(60.0), &[(s(10.0), s(60.0))]);
    summary("3g", &run);
    let w = &run.windows[0];
    at_least("utilisation", w.utilisation(), 0.95);
    at_most("mean srtt", ms(w.mean_srtt()), 225.0);
}

#[test]
fn acks_in_bursts_do_not_starve_the_link() {
    // ACKs reach the sender only every 10 ms, in bursts (as behind a cellular scheduler): the
    // window must hold what a burst acknowledges beyond the bandwidth, or the link idles.
    let mut link = Link::lte(0.01);
    link.ack_slots = Some(Duration::from_millis(10));
    let run = run_bulk(link, s(20.0), &[(s(5.0), s(20.0))]);
    summary("ack bursts 10 ms", &run);
    trace(&run, 5.0, 6.0, 4);
    let w = &run.windows[0];
    at_least("utilisation", w.utilisation(), 0.95);
    at_most("mean queue ms", ms(w.mean_queue()), 25.0);
}

#[test]
fn short_paths_are_not_starved_by_a_microsecond_min_rtt() {
    // A LAN: 100 Mbit/s, 0.4 ms RTT, ACKs batched per millisecond by a busy host. Sizing the
    // window from the bare min RTT would cap it near the 4-datagram minimum.
    let link = Link {
        rate: 100e6,
        rate_changes: Vec::new(),
        one_way: Duration::from_micros(200),
        delay_changes: Vec::new(),
        queue: Duration::from_millis(20),
        loss: 0.0,
        seed: 3,
        ack_slots: Some(Duration::from_millis(1)),
        trace: None,
        ack_trace: None,
    };
    let run = run_bulk(link, s(5.0), &[(s(1.0), s(5.0))]);
    summary("lan", &run);
    let w = &run.windows[0];
    at_least("utilisation", w.utilisation(), 0.95);
    at_most("mean queue ms", ms(w.mean_queue()), 5.0);
}

#[test]
fn same_seed_same_run() {
    let a = run_bulk(Link::lte(0.03), s(5.0), &[(s(0.0), s(5.0))]);
    let b = run_bulk(Link::lte(0.03), s(5.0), &[(s(0.0), s(5.0))]);
    assert_eq!(a.windows[0].goodput_bytes, b.windows[0].goodput_bytes);
    assert_eq!(a.lost_random, b.lost_random);
    assert!(a.lost_random > 0);
}

/// A controller cruising on the standard link after 5 s.
fn cruising() -> DelayBbr {
    let run = run_bulk(Link::lte(0.0), s(5.0), &[]);
    assert_eq!(run.controller.mode(), Mode::Cruise);
    run.controller
}

#[test]
fn random_loss_without_a_queue_leaves_the_window_alone() {
    let mut cc = cruising();
    let window = cc.window();
    let now = Instant::now() + s(6.0);
    for i in 0..20 {
        let t = now + Duration::from_millis(i);
        cc.on_congestion_event(t, t - Duration::from_millis(45), false, 1200);
    }
    assert_eq!(cc.window(), window);
    assert_eq!(cc.mode(), Mode::Cruise);
}

#[test]
fn persistent_congestion_restarts_from_the_minimum_window() {
    let mut cc = cruising();
    let min_rtt = cc.min_rtt();
    let now = Instant::now() + s(6.0);
    cc.on_congestion_event(now, now - s(1.0), true, 50_000);
    assert_eq!(cc.window(), 4 * 1200);
    assert_eq!(cc.mode(), Mode::Startup);
    assert_eq!(cc.bandwidth(), 0);
    assert_eq!(cc.min_rtt(), min_rtt, "the path's length is still known");
    cc.on_mtu_update(1452);
    assert_eq!(cc.window(), 4 * 1452);
}

#[test]
fn an_ecn_mark_starts_a_back_off() {
    let mut cc = cruising();
    let window = cc.window();
    let now = Instant::now() + s(6.0);
    cc.on_congestion_event(now, now - Duration::from_millis(45), false, 0);
    assert_eq!(cc.mode(), Mode::ProbeRtt);
    assert!(cc.window() < window / 2 + 1200);
}

#[test]
fn builds_through_quinns_factory_trait() {
    let config = Arc::new(DelayBbrConfig::default());
    let now = Instant::now();
    let cc: Box<dyn Controller> = config.build(now, 1200);
    assert_eq!(cc.initial_window(), 12_000);
    assert_eq!(cc.window(), 12_000);
    assert_eq!(cc.metrics().congestion_window, 12_000);
    let copy = cc.clone_box();
    assert_eq!(copy.window(), 12_000);
    let concrete = copy.into_any().downcast::<DelayBbr>().expect("a DelayBbr");
    assert_eq!(concrete.mode(), Mode::Startup);
}

/// Prints the controller's trajectory between `from` and `until` (every `step`-th 10 ms sample).
fn trace(run: &Run, from: f64, until: f64, step: usize) {
    for t in run
        .trace
        .iter()
        .filter(|t| t.at >= s(from) && t.at < s(until))
        .step_by(step)
    {
        eprintln!(
            "  {:>6.2}s {:?} cwnd {} bw {:.2} Mbit/s min rtt {:.1} ms srtt {:.1} ms",
            t.at.as_secs_f64(),
            t.mode,
            t.cwnd,
            t.bw as f64 * 8.0 / 1e6,
            ms(t.min_rtt.unwrap_or_default()),
            ms(t.srtt),
        );
    }
}

/// Not a test: prints the scenarios that are hard to assert on, for tuning.
/// `cargo test -p quicft-congestion scenarios -- --ignored --nocapture`
#[test]
#[ignore]
fn scenarios() {
    // A shallow buffer (5 ms, ten datagrams) with 3% loss: the gain's 0.25 × BDP does not fit.
    let mut link = Link::lte(0.03);
    link.queue = Duration::from_millis(5);
    let run = run_bulk(link, s(20.0), &[(s(5.0), s(20.0))]);
    summary("shallow 5 ms", &run);
    trace(&run, 5.0, 6.0, 3);
    // Satellite-like: 5 Mbit/s, 600 ms RTT, 300 ms queue (smaller than the BDP).
    let link = Link {
        rate: 5e6,
        rate_changes: Vec::new(),
        one_way: Duration::from_millis(300),
        delay_changes: Vec::new(),
        queue: Duration::from_millis(300),
        loss: 0.0,
        seed: 2,
        ack_slots: None,
        trace: None,
        ack_trace: None,
    };
    summary(
        "satellite",
        &run_bulk(link, s(60.0), &[(s(0.0), s(10.0)), (s(10.0), s(60.0))]),
    );
}

/// A Mahimahi trace (one line per 1500-byte delivery opportunity, in ms) from `skip` ms on, and
/// its mean rate in bits/s; `None` when the trace is not there (it lives outside the crate, in
/// ../shared/traces).
fn mahimahi(name: &str, skip: u64) -> Option<(f64, Vec<Duration>)> {
    let path = format!("{}/../../shared/traces/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).ok()?;
    let times: Vec<u64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let end = *times.last()?;
    let mean = times.len() as f64 * 1500.0 * 8.0 / (end as f64 / 1e3);
    // Twice round, so that a late start still has 30 s left.
    let opps = times
        .iter()
        .chain(times.iter())
        .enumerate()
        .map(|(i, &t)| if i < times.len() { t } else { t + end })
        .filter(|&t| t >= skip)
        .map(|t| Duration::from_millis(t - skip))
        .collect();
    Some((mean, opps))
}

/// A link whose capacity follows the Verizon LTE traces from `skip` ms on (as bench/netem.sh's
/// `verizon-lte-short`: 40 ms RTT, a 200 ms queue at the uplink's mean rate, ACKs on the downlink
/// trace).
fn verizon_link(skip: u64) -> Option<Link> {
    let (mean, up) = mahimahi("Verizon-LTE-short.up", skip)?;
    let (_, down) = mahimahi("Verizon-LTE-short.down", skip)?;
    let mut link = Link::lte(0.0);
    link.rate = mean;
    link.trace = Some(up);
    link.ack_trace = Some(down);
    Some(link)
}

/// Goodput over the trace's capacity in the window (bench/NETEM.md's "share of link").
fn trace_share(link: &Link, w: &crate::sim::Window) -> f64 {
    let opps = link.trace.as_ref().expect("trace link");
    let n = opps.iter().filter(|&&t| t >= w.from && t < w.until).count();
    let capacity = n as f64 * 1500.0 * 8.0 / w.span().as_secs_f64();
    w.goodput() / capacity
}

/// Runs the Verizon trace from several starting points; returns the mean share of link, mean
/// telemetry p99 (ms) and probe count.
fn verizon(config: &DelayBbrConfig, print: bool) -> Option<(f64, f64, usize)> {
    let (mut share, mut p99, mut n_probes) = (0.0, 0.0, 0);
    let skips = [0u64, 20_000, 40_000, 60_000, 80_000, 100_000];
    for skip in skips {
        let link = verizon_link(skip)?;
        let traffic = Traffic::bulk(s(25.0));
        let run =
            Sim::new(link.clone(), traffic, config.clone()).run(s(25.0), &[(s(1.0), s(25.0))]);
        let w = &run.windows[0];
        let sh = trace_share(&link, w);
        if print {
            summary(&format!("verizon from {skip} ms: share {sh:.3}"), &run);
        }
        share += sh;
        p99 += ms(w.telemetry_pct(0.99));
        n_probes += probes(&run, 1.0, 25.0);
    }
    let n = skips.len() as f64;
    Some((share / n, p99 / n, n_probes))
}

/// Not a test: utilisation on the variable-capacity trace, for tuning.
/// `cargo test -p quicft-congestion trace_scenarios -- --ignored --nocapture`
#[test]
#[ignore]
fn trace_scenarios() {
    let Some((share, p99, n)) = verizon(&DelayBbrConfig::default(), true) else {
        eprintln!("no trace");
        return;
    };
    eprintln!("default: share {share:.3} telemetry p99 {p99:.1} ms probes {n}");
}

/// Share of link, mean queue and telemetry p99 on the fixed 20 Mbit/s link at `loss`.
fn lte_with(config: &DelayBbrConfig, loss: f64) -> (f64, f64, f64) {
    let run = Sim::new(Link::lte(loss), Traffic::bulk(s(30.0)), config.clone())
        .run(s(30.0), &[(s(5.0), s(30.0))]);
    let w = &run.windows[0];
    (
        w.utilisation(),
        ms(w.mean_queue()),
        ms(w.telemetry_pct(0.99)),
    )
}

/// Not a test: knob sweep on the trace and the fixed link.
/// `cargo test -p quicft-congestion --release trace_sweep -- --ignored --nocapture`
#[test]
#[ignore]
fn trace_sweep() {
    let d = DelayBbrConfig::default;
    let configs: Vec<(&str, DelayBbrConfig)> = vec![
        ("default", d()),
        (
            "one tier (before)",
            DelayBbrConfig {
                cruise_queue_tolerance: 0.25,
                slow_queue_rounds: u32::MAX,
                ..d()
            },
        ),
        (
            "slow 16",
            DelayBbrConfig {
                slow_queue_rounds: 16,
                ..d()
            },
        ),
        // Better on the trace, but a halved capacity then keeps 60 ms of queue for a second.
        (
            "tolerance 2, slow 16",
            DelayBbrConfig {
                cruise_queue_tolerance: 2.0,
                slow_queue_rounds: 16,
                ..d()
            },
        ),
        (
            "gain 1.5",
            DelayBbrConfig {
                cwnd_gain: 1.5,
                ..d()
            },
        ),
        (
            "probe gain 0.8",
            DelayBbrConfig {
                probe_rtt_gain: 0.8,
                ..d()
            },
        ),
    ];
    for (name, c) in configs {
        let Some((share, p99, n)) = verizon(&c, false) else {
            return;
        };
        let link0 = verizon_link(0).expect("trace");
        let run0 = Sim::new(link0.clone(), Traffic::bulk(s(25.0)), c.clone())
            .run(s(25.0), &[(s(1.0), s(25.0))]);
        let share0 = trace_share(&link0, &run0.windows[0]);
        let (u0, q0, t0) = lte_with(&c, 0.0);
        let (u1, q1, t1) = lte_with(&c, 0.01);
        eprintln!(
            "{name:>16}: from 0 {share0:.3} verizon share {share:.3} tel p99 {p99:.0} probes {n} | lte util {u0:.3} q {q0:.1} p99 {t0:.0} | 1% util {u1:.3} q {q1:.1} p99 {t1:.0}"
        );
    }
}

/// Not a test: the Verizon trace from its start, second by second.
#[test]
#[ignore]
fn trace_detail() {
    let Some(link) = verizon_link(0) else { return };
    let windows: Vec<(Duration, Duration)> =
        (1..25).map(|i| (s(i as f64), s(i as f64 + 1.0))).collect();
    let run = Sim::new(
        link.clone(),
        Traffic::bulk(s(25.0)),
        DelayBbrConfig::default(),
    )
    .run(s(25.0), &windows);
    for w in &run.windows {
        let f = w.from.as_secs_f64();
        eprintln!(
            "{f:>4.0}s share {:.3} cap {:.1} Mbit/s queue mean {:.0} ms probes {} bw {:.1}",
            trace_share(&link, w),
            w.goodput() / trace_share(&link, w) / 1e6,
            ms(w.mean_queue()),
            probes(&run, f, f + 1.0),
            bw_mbit(&run, f + 0.5),
        );
    }
}

/// A capacity that moves every 100 ms, by up to ±30%, between 3 and 12 Mbit/s (a seeded random
/// walk in the manner of the Verizon LTE uplink trace), on the standard 40 ms path with a 200 ms
/// queue at the mean rate.
fn fluctuating_link(seed: u64) -> Link {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut rate = 7e6;
    let mut changes = Vec::new();
    for i in 0..400u64 {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        rate = (rate * (0.7 + 0.6 * u)).clamp(3e6, 12e6);
        changes.push((Duration::from_millis(i * 100), rate));
    }
    let mut link = Link::lte(0.0);
    link.rate = 7e6;
    link.rate_changes = changes;
    link
}

#[test]
fn fills_a_link_whose_capacity_keeps_moving() {
    for seed in [1, 2, 3] {
        let run = Sim::new(
            fluctuating_link(seed),
            Traffic::bulk(s(30.0)),
            DelayBbrConfig::default(),
        )
        .run(s(30.0), &[(s(2.0), s(30.0))]);
        summary(&format!("fluctuating {seed}"), &run);
        // With the queue tolerance of a fixed link (0.25 × min RTT beyond the gain's) every dip
        // started a drain: utilisation 0.935–0.943, 34–38 probes.
        let w = &run.windows[0];
        at_least("utilisation", w.utilisation(), 0.96);
        at_most("mean queue ms", ms(w.mean_queue()), 40.0);
        at_most("probes", probes(&run, 2.0, 30.0) as f64, 20.0);
    }
}
