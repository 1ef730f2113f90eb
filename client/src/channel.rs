//! The channels of a connection, as the session and the transports both see them.
//!
//! The session keeps a [`ChannelTx`] for every flow that must be answered on the channel it came
//! from, and the transports create them: the types live here, apart from both, so that neither
//! has to import the other to name a channel.

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

/// Identifies a channel (QUIC stream) of a connection; 0 is the control channel and, over TCP, the
/// one byte stream every channel shares.
pub(crate) type ChannelId = u64;

/// What a channel carries, which sets its send priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// CONNECT, PINGREQ, DISCONNECT: one per connection, opened by the client itself.
    Control,
    /// Live messages, small and latency-sensitive.
    Telemetry,
    /// Bulk data (file segments).
    File,
}

/// The sending side of one channel. Cloning keeps the channel open: a QUIC stream is finished once
/// every clone is gone (handles, subscriptions and flows awaiting an acknowledgement each hold one).
#[derive(Clone, Debug)]
pub(crate) struct ChannelTx {
    pub(crate) id: ChannelId,
    pub(crate) kind: ChannelKind,
    pub(crate) data: mpsc::Sender<Outgoing>,
    /// Never sent on here (the reader sends acks through a weak handle); holding it keeps the
    /// acknowledgement queue, and so the stream's writer, alive exactly as long as the channel.
    #[expect(dead_code, reason = "held for its lifetime, see above")]
    pub(crate) acks: mpsc::Sender<Outgoing>,
}

/// What a channel hands to its writer.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// One encoded MQTT packet.
    Packet(Bytes),
    /// Answered once everything queued before it on the same queue has been handed to the transport.
    Barrier(oneshot::Sender<()>),
    /// Write what came before it, then stop writing: the transport finishes its send side (QUIC
    /// FIN and wait for the peer's ack, TCP shutdown) and answers.
    Finish(oneshot::Sender<()>),
}
