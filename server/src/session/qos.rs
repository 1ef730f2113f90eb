//! The QoS 1 and 2 flows (MQTT 5 §4.3) in both directions, and the order of acks on a stream.
//!
//! Promise: the PUBACKs on a stream leave in the order of the PUBLISHes they answer (MQTT 5 §4.6),
//! even when a file command's ack is held until the command finishes and a later PUBLISH is acked
//! at once: later acks wait behind the held one. A QoS 2 message is routed once however often it
//! is retransmitted before its PUBREL.

use quicft_proto::{Packet, Protocol, PubResp, QoS, ReasonCode};

use super::state::Session;
use crate::broker::StreamId;
use crate::metrics::Sent;

impl Session {
    /// Answers a PUBLISH the session has routed (or refused with `code`).
    pub(super) fn ack_incoming(&mut self, stream: StreamId, qos: QoS, pkid: u16, code: ReasonCode) {
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.ack_publish(stream, pkid, code),
            QoS::ExactlyOnce => {
                if !code.is_error() {
                    self.state.incoming_qos2.insert(pkid);
                    self.inflight_in += 1;
                }
                let code = self.v5_or_success(code);
                self.env.metrics.reason_sent(Sent::PubRec, code);
                self.send(stream, &Packet::PubRec(PubResp::new(pkid, code)));
            }
        }
    }

    /// `code` for a v5 client; 3.1.1 acks carry no reason.
    pub(super) fn v5_or_success(&self, code: ReasonCode) -> ReasonCode {
        if self.protocol == Protocol::V5 {
            code
        } else {
            ReasonCode::SUCCESS
        }
    }

    pub(super) fn on_puback(&mut self, r: PubResp) {
        if self
            .state
            .outgoing
            .get(&r.pkid)
            .is_some_and(|o| o.delivery.qos == QoS::AtLeastOnce)
        {
            self.outgoing_done(r.pkid);
        }
    }

    pub(super) fn on_pubrec(&mut self, stream: StreamId, r: PubResp) {
        let Some(o) = self.state.outgoing.get_mut(&r.pkid) else {
            if self.protocol == Protocol::V5 {
                let rel = PubResp::new(r.pkid, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
                self.send(stream, &Packet::PubRel(rel));
            }
            return;
        };
        if r.code.is_error() {
            self.outgoing_done(r.pkid);
        } else {
            o.awaiting_ack = false;
            self.send(
                stream,
                &Packet::PubRel(PubResp::new(r.pkid, ReasonCode::SUCCESS)),
            );
        }
    }

    pub(super) fn on_pubcomp(&mut self, r: PubResp) {
        if self
            .state
            .outgoing
            .get(&r.pkid)
            .is_some_and(|o| !o.awaiting_ack)
        {
            self.outgoing_done(r.pkid);
        }
    }

    /// An outgoing QoS 1/2 flow is complete: the broker's store may forget the message.
    fn outgoing_done(&mut self, pkid: u16) {
        if let Some(o) = self.state.outgoing.remove(&pkid) {
            self.env.broker.finished(&self.client_id, &o.delivery);
        }
    }

    pub(super) fn on_pubrel(&mut self, stream: StreamId, r: PubResp) {
        let code = if self.state.incoming_qos2.remove(&r.pkid) {
            self.inflight_in = self.inflight_in.saturating_sub(1);
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        self.send(stream, &Packet::PubComp(PubResp::new(r.pkid, code)));
    }

    /// Sends a PUBACK now, or queues it behind held file-transfer acks of the same stream.
    pub(super) fn ack_publish(&mut self, stream: StreamId, pkid: u16, code: ReasonCode) {
        let code = self.v5_or_success(code);
        self.env.metrics.reason_sent(Sent::PubAck, code);
        let protocol = self.protocol;
        match self.streams.get_mut(&stream) {
            Some(s) if s.pending_acks.is_empty() => {
                s.reply(&Packet::PubAck(PubResp::new(pkid, code)), protocol);
            }
            Some(s) => s
                .pending_acks
                .push_back((pkid, Some(PubResp::new(pkid, code)))),
            None => {}
        }
    }

    /// Reserves a PUBACK slot on the stream so acks leave in PUBLISH order.
    pub(super) fn hold_ack(&mut self, stream: StreamId, pkid: u16) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.pending_acks.push_back((pkid, None));
        }
    }

    /// Fills a held slot and sends every ack at the front that is now complete.
    pub(super) fn complete_ack(&mut self, stream: StreamId, pkid: u16, code: ReasonCode) {
        self.env.metrics.reason_sent(Sent::PubAck, code);
        let protocol = self.protocol;
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if let Some(slot) = s
            .pending_acks
            .iter_mut()
            .find(|(id, r)| *id == pkid && r.is_none())
        {
            slot.1 = Some(PubResp::new(pkid, code));
        }
        while let Some((_, Some(_))) = s.pending_acks.front() {
            if let Some((_, Some(r))) = s.pending_acks.pop_front() {
                s.reply(&Packet::PubAck(r), protocol);
            }
        }
    }
}
