//! A hook's durable outbox: `events.<generation>.log` holds one line per event, `<id> <json>\n`,
//! appended and fdatasynced before the event is offered for delivery; `cursor.json` says how far
//! delivery got (generation, byte offset, last delivered id), replaced atomically after each
//! delivery. When everything is delivered and the log has grown past [`COMPACT_AT`], delivery
//! moves on to an empty log of the next generation and the old one is deleted; a crash in between
//! leaves a cursor of an older generation, which means that generation was delivered in full.
//! A torn last line (a crash in the middle of an append, never acknowledged) is cut off at open.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// A fully delivered log larger than this is replaced by an empty one.
const COMPACT_AT: u64 = 1 << 20;
const CURSOR: &str = "cursor.json";

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
struct Cursor {
    generation: u64,
    offset: u64,
    delivered_id: u64,
}

struct State {
    cursor: Cursor,
    log: File,
    len: u64,
    /// Undelivered events: id, body, offset after its line.
    pending: VecDeque<(u64, Vec<u8>, u64)>,
    next_id: u64,
}

pub(super) struct Outbox {
    dir: PathBuf,
    max: usize,
    st: Mutex<State>,
}

fn log_name(generation: u64) -> String {
    format!("events.{generation}.log")
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, reading what is still to deliver.
    pub fn open(dir: &Path, max: usize) -> io::Result<Outbox> {
        fs::create_dir_all(dir)?;
        let mut cursor: Cursor = match fs::read(dir.join(CURSOR)) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Cursor::default(),
            Err(e) => return Err(e),
        };
        let mut generations = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(g) = name
                .strip_prefix("events.")
                .and_then(|r| r.strip_suffix(".log"))
                .and_then(|g| g.parse::<u64>().ok())
            {
                generations.push(g);
            }
        }
        if let Some(&newest) = generations.iter().max() {
            if newest > cursor.generation {
                // Compaction got as far as the new log: the older generation was delivered.
                cursor = Cursor {
                    generation: newest,
                    offset: 0,
                    delivered_id: cursor.delivered_id,
                };
            }
        }
        for g in generations.into_iter().filter(|g| *g < cursor.generation) {
            fs::remove_file(dir.join(log_name(g)))?;
        }
        let path = dir.join(log_name(cursor.generation));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut pending = VecDeque::new();
        let mut next_id = cursor.delivered_id + 1;
        let mut pos = 0usize;
        let start = usize::try_from(cursor.offset).unwrap_or(usize::MAX);
        while let Some(nl) = bytes
            .get(pos..)
            .and_then(|b| b.iter().position(|&c| c == b'\n'))
        {
            let line = bytes.get(pos..pos + nl).unwrap_or_default();
            let end = pos + nl + 1;
            let parsed = line.iter().position(|&c| c == b' ').and_then(|sp| {
                let id = std::str::from_utf8(line.get(..sp)?)
                    .ok()?
                    .parse::<u64>()
                    .ok()?;
                Some((id, line.get(sp + 1..)?.to_vec()))
            });
            match parsed {
                Some((id, body)) => {
                    next_id = next_id.max(id + 1);
                    if pos >= start {
                        pending.push_back((id, body, end as u64));
                    }
                }
                None => {
                    tracing::error!(path = %path.display(), at = pos, "unreadable webhook outbox line skipped")
                }
            }
            pos = end;
        }
        let log = OpenOptions::new().create(true).append(true).open(&path)?;
        if pos < bytes.len() {
            // A torn append: never acknowledged to anyone.
            log.set_len(pos as u64)?;
            log.sync_all()?;
        }
        Ok(Outbox {
            dir: dir.to_path_buf(),
            max,
            st: Mutex::new(State {
                cursor,
                log,
                len: pos as u64,
                pending,
                next_id,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Appends an event durably; `Ok(false)` when the outbox is full (the event is not kept).
    pub fn append(&self, body: &[u8]) -> io::Result<bool> {
        let mut st = self.lock();
        if st.pending.len() >= self.max {
            return Ok(false);
        }
        let id = st.next_id;
        let mut line = format!("{id} ").into_bytes();
        // One event per line: compact JSON has no raw newline, but never trust that blindly.
        line.extend(body.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
        line.push(b'\n');
        let before = st.len;
        let written = (&st.log).write_all(&line).and_then(|()| st.log.sync_data());
        if let Err(e) = written {
            let _ = st.log.set_len(before);
            return Err(e);
        }
        st.len += line.len() as u64;
        st.next_id += 1;
        let end = st.len;
        let body = line[line.len() - body.len() - 1..line.len() - 1].to_vec();
        st.pending.push_back((id, body, end));
        Ok(true)
    }

    /// The oldest undelivered event.
    pub fn next(&self) -> Option<(u64, Vec<u8>)> {
        self.lock()
            .pending
            .front()
            .map(|(id, b, _)| (*id, b.clone()))
    }

    /// Marks event `id` (the oldest) delivered. Blocking (a durable cursor write).
    pub fn delivered(&self, id: u64) -> io::Result<()> {
        let mut st = self.lock();
        let Some(&(front, _, end)) = st.pending.front() else {
            return Ok(());
        };
        if front != id {
            return Ok(());
        }
        st.pending.pop_front();
        if st.pending.is_empty() && st.len >= COMPACT_AT {
            let next = st.cursor.generation + 1;
            let path = self.dir.join(log_name(next));
            let log = OpenOptions::new().create(true).append(true).open(&path)?;
            log.sync_all()?;
            File::open(&self.dir)?.sync_all()?;
            let cursor = Cursor {
                generation: next,
                offset: 0,
                delivered_id: id,
            };
            write_cursor(&self.dir, &cursor)?;
            let old = self.dir.join(log_name(st.cursor.generation));
            st.cursor = cursor;
            st.log = log;
            st.len = 0;
            let _ = fs::remove_file(old);
            return Ok(());
        }
        st.cursor.offset = end;
        st.cursor.delivered_id = id;
        write_cursor(&self.dir, &st.cursor)
    }
}

fn write_cursor(dir: &Path, c: &Cursor) -> io::Result<()> {
    let tmp = dir.join(format!("{CURSOR}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(c).map_err(io::Error::other)?)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(CURSOR))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_torn_lines_and_compaction() {
        let dir = tempfile::tempdir().expect("tmp");
        let ob = Outbox::open(dir.path(), 3).expect("open");
        assert!(ob.append(b"{\"a\":1}").expect("append"));
        assert!(ob.append(b"{\"a\":2}").expect("append"));
        assert!(ob.append(b"{\"a\":3}").expect("append"));
        assert!(!ob.append(b"{\"a\":4}").expect("full"), "bounded");
        let (id, body) = ob.next().expect("next");
        assert_eq!((id, body.as_slice()), (1, &b"{\"a\":1}"[..]));
        ob.delivered(1).expect("mark");
        drop(ob);
        // A torn append after a crash.
        let log = dir.path().join(log_name(0));
        let mut f = OpenOptions::new().append(true).open(&log).expect("log");
        f.write_all(b"9 {\"torn").expect("write");
        drop(f);
        let ob = Outbox::open(dir.path(), 3).expect("reopen");
        assert_eq!(ob.pending(), 2);
        assert_eq!(ob.next().map(|x| x.0), Some(2));
        assert!(ob.append(b"{\"a\":5}").expect("append"));
        assert_eq!(ob.pending(), 3);
        for id in [2, 3, 4] {
            assert_eq!(ob.next().map(|x| x.0), Some(id));
            ob.delivered(id).expect("mark");
        }
        assert_eq!(ob.next(), None);
        drop(ob);
        let ob = Outbox::open(dir.path(), 3).expect("reopen");
        assert_eq!(ob.pending(), 0);
        assert!(ob.append(b"{}").expect("append"));
        assert_eq!(ob.next().map(|x| x.0), Some(5), "ids keep counting");
    }

    #[test]
    fn compacts_a_delivered_log() {
        let dir = tempfile::tempdir().expect("tmp");
        let ob = Outbox::open(dir.path(), 10).expect("open");
        let big = vec![b'x'; (COMPACT_AT as usize) + 10];
        assert!(ob.append(&big).expect("append"));
        ob.delivered(1).expect("mark");
        assert!(!dir.path().join(log_name(0)).exists());
        assert!(dir.path().join(log_name(1)).exists());
        assert!(ob.append(b"{}").expect("append"));
        drop(ob);
        let ob = Outbox::open(dir.path(), 10).expect("reopen");
        assert_eq!(ob.next().map(|x| x.0), Some(2));
    }
}
