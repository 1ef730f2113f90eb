//! The reason codes of the file-transfer protocol (DESIGN §2): PUBACK codes in sync mode, and the
//! `reason_code` of every response.

/// What a device must do after a file-transfer command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FtReason {
    /// 0x00: done; for a segment, it is durable on the server's disk.
    Success = 0x00,
    /// 0x10: the server has no usable state for this transfer: restart from offset 0.
    Restart = 0x10,
    /// 0x80: retransmit this segment (bad checksum), or, for fin, ranges are missing.
    Retransmit = 0x80,
    /// 0x83: refused or cancelled (bad name, over a size limit, not authorised, cancelled by the operator).
    Cancel = 0x83,
    /// 0x97: quota exceeded (disk watermark, per-client quota, too many transfers): pause and retry later.
    Quota = 0x97,
}

impl FtReason {
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<FtReason> {
        match code {
            0x00 => Some(FtReason::Success),
            0x10 => Some(FtReason::Restart),
            0x80 => Some(FtReason::Retransmit),
            0x83 => Some(FtReason::Cancel),
            0x97 => Some(FtReason::Quota),
            _ => None,
        }
    }

    /// A short human description, used as `reason_description` when the handler gives none.
    pub fn description(self) -> &'static str {
        match self {
            FtReason::Success => "success",
            FtReason::Restart => "no usable state for this transfer: restart from offset 0",
            FtReason::Retransmit => "retransmit: data missing or corrupt",
            FtReason::Cancel => "transfer refused or cancelled",
            FtReason::Quota => "quota exceeded: retry later",
        }
    }
}

impl From<FtReason> for crate::reason::ReasonCode {
    fn from(r: FtReason) -> Self {
        crate::reason::ReasonCode(r.code())
    }
}
