//! `Packet::decode` over arbitrary bytes, as both protocol versions.
//!
//! Besides "never panics", every packet that decodes must re-encode, and the encoding must decode to
//! the same packet: the encoder accepts all the decoder does, and the two agree on every field.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use quicft_proto::{DecodeError, Packet, Protocol};

/// Small enough that the size check is exercised, large enough for most inputs to get through it.
const MAX_PACKET_SIZE: usize = 4096;

fuzz_target!(|data: &[u8]| {
    for protocol in [Protocol::V311, Protocol::V5] {
        decode_all(data, protocol);
    }
});

/// Decodes packets back to back, as a connection would, until the input is used up or refused.
fn decode_all(data: &[u8], protocol: Protocol) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.clone();
        match Packet::decode(&mut buf, protocol, MAX_PACKET_SIZE) {
            Ok(Some(packet)) => {
                assert!(buf.len() < before.len(), "a decoded packet consumes bytes");
                round_trip(&packet, protocol);
            }
            Ok(None) => {
                assert_eq!(buf, before, "incomplete input must be left untouched");
                return;
            }
            Err(DecodeError::TooLarge { size, max }) => {
                assert!(size > max);
                assert_eq!(
                    buf, before,
                    "an oversize packet must be refused before it is consumed"
                );
                return;
            }
            Err(_) => return,
        }
    }
}

fn round_trip(packet: &Packet, protocol: Protocol) {
    let mut out = BytesMut::from(&b"prefix"[..]);
    if let Err(e) = packet.encode(protocol, &mut out) {
        panic!("decoded {packet:?} but cannot encode it: {e}");
    }
    assert_eq!(&out[..6], b"prefix");
    let mut encoded = out.split_off(6);
    assert_eq!(packet.encoded_len(protocol), Ok(encoded.len()));
    match Packet::decode(&mut encoded, protocol, usize::MAX) {
        Ok(Some(again)) => assert_eq!(&again, packet, "re-decoded packet differs"),
        other => panic!("our encoding of {packet:?} does not decode: {other:?}"),
    }
    assert!(encoded.is_empty(), "re-decoding left bytes over");
}
