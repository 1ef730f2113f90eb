//! What the emulator did, as JSON (for scripts) and as a short text summary (for people).

use serde::Serialize;

use crate::hist::Histogram;
use crate::link::{DirStats, Link};

#[derive(Debug, Serialize)]
pub struct Report {
    pub label: String,
    pub seed: u64,
    pub cut: Option<String>,
    /// Seconds since the emulator (or its last reset) started: the clock of traces and cuts.
    pub elapsed_s: f64,
    /// False for the periodic snapshots, true for the one written on exit.
    pub final_report: bool,
    pub up: DirReport,
    pub down: DirReport,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

impl From<&Histogram> for Percentiles {
    fn from(h: &Histogram) -> Self {
        Percentiles {
            p50: h.quantile_ms(0.5),
            p90: h.quantile_ms(0.9),
            p99: h.quantile_ms(0.99),
            max: h.max_ms(),
            mean: h.mean_ms(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DropReport {
    pub loss_random: u64,
    pub loss_burst: u64,
    pub queue_full: u64,
    pub link_down: u64,
    /// Packets the kernel refused on the way out (interface down, buffer full).
    pub write_error: u64,
    pub total: u64,
}

#[derive(Debug, Serialize)]
pub struct DirReport {
    pub spec: String,
    /// Configured capacity (a trace's mean), `None` when unlimited.
    pub capacity_mbit: Option<f64>,
    pub queue_limit_bytes: Option<u64>,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub drops: DropReport,
    /// Random and burst losses over the packets that crossed the bottleneck.
    pub loss_rate: f64,
    pub queue_delay_ms: Percentiles,
    pub delay_ms: Percentiles,
    pub max_queue_bytes: u64,
    /// Delivered rate between the first arrival and the last delivery.
    pub achieved_mbit: Option<f64>,
    /// The busiest whole second (the last, partial one excluded unless it is the only one).
    pub peak_1s_mbit: Option<f64>,
    pub per_second_mbit: Vec<f64>,
}

impl DirReport {
    pub fn new(spec: &str, link: &Link, write_errors: u64) -> DirReport {
        let s: &DirStats = link.stats();
        let cfg = link.config();
        let lost = s.drops.loss_random + s.drops.loss_burst;
        let crossed = s.packets_out + lost;
        DirReport {
            spec: spec.to_string(),
            capacity_mbit: cfg.capacity.mean_bps().map(|b| b / 1e6),
            queue_limit_bytes: (cfg.queue_bytes != u64::MAX).then_some(cfg.queue_bytes),
            packets_in: s.packets_in,
            bytes_in: s.bytes_in,
            packets_out: s.packets_out,
            bytes_out: s.bytes_out,
            drops: DropReport {
                loss_random: s.drops.loss_random,
                loss_burst: s.drops.loss_burst,
                queue_full: s.drops.queue_full,
                link_down: s.drops.link_down,
                write_error: write_errors,
                total: s.drops.total() + write_errors,
            },
            loss_rate: if crossed == 0 {
                0.0
            } else {
                lost as f64 / crossed as f64
            },
            queue_delay_ms: (&s.queue_delay).into(),
            delay_ms: (&s.delay).into(),
            max_queue_bytes: s.max_queue_bytes,
            achieved_mbit: s.achieved_bps().map(|b| b / 1e6),
            peak_1s_mbit: {
                let n = s.per_second_bytes.len();
                let whole = &s.per_second_bytes[..n.saturating_sub(1).max(n.min(1))];
                whole.iter().max().map(|&b| b as f64 * 8.0 / 1e6)
            },
            per_second_mbit: s
                .per_second_bytes
                .iter()
                .map(|&b| b as f64 * 8.0 / 1e6)
                .collect(),
        }
    }

    fn summary(&self, name: &str) -> String {
        let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
        let d = &self.drops;
        format!(
            "{name:>4}: {} pkts / {} B in, {} pkts / {} B out; drops: loss {} + burst {} ({:.2}%), \
             queue {}, down {}, write {}; queue delay p50 {} p99 {} max {} ms; delay p50 {} p99 {} ms; \
             achieved {} (peak 1 s {}) Mbit/s of {}",
            self.packets_in,
            self.bytes_in,
            self.packets_out,
            self.bytes_out,
            d.loss_random,
            d.loss_burst,
            self.loss_rate * 100.0,
            d.queue_full,
            d.link_down,
            d.write_error,
            f(self.queue_delay_ms.p50),
            f(self.queue_delay_ms.p99),
            f(self.queue_delay_ms.max),
            f(self.delay_ms.p50),
            f(self.delay_ms.p99),
            f(self.achieved_mbit),
            f(self.peak_1s_mbit),
            self.capacity_mbit
                .map_or("unlimited".to_string(), |c| format!("{c:.2}")),
        )
    }
}

impl Report {
    pub fn summary(&self) -> String {
        format!(
            "linkem {} (seed {}, {:.1} s)\n{}\n{}\n",
            self.label,
            self.seed,
            self.elapsed_s,
            self.up.summary("up"),
            self.down.summary("down")
        )
    }
}
