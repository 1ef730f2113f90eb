//! What a session runs on: the [`Transport`] a client came over, the [`Link`] (addresses, the
//! QUIC connection, the verified certificate name) and the read/write halves of a stream.
//!
//! These are leaf types: the listeners (`transport`), the stream tasks (`stream`), the byte
//! counters (`clients`), the metrics and the session all use them, and this module uses none of
//! those, so none of them has to import the session to name a transport.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

/// The transport a client connected over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Quic,
    Tcp,
    Tls,
    /// MQTT over WebSocket (`ws`), plain.
    Ws,
    /// MQTT over WebSocket over TLS (`wss`).
    Wss,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Quic => "quic",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
}

/// The connection a session runs on.
pub(crate) struct Link {
    pub transport: Transport,
    pub peer: SocketAddr,
    /// The address the listener is bound to: anonymous access depends on it being loopback.
    pub listener: SocketAddr,
    /// Set for QUIC: data streams are accepted from it.
    pub quic: Option<quinn::Connection>,
    /// Name (CN, else first SAN) of the client certificate rustls verified against `tls.client_ca`.
    pub cert_name: Option<Arc<str>>,
}

/// A stream's receive half. QUIC streams can be stopped with an error code; TCP ones just close.
pub(crate) trait PacketRead: AsyncRead + Unpin + Send + 'static {
    fn stop(&mut self, _code: u32) {}
}

/// A stream's send half. QUIC streams can be reset with an error code; TCP ones just close.
pub(crate) trait PacketWrite: AsyncWrite + Unpin + Send + 'static {
    fn reset(&mut self, _code: u32) {}
}

impl PacketRead for quinn::RecvStream {
    fn stop(&mut self, code: u32) {
        let _ = quinn::RecvStream::stop(self, quinn::VarInt::from_u32(code));
    }
}

impl PacketWrite for quinn::SendStream {
    fn reset(&mut self, code: u32) {
        let _ = quinn::SendStream::reset(self, quinn::VarInt::from_u32(code));
    }
}

/// The control stream's read half, whatever the transport (the session keeps it past its end).
impl PacketRead for Box<dyn PacketRead> {
    fn stop(&mut self, code: u32) {
        (**self).stop(code);
    }
}

impl<T: AsyncRead + Send + 'static> PacketRead for tokio::io::ReadHalf<T> {}
impl<T: AsyncWrite + Send + 'static> PacketWrite for tokio::io::WriteHalf<T> {}
impl PacketRead for tokio::net::tcp::OwnedReadHalf {}
impl PacketWrite for tokio::net::tcp::OwnedWriteHalf {}
