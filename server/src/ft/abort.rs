//! Ending a transfer before it finishes. `abort` is the device's: the data is deleted and an
//! `aborted` event sent; it is idempotent (unknown → 0x00), leaves a finished export alone (which
//! `expire_at` governs) and answers 0x83 for a cancelled one. `cancel` is the operator's (REST):
//! data first, then a tombstone, so every later command for the id answers 0x83 until GC drops it
//! (`segments_ttl_max_secs` after the cancel). `discard` is the end every other path shares (fail,
//! lost files, expiry).

use std::io;
use std::sync::Arc;

use quicft_proto::ft::FtReason;

use super::disk::{self, Tombstone};
use super::error::{io_err, FtError};
use super::events::EventKind;
use super::outcome::{cancelled_outcome, lost_outcome, FtOutcome};
use super::registry::{Cancelled, Lookup};
use super::transfer::{lock, Phase, Transfer};
use super::{blocking, now_unix, FtService};

impl FtService {
    pub(super) async fn abort(&self, client_id: &str, file_id: &str) -> FtOutcome {
        loop {
            let t = match self.lookup(client_id, file_id) {
                Lookup::Live(t) => t,
                Lookup::Cancelled(_) => return cancelled_outcome(),
                Lookup::Finished(_) => {
                    return FtOutcome::with(FtReason::Success, "already complete; export kept")
                }
                Lookup::Unknown => return FtOutcome::ok(),
            };
            let _op = t.op.lock().await;
            if t.phase() == Phase::Gone {
                continue;
            }
            self.discard(&t).await;
            tracing::info!("transfer aborted by the device");
            self.emit_end(EventKind::Aborted, &t, "aborted by the device");
            return FtOutcome::ok();
        }
    }

    /// Operator cancel: deletes the stored data; the device's next command for it gets 0x83.
    pub async fn cancel(&self, client_id: &str, file_id: &str) -> Result<(), FtError> {
        loop {
            let t = match self.lookup(client_id, file_id) {
                Lookup::Live(t) => t,
                Lookup::Cancelled(_) => return Ok(()),
                Lookup::Finished(_) | Lookup::Unknown => {
                    return Err(FtError::NotFound {
                        client_id: client_id.to_owned(),
                        file_id: file_id.to_owned(),
                    })
                }
            };
            let _op = t.op.clone().lock_owned().await;
            if t.phase() == Phase::Gone {
                continue;
            }
            let at = now_unix();
            {
                let mut reg = lock(&self.inner.reg);
                reg.leave(&t);
                reg.insert_cancelled(
                    &t.client_id,
                    &t.file_id,
                    Cancelled {
                        meta: t.meta.clone(),
                        at,
                        dir: t.dir.clone(),
                    },
                );
            }
            t.close_files(true);
            let dir = t.dir.clone();
            // Data first, tombstone after: on a full disk the delete frees the room the tombstone
            // needs, and a tombstone that still cannot be written costs only its promise across a
            // restart (the device then gets 0x10 rather than 0x83), never the cancel itself.
            blocking(move || disk::tombstone(&dir, &Tombstone { cancelled_at: at }))
                .await
                .map_err(io_err(
                    "the transfer is cancelled, but its data could not be deleted",
                ))?;
            tracing::info!(client_id, file_id, "transfer cancelled by the operator");
            self.emit_end(EventKind::Aborted, &t, "cancelled by the operator");
            return Ok(());
        }
    }

    /// The transfer's files vanished under the server (deleted by hand, a clean-up job): no usable
    /// state is left, so the device restarts from 0 (DESIGN §2: 0x10), never "retry later". The
    /// caller holds the transfer's op lock.
    pub(super) async fn lost(&self, t: &Arc<Transfer>, e: &io::Error) -> FtOutcome {
        tracing::error!(error = %e, "transfer files are gone");
        self.discard(t).await;
        lost_outcome()
    }

    /// Takes a live transfer out of the registry and deletes its directory. Call with its op lock.
    pub(super) async fn discard(&self, t: &Arc<Transfer>) {
        self.take_out(t);
        let dir = t.dir.clone();
        if let Err(e) = blocking(move || disk::remove_dir(&dir)).await {
            tracing::error!(error = %e, "cannot delete transfer data");
        }
    }
}
