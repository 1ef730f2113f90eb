//! Garbage collection, every `gc_interval_secs`: transfers idle past their `segments_ttl` (an
//! `aborted` event with reason `expired`), exports past their `expire_at` (through the exporter),
//! cancel tombstones past `segments_ttl_max_secs`; and cached descriptors of idle transfers, which
//! bounds open files with many devices. GC never waits for a transfer: one whose op lock is held
//! (init, fin, abort, cancel at work) is left for the next pass.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::disk;
use super::events::EventKind;
use super::transfer::{lock, Phase, Transfer};
use super::{blocking, now_unix, FtService, Inner};

/// Cached descriptors of transfers idle this long are closed by GC (bounds open files with many
/// devices).
const FD_IDLE: Duration = Duration::from_secs(60);

impl FtService {
    /// Starts the periodic GC. The task holds only a weak reference and ends once the service is
    /// dropped (or with the runtime).
    pub fn run_gc(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let period = Duration::from_secs(self.inner.cfg.gc_interval_secs.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                FtService { inner }.gc_once(now_unix()).await;
            }
        })
    }

    /// One GC pass as of `now_unix`: drops transfers idle past their `segments_ttl`, exports past
    /// their `expire_at`, cancel tombstones past `segments_ttl_max_secs`; closes idle descriptors.
    pub async fn gc_once(&self, now_unix: u64) {
        let cfg = &self.inner.cfg;
        let (live, expired_exports, old_tombstones) = {
            let mut reg = lock(&self.inner.reg);
            let live: Vec<Arc<Transfer>> = reg
                .clients
                .values()
                .flat_map(|c| c.live.values().cloned())
                .collect();
            let mut exports = Vec::new();
            let mut tombs = Vec::new();
            for c in reg.clients.values_mut() {
                c.finished.retain(|_, f| {
                    // A file still waiting for its export stays until it is exported.
                    let expired = f.pending.is_none()
                        && f.manifest.expire_at.is_some_and(|at| at <= now_unix);
                    if expired {
                        exports.push(f.clone());
                    }
                    !expired
                });
                c.cancelled.retain(|_, x| {
                    let old = x.at.saturating_add(cfg.segments_ttl_max_secs) <= now_unix;
                    if old {
                        tombs.push(x.clone());
                    }
                    !old
                });
            }
            reg.clients.retain(|_, c| !c.is_empty());
            (live, exports, tombs)
        };
        for t in live {
            let ttl = t
                .meta
                .segments_ttl
                .unwrap_or(cfg.segments_ttl_default_secs)
                .min(cfg.segments_ttl_max_secs);
            let Ok(_op) = t.op.clone().try_lock_owned() else {
                continue;
            };
            let (stale, idle_fd) = {
                let st = lock(&t.st);
                let quiet = st.phase() == Phase::Receiving && st.inflight.is_empty();
                (
                    quiet && st.updated_at.saturating_add(ttl) <= now_unix,
                    quiet && st.last_io.elapsed() >= FD_IDLE,
                )
            };
            if stale {
                tracing::info!(client_id = %t.client_id, file_id = %t.file_id, "transfer expired");
                self.discard(&t).await;
                self.emit_end(EventKind::Aborted, &t, "expired");
            } else if idle_fd && t.files_open() {
                t.close_files(false);
            }
        }
        for f in expired_exports {
            tracing::info!(client_id = %f.manifest.client_id, file_id = %f.manifest.file_id, "export expired");
            let (exporter, dir) = (self.inner.exporter.clone(), f.dir.clone());
            if let Err(e) = blocking(move || exporter.remove(&dir)).await {
                tracing::error!(error = %e, "cannot delete expired export");
            }
        }
        for x in old_tombstones {
            let dir = x.dir.clone();
            if let Err(e) = blocking(move || disk::remove_dir(&dir)).await {
                tracing::error!(error = %e, "cannot delete cancel tombstone");
            }
        }
    }
}
