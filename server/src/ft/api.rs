//! What the service shows outside itself: the REST API's views of transfers and finished files, and
//! the one [`TransferState`] that `$file-response`, REST and the metrics all spell the same way.

use std::ops::Deref;
use std::path::PathBuf;
use std::time::Instant;

use quicft_proto::ft::FileMeta;
use serde::{Deserialize, Serialize};

use super::disk::{self, Manifest};
use super::transfer::{lock, Phase};
use super::FtService;

/// Where a transfer is, as devices (`$file-response` `state`), the REST API and the
/// `quicft_transfers{state}` metric see it. The serialised names are the wire strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TransferState {
    /// Init is creating its files.
    Initializing,
    Receiving,
    /// A fin is checking and publishing.
    Assembling,
    /// Exported and not yet expired.
    Complete,
    /// Cancelled by the operator (until GC drops the tombstone).
    Cancelled,
    /// The server holds nothing under this id.
    Unknown,
}

impl TransferState {
    /// The states of a transfer in progress, in the order the metrics list them.
    pub const IN_PROGRESS: [TransferState; 3] = [
        TransferState::Initializing,
        TransferState::Receiving,
        TransferState::Assembling,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransferState::Initializing => "initializing",
            TransferState::Receiving => "receiving",
            TransferState::Assembling => "assembling",
            TransferState::Complete => "complete",
            TransferState::Cancelled => "cancelled",
            TransferState::Unknown => "unknown",
        }
    }

    /// The state of a live transfer in `phase`; `None` once it is gone (its state is then whatever
    /// the registry holds in its place).
    pub(super) fn of(phase: Phase) -> Option<TransferState> {
        match phase {
            Phase::Initializing => Some(TransferState::Initializing),
            Phase::Receiving => Some(TransferState::Receiving),
            Phase::Assembling => Some(TransferState::Assembling),
            Phase::Gone => None,
        }
    }
}

/// Reads as its wire name, so that the state compares and formats like the string it replaces
/// (`outcome.state.as_deref() == Some("receiving")` still holds where a caller, or a test, reads it
/// as text).
impl Deref for TransferState {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for TransferState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transfer in progress, for the REST API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransferInfo {
    pub client_id: String,
    pub file_id: String,
    pub name: String,
    /// Declared size, when init gave one.
    pub size: Option<u64>,
    pub bytes_held: u64,
    pub ranges: Vec<(u64, u64)>,
    /// `initializing`, `receiving` or `assembling`.
    pub state: TransferState,
    pub started_at: u64,
    pub updated_at: u64,
    /// Bytes per second made durable over the last ~10 s.
    pub rate_bytes_per_sec: f64,
    pub meta: FileMeta,
}

/// Where a finished file's export is (REST `export_state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportState {
    /// Finished and kept in the server's store; a background export is uploading it (or waits
    /// for its turn).
    Exporting,
    /// Published by the exporter and checked there.
    Exported,
    /// The last attempt failed (the file is kept; the export is retried with backoff).
    ExportFailed {
        error: String,
        attempts: u32,
        /// Unix seconds of the next attempt.
        retry_at: u64,
    },
}

impl ExportState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ExportState::Exporting => "exporting",
            ExportState::Exported => "exported",
            ExportState::ExportFailed { .. } => "export_failed",
        }
    }
}

/// A finished (not yet expired) file, for the REST API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinishedInfo {
    pub manifest: Manifest,
    /// The file on this server's disk, or (exported elsewhere) its `location`.
    pub export_path: PathBuf,
    pub manifest_path: PathBuf,
    pub export: ExportState,
}

impl FtService {
    /// A presigned URL of an export that lies in an object store (see [`super::Exporter::presign`]).
    pub async fn presigned_url(&self, m: &Manifest) -> std::io::Result<Option<String>> {
        if m.location.is_none() {
            return Ok(None);
        }
        let (exporter, m) = (self.inner.exporter.clone(), m.clone());
        super::blocking(move || exporter.presign(&m)).await
    }

    /// Transfers in progress, for the REST API.
    pub fn transfers(&self) -> Vec<TransferInfo> {
        let reg = lock(&self.inner.reg);
        let now = Instant::now();
        let mut out: Vec<TransferInfo> = reg
            .clients
            .values()
            .flat_map(|c| c.live.values())
            .map(|t| {
                let st = lock(&t.st);
                TransferInfo {
                    client_id: t.client_id.clone(),
                    file_id: t.file_id.clone(),
                    name: t.meta.name.clone(),
                    size: t.meta.size,
                    bytes_held: st.held.covered_len(),
                    ranges: st.held.to_vec(),
                    // Never `Gone` here: a transfer turns gone under the registry lock as it leaves it.
                    state: TransferState::of(st.phase()).unwrap_or(TransferState::Receiving),
                    started_at: t.started_at,
                    updated_at: st.updated_at,
                    rate_bytes_per_sec: st.rate(now),
                    meta: t.meta.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (a.started_at, &a.client_id, &a.file_id).cmp(&(b.started_at, &b.client_id, &b.file_id))
        });
        out
    }

    /// Finished files that are still exported, oldest first, for the REST API.
    pub fn finished(&self) -> Vec<FinishedInfo> {
        let reg = lock(&self.inner.reg);
        let mut out: Vec<FinishedInfo> = reg
            .clients
            .values()
            .flat_map(|c| c.finished.values())
            .map(|f| FinishedInfo {
                export_path: match (&f.export, &f.manifest.location) {
                    (ExportState::Exported, Some(loc)) => PathBuf::from(loc),
                    (ExportState::Exported, None) => f.manifest.file_path(&f.dir),
                    // Still in the store, where fin left it.
                    _ => f.dir.join(disk::DATA_FILE),
                },
                manifest_path: f.dir.join(disk::MANIFEST_FILE),
                manifest: f.manifest.clone(),
                export: f.export.clone(),
            })
            .collect();
        out.sort_by(|a, b| {
            (
                a.manifest.finished_at,
                &a.manifest.client_id,
                &a.manifest.file_id,
            )
                .cmp(&(
                    b.manifest.finished_at,
                    &b.manifest.client_id,
                    &b.manifest.file_id,
                ))
        });
        out
    }
}
