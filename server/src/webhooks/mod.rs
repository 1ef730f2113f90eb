//! Webhooks (`[[webhooks]]`, DESIGN §8): every file-transfer event (`started`, `completed`,
//! `failed`, `aborted`, `exported`) a hook subscribes to is POSTed to its URL as the same JSON the
//! server publishes on `$events/file/…`, signed with `X-Quicft-Signature` (hex HMAC-SHA256 of the
//! body with the hook's secret) and numbered with `X-Quicft-Event-Id`.
//!
//! Each hook has a durable outbox (`outbox.rs`) in `<data-dir>/webhooks/<hook>/`: an event is
//! appended and fsynced before it is offered for delivery, delivered in the order it was appended
//! (so in order per file), one at a time, retried with exponential backoff (0.5 s doubling up to
//! [`MAX_BACKOFF`]) until the receiver answers 2xx, and only then marked delivered. A receiver that
//! is down for an hour, or a server restart meanwhile, costs nothing but time. A crash between the
//! receiver's 2xx and the mark repeats that one event after the restart: receivers that must not
//! see a repeat deduplicate on `X-Quicft-Event-Id`. The outbox holds at most `max_pending` events
//! per hook; beyond that new events are dropped, with an error log line and
//! `quicft_webhook_events_dropped_total`.

mod config;
mod outbox;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Notify;

pub use config::WebhookConfig;
use outbox::Outbox;

/// Longest wait between two attempts of one event.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long one POST may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The configured hooks, each with its outbox and delivery task.
pub struct Webhooks {
    hooks: Vec<Arc<Hook>>,
}

struct Hook {
    cfg: WebhookConfig,
    outbox: Outbox,
    wake: Notify,
}

impl Webhooks {
    /// Opens every hook's outbox under `<data_dir>/webhooks/` (blocking: a few file reads).
    pub fn open(data_dir: &Path, hooks: &[WebhookConfig]) -> std::io::Result<Webhooks> {
        let mut out = Vec::new();
        for cfg in hooks {
            let dir = data_dir.join("webhooks").join(cfg.dir_name());
            let outbox = Outbox::open(&dir, cfg.max_pending)?;
            if outbox.pending() > 0 {
                tracing::info!(url = %cfg.url, pending = outbox.pending(), "webhook outbox has events to deliver");
            }
            out.push(Arc::new(Hook {
                cfg: cfg.clone(),
                outbox,
                wake: Notify::new(),
            }));
        }
        Ok(Webhooks { hooks: out })
    }

    /// Appends `body` (an event's JSON, whose `event` field names its kind) to the outbox of every
    /// hook that wants it. Blocking (an fsync per hook): call from a blocking thread.
    pub fn enqueue(&self, kind: &str, body: &[u8]) {
        for h in &self.hooks {
            if !h.cfg.wants(kind) {
                continue;
            }
            match h.outbox.append(body) {
                Ok(true) => h.wake.notify_one(),
                Ok(false) => {
                    crate::metrics::webhook_dropped();
                    tracing::error!(url = %h.cfg.url, event = kind, max_pending = h.cfg.max_pending,
                        "webhook outbox full: event dropped");
                }
                Err(e) => {
                    crate::metrics::webhook_dropped();
                    tracing::error!(url = %h.cfg.url, event = kind, error = %e,
                        "cannot write webhook outbox: event dropped");
                }
            }
        }
    }

    /// Starts one delivery task per hook; they run until aborted.
    pub fn spawn(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        if self.hooks.is_empty() {
            return Vec::new();
        }
        // reqwest is built without its own crypto provider: use ring, the one rustls and quinn use.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = match reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("quicft/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the webhook HTTP client: webhooks not delivered");
                return Vec::new();
            }
        };
        self.hooks
            .iter()
            .map(|h| tokio::spawn(deliver(h.clone(), client.clone())))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }
}

/// Delivers a hook's events in order, forever.
async fn deliver(h: Arc<Hook>, client: reqwest::Client) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let wake = h.wake.notified();
        let Some((id, body)) = h.outbox.next() else {
            wake.await;
            continue;
        };
        let sig = sign(h.cfg.secret.as_bytes(), &body);
        let sent = client
            .post(&h.cfg.url)
            .header("content-type", "application/json")
            .header("x-quicft-signature", sig)
            .header("x-quicft-event-id", id.to_string())
            .body(body)
            .send()
            .await;
        let failure = match sent {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("receiver answered {}", r.status())),
            Err(e) => Some(e.to_string()),
        };
        match failure {
            None => {
                backoff = Duration::from_millis(500);
                crate::metrics::webhook_delivered();
                let h2 = h.clone();
                let marked = tokio::task::spawn_blocking(move || h2.outbox.delivered(id)).await;
                if let Ok(Err(e)) | Err(e) = marked.map_err(std::io::Error::other) {
                    tracing::error!(url = %h.cfg.url, error = %e, "cannot mark webhook event delivered");
                    tokio::time::sleep(backoff).await;
                }
            }
            Some(why) => {
                crate::metrics::webhook_failed();
                tracing::warn!(url = %h.cfg.url, event_id = id, error = %why, retry_in = ?backoff,
                    "webhook delivery failed; will retry");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Hex HMAC-SHA256 of `body` under `secret` (`X-Quicft-Signature`).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot fail.
        Err(_) => return String::new(),
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            super::sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
