//! What every connection task shares: the configuration, the broker, the file-transfer service,
//! authentication and topic rules, the connection and file-memory budgets, the shutdown signal,
//! the client registry and the metrics. One per [`crate::Server`], built once at start.

use std::sync::Arc;

use tokio::sync::{watch, Semaphore};

use crate::broker::Broker;
use crate::ft::FtService;
use crate::{acl, auth, clients, http, metrics, tls, Config};

/// What every connection task shares.
pub(crate) struct Ctx {
    pub config: Arc<Config>,
    pub broker: Arc<Broker>,
    pub ft: FtService,
    /// Cloud-to-device deliveries (`$aws/things/…/streams/…` requests).
    pub deliveries: crate::delivery::DeliveryService,
    pub auth: auth::Auth,
    /// Topic access rules (`[[auth.acl]]`).
    pub acl: Arc<acl::Acl>,
    /// One permit per open connection (`limits.max_connections`).
    pub connections: Arc<Semaphore>,
    /// One permit per byte of file-transfer payload in memory (`limits.max_ft_inflight_bytes`).
    pub ft_memory: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
    /// Connected clients, for the HTTP API.
    pub clients: Arc<clients::Clients>,
    /// Counters for `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// The certificate the QUIC and TLS listeners present (a reload replaces it).
    pub server_cert: Arc<tls::ServerCert>,
    /// The HTTP API's bearer token (a reload replaces it).
    pub http_token: Arc<http::Token>,
    /// Wills waiting for their Will Delay Interval; a reconnect cancels them.
    pub wills: Arc<crate::session::PendingWills>,
}

impl Ctx {
    /// May this client publish to `topic` (beyond the reserved server topics)?
    pub fn acl_publish(&self, who: acl::Who<'_>, topic: &str) -> bool {
        self.acl.publish(who, topic)
    }
}
