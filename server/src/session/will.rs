//! The will: what is published on the client's behalf when its connection ends abnormally.
//!
//! Promises: published after a network error, keepalive timeout, protocol error, takeover or
//! shutdown, and after DISCONNECT 0x04; never after a normal DISCONNECT. With a Will Delay Interval
//! (MQTT 5 §3.1.3.2.2) it is published when the delay has passed or the session ends, whichever
//! comes first (the delay is capped by the session expiry), and not at all if a new connection for
//! the same client id is made before then — even one that ended again meanwhile ([`PendingWills`]).
//! The PUBLISH carries the will's properties a PUBLISH may carry (the delay is not one of them),
//! and its Message Expiry Interval counts from the moment it is published. Its topic was checked
//! against the topic rules at CONNECT (`connect`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quicft_proto::{Publish, Will};

use super::state::{Exit, Session};
use crate::broker::Message;

/// A will that is due, and how long to wait before publishing it.
pub(crate) struct DueWill {
    pub delay: Duration,
    publish: Publish,
    client_id: Arc<str>,
}

impl DueWill {
    /// The message to publish at `now` (its expiry interval starts then).
    pub fn message(self, now: Instant) -> Message {
        let topic = self.publish.topic.clone();
        Message::from_publish(self.publish, topic, Some(self.client_id), now)
    }
}

impl Session {
    /// The will due for this way of ending, with its delay.
    pub(super) fn take_will(&mut self, exit: &Exit) -> Option<DueWill> {
        let due = !matches!(exit, Exit::Normal);
        let w = self.will.take().filter(|_| due)?;
        Some(due_will(w, self.client_id.clone(), self.session_expiry))
    }
}

fn due_will(w: Will, client_id: Arc<str>, session_expiry: Option<Duration>) -> DueWill {
    let mut properties = w.properties;
    // The delay is the server's business: a PUBLISH may not carry it (MQTT 5 §3.3.2.3), and the
    // encoder refuses a packet that does.
    let delay = properties
        .will_delay_interval
        .take()
        .map_or(Duration::ZERO, |s| Duration::from_secs(u64::from(s)));
    // The session ends at its expiry: the will goes then if the delay is longer.
    let delay = delay.min(session_expiry.unwrap_or(Duration::MAX));
    DueWill {
        delay,
        publish: Publish {
            dup: false,
            qos: w.qos,
            retain: w.retain,
            topic: w.topic,
            pkid: 0,
            properties,
            payload: w.payload,
        },
        client_id,
    }
}

/// Delayed wills not yet published, by client id. A connection for a client id cancels its will
/// ([`PendingWills::cancel`], before it takes the session); a delayed will is published only if
/// [`PendingWills::fire`] finds it still pending. Holds one small entry per client with a will
/// waiting (each removed when it fires or is cancelled), so it is bounded by the sessions.
#[derive(Default)]
pub(crate) struct PendingWills {
    inner: Mutex<Tickets>,
}

#[derive(Default)]
struct Tickets {
    next: u64,
    by_client: HashMap<Arc<str>, u64>,
}

impl PendingWills {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tickets> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the delayed will of `client_id`; the ticket to fire it with.
    pub fn schedule(&self, client_id: &Arc<str>) -> u64 {
        let mut t = self.lock();
        t.next += 1;
        let ticket = t.next;
        // An older will of the same client id was cancelled by the connection that left this one.
        t.by_client.insert(client_id.clone(), ticket);
        ticket
    }

    /// A new connection for `client_id`: its delayed will, if any, is not published.
    pub fn cancel(&self, client_id: &str) -> bool {
        self.lock().by_client.remove(client_id).is_some()
    }

    /// The delay of `ticket` has passed: true (and forgotten) if its will is still to be published.
    pub fn fire(&self, client_id: &str, ticket: u64) -> bool {
        let mut t = self.lock();
        if t.by_client.get(client_id) == Some(&ticket) {
            t.by_client.remove(client_id);
            true
        } else {
            false
        }
    }

    /// Wills waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().by_client.len()
    }
}
