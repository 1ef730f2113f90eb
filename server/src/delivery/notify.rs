//! quicft's own delivery topics (`quicft_proto::file_delivery`): a new delivery is announced on
//! each target's `$file-delivery/notify/{clientId}`, and devices report what they did on
//! `$file-delivery/status/{clientId}/{deliveryId}`.
//!
//! Who is notified: every client id the delivery names, and every connected client a pattern
//! matches. The notification is a QoS 1 message routed like any other, so a device whose session
//! persists gets it when it comes back; its state becomes `notified` when the message was queued
//! for its session (it had subscribed), and stays `pending` otherwise.

use bytes::Bytes;
use quicft_proto::file_delivery::{self as fd, Notification, ReportedState, StatusReport};
use quicft_proto::QoS;

use super::{store, DeliveryService, DeviceState, Record, Targets};
use crate::broker::Message;

impl DeliveryService {
    /// Announces `record` to its targets.
    pub(super) fn notify(&self, record: &Record, targets: &Targets) {
        let mut who: Vec<String> = targets.exact().map(str::to_owned).collect();
        for client in self.inner.clients.transports().into_keys() {
            if targets.matches(&client) && !who.contains(&client) {
                who.push(client);
            }
        }
        let note = Notification {
            id: record.id.clone(),
            name: record.name.clone(),
            version: record.version.clone(),
            size: record.size,
            sha256: record.sha256.clone(),
            expires_at: record.expires_at,
        };
        let payload = Bytes::from(serde_json::to_vec(&note).unwrap_or_default());
        for client in who {
            let msg = Message::server(fd::notify_topic(&client), payload.clone(), QoS::AtLeastOnce);
            if self.inner.broker.publish(msg) > 0 {
                self.progress(&record.id, &client, DeviceState::Notified, 0, None);
            }
        }
    }

    /// A device's status report (its session checked the client id is its own).
    pub(super) fn report(&self, client_id: &str, delivery_id: &str, payload: &[u8]) {
        if !store::valid_id(delivery_id) {
            tracing::info!(client_id, delivery_id, "status report for no delivery");
            return;
        }
        let targeted = self
            .entries()
            .get(delivery_id)
            .is_some_and(|e| e.targets.matches(client_id));
        if !targeted {
            tracing::info!(
                client_id,
                delivery_id,
                "status report for a delivery not for this client"
            );
            return;
        }
        let report = match StatusReport::decode(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(client_id, delivery_id, error = %e, "bad status report");
                return;
            }
        };
        let state = match report.state {
            ReportedState::Downloading => DeviceState::Downloading,
            ReportedState::Verified => DeviceState::Verified,
            ReportedState::Applied => DeviceState::Applied,
            ReportedState::Failed => DeviceState::Failed,
        };
        tracing::info!(client_id, delivery_id, state = ?state, "device reports");
        self.progress(delivery_id, client_id, state, 0, report.reason);
    }
}
