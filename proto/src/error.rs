//! Errors of the codec. Every decode error maps to the MQTT 5 reason code the server should answer with.

use crate::reason::ReasonCode;

/// Why a byte sequence is not an acceptable MQTT packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes cannot be an MQTT packet (bad lengths, bad flags, bad UTF-8, unknown packet type …).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// Well-formed bytes that break a protocol rule (property not allowed in this packet, QoS 3 …).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The fixed header announces more bytes than the receiver accepts; nothing was allocated.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    TooLarge { size: usize, max: usize },
    /// CONNECT names a protocol we do not speak.
    #[error("unsupported protocol name or level {0}")]
    UnsupportedProtocol(u8),
}

impl DecodeError {
    /// The MQTT 5 reason code for a DISCONNECT (or CONNACK, for a bad CONNECT) answering this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::Malformed(_) => ReasonCode::MALFORMED_PACKET,
            DecodeError::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            DecodeError::TooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocol(_) => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        }
    }
}

/// Why a value cannot be written as an MQTT packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string or binary field is longer than the 65,535 bytes its two-byte length prefix can say.
    #[error("field of {0} bytes does not fit a two-byte length")]
    FieldTooLong(usize),
    /// The whole packet is longer than the 268,435,455 bytes the remaining-length varint can say.
    #[error("packet of {0} bytes does not fit the remaining-length field")]
    PacketTooLong(usize),
    /// A value the protocol does not allow (QoS 0 PUBLISH with a packet id, empty SUBSCRIBE …).
    #[error("invalid packet: {0}")]
    Invalid(&'static str),
}
