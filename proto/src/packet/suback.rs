//! SUBACK ([MQTT 5.0 §3.9](https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901171),
//! [MQTT 3.1.1 §3.9](http://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html#_Toc398718068)).
//!
//! ```text
//! Fixed header   0x90 | Remaining Length
//! Packet Id      u16, never 0
//! Properties     (5 only): Reason String, User Properties
//! Reason Codes   one u8 per filter of the SUBSCRIBE
//!                (3.1.1 return codes: 0x00, 0x01, 0x02 granted QoS, 0x80 failure)
//! ```

use bytes::{BufMut, BytesMut};

use super::{Protocol, SubAck};
use crate::error::{DecodeError, EncodeError};
use crate::properties::Properties;
use crate::properties_codec::Allowed;
use crate::reason::ReasonCode;
use crate::wire::{self, header, Reader};

impl SubAck {
    pub(crate) fn read(r: &mut Reader<'_>, protocol: Protocol) -> Result<SubAck, DecodeError> {
        let pkid = r.pkid()?;
        let properties = Properties::read_for(r, protocol, Allowed::SUBACK)?;
        let mut codes = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            let code = r.u8()?;
            if protocol == Protocol::V311 && !matches!(code, 0x00..=0x02 | 0x80) {
                return Err(DecodeError::Malformed("reserved SUBACK return code"));
            }
            codes.push(ReasonCode(code));
        }
        Ok(SubAck {
            pkid,
            codes,
            properties,
        })
    }

    pub(crate) fn write(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.pkid == 0 {
            return Err(EncodeError::Invalid("packet identifier 0"));
        }
        let props = match protocol {
            Protocol::V5 => Some(self.properties.encoded_len(Allowed::SUBACK)?),
            Protocol::V311 => {
                if self.codes.iter().any(|c| c.0 > 0x02 && !c.is_error()) {
                    return Err(EncodeError::Invalid(
                        "SUBACK code with no MQTT 3.1.1 equivalent",
                    ));
                }
                None
            }
        };
        let len = 2 + props.map_or(0, wire::section_len) + self.codes.len();
        wire::put_fixed_header(out, header::SUBACK, len)?;
        out.put_u16(self.pkid);
        if let Some(props) = props {
            self.properties.write(props, out)?;
        }
        for code in &self.codes {
            out.put_u8(match protocol {
                Protocol::V5 => code.0,
                // every v5 failure is the one 3.1.1 failure
                Protocol::V311 if code.is_error() => 0x80,
                Protocol::V311 => code.0,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;
    use crate::wire::test_util::*;

    fn suback(codes: &[u8]) -> SubAck {
        SubAck {
            pkid: 10,
            codes: codes.iter().map(|&c| ReasonCode(c)).collect(),
            properties: Properties::default(),
        }
    }

    #[test]
    fn v311_golden() {
        let p = Packet::SubAck(suback(&[0x00, 0x01, 0x02, 0x80]));
        golden(
            &p,
            Protocol::V311,
            &[0x90, 0x06, 0x00, 0x0A, 0x00, 0x01, 0x02, 0x80],
        );
    }

    #[test]
    fn v5_golden() {
        let p = Packet::SubAck(suback(&[0x01, 0x87, 0xA2]));
        golden(
            &p,
            Protocol::V5,
            &[0x90, 0x06, 0x00, 0x0A, 0x00, 0x01, 0x87, 0xA2],
        );
        let mut s = suback(&[0x00]);
        s.properties.reason_string = Some("r".into());
        golden(
            &Packet::SubAck(s),
            Protocol::V5,
            &[0x90, 0x08, 0x00, 0x0A, 0x04, 0x1F, 0x00, 0x01, b'r', 0x00],
        );
    }

    #[test]
    fn v5_errors_become_0x80_in_v311() {
        let p = Packet::SubAck(suback(&[0x01, 0x87, 0xA2, 0x8F]));
        assert_eq!(
            encode(&p, Protocol::V311),
            [0x90, 0x06, 0x00, 0x0A, 0x01, 0x80, 0x80, 0x80]
        );
        let odd = Packet::SubAck(suback(&[0x11]));
        assert!(matches!(
            odd.encode(Protocol::V311, &mut BytesMut::new()),
            Err(EncodeError::Invalid(_))
        ));
    }

    #[test]
    fn bad_input() {
        malformed(&[0x90, 0x03, 0x00, 0x0A, 0x03], Protocol::V311); // return code 3
        malformed(&[0x90, 0x03, 0x00, 0x0A, 0x87], Protocol::V311); // v5-only code
        protocol_error(&[0x90, 0x03, 0x00, 0x00, 0x00], Protocol::V311); // pkid 0
        malformed(&[0x92, 0x03, 0x00, 0x0A, 0x00], Protocol::V311); // flags
        protocol_error(
            &[0x90, 0x06, 0x00, 0x0A, 0x02, 0x01, 0x00, 0x00],
            Protocol::V5,
        ); // PFI not allowed
    }
}
