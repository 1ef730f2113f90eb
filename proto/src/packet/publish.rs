//! PUBLISH ([MQTT 5.0 §3.3](https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901100),
//! [MQTT 3.1.1 §3.3](http://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html#_Toc398718037)).
//!
//! ```text
//! Fixed header     0x3 | DUP (bit 3) | QoS (bits 2-1) | RETAIN (bit 0), Remaining Length
//! Topic Name       string (empty only with a topic alias, MQTT 5)
//! Packet Id        u16, QoS 1 and 2 only, never 0
//! Properties       (5 only)
//! Payload          everything else (zero-copy slice of the input)
//! ```
//!
//! The hot path of the broker: decoding allocates only the topic `String`; encoding reserves the exact
//! size once and copies the payload in.

use bytes::{BufMut, BytesMut};

use super::{Protocol, Publish, QoS};
use crate::error::{DecodeError, EncodeError};
use crate::properties::Properties;
use crate::properties_codec::Allowed;
use crate::wire::{self, header, Reader};

const DUP: u8 = 0b1000;
const QOS_SHIFT: u8 = 1;
const RETAIN: u8 = 0b0001;

impl Publish {
    pub(crate) fn read(
        first_byte: u8,
        r: &mut Reader<'_>,
        protocol: Protocol,
    ) -> Result<Publish, DecodeError> {
        let qos = QoS::from_u8((first_byte >> QOS_SHIFT) & 0b11)
            .ok_or(DecodeError::Malformed("PUBLISH with QoS 3"))?;
        let dup = first_byte & DUP != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::Protocol("DUP set on a QoS 0 PUBLISH"));
        }
        let topic = r.string()?;
        let pkid = if qos == QoS::AtMostOnce { 0 } else { r.pkid()? };
        let properties = Properties::read_for(r, protocol, Allowed::PUBLISH)?;
        if topic.is_empty() && properties.topic_alias.is_none() {
            return Err(DecodeError::Protocol(
                "empty topic name without a topic alias",
            ));
        }
        Ok(Publish {
            dup,
            qos,
            retain: first_byte & RETAIN != 0,
            topic,
            pkid,
            properties,
            payload: r.rest(),
        })
    }

    pub(crate) fn write(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        self.check(protocol)?;
        let props = self
            .properties
            .encoded_len_for(protocol, Allowed::PUBLISH)?;
        let pkid_len = if self.qos == QoS::AtMostOnce { 0 } else { 2 };
        let len = wire::string_len(&self.topic)?
            + pkid_len
            + props.map_or(0, wire::section_len)
            + self.payload.len();

        wire::put_fixed_header(out, self.first_byte(), len)?;
        wire::put_string(out, &self.topic)?;
        if pkid_len != 0 {
            out.put_u16(self.pkid);
        }
        if let Some(props) = props {
            self.properties.write(props, out)?;
        }
        out.put_slice(&self.payload);
        Ok(())
    }

    /// Refuses what the decoder would refuse, so that nothing we send is malformed.
    fn check(&self, protocol: Protocol) -> Result<(), EncodeError> {
        match (self.qos, self.pkid) {
            (QoS::AtMostOnce, 0) if self.dup => {
                Err(EncodeError::Invalid("DUP set on a QoS 0 PUBLISH"))
            }
            (QoS::AtMostOnce, 0) => Ok(()),
            (QoS::AtMostOnce, _) => Err(EncodeError::Invalid(
                "QoS 0 PUBLISH with a packet identifier",
            )),
            (_, 0) => Err(EncodeError::Invalid(
                "QoS 1/2 PUBLISH without a packet identifier",
            )),
            _ => Ok(()),
        }?;
        let has_alias = protocol == Protocol::V5 && self.properties.topic_alias.is_some();
        if self.topic.is_empty() && !has_alias {
            return Err(EncodeError::Invalid(
                "empty topic name without a topic alias",
            ));
        }
        Ok(())
    }

    fn first_byte(&self) -> u8 {
        let mut b = header::PUBLISH | (self.qos as u8) << QOS_SHIFT;
        if self.dup {
            b |= DUP;
        }
        if self.retain {
            b |= RETAIN;
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::packet::Packet;
    use crate::wire::test_util::*;

    fn publish(qos: QoS, pkid: u16) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: "a/b".into(),
            pkid,
            properties: Properties::default(),
            payload: Bytes::from_static(b"hi"),
        }
    }

    #[test]
    fn qos0_both_versions() {
        let p = Packet::Publish(publish(QoS::AtMostOnce, 0));
        golden(
            &p,
            Protocol::V311,
            &[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'],
        );
        golden(
            &p,
            Protocol::V5,
            &[0x30, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x00, b'h', b'i'],
        );
    }

    #[test]
    fn qos1_retain_dup() {
        let p = Packet::Publish(Publish {
            dup: true,
            retain: true,
            ..publish(QoS::AtLeastOnce, 10)
        });
        golden(
            &p,
            Protocol::V311,
            &[
                0x3B, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i',
            ],
        );
        golden(
            &p,
            Protocol::V5,
            &[
                0x3B, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, 0x00, b'h', b'i',
            ],
        );
    }

    #[test]
    fn qos2_with_properties_v5() {
        let p = Publish {
            properties: Properties {
                payload_format_indicator: Some(1),
                user_properties: vec![("k".into(), "v".into())],
                ..Properties::default()
            },
            payload: Bytes::new(),
            ..publish(QoS::ExactlyOnce, 0xFFFF)
        };
        #[rustfmt::skip]
        let bytes = [
            0x34, 0x11,
            0x00, 0x03, b'a', b'/', b'b',
            0xFF, 0xFF,
            0x09, 0x01, 0x01, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',
        ];
        golden(&Packet::Publish(p.clone()), Protocol::V5, &bytes);
        // Under 3.1.1 the properties are dropped.
        let v311 = [0x34, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0xFF, 0xFF];
        assert_eq!(encode(&Packet::Publish(p), Protocol::V311), v311);
    }

    #[test]
    fn topic_alias_allows_an_empty_topic() {
        let p = Publish {
            topic: String::new(),
            properties: Properties {
                topic_alias: Some(3),
                ..Properties::default()
            },
            ..publish(QoS::AtMostOnce, 0)
        };
        golden(
            &Packet::Publish(p.clone()),
            Protocol::V5,
            &[0x30, 0x08, 0x00, 0x00, 0x03, 0x23, 0x00, 0x03, b'h', b'i'],
        );
        protocol_error(&[0x30, 0x05, 0x00, 0x00, 0x00, b'h', b'i'], Protocol::V5);
        protocol_error(&[0x30, 0x04, 0x00, 0x00, b'h', b'i'], Protocol::V311);
        assert!(Packet::Publish(p)
            .encode(Protocol::V311, &mut BytesMut::new())
            .is_err());
    }

    #[test]
    fn payload_is_a_slice_of_the_input() {
        let mut buf =
            BytesMut::from(&[0x30, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x00, b'h', b'i'][..]);
        let start = buf.as_ptr() as usize;
        let Ok(Some(Packet::Publish(p))) = Packet::decode(&mut buf, Protocol::V5, 64) else {
            panic!()
        };
        assert_eq!(p.payload.as_ptr() as usize, start + 8);
    }

    #[test]
    fn bad_flags_and_ids() {
        malformed(
            &[0x36, 0x07, 0x00, 0x01, b'a', 0x00, 0x01, 0x00, 0x00],
            Protocol::V5,
        ); // QoS 3
        protocol_error(&[0x38, 0x04, 0x00, 0x01, b'a', 0x00], Protocol::V5); // DUP on QoS 0
        protocol_error(
            &[0x32, 0x06, 0x00, 0x01, b'a', 0x00, 0x00, 0x00],
            Protocol::V5,
        ); // pkid 0
        malformed(&[0x32, 0x04, 0x00, 0x01, b'a', 0x00], Protocol::V311); // pkid cut short
        protocol_error(
            &[0x30, 0x07, 0x00, 0x01, b'a', 0x03, 0x21, 0x00, 0x01],
            Protocol::V5,
        ); // receive max
    }

    #[test]
    fn encoder_refuses_inconsistent_ids() {
        for p in [
            publish(QoS::AtMostOnce, 1),
            publish(QoS::AtLeastOnce, 0),
            Publish {
                dup: true,
                ..publish(QoS::AtMostOnce, 0)
            },
        ] {
            let mut out = BytesMut::from(&b"x"[..]);
            assert!(matches!(
                Packet::Publish(p).encode(Protocol::V5, &mut out),
                Err(EncodeError::Invalid(_))
            ));
            assert_eq!(&out[..], b"x");
        }
    }

    #[test]
    fn large_payload_uses_a_multi_byte_length() {
        let p = Publish {
            payload: Bytes::from(vec![7u8; 20_000]),
            ..publish(QoS::AtMostOnce, 0)
        };
        let bytes = encode(&Packet::Publish(p.clone()), Protocol::V311);
        // 5 + 20,000 = 20,005 = 0x4E25 → 0xA5 0x9C 0x01
        assert_eq!(&bytes[..4], &[0x30, 0xA5, 0x9C, 0x01]);
        assert_eq!(bytes.len(), 4 + 20_005);
        assert_eq!(decode(&bytes, Protocol::V311), Ok(Packet::Publish(p)));
    }
}
