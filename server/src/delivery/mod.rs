//! Cloud-to-device delivery (DESIGN §7): an operator stores a file for a set of devices (REST,
//! `http::deliveries`), devices fetch it — over AWS IoT's MQTT-based file delivery (`aws`) — and
//! the delivery keeps each device's state.
//!
//! * `store`: the files and records on disk, ids and paths.
//! * `targets`: which client ids a delivery is for (ids and `truck-*` patterns).
//! * `state`: a device's state for a delivery.
//! * `aws`: answering `$aws/things/{clientId}/streams/{deliveryId}/…` requests.
//! * `notify`: `$file-delivery/notify/{clientId}` on creation, device status reports.
//!
//! Records live in memory behind one lock and are written back by one task ([`DeliveryService::saver`])
//! whenever a device's state changed, so writes of one record never race and a busy download
//! does not write per block. Creating and deleting are written through before they are answered.

mod aws;
mod notify;
mod state;
mod store;
mod targets;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, Semaphore};

pub(crate) use aws::StreamRequest;
pub use state::{DeviceProgress, DeviceState};
pub use store::Record;
pub use targets::{TargetError, Targets};

use crate::broker::Broker;
use crate::clients::Clients;

/// The largest file a delivery may hold.
pub const MAX_SIZE: u64 = 4 << 30;
/// The stream version devices see (`s`): a delivery never changes; a new version is a new delivery.
pub const STREAM_VERSION: u64 = 1;

/// Why a delivery could not be created or changed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Targets(#[from] TargetError),
    #[error("the file is larger than {MAX_SIZE} bytes")]
    TooLarge,
    #[error("the body's SHA-256 is {actual}, not the {expected} given")]
    Sha256Mismatch { expected: String, actual: String },
    #[error("reading the body: {0}")]
    Body(String),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
}

/// What the operator gives besides the bytes.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub name: String,
    pub version: String,
    pub targets: Targets,
    pub expires_at: Option<u64>,
    /// When given, the upload is refused unless the bytes have this SHA-256 (hex).
    pub sha256: Option<String>,
}

/// The delivery service. Cheap to clone.
#[derive(Clone)]
pub struct DeliveryService {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    entries: Mutex<HashMap<String, Entry>>,
    /// Records changed since they were last written.
    dirty: Mutex<BTreeSet<String>>,
    wake: Notify,
    broker: Arc<Broker>,
    /// Connected clients, for notifying those a pattern targets.
    clients: Arc<Clients>,
    /// Requests being answered per client (`aws::MAX_INFLIGHT_PER_CLIENT`).
    busy: Mutex<HashMap<Arc<str>, usize>>,
    /// One permit per byte of block data read and not yet encoded.
    memory: Arc<Semaphore>,
    /// Per client, one permit per byte of answers not yet written to it (`aws`).
    budgets: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
    /// One permit per byte of answers not yet written, server-wide.
    queued: Arc<Semaphore>,
}

struct Entry {
    record: Record,
    targets: Targets,
    dir: PathBuf,
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl DeliveryService {
    /// Opens (or creates) `{data_dir}/deliveries`.
    pub fn open(
        data_dir: &std::path::Path,
        broker: Arc<Broker>,
        clients: Arc<Clients>,
    ) -> std::io::Result<DeliveryService> {
        let root = data_dir.join("deliveries");
        let mut entries = HashMap::new();
        for (record, dir) in store::load_all(&root)? {
            let targets = match Targets::new(record.targets.clone()) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(id = record.id, error = %e, "delivery with bad targets skipped");
                    continue;
                }
            };
            entries.insert(
                record.id.clone(),
                Entry {
                    record,
                    targets,
                    dir,
                },
            );
        }
        tracing::info!(deliveries = entries.len(), "deliveries loaded");
        Ok(DeliveryService {
            inner: Arc::new(Inner {
                root,
                entries: Mutex::new(entries),
                dirty: Mutex::default(),
                wake: Notify::new(),
                broker,
                clients,
                busy: Mutex::default(),
                memory: Arc::new(Semaphore::new(aws::MAX_BLOCK_MEMORY)),
                budgets: Mutex::default(),
                queued: Arc::new(Semaphore::new(aws::MAX_QUEUED_BYTES)),
            }),
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores a new delivery from `body`, streamed to disk with its SHA-256 computed on the way.
    pub async fn create<S, E>(&self, new: NewDelivery, mut body: S) -> Result<Record, DeliveryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if new.name.is_empty() || new.name.len() > 255 || new.name.chars().any(char::is_control) {
            return Err(DeliveryError::Invalid(
                "name: 1 to 255 characters, no control characters".into(),
            ));
        }
        if new.version.len() > 64 || new.version.chars().any(char::is_control) {
            return Err(DeliveryError::Invalid(
                "version: at most 64 characters, no control characters".into(),
            ));
        }
        let id = store::new_id()?;
        let part = self.inner.root.join(format!("{id}.part"));
        tokio::fs::create_dir_all(&part).await?;
        let result = async {
            let mut file = tokio::fs::File::create(part.join(store::CONTENT)).await?;
            let mut hash = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| DeliveryError::Body(e.to_string()))?;
                size += chunk.len() as u64;
                if size > MAX_SIZE {
                    return Err(DeliveryError::TooLarge);
                }
                hash.update(&chunk);
                file.write_all(&chunk).await?;
            }
            file.sync_all().await?;
            let sha256 = hex::encode(hash.finalize());
            if let Some(expected) = &new.sha256 {
                if !expected.eq_ignore_ascii_case(&sha256) {
                    return Err(DeliveryError::Sha256Mismatch {
                        expected: expected.clone(),
                        actual: sha256,
                    });
                }
            }
            let now = now_secs();
            let devices = new
                .targets
                .exact()
                .map(|c| (c.to_owned(), DeviceProgress::new(DeviceState::Pending, now)))
                .collect();
            let record = Record {
                id: id.clone(),
                name: new.name.clone(),
                version: new.version.clone(),
                size,
                sha256,
                created_at: now,
                expires_at: new.expires_at,
                targets: new.targets.as_list().to_vec(),
                devices,
            };
            let (dir, final_dir, r) = (part.clone(), self.inner.root.join(&id), record.clone());
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                store::save(&dir, &r)?;
                std::fs::rename(&dir, &final_dir)?;
                store::sync_dir(final_dir.parent().unwrap_or(&final_dir))
            })
            .await
            .map_err(std::io::Error::other)??;
            Ok(record)
        }
        .await;
        match result {
            Ok(record) => {
                let dir = self.inner.root.join(&id);
                self.entries().insert(
                    id,
                    Entry {
                        record: record.clone(),
                        targets: new.targets.clone(),
                        dir,
                    },
                );
                tracing::info!(
                    id = record.id,
                    name = record.name,
                    size = record.size,
                    "delivery created"
                );
                self.notify(&record, &new.targets);
                Ok(self.get(&record.id).unwrap_or(record))
            }
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&part).await;
                Err(e)
            }
        }
    }

    /// Every delivery, oldest first, with states as of now (see [`DeliveryService::get`]).
    pub fn list(&self) -> Vec<Record> {
        let now = now_secs();
        let mut all: Vec<Record> = self
            .entries()
            .values()
            .map(|e| view(&e.record, now))
            .collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        all
    }

    /// One delivery; a device not done with it when it expired shows as `expired`.
    pub fn get(&self, id: &str) -> Option<Record> {
        self.entries().get(id).map(|e| view(&e.record, now_secs()))
    }

    /// Removes a delivery and its file; false when there is none.
    pub async fn delete(&self, id: &str) -> std::io::Result<bool> {
        if !store::valid_id(id) {
            return Ok(false);
        }
        let Some(entry) = self.entries().remove(id) else {
            return Ok(false);
        };
        tokio::fs::remove_dir_all(&entry.dir).await?;
        tracing::info!(id, "delivery deleted");
        Ok(true)
    }

    /// What a device may fetch: the record and the content's path, when `id` exists, targets
    /// `client_id` and has not expired.
    fn for_device(&self, id: &str, client_id: &str) -> Result<(Record, PathBuf), Refusal> {
        let entries = self.entries();
        let e = entries.get(id).ok_or(Refusal::NotFound)?;
        if !e.targets.matches(client_id) {
            return Err(Refusal::NotTargeted);
        }
        if e.record.expires_at.is_some_and(|t| now_secs() >= t) {
            return Err(Refusal::Expired);
        }
        Ok((e.record.clone(), e.dir.join(store::CONTENT)))
    }

    /// Records what a device did; written back by the saver.
    fn progress(
        &self,
        id: &str,
        client_id: &str,
        state: DeviceState,
        sent: u64,
        reason: Option<String>,
    ) {
        let now = now_secs();
        {
            let mut entries = self.entries();
            let Some(e) = entries.get_mut(id) else { return };
            let size = e.record.size;
            let p = e
                .record
                .devices
                .entry(client_id.to_owned())
                .or_insert_with(|| DeviceProgress::new(DeviceState::Pending, now));
            p.bytes = p.bytes.saturating_add(sent).min(size);
            if p.state != state && p.state.may_become(state) {
                p.state = state;
                p.reason = reason;
            }
            p.updated_at = now;
        }
        self.inner
            .dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned());
        self.inner.wake.notify_one();
    }

    /// Writes changed records back, one at a time; runs until the server stops.
    pub async fn saver(self) {
        loop {
            self.inner.wake.notified().await;
            self.flush().await;
        }
    }

    /// Writes every changed record now (the saver's work; also at shutdown).
    pub async fn flush(&self) {
        let ids = std::mem::take(
            &mut *self
                .inner
                .dirty
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for id in ids {
            let snapshot = self
                .entries()
                .get(&id)
                .map(|e| (e.dir.clone(), e.record.clone()));
            let Some((dir, record)) = snapshot else {
                continue;
            };
            let r = tokio::task::spawn_blocking(move || store::save(&dir, &record)).await;
            if let Ok(Err(e)) = r {
                tracing::warn!(id, error = %e, "cannot write delivery record");
            }
        }
    }
}

/// Why a device may not fetch a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NotFound,
    NotTargeted,
    Expired,
}

/// The record as the API shows it now: expiry applied to devices not done.
fn view(r: &Record, now: u64) -> Record {
    let mut r = r.clone();
    if r.expires_at.is_some_and(|t| now >= t) {
        for p in r.devices.values_mut() {
            if !p.state.is_final() {
                p.state = DeviceState::Expired;
            }
        }
    }
    r
}
