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

/// Where finished files go: the `[export]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    /// `local` (the default: `file_transfer.export_root`) or `s3`.
    pub backend: ExportBackend,
    /// The object store when `backend = "s3"`.
    pub s3: S3Config,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportBackend {
    #[default]
    Local,
    S3,
}

/// An S3-compatible object store (`[export.s3]`). Unset credentials come from the usual AWS
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, and
/// `AWS_ENDPOINT`, `AWS_REGION` for unset `endpoint` and `region`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// `https://host:port` of a non-AWS store (Ceph RGW, MinIO, Garage…); unset for AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: String,
    /// Put before every key, e.g. `quicft/` (keys are `{prefix}{clientId}/{fileId}/{name}`, escaped).
    pub prefix: String,
    /// `https://bucket.host/key` instead of `https://host/bucket/key` (path style, the default,
    /// which every S3-compatible store understands).
    pub virtual_hosted_style: bool,
    /// Allow an `http://` endpoint (a store on loopback or a trusted network).
    pub allow_http: bool,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Bytes per multipart part (at least 5 MiB, S3's minimum; 8 MiB by default).
    pub part_size: u64,
    /// Parts uploaded at once (memory: about this many parts plus one).
    pub parallel_parts: usize,
    /// Retries of one request (connection refused, 5xx, throttling), with exponential backoff.
    pub max_retries: usize,
    /// Give up retrying one request after this long (the export is then retried as a whole later).
    pub retry_timeout_secs: u64,
    /// Lifetime of the presigned URLs that `GET /api/v1/files/{c}/{f}/content` redirects to.
    pub presign_expiry_secs: u64,
}

/// S3's smallest part but the last.
pub const MIN_PART_SIZE: u64 = 5 << 20;

impl Default for S3Config {
    fn default() -> S3Config {
        S3Config {
            endpoint: None,
            region: None,
            bucket: String::new(),
            prefix: String::new(),
            virtual_hosted_style: false,
            allow_http: false,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            part_size: 8 << 20,
            parallel_parts: 4,
            max_retries: 10,
            retry_timeout_secs: 120,
            presign_expiry_secs: 3600,
        }
    }
}

impl ExportConfig {
    /// What is wrong with the section, if anything.
    pub fn check(&self) -> Result<(), String> {
        if self.backend != ExportBackend::S3 {
            return Ok(());
        }
        let s3 = &self.s3;
        if s3.bucket.is_empty() {
            return Err("export.s3.bucket is required with backend = \"s3\"".into());
        }
        if !(MIN_PART_SIZE..=(5 << 30)).contains(&s3.part_size) {
            return Err(format!(
                "export.s3.part_size must be between {MIN_PART_SIZE} and 5 GiB"
            ));
        }
        if !(1..=64).contains(&s3.parallel_parts) {
            return Err("export.s3.parallel_parts must be between 1 and 64".into());
        }
        if s3.presign_expiry_secs == 0 || s3.presign_expiry_secs > 7 * 24 * 3600 {
            return Err("export.s3.presign_expiry_secs must be between 1 and 604800".into());
        }
        Ok(())
    }
}
