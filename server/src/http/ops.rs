//! `/healthz` and `/metrics`.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the process is up and serving HTTP.
    pub status: &'static str,
}

/// Liveness; never needs a token.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "ops", security(()),
    responses((status = 200, description = "Server is up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Prometheus metrics (text exposition format 0.0.4).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "ops",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "Token missing or wrong", body = super::ErrorBody),
    ))]
pub async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    let transfers = s.ft().transfers();
    let finished = s.ft().finished().len();
    let text = s.metrics().render(&transfers, finished, s.clients().len());
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
}
