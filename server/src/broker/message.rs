//! What the broker moves around: a published message, shared by every session it is delivered to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quicft_proto::{Properties, Publish, QoS};

/// Stream a subscription was made on (QUIC stream id; 0 for the single TCP stream). Deliveries for a
/// subscription go out on that stream (DESIGN §3).
pub type StreamId = u64;

/// An application message as routed: immutable and shared (`Arc`) between all its deliveries.
#[derive(Debug)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Properties forwarded to subscribers (payload format, content type, response topic,
    /// correlation data, user properties). Topic alias and subscription ids are per delivery.
    pub properties: Properties,
    /// When the Message Expiry Interval runs out, if one was set.
    pub expires_at: Option<Instant>,
    /// Client id of the publisher, for No Local; `None` for messages the server itself publishes.
    pub origin: Option<Arc<str>>,
}

impl Message {
    /// Builds the routed message from a client's PUBLISH (topic already resolved from any alias).
    pub fn from_publish(
        p: Publish,
        topic: String,
        origin: Option<Arc<str>>,
        now: Instant,
    ) -> Message {
        let mut properties = p.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        let expires_at = properties
            .message_expiry_interval
            .map(|s| now + Duration::from_secs(u64::from(s)));
        Message {
            topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties,
            expires_at,
            origin,
        }
    }

    /// A message the server publishes itself (file-transfer responses, events).
    pub fn server(topic: String, payload: Bytes, qos: QoS) -> Message {
        let properties = Properties {
            payload_format_indicator: Some(1),
            content_type: Some("application/json".into()),
            ..Properties::default()
        };
        Message {
            topic,
            payload,
            qos,
            retain: false,
            properties,
            expires_at: None,
            origin: None,
        }
    }

    /// True when the Message Expiry Interval has passed.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }

    /// The PUBLISH to send for one delivery: QoS downgraded to the subscription's, the expiry interval
    /// set to what remains, the subscription identifiers that matched.
    pub fn to_publish(&self, d: &Delivery, pkid: u16, now: Instant) -> Publish {
        let mut properties = self.properties.clone();
        if let Some(t) = self.expires_at {
            let left = t.saturating_duration_since(now).as_secs();
            properties.message_expiry_interval = Some(u32::try_from(left).unwrap_or(u32::MAX));
        }
        properties.subscription_identifiers.clone_from(&d.sub_ids);
        Publish {
            dup: false,
            qos: d.qos,
            retain: d.retain,
            topic: self.topic.clone(),
            pkid,
            properties,
            payload: self.payload.clone(),
        }
    }
}

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg: Arc<Message>,
    /// min(message QoS, granted QoS).
    pub qos: QoS,
    /// Retain flag as sent: set for retained messages sent at subscribe time, or with Retain As Published.
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    /// Stream the matching subscription came from.
    pub stream: StreamId,
    /// The shared subscription (`$share/{group}/{filter}`) this delivery was chosen for, if any: if
    /// its session goes away before acknowledging, another member of the group gets it.
    pub shared: Option<Arc<str>>,
    /// Its number in the broker's store (a QoS 1/2 delivery to a persistent session while
    /// persistence is on); 0: not stored. Tell [`super::Broker::finished`] when it is done with.
    pub seq: u64,
}
