//! `$SYS/broker/…`: the broker's counters as retained messages, the topics mosquitto publishes,
//! every `sys_interval` seconds (0: never).
//!
//! Only broker-wide figures are published, never anything about one client (no client ids, no
//! per-client lists), so the topics are as readable as any other: subscribing follows the ACL
//! (with no rules every client may read them; with rules one needs a rule granting `$SYS/#`). `#`
//! and `+` subscriptions do not see them (MQTT 5 §4.7.2), and clients cannot publish to `$SYS`.
//!
//! | topic | payload |
//! |---|---|
//! | `$SYS/broker/version` | `quicft-server 0.x.y` |
//! | `$SYS/broker/uptime` | `N seconds` |
//! | `$SYS/broker/clients/connected` | clients with an open session |
//! | `$SYS/broker/messages/received` | MQTT packets received, all types (as mosquitto counts) |
//! | `$SYS/broker/messages/sent` | application messages queued for subscribers |
//! | `$SYS/broker/bytes/received`, `…/bytes/sent` | MQTT bytes over all transports |
//! | `$SYS/broker/file-transfers/in-progress` | quicft: `$file` transfers not yet finished |

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quicft_proto::{Properties, QoS};

use crate::broker::Message;
use crate::ft::TransferState;
use crate::Ctx;

/// Publishes the `$SYS` topics every `interval` until shutdown.
pub(crate) async fn run(ctx: Arc<Ctx>, interval: Duration) {
    let started = Instant::now();
    let mut shutdown = ctx.shutdown.clone();
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => publish(&ctx, started.elapsed()),
            _ = shutdown.changed() => return,
        }
    }
}

/// The topics and their current values.
pub(crate) fn snapshot(ctx: &Ctx, uptime: Duration) -> Vec<(&'static str, String)> {
    let (bytes_in, bytes_out) = ctx.metrics.bytes_total();
    let in_progress = ctx
        .ft
        .transfers()
        .iter()
        .filter(|t| {
            matches!(
                t.state,
                TransferState::Initializing | TransferState::Receiving | TransferState::Assembling
            )
        })
        .count();
    vec![
        (
            "$SYS/broker/version",
            format!("quicft-server {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "$SYS/broker/uptime",
            format!("{} seconds", uptime.as_secs()),
        ),
        (
            "$SYS/broker/clients/connected",
            ctx.clients.len().to_string(),
        ),
        (
            "$SYS/broker/messages/received",
            ctx.metrics.packets_in_total().to_string(),
        ),
        (
            "$SYS/broker/messages/sent",
            ctx.broker
                .stats
                .delivered
                .load(Ordering::Relaxed)
                .to_string(),
        ),
        ("$SYS/broker/bytes/received", bytes_in.to_string()),
        ("$SYS/broker/bytes/sent", bytes_out.to_string()),
        (
            "$SYS/broker/file-transfers/in-progress",
            in_progress.to_string(),
        ),
    ]
}

fn publish(ctx: &Ctx, uptime: Duration) {
    for (topic, value) in snapshot(ctx, uptime) {
        ctx.broker.publish(Message {
            topic: topic.to_owned(),
            payload: Bytes::from(value),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Properties {
                payload_format_indicator: Some(1),
                ..Properties::default()
            },
            expires_at: None,
            origin: None,
        });
    }
}
