//! AUTH, MQTT 5 only ([MQTT 5.0 §3.15](https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901217)).
//!
//! ```text
//! Fixed header   0xF0 | Remaining Length
//! Reason Code    u8          \  omitted when 0x00 without properties
//! Properties                 /  Authentication Method and Data, Reason String, User Properties
//! ```
//!
//! Unlike DISCONNECT and the PUBACK family, §3.15.2.2 does not let the property length go when a reason
//! code is written, so it is always written then (a lone reason code is still read, as the others).

use bytes::BytesMut;

use super::{Auth, Protocol};
use crate::error::{DecodeError, EncodeError};
use crate::properties_codec::Allowed;
use crate::wire::{self, header, Reader, ReasonTail};

impl Auth {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Auth, DecodeError> {
        let (code, properties) = wire::read_reason_tail(r, Allowed::AUTH)?;
        Ok(Auth { code, properties })
    }

    pub(crate) fn write(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        if protocol == Protocol::V311 {
            return Err(EncodeError::Invalid("AUTH does not exist in MQTT 3.1.1"));
        }
        let tail = ReasonTail::plan(self.code, &self.properties, Allowed::AUTH, false)?;
        wire::put_fixed_header(out, header::AUTH, tail.len())?;
        wire::write_reason_tail(out, tail, self.code, &self.properties)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::packet::Packet;
    use crate::properties::Properties;
    use crate::reason::ReasonCode;
    use crate::wire::test_util::*;

    #[test]
    fn golden_forms() {
        golden(&Packet::Auth(Auth::default()), Protocol::V5, &[0xF0, 0x00]);
        let a = Auth {
            code: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: Properties {
                authentication_method: Some("S".into()),
                authentication_data: Some(Bytes::from_static(&[1, 2])),
                ..Properties::default()
            },
        };
        #[rustfmt::skip]
        let bytes = [0xF0, 0x0B, 0x18, 0x09, 0x15, 0x00, 0x01, b'S', 0x16, 0x00, 0x02, 0x01, 0x02];
        golden(&Packet::Auth(a), Protocol::V5, &bytes);
        let bare = Auth {
            code: ReasonCode::REAUTHENTICATE,
            properties: Properties::default(),
        };
        golden(&Packet::Auth(bare), Protocol::V5, &[0xF0, 0x02, 0x19, 0x00]);
    }

    #[test]
    fn short_forms_decode() {
        assert_eq!(
            decode(&[0xF0, 0x01, 0x19], Protocol::V5),
            Ok(Packet::Auth(Auth {
                code: ReasonCode::REAUTHENTICATE,
                properties: Properties::default(),
            }))
        );
    }

    #[test]
    fn v311_has_no_auth() {
        malformed(&[0xF0, 0x00], Protocol::V311);
        let mut out = BytesMut::new();
        assert!(Packet::Auth(Auth::default())
            .encode(Protocol::V311, &mut out)
            .is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn bad_input() {
        malformed(&[0xF1, 0x00], Protocol::V5);
        protocol_error(&[0xF0, 0x04, 0x18, 0x02, 0x23, 0x00], Protocol::V5); // topic alias
    }
}
