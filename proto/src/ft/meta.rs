//! Init metadata: the JSON payload of `$file/{fileId}/init`.

use serde::{Deserialize, Serialize};

/// Longest file name accepted, in bytes of UTF-8 (DESIGN §2).
pub const MAX_NAME_LEN: usize = 240;

/// The metadata a device sends with init. Unknown fields are ignored, as EMQX does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileMeta {
    /// One path component; see [`FileMeta::validate`].
    pub name: String,
    /// Expected size in bytes, when the device knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Expected SHA-256 of the whole file, lowercase or uppercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Unix seconds after which the exported file may be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_at: Option<u64>,
    /// Seconds that stored segments of an unfinished transfer are kept (clamped by the server's config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments_ttl: Option<u64>,
    /// Anything the device wants to carry to the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<serde_json::Value>,
}

/// Why init metadata is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("metadata is not valid JSON: {0}")]
    Json(String),
    #[error("invalid file name: {0}")]
    Name(&'static str),
    #[error("invalid checksum: expected 64 hex digits")]
    Checksum,
}
