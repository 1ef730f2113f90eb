//! The public client: connect, publish, subscribe, open channels, disconnect.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quicft_proto::topic::{TopicFilter, TopicName};
use quicft_proto::{
    Connect, Disconnect, Packet, Properties, Protocol, Publish, QoS, ReasonCode, Subscribe,
    SubscribeFilter, SubscriptionOptions, Unsubscribe,
};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::error::{CloseReason, Error, Result};
use crate::options::{ClientOptions, Transport};
use crate::session::{PendingKind, PublishOutcome, Shared};
use crate::transport::io::Outgoing;
use crate::transport::{self, ChannelKind, ChannelTx, Link};

/// A message to publish.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 properties (user properties, response topic, correlation data, expiry …).
    pub properties: Properties,
}

impl Message {
    /// A QoS 0, non-retained message.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Message {
            topic: topic.into(),
            payload: payload.into(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
        }
    }

    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    pub fn properties(mut self, properties: Properties) -> Self {
        self.properties = properties;
        self
    }
}

/// What the connection turned out to be.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub transport: Transport,
    pub remote: SocketAddr,
    pub protocol: Protocol,
    /// Ours, or the one the server assigned.
    pub client_id: String,
    pub session_present: bool,
    /// Seconds between PINGREQs in use (the server may override ours).
    pub keep_alive: u16,
    /// QoS 1/2 publishes the server accepts in flight.
    pub receive_maximum: u16,
    pub max_packet_size: usize,
    pub max_qos: QoS,
    pub retain_available: bool,
}

/// A connected MQTT client. Cheap to clone; all clones share the connection, which closes when
/// [`Client::disconnect`] is called or the last clone (and every [`Channel`] and [`Subscription`])
/// is dropped.
///
/// Calls may run concurrently from many tasks: publishes are pipelined, each waiting only for its
/// own acknowledgement, up to the server's Receive Maximum in flight.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    link: Link,
    control: ChannelTx,
    telemetry: ChannelTx,
    info: ConnectionInfo,
    subscription_queue: usize,
    span: tracing::Span,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Without a DISCONNECT, the server treats this as a lost connection (will message sent).
        self.shared.close(CloseReason::Local);
    }
}

impl Client {
    /// Connects, sends CONNECT and waits for a successful CONNACK, all within
    /// `options.connect_timeout`.
    pub async fn connect(options: ClientOptions) -> Result<Client> {
        validate(&options)?;
        let span = tracing::info_span!(
            "mqtt",
            client_id = %options.client_id,
            transport = %options.transport,
        );
        let connect = connect_packet(&options);
        let timeout = options.connect_timeout;
        let est = tokio::time::timeout(timeout, transport::establish(&options, &connect))
            .instrument(span.clone())
            .await
            .map_err(|_| Error::ConnectTimeout(timeout))??;
        let transport::Established {
            link,
            shared,
            control,
            connack,
            remote,
        } = est;
        let telemetry = link
            .open_channel(&shared, ChannelKind::Telemetry)
            .instrument(span.clone())
            .await?;

        let keep_alive = connack
            .properties
            .server_keep_alive
            .unwrap_or(options.keep_alive);
        if keep_alive > 0 {
            let period = Duration::from_secs(u64::from(keep_alive));
            tokio::spawn(
                keepalive(shared.clone(), control.clone(), period).instrument(span.clone()),
            );
        }
        let client_id = connack
            .properties
            .assigned_client_identifier
            .clone()
            .unwrap_or_else(|| options.client_id.clone());
        let info = ConnectionInfo {
            transport: options.transport,
            remote,
            protocol: options.protocol,
            client_id,
            session_present: connack.session_present,
            keep_alive,
            receive_maximum: shared.limits.receive_maximum,
            max_packet_size: shared.limits.max_packet_size,
            max_qos: shared.limits.max_qos,
            retain_available: shared.limits.retain_available,
        };
        if options.client_id.is_empty() {
            span.record("client_id", info.client_id.as_str());
        }
        tracing::info!(parent: &span, %remote, session_present = info.session_present, "connected");
        Ok(Client {
            inner: Arc::new(Inner {
                shared,
                link,
                control,
                telemetry,
                info,
                subscription_queue: options.subscription_queue.max(1),
                span,
            }),
        })
    }

    pub fn info(&self) -> &ConnectionInfo {
        &self.inner.info
    }

    /// Publishes on the telemetry channel and waits for the PUBACK (QoS 1) or PUBCOMP (QoS 2); for
    /// QoS 0, until the message is queued. A refusal by the server is an `Ok` outcome with its
    /// reason code: check [`PublishOutcome::is_success`].
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        qos: QoS,
    ) -> Result<PublishOutcome> {
        self.telemetry().publish(topic, payload, qos).await
    }

    /// Publishes a [`Message`] (retain flag, properties) on the telemetry channel.
    pub async fn send(&self, message: Message) -> Result<PublishOutcome> {
        self.telemetry().send(message).await
    }

    /// Subscribes on the telemetry channel; messages arrive through [`Subscription::recv`].
    pub async fn subscribe(&self, filter: impl Into<String>, qos: QoS) -> Result<Subscription> {
        self.telemetry().subscribe(filter, qos).await
    }

    /// Subscribes with full MQTT 5 options (no local, retain handling …).
    pub async fn subscribe_with(
        &self,
        filter: impl Into<String>,
        options: SubscriptionOptions,
    ) -> Result<Subscription> {
        self.telemetry().subscribe_with(filter, options).await
    }

    /// The telemetry channel every `Client::publish`/`subscribe` uses.
    pub fn telemetry(&self) -> Channel {
        Channel {
            client: self.clone(),
            tx: self.inner.telemetry.clone(),
        }
    }

    /// Opens another channel: over QUIC a new stream with the kind's priority (e.g. one per file
    /// upload, so that a stalled upload never blocks telemetry), over TCP a handle on the kind's
    /// queue of the shared connection.
    pub async fn open_channel(&self, kind: ChannelKind) -> Result<Channel> {
        if kind == ChannelKind::Control {
            return Err(Error::InvalidOptions(
                "the control channel is the client's own".into(),
            ));
        }
        let tx = self
            .inner
            .link
            .open_channel(&self.inner.shared, kind)
            .instrument(self.inner.span.clone())
            .await?;
        Ok(Channel {
            client: self.clone(),
            tx,
        })
    }

    /// Sends everything queued, then DISCONNECT (normal, no will message), and closes the
    /// connection. Every clone, channel and subscription sees the connection closed afterwards.
    pub async fn disconnect(&self) -> Result<()> {
        let shared = &self.inner.shared;
        if let Some(reason) = shared.close_reason() {
            return Err(Error::ConnectionClosed(reason));
        }
        let packet = Packet::Disconnect(Disconnect {
            code: ReasonCode::NORMAL_DISCONNECTION,
            properties: Properties::default(),
        });
        let bytes = shared.encode(&packet)?;
        self.inner
            .link
            .shutdown(shared, &self.inner.control, bytes)
            .instrument(self.inner.span.clone())
            .await;
        Ok(())
    }

    /// Why the connection ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.inner.shared.close_reason()
    }

    /// Waits until the connection ends and tells why.
    pub async fn closed(&self) -> CloseReason {
        self.inner.shared.cancel.cancelled().await;
        self.inner
            .shared
            .close_reason()
            .unwrap_or(CloseReason::Local)
    }
}

/// A channel of the connection to publish and subscribe on (see [`Client::open_channel`]). Clones
/// share the channel; over QUIC its stream is finished when the last clone, subscription and
/// pending flow on it are gone.
#[derive(Clone)]
pub struct Channel {
    client: Client,
    tx: ChannelTx,
}

impl Channel {
    pub fn kind(&self) -> ChannelKind {
        self.tx.kind
    }

    /// See [`Client::publish`].
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        qos: QoS,
    ) -> Result<PublishOutcome> {
        self.send(Message::new(topic, payload).qos(qos)).await
    }

    /// See [`Client::send`].
    pub async fn send(&self, message: Message) -> Result<PublishOutcome> {
        let shared = &self.client.inner.shared;
        TopicName::parse(&message.topic).map_err(|e| Error::InvalidTopic {
            topic: message.topic.clone(),
            why: e.to_string(),
        })?;
        if message.qos > shared.limits.max_qos {
            return Err(Error::QosNotSupported {
                asked: message.qos,
                max: shared.limits.max_qos,
            });
        }
        if message.retain && !shared.limits.retain_available {
            return Err(Error::RetainNotSupported);
        }
        let mut publish = Publish {
            dup: false,
            qos: message.qos,
            retain: message.retain,
            topic: message.topic,
            pkid: 0,
            properties: message.properties,
            payload: message.payload,
        };
        if publish.qos == QoS::AtMostOnce {
            let bytes = shared.encode(&Packet::Publish(publish))?;
            self.queue(bytes).await?;
            return Ok(PublishOutcome::sent());
        }

        // Receive Maximum: wait for a slot before taking a packet id.
        let permit = shared
            .inflight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| shared.closed_error())?;
        let (done, outcome) = oneshot::channel();
        let kind = PendingKind::Publish {
            qos: publish.qos,
            done,
            rec: None,
        };
        let pkid = shared.register(&self.tx, kind, Some(permit))?;
        let guard = Unsent {
            shared,
            pkid: Some(pkid),
        };
        publish.pkid = pkid;
        let bytes = shared.encode(&Packet::Publish(publish))?;
        self.queue(bytes).await?;
        guard.sent();
        outcome.await.map_err(|_| shared.closed_error())
    }

    /// See [`Client::subscribe`].
    pub async fn subscribe(&self, filter: impl Into<String>, qos: QoS) -> Result<Subscription> {
        self.subscribe_with(
            filter,
            SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
        )
        .await
    }

    /// See [`Client::subscribe_with`].
    pub async fn subscribe_with(
        &self,
        filter: impl Into<String>,
        options: SubscriptionOptions,
    ) -> Result<Subscription> {
        let filter = filter.into();
        let shared = &self.client.inner.shared;
        let parsed = TopicFilter::parse(&filter).map_err(|e| Error::InvalidTopic {
            topic: filter.clone(),
            why: e.to_string(),
        })?;
        let (tx, rx) = mpsc::channel(self.client.inner.subscription_queue);
        let (done, suback) = oneshot::channel();
        let route = shared.register_subscription(&self.tx, parsed, tx, done)?;
        let guard = Unsent {
            shared,
            pkid: Some(route.pkid),
        };
        let mut properties = Properties::default();
        properties.subscription_identifiers.extend(route.sub_id);
        let packet = Packet::Subscribe(Subscribe {
            pkid: route.pkid,
            filters: vec![SubscribeFilter {
                filter: filter.clone(),
                options,
            }],
            properties,
        });
        let queued = match shared.encode(&packet) {
            Ok(bytes) => self.queue(bytes).await,
            Err(e) => Err(e),
        };
        if let Err(e) = queued {
            shared.remove_route(route.key);
            return Err(e);
        }
        guard.sent();
        let suback = suback.await.map_err(|_| shared.closed_error())?;
        let code = suback
            .codes
            .first()
            .copied()
            .unwrap_or(ReasonCode::UNSPECIFIED_ERROR);
        if code.is_error() {
            shared.remove_route(route.key);
            return Err(Error::SubscribeRefused { filter, code });
        }
        let granted = QoS::from_u8(code.0).unwrap_or(options.qos);
        Ok(Subscription {
            channel: self.clone(),
            filter,
            route: route.key,
            granted,
            rx,
        })
    }

    async fn queue(&self, bytes: Bytes) -> Result<()> {
        self.tx
            .data
            .send(Outgoing::Packet(bytes))
            .await
            .map_err(|_| self.client.inner.shared.closed_error())
    }
}

/// Removes a registered flow whose packet never made it into a queue (error or cancellation).
struct Unsent<'a> {
    shared: &'a Shared,
    pkid: Option<u16>,
}

impl Unsent<'_> {
    fn sent(mut self) {
        self.pkid = None;
    }
}

impl Drop for Unsent<'_> {
    fn drop(&mut self) {
        if let Some(pkid) = self.pkid {
            self.shared.unregister(pkid);
        }
    }
}

/// Messages matching one subscription. QoS 1/2 deliveries are acknowledged once queued here; keep
/// calling [`recv`](Subscription::recv): when the queue is full the connection stops reading, which
/// in time stalls the server (and over TCP, PINGRESPs with it). Dropping it stops the routing
/// locally; [`unsubscribe`](Subscription::unsubscribe) also tells the server.
pub struct Subscription {
    channel: Channel,
    filter: String,
    route: u64,
    granted: QoS,
    rx: mpsc::Receiver<Publish>,
}

impl Subscription {
    /// The next message; an error once the connection (or, over QUIC, the channel) is gone.
    pub async fn recv(&mut self) -> Result<Publish> {
        match self.rx.recv().await {
            Some(p) => Ok(p),
            None => Err(self.channel.client.inner.shared.closed_error()),
        }
    }

    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// The QoS the server granted.
    pub fn granted_qos(&self) -> QoS {
        self.granted
    }

    /// Sends UNSUBSCRIBE and waits for the UNSUBACK; returns its reason code (always success under
    /// 3.1.1, which has none).
    pub async fn unsubscribe(self) -> Result<ReasonCode> {
        let shared = &self.channel.client.inner.shared;
        shared.remove_route(self.route);
        let (done, unsuback) = oneshot::channel();
        let pkid = shared.register(&self.channel.tx, PendingKind::Unsubscribe { done }, None)?;
        let guard = Unsent {
            shared,
            pkid: Some(pkid),
        };
        let packet = Packet::Unsubscribe(Unsubscribe {
            pkid,
            filters: vec![self.filter.clone()],
            properties: Properties::default(),
        });
        let bytes = shared.encode(&packet)?;
        self.channel.queue(bytes).await?;
        guard.sent();
        let ack = unsuback.await.map_err(|_| shared.closed_error())?;
        Ok(ack.codes.first().copied().unwrap_or(ReasonCode::SUCCESS))
    }
}

/// Sends PINGREQ every `period`; a PINGREQ still unanswered when the next is due ends the
/// connection. Over QUIC it goes on the control stream, which no file data can hold up.
async fn keepalive(shared: Arc<Shared>, control: ChannelTx, period: Duration) {
    let Ok(ping) = shared.encode(&Packet::PingReq) else {
        return;
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !shared.ping_sent() {
            shared.close(CloseReason::KeepAliveTimeout);
            return;
        }
        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return,
            sent = control.data.send(Outgoing::Packet(ping.clone())) => if sent.is_err() { return },
        }
    }
}

fn validate(o: &ClientOptions) -> Result<()> {
    if o.host.is_empty() {
        return Err(Error::InvalidOptions("no server host".into()));
    }
    if o.protocol == Protocol::V311 && o.client_id.is_empty() && !o.clean_start {
        return Err(Error::InvalidOptions(
            "MQTT 3.1.1 needs a client id to resume a session (or clean start)".into(),
        ));
    }
    if o.protocol == Protocol::V311 && o.password.is_some() && o.username.is_none() {
        return Err(Error::InvalidOptions(
            "MQTT 3.1.1 allows a password only with a username".into(),
        ));
    }
    Ok(())
}

fn connect_packet(o: &ClientOptions) -> Packet {
    let mut properties = Properties::default();
    if o.protocol == Protocol::V5 {
        properties.session_expiry_interval = o.session_expiry.filter(|&s| s > 0);
        properties.receive_maximum = Some(o.receive_maximum.max(1)).filter(|&r| r != u16::MAX);
        properties.maximum_packet_size = Some(o.max_incoming_packet_size);
    }
    Packet::Connect(Connect {
        protocol: o.protocol,
        clean_start: o.clean_start,
        keep_alive: o.keep_alive,
        client_id: o.client_id.clone(),
        will: None,
        username: o.username.clone(),
        password: o.password.clone(),
        properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v311_without_id_must_start_clean() {
        let mut o = ClientOptions::new("localhost", Transport::Tcp);
        o.protocol = Protocol::V311;
        o.clean_start = false;
        assert!(matches!(validate(&o), Err(Error::InvalidOptions(_))));
        o.client_id = "dev-1".into();
        assert!(validate(&o).is_ok());
    }

    #[test]
    fn connect_carries_v5_limits_only_under_v5() {
        let mut o = ClientOptions::new("localhost", Transport::Tcp);
        o.session_expiry = Some(60);
        let Packet::Connect(c) = connect_packet(&o) else {
            panic!("CONNECT expected")
        };
        assert_eq!(c.properties.session_expiry_interval, Some(60));
        assert_eq!(c.properties.receive_maximum, Some(o.receive_maximum));
        o.protocol = Protocol::V311;
        let Packet::Connect(c) = connect_packet(&o) else {
            panic!("CONNECT expected")
        };
        assert!(c.properties.is_empty());
    }
}
