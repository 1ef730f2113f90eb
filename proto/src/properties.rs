//! MQTT 5 properties ([MQTT 5.0 §2.2.2](https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901027)).
//!
//! One struct holds every property; each packet kind allows a subset, and the decoder rejects a property
//! that is not allowed where it appears (Protocol Error). Under MQTT 3.1.1 properties are neither read
//! nor written, so a `Properties::default()` is what a 3.1.1 packet carries.

use bytes::Bytes;

/// All MQTT 5 properties. `None` / empty means absent on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01
    pub payload_format_indicator: Option<u8>,
    /// 0x02
    pub message_expiry_interval: Option<u32>,
    /// 0x03
    pub content_type: Option<String>,
    /// 0x08
    pub response_topic: Option<String>,
    /// 0x09
    pub correlation_data: Option<Bytes>,
    /// 0x0B; PUBLISH may carry several, SUBSCRIBE at most one. Never 0.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11
    pub session_expiry_interval: Option<u32>,
    /// 0x12
    pub assigned_client_identifier: Option<String>,
    /// 0x13
    pub server_keep_alive: Option<u16>,
    /// 0x15
    pub authentication_method: Option<String>,
    /// 0x16
    pub authentication_data: Option<Bytes>,
    /// 0x17
    pub request_problem_information: Option<u8>,
    /// 0x18
    pub will_delay_interval: Option<u32>,
    /// 0x19
    pub request_response_information: Option<u8>,
    /// 0x1A
    pub response_information: Option<String>,
    /// 0x1C
    pub server_reference: Option<String>,
    /// 0x1F
    pub reason_string: Option<String>,
    /// 0x21
    pub receive_maximum: Option<u16>,
    /// 0x22
    pub topic_alias_maximum: Option<u16>,
    /// 0x23
    pub topic_alias: Option<u16>,
    /// 0x24
    pub maximum_qos: Option<u8>,
    /// 0x25
    pub retain_available: Option<u8>,
    /// 0x26; order matters and repeats are allowed.
    pub user_properties: Vec<(String, String)>,
    /// 0x27
    pub maximum_packet_size: Option<u32>,
    /// 0x28
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    /// True when no property is set (encodes as a single 0x00 length byte).
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}
