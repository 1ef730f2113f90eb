//! Background exports (for an exporter whose [`super::Exporter::background`] is true, S3): every
//! finished file whose state is `exporting`, or `export_failed` and due for a retry, is published
//! from its transfer directory, one file at a time (each upload sends its parts in parallel).
//!
//! There is no queue to bound or lose: the work list is the registry's finished files that are not
//! exported yet, each backed by its transfer directory with `fin.json` (already bounded by the
//! store's quotas), and a restart finds them again (`recover.rs`). A failed attempt keeps the file,
//! logs the error, shows it on REST (`export_failed` + error) and is retried after 1 s, 2 s, 4 s …
//! up to [`MAX_BACKOFF`], so a store that is down for an hour gets the file once it is back.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::api::ExportState;
use super::events::{EventFill, EventKind};
use super::export;
use super::registry::Finished;
use super::transfer::lock;
use super::{blocking, now_unix, FtService, Inner};

/// Longest wait between two attempts of one export.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl FtService {
    /// Starts the background exporter (a no-op task for an exporter that publishes inside fin).
    /// It holds only a weak reference and ends once the service is dropped.
    pub fn run_exports(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let background = self.inner.exporter.background();
        tokio::spawn(async move {
            if !background {
                return;
            }
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let svc = FtService { inner };
                let wait = svc.export_next().await;
                let Some(wait) = wait else { continue };
                let wake = svc.inner.clone();
                drop(svc);
                tokio::select! {
                    _ = wake.export_wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        })
    }

    /// Exports the oldest file that is due, if any; answers how long to wait when none was
    /// (`None`: one was exported, look again at once).
    async fn export_next(&self) -> Option<Duration> {
        let now = now_unix();
        let (due, queued, wait) = {
            let reg = lock(&self.inner.reg);
            let waiting: Vec<&Finished> = reg
                .clients
                .values()
                .flat_map(|c| c.finished.values())
                .filter(|f| f.pending.is_some())
                .collect();
            let due = waiting
                .iter()
                .filter(|f| match &f.export {
                    ExportState::ExportFailed { retry_at, .. } => *retry_at <= now,
                    _ => true,
                })
                .min_by_key(|f| (f.manifest.finished_at, &f.manifest.client_id))
                .map(|f| (*f).clone());
            let wait = waiting
                .iter()
                .filter_map(|f| match &f.export {
                    ExportState::ExportFailed { retry_at, .. } => {
                        Some(retry_at.saturating_sub(now))
                    }
                    _ => None,
                })
                .min()
                .map_or(MAX_BACKOFF, |s| Duration::from_secs(s.max(1)));
            (due, waiting.len(), wait)
        };
        super::export_stats::export_queue(queued);
        let Some(f) = due else {
            return Some(wait);
        };
        self.export_one(f).await;
        None
    }

    async fn export_one(&self, f: Finished) {
        let Some(pending) = f.pending.clone() else {
            return;
        };
        let (client_id, file_id) = (f.manifest.client_id.clone(), f.manifest.file_id.clone());
        let started = Instant::now();
        let (exporter, tdir) = (self.inner.exporter.clone(), f.dir.clone());
        let published = blocking(move || {
            let (rec, fin) = &*pending;
            export::publish(exporter.as_ref(), &tdir, rec, fin, false)
        })
        .await;
        let mut reg = lock(&self.inner.reg);
        let Some(entry) = reg
            .clients
            .get_mut(&client_id)
            .and_then(|c| c.finished.get_mut(&file_id))
            .filter(|e| e.dir == f.dir && e.pending.is_some())
        else {
            return;
        };
        match published {
            Ok((manifest, dir)) => {
                let location = manifest.location.clone().unwrap_or_default();
                super::export_stats::export_done(manifest.size, started.elapsed());
                tracing::info!(client_id, file_id, location, took = ?started.elapsed(), "file exported");
                let name = manifest.name.clone();
                *entry = Finished::exported(manifest, dir);
                drop(reg);
                self.emit_for(
                    EventKind::Exported,
                    &client_id,
                    &file_id,
                    &name,
                    EventFill {
                        size: Some(f.manifest.size),
                        sha256: Some(f.manifest.sha256.clone()),
                        export_path: Some(location),
                        reason: None,
                    },
                );
            }
            Err(e) => {
                let attempts = match &entry.export {
                    ExportState::ExportFailed { attempts, .. } => attempts.saturating_add(1),
                    _ => 1,
                };
                let backoff = Duration::from_secs(1u64 << attempts.min(6)).min(MAX_BACKOFF);
                super::export_stats::export_failed();
                tracing::error!(client_id, file_id, attempts, error = %e, retry_in = ?backoff,
                    "export failed; the file is kept and the export retried");
                entry.export = ExportState::ExportFailed {
                    error: e.to_string(),
                    attempts,
                    retry_at: now_unix() + backoff.as_secs(),
                };
            }
        }
    }
}
