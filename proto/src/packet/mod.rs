//! MQTT control packets, one module per kind
//! ([MQTT 5.0 §3](https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901019),
//! [MQTT 3.1.1 §3](http://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html#_Toc398718027)).
//!
//! [`Packet::decode`] reads one packet from the front of a buffer: it returns `Ok(None)` until the whole
//! packet is there, checks the announced size against the caller's maximum before it allocates anything,
//! and hands payloads out as zero-copy slices of the input. [`Packet::encode`] appends to a buffer.

use bytes::{Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::properties::Properties;
use crate::reason::ReasonCode;

mod auth;
mod connack;
mod connect;
mod disconnect;
mod ping;
mod publish;
mod pubresp;
mod suback;
mod subscribe;
mod unsuback;
mod unsubscribe;

/// Which MQTT version a connection speaks; learnt from its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// `None` for 3 and above (a malformed value on the wire).
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// One MQTT control packet. PUBACK, PUBREC, PUBREL and PUBCOMP share their layout ([`PubResp`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Connect),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResp),
    PubRec(PubResp),
    PubRel(PubResp),
    PubComp(PubResp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

/// CONNECT. `protocol` comes from the packet itself (the decoder ignores the protocol it is given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: Protocol,
    pub clean_start: bool,
    /// Seconds; 0 disables keepalive.
    pub keep_alive: u16,
    /// May be empty: the server then assigns one (MQTT 5) or requires clean start (3.1.1).
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub properties: Properties,
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Will properties (will delay, message expiry, content type, response topic …).
    pub properties: Properties,
}

/// CONNACK. Under 3.1.1 the reason code is mapped to and from the six 3.1.1 return codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    pub code: ReasonCode,
    pub properties: Properties,
}

/// PUBLISH. `pkid` is 0 for QoS 0. The payload is a slice of the decoded input, not a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// May be empty under MQTT 5 when a topic alias is set.
    pub topic: String,
    pub pkid: u16,
    pub properties: Properties,
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. Under 3.1.1 `code` is always SUCCESS and `properties` empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResp {
    pub pkid: u16,
    pub code: ReasonCode,
    pub properties: Properties,
}

impl PubResp {
    pub fn new(pkid: u16, code: ReasonCode) -> Self {
        PubResp {
            pkid,
            code,
            properties: Properties::default(),
        }
    }
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub pkid: u16,
    /// Never empty on the wire.
    pub filters: Vec<SubscribeFilter>,
    pub properties: Properties,
}

/// One topic filter of a SUBSCRIBE with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    pub filter: String,
    pub options: SubscriptionOptions,
}

/// Subscription options byte ([MQTT 5.0 §3.8.3.1]); under 3.1.1 only `qos` exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0 send retained at subscribe, 1 only if the subscription is new, 2 never. 3 is malformed.
    pub retain_handling: u8,
}

/// SUBACK: one code per filter (granted QoS or an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub pkid: u16,
    pub codes: Vec<ReasonCode>,
    pub properties: Properties,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub pkid: u16,
    pub filters: Vec<String>,
    pub properties: Properties,
}

/// UNSUBACK. Under 3.1.1 there are no codes on the wire (`codes` decodes empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub pkid: u16,
    pub codes: Vec<ReasonCode>,
    pub properties: Properties,
}

/// DISCONNECT. Under 3.1.1 it has no body; under 5 a zero-length body means 0x00 without properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    pub code: ReasonCode,
    pub properties: Properties,
}

/// AUTH (MQTT 5 only). A zero-length body means 0x00 without properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    pub code: ReasonCode,
    pub properties: Properties,
}

impl Packet {
    /// Decodes one packet from the front of `buf` and removes its bytes.
    ///
    /// * `Ok(None)`: not enough bytes yet; `buf` is untouched.
    /// * `Err(TooLarge)`: the fixed header announces more than `max_packet_size` bytes (whole packet,
    ///   fixed header included); detected before any allocation, `buf` is untouched.
    /// * `protocol` is the connection's version; a CONNECT is read whatever it says.
    pub fn decode(
        buf: &mut BytesMut,
        protocol: Protocol,
        max_packet_size: usize,
    ) -> Result<Option<Packet>, DecodeError> {
        crate::wire::decode_packet(buf, protocol, max_packet_size)
    }

    /// Total size (fixed header included) of the packet at the front of `buf`, as soon as its fixed
    /// header is complete. Lets a reader reserve a large packet's buffer once instead of growing it
    /// read by read. `None` while the header is incomplete or malformed (`decode` reports that).
    pub fn frame_len(buf: &[u8]) -> Option<usize> {
        let (len, n) = crate::wire::parse_varint(buf.get(1..)?).ok()??;
        Some(1 + n + len)
    }

    /// Appends the encoding of this packet to `out` (which may already hold bytes).
    pub fn encode(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        crate::wire::encode_packet(self, protocol, out)
    }

    /// Encoded size in bytes, fixed header included.
    pub fn encoded_len(&self, protocol: Protocol) -> Result<usize, EncodeError> {
        let mut b = BytesMut::new();
        self.encode(protocol, &mut b)?;
        Ok(b.len())
    }

    /// Short name for logs ("PUBLISH", "CONNACK" …).
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

#[cfg(test)]
mod frame_len_tests {
    use super::Packet;

    #[test]
    fn frame_len_from_the_fixed_header_only() {
        assert_eq!(Packet::frame_len(&[]), None);
        assert_eq!(Packet::frame_len(&[0x30]), None);
        assert_eq!(Packet::frame_len(&[0x30, 0x05]), Some(7));
        // 1 MiB + 10: a three-byte remaining length, body not yet read.
        assert_eq!(
            Packet::frame_len(&[0x32, 0x8a, 0x80, 0x40]),
            Some(1 + 3 + (1 << 20) + 10)
        );
        assert_eq!(Packet::frame_len(&[0x32, 0x8a, 0x80]), None);
        assert_eq!(
            Packet::frame_len(&[0x32, 0xff, 0xff, 0xff, 0xff]),
            None,
            "malformed"
        );
    }
}
