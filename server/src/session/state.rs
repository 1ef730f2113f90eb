//! The session of one connected client as a state machine: packets, deliveries and finished file
//! commands go in (`handle_*`, with the time passed in as `now`), and what the session must do
//! comes out — packets per stream (taken by [`Session::poll_transmit`]) and [`Actions`]: messages
//! to route, file commands to run, streams to drop, and whether to close.
//!
//! No tokio task, socket or clock is touched here, so every flow is tested by calling these
//! functions (tests at the end of this file). What the machine does call synchronously is
//! what answers in-line and never blocks: topic rules, configuration, metrics counters, the
//! broker's subscription table and retained store (a subscription's retained messages must follow
//! its SUBACK in the same turn), and the file-memory budget's `try_acquire`. Routing a message is
//! an action instead: it is the one output of the hot path, and the driver routes it right after
//! the packet that produced it, so a SUBSCRIBE later in the same read still finds a retained
//! message an earlier PUBLISH left.
//!
//! The parts live beside this file: `connect` (CONNACK and what CONNECT negotiates), `qos` (the
//! QoS 1/2 flows and the order of acks on a stream), `subscribe`, `deliver`, `will` and `ft` (file
//! commands).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quicft_proto::topic::TopicName;
use quicft_proto::{Packet, Protocol, PubResp, Publish, QoS, ReasonCode};
use tokio::sync::Semaphore;

use super::connect::Negotiated;
use super::ft::FileCommand;
use super::ft_order::FileOrder;
use super::will::DueWill;
use crate::acl::Acl;
use crate::broker::{Broker, Delivery, Kick, Message, SessionState, StreamId};
use crate::config::Config;
use crate::metrics::Metrics;

/// The control stream (QUIC) or the only stream (TCP/TLS) has id 0.
pub(crate) const CONTROL: StreamId = 0;

/// What the machine consults synchronously (see the module doc for why these and no more).
#[derive(Clone)]
pub(crate) struct Env {
    pub config: Arc<Config>,
    pub broker: Arc<Broker>,
    pub acl: Arc<Acl>,
    pub metrics: Arc<Metrics>,
    /// One permit per byte of file-transfer payload in memory (`limits.max_ft_inflight_bytes`).
    pub ft_memory: Arc<Semaphore>,
}

/// Why the session stops.
pub(crate) enum Exit {
    /// DISCONNECT 0x00: no will.
    Normal,
    /// DISCONNECT 0x04 from the client: publish the will.
    NormalWithWill,
    /// Network error, keepalive timeout, protocol error …: publish the will.
    Error(ReasonCode),
    /// A new connection took the session.
    TakenOver(Kick),
    Shutdown,
}

/// What the session asks its driver to do, in the order it must be done. Kept in the machine and
/// drained by the driver after each input, so the vectors keep their capacity (no allocation per
/// message).
#[derive(Default)]
pub(crate) struct Actions {
    /// Messages for the broker to route, in the order they were published.
    pub route: Vec<Message>,
    /// `$file` commands to run in the background; each answers with [`Session::handle_ft_done`].
    pub commands: Vec<FileCommand>,
    /// `$aws/things/…/streams/…` requests for the delivery service (`delivery`).
    pub streams: Vec<crate::delivery::StreamRequest>,
    /// Streams the session no longer uses, reset with the code when there is one.
    pub dropped: Vec<(StreamId, Option<ReasonCode>)>,
    /// Set when the session must end; no input is handled after it.
    pub close: Option<Exit>,
}

/// Per stream: what is being written this turn, and PUBACKs held back so that acks on a stream keep
/// the order of the PUBLISHes they answer (MQTT 5 §4.6) even when file-transfer acks complete out
/// of order.
#[derive(Default)]
pub(super) struct StreamOut {
    pub pending_acks: VecDeque<(u16, Option<PubResp>)>,
    /// Packets encoded this turn, handed to the writer in one piece: the PUBACKs of a read's
    /// dozens of PUBLISHes leave as one write (one QUIC packet, one TLS record) rather than one each.
    pub out: BytesMut,
    /// Whether `out` holds an answer to the peer's own packets (not only deliveries). A peer that
    /// keeps asking while not reading its answers is what the writer-queue bound stops.
    pub replied: bool,
}

impl StreamOut {
    /// Encodes an answer behind what this turn already queued on the stream.
    pub fn reply(&mut self, p: &Packet, protocol: Protocol) {
        self.push(p, protocol);
        self.replied = true;
    }

    /// Encodes a packet the server sends on its own (a re-sent delivery, DISCONNECT).
    pub fn push(&mut self, p: &Packet, protocol: Protocol) {
        if let Err(e) = p.encode(protocol, &mut self.out) {
            tracing::warn!(packet = p.name(), error = %e, "cannot encode packet");
        }
    }
}

/// What [`Session::close`] leaves for the driver to hand on.
pub(crate) struct Closing {
    /// The DISCONNECT code told to the client (v5), or `None` for a normal end.
    pub code: Option<ReasonCode>,
    pub state: SessionState,
    pub session_expiry: Option<Duration>,
    /// The will to publish, after its delay.
    pub will: Option<DueWill>,
}

/// One connected client's session, without its sockets.
pub(crate) struct Session {
    pub(super) env: Env,
    /// Data streams are separate from the control stream (QUIC), or the only stream is both.
    pub(super) quic: bool,
    pub(super) protocol: Protocol,
    pub(super) client_id: Arc<str>,
    /// The username a password proved (never one merely claimed), for `%u` in ACL rules.
    pub(super) username: Option<String>,
    pub(super) state: SessionState,
    pub(super) streams: HashMap<StreamId, StreamOut>,
    /// The streams that carry deliveries: data streams in the order they were opened, and the
    /// control stream over TCP/TLS or in single-stream mode. Deliveries whose stream is gone use
    /// the first.
    pub(super) data_order: Vec<StreamId>,
    pub(super) keep_alive: Option<Duration>,
    last_seen: Instant,
    /// min(client's Receive Maximum, our inflight window).
    pub(super) send_window: usize,
    /// Client's Maximum Packet Size.
    pub(super) client_max_packet: usize,
    /// QoS 1 file-transfer commands being processed + QoS 2 awaiting PUBREL, against our Receive Maximum.
    pub(super) inflight_in: usize,
    /// Per file id, the order this connection's commands run in (see `ft_order`).
    pub(super) ft_order: HashMap<String, FileOrder>,
    aliases: HashMap<u16, String>,
    pub(super) will: Option<quicft_proto::Will>,
    pub(super) session_expiry: Option<Duration>,
    /// Deliveries taken from the queue that could not be sent yet (retained messages at subscribe).
    pub(super) stash: VecDeque<Delivery>,
    /// Outgoing in-flight messages of a resumed session must be re-sent once a stream exists.
    pub(super) resend_pending: bool,
    pub(super) actions: Actions,
}

impl Session {
    /// A session that has accepted `n` (its CONNACK is queued on the control stream by
    /// [`Session::connack`]). Over TCP/TLS the control stream also carries data.
    pub fn new(
        env: Env,
        quic: bool,
        n: Negotiated,
        client_id: Arc<str>,
        username: Option<String>,
        state: SessionState,
        now: Instant,
    ) -> Session {
        let mut streams = HashMap::new();
        streams.insert(CONTROL, StreamOut::default());
        // Over TCP the one stream carries everything. Over QUIC the control stream carries
        // deliveries once the client shows it speaks single-stream MQTT there (DESIGN §3): now, if
        // the session it resumes subscribed or has messages in flight on it, or at its first
        // PUBLISH, SUBSCRIBE or ack there.
        let single_stream = !quic || resumed_on_control(&state);
        Session {
            quic,
            protocol: n.protocol,
            keep_alive: n.keep_alive,
            last_seen: now,
            send_window: n.send_window,
            client_max_packet: n.client_max_packet,
            inflight_in: state.incoming_qos2.len(),
            ft_order: HashMap::new(),
            aliases: HashMap::new(),
            username,
            will: n.will,
            session_expiry: n.session_expiry,
            stash: VecDeque::new(),
            resend_pending: !state.outgoing.is_empty(),
            data_order: if single_stream {
                vec![CONTROL]
            } else {
                Vec::new()
            },
            streams,
            env,
            client_id,
            state,
            actions: Actions::default(),
        }
    }

    /// This client, as ACL rules see it.
    pub(super) fn who(&self) -> crate::acl::Who<'_> {
        crate::acl::Who {
            client_id: &self.client_id,
            username: self.username.as_deref(),
        }
    }

    /// The actions so far (the driver takes them field by field).
    #[cfg(test)]
    pub fn actions(&mut self) -> &mut Actions {
        &mut self.actions
    }

    /// Whether packets from `stream` are still handled (a violation may have dropped it).
    pub fn has_stream(&self, stream: StreamId) -> bool {
        self.streams.contains_key(&stream)
    }

    /// Hands every stream's packets of this turn to `write(stream, bytes, replied)`.
    pub fn poll_transmit(&mut self, mut write: impl FnMut(StreamId, Bytes, bool)) {
        for (id, s) in &mut self.streams {
            if !s.out.is_empty() {
                write(*id, s.out.split().freeze(), std::mem::take(&mut s.replied));
            }
        }
    }

    /// Queues an answer on a stream.
    pub(super) fn send(&mut self, stream: StreamId, p: &Packet) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.reply(p, self.protocol);
        }
    }

    fn end(&mut self, exit: Exit) {
        if self.actions.close.is_none() {
            self.actions.close = Some(exit);
        }
    }

    /// A data stream the peer opened (QUIC).
    pub fn handle_stream_opened(&mut self, stream: StreamId, now: Instant) -> &mut Actions {
        self.streams.insert(stream, StreamOut::default());
        self.data_order.push(stream);
        self.resend_inflight(now);
        &mut self.actions
    }

    /// The peer finished or reset a stream, or the connection broke.
    pub fn handle_stream_closed(&mut self, stream: StreamId) -> &mut Actions {
        if stream == CONTROL {
            self.end(Exit::Error(ReasonCode::UNSPECIFIED_ERROR));
        } else {
            self.drop_stream(stream, None);
        }
        &mut self.actions
    }

    /// Bytes on `stream` that are not a valid packet (its reader has stopped it).
    pub fn handle_malformed(&mut self, stream: StreamId, code: ReasonCode) -> &mut Actions {
        if stream == CONTROL {
            self.end(Exit::Error(code));
        } else {
            self.drop_stream(stream, Some(code));
        }
        &mut self.actions
    }

    /// A stream whose writer cannot keep up with its answers (the peer asks but does not read):
    /// on a QUIC data stream it costs the stream, elsewhere the connection.
    pub fn handle_write_overflow(&mut self, stream: StreamId) -> &mut Actions {
        tracing::info!(stream, "peer does not read its answers: writer queue full");
        if stream != CONTROL && self.quic {
            self.drop_stream(stream, Some(ReasonCode::QUOTA_EXCEEDED));
        } else {
            self.end(Exit::Error(ReasonCode::UNSPECIFIED_ERROR));
        }
        &mut self.actions
    }

    /// The keepalive check: MQTT 5 §3.1.2.10 allows one and a half keepalives without a packet.
    pub fn handle_tick(&mut self, now: Instant) -> &mut Actions {
        if let Some(ka) = self.keep_alive {
            if now.saturating_duration_since(self.last_seen) > ka + ka / 2 {
                tracing::info!("keepalive timeout");
                self.end(Exit::Error(ReasonCode::KEEP_ALIVE_TIMEOUT));
            }
        }
        &mut self.actions
    }

    /// Packets arrived on a stream: the keepalive restarts.
    pub fn handle_read(&mut self, now: Instant) {
        self.last_seen = now;
    }

    pub(super) fn drop_stream(&mut self, stream: StreamId, reset: Option<ReasonCode>) {
        if self.streams.remove(&stream).is_some() {
            self.actions.dropped.push((stream, reset));
        }
        self.data_order.retain(|s| *s != stream);
    }

    /// A protocol violation: on a QUIC data stream it costs the stream, elsewhere the connection.
    pub(super) fn violation(&mut self, stream: StreamId, code: ReasonCode, what: &str) {
        tracing::info!(stream, code = %code, "{what}");
        if stream != CONTROL && self.quic {
            self.drop_stream(stream, Some(code));
        } else {
            self.end(Exit::Error(code));
        }
    }

    /// One packet from the client on `stream`.
    pub fn handle_packet(
        &mut self,
        stream: StreamId,
        packet: Packet,
        now: Instant,
    ) -> &mut Actions {
        match packet {
            Packet::PingReq => self.send(stream, &Packet::PingResp),
            Packet::Disconnect(d) => {
                if stream != CONTROL {
                    self.violation(
                        stream,
                        ReasonCode::PROTOCOL_ERROR,
                        "DISCONNECT on a data stream",
                    );
                    return &mut self.actions;
                }
                if let Some(s) = d.properties.session_expiry_interval {
                    // MQTT 5 §3.14.2.2.2: cannot be set from zero to non-zero at DISCONNECT.
                    if self.session_expiry == Some(Duration::ZERO) && s > 0 {
                        self.end(Exit::Error(ReasonCode::PROTOCOL_ERROR));
                        return &mut self.actions;
                    }
                    let max = self.env.config.limits.max_session_expiry;
                    self.session_expiry = Some(Duration::from_secs(u64::from(s.min(max))));
                }
                self.end(if d.code == ReasonCode::DISCONNECT_WITH_WILL {
                    Exit::NormalWithWill
                } else {
                    Exit::Normal
                });
            }
            Packet::Connect(_) => {
                self.violation(stream, ReasonCode::PROTOCOL_ERROR, "second CONNECT")
            }
            // No enhanced authentication method is offered, so AUTH is never expected.
            Packet::Auth(_) => self.violation(
                stream,
                ReasonCode::PROTOCOL_ERROR,
                "AUTH without an authentication method",
            ),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => self
                .violation(
                    stream,
                    ReasonCode::PROTOCOL_ERROR,
                    "server-to-client packet from the client",
                ),
            // Single-stream mode on the control stream: everything else, as over TCP.
            p if stream == CONTROL && !self.data_order.contains(&CONTROL) => {
                self.data_order.push(CONTROL);
                self.resend_inflight(now);
                self.handle_packet(stream, p, now);
            }
            Packet::Publish(p) => self.on_publish(stream, p, now),
            Packet::PubAck(r) => self.on_puback(r),
            Packet::PubRec(r) => self.on_pubrec(stream, r),
            Packet::PubComp(r) => self.on_pubcomp(r),
            Packet::PubRel(r) => self.on_pubrel(stream, r),
            Packet::Subscribe(s) => self.on_subscribe(stream, s),
            Packet::Unsubscribe(u) => self.on_unsubscribe(stream, u),
        }
        &mut self.actions
    }

    /// Resolves the topic alias (MQTT 5 §3.3.2.3.4) and checks the topic name.
    fn publish_topic(&mut self, p: &Publish) -> Result<String, ReasonCode> {
        let topic = match p.properties.topic_alias {
            None => p.topic.clone(),
            Some(0) => return Err(ReasonCode::TOPIC_ALIAS_INVALID),
            Some(a) if a > self.env.config.limits.topic_alias_maximum => {
                return Err(ReasonCode::TOPIC_ALIAS_INVALID);
            }
            Some(a) if p.topic.is_empty() => match self.aliases.get(&a) {
                Some(t) => t.clone(),
                None => return Err(ReasonCode::PROTOCOL_ERROR),
            },
            Some(a) => {
                self.aliases.insert(a, p.topic.clone());
                p.topic.clone()
            }
        };
        TopicName::parse(&topic).map_err(|_| ReasonCode::TOPIC_NAME_INVALID)?;
        Ok(topic)
    }

    fn on_publish(&mut self, stream: StreamId, p: Publish, now: Instant) {
        let topic = match self.publish_topic(&p) {
            Ok(t) => t,
            Err(code) => return self.violation(stream, code, "bad PUBLISH topic"),
        };
        if p.qos != QoS::AtMostOnce
            && self.inflight_in >= usize::from(self.env.config.limits.inflight_window)
        {
            return self.violation(
                stream,
                ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                "receive maximum exceeded",
            );
        }
        if p.qos == QoS::ExactlyOnce && self.state.incoming_qos2.contains(&p.pkid) {
            // A retransmission of a message already routed: acknowledge again, route once.
            self.send(
                stream,
                &Packet::PubRec(PubResp::new(p.pkid, ReasonCode::SUCCESS)),
            );
            return;
        }
        if quicft_proto::ft::is_ft_topic(&topic) {
            return self.on_file_command(stream, p, topic);
        }
        if quicft_proto::aws_stream::is_stream_topic(&topic)
            || topic.starts_with(quicft_proto::file_delivery::PREFIX)
        {
            return self.on_stream_request(stream, p, topic);
        }
        let (qos, pkid) = (p.qos, p.pkid);
        let code = if reserved_topic(&topic) || !self.env.acl.publish(self.who(), &topic) {
            tracing::info!(client_id = %self.client_id, %topic, "publish refused");
            ReasonCode::NOT_AUTHORIZED
        } else {
            let msg = Message::from_publish(p, topic, Some(self.client_id.clone()), now);
            self.actions.route.push(msg);
            ReasonCode::SUCCESS
        };
        self.ack_incoming(stream, qos, pkid, code);
    }
}

impl Session {
    /// Ends the session: queues the last words (a v5 DISCONNECT with the reason, unless the
    /// client ended it or the connection is gone), and gives up the state and the will due.
    pub fn close(&mut self, exit: &Exit) -> Closing {
        let code = match exit {
            Exit::Normal | Exit::NormalWithWill => None,
            Exit::Error(code) => Some(*code),
            Exit::TakenOver(_) => Some(ReasonCode::SESSION_TAKEN_OVER),
            Exit::Shutdown => Some(ReasonCode::SERVER_SHUTTING_DOWN),
        };
        tracing::info!(reason = ?code.map(|c| c.to_string()), "disconnected");
        if let (Protocol::V5, Some(code)) = (self.protocol, code) {
            if code != ReasonCode::UNSPECIFIED_ERROR {
                let d = quicft_proto::Disconnect {
                    code,
                    properties: quicft_proto::Properties::default(),
                };
                self.env
                    .metrics
                    .reason_sent(crate::metrics::Sent::Disconnect, code);
                if let Some(s) = self.streams.get_mut(&CONTROL) {
                    s.push(&Packet::Disconnect(d), self.protocol);
                }
            }
        }
        let will = self.take_will(exit);
        let state = std::mem::replace(&mut self.state, placeholder_state(&self.client_id));
        Closing {
            code,
            state,
            session_expiry: self.session_expiry,
            will,
        }
    }
}

/// Whether a resumed session subscribed, or has deliveries in flight, on the control stream: its
/// client spoke single-stream MQTT over QUIC (or came over TCP) last time.
fn resumed_on_control(state: &SessionState) -> bool {
    state.subscriptions.values().any(|s| s.stream == CONTROL)
        || state
            .outgoing
            .values()
            .any(|o| o.delivery.stream == CONTROL)
}

/// An empty state to leave behind when the real one has been handed on.
pub(super) fn placeholder_state(client_id: &Arc<str>) -> SessionState {
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    SessionState {
        client_id: client_id.clone(),
        subscriptions: HashMap::new(),
        outgoing: Default::default(),
        incoming_qos2: Default::default(),
        next_pkid: 0,
        mailbox: rx,
    }
}

/// Topics a client may not publish to: what the server itself publishes.
pub(super) fn reserved_topic(topic: &str) -> bool {
    use quicft_proto::ft as ftp;
    topic.starts_with(ftp::RESPONSE_PREFIX)
        || topic.starts_with(ftp::EVENTS_PREFIX)
        || topic.starts_with("$SYS/")
}
