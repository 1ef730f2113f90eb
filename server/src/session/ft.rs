//! `$file…` commands: the session's side of file transfer.
//!
//! Promises: a command is answered on its response topic — the client's own
//! `$file-response/{client id}` unless a v5 client names another topic it may publish to (a
//! response topic it may not publish to is refused with 0x87 and nothing is published); commands
//! must be QoS 1 (others get an answer, never silence); a sync command's PUBACK is held until the
//! command finishes, in PUBLISH order (`qos`); the file data in memory stays within
//! `limits.max_ft_inflight_bytes` (over it: 0x97, retry later); and the commands of one file run
//! in the order `ft_order` gives them when they are read.
//!
//! The machine decides all of this synchronously and hands the command out as a [`FileCommand`];
//! [`FileCommand::run`] is the driver's half, run in a task, whose [`FtDone`] comes back through
//! [`Session::handle_ft_done`].

use bytes::Bytes;
use quicft_proto::ft::{self as ftp, FtReason, FtTopic, Mode};
use quicft_proto::topic::TopicName;
use quicft_proto::{Packet, Protocol, PubResp, Publish, QoS, ReasonCode};
use tokio::sync::OwnedSemaphorePermit;

use super::ft_order::Turn;
use super::state::{reserved_topic, Actions, Session};
use crate::broker::{Message, StreamId};
use crate::ft::FtService;

/// A command to run in the background, holding its place in its file's order and its payload's
/// share of the memory budget until it is done.
pub(crate) struct FileCommand {
    pub cmd: FtTopic,
    pub payload: Bytes,
    turn: Turn,
    memory: OwnedSemaphorePermit,
    /// The command topic, echoed in the response.
    topic: String,
    reply: Reply,
}

/// Where and how a command is answered.
struct Reply {
    stream: StreamId,
    pkid: u16,
    /// Sync mode: the PUBACK is held until the command is done.
    ack_pending: bool,
    response_topic: String,
    correlation: Option<Bytes>,
}

/// A finished file command, returned to the session to be answered.
pub(crate) struct FtDone {
    reply: Reply,
    reason: FtReason,
    response: Bytes,
}

impl FileCommand {
    /// Waits for the command's turn, runs it, and builds its answer.
    pub async fn run(mut self, ft: FtService, client_id: &str) -> FtDone {
        self.turn.ready().await;
        let out = ft.handle(client_id, &self.cmd, self.payload).await;
        drop(self.turn);
        drop(self.memory);
        let mut resp = ftp::Response::new(self.topic, self.reply.pkid, out.reason);
        if let Some(d) = out.description {
            resp = resp.with_description(d);
        }
        if let Some(r) = out.ranges {
            resp = resp.with_ranges(r);
        }
        if let Some(m) = out.missing {
            resp = resp.with_missing(m);
        }
        if let Some(s) = out.state {
            resp = resp.with_state(s.as_str());
        }
        if let Some(m) = out.meta {
            resp = resp.with_meta(m);
        }
        if out.reason != FtReason::Success {
            tracing::info!(reason = %ReasonCode::from(out.reason), "file command answered");
        }
        FtDone {
            reply: self.reply,
            reason: out.reason,
            response: resp.to_bytes(),
        }
    }
}

#[cfg(test)]
impl FileCommand {
    /// Whether the command's turn has come (nothing it runs after is still running).
    pub(super) fn ready_now(&mut self) -> bool {
        use futures::FutureExt;
        self.turn.ready().now_or_never().is_some()
    }

    /// The command, finished with `reason` without running it.
    pub(super) fn finish(self, reason: FtReason) -> FtDone {
        let response = ftp::Response::new(self.topic, self.reply.pkid, reason).to_bytes();
        FtDone {
            reply: self.reply,
            reason,
            response,
        }
    }
}

impl Session {
    /// A PUBLISH to a `$file…` topic.
    pub(super) fn on_file_command(&mut self, stream: StreamId, p: Publish, topic: String) {
        let (pkid, qos) = (p.pkid, p.qos);
        let (response_topic, correlation) = match (&p.properties.response_topic, self.protocol) {
            (Some(t), Protocol::V5) if TopicName::parse(t).is_ok() => {
                (t.clone(), p.properties.correlation_data.clone())
            }
            _ => (ftp::RESPONSE_PREFIX.to_owned() + &self.client_id, None),
        };
        if !self.may_respond_on(&response_topic) {
            // The server would publish there as itself, on the device's word: the device could
            // reach topics it may not publish to (another device's `$file-response/…`, a read-only
            // command topic, `$events/…`). Refused like the publish it stands for; no answer.
            tracing::info!(topic = %response_topic, "file command refused: response topic not allowed");
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => self.ack_publish(stream, pkid, ReasonCode::NOT_AUTHORIZED),
                QoS::ExactlyOnce => {
                    let code = self.v5_or_success(ReasonCode::NOT_AUTHORIZED);
                    self.send(stream, &Packet::PubRec(PubResp::new(pkid, code)));
                }
            }
            return;
        }
        let parsed = ftp::parse_topic(&topic);
        let reply = |ack_pending| Reply {
            stream,
            pkid,
            ack_pending,
            response_topic: response_topic.clone(),
            correlation: correlation.clone(),
        };
        let refuse = |reason: FtReason, why: String| FtDone {
            reply: reply(true),
            reason,
            response: ftp::Response::new(topic.clone(), pkid, reason)
                .with_description(why)
                .to_bytes(),
        };
        // File commands are QoS 1 only (DESIGN §2): anything else gets an answer, never silence.
        let early = match (&parsed, qos) {
            (_, QoS::AtMostOnce) | (_, QoS::ExactlyOnce) => Some(refuse(
                FtReason::Cancel,
                "file-transfer commands must be published with QoS 1".into(),
            )),
            (Some(Err(e)), _) => Some(refuse(FtReason::Cancel, e.to_string())),
            (None, _) => Some(refuse(FtReason::Cancel, "not a file-transfer topic".into())),
            (Some(Ok(_)), _) => None,
        };
        if let Some(done) = early {
            match qos {
                QoS::AtMostOnce => self.publish_response(done),
                QoS::ExactlyOnce => {
                    // A PUBREC with an error code ends the QoS 2 flow (MQTT 5 §4.3.3).
                    let code = self.v5_or_success(ReasonCode(done.reason.code()));
                    self.send(stream, &Packet::PubRec(PubResp::new(pkid, code)));
                    self.publish_response(done);
                }
                QoS::AtLeastOnce => {
                    self.hold_ack(stream, pkid);
                    self.handle_ft_done(done);
                }
            }
            return;
        }
        let Some(Ok(cmd)) = parsed else { return };
        // The payload stays in memory until it is durable: a server-wide budget keeps
        // devices x segments in flight from growing memory without bound. Over it, the device is
        // told to pause and retry (0x97) rather than the server slowing everyone's reads.
        let memory = u32::try_from(p.payload.len())
            .ok()
            .and_then(|n| self.env.ft_memory.clone().try_acquire_many_owned(n).ok());
        let Some(memory) = memory else {
            tracing::info!(
                bytes = p.payload.len(),
                "file-transfer memory budget (limits.max_ft_inflight_bytes) exhausted"
            );
            let done = refuse(
                FtReason::Quota,
                "server busy: too much file data in flight, retry later".into(),
            );
            self.hold_ack(stream, pkid);
            self.handle_ft_done(done);
            return;
        };
        let sync = cmd.mode == Mode::Sync;
        if sync {
            self.hold_ack(stream, pkid);
            self.inflight_in += 1;
        } else {
            self.ack_publish(stream, pkid, ReasonCode::SUCCESS);
        }
        // Placed now, in reading order; the task waits for its turn.
        let alone = match cmd.command {
            ftp::Command::Segment { .. } => false,
            ftp::Command::Status => !p.payload.is_empty(),
            ftp::Command::Init | ftp::Command::Fin { .. } | ftp::Command::Abort => true,
        };
        let turn = self
            .ft_order
            .entry(cmd.file_id.as_str().to_owned())
            .or_default()
            .next(alone);
        let reply = reply(sync);
        self.actions.commands.push(FileCommand {
            cmd,
            payload: p.payload,
            turn,
            memory,
            topic,
            reply,
        });
    }

    /// Whether the answers to this client's file commands may go to `topic`: its own response
    /// topic (and below it), or a topic it may publish to itself.
    fn may_respond_on(&self, topic: &str) -> bool {
        let own = ftp::RESPONSE_PREFIX.to_owned() + &self.client_id;
        if topic == own
            || topic
                .strip_prefix(own.as_str())
                .is_some_and(|r| r.starts_with('/'))
        {
            return true;
        }
        !reserved_topic(topic)
            && !ftp::is_ft_topic(topic)
            && self.env.acl.publish(self.who(), topic)
    }

    /// A file command finished: its held PUBACK (if any) is released and its answer published.
    pub fn handle_ft_done(&mut self, done: FtDone) -> &mut Actions {
        self.env.metrics.ft_result(done.reason);
        // Files with nothing running any more (the task dropped its turn before reporting).
        self.ft_order.retain(|_, o| !o.prune());
        if done.reply.ack_pending {
            self.inflight_in = self.inflight_in.saturating_sub(1);
            let code = self.v5_or_success(ReasonCode(done.reason.code()));
            self.complete_ack(done.reply.stream, done.reply.pkid, code);
        }
        self.publish_response(done);
        &mut self.actions
    }

    fn publish_response(&mut self, done: FtDone) {
        let mut msg = Message::server(done.reply.response_topic, done.response, QoS::AtLeastOnce);
        msg.properties.correlation_data = done.reply.correlation;
        self.actions.route.push(msg);
    }
}
