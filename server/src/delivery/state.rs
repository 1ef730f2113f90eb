//! What a delivery knows of each device: the last state it reached and when.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One device's state for one delivery (`GET /api/v1/deliveries/{id}` shows it per device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    /// Targeted by id, nothing heard from the device yet.
    Pending,
    /// Told of the delivery on its notification topic.
    Notified,
    /// Fetching blocks; `bytes` says how many were sent.
    Downloading,
    /// The device reports the file complete and its SHA-256 correct.
    Verified,
    /// The device reports the file installed.
    Applied,
    /// The device reports a failure; `reason` says which.
    Failed,
    /// The delivery expired before the device verified it.
    Expired,
}

impl DeviceState {
    /// Whether the device is done with the delivery (expiry no longer changes its state).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeviceState::Verified | DeviceState::Applied | DeviceState::Failed
        )
    }

    /// Whether a device report may move from `self` to `next` (a late `downloading` report
    /// does not undo `verified`).
    pub fn may_become(self, next: DeviceState) -> bool {
        match (self, next) {
            (_, DeviceState::Pending | DeviceState::Expired) => false,
            (DeviceState::Applied, _) => next == DeviceState::Failed,
            (DeviceState::Verified, DeviceState::Notified | DeviceState::Downloading) => false,
            _ => true,
        }
    }
}

/// One device's progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceProgress {
    pub state: DeviceState,
    /// Bytes of the file sent to the device so far (capped at the file's size).
    pub bytes: u64,
    /// The device's reason, for `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix seconds of the last change.
    pub updated_at: u64,
}

impl DeviceProgress {
    pub fn new(state: DeviceState, now: u64) -> DeviceProgress {
        DeviceProgress {
            state,
            bytes: 0,
            reason: None,
            updated_at: now,
        }
    }
}
