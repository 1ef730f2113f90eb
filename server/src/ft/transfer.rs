//! One transfer in progress: its metadata, the ranges held durably, the writes in flight and the
//! running SHA-256 of its contiguous prefix.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
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

/// Where a transfer is in its life. Only [`Transfer`]'s transition methods change it:
/// ```text
/// Initializing ─started─► Receiving ─begin_assembly─► Assembling ─end_assembly─► Receiving
///      │                      │                           │
///      └─abandon_init─► Gone ◄┴────────────gone───────────┘
/// ```
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
    /// `data.part` again, opened with `O_DIRECT` (`None` where the filesystem refuses it): see
    /// [`Transfer::write_at`].
    direct: Option<File>,
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
    /// Private: the transitions are [`Transfer`]'s methods, so every one is checked in one place.
    phase: Phase,
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
    pub fn phase(&self) -> Phase {
        self.phase
    }

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
    /// Reused for the bytes the hash has to read back from the file.
    buf: Vec<u8>,
}

/// Committed bytes waiting for the running hash to reach them, kept in memory so that it never has
/// to read them back from the file (which, after a direct write, means reading the disk).
#[derive(Default)]
struct Pending {
    /// Start offset → the bytes a segment wrote there (exactly what the file holds, unless two
    /// in-flight writes overlapped, which sets `State::rehash`).
    pieces: BTreeMap<u64, Bytes>,
    bytes: usize,
    /// Mirror of `HashState::upto`, readable without waiting for a hash in progress.
    upto: u64,
}

impl Pending {
    /// Keeps `bytes` at `start` unless they are behind the hash or over a memory limit (pieces the
    /// hash can use right away are always kept: they are dropped again within milliseconds).
    fn add(&mut self, start: u64, bytes: Bytes) {
        let n = bytes.len();
        if n == 0 || start + n as u64 <= self.upto || self.pieces.contains_key(&start) {
            return;
        }
        if start > self.upto {
            let total = PENDING_TOTAL.fetch_add(n, Ordering::Relaxed) + n;
            if self.bytes + n > PENDING_LIMIT || total > PENDING_TOTAL_LIMIT {
                PENDING_TOTAL.fetch_sub(n, Ordering::Relaxed);
                return; // read back from the file when the hash gets there
            }
        } else {
            PENDING_TOTAL.fetch_add(n, Ordering::Relaxed);
        }
        self.pieces.insert(start, bytes);
        self.bytes += n;
    }

    /// Forgets pieces that end at or before `upto` (every piece with `u64::MAX`).
    fn drop_behind(&mut self, upto: u64) {
        while let Some((&s, b)) = self.pieces.first_key_value() {
            if upto != u64::MAX && s + b.len() as u64 > upto {
                break;
            }
            let n = b.len();
            self.pieces.pop_first();
            self.bytes -= n;
            PENDING_TOTAL.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Whether the piece the hash needs next is here.
    fn ready(&self) -> bool {
        self.pieces
            .range(..=self.upto)
            .next_back()
            .is_some_and(|(&s, b)| s + b.len() as u64 > self.upto)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.drop_behind(u64::MAX);
    }
}

/// Most bytes kept in [`Pending`] per transfer beyond the one the hash needs next. Segments that
/// arrive further ahead (out-of-order uploads) are read back from the file when the hash gets there.
const PENDING_LIMIT: usize = 32 << 20;
/// The same for all transfers together: these payloads outlive the session's in-flight budget
/// (`limits.max_ft_inflight_bytes`), which is released when a segment is acknowledged.
const PENDING_TOTAL_LIMIT: usize = 256 << 20;
/// Bytes in every transfer's [`Pending`] (process-wide, as the memory it bounds).
static PENDING_TOTAL: AtomicUsize = AtomicUsize::new(0);

/// Running hashes read at most this much of the file at once to catch up after a gap is filled;
/// the rest is left to the next commit or to fin.
const CATCHUP_LIMIT: u64 = 16 << 20;

/// `O_DIRECT` writes need offsets, lengths and buffer addresses aligned to the logical block size;
/// 4 KiB covers every common one (a filesystem that wants more gets buffered writes, see
/// [`Writer::direct_failed`]).
const DIRECT_ALIGN: usize = 4096;
/// Ranges shorter than this go through the page cache: a direct write waits for the device.
const DIRECT_MIN: usize = 64 << 10;
/// Size of the aligned buffer a transfer copies direct writes through.
const DIRECT_CHUNK: usize = 1 << 20;

/// The single writer of a transfer's data file (one at a time: concurrent `pwrite`s of one file
/// only spin on its inode lock).
#[derive(Default)]
struct Writer {
    /// `DIRECT_CHUNK` bytes at a `DIRECT_ALIGN`ed address inside it (allocated on first use, kept
    /// while the files are open: memory that is reused costs far less than fresh memory).
    buf: Vec<u8>,
    /// The filesystem refused a direct write: this transfer writes through the page cache.
    direct_failed: bool,
}

pub(crate) struct Transfer {
    pub client_id: String,
    pub file_id: String,
    pub meta: FileMeta,
    /// The transfer's directory under the store.
    pub dir: PathBuf,
    pub started_at: u64,
    pub st: Mutex<State>,
    /// Held by whoever advances the running hash, for as long as it hashes.
    hash: Mutex<HashState>,
    /// Short critical sections only: segment handlers add to it from async tasks.
    pending: Mutex<Pending>,
    /// A blocking task is advancing the running hash (at most one is started at a time).
    hashing: AtomicBool,
    writer: Mutex<Writer>,
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
                buf: Vec::new(),
            }),
            pending: Mutex::new(Pending::default()),
            hashing: AtomicBool::new(false),
            writer: Mutex::new(Writer::default()),
            op: Arc::new(tokio::sync::Mutex::new(())),
            idle: Notify::new(),
            files: Mutex::new(FilesSlot {
                open: None,
                closed: false,
            }),
        }
    }

    /// What `transfer.json` holds of it.
    pub fn record(&self) -> TransferRecord {
        TransferRecord {
            client_id: self.client_id.clone(),
            file_id: self.file_id.clone(),
            meta: self.meta.clone(),
            started_at: self.started_at,
        }
    }

    pub fn phase(&self) -> Phase {
        lock(&self.st).phase
    }

    /// Init created the files: segments may come in.
    pub fn started(&self) {
        let mut st = lock(&self.st);
        if st.phase == Phase::Initializing {
            st.phase = Phase::Receiving;
        }
    }

    /// An init that did not complete gives the transfer up; false when it had completed (or the
    /// transfer was already gone), which leaves it as it is.
    pub fn abandon_init(&self) -> bool {
        let mut st = lock(&self.st);
        let was = st.phase == Phase::Initializing;
        if was {
            st.phase = Phase::Gone;
        }
        was
    }

    /// Fin takes the transfer over (segments then wait on the op lock); false unless it was receiving.
    pub fn begin_assembly(&self) -> bool {
        let mut st = lock(&self.st);
        let ok = st.phase == Phase::Receiving;
        if ok {
            st.phase = Phase::Assembling;
        }
        ok
    }

    /// Fin ended without finishing the transfer: it receives again.
    pub fn end_assembly(&self) {
        let mut st = lock(&self.st);
        if st.phase == Phase::Assembling {
            st.phase = Phase::Receiving;
        }
    }

    /// The transfer leaves the registry (finished, aborted, cancelled, failed, expired or lost).
    /// Call under the registry lock, so that a command seeing `Gone` finds the registry updated.
    pub fn gone(&self) {
        lock(&self.st).phase = Phase::Gone;
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
        let direct = open_direct(&self.dir.join(DATA_FILE));
        let journal = journal::open_append(&self.dir.join(JOURNAL_FILE))?;
        let files = Arc::new(OpenFiles {
            data,
            direct,
            journal,
        });
        slot.open = Some(files.clone());
        Ok(files)
    }

    /// Drops the cached descriptors; with `for_good`, no one may open them again.
    pub fn close_files(&self, for_good: bool) {
        let mut slot = lock(&self.files);
        slot.open = None;
        slot.closed |= for_good;
        drop(slot);
        // An idle or finished transfer gives its memory back (the hash reads the file instead).
        lock(&self.pending).drop_behind(u64::MAX);
        if let Ok(mut w) = self.writer.try_lock() {
            w.buf = Vec::new();
        }
        if let Ok(mut h) = self.hash.try_lock() {
            h.buf = Vec::new();
        }
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

    /// Writes `bytes` at `at` in the data file. Blocking; one writer per transfer at a time.
    ///
    /// The block-aligned middle of a large range goes to the disk with `O_DIRECT`, through a reused
    /// aligned buffer: a buffered write copies every byte into freshly allocated page-cache memory,
    /// which costs this server more CPU than anything else it does for a segment (and the commit
    /// flushes those pages right away anyway). The unaligned head and tail go through the page cache;
    /// they are other blocks, and the kernel keeps the cache coherent with direct writes (flushing and
    /// invalidating the range around each one), so which path wrote a byte never shows. Durability
    /// is unchanged: the committer's fdatasync covers both paths (data blocks, allocation, size).
    pub fn write_at(&self, files: &OpenFiles, at: u64, bytes: &[u8]) -> io::Result<()> {
        let mut w = lock(&self.writer);
        let (direct, head, mid) = match (&files.direct, w.direct_failed) {
            (Some(d), false) => {
                let head = usize::try_from(at.next_multiple_of(DIRECT_ALIGN as u64) - at)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let mid = (bytes.len() - head) / DIRECT_ALIGN * DIRECT_ALIGN;
                (d, head, mid)
            }
            _ => return files.data.write_all_at(bytes, at),
        };
        if mid < DIRECT_MIN {
            return files.data.write_all_at(bytes, at);
        }
        let (head_bytes, rest) = bytes.split_at(head);
        let (mid_bytes, tail_bytes) = rest.split_at(mid);
        let mid_at = at + head as u64;
        files.data.write_all_at(head_bytes, at)?;
        if let Err(e) = write_direct(direct, &mut w.buf, mid_bytes, mid_at) {
            if e.kind() != io::ErrorKind::InvalidInput {
                return Err(e);
            }
            // EINVAL: this filesystem wants another alignment, or no direct I/O at all.
            tracing::debug!(error = %e, "direct write refused; writing through the page cache");
            w.direct_failed = true;
            files.data.write_all_at(mid_bytes, mid_at)?;
        }
        files.data.write_all_at(tail_bytes, mid_at + mid as u64)
    }

    /// Hands the running hash the bytes a committed segment wrote (`(offset, bytes)`, exactly what
    /// the file now holds there) and, if they let it advance, advances it on a blocking thread,
    /// without making the segment's acknowledgement wait. Best effort: fin catches up from wherever
    /// the hash stopped.
    pub fn feed_hash(self: &Arc<Self>, pieces: Vec<(u64, Bytes)>) {
        let ready = {
            let mut p = lock(&self.pending);
            for (start, bytes) in pieces {
                p.add(start, bytes);
            }
            p.ready()
        };
        let prefix = lock(&self.st).held.contiguous_prefix();
        let held_ahead = prefix > lock(&self.pending).upto;
        if (ready || held_ahead) && !self.hashing.swap(true, Ordering::AcqRel) {
            let t = self.clone();
            tokio::task::spawn_blocking(move || t.run_hash());
        }
    }

    /// The blocking task started by [`Transfer::feed_hash`].
    fn run_hash(&self) {
        loop {
            {
                let mut h = lock(&self.hash);
                if lock(&self.st).rehash {
                    // The file may differ from the pieces; fin hashes it from scratch.
                    lock(&self.pending).drop_behind(u64::MAX);
                } else {
                    let prefix = lock(&self.st).held.contiguous_prefix();
                    let limit = h.upto.saturating_add(CATCHUP_LIMIT).min(prefix);
                    if let Err(e) = self.hash_to(&mut h, limit) {
                        // Only a lost shortcut: fin reads the file instead.
                        tracing::debug!(error = %e, "running hash not advanced");
                    }
                }
            }
            self.hashing.store(false, Ordering::Release);
            // A piece that arrived while this ran may have seen `hashing` still set: look again.
            let more = lock(&self.pending).ready();
            if !more || self.hashing.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }

    /// Advances the hash to `to` (every byte below it held), from pending pieces where it has them
    /// and else from the file. Blocking.
    fn hash_to(&self, h: &mut HashState, to: u64) -> io::Result<()> {
        while h.upto < to {
            let (piece, next) = {
                let mut p = lock(&self.pending);
                p.drop_behind(h.upto);
                let covering = p
                    .pieces
                    .range(..=h.upto)
                    .next_back()
                    .map(|(&s, b)| (s, b.clone()));
                let next = p.pieces.range(h.upto..).next().map(|(&s, _)| s);
                (covering, next)
            };
            match piece {
                Some((s, b)) if s + b.len() as u64 > h.upto => {
                    let from = usize::try_from(h.upto - s).unwrap_or(usize::MAX);
                    let end = (s + b.len() as u64).min(to);
                    let till = usize::try_from(end - s).unwrap_or(usize::MAX);
                    let Some(bytes) = b.get(from..till) else {
                        return Err(io::Error::other("pending piece out of bounds"));
                    };
                    h.hasher.update(bytes);
                    h.upto = end;
                }
                _ => {
                    // A gap in memory: read it from the file, up to the next piece.
                    let gap_end = next.map_or(to, |n| n.min(to));
                    let files = self.files()?;
                    // No write of this transfer meanwhile: readahead must not cache blocks that a
                    // direct write is changing under it.
                    let _w = lock(&self.writer);
                    hash_file(&files.data, h, gap_end)?;
                }
            }
            lock(&self.pending).upto = h.upto;
        }
        Ok(())
    }

    /// SHA-256 of the file's first `size` bytes, which must all be held and none in flight.
    /// Blocking.
    pub fn digest(&self, size: u64) -> io::Result<[u8; 32]> {
        let mut h = lock(&self.hash);
        let rehash = std::mem::take(&mut lock(&self.st).rehash);
        if rehash || h.upto > size {
            h.hasher = Hasher::new();
            h.upto = 0;
            let mut p = lock(&self.pending);
            p.drop_behind(u64::MAX);
            p.upto = 0;
        }
        self.hash_to(&mut h, size)?;
        Ok(h.hasher.clone().finalize().into())
    }
}

/// `path` opened for writing with `O_DIRECT`, where the platform and the filesystem allow it.
#[cfg(target_os = "linux")]
fn open_direct(path: &std::path::Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &std::path::Path) -> Option<File> {
    None
}

/// Writes `bytes` (a multiple of [`DIRECT_ALIGN`] long) at `at` (aligned) through `file`, opened with
/// `O_DIRECT`, copying through `buf` unless `bytes` already sits at an aligned address.
fn write_direct(file: &File, buf: &mut Vec<u8>, bytes: &[u8], at: u64) -> io::Result<()> {
    if bytes.as_ptr().align_offset(DIRECT_ALIGN) == 0 {
        return file.write_all_at(bytes, at);
    }
    if buf.len() < DIRECT_CHUNK + DIRECT_ALIGN {
        *buf = vec![0u8; DIRECT_CHUNK + DIRECT_ALIGN];
    }
    let skip = buf.as_ptr().align_offset(DIRECT_ALIGN);
    let aligned = buf
        .get_mut(skip..skip + DIRECT_CHUNK)
        .ok_or_else(|| io::Error::other("cannot align the direct-write buffer"))?;
    let mut at = at;
    for chunk in bytes.chunks(DIRECT_CHUNK) {
        let dst = aligned
            .get_mut(..chunk.len())
            .ok_or_else(|| io::Error::other("direct-write chunk larger than its buffer"))?;
        dst.copy_from_slice(chunk);
        file.write_all_at(dst, at)?;
        at += chunk.len() as u64;
    }
    Ok(())
}

fn hash_file(file: &File, h: &mut HashState, to: u64) -> io::Result<()> {
    if h.buf.len() < 1 << 20 {
        h.buf = vec![0u8; 1 << 20];
    }
    while h.upto < to {
        let n = usize::try_from((to - h.upto).min(h.buf.len() as u64)).unwrap_or(h.buf.len());
        let chunk = &mut h.buf[..n];
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
