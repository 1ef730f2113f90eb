//! Where finished files go: the [`Exporter`] behind fin, GC of expired exports and the scan at start.
//! [`LocalExporter`] publishes into `export_root` on the store's filesystem (a rename), inside fin;
//! the S3 exporter (`export_s3.rs`) uploads in the background after fin answered
//! ([`Exporter::background`], `export_queue.rs`), from the transfer directory that `fin.json`
//! keeps until the upload is checked.
//!
//! The promise around any exporter is the store's, kept by [`publish`]: `fin.json` is written to the
//! transfer's directory before the exporter runs, and the directory is deleted only after it
//! succeeded, so a crash at any point makes the next start redo the publish from the same
//! `data.part`. An exporter's `publish` must therefore be safe to redo, including after a previous
//! attempt moved the data file away.
//!
//! The trait is blocking, and the service runs it on the blocking pool: the local exporter is a few
//! syscalls (rename, fsync), `scan` runs inside `FtService::open`, which is synchronous, and a
//! blocking trait stays object-safe without boxing futures. An S3 exporter uploads with its own
//! client from that blocking thread (a blocking HTTP client, or `Handle::block_on` on the runtime's
//! handle, which is allowed there); its upload time holds one blocking thread per fin, bounded by
//! `max_transfers`.

use std::io;
use std::path::{Path, PathBuf};

use super::disk::{self, FinRecord, Manifest, TransferRecord, DATA_FILE};

/// Publishes finished files somewhere the cloud reads them. Every method blocks.
pub trait Exporter: Send + Sync + 'static {
    /// Publishes the assembled file `data` of a transfer that passed fin, with its manifest; answers
    /// the manifest and where the export lies (what [`Exporter::remove`] later takes). Must be
    /// redoable: after a crash it runs again, and `data` may be gone because it already moved.
    fn publish(
        &self,
        data: &Path,
        rec: &TransferRecord,
        fin: &FinRecord,
    ) -> io::Result<(Manifest, PathBuf)>;

    /// Deletes an export (past its `expire_at`); one already gone is fine.
    fn remove(&self, dir: &Path) -> io::Result<()>;

    /// Every export still published, read once at start.
    fn scan(&self) -> io::Result<Vec<(Manifest, PathBuf)>>;

    /// Whether publishing runs after fin answered (a remote store: minutes, and it may be down)
    /// rather than inside fin. The transfer is then finished once `fin.json` is written, shown as
    /// `exporting` until `publish` succeeds, and retried until it does (`export_queue.rs`).
    fn background(&self) -> bool {
        false
    }

    /// A time-limited URL that serves the export `m` directly (S3: a presigned GET); `None` when
    /// the server serves the file itself.
    fn presign(&self, m: &Manifest) -> io::Result<Option<String>> {
        let _ = m;
        Ok(None)
    }
}

/// Exports into a directory tree (`<export_root>/<esc clientId>/<esc fileId>/`, see `disk.rs`).
pub struct LocalExporter {
    root: PathBuf,
}

impl LocalExporter {
    pub fn new(root: PathBuf) -> LocalExporter {
        LocalExporter { root }
    }
}

impl Exporter for LocalExporter {
    fn publish(
        &self,
        data: &Path,
        rec: &TransferRecord,
        fin: &FinRecord,
    ) -> io::Result<(Manifest, PathBuf)> {
        disk::export(&self.root, data, rec, fin)
    }

    fn remove(&self, dir: &Path) -> io::Result<()> {
        disk::remove_dir(dir)
    }

    fn scan(&self) -> io::Result<Vec<(Manifest, PathBuf)>> {
        disk::scan_exports(&self.root)
    }
}

/// Publishes the transfer in the store directory `tdir` through `exporter`: records the fin (unless
/// a restart redoes a recorded one), exports, then deletes the transfer directory. Blocking.
pub(super) fn publish(
    exporter: &dyn Exporter,
    tdir: &Path,
    rec: &TransferRecord,
    fin: &FinRecord,
    record_fin: bool,
) -> io::Result<(Manifest, PathBuf)> {
    if record_fin {
        disk::record_fin(tdir, fin)?;
    }
    let exported = exporter.publish(&tdir.join(DATA_FILE), rec, fin)?;
    disk::remove_dir(tdir)?;
    Ok(exported)
}
