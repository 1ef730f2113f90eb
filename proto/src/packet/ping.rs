//! PINGREQ and PINGRESP ([MQTT 5.0 §3.12–3.13](https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901195),
//! [MQTT 3.1.1 §3.12–3.13](http://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html#_Toc398718081)).
//!
//! ```text
//! Fixed header   0xC0 PINGREQ | 0xD0 PINGRESP, Remaining Length 0
//! ```
//!
//! Nothing to read: the dispatch checks the flags, and any body is trailing bytes.

use bytes::{BufMut, BytesMut};

use super::Packet;
use crate::error::EncodeError;

impl Packet {
    /// Writes PINGREQ or PINGRESP (`first_byte` says which).
    pub(crate) fn write_ping(first_byte: u8, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.reserve(2);
        out.put_slice(&[first_byte, 0x00]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Protocol;
    use crate::wire::test_util::*;

    #[test]
    fn golden_both_versions() {
        for protocol in [Protocol::V311, Protocol::V5] {
            golden(&Packet::PingReq, protocol, &[0xC0, 0x00]);
            golden(&Packet::PingResp, protocol, &[0xD0, 0x00]);
        }
    }

    #[test]
    fn bad_input() {
        malformed(&[0xC0, 0x01, 0x00], Protocol::V5); // a body
        malformed(&[0xC1, 0x00], Protocol::V5);
        malformed(&[0xD8, 0x00], Protocol::V311);
    }
}
