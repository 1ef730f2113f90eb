//! The broker's state on disk: retained messages and persistent sessions (their expiry,
//! subscriptions and queued QoS 1/2 deliveries) in one redb file, `<data_dir>/broker.redb`.
//!
//! Why redb: an embedded, pure-Rust, actively maintained key-value store with ACID transactions
//! whose commits survive a power cut (copy-on-write B-trees, checksummed, two-slot commit) and
//! that detects a damaged file rather than reading garbage. No C toolchain or SQL layer is needed
//! (rusqlite would bring both) for what is four key-value tables. The file is locked while open,
//! so two servers cannot share a data directory's broker state by accident.
//!
//! The store is written only by the flusher (`persist.rs`), one transaction per batch of changes,
//! and read once, at start. Records are encoded by `record.rs`.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use redb::{Builder, Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::message::{Delivery, Message};
use super::record::{self, SessionMeta};
use super::subscriptions::Subscription;

/// topic → message
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
/// client id → session meta
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// (client id, filter) → subscription
const SUBSCRIPTIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("subscriptions");
/// (client id, sequence number) → delivery
const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");

/// The file name under the data directory.
pub const FILE_NAME: &str = "broker.redb";

/// Why the store cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "broker state file {path} cannot be read ({detail}). It may be damaged (truncated or \
         overwritten). To start with empty broker state (retained messages and persistent \
         sessions are lost; file transfers are not affected), move the file away, or restore it \
         from a backup; or set [persistence] enabled = false"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error("broker state file {path} is in use by another process (is another quicft server running on this data directory?)")]
    InUse { path: PathBuf },
    #[error("broker state file {path}: {detail}")]
    Io { path: PathBuf, detail: String },
}

/// One persistent session as it was stored.
pub struct StoredSession {
    pub client_id: String,
    pub meta: SessionMeta,
    pub subscriptions: Vec<Subscription>,
    /// In sequence order (the order they were queued).
    pub queue: Vec<Delivery>,
}

/// Everything read back at start.
#[derive(Default)]
pub struct Restored {
    pub retained: Vec<Message>,
    pub sessions: Vec<StoredSession>,
    /// The highest delivery sequence number in use.
    pub max_seq: u64,
}

/// Changes to write, in one transaction. Encoded records, so that encoding happens outside the
/// broker's lock.
#[derive(Default)]
pub struct Batch {
    pub retained: Vec<(String, Option<Vec<u8>>)>,
    pub sessions: Vec<SessionBatch>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.retained.is_empty() && self.sessions.is_empty()
    }
}

/// One session's changes: first wipe what is stored (the session ended), then the rest.
pub struct SessionBatch {
    pub client_id: String,
    pub wipe: bool,
    pub meta: Option<Vec<u8>>,
    pub subscriptions: Vec<(String, Option<Vec<u8>>)>,
    pub queue: Vec<(u64, Option<Vec<u8>>)>,
}

/// The open store.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the store in `data_dir` and reads it back.
    pub fn open(data_dir: &Path) -> Result<(Store, Restored), StoreError> {
        let path = data_dir.join(FILE_NAME);
        let damaged = |detail: String| StoreError::Damaged {
            path: path.clone(),
            detail,
        };
        // Every page's checksum is verified at open: a file altered behind redb's back (a
        // truncated copy, a bad disk, a stray write) is refused rather than trusted, where a plain
        // open may panic on it. This reads the whole file once per start.
        let db = match Builder::new()
            .set_check_integrity_on_open(true)
            .create(&path)
        {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::InUse { path });
            }
            // Not a redb file at all is reported as invalid data: that is damage too.
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() != std::io::ErrorKind::InvalidData =>
            {
                return Err(StoreError::Io {
                    path,
                    detail: e.to_string(),
                });
            }
            Err(e) => return Err(damaged(e.to_string())),
        };
        let store = Store {
            db,
            path: path.clone(),
        };
        // Tables exist from the first start on, so reading never meets a missing one.
        store
            .write(Batch::default())
            .map_err(|e| damaged(e.to_string()))?;
        let restored = store.read().map_err(|e| damaged(e.to_string()))?;
        Ok((store, restored))
    }

    fn read(&self) -> Result<Restored, Box<dyn std::error::Error>> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let txn = self.db.begin_read()?;
        let mut out = Restored::default();
        for row in txn.open_table(RETAINED)?.iter()? {
            let (topic, value) = row?;
            let m = record::decode_message(value.value(), now, wall)
                .map_err(|e| format!("retained message {:?}: {e}", topic.value()))?;
            out.retained.push(m);
        }
        let subs = txn.open_table(SUBSCRIPTIONS)?;
        let queue = txn.open_table(QUEUE)?;
        for row in txn.open_table(SESSIONS)?.iter()? {
            let (id, value) = row?;
            let client_id = id.value().to_owned();
            let meta = record::decode_meta(value.value())
                .map_err(|e| format!("session {client_id:?}: {e}"))?;
            let mut s = StoredSession {
                client_id,
                meta,
                subscriptions: Vec::new(),
                queue: Vec::new(),
            };
            let id = s.client_id.as_str();
            for row in subs.range((id, "")..)? {
                let (k, v) = row?;
                let (client, filter) = k.value();
                if client != id {
                    break;
                }
                let sub = record::decode_subscription(filter, v.value())
                    .map_err(|e| format!("subscription {filter:?} of {id:?}: {e}"))?;
                s.subscriptions.push(sub);
            }
            for row in queue.range((id, 0)..=(id, u64::MAX))? {
                let (k, v) = row?;
                let seq = k.value().1;
                out.max_seq = out.max_seq.max(seq);
                let d = record::decode_delivery(seq, v.value(), now, wall)
                    .map_err(|e| format!("queued message {seq} of {id:?}: {e}"))?;
                s.queue.push(d);
            }
            out.sessions.push(s);
        }
        Ok(out)
    }

    /// Writes one batch in one durable transaction.
    pub fn write(&self, batch: Batch) -> Result<(), StoreError> {
        self.write_inner(batch).map_err(|e| StoreError::Io {
            path: self.path.clone(),
            detail: e.to_string(),
        })
    }

    fn write_inner(&self, batch: Batch) -> Result<(), Box<dyn std::error::Error>> {
        let txn = self.db.begin_write()?;
        {
            let mut retained = txn.open_table(RETAINED)?;
            for (topic, value) in &batch.retained {
                match value {
                    Some(v) => retained.insert(topic.as_str(), v.as_slice())?,
                    None => retained.remove(topic.as_str())?,
                };
            }
            let mut sessions = txn.open_table(SESSIONS)?;
            let mut subs = txn.open_table(SUBSCRIPTIONS)?;
            let mut queue = txn.open_table(QUEUE)?;
            for s in &batch.sessions {
                let id = s.client_id.as_str();
                if s.wipe {
                    sessions.remove(id)?;
                    let filters: Vec<String> = subs
                        .range((id, "")..)?
                        .map_while(|row| {
                            let (k, _) = row.ok()?;
                            let (client, filter) = k.value();
                            (client == id).then(|| filter.to_owned())
                        })
                        .collect();
                    for f in &filters {
                        subs.remove((id, f.as_str()))?;
                    }
                    queue.retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
                }
                if let Some(meta) = &s.meta {
                    sessions.insert(id, meta.as_slice())?;
                }
                for (filter, value) in &s.subscriptions {
                    match value {
                        Some(v) => subs.insert((id, filter.as_str()), v.as_slice())?,
                        None => subs.remove((id, filter.as_str()))?,
                    };
                }
                for (seq, value) in &s.queue {
                    match value {
                        Some(v) => queue.insert((id, *seq), v.as_slice())?,
                        None => queue.remove((id, *seq))?,
                    };
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}
