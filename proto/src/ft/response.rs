//! The JSON published on `$file-response/{clientId}` (STUB — being written).
pub const RESPONSE_VSN: &str = "0.1";
/// One response.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Response {
    pub vsn: String,
    pub topic: String,
    pub packet_id: u16,
    pub reason_code: u8,
    pub reason_description: String,
}
