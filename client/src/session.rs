//! The client's MQTT session state, shared by every channel of a connection.
//!
//! Readers (one task per QUIC stream, one for a TCP connection) hand each received packet to
//! [`Shared::on_packet`], which updates the state under a short lock and returns a [`Reaction`]: what
//! to deliver to subscriptions and what to answer, done by the reader outside the lock. The state
//! itself does no I/O, so its rules are tested without sockets.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use quicft_proto::topic::TopicFilter;
use quicft_proto::{
    ConnAck, Packet, Properties, Protocol, PubResp, Publish, QoS, ReasonCode, SubAck, UnsubAck,
};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::channel::{ChannelId, ChannelTx};
use crate::error::{CloseReason, Error, Result};
use crate::pkid::PacketIds;

/// The largest packet MQTT can express; the server's limit when it announces none.
const MQTT_MAX_PACKET: usize = 268_435_455 + 5;

/// Largest Subscription Identifier (a variable byte integer).
const MAX_SUB_ID: u32 = 268_435_455;

/// How a QoS 1/2 publish ended: the reason code of the PUBACK (QoS 1) or of the PUBREC/PUBCOMP
/// (QoS 2). For QoS 0 it is always 0x00 once the packet is queued for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOutcome {
    pub code: ReasonCode,
    /// The Reason String the server gave, if any.
    pub reason: Option<String>,
    /// Properties of the acknowledgement (user properties …).
    pub properties: Properties,
}

impl PublishOutcome {
    fn from_resp(r: PubResp) -> Self {
        let mut properties = r.properties;
        let reason = properties.reason_string.take();
        PublishOutcome {
            code: r.code,
            reason,
            properties,
        }
    }

    pub(crate) fn sent() -> Self {
        PublishOutcome {
            code: ReasonCode::SUCCESS,
            reason: None,
            properties: Properties::default(),
        }
    }

    /// True for codes below 0x80.
    pub fn is_success(&self) -> bool {
        !self.code.is_error()
    }
}

/// What the server said in its CONNACK that limits what we may send.
#[derive(Debug, Clone)]
pub(crate) struct ServerLimits {
    pub(crate) receive_maximum: u16,
    pub(crate) max_packet_size: usize,
    pub(crate) max_qos: QoS,
    pub(crate) retain_available: bool,
    pub(crate) sub_ids_available: bool,
}

impl ServerLimits {
    pub(crate) fn from_connack(connack: &ConnAck, protocol: Protocol) -> Self {
        let p = &connack.properties;
        ServerLimits {
            receive_maximum: p.receive_maximum.unwrap_or(u16::MAX).max(1),
            max_packet_size: p.maximum_packet_size.map_or(MQTT_MAX_PACKET, |m| {
                usize::try_from(m).unwrap_or(MQTT_MAX_PACKET)
            }),
            max_qos: p
                .maximum_qos
                .and_then(QoS::from_u8)
                .unwrap_or(QoS::ExactlyOnce),
            retain_available: p.retain_available != Some(0),
            sub_ids_available: protocol == Protocol::V5
                && p.subscription_identifier_available != Some(0),
        }
    }
}

/// State and handles shared by the client handle and every task of one connection.
pub(crate) struct Shared {
    pub(crate) protocol: Protocol,
    pub(crate) limits: ServerLimits,
    /// QoS 1/2 publishes in flight: the smaller of the server's Receive Maximum and our own cap.
    pub(crate) inflight: Arc<Semaphore>,
    /// A file-channel publish also takes one of these: files may fill at most three quarters of
    /// `inflight`, so that uploads filling their windows never make a telemetry publish wait for
    /// a slot.
    pub(crate) file_inflight: Arc<Semaphore>,
    /// Cancelled when the connection ends; every task of the connection stops on it.
    pub(crate) cancel: CancellationToken,
    state: Mutex<Session>,
}

/// One outgoing flow awaiting its acknowledgement.
struct Pending {
    channel: ChannelId,
    kind: PendingKind,
    /// Released with the entry: the flow no longer counts against Receive Maximum.
    _permits: Vec<OwnedSemaphorePermit>,
    /// Keeps the channel (its QUIC stream) open until the flow ends, so a PUBREL can still go out
    /// after the publishing future was dropped.
    _channel: ChannelTx,
}

pub(crate) enum PendingKind {
    Publish {
        qos: QoS,
        done: oneshot::Sender<PublishOutcome>,
        /// The PUBREC of a QoS 2 flow, once received (its code is the outcome unless PUBCOMP fails).
        rec: Option<Box<PubResp>>,
    },
    Subscribe {
        done: oneshot::Sender<SubAck>,
    },
    Unsubscribe {
        done: oneshot::Sender<UnsubAck>,
    },
}

/// Where deliveries for one subscription go.
struct Route {
    key: u64,
    channel: ChannelId,
    /// Set under MQTT 5 when the server supports them: deliveries carry it back and are routed by it.
    sub_id: Option<u32>,
    /// Used to route when deliveries carry no identifier (3.1.1).
    filter: TopicFilter,
    tx: mpsc::Sender<Publish>,
}

struct Session {
    pkids: PacketIds,
    pending: HashMap<u16, Pending>,
    /// QoS 2 deliveries received (PUBREC sent) and not yet released: a re-sent PUBLISH with one of
    /// these ids is a duplicate and is not delivered again.
    incoming_qos2: HashSet<u16>,
    routes: Vec<Route>,
    /// A PINGREQ went out and its PINGRESP has not come back.
    ping_outstanding: bool,
    closed: Option<CloseReason>,
}

/// What a reader does after [`Shared::on_packet`], outside the lock: deliver first, then answer, so
/// that a PUBACK tells the server the message reached the application's queue.
#[derive(Default)]
pub(crate) struct Reaction {
    pub(crate) deliver: Option<(Vec<mpsc::Sender<Publish>>, Publish)>,
    /// Goes back on the channel the packet came on.
    pub(crate) reply: Option<Packet>,
    /// The connection must end.
    pub(crate) close: Option<CloseReason>,
}

/// What identifies a subscription's route: the client's key, its Subscription Identifier, its filter.
pub(crate) struct RouteSpec {
    pub(crate) key: u64,
    pub(crate) sub_id: u32,
    pub(crate) filter: TopicFilter,
}

/// Largest Subscription Identifier; the client wraps its counter there.
pub(crate) const MAX_SUBSCRIPTION_ID: u32 = MAX_SUB_ID;

/// A registered subscription, before its SUBACK.
pub(crate) struct NewRoute {
    pub(crate) pkid: u16,
    pub(crate) sub_id: Option<u32>,
}

impl Shared {
    pub(crate) fn new(
        protocol: Protocol,
        limits: ServerLimits,
        max_inflight: u16,
        cancel: CancellationToken,
    ) -> Self {
        let permits = usize::from(limits.receive_maximum.min(max_inflight).max(1));
        let file = match permits {
            1 => 1,
            n => n - (n / 4).max(1),
        };
        Shared {
            protocol,
            limits,
            inflight: Arc::new(Semaphore::new(permits)),
            file_inflight: Arc::new(Semaphore::new(file)),
            cancel,
            state: Mutex::new(Session {
                pkids: PacketIds::new(),
                pending: HashMap::new(),
                incoming_qos2: HashSet::new(),
                routes: Vec::new(),
                ping_outstanding: false,
                closed: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Session> {
        // A panic while holding the lock would be a bug in this module; the state is still
        // consistent enough to fail every flow, so recover rather than poison every caller.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Encodes `packet`, refusing it when it exceeds the server's Maximum Packet Size.
    pub(crate) fn encode(&self, packet: &Packet) -> Result<Bytes> {
        encode(packet, self.protocol, self.limits.max_packet_size)
    }

    /// The error for an operation cut short: the connection's close reason, or a channel failure.
    pub(crate) fn closed_error(&self) -> Error {
        match &self.lock().closed {
            Some(reason) => Error::ConnectionClosed(reason.clone()),
            None => Error::ChannelClosed,
        }
    }

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.lock().closed.clone()
    }

    /// Ends the connection: every waiting flow and subscription fails with `reason` (the first
    /// reason given wins) and every task stops.
    pub(crate) fn close(&self, reason: CloseReason) {
        {
            let mut s = self.lock();
            if s.closed.is_none() {
                tracing::debug!(%reason, "connection closing");
                s.closed = Some(reason);
            }
            s.pending.clear();
            s.routes.clear();
            s.incoming_qos2.clear();
        }
        self.inflight.close();
        self.file_inflight.close();
        self.cancel.cancel();
    }

    /// A channel's stream ended while the connection lives on: its flows and subscriptions fail.
    pub(crate) fn fail_channel(&self, channel: ChannelId) {
        let mut s = self.lock();
        let failed: Vec<u16> = s
            .pending
            .iter()
            .filter(|(_, p)| p.channel == channel)
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            s.pending.remove(&id);
            s.pkids.free(id);
        }
        s.routes.retain(|r| r.channel != channel);
    }

    /// Allocates a packet id for a flow on `channel` and records how it is to be completed.
    pub(crate) fn register(
        &self,
        channel: &ChannelTx,
        kind: PendingKind,
        permits: Vec<OwnedSemaphorePermit>,
    ) -> Result<u16> {
        let mut s = self.lock();
        if let Some(reason) = &s.closed {
            return Err(Error::ConnectionClosed(reason.clone()));
        }
        let pkid = s.pkids.alloc().ok_or(Error::PacketIdsExhausted)?;
        s.pending.insert(
            pkid,
            Pending {
                channel: channel.id,
                kind,
                _permits: permits,
                _channel: channel.clone(),
            },
        );
        Ok(pkid)
    }

    /// Drops a flow that never reached the wire (encode failed, caller gave up while queueing).
    pub(crate) fn unregister(&self, pkid: u16) {
        let mut s = self.lock();
        if s.pending.remove(&pkid).is_some() {
            s.pkids.free(pkid);
        }
    }

    /// Registers a subscription's route and its SUBSCRIBE flow in one step, so that messages the
    /// server sends right after (or even before) its SUBACK are already routed.
    ///
    /// `key` names the route (the client keeps it across reconnects) and `sub_id` is the
    /// Subscription Identifier to use when the server supports them; a route with the same key is
    /// replaced.
    pub(crate) fn register_subscription(
        &self,
        channel: &ChannelTx,
        sub: RouteSpec,
        tx: mpsc::Sender<Publish>,
        done: oneshot::Sender<SubAck>,
    ) -> Result<NewRoute> {
        let mut s = self.lock();
        if let Some(reason) = &s.closed {
            return Err(Error::ConnectionClosed(reason.clone()));
        }
        let pkid = s.pkids.alloc().ok_or(Error::PacketIdsExhausted)?;
        let RouteSpec {
            key,
            sub_id,
            filter,
        } = sub;
        let sub_id = self.limits.sub_ids_available.then_some(sub_id);
        s.routes.retain(|r| r.key != key);
        s.routes.push(Route {
            key,
            channel: channel.id,
            sub_id,
            filter,
            tx,
        });
        s.pending.insert(
            pkid,
            Pending {
                channel: channel.id,
                kind: PendingKind::Subscribe { done },
                _permits: Vec::new(),
                _channel: channel.clone(),
            },
        );
        Ok(NewRoute { pkid, sub_id })
    }

    /// Routes deliveries of a subscription the server may still hold from an earlier connection
    /// (resumed session) without sending SUBSCRIBE: they are then delivered, not acked and dropped.
    pub(crate) fn restore_route(
        &self,
        channel: ChannelId,
        sub: RouteSpec,
        tx: mpsc::Sender<Publish>,
    ) {
        let mut s = self.lock();
        let sub_id = self.limits.sub_ids_available.then_some(sub.sub_id);
        s.routes.retain(|r| r.key != sub.key);
        s.routes.push(Route {
            key: sub.key,
            channel,
            sub_id,
            filter: sub.filter,
            tx,
        });
    }

    pub(crate) fn remove_route(&self, key: u64) {
        self.lock().routes.retain(|r| r.key != key);
    }

    /// Marks a PINGREQ as sent; false when the previous one is still unanswered (the server or the
    /// path is gone).
    pub(crate) fn ping_sent(&self) -> bool {
        let mut s = self.lock();
        if s.ping_outstanding {
            return false;
        }
        s.ping_outstanding = true;
        true
    }

    /// Applies one packet from the server.
    pub(crate) fn on_packet(&self, packet: Packet) -> Reaction {
        let mut s = self.lock();
        let mut r = Reaction::default();
        match packet {
            Packet::PubAck(ack) => match s.pending.remove(&ack.pkid) {
                Some(Pending {
                    kind:
                        PendingKind::Publish {
                            qos: QoS::AtLeastOnce,
                            done,
                            ..
                        },
                    ..
                }) => {
                    s.pkids.free(ack.pkid);
                    let _ = done.send(PublishOutcome::from_resp(ack));
                }
                other => {
                    s.put_back(ack.pkid, other);
                    tracing::debug!(pkid = ack.pkid, "PUBACK for no QoS 1 flow; ignored");
                }
            },
            Packet::PubRec(rec) => {
                let pkid = rec.pkid;
                let qos2_flow = matches!(
                    s.pending.get(&pkid),
                    Some(Pending {
                        kind: PendingKind::Publish {
                            qos: QoS::ExactlyOnce,
                            ..
                        },
                        ..
                    })
                );
                if !qos2_flow {
                    // Unknown id: answer so the server can end its side (MQTT 5.0 §4.3.3).
                    r.reply = Some(Packet::PubRel(PubResp::new(
                        pkid,
                        ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                    )));
                } else if rec.code.is_error() {
                    // The flow ends at a failed PUBREC (MQTT 5.0 §4.3.3).
                    if let Some(Pending {
                        kind: PendingKind::Publish { done, .. },
                        ..
                    }) = s.pending.remove(&pkid)
                    {
                        let _ = done.send(PublishOutcome::from_resp(rec));
                    }
                    s.pkids.free(pkid);
                } else {
                    if let Some(Pending {
                        kind: PendingKind::Publish { rec: slot, .. },
                        ..
                    }) = s.pending.get_mut(&pkid)
                    {
                        *slot = Some(Box::new(rec));
                    }
                    r.reply = Some(Packet::PubRel(PubResp::new(pkid, ReasonCode::SUCCESS)));
                }
            }
            Packet::PubComp(comp) => match s.pending.remove(&comp.pkid) {
                Some(Pending {
                    kind:
                        PendingKind::Publish {
                            qos: QoS::ExactlyOnce,
                            done,
                            rec,
                        },
                    ..
                }) => {
                    s.pkids.free(comp.pkid);
                    let outcome = match rec {
                        Some(rec) if !comp.code.is_error() => PublishOutcome::from_resp(*rec),
                        _ => PublishOutcome::from_resp(comp),
                    };
                    let _ = done.send(outcome);
                }
                other => {
                    s.put_back(comp.pkid, other);
                    tracing::debug!(pkid = comp.pkid, "PUBCOMP for no QoS 2 flow; ignored");
                }
            },
            Packet::SubAck(ack) => match s.pending.remove(&ack.pkid) {
                Some(Pending {
                    kind: PendingKind::Subscribe { done },
                    ..
                }) => {
                    s.pkids.free(ack.pkid);
                    let _ = done.send(ack);
                }
                other => s.put_back(ack.pkid, other),
            },
            Packet::UnsubAck(ack) => match s.pending.remove(&ack.pkid) {
                Some(Pending {
                    kind: PendingKind::Unsubscribe { done },
                    ..
                }) => {
                    s.pkids.free(ack.pkid);
                    let _ = done.send(ack);
                }
                other => s.put_back(ack.pkid, other),
            },
            Packet::Publish(publish) => {
                let pkid = publish.pkid;
                let first = match publish.qos {
                    QoS::AtMostOnce => true,
                    QoS::AtLeastOnce => {
                        r.reply = Some(Packet::PubAck(PubResp::new(pkid, ReasonCode::SUCCESS)));
                        true
                    }
                    QoS::ExactlyOnce => {
                        r.reply = Some(Packet::PubRec(PubResp::new(pkid, ReasonCode::SUCCESS)));
                        s.incoming_qos2.insert(pkid)
                    }
                };
                if first {
                    let targets = s.routes_for(&publish);
                    if targets.is_empty() {
                        tracing::debug!(topic = %publish.topic, "message for no subscription; dropped");
                    } else {
                        r.deliver = Some((targets, publish));
                    }
                }
            }
            Packet::PubRel(rel) => {
                let code = if s.incoming_qos2.remove(&rel.pkid) {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
                };
                r.reply = Some(Packet::PubComp(PubResp::new(rel.pkid, code)));
            }
            Packet::PingResp => s.ping_outstanding = false,
            Packet::Disconnect(d) => {
                r.close = Some(CloseReason::ServerDisconnect {
                    code: d.code,
                    reason: d.properties.reason_string,
                });
            }
            other @ (Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq
            | Packet::Auth(_)) => {
                r.close = Some(CloseReason::Protocol(format!(
                    "unexpected {}",
                    other.name()
                )));
            }
        }
        r
    }
}

impl Session {
    /// Puts back an entry taken out by a packet that did not match its kind.
    fn put_back(&mut self, pkid: u16, entry: Option<Pending>) {
        if let Some(p) = entry {
            tracing::debug!(pkid, "acknowledgement of the wrong kind; ignored");
            self.pending.insert(pkid, p);
        }
    }

    /// The subscriptions a delivery goes to: by Subscription Identifier when it carries any, else by
    /// matching filters. Routes whose subscription was dropped are removed here.
    fn routes_for(&mut self, publish: &Publish) -> Vec<mpsc::Sender<Publish>> {
        self.routes.retain(|r| !r.tx.is_closed());
        let ids = &publish.properties.subscription_identifiers;
        let by_id: Vec<_> = self
            .routes
            .iter()
            .filter(|r| r.sub_id.is_some_and(|id| ids.contains(&id)))
            .map(|r| r.tx.clone())
            .collect();
        if !by_id.is_empty() {
            return by_id;
        }
        // No identifier we know: a server that does not echo them, or a subscription of a resumed
        // session made under identifiers of an earlier connection. Filters decide.
        self.routes
            .iter()
            .filter(|r| r.filter.matches(&publish.topic))
            .map(|r| r.tx.clone())
            .collect()
    }
}

/// Encodes `packet`, refusing it above `max` bytes.
pub(crate) fn encode(packet: &Packet, protocol: Protocol, max: usize) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    packet.encode(protocol, &mut buf)?;
    if buf.len() > max {
        return Err(Error::PacketTooLarge {
            size: buf.len(),
            max,
        });
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quicft_proto::{Publish, SubAck};

    fn shared(sub_ids: bool) -> Shared {
        let limits = ServerLimits {
            receive_maximum: 10,
            max_packet_size: MQTT_MAX_PACKET,
            max_qos: QoS::ExactlyOnce,
            retain_available: true,
            sub_ids_available: sub_ids,
        };
        Shared::new(Protocol::V5, limits, u16::MAX, CancellationToken::new())
    }

    fn channel(id: ChannelId) -> ChannelTx {
        let (data, _) = mpsc::channel(1);
        let (acks, _) = mpsc::channel(1);
        ChannelTx {
            id,
            kind: crate::ChannelKind::Telemetry,
            data,
            acks,
        }
    }

    fn spec(key: u64, filter: TopicFilter) -> RouteSpec {
        RouteSpec {
            key,
            sub_id: u32::try_from(key).expect("small key"),
            filter,
        }
    }

    #[test]
    fn restored_route_gets_deliveries_of_an_earlier_connection() {
        let sh = shared(true);
        let (tx, mut rx) = mpsc::channel(4);
        let filter = TopicFilter::parse("cmd/#").expect("filter");
        sh.restore_route(1, spec(7, filter), tx);
        // Delivered under an identifier the earlier connection used: routed by filter, not dropped.
        let r = sh.on_packet(publish("cmd/x", QoS::AtLeastOnce, 3, vec![99]));
        let (targets, p) = r.deliver.expect("delivered");
        for t in targets {
            t.try_send(p.clone()).expect("room");
        }
        assert!(rx.try_recv().is_ok());
    }

    fn publish(topic: &str, qos: QoS, pkid: u16, sub_ids: Vec<u32>) -> Packet {
        let properties = Properties {
            subscription_identifiers: sub_ids,
            ..Properties::default()
        };
        Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            pkid,
            properties,
            payload: Bytes::from_static(b"x"),
        })
    }

    #[test]
    fn puback_completes_qos1_and_frees_the_id() {
        let sh = shared(true);
        let (done, mut rx) = oneshot::channel();
        let kind = PendingKind::Publish {
            qos: QoS::AtLeastOnce,
            done,
            rec: None,
        };
        let pkid = sh
            .register(&channel(1), kind, Vec::new())
            .expect("registered");
        let r = sh.on_packet(Packet::PubAck(PubResp::new(
            pkid,
            ReasonCode::QUOTA_EXCEEDED,
        )));
        assert!(r.reply.is_none() && r.close.is_none());
        assert_eq!(
            rx.try_recv().map(|o| o.code),
            Ok(ReasonCode::QUOTA_EXCEEDED)
        );
        assert_eq!(sh.lock().pkids.len(), 0);
    }

    #[test]
    fn qos2_flow_sends_pubrel_then_completes_on_pubcomp() {
        let sh = shared(true);
        let (done, mut rx) = oneshot::channel();
        let kind = PendingKind::Publish {
            qos: QoS::ExactlyOnce,
            done,
            rec: None,
        };
        let pkid = sh
            .register(&channel(1), kind, Vec::new())
            .expect("registered");
        // A PUBACK for a QoS 2 flow is the wrong kind: ignored, flow kept.
        sh.on_packet(Packet::PubAck(PubResp::new(pkid, ReasonCode::SUCCESS)));
        assert!(rx.try_recv().is_err());
        let r = sh.on_packet(Packet::PubRec(PubResp::new(
            pkid,
            ReasonCode::NO_MATCHING_SUBSCRIBERS,
        )));
        assert_eq!(
            r.reply,
            Some(Packet::PubRel(PubResp::new(pkid, ReasonCode::SUCCESS)))
        );
        assert!(rx.try_recv().is_err(), "not done before PUBCOMP");
        sh.on_packet(Packet::PubComp(PubResp::new(pkid, ReasonCode::SUCCESS)));
        // The PUBREC's (success) code is the more telling outcome.
        assert_eq!(
            rx.try_recv().map(|o| o.code),
            Ok(ReasonCode::NO_MATCHING_SUBSCRIBERS)
        );
        assert_eq!(sh.lock().pkids.len(), 0);
    }

    #[test]
    fn failed_pubrec_ends_the_flow_without_pubrel() {
        let sh = shared(true);
        let (done, mut rx) = oneshot::channel();
        let kind = PendingKind::Publish {
            qos: QoS::ExactlyOnce,
            done,
            rec: None,
        };
        let pkid = sh
            .register(&channel(1), kind, Vec::new())
            .expect("registered");
        let r = sh.on_packet(Packet::PubRec(PubResp::new(
            pkid,
            ReasonCode::NOT_AUTHORIZED,
        )));
        assert!(r.reply.is_none());
        assert_eq!(
            rx.try_recv().map(|o| o.code),
            Ok(ReasonCode::NOT_AUTHORIZED)
        );
    }

    #[test]
    fn unknown_pubrec_is_answered_with_not_found() {
        let sh = shared(true);
        let r = sh.on_packet(Packet::PubRec(PubResp::new(9, ReasonCode::SUCCESS)));
        assert_eq!(
            r.reply,
            Some(Packet::PubRel(PubResp::new(
                9,
                ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
            )))
        );
    }

    #[test]
    fn incoming_qos2_is_delivered_once() {
        let sh = shared(false);
        let (tx, _rx) = mpsc::channel(4);
        let (done, _) = oneshot::channel();
        let filter = TopicFilter::parse("a/+").expect("filter");
        sh.register_subscription(&channel(1), spec(1, filter), tx, done)
            .expect("registered");
        let r = sh.on_packet(publish("a/b", QoS::ExactlyOnce, 5, vec![]));
        assert!(r.deliver.is_some());
        assert_eq!(
            r.reply,
            Some(Packet::PubRec(PubResp::new(5, ReasonCode::SUCCESS)))
        );
        let again = sh.on_packet(publish("a/b", QoS::ExactlyOnce, 5, vec![]));
        assert!(
            again.deliver.is_none(),
            "duplicate before PUBREL is not delivered"
        );
        assert_eq!(
            again.reply,
            Some(Packet::PubRec(PubResp::new(5, ReasonCode::SUCCESS)))
        );
        let rel = sh.on_packet(Packet::PubRel(PubResp::new(5, ReasonCode::SUCCESS)));
        assert_eq!(
            rel.reply,
            Some(Packet::PubComp(PubResp::new(5, ReasonCode::SUCCESS)))
        );
        let rel = sh.on_packet(Packet::PubRel(PubResp::new(5, ReasonCode::SUCCESS)));
        assert_eq!(
            rel.reply,
            Some(Packet::PubComp(PubResp::new(
                5,
                ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
            )))
        );
    }

    #[test]
    fn routes_by_subscription_identifier_then_by_filter() {
        let sh = shared(true);
        let (tx1, _rx1) = mpsc::channel(4);
        let (tx2, _rx2) = mpsc::channel(4);
        let (d1, _) = oneshot::channel();
        let (d2, _) = oneshot::channel();
        let f = |s: &str| TopicFilter::parse(s).expect("filter");
        let a = sh
            .register_subscription(&channel(1), spec(1, f("a/#")), tx1, d1)
            .expect("registered");
        let b = sh
            .register_subscription(&channel(1), spec(2, f("a/b")), tx2, d2)
            .expect("registered");
        let (Some(ida), Some(idb)) = (a.sub_id, b.sub_id) else {
            panic!("ids expected")
        };
        let r = sh.on_packet(publish("a/b", QoS::AtMostOnce, 0, vec![idb]));
        assert_eq!(
            r.deliver.map(|(t, _)| t.len()),
            Some(1),
            "only the identified subscription"
        );
        let r = sh.on_packet(publish("a/b", QoS::AtMostOnce, 0, vec![ida, idb]));
        assert_eq!(r.deliver.map(|(t, _)| t.len()), Some(2));
        // No identifiers (a server that does not echo them): filters decide.
        let r = sh.on_packet(publish("a/c", QoS::AtMostOnce, 0, vec![]));
        assert_eq!(r.deliver.map(|(t, _)| t.len()), Some(1));
    }

    #[test]
    fn dropped_subscription_stops_routing() {
        let sh = shared(false);
        let (tx, rx) = mpsc::channel(4);
        let (done, _) = oneshot::channel();
        let filter = TopicFilter::parse("t").expect("filter");
        sh.register_subscription(&channel(1), spec(1, filter), tx, done)
            .expect("registered");
        drop(rx);
        let r = sh.on_packet(publish("t", QoS::AtLeastOnce, 3, vec![]));
        assert!(r.deliver.is_none());
        assert!(r.reply.is_some(), "still acknowledged");
        assert!(sh.lock().routes.is_empty());
    }

    #[test]
    fn suback_completes_subscribe() {
        let sh = shared(true);
        let (tx, _rx) = mpsc::channel(4);
        let (done, mut drx) = oneshot::channel();
        let filter = TopicFilter::parse("t").expect("filter");
        let nr = sh
            .register_subscription(&channel(1), spec(1, filter), tx, done)
            .expect("registered");
        let ack = SubAck {
            pkid: nr.pkid,
            codes: vec![ReasonCode::GRANTED_QOS_1],
            properties: Properties::default(),
        };
        sh.on_packet(Packet::SubAck(ack));
        assert!(drx.try_recv().is_ok());
    }

    #[test]
    fn failing_a_channel_fails_only_its_flows() {
        let sh = shared(true);
        let (d1, mut r1) = oneshot::channel();
        let (d2, mut r2) = oneshot::channel();
        let k = |done| PendingKind::Publish {
            qos: QoS::AtLeastOnce,
            done,
            rec: None,
        };
        sh.register(&channel(1), k(d1), Vec::new())
            .expect("registered");
        let p2 = sh
            .register(&channel(2), k(d2), Vec::new())
            .expect("registered");
        sh.fail_channel(1);
        assert!(matches!(
            r1.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(matches!(
            r2.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert!(matches!(sh.closed_error(), Error::ChannelClosed));
        sh.on_packet(Packet::PubAck(PubResp::new(p2, ReasonCode::SUCCESS)));
        assert!(r2.try_recv().is_ok());
    }

    #[test]
    fn server_disconnect_and_close_fail_everything() {
        let sh = shared(true);
        let (done, mut rx) = oneshot::channel();
        let k = PendingKind::Publish {
            qos: QoS::AtLeastOnce,
            done,
            rec: None,
        };
        sh.register(&channel(1), k, Vec::new()).expect("registered");
        let d = quicft_proto::Disconnect {
            code: ReasonCode::SESSION_TAKEN_OVER,
            properties: Properties::default(),
        };
        let r = sh.on_packet(Packet::Disconnect(d));
        let reason = r.close.expect("close");
        sh.close(reason);
        assert!(matches!(
            rx.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(sh.cancel.is_cancelled());
        let msg = sh.closed_error().to_string();
        assert!(msg.contains("0x8E"), "{msg}");
        let (d2, _) = oneshot::channel();
        let k = PendingKind::Publish {
            qos: QoS::AtLeastOnce,
            done: d2,
            rec: None,
        };
        assert!(matches!(
            sh.register(&channel(1), k, Vec::new()),
            Err(Error::ConnectionClosed(_))
        ));
    }

    #[test]
    fn keepalive_detects_missing_pingresp() {
        let sh = shared(true);
        assert!(sh.ping_sent());
        assert!(!sh.ping_sent(), "second ping with the first unanswered");
        sh.on_packet(Packet::PingResp);
        assert!(sh.ping_sent());
    }
}
