//! The file-transfer service: durable segment store, assembly and export, limits, GC and events
//! (DESIGN §2 and §4, issue 3).
//!
//! The connection code parses a `$file…` topic and calls [`FtService::handle`]; the returned
//! [`FtOutcome`] becomes the PUBACK reason code and the `$file-response` message. Nothing here knows
//! about MQTT.
//!
//! This file is the facade; each command and concern has its own module:
//! ```text
//! init.rs     init: limits, creating the files          segment.rs  admit, verify, write, commit
//! fin.rs      fin: gaps, size and SHA-256, publish      abort.rs    device abort, operator cancel
//! status.rs   status (and status with init's JSON)      gc.rs       expiry of transfers, exports, tombstones
//! registry.rs who holds what, by client and file id     recover.rs  what open finds on disk
//! export.rs   the Exporter trait, local exporter        events.rs   $events/file/… for the cloud
//! export_s3.rs the S3-compatible exporter               export_queue.rs background exports, retries
//! api.rs      REST views, TransferState                 outcome.rs  the answer to a command
//! transfer.rs one transfer and its phase transitions    commit.rs   the group commit
//! disk.rs     the on-disk layout                        journal.rs  the range journal
//! ```
//!
//! How a segment becomes durable (see `commit.rs` for the group commit):
//! ```text
//! handle ─► admit (limits, ranges not yet held) ─► blocking: verify SHA-256, write at offset
//!        (one writer per transfer; O_DIRECT for the block-aligned middle, see `Transfer::write_at`)
//!        ─► committer: fdatasync data.part, append + fdatasync ranges.log, insert into `held` ─► 0x00
//!        └► (not awaited) blocking: advance the running SHA-256 from the committed payloads
//! ```
//! Outcomes that are a choice rather than a rule of DESIGN §2:
//! * fin whose data is complete but whose size or SHA-256 does not match: 0x83, a `failed` event, and
//!   the stored data is deleted (retransmitting cannot fix held bytes; a new init starts over).
//! * Every command for a transfer cancelled by the operator, abort included, gets 0x83 until GC drops
//!   the tombstone (`segments_ttl_max_secs` after the cancel); a new init with that id too.
//! * A segment that only covers bytes already held answers 0x00 without writing (0x80 if it does not
//!   match its own checksum); a segment of a finished transfer answers 0x00 when inside its size.
//! * Abort of a finished transfer answers 0x00 and leaves the export (which `expire_at` governs).
//! * GC of an idle transfer emits `aborted` with reason `expired`.

mod abort;
mod api;
mod commit;
mod commit_stats;
mod config;
mod disk;
mod error;
mod escape;
mod events;
mod export;
mod export_queue;
mod export_s3;
mod export_stats;
mod fin;
mod gc;
mod init;
mod journal;
mod outcome;
mod recover;
mod registry;
mod segment;
mod status;
mod transfer;

#[cfg(test)]
mod tests;

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::FutureExt;
use quicft_proto::ft::{Command, FtReason, FtTopic};
use tokio::sync::mpsc;
use tracing::Instrument;

pub use api::{ExportState, FinishedInfo, TransferInfo, TransferState};
#[cfg(test)]
pub(crate) use commit_stats::group_committed;
pub use commit_stats::{commit_stats, CommitStats, FSYNC_BUCKETS};
pub use config::{ExportBackend, ExportConfig, FtConfig, S3Config};
pub use disk::Manifest;
pub use error::FtError;
pub use escape::escape as escape_component;
pub use events::{EventBody, FtEvent, EVENT_QUEUE};
pub use export::{Exporter, LocalExporter};
pub use export_s3::S3Exporter;
pub use export_stats::{export_stats, ExportStats};
pub use outcome::FtOutcome;

use commit::CommitJob;
use error::io_err;
use registry::Registry;

/// The file-transfer service. Cheap to clone.
#[derive(Clone)]
pub struct FtService {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: FtConfig,
    reg: Mutex<Registry>,
    commit_tx: mpsc::Sender<CommitJob>,
    events: mpsc::Sender<FtEvent>,
    /// Free space on the store's filesystem for the watermark check, without a statvfs per segment.
    free: Arc<disk::FreeSpace>,
    /// Where fin publishes; shared with the blocking tasks that run it.
    exporter: Arc<dyn Exporter>,
    /// Wakes the background exporter (`export_queue.rs`) when a file waits for it.
    export_wake: tokio::sync::Notify,
}

impl FtService {
    /// Opens the store, recovering every transfer and finished file found on disk, and starts the
    /// committer thread (which ends when the last clone of the service is dropped). Call inside a
    /// tokio runtime.
    pub fn open(cfg: FtConfig) -> Result<(FtService, mpsc::Receiver<FtEvent>), FtError> {
        let exporter = Arc::new(LocalExporter::new(cfg.export_root.clone()));
        FtService::open_with(cfg, exporter)
    }

    /// [`FtService::open`] with another exporter than the local one.
    pub fn open_with(
        cfg: FtConfig,
        exporter: Arc<dyn Exporter>,
    ) -> Result<(FtService, mpsc::Receiver<FtEvent>), FtError> {
        std::fs::create_dir_all(&cfg.store_dir)
            .map_err(io_err(format!("create {}", cfg.store_dir.display())))?;
        std::fs::create_dir_all(&cfg.export_root)
            .map_err(io_err(format!("create {}", cfg.export_root.display())))?;
        let reg = recover::recover(&cfg, exporter.as_ref(), now_unix())?;
        tracing::info!(transfers = reg.live_count, "file-transfer store opened");
        let commit_tx = commit::spawn().map_err(io_err("start the committer thread"))?;
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let free = Arc::new(disk::FreeSpace::new(cfg.store_dir.clone()));
        let inner = Inner {
            cfg,
            reg: Mutex::new(reg),
            commit_tx,
            events,
            free,
            exporter,
            export_wake: tokio::sync::Notify::new(),
        };
        Ok((
            FtService {
                inner: Arc::new(inner),
            },
            events_rx,
        ))
    }

    pub fn config(&self) -> &FtConfig {
        &self.inner.cfg
    }

    /// Runs one command to its outcome. It does not spawn: the caller runs it in a task of its own
    /// (the session spawns one per command, which outlives the connection), so a caller that stops
    /// waiting never leaves a transfer half-initialised or half-published. A command that panics
    /// answers 0x97 "retry later", as the task of its own that each command used to get did.
    pub async fn handle(&self, client_id: &str, topic: &FtTopic, payload: Bytes) -> FtOutcome {
        let file_id = topic.file_id.as_str();
        let span = tracing::debug_span!("ft", client_id = %client_id, file_id = %file_id);
        let command = topic.command.clone();
        let run = async move {
            match command {
                Command::Init => self.init(client_id, file_id, &payload).await,
                Command::Segment { offset, checksum } => {
                    self.segment(client_id, file_id, offset, checksum, payload)
                        .await
                }
                Command::Fin { size, checksum } => {
                    self.fin(client_id, file_id, size, checksum).await
                }
                Command::Abort => self.abort(client_id, file_id).await,
                Command::Status => self.status_or_init(client_id, file_id, &payload).await,
            }
        };
        match AssertUnwindSafe(run.instrument(span)).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::error!("file-transfer command panicked");
                FtOutcome::with(FtReason::Quota, "internal error: retry later")
            }
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))?
}
