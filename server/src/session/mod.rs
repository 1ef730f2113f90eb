//! One connected client: CONNECT handling, then the task that drives the session while it is online.
//!
//! The protocol is the state machine in [`state`] (and the modules beside it); this file only
//! drives it: it reads CONNECT and admits the client (`connect`), then selects between the stream
//! readers ([`crate::stream`]), finished file commands, the session's delivery queue, takeover,
//! shutdown and the keepalive timer, feeds each input to the machine with the time, and carries out
//! what it asks: routing messages, running file commands in tasks, writing each stream's packets,
//! dropping streams, closing. Deliveries are pulled from the bounded queue only as fast as the
//! client's in-flight window allows. On a QUIC connection the control stream carries only CONNECT,
//! PING, DISCONNECT and AUTH; over TCP/TLS the single stream carries everything.
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
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::broker::{Delivery, Kick, StreamId};
use crate::link::{Link, PacketRead, PacketWrite};
use crate::stream::{self, Event, Writer};
use crate::Ctx;
use connect::Negotiated;
use ft::FtDone;
use state::{Env, Exit, Session, CONTROL};

// The HTTP API names transports through here.
pub(crate) use crate::link::Transport;

/// Events (each up to [`stream::MAX_BATCH`] decoded packets) queued from a connection's stream
/// readers to its session. With the batch size it bounds the decoded packets one connection can
/// hold in memory (512, about 430 KB of `Packet`s plus their payloads) before its readers stop
/// reading and flow control pushes back on the peer.
const EVENT_QUEUE: usize = 16;

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
    let (connect, leftover) = match first {
        Ok(Ok((Packet::Connect(c), rest))) => (c, rest),
        Ok(Ok((other, _))) => {
            tracing::info!(peer = %link.peer, packet = other.name(), "connection refused: first packet is not CONNECT");
            return finish(link, writer, writer_task, ReasonCode::PROTOCOL_ERROR).await;
        }
        Ok(Err(stream::FirstPacketError::Decode(e))) => {
            tracing::info!(peer = %link.peer, reason = %e, "connection refused: bad CONNECT");
            if let quicft_proto::DecodeError::UnsupportedProtocol(_) = e {
                // A 3.1.1-format CONNACK is what any client version can read (MQTT 5 §3.1.2.2).
                refuse(&writer, e.reason_code(), Protocol::V311);
            }
            return finish(link, writer, writer_task, e.reason_code()).await;
        }
        Ok(Err(e)) => {
            tracing::info!(peer = %link.peer, reason = %e, "connection refused: no CONNECT");
            return finish(link, writer, writer_task, ReasonCode::PROTOCOL_ERROR).await;
        }
        Err(_) => {
            tracing::info!(peer = %link.peer, "connection refused: no CONNECT in time");
            return finish(link, writer, writer_task, ReasonCode::MAXIMUM_CONNECT_TIME).await;
        }
    };
    let admitted = match connect::admit(&ctx, &link, &connect).await {
        Ok(a) => a,
        Err(code) => {
            ctx.metrics.reason_sent(crate::metrics::Sent::ConnAck, code);
            refuse(&writer, code, connect.protocol);
            return finish(link, writer, writer_task, code).await;
        }
    };
    let span = tracing::info_span!("conn", client_id = %admitted.client_id, transport = link.transport.as_str(), peer = %link.peer);
    async move {
        let client_id = admitted.client_id;
        let opened = ctx
            .broker
            .open_session(&client_id, connect.clean_start)
            .await;
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
async fn finish(link: Link, writer: Writer, task: tokio::task::JoinHandle<()>, code: ReasonCode) {
    drop(writer);
    let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    if let Some(conn) = link.quic {
        conn.close(quinn::VarInt::from_u32(u32::from(code.0)), b"");
    }
}

/// The task side of a session: its machine, the writers of its streams and the channels into it.
struct Driver {
    ctx: Arc<Ctx>,
    link: Link,
    machine: Session,
    /// This connection's ownership of the session: a delayed will checks it is still current.
    generation: u64,
    writers: HashMap<StreamId, Writer>,
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    ft_done_tx: mpsc::Sender<FtDone>,
    ft_done_rx: mpsc::Receiver<FtDone>,
    /// Bytes a stream's writer may hold when the peer asks for more answers (module doc).
    reply_limit: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// This connection in the client registry (HTTP API): streams, packets; unregisters on drop.
    conn: crate::clients::Registration,
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
            conn,
        }
    }

    /// Starts the readers and runs until the connection or session ends.
    async fn run<R: PacketRead>(
        &mut self,
        mut kick: mpsc::Receiver<Kick>,
        leftover: BytesMut,
        control_rx: R,
    ) -> Exit {
        let max = self.ctx.config.limits.max_packet_size;
        let protocol = self.machine.protocol;
        self.tasks.push(stream::spawn_reader(
            control_rx,
            leftover,
            CONTROL,
            protocol,
            max,
            self.events_tx.clone(),
            None,
        ));
        if let Some(conn) = self.link.quic.clone() {
            self.tasks.push(tokio::spawn(accept::accept_data_streams(
                conn,
                protocol,
                max,
                self.events_tx.clone(),
                self.conn.io().clone(),
            )));
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
            Kick(Option<Kick>),
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
                Step::Kick(Some(k)) => return Exit::TakenOver(k),
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
                tracing::info!(stream, error = %error, "malformed packet");
                self.machine.handle_malformed(stream, error.reason_code());
            }
            Event::Closed { stream } => {
                self.machine.handle_stream_closed(stream);
            }
            Event::Opened { stream, writer } => {
                self.writers.insert(stream, writer);
                self.conn.stream_opened();
                self.machine.handle_stream_opened(stream, now);
            }
        }
    }

    /// Carries out the machine's actions except closing; true when the session is to close.
    fn apply_now(&mut self) -> bool {
        let a = &mut self.machine.actions;
        for m in a.route.drain(..) {
            self.ctx.broker.publish(m);
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
        let closing = self.machine.close(&exit, Instant::now());
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
        if let Some((msg, delay)) = closing.will {
            self.publish_will(msg, delay);
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

    fn publish_will(&self, msg: crate::broker::Message, delay: Duration) {
        let broker = self.ctx.broker.clone();
        if delay.is_zero() {
            broker.publish(msg);
            return;
        }
        let (client_id, generation) = (self.machine.client_id.clone(), self.generation);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // A reconnect within the delay cancels the will (MQTT 5 §3.1.3.2.2).
            if !broker.superseded(&client_id, generation) {
                broker.publish(msg);
            }
        });
    }
}
