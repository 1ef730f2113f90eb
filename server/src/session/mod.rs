//! One connected client: CONNECT handling, then the task that drives the session while it is online.
//!
//! The protocol is the state machine in [`state`] (and the modules beside it); this file only
//! drives it: it reads CONNECT and admits the client (`connect`), then selects between the stream
//! readers ([`crate::stream`]), finished file commands, the session's delivery queue, takeover,
//! shutdown and the keepalive timer, feeds each input to the machine with the time, and carries out
//! what it asks: routing messages, running file commands in tasks, writing each stream's packets,
//! dropping streams, closing. Deliveries are pulled from the bounded queue only as fast as the
//! client's in-flight window allows. Over TCP/TLS the single stream carries everything; over QUIC
//! the control stream carries CONNECT, PING, DISCONNECT and AUTH, and everything else too for a
//! client that sends it there (single-stream mode, DESIGN §3: answers go back on the stream a
//! packet came from, deliveries on the stream that subscribed).
//!
//! Ending: after a normal DISCONNECT on a QUIC connection, the data streams first forward what
//! they have already received (a QoS 0 PUBLISH sent just before the DISCONNECT travels on another
//! stream and may not have been read yet), within [`DRAIN_LIMIT`]. Over TCP/TLS the last packets
//! (our DISCONNECT with its reason) are written, the sending side is shut down, and the client's
//! input is read and discarded for up to [`LINGER_TIME`] / [`LINGER_BYTES`] before the socket
//! closes: closing with unread input would send a TCP reset, and the client would lose the reason.
//!
//! Writer queues are bounded: a stream whose writer holds more than
//! `limits.max_stream_backlog + limits.max_packet_size` bytes when the peer asks for more answers
//! (a peer that sends PINGREQs or PUBLISHes and never reads) is closed — the QUIC data stream, or
//! else the connection — instead of queueing without limit. Deliveries alone never close a stream:
//! QoS 0 is dropped at `max_stream_backlog` and QoS 1/2 is bounded by the in-flight window.

mod accept;
mod connect;
mod deliver;
mod delivery;
mod ft;
mod ft_order;
mod qos;
mod state;
mod subscribe;
#[cfg(test)]
mod tests;
mod will;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quicft_proto::{ConnAck, Packet, Properties, Protocol, ReasonCode};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::broker::{Control, Delivery, StreamId};
use crate::link::{Link, PacketRead, PacketWrite};
use crate::stream::{self, Event, Writer};
use crate::Ctx;
use connect::Negotiated;
use ft::FtDone;
use state::{Env, Exit, Session, CONTROL};
use will::DueWill;
pub(crate) use will::PendingWills;

/// Events (each up to [`stream::MAX_BATCH`] decoded packets) queued from a connection's stream
/// readers to its session. With the batch size it bounds the decoded packets one connection can
/// hold in memory (512, about 430 KB of `Packet`s plus their payloads) before its readers stop
/// reading and flow control pushes back on the peer.
const EVENT_QUEUE: usize = 16;

/// Longest wait, after a normal DISCONNECT, for the data streams to forward what they have received.
/// They read only what has already arrived, so this bounds a busy machine, not a slow peer.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// How long, and how much of its input, a TCP/TLS client is given to read our last packets after
/// the server has shut down its sending side (module doc).
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// Finished file commands waiting to be answered. Their tasks wait for room, and the session
/// takes every waiting answer each turn, so this only smooths bursts.
const FT_DONE_QUEUE: usize = 64;

/// Handles a new connection whose control stream is given: reads CONNECT, authenticates, attaches the
/// session and runs it until the client goes away.
pub(crate) async fn serve<R: PacketRead, W: PacketWrite>(
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
    let first = match first {
        Ok(Ok((Packet::Connect(c), rest))) => Ok((c, rest)),
        Ok(Ok((other, _))) => {
            tracing::info!(peer = %link.peer, packet = other.name(), "connection refused: first packet is not CONNECT");
            Err(ReasonCode::PROTOCOL_ERROR)
        }
        Ok(Err(stream::FirstPacketError::Decode(e))) => {
            tracing::info!(peer = %link.peer, reason = %e, "connection refused: bad CONNECT");
            if let quicft_proto::DecodeError::UnsupportedProtocol(_) = e {
                // A 3.1.1-format CONNACK is what any client version can read (MQTT 5 §3.1.2.2).
                refuse(&writer, e.reason_code(), Protocol::V311);
            }
            Err(e.reason_code())
        }
        Ok(Err(e)) => {
            tracing::info!(peer = %link.peer, reason = %e, "connection refused: no CONNECT");
            Err(ReasonCode::PROTOCOL_ERROR)
        }
        Err(_) => {
            tracing::info!(peer = %link.peer, "connection refused: no CONNECT in time");
            Err(ReasonCode::MAXIMUM_CONNECT_TIME)
        }
    };
    let (connect, leftover) = match first {
        Ok(first) => first,
        Err(code) => return finish(link, writer, writer_task, code, control_rx).await,
    };
    let admitted = match connect::admit(&ctx, &link, &connect).await {
        Ok(a) => a,
        Err(code) => {
            ctx.metrics.reason_sent(crate::metrics::Sent::ConnAck, code);
            refuse(&writer, code, connect.protocol);
            return finish(link, writer, writer_task, code, control_rx).await;
        }
    };
    let span = tracing::info_span!("conn", client_id = %admitted.client_id, transport = link.transport.as_str(), peer = %link.peer);
    async move {
        let client_id = admitted.client_id;
        let opened = ctx
            .broker
            .open_session(&client_id, connect.clean_start)
            .await;
        // A connection for this client id within a will's delay cancels it (MQTT 5 §3.1.3.2.2);
        // a connection it took over has registered its will before handing the session over.
        if ctx.wills.cancel(&client_id) {
            tracing::info!("delayed will cancelled: the client is back");
        }
        let conn = ctx
            .clients
            .register(&client_id, link.transport, link.peer, io);
        let env = Env {
            config: ctx.config.clone(),
            broker: ctx.broker.clone(),
            acl: ctx.acl.clone(),
            metrics: ctx.metrics.clone(),
            ft_memory: ctx.ft_memory.clone(),
        };
        let negotiated = Negotiated::new(connect, &ctx.config.limits);
        ctx.broker
            .session_opened(&client_id, opened.generation, negotiated.session_expiry);
        let mut machine = Session::new(
            env,
            link.quic.is_some(),
            negotiated,
            client_id,
            admitted.username,
            opened.state,
            Instant::now(),
        );
        machine.connack(opened.session_present, admitted.assigned);
        tracing::info!(session_present = opened.session_present, "connected");
        let mut d = Driver::new(ctx, link, machine, opened.generation, writer, conn);
        d.auth_generation = admitted.auth_generation;
        let exit = d.run(opened.kick, leftover, control_rx).await;
        d.close(exit, writer_task).await;
    }
    .instrument(span)
    .await
}

/// Refuses a CONNECT with `code`.
fn refuse(w: &Writer, code: ReasonCode, protocol: Protocol) {
    let ack = ConnAck {
        session_present: false,
        code,
        properties: Properties::default(),
    };
    let mut buf = BytesMut::new();
    match Packet::ConnAck(ack).encode(protocol, &mut buf) {
        Ok(()) => {
            w.send(buf.freeze());
        }
        Err(e) => tracing::warn!(error = %e, "cannot encode CONNACK"),
    }
}

/// Sends a final DISCONNECT-less close: for failures before a session exists.
async fn finish<R: PacketRead>(
    link: Link,
    writer: Writer,
    task: tokio::task::JoinHandle<()>,
    code: ReasonCode,
    control_rx: R,
) {
    drop(writer);
    let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    match link.quic {
        Some(conn) => conn.close(quinn::VarInt::from_u32(u32::from(code.0)), b""),
        None => linger(control_rx).await,
    }
}

/// Reads and discards a TCP/TLS client's input after our sending side is shut down, until it
/// closes, or for [`LINGER_TIME`] / [`LINGER_BYTES`]: lets it read our last packets (module doc).
async fn linger<R: PacketRead>(mut r: R) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 16 * 1024];
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while left > 0 {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// The control stream's reader task, which returns the read half (kept past the session's end over
/// TCP/TLS, for the linger), and the signal that stops it.
struct ControlReader {
    task: tokio::task::JoinHandle<Box<dyn PacketRead>>,
    stop: oneshot::Sender<()>,
}

/// The task side of a session: its machine, the writers of its streams and the channels into it.
struct Driver {
    ctx: Arc<Ctx>,
    link: Link,
    machine: Session,
    /// This connection's ownership of the session (the broker ignores a stale hand-back).
    generation: u64,
    /// The accounts' generation its login was checked under (a reload may revoke it).
    auth_generation: u64,
    writers: HashMap<StreamId, Writer>,
    /// Per data stream whose reader runs: asks it to forward what it has and end (`drain`).
    readers: HashMap<StreamId, oneshot::Sender<()>>,
    /// The control stream's reader, once started.
    control_reader: Option<ControlReader>,
    /// Asks the QUIC accept task to hand over the streams already opened and stop (`drain`).
    accept_drain: Option<oneshot::Sender<()>>,
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    ft_done_tx: mpsc::Sender<FtDone>,
    ft_done_rx: mpsc::Receiver<FtDone>,
    /// Bytes a stream's writer may hold when the peer asks for more answers (module doc).
    reply_limit: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// This connection in the client registry (HTTP API): streams, packets; unregisters on drop.
    conn: crate::clients::Registration,
    /// With `persist_interval = 0`: the broker-store change this turn's acks wait for.
    durable: Option<u64>,
}

impl Driver {
    fn new(
        ctx: Arc<Ctx>,
        link: Link,
        machine: Session,
        generation: u64,
        control: Writer,
        conn: crate::clients::Registration,
    ) -> Driver {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (ft_done_tx, ft_done_rx) = mpsc::channel(FT_DONE_QUEUE);
        let limits = &ctx.config.limits;
        let reply_limit = limits
            .max_stream_backlog
            .saturating_add(limits.max_packet_size);
        Driver {
            writers: HashMap::from([(CONTROL, control)]),
            readers: HashMap::new(),
            control_reader: None,
            accept_drain: None,
            events_tx,
            events_rx,
            ft_done_tx,
            ft_done_rx,
            reply_limit,
            tasks: Vec::new(),
            ctx,
            link,
            machine,
            generation,
            auth_generation: 0,
            conn,
            durable: None,
        }
    }

    /// Whether the accounts as they are now would still admit this connection's login.
    fn still_admitted(&self) -> bool {
        self.ctx.auth.still_admits(&crate::auth::Login {
            username: self.machine.username.as_deref(),
            certificate: self.link.cert_name.is_some(),
            client_id: &self.machine.client_id,
            listener: self.link.listener,
            generation: self.auth_generation,
        })
    }

    /// Starts the readers and runs until the connection or session ends; after a normal
    /// DISCONNECT over QUIC, handles what the data streams had already received (module doc).
    async fn run<R: PacketRead>(
        &mut self,
        kick: mpsc::Receiver<Control>,
        leftover: BytesMut,
        control_rx: R,
    ) -> Exit {
        let exit = self.serve_packets(kick, leftover, control_rx).await;
        if matches!(exit, Exit::Normal | Exit::NormalWithWill) && self.link.quic.is_some() {
            self.drain_data_streams().await;
        }
        exit
    }

    async fn serve_packets<R: PacketRead>(
        &mut self,
        mut kick: mpsc::Receiver<Control>,
        leftover: BytesMut,
        control_rx: R,
    ) -> Exit {
        let max = self.ctx.config.limits.max_packet_size;
        let protocol = self.machine.protocol;
        let (stop, stop_rx) = oneshot::channel();
        let control_rx: Box<dyn PacketRead> = Box::new(control_rx);
        let reader = stream::spawn_reader(
            control_rx,
            leftover,
            CONTROL,
            stream::Framing {
                protocol,
                max_packet_size: max,
            },
            self.events_tx.clone(),
            None,
            stop_rx,
        );
        self.control_reader = Some(ControlReader { task: reader, stop });
        if let Some(conn) = self.link.quic.clone() {
            let (drain, drain_rx) = oneshot::channel();
            self.tasks.push(tokio::spawn(accept::accept_data_streams(
                conn,
                stream::Framing {
                    protocol,
                    max_packet_size: max,
                },
                self.events_tx.clone(),
                self.conn.io().clone(),
                drain_rx,
            )));
            self.accept_drain = Some(drain);
        }
        self.machine.resend_inflight(Instant::now());
        // CONNACK and any re-sent deliveries
        if let Some(exit) = self.flush() {
            return exit;
        }
        let mut shutdown = self.ctx.shutdown.clone();
        // One future for the whole run: `changed()` rebuilt on every turn cost ~1 k instructions
        // per message.
        let shutdown = shutdown.changed();
        tokio::pin!(shutdown);
        let ka_check = self
            .machine
            .keep_alive
            .map_or(Duration::from_secs(3600), |k| k / 2);
        let mut ka_timer = tokio::time::interval(ka_check.max(Duration::from_millis(100)));
        ka_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        enum Step {
            Event(Option<Event>),
            FtDone(Option<FtDone>),
            Deliver(Option<Delivery>),
            Kick(Option<Control>),
            Tick,
            Shutdown,
        }
        loop {
            let can_pull = self.machine.wants_deliveries();
            let step = tokio::select! {
                biased;
                _ = &mut shutdown => Step::Shutdown,
                k = kick.recv() => Step::Kick(k),
                ev = self.events_rx.recv() => Step::Event(ev),
                done = self.ft_done_rx.recv() => Step::FtDone(done),
                d = self.machine.state.mailbox.recv(), if can_pull => Step::Deliver(d),
                _ = ka_timer.tick() => Step::Tick,
            };
            let now = Instant::now();
            match step {
                Step::Shutdown => return Exit::Shutdown,
                Step::Kick(Some(Control::Kick(k))) => return Exit::TakenOver(k),
                Step::Kick(Some(Control::Recheck)) => {
                    if !self.still_admitted() {
                        tracing::info!("login no longer valid after a reload of the accounts");
                        return Exit::Error(ReasonCode::NOT_AUTHORIZED);
                    }
                }
                // Our kick sender lives in the broker for as long as the session is ours.
                Step::Kick(None) => {}
                Step::Event(None) => return Exit::Error(ReasonCode::UNSPECIFIED_ERROR),
                Step::Event(Some(ev)) => self.on_event(ev, now),
                Step::FtDone(Some(done)) => {
                    self.machine.handle_ft_done(done);
                }
                // The driver holds a sender itself.
                Step::FtDone(None) => {}
                Step::Deliver(Some(d)) => {
                    let writers = &self.writers;
                    let backlog = |id| writers.get(&id).map_or(0, Writer::backlog);
                    self.machine.handle_delivery(d, now, &backlog);
                }
                Step::Deliver(None) => {}
                Step::Tick => {
                    self.machine.handle_tick(now);
                }
            }
            if let Some(exit) = self.apply() {
                return exit;
            }
            // Handle what the stream readers have already queued before paying for another
            // `select!` (it re-polls every branch): under load this halves the per-message cost.
            for _ in 0..64 {
                let Ok(ev) = self.events_rx.try_recv() else {
                    break;
                };
                self.on_event(ev, Instant::now());
                if let Some(exit) = self.apply() {
                    return exit;
                }
            }
            // Answers are taken every turn, however busy the readers: on one queue with the
            // stream events they could not starve, and apart they must not either.
            while let Ok(done) = self.ft_done_rx.try_recv() {
                self.machine.handle_ft_done(done);
            }
            let writers = &self.writers;
            let backlog = |id| writers.get(&id).map_or(0, Writer::backlog);
            self.machine.drain_stash(now, &backlog);
            self.wait_durable().await;
            if let Some(exit) = self.flush() {
                return exit;
            }
        }
    }

    /// Feeds one event of the stream tasks to the machine; [`Driver::apply`] acts on it.
    fn on_event(&mut self, ev: Event, now: Instant) {
        match ev {
            Event::Packets { stream, packets } => {
                self.machine.handle_read(now);
                for packet in packets {
                    // A violation may have dropped this stream: the rest of its batch goes with it.
                    if !self.machine.has_stream(stream) {
                        break;
                    }
                    self.conn.packet_in(&packet);
                    self.machine.handle_packet(stream, packet, now);
                    // Routed now, before the next packet: a SUBSCRIBE later in the batch finds
                    // what an earlier PUBLISH retained.
                    if self.apply_now() {
                        break;
                    }
                }
            }
            Event::Malformed { stream, error } => {
                self.readers.remove(&stream);
                tracing::info!(stream, error = %error, "malformed packet");
                self.machine.handle_malformed(stream, error.reason_code());
            }
            Event::Closed { stream } => {
                self.readers.remove(&stream);
                self.machine.handle_stream_closed(stream);
            }
            Event::NoMoreStreams => {}
            Event::Opened {
                stream,
                writer,
                drain,
            } => {
                self.readers.insert(stream, drain);
                self.writers.insert(stream, writer);
                self.conn.stream_opened();
                self.machine.handle_stream_opened(stream, now);
            }
        }
    }

    /// After a normal DISCONNECT: every data stream forwards what it has already received, without
    /// waiting for more, and those packets are handled before the session closes (module doc).
    /// Streams accepted meanwhile were opened before the DISCONNECT too, and are drained as well.
    async fn drain_data_streams(&mut self) {
        let mut waiting: std::collections::HashSet<StreamId> =
            self.readers.keys().copied().collect();
        for (_, drain) in self.readers.drain() {
            let _ = drain.send(());
        }
        // Streams the peer opened that the accept task has not handed over yet count too.
        let mut accepting = self.accept_drain.take().is_some_and(|d| d.send(()).is_ok());
        let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
        while accepting || !waiting.is_empty() {
            let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.events_rx.recv()).await
            else {
                tracing::debug!(streams = waiting.len(), "data streams not drained in time");
                break;
            };
            let stream = match &ev {
                Event::NoMoreStreams => {
                    accepting = false;
                    continue;
                }
                Event::Packets { stream, .. }
                | Event::Closed { stream }
                | Event::Malformed { stream, .. }
                | Event::Opened { stream, .. } => *stream,
            };
            // Nothing on the control stream counts after DISCONNECT.
            if stream == CONTROL {
                continue;
            }
            let opened = matches!(ev, Event::Opened { .. });
            if matches!(ev, Event::Closed { .. } | Event::Malformed { .. }) {
                waiting.remove(&stream);
            }
            self.on_event(ev, Instant::now());
            if opened {
                if let Some(drain) = self.readers.remove(&stream) {
                    let _ = drain.send(());
                }
                waiting.insert(stream);
            }
            // Routed; the session is ending normally whatever a late packet asks for.
            self.apply_now();
            self.machine.actions.close = None;
        }
    }

    /// Carries out the machine's actions except closing; true when the session is to close.
    fn apply_now(&mut self) -> bool {
        let a = &mut self.machine.actions;
        for m in a.route.drain(..) {
            let routed = self.ctx.broker.route(m);
            self.durable = routed.ticket.or(self.durable);
        }
        for c in a.commands.drain(..) {
            let (ft, tx) = (self.ctx.ft.clone(), self.ft_done_tx.clone());
            let client_id = self.machine.client_id.clone();
            let span = tracing::info_span!("ft", file_id = c.cmd.file_id.as_str());
            tokio::spawn(
                async move {
                    let done = c.run(ft, &client_id).await;
                    let _ = tx.send(done).await;
                }
                .instrument(span),
            );
        }
        for r in a.streams.drain(..) {
            self.ctx.deliveries.spawn_request(r);
        }
        for (stream, reset) in a.dropped.drain(..) {
            if let Some(w) = self.writers.remove(&stream) {
                self.conn.stream_closed();
                if let Some(code) = reset {
                    w.reset(u32::from(code.0));
                }
            }
        }
        a.close.is_some()
    }

    /// Carries out the machine's actions; the exit when the session is to close.
    fn apply(&mut self) -> Option<Exit> {
        self.apply_now();
        self.machine.actions.close.take()
    }

    /// With `persist_interval = 0`, waits until what this turn's messages changed in the broker's
    /// store is on disk, so that no PUBACK/PUBREC leaves before it.
    async fn wait_durable(&mut self) {
        if let Some(ticket) = self.durable.take() {
            self.ctx.broker.wait_durable(ticket).await;
        }
    }

    /// Hands every stream's packets of this turn to its writer, one write per stream; closes what
    /// overflows (module doc).
    fn flush(&mut self) -> Option<Exit> {
        let (writers, limit) = (&self.writers, self.reply_limit);
        let mut overflowed = Vec::new();
        self.machine
            .poll_transmit(|stream, bytes: Bytes, replied| match writers.get(&stream) {
                Some(w) if replied && w.backlog() > limit => {
                    // Its queue is not worth finishing: the peer is not reading it.
                    w.abort();
                    overflowed.push(stream);
                }
                Some(w) => {
                    w.send(bytes);
                }
                None => {}
            });
        for stream in overflowed {
            self.machine.handle_write_overflow(stream);
        }
        self.apply()
    }

    /// Sends the last words, hands the session back to the broker, publishes the will if due.
    async fn close(mut self, exit: Exit, control_task: tokio::task::JoinHandle<()>) {
        for t in &self.tasks {
            t.abort();
        }
        // The readers stop; over TCP/TLS the read half comes back for the linger below.
        self.events_rx.close();
        let control_rx = match self.control_reader.take() {
            Some(ControlReader { task, stop }) if self.link.quic.is_none() => {
                let _ = stop.send(());
                tokio::time::timeout(Duration::from_secs(1), task)
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Some(ControlReader { task, .. }) => {
                task.abort();
                None
            }
            None => None,
        };
        self.wait_durable().await;
        let mut closing = self.machine.close(&exit);
        // Before a taken-over session is handed on: the new connection then cancels a delayed will.
        if let Some(will) = closing.will.take() {
            self.publish_will(will);
        }
        match exit {
            Exit::TakenOver(k) => {
                let _ = k.reply.send(closing.state);
            }
            _ => self.ctx.broker.close_session(
                closing.state,
                self.generation,
                closing.session_expiry,
            ),
        }
        // What this last turn queued (acks of a batch that ended in DISCONNECT, our DISCONNECT)
        // still goes out before the writers finish their streams.
        self.machine.poll_transmit(|stream, bytes, _| {
            if let Some(w) = self.writers.get(&stream) {
                w.send(bytes);
            }
        });
        self.writers.clear();
        let _ = tokio::time::timeout(Duration::from_secs(1), control_task).await;
        if let Some(r) = control_rx {
            linger(r).await;
        }
        if let Some(conn) = &self.link.quic {
            // Closing the connection discards stream data not yet acknowledged (our DISCONNECT):
            // give the client a moment to read it and close first.
            if closing.code.is_some() {
                let _ = tokio::time::timeout(Duration::from_millis(500), conn.closed()).await;
            }
            conn.close(
                quinn::VarInt::from_u32(u32::from(closing.code.unwrap_or_default().0)),
                b"",
            );
        }
    }

    /// Publishes the will now, or after its delay unless the client connects again meanwhile.
    fn publish_will(&self, will: DueWill) {
        let broker = self.ctx.broker.clone();
        if will.delay.is_zero() {
            broker.publish(will.message(Instant::now()));
            return;
        }
        let (wills, client_id) = (self.ctx.wills.clone(), self.machine.client_id.clone());
        let ticket = wills.schedule(&client_id);
        tracing::info!(delay_s = will.delay.as_secs(), "will delayed");
        tokio::spawn(async move {
            tokio::time::sleep(will.delay).await;
            if wills.fire(&client_id, ticket) {
                broker.publish(will.message(Instant::now()));
            }
        });
    }
}
