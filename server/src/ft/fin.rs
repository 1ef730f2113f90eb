//! `fin`: checks a transfer and publishes it. Fin takes the transfer's op lock and turns it
//! `Assembling` (new segments wait), waits for the writes admitted before it, then checks: gaps
//! answer 0x80 with the missing ranges and the transfer receives again; a size or SHA-256 that does
//! not match held bytes fails it (0x83, a `failed` event, data deleted: retransmitting cannot fix
//! held bytes). A transfer that passes is published through the exporter (`export.rs`): 0x00 means
//! the file is exported and its manifest written.

use std::io;
use std::sync::Arc;

use quicft_proto::ft::{FtReason, Sha256};

use super::api::{ExportState, TransferState};
use super::disk::{self, FinRecord, Manifest, TransferRecord};
use super::events::{EventFill, EventKind};
use super::export;
use super::outcome::{cancelled_outcome, storage_outcome, FtOutcome};
use super::registry::{Finished, Lookup};
use super::transfer::{lock, Transfer};
use super::{blocking, now_unix, FtService};

impl FtService {
    pub(super) async fn fin(
        &self,
        client_id: &str,
        file_id: &str,
        size: u64,
        checksum: Option<Sha256>,
    ) -> FtOutcome {
        let (t, _op) = loop {
            let t = match self.lookup(client_id, file_id) {
                Lookup::Live(t) => t,
                Lookup::Finished(f) => return fin_of_finished(&f.manifest, size, checksum),
                Lookup::Cancelled(_) => return cancelled_outcome(),
                Lookup::Unknown => {
                    return FtOutcome::with(FtReason::Restart, "unknown transfer: init it first")
                }
            };
            let op = t.op.clone().lock_owned().await;
            if !t.begin_assembly() {
                continue;
            }
            break (t, op);
        };
        let _assembling = AssemblingGuard(&t);
        // Writes admitted before fin finish first; new segments wait on the op lock.
        loop {
            let idle = t.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if lock(&t.st).inflight.is_empty() {
                break;
            }
            idle.await;
        }
        let cfg = &self.inner.cfg;
        let held = lock(&t.st).held.clone();
        let failure = if size > cfg.max_file_size {
            Some(format!(
                "fin size {size} exceeds the limit of {} bytes",
                cfg.max_file_size
            ))
        } else if t.meta.size.is_some_and(|s| s != size) {
            Some(format!(
                "size mismatch: fin says {size}, init said {}",
                t.meta.size.unwrap_or(0)
            ))
        } else if held.end() > size {
            Some(format!(
                "size mismatch: fin says {size} but bytes up to {} were sent",
                held.end()
            ))
        } else {
            None
        };
        if let Some(why) = failure {
            return self.fail(&t, why).await;
        }
        let missing = held.missing(size);
        if !missing.is_empty() {
            t.end_assembly();
            let mut out = FtOutcome::with(
                FtReason::Retransmit,
                format!("{} byte range(s) missing", missing.len()),
            );
            out.missing = Some(missing);
            out.ranges = Some(held.to_vec());
            return out;
        }
        let expected = checksum.or_else(|| t.meta.checksum_bytes());
        let digest = {
            let t = t.clone();
            blocking(move || t.digest(size)).await
        };
        let digest = match digest {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return self.lost(&t, &e).await,
            Err(e) => {
                tracing::error!(error = %e, "cannot hash the assembled file");
                t.end_assembly();
                return storage_outcome(&e, "fin", FtReason::Quota);
            }
        };
        if let Some(want) = expected {
            if want.0 != digest {
                return self
                    .fail(
                        &t,
                        format!(
                            "checksum mismatch: expected {want}, file has {}",
                            Sha256(digest)
                        ),
                    )
                    .await;
            }
        }
        self.publish(&t, size, Sha256(digest).to_hex()).await
    }

    async fn publish(&self, t: &Arc<Transfer>, size: u64, sha256: String) -> FtOutcome {
        let rec = t.record();
        let fin = FinRecord {
            size,
            sha256: sha256.clone(),
            finished_at: now_unix(),
        };
        // No writer is left (fin waited for those in flight, new ones wait for the op lock); drop the
        // cached descriptors anyway so none outlives the rename.
        t.close_files(false);
        if self.inner.exporter.background() {
            return self.finish_for_export(t, rec, fin).await;
        }
        let (exporter, tdir) = (self.inner.exporter.clone(), t.dir.clone());
        let published =
            blocking(move || export::publish(exporter.as_ref(), &tdir, &rec, &fin, true)).await;
        let (manifest, dir) = match published {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !t.dir.exists() => {
                return self.lost(t, &e).await
            }
            Err(e) => {
                // Every step of publish can be redone: the transfer stays live (receiving again) and
                // the device's next fin, or a restart if fin.json made it to disk, finishes the job.
                tracing::error!(error = %e, "cannot publish transfer");
                return storage_outcome(&e, "fin", FtReason::Quota);
            }
        };
        t.close_files(true);
        let export_path = manifest.file_path(&dir);
        {
            let mut reg = lock(&self.inner.reg);
            reg.leave(t);
            reg.insert_finished(Finished::exported(manifest, dir));
        }
        tracing::info!(size, sha256 = %sha256, path = %export_path.display(), "transfer completed");
        self.emit(
            EventKind::Completed,
            t,
            EventFill {
                size: Some(size),
                sha256: Some(sha256),
                export_path: Some(export_path.display().to_string()),
                reason: None,
            },
        );
        FtOutcome::ok().state(TransferState::Complete)
    }

    /// Fin of a transfer whose exporter works in the background: once `fin.json` is on disk the
    /// file is finished (the device is done), and the export queue publishes it from the transfer
    /// directory, retrying until it succeeds.
    async fn finish_for_export(
        &self,
        t: &Arc<Transfer>,
        rec: TransferRecord,
        fin: FinRecord,
    ) -> FtOutcome {
        let (tdir, f) = (t.dir.clone(), fin.clone());
        if let Err(e) = blocking(move || disk::record_fin(&tdir, &f)).await {
            tracing::error!(error = %e, "cannot record fin");
            return storage_outcome(&e, "fin", FtReason::Quota);
        }
        t.close_files(true);
        let manifest = Manifest::new(&rec, &fin);
        let (size, sha256) = (fin.size, fin.sha256.clone());
        {
            let mut reg = lock(&self.inner.reg);
            reg.leave(t);
            reg.insert_finished(Finished {
                manifest,
                dir: t.dir.clone(),
                export: ExportState::Exporting,
                pending: Some(Arc::new((rec, fin))),
            });
        }
        self.inner.export_wake.notify_one();
        tracing::info!(size, sha256 = %sha256, "transfer completed; export queued");
        self.emit(
            EventKind::Completed,
            t,
            EventFill {
                size: Some(size),
                sha256: Some(sha256),
                export_path: Some(t.dir.join(disk::DATA_FILE).display().to_string()),
                reason: None,
            },
        );
        FtOutcome::ok().state(TransferState::Complete)
    }

    /// A complete transfer that cannot be published as is: delete it, tell the device and the cloud.
    async fn fail(&self, t: &Arc<Transfer>, why: String) -> FtOutcome {
        tracing::warn!(reason = %why, "transfer failed");
        self.discard(t).await;
        self.emit_end(EventKind::Failed, t, why.clone());
        FtOutcome::with(FtReason::Cancel, why)
    }
}

/// Puts a transfer that is still assembling back to receiving when fin ends without finishing it, even
/// by a panic, so that segments waiting on it do not spin.
struct AssemblingGuard<'a>(&'a Transfer);

impl Drop for AssemblingGuard<'_> {
    fn drop(&mut self) {
        self.0.end_assembly();
    }
}

/// A repeated fin of a finished file: 0x00 when it describes the same file.
fn fin_of_finished(m: &Manifest, size: u64, checksum: Option<Sha256>) -> FtOutcome {
    let sum_ok = checksum.is_none_or(|c| c.to_hex() == m.sha256);
    if size == m.size && sum_ok {
        FtOutcome::with(FtReason::Success, "already complete").state(TransferState::Complete)
    } else {
        FtOutcome::with(
            FtReason::Cancel,
            "fin does not match the file already completed with this id",
        )
    }
}
