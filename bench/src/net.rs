//! Small pieces every load tool needs: a free loopback port for a broker to bind, and reading
//! MQTT packets off a byte stream.

use anyhow::Result;
use bytes::BytesMut;
use quicft_proto::{Packet, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt};

/// A loopback port nobody listens on right now (TCP or UDP).
pub fn free_port(udp: bool) -> Result<u16> {
    let port = if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    };
    Ok(port)
}

/// The next MQTT 5 packet from a stream (packets up to `max_packet` bytes), reading into `buf`;
/// `Ok(None)` at end of stream.
pub async fn next_packet<R: AsyncRead + Unpin + ?Sized>(
    rd: &mut R,
    buf: &mut BytesMut,
    max_packet: usize,
) -> Result<Option<Packet>> {
    loop {
        if let Some(p) = Packet::decode(buf, Protocol::V5, max_packet)? {
            return Ok(Some(p));
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        if rd.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}
