//! The will: what is published on the client's behalf when its connection ends abnormally.
//!
//! Promises: published after a network error, keepalive timeout, protocol error, takeover or
//! shutdown, and after DISCONNECT 0x04; never after a normal DISCONNECT. Its delay is capped by the
//! session expiry (MQTT 5 §3.1.3.2.2), and the driver cancels a delayed will when the client
//! reconnects in time. Its topic was checked against the topic rules at CONNECT (`connect`).

use std::time::{Duration, Instant};

use quicft_proto::{Publish, Will};

use super::state::{Exit, Session};
use crate::broker::Message;

impl Session {
    /// The will due for this way of ending, as a message and its delay.
    pub(super) fn take_will(&mut self, exit: &Exit, now: Instant) -> Option<(Message, Duration)> {
        let due = !matches!(exit, Exit::Normal);
        let w = self.will.take().filter(|_| due)?;
        Some(will_message(
            w,
            self.client_id.clone(),
            self.session_expiry,
            now,
        ))
    }
}

fn will_message(
    w: Will,
    client_id: std::sync::Arc<str>,
    session_expiry: Option<Duration>,
    now: Instant,
) -> (Message, Duration) {
    let delay = w
        .properties
        .will_delay_interval
        .map_or(Duration::ZERO, |s| Duration::from_secs(u64::from(s)));
    let delay = delay.min(session_expiry.unwrap_or(Duration::MAX));
    let p = Publish {
        dup: false,
        qos: w.qos,
        retain: w.retain,
        topic: w.topic.clone(),
        pkid: 0,
        properties: w.properties,
        payload: w.payload,
    };
    (
        Message::from_publish(p, w.topic, Some(client_id), now),
        delay,
    )
}
