//! A log-linear histogram of durations in microseconds: exact below 128 µs, then 64 buckets per power of
//! two (under 1.6% error), fixed size, no allocation per sample. Enough for queue-delay percentiles.

use std::time::Duration;

const LINEAR: u64 = 128;
const SUB: u64 = 64;
/// Values are clamped to 2^41 µs (25 days); the table then has 128 + 34 * 64 buckets.
const MAX_EXP: u32 = 41;
const BUCKETS: usize = (LINEAR + (MAX_EXP as u64 - 7) * SUB) as usize;

#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    max_us: u64,
    sum_us: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            max_us: 0,
            sum_us: 0,
        }
    }
}

fn index(us: u64) -> usize {
    let v = us.min((1u64 << MAX_EXP) - 1);
    if v < LINEAR {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros(); // >= 7
    let shift = msb - 6;
    (LINEAR + u64::from(msb - 7) * SUB + ((v >> shift) - SUB)) as usize
}

/// Middle of bucket `i`, in µs.
fn value(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let msb = 7 + (i - LINEAR) / SUB;
    let shift = msb - 6;
    let low = ((i - LINEAR) % SUB + SUB) << shift;
    low + (1u64 << shift) / 2
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[index(us)] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(us);
        self.sum_us += u128::from(us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The q-quantile (0..=1) in milliseconds; `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        if rank >= self.count {
            return self.max_ms();
        }
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(value(i).min(self.max_us) as f64 / 1000.0);
            }
        }
        Some(self.max_us as f64 / 1000.0)
    }

    pub fn max_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.max_us as f64 / 1000.0)
    }

    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_us as f64 / self.count as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_monotonic() {
        let mut last = 0;
        for us in 0..100_000u64 {
            let i = index(us);
            assert!(i == last || i == last + 1, "gap at {us}");
            last = i;
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn bucket_error_is_small() {
        for us in [0u64, 5, 127, 128, 129, 1000, 12_345, 200_000, 9_999_999] {
            let v = value(index(us));
            let err = (v as f64 - us as f64).abs() / (us.max(1) as f64);
            assert!(err <= 0.016, "{us} -> {v}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile_ms(0.5).unwrap_or_default();
        let p99 = h.quantile_ms(0.99).unwrap_or_default();
        assert!((p50 - 50.0).abs() < 1.0, "{p50}");
        assert!((p99 - 99.0).abs() < 1.6, "{p99}");
        assert_eq!(h.max_ms(), Some(100.0));
        assert_eq!(Histogram::default().quantile_ms(0.5), None);
    }
}
