//! quicft-server: an MQTT 5 server over QUIC, TCP and TLS with durable, resumable file transfer.
//!
//! [`Server::start`] binds the listeners of a [`Config`] and returns the bound addresses (tests use
//! port 0); [`run`] is what the binary calls. Layers, from the wire up:
//! `transport` (listeners) → `stream` (bytes ↔ packets, one task per stream) → `session` (one task per
//! connected client: a state machine and the task that drives it) → `broker` (sessions, routing,
//! retained) and `ft` (file transfer). `link` (transports, stream halves) and `ctx` (what the
//! connection tasks share) sit below them all, so that no two of these import each other.

pub mod acl;
pub mod auth;
pub mod broker;
pub mod clients;
pub mod config;
mod ctx;
pub mod ft;
pub mod http;
mod link;
pub mod metrics;
mod mirror;
pub mod quic_lb;
mod session;
mod stream;
pub mod tls;
mod transport;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quicft_proto::QoS;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

pub use config::Config;
pub use link::Transport;

use broker::{Broker, Message};
use ctx::Ctx;
use ft::FtService;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Listen(#[from] transport::ListenError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error("file transfer store: {0}")]
    Ft(String),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Aborts its tasks when dropped.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// A running server.
pub struct Server {
    /// Bound QUIC address, if that listener is enabled.
    pub quic_addr: Option<SocketAddr>,
    pub tcp_addr: Option<SocketAddr>,
    pub tls_addr: Option<SocketAddr>,
    /// Bound HTTP API address, if that listener is enabled.
    pub http_addr: Option<SocketAddr>,
    ctx: Arc<Ctx>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    endpoint: Option<quinn::Endpoint>,
}

impl Server {
    /// Binds every configured listener and starts serving.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let config = Arc::new(config);
        // A generated development certificate also names the specific addresses the encrypted
        // listeners are bound to, so that clients can reach them by IP (e.g. 198.18.0.2 in the
        // benchmark namespaces) without overriding the server name.
        let mut tls_cfg = config.tls.clone();
        for a in [config.listeners.quic, config.listeners.tls]
            .into_iter()
            .flatten()
        {
            let ip = a.ip().to_string();
            if !a.ip().is_unspecified() && !tls_cfg.dev_cert_names.contains(&ip) {
                tls_cfg.dev_cert_names.push(ip);
            }
        }
        let identity = tls::load_or_generate(&tls_cfg, &config.data_dir)?;
        let exporter: Arc<dyn ft::Exporter> = match config.export.backend {
            ft::ExportBackend::Local => Arc::new(ft::LocalExporter::new(
                config.file_transfer.export_root.clone(),
            )),
            ft::ExportBackend::S3 => Arc::new(
                ft::S3Exporter::new(&config.export.s3, config.file_transfer.export_root.clone())
                    .map_err(|e| StartError::Ft(e.to_string()))?,
            ),
        };
        let (ft, mut ft_events) = FtService::open_with(config.file_transfer.clone(), exporter)
            .map_err(|e| StartError::Ft(e.to_string()))?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let ctx = Arc::new(Ctx {
            broker: Arc::new(Broker::new(config.limits.max_queued_messages)),
            ft,
            auth: auth::Auth::new(&config.auth)?,
            acl: Arc::new(acl::Acl::new(&config.auth.acl)),
            connections: Arc::new(Semaphore::new(config.limits.max_connections)),
            ft_memory: Arc::new(Semaphore::new(
                config
                    .limits
                    .max_ft_inflight_bytes
                    .min(Semaphore::MAX_PERMITS),
            )),
            shutdown: shutdown_rx,
            clients: Arc::default(),
            metrics: Arc::default(),
            config: config.clone(),
        });
        let mut tasks = JoinSet::new();
        let mut server = Server {
            quic_addr: None,
            tcp_addr: None,
            tls_addr: None,
            http_addr: None,
            ctx: ctx.clone(),
            shutdown: shutdown_tx,
            tasks: JoinSet::new(),
            endpoint: None,
        };

        if let Some(addr) = config.listeners.quic {
            let endpoint = transport::quic_endpoint(&config, &identity, addr)?;
            server.quic_addr = endpoint.local_addr().ok();
            tracing::info!(addr = ?server.quic_addr, congestion = ?config.quic.congestion, "MQTT over QUIC listening");
            tasks.spawn(transport::serve_quic(endpoint.clone(), ctx.clone()));
            server.endpoint = Some(endpoint);
        }
        if let Some(addr) = config.listeners.tcp {
            let l = transport::tcp_listener("TCP", addr, config.limits.max_connections)?;
            server.tcp_addr = l.local_addr().ok();
            tracing::info!(addr = ?server.tcp_addr, "MQTT over TCP listening");
            tasks.spawn(transport::serve_tcp(l, None, ctx.clone()));
        }
        if let Some(addr) = config.listeners.tls {
            let l = transport::tcp_listener("TLS", addr, config.limits.max_connections)?;
            server.tls_addr = l.local_addr().ok();
            let acceptor =
                tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(&identity, false)?));
            tracing::info!(addr = ?server.tls_addr, "MQTT over TLS listening");
            tasks.spawn(transport::serve_tcp(l, Some(acceptor), ctx.clone()));
        }
        if let Some(addr) = config.listeners.http {
            let l = transport::tcp_listener("HTTP API", addr, config.limits.max_connections)?;
            server.http_addr = l.local_addr().ok();
            tracing::info!(addr = ?server.http_addr, token = config.http.token.is_some(), "HTTP API listening");
            tasks.spawn(http::serve(
                l,
                http::router(server.api_state()),
                ctx.shutdown.clone(),
            ));
        }

        // File-transfer events become ordinary messages on $events/file/{clientId}/{fileId}, and
        // go into the outbox of every webhook that wants them (webhooks/).
        let hooks = Arc::new(
            webhooks::Webhooks::open(&config.data_dir, &config.webhooks)
                .map_err(|e| StartError::Ft(format!("webhook outbox: {e}")))?,
        );
        let deliveries = hooks.spawn();
        let broker = ctx.broker.clone();
        tasks.spawn(async move {
            while let Some(ev) = ft_events.recv().await {
                if !hooks.is_empty() {
                    let (hooks, payload) = (hooks.clone(), ev.payload.clone());
                    // In order: the next event waits for this one to be in the outboxes.
                    let _ = tokio::task::spawn_blocking(move || {
                        let kind = serde_json::from_slice::<ft::EventBody>(&payload)
                            .map(|b| b.event)
                            .unwrap_or_default();
                        hooks.enqueue(&kind, &payload);
                    })
                    .await;
                }
                broker.publish(Message::server(ev.topic, ev.payload, QoS::AtLeastOnce));
            }
        });
        // Background loops end with the server: at the shutdown signal, or when `tasks` is shut
        // down first (which drops this task before it saw the signal: hence abort on drop, or
        // an export or webhook loop would outlive its server and race the next one).
        let mut background = AbortOnDrop(deliveries);
        background.0.push(ctx.ft.run_gc());
        background.0.push(ctx.ft.run_exports());
        let mut shutdown = ctx.shutdown.clone();
        tasks.spawn(async move {
            let _background = background;
            let _ = shutdown.changed().await;
        });
        // Offline sessions end when their expiry interval has passed.
        let (broker, mut shutdown) = (ctx.broker.clone(), ctx.shutdown.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => { broker.expire_sessions(std::time::Instant::now()); }
                    _ = shutdown.changed() => return,
                }
            }
        });
        server.tasks = tasks;
        Ok(server)
    }

    /// The broker (for tests and the HTTP API).
    pub fn broker(&self) -> &Arc<Broker> {
        &self.ctx.broker
    }

    /// The file-transfer service (for tests and the HTTP API).
    pub fn file_transfer(&self) -> &FtService {
        &self.ctx.ft
    }

    /// What the HTTP API serves from (`http::router(server.api_state())` is the app, without a socket).
    pub fn api_state(&self) -> http::ApiState {
        let c = &self.ctx;
        http::ApiState::new(
            c.ft.clone(),
            c.clients.clone(),
            c.metrics.clone(),
            c.config.http.token.as_deref(),
        )
    }

    /// Stops accepting, tells every client (DISCONNECT 0x8B), waits for sessions to end (at most
    /// a few seconds) and closes the QUIC endpoint.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let max = self.ctx.config.limits.max_connections;
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.ctx.connections.acquire_many(all),
        )
        .await;
        // Listeners have stopped on the signal; background loops (event forwarding, GC, session
        // expiry) are simply cancelled.
        self.tasks.shutdown().await;
        if let Some(ep) = self.endpoint.take() {
            ep.close(quinn::VarInt::from_u32(0), b"server shutting down");
            let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
        }
        tracing::info!("server stopped");
    }
}

/// Runs a server until `shutdown` resolves, then stops it gracefully.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StartError> {
    let server = Server::start(config).await?;
    shutdown.await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}
