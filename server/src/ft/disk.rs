//! On-disk layout of the store and the exports, and the blocking operations on it.
//!
//! ```text
//! <store_dir>/<esc clientId>/<esc fileId>/
//!     transfer.json    TransferRecord: ids, init metadata, start time (written once, atomically)
//!     data.part        sparse partial file, segments written at their offset
//!     ranges.log       journal of durable ranges (see journal.rs)
//!     fin.json         FinRecord: written before publishing; on restart, publishing is redone
//!     cancelled.json   Tombstone of an operator cancel (data and journal removed)
//! <store_dir>/%quarantine/<esc clientId>/<esc fileId>.<unix time>/
//!     a transfer that could not be recovered at start, moved aside (never deleted) by a new init
//! <export_root>/<esc clientId>/<esc fileId>/
//!     <esc name>                 the file, renamed from data.part
//!     %manifest.json             Manifest
//! ```
//! Names starting `%` followed by a lower-case letter (`%tmp-…`, `%manifest.json`, `%quarantine`)
//! are a form [`escape`] never produces, so no device-chosen name can land on them: a device that
//! uploads a file called `x.manifest.json` gets an ordinary file, not a manifest (issue 17: the scan
//! used to trust any `*.manifest.json`). Nothing a manifest says names a path: the file's name in
//! its directory is `escape(name)`, and the scan checks the ids against the directories it found
//! them in. Every creation, rename and removal that an acknowledgement depends on is followed by an
//! fsync of the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use quicft_proto::ft::{FileMeta, RangeSet};
use serde::{Deserialize, Serialize};

use super::escape::escape;
use super::journal;
use super::transfer::lock;

pub const TRANSFER_FILE: &str = "transfer.json";
pub const DATA_FILE: &str = "data.part";
pub const JOURNAL_FILE: &str = "ranges.log";
pub const FIN_FILE: &str = "fin.json";
pub const CANCELLED_FILE: &str = "cancelled.json";
pub const MANIFEST_FILE: &str = "%manifest.json";
/// Where manifests were kept before issue 17 (`<esc name>.manifest.json`): read once, checked, and
/// rewritten as [`MANIFEST_FILE`].
const LEGACY_MANIFEST_SUFFIX: &str = ".manifest.json";
const TMP_PREFIX: &str = "%tmp-";
const QUARANTINE_DIR: &str = "%quarantine";

/// `transfer.json`: what init established.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferRecord {
    pub client_id: String,
    pub file_id: String,
    pub meta: FileMeta,
    pub started_at: u64,
}

/// `fin.json`: a fin passed its checks; publishing may be redone from here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinRecord {
    pub size: u64,
    pub sha256: String,
    pub finished_at: u64,
}

/// `cancelled.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tombstone {
    pub cancelled_at: u64,
}

/// `%manifest.json`, beside every exported file; also how finished transfers are remembered.
/// Older manifests also carry a `file` field, which is ignored: see [`Manifest::file_name`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub client_id: String,
    pub file_id: String,
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub meta: FileMeta,
    pub started_at: u64,
    pub finished_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_at: Option<u64>,
    /// Where an exporter other than the local one put the file (`s3://bucket/key`); the export
    /// directory then holds only this manifest, as the server's record of the export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

impl Manifest {
    /// The manifest of a transfer that passed fin.
    pub fn new(rec: &TransferRecord, fin: &FinRecord) -> Manifest {
        Manifest {
            client_id: rec.client_id.clone(),
            file_id: rec.file_id.clone(),
            name: rec.meta.name.clone(),
            size: fin.size,
            sha256: fin.sha256.clone(),
            meta: rec.meta.clone(),
            started_at: rec.started_at,
            finished_at: fin.finished_at,
            expire_at: rec.meta.expire_at,
            location: None,
        }
    }

    /// The exported file's name in its directory: always `escape(name)`, one path component.
    pub fn file_name(&self) -> String {
        escape(&self.name)
    }

    /// Where the exported file is, confined to its own directory `dir`.
    pub fn file_path(&self, dir: &Path) -> PathBuf {
        dir.join(self.file_name())
    }
}

pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `name` in `dir` atomically and durably (temporary file, fsync, rename, fsync dir).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{TMP_PREFIX}{name}"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    fsync_dir(dir)
}

/// Bytes available to unprivileged users on the filesystem holding `path`.
pub fn free_space(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// How long a [`FreeSpace`] answer is reused.
const FREE_SPACE_TTL: Duration = Duration::from_millis(100);

/// The free space of the store's filesystem for the per-segment watermark check, without a
/// `statvfs` per segment: an answer is reused for [`FREE_SPACE_TTL`], counting down the bytes
/// admitted meanwhile, and the filesystem is always asked again before anything is refused.
pub struct FreeSpace {
    path: PathBuf,
    /// When the filesystem was last asked, and the free bytes left after what was admitted since.
    cached: Mutex<Option<(Instant, u64)>>,
}

impl FreeSpace {
    pub fn new(path: PathBuf) -> FreeSpace {
        FreeSpace {
            path,
            cached: Mutex::new(None),
        }
    }

    /// Whether `need` more bytes leave at least `min_free` free; if so, counts them as used.
    /// Blocking (at most one `statvfs`).
    pub fn admit(&self, need: u64, min_free: u64) -> io::Result<bool> {
        let want = min_free.saturating_add(need);
        let mut c = lock(&self.cached);
        if let Some((at, free)) = *c {
            if at.elapsed() < FREE_SPACE_TTL && free >= want {
                *c = Some((at, free - need));
                return Ok(true);
            }
        }
        let free = free_space(&self.path)?;
        let ok = free >= want;
        *c = Some((Instant::now(), if ok { free - need } else { free }));
        Ok(ok)
    }
}

/// Creates `root/a/b/…`, fsyncing each directory that gets a new entry. Returns the deepest path.
pub fn ensure_dirs(root: &Path, parts: &[&str]) -> io::Result<PathBuf> {
    let mut dir = root.to_path_buf();
    for part in parts {
        let child = dir.join(part);
        match fs::create_dir(&child) {
            Ok(()) => fsync_dir(&dir)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        dir = child;
    }
    Ok(dir)
}

pub fn transfer_dir(store: &Path, client_id: &str, file_id: &str) -> PathBuf {
    store.join(escape(client_id)).join(escape(file_id))
}

/// Creates a transfer's directory and files durably; `transfer.json` goes last, so a directory
/// without it is an init that never answered.
pub fn create_transfer(store: &Path, rec: &TransferRecord) -> io::Result<PathBuf> {
    let dir = ensure_dirs(store, &[&escape(&rec.client_id), &escape(&rec.file_id)])?;
    if dir.join(TRANSFER_FILE).exists() {
        // A transfer the registry does not know: one that could not be recovered at start (or
        // that GC could not remove). Its bytes may be acknowledged data: keep them for an operator.
        quarantine(store, &dir, rec)?;
        return create_transfer(store, rec);
    }
    // Leftovers of an init that crashed before answering.
    for name in [DATA_FILE, JOURNAL_FILE, FIN_FILE, CANCELLED_FILE] {
        remove_if_exists(&dir.join(name))?;
    }
    let data = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(DATA_FILE))?;
    data.sync_all()?;
    journal::create(&dir.join(JOURNAL_FILE), &[])?;
    write_atomic(&dir, TRANSFER_FILE, &to_json(rec)?)?;
    Ok(dir)
}

/// Moves a transfer directory to `<store>/%quarantine/<esc client>/<esc file>.<unix time>` (a rename:
/// needs no free space) and logs where it went.
fn quarantine(store: &Path, dir: &Path, rec: &TransferRecord) -> io::Result<()> {
    let qdir = ensure_dirs(store, &[QUARANTINE_DIR, &escape(&rec.client_id)])?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut target = qdir.join(format!("{}.{now}", escape(&rec.file_id)));
    let mut n = 0;
    while target.exists() {
        n += 1;
        target = qdir.join(format!("{}.{now}.{n}", escape(&rec.file_id)));
    }
    fs::rename(dir, &target)?;
    fsync_dir(&qdir)?;
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    tracing::warn!(from = %dir.display(), to = %target.display(),
        "a new init replaces a transfer that could not be recovered: its data is kept");
    Ok(())
}

pub fn to_json<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(io::Error::other)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<T> {
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Deletes a directory tree durably; a missing one is fine.
pub fn remove_dir(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent() {
        Some(parent) => fsync_dir(parent),
        None => Ok(()),
    }
}

/// Turns a transfer directory into a tombstone: data and journal go, `cancelled.json` stays. The
/// deletes come first and need no space; a tombstone that cannot be written then (a disk still full)
/// is logged, not an error: the data is gone either way.
pub fn tombstone(dir: &Path, t: &Tombstone) -> io::Result<()> {
    remove_if_exists(&dir.join(DATA_FILE))?;
    remove_if_exists(&dir.join(JOURNAL_FILE))?;
    fsync_dir(dir)?;
    if let Err(e) = write_atomic(dir, CANCELLED_FILE, &to_json(t)?) {
        tracing::warn!(dir = %dir.display(), error = %e,
            "cancel tombstone not written: after a restart the device gets 0x10 instead of 0x83");
        let _ = fs::remove_file(dir.join(format!("{TMP_PREFIX}{CANCELLED_FILE}")));
    }
    Ok(())
}

/// Records that a transfer passed fin (`fin.json`): from here on a restart finishes publishing it
/// rather than taking it back to receiving.
pub fn record_fin(tdir: &Path, fin: &FinRecord) -> io::Result<()> {
    write_atomic(tdir, FIN_FILE, &to_json(fin)?)
}

/// The local exporter's publish (see `export.rs`): renames the partial file into the export
/// directory, writes the manifest and drops other files of an older transfer with the same ids.
/// Every step can be redone after a crash: a partial file already moved is found at its target.
pub fn export(
    export_root: &Path,
    partial: &Path,
    rec: &TransferRecord,
    fin: &FinRecord,
) -> io::Result<(Manifest, PathBuf)> {
    let edir = ensure_dirs(
        export_root,
        &[&escape(&rec.client_id), &escape(&rec.file_id)],
    )?;
    let file = escape(&rec.meta.name);
    let target = edir.join(&file);
    if partial.exists() {
        match fs::rename(partial, &target) {
            Ok(()) => {}
            // The export root is on another filesystem: copy, then rename within the export dir.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
                let tmp = edir.join(format!("{TMP_PREFIX}data"));
                fs::copy(partial, &tmp)?;
                File::open(&tmp)?.sync_all()?;
                fs::rename(&tmp, &target)?;
                fs::remove_file(partial)?;
            }
            Err(e) => return Err(e),
        }
    } else if !target.exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "partial file is gone and was not exported",
        ));
    }
    let manifest = Manifest::new(rec, fin);
    write_atomic(&edir, MANIFEST_FILE, &to_json(&manifest)?)?;
    keep_only(&edir, &[file.as_str(), MANIFEST_FILE])?;
    Ok((manifest, edir))
}

/// Records an export that lies elsewhere (`manifest.location` set): its export directory holds
/// only the manifest, and anything of an older local export with the same ids goes.
pub fn record_remote_export(export_root: &Path, manifest: &Manifest) -> io::Result<PathBuf> {
    let edir = ensure_dirs(
        export_root,
        &[&escape(&manifest.client_id), &escape(&manifest.file_id)],
    )?;
    write_atomic(&edir, MANIFEST_FILE, &to_json(manifest)?)?;
    keep_only(&edir, &[MANIFEST_FILE])?;
    Ok(edir)
}

/// The manifest an export directory holds.
pub fn read_manifest(dir: &Path) -> io::Result<Manifest> {
    read_json(&dir.join(MANIFEST_FILE))
}

/// Deletes every entry of `dir` not named in `keep`, then fsyncs it.
fn keep_only(edir: &Path, keep: &[&str]) -> io::Result<()> {
    for entry in fs::read_dir(edir)? {
        let entry = entry?;
        let name = entry.file_name();
        if !keep.iter().any(|k| name == *k) {
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                fs::remove_dir_all(&path)?;
            } else {
                fs::remove_file(&path)?;
            }
        }
    }
    fsync_dir(edir)
}

/// What a transfer directory holds after a restart.
pub enum Found {
    Live {
        rec: TransferRecord,
        dir: PathBuf,
        held: RangeSet,
        updated_at: u64,
    },
    /// Passed fin, and published again at the scan by its `fin` callback.
    Finished { manifest: Manifest, dir: PathBuf },
    /// Passed fin; publishing it was interrupted and is to be redone (the scan's `fin` callback
    /// turns it into `Finished`, so [`scan_store`] never returns it).
    Fin {
        rec: TransferRecord,
        fin: FinRecord,
        dir: PathBuf,
    },
    Cancelled {
        rec: TransferRecord,
        dir: PathBuf,
        at: u64,
    },
}

fn mtime_unix(path: &Path) -> Option<u64> {
    let m = fs::metadata(path).ok()?.modified().ok()?;
    Some(m.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
}

/// Rebuilds every transfer from the store after a restart or crash. Directories that never
/// completed an init are removed; an interrupted publish is handed to `fin`, which redoes it
/// through the exporter (not the store's to call) and answers what the directory now is.
pub fn scan_store(
    store: &Path,
    now: u64,
    mut fin: impl FnMut(TransferRecord, FinRecord, PathBuf) -> io::Result<Found>,
) -> io::Result<Vec<Found>> {
    let mut found = Vec::new();
    for cdir in fs::read_dir(store)? {
        let cdir = cdir?;
        if !cdir.file_type()?.is_dir() || is_internal(&cdir.file_name()) {
            continue;
        }
        for tdir in fs::read_dir(cdir.path())? {
            let tdir = tdir?.path();
            if !tdir.is_dir() {
                continue;
            }
            let scanned = match scan_transfer(&tdir, now) {
                Ok(Some(Found::Fin { rec, fin: f, dir })) => fin(rec, f, dir).map(Some),
                other => other,
            };
            match scanned {
                Ok(Some(f)) => found.push(f),
                Ok(None) => {
                    tracing::info!(dir = %tdir.display(), "removing incomplete transfer directory");
                    remove_dir(&tdir)?;
                }
                Err(e) => {
                    // Keep the bytes for an operator to look at; the device will get 0x10, and
                    // its new init moves this directory to the quarantine (never deletes it).
                    tracing::error!(dir = %tdir.display(), error = %e, "cannot recover transfer");
                }
            }
        }
        // Clean up client directories left empty; ignore the error of a non-empty one.
        let _ = fs::remove_dir(cdir.path());
    }
    Ok(found)
}

fn scan_transfer(dir: &Path, now: u64) -> io::Result<Option<Found>> {
    let rec: TransferRecord = match read_json(&dir.join(TRANSFER_FILE)) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if let Ok(fin) = read_json::<FinRecord>(&dir.join(FIN_FILE)) {
        return Ok(Some(Found::Fin {
            rec,
            fin,
            dir: dir.to_path_buf(),
        }));
    }
    if let Ok(t) = read_json::<Tombstone>(&dir.join(CANCELLED_FILE)) {
        return Ok(Some(Found::Cancelled {
            rec,
            dir: dir.to_path_buf(),
            at: t.cancelled_at,
        }));
    }
    let jpath = dir.join(JOURNAL_FILE);
    let replayed = match journal::replay(&jpath) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(replayed) = replayed else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "range journal is corrupt",
        ));
    };
    let data_len = match fs::metadata(dir.join(DATA_FILE)) {
        Ok(m) => m.len(),
        // Without its data the transfer has no usable state: the device restarts it (0x10).
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut held = replayed.ranges;
    if held.end() > data_len {
        // Cannot happen when fdatasync keeps its promise (it syncs the size); never claim bytes the
        // file does not have.
        tracing::error!(dir = %dir.display(), "journal names bytes past the end of the data file");
        held = RangeSet::from_vec(
            held.iter()
                .filter_map(|(s, e)| (s < data_len).then_some((s, e.min(data_len))))
                .collect(),
        );
    }
    if replayed.truncated || replayed.records > held.len() * 2 + 16 || held.end() > data_len {
        // Optional: recovery must never depend on free space (issue 17: ENOSPC here once cost a
        // device 50 MiB of acknowledged data). The journal as it is (its torn tail already cut
        // off by replay) stays valid for appends.
        if let Err(e) = compact_journal(dir, &held) {
            tracing::warn!(dir = %dir.display(), error = %e, "journal not compacted; kept as it is");
            let _ = fs::remove_file(dir.join(format!("{TMP_PREFIX}{JOURNAL_FILE}")));
        }
    }
    let updated_at = mtime_unix(&jpath).unwrap_or(now).min(now);
    Ok(Some(Found::Live {
        rec,
        dir: dir.to_path_buf(),
        held,
        updated_at,
    }))
}

/// Replaces the journal by one record per held range.
fn compact_journal(dir: &Path, held: &RangeSet) -> io::Result<()> {
    let tmp = dir.join(format!("{TMP_PREFIX}{JOURNAL_FILE}"));
    journal::create(&tmp, &held.to_vec())?;
    fs::rename(&tmp, dir.join(JOURNAL_FILE))?;
    fsync_dir(dir)
}

/// Names the store and the export root use for themselves (see the module doc).
fn is_internal(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'%')
        && name
            .as_encoded_bytes()
            .get(1)
            .is_some_and(u8::is_ascii_lowercase)
}

/// Reads every manifest under the export root: the finished transfers. A manifest counts only
/// where it can have come from [`export`]: in the directory its ids escape to, beside a regular
/// file named `escape(name)` of its size.
pub fn scan_exports(root: &Path) -> io::Result<Vec<(Manifest, PathBuf)>> {
    let mut out = Vec::new();
    for cdir in fs::read_dir(root)? {
        let cdir = cdir?;
        if !cdir.file_type()?.is_dir() {
            continue;
        }
        let cname = cdir.file_name();
        for fdir in fs::read_dir(cdir.path())? {
            let fdir = fdir?;
            if !fdir.file_type()?.is_dir() {
                continue;
            }
            let (fname, fdir) = (fdir.file_name(), fdir.path());
            let checked = |m: &Manifest| -> Result<(), String> {
                if cname.to_str() != Some(escape(&m.client_id).as_str())
                    || fname.to_str() != Some(escape(&m.file_id).as_str())
                {
                    return Err("its ids do not match its directory".into());
                }
                if m.location.is_some() {
                    // Exported elsewhere: the directory holds only the manifest.
                    return Ok(());
                }
                match fs::symlink_metadata(m.file_path(&fdir)) {
                    Ok(md) if md.is_file() && md.len() == m.size => Ok(()),
                    Ok(_) => Err("its file is not a regular file of its size".into()),
                    Err(e) => Err(format!("its file: {e}")),
                }
            };
            let path = fdir.join(MANIFEST_FILE);
            match read_json::<Manifest>(&path) {
                Ok(m) => match checked(&m) {
                    Ok(()) => out.push((m, fdir.clone())),
                    Err(why) => tracing::warn!(path = %path.display(), why, "manifest ignored"),
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if let Some(m) = legacy_manifest(&fdir, &checked)? {
                        out.push((m, fdir.clone()));
                    }
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "unreadable manifest"),
            }
        }
    }
    Ok(out)
}

/// An export published before manifests moved to [`MANIFEST_FILE`]: `<esc name>.manifest.json`
/// beside `<esc name>`. Only a candidate whose own name is its `name` escaped plus the suffix, and
/// that passes `checked`, is taken (a device's upload called `x.manifest.json` is not, since no
/// file `x` lies beside it); it is rewritten as [`MANIFEST_FILE`].
fn legacy_manifest(
    fdir: &Path,
    checked: &dyn Fn(&Manifest) -> Result<(), String>,
) -> io::Result<Option<Manifest>> {
    for entry in fs::read_dir(fdir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.ends_with(LEGACY_MANIFEST_SUFFIX) || name.starts_with('%') {
            continue;
        }
        let Ok(m) = read_json::<Manifest>(&entry.path()) else {
            continue;
        };
        if name != format!("{}{LEGACY_MANIFEST_SUFFIX}", m.file_name()) || checked(&m).is_err() {
            continue;
        }
        write_atomic(fdir, MANIFEST_FILE, &to_json(&m)?)?;
        fs::remove_file(entry.path())?;
        fsync_dir(fdir)?;
        tracing::info!(dir = %fdir.display(), "manifest moved to {MANIFEST_FILE}");
        return Ok(Some(m));
    }
    Ok(None)
}
