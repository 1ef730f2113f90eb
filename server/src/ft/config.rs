//! The service's limits and where it keeps its files: the `[file_transfer]` section of the server's
//! configuration. Every limit answers a device with a reason code (DESIGN §2), never an error.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Limits and locations of the file-transfer service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FtConfig {
    /// Partial files and their journals (the lead's default: `<data-dir>/transfers`). Should be on the
    /// same filesystem as `export_root`, which makes publishing a rename rather than a copy.
    pub store_dir: PathBuf,
    /// Where finished files are published (`<data-dir>/exports`).
    pub export_root: PathBuf,
    /// Largest file accepted (init `size`, segment end, fin size): 0x83 beyond.
    pub max_file_size: u64,
    /// Bytes one client may hold, partial and exported-unexpired together: 0x97 beyond.
    pub client_quota: u64,
    /// Unfinished transfers one client may have at once: 0x97 beyond.
    pub max_transfers_per_client: usize,
    /// Unfinished transfers in all: 0x97 beyond.
    pub max_transfers: usize,
    /// Free bytes that must remain on the store's filesystem: 0x97 when a write would go below.
    pub min_free_disk: u64,
    /// How long an idle unfinished transfer is kept when its init gives no `segments_ttl`.
    pub segments_ttl_default_secs: u64,
    /// Upper bound on any `segments_ttl`; also how long a cancel tombstone is kept.
    pub segments_ttl_max_secs: u64,
    /// Period of [`super::FtService::run_gc`].
    pub gc_interval_secs: u64,
}

impl Default for FtConfig {
    fn default() -> FtConfig {
        FtConfig {
            store_dir: PathBuf::from("data/transfers"),
            export_root: PathBuf::from("data/exports"),
            max_file_size: 4 << 30,
            client_quota: 10 << 30,
            max_transfers_per_client: 16,
            max_transfers: 10_000,
            min_free_disk: 1 << 30,
            segments_ttl_default_secs: 24 * 3600,
            segments_ttl_max_secs: 7 * 24 * 3600,
            gc_interval_secs: 60,
        }
    }
}
