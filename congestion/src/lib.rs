//! Congestion control for quicft's QUIC connections (quinn 0.11), built for the weak, lossy cellular
//! uplinks that IoT devices upload over (../shared/DESIGN.md §6).
//!
//! [`DelayBbr`] is a delay-aware, loss-tolerant controller written against quinn's
//! [`Controller`](quinn::congestion::Controller) trait; [`DelayBbrConfig`] is its factory. Select it
//! with `congestion = "delay"` in the server's `[quic]` section, or `Congestion::Delay` in the SDK.
//!
//! # Why another controller
//!
//! Measured on a 20 Mbit/s, 40 ms RTT uplink with a 200 ms drop-tail queue (DESIGN §6): quinn's
//! default Cubic reads every random radio loss as congestion and falls to a fifth of the link at 1%
//! loss; quinn's BBR keeps the goodput but parks 40–130 ms of file data in the bottleneck queue, in
//! front of every telemetry message on the same connection. Stream priorities cannot help a message
//! that is already stuck behind a full network queue, so the controller is part of the priority
//! story: it must fill the link *and* keep the queue short, whatever the background loss.
//!
//! # The algorithm
//!
//! quinn lets a controller set only the window: it paces by itself at `1.25 × window / srtt`. So
//! `DelayBbr` steers the amount in flight, and the standing queue it creates is what the window holds
//! beyond the bandwidth-delay product (BDP).
//!
//! - **Bandwidth** `bw`: the windowed maximum (10 round trips) of delivery rates. In startup the
//!   samples are per acknowledged packet, as in draft-cheng-iccrg-delivery-rate-estimation (bytes
//!   delivered between the packet's send and its ACK over the longer of the send and ACK intervals,
//!   shorter than the min RTT discarded), so the estimate keeps up with a window that doubles
//!   within the round. After startup a sample is the average over the last two whole rounds (bytes
//!   acknowledged between the ACKs that open and close them, joined further until they span 2 ms),
//!   one sample per round: a round begins and ends on an ACK, so ACKs that arrive in bursts
//!   (cellular grants, Wi-Fi, a busy host) cannot shorten it, while a per-packet interval that ends
//!   just after a burst overshoots by the burst; and two rounds halve the timing noise that a
//!   maximum would otherwise collect as overestimate. A cruise round whose queue stayed below the
//!   gain's own (the link had room) is also a sample by itself: a span's older half lags a
//!   capacity that came back. Samples taken while the application had
//!   nothing to send only count if they raise the estimate, and application-limited rounds do not
//!   age the filter: telemetry-only periods keep the upload's bandwidth for the next upload.
//! - **Min RTT** `min_rtt`: the smallest RTT sample (ACK time − send time of each packet). It is
//!   re-measured when it has not been seen again for 10 s, or 100 min RTTs on a longer path (the
//!   standing queue hides it during a long upload), by a short *ProbeRtt*: the window drops to
//!   `0.5 × BDP` until that much is in flight, then one round trip of samples from an empty queue
//!   becomes the new min RTT — higher or lower, so a route change is followed. It costs about one
//!   round trip at half rate each time (~1% at 40 ms every 10 s; a fixed 10 s would cost 5–7% at
//!   600 ms, hence the RTT multiple). If a
//!   queue beyond the lower tier (below) stands when the timer runs out, the probe counts as a queue
//!   back-off: its drain rate becomes the estimate.
//! - **Window** in steady state (*Cruise*): `1.25 × bw × min_rtt`, plus an allowance for ACK
//!   aggregation (BBR's `extra_acked`: how far a burst of ACKs ran ahead of `bw`, windowed max over
//!   10 rounds, at most `min_rtt` of `bw` but within 50–100 ms, not measured in startup and drain
//!   where `bw` lags on purpose, kept through back-offs: it describes the ACK path, not the
//!   estimate), so that bursty ACKs do not leave the link idle. With quinn's pacing this keeps the link full (the
//!   delivery rate grows by up to 1.25× per round while the link is not full, which is also how an
//!   increase in capacity is found) and the standing queue near `0.25 × BDP` (10 ms on the link
//!   above). A larger gain buys nothing but queue; a smaller one loses the probing and the margin
//!   for ACK delay. The min RTT the window is sized from is at least 2 ms: below that (loopback, a
//!   LAN) the "path" is host scheduling and ACK batching, which the window must cover although no
//!   min-RTT sample shows it.
//! - **Random loss is not congestion.** Loss does not change the window. It counts as congestion only
//!   when it comes with a signal random loss does not have: (a) the queue delay is already above what
//!   the gain explains (loss with RTT inflation: a buffer overflowing) — in cruise, above the fast
//!   tier below, in the last whole round as well as the last 8 ACKs: ACKs that a busy host delivers
//!   late and together inflate only the last few samples, and a random loss detected among them
//!   used to start a back-off on every stall (bench/CC.md) —, (b) the loss rate is far above
//!   any plausible background (> 10% in two rounds in a row: a shallow buffer or policer dropping
//!   our excess), (c) an ECN congestion mark, or (d) quinn's persistent congestion (everything lost
//!   for 3 PTOs: an outage), which restarts from the minimum window like RFC 9002 asks.
//! - **Queue build-up** (the delay signal): each round's smallest RTT sample minus `min_rtt` is the
//!   queue the round saw. Beyond `(gain − 1) × min_rtt` (our own standing queue), more than
//!   `max(0.25 × min_rtt, 5 ms)` (the *lower tier*) means the bandwidth estimate is stale (the link
//!   got slower), the path got longer, or someone else fills the queue (rounds that began before
//!   cruise, with startup's or a probe's queue still draining, do not count). Cellular capacity
//!   swings by 2–4× within a few hundred milliseconds, and the queue of a dip that passes drains by
//!   itself, so the response is graded:
//!   - *Follow the link down*: after 2 rounds in a row above the lower tier the bottleneck never
//!     idled, so the delivery rate over those rounds is its capacity; an estimate above it drops to
//!     it at once (the window shrinks and the queue drains within a round) instead of being held by
//!     the 10-round maximum for 2–3 s of queue-inflated rounds. If the queue still stands 2 rounds
//!     later, the estimate follows again (a link still getting slower). A longer path looks the
//!     same, but then the rate only followed the window down; the slow tier's ProbeRtt below
//!     tells it from a queue and gives it back the estimate from before the first step.
//!   - *Back off* with a ProbeRtt when the queue beyond the gain's stays above `max(2 × min_rtt,
//!     5 ms)` for 2 rounds (a sudden fall below ~0.4 × the capacity), or above the lower tier for
//!     16 rounds (a longer path, someone else's queue).
//!
//!   Backing off on every dip (a single 0.25 × min_rtt tier) cost a sixth of the link on the
//!   Verizon LTE trace (bench/CC.md). The back-off is a ProbeRtt that drains the queue and tells a
//!   queue from a longer path. While in-flight falls to the probe
//!   window nothing new is sent, so the ACKs arrive at exactly the bottleneck's rate: that *drain
//!   rate* is the link's current capacity, and the probe window is sized from it. If the
//!   empty-queue RTT is back at `min_rtt`, the queue was real and the bandwidth estimate becomes
//!   the drain rate. If the RTT stays up, the window is halved (up to 3 times) to make sure no
//!   queue is left; an RTT that stays up even then is a longer path: the new `min_rtt` is kept and
//!   the bandwidth estimate left alone. Rounds that end in ProbeRtt are treated like
//!   application-limited ones: they neither age the bandwidth filter nor lower it. A delay-based controller cannot tell queueing from
//!   propagation delay without draining; this is the cheapest drain that can.
//! - **Startup**: the window grows by the bytes acknowledged (doubling per round, capped at
//!   `2.89 × BDP`) until the bandwidth estimate stops growing by 25% for 3 rounds, a queue above
//!   `max(0.125 × min_rtt, 5 ms)` stands in the last 4 RTT samples through 1/8 min RTT of ACK
//!   arrivals (checked on every ACK, so it fires within the round the queue appears, not a round
//!   later; ACKs that arrive together, whose RTTs the burst inflated, span no time and do not end
//!   it), a whole round saw more than `max(0.25 × min_rtt, 5 ms)`, or the loss rate is far above
//!   background. Doubling per round, the sender has put about one more BDP in flight by the time a
//!   queue shows in the RTTs, so startup's queue still peaks near 1 BDP plus twice the threshold
//!   (43 ms on the 20 Mbit/s, 40 ms link).
//!   *Drain* then holds the window at `1 × BDP` until the queue startup built is gone, and *Cruise*
//!   begins.
//! - **Minimum window**: 4 datagrams, so a connection never stalls on ACK delay.
//!
//! Limits, on purpose: against a loss-based flow that fills the bottleneck buffer (Cubic in the
//! same queue) a delay-aware controller yields bandwidth, as BBRv2/v3 also do; for an IoT device's
//! own uplink that is the right trade. A path that gets *shorter* while an upload keeps the queue
//! standing may be noticed only at the next 10 s probe (until then the queue is the gain's plus the
//! difference). A buffer much smaller than `0.25 × BDP` overflows at the gain's standing queue; the
//! loss-rate rule then backs off every few rounds, so utilisation drops (about 70% with a 5 ms
//! buffer at 20 Mbit/s and 3% loss in the simulator). The controller is sans-IO like quinn-proto:
//! it never reads a clock or a socket, every input carries `now`.

mod delay_bbr;
mod filter;
#[cfg(test)]
mod sim;

pub use delay_bbr::{DelayBbr, DelayBbrConfig, Mode};
#[cfg(test)]
mod tests;
