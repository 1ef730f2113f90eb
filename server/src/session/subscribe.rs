//! SUBSCRIBE and UNSUBSCRIBE.
//!
//! Promise: a subscription remembers the stream it was made on, so its messages (and the retained
//! messages it asks for, queued right behind its SUBACK) are delivered on that stream (DESIGN §3).
//! Shared subscriptions are refused (0x9E), as are filters the topic rules do not allow (0x87).

use quicft_proto::topic::TopicFilter;
use quicft_proto::{Packet, Properties, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe};

use super::state::Session;
use crate::broker::{Delivery, StreamId, Subscription};

impl Session {
    pub(super) fn on_subscribe(&mut self, stream: StreamId, s: Subscribe) {
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for f in s.filters {
            let code = match TopicFilter::parse(&f.filter) {
                Err(_) => ReasonCode::TOPIC_FILTER_INVALID,
                Ok(filter) if filter.shared().is_some() => {
                    ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
                }
                Ok(filter) if !self.env.acl.subscribe(self.who(), &filter) => {
                    tracing::info!(client_id = %self.client_id, filter = %f.filter, "subscription refused");
                    ReasonCode::NOT_AUTHORIZED
                }
                Ok(filter) => {
                    let sub = Subscription {
                        filter: filter.clone(),
                        options: f.options,
                        sub_id,
                        stream,
                    };
                    let existed = self
                        .state
                        .subscriptions
                        .insert(f.filter.clone(), sub.clone())
                        .is_some();
                    self.env.broker.subscribe(&self.client_id, sub);
                    let send_retained = match f.options.retain_handling {
                        0 => true,
                        1 => !existed,
                        _ => false,
                    };
                    if send_retained {
                        for m in self.env.broker.retained_matching(&filter) {
                            if f.options.no_local && m.origin.as_deref() == Some(&*self.client_id) {
                                continue;
                            }
                            retained.push(Delivery {
                                qos: m.qos.min(f.options.qos),
                                retain: true,
                                sub_ids: sub_id.into_iter().collect(),
                                stream,
                                msg: m,
                                seq: 0,
                            });
                        }
                    }
                    ReasonCode(f.options.qos as u8)
                }
            };
            codes.push(code);
        }
        self.send(
            stream,
            &Packet::SubAck(SubAck {
                pkid: s.pkid,
                codes,
                properties: Properties::default(),
            }),
        );
        self.stash.extend(retained);
    }

    pub(super) fn on_unsubscribe(&mut self, stream: StreamId, u: Unsubscribe) {
        let codes = u
            .filters
            .iter()
            .map(|f| {
                let had = self.state.subscriptions.remove(f).is_some();
                self.env.broker.unsubscribe(&self.client_id, f);
                if had {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::NO_SUBSCRIPTION_EXISTED
                }
            })
            .collect();
        self.send(
            stream,
            &Packet::UnsubAck(UnsubAck {
                pkid: u.pkid,
                codes,
                properties: Properties::default(),
            }),
        );
    }
}
