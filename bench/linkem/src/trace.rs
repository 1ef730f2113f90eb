//! Mahimahi capacity traces.
//!
//! Format (as in Mahimahi's `mm-link`): one line per delivery opportunity, the line being a timestamp in
//! milliseconds since the start of the trace; each opportunity lets 1500 bytes cross the link; a repeated
//! timestamp means several opportunities in that millisecond. The trace loops with a period equal to its
//! last timestamp.

use std::path::Path;
use std::time::Duration;

use crate::Error;

/// Bytes that one delivery opportunity carries (Mahimahi's `PACKET_SIZE`).
pub const OPPORTUNITY_BYTES: u32 = 1500;

#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Opportunity times within one period, non-decreasing, in ms.
    ms: Vec<u64>,
    /// The last timestamp: the trace restarts at this offset.
    period_ms: u64,
}

impl Trace {
    pub fn load(path: &Path) -> Result<Trace, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            what: format!("reading trace {}", path.display()),
            source: e,
        })?;
        Trace::parse(&text).map_err(|e| match e {
            Error::Spec(msg) => Error::Spec(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Trace, Error> {
        let mut ms = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let t: u64 = line.parse().map_err(|_| {
                Error::Spec(format!("trace line {}: not a timestamp: {line:?}", n + 1))
            })?;
            if ms.last().is_some_and(|&last| t < last) {
                return Err(Error::Spec(format!(
                    "trace line {}: timestamps go backwards",
                    n + 1
                )));
            }
            ms.push(t);
        }
        let period_ms = *ms.last().ok_or_else(|| Error::Spec("empty trace".into()))?;
        if period_ms == 0 {
            return Err(Error::Spec("trace must end at a timestamp > 0".into()));
        }
        Ok(Trace { ms, period_ms })
    }

    /// A constant-rate trace, for tests: `per_ms` opportunities every millisecond.
    pub fn constant(per_ms: usize) -> Trace {
        Trace {
            ms: vec![1; per_ms.max(1)],
            period_ms: 1,
        }
    }

    fn n(&self) -> u64 {
        self.ms.len() as u64
    }

    /// Time (since the emulator's start) of opportunity number `k`, counting across periods.
    pub fn opportunity(&self, k: u64) -> Duration {
        let cycle = k / self.n();
        let i = (k % self.n()) as usize;
        Duration::from_millis(cycle * self.period_ms + self.ms[i])
    }

    /// Number of the first opportunity at or after `t`.
    pub fn first_at_or_after(&self, t: Duration) -> u64 {
        let period_ns = u128::from(self.period_ms) * 1_000_000;
        let t_ns = t.as_nanos();
        let cycle = t_ns / period_ns;
        let within = Duration::from_nanos((t_ns - cycle * period_ns) as u64);
        let cycle = cycle as u64;
        if within.is_zero() && cycle > 0 {
            // The previous cycle's last opportunities sit exactly at its end, which is `t`.
            let j = self.ms.partition_point(|&m| m < self.period_ms) as u64;
            return (cycle - 1) * self.n() + j;
        }
        let i = self
            .ms
            .partition_point(|&m| Duration::from_millis(m) < within) as u64;
        cycle * self.n() + i
    }

    /// Mean capacity over one period, in bit/s.
    pub fn mean_rate_bps(&self) -> f64 {
        self.n() as f64 * f64::from(OPPORTUNITY_BYTES) * 8.0 / (self.period_ms as f64 / 1000.0)
    }

    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_loops() {
        let t = Trace::parse("1\n1\n3\n\n4\n").expect("valid trace");
        assert_eq!(t.period(), Duration::from_millis(4));
        let ms = |k| t.opportunity(k).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4), ms(5), ms(6)],
            [1, 1, 3, 4, 5, 5, 7]
        );
        assert_eq!(t.first_at_or_after(Duration::ZERO), 0);
        assert_eq!(t.first_at_or_after(Duration::from_millis(1)), 0);
        assert_eq!(t.first_at_or_after(Duration::from_micros(1001)), 2);
        assert_eq!(t.first_at_or_after(Duration::from_millis(4)), 3);
        assert_eq!(t.first_at_or_after(Duration::from_micros(4001)), 4);
        assert_eq!(t.first_at_or_after(Duration::from_millis(6)), 6);
        // 4 opportunities of 1500 B every 4 ms = 12 Mbit/s.
        assert!((t.mean_rate_bps() - 12e6).abs() < 1.0);
    }

    #[test]
    fn rejects_bad_traces() {
        assert!(Trace::parse("").is_err());
        assert!(Trace::parse("0\n0\n").is_err());
        assert!(Trace::parse("5\n3\n").is_err());
        assert!(Trace::parse("5\nx\n").is_err());
    }

    #[test]
    fn shared_traces_parse_with_documented_rates() {
        // The kit's traces, when the shared folder is beside the repository (as on our machines and CI).
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces");
        let Ok(t) = Trace::load(&dir.join("Verizon-LTE-short.up")) else {
            return;
        };
        let mbit = t.mean_rate_bps() / 1e6;
        assert!((mbit - 5.9).abs() < 0.1, "{mbit}");
        assert_eq!(t.period(), Duration::from_secs(140));
    }
}
