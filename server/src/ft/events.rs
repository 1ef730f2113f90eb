//! Transfer events for the cloud, published by the server on `$events/file/{clientId}/{fileId}`
//! (DESIGN §4): `started`, `completed`, `aborted`, `failed`, and `exported` (a background export,
//! `export_queue.rs`, put the file in the object store: `export_path` is its location). They are best effort: a full queue drops
//! an event with a warning rather than stalling an upload behind a slow consumer.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::transfer::Transfer;
use super::{now_unix, FtService};

/// A transfer event for `$events/file/{clientId}/{fileId}`.
#[derive(Debug, Clone, PartialEq)]
pub struct FtEvent {
    pub topic: String,
    /// JSON, see [`EventBody`].
    pub payload: Bytes,
}

/// The JSON of an [`FtEvent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBody {
    /// `started`, `completed`, `aborted`, `failed` or `exported`.
    pub event: String,
    pub client_id: String,
    pub file_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix seconds.
    pub time: u64,
}

/// Capacity of the event channel; events beyond it are dropped with a warning rather than stalling
/// uploads behind a slow consumer.
pub const EVENT_QUEUE: usize = 4096;

/// The optional fields of an event, filled by whoever emits it.
#[derive(Default)]
pub(super) struct EventFill {
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub export_path: Option<String>,
    pub reason: Option<String>,
}

/// What happened to a transfer: [`EventBody::event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventKind {
    Started,
    Completed,
    Aborted,
    Failed,
    Exported,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Completed => "completed",
            EventKind::Aborted => "aborted",
            EventKind::Failed => "failed",
            EventKind::Exported => "exported",
        }
    }
}

impl FtService {
    /// An `aborted` or `failed` event: the declared size and why it ended.
    pub(super) fn emit_end(&self, kind: EventKind, t: &Transfer, reason: impl Into<String>) {
        let fill = EventFill {
            size: t.meta.size,
            reason: Some(reason.into()),
            ..EventFill::default()
        };
        self.emit(kind, t, fill);
    }

    /// Queues an event about `t` for the cloud; never waits (see [`EVENT_QUEUE`]).
    pub(super) fn emit(&self, kind: EventKind, t: &Transfer, fill: EventFill) {
        self.emit_for(kind, &t.client_id, &t.file_id, &t.meta.name, fill);
    }

    /// [`FtService::emit`] for a file that is no live transfer any more.
    pub(super) fn emit_for(
        &self,
        kind: EventKind,
        client_id: &str,
        file_id: &str,
        name: &str,
        fill: EventFill,
    ) {
        let body = EventBody {
            event: kind.as_str().to_owned(),
            client_id: client_id.to_owned(),
            file_id: file_id.to_owned(),
            name: name.to_owned(),
            size: fill.size,
            sha256: fill.sha256,
            export_path: fill.export_path,
            reason: fill.reason,
            time: now_unix(),
        };
        let payload = match serde_json::to_vec(&body) {
            Ok(p) => Bytes::from(p),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode event");
                return;
            }
        };
        let ev = FtEvent {
            topic: format!("{}{client_id}/{file_id}", quicft_proto::ft::EVENTS_PREFIX),
            payload,
        };
        match self.inner.events.try_send(ev) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(event = kind.as_str(), "event queue full: event dropped")
            }
        }
    }
}
