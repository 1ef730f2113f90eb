//! Mirrored data streams on the wire (README "QUIC stream mapping", proto/src/mirror.rs), driven by a
//! raw QUIC client: the server takes each byte from whichever copy brings it first, answers on the
//! data stream, never acts twice on the same bytes, and refuses mirrors it cannot use without
//! harming the connection.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bytes::BytesMut;
use quicft_proto::mirror::{offered, Header, OFFER};
use quicft_proto::{Packet, Protocol, QoS};
use quicft_tests::{connect_packet, publish, Conn, RawStream, TestServer, Transport};

fn bytes(p: &Packet) -> Result<Vec<u8>> {
    let mut b = BytesMut::new();
    p.encode(Protocol::V5, &mut b)?;
    Ok(b.to_vec())
}

fn header(s: &RawStream) -> Result<Vec<u8>> {
    let id = s.quic_id.context("a QUIC stream")?;
    Ok(Header {
        stream_id: u64::from(id),
    }
    .encode()?)
}

async fn open(server: &TestServer, id: &str) -> Result<Conn> {
    let (conn, ack) = Conn::open(server, Transport::Quic, connect_packet(id, Protocol::V5)).await?;
    ensure!(
        offered(&ack.properties),
        "CONNACK over QUIC does not offer mirrors: {ack:?}"
    );
    Ok(conn)
}

async fn open_uni(conn: &Conn) -> Result<quinn::SendStream> {
    Ok(conn.quic.as_ref().context("QUIC")?.open_uni().await?)
}

/// A watcher subscribed to `topic`.
async fn watcher(server: &TestServer, id: &str, topic: &str) -> Result<Conn> {
    let mut w = server.connect(Transport::Quic, id).await?;
    w.data()
        .await?
        .subscribe(topic, QoS::AtLeastOnce, 1)
        .await?;
    Ok(w)
}

/// Exactly one delivery of `payload` reaches the watcher.
async fn delivered_once(w: &mut Conn, payload: &[u8]) -> Result<()> {
    let p = w.data().await?.next_publish().await?;
    ensure!(p.payload[..] == payload[..], "delivered {:?}", p.payload);
    if let Some(extra) = w.data().await?.try_recv(Duration::from_millis(500)).await? {
        bail!("the message was acted on twice: {extra:?}");
    }
    Ok(())
}

#[tokio::test]
async fn only_quic_connacks_offer_mirrors() -> Result<()> {
    let server = TestServer::start().await?;
    open(&server, "offer-quic").await?;
    let (_tls, ack) = Conn::open(
        &server,
        Transport::Tls,
        connect_packet("offer-tls", Protocol::V5),
    )
    .await?;
    ensure!(
        !ack.properties
            .user_properties
            .iter()
            .any(|(k, _)| k.as_str() == OFFER.0),
        "a TLS connection cannot open mirror streams: {ack:?}"
    );
    Ok(())
}

/// The mirror brings a PUBLISH the data stream has not carried yet: it is acknowledged on the data
/// stream; the data stream's own late copy of the same bytes is dropped; later bytes on the data
/// stream are read as usual.
#[tokio::test]
async fn the_first_copy_wins_and_the_late_one_is_dropped() -> Result<()> {
    let server = TestServer::start().await?;
    let mut w = watcher(&server, "first-watch", "m/first").await?;
    let conn = open(&server, "first").await?;
    let mut s = conn.open_stream().await?;
    let ping = bytes(&Packet::PingReq)?;
    s.send_bytes(&ping).await?;
    ensure!(matches!(s.recv().await?, Packet::PingResp), "PINGRESP");

    let publish = bytes(&publish("m/first", b"one", QoS::AtLeastOnce, 7))?;
    let mut m = open_uni(&conn).await?;
    m.write_all(&header(&s)?).await?;
    m.write_all(&ping).await?; // bytes the data stream already carried
    m.write_all(&publish).await?;
    match s.recv().await? {
        Packet::PubAck(a) if a.pkid == 7 => {}
        other => bail!("expected PUBACK 7 on the data stream, got {other:?}"),
    }
    delivered_once(&mut w, b"one").await?;

    s.send_bytes(&publish).await?; // the late copy
    s.send_bytes(&ping).await?; // new bytes
    match s.recv().await? {
        Packet::PingResp => {}
        other => bail!("the late copy was acted on: {other:?}"),
    }
    if let Some(extra) = w.data().await?.try_recv(Duration::from_millis(300)).await? {
        bail!("the late copy was delivered: {extra:?}");
    }
    Ok(())
}

/// A mirror whose data stream has not reached the server yet (its first packet was lost) waits for
/// it.
#[tokio::test]
async fn a_mirror_may_arrive_before_its_data_stream() -> Result<()> {
    let server = TestServer::start().await?;
    let mut w = watcher(&server, "early-watch", "m/early").await?;
    let conn = open(&server, "early").await?;
    let mut s = conn.open_stream().await?; // nothing sent: the server does not know it yet
    let publish = bytes(&publish("m/early", b"two", QoS::AtLeastOnce, 9))?;
    let mut m = open_uni(&conn).await?;
    m.write_all(&header(&s)?).await?;
    m.write_all(&publish).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.send_bytes(&publish).await?;
    match s.recv().await? {
        Packet::PubAck(a) if a.pkid == 9 => {}
        other => bail!("expected PUBACK 9, got {other:?}"),
    }
    if let Some(extra) = s.try_recv(Duration::from_millis(300)).await? {
        bail!("acknowledged twice: {extra:?}");
    }
    delivered_once(&mut w, b"two").await
}

/// Mirrors the server cannot use are stopped with 0x82; the connection keeps working.
#[tokio::test]
async fn unusable_mirrors_are_refused_and_the_connection_lives_on() -> Result<()> {
    let server = TestServer::start().await?;
    let mut conn = open(&server, "refuse").await?;
    let mut s = conn.open_stream().await?;
    s.send_bytes(&bytes(&Packet::PingReq)?).await?;
    ensure!(matches!(s.recv().await?, Packet::PingResp), "PINGRESP");

    let mut first = open_uni(&conn).await?;
    first.write_all(&header(&s)?).await?;
    // Paired before the second mirror of the same stream comes (headers are read concurrently).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut refused = Vec::new();
    for (what, h) in [
        ("the control stream", vec![0x00]),
        ("a server-initiated stream", vec![0x01]),
        ("a unidirectional stream", vec![0x02]),
        ("a second mirror of one stream", header(&s)?),
    ] {
        let mut m = open_uni(&conn).await?;
        m.write_all(&h).await?;
        refused.push((what, m));
    }
    for (what, m) in refused {
        let code = tokio::time::timeout(Duration::from_secs(5), m.stopped())
            .await
            .with_context(|| format!("a mirror of {what} was not stopped"))??;
        ensure!(
            code == Some(quinn::VarInt::from_u32(0x82)),
            "a mirror of {what} stopped with {code:?}"
        );
    }
    // Still serving: the accepted mirror, the data stream and a new stream.
    first.write_all(&bytes(&Packet::PingReq)?).await?;
    s.send_bytes(&bytes(&Packet::PingReq)?).await?;
    ensure!(matches!(s.recv().await?, Packet::PingResp), "PINGRESP");
    let ack = conn.data().await?.publish_qos1("m/after", b"x", 3).await?;
    ensure!(!ack.code.is_error(), "{ack:?}");
    Ok(())
}
