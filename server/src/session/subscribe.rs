//! SUBSCRIBE and UNSUBSCRIBE.
//!
//! Promise: a subscription remembers the stream it was made on, so its messages (and the retained
//! messages it asks for, queued right behind its SUBACK) are delivered on that stream (DESIGN §3).
//! Filters the topic rules do not allow are refused (0x87). Shared subscriptions
//! (`$share/{group}/{filter}`, MQTT 5 §4.8.2) are checked against the ACL by their inner filter,
//! get no retained messages, and may not set No Local (a protocol error); routing among the
//! members is the broker's (`broker::shared`).

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
            let parsed = TopicFilter::parse(&f.filter);
            let shared = parsed.as_ref().is_ok_and(|p| p.shared().is_some());
            if shared && f.options.no_local {
                // MQTT 5 §3.8.3.1: "It is a Protocol Error to set the No Local bit to 1 on a Shared
                // Subscription".
                self.violation(
                    stream,
                    ReasonCode::PROTOCOL_ERROR,
                    "No Local on a shared subscription",
                );
                return;
            }
            let code = match parsed {
                Err(_) => ReasonCode::TOPIC_FILTER_INVALID,
                Ok(filter) if !self.may_subscribe(&filter) => {
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
                    // MQTT 5 §4.8.2: no retained messages for a shared subscription.
                    let send_retained = match f.options.retain_handling {
                        _ if shared => false,
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
                                shared: None,
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

    /// The ACL decides on the filter topics are matched against: a shared subscription's inner one.
    fn may_subscribe(&self, filter: &TopicFilter) -> bool {
        match filter.shared() {
            None => self.env.acl.subscribe(self.who(), filter),
            Some((_, inner)) => TopicFilter::parse(inner)
                .is_ok_and(|inner| self.env.acl.subscribe(self.who(), &inner)),
        }
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
