//! The JSON published on `$file-response/{clientId}` (or the MQTT 5 Response Topic) after every
//! file-transfer command (DESIGN §2).
//!
//! ```text
//! { "vsn": "0.1",                          always; EMQX's command_response schema
//!   "topic": "$file/f1/fin/10",            the command topic
//!   "packet_id": 7,                        the command's packet id
//!   "reason_code": 128,                    FtReason as a decimal number
//!   "reason_description": "…",             human readable
//!   "ranges":  [[0, 4096], [8192, 9000]],  quicft: half-open byte ranges held durably (status)
//!   "missing": [[4096, 8192]],             quicft: ranges fin still lacks
//!   "state": "receiving",                  quicft: transfer state (status)
//!   "meta": { "name": … } }                quicft: the init metadata (status)
//! ```
//! The first five fields are exactly what EMQX sends; the others are left out when absent, so EMQX
//! clients see the same shape and quicft clients can still read EMQX responses.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{FileMeta, FtReason, RESPONSE_PREFIX};

/// The `vsn` of the responses quicft sends (the only one EMQX defines).
pub const RESPONSE_VSN: &str = "0.1";

/// One response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Format version; absent from the JSON is read as [`RESPONSE_VSN`].
    #[serde(default = "default_vsn")]
    pub vsn: String,
    /// The topic of the command this answers.
    pub topic: String,
    /// The packet id of the command this answers (0 for a QoS 0 command, which has none).
    pub packet_id: u16,
    /// An [`FtReason`] code; a plain number so that codes from other servers still parse.
    pub reason_code: u8,
    pub reason_description: String,
    /// Half-open `[start, end)` byte ranges the server holds durably, sorted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Vec<(u64, u64)>>,
    /// Half-open byte ranges a fin found missing: send these and fin again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<Vec<(u64, u64)>>,
    /// The transfer's state, e.g. for a status query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The init metadata the server holds for the transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<FileMeta>,
}

fn default_vsn() -> String {
    RESPONSE_VSN.to_owned()
}

impl Response {
    /// A response with the reason's default description and no optional fields.
    pub fn new(topic: impl Into<String>, packet_id: u16, reason: FtReason) -> Response {
        Response {
            vsn: default_vsn(),
            topic: topic.into(),
            packet_id,
            reason_code: reason.code(),
            reason_description: reason.description().to_owned(),
            ranges: None,
            missing: None,
            state: None,
            meta: None,
        }
    }

    pub fn with_description(mut self, description: impl Into<String>) -> Response {
        self.reason_description = description.into();
        self
    }

    /// Sets `ranges`: the half-open byte ranges held durably.
    pub fn with_ranges(mut self, ranges: impl IntoIterator<Item = (u64, u64)>) -> Response {
        self.ranges = Some(ranges.into_iter().collect());
        self
    }

    /// Sets `missing`: the half-open byte ranges a fin still lacks.
    pub fn with_missing(mut self, missing: impl IntoIterator<Item = (u64, u64)>) -> Response {
        self.missing = Some(missing.into_iter().collect());
        self
    }

    pub fn with_state(mut self, state: impl Into<String>) -> Response {
        self.state = Some(state.into());
        self
    }

    pub fn with_meta(mut self, meta: FileMeta) -> Response {
        self.meta = Some(meta);
        self
    }

    /// The reason, when `reason_code` is one quicft defines.
    pub fn reason(&self) -> Option<FtReason> {
        FtReason::from_code(self.reason_code)
    }

    /// The JSON payload.
    pub fn to_bytes(&self) -> Bytes {
        // serde_json fails only on maps with non-string keys or on a failing Serialize impl; every
        // field here is a string, number, list or serde_json::Value, so the default is unreachable.
        serde_json::to_vec(self).unwrap_or_default().into()
    }

    /// Reads a response payload, from quicft or from EMQX; unknown fields are ignored.
    pub fn parse(payload: &[u8]) -> Result<Response, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

/// `$file-response/{clientId}`: where responses go when the command had no Response Topic.
pub fn response_topic(client_id: &str) -> String {
    format!("{RESPONSE_PREFIX}{client_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(r: &Response) -> serde_json::Value {
        serde_json::from_slice(&r.to_bytes()).expect("valid JSON")
    }

    #[test]
    fn emqx_shape() {
        let r = Response::new("$file/f1/init", 1, FtReason::Success);
        assert_eq!(
            json(&r),
            serde_json::json!({
                "vsn": "0.1",
                "topic": "$file/f1/init",
                "packet_id": 1,
                "reason_code": 0,
                "reason_description": "success",
            })
        );
    }

    #[test]
    fn status_shape() {
        let meta = FileMeta::parse(br#"{"name":"a.bin","size":10}"#).expect("valid meta");
        let r = Response::new("$file/f1/status", 9, FtReason::Success)
            .with_ranges([(0, 4), (6, 10)])
            .with_state("receiving")
            .with_meta(meta);
        assert_eq!(
            json(&r),
            serde_json::json!({
                "vsn": "0.1",
                "topic": "$file/f1/status",
                "packet_id": 9,
                "reason_code": 0,
                "reason_description": "success",
                "ranges": [[0, 4], [6, 10]],
                "state": "receiving",
                "meta": {"name": "a.bin", "size": 10},
            })
        );
        assert_eq!(Response::parse(&r.to_bytes()).ok(), Some(r));
    }

    #[test]
    fn fin_missing() {
        let r = Response::new("$file/f1/fin/10", 3, FtReason::Retransmit)
            .with_description("ranges missing")
            .with_missing([(4, 6)]);
        let v = json(&r);
        assert_eq!(v["reason_code"], 0x80);
        assert_eq!(v["reason_description"], "ranges missing");
        assert_eq!(v["missing"], serde_json::json!([[4, 6]]));
        assert!(v.get("ranges").is_none());
        assert_eq!(Response::parse(&r.to_bytes()).ok(), Some(r));
    }

    #[test]
    fn parses_emqx_responses() {
        // As EMQX 5 publishes it for a failed segment: an unspecified error and an atom as text.
        let emqx = br#"{"vsn":"0.1","topic":"$file/f1/0/abc","packet_id":2,"reason_code":128,
                        "reason_description":"invalid_checksum"}"#;
        let r = Response::parse(emqx).expect("EMQX response");
        assert_eq!(r.reason(), Some(FtReason::Retransmit));
        assert_eq!(r.reason_description, "invalid_checksum");
        assert_eq!(r.ranges, None);
        // Missing vsn and unknown fields are tolerated.
        let r = Response::parse(
            br#"{"topic":"t","packet_id":1,"reason_code":151,"reason_description":"","x":1}"#,
        )
        .expect("lenient parse");
        assert_eq!(r.vsn, RESPONSE_VSN);
        assert_eq!(r.reason(), Some(FtReason::Quota));
        assert!(Response::parse(b"{}").is_err());
        assert!(Response::parse(b"").is_err());
    }

    #[test]
    fn topic() {
        assert_eq!(response_topic("dev-1"), "$file-response/dev-1");
    }
}
