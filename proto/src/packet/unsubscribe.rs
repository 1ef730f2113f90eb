//! UNSUBSCRIBE ([MQTT 5.0 §3.10](https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901179),
//! [MQTT 3.1.1 §3.10](http://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html#_Toc398718072)).
//!
//! ```text
//! Fixed header   0xA2 | Remaining Length
//! Packet Id      u16, never 0
//! Properties     (5 only): User Properties
//! Topic Filters  string, at least one
//! ```

use bytes::{BufMut, BytesMut};

use super::{Protocol, Unsubscribe};
use crate::error::{DecodeError, EncodeError};
use crate::properties::Properties;
use crate::properties_codec::Allowed;
use crate::wire::{self, header, Reader};

impl Unsubscribe {
    pub(crate) fn read(r: &mut Reader<'_>, protocol: Protocol) -> Result<Unsubscribe, DecodeError> {
        let pkid = r.pkid()?;
        let properties = Properties::read_for(r, protocol, Allowed::UNSUBSCRIBE)?;
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(r.string()?);
        }
        if filters.is_empty() {
            return Err(DecodeError::Protocol("UNSUBSCRIBE without a topic filter"));
        }
        Ok(Unsubscribe {
            pkid,
            filters,
            properties,
        })
    }

    pub(crate) fn write(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.pkid == 0 {
            return Err(EncodeError::Invalid("packet identifier 0"));
        }
        if self.filters.is_empty() {
            return Err(EncodeError::Invalid("UNSUBSCRIBE without a topic filter"));
        }
        let props = self
            .properties
            .encoded_len_for(protocol, Allowed::UNSUBSCRIBE)?;
        let mut len = 2 + props.map_or(0, wire::section_len);
        for f in &self.filters {
            len += wire::string_len(f)?;
        }
        wire::put_fixed_header(out, header::UNSUBSCRIBE, len)?;
        out.put_u16(self.pkid);
        if let Some(props) = props {
            self.properties.write(props, out)?;
        }
        for f in &self.filters {
            wire::put_string(out, f)?;
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
        let u = Unsubscribe {
            pkid: 0x0102,
            filters: vec!["a/b".into(), "#".into()],
            properties: Properties::default(),
        };
        #[rustfmt::skip]
        let v311 = [0xA2, 0x0A, 0x01, 0x02, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, b'#'];
        golden(&Packet::Unsubscribe(u.clone()), Protocol::V311, &v311);
        #[rustfmt::skip]
        let v5 = [0xA2, 0x0B, 0x01, 0x02, 0x00, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, b'#'];
        golden(&Packet::Unsubscribe(u.clone()), Protocol::V5, &v5);
        let mut with_user = u;
        with_user.filters.truncate(1);
        with_user
            .properties
            .user_properties
            .push(("k".into(), "".into()));
        #[rustfmt::skip]
        let v5 = [0xA2, 0x0E, 0x01, 0x02, 0x06, 0x26, 0x00, 0x01, b'k', 0x00, 0x00, 0x00, 0x03, b'a', b'/', b'b'];
        golden(&Packet::Unsubscribe(with_user), Protocol::V5, &v5);
    }

    #[test]
    fn bad_input() {
        protocol_error(&[0xA2, 0x02, 0x00, 0x01], Protocol::V311); // no filter
        protocol_error(&[0xA2, 0x03, 0x00, 0x01, 0x00], Protocol::V5);
        malformed(&[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b't'], Protocol::V311); // flags
        protocol_error(&[0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, b't'], Protocol::V311); // pkid 0
        protocol_error(
            &[0xA2, 0x08, 0x00, 0x01, 0x02, 0x0B, 0x01, 0x00, 0x01, b't'],
            Protocol::V5,
        ); // sub id
        malformed(&[0xA2, 0x05, 0x00, 0x01, 0x00, 0x05, b't'], Protocol::V311); // filter cut short
        let empty = Unsubscribe {
            pkid: 1,
            filters: vec![],
            properties: Properties::default(),
        };
        assert!(Packet::Unsubscribe(empty)
            .encode(Protocol::V5, &mut BytesMut::new())
            .is_err());
    }
}
