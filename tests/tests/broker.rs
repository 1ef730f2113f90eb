//! MQTT broker behaviour over QUIC, TCP and TLS, with real servers on ephemeral ports.

use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use quicft_proto::{Packet, Properties, Protocol, PubResp, Publish, QoS, ReasonCode, Will};
use quicft_tests::{
    connect_packet, publish, Conn, StreamEnd, TestServer, Transport, ALL_TRANSPORTS,
};

#[tokio::test]
async fn pubsub_qos012_with_wildcards_on_every_transport() -> Result<()> {
    let srv = TestServer::start().await?;
    for t in ALL_TRANSPORTS {
        let mut sub = srv.connect(t, &format!("sub-{t:?}")).await?;
        let mut publ = srv.connect(t, &format!("pub-{t:?}")).await?;
        let s = sub.data().await?;
        assert_eq!(
            s.subscribe("sensors/+/temp", QoS::ExactlyOnce, 1).await?,
            [ReasonCode::GRANTED_QOS_2]
        );
        assert_eq!(
            s.subscribe("alarms/#", QoS::AtLeastOnce, 2).await?,
            [ReasonCode::GRANTED_QOS_1]
        );

        let p = publ.data().await?;
        // QoS 0
        p.send(&publish("sensors/a/temp", b"q0", QoS::AtMostOnce, 0))
            .await?;
        let got = sub.data().await?.next_publish().await?;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..], got.qos),
            ("sensors/a/temp", &b"q0"[..], QoS::AtMostOnce)
        );
        // QoS 1
        let ack = publ
            .data()
            .await?
            .publish_qos1("alarms/x/y", b"q1", 10)
            .await?;
        assert_eq!(ack.code, ReasonCode::SUCCESS);
        let got = sub.data().await?.next_publish().await?;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..], got.qos),
            ("alarms/x/y", &b"q1"[..], QoS::AtLeastOnce)
        );
        // QoS 2 both ways: PUBLISH → PUBREC → PUBREL → PUBCOMP.
        let p = publ.data().await?;
        p.send(&publish("sensors/b/temp", b"q2", QoS::ExactlyOnce, 11))
            .await?;
        assert!(
            matches!(p.recv().await?, Packet::PubRec(r) if r.pkid == 11 && r.code == ReasonCode::SUCCESS)
        );
        p.send(&Packet::PubRel(PubResp::new(11, ReasonCode::SUCCESS)))
            .await?;
        assert!(matches!(p.recv().await?, Packet::PubComp(r) if r.pkid == 11));
        let s = sub.data().await?;
        let Packet::Publish(got) = s.recv().await? else {
            panic!("expected PUBLISH")
        };
        assert_eq!((got.qos, &got.payload[..]), (QoS::ExactlyOnce, &b"q2"[..]));
        s.send(&Packet::PubRec(PubResp::new(got.pkid, ReasonCode::SUCCESS)))
            .await?;
        assert!(matches!(s.recv().await?, Packet::PubRel(r) if r.pkid == got.pkid));
        s.send(&Packet::PubComp(PubResp::new(
            got.pkid,
            ReasonCode::SUCCESS,
        )))
        .await?;
        // Not matching: nothing arrives.
        publ.data()
            .await?
            .send(&publish("sensors/a/humidity", b"no", QoS::AtMostOnce, 0))
            .await?;
        assert!(
            sub.data()
                .await?
                .try_recv(Duration::from_millis(300))
                .await?
                .is_none(),
            "{t:?}"
        );
        sub.disconnect().await?;
        publ.disconnect().await?;
    }
    Ok(())
}

#[tokio::test]
async fn qos2_duplicate_is_routed_once() -> Result<()> {
    let srv = TestServer::start().await?;
    let mut sub = srv.connect(Transport::Tcp, "s").await?;
    sub.data().await?.subscribe("t", QoS::AtMostOnce, 1).await?;
    let mut publ = srv.connect(Transport::Quic, "p").await?;
    let p = publ.data().await?;
    for dup in [false, true] {
        let mut pk = publish("t", b"once", QoS::ExactlyOnce, 5);
        if let Packet::Publish(x) = &mut pk {
            x.dup = dup;
        }
        p.send(&pk).await?;
        assert!(matches!(p.recv().await?, Packet::PubRec(r) if r.pkid == 5));
    }
    p.send(&Packet::PubRel(PubResp::new(5, ReasonCode::SUCCESS)))
        .await?;
    assert!(matches!(p.recv().await?, Packet::PubComp(_)));
    assert_eq!(
        &sub.data().await?.next_publish().await?.payload[..],
        b"once"
    );
    assert!(sub
        .data()
        .await?
        .try_recv(Duration::from_millis(300))
        .await?
        .is_none());
    Ok(())
}

#[tokio::test]
async fn retained_messages_reach_late_subscribers() -> Result<()> {
    let srv = TestServer::start().await?;
    for (i, t) in ALL_TRANSPORTS.into_iter().enumerate() {
        let topic = format!("status/{i}");
        let mut publ = srv.connect(t, "retainer").await?;
        let mut pk = publish(&topic, b"online", QoS::AtLeastOnce, 1);
        if let Packet::Publish(p) = &mut pk {
            p.retain = true;
        }
        let p = publ.data().await?;
        p.send(&pk).await?;
        assert!(matches!(p.recv().await?, Packet::PubAck(_)));
        publ.disconnect().await?;

        let mut sub = srv.connect(t, "late").await?;
        sub.data()
            .await?
            .subscribe("status/#", QoS::AtLeastOnce, 1)
            .await?;
        let got = sub.data().await?.next_publish().await?;
        assert!(got.retain, "retained flag set at subscribe time");
        assert_eq!(got.topic, topic);
        // An empty retained publish clears it.
        let mut publ = srv.connect(t, "retainer").await?;
        let mut clear = publish(&topic, b"", QoS::AtMostOnce, 0);
        if let Packet::Publish(p) = &mut clear {
            p.retain = true;
        }
        publ.data().await?.send(&clear).await?;
        let got = sub.data().await?.next_publish().await?;
        assert!(got.payload.is_empty());
        sub.disconnect().await?;
        let mut again = srv.connect(t, "late2").await?;
        again
            .data()
            .await?
            .subscribe(&topic, QoS::AtLeastOnce, 1)
            .await?;
        assert!(
            again
                .data()
                .await?
                .try_recv(Duration::from_millis(300))
                .await?
                .is_none(),
            "cleared"
        );
    }
    Ok(())
}

fn with_will(id: &str, topic: &str) -> quicft_proto::Connect {
    let mut c = connect_packet(id, Protocol::V5);
    c.will = Some(Will {
        topic: topic.into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
    });
    c
}

#[tokio::test]
async fn will_published_on_abrupt_loss_not_on_disconnect() -> Result<()> {
    let srv = TestServer::start().await?;
    for t in ALL_TRANSPORTS {
        let mut watcher = srv.connect(t, "watcher").await?;
        watcher
            .data()
            .await?
            .subscribe("wills/#", QoS::AtLeastOnce, 1)
            .await?;

        let (polite, _) = Conn::open(&srv, t, with_will("polite", "wills/polite")).await?;
        polite.disconnect().await?;
        assert!(
            watcher
                .data()
                .await?
                .try_recv(Duration::from_millis(300))
                .await?
                .is_none(),
            "{t:?}: no will after DISCONNECT"
        );

        let (rude, _) = Conn::open(&srv, t, with_will("rude", "wills/rude")).await?;
        rude.kill();
        let got = watcher.data().await?.next_publish().await?;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            ("wills/rude", &b"gone"[..])
        );
        watcher.disconnect().await?;
    }
    Ok(())
}

#[tokio::test]
async fn keepalive_expiry_disconnects_and_fires_will() -> Result<()> {
    let srv = TestServer::start().await?;
    let mut watcher = srv.connect(Transport::Tcp, "watcher").await?;
    watcher
        .data()
        .await?
        .subscribe("wills/#", QoS::AtMostOnce, 1)
        .await?;
    for t in ALL_TRANSPORTS {
        let mut c = with_will("sleepy", "wills/sleepy");
        c.keep_alive = 1;
        let (mut conn, ack) = Conn::open(&srv, t, c).await?;
        assert_eq!(ack.code, ReasonCode::SUCCESS);
        // Silent for more than 1.5 × keepalive: the server gives up with 0x8D.
        let (seen, _end) = conn.ctl.recv_end().await?;
        assert!(
            seen.iter().any(
                |p| matches!(p, Packet::Disconnect(d) if d.code == ReasonCode::KEEP_ALIVE_TIMEOUT)
            ),
            "{t:?}: {seen:?}"
        );
        let got = watcher.data().await?.next_publish().await?;
        assert_eq!(got.topic, "wills/sleepy");
    }
    Ok(())
}

#[tokio::test]
async fn pingreq_keeps_connection_alive() -> Result<()> {
    let srv = TestServer::start().await?;
    for t in ALL_TRANSPORTS {
        let mut c = connect_packet("pinger", Protocol::V5);
        c.keep_alive = 1;
        let (mut conn, _) = Conn::open(&srv, t, c).await?;
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            conn.ctl.send(&Packet::PingReq).await?;
            assert_eq!(conn.ctl.recv().await?, Packet::PingResp, "{t:?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn takeover_and_session_resume() -> Result<()> {
    let srv = TestServer::start().await?;
    for t in ALL_TRANSPORTS {
        let id = format!("device-{t:?}");
        let topic = format!("cmd/{id}");
        let mut c = connect_packet(&id, Protocol::V5);
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
        let (mut first, ack) = Conn::open(&srv, t, c.clone()).await?;
        assert!(!ack.session_present);
        first
            .data()
            .await?
            .subscribe(&topic, QoS::AtLeastOnce, 1)
            .await?;

        // Same client id again: the first connection is told 0x8E, the session moves over.
        let (mut second, ack) = Conn::open(&srv, t, c.clone()).await?;
        assert!(ack.session_present, "{t:?}");
        let (seen, _) = first.ctl.recv_end().await?;
        assert!(
            seen.iter().any(
                |p| matches!(p, Packet::Disconnect(d) if d.code == ReasonCode::SESSION_TAKEN_OVER)
            ),
            "{t:?}: {seen:?}"
        );

        // The subscription survived the takeover. (QUIC: announce a data stream to receive on.)
        second.data().await?.send(&Packet::PingReq).await?;
        let mut publ = srv.connect(t, "publisher").await?;
        publ.data()
            .await?
            .publish_qos1(&topic, b"reboot", 1)
            .await?;
        let got = second.data().await?.next_publish().await?;
        assert_eq!(&got.payload[..], b"reboot");

        // Offline: messages are queued and delivered on resume.
        second.kill();
        tokio::time::sleep(Duration::from_millis(200)).await;
        publ.data()
            .await?
            .publish_qos1(&topic, b"while-away", 2)
            .await?;
        let (mut third, ack) = Conn::open(&srv, t, c.clone()).await?;
        assert!(ack.session_present);
        // A QUIC stream is invisible to the server until it carries a packet: announce it.
        third.data().await?.send(&Packet::PingReq).await?;
        let mut got = third.data().await?.next_publish().await?;
        if &got.payload[..] == b"reboot" {
            // The PUBACK for "reboot" may have died with the killed connection: QoS 1 re-sends it,
            // flagged as a duplicate.
            assert!(got.dup, "{t:?}: a re-sent in-flight message carries DUP");
            got = third.data().await?.next_publish().await?;
        }
        assert_eq!(&got.payload[..], b"while-away");
        // Clean start ends the session.
        third.disconnect().await?;
        let mut fresh = c.clone();
        fresh.clean_start = true;
        fresh.properties.session_expiry_interval = None;
        let (fourth, ack) = Conn::open(&srv, t, fresh).await?;
        assert!(!ack.session_present);
        fourth.disconnect().await?;
        publ.disconnect().await?;
    }
    Ok(())
}

#[tokio::test]
async fn quic_malformed_packet_resets_only_its_stream() -> Result<()> {
    let srv = TestServer::start().await?;
    let mut conn = srv.connect(Transport::Quic, "multi").await?;
    let mut good = conn.open_stream().await?;
    let mut bad = conn.open_stream().await?;
    good.subscribe("t", QoS::AtLeastOnce, 1).await?;
    // A PUBLISH with QoS 3: malformed.
    bad.send_bytes(&[0x36, 0x04, 0x00, 0x01, b't', 0x00])
        .await?;
    let (_, end) = bad.recv_end().await?;
    assert_eq!(end, StreamEnd::Reset(0x81));
    // The connection and the other stream carry on.
    let ack = good.publish_qos1("t", b"still here", 2).await?;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    assert_eq!(&good.next_publish().await?.payload[..], b"still here");
    conn.ctl.send(&Packet::PingReq).await?;
    assert_eq!(conn.ctl.recv().await?, Packet::PingResp);
    // A wildcard in a PUBLISH topic also costs only that stream.
    let mut bad2 = conn.open_stream().await?;
    bad2.send(&publish("a/+", b"x", QoS::AtLeastOnce, 3))
        .await?;
    let (_, end) = bad2.recv_end().await?;
    assert_eq!(end, StreamEnd::Reset(0x90));
    assert_eq!(
        good.publish_qos1("t", b"again", 4).await?.code,
        ReasonCode::SUCCESS
    );
    Ok(())
}

#[tokio::test]
async fn quic_deliveries_go_to_the_subscribing_stream() -> Result<()> {
    let srv = TestServer::start().await?;
    let mut conn = srv.connect(Transport::Quic, "streams").await?;
    let mut a = conn.open_stream().await?;
    let mut b = conn.open_stream().await?;
    a.subscribe("for/a", QoS::AtLeastOnce, 1).await?;
    b.subscribe("for/b", QoS::AtLeastOnce, 2).await?;
    let mut publ = srv.connect(Transport::Tcp, "p").await?;
    publ.data().await?.publish_qos1("for/b", b"B", 1).await?;
    publ.data().await?.publish_qos1("for/a", b"A", 2).await?;
    assert_eq!(&b.next_publish().await?.payload[..], b"B");
    assert_eq!(&a.next_publish().await?.payload[..], b"A");
    // A PUBLISH on the control stream is served there (single-stream mode, DESIGN §3); its
    // message still goes to the stream that subscribed.
    assert_eq!(
        conn.ctl.publish_qos1("for/a", b"x", 9).await?.code,
        ReasonCode::SUCCESS
    );
    assert_eq!(&a.next_publish().await?.payload[..], b"x");
    Ok(())
}

#[tokio::test]
async fn quic_data_stream_opened_before_connack_waits() -> Result<()> {
    let srv = TestServer::start().await?;
    let mut conn = Conn::raw(&srv, Transport::Quic, Protocol::V5).await?;
    let mut early = conn.open_stream().await?;
    // SUBSCRIBE sent before CONNECT: it must be processed after CONNACK, not rejected.
    early
        .send(&quicft_tests::subscribe("early/#", QoS::AtMostOnce, 1))
        .await?;
    conn.ctl
        .send(&Packet::Connect(connect_packet("early", Protocol::V5)))
        .await?;
    assert!(matches!(conn.ctl.recv().await?, Packet::ConnAck(a) if a.code == ReasonCode::SUCCESS));
    assert!(matches!(early.recv().await?, Packet::SubAck(_)));
    Ok(())
}

#[tokio::test]
async fn mqtt311_clients_work() -> Result<()> {
    let srv = TestServer::start().await?;
    for t in ALL_TRANSPORTS {
        let (mut sub, ack) = Conn::open(&srv, t, connect_packet("old-sub", Protocol::V311)).await?;
        assert_eq!(ack.code, ReasonCode::SUCCESS);
        sub.data()
            .await?
            .subscribe("legacy/#", QoS::AtLeastOnce, 1)
            .await?;
        let (mut publ, _) = Conn::open(&srv, t, connect_packet("old-pub", Protocol::V311)).await?;
        publ.data()
            .await?
            .publish_qos1("legacy/x", b"v3", 1)
            .await?;
        let got: Publish = sub.data().await?.next_publish().await?;
        assert_eq!(&got.payload[..], b"v3");
        // Empty client id without clean session is refused (return code 2 → 0x85).
        let mut c = connect_packet("", Protocol::V311);
        c.clean_start = false;
        let (_, ack) = Conn::open(&srv, t, c).await?;
        assert_eq!(ack.code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    }
    Ok(())
}

#[tokio::test]
async fn v5_properties_are_forwarded_and_client_id_assigned() -> Result<()> {
    let srv = TestServer::start().await?;
    let (mut sub, ack) =
        Conn::open(&srv, Transport::Quic, connect_packet("", Protocol::V5)).await?;
    let assigned = ack
        .properties
        .assigned_client_identifier
        .expect("assigned id");
    assert!(!assigned.is_empty());
    assert!(ack.properties.receive_maximum.is_some());
    sub.data()
        .await?
        .subscribe("rpc/req", QoS::AtLeastOnce, 1)
        .await?;
    let mut publ = srv.connect(Transport::Tls, "caller").await?;
    let mut p = publish("rpc/req", b"call", QoS::AtLeastOnce, 1);
    if let Packet::Publish(x) = &mut p {
        x.properties.response_topic = Some("rpc/resp/caller".into());
        x.properties.correlation_data = Some(Bytes::from_static(b"\x01\x02"));
        x.properties.user_properties = vec![("k".into(), "v".into())];
        x.properties.content_type = Some("text/plain".into());
    }
    let d = publ.data().await?;
    d.send(&p).await?;
    assert!(matches!(d.recv().await?, Packet::PubAck(_)));
    let got = sub.data().await?.next_publish().await?;
    assert_eq!(
        got.properties.response_topic.as_deref(),
        Some("rpc/resp/caller")
    );
    assert_eq!(
        got.properties.correlation_data.as_deref(),
        Some(&b"\x01\x02"[..])
    );
    assert_eq!(
        got.properties.user_properties,
        [("k".to_string(), "v".to_string())]
    );
    assert_eq!(got.properties.content_type.as_deref(), Some("text/plain"));
    Ok(())
}

#[tokio::test]
async fn receive_maximum_of_the_subscriber_is_honoured() -> Result<()> {
    let srv = TestServer::start().await?;
    let mut c = connect_packet("slow", Protocol::V5);
    c.properties.receive_maximum = Some(2);
    let (mut sub, _) = Conn::open(&srv, Transport::Tcp, c).await?;
    sub.data()
        .await?
        .subscribe("q", QoS::AtLeastOnce, 1)
        .await?;
    let mut publ = srv.connect(Transport::Tcp, "fast").await?;
    for i in 0..5u16 {
        publ.data()
            .await?
            .publish_qos1("q", &[i as u8], i + 1)
            .await?;
    }
    // Two in flight, then nothing until one is acknowledged.
    let s = sub.data().await?;
    let mut got = Vec::new();
    for _ in 0..2 {
        let Packet::Publish(p) = s.recv().await? else {
            panic!()
        };
        got.push(p);
    }
    assert!(
        s.try_recv(Duration::from_millis(300)).await?.is_none(),
        "window of 2 respected"
    );
    s.send(&Packet::PubAck(PubResp::new(
        got[0].pkid,
        ReasonCode::SUCCESS,
    )))
    .await?;
    let Packet::Publish(third) = s.recv().await? else {
        panic!()
    };
    assert_eq!(&third.payload[..], &[2u8]);
    Ok(())
}

#[tokio::test]
async fn slow_subscriber_queue_is_bounded() -> Result<()> {
    let srv = TestServer::start_with(|c| {
        c.limits.max_queued_messages = 10;
        c.limits.inflight_window = 5;
    })
    .await?;
    let mut c = connect_packet("sleeper", Protocol::V5);
    c.properties.receive_maximum = Some(1);
    let (mut sub, _) = Conn::open(&srv, Transport::Tcp, c).await?;
    sub.data()
        .await?
        .subscribe("flood", QoS::AtLeastOnce, 1)
        .await?;
    let mut publ = srv.connect(Transport::Quic, "flooder").await?;
    for i in 0..100u16 {
        publ.data()
            .await?
            .publish_qos1("flood", b"x", i + 1)
            .await?;
    }
    let dropped = srv
        .server
        .broker()
        .stats
        .dropped_queue_full
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(dropped >= 100 - 10 - 1, "queue bounded: {dropped} dropped");
    Ok(())
}

#[tokio::test]
async fn graceful_shutdown_tells_every_client() -> Result<()> {
    let srv = TestServer::start().await?;
    let mut conns = Vec::new();
    for t in ALL_TRANSPORTS {
        conns.push(srv.connect(t, &format!("bye-{t:?}")).await?);
    }
    let TestServer { server, dir: _dir } = srv;
    let stopping = tokio::spawn(server.shutdown());
    for c in &mut conns {
        let (seen, _) = c.ctl.recv_end().await?;
        assert!(
            seen.iter().any(
                |p| matches!(p, Packet::Disconnect(d) if d.code == ReasonCode::SERVER_SHUTTING_DOWN)
            ),
            "{:?}: {seen:?}",
            c.transport
        );
    }
    tokio::time::timeout(Duration::from_secs(10), stopping).await??;
    Ok(())
}

/// A QoS 0 PUBLISH on a data stream and, at once, DISCONNECT on the control stream: the two
/// travel on different streams, and the session must handle what the data stream had already
/// received before it closes (it lost ~15 % of them before).
#[tokio::test]
async fn quic_qos0_publish_just_before_disconnect_is_not_lost() -> Result<()> {
    const ROUNDS: u32 = 100;
    let srv = TestServer::start().await?;
    let mut watch = srv.connect(Transport::Tcp, "drain-watch").await?;
    watch
        .data()
        .await?
        .subscribe("drain/#", QoS::AtMostOnce, 1)
        .await?;
    for i in 0..ROUNDS {
        let mut c = srv.connect(Transport::Quic, &format!("drain-{i}")).await?;
        let data = c.data().await?;
        // Half the rounds on a data stream the server already reads (a PINGREQ answered on it),
        // half on one the PUBLISH opens.
        if i % 2 == 0 {
            data.send(&Packet::PingReq).await?;
            assert_eq!(data.recv().await?, Packet::PingResp);
        }
        data.send(&publish("drain/t", &i.to_be_bytes(), QoS::AtMostOnce, 0))
            .await?;
        c.disconnect().await?;
    }
    let mut got = std::collections::BTreeSet::new();
    while let Some(p) = watch.data().await?.try_recv(Duration::from_secs(2)).await? {
        if let Packet::Publish(p) = p {
            got.insert(u32::from_be_bytes(p.payload[..].try_into()?));
        }
    }
    let lost: Vec<u32> = (0..ROUNDS).filter(|i| !got.contains(i)).collect();
    assert!(lost.is_empty(), "lost {} of {ROUNDS}: {lost:?}", lost.len());
    Ok(())
}

/// A TCP or TLS client that breaks the Receive Maximum (0x93) while it is still sending must be
/// able to read the DISCONNECT that says so: the server finishes writing, shuts down its sending
/// side and reads what is still coming for a moment, instead of closing with unread input (a
/// reset, and the client's next write fails with EPIPE before it reads the reason).
#[tokio::test]
async fn tcp_client_reads_disconnect_0x93_not_a_reset() -> Result<()> {
    let srv = TestServer::start_with(|c| c.limits.inflight_window = 2).await?;
    let mut filler = bytes::BytesMut::new();
    publish("greedy", &[0u8; 1000], QoS::AtMostOnce, 0).encode(Protocol::V5, &mut filler)?;
    for t in [Transport::Tcp, Transport::Tls] {
        for round in 0..10 {
            let id = format!("greedy-{round}");
            let (mut conn, _) = Conn::open(&srv, t, connect_packet(&id, Protocol::V5)).await?;
            // Three QoS 2 messages never released against a window of 2, and the client goes on
            // sending for a while (about 100 ms, 50 KB) as a busy device would.
            for pkid in 1..=3 {
                conn.ctl
                    .send(&publish("greedy", b"x", QoS::ExactlyOnce, pkid))
                    .await?;
            }
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(2)).await;
                if let Err(e) = conn.ctl.send_bytes(&filler).await {
                    panic!(
                        "{t:?} round {round}: the server reset the connection while we wrote: {e}"
                    );
                }
            }
            let (seen, end) = conn.ctl.recv_end().await?;
            let last = seen.last();
            assert!(
                matches!(last, Some(Packet::Disconnect(d)) if d.code == ReasonCode::RECEIVE_MAXIMUM_EXCEEDED),
                "{t:?} round {round}: last packet {last:?}"
            );
            assert_eq!(
                end,
                StreamEnd::Finished,
                "{t:?} round {round}: a clean close"
            );
        }
    }
    Ok(())
}
