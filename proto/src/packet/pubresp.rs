//! PUBACK, PUBREC, PUBREL, PUBCOMP
//! ([MQTT 5.0 §3.4–3.7](https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901121),
//! [MQTT 3.1.1 §3.4–3.7](http://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html#_Toc398718043)).
//!
//! ```text
//! Fixed header   0x40 PUBACK | 0x50 PUBREC | 0x62 PUBREL | 0x70 PUBCOMP, Remaining Length
//! Packet Id      u16, never 0
//! Reason Code    u8          \  5 only; omitted when 0x00 without properties
//! Properties     (5 only)    /  length omitted when there are none
//! ```
//!
//! Under 3.1.1 the packet is the packet id alone: the code and properties are not written (a 3.1.1
//! device cannot be told why; the file-transfer layer answers it on the response topic instead).

use bytes::{BufMut, BytesMut};

use super::{Protocol, PubResp};
use crate::error::{DecodeError, EncodeError};
use crate::properties::Properties;
use crate::properties_codec::Allowed;
use crate::reason::ReasonCode;
use crate::wire::{self, Reader, ReasonTail};

impl PubResp {
    pub(crate) fn read(r: &mut Reader<'_>, protocol: Protocol) -> Result<PubResp, DecodeError> {
        let pkid = r.pkid()?;
        let (code, properties) = match protocol {
            Protocol::V5 => wire::read_reason_tail(r, Allowed::PUB_RESP)?,
            Protocol::V311 => (ReasonCode::SUCCESS, Properties::default()),
        };
        Ok(PubResp {
            pkid,
            code,
            properties,
        })
    }

    /// `first_byte` says which of the four packets this is.
    pub(crate) fn write(
        &self,
        first_byte: u8,
        protocol: Protocol,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        if self.pkid == 0 {
            return Err(EncodeError::Invalid("packet identifier 0"));
        }
        let tail = match protocol {
            Protocol::V5 => ReasonTail::plan(self.code, &self.properties, Allowed::PUB_RESP, true)?,
            Protocol::V311 => ReasonTail::Empty,
        };
        wire::put_fixed_header(out, first_byte, 2 + tail.len())?;
        out.put_u16(self.pkid);
        wire::write_reason_tail(out, tail, self.code, &self.properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;
    use crate::wire::test_util::*;

    #[test]
    fn minimal_forms_all_four_kinds() {
        let r = PubResp::new(0x1234, ReasonCode::SUCCESS);
        for (p, first) in [
            (Packet::PubAck(r.clone()), 0x40u8),
            (Packet::PubRec(r.clone()), 0x50),
            (Packet::PubRel(r.clone()), 0x62),
            (Packet::PubComp(r.clone()), 0x70),
        ] {
            golden(&p, Protocol::V311, &[first, 0x02, 0x12, 0x34]);
            golden(&p, Protocol::V5, &[first, 0x02, 0x12, 0x34]);
        }
    }

    #[test]
    fn v5_reason_code_without_properties_omits_the_property_length() {
        let p = Packet::PubAck(PubResp::new(1, ReasonCode::QUOTA_EXCEEDED));
        golden(&p, Protocol::V5, &[0x40, 0x03, 0x00, 0x01, 0x97]);
        // 3.1.1 has no code to carry
        assert_eq!(encode(&p, Protocol::V311), [0x40, 0x02, 0x00, 0x01]);
        let p = Packet::PubRec(PubResp::new(1, ReasonCode::NO_MATCHING_SUBSCRIBERS));
        golden(&p, Protocol::V5, &[0x50, 0x03, 0x00, 0x01, 0x10]);
    }

    #[test]
    fn v5_with_properties() {
        let mut r = PubResp::new(7, ReasonCode::SUCCESS);
        r.properties.reason_string = Some("ok".into());
        #[rustfmt::skip]
        let bytes = [0x40, 0x09, 0x00, 0x07, 0x00, 0x05, 0x1F, 0x00, 0x02, b'o', b'k'];
        golden(&Packet::PubAck(r.clone()), Protocol::V5, &bytes);
        r.code = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
        #[rustfmt::skip]
        let bytes = [0x70, 0x09, 0x00, 0x07, 0x92, 0x05, 0x1F, 0x00, 0x02, b'o', b'k'];
        golden(&Packet::PubComp(r), Protocol::V5, &bytes);
    }

    #[test]
    fn v5_explicit_success_and_empty_properties_decode_the_same() {
        let expected = Ok(Packet::PubAck(PubResp::new(1, ReasonCode::SUCCESS)));
        assert_eq!(
            decode(&[0x40, 0x03, 0x00, 0x01, 0x00], Protocol::V5),
            expected
        );
        assert_eq!(
            decode(&[0x40, 0x04, 0x00, 0x01, 0x00, 0x00], Protocol::V5),
            expected
        );
    }

    #[test]
    fn bad_input() {
        protocol_error(&[0x40, 0x02, 0x00, 0x00], Protocol::V5); // pkid 0
        protocol_error(&[0x40, 0x02, 0x00, 0x00], Protocol::V311);
        malformed(&[0x60, 0x02, 0x00, 0x01], Protocol::V5); // PUBREL flags must be 0b0010
        malformed(&[0x42, 0x02, 0x00, 0x01], Protocol::V5);
        malformed(&[0x40, 0x03, 0x00, 0x01, 0x00], Protocol::V311); // 3.1.1: exactly 2 bytes
        malformed(&[0x40, 0x01, 0x00], Protocol::V5);
        malformed(&[0x40, 0x05, 0x00, 0x01, 0x00, 0x02, 0x1F], Protocol::V5); // property past the section
        protocol_error(
            &[0x40, 0x07, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00, 0x01],
            Protocol::V5,
        ); // topic alias
        assert!(Packet::PubAck(PubResp::new(0, ReasonCode::SUCCESS))
            .encode(Protocol::V5, &mut BytesMut::new())
            .is_err());
    }
}
