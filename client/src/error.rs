//! The one error type of the SDK.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use quicft_proto::{DecodeError, EncodeError, QoS, ReasonCode};

/// Everything that can go wrong in the SDK.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The options cannot work (empty host, 3.1.1 without clean start and no client id …).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The CA file (or client certificate / key) could not be read.
    #[error("cannot read {path}: {error}")]
    ReadFile {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The PEM file held no certificate (or no private key) we could use.
    #[error("{0}")]
    BadPem(String),
    /// rustls refused the configuration or the handshake.
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    /// The host name resolved to no address.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// Socket-level failure (connect refused, reset …).
    #[error("{0}")]
    Io(std::io::Error),
    /// QUIC could not start a connection (bad server name, endpoint gone …).
    #[error("QUIC: {0}")]
    QuicConnect(quinn::ConnectError),
    /// The QUIC handshake or connection failed.
    #[error("QUIC: {0}")]
    QuicConnection(quinn::ConnectionError),
    /// No CONNACK within the connect timeout.
    #[error("no answer from the server within {0:?}")]
    ConnectTimeout(Duration),
    /// The server answered CONNECT with an error code.
    #[error("server refused the connection: {code}{}", reason_suffix(.reason))]
    ConnectionRefused {
        code: ReasonCode,
        reason: Option<String>,
    },
    /// The connection is gone; the reason says who ended it and why.
    #[error("connection closed: {0}")]
    ConnectionClosed(CloseReason),
    /// The channel (QUIC stream) this operation used was reset or closed; the connection may live on.
    #[error("channel closed")]
    ChannelClosed,
    /// The server refused a subscription.
    #[error("subscription to {filter} refused: {code}")]
    SubscribeRefused { filter: String, code: ReasonCode },
    /// A packet would exceed the server's Maximum Packet Size.
    #[error("packet of {size} bytes exceeds the server's maximum of {max}")]
    PacketTooLarge { size: usize, max: usize },
    /// The server's Maximum QoS is below what was asked.
    #[error("server supports QoS up to {max:?}, {asked:?} was asked")]
    QosNotSupported { asked: QoS, max: QoS },
    /// The server said Retain Available = 0.
    #[error("server does not support retained messages")]
    RetainNotSupported,
    /// A topic name or filter is not valid MQTT.
    #[error("invalid topic {topic:?}: {why}")]
    InvalidTopic { topic: String, why: String },
    /// All 65,535 packet identifiers are in flight.
    #[error("no free packet identifier")]
    PacketIdsExhausted,
    /// Neither the first transport nor its fallback connected; both errors, by transport.
    #[error("no transport connected ({0})")]
    AllTransportsFailed(String),
    /// A file transfer was refused or cancelled (0x83), or failed in a way retrying cannot fix.
    #[error("upload of {file_id} failed: {why}")]
    Upload { file_id: String, why: String },
    /// [`Upload::cancel`](crate::Upload::cancel) stopped the transfer.
    #[error("upload of {0} cancelled")]
    UploadCancelled(String),
    /// The upload source could not be read.
    #[error("cannot read {what}: {error}")]
    Source { what: String, error: std::io::Error },
    /// A packet could not be encoded (string over 64 KiB …).
    #[error("encode: {0}")]
    Encode(EncodeError),
    /// A download failed: the server refused it (AWS error code and message), the file did not
    /// verify, or the partial file could not be written.
    #[error("download: {0}")]
    Download(String),
}

// The wrapped errors are part of the message rather than `source()`s, so that printing an error
// with its chain (as anyhow's `{:#}` does) does not say the same thing twice.
macro_rules! from_error {
    ($($ty:ty => $variant:ident),* $(,)?) => {
        $(impl From<$ty> for Error {
            fn from(e: $ty) -> Self {
                Error::$variant(e)
            }
        })*
    };
}

from_error! {
    rustls::Error => Tls,
    std::io::Error => Io,
    quinn::ConnectError => QuicConnect,
    quinn::ConnectionError => QuicConnection,
    EncodeError => Encode,
}

fn reason_suffix(reason: &Option<String>) -> String {
    match reason {
        Some(r) => format!(" ({r})"),
        None => String::new(),
    }
}

/// Why a connection ended. Cheap to clone: every waiter on the connection gets a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// `disconnect()` was called, or the last handle to the client was dropped.
    Local,
    /// The server sent DISCONNECT.
    ServerDisconnect {
        code: ReasonCode,
        reason: Option<String>,
    },
    /// No PINGRESP came back within the keep-alive interval.
    KeepAliveTimeout,
    /// The server broke the protocol (malformed packet on a shared stream, unexpected packet …).
    Protocol(String),
    /// The transport failed (EOF, reset, QUIC connection lost, idle timeout …).
    Transport(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed by the client"),
            CloseReason::ServerDisconnect { code, reason } => {
                write!(f, "server sent DISCONNECT {code}{}", reason_suffix(reason))
            }
            CloseReason::KeepAliveTimeout => f.write_str("keep-alive timeout (no PINGRESP)"),
            CloseReason::Protocol(s) => write!(f, "protocol error by the server: {s}"),
            CloseReason::Transport(s) => write!(f, "transport: {s}"),
        }
    }
}

impl From<DecodeError> for CloseReason {
    fn from(e: DecodeError) -> Self {
        CloseReason::Protocol(e.to_string())
    }
}

/// Result with the SDK's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
