//! Who may connect: devices with a client certificate (mTLS, verified by rustls before any MQTT
//! byte), username/password accounts whose passwords are stored as argon2 PHC strings, and anonymous
//! clients where the configuration allows it (by default: loopback-only servers; `Config::validate`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use quicft_proto::{Connect, Protocol, ReasonCode};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::config::{AuthConfig, User};
use crate::session::Transport;

/// Why the accounts could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read users file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid users file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error(
        "user {0:?}: password_hash is not an argon2 PHC string (use `quicft-server hash-password`)"
    )]
    BadHash(String),
    #[error("cannot hash password: {0}")]
    Hash(String),
}

/// The separate users file: `[[users]]` entries as in the main configuration.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<User>,
}

/// Argon2 verification costs ~19 MiB and tens of milliseconds: a CONNECT flood with passwords must
/// queue here rather than exhaust memory or the runtime's threads.
const CONCURRENT_VERIFICATIONS: usize = 4;

/// The authentication policy, built once at start.
pub struct Auth {
    allow_anonymous: bool,
    /// Username → PHC string (checked to parse at start).
    users: HashMap<String, Arc<str>>,
    /// Verified against for unknown usernames, so that timing does not tell which accounts exist.
    dummy: Option<Arc<str>>,
    verifying: Arc<Semaphore>,
}

impl Auth {
    /// Loads the accounts from the configuration and `users_file`; a later entry for the same
    /// username replaces an earlier one.
    pub fn new(cfg: &AuthConfig, allow_anonymous: bool) -> Result<Auth, AuthError> {
        let mut list = cfg.users.clone();
        if let Some(path) = &cfg.users_file {
            list.extend(read_users_file(path)?);
        }
        let mut users = HashMap::new();
        for u in list {
            if PasswordHash::new(&u.password_hash).is_err() {
                return Err(AuthError::BadHash(u.username));
            }
            users.insert(u.username, Arc::from(u.password_hash));
        }
        let dummy = match users.is_empty() {
            true => None,
            false => Some(Arc::from(hash_password("no such account")?)),
        };
        Ok(Auth {
            allow_anonymous,
            users,
            dummy,
            verifying: Arc::new(Semaphore::new(CONCURRENT_VERIFICATIONS)),
        })
    }

    /// Checks a CONNECT's credentials; `Ok` holds the username when a password proved it (only
    /// then may ACL rules with `%u` or `username` apply). `cert_name` is the verified client certificate's name, if the
    /// device sent one: it authenticates the device on its own. The error is the CONNACK reason code.
    pub async fn check(
        &self,
        c: &Connect,
        _transport: Transport,
        cert_name: Option<&str>,
    ) -> Result<Option<String>, ReasonCode> {
        let refused = if c.protocol == Protocol::V5 {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode::BAD_USER_NAME_OR_PASSWORD
        };
        match (&c.username, &c.password) {
            (_, None) if cert_name.is_some() => Ok(None),
            (None, None) if self.allow_anonymous => Ok(None),
            (None, _) => Err(refused),
            (Some(user), password) => match (self.users.get(user), password) {
                (Some(hash), Some(given)) => {
                    if self.verify(hash.clone(), given.to_vec()).await {
                        Ok(Some(user.clone()))
                    } else {
                        Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
                    }
                }
                // A username alone identifies nothing: anonymous rules apply when no account matches.
                (None, None) if self.allow_anonymous => Ok(None),
                (None, Some(given)) => {
                    if let Some(d) = &self.dummy {
                        let _ = self.verify(d.clone(), given.to_vec()).await;
                    }
                    Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
                }
                _ => Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
            },
        }
    }

    /// Argon2 verification off the network tasks, a few at a time.
    async fn verify(&self, hash: Arc<str>, password: Vec<u8>) -> bool {
        let Ok(_permit) = self.verifying.clone().acquire_owned().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .is_ok_and(|h| Argon2::default().verify_password(&password, &h).is_ok())
        })
        .await
        .unwrap_or(false)
    }
}

fn read_users_file(path: &Path) -> Result<Vec<User>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.to_owned(),
        source,
    })?;
    let f: UsersFile = toml::from_str(&text).map_err(|source| AuthError::Parse {
        path: path.to_owned(),
        source,
    })?;
    Ok(f.users)
}

/// An argon2id PHC string for `password` with a fresh salt (what `password_hash` holds).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[tokio::test]
    async fn passwords_and_anonymous() {
        let hash = hash_password("s3cret").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("s3cret"));
        let cfg = AuthConfig {
            allow_anonymous: Some(false),
            users: vec![User {
                username: "dev".into(),
                password_hash: hash,
            }],
            ..AuthConfig::default()
        };
        let auth = Auth::new(&cfg, false).expect("auth");
        let t = Transport::Tls;
        assert_eq!(
            auth.check(&connect(Some("dev"), Some("s3cret")), t, None)
                .await,
            Ok(Some("dev".into()))
        );
        assert_eq!(
            auth.check(&connect(Some("dev"), Some("nope")), t, None)
                .await,
            Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        );
        assert_eq!(
            auth.check(&connect(None, None), t, None).await,
            Err(ReasonCode::NOT_AUTHORIZED)
        );
        assert_eq!(
            auth.check(&connect(None, None), t, Some("dev-1")).await,
            Ok(None),
            "a certificate is enough"
        );
        assert_eq!(
            auth.check(&connect(Some("dev"), None), t, Some("dev-1"))
                .await,
            Ok(None),
            "a username without its password is not that user"
        );
        assert_eq!(
            auth.check(&connect(Some("dev"), Some("nope")), t, Some("dev-1"))
                .await,
            Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
            "wrong passwords are wrong even with a certificate"
        );
        let open = Auth::new(&cfg, true).expect("auth");
        assert_eq!(
            open.check(&connect(None, None), Transport::Quic, None)
                .await,
            Ok(None)
        );
        assert_eq!(
            open.check(&connect(Some("dev"), Some("bad")), Transport::Quic, None)
                .await,
            Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        );
    }

    #[test]
    fn plaintext_in_password_hash_is_refused() {
        let cfg = AuthConfig {
            users: vec![User {
                username: "dev".into(),
                password_hash: "s3cret".into(),
            }],
            ..AuthConfig::default()
        };
        assert!(matches!(Auth::new(&cfg, false), Err(AuthError::BadHash(_))));
    }

    #[test]
    fn users_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("users.toml");
        let hash = hash_password("pw").expect("hash");
        std::fs::write(
            &path,
            format!("[[users]]\nusername = \"fromfile\"\npassword_hash = '{hash}'\n"),
        )
        .expect("write");
        let cfg = AuthConfig {
            users_file: Some(path),
            ..AuthConfig::default()
        };
        let auth = Auth::new(&cfg, false).expect("auth");
        assert!(auth.users.contains_key("fromfile"));
    }
}
