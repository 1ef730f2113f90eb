//! `GET /api/v1/clients`.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;

/// A connected client.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientView {
    pub client_id: String,
    /// `quic`, `tcp` or `tls`.
    pub transport: &'static str,
    /// The peer's IP address and port.
    pub address: String,
    /// Unix seconds.
    pub connected_at: u64,
    /// Open MQTT streams: the control stream plus QUIC data streams.
    pub streams: u64,
    /// MQTT bytes received from and sent to this connection.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientList {
    pub clients: Vec<ClientView>,
}

/// Connected clients, by client id.
#[utoipa::path(get, path = "/api/v1/clients", operation_id = "listClients", tag = "clients",
    responses(
        (status = 200, description = "Connected clients", body = ClientList),
        (status = 401, description = "Token missing or wrong", body = super::ErrorBody),
    ))]
pub async fn list(State(s): State<ApiState>) -> Json<ClientList> {
    let clients = s
        .clients()
        .list()
        .into_iter()
        .map(|c| ClientView {
            client_id: c.client_id,
            transport: c.transport.as_str(),
            address: c.peer.to_string(),
            connected_at: c.connected_at,
            streams: c.streams,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            packets_in: c.packets_in,
        })
        .collect();
    Json(ClientList { clients })
}
