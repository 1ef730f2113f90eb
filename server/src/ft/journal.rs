//! The range journal of one transfer: which byte ranges of its partial file are durable.
//!
//! ```text
//! offset 0   "QFTJRNL1"                        8-byte magic
//! then       [start u64 LE][end u64 LE][check u64 LE]   24-byte records, appended
//!            check = fnv1a64(start ‖ end) ^ RECORD_SALT
//! ```
//! A record is appended (and the journal fdatasync'ed) only after the bytes it names were written and
//! the data file fdatasync'ed, so every valid record names bytes that are on disk. A crash can leave a
//! torn or zero-filled tail: replay stops at the first record whose check fails and truncates there
//! (such a record was never acknowledged). The salt makes an all-zero record invalid.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use quicft_proto::ft::RangeSet;

pub const MAGIC: &[u8; 8] = b"QFTJRNL1";
pub const RECORD_LEN: usize = 24;
const RECORD_SALT: u64 = 0x5146_545f_524e_4731;

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Encodes records for `ranges` (each non-empty) into one buffer, for a single append.
pub fn encode(ranges: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ranges.len() * RECORD_LEN);
    for &(s, e) in ranges {
        let mut rec = [0u8; 16];
        rec[..8].copy_from_slice(&s.to_le_bytes());
        rec[8..].copy_from_slice(&e.to_le_bytes());
        out.extend_from_slice(&rec);
        out.extend_from_slice(&(fnv1a64(&rec) ^ RECORD_SALT).to_le_bytes());
    }
    out
}

/// Decodes the valid prefix of a journal. Returns the ranges and the byte length of that prefix, or
/// `None` when the magic is wrong (not a journal).
pub fn decode(bytes: &[u8]) -> Option<(RangeSet, u64, usize)> {
    let body = bytes.strip_prefix(MAGIC.as_slice())?;
    let mut set = RangeSet::new();
    let mut records = 0usize;
    for rec in body.chunks_exact(RECORD_LEN) {
        let (se, check) = rec.split_at(16);
        let (s, e) = se.split_at(8);
        let (Ok(s), Ok(e), Ok(check)) = (
            <[u8; 8]>::try_from(s),
            <[u8; 8]>::try_from(e),
            <[u8; 8]>::try_from(check),
        ) else {
            break;
        };
        if fnv1a64(se) ^ RECORD_SALT != u64::from_le_bytes(check) {
            break;
        }
        let (s, e) = (u64::from_le_bytes(s), u64::from_le_bytes(e));
        if s >= e {
            break;
        }
        set.insert(s, e);
        records += 1;
    }
    let valid_len = (MAGIC.len() + records * RECORD_LEN) as u64;
    Some((set, valid_len, records))
}

/// Creates a journal holding `ranges` at `path`, synced. Used at init (empty) and for compaction.
pub fn create(path: &Path, ranges: &[(u64, u64)]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let mut buf = MAGIC.to_vec();
    buf.extend_from_slice(&encode(ranges));
    f.write_all(&buf)?;
    f.sync_all()
}

/// What replay found in a journal.
pub struct Replayed {
    pub ranges: RangeSet,
    /// Valid records; many more than `ranges.len()` means compaction pays off.
    pub records: usize,
    /// A torn tail was cut off.
    pub truncated: bool,
}

/// Reads a journal, cutting off a torn tail. `Ok(None)` when the file is not a journal.
pub fn replay(path: &Path) -> io::Result<Option<Replayed>> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    let Some((ranges, valid_len, records)) = decode(&bytes) else {
        return Ok(None);
    };
    let truncated = valid_len < bytes.len() as u64;
    if truncated {
        f.set_len(valid_len)?;
        f.sync_all()?;
    }
    Ok(Some(Replayed {
        ranges,
        records,
        truncated,
    }))
}

/// Opens a journal for appending records. `O_APPEND`, so that after a failed append is truncated away
/// the next record lands at the new end rather than after a hole.
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_torn_tail() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(encode(&[(0, 10), (20, 30), (10, 20)]));
        let (set, len, n) = decode(&bytes).expect("journal");
        assert_eq!(set.to_vec(), vec![(0, 30)]);
        assert_eq!((len, n), (bytes.len() as u64, 3));
        // A torn record and a zero-filled one are both cut off.
        let mut torn = bytes.clone();
        torn.extend(&encode(&[(40, 50)])[..13]);
        assert_eq!(decode(&torn).expect("journal").1, bytes.len() as u64);
        let mut zeros = bytes.clone();
        zeros.extend([0u8; 48]);
        let (set, len, _) = decode(&zeros).expect("journal");
        assert_eq!((set.to_vec(), len), (vec![(0, 30)], bytes.len() as u64));
        // A flipped bit stops replay at that record.
        let mut flipped = bytes.clone();
        flipped[8 + 24 + 3] ^= 1;
        assert_eq!(decode(&flipped).expect("journal").0.to_vec(), vec![(0, 10)]);
        assert!(decode(b"garbage!").is_none());
    }
}
