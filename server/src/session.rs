//! One connected client: CONNECT handling, then the task that owns the session while it is online.
//!
//! Every stream of the connection feeds packets into this task ([`crate::stream`]); it answers on the
//! stream a packet came from, delivers each subscription's messages on the stream that subscribed
//! (DESIGN §3), and pulls deliveries from the session's bounded queue only as fast as the client's
//! in-flight window allows. On a QUIC connection the control stream carries only CONNECT, PING,
//! DISCONNECT and AUTH; over TCP/TLS the single stream carries everything.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quicft_proto::ft::{self as ftp, FtReason, Mode};
use quicft_proto::topic::{TopicFilter, TopicName};
use quicft_proto::{
    ConnAck, Connect, Disconnect, Packet, Properties, Protocol, PubResp, Publish, QoS, ReasonCode,
    SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::broker::{Delivery, Kick, Message, Outgoing, SessionState, StreamId, Subscription};
use crate::ft::order::FileOrder;
use crate::mirror::{self, Pairing};
use crate::stream::{self, Event, PacketRead, Writer};
use crate::Ctx;

/// The transport a client connected over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Quic,
    Tcp,
    Tls,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Quic => "quic",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// The connection a session runs on.
pub(crate) struct Link {
    pub transport: Transport,
    pub peer: SocketAddr,
    /// The address the listener is bound to: anonymous access depends on it being loopback.
    pub listener: SocketAddr,
    /// Set for QUIC: data streams are accepted from it.
    pub quic: Option<quinn::Connection>,
    /// Name (CN, else first SAN) of the client certificate rustls verified against `tls.client_ca`.
    pub cert_name: Option<Arc<str>>,
}

/// Events (each up to [`stream::MAX_BATCH`] decoded packets) queued from a connection's stream
/// readers to its session. With the batch size it bounds the decoded packets one connection can
/// hold in memory (512, about 430 KB of `Packet`s plus their payloads) before its readers stop
/// reading and flow control pushes back on the peer.
const EVENT_QUEUE: usize = 16;

/// The control stream (QUIC) or the only stream (TCP/TLS) has id 0.
const CONTROL: StreamId = 0;

/// A finished background file-transfer command, returned to the session to be answered.
pub(crate) struct FtDone {
    stream: StreamId,
    pkid: u16,
    /// Sync mode: the PUBACK was held until now.
    ack_pending: bool,
    reason: FtReason,
    response: Bytes,
    response_topic: String,
    correlation: Option<Bytes>,
}

/// Handles a new connection whose control stream is given: reads CONNECT, authenticates, attaches the
/// session and runs it until the client goes away.
pub(crate) async fn serve<R: stream::PacketRead, W: stream::PacketWrite>(
    ctx: Arc<Ctx>,
    link: Link,
    control_rx: R,
    control_tx: W,
) {
    let _open = ctx.metrics.connection(link.transport); // the connections gauge, until this returns
    let io = crate::clients::Io::new(ctx.metrics.clone(), link.transport); // byte counts (HTTP API, metrics)
    let (mut control_rx, control_tx) = (io.wrap(control_rx), io.wrap(control_tx));
    let max = ctx.config.limits.max_packet_size;
    let first = tokio::time::timeout(
        ctx.config.limits.connect_timeout,
        stream::read_first(&mut control_rx, max),
    )
    .await;
    let (writer, writer_task) = stream::spawn_writer(control_tx);
    let (connect, leftover) = match first {
        Ok(Ok((Packet::Connect(c), rest))) => (c, rest),
        Ok(Ok((other, _))) => {
            tracing::debug!(peer = %link.peer, packet = other.name(), "first packet is not CONNECT");
            return finish(link, writer, writer_task, ReasonCode::PROTOCOL_ERROR).await;
        }
        Ok(Err(stream::FirstPacketError::Decode(e))) => {
            tracing::debug!(peer = %link.peer, error = %e, "bad CONNECT");
            if let quicft_proto::DecodeError::UnsupportedProtocol(_) = e {
                // A 3.1.1-format CONNACK is what any client version can read (MQTT 5 §3.1.2.2).
                let ack = ConnAck {
                    session_present: false,
                    code: e.reason_code(),
                    properties: Properties::default(),
                };
                send_packet(&writer, &Packet::ConnAck(ack), Protocol::V311);
            }
            return finish(link, writer, writer_task, e.reason_code()).await;
        }
        Ok(Err(e)) => {
            tracing::debug!(peer = %link.peer, error = %e, "no CONNECT");
            return finish(link, writer, writer_task, ReasonCode::PROTOCOL_ERROR).await;
        }
        Err(_) => {
            tracing::debug!(peer = %link.peer, "CONNECT timeout");
            return finish(link, writer, writer_task, ReasonCode::MAXIMUM_CONNECT_TIME).await;
        }
    };
    let protocol = connect.protocol;
    let refuse = |code: ReasonCode| {
        let ack = ConnAck {
            session_present: false,
            code,
            properties: Properties::default(),
        };
        ctx.metrics.reason_sent(crate::metrics::Sent::ConnAck, code);
        send_packet(&writer, &Packet::ConnAck(ack), protocol);
    };

    let verified = match ctx
        .auth
        .check(&connect, link.listener, link.cert_name.as_deref())
        .await
    {
        Ok(verified) => verified,
        Err(code) => {
            tracing::info!(peer = %link.peer, client_id = %connect.client_id, code = %code, "CONNECT refused");
            refuse(code);
            return finish(link, writer, writer_task, code).await;
        }
    };
    let by_cert = match cert_client_id(
        &connect,
        link.cert_name.as_deref(),
        ctx.config.tls.cert_client_id,
    ) {
        Ok(v) => v,
        Err(code) => {
            tracing::info!(peer = %link.peer, client_id = %connect.client_id, cert = ?link.cert_name, "client id does not match the certificate");
            refuse(code);
            return finish(link, writer, writer_task, code).await;
        }
    };
    // A password user's empty client id becomes the one its pattern allows, if only one.
    let by_user = match (&by_cert, &verified) {
        (None, Some(v)) if connect.client_id.is_empty() => {
            v.client_ids.exact().map(|id| (Arc::<str>::from(id), true))
        }
        _ => None,
    };
    let (client_id, assigned) = match by_cert
        .or(by_user)
        .map_or_else(|| assign_client_id(&connect), Ok)
    {
        Ok(v) => v,
        Err(code) => {
            refuse(code);
            return finish(link, writer, writer_task, code).await;
        }
    };
    if let Some(v) = verified.as_ref().filter(|v| !v.client_ids.matches(&client_id)) {
        tracing::info!(peer = %link.peer, client_id = %client_id, username = %v.username,
            "client id not allowed for this user (auth.client_id / users[].client_id)");
        let code = match protocol {
            Protocol::V5 => ReasonCode::NOT_AUTHORIZED,
            _ => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        };
        refuse(code);
        return finish(link, writer, writer_task, code).await;
    }
    let username = verified.map(|v| v.username);
    // A will is a publish made later on the client's behalf: the same topic rules apply now, or it
    // could forge another client's `$file-response/…` or `$events/…` when the connection drops.
    if let Some(w) = &connect.will {
        let who = crate::acl::Who {
            client_id: &client_id,
            username: username.as_deref(),
        };
        if reserved_topic(&w.topic) || ftp::is_ft_topic(&w.topic) || !ctx.acl_publish(who, &w.topic)
        {
            tracing::info!(peer = %link.peer, client_id = %client_id, topic = %w.topic, "will topic refused");
            refuse(ReasonCode::NOT_AUTHORIZED);
            return finish(link, writer, writer_task, ReasonCode::NOT_AUTHORIZED).await;
        }
    }
    let span = tracing::info_span!("conn", client_id = %client_id, transport = link.transport.as_str(), peer = %link.peer);
    async move {
        let opened = ctx
            .broker
            .open_session(&client_id, connect.clean_start)
            .await;
        let conn = ctx
            .clients
            .register(&client_id, link.transport, link.peer, io);
        let mut s = Session::new(
            ctx,
            link,
            connect,
            client_id,
            opened.state,
            opened.generation,
            writer,
            conn,
        );
        s.username = username;
        s.connack(opened.session_present, assigned);
        tracing::info!(session_present = opened.session_present, "connected");
        let exit = s.run(opened.kick, leftover, control_rx).await;
        s.close(exit, writer_task).await;
    }
    .instrument(span)
    .await
}

/// Sends a final DISCONNECT-less close: for failures before a session exists.
async fn finish(link: Link, writer: Writer, task: tokio::task::JoinHandle<()>, code: ReasonCode) {
    drop(writer);
    let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    if let Some(conn) = link.quic {
        conn.close(quinn::VarInt::from_u32(u32::from(code.0)), b"");
    }
}

fn send_packet(w: &Writer, p: &Packet, protocol: Protocol) -> bool {
    let mut buf = BytesMut::new();
    match p.encode(protocol, &mut buf) {
        Ok(()) => w.send(buf.freeze()),
        Err(e) => {
            tracing::warn!(packet = p.name(), error = %e, "cannot encode packet");
            false
        }
    }
}

/// The client id a certificate imposes (and whether the client must be told), or an error when the
/// CONNECT names another client than the certificate does.
fn cert_client_id(
    c: &Connect,
    cert: Option<&str>,
    mode: crate::config::CertClientId,
) -> Result<Option<(Arc<str>, bool)>, ReasonCode> {
    let Some(name) = cert else { return Ok(None) };
    match mode {
        _ if c.client_id == name => Ok(Some((name.into(), false))),
        crate::config::CertClientId::Assign => Ok(Some((name.into(), true))),
        crate::config::CertClientId::Match if c.client_id.is_empty() => {
            Ok(Some((name.into(), true)))
        }
        crate::config::CertClientId::Match => Err(ReasonCode::NOT_AUTHORIZED),
    }
}

/// The client id to use, and whether the server assigned it.
fn assign_client_id(c: &Connect) -> Result<(Arc<str>, bool), ReasonCode> {
    if !c.client_id.is_empty() {
        return Ok((c.client_id.as_str().into(), false));
    }
    if c.protocol == Protocol::V311 && !c.clean_start {
        // 3.1.1 §3.1.3.1: a zero-byte id needs CleanSession = 1.
        return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    }
    let id = format!("qft-{:016x}", rand_u64());
    Ok((id.into(), true))
}

/// Enough randomness for an assigned client id, without a new dependency.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// Why the session task stopped.
enum Exit {
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

/// Per data stream: the writer, and PUBACKs held back so that acks on a stream keep the order of
/// the PUBLISHes they answer (MQTT 5 §4.6) even when file-transfer acks complete out of order.
struct StreamState {
    writer: Writer,
    pending_acks: VecDeque<(u16, Option<PubResp>)>,
    /// Packets encoded this turn of the session loop, handed to the writer in one piece by
    /// [`Session::flush`]: the PUBACKs of a read's dozens of PUBLISHes leave as one write (one
    /// QUIC packet, one TLS record) rather than one each.
    out: BytesMut,
}

impl StreamState {
    fn new(writer: Writer) -> StreamState {
        StreamState {
            writer,
            pending_acks: VecDeque::new(),
            out: BytesMut::new(),
        }
    }

    /// Encodes `p` behind what this turn already queued on the stream.
    fn queue(&mut self, p: &Packet, protocol: Protocol) {
        if let Err(e) = p.encode(protocol, &mut self.out) {
            tracing::warn!(packet = p.name(), error = %e, "cannot encode packet");
        }
    }
}

struct Session {
    ctx: Arc<Ctx>,
    link: Link,
    protocol: Protocol,
    client_id: Arc<str>,
    /// The username a password proved (never one merely claimed), for `%u` in ACL rules.
    username: Option<String>,
    generation: u64,
    state: SessionState,
    streams: HashMap<StreamId, StreamState>,
    /// Data streams in the order they were opened: deliveries whose stream is gone use the first.
    data_order: Vec<StreamId>,
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    keep_alive: Option<Duration>,
    last_seen: Instant,
    /// min(client's Receive Maximum, our inflight window).
    send_window: usize,
    /// Client's Maximum Packet Size.
    client_max_packet: usize,
    /// QoS 1 file-transfer commands being processed + QoS 2 awaiting PUBREL, against our Receive Maximum.
    inflight_in: usize,
    /// Per file id, the order this connection's commands run in (see `crate::ft::order`).
    ft_order: HashMap<String, FileOrder>,
    aliases: HashMap<u16, String>,
    will: Option<quicft_proto::Will>,
    session_expiry: Option<Duration>,
    /// Deliveries taken from the queue that could not be sent yet (retained messages at subscribe).
    stash: VecDeque<Delivery>,
    /// Outgoing in-flight messages of a resumed session must be re-sent once a stream exists.
    resend_pending: bool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// This connection in the client registry (HTTP API): streams, packets; unregisters on drop.
    conn: crate::clients::Registration,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: Arc<Ctx>,
        link: Link,
        connect: Connect,
        client_id: Arc<str>,
        state: SessionState,
        generation: u64,
        control: Writer,
        conn: crate::clients::Registration,
    ) -> Session {
        let limits = &ctx.config.limits;
        let mut ka = connect.keep_alive;
        if limits.max_keep_alive > 0 && (ka == 0 || ka > limits.max_keep_alive) {
            ka = limits.max_keep_alive;
        }
        let props = &connect.properties;
        let session_expiry = match connect.protocol {
            // 3.1.1: a persistent session lasts until the client cleans it (capped by config).
            Protocol::V311 if !connect.clean_start => Some(limits.max_session_expiry),
            Protocol::V311 => Some(0),
            Protocol::V5 => Some(
                props
                    .session_expiry_interval
                    .unwrap_or(0)
                    .min(limits.max_session_expiry),
            ),
        }
        .map(|s| Duration::from_secs(u64::from(s)));
        let send_window = usize::from(
            props
                .receive_maximum
                .unwrap_or(u16::MAX)
                .min(limits.inflight_window),
        )
        .max(1);
        let client_max_packet = props.maximum_packet_size.map_or(usize::MAX, |m| m as usize);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let mut streams = HashMap::new();
        streams.insert(CONTROL, StreamState::new(control));
        let resend_pending = !state.outgoing.is_empty();
        Session {
            protocol: connect.protocol,
            keep_alive: (ka > 0).then(|| Duration::from_secs(u64::from(ka))),
            last_seen: Instant::now(),
            send_window,
            client_max_packet,
            inflight_in: state.incoming_qos2.len(),
            ft_order: HashMap::new(),
            aliases: HashMap::new(),
            username: None,
            will: connect.will,
            session_expiry,
            stash: VecDeque::new(),
            resend_pending,
            tasks: Vec::new(),
            conn,
            data_order: Vec::new(),
            events_tx,
            events_rx,
            streams,
            ctx,
            link,
            client_id,
            generation,
            state,
        }
    }

    /// This client, as ACL rules see it.
    fn who(&self) -> crate::acl::Who<'_> {
        crate::acl::Who {
            client_id: &self.client_id,
            username: self.username.as_deref(),
        }
    }

    fn is_quic(&self) -> bool {
        self.link.quic.is_some()
    }

    /// Queues `p` on a stream; [`Session::flush`] hands it to the stream's writer.
    fn send(&mut self, stream: StreamId, p: &Packet) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.queue(p, self.protocol);
        }
    }

    /// Hands every stream's queued packets to its writer, one write per stream.
    fn flush(&mut self) {
        for s in self.streams.values_mut() {
            if !s.out.is_empty() {
                s.writer.send(s.out.split().freeze());
            }
        }
    }

    fn connack(&mut self, session_present: bool, assigned: bool) {
        let limits = &self.ctx.config.limits;
        let mut properties = Properties::default();
        if self.protocol == Protocol::V5 {
            properties.receive_maximum = Some(limits.inflight_window);
            properties.maximum_packet_size = u32::try_from(limits.max_packet_size).ok();
            properties.topic_alias_maximum = Some(limits.topic_alias_maximum);
            properties.retain_available = Some(1);
            properties.wildcard_subscription_available = Some(1);
            properties.subscription_identifier_available = Some(1);
            properties.shared_subscription_available = Some(0);
            if assigned {
                properties.assigned_client_identifier = Some(self.client_id.to_string());
            }
            if limits.max_keep_alive > 0 {
                properties.server_keep_alive = self
                    .keep_alive
                    .and_then(|d| u16::try_from(d.as_secs()).ok());
            }
            if let Some(d) = self.session_expiry {
                properties.session_expiry_interval = u32::try_from(d.as_secs()).ok();
            }
            if self.link.quic.is_some() {
                let (name, value) = quicft_proto::mirror::OFFER;
                properties.user_properties.push((name.into(), value.into()));
            }
        }
        let ack = ConnAck {
            session_present,
            code: ReasonCode::SUCCESS,
            properties,
        };
        self.ctx
            .metrics
            .reason_sent(crate::metrics::Sent::ConnAck, ReasonCode::SUCCESS);
        self.send(CONTROL, &Packet::ConnAck(ack));
    }

    /// Starts the readers and runs until the connection or session ends.
    async fn run<R: stream::PacketRead>(
        &mut self,
        mut kick: mpsc::Receiver<Kick>,
        leftover: BytesMut,
        control_rx: R,
    ) -> Exit {
        let max = self.ctx.config.limits.max_packet_size;
        self.tasks.push(stream::spawn_reader(
            control_rx,
            leftover,
            CONTROL,
            self.protocol,
            max,
            self.events_tx.clone(),
            None,
        ));
        if let Some(conn) = self.link.quic.clone() {
            self.tasks.push(tokio::spawn(accept_data_streams(
                conn,
                self.protocol,
                max,
                self.events_tx.clone(),
                self.conn.io().clone(),
            )));
        } else {
            self.data_order.push(CONTROL);
        }
        self.resend_inflight();
        self.flush(); // CONNACK and any re-sent deliveries
        let mut shutdown = self.ctx.shutdown.clone();
        // One future for the whole run: `changed()` rebuilt on every turn cost ~1 k instructions
        // per message.
        let shutdown = shutdown.changed();
        tokio::pin!(shutdown);
        let ka_check = self.keep_alive.map_or(Duration::from_secs(3600), |k| k / 2);
        let mut ka_timer = tokio::time::interval(ka_check.max(Duration::from_millis(100)));
        ka_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        enum Step {
            Event(Option<Event>),
            Deliver(Option<Delivery>),
            Kick(Option<Kick>),
            Tick,
            Shutdown,
        }
        loop {
            let can_pull = self.can_send_more() && self.stash.is_empty();
            let step = tokio::select! {
                biased;
                _ = &mut shutdown => Step::Shutdown,
                k = kick.recv() => Step::Kick(k),
                ev = self.events_rx.recv() => Step::Event(ev),
                d = self.state.mailbox.recv(), if can_pull => Step::Deliver(d),
                _ = ka_timer.tick() => Step::Tick,
            };
            let result = match step {
                Step::Shutdown => Err(Exit::Shutdown),
                Step::Kick(Some(k)) => Err(Exit::TakenOver(k)),
                // Our kick sender lives in the broker for as long as the session is ours.
                Step::Kick(None) => Ok(()),
                Step::Event(None) => Err(Exit::Error(ReasonCode::UNSPECIFIED_ERROR)),
                Step::Event(Some(ev)) => self.on_event(ev),
                Step::Deliver(Some(d)) => {
                    self.deliver(d);
                    Ok(())
                }
                Step::Deliver(None) => Ok(()),
                Step::Tick => self.check_keep_alive(),
            };
            if let Err(exit) = result {
                return exit;
            }
            // Handle what the stream readers have already queued before paying for another
            // `select!` (it re-polls every branch): under load this halves the per-message cost.
            for _ in 0..64 {
                let Ok(ev) = self.events_rx.try_recv() else {
                    break;
                };
                if let Err(exit) = self.on_event(ev) {
                    return exit;
                }
            }
            self.drain_stash();
            self.flush();
        }
    }

    fn check_keep_alive(&self) -> Result<(), Exit> {
        match self.keep_alive {
            // MQTT 5 §3.1.2.10: one and a half times the keepalive without a packet.
            Some(ka) if self.last_seen.elapsed() > ka + ka / 2 => {
                tracing::info!("keepalive timeout");
                Err(Exit::Error(ReasonCode::KEEP_ALIVE_TIMEOUT))
            }
            _ => Ok(()),
        }
    }

    fn on_event(&mut self, ev: Event) -> Result<(), Exit> {
        match ev {
            Event::Packets { stream, packets } => {
                self.last_seen = Instant::now();
                for packet in packets {
                    // A violation may have reset this stream: the rest of its batch goes with it.
                    if !self.streams.contains_key(&stream) {
                        break;
                    }
                    self.conn.packet_in(&packet);
                    self.on_packet(stream, packet)?;
                }
                Ok(())
            }
            Event::Malformed { stream, error } => {
                tracing::info!(stream, error = %error, "malformed packet");
                if stream == CONTROL {
                    return Err(Exit::Error(error.reason_code()));
                }
                self.drop_stream(stream, Some(error.reason_code()));
                Ok(())
            }
            Event::Closed { stream } => {
                if stream == CONTROL {
                    return Err(Exit::Error(ReasonCode::UNSPECIFIED_ERROR));
                }
                self.drop_stream(stream, None);
                Ok(())
            }
            Event::Opened { stream, writer } => {
                self.streams.insert(stream, StreamState::new(writer));
                self.data_order.push(stream);
                self.conn.stream_opened();
                self.resend_inflight();
                Ok(())
            }
            Event::FtDone(done) => {
                self.ft_done(*done);
                Ok(())
            }
        }
    }

    fn drop_stream(&mut self, stream: StreamId, reset: Option<ReasonCode>) {
        if let Some(s) = self.streams.remove(&stream) {
            self.conn.stream_closed();
            if let Some(code) = reset {
                s.writer.reset(u32::from(code.0));
            }
        }
        self.data_order.retain(|s| *s != stream);
    }

    /// A protocol violation: on a QUIC data stream it costs the stream, elsewhere the connection.
    fn violation(&mut self, stream: StreamId, code: ReasonCode, what: &str) -> Result<(), Exit> {
        tracing::info!(stream, code = %code, "{what}");
        if stream != CONTROL && self.is_quic() {
            self.drop_stream(stream, Some(code));
            Ok(())
        } else {
            Err(Exit::Error(code))
        }
    }

    fn on_packet(&mut self, stream: StreamId, packet: Packet) -> Result<(), Exit> {
        let control_only = self.is_quic() && stream == CONTROL;
        match packet {
            Packet::PingReq => {
                self.send(stream, &Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => {
                if stream != CONTROL {
                    return self.violation(
                        stream,
                        ReasonCode::PROTOCOL_ERROR,
                        "DISCONNECT on a data stream",
                    );
                }
                if let Some(s) = d.properties.session_expiry_interval {
                    // MQTT 5 §3.14.2.2.2: cannot be set from zero to non-zero at DISCONNECT.
                    if self.session_expiry == Some(Duration::ZERO) && s > 0 {
                        return Err(Exit::Error(ReasonCode::PROTOCOL_ERROR));
                    }
                    let max = self.ctx.config.limits.max_session_expiry;
                    self.session_expiry = Some(Duration::from_secs(u64::from(s.min(max))));
                }
                Err(if d.code == ReasonCode::DISCONNECT_WITH_WILL {
                    Exit::NormalWithWill
                } else {
                    Exit::Normal
                })
            }
            Packet::Connect(_) => {
                self.violation(stream, ReasonCode::PROTOCOL_ERROR, "second CONNECT")
            }
            Packet::Auth(_) => {
                // No enhanced authentication method is offered, so AUTH is never expected.
                self.violation(
                    stream,
                    ReasonCode::PROTOCOL_ERROR,
                    "AUTH without an authentication method",
                )
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => self
                .violation(
                    stream,
                    ReasonCode::PROTOCOL_ERROR,
                    "server-to-client packet from the client",
                ),
            p if control_only => {
                let what = format!("{} on the control stream", p.name());
                self.violation(stream, ReasonCode::PROTOCOL_ERROR, &what)
            }
            Packet::Publish(p) => self.on_publish(stream, p),
            Packet::PubAck(r) => {
                if self
                    .state
                    .outgoing
                    .get(&r.pkid)
                    .is_some_and(|o| o.delivery.qos == QoS::AtLeastOnce)
                {
                    self.state.outgoing.remove(&r.pkid);
                }
                Ok(())
            }
            Packet::PubRec(r) => {
                let Some(o) = self.state.outgoing.get_mut(&r.pkid) else {
                    if self.protocol == Protocol::V5 {
                        let rel = PubResp::new(r.pkid, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
                        self.send(stream, &Packet::PubRel(rel));
                    }
                    return Ok(());
                };
                if r.code.is_error() {
                    self.state.outgoing.remove(&r.pkid);
                } else {
                    o.awaiting_ack = false;
                    self.send(
                        stream,
                        &Packet::PubRel(PubResp::new(r.pkid, ReasonCode::SUCCESS)),
                    );
                }
                Ok(())
            }
            Packet::PubComp(r) => {
                if self
                    .state
                    .outgoing
                    .get(&r.pkid)
                    .is_some_and(|o| !o.awaiting_ack)
                {
                    self.state.outgoing.remove(&r.pkid);
                }
                Ok(())
            }
            Packet::PubRel(r) => {
                let code = if self.state.incoming_qos2.remove(&r.pkid) {
                    self.inflight_in = self.inflight_in.saturating_sub(1);
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
                };
                self.send(stream, &Packet::PubComp(PubResp::new(r.pkid, code)));
                Ok(())
            }
            Packet::Subscribe(s) => {
                self.on_subscribe(stream, s);
                Ok(())
            }
            Packet::Unsubscribe(u) => {
                self.on_unsubscribe(stream, u);
                Ok(())
            }
        }
    }

    /// Resolves the topic alias (MQTT 5 §3.3.2.3.4) and checks the topic name.
    fn publish_topic(&mut self, p: &Publish) -> Result<String, ReasonCode> {
        let topic = match p.properties.topic_alias {
            None => p.topic.clone(),
            Some(0) => return Err(ReasonCode::TOPIC_ALIAS_INVALID),
            Some(a) if a > self.ctx.config.limits.topic_alias_maximum => {
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

    fn on_publish(&mut self, stream: StreamId, p: Publish) -> Result<(), Exit> {
        let topic = match self.publish_topic(&p) {
            Ok(t) => t,
            Err(code) => return self.violation(stream, code, "bad PUBLISH topic"),
        };
        if p.qos != QoS::AtMostOnce
            && self.inflight_in >= usize::from(self.ctx.config.limits.inflight_window)
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
            return Ok(());
        }
        if ftp::is_ft_topic(&topic) {
            self.on_file_command(stream, p, topic);
            return Ok(());
        }
        let (qos, pkid) = (p.qos, p.pkid);
        let code = if reserved_topic(&topic) || !self.ctx.acl_publish(self.who(), &topic) {
            tracing::info!(client_id = %self.client_id, %topic, "publish refused");
            ReasonCode::NOT_AUTHORIZED
        } else {
            let msg = Message::from_publish(p, topic, Some(self.client_id.clone()), Instant::now());
            self.ctx.broker.publish(msg);
            ReasonCode::SUCCESS
        };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.ack_publish(stream, pkid, code),
            QoS::ExactlyOnce => {
                if !code.is_error() {
                    self.state.incoming_qos2.insert(pkid);
                    self.inflight_in += 1;
                }
                let code = if self.protocol == Protocol::V5 {
                    code
                } else {
                    ReasonCode::SUCCESS
                };
                self.ctx
                    .metrics
                    .reason_sent(crate::metrics::Sent::PubRec, code);
                self.send(stream, &Packet::PubRec(PubResp::new(pkid, code)));
            }
        }
        Ok(())
    }

    /// Runs a `$file…` command in the background; its answer comes back as [`Event::FtDone`].
    fn on_file_command(&mut self, stream: StreamId, p: Publish, topic: String) {
        let (pkid, qos) = (p.pkid, p.qos);
        let (response_topic, correlation) = match (&p.properties.response_topic, self.protocol) {
            (Some(t), Protocol::V5) if TopicName::parse(t).is_ok() => {
                (t.clone(), p.properties.correlation_data.clone())
            }
            _ => (ftp::RESPONSE_PREFIX.to_owned() + &self.client_id, None),
        };
        if !self.may_respond_on(&response_topic) {
            // The server would publish there as itself, on the device's word: the device could
            // reach topics it may not publish to (another device's `$file-response/…`, a read-only
            // command topic, `$events/…`). Refused like the publish it stands for; no answer.
            tracing::info!(topic = %response_topic, "file command refused: response topic not allowed");
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => self.ack_publish(stream, pkid, ReasonCode::NOT_AUTHORIZED),
                QoS::ExactlyOnce => {
                    let code = match self.protocol {
                        Protocol::V5 => ReasonCode::NOT_AUTHORIZED,
                        Protocol::V311 => ReasonCode::SUCCESS,
                    };
                    self.send(stream, &Packet::PubRec(PubResp::new(pkid, code)));
                }
            }
            return;
        }
        let parsed = ftp::parse_topic(&topic);
        let refuse = |reason: FtReason, why: String| FtDone {
            stream,
            pkid,
            ack_pending: true,
            reason,
            response: ftp::Response::new(topic.clone(), pkid, reason)
                .with_description(why)
                .to_bytes(),
            response_topic: response_topic.clone(),
            correlation: correlation.clone(),
        };
        // File commands are QoS 1 only (DESIGN §2): anything else gets an answer, never silence.
        let early = match (&parsed, qos) {
            (_, QoS::AtMostOnce) | (_, QoS::ExactlyOnce) => Some(refuse(
                FtReason::Cancel,
                "file-transfer commands must be published with QoS 1".into(),
            )),
            (Some(Err(e)), _) => Some(refuse(FtReason::Cancel, e.to_string())),
            (None, _) => Some(refuse(FtReason::Cancel, "not a file-transfer topic".into())),
            (Some(Ok(_)), _) => None,
        };
        if let Some(done) = early {
            match qos {
                QoS::AtMostOnce => {
                    self.publish_response(done.response, done.response_topic, done.correlation)
                }
                QoS::ExactlyOnce => {
                    // A PUBREC with an error code ends the QoS 2 flow (MQTT 5 §4.3.3).
                    let code = if self.protocol == Protocol::V5 {
                        ReasonCode(done.reason.code())
                    } else {
                        ReasonCode::SUCCESS
                    };
                    self.send(stream, &Packet::PubRec(PubResp::new(pkid, code)));
                    self.publish_response(done.response, done.response_topic, done.correlation);
                }
                QoS::AtLeastOnce => {
                    self.hold_ack(stream, pkid);
                    self.ft_done(done);
                }
            }
            return;
        }
        let Some(Ok(cmd)) = parsed else { return };
        // The payload stays in memory until it is durable: a server-wide budget keeps
        // devices x segments in flight from growing memory without bound. Over it, the device is
        // told to pause and retry (0x97) rather than the server slowing everyone's reads.
        let memory = u32::try_from(p.payload.len())
            .ok()
            .and_then(|n| self.ctx.ft_memory.clone().try_acquire_many_owned(n).ok());
        let Some(memory) = memory else {
            tracing::info!(
                bytes = p.payload.len(),
                "file-transfer memory budget (limits.max_ft_inflight_bytes) exhausted"
            );
            let done = refuse(
                FtReason::Quota,
                "server busy: too much file data in flight, retry later".into(),
            );
            self.hold_ack(stream, pkid);
            self.ft_done(done);
            return;
        };
        let sync = cmd.mode == Mode::Sync;
        if sync {
            self.hold_ack(stream, pkid);
            self.inflight_in += 1;
        } else {
            self.ack_publish(stream, pkid, ReasonCode::SUCCESS);
        }
        // Placed now, in reading order; the task waits for its turn.
        let alone = match cmd.command {
            ftp::Command::Segment { .. } => false,
            ftp::Command::Status => !p.payload.is_empty(),
            ftp::Command::Init | ftp::Command::Fin { .. } | ftp::Command::Abort => true,
        };
        let mut turn = self
            .ft_order
            .entry(cmd.file_id.as_str().to_owned())
            .or_default()
            .next(alone);
        let ft = self.ctx.ft.clone();
        let client_id = self.client_id.clone();
        let events = self.events_tx.clone();
        let span = tracing::info_span!("ft", file_id = cmd.file_id.as_str());
        tokio::spawn(
            async move {
                turn.ready().await;
                let out = ft.handle(&client_id, &cmd, p.payload).await;
                drop(turn);
                drop(memory);
                let mut resp = ftp::Response::new(topic, pkid, out.reason);
                if let Some(d) = out.description {
                    resp = resp.with_description(d);
                }
                if let Some(r) = out.ranges {
                    resp = resp.with_ranges(r);
                }
                if let Some(m) = out.missing {
                    resp = resp.with_missing(m);
                }
                if let Some(s) = out.state {
                    resp = resp.with_state(s.as_str());
                }
                if let Some(m) = out.meta {
                    resp = resp.with_meta(m);
                }
                if out.reason != FtReason::Success {
                    tracing::info!(reason = %ReasonCode::from(out.reason), "file command answered");
                }
                let done = FtDone {
                    stream,
                    pkid,
                    ack_pending: sync,
                    reason: out.reason,
                    response: resp.to_bytes(),
                    response_topic,
                    correlation,
                };
                let _ = events.send(Event::FtDone(Box::new(done))).await;
            }
            .instrument(span),
        );
    }

    /// Whether the answers to this client's file commands may go to `topic`: its own response
    /// topic (and below it), or a topic it may publish to itself.
    fn may_respond_on(&self, topic: &str) -> bool {
        let own = ftp::RESPONSE_PREFIX.to_owned() + &self.client_id;
        if topic == own || topic.strip_prefix(own.as_str()).is_some_and(|r| r.starts_with('/')) {
            return true;
        }
        !reserved_topic(topic) && !ftp::is_ft_topic(topic) && self.ctx.acl_publish(self.who(), topic)
    }

    fn ft_done(&mut self, done: FtDone) {
        self.ctx.metrics.ft_result(done.reason);
        // Files with nothing running any more (the task dropped its turn before reporting).
        self.ft_order.retain(|_, o| !o.prune());
        if done.ack_pending {
            self.inflight_in = self.inflight_in.saturating_sub(1);
            let code = if self.protocol == Protocol::V5 {
                ReasonCode(done.reason.code())
            } else {
                ReasonCode::SUCCESS
            };
            self.complete_ack(done.stream, done.pkid, code);
        }
        self.publish_response(done.response, done.response_topic, done.correlation);
    }

    fn publish_response(&self, payload: Bytes, topic: String, correlation: Option<Bytes>) {
        let mut msg = Message::server(topic, payload, QoS::AtLeastOnce);
        msg.properties.correlation_data = correlation;
        self.ctx.broker.publish(msg);
    }

    /// Reserves a PUBACK slot on the stream so acks leave in PUBLISH order.
    fn hold_ack(&mut self, stream: StreamId, pkid: u16) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.pending_acks.push_back((pkid, None));
        }
    }

    fn complete_ack(&mut self, stream: StreamId, pkid: u16, code: ReasonCode) {
        self.ctx
            .metrics
            .reason_sent(crate::metrics::Sent::PubAck, code);
        let protocol = self.protocol;
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if let Some(slot) = s
            .pending_acks
            .iter_mut()
            .find(|(id, r)| *id == pkid && r.is_none())
        {
            slot.1 = Some(PubResp::new(pkid, code));
        }
        while let Some((_, Some(_))) = s.pending_acks.front() {
            if let Some((_, Some(r))) = s.pending_acks.pop_front() {
                s.queue(&Packet::PubAck(r), protocol);
            }
        }
    }

    /// Sends a PUBACK now, or queues it behind held file-transfer acks of the same stream.
    fn ack_publish(&mut self, stream: StreamId, pkid: u16, code: ReasonCode) {
        let code = if self.protocol == Protocol::V5 {
            code
        } else {
            ReasonCode::SUCCESS
        };
        self.ctx
            .metrics
            .reason_sent(crate::metrics::Sent::PubAck, code);
        match self.streams.get_mut(&stream) {
            Some(s) if s.pending_acks.is_empty() => {
                s.queue(&Packet::PubAck(PubResp::new(pkid, code)), self.protocol);
            }
            Some(s) => s
                .pending_acks
                .push_back((pkid, Some(PubResp::new(pkid, code)))),
            None => {}
        }
    }

    fn on_subscribe(&mut self, stream: StreamId, s: Subscribe) {
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for f in s.filters {
            let code = match TopicFilter::parse(&f.filter) {
                Err(_) => ReasonCode::TOPIC_FILTER_INVALID,
                Ok(filter) if filter.shared().is_some() => {
                    ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
                }
                Ok(filter) if !self.ctx.acl_subscribe(self.who(), &filter) => {
                    tracing::info!(client_id = %self.client_id, filter = %f.filter, "subscription refused");
                    ReasonCode::NOT_AUTHORIZED
                }
                Ok(filter) => {
                    let sub = Subscription {
                        filter: filter.clone(),
                        options: f.options,
                        sub_id,
                        stream,
                    };
                    let existed = self
                        .state
                        .subscriptions
                        .insert(f.filter.clone(), sub.clone())
                        .is_some();
                    self.ctx.broker.subscribe(&self.client_id, sub);
                    let send_retained = match f.options.retain_handling {
                        0 => true,
                        1 => !existed,
                        _ => false,
                    };
                    if send_retained {
                        for m in self.ctx.broker.retained_matching(&filter) {
                            if f.options.no_local && m.origin.as_deref() == Some(&*self.client_id) {
                                continue;
                            }
                            retained.push(Delivery {
                                qos: m.qos.min(f.options.qos),
                                retain: true,
                                sub_ids: sub_id.into_iter().collect(),
                                stream,
                                msg: m,
                            });
                        }
                    }
                    ReasonCode(f.options.qos as u8)
                }
            };
            codes.push(code);
        }
        self.send(
            stream,
            &Packet::SubAck(SubAck {
                pkid: s.pkid,
                codes,
                properties: Properties::default(),
            }),
        );
        self.stash.extend(retained);
    }

    fn on_unsubscribe(&mut self, stream: StreamId, u: Unsubscribe) {
        let codes = u
            .filters
            .iter()
            .map(|f| {
                let had = self.state.subscriptions.remove(f).is_some();
                self.ctx.broker.unsubscribe(&self.client_id, f);
                if had {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::NO_SUBSCRIPTION_EXISTED
                }
            })
            .collect();
        self.send(
            stream,
            &Packet::UnsubAck(UnsubAck {
                pkid: u.pkid,
                codes,
                properties: Properties::default(),
            }),
        );
    }

    /// The stream for a delivery: the subscribing stream while it lives, else the oldest data stream.
    fn delivery_stream(&self, wanted: StreamId) -> Option<StreamId> {
        if self.data_order.contains(&wanted) {
            return Some(wanted);
        }
        self.data_order.first().copied()
    }

    fn can_send_more(&self) -> bool {
        !self.data_order.is_empty() && self.state.outgoing.len() < self.send_window
    }

    fn drain_stash(&mut self) {
        while self.can_send_more() {
            let Some(d) = self.stash.pop_front() else {
                break;
            };
            self.deliver(d);
        }
    }

    fn deliver(&mut self, d: Delivery) {
        let now = Instant::now();
        if d.msg.expired(now) {
            return;
        }
        let Some(stream) = self.delivery_stream(d.stream) else {
            self.stash.push_front(d);
            return;
        };
        let pkid = if d.qos == QoS::AtMostOnce {
            0
        } else {
            match self.state.alloc_pkid() {
                Some(id) => id,
                None => {
                    self.stash.push_front(d);
                    return;
                }
            }
        };
        let publish = d.msg.to_publish(&d, pkid, now);
        let (protocol, max) = (self.protocol, self.client_max_packet);
        let backlog_limit = self.ctx.config.limits.max_stream_backlog;
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if d.qos == QoS::AtMostOnce && s.writer.backlog() + s.out.len() > backlog_limit {
            self.ctx
                .broker
                .stats
                .dropped_queue_full
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let start = s.out.len();
        if let Err(e) = Packet::Publish(publish).encode(protocol, &mut s.out) {
            tracing::warn!(error = %e, "cannot encode delivery");
            return;
        }
        if s.out.len() - start > max {
            // MQTT 5 §3.1.2.11.4: discard what the client said it cannot take.
            tracing::debug!(
                size = s.out.len() - start,
                "delivery larger than the client's maximum packet size dropped"
            );
            s.out.truncate(start);
            return;
        }
        if d.qos == QoS::AtMostOnce {
            return;
        }
        self.state.outgoing.insert(
            pkid,
            Outgoing {
                delivery: Delivery { stream, ..d },
                awaiting_ack: true,
            },
        );
    }

    /// Re-sends the in-flight deliveries of a resumed session (MQTT 5 §4.4) once a stream exists.
    fn resend_inflight(&mut self) {
        if !self.resend_pending || self.data_order.is_empty() {
            return;
        }
        self.resend_pending = false;
        let now = Instant::now();
        let items: Vec<(u16, Outgoing)> = self
            .state
            .outgoing
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (pkid, o) in items {
            let Some(stream) = self.delivery_stream(o.delivery.stream) else {
                return;
            };
            let packet = if o.awaiting_ack {
                let mut p = o.delivery.msg.to_publish(&o.delivery, pkid, now);
                p.dup = true;
                Packet::Publish(p)
            } else {
                Packet::PubRel(PubResp::new(pkid, ReasonCode::SUCCESS))
            };
            self.send(stream, &packet);
        }
    }

    /// Sends the last words, hands the session back to the broker, publishes the will if due.
    async fn close(mut self, exit: Exit, control_task: tokio::task::JoinHandle<()>) {
        for t in &self.tasks {
            t.abort();
        }
        let v5 = self.protocol == Protocol::V5;
        let (code, will) = match &exit {
            Exit::Normal => (None, false),
            Exit::NormalWithWill => (None, true),
            Exit::Error(code) => (Some(*code), true),
            Exit::TakenOver(_) => (Some(ReasonCode::SESSION_TAKEN_OVER), true),
            Exit::Shutdown => (Some(ReasonCode::SERVER_SHUTTING_DOWN), true),
        };
        tracing::info!(reason = ?code.map(|c| c.to_string()), "disconnected");
        if let (true, Some(code)) = (v5, code) {
            if code != ReasonCode::UNSPECIFIED_ERROR {
                let d = Disconnect {
                    code,
                    properties: Properties::default(),
                };
                self.ctx
                    .metrics
                    .reason_sent(crate::metrics::Sent::Disconnect, code);
                self.send(CONTROL, &Packet::Disconnect(d));
            }
        }
        let will_msg = if will { self.will.take() } else { None };
        let state = std::mem::replace(&mut self.state, placeholder_state(&self.client_id));
        match exit {
            Exit::TakenOver(k) => {
                let _ = k.reply.send(state);
            }
            _ => self
                .ctx
                .broker
                .close_session(state, self.generation, self.session_expiry),
        }
        if let Some(w) = will_msg {
            self.publish_will(w);
        }
        // What this last turn queued (acks of a batch that ended in DISCONNECT, our DISCONNECT)
        // still goes out before the writers finish their streams.
        self.flush();
        self.streams.clear();
        let _ = tokio::time::timeout(Duration::from_secs(1), control_task).await;
        if let Some(conn) = &self.link.quic {
            // Closing the connection discards stream data not yet acknowledged (our DISCONNECT):
            // give the client a moment to read it and close first.
            if code.is_some() {
                let _ = tokio::time::timeout(Duration::from_millis(500), conn.closed()).await;
            }
            conn.close(
                quinn::VarInt::from_u32(u32::from(code.unwrap_or_default().0)),
                b"",
            );
        }
    }

    fn publish_will(&self, w: quicft_proto::Will) {
        let delay = w
            .properties
            .will_delay_interval
            .map_or(Duration::ZERO, |s| Duration::from_secs(u64::from(s)));
        let delay = delay.min(self.session_expiry.unwrap_or(Duration::MAX));
        let p = Publish {
            dup: false,
            qos: w.qos,
            retain: w.retain,
            topic: w.topic.clone(),
            pkid: 0,
            properties: w.properties,
            payload: w.payload,
        };
        let msg = Message::from_publish(p, w.topic, Some(self.client_id.clone()), Instant::now());
        let broker = self.ctx.broker.clone();
        if delay.is_zero() {
            broker.publish(msg);
            return;
        }
        let (client_id, generation) = (self.client_id.clone(), self.generation);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // A reconnect within the delay cancels the will (MQTT 5 §3.1.3.2.2).
            if !broker.superseded(&client_id, generation) {
                broker.publish(msg);
            }
        });
    }
}

/// An empty state to leave behind when the real one has been handed on.
fn placeholder_state(client_id: &Arc<str>) -> SessionState {
    let (_tx, rx) = mpsc::channel(1);
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
fn reserved_topic(topic: &str) -> bool {
    topic.starts_with(ftp::RESPONSE_PREFIX)
        || topic.starts_with(ftp::EVENTS_PREFIX)
        || topic.starts_with("$SYS/")
}

/// Accepts the data streams of a QUIC connection (after CONNACK: streams opened earlier wait in
/// quinn until then), and the mirrors of data streams (crate::mirror).
async fn accept_data_streams(
    conn: quinn::Connection,
    protocol: Protocol,
    max: usize,
    events: mpsc::Sender<Event>,
    io: crate::clients::Io,
) {
    let mut pairing = Pairing::new();
    // Mirror streams whose header has been read: (data stream index, mirror).
    let (headers_tx, mut headers) = mpsc::channel(mirror::MAX_MIRRORS as usize);
    loop {
        tokio::select! {
            bi = conn.accept_bi() => {
                let Ok((send, recv)) = bi else { return };
                let stream = recv.id().index();
                let (writer, _task) = stream::spawn_writer(io.wrap(send));
                if events.send(Event::Opened { stream, writer }).await.is_err() {
                    return;
                }
                stream::spawn_reader(
                    io.wrap(recv),
                    BytesMut::new(),
                    stream,
                    protocol,
                    max,
                    events.clone(),
                    Some(pairing.data_stream(stream)),
                );
            }
            uni = conn.accept_uni() => {
                let Ok(recv) = uni else { return };
                let mut recv = io.wrap(recv);
                let headers_tx = headers_tx.clone();
                tokio::spawn(async move {
                    let header = tokio::time::timeout(
                        mirror::HEADER_TIMEOUT,
                        mirror::read_header(&mut recv),
                    )
                    .await;
                    match header {
                        Ok(Ok(Ok(h))) => {
                            let _ = headers_tx.send((h.stream_id >> 2, recv)).await;
                        }
                        Ok(Ok(Err(e))) => {
                            tracing::debug!(error = %e, "mirror stream refused");
                            recv.stop(mirror::REFUSED);
                        }
                        _ => recv.stop(mirror::REFUSED),
                    }
                });
            }
            Some((index, recv)) = headers.recv() => {
                if let Some(mut refused) = pairing.mirror(index, recv) {
                    tracing::debug!(index, "mirror of a stream that ended or already has one");
                    refused.stop(mirror::REFUSED);
                }
            }
        }
    }
}
