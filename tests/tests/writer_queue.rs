//! The per-stream writer queue is bounded: a peer that keeps asking for answers (PINGREQ) and never
//! reads them is closed once its stream's writer holds `limits.max_stream_backlog +
//! limits.max_packet_size` bytes, instead of growing the server's memory without limit; everyone
//! else is still served.

use std::time::Duration;

use anyhow::{bail, Result};
use bytes::BytesMut;
use quicft_proto::{Packet, Protocol, QoS};
use quicft_tests::{connect_packet, TestServer, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Resident memory of this process (the server runs in it), in bytes.
fn rss() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    match kb {
        Some(kb) => Ok(kb * 1024),
        None => bail!("no VmRSS in /proc/self/status"),
    }
}

#[tokio::test]
async fn a_peer_that_sends_pingreqs_and_never_reads_is_closed() -> Result<()> {
    const LIMIT: usize = 16 * 1024;
    let srv = TestServer::start_with(|c| {
        c.limits.max_stream_backlog = LIMIT;
        c.limits.max_packet_size = LIMIT;
    })
    .await?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    // A small window, so the answers pile up in the server rather than in our socket.
    socket.set_recv_buffer_size(4096)?;
    let mut tcp = socket.connect(srv.addr(Transport::Tcp)).await?;
    let mut buf = BytesMut::new();
    Packet::Connect(connect_packet("deaf", Protocol::V5)).encode(Protocol::V5, &mut buf)?;
    tcp.write_all(&buf).await?;
    let mut ack = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut ack)).await??;
    assert!(n > 0 && ack[0] == 0x20, "no CONNACK: {:?}", &ack[..n]);

    // From here on we never read.
    let before = rss()?;
    let pings: Vec<u8> = [0xC0u8, 0x00].repeat(32 * 1024);
    let mut sent = 0usize;
    let closed = loop {
        if sent > 256 << 20 {
            break false;
        }
        match tokio::time::timeout(Duration::from_secs(20), tcp.write_all(&pings)).await {
            Ok(Ok(())) => sent += pings.len(),
            // Reset or broken pipe: the server closed the connection.
            Ok(Err(_)) => break true,
            Err(_) => bail!("the server neither read nor closed after {sent} bytes of PINGREQ"),
        }
    };
    let grown = rss()?.saturating_sub(before);
    assert!(closed, "still open after {sent} bytes of PINGREQ");
    assert!(
        grown < 64 << 20,
        "memory grew by {grown} bytes while {sent} bytes of PINGREQ went unanswered"
    );

    // Everyone else is still served.
    let mut c = srv.connect(Transport::Tcp, "healthy").await?;
    let d = c.data().await?;
    d.subscribe("health", QoS::AtLeastOnce, 1).await?;
    d.publish_qos1("health", b"ok", 2).await?;
    assert_eq!(&d.next_publish().await?.payload[..], b"ok");
    c.disconnect().await
}
