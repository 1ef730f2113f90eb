//! CONNECT ([MQTT 5.0 §3.1](https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901033),
//! [MQTT 3.1.1 §3.1](http://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html#_Toc398718028)).
//!
//! ```text
//! Fixed header     0x10 | Remaining Length
//! Protocol Name    string "MQTT" ("MQIsdp" for 3.1, read as 3.1.1)
//! Protocol Level   u8: 5, 4 (3.1.1) or 3 (3.1)
//! Connect Flags    u8:  7 user name | 6 password | 5 will retain | 4-3 will QoS | 2 will | 1 clean start | 0 reserved
//! Keep Alive       u16
//! Properties       (5 only)
//! Client Id        string
//! Will Properties  (5 only)  \
//! Will Topic       string     } if will flag
//! Will Payload     binary    /
//! User Name        string     if user name flag
//! Password         binary     if password flag
//! ```
//!
//! The protocol comes from the packet itself, both when reading and when writing.

use bytes::{BufMut, BytesMut};

use super::{Connect, Protocol, QoS, Will};
use crate::error::{DecodeError, EncodeError};
use crate::properties::Properties;
use crate::properties_codec::Allowed;
use crate::wire::{self, header, Reader};

const USERNAME: u8 = 0b1000_0000;
const PASSWORD: u8 = 0b0100_0000;
const WILL_RETAIN: u8 = 0b0010_0000;
const WILL_QOS_SHIFT: u8 = 3;
const WILL: u8 = 0b0000_0100;
const CLEAN_START: u8 = 0b0000_0010;
const RESERVED: u8 = 0b0000_0001;

impl Connect {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Connect, DecodeError> {
        let protocol = read_protocol(r)?;
        let flags = r.u8()?;
        let will_qos = check_flags(flags, protocol)?;
        let keep_alive = r.u16()?;
        let properties = Properties::read_for(r, protocol, Allowed::CONNECT)?;
        let client_id = r.string()?;
        let will = match will_qos {
            Some(qos) => Some(Will {
                properties: Properties::read_for(r, protocol, Allowed::WILL)?,
                topic: r.string()?,
                payload: r.binary()?,
                qos,
                retain: flags & WILL_RETAIN != 0,
            }),
            None => None,
        };
        let username = if flags & USERNAME != 0 {
            Some(r.string()?)
        } else {
            None
        };
        let password = if flags & PASSWORD != 0 {
            Some(r.binary()?)
        } else {
            None
        };
        Ok(Connect {
            protocol,
            clean_start: flags & CLEAN_START != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }

    /// Writes the CONNECT for `self.protocol` (a client states its version here, not elsewhere).
    pub(crate) fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let v5 = self.protocol == Protocol::V5;
        if !v5 && self.password.is_some() && self.username.is_none() {
            return Err(EncodeError::Invalid(
                "MQTT 3.1.1 has no password without a user name",
            ));
        }
        let props = if v5 {
            Some(self.properties.encoded_len(Allowed::CONNECT)?)
        } else {
            None
        };
        let will_props = match &self.will {
            Some(will) if v5 => Some(will.properties.encoded_len(Allowed::WILL)?),
            _ => None,
        };
        // "MQTT" + level + flags + keep alive
        let mut len = 6 + 1 + 1 + 2 + props.map_or(0, wire::section_len);
        len += wire::string_len(&self.client_id)?;
        if let Some(will) = &self.will {
            len += will_props.map_or(0, wire::section_len);
            len += wire::string_len(&will.topic)? + wire::binary_len(&will.payload)?;
        }
        if let Some(username) = &self.username {
            len += wire::string_len(username)?;
        }
        if let Some(password) = &self.password {
            len += wire::binary_len(password)?;
        }

        wire::put_fixed_header(out, header::CONNECT, len)?;
        wire::put_string(out, "MQTT")?;
        out.put_u8(if v5 { 5 } else { 4 });
        out.put_u8(self.flags());
        out.put_u16(self.keep_alive);
        if let Some(props) = props {
            self.properties.write(props, out)?;
        }
        wire::put_string(out, &self.client_id)?;
        if let Some(will) = &self.will {
            if let Some(props) = will_props {
                will.properties.write(props, out)?;
            }
            wire::put_string(out, &will.topic)?;
            wire::put_binary(out, &will.payload)?;
        }
        if let Some(username) = &self.username {
            wire::put_string(out, username)?;
        }
        if let Some(password) = &self.password {
            wire::put_binary(out, password)?;
        }
        Ok(())
    }

    fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.username.is_some() {
            flags |= USERNAME;
        }
        if self.password.is_some() {
            flags |= PASSWORD;
        }
        if let Some(will) = &self.will {
            flags |= WILL | (will.qos as u8) << WILL_QOS_SHIFT;
            if will.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.clean_start {
            flags |= CLEAN_START;
        }
        flags
    }
}

/// Name and level. A known name with another level, or an unknown name, is `UnsupportedProtocol` so that
/// the server can still answer with a CONNACK (0x84 / return code 1) as both specs suggest.
fn read_protocol(r: &mut Reader<'_>) -> Result<Protocol, DecodeError> {
    let name = r.binary_slice()?;
    let level = r.u8()?;
    match (name, level) {
        (b"MQTT", 5) => Ok(Protocol::V5),
        (b"MQTT", 4) | (b"MQIsdp", 3) => Ok(Protocol::V311),
        (_, level) => Err(DecodeError::UnsupportedProtocol(level)),
    }
}

/// Validates the Connect Flags ([MQTT 5.0 §3.1.2.3]); returns the will QoS if there is a will.
fn check_flags(flags: u8, protocol: Protocol) -> Result<Option<QoS>, DecodeError> {
    if flags & RESERVED != 0 {
        return Err(DecodeError::Malformed("CONNECT reserved flag set"));
    }
    if protocol == Protocol::V311 && flags & PASSWORD != 0 && flags & USERNAME == 0 {
        // 3.1.1 §3.1.2.9; MQTT 5 allows a password alone.
        return Err(DecodeError::Malformed("password without user name"));
    }
    let qos_bits = (flags >> WILL_QOS_SHIFT) & 0b11;
    if flags & WILL == 0 {
        return if qos_bits != 0 || flags & WILL_RETAIN != 0 {
            Err(DecodeError::Malformed("will QoS or retain without a will"))
        } else {
            Ok(None)
        };
    }
    QoS::from_u8(qos_bits)
        .map(Some)
        .ok_or(DecodeError::Malformed("will QoS 3"))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::packet::Packet;
    use crate::wire::test_util::*;

    fn minimal(protocol: Protocol) -> Connect {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 60,
            client_id: "c1".into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }
    }

    #[test]
    fn minimal_v311() {
        #[rustfmt::skip]
        let bytes = [
            0x10, 0x0E,
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, // protocol name, level 4
            0x02,                                     // clean session
            0x00, 0x3C,                               // keep alive 60
            0x00, 0x02, b'c', b'1',
        ];
        golden(
            &Packet::Connect(minimal(Protocol::V311)),
            Protocol::V311,
            &bytes,
        );
    }

    #[test]
    fn minimal_v5() {
        #[rustfmt::skip]
        let bytes = [
            0x10, 0x0F,
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05,
            0x02, 0x00, 0x3C,
            0x00,                                     // no properties
            0x00, 0x02, b'c', b'1',
        ];
        // The connection's protocol does not matter for CONNECT.
        golden(
            &Packet::Connect(minimal(Protocol::V5)),
            Protocol::V311,
            &bytes,
        );
        golden(
            &Packet::Connect(minimal(Protocol::V5)),
            Protocol::V5,
            &bytes,
        );
    }

    fn full(protocol: Protocol) -> Connect {
        let v5 = protocol == Protocol::V5;
        Connect {
            protocol,
            clean_start: false,
            keep_alive: 0x0102,
            client_id: "id".into(),
            will: Some(Will {
                topic: "w/t".into(),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: if v5 {
                    Properties {
                        will_delay_interval: Some(10),
                        ..Properties::default()
                    }
                } else {
                    Properties::default()
                },
            }),
            username: Some("u".into()),
            password: Some(Bytes::from_static(&[0x00, 0xFF])),
            properties: if v5 {
                Properties {
                    session_expiry_interval: Some(3600),
                    ..Properties::default()
                }
            } else {
                Properties::default()
            },
        }
    }

    #[test]
    fn full_v311() {
        #[rustfmt::skip]
        let bytes = [
            0x10, 0x1F,                               // 31
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04,
            0b1110_1100,                              // user, password, will retain, will QoS 1, will
            0x01, 0x02,
            0x00, 0x02, b'i', b'd',
            0x00, 0x03, b'w', b'/', b't',
            0x00, 0x03, b'b', b'y', b'e',
            0x00, 0x01, b'u',
            0x00, 0x02, 0x00, 0xFF,
        ];
        golden(
            &Packet::Connect(full(Protocol::V311)),
            Protocol::V311,
            &bytes,
        );
    }

    #[test]
    fn full_v5() {
        #[rustfmt::skip]
        let bytes = [
            0x10, 0x2B,                               // 43
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05,
            0b1110_1100,
            0x01, 0x02,
            0x05, 0x11, 0x00, 0x00, 0x0E, 0x10,       // session expiry 3600
            0x00, 0x02, b'i', b'd',
            0x05, 0x18, 0x00, 0x00, 0x00, 0x0A,       // will delay 10
            0x00, 0x03, b'w', b'/', b't',
            0x00, 0x03, b'b', b'y', b'e',
            0x00, 0x01, b'u',
            0x00, 0x02, 0x00, 0xFF,
        ];
        golden(&Packet::Connect(full(Protocol::V5)), Protocol::V5, &bytes);
    }

    #[test]
    fn mqisdp_level_3_reads_as_v311() {
        #[rustfmt::skip]
        let bytes = [
            0x10, 0x10,
            0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03,
            0x02, 0x00, 0x3C,
            0x00, 0x02, b'c', b'1',
        ];
        assert_eq!(
            decode(&bytes, Protocol::V5),
            Ok(Packet::Connect(minimal(Protocol::V311)))
        );
    }

    #[test]
    fn unsupported_levels_and_names() {
        let with = |name: &[u8], level: u8| {
            let mut body = vec![0x00, name.len() as u8];
            body.extend_from_slice(name);
            body.extend_from_slice(&[level, 0x02, 0x00, 0x3C, 0x00, 0x00]);
            let mut bytes = vec![0x10, body.len() as u8];
            bytes.extend(body);
            decode(&bytes, Protocol::V5)
        };
        assert_eq!(with(b"MQTT", 6), Err(DecodeError::UnsupportedProtocol(6)));
        assert_eq!(with(b"MQTT", 3), Err(DecodeError::UnsupportedProtocol(3)));
        assert_eq!(with(b"MQIsdp", 4), Err(DecodeError::UnsupportedProtocol(4)));
        assert_eq!(with(b"HTTP", 4), Err(DecodeError::UnsupportedProtocol(4)));
    }

    /// A v3.1.1 CONNECT with the given flags byte and just a client id (and what the flags announce).
    fn v311_with_flags(flags: u8) -> Vec<u8> {
        let mut bytes = vec![
            0x10, 0x00, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags, 0x00, 0x00, 0x00, 0x00,
        ];
        if flags & WILL != 0 {
            bytes.extend_from_slice(&[0x00, 0x01, b't', 0x00, 0x00]);
        }
        if flags & USERNAME != 0 {
            bytes.extend_from_slice(&[0x00, 0x00]);
        }
        if flags & PASSWORD != 0 {
            bytes.extend_from_slice(&[0x00, 0x00]);
        }
        bytes[1] = (bytes.len() - 2) as u8;
        bytes
    }

    #[test]
    fn bad_flags() {
        assert!(decode(&v311_with_flags(0b0000_0010), Protocol::V311).is_ok());
        malformed(&v311_with_flags(0b0000_0011), Protocol::V311); // reserved bit
        malformed(&v311_with_flags(0b0000_1000), Protocol::V311); // will QoS without will
        malformed(&v311_with_flags(0b0010_0000), Protocol::V311); // will retain without will
        malformed(&v311_with_flags(0b0001_1100), Protocol::V311); // will QoS 3
        malformed(&v311_with_flags(0b0100_0000), Protocol::V311); // password without user name
        malformed(&v311_with_flags(0b0100_0100), Protocol::V311); // same, with a will
        assert!(decode(&v311_with_flags(0b1100_0100), Protocol::V311).is_ok());
    }

    #[test]
    fn v5_allows_password_alone() {
        let c = Connect {
            password: Some(Bytes::from_static(b"p")),
            ..minimal(Protocol::V5)
        };
        let p = Packet::Connect(c.clone());
        assert_eq!(decode(&encode(&p, Protocol::V5), Protocol::V5), Ok(p));
        let v311 = Packet::Connect(Connect {
            protocol: Protocol::V311,
            ..c
        });
        assert!(matches!(
            v311.encode(Protocol::V311, &mut BytesMut::new()),
            Err(EncodeError::Invalid(_))
        ));
    }

    #[test]
    fn v311_writes_no_properties() {
        let mut c = full(Protocol::V5);
        c.protocol = Protocol::V311;
        let mut expected = full(Protocol::V311);
        expected.protocol = Protocol::V311;
        assert_eq!(
            encode(&Packet::Connect(c), Protocol::V311),
            encode(&Packet::Connect(expected), Protocol::V311)
        );
    }

    #[test]
    fn trailing_and_missing_bytes() {
        let mut bytes = encode(&Packet::Connect(minimal(Protocol::V311)), Protocol::V311);
        bytes.push(0);
        bytes[1] += 1;
        malformed(&bytes, Protocol::V311);
        // announces a user name that is not there
        let mut bytes = encode(&Packet::Connect(minimal(Protocol::V311)), Protocol::V311);
        bytes[9] |= USERNAME;
        malformed(&bytes, Protocol::V311);
    }

    #[test]
    fn not_allowed_property() {
        // a topic alias (0x23) in the CONNECT properties
        #[rustfmt::skip]
        let bytes = [
            0x10, 0x12,
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C,
            0x03, 0x23, 0x00, 0x01,
            0x00, 0x02, b'c', b'1',
        ];
        protocol_error(&bytes, Protocol::V5);
    }

    /// The old mqttbytes bug: the CONNECT remaining length was computed from the whole output buffer.
    #[test]
    fn appends_to_a_non_empty_buffer() {
        let p = Packet::Connect(full(Protocol::V5));
        let mut out = BytesMut::new();
        p.encode(Protocol::V5, &mut out).expect("encodes");
        p.encode(Protocol::V5, &mut out).expect("encodes");
        let first = decode(&out[..out.len() / 2], Protocol::V5);
        assert_eq!(first, Ok(p.clone()));
        let mut buf = out.clone();
        assert_eq!(
            Packet::decode(&mut buf, Protocol::V5, usize::MAX),
            Ok(Some(p.clone()))
        );
        assert_eq!(
            Packet::decode(&mut buf, Protocol::V5, usize::MAX),
            Ok(Some(p))
        );
        assert!(buf.is_empty());
    }
}
