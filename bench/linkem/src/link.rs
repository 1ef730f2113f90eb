//! One direction of the emulated link, as a sans-IO state machine: it never reads a clock or touches a
//! device. The driver passes `now` (time since the emulator started) into every call:
//! `handle_packet` for each packet that arrives, `poll_transmit` for packets due for delivery, and
//! `poll_timeout` for when to call again.
//!
//! A packet goes through, in order:
//!
//! ```text
//!  arrival ──► link down? ──► drop-tail queue ──► bottleneck ──► loss ──► delay ± jitter ──► delivery
//!              (cut)           (bytes limit)      (rate or       (random,  (priority queue
//!                                                  trace)         G-E)      by delivery time)
//! ```
//!
//! Loss is applied after the bottleneck, like radio loss: a lost packet has used its share of the
//! capacity. The bottleneck serves the head of the queue only; when the link goes down (the `cut`
//! schedule), whatever is queued is dropped at the instant it goes down, packets arriving while it is
//! down are dropped, and packets already past the bottleneck (in propagation) are still delivered.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::hist::Histogram;
use crate::rng::Rng;
use crate::spec::{Cut, DirSpec, GilbertElliott, QueueLimit};
use crate::trace::{Trace, OPPORTUNITY_BYTES};

/// The bottleneck's service, resolved (a trace is loaded, not a path).
#[derive(Debug, Clone)]
pub enum Capacity {
    Unlimited,
    /// Bits per second.
    Rate(u64),
    Trace(Arc<Trace>),
}

impl Capacity {
    /// Mean capacity in bit/s, `None` when unlimited.
    pub fn mean_bps(&self) -> Option<f64> {
        match self {
            Capacity::Unlimited => None,
            Capacity::Rate(bps) => Some(*bps as f64),
            Capacity::Trace(t) => Some(t.mean_rate_bps()),
        }
    }
}

/// Why a packet did not make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    LossRandom,
    LossBurst,
    QueueFull,
    LinkDown,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drops {
    pub loss_random: u64,
    pub loss_burst: u64,
    pub queue_full: u64,
    pub link_down: u64,
}

impl Drops {
    fn count(&mut self, cause: DropCause) {
        match cause {
            DropCause::LossRandom => self.loss_random += 1,
            DropCause::LossBurst => self.loss_burst += 1,
            DropCause::QueueFull => self.queue_full += 1,
            DropCause::LinkDown => self.link_down += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.loss_random + self.loss_burst + self.queue_full + self.link_down
    }
}

/// What one direction did, for the report.
#[derive(Debug, Clone, Default)]
pub struct DirStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub drops: Drops,
    /// Arrival to the start of service at the bottleneck: the standing queue a packet met.
    pub queue_delay: Histogram,
    /// Arrival to delivery: the one-way delay the emulator added (queue, serialisation, delay, jitter).
    pub delay: Histogram,
    pub max_queue_bytes: u64,
    pub first_in: Option<Duration>,
    pub last_out: Option<Duration>,
    /// Bytes delivered in each whole second since the start (index = second).
    pub per_second_bytes: Vec<u64>,
}

impl DirStats {
    /// Delivered bit/s between the first arrival and the last delivery.
    pub fn achieved_bps(&self) -> Option<f64> {
        let span = self.last_out?.checked_sub(self.first_in?)?;
        (!span.is_zero()).then(|| self.bytes_out as f64 * 8.0 / span.as_secs_f64())
    }
}

#[derive(Debug)]
struct Queued {
    arrival: Duration,
    pkt: Vec<u8>,
}

/// A packet past the bottleneck, waiting for its delivery time.
#[derive(Debug)]
struct InFlight {
    at: Duration,
    /// Tie-break: equal delivery times keep their order.
    seq: u64,
    pkt: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Where the bottleneck stands. Copyable, so the head's service can be planned without committing it
/// (a cut may drop the head before it finishes).
#[derive(Debug, Clone, Copy)]
struct Server {
    /// When the last packet finished service.
    free_at: Duration,
    /// Trace only: the first opportunity not yet used up, and the bytes it has left.
    next_opp: u64,
    credit: u32,
}

impl Server {
    /// Serve a packet of `len` bytes that can start at `eligible`: its departure time and the server after.
    fn plan(&self, cap: &Capacity, eligible: Duration, len: usize) -> (Duration, Server) {
        match cap {
            Capacity::Unlimited => (
                eligible,
                Server {
                    free_at: eligible,
                    ..*self
                },
            ),
            Capacity::Rate(bps) => {
                let bits = len as u128 * 8 * 1_000_000_000;
                let ns = bits.div_ceil(u128::from(*bps).max(1));
                let done = eligible + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX));
                (
                    done,
                    Server {
                        free_at: done,
                        ..*self
                    },
                )
            }
            Capacity::Trace(trace) => {
                // The unused part of an opportunity is lost once its time has passed with nobody
                // waiting (as in Mahimahi), so a packet eligible after it starts on a fresh one.
                let (mut k, mut credit) = if trace.opportunity(self.next_opp) >= eligible {
                    (self.next_opp, self.credit)
                } else {
                    (trace.first_at_or_after(eligible), OPPORTUNITY_BYTES)
                };
                let mut remaining = u32::try_from(len).unwrap_or(u32::MAX).max(1);
                loop {
                    let take = credit.min(remaining);
                    credit -= take;
                    remaining -= take;
                    if remaining == 0 {
                        break;
                    }
                    k += 1;
                    credit = OPPORTUNITY_BYTES;
                }
                let done = trace.opportunity(k);
                let (next_opp, credit) = if credit == 0 {
                    (k + 1, OPPORTUNITY_BYTES)
                } else {
                    (k, credit)
                };
                (
                    done,
                    Server {
                        free_at: done,
                        next_opp,
                        credit,
                    },
                )
            }
        }
    }
}

/// The planned service of the packet at the head of the queue.
#[derive(Debug, Clone, Copy)]
struct Head {
    start: Duration,
    done: Duration,
    after: Server,
}

/// Everything that configures one direction.
#[derive(Debug, Clone)]
pub struct DirConfig {
    pub delay: Duration,
    pub jitter: Duration,
    pub reorder: bool,
    pub loss: f64,
    pub ge: Option<GilbertElliott>,
    pub capacity: Capacity,
    /// Drop-tail limit in bytes (a packet is always accepted into an empty queue).
    pub queue_bytes: u64,
    pub cut: Option<Cut>,
    pub seed: u64,
}

impl DirConfig {
    /// From the parsed spec; `trace` must be given (loaded) when the spec names one.
    pub fn new(spec: &DirSpec, trace: Option<Trace>, cut: Option<Cut>, seed: u64) -> DirConfig {
        let capacity = match (trace, &spec.capacity) {
            (Some(t), _) => Capacity::Trace(Arc::new(t)),
            (None, crate::spec::CapacitySpec::Rate(bps)) => Capacity::Rate(*bps),
            (None, _) => Capacity::Unlimited,
        };
        let queue_bytes = match spec.queue {
            QueueLimit::Bytes(b) => b,
            QueueLimit::Time(t) => match capacity.mean_bps() {
                Some(bps) => (bps / 8.0 * t.as_secs_f64()).round() as u64,
                None => u64::MAX,
            },
        };
        DirConfig {
            delay: spec.delay,
            jitter: spec.jitter,
            reorder: spec.reorder,
            loss: spec.loss,
            ge: spec.ge,
            capacity,
            queue_bytes,
            cut,
            seed,
        }
    }
}

/// One direction of the link. See the module documentation for the model.
#[derive(Debug)]
pub struct Link {
    cfg: DirConfig,
    queue: VecDeque<Queued>,
    queued_bytes: u64,
    server: Server,
    head: Option<Head>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    /// Latest delivery time handed out, to keep delivery in order under jitter.
    last_delivery: Duration,
    ge_bad: bool,
    /// Separate streams so that enabling jitter does not change which packets are lost.
    rng_loss: Rng,
    rng_jitter: Rng,
    /// In-order jitter: the knot index and the offsets (s) at it and at the next knot.
    jitter_knots: Option<(u64, f64, f64)>,
    /// Latest `now` seen: time never goes backwards inside the model.
    now: Duration,
    stats: DirStats,
}

impl Link {
    pub fn new(cfg: DirConfig) -> Link {
        let seed = cfg.seed;
        Link {
            cfg,
            queue: VecDeque::new(),
            queued_bytes: 0,
            server: Server {
                free_at: Duration::ZERO,
                next_opp: 0,
                credit: OPPORTUNITY_BYTES,
            },
            head: None,
            in_flight: BinaryHeap::new(),
            seq: 0,
            last_delivery: Duration::ZERO,
            ge_bad: false,
            rng_loss: Rng::new(seed ^ 0x6c6f_7373),
            rng_jitter: Rng::new(seed ^ 0x6a69_7474),
            jitter_knots: None,
            now: Duration::ZERO,
            stats: DirStats::default(),
        }
    }

    pub fn config(&self) -> &DirConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &DirStats {
        &self.stats
    }

    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }

    /// A packet arrives. Returns why it was dropped on the spot, if it was (later drops show in stats).
    pub fn handle_packet(&mut self, now: Duration, pkt: Vec<u8>) -> Option<DropCause> {
        let now = self.advance(now);
        let len = pkt.len() as u64;
        self.stats.packets_in += 1;
        self.stats.bytes_in += len;
        self.stats.first_in.get_or_insert(now);
        let verdict = if self.cfg.cut.is_some_and(|c| c.is_down(now)) {
            Some(DropCause::LinkDown)
        } else if !self.queue.is_empty() && self.queued_bytes + len > self.cfg.queue_bytes {
            Some(DropCause::QueueFull)
        } else {
            None
        };
        match verdict {
            Some(cause) => self.stats.drops.count(cause),
            None => {
                self.queued_bytes += len;
                self.stats.max_queue_bytes = self.stats.max_queue_bytes.max(self.queued_bytes);
                self.queue.push_back(Queued { arrival: now, pkt });
                self.advance(now);
            }
        }
        verdict
    }

    /// The next packet due for delivery at `now`, if any.
    pub fn poll_transmit(&mut self, now: Duration) -> Option<Vec<u8>> {
        let now = self.advance(now);
        if self.in_flight.peek().is_none_or(|Reverse(f)| f.at > now) {
            return None;
        }
        let Reverse(f) = self.in_flight.pop()?;
        let len = f.pkt.len() as u64;
        self.stats.packets_out += 1;
        self.stats.bytes_out += len;
        self.stats.last_out = Some(f.at);
        let sec = f.at.as_secs() as usize;
        if self.stats.per_second_bytes.len() <= sec {
            self.stats.per_second_bytes.resize(sec + 1, 0);
        }
        self.stats.per_second_bytes[sec] += len;
        Some(f.pkt)
    }

    /// When a packet may next be due for delivery, if anything is pending; call `poll_transmit` then.
    ///
    /// A packet leaving the bottleneck is not itself a reason to wake up: it is processed (at its own
    /// time, so nothing changes) by the next call, and cannot be delivered before its service ends
    /// plus the smallest delay. Waking once per delivery rather than also once per departure halves
    /// the driver's context switches, which are most of its cost.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let delivery = self.in_flight.peek().map(|Reverse(f)| f.at);
        let min_delay = self.cfg.delay.saturating_sub(self.cfg.jitter);
        let service = self.head.map(|h| h.done + min_delay);
        match (delivery, service) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Run the bottleneck up to `now`: packets whose service ends by then go through loss and into
    /// propagation; a cut that started by then flushes the queue.
    fn advance(&mut self, now: Duration) -> Duration {
        let now = now.max(self.now);
        self.now = now;
        loop {
            let Some(front) = self.queue.front() else {
                self.head = None;
                break;
            };
            let head = match self.head {
                Some(h) => h,
                None => {
                    let start = match self.cfg.capacity {
                        Capacity::Unlimited => front.arrival,
                        _ => front.arrival.max(self.server.free_at),
                    };
                    let (done, after) =
                        self.server.plan(&self.cfg.capacity, start, front.pkt.len());
                    let h = Head { start, done, after };
                    self.head = Some(h);
                    h
                }
            };
            if let Some(cut) = self.cfg.cut {
                let down = cut.next_down_start(head.start);
                if down <= head.done {
                    if down > now {
                        break;
                    }
                    // The link went down while this packet was queued or in service: everything queued
                    // then is lost (later arrivals were dropped on arrival).
                    let n = self.queue.len() as u64;
                    self.stats.drops.link_down += n;
                    self.queue.clear();
                    self.queued_bytes = 0;
                    self.head = None;
                    continue;
                }
            }
            if head.done > now {
                break;
            }
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            self.head = None;
            self.server = head.after;
            self.queued_bytes -= q.pkt.len() as u64;
            self.stats.queue_delay.record(head.start - q.arrival);
            self.depart(head.done, q);
        }
        now
    }

    /// A packet leaves the bottleneck at `t`: loss, then delay and jitter.
    fn depart(&mut self, t: Duration, q: Queued) {
        if let Some(cause) = self.lose() {
            self.stats.drops.count(cause);
            return;
        }
        let mut at = t + self.cfg.delay;
        if !self.cfg.jitter.is_zero() {
            let j = if self.cfg.reorder {
                self.cfg.jitter.as_secs_f64() * (2.0 * self.rng_jitter.next_f64() - 1.0)
            } else {
                self.smooth_jitter(t)
            };
            let d = (self.cfg.delay.as_secs_f64() + j).max(0.0);
            at = t + Duration::from_secs_f64(d);
        }
        if !self.cfg.reorder {
            at = at.max(self.last_delivery);
        }
        self.last_delivery = self.last_delivery.max(at);
        self.stats.delay.record(at - q.arrival);
        self.seq += 1;
        self.in_flight.push(Reverse(InFlight {
            at,
            seq: self.seq,
            pkt: q.pkt,
        }));
    }

    /// In-order jitter, in seconds: a delay offset that moves linearly between values drawn uniformly
    /// in ±jitter, a new value every `4 × jitter` (at least 20 ms). Its slope stays within ±0.5, so
    /// `t + offset(t)` only grows and packets keep their order, however close together they are.
    /// (Drawing a delay per packet and then holding packets behind earlier ones instead would push
    /// nearly every packet of a busy link to the top of the range.)
    fn smooth_jitter(&mut self, t: Duration) -> f64 {
        let j = self.cfg.jitter.as_secs_f64();
        let period = (4.0 * j).max(0.020);
        let pos = t.as_secs_f64() / period;
        let k = pos.floor() as u64;
        let draw = |rng: &mut Rng| j * (2.0 * rng.next_f64() - 1.0);
        match self.jitter_knots {
            Some((at, _, _)) if at == k => {}
            Some((at, _, next)) if at + 1 == k => {
                self.jitter_knots = Some((k, next, draw(&mut self.rng_jitter)))
            }
            _ => {
                let a = draw(&mut self.rng_jitter);
                let b = draw(&mut self.rng_jitter);
                self.jitter_knots = Some((k, a, b));
            }
        }
        let (_, a, b) = self.jitter_knots.unwrap_or((k, 0.0, 0.0));
        a + (b - a) * (pos - k as f64)
    }

    fn lose(&mut self) -> Option<DropCause> {
        if let Some(ge) = self.cfg.ge {
            self.ge_bad = if self.ge_bad {
                !self.rng_loss.chance(ge.r)
            } else {
                self.rng_loss.chance(ge.p)
            };
            let p = if self.ge_bad {
                ge.loss_bad
            } else {
                ge.loss_good
            };
            if self.rng_loss.chance(p) {
                return Some(DropCause::LossBurst);
            }
        }
        self.rng_loss
            .chance(self.cfg.loss)
            .then_some(DropCause::LossRandom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse_cut, parse_dir_spec};

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    fn us(x: u64) -> Duration {
        Duration::from_micros(x)
    }

    fn link(spec: &str) -> Link {
        let s = parse_dir_spec(spec).expect("valid spec");
        Link::new(DirConfig::new(&s, None, None, 1))
    }

    fn trace_link(trace: Trace, spec: &str) -> Link {
        let s = parse_dir_spec(spec).expect("valid spec");
        Link::new(DirConfig::new(&s, Some(trace), None, 1))
    }

    /// Deliver everything, stepping time by `poll_timeout`; returns (time, first byte) per packet.
    fn drain(l: &mut Link) -> Vec<(Duration, u8)> {
        let mut out = Vec::new();
        while let Some(t) = l.poll_timeout() {
            while let Some(p) = l.poll_transmit(t) {
                out.push((t, p[0]));
            }
        }
        out
    }

    /// Deliver what is due up to `until`, stepping through each timeout.
    fn run_until(l: &mut Link, until: Duration) -> Vec<(Duration, u8)> {
        let mut out = Vec::new();
        while let Some(t) = l.poll_timeout().filter(|&t| t <= until) {
            while let Some(p) = l.poll_transmit(t) {
                out.push((t, p[0]));
            }
        }
        out
    }

    fn pkt(tag: u8, len: usize) -> Vec<u8> {
        vec![tag; len]
    }

    #[test]
    fn unlimited_link_is_a_fixed_delay() {
        let mut l = link("delay=10ms");
        assert_eq!(l.poll_timeout(), None);
        l.handle_packet(ms(0), pkt(1, 100));
        l.handle_packet(ms(3), pkt(2, 100));
        assert_eq!(l.poll_transmit(ms(9)), None);
        assert_eq!(l.poll_timeout(), Some(ms(10)));
        assert_eq!(drain(&mut l), vec![(ms(10), 1), (ms(13), 2)]);
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn rate_serialises_back_to_back() {
        // 1250 B at 10 Mbit/s = 1 ms each.
        let mut l = link("delay=10ms,rate=10mbit,queue=1mb");
        for i in 0..5 {
            l.handle_packet(ms(0), pkt(i, 1250));
        }
        let got = drain(&mut l);
        let want: Vec<_> = (0..5).map(|i| (ms(11 + u64::from(i)), i)).collect();
        assert_eq!(got, want);
        let s = l.stats();
        assert_eq!(s.queue_delay.quantile_ms(1.0), Some(4.0));
        assert_eq!((s.packets_out, s.bytes_out), (5, 6250));
    }

    #[test]
    fn idle_time_is_not_credited() {
        let mut l = link("rate=10mbit");
        l.handle_packet(ms(0), pkt(1, 1250));
        assert_eq!(drain(&mut l), vec![(ms(1), 1)]);
        l.handle_packet(ms(50), pkt(2, 1250));
        assert_eq!(drain(&mut l), vec![(ms(51), 2)]);
    }

    #[test]
    fn drop_tail_in_bytes_and_time() {
        let mut l = link("rate=8mbit,queue=5000b");
        let drops: Vec<_> = (0..10)
            .map(|i| l.handle_packet(ms(0), pkt(i, 1000)))
            .collect();
        assert_eq!(drops.iter().filter(|d| d.is_none()).count(), 5);
        assert_eq!(l.stats().drops.queue_full, 5);
        assert_eq!(l.stats().max_queue_bytes, 5000);
        // 5 ms at 8 Mbit/s is the same 5000 bytes.
        let mut l = link("rate=8mbit,queue=5ms");
        for i in 0..10 {
            l.handle_packet(ms(0), pkt(i, 1000));
        }
        assert_eq!(l.stats().drops.queue_full, 5);
        // Room frees as packets leave: at 2 ms two have gone.
        assert_eq!(l.handle_packet(ms(2), pkt(20, 1000)), None);
        assert_eq!(l.handle_packet(ms(2), pkt(21, 1000)), None);
        assert_eq!(
            l.handle_packet(ms(2), pkt(22, 1000)),
            Some(DropCause::QueueFull)
        );
    }

    #[test]
    fn oversized_packet_into_empty_queue_passes() {
        let mut l = link("rate=8mbit,queue=100b");
        assert_eq!(l.handle_packet(ms(0), pkt(1, 1500)), None);
    }

    #[test]
    fn saturated_rate_link_delivers_its_rate() {
        // Offer 40 Mbit/s to a 20 Mbit/s link for 10 s, 1500-byte packets every 300 µs.
        let mut l = link("delay=20ms,rate=20mbit,queue=200ms");
        let mut t = Duration::ZERO;
        while t < Duration::from_secs(10) {
            l.handle_packet(t, pkt(0, 1500));
            while l.poll_transmit(t).is_some() {}
            t += us(300);
        }
        drain(&mut l);
        let s = l.stats();
        let rate = s.achieved_bps().expect("delivered");
        assert!((rate / 20e6 - 1.0).abs() < 0.01, "rate {rate}");
        // The standing queue is the 200 ms limit, give or take a packet.
        let p50 = s.queue_delay.quantile_ms(0.5).expect("samples");
        assert!((p50 - 200.0).abs() < 4.0, "p50 {p50}");
        assert!(s.drops.queue_full > 0);
        assert_eq!(s.packets_in, s.packets_out + s.drops.total());
    }

    #[test]
    fn trace_opportunities_carry_1500_bytes() {
        // One opportunity per ms.
        let mut l = trace_link(Trace::constant(1), "queue=1mb");
        for i in 0..3 {
            l.handle_packet(us(100), pkt(i, 1500));
        }
        // Three small packets share one opportunity.
        for i in 10..13 {
            l.handle_packet(us(100), pkt(i, 500));
        }
        let got = drain(&mut l);
        let times: Vec<_> = got.iter().map(|&(t, _)| t.as_millis()).collect();
        assert_eq!(times, vec![1, 2, 3, 4, 4, 4]);
        // An opportunity nobody used is gone: a packet at 10.5 ms waits for 11 ms.
        l.handle_packet(us(10_500), pkt(20, 100));
        assert_eq!(drain(&mut l), vec![(ms(11), 20)]);
    }

    #[test]
    fn trace_leftover_credit_serves_waiting_packets_only() {
        let mut l = trace_link(Trace::constant(1), "queue=1mb");
        l.handle_packet(us(100), pkt(1, 1000));
        assert_eq!(drain(&mut l), vec![(ms(1), 1)]);
        // 500 B are left at the 1 ms opportunity but this packet arrives later: next one.
        l.handle_packet(us(1_200), pkt(2, 400));
        assert_eq!(drain(&mut l), vec![(ms(2), 2)]);
        // A big packet spans opportunities: 2 ms has 1100 left, so 3000 B need 2, 3 and 4 ms.
        l.handle_packet(us(2_000), pkt(3, 3000));
        assert_eq!(drain(&mut l), vec![(ms(4), 3)]);
    }

    #[test]
    fn trace_replay_loops_at_mean_rate() {
        let text: String = (1..=100).map(|i| format!("{}\n", i * 2)).collect(); // 1 opp / 2 ms = 6 Mbit/s
        let trace = Trace::parse(&text).expect("valid trace");
        let mut l = trace_link(trace, "queue=100kb");
        let mut t = Duration::ZERO;
        while t < Duration::from_secs(2) {
            l.handle_packet(t, pkt(0, 1500));
            while l.poll_transmit(t).is_some() {}
            t += us(1000);
        }
        drain(&mut l);
        let rate = l.stats().achieved_bps().expect("delivered");
        assert!((rate / 6e6 - 1.0).abs() < 0.02, "rate {rate}");
    }

    #[test]
    fn random_loss_is_seeded_and_near_its_rate() {
        let run = |seed| {
            let s = parse_dir_spec("loss=1%").expect("valid spec");
            let mut l = Link::new(DirConfig::new(&s, None, None, seed));
            let mut lost = Vec::new();
            for i in 0..100_000u64 {
                l.handle_packet(us(i), pkt(0, 100));
                if l.poll_transmit(us(i)).is_none() {
                    lost.push(i);
                }
            }
            lost
        };
        let a = run(5);
        assert_eq!(a, run(5));
        assert_ne!(a, run(6));
        let rate = a.len() as f64 / 100_000.0;
        assert!((rate - 0.01).abs() < 0.001, "{rate}");
    }

    #[test]
    fn gilbert_elliott_loss_comes_in_bursts() {
        // p = 1%, r = 25%: mean loss 1/26 ≈ 3.8%, mean burst 4 packets.
        let mut l = link("ge=1%/25%");
        let mut lost = Vec::new();
        for i in 0..200_000u64 {
            l.handle_packet(us(i), pkt(0, 100));
            lost.push(l.poll_transmit(us(i)).is_none());
        }
        let n = lost.iter().filter(|&&x| x).count() as f64;
        let bursts = lost.windows(2).filter(|w| w[1] && !w[0]).count() as f64;
        assert!(
            (n / 200_000.0 - 1.0 / 26.0).abs() < 0.004,
            "loss {}",
            n / 200_000.0
        );
        assert!((n / bursts - 4.0).abs() < 0.4, "burst {}", n / bursts);
        assert_eq!(l.stats().drops.loss_burst as f64, n);
    }

    #[test]
    fn jitter_keeps_order_unless_asked() {
        for reorder in [false, true] {
            let spec = format!("delay=50ms,jitter=20ms,reorder={}", u8::from(reorder));
            let mut l = link(&spec);
            let mut out = Vec::new();
            for i in 0..2000u64 {
                l.handle_packet(ms(i), (i as u32).to_be_bytes().to_vec());
                while let Some(p) = l.poll_transmit(ms(i)) {
                    out.push(u32::from_be_bytes([p[0], p[1], p[2], p[3]]));
                }
            }
            while let Some(t) = l.poll_timeout() {
                while let Some(p) = l.poll_transmit(t) {
                    out.push(u32::from_be_bytes([p[0], p[1], p[2], p[3]]));
                }
            }
            assert_eq!(out.len(), 2000);
            let in_order = out.windows(2).all(|w| w[0] < w[1]);
            assert_eq!(in_order, !reorder, "reorder={reorder}");
            let s = l.stats();
            let (lo, hi) = (s.delay.quantile_ms(0.0), s.delay.quantile_ms(1.0));
            let (lo, hi) = (lo.expect("samples"), hi.expect("samples"));
            assert!((29.0..38.0).contains(&lo), "min {lo}");
            assert!((62.0..71.0).contains(&hi), "max {hi}");
            let mean = s.delay.mean_ms().expect("samples");
            assert!((mean - 50.0).abs() < 5.0, "mean {mean}");
        }
    }

    #[test]
    fn cut_drops_arrivals_and_flushes_the_queue() {
        let s = parse_dir_spec("delay=5ms,rate=8mbit,queue=1mb").expect("valid spec");
        let cut = parse_cut("100ms/20ms").expect("valid cut"); // down 80..100 ms, 180..200 ms
        let mut l = Link::new(DirConfig::new(&s, None, Some(cut), 1));
        // 1000 B = 1 ms each; 30 packets at 60 ms: 19 are through before 80 ms (the 20th would finish
        // at the very instant the link goes down), 11 are flushed.
        for i in 0..30 {
            l.handle_packet(ms(60), pkt(i, 1000));
        }
        let got = run_until(&mut l, ms(85));
        assert_eq!(got.len(), 19);
        assert_eq!(got[18], (ms(84), 18));
        // Arrivals while down are dropped.
        assert_eq!(
            l.handle_packet(ms(85), pkt(100, 1000)),
            Some(DropCause::LinkDown)
        );
        // After the cut, a packet goes straight through.
        assert_eq!(l.handle_packet(ms(100), pkt(101, 1000)), None);
        assert_eq!(drain(&mut l), vec![(ms(106), 101)]);
        assert_eq!(l.stats().drops.link_down, 12);
    }

    #[test]
    fn stats_account_for_every_packet() {
        let s = parse_dir_spec("delay=5ms,loss=2%,ge=1%/30%,rate=5mbit,queue=20kb").expect("valid");
        let cut = parse_cut("1s/200ms").expect("valid cut");
        let mut l = Link::new(DirConfig::new(&s, None, Some(cut), 9));
        let mut t = Duration::ZERO;
        while t < Duration::from_secs(5) {
            l.handle_packet(t, pkt(0, 1200));
            while l.poll_transmit(t).is_some() {}
            t += us(1000);
        }
        drain(&mut l);
        let st = l.stats();
        assert_eq!(st.packets_in, st.packets_out + st.drops.total());
        assert!(st.drops.loss_random > 0 && st.drops.loss_burst > 0);
        assert!(st.drops.queue_full > 0 && st.drops.link_down > 0);
        assert_eq!(st.per_second_bytes.iter().sum::<u64>(), st.bytes_out);
    }
}
