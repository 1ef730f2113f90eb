//! The session state machine without sockets: packets in, packets and actions out, time passed in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quicft_proto::ft::FtReason;
use quicft_proto::{
    Connect, Disconnect, Packet, Properties, Protocol, PubResp, Publish, QoS, ReasonCode,
    SubscribeFilter, SubscriptionOptions, Will,
};
use tokio::sync::Semaphore;

use super::connect::Negotiated;
use super::state::{Env, Exit, Session, CONTROL};
use crate::acl::Acl;
use crate::broker::{Broker, Message, StreamId};
use crate::config::Config;

fn env(config: Config) -> Env {
    Env {
        config: Arc::new(config),
        broker: Arc::new(Broker::new(100)),
        acl: Arc::new(Acl::new(&[])),
        metrics: Arc::default(),
        ft_memory: Arc::new(Semaphore::new(1 << 20)),
    }
}

fn connect(client_id: &str, will: Option<Will>) -> Connect {
    Connect {
        protocol: Protocol::V5,
        clean_start: true,
        keep_alive: 30,
        client_id: client_id.into(),
        will,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

/// A connected session (CONNACK already taken) over QUIC or TCP.
async fn session(env: Env, quic: bool, c: Connect) -> Session {
    let id: Arc<str> = c.client_id.as_str().into();
    let opened = env.broker.open_session(&id, true).await;
    let n = Negotiated::new(c, &env.config.limits);
    let mut s = Session::new(env, quic, n, id, None, opened.state, Instant::now());
    s.connack(false, false);
    written(&mut s);
    s
}

/// What the session wrote this turn, decoded, by stream.
fn written(s: &mut Session) -> HashMap<StreamId, Vec<Packet>> {
    let mut out: HashMap<StreamId, Vec<Packet>> = HashMap::new();
    s.poll_transmit(|stream, bytes, _| {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(p)) = Packet::decode(&mut buf, Protocol::V5, usize::MAX) {
            out.entry(stream).or_default().push(p);
        }
    });
    out
}

fn on(s: &mut Session, stream: StreamId) -> Vec<Packet> {
    written(s).remove(&stream).unwrap_or_default()
}

fn publish(topic: &str, qos: QoS, pkid: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid,
        properties: Properties::default(),
        payload: Bytes::from_static(b"x"),
    })
}

fn subscribe(filter: &str, qos: QoS, pkid: u16) -> Packet {
    Packet::Subscribe(quicft_proto::Subscribe {
        pkid,
        filters: vec![SubscribeFilter {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
        }],
        properties: Properties::default(),
    })
}

fn resp(p: u16) -> PubResp {
    PubResp::new(p, ReasonCode::SUCCESS)
}

fn no_backlog(_: StreamId) -> usize {
    0
}

/// Publishes `topic` through the broker and hands the session what its queue received.
fn deliver(s: &mut Session, broker: &Broker, topic: &str, qos: QoS, now: Instant) {
    broker.publish(Message::server(topic.into(), Bytes::from_static(b"m"), qos));
    let d = s
        .state
        .mailbox
        .try_recv()
        .expect("routed to the subscriber");
    s.handle_delivery(d, now, &no_backlog);
}

/// Routes what the session asked to route, as the driver does.
fn route(s: &mut Session, broker: &Broker) -> usize {
    let msgs: Vec<Message> = s.actions().route.drain(..).collect();
    let n = msgs.len();
    for m in msgs {
        broker.publish(m);
    }
    n
}

#[tokio::test]
async fn qos2_from_the_client_is_routed_once_and_released() {
    let e = env(Config::default());
    let mut s = session(e.clone(), false, connect("c", None)).await;
    let now = Instant::now();
    s.handle_packet(CONTROL, publish("t", QoS::ExactlyOnce, 7), now);
    assert_eq!(route(&mut s, &e.broker), 1);
    assert_eq!(on(&mut s, CONTROL), vec![Packet::PubRec(resp(7))]);
    // A retransmission before PUBREL is acknowledged again but not routed again.
    s.handle_packet(CONTROL, publish("t", QoS::ExactlyOnce, 7), now);
    assert_eq!(route(&mut s, &e.broker), 0);
    assert_eq!(on(&mut s, CONTROL), vec![Packet::PubRec(resp(7))]);
    s.handle_packet(CONTROL, Packet::PubRel(resp(7)), now);
    assert_eq!(on(&mut s, CONTROL), vec![Packet::PubComp(resp(7))]);
    s.handle_packet(CONTROL, Packet::PubRel(resp(7)), now);
    assert_eq!(
        on(&mut s, CONTROL),
        vec![Packet::PubComp(PubResp::new(
            7,
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        ))]
    );
    assert!(s.actions().close.is_none());
}

#[tokio::test]
async fn qos2_to_the_client_completes_with_pubrec_pubrel_pubcomp() {
    let e = env(Config::default());
    let mut s = session(e.clone(), false, connect("c", None)).await;
    let now = Instant::now();
    s.handle_packet(CONTROL, subscribe("t", QoS::ExactlyOnce, 1), now);
    assert!(matches!(&on(&mut s, CONTROL)[..], [Packet::SubAck(_)]));
    deliver(&mut s, &e.broker, "t", QoS::ExactlyOnce, now);
    let pkid = match &on(&mut s, CONTROL)[..] {
        [Packet::Publish(p)] if p.qos == QoS::ExactlyOnce => p.pkid,
        other => panic!("{other:?}"),
    };
    s.handle_packet(CONTROL, Packet::PubRec(resp(pkid)), now);
    assert_eq!(on(&mut s, CONTROL), vec![Packet::PubRel(resp(pkid))]);
    assert_eq!(s.state.outgoing.len(), 1, "in flight until PUBCOMP");
    s.handle_packet(CONTROL, Packet::PubComp(resp(pkid)), now);
    assert!(s.state.outgoing.is_empty());
}

#[tokio::test]
async fn a_subscription_is_delivered_on_the_stream_that_made_it() {
    let e = env(Config::default());
    let mut s = session(e.clone(), true, connect("c", None)).await;
    let now = Instant::now();
    s.handle_stream_opened(4, now);
    s.handle_stream_opened(8, now);
    s.handle_packet(8, subscribe("t/+", QoS::AtLeastOnce, 1), now);
    assert!(matches!(&on(&mut s, 8)[..], [Packet::SubAck(_)]));
    deliver(&mut s, &e.broker, "t/1", QoS::AtLeastOnce, now);
    let out = written(&mut s);
    assert!(matches!(&out[&8][..], [Packet::Publish(p)] if p.topic == "t/1"));
    assert!(!out.contains_key(&4) && !out.contains_key(&CONTROL));
    // Once that stream is gone, the oldest data stream takes its deliveries.
    s.handle_stream_closed(8);
    deliver(&mut s, &e.broker, "t/2", QoS::AtLeastOnce, now);
    assert!(matches!(&on(&mut s, 4)[..], [Packet::Publish(p)] if p.topic == "t/2"));
}

#[tokio::test]
async fn publishing_past_the_receive_maximum_is_disconnect_0x93() {
    let mut config = Config::default();
    config.limits.inflight_window = 2;
    let e = env(config);
    let mut s = session(e.clone(), false, connect("c", None)).await;
    let now = Instant::now();
    s.handle_packet(CONTROL, publish("t", QoS::ExactlyOnce, 1), now);
    s.handle_packet(CONTROL, publish("t", QoS::ExactlyOnce, 2), now);
    assert!(s.actions().close.is_none());
    s.handle_packet(CONTROL, publish("t", QoS::ExactlyOnce, 3), now);
    let exit = s.actions().close.take().expect("closed");
    assert!(matches!(
        exit,
        Exit::Error(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
    ));
    let closing = s.close(&exit, now);
    assert_eq!(closing.code, Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED));
    let last = on(&mut s, CONTROL);
    assert!(
        matches!(last.last(), Some(Packet::Disconnect(d)) if d.code == ReasonCode::RECEIVE_MAXIMUM_EXCEEDED),
        "{last:?}"
    );
    // On a QUIC data stream the violation costs the stream, not the session.
    let e = env({
        let mut c = Config::default();
        c.limits.inflight_window = 1;
        c
    });
    let mut s = session(e, true, connect("q", None)).await;
    s.handle_stream_opened(4, now);
    s.handle_packet(4, publish("t", QoS::ExactlyOnce, 1), now);
    s.handle_packet(4, publish("t", QoS::ExactlyOnce, 2), now);
    assert!(s.actions().close.is_none());
    assert_eq!(
        s.actions().dropped,
        vec![(4, Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED))]
    );
}

fn will() -> Will {
    Will {
        topic: "wills/c".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
    }
}

#[tokio::test]
async fn the_will_is_published_after_an_abnormal_end_only() {
    let now = Instant::now();
    let e = env(Config::default());
    let mut s = session(e.clone(), false, connect("a", Some(will()))).await;
    s.handle_stream_closed(CONTROL);
    let exit = s.actions().close.take().expect("closed");
    let (msg, delay) = s
        .close(&exit, now)
        .will
        .expect("a will after a broken connection");
    assert_eq!((msg.topic.as_str(), delay), ("wills/c", Duration::ZERO));

    for (code, due) in [
        (ReasonCode::SUCCESS, false),
        (ReasonCode::DISCONNECT_WITH_WILL, true),
    ] {
        let mut s = session(e.clone(), false, connect("b", Some(will()))).await;
        let d = Disconnect {
            code,
            properties: Properties::default(),
        };
        s.handle_packet(CONTROL, Packet::Disconnect(d), now);
        let exit = s.actions().close.take().expect("closed");
        assert_eq!(s.close(&exit, now).will.is_some(), due, "{code}");
    }
}

#[tokio::test]
async fn keepalive_expires_after_one_and_a_half_intervals_of_silence() {
    let e = env(Config::default());
    let start = Instant::now();
    let mut s = session(e, false, connect("k", None)).await;
    s.handle_read(start);
    s.handle_tick(start + Duration::from_secs(45));
    assert!(s.actions().close.is_none());
    s.handle_tick(start + Duration::from_secs(46));
    assert!(matches!(
        s.actions().close,
        Some(Exit::Error(ReasonCode::KEEP_ALIVE_TIMEOUT))
    ));
}

#[tokio::test]
async fn file_commands_run_in_order_and_their_acks_leave_in_publish_order() {
    let e = env(Config::default());
    let mut s = session(e.clone(), true, connect("f", None)).await;
    let now = Instant::now();
    s.handle_stream_opened(4, now);
    for (pkid, topic) in [
        (1, "$file/f1/init"),
        (2, "$file/f1/0"),
        (3, "$file/f1/1"),
        (4, "$file/f1/fin/2"),
    ] {
        s.handle_packet(4, publish(topic, QoS::AtLeastOnce, pkid), now);
    }
    s.handle_packet(4, publish("t", QoS::AtLeastOnce, 5), now);
    let mut cmds: Vec<_> = s.actions().commands.drain(..).collect();
    assert_eq!(cmds.len(), 4);
    assert!(
        written(&mut s).is_empty(),
        "sync acks wait for their commands"
    );
    // init runs alone; the segments wait for it, fin for the segments.
    let ready: Vec<bool> = cmds.iter_mut().map(|c| c.ready_now()).collect();
    assert_eq!(ready, [true, false, false, false]);
    let mut cmds = cmds.into_iter();
    let (init, mut seg0, mut seg1, mut fin) =
        match (cmds.next(), cmds.next(), cmds.next(), cmds.next()) {
            (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
            _ => unreachable!(),
        };
    s.handle_ft_done(init.finish(FtReason::Success));
    assert!(seg0.ready_now() && seg1.ready_now() && !fin.ready_now());
    let acks =
        |ids: &[u16]| -> Vec<Packet> { ids.iter().map(|i| Packet::PubAck(resp(*i))).collect() };
    assert_eq!(on(&mut s, 4), acks(&[1]));
    // The second segment finishes first: its ack waits behind the first one's.
    s.handle_ft_done(seg1.finish(FtReason::Success));
    assert!(on(&mut s, 4).is_empty());
    assert!(!fin.ready_now());
    s.handle_ft_done(seg0.finish(FtReason::Success));
    assert_eq!(on(&mut s, 4), acks(&[2, 3]));
    assert!(fin.ready_now());
    s.handle_ft_done(fin.finish(FtReason::Success));
    // The plain PUBLISH read after fin was acked behind it, not before.
    assert_eq!(on(&mut s, 4), acks(&[4, 5]));
    // Each command answered on the client's response topic (plus the plain publish, routed).
    let topics: Vec<String> = s.actions().route.iter().map(|m| m.topic.clone()).collect();
    assert_eq!(
        topics.iter().filter(|t| *t == "$file-response/f").count(),
        4
    );
}
