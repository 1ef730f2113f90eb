//! Deliveries on disk: `{data_dir}/deliveries/{id}/content` (the bytes) and
//! `{id}/delivery.json` (the record with per-device state). A delivery being uploaded lives in
//! `{id}.part/` and is renamed into place once its bytes and record are durable, so a crash
//! mid-upload leaves nothing that looks like a delivery (`.part` directories are removed at
//! start). Ids are made here (16 hex digits) and checked by [`valid_id`] before any path is built
//! from one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::DeviceProgress;

pub const RECORD: &str = "delivery.json";
pub const CONTENT: &str = "content";

/// What is stored of a delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub name: String,
    pub version: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    /// Unix seconds.
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub targets: Vec<String>,
    #[serde(default)]
    pub devices: BTreeMap<String, DeviceProgress>,
}

/// A fresh delivery id: 16 lowercase hex digits from the system's random source.
pub fn new_id() -> std::io::Result<String> {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| std::io::Error::other("no random source"))?;
    Ok(hex::encode(b))
}

/// Whether `id` is one [`new_id`] could have made (so it is safe as a path component).
pub fn valid_id(id: &str) -> bool {
    id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Writes `record` to `dir/delivery.json` atomically (temporary file, fsync, rename).
pub fn save(dir: &Path, record: &Record) -> std::io::Result<()> {
    let tmp = dir.join(format!("{RECORD}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(record)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(RECORD))
}

/// Every stored delivery; removes what an interrupted upload left.
pub fn load_all(root: &Path) -> std::io::Result<Vec<(Record, PathBuf)>> {
    std::fs::create_dir_all(root)?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if name.ends_with(".part") {
            tracing::info!(path = %path.display(), "removing an interrupted delivery upload");
            let _ = std::fs::remove_dir_all(&path);
            continue;
        }
        if !valid_id(name) {
            continue;
        }
        let record = std::fs::read(path.join(RECORD))
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()));
        match record {
            Ok(r) if r.id == name => out.push((r, path)),
            Ok(_) => {
                tracing::warn!(path = %path.display(), "delivery record names another id; skipped")
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable delivery record; skipped")
            }
        }
    }
    Ok(out)
}

/// fsyncs a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_path_safe() {
        let id = new_id().unwrap();
        assert!(valid_id(&id), "{id}");
        for bad in [
            "",
            "..",
            "../../etc/passw",
            "0123456789ABCDEF",
            "0123456789abcde/",
            "0123456789abcdef0",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn interrupted_uploads_are_removed_and_records_reload() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("0011223344556677.part")).unwrap();
        let id = new_id().unwrap();
        let d = dir.path().join(&id);
        std::fs::create_dir_all(&d).unwrap();
        let r = Record {
            id: id.clone(),
            name: "m.bin".into(),
            version: "1".into(),
            size: 3,
            sha256: "00".into(),
            created_at: 1,
            expires_at: None,
            targets: vec!["a".into()],
            devices: BTreeMap::new(),
        };
        save(&d, &r).unwrap();
        let all = load_all(dir.path()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0.id, id);
        assert!(!dir.path().join("0011223344556677.part").exists());
    }
}
