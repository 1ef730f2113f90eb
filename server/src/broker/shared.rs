//! Shared subscriptions (MQTT 5 §4.8.2): each message matching `$share/{group}/{filter}` goes to
//! one member of the group.
//!
//! The member is chosen round-robin, skipping members that are offline or whose queue is full.
//! Round-robin rather than least-loaded: a session's queue is emptied into its in-flight window
//! (up to Receive Maximum) almost at once, so queue length says little about a consumer's load until
//! it is far behind — and then it is full and skipped anyway. Round-robin costs one step per
//! message and spreads evenly over equal consumers (how backends scale out).
//!
//! Only when no online member can take a message does it go to a member whose session is offline
//! (kept with a session expiry), to be delivered when it returns; with no member at all it is
//! dropped and counted like a full queue.
//!
//! Promise: a QoS 1/2 message a member has not acknowledged (no PUBACK, or no PUBREC for QoS 2) or
//! not even received (still in its queue) when its connection ends is given to another member of
//! the group at once (the spec allows this as soon as the connection is lost). After PUBREC the
//! client owns a QoS 2 message and it stays. What no other member can take stays with the session.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use quicft_proto::QoS;

use super::persist::Journal;
use super::subscriptions::ShareGroup;
use super::{BrokerStats, Delivery, Entry, Message, SessionState, Slot, State};

/// Queues `msg` with one member of every shared group whose filter matches its topic. Returns the
/// number of deliveries queued.
pub(super) fn route(st: &mut State, msg: &Arc<Message>, stats: &BrokerStats) -> usize {
    let State {
        sessions,
        subs,
        journal,
        ..
    } = st;
    let mut queued = 0;
    for group in subs.shared_matches(&msg.topic) {
        if deliver_one(sessions, journal, group, msg, None) {
            queued += 1;
        } else {
            stats.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(group = %group.key, topic = %msg.topic, "no member of the shared subscription can take the message");
        }
    }
    queued
}

/// Queues `msg` with one member of `group` other than `exclude`: online members first, in turn. A
/// QoS 1/2 delivery to a persistent session is recorded in the journal (persistence on), as
/// ordinary deliveries are.
fn deliver_one(
    sessions: &HashMap<Arc<str>, Entry>,
    journal: &mut Option<Journal>,
    group: &mut ShareGroup,
    msg: &Arc<Message>,
    exclude: Option<&str>,
) -> bool {
    let n = group.members.len();
    for online_only in [true, false] {
        for i in 0..n {
            let idx = (group.next + i) % n;
            let Some(m) = group.members.get(idx) else {
                continue;
            };
            if exclude == Some(&*m.client) {
                continue;
            }
            let Some(entry) = sessions.get(&m.client) else {
                continue;
            };
            if online_only && matches!(entry.slot, Slot::Offline { .. }) {
                continue;
            }
            let mut d = Delivery {
                msg: msg.clone(),
                qos: msg.qos.min(m.sub.options.qos),
                retain: msg.retain && m.sub.options.retain_as_published,
                sub_ids: m.sub.sub_id.into_iter().collect(),
                stream: m.sub.stream,
                shared: Some(group.key.clone()),
                seq: 0,
            };
            let mut journal = journal
                .as_mut()
                .filter(|_| entry.persist && d.qos != QoS::AtMostOnce);
            if let Some(j) = journal.as_deref_mut() {
                j.queue(&m.client, &mut d);
            }
            let seq = d.seq;
            if entry.mailbox.try_send(d).is_ok() {
                group.next = (idx + 1) % n;
                return true;
            }
            if let Some(j) = journal {
                j.finished(&m.client, seq);
            }
        }
    }
    false
}

/// Gives the shared deliveries of a session whose connection ended, unacknowledged or still
/// queued, to other members of their groups (see the module's promise).
pub(super) fn hand_back(st: &mut State, state: &mut SessionState) {
    let State {
        sessions,
        subs,
        journal,
        ..
    } = st;
    let Some(own) = sessions.get(&state.client_id) else {
        return;
    };
    let client = state.client_id.clone();
    let persist = own.persist;
    let mut redeliver = |d: &Delivery| -> bool {
        let Some(key) = d.shared.as_deref() else {
            return false;
        };
        let given = match subs.share_group(key) {
            Some(group) => deliver_one(sessions, journal, group, &d.msg, Some(&client)),
            None => false,
        };
        // Handed on: this session's stored copy is done with.
        if let Some(j) = journal.as_mut().filter(|_| given && persist && d.seq != 0) {
            j.finished(&client, d.seq);
        }
        given
    };
    let unacked: Vec<u16> = state
        .outgoing
        .iter()
        .filter(|(_, o)| o.awaiting_ack && o.delivery.shared.is_some())
        .map(|(pkid, _)| *pkid)
        .collect();
    for pkid in unacked {
        if let Some(o) = state.outgoing.get(&pkid) {
            if redeliver(&o.delivery) {
                state.outgoing.remove(&pkid);
            }
        }
    }
    // The queue is drained and refilled in order with what stays; nothing else sends into it
    // meanwhile, since routing holds the same lock.
    let mut stays = Vec::new();
    while let Ok(d) = state.mailbox.try_recv() {
        if d.shared.is_none() || !redeliver(&d) {
            stays.push(d);
        }
    }
    for d in stays {
        let _ = own.mailbox.try_send(d);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use quicft_proto::QoS;

    use super::super::tests::sub;
    use super::super::{Broker, Message, Outgoing};
    use super::*;

    fn msg(payload: &'static str) -> Message {
        Message::server(
            "jobs/a".into(),
            Bytes::from_static(payload.as_bytes()),
            QoS::AtLeastOnce,
        )
    }

    fn drain(rx: &mut tokio::sync::mpsc::Receiver<Delivery>) -> Vec<Delivery> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[tokio::test]
    async fn each_message_goes_to_one_member_in_turn() {
        let broker = Broker::new(100);
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        let mut oa = broker.open_session(&a, true).await;
        let mut ob = broker.open_session(&b, true).await;
        let mut oc = broker.open_session(&c, true).await;
        broker.subscribe(&a, sub("$share/g/jobs/+", QoS::AtLeastOnce));
        broker.subscribe(&b, sub("$share/g/jobs/#", QoS::AtLeastOnce));
        broker.subscribe(&b, sub("$share/g/jobs/+", QoS::AtMostOnce));
        broker.subscribe(&c, sub("jobs/a", QoS::AtLeastOnce));
        for _ in 0..10 {
            // One delivery to group "$share/g/jobs/+", one to "$share/g/jobs/#" (a different
            // shared subscription, though the same group name), one to the ordinary subscriber.
            assert_eq!(broker.publish(msg("x")), 3);
        }
        let (da, db, dc) = (
            drain(&mut oa.state.mailbox),
            drain(&mut ob.state.mailbox),
            drain(&mut oc.state.mailbox),
        );
        assert_eq!(dc.len(), 10, "ordinary subscription: every message");
        assert!(dc.iter().all(|d| d.shared.is_none()));
        assert_eq!(da.len(), 5, "round-robin: half of group jobs/+");
        let b_plus = db
            .iter()
            .filter(|d| d.shared.as_deref() == Some("$share/g/jobs/+"))
            .collect::<Vec<_>>();
        assert_eq!(b_plus.len(), 5);
        assert!(
            b_plus.iter().all(|d| d.qos == QoS::AtMostOnce),
            "granted QoS of the member"
        );
        assert_eq!(db.len(), 15, "and all of jobs/#, its only member");
    }

    #[tokio::test]
    async fn offline_members_are_skipped_while_another_is_online() {
        let broker = Broker::new(100);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let oa = broker.open_session(&a, true).await;
        let mut ob = broker.open_session(&b, true).await;
        let mut sa = oa.state;
        sa.subscriptions.insert(
            "$share/g/jobs/a".into(),
            sub("$share/g/jobs/a", QoS::AtLeastOnce),
        );
        broker.subscribe(&a, sub("$share/g/jobs/a", QoS::AtLeastOnce));
        broker.subscribe(&b, sub("$share/g/jobs/a", QoS::AtLeastOnce));
        broker.close_session(sa, oa.generation, None);
        for _ in 0..4 {
            broker.publish(msg("x"));
        }
        assert_eq!(
            drain(&mut ob.state.mailbox).len(),
            4,
            "all to the online member"
        );
        broker.close_session(ob.state, ob.generation, Some(std::time::Duration::ZERO));
        assert_eq!(
            broker.publish(msg("y")),
            1,
            "no one online: queued for the offline member"
        );
        let mut back = broker.open_session(&a, false).await;
        assert_eq!(drain(&mut back.state.mailbox).len(), 1);
    }

    #[tokio::test]
    async fn unacknowledged_and_queued_messages_go_to_another_member() {
        let broker = Broker::new(100);
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        let mut oa = broker.open_session(&a, true).await;
        let mut ob = broker.open_session(&b, true).await;
        let _oc = broker.open_session(&c, true).await;
        broker.subscribe(&a, sub("$share/g/jobs/a", QoS::ExactlyOnce));
        broker.subscribe(&b, sub("$share/g/jobs/a", QoS::AtLeastOnce));
        broker.subscribe(&a, sub("jobs/#", QoS::AtLeastOnce));
        broker.subscribe(&c, sub("$share/other/jobs/a", QoS::AtLeastOnce));
        for p in ["1", "2", "3", "4"] {
            broker.publish(msg(p));
        }
        // a got 1 and 3 from the group (and 1-4 from jobs/#); it "sends" 1 and 3 and the first
        // ordinary one, and is acknowledged for 3 only.
        let mut queue = drain(&mut oa.state.mailbox);
        assert_eq!(queue.len(), 6);
        let shared: Vec<Delivery> = queue
            .iter()
            .filter(|d| d.shared.is_some())
            .cloned()
            .collect();
        assert_eq!(shared.len(), 2);
        let ordinary = queue
            .iter()
            .position(|d| d.shared.is_none())
            .expect("ordinary");
        let ordinary = queue.remove(ordinary);
        oa.state.outgoing.insert(
            1,
            Outgoing {
                delivery: shared[0].clone(),
                awaiting_ack: true,
            },
        );
        oa.state.outgoing.insert(
            2,
            Outgoing {
                delivery: ordinary,
                awaiting_ack: true,
            },
        );
        // Put what was not "sent" back into a's queue: 3 ordinary ones, none shared.
        for d in queue.into_iter().filter(|d| d.shared.is_none()) {
            broker
                .lock()
                .sessions
                .get(&a)
                .expect("a")
                .mailbox
                .try_send(d)
                .expect("room");
        }
        // A fifth message: the group's turn is a's again; it waits in a's queue.
        broker.publish(msg("5"));
        let before = drain(&mut ob.state.mailbox).len();
        assert_eq!(before, 2, "b's turns: 2 and 4");
        broker.close_session(
            oa.state,
            oa.generation,
            Some(std::time::Duration::from_secs(60)),
        );
        let moved = drain(&mut ob.state.mailbox);
        let payloads: Vec<&[u8]> = moved.iter().map(|d| &d.msg.payload[..]).collect();
        assert_eq!(payloads, [b"1", b"5"], "unacked 1 and queued 5 moved to b");
        assert!(moved
            .iter()
            .all(|d| d.qos == QoS::AtLeastOnce && d.stream == 4));
        let mut back = broker.open_session(&a, false).await;
        assert!(
            back.state.outgoing.contains_key(&2),
            "ordinary in-flight stays"
        );
        assert!(
            !back.state.outgoing.contains_key(&1),
            "shared in-flight moved"
        );
        let left = drain(&mut back.state.mailbox);
        let order: Vec<&[u8]> = left.iter().map(|d| &d.msg.payload[..]).collect();
        assert_eq!(
            order,
            [b"2", b"3", b"4", b"5"],
            "ordinary queued stay, in order"
        );
        assert!(left.iter().all(|d| d.shared.is_none()));
    }
}
