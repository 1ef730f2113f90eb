//! A small deterministic link simulator for the controller's tests (virtual time, seeded loss).
//!
//! It models what matters for congestion control on quicft's uplinks, after linkem
//! (bench/linkem) and quinn 0.11:
//!
//! ```text
//! sender ──► drop-tail queue ──► bottleneck (rate) ──► random loss ──► one-way delay ──► receiver
//!   ▲                                                                                      │
//!   └──────────────────────────── one-way delay (no loss, no rate) ◄──────── ACK ──────────┘
//! ```
//!
//! - Sender: quinn's send rule (blocked when `in_flight + MTU >= window`), quinn's pacer ported as is
//!   (token bucket refilled at `1.25 × window / srtt`, bursts of 2 ms clamped to 10–256 datagrams),
//!   quinn's RTT estimator, and RFC 9002 loss detection (3 packets or 9/8 RTT), probe timeout (two
//!   probe packets past the window and the pacer; without it a tail lost in an outage would stall
//!   the run for good) and persistent congestion, as quinn does them. Bulk data when the
//!   traffic says so; optionally a telemetry message every 100 ms, sent ahead of the bulk data (a
//!   higher-priority stream) and retransmitted ahead of it when lost.
//! - Receiver: ACKs every second packet, at once on a gap, else after 25 ms (quinn's
//!   `max_ack_delay`).
//! - Controller calls in quinn's order: `on_sent` per transmit, `on_ack` per newly acknowledged
//!   packet, `on_end_acks`, RTT update, loss detection and `on_congestion_event`.
//!
//! Every packet's fate through the FIFO bottleneck is computed when it is sent, so the only events
//! are arrivals, ACKs and timers.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::Controller;

use crate::{DelayBbr, DelayBbrConfig, Mode};

const MTU: u64 = 1200;
const TELEMETRY_SIZE: u64 = 150;
/// Bytes one delivery opportunity of a trace carries (Mahimahi's).
const TRACE_BYTES: u64 = 1500;
const MAX_ACK_DELAY: Duration = Duration::from_millis(25);
/// quinn's timer granularity (RFC 9002 kGranularity).
const GRANULARITY: Duration = Duration::from_millis(1);
/// Lost packets spanning this many PTOs with nothing acknowledged between them are persistent
/// congestion (RFC 9002 §7.6, quinn's default).
const PERSISTENT_CONGESTION_THRESHOLD: u32 = 3;

/// splitmix64: tiny, seeded, the same on every platform.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The link, constant unless a schedule says otherwise.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    /// Bottleneck rate, bits/s.
    pub rate: f64,
    /// `(from, rate)`: the bottleneck rate changes at these times.
    pub rate_changes: Vec<(Duration, f64)>,
    /// Propagation delay each way.
    pub one_way: Duration,
    /// `(from, one_way)`: the propagation delay changes (a route change).
    pub delay_changes: Vec<(Duration, Duration)>,
    /// Drop-tail queue in front of the bottleneck, as time at the initial rate.
    pub queue: Duration,
    /// Random loss after the bottleneck (radio loss: the packet used its share of the capacity).
    pub loss: f64,
    pub seed: u64,
    /// ACKs leave the receiver only at multiples of this (cellular grants, Wi-Fi, a busy host):
    /// they reach the sender in bursts.
    pub ack_slots: Option<Duration>,
    /// Delivery opportunities of 1500 bytes each (a Mahimahi trace, from the start of the run):
    /// when set, the bottleneck serves at these times instead of `rate` (which then only sizes the
    /// queue); unused opportunities are lost, as in Mahimahi and linkem.
    pub trace: Option<Vec<Duration>>,
    /// ACKs leave the receiver only at these times (the downlink trace's opportunities).
    pub ack_trace: Option<Vec<Duration>>,
    /// Host noise: each ACK reaches the sender up to this much later (uniform, order kept), as
    /// when the receiver's or the sender's event loop runs late on a busy machine.
    pub ack_jitter: Duration,
    /// Host stalls `(mean interval, length)`: the sender's event loop is descheduled for `length`
    /// at random times (exponential gaps with this mean), and the ACKs that arrive meanwhile are
    /// handled together when it runs again.
    pub stalls: Option<(Duration, Duration)>,
}

impl Link {
    /// The link of DESIGN §6: 20 Mbit/s, 40 ms RTT, 200 ms queue.
    pub fn lte(loss: f64) -> Link {
        Link {
            rate: 20e6,
            rate_changes: Vec::new(),
            one_way: Duration::from_millis(20),
            delay_changes: Vec::new(),
            queue: Duration::from_millis(200),
            loss,
            seed: 1,
            ack_slots: None,
            trace: None,
            ack_trace: None,
            ack_jitter: Duration::ZERO,
            stalls: None,
        }
    }

    fn rate_at(&self, t: Duration) -> f64 {
        self.rate_changes
            .iter()
            .rfind(|(from, _)| *from <= t)
            .map_or(self.rate, |&(_, r)| r)
    }

    fn one_way_at(&self, t: Duration) -> Duration {
        self.delay_changes
            .iter()
            .rfind(|(from, _)| *from <= t)
            .map_or(self.one_way, |&(_, d)| d)
    }

    fn queue_bytes(&self) -> f64 {
        self.rate / 8.0 * self.queue.as_secs_f64()
    }
}

/// What the application sends.
#[derive(Debug, Clone)]
pub(crate) struct Traffic {
    /// Bulk (file) data is always ready during these periods.
    pub bulk: Vec<(Duration, Duration)>,
    /// A small telemetry message this often, the whole run.
    pub telemetry: Option<Duration>,
}

impl Traffic {
    pub fn bulk(duration: Duration) -> Traffic {
        Traffic {
            bulk: vec![(Duration::ZERO, duration)],
            telemetry: Some(Duration::from_millis(100)),
        }
    }
}

/// Measurements over `[from, until)` of the run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Window {
    pub from: Duration,
    pub until: Duration,
    /// Bulk bytes that reached the receiver (first copies only count once: each packet is new data).
    pub goodput_bytes: u64,
    /// Time the bottleneck was busy.
    pub busy: Duration,
    /// Queue delay of each packet entering the bottleneck.
    pub queue_delays: Vec<Duration>,
    /// Sender's smoothed RTT, sampled every 10 ms.
    pub srtt: Vec<Duration>,
    /// Telemetry message latency: generated → echoed back (arrival + return delay).
    pub telemetry: Vec<Duration>,
}

impl Window {
    pub fn span(&self) -> Duration {
        self.until - self.from
    }

    /// Goodput in bits/s.
    pub fn goodput(&self) -> f64 {
        self.goodput_bytes as f64 * 8.0 / self.span().as_secs_f64()
    }

    /// Share of the window the bottleneck was busy.
    pub fn utilisation(&self) -> f64 {
        self.busy.as_secs_f64() / self.span().as_secs_f64()
    }

    pub fn mean_queue(&self) -> Duration {
        mean(&self.queue_delays)
    }

    pub fn mean_srtt(&self) -> Duration {
        mean(&self.srtt)
    }

    pub fn queue_pct(&self, p: f64) -> Duration {
        percentile(&self.queue_delays, p)
    }

    pub fn telemetry_pct(&self, p: f64) -> Duration {
        percentile(&self.telemetry, p)
    }
}

fn mean(v: &[Duration]) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.iter().sum::<Duration>() / v.len() as u32
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    let i = ((s.len() - 1) as f64 * p).round() as usize;
    s[i.min(s.len() - 1)]
}

/// The controller's state every 10 ms, for assertions about its trajectory and for debugging.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    pub at: Duration,
    pub cwnd: u64,
    pub bw: u64,
    pub min_rtt: Option<Duration>,
    pub mode: Mode,
    pub srtt: Duration,
    /// The bottleneck had nothing queued.
    pub link_idle: bool,
    pub in_flight: u64,
}

#[derive(Debug)]
pub(crate) struct Run {
    pub windows: Vec<Window>,
    pub trace: Vec<Snapshot>,
    pub lost_random: u64,
    pub lost_queue: u64,
    /// When each bulk packet reached the receiver (from the start), in order: the completion
    /// time of an upload of a given size.
    pub bulk_arrivals: Vec<Duration>,
    /// Times loss detection declared persistent congestion.
    pub persistent_congestion: u64,
    /// Trace links: delivery opportunities that passed unused, `(when, bytes)`.
    pub wasted: Vec<(Duration, u64)>,
    pub controller: DelayBbr,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Bulk,
    Telemetry { created: Instant },
}

#[derive(Debug)]
enum Event {
    /// A packet reaches the receiver.
    Arrive {
        pn: u64,
        kind: Kind,
    },
    /// An ACK reaches the sender.
    Ack {
        pns: Vec<u64>,
        ack_delay: Duration,
    },
    /// The receiver's delayed-ACK timer (`epoch` invalidates timers superseded by an ACK).
    AckTimer {
        epoch: u64,
    },
    SendWake,
    LossTimer,
    /// The probe timeout: nothing was acknowledged for a PTO (a tail loss or an outage).
    Pto,
    Telemetry,
    Sample,
}

struct Scheduled {
    at: Instant,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Earliest first out of the max-heap.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// quinn 0.11's RTT estimator (quinn-proto `RttEstimator`, which only quinn can build).
struct Rtt {
    latest: Duration,
    smoothed: Option<Duration>,
    var: Duration,
    min: Duration,
}

impl Rtt {
    fn new() -> Rtt {
        let initial = Duration::from_millis(333);
        Rtt {
            latest: initial,
            smoothed: None,
            var: initial / 2,
            min: initial,
        }
    }

    fn get(&self) -> Duration {
        self.smoothed.unwrap_or(self.latest)
    }

    fn update(&mut self, ack_delay: Duration, rtt: Duration) {
        self.latest = rtt;
        self.min = self.min.min(rtt);
        if let Some(smoothed) = self.smoothed {
            let adjusted = if self.min + ack_delay <= self.latest {
                self.latest - ack_delay
            } else {
                self.latest
            };
            let var_sample = smoothed.abs_diff(adjusted);
            self.var = (3 * self.var + var_sample) / 4;
            self.smoothed = Some((7 * smoothed + adjusted) / 8);
        } else {
            self.smoothed = Some(rtt);
            self.var = rtt / 2;
            self.min = rtt;
        }
    }
}

/// quinn 0.11's pacer (quinn-proto `connection/pacing.rs`), ported as is.
struct Pacer {
    capacity: u64,
    last_window: u64,
    tokens: u64,
    prev: Instant,
}

impl Pacer {
    fn capacity(srtt: Duration, window: u64) -> u64 {
        let rtt = srtt.as_nanos().max(1);
        let capacity = ((u128::from(window) * 2_000_000) / rtt) as u64;
        capacity.clamp(10 * MTU, 256 * MTU)
    }

    fn new(srtt: Duration, window: u64, now: Instant) -> Pacer {
        let capacity = Pacer::capacity(srtt, window);
        Pacer {
            capacity,
            last_window: window,
            tokens: capacity,
            prev: now,
        }
    }

    fn delay(&mut self, srtt: Duration, bytes: u64, window: u64, now: Instant) -> Option<Instant> {
        if window != self.last_window {
            self.capacity = Pacer::capacity(srtt, window);
            self.tokens = self.capacity.min(self.tokens);
            self.last_window = window;
        }
        if self.tokens >= bytes {
            return None;
        }
        let elapsed = now.saturating_duration_since(self.prev);
        let elapsed_rtts = elapsed.as_secs_f64() / srtt.as_secs_f64();
        let new_tokens = window as f64 * 1.25 * elapsed_rtts;
        self.tokens = self
            .tokens
            .saturating_add(new_tokens as u64)
            .min(self.capacity);
        self.prev = now;
        if self.tokens >= bytes {
            return None;
        }
        let unscaled = srtt
            .checked_mul((bytes.max(self.capacity) - self.tokens) as u32)
            .unwrap_or(Duration::MAX)
            / window as u32;
        Some(self.prev + (unscaled / 5) * 4)
    }
}

struct Sent {
    time: Instant,
    size: u64,
    kind: Kind,
}

pub(crate) struct Sim {
    link: Link,
    traffic: Traffic,
    t0: Instant,
    now: Instant,
    events: BinaryHeap<Scheduled>,
    seq: u64,
    rng: Rng,
    /// Host noise (ACK jitter, stalls), apart from `rng` so that it leaves the losses unchanged.
    noise: Rng,
    last_ack_at: Instant,
    next_stall: Instant,
    cc: DelayBbr,

    // sender
    next_pn: u64,
    sent: BTreeMap<u64, Sent>,
    in_flight: u64,
    largest_acked: Option<u64>,
    rtt: Rtt,
    pacer: Pacer,
    app_limited: bool,
    wake_at: Option<Instant>,
    loss_at: Option<Instant>,
    pto_at: Option<Instant>,
    pto_count: u32,
    /// Packets the PTO lets out regardless of window and pacing.
    probes: u32,
    last_sent_at: Option<Instant>,
    /// The first packet sent after the first RTT sample: persistent congestion starts no earlier.
    first_pn_after_rtt: Option<u64>,
    telemetry_queue: VecDeque<Instant>,

    // link
    link_free_at: Instant,
    /// Trace links: next opportunity, bytes left in it, packets queued `(departure, size)`.
    opp_idx: usize,
    opp_left: u64,
    queued: VecDeque<(Instant, u64)>,
    ack_idx: usize,
    lost_random: u64,
    lost_queue: u64,
    bulk_arrivals: Vec<Duration>,
    persistent_congestion: u64,
    wasted: Vec<(Duration, u64)>,

    // receiver
    last_recv_pn: Option<u64>,
    unacked: Vec<u64>,
    largest_recv_at: Option<Instant>,
    ack_epoch: u64,
    ack_timer_armed: bool,

    windows: Vec<Window>,
    trace: Vec<Snapshot>,
}

impl Sim {
    pub fn new(link: Link, traffic: Traffic, config: DelayBbrConfig) -> Sim {
        let t0 = Instant::now();
        let cc = DelayBbr::new(Arc::new(config), t0, MTU as u16);
        let rtt = Rtt::new();
        let pacer = Pacer::new(rtt.get(), cc.window(), t0);
        let seed = link.seed;
        Sim {
            link,
            traffic,
            t0,
            now: t0,
            events: BinaryHeap::new(),
            seq: 0,
            rng: Rng(seed),
            noise: Rng(seed ^ 0x5DEE_CE66),
            last_ack_at: t0,
            next_stall: t0,
            cc,
            next_pn: 0,
            sent: BTreeMap::new(),
            in_flight: 0,
            largest_acked: None,
            rtt,
            pacer,
            app_limited: false,
            wake_at: None,
            loss_at: None,
            pto_at: None,
            pto_count: 0,
            probes: 0,
            last_sent_at: None,
            first_pn_after_rtt: None,
            telemetry_queue: VecDeque::new(),
            link_free_at: t0,
            opp_idx: 0,
            opp_left: TRACE_BYTES,
            queued: VecDeque::new(),
            ack_idx: 0,
            lost_random: 0,
            lost_queue: 0,
            bulk_arrivals: Vec::new(),
            persistent_congestion: 0,
            wasted: Vec::new(),
            last_recv_pn: None,
            unacked: Vec::new(),
            largest_recv_at: None,
            ack_epoch: 0,
            ack_timer_armed: false,
            windows: Vec::new(),
            trace: Vec::new(),
        }
    }

    /// Runs until `end`, measuring each of `windows` (`(from, until)` from the start).
    pub fn run(mut self, end: Duration, windows: &[(Duration, Duration)]) -> Run {
        self.windows = windows
            .iter()
            .map(|&(from, until)| Window {
                from,
                until,
                ..Window::default()
            })
            .collect();
        if self.traffic.telemetry.is_some() {
            self.schedule(self.t0, Event::Telemetry);
        }
        self.schedule(self.t0, Event::Sample);
        for (from, _) in self.traffic.bulk.clone() {
            self.schedule(self.t0 + from, Event::SendWake);
        }
        let end = self.t0 + end;
        while let Some(s) = self.events.pop() {
            if s.at > end {
                break;
            }
            self.now = s.at;
            self.handle(s.event);
        }
        Run {
            windows: self.windows,
            trace: self.trace,
            lost_random: self.lost_random,
            lost_queue: self.lost_queue,
            bulk_arrivals: self.bulk_arrivals,
            persistent_congestion: self.persistent_congestion,
            wasted: self.wasted,
            controller: self.cc,
        }
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.events.push(Scheduled {
            at,
            seq: self.seq,
            event,
        });
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// The measurement windows covering `t` (from the start).
    fn windows_at(&mut self, t: Duration) -> impl Iterator<Item = &mut Window> {
        self.windows
            .iter_mut()
            .filter(move |w| w.from <= t && t < w.until)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Arrive { pn, kind } => self.on_arrive(pn, kind),
            Event::Ack { pns, ack_delay } => self.on_ack(pns, ack_delay),
            Event::AckTimer { epoch } => {
                if epoch == self.ack_epoch && self.ack_timer_armed {
                    self.send_ack();
                }
            }
            Event::SendWake => {
                if self.wake_at.is_some_and(|t| t <= self.now) {
                    self.wake_at = None;
                }
                self.try_send();
            }
            Event::LossTimer => {
                if self.loss_at.is_some_and(|t| t <= self.now) {
                    self.loss_at = None;
                    self.detect_lost(false);
                    self.try_send();
                }
            }
            Event::Pto => {
                if self.pto_at.is_some_and(|t| t <= self.now) {
                    self.pto_at = None;
                    self.pto_count += 1;
                    self.probes = 2;
                    self.try_send();
                }
            }
            Event::Telemetry => {
                self.telemetry_queue.push_back(self.now);
                if let Some(every) = self.traffic.telemetry {
                    self.schedule(self.now + every, Event::Telemetry);
                }
                self.try_send();
            }
            Event::Sample => {
                let at = self.elapsed();
                let srtt = self.rtt.get();
                self.trace.push(Snapshot {
                    at,
                    cwnd: self.cc.window(),
                    bw: self.cc.bandwidth(),
                    min_rtt: self.cc.min_rtt(),
                    mode: self.cc.mode(),
                    srtt,
                    link_idle: self.link_free_at <= self.now,
                    in_flight: self.in_flight,
                });
                for w in self.windows_at(at) {
                    w.srtt.push(srtt);
                }
                self.schedule(self.now + Duration::from_millis(10), Event::Sample);
            }
        }
    }

    fn bulk_active(&self) -> bool {
        let t = self.elapsed();
        self.traffic
            .bulk
            .iter()
            .any(|&(from, until)| from <= t && t < until)
    }

    fn try_send(&mut self) {
        self.send_what_may_go();
        self.arm_pto();
    }

    /// quinn's PTO (RFC 9002 §6.2): smoothed RTT + max(4 × rttvar, granularity) + max_ack_delay.
    fn pto(&self) -> Duration {
        self.rtt.get() + (4 * self.rtt.var).max(GRANULARITY) + MAX_ACK_DELAY
    }

    /// The PTO runs from the last packet sent while anything is unacknowledged, doubling with each
    /// expiry until an ACK arrives.
    fn arm_pto(&mut self) {
        let Some(last) = self.last_sent_at.filter(|_| !self.sent.is_empty()) else {
            self.pto_at = None;
            return;
        };
        let at = last + self.pto() * 2u32.saturating_pow(self.pto_count.min(16));
        if self.pto_at != Some(at) {
            self.pto_at = Some(at);
            self.schedule(at, Event::Pto);
        }
    }

    fn send_what_may_go(&mut self) {
        loop {
            let kind = if let Some(&created) = self.telemetry_queue.front() {
                Kind::Telemetry { created }
            } else if self.bulk_active() {
                Kind::Bulk
            } else {
                self.app_limited = true;
                return;
            };
            let window = self.cc.window();
            let probe = self.probes > 0;
            if probe {
                // A PTO probe goes whatever the window and the pacer say (quinn).
                self.probes -= 1;
            } else if self.in_flight + MTU >= window {
                self.app_limited = false;
                return;
            } else if let Some(at) = self.pacer.delay(self.rtt.get(), MTU, window, self.now) {
                self.app_limited = false;
                if self.wake_at.is_none_or(|t| t > at) {
                    self.wake_at = Some(at);
                    self.schedule(at, Event::SendWake);
                }
                return;
            }
            let size = match kind {
                Kind::Bulk => MTU,
                Kind::Telemetry { .. } => {
                    self.telemetry_queue.pop_front();
                    TELEMETRY_SIZE
                }
            };
            let pn = self.next_pn;
            self.next_pn += 1;
            self.last_sent_at = Some(self.now);
            if self.first_pn_after_rtt.is_none() && self.largest_acked.is_some() {
                self.first_pn_after_rtt = Some(pn);
            }
            self.pacer.tokens = self.pacer.tokens.saturating_sub(size);
            self.cc.on_sent(self.now, size, pn);
            self.sent.insert(
                pn,
                Sent {
                    time: self.now,
                    size,
                    kind,
                },
            );
            self.in_flight += size;
            self.transmit(pn, size, kind);
        }
    }

    /// The packet's way through the bottleneck, decided now (FIFO).
    fn transmit(&mut self, pn: u64, size: u64, kind: Kind) {
        if self.link.trace.is_some() {
            return self.transmit_trace(pn, size, kind);
        }
        let at = self.elapsed();
        let rate = self.link.rate_at(at);
        let backlog = self
            .link_free_at
            .saturating_duration_since(self.now)
            .as_secs_f64()
            * rate
            / 8.0;
        if backlog > 0.0 && backlog + size as f64 > self.link.queue_bytes() {
            self.lost_queue += 1;
            return;
        }
        let start = self.link_free_at.max(self.now);
        let serve = Duration::from_secs_f64(size as f64 * 8.0 / rate);
        self.link_free_at = start + serve;
        let queue = start - self.now;
        for w in self.windows_at(at) {
            w.queue_delays.push(queue);
            w.busy += serve;
        }
        if self.rng.next_f64() < self.link.loss {
            self.lost_random += 1;
            return;
        }
        let arrive = self.link_free_at + self.link.one_way_at(at);
        self.schedule(arrive, Event::Arrive { pn, kind });
    }

    /// [`Self::transmit`] on a trace link: FIFO through the delivery opportunities.
    fn transmit_trace(&mut self, pn: u64, size: u64, kind: Kind) {
        let at = self.elapsed();
        while self.queued.front().is_some_and(|&(t, _)| t <= self.now) {
            self.queued.pop_front();
        }
        let backlog: u64 = self.queued.iter().map(|&(_, b)| b).sum();
        if backlog > 0 && (backlog + size) as f64 > self.link.queue_bytes() {
            self.lost_queue += 1;
            return;
        }
        let opps = self.link.trace.as_ref().expect("trace link");
        let start = self.link_free_at.max(self.now);
        let start_at = start - self.t0;
        while self.opp_idx < opps.len() && opps[self.opp_idx] < start_at {
            self.wasted.push((opps[self.opp_idx], self.opp_left));
            self.opp_idx += 1;
            self.opp_left = TRACE_BYTES;
        }
        let mut need = size;
        let mut depart = start_at;
        while need > 0 {
            let Some(&t) = opps.get(self.opp_idx) else {
                depart = Duration::from_secs(1 << 20);
                break;
            };
            depart = t;
            let take = need.min(self.opp_left);
            need -= take;
            self.opp_left -= take;
            if self.opp_left == 0 {
                self.opp_idx += 1;
                self.opp_left = TRACE_BYTES;
            }
        }
        let depart = self.t0 + depart;
        self.link_free_at = depart;
        self.queued.push_back((depart, size));
        let queue = start - self.now;
        for w in self.windows_at(at) {
            w.queue_delays.push(queue);
        }
        if self.rng.next_f64() < self.link.loss {
            self.lost_random += 1;
            return;
        }
        let arrive = depart + self.link.one_way_at(at);
        self.schedule(arrive, Event::Arrive { pn, kind });
    }

    fn on_arrive(&mut self, pn: u64, kind: Kind) {
        let at = self.elapsed();
        let back = self.link.one_way_at(at);
        match kind {
            Kind::Bulk => {
                self.bulk_arrivals.push(at);
                for w in self.windows_at(at) {
                    w.goodput_bytes += MTU;
                }
            }
            Kind::Telemetry { created } => {
                let latency = (self.now + back) - created;
                let created_at = created - self.t0;
                for w in self.windows_at(created_at) {
                    w.telemetry.push(latency);
                }
            }
        }
        let gap = self.last_recv_pn.is_some_and(|last| pn != last + 1);
        self.last_recv_pn = Some(pn);
        self.unacked.push(pn);
        self.largest_recv_at = Some(self.now);
        if gap || self.unacked.len() >= 2 {
            self.send_ack();
        } else if !self.ack_timer_armed {
            self.ack_timer_armed = true;
            self.schedule(
                self.now + MAX_ACK_DELAY,
                Event::AckTimer {
                    epoch: self.ack_epoch,
                },
            );
        }
    }

    fn send_ack(&mut self) {
        let pns = std::mem::take(&mut self.unacked);
        self.ack_epoch += 1;
        self.ack_timer_armed = false;
        if pns.is_empty() {
            return;
        }
        let ack_delay = self
            .largest_recv_at
            .map_or(Duration::ZERO, |t| self.now - t);
        let back = self.link.one_way_at(self.elapsed());
        let leave = match self.link.ack_slots {
            Some(slot) => {
                let slot = slot.as_nanos().max(1);
                let t = self.elapsed().as_nanos().div_ceil(slot) * slot;
                self.t0 + Duration::from_nanos(t as u64)
            }
            None => self.now,
        };
        let leave = match &self.link.ack_trace {
            Some(opps) => {
                let e = self.elapsed();
                while self.ack_idx < opps.len() && opps[self.ack_idx] < e {
                    self.ack_idx += 1;
                }
                opps.get(self.ack_idx).map_or(leave, |&t| self.t0 + t)
            }
            None => leave,
        };
        let mut at = leave + back;
        if !self.link.ack_jitter.is_zero() {
            at += self.link.ack_jitter.mul_f64(self.noise.next_f64());
        }
        // In order, and not while the sender's host is stalled.
        at = at.max(self.last_ack_at);
        if let Some((every, length)) = self.link.stalls {
            while self.next_stall + length <= at {
                let gap = -every.as_secs_f64() * (1.0 - self.noise.next_f64()).ln();
                self.next_stall += length + Duration::from_secs_f64(gap);
            }
            if self.next_stall <= at {
                at = self.next_stall + length;
            }
        }
        self.last_ack_at = at;
        self.schedule(at, Event::Ack { pns, ack_delay });
    }

    fn on_ack(&mut self, pns: Vec<u64>, ack_delay: Duration) {
        let mut largest_newly: Option<(u64, Instant)> = None;
        for pn in pns {
            let Some(p) = self.sent.remove(&pn) else {
                continue;
            };
            self.in_flight -= p.size;
            self.cc
                .on_packet_acked(self.now, p.time, p.size, self.app_limited);
            if largest_newly.is_none_or(|(l, _)| pn > l) {
                largest_newly = Some((pn, p.time));
            }
        }
        let Some((largest, largest_sent)) = largest_newly else {
            return;
        };
        let new_largest = self.largest_acked.is_none_or(|l| largest > l);
        if new_largest {
            self.largest_acked = Some(largest);
        }
        self.cc.on_end_acks(
            self.now,
            self.in_flight,
            self.app_limited,
            self.largest_acked,
        );
        if new_largest {
            self.rtt.update(ack_delay, self.now - largest_sent);
        }
        self.pto_count = 0;
        self.detect_lost(true);
        self.try_send();
    }

    /// RFC 9002 loss detection as quinn does it, persistent congestion included (only when an ACK
    /// triggered the detection, as in quinn).
    fn detect_lost(&mut self, due_to_ack: bool) {
        let Some(largest) = self.largest_acked else {
            return;
        };
        let loss_delay = self
            .rtt
            .get()
            .max(self.rtt.latest)
            .mul_f64(9.0 / 8.0)
            .max(Duration::from_millis(1));
        let congestion_period = self.pto() * PERSISTENT_CONGESTION_THRESHOLD;
        let mut lost = Vec::new();
        let mut next_loss: Option<Instant> = None;
        let mut persistent = false;
        let mut run_start: Option<Instant> = None;
        let mut prev: Option<u64> = None;
        for (&pn, p) in self.sent.range(..largest) {
            if prev != pn.checked_sub(1) {
                // A packet between was acknowledged.
                run_start = None;
            }
            prev = Some(pn);
            if largest >= pn + 3 || self.now.saturating_duration_since(p.time) >= loss_delay {
                lost.push(pn);
                if due_to_ack {
                    match run_start {
                        Some(start) if p.time - start > congestion_period => persistent = true,
                        None if self.first_pn_after_rtt.is_some_and(|f| f < pn) => {
                            run_start = Some(p.time)
                        }
                        _ => {}
                    }
                }
            } else {
                run_start = None;
                let t = p.time + loss_delay;
                next_loss = Some(next_loss.map_or(t, |n| n.min(t)));
            }
        }
        if let Some(t) = next_loss {
            if self.loss_at.is_none_or(|l| l > t) {
                self.loss_at = Some(t);
                self.schedule(t, Event::LossTimer);
            }
        }
        if lost.is_empty() {
            return;
        }
        let mut bytes = 0;
        let mut largest_sent = self.t0;
        for pn in lost.iter().rev() {
            let Some(p) = self.sent.remove(pn) else {
                continue;
            };
            self.in_flight -= p.size;
            bytes += p.size;
            largest_sent = largest_sent.max(p.time);
            if let Kind::Telemetry { created } = p.kind {
                // The stream retransmits the message ahead of new data.
                self.telemetry_queue.push_front(created);
            }
        }
        if persistent {
            self.persistent_congestion += 1;
        }
        self.cc
            .on_congestion_event(self.now, largest_sent, persistent, bytes);
    }
}

/// Runs `link` with bulk data all the time and telemetry every 100 ms.
pub(crate) fn run_bulk(link: Link, end: Duration, windows: &[(Duration, Duration)]) -> Run {
    Sim::new(link, Traffic::bulk(end), DelayBbrConfig::default()).run(end, windows)
}
