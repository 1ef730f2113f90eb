//! What [`super::FtService::open`] finds on disk: every export still published, and every transfer
//! in the store as it was at the last acknowledgement. A segment acknowledged with 0x00 is in the
//! journal, so a restart never loses one (DESIGN §2); a transfer that had passed fin is published
//! now; one that cannot be read is kept where it is for an operator (a new init moves it to the
//! quarantine, never deletes it).

use std::path::PathBuf;
use std::sync::Arc;

use super::api::ExportState;
use super::disk::{self, Found, Manifest};
use super::error::{io_err, FtError};
use super::export::{self, Exporter};
use super::registry::{Cancelled, Finished, Registry};
use super::transfer::{Phase, Transfer};
use super::FtConfig;

/// Reads the exports, then the store (whose interrupted publishes replace an older export of the
/// same ids), into a registry.
pub(super) fn recover(
    cfg: &FtConfig,
    exporter: &dyn Exporter,
    now: u64,
) -> Result<Registry, FtError> {
    let mut reg = Registry::default();
    let exports = exporter
        .scan()
        .map_err(io_err(format!("scan {}", cfg.export_root.display())))?;
    for (manifest, dir) in exports {
        reg.insert_finished(Finished::exported(manifest, dir));
    }
    let redo = |rec, fin, dir: PathBuf| {
        if exporter.background() {
            // Not here: the export queue publishes it once the server runs.
            return Ok(Found::Fin { rec, fin, dir });
        }
        let (manifest, dir) = export::publish(exporter, &dir, &rec, &fin, false)?;
        Ok(Found::Finished { manifest, dir })
    };
    let found = disk::scan_store(&cfg.store_dir, now, redo)
        .map_err(io_err(format!("scan {}", cfg.store_dir.display())))?;
    for found in found {
        match found {
            Found::Live {
                rec,
                dir,
                held,
                updated_at,
            } => {
                let t = Transfer::new(rec, dir, held, Phase::Receiving, updated_at);
                reg.insert_live(Arc::new(t));
            }
            Found::Finished { manifest, dir } => {
                reg.insert_finished(Finished::exported(manifest, dir))
            }
            Found::Fin { rec, fin, dir } => reg.insert_finished(Finished {
                manifest: Manifest::new(&rec, &fin),
                dir,
                export: ExportState::Exporting,
                pending: Some(Arc::new((rec, fin))),
            }),
            Found::Cancelled { rec, dir, at } => reg.insert_cancelled(
                &rec.client_id,
                &rec.file_id,
                Cancelled {
                    meta: rec.meta,
                    at,
                    dir,
                },
            ),
        }
    }
    Ok(reg)
}
