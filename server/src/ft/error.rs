//! Errors of the service's own API (`open`, `cancel`): what an operator or the server's start sees.
//! A device never gets one: its commands end in an [`super::FtOutcome`].

use std::io;

/// Errors of the service's own API (command outcomes are [`super::FtOutcome`]s, never errors).
#[derive(Debug, thiserror::Error)]
pub enum FtError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("no transfer {file_id:?} of client {client_id:?}")]
    NotFound { client_id: String, file_id: String },
    #[error("file-transfer task failed: {0}")]
    Task(String),
}

pub(super) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> FtError {
    let what = what.into();
    move |source| FtError::Io { what, source }
}
