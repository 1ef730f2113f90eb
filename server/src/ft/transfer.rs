//! One transfer in progress: its metadata, the ranges held durably, the writes in flight and the
//! running SHA-256 of its contiguous prefix.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use quicft_proto::ft::{FileMeta, RangeSet};
use sha2::{Digest, Sha256 as Hasher};
use tokio::sync::Notify;

use super::disk::{TransferRecord, DATA_FILE, JOURNAL_FILE};
use super::journal;

/// Locks a std mutex, ignoring poisoning: every critical section leaves its data consistent (no
/// panicking operation sits between two writes), so a panic elsewhere must not take the service down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a transfer is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Init is creating its files; other commands wait on the op lock.
    Initializing,
    Receiving,
    /// A fin is checking and publishing; segments wait on the op lock.
    Assembling,
    /// No longer in the registry: finished, aborted, cancelled, failed or expired. A command that finds
    /// this looks the transfer up again.
    Gone,
}

/// The two files of a transfer, opened together. Only the committer writes the journal.
pub(crate) struct OpenFiles {
    pub data: File,
    pub journal: File,
}

struct FilesSlot {
    open: Option<Arc<OpenFiles>>,
    /// Set when the transfer leaves the registry: its directory may be deleted and a new transfer with
    /// the same ids may create the same paths, which an old writer must never open.
    closed: bool,
}

/// A write that has been admitted but not yet committed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InflightRange {
    id: u64,
    start: u64,
    end: u64,
}

pub(crate) struct State {
    pub phase: Phase,
    /// Ranges whose bytes and journal record are on disk.
    pub held: RangeSet,
    pub inflight: Vec<InflightRange>,
    /// Bytes admitted and not yet committed, charged to the client's quota meanwhile.
    pub inflight_bytes: u64,
    next_io: u64,
    /// Two in-flight writes overlapped: the bytes in the file may differ from those hashed, so fin
    /// hashes the file from scratch.
    pub rehash: bool,
    /// Unix seconds of the last command that touched the transfer (segments_ttl counts from here).
    pub updated_at: u64,
    pub last_io: Instant,
    rate: VecDeque<(Instant, u64)>,
}

/// How far the window of the rate shown in `transfers()` reaches back.
const RATE_WINDOW: Duration = Duration::from_secs(10);

impl State {
    /// Bytes charged to the client: the declared size, or what is held and in flight if more.
    pub fn charge(&self, declared: Option<u64>) -> u64 {
        declared
            .unwrap_or(0)
            .max(self.held.covered_len() + self.inflight_bytes)
    }

    pub fn record_rate(&mut self, bytes: u64, now: Instant) {
        self.rate.push_back((now, bytes));
        while let Some(&(t, _)) = self.rate.front() {
            if now.duration_since(t) > RATE_WINDOW {
                self.rate.pop_front();
            } else {
                break;
            }
        }
    }

    /// Bytes per second committed over the last few seconds.
    pub fn rate(&self, now: Instant) -> f64 {
        let Some(&(first, _)) = self.rate.front() else {
            return 0.0;
        };
        if now.duration_since(first) > RATE_WINDOW {
            return 0.0;
        }
        let bytes: u64 = self.rate.iter().map(|&(_, b)| b).sum();
        let span = now.duration_since(first).max(Duration::from_secs(1));
        bytes as f64 / span.as_secs_f64()
    }
}

struct HashState {
    hasher: Hasher,
    /// The hasher has consumed bytes `[0, upto)` of the file.
    upto: u64,
}

/// Running hashes read at most this much of the file to catch up after a gap is filled; beyond it,
/// catching up is left to fin so a segment's acknowledgement never waits on a long read.
const CATCHUP_LIMIT: u64 = 16 << 20;

pub(crate) struct Transfer {
    pub client_id: String,
    pub file_id: String,
    pub meta: FileMeta,
    /// The transfer's directory under the store.
    pub dir: PathBuf,
    pub started_at: u64,
    pub st: Mutex<State>,
    hash: Mutex<HashState>,
    /// Serialises init, fin, abort, cancel and GC of this transfer; never held by segments, which only
    /// wait on it while the transfer is initializing or assembling.
    pub op: Arc<tokio::sync::Mutex<()>>,
    /// Woken when the last in-flight write is committed (fin waits for it).
    pub idle: Notify,
    files: Mutex<FilesSlot>,
}

impl Transfer {
    pub fn new(
        rec: TransferRecord,
        dir: PathBuf,
        held: RangeSet,
        phase: Phase,
        updated_at: u64,
    ) -> Transfer {
        Transfer {
            client_id: rec.client_id,
            file_id: rec.file_id,
            meta: rec.meta,
            dir,
            started_at: rec.started_at,
            st: Mutex::new(State {
                phase,
                held,
                inflight: Vec::new(),
                inflight_bytes: 0,
                next_io: 0,
                rehash: false,
                updated_at,
                last_io: Instant::now(),
                rate: VecDeque::new(),
            }),
            hash: Mutex::new(HashState {
                hasher: Hasher::new(),
                upto: 0,
            }),
            op: Arc::new(tokio::sync::Mutex::new(())),
            idle: Notify::new(),
            files: Mutex::new(FilesSlot {
                open: None,
                closed: false,
            }),
        }
    }

    /// The open files, opening them on first use. Blocking.
    pub fn files(&self) -> io::Result<Arc<OpenFiles>> {
        let mut slot = lock(&self.files);
        if slot.closed {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "transfer is no longer active",
            ));
        }
        if let Some(f) = &slot.open {
            return Ok(f.clone());
        }
        let data = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(DATA_FILE))?;
        let journal = journal::open_append(&self.dir.join(JOURNAL_FILE))?;
        let files = Arc::new(OpenFiles { data, journal });
        slot.open = Some(files.clone());
        Ok(files)
    }

    /// Drops the cached descriptors; with `for_good`, no one may open them again.
    pub fn close_files(&self, for_good: bool) {
        let mut slot = lock(&self.files);
        slot.open = None;
        slot.closed |= for_good;
    }

    pub fn files_open(&self) -> bool {
        lock(&self.files).open.is_some()
    }

    /// Admits a write of `ranges` (not held yet); the returned guard keeps it counted as in flight.
    pub fn admit(self: &Arc<Self>, st: &mut State, ranges: &[(u64, u64)]) -> Inflight {
        let id = st.next_io;
        st.next_io += 1;
        let mut bytes = 0;
        for &(start, end) in ranges {
            if st.inflight.iter().any(|r| r.start < end && start < r.end) {
                st.rehash = true;
            }
            st.inflight.push(InflightRange { id, start, end });
            bytes += end - start;
        }
        st.inflight_bytes += bytes;
        Inflight {
            t: self.clone(),
            id,
            bytes,
        }
    }

    /// Feeds the running hash after a segment was committed. `wrote` are the ranges this segment wrote
    /// from `payload` (so those bytes equal the file's); other bytes are read back from the file, up to
    /// [`CATCHUP_LIMIT`]. Blocking; best effort (fin catches up from wherever this stopped).
    pub fn advance_hash(&self, offset: u64, payload: &[u8], wrote: &RangeSet) -> io::Result<()> {
        let mut h = lock(&self.hash);
        let prefix = lock(&self.st).held.contiguous_prefix();
        if h.upto >= prefix {
            return Ok(());
        }
        let end = offset.saturating_add(payload.len() as u64);
        let take_end = end.min(prefix);
        if offset <= h.upto && h.upto < take_end && wrote.contains(h.upto, take_end) {
            let from = usize::try_from(h.upto - offset).unwrap_or(usize::MAX);
            let to = usize::try_from(take_end - offset).unwrap_or(usize::MAX);
            if let Some(bytes) = payload.get(from..to) {
                h.hasher.update(bytes);
                h.upto = take_end;
            }
        }
        if h.upto < prefix && prefix - h.upto <= CATCHUP_LIMIT {
            let files = self.files()?;
            hash_file(&files.data, &mut h, prefix)?;
        }
        Ok(())
    }

    /// SHA-256 of the file's first `size` bytes, which must all be held. Blocking.
    pub fn digest(&self, size: u64) -> io::Result<[u8; 32]> {
        let mut h = lock(&self.hash);
        let rehash = std::mem::take(&mut lock(&self.st).rehash);
        if rehash || h.upto > size {
            h.hasher = Hasher::new();
            h.upto = 0;
        }
        if h.upto < size {
            let files = self.files()?;
            hash_file(&files.data, &mut h, size)?;
        }
        Ok(h.hasher.clone().finalize().into())
    }
}

fn hash_file(file: &File, h: &mut HashState, to: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    while h.upto < to {
        let n = usize::try_from((to - h.upto).min(buf.len() as u64)).unwrap_or(buf.len());
        let chunk = &mut buf[..n];
        file.read_exact_at(chunk, h.upto)?;
        h.hasher.update(&*chunk);
        h.upto += n as u64;
    }
    Ok(())
}

/// An admitted write. Dropping it (after the commit, or when the write failed) removes it from the
/// in-flight set and wakes a waiting fin when none is left.
pub(crate) struct Inflight {
    t: Arc<Transfer>,
    id: u64,
    bytes: u64,
}

impl Drop for Inflight {
    fn drop(&mut self) {
        let mut st = lock(&self.t.st);
        st.inflight.retain(|r| r.id != self.id);
        st.inflight_bytes = st.inflight_bytes.saturating_sub(self.bytes);
        let idle = st.inflight.is_empty();
        drop(st);
        if idle {
            self.t.idle.notify_waiters();
        }
    }
}
