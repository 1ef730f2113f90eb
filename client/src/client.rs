//! The public client: connect (QUIC first, TLS/TCP fallback), reconnect with backoff, publish,
//! subscribe, open channels, disconnect.
//!
//! ```text
//!  Client ──► Core ──► State: Up(Conn) | Down{attempt} | Closed(reason)      (a watch)
//!              │         ▲
//!              │         └── supervisor task: waits for the Conn to end, backs off, reconnects
//!              ├── subscriptions (filter, options, id, queue): restored on every new Conn
//!              └── channel slots: a Channel opens its stream on the current Conn when first used
//! ```
//! A [`Conn`] is one connection (one [`Shared`] session state, one transport). Everything that must
//! outlive a connection (subscriptions, channels, uploads) lives in [`Core`] and re-attaches to the
//! next one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use quicft_proto::topic::{TopicFilter, TopicName};
use quicft_proto::{
    Connect, Disconnect, Packet, Properties, Protocol, Publish, QoS, ReasonCode, Subscribe,
    SubscribeFilter, SubscriptionOptions, Unsubscribe,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::channel::{ChannelKind, ChannelTx, Outgoing};
use crate::error::{CloseReason, Error, Result};
use crate::options::{ClientOptions, Transport};
use crate::session::{PendingKind, PublishOutcome, RouteSpec, Shared, MAX_SUBSCRIPTION_ID};
use crate::transport::{self, Link};

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
    /// The transport in use: with a fallback configured, the one that won the race.
    pub transport: Transport,
    pub remote: SocketAddr,
    pub protocol: Protocol,
    /// Ours, or the one the server assigned (kept for every reconnect).
    pub client_id: String,
    pub session_present: bool,
    /// Seconds between PINGREQs in use (the server may override ours).
    pub keep_alive: u16,
    /// QoS 1/2 publishes the server accepts in flight.
    pub receive_maximum: u16,
    pub max_packet_size: usize,
    pub max_qos: QoS,
    pub retain_available: bool,
    /// Why the first-choice transport was not used, when the fallback connected instead (e.g.
    /// "quic did not answer within 300 ms": UDP blocked on this network).
    pub fell_back: Option<String>,
}

/// Where the client stands; see [`Client::state`] and [`Client::state_changes`].
#[derive(Debug, Clone)]
pub enum ConnectionState {
    Connected(ConnectionInfo),
    /// The connection was lost; `attempt` reconnects have failed since, the last with `error`.
    Reconnecting {
        attempt: u32,
        error: String,
    },
    /// For good: [`Client::disconnect`], every handle dropped, a refusal that retrying cannot fix,
    /// or reconnecting switched off.
    Closed(CloseReason),
}

/// A connected MQTT client. Cheap to clone; all clones share the connection, which closes when
/// [`Client::disconnect`] is called or the last clone (and every [`Channel`], [`Subscription`] and
/// running upload) is dropped.
///
/// With [`ClientOptions::reconnect`] set (the default) a lost connection is re-established in the
/// background with backoff; subscriptions are restored and channels re-open their streams on the
/// new connection. An operation that was waiting for an acknowledgement when the connection
/// dropped fails with [`Error::ConnectionClosed`]; one started while reconnecting waits for the
/// new connection.
///
/// Calls may run concurrently from many tasks: publishes are pipelined, each waiting only for its
/// own acknowledgement, up to the server's Receive Maximum in flight.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Handle>,
}

/// Dropping the last handle ends the client (and with it the supervisor and the connection).
struct Handle {
    core: Arc<Core>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Without a DISCONNECT, the server treats this as a lost connection (will message sent).
        self.core.stop.cancel();
    }
}

/// Connection state.
#[derive(Clone)]
pub(crate) enum State {
    Up(Arc<Conn>),
    Down { attempt: u32, error: String },
    Closed(CloseReason),
}

/// One established connection.
pub(crate) struct Conn {
    /// Counts connections of this client from 1; a channel opened on an older one is stale.
    pub(crate) generation: u64,
    pub(crate) shared: Arc<Shared>,
    link: Link,
    control: ChannelTx,
    telemetry: ChannelTx,
    pub(crate) info: ConnectionInfo,
    /// Becomes true (or its sender goes away) once the subscriptions the server forgot have been
    /// made again on this connection; see [`Core::subscriptions_restored`].
    subs_restored: watch::Receiver<bool>,
}

/// What outlives a connection.
pub(crate) struct Core {
    options: ClientOptions,
    /// The client id in use: the configured one, or the one the server assigned at the first
    /// connect (a transfer is keyed by client id, so reconnects must keep it).
    client_id: Mutex<String>,
    state: watch::Sender<State>,
    last_info: Mutex<Option<ConnectionInfo>>,
    subs: Mutex<Subs>,
    /// Cancelled when the client ends: disconnect, last handle dropped.
    stop: CancellationToken,
    /// `disconnect()` is under way: the connection ending now is not a loss to recover from.
    closing: AtomicBool,
    reconnects: AtomicU32,
    generations: AtomicU64,
    telemetry: Arc<Slot>,
    /// Answers to file-transfer commands (`$file-response/…`), see `ft.rs`.
    pub(crate) ft: crate::responses::Responses,
    span: tracing::Span,
}

/// Subscriptions the client holds, restored on every new connection.
#[derive(Default)]
struct Subs {
    next_key: u64,
    next_id: u32,
    list: Vec<SubEntry>,
}

struct SubEntry {
    key: u64,
    sub_id: u32,
    filter: String,
    parsed: TopicFilter,
    options: SubscriptionOptions,
    tx: mpsc::Sender<Publish>,
}

impl Subs {
    fn alloc(&mut self) -> (u64, u32) {
        self.next_key += 1;
        self.next_id = if self.next_id >= MAX_SUBSCRIPTION_ID {
            1
        } else {
            self.next_id + 1
        };
        (self.next_key, self.next_id)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Core {
    fn set(&self, state: State) {
        self.state.send_replace(state);
    }

    pub(crate) fn client_id(&self) -> String {
        lock(&self.client_id).clone()
    }

    pub(crate) fn reconnects(&self) -> u32 {
        self.reconnects.load(Ordering::Relaxed)
    }

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        match &*self.state.borrow() {
            State::Closed(r) => Some(r.clone()),
            _ => None,
        }
    }

    /// The client has ended: every subscription queue closes, every waiter gets `reason`.
    fn finish(&self, reason: CloseReason) {
        tracing::debug!(parent: &self.span, %reason, "client closed");
        self.set(State::Closed(reason));
        lock(&self.subs).list.clear();
        self.ft.clear();
    }

    /// The current connection; while reconnecting, waits for the next one.
    pub(crate) async fn conn(&self) -> Result<Arc<Conn>> {
        let mut rx = self.state.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                State::Up(c) if !c.shared.cancel.is_cancelled() => return Ok(c.clone()),
                State::Closed(r) => return Err(Error::ConnectionClosed(r.clone())),
                _ => {}
            }
            if rx.changed().await.is_err() {
                return Err(Error::ConnectionClosed(CloseReason::Local));
            }
        }
    }

    /// Waits (a bounded time) until the subscriptions of the current connection are back in place.
    ///
    /// After a reconnect on which the server forgot the session they are made again in the
    /// background; a command whose answer comes on one of them (a file transfer's `status` on
    /// `$file-response/…`) must not overtake its SUBSCRIBE, or the answer is published to no one.
    /// Over QUIC nothing orders two streams, so this wait is the only order there is.
    pub(crate) async fn subscriptions_restored(&self) {
        let Some(conn) = self.conn_now() else { return };
        let mut rx = conn.subs_restored.clone();
        let _ = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|done| *done)).await;
    }

    /// The current connection if there is one now.
    pub(crate) fn conn_now(&self) -> Option<Arc<Conn>> {
        match &*self.state.borrow() {
            State::Up(c) if !c.shared.cancel.is_cancelled() => Some(c.clone()),
            _ => None,
        }
    }

    /// One connection attempt: transport(s), CONNECT/CONNACK, telemetry stream, subscriptions.
    async fn connect_once(self: &Arc<Core>, reconnect: bool) -> Result<Arc<Conn>> {
        let mut options = self.options.clone();
        options.client_id = self.client_id();
        if reconnect && options.protocol == Protocol::V5 {
            // Ask for the session back; if the server kept it, its subscriptions come with it.
            options.clean_start = false;
        }
        let connect = connect_packet(&options);
        let timeout = options.connect_timeout;
        let est = tokio::time::timeout(timeout, transport::establish(&options, &connect))
            .instrument(self.span.clone())
            .await
            .map_err(|_| Error::ConnectTimeout(timeout))??;
        let transport::Established {
            link,
            shared,
            control,
            connack,
            remote,
            transport,
            fell_back,
        } = est;
        let opened = link
            .open_channel(&shared, ChannelKind::Telemetry)
            .instrument(self.span.clone())
            .await;
        let telemetry = match opened {
            Ok(t) => t,
            Err(e) => {
                shared.close(CloseReason::Local);
                return Err(e);
            }
        };

        // Deliveries for subscriptions of a resumed session may come before any SUBSCRIBE: route
        // them now. Over QUIC the server sends them on the oldest data stream it knows, and a
        // stream is invisible to it until it carries a byte: announce the telemetry stream with a
        // PINGREQ (answered on any stream) so that it is that oldest stream.
        let subs: Vec<(
            RouteSpec,
            String,
            SubscriptionOptions,
            mpsc::Sender<Publish>,
        )> = {
            let mut subs = lock(&self.subs);
            subs.list.retain(|e| !e.tx.is_closed());
            subs.list
                .iter()
                .map(|e| {
                    let spec = RouteSpec {
                        key: e.key,
                        sub_id: e.sub_id,
                        filter: e.parsed.clone(),
                    };
                    (spec, e.filter.clone(), e.options, e.tx.clone())
                })
                .collect()
        };
        for (spec, _, _, tx) in &subs {
            let spec = RouteSpec {
                key: spec.key,
                sub_id: spec.sub_id,
                filter: spec.filter.clone(),
            };
            shared.restore_route(telemetry.id, spec, tx.clone());
        }
        if transport == Transport::Quic {
            if let Ok(ping) = shared.encode(&Packet::PingReq) {
                let _ = telemetry.data.send(Outgoing::Packet(ping)).await;
            }
        }

        let keep_alive = connack
            .properties
            .server_keep_alive
            .unwrap_or(options.keep_alive);
        if keep_alive > 0 {
            let period = Duration::from_secs(u64::from(keep_alive));
            tokio::spawn(
                keepalive(shared.clone(), control.clone(), period).instrument(self.span.clone()),
            );
        }
        let client_id = connack
            .properties
            .assigned_client_identifier
            .clone()
            .unwrap_or_else(|| options.client_id.clone());
        *lock(&self.client_id) = client_id.clone();
        let info = ConnectionInfo {
            transport,
            remote,
            protocol: options.protocol,
            client_id,
            session_present: connack.session_present,
            keep_alive,
            receive_maximum: shared.limits.receive_maximum,
            max_packet_size: shared.limits.max_packet_size,
            max_qos: shared.limits.max_qos,
            retain_available: shared.limits.retain_available,
            fell_back,
        };
        if options.client_id.is_empty() {
            self.span.record("client_id", info.client_id.as_str());
        }
        self.span
            .record("transport", tracing::field::display(transport));
        tracing::info!(parent: &self.span, %remote, %transport, session_present = info.session_present, reconnect, "connected");
        *lock(&self.last_info) = Some(info.clone());
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let (restored, subs_restored) = watch::channel(false);
        let conn = Arc::new(Conn {
            generation,
            shared,
            link,
            control,
            telemetry,
            info,
            subs_restored,
        });
        if conn.info.session_present || subs.is_empty() {
            restored.send_replace(true);
        } else {
            // The server forgot them (clean start, expired session): subscribe again, in the
            // background so that the application gets the connection at once.
            let conn2 = conn.clone();
            let core = Arc::downgrade(self);
            tokio::spawn(
                async move {
                    for (spec, filter, options, tx) in subs {
                        let Some(core) = core.upgrade() else { return };
                        let chan = conn2.telemetry.clone();
                        let r = core
                            .subscribe_on(&conn2, &chan, spec, &filter, options, tx)
                            .await;
                        if let Err(e) = r {
                            tracing::warn!(%filter, %e, "cannot restore subscription");
                        }
                    }
                    restored.send_replace(true);
                }
                .instrument(self.span.clone()),
            );
        }
        Ok(conn)
    }

    /// Sends SUBSCRIBE for one route on `chan` and waits for its SUBACK; returns the granted QoS.
    async fn subscribe_on(
        &self,
        conn: &Conn,
        chan: &ChannelTx,
        spec: RouteSpec,
        filter: &str,
        options: SubscriptionOptions,
        tx: mpsc::Sender<Publish>,
    ) -> Result<QoS> {
        let shared = &conn.shared;
        let key = spec.key;
        let (done, suback) = oneshot::channel();
        let route = shared.register_subscription(chan, spec, tx, done)?;
        let guard = Unsent {
            shared,
            pkid: Some(route.pkid),
        };
        let mut properties = Properties::default();
        properties.subscription_identifiers.extend(route.sub_id);
        let packet = Packet::Subscribe(Subscribe {
            pkid: route.pkid,
            filters: vec![SubscribeFilter {
                filter: filter.to_owned(),
                options,
            }],
            properties,
        });
        let queued = match shared.encode(&packet) {
            Ok(bytes) => chan
                .data
                .send(Outgoing::Packet(bytes))
                .await
                .map_err(|_| shared.closed_error()),
            Err(e) => Err(e),
        };
        if let Err(e) = queued {
            shared.remove_route(key);
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
            shared.remove_route(key);
            return Err(Error::SubscribeRefused {
                filter: filter.to_owned(),
                code,
            });
        }
        Ok(QoS::from_u8(code.0).unwrap_or(options.qos))
    }

    /// Subscribes on `chan` of the current connection and records the subscription, so that it is
    /// restored on every reconnect. Returns its key, granted QoS and queue.
    pub(crate) async fn subscribe(
        &self,
        conn: &Conn,
        chan: &ChannelTx,
        filter: &str,
        options: SubscriptionOptions,
        queue: usize,
    ) -> Result<(u64, QoS, mpsc::Receiver<Publish>)> {
        let parsed = TopicFilter::parse(filter).map_err(|e| Error::InvalidTopic {
            topic: filter.to_owned(),
            why: e.to_string(),
        })?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        let (key, sub_id) = lock(&self.subs).alloc();
        let spec = RouteSpec {
            key,
            sub_id,
            filter: parsed.clone(),
        };
        let granted = self
            .subscribe_on(conn, chan, spec, filter, options, tx.clone())
            .await?;
        lock(&self.subs).list.push(SubEntry {
            key,
            sub_id,
            filter: filter.to_owned(),
            parsed,
            options,
            tx,
        });
        Ok((key, granted, rx))
    }

    fn forget_subscription(&self, key: u64) {
        lock(&self.subs).list.retain(|e| e.key != key);
        if let Some(conn) = self.conn_now() {
            conn.shared.remove_route(key);
        }
    }

    /// The channel every `Client::publish` uses, on the current connection.
    pub(crate) async fn telemetry_tx(&self) -> Result<(Arc<Conn>, ChannelTx)> {
        let conn = self.conn().await?;
        let tx = conn.telemetry.clone();
        Ok((conn, tx))
    }
}

/// Ends the client for good, or not, after the connection ended with `reason`.
fn should_reconnect(reason: &CloseReason) -> bool {
    match reason {
        CloseReason::Local => false,
        CloseReason::ServerDisconnect { code, .. } => !matches!(
            *code,
            // Another connection with our client id: coming back would throw it out in turn.
            ReasonCode::SESSION_TAKEN_OVER
                | ReasonCode::NOT_AUTHORIZED
                | ReasonCode::BANNED
                | ReasonCode::BAD_AUTHENTICATION_METHOD
                | ReasonCode::BAD_USER_NAME_OR_PASSWORD
        ),
        CloseReason::KeepAliveTimeout | CloseReason::Protocol(_) | CloseReason::Transport(_) => {
            true
        }
    }
}

/// A failed attempt that retrying will not fix.
fn is_permanent(e: &Error) -> bool {
    match e {
        Error::ConnectionRefused { code, .. } => matches!(
            *code,
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
                | ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
                | ReasonCode::BAD_USER_NAME_OR_PASSWORD
                | ReasonCode::NOT_AUTHORIZED
                | ReasonCode::BANNED
                | ReasonCode::BAD_AUTHENTICATION_METHOD
        ),
        Error::InvalidOptions(_) | Error::ReadFile { .. } | Error::BadPem(_) => true,
        _ => false,
    }
}

/// Watches the connection; when it ends, reconnects with backoff (or closes the client).
async fn supervise(core: Arc<Core>, mut conn: Arc<Conn>) {
    loop {
        tokio::select! {
            _ = conn.shared.cancel.cancelled() => {}
            _ = core.stop.cancelled() => {
                conn.shared.close(CloseReason::Local);
                core.finish(CloseReason::Local);
                return;
            }
        }
        let reason = conn.shared.close_reason().unwrap_or(CloseReason::Local);
        drop(conn);
        if core.closing.load(Ordering::Acquire) || core.stop.is_cancelled() {
            core.finish(CloseReason::Local);
            return;
        }
        let policy = match &core.options.reconnect {
            Some(p) if should_reconnect(&reason) => p.clone(),
            _ => {
                core.finish(reason);
                return;
            }
        };
        tracing::info!(parent: &core.span, %reason, "connection lost; reconnecting");
        let mut attempt = 0u32;
        let mut error = reason.to_string();
        conn = loop {
            core.set(State::Down {
                attempt,
                error: error.clone(),
            });
            let wait = policy.delay(attempt, rand::random::<f64>());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = core.stop.cancelled() => {
                    core.finish(CloseReason::Local);
                    return;
                }
            }
            let attempted = tokio::select! {
                r = core.connect_once(true) => r,
                _ = core.stop.cancelled() => {
                    core.finish(CloseReason::Local);
                    return;
                }
            };
            match attempted {
                Ok(c) => break c,
                Err(e) if is_permanent(&e) => {
                    tracing::warn!(parent: &core.span, %e, "reconnect refused; giving up");
                    core.finish(CloseReason::Transport(e.to_string()));
                    return;
                }
                Err(e) => {
                    tracing::debug!(parent: &core.span, attempt, %e, "reconnect failed");
                    error = e.to_string();
                    attempt = attempt.saturating_add(1);
                    if policy.max_attempts.is_some_and(|m| attempt >= m) {
                        core.finish(CloseReason::Transport(error));
                        return;
                    }
                }
            }
        };
        core.reconnects.fetch_add(1, Ordering::Relaxed);
        core.set(State::Up(conn.clone()));
    }
}

impl Client {
    /// Connects, sends CONNECT and waits for a successful CONNACK, all within
    /// `options.connect_timeout`; with `options.fallback` set, QUIC and TLS/TCP race (see
    /// [`ClientOptions::fallback`]). This first connection is not retried: its error is returned.
    /// Once connected, the client subscribes to its `$file-response/{clientId}` topic in the
    /// background (uploads need it).
    pub async fn connect(options: ClientOptions) -> Result<Client> {
        validate(&options)?;
        let span = tracing::info_span!(
            "mqtt",
            client_id = %options.client_id,
            transport = tracing::field::Empty,
        );
        let (state, _) = watch::channel(State::Down {
            attempt: 0,
            error: "connecting".into(),
        });
        let core = Arc::new(Core {
            client_id: Mutex::new(options.client_id.clone()),
            state,
            last_info: Mutex::new(None),
            subs: Mutex::default(),
            stop: CancellationToken::new(),
            closing: AtomicBool::new(false),
            reconnects: AtomicU32::new(0),
            generations: AtomicU64::new(0),
            telemetry: Arc::new(Slot::new(ChannelKind::Telemetry, true)),
            ft: crate::responses::Responses::default(),
            span,
            options,
        });
        let conn = core.connect_once(false).await?;
        core.set(State::Up(conn.clone()));
        tokio::spawn(supervise(core.clone(), conn));
        // The file-transfer response subscription is made now, beside whatever the application
        // does first, so that the first upload does not wait a round trip for its SUBACK. A failure
        // is not kept: the first command tries again and reports it.
        let eager = core.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::responses::Responses::ensure_subscribed(&eager).await {
                tracing::debug!(%e, "file-transfer responses: subscription deferred");
            }
        });
        Ok(Client {
            inner: Arc::new(Handle { core }),
        })
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.inner.core
    }

    /// The current connection, or the last one while reconnecting.
    pub fn info(&self) -> ConnectionInfo {
        let info = lock(&self.core().last_info).clone();
        // Set by the first successful connect, before any Client exists.
        info.unwrap_or_else(|| ConnectionInfo {
            transport: self.core().options.transport,
            remote: SocketAddr::from(([0, 0, 0, 0], 0)),
            protocol: self.core().options.protocol,
            client_id: self.core().client_id(),
            session_present: false,
            keep_alive: 0,
            receive_maximum: 0,
            max_packet_size: 0,
            max_qos: QoS::AtMostOnce,
            retain_available: false,
            fell_back: None,
        })
    }

    /// The client id in use (the server's assigned one if we gave none).
    pub fn client_id(&self) -> String {
        self.core().client_id()
    }

    /// Connected, reconnecting or closed.
    pub fn state(&self) -> ConnectionState {
        public_state(&self.core().state.borrow())
    }

    /// Every change of [`Client::state`] from now on.
    pub fn state_changes(&self) -> StateChanges {
        StateChanges {
            rx: self.core().state.subscribe(),
        }
    }

    /// How many times the connection was lost and re-established.
    pub fn reconnects(&self) -> u32 {
        self.core().reconnects()
    }

    /// The largest UDP payload the current QUIC path carries as far as path-MTU discovery has found
    /// (quinn's `current_mtu`; see [`crate::QuicOptions::mtu_upper_bound`]). `None` over TCP or
    /// while not connected.
    pub fn path_mtu(&self) -> Option<u16> {
        self.core().conn_now()?.link.path_mtu()
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
            slot: self.core().telemetry.clone(),
        }
    }

    /// Opens another channel: over QUIC a new stream with the kind's priority (e.g. one per file
    /// upload, so that a stalled upload never blocks telemetry), over TCP a handle on the kind's
    /// queue of the shared connection. After a reconnect the channel opens a new stream when next
    /// used.
    pub async fn open_channel(&self, kind: ChannelKind) -> Result<Channel> {
        if kind == ChannelKind::Control {
            return Err(Error::InvalidOptions(
                "the control channel is the client's own".into(),
            ));
        }
        let channel = Channel {
            client: self.clone(),
            slot: Arc::new(Slot::new(kind, false)),
        };
        channel.tx().await?;
        Ok(channel)
    }

    /// Sends everything queued, then DISCONNECT (normal, no will message), and closes the
    /// connection. Every clone, channel and subscription sees the client closed afterwards; no
    /// reconnect follows.
    pub async fn disconnect(&self) -> Result<()> {
        let core = self.core();
        if let Some(reason) = core.close_reason() {
            return Err(Error::ConnectionClosed(reason));
        }
        core.closing.store(true, Ordering::Release);
        if let Some(conn) = core.conn_now() {
            let packet = Packet::Disconnect(Disconnect {
                code: ReasonCode::NORMAL_DISCONNECTION,
                properties: Properties::default(),
            });
            let bytes = conn.shared.encode(&packet)?;
            conn.link
                .shutdown(&conn.shared, &conn.control, bytes)
                .instrument(core.span.clone())
                .await;
        }
        core.stop.cancel();
        core.finish(CloseReason::Local);
        Ok(())
    }

    /// Why the client ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.core().close_reason()
    }

    /// Waits until the client ends for good and tells why (with reconnecting on, a lost
    /// connection is not the end).
    pub async fn closed(&self) -> CloseReason {
        let mut rx = self.core().state.subscribe();
        loop {
            if let State::Closed(r) = &*rx.borrow_and_update() {
                return r.clone();
            }
            if rx.changed().await.is_err() {
                return CloseReason::Local;
            }
        }
    }
}

fn public_state(s: &State) -> ConnectionState {
    match s {
        State::Up(c) => ConnectionState::Connected(c.info.clone()),
        State::Down { attempt, error } => ConnectionState::Reconnecting {
            attempt: *attempt,
            error: error.clone(),
        },
        State::Closed(r) => ConnectionState::Closed(r.clone()),
    }
}

/// Changes of a client's [`ConnectionState`] (see [`Client::state_changes`]).
pub struct StateChanges {
    rx: watch::Receiver<State>,
}

impl StateChanges {
    /// The next state; `None` once the client is gone.
    pub async fn next(&mut self) -> Option<ConnectionState> {
        self.rx.changed().await.ok()?;
        Some(public_state(&self.rx.borrow_and_update()))
    }
}

/// A channel's stream on the current connection, opened on first use after each (re)connect.
pub(crate) struct Slot {
    kind: ChannelKind,
    /// The client's own telemetry channel: the stream opened (and announced) at connect.
    default_telemetry: bool,
    current: Mutex<Option<(u64, ChannelTx)>>,
}

impl Slot {
    fn new(kind: ChannelKind, default_telemetry: bool) -> Slot {
        Slot {
            kind,
            default_telemetry,
            current: Mutex::new(None),
        }
    }
}

/// A channel of the connection to publish and subscribe on (see [`Client::open_channel`]). Clones
/// share the channel; over QUIC its stream is finished when the last clone, subscription and
/// pending flow on it are gone.
#[derive(Clone)]
pub struct Channel {
    client: Client,
    slot: Arc<Slot>,
}

/// A publish handed to a channel, awaiting its acknowledgement.
pub(crate) struct InFlight {
    pub(crate) pkid: u16,
    pub(crate) conn: Arc<Conn>,
    outcome: Option<oneshot::Receiver<PublishOutcome>>,
}

impl InFlight {
    /// The PUBACK/PUBCOMP outcome; an error when the connection (or channel) ended first.
    pub(crate) async fn outcome(self) -> Result<PublishOutcome> {
        match self.outcome {
            None => Ok(PublishOutcome::sent()),
            Some(rx) => rx.await.map_err(|_| self.conn.shared.closed_error()),
        }
    }
}

impl Channel {
    pub fn kind(&self) -> ChannelKind {
        self.slot.kind
    }

    /// This channel's stream on the current connection (waiting for one while reconnecting).
    async fn tx(&self) -> Result<(Arc<Conn>, ChannelTx)> {
        let core = self.client.core();
        let conn = core.conn().await?;
        if self.slot.default_telemetry {
            let tx = conn.telemetry.clone();
            return Ok((conn, tx));
        }
        if let Some((generation, tx)) = lock(&self.slot.current).as_ref() {
            if *generation == conn.generation {
                return Ok((conn.clone(), tx.clone()));
            }
        }
        let tx = conn
            .link
            .open_channel(&conn.shared, self.slot.kind)
            .instrument(core.span.clone())
            .await?;
        *lock(&self.slot.current) = Some((conn.generation, tx.clone()));
        Ok((conn, tx))
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
        self.start(message).await?.outcome().await
    }

    /// Queues `message` and returns once it is in the channel's queue, with its packet id; the
    /// acknowledgement is awaited separately (how uploads keep a window of segments in flight).
    pub(crate) async fn start(&self, message: Message) -> Result<InFlight> {
        let (conn, tx) = self.tx().await?;
        let shared = &conn.shared;
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
            queue(&conn, &tx, bytes).await?;
            return Ok(InFlight {
                pkid: 0,
                conn,
                outcome: None,
            });
        }

        // Receive Maximum: wait for a slot before taking a packet id (file data for one of its
        // own too, so that it leaves room for telemetry).
        let mut permits = Vec::with_capacity(2);
        if tx.kind == ChannelKind::File {
            permits.push(
                shared
                    .file_inflight
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| shared.closed_error())?,
            );
        }
        permits.push(
            shared
                .inflight
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| shared.closed_error())?,
        );
        let (done, outcome) = oneshot::channel();
        let kind = PendingKind::Publish {
            qos: publish.qos,
            done,
            rec: None,
        };
        let pkid = shared.register(&tx, kind, permits)?;
        let guard = Unsent {
            shared,
            pkid: Some(pkid),
        };
        publish.pkid = pkid;
        let bytes = shared.encode(&Packet::Publish(publish))?;
        queue(&conn, &tx, bytes).await?;
        guard.sent();
        Ok(InFlight {
            pkid,
            conn: conn.clone(),
            outcome: Some(outcome),
        })
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

    /// See [`Client::subscribe_with`]. The subscription is restored after every reconnect (on the
    /// client's telemetry channel).
    pub async fn subscribe_with(
        &self,
        filter: impl Into<String>,
        options: SubscriptionOptions,
    ) -> Result<Subscription> {
        let filter = filter.into();
        let (conn, tx) = self.tx().await?;
        let core = self.client.core();
        let queue = core.options.subscription_queue;
        let (key, granted, rx) = core.subscribe(&conn, &tx, &filter, options, queue).await?;
        Ok(Subscription {
            channel: self.clone(),
            filter,
            key,
            granted,
            rx,
        })
    }
}

async fn queue(conn: &Conn, tx: &ChannelTx, bytes: Bytes) -> Result<()> {
    tx.data
        .send(Outgoing::Packet(bytes))
        .await
        .map_err(|_| conn.shared.closed_error())
}

/// Messages matching one subscription. QoS 1/2 deliveries are acknowledged once queued here; keep
/// calling [`recv`](Subscription::recv): when the queue is full the connection stops reading, which
/// in time stalls the server (and over TCP, PINGRESPs with it). Dropping it stops the routing
/// locally; [`unsubscribe`](Subscription::unsubscribe) also tells the server.
pub struct Subscription {
    channel: Channel,
    filter: String,
    key: u64,
    granted: QoS,
    rx: mpsc::Receiver<Publish>,
}

impl Subscription {
    /// The next message; it waits across reconnects, and fails once the client has ended.
    pub async fn recv(&mut self) -> Result<Publish> {
        match self.rx.recv().await {
            Some(p) => Ok(p),
            None => Err(match self.channel.client.close_reason() {
                Some(r) => Error::ConnectionClosed(r),
                None => Error::ChannelClosed,
            }),
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
        let core = self.channel.client.core();
        core.forget_subscription(self.key);
        let (conn, tx) = self.channel.tx().await?;
        let shared = &conn.shared;
        let (done, unsuback) = oneshot::channel();
        let pkid = shared.register(&tx, PendingKind::Unsubscribe { done }, Vec::new())?;
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
        queue(&conn, &tx, bytes).await?;
        guard.sent();
        let ack = unsuback.await.map_err(|_| shared.closed_error())?;
        Ok(ack.codes.first().copied().unwrap_or(ReasonCode::SUCCESS))
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
