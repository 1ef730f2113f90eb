//! Persistence of the broker's state: what changed since the last write, and the flusher that
//! writes it to the store (`store.rs`) every `persist_interval`.
//!
//! The broker records each change to persistent state in a [`Journal`] kept under its own lock
//! (no second lock on the hot path): a retained message set or cleared, a persistent session
//! opened, closed or ended, a subscription of one made or dropped, a QoS 1/2 delivery queued for
//! one or finished (acknowledged, expired, dropped). Changes to the same key coalesce: a delivery
//! queued and acknowledged between two writes never reaches the disk, so a persistent subscriber
//! that keeps up costs two hash-map operations per message. Records are encoded by the flusher,
//! outside the lock.
//!
//! The guarantee: after a clean stop (SIGTERM) everything; after a crash everything older than
//! `persist_interval`. With `persist_interval = 0` the flusher writes as soon as there is a change
//! and a session holds the PUBACK/PUBREC of a message whose routing changed persistent state
//! until that change is on disk ([`super::Broker::wait_durable`]); writes of concurrent sessions
//! share one transaction (group commit).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{watch, Notify};

use super::message::{Delivery, Message};
use super::record::{self, SessionMeta};
use super::store::{Batch, SessionBatch, Store};
use super::subscriptions::Subscription;

/// Changes not yet written, and the number of the last one.
#[derive(Default)]
pub(super) struct Journal {
    retained: HashMap<String, Option<Arc<Message>>>,
    sessions: HashMap<Arc<str>, SessionChanges>,
    /// Counts changes; a session waits for the count its change had to be written (interval 0).
    pub ticket: u64,
    /// Sequence number of the last delivery stored.
    pub seq: u64,
}

#[derive(Default)]
struct SessionChanges {
    /// Everything stored for the session goes first (it ended, or a clean start replaced it).
    wipe: bool,
    meta: Option<SessionMeta>,
    subscriptions: HashMap<String, Option<Subscription>>,
    queue: BTreeMap<u64, Option<Delivery>>,
}

impl Journal {
    fn session(&mut self, client_id: &Arc<str>) -> &mut SessionChanges {
        self.ticket += 1;
        self.sessions.entry(client_id.clone()).or_default()
    }

    pub fn retain(&mut self, topic: &str, msg: Option<Arc<Message>>) {
        self.ticket += 1;
        self.retained.insert(topic.to_owned(), msg);
    }

    /// The session ended: drop all that is stored of it (and what was not written yet).
    pub fn wipe(&mut self, client_id: &Arc<str>) {
        let s = self.session(client_id);
        *s = SessionChanges {
            wipe: true,
            ..SessionChanges::default()
        };
    }

    pub fn meta(&mut self, client_id: &Arc<str>, meta: SessionMeta) {
        self.session(client_id).meta = Some(meta);
    }

    pub fn subscribe(&mut self, client_id: &Arc<str>, sub: &Subscription) {
        let f = sub.filter.as_str().to_owned();
        self.session(client_id)
            .subscriptions
            .insert(f, Some(sub.clone()));
    }

    pub fn unsubscribe(&mut self, client_id: &Arc<str>, filter: &str) {
        let s = self.session(client_id);
        s.subscriptions.insert(filter.to_owned(), None);
    }

    /// A new delivery for a persistent session: numbers it and records it.
    pub fn queue(&mut self, client_id: &Arc<str>, d: &mut Delivery) {
        self.seq += 1;
        d.seq = self.seq;
        let seq = self.seq;
        self.session(client_id).queue.insert(seq, Some(d.clone()));
    }

    /// A stored delivery is finished with.
    pub fn finished(&mut self, client_id: &Arc<str>, seq: u64) {
        let s = self.session(client_id);
        // Queued since the last write: it never reaches the disk.
        if let Some(Some(_)) = s.queue.get(&seq) {
            s.queue.remove(&seq);
        } else {
            s.queue.insert(seq, None);
        }
    }

    fn is_empty(&self) -> bool {
        self.retained.is_empty() && self.sessions.is_empty()
    }

    /// Takes the changes so far, leaving the journal empty (the counters stay).
    pub fn take(&mut self) -> Journal {
        Journal {
            retained: std::mem::take(&mut self.retained),
            sessions: std::mem::take(&mut self.sessions),
            ticket: self.ticket,
            seq: self.seq,
        }
    }

    /// The records to write.
    fn encode(self) -> Batch {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let retained = self
            .retained
            .into_iter()
            .map(|(t, m)| {
                let v = m.map(|m| record::encode_message(&m, now, wall));
                (t, v)
            })
            .collect();
        let sessions = self
            .sessions
            .into_iter()
            .map(|(id, s)| SessionBatch {
                client_id: id.to_string(),
                wipe: s.wipe,
                meta: s.meta.as_ref().map(record::encode_meta),
                subscriptions: s
                    .subscriptions
                    .into_iter()
                    .map(|(f, sub)| (f, sub.as_ref().map(record::encode_subscription)))
                    .collect(),
                queue: s
                    .queue
                    .into_iter()
                    .map(|(seq, d)| (seq, d.map(|d| record::encode_delivery(&d, now, wall))))
                    .collect(),
            })
            .collect();
        Batch { retained, sessions }
    }
}

/// The store and the flusher's signals, held by the broker when persistence is on.
pub(super) struct Persist {
    pub store: Arc<Store>,
    /// Zero: write at once and hold acks until written.
    pub interval: Duration,
    /// Wakes the flusher when `interval` is zero.
    pub wake: Notify,
    /// The journal ticket written last.
    pub written: watch::Sender<u64>,
}

impl Persist {
    pub fn new(store: Store, interval: Duration) -> Persist {
        Persist {
            store: Arc::new(store),
            interval,
            wake: Notify::new(),
            written: watch::channel(0).0,
        }
    }

    /// Whether acks wait for the disk.
    pub fn synchronous(&self) -> bool {
        self.interval.is_zero()
    }
}

/// Writes what `take` hands over, in a blocking thread; then tells the waiters.
pub(super) async fn write_once(persist: &Persist, journal: Journal) {
    let ticket = journal.ticket;
    if !journal.is_empty() {
        let store = persist.store.clone();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || store.write(journal.encode())).await;
        match result {
            Ok(Ok(())) => tracing::trace!(took = ?started.elapsed(), "broker state written"),
            // Acks are not held forever on a failing disk: the error is logged loudly instead.
            Ok(Err(e)) => tracing::error!(error = %e, "cannot write broker state"),
            Err(e) => tracing::error!(error = %e, "broker state writer failed"),
        }
    }
    persist.written.send_replace(ticket);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use bytes::Bytes;
    use quicft_proto::topic::TopicFilter;
    use quicft_proto::{QoS, SubscriptionOptions};

    use super::super::{Broker, Message, Subscription};
    use super::*;

    fn sub(filter: &str) -> Subscription {
        Subscription {
            filter: TopicFilter::parse(filter).expect("filter"),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
            sub_id: Some(4),
            stream: 0,
        }
    }

    fn msg(topic: &str, payload: &'static [u8]) -> Message {
        Message::server(topic.into(), Bytes::from_static(payload), QoS::AtLeastOnce)
    }

    /// Opens a persistent session "dev" subscribed to "t", leaves it offline.
    async fn offline_subscriber(b: &Broker) {
        let id: Arc<str> = "dev".into();
        let mut o = b.open_session(&id, true).await;
        b.session_opened(&id, o.generation, Some(Duration::from_secs(3600)));
        o.state.subscriptions.insert("t".into(), sub("t"));
        b.subscribe(&id, sub("t"));
        b.close_session(o.state, o.generation, Some(Duration::from_secs(3600)));
    }

    #[tokio::test]
    async fn offline_queue_subscriptions_and_retained_come_back() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let b = Broker::open(3, dir.path(), Duration::from_secs(1)).expect("open");
            offline_subscriber(&b).await;
            for p in [&b"1"[..], b"2", b"3", b"4"] {
                b.publish(msg("t", p));
            }
            let mut r = msg("r", b"kept");
            r.retain = true;
            b.publish(r);
            b.write_changes().await;
        }
        // Reopened with a smaller queue bound: the oldest messages that fit are kept.
        let b = Broker::open(2, dir.path(), Duration::from_secs(1)).expect("reopen");
        let r = b.retained_matching(&TopicFilter::parse("#").expect("f"));
        assert_eq!(r.len(), 1);
        assert_eq!(&r[0].payload[..], b"kept");
        let id: Arc<str> = "dev".into();
        let mut o = b.open_session(&id, false).await;
        assert!(o.session_present);
        assert!(o.state.subscriptions.contains_key("t"));
        let first = o.state.mailbox.try_recv().expect("queued");
        let second = o.state.mailbox.try_recv().expect("queued");
        assert_eq!(
            (&first.msg.payload[..], &second.msg.payload[..]),
            (&b"1"[..], &b"2"[..])
        );
        assert_eq!(first.sub_ids, [4]);
        assert!(
            o.state.mailbox.try_recv().is_err(),
            "bounded by max_queued_messages"
        );
        // The restored subscription routes; what is acknowledged is forgotten by the store.
        assert_eq!(b.publish(msg("t", b"5")), 1);
        b.finished(&id, &first);
        b.finished(&id, &second);
        b.close_session(o.state, o.generation, Some(Duration::from_secs(3600)));
        b.write_changes().await;
        drop(b);
        let b = Broker::open(8, dir.path(), Duration::from_secs(1)).expect("reopen");
        let mut o = b.open_session(&id, false).await;
        let d = o.state.mailbox.try_recv().expect("the new one");
        assert_eq!(&d.msg.payload[..], b"5");
        assert!(
            o.state.mailbox.try_recv().is_err(),
            "acknowledged ones are gone"
        );
    }

    #[tokio::test]
    async fn ended_sessions_and_expired_deadlines_are_gone() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let b = Broker::open(8, dir.path(), Duration::from_secs(1)).expect("open");
            offline_subscriber(&b).await;
            // A second session that expires at once.
            let id: Arc<str> = "short".into();
            let o = b.open_session(&id, true).await;
            b.session_opened(&id, o.generation, Some(Duration::from_secs(1)));
            b.close_session(o.state, o.generation, Some(Duration::from_millis(1)));
            // A clean start replaces the first session.
            let dev: Arc<str> = "dev".into();
            let o = b.open_session(&dev, true).await;
            b.session_opened(&dev, o.generation, Some(Duration::ZERO));
            b.close_session(o.state, o.generation, Some(Duration::ZERO));
            b.write_changes().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let b = Broker::open(8, dir.path(), Duration::from_secs(1)).expect("reopen");
        assert_eq!(b.session_count(), 0);
        assert_eq!(b.publish(msg("t", b"x")), 0);
    }

    #[tokio::test]
    async fn a_delivery_acknowledged_before_the_write_never_reaches_the_disk() {
        let dir = tempfile::tempdir().expect("dir");
        let b = Broker::open(8, dir.path(), Duration::from_secs(1)).expect("open");
        let id: Arc<str> = "dev".into();
        let mut o = b.open_session(&id, true).await;
        b.session_opened(&id, o.generation, Some(Duration::from_secs(60)));
        b.subscribe(&id, sub("t"));
        b.publish(msg("t", b"1"));
        let d = o.state.mailbox.try_recv().expect("queued");
        assert_ne!(d.seq, 0, "numbered for the store");
        b.finished(&id, &d);
        let j = b.lock().journal.as_mut().expect("journal").take();
        let s = j.sessions.get(&id).expect("session changes");
        assert!(s.queue.is_empty(), "queued and finished cancel out");
        assert_eq!(b.stats.dropped_queue_full.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn interval_zero_hands_out_tickets_that_the_flusher_writes() {
        let dir = tempfile::tempdir().expect("dir");
        let b = Arc::new(Broker::open(8, dir.path(), Duration::ZERO).expect("open"));
        let (stop, rx) = watch::channel(false);
        let flusher = tokio::spawn(b.clone().run_flusher(rx));
        let mut r = msg("r", b"kept");
        r.retain = true;
        let ticket = b
            .route(r)
            .ticket
            .expect("a retained message must be written before its ack");
        tokio::time::timeout(Duration::from_secs(10), b.wait_durable(ticket))
            .await
            .expect("written");
        assert!(
            b.route(msg("nobody", b"x")).ticket.is_none(),
            "nothing to wait for"
        );
        stop.send(true).expect("stop");
        flusher.await.expect("flusher");
    }
}
