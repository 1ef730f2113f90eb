//! [`DelayBbr`]: the controller, its configuration and quinn's trait glue. The algorithm is explained
//! in the crate documentation.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};
use quinn_proto::RttEstimator;

use crate::filter::MaxFilter;

/// quinn's base datagram size, for the defaults that are counted in datagrams.
const BASE_DATAGRAM_SIZE: u64 = 1200;
/// Send records kept at most (one per transmit call, i.e. per GSO batch). Enough for ~80 MB in
/// flight at 1200 bytes per call; beyond that the oldest are dropped and only lose rate samples.
const MAX_RECORDS: usize = 1 << 16;
/// RTT samples whose minimum is the "current queue" (enough to see through single samples inflated
/// by the peer's ack delay).
const RECENT_SAMPLES: usize = 8;
/// Rounds each post-startup bandwidth sample spans.
const RATE_SPAN_ROUNDS: usize = 2;
/// Round ends remembered for the spans (more than two only when rounds are shorter than
/// `min_rtt_floor`).
const MAX_RATE_MARKS: usize = 64;
/// Rounds in a row with a loss rate above `loss_threshold` before loss counts as congestion.
const LOSS_ROUNDS: u32 = 2;
/// Drain gives up after this many rounds (the in-flight count it waits for should come within one
/// or two; this only guards against an estimate that cannot be reached).
const MAX_DRAIN_ROUNDS: u32 = 8;

/// Settings of [`DelayBbr`]; also its [`ControllerFactory`]. The defaults are the ones measured in
/// bench/CC.md; every field says what it trades.
#[derive(Debug, Clone)]
pub struct DelayBbrConfig {
    /// Window before the first acknowledgement, in bytes (quinn's default for its own controllers).
    pub initial_window: u64,
    /// Smallest window, in datagrams of the current MTU: below 4 an ack delayed by the peer stalls the
    /// connection.
    pub min_window_packets: u64,
    /// Steady-state window ÷ (bandwidth × min RTT). quinn paces at 1.25 × window / srtt whatever the
    /// controller does, so the standing queue is about `(gain − 1) × BDP`; 1.25 keeps the link full
    /// and still probes for more bandwidth (+25% per round when there is room).
    pub cwnd_gain: f64,
    /// Startup's window cap ÷ BDP estimate (BBR's 2/ln 2): room to double each round.
    pub startup_cwnd_gain: f64,
    /// Startup ends when the bandwidth estimate grew by less than this factor …
    pub startup_growth: f64,
    /// … for this many rounds in a row.
    pub startup_rounds: u32,
    /// Round trips (not application-limited) that the bandwidth estimate remembers its maximum.
    pub bandwidth_window_rounds: u64,
    /// A min RTT not seen again for this long is re-measured with a ProbeRtt …
    pub min_rtt_window: Duration,
    /// … or for this many min RTTs, if that is longer (0: `min_rtt_window` alone). A probe costs
    /// about a round trip at half rate plus the drain before it, so with a fixed 10 s its cost grows
    /// with the RTT: ~1% of the link at 40 ms, 5–7% at 600 ms (satellite). At 100 the 10 s holds up
    /// to 100 ms of RTT; a 600 ms path probes every 60 s, a 300 ms one every 30 s. A path that got
    /// longer meanwhile is still found by the queue tiers (`slow_queue_rounds`), a shorter one by
    /// its first sample.
    pub min_rtt_window_rtts: f64,
    /// Smallest RTT the window is sized from (see `window_rtt`); irrelevant on cellular paths.
    pub min_rtt_floor: Duration,
    /// Window during ProbeRtt ÷ BDP: low enough to empty the queue even if the BDP estimate is
    /// somewhat high.
    pub probe_rtt_gain: f64,
    /// Cap of the allowance for ACK aggregation, as time at the estimated bandwidth. ACKs that come
    /// in bursts (Wi-Fi, cellular grants, a busy receiver, loopback) leave the sender idle between
    /// bursts unless the window holds what the burst acknowledges beyond the bandwidth; Linux BBR
    /// caps this at 100 ms. The cap is also limited by `ack_aggregation_rtts`.
    pub max_ack_aggregation: Duration,
    /// … and, below `max_ack_aggregation`, to this many min RTTs, but never below
    /// `min_ack_aggregation` (0: no such limit). When ACKs come evenly the allowance is standing
    /// queue: on a 40 ms cellular path (ACK gaps of 50–200 ms) 50 ms keeps the utilisation of
    /// 100 ms at a telemetry p50 ~20 ms lower; an 80 ms path (3G) loses a tenth of its link below
    /// ~80 ms. So: 1 × min RTT, between 50 and 100 ms.
    pub ack_aggregation_rtts: f64,
    /// The smallest cap `ack_aggregation_rtts` can set (short paths and loopback, whose ACK
    /// batching does not shrink with the RTT).
    pub min_ack_aggregation: Duration,
    /// A back-off keeps the ACK-aggregation allowance. The allowance describes the return path, not
    /// the bandwidth estimate the back-off replaces; clearing it left the link idle in the next
    /// ACK gap, and on a cellular path the back-offs come every few seconds.
    pub backoff_keeps_aggregation: bool,
    /// Queue delay beyond the one the gain itself causes, as a share of the min RTT, that counts as a
    /// queue build-up (in startup: any queue above this share in a whole round; startup's per-ACK
    /// exit is `startup_queue_tolerance`).
    pub queue_tolerance: f64,
    /// … but at least this much, so that timer and ack-delay noise on short paths is not a queue.
    pub queue_tolerance_floor: Duration,
    /// A queue beyond the gain's own of more than this share of the min RTT (at least
    /// `queue_tolerance_floor`) for `queue_rounds` rounds in a row is a build-up in cruise …
    /// Larger lets the queue of a passing capacity dip (cellular) drain by itself instead of backing
    /// off; a lasting drop in capacity is followed by `queue_track_rounds` instead. At 2.0 this tier
    /// is for a sudden fall below ~0.4 × the capacity.
    pub cruise_queue_tolerance: f64,
    /// … and so is one above `queue_tolerance` for this many rounds in a row (a longer path; a
    /// smaller drop in capacity is followed by `queue_track_rounds`).
    pub slow_queue_rounds: u32,
    /// Rounds in a row the queue must stay above the tolerance before the controller backs off.
    pub queue_rounds: u32,
    /// After this many rounds in a row (at least 2) with a queue above the lower tier
    /// (`queue_tolerance` beyond the gain's), when the bottleneck never idled and so delivered its
    /// capacity, the bandwidth estimate is lowered to the rate measured over those rounds
    /// (`u32::MAX`: never). This catches a lasting drop in capacity within a few rounds, which
    /// lets the queue tiers above be loose enough for a passing dip to drain by itself. Fewer
    /// rounds follow a drop sooner but also a shorter dip, which leaves the link part-empty when the
    /// capacity comes back.
    pub queue_track_rounds: u32,
    /// After the queue rule lowered the estimate, a rate that keeps falling (below 0.7 × the
    /// lowered estimate with the queue still standing) starts a probe; otherwise the estimate is
    /// lowered again (a link still getting slower), and a longer path, which looks the same, is
    /// left to the slow tier's probe (`slow_queue_rounds`), which restores the first estimate.
    pub probe_when_rate_keeps_falling: bool,
    /// A steady cruise round whose queue stayed below this share of the gain's own standing queue
    /// (the link had room) is a bandwidth sample by itself, not only as half of a two-round span
    /// whose older half lags a capacity that came back (0: off). At 1.0 a fixed link's rounds
    /// (10.5 ms of queue on 10 ms) rarely qualify; 0.5 gave the same Verizon means with 0.005
    /// less on the 16 MiB figure and 0.02 less on the 80 ms traces (bench/CC.md).
    pub one_round_sample_below: f64,
    /// Loss counts as congestion with a queue only if the last whole round saw that queue too,
    /// not just the last few ACKs.
    pub loss_needs_round_queue: bool,
    /// A periodic min-RTT probe that starts with a queue above the lower tier is a queue back-off:
    /// its drain rate becomes the estimate (else a drop that coincides with the timer waits for
    /// the next rounds to be noticed).
    pub timer_probe_takes_queue: bool,
    /// Share of a round's packets lost above which loss counts as congestion even without delay
    /// (a shallow buffer or policer). Far above the few percent of radio loss it must ignore.
    pub loss_threshold: f64,
    /// Startup ends on the spot when the last `startup_queue_samples` RTT samples all show more
    /// queue than this share of the min RTT (at least `startup_queue_floor`) for
    /// `startup_queue_persist` of ACK arrival time. Doubling per round, the sender has put another
    /// BDP in flight by the time a queue shows in the RTTs, so the overshoot is about 1 BDP plus
    /// twice this threshold: at 0.25 (10 ms on a 40 ms path, bfe8183) the `lte` link's startup
    /// queue peaked at 56 ms, at 0.125 at 43 ms (bench/CC.md). Lower (≤ 0.1, 4 ms) ends startup on
    /// ACK jitter and leaves the estimate low (tried with the floor at 4 ms).
    pub startup_queue_tolerance: f64,
    /// … but at least this much (timer and ack-delay noise on short paths).
    pub startup_queue_floor: Duration,
    /// … in this many RTT samples in a row (1–8)…
    pub startup_queue_samples: usize,
    /// … standing for this share of the min RTT of ACK arrival time (0: the samples alone). ACKs
    /// that arrive together (ACK slots, a stalled host) carry RTTs inflated by the burst's wait,
    /// not by a queue, and span no time; a queue is still there in the next ACKs. Without it, 10 ms
    /// ACK slots ended startup early enough to cost 0.02–0.04 of the first second's utilisation.
    pub startup_queue_persist: f64,
}

impl Default for DelayBbrConfig {
    fn default() -> Self {
        DelayBbrConfig {
            initial_window: 14720u64.clamp(2 * BASE_DATAGRAM_SIZE, 10 * BASE_DATAGRAM_SIZE),
            min_window_packets: 4,
            cwnd_gain: 1.25,
            startup_cwnd_gain: 2.89,
            startup_growth: 1.25,
            startup_rounds: 3,
            bandwidth_window_rounds: 10,
            min_rtt_window: Duration::from_secs(10),
            min_rtt_window_rtts: 100.0,
            min_rtt_floor: Duration::from_millis(2),
            probe_rtt_gain: 0.5,
            max_ack_aggregation: Duration::from_millis(100),
            ack_aggregation_rtts: 1.0,
            min_ack_aggregation: Duration::from_millis(50),
            backoff_keeps_aggregation: true,
            queue_tolerance: 0.25,
            queue_tolerance_floor: Duration::from_millis(5),
            cruise_queue_tolerance: 2.0,
            slow_queue_rounds: 16,
            queue_rounds: 2,
            loss_threshold: 0.10,
            queue_track_rounds: 2,
            loss_needs_round_queue: true,
            timer_probe_takes_queue: true,
            probe_when_rate_keeps_falling: false,
            one_round_sample_below: 1.0,
            startup_queue_tolerance: 0.125,
            startup_queue_floor: Duration::from_millis(5),
            startup_queue_samples: 4,
            startup_queue_persist: 0.125,
        }
    }
}

impl ControllerFactory for DelayBbrConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(DelayBbr::new(self, now, current_mtu))
    }
}

/// Where the controller is in its cycle (see the crate documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Doubling per round until the bandwidth stops growing or a queue appears.
    Startup,
    /// Window at 1 × BDP until the queue startup built is gone.
    Drain,
    /// Steady state: window `cwnd_gain × BDP`.
    Cruise,
    /// Window at `probe_rtt_gain × BDP` for about a round trip, to see the empty-queue RTT.
    ProbeRtt,
}

/// Why a ProbeRtt started; a congestion cause lets its result replace the bandwidth estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The min RTT was not seen for `min_rtt_window`.
    Timer,
    /// The queue delay stayed above the tolerance.
    Queue,
    /// Loss with a queue, or a loss rate far above background.
    Loss,
    /// An ECN congestion mark.
    Ecn,
}

#[derive(Debug, Clone)]
enum State {
    Startup,
    Drain { rounds: u32 },
    Cruise,
    ProbeRtt(Probe),
}

#[derive(Debug, Clone)]
struct Probe {
    cause: Cause,
    started: Instant,
    /// When (and in which round) in-flight first fell to the probe window: packets sent from then on
    /// see an empty queue.
    drained: Option<(Instant, u64)>,
    /// Smallest RTT of packets sent after `drained`.
    min: Option<Duration>,
    /// Average delivery rate of the last round before the probe: while a queue stands, the
    /// bottleneck's actual rate.
    pre_rate: u64,
    /// `delivered` when the probe started, for `drain_rate`.
    delivered_at_start: u64,
    /// Delivery rate while in-flight fell to the probe window: nothing new was sent, so with a
    /// queue standing the ACKs came at exactly the bottleneck's rate. The best measurement of it.
    drain_rate: Option<u64>,
    /// Times the probe window was halved because the "empty-queue" RTT still looked long.
    depth: u32,
}

/// After the queue rule lowered the estimate, a rate below this share of it with the queue still
/// standing means the rate followed the smaller window: a longer path, or a link still getting
/// slower; a probe tells which.
const TRACK_FOLLOWS: f64 = 0.7;

/// Halvings of the probe window before a long RTT is believed to be a longer path.
const MAX_PROBE_DEPTH: u32 = 3;

/// What the connection looked like when a transmit batch left (one record per `on_sent` call; quinn
/// stamps every packet of the batch with the same time, so acks find their record by send time).
#[derive(Debug, Clone, Copy)]
struct SendRecord {
    sent: Instant,
    delivered: u64,
    delivered_time: Instant,
    first_sent: Instant,
    app_limited: bool,
}

/// Per-round accumulators, reset when a round ends.
#[derive(Debug, Clone, Default)]
struct Round {
    min_rtt: Option<Duration>,
    rtt_samples: u32,
    delivered_at_start: u64,
    /// When the round began (its first ack), for the round's average delivery rate.
    started: Option<Instant>,
    lost: u64,
    app_limited: bool,
}

/// The delay-aware, loss-tolerant controller (crate documentation). Build it through
/// [`DelayBbrConfig`] as quinn's `congestion_controller_factory`.
#[derive(Debug, Clone)]
pub struct DelayBbr {
    config: Arc<DelayBbrConfig>,
    mtu: u64,
    cwnd: u64,
    state: State,

    // Delivery-rate estimation (draft-cheng-iccrg-delivery-rate-estimation).
    records: VecDeque<SendRecord>,
    delivered: u64,
    delivered_time: Option<Instant>,
    first_sent_time: Option<Instant>,
    /// Our own count between `on_end_acks` calls (which bring quinn's exact figure).
    in_flight: u64,
    app_limited: bool,

    // Round trips: a round ends when a packet sent after the previous round ended is acknowledged.
    round: u64,
    next_round_delivered: u64,
    current: Round,
    /// Average delivery rate of the last finished round (0 if it was application-limited).
    last_round_rate: u64,
    /// Round ends (time, `delivered`, whether the round was application-limited), newest last: the
    /// spans the bandwidth samples are measured over.
    rate_marks: VecDeque<(Instant, u64, bool)>,
    /// The round `Cruise` was entered in: the queue of rounds that began earlier (startup, a
    /// probe) is not the steady state's.
    cruise_round: u64,

    // The path model.
    bw: MaxFilter,
    /// Rounds that were not application-limited: the bandwidth filter's clock.
    bw_round: u64,
    min_rtt: Option<Duration>,
    min_rtt_stamp: Option<Instant>,

    // Congestion signals, counted in rounds in a row.
    queue_high_rounds: u32,
    queue_slow_rounds: u32,
    /// Two-round rate samples of the last rounds in a row with a standing queue (at most
    /// `queue_track_rounds`), newest last.
    queued_rates: VecDeque<u64>,
    /// The estimate before the queue rule last lowered it, until a round without a standing queue
    /// confirms that the link got slower (a longer path looks the same until a probe drains it).
    tracked_from: Option<u64>,
    loss_high_rounds: u32,
    /// Queue delay of the last finished round.
    last_round_queue: Option<Duration>,
    /// The last few RTT samples (ring): their minimum is the queue *now*, without a round's lag.
    recent_rtts: [Option<Duration>; RECENT_SAMPLES],
    recent_next: usize,

    // ACK aggregation: bytes acknowledged beyond what the bandwidth estimate explains since the
    // current aggregation epoch began (BBR's extra_acked), windowed max over rounds.
    extra_acked: MaxFilter,
    agg_start: Option<Instant>,
    agg_bytes: u64,
    delivered_at_batch: u64,

    // Startup's "bandwidth stopped growing" detector.
    full_bw: u64,
    full_bw_rounds: u32,
    /// Since when (ACK arrival) startup's queue has stood above `startup_queue_limit`.
    startup_queue_since: Option<Instant>,
    /// Why each probe started (the tests' diagnostics).
    #[cfg(test)]
    pub(crate) why: Vec<&'static str>,
}

impl DelayBbr {
    pub fn new(config: Arc<DelayBbrConfig>, _now: Instant, current_mtu: u16) -> Self {
        let mtu = u64::from(current_mtu);
        let bw = MaxFilter::new(config.bandwidth_window_rounds);
        let config_window = config.bandwidth_window_rounds;
        let cwnd = config.initial_window.max(config.min_window_packets * mtu);
        DelayBbr {
            config,
            mtu,
            cwnd,
            state: State::Startup,
            records: VecDeque::new(),
            delivered: 0,
            delivered_time: None,
            first_sent_time: None,
            in_flight: 0,
            app_limited: false,
            round: 0,
            next_round_delivered: 0,
            current: Round::default(),
            last_round_rate: 0,
            rate_marks: VecDeque::new(),
            cruise_round: 0,
            bw,
            bw_round: 0,
            min_rtt: None,
            min_rtt_stamp: None,
            queue_high_rounds: 0,
            queue_slow_rounds: 0,
            queued_rates: VecDeque::new(),
            tracked_from: None,
            loss_high_rounds: 0,
            last_round_queue: None,
            recent_rtts: [None; RECENT_SAMPLES],
            recent_next: 0,
            extra_acked: MaxFilter::new(config_window),
            agg_start: None,
            agg_bytes: 0,
            delivered_at_batch: 0,
            full_bw: 0,
            full_bw_rounds: 0,
            startup_queue_since: None,
            #[cfg(test)]
            why: Vec::new(),
        }
    }

    pub fn mode(&self) -> Mode {
        match self.state {
            State::Startup => Mode::Startup,
            State::Drain { .. } => Mode::Drain,
            State::Cruise => Mode::Cruise,
            State::ProbeRtt(_) => Mode::ProbeRtt,
        }
    }

    /// Bottleneck bandwidth estimate in bytes per second (0 before the first sample).
    pub fn bandwidth(&self) -> u64 {
        self.bw.get()
    }

    /// Min RTT estimate (`None` before the first sample).
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// Round trips counted so far.
    pub fn rounds(&self) -> u64 {
        self.round
    }

    /// One acknowledged packet: [`Controller::on_ack`] without quinn's `RttEstimator`, which only
    /// quinn can build. The controller takes its RTT samples from `now − sent` itself (quinn's min
    /// RTT never expires, and its smoothed RTT lags by eight samples), so nothing is lost, and tests
    /// drive the controller through this method.
    pub fn on_packet_acked(&mut self, now: Instant, sent: Instant, bytes: u64, app_limited: bool) {
        self.delivered += bytes;
        self.in_flight = self.in_flight.saturating_sub(bytes);
        let record = self.take_record(sent);

        if let Some(rec) = record {
            if rec.delivered >= self.next_round_delivered {
                self.next_round_delivered = self.delivered;
                self.end_round(now);
            }
        }
        if app_limited {
            self.current.app_limited = true;
        }

        let rtt = now.saturating_duration_since(sent);
        self.on_rtt_sample(now, sent, rtt);

        if let Some(rec) = record {
            self.on_rate_sample(now, &rec, app_limited);
            self.first_sent_time = Some(rec.sent);
        }
        self.delivered_time = Some(now);

        if let State::Startup = self.state {
            self.cwnd = self.cwnd.saturating_add(bytes);
            if self
                .recent_queue_of(self.config.startup_queue_samples)
                .is_some_and(|q| q > self.startup_queue_limit())
            {
                let since = *self.startup_queue_since.get_or_insert(now);
                let persist = self
                    .window_rtt()
                    .unwrap_or_default()
                    .mul_f64(self.config.startup_queue_persist);
                if now.saturating_duration_since(since) >= persist {
                    self.enter_drain("queue");
                }
            } else {
                self.startup_queue_since = None;
            }
        }
    }

    /// The record of the batch sent at `sent`; older records belong to packets that were lost,
    /// carried only ACKs, or were acknowledged already, and are dropped.
    fn take_record(&mut self, sent: Instant) -> Option<SendRecord> {
        while let Some(front) = self.records.front() {
            if front.sent < sent {
                self.records.pop_front();
            } else {
                break;
            }
        }
        // Left in place: other packets of the same batch may be acknowledged later.
        self.records.front().filter(|r| r.sent == sent).copied()
    }

    fn on_rtt_sample(&mut self, now: Instant, sent: Instant, rtt: Duration) {
        match self.min_rtt {
            Some(m) if rtt > m + m / 64 => {}
            Some(m) if rtt >= m => self.min_rtt_stamp = Some(now), // seen again: still valid
            _ => {
                self.min_rtt = Some(rtt);
                self.min_rtt_stamp = Some(now);
            }
        }
        self.recent_rtts[self.recent_next] = Some(rtt);
        self.recent_next = (self.recent_next + 1) % RECENT_SAMPLES;
        self.current.rtt_samples += 1;
        self.current.min_rtt = Some(self.current.min_rtt.map_or(rtt, |m| m.min(rtt)));
        if let State::ProbeRtt(p) = &mut self.state {
            if p.drained.is_some_and(|(t, _)| sent >= t) {
                p.min = Some(p.min.map_or(rtt, |m| m.min(rtt)));
            }
        }
    }

    fn on_rate_sample(&mut self, now: Instant, rec: &SendRecord, app_limited: bool) {
        let send_elapsed = rec.sent.saturating_duration_since(rec.first_sent);
        let ack_elapsed = now.saturating_duration_since(rec.delivered_time);
        let interval = send_elapsed.max(ack_elapsed);
        // Shorter than a round trip: ack compression, not the link's rate.
        if interval.is_zero() || self.min_rtt.is_some_and(|m| interval < m) {
            return;
        }
        let bytes = self.delivered - rec.delivered;
        let rate = (u128::from(bytes) * 1_000_000_000 / interval.as_nanos())
            .min(u128::from(u64::MAX)) as u64;
        let limited = app_limited || rec.app_limited;
        // Per-packet samples only in startup, where they let the estimate follow a doubling window
        // within the round (see `end_round` for later). An application-limited sample says only
        // "at least this much".
        if matches!(self.state, State::Startup) && (!limited || rate > self.bw.get()) {
            self.bw.update(self.bw_round, rate);
        }
    }

    /// The queue delay of the last few packets acknowledged (`None` until there are enough samples).
    fn recent_queue(&self) -> Option<Duration> {
        self.recent_queue_of(RECENT_SAMPLES)
    }

    /// The smallest queue delay of the last `n` RTT samples (at most `RECENT_SAMPLES`).
    fn recent_queue_of(&self, n: usize) -> Option<Duration> {
        let n = n.clamp(1, RECENT_SAMPLES);
        let mut min: Option<Duration> = None;
        for i in 1..=n {
            let r = self.recent_rtts[(self.recent_next + RECENT_SAMPLES - i) % RECENT_SAMPLES]?;
            min = Some(min.map_or(r, |m| m.min(r)));
        }
        Some(min?.saturating_sub(self.min_rtt?))
    }

    /// Queue delay above which startup ends within the round (see `startup_queue_tolerance`).
    fn startup_queue_limit(&self) -> Duration {
        let m = self.window_rtt().unwrap_or_default();
        m.mul_f64(self.config.startup_queue_tolerance)
            .max(self.config.startup_queue_floor)
    }

    /// The queue delay a round saw: its smallest RTT sample over the min RTT.
    fn round_queue(&self, round: &Round) -> Option<Duration> {
        Some(round.min_rtt?.saturating_sub(self.min_rtt?))
    }

    /// Queue delay above which startup ends, and the extra (beyond the gain's own) that counts as a
    /// queue build-up in cruise.
    fn queue_tolerance(&self) -> Duration {
        let m = self.window_rtt().unwrap_or_default();
        m.mul_f64(self.config.queue_tolerance)
            .max(self.config.queue_tolerance_floor)
    }

    /// Queue delay above which a cruising connection is congested.
    fn cruise_queue_limit(&self) -> Duration {
        let m = self.window_rtt().unwrap_or_default();
        let tolerance = m
            .mul_f64(self.config.cruise_queue_tolerance)
            .max(self.config.queue_tolerance_floor);
        m.mul_f64((self.config.cwnd_gain - 1.0).max(0.0)) + tolerance
    }

    /// Queue delay above which a cruising connection is congested if it lasts `slow_queue_rounds`.
    fn slow_queue_limit(&self) -> Duration {
        let m = self.window_rtt().unwrap_or_default();
        m.mul_f64((self.config.cwnd_gain - 1.0).max(0.0)) + self.queue_tolerance()
    }

    fn end_round(&mut self, now: Instant) {
        let done = std::mem::replace(
            &mut self.current,
            Round {
                delivered_at_start: self.delivered,
                started: Some(now),
                ..Round::default()
            },
        );
        self.round += 1;
        // A round that ended in ProbeRtt ran at a fraction of the window on purpose: like an
        // application-limited round it neither ages the filters nor lowers the estimate (a timer
        // or route-change probe keeps the bandwidth; a queue probe replaces it at its end).
        let limited = done.app_limited || matches!(self.state, State::ProbeRtt(_));
        if !limited {
            self.bw_round += 1;
            self.bw.expire(self.bw_round);
            self.extra_acked.expire(self.bw_round);
        }
        let queue = self.round_queue(&done);
        self.last_round_queue = queue;

        let delivered = self.delivered.saturating_sub(done.delivered_at_start);
        // The round's average delivery rate: while a queue stands, the bottleneck's rate now. Unlike
        // the per-packet samples (which span a round trip back), it holds nothing from before the
        // round, so it is right even just after the link slowed down.
        let round_rate = match done.started {
            Some(t)
                if self
                    .min_rtt
                    .is_some_and(|m| now.saturating_duration_since(t) >= m) =>
            {
                let ns = now.saturating_duration_since(t).as_nanos().max(1);
                (u128::from(delivered) * 1_000_000_000 / ns).min(u128::from(u64::MAX)) as u64
            }
            _ => 0,
        };
        self.last_round_rate = if done.app_limited { 0 } else { round_rate };
        // Past startup the bandwidth estimate is the windowed max of average delivery rates over
        // whole rounds, not of per-packet samples: a round starts and ends on an ACK, so ACKs that
        // arrive in bursts (cellular grants, Wi-Fi, busy hosts) cannot make it look shorter than
        // it was, while a per-packet sample's interval can end just after a burst and overshoot by
        // the burst. Each sample spans the last two rounds (sliding, one per round), which halves
        // the timing noise that a maximum would otherwise collect as overestimate; rounds shorter
        // than `min_rtt_floor` (loopback, LAN) are joined until the span is that long.
        self.rate_marks.push_back((now, self.delivered, limited));
        if self.rate_marks.len() > MAX_RATE_MARKS {
            self.rate_marks.pop_front();
        }
        let mut span_rate = None;
        if let (Some(w), false) = (self.window_rtt(), matches!(self.state, State::Startup)) {
            let last = self.rate_marks.len() - 1;
            let mut limited = false;
            for i in (0..last).rev() {
                // The round ending at mark i + 1 is inside the span that starts at mark i.
                limited |= self.rate_marks[i + 1].2;
                let (t, d, _) = self.rate_marks[i];
                let span = now.saturating_duration_since(t);
                if last - i >= RATE_SPAN_ROUNDS && span >= w {
                    let rate = (u128::from(self.delivered - d) * 1_000_000_000
                        / span.as_nanos().max(1))
                    .min(u128::from(u64::MAX)) as u64;
                    if !limited || rate > self.bw.get() {
                        self.bw.update(self.bw_round, rate);
                    }
                    if !limited {
                        span_rate = Some(rate);
                    }
                    break;
                }
            }
        }
        let loss_high = done.lost >= 4 * self.mtu
            && done.lost as f64 > self.config.loss_threshold * (done.lost + delivered) as f64;
        self.loss_high_rounds = if loss_high {
            self.loss_high_rounds + 1
        } else {
            0
        };

        match &mut self.state {
            State::Startup => {
                if !done.app_limited {
                    let bw = self.bw.get();
                    if bw as f64 >= self.full_bw as f64 * self.config.startup_growth {
                        self.full_bw = bw;
                        self.full_bw_rounds = 0;
                    } else {
                        self.full_bw_rounds += 1;
                    }
                }
                if self.full_bw_rounds >= self.config.startup_rounds {
                    self.enter_drain("bandwidth plateau");
                } else if queue.is_some_and(|q| q > self.queue_tolerance()) {
                    self.enter_drain("queue");
                } else if self.loss_high_rounds >= LOSS_ROUNDS {
                    self.enter_drain("loss rate");
                }
            }
            State::Drain { rounds } => {
                *rounds += 1;
                if *rounds > MAX_DRAIN_ROUNDS {
                    self.enter_cruise();
                }
            }
            State::Cruise => {
                let limit = self.cruise_queue_limit();
                // The round that just ended began before cruise did when this is the first.
                let steady = self.round > self.cruise_round + 1;
                self.queue_high_rounds = if steady && queue.is_some_and(|q| q > limit) {
                    self.queue_high_rounds + 1
                } else {
                    0
                };
                // A round that left the link room (less queue than the gain's own) measured the
                // capacity as well as a span does, and a span's older half lags a capacity that
                // came back.
                let room = self.window_rtt().unwrap_or_default().mul_f64(
                    (self.config.cwnd_gain - 1.0).max(0.0) * self.config.one_round_sample_below,
                );
                if steady && !done.app_limited && round_rate > 0 && queue.is_some_and(|q| q < room)
                {
                    self.bw.update(self.bw_round, round_rate);
                }
                let slow_limit = self.slow_queue_limit();
                let queued = steady && queue.is_some_and(|q| q > slow_limit);
                self.queue_slow_rounds = if queued {
                    self.queue_slow_rounds + 1
                } else {
                    0
                };
                let bw = self.bw.get();
                let tracking = self.config.queue_track_rounds != u32::MAX;
                let k = self.config.queue_track_rounds.max(2) as usize;
                match (queued, span_rate) {
                    (true, Some(r)) if tracking => {
                        self.queued_rates.push_back(r);
                        if self.queued_rates.len() > k {
                            self.queued_rates.pop_front();
                        }
                    }
                    (true, _) => {}
                    (false, _) => {
                        self.queued_rates.clear();
                        self.tracked_from = None;
                    }
                }
                // A queue stood through the last `k` rounds: the bottleneck never idled, so what it
                // delivered is its capacity now, and an estimate above it is stale (the link got
                // slower). Follow it down at once instead of holding the old maximum for the
                // filter's 10 rounds (2–3 s with the queue's RTT) or backing off through a probe.
                // A longer path looks the same (a higher RTT, a lower rate), but then the rate was
                // the window over the longer RTT, not the link's: if the queue still stands `k`
                // rounds later and the rate fell with the smaller window, only a probe can tell
                // the path from a link that keeps getting slower.
                let mut stuck = false;
                if self.queued_rates.len() >= k {
                    // The oldest sample also spans the round before the queue stood.
                    let n = self.queued_rates.len();
                    let rate = self.queued_rates.iter().skip(n + 1 - k).max().copied();
                    if let Some(rate) = rate.filter(|&r| r > 0 && r < bw) {
                        if self.config.probe_when_rate_keeps_falling
                            && self.tracked_from.is_some()
                            && (rate as f64) < TRACK_FOLLOWS * bw as f64
                        {
                            stuck = true;
                        } else {
                            self.bw.reset(self.bw_round, rate);
                            self.tracked_from = self.tracked_from.or(Some(bw));
                            self.queued_rates.clear();
                        }
                    }
                }
                if self.queue_high_rounds >= self.config.queue_rounds
                    || self.queue_slow_rounds >= self.config.slow_queue_rounds
                    || stuck
                {
                    #[cfg(test)]
                    self.why
                        .push(if self.queue_high_rounds >= self.config.queue_rounds {
                            "fast tier"
                        } else if stuck {
                            "rate keeps falling"
                        } else {
                            "slow tier"
                        });
                    self.enter_probe(now, Cause::Queue);
                } else if self.loss_high_rounds >= LOSS_ROUNDS {
                    #[cfg(test)]
                    self.why.push("loss rate");
                    self.enter_probe(now, Cause::Loss);
                }
            }
            State::ProbeRtt(_) => {}
        }
    }

    fn enter_cruise(&mut self) {
        self.state = State::Cruise;
        self.cruise_round = self.round;
        self.reset_queue_counts();
    }

    fn reset_queue_counts(&mut self) {
        self.queue_high_rounds = 0;
        self.queue_slow_rounds = 0;
        self.queued_rates.clear();
    }

    fn enter_drain(&mut self, why: &str) {
        tracing::debug!(why, bw = self.bw.get(), min_rtt = ?self.min_rtt, "delay-bbr: startup done, draining");
        self.state = State::Drain { rounds: 0 };
        self.update_window();
    }

    fn enter_probe(&mut self, now: Instant, cause: Cause) {
        // The last complete round's delivery rate: with a standing queue, the bottleneck's rate now
        // (the round before it may still hold samples from before the link slowed down).
        let pre_rate = self.last_round_rate;
        tracing::debug!(?cause, bw = self.bw.get(), pre_rate, min_rtt = ?self.min_rtt, "delay-bbr: probing min RTT");
        self.state = State::ProbeRtt(Probe {
            cause,
            started: now,
            drained: None,
            min: None,
            pre_rate,
            delivered_at_start: self.delivered,
            drain_rate: None,
            depth: 0,
        });
        self.reset_queue_counts();
        self.loss_high_rounds = 0;
        self.update_window();
    }

    fn exit_probe(&mut self, now: Instant) {
        let State::ProbeRtt(p) = &self.state else {
            return;
        };
        let p = p.clone();
        let old = self.min_rtt;
        if let Some(m) = p.min {
            self.min_rtt = Some(m);
        }
        self.min_rtt_stamp = Some(now);
        // Did the drained path come back to the old min RTT? Then the queue was ours to remove and the
        // bandwidth estimate was too high: the rate measured while the queue stood is the truth. If
        // not, the path itself got longer and the estimate stays.
        let route_changed = match (old, p.min) {
            (Some(old), Some(new)) => {
                let m = old
                    .mul_f64(self.config.queue_tolerance)
                    .max(self.config.queue_tolerance_floor);
                new > old + m
            }
            _ => false,
        };
        let rate = p.drain_rate.filter(|&r| r > 0).unwrap_or(p.pre_rate);
        if p.cause != Cause::Timer && !route_changed && rate > 0 {
            self.bw.reset(self.bw_round, rate);
            if !self.config.backoff_keeps_aggregation {
                self.extra_acked.clear();
            }
        } else if let (true, Some(before)) = (route_changed, self.tracked_from) {
            // The queue the estimate was lowered for was the longer path.
            self.bw.update(self.bw_round, before);
        }
        self.tracked_from = None;
        tracing::debug!(cause = ?p.cause, ?old, new = ?self.min_rtt, route_changed, bw = self.bw.get(), "delay-bbr: probe done");
        self.enter_cruise();
        self.update_window();
    }

    /// One batch of ACKs: how far ahead of the bandwidth estimate the acknowledgements ran.
    fn on_ack_batch(&mut self, now: Instant) {
        let acked = self.delivered - self.delivered_at_batch;
        self.delivered_at_batch = self.delivered;
        let bw = self.bw.get();
        if matches!(self.state, State::Startup | State::Drain { .. }) {
            // The estimate lags a doubling window by a round: every ACK would look aggregated (and
            // in drain, the queue startup built drains at the link's rate, above that estimate).
            self.agg_start = None;
            self.agg_bytes = 0;
            return;
        }
        if acked == 0 || bw == 0 {
            return;
        }
        let elapsed = now.saturating_duration_since(self.agg_start.unwrap_or(now));
        let expected = (bw as f64 * elapsed.as_secs_f64()) as u64;
        if self.agg_bytes <= expected {
            // ACKs are back at (or below) the bandwidth: a new epoch.
            self.agg_bytes = acked;
            self.agg_start = Some(now);
            return;
        }
        self.agg_bytes += acked;
        let mut limit = self.config.max_ack_aggregation;
        if self.config.ack_aggregation_rtts > 0.0 {
            let rtts = self
                .window_rtt()
                .unwrap_or_default()
                .mul_f64(self.config.ack_aggregation_rtts);
            limit = limit.min(rtts.max(self.config.min_ack_aggregation));
        }
        let cap = (bw as f64 * limit.as_secs_f64()) as u64;
        self.extra_acked
            .update(self.bw_round, (self.agg_bytes - expected).min(cap));
    }

    /// How long a min RTT stays valid without being seen again (see `min_rtt_window_rtts`).
    fn min_rtt_window(&self) -> Duration {
        let rtts = self
            .min_rtt
            .unwrap_or_default()
            .mul_f64(self.config.min_rtt_window_rtts.max(0.0));
        self.config.min_rtt_window.max(rtts)
    }

    /// The min RTT the window is sized from: never below `min_rtt_floor`, because below a couple of
    /// milliseconds (loopback, a LAN) the "path" is host scheduling and ACK batching, which the
    /// window must cover although no min-RTT sample shows it.
    fn window_rtt(&self) -> Option<Duration> {
        Some(self.min_rtt?.max(self.config.min_rtt_floor))
    }

    fn bdp(&self, gain: f64) -> Option<u64> {
        let bw = self.bw.get();
        let rtt = self.window_rtt()?;
        if bw == 0 {
            return None;
        }
        Some((bw as f64 * rtt.as_secs_f64() * gain) as u64)
    }

    /// ProbeRtt's window. Based on the rate delivered just before the probe when that is lower than
    /// the estimate: when the link just got slower, a window from the stale estimate would not empty
    /// the queue, and the "empty-queue" RTT would be queue.
    fn probe_window(&self) -> u64 {
        let (bw, depth) = match &self.state {
            State::ProbeRtt(p) => {
                let measured = p.drain_rate.or(Some(p.pre_rate)).filter(|&r| r > 0);
                (
                    measured.map_or(self.bw.get(), |r| r.min(self.bw.get())),
                    p.depth,
                )
            }
            _ => (self.bw.get(), 0),
        };
        let gain = self.config.probe_rtt_gain * 0.5f64.powi(depth as i32);
        let bdp = self
            .window_rtt()
            .map_or(0, |rtt| (bw as f64 * rtt.as_secs_f64() * gain) as u64);
        bdp.max(self.min_window())
    }

    fn min_window(&self) -> u64 {
        self.config.min_window_packets * self.mtu
    }

    fn update_window(&mut self) {
        let target = match self.state {
            State::Startup => {
                if let Some(cap) = self.bdp(self.config.startup_cwnd_gain) {
                    self.cwnd = self.cwnd.min(cap.max(self.config.initial_window));
                }
                None
            }
            State::Drain { .. } => self.bdp(1.0),
            State::Cruise => self
                .bdp(self.config.cwnd_gain)
                .map(|w| w + self.extra_acked.get()),
            State::ProbeRtt(_) => Some(self.probe_window()),
        };
        if let Some(t) = target {
            self.cwnd = t;
        }
        self.cwnd = self.cwnd.max(self.min_window());
    }

    /// Startup again from the minimum window, keeping the min RTT (RFC 9002 §7.6.2: persistent
    /// congestion, i.e. an outage, means the path's capacity is unknown again).
    fn restart(&mut self) {
        tracing::debug!("delay-bbr: persistent congestion, restarting");
        self.state = State::Startup;
        self.bw.clear();
        self.extra_acked.clear();
        self.agg_start = None;
        self.full_bw = 0;
        self.full_bw_rounds = 0;
        self.startup_queue_since = None;
        self.reset_queue_counts();
        self.loss_high_rounds = 0;
        self.cwnd = self.min_window();
    }

    fn congestion_signal(&mut self, now: Instant, cause: Cause) {
        match self.state {
            State::Startup => self.enter_drain("congestion signal"),
            State::Cruise => {
                #[cfg(test)]
                self.why.push("loss with queue / ECN");
                self.enter_probe(now, cause)
            }
            // Already emptying the queue.
            State::Drain { .. } | State::ProbeRtt(_) => {}
        }
    }

    /// Is there a queue beyond what the current mode explains (for judging a loss)?
    fn queue_is_high(&self) -> bool {
        let recent = self.recent_queue().or(self.last_round_queue);
        match self.state {
            State::Startup => recent.is_some_and(|q| q > self.queue_tolerance()),
            // Until a round that began in cruise has ended, the RTTs still show the queue that
            // startup or a probe left, which the window is already removing.
            State::Cruise if self.round <= self.cruise_round + 1 => false,
            _ => {
                // A buffer that overflows has held its queue for at least the round that filled
                // it. ACKs that arrive late together (a host that stalled, the receiver's or
                // ours, for tens of milliseconds) inflate only the last few samples; a random loss
                // detected just then is still random.
                let limit = self.cruise_queue_limit();
                let round = self.last_round_queue.is_some_and(|q| q > limit);
                (round || !self.config.loss_needs_round_queue) && recent.is_some_and(|q| q > limit)
            }
        }
    }
}

impl Controller for DelayBbr {
    fn on_sent(&mut self, now: Instant, bytes: u64, _last_packet_number: u64) {
        if self.in_flight == 0 || self.delivered_time.is_none() {
            // Starting from idle: the idle time is not part of any delivery interval.
            self.delivered_time = Some(now);
            self.first_sent_time = Some(now);
        }
        self.in_flight += bytes;
        if self.records.back().is_some_and(|r| r.sent == now) {
            return;
        }
        if self.records.len() >= MAX_RECORDS {
            self.records.pop_front();
        }
        self.records.push_back(SendRecord {
            sent: now,
            delivered: self.delivered,
            delivered_time: self.delivered_time.unwrap_or(now),
            first_sent: self.first_sent_time.unwrap_or(now),
            app_limited: self.app_limited,
        });
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        _rtt: &RttEstimator,
    ) {
        self.on_packet_acked(now, sent, bytes, app_limited);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        _largest_packet_num_acked: Option<u64>,
    ) {
        self.in_flight = in_flight;
        self.app_limited = app_limited;
        self.on_ack_batch(now);
        let probe_target = self.probe_window();
        let tolerance = self.queue_tolerance();
        let min_window = self.min_window();
        match &mut self.state {
            State::Drain { .. } => {
                if self.bdp(1.0).is_some_and(|bdp| in_flight <= bdp) {
                    tracing::debug!(bw = self.bw.get(), min_rtt = ?self.min_rtt, "delay-bbr: cruising");
                    self.enter_cruise();
                }
            }
            State::ProbeRtt(p) => {
                let round = self.round;
                let started = p.started;
                if p.drained.is_none() && in_flight <= probe_target {
                    p.drained = Some((now, round));
                    let took = now.saturating_duration_since(started);
                    if p.drain_rate.is_none() && !took.is_zero() {
                        let bytes = self.delivered - p.delivered_at_start;
                        p.drain_rate =
                            Some((u128::from(bytes) * 1_000_000_000 / took.as_nanos()) as u64);
                    }
                }
                let measured = p.drained.is_some_and(|(_, r)| round > r) && p.min.is_some();
                // Still far above the old min RTT: a longer path, or a queue the window did not
                // empty (the estimate it was sized from was too high)? Halve and look again.
                let suspicious = match (p.min, self.min_rtt) {
                    (Some(new), Some(old)) => new > old + tolerance,
                    _ => false,
                };
                let patience = self.min_rtt.unwrap_or_default() * 8 + Duration::from_secs(1);
                if measured && suspicious && p.depth < MAX_PROBE_DEPTH && probe_target > min_window
                {
                    p.depth += 1;
                    p.drained = None;
                    p.min = None;
                } else if measured || now.saturating_duration_since(started) > patience {
                    self.exit_probe(now);
                }
            }
            State::Cruise => {
                let window = self.min_rtt_window();
                let stale = self
                    .min_rtt_stamp
                    .is_some_and(|t| now.saturating_duration_since(t) > window);
                if stale {
                    // A queue standing beyond the gain's when the timer runs out makes this probe's
                    // drain rate the bottleneck's rate, as for a queue build-up.
                    let queued = self.config.timer_probe_takes_queue
                        && self
                            .recent_queue()
                            .is_some_and(|q| q > self.slow_queue_limit());
                    let cause = if queued { Cause::Queue } else { Cause::Timer };
                    #[cfg(test)]
                    self.why
                        .push(if queued { "timer, with queue" } else { "timer" });
                    self.enter_probe(now, cause);
                }
            }
            State::Startup => {}
        }
        self.update_window();
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        _sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.in_flight = self.in_flight.saturating_sub(lost_bytes);
        self.current.lost += lost_bytes;
        if is_persistent_congestion {
            self.restart();
        } else if lost_bytes == 0 {
            // quinn reports ECN congestion marks with no lost bytes.
            self.congestion_signal(now, Cause::Ecn);
        } else if self.queue_is_high() {
            self.congestion_signal(now, Cause::Loss);
        }
        // Otherwise: random loss. The window stays; the loss-rate rule at the round's end catches a
        // drop rate far above background.
        self.update_window();
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.mtu = u64::from(new_mtu);
        self.cwnd = self.cwnd.max(self.min_window());
    }

    fn window(&self) -> u64 {
        self.cwnd
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut m = ControllerMetrics::default();
        m.congestion_window = self.cwnd;
        m
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        self.config.initial_window
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}
