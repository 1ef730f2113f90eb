//! quicft's own cloud-to-device delivery topics, beside AWS's stream protocol ([`crate::aws_stream`]):
//!
//! ```text
//! $file-delivery/notify/{clientId}                 server → device  a Notification (JSON), QoS 1
//! $file-delivery/status/{clientId}/{deliveryId}    device → server  a StatusReport (JSON)
//! ```
//! A device subscribes to its own notify topic (with a persistent session it is told of deliveries
//! made while it was offline) and reports what it did with a delivery on its status topic.

use serde::{Deserialize, Serialize};

/// Every topic of this module starts with it; devices publish only status reports under it.
pub const PREFIX: &str = "$file-delivery/";
pub const NOTIFY_PREFIX: &str = "$file-delivery/notify/";
pub const STATUS_PREFIX: &str = "$file-delivery/status/";

/// `$file-delivery/notify/{clientId}`.
pub fn notify_topic(client_id: &str) -> String {
    format!("{NOTIFY_PREFIX}{client_id}")
}

/// `$file-delivery/status/{clientId}/{deliveryId}`, split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusTopic<'a> {
    pub client_id: &'a str,
    pub delivery_id: &'a str,
}

/// Parses a status topic; `None` if `topic` is not one. The client id is everything up to the
/// last `/` (a delivery id never holds one).
pub fn parse_status_topic(topic: &str) -> Option<StatusTopic<'_>> {
    let rest = topic.strip_prefix(STATUS_PREFIX)?;
    let (client_id, delivery_id) = rest.rsplit_once('/')?;
    (!client_id.is_empty() && !delivery_id.is_empty()).then_some(StatusTopic {
        client_id,
        delivery_id,
    })
}

/// What a device is told of a new delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The delivery id, also the AWS stream id.
    pub id: String,
    pub name: String,
    pub version: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    /// Unix seconds, when the delivery stops being served.
    pub expires_at: Option<u64>,
}

/// States a device reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportedState {
    Downloading,
    Verified,
    Applied,
    Failed,
}

/// A device's report: `{"state":"applied"}`, `{"state":"failed","reason":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub state: ReportedState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Longest `reason` kept.
pub const MAX_REASON: usize = 512;

impl StatusReport {
    pub fn decode(payload: &[u8]) -> Result<StatusReport, String> {
        let r: StatusReport = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        if r.reason.as_ref().is_some_and(|s| s.len() > MAX_REASON) {
            return Err(format!("reason longer than {MAX_REASON} bytes"));
        }
        Ok(r)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_reports() {
        assert_eq!(notify_topic("dev-1"), "$file-delivery/notify/dev-1");
        assert_eq!(
            parse_status_topic("$file-delivery/status/site/7/0011223344556677"),
            Some(StatusTopic {
                client_id: "site/7",
                delivery_id: "0011223344556677"
            })
        );
        assert_eq!(parse_status_topic("$file-delivery/status/dev"), None);
        assert_eq!(parse_status_topic("$file-delivery/notify/dev/x"), None);
        let r =
            StatusReport::decode(br#"{"state":"failed","reason":"flash write error"}"#).unwrap();
        assert_eq!(r.state, ReportedState::Failed);
        assert!(StatusReport::decode(br#"{"state":"pending"}"#).is_err());
        assert!(StatusReport::decode(b"applied").is_err());
    }
}
