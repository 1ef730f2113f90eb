//! Init metadata: the JSON payload of `$file/{fileId}/init`.
//!
//! ```text
//! { "name": "dump.bin",            required; one path component, see FileMeta::validate
//!   "size": 1048576,               optional u64
//!   "checksum": "e3b0…b855",       optional SHA-256, 64 hex digits
//!   "expire_at": 1700000000,       optional unix seconds
//!   "segments_ttl": 600,           optional seconds, > 0
//!   "user_data": { … } }           optional, any JSON
//! ```

use serde::{Deserialize, Serialize};

use super::topic::Sha256;

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
    #[error("invalid segments_ttl: must be at least 1 second")]
    SegmentsTtl,
}

impl FileMeta {
    /// Decodes init metadata and [validates](FileMeta::validate) it.
    ///
    /// The payload must be a JSON object without duplicate keys.
    pub fn parse(json: &[u8]) -> Result<FileMeta, MetaError> {
        // serde's derive would also take the fields as a JSON array; going through
        // `serde_json::Value` instead would silently keep the last of two `name`s.
        let first = json.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(MetaError::Json("expected a JSON object".to_owned()));
        }
        let meta: FileMeta =
            serde_json::from_slice(json).map_err(|e| MetaError::Json(e.to_string()))?;
        meta.validate()?;
        Ok(meta)
    }

    /// Enforces DESIGN §2: the name is a single path component of 1..=240 bytes of UTF-8, without
    /// `/`, `\`, `:`, NUL or control characters, and is not `.` or `..`; a checksum is 64 hex
    /// digits; `segments_ttl`, when given, is positive (EMQX refuses 0 too).
    pub fn validate(&self) -> Result<(), MetaError> {
        validate_name(&self.name)?;
        if let Some(sum) = &self.checksum {
            Sha256::parse_hex(sum).map_err(|_| MetaError::Checksum)?;
        }
        if self.segments_ttl == Some(0) {
            return Err(MetaError::SegmentsTtl);
        }
        Ok(())
    }

    /// The whole-file checksum as bytes, when present and well formed.
    pub fn checksum_bytes(&self) -> Option<Sha256> {
        Sha256::parse_hex(self.checksum.as_deref()?).ok()
    }
}

/// The name is later joined to a directory on the server (escaped, but refused here first so a
/// traversal attempt gets a clear 0x83 instead of a surprising file name).
fn validate_name(name: &str) -> Result<(), MetaError> {
    if name.is_empty() {
        return Err(MetaError::Name("empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(MetaError::Name("longer than 240 bytes of UTF-8"));
    }
    if name == "." || name == ".." {
        return Err(MetaError::Name("`.` and `..` are not file names"));
    }
    // `:` is refused for Windows drive letters and NTFS streams; `\` is a separator there.
    if name.contains(['/', '\\', ':']) {
        return Err(MetaError::Name("must not contain `/`, `\\` or `:`"));
    }
    // char::is_control covers NUL, C0 (U+0000..U+001F), DEL and C1 (U+007F..U+009F).
    if name.chars().any(char::is_control) {
        return Err(MetaError::Name(
            "must not contain NUL or control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn named(name: &str) -> FileMeta {
        FileMeta {
            name: name.to_owned(),
            size: None,
            checksum: None,
            expire_at: None,
            segments_ttl: None,
            user_data: None,
        }
    }

    fn name_ok(name: &str) -> bool {
        named(name).validate().is_ok()
    }

    #[test]
    fn good_names() {
        for name in [
            "a",
            "dump.bin",
            "...",
            ".hidden",
            "a..b",
            "with space",
            "100%",
            "日本語.txt",
            "emoji 🚗.log",
        ] {
            assert!(name_ok(name), "{name:?}");
        }
    }

    #[test]
    fn bad_names() {
        for name in [
            "",
            ".",
            "..",
            "../../etc/passwd",
            "a/b",
            "/abs",
            "a\\b",
            "..\\x",
            "C:x",
            "file.txt:stream",
            "a\0b",
            "line\nbreak",
            "tab\t",
            "del\u{7f}",
            "c1\u{85}",
            "esc\u{1b}[31m",
        ] {
            assert!(!name_ok(name), "{name:?}");
        }
    }

    #[test]
    fn name_length_is_bytes_not_chars() {
        assert!(name_ok(&"x".repeat(MAX_NAME_LEN)));
        assert!(!name_ok(&"x".repeat(MAX_NAME_LEN + 1)));
        // 80 × 3-byte characters = 240 bytes: at the limit.
        let cjk = "語".repeat(80);
        assert_eq!(cjk.len(), MAX_NAME_LEN);
        assert!(name_ok(&cjk));
        // 61 × 4 bytes = 244 bytes, only 61 characters.
        assert!(!name_ok(&"🚗".repeat(61)));
        // 239 + a 2-byte character = 241 bytes.
        assert!(!name_ok(&format!("{}é", "x".repeat(MAX_NAME_LEN - 1))));
    }

    #[test]
    fn parse_full() {
        let json = format!(
            r#"{{"name":"a.bin","size":10,"checksum":"{}","expire_at":1700000000,
                "segments_ttl":60,"user_data":{{"k":[1,2]}},"unknown":true}}"#,
            HEX.to_uppercase()
        );
        let meta = FileMeta::parse(json.as_bytes()).expect("valid metadata");
        assert_eq!(meta.name, "a.bin");
        assert_eq!(meta.size, Some(10));
        assert_eq!(meta.expire_at, Some(1_700_000_000));
        assert_eq!(meta.segments_ttl, Some(60));
        assert_eq!(meta.user_data, Some(serde_json::json!({"k": [1, 2]})));
        assert_eq!(
            meta.checksum_bytes().map(|s| s.to_hex()),
            Some(HEX.to_owned())
        );
    }

    #[test]
    fn parse_errors() {
        fn kind(e: &MetaError) -> &'static str {
            match e {
                MetaError::Json(_) => "json",
                MetaError::Name(_) => "name",
                MetaError::Checksum => "checksum",
                MetaError::SegmentsTtl => "ttl",
            }
        }
        let cases = [
            ("", "json"),
            ("{", "json"),
            (" [\"a\"]", "json"),
            ("\"a\"", "json"),
            ("{}", "json"),
            (r#"{"name":1}"#, "json"),
            (r#"{"name":"a","size":-1}"#, "json"),
            (r#"{"name":"a","name":"b"}"#, "json"),
            (r#"{"name":"../../etc/passwd"}"#, "name"),
            (r#"{"name":"a\u0000"}"#, "name"),
            (r#"{"name":"a","checksum":"abc"}"#, "checksum"),
            (r#"{"name":"a","segments_ttl":0}"#, "ttl"),
        ];
        for (json, expected) in cases {
            match FileMeta::parse(json.as_bytes()) {
                Err(e) => assert_eq!(kind(&e), expected, "{json}: {e}"),
                Ok(meta) => panic!("{json}: accepted {meta:?}"),
            }
        }
        // Whitespace before the object is fine.
        assert!(FileMeta::parse(b" \n{\"name\":\"a\"}").is_ok());
    }

    #[test]
    fn serialize_skips_absent_fields() {
        let json = serde_json::to_string(&named("a")).expect("serializable");
        assert_eq!(json, r#"{"name":"a"}"#);
    }
}
