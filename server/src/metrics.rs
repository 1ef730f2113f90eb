//! Counters for `GET /metrics`, in the Prometheus text format (version 0.0.4).
//!
//! Everything is a relaxed atomic bumped on the hot path and read only when scraped; no metrics
//! crate, because the handful of series here do not justify a registry. Per-server counters live in
//! [`Metrics`] (one per [`crate::Server`]); the disk counters are the file-transfer committer's
//! own, process-wide ([`crate::ft::commit_stats`]): this module reads other modules' counters, and
//! none of them imports it back.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::ft::{commit_stats, TransferInfo, TransferState, FSYNC_BUCKETS};
use crate::link::Transport;

const TRANSPORTS: [Transport; 5] = [
    Transport::Quic,
    Transport::Tcp,
    Transport::Tls,
    Transport::Ws,
    Transport::Wss,
];

fn tix(t: Transport) -> usize {
    match t {
        Transport::Quic => 0,
        Transport::Tcp => 1,
        Transport::Tls => 2,
        Transport::Ws => 3,
        Transport::Wss => 4,
    }
}

/// Packets with a reason code that the server sends, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    ConnAck,
    PubAck,
    PubRec,
    Disconnect,
}

const SENT: [(Sent, &str); 4] = [
    (Sent::ConnAck, "connack"),
    (Sent::PubAck, "puback"),
    (Sent::PubRec, "pubrec"),
    (Sent::Disconnect, "disconnect"),
];

/// MQTT packet names as [`quicft_proto::Packet::name`] gives them, for the per-type packet counter.
const PACKET_TYPES: [&str; 15] = [
    "CONNECT",
    "CONNACK",
    "PUBLISH",
    "PUBACK",
    "PUBREC",
    "PUBREL",
    "PUBCOMP",
    "SUBSCRIBE",
    "SUBACK",
    "UNSUBSCRIBE",
    "UNSUBACK",
    "PINGREQ",
    "PINGRESP",
    "DISCONNECT",
    "AUTH",
];

/// The counters of one server.
pub struct Metrics {
    connections_open: [AtomicU64; TRANSPORTS.len()],
    connections_accepted: [AtomicU64; TRANSPORTS.len()],
    bytes_in: [AtomicU64; TRANSPORTS.len()],
    bytes_out: [AtomicU64; TRANSPORTS.len()],
    packets_in: [AtomicU64; PACKET_TYPES.len()],
    /// `[kind][reason code]`.
    reasons: [[AtomicU64; 256]; SENT.len()],
    /// Outcome of `$file` commands (the PUBACK code in sync mode, the response's code in async mode).
    ft_results: [AtomicU64; 256],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections_open: Default::default(),
            connections_accepted: Default::default(),
            bytes_in: Default::default(),
            bytes_out: Default::default(),
            packets_in: Default::default(),
            reasons: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            ft_results: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Counts one open connection until dropped (held by the connection's task).
pub(crate) struct ConnectionGuard {
    metrics: Arc<Metrics>,
    transport: Transport,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.connections_open[tix(self.transport)].fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    /// A connection reached the MQTT layer (after its TLS or QUIC handshake).
    pub(crate) fn connection(self: &Arc<Self>, transport: Transport) -> ConnectionGuard {
        self.connections_open[tix(transport)].fetch_add(1, Relaxed);
        self.connections_accepted[tix(transport)].fetch_add(1, Relaxed);
        ConnectionGuard {
            metrics: self.clone(),
            transport,
        }
    }

    pub(crate) fn bytes_in(&self, transport: Transport, n: u64) {
        self.bytes_in[tix(transport)].fetch_add(n, Relaxed);
    }

    pub(crate) fn bytes_out(&self, transport: Transport, n: u64) {
        self.bytes_out[tix(transport)].fetch_add(n, Relaxed);
    }

    pub(crate) fn packet_in(&self, name: &str) {
        if let Some(i) = PACKET_TYPES.iter().position(|p| *p == name) {
            self.packets_in[i].fetch_add(1, Relaxed);
        }
    }

    /// A packet carrying a reason code was sent (or queued to be sent).
    pub(crate) fn reason_sent(&self, kind: Sent, code: quicft_proto::ReasonCode) {
        if let Some(i) = SENT.iter().position(|(k, _)| *k == kind) {
            self.reasons[i][usize::from(code.0)].fetch_add(1, Relaxed);
        }
    }

    /// A `$file` command was answered.
    pub(crate) fn ft_result(&self, reason: quicft_proto::ft::FtReason) {
        self.ft_results[usize::from(reason.code())].fetch_add(1, Relaxed);
    }

    /// MQTT bytes (received, sent) over all transports (`$SYS/broker/bytes/…`).
    pub(crate) fn bytes_total(&self) -> (u64, u64) {
        let sum = |a: &[AtomicU64]| a.iter().map(|v| v.load(Relaxed)).sum::<u64>();
        (sum(&self.bytes_in), sum(&self.bytes_out))
    }

    /// MQTT packets received, all types (`$SYS/broker/messages/received`).
    pub(crate) fn packets_in_total(&self) -> u64 {
        self.packets_in.iter().map(|v| v.load(Relaxed)).sum()
    }

    /// Open connections by transport (for tests and the API).
    pub fn connections_open(&self, transport: Transport) -> u64 {
        self.connections_open[tix(transport)].load(Relaxed)
    }

    /// The Prometheus text exposition. `transfers` and `finished` are the file-transfer service's
    /// current view, `clients` the number of connected sessions.
    pub fn render(&self, transfers: &[TransferInfo], finished: usize, clients: usize) -> String {
        let mut o = String::with_capacity(4096);
        family(
            &mut o,
            "quicft_connections",
            "gauge",
            "Open MQTT connections (handshake done), by transport.",
        );
        for t in TRANSPORTS {
            sample(
                &mut o,
                "quicft_connections",
                &[("transport", t.as_str())],
                self.connections_open[tix(t)].load(Relaxed),
            );
        }
        family(
            &mut o,
            "quicft_connections_accepted_total",
            "counter",
            "MQTT connections accepted, by transport.",
        );
        for t in TRANSPORTS {
            let v = self.connections_accepted[tix(t)].load(Relaxed);
            sample(
                &mut o,
                "quicft_connections_accepted_total",
                &[("transport", t.as_str())],
                v,
            );
        }
        family(
            &mut o,
            "quicft_clients_connected",
            "gauge",
            "Clients with an open session (CONNECT accepted).",
        );
        sample(&mut o, "quicft_clients_connected", &[], clients as u64);
        family(
            &mut o,
            "quicft_received_bytes_total",
            "counter",
            "MQTT bytes received from clients, by transport.",
        );
        for t in TRANSPORTS {
            sample(
                &mut o,
                "quicft_received_bytes_total",
                &[("transport", t.as_str())],
                self.bytes_in[tix(t)].load(Relaxed),
            );
        }
        family(
            &mut o,
            "quicft_sent_bytes_total",
            "counter",
            "MQTT bytes sent to clients, by transport.",
        );
        for t in TRANSPORTS {
            sample(
                &mut o,
                "quicft_sent_bytes_total",
                &[("transport", t.as_str())],
                self.bytes_out[tix(t)].load(Relaxed),
            );
        }
        family(
            &mut o,
            "quicft_packets_received_total",
            "counter",
            "MQTT packets received, by type.",
        );
        for (i, name) in PACKET_TYPES.iter().enumerate() {
            let v = self.packets_in[i].load(Relaxed);
            if v > 0 {
                sample(
                    &mut o,
                    "quicft_packets_received_total",
                    &[("type", &name.to_ascii_lowercase())],
                    v,
                );
            }
        }
        family(
            &mut o,
            "quicft_reason_codes_sent_total",
            "counter",
            "Reason codes sent, by packet type and code.",
        );
        for (i, (_, kind)) in SENT.iter().enumerate() {
            for (code, c) in self.reasons[i].iter().enumerate() {
                let v = c.load(Relaxed);
                if v > 0 {
                    sample(
                        &mut o,
                        "quicft_reason_codes_sent_total",
                        &[("packet", kind), ("code", &format!("0x{code:02x}"))],
                        v,
                    );
                }
            }
        }
        family(
            &mut o,
            "quicft_file_commands_total",
            "counter",
            "$file commands answered, by reason code.",
        );
        for (code, c) in self.ft_results.iter().enumerate() {
            let v = c.load(Relaxed);
            if v > 0 {
                sample(
                    &mut o,
                    "quicft_file_commands_total",
                    &[("code", &format!("0x{code:02x}"))],
                    v,
                );
            }
        }
        family(
            &mut o,
            "quicft_transfers",
            "gauge",
            "File transfers by state (complete: exported, not yet expired).",
        );
        for state in TransferState::IN_PROGRESS {
            let n = transfers.iter().filter(|t| t.state == state).count();
            sample(
                &mut o,
                "quicft_transfers",
                &[("state", state.as_str())],
                n as u64,
            );
        }
        sample(
            &mut o,
            "quicft_transfers",
            &[("state", TransferState::Complete.as_str())],
            finished as u64,
        );
        family(
            &mut o,
            "quicft_transfer_bytes_held",
            "gauge",
            "Bytes stored durably for transfers in progress.",
        );
        sample(
            &mut o,
            "quicft_transfer_bytes_held",
            &[],
            transfers.iter().map(|t| t.bytes_held).sum(),
        );
        render_commits(&mut o);
        render_exports(&mut o);
        WEBHOOKS.render(&mut o);
        o
    }
}

/// The group committer's counters (`ft/commit_stats.rs`), process-wide.
fn render_commits(o: &mut String) {
    let c = commit_stats();
    family(
        o,
        "quicft_segments_stored_total",
        "counter",
        "File segments made durable (process-wide).",
    );
    sample(o, "quicft_segments_stored_total", &[], c.segments);
    family(
        o,
        "quicft_commit_errors_total",
        "counter",
        "Commit groups whose fdatasync or journal append failed.",
    );
    sample(o, "quicft_commit_errors_total", &[], c.commit_errors);
    let name = "quicft_fsync_seconds";
    family(
        o,
        name,
        "histogram",
        "Time to make one commit group durable: data fdatasync, journal append and fdatasync (process-wide).",
    );
    let mut cumulative = 0;
    for (i, n) in c.buckets.iter().enumerate() {
        cumulative += n;
        let le = FSYNC_BUCKETS
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |v| v.to_string());
        sample(o, &format!("{name}_bucket"), &[("le", &le)], cumulative);
    }
    let _ = writeln!(o, "{name}_sum {}", c.sum.as_secs_f64());
    let _ = writeln!(o, "{name}_count {cumulative}");
}

/// The background exporter's counters (`ft/export_stats.rs`), process-wide.
fn render_exports(o: &mut String) {
    let e = crate::ft::export_stats();
    let (files, bytes, failures, parts) = (
        AtomicU64::new(e.files),
        AtomicU64::new(e.bytes),
        AtomicU64::new(e.failures),
        AtomicU64::new(e.parts),
    );
    let list = [
        (
            "quicft_exports_total",
            "Files exported to the object store and checked there.",
            &files,
        ),
        (
            "quicft_export_bytes_total",
            "Bytes of files exported to the object store.",
            &bytes,
        ),
        (
            "quicft_export_failures_total",
            "Export attempts that failed (each is retried; the file is kept).",
            &failures,
        ),
        (
            "quicft_export_parts_total",
            "Multipart parts the object store acknowledged.",
            &parts,
        ),
    ];
    counters(o, &list);
    family(
        o,
        "quicft_export_queue",
        "gauge",
        "Finished files waiting for their export.",
    );
    sample(o, "quicft_export_queue", &[], e.queued);
    let name = "quicft_export_duration_seconds_total";
    family(o, name, "counter", "Time spent on successful exports.");
    let _ = writeln!(o, "{name} {}", e.duration.as_secs_f64());
}

/// Process-wide counters of webhook deliveries (`webhooks/`).
pub(crate) struct WebhookMetrics {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

pub(crate) static WEBHOOKS: WebhookMetrics = WebhookMetrics {
    delivered: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
};

pub(crate) fn webhook_delivered() {
    WEBHOOKS.delivered.fetch_add(1, Relaxed);
}

pub(crate) fn webhook_failed() {
    WEBHOOKS.failed.fetch_add(1, Relaxed);
}

pub(crate) fn webhook_dropped() {
    WEBHOOKS.dropped.fetch_add(1, Relaxed);
}

impl WebhookMetrics {
    fn render(&self, o: &mut String) {
        let list = [
            (
                "quicft_webhook_deliveries_total",
                "Webhook events the receiver accepted (2xx).",
                &self.delivered,
            ),
            (
                "quicft_webhook_failures_total",
                "Webhook delivery attempts that failed (each is retried).",
                &self.failed,
            ),
            (
                "quicft_webhook_events_dropped_total",
                "Webhook events dropped because an outbox was full or unwritable.",
                &self.dropped,
            ),
        ];
        counters(o, &list);
    }
}

/// Unlabelled counters: (name, help, value).
fn counters(o: &mut String, list: &[(&str, &str, &AtomicU64)]) {
    for &(name, help, v) in list {
        family(o, name, "counter", help);
        sample(o, name, &[], v.load(Relaxed));
    }
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// One sample line; label values are escaped as the text format requires.
fn sample(o: &mut String, name: &str, labels: &[(&str, &str)], v: u64) {
    o.push_str(name);
    if !labels.is_empty() {
        o.push('{');
        for (i, (k, val)) in labels.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            let val = val
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(o, "{k}=\"{val}\"");
        }
        o.push('}');
    }
    let _ = writeln!(o, " {v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_is_prometheus_text() {
        let m = Arc::new(Metrics::default());
        let g = m.connection(Transport::Quic);
        m.bytes_in(Transport::Quic, 10);
        m.packet_in("PUBLISH");
        m.reason_sent(Sent::PubAck, quicft_proto::ReasonCode(0x83));
        crate::ft::group_committed(std::time::Duration::from_micros(300), 2, true);
        let text = m.render(&[], 3, 1);
        assert!(
            text.contains("quicft_connections{transport=\"quic\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("quicft_received_bytes_total{transport=\"quic\"} 10\n"));
        assert!(text.contains("quicft_packets_received_total{type=\"publish\"} 1\n"));
        assert!(
            text.contains("quicft_reason_codes_sent_total{packet=\"puback\",code=\"0x83\"} 1\n")
        );
        assert!(text.contains("quicft_transfers{state=\"complete\"} 3\n"));
        assert!(text.contains("quicft_fsync_seconds_bucket{le=\"+Inf\"}"));
        drop(g);
        assert_eq!(m.connections_open(Transport::Quic), 0);
        // Every non-comment line is `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').expect("value");
            assert!(v.parse::<f64>().is_ok(), "{line}");
        }
    }
}
