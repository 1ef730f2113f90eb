//! DISCONNECT ([MQTT 5.0 §3.14](https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901205),
//! [MQTT 3.1.1 §3.14](http://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html#_Toc398718090)).
//!
//! ```text
//! Fixed header   0xE0 | Remaining Length (0 in 3.1.1)
//! Reason Code    u8          \  5 only; omitted when 0x00 without properties
//! Properties     (5 only)    /  length omitted when there are none
//! ```

use bytes::BytesMut;

use super::{Disconnect, Protocol};
use crate::error::{DecodeError, EncodeError};
use crate::properties_codec::Allowed;
use crate::wire::{self, header, Reader, ReasonTail};

impl Disconnect {
    pub(crate) fn read(r: &mut Reader<'_>, protocol: Protocol) -> Result<Disconnect, DecodeError> {
        match protocol {
            // a 3.1.1 body is caught as trailing bytes
            Protocol::V311 => Ok(Disconnect::default()),
            Protocol::V5 => {
                let (code, properties) = wire::read_reason_tail(r, Allowed::DISCONNECT)?;
                Ok(Disconnect { code, properties })
            }
        }
    }

    pub(crate) fn write(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        let tail = match protocol {
            Protocol::V5 => {
                ReasonTail::plan(self.code, &self.properties, Allowed::DISCONNECT, true)?
            }
            Protocol::V311 => ReasonTail::Empty,
        };
        wire::put_fixed_header(out, header::DISCONNECT, tail.len())?;
        wire::write_reason_tail(out, tail, self.code, &self.properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;
    use crate::properties::Properties;
    use crate::reason::ReasonCode;
    use crate::wire::test_util::*;

    #[test]
    fn normal_disconnection_both_versions() {
        let p = Packet::Disconnect(Disconnect::default());
        golden(&p, Protocol::V311, &[0xE0, 0x00]);
        golden(&p, Protocol::V5, &[0xE0, 0x00]);
    }

    #[test]
    fn v5_forms() {
        let d = Disconnect {
            code: ReasonCode::SESSION_TAKEN_OVER,
            properties: Properties::default(),
        };
        golden(
            &Packet::Disconnect(d.clone()),
            Protocol::V5,
            &[0xE0, 0x01, 0x8E],
        );
        // 3.1.1 has no reason code
        assert_eq!(encode(&Packet::Disconnect(d), Protocol::V311), [0xE0, 0x00]);
        let d = Disconnect {
            code: ReasonCode::NORMAL_DISCONNECTION,
            properties: Properties {
                session_expiry_interval: Some(0),
                ..Properties::default()
            },
        };
        golden(
            &Packet::Disconnect(d),
            Protocol::V5,
            &[0xE0, 0x07, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00],
        );
    }

    #[test]
    fn v5_short_forms_decode() {
        assert_eq!(
            decode(&[0xE0, 0x01, 0x04], Protocol::V5),
            Ok(Packet::Disconnect(Disconnect {
                code: ReasonCode::DISCONNECT_WITH_WILL,
                properties: Properties::default(),
            }))
        );
        assert_eq!(
            decode(&[0xE0, 0x02, 0x00, 0x00], Protocol::V5),
            Ok(Packet::Disconnect(Disconnect::default()))
        );
    }

    #[test]
    fn bad_input() {
        malformed(&[0xE0, 0x01, 0x00], Protocol::V311);
        malformed(&[0xE2, 0x00], Protocol::V5);
        protocol_error(&[0xE0, 0x04, 0x00, 0x02, 0x17, 0x01], Protocol::V5); // request problem info
                                                                             // server reference twice
        protocol_error(
            &[0xE0, 0x08, 0x00, 0x06, 0x1C, 0x00, 0x00, 0x1C, 0x00, 0x00],
            Protocol::V5,
        );
    }
}
