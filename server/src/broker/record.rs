//! How the broker's state is written in the store (`store.rs`): one small binary record per
//! retained message, session, subscription and queued delivery.
//!
//! A message is kept as the MQTT 5 PUBLISH it would be sent as (the codec in `proto` already
//! round-trips every property), behind a few fields a PUBLISH cannot carry: the absolute
//! expiry time (wall clock, so that it keeps counting while the server is down), the publisher's
//! client id (for No Local) and, for a delivery, its granted QoS, retain flag, subscription ids and
//! stream. Every record starts with a version byte. Decoding never panics: a short or malformed
//! record is an error that names what was wrong.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use quicft_proto::topic::TopicFilter;
use quicft_proto::{Packet, Protocol, QoS, SubscriptionOptions};

use super::message::{Delivery, Message};
use super::subscriptions::Subscription;

const VERSION: u8 = 1;
/// The largest packet MQTT can express; stored messages were accepted under a smaller limit.
const MAX_PACKET: usize = 268_435_460;

/// A record that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRecord(pub String);

fn bad(what: &str) -> BadRecord {
    BadRecord(what.to_owned())
}

/// What a session keeps in the store besides its subscriptions and queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionMeta {
    /// The session expiry interval; `None`: the session never expires.
    pub expiry: Option<Duration>,
    /// When an offline session ends (wall clock); `None` while a connection holds it (a server
    /// killed meanwhile starts the expiry at restart).
    pub deadline: Option<SystemTime>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// An `Instant` as wall-clock time (for expiry times that must survive a restart), and back.
pub fn instant_to_wall(t: Instant, now: Instant, wall_now: SystemTime) -> SystemTime {
    match t.checked_duration_since(now) {
        Some(ahead) => wall_now + ahead,
        None => wall_now - now.duration_since(t),
    }
}

pub fn wall_to_instant(t: SystemTime, now: Instant, wall_now: SystemTime) -> Instant {
    match t.duration_since(wall_now) {
        Ok(ahead) => now + ahead,
        Err(_) => now,
    }
}

pub fn encode_meta(m: &SessionMeta) -> Vec<u8> {
    let mut out = vec![VERSION];
    out.extend_from_slice(&m.expiry.map_or(u64::MAX, |d| d.as_secs()).to_be_bytes());
    out.extend_from_slice(&m.deadline.map_or(0, unix_ms).to_be_bytes());
    out
}

pub fn decode_meta(bytes: &[u8]) -> Result<SessionMeta, BadRecord> {
    let mut r = Reader::new(bytes)?;
    let expiry = r.u64()?;
    let deadline = r.u64()?;
    Ok(SessionMeta {
        expiry: (expiry != u64::MAX).then(|| Duration::from_secs(expiry)),
        deadline: (deadline != 0).then(|| from_unix_ms(deadline)),
    })
}

pub fn encode_subscription(s: &Subscription) -> Vec<u8> {
    let o = &s.options;
    let options = o.qos as u8
        | u8::from(o.no_local) << 2
        | u8::from(o.retain_as_published) << 3
        | (o.retain_handling & 3) << 4;
    let mut out = vec![VERSION, options];
    out.extend_from_slice(&s.sub_id.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&s.stream.to_be_bytes());
    out
}

pub fn decode_subscription(filter: &str, bytes: &[u8]) -> Result<Subscription, BadRecord> {
    let mut r = Reader::new(bytes)?;
    let options = r.u8()?;
    let sub_id = r.u32()?;
    let stream = r.u64()?;
    Ok(Subscription {
        filter: TopicFilter::parse(filter).map_err(|_| bad("invalid topic filter"))?,
        options: SubscriptionOptions {
            qos: QoS::from_u8(options & 3).ok_or_else(|| bad("invalid QoS"))?,
            no_local: options & 4 != 0,
            retain_as_published: options & 8 != 0,
            retain_handling: (options >> 4) & 3,
        },
        sub_id: (sub_id != 0).then_some(sub_id),
        stream,
    })
}

/// A retained message.
pub fn encode_message(m: &Message, now: Instant, wall_now: SystemTime) -> Vec<u8> {
    let mut out = vec![VERSION];
    put_message(&mut out, m, now, wall_now);
    out
}

pub fn decode_message(
    bytes: &[u8],
    now: Instant,
    wall_now: SystemTime,
) -> Result<Message, BadRecord> {
    let mut r = Reader::new(bytes)?;
    r.message(now, wall_now)
}

/// A delivery queued (or in flight) for a persistent session.
pub fn encode_delivery(d: &Delivery, now: Instant, wall_now: SystemTime) -> Vec<u8> {
    let mut out = vec![VERSION, d.qos as u8, u8::from(d.retain)];
    out.extend_from_slice(&d.stream.to_be_bytes());
    let n = u16::try_from(d.sub_ids.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n.to_be_bytes());
    for id in d.sub_ids.iter().take(usize::from(n)) {
        out.extend_from_slice(&id.to_be_bytes());
    }
    put_message(&mut out, &d.msg, now, wall_now);
    out
}

pub fn decode_delivery(
    seq: u64,
    bytes: &[u8],
    now: Instant,
    wall_now: SystemTime,
) -> Result<Delivery, BadRecord> {
    let mut r = Reader::new(bytes)?;
    let qos = QoS::from_u8(r.u8()?).ok_or_else(|| bad("invalid QoS"))?;
    let retain = r.u8()? != 0;
    let stream = r.u64()?;
    let n = r.u16()?;
    let mut sub_ids = Vec::new();
    for _ in 0..n {
        sub_ids.push(r.u32()?);
    }
    let msg = r.message(now, wall_now)?;
    Ok(Delivery {
        msg: Arc::new(msg),
        qos,
        retain,
        sub_ids,
        stream,
        // Which shared subscription chose it is not stored: after a restart a shared delivery
        // stays with the member it was queued for.
        shared: None,
        seq,
    })
}

fn put_message(out: &mut Vec<u8>, m: &Message, now: Instant, wall_now: SystemTime) {
    let expires = m
        .expires_at
        .map_or(0, |t| unix_ms(instant_to_wall(t, now, wall_now)).max(1));
    out.extend_from_slice(&expires.to_be_bytes());
    let origin = m.origin.as_deref().unwrap_or("");
    let origin_len = u16::try_from(origin.len()).unwrap_or(0);
    out.extend_from_slice(&origin_len.to_be_bytes());
    out.extend_from_slice(&origin.as_bytes()[..usize::from(origin_len)]);
    let publish = quicft_proto::Publish {
        dup: false,
        qos: m.qos,
        retain: m.retain,
        topic: m.topic.clone(),
        pkid: if m.qos == QoS::AtMostOnce { 0 } else { 1 },
        properties: m.properties.clone(),
        payload: m.payload.clone(),
    };
    let mut buf = BytesMut::new();
    // A message the broker accepted re-encodes; if it somehow did not, the record is left short
    // and reading it back fails loudly instead of restoring a different message.
    if let Err(e) = Packet::Publish(publish).encode(Protocol::V5, &mut buf) {
        tracing::warn!(topic = %m.topic, error = %e, "cannot encode message for the store");
    }
    out.extend_from_slice(&buf);
}

/// Reads fixed-size fields off the front of a record.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Result<Reader<'a>, BadRecord> {
        match bytes.split_first() {
            Some((&VERSION, rest)) => Ok(Reader { rest }),
            Some((v, _)) => Err(BadRecord(format!("unknown record version {v}"))),
            None => Err(bad("empty record")),
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], BadRecord> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| bad("record too short"))?;
        self.rest = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, BadRecord> {
        Ok(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, BadRecord> {
        Ok(u16::from_be_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, BadRecord> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, BadRecord> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    fn message(&mut self, now: Instant, wall_now: SystemTime) -> Result<Message, BadRecord> {
        let expires = self.u64()?;
        let origin_len = usize::from(self.u16()?);
        if self.rest.len() < origin_len {
            return Err(bad("record too short"));
        }
        let (origin, rest) = self.rest.split_at(origin_len);
        let origin = std::str::from_utf8(origin).map_err(|_| bad("origin is not UTF-8"))?;
        let mut buf = BytesMut::from(rest);
        let p = match Packet::decode(&mut buf, Protocol::V5, MAX_PACKET) {
            Ok(Some(Packet::Publish(p))) if buf.is_empty() => p,
            Ok(_) => return Err(bad("stored message is not one PUBLISH")),
            Err(e) => return Err(BadRecord(format!("stored message: {e}"))),
        };
        self.rest = &[];
        Ok(Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: p.properties,
            expires_at: (expires != 0)
                .then(|| wall_to_instant(from_unix_ms(expires), now, wall_now)),
            origin: (!origin.is_empty()).then(|| Arc::from(origin)),
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn delivery_round_trips_and_keeps_its_deadline() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut m = Message::server("a/b".into(), Bytes::from_static(b"hi"), QoS::ExactlyOnce);
        m.retain = true;
        m.origin = Some("dev".into());
        m.expires_at = Some(now + Duration::from_secs(30));
        m.properties.user_properties = vec![("k".into(), "v".into())];
        let d = Delivery {
            msg: Arc::new(m),
            qos: QoS::AtLeastOnce,
            retain: true,
            sub_ids: vec![7, 9],
            stream: 8,
            shared: None,
            seq: 0,
        };
        let bytes = encode_delivery(&d, now, wall);
        // Read back 10 s later (wall clock), as after a restart.
        let later = now + Duration::from_secs(1);
        let back = decode_delivery(5, &bytes, later, wall + Duration::from_secs(10)).expect("ok");
        assert_eq!(
            (back.qos, back.retain, back.stream, back.seq),
            (QoS::AtLeastOnce, true, 8, 5)
        );
        assert_eq!(back.sub_ids, [7, 9]);
        assert_eq!(back.msg.topic, "a/b");
        assert_eq!(&back.msg.payload[..], b"hi");
        assert_eq!(back.msg.origin.as_deref(), Some("dev"));
        assert_eq!(back.msg.properties, d.msg.properties);
        let left = back.msg.expires_at.expect("expiry").duration_since(later);
        assert!(left.as_secs() >= 19 && left.as_secs() <= 20, "{left:?}");
        // Every truncation is an error, never a panic.
        for n in 0..bytes.len() {
            assert!(decode_delivery(1, &bytes[..n], now, wall).is_err(), "{n}");
        }
    }

    #[test]
    fn subscription_and_meta_round_trip() {
        let s = Subscription {
            filter: TopicFilter::parse("a/+").expect("f"),
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: 2,
            },
            sub_id: Some(3),
            stream: 4,
        };
        let back = decode_subscription("a/+", &encode_subscription(&s)).expect("ok");
        assert_eq!(back.options, s.options);
        assert_eq!((back.sub_id, back.stream), (Some(3), 4));
        let m = SessionMeta {
            expiry: Some(Duration::from_secs(60)),
            deadline: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
        };
        assert_eq!(decode_meta(&encode_meta(&m)).expect("ok"), m);
        let never = SessionMeta {
            expiry: None,
            deadline: None,
        };
        assert_eq!(decode_meta(&encode_meta(&never)).expect("ok"), never);
        assert!(decode_meta(&[9, 0]).is_err());
    }
}
