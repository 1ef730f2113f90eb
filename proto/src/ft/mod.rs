//! The file-transfer protocol carried over MQTT (DESIGN §2, EMQX-compatible topic layout).
//!
//! ```text
//! $file/{fileId}/init                      JSON metadata
//! $file/{fileId}/{offset}[/{sha256hex}]    segment bytes
//! $file/{fileId}/fin/{size}[/{sha256hex}]  empty
//! $file/{fileId}/abort                     empty
//! $file/{fileId}/status                    empty, or init's JSON (quicft extension)
//! ```
//! `status` answers with the ranges held; with init's JSON as payload the server first inits a
//! transfer it does not know, so a device that may or may not be resuming needs one round trip.
//! Every command also exists under `$file-async/`. Outcomes go to `$file-response/{clientId}`.

mod meta;
pub mod ranges;
mod reason;
mod response;
mod topic;

pub use meta::{FileMeta, MetaError, MAX_NAME_LEN};
pub use ranges::RangeSet;
pub use reason::FtReason;
pub use response::{response_topic, Response, RESPONSE_VSN};
pub use topic::{
    parse_topic, Command, FileId, FtTopic, FtTopicError, Mode, Sha256, MAX_FILE_ID_LEN,
};

/// Topic prefix of synchronous commands.
pub const SYNC_PREFIX: &str = "$file/";
/// Topic prefix of asynchronous commands.
pub const ASYNC_PREFIX: &str = "$file-async/";
/// Prefix of the per-client response topic: `$file-response/{clientId}`.
pub const RESPONSE_PREFIX: &str = "$file-response/";
/// Prefix of transfer events: `$events/file/{clientId}/{fileId}`.
pub const EVENTS_PREFIX: &str = "$events/file/";

/// True when `topic` is a file-transfer command topic (sync or async); such publishes are never routed
/// to subscribers.
pub fn is_ft_topic(topic: &str) -> bool {
    topic.starts_with(SYNC_PREFIX) || topic.starts_with(ASYNC_PREFIX)
}
