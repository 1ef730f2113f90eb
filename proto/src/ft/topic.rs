//! Parsing of `$file/…` and `$file-async/…` topics (STUB — being written).

/// Sync (`$file/`) or async (`$file-async/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Sync,
    Async,
}

/// A client-chosen file id: one non-empty topic level.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(String);

impl FileId {
    pub fn parse(s: &str) -> Result<FileId, FtTopicError> {
        Ok(FileId(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A SHA-256 digest parsed from 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

/// A file-transfer command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Init,
    Segment { offset: u64, checksum: Option<Sha256> },
    Fin { size: u64, checksum: Option<Sha256> },
    Abort,
    Status,
}

/// A parsed file-transfer topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FtTopic {
    pub mode: Mode,
    pub file_id: FileId,
    pub command: Command,
}

/// Why a `$file…` topic is not a valid command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FtTopicError {
    #[error("invalid file-transfer topic: {0}")]
    Invalid(&'static str),
}

/// `None` when `topic` is not under `$file/` or `$file-async/`.
pub fn parse_topic(_topic: &str) -> Option<Result<FtTopic, FtTopicError>> {
    None
}
