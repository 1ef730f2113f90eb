//! CONNACK ([MQTT 5.0 §3.2](https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901074),
//! [MQTT 3.1.1 §3.2](http://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html#_Toc398718033)).
//!
//! ```text
//! Fixed header          0x20 | Remaining Length (2 in 3.1.1)
//! Acknowledge Flags     u8: bit 0 session present, bits 7-1 reserved
//! Reason Code           u8 (3.1.1: Connect Return Code 0..=5)
//! Properties            (5 only)
//! ```
//!
//! [`ConnAck::code`] is always a v5 reason code; under 3.1.1 it is mapped to and from the six return
//! codes, errors without a 3.1.1 equivalent going to the nearest one (the same table as EMQX, so that
//! devices see what they saw there).

use bytes::{BufMut, BytesMut};

use super::{ConnAck, Protocol};
use crate::error::{DecodeError, EncodeError};
use crate::properties::Properties;
use crate::properties_codec::Allowed;
use crate::reason::ReasonCode;
use crate::wire::{self, header, Reader};

const SESSION_PRESENT: u8 = 0b0000_0001;

impl ConnAck {
    pub(crate) fn read(r: &mut Reader<'_>, protocol: Protocol) -> Result<ConnAck, DecodeError> {
        let flags = r.u8()?;
        if flags & !SESSION_PRESENT != 0 {
            return Err(DecodeError::Malformed("CONNACK reserved flag set"));
        }
        let code = r.u8()?;
        let (code, properties) = match protocol {
            Protocol::V5 => (ReasonCode(code), Properties::read(r, Allowed::CONNACK)?),
            Protocol::V311 => (from_v311(code)?, Properties::default()),
        };
        Ok(ConnAck {
            session_present: flags & SESSION_PRESENT != 0,
            code,
            properties,
        })
    }

    pub(crate) fn write(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        let flags = u8::from(self.session_present);
        match protocol {
            Protocol::V5 => {
                let props = self.properties.encoded_len(Allowed::CONNACK)?;
                wire::put_fixed_header(out, header::CONNACK, 2 + wire::section_len(props))?;
                out.put_slice(&[flags, self.code.0]);
                self.properties.write(props, out)
            }
            Protocol::V311 => {
                wire::put_fixed_header(out, header::CONNACK, 2)?;
                out.put_slice(&[flags, to_v311(self.code)]);
                Ok(())
            }
        }
    }
}

/// 3.1.1 Connect Return Code → v5 reason code ([MQTT 3.1.1 §3.2.2.3]).
fn from_v311(code: u8) -> Result<ReasonCode, DecodeError> {
    Ok(match code {
        0 => ReasonCode::SUCCESS,
        1 => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        2 => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        3 => ReasonCode::SERVER_UNAVAILABLE,
        4 => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        5 => ReasonCode::NOT_AUTHORIZED,
        _ => return Err(DecodeError::Malformed("reserved CONNACK return code")),
    })
}

/// v5 reason code → the closest 3.1.1 Connect Return Code.
fn to_v311(code: ReasonCode) -> u8 {
    match code.0 {
        0x00..=0x7F => 0,
        // Unspecified, malformed, protocol error, implementation specific, unsupported version
        0x80..=0x84 => 1,
        0x85 => 2,
        0x86 => 4,
        // Not authorized, banned, bad authentication method
        0x87 | 0x8A | 0x8C => 5,
        // Server unavailable and busy, shutting down, topic name invalid, quota, use another server,
        // server moved, connection rate; and every other refusal, for which "unavailable" is the
        // least misleading answer a 3.1.1 client can get.
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;
    use crate::wire::test_util::*;

    fn ack(session_present: bool, code: ReasonCode) -> ConnAck {
        ConnAck {
            session_present,
            code,
            properties: Properties::default(),
        }
    }

    #[test]
    fn v311_golden() {
        golden(
            &Packet::ConnAck(ack(false, ReasonCode::SUCCESS)),
            Protocol::V311,
            &[0x20, 0x02, 0x00, 0x00],
        );
        golden(
            &Packet::ConnAck(ack(true, ReasonCode::SUCCESS)),
            Protocol::V311,
            &[0x20, 0x02, 0x01, 0x00],
        );
        for (v311, v5) in [(1u8, 0x84u8), (2, 0x85), (3, 0x88), (4, 0x86), (5, 0x87)] {
            let p = Packet::ConnAck(ack(false, ReasonCode(v5)));
            golden(&p, Protocol::V311, &[0x20, 0x02, 0x00, v311]);
        }
    }

    #[test]
    fn v5_errors_map_to_the_closest_v311_code() {
        for (v5, v311) in [
            (0x80u8, 1u8),
            (0x82, 1),
            (0x89, 3),
            (0x8A, 5),
            (0x8C, 5),
            (0x97, 3),
            (0x9F, 3),
            (0x95, 3),
        ] {
            let p = Packet::ConnAck(ack(false, ReasonCode(v5)));
            assert_eq!(
                encode(&p, Protocol::V311),
                [0x20, 0x02, 0x00, v311],
                "{v5:#04x}"
            );
        }
    }

    #[test]
    fn v5_golden() {
        golden(
            &Packet::ConnAck(ack(false, ReasonCode::SUCCESS)),
            Protocol::V5,
            &[0x20, 0x03, 0x00, 0x00, 0x00],
        );
        let p = ConnAck {
            session_present: true,
            code: ReasonCode::SUCCESS,
            properties: Properties {
                assigned_client_identifier: Some("auto-1".into()),
                receive_maximum: Some(100),
                ..Properties::default()
            },
        };
        #[rustfmt::skip]
        let bytes = [
            0x20, 0x0F,
            0x01, 0x00,
            0x0C,
            0x12, 0x00, 0x06, b'a', b'u', b't', b'o', b'-', b'1',
            0x21, 0x00, 0x64,
        ];
        golden(&Packet::ConnAck(p), Protocol::V5, &bytes);
        // A refusal keeps its v5 code.
        golden(
            &Packet::ConnAck(ack(false, ReasonCode::BANNED)),
            Protocol::V5,
            &[0x20, 0x03, 0x00, 0x8A, 0x00],
        );
    }

    #[test]
    fn bad_input() {
        malformed(&[0x20, 0x02, 0x02, 0x00], Protocol::V311); // reserved flag
        malformed(&[0x20, 0x03, 0x80, 0x00, 0x00], Protocol::V5);
        malformed(&[0x20, 0x02, 0x00, 0x06], Protocol::V311); // return code 6
        malformed(&[0x20, 0x03, 0x00, 0x00, 0x00], Protocol::V311); // 3.1.1 has no properties
        malformed(&[0x20, 0x02, 0x00, 0x00], Protocol::V5); // 5 requires the property length
        malformed(&[0x20, 0x01, 0x00], Protocol::V311);
        protocol_error(&[0x20, 0x05, 0x00, 0x00, 0x02, 0x01, 0x00], Protocol::V5);
        // payload format indicator
    }
}
