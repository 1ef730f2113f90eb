//! Group commit: one thread makes written segments durable, many at a time.
//!
//! A segment is acknowledged only when (1) its bytes are in the partial file and that file is
//! fdatasync'ed, then (2) a journal record of its range is appended and the journal fdatasync'ed. The
//! committer takes every job queued while the previous batch was syncing as the next batch, so N
//! concurrent segments of one transfer cost 2 fdatasyncs, not 2N; the files of different transfers in
//! a batch are synced on a few threads at once. Data before journal keeps the journal truthful: after a
//! crash, every recorded range has its bytes on disk.

use std::io::{self, Write};
use std::sync::Arc;

use quicft_proto::ft::RangeSet;
use tokio::sync::{mpsc, oneshot};

use super::journal;
use super::transfer::{lock, Inflight, OpenFiles, Transfer};

/// Most jobs taken into one batch; bounds the latency of the first job in a batch.
const MAX_BATCH: usize = 1024;
/// Most threads syncing the files of different transfers in parallel.
const MAX_SYNC_THREADS: usize = 8;

/// Capacity of the queue in front of the committer: handlers wait (asynchronously) when it is full.
pub(crate) const QUEUE: usize = 4096;

pub(crate) struct CommitJob {
    pub t: Arc<Transfer>,
    /// The descriptors the bytes were written through (possibly of a since-deleted file).
    pub files: Arc<OpenFiles>,
    pub ranges: Vec<(u64, u64)>,
    /// Dropped only after the ranges are inserted into `held`, so a fin that waits for no write in
    /// flight sees them.
    pub guard: Inflight,
    pub done: oneshot::Sender<io::Result<()>>,
}

/// Starts the committer thread; it ends when every sender is dropped.
pub(crate) fn spawn() -> io::Result<mpsc::Sender<CommitJob>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    std::thread::Builder::new()
        .name("ft-commit".into())
        .spawn(move || run(rx))?;
    Ok(tx)
}

fn run(mut rx: mpsc::Receiver<CommitJob>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(batch);
    }
}

struct Group {
    jobs: Vec<CommitJob>,
    result: io::Result<()>,
}

fn commit_batch(batch: Vec<CommitJob>) {
    let mut groups: Vec<Group> = Vec::new();
    for job in batch {
        match groups.iter_mut().find(|g| {
            g.jobs
                .first()
                .is_some_and(|j| Arc::ptr_eq(&j.files, &job.files))
        }) {
            Some(g) => g.jobs.push(job),
            // Err until synced: a group whose sync never ran is never acknowledged.
            None => groups.push(Group {
                jobs: vec![job],
                result: Err(io::Error::other("not synced")),
            }),
        }
    }
    par_each(&mut groups, |g| {
        let t = std::time::Instant::now();
        g.result = sync_group(&g.jobs);
        super::commit_stats::group_committed(t.elapsed(), g.jobs.len(), g.result.is_ok());
    });
    for g in groups {
        for job in g.jobs {
            let result = match &g.result {
                Ok(()) => {
                    let mut st = lock(&job.t.st);
                    for &(s, e) in &job.ranges {
                        st.held.insert(s, e);
                    }
                    Ok(())
                }
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            drop(job.guard);
            // The handler may be gone (its connection closed); the ranges are durable all the same.
            let _ = job.done.send(result);
        }
    }
}

fn sync_group(jobs: &[CommitJob]) -> io::Result<()> {
    let Some(first) = jobs.first() else {
        return Ok(());
    };
    let files = &first.files;
    files.data.sync_data()?;
    let ranges = RangeSet::from_vec(jobs.iter().flat_map(|j| j.ranges.iter().copied()).collect());
    let records = journal::encode(&ranges.to_vec());
    let before = files.journal.metadata()?.len();
    if let Err(e) = (&files.journal).write_all(&records) {
        // A partial record would hide every later one from replay: cut it off again.
        if let Err(e2) = files.journal.set_len(before) {
            tracing::error!(error = %e2, "cannot truncate journal after a failed append");
            first.t.close_files(false);
        }
        return Err(e);
    }
    files.journal.sync_data()?;
    // Files deleted under a live transfer (by hand, a clean-up job) still take writes through our
    // open descriptors, into nothing: acknowledging them would lose the bytes. Say "gone" instead,
    // which the service answers with 0x10 (restart from 0). Only the data file tells: the journal
    // is legitimately replaced by a compacted copy when a store is opened (a second server on the
    // same data dir, as in-process restarts in tests, would otherwise make the first one think its
    // transfers were lost).
    use std::os::unix::fs::MetadataExt;
    if files.data.metadata()?.nlink() == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the transfer's files were deleted",
        ));
    }
    Ok(())
}

/// Runs `f` on every item, spreading items over up to [`MAX_SYNC_THREADS`] scoped threads.
fn par_each<T: Send>(items: &mut [T], f: impl Fn(&mut T) + Sync) {
    if items.len() <= 1 {
        items.iter_mut().for_each(&f);
        return;
    }
    let per = items.len().div_ceil(MAX_SYNC_THREADS);
    let f = &f;
    std::thread::scope(|s| {
        for chunk in items.chunks_mut(per) {
            let spawned = std::thread::Builder::new().spawn_scoped(s, move || {
                chunk.iter_mut().for_each(f);
            });
            if let Err(e) = spawned {
                // The chunk went with the closure; its items keep the error they were created with.
                tracing::error!(error = %e, "cannot spawn sync thread");
            }
        }
    });
}
