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
    let closing = s.close(&exit);
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
    let due = s
        .close(&exit)
        .will
        .expect("a will after a broken connection");
    assert_eq!(due.delay, Duration::ZERO);
    assert_eq!(due.message(now).topic, "wills/c");

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
        assert_eq!(s.close(&exit).will.is_some(), due, "{code}");
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

/// Every packet the session wrote this turn on `stream`, with delivered PUBLISHes reduced to
/// (topic, qos) for comparison.
fn published(packets: &[Packet]) -> Vec<(String, QoS)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.topic.clone(), p.qos)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_quic_client_may_speak_single_stream_mqtt_on_the_control_stream() {
    let e = env(Config::default());
    let mut s = session(e.clone(), true, connect("one", None)).await;
    let now = Instant::now();
    // A multi-stream client's control stream carries no deliveries: nothing to pull yet.
    assert!(!s.wants_deliveries());
    s.handle_packet(CONTROL, subscribe("t/#", QoS::ExactlyOnce, 1), now);
    let out = on(&mut s, CONTROL);
    assert!(
        matches!(&out[..], [Packet::SubAck(a)] if a.codes == [ReasonCode(2)]),
        "SUBACK on the control stream: {out:?}"
    );
    assert!(s.wants_deliveries());
    // QoS 1 and 2 from the client, answered where they came from.
    s.handle_packet(CONTROL, publish("t/1", QoS::AtLeastOnce, 2), now);
    s.handle_packet(CONTROL, publish("t/2", QoS::ExactlyOnce, 3), now);
    assert_eq!(route(&mut s, &e.broker), 2);
    assert_eq!(
        on(&mut s, CONTROL),
        vec![Packet::PubAck(resp(2)), Packet::PubRec(resp(3))]
    );
    s.handle_packet(CONTROL, Packet::PubRel(resp(3)), now);
    assert_eq!(on(&mut s, CONTROL), vec![Packet::PubComp(resp(3))]);
    // QoS 1 and 2 to the client, on the stream that subscribed.
    for _ in 0..2 {
        let d = s.state.mailbox.try_recv().expect("routed to ourselves");
        s.handle_delivery(d, now, &no_backlog);
    }
    let out = on(&mut s, CONTROL);
    assert_eq!(
        published(&out),
        vec![
            ("t/1".to_string(), QoS::AtLeastOnce),
            ("t/2".to_string(), QoS::ExactlyOnce)
        ]
    );
    let pkids: Vec<u16> = out
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.pkid),
            _ => None,
        })
        .collect();
    s.handle_packet(CONTROL, Packet::PubAck(resp(pkids[0])), now);
    s.handle_packet(CONTROL, Packet::PubRec(resp(pkids[1])), now);
    assert_eq!(on(&mut s, CONTROL), vec![Packet::PubRel(resp(pkids[1]))]);
    s.handle_packet(CONTROL, Packet::PubComp(resp(pkids[1])), now);
    assert!(s.state.outgoing.is_empty(), "both flows complete");
    s.handle_packet(CONTROL, Packet::PingReq, now);
    assert_eq!(on(&mut s, CONTROL), vec![Packet::PingResp]);
    assert!(s.actions().close.is_none());
    // A protocol violation there costs the connection, as over TCP.
    s.handle_packet(CONTROL, Packet::PingResp, now);
    assert!(matches!(
        s.actions().close,
        Some(Exit::Error(ReasonCode::PROTOCOL_ERROR))
    ));
}

#[tokio::test]
async fn single_and_multi_stream_mix_on_one_connection() {
    let e = env(Config::default());
    let mut s = session(e.clone(), true, connect("mix", None)).await;
    let now = Instant::now();
    s.handle_stream_opened(4, now);
    s.handle_packet(4, subscribe("on/data", QoS::AtLeastOnce, 1), now);
    s.handle_packet(CONTROL, subscribe("on/control", QoS::AtLeastOnce, 2), now);
    let out = written(&mut s);
    assert!(matches!(&out[&4][..], [Packet::SubAck(a)] if a.pkid == 1));
    assert!(matches!(&out[&CONTROL][..], [Packet::SubAck(a)] if a.pkid == 2));
    deliver(&mut s, &e.broker, "on/data", QoS::AtLeastOnce, now);
    deliver(&mut s, &e.broker, "on/control", QoS::AtLeastOnce, now);
    let out = written(&mut s);
    assert_eq!(
        published(&out[&4]),
        vec![("on/data".to_string(), QoS::AtLeastOnce)]
    );
    assert_eq!(
        published(&out[&CONTROL]),
        vec![("on/control".to_string(), QoS::AtLeastOnce)]
    );
    // The data stream goes: its subscription's messages fall back to the oldest stream left.
    s.handle_stream_closed(4);
    deliver(&mut s, &e.broker, "on/data", QoS::AtMostOnce, now);
    assert_eq!(
        published(&on(&mut s, CONTROL)),
        vec![("on/data".to_string(), QoS::AtMostOnce)]
    );
}

#[tokio::test]
async fn a_resumed_single_stream_session_delivers_on_the_control_stream_at_once() {
    let e = env(Config::default());
    let id: Arc<str> = "back".into();
    let mut opened = e.broker.open_session(&id, true).await;
    let filter = quicft_proto::topic::TopicFilter::parse("q/#").expect("filter");
    let sub = crate::broker::Subscription {
        filter,
        options: SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        },
        sub_id: None,
        stream: CONTROL,
    };
    opened.state.subscriptions.insert("q/#".into(), sub.clone());
    e.broker.subscribe(&id, sub);
    let n = Negotiated::new(connect("back", None), &e.config.limits);
    let mut s = Session::new(e.clone(), true, n, id, None, opened.state, Instant::now());
    // It only pings: the control stream it subscribed on carries its messages anyway.
    assert!(s.wants_deliveries());
    deliver(&mut s, &e.broker, "q/1", QoS::AtLeastOnce, Instant::now());
    assert_eq!(
        published(&on(&mut s, CONTROL)),
        vec![("q/1".to_string(), QoS::AtLeastOnce)]
    );
}

#[tokio::test]
async fn a_delayed_will_leaves_its_delay_out_of_the_publish_and_ends_with_the_session() {
    let now = Instant::now();
    let e = env(Config::default());
    let mut w = will();
    w.properties.will_delay_interval = Some(30);
    w.properties.message_expiry_interval = Some(60);
    w.properties.content_type = Some("text/plain".into());
    for (expiry, delay) in [(None, 0), (Some(3600), 30), (Some(5), 5)] {
        let mut c = connect("w", Some(w.clone()));
        c.properties.session_expiry_interval = expiry;
        let mut s = session(e.clone(), false, c).await;
        s.handle_stream_closed(CONTROL);
        let exit = s.actions().close.take().expect("closed");
        let due = s.close(&exit).will.expect("a will");
        assert_eq!(due.delay, Duration::from_secs(delay), "expiry {expiry:?}");
        // Published later: the expiry interval counts from then, and the PUBLISH encodes.
        let later = now + Duration::from_secs(delay);
        let msg = due.message(later);
        assert_eq!(msg.properties.will_delay_interval, None);
        assert_eq!(msg.properties.content_type.as_deref(), Some("text/plain"));
        let d = crate::broker::Delivery {
            msg: Arc::new(msg),
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: Vec::new(),
            stream: CONTROL,
            shared: None,
            seq: 0,
        };
        let p = d.msg.to_publish(&d, 1, later);
        assert_eq!(p.properties.message_expiry_interval, Some(60));
        let mut buf = BytesMut::new();
        Packet::Publish(p)
            .encode(Protocol::V5, &mut buf)
            .expect("the will PUBLISH encodes");
    }
}

#[test]
fn a_reconnect_cancels_a_delayed_will_and_only_the_latest_will_fires() {
    let wills = super::PendingWills::default();
    let a: Arc<str> = "a".into();
    let first = wills.schedule(&a);
    assert!(wills.cancel("a"), "the client came back within the delay");
    assert!(!wills.fire("a", first), "a cancelled will is not published");
    // It went again: a new will; the old timer (had it not been cancelled) is stale.
    let second = wills.schedule(&a);
    let third = wills.schedule(&a);
    assert!(!wills.fire("a", second));
    assert!(wills.fire("a", third));
    assert!(!wills.fire("a", third), "published once");
    assert!(!wills.cancel("a"));
    assert_eq!(wills.len(), 0, "nothing left behind");
}
