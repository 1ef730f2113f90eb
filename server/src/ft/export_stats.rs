//! What the background exporter (`export_queue.rs`, `export_s3.rs`) has done: process-wide
//! counters, read by `crate::metrics` when scraped (as `commit_stats.rs`: ft does not import the
//! metrics module).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

static FILES: AtomicU64 = ZERO;
static BYTES: AtomicU64 = ZERO;
static FAILURES: AtomicU64 = ZERO;
static PARTS: AtomicU64 = ZERO;
static QUEUED: AtomicU64 = ZERO;
static DURATION_NANOS: AtomicU64 = ZERO;

/// The exporter's counters as read at one moment.
#[derive(Debug, Clone, Default)]
pub struct ExportStats {
    /// Files exported to the object store and checked there.
    pub files: u64,
    pub bytes: u64,
    /// Export attempts that failed (each is retried; the file is kept).
    pub failures: u64,
    /// Multipart parts the object store acknowledged.
    pub parts: u64,
    /// Finished files waiting for (or in) their export.
    pub queued: u64,
    /// Time spent on successful exports.
    pub duration: Duration,
}

/// A file of `bytes` was exported and checked in `took`.
pub(super) fn export_done(bytes: u64, took: Duration) {
    FILES.fetch_add(1, Relaxed);
    BYTES.fetch_add(bytes, Relaxed);
    DURATION_NANOS.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
}

/// An export attempt failed (it is retried).
pub(super) fn export_failed() {
    FAILURES.fetch_add(1, Relaxed);
}

/// One multipart part was acknowledged by the store.
pub(super) fn export_part_sent() {
    PARTS.fetch_add(1, Relaxed);
}

/// Files finished and waiting for (or in) their export.
pub(super) fn export_queue(n: usize) {
    QUEUED.store(n as u64, Relaxed);
}

/// The process-wide counters now.
pub fn export_stats() -> ExportStats {
    ExportStats {
        files: FILES.load(Relaxed),
        bytes: BYTES.load(Relaxed),
        failures: FAILURES.load(Relaxed),
        parts: PARTS.load(Relaxed),
        queued: QUEUED.load(Relaxed),
        duration: Duration::from_nanos(DURATION_NANOS.load(Relaxed)),
    }
}
