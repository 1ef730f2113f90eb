//! Deliveries from the session's queue to the client.
//!
//! Promises: a delivery goes on the stream that subscribed while it lives, else on the oldest data
//! stream; QoS 1/2 deliveries never exceed the client's Receive Maximum (the driver pulls from the
//! queue only while [`Session::can_send_more`]); QoS 0 deliveries are dropped, not buffered, once a
//! stream's writer holds `limits.max_stream_backlog` bytes; a delivery larger than the client's
//! Maximum Packet Size is dropped (MQTT 5 §3.1.2.11.4); a resumed session re-sends what was in
//! flight (MQTT 5 §4.4) once a stream exists.

use std::time::Instant;

use quicft_proto::{Packet, PubResp, QoS, ReasonCode};

use super::state::Session;
use crate::broker::{Delivery, Outgoing, StreamId};

impl Session {
    /// The stream for a delivery: the subscribing stream while it lives, else the oldest data stream.
    fn delivery_stream(&self, wanted: StreamId) -> Option<StreamId> {
        if self.data_order.contains(&wanted) {
            return Some(wanted);
        }
        self.data_order.first().copied()
    }

    /// Whether another QoS 1/2 delivery fits the client's window (and a stream exists for it).
    pub fn can_send_more(&self) -> bool {
        !self.data_order.is_empty() && self.state.outgoing.len() < self.send_window
    }

    /// Whether the driver may take from the session's queue: the window has room and nothing
    /// taken earlier still waits.
    pub fn wants_deliveries(&self) -> bool {
        self.can_send_more() && self.stash.is_empty()
    }

    /// Sends what waited (retained messages of a subscription) as far as the window allows.
    /// `backlog` tells the bytes a stream's writer still holds.
    pub fn drain_stash(&mut self, now: Instant, backlog: &dyn Fn(StreamId) -> usize) {
        while self.can_send_more() {
            let Some(d) = self.stash.pop_front() else {
                break;
            };
            self.handle_delivery(d, now, backlog);
        }
    }

    /// One delivery from the session's queue. `backlog` tells the bytes a stream's writer still holds.
    pub fn handle_delivery(
        &mut self,
        d: Delivery,
        now: Instant,
        backlog: &dyn Fn(StreamId) -> usize,
    ) {
        if d.msg.expired(now) {
            self.env.broker.finished(&self.client_id, &d);
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
        let backlog_limit = self.env.config.limits.max_stream_backlog;
        let Some(s) = self.streams.get_mut(&stream) else {
            self.env.broker.finished(&self.client_id, &d);
            return;
        };
        if d.qos == QoS::AtMostOnce && backlog(stream) + s.out.len() > backlog_limit {
            self.env
                .broker
                .stats
                .dropped_queue_full
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let start = s.out.len();
        if let Err(e) = Packet::Publish(publish).encode(protocol, &mut s.out) {
            tracing::warn!(error = %e, "cannot encode delivery");
            self.env.broker.finished(&self.client_id, &d);
            return;
        }
        if s.out.len() - start > max {
            tracing::debug!(
                size = s.out.len() - start,
                "delivery larger than the client's maximum packet size dropped"
            );
            s.out.truncate(start);
            self.env.broker.finished(&self.client_id, &d);
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

    /// Re-sends the in-flight deliveries of a resumed session once a stream exists.
    pub(super) fn resend_inflight(&mut self, now: Instant) {
        if !self.resend_pending || self.data_order.is_empty() {
            return;
        }
        self.resend_pending = false;
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
            if let Some(s) = self.streams.get_mut(&stream) {
                s.push(&packet, self.protocol);
            }
        }
    }
}
