//! Bad input on every listener: each gets a clear reason code (DISCONNECT/CONNACK) or a stream reset,
//! nothing panics, and the server keeps serving everyone else.

use anyhow::Result;
use quicft_proto::{Packet, Protocol, QoS, ReasonCode};
use quicft_tests::{
    connect_packet, publish, Conn, StreamEnd, TestServer, Transport, ALL_TRANSPORTS,
};
use rand::{Rng, SeedableRng};

/// A fresh client can still connect and round-trip a message.
async fn still_serving(srv: &TestServer, t: Transport) -> Result<()> {
    let mut c = srv.connect(t, "healthy").await?;
    let d = c.data().await?;
    d.subscribe("health", QoS::AtLeastOnce, 1).await?;
    d.publish_qos1("health", b"ok", 2).await?;
    assert_eq!(&d.next_publish().await?.payload[..], b"ok");
    c.disconnect().await
}

fn disconnect_code(seen: &[Packet]) -> Option<ReasonCode> {
    seen.iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.code),
        _ => None,
    })
}

#[tokio::test]
async fn random_bytes_before_connect() -> Result<()> {
    let srv = TestServer::start().await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for t in ALL_TRANSPORTS {
        for _ in 0..20 {
            let mut conn = Conn::raw(&srv, t, Protocol::V5).await?;
            let len = rng.gen_range(1..512);
            let mut junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            // Never a valid CONNECT header, so the server must refuse rather than wait for more.
            junk[0] = rng.gen_range(0x20..=0xff);
            let _ = conn.ctl.send_bytes(&junk).await;
            let (seen, _) = conn.ctl.recv_end().await?;
            assert!(
                seen.iter()
                    .all(|p| !matches!(p, Packet::ConnAck(a) if a.code == ReasonCode::SUCCESS)),
                "{t:?}"
            );
        }
        still_serving(&srv, t).await?;
    }
    Ok(())
}

#[tokio::test]
async fn publish_before_connect_closes() -> Result<()> {
    let srv = TestServer::start().await?;
    for t in ALL_TRANSPORTS {
        let mut conn = Conn::raw(&srv, t, Protocol::V5).await?;
        conn.ctl
            .send(&publish("x", b"early", QoS::AtMostOnce, 0))
            .await?;
        let (seen, end) = conn.ctl.recv_end().await?;
        assert!(seen.is_empty(), "{t:?}: {seen:?}");
        assert_ne!(end, StreamEnd::Reset(0), "{t:?}");
        still_serving(&srv, t).await?;
    }
    Ok(())
}

#[tokio::test]
async fn truncated_connect_then_close() -> Result<()> {
    let srv = TestServer::start().await?;
    for t in ALL_TRANSPORTS {
        let mut conn = Conn::raw(&srv, t, Protocol::V5).await?;
        let mut b = bytes::BytesMut::new();
        Packet::Connect(connect_packet("half", Protocol::V5)).encode(Protocol::V5, &mut b)?;
        conn.ctl.send_bytes(&b[..b.len() / 2]).await?;
        conn.kill();
        still_serving(&srv, t).await?;
    }
    Ok(())
}

#[tokio::test]
async fn unsupported_protocol_version_gets_connack_0x84() -> Result<()> {
    let srv = TestServer::start().await?;
    for t in ALL_TRANSPORTS {
        let mut conn = Conn::raw(&srv, t, Protocol::V311).await?;
        // CONNECT with protocol level 6.
        conn.ctl
            .send_bytes(&[
                0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3c, 0x00, 0x01,
                b'z',
            ])
            .await?;
        match conn.ctl.recv().await? {
            Packet::ConnAck(a) => {
                assert_eq!(a.code, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, "{t:?}")
            }
            other => panic!("{t:?}: expected CONNACK, got {other:?}"),
        }
        still_serving(&srv, t).await?;
    }
    Ok(())
}

#[tokio::test]
async fn second_connect_is_a_protocol_error() -> Result<()> {
    let srv = TestServer::start().await?;
    for t in ALL_TRANSPORTS {
        let mut conn = srv.connect(t, "twice").await?;
        conn.ctl
            .send(&Packet::Connect(connect_packet("twice", Protocol::V5)))
            .await?;
        let (seen, _) = conn.ctl.recv_end().await?;
        assert_eq!(
            disconnect_code(&seen),
            Some(ReasonCode::PROTOCOL_ERROR),
            "{t:?}"
        );
        still_serving(&srv, t).await?;
    }
    Ok(())
}

/// PUBLISH with topic bytes that are not UTF-8 (0xff 0xfe).
const BAD_UTF8_PUBLISH: [u8; 7] = [0x30, 0x05, 0x00, 0x02, 0xff, 0xfe, b'x'];

#[tokio::test]
async fn invalid_utf8_topic() -> Result<()> {
    let srv = TestServer::start().await?;
    for t in ALL_TRANSPORTS {
        let mut conn = srv.connect(t, "utf8").await?;
        if t == Transport::Quic {
            let mut s = conn.open_stream().await?;
            s.send_bytes(&BAD_UTF8_PUBLISH).await?;
            assert_eq!(
                s.recv_end().await?.1,
                StreamEnd::Reset(u64::from(ReasonCode::MALFORMED_PACKET.0))
            );
            // The connection is unharmed.
            conn.ctl.send(&Packet::PingReq).await?;
            assert_eq!(conn.ctl.recv().await?, Packet::PingResp);
        } else {
            conn.ctl.send_bytes(&BAD_UTF8_PUBLISH).await?;
            let (seen, _) = conn.ctl.recv_end().await?;
            assert_eq!(
                disconnect_code(&seen),
                Some(ReasonCode::MALFORMED_PACKET),
                "{t:?}"
            );
        }
        still_serving(&srv, t).await?;
    }
    Ok(())
}

#[tokio::test]
async fn wildcard_in_publish_topic() -> Result<()> {
    let srv = TestServer::start().await?;
    for t in [Transport::Tcp, Transport::Tls] {
        let mut conn = srv.connect(t, "wild").await?;
        conn.ctl
            .send(&publish("a/#", b"x", QoS::AtMostOnce, 0))
            .await?;
        let (seen, _) = conn.ctl.recv_end().await?;
        assert_eq!(
            disconnect_code(&seen),
            Some(ReasonCode::TOPIC_NAME_INVALID),
            "{t:?}"
        );
        still_serving(&srv, t).await?;
    }
    // QUIC: covered stream-wise in broker.rs (quic_malformed_packet_resets_only_its_stream).
    Ok(())
}

#[tokio::test]
async fn oversize_packet_is_refused_before_it_arrives() -> Result<()> {
    let srv = TestServer::start_with(|c| c.limits.max_packet_size = 4096).await?;
    for t in ALL_TRANSPORTS {
        let (mut conn, ack) = Conn::open(&srv, t, connect_packet("big", Protocol::V5)).await?;
        assert_eq!(
            ack.properties.maximum_packet_size,
            Some(4096),
            "advertised in CONNACK"
        );
        // Only the fixed header of a 1 MB PUBLISH: the server must not wait for the body.
        let header = [0x30, 0xc0, 0x84, 0x3d];
        if t == Transport::Quic {
            let mut s = conn.open_stream().await?;
            s.send_bytes(&header).await?;
            assert_eq!(
                s.recv_end().await?.1,
                StreamEnd::Reset(u64::from(ReasonCode::PACKET_TOO_LARGE.0))
            );
        } else {
            conn.ctl.send_bytes(&header).await?;
            let (seen, _) = conn.ctl.recv_end().await?;
            assert_eq!(
                disconnect_code(&seen),
                Some(ReasonCode::PACKET_TOO_LARGE),
                "{t:?}"
            );
        }
        still_serving(&srv, t).await?;
    }
    Ok(())
}

#[tokio::test]
async fn garbage_on_a_quic_data_stream_after_connect() -> Result<()> {
    let srv = TestServer::start().await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let conn = srv.connect(Transport::Quic, "fuzzy").await?;
    let mut good = conn.open_stream().await?;
    good.subscribe("alive", QoS::AtLeastOnce, 1).await?;
    for _ in 0..30 {
        let mut s = conn.open_stream().await?;
        let junk: Vec<u8> = (0..rng.gen_range(8..256)).map(|_| rng.gen()).collect();
        s.send_bytes(&junk).await?;
        // Random bytes may happen to decode as a packet or wait for more: finish the stream so the
        // server sees its end either way.
        let _ = s.send_bytes(&[]).await;
        drop(s);
    }
    good.publish_qos1("alive", b"yes", 2).await?;
    assert_eq!(&good.next_publish().await?.payload[..], b"yes");
    still_serving(&srv, Transport::Tcp).await
}

#[tokio::test]
async fn connect_timeout_closes_silent_connections() -> Result<()> {
    let srv = TestServer::start_with(|c| {
        c.limits.connect_timeout = std::time::Duration::from_millis(300)
    })
    .await?;
    for t in ALL_TRANSPORTS {
        let mut conn = Conn::raw(&srv, t, Protocol::V5).await?;
        if t == Transport::Quic {
            // The control stream only exists for the server once it carries a byte.
            conn.ctl.send_bytes(&[0x10]).await?;
        }
        let (seen, _) = conn.ctl.recv_end().await?;
        assert!(seen.is_empty(), "{t:?}");
        still_serving(&srv, t).await?;
    }
    Ok(())
}
