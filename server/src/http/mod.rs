//! The HTTP API (DESIGN §4): transfers in progress, finished files with download, connected clients,
//! health and Prometheus metrics, described by an OpenAPI document at `/api/v1/openapi.json`.
//!
//! [`router`] builds the whole app from an [`ApiState`] so tests call it without a socket;
//! [`serve`] runs it on a listener until shutdown. Everything except `/healthz` needs
//! `Authorization: Bearer <token>` once `[http] token` is configured; without a token the API is
//! open, which [`crate::Config::validate`] allows on loopback addresses only.

mod clients;
mod dashboard;
mod deliveries;
mod error;
mod files;
mod listener;
mod ops;
mod range;
mod transfers;

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::OpenApi;

pub use error::{ApiError, ErrorBody, ErrorDetail};

use crate::clients::Clients;
use crate::delivery::DeliveryService;
use crate::ft::FtService;
use crate::metrics::Metrics;

/// What the handlers need. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    ft: FtService,
    deliveries: DeliveryService,
    clients: Arc<Clients>,
    metrics: Arc<Metrics>,
    token: Arc<Token>,
}

/// The bearer token the API requires, if any: replaced by a reload (SIGHUP). Kept as its SHA-256:
/// comparing digests keeps the compare constant-time whatever the length of the token presented.
#[derive(Debug, Default)]
pub struct Token(ArcSwapOption<[u8; 32]>);

impl Token {
    pub fn new(token: Option<&str>) -> Arc<Token> {
        let t = Token::default();
        t.set(token);
        Arc::new(t)
    }

    /// Requires `token` from the next request on (`None`: no token); says whether it changed.
    pub fn set(&self, token: Option<&str>) -> bool {
        let new: Option<[u8; 32]> = token.map(|t| Sha256::digest(t.trim().as_bytes()).into());
        let old = self.0.swap(new.map(Arc::new));
        old.as_deref() != new.as_ref()
    }

    /// Whether a request with this `Authorization` header value may pass.
    fn admits(&self, authorization: Option<&str>) -> bool {
        let Some(expected) = self.0.load_full() else {
            return true;
        };
        authorization
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| Sha256::digest(t.trim().as_bytes()))
            .is_some_and(|d| bool::from(d.as_slice().ct_eq(expected.as_slice())))
    }
}

impl ApiState {
    pub fn new(
        ft: FtService,
        deliveries: DeliveryService,
        clients: Arc<Clients>,
        metrics: Arc<Metrics>,
        token: Arc<Token>,
    ) -> ApiState {
        ApiState {
            inner: Arc::new(Inner {
                ft,
                deliveries,
                clients,
                metrics,
                token,
            }),
        }
    }

    fn ft(&self) -> &FtService {
        &self.inner.ft
    }

    fn deliveries(&self) -> &DeliveryService {
        &self.inner.deliveries
    }

    fn clients(&self) -> &Clients {
        &self.inner.clients
    }

    fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// The whole HTTP app.
pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/api/v1/transfers", get(transfers::list))
        .route(
            "/api/v1/transfers/{clientId}/{fileId}",
            get(transfers::get).delete(transfers::cancel),
        )
        .route("/api/v1/files", get(files::list))
        .route("/api/v1/files/{clientId}/{fileId}", get(files::manifest))
        .route(
            "/api/v1/files/{clientId}/{fileId}/content",
            get(files::content),
        )
        .route("/api/v1/clients", get(clients::list))
        .route(
            "/api/v1/deliveries",
            get(deliveries::list).post(deliveries::create),
        )
        .route(
            "/api/v1/deliveries/{id}",
            get(deliveries::get).delete(deliveries::delete),
        )
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/metrics", get(ops::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(ops::healthz))
        .merge(dashboard::routes())
        .merge(protected)
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` changes.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let graceful = async move {
        let _ = shutdown.changed().await;
    };
    if let Err(e) = axum::serve(listener::Limited::new(listener), router)
        .with_graceful_shutdown(graceful)
        .await
    {
        tracing::warn!(error = %e, "HTTP API stopped");
    }
}

async fn require_token(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !state.inner.token.admits(presented) {
        return ApiError::unauthorized().into_response();
    }
    next.run(req).await
}

/// The OpenAPI description of every route.
#[derive(OpenApi)]
#[openapi(
    info(title = "quicft HTTP API", description = "Transfers, exported files, deliveries to devices, connected clients and metrics of a quicft server."),
    paths(
        transfers::list,
        transfers::get,
        transfers::cancel,
        files::list,
        files::manifest,
        files::content,
        clients::list,
        deliveries::create,
        deliveries::list,
        deliveries::get,
        deliveries::delete,
        ops::healthz,
        ops::metrics,
        openapi_json,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", operation_id = "openapi", tag = "meta",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi_json() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|_| "{}".to_owned())
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.clone(),
    )
        .into_response()
}
