//! Answers AWS IoT MQTT-based file delivery requests (`quicft_proto::aws_stream`): a delivery is
//! the stream `{deliveryId}` with the one file `0`, for the things (client ids) it targets.
//!
//! The session has already checked that the topic is a request of the client's own thing
//! (`session::delivery`); answers are published through the broker to the device's own
//! subscriptions to `…/description|data|rejected/{json|cbor}`, as AWS's service does.
//!
//! The work is bounded, so a device sending a flood of small `get`s while not reading cannot make
//! the server buffer without bound: a client has at most [`MAX_INFLIGHT_PER_CLIENT`] requests being
//! answered (more are rejected); block data read from disk stays within [`MAX_BLOCK_MEMORY`]
//! server-wide; and every answer's payload carries permits of its client's budget
//! ([`MAX_QUEUED_PER_CLIENT`] bytes) and of the server's ([`MAX_QUEUED_BYTES`]) that are released
//! only when the last copy of the payload is dropped — once the session has written it (and, at
//! QoS 1, the device acknowledged it), or the message was dropped. A request whose answer does
//! not fit its client's budget waits for the device to read; one that does not fit the server's
//! is rejected (`InternalError`, retry).

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use quicft_proto::aws_stream::{
    self as aws, Action, DataBlock, Description, ErrorCode, Format, Rejection, StreamFile,
};
use quicft_proto::QoS;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{DeliveryService, DeviceState, Refusal, STREAM_VERSION};
use crate::broker::Message;

/// Requests of one client answered at once.
pub const MAX_INFLIGHT_PER_CLIENT: usize = 4;
/// Bytes of blocks read from disk and not yet encoded, server-wide.
pub const MAX_BLOCK_MEMORY: usize = 64 << 20;
/// Bytes of answers to one client not yet written to it (at least one 128 KiB answer in JSON).
pub const MAX_QUEUED_PER_CLIENT: usize = 1 << 20;
/// Bytes of answers not yet written to their devices, server-wide.
pub const MAX_QUEUED_BYTES: usize = 256 << 20;

/// An answer's payload with the budget permits it holds until its last copy is dropped.
struct Budgeted {
    bytes: Vec<u8>,
    _client: OwnedSemaphorePermit,
    _server: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// A device's request under `$aws/things/{its client id}/streams/…`, or its status report on
/// `$file-delivery/status/{its client id}/…`, handed over by its session.
pub(crate) struct StreamRequest {
    pub client_id: Arc<str>,
    pub topic: String,
    pub payload: Bytes,
}

impl DeliveryService {
    /// Answers `req` in a task.
    pub(crate) fn spawn_request(&self, req: StreamRequest) {
        if let Some(t) = quicft_proto::file_delivery::parse_status_topic(&req.topic) {
            return self.report(t.client_id, t.delivery_id, &req.payload);
        }
        let admitted = {
            let mut busy = self
                .inner
                .busy
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = busy.entry(req.client_id.clone()).or_insert(0);
            if *n < MAX_INFLIGHT_PER_CLIENT {
                *n += 1;
                true
            } else {
                false
            }
        };
        let svc = self.clone();
        tokio::spawn(async move {
            let replies = if admitted {
                let answers = svc.answer(&req).await;
                svc.budget(&req, answers).await
            } else {
                tracing::info!(client_id = %req.client_id, "stream request refused: too many in flight");
                reject_only(
                    &req,
                    Rejection::new(
                        ErrorCode::InvalidRequest,
                        format!("more than {MAX_INFLIGHT_PER_CLIENT} requests in flight; wait for the answers"),
                    ),
                )
            };
            for m in replies {
                svc.inner.broker.publish(m);
            }
            if admitted {
                let mut busy = svc
                    .inner
                    .busy
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(n) = busy.get_mut(&req.client_id) {
                    *n -= 1;
                    if *n == 0 {
                        busy.remove(&req.client_id);
                        // Nothing of this client's is queued: its budget can go too.
                        let mut budgets = svc
                            .inner
                            .budgets
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if budgets
                            .get(&req.client_id)
                            .is_some_and(|b| b.available_permits() == MAX_QUEUED_PER_CLIENT)
                        {
                            budgets.remove(&req.client_id);
                        }
                    }
                }
            }
        });
    }

    /// Gives each answer's payload its permits: waits for the client's budget (the device reads
    /// its earlier answers), rejects when the server's is spent.
    async fn budget(&self, req: &StreamRequest, answers: Vec<Message>) -> Vec<Message> {
        let client = {
            let mut budgets = self
                .inner
                .budgets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            budgets
                .entry(req.client_id.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(MAX_QUEUED_PER_CLIENT)))
                .clone()
        };
        let mut out = Vec::with_capacity(answers.len());
        for mut m in answers {
            let n = u32::try_from(m.payload.len().min(MAX_QUEUED_PER_CLIENT)).unwrap_or(u32::MAX);
            let Ok(server) = self.inner.queued.clone().try_acquire_many_owned(n) else {
                tracing::info!(client_id = %req.client_id, "stream answers over the server's budget");
                return reject_only(
                    req,
                    Rejection::new(ErrorCode::InternalError, "server busy; retry later"),
                );
            };
            let Ok(client) = client.clone().acquire_many_owned(n).await else {
                return Vec::new();
            };
            m.payload = Bytes::from_owner(Budgeted {
                bytes: Vec::from(std::mem::take(&mut m.payload)),
                _client: client,
                _server: server,
            });
            out.push(m);
        }
        out
    }

    async fn answer(&self, req: &StreamRequest) -> Vec<Message> {
        let Some(Ok(t)) = aws::parse_topic(&req.topic) else {
            return Vec::new();
        };
        let reply = |action, payload: Vec<u8>| {
            message(
                aws::topic(t.thing, t.stream_id, action, t.format),
                payload,
                t.format,
            )
        };
        let rejected = |r: Rejection| vec![reply(Action::Rejected, r.encode(t.format))];
        match t.action {
            Action::Describe => {
                let d = match aws::decode_describe(t.format, &req.payload) {
                    Ok(d) => d,
                    Err(r) => return rejected(r),
                };
                match self.for_device(t.stream_id, &req.client_id) {
                    Ok((record, _)) => {
                        let desc = Description {
                            client_token: d.client_token,
                            version: STREAM_VERSION,
                            // Free text in AWS's protocol; here JSON a device can use to
                            // verify the file (AWS's own stream has no checksum field).
                            description: serde_json::json!({
                                "name": record.name,
                                "version": record.version,
                                "sha256": record.sha256,
                            })
                            .to_string(),
                            files: vec![StreamFile {
                                file_id: 0,
                                size: record.size,
                            }],
                        };
                        vec![reply(Action::Description, desc.encode(t.format))]
                    }
                    Err(why) => rejected(refusal(why, t.stream_id).with_token(d.client_token)),
                }
            }
            Action::Get => {
                let g = match aws::decode_get(t.format, &req.payload) {
                    Ok(g) => g,
                    Err(r) => return rejected(r),
                };
                let (record, path) = match self.for_device(t.stream_id, &req.client_id) {
                    Ok(v) => v,
                    Err(why) => {
                        return rejected(refusal(why, t.stream_id).with_token(g.client_token))
                    }
                };
                let blocks = match aws::plan_blocks(&g, record.size, STREAM_VERSION) {
                    Ok(b) => b,
                    Err(r) => return rejected(r),
                };
                let budget = u32::try_from(blocks.len() as u64 * g.block_size).unwrap_or(u32::MAX);
                let Ok(_permit) = self.inner.memory.clone().try_acquire_many_owned(budget) else {
                    return rejected(
                        Rejection::new(ErrorCode::InternalError, "server busy; retry later")
                            .with_token(g.client_token),
                    );
                };
                let (l, size) = (g.block_size, record.size);
                let read =
                    tokio::task::spawn_blocking(move || -> std::io::Result<Vec<(u64, Vec<u8>)>> {
                        let file = std::fs::File::open(path)?;
                        blocks
                            .into_iter()
                            .map(|i| {
                                let off = i * l;
                                let len = l.min(size.saturating_sub(off));
                                let mut buf = vec![0; usize::try_from(len).unwrap_or(0)];
                                file.read_exact_at(&mut buf, off)?;
                                Ok((i, buf))
                            })
                            .collect()
                    })
                    .await;
                let data = match read {
                    Ok(Ok(d)) => d,
                    Ok(Err(e)) => {
                        tracing::warn!(id = t.stream_id, error = %e, "cannot read delivery");
                        return rejected(
                            Rejection::new(ErrorCode::InternalError, "cannot read the file")
                                .with_token(g.client_token),
                        );
                    }
                    Err(_) => return Vec::new(),
                };
                let sent: u64 = data.iter().map(|(_, b)| b.len() as u64).sum();
                self.progress(
                    t.stream_id,
                    &req.client_id,
                    DeviceState::Downloading,
                    sent,
                    None,
                );
                data.iter()
                    .map(|(i, payload)| {
                        let block = DataBlock {
                            client_token: g.client_token.as_deref(),
                            file_id: 0,
                            block_id: *i,
                            payload,
                        };
                        reply(Action::Data, block.encode(t.format))
                    })
                    .collect()
            }
            // The session hands over requests only.
            Action::Description | Action::Data | Action::Rejected => Vec::new(),
        }
    }
}

fn refusal(why: Refusal, id: &str) -> Rejection {
    match why {
        Refusal::NotFound => Rejection::new(ErrorCode::ResourceNotFound, format!("no stream {id}")),
        Refusal::Expired => Rejection::new(
            ErrorCode::ResourceNotFound,
            format!("stream {id} has expired"),
        ),
        Refusal::NotTargeted => Rejection::new(
            ErrorCode::Unauthorized,
            format!("stream {id} is not for this thing"),
        ),
    }
}

/// Only a rejection, for a request not admitted.
fn reject_only(req: &StreamRequest, r: Rejection) -> Vec<Message> {
    match aws::parse_topic(&req.topic) {
        Some(Ok(t)) => vec![message(
            aws::topic(t.thing, t.stream_id, Action::Rejected, t.format),
            r.encode(t.format),
            t.format,
        )],
        _ => Vec::new(),
    }
}

/// An answer as the server publishes it; CBOR is not UTF-8 and says so.
fn message(topic: String, payload: Vec<u8>, format: Format) -> Message {
    let mut m = Message::server(topic, Bytes::from(payload), QoS::AtLeastOnce);
    if format == Format::Cbor {
        m.properties.payload_format_indicator = None;
        m.properties.content_type = Some("application/cbor".into());
    }
    m
}
