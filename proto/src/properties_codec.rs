//! Reading and writing MQTT 5 property sections
//! ([MQTT 5.0 §2.2.2](https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901027)).
//!
//! ```text
//! Property Length   Variable Byte Integer: bytes of properties that follow (not itself)
//! then, repeated:
//!   Identifier      Variable Byte Integer (every defined one fits in one byte)
//!   Value           byte | u16 | u32 | Variable Byte Integer | string | binary | string pair
//! ```
//!
//! Which identifiers a packet kind may carry is the table of
//! [§2.2.2.2](https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901029), kept here as
//! [`Allowed`] bit sets. A property outside the set, or a second copy of a single-valued one, is a
//! Protocol Error; an identifier the spec does not define is Malformed (its length is unknowable).
//! The encoder holds itself to the same rules so that whatever it writes, the decoder reads back.

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::properties::Properties;
use crate::wire::{self, Reader, VARINT_MAX};

/// Property identifiers.
pub(crate) mod id {
    pub(crate) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub(crate) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub(crate) const CONTENT_TYPE: u8 = 0x03;
    pub(crate) const RESPONSE_TOPIC: u8 = 0x08;
    pub(crate) const CORRELATION_DATA: u8 = 0x09;
    pub(crate) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub(crate) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub(crate) const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub(crate) const AUTHENTICATION_METHOD: u8 = 0x15;
    pub(crate) const AUTHENTICATION_DATA: u8 = 0x16;
    pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub(crate) const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub(crate) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub(crate) const RESPONSE_INFORMATION: u8 = 0x1A;
    pub(crate) const SERVER_REFERENCE: u8 = 0x1C;
    pub(crate) const REASON_STRING: u8 = 0x1F;
    pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;
    pub(crate) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub(crate) const TOPIC_ALIAS: u8 = 0x23;
    pub(crate) const MAXIMUM_QOS: u8 = 0x24;
    pub(crate) const RETAIN_AVAILABLE: u8 = 0x25;
    pub(crate) const USER_PROPERTY: u8 = 0x26;
    pub(crate) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub(crate) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub(crate) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub(crate) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

use id::*;

/// The property identifiers one packet kind may carry (bit `n` set = identifier `n` allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Allowed {
    ids: u64,
    /// Only PUBLISH may repeat the Subscription Identifier (one per matching subscription).
    many_subscription_ids: bool,
}

impl Allowed {
    const fn of(ids: &[u8]) -> Allowed {
        let mut bits = 0u64;
        let mut i = 0;
        while i < ids.len() {
            bits |= 1 << ids[i];
            i += 1;
        }
        Allowed {
            ids: bits,
            many_subscription_ids: false,
        }
    }

    const REASON_AND_USER: &'static [u8] = &[REASON_STRING, USER_PROPERTY];

    pub(crate) const CONNECT: Allowed = Allowed::of(&[
        SESSION_EXPIRY_INTERVAL,
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
        REQUEST_PROBLEM_INFORMATION,
        REQUEST_RESPONSE_INFORMATION,
        RECEIVE_MAXIMUM,
        TOPIC_ALIAS_MAXIMUM,
        USER_PROPERTY,
        MAXIMUM_PACKET_SIZE,
    ]);
    pub(crate) const WILL: Allowed = Allowed::of(&[
        PAYLOAD_FORMAT_INDICATOR,
        MESSAGE_EXPIRY_INTERVAL,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        WILL_DELAY_INTERVAL,
        USER_PROPERTY,
    ]);
    pub(crate) const CONNACK: Allowed = Allowed::of(&[
        SESSION_EXPIRY_INTERVAL,
        ASSIGNED_CLIENT_IDENTIFIER,
        SERVER_KEEP_ALIVE,
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
        RESPONSE_INFORMATION,
        SERVER_REFERENCE,
        REASON_STRING,
        RECEIVE_MAXIMUM,
        TOPIC_ALIAS_MAXIMUM,
        MAXIMUM_QOS,
        RETAIN_AVAILABLE,
        USER_PROPERTY,
        MAXIMUM_PACKET_SIZE,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        SHARED_SUBSCRIPTION_AVAILABLE,
    ]);
    pub(crate) const PUBLISH: Allowed = Allowed {
        many_subscription_ids: true,
        ..Allowed::of(&[
            PAYLOAD_FORMAT_INDICATOR,
            MESSAGE_EXPIRY_INTERVAL,
            CONTENT_TYPE,
            RESPONSE_TOPIC,
            CORRELATION_DATA,
            SUBSCRIPTION_IDENTIFIER,
            TOPIC_ALIAS,
            USER_PROPERTY,
        ])
    };
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    pub(crate) const PUB_RESP: Allowed = Allowed::of(Self::REASON_AND_USER);
    pub(crate) const SUBSCRIBE: Allowed = Allowed::of(&[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY]);
    pub(crate) const SUBACK: Allowed = Allowed::of(Self::REASON_AND_USER);
    pub(crate) const UNSUBSCRIBE: Allowed = Allowed::of(&[USER_PROPERTY]);
    pub(crate) const UNSUBACK: Allowed = Allowed::of(Self::REASON_AND_USER);
    pub(crate) const DISCONNECT: Allowed = Allowed::of(&[
        SESSION_EXPIRY_INTERVAL,
        SERVER_REFERENCE,
        REASON_STRING,
        USER_PROPERTY,
    ]);
    pub(crate) const AUTH: Allowed = Allowed::of(&[
        AUTHENTICATION_METHOD,
        AUTHENTICATION_DATA,
        REASON_STRING,
        USER_PROPERTY,
    ]);

    /// Every identifier the spec defines.
    const DEFINED: u64 = Self::CONNECT.ids
        | Self::WILL.ids
        | Self::CONNACK.ids
        | Self::PUBLISH.ids
        | Self::SUBSCRIBE.ids
        | Self::AUTH.ids
        | Self::DISCONNECT.ids;

    fn contains(self, id: u8) -> bool {
        id < 64 && self.ids & (1 << id) != 0
    }

    /// For the encoder: a set field must be allowed here.
    fn check(self, id: u8) -> Result<(), EncodeError> {
        if self.contains(id) {
            Ok(())
        } else {
            Err(EncodeError::Invalid("property not allowed in this packet"))
        }
    }
}

/// The identifiers that may appear more than once in one section.
fn repeatable(id: u8, allowed: Allowed) -> bool {
    id == USER_PROPERTY || (id == SUBSCRIPTION_IDENTIFIER && allowed.many_subscription_ids)
}

/// A one-byte property whose only values are 0 and 1 (every one-byte property but none of the others).
fn read_flag(r: &mut Reader<'_>) -> Result<Option<u8>, DecodeError> {
    match r.u8()? {
        v @ (0 | 1) => Ok(Some(v)),
        _ => Err(DecodeError::Protocol("property value other than 0 or 1")),
    }
}

/// Receive Maximum and Maximum Packet Size: 0 is a Protocol Error ([MQTT 5.0 §3.1.2.11.3, §3.1.2.11.4]).
fn non_zero<T: PartialEq + Default>(v: T) -> Result<Option<T>, DecodeError> {
    if v == T::default() {
        Err(DecodeError::Protocol("property value 0"))
    } else {
        Ok(Some(v))
    }
}

impl Properties {
    /// The property section of a packet in `protocol`: read as [`Properties::read`] in MQTT 5,
    /// absent (all unset) in 3.1.1.
    pub(crate) fn read_for(
        r: &mut Reader<'_>,
        protocol: crate::Protocol,
        allowed: Allowed,
    ) -> Result<Properties, DecodeError> {
        match protocol {
            crate::Protocol::V5 => Properties::read(r, allowed),
            crate::Protocol::V311 => Ok(Properties::default()),
        }
    }

    /// [`Properties::encoded_len`] in MQTT 5; `None` in 3.1.1, which has no property section.
    pub(crate) fn encoded_len_for(
        &self,
        protocol: crate::Protocol,
        allowed: Allowed,
    ) -> Result<Option<usize>, EncodeError> {
        match protocol {
            crate::Protocol::V5 => self.encoded_len(allowed).map(Some),
            crate::Protocol::V311 => Ok(None),
        }
    }

    /// Reads a property section (length prefix included), allowing only `allowed`.
    ///
    /// Topic Alias 0 is let through: refusing it is the session's job, with reason code 0x94 (Topic Alias
    /// invalid) like any other alias it cannot accept.
    pub(crate) fn read(r: &mut Reader<'_>, allowed: Allowed) -> Result<Properties, DecodeError> {
        let len = r.varint()?;
        let mut r = r.sub(len)?;
        let mut p = Properties::default();
        let mut seen = 0u64;
        while !r.is_empty() {
            let raw = r.varint()?;
            let id = u8::try_from(raw)
                .ok()
                .filter(|&id| id < 64 && Allowed::DEFINED & (1 << id) != 0)
                .ok_or(DecodeError::Malformed("unknown property identifier"))?;
            if !allowed.contains(id) {
                return Err(DecodeError::Protocol("property not allowed in this packet"));
            }
            if seen & (1 << id) != 0 && !repeatable(id, allowed) {
                return Err(DecodeError::Protocol("property included more than once"));
            }
            seen |= 1 << id;
            p.read_value(id, &mut r)?;
        }
        Ok(p)
    }

    fn read_value(&mut self, id: u8, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        match id {
            PAYLOAD_FORMAT_INDICATOR => self.payload_format_indicator = read_flag(r)?,
            MESSAGE_EXPIRY_INTERVAL => self.message_expiry_interval = Some(r.u32()?),
            CONTENT_TYPE => self.content_type = Some(r.string()?),
            RESPONSE_TOPIC => self.response_topic = Some(r.string()?),
            CORRELATION_DATA => self.correlation_data = Some(r.binary()?),
            SUBSCRIPTION_IDENTIFIER => match u32::try_from(r.varint()?) {
                Ok(0) => return Err(DecodeError::Protocol("subscription identifier 0")),
                Ok(v) => self.subscription_identifiers.push(v),
                // unreachable: a four-byte varint is at most 268,435,455
                Err(_) => return Err(DecodeError::Malformed("subscription identifier too large")),
            },
            SESSION_EXPIRY_INTERVAL => self.session_expiry_interval = Some(r.u32()?),
            ASSIGNED_CLIENT_IDENTIFIER => self.assigned_client_identifier = Some(r.string()?),
            SERVER_KEEP_ALIVE => self.server_keep_alive = Some(r.u16()?),
            AUTHENTICATION_METHOD => self.authentication_method = Some(r.string()?),
            AUTHENTICATION_DATA => self.authentication_data = Some(r.binary()?),
            REQUEST_PROBLEM_INFORMATION => self.request_problem_information = read_flag(r)?,
            WILL_DELAY_INTERVAL => self.will_delay_interval = Some(r.u32()?),
            REQUEST_RESPONSE_INFORMATION => self.request_response_information = read_flag(r)?,
            RESPONSE_INFORMATION => self.response_information = Some(r.string()?),
            SERVER_REFERENCE => self.server_reference = Some(r.string()?),
            REASON_STRING => self.reason_string = Some(r.string()?),
            RECEIVE_MAXIMUM => self.receive_maximum = non_zero(r.u16()?)?,
            TOPIC_ALIAS_MAXIMUM => self.topic_alias_maximum = Some(r.u16()?),
            TOPIC_ALIAS => self.topic_alias = Some(r.u16()?),
            MAXIMUM_QOS => self.maximum_qos = read_flag(r)?,
            RETAIN_AVAILABLE => self.retain_available = read_flag(r)?,
            USER_PROPERTY => {
                let key = r.string()?;
                let value = r.string()?;
                self.user_properties.push((key, value));
            }
            MAXIMUM_PACKET_SIZE => self.maximum_packet_size = non_zero(r.u32()?)?,
            WILDCARD_SUBSCRIPTION_AVAILABLE => self.wildcard_subscription_available = read_flag(r)?,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                self.subscription_identifier_available = read_flag(r)?
            }
            SHARED_SUBSCRIPTION_AVAILABLE => self.shared_subscription_available = read_flag(r)?,
            _ => return Err(DecodeError::Malformed("unknown property identifier")),
        }
        Ok(())
    }

    /// Bytes of properties (without the length prefix) this set encodes to, checking that every set
    /// field is allowed in the packet kind and holds a value the decoder accepts.
    pub(crate) fn encoded_len(&self, allowed: Allowed) -> Result<usize, EncodeError> {
        if self.is_unset() {
            // the common case on the PUBLISH hot path: a plain scan, no per-field checks
            return Ok(0);
        }
        let a = allowed;
        let mut n = 0;
        n += opt(
            &self.payload_format_indicator,
            PAYLOAD_FORMAT_INDICATOR,
            a,
            flag_len,
        )?;
        n += opt(
            &self.message_expiry_interval,
            MESSAGE_EXPIRY_INTERVAL,
            a,
            |_| Ok(4),
        )?;
        n += opt(&self.content_type, CONTENT_TYPE, a, |s| wire::string_len(s))?;
        n += opt(&self.response_topic, RESPONSE_TOPIC, a, |s| {
            wire::string_len(s)
        })?;
        n += opt(&self.correlation_data, CORRELATION_DATA, a, |b| {
            wire::binary_len(b)
        })?;
        n += self.subscription_ids_len(a)?;
        n += opt(
            &self.session_expiry_interval,
            SESSION_EXPIRY_INTERVAL,
            a,
            |_| Ok(4),
        )?;
        n += opt(
            &self.assigned_client_identifier,
            ASSIGNED_CLIENT_IDENTIFIER,
            a,
            |s| wire::string_len(s),
        )?;
        n += opt(&self.server_keep_alive, SERVER_KEEP_ALIVE, a, |_| Ok(2))?;
        n += opt(&self.authentication_method, AUTHENTICATION_METHOD, a, |s| {
            wire::string_len(s)
        })?;
        n += opt(&self.authentication_data, AUTHENTICATION_DATA, a, |b| {
            wire::binary_len(b)
        })?;
        n += opt(
            &self.request_problem_information,
            REQUEST_PROBLEM_INFORMATION,
            a,
            flag_len,
        )?;
        n += opt(&self.will_delay_interval, WILL_DELAY_INTERVAL, a, |_| Ok(4))?;
        n += opt(
            &self.request_response_information,
            REQUEST_RESPONSE_INFORMATION,
            a,
            flag_len,
        )?;
        n += opt(&self.response_information, RESPONSE_INFORMATION, a, |s| {
            wire::string_len(s)
        })?;
        n += opt(&self.server_reference, SERVER_REFERENCE, a, |s| {
            wire::string_len(s)
        })?;
        n += opt(&self.reason_string, REASON_STRING, a, |s| {
            wire::string_len(s)
        })?;
        n += opt(&self.receive_maximum, RECEIVE_MAXIMUM, a, |&v| {
            non_zero_len(v, 2)
        })?;
        n += opt(&self.topic_alias_maximum, TOPIC_ALIAS_MAXIMUM, a, |_| Ok(2))?;
        n += opt(&self.topic_alias, TOPIC_ALIAS, a, |_| Ok(2))?;
        n += opt(&self.maximum_qos, MAXIMUM_QOS, a, flag_len)?;
        n += opt(&self.retain_available, RETAIN_AVAILABLE, a, flag_len)?;
        for (key, value) in &self.user_properties {
            a.check(USER_PROPERTY)?;
            n += 1 + wire::string_len(key)? + wire::string_len(value)?;
        }
        n += opt(&self.maximum_packet_size, MAXIMUM_PACKET_SIZE, a, |&v| {
            non_zero_len(v, 4)
        })?;
        n += opt(
            &self.wildcard_subscription_available,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            a,
            flag_len,
        )?;
        n += opt(
            &self.subscription_identifier_available,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            a,
            flag_len,
        )?;
        n += opt(
            &self.shared_subscription_available,
            SHARED_SUBSCRIPTION_AVAILABLE,
            a,
            flag_len,
        )?;
        if n > VARINT_MAX {
            return Err(EncodeError::PacketTooLong(n));
        }
        Ok(n)
    }

    /// Like [`Properties::is_empty`] without building a default to compare with. The exhaustive
    /// pattern makes a new field a compile error here rather than a property silently never written.
    fn is_unset(&self) -> bool {
        let Properties {
            payload_format_indicator,
            message_expiry_interval,
            content_type,
            response_topic,
            correlation_data,
            subscription_identifiers,
            session_expiry_interval,
            assigned_client_identifier,
            server_keep_alive,
            authentication_method,
            authentication_data,
            request_problem_information,
            will_delay_interval,
            request_response_information,
            response_information,
            server_reference,
            reason_string,
            receive_maximum,
            topic_alias_maximum,
            topic_alias,
            maximum_qos,
            retain_available,
            user_properties,
            maximum_packet_size,
            wildcard_subscription_available,
            subscription_identifier_available,
            shared_subscription_available,
        } = self;
        payload_format_indicator.is_none()
            && message_expiry_interval.is_none()
            && content_type.is_none()
            && response_topic.is_none()
            && correlation_data.is_none()
            && subscription_identifiers.is_empty()
            && session_expiry_interval.is_none()
            && assigned_client_identifier.is_none()
            && server_keep_alive.is_none()
            && authentication_method.is_none()
            && authentication_data.is_none()
            && request_problem_information.is_none()
            && will_delay_interval.is_none()
            && request_response_information.is_none()
            && response_information.is_none()
            && server_reference.is_none()
            && reason_string.is_none()
            && receive_maximum.is_none()
            && topic_alias_maximum.is_none()
            && topic_alias.is_none()
            && maximum_qos.is_none()
            && retain_available.is_none()
            && user_properties.is_empty()
            && maximum_packet_size.is_none()
            && wildcard_subscription_available.is_none()
            && subscription_identifier_available.is_none()
            && shared_subscription_available.is_none()
    }

    fn subscription_ids_len(&self, allowed: Allowed) -> Result<usize, EncodeError> {
        let ids = &self.subscription_identifiers;
        if ids.is_empty() {
            return Ok(0);
        }
        allowed.check(SUBSCRIPTION_IDENTIFIER)?;
        if ids.len() > 1 && !allowed.many_subscription_ids {
            return Err(EncodeError::Invalid(
                "more than one subscription identifier",
            ));
        }
        ids.iter().try_fold(0, |n, &v| match v as usize {
            0 => Err(EncodeError::Invalid("subscription identifier 0")),
            v if v > VARINT_MAX => Err(EncodeError::Invalid("subscription identifier too large")),
            v => Ok(n + 1 + wire::varint_len(v)),
        })
    }

    /// Writes the length prefix and the properties, in identifier order. `len` is what
    /// [`Properties::encoded_len`] returned for the same packet kind.
    pub(crate) fn write(&self, len: usize, out: &mut BytesMut) -> Result<(), EncodeError> {
        let start = out.len();
        wire::put_varint(out, len);
        if len == 0 {
            // encoded_len says 0 only for an unset set
            debug_assert!(self.is_unset());
            return Ok(());
        }
        let body = out.len();
        put_u8(out, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        put_u32(out, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        put_str(out, CONTENT_TYPE, &self.content_type)?;
        put_str(out, RESPONSE_TOPIC, &self.response_topic)?;
        put_bin(out, CORRELATION_DATA, &self.correlation_data)?;
        for &v in &self.subscription_identifiers {
            out.put_u8(SUBSCRIPTION_IDENTIFIER);
            wire::put_varint(out, v as usize);
        }
        put_u32(out, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_str(
            out,
            ASSIGNED_CLIENT_IDENTIFIER,
            &self.assigned_client_identifier,
        )?;
        put_u16(out, SERVER_KEEP_ALIVE, self.server_keep_alive);
        put_str(out, AUTHENTICATION_METHOD, &self.authentication_method)?;
        put_bin(out, AUTHENTICATION_DATA, &self.authentication_data)?;
        put_u8(
            out,
            REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        put_u32(out, WILL_DELAY_INTERVAL, self.will_delay_interval);
        put_u8(
            out,
            REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        put_str(out, RESPONSE_INFORMATION, &self.response_information)?;
        put_str(out, SERVER_REFERENCE, &self.server_reference)?;
        put_str(out, REASON_STRING, &self.reason_string)?;
        put_u16(out, RECEIVE_MAXIMUM, self.receive_maximum);
        put_u16(out, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_u16(out, TOPIC_ALIAS, self.topic_alias);
        put_u8(out, MAXIMUM_QOS, self.maximum_qos);
        put_u8(out, RETAIN_AVAILABLE, self.retain_available);
        for (key, value) in &self.user_properties {
            out.put_u8(USER_PROPERTY);
            wire::put_string(out, key)?;
            wire::put_string(out, value)?;
        }
        put_u32(out, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        put_u8(
            out,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        put_u8(
            out,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifier_available,
        );
        put_u8(
            out,
            SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        if out.len() - body != len {
            // Only reachable if `len` came from another packet kind's check; never write a lie.
            out.truncate(start);
            return Err(EncodeError::Invalid("property length mismatch"));
        }
        Ok(())
    }
}

/// `1 + value length` for a set optional property, after checking it is allowed.
fn opt<T>(
    v: &Option<T>,
    id: u8,
    allowed: Allowed,
    value_len: impl FnOnce(&T) -> Result<usize, EncodeError>,
) -> Result<usize, EncodeError> {
    match v {
        None => Ok(0),
        Some(v) => {
            allowed.check(id)?;
            Ok(1 + value_len(v)?)
        }
    }
}

fn flag_len(v: &u8) -> Result<usize, EncodeError> {
    if *v <= 1 {
        Ok(1)
    } else {
        Err(EncodeError::Invalid("property value other than 0 or 1"))
    }
}

fn non_zero_len<T: PartialEq + Default>(v: T, len: usize) -> Result<usize, EncodeError> {
    if v == T::default() {
        Err(EncodeError::Invalid("property value 0"))
    } else {
        Ok(len)
    }
}

fn put_u8(out: &mut BytesMut, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        out.put_slice(&[id, v]);
    }
}

fn put_u16(out: &mut BytesMut, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        out.put_u8(id);
        out.put_u16(v);
    }
}

fn put_u32(out: &mut BytesMut, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        out.put_u8(id);
        out.put_u32(v);
    }
}

fn put_str(out: &mut BytesMut, id: u8, v: &Option<String>) -> Result<(), EncodeError> {
    if let Some(v) = v {
        out.put_u8(id);
        wire::put_string(out, v)?;
    }
    Ok(())
}

fn put_bin(out: &mut BytesMut, id: u8, v: &Option<bytes::Bytes>) -> Result<(), EncodeError> {
    if let Some(v) = v {
        out.put_u8(id);
        wire::put_binary(out, v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn read(bytes: &[u8], allowed: Allowed) -> Result<Properties, DecodeError> {
        let frame = Bytes::copy_from_slice(bytes);
        let mut r = Reader::new(&frame, 0);
        let p = Properties::read(&mut r, allowed)?;
        r.finish()?;
        Ok(p)
    }

    fn write(p: &Properties, allowed: Allowed) -> Result<Vec<u8>, EncodeError> {
        let len = p.encoded_len(allowed)?;
        let mut out = BytesMut::new();
        p.write(len, &mut out)?;
        Ok(out.to_vec())
    }

    /// One of every CONNACK property, bytes written from §3.2.2.3 by hand.
    #[test]
    fn every_connack_property_golden() {
        let p = Properties {
            session_expiry_interval: Some(0x0102_0304),
            assigned_client_identifier: Some("c".into()),
            server_keep_alive: Some(30),
            authentication_method: Some("m".into()),
            authentication_data: Some(Bytes::from_static(&[0xAA])),
            response_information: Some("r".into()),
            server_reference: Some("s".into()),
            reason_string: Some("why".into()),
            receive_maximum: Some(10),
            topic_alias_maximum: Some(5),
            maximum_qos: Some(1),
            retain_available: Some(0),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
            maximum_packet_size: Some(1024),
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(0),
            shared_subscription_available: Some(1),
            ..Properties::default()
        };
        #[rustfmt::skip]
        let bytes = [
            0x45, // 69 bytes of properties
            0x11, 0x01, 0x02, 0x03, 0x04,   // session expiry
            0x12, 0x00, 0x01, b'c',         // assigned client id
            0x13, 0x00, 0x1E,               // server keep alive 30
            0x15, 0x00, 0x01, b'm',         // auth method
            0x16, 0x00, 0x01, 0xAA,         // auth data
            0x1A, 0x00, 0x01, b'r',         // response information
            0x1C, 0x00, 0x01, b's',         // server reference
            0x1F, 0x00, 0x03, b'w', b'h', b'y', // reason string
            0x21, 0x00, 0x0A,               // receive maximum 10
            0x22, 0x00, 0x05,               // topic alias maximum 5
            0x24, 0x01,                     // maximum qos 1
            0x25, 0x00,                     // retain available 0
            0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property
            0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'w', // repeated key: allowed, order kept
            0x27, 0x00, 0x00, 0x04, 0x00,   // maximum packet size 1024
            0x28, 0x01, 0x29, 0x00, 0x2A, 0x01,
        ];
        assert_eq!(bytes.len(), 70);
        assert_eq!(write(&p, Allowed::CONNACK).as_deref(), Ok(&bytes[..]));
        assert_eq!(read(&bytes, Allowed::CONNACK), Ok(p));
    }

    #[test]
    fn every_publish_and_will_property_golden() {
        let p = Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            content_type: Some("j".into()),
            response_topic: Some("r/t".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            subscription_identifiers: vec![1, 128],
            topic_alias: Some(7),
            ..Properties::default()
        };
        #[rustfmt::skip]
        let bytes = [
            0x1E, // 30 bytes
            0x01, 0x01,
            0x02, 0x00, 0x00, 0x00, 0x3C,
            0x03, 0x00, 0x01, b'j',
            0x08, 0x00, 0x03, b'r', b'/', b't',
            0x09, 0x00, 0x02, 0x00, 0x01,
            0x0B, 0x01, 0x0B, 0x80, 0x01,   // two subscription identifiers, 1 and 128
            0x23, 0x00, 0x07,
        ];
        assert_eq!(write(&p, Allowed::PUBLISH).as_deref(), Ok(&bytes[..]));
        assert_eq!(read(&bytes, Allowed::PUBLISH), Ok(p.clone()));
        // The will has no subscription identifier or topic alias, but a will delay.
        assert!(matches!(
            read(&bytes, Allowed::WILL),
            Err(DecodeError::Protocol(_))
        ));
        assert_eq!(
            write(&p, Allowed::WILL),
            Err(EncodeError::Invalid("property not allowed in this packet"))
        );
        let will = Properties {
            will_delay_interval: Some(5),
            ..Properties::default()
        };
        let bytes = [0x05, 0x18, 0x00, 0x00, 0x00, 0x05];
        assert_eq!(write(&will, Allowed::WILL).as_deref(), Ok(&bytes[..]));
        assert_eq!(read(&bytes, Allowed::WILL), Ok(will));
    }

    #[test]
    fn every_connect_property_golden() {
        let p = Properties {
            session_expiry_interval: Some(0xFFFF_FFFF),
            authentication_method: Some("SCRAM".into()),
            authentication_data: Some(Bytes::new()),
            request_problem_information: Some(0),
            request_response_information: Some(1),
            receive_maximum: Some(0xFFFF),
            topic_alias_maximum: Some(0),
            maximum_packet_size: Some(0xFFFF_FFFF),
            ..Properties::default()
        };
        #[rustfmt::skip]
        let bytes = [
            0x1F, // 31 bytes
            0x11, 0xFF, 0xFF, 0xFF, 0xFF,
            0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M',
            0x16, 0x00, 0x00,
            0x17, 0x00,
            0x19, 0x01,
            0x21, 0xFF, 0xFF,
            0x22, 0x00, 0x00,
            0x27, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        assert_eq!(bytes.len(), 32);
        assert_eq!(write(&p, Allowed::CONNECT).as_deref(), Ok(&bytes[..]));
        assert_eq!(read(&bytes, Allowed::CONNECT), Ok(p));
    }

    #[test]
    fn empty_section_is_one_zero_byte() {
        assert_eq!(
            write(&Properties::default(), Allowed::PUB_RESP).as_deref(),
            Ok(&[0u8][..])
        );
        assert_eq!(read(&[0], Allowed::UNSUBSCRIBE), Ok(Properties::default()));
    }

    #[test]
    fn not_allowed_is_protocol_error() {
        // topic alias in a SUBSCRIBE, session expiry in a PUBACK, reason string in a CONNECT
        assert!(matches!(
            read(&[3, 0x23, 0, 1], Allowed::SUBSCRIBE),
            Err(DecodeError::Protocol(_))
        ));
        assert!(matches!(
            read(&[5, 0x11, 0, 0, 0, 1], Allowed::PUB_RESP),
            Err(DecodeError::Protocol(_))
        ));
        assert!(matches!(
            read(&[4, 0x1F, 0, 1, b'x'], Allowed::CONNECT),
            Err(DecodeError::Protocol(_))
        ));
    }

    #[test]
    fn duplicates_are_protocol_errors_except_user_and_publish_sub_ids() {
        let twice_expiry = [10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2];
        assert!(matches!(
            read(&twice_expiry, Allowed::PUBLISH),
            Err(DecodeError::Protocol(_))
        ));
        let twice_sub_id = [4, 0x0B, 1, 0x0B, 2];
        assert_eq!(
            read(&twice_sub_id, Allowed::PUBLISH).map(|p| p.subscription_identifiers),
            Ok(vec![1, 2])
        );
        assert!(matches!(
            read(&twice_sub_id, Allowed::SUBSCRIBE),
            Err(DecodeError::Protocol(_))
        ));
        let two = Properties {
            subscription_identifiers: vec![1, 2],
            ..Properties::default()
        };
        assert!(write(&two, Allowed::SUBSCRIBE).is_err());
        let twice_reason = [8, 0x1F, 0, 1, b'a', 0x1F, 0, 1, b'b'];
        assert!(matches!(
            read(&twice_reason, Allowed::PUB_RESP),
            Err(DecodeError::Protocol(_))
        ));
    }

    #[test]
    fn bad_values() {
        // subscription identifier 0
        assert!(matches!(
            read(&[2, 0x0B, 0], Allowed::SUBSCRIBE),
            Err(DecodeError::Protocol(_))
        ));
        let zero = Properties {
            subscription_identifiers: vec![0],
            ..Properties::default()
        };
        assert!(write(&zero, Allowed::PUBLISH).is_err());
        // receive maximum 0, maximum packet size 0, maximum QoS 2, request problem information 2
        assert!(matches!(
            read(&[3, 0x21, 0, 0], Allowed::CONNECT),
            Err(DecodeError::Protocol(_))
        ));
        assert!(matches!(
            read(&[5, 0x27, 0, 0, 0, 0], Allowed::CONNECT),
            Err(DecodeError::Protocol(_))
        ));
        assert!(matches!(
            read(&[2, 0x24, 2], Allowed::CONNACK),
            Err(DecodeError::Protocol(_))
        ));
        assert!(matches!(
            read(&[2, 0x17, 2], Allowed::CONNECT),
            Err(DecodeError::Protocol(_))
        ));
        let qos2 = Properties {
            maximum_qos: Some(2),
            ..Properties::default()
        };
        assert!(write(&qos2, Allowed::CONNACK).is_err());
        // unknown identifier 0x04, and a two-byte identifier
        assert!(matches!(
            read(&[2, 0x04, 0], Allowed::PUBLISH),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            read(&[3, 0x81, 0x01, 0], Allowed::PUBLISH),
            Err(DecodeError::Malformed(_))
        ));
        // section longer than the packet; value longer than the section
        assert!(matches!(
            read(&[5, 0x23, 0], Allowed::PUBLISH),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            read(&[2, 0x23, 0, 1], Allowed::PUBLISH),
            Err(DecodeError::Malformed(_))
        ));
        // a user property whose value is missing
        assert!(matches!(
            read(&[4, 0x26, 0, 1, b'k'], Allowed::PUBLISH),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn long_values_are_field_too_long() {
        let p = Properties {
            reason_string: Some("x".repeat(70_000)),
            ..Properties::default()
        };
        assert_eq!(
            p.encoded_len(Allowed::PUB_RESP),
            Err(EncodeError::FieldTooLong(70_000))
        );
        let p = Properties {
            correlation_data: Some(Bytes::from(vec![0; 65_536])),
            ..Properties::default()
        };
        assert_eq!(
            p.encoded_len(Allowed::PUBLISH),
            Err(EncodeError::FieldTooLong(65_536))
        );
    }
}
