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

mod client;
mod error;
mod options;
mod pkid;
mod session;
mod tls;
mod transport;

pub use client::{Channel, Client, ConnectionInfo, Message, Subscription};
pub use error::{CloseReason, Error, Result};
pub use options::{
    CaSource, ClientCert, ClientOptions, Congestion, Priorities, QuicOptions, TlsOptions,
    Transport, DEFAULT_QUIC_PORT, DEFAULT_TCP_PORT, DEFAULT_TLS_PORT,
};
pub use session::PublishOutcome;
pub use transport::ChannelKind;

pub use quicft_proto::{Properties, Protocol, Publish, QoS, ReasonCode, SubscriptionOptions};
