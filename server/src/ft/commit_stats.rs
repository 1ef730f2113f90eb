//! What the group committer (`commit.rs`) has made durable and how long its fdatasyncs took:
//! process-wide counters, because the committer runs on its own threads with no handle to a
//! server. `crate::metrics` reads them when scraped (the arrow goes one way: ft knows nothing of
//! the metrics module).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the commit latency histogram: fdatasync costs from ~50 µs (tmpfs,
/// NVMe with a write cache) to hundreds of ms (spinning disks, network storage).
pub const FSYNC_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

struct Counters {
    segments: AtomicU64,
    commit_errors: AtomicU64,
    /// Non-cumulative counts per bucket; the last slot is +Inf.
    buckets: [AtomicU64; FSYNC_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

static COUNTERS: Counters = Counters {
    segments: ZERO,
    commit_errors: ZERO,
    buckets: [ZERO; FSYNC_BUCKETS.len() + 1],
    sum_nanos: ZERO,
};

/// The counters as read at one moment.
#[derive(Debug, Clone)]
pub struct CommitStats {
    /// File segments made durable.
    pub segments: u64,
    /// Commit groups whose fdatasync or journal append failed.
    pub commit_errors: u64,
    /// Commit groups per latency bucket of [`FSYNC_BUCKETS`] (non-cumulative; last: +Inf).
    pub buckets: [u64; FSYNC_BUCKETS.len() + 1],
    pub sum: Duration,
}

/// One commit group (data fdatasync, journal append, journal fdatasync) of `segments` segments
/// took `took`.
pub(crate) fn group_committed(took: Duration, segments: usize, ok: bool) {
    let secs = took.as_secs_f64();
    let i = FSYNC_BUCKETS
        .iter()
        .position(|b| secs <= *b)
        .unwrap_or(FSYNC_BUCKETS.len());
    if let Some(b) = COUNTERS.buckets.get(i) {
        b.fetch_add(1, Relaxed);
    }
    COUNTERS
        .sum_nanos
        .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    if ok {
        COUNTERS.segments.fetch_add(segments as u64, Relaxed);
    } else {
        COUNTERS.commit_errors.fetch_add(1, Relaxed);
    }
}

/// The process-wide counters now.
pub fn commit_stats() -> CommitStats {
    CommitStats {
        segments: COUNTERS.segments.load(Relaxed),
        commit_errors: COUNTERS.commit_errors.load(Relaxed),
        buckets: std::array::from_fn(|i| COUNTERS.buckets.get(i).map_or(0, |b| b.load(Relaxed))),
        sum: Duration::from_nanos(COUNTERS.sum_nanos.load(Relaxed)),
    }
}
