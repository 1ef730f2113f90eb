//! The file-transfer service: durable segment store, assembly and export, limits, GC and events
//! (DESIGN §2 and §4, issue 3).
//!
//! The connection code parses a `$file…` topic and calls [`FtService::handle`]; the returned
//! [`FtOutcome`] becomes the PUBACK reason code and the `$file-response` message. Nothing here knows
//! about MQTT.
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
//! * A segment that only covers bytes already held answers 0x00 without writing (nor verifying its
//!   checksum); a segment of a finished transfer answers 0x00 when inside its size.
//! * Abort of a finished transfer answers 0x00 and leaves the export (which `expire_at` governs).
//! * GC of an idle transfer emits `aborted` with reason `expired`.

mod commit;
mod disk;
mod escape;
mod journal;
mod transfer;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use quicft_proto::ft::{Command, FileMeta, FtReason, FtTopic, RangeSet, Sha256};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

pub use disk::Manifest;
pub use escape::escape as escape_component;

use commit::CommitJob;
use disk::{FinRecord, Found, Tombstone, TransferRecord};
use transfer::{lock, Phase, Transfer};

/// Limits and locations of the file-transfer service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FtConfig {
    /// Partial files and their journals (the lead's default: `<data-dir>/transfers`). Should be on the
    /// same filesystem as `export_root`, which makes publishing a rename rather than a copy.
    pub store_dir: PathBuf,
    /// Where finished files are published (`<data-dir>/exports`).
    pub export_root: PathBuf,
    /// Largest file accepted (init `size`, segment end, fin size): 0x83 beyond.
    pub max_file_size: u64,
    /// Bytes one client may hold, partial and exported-unexpired together: 0x97 beyond.
    pub client_quota: u64,
    /// Unfinished transfers one client may have at once: 0x97 beyond.
    pub max_transfers_per_client: usize,
    /// Unfinished transfers in all: 0x97 beyond.
    pub max_transfers: usize,
    /// Free bytes that must remain on the store's filesystem: 0x97 when a write would go below.
    pub min_free_disk: u64,
    /// How long an idle unfinished transfer is kept when its init gives no `segments_ttl`.
    pub segments_ttl_default_secs: u64,
    /// Upper bound on any `segments_ttl`; also how long a cancel tombstone is kept.
    pub segments_ttl_max_secs: u64,
    /// Period of [`FtService::run_gc`].
    pub gc_interval_secs: u64,
}

impl Default for FtConfig {
    fn default() -> FtConfig {
        FtConfig {
            store_dir: PathBuf::from("data/transfers"),
            export_root: PathBuf::from("data/exports"),
            max_file_size: 4 << 30,
            client_quota: 10 << 30,
            max_transfers_per_client: 16,
            max_transfers: 10_000,
            min_free_disk: 1 << 30,
            segments_ttl_default_secs: 24 * 3600,
            segments_ttl_max_secs: 7 * 24 * 3600,
            gc_interval_secs: 60,
        }
    }
}

/// Errors of the service's own API (command outcomes are [`FtOutcome`]s, never errors).
#[derive(Debug, thiserror::Error)]
pub enum FtError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("no transfer {file_id:?} of client {client_id:?}")]
    NotFound { client_id: String, file_id: String },
    #[error("file-transfer task failed: {0}")]
    Task(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> FtError {
    let what = what.into();
    move |source| FtError::Io { what, source }
}

/// The answer to one command: the PUBACK reason code and the fields of the `$file-response` JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct FtOutcome {
    pub reason: FtReason,
    pub description: Option<String>,
    /// Half-open ranges held durably (status; fin with gaps).
    pub ranges: Option<Vec<(u64, u64)>>,
    /// Half-open ranges a fin lacks (fin → 0x80; status when the size is known).
    pub missing: Option<Vec<(u64, u64)>>,
    /// `receiving`, `assembling`, `complete`, `cancelled`, `unknown` (status).
    pub state: Option<String>,
    pub meta: Option<FileMeta>,
}

impl FtOutcome {
    fn new(reason: FtReason) -> FtOutcome {
        FtOutcome {
            reason,
            description: None,
            ranges: None,
            missing: None,
            state: None,
            meta: None,
        }
    }

    fn ok() -> FtOutcome {
        FtOutcome::new(FtReason::Success)
    }

    fn with(reason: FtReason, description: impl Into<String>) -> FtOutcome {
        FtOutcome {
            description: Some(description.into()),
            ..FtOutcome::new(reason)
        }
    }

    fn state(mut self, state: &str) -> FtOutcome {
        self.state = Some(state.to_owned());
        self
    }
}

/// A transfer event for `$events/file/{clientId}/{fileId}`.
#[derive(Debug, Clone, PartialEq)]
pub struct FtEvent {
    pub topic: String,
    /// JSON, see [`EventBody`].
    pub payload: Bytes,
}

/// The JSON of an [`FtEvent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBody {
    /// `started`, `completed`, `aborted` or `failed`.
    pub event: String,
    pub client_id: String,
    pub file_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix seconds.
    pub time: u64,
}

/// Capacity of the event channel; events beyond it are dropped with a warning rather than stalling
/// uploads behind a slow consumer.
pub const EVENT_QUEUE: usize = 4096;

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
    pub state: String,
    pub started_at: u64,
    pub updated_at: u64,
    /// Bytes per second made durable over the last ~10 s.
    pub rate_bytes_per_sec: f64,
    pub meta: FileMeta,
}

/// A finished (exported, not yet expired) file, for the REST API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinishedInfo {
    pub manifest: Manifest,
    pub export_path: PathBuf,
    pub manifest_path: PathBuf,
}

/// Cached descriptors of transfers idle this long are closed by GC (bounds open files with many
/// devices).
const FD_IDLE: Duration = Duration::from_secs(60);

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
}

#[derive(Default)]
struct Registry {
    clients: HashMap<String, ClientEntry>,
    live_count: usize,
}

#[derive(Default)]
struct ClientEntry {
    live: HashMap<String, Arc<Transfer>>,
    finished: HashMap<String, Finished>,
    cancelled: HashMap<String, Cancelled>,
}

impl ClientEntry {
    fn is_empty(&self) -> bool {
        self.live.is_empty() && self.finished.is_empty() && self.cancelled.is_empty()
    }
}

#[derive(Clone)]
struct Finished {
    manifest: Manifest,
    dir: PathBuf,
}

#[derive(Clone)]
struct Cancelled {
    meta: FileMeta,
    at: u64,
    dir: PathBuf,
}

enum Lookup {
    Live(Arc<Transfer>),
    Cancelled(Cancelled),
    Finished(Finished),
    Unknown,
}

impl Registry {
    fn lookup(&self, client_id: &str, file_id: &str) -> Lookup {
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

    /// Removes `t` from the live set if it is still the registered incarnation.
    fn remove_live(&mut self, t: &Arc<Transfer>) -> bool {
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

    fn prune(&mut self, client_id: &str) {
        if self
            .clients
            .get(client_id)
            .is_some_and(ClientEntry::is_empty)
        {
            self.clients.remove(client_id);
        }
    }

    /// Bytes charged to a client, leaving out `except` (whose charge the caller computes itself).
    fn usage(&self, client_id: &str, except: Option<&Arc<Transfer>>) -> u64 {
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

/// 0x97 for a full disk, else `fallback`: the answer to a storage error.
fn storage_outcome(e: &io::Error, what: &str, fallback: FtReason) -> FtOutcome {
    let full = matches!(
        e.raw_os_error().map(rustix::io::Errno::from_raw_os_error),
        Some(rustix::io::Errno::NOSPC) | Some(rustix::io::Errno::DQUOT)
    );
    if full {
        FtOutcome::with(FtReason::Quota, format!("{what}: disk full"))
    } else {
        FtOutcome::with(fallback, format!("{what}: storage error: {e}"))
    }
}

impl FtService {
    /// Opens the store, recovering every transfer and finished file found on disk, and starts the
    /// committer thread (which ends when the last clone of the service is dropped). Call inside a
    /// tokio runtime.
    pub fn open(cfg: FtConfig) -> Result<(FtService, mpsc::Receiver<FtEvent>), FtError> {
        std::fs::create_dir_all(&cfg.store_dir)
            .map_err(io_err(format!("create {}", cfg.store_dir.display())))?;
        std::fs::create_dir_all(&cfg.export_root)
            .map_err(io_err(format!("create {}", cfg.export_root.display())))?;
        let now = now_unix();
        let mut reg = Registry::default();
        for (manifest, dir) in disk::scan_exports(&cfg.export_root)
            .map_err(io_err(format!("scan {}", cfg.export_root.display())))?
        {
            let c = reg.clients.entry(manifest.client_id.clone()).or_default();
            c.finished
                .insert(manifest.file_id.clone(), Finished { manifest, dir });
        }
        let found = disk::scan_store(&cfg.store_dir, &cfg.export_root, now)
            .map_err(io_err(format!("scan {}", cfg.store_dir.display())))?;
        let mut live = 0usize;
        for f in found {
            match f {
                Found::Live {
                    rec,
                    dir,
                    held,
                    updated_at,
                } => {
                    let (client_id, file_id) = (rec.client_id.clone(), rec.file_id.clone());
                    let t = Transfer::new(rec, dir, held, Phase::Receiving, updated_at);
                    let c = reg.clients.entry(client_id).or_default();
                    c.live.insert(file_id, Arc::new(t));
                    live += 1;
                }
                Found::Finished { manifest, dir } => {
                    let c = reg.clients.entry(manifest.client_id.clone()).or_default();
                    c.finished
                        .insert(manifest.file_id.clone(), Finished { manifest, dir });
                }
                Found::Cancelled { rec, dir, at } => {
                    let c = reg.clients.entry(rec.client_id).or_default();
                    c.cancelled.insert(
                        rec.file_id,
                        Cancelled {
                            meta: rec.meta,
                            at,
                            dir,
                        },
                    );
                }
            }
        }
        reg.live_count = live;
        tracing::info!(transfers = live, "file-transfer store opened");
        let commit_tx = commit::spawn().map_err(io_err("start the committer thread"))?;
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let free = Arc::new(disk::FreeSpace::new(cfg.store_dir.clone()));
        let inner = Inner {
            cfg,
            reg: Mutex::new(reg),
            commit_tx,
            events,
            free,
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

    /// Runs one command. The work runs in its own task, so a caller that stops waiting (its
    /// connection closed) never leaves a transfer half-initialised or half-published.
    pub async fn handle(&self, client_id: &str, topic: &FtTopic, payload: Bytes) -> FtOutcome {
        let svc = self.clone();
        let client_id = client_id.to_owned();
        let file_id = topic.file_id.as_str().to_owned();
        let command = topic.command.clone();
        let span = tracing::debug_span!("ft", client_id = %client_id, file_id = %file_id);
        let task = tokio::spawn(
            async move {
                match command {
                    Command::Init => svc.init(&client_id, &file_id, &payload).await,
                    Command::Segment { offset, checksum } => {
                        svc.segment(&client_id, &file_id, offset, checksum, payload)
                            .await
                    }
                    Command::Fin { size, checksum } => {
                        svc.fin(&client_id, &file_id, size, checksum).await
                    }
                    Command::Abort => svc.abort(&client_id, &file_id).await,
                    Command::Status => svc.status_or_init(&client_id, &file_id, &payload).await,
                }
            }
            .instrument(span),
        );
        match task.await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(error = %e, "file-transfer command task failed");
                FtOutcome::with(FtReason::Quota, "internal error: retry later")
            }
        }
    }

    fn lookup(&self, client_id: &str, file_id: &str) -> Lookup {
        lock(&self.inner.reg).lookup(client_id, file_id)
    }

    fn emit(&self, kind: &str, client_id: &str, file_id: &str, name: &str, fill: EventFill) {
        let body = EventBody {
            event: kind.to_owned(),
            client_id: client_id.to_owned(),
            file_id: file_id.to_owned(),
            name: name.to_owned(),
            size: fill.size,
            sha256: fill.sha256,
            export_path: fill.export_path,
            reason: fill.reason,
            time: now_unix(),
        };
        let payload = match serde_json::to_vec(&body) {
            Ok(p) => Bytes::from(p),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode event");
                return;
            }
        };
        let ev = FtEvent {
            topic: format!("{}{client_id}/{file_id}", quicft_proto::ft::EVENTS_PREFIX),
            payload,
        };
        match self.inner.events.try_send(ev) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(event = kind, "event queue full: event dropped")
            }
        }
    }

    // ---------------------------------------------------------------- init

    async fn init(&self, client_id: &str, file_id: &str, payload: &[u8]) -> FtOutcome {
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
                            .state("complete");
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
                        reg.clients
                            .entry(client_id.to_owned())
                            .or_default()
                            .live
                            .insert(file_id.to_owned(), t.clone());
                        reg.live_count += 1;
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
                    if st.phase == Phase::Gone {
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
        let rec = TransferRecord {
            client_id: t.client_id.clone(),
            file_id: t.file_id.clone(),
            meta: t.meta.clone(),
            started_at: t.started_at,
        };
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
            {
                let mut reg = lock(&self.inner.reg);
                lock(&t.st).phase = Phase::Gone;
                reg.remove_live(&t);
                reg.prune(&t.client_id);
            }
            t.close_files(true);
            return out;
        }
        lock(&t.st).phase = Phase::Receiving;
        tracing::info!(name = %t.meta.name, size = ?t.meta.size, "transfer started");
        self.emit(
            "started",
            &t.client_id,
            &t.file_id,
            &t.meta.name,
            EventFill {
                size: t.meta.size,
                ..EventFill::default()
            },
        );
        FtOutcome::ok()
    }

    // ---------------------------------------------------------------- segment

    async fn segment(
        &self,
        client_id: &str,
        file_id: &str,
        offset: u64,
        checksum: Option<Sha256>,
        payload: Bytes,
    ) -> FtOutcome {
        let cfg = &self.inner.cfg;
        let Some(end) = offset.checked_add(payload.len() as u64) else {
            return FtOutcome::with(FtReason::Cancel, "segment end overflows");
        };
        let (t, guard, ranges) = loop {
            let (t, others) = {
                let reg = lock(&self.inner.reg);
                match reg.lookup(client_id, file_id) {
                    Lookup::Live(t) => {
                        let others = reg.usage(client_id, Some(&t));
                        (t, others)
                    }
                    other => return after_gone(other, end),
                }
            };
            if end > cfg.max_file_size {
                return FtOutcome::with(
                    FtReason::Cancel,
                    format!(
                        "segment ends at {end}, beyond the file size limit of {} bytes",
                        cfg.max_file_size
                    ),
                );
            }
            let phase = lock(&t.st).phase;
            match phase {
                Phase::Receiving => {}
                Phase::Gone => continue,
                Phase::Initializing | Phase::Assembling => {
                    let _op = t.op.lock().await;
                    continue;
                }
            }
            if let Some(size) = t.meta.size {
                if end > size {
                    return FtOutcome::with(
                        FtReason::Cancel,
                        format!("segment ends at {end}, beyond the declared size {size}"),
                    );
                }
            }
            // The lock is held in this block only: no await may happen while it is.
            {
                let mut st = lock(&t.st);
                if st.phase != Phase::Receiving {
                    continue;
                }
                let new = st.held.missing_in(offset, end);
                st.updated_at = now_unix();
                if !new.is_empty() {
                    let new_bytes: u64 = new.iter().map(|&(s, e)| e - s).sum();
                    let charge = t
                        .meta
                        .size
                        .unwrap_or(0)
                        .max(st.held.covered_len() + st.inflight_bytes + new_bytes);
                    if others.saturating_add(charge) > cfg.client_quota {
                        return FtOutcome::with(
                            FtReason::Quota,
                            format!(
                                "client storage quota of {} bytes exceeded",
                                cfg.client_quota
                            ),
                        );
                    }
                    let guard = t.admit(&mut st, &new);
                    break (t.clone(), guard, new);
                }
            }
            // Nothing new to store, but a segment that does not match its own checksum is a
            // corrupt send the device must hear about (0x80), whatever the server holds.
            if let Some(sum) = checksum {
                let payload = payload.clone();
                let ok = tokio::task::spawn_blocking(move || {
                    sha2::Sha256::digest(&payload).as_slice() == sum.0.as_slice()
                })
                .await
                .unwrap_or(false);
                if !ok {
                    return FtOutcome::with(FtReason::Retransmit, "segment checksum mismatch");
                }
            }
            return FtOutcome::ok();
        };

        // Verify and write off the async threads. Nothing is written when the checksum is wrong.
        let written = {
            let (t, payload, ranges) = (t.clone(), payload.clone(), ranges.clone());
            let free = self.inner.free.clone();
            let min_free = cfg.min_free_disk;
            tokio::task::spawn_blocking(move || -> Result<_, SegmentError> {
                if let Some(sum) = checksum {
                    if sha2::Sha256::digest(&payload).as_slice() != sum.0.as_slice() {
                        return Err(SegmentError::Checksum);
                    }
                }
                let new_bytes: u64 = ranges.iter().map(|&(s, e)| e - s).sum();
                if !free.admit(new_bytes, min_free).map_err(SegmentError::Io)? {
                    return Err(SegmentError::DiskFull);
                }
                let files = t.files().map_err(SegmentError::Io)?;
                for &(s, e) in &ranges {
                    let (from, to) = (to_index(s - offset), to_index(e - offset));
                    let bytes = payload.get(from..to).ok_or(SegmentError::Bounds)?;
                    t.write_at(&files, s, bytes).map_err(SegmentError::Io)?;
                }
                Ok((files, guard))
            })
            .await
        };
        let (files, guard) = match written {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return self.segment_error(&t, e, end).await,
            Err(e) => {
                tracing::error!(error = %e, "segment write task failed");
                return FtOutcome::with(FtReason::Retransmit, "internal error");
            }
        };

        let (done_tx, done_rx) = oneshot::channel();
        let job = CommitJob {
            t: t.clone(),
            files,
            ranges: ranges.clone(),
            guard,
            done: done_tx,
        };
        if self.inner.commit_tx.send(job).await.is_err() {
            return FtOutcome::with(FtReason::Quota, "storage committer stopped: retry later");
        }
        match done_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return self.segment_error(&t, SegmentError::Io(e), end).await,
            Err(_) => return FtOutcome::with(FtReason::Quota, "storage committer stopped"),
        }
        let new_bytes: u64 = ranges.iter().map(|&(s, e)| e - s).sum();
        {
            let mut st = lock(&t.st);
            let now = Instant::now();
            st.record_rate(new_bytes, now);
            st.last_io = now;
            st.updated_at = now_unix();
        }
        // The running hash takes the bytes from memory, in offset order, on a blocking thread; the
        // acknowledgement does not wait for it (fin does).
        let pieces = ranges
            .iter()
            .map(|&(s, e)| (s, payload.slice(to_index(s - offset)..to_index(e - offset))))
            .collect();
        t.feed_hash(pieces);
        // Durable. If an abort or cancel raced with it, say what the device must do now.
        if lock(&t.st).phase == Phase::Gone {
            return after_gone(self.lookup(client_id, file_id), end);
        }
        FtOutcome::ok()
    }

    async fn segment_error(&self, t: &Arc<Transfer>, e: SegmentError, end: u64) -> FtOutcome {
        if lock(&t.st).phase == Phase::Gone {
            return after_gone(self.lookup(&t.client_id, &t.file_id), end);
        }
        match e {
            SegmentError::Io(e) if e.kind() == io::ErrorKind::NotFound => {
                match t.op.clone().try_lock_owned() {
                    Ok(_op) => self.lost(t, &e).await,
                    // fin, abort or GC holds it and finds out for itself.
                    Err(_) => lost_outcome(),
                }
            }
            SegmentError::Checksum => {
                FtOutcome::with(FtReason::Retransmit, "segment checksum mismatch")
            }
            SegmentError::DiskFull => FtOutcome::with(
                FtReason::Quota,
                "free disk space below the server's watermark",
            ),
            SegmentError::Bounds => FtOutcome::with(FtReason::Retransmit, "internal error"),
            SegmentError::Io(e) => {
                tracing::error!(error = %e, "segment not stored");
                storage_outcome(&e, "segment", FtReason::Retransmit)
            }
        }
    }

    // ---------------------------------------------------------------- fin

    async fn fin(
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
            let mut st = lock(&t.st);
            if st.phase != Phase::Receiving {
                continue;
            }
            st.phase = Phase::Assembling;
            drop(st);
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
            lock(&t.st).phase = Phase::Receiving;
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
                lock(&t.st).phase = Phase::Receiving;
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
        let cfg = &self.inner.cfg;
        let rec = TransferRecord {
            client_id: t.client_id.clone(),
            file_id: t.file_id.clone(),
            meta: t.meta.clone(),
            started_at: t.started_at,
        };
        let fin = FinRecord {
            size,
            sha256: sha256.clone(),
            finished_at: now_unix(),
        };
        // No writer is left (fin waited for those in flight, new ones wait for the op lock); drop the
        // cached descriptors anyway so none outlives the rename.
        t.close_files(false);
        let (root, tdir) = (cfg.export_root.clone(), t.dir.clone());
        let published = blocking(move || disk::publish(&root, &tdir, &rec, &fin, true)).await;
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
            lock(&t.st).phase = Phase::Gone;
            reg.remove_live(t);
            reg.clients
                .entry(t.client_id.clone())
                .or_default()
                .finished
                .insert(t.file_id.clone(), Finished { manifest, dir });
        }
        tracing::info!(size, sha256 = %sha256, path = %export_path.display(), "transfer completed");
        self.emit(
            "completed",
            &t.client_id,
            &t.file_id,
            &t.meta.name,
            EventFill {
                size: Some(size),
                sha256: Some(sha256),
                export_path: Some(export_path.display().to_string()),
                reason: None,
            },
        );
        FtOutcome::ok().state("complete")
    }

    /// A complete transfer that cannot be published as is: delete it, tell the device and the cloud.
    async fn fail(&self, t: &Arc<Transfer>, why: String) -> FtOutcome {
        tracing::warn!(reason = %why, "transfer failed");
        self.discard(t).await;
        self.emit(
            "failed",
            &t.client_id,
            &t.file_id,
            &t.meta.name,
            EventFill {
                size: t.meta.size,
                reason: Some(why.clone()),
                ..EventFill::default()
            },
        );
        FtOutcome::with(FtReason::Cancel, why)
    }

    /// Takes a live transfer out of the registry and deletes its directory. Call with its op lock.
    /// The transfer's files vanished under the server (deleted by hand, a clean-up job): no usable
    /// state is left, so the device restarts from 0 (DESIGN §2: 0x10), never "retry later". The
    /// caller holds the transfer's op lock.
    async fn lost(&self, t: &Arc<Transfer>, e: &io::Error) -> FtOutcome {
        tracing::error!(error = %e, "transfer files are gone");
        self.discard(t).await;
        lost_outcome()
    }

    async fn discard(&self, t: &Arc<Transfer>) {
        {
            let mut reg = lock(&self.inner.reg);
            lock(&t.st).phase = Phase::Gone;
            reg.remove_live(t);
            reg.prune(&t.client_id);
        }
        t.close_files(true);
        let dir = t.dir.clone();
        if let Err(e) = blocking(move || disk::remove_dir(&dir)).await {
            tracing::error!(error = %e, "cannot delete transfer data");
        }
    }

    // ---------------------------------------------------------------- abort, cancel, status

    async fn abort(&self, client_id: &str, file_id: &str) -> FtOutcome {
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
            if lock(&t.st).phase == Phase::Gone {
                continue;
            }
            self.discard(&t).await;
            tracing::info!("transfer aborted by the device");
            self.emit(
                "aborted",
                &t.client_id,
                &t.file_id,
                &t.meta.name,
                EventFill {
                    size: t.meta.size,
                    reason: Some("aborted by the device".into()),
                    ..EventFill::default()
                },
            );
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
            if lock(&t.st).phase == Phase::Gone {
                continue;
            }
            let at = now_unix();
            {
                let mut reg = lock(&self.inner.reg);
                lock(&t.st).phase = Phase::Gone;
                reg.remove_live(&t);
                reg.clients
                    .entry(t.client_id.clone())
                    .or_default()
                    .cancelled
                    .insert(
                        t.file_id.clone(),
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
            self.emit(
                "aborted",
                &t.client_id,
                &t.file_id,
                &t.meta.name,
                EventFill {
                    size: t.meta.size,
                    reason: Some("cancelled by the operator".into()),
                    ..EventFill::default()
                },
            );
            return Ok(());
        }
    }

    /// `status`, and with init's JSON as its payload (a quicft extension) a transfer the server
    /// knows nothing of is initialised first: a device that may or may not be resuming learns what
    /// the server holds in one round trip instead of status, then init. A transfer the server does
    /// know (live, finished or cancelled) is only reported, never re-initialised, so the device
    /// still sees a different file held under the same id before anything replaces it.
    async fn status_or_init(&self, client_id: &str, file_id: &str, payload: &[u8]) -> FtOutcome {
        if !payload.is_empty() && matches!(self.lookup(client_id, file_id), Lookup::Unknown) {
            let out = self.init(client_id, file_id, payload).await;
            if out.reason != FtReason::Success {
                return out;
            }
        }
        self.status(client_id, file_id)
    }

    fn status(&self, client_id: &str, file_id: &str) -> FtOutcome {
        // A transfer turns `Gone` under the registry lock as it leaves the registry; seeing it here
        // means that happened since the lookup, which a second lookup sees.
        let mut found = self.lookup(client_id, file_id);
        for _ in 0..2 {
            let Lookup::Live(t) = &found else { break };
            let st = lock(&t.st);
            let state = match st.phase {
                Phase::Initializing => "initializing",
                Phase::Receiving => "receiving",
                Phase::Assembling => "assembling",
                Phase::Gone => {
                    drop(st);
                    found = self.lookup(client_id, file_id);
                    continue;
                }
            };
            let mut out = FtOutcome::ok().state(state);
            out.ranges = Some(st.held.to_vec());
            out.missing = t.meta.size.map(|s| st.held.missing(s));
            out.meta = Some(t.meta.clone());
            return out;
        }
        match found {
            Lookup::Live(_) => {
                FtOutcome::with(FtReason::Restart, "transfer is being removed").state("unknown")
            }
            Lookup::Finished(f) => {
                let size = f.manifest.size;
                let mut out = FtOutcome::ok().state("complete");
                out.ranges = Some(if size > 0 { vec![(0, size)] } else { vec![] });
                out.missing = Some(vec![]);
                out.meta = Some(f.manifest.meta);
                out
            }
            Lookup::Cancelled(c) => {
                let mut out = cancelled_outcome().state("cancelled");
                out.meta = Some(c.meta);
                out
            }
            Lookup::Unknown => {
                FtOutcome::with(FtReason::Restart, "unknown transfer").state("unknown")
            }
        }
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
                    state: match st.phase {
                        Phase::Initializing => "initializing",
                        Phase::Receiving | Phase::Gone => "receiving",
                        Phase::Assembling => "assembling",
                    }
                    .to_owned(),
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
                export_path: f.manifest.file_path(&f.dir),
                manifest_path: f.dir.join(disk::MANIFEST_FILE),
                manifest: f.manifest.clone(),
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

    // ---------------------------------------------------------------- GC

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
                    let expired = f.manifest.expire_at.is_some_and(|at| at <= now_unix);
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
                let quiet = st.phase == Phase::Receiving && st.inflight.is_empty();
                (
                    quiet && st.updated_at.saturating_add(ttl) <= now_unix,
                    quiet && st.last_io.elapsed() >= FD_IDLE,
                )
            };
            if stale {
                tracing::info!(client_id = %t.client_id, file_id = %t.file_id, "transfer expired");
                self.discard(&t).await;
                self.emit(
                    "aborted",
                    &t.client_id,
                    &t.file_id,
                    &t.meta.name,
                    EventFill {
                        size: t.meta.size,
                        reason: Some("expired".into()),
                        ..EventFill::default()
                    },
                );
            } else if idle_fd && t.files_open() {
                t.close_files(false);
            }
        }
        for f in expired_exports {
            tracing::info!(client_id = %f.manifest.client_id, file_id = %f.manifest.file_id, "export expired");
            let dir = f.dir.clone();
            if let Err(e) = blocking(move || disk::remove_dir(&dir)).await {
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

/// Puts a transfer that is still assembling back to receiving when fin ends without finishing it, even
/// by a panic, so that segments waiting on it do not spin.
struct AssemblingGuard<'a>(&'a Transfer);

impl Drop for AssemblingGuard<'_> {
    fn drop(&mut self) {
        let mut st = lock(&self.0.st);
        if st.phase == Phase::Assembling {
            st.phase = Phase::Receiving;
        }
    }
}

/// Takes a transfer whose init did not complete out of the registry (normally done explicitly; this
/// covers a panic).
struct CreatingGuard<'a> {
    svc: &'a FtService,
    t: &'a Arc<Transfer>,
}

impl Drop for CreatingGuard<'_> {
    fn drop(&mut self) {
        let mut reg = lock(&self.svc.inner.reg);
        let mut st = lock(&self.t.st);
        if st.phase == Phase::Initializing {
            st.phase = Phase::Gone;
            drop(st);
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

enum SegmentError {
    Checksum,
    DiskFull,
    Bounds,
    Io(io::Error),
}

#[derive(Default)]
struct EventFill {
    size: Option<u64>,
    sha256: Option<String>,
    export_path: Option<String>,
    reason: Option<String>,
}

fn to_index(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn cancelled_outcome() -> FtOutcome {
    FtOutcome::with(FtReason::Cancel, "transfer cancelled by the operator")
}

/// The outcome for a segment ending at `end` when the transfer is not (or no longer) live.
fn lost_outcome() -> FtOutcome {
    FtOutcome::with(
        FtReason::Restart,
        "stored data for this transfer is lost: init it and restart from offset 0",
    )
}

fn after_gone(found: Lookup, end: u64) -> FtOutcome {
    match found {
        Lookup::Cancelled(_) => cancelled_outcome(),
        Lookup::Finished(f) if end <= f.manifest.size => {
            FtOutcome::with(FtReason::Success, "already complete")
        }
        Lookup::Finished(_) => FtOutcome::with(
            FtReason::Cancel,
            "segment beyond the size of the finished file",
        ),
        Lookup::Live(_) | Lookup::Unknown => FtOutcome::with(
            FtReason::Restart,
            "unknown transfer: init it and restart from offset 0",
        ),
    }
}

/// A repeated fin of a finished file: 0x00 when it describes the same file.
fn fin_of_finished(m: &Manifest, size: u64, checksum: Option<Sha256>) -> FtOutcome {
    let sum_ok = checksum.is_none_or(|c| c.to_hex() == m.sha256);
    if size == m.size && sum_ok {
        FtOutcome::with(FtReason::Success, "already complete").state("complete")
    } else {
        FtOutcome::with(
            FtReason::Cancel,
            "fin does not match the file already completed with this id",
        )
    }
}
