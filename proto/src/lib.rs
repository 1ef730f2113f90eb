//! Sans-IO wire formats for quicft.
//!
//! * [`packet`]: the MQTT 5.0 and 3.1.1 codec (one module per packet kind).
//! * [`topic`]: topic names and filters with MQTT wildcard matching.
//! * [`aws_stream`]: AWS IoT MQTT-based file delivery (`$aws/things/{thing}/streams/…`).
//! * [`file_delivery`]: quicft's delivery notifications and device status reports (`$file-delivery/…`).
//! * [`ft`]: the EMQX-compatible file-transfer protocol carried over `$file/…` topics.
//! * [`mirror`]: the header of a mirrored QUIC data stream (a second copy of small messages).
//!
//! Nothing here touches a socket, a clock or a runtime: callers pass bytes in and get typed values out,
//! the way `quinn-proto` is driven by `quinn`.

pub mod aws_stream;
pub mod error;
pub mod file_delivery;
pub mod ft;
pub mod mirror;
pub mod packet;
pub mod properties;
mod properties_codec;
pub mod reason;
pub mod topic;
mod wire;

pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use properties::Properties;
pub use reason::ReasonCode;
