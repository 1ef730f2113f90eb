//! `[[webhooks]]` entries.

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The events a hook may ask for.
pub const EVENTS: [&str; 5] = ["started", "completed", "failed", "aborted", "exported"];

/// One `[[webhooks]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed (`http://` or `https://`).
    pub url: String,
    /// Which events (see [`EVENTS`]); empty or absent: all of them.
    #[serde(default)]
    pub events: Vec<String>,
    /// The HMAC-SHA256 key of `X-Quicft-Signature`.
    pub secret: String,
    /// Most undelivered events kept for this hook; newer ones are dropped beyond it.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
}

fn default_max_pending() -> usize {
    100_000
}

impl WebhookConfig {
    /// What is wrong with the entry, if anything.
    pub fn check(&self) -> Result<(), String> {
        let scheme_ok = self.url.starts_with("http://") || self.url.starts_with("https://");
        if !scheme_ok || reqwest::Url::parse(&self.url).is_err() {
            return Err(format!("webhook url {:?} is not an http(s) URL", self.url));
        }
        if self.secret.is_empty() {
            return Err(format!("webhook {} needs a secret", self.url));
        }
        if let Some(bad) = self.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
            return Err(format!(
                "webhook {}: unknown event {bad:?} (known: {})",
                self.url,
                EVENTS.join(", ")
            ));
        }
        if self.max_pending == 0 {
            return Err(format!(
                "webhook {}: max_pending must be at least 1",
                self.url
            ));
        }
        Ok(())
    }

    pub fn wants(&self, event: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == event)
    }

    /// The outbox directory's name: a digest of the URL, so reordering hooks keeps each outbox.
    pub fn dir_name(&self) -> String {
        hex::encode(&Sha256::digest(self.url.as_bytes())[..8])
    }
}
