//! `GET /api/v1/transfers`, `GET|DELETE /api/v1/transfers/{clientId}/{fileId}`.

use std::collections::HashMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, ApiState};
use crate::ft::{FtError, TransferInfo, TransferState};
use crate::link::Transport;

/// A transfer in progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransferView {
    pub client_id: String,
    pub file_id: String,
    pub name: String,
    /// Declared size, when init gave one.
    pub size: Option<u64>,
    /// Bytes stored durably (acknowledged with 0x00).
    pub bytes_held: u64,
    /// Half-open byte ranges held, `[[start, end], …]`.
    #[schema(value_type = Vec<Vec<u64>>)]
    pub ranges: Vec<(u64, u64)>,
    /// Bytes per second made durable over the last ~10 s.
    pub rate_bytes_per_sec: f64,
    /// `initializing`, `receiving` or `assembling`.
    pub state: TransferState,
    /// Transport of the client's current connection (`quic`, `tcp`, `tls`); null when offline.
    pub transport: Option<&'static str>,
    /// Unix seconds.
    pub started_at: u64,
    pub updated_at: u64,
    /// The metadata the device sent with init.
    #[schema(value_type = Object)]
    pub meta: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransferList {
    pub transfers: Vec<TransferView>,
}

fn view(t: TransferInfo, transports: &HashMap<String, Transport>) -> TransferView {
    TransferView {
        transport: transports.get(&t.client_id).map(|t| t.as_str()),
        meta: serde_json::to_value(&t.meta).unwrap_or_default(),
        client_id: t.client_id,
        file_id: t.file_id,
        name: t.name,
        size: t.size,
        bytes_held: t.bytes_held,
        ranges: t.ranges,
        rate_bytes_per_sec: t.rate_bytes_per_sec,
        state: t.state,
        started_at: t.started_at,
        updated_at: t.updated_at,
    }
}

pub(super) fn ids(
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::invalid_parameter(e.body_text()))
}

/// Transfers in progress, oldest first.
#[utoipa::path(get, path = "/api/v1/transfers", operation_id = "listTransfers", tag = "transfers",
    responses(
        (status = 200, description = "Transfers in progress", body = TransferList),
        (status = 401, description = "Token missing or wrong", body = super::ErrorBody),
    ))]
pub async fn list(State(s): State<ApiState>) -> Json<TransferList> {
    let transports = s.clients().transports();
    let transfers = s
        .ft()
        .transfers()
        .into_iter()
        .map(|t| view(t, &transports))
        .collect();
    Json(TransferList { transfers })
}

/// One transfer in progress.
#[utoipa::path(get, path = "/api/v1/transfers/{clientId}/{fileId}", operation_id = "getTransfer", tag = "transfers",
    params(("clientId" = String, Path, description = "MQTT client id"), ("fileId" = String, Path, description = "File id")),
    responses(
        (status = 200, description = "The transfer", body = TransferView),
        (status = 404, description = "No such transfer in progress", body = super::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::ErrorBody),
    ))]
pub async fn get(
    State(s): State<ApiState>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<TransferView>, ApiError> {
    let (client_id, file_id) = ids(p)?;
    let t = s
        .ft()
        .transfers()
        .into_iter()
        .find(|t| t.client_id == client_id && t.file_id == file_id)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no transfer {file_id:?} of client {client_id:?} in progress"
            ))
        })?;
    let transport = s.clients().transport_of(&client_id);
    let transports = transport
        .map(|t| (client_id.clone(), t))
        .into_iter()
        .collect();
    Ok(Json(view(t, &transports)))
}

/// Cancels a transfer in progress: its stored data is deleted and the device's next command for it
/// gets 0x83. Cancelling a transfer that is already cancelled succeeds.
#[utoipa::path(delete, path = "/api/v1/transfers/{clientId}/{fileId}", operation_id = "cancelTransfer", tag = "transfers",
    params(("clientId" = String, Path, description = "MQTT client id"), ("fileId" = String, Path, description = "File id")),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 404, description = "No such transfer in progress", body = super::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::ErrorBody),
    ))]
pub async fn cancel(
    State(s): State<ApiState>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let (client_id, file_id) = ids(p)?;
    match s.ft().cancel(&client_id, &file_id).await {
        Ok(()) => {
            tracing::info!(
                client_id,
                file_id,
                "transfer cancelled through the HTTP API"
            );
            Ok(StatusCode::NO_CONTENT)
        }
        Err(e @ FtError::NotFound { .. }) => Err(ApiError::not_found(e.to_string())),
        Err(e) => Err(ApiError::internal("cancel", e)),
    }
}
