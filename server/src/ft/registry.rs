//! Every transfer the service knows, by client and file id: live ones (with their state), finished
//! exports (until they expire) and cancel tombstones. One std mutex guards it, held for map
//! operations only, never across an await; a transfer turns `Gone` under it as it leaves the live
//! set, so a command that sees `Gone` and looks up again finds what replaced it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use quicft_proto::ft::FileMeta;

use super::api::ExportState;
use super::disk::{FinRecord, Manifest, TransferRecord};
use super::transfer::{lock, Transfer};
use super::FtService;

#[derive(Default)]
pub(super) struct Registry {
    pub clients: HashMap<String, ClientEntry>,
    pub live_count: usize,
}

#[derive(Default)]
pub(super) struct ClientEntry {
    pub live: HashMap<String, Arc<Transfer>>,
    pub finished: HashMap<String, Finished>,
    pub cancelled: HashMap<String, Cancelled>,
}

impl ClientEntry {
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.finished.is_empty() && self.cancelled.is_empty()
    }
}

#[derive(Clone)]
pub(super) struct Finished {
    pub manifest: Manifest,
    /// Where the exporter put it; while `export` is not `Exported`, the transfer directory that
    /// holds `data.part` and `fin.json`.
    pub dir: PathBuf,
    pub export: ExportState,
    /// What a background export publishes from, until it succeeded.
    pub pending: Option<Arc<(TransferRecord, FinRecord)>>,
}

impl Finished {
    /// A file the exporter has published.
    pub fn exported(manifest: Manifest, dir: PathBuf) -> Finished {
        Finished {
            manifest,
            dir,
            export: ExportState::Exported,
            pending: None,
        }
    }
}

#[derive(Clone)]
pub(super) struct Cancelled {
    pub meta: FileMeta,
    /// Unix seconds of the cancel (GC drops the tombstone `segments_ttl_max_secs` later).
    pub at: u64,
    /// The tombstone's directory in the store.
    pub dir: PathBuf,
}

pub(super) enum Lookup {
    Live(Arc<Transfer>),
    Cancelled(Cancelled),
    Finished(Finished),
    Unknown,
}

impl Registry {
    pub fn lookup(&self, client_id: &str, file_id: &str) -> Lookup {
        let Some(c) = self.clients.get(client_id) else {
            return Lookup::Unknown;
        };
        if let Some(t) = c.live.get(file_id) {
            return Lookup::Live(t.clone());
        }
        if let Some(x) = c.cancelled.get(file_id) {
            return Lookup::Cancelled(x.clone());
        }
        if let Some(f) = c.finished.get(file_id) {
            return Lookup::Finished(f.clone());
        }
        Lookup::Unknown
    }

    pub fn insert_live(&mut self, t: Arc<Transfer>) {
        let c = self.clients.entry(t.client_id.clone()).or_default();
        c.live.insert(t.file_id.clone(), t);
        self.live_count += 1;
    }

    pub fn insert_finished(&mut self, f: Finished) {
        let c = self
            .clients
            .entry(f.manifest.client_id.clone())
            .or_default();
        c.finished.insert(f.manifest.file_id.clone(), f);
    }

    pub fn insert_cancelled(&mut self, client_id: &str, file_id: &str, x: Cancelled) {
        let c = self.clients.entry(client_id.to_owned()).or_default();
        c.cancelled.insert(file_id.to_owned(), x);
    }

    /// Takes `t` out of the live set, turning it `Gone` under this lock (see the module doc).
    pub fn leave(&mut self, t: &Arc<Transfer>) {
        t.gone();
        self.remove_live(t);
    }

    /// Removes `t` from the live set if it is still the registered incarnation.
    pub fn remove_live(&mut self, t: &Arc<Transfer>) -> bool {
        let Some(c) = self.clients.get_mut(&t.client_id) else {
            return false;
        };
        let same = c.live.get(&t.file_id).is_some_and(|x| Arc::ptr_eq(x, t));
        if same {
            c.live.remove(&t.file_id);
            self.live_count = self.live_count.saturating_sub(1);
        }
        same
    }

    pub fn prune(&mut self, client_id: &str) {
        if self
            .clients
            .get(client_id)
            .is_some_and(ClientEntry::is_empty)
        {
            self.clients.remove(client_id);
        }
    }

    /// Bytes charged to a client, leaving out `except` (whose charge the caller computes itself).
    pub fn usage(&self, client_id: &str, except: Option<&Arc<Transfer>>) -> u64 {
        let Some(c) = self.clients.get(client_id) else {
            return 0;
        };
        let exported: u64 = c.finished.values().map(|f| f.manifest.size).sum();
        let live: u64 = c
            .live
            .values()
            .filter(|t| !except.is_some_and(|e| Arc::ptr_eq(e, t)))
            .map(|t| lock(&t.st).charge(t.meta.size))
            .sum();
        exported.saturating_add(live)
    }
}

impl FtService {
    pub(super) fn lookup(&self, client_id: &str, file_id: &str) -> Lookup {
        lock(&self.inner.reg).lookup(client_id, file_id)
    }

    /// Takes a live transfer out of the registry and closes its files for good (its directory may
    /// now be deleted, and a new transfer with the same ids may create the same paths).
    pub(super) fn take_out(&self, t: &Arc<Transfer>) {
        {
            let mut reg = lock(&self.inner.reg);
            reg.leave(t);
            reg.prune(&t.client_id);
        }
        t.close_files(true);
    }
}
