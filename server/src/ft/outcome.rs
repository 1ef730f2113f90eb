//! The answer to one command: a PUBACK reason code plus the fields of the `$file-response` JSON.
//! A command never fails with an error: storage trouble, limits and unknown transfers are all
//! outcomes, each with the reason code DESIGN §2 gives the device for it.

use std::io;

use quicft_proto::ft::{FileMeta, FtReason};

use super::api::TransferState;

/// The answer to one command: the PUBACK reason code and the fields of the `$file-response` JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct FtOutcome {
    pub reason: FtReason,
    pub description: Option<String>,
    /// Half-open ranges held durably (status; fin with gaps).
    pub ranges: Option<Vec<(u64, u64)>>,
    /// Half-open ranges a fin lacks (fin → 0x80; status when the size is known).
    pub missing: Option<Vec<(u64, u64)>>,
    /// Where the transfer is (status, and a fin or init that finds it complete).
    pub state: Option<TransferState>,
    pub meta: Option<FileMeta>,
}

impl FtOutcome {
    pub(super) fn new(reason: FtReason) -> FtOutcome {
        FtOutcome {
            reason,
            description: None,
            ranges: None,
            missing: None,
            state: None,
            meta: None,
        }
    }

    pub(super) fn ok() -> FtOutcome {
        FtOutcome::new(FtReason::Success)
    }

    pub(super) fn with(reason: FtReason, description: impl Into<String>) -> FtOutcome {
        FtOutcome {
            description: Some(description.into()),
            ..FtOutcome::new(reason)
        }
    }

    pub(super) fn state(mut self, state: TransferState) -> FtOutcome {
        self.state = Some(state);
        self
    }
}

/// 0x97 for a full disk, else `fallback`: the answer to a storage error.
pub(super) fn storage_outcome(e: &io::Error, what: &str, fallback: FtReason) -> FtOutcome {
    let full = matches!(
        e.raw_os_error().map(rustix::io::Errno::from_raw_os_error),
        Some(rustix::io::Errno::NOSPC) | Some(rustix::io::Errno::DQUOT)
    );
    if full {
        FtOutcome::with(FtReason::Quota, format!("{what}: disk full"))
    } else {
        FtOutcome::with(fallback, format!("{what}: storage error: {e}"))
    }
}

pub(super) fn cancelled_outcome() -> FtOutcome {
    FtOutcome::with(FtReason::Cancel, "transfer cancelled by the operator")
}

/// The transfer's files vanished under the server: no usable state is left, so the device restarts
/// from 0 (DESIGN §2: 0x10), never "retry later".
pub(super) fn lost_outcome() -> FtOutcome {
    FtOutcome::with(
        FtReason::Restart,
        "stored data for this transfer is lost: init it and restart from offset 0",
    )
}
