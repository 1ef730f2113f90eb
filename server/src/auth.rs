//! Who may connect. Username/password accounts from the configuration, and anonymous access where the
//! configuration allows it (by default: loopback-only servers; see `Config::validate`).

use std::collections::HashMap;

use quicft_proto::{Connect, Protocol, ReasonCode};

use crate::config::AuthConfig;
use crate::session::Transport;

/// The authentication policy, built once at start.
pub struct Auth {
    allow_anonymous: bool,
    users: HashMap<String, String>,
}

impl Auth {
    pub fn new(cfg: &AuthConfig, allow_anonymous: bool) -> Auth {
        let users = cfg.users.iter().map(|u| (u.username.clone(), u.password.clone())).collect();
        Auth { allow_anonymous, users }
    }

    /// Checks a CONNECT's credentials. The error is the CONNACK reason code.
    pub fn check(&self, c: &Connect, _transport: Transport) -> Result<(), ReasonCode> {
        match (&c.username, &c.password) {
            (None, None) if self.allow_anonymous => Ok(()),
            (None, _) => Err(if c.protocol == Protocol::V5 {
                ReasonCode::NOT_AUTHORIZED
            } else {
                ReasonCode::BAD_USER_NAME_OR_PASSWORD
            }),
            (Some(user), password) => match (self.users.get(user), password) {
                (Some(expected), Some(given)) if constant_time_eq(expected.as_bytes(), given) => Ok(()),
                // A username alone identifies nothing: anonymous rules apply when no account matches.
                (None, None) if self.allow_anonymous => Ok(()),
                _ => Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
            },
        }
    }
}

/// Compares without an early exit, so timing does not tell how much of a password was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::User;
    use bytes::Bytes;
    use quicft_proto::Properties;

    fn connect(user: Option<&str>, pass: Option<&str>) -> Connect {
        Connect {
            protocol: Protocol::V5,
            clean_start: true,
            keep_alive: 0,
            client_id: "c".into(),
            will: None,
            username: user.map(Into::into),
            password: pass.map(|p| Bytes::copy_from_slice(p.as_bytes())),
            properties: Properties::default(),
        }
    }

    #[test]
    fn passwords_and_anonymous() {
        let cfg = AuthConfig {
            allow_anonymous: Some(false),
            users: vec![User { username: "dev".into(), password: "s3cret".into() }],
        };
        let auth = Auth::new(&cfg, false);
        assert_eq!(auth.check(&connect(Some("dev"), Some("s3cret")), Transport::Tls), Ok(()));
        assert_eq!(auth.check(&connect(Some("dev"), Some("nope")), Transport::Tls), Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD));
        assert_eq!(auth.check(&connect(None, None), Transport::Tls), Err(ReasonCode::NOT_AUTHORIZED));
        let open = Auth::new(&cfg, true);
        assert_eq!(open.check(&connect(None, None), Transport::Quic), Ok(()));
        assert_eq!(open.check(&connect(Some("dev"), Some("bad")), Transport::Quic), Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD));
    }
}
