//! `segment`: stores bytes at an offset durably before answering 0x00 (DESIGN §2).
//!
//! Admission (under the transfer's state lock) charges the client's quota for the bytes not yet
//! held and registers them in flight; the SHA-256 check and the write run on a blocking thread; the
//! committer (`commit.rs`) makes data and journal durable and then adds the ranges to `held`. Only
//! then is the segment acknowledged. Segments never take the op lock: they only wait on it while
//! init creates the files or fin assembles, and a transfer that leaves meanwhile is looked up again
//! (`after_gone`).

use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use quicft_proto::ft::{FtReason, Sha256};
use sha2::Digest;
use tokio::sync::oneshot;

use super::commit::CommitJob;
use super::outcome::{cancelled_outcome, lost_outcome, storage_outcome, FtOutcome};
use super::registry::Lookup;
use super::transfer::{lock, Phase, Transfer};
use super::{now_unix, FtService};

impl FtService {
    pub(super) async fn segment(
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
            match t.phase() {
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
                if st.phase() != Phase::Receiving {
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
        if t.phase() == Phase::Gone {
            return after_gone(self.lookup(client_id, file_id), end);
        }
        FtOutcome::ok()
    }

    async fn segment_error(&self, t: &Arc<Transfer>, e: SegmentError, end: u64) -> FtOutcome {
        if t.phase() == Phase::Gone {
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
}

enum SegmentError {
    Checksum,
    DiskFull,
    Bounds,
    Io(io::Error),
}

fn to_index(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The outcome for a segment ending at `end` when the transfer is not (or no longer) live.
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
