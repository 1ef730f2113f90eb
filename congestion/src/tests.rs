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
             srtt mean {:.1} ms telemetry p50 {:.1} p99 {:.1} max {:.1} ms (n={}) lost random/queue {}/{} \
             persistent congestion {}",
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
            run.persistent_congestion,
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
    // Host noise: ACKs up to 5 ms late, and ACKs released in 10 ms slots (bursts whose first
    // samples carry up to 10 ms of "queue"). Either may end startup early on a false queue, which
    // would leave the estimate low; the exit needs the queue to stand for 1/8 min RTT of ACKs.
    let jitter = |loss: f64| Link {
        ack_jitter: Duration::from_millis(5),
        ..Link::lte(loss)
    };
    let slots = |loss: f64| Link {
        ack_slots: Some(Duration::from_millis(10)),
        ..Link::lte(loss)
    };
    for (name, link) in [
        ("startup", Link::lte(0.0)),
        ("startup", Link::lte(0.03)),
        ("startup, ACK jitter 5 ms", jitter(0.0)),
        ("startup, ACK jitter 5 ms", jitter(0.03)),
        ("startup, ACK slots 10 ms", slots(0.0)),
        ("startup, ACK slots 10 ms", slots(0.03)),
    ] {
        let loss = link.loss;
        let noisy = link.ack_slots.is_some() || !link.ack_jitter.is_zero();
        let run = run_bulk(link, s(3.0), &[(s(0.0), s(1.0)), (s(1.0), s(3.0))]);
        summary(&format!("{name} {loss}"), &run);
        let cruising = run
            .trace
            .iter()
            .find(|t| t.mode == Mode::Cruise)
            .expect("reaches cruise");
        assert!(
            cruising.at <= s(0.5),
            "{name} loss {loss}: cruise only at {:?}",
            cruising.at
        );
        assert!(
            bw_mbit(&run, 0.5) >= 18.0,
            "{name} loss {loss}: bw {:.1} at 0.5 s",
            bw_mbit(&run, 0.5)
        );
        // Startup's overshoot is bounded by its delay exit (BBR's startup would queue ~1.9 BDP;
        // doubling per round, a queue seen an RTT late is already ~1 BDP = 40 ms).
        let first = &run.windows[0];
        at_most(
            &format!("{name} loss {loss}: startup queue max (ms)"),
            ms(first.queue_pct(1.0)),
            48.0,
        );
        // The standing queue after startup (with host noise it is the noise's, not startup's).
        // A false exit (a burst of late ACKs read as a queue) leaves the estimate and so the first
        // second's utilisation low: 0.76-0.82 when one sample or 8 in a row sufficed.
        at_least(
            &format!("{name} loss {loss}: utilisation 0-1 s"),
            first.utilisation(),
            if noisy { 0.82 } else { 0.87 },
        );
        let after = &run.windows[1];
        assert!(
            noisy || ms(after.queue_pct(1.0)) <= 15.0,
            "{name} loss {loss}: queue after startup {:.1}",
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
        ack_jitter: Duration::ZERO,
        stalls: None,
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
        ack_jitter: Duration::ZERO,
        stalls: None,
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
fn random_loss_is_not_congestion_when_the_hosts_delay_acks() {
    // A busy machine (bench/NETEM.md: 2 shared cores): ACKs reach the sender up to 10 ms late
    // and its event loop stalls for 60 ms every ~300 ms, so the ACKs of a stall arrive together
    // with inflated RTTs. A random loss detected among them used to read as "loss with a queue":
    // about 20 probes in 18 s, each resetting the estimate to a drain rate the stall distorted,
    // and utilisation 0.85–0.89 at 3% loss against 0.97–0.99 without loss on the same host.
    for seed in 1..=3 {
        let mut link = Link::lte(0.03);
        link.seed = seed;
        link.ack_jitter = Duration::from_millis(10);
        link.stalls = Some((Duration::from_millis(300), Duration::from_millis(60)));
        let run = run_bulk(link, s(20.0), &[(s(2.0), s(20.0))]);
        summary(&format!("busy host 3% seed {seed}"), &run);
        let w = &run.windows[0];
        at_least("utilisation", w.utilisation(), 0.95);
        at_most("probes", probes(&run, 2.0, 20.0) as f64, 5.0);
    }
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

/// bench/profiles.txt's `satellite`: 5 Mbit/s, 600 ms RTT, 300 ms queue (less than the BDP).
fn satellite_link() -> Link {
    let mut link = Link::lte(0.0);
    link.rate = 5e6;
    link.one_way = Duration::from_millis(300);
    link.queue = Duration::from_millis(300);
    link.seed = 2;
    link
}

#[test]
fn a_long_path_probes_its_min_rtt_less_often() {
    // A min-RTT probe costs about a round trip at half rate plus the drain before it: every 10 s
    // that was 5–7% of a 600 ms link (issue 16). The timer now runs 100 min RTTs on such a path.
    let window = s(60.0);
    let run = |config: DelayBbrConfig| {
        Sim::new(satellite_link(), Traffic::bulk(window), config).run(window, &[(s(5.0), window)])
    };
    let fixed = run(DelayBbrConfig {
        min_rtt_window_rtts: 0.0,
        ..DelayBbrConfig::default()
    });
    let scaled = run(DelayBbrConfig::default());
    summary("satellite, probe every 10 s", &fixed);
    summary("satellite, probe every 100 min RTTs", &scaled);
    let (u_fixed, u_scaled) = (
        fixed.windows[0].utilisation(),
        scaled.windows[0].utilisation(),
    );
    let (p_fixed, p_scaled) = (probes(&fixed, 5.0, 60.0), probes(&scaled, 5.0, 60.0));
    eprintln!("probes 5-60 s: {p_fixed} vs {p_scaled}; utilisation {u_fixed:.3} vs {u_scaled:.3}");
    at_least("probes with the fixed timer", p_fixed as f64, 4.0);
    at_most("probes with the scaled timer", p_scaled as f64, 1.0);
    at_least("utilisation gained", u_scaled - u_fixed, 0.02);
    at_least("utilisation", u_scaled, 0.97);
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
        ack_jitter: Duration::ZERO,
        stalls: None,
    };
    let run = run_bulk(link, s(60.0), &[(s(0.0), s(10.0)), (s(10.0), s(60.0))]);
    summary("satellite", &run);
    trace(&run, 0.0, 8.0, 10);
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

/// A link whose capacity follows the Mahimahi traces `NAME.up` / `NAME.down` from `skip` ms on, as
/// bench/profiles.txt's trace profiles: `rtt_ms` base RTT, a drop-tail queue of `queue_ms` at the
/// uplink's mean rate, ACKs only at the downlink trace's opportunities.
fn trace_link(name: &str, rtt_ms: u64, queue_ms: u64, skip: u64) -> Option<Link> {
    let (mean, up) = mahimahi(&format!("{name}.up"), skip)?;
    let (_, down) = mahimahi(&format!("{name}.down"), skip)?;
    let mut link = Link::lte(0.0);
    link.rate = mean;
    link.one_way = Duration::from_millis(rtt_ms / 2);
    link.queue = Duration::from_millis(queue_ms);
    link.trace = Some(up);
    link.ack_trace = Some(down);
    Some(link)
}

/// bench/netem.sh's `verizon-lte-short`: 40 ms RTT, 200 ms queue.
fn verizon_link(skip: u64) -> Option<Link> {
    trace_link("Verizon-LTE-short", 40, 200, skip)
}

/// Wire bytes per file byte of a quicft upload over QUIC (bench/NETEM.md, loss-free `lte`: packet
/// headers and telemetry). The simulator counts whole datagrams as goodput; a real upload's share of
/// link counts file bytes.
const WIRE_PER_FILE_BYTE: f64 = 1.044;

/// The simulated figure that compares with bench/NETEM.md's real "share of link": a `file_bytes`
/// upload from a fresh controller at the trace's start, file bytes over the trace's capacity from
/// the first write to the server's confirmation (the last packet's arrival plus the way back).
/// `None` if the upload did not finish within `limit`.
fn upload_share(
    link: &Link,
    config: &DelayBbrConfig,
    file_bytes: u64,
    limit: Duration,
) -> Option<f64> {
    let run = Sim::new(link.clone(), Traffic::bulk(limit), config.clone()).run(limit, &[]);
    let file_per_packet = 1200.0 / WIRE_PER_FILE_BYTE;
    let packets = (file_bytes as f64 / file_per_packet).ceil() as usize;
    let last = *run.bulk_arrivals.get(packets.checked_sub(1)?)?;
    let done = last + link.one_way;
    let opps = link.trace.as_ref().expect("trace link");
    let capacity = opps.iter().filter(|&&t| t < done).count() as f64 * 1500.0;
    Some(file_bytes as f64 / capacity)
}

/// The 16 MiB Verizon upload figure, less dependent on one run's timing: its mean over 6 start
/// points of the trace (0–100 s), and over 8 runs from the start whose ACKs each arrive up to 1 ms
/// late at random (seeds 1–8).
fn upload_spread(config: &DelayBbrConfig) -> (f64, f64) {
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let Some(link) = verizon_link(0) else {
        return (0.0, 0.0);
    };
    let starts = [0u64, 20_000, 40_000, 60_000, 80_000, 100_000]
        .iter()
        .filter_map(|&skip| verizon_link(skip))
        .map(|link| upload_share(&link, config, 16 << 20, s(60.0)).unwrap_or(0.0))
        .collect();
    let seeds = (1..=8u64)
        .map(|seed| {
            let mut link = link.clone();
            link.seed = seed;
            link.ack_jitter = Duration::from_millis(1);
            upload_share(&link, config, 16 << 20, s(60.0)).unwrap_or(0.0)
        })
        .collect();
    (mean(starts), mean(seeds))
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

/// Mean share of link, telemetry p50 and p99 (ms) over runs of `trace` from each of `skips`.
fn trace_means(
    config: &DelayBbrConfig,
    trace: &str,
    rtt: u64,
    queue: u64,
    len: f64,
    skips: &[u64],
) -> Option<(f64, f64, f64)> {
    let (mut share, mut p50, mut p99) = (0.0, 0.0, 0.0);
    for &skip in skips {
        let link = trace_link(trace, rtt, queue, skip)?;
        let run = Sim::new(link.clone(), Traffic::bulk(s(len)), config.clone())
            .run(s(len), &[(s(1.0), s(len))]);
        let w = &run.windows[0];
        share += trace_share(&link, w);
        p50 += ms(w.telemetry_pct(0.5));
        p99 += ms(w.telemetry_pct(0.99));
    }
    let n = skips.len() as f64;
    Some((share / n, p50 / n, p99 / n))
}

/// Not a test: knob sweep on the traces and the scenarios of the tests with the tightest bounds.
/// `cargo test -p quicft-congestion --release trace_sweep -- --ignored --nocapture`
#[test]
#[ignore]
fn trace_sweep() {
    let d = DelayBbrConfig::default;
    let configs: Vec<(&str, DelayBbrConfig)> = vec![
        ("before", before_config()),
        ("177ab55", head_config()),
        ("default", d()),
        (
            "backoff clears agg",
            DelayBbrConfig {
                backoff_keeps_aggregation: false,
                ..d()
            },
        ),
        (
            "agg cap 100",
            DelayBbrConfig {
                ack_aggregation_rtts: 0.0,
                ..d()
            },
        ),
        (
            "agg cap 50",
            DelayBbrConfig {
                max_ack_aggregation: Duration::from_millis(50),
                ..d()
            },
        ),
        (
            "agg 1.25 rtt",
            DelayBbrConfig {
                ack_aggregation_rtts: 1.25,
                ..d()
            },
        ),
        (
            "agg 1.5 rtt",
            DelayBbrConfig {
                ack_aggregation_rtts: 1.5,
                ..d()
            },
        ),
        (
            "falling rate probes",
            DelayBbrConfig {
                probe_when_rate_keeps_falling: true,
                ..d()
            },
        ),
        (
            "probe gain 0.75",
            DelayBbrConfig {
                probe_rtt_gain: 0.75,
                ..d()
            },
        ),
        (
            "fast tier 2.5",
            DelayBbrConfig {
                cruise_queue_tolerance: 2.5,
                ..d()
            },
        ),
        (
            "fast tier 3.0",
            DelayBbrConfig {
                cruise_queue_tolerance: 3.0,
                ..d()
            },
        ),
        (
            "slow 24",
            DelayBbrConfig {
                slow_queue_rounds: 24,
                ..d()
            },
        ),
        (
            "1-round below 0.5",
            DelayBbrConfig {
                one_round_sample_below: 0.5,
                ..d()
            },
        ),
        (
            "no 1-round samples",
            DelayBbrConfig {
                one_round_sample_below: 0.0,
                ..d()
            },
        ),
        (
            "fast tier 1.0",
            DelayBbrConfig {
                cruise_queue_tolerance: 1.0,
                ..d()
            },
        ),
        (
            "no tracking",
            DelayBbrConfig {
                queue_track_rounds: u32::MAX,
                ..d()
            },
        ),
        (
            "track 3",
            DelayBbrConfig {
                queue_track_rounds: 3,
                ..d()
            },
        ),
        (
            "slow 8",
            DelayBbrConfig {
                slow_queue_rounds: 8,
                ..d()
            },
        ),
    ];
    let only = std::env::var("CC_ONLY").ok();
    for (name, c) in configs {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let skips = [0u64, 20_000, 40_000, 60_000, 80_000, 100_000];
        let Some((vz, vz50, vz99)) = trace_means(&c, "Verizon-LTE-short", 40, 200, 25.0, &skips)
        else {
            return;
        };
        let up =
            upload_share(&verizon_link(0).expect("trace"), &c, 16 << 20, s(60.0)).unwrap_or(0.0);
        let (up_starts, up_seeds) = upload_spread(&c);
        let (tm, _, tm99) =
            trace_means(&c, "TMobile-LTE-short", 40, 200, 25.0, &[0, 40_000, 80_000])
                .expect("trace");
        let (att, _, att99) =
            trace_means(&c, "ATT-LTE-driving-2016", 40, 200, 60.0, &[0, 60_000]).expect("trace");
        let (evdo, evdo50, _) =
            trace_means(&c, "Verizon-EVDO-driving", 80, 500, 60.0, &[0, 300_000]).expect("trace");
        let (umts, umts50, _) =
            trace_means(&c, "TMobile-UMTS-driving", 80, 500, 60.0, &[0, 300_000]).expect("trace");
        // adapts_when_the_bandwidth_halves and backs_off_on_a_real_queue_build_up.
        let mut halve = Link::lte(0.01);
        halve.rate_changes = vec![(s(10.0), 10e6)];
        let h = Sim::new(halve, Traffic::bulk(s(20.0)), c.clone())
            .run(s(20.0), &[(s(10.0), s(11.0)), (s(11.0), s(20.0))]);
        let mut quarter = Link::lte(0.01);
        quarter.rate_changes = vec![(s(10.0), 5e6)];
        let q = Sim::new(quarter, Traffic::bulk(s(20.0)), c.clone())
            .run(s(20.0), &[(s(10.0), s(11.0)), (s(11.0), s(20.0))]);
        let mut fl = (1.0f64, 0.0f64);
        for seed in [1, 2, 3] {
            let r = Sim::new(fluctuating_link(seed), Traffic::bulk(s(30.0)), c.clone())
                .run(s(30.0), &[(s(2.0), s(30.0))]);
            fl.0 = fl.0.min(r.windows[0].utilisation());
            fl.1 = fl.1.max(ms(r.windows[0].mean_queue()));
        }
        eprintln!(
            "{name:>19}: verizon upload {up:.3} (starts {up_starts:.3} seeds {up_seeds:.3}) share {vz:.3} tel {vz50:.0}/{vz99:.0} | tmobile {tm:.3} p99 {tm99:.0} | att {att:.3} p99 {att99:.0} | evdo {evdo:.3} p50 {evdo50:.0} | umts {umts:.3} p50 {umts50:.0} \
             | halve q {:.1} (<=30) then {:.3}/{:.1} | quarter q {:.1} then {:.3}/{:.1} | fluct util {:.3} q {:.1}",
            ms(h.windows[0].mean_queue()),
            h.windows[1].utilisation(),
            ms(h.windows[1].mean_queue()),
            ms(q.windows[0].mean_queue()),
            q.windows[1].utilisation(),
            ms(q.windows[1].mean_queue()),
            fl.0,
            fl.1,
        );
    }
}

/// Not a test: a trace run second by second (default the Verizon trace from its start; the
/// environment picks another: `CC_TRACE=ATT-LTE-driving-2016 CC_RTT=40 CC_QUEUE=200 CC_SKIP=0
/// CC_SECS=25`; `CC_TRAJECTORY=1` prints the controller's state every `CC_STEP` × 10 ms (default 5)
/// for the seconds `CC_FROM`..`CC_UNTIL`; `CC_SEED=n CC_JITTER=ms` delays each ACK by up to that
/// much; `CC_HEAD=1` runs the settings of 177ab55). Then: each probe (cause, length, estimate
/// before and after, capacity left idle meanwhile), the capacity left idle by what the sender was
/// doing (until `CC_IDLE_UNTIL` s, default 22), and the 16 MiB upload's end.
#[test]
#[ignore]
fn trace_detail() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let name = std::env::var("CC_TRACE").unwrap_or_else(|_| "Verizon-LTE-short".into());
    let secs = env("CC_SECS", 25);
    let Some(mut link) = trace_link(
        &name,
        env("CC_RTT", 40),
        env("CC_QUEUE", 200),
        env("CC_SKIP", 0),
    ) else {
        return;
    };
    link.seed = env("CC_SEED", 1);
    link.ack_jitter = Duration::from_millis(env("CC_JITTER", 0));
    let config = if env("CC_HEAD", 0) == 1 {
        head_config()
    } else {
        DelayBbrConfig::default()
    };
    let windows: Vec<(Duration, Duration)> = (0..secs)
        .map(|i| (s(i as f64), s(i as f64 + 1.0)))
        .collect();
    let run =
        Sim::new(link.clone(), Traffic::bulk(s(secs as f64)), config).run(s(secs as f64), &windows);
    let opps = link.trace.as_ref().expect("trace link");
    let bytes_in = |from: Duration, len: Duration| {
        opps.iter()
            .filter(|&&o| o >= from && o < from + len)
            .count() as f64
            * 1500.0
    };
    for w in &run.windows {
        let f = w.from.as_secs_f64();
        let wasted: u64 = run
            .wasted
            .iter()
            .filter(|(t, _)| *t >= w.from && *t < w.until)
            .map(|(_, b)| b)
            .sum();
        eprintln!(
            "{f:>4.0}s share {:.3} cap {:.1} Mbit/s idle {:.3} queue mean {:.0} ms probes {} bw {:.1}",
            trace_share(&link, w),
            bytes_in(w.from, w.span()) * 8e-6,
            wasted as f64 / bytes_in(w.from, w.span()).max(1.0),
            ms(w.mean_queue()),
            probes(&run, f, f + 1.0),
            bw_mbit(&run, f + 0.5),
        );
        let shown = f >= env("CC_FROM", 0) as f64 && f < env("CC_UNTIL", u64::MAX) as f64;
        if env("CC_TRAJECTORY", 0) == 1 && shown {
            trace(&run, f, f + 1.0, env("CC_STEP", 5) as usize);
        }
    }
    eprintln!(
        "lost random/queue {}/{}, persistent congestion {}",
        run.lost_random, run.lost_queue, run.persistent_congestion
    );
    let until = s(env("CC_IDLE_UNTIL", 22) as f64);
    let tick = Duration::from_millis(10);
    // Each probe (10 ms snapshots in ProbeRtt), with the capacity left idle meanwhile.
    let mut why = run.controller.why.iter();
    let mut start: Option<usize> = None;
    let mut idle = 0.0;
    for (i, t) in run.trace.iter().enumerate() {
        match (t.mode == Mode::ProbeRtt, start) {
            (true, None) => {
                start = Some(i);
                idle = 0.0;
            }
            (false, Some(st)) => {
                let st = &run.trace[st];
                eprintln!(
                    "probe at {:.2} s ({}) for {:.0} ms: bw {:.1} -> {:.1} Mbit/s, idle {:.0} KB",
                    st.at.as_secs_f64(),
                    why.next().copied().unwrap_or("?"),
                    ms(t.at - st.at),
                    st.bw as f64 * 8e-6,
                    t.bw as f64 * 8e-6,
                    idle / 1e3
                );
                start = None;
            }
            _ => {}
        }
        if start.is_some() && t.link_idle {
            idle += bytes_in(t.at, tick);
        }
    }
    // Capacity left idle (10 ms snapshots with nothing queued at the bottleneck, weighted by the
    // trace's capacity in the next 10 ms), by mode, whether the window was full, and whether the
    // estimate was below 0.8 × the capacity of the next 100 ms.
    let mut by: std::collections::BTreeMap<String, f64> = Default::default();
    for t in run.trace.iter().filter(|t| t.link_idle && t.at < until) {
        let limited = if t.in_flight + 1200 > t.cwnd {
            "window full"
        } else {
            "window not full"
        };
        let est = if (t.bw as f64) < 0.8 * bytes_in(t.at, tick * 10) * 10.0 {
            "estimate low"
        } else {
            "estimate ok"
        };
        *by.entry(format!("{:?}, {limited}, {est}", t.mode))
            .or_default() += bytes_in(t.at, tick);
    }
    let total = bytes_in(Duration::ZERO, until);
    for (k, v) in by {
        eprintln!("idle while {k}: {:.4} of the capacity", v / total);
    }
    // The 16 MiB upload of `upload_share`: when it ended and the capacity left idle until then.
    let packets = ((16u64 << 20) as f64 / (1200.0 / WIRE_PER_FILE_BYTE)).ceil() as usize;
    if let Some(&last) = run.bulk_arrivals.get(packets - 1) {
        let wasted: u64 = run
            .wasted
            .iter()
            .filter(|(t, _)| *t < last)
            .map(|(_, b)| b)
            .sum();
        eprintln!(
            "16 MiB upload: last packet at {:.2} s, idle capacity until then {:.3}",
            last.as_secs_f64(),
            wasted as f64 / bytes_in(Duration::ZERO, last)
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

/// One line of `cc_report`: share of link (or utilisation), bottleneck queue and telemetry
/// percentiles of one run's window.
fn report_line(name: &str, share: f64, w: &crate::sim::Window, probes: usize) {
    eprintln!(
        "  {name:<28} share {share:.3}  queue p50/p99 {:>5.1}/{:>5.1} ms  telemetry p50/p99 {:>5.1}/{:>5.1} ms  probes {probes}",
        ms(w.queue_pct(0.5)),
        ms(w.queue_pct(0.99)),
        ms(w.telemetry_pct(0.5)),
        ms(w.telemetry_pct(0.99)),
    );
}

/// Not a test: the figures of bench/CC.md for each controller setting — the fixed `lte` link at 0,
/// 1 and 3% loss, every trace in ../shared/traces (as its bench/profiles.txt profile), and the
/// 16 MiB Verizon upload comparable with bench/NETEM.md's real share of link.
/// `cargo test -p quicft-congestion --release cc_report -- --ignored --nocapture`
#[test]
#[ignore]
fn cc_report() {
    let d = DelayBbrConfig::default;
    let configs = [
        ("before (bfe8183)", bfe8183_config()),
        ("after (default)", startup_env(d())),
    ];
    for (name, c) in &configs {
        eprintln!("{name}:");
        for loss in [0.0, 0.01, 0.03] {
            let run = Sim::new(Link::lte(loss), Traffic::bulk(s(30.0)), c.clone())
                .run(s(30.0), &[(s(5.0), s(30.0))]);
            let w = &run.windows[0];
            report_line(
                &format!("lte {}%", loss * 100.0),
                w.utilisation(),
                w,
                probes(&run, 5.0, 30.0),
            );
        }
        // (profile, rtt, queue, run length s, start points ms)
        let traces: [(&str, u64, u64, f64, &[u64]); 5] = [
            (
                "Verizon-LTE-short",
                40,
                200,
                25.0,
                &[0, 20_000, 40_000, 60_000, 80_000, 100_000],
            ),
            ("TMobile-LTE-short", 40, 200, 25.0, &[0, 40_000, 80_000]),
            ("ATT-LTE-driving-2016", 40, 200, 60.0, &[0, 60_000]),
            ("TMobile-UMTS-driving", 80, 500, 60.0, &[0, 300_000]),
            ("Verizon-EVDO-driving", 80, 500, 60.0, &[0, 300_000]),
        ];
        for (trace, rtt, queue, len, skips) in traces {
            let mut shares = Vec::new();
            for &skip in skips {
                let Some(link) = trace_link(trace, rtt, queue, skip) else {
                    eprintln!("  {trace}: no trace");
                    break;
                };
                let run = Sim::new(link.clone(), Traffic::bulk(s(len)), c.clone())
                    .run(s(len), &[(s(1.0), s(len))]);
                let w = &run.windows[0];
                let share = trace_share(&link, w);
                shares.push(share);
                report_line(
                    &format!("{trace} @{}s", skip / 1000),
                    share,
                    w,
                    probes(&run, 1.0, len),
                );
            }
            if !shares.is_empty() {
                let mean = shares.iter().sum::<f64>() / shares.len() as f64;
                eprintln!("  {trace}: mean share {mean:.3}");
            }
        }
        if let Some(link) = verizon_link(0) {
            let share = upload_share(&link, c, 16 << 20, s(60.0)).unwrap_or(0.0);
            eprintln!("  verizon 16 MiB upload from the start, file bytes / capacity (as NETEM.md): {share:.3}");
            let (starts, seeds) = upload_spread(c);
            eprintln!("  the same, mean of 6 start points {starts:.3}, mean of 8 ACK-jitter seeds {seeds:.3}");
        }
    }
}

/// The settings of commit bfe8183 (bench/CC.md, 2026-11-25 fourth section's "after"): startup
/// ended on the spot at a queue of 0.25 × min RTT (at least 5 ms) over the last 8 ACKs.
fn bfe8183_config() -> DelayBbrConfig {
    DelayBbrConfig {
        startup_queue_tolerance: 0.25,
        startup_queue_samples: 8,
        startup_queue_persist: 0.0,
        ..DelayBbrConfig::default()
    }
}

/// The settings committed before the queue rule followed the link down (bench/CC.md, 2026-11-25
/// second section), for before/after figures.
fn before_config() -> DelayBbrConfig {
    DelayBbrConfig {
        cruise_queue_tolerance: 1.0,
        slow_queue_rounds: 8,
        queue_track_rounds: u32::MAX,
        loss_needs_round_queue: false,
        timer_probe_takes_queue: false,
        ..head_config()
    }
}

/// The settings of commit 177ab55 (bench/CC.md, 2026-11-25 third section's "before"): a back-off
/// cleared the ACK-aggregation allowance (capped at 100 ms), a rate that kept falling after the
/// estimate was lowered started a probe, and bandwidth samples spanned two rounds always.
fn head_config() -> DelayBbrConfig {
    DelayBbrConfig {
        max_ack_aggregation: Duration::from_millis(100),
        ack_aggregation_rtts: 0.0,
        backoff_keeps_aggregation: false,
        probe_when_rate_keeps_falling: true,
        one_round_sample_below: 0.0,
        ..bfe8183_config()
    }
}

/// ACK slots (ms), ACK jitter (ms), stalls `(mean interval, length)`.
type HostNoise = (u64, u64, Option<(Duration, Duration)>);

/// Not a test: 16 MiB uploads on the `lte` link at `CC_LOSS` (default 3%) random loss with many
/// seeds, ACK timings and host noise, looking for the runs that collapse (bench/NETEM.md: 2 of 6
/// real runs at 3% loss took 1.2 and 2.2 × the median time).
/// `cargo test -p quicft-congestion --release loss_seeds -- --ignored --nocapture`
#[test]
#[ignore]
fn loss_seeds() {
    let loss: f64 = std::env::var("CC_LOSS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.03);
    let msec = Duration::from_millis;
    let mut noises: Vec<HostNoise> = vec![
        (0, 0, None),
        (10, 0, None),
        (0, 5, None),
        (0, 20, None),
        (0, 0, Some((msec(1000), msec(30)))),
        (0, 2, Some((msec(200), msec(15)))),
        (5, 5, Some((msec(500), msec(50)))),
        (0, 10, Some((msec(300), msec(60)))),
    ];
    if std::env::var_os("CC_HARSH").is_some() {
        noises = vec![
            (0, 0, Some((msec(1000), msec(100)))),
            (0, 0, Some((msec(2000), msec(200)))),
            (0, 10, Some((msec(300), msec(60)))),
            (0, 0, Some((msec(3000), msec(400)))),
        ];
    }
    let configs = [
        ("before", before_config()),
        ("bfe8183", bfe8183_config()),
        ("after", startup_env(DelayBbrConfig::default())),
    ];
    for (name, config) in configs {
        for &(slot_ms, jitter_ms, stalls) in &noises {
            let mut times = Vec::new();
            for seed in 1..=40u64 {
                let mut link = Link::lte(loss);
                link.seed = seed;
                link.ack_slots = (slot_ms > 0).then(|| msec(slot_ms));
                link.ack_jitter = msec(jitter_ms);
                link.stalls = stalls;
                let run = Sim::new(link, Traffic::bulk(s(30.0)), config.clone()).run(s(30.0), &[]);
                let packets = (16u64 << 20).div_ceil(1200) as usize;
                let t = run
                    .bulk_arrivals
                    .get(packets - 1)
                    .map_or(99.0, |t| t.as_secs_f64());
                times.push((t, seed, run.persistent_congestion));
            }
            let mut sorted: Vec<f64> = times.iter().map(|t| t.0).collect();
            sorted.sort_by(f64::total_cmp);
            let median = sorted[sorted.len() / 2];
            let slow: Vec<String> = times
                .iter()
                .filter(|t| t.0 > 1.1 * median)
                .map(|t| format!("seed {} {:.2} s (pc {})", t.1, t.0, t.2))
                .collect();
            eprintln!(
                "{name}: slots {slot_ms} jitter {jitter_ms} stalls {stalls:?}: median {median:.2} s, min {:.2}, max {:.2}; slow: {slow:?}",
                sorted[0],
                sorted[sorted.len() - 1]
            );
        }
    }
}

/// Not a test: the capacity drops of the tests, moved away from the 10 s min-RTT timer.
#[test]
#[ignore]
fn drops_off_the_timer() {
    for (name, config) in [
        ("before", before_config()),
        ("177ab55", head_config()),
        ("after", startup_env(DelayBbrConfig::default())),
    ] {
        for (at, to) in [(7.0, 10e6), (7.0, 5e6), (13.0, 10e6), (13.0, 5e6)] {
            let mut link = Link::lte(0.01);
            link.rate_changes = vec![(s(at), to)];
            let run = Sim::new(link, Traffic::bulk(s(at + 6.0)), config.clone()).run(
                s(at + 6.0),
                &[(s(at), s(at + 1.0)), (s(at + 1.0), s(at + 6.0))],
            );
            let first = run
                .trace
                .iter()
                .find(|t| t.at >= s(at) && t.mode == Mode::ProbeRtt)
                .map(|t| t.at.as_secs_f64() - at);
            let bw_at = |d: f64| bw_mbit(&run, at + d);
            eprintln!(
                "{name}: {to:.0} at {at}: queue first s {:.1} ms, after {:.1} ms util {:.3}; first probe +{first:?} s; bw +0.5 s {:.1} +1 s {:.1}",
                ms(run.windows[0].mean_queue()), ms(run.windows[1].mean_queue()), run.windows[1].utilisation(), bw_at(0.5), bw_at(1.0)
            );
        }
    }
}

/// Not a test: startup's queue overshoot on the `lte` link (0/1/3% loss, with and without host
/// noise): queue max and p99 in the first second, telemetry of the probes sent then, when cruise
/// began and when the estimate first reached 18 Mbit/s.
/// `cargo test -p quicft-congestion --release startup_detail -- --ignored --nocapture`
#[test]
#[ignore]
fn startup_detail() {
    let noisy = |loss: f64, jitter: u64, slots: u64, seed: u64| {
        let mut l = Link::lte(loss);
        l.seed = seed;
        l.ack_jitter = Duration::from_millis(jitter);
        if slots > 0 {
            l.ack_slots = Some(Duration::from_millis(slots));
        }
        l
    };
    let verbose = std::env::var("CC_VERBOSE").is_ok();
    let config = startup_env(DelayBbrConfig::default());
    for (jitter, slots) in [(0, 0), (1, 0), (5, 0), (0, 5), (0, 10)] {
        let (mut maxes, mut fulls, mut cruises, mut utils) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut tele, mut tele99) = (Vec::new(), Vec::new());
        for loss in [0.0, 0.01, 0.03] {
            for seed in 1..=4 {
                let link = noisy(loss, jitter, slots, seed);
                // Telemetry every 10 ms instead of 100 ms: probes of the whole first second.
                let dense = Traffic {
                    telemetry: Some(Duration::from_millis(10)),
                    ..Traffic::bulk(s(3.0))
                };
                let probe =
                    Sim::new(link.clone(), dense, config.clone()).run(s(3.0), &[(s(0.0), s(1.0))]);
                // Without loss only: a lost message waits for loss recovery whatever the queue.
                if loss == 0.0 {
                    tele.push(ms(probe.windows[0].telemetry_pct(1.0)));
                    tele99.push(ms(probe.windows[0].telemetry_pct(0.99)));
                }
                let run = Sim::new(link, Traffic::bulk(s(3.0)), config.clone())
                    .run(s(3.0), &[(s(0.0), s(1.0))]);
                let w = &run.windows[0];
                let cruise = run
                    .trace
                    .iter()
                    .find(|t| t.mode == Mode::Cruise)
                    .map_or(f64::NAN, |t| t.at.as_secs_f64());
                let full = run
                    .trace
                    .iter()
                    .find(|t| t.bw as f64 * 8.0 >= 18e6)
                    .map_or(f64::NAN, |t| t.at.as_secs_f64());
                maxes.push(ms(w.queue_pct(1.0)));
                fulls.push(full);
                cruises.push(cruise);
                utils.push(w.utilisation());
                if verbose {
                    eprintln!(
                        "jitter {jitter} slots {slots} loss {loss} seed {seed}: queue max {:.1} p99 {:.1} ms, telemetry p50/max {:.1}/{:.1} ms, cruise at {cruise:.2} s, 18 Mbit/s at {full:.2} s, bw at 1 s {:.1}, util {:.3}",
                        ms(w.queue_pct(1.0)),
                        ms(w.queue_pct(0.99)),
                        ms(w.telemetry_pct(0.5)),
                        ms(w.telemetry_pct(1.0)),
                        bw_mbit(&run, 1.0),
                        w.utilisation(),
                    );
                }
                if verbose && seed == 1 {
                    trace(&run, 0.0, 0.6, 1);
                }
            }
        }
        let worst = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        eprintln!(
            "jitter {jitter} slots {slots} (3 losses x 4 seeds): startup queue max mean/worst {:.1}/{:.1} ms, telemetry (every 10 ms, 0% loss) p99 mean {:.1} max worst {:.1} ms, cruise at mean/worst {:.2}/{:.2} s, 18 Mbit/s at mean/worst {:.2}/{:.2} s, util 0-1 s mean {:.3}",
            mean(&maxes),
            worst(&maxes),
            mean(&tele99),
            worst(&tele),
            mean(&cruises),
            worst(&cruises),
            mean(&fulls),
            worst(&fulls),
            mean(&utils),
        );
    }
}

/// `CC_SQ_TOL`, `CC_SQ_FLOOR` (ms), `CC_SQ_N`, `CC_SQ_PERSIST` override startup's queue exit.
fn startup_env(mut config: DelayBbrConfig) -> DelayBbrConfig {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    if let Some(v) = env("CC_SQ_TOL") {
        config.startup_queue_tolerance = v;
    }
    if let Some(v) = env("CC_SQ_FLOOR") {
        config.startup_queue_floor = s(v / 1e3);
    }
    if let Some(v) = env("CC_SQ_PERSIST") {
        config.startup_queue_persist = v;
    }
    if let Some(v) = env("CC_SQ_N") {
        config.startup_queue_samples = v as usize;
    }
    config
}
