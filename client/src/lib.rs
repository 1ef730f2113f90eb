//! quicft device SDK: MQTT 5 (and 3.1.1) over QUIC with one stream per channel, or over TLS/TCP.
//!
//! One connection carries several *channels* (DESIGN §3): the control channel (CONNECT, PINGREQ,
//! DISCONNECT), a telemetry channel that [`Client::publish`] and [`Client::subscribe`] use, and any
//! number of channels the application opens with [`Client::open_channel`] (one per file upload, for
//! instance). Channels have send priorities, control > telemetry > file by default
//! ([`Priorities`]): over QUIC each channel is a stream with that priority, so keep-alive and
//! telemetry never wait behind file data; over TCP a single writer sends whole packets in priority
//! order.
//!
//! `Client::connect` tries QUIC first and, with [`ClientOptions::auto`], races TLS once QUIC has
//! not answered within a short head start ([`ConnectionInfo::transport`] says which won). A lost
//! connection is re-established in the background with capped, jittered backoff ([`Reconnect`]);
//! subscriptions come back with it and uploads carry on.
//!
//! Over QUIC the device is the sender of the file data, so its congestion controller decides how
//! much of a weak uplink an upload gets and how much file data waits in the network ahead of each
//! telemetry message (stream priorities order only what has not been sent yet). The default,
//! [`Congestion::Delay`] (quicft's delay-aware, loss-tolerant controller, the server's default
//! too), keeps the link full under random loss with a queue of about a quarter of the
//! bandwidth-delay product; [`QuicOptions::congestion`] (CLI: `--congestion`) selects quinn's
//! `Bbr`, `Cubic` or `NewReno` instead, or any [`Congestion::Custom`] controller.
//!
//! ```no_run
//! use quicft_client::{CaSource, Client, ClientOptions, QoS, Transport};
//!
//! # async fn run() -> Result<(), quicft_client::Error> {
//! let mut options = ClientOptions::new("localhost", Transport::Quic);
//! options.tls.ca = CaSource::File("quicft-data/certs/ca.pem".into());
//! options.client_id = "forklift-7".into();
//! let client = Client::connect(options).await?;
//!
//! let mut sub = client.subscribe("fleet/+/alerts", QoS::AtLeastOnce).await?;
//! let outcome = client.publish("fleet/forklift-7/speed", "12.5", QoS::AtLeastOnce).await?;
//! assert!(outcome.is_success());
//! let msg = sub.recv().await?;
//! println!("{}: {:?}", msg.topic, msg.payload);
//! client.disconnect().await?;
//! # Ok(())
//! # }
//! ```

//!
//! # Uploads
//!
//! [`Client::upload`] sends a file (or any `AsyncRead`) with the file-transfer protocol (DESIGN §2):
//! `$file/…` under MQTT 5, `$file-async/…` under 3.1.1. Segments are pipelined on file channels (one
//! QUIC stream each, below telemetry in priority) up to a window of unacknowledged bytes; a PUBACK
//! 0x00 means the segment is durable on the server. On 0x80 the segment is sent again, on 0x97 the
//! upload backs off, on 0x10 it starts over, on 0x83 it stops with an error. After a reconnect, or in
//! a new process with the same client id and file id, it asks the server's `status` and sends only
//! the ranges the server lacks. File ids of paths are derived from path, size and modification
//! time ([`derive_file_id`]), so a restarted device resumes by itself.
//!
//! ```no_run
//! use quicft_client::{Client, ClientOptions, UploadOptions, UploadSource};
//!
//! # async fn run() -> Result<(), quicft_client::Error> {
//! let mut options = ClientOptions::auto("ingest.example.com");
//! options.client_id = "forklift-7".into();
//! let client = Client::connect(options).await?;
//!
//! // A file: resumable across restarts.
//! let upload = client.upload("/var/log/drive-0042.bin", UploadOptions::default()).await?;
//! // Telemetry keeps flowing meanwhile, ahead of the file data.
//! client.publish("fleet/forklift-7/speed", "12.5", quicft_client::QoS::AtLeastOnce).await?;
//! let report = upload.wait().await?;
//! println!("{} bytes, {} re-sent after {} reconnects", report.bytes, report.bytes_resent, report.reconnects);
//!
//! // Any reader, size unknown until the end, spread over two streams.
//! let (reader, _writer) = tokio::io::duplex(1 << 16);
//! let options = UploadOptions { file_id: Some("cam-stream-7".into()), name: Some("cam.h264".into()),
//!                               streams: 2, ..UploadOptions::default() };
//! let upload = client.upload(UploadSource::reader(reader, None), options).await?;
//! upload.pause();
//! upload.resume();
//! upload.cancel().await?; // aborts the transfer on the server
//! # Ok(())
//! # }
//! ```

mod channel;
mod client;
mod download;
mod error;
mod options;
mod pkid;
mod responses;
mod session;
mod tls;
mod transport;
mod upload;

pub use channel::ChannelKind;
pub use client::{
    Channel, Client, ConnectionInfo, ConnectionState, Message, StateChanges, Subscription,
};
pub use download::{DownloadOptions, DownloadReport};
pub use error::{CloseReason, Error, Result};
pub use options::{
    CaSource, ClientCert, ClientOptions, Congestion, Priorities, QuicOptions, Reconnect,
    TlsOptions, Transport, DEFAULT_QUIC_PORT, DEFAULT_TCP_PORT, DEFAULT_TLS_PORT,
};
/// File-transfer wire types (status responses, metadata, reason codes).
pub use quicft_proto::ft;
pub use session::PublishOutcome;
pub use upload::{
    derive_file_id, Progress, Upload, UploadOptions, UploadReport, UploadSource, UploadState,
};

pub use quicft_proto::{Properties, Protocol, Publish, QoS, ReasonCode, SubscriptionOptions};
