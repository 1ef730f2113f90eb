//! CONNECT: who the client is, what it may do, and what the session promises it.
//!
//! Promises: a client is admitted only when its credentials check out ([`crate::auth`]); a
//! certificate imposes its name as client id (`tls.cert_client_id`); a password user connects only
//! with a client id its pattern allows (an empty id becomes the pattern's one id, if it has exactly
//! one); a will topic obeys the same rules as a publish would, so no will can forge the server's
//! own topics. [`Negotiated`] holds what CONNECT settles for the session (keepalive, expiry,
//! windows) and [`Session::connack`] tells the client.

use std::sync::Arc;
use std::time::Duration;

use quicft_proto::ft as ftp;
use quicft_proto::{ConnAck, Connect, Packet, Properties, Protocol, ReasonCode};

use super::state::{reserved_topic, Session, CONTROL};
use crate::config::{CertClientId, Limits};
use crate::link::Link;
use crate::metrics::Sent;
use crate::Ctx;

/// Who an admitted client is.
pub(super) struct Admitted {
    pub client_id: Arc<str>,
    /// The server chose the id: the client is told in CONNACK.
    pub assigned: bool,
    /// The username a password proved.
    pub username: Option<String>,
    /// The accounts' generation the login was checked under ([`crate::auth::Auth::still_admits`]).
    pub auth_generation: u64,
}

/// Checks a CONNECT: the reason code to refuse it with, or who the client is.
pub(super) async fn admit(
    ctx: &Ctx,
    link: &Link,
    connect: &Connect,
) -> Result<Admitted, ReasonCode> {
    let auth_generation = ctx.auth.generation();
    let verified = match ctx
        .auth
        .check(connect, link.listener, link.cert_name.as_deref())
        .await
    {
        Ok(verified) => verified,
        Err(code) => {
            tracing::info!(peer = %link.peer, client_id = %connect.client_id, code = %code, "CONNECT refused");
            return Err(code);
        }
    };
    let by_cert = cert_client_id(connect, link.cert_name.as_deref(), ctx.config.tls.cert_client_id)
        .inspect_err(|_| {
            tracing::info!(peer = %link.peer, client_id = %connect.client_id, cert = ?link.cert_name, "client id does not match the certificate");
        })?;
    // A password user's empty client id becomes the one its pattern allows, if only one.
    let by_user = match (&by_cert, &verified) {
        (None, Some(v)) if connect.client_id.is_empty() => {
            v.client_ids.exact().map(|id| (Arc::<str>::from(id), true))
        }
        _ => None,
    };
    let (client_id, assigned) = by_cert
        .or(by_user)
        .map_or_else(|| assign_client_id(connect), Ok)?;
    if let Some(v) = verified
        .as_ref()
        .filter(|v| !v.client_ids.matches(&client_id))
    {
        tracing::info!(peer = %link.peer, client_id = %client_id, username = %v.username,
            "client id not allowed for this user (auth.client_id / users[].client_id)");
        return Err(match connect.protocol {
            Protocol::V5 => ReasonCode::NOT_AUTHORIZED,
            _ => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        });
    }
    // An anonymous client (no password, no certificate: loopback by default) may not take a client
    // id a password user is given, or it could act as that user's device.
    if verified.is_none() && link.cert_name.is_none() && ctx.auth.claimed_by_user(&client_id) {
        tracing::info!(peer = %link.peer, client_id = %client_id,
            "anonymous client refused: this client id belongs to a password user");
        return Err(match connect.protocol {
            Protocol::V5 => ReasonCode::NOT_AUTHORIZED,
            _ => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        });
    }
    let username = verified.map(|v| v.username);
    // A will is a publish made later on the client's behalf: the same topic rules apply now, or it
    // could forge another client's `$file-response/…` or `$events/…` when the connection drops.
    if let Some(w) = &connect.will {
        let who = crate::acl::Who {
            client_id: &client_id,
            username: username.as_deref(),
        };
        if reserved_topic(&w.topic) || ftp::is_ft_topic(&w.topic) || !ctx.acl_publish(who, &w.topic)
        {
            tracing::info!(peer = %link.peer, client_id = %client_id, topic = %w.topic, "will topic refused");
            return Err(ReasonCode::NOT_AUTHORIZED);
        }
    }
    Ok(Admitted {
        client_id,
        assigned,
        username,
        auth_generation,
    })
}

/// The client id a certificate imposes (and whether the client must be told), or an error when the
/// CONNECT names another client than the certificate does.
fn cert_client_id(
    c: &Connect,
    cert: Option<&str>,
    mode: CertClientId,
) -> Result<Option<(Arc<str>, bool)>, ReasonCode> {
    let Some(name) = cert else { return Ok(None) };
    match mode {
        _ if c.client_id == name => Ok(Some((name.into(), false))),
        CertClientId::Assign => Ok(Some((name.into(), true))),
        CertClientId::Match if c.client_id.is_empty() => Ok(Some((name.into(), true))),
        CertClientId::Match => Err(ReasonCode::NOT_AUTHORIZED),
    }
}

/// The client id to use, and whether the server assigned it.
fn assign_client_id(c: &Connect) -> Result<(Arc<str>, bool), ReasonCode> {
    if !c.client_id.is_empty() {
        return Ok((c.client_id.as_str().into(), false));
    }
    if c.protocol == Protocol::V311 && !c.clean_start {
        // 3.1.1 §3.1.3.1: a zero-byte id needs CleanSession = 1.
        return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    }
    let id = format!("qft-{:016x}", rand_u64());
    Ok((id.into(), true))
}

/// Enough randomness for an assigned client id, without a new dependency.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// What a CONNECT settles for the session, within the server's limits.
pub(crate) struct Negotiated {
    pub protocol: Protocol,
    pub keep_alive: Option<Duration>,
    pub session_expiry: Option<Duration>,
    /// min(client's Receive Maximum, our inflight window).
    pub send_window: usize,
    /// Client's Maximum Packet Size.
    pub client_max_packet: usize,
    pub will: Option<quicft_proto::Will>,
}

impl Negotiated {
    pub fn new(connect: Connect, limits: &Limits) -> Negotiated {
        let mut ka = connect.keep_alive;
        if limits.max_keep_alive > 0 && (ka == 0 || ka > limits.max_keep_alive) {
            ka = limits.max_keep_alive;
        }
        let props = &connect.properties;
        let session_expiry = match connect.protocol {
            // 3.1.1: a persistent session lasts until the client cleans it (capped by config).
            Protocol::V311 if !connect.clean_start => Some(limits.max_session_expiry),
            Protocol::V311 => Some(0),
            Protocol::V5 => Some(
                props
                    .session_expiry_interval
                    .unwrap_or(0)
                    .min(limits.max_session_expiry),
            ),
        }
        .map(|s| Duration::from_secs(u64::from(s)));
        let send_window = usize::from(
            props
                .receive_maximum
                .unwrap_or(u16::MAX)
                .min(limits.inflight_window),
        )
        .max(1);
        Negotiated {
            protocol: connect.protocol,
            keep_alive: (ka > 0).then(|| Duration::from_secs(u64::from(ka))),
            session_expiry,
            send_window,
            client_max_packet: props.maximum_packet_size.map_or(usize::MAX, |m| m as usize),
            will: connect.will,
        }
    }
}

impl Session {
    /// Queues the CONNACK that accepts the client.
    pub fn connack(&mut self, session_present: bool, assigned: bool) {
        let limits = &self.env.config.limits;
        let mut properties = Properties::default();
        if self.protocol == Protocol::V5 {
            properties.receive_maximum = Some(limits.inflight_window);
            properties.maximum_packet_size = u32::try_from(limits.max_packet_size).ok();
            properties.topic_alias_maximum = Some(limits.topic_alias_maximum);
            properties.retain_available = Some(1);
            properties.wildcard_subscription_available = Some(1);
            properties.subscription_identifier_available = Some(1);
            properties.shared_subscription_available = Some(1);
            if assigned {
                properties.assigned_client_identifier = Some(self.client_id.to_string());
            }
            if limits.max_keep_alive > 0 {
                properties.server_keep_alive = self
                    .keep_alive
                    .and_then(|d| u16::try_from(d.as_secs()).ok());
            }
            if let Some(d) = self.session_expiry {
                properties.session_expiry_interval = u32::try_from(d.as_secs()).ok();
            }
            if self.quic {
                let (name, value) = quicft_proto::mirror::OFFER;
                properties.user_properties.push((name.into(), value.into()));
            }
        }
        let ack = ConnAck {
            session_present,
            code: ReasonCode::SUCCESS,
            properties,
        };
        self.env
            .metrics
            .reason_sent(Sent::ConnAck, ReasonCode::SUCCESS);
        self.send(CONTROL, &Packet::ConnAck(ack));
    }
}
