//! MQTT over WebSocket: `ws` on plain TCP and `wss` over TLS with the server's identity. The
//! upgrade must ask for path `/mqtt` and offer the subprotocol `mqtt` (MQTT 5 §6); anything else is
//! refused with an HTTP status and a line saying why.
//!
//! MQTT bytes travel in binary frames with no relation between frame and packet boundaries: a
//! packet may span frames and a frame may hold several packets. So an upgraded connection is
//! bridged into an in-memory pipe (`tokio::io::duplex`) and the session reads and writes it as it
//! does a TCP socket — the same sessions, authentication and ACLs. The pipe's buffer bounds what is
//! in transit between the two, and a WebSocket message is bounded by the largest MQTT packet.

use std::sync::Arc;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::link::Link;
use crate::session;
use crate::Ctx;

/// The path MQTT over WebSocket is served at (what mosquitto, EMQX and MQTT.js use).
pub const PATH: &str = "/mqtt";
/// The WebSocket subprotocol MQTT 5 §6 names.
pub const SUBPROTOCOL: &str = "mqtt";
/// Bytes buffered between the WebSocket and the session, each way.
const PIPE: usize = 64 * 1024;

/// Accepts the upgrade of `stream` (already TLS for `wss`) and serves the MQTT session on it.
pub(crate) async fn serve<S>(ctx: Arc<Ctx>, link: Link, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = link.peer;
    // A message holds at most one maximum-size packet and the start of the next.
    let max = ctx.config.limits.max_packet_size.saturating_mul(2);
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config));
    let ws = match tokio::time::timeout(ctx.config.limits.handshake_timeout, upgrade).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::info!(%peer, reason = %e, "WebSocket connection refused: upgrade failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "WebSocket connection refused: upgrade timeout");
            return;
        }
    };
    let (session_end, bridge_end) = tokio::io::duplex(PIPE);
    let mut bridge = tokio::spawn(bridge(ws, bridge_end));
    let (r, w) = tokio::io::split(session_end);
    session::serve(ctx, link, r, w).await;
    // The session dropped its end: the bridge sends what is left and a Close frame.
    if tokio::time::timeout(std::time::Duration::from_secs(2), &mut bridge)
        .await
        .is_err()
    {
        bridge.abort();
    }
}

/// The upgrade request's checks: path `/mqtt` and subprotocol `mqtt` among those offered.
// The signature is tungstenite's `Callback`; its error type is an HTTP response.
#[allow(clippy::result_large_err)]
fn check(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() != PATH {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "MQTT over WebSocket is served at /mqtt",
        ));
    }
    let offered = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offered {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "MQTT over WebSocket needs the subprotocol mqtt (Sec-WebSocket-Protocol: mqtt)",
        ));
    }
    resp.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(resp)
}

fn refuse(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_owned()));
    *r.status_mut() = status;
    r
}

/// Moves bytes between the WebSocket and the session's pipe until either side ends.
async fn bridge<S>(ws: WebSocketStream<S>, pipe: DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut from_session, mut to_session) = tokio::io::split(pipe);
    let inbound = async {
        while let Some(msg) = ws_rx.next().await {
            match msg {
                Ok(Message::Binary(b)) => {
                    if to_session.write_all(&b).await.is_err() {
                        break;
                    }
                }
                // tungstenite answers pings itself.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Text(_)) => {
                    // MQTT 5 §6: "If any other type of data frame is received the recipient MUST
                    // close the Network Connection".
                    tracing::info!("text frame on an MQTT WebSocket; closing");
                    break;
                }
                Ok(Message::Close(_)) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "WebSocket read failed");
                    break;
                }
            }
        }
        let _ = to_session.shutdown().await;
    };
    let outbound = async {
        let mut buf = BytesMut::with_capacity(PIPE);
        loop {
            buf.reserve(PIPE);
            match from_session.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let frame = Message::Binary(buf.split().freeze());
                    if ws_tx.send(frame).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = ws_tx.close().await;
    };
    // Inbound ending (the client closed) ends the session through the pipe; outbound ending (the
    // session is over) ends the connection.
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
}
