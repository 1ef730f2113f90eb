//! UNSUBACK ([MQTT 5.0 §3.11](https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901187),
//! [MQTT 3.1.1 §3.11](http://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html#_Toc398718077)).
//!
//! ```text
//! Fixed header   0xB0 | Remaining Length (2 in 3.1.1)
//! Packet Id      u16, never 0
//! Properties     (5 only): Reason String, User Properties
//! Reason Codes   (5 only) one u8 per filter of the UNSUBSCRIBE
//! ```
//!
//! 3.1.1 has neither properties nor codes: they decode empty and are not written.

use bytes::{BufMut, BytesMut};

use super::{Protocol, UnsubAck};
use crate::error::{DecodeError, EncodeError};
use crate::properties::Properties;
use crate::properties_codec::Allowed;
use crate::reason::ReasonCode;
use crate::wire::{self, header, Reader};

impl UnsubAck {
    pub(crate) fn read(r: &mut Reader<'_>, protocol: Protocol) -> Result<UnsubAck, DecodeError> {
        let pkid = r.pkid()?;
        if protocol == Protocol::V311 {
            return Ok(UnsubAck {
                pkid,
                codes: Vec::new(),
                properties: Properties::default(),
            });
        }
        let properties = Properties::read(r, Allowed::UNSUBACK)?;
        let mut codes = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            codes.push(ReasonCode(r.u8()?));
        }
        Ok(UnsubAck {
            pkid,
            codes,
            properties,
        })
    }

    pub(crate) fn write(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.pkid == 0 {
            return Err(EncodeError::Invalid("packet identifier 0"));
        }
        if protocol == Protocol::V311 {
            wire::put_fixed_header(out, header::UNSUBACK, 2)?;
            out.put_u16(self.pkid);
            return Ok(());
        }
        let props = self.properties.encoded_len(Allowed::UNSUBACK)?;
        wire::put_fixed_header(
            out,
            header::UNSUBACK,
            2 + wire::section_len(props) + self.codes.len(),
        )?;
        out.put_u16(self.pkid);
        self.properties.write(props, out)?;
        for code in &self.codes {
            out.put_u8(code.0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;
    use crate::wire::test_util::*;

    #[test]
    fn golden_both_versions() {
        let codes = vec![
            ReasonCode::SUCCESS,
            ReasonCode::NO_SUBSCRIPTION_EXISTED,
            ReasonCode::NOT_AUTHORIZED,
        ];
        let u = UnsubAck {
            pkid: 5,
            codes,
            properties: Properties::default(),
        };
        golden(
            &Packet::UnsubAck(u.clone()),
            Protocol::V5,
            &[0xB0, 0x06, 0x00, 0x05, 0x00, 0x00, 0x11, 0x87],
        );
        // 3.1.1 has no codes on the wire
        assert_eq!(
            encode(&Packet::UnsubAck(u), Protocol::V311),
            [0xB0, 0x02, 0x00, 0x05]
        );
        let bare = UnsubAck {
            pkid: 5,
            codes: vec![],
            properties: Properties::default(),
        };
        golden(
            &Packet::UnsubAck(bare),
            Protocol::V311,
            &[0xB0, 0x02, 0x00, 0x05],
        );
    }

    #[test]
    fn bad_input() {
        malformed(&[0xB0, 0x03, 0x00, 0x05, 0x00], Protocol::V311); // 3.1.1: exactly 2
        protocol_error(&[0xB0, 0x02, 0x00, 0x00], Protocol::V311);
        malformed(&[0xB0, 0x02, 0x00, 0x05], Protocol::V5); // 5 requires the property length
        malformed(&[0xB1, 0x02, 0x00, 0x05], Protocol::V311);
    }
}
