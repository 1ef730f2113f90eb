//! `$aws/things/{thing}/streams/…`: the session's side of cloud-to-device delivery (AWS IoT
//! MQTT-based file delivery). Every publish under that prefix is the stream service's and is never
//! routed. A request (`describe`, `get`) of the client's own thing, on a topic the ACL lets it
//! publish to, is acknowledged and handed to [`crate::delivery`] to answer; one naming another
//! thing, or a server topic (`data`, `description`, `rejected`), is refused with 0x87 and
//! unanswered; a malformed one gets 0x90.
//!
//! Under `$file-delivery/` a device may publish only its own status reports
//! (`$file-delivery/status/{its client id}/{deliveryId}`), handed over the same way; anything else
//! there is the server's (0x87).

use quicft_proto::aws_stream as aws;
use quicft_proto::file_delivery as fd;
use quicft_proto::{Publish, ReasonCode};

use super::state::Session;
use crate::broker::StreamId;
use crate::delivery::StreamRequest;

impl Session {
    pub(super) fn on_stream_request(&mut self, stream: StreamId, p: Publish, topic: String) {
        let (qos, pkid) = (p.qos, p.pkid);
        let code = if topic.starts_with(fd::PREFIX) {
            match fd::parse_status_topic(&topic) {
                Some(t) if t.client_id == &*self.client_id => ReasonCode::SUCCESS,
                _ => ReasonCode::NOT_AUTHORIZED,
            }
        } else {
            self.stream_request_code(&topic)
        };
        if code == ReasonCode::SUCCESS {
            self.actions.streams.push(StreamRequest {
                client_id: self.client_id.clone(),
                topic,
                payload: p.payload,
            });
        } else {
            tracing::info!(%topic, code = %code, "delivery request refused");
        }
        self.ack_incoming(stream, qos, pkid, code);
    }

    fn stream_request_code(&self, topic: &str) -> ReasonCode {
        match aws::parse_topic(topic) {
            Some(Ok(t)) if t.action.is_request() && t.thing == &*self.client_id => {
                if self.env.acl.publish(self.who(), topic) {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::NOT_AUTHORIZED
                }
            }
            Some(Ok(_)) => ReasonCode::NOT_AUTHORIZED,
            _ => ReasonCode::TOPIC_NAME_INVALID,
        }
    }
}
