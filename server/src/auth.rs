//! Who may connect: devices with a client certificate (mTLS, verified by rustls before any MQTT
//! byte), username/password accounts whose passwords are stored as argon2 PHC strings, and anonymous
//! clients where the configuration allows it (by default: on loopback listeners only).
//!
//! A password proves a username, and a username is bound to the client ids it may use
//! ([`ClientIdPattern`], `%u` by default), as a certificate is bound to its name: the client id is
//! what file transfers and `%c` ACL rules are keyed by, so a user that could pick any client id
//! could read, abort and delete another device's transfers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use quicft_proto::{Connect, Protocol, ReasonCode};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::config::{AuthConfig, User};

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

/// The authentication policy: built at start, replaced whole by a reload (SIGHUP). A check in
/// progress keeps the policy it started with.
pub struct Auth {
    policy: ArcSwap<Policy>,
    verifying: Arc<Semaphore>,
}

/// One generation of the policy.
struct Policy {
    /// Counts reloads: a login checked under generation `g` still holds while its account has not
    /// changed since `g`.
    generation: u64,
    /// `None`: on loopback listeners only.
    allow_anonymous: Option<bool>,
    /// Username → PHC string (checked to parse at start), the client ids it may use, and the
    /// generation that last changed the account.
    users: HashMap<String, (Arc<str>, ClientIdPattern, u64)>,
    /// Verified against for unknown usernames, so that timing does not tell which accounts exist.
    dummy: Option<Arc<str>>,
}

/// What a reload changed in the accounts (usernames, sorted), for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UsersChange {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// A new password or new client ids.
    pub changed: Vec<String>,
    pub anonymous_changed: bool,
}

impl UsersChange {
    pub fn is_empty(&self) -> bool {
        *self == UsersChange::default()
    }
}

impl Auth {
    /// Loads the accounts from the configuration and `users_file`; a later entry for the same
    /// username replaces an earlier one.
    pub fn new(cfg: &AuthConfig) -> Result<Auth, AuthError> {
        Ok(Auth {
            policy: ArcSwap::from_pointee(Policy::load(cfg, 0)?),
            verifying: Arc::new(Semaphore::new(CONCURRENT_VERIFICATIONS)),
        })
    }

    /// Builds the policy of `cfg` (users file read again) and, when it loads, puts it in place of
    /// the current one; on error the current one stays. Connections already admitted are not
    /// checked again.
    pub fn reload(&self, cfg: &AuthConfig) -> Result<UsersChange, AuthError> {
        let old = self.policy.load();
        let mut new = Policy::load(cfg, old.generation + 1)?;
        let mut change = UsersChange {
            anonymous_changed: old.allow_anonymous != new.allow_anonymous,
            ..UsersChange::default()
        };
        for (name, (hash, ids, since)) in &mut new.users {
            match old.users.get(name) {
                None => change.added.push(name.clone()),
                Some((h, i, _)) if h != hash || i != ids => change.changed.push(name.clone()),
                Some((_, _, s)) => *since = *s,
            }
        }
        change.removed = old
            .users
            .keys()
            .filter(|n| !new.users.contains_key(*n))
            .cloned()
            .collect();
        for v in [&mut change.added, &mut change.removed, &mut change.changed] {
            v.sort();
        }
        self.policy.store(Arc::new(new));
        Ok(change)
    }
}

impl Policy {
    /// Whether a user's client ids (a pattern narrower than `*`) include `client_id`.
    fn claimed(&self, client_id: &str) -> bool {
        self.users
            .values()
            .any(|(_, ids, _)| !ids.is_any() && ids.matches(client_id))
    }

    fn load(cfg: &AuthConfig, generation: u64) -> Result<Policy, AuthError> {
        let mut list = cfg.users.clone();
        if let Some(path) = &cfg.users_file {
            list.extend(read_users_file(path)?);
        }
        let default_ids = cfg.client_id.as_deref().unwrap_or(ClientIdPattern::DEFAULT);
        let mut users = HashMap::new();
        for u in list {
            if PasswordHash::new(&u.password_hash).is_err() {
                return Err(AuthError::BadHash(u.username));
            }
            let ids =
                ClientIdPattern::new(u.client_id.as_deref().unwrap_or(default_ids), &u.username);
            users.insert(u.username, (Arc::from(u.password_hash), ids, generation));
        }
        let dummy = match users.is_empty() {
            true => None,
            false => Some(Arc::from(hash_password("no such account")?)),
        };
        Ok(Policy {
            generation,
            allow_anonymous: cfg.allow_anonymous,
            users,
            dummy,
        })
    }
}

impl Auth {
    /// Checks a CONNECT's credentials on a listener bound to `listener`; `Ok` holds the user a
    /// password proved (only then may ACL rules with `%u` or `username` apply). `cert_name` is the
    /// verified client certificate's name, if the device sent one: it authenticates the device on
    /// its own. The error is the CONNACK reason code.
    pub async fn check(
        &self,
        c: &Connect,
        listener: SocketAddr,
        cert_name: Option<&str>,
    ) -> Result<Option<Verified>, ReasonCode> {
        let refused = if c.protocol == Protocol::V5 {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode::BAD_USER_NAME_OR_PASSWORD
        };
        // The policy this check started with, even if a reload replaces it meanwhile.
        let policy = self.policy.load_full();
        let anonymous = policy
            .allow_anonymous
            .unwrap_or_else(|| listener.ip().is_loopback());
        match (&c.username, &c.password) {
            (_, None) if cert_name.is_some() => Ok(None),
            (None, None) if anonymous => Ok(None),
            (None, _) => Err(refused),
            (Some(user), password) => match (policy.users.get(user), password) {
                (Some((hash, ids, _)), Some(given)) => {
                    if self.verify(hash.clone(), given.to_vec()).await {
                        Ok(Some(Verified {
                            username: user.clone(),
                            client_ids: ids.clone(),
                        }))
                    } else {
                        Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
                    }
                }
                // A username alone identifies nothing: anonymous rules apply when no account matches.
                (None, None) if anonymous => Ok(None),
                (None, None) => Err(refused),
                (None, Some(given)) => {
                    if let Some(d) = &policy.dummy {
                        let _ = self.verify(d.clone(), given.to_vec()).await;
                    }
                    Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
                }
                _ => Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
            },
        }
    }

    /// Whether a password user may use `client_id` (by a pattern narrower than `*`): such an id is
    /// not for anonymous clients to take.
    pub fn claimed_by_user(&self, client_id: &str) -> bool {
        self.policy.load().claimed(client_id)
    }

    /// The policy's generation: recorded before a CONNECT is checked, it dates the login for
    /// [`Auth::still_admits`].
    pub fn generation(&self) -> u64 {
        self.policy.load().generation
    }

    /// After a reload: whether a client admitted under `login.generation` would still be. A
    /// password login holds while its account is unchanged (same password, same client ids) since
    /// then; an anonymous one while anonymous access is still allowed on its listener and its
    /// client id is not now a user's. A certificate login is not affected by the accounts.
    pub fn still_admits(&self, login: &Login<'_>) -> bool {
        let policy = self.policy.load();
        match (login.username, login.certificate) {
            (Some(user), _) => policy.users.get(user).is_some_and(|(_, ids, since)| {
                *since <= login.generation && ids.matches(login.client_id)
            }),
            (None, true) => true,
            (None, false) => {
                policy
                    .allow_anonymous
                    .unwrap_or_else(|| login.listener.ip().is_loopback())
                    && !policy.claimed(login.client_id)
            }
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

/// How a connected client was admitted, for [`Auth::still_admits`].
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    /// The user its password proved.
    pub username: Option<&'a str>,
    /// It presented a verified client certificate.
    pub certificate: bool,
    pub client_id: &'a str,
    pub listener: SocketAddr,
    /// [`Auth::generation`] before its CONNECT was checked.
    pub generation: u64,
}

/// A user whose password was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub username: String,
    pub client_ids: ClientIdPattern,
}

/// The client ids one user may connect with: a pattern whose `%u` is the username and whose `*`
/// matches any run of characters (no other character is special).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdPattern {
    /// The literal pieces between the `*`s (one piece: no wildcard).
    pieces: Vec<String>,
}

impl ClientIdPattern {
    pub const DEFAULT: &'static str = "%u";

    pub fn new(pattern: &str, username: &str) -> ClientIdPattern {
        ClientIdPattern {
            pieces: pattern
                .split('*')
                .map(|p| p.replace("%u", username))
                .collect(),
        }
    }

    /// The one client id the pattern allows, when it has no wildcard: what an empty CONNECT
    /// client id is assigned.
    pub fn exact(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [only] => Some(only),
            _ => None,
        }
    }

    /// `*`: every client id.
    pub fn is_any(&self) -> bool {
        self.pieces.len() == 2 && self.pieces.iter().all(String::is_empty)
    }

    pub fn matches(&self, id: &str) -> bool {
        let (Some(first), Some(last)) = (self.pieces.first(), self.pieces.last()) else {
            return false;
        };
        if self.pieces.len() == 1 {
            return id == first;
        }
        let Some(mut rest) = id.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some(middle) = self.pieces.get(1..self.pieces.len() - 1) else {
            return false;
        };
        for piece in middle {
            match rest.split_once(piece.as_str()) {
                Some((_, after)) => rest = after,
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last.as_str())
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
                client_id: None,
            }],
            ..AuthConfig::default()
        };
        let auth = Auth::new(&cfg).expect("auth");
        // Addresses of listeners (never connected to): one off loopback, one on it.
        let t: SocketAddr = "198.18.0.1:8883".parse().expect("addr");
        let lo: SocketAddr = "127.0.0.1:8883".parse().expect("addr");
        assert_eq!(
            auth.check(&connect(Some("dev"), Some("s3cret")), t, None)
                .await,
            Ok(Some(Verified {
                username: "dev".into(),
                client_ids: ClientIdPattern::new("%u", "dev")
            }))
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
        assert_eq!(
            auth.check(&connect(None, None), lo, None).await,
            Err(ReasonCode::NOT_AUTHORIZED),
            "allow_anonymous = false holds on loopback too"
        );
        let open = Auth::new(&AuthConfig {
            allow_anonymous: Some(true),
            ..cfg.clone()
        })
        .expect("auth");
        assert_eq!(open.check(&connect(None, None), t, None).await, Ok(None));
        assert_eq!(
            open.check(&connect(Some("dev"), Some("bad")), t, None)
                .await,
            Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        );
        // Unset: anonymous on loopback listeners only, whatever else is configured.
        let unset = Auth::new(&AuthConfig {
            allow_anonymous: None,
            ..cfg.clone()
        })
        .expect("auth");
        assert_eq!(unset.check(&connect(None, None), lo, None).await, Ok(None));
        assert_eq!(
            unset.check(&connect(None, None), t, None).await,
            Err(ReasonCode::NOT_AUTHORIZED)
        );
        assert_eq!(
            unset.check(&connect(Some("nobody"), None), t, None).await,
            Err(ReasonCode::NOT_AUTHORIZED),
            "an unknown username without a password is anonymous"
        );
    }

    #[test]
    fn client_id_patterns() {
        let p = |pat: &str| ClientIdPattern::new(pat, "truck-a");
        assert!(p("%u").matches("truck-a"));
        assert!(!p("%u").matches("devB"));
        assert!(!p("%u").matches("truck-a2"));
        assert_eq!(p("%u").exact(), Some("truck-a"));
        assert!(p("%u-*").matches("truck-a-cam1"));
        assert!(!p("%u-*").matches("truck-b-cam1"));
        assert_eq!(p("%u-*").exact(), None);
        assert!(p("*").matches("anything") && p("*").matches(""));
        assert!(p("*").is_any() && !p("%u-*").is_any() && !p("%u").is_any());
        assert!(p("site/*/cam-*").matches("site/7/cam-2"));
        assert!(!p("site/*/cam-*").matches("site/7/door-2"));
        assert!(p("a*b*a").matches("aba") && !p("a*b*a").matches("ab"));
    }

    #[test]
    fn plaintext_in_password_hash_is_refused() {
        let cfg = AuthConfig {
            users: vec![User {
                username: "dev".into(),
                password_hash: "s3cret".into(),
                client_id: None,
            }],
            ..AuthConfig::default()
        };
        assert!(matches!(Auth::new(&cfg), Err(AuthError::BadHash(_))));
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
        let auth = Auth::new(&cfg).expect("auth");
        assert!(auth.policy.load().users.contains_key("fromfile"));
    }

    /// A reload replaces the accounts; logins made before it hold only while their account is
    /// unchanged, and a policy that does not load leaves the current one in place.
    #[test]
    fn reload_dates_logins() {
        let user = |name: &str, pw: &str| User {
            username: name.into(),
            password_hash: hash_password(pw).expect("hash"),
            client_id: None,
        };
        let (keep, change) = (user("keep", "a"), user("change", "b"));
        let cfg = |users: Vec<User>, anonymous| AuthConfig {
            users,
            allow_anonymous: anonymous,
            ..AuthConfig::default()
        };
        let auth = Auth::new(&cfg(vec![keep.clone(), change.clone()], None)).expect("auth");
        let lo: SocketAddr = "127.0.0.1:1883".parse().expect("addr");
        let login = |username, client_id, generation| Login {
            username,
            certificate: false,
            client_id,
            listener: lo,
            generation,
        };
        let g0 = auth.generation();
        let change = user("change", "new password");
        let added = user("added", "c");
        let got = auth
            .reload(&cfg(vec![keep, change, added], Some(false)))
            .expect("reload");
        assert_eq!(
            got,
            UsersChange {
                added: vec!["added".into()],
                removed: vec![],
                changed: vec!["change".into()],
                anonymous_changed: true,
            }
        );
        assert!(auth.still_admits(&login(Some("keep"), "keep", g0)));
        assert!(!auth.still_admits(&login(Some("change"), "change", g0)));
        assert!(!auth.still_admits(&login(Some("keep"), "other-id", g0)));
        assert!(
            !auth.still_admits(&login(None, "anon", g0)),
            "anonymous withdrawn"
        );
        let g1 = auth.generation();
        assert!(g1 > g0);
        assert!(auth.still_admits(&login(Some("change"), "change", g1)));

        let broken = AuthConfig {
            users_file: Some("/nonexistent/users.toml".into()),
            ..AuthConfig::default()
        };
        assert!(matches!(auth.reload(&broken), Err(AuthError::Read { .. })));
        assert_eq!(auth.generation(), g1, "the failed reload changed nothing");
        assert!(auth.still_admits(&login(Some("added"), "added", g1)));
    }
}
