//! `POST|GET /api/v1/deliveries`, `GET|DELETE /api/v1/deliveries/{id}`: files for devices
//! (cloud-to-device delivery, DESIGN §7). The upload is the raw request body, streamed to disk;
//! what describes it goes in the query string.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiState};
use crate::delivery::{DeliveryError, DeviceProgress, NewDelivery, Record, Targets};

/// A delivery and each device's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// Server-made id: the stream id devices ask for (`$aws/things/{clientId}/streams/{id}/…`).
    pub id: String,
    pub name: String,
    pub version: String,
    pub size: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// The version devices see in AWS answers (`s`); always 1, as a delivery never changes.
    pub stream_version: u64,
    /// Client ids and patterns (`truck-*`) the delivery is for.
    pub targets: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
    pub expires_at: Option<u64>,
    /// Per client id: `pending` (targeted by id, not heard from), `notified`, `downloading`
    /// (with `bytes` sent), `verified`, `applied`, `failed` (with the device's `reason`), `expired`.
    pub devices: BTreeMap<String, DeviceProgress>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
}

impl From<Record> for DeliveryView {
    fn from(r: Record) -> DeliveryView {
        DeliveryView {
            id: r.id,
            name: r.name,
            version: r.version,
            size: r.size,
            sha256: r.sha256,
            stream_version: crate::delivery::STREAM_VERSION,
            targets: r.targets,
            created_at: r.created_at,
            expires_at: r.expires_at,
            devices: r.devices,
        }
    }
}

/// What describes a new delivery (the body is the file).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateParams {
    /// File name shown to operators and devices (1–255 characters).
    pub name: String,
    /// Free-form version, e.g. `1.4.2` (at most 64 characters).
    #[serde(default)]
    pub version: String,
    /// Comma-separated client ids and patterns: `truck-*,dev-7`.
    pub targets: String,
    /// Seconds from now after which devices can no longer fetch it.
    pub expires_in: Option<u64>,
    /// Expected SHA-256 (hex): the upload is refused if the body differs.
    pub sha256: Option<String>,
}

/// Stores a file for devices. The body is the file's bytes (any length up to 4 GiB), written to
/// disk as it arrives.
#[utoipa::path(post, path = "/api/v1/deliveries", operation_id = "createDelivery", tag = "deliveries",
    params(CreateParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file"),
    responses(
        (status = 201, description = "Created", body = DeliveryView),
        (status = 400, description = "Bad parameters, or the SHA-256 differs", body = super::ErrorBody),
        (status = 413, description = "Larger than 4 GiB", body = super::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::ErrorBody),
    ))]
pub async fn create(
    State(s): State<ApiState>,
    q: Result<Query<CreateParams>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid_parameter(e.body_text()))?;
    let targets =
        Targets::parse(&q.targets).map_err(|e| ApiError::invalid_parameter(e.to_string()))?;
    let expires_at = q
        .expires_in
        .map(|secs| crate::delivery::now_secs().saturating_add(secs));
    let new = NewDelivery {
        name: q.name,
        version: q.version,
        targets,
        expires_at,
        sha256: q.sha256,
    };
    match s.deliveries().create(new, body.into_data_stream()).await {
        Ok(r) => {
            let location = format!("/api/v1/deliveries/{}", r.id);
            Ok((
                StatusCode::CREATED,
                [(header::LOCATION, location)],
                Json(DeliveryView::from(r)),
            )
                .into_response())
        }
        Err(
            e @ (DeliveryError::Invalid(_)
            | DeliveryError::Targets(_)
            | DeliveryError::Sha256Mismatch { .. }
            | DeliveryError::Body(_)),
        ) => Err(ApiError::invalid_parameter(e.to_string())),
        Err(e @ DeliveryError::TooLarge) => Err(ApiError::too_large(e.to_string())),
        Err(e @ DeliveryError::Io(_)) => Err(ApiError::internal("store delivery", e)),
    }
}

/// Every delivery, oldest first.
#[utoipa::path(get, path = "/api/v1/deliveries", operation_id = "listDeliveries", tag = "deliveries",
    responses(
        (status = 200, description = "Deliveries", body = DeliveryList),
        (status = 401, description = "Token missing or wrong", body = super::ErrorBody),
    ))]
pub async fn list(State(s): State<ApiState>) -> Json<DeliveryList> {
    let deliveries = s
        .deliveries()
        .list()
        .into_iter()
        .map(DeliveryView::from)
        .collect();
    Json(DeliveryList { deliveries })
}

/// One delivery with each device's state.
#[utoipa::path(get, path = "/api/v1/deliveries/{id}", operation_id = "getDelivery", tag = "deliveries",
    params(("id" = String, Path, description = "Delivery id")),
    responses(
        (status = 200, description = "The delivery", body = DeliveryView),
        (status = 404, description = "No such delivery", body = super::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::ErrorBody),
    ))]
pub async fn get(
    State(s): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<DeliveryView>, ApiError> {
    let Path(id) = p.map_err(|e| ApiError::invalid_parameter(e.body_text()))?;
    s.deliveries()
        .get(&id)
        .map(|r| Json(r.into()))
        .ok_or_else(|| ApiError::not_found(format!("no delivery {id:?}")))
}

/// Deletes a delivery and its file; devices asking for it from now on get `ResourceNotFound`.
#[utoipa::path(delete, path = "/api/v1/deliveries/{id}", operation_id = "deleteDelivery", tag = "deliveries",
    params(("id" = String, Path, description = "Delivery id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such delivery", body = super::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::ErrorBody),
    ))]
pub async fn delete(
    State(s): State<ApiState>,
    p: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = p.map_err(|e| ApiError::invalid_parameter(e.body_text()))?;
    match s.deliveries().delete(&id).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ApiError::not_found(format!("no delivery {id:?}"))),
        Err(e) => Err(ApiError::internal("delete delivery", e)),
    }
}
