//! `init`: registers a transfer and creates its files. The answer 0x00 means `transfer.json`, an
//! empty `data.part` and journal are on disk (see `disk::create_transfer`), so a restart after it
//! knows the transfer. A repeated init with the same metadata answers 0x00 again; other metadata
//! under a live id is a conflict (0x83); a finished file with the same metadata is "already
//! complete". Limits (per client, in all, quota, free disk) answer 0x97 before anything is created.
//!
//! While its files are created the transfer is `Initializing` and holds its op lock: every other
//! command for it waits, and a create that fails (or panics) takes it out of the registry again.

use std::sync::Arc;

use quicft_proto::ft::{FileMeta, FtReason, RangeSet};

use super::api::TransferState;
use super::disk::{self, TransferRecord};
use super::events::{EventFill, EventKind};
use super::outcome::{cancelled_outcome, storage_outcome, FtOutcome};
use super::registry::{Lookup, Registry};
use super::transfer::{lock, Phase, Transfer};
use super::{blocking, now_unix, FtService};

impl FtService {
    pub(super) async fn init(&self, client_id: &str, file_id: &str, payload: &[u8]) -> FtOutcome {
        let meta = match FileMeta::parse(payload) {
            Ok(m) => m,
            Err(e) => return FtOutcome::with(FtReason::Cancel, e.to_string()),
        };
        let cfg = &self.inner.cfg;
        if let Some(size) = meta.size {
            if size > cfg.max_file_size {
                return FtOutcome::with(
                    FtReason::Cancel,
                    format!(
                        "file size {size} exceeds the limit of {} bytes",
                        cfg.max_file_size
                    ),
                );
            }
        }
        loop {
            let step = {
                let mut reg = lock(&self.inner.reg);
                match reg.lookup(client_id, file_id) {
                    Lookup::Live(t) => InitStep::Existing(t),
                    Lookup::Cancelled(_) => return cancelled_outcome(),
                    Lookup::Finished(f) if f.manifest.meta == meta => {
                        return FtOutcome::with(FtReason::Success, "already complete")
                            .state(TransferState::Complete);
                    }
                    Lookup::Finished(f) if f.pending.is_some() => {
                        // Its transfer directory is the export's source until the export is done.
                        return FtOutcome::with(
                            FtReason::Quota,
                            "the file with this id is still being exported: retry later",
                        );
                    }
                    Lookup::Finished(_) | Lookup::Unknown => {
                        if let Some(refused) = self.init_limits(&reg, client_id, &meta) {
                            return refused;
                        }
                        let dir = disk::transfer_dir(&cfg.store_dir, client_id, file_id);
                        let now = now_unix();
                        let rec = TransferRecord {
                            client_id: client_id.to_owned(),
                            file_id: file_id.to_owned(),
                            meta: meta.clone(),
                            started_at: now,
                        };
                        let t = Arc::new(Transfer::new(
                            rec,
                            dir,
                            RangeSet::new(),
                            Phase::Initializing,
                            now,
                        ));
                        let Ok(op) = t.op.clone().try_lock_owned() else {
                            return FtOutcome::with(FtReason::Quota, "internal error: retry later");
                        };
                        reg.insert_live(t.clone());
                        InitStep::Create(t, op)
                    }
                }
            };
            match step {
                InitStep::Existing(t) => {
                    if t.meta != meta {
                        return FtOutcome::with(
                            FtReason::Cancel,
                            "conflict: a transfer with this file id and different metadata is in \
                             progress (abort it first or use another file id)",
                        );
                    }
                    // Wait for a concurrent init to have created the files before confirming.
                    let _op = t.op.lock().await;
                    let mut st = lock(&t.st);
                    if st.phase() == Phase::Gone {
                        continue;
                    }
                    st.updated_at = now_unix();
                    return FtOutcome::ok();
                }
                InitStep::Create(t, _op) => return self.create(t).await,
            }
        }
    }

    /// 0x97 when a new transfer would exceed a limit.
    fn init_limits(&self, reg: &Registry, client_id: &str, meta: &FileMeta) -> Option<FtOutcome> {
        let cfg = &self.inner.cfg;
        let mine = reg.clients.get(client_id).map_or(0, |c| c.live.len());
        if mine >= cfg.max_transfers_per_client {
            return Some(FtOutcome::with(
                FtReason::Quota,
                format!(
                    "too many concurrent transfers for this client (limit {})",
                    cfg.max_transfers_per_client
                ),
            ));
        }
        if reg.live_count >= cfg.max_transfers {
            return Some(FtOutcome::with(
                FtReason::Quota,
                "too many concurrent transfers on the server",
            ));
        }
        let want = meta.size.unwrap_or(0);
        if reg.usage(client_id, None).saturating_add(want) > cfg.client_quota {
            return Some(FtOutcome::with(
                FtReason::Quota,
                format!(
                    "client storage quota of {} bytes exceeded",
                    cfg.client_quota
                ),
            ));
        }
        None
    }

    async fn create(&self, t: Arc<Transfer>) -> FtOutcome {
        let _creating = CreatingGuard { svc: self, t: &t };
        let cfg = &self.inner.cfg;
        let rec = t.record();
        let store = cfg.store_dir.clone();
        let need = cfg.min_free_disk.saturating_add(t.meta.size.unwrap_or(0));
        let created = blocking(move || {
            if disk::free_space(&store)? < need {
                return Ok(false);
            }
            disk::create_transfer(&store, &rec).map(|_| true)
        })
        .await;
        let refused = match created {
            Ok(true) => None,
            Ok(false) => Some(FtOutcome::with(
                FtReason::Quota,
                "free disk space below the server's watermark",
            )),
            Err(e) => {
                tracing::error!(error = %e, "cannot create transfer");
                Some(storage_outcome(&e, "init", FtReason::Quota))
            }
        };
        if let Some(out) = refused {
            self.take_out(&t);
            return out;
        }
        t.started();
        tracing::info!(name = %t.meta.name, size = ?t.meta.size, "transfer started");
        self.emit(
            EventKind::Started,
            &t,
            EventFill {
                size: t.meta.size,
                ..EventFill::default()
            },
        );
        FtOutcome::ok()
    }
}

/// Takes a transfer whose init did not complete out of the registry (normally done explicitly; this
/// covers a panic, or a caller that stopped polling).
struct CreatingGuard<'a> {
    svc: &'a FtService,
    t: &'a Arc<Transfer>,
}

impl Drop for CreatingGuard<'_> {
    fn drop(&mut self) {
        let mut reg = lock(&self.svc.inner.reg);
        if self.t.abandon_init() {
            reg.remove_live(self.t);
            reg.prune(&self.t.client_id);
            drop(reg);
            self.t.close_files(true);
        }
    }
}

enum InitStep {
    Existing(Arc<Transfer>),
    Create(Arc<Transfer>, tokio::sync::OwnedMutexGuard<()>),
}
