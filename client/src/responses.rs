//! Answers to file-transfer commands (DESIGN §2): the server publishes the outcome of every command
//! as JSON on `$file-response/{clientId}` (or the MQTT 5 Response Topic, echoing Correlation Data).
//! `status` is answered only there, and under 3.1.1 (`$file-async/`) every outcome is.
//!
//! One subscription per client, made on first use and restored on every reconnect; a task hands
//! each response to whoever waits for it, by Correlation Data when the command carried some, else
//! by (command topic, packet id). A response can arrive before its waiter is registered (the
//! packet id is known only once the command is queued), so recent unclaimed responses are kept.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use quicft_proto::ft::{response_topic, Response};
use quicft_proto::{QoS, SubscriptionOptions};
use tokio::sync::{oneshot, OnceCell};

use crate::client::Core;
use crate::error::Result;

/// Unclaimed responses kept for a late waiter; every segment's outcome is published too, so this
/// is a ring, not a store.
const UNCLAIMED: usize = 512;

/// What identifies the answer to one command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Correlation(Bytes),
    Command { topic: String, packet_id: u16 },
}

#[derive(Default)]
pub(crate) struct Responses {
    subscribed: OnceCell<()>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    waiters: HashMap<Key, oneshot::Sender<Response>>,
    unclaimed: VecDeque<(Key, Response)>,
    next_correlation: u64,
}

impl Responses {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to `$file-response/{clientId}` once for the client's lifetime.
    pub(crate) async fn ensure_subscribed(core: &Arc<Core>) -> Result<()> {
        core.ft
            .subscribed
            .get_or_try_init(|| async {
                let (conn, chan) = core.telemetry_tx().await?;
                let topic = response_topic(&core.client_id());
                let options = SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                };
                let (_key, _granted, mut rx) =
                    core.subscribe(&conn, &chan, &topic, options, 1024).await?;
                let weak: Weak<Core> = Arc::downgrade(core);
                tokio::spawn(async move {
                    while let Some(p) = rx.recv().await {
                        let Some(core) = weak.upgrade() else { return };
                        match Response::parse(&p.payload) {
                            Ok(r) => core.ft.dispatch(p.properties.correlation_data, r),
                            Err(e) => tracing::debug!(%e, "unreadable file-transfer response"),
                        }
                    }
                });
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// A fresh Correlation Data value.
    pub(crate) fn correlation(&self) -> Bytes {
        let mut s = self.lock();
        s.next_correlation += 1;
        Bytes::from(format!("qft-{}-{}", std::process::id(), s.next_correlation))
    }

    /// Waits for the response with `key` (one already received and unclaimed counts).
    pub(crate) fn expect(&self, key: Key) -> oneshot::Receiver<Response> {
        let (tx, rx) = oneshot::channel();
        let mut s = self.lock();
        if let Some(i) = s.unclaimed.iter().position(|(k, _)| *k == key) {
            if let Some((_, r)) = s.unclaimed.remove(i) {
                let _ = tx.send(r);
                return rx;
            }
        }
        s.waiters.insert(key, tx);
        rx
    }

    pub(crate) fn forget(&self, key: &Key) {
        self.lock().waiters.remove(key);
    }

    fn dispatch(&self, correlation: Option<Bytes>, r: Response) {
        let mut s = self.lock();
        let mut r = Some(r);
        if let Some(c) = correlation {
            if let Some(tx) = s.waiters.remove(&Key::Correlation(c)) {
                if let Some(r) = r.take() {
                    let _ = tx.send(r);
                }
                return;
            }
        }
        let Some(r) = r else { return };
        let key = Key::Command {
            topic: r.topic.clone(),
            packet_id: r.packet_id,
        };
        match s.waiters.remove(&key) {
            Some(tx) => {
                let _ = tx.send(r);
            }
            None => {
                if s.unclaimed.len() >= UNCLAIMED {
                    s.unclaimed.pop_front();
                }
                s.unclaimed.push_back((key, r));
            }
        }
    }

    /// The client ended: every waiter fails.
    pub(crate) fn clear(&self) {
        let mut s = self.lock();
        s.waiters.clear();
        s.unclaimed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quicft_proto::ft::FtReason;

    #[test]
    fn late_waiter_finds_the_unclaimed_response_and_correlation_wins() {
        let r = Responses::default();
        let resp = Response::new("$file-async/f/0", 7, FtReason::Success);
        r.dispatch(None, resp.clone());
        let mut rx = r.expect(Key::Command {
            topic: "$file-async/f/0".into(),
            packet_id: 7,
        });
        assert_eq!(rx.try_recv().ok(), Some(resp));

        let c = r.correlation();
        let mut rx = r.expect(Key::Correlation(c.clone()));
        let status = Response::new("$file/f/status", 9, FtReason::Restart);
        r.dispatch(Some(c), status.clone());
        assert_eq!(rx.try_recv().ok(), Some(status));
    }
}
