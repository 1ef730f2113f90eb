//! Mirrored data streams: a second copy of a QUIC data stream's bytes, so that one lost packet does
//! not hold a small message (telemetry) for a loss-detection round trip.
//!
//! A lost QUIC packet is noticed one round trip after it was sent at the earliest, and its resend
//! waits behind whatever the bottleneck queue holds: at 1 % loss on a 40 ms link that puts the
//! p99 of telemetry round trips at ~105 ms, however good the congestion controller is. Sending
//! the bytes twice, in two packets a few milliseconds apart, turns a single loss into no delay.
//!
//! Wire format (an extension of the multi-stream mapping; README "QUIC stream mapping"):
//! * The server offers it with the CONNACK user property [`OFFER`] (MQTT 5, QUIC only) and allows
//!   the client to open unidirectional streams.
//! * The client opens a unidirectional stream that starts with a [`Header`]: the QUIC stream ID of
//!   one of its bidirectional data streams as a QUIC variable-length integer (RFC 9000 §16).
//!   Everything after it is the same byte sequence the client sends on that data stream, from its
//!   first byte.
//! * The server takes each byte of the data stream from whichever copy brings it first and drops
//!   the other; replies still go out on the data stream. A mirror that ends early or is reset only
//!   stops being a copy. Both copies carry the same bytes by contract: the server does not compare
//!   them (a client can only confuse its own stream).

/// CONNACK user property (name, value) by which a server offers mirrored streams.
pub const OFFER: (&str, &str) = ("quicft-mirror", "1");

/// Whether CONNACK properties carry the [`OFFER`].
pub fn offered(properties: &crate::Properties) -> bool {
    properties
        .user_properties
        .iter()
        .any(|(k, v)| (k.as_str(), v.as_str()) == OFFER)
}

/// The start of a mirror stream: which data stream it copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// QUIC stream ID of the mirrored stream (client-initiated bidirectional: a multiple of 4).
    pub stream_id: u64,
}

/// Largest value a QUIC variable-length integer holds.
const VARINT_MAX: u64 = (1 << 62) - 1;

/// Why a mirror header is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("stream ID {0} is not a client-initiated bidirectional stream")]
    NotClientBidi(u64),
    #[error("the control stream cannot be mirrored")]
    Control,
    #[error("stream ID above 2^62 - 1")]
    TooLarge,
}

impl Header {
    /// Encodes the header (1, 2, 4 or 8 bytes).
    pub fn encode(&self) -> Result<Vec<u8>, HeaderError> {
        let v = self.stream_id;
        if v > VARINT_MAX {
            return Err(HeaderError::TooLarge);
        }
        Ok(if v < 1 << 6 {
            vec![v as u8]
        } else if v < 1 << 14 {
            ((v as u16) | 0x4000).to_be_bytes().to_vec()
        } else if v < 1 << 30 {
            ((v as u32) | 0x8000_0000).to_be_bytes().to_vec()
        } else {
            (v | 0xc000_0000_0000_0000).to_be_bytes().to_vec()
        })
    }

    /// Length of the header whose first byte is `first`.
    pub fn len_from_first_byte(first: u8) -> usize {
        1 << (first >> 6)
    }

    /// Decodes a complete header (`bytes.len() == len_from_first_byte(bytes[0])`) and checks that
    /// it names a data stream a client may mirror.
    pub fn decode(bytes: &[u8]) -> Result<Header, HeaderError> {
        let first = bytes.first().copied().unwrap_or(0);
        let mut v = u64::from(first & 0x3f);
        for b in bytes.iter().skip(1) {
            v = (v << 8) | u64::from(*b);
        }
        // Client-initiated bidirectional stream IDs have the two low bits 0b00 (RFC 9000 §2.1).
        if v & 0b11 != 0 {
            return Err(HeaderError::NotClientBidi(v));
        }
        if v == 0 {
            return Err(HeaderError::Control);
        }
        Ok(Header { stream_id: v })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length() {
        for id in [
            4u64,
            60,
            64,
            16_380,
            16_384,
            (1 << 30) - 4,
            1 << 30,
            VARINT_MAX - 3,
        ] {
            let bytes = Header { stream_id: id }.encode().expect("fits");
            assert_eq!(bytes.len(), Header::len_from_first_byte(bytes[0]), "{id}");
            assert_eq!(Header::decode(&bytes), Ok(Header { stream_id: id }), "{id}");
        }
    }

    #[test]
    fn rfc_9000_example() {
        // RFC 9000 §A.1: 0x7bbd is the two-byte encoding of 15293; 15292 is its stream-ID neighbour.
        assert_eq!(Header::len_from_first_byte(0x7b), 2);
        assert_eq!(
            Header { stream_id: 15292 }.encode().expect("fits"),
            [0x7b, 0xbc]
        );
        assert_eq!(
            Header::decode(&[0x7b, 0xbc]),
            Ok(Header { stream_id: 15292 })
        );
    }

    #[test]
    fn refuses_streams_that_cannot_be_mirrored() {
        assert_eq!(Header::decode(&[0]), Err(HeaderError::Control));
        assert_eq!(Header::decode(&[2]), Err(HeaderError::NotClientBidi(2)));
        assert_eq!(Header::decode(&[5]), Err(HeaderError::NotClientBidi(5)));
        assert_eq!(
            Header { stream_id: 1 << 62 }.encode(),
            Err(HeaderError::TooLarge)
        );
    }
}
