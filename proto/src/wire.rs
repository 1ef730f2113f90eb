//! Wire primitives shared by every packet kind; the dispatch on the packet type is in
//! [`crate::packet`].
//!
//! Data representations ([MQTT 5.0 §1.5](https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901006)):
//!
//! ```text
//! Two Byte Integer        u16, big endian
//! Four Byte Integer       u32, big endian
//! UTF-8 Encoded String    u16 length | length bytes of UTF-8, no U+0000
//! Binary Data             u16 length | length bytes
//! Variable Byte Integer   1..=4 bytes, 7 bits each, least significant group first,
//!                         bit 7 set = "another byte follows"; at most 268,435,455
//! ```
//!
//! Fixed header ([MQTT 5.0 §2.1.1](https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901021)):
//!
//! ```text
//!   bit    7 6 5 4 | 3 2 1 0
//! byte 1   type    | flags        type 1..=15; flags fixed per type except PUBLISH
//! byte 2.. Remaining Length       Variable Byte Integer: bytes after the fixed header
//! ```
//!
//! Decoding reads from a [`Reader`] over one frozen packet, so binary fields and payloads are
//! zero-copy slices of it. Encoding computes every length first (which also validates the fields), then
//! reserves the exact size and writes; the remaining length therefore never depends on what `out`
//! already holds.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::properties::Properties;
use crate::properties_codec::Allowed;
use crate::reason::ReasonCode;

/// The largest Variable Byte Integer: four bytes of seven bits.
pub(crate) const VARINT_MAX: usize = 268_435_455;

/// Any read past the end of the packet (or of a length-prefixed section inside it).
const TRUNCATED: DecodeError = DecodeError::Malformed("field runs past the end of the packet");

/// Bytes needed to write `v` as a Variable Byte Integer (`v <= VARINT_MAX`).
pub(crate) fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Reads a Variable Byte Integer from the front of `bytes`.
///
/// `Ok(None)`: `bytes` ends inside the integer. A fourth byte with its continuation bit set would make
/// a fifth, which the spec forbids, so that is `Malformed` without waiting for more input.
/// Non-minimal encodings (`0x80 0x00` for 0) are accepted: rejecting them protects nothing.
pub(crate) fn parse_varint(bytes: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value = 0usize;
    for (i, &b) in bytes.iter().take(4).enumerate() {
        value |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 4 {
        Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    } else {
        Ok(None)
    }
}

/// Appends `v` as a Variable Byte Integer. Callers have checked `v <= VARINT_MAX`.
pub(crate) fn put_varint(out: &mut BytesMut, mut v: usize) {
    debug_assert!(v <= VARINT_MAX);
    loop {
        let low = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.put_u8(low);
            return;
        }
        out.put_u8(low | 0x80);
    }
}

/// A cursor over one packet (or a length-delimited section of it). Every read is bounds-checked and
/// fails with `Malformed` past the end; slices share the packet's memory.
pub(crate) struct Reader<'a> {
    frame: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// Reads `frame` from `start` to its end.
    pub(crate) fn new(frame: &'a Bytes, start: usize) -> Self {
        Reader {
            frame,
            pos: start.min(frame.len()),
            end: frame.len(),
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.end - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    /// Fails unless everything was read: trailing bytes mean the lengths disagree.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(
                "unexpected bytes at the end of the packet",
            ))
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.end)
            .ok_or(TRUNCATED)?;
        let frame: &'a [u8] = self.frame;
        let s = frame.get(self.pos..end).ok_or(TRUNCATED)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.take(N)?.try_into().map_err(|_| TRUNCATED)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn varint(&mut self) -> Result<usize, DecodeError> {
        let rest = self.frame.get(self.pos..self.end).ok_or(TRUNCATED)?;
        let (v, n) = parse_varint(rest)?.ok_or(TRUNCATED)?;
        self.pos += n;
        Ok(v)
    }

    /// A packet identifier, which must not be 0 where this is called.
    pub(crate) fn pkid(&mut self) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::Protocol("packet identifier 0")),
            id => Ok(id),
        }
    }

    /// Binary Data as a borrowed slice (for the protocol name, which is compared, not kept).
    pub(crate) fn binary_slice(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// Binary Data as a zero-copy slice of the packet.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.bytes(usize::from(len))
    }

    /// A UTF-8 Encoded String ([MQTT 5.0 §1.5.4]): valid UTF-8 (which already excludes the
    /// surrogates U+D800..U+DFFF) and no U+0000.
    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let raw = self.binary_slice()?;
        if raw.contains(&0) {
            return Err(DecodeError::Malformed("string contains U+0000"));
        }
        std::str::from_utf8(raw).map_err(|_| DecodeError::Malformed("string is not valid UTF-8"))
    }

    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        self.str().map(str::to_owned)
    }

    /// The next `n` bytes as a zero-copy slice.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take(n)?;
        Ok(self.frame.slice(start..self.pos))
    }

    /// Everything left (a PUBLISH payload), zero-copy.
    pub(crate) fn rest(&mut self) -> Bytes {
        let start = self.pos;
        self.pos = self.end;
        self.frame.slice(start..self.end)
    }

    /// Splits off the next `n` bytes as their own reader (a property section).
    pub(crate) fn sub(&mut self, n: usize) -> Result<Reader<'a>, DecodeError> {
        let start = self.pos;
        self.take(n)?;
        Ok(Reader {
            frame: self.frame,
            pos: start,
            end: self.pos,
        })
    }
}

/// Encoded size of a UTF-8 string field (length prefix included); rejects what the decoder would.
pub(crate) fn string_len(s: &str) -> Result<usize, EncodeError> {
    if s.as_bytes().contains(&0) {
        return Err(EncodeError::Invalid("string contains U+0000"));
    }
    binary_len(s.as_bytes())
}

/// Encoded size of a Binary Data field (length prefix included).
pub(crate) fn binary_len(b: &[u8]) -> Result<usize, EncodeError> {
    if b.len() > usize::from(u16::MAX) {
        Err(EncodeError::FieldTooLong(b.len()))
    } else {
        Ok(2 + b.len())
    }
}

/// Writes Binary Data. The length was checked by [`binary_len`]; checked again rather than cast so that
/// a field can never be truncated silently.
pub(crate) fn put_binary(out: &mut BytesMut, b: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(b.len()).map_err(|_| EncodeError::FieldTooLong(b.len()))?;
    out.put_u16(len);
    out.put_slice(b);
    Ok(())
}

pub(crate) fn put_string(out: &mut BytesMut, s: &str) -> Result<(), EncodeError> {
    put_binary(out, s.as_bytes())
}

/// Reserves room for the whole packet and writes its fixed header.
pub(crate) fn put_fixed_header(
    out: &mut BytesMut,
    first_byte: u8,
    remaining: usize,
) -> Result<(), EncodeError> {
    if remaining > VARINT_MAX {
        return Err(EncodeError::PacketTooLong(remaining));
    }
    out.reserve(1 + varint_len(remaining) + remaining);
    out.put_u8(first_byte);
    put_varint(out, remaining);
    Ok(())
}

/// Size of a property section: its length prefix plus `content` bytes of properties.
pub(crate) fn section_len(content: usize) -> usize {
    varint_len(content) + content
}

/// First byte of each packet kind (type in the high nibble, the flags the spec fixes in the low one).
pub(crate) mod header {
    pub(crate) const CONNECT: u8 = 0x10;
    pub(crate) const CONNACK: u8 = 0x20;
    pub(crate) const PUBLISH: u8 = 0x30;
    pub(crate) const PUBACK: u8 = 0x40;
    pub(crate) const PUBREC: u8 = 0x50;
    pub(crate) const PUBREL: u8 = 0x62;
    pub(crate) const PUBCOMP: u8 = 0x70;
    pub(crate) const SUBSCRIBE: u8 = 0x82;
    pub(crate) const SUBACK: u8 = 0x90;
    pub(crate) const UNSUBSCRIBE: u8 = 0xA2;
    pub(crate) const UNSUBACK: u8 = 0xB0;
    pub(crate) const PINGREQ: u8 = 0xC0;
    pub(crate) const PINGRESP: u8 = 0xD0;
    pub(crate) const DISCONNECT: u8 = 0xE0;
    pub(crate) const AUTH: u8 = 0xF0;
}

/// The optional tail `Reason Code [Property Length Properties]` shared by the PUBACK family,
/// DISCONNECT and AUTH under MQTT 5 (e.g. [MQTT 5.0 §3.4.2.1]): absent means 0x00 without properties.
pub(crate) fn read_reason_tail(
    r: &mut Reader<'_>,
    allowed: Allowed,
) -> Result<(ReasonCode, Properties), DecodeError> {
    if r.is_empty() {
        return Ok((ReasonCode::SUCCESS, Properties::default()));
    }
    let code = ReasonCode(r.u8()?);
    if r.is_empty() {
        return Ok((code, Properties::default()));
    }
    Ok((code, Properties::read(r, allowed)?))
}

/// How [`write_reason_tail`] will write a reason code and properties: the minimal form the spec allows.
#[derive(Clone, Copy)]
pub(crate) enum ReasonTail {
    /// Nothing: success without properties.
    Empty,
    /// The reason code only.
    Code,
    /// Reason code and a property section with this many bytes of properties.
    Full(usize),
}

impl ReasonTail {
    /// `code_alone`: whether the packet kind lets the property length be dropped after a reason code.
    pub(crate) fn plan(
        code: ReasonCode,
        props: &Properties,
        allowed: Allowed,
        code_alone: bool,
    ) -> Result<ReasonTail, EncodeError> {
        let content = props.encoded_len(allowed)?;
        Ok(match (code == ReasonCode::SUCCESS, content, code_alone) {
            (true, 0, _) => ReasonTail::Empty,
            (false, 0, true) => ReasonTail::Code,
            _ => ReasonTail::Full(content),
        })
    }

    pub(crate) fn len(self) -> usize {
        match self {
            ReasonTail::Empty => 0,
            ReasonTail::Code => 1,
            ReasonTail::Full(content) => 1 + section_len(content),
        }
    }
}

pub(crate) fn write_reason_tail(
    out: &mut BytesMut,
    tail: ReasonTail,
    code: ReasonCode,
    props: &Properties,
) -> Result<(), EncodeError> {
    match tail {
        ReasonTail::Empty => Ok(()),
        ReasonTail::Code => {
            out.put_u8(code.0);
            Ok(())
        }
        ReasonTail::Full(content) => {
            out.put_u8(code.0);
            props.write(content, out)
        }
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Helpers for the golden-byte tests of every packet module.
    use bytes::BytesMut;

    use crate::error::DecodeError;
    use crate::packet::{Packet, Protocol};

    pub(crate) fn encode(p: &Packet, protocol: Protocol) -> Vec<u8> {
        let mut out = BytesMut::new();
        match p.encode(protocol, &mut out) {
            Ok(()) => out.to_vec(),
            Err(e) => panic!("encoding {p:?} failed: {e}"),
        }
    }

    /// Decodes exactly one whole packet from `bytes`.
    pub(crate) fn decode(bytes: &[u8], protocol: Protocol) -> Result<Packet, DecodeError> {
        let mut buf = BytesMut::from(bytes);
        let p = Packet::decode(&mut buf, protocol, usize::MAX)?;
        assert!(buf.is_empty(), "decoder left {} bytes", buf.len());
        Ok(p.expect("complete packet decodes to Some"))
    }

    /// `bytes` is the encoding of `p`, both ways, also when appended after other bytes, and every
    /// proper prefix of it is "incomplete".
    pub(crate) fn golden(p: &Packet, protocol: Protocol, bytes: &[u8]) {
        assert_eq!(encode(p, protocol), bytes, "encoding of {p:?}");
        assert_eq!(
            decode(bytes, protocol).as_ref(),
            Ok(p),
            "decoding of {bytes:02x?}"
        );
        let mut out = BytesMut::from(&b"\x01\x02\x03"[..]);
        p.encode(protocol, &mut out).expect("encodes");
        assert_eq!(&out[..3], b"\x01\x02\x03");
        assert_eq!(&out[3..], bytes, "encoding after existing bytes");
        assert_eq!(p.encoded_len(protocol), Ok(bytes.len()));
        partial(bytes, protocol);
    }

    /// Every split point: a prefix is `Ok(None)` and untouched; the rest completes it.
    pub(crate) fn partial(bytes: &[u8], protocol: Protocol) {
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(
                Packet::decode(&mut buf, protocol, usize::MAX),
                Ok(None),
                "prefix of {cut} bytes"
            );
            assert_eq!(&buf[..], &bytes[..cut], "buffer touched at cut {cut}");
            buf.extend_from_slice(&bytes[cut..]);
            assert!(matches!(
                Packet::decode(&mut buf, protocol, usize::MAX),
                Ok(Some(_))
            ));
        }
    }

    pub(crate) fn malformed(bytes: &[u8], protocol: Protocol) {
        match decode(bytes, protocol) {
            Err(DecodeError::Malformed(_)) => {}
            other => panic!("{bytes:02x?}: expected Malformed, got {other:?}"),
        }
    }

    pub(crate) fn protocol_error(bytes: &[u8], protocol: Protocol) {
        match decode(bytes, protocol) {
            Err(DecodeError::Protocol(_)) => {}
            other => panic!("{bytes:02x?}: expected Protocol, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;
    use crate::packet::{Packet, Protocol, Publish, QoS};

    #[test]
    fn varint_boundaries() {
        // [MQTT 5.0 §1.5.5] table of sizes
        for (v, bytes) in [
            (0usize, &[0x00][..]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = BytesMut::new();
            put_varint(&mut out, v);
            assert_eq!(&out[..], bytes);
            assert_eq!(varint_len(v), bytes.len());
            assert_eq!(parse_varint(bytes), Ok(Some((v, bytes.len()))));
            assert_eq!(parse_varint(&bytes[..bytes.len() - 1]), Ok(None));
        }
    }

    #[test]
    fn five_byte_varint_is_malformed() {
        assert!(matches!(
            parse_varint(&[0xFF, 0xFF, 0xFF, 0xFF]),
            Err(DecodeError::Malformed(_))
        ));
        // Known as soon as the fourth byte is in, without the fifth.
        let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x80, 0x80][..]);
        assert!(matches!(
            Packet::decode(&mut buf, Protocol::V5, usize::MAX),
            Err(DecodeError::Malformed(_))
        ));
        let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x80][..]);
        assert_eq!(Packet::decode(&mut buf, Protocol::V5, usize::MAX), Ok(None));
    }

    #[test]
    fn field_too_long_is_an_error_and_leaves_out_alone() {
        let p = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "t".repeat(65_536),
            pkid: 0,
            properties: Properties::default(),
            payload: Bytes::new(),
        });
        let mut out = BytesMut::from(&b"keep"[..]);
        assert_eq!(
            p.encode(Protocol::V5, &mut out),
            Err(EncodeError::FieldTooLong(65_536))
        );
        assert_eq!(&out[..], b"keep");
        // 65,535 is the largest that fits
        let Packet::Publish(mut ok) = p else {
            unreachable!()
        };
        ok.topic.truncate(65_535);
        let ok = Packet::Publish(ok);
        assert_eq!(decode(&encode(&ok, Protocol::V5), Protocol::V5), Ok(ok));
    }

    #[test]
    fn nul_and_bad_utf8_strings_are_malformed() {
        // PUBLISH QoS 0, topic "a\0"
        malformed(&[0x30, 0x05, 0x00, 0x02, b'a', 0x00, 0x00], Protocol::V5);
        // topic 0xC3 0x28 (invalid UTF-8)
        malformed(&[0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, 0x00], Protocol::V5);
        // topic U+D800 encoded as CESU (ED A0 80) is not UTF-8
        malformed(
            &[0x30, 0x06, 0x00, 0x03, 0xED, 0xA0, 0x80, 0x00],
            Protocol::V5,
        );
        // string length past the end
        malformed(&[0x30, 0x03, 0x00, 0x05, b'a'], Protocol::V5);
    }
}
