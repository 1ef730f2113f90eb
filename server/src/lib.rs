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
pub mod delivery;
pub mod ft;
pub mod http;
mod link;
pub mod metrics;
mod mirror;
pub mod quic_lb;
mod session;
mod stream;
mod sys;
pub mod tls;
mod transport;
pub mod webhooks;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quicft_proto::QoS;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

pub use config::Config;
pub use link::Transport;
pub use transport::{transport_config as quic_transport_config, ListenError};

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
    #[error(transparent)]
    Store(#[from] broker::store::StoreError),
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
    /// Bound MQTT-over-WebSocket addresses (`ws`, `wss`), if enabled.
    pub ws_addr: Option<SocketAddr>,
    pub wss_addr: Option<SocketAddr>,
    /// Bound HTTP API address, if that listener is enabled.
    pub http_addr: Option<SocketAddr>,
    ctx: Arc<Ctx>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    endpoint: Option<quinn::Endpoint>,
    /// Stops the broker-state flusher, which then writes what is left (after sessions closed).
    flusher: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
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
        let identity = identity(&config)?;
        let server_cert = tls::ServerCert::new(&identity)?;
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
        let broker = if config.persistence.enabled {
            Broker::open(
                config.limits.max_queued_messages,
                &config.data_dir,
                config.persistence.persist_interval,
            )?
        } else {
            Broker::new(config.limits.max_queued_messages)
        };
        let broker = Arc::new(broker);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let clients: Arc<clients::Clients> = Arc::default();
        let deliveries =
            delivery::DeliveryService::open(&config.data_dir, broker.clone(), clients.clone())
                .map_err(|source| StartError::DataDir {
                    path: config.data_dir.join("deliveries"),
                    source,
                })?;
        let ctx = Arc::new(Ctx {
            broker,
            ft,
            deliveries,
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
            clients,
            metrics: Arc::default(),
            http_token: http::Token::new(config.http.token.as_deref()),
            server_cert: server_cert.clone(),
            wills: Arc::default(),
            config: config.clone(),
        });
        let mut tasks = JoinSet::new();
        let mut server = Server {
            quic_addr: None,
            tcp_addr: None,
            tls_addr: None,
            ws_addr: None,
            wss_addr: None,
            http_addr: None,
            ctx: ctx.clone(),
            shutdown: shutdown_tx,
            tasks: JoinSet::new(),
            endpoint: None,
            flusher: None,
        };

        if let Some(addr) = config.listeners.quic {
            let endpoint = transport::quic_endpoint(&config, &identity, server_cert.clone(), addr)?;
            server.quic_addr = endpoint.local_addr().ok();
            tracing::info!(addr = ?server.quic_addr, congestion = ?config.quic.congestion, "MQTT over QUIC listening");
            tasks.spawn(transport::serve_quic(endpoint.clone(), ctx.clone()));
            server.endpoint = Some(endpoint);
        }
        if let Some(addr) = config.listeners.tcp {
            let l = transport::tcp_listener("TCP", addr, config.limits.max_connections)?;
            server.tcp_addr = l.local_addr().ok();
            tracing::info!(addr = ?server.tcp_addr, "MQTT over TCP listening");
            tasks.spawn(transport::serve_tcp(
                l,
                None,
                transport::Framing::Mqtt,
                ctx.clone(),
            ));
        }
        if let Some(addr) = config.listeners.tls {
            let l = transport::tcp_listener("TLS", addr, config.limits.max_connections)?;
            server.tls_addr = l.local_addr().ok();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config_with(
                &identity,
                server_cert.clone(),
                false,
            )?));
            tracing::info!(addr = ?server.tls_addr, "MQTT over TLS listening");
            tasks.spawn(transport::serve_tcp(
                l,
                Some(acceptor),
                transport::Framing::Mqtt,
                ctx.clone(),
            ));
        }
        if let Some(addr) = config.listeners.ws {
            let l = transport::tcp_listener("WebSocket", addr, config.limits.max_connections)?;
            server.ws_addr = l.local_addr().ok();
            tracing::info!(addr = ?server.ws_addr, path = ws::PATH, "MQTT over WebSocket listening");
            tasks.spawn(transport::serve_tcp(
                l,
                None,
                transport::Framing::WebSocket,
                ctx.clone(),
            ));
        }
        if let Some(addr) = config.listeners.wss {
            let l =
                transport::tcp_listener("secure WebSocket", addr, config.limits.max_connections)?;
            server.wss_addr = l.local_addr().ok();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config_with(
                &identity,
                server_cert.clone(),
                false,
            )?));
            tracing::info!(addr = ?server.wss_addr, path = ws::PATH, "MQTT over secure WebSocket listening");
            tasks.spawn(transport::serve_tcp(
                l,
                Some(acceptor),
                transport::Framing::WebSocket,
                ctx.clone(),
            ));
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
        let hook_tasks = hooks.spawn();
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
        tasks.spawn(ctx.deliveries.clone().saver());
        // Background loops end with the server: at the shutdown signal, or when `tasks` is shut
        // down first (which drops this task before it saw the signal: hence abort on drop, or
        // an export or webhook loop would outlive its server and race the next one).
        let mut background = AbortOnDrop(hook_tasks);
        background.0.push(ctx.ft.run_gc());
        background.0.push(ctx.ft.run_exports());
        let mut shutdown = ctx.shutdown.clone();
        tasks.spawn(async move {
            let _background = background;
            let _ = shutdown.changed().await;
        });
        if config.sys_interval > 0 {
            let every = Duration::from_secs(config.sys_interval);
            tasks.spawn(sys::run(ctx.clone(), every));
        }
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
        // Started last, so that a start that fails leaves no task holding the store open.
        let (stop, stop_rx) = watch::channel(false);
        let flusher = tokio::spawn(ctx.broker.clone().run_flusher(stop_rx));
        server.flusher = Some((stop, flusher));
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

    /// Cloud-to-device deliveries (for tests and the HTTP API).
    pub fn deliveries(&self) -> &delivery::DeliveryService {
        &self.ctx.deliveries
    }

    /// What the HTTP API serves from (`http::router(server.api_state())` is the app, without a socket).
    pub fn api_state(&self) -> http::ApiState {
        let c = &self.ctx;
        http::ApiState::new(
            c.ft.clone(),
            c.deliveries.clone(),
            c.clients.clone(),
            c.metrics.clone(),
            c.http_token.clone(),
        )
    }

    /// Applies what a new configuration changes of the accounts (inline and `users_file`), the ACL
    /// rules, the server certificate and key, and the HTTP token: all of them or, when any part does
    /// not load, none. Connections already up keep their TLS session; those whose login the new
    /// accounts no longer admit are disconnected (0x87), the others' next publish or subscribe
    /// obeys the new ACL. Other changes need a restart: they are named in
    /// [`Reloaded::needs_restart`] and left as they are.
    pub fn reload(&self, new: Config) -> Result<Reloaded, StartError> {
        new.validate()?;
        let old = &self.ctx.config;
        // Everything that can fail, before anything is replaced (the accounts last: they are
        // replaced as they load).
        let certificate = tls::certified(&identity(&new)?)?;
        let users = self.ctx.auth.reload(&new.auth)?;
        // Connected clients whose login the new accounts no longer admit are disconnected (0x87),
        // as mosquitto does on a reload.
        self.ctx.broker.recheck_online();
        let certificate = self.ctx.server_cert.replace(certificate);
        let acl = self.ctx.acl.replace(&new.auth.acl);
        let http_token = self.ctx.http_token.set(new.http.token.as_deref());
        let differs =
            |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
        let mut needs_restart = Vec::new();
        for (name, changed) in [
            ("data_dir", old.data_dir != new.data_dir),
            ("listeners", differs(&old.listeners, &new.listeners)),
            ("limits", differs(&old.limits, &new.limits)),
            ("quic", differs(&old.quic, &new.quic)),
            (
                "file_transfer",
                differs(&old.file_transfer, &new.file_transfer),
            ),
            (
                "tls.client_auth / client_ca / cert_client_id",
                old.tls.client_auth != new.tls.client_auth
                    || old.tls.client_ca != new.tls.client_ca
                    || differs(&old.tls.cert_client_id, &new.tls.cert_client_id),
            ),
        ] {
            if changed {
                needs_restart.push(name);
            }
        }
        Ok(Reloaded {
            users,
            acl,
            certificate,
            http_token,
            needs_restart,
        })
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
        // Sessions have handed their state back: the broker's last changes go to disk.
        if let Some((stop, flusher)) = self.flusher.take() {
            let _ = stop.send(true);
            let _ = flusher.await;
        }
        // Device states changed since the saver last ran.
        self.ctx.deliveries.flush().await;
        if let Some(ep) = self.endpoint.take() {
            ep.close(quinn::VarInt::from_u32(0), b"server shutting down");
            let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
        }
        tracing::info!("server stopped");
    }
}

/// What [`Server::reload`] changed.
#[derive(Debug)]
pub struct Reloaded {
    pub users: auth::UsersChange,
    pub acl: bool,
    pub certificate: bool,
    pub http_token: bool,
    /// Sections that differ from the running configuration and apply only after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// The server's certificate: the configured one, or the development one (created once). A generated
/// development certificate also names the specific addresses the encrypted listeners are bound to,
/// so that clients can reach them by IP (e.g. 198.18.0.2 in the benchmark namespaces) without
/// overriding the server name.
fn identity(config: &Config) -> Result<tls::Identity, tls::TlsError> {
    let mut tls_cfg = config.tls.clone();
    for a in [
        config.listeners.quic,
        config.listeners.tls,
        config.listeners.wss,
    ]
    .into_iter()
    .flatten()
    {
        let ip = a.ip().to_string();
        if !a.ip().is_unspecified() && !tls_cfg.dev_cert_names.contains(&ip) {
            tls_cfg.dev_cert_names.push(ip);
        }
    }
    tls::load_or_generate(&tls_cfg, &config.data_dir)
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
