//! Wire primitives (STUB — being written).
use bytes::BytesMut;
use crate::error::{DecodeError, EncodeError};
use crate::packet::{Packet, Protocol};

pub(crate) fn decode_packet(_buf: &mut BytesMut, _p: Protocol, _max: usize) -> Result<Option<Packet>, DecodeError> {
    Err(DecodeError::Malformed("codec not written yet"))
}
pub(crate) fn encode_packet(_pkt: &Packet, _p: Protocol, _out: &mut BytesMut) -> Result<(), EncodeError> {
    Err(EncodeError::Invalid("codec not written yet"))
}
