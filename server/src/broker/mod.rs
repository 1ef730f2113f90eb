//! The broker: sessions by client id, the routing table and retained messages.
//!
//! One `std::sync::Mutex` guards the shared state; it is never held across an `.await`, and routing
//! only does `try_send` into bounded session mailboxes while holding it. Everything a connection owns
//! alone (in-flight windows, packet ids, streams) lives in its own task (`crate::session`), so the
//! lock is taken once per routed message, not once per packet.
//!
//! A session's mailbox is its bounded queue: the broker pushes deliveries in, the connection task
//! pulls them out as its in-flight window allows. While a client is offline the mailbox keeps
//! filling (up to its bound) and is handed to the next connection that resumes the session.
//!
//! With persistence on ([`Broker::open`]), retained messages and persistent sessions are also
//! kept in a store on disk (`store.rs`), written in batches by a flusher (`persist.rs`); the hooks
//! here only note what changed.

mod message;
mod persist;
mod record;
mod shared;
pub mod store;
mod subscriptions;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use quicft_proto::topic::TopicFilter;
use quicft_proto::QoS;
use tokio::sync::{mpsc, oneshot, watch};

pub use message::{Delivery, Message, StreamId};
pub use subscriptions::{Subscription, SubscriptionTable};

/// A QoS 1/2 delivery the client has not finished acknowledging.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub delivery: Delivery,
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    /// After PUBREC the PUBREL is sent and this becomes false (waiting for PUBCOMP).
    pub awaiting_ack: bool,
}

/// Everything a session keeps between connections (MQTT 5 §4.1).
#[derive(Debug)]
pub struct SessionState {
    pub client_id: Arc<str>,
    /// By filter string.
    pub subscriptions: HashMap<String, Subscription>,
    /// Deliveries in flight towards the client, by packet id.
    pub outgoing: BTreeMap<u16, Outgoing>,
    /// QoS 2 packet ids received from the client and not yet released (PUBREL).
    pub incoming_qos2: HashSet<u16>,
    pub next_pkid: u16,
    /// The session's queue of deliveries not yet sent.
    pub mailbox: mpsc::Receiver<Delivery>,
}

impl SessionState {
    /// A free packet id for a new outgoing QoS 1/2 delivery (never 0).
    pub fn alloc_pkid(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.outgoing.contains_key(&self.next_pkid) {
                return Some(self.next_pkid);
            }
        }
        None
    }
}

/// Asks a connected session to give up its state to a new connection with the same client id.
pub struct Kick {
    pub reply: oneshot::Sender<SessionState>,
}

/// What the broker tells a connected session.
pub enum Control {
    /// Give the session up to a new connection.
    Kick(Kick),
    /// The accounts changed (a reload): check that the login still holds.
    Recheck,
}

/// What [`Broker::open_session`] gives a new connection.
pub struct Opened {
    pub state: SessionState,
    pub session_present: bool,
    /// Identifies this connection's ownership of the session (a later takeover bumps it).
    pub generation: u64,
    pub kick: mpsc::Receiver<Control>,
}

enum Slot {
    Online {
        kick: mpsc::Sender<Control>,
    },
    Offline {
        state: Box<SessionState>,
        expires_at: Option<Instant>,
    },
    /// A connection is in the middle of taking the session over.
    Transition,
}

struct Entry {
    mailbox: mpsc::Sender<Delivery>,
    generation: u64,
    slot: Slot,
    /// Outlives its connection (session expiry > 0): kept in the store when persistence is on.
    persist: bool,
}

struct State {
    sessions: HashMap<Arc<str>, Entry>,
    subs: SubscriptionTable,
    retained: HashMap<String, Arc<Message>>,
    /// Changes not yet written to the store; `None` with persistence off.
    journal: Option<persist::Journal>,
}

impl State {
    /// The journal, for a change to `client_id`'s session if that session is persistent.
    fn journal_for(&mut self, client_id: &str) -> Option<(&mut persist::Journal, Arc<str>)> {
        let (id, entry) = self.sessions.get_key_value(client_id)?;
        if !entry.persist {
            return None;
        }
        let id = id.clone();
        Some((self.journal.as_mut()?, id))
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Default)]
pub struct BrokerStats {
    pub routed: AtomicU64,
    pub delivered: AtomicU64,
    /// Deliveries dropped because a session's queue was full.
    pub dropped_queue_full: AtomicU64,
}

/// What [`Broker::route`] did with a message.
pub struct Routed {
    /// Sessions it was queued for.
    pub queued: usize,
    /// With `persist_interval = 0`: the change to wait for before acknowledging it.
    pub ticket: Option<u64>,
}

/// The broker. Cheap to share behind an `Arc`.
pub struct Broker {
    state: Mutex<State>,
    queue_capacity: usize,
    generations: AtomicU64,
    pub stats: BrokerStats,
    persist: Option<persist::Persist>,
}

impl Broker {
    /// `queue_capacity` bounds each session's queue (messages not yet sent to the client).
    pub fn new(queue_capacity: usize) -> Broker {
        Broker {
            state: Mutex::new(State {
                sessions: HashMap::new(),
                subs: SubscriptionTable::default(),
                retained: HashMap::new(),
                journal: None,
            }),
            queue_capacity: queue_capacity.max(1),
            generations: AtomicU64::new(1),
            stats: BrokerStats::default(),
            persist: None,
        }
    }

    /// A broker whose retained messages and persistent sessions are kept in `data_dir` and
    /// restored from there; changes are written every `interval` (zero: before each ack, see
    /// `persist.rs`) by [`Broker::run_flusher`].
    pub fn open(
        queue_capacity: usize,
        data_dir: &std::path::Path,
        interval: Duration,
    ) -> Result<Broker, store::StoreError> {
        let (store, restored) = store::Store::open(data_dir)?;
        let mut broker = Broker::new(queue_capacity);
        broker.persist = Some(persist::Persist::new(store, interval));
        broker.restore(restored);
        Ok(broker)
    }

    /// Puts what the store held back in place: sessions offline, their expiry counting from the
    /// stored deadline, queues cut to `queue_capacity`.
    fn restore(&self, r: store::Restored) {
        let (now, wall) = (Instant::now(), std::time::SystemTime::now());
        let mut st = self.lock();
        let mut journal = persist::Journal::default();
        journal.seq = r.max_seq;
        let retained = r.retained.len();
        for m in r.retained {
            if !m.expired(now) {
                st.retained.insert(m.topic.clone(), Arc::new(m));
            }
        }
        let (mut sessions, mut queued, mut dropped) = (0, 0, 0);
        for s in r.sessions {
            let id: Arc<str> = s.client_id.into();
            let expires_at = match (s.meta.expiry, s.meta.deadline) {
                (None, _) => None,
                (Some(d), None) => Some(now + d),
                (Some(_), Some(t)) => Some(record::wall_to_instant(t, now, wall)),
            };
            if expires_at.is_some_and(|t| t <= now) {
                journal.wipe(&id);
                continue;
            }
            if s.meta.deadline.is_none() {
                // It was online when the server stopped: its expiry starts now.
                let deadline = expires_at.map(|t| record::instant_to_wall(t, now, wall));
                let meta = record::SessionMeta { deadline, ..s.meta };
                journal.meta(&id, meta);
            }
            let (mut state, tx) = self.fresh_session(&id);
            for sub in s.subscriptions {
                st.subs.insert(&id, sub.clone());
                state
                    .subscriptions
                    .insert(sub.filter.as_str().to_owned(), sub);
            }
            for d in s.queue {
                let seq = d.seq;
                if d.msg.expired(now) || tx.try_send(d).is_err() {
                    journal.finished(&id, seq);
                    dropped += 1;
                } else {
                    queued += 1;
                }
            }
            sessions += 1;
            st.sessions.insert(
                id,
                Entry {
                    mailbox: tx,
                    generation: self.generations.fetch_add(1, Ordering::Relaxed),
                    slot: Slot::Offline {
                        state: Box::new(state),
                        expires_at,
                    },
                    persist: true,
                },
            );
        }
        st.journal = Some(journal);
        tracing::info!(retained, sessions, queued, dropped, "broker state restored");
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in this module; the state is still
        // consistent enough to keep serving everyone else, so recover the guard.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh_session(&self, client_id: &Arc<str>) -> (SessionState, mpsc::Sender<Delivery>) {
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let state = SessionState {
            client_id: client_id.clone(),
            subscriptions: HashMap::new(),
            outgoing: BTreeMap::new(),
            incoming_qos2: HashSet::new(),
            next_pkid: 0,
            mailbox: rx,
        };
        (state, tx)
    }

    /// Attaches a new connection to the session of `client_id`: resumes it (clean start false and a
    /// session exists), or starts a fresh one. A connected session is taken over: its connection is
    /// asked to hand the state back and disconnect.
    pub async fn open_session(&self, client_id: &Arc<str>, clean_start: bool) -> Opened {
        let (kick_tx, kick_rx) = mpsc::channel(1);
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        // Take whatever exists out of the table, marking the slot as ours.
        let mut was_persistent = false;
        let previous = {
            let mut st = self.lock();
            match st.sessions.get_mut(client_id) {
                None => None,
                Some(entry) => {
                    was_persistent = entry.persist;
                    entry.generation = generation;
                    match std::mem::replace(&mut entry.slot, Slot::Transition) {
                        Slot::Offline { state, .. } => Some(Ok(*state)),
                        Slot::Online { kick } => Some(Err(kick)),
                        Slot::Transition => None,
                    }
                }
            }
        };
        let previous = match previous {
            None => None,
            Some(Ok(state)) => Some(state),
            Some(Err(kick)) => {
                let (reply, rx) = oneshot::channel();
                let handed = if kick.send(Control::Kick(Kick { reply })).await.is_ok() {
                    tokio::time::timeout(Duration::from_secs(5), rx)
                        .await
                        .ok()
                        .and_then(Result::ok)
                } else {
                    None
                };
                if handed.is_none() {
                    tracing::warn!(%client_id, "previous connection did not hand over its session");
                }
                handed
            }
        };

        let mut st = self.lock();
        let State {
            sessions,
            subs,
            journal,
            ..
        } = &mut *st;
        let (state, session_present) = match previous {
            Some(state) if !clean_start => (state, true),
            other => {
                if let Some(old) = other {
                    for f in old.subscriptions.keys() {
                        subs.remove(client_id, f);
                    }
                }
                if let Some(j) = journal.as_mut().filter(|_| was_persistent) {
                    j.wipe(client_id);
                }
                let (state, tx) = self.fresh_session(client_id);
                sessions.insert(
                    client_id.clone(),
                    Entry {
                        mailbox: tx,
                        generation,
                        slot: Slot::Transition,
                        persist: false,
                    },
                );
                (state, false)
            }
        };
        if let Some(entry) = sessions.get_mut(client_id) {
            if entry.generation == generation {
                entry.slot = Slot::Online { kick: kick_tx };
            }
        }
        Opened {
            state,
            session_present,
            generation,
            kick: kick_rx,
        }
    }

    /// Tells the session expiry the connection of `generation` asked for: a session that outlives
    /// its connection is persistent (kept in the store, when persistence is on).
    pub fn session_opened(&self, client_id: &Arc<str>, generation: u64, expiry: Option<Duration>) {
        let mut st = self.lock();
        let State {
            sessions, journal, ..
        } = &mut *st;
        let Some(entry) = sessions.get_mut(client_id) else {
            return;
        };
        if entry.generation != generation {
            return;
        }
        let persist = expiry != Some(Duration::ZERO);
        let was = std::mem::replace(&mut entry.persist, persist);
        if let Some(j) = journal {
            if persist {
                j.meta(
                    client_id,
                    record::SessionMeta {
                        expiry,
                        deadline: None,
                    },
                );
            } else if was {
                // Resumed with expiry 0: it ends with this connection, or with a crash.
                j.wipe(client_id);
            }
        }
    }

    /// Returns a session when its connection ends. With `expiry` zero the session ends now; otherwise
    /// it stays (collecting messages) until it expires (`None`: never) or a client resumes it.
    /// Ignored if another connection took the session over meanwhile.
    pub fn close_session(
        &self,
        mut state: SessionState,
        generation: u64,
        expiry: Option<Duration>,
    ) {
        let mut st = self.lock();
        if st
            .sessions
            .get(&state.client_id)
            .is_none_or(|e| e.generation != generation)
        {
            return;
        }
        shared::hand_back(&mut st, &mut state);
        let State {
            sessions,
            subs,
            journal,
            ..
        } = &mut *st;
        let Some(entry) = sessions.get_mut(&state.client_id) else {
            return;
        };
        let persist = entry.persist;
        let journal = journal.as_mut().filter(|_| persist);
        if expiry == Some(Duration::ZERO) {
            for f in state.subscriptions.keys() {
                subs.remove(&state.client_id, f);
            }
            sessions.remove(&state.client_id);
            if let Some(j) = journal {
                j.wipe(&state.client_id);
            }
        } else {
            let expires_at = expiry.map(|d| Instant::now() + d);
            if let Some(j) = journal {
                let deadline = expiry.map(|d| std::time::SystemTime::now() + d);
                j.meta(&state.client_id, record::SessionMeta { expiry, deadline });
            }
            entry.slot = Slot::Offline {
                state: Box::new(state),
                expires_at,
            };
        }
    }

    /// True while the connection of `generation` still owns the session (no takeover, no resume).
    pub fn is_current(&self, client_id: &str, generation: u64) -> bool {
        self.lock()
            .sessions
            .get(client_id)
            .is_some_and(|e| e.generation == generation)
    }

    /// True when a connection newer than `generation` holds the session (a will is then cancelled).
    pub fn superseded(&self, client_id: &str, generation: u64) -> bool {
        self.lock()
            .sessions
            .get(client_id)
            .is_some_and(|e| e.generation != generation)
    }

    /// Ends offline sessions whose expiry has passed. Returns how many ended.
    pub fn expire_sessions(&self, now: Instant) -> usize {
        let mut st = self.lock();
        let State {
            sessions,
            subs,
            journal,
            ..
        } = &mut *st;
        let expired: Vec<Arc<str>> = sessions
            .iter()
            .filter(
                |(_, e)| matches!(&e.slot, Slot::Offline { expires_at: Some(t), .. } if *t <= now),
            )
            .map(|(k, _)| k.clone())
            .collect();
        for id in &expired {
            if let Some(Entry {
                slot: Slot::Offline { state, .. },
                ..
            }) = sessions.remove(id)
            {
                for f in state.subscriptions.keys() {
                    subs.remove(id, f);
                }
            }
            if let Some(j) = journal.as_mut() {
                j.wipe(id);
            }
        }
        expired.len()
    }

    /// Adds a subscription to the routing table.
    pub fn subscribe(&self, client_id: &Arc<str>, sub: Subscription) -> bool {
        let mut st = self.lock();
        if let Some((j, id)) = st.journal_for(client_id) {
            j.subscribe(&id, &sub);
        }
        st.subs.insert(client_id, sub)
    }

    /// Removes a subscription from the routing table.
    pub fn unsubscribe(&self, client_id: &str, filter: &str) -> bool {
        let mut st = self.lock();
        if let Some((j, id)) = st.journal_for(client_id) {
            j.unsubscribe(&id, filter);
        }
        st.subs.remove(client_id, filter)
    }

    /// Retained messages matching `filter`.
    pub fn retained_matching(&self, filter: &TopicFilter) -> Vec<Arc<Message>> {
        let now = Instant::now();
        self.lock()
            .retained
            .values()
            .filter(|m| filter.matches(&m.topic) && !m.expired(now))
            .cloned()
            .collect()
    }

    /// Routes a message to every matching session and updates the retained store. A session with
    /// several matching subscriptions gets one delivery at the highest granted QoS carrying all the
    /// matching subscription identifiers. Returns the number of sessions it was queued for.
    pub fn publish(&self, msg: Message) -> usize {
        self.route(msg).queued
    }

    /// [`Broker::publish`], also telling whether the message changed persistent state that the
    /// publisher's ack must wait for (`persist_interval = 0`).
    pub fn route(&self, msg: Message) -> Routed {
        let msg = Arc::new(msg);
        let mut st = self.lock();
        let ticket_before = st.journal.as_ref().map(|j| j.ticket);
        if msg.retain {
            if msg.payload.is_empty() {
                st.retained.remove(&msg.topic);
            } else {
                st.retained.insert(msg.topic.clone(), msg.clone());
            }
            // `$SYS/…` is the server's own, republished after every start (mosquitto does not
            // store it either).
            if let Some(j) = st
                .journal
                .as_mut()
                .filter(|_| !msg.topic.starts_with("$SYS/"))
            {
                j.retain(&msg.topic, (!msg.payload.is_empty()).then(|| msg.clone()));
            }
        }
        let mut targets: Vec<(Arc<str>, Delivery)> = Vec::new();
        st.subs.for_each_match(&msg.topic, |client, sub| {
            if sub.options.no_local && msg.origin.as_deref() == Some(&**client) {
                return;
            }
            let qos = msg.qos.min(sub.options.qos);
            let retain = msg.retain && sub.options.retain_as_published;
            match targets.iter_mut().find(|(c, _)| c == client) {
                Some((_, d)) => {
                    if qos > d.qos {
                        d.qos = qos;
                        d.stream = sub.stream;
                    }
                    d.retain |= retain;
                    d.sub_ids.extend(sub.sub_id);
                }
                None => targets.push((
                    client.clone(),
                    Delivery {
                        msg: msg.clone(),
                        qos,
                        retain,
                        sub_ids: sub.sub_id.into_iter().collect(),
                        stream: sub.stream,
                        shared: None,
                        seq: 0,
                    },
                )),
            }
        });
        let mut queued = shared::route(&mut st, &msg, &self.stats);
        let State {
            sessions, journal, ..
        } = &mut *st;
        for (client, mut d) in targets {
            let Some(entry) = sessions.get(&client) else {
                continue;
            };
            let mut journal = journal
                .as_mut()
                .filter(|_| entry.persist && d.qos != QoS::AtMostOnce);
            if let Some(j) = journal.as_deref_mut() {
                j.queue(&client, &mut d);
            }
            let seq = d.seq;
            match entry.mailbox.try_send(d) {
                Ok(()) => queued += 1,
                Err(_) => {
                    if let Some(j) = journal {
                        j.finished(&client, seq);
                    }
                    self.stats
                        .dropped_queue_full
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%client, topic = %msg.topic, "session queue full, message dropped");
                }
            }
        }
        self.stats.routed.fetch_add(1, Ordering::Relaxed);
        self.stats
            .delivered
            .fetch_add(queued as u64, Ordering::Relaxed);
        let mut ticket = None;
        if let (Some(p), Some(j)) = (&self.persist, journal.as_ref()) {
            if Some(j.ticket) != ticket_before && p.synchronous() {
                ticket = Some(j.ticket);
                p.wake.notify_one();
            }
        }
        Routed { queued, ticket }
    }

    /// A stored delivery (`seq` set) is done with: acknowledged by the client, expired or dropped.
    pub fn finished(&self, client_id: &str, d: &Delivery) {
        if d.seq == 0 {
            return;
        }
        let mut st = self.lock();
        // Without an entry the session has ended, and all it stored goes with it anyway.
        let Some((id, _)) = st.sessions.get_key_value(client_id) else {
            return;
        };
        let id = id.clone();
        if let Some(j) = st.journal.as_mut() {
            j.finished(&id, d.seq);
        }
    }

    /// Waits until the change numbered `ticket` (from [`Broker::route`]) is on disk.
    pub async fn wait_durable(&self, ticket: u64) {
        if let Some(p) = &self.persist {
            let mut rx = p.written.subscribe();
            let _ = rx.wait_for(|w| *w >= ticket).await;
        }
    }

    /// Writes the changes to the store every `persist_interval` (at once when it is zero) until
    /// `stop` turns true, then writes what is left (after the sessions have closed, on shutdown).
    /// Does nothing with persistence off.
    pub async fn run_flusher(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let Some(p) = &self.persist else { return };
        // Only `true` is ever sent; a dropped sender (a server dropped without `shutdown`) stops too.
        let mut stopped = *stop.borrow();
        while !stopped {
            let wait = async {
                if p.synchronous() {
                    p.wake.notified().await;
                } else {
                    tokio::time::sleep(p.interval).await;
                }
            };
            stopped = tokio::select! {
                _ = wait => false,
                _ = stop.changed() => true,
            };
            self.write_changes().await;
        }
        tracing::info!("broker state written");
    }

    /// Writes what changed since the last write (one transaction).
    async fn write_changes(&self) {
        let Some(p) = &self.persist else { return };
        let taken = match self.lock().journal.as_mut() {
            Some(j) => j.take(),
            None => return,
        };
        persist::write_once(p, taken).await;
    }

    /// Asks every connected session to check its login again (after the accounts are reloaded). A
    /// full channel already holds a recheck (which will see the newest accounts) or a takeover.
    pub fn recheck_online(&self) {
        for entry in self.lock().sessions.values() {
            if let Slot::Online { kick } = &entry.slot {
                let _ = kick.try_send(Control::Recheck);
            }
        }
    }

    /// Number of sessions (online and offline).
    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Whether a QoS is granted as asked (the server supports all three).
    pub fn grant(qos: QoS) -> QoS {
        qos
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use quicft_proto::SubscriptionOptions;

    pub(super) fn sub(filter: &str, qos: QoS) -> Subscription {
        Subscription {
            filter: TopicFilter::parse(filter).expect("filter"),
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
            sub_id: None,
            stream: 4,
        }
    }

    #[tokio::test]
    async fn offline_session_keeps_queue_bounded() {
        let broker = Broker::new(2);
        let id: Arc<str> = "dev".into();
        let mut opened = broker.open_session(&id, true).await;
        assert!(!opened.session_present);
        opened
            .state
            .subscriptions
            .insert("t".into(), sub("t", QoS::AtLeastOnce));
        broker.subscribe(&id, sub("t", QoS::AtLeastOnce));
        broker.close_session(opened.state, opened.generation, None);
        for _ in 0..3 {
            broker.publish(Message::server(
                "t".into(),
                Bytes::from_static(b"x"),
                QoS::ExactlyOnce,
            ));
        }
        assert_eq!(broker.stats.dropped_queue_full.load(Ordering::Relaxed), 1);
        let mut resumed = broker.open_session(&id, false).await;
        assert!(resumed.session_present);
        let d = resumed
            .state
            .mailbox
            .try_recv()
            .expect("queued while offline");
        assert_eq!(d.qos, QoS::AtLeastOnce, "downgraded to the granted QoS");
        assert_eq!(d.stream, 4);
    }

    #[tokio::test]
    async fn takeover_hands_state_over() {
        let broker = Arc::new(Broker::new(8));
        let id: Arc<str> = "dev".into();
        let mut first = broker.open_session(&id, false).await;
        first.state.incoming_qos2.insert(7);
        let b2 = broker.clone();
        let id2 = id.clone();
        let second = tokio::spawn(async move { b2.open_session(&id2, false).await });
        let Some(Control::Kick(kick)) = first.kick.recv().await else {
            panic!("kicked")
        };
        let old_generation = first.generation;
        kick.reply.send(first.state).ok();
        let second = second.await.expect("join");
        assert!(second.session_present);
        assert!(second.state.incoming_qos2.contains(&7));
        assert!(!broker.is_current(&id, old_generation));
        assert!(broker.is_current(&id, second.generation));
    }

    #[tokio::test]
    async fn clean_start_and_expiry_remove_subscriptions() {
        let broker = Broker::new(8);
        let id: Arc<str> = "dev".into();
        let mut o = broker.open_session(&id, true).await;
        o.state
            .subscriptions
            .insert("t".into(), sub("t", QoS::AtMostOnce));
        broker.subscribe(&id, sub("t", QoS::AtMostOnce));
        broker.close_session(o.state, o.generation, Some(Duration::from_secs(1)));
        assert_eq!(broker.expire_sessions(Instant::now()), 0);
        assert_eq!(
            broker.expire_sessions(Instant::now() + Duration::from_secs(2)),
            1
        );
        assert_eq!(
            broker.publish(Message::server("t".into(), Bytes::new(), QoS::AtMostOnce)),
            0
        );
        assert_eq!(broker.session_count(), 0);
    }

    #[test]
    fn overlapping_subscriptions_deliver_once_at_max_qos() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        rt.block_on(async {
            let broker = Broker::new(8);
            let id: Arc<str> = "dev".into();
            let mut o = broker.open_session(&id, true).await;
            let mut a = sub("a/+", QoS::AtMostOnce);
            a.sub_id = Some(1);
            let mut b = sub("a/#", QoS::ExactlyOnce);
            b.sub_id = Some(2);
            broker.subscribe(&id, a);
            broker.subscribe(&id, b);
            let mut m = Message::server("a/b".into(), Bytes::from_static(b"p"), QoS::AtLeastOnce);
            m.retain = true;
            assert_eq!(broker.publish(m), 1);
            let d = o.state.mailbox.try_recv().expect("one delivery");
            assert_eq!(d.qos, QoS::AtLeastOnce);
            assert_eq!(d.sub_ids, [1, 2]);
            assert!(o.state.mailbox.try_recv().is_err());
            assert_eq!(
                broker
                    .retained_matching(&TopicFilter::parse("a/#").expect("f"))
                    .len(),
                1
            );
        });
    }
}
