//! SUBSCRIBE ([MQTT 5.0 §3.8](https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901161),
//! [MQTT 3.1.1 §3.8](http://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html#_Toc398718063)).
//!
//! ```text
//! Fixed header   0x82 | Remaining Length
//! Packet Id      u16, never 0
//! Properties     (5 only): Subscription Identifier (at most one), User Properties
//! then at least one of:
//!   Topic Filter   string
//!   Options        u8:  7-6 reserved | 5-4 retain handling | 3 retain as published | 2 no local | 1-0 QoS
//!                       (3.1.1: 7-2 reserved | 1-0 QoS)
//! ```

use bytes::{BufMut, BytesMut};

use super::{Protocol, QoS, Subscribe, SubscribeFilter, SubscriptionOptions};
use crate::error::{DecodeError, EncodeError};
use crate::properties::Properties;
use crate::properties_codec::Allowed;
use crate::wire::{self, header, Reader};

const QOS_MASK: u8 = 0b0000_0011;
const NO_LOCAL: u8 = 0b0000_0100;
const RETAIN_AS_PUBLISHED: u8 = 0b0000_1000;
const RETAIN_HANDLING_SHIFT: u8 = 4;

impl Subscribe {
    pub(crate) fn read(r: &mut Reader<'_>, protocol: Protocol) -> Result<Subscribe, DecodeError> {
        let pkid = r.pkid()?;
        let properties = Properties::read_for(r, protocol, Allowed::SUBSCRIBE)?;
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string()?;
            let options = SubscriptionOptions::read(r.u8()?, protocol)?;
            filters.push(SubscribeFilter { filter, options });
        }
        if filters.is_empty() {
            return Err(DecodeError::Protocol("SUBSCRIBE without a topic filter"));
        }
        Ok(Subscribe {
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
            return Err(EncodeError::Invalid("SUBSCRIBE without a topic filter"));
        }
        let props = self
            .properties
            .encoded_len_for(protocol, Allowed::SUBSCRIBE)?;
        let mut len = 2 + props.map_or(0, wire::section_len);
        for f in &self.filters {
            f.options.check()?;
            len += wire::string_len(&f.filter)? + 1;
        }

        wire::put_fixed_header(out, header::SUBSCRIBE, len)?;
        out.put_u16(self.pkid);
        if let Some(props) = props {
            self.properties.write(props, out)?;
        }
        for f in &self.filters {
            wire::put_string(out, &f.filter)?;
            out.put_u8(f.options.to_byte(protocol));
        }
        Ok(())
    }
}

impl SubscriptionOptions {
    fn read(byte: u8, protocol: Protocol) -> Result<SubscriptionOptions, DecodeError> {
        let reserved = match protocol {
            Protocol::V5 => 0b1100_0000,
            Protocol::V311 => !QOS_MASK,
        };
        if byte & reserved != 0 {
            return Err(DecodeError::Malformed(
                "reserved subscription option bits set",
            ));
        }
        let qos =
            QoS::from_u8(byte & QOS_MASK).ok_or(DecodeError::Malformed("subscription QoS 3"))?;
        let retain_handling = byte >> RETAIN_HANDLING_SHIFT;
        if retain_handling == 3 {
            return Err(DecodeError::Protocol("retain handling 3"));
        }
        Ok(SubscriptionOptions {
            qos,
            no_local: byte & NO_LOCAL != 0,
            retain_as_published: byte & RETAIN_AS_PUBLISHED != 0,
            retain_handling,
        })
    }

    fn check(&self) -> Result<(), EncodeError> {
        if self.retain_handling > 2 {
            Err(EncodeError::Invalid("retain handling above 2"))
        } else {
            Ok(())
        }
    }

    /// Under 3.1.1 only the QoS exists; the v5 options are dropped like properties are.
    fn to_byte(self, protocol: Protocol) -> u8 {
        let mut b = self.qos as u8;
        if protocol == Protocol::V5 {
            b |= self.retain_handling << RETAIN_HANDLING_SHIFT;
            if self.no_local {
                b |= NO_LOCAL;
            }
            if self.retain_as_published {
                b |= RETAIN_AS_PUBLISHED;
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Packet;
    use crate::wire::test_util::*;

    fn filter(f: &str, qos: QoS) -> SubscribeFilter {
        SubscribeFilter {
            filter: f.into(),
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
        }
    }

    #[test]
    fn two_filters_both_versions() {
        let s = Subscribe {
            pkid: 10,
            filters: vec![
                filter("a/+", QoS::AtLeastOnce),
                filter("#", QoS::ExactlyOnce),
            ],
            properties: Properties::default(),
        };
        #[rustfmt::skip]
        let v311 = [
            0x82, 0x0C,
            0x00, 0x0A,
            0x00, 0x03, b'a', b'/', b'+', 0x01,
            0x00, 0x01, b'#', 0x02,
        ];
        golden(&Packet::Subscribe(s.clone()), Protocol::V311, &v311);
        #[rustfmt::skip]
        let v5 = [
            0x82, 0x0D,
            0x00, 0x0A,
            0x00,
            0x00, 0x03, b'a', b'/', b'+', 0x01,
            0x00, 0x01, b'#', 0x02,
        ];
        golden(&Packet::Subscribe(s), Protocol::V5, &v5);
    }

    #[test]
    fn v5_options_and_subscription_identifier() {
        let s = Subscribe {
            pkid: 1,
            filters: vec![SubscribeFilter {
                filter: "t".into(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: 2,
                },
            }],
            properties: Properties {
                subscription_identifiers: vec![200],
                ..Properties::default()
            },
        };
        #[rustfmt::skip]
        let bytes = [
            0x82, 0x0A,
            0x00, 0x01,
            0x03, 0x0B, 0xC8, 0x01,          // subscription identifier 200
            0x00, 0x01, b't', 0b0010_1101,   // retain handling 2, RAP, NL, QoS 1
        ];
        golden(&Packet::Subscribe(s.clone()), Protocol::V5, &bytes);
        // 3.1.1 keeps only the QoS
        assert_eq!(
            encode(&Packet::Subscribe(s), Protocol::V311),
            [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x01]
        );
    }

    #[test]
    fn bad_input() {
        malformed(
            &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x00],
            Protocol::V311,
        ); // flags 0
        protocol_error(&[0x82, 0x02, 0x00, 0x01], Protocol::V311); // no filter
        protocol_error(&[0x82, 0x03, 0x00, 0x01, 0x00], Protocol::V5);
        protocol_error(
            &[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b't', 0x00],
            Protocol::V311,
        ); // pkid 0
        malformed(
            &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x04],
            Protocol::V311,
        ); // v5 bit in 3.1.1
        malformed(
            &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x03],
            Protocol::V311,
        ); // QoS 3
        malformed(
            &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b't', 0x40],
            Protocol::V5,
        ); // reserved bit 6
        protocol_error(
            &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b't', 0x30],
            Protocol::V5,
        ); // retain handling 3
        malformed(
            &[0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b't'],
            Protocol::V5,
        ); // options byte missing
        protocol_error(
            &[
                0x82, 0x09, 0x00, 0x01, 0x02, 0x0B, 0x00, 0x00, 0x01, b't', 0x00,
            ],
            Protocol::V5,
        ); // sub id 0
        #[rustfmt::skip]
        protocol_error(&[0x82, 0x0B, 0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01, b't', 0x00], Protocol::V5);
    }

    #[test]
    fn encoder_refuses_what_the_decoder_would() {
        let mut s = Subscribe {
            pkid: 1,
            filters: vec![],
            properties: Properties::default(),
        };
        assert!(Packet::Subscribe(s.clone())
            .encode(Protocol::V5, &mut BytesMut::new())
            .is_err());
        s.filters.push(filter("t", QoS::AtMostOnce));
        s.filters[0].options.retain_handling = 3;
        assert!(Packet::Subscribe(s)
            .encode(Protocol::V5, &mut BytesMut::new())
            .is_err());
    }
}
